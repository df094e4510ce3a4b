"""LAMOST medium-resolution (MRS) spectrum reader.

One call, :func:`read_mrs`, turns a ``med-*.fits`` / ``.fits.gz`` file into an
:class:`MRSFile`: header metadata plus every blue/red arm pair (the coadd and each
single exposure), with vacuum wavelengths sorted ascending, flux, inverse variance and
a boolean bad-pixel mask. Anything that is not a readable MRS file is refused with one
:class:`~spemr_engine.errors.InputFileError` line naming the file and the problem.

The whole file is read into memory and (for ``.gz`` / ``.bz2``) decompressed before
astropy parses it: MRS files are a few MB, and this way a truncated or corrupt file
fails here, loudly, instead of later through astropy's lazy loading. Reading is bounded:
only regular files (no FIFO, device or socket), at most MAX_FILE_BYTES on disk and
MAX_FITS_BYTES once decompressed (decompression stops at the limit), and headers are
checked against the FITS standard's limits before any table is built from them.
"""

from __future__ import annotations

import bz2
import io
import os
import re
import stat
import warnings
import zlib
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from astropy.io import fits

from ..errors import InputFileError

FITS_BLOCK = 2880
_GZIP_MAGIC = b"\x1f\x8b"
_BZIP2_MAGIC = b"BZh"
# Real MRS files are 0.4-4 MB (1-10 MB decompressed); these limits keep memory bounded
# (astropy needs a few times the file size) whatever a file declares.
MAX_FILE_BYTES = 64 * 2**20
MAX_FITS_BYTES = 64 * 2**20
_MAX_TFIELDS = 999  # FITS standard, section 7.2.1
_MAX_NAXIS = 999
_MAX_PRIMARY_BYTES = 4 * 2**20  # MRS: none; LRS (refused with its own message): ~80 kB
_COADD_RE = re.compile(r"^COADD_([BR])$")
_EXPOSURE_RE = re.compile(r"^([BR])-(\d+)$")
# Plausible optical range (Angstrom): a wavelength column outside it was misread.
_WAVE_RANGE = (3000.0, 11000.0)

# meta key -> (header keyword, converter)
_META_KEYS = {
    "obsid": ("OBSID", int),
    "filename": ("FILENAME", str),
    "ra": ("RA", float),
    "dec": ("DEC", float),
    "designation": ("DESIG", str),
    "objname": ("OBJNAME", str),
    "objtype": ("OBJTYPE", str),
    "lmjd": ("LMJD", int),
    "mjd": ("MJD", int),
    "planid": ("PLANID", str),
    "spid": ("SPID", int),
    "fiberid": ("FIBERID", int),
    "data_release": ("DATA_V", str),
    "helio": ("HELIO", bool),
    "helio_rv": ("HELIO_RV", float),
    "vacuum": ("VACUUM", bool),
    "nexp_b": ("NEXP_B", int),
    "nexp_r": ("NEXP_R", int),
    "combin_b": ("COMBIN_B", bool),
    "combin_r": ("COMBIN_R", bool),
    "magtype": ("MAGTYPE", str),
    "mag": ("MAG1", float),
}
_NO_MAGNITUDE = 99.0
LRS_PROBLEM = (
    "is a LAMOST low-resolution (LRS) spectrum, not a medium-resolution (MRS) file: SPEMR needs med-*.fits files"
)


# ------------------------------------------------------------------ data types
@dataclass
class Arm:
    """One arm (blue or red) of one spectrum: coadd or a single exposure."""

    extname: str
    side: str
    wave: np.ndarray
    flux: np.ndarray
    ivar: np.ndarray
    mask: np.ndarray
    snr: float
    exptime: float | None
    lmjm: int | None
    # Pixels with no usable measurement (see pixel_masks); None means "same as mask".
    unusable: np.ndarray | None = None

    @property
    def n_pixels(self) -> int:
        return int(self.wave.size)


