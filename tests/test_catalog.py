"""Survey-scale catalogs (spemr_engine.batch.catalog, ``spemr catalog``): every input gets rows,
a kill -9 loses nothing, a resumed run equals an uninterrupted one, a finished catalog
is not redone, and write failures say what was kept."""

from __future__ import annotations

import json
import math
import os
import resource
import shutil
import signal
import subprocess
import threading
import time

import pytest
from astropy.io import fits

from catalog_testdata import cli_command, run_cli, tiny_model, write_broken_files, write_synthetic_files
from spemr_engine.batch.catalog import run_catalog
from spemr_engine.batch.catalog_store import read_table
from spemr_engine.errors import Cancelled, SpemrError

TEFF, TEFF_ERR, TEFF_WINNER = "Teff[K]", "Teff[K]_err", "Teff[K]_submodel"


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    return tiny_model(tmp_path_factory.mktemp("model") / "tiny")


@pytest.fixture(scope="module")
def synthetic(tmp_path_factory):
    """16 synthetic files (coadd + 2 exposures each), written once for this module."""
    return write_synthetic_files(tmp_path_factory.mktemp("synthetic"), 16)


def _folder_of(files, folder):
    folder.mkdir(parents=True, exist_ok=True)
    for path in files:
        shutil.copy(path, folder / path.name)
    return folder


def _missing(value) -> bool:
    return value is None or (isinstance(value, float) and math.isnan(value))


def _as_rows(table: dict) -> list[dict]:
    names = list(table)
    return [dict(zip(names, values)) for values in zip(*table.values())]


# ---------------------------------------------------------------- bad inputs
def test_broken_files_get_flagged_rows_and_the_rest_complete(tmp_path, model, synthetic):
    good = synthetic[2:5]
    folder = _folder_of(good, tmp_path / "in")
    expected = write_broken_files(folder / "broken")
    listing = tmp_path / "more.txt"
    listing.write_text(f"{tmp_path / 'vanished.fits'}\n")
    summary = run_catalog([folder, listing], tmp_path / "cat.csv", model=model, workers=0, batch_size=8)
    rows = _as_rows(read_table(tmp_path / "cat.csv"))
    by_file = {}
    for row in rows:
        by_file.setdefault(os.path.basename(row["source"]), []).append(row)
    assert set(by_file) == {p.name for p in good} | set(expected) | {"vanished.fits"}
    for name, flag in expected.items():
        assert flag in by_file[name][0]["flags"], name
        assert _missing(by_file[name][0][TEFF])
    assert "low-resolution (LRS)" in by_file["spec-58000-TEST_sp01-001.fits"][0]["error"]
    assert "truncated" in by_file["med-truncated.fits.gz"][0]["error"]
    assert "S/N 0.0" in by_file["med-zero-snr.fits"][0]["error"]
    assert by_file["vanished.fits"][0]["error"] == "vanished.fits: file not found"
    good_rows = [by_file[path.name][0] for path in good]  # coadd only by default
    assert all(len(by_file[path.name]) == 1 for path in good)
    for row in good_rows:
        assert row["spectrum"] == "coadd" and row["rv_source"] == "ccf"
        assert row["model_trained_on"] == "random"
        if row["usable"]:
            # a random-weights model's labels can fall outside their winner's region:
            # fit-quality flags only, no selection flag
            assert set((row["flags"] or "").split("|")) <= {"", "region_mismatch", "poor_fit"}
            assert 2000 < row[TEFF] < 9000 and row[TEFF_ERR] > 0 and row["fit_chi2"] > 0
            assert row[TEFF_WINNER] in {"base", "S1", "S2", "S3", "S4"}
        else:  # a synthetic star can fail the paper's selection too: then it says why
            assert row["flags"] and row["error"] and _missing(row[TEFF])
    assert sum(row["usable"] for row in good_rows) >= 2
    assert summary.n_rows == len(rows) == 3 + len(expected) + 1
    assert summary.flag_counts["file_error"] == 7 and summary.flag_counts["low_snr"] >= 1
    assert summary.flag_counts.get("ok", 0) == sum(row["flags"] is None for row in rows)


