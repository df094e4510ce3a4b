"""The one copy of two small jobs every writer of the engine (and the GUI) needs:

- ``atomic_path`` / ``atomic_write``: write a file so that a crash or a full disk leaves
  either the old file or the complete new one, never half of one: write to a temporary
  file next to it, fsync it, rename it over the target, fsync the folder (so the rename
  itself survives a power cut).
- ``plain``: a plain-Python copy of a value (numpy scalars and arrays, paths, tuples) that
  ``json.dumps(..., allow_nan=False)`` writes, for manifests, reports and progress files.
"""

from __future__ import annotations

import json
import math
import os
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Any, Callable, Iterator, Mapping

import numpy as np


# ----------------------------------------------------------------- atomic files
def fsync_dir(folder: str | Path) -> None:
    """Force a folder's entries (a rename into it) to disk; a no-op where folders cannot
    be opened (Windows) or fsynced."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _fsync_file(path: Path) -> None:
    fd = os.open(path, os.O_RDWR)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


@contextmanager
def atomic_path(path: str | Path, suffix: str | None = None) -> Iterator[Path]:
    """Yield a temporary path to write ``path``'s new content to (by any writer: torch,
    safetensors, numpy, astropy); when the block ends the file is fsynced and renamed
    over ``path`` and the folder fsynced. On any error the temporary file is removed
    and ``path`` is left as it was.

    The temporary file is ``.NAME.tmp-PID`` (hidden, one per process), or ``NAME + suffix``
    where a folder's reader already knows that name (the synthetic-grid builder cleans
    ``*.part`` files a killed run left)."""
    path = Path(path)
    tmp = path.with_name(path.name + suffix) if suffix else path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        yield tmp
        _fsync_file(tmp)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    fsync_dir(path.parent)


def atomic_write(path: str | Path, write: Callable[[IO], Any], binary: bool = False, suffix: str | None = None) -> None:
    """Have ``write(handle)`` write ``path``'s new content to an open temporary file
    (text, UTF-8, no newline translation; or binary), then put it in place atomically."""
    with atomic_path(path, suffix) as tmp:
        if binary:
            with open(tmp, "wb") as handle:
                write(handle)
        else:
            with open(tmp, "w", encoding="utf-8", newline="") as handle:
                write(handle)


def atomic_write_text(path: str | Path, text: str, suffix: str | None = None) -> None:
    atomic_write(path, lambda handle: handle.write(text), suffix=suffix)


def atomic_write_json(path: str | Path, data: Any, indent: int | None = 1, suffix: str | None = None) -> None:
    """``data`` as strict JSON (see ``plain``), written atomically."""
    atomic_write_text(path, json.dumps(plain(data), indent=indent, allow_nan=False) + "\n", suffix)


# ------------------------------------------------------------------ plain values
def plain(value: Any, for_json: bool = True) -> Any:
    """A plain-Python copy of ``value``: mappings to dicts with str keys, lists, tuples and
    arrays to lists, numpy scalars to Python ones, paths to str.

    for_json (the default): NaN and inf become None, since manifests and reports are
    strict JSON, and any other object is returned as it is (json.dumps then says what it
    cannot write). Otherwise (values handed to another process, e.g. to the GUI)
    non-finite floats are kept and unknown objects become their str."""
    if isinstance(value, Mapping):
        return {str(k): plain(v, for_json) for k, v in value.items()}
    if isinstance(value, np.ndarray):
        value = value.tolist()
    if isinstance(value, (list, tuple)):
        return [plain(v, for_json) for v in value]
    if isinstance(value, np.generic):
        value = value.item()
        return None if for_json and isinstance(value, float) and not math.isfinite(value) else value
    if isinstance(value, Path):
        return str(value)
    if isinstance(value, float):
        return None if for_json and not math.isfinite(value) else value
    if value is None or isinstance(value, (bool, int, str)) or for_json:
        return value
    return str(value)