@dataclass
class ArmPair:
    """A blue and a red arm taken together: the unit the model reads."""

    blue: Arm
    red: Arm
    lmjm: int | None

    @property
    def is_coadd(self) -> bool:
        return self.lmjm is None

    @property
    def extname_blue(self) -> str:
        return self.blue.extname

    @property
    def extname_red(self) -> str:
        return self.red.extname

    @property
    def snr_blue(self) -> float:
        return self.blue.snr

    @property
    def snr_red(self) -> float:
        return self.red.snr

    @property
    def label(self) -> str:
        return "coadd" if self.is_coadd else str(self.lmjm)


@dataclass
class MRSFile:
    """Everything read from one MRS file."""

    path: Path
    meta: dict
    pairs: list[ArmPair]
    unpaired: list[Arm] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)

    @property
    def coadd(self) -> ArmPair | None:
        return next((p for p in self.pairs if p.is_coadd), None)

    @property
    def exposures(self) -> list[ArmPair]:
        return [p for p in self.pairs if not p.is_coadd]

    def select(self, exposure: str | int = "coadd") -> list[ArmPair]:
        """Pairs for ``exposure``: "coadd", "all", or one exposure's LMJM.

        Raises InputFileError when the file has no such pair, so callers can report it
        per file instead of silently analysing nothing."""
        choice = str(exposure).strip().lower()
        if choice == "all":
            return list(self.pairs)
        if choice == "coadd":
            if self.coadd is None:
                raise InputFileError(self.path, "has no coadd pair (COADD_B + COADD_R)")
            return [self.coadd]
        chosen = [p for p in self.exposures if p.label == choice]
        if not chosen:
            available = ", ".join(["coadd"] * (self.coadd is not None) + [p.label for p in self.exposures]) or "none"
            raise InputFileError(self.path, f"has no exposure {exposure!r} (available: {available})")
        return chosen


# ------------------------------------------------------------------ public API
def read_mrs(path: str | Path) -> MRSFile:
    """Read a LAMOST MRS file (.fits, .fits.gz or .fits.bz2); raise InputFileError if unusable."""
    path = Path(path)
    raw = _read_bytes(path)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            with fits.open(io.BytesIO(raw), memmap=False, lazy_load_hdus=False) as hdul:
                return _parse(path, hdul, raw)
        except InputFileError:
            raise
        except (MemoryError, RecursionError):
            raise InputFileError(
                path, "cannot be read as FITS (its headers describe more data than an MRS file holds)"
            ) from None
        except Exception as error:  # astropy's VerifyError, ValueError, ... on hostile headers
            problem = _truncation_problem(caught, len(raw), error) or f"cannot be read as FITS ({_short(error)})"
            raise InputFileError(path, problem) from None


def read_mrs_meta(path: str | Path) -> dict:
    """Primary-header metadata only (obsid, ra, dec, ...), reading just the first few kB.

    For scanning large folders (e.g. cross-matching positions) before reading the
    matching files in full with :func:`read_mrs`, which does all the integrity checks."""
    path = Path(path)
    head = _read_bytes(path, limit=_META_BYTES, whole=False)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            header = fits.Header.fromstring(_first_header(path, head))
            image = header.get("NAXIS", 0) == 2
        except InputFileError:
            raise
        except Exception as error:  # astropy's VerifyError, ValueError, ... on hostile headers
            raise InputFileError(path, f"cannot be read as FITS ({_short(error)})") from None
    if image or str(header.get("FILENAME", "")).strip().lower().startswith("spec-"):
        raise InputFileError(path, LRS_PROBLEM)
    return _metadata(header, path)


# ------------------------------------------------------------------- file bytes
_META_BYTES = 64 * FITS_BLOCK  # a primary header is a few blocks; enough to find END


