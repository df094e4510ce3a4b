"""Label catalogs (APOGEE allStar, plain tables, user-defined surveys) read into the
model's labels, for building reference sets from real spectra.

How a catalog's columns become model labels is data, not code: the mappings live in
``presets/catalog_mappings.json`` and a user can add one with a JSON file of the same
layout. Labels that are flagged, missing or sentinel-valued become NaN per label, so a
star with a bad [N/Fe] still teaches the other labels.
"""

from __future__ import annotations

import gzip
import json
import warnings
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Mapping, Sequence

import numpy as np
from astropy.io import ascii as astropy_ascii
from astropy.io import fits
from astropy.utils.exceptions import AstropyWarning

from ..config import LABELS, label_infos
from ..errors import InputFileError, require_regular_file

MAPPINGS_PRESET = "catalog_mappings.json"
PUBLISHED_CATALOG_LABELS = "published_catalog"


# ---------------------------------------------------------------- mappings
@dataclass(frozen=True)
class LabelSource:
    """Where one model label comes from: a column, an optional per-label flag column
    (non-zero = masked) and an optional label added to it ([X/H] = [X/Fe] + [Fe/H])."""

    label: str
    columns: tuple[str, ...]
    flag: tuple[str, ...] = ()
    plus: str | None = None


@dataclass(frozen=True)
class StarFlag:
    column: str
    bits: tuple[int, ...]
    why: str = ""

    @property
    def bitmask(self) -> int:
        return sum(1 << bit for bit in self.bits)


@dataclass(frozen=True)
class CatalogMapping:
    name: str
    description: str
    detect: tuple[str, ...]
    id: tuple[str, ...]
    ra: tuple[str, ...]
    dec: tuple[str, ...]
    snr: tuple[str, ...]
    missing_at_or_below: float | None
    star_flags: tuple[StarFlag, ...]
    labels: tuple[LabelSource, ...]

    @classmethod
    def from_dict(cls, name: str, data: Mapping) -> "CatalogMapping":
        labels = _label_sources(name, data.get("labels", {}))
        missing = data.get("missing_at_or_below")
        return cls(
            name=name,
            description=str(data.get("description", "")),
            detect=_names(data.get("detect", ())),
            id=_names(data.get("id", ())),
            ra=_names(data.get("ra", ())),
            dec=_names(data.get("dec", ())),
            snr=_names(data.get("snr", ())),
            missing_at_or_below=None if missing is None else float(missing),
            star_flags=tuple(
                StarFlag(str(f["column"]), tuple(int(b) for b in f["bits"]), str(f.get("why", "")))
                for f in data.get("star_flags", ())
            ),
            labels=labels,
        )


def _names(value) -> tuple[str, ...]:
    """A column name or a list of candidate names."""
    if value is None:
        return ()
    return (str(value),) if isinstance(value, str) else tuple(str(v) for v in value)


def _label_sources(mapping_name: str, labels) -> tuple[LabelSource, ...]:
    if labels == PUBLISHED_CATALOG_LABELS:
        return tuple(LabelSource(info.name, (info.catalog, info.name)) for info in label_infos())
    if not isinstance(labels, Mapping) or not labels:
        raise ValueError(f"catalog mapping {mapping_name}: 'labels' must map model labels to columns")
    sources = []
    for label, spec in labels.items():
        if label not in LABELS:
            raise ValueError(
                f"catalog mapping {mapping_name}: unknown label {label!r} (model labels: {', '.join(LABELS)})"
            )
        spec = {"column": spec} if isinstance(spec, str) else spec
        sources.append(LabelSource(label, _names(spec["column"]), _names(spec.get("flag")), spec.get("plus")))
    for source in sources:
        target = next((s for s in sources if s.label == source.plus), None)
        if source.plus is not None and (target is None or target.plus is not None):
            raise ValueError(
                f"catalog mapping {mapping_name}: label {source.label} adds "
                f"{source.plus!r}, which must be a mapped label without 'plus' itself"
            )
    return tuple(sources)


