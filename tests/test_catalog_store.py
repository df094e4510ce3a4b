"""Crash-safe chunk storage and streamed table writers (spemr_engine.batch.catalog_store),
and input discovery (spemr_engine.batch.catalog.discover_inputs)."""

from __future__ import annotations

import math
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest
from astropy.table import Table

from spemr_engine.batch.catalog import discover_inputs
from spemr_engine.batch.catalog_store import RunFolder, TableSchema, read_table, write_table
from spemr_engine.errors import SpemrError

COLUMNS = ["obsid", "name", "teff", "good", "flags", "error"]


def _rows(prefix: str, n: int, obsid0: int = 100) -> list[dict]:
    return [
        {
            "obsid": obsid0 + i,
            "name": f"{prefix}-{i}",
            "teff": 5000.0 + i / 3,
            "good": i % 2 == 0,
            "flags": "" if i % 2 == 0 else "low_snr",
            "error": None,
        }
        for i in range(n)
    ]


# ------------------------------------------------------------------- discovery
def test_discovery_folder_glob_list_sorted_unique(tmp_path):
    deep = tmp_path / "a" / "b"
    deep.mkdir(parents=True)
    for name in ("z.fits", "y.fits.gz", "notes.txt"):
        (deep / name).write_bytes(b"x")
    (tmp_path / "top.FITS").write_bytes(b"x")
    listing = tmp_path / "list.txt"
    listing.write_text("# comment\n\na/b/z.fits\nmissing.fits\n")
    found = discover_inputs([tmp_path, str(tmp_path / "a" / "*" / "*.fits"), listing])
    names = [os.path.relpath(p, tmp_path) for p in found]
    assert names == sorted(names)
    assert names == sorted(["a/b/y.fits.gz", "a/b/z.fits", "missing.fits", "top.FITS"])


@pytest.mark.parametrize(
    "make, problem",
    [
        (lambda d: d / "nothing-here", "no such file or folder"),
        (lambda d: str(d / "*.fits"), "no files match"),
        (lambda d: (d / "empty").mkdir() or d / "empty", "folder holds no FITS files"),
        (lambda d: (d / "l.txt").write_text("# only a comment\n") and d / "l.txt", "list is empty"),
    ],
)
def test_discovery_refuses_with_one_line(tmp_path, make, problem):
    with pytest.raises(SpemrError) as info:
        discover_inputs([make(tmp_path)])
    assert problem in str(info.value) and "\n" not in str(info.value)


# ---------------------------------------------------------------------- chunks
def test_commit_is_atomic_and_done_inputs_come_from_chunks(tmp_path):
    folder = RunFolder(tmp_path / "cat.csv")
    folder.open()
    folder.commit(COLUMNS, {"f1": _rows("a", 3), "f2": _rows("b", 2)})
    folder.commit(COLUMNS, {"f0": _rows("c", 1)})
    (folder.chunks_dir / ".chunk-0000009.jsonl.tmp-1").write_text("half a chunk")
    (folder.chunks_dir / "chunk-0000010.jsonl").write_text("")  # never renamed in: ignored
    assert folder.done_inputs() == {"f0", "f1", "f2"}
    infos = folder.chunk_infos()
    assert [i.n_rows for i in infos] == [5, 1]
    assert infos[0].flags == {"ok": 3, "low_snr": 2}
    rows = list(folder.ordered_rows(["f0", "f1", "f2"], infos, cache_size=1))
    assert [r[1] for r in rows] == ["c-0", "a-0", "a-1", "a-2", "b-0", "b-1"]
    folder.close()


def test_second_run_on_same_folder_is_refused(tmp_path):
    first, second = RunFolder(tmp_path / "cat.fits"), RunFolder(tmp_path / "cat.fits")
    first.open()
    with pytest.raises(SpemrError, match="another spemr catalog run"):
        second.open()
    first.close()
    second.open()
    second.close()


def test_values_round_trip_exactly(tmp_path):
    folder = RunFolder(tmp_path / "cat.csv")
    folder.open()
    values = [
        {
            "obsid": np.int64(2**40 + 1),
            "name": "é",
            "teff": np.float32(1 / 3),
            "good": np.bool_(True),
            "flags": "",
            "error": None,
        },
        {"obsid": None, "name": "x", "teff": math.nan, "good": False, "flags": "file_error", "error": "bad file"},
    ]
    folder.commit(COLUMNS, {"f": values})
    row0, row1 = folder.ordered_rows(["f"], folder.chunk_infos())
    assert row0 == [2**40 + 1, "é", float(np.float32(1 / 3)), True, "", None]
    assert row1[0] is None and math.isnan(row1[2])
    folder.close()


