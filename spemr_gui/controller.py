"""The GUI's controller logic that needs no Qt, so plain pytest can test it
(tests/test_gui_controller.py): request tokens that tell a background result from a
stale one, who must be asked before the app closes, and the state of a batch run and
of a training run apart from the widgets that show them.

The views hold these objects and turn them into widget changes; the objects never
touch a widget, a signal or a thread (a batch's pause flag is a ``threading.Event``
because the engine's run polls it).
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from typing import Any, Callable

import numpy as np

from spemr_engine.progress import CatalogProgress, Evaluating, Saved, TrainingEvent, TrainingProgress


# =========================================================== request tokens
@dataclass(frozen=True)
class Request:
    """What a background task was asked for: one arm pair of one file, with the
    model and the RV override of that moment. A result is applied only where it still
    holds (the file is open, the model is the same and so is the RV override), and
    shown only while the user still looks at it."""

    path: str
    pair: int
    model_key: str
    rv: float | None

    @classmethod
    def current(cls, state) -> "Request | None":
        """The request for what the user looks at (None: no file or no arm pair)."""
        opened = state.current
        if opened is None or not opened.pairs:
            return None
        return cls(str(opened.path), state.current_pair, state.model_key, state.rv_override())

    def file_index(self, state) -> int | None:
        """The index of the open file this result still belongs to, None when stale
        (file closed, another model active, the pair's RV override changed)."""
        if self.model_key != state.model_key:
            return None
        for index, opened in enumerate(state.files):
            if str(opened.path) == self.path and opened.rv_override.get(self.pair) == self.rv:
                return index
        return None

    def is_current(self, state) -> bool:
        """True while the user still looks at exactly this (same pair, model and RV)."""
        return self == Request.current(state)


# ============================================================== close checks
class CloseChecks:
    """Who must be asked before the app closes (``may_close`` callables: False keeps it
    open) and what to stop once it does (``stop`` callables). Views register here
    instead of hanging lists on the main window."""

    def __init__(self) -> None:
        self._checks: list[Callable[[], bool]] = []
        self._stops: list[Callable[[], None]] = []

    def register(
        self, may_close: Callable[[], bool] | None = None, stop: Callable[[], None] | None = None
    ) -> Callable[[], None]:
        """Add a question and/or a stop; returns the function that removes them again."""
        if may_close is not None:
            self._checks.append(may_close)
        if stop is not None:
            self._stops.append(stop)

        def unregister() -> None:
            if may_close is not None and may_close in self._checks:
                self._checks.remove(may_close)
            if stop is not None and stop in self._stops:
                self._stops.remove(stop)

        return unregister

    def may_close(self) -> bool:
        """Ask each in the order registered; the first "no" keeps the app open (and the
        later ones are not asked)."""
        return all(ask() for ask in list(self._checks))

    def stop_all(self) -> None:
        for stop in list(self._stops):
            stop()

    def without_questions(self) -> None:
        """Forget the questions, keep the stops (an unattended close: tests, scripts)."""
        self._checks.clear()

    def __len__(self) -> int:
        return len(self._checks)


# ================================================================ batch run
@dataclass(frozen=True)
class BatchControls:
    """Which of the Batch tab's buttons are enabled, and the pause button's text."""

    start: bool
    pause: bool
    cancel: bool
    report: bool
    pause_text: str


@dataclass
class BatchState:
    """One batch run as the Batch tab shows it: running or not, paused or not (the
    event the engine's run polls), its last progress, rows streamed, the isochrones
    overlaid and whether a report is being written."""

    running: bool = False
    pause_event: threading.Event = field(default_factory=threading.Event)
    progress: CatalogProgress | None = None  # the run's last event (None: none yet)
    streamed_rows: int = 0
    isochrone_path: str | None = None
    reporting: bool = False

    @property
    def paused(self) -> bool:
        return self.pause_event.is_set()

    def start(self) -> None:
        self.running = True
        self.pause_event.clear()
        self.progress = None
        self.streamed_rows = 0

    def set_paused(self, paused: bool) -> str:
        """Pause or resume; returns the line the progress label shows ("" when idle)."""
        if paused:
            self.pause_event.set()
        else:
            self.pause_event.clear()
        if not self.running:
            return ""
        return "paused" if paused else "resuming…"

    def on_progress(self, event: CatalogProgress) -> tuple[int, int]:
        """Keep the event; (files done, files total) for the bar."""
        self.progress = event
        return event.files_done, event.files_total

    def add_rows(self, n: int) -> None:
        self.streamed_rows += n

    def end(self) -> bool:
        """The run's outcome landed: not running, not paused (the button reads Pause
        again). True when Pause had been pressed (on a small run every file was already
        in flight, so nothing waited)."""
        was_paused = self.paused
        self.pause_event.clear()
        self.running = False
        return was_paused

    def cancelled_text(self) -> str:
        done = self.progress.files_done if self.progress is not None else 0
        return f"cancelled after {done} files; Start again to resume where it stopped"

    def controls(self, catalog_exists: bool) -> BatchControls:
        return BatchControls(
            start=not self.running,
            pause=self.running,
            cancel=self.running,
            report=catalog_exists and not self.running and not self.reporting,
            pause_text="Resume" if self.paused else "Pause",
        )


# ============================================================= training run
@dataclass(frozen=True)
class LossCurves:
    """The loss plot's data: one point per finished epoch, no line across a job."""

    x: np.ndarray
    train: np.ndarray
    val: np.ndarray  # NaN replaced by a finite value; val_connect hides those points
    connect: np.ndarray
    val_connect: np.ndarray


@dataclass
class TrainingState:
    """A training run as the wizard's training page shows it: phase, status line,
    finished epochs per job, the latest job's validation MAE per label, the bundle
    written. ``on_progress`` turns the engine's events into these."""

    phase: str = "idle"  # idle | running | cancelling | done | stopped
    status: str = "not started"
    history: list[dict] = field(default_factory=list)  # one entry per finished epoch, all jobs
    mae_job: str = ""
    mae_history: dict[str, list[float]] = field(default_factory=dict)
    done_path: str = ""
    eta: Any = None  # spemr_gui.eta.TrainingEta of the run, when known
    eta_text: str = ""

    @property
    def running(self) -> bool:
        return self.phase in ("running", "cancelling")

    def start(self, eta=None) -> None:
        self.phase, self.status = "running", "starting the training process…"
        self.eta, self.eta_text = eta, ""

    def cancelling(self) -> None:
        if self.running:
            self.phase, self.status = "cancelling", "cancelling (saving a checkpoint)…"

    def finished(self, path: str) -> None:
        self.phase, self.done_path, self.status = "done", str(path), f"training finished: {path}"

    def failed(self, message: str) -> None:
        self.phase = "stopped"
        self.status = f"training failed: {message} — Start again resumes from the last checkpoint"

    def cancelled(self, message: str) -> None:
        self.phase, self.status = "stopped", str(message)

    def on_progress(self, event: TrainingEvent) -> str | None:
        """Update status, ETA and history from one engine event (a training step or
        epoch, the closing evaluation, the saved bundle). Returns the job's name when the
        event finished an epoch of it (the loss plot gains a point), else None."""
        if isinstance(event, TrainingProgress):
            if self.eta is not None:
                self.eta.update(event)
                self.eta_text = self.eta.text()
            job = f"{event.stage} {event.where}"
            text = f"{job}: epoch {event.epoch}/{event.n_epochs}"
            if event.epoch_finished:
                self.add_epoch(job, event)
                self.status = text + f" — train {event.train_loss:.4f}, validation {event.val_loss:.4f}"
                return job
            self.status = text + f", step {event.step}/{event.n_steps}, loss {event.train_loss:.4f}"
        elif isinstance(event, Evaluating):
            self.eta_text = "" if self.eta is None else f"{self.eta.elapsed_text()} · evaluating"
            self.status = f"evaluating on {event.n_spectra} test spectra…"
        elif isinstance(event, Saved):
            self.eta_text = ""
            self.status = f"saved {event.path}"
        return None

    def add_epoch(self, job: str, event: TrainingProgress) -> None:
        """One finished epoch (``event.val_loss`` set) of ``job``."""
        self.history.append({"job": job, "train": event.train_loss, "val": event.val_loss})
        mae = {k: float(v) for k, v in event.val_mae.items() if v is not None and np.isfinite(v)}
        if not mae:
            return  # e.g. a region without validation spectra: keep the last curves
        if job != self.mae_job:
            self.mae_job, self.mae_history = job, {}
        for label, value in mae.items():
            self.mae_history.setdefault(label, []).append(value)

    def job_starts(self) -> list[tuple[float, str]]:
        """(x of the boundary before the job's first epoch, job) for each job, in order."""
        starts = []
        for i, entry in enumerate(self.history):
            if i == 0 or self.history[i - 1]["job"] != entry["job"]:
                starts.append((i + 0.5, entry["job"]))
        return starts

    def loss_curves(self) -> LossCurves:
        n = len(self.history)
        x = np.arange(1, n + 1, dtype=float)
        jobs = [h["job"] for h in self.history]
        breaks = np.array([i > 0 and jobs[i] != jobs[i - 1] for i in range(n)], dtype=bool)
        connect = ~np.append(breaks[1:], False) if n else np.zeros(0, dtype=bool)
        val = np.array([h["val"] for h in self.history], dtype=float)
        finite = np.isfinite(val)
        val_connect = connect & finite & np.append(finite[1:], False) if n else connect
        filled = np.where(finite, val, np.nanmin(val) if finite.any() else 0.0)
        return LossCurves(x, np.array([h["train"] for h in self.history], dtype=float), filled, connect, val_connect)


# ======================================================= reference-set summary
@dataclass(frozen=True)
class RefsetSummary:
    """What the wizard's summary page shows of a reference set, computed in a worker
    (opening a set reads its rows table: seconds for a survey-sized one)."""

    path: str
    n_spectra: int
    n_stars: int
    synthetic: bool
    source: str
    region_counts: dict[str, int]
    histograms: dict[str, tuple[np.ndarray, np.ndarray]]  # label -> (counts, edges)


def summarise_refset(path, histogram_labels=("Teff", "Logg", "FeH"), bins: int = 30) -> RefsetSummary:
    """Open a reference set and summarise it (raises the engine's errors when it is
    not a usable one). Call it off the GUI thread."""
    from spemr_engine.config import default_regions
    from spemr_engine.training.refset import ReferenceSet

    refset = ReferenceSet.open(path)
    labels = np.asarray(refset.labels, dtype=np.float64)
    names = list(refset.label_names)
    counts = {r.name: int(r.contains(labels, names).sum()) for r in default_regions()}
    histograms = {}
    for name in histogram_labels:
        if name in names:
            values = labels[:, names.index(name)]
            values = values[np.isfinite(values)]
            if values.size:
                histograms[name] = np.histogram(values, bins=bins)
    return RefsetSummary(
        path=str(path),
        n_spectra=len(refset),
        n_stars=len(set(refset.star_id)),
        synthetic=bool(refset.synthetic),
        source=str(refset.source),
        region_counts=counts,
        histograms=histograms,
    )