def catalog_mappings(mapping_file: str | Path | None = None) -> dict[str, CatalogMapping]:
    """Shipped mappings, plus (overriding by name) those of a user's JSON file."""
    text = resources.files("spemr_engine.presets").joinpath(MAPPINGS_PRESET).read_text()
    entries = {k: v for k, v in json.loads(text).items() if not k.startswith("_")}
    if mapping_file is not None:
        entries.update(_user_mappings(Path(mapping_file)))
    try:
        return {name: CatalogMapping.from_dict(name, data) for name, data in entries.items()}
    except (KeyError, TypeError, ValueError) as error:
        source = Path(mapping_file) if mapping_file is not None else Path(MAPPINGS_PRESET)
        raise InputFileError(source, f"invalid catalog mapping ({error})") from None


def _user_mappings(path: Path) -> dict:
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        raise InputFileError(path, "file not found") from None
    except (OSError, ValueError) as error:
        raise InputFileError(path, f"not a readable JSON mapping file ({error})") from None
    if not isinstance(data, dict):
        raise InputFileError(path, "a mapping file must hold a JSON object of named mappings")
    return {k: v for k, v in data.items() if not k.startswith("_")}


# ------------------------------------------------------------------ tables
class _Table:
    """Column access by case-insensitive name over a FITS table or a CSV file."""

    def __init__(self, path: Path, names: Sequence[str], reader):
        self.path = path
        self.names = list(names)
        self._lower = {n.lower(): n for n in self.names}
        self._reader = reader

    def find(self, candidates: Sequence[str]) -> str | None:
        return next((self._lower[c.lower()] for c in candidates if c.lower() in self._lower), None)

    def require(self, candidates: Sequence[str], what: str) -> str:
        found = self.find(candidates)
        if found is None:
            raise InputFileError(self.path, f"no {what} column (looked for {', '.join(candidates)})")
        return found

    def read(self, columns: Sequence[str]) -> dict[str, np.ndarray]:
        return self._reader(list(dict.fromkeys(columns)))


def _open_table(path: Path) -> _Table:
    require_regular_file(path)
    head = _head(path)
    if head.startswith(b"SIMPLE  ="):
        return _fits_table(path)
    return _csv_table(path)


def _head(path: Path) -> bytes:
    try:
        with open(path, "rb") as handle:
            head = handle.read(16)
        if head[:2] == b"\x1f\x8b":
            with gzip.open(path, "rb") as handle:
                head = handle.read(16)
        return head
    except (OSError, EOFError) as error:
        raise InputFileError(path, f"cannot be read ({error})") from None


def _fits_table(path: Path) -> _Table:
    try:
        with fits.open(path, memmap=True) as hdul:
            table = next((h for h in hdul if isinstance(h, fits.BinTableHDU)), None)
            if table is None:
                raise InputFileError(path, "FITS file has no binary table of labels")
            names, index = list(table.columns.names), hdul.index_of(table.name)
    except InputFileError:
        raise
    except (OSError, ValueError) as error:
        raise InputFileError(path, f"unreadable FITS catalog ({error})") from None

    def reader(columns: list[str]) -> dict[str, np.ndarray]:
        try:
            with fits.open(path, memmap=True) as hdul:
                data = hdul[index].data
                return {c: np.array(data.field(c)) for c in columns}
        except (OSError, ValueError) as error:
            raise InputFileError(path, f"unreadable FITS catalog ({error})") from None

    return _Table(path, names, reader)


