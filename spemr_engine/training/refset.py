"""Reference sets: the on-disk training data (format in docs/architecture.md).

A reference set can be far larger than memory (300,000 x 7200 float32 is 8.6 GB), so the
flux lives in one raw float32 file that is written by appending and read through a
memory map, a few rows at a time. Writing is crash-safe and resumable: flux, label and
row bytes are appended and fsynced first, and only then is the committed count written
atomically to a small progress file; reopening an unfinished set truncates anything past
that count and carries on. ``close()`` computes NaN-aware statistics in one streaming pass.

This module reads and writes files only; it never imports torch (training wraps it).
"""

from __future__ import annotations

import csv
import io
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator, Mapping, Sequence

import numpy as np

from ..config import LABELS, InputGrid, default_grid, preprocess_config, published_to_label, training_recipe
from ..errors import Cancelled, InputFileError
from ..progress import IMPORT, Count, CountProgress
from ..io_utils import atomic_write
from ..run_manifest import RunManifest
from ..safe_pickle import safe_load

FORMAT = "spemr-refset"
VERSION = 1
MANIFEST_FILE = "manifest.json"
FLUX_FILE = "flux.f32"
LABELS_FILE = "labels.npy"
ROWS_FILE = "spectra.csv"
STATS_FILE = "statistics.npz"
PROGRESS_FILE = "progress.json"
PARTIAL_LABELS_FILE = "labels.f32.partial"
ROW_COLUMNS = ("star_id", "obsid", "filename", "extname_blue", "extname_red", "snr_blue", "snr_red")
SPLIT_NAMES = ("train", "valid", "test")
DEFAULT_SPLIT = training_recipe().split_fractions  # train/valid/test fractions, presets/training.json
STATS_CHUNK_ROWS = 2048


# ------------------------------------------------------------------ helpers
def _fsync_append(path: Path, data: bytes) -> int:
    """Append ``data`` to ``path`` and force it to disk; return the new file size."""
    with open(path, "ab") as handle:
        handle.write(data)
        handle.flush()
        os.fsync(handle.fileno())
        return handle.tell()


def _write_json_atomic(path: Path, data: Mapping) -> None:
    """Write JSON so that a crash leaves either the old or the new file, never half of one."""
    atomic_write(path, lambda handle: json.dump(data, handle, indent=1))


def _truncate(path: Path, size: int) -> None:
    if not path.exists():
        if size:
            raise InputFileError(path, "missing although the progress file says data was committed")
        path.touch()
        return
    if path.stat().st_size < size:
        raise InputFileError(path, f"shorter ({path.stat().st_size} bytes) than committed ({size} bytes)")
    with open(path, "r+b") as handle:
        handle.truncate(size)


def _csv_line(columns: Sequence[str], row: Mapping) -> bytes:
    values = ["" if row.get(c) is None else str(row.get(c)) for c in columns]
    out = io.StringIO()
    csv.writer(out, lineterminator="\n").writerow(values)
    return out.getvalue().encode("utf-8")


class _StreamingMoments:
    """Per-column NaN-aware mean and std, merged chunk by chunk (Chan et al.) so the
    whole array is never needed at once and large offsets do not lose precision."""

    def __init__(self, n_columns: int):
        self.count = np.zeros(n_columns)
        self.mean = np.zeros(n_columns)
        self.m2 = np.zeros(n_columns)

    def update(self, chunk: np.ndarray) -> None:
        chunk = np.asarray(chunk, dtype=np.float64)
        finite = np.isfinite(chunk)
        n = finite.sum(axis=0).astype(np.float64)
        values = np.where(finite, chunk, 0.0)
        safe_n = np.maximum(n, 1)
        chunk_mean = values.sum(axis=0) / safe_n
        chunk_m2 = (np.where(finite, chunk - chunk_mean, 0.0) ** 2).sum(axis=0)
        total = self.count + n
        delta = chunk_mean - self.mean
        with np.errstate(invalid="ignore", divide="ignore"):
            weight = np.where(total > 0, n / np.maximum(total, 1), 0.0)
        self.mean = self.mean + delta * weight
        self.m2 = self.m2 + chunk_m2 + delta**2 * self.count * weight
        self.count = total

    def result(self) -> tuple[np.ndarray, np.ndarray]:
        """Mean and population std; NaN where a column never had a finite value."""
        with np.errstate(invalid="ignore", divide="ignore"):
            mean = np.where(self.count > 0, self.mean, np.nan)
            std = np.where(self.count > 0, np.sqrt(self.m2 / np.maximum(self.count, 1)), np.nan)
        return mean, std