def _read_bytes(path: Path, limit: int = MAX_FITS_BYTES, whole: bool = True) -> bytes:
    """The file's bytes, decompressed; refuses missing, empty, non-regular, oversized,
    non-FITS and bad gzip/bzip2 files. ``whole=False`` returns only the first ``limit``
    bytes (decompressing no further), for reading the primary header."""
    try:
        info = os.stat(path)
    except FileNotFoundError:
        raise InputFileError(path, "file not found") from None
    except (OSError, ValueError) as error:  # name too long, symlink loop, permissions, NUL
        raise InputFileError(path, f"cannot be read ({_os_problem(error)})") from None
    if stat.S_ISDIR(info.st_mode):
        raise InputFileError(path, "is a folder, not a FITS file")
    if not stat.S_ISREG(info.st_mode):
        raise InputFileError(path, f"is not a regular file ({_file_kind(info.st_mode)}); refusing to read it")
    if whole and info.st_size > MAX_FILE_BYTES:
        raise InputFileError(
            path,
            f"is too large for an MRS file ({info.st_size / 2**20:.0f} MB; "
            f"MRS files are a few MB, the limit is {MAX_FILE_BYTES // 2**20} MB)",
        )
    try:
        # O_NONBLOCK: a FIFO swapped in after the check above cannot block the open.
        descriptor = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0))
        with os.fdopen(descriptor, "rb") as handle:
            if not stat.S_ISREG(os.fstat(handle.fileno()).st_mode):
                raise InputFileError(path, "is not a regular file; refusing to read it")
            raw = handle.read(MAX_FILE_BYTES + 1 if whole else limit)
    except OSError as error:
        raise InputFileError(path, f"cannot be read ({_os_problem(error)})") from None
    if len(raw) > MAX_FILE_BYTES:
        raise InputFileError(path, f"is too large for an MRS file (over {MAX_FILE_BYTES // 2**20} MB)")
    if raw[:2] == _GZIP_MAGIC:
        raw = _decompress(path, raw, "gzip", limit, whole)
    elif raw[:3] == _BZIP2_MAGIC:
        raw = _decompress(path, raw, "bzip2", limit, whole)
    if not raw:
        raise InputFileError(path, "is empty")
    if not raw.startswith(b"SIMPLE  ="):
        raise InputFileError(path, f"is not a FITS file (starts with {_preview(raw)})")
    return raw


def _os_problem(error: Exception) -> str:
    return getattr(error, "strerror", None) or _short(error)


def _file_kind(mode: int) -> str:
    for test, kind in (
        (stat.S_ISFIFO, "a FIFO"),
        (stat.S_ISCHR, "a character device"),
        (stat.S_ISBLK, "a block device"),
        (stat.S_ISSOCK, "a socket"),
    ):
        if test(mode):
            return kind
    return "not a plain file"


def _decompressor(kind: str):
    return zlib.decompressobj(wbits=31) if kind == "gzip" else bz2.BZ2Decompressor()


def _decompress(path: Path, raw: bytes, kind: str, limit: int, whole: bool) -> bytes:
    """Streamed decompression of every member/stream, stopping at ``limit`` bytes out:
    a small file of compressed zeros cannot grow to gigabytes."""
    out = bytearray()
    data = raw
    try:
        while data:
            engine = _decompressor(kind)
            if kind == "gzip":
                out += engine.decompress(data, limit + 1 - len(out))
                pending, finished, data = engine.unconsumed_tail, engine.eof, engine.unused_data
            else:
                out += engine.decompress(data, limit + 1 - len(out))
                pending, finished = (b"" if engine.needs_input or engine.eof else b"?"), engine.eof
                data = engine.unused_data
            if len(out) > limit or pending:
                if not whole:
                    return bytes(out[:limit])
                raise InputFileError(
                    path, f"decompresses to more than {limit // 2**20} MB (MRS files are a few MB): refusing to read it"
                )
            if not finished:
                if not whole:
                    return bytes(out)
                raise InputFileError(path, f"truncated {kind} file (compressed data ends early)")
            if not data.strip(b"\0"):  # trailing zero padding, as gzip tolerates
                break
            magic = _GZIP_MAGIC if kind == "gzip" else _BZIP2_MAGIC
            if not data.startswith(magic):
                raise InputFileError(path, f"corrupt {kind} data (unexpected bytes after the compressed stream)")
    except (OSError, ValueError, EOFError, zlib.error) as error:
        raise InputFileError(path, f"corrupt {kind} data ({_short(error)})") from None
    return bytes(out)


