"""The inference results table as plain data: one row per label with the fused value,
its 1-sigma and the sub-model that won the label; plus text exports (CSV, JSON, the
tab-separated clipboard form). The GUI shows exactly these rows, so a test can compare
them with the engine's Prediction directly.
"""

from __future__ import annotations

import csv
import io
import json
import math
from dataclasses import asdict, dataclass

import numpy as np

from spemr_engine.config import label_infos
from spemr_engine.io_utils import plain


@dataclass
class LabelResult:
    label: str  # engine name (config.LABELS)
    display: str  # "[Fe/H]"
    unit: str
    value: float  # fused mean
    sigma: float  # fused 1-sigma
    winner: str  # sub-model the fusion picked for this label


def label_results(prediction, row: int = 0) -> list[LabelResult]:
    """The fused estimate of one spectrum, in the prediction's label order."""
    infos = {info.name: info for info in label_infos()}
    rows = []
    for j, name in enumerate(prediction.labels):
        info = infos.get(name)
        index = int(prediction.winner[row, j])
        winner = prediction.submodels[index] if index >= 0 else ""  # -1: no prediction
        rows.append(
            LabelResult(
                label=name,
                display=info.display if info else name,
                unit=info.unit if info else "",
                value=float(prediction.mean[row, j]),
                sigma=float(prediction.sigma[row, j]),
                winner=winner,
            )
        )
    return rows


def format_value(value: float, unit: str) -> str:
    """Teff in whole kelvin, everything else to 3 decimals (dex)."""
    if not math.isfinite(value):
        return "nan"
    return f"{value:.0f}" if unit == "K" else f"{value:.3f}"


HEADER = ["label", "value", "sigma", "unit", "winner"]


def _plain(rows: list[LabelResult]) -> list[list]:
    return [[r.label, r.value, r.sigma, r.unit, r.winner] for r in rows]


def to_csv(rows: list[LabelResult], context: dict | None = None) -> str:
    """CSV with full precision; context (file, pair, model) goes in leading comments."""
    out = io.StringIO()
    for key, value in (context or {}).items():
        out.write(f"# {key}: {value}\n")
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(HEADER)
    writer.writerows([[r.label, repr(r.value), repr(r.sigma), r.unit, r.winner] for r in rows])
    return out.getvalue()


def to_json(rows: list[LabelResult], context: dict | None = None) -> str:
    payload = dict(context or {})
    payload["labels"] = [plain(asdict(r)) for r in rows]
    return json.dumps(payload, indent=2)


def to_clipboard_text(rows: list[LabelResult]) -> str:
    """Tab-separated, pastes into spreadsheets as columns."""
    lines = ["\t".join(HEADER)]
    lines += ["\t".join(str(v) for v in row) for row in _plain(rows)]
    return "\n".join(lines) + "\n"


# ------------------------------------------------------------- fit quality
@dataclass
class FitSummary:
    """How well the estimate describes the spectrum (spemr_engine.model.fit_quality), as the
    views show it: ``poor`` is the poor_fit flag, ``text`` one line of plain text."""

    fit_chi2: float
    member_spread: float
    poor: bool
    inflation: float
    calibrated: bool
    chi2_max: float | None
    spread_max: float | None
    mismatch: list[str]
    text: str

    @property
    def headline(self) -> str:
        if self.poor:
            return "POOR FIT"
        return "good fit" if self.calibrated else "fit quality not calibrated"

    @property
    def line(self) -> str:
        return f"{self.headline}: {self.text}"


def poor_fit_inflation(fit, row: int = 0) -> float:
    """The factor a poor_fit row's shown sigmas carry (1 for other rows)."""
    if fit is None or not bool(fit.poor_fit[row]):
        return 1.0
    factor = float(fit.sigma_inflation[row])
    return factor if math.isfinite(factor) and factor > 0 else 1.0


def sigma_note(model) -> str:
    """How the shown sigmas were made: calibrated per label (spemr calibrate-sigma) or as
    the ensemble gives them."""
    calibration = getattr(model, "sigma_calibration", None)
    if calibration is None:
        return "σ as the ensemble gives it (not calibrated on held-out spectra)"
    displays = {info.name: info.display for info in label_infos()}
    shown = ", ".join(
        f"{displays.get(name, name)} ×{calibration.scale[name]:.2f}"
        for name in ("Teff", "Logg", "FeH")
        if name in calibration.scale
    )
    return (
        f"σ calibrated so {100 * calibration.coverage:.0f} % of held-out errors fall within 1σ "
        f"({calibration.split} split of the training set, {calibration.n_spectra} spectra; {shown})"
    )


def fit_summary(fit, model, row: int = 0) -> FitSummary | None:
    """The fit quality of one spectrum (None when it was not judged)."""
    if fit is None or row >= len(fit.fit_chi2):
        return None
    # The engine decides whether the model's thresholds apply (a calibration made against
    # another world's model spectra counts as none): the same answer the rows got.
    from spemr_engine.model.fit_quality import thresholds_of

    thresholds = thresholds_of(model)
    chi2, spread = float(fit.fit_chi2[row]), float(fit.member_spread[row])
    poor = bool(fit.poor_fit[row])
    inflation = float(fit.sigma_inflation[row]) if math.isfinite(fit.sigma_inflation[row]) else 1.0
    chi2_max = thresholds.fit_chi2_max if thresholds is not None else None
    spread_max = thresholds.member_spread_max if thresholds is not None else None
    chi2_limit = f" (limit {chi2_max:.2f})" if thresholds is not None else ""
    spread_limit = f" (limit {spread_max:.2f})" if thresholds is not None else ""
    text = (
        f"fit χ²ν = {chi2:.2f}{chi2_limit} against the model spectrum at the estimate; "
        f"member spread {spread:.2f}{spread_limit}"
    )
    if poor:
        text += f". The spectrum is unlike the training world: every σ is multiplied by {inflation:.2f}."
    elif thresholds is None:
        text += " (not calibrated for this model: poor_fit is never raised)"
    else:
        text += ": consistent with the training world."
    return FitSummary(
        chi2,
        spread,
        poor,
        inflation,
        thresholds is not None,
        chi2_max,
        spread_max,
        list(fit.region_mismatch[row]),
        text,
    )