def test_real_lrs_and_zero_snr_files(tmp_path, model, shared_mrs_dir, shared_lrs_file):
    folder = tmp_path / "in"
    folder.mkdir()
    shutil.copy(shared_lrs_file, folder)
    shutil.copy(shared_mrs_dir / "med-58268-HIP95119KP01_sp12-076.fits.gz", folder)
    run_catalog([folder], tmp_path / "cat.fits", model=model, workers=0, exposures="all", batch_size=8)
    rows = _as_rows(read_table(tmp_path / "cat.fits"))
    lrs = [r for r in rows if r["source"].endswith(shared_lrs_file.name)]
    assert len(lrs) == 1 and lrs[0]["flags"] == "file_error"
    zero = [r for r in rows if "58268" in r["source"]]
    assert len(zero) == 10 and zero[0]["spectrum"] == "coadd"  # coadd + 9 exposures
    assert all("low_snr" in r["flags"] and _missing(r[TEFF]) for r in zero)


def test_exposures_all_and_rv_catalog(tmp_path, model, synthetic):
    files = synthetic[:2]
    rv_csv = tmp_path / "rv.csv"
    rv_csv.write_text("obsid,rv\n900000,12.5\n")
    run_catalog(
        files, tmp_path / "cat.parquet", model=model, workers=0, exposures="all", rv_catalog=rv_csv, batch_size=8
    )
    rows = _as_rows(read_table(tmp_path / "cat.parquet"))
    assert [r["spectrum"] == "coadd" for r in rows] == [True, False, False] * 2
    first, second = rows[:3], rows[3:]
    assert all(r["rv_source"] == "given" and r["rv"] == 12.5 for r in first)
    assert all(r["rv_source"] == "ccf" for r in second)


# ------------------------------------------------------------ kill and resume
def _wait_for_chunks(run_folder, process, n: int, timeout: float = 120) -> int:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and process.poll() is None:
        chunks = list((run_folder / "chunks").glob("chunk-*.jsonl")) if run_folder.exists() else []
        if len(chunks) >= n:
            return len(chunks)
        time.sleep(0.002)
    raise AssertionError(f"run ended or stalled before {n} chunks (rc={process.poll()})")


def test_kill_9_then_resume_equals_an_uninterrupted_run(tmp_path, model, synthetic):
    """A real ``spemr catalog`` process (and its worker) is killed with SIGKILL once a
    unit is committed; --resume completes it; the table equals an uninterrupted run's."""
    inputs = _folder_of(synthetic, tmp_path / "in")
    # one inference thread everywhere: torch's float results depend on the thread count
    settings = dict(model=model, exposures="all", batch_size=4, chunk_size=1, threads=1)
    run_catalog([inputs], tmp_path / "ref.fits", workers=0, **settings)

    output = tmp_path / "cat.fits"
    run_folder = tmp_path / "cat.fits.spemr-run"
    command = cli_command(
        "catalog",
        inputs,
        "-o",
        output,
        "--workers",
        "1",
        "--model",
        model,
        "--exposures",
        "all",
        "--batch-size",
        "4",
        "--chunk-rows",
        "1",
        "--threads",
        "1",
    )
    process = subprocess.Popen(
        command, start_new_session=True, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True
    )
    try:
        committed = _wait_for_chunks(run_folder, process, 1)
    finally:
        os.killpg(process.pid, signal.SIGKILL)  # the run and its worker
        _, stderr = process.communicate()
    assert process.returncode == -signal.SIGKILL and committed >= 1, stderr
    assert "caveat: model has random weights" in stderr
    assert not output.exists()

    with pytest.raises(SpemrError, match="continue it with --resume"):
        run_catalog([inputs], output, workers=0, **settings)  # refuses to mix runs
    summary = run_catalog([inputs], output, workers=0, resume=True, **settings)
    assert summary.n_files_resumed >= 4 and summary.n_files_done_now <= 12
    assert read_table(output) == read_table(tmp_path / "ref.fits")
    assert output.read_bytes() == (tmp_path / "ref.fits").read_bytes()
    assert len(read_table(output)["source"]) == 48
    assert not (run_folder / "chunks").exists()
    assert run_catalog([inputs], output, workers=0, resume=True, **settings).nothing_to_do