def _first_header(path: Path, head: bytes) -> str:
    """The primary header's text (up to END) from the first bytes of a file."""
    for start in range(0, len(head) - 79, 80):
        if head[start : start + 8] == b"END     ":
            return head[: start + 80].decode("ascii", errors="replace")
    raise InputFileError(path, "truncated or corrupt FITS file (the primary header has no END card)")


def _preview(raw: bytes) -> str:
    text = raw[:16].decode("ascii", errors="replace")
    return repr("".join(c if c.isprintable() else "?" for c in text))


def _short(error: Exception) -> str:
    text = " ".join(str(error).split()).replace(", fix it first with .verify('fix').", "")
    return text[:160] or type(error).__name__


def _truncation_problem(caught: list, size: int, error: Exception) -> str | None:
    """Why astropy failed, when the cause is a file cut short."""
    if size % FITS_BLOCK:
        return f"truncated FITS file ({size} bytes is not a whole number of 2880-byte blocks)"
    if "END card" in str(error):
        return "truncated or corrupt FITS file (a header has no END card)"
    for warning in caught:
        if "truncat" in str(warning.message).lower():
            return "truncated FITS file (data ends before the headers say it should)"
    return None


# ------------------------------------------------------------------ FITS parsing
def _parse(path: Path, hdul: fits.HDUList, raw: bytes) -> MRSFile:
    if not isinstance(hdul[0], fits.PrimaryHDU):
        raise InputFileError(path, "is not a standard FITS file (primary header has SIMPLE = F or is malformed)")
    _check_headers(path, hdul)
    _check_complete(path, hdul, len(raw))
    hdul.readall()
    header = hdul[0].header
    arm_hdus = [(hdu, ident) for hdu in hdul[1:] if (ident := _arm_identity(hdu.name)) is not None]
    if not arm_hdus:
        raise InputFileError(path, _not_mrs_reason(hdul))
    notes: list[str] = []
    air = header.get("VACUUM") is False
    if air:
        notes.append("VACUUM = F: wavelengths converted from air to vacuum")
    arms = [_read_arm(path, hdu, raw, side, lmjm, air, notes) for hdu, (side, lmjm) in arm_hdus]
    pairs, unpaired = _pair_arms(arms, notes)
    notes.extend(_exposure_count_notes(header, arms))
    return MRSFile(path=path, meta=_metadata(header, path), pairs=pairs, unpaired=unpaired, warnings=notes)


def _check_headers(path: Path, hdul: fits.HDUList) -> None:
    """Structural keywords within the FITS standard's limits, before astropy builds
    anything from them (TFIELDS = 10**9 in a 1 MB file made it allocate 8 GB)."""
    for index, hdu in enumerate(hdul):
        header, name = hdu.header, hdu.name or str(index)
        for keyword, top in (("NAXIS", _MAX_NAXIS), ("TFIELDS", _MAX_TFIELDS)):
            value = header.get(keyword, 0)
            if not isinstance(value, int) or isinstance(value, bool) or not 0 <= value <= top:
                raise InputFileError(
                    path, f"extension {name}: {keyword} = {value!r} is outside the FITS standard's 0-{top}"
                )
        for keyword in [f"NAXIS{i}" for i in range(1, header.get("NAXIS", 0) + 1)] + ["PCOUNT", "GCOUNT"]:
            value = header.get(keyword, 1 if keyword == "GCOUNT" else 0)
            if not isinstance(value, int) or isinstance(value, bool) or value < 0:
                raise InputFileError(path, f"extension {name}: {keyword} = {value!r} is not a non-negative integer")
        if header.get("BITPIX", 8) not in (8, 16, 32, 64, -32, -64):
            raise InputFileError(path, f"extension {name}: BITPIX = {header.get('BITPIX')!r} is not a FITS value")
    primary = _data_bytes(hdul[0].header)
    if primary > _MAX_PRIMARY_BYTES:
        raise InputFileError(
            path,
            f"primary HDU holds {primary / 2**20:.0f} MB of image data: not an "
            "MRS file (MRS spectra are table extensions; primary has no data)",
        )


