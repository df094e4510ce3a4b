"""Fit quality: is a prediction believable for this spectrum? (issue 10, items 6 and 7)

Per labelled spectrum:

* ``fit_chi2``: reduced chi-square of the observed pipeline-normalised flux (the model
  input, rest frame) against the noiseless model spectrum at the fused labels
  (``synth.model_spectra.model_spectra``), weighted by the normalised flux's inverse
  variance (``PreprocessedSpectra.ivar``), over the pixels with data (ivar > 0: never
  interpolated or masked pixels): sum(ivar (f - m)^2) / n_pixels. About 1 for a spectrum
  from the world the model was trained in; large for one its model spectrum cannot
  describe (another physics, a peculiar star, a bad reduction).
* ``member_spread``: for each of ``spread_labels`` (presets/fit_quality.json: Teff,
  log g, [Fe/H]) the standard deviation over ensemble members of the winning sub-model's
  means, divided by the fused sigma; the largest. It is the share of the sigma that comes
  from the members disagreeing (<= 1 by eq. 1), NaN for a one-member model.
* ``region_mismatch``: the winning sub-models whose region the fused labels lie more than
  ``region_sigma`` (2) sigma outside (e.g. a [Fe/H] = -1.75 +- 0.1 star labelled by S1,
  whose region is [Fe/H] >= -1.0). Flag ``region_mismatch``. Judged with the fusion's
  own sigmas, before any poor_fit inflation: it questions the fusion's choice.

Thresholds come from the training world: ``spemr calibrate-quality MODEL REFSET`` stores
the ``percentile`` (99th) of both measures on held-out reference-set spectra in the model
manifest (``quality``). Above either threshold a row is flagged ``poor_fit`` and every
sigma is multiplied by ``sigma_inflation`` = max(1, sqrt(fit_chi2 / fit_chi2_max),
member_spread / member_spread_max), so data from another world do not come with the
training world's confident sigmas. A model without thresholds still gets both columns;
it never raises ``poor_fit`` and says so (:func:`calibration_note`).

Never imports torch or Qt.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from typing import Mapping, Sequence

import numpy as np

from .. import config
from ..errors import ModelBundleError

MANIFEST_KEY = "quality"
FLAG_POOR_FIT = "poor_fit"
FLAG_REGION_MISMATCH = "region_mismatch"
COLUMNS = ["fit_chi2", "member_spread", "sigma_inflation", "region_mismatch"]
CHI2_DIGITS = 6
UNCALIBRATED_NOTE = (
    "fit quality not calibrated for this model: fit_chi2 and member_spread are "
    "reported but poor_fit is never raised (run spemr calibrate-quality)"
)


# ================================================================= thresholds
@dataclass(frozen=True)
class QualityThresholds:
    """What ``spemr calibrate-quality`` stores in a model manifest under ``quality``."""

    fit_chi2_max: float
    member_spread_max: float
    percentile: float
    n_spectra: int
    reference_set: str = ""
    split: str = ""
    date: str = ""
    world: int = 1  # synth generator version of the model spectra it was measured with
    world_id: str = ""  # synth.generate.world_id of those model spectra ("" = not recorded)

    def to_dict(self) -> dict:
        return {
            "fit_chi2_max": self.fit_chi2_max,
            "member_spread_max": self.member_spread_max,
            "percentile": self.percentile,
            "n_spectra": self.n_spectra,
            "reference_set": self.reference_set,
            "split": self.split,
            "date": self.date,
            "model_spectra_world": self.world,
            "model_spectra_world_id": self.world_id,
        }

    @classmethod
    def from_manifest(cls, path, data) -> "QualityThresholds":
        """Validate the manifest's ``quality`` entry; ModelBundleError (one line) if bad."""

        def bad(problem: str) -> ModelBundleError:
            return ModelBundleError(
                path, f"manifest.json quality thresholds: {problem} (re-run spemr calibrate-quality)"
            )

        if not isinstance(data, Mapping):
            raise bad(f"expected an object, found {type(data).__name__}")
        values = {}
        for key, upper in (("fit_chi2_max", math.inf), ("member_spread_max", math.inf), ("percentile", 100.0)):
            value = data.get(key)
            if (
                isinstance(value, bool)
                or not isinstance(value, (int, float))
                or not math.isfinite(value)
                or not 0 < value <= upper
            ):
                limit = "in (0, 100]" if upper == 100.0 else "a finite number > 0"
                raise bad(f"{key} must be {limit}, not {value!r}")
            values[key] = float(value)
        n = data.get("n_spectra", 0)
        if isinstance(n, bool) or not isinstance(n, int) or n < 1:
            raise bad(f"n_spectra must be a positive integer, not {n!r}")
        world = data.get("model_spectra_world", 1)  # calibrations before the key: version 1
        if isinstance(world, bool) or not isinstance(world, int):
            raise bad(f"model_spectra_world must be an integer, not {world!r}")
        world_id = data.get("model_spectra_world_id", "")
        if not isinstance(world_id, str) or len(world_id) > 64:
            raise bad(f"model_spectra_world_id must be a short string, not {world_id!r}")
        return cls(
            n_spectra=n,
            reference_set=str(data.get("reference_set", "")),
            split=str(data.get("split", "")),
            date=str(data.get("date", "")),
            world=world,
            world_id=world_id,
            **values,
        )


