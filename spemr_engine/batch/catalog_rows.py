"""Catalog rows: what a worker prepares from one file, and how a batch of prepared files
becomes labelled rows.

The split follows the cost: reading and preprocessing (:func:`prepare_file`) is
per-file CPU work that needs no model, so it runs in worker processes and never imports
torch; inference (:class:`Labeller`) runs on stacked spectra from many files at once in
the one process that holds the model. A :class:`PreparedFile` carries only what the rows
need (metadata and the grid flux), not the raw arrays, so it is cheap to pickle.

Row contract: one row per spectrum (the coadd, and with exposures="all" every single
exposure), in the file's pair order; a file that cannot be read gets one row with
``flags`` = ``file_error`` and the reason in ``error``. ``flags`` is a ``|``-separated
list of short tokens (empty = nothing to report), see FLAG_DOC.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import numpy as np

from .. import config
from ..preprocessing import pipeline
from ..preprocessing.pipeline import Preparation

FLAG_DOC = {
    "file_error": "the file could not be read as a LAMOST MRS file (see error)",
    "no_spectra": "the file holds no blue+red pair for the requested exposures",
    "internal_error": "preprocessing failed unexpectedly (see error)",
    "worker_crashed": "the worker process died twice on this file",
    "low_snr": "S/N below the paper's selection limit in an arm (or unknown)",
    "bad_pixels": "more bad pixels than the paper's selection allows",
    "bad_run": "a run of consecutive bad pixels longer than the selection allows",
    "rv_unreliable": "the RV cross-correlation peak is too weak to trust (or, for a given RV, the "
    "spectrum does not match the template at it)",
    "no_good_pixels": "an arm has no good pixel",
    "featureless": "an arm has no stellar lines at the RV used (flat, smooth or noise)",
    "poor_fit": "fit_chi2 or member_spread above the model's calibrated threshold (the training "
    "world's 99th percentile): the spectrum is unlike the training world; every sigma "
    "is multiplied by sigma_inflation",
    "region_mismatch": "the fused labels lie > 2 sigma outside the region of a winning sub-model "
    "(listed in region_mismatch)",
}
# Flags of a row that stands for a whole input file that could not be labelled.
FAILED_FILE_FLAGS = ("file_error", "no_spectra", "internal_error", "worker_crashed")
# Metadata columns before the labels; the first eight are the published catalog's.
META_COLUMNS = ["obsid", "filename", "ra", "dec", "extname_blue", "extname_red", "snr_blue", "snr_red"]
FIT_COLUMNS = ["fit_chi2", "member_spread", "sigma_inflation", "region_mismatch"]
EXTRA_COLUMNS = [
    "source",
    "spectrum",
    "designation",
    "rv",
    "rv_err",
    "rv_source",
    "ccf_peak",
    "n_bad",
    "usable",
    *FIT_COLUMNS,
    "flags",
    "error",
]
SUBMODEL_SUFFIX = "_submodel"


# ===================================================================== columns
def label_columns(bundle) -> list[tuple[str, str]]:
    """(model label, published catalog name) for the labels the model predicts."""
    names = {info.name: info.catalog for info in config.label_infos()}
    return [(label, names.get(label, label)) for label in bundle.labels]


def columns(bundle) -> list[str]:
    """Every catalog column, in order: published columns, then the extras."""
    labelled = label_columns(bundle)
    values = [name for _, catalog in labelled for name in (catalog, f"{catalog}_err")]
    winners = [f"{catalog}{SUBMODEL_SUFFIX}" for _, catalog in labelled]
    return META_COLUMNS + values + EXTRA_COLUMNS + winners + ["model_trained_on"]


def table_metadata(bundle) -> dict[str, object]:
    """Header keywords / Parquet metadata saying where the numbers come from."""
    meta = {
        "SPEMRMOD": Path(bundle.path).name,
        "TRAINED": bundle.trained_on,
        "SYNTHET": bool(bundle.trained_on_synthetic),
    }
    caveat = model_caveat(bundle)
    if caveat:
        meta["CAVEAT"] = caveat[:68]
    thresholds = getattr(bundle, "quality", None)
    meta["FITCHI2"] = float(thresholds.fit_chi2_max) if thresholds is not None else "uncalibrated"
    if thresholds is not None:
        meta["FITSPRD"] = float(thresholds.member_spread_max)
    return meta


def model_caveat(bundle) -> str | None:
    """A warning for catalogs made with a model that never saw real labels."""
    if bundle.trained_on == "synthetic":
        return "model trained on synthetic spectra: labels are not calibrated on real stars"
    if bundle.trained_on == "random":
        return "model has random weights: labels are meaningless (tests/benchmarks only)"
    return None


# ================================================================ worker side
@dataclass(frozen=True)
class PrepareOptions:
    """What a worker needs to prepare a file (small and picklable)."""

    exposures: str
    rv_catalog: str | None
    preparation: Preparation  # the model's grid and RV template

    @classmethod
    def from_settings(cls, settings, bundle) -> "PrepareOptions":
        return cls(
            exposures=settings.exposures,
            rv_catalog=settings.rv_catalog,
            preparation=Preparation.for_model(bundle),
        )


@dataclass
class PreparedFile:
    """One input file, preprocessed: rows without labels, and the grid flux to label."""

    source: str
    rows: list[dict]
    flux: np.ndarray | None = None  # (k, n_pixels) float32
    infer_rows: list[int] = field(default_factory=list)
    ivar: np.ndarray | None = None  # (k, n_pixels) float32, for the fit quality

    @property
    def n_to_infer(self) -> int:
        return len(self.infer_rows)


def source_path(path) -> str:
    """The ``source`` column: the file's absolute path, symlinks resolved. It is what
    tells files apart (``spemr predict``, ``spemr catalog`` and its resume, the app's batch
    table): ``filename`` keeps the published catalog's meaning, LAMOST's name for the file
    (the header's FILENAME, lamost.fits_name when the header has none), and two different
    files can share it (a copy, a re-download, a release kept in two folders)."""
    return str(Path(path).expanduser().resolve())


def failed_file(path: str, flag: str, message: str) -> PreparedFile:
    """One row for a file that produced no spectra."""
    from ..reading.lamost import fits_name

    row = {
        "source": source_path(path),
        "filename": fits_name(Path(path)),
        "spectrum": "file",
        "usable": False,
        "flags": flag,
        "error": message,
    }
    return PreparedFile(source=str(path), rows=[row])


def prepare_batch(paths: Sequence[str], options: PrepareOptions) -> list[PreparedFile]:
    """Worker entry point: prepare several files (one task, to amortise the IPC)."""
    return [prepare_file(path, options) for path in paths]


def prepare_file(path: str, options: PrepareOptions) -> PreparedFile:
    """Read and preprocess one file through the pipeline's stages; never raises for a
    bad file (it becomes a row flagged by the stage that failed)."""
    from ..errors import SpemrError

    try:
        mrs = pipeline.read(path)
        pairs = pipeline.select_pairs(mrs, options.exposures)
    except pipeline.NoSpectra as error:
        return failed_file(path, "no_spectra", str(error))
    except SpemrError as error:
        return failed_file(path, "file_error", str(error))
    except Exception as error:  # a bug or a file we did not foresee: keep going, say so
        return failed_file(path, "internal_error", f"{Path(path).name}: {type(error).__name__}: {error}")
    try:
        spectra = options.preparation.preprocess(pairs, rv=pipeline.file_rv(mrs.meta, options.rv_catalog))
        return _prepared(path, mrs, pairs, spectra)
    except Exception as error:
        return failed_file(path, "internal_error", f"{Path(path).name}: {type(error).__name__}: {error}")


def _prepared(path: str, mrs, pairs, spectra) -> PreparedFile:
    rows, infer = [], []
    for index, pair in enumerate(pairs):
        row, labelled = spectrum_row(path, mrs.meta, pair, spectra, index)
        rows.append(row)
        if labelled:
            infer.append(index)
    flux = spectra.flux[infer] if infer else None
    ivar = spectra.ivar[infer] if infer else None
    return PreparedFile(source=str(path), rows=rows, flux=flux, infer_rows=infer, ivar=ivar)


def spectrum_row(path: str, meta: dict, pair, spectra, index: int) -> tuple[dict, bool]:
    """The row of one spectrum and whether it gets labels: like api.analyse_file, only
    spectra passing the paper's selection (quality.usable) are labelled; the others keep
    their row, NaN labels, flags and the reason in ``error``."""
    quality = spectra.quality
    flags = quality.flags(index)  # why it fails the paper's selection (preprocess.FLAG_NAMES)
    usable = bool(quality.usable[index])
    from ..reading.lamost import fits_name

    row = {
        "obsid": meta.get("obsid"),
        "filename": meta.get("filename") or fits_name(Path(path)),
        "ra": meta.get("ra"),
        "dec": meta.get("dec"),
        "extname_blue": pair.extname_blue,
        "extname_red": pair.extname_red,
        "snr_blue": _finite_or_none(quality.snr_blue[index]),
        "snr_red": _finite_or_none(quality.snr_red[index]),
        "source": source_path(path),
        "spectrum": pair.label,
        "designation": meta.get("designation"),
        "rv": float(spectra.rv[index]),
        "rv_err": float(spectra.rv_err[index]),
        "rv_source": spectra.rv_source[index],
        "ccf_peak": _finite_or_none(quality.ccf_peak[index]),
        "n_bad": int(quality.n_bad[index]),
        "usable": usable,
        "fit_chi2": None,
        "member_spread": None,
        "sigma_inflation": None,
        "region_mismatch": "",
        "flags": "|".join(flags),
        "error": "" if usable else quality.reason[index],
    }
    return row, usable


def add_fit_quality(row: dict, fit, i: int) -> None:
    """Fill a labelled row's fit-quality columns from fit_quality.FitQuality ``fit`` and
    append its flags (poor_fit, region_mismatch) to the row's flags."""
    row.update(fit.row_values(i))
    extra = fit.flags(i)
    if extra:
        row["flags"] = "|".join([token for token in (row.get("flags") or "").split("|") if token] + extra)


def _finite_or_none(value) -> float | None:
    value = float(value)
    return value if math.isfinite(value) else None


# ================================================================ model side
@dataclass
class _Waiting:
    """A file whose labelled spectra are not all back from the model yet."""

    rows: list[dict]
    missing: int


class Labeller:
    """Batched inference over prepared files, in the process that holds the model.

    The network is always run on blocks of exactly ``batch_size`` spectra (the last one
    padded): torch's float results for a spectrum depend on the batch shape, so a fixed
    shape makes every spectrum's labels independent of which other files shared its
    batch. That is what lets a resumed run (or a chunking change) reproduce an
    uninterrupted run bit for bit on the same machine and thread count."""

    def __init__(self, bundle, device: str = "auto", batch_size: int = 256):
        from ..model.inference import SpemrPredictor

        self.bundle = bundle
        self.batch_size = max(1, int(batch_size))
        self.predictor = SpemrPredictor(bundle, device=device, batch_size=self.batch_size)
        self.labelled = label_columns(bundle)
        self._waiting: dict[str, _Waiting] = {}
        self._queue: list[tuple] = []  # (source, row index, flux, ivar)
        self._done: dict[str, list[dict]] = {}

    # ------------------------------------------------------------- streaming
    def add(self, prepared: PreparedFile) -> None:
        rows = [self._blank(row) for row in prepared.rows]
        if not prepared.n_to_infer:
            self._done[prepared.source] = rows
            return
        self._waiting[prepared.source] = _Waiting(rows, prepared.n_to_infer)
        flux = prepared.flux
        assert flux is not None  # prepare_file sets it whenever there are rows to label
        ivar = prepared.ivar if prepared.ivar is not None else np.zeros_like(flux)
        self._queue.extend((prepared.source, r, flux[k], ivar[k]) for k, r in enumerate(prepared.infer_rows))

    @property
    def n_queued(self) -> int:
        return len(self._queue)

    def ready(self) -> dict[str, list[dict]]:
        """Run every full block queued; return the files that are now complete."""
        while len(self._queue) >= self.batch_size:
            self._run_block()
        return self._take_done()

    def finish(self) -> dict[str, list[dict]]:
        """Run what is left (one padded block); return the remaining files."""
        while self._queue:
            self._run_block()
        return self._take_done()

    def label(self, files: Sequence[PreparedFile]) -> dict[str, list[dict]]:
        """Rows of every file, labels filled in where a spectrum is labelled."""
        for prepared in files:
            self.add(prepared)
        done = self.ready()
        done.update(self.finish())
        return done

    # --------------------------------------------------------------- private
    def _take_done(self) -> dict[str, list[dict]]:
        done, self._done = self._done, {}
        return done

    def _run_block(self) -> None:
        block, self._queue = self._queue[: self.batch_size], self._queue[self.batch_size :]
        flux = np.stack([item[2] for item in block])
        if len(flux) < self.batch_size:
            pad = np.ones((self.batch_size - len(flux), flux.shape[1]), dtype=flux.dtype)
            flux = np.concatenate([flux, pad])
        from ..model.fit_quality import assess, inflate

        prediction = self.predictor.predict(flux)
        real = np.arange(len(block))
        prediction = _take(prediction, real)
        ivar = np.stack([item[3] for item in block])
        fit = assess(prediction, flux[real], ivar, self.bundle)
        prediction = inflate(prediction, fit)
        for i, (source, row_index, _, _) in enumerate(block):
            waiting = self._waiting[source]
            self._fill(waiting.rows[row_index], prediction, i)
            add_fit_quality(waiting.rows[row_index], fit, i)
            waiting.missing -= 1
            if waiting.missing == 0:
                self._done[source] = self._waiting.pop(source).rows

    def _blank(self, row: dict) -> dict:
        row = dict(row)
        for _, catalog in self.labelled:
            row[catalog] = None
            row[f"{catalog}_err"] = None
            row[f"{catalog}{SUBMODEL_SUFFIX}"] = ""
        row["model_trained_on"] = self.bundle.trained_on
        return row

    def _fill(self, row: dict, prediction, i: int) -> None:
        index = {name: j for j, name in enumerate(prediction.labels)}
        for label, catalog in self.labelled:
            j = index[label]
            winner = int(prediction.winner[i, j])
            row[catalog] = _finite_or_none(prediction.mean[i, j])
            row[f"{catalog}_err"] = _finite_or_none(prediction.sigma[i, j])
            row[f"{catalog}{SUBMODEL_SUFFIX}"] = prediction.submodels[winner] if winner >= 0 else ""


def _take(prediction, rows: np.ndarray):
    """The prediction of ``rows`` only (drops the padding of a fixed-size block)."""
    from dataclasses import replace

    return replace(
        prediction,
        mean=prediction.mean[rows],
        sigma=prediction.sigma[rows],
        winner=prediction.winner[rows],
        sub_mean=prediction.sub_mean[rows],
        sub_sigma=prediction.sub_sigma[rows],
        member_mean=prediction.member_mean[rows],
    )
