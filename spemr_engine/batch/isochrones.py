"""Isochrone curves (Teff, log g) from a CSV the user picks: the batch Kiel diagram
and `spemr report` overlay them.

Accepted layout: pairs of columns ``teff<suffix>`` / ``logg<suffix>`` (e.g. MIST
exports with ``teff_0``, ``logg_0``, ``teff_-0.5``...), Teff in K or as log10(Teff).
Display only: no label or catalog value depends on it."""

from __future__ import annotations

import csv
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from spemr_engine.errors import InputFileError

LOG_TEFF_LIMIT = 10.0  # a "Teff" column below this is log10(Teff)


@dataclass
class Isochrone:
    name: str
    teff: np.ndarray
    logg: np.ndarray


def read_isochrones(path: str | Path) -> list[Isochrone]:
    path = Path(path)
    try:
        with path.open(newline="") as handle:
            rows = list(csv.reader(line for line in handle if not line.startswith("#")))
    except (OSError, UnicodeDecodeError) as error:
        raise InputFileError(path, f"cannot read the isochrone file ({error})") from None
    if len(rows) < 2:
        raise InputFileError(path, "isochrone file has no data rows")
    header = [h.strip().lower() for h in rows[0]]
    try:
        data = np.array(
            [[float(v) if v.strip() else np.nan for v in row] for row in rows[1:] if len(row) == len(header)]
        )
    except ValueError:
        raise InputFileError(path, "isochrone file has non-numeric values") from None
    curves = []
    for i, column in enumerate(header):
        if not column.startswith("teff"):
            continue
        suffix = column[4:]
        partner = f"logg{suffix}"
        if partner not in header:
            continue
        teff, logg = data[:, i], data[:, header.index(partner)]
        if np.nanmax(teff) < LOG_TEFF_LIMIT:
            teff = 10.0**teff
        name = suffix.strip("_ ") or "isochrone"
        curves.append(Isochrone(f"[Fe/H] = {name}" if _is_number(name) else name, teff, logg))
    if not curves:
        raise InputFileError(path, "no teff*/logg* column pairs found (need e.g. teff_0, logg_0)")
    return curves


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True
