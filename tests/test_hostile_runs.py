"""Hostile input through whole runs (issue 11): plausible nonsense is never labelled as
usable, `spemr predict` keeps finished rows and checks its output first, catalog runs
survive odd names, refuse to change threads on resume, say when an output is in use,
and their workers die with them."""

from __future__ import annotations

import csv
import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
from astropy.io import fits

from catalog_testdata import tiny_model
from hostile_files import set_card
from mrs_testfiles import arm_hdu, primary_hdu, write_mrs, write_star_file
from spemr_engine import api, cli
from spemr_engine.model.bundle import load_bundle
from spemr_engine.batch.catalog import discover_inputs, run_catalog
from spemr_engine.batch.catalog_store import RunFolder
from spemr_engine.errors import Cancelled, InputFileError, SpemrError
from spemr_engine.reading.lamost import read_mrs
from spemr_engine.preprocessing.rv import load_rv_catalog

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    return load_bundle(tiny_model(tmp_path_factory.mktemp("model") / "tiny"))


@pytest.fixture(scope="module")
def star_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("star") / "med-58000-TEST_sp01-001.fits"
    return write_star_file(path, ra=10.5, dec=-2.25, obsid=424242, rv_kms=-35.0, seed=2)


@pytest.fixture(scope="module")
def synthetic(tmp_path_factory):
    folder = tmp_path_factory.mktemp("stars")
    return [
        write_star_file(
            folder / f"med-58000-TEST_sp01-{k:03d}.fits",
            ra=10.0 + k,
            dec=-2.0,
            obsid=500 + k,
            rv_kms=10.0 * k,
            exposures=(101,),
            seed=k,
        )
        for k in range(8)
    ]


def _edited(star_file, tmp_path, name: str, extname: str, change) -> str:
    with fits.open(star_file) as hdul:
        hdul = fits.HDUList([hdu.copy() for hdu in hdul])
    change(hdul[extname])
    path = tmp_path / name
    hdul.writeto(path)
    return str(path)


def _flux_index(hdu) -> int:
    return [c.name.upper() for c in hdu.columns].index("FLUX") + 1


def _constant(hdu):
    hdu.data["FLUX"][:] = 1234.5


def _tscal_zero(hdu):
    index = _flux_index(hdu)
    hdu.header[f"TSCAL{index}"] = 0.0
    hdu.header[f"TZERO{index}"] = 7.0


# ------------------------------------------------------- plausible nonsense
@pytest.mark.parametrize("change", [_constant, _tscal_zero], ids=["constant", "tscal0"])
def test_featureless_arm_is_never_labelled_as_usable(star_file, model, tmp_path, change):
    path = _edited(star_file, tmp_path, "flat.fits", "COADD_B", change)
    mrs = read_mrs(path)
    assert any("flux is constant" in note for note in mrs.warnings)
    assert mrs.coadd.blue.unusable.all() and mrs.coadd.blue.mask.all()
    row = api.analyse_file(path, model=model, device="cpu").rows()[0]
    assert row["usable"] is False or row["usable"] == "false"
    assert "no_good_pixels" in row["flags"]
    assert all(row[c] is None or np.isnan(row[c]) for c in ("Teff[K]", "FeH"))


def test_boolean_flux_column_is_refused(star_file, tmp_path):
    with fits.open(star_file) as hdul:
        hdus = [hdul[0].copy()]
        for hdu in hdul[1:]:
            columns = [
                fits.Column(
                    name=c.name,
                    format="L" if c.name == "FLUX" else c.format,
                    array=(hdu.data[c.name] > 1000) if c.name == "FLUX" else hdu.data[c.name],
                )
                for c in hdu.columns
            ]
            hdus.append(fits.BinTableHDU.from_columns(columns, header=hdu.header, name=hdu.name))
    path = tmp_path / "bool.fits"
    fits.HDUList(hdus).writeto(path)
    with pytest.raises(InputFileError, match="the FLUX column is logical \\(boolean\\), not numbers"):
        read_mrs(path)