# ------------------------------------------------------------------- writer
class ReferenceSetWriter:
    """Append spectra to a reference set on disk; resumable after a crash.

    ``rows`` are dicts with at least ``star_id`` (spectra of one star share it so splits
    stay by star); the other standard columns default to empty, and extra keys (``seed``,
    ``split``) become extra columns fixed by the first append.
    """

    def __init__(
        self,
        path: str | Path,
        labels: Sequence[str] = LABELS,
        grid: InputGrid | None = None,
        synthetic: bool = False,
        source: str = "",
    ):
        self.path = Path(path)
        self.labels = list(labels)
        self.grid = grid or default_grid()
        self.n_pixels = self.grid.n_pixels
        self.synthetic = bool(synthetic)
        self.source = str(source)
        self.columns: list[str] | None = None
        self.n_spectra = 0
        self._sizes = {FLUX_FILE: 0, PARTIAL_LABELS_FILE: 0, ROWS_FILE: 0}
        self._closed = False
        # what a resumed writer must share with the one that started the set
        self._manifest = RunManifest(self.path / PROGRESS_FILE, {"labels": self.labels, "grid": self.grid.to_dict()})
        if (self.path / PROGRESS_FILE).exists():
            self._resume()
        elif (self.path / MANIFEST_FILE).exists():
            raise InputFileError(self.path, "reference set is already finished; write a new one")
        elif self.path.exists() and any(self.path.iterdir()):
            raise InputFileError(self.path, "folder exists and is not an unfinished reference set")
        else:
            self.path.mkdir(parents=True, exist_ok=True)
            self._commit()

    # -- progress file (run_manifest.RunManifest): the single source of truth for what is
    # committed, with the settings (labels, grid) a resumed writer must share
    def _commit(self) -> None:
        self._manifest.write(
            format=FORMAT,
            version=VERSION,
            n_spectra=self.n_spectra,
            synthetic=self.synthetic,
            source=self.source,
            columns=self.columns,
            sizes=self._sizes,
        )

    def _resume(self) -> None:
        progress = self._manifest.read() or {}
        self._manifest.require_same(
            f"{self.path}: unfinished reference set", "write it with those or into a new folder", progress
        )
        self.n_spectra = int(progress["n_spectra"])
        self.columns = progress.get("columns")
        self.synthetic = bool(progress.get("synthetic", self.synthetic))
        self.source = progress.get("source", self.source)
        self._sizes = {k: int(v) for k, v in progress["sizes"].items()}
        for name, size in self._sizes.items():
            _truncate(self.path / name, size)

    def __len__(self) -> int:
        return self.n_spectra

    def append(self, flux: np.ndarray, labels: np.ndarray, rows: Sequence[Mapping]) -> None:
        """Append k spectra: flux (k, n_pixels), labels (k, n_labels) physical units, NaN = missing."""
        if self._closed:
            raise ValueError("reference set writer is closed")
        flux = np.ascontiguousarray(np.atleast_2d(flux), dtype="<f4")
        labels = np.ascontiguousarray(np.atleast_2d(labels), dtype="<f4")
        k = len(rows)
        if flux.shape != (k, self.n_pixels):
            raise ValueError(f"flux has shape {flux.shape}, expected ({k}, {self.n_pixels})")
        if labels.shape != (k, len(self.labels)):
            raise ValueError(f"labels have shape {labels.shape}, expected ({k}, {len(self.labels)})")
        if k == 0:
            return
        self._check_rows(rows)
        columns = self.columns
        if columns is None:  # _check_rows fixes the columns on the first append
            raise ValueError("reference set columns are not fixed")
        row_bytes = b"".join(_csv_line(columns, row) for row in rows)
        if self._sizes[ROWS_FILE] == 0:
            row_bytes = _csv_line(columns, {c: c for c in columns}) + row_bytes
        # Data first, count last: a crash between the two leaves bytes past the committed
        # sizes, which the next open truncates away.
        sizes = {
            FLUX_FILE: _fsync_append(self.path / FLUX_FILE, flux.tobytes()),
            PARTIAL_LABELS_FILE: _fsync_append(self.path / PARTIAL_LABELS_FILE, labels.tobytes()),
            ROWS_FILE: _fsync_append(self.path / ROWS_FILE, row_bytes),
        }
        self._sizes = sizes
        self.n_spectra += k
        self._commit()

    def _check_rows(self, rows: Sequence[Mapping]) -> None:
        for row in rows:
            if row.get("star_id") in (None, ""):
                raise ValueError("every row needs a star_id (splits are made by star)")
        if self.columns is None:
            extra = sorted({key for row in rows for key in row} - set(ROW_COLUMNS))
            self.columns = list(ROW_COLUMNS) + extra
        unknown = {key for row in rows for key in row} - set(self.columns)
        if unknown:
            raise ValueError(f"row keys {sorted(unknown)} are not columns of this reference set")

    def close(self, statistics: Mapping[str, np.ndarray] | None = None) -> "ReferenceSet":
        """Finish the set: labels.npy, statistics (streaming pass unless given), manifest.

        ``statistics`` lets an importer keep the statistics its models were trained with.
        """
        if self._closed:
            return ReferenceSet.open(self.path)
        if self.n_spectra == 0:
            raise InputFileError(self.path, "reference set has no spectra")
        labels = np.fromfile(self.path / PARTIAL_LABELS_FILE, dtype="<f4").reshape(-1, len(self.labels))
        np.save(self.path / LABELS_FILE, labels)
        stats = dict(statistics) if statistics is not None else compute_statistics(self._flux_memmap(), labels)
        arrays: dict = {
            k: np.asarray(stats[k], dtype=np.float64) for k in ("flux_mean", "flux_std", "label_mean", "label_std")
        }
        np.savez(self.path / STATS_FILE, **arrays)
        manifest = {
            "format": FORMAT,
            "version": VERSION,
            "n_spectra": self.n_spectra,
            "labels": self.labels,
            "grid": self.grid.to_dict(),
            "synthetic": self.synthetic,
            "source": self.source,
            "columns": self.columns,
            "files": {"flux": FLUX_FILE, "labels": LABELS_FILE, "rows": ROWS_FILE, "statistics": STATS_FILE},
        }
        _write_json_atomic(self.path / MANIFEST_FILE, manifest)
        (self.path / PROGRESS_FILE).unlink()
        (self.path / PARTIAL_LABELS_FILE).unlink()
        self._closed = True
        return ReferenceSet.open(self.path)

    def _flux_memmap(self) -> np.memmap:
        return np.memmap(self.path / FLUX_FILE, dtype="<f4", mode="r", shape=(self.n_spectra, self.n_pixels))

    def __enter__(self) -> "ReferenceSetWriter":
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        # On error leave the set unfinished (resumable) rather than finishing half of it.
        if exc_type is None and not self._closed:
            self.close()


