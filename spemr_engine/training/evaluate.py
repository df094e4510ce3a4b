"""Evaluation of a model bundle on a reference set: per-label accuracy and calibration.

For the base ensemble and for fused SPEMR, per label: MAE, bias (mean residual), scatter
(std of the residual) and calibration (fraction of spectra with |error| below 1 and 2
predicted sigma; 0.683 and 0.954 for honest Gaussian sigmas), overall and per region.
Region membership uses the TRUE labels, as the paper's per-region tables do.

Predictions come from the inference engine (inference.SpemrPredictor), so evaluation
measures exactly what users get; spectra are read from the memory map a chunk at a time.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

import numpy as np

from ..model.bundle import BASE, ModelBundle, load_bundle
from ..config import label_infos, training_recipe
from ..errors import Cancelled, SpemrError
from ..progress import EVALUATE, Count, CountProgress
from ..model.inference import SpemrPredictor
from ..io_utils import plain
from .refset import SPLIT_NAMES, ReferenceSet

READ_CHUNK = 2048
SIGMA_LEVELS = (1, 2)


# ----------------------------------------------------------------- predicting
def _resolve_indices(model: ModelBundle, refset: ReferenceSet, split) -> tuple[str, np.ndarray]:
    """A split name (made as in training: by star, the bundle's split seed), "all", or indices."""
    if isinstance(split, str):
        if split == "all":
            return "all", np.arange(len(refset))
        if split not in SPLIT_NAMES:
            raise SpemrError(f"unknown split {split!r} (choose from {', '.join(SPLIT_NAMES)}, all)")
        info = model.provenance.get("split") or {}
        parts = refset.split_by_star(
            info.get("fractions", training_recipe().split_fractions), seed=int(info.get("seed", 0))
        )
        return split, parts[split]
    indices = np.asarray(split, dtype=np.int64)
    if indices.size and (indices.min() < 0 or indices.max() >= len(refset)):
        raise SpemrError(f"{refset.path}: spectrum indices outside 0..{len(refset) - 1}")
    return "indices", indices


def predict_refset(
    model: ModelBundle,
    refset: ReferenceSet,
    indices: np.ndarray,
    device: str = "auto",
    batch_size: int = 256,
    progress: CountProgress | None = None,
    cancel: Callable[[], bool] | None = None,
) -> dict[str, Any]:
    """Fused and per-sub-model predictions for ``indices``, reading READ_CHUNK spectra at a time."""
    predictor = SpemrPredictor(model, device=device, batch_size=batch_size)
    parts: dict[str, list] = {"mean": [], "sigma": [], "sub_mean": [], "sub_sigma": []}
    submodels = list(model.submodels)
    for start in range(0, len(indices), READ_CHUNK):
        if cancel and cancel():
            raise Cancelled(f"evaluation cancelled after {start} of {len(indices)} spectra")
        prediction = predictor.predict(refset.read_flux(indices[start : start + READ_CHUNK]))
        submodels = list(prediction.submodels)
        for key in parts:
            parts[key].append(np.asarray(getattr(prediction, key), dtype=np.float64))
        if progress:
            progress(Count(EVALUATE, done=min(start + READ_CHUNK, len(indices)), total=len(indices)))
    n_sub, n_labels = len(submodels), len(model.labels)
    empty = {
        "mean": (0, n_labels),
        "sigma": (0, n_labels),
        "sub_mean": (0, n_sub, n_labels),
        "sub_sigma": (0, n_sub, n_labels),
    }
    out: dict[str, Any] = {k: (np.concatenate(v) if v else np.zeros(empty[k])) for k, v in parts.items()}
    out["submodels"] = submodels
    return out


# -------------------------------------------------------------------- metrics
def label_metrics(true: np.ndarray, pred: np.ndarray, sigma: np.ndarray) -> dict:
    """MAE, bias, scatter and calibration of one label over spectra where the truth is known."""
    known = np.isfinite(true) & np.isfinite(pred)
    if not known.any():
        return {"n": 0}
    residual = pred[known] - true[known]
    out = {
        "n": int(known.sum()),
        "mae": float(np.abs(residual).mean()),
        "bias": float(residual.mean()),
        "scatter": float(residual.std()),
        "mean_sigma": float(np.nanmean(sigma[known])),
    }
    for level in SIGMA_LEVELS:
        out[f"within_{level}sigma"] = float(np.mean(np.abs(residual) < level * sigma[known]))
    return out


def _scope_metrics(
    truth: np.ndarray, predictions: Mapping[str, tuple[np.ndarray, np.ndarray]], labels: Sequence[str]
) -> dict:
    return {
        name: {label: label_metrics(truth[:, j], mean[:, j], sigma[:, j]) for j, label in enumerate(labels)}
        for name, (mean, sigma) in predictions.items()
    }


def evaluate(
    bundle: ModelBundle | str | Path,
    refset: ReferenceSet | str | Path,
    split="test",
    device: str = "auto",
    batch_size: int = 256,
    progress: CountProgress | None = None,
    cancel: Callable[[], bool] | None = None,
) -> dict:
    """Report (plain JSON-able dict) comparing base ensemble and fused SPEMR with the truth."""
    model = bundle if isinstance(bundle, ModelBundle) else load_bundle(bundle)
    refset = refset if isinstance(refset, ReferenceSet) else ReferenceSet.open(refset)
    missing = [name for name in model.labels if name not in refset.label_names]
    if missing:
        raise SpemrError(f"{refset.path}: reference set lacks labels {missing} of the model")
    split_name, indices = _resolve_indices(model, refset, split)
    columns = [refset.label_names.index(name) for name in model.labels]
    truth = refset.labels[indices][:, columns].astype(np.float64)
    predicted = predict_refset(model, refset, indices, device, batch_size, progress, cancel)
    base = predicted["submodels"].index(BASE)
    scopes = {
        "base": (predicted["sub_mean"][:, base], predicted["sub_sigma"][:, base]),
        "spemr": (predicted["mean"], predicted["sigma"]),
    }
    report: dict[str, Any] = {
        "model": str(model.path),
        "reference_set": str(refset.path),
        "split": split_name,
        "n_spectra": int(len(indices)),
        "labels": list(model.labels),
        "units": {i.name: i.unit for i in label_infos()},
        "trained_on": model.trained_on,
        "overall": _scope_metrics(truth, scopes, model.labels),
        "regions": {},
    }
    for region in model.regions:
        inside = region.contains(truth, model.labels)
        own = predicted["submodels"].index(region.name) if region.name in predicted["submodels"] else base
        region_scopes = {name: (mean[inside], sigma[inside]) for name, (mean, sigma) in scopes.items()}
        region_scopes["own"] = (predicted["sub_mean"][inside, own], predicted["sub_sigma"][inside, own])
        report["regions"][region.name] = {
            "description": region.description,
            "n_spectra": int(inside.sum()),
            **_scope_metrics(truth[inside], region_scopes, model.labels),
        }
    return plain(report)


# ------------------------------------------------------------------- markdown
def _fmt(value, digits: int = 3) -> str:
    if value is None or (isinstance(value, float) and not np.isfinite(value)):
        return "-"
    return f"{value:.{digits}g}" if abs(value) >= 1000 else f"{value:.{digits}f}"


def _table(scope: Mapping, labels: Sequence[str], units: Mapping[str, str]) -> list[str]:
    lines = [
        "| label | n | MAE base | MAE SPEMR | bias | scatter | \\|err\\|<1σ | \\|err\\|<2σ | mean σ |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for label in labels:
        base, fused = scope["base"].get(label, {}), scope["spemr"].get(label, {})
        if not fused.get("n"):
            continue
        unit = units.get(label, "")
        lines.append(
            f"| {label} [{unit}] | {fused['n']} | {_fmt(base.get('mae'))} | {_fmt(fused['mae'])} | "
            f"{_fmt(fused['bias'])} | {_fmt(fused['scatter'])} | {_fmt(fused['within_1sigma'], 2)} | "
            f"{_fmt(fused['within_2sigma'], 2)} | {_fmt(fused['mean_sigma'])} |"
        )
    return lines


def render_markdown(report: Mapping) -> str:
    """The report as markdown tables: overall, then one per region (bias/scatter/calibration: SPEMR)."""
    labels, units = report["labels"], report.get("units", {})
    lines = [
        f"# Evaluation of `{Path(report['model']).name}`",
        "",
        f"Reference set `{report['reference_set']}`, split **{report['split']}**, "
        f"{report['n_spectra']} spectra; model trained on {report.get('trained_on', 'unknown')} spectra.",
        "",
        "Bias, scatter and calibration columns are for fused SPEMR; "
        "calibration is the fraction of spectra with |error| below 1 and 2 predicted sigma "
        "(0.68 and 0.95 when sigmas are honest).",
        "",
        "## Overall",
        "",
    ]
    lines += _table(report["overall"], labels, units)
    for name, region in report.get("regions", {}).items():
        lines += ["", f"## Region {name}: {region.get('description', '')} ({region['n_spectra']} spectra)", ""]
        if region["n_spectra"]:
            lines += _table(region, labels, units)
        else:
            lines.append("No spectra in this region.")
    return "\n".join(lines) + "\n"