def test_zigzag_wavelengths_are_refused_not_sorted(tmp_path):
    hdus = [primary_hdu()]
    for name in ("COADD_B", "COADD_R"):
        hdu = arm_hdu(name)
        loglam = hdu.data["LOGLAM"]
        loglam[100:110] = loglam[100:110][::-1]
        hdus.append(hdu)
    path = tmp_path / "zigzag.fits"
    fits.HDUList(hdus).writeto(path)
    with pytest.raises(InputFileError, match="wavelengths are neither ascending nor descending \\(pixel 10"):
        read_mrs(path)


# ------------------------------------------------------------- spemr predict
def test_predict_output_folder_or_unwritable_fails_before_any_work(star_file, tmp_path, capsys, monkeypatch):
    def no_work(*args, **kwargs):
        raise AssertionError("work started before the output was checked")

    monkeypatch.setattr(api, "load_model", no_work)
    blocker = tmp_path / "a-file"
    blocker.write_text("x")
    for target, problem in (
        (tmp_path, "is a folder; -o needs a CSV file name"),
        (blocker / "out.csv", "cannot write the output here"),
    ):
        assert cli.main(["predict", str(star_file), "-o", str(target)]) == 2
        lines = capsys.readouterr().err.splitlines()
        assert len(lines) == 1 and problem in lines[0]


def test_predict_keeps_finished_rows_when_a_later_file_crashes(star_file, model, tmp_path, monkeypatch):
    real = api.analyse_file
    calls = []

    def flaky(path, **kwargs):
        calls.append(path)
        if len(calls) == 2:
            raise RuntimeError("simulated crash")
        return real(path, **kwargs)

    monkeypatch.setattr(api, "analyse_file", flaky)
    out = tmp_path / "out.csv"
    with pytest.raises(RuntimeError):
        cli.main(
            ["predict", str(star_file), str(star_file), "--model", str(model.path), "--device", "cpu", "-o", str(out)]
        )
    rows = list(csv.DictReader(out.open()))
    assert len(rows) == 1 and rows[0]["obsid"] == "424242"
    assert not (tmp_path / "out.csv.partial").exists()


def test_predict_output_naming_an_input_file_is_refused_before_it_is_emptied(star_file, tmp_path, capsys):
    source = tmp_path / "med-in.fits"
    source.write_bytes(star_file.read_bytes())
    link = tmp_path / "link.fits"
    link.symlink_to(source)
    for target in (source, link):
        assert cli.main(["predict", str(source), "-o", str(target)]) == 2
        lines = capsys.readouterr().err.splitlines()
        assert len(lines) == 1 and "is one of the input files" in lines[0]
    assert source.read_bytes() == star_file.read_bytes()


def test_predict_writes_rows_of_a_non_utf8_file_name(star_file, model, tmp_path):
    name = os.path.join(os.fsencode(tmp_path), b"med-odd\xff.fits")
    with open(name, "wb") as handle:
        handle.write(star_file.read_bytes())
    out = tmp_path / "out.csv"
    files = [os.fsdecode(name), str(star_file)]
    assert cli.main(["predict", *files, "--model", str(model.path), "--device", "cpu", "-o", str(out)]) == 0
    rows = list(csv.DictReader(out.open(encoding="utf-8")))
    assert [row["source"].endswith("med-odd\\xff.fits") for row in rows] == [True, False]


# --------------------------------------------------------------- small ones
def test_info_is_strict_json_for_infinite_header_values(tmp_path, capsys):
    raw = write_mrs(tmp_path / "ok.fits").read_bytes()
    path = tmp_path / "inf.fits"
    path.write_bytes(set_card(raw, 0, "RA", "1E400"))
    assert cli.main(["info", str(path)]) == 0
    out = capsys.readouterr().out
    assert "Infinity" not in out
    report = json.loads(out, parse_constant=lambda name: pytest.fail(f"{name} in JSON"))
    assert report["meta"]["ra"] is None