def compute_statistics(
    flux: np.ndarray, labels: np.ndarray, chunk_rows: int = STATS_CHUNK_ROWS, clip: tuple[float, float] | None = None
) -> dict[str, np.ndarray]:
    """NaN-aware per-pixel and per-label mean/std in one chunked pass over ``flux``.

    Flux is clipped as before the network (config clip range) so the statistics describe
    what standardisation will actually see.
    """
    if clip is None:
        cfg = preprocess_config()
        clip = (cfg.clip_min, cfg.clip_max)
    flux_moments = _StreamingMoments(flux.shape[1])
    for start in range(0, len(flux), chunk_rows):
        flux_moments.update(np.clip(np.asarray(flux[start : start + chunk_rows]), *clip))
    label_moments = _StreamingMoments(labels.shape[1])
    label_moments.update(labels)
    flux_mean, flux_std = flux_moments.result()
    label_mean, label_std = label_moments.result()
    return {"flux_mean": flux_mean, "flux_std": flux_std, "label_mean": label_mean, "label_std": label_std}


# ------------------------------------------------------------------- reader
@dataclass(frozen=True)
class Split:
    """Spectrum indices of the three splits, each sorted."""

    train: np.ndarray
    valid: np.ndarray
    test: np.ndarray

    def __getitem__(self, name: str) -> np.ndarray:
        if name not in SPLIT_NAMES:
            raise KeyError(f"unknown split {name!r} (choose from {SPLIT_NAMES})")
        return getattr(self, name)