def test_cancel_keeps_committed_units_and_resume_matches(tmp_path, model, synthetic):
    files = synthetic[:4]
    kwargs = dict(model=model, workers=0, exposures="all", batch_size=2, chunk_size=1)
    run_catalog(files, tmp_path / "ref.csv", **kwargs)
    seen = []

    def cancel():
        return len(seen) >= 1  # after the first unit is labelled and committed

    with pytest.raises(Cancelled, match="continue with --resume"):
        run_catalog(files, tmp_path / "cat.csv", progress=seen.append, cancel=cancel, **kwargs)
    chunks = list((tmp_path / "cat.csv.spemr-run" / "chunks").glob("chunk-*"))
    assert chunks and not (tmp_path / "cat.csv").exists()
    summary = run_catalog(files, tmp_path / "cat.csv", resume=True, **kwargs)
    assert summary.n_files_resumed == 2 and summary.n_files_done_now == 2
    assert (tmp_path / "cat.csv").read_text() == (tmp_path / "ref.csv").read_text()


def test_a_run_interrupted_by_an_earlier_version_resumes_and_a_changed_one_says_what_changed(
    tmp_path, model, synthetic
):
    """Earlier versions kept only the settings' fingerprint in run.json: such a run still
    resumes (the fingerprint is the same), and a resume with other settings names them."""
    files = synthetic[:4]
    kwargs = dict(model=model, workers=0, exposures="all", batch_size=2, chunk_size=1)
    seen = []
    with pytest.raises(Cancelled):
        run_catalog(files, tmp_path / "cat.csv", progress=seen.append, cancel=lambda: len(seen) >= 1, **kwargs)
    run_file = tmp_path / "cat.csv.spemr-run" / "run.json"
    record = json.loads(run_file.read_text())
    with pytest.raises(SpemrError, match=r"cannot resume: .*other inputs or settings \(batch_size;"):
        run_catalog(files, tmp_path / "cat.csv", resume=True, **{**kwargs, "batch_size": 3})
    del record["settings"]  # as an earlier version wrote it
    run_file.write_text(json.dumps(record))
    summary = run_catalog(files, tmp_path / "cat.csv", resume=True, **kwargs)
    assert summary.n_files_resumed == 2 and summary.n_files_done_now == 2


def test_pause_holds_the_run_until_released(tmp_path, model, synthetic):
    pause = threading.Event()
    pause.set()
    events = []
    started = time.monotonic()
    threading.Timer(0.5, pause.clear).start()
    run_catalog(
        synthetic[:2],
        tmp_path / "cat.csv",
        model=model,
        workers=0,
        batch_size=4,
        pause=pause,
        progress=lambda info: events.append(time.monotonic() - started),
    )
    assert events and events[0] >= 0.5


# ------------------------------------------------------------- finished runs
def test_rerun_over_a_finished_catalog_does_nothing(tmp_path, model, synthetic):
    files = synthetic[:3]
    output = tmp_path / "cat.fits"
    first = run_catalog(files, output, model=model, workers=0, batch_size=4)
    stamp = output.stat().st_mtime_ns
    for resume in (False, True):
        again = run_catalog(files, output, model=model, workers=0, batch_size=4, resume=resume)
        assert again.nothing_to_do and again.n_rows == first.n_rows == 3
    assert output.stat().st_mtime_ns == stamp
    with pytest.raises(SpemrError, match="exists"):
        run_catalog(files[:2], output, model=model, workers=0, batch_size=4)
    redone = run_catalog(files[:2], output, model=model, workers=0, batch_size=4, overwrite=True)
    assert redone.n_rows == 2 and not redone.nothing_to_do
    with pytest.raises(SpemrError, match="unknown catalog format"):
        run_catalog(files, tmp_path / "cat.txt", model=model)