def _check_complete(path: Path, hdul: fits.HDUList, raw_size: int) -> None:
    """Every HDU's data must lie inside the file: astropy reads short data without
    complaint, so compare the sizes the headers declare with the bytes there are."""
    for hdu in hdul:
        info = hdu.fileinfo()
        if info is None:
            continue
        end = info["datLoc"] + _data_bytes(hdu.header)
        if end > raw_size:
            raise InputFileError(
                path, f"truncated FITS file (extension {hdu.name or 0} needs {end} bytes, file has {raw_size})"
            )
    declared = hdul[0].header.get("N_EXTEN")
    if isinstance(declared, int) and 0 < len(hdul) < declared:
        raise InputFileError(path, f"truncated FITS file (header N_EXTEN = {declared}, found only {len(hdul)} HDUs)")


def _data_bytes(header) -> int:
    """Size of an HDU's data as its header declares it (FITS standard, eq. 2)."""
    naxis = int(header.get("NAXIS", 0))
    if naxis == 0:
        return 0
    n_values = int(np.prod([int(header.get(f"NAXIS{i}", 0)) for i in range(1, naxis + 1)]))
    bytes_per_value = abs(int(header.get("BITPIX", 8))) // 8
    return bytes_per_value * int(header.get("GCOUNT", 1)) * (int(header.get("PCOUNT", 0)) + n_values)


def _arm_identity(extname: str) -> tuple[str, int | None] | None:
    name = extname.strip().upper()
    coadd = _COADD_RE.match(name)
    if coadd:
        return coadd.group(1), None
    exposure = _EXPOSURE_RE.match(name)
    if exposure:
        return exposure.group(1), int(exposure.group(2))
    return None


def _not_mrs_reason(hdul: fits.HDUList) -> str:
    header = hdul[0].header
    filename = str(header.get("FILENAME", "")).strip().lower()
    primary_image = hdul[0].header.get("NAXIS", 0) == 2
    lamost = "LAMOST" in str(header.get("AUTHOR", "")) + str(header.get("TELESCOP", ""))
    lrs_layout = primary_image or any(h.name.strip().upper() == "COADD" for h in hdul[1:])
    if filename.startswith("spec-") or (lamost and lrs_layout):
        return LRS_PROBLEM
    names = ", ".join(h.name or "?" for h in hdul) or "none"
    return f"is not a LAMOST MRS file: no COADD_B/COADD_R or B-<lmjm>/R-<lmjm> extensions (found HDUs: {names})"


# ------------------------------------------------------------------ table bytes
class _ArmTable:
    """One arm's binary table: column lookup by upper-case name, values as arrays.

    Plain tables are read straight from the file bytes with a numpy structured dtype
    built from TFORMn (one vectorised view, no astropy column objects, which cost more
    than everything else together); anything unusual (scaled columns, heap arrays)
    goes through astropy."""

    def __init__(self, path: Path, hdu, raw: bytes):
        self.path, self.extname = path, hdu.name.strip()
        if not isinstance(hdu, fits.BinTableHDU):
            raise InputFileError(path, f"extension {self.extname} is not a binary table")
        records = _records_from_bytes(hdu, raw)
        if records is not None:
            assert records.dtype.names is not None  # a structured dtype built from TFORMn
            names, fetch = list(records.dtype.names), records.__getitem__
        else:
            data = hdu.data
            names, fetch = list(hdu.columns.names), (lambda name: np.asarray(data.field(name)))
        self.names = names
        self._by_upper = {n.upper(): n for n in names}
        self._fetch = fetch

    def has(self, name: str) -> bool:
        return name in self._by_upper

    def raw(self, name: str) -> np.ndarray:
        return np.asarray(self._fetch(self._by_upper[name]))

    def missing(self, what: str) -> InputFileError:
        found = ", ".join(self.names) or "none"
        return InputFileError(self.path, f"extension {self.extname} has {what} (columns: {found})")


