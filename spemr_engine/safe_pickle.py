"""Load pickles from outside (published label_config.pkl, *_flux.pkl, atmosnet's network
files) without running arbitrary code: only numpy arrays, numpy scalars/dtypes and plain
containers are admitted.

Bounded too: constructors that allocate from a number (``bytearray(10**11)``, an empty
array of a huge shape) are refused above MAX_ALLOCATION bytes, and what was loaded is
measured as the tree that printing or walking it would visit (containers shared through
the pickle memo can make that exponential in the file size): above MAX_TREE_WEIGHT or
MAX_DEPTH it is refused."""

from __future__ import annotations

import io
import math
import os
import pickle
from pathlib import Path

import numpy as np

from .errors import InputFileError

MAX_ALLOCATION = 2**30  # bytes one constructor may allocate beyond the file's own data
MAX_TREE_WEIGHT = 10**8  # elements (+ characters of strings) when walked as a tree
MAX_DEPTH = 200  # nesting of containers
MAX_OPCODES = 10**6  # pickle operations: each makes at most one object

_ALLOWED = {
    ("numpy.core.multiarray", "_reconstruct"),
    ("numpy._core.multiarray", "_reconstruct"),
    ("numpy.core.multiarray", "scalar"),
    ("numpy._core.multiarray", "scalar"),
    ("numpy", "ndarray"),
    ("numpy", "dtype"),
    ("builtins", "list"),
    ("builtins", "dict"),
    ("builtins", "tuple"),
    ("builtins", "set"),
    ("builtins", "frozenset"),
    ("builtins", "bytearray"),
    ("builtins", "complex"),
    ("collections", "OrderedDict"),
    ("_codecs", "encode"),
}


def _bounded_bytearray(*args):
    if args and isinstance(args[0], int) and not 0 <= args[0] <= MAX_ALLOCATION:
        raise pickle.UnpicklingError(f"refusing bytearray({args[0]}): over {MAX_ALLOCATION} bytes")
    return bytearray(*args)


def _check_allocation(shape, dtype) -> None:
    try:
        dims = [int(shape)] if isinstance(shape, (int, np.integer)) else [int(n) for n in shape]
        itemsize = np.dtype(dtype).itemsize if dtype is not None else 8
    except (TypeError, ValueError, OverflowError):
        return  # numpy itself refuses it below
    if any(n < 0 for n in dims) or math.prod(dims) * max(itemsize, 1) > MAX_ALLOCATION:
        raise pickle.UnpicklingError(f"refusing an array of shape {tuple(dims)[:8]}: over {MAX_ALLOCATION} bytes")


def _bounded_ndarray(shape, dtype=float, *args, **kwargs):
    _check_allocation(shape, dtype)
    return np.ndarray(shape, dtype, *args, **kwargs)


def _bounded_reconstruct(subtype, shape, dtype):
    if subtype is _bounded_ndarray:  # what find_class hands out for numpy.ndarray
        subtype = np.ndarray
    if subtype is not np.ndarray:
        raise pickle.UnpicklingError(f"refusing to reconstruct {subtype!r:.60}")
    _check_allocation(shape, dtype)
    return _numpy_reconstruct()(subtype, shape, dtype)


def _latin1_encode(text, encoding="utf-8", errors="strict"):
    """numpy's protocol-2 pickles store bytes as ``_codecs.encode(text, 'latin1')``."""
    import codecs

    if str(encoding).lower().replace("-", "").replace("_", "") not in ("latin1", "iso88591"):
        raise pickle.UnpicklingError(f"refusing _codecs.encode with encoding {encoding!r}")
    return codecs.encode(text, encoding, errors)


_BOUNDED = {
    ("builtins", "bytearray"): _bounded_bytearray,
    ("numpy", "ndarray"): _bounded_ndarray,
    ("numpy.core.multiarray", "_reconstruct"): _bounded_reconstruct,
    ("numpy._core.multiarray", "_reconstruct"): _bounded_reconstruct,
    ("_codecs", "encode"): _latin1_encode,
}


def _counted(handler):
    def run(self):
        self.n_opcodes += 1
        if self.n_opcodes > MAX_OPCODES:
            raise pickle.UnpicklingError(
                f"over {MAX_OPCODES:.0e} pickle operations (numpy arrays and label lists need a few hundred)"
            )
        handler(self)

    return run


class _BoundedFile:
    """The pickle's file for the unpickler: a read past its end fails at once, without
    allocating the length the pickle claims (a BINBYTES8 of 10**11 bytes)."""

    def __init__(self, handle, size: int):
        self.handle, self.size = handle, size

    def read(self, n: int = -1) -> bytes:
        if n is not None and n > self.size - self.handle.tell():
            raise pickle.UnpicklingError("pickle data was truncated")
        return self.handle.read(n)

    def readinto(self, buffer) -> int:
        if len(buffer) > self.size - self.handle.tell():
            raise pickle.UnpicklingError("pickle data was truncated")
        return self.handle.readinto(buffer)

    def readline(self) -> bytes:
        return self.handle.readline()


