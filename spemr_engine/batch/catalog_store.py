"""Crash-safe storage for survey-scale catalogs: the run folder, its chunks, and the
final table.

Why this shape: a catalog of millions of rows must survive ``kill -9`` at any instant
and must not need the whole table in memory. Results are therefore committed in small
*chunks*, each written to a temporary file and ``os.replace``'d into place (a chunk is
either complete or absent). A chunk records which input files it covers, so the set of
finished inputs is simply the union over the chunks present: there is no second
bookkeeping file that could disagree with the data. The final CSV / Parquet / FITS
table is streamed from the chunks in a deterministic order (input path, then the order
of the spectra within the file), so a resumed run produces the same table as an
uninterrupted one, whatever order the chunks were written in.

Layout, next to ``CATALOG.ext``::

    CATALOG.ext.spemr-run/
        run.json          settings and their fingerprint (run_manifest.RunManifest, section
                          "settings"), state ("running" | "finished"), summary
        lock              held (flock) by the run in progress
        chunks/chunk-*.jsonl
"""

from __future__ import annotations

import csv
import errno
import fcntl
import json
import math
import os
import shutil
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Iterable, Iterator, Sequence

import numpy as np

from ..errors import SpemrError
from ..io_utils import atomic_path, atomic_write
from ..run_manifest import RunManifest

CHUNK_FORMAT = "spemr-catalog-chunk"
RUN_FORMAT = "spemr-catalog-run"
FORMAT_VERSION = 1
OUTPUT_FORMATS = {".csv": "csv", ".parquet": "parquet", ".pq": "parquet", ".fits": "fits", ".fit": "fits"}
# Value kinds, from narrowest to widest: a column takes the widest kind it holds.
_KIND_ORDER = ("none", "bool", "int", "float", "str")
_FITS_INT_NULL = -(2**63)


class CatalogWriteError(SpemrError):
    """Writing the catalog failed (disk full, unwritable folder...): says what was kept."""


def output_format(output: str | Path) -> str:
    """'csv' | 'parquet' | 'fits' from the output name, or a clear error."""
    suffix = Path(output).suffix.lower()
    if suffix not in OUTPUT_FORMATS:
        raise SpemrError(
            f"{Path(output).name}: unknown catalog format {suffix or '(none)'!r} (use .fits, .parquet or .csv)"
        )
    return OUTPUT_FORMATS[suffix]


# ----------------------------------------------------------------- atomic files
def atomic_write_binary(path: Path, write_to, what: str) -> None:
    """Have ``write_to(tmp_path)`` write a file, then rename it over ``path`` (io_utils.atomic_path).

    Any OSError (disk full, permission) becomes one CatalogWriteError line starting with
    ``what``; the temp file is removed and an existing ``path`` is left untouched."""
    try:
        with atomic_path(path) as tmp:
            write_to(tmp)
    except OSError as error:
        raise CatalogWriteError(f"{what} ({_write_problem(error)})") from None


def _write_problem(error: OSError) -> str:
    if error.errno in (errno.ENOSPC, errno.EDQUOT):
        return "disk full"
    if error.errno == errno.EFBIG:
        return "file size limit reached"
    return error.strerror or str(error)


# ---------------------------------------------------------------------- values
def to_plain(value):
    """A row value as a JSON-exact Python scalar (numpy scalars unwrapped); strings are
    valid Unicode (a file name's undecodable bytes, kept by Python as lone surrogates,
    are written as \\xNN: no writer can encode them)."""
    if value is None or isinstance(value, bool):
        return value
    if isinstance(value, str):
        return _valid_unicode(value)
    if isinstance(value, (np.bool_,)):
        return bool(value)
    if isinstance(value, (int, np.integer)):
        return int(value)
    if isinstance(value, (float, np.floating)):
        return float(value)
    return str(value)


def _valid_unicode(text: str) -> str:
    try:
        text.encode("utf-8")
        return text
    except UnicodeEncodeError:
        return text.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")


def value_kind(value) -> str:
    if value is None:
        return "none"
    if isinstance(value, bool):
        return "bool"
    if isinstance(value, int):
        return "int"
    if isinstance(value, float):
        return "float"
    return "str"