# ------------------------------------------------------------- write failures
def test_unwritable_output_is_one_clear_line(tmp_path, model, synthetic):
    blocker = tmp_path / "not-a-folder"
    blocker.write_text("a file")
    result = run_cli("catalog", synthetic[0], "-o", blocker / "cat.fits", "--model", model)
    assert result.returncode == 2
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith("cat.fits: cannot create the run folder") and "Not a directory" in last


def test_disk_full_keeps_committed_chunks_and_resume_finishes(tmp_path, model, synthetic):
    """A real write failure: RLIMIT_FSIZE makes writes past the limit fail (EFBIG) the
    way a full disk does (ENOSPC). Chunks (one file each here) fit; the table does not."""
    files = synthetic[3:9]
    settings = dict(model=model, exposures="all", batch_size=1, chunk_size=1, workers=0)
    output = tmp_path / "cat.fits"

    def limit_file_size():
        resource.setrlimit(resource.RLIMIT_FSIZE, (20_000, 20_000))

    full = run_cli(
        "catalog",
        *files,
        "-o",
        output,
        "--model",
        model,
        "--exposures",
        "all",
        "--batch-size",
        "1",
        "--chunk-rows",
        "1",
        "--workers",
        "0",
        preexec_fn=limit_file_size,
    )
    assert full.returncode == 2, full.stderr
    message = full.stderr.strip().splitlines()[-1]
    assert message.startswith("cat.fits: cannot write the catalog; the committed chunks")
    assert "file size limit reached" in message
    assert not output.exists()
    assert len(list((tmp_path / "cat.fits.spemr-run" / "chunks").glob("chunk-*"))) == 6

    summary = run_catalog(files, output, resume=True, **settings)
    assert summary.n_files_resumed == 6 and summary.n_files_done_now == 0
    table = read_table(output)
    assert len(table["source"]) == 18 and sum(v is not None for v in table[TEFF]) >= 12


def test_a_synthetic_model_says_so_in_the_table(tmp_path, model, synthetic):
    synthetic_model = tmp_path / "synthetic-model"
    shutil.copytree(model, synthetic_model)
    manifest = json.loads((synthetic_model / "manifest.json").read_text())
    manifest["provenance"]["trained_on"] = "synthetic"
    (synthetic_model / "manifest.json").write_text(json.dumps(manifest))
    run_catalog(synthetic[:1], tmp_path / "cat.fits", model=synthetic_model, workers=0, batch_size=4)
    header = fits.getheader(tmp_path / "cat.fits", 1)
    assert header["SYNTHET"] is True and "synthetic spectra" in header["CAVEAT"]
    assert read_table(tmp_path / "cat.fits")["model_trained_on"] == ["synthetic"]


def test_files_sharing_a_header_filename_stay_apart(tmp_path, model, synthetic):
    """`filename` is LAMOST's name for the file (header FILENAME, the published column);
    `source`, the absolute path, tells apart files that share it, in the same way in
    `spemr predict`, `spemr catalog` and a resumed catalog."""
    original = synthetic[0]
    files = [tmp_path / "a" / original.name, tmp_path / "b" / original.name, tmp_path / "b" / "renamed.fits.gz"]
    for path in files:
        path.parent.mkdir(exist_ok=True)
        shutil.copy(original, path)
    expected_sources = sorted(str(p.resolve()) for p in files)
    header_name = fits.getheader(original)["FILENAME"]
    kwargs = dict(model=model, workers=0, batch_size=2, chunk_size=1)
    with pytest.raises(Cancelled):
        seen = []
        run_catalog(files, tmp_path / "cat.csv", progress=seen.append, cancel=lambda: len(seen) >= 1, **kwargs)
    run_catalog(files, tmp_path / "cat.csv", resume=True, **kwargs)
    table = read_table(tmp_path / "cat.csv")
    assert sorted(table["source"]) == expected_sources
    assert table["filename"] == [header_name] * 3
    predicted = run_cli("predict", *files, "--model", model, "-o", tmp_path / "p.csv")
    assert predicted.returncode == 0, predicted.stderr
    rows = read_table(tmp_path / "p.csv")
    assert sorted(rows["source"]) == expected_sources and rows["filename"] == [header_name] * 3
    assert rows["Teff[K]"] == table["Teff[K]"]