_TFORM_RE = re.compile(r"^\s*(\d*)([A-Z])\s*$")
_TFORM_TYPES = {"B": "u1", "I": ">i2", "J": ">i4", "K": ">i8", "E": ">f4", "D": ">f8"}


def _records_from_bytes(hdu, raw: bytes) -> np.ndarray | None:
    """The table as a structured array viewing ``raw``, or None when astropy is needed."""
    header = hdu.header
    fields = []
    for i in range(1, int(header.get("TFIELDS", 0)) + 1):
        match = _TFORM_RE.match(str(header.get(f"TFORM{i}", "")))
        if not match or match.group(2) not in _TFORM_TYPES or f"TSCAL{i}" in header or f"TZERO{i}" in header:
            return None
        repeat = int(match.group(1) or 1)
        if repeat < 1:
            return None
        fields.append(
            (
                str(header.get(f"TTYPE{i}", f"COL{i}")).strip(),
                _TFORM_TYPES[match.group(2)],
                (repeat,) if repeat > 1 else (),
            )
        )
    names = [f[0] for f in fields]
    if not fields or len(set(n.upper() for n in names)) != len(names):
        return None
    dtype = np.dtype(fields)
    if dtype.itemsize != int(header.get("NAXIS1", -1)):
        return None
    return np.frombuffer(raw, dtype=dtype, count=int(header["NAXIS2"]), offset=hdu.fileinfo()["datLoc"])


# ------------------------------------------------------------------- one arm
def _read_arm(
    path: Path, hdu, raw: bytes, side: str, lmjm: int | None, air: bool, notes: list[str] | None = None
) -> Arm:
    table = _ArmTable(path, hdu, raw)
    flux = _column(table, "FLUX")
    ivar = _column(table, "IVAR")
    wave = _wavelength(table)
    bits = _mask_bits(table, coadd=lmjm is None, size=flux.size)
    # In a coadd, ANDMASK marks pixels bad in every exposure (no good data left);
    # for an exposure, PIXMASK is both.
    no_data_bits = _cells(table, "ANDMASK") if lmjm is None and table.has("ANDMASK") else bits
    if not (flux.size == ivar.size == wave.size == bits.size == no_data_bits.size):
        raise InputFileError(path, f"extension {table.extname}: columns have different lengths")
    if air:
        wave = air_to_vacuum(wave)
    order = _ascending_order(wave)
    if order is _ZIGZAG:
        step = int(
            np.flatnonzero(np.diff(wave) <= 0)[0] if wave[-1] > wave[0] else np.flatnonzero(np.diff(wave) >= 0)[0]
        )
        raise InputFileError(
            path,
            f"extension {table.extname}: wavelengths are neither ascending nor "
            f"descending (pixel {step + 1} goes from {wave[step]:.3f} to "
            f"{wave[step + 1]:.3f} A): the pixels cannot be trusted",
        )
    if order is not None:
        wave, flux, ivar, bits, no_data_bits = (wave[order], flux[order], ivar[order], bits[order], no_data_bits[order])
    mask, unusable = pixel_masks(flux, ivar, bits, no_data_bits)
    good = flux[~unusable]
    if good.size and float(good.max()) == float(good.min()):
        # Constant flux (TSCAL = 0, a filled column) holds no spectrum: labelling it
        # gave plausible-looking stars. Every pixel becomes no-data, so the pair is
        # flagged (no good pixels) and never labelled as usable.
        mask, unusable = np.ones_like(mask), np.ones_like(unusable)
        if notes is not None:
            notes.append(
                f"{table.extname}: flux is constant ({float(good[0]):.6g}) over every "
                "pixel: no spectrum, all pixels treated as no data"
            )
    return Arm(
        extname=table.extname,
        side=side,
        wave=wave,
        flux=flux,
        ivar=ivar,
        mask=mask,
        snr=_header_float(hdu.header, "SNR", np.nan),
        exptime=_header_float(hdu.header, "EXPTIME", None),
        lmjm=lmjm,
        unusable=unusable,
    )