class ReferenceSet:
    """A finished reference set; ``flux`` is a read-only memory map, never loaded whole."""

    def __init__(
        self,
        path: Path,
        manifest: dict,
        flux: np.memmap,
        labels: np.ndarray,
        columns: dict[str, np.ndarray],
        statistics: dict[str, np.ndarray],
    ):
        self.path = path
        self.manifest = manifest
        self.flux = flux
        self.labels = labels
        self.columns = columns
        self.statistics = statistics
        self.label_names: list[str] = list(manifest["labels"])
        self.grid = InputGrid.from_dict(manifest["grid"])
        self.synthetic = bool(manifest.get("synthetic", False))
        self.source = str(manifest.get("source", ""))
        self.star_id = columns["star_id"]

    @property
    def rows(self) -> list[dict]:
        """spectra.csv as one dict per spectrum (built on demand: the columns are the compact form)."""
        names = list(self.columns)
        return [dict(zip(names, values)) for values in zip(*(self.columns[n] for n in names))]

    @classmethod
    def open(cls, path: str | Path) -> "ReferenceSet":
        path = Path(path)
        manifest_path = path / MANIFEST_FILE
        if not manifest_path.exists():
            problem = (
                "reference set is unfinished (resume writing it, then close it)"
                if (path / PROGRESS_FILE).exists()
                else "not a reference set (no manifest.json)"
            )
            raise InputFileError(path, problem)
        try:
            manifest = json.loads(manifest_path.read_text())
        except ValueError as error:
            raise InputFileError(manifest_path, f"unreadable manifest ({error})") from None
        if manifest.get("format") != FORMAT:
            raise InputFileError(manifest_path, f"format is {manifest.get('format')!r}, not {FORMAT!r}")
        if manifest.get("version") != VERSION:
            raise InputFileError(manifest_path, f"unsupported reference-set version {manifest.get('version')!r}")
        n = int(manifest["n_spectra"])
        n_pixels = InputGrid.from_dict(manifest["grid"]).n_pixels
        flux = _open_flux(path / FLUX_FILE, n, n_pixels)
        labels = np.load(path / LABELS_FILE, allow_pickle=False)
        if labels.shape != (n, len(manifest["labels"])):
            raise InputFileError(path / LABELS_FILE, f"shape {labels.shape} does not match the manifest")
        columns = _read_columns(path / ROWS_FILE, n)
        with np.load(path / STATS_FILE, allow_pickle=False) as npz:
            statistics = {k: np.asarray(npz[k]) for k in npz.files}
        return cls(path, manifest, flux, labels, columns, statistics)

    def __len__(self) -> int:
        return len(self.labels)

    @property
    def flux_mean(self) -> np.ndarray:
        return self.statistics["flux_mean"]

    @property
    def flux_std(self) -> np.ndarray:
        return self.statistics["flux_std"]

    @property
    def label_mean(self) -> np.ndarray:
        return self.statistics["label_mean"]

    @property
    def label_std(self) -> np.ndarray:
        return self.statistics["label_std"]

    def read_flux(self, indices: np.ndarray) -> np.ndarray:
        """Rows ``indices`` as an in-memory float32 array, in the order given.

        Reads in ascending file order (sequential-ish I/O on the memory map) and puts the
        rows back into the requested order.
        """
        indices = np.asarray(indices, dtype=np.int64)
        order = np.argsort(indices, kind="stable")
        out = np.empty((len(indices), self.flux.shape[1]), dtype=np.float32)
        out[order] = self.flux[indices[order]]
        return out

    def split_by_star(self, fractions: Sequence[float] = DEFAULT_SPLIT, seed: int = 0) -> Split:
        """Train/valid/test indices such that all spectra of a star share one split.

        A set imported with a published split (a ``split`` column) keeps that split.
        """
        names = self.columns.get("split")
        if names is not None and len(names) and np.isin(names, SPLIT_NAMES).all():
            return Split(*(np.flatnonzero(names == s) for s in SPLIT_NAMES))
        return split_by_star(self.star_id, fractions, seed)

    def iter_batches(
        self, indices: np.ndarray, batch_size: int, shuffle: bool = False, rng: np.random.Generator | None = None
    ) -> Iterator[tuple[np.ndarray, np.ndarray, np.ndarray]]:
        """Yield (indices, flux, labels) batches read from the memory map one batch at a time."""
        indices = np.asarray(indices, dtype=np.int64)
        if shuffle:
            indices = (rng or np.random.default_rng()).permutation(indices)
        for start in range(0, len(indices), batch_size):
            batch = indices[start : start + batch_size]
            yield batch, self.read_flux(batch), self.labels[batch]