def wider_kind(a: str, b: str) -> str:
    if {a, b} == {"bool", "float"} or {a, b} == {"bool", "int"}:
        return "float" if "float" in (a, b) else "int"
    return max(a, b, key=_KIND_ORDER.index)


# ---------------------------------------------------------------------- chunks
@dataclass
class ChunkInfo:
    """The first line of a chunk: what it covers and the shape of its values."""

    path: Path
    inputs: list[str]
    n_rows: int
    kinds: dict[str, str]
    widths: dict[str, int]
    flags: dict[str, int]


def _chunk_header(columns: Sequence[str], groups: dict[str, list[list]]) -> dict:
    kinds = {c: "none" for c in columns}
    widths = {c: 0 for c in columns}
    flags: dict[str, int] = {}
    flag_index = columns.index("flags") if "flags" in columns else None
    for rows in groups.values():
        for row in rows:
            for column, value in zip(columns, row):
                kinds[column] = wider_kind(kinds[column], value_kind(value))
                if isinstance(value, str):
                    widths[column] = max(widths[column], len(value.encode("utf-8")))
            if flag_index is not None:
                for flag in (row[flag_index] or "ok").split("|"):
                    flags[flag] = flags.get(flag, 0) + 1
    return {
        "format": CHUNK_FORMAT,
        "version": FORMAT_VERSION,
        "inputs": list(groups),
        "n_rows": sum(len(r) for r in groups.values()),
        "kinds": kinds,
        "widths": widths,
        "flags": flags,
        "columns": list(columns),
    }


def _read_chunk_header(path: Path) -> ChunkInfo | None:
    try:
        with open(path, encoding="utf-8") as handle:
            head = json.loads(handle.readline())
    except (OSError, ValueError):
        return None
    if head.get("format") != CHUNK_FORMAT:
        return None
    return ChunkInfo(
        path=path,
        inputs=head["inputs"],
        n_rows=head["n_rows"],
        kinds=head["kinds"],
        widths=head["widths"],
        flags=head["flags"],
    )


def _read_chunk_groups(path: Path) -> dict[str, list[list]]:
    with open(path, encoding="utf-8") as handle:
        handle.readline()
        groups = {}
        for line in handle:
            record = json.loads(line)
            groups[record["input"]] = record["rows"]
    return groups


