"""Per-label sigma calibration: make 68.3 % of held-out errors fall within 1 sigma.

The ensemble's sigma (eq. 1) mixes each member's predicted variance with the members'
disagreement. With few members or short training it need not be calibrated: the shipped
default model's Teff and log g sigmas were twice its errors on held-out spectra (95 % of
errors within 1 sigma). ``spemr calibrate-sigma MODEL REFSET`` predicts a held-out split
of the training world (default: valid, by star as in training), and for each label takes
the factor s = the 68.27th percentile of |error| / sigma; every sigma of that label (fused
and per sub-model) is then multiplied by s, so that split has 68.27 % of errors within
1 sigma. The factors are stored in the manifest (``sigma_calibration``) and applied by the
predictor, so predict, catalog, evaluate, the GUI and the fit-quality calibration all see
the same sigmas. Means, winners and fusion are unchanged (one factor per label scales
every sub-model alike). A bundle without the entry, e.g. imported published weights,
keeps the ensemble's sigmas.

Fit quality stays in the ensemble's units: ``member_spread`` divides by the uncalibrated
sigma (``Prediction.sigma_scale`` undoes the factor), so its thresholds do not depend on
the calibration; ``region_mismatch`` is judged with the calibrated sigmas.
"""

from __future__ import annotations

import datetime as _dt
import math
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Mapping

import numpy as np

from ..errors import ModelBundleError, SpemrError

MANIFEST_KEY = "sigma_calibration"
ONE_SIGMA_COVERAGE = math.erf(1 / math.sqrt(2))  # 0.6827: a Gaussian's share within 1 sigma
SCALE_RANGE = (0.01, 100.0)


@dataclass(frozen=True)
class SigmaCalibration:
    """Factors by label name, and where they were measured."""

    scale: dict[str, float]
    coverage: float
    split: str
    n_spectra: int
    refset: str = ""
    created: str = ""

    def to_dict(self) -> dict:
        return {
            "scale": dict(self.scale),
            "coverage": self.coverage,
            "split": self.split,
            "n_spectra": self.n_spectra,
            "refset": self.refset,
            "created": self.created,
        }

    def factors(self, labels: list[str]) -> np.ndarray:
        """(L,) factors in ``labels`` order (1 for a label without one)."""
        return np.array([self.scale.get(name, 1.0) for name in labels], dtype=np.float64)

    @classmethod
    def from_manifest(cls, path, data: Any, labels: list[str]) -> "SigmaCalibration":
        """Validate the manifest's entry; ModelBundleError (one line) if bad."""

        def bad(problem: str) -> ModelBundleError:
            return ModelBundleError(path, f"manifest.json {MANIFEST_KEY}: {problem} (re-run spemr calibrate-sigma)")

        if not isinstance(data, Mapping):
            raise bad("not an object")
        scale = data.get("scale")
        if not isinstance(scale, Mapping) or not scale:
            raise bad("'scale' must map label names to factors")
        factors: dict[str, float] = {}
        for name, value in scale.items():
            if name not in labels:
                raise bad(f"label {str(name)[:40]!r} is not one of the model's labels")
            if isinstance(value, bool) or not isinstance(value, (int, float)):
                raise bad(f"factor of {name} is not a number")
            if not (math.isfinite(value) and SCALE_RANGE[0] <= value <= SCALE_RANGE[1]):
                raise bad(f"factor of {name} must be within {SCALE_RANGE[0]}..{SCALE_RANGE[1]}")
            factors[str(name)] = float(value)
        coverage, n_spectra = data.get("coverage"), data.get("n_spectra")
        if isinstance(coverage, bool) or not isinstance(coverage, (int, float)) or not 0 < coverage < 1:
            raise bad("'coverage' must be a number between 0 and 1")
        if isinstance(n_spectra, bool) or not isinstance(n_spectra, int) or n_spectra < 1:
            raise bad("'n_spectra' must be a positive integer")
        return cls(
            factors,
            float(coverage),
            str(data.get("split", ""))[:40],
            n_spectra,
            str(data.get("refset", ""))[:500],
            str(data.get("created", ""))[:40],
        )


def scale_for(errors: np.ndarray, sigmas: np.ndarray, coverage: float = ONE_SIGMA_COVERAGE) -> float:
    """The factor that puts ``coverage`` of |errors| within factor x sigma (finite pairs only)."""
    z = np.abs(np.asarray(errors, dtype=np.float64)) / np.asarray(sigmas, dtype=np.float64)
    z = z[np.isfinite(z)]
    if z.size == 0:
        raise SpemrError("no finite errors and sigmas to calibrate on")
    return float(np.clip(np.quantile(z, coverage), *SCALE_RANGE))


def apply(prediction, factors: np.ndarray):
    """The prediction with every sigma of label j multiplied by factors[j]."""
    return replace(
        prediction,
        sigma=prediction.sigma * factors,
        sub_sigma=prediction.sub_sigma * factors,
        sigma_scale=factors * (1.0 if prediction.sigma_scale is None else prediction.sigma_scale),
    )


def calibrate(
    model_path: str | Path,
    refset_path: str | Path,
    split: str = "valid",
    coverage: float = ONE_SIGMA_COVERAGE,
    device: str = "auto",
    batch_size: int = 256,
    write: bool = True,
) -> tuple[SigmaCalibration, list[dict]]:
    """Measure the factors on ``split`` of a reference set with the model's own
    (uncalibrated) sigmas; store them in the manifest unless ``write`` is False. Returns
    the calibration and per-label rows (n, within 1 sigma before and after, factor)."""
    from .bundle import load_bundle, update_manifest
    from ..training.evaluate import _resolve_indices, predict_refset
    from ..training.refset import ReferenceSet

    model = replace(load_bundle(model_path), sigma_calibration=None)
    refset = ReferenceSet.open(refset_path)
    name, indices = _resolve_indices(model, refset, split)
    if len(indices) == 0:
        raise SpemrError(f"{refset.path}: the {name} split is empty")
    missing = [label for label in model.labels if label not in refset.label_names]
    if missing:
        raise SpemrError(f"{refset.path}: has no true values for {', '.join(missing[:5])}")
    predicted = predict_refset(model, refset, indices, device=device, batch_size=batch_size)
    columns = [refset.label_names.index(label) for label in model.labels]
    truth = np.asarray(refset.labels[indices][:, columns], dtype=np.float64)
    scale: dict[str, float] = {}
    rows: list[dict] = []
    for j, label in enumerate(model.labels):
        errors = predicted["mean"][:, j] - truth[:, j]
        sigmas = predicted["sigma"][:, j]
        finite = np.isfinite(errors) & np.isfinite(sigmas) & (sigmas > 0)
        if finite.sum() < 10:
            continue  # too few true values (e.g. a label the set lacks): left as it is
        factor = scale_for(errors[finite], sigmas[finite], coverage)
        scale[label] = round(factor, 6)
        z = np.abs(errors[finite]) / sigmas[finite]
        rows.append(
            {
                "label": label,
                "n": int(finite.sum()),
                "within_before": float(np.mean(z < 1)),
                "scale": scale[label],
                "within_after": float(np.mean(z < scale[label])),
            }
        )
    if not scale:
        raise SpemrError(f"{refset.path}: no label has 10 spectra with a true value in the {name} split")
    calibration = SigmaCalibration(
        scale,
        coverage,
        name,
        int(len(indices)),
        str(Path(refset_path).resolve()),
        _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
    )
    if write:
        update_manifest(model_path, sigma_calibration=calibration.to_dict())
    return calibration, rows
