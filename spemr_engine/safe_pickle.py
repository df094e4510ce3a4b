"""Load pickles from outside (published label_config.pkl, *_flux.pkl, atmosnet's network
files) without running arbitrary code: only numpy arrays, numpy scalars/dtypes and plain
containers are admitted."""
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


_UMATH_MODULES = {"numpy.core._multiarray_umath", "numpy._core._multiarray_umath"}
_UMATH_TOKEN = object()      # what the dill import below hands out instead of a module


def _numpy_reconstruct():
    try:
        from numpy._core.multiarray import _reconstruct
    except ImportError:  # numpy 1.x
        from numpy.core.multiarray import _reconstruct
    return _reconstruct


class _DillArrayUnpickler(_RestrictedUnpickler):
    """dill pickles (atmosnet's networks) reach numpy's array reconstructor through two
    dill helpers: import numpy's umath module, then take its ``_reconstruct``. Stand-ins
    allow exactly that path, so dill is never needed and nothing else can be reached."""

    def find_class(self, module: str, name: str):
        if module == "dill._dill" and name == "_import_module":
            return self._import_umath_only
        if module == "dill._dill" and name == "_get_attr":
            return self._reconstruct_only
        return super().find_class(module, name)

    @staticmethod
    def _import_umath_only(name, safe=False):
        if name in _UMATH_MODULES:
            return _UMATH_TOKEN
        raise pickle.UnpicklingError(f"refusing to import module {name}")

    @staticmethod
    def _reconstruct_only(obj, name):
        if obj is _UMATH_TOKEN and name == "_reconstruct":
            return _numpy_reconstruct()
        raise pickle.UnpicklingError(f"refusing to read attribute {name}")


def safe_loads(data: bytes):
    return _RestrictedUnpickler(io.BytesIO(data)).load()


def safe_load(path: str | Path, dill_arrays: bool = False):
    """Unpickle ``path`` admitting only numpy arrays and plain containers; with
    ``dill_arrays`` also dill's way of reaching numpy's array reconstructor (and nothing
    else dill can do).

    Raises InputFileError naming the file for anything else (code objects, custom
    classes, truncated or corrupt data)."""
    path = Path(path)
    unpickler = _DillArrayUnpickler if dill_arrays else _RestrictedUnpickler
    try:
        with open(path, "rb") as handle:
            return unpickler(handle).load()
    except FileNotFoundError:
        raise InputFileError(path, "file not found") from None
    except pickle.UnpicklingError as error:
        raise InputFileError(path, f"not a safe pickle: {error}") from None
    except (EOFError, ValueError, TypeError, AttributeError, IndexError, KeyError) as error:
        raise InputFileError(path, f"corrupt or truncated pickle ({type(error).__name__}: {error})") from None