class _RestrictedUnpickler(pickle._Unpickler):
    """The Python unpickler (its opcodes can be counted: the C one created 45 million
    empty lists from a 45 MB file, 9.7 GB, before anything could be checked)."""

    dispatch = {code: _counted(handler) for code, handler in pickle._Unpickler.dispatch.items()}

    def __init__(self, file, *args, **kwargs):
        super().__init__(file, *args, **kwargs)
        self.n_opcodes = 0

    def find_class(self, module: str, name: str):
        if (module, name) in _BOUNDED:
            return _BOUNDED[(module, name)]
        if (module, name) in _ALLOWED:
            return super().find_class(module, name)
        raise pickle.UnpicklingError(f"refusing to load {module}.{name}")


_UMATH_MODULES = {"numpy.core._multiarray_umath", "numpy._core._multiarray_umath"}
_UMATH_TOKEN = object()  # what the dill import below hands out instead of a module


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
            return _bounded_reconstruct
        raise pickle.UnpicklingError(f"refusing to read attribute {name}")


def tree_problem(value) -> str | None:
    """Why ``value`` is too big to walk or print, or None. Each container's weight is
    computed once (by id), so this is linear in the objects there are even when the
    tree they unfold into, which str() or a recursive walk visits, is exponential."""
    weight: dict[int, int] = {}
    stack = [(value, 1, False)]
    while stack:
        obj, depth, expanded = stack.pop()
        key = id(obj)
        if key in weight and not expanded:
            continue
        children = _children(obj)
        if children is None:
            weight[key] = 1 + (len(obj) if isinstance(obj, (str, bytes, bytearray)) else 0)
            continue
        if depth > MAX_DEPTH:
            return f"containers nested more than {MAX_DEPTH} deep"
        if not expanded:
            weight.setdefault(key, -1)  # in progress
            stack.append((obj, depth, True))
            stack.extend((child, depth + 1, False) for child in children if id(child) not in weight)
            continue
        total = 1 + sum(max(weight.get(id(child), 1), 1) for child in children)
        if total > MAX_TREE_WEIGHT:
            return (
                f"its containers unfold into over {MAX_TREE_WEIGHT:.0e} elements (nested containers shared many times)"
            )
        weight[key] = total
    return None


def _children(obj):
    if isinstance(obj, dict):
        return [*obj.keys(), *obj.values()]
    if isinstance(obj, (list, tuple, set, frozenset)):
        return list(obj)
    if isinstance(obj, np.ndarray) and obj.dtype == object:
        return list(obj.ravel())
    return None


def _checked(value, path: str | Path):
    problem = tree_problem(value)
    if problem:
        raise InputFileError(path, f"not a safe pickle: {problem}")
    return value


# What a truncated, corrupt or hostile pickle raises inside the restricted unpickler.
_CORRUPT_PICKLE = (
    EOFError,
    ValueError,
    TypeError,
    AttributeError,
    IndexError,
    KeyError,
    OverflowError,
    MemoryError,
    RecursionError,
)


def safe_loads(data: bytes, name: str = "<pickle>"):
    try:
        return _checked(_RestrictedUnpickler(_BoundedFile(io.BytesIO(data), len(data))).load(), name)
    except pickle.UnpicklingError as error:
        raise InputFileError(name, f"not a safe pickle: {error}") from None
    except _CORRUPT_PICKLE as error:
        raise InputFileError(name, f"corrupt or truncated pickle ({type(error).__name__}: {error})") from None


def safe_load(path: str | Path, dill_arrays: bool = False):
    """Unpickle ``path`` admitting only numpy arrays and plain containers; with
    ``dill_arrays`` also dill's way of reaching numpy's array reconstructor (and nothing
    else dill can do).

    Raises InputFileError naming the file for anything else (code objects, custom
    classes, truncated or corrupt data, a folder or device instead of a file, data too
    large or too deeply shared to walk)."""
    import stat

    path = Path(path)
    unpickler = _DillArrayUnpickler if dill_arrays else _RestrictedUnpickler
    try:
        info = os.stat(path)
        if stat.S_ISDIR(info.st_mode):
            raise InputFileError(path, "is a folder, not a pickle file")
        if not stat.S_ISREG(info.st_mode):
            raise InputFileError(path, "is not a regular file (FIFO, device or socket); refusing to read it")
        with open(path, "rb") as handle:
            value = unpickler(_BoundedFile(handle, info.st_size)).load()
    except FileNotFoundError:
        raise InputFileError(path, "file not found") from None
    except pickle.UnpicklingError as error:
        raise InputFileError(path, f"not a safe pickle: {error}") from None
    except OSError as error:
        raise InputFileError(path, f"cannot be read ({error.strerror or error})") from None
    except _CORRUPT_PICKLE as error:
        raise InputFileError(path, f"corrupt or truncated pickle ({type(error).__name__}: {error})") from None
    return _checked(value, path)