def split_by_star(
    star_id: Sequence | np.ndarray, fractions: Sequence[float] | np.ndarray = DEFAULT_SPLIT, seed: int = 0
) -> Split:
    """Shuffle the stars (not the spectra) and cut the shuffled list where the cumulative
    spectrum count crosses each fraction, so repeat spectra of one star never leak."""
    fractions = np.asarray(fractions, dtype=np.float64)
    if len(fractions) != 3 or np.any(fractions < 0) or fractions.sum() <= 0:
        raise ValueError(f"fractions must be three non-negative numbers, got {list(fractions)}")
    fractions = fractions / fractions.sum()
    stars, inverse, counts = np.unique(np.asarray(star_id, dtype=str), return_inverse=True, return_counts=True)
    order = np.random.default_rng(seed).permutation(len(stars))
    cumulative = np.cumsum(counts[order]) / counts.sum()
    # A star goes to the split whose cumulative-fraction interval holds its midpoint.
    midpoint = cumulative - counts[order] / (2 * counts.sum())
    bounds = np.cumsum(fractions)[:-1]
    star_split = np.empty(len(stars), dtype=np.int64)
    star_split[order] = np.searchsorted(bounds, midpoint, side="right")
    spectrum_split = star_split[inverse]
    return Split(*(np.flatnonzero(spectrum_split == i) for i in range(3)))


def _open_flux(path: Path, n: int, n_pixels: int) -> np.memmap:
    expected = n * n_pixels * 4
    if not path.exists():
        raise InputFileError(path, "flux file missing")
    if path.stat().st_size != expected:
        raise InputFileError(
            path, f"size {path.stat().st_size} bytes, expected {expected} for {n} x {n_pixels} float32"
        )
    return np.memmap(path, dtype="<f4", mode="r", shape=(n, n_pixels))


def _read_columns(path: Path, n: int) -> dict[str, np.ndarray]:
    """spectra.csv as one string array per column: compact for 300,000-row sets."""
    with open(path, newline="", encoding="utf-8") as handle:
        reader = csv.reader(handle)
        header = next(reader, None)
        if not header or "star_id" not in header:
            raise InputFileError(path, "no header with a star_id column")
        records = list(reader)
    if len(records) != n:
        raise InputFileError(path, f"{len(records)} rows, manifest says {n}")
    if any(len(r) != len(header) for r in records):
        raise InputFileError(path, "rows with a wrong number of fields")
    values = list(zip(*records)) if records else [()] * len(header)
    return {name: np.array(column, dtype=str) for name, column in zip(header, values)}


