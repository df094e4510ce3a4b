"""Load pickles from outside (published label_config.pkl, *_flux.pkl) without running
arbitrary code: only numpy arrays, numpy scalars/dtypes and plain containers are admitted."""
from __future__ import annotations

import io
import pickle
from pathlib import Path

from .errors import InputFileError

_ALLOWED = {
    ("numpy.core.multiarray", "_reconstruct"),
    ("numpy._core.multiarray", "_reconstruct"),
    ("numpy.core.multiarray", "scalar"),
    ("numpy._core.multiarray", "scalar"),
    ("numpy", "ndarray"),
    ("numpy", "dtype"),
    ("builtins", "list"), ("builtins", "dict"), ("builtins", "tuple"), ("builtins", "set"),
    ("builtins", "frozenset"), ("builtins", "bytearray"), ("builtins", "complex"),
    ("collections", "OrderedDict"),
    ("_codecs", "encode"),
}


class _RestrictedUnpickler(pickle.Unpickler):
    def find_class(self, module: str, name: str):
        if (module, name) in _ALLOWED:
            return super().find_class(module, name)
        raise pickle.UnpicklingError(f"refusing to load {module}.{name}")


def safe_loads(data: bytes):
    return _RestrictedUnpickler(io.BytesIO(data)).load()


def safe_load(path: str | Path):
    """Unpickle ``path`` admitting only numpy arrays and plain containers.

    Raises InputFileError naming the file for anything else (code objects, custom
    classes, truncated or corrupt data)."""
    path = Path(path)
    try:
        with open(path, "rb") as handle:
            return _RestrictedUnpickler(handle).load()
    except FileNotFoundError:
        raise InputFileError(path, "file not found") from None
    except pickle.UnpicklingError as error:
        raise InputFileError(path, f"not a safe pickle: {error}") from None
    except (EOFError, ValueError, TypeError, AttributeError, IndexError, KeyError) as error:
        raise InputFileError(path, f"corrupt or truncated pickle ({type(error).__name__}: {error})") from None
