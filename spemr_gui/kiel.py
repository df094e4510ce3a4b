"""Drawing the fine-tuning regions on a Kiel diagram (Teff vs log g), derived from the
region definitions in the engine's config rather than re-typed: each clause becomes a
box bounded by its Teff/log g conditions; conditions on other labels (e.g. [Fe/H])
cannot be drawn in this plane and are returned as text for the legend.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from spemr_engine.config import LABELS, Region

X_LABEL, Y_LABEL = "Teff", "Logg"
# Plot extent of the Kiel diagram (display only: where open-ended boxes stop).
TEFF_EXTENT = (3000.0, 8000.0)
LOGG_EXTENT = (-0.5, 5.5)


@dataclass
class RegionBox:
    region: str
    x0: float
    x1: float
    y0: float
    y1: float
    other_conditions: str  # e.g. "FeH >= -1" ("" when none)


def region_boxes(region: Region, x_extent=TEFF_EXTENT, y_extent=LOGG_EXTENT) -> list[RegionBox]:
    """One box per clause of the region, clipped to the plot extent. A clause with no
    Teff/log g condition (e.g. only [Fe/H] < -1) is not a box in this plane: none."""
    boxes = []
    for clause in region.any_of:
        if not any(label in (X_LABEL, Y_LABEL) for label, _op, _value in clause):
            continue
        x0, x1 = x_extent
        y0, y1 = y_extent
        others = []
        for label, op, value in clause:
            if label == X_LABEL:
                x0, x1 = _narrow(x0, x1, op, value)
            elif label == Y_LABEL:
                y0, y1 = _narrow(y0, y1, op, value)
            else:
                others.append(f"{label} {op} {value:g}")
        if x0 < x1 and y0 < y1:
            boxes.append(RegionBox(region.name, x0, x1, y0, y1, " and ".join(others)))
    return boxes


def _narrow(low: float, high: float, op: str, value: float) -> tuple[float, float]:
    if op in (">", ">="):
        return max(low, value), high
    if op in ("<", "<="):
        return low, min(high, value)
    if op == "==":
        return value, value
    return low, high  # "!=" cannot be drawn as a box: leave the extent


def off_plane_conditions(region: Region) -> str:
    """The region's conditions on labels other than Teff/log g, as text ("" if none)."""
    parts = []
    for clause in region.any_of:
        others = [f"{label} {op} {value:g}" for label, op, value in clause if label not in (X_LABEL, Y_LABEL)]
        if others:
            parts.append(" and ".join(others))
    return " or ".join(parts)


def regions_containing(labels: np.ndarray, regions, label_names=LABELS) -> list[str]:
    """Names of the regions that hold a star with these (fused) labels."""
    labels = np.atleast_2d(np.asarray(labels, dtype=np.float64))
    return [r.name for r in regions if bool(r.contains(labels, list(label_names))[0])]