def _csv_table(path: Path) -> _Table:
    try:
        with open(path, "rb") as raw:
            compressed = raw.read(2) == b"\x1f\x8b"
        opener = gzip.open if compressed else open
        with opener(path, "rt", encoding="utf-8", newline="") as handle:
            header = handle.readline()
    except (OSError, UnicodeDecodeError) as error:
        raise InputFileError(path, f"neither a FITS table nor a readable CSV file ({error})") from None
    names = [n.strip().strip('"') for n in header.strip().split(",")]
    if len(names) < 2:
        raise InputFileError(path, "neither a FITS table nor a CSV file with a header line")

    def reader(columns: list[str]) -> dict[str, np.ndarray]:
        try:
            table = astropy_ascii.read(str(path), format="csv", include_names=columns, fast_reader=True)
        except (OSError, ValueError, UnicodeDecodeError) as error:
            raise InputFileError(path, f"unreadable CSV catalog ({error})") from None
        return {c: _filled(table[c]) for c in columns}

    return _Table(path, names, reader)


def _filled(column) -> np.ndarray:
    """Masked (empty) CSV cells as NaN for numbers, '' for text."""
    values = np.ma.asarray(column)
    if values.dtype.kind in "fiu":
        return np.ma.filled(values.astype(np.float64), np.nan)
    return np.ma.filled(values.astype(str), "")


# ----------------------------------------------------------------- catalog
@dataclass
class LabelCatalog:
    """Stars of a label catalog with positions and model labels (NaN = masked)."""

    path: Path
    mapping: str
    star_id: np.ndarray  # str
    ra: np.ndarray  # deg
    dec: np.ndarray  # deg
    labels: np.ndarray  # (n, len(LABELS)) float32, physical units, NaN = masked
    counts: dict = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.star_id)

    def summary(self) -> dict:
        masked = {name: int(np.isnan(self.labels[:, j]).sum()) for j, name in enumerate(LABELS)}
        return {
            "path": str(self.path),
            "mapping": self.mapping,
            "stars": len(self),
            **self.counts,
            "masked_labels": masked,
            "notes": list(self.notes),
        }


def choose_mapping(table: _Table, mappings: Mapping[str, CatalogMapping], requested: str) -> CatalogMapping:
    if requested != "auto":
        if requested not in mappings:
            raise InputFileError(table.path, f"unknown catalog format {requested!r} (known: {', '.join(mappings)})")
        return mappings[requested]
    for mapping in mappings.values():
        if mapping.detect and all(table.find([c]) for c in mapping.detect):
            return mapping
    shown = ", ".join(table.names[:12]) + (" ..." if len(table.names) > 12 else "")
    raise InputFileError(
        table.path,
        f"columns match no known catalog format ({', '.join(mappings)}); columns: {shown}; add one with --mapping",
    )


def read_label_catalog(
    path: str | Path, catalog_format: str = "auto", mapping_file: str | Path | None = None
) -> LabelCatalog:
    """Read a label catalog (FITS or CSV) into model labels, one entry per star.

    Duplicate star ids keep the entry with the highest S/N (APOGEE lists some stars
    more than once); entries without a finite position are dropped and counted.
    """
    path = Path(path)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", AstropyWarning)  # unit/header chatter of big catalogs
        table = _open_table(path)
        mapping = choose_mapping(table, catalog_mappings(mapping_file), catalog_format)
        columns, notes = _resolve_columns(table, mapping)
        data = table.read(list(columns.values()))
    n_rows = len(next(iter(data.values())))
    star_id = _ids(data, columns.get("id"), n_rows)
    ra, dec = _numbers(data[columns["ra"]]), _numbers(data[columns["dec"]])
    labels, n_star_flagged = _labels(data, columns, mapping, n_rows)
    snr = _numbers(data[columns["snr"]]) if columns.get("snr") else np.zeros(n_rows)
    keep = np.isfinite(ra) & np.isfinite(dec) & (np.abs(dec) <= 90)
    keep_index = _best_per_id(star_id, snr, keep)
    counts = {
        "rows": n_rows,
        "without_position": int((~keep).sum()),
        "duplicates_removed": int(keep.sum() - len(keep_index)),
        "star_flagged": n_star_flagged,
    }
    return LabelCatalog(
        path=path,
        mapping=mapping.name,
        star_id=star_id[keep_index],
        ra=ra[keep_index] % 360.0,
        dec=dec[keep_index],
        labels=labels[keep_index].astype(np.float32),
        counts=counts,
        notes=notes,
    )


