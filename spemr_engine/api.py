"""The engine's high-level API: what the CLI, the GUI, the catalog and the tests call.

    default_model_path() -> Path
    load_model(path=None) -> ModelBundle
    analyse_file(source, model=None, exposure="coadd", rv=None, rv_catalog=None, device="auto")
        -> FileAnalysis (read, preprocess, predict, judge the fit; rows() gives catalog rows);
        source: a path, an MRSFile already read, or a PreparedInput already preprocessed
    label_prepared(prepared, device="auto") -> FileAnalysis (the labelling half)
    predict_with_quality(model, flux, ivar) -> (Prediction with inflated sigmas, FitQuality)
    preprocess_file(source, model=None, exposure="coadd", rv=None, rv_catalog=None)
        -> PreparedInput (pipeline.file_spectra for the model, as analyse_file does)
    preprocess_for_model(pairs, model, rv=None) -> PreprocessedSpectra (the one RV/grid path)
    catalog_columns(labels=None) -> list[str]

Rows and columns are the catalog's (spemr_engine.batch.catalog_rows), so `spemr predict`, the
batch catalog and the GUI export agree column for column.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from types import SimpleNamespace
from typing import TYPE_CHECKING, Sequence

import numpy as np

from . import config
from .batch import catalog_rows
from .model.bundle import ModelBundle, load_bundle
from .errors import ModelBundleError
from .reading.lamost import ArmPair, MRSFile
from .preprocessing.pipeline import Preparation, file_spectra
from .preprocessing.preprocess import PreprocessedSpectra

if TYPE_CHECKING:  # torch-free at run time: inference is imported lazily
    from .preprocessing.rv import RVCatalog
    from .model.fit_quality import FitQuality
    from .model.inference import Prediction

MODEL_ENV = "SPEMR_MODEL"


def default_model_path() -> Path:
    """assets/models/default, unless the SPEMR_MODEL environment variable names another."""
    override = os.environ.get(MODEL_ENV)
    return Path(override) if override else config.assets_dir() / "models" / "default"


def load_model(path: str | Path | None = None) -> ModelBundle:
    """Load a model bundle (the default one when ``path`` is None); ModelBundleError if unusable."""
    if path is None:
        path = default_model_path()
        if not Path(path).exists():
            raise ModelBundleError(path, f"no default model installed (pass --model DIR or set {MODEL_ENV})")
    return load_bundle(path)


def catalog_columns(labels: Sequence[str] | None = None) -> list[str]:
    """Output columns: obsid, filename, ra, dec, extname_blue, extname_red, snr_blue,
    snr_red, each label and its _err (published catalog names), then the extras
    (source, spectrum, rv..., flags, error), the winning sub-model per label and
    model_trained_on."""
    return catalog_rows.columns(SimpleNamespace(labels=list(labels or config.LABELS)))


@dataclass
class FileAnalysis:
    """One file read, preprocessed and labelled. ``prediction`` has one row per pair
    (NaN labels, winner -1 for spectra that fail the quality selection) and is None when
    no pair is usable; ``spectra.quality`` says why."""

    path: Path
    mrs: MRSFile
    pairs: list[ArmPair]
    spectra: PreprocessedSpectra
    prediction: Prediction | None  # inference.Prediction (imported lazily)
    model: ModelBundle
    warnings: list[str] = field(default_factory=list)
    fit: FitQuality | None = None  # fit_quality.FitQuality, one row per pair

    @property
    def usable(self) -> np.ndarray:
        return np.asarray(self.spectra.quality.usable, dtype=bool)

    def rows(self) -> list[dict]:
        """Catalog rows, one per pair, in the file's pair order (never dropped)."""
        labelled = catalog_rows.label_columns(self.model)
        out = []
        for index, pair in enumerate(self.pairs):
            row, _ = catalog_rows.spectrum_row(str(self.path), self.mrs.meta, pair, self.spectra, index)
            row.update(label_values(labelled, self.prediction, index))
            if self.fit is not None and self.usable[index]:
                catalog_rows.add_fit_quality(row, self.fit, index)
            row["model_trained_on"] = self.model.trained_on
            out.append(row)
        return out


def label_values(labelled: Sequence[tuple[str, str]], prediction, index: int | None) -> dict:
    """Label, _err and winning sub-model columns of one row (empty when not predicted)."""
    values: dict = {}
    positions = {name: j for j, name in enumerate(prediction.labels)} if prediction is not None else {}
    for label, catalog in labelled:
        j = positions.get(label)
        mean = sigma = None
        winner = ""
        if j is not None and index is not None and prediction.winner[index, j] >= 0:
            mean, sigma = _finite(prediction.mean[index, j]), _finite(prediction.sigma[index, j])
            winner = prediction.submodels[int(prediction.winner[index, j])]
        values[catalog], values[f"{catalog}_err"] = mean, sigma
        values[f"{catalog}{catalog_rows.SUBMODEL_SUFFIX}"] = winner
    return values


@dataclass
class PreparedInput:
    """One file read and preprocessed for a model (pipeline.file_spectra with
    Preparation.for_model): ``spectra.flux`` (its usable rows) is exactly what the model
    is given. The app builds one from the MRSFile and spectra it already holds."""

    path: Path
    mrs: MRSFile
    pairs: list[ArmPair]
    spectra: PreprocessedSpectra
    model: ModelBundle