# ----------------------------------------------------- published importer
PUBLISHED_CONFIG = "label_config.pkl"
PUBLISHED_SPLITS = {"train": "train", "valid": "valid", "test": "test"}
STAR_ID_COLUMNS = ("star_id", "APOGEE_ID", "apogee_id", "obsid", "OBSID")
IMPORT_CHUNK_ROWS = 4096


def import_published(
    source_dir: str | Path,
    out_path: str | Path,
    synthetic: bool = False,
    progress: CountProgress | None = None,
    cancel: Callable[[], bool] | None = None,
) -> ReferenceSet:
    """Convert the published layout (``{train,valid,test}_flux.pkl``, ``*_label.csv`` with
    ``ASPCAP_*`` columns, ``label_config.pkl``) into a reference set.

    Pickles go through the restricted unpickler only; labels are mapped by name (the
    published order differs from ours); the published split is kept in a ``split`` column;
    the published flux/label statistics are kept when present, since published models were
    standardised with them.
    """
    source_dir = Path(source_dir)
    if not source_dir.is_dir():
        raise InputFileError(source_dir, "not a folder")
    config = _published_config(source_dir / PUBLISHED_CONFIG)
    writer = ReferenceSetWriter(out_path, synthetic=synthetic, source=f"published:{source_dir.name}")
    already = _committed_per_split(writer)
    for split in SPLIT_NAMES:
        _import_split(source_dir, split, writer, already.get(split, 0), progress, cancel)
    return writer.close(statistics=_published_statistics(config, writer.n_pixels))


def _require_finite_real(path: Path, flux: np.ndarray) -> None:
    """Training on a NaN, inf, boolean or complex spectrum poisons every weight (the loss
    becomes NaN) or silently means something else, so such a flux file is refused whole,
    before anything is written. Checked in blocks: a bool copy of a 3 GB array is not free."""
    if flux.dtype.kind not in "fiu":
        raise InputFileError(path, f"flux must be real numbers, found dtype {flux.dtype}")
    bad = [
        start + np.flatnonzero(~np.isfinite(flux[start : start + 4096]).all(axis=1))
        for start in range(0, len(flux), 4096)
    ]
    rows = np.concatenate(bad) if bad else np.zeros(0, np.int64)
    if rows.size:
        raise InputFileError(
            path,
            f"{rows.size} of {len(flux)} spectra hold NaN or inf flux (first: row {int(rows[0])}); refusing to import them",
        )


def _committed_per_split(writer: ReferenceSetWriter) -> dict[str, int]:
    """Spectra per split already committed by an interrupted earlier import."""
    if not writer.n_spectra:
        return {}
    with open(writer.path / ROWS_FILE, newline="", encoding="utf-8") as handle:
        names = [row.get("split", "") for row in csv.DictReader(handle)]
    return {name: names.count(name) for name in set(names)}


def _published_config(path: Path) -> dict:
    if not path.exists():
        return {}
    config = safe_load(path)
    if not isinstance(config, dict):
        raise InputFileError(path, f"expected a dict, found {type(config).__name__}")
    return config


def _published_statistics(config: dict, n_pixels: int) -> dict[str, np.ndarray] | None:
    """Published statistics in our label order, or None to compute them."""
    try:
        names = [published_to_label()[name] for name in config["label_list"]]
        flux_mean = np.asarray(config["flux_mean"], dtype=np.float64)
        flux_std = np.asarray(config["flux_std"], dtype=np.float64)
        label_mean = dict(zip(names, np.asarray(config["label_mean"], dtype=np.float64)))
        label_std = dict(zip(names, np.asarray(config["label_std"], dtype=np.float64)))
        if flux_mean.shape != (n_pixels,) or flux_std.shape != (n_pixels,) or set(names) != set(LABELS):
            return None
        return {
            "flux_mean": flux_mean,
            "flux_std": flux_std,
            "label_mean": np.array([label_mean[n] for n in LABELS]),
            "label_std": np.array([label_std[n] for n in LABELS]),
        }
    except (KeyError, TypeError, ValueError):
        return None