def thresholds_of(bundle) -> QualityThresholds | None:
    """The bundle's calibrated thresholds, None when it has none or they were measured
    against model spectra of another synthetic world than the one used now."""
    from ..synth.generate import world_id
    from ..synth.model_spectra import WORLD

    thresholds = getattr(bundle, "quality", None)
    if thresholds is None or thresholds.world != WORLD:
        return None
    return thresholds if thresholds.world_id in ("", world_id(WORLD)) else None


def calibration_note(bundle) -> str | None:
    """The line saying the model's fit quality is not calibrated (None when it is)."""
    if thresholds_of(bundle) is not None:
        return None
    stale = getattr(bundle, "quality", None)
    if stale is not None:
        return (
            f"fit quality calibrated against other model spectra (generator v{stale.world}, "
            f"{stale.world_id or 'world not recorded'}) than the current ones: poor_fit is never raised "
            "(re-run spemr calibrate-quality)"
        )
    return UNCALIBRATED_NOTE


# ================================================================== measures
def fit_chi2(flux: np.ndarray, ivar: np.ndarray, model_flux: np.ndarray) -> np.ndarray:
    """(n,) reduced chi-square of flux against model_flux over pixels with ivar > 0 (and
    a finite model); NaN for a row with no such pixel."""
    flux, ivar, model_flux = (np.atleast_2d(np.asarray(a, dtype=np.float64)) for a in (flux, ivar, model_flux))
    good = (ivar > 0) & np.isfinite(model_flux) & np.isfinite(flux)
    resid = np.where(good, flux - np.where(good, model_flux, 0.0), 0.0)
    count = good.sum(axis=1)
    total = np.einsum("ij,ij->i", np.where(good, ivar, 0.0) * resid, resid)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(count > 0, total / np.maximum(count, 1), np.nan)


def member_spread(prediction, labels: Sequence[str] | None = None) -> np.ndarray:
    """(n,) max over ``labels`` of std over members (winning sub-model) / fused sigma
    (the ensemble's, before any sigma calibration: the share eq. 1 gives the members)."""
    labels = list(labels or config.fit_quality_config().spread_labels)
    n = len(prediction.mean)
    if prediction.member_mean.shape[2] < 2:
        return np.full(n, np.nan)
    columns = [prediction.labels.index(name) for name in labels if name in prediction.labels]
    out = np.full(n, np.nan)
    rows = np.arange(n)
    ensemble_sigma = prediction.ensemble_sigma()
    for j in columns:
        winner = prediction.winner[:, j]
        members = prediction.member_mean[rows, np.maximum(winner, 0), :, j]  # (n, M)
        with np.errstate(invalid="ignore", divide="ignore"):
            ratio = np.std(members, axis=1) / ensemble_sigma[:, j]
        ratio = np.where((winner >= 0) & np.isfinite(ratio), ratio, np.nan)
        out = np.fmax(out, ratio)
    return out


def region_mismatch(prediction, regions, n_sigma: float | None = None) -> list[list[str]]:
    """Per spectrum, the winning region sub-models (any label) whose region the fused
    labels lie more than n_sigma outside, in submodel order."""
    n_sigma = config.fit_quality_config().region_sigma if n_sigma is None else float(n_sigma)
    by_name = {region.name: region for region in regions}
    out: list[list[str]] = [[] for _ in range(len(prediction.mean))]
    for k, name in enumerate(prediction.submodels):
        region = by_name.get(name)
        if region is None:
            continue
        won = (prediction.winner == k).any(axis=1)
        if not won.any():
            continue
        distance = region.outside_sigma(prediction.mean, prediction.sigma, prediction.labels)
        for i in np.flatnonzero(won & (distance > n_sigma)):
            out[i].append(name)
    return out


