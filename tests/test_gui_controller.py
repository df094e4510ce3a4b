"""The GUI's Qt-free controller (spemr_gui.controller and spemr_gui.state) with plain
pytest: no Qt application, no widgets. Request tokens against the real AppState,
close checks, the batch and training states, the reference-set summary."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

from spemr_engine.progress import LABELLING, CatalogProgress, Evaluating, Saved, TrainingProgress
from spemr_gui.controller import BatchState, CloseChecks, Request, TrainingState, summarise_refset
from spemr_gui.eta import TrainingEta
from spemr_gui.state import AppState, OpenFile


def test_the_controller_imports_no_qt():
    code = (
        "import sys, spemr_gui.controller, spemr_gui.state, spemr_gui.eta; "
        "bad = [m for m in sys.modules if m.startswith(('PySide6', 'pyqtgraph'))]; "
        "assert not bad, bad"
    )
    subprocess.run([sys.executable, "-c", code], check=True, cwd=Path(__file__).resolve().parents[1])


# ============================================================ request tokens
def _opened(name: str, n_pairs: int = 2) -> OpenFile:
    pairs = [SimpleNamespace(label="coadd" if i == 0 else str(84107311 + i)) for i in range(n_pairs)]
    return OpenFile(path=Path("/data") / name, mrs=SimpleNamespace(pairs=pairs, warnings=[]))


@pytest.fixture
def state():
    state = AppState()
    state.add_file(_opened("a.fits"))
    state.add_file(_opened("b.fits"))
    state.set_model(object(), "/models/one")
    return state


def test_a_request_is_what_the_user_looks_at(state):
    assert Request.current(AppState()) is None  # nothing open
    state.select(1, 1)
    request = Request.current(state)
    assert request == Request("/data/b.fits", 1, state.model_key, None)
    assert request.is_current(state) and request.file_index(state) == 1
    state.select(1, 0)
    assert not request.is_current(state)  # the user moved on: not shown...
    assert request.file_index(state) == 1  # ...but still true for that pair: kept


def test_a_result_goes_stale_when_its_model_or_rv_changes(state):
    state.select(0, 0)
    request = Request.current(state)
    state.set_rv_override(-12.5)
    assert request.file_index(state) is None and not request.is_current(state)
    with_rv = Request.current(state)
    assert with_rv.rv == -12.5 and with_rv.file_index(state) == 0
    state.set_model(object(), "/models/two")
    assert with_rv.file_index(state) is None  # another model: stale


def test_a_request_follows_its_file_not_its_index(state):
    state.select(1, 0)
    request = Request.current(state)
    state.remove_file(0)  # b.fits is now file 0
    assert request.file_index(state) == 0
    state.remove_file(0)
    assert request.file_index(state) is None  # closed: nowhere to put the result


def test_requests_are_hashable_keys(state):
    state.select(0, 1)
    tasks = {Request.current(state): "task"}
    assert Request("/data/a.fits", 1, state.model_key, None) in tasks


# ============================================================== close checks
def test_close_checks_ask_in_order_and_stop_at_the_first_no():
    asked, stopped = [], []
    checks = CloseChecks()
    checks.register(lambda: asked.append("batch") or True, lambda: stopped.append("batch"))
    remove_training = checks.register(lambda: asked.append("training") or False, lambda: stopped.append("training"))
    checks.register(lambda: asked.append("later") or True)
    assert len(checks) == 3
    assert not checks.may_close()
    assert asked == ["batch", "training"]  # "later" was never asked
    checks.stop_all()
    assert stopped == ["batch", "training"]
    remove_training()
    asked.clear()
    assert checks.may_close() and asked == ["batch", "later"]
    stopped.clear()
    checks.stop_all()
    assert stopped == ["batch"]


def test_an_unattended_close_keeps_the_stops():
    stopped = []
    checks = CloseChecks()
    checks.register(lambda: False, lambda: stopped.append(1))
    checks.without_questions()
    assert checks.may_close()
    checks.stop_all()
    assert stopped == [1]


# ================================================================ batch run
def test_batch_state_through_a_run_paused_at_its_end():
    batch = BatchState()
    idle = batch.controls(catalog_exists=False)
    assert (idle.start, idle.pause, idle.cancel, idle.report, idle.pause_text) == (True, False, False, False, "Pause")
    assert batch.set_paused(True) == "" and batch.paused  # idle: no progress line
    batch.start()
    assert batch.running and not batch.paused and batch.progress is None and batch.streamed_rows == 0
    running = batch.controls(catalog_exists=True)
    assert (running.start, running.pause, running.cancel, running.report) == (False, True, True, False)
    event = CatalogProgress(phase=LABELLING, files_done=3, files_total=12)
    assert batch.on_progress(event) == (3, 12) and batch.progress is event
    batch.add_rows(5)
    batch.add_rows(2)
    assert batch.streamed_rows == 7
    assert batch.set_paused(True) == "paused" and batch.pause_event.is_set()
    assert batch.controls(True).pause_text == "Resume"
    assert batch.end() is True  # Pause came when every file was already in flight
    assert not batch.running and not batch.pause_event.is_set()
    ended = batch.controls(catalog_exists=True)
    assert (ended.start, ended.pause, ended.report, ended.pause_text) == (True, False, True, "Pause")
    assert "after 3 files" in batch.cancelled_text()
    batch.reporting = True
    assert not batch.controls(catalog_exists=True).report
    batch.start()
    assert batch.end() is False


# ============================================================= training run
def _epoch(stage, network, epoch, n_epochs, region=None, val=1.0, mae=None):
    """The event that ends an epoch (val_loss set)."""
    return TrainingProgress(
        stage=stage,
        member=0,
        network=network,
        region=region,
        n_epochs=n_epochs,
        epoch=epoch,
        step=8,
        n_steps=8,
        train_loss=2.0 / epoch,
        val_loss=val,
        val_mae=mae if mae is not None else {},
    )


def test_training_state_turns_events_into_status_history_and_curves():
    clock = iter(np.arange(0.0, 1000.0, 10.0))
    eta = TrainingEta(1, 1, 1, 2, 1, clock=lambda: float(next(clock)))
    training = TrainingState()
    assert training.phase == "idle" and not training.running
    training.start(eta)
    assert training.running and training.status.startswith("starting")
    step = TrainingProgress(
        stage="pretrain", member=0, network="SP", region=None, n_epochs=2, epoch=1, step=3, n_steps=8, train_loss=0.5
    )
    assert training.on_progress(step) is None  # a step: status only
    assert training.status == "pretrain m0 SP: epoch 1/2, step 3/8, loss 0.5000"
    assert training.eta_text
    job = training.on_progress(_epoch("pretrain", "SP", 1, 2, mae={"Teff": 120.0, "Logg": np.nan}))
    assert job == "pretrain m0 SP"
    assert training.status == "pretrain m0 SP: epoch 1/2 — train 2.0000, validation 1.0000"
    training.on_progress(_epoch("pretrain", "SP", 2, 2, mae={"Teff": 100.0}))
    training.on_progress(_epoch("finetune", "SP", 1, 1, region="S1", val=np.nan))  # no MAE: keep the last
    assert training.mae_job == "pretrain m0 SP" and training.mae_history == {"Teff": [120.0, 100.0]}
    training.on_progress(_epoch("finetune", "SP", 1, 1, region="S2", mae={"Teff": 90.0}))
    assert training.mae_job == "finetune m0 SP S2" and training.mae_history == {"Teff": [90.0]}
    assert [job for _x, job in training.job_starts()] == ["pretrain m0 SP", "finetune m0 SP S1", "finetune m0 SP S2"]
    assert [x for x, _job in training.job_starts()] == [0.5, 2.5, 3.5]
    curves = training.loss_curves()
    assert list(curves.x) == [1, 2, 3, 4]
    # connect[i]: a line from point i to i + 1 (the last entry draws nothing)
    assert list(curves.connect[:-1]) == [True, False, False]  # no line across a job
    assert list(curves.val_connect[:-1]) == [True, False, False]
    assert np.isfinite(curves.val).all()  # NaN validation (no spectra) drawn nowhere
    training.on_progress(Evaluating(n_spectra=40))
    assert training.status == "evaluating on 40 test spectra…" and "evaluating" in training.eta_text
    training.on_progress(Saved(path="/m", seconds=12.0))
    assert training.status == "saved /m" and training.eta_text == ""
    training.finished("/m")
    assert training.phase == "done" and training.done_path == "/m" and not training.running


def test_training_state_cancel_and_failure_stop_the_run():
    training = TrainingState()
    training.cancelling()
    assert training.phase == "idle"  # nothing to cancel
    training.start()
    training.cancelling()
    assert training.phase == "cancelling" and training.running
    training.cancelled("cancelled after epoch 2 (checkpoint kept)")
    assert training.phase == "stopped" and training.status.startswith("cancelled")
    training.start()
    training.failed("boom")
    assert training.phase == "stopped" and "boom" in training.status and "resumes" in training.status
    assert training.loss_curves().x.size == 0


# ===================================================== reference-set summary
def test_summarise_refset_counts_regions_and_histograms(tmp_path):
    from refset_testdata import make_refset

    from spemr_engine.config import default_regions

    refset = make_refset(tmp_path / "set", n_stars=30, repeats=2)
    summary = summarise_refset(tmp_path / "set")
    assert (summary.n_spectra, summary.n_stars, summary.synthetic, summary.source) == (60, 30, True, "tests")
    assert summary.path == str(tmp_path / "set")
    labels = np.asarray(refset.labels, dtype=float)
    for region in default_regions():
        assert summary.region_counts[region.name] == int(region.contains(labels, refset.label_names).sum())
    counts, edges = summary.histograms["Teff"]
    assert counts.sum() == 60 and len(edges) == 31


def test_summarise_refset_refuses_a_folder_that_is_not_a_set(tmp_path):
    from spemr_engine.errors import SpemrError

    with pytest.raises(SpemrError, match="not a reference set"):
        summarise_refset(tmp_path)