def test_info_into_a_closed_pipe_is_quiet(tmp_path):
    extnames = ["COADD_B", "COADD_R"] + [f"{side}-{k}" for k in range(100, 400) for side in "BR"]
    hdus = [primary_hdu()] + [arm_hdu(name, n_pixels=20) for name in extnames]
    path = tmp_path / "many.fits"
    fits.HDUList(hdus).writeto(path)
    process = subprocess.Popen(
        [sys.executable, "-m", "spemr_engine", "info", str(path)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        cwd=REPO,
    )
    process.stdout.readline()
    process.stdout.close()
    stderr = process.stderr.read().decode()
    assert process.wait(timeout=120) == 141
    assert "Traceback" not in stderr and stderr == ""


def test_rv_catalog_obsid_beyond_float_range(tmp_path):
    path = tmp_path / "rv.csv"
    path.write_text("obsid,rv\n1e400,5.0\n123456789012345678,7.0\n")
    catalog = load_rv_catalog(path)
    assert catalog.lookup(obsid=123456789012345678) == (7.0, 0.0)
    assert catalog.lookup(obsid=5) is None


def test_catalog_survives_a_non_utf8_file_name(tmp_path, model, synthetic):
    folder = tmp_path / "in"
    folder.mkdir()
    name = os.path.join(os.fsencode(folder), b"med-odd\xff.fits")
    with open(name, "wb") as handle:
        handle.write(synthetic[0].read_bytes())
    for suffix in ("csv", "fits"):
        summary = run_catalog([folder], tmp_path / f"cat.{suffix}", model=model, workers=0, batch_size=2)
        assert summary.n_rows == 1


def test_catalog_gives_fifos_devices_and_broken_links_a_row(tmp_path, model, synthetic):
    """A FITS-named FIFO, link to /dev/zero or broken link was skipped silently in a folder,
    and named on the command line it was called missing: each now gets a row saying why."""
    folder = tmp_path / "in"
    folder.mkdir()
    (folder / "med-ok.fits").write_bytes(synthetic[0].read_bytes())
    os.mkfifo(folder / "fifo.fits")
    (folder / "zero.fits").symlink_to("/dev/zero")
    (folder / "broken.fits").symlink_to(tmp_path / "nowhere.fits")
    found = discover_inputs([folder])
    assert sorted(os.path.basename(p) for p in found) == ["broken.fits", "fifo.fits", "med-ok.fits", "zero.fits"]
    assert discover_inputs([folder / "fifo.fits"]) == [str(folder / "fifo.fits")]
    out = tmp_path / "cat.csv"
    summary = run_catalog([folder], out, model=model, workers=0, batch_size=2)
    assert summary.n_rows == 4
    errors = {row["filename"]: row["error"] for row in csv.DictReader(out.open()) if row["flags"] == "file_error"}
    assert "not a regular file (a FIFO)" in errors["fifo.fits"]
    assert "not a regular file (a character device)" in errors["zero.fits"]
    assert "file not found" in errors["broken.fits"]


def test_catalog_cli_exits_2_when_inputs_were_lost_but_keeps_every_row(tmp_path, model, synthetic, capsys):
    """Like predict: a finished table with file_error rows is exit 2 and one line saying
    how many inputs were lost, so a pipeline script cannot mistake it for a clean run."""
    folder = tmp_path / "in"
    folder.mkdir()
    (folder / "med-ok.fits").write_bytes(synthetic[0].read_bytes())
    (folder / "med-cut.fits").write_bytes(synthetic[1].read_bytes()[:5000])
    out = tmp_path / "cat.csv"
    argv = ["catalog", str(folder), "-o", str(out), "--model", str(model.path), "--workers", "0", "--quiet"]
    assert cli.main(argv) == 2
    last = capsys.readouterr().err.strip().splitlines()[-1]
    assert last.startswith("1 of 2 input files could not be labelled") and "error column" in last
    flags = sorted(row["flags"] for row in csv.DictReader(out.open()))
    assert len(flags) == 2 and flags[0] == "file_error" and "file_error" not in flags[1]
    (folder / "med-cut.fits").unlink()
    assert cli.main([*argv, "--overwrite"]) == 0


def test_catalog_output_naming_an_input_file_is_refused(tmp_path, model, synthetic):
    folder = tmp_path / "in"
    folder.mkdir()
    spectrum = folder / "med-a.fits"
    spectrum.write_bytes(synthetic[0].read_bytes())
    with pytest.raises(SpemrError, match="med-a.fits: is one of the input files"):
        run_catalog([folder], spectrum, model=model, workers=0, overwrite=True)
    assert spectrum.read_bytes() == synthetic[0].read_bytes()


def test_file_lists_keep_non_utf8_names_and_refuse_what_is_no_list(tmp_path):
    """A list with one non-UTF-8 path was refused whole; a 50 MB line became one 'path'
    and the run took 1.6 GB; binary junk must still be refused in one line."""
    odd = os.path.join(os.fsencode(tmp_path), b"med-odd\xff.fits")
    listing = tmp_path / "list.txt"
    listing.write_bytes(b"# survey\n" + odd + b"\nmed-b.fits\n")
    assert discover_inputs([listing]) == sorted([os.fsdecode(odd), str(tmp_path / "med-b.fits")])
    for data, problem in (
        (b"x" * 5000 + b"\n", "line 1 is 5000 characters long: not a path"),
        (b"med-a.fits\n\0\x01junk", "it holds NUL bytes"),
        (b"# only a comment\n", "the file list is empty"),
    ):
        listing.write_bytes(data)
        with pytest.raises(SpemrError, match=problem) as info:
            discover_inputs([listing])
        assert "\n" not in str(info.value) and str(info.value).startswith("list.txt: ")


def test_resume_with_other_threads_is_refused(tmp_path, model, synthetic):
    kwargs = dict(model=model, workers=0, batch_size=1, chunk_size=1)
    seen = []
    with pytest.raises(Cancelled):
        run_catalog(
            synthetic, tmp_path / "cat.csv", threads=2, progress=seen.append, cancel=lambda: len(seen) >= 1, **kwargs
        )
    with pytest.raises(SpemrError, match="cannot resume with --threads 1: the interrupted run used 2"):
        run_catalog(synthetic, tmp_path / "cat.csv", threads=1, resume=True, **kwargs)
    summary = run_catalog(synthetic, tmp_path / "cat.csv", resume=True, **kwargs)
    assert summary.n_files_resumed > 0 and summary.n_rows == len(synthetic)
    # the resume kept the interrupted run's 2 threads: the table is the uninterrupted one's
    run_catalog(synthetic, tmp_path / "whole.csv", threads=2, **kwargs)
    assert (tmp_path / "cat.csv").read_bytes() == (tmp_path / "whole.csv").read_bytes()


def test_output_that_a_live_run_is_writing_is_said_to_be_in_use(tmp_path, model, synthetic):
    output = tmp_path / "cat.csv"
    live = RunFolder(output)
    live.open()
    (live.chunks_dir / "chunk-000000.jsonl").write_text("{}\n")
    try:
        with pytest.raises(SpemrError, match="another spemr catalog run is writing it now"):
            run_catalog(synthetic[:1], output, model=model, workers=0)
    finally:
        live.close()


def _session_processes(session: int) -> dict[int, str]:
    """Living (not zombie) processes of a session: pid -> command line."""
    found = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as handle:
                stat = handle.read()
            with open(f"/proc/{entry}/cmdline", "rb") as handle:
                command = handle.read().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        fields = stat[stat.rindex(")") + 2 :].split()  # state, ppid, pgrp, session, ...
        if int(fields[3]) == session and fields[0] != "Z":
            found[int(entry)] = command[:120]
    return found


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")
@pytest.mark.parametrize("how", ["pool", pytest.param("dask", marks=pytest.mark.slow)])
def test_workers_and_resource_tracker_exit_with_a_killed_catalog_run(tmp_path, model, synthetic, how):
    """kill -9 of a real ``spemr catalog`` run in mid-work (its process pool, or with
    --cluster local:2 its Dask workers, and multiprocessing's resource tracker all
    running) leaves no process of it behind within a few seconds (measured: 2-15 ms
    for the pool with PR_SET_PDEATHSIG, 0.8 s with the watch thread alone; 15-95 ms
    for Dask's workers, which watch their parent themselves)."""
    if how == "dask":
        pytest.importorskip("distributed")
    inputs = tmp_path / "in"
    for copy in range(12):  # enough work that the run is still busy when it is killed
        (inputs / f"c{copy:02d}").mkdir(parents=True)
        for path in synthetic:
            (inputs / f"c{copy:02d}" / path.name).write_bytes(path.read_bytes())
    output = tmp_path / "cat.csv"
    where = ["--workers", "2"] if how == "pool" else ["--cluster", "local:2"]
    command = [
        *(sys.executable, "-m", "spemr_engine", "catalog", str(inputs), "-o", str(output)),
        *("--model", str(model.path), "--exposures", "all", "--batch-size", "2", "--chunk-rows", "1", "--quiet"),
        *where,
    ]
    run = subprocess.Popen(
        command, cwd=REPO, start_new_session=True, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True
    )
    chunks = tmp_path / "cat.csv.spemr-run" / "chunks"
    try:
        deadline = time.monotonic() + 120
        # the run, two workers and the resource tracker; for the pool, labelling under way
        while time.monotonic() < deadline and run.poll() is None:
            busy = how == "dask" or (chunks.is_dir() and any(chunks.glob("chunk-*")))
            if len(_session_processes(run.pid)) >= 4 and busy:
                break
            time.sleep(0.05)
        before = _session_processes(run.pid)
        assert run.poll() is None, f"the run ended before it was killed: {run.communicate()[1]}"
        assert len(before) >= 4, before
        assert any("resource_tracker" in c for c in before.values()), before
        os.kill(run.pid, signal.SIGKILL)  # the run only: its workers are left to notice
        run.wait(timeout=30)
        killed = time.monotonic()
        while time.monotonic() - killed < 5 and _session_processes(run.pid):
            time.sleep(0.01)
        left = _session_processes(run.pid)
        assert not left, f"left running {time.monotonic() - killed:.1f} s after kill -9: {left}"
    finally:
        for pid in _session_processes(run.pid):  # only processes this test started
            os.kill(pid, signal.SIGKILL)
        if run.poll() is None:
            run.kill()
        run.communicate()


def test_exit_with_parent_arms_the_parent_death_signal():
    """The pool initializer asks Linux for SIGKILL on the parent's death (field
    PR_GET_PDEATHSIG), in a child that runs it."""
    if not sys.platform.startswith("linux"):
        pytest.skip("PR_SET_PDEATHSIG is Linux only")
    code = (
        "import ctypes, os\n"
        "from spemr_engine.batch.catalog import exit_with_parent\n"
        "exit_with_parent(os.getppid())\n"
        "value = ctypes.c_int(0)\n"
        "ctypes.CDLL(None).prctl(2, ctypes.byref(value), 0, 0, 0)\n"  # 2 = PR_GET_PDEATHSIG
        "print(value.value)\n"
    )
    result = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert int(result.stdout) == signal.SIGKILL


@pytest.mark.parametrize(
    "command",
    [
        ["import-published", "{long}", "-o", "{tmp}/m"],
        ["import-refset", "{long}", "-o", "{tmp}/rs"],
        ["catalog", "{long}", "-o", "{tmp}/cat.csv"],
        ["predict", "{star}", "--model", "{long}", "-o", "{tmp}/o.csv"],
    ],
)
def test_over_long_paths_are_one_line(tmp_path, star_file, capsys, command):
    long = str(tmp_path / ("a" * 300))
    args = [a.format(long=long, tmp=tmp_path, star=star_file) for a in command]
    assert cli.main(args) == 2
    lines = [
        line
        for line in capsys.readouterr().err.splitlines()
        if not line.startswith(("caveat: ", "warning: ", "note: "))
    ]
    assert lines == ["a" * 300 + ": File name too long"]


@pytest.mark.parametrize("reader", ["rv", "labels"])
def test_fifo_as_a_catalog_is_refused_without_blocking(tmp_path, reader):
    path = tmp_path / "catalog.csv"
    os.mkfifo(path)
    code = (
        "import sys\nfrom spemr_engine.errors import InputFileError\n"
        + (
            "from spemr_engine.preprocessing.rv import load_rv_catalog as read\n"
            if reader == "rv"
            else "from spemr_engine.reading.label_catalog import _open_table as read\n"
        )
        + "try:\n    read(sys.argv[1])\nexcept InputFileError as error:\n    print(error)\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code, str(path)], capture_output=True, text=True, timeout=60, cwd=REPO
    )
    assert result.stdout.strip() == "catalog.csv: is not a regular file (a FIFO, device or socket); refusing to read it"
