"""Progress events: what long jobs pass to their ``progress`` callback.

Every job reports through these few frozen types (never dicts with a job's own keys), so
the CLI's printers, the app's views and the job process that forwards events to the app
read one vocabulary, and a misspelt field is an error rather than a silent ``None``.

    Count             done of total units in one stage: cross-match scan/build (files),
                      reference-set import, evaluation, prediction, quality calibration,
                      synthesis (stars)
    TrainingProgress  a training step, or (val_loss set) a finished epoch
    Evaluating        training's closing evaluation on the test split
    Saved             a training run saved its bundle
    CatalogProgress   the batch catalog: files and spectra done, rate, ETA, the rows just labelled

They hold plain values only, so they pickle to the app from a job process.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Union

# Count.stage values
SCAN, BUILD, IMPORT, EVALUATE, PREDICT, CALIBRATE, SYNTHESISE = (
    "scan",
    "build",
    "import",
    "evaluate",
    "predict",
    "calibrate-quality",
    "synthesise",
)
# CatalogProgress.phase values
LABELLING, ASSEMBLING, DONE = "labelling", "assembling", "done"


@dataclass(frozen=True)
class Count:
    """``done`` of ``total`` ``unit`` in ``stage``; kept/rejected where the stage cuts."""

    stage: str
    done: int
    total: int
    unit: str = "spectra"  # "files" | "spectra" | "stars"
    kept: int | None = None  # spectra kept so far (cross-match build, synthesis)
    rejected: int | None = None
    elapsed_s: float | None = None
    split: str | None = None  # the split being imported (reference-set import)


@dataclass(frozen=True)
class TrainingProgress:
    """One training step of a job (member x network, pre-training or a region's
    fine-tuning), or, when ``val_loss`` is set, the end of an epoch."""

    stage: str  # training.PRETRAIN | training.FINETUNE
    member: int
    network: str
    region: str | None
    n_epochs: int
    epoch: int
    step: int
    n_steps: int
    train_loss: float
    val_loss: float | None = None
    val_mae: dict[str, float] = field(default_factory=dict)
    best_epoch: int | None = None

    @property
    def epoch_finished(self) -> bool:
        return self.val_loss is not None

    @property
    def job(self) -> tuple:
        """What identifies the job across its events."""
        return (self.stage, self.member, self.network, self.region)

    @property
    def where(self) -> str:
        """'m0 SP1' or 'm0 SP1 S2': the job, as the CLI and the app name it."""
        return f"m{self.member} {self.network}" + (f" {self.region}" if self.region else "")


@dataclass(frozen=True)
class Evaluating:
    """Training evaluates the saved bundle on its test split."""

    n_spectra: int


@dataclass(frozen=True)
class Saved:
    """Training saved its bundle at ``path``."""

    path: str
    seconds: float


@dataclass(frozen=True)
class CatalogProgress:
    """The batch catalog's state (catalog.run_catalog). ``rows``: the rows labelled since
    the last event, for live views (empty outside the labelling phase)."""

    phase: str  # LABELLING | ASSEMBLING | DONE
    files_done: int
    files_total: int
    files_resumed: int = 0
    files_committed: int = 0
    spectra_done: int = 0
    elapsed_s: float = 0.0
    spectra_per_s: float = 0.0
    eta_s: float | None = None
    rows: list[dict] = field(default_factory=list)


Event = Union[Count, TrainingProgress, Evaluating, Saved, CatalogProgress]
# What each kind of job passes to its callback (a callback for any Event fits all three).
CountProgress = Callable[[Count], None]
TrainingEvent = Union[TrainingProgress, Evaluating, Saved]
TrainingCallback = Callable[[TrainingEvent], None]
CatalogCallback = Callable[[CatalogProgress], None]


def from_synthesis(state: dict) -> Count:
    """synth.refset_builder's progress dict (stars_done, stars_total, spectra_kept,
    spectra_rejected, elapsed_s) as a Count. spemr_engine/synth keeps its dict while its
    models are retrained there; the app's job process converts it at the boundary."""
    return Count(
        stage=SYNTHESISE,
        done=int(state["stars_done"]),
        total=int(state["stars_total"]),
        unit="stars",
        kept=int(state.get("spectra_kept", 0)),
        rejected=int(state.get("spectra_rejected", 0)),
        elapsed_s=float(state.get("elapsed_s", 0.0)),
    )