def _import_split(
    source_dir: Path,
    split: str,
    writer: ReferenceSetWriter,
    already: int,
    progress: CountProgress | None,
    cancel: Callable[[], bool] | None,
) -> None:
    flux_path = source_dir / f"{split}_flux.pkl"
    label_path = source_dir / f"{split}_label.csv"
    if not flux_path.exists() and not label_path.exists():
        return
    flux = safe_load(flux_path)
    if not isinstance(flux, np.ndarray) or flux.ndim != 2 or flux.shape[1] != writer.n_pixels:
        shape = getattr(flux, "shape", type(flux).__name__)
        raise InputFileError(flux_path, f"expected an (n, {writer.n_pixels}) array, found {shape}")
    _require_finite_real(flux_path, flux)
    labels, rows, n_rows = _published_labels(label_path, split, max_rows=len(flux))
    if n_rows != len(flux):
        raise InputFileError(label_path, f"{n_rows} label rows but {len(flux)} spectra in {flux_path.name}")
    # Splits are imported in order, so an interrupted import resumes after the spectra
    # of this split that were already committed.
    for start in range(already, len(flux), IMPORT_CHUNK_ROWS):
        if cancel and cancel():
            raise Cancelled(f"import of {split} cancelled after {start} of {len(flux)} spectra")
        stop = start + IMPORT_CHUNK_ROWS
        writer.append(flux[start:stop], labels[start:stop], rows[start:stop])
        if progress:
            progress(Count(IMPORT, done=min(stop, len(flux)), total=len(flux), split=split))


def _published_labels(path: Path, split: str, max_rows: int | None = None) -> tuple[np.ndarray, list[dict], int]:
    """Labels in LABELS order from ``ASPCAP_*`` columns (by name); rows with star ids;
    the number of data rows. Streamed: rows past ``max_rows`` (the spectra there are) are
    only counted, not kept (a 50 MB CSV of 2.9M short rows took 2.1 GB held whole)."""
    labels: list[list[float]] = []
    rows: list[dict] = []
    n_rows = 0
    try:
        with open(path, newline="", encoding="utf-8") as handle:
            reader = csv.DictReader(handle)
            header = list(reader.fieldnames or [])
            mapping = {pub: ours for pub, ours in published_to_label().items() if pub in header}
            if not mapping:
                raise InputFileError(path, "no ASPCAP_* label columns found")
            column_of = {ours: pub for pub, ours in mapping.items()}
            star_column = next((c for c in STAR_ID_COLUMNS if c in header), None)
            for record in reader:
                n_rows += 1
                if max_rows is not None and n_rows > max_rows:
                    continue  # counted for the message, not kept
                labels.append([_to_float(record[column_of[name]]) if name in column_of else np.nan for name in LABELS])
                star = record.get(star_column) if star_column else None
                rows.append(
                    {
                        "star_id": star or f"{split}-{n_rows - 1}",
                        "obsid": record.get("obsid", record.get("OBSID", "")),
                        "filename": record.get("filename", ""),
                        "split": split,
                    }
                )
    except FileNotFoundError:
        raise InputFileError(path, "file not found") from None
    except IsADirectoryError:
        raise InputFileError(path, "is a folder, not a CSV file") from None
    except OSError as error:
        raise InputFileError(path, f"cannot be read ({error.strerror or error})") from None
    except (UnicodeDecodeError, csv.Error) as error:
        raise InputFileError(path, f"unreadable CSV ({error})") from None
    array = np.array(labels, dtype=np.float32) if labels else np.full((0, len(LABELS)), np.nan, dtype=np.float32)
    return array, rows, n_rows


def _to_float(text: str | None) -> float:
    if text is None:
        return float("nan")
    try:
        return float(text)
    except ValueError:
        return float("nan")