# ------------------------------------------------------------------- workspace
class RunFolder:
    """The run folder next to the output: settings, lock, chunks, and the assembly."""

    def __init__(self, output: Path):
        self.output = Path(output)
        self.root = self.output.with_name(self.output.name + ".spemr-run")
        self.chunks_dir = self.root / "chunks"
        self.run_file = self.root / "run.json"
        self._lock_handle: IO[str] | None = None
        self._next_chunk = 0

    # ---------------------------------------------------------------- state
    def read_run(self) -> dict | None:
        try:
            return json.loads(self.run_file.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return None

    def write_run(self, record: dict) -> None:
        record = {"format": RUN_FORMAT, "version": FORMAT_VERSION, **record}
        self._guard(
            lambda: atomic_write(self.run_file, lambda f: json.dump(record, f, indent=1)), "cannot write the run record"
        )

    def is_finished(self, manifest: RunManifest) -> bool:
        """True when a finished run with the same settings made the output present now."""
        run = self.read_run()
        if not run or run.get("state") != "finished" or manifest.changes(run) != []:
            return False
        try:
            return self.output.stat().st_size == run.get("output_size")
        except OSError:
            return False

    # ----------------------------------------------------------------- open
    def open(self) -> None:
        """Create the folder and take the lock (refuses a second concurrent run)."""
        try:
            self.chunks_dir.mkdir(parents=True, exist_ok=True)
            handle = open(self.root / "lock", "a+")
        except OSError as error:
            raise CatalogWriteError(
                f"{self.output.name}: cannot create the run folder {self.root} ({_write_problem(error)})"
            ) from None
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            handle.close()
            raise SpemrError(f"{self.output.name}: another spemr catalog run is writing {self.root}") from None
        self._lock_handle = handle
        existing = [
            int(p.stem.split("-")[1]) for p in self.chunks_dir.glob("chunk-*.jsonl") if p.stem.split("-")[1].isdigit()
        ]
        self._next_chunk = max(existing, default=-1) + 1

    def in_use(self) -> bool:
        """True while another process holds this run folder's lock (a live run)."""
        if self._lock_handle is not None:
            return False
        try:
            handle = open(self.root / "lock", "a+")
        except OSError:
            return False
        with handle:
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError:
                return True
            fcntl.flock(handle, fcntl.LOCK_UN)
            return False

    def close(self) -> None:
        if self._lock_handle is not None:
            self._lock_handle.close()
            self._lock_handle = None

    def clear(self) -> None:
        """Remove chunks of an earlier run (a fresh, non-resumed start)."""
        for path in self.chunks_dir.glob("*"):
            path.unlink(missing_ok=True)
        self._next_chunk = 0

    # --------------------------------------------------------------- chunks
    def chunk_infos(self) -> list[ChunkInfo]:
        """Readable chunks, in name order (stray temp files are ignored)."""
        infos = (_read_chunk_header(p) for p in sorted(self.chunks_dir.glob("chunk-*.jsonl")))
        return [info for info in infos if info is not None]

    def done_inputs(self) -> set[str]:
        done: set[str] = set()
        for info in self.chunk_infos():
            done.update(info.inputs)
        return done

    def commit(self, columns: Sequence[str], groups: dict[str, list[dict]]) -> Path:
        """Atomically write one chunk holding every row of the given inputs."""
        plain = {name: [[to_plain(row.get(c)) for c in columns] for row in rows] for name, rows in groups.items()}
        header = _chunk_header(list(columns), plain)
        path = self.chunks_dir / f"chunk-{self._next_chunk:07d}.jsonl"

        def write(handle):
            handle.write(json.dumps(header) + "\n")
            for name, rows in plain.items():
                handle.write(json.dumps({"input": name, "rows": rows}) + "\n")

        self._guard(
            lambda: atomic_write(path, write),
            f"cannot write chunk {path.name}; the {len(self.done_inputs())} input "
            "files committed before it are kept (re-run with --resume)",
        )
        self._next_chunk += 1
        return path

    def _guard(self, action, what: str) -> None:
        try:
            action()
        except OSError as error:
            raise CatalogWriteError(f"{self.output.name}: {what} ({_write_problem(error)})") from None

    def remove_chunks(self) -> None:
        shutil.rmtree(self.chunks_dir, ignore_errors=True)

    # ------------------------------------------------------------- assembly
    def ordered_rows(self, order: Sequence[str], infos: Sequence[ChunkInfo], cache_size: int = 8) -> Iterator[list]:
        """Rows of ``order``'s inputs, in that order, reading chunks through a small
        LRU cache: memory stays bounded by ``cache_size`` chunks."""
        where: dict[str, Path] = {}
        for info in infos:
            for name in info.inputs:
                where.setdefault(name, info.path)
        cache: OrderedDict[Path, dict] = OrderedDict()
        for name in order:
            path = where.get(name)
            if path is None:
                raise SpemrError(f"{self.output.name}: no committed rows for {name}")
            if path not in cache:
                cache[path] = _read_chunk_groups(path)
                if len(cache) > cache_size:
                    cache.popitem(last=False)
            cache.move_to_end(path)
            yield from cache[path][name]


# --------------------------------------------------------------- table writers
@dataclass
class TableSchema:
    columns: list[str]
    kinds: dict[str, str]
    widths: dict[str, int]
    n_rows: int

    @classmethod
    def merge(cls, columns: Sequence[str], infos: Iterable[ChunkInfo]) -> "TableSchema":
        kinds = {c: "none" for c in columns}
        widths = {c: 1 for c in columns}
        n_rows = 0
        for info in infos:
            n_rows += info.n_rows
            for c in columns:
                kinds[c] = wider_kind(kinds[c], info.kinds.get(c, "none"))
                widths[c] = max(widths[c], info.widths.get(c, 0))
        # A column with no values at all (e.g. every row failed) is written as float NaN.
        kinds = {c: ("float" if k == "none" else k) for c, k in kinds.items()}
        return cls(list(columns), kinds, widths, n_rows)


def write_table(
    path: Path, fmt: str, schema: TableSchema, rows: Iterator[list], metadata: dict[str, object], batch_rows: int = 4096
) -> None:
    """Stream rows into ``path`` (a temp name; the caller renames it into place).
    ``metadata`` values are FITS header values (str, bool, float); Parquet stores them as text."""
    writer = {"csv": _write_csv, "parquet": _write_parquet, "fits": _write_fits}[fmt]
    writer(path, schema, rows, metadata, batch_rows)


def _batches(rows: Iterator[list], size: int) -> Iterator[list[list]]:
    batch = []
    for row in rows:
        batch.append(row)
        if len(batch) >= size:
            yield batch
            batch = []
    if batch:
        yield batch


CSV_TRUE, CSV_FALSE = "true", "false"


# Columns whose floats are read from the file's header: written as Python's shortest
# round-trip repr, which gives back the header's own digits. Every other float is computed
# from float32 data (network outputs, sigmas, RV, CCF peak, fit measures): written to
# CSV_DIGITS significant digits, which carry all of float32's ~7.2 digits and none of the
# float64 noise below them (4682.9717, not 4682.971700435736).
HEADER_FLOAT_COLUMNS = frozenset({"ra", "dec", "snr_blue", "snr_red"})
CSV_DIGITS = 8


def csv_float(value: "float | np.floating", column: str | None = None) -> str:
    """A float cell: shortest repr for header values, CSV_DIGITS significant digits for the
    rest; always reads back as a float ('1.0', not '1')."""
    value = float(value)
    if column in HEADER_FLOAT_COLUMNS or not math.isfinite(value):
        return repr(value)
    text = format(value, f".{CSV_DIGITS}g")
    return text if any(c in text for c in ".en") else text + ".0"


def csv_cell(value, kind: str | None = None, column: str | None = None) -> str:
    """The one CSV convention for catalog cells (`spemr predict`, `spemr catalog`, the
    app's exports): None -> empty, booleans -> true/false, floats by csv_float (``column``
    names the column), the rest as str. ``kind``: the column's kind when known ("float"
    writes an int or bool in a float column as a float)."""
    if value is None:
        return ""
    if kind == "float":
        return csv_float(value, column)
    if isinstance(value, (bool, np.bool_)):
        return CSV_TRUE if value else CSV_FALSE
    if isinstance(value, (float, np.floating)):
        return csv_float(value, column)
    return _valid_unicode(str(value))  # a non-UTF-8 file name stopped `spemr predict` (issue 11)


def _write_csv(path: Path, schema: TableSchema, rows, metadata, batch_rows) -> None:
    kinds = [schema.kinds[c] for c in schema.columns]
    with open(path, "w", encoding="utf-8", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(schema.columns)
        for row in rows:
            writer.writerow([csv_cell(v, k, c) for v, k, c in zip(row, kinds, schema.columns)])
        handle.flush()
        os.fsync(handle.fileno())


def _write_parquet(path: Path, schema: TableSchema, rows, metadata, batch_rows) -> None:
    pa, pq = require_pyarrow(path)
    types = {"bool": pa.bool_(), "int": pa.int64(), "float": pa.float64(), "str": pa.string()}
    arrow_schema = pa.schema(
        [(c, types[schema.kinds[c]]) for c in schema.columns],
        metadata={k.encode(): str(v).encode() for k, v in metadata.items()},
    )
    with pq.ParquetWriter(str(path), arrow_schema) as writer:
        for batch in _batches(rows, batch_rows):
            columns = list(zip(*batch))
            arrays = [
                pa.array([_coerce(v, schema.kinds[c]) for v in values], type=types[schema.kinds[c]])
                for c, values in zip(schema.columns, columns)
            ]
            writer.write_table(pa.Table.from_arrays(arrays, schema=arrow_schema))


def require_pyarrow(output: Path):
    try:
        import pyarrow as pa
        import pyarrow.parquet as pq
    except ImportError:
        raise SpemrError(
            f"{Path(output).name}: Parquet output needs pyarrow (pip install 'spemr[parquet]'), or choose .fits or .csv"
        ) from None
    return pa, pq


def _coerce(value, kind: str):
    if value is None:
        return None
    if kind == "float":
        return float(value)
    if kind == "int":
        return int(value)
    if kind == "str":
        return str(value)
    return bool(value)


# FITS binary tables are streamed by hand: astropy builds whole tables in memory.
_FITS_FORMATS = {"bool": ("L", "i1"), "int": ("K", ">i8"), "float": ("D", ">f8")}


def _fits_columns(schema: TableSchema):
    from astropy.io import fits

    columns, dtype = [], []
    for name in schema.columns:
        kind = schema.kinds[name]
        if kind == "str":
            width = max(1, schema.widths[name])
            columns.append(fits.Column(name=name, format=f"{width}A"))
            dtype.append((name, f"S{width}"))
        else:
            code, numpy_type = _FITS_FORMATS[kind]
            null = {"null": _FITS_INT_NULL} if kind == "int" else {}
            columns.append(fits.Column(name=name, format=code, **null))
            dtype.append((name, numpy_type))
    return columns, np.dtype(dtype)


def _fits_record(row: list, schema: TableSchema) -> tuple:
    out: list[bytes | int | float] = []
    for name, value in zip(schema.columns, row):
        kind = schema.kinds[name]
        if kind == "str":
            out.append(("" if value is None else str(value)).encode("utf-8"))
        elif kind == "bool":
            out.append(ord("T") if value else ord("F"))  # FITS nulls here would read as False anyway
        elif kind == "int":
            out.append(_FITS_INT_NULL if value is None else int(value))
        else:
            out.append(math.nan if value is None else float(value))
    return tuple(out)


def _write_fits(path: Path, schema: TableSchema, rows, metadata, batch_rows) -> None:
    from astropy.io import fits

    columns, dtype = _fits_columns(schema)
    table = fits.BinTableHDU.from_columns(columns, nrows=0, name="CATALOG")
    header = table.header
    header["NAXIS2"] = schema.n_rows
    for key, value in metadata.items():
        header[key[:8].upper()] = value
    block = 2880
    with open(path, "wb") as handle:
        handle.write(fits.PrimaryHDU().header.tostring().encode("ascii"))
        handle.write(header.tostring().encode("ascii"))
        written = 0
        for batch in _batches(rows, batch_rows):
            records = np.array([_fits_record(r, schema) for r in batch], dtype=dtype)
            handle.write(records.tobytes())
            written += len(batch)
        if written != schema.n_rows:
            raise SpemrError(f"{path.name}: {written} rows written, {schema.n_rows} expected")
        size = written * dtype.itemsize
        handle.write(b"\0" * ((-size) % block))
        handle.flush()
        os.fsync(handle.fileno())


# ---------------------------------------------------------------- reading back
def read_table(path: str | Path) -> dict[str, list]:
    """A written catalog as {column: values}, nulls as None (for tests, the GUI, tools).

    Reads the whole table: meant for catalogs that fit in memory."""
    path = Path(path)
    fmt = output_format(path)
    if fmt == "parquet":
        _, pq = require_pyarrow(path)
        return pq.read_table(str(path)).to_pydict()
    from astropy.table import Table

    table = Table.read(path, format="ascii.csv" if fmt == "csv" else "fits")
    out = {}
    for name in table.colnames:
        column = table[name]
        mask = np.ma.getmaskarray(column) if hasattr(column, "mask") else np.zeros(len(column), bool)
        values = [v.decode() if isinstance(v, bytes) else v for v in np.asarray(column).tolist()]
        values = [None if m else v for v, m in zip(values, mask)]
        # true/false, and True/False as catalogs before one convention wrote them
        if fmt == "csv" and values and {str(v).lower() for v in values if v is not None} <= {CSV_TRUE, CSV_FALSE}:
            values = [None if v is None else str(v).lower() == CSV_TRUE for v in values]
        out[name] = values
    return out