def pixel_masks(
    flux: np.ndarray, ivar: np.ndarray, flag_bits: np.ndarray, no_data_bits: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """(mask, unusable) for one arm.

    ``mask``: flagged (ORMASK for coadds, PIXMASK for exposures) or without data:
    what the views shade and the quality flags count.
    ``unusable``: no usable measurement at all (no data, or ANDMASK for coadds): what
    preprocessing interpolates over. A coadd pixel flagged in only some exposures
    (ORMASK) was combined from the good ones; interpolating over it, as over the
    H-alpha core of med-58408, moved the coadd's Teff by ~140 K away from its exposures.

    No data: ivar = 0, non-finite flux or ivar, or flux exactly 0. The pipeline writes
    0 where it has nothing, sometimes with ivar > 0 and ANDMASK = 0 (med-58408 COADD_B,
    5210.1-5210.6 A); kept as data, that made a fake line down to 0 in the model input.
    This is the one place that decides it.
    """
    no_data = ~np.isfinite(flux) | ~np.isfinite(ivar) | ~(ivar > 0) | (flux == 0)
    return (flag_bits != 0) | no_data, (no_data_bits != 0) | no_data


def _cells(table: _ArmTable, name: str) -> np.ndarray:
    """A column's pixels in either layout: one pixel per row (DR6-DR9 v0) or one row
    holding array cells (later releases)."""
    values = table.raw(name)
    if values.ndim == 1:
        return values
    if values.ndim == 2 and values.shape[0] == 1:
        return values[0]
    raise InputFileError(
        table.path,
        f"extension {table.extname}: unrecognised table layout "
        f"({values.shape[0]} rows of {values.shape[1:]}-element cells; "
        "expected one pixel per row or one row of arrays)",
    )


def _column(table: _ArmTable, name: str) -> np.ndarray:
    if not table.has(name):
        raise table.missing(f"no {name} column")
    values = _cells(table, name)
    if values.dtype.kind not in "iuf":
        kind = {"b": "logical (boolean)", "S": "text", "U": "text", "c": "complex"}.get(
            values.dtype.kind, values.dtype.kind
        )
        raise InputFileError(table.path, f"extension {table.extname}: the {name} column is {kind}, not numbers")
    return values.astype(np.float64)


def _wavelength(table: _ArmTable) -> np.ndarray:
    name = table.extname
    if table.has("LOGLAM"):
        wave = 10.0 ** _column(table, "LOGLAM")
    elif table.has("WAVELENGTH"):
        wave = _column(table, "WAVELENGTH")
    else:
        raise table.missing("neither a LOGLAM nor a WAVELENGTH column")
    if wave.size == 0:
        raise InputFileError(table.path, f"extension {name} has no pixels")
    if not np.all(np.isfinite(wave)):
        raise InputFileError(table.path, f"extension {name} has non-finite wavelengths")
    low, high = float(wave.min()), float(wave.max())
    if low < _WAVE_RANGE[0] or high > _WAVE_RANGE[1]:
        raise InputFileError(
            table.path,
            f"extension {name}: wavelengths {low:.4g}-{high:.4g} are "
            "not optical Angstrom (is LOGLAM really log10 of wavelength?)",
        )
    return wave


def _mask_bits(table: _ArmTable, coadd: bool, size: int) -> np.ndarray:
    """Pixel mask bits: ORMASK for coadds (any exposure flagged), PIXMASK for exposures.
    Falls back to whichever mask column exists; no mask column means no bits set."""
    preference = ("ORMASK", "ANDMASK", "PIXMASK") if coadd else ("PIXMASK", "ORMASK", "ANDMASK")
    for name in preference:
        if table.has(name):
            return _cells(table, name)
    return np.zeros(size, dtype=np.int16)


_ZIGZAG = np.empty(0, dtype=np.int64)


def _ascending_order(wave: np.ndarray) -> np.ndarray | None:
    """Order that makes pixels ascending (red exposures are stored descending); None when
    they already are, _ZIGZAG when they are neither (never silently sorted: a shuffled
    wavelength column means the pixels do not belong to the wavelengths)."""
    steps = np.diff(wave)
    if np.all(steps > 0):
        return None
    if np.all(steps < 0):
        return np.arange(wave.size - 1, -1, -1)
    return _ZIGZAG


def air_to_vacuum(wave_air: np.ndarray) -> np.ndarray:
    """Air to vacuum wavelength (Angstrom), IAU standard (Morton 2000) refractive index."""
    sigma2 = (1e4 / np.asarray(wave_air, dtype=np.float64)) ** 2
    index = 1.0 + 8.34254e-5 + 2.406147e-2 / (130.0 - sigma2) + 1.5998e-4 / (38.9 - sigma2)
    return wave_air * index


# ------------------------------------------------------------------- pairing
def _pair_arms(arms: list[Arm], notes: list[str]) -> tuple[list[ArmPair], list[Arm]]:
    """Pair blue and red arms by LMJM (None = coadd); lonely arms are kept and reported."""
    by_key: dict[int | None, dict[str, Arm]] = {}
    for arm in arms:
        sides = by_key.setdefault(arm.lmjm, {})
        if arm.side in sides:
            notes.append(f"duplicate extension {arm.extname}: kept the first one")
            continue
        sides[arm.side] = arm
    pairs, unpaired = [], []
    for key in sorted(by_key, key=lambda k: -1 if k is None else k):
        sides = by_key[key]
        if "B" in sides and "R" in sides:
            pairs.append(ArmPair(blue=sides["B"], red=sides["R"], lmjm=key))
            continue
        lonely = next(iter(sides.values()))
        missing = _partner_name(lonely)
        notes.append(f"{lonely.extname} has no partner {missing}: left unpaired")
        unpaired.append(lonely)
    return pairs, unpaired


def _exposure_count_notes(header, arms: list[Arm]) -> list[str]:
    """Compare NEXP_B/NEXP_R with the exposures found: a shortfall hints at a cut file."""
    notes = []
    for side in ("B", "R"):
        declared = _header_value(header, f"NEXP_{side}", int)
        found = sum(1 for arm in arms if arm.side == side and arm.lmjm is not None)
        if declared is not None and declared != found:
            notes.append(
                f"header NEXP_{side} = {declared} but the file has {found} "
                f"{side}-<lmjm> exposures (file may be incomplete)"
            )
    return notes


def _partner_name(arm: Arm) -> str:
    other = "R" if arm.side == "B" else "B"
    return f"COADD_{other}" if arm.lmjm is None else f"{other}-{arm.lmjm}"


# ------------------------------------------------------------------ metadata
def _metadata(header, path: Path) -> dict:
    """Header metadata as plain JSON-friendly Python values (None when absent)."""
    meta: dict = {}
    for key, (keyword, convert) in _META_KEYS.items():
        meta[key] = _header_value(header, keyword, convert)
    if not meta["filename"]:
        meta["filename"] = fits_name(path)
    mags = [_header_value(header, f"MAG{i}", float) for i in range(1, 8)]
    meta["mags"] = [m for m in mags if m is not None and m != _NO_MAGNITUDE]
    if meta["mag"] == _NO_MAGNITUDE:
        meta["mag"] = None
    meta["primary_hdu"] = str(header.get("EXTNAME", "PRIMARY")).strip() or "PRIMARY"
    return meta


def _header_value(header, keyword: str, convert):
    value = header.get(keyword)
    if value is None or isinstance(value, fits.card.Undefined):
        return None
    try:
        if convert is str:
            return str(value).strip()
        if convert is bool:
            return value if isinstance(value, bool) else str(value).strip().upper() in ("T", "TRUE", "1")
        return convert(value)
    except (TypeError, ValueError, OverflowError):  # OBSID = 1E400: no such integer
        return None


def _header_float(header, keyword: str, default):
    value = _header_value(header, keyword, float)
    return default if value is None else value


def fits_name(path: Path) -> str:
    """LAMOST's name for a file whose header has no FILENAME: its own name, without .gz/.bz2."""
    name = Path(path).name
    for suffix in (".gz", ".bz2"):
        if name.lower().endswith(suffix):
            return name[: -len(suffix)]
    return name