# ---------------------------------------------------------------------- writers
def _write_all_formats(tmp_path):
    folder = RunFolder(tmp_path / "cat.csv")
    folder.open()
    folder.commit(COLUMNS, {"f2": _rows("b", 3, 200)})
    failed = [
        {
            "obsid": None,
            "name": "broken.fits",
            "teff": None,
            "good": False,
            "flags": "file_error",
            "error": "broken.fits: truncated gzip file",
        }
    ]
    folder.commit(COLUMNS, {"f1": _rows("a", 2), "f3": failed})
    infos = folder.chunk_infos()
    schema = TableSchema.merge(COLUMNS, infos)
    tables = {}
    for fmt in ("csv", "parquet", "fits"):
        path = tmp_path / f"out.{fmt}"
        write_table(path, fmt, schema, folder.ordered_rows(["f1", "f2", "f3"], infos), {"SYNTHET": True}, batch_rows=2)
        tables[fmt] = read_table(path)
    folder.close()
    return schema, tables


def test_streamed_tables_agree_in_every_format(tmp_path):
    schema, tables = _write_all_formats(tmp_path)
    assert schema.n_rows == 6
    assert schema.kinds == {
        "obsid": "int",
        "name": "str",
        "teff": "float",
        "good": "bool",
        "flags": "str",
        "error": "str",
    }
    for fmt, table in tables.items():
        assert list(table) == COLUMNS, fmt
        assert table["name"] == ["a-0", "a-1", "b-0", "b-1", "b-2", "broken.fits"], fmt
        teff = [5000.0, 5000 + 1 / 3, 5000.0, 5000 + 1 / 3, 5000 + 2 / 3]
        if fmt == "csv":  # 8 significant digits (catalog_store.csv_float); binary formats exact
            assert table["teff"][:5] == [float(f"{t:.8g}") for t in teff], fmt
        else:
            assert table["teff"][:5] == teff, fmt
        assert table["teff"][5] is None or math.isnan(table["teff"][5]), fmt
        assert table["obsid"] == [100, 101, 200, 201, 202, None], fmt
        assert table["good"][:5] == [True, False, True, False, True], fmt
        assert table["error"][5] == "broken.fits: truncated gzip file", fmt
    assert Table.read(tmp_path / "out.fits").meta["SYNTHET"] is True


def test_disk_full_gives_one_line_and_keeps_the_old_file(tmp_path):
    """A real write failure: the file size limit (RLIMIT_FSIZE) makes write() fail with
    EFBIG, as a full disk fails with ENOSPC."""
    target = tmp_path / "out.csv"
    target.write_text("previous\n")
    script = textwrap.dedent(f"""
        import resource, signal, sys
        from pathlib import Path
        from spemr_engine.batch.catalog_store import atomic_write_binary, CatalogWriteError
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (10000, 10000))
        def big(tmp):
            Path(tmp).write_bytes(b"x" * 100000)
        try:
            atomic_write_binary(Path({str(target)!r}), big, what="out.csv: cannot write")
        except CatalogWriteError as error:
            print(error)
            sys.exit(2)
    """)
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True)
    assert result.returncode == 2, result.stderr
    assert result.stdout.strip() == "out.csv: cannot write (file size limit reached)"
    assert target.read_text() == "previous\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.csv"]


def test_csv_cell_is_the_one_convention():
    from spemr_engine.batch.catalog_store import csv_cell

    assert [csv_cell(v) for v in (None, True, False, np.bool_(True), 0.1, np.float32(0.5), 3, "x")] == [
        "",
        "true",
        "false",
        "true",
        "0.1",
        "0.5",
        "3",
        "x",
    ]
    assert csv_cell(True, "float") == "1.0" and csv_cell(2, "float") == "2.0"


def test_csv_floats_carry_float32_information_and_no_noise():
    """Computed floats (labels, sigmas, RV, fit measures) to 8 significant digits, which
    pins every float32 to within one ulp; header floats (ra, dec, S/N) as their own digits."""
    from spemr_engine.batch.catalog_store import csv_cell

    assert csv_cell(4682.971700435736, column="Teff[K]") == "4682.9717"
    assert csv_cell(-0.050536588640885116, column="CH_err") == "-0.050536589"
    assert csv_cell(1.0, column="sigma_inflation") == "1.0"
    assert csv_cell(-3, "float", "rv") == "-3.0" and csv_cell(1e-9, column="x") == "1e-09"
    assert csv_cell(float("nan"), column="rv") == "nan"
    assert csv_cell(123.45678901234, column="ra") == "123.45678901234"
    assert csv_cell(30.74, column="snr_blue") == "30.74"
    rng = np.random.default_rng(0)
    for x in rng.standard_normal(2000).astype(np.float32) * np.float32(1000):
        back = np.float32(float(csv_cell(float(x) * 1.0000000001, column="Logg")))
        assert abs(int(back.view(np.int32)) - int(x.view(np.int32))) <= 1


def test_read_table_reads_old_and_new_csv_booleans(tmp_path):
    from spemr_engine.batch.catalog_store import read_table

    for true, false in (("true", "false"), ("True", "False")):
        path = tmp_path / f"{true}.csv"
        path.write_text(f"obsid,usable\n1,{true}\n2,{false}\n3,\n")
        assert read_table(path)["usable"] == [True, False, None]
