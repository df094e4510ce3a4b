"""`spemr synth-grid`: Turbospectrum driver, atmosnet atmospheres, job lists, resumable
chunked building, --from-npz import. Turbospectrum and atmosnet are external (GPL-3.0 /
downloaded): tests that need them skip with the reason unless TS_HOME, ATMOSNET_DIR and
LINELIST point at a build (docs/synthetic_grid.md)."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest

from spemr_engine import cli
from spemr_engine.config import LABELS
from spemr_engine.errors import InputFileError
from spemr_engine.safe_pickle import safe_load
from spemr_engine.synth.generate import broadening_for
from spemr_engine.synth.radiative import atmosnet, build, turbospectrum
from spemr_engine.synth.radiative.grid import from_turbospectrum, load_directory, rt_grid
from spemr_engine.synth.radiative.jobs import GridJob, load_jobs, make_jobs, save_jobs

ENGINE_VARS = ("TS_HOME", "TS_BIN", "TS_DATA", "ATMOSNET_DIR", "LINELIST", "TS_WORKDIR")


@pytest.fixture(scope="module")
def atmosnet_dir() -> Path:
    directory = os.environ.get("ATMOSNET_DIR")
    if not directory or not atmosnet.network_path(directory, "cool").is_file():
        pytest.skip("atmosnet 1.0.1 networks not available: set ATMOSNET_DIR (docs/synthetic_grid.md)")
    return Path(directory)


@pytest.fixture(scope="module")
def engine():
    try:
        return turbospectrum.locate()
    except turbospectrum.EngineMissing as error:
        pytest.skip(f"Turbospectrum not built here ({error})")


@pytest.fixture
def no_engine(monkeypatch):
    for name in ENGINE_VARS:
        monkeypatch.delenv(name, raising=False)


# ------------------------------------------------------------------ atmospheres
def test_solar_atmosphere_is_physical(atmosnet_dir):
    deck = atmosnet.atmosphere(atmosnet_dir, 5777.0, 4.44, 0.0, 0.0)
    temperature = deck[:, atmosnet.DECK_COLUMNS.index("T")]
    assert deck.shape == (80, 8) and np.all(np.isfinite(deck))
    # atmosnet's own exp() inverse gives ~35 K here; the right inverse gives the Sun's ~3700 K.
    assert 3000 < temperature[0] < 4800
    assert 8000 < temperature[-1] < 15000
    assert np.all(np.diff(deck[:, 0]) > 0)  # column mass grows inwards


def test_atmosphere_range(atmosnet_dir):
    inside = atmosnet.in_range(
        atmosnet_dir, [[5777, 4.44, 0, 0], [4500, 2.0, -1.0, 0.3], [5000, 4.0, -5.0, 0.0], [5000, 4.0, 0.0, 0.9]]
    )
    assert inside.tolist() == [True, True, False, False]
    with pytest.raises(ValueError, match="outside atmosnet's range"):
        atmosnet.atmosphere(atmosnet_dir, 5000, 4.0, -5.0, 0.0)


# ------------------------------------------------------------------ restricted loader
HOSTILE = {
    "os.system": b"cos\nsystem\n(S'echo owned'\ntR.",
    "dill module import": b"cdill._dill\n_import_module\n(S'os'\ntR.",
    "dill attribute": (
        b"cdill._dill\n_get_attr\n(cdill._dill\n_import_module\n(S'numpy.core._multiarray_umath'\ntRS'system'\ntR."
    ),
}


@pytest.mark.parametrize("kind", sorted(HOSTILE))
def test_network_loader_refuses_hostile_pickles(tmp_path, kind):
    path = tmp_path / "atmosnet_c3k_300neurons_cool.pkl"
    path.write_bytes(HOSTILE[kind])
    with pytest.raises(InputFileError, match="not a safe pickle"):
        safe_load(path, dill_arrays=True)


def test_network_loader_reads_arrays_through_dills_path(tmp_path):
    # What dill writes for an array: numpy's _reconstruct fetched via _import_module/_get_attr.
    data = (
        b"\x80\x04cdill._dill\n_get_attr\n(cdill._dill\n_import_module\n"
        b"(S'numpy.core._multiarray_umath'\ntRS'_reconstruct'\ntR"
        b"(cnumpy\nndarray\n(K\x00tC\x01btR."
    )
    path = tmp_path / "ok.pkl"
    path.write_bytes(data)
    assert isinstance(safe_load(path, dill_arrays=True), np.ndarray)
    with pytest.raises(InputFileError):
        safe_load(path)  # not without dill_arrays


# ------------------------------------------------------------------ job lists
def _teff_below_5000(params):
    return params[:, 0] < 5000


def test_jobs_from_the_label_sampler():
    jobs = make_jobs(40, seed=3, in_range=_teff_below_5000, widen=0.0)
    assert len(jobs) == 40 and len({j.name for j in jobs}) == 40
    labels = np.stack([j.labels for j in jobs])
    assert labels.shape == (40, len(LABELS)) and labels[:, 0].max() < 5000  # range drops stars
    for job in jobs[:5]:  # broadening is the star's own, from its seed
        assert job.vmic == pytest.approx(broadening_for(job.labels, [job.seed]).vmic[0])
    prefix = make_jobs(7, seed=3, in_range=_teff_below_5000, widen=0.0)
    assert [j.name for j in prefix] == [j.name for j in jobs[:7]]  # extendable
    assert [j.name for j in make_jobs(7, seed=4, in_range=_teff_below_5000, widen=0.0)] != [j.name for j in prefix]


def test_widening_jitters_a_fraction():
    everything = lambda params: np.ones(len(params), dtype=bool)
    plain = make_jobs(300, seed=1, in_range=everything, widen=0.0)
    wide = make_jobs(300, seed=1, in_range=everything, widen=0.4)
    changed = np.mean([not np.allclose(a.labels, b.labels) for a, b in zip(plain, wide)])
    assert 0.3 < changed < 0.5
    assert np.std([j.labels[3] for j in wide]) > np.std([j.labels[3] for j in plain])


def test_job_file_round_trip_and_bad_files(tmp_path):
    jobs = make_jobs(3, seed=2, in_range=lambda p: np.ones(len(p), bool))
    save_jobs(tmp_path / "jobs.json", jobs)
    again = load_jobs(tmp_path / "jobs.json")
    assert [j.name for j in again] == [j.name for j in jobs]
    assert np.allclose(again[1].labels, jobs[1].labels) and again[1].seed == jobs[1].seed
    (tmp_path / "bad.json").write_text(json.dumps([{"name": "a", "labels": [1, 2]}]))
    with pytest.raises(InputFileError, match="bad.json: not a job list"):
        load_jobs(tmp_path / "bad.json")


# ------------------------------------------------------------------ building, resuming
def _job(i: int) -> GridJob:
    return GridJob(f"s{i:02d}", np.full(len(LABELS), 0.01 * i), 1.0, 2.0, 3.0, 7500.0, i)


class FakeWork:
    """Stands in for Turbospectrum: a flat spectrum per star; can stop the run."""

    def __init__(self, stop_at: str | None = None, fail: str | None = None):
        self.calls, self.stop_at, self.fail = [], stop_at, fail

    def __call__(self, job):
        if job.name == self.stop_at:
            raise KeyboardInterrupt
        self.calls.append(job.name)
        if job.name == self.fail:
            return build.StarResult(job.name, error="RuntimeError: bsyn_lu failed")
        return build.StarResult(job.name, job, np.full(rt_grid().n_pixels, 0.5 + 0.01 * int(job.name[1:])))


def _run(root, tasks, work, chunk=2):
    folder = build.GridFolder(root)
    with folder.locked():
        folder.clean_partial()
        done = folder.done_labels()
        build.check_same_stars(done, tasks, folder.root)
        return build.build(root, tasks, work, chunk=chunk, done=set(done))


def test_resume_skips_finished_stars_and_never_duplicates(tmp_path):
    tasks = [_job(i) for i in range(5)]
    first = _run(tmp_path, tasks, FakeWork(stop_at="s03"))  # killed at the 4th star
    assert first.stopped and first.done == 3
    assert len(build.GridFolder(tmp_path).chunks()) == 1  # one full chunk, one star pending
    (tmp_path / "rt_00009.npz.part").write_bytes(b"half a chunk")
    work = FakeWork()
    second = _run(tmp_path, tasks, work)
    assert work.calls == ["s03", "s04"] and second.already == 3 and not second.stopped
    assert not (tmp_path / "rt_00009.npz.part").exists() and not (tmp_path / "pending").exists()
    spectra = load_directory(tmp_path)
    assert sorted(spectra.names) == [t.name for t in tasks]
    row = list(spectra.names).index("s04")
    assert spectra.flux[row, 0] == pytest.approx(0.54, abs=1e-4) and spectra.resolution[row] == 7500
    third = FakeWork()
    _run(tmp_path, tasks, third)
    assert third.calls == []


def test_failed_stars_are_listed_and_retried(tmp_path):
    tasks = [_job(i) for i in range(3)]
    summary = _run(tmp_path, tasks, FakeWork(fail="s01"))
    assert list(summary.failed) == ["s01"] and "s01" in json.loads((tmp_path / "failed.json").read_text())
    work = FakeWork()
    _run(tmp_path, tasks, work)
    assert work.calls == ["s01"] and not (tmp_path / "failed.json").exists()


def test_folder_of_another_job_list_is_refused(tmp_path):
    _run(tmp_path, [_job(0)], FakeWork())
    other = _job(0)
    other.labels = other.labels + 0.1
    with pytest.raises(Exception, match="other labels"):
        _run(tmp_path, [other], FakeWork())


# ------------------------------------------------------------------ command line
def test_missing_engine_is_one_line_and_exit_2(tmp_path, capsys, no_engine, monkeypatch):
    assert cli.main(["synth-grid", str(tmp_path / "g"), "--stars", "1", "--nice", "0"]) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "TS_HOME" in err and "docs/synthetic_grid.md" in err
    monkeypatch.setenv("TS_HOME", str(tmp_path))  # unpacked but never built
    assert cli.main(["synth-grid", str(tmp_path / "g"), "--stars", "1", "--nice", "0"]) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "not built" in err and "babsma_lu" in err


@pytest.mark.parametrize(
    "extra",
    [["--stars", "0"], ["--stars", "2", "--chunk", "0"], ["--stars", "2", "--widen", "2"], ["--jobs", "missing.json"]],
)
def test_bad_arguments_exit_2(tmp_path, capsys, extra, fake_engine):
    assert cli.main(["synth-grid", str(tmp_path / "g"), "--nice", "0", *extra]) == 2
    assert len(capsys.readouterr().err.strip().splitlines()) == 1


@pytest.fixture
def fake_engine(tmp_path, monkeypatch):
    """Enough of an engine for argument checks: binaries that fail, empty data files."""
    home = tmp_path / "ts"
    (home / "src" / "exec-gf").mkdir(parents=True)
    for exe in turbospectrum.BINARIES:
        (home / "src" / "exec-gf" / exe).write_text("#!/bin/sh\nexit 1\n")
        (home / "src" / "exec-gf" / exe).chmod(0o755)
    (home / "python" / "turbospectrum" / "data").mkdir(parents=True)
    (home / "python" / "turbospectrum" / "data" / "Hlinedata").write_text("")
    (tmp_path / "lines.list").write_text("")
    (tmp_path / "nets").mkdir()
    for kind in ("cool", "hot"):
        atmosnet.network_path(tmp_path / "nets", kind).write_bytes(b"")
    monkeypatch.setenv("TS_HOME", str(home))
    monkeypatch.setenv("LINELIST", str(tmp_path / "lines.list"))
    monkeypatch.setenv("ATMOSNET_DIR", str(tmp_path / "nets"))
    monkeypatch.chdir(tmp_path)


def test_write_jobs_then_a_failing_engine_is_reported(tmp_path, capsys, fake_engine, atmosnet_dir, monkeypatch):
    monkeypatch.setenv("ATMOSNET_DIR", str(atmosnet_dir))
    assert cli.main(["synth-grid", "g", "--stars", "2", "--write-jobs", "jobs.json", "--nice", "0"]) == 0
    assert len(load_jobs("jobs.json")) == 2
    assert cli.main(["synth-grid", "g", "--jobs", "jobs.json", "--nice", "0", "--quiet"]) == 1
    err = capsys.readouterr().err
    assert "babsma_lu failed" in err and (Path("g") / "failed.json").exists()


def _reference_npz(path: Path, name: str, depth: float) -> np.ndarray:
    """A per-star file as the reference tools write it: air wavelengths at 0.02 A, two windows."""
    wave = np.concatenate([np.arange(4935.0, 5365.0, 0.02), np.arange(6295.0, 6740.0, 0.02)])
    norm = 1.0 - depth * np.exp(-0.5 * ((wave - 5183.6) / 0.1) ** 2)
    job = {
        "name": name,
        "labels": list(np.linspace(5000, 0, len(LABELS))),
        "vmic": 1.1,
        "vmac": 2.0,
        "vsini": 3.0,
        "R": 7400.0,
        "teff": 5000.0,
    }
    np.savez_compressed(path / f"{name}.npz", wave_air=wave, norm=norm, job=json.dumps(job))
    return from_turbospectrum(wave, norm)


def test_from_npz_packs_reference_files(tmp_path, capsys):
    src = tmp_path / "spectra"
    src.mkdir()
    expected = {f"g_{i}": _reference_npz(src, f"g_{i}", 0.2 * i) for i in range(3)}
    (src / "g_9.npz.part").write_bytes(b"being written")  # ignored
    np.savez(src / "evil.npz", wave_air=np.zeros(3), norm=np.array([object()], dtype=object), job="{}")
    out = tmp_path / "grid"
    assert cli.main(["synth-grid", str(out), "--from-npz", str(src), "--nice", "0", "--chunk", "2", "-j", "2"]) == 1
    assert "evil" in json.loads((out / "failed.json").read_text())
    spectra = load_directory(out)
    assert sorted(spectra.names) == sorted(expected) and len(build.GridFolder(out).chunks()) == 2
    for name, flux, resolution in zip(spectra.names, spectra.flux, spectra.resolution):
        assert np.max(np.abs(flux - expected[name])) < 1e-4 and resolution == 7400.0
    (src / "evil.npz").unlink()
    assert cli.main(["synth-grid", str(out), "--from-npz", str(src), "--nice", "0"]) == 0
    assert "0 stars added" in capsys.readouterr().out


def test_linelist_trimmed_to_the_windows(tmp_path, capsys):
    src = tmp_path / "full.list"
    src.write_text(
        "'   3.000            '    1        3\n'Li I    LTE'\n"
        "  4602.826  1.848 -0.613\n  5000.000  1.0 -1.0\n  6500.500  1.0 -1.0\n"
        "'  26.000            '    1         1\n'Fe I    LTE'\n  9000.000  1.0 -1.0\n"
    )
    assert cli.main(["synth-linelist", str(src), str(tmp_path / "lines.list")]) == 0
    assert (tmp_path / "lines.list").read_text().splitlines() == [
        "'   3.000            '    1        2",
        "'Li I    LTE'",
        "  5000.000  1.0 -1.0",
        "  6500.500  1.0 -1.0",
    ]
    assert "2 lines kept" in capsys.readouterr().out
    (tmp_path / "bad.list").write_text("'   3.000            '    1        3\n'Li I'\n  5000.0 1 1\n")
    assert cli.main(["synth-linelist", str(tmp_path / "bad.list"), str(tmp_path / "x.list")]) == 2
    assert not (tmp_path / "x.list").exists()


# ------------------------------------------------------------------ with Turbospectrum
def test_inputs_for_turbospectrum_are_well_formed():
    deck = np.tile([1e-3, 4000.0, 10.0, 1e9, 1e-3, 0.1, 0.0, 0.0], (80, 1))
    model = turbospectrum.kurucz_model(deck, 4.44).splitlines()
    assert model[0].split()[:4] == ["KURUCZ", "80", "5000.0", "4.440"] and len(model) == 81
    comp = turbospectrum._composition(-0.5, 0.2, {"MgH": -0.3})
    assert "'METALLICITY:' '-0.500'" in comp and comp.strip().endswith("12    7.230")
    assert turbospectrum.babsma_input(comp, 1.25).endswith("'XIFIX:' 'T'\n1.250\n")


def test_two_stars_end_to_end(tmp_path, engine, capsys):
    jobs = make_jobs(2, seed=11, in_range=lambda p: atmosnet.in_range(engine.atmosnet_dir, p), widen=0.0)
    save_jobs(tmp_path / "jobs.json", jobs)
    out = tmp_path / "grid"
    args = ["synth-grid", str(out), "--jobs", str(tmp_path / "jobs.json"), "-j", "2", "--nice", "0"]
    assert cli.main(args) == 0
    spectra = load_directory(out)
    assert sorted(spectra.names) == sorted(j.name for j in jobs)
    assert spectra.flux.shape == (2, rt_grid().n_pixels)
    assert np.all(np.median(spectra.flux, axis=1) > 0.9) and np.all(spectra.flux.min(axis=1) < 0.6)
    capsys.readouterr()
    assert cli.main(args) == 0 and "0 stars added" in capsys.readouterr().out
