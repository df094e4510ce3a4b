"""The batch results as a plain table (Qt-free): rows from the engine's catalog (as
they stream from run_catalog's progress, or read back from the finished file), the
columns to show, and CSV export."""

from __future__ import annotations

import csv
import math
from pathlib import Path

import numpy as np


def read_catalog(path: str | Path) -> tuple[list[str], list[dict]]:
    """Columns and rows of a finished catalog (.csv, .fits or .parquet)."""
    from astropy.table import Table

    table = Table.read(str(path))
    columns = list(table.colnames)
    rows = [{name: _plain(row[name]) for name in columns} for row in table]
    return columns, rows


def _plain(value):
    if isinstance(value, bytes):
        return value.decode(errors="replace")
    if isinstance(value, np.generic):
        return value.item()
    if np.ma.is_masked(value):
        return None
    return value


def numeric(value) -> float:
    """A sortable/plottable number for a cell (NaN when it is not one)."""
    if value is None or isinstance(value, str) and not value.strip():
        return math.nan
    try:
        return float(value)
    except (TypeError, ValueError):
        return math.nan


def column_values(rows: list[dict], name: str) -> np.ndarray:
    return np.array([numeric(row.get(name)) for row in rows], dtype=float)


def write_csv(path: str | Path, columns: list[str], rows: list[dict]) -> Path:
    """The table in the engine's CSV convention (true/false, catalog_store.csv_float digits)."""
    from spemr_engine.batch.catalog_store import csv_cell

    path = Path(path)
    with path.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(columns)
        for row in rows:
            writer.writerow([csv_cell(_plain(row.get(c)), column=c) for c in columns])
    return path