def preprocess_for_model(
    pairs: Sequence[ArmPair], model: ModelBundle, rv: float | Sequence[float] | None = None
) -> PreprocessedSpectra:
    """The one preprocessing path for a model (predict, preprocess, the GUI): the model's
    grid, and RV by cross-correlation against the model's mean training spectrum (a
    rest-frame mean star), or the shipped line template when the model has only
    placeholder statistics, for pairs without a given rv (pipeline.Preparation.for_model)."""
    return Preparation.for_model(model).preprocess(pairs, rv)


def preprocess_file(
    source: "str | Path | MRSFile",
    model: "ModelBundle | str | Path | None" = None,
    exposure: str = "coadd",
    rv: float | Sequence[float] | None = None,
    rv_catalog: "RVCatalog | str | Path | None" = None,
) -> PreparedInput:
    """Read one LAMOST MRS file (or take the MRSFile the caller holds) and preprocess the
    chosen pairs for the model (pipeline.file_spectra) as ``analyse_file`` does.

    rv: km/s for every pair (or one per pair); otherwise the RV catalog's value for the
    file when it has one; otherwise measured (see preprocess_for_model). Raises
    InputFileError for unreadable files."""
    bundle = model if isinstance(model, ModelBundle) else load_model(model)
    found = file_spectra(source, Preparation.for_model(bundle), exposure, rv, rv_catalog)
    return PreparedInput(path=found.path, mrs=found.mrs, pairs=found.pairs, spectra=found.spectra, model=bundle)


def analyse_file(
    source: "str | Path | MRSFile | PreparedInput",
    model: "ModelBundle | str | Path | None" = None,
    exposure: str = "coadd",
    rv: float | Sequence[float] | None = None,
    rv_catalog: "RVCatalog | str | Path | None" = None,
    device: str = "auto",
    batch_size: int = 256,
) -> FileAnalysis:
    """Read one LAMOST MRS file, preprocess the chosen pairs (``preprocess_file``) and
    label the usable ones. Raises InputFileError for unreadable files.

    ``source`` may be a path, an MRSFile already read, or a PreparedInput already
    preprocessed for this model (then exposure, rv and rv_catalog are not used): the app
    passes what it holds instead of reading and preprocessing the file again."""
    if not isinstance(source, PreparedInput):
        source = preprocess_file(source, model, exposure, rv, rv_catalog)
    return label_prepared(source, device=device, batch_size=batch_size)


def label_prepared(prepared: PreparedInput, device: str = "auto", batch_size: int = 256) -> FileAnalysis:
    """Label the usable spectra of a prepared file and judge their fit."""
    bundle, spectra, n = prepared.model, prepared.spectra, len(prepared.pairs)
    usable = np.flatnonzero(spectra.quality.usable)
    prediction = fit = None
    if usable.size:
        prediction, fit = predict_with_quality(
            bundle, spectra.flux[usable], spectra.ivar[usable], device=device, batch_size=batch_size
        )
        prediction, fit = prediction.expand(usable, n), fit.expand(usable, n)
    return FileAnalysis(
        path=prepared.path,
        mrs=prepared.mrs,
        pairs=list(prepared.pairs),
        spectra=spectra,
        prediction=prediction,
        model=bundle,
        warnings=list(prepared.mrs.warnings),
        fit=fit,
    )


def predict_with_quality(
    model: ModelBundle,
    flux: np.ndarray,
    ivar: np.ndarray,
    device: str = "auto",
    batch_size: int = 256,
    keep_model_flux: bool = True,
):
    """Predict (n, n_pixels) normalised flux and judge the fit (fit_quality.assess):
    returns (prediction with poor_fit rows' sigmas inflated, FitQuality)."""
    from .model.fit_quality import assess, inflate

    raw = _predictor(model, device, batch_size).predict(flux)
    fit = assess(raw, flux, ivar, model, keep_model_flux=keep_model_flux)
    return inflate(raw, fit), fit


def predictor_for(model: ModelBundle, device: str = "auto", batch_size: int = 256):
    """A cached SpemrPredictor for a bundle (building one loads every network)."""
    return _predictor(model, device, batch_size)


# ------------------------------------------------------------------ helpers
_PREDICTORS: dict[tuple, object] = {}
_MAX_PREDICTORS = 2


def _predictor(bundle: ModelBundle, device: str, batch_size: int):
    """Keep the last few predictors: the GUI and `spemr predict` label file after file
    with one model. Keyed by folder, weights mtime, device and batch size, so a re-saved
    bundle is reloaded."""
    weights = bundle.weights_path
    stamp = weights.stat().st_mtime_ns if weights.exists() else 0
    key = (str(Path(bundle.path).resolve()), stamp, str(device), int(batch_size))
    if key not in _PREDICTORS:
        from .model.inference import SpemrPredictor

        while len(_PREDICTORS) >= _MAX_PREDICTORS:
            _PREDICTORS.pop(next(iter(_PREDICTORS)))
        _PREDICTORS[key] = SpemrPredictor(bundle, device=device, batch_size=batch_size)
    return _PREDICTORS[key]


def _finite(value) -> float | None:
    value = float(value)
    return value if math.isfinite(value) else None
