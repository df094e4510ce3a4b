"""The app's Qt-free model: open files, the selected arm pair, the active model and
what has been computed for each pair. Views observe it through tiny events; the main
window changes it. Keeping it free of Qt means it can be tested (and reasoned about)
without widgets, the way napari and glue separate their models from their views.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np


class Event:
    """A list of callbacks: ``event.connect(fn)``, ``event.emit(*args)``."""

    def __init__(self) -> None:
        self._callbacks: list[Callable[..., Any]] = []

    def connect(self, callback: Callable[..., Any]) -> None:
        self._callbacks.append(callback)

    def emit(self, *args: Any) -> None:
        for callback in list(self._callbacks):
            callback(*args)


@dataclass
class PairResult:
    """What inference produced for one arm pair (row 0 of spectra/prediction)."""

    spectra: Any  # PreprocessedSpectra with one row
    prediction: Any | None  # Prediction with one row; None when unusable
    model_key: str  # the model that produced it (results go stale on change)
    device: str = "auto"
    fit: Any | None = None  # spemr_engine.model.fit_quality.FitQuality, row 0 (None: not judged)

    @property
    def usable(self) -> bool:
        if self.prediction is None or not bool(self.spectra.quality.usable[0]):
            return False
        return bool(np.isfinite(self.prediction.mean[0]).any())

    @property
    def reason(self) -> str:
        reasons = self.spectra.quality.reason
        text = reasons[0] if len(reasons) else ""
        return text or "flagged by preprocessing"


@dataclass
class OpenFile:
    """One opened MRS file and what the app knows about each of its arm pairs."""

    path: Path
    mrs: Any  # spemr_engine.reading.lamost.MRSFile
    rv_override: dict[int, float] = field(default_factory=dict)
    prepared: dict[int, Any] = field(default_factory=dict)  # pair -> PreprocessedSpectra (1 row)
    results: dict[int, PairResult] = field(default_factory=dict)
    flux_unit: str | None = None  # as the file states it (TUNIT of FLUX, or BUNIT); None: relative

    @property
    def name(self) -> str:
        return self.path.name

    @property
    def pairs(self) -> list:
        return self.mrs.pairs

    def exposure_of(self, pair_index: int) -> str:
        """The engine's exposure selector for a pair ("coadd" or the lmjm)."""
        return self.pairs[pair_index].label

    def forget_computed(self, pair_index: int | None = None) -> None:
        if pair_index is None:
            self.prepared.clear()
            self.results.clear()
        else:
            self.prepared.pop(pair_index, None)
            self.results.pop(pair_index, None)


class AppState:
    """Everything the views show; changed only through these methods."""

    def __init__(self) -> None:
        self.files: list[OpenFile] = []
        self.current_file: int | None = None
        self.current_pair: int = 0
        self.model: Any | None = None  # spemr_engine.model.bundle.ModelBundle
        self.model_path: str = ""
        self.template_rank: int = 0  # 0 = nearest template, 1 = next, ...
        self.file_added = Event()  # (index)
        self.file_removed = Event()  # (index)
        self.selection_changed = Event()  # ()
        self.prepared_changed = Event()  # (file index, pair index)
        self.result_changed = Event()  # (file index, pair index)
        self.model_changed = Event()  # ()

    # ------------------------------------------------------------------ files
    def add_file(self, opened: OpenFile) -> int:
        """Add a file (or re-select it when already open); return its index."""
        for index, existing in enumerate(self.files):
            if existing.path.resolve() == opened.path.resolve():
                self.select(index, 0)
                return index
        self.files.append(opened)
        index = len(self.files) - 1
        self.file_added.emit(index)
        self.select(index, 0)
        return index

    def remove_file(self, index: int) -> None:
        del self.files[index]
        self.file_removed.emit(index)
        if not self.files:
            self.current_file = None
        else:
            self.current_file = min(self.current_file or 0, len(self.files) - 1)
        self.current_pair = 0
        self.selection_changed.emit()

    def select(self, file_index: int, pair_index: int = 0) -> None:
        if not (0 <= file_index < len(self.files)):
            raise IndexError(f"no open file #{file_index}")
        n_pairs = len(self.files[file_index].pairs)
        if n_pairs and not (0 <= pair_index < n_pairs):
            raise IndexError(f"{self.files[file_index].name}: no arm pair #{pair_index}")
        changed = (file_index, pair_index) != (self.current_file, self.current_pair)
        self.current_file, self.current_pair = file_index, pair_index
        self.template_rank = 0
        if changed:
            self.selection_changed.emit()

    def step_pair(self, step: int) -> None:
        """Move to the previous/next arm pair of the current file (keyboard)."""
        opened = self.current
        if opened is None or not opened.pairs:
            return
        self.select(self.current_file, (self.current_pair + step) % len(opened.pairs))

    @property
    def current(self) -> OpenFile | None:
        return None if self.current_file is None else self.files[self.current_file]

    @property
    def current_pair_obj(self):
        opened = self.current
        if opened is None or not opened.pairs:
            return None
        return opened.pairs[self.current_pair]

    def current_result(self) -> PairResult | None:
        opened = self.current
        if opened is None:
            return None
        result = opened.results.get(self.current_pair)
        if result is not None and result.model_key != self.model_key:
            return None
        return result

    def current_prepared(self):
        opened = self.current
        return None if opened is None else opened.prepared.get(self.current_pair)

    # ------------------------------------------------------------ computed data
    def set_prepared(self, file_index: int, pair_index: int, spectra) -> None:
        self.files[file_index].prepared[pair_index] = spectra
        self.prepared_changed.emit(file_index, pair_index)

    def set_result(self, file_index: int, pair_index: int, result: PairResult) -> None:
        opened = self.files[file_index]
        opened.results[pair_index] = result
        opened.prepared[pair_index] = result.spectra
        self.result_changed.emit(file_index, pair_index)
        self.prepared_changed.emit(file_index, pair_index)

    def set_rv_override(self, rv: float | None) -> None:
        """Override (or clear with None) the RV of the current pair; results go stale."""
        opened = self.current
        if opened is None:
            return
        if rv is None:
            opened.rv_override.pop(self.current_pair, None)
        else:
            opened.rv_override[self.current_pair] = float(rv)
        opened.forget_computed(self.current_pair)
        self.result_changed.emit(self.current_file, self.current_pair)
        self.prepared_changed.emit(self.current_file, self.current_pair)

    def rv_override(self) -> float | None:
        opened = self.current
        return None if opened is None else opened.rv_override.get(self.current_pair)

    # ------------------------------------------------------------------ model
    @property
    def model_key(self) -> str:
        return "" if self.model is None else f"{self.model_path}#{id(self.model)}"

    def set_model(self, model, path: str) -> None:
        """Make a bundle active; every result and preview becomes stale (the RV
        template and the statistics come from the model)."""
        self.model, self.model_path = model, str(path)
        for opened in self.files:
            opened.forget_computed()
        self.model_changed.emit()