def region_mismatch_text(prediction, mismatched, regions, row: int = 0, inflation: float = 1.0) -> str:
    """'REGION MISMATCH: ...' naming each mismatched winning sub-model, how far the fused
    labels lie outside its region and which labels it won; '' when there is none. The
    distance is in the sigmas the flag was judged with: those shown divided by a poor_fit
    row's ``inflation``."""
    if not mismatched:
        return ""
    infos = {info.name: info.display for info in label_infos()}
    by_name = {region.name: region for region in regions}
    parts = []
    for name in mismatched:
        region = by_name.get(name)
        k = prediction.submodels.index(name) if name in prediction.submodels else -1
        won = [
            infos.get(label, label) for j, label in enumerate(prediction.labels) if int(prediction.winner[row, j]) == k
        ]
        distance = (
            float(
                region.outside_sigma(
                    prediction.mean[row : row + 1], prediction.sigma[row : row + 1] / inflation, prediction.labels
                )[0]
            )
            if region is not None
            else math.nan
        )
        description = region.description if region is not None and region.description else name
        parts.append(
            f"{name} won {', '.join(won[:6])}{' …' if len(won) > 6 else ''} but the fused "
            f"labels lie {distance:.1f}σ outside its region ({description})"
        )
    return "REGION MISMATCH: " + "; ".join(parts) + "."


# ------------------------------------------------------------- sub-model view
@dataclass
class SubmodelPoint:
    name: str  # "base", "S1", ...
    mean: float
    sigma: float
    member_min: float  # spread of the ensemble members' means
    member_max: float
    chosen: bool  # the fusion picked this one for the label


def submodel_points(prediction, row: int, label_index: int) -> list[SubmodelPoint]:
    """Per sub-model estimate of one label (the comparison view's points)."""
    winner = int(prediction.winner[row, label_index])  # -1: nothing chosen
    members = np.asarray(prediction.member_mean)[row, :, :, label_index]  # (S, M)
    points = []
    for s, name in enumerate(prediction.submodels):
        points.append(
            SubmodelPoint(
                name=name,
                mean=float(prediction.sub_mean[row, s, label_index]),
                sigma=float(prediction.sub_sigma[row, s, label_index]),
                member_min=_nan_extreme(np.nanmin, members[s]),
                member_max=_nan_extreme(np.nanmax, members[s]),
                chosen=(s == winner),
            )
        )
    return points


def _nan_extreme(function, values: np.ndarray) -> float:
    finite = values[np.isfinite(values)]
    return float(function(finite)) if finite.size else float("nan")


# ---------------------------------------------------------------- model caveat
def model_caveat(bundle) -> str | None:
    """The warning every result of this model must carry, or None for a model
    trained on real spectra."""
    if bundle is None:
        return None
    provenance = (getattr(bundle, "manifest", {}) or {}).get("provenance", {}) or {}
    trained_on = str(provenance.get("trained_on", "")).lower()
    if trained_on == "random":
        return "This model has RANDOM weights (a test bundle): its numbers mean nothing about the star."
    if getattr(bundle, "trained_on_synthetic", False) or trained_on == "synthetic":
        return (
            "This model was trained on SYNTHETIC spectra: estimates on real LAMOST "
            "spectra carry systematic errors and are not survey-grade."
        )
    if not trained_on:
        return "This model does not say what it was trained on: treat its estimates with care."
    return None


# ------------------------------------------------------------ sigma vs S/N
SIGMA_SNR_LABEL = "Teff"


def sigma_snr_note(opened, current_pair: int, label: str = SIGMA_SNR_LABEL) -> tuple[str, bool]:
    """How the predicted 1-sigma of ``label`` goes with S/N over the spectra of one file
    that have a result: ("coadd S/N 121/281: ±172 K; 84107311 S/N 41/93: ±139 K", True
    when the current spectrum's sigma is smaller than that of a spectrum with higher S/N
    in both arms). ("", False) with fewer than two results. The network's sigma is the
    spread it learned for such spectra, not a photon-noise error: it need not shrink
    with S/N, and when it does not, the user should see it (issue 12, item 14)."""
    entries = []
    for index, result in sorted(opened.results.items()):
        if result is None or not result.usable or label not in result.prediction.labels:
            continue
        pair = opened.pairs[index]
        sigma = float(result.prediction.sigma[0, result.prediction.labels.index(label)])
        if np.isfinite(sigma):
            entries.append((index, pair.label, float(pair.snr_blue), float(pair.snr_red), sigma))
    if len(entries) < 2:
        return "", False
    unit = " K" if label == "Teff" else ""
    entries.sort(key=lambda e: -(e[2] + e[3]))
    text = "; ".join(f"{name} S/N {b:.0f}/{r:.0f}: ±{s:.3g}{unit}" for _i, name, b, r, s in entries)
    current = next((e for e in entries if e[0] == current_pair), None)
    inverted = current is not None and any(
        e[2] > current[2] and e[3] > current[3] and e[4] > current[4] for e in entries
    )
    return f"σ({label}) against S/N in this file: {text}", inverted