def _resolve_columns(table: _Table, mapping: CatalogMapping) -> tuple[dict, list[str]]:
    """Actual column names for everything the mapping asks for; notes for what is absent."""
    columns: dict = {
        "ra": table.require(mapping.ra, "right ascension"),
        "dec": table.require(mapping.dec, "declination"),
        "id": table.find(mapping.id),
        "snr": table.find(mapping.snr),
    }
    notes = [] if columns["id"] else ["no star id column: row numbers used as star ids"]
    found_labels = 0
    for source in mapping.labels:
        value, flag = table.find(source.columns), table.find(source.flag) if source.flag else None
        columns[f"label:{source.label}"] = value
        columns[f"flag:{source.label}"] = flag
        found_labels += value is not None
        if value is None:
            notes.append(f"{source.label}: no column {'/'.join(source.columns)}; label masked")
        elif source.flag and flag is None:
            notes.append(f"{source.label}: no flag column {'/'.join(source.flag)}; not applied")
    for star_flag in mapping.star_flags:
        columns[f"star:{star_flag.column}"] = table.find([star_flag.column])
    if not found_labels:
        raise InputFileError(table.path, f"none of the label columns of format {mapping.name} are present")
    return {k: v for k, v in columns.items() if v is not None}, notes


def _numbers(values: np.ndarray) -> np.ndarray:
    try:
        out = np.asarray(values, dtype=np.float64)
    except (TypeError, ValueError):
        out = np.array([_to_float(v) for v in values], dtype=np.float64)
    return np.where(np.isfinite(out), out, np.nan)


def _to_float(value) -> float:
    try:
        return float(value)
    except (TypeError, ValueError):
        return float("nan")


def _ids(data: dict, column: str | None, n_rows: int) -> np.ndarray:
    if column is None:
        return np.array([f"row{i}" for i in range(n_rows)], dtype=object)
    values = data[column]
    if values.dtype.kind == "S":
        values = np.char.decode(values, "ascii", errors="replace")
    if values.dtype.kind == "f":
        values = np.where(np.isfinite(values), values, -1).astype(np.int64)
    return np.array([str(v).strip() for v in values], dtype=object)


def _labels(data: dict, columns: dict, mapping: CatalogMapping, n_rows: int) -> tuple[np.ndarray, int]:
    labels = np.full((n_rows, len(LABELS)), np.nan)
    for source in mapping.labels:
        column = columns.get(f"label:{source.label}")
        if column is None:
            continue
        values = _numbers(data[column])
        if mapping.missing_at_or_below is not None:
            values[values <= mapping.missing_at_or_below] = np.nan
        flag = columns.get(f"flag:{source.label}")
        if flag is not None:
            flagged = np.nan_to_num(_numbers(data[flag]), nan=0.0) != 0
            values[flagged] = np.nan
        labels[:, LABELS.index(source.label)] = values
    for source in mapping.labels:  # relative labels after their base is final
        if source.plus is not None:
            labels[:, LABELS.index(source.label)] += labels[:, LABELS.index(source.plus)]
    star_bad = np.zeros(n_rows, dtype=bool)
    for star_flag in mapping.star_flags:
        column = columns.get(f"star:{star_flag.column}")
        if column is not None:
            bits = np.asarray(data[column]).astype(np.int64)
            star_bad |= (bits & star_flag.bitmask) != 0
    labels[star_bad] = np.nan
    return labels, int(star_bad.sum())


def _best_per_id(star_id: np.ndarray, snr: np.ndarray, keep: np.ndarray) -> np.ndarray:
    """Row indices, one per star id among ``keep`` rows: the highest S/N (then first)."""
    rows = np.flatnonzero(keep)
    if rows.size == 0:
        return rows
    score = np.nan_to_num(snr[rows], nan=-np.inf)
    order = rows[np.lexsort((rows, -score))]
    _, first = np.unique(star_id[order].astype(str), return_index=True)
    return np.sort(order[first])
