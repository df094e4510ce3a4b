"""Spectral line markers: read the shipped line list (assets/lines/mrs_lines.csv,
maintained with the preprocessing engine) once, tolerant of its exact column names so
the markers keep working if the list gains columns.
"""
from __future__ import annotations

import csv
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

from spemr_engine.config import assets_dir

_NAME_COLUMNS = ("species", "name", "label", "ion", "element")
_WAVE_COLUMNS = ("wave_vac", "wavelength_vac", "vacuum", "wave", "wavelength", "lambda", "wave_vacuum")


@dataclass(frozen=True)
class Line:
    name: str
    wave: float     # rest-frame vacuum Angstrom


def default_line_list_path() -> Path:
    return assets_dir() / "lines" / "mrs_lines.csv"


@lru_cache(maxsize=8)
def load_lines(path: str | None = None) -> tuple[Line, ...]:
    """Lines from a CSV with a name column and a vacuum-wavelength column; an absent
    file gives no markers (the app still works)."""
    file = Path(path) if path else default_line_list_path()
    if not file.exists():
        return ()
    with file.open(newline="") as handle:
        rows = [r for r in csv.reader(line for line in handle if not line.startswith("#"))]
    if not rows:
        return ()
    header = [h.strip().lower() for h in rows[0]]
    name_col = _first(header, _NAME_COLUMNS)
    wave_col = _first(header, _WAVE_COLUMNS)
    if name_col is None or wave_col is None:
        return ()
    lines = []
    for row in rows[1:]:
        try:
            lines.append(Line(row[name_col].strip(), float(row[wave_col])))
        except (ValueError, IndexError):
            continue
    return tuple(sorted(lines, key=lambda line: line.wave))


def _first(header: list[str], candidates: tuple[str, ...]) -> int | None:
    for candidate in candidates:
        if candidate in header:
            return header.index(candidate)
    for i, column in enumerate(header):  # e.g. "wave_vac_angstrom"
        if any(column.startswith(c) for c in candidates):
            return i
    return None


def lines_in_range(lines, low: float, high: float) -> list[Line]:
    return [line for line in lines if low <= line.wave <= high]