# =================================================================== results
@dataclass
class FitQuality:
    """Fit-quality measures of n spectra (NaN / empty where a spectrum is not labelled)."""

    fit_chi2: np.ndarray  # (n,)
    member_spread: np.ndarray  # (n,)
    poor_fit: np.ndarray  # (n,) bool (never True without thresholds)
    sigma_inflation: np.ndarray  # (n,) >= 1 (1 where not poor_fit)
    region_mismatch: list[list[str]]
    calibrated: bool
    model_flux: np.ndarray | None = None  # (n, n_pixels) the model spectra compared with

    def __len__(self) -> int:
        return len(self.fit_chi2)

    def flags(self, i: int) -> list[str]:
        out = []
        if self.poor_fit[i]:
            out.append(FLAG_POOR_FIT)
        if self.region_mismatch[i]:
            out.append(FLAG_REGION_MISMATCH)
        return out

    def row_values(self, i: int) -> dict:
        """The catalog columns of spectrum i."""
        return {
            "fit_chi2": _finite_or_none(self.fit_chi2[i]),
            "member_spread": _finite_or_none(self.member_spread[i]),
            "sigma_inflation": _finite_or_none(self.sigma_inflation[i]),
            "region_mismatch": "|".join(self.region_mismatch[i]),
        }

    def take(self, rows: np.ndarray) -> "FitQuality":
        rows = np.asarray(rows)
        return FitQuality(
            self.fit_chi2[rows],
            self.member_spread[rows],
            self.poor_fit[rows],
            self.sigma_inflation[rows],
            [self.region_mismatch[i] for i in rows],
            self.calibrated,
            None if self.model_flux is None else self.model_flux[rows],
        )

    def expand(self, rows: np.ndarray, n: int) -> "FitQuality":
        """Like Prediction.expand: n spectra, these at ``rows``, the rest empty."""

        def spread(array, fill):
            out = np.full((n, *array.shape[1:]), fill, dtype=array.dtype)
            out[rows] = array
            return out

        mismatch: list[list[str]] = [[] for _ in range(n)]
        for k, i in enumerate(np.asarray(rows)):
            mismatch[int(i)] = self.region_mismatch[k]
        return FitQuality(
            spread(self.fit_chi2, np.nan),
            spread(self.member_spread, np.nan),
            spread(self.poor_fit, False),
            spread(self.sigma_inflation, np.nan),
            mismatch,
            self.calibrated,
            None if self.model_flux is None else spread(self.model_flux, np.nan),
        )


def assess(prediction, flux: np.ndarray, ivar: np.ndarray, bundle, keep_model_flux: bool = False) -> FitQuality:
    """The fit quality of a raw (not yet inflated) prediction of ``flux`` (n, n_pixels,
    the model input) with inverse variance ``ivar`` (0 where there is no data)."""
    from ..synth.model_spectra import model_spectra

    model_flux = model_spectra(_full_labels(prediction))
    # A model spectrum can differ in the last bit with the batch it was made in (FFT and
    # BLAS code paths); 6 significant digits make fit_chi2, and all that follows from it,
    # the same whichever spectra share the batch (the catalog's resume guarantee).
    chi2 = round_significant(fit_chi2(flux, ivar, model_flux), CHI2_DIGITS)
    spread = member_spread(prediction)
    mismatch = region_mismatch(prediction, getattr(bundle, "regions", ()))
    thresholds = thresholds_of(bundle)
    poor = np.zeros(len(chi2), dtype=bool)
    inflation = np.where(np.isfinite(chi2) | np.isfinite(spread), 1.0, np.nan)
    if thresholds is not None:
        with np.errstate(invalid="ignore", divide="ignore"):
            chi_ratio = chi2 / thresholds.fit_chi2_max
            spread_ratio = spread / thresholds.member_spread_max
        poor = (chi_ratio > 1) | (spread_ratio > 1)
        factor = np.fmax(np.fmax(np.sqrt(np.where(chi_ratio > 0, chi_ratio, np.nan)), spread_ratio), 1.0)
        inflation = np.where(poor, factor, inflation)
    return FitQuality(
        chi2, spread, poor, inflation, mismatch, thresholds is not None, model_flux if keep_model_flux else None
    )


def inflate(prediction, quality: FitQuality):
    """The prediction with poor_fit rows' sigmas (fused, sub-model) multiplied by their
    sigma_inflation; other rows unchanged."""
    factor = np.where(quality.poor_fit, quality.sigma_inflation, 1.0)
    factor = np.where(np.isfinite(factor), factor, 1.0)
    return replace(
        prediction, sigma=prediction.sigma * factor[:, None], sub_sigma=prediction.sub_sigma * factor[:, None, None]
    )


def round_significant(values: np.ndarray, digits: int) -> np.ndarray:
    """Round to ``digits`` significant digits (NaN, 0 and inf unchanged)."""
    values = np.asarray(values, dtype=np.float64)
    out = values.copy()
    finite = np.isfinite(values) & (values != 0)
    if finite.any():
        exponent = np.floor(np.log10(np.abs(values[finite])))
        scale = 10.0 ** (digits - 1 - exponent)
        out[finite] = np.round(values[finite] * scale) / scale
    return out


def _full_labels(prediction) -> np.ndarray:
    """Fused means in config.LABELS order (what model_spectra takes); NaN where absent."""
    out = np.full((len(prediction.mean), len(config.LABELS)), np.nan)
    for j, name in enumerate(prediction.labels):
        if name in config.LABELS:
            out[:, config.LABELS.index(name)] = prediction.mean[:, j]
    return out


def _finite_or_none(value) -> float | None:
    value = float(value)
    return value if math.isfinite(value) else None
