"""Radial velocity: given values, a catalog keyed by obsid/filename, or a measurement
by cross-correlation against a rest-frame template.

A bare LAMOST MRS file carries no stellar RV (HELIO_RV is the heliocentric correction),
yet SPEMR's input grid is in the stellar rest frame, so a tool that opens files on its
own must measure the shift. The measurement works in log-wavelength, where a Doppler
shift is a constant offset: both arms of every spectrum of a batch are correlated with
the template by FFT at once, the peak is refined to sub-step precision by a parabola
through the log of the three highest CCF values (exact for a Gaussian peak), and the
uncertainty follows Zucker (2003, MNRAS 342, 1291) from the peak's height and curvature.

This module never imports torch.
"""

from __future__ import annotations

import csv
from array import array
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Callable, Mapping, Sequence

import numpy as np
from scipy import fft as sp_fft

from ..config import assets_dir, preprocess_config
from ..errors import InputFileError, SpemrError, require_regular_file

LINE_LIST_NAME = "mrs_lines.csv"
_LINE_COLUMNS = ("species", "wave_air", "wave_vac", "depth", "fwhm")
# Column names accepted for the velocity in an RV catalog, in order of preference
# (rv_ku0 is the LAMOST MRS catalog column the SPEMR authors used).
_RV_COLUMNS = ("rv", "rv_kms", "rv_ku0", "rv_lasp0", "rv_lasp1", "rv_br0", "rv_br1")
_RV_ERR_COLUMNS = ("rv_err", "rv_kms_err", "rv_ku0_err", "rv_lasp0_err", "rv_br0_err")
_FITS_SUFFIXES = (".gz", ".fits", ".fit")

Template = Callable[[np.ndarray], np.ndarray]


def require_finite_rv(value: float | None, source: str = "--rv") -> float | None:
    """A velocity given by the user: None (measure) or a finite number of km/s; NaN or
    infinity is refused rather than silently measured instead."""
    if value is None:
        return None
    value = float(value)
    if not np.isfinite(value):
        raise SpemrError(
            f"{source} {value}: not a finite radial velocity in km/s "
            "(leave it out to measure the RV by cross-correlation)"
        )
    return value


# ------------------------------------------------------------ settings/result
@dataclass(frozen=True)
class CCFSettings:
    """How the cross-correlation searches. search_kms bounds |rv|; step_kms is the
    log-wavelength sampling of the CCF (finer than a pixel, so the sub-step peak fit
    has little bias); min_peak is the normalised CCF height below which a measured RV
    is not trusted (the spectrum is then flagged unusable). min_arm_peak: an arm whose
    own correlation with the template at the RV used is below it has no stellar lines
    (flat, smooth or noise: <= 0.051 in 400 such arms at S/N 5-200; >= 0.105 for every
    spectrum of the synthetic test set and >= 0.109 in the default model's 9,200 training
    spectra; >= 0.365 for the real files with S/N >= 10)."""

    search_kms: float = 500.0
    step_kms: float = 1.0
    min_peak: float = 0.2
    min_arm_peak: float = 0.1
    batch_size: int = 64


@dataclass
class RVResult:
    rv: np.ndarray  # (n,) km/s
    rv_err: np.ndarray  # (n,) km/s, 1 sigma (inf when the peak is at the search edge)
    ccf_peak: np.ndarray  # (n,) normalised CCF height at the peak (a correlation coefficient)


# ----------------------------------------------------------------- line list
@dataclass(frozen=True)
class Line:
    species: str
    wave_air: float
    wave_vac: float
    depth: float
    fwhm: float


def default_line_list_path() -> Path:
    return assets_dir() / "lines" / LINE_LIST_NAME


def load_line_list(path: str | Path | None = None) -> tuple[Line, ...]:
    """Absorption lines (vacuum rest wavelengths) used for markers and the default
    RV template. Lines starting with '#' are comments."""
    path = Path(path) if path is not None else default_line_list_path()
    return _load_line_list(str(path))


@lru_cache(maxsize=8)
def _load_line_list(path: str) -> tuple[Line, ...]:
    try:
        with open(path, newline="") as handle:
            rows = list(csv.DictReader(line for line in handle if not line.startswith("#")))
    except FileNotFoundError:
        raise InputFileError(path, "line list not found (needed for the default RV template)") from None
    if not rows or any(col not in rows[0] for col in _LINE_COLUMNS):
        raise InputFileError(path, f"line list needs columns {', '.join(_LINE_COLUMNS)}")
    try:
        return tuple(Line(row["species"].strip(), *(float(row[c]) for c in _LINE_COLUMNS[1:])) for row in rows)
    except ValueError as error:
        raise InputFileError(path, f"line list has a non-numeric value ({error})") from None


def line_spectrum(wave: np.ndarray, lines: Sequence[Line]) -> np.ndarray:
    """Rest-frame model spectrum: continuum 1 times a Gaussian absorption per line
    (a product, so blends never go below zero)."""
    wave = np.asarray(wave, dtype=np.float64)
    log_flux = np.zeros_like(wave)
    for line in lines:
        sigma = line.fwhm / 2.3548200450309493
        near = np.abs(wave - line.wave_vac) < 6.0 * sigma
        if near.any():
            profile = np.exp(-0.5 * ((wave[near] - line.wave_vac) / sigma) ** 2)
            log_flux[near] += np.log1p(-min(line.depth, 0.99) * profile)
    return np.exp(log_flux)


def default_template() -> Template:
    """The shipped template: the line list rendered as Gaussian absorption lines."""
    lines = load_line_list()
    return lambda wave: line_spectrum(wave, lines)


def as_template(template) -> Template:
    """None -> the default line template; (wave, flux) -> linear interpolation with
    continuum 1 outside its range; a callable is used as is."""
    if template is None:
        return default_template()
    if callable(template):
        return template
    wave, flux = (np.asarray(a, dtype=np.float64) for a in template)
    if wave.shape != flux.shape or wave.ndim != 1 or wave.size < 2:
        raise SpemrError("RV template: wave and flux must be 1-D arrays of the same length")
    order = np.argsort(wave)
    wave, flux = wave[order], np.where(np.isfinite(flux[order]), flux[order], 1.0)
    return lambda w: np.interp(w, wave, flux, left=1.0, right=1.0)


# ------------------------------------------------------------- measurement
def measure_rv(
    wave: np.ndarray,
    flux: np.ndarray,
    mask: np.ndarray | None = None,
    template=None,
    settings: CCFSettings | None = None,
) -> RVResult:
    """Measure RVs of continuum-normalised, observed-frame spectra.

    wave (m,) is a grid shared by the batch (it may hold both arms: a gap of more than
    ten steps starts a new segment); flux (n, m); mask (n, m) True = bad (weight 0)."""
    settings = settings or CCFSettings()
    flux = np.atleast_2d(np.asarray(flux, dtype=np.float64))
    mask = np.zeros(flux.shape, bool) if mask is None else np.atleast_2d(np.asarray(mask, bool))
    wave = np.asarray(wave, dtype=np.float64)
    model = as_template(template)
    c_kms = preprocess_config().speed_of_light_kms
    correlator = _Correlator(wave, model, settings, c_kms)
    results = [
        correlator.run(flux[i : i + settings.batch_size], mask[i : i + settings.batch_size])
        for i in range(0, len(flux), max(settings.batch_size, 1))
    ]
    if not results:
        empty = np.zeros(0)
        return RVResult(empty, empty.copy(), empty.copy())
    return RVResult(*(np.concatenate([r[k] for r in results]) for k in range(3)))


def template_correlation(
    wave: np.ndarray,
    flux: np.ndarray,
    mask: np.ndarray | None = None,
    template=None,
) -> np.ndarray:
    """Correlation of rest-frame, continuum-normalised spectra with the template at zero
    velocity: the CCF's height at the RV that was used to shift them (a given one, or
    the measured one). A wrong RV, or an arm without stellar lines, scores near 0.

    The same normalisation as the CCF (line depth, weighted mean removed per arm
    segment, template power where the spectrum has data), taken at one lag directly on
    the grid: 20x cheaper than a CCF search, and within 0.03 of its peak."""
    flux = np.atleast_2d(np.asarray(flux, dtype=np.float64))
    good = np.isfinite(flux)
    if mask is not None:
        good &= ~np.atleast_2d(np.asarray(mask, bool))
    wave = np.asarray(wave, dtype=np.float64)
    model = as_template(template)
    cross, signal_power, template_power = (np.zeros(len(flux)) for _ in range(3))
    for part in _segments(wave):
        depth = 1.0 - model(wave[part])
        depth -= depth.mean()
        weight = good[:, part]
        signal = np.where(weight, 1.0 - flux[:, part], 0.0)
        mean = signal.sum(axis=1) / np.maximum(weight.sum(axis=1), 1)
        signal = (signal - mean[:, None]) * weight
        cross += signal @ depth
        signal_power += np.einsum("ij,ij->i", signal, signal)
        template_power += weight @ depth**2
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.nan_to_num(cross / np.sqrt(signal_power * template_power), nan=0.0)


class _Correlator:
    """Log-wavelength CCF of a batch against one template, arm segments summed."""

    def __init__(self, wave, model: Template, settings: CCFSettings, c_kms: float):
        self.c_kms = c_kms
        self.step = np.log1p(settings.step_kms / c_kms)  # ln-lambda step
        self.max_lag = int(np.ceil(np.log1p(settings.search_kms / c_kms) / self.step))
        self.segments = [self._segment(wave, part, model) for part in _segments(wave)]

    def _segment(self, wave, part: slice, model: Template) -> dict:
        w = wave[part]
        u = np.arange(np.log(w[0]), np.log(w[-1]), self.step)
        lag = self.max_lag
        u_ext = u[0] + self.step * np.arange(-lag, u.size + lag)
        depth = 1.0 - model(np.exp(u_ext))
        core = depth[lag : lag + u.size]
        depth = depth - core.mean()
        n_fft = sp_fft.next_fast_len(u.size + 2 * lag)
        return {
            "wave": w,
            "part": part,
            "log_wave": np.exp(u),
            "n": u.size,
            "n_fft": n_fft,
            "template_fft": sp_fft.rfft(depth, n_fft),
            "template_core": depth[lag : lag + u.size],
        }

    def run(self, flux: np.ndarray, mask: np.ndarray):
        n_lags = 2 * self.max_lag + 1
        cross = np.zeros((len(flux), n_lags))
        signal_power = np.zeros(len(flux))
        template_power = np.zeros(len(flux))
        n_good = np.zeros(len(flux))
        for seg in self.segments:
            signal, weight = self._signal(seg, flux[:, seg["part"]], mask[:, seg["part"]])
            spectrum = np.conj(sp_fft.rfft(signal, seg["n_fft"], axis=1)) * seg["template_fft"]
            cross += sp_fft.irfft(spectrum, seg["n_fft"], axis=1)[:, :n_lags]
            signal_power += np.einsum("ij,ij->i", signal, signal)
            template_power += weight @ seg["template_core"] ** 2  # where the signal counts
            n_good += np.sum(~mask[:, seg["part"]], axis=1)
        with np.errstate(invalid="ignore", divide="ignore"):
            ccf = cross / np.sqrt(signal_power * template_power)[:, None]
        ccf = np.nan_to_num(ccf, nan=0.0)[:, ::-1]  # index j <-> lag j - max_lag
        return self._peaks(ccf, n_good)

    def _signal(self, seg: dict, flux: np.ndarray, mask: np.ndarray):
        """Line depth (1 - flux) on the log grid, weighted mean removed. A log-grid point
        next to any bad pixel gets weight 0, so flagged garbage cannot leak in."""
        grid, src = seg["log_wave"], seg["wave"]
        rows = np.empty((len(flux), seg["n"]))
        weight = np.empty_like(rows)
        for i in range(len(flux)):
            rows[i] = np.interp(grid, src, flux[i])
            weight[i] = np.interp(grid, src, mask[i].astype(np.float64)) == 0
        depth = (1.0 - rows) * weight
        total = weight.sum(axis=1, keepdims=True)
        mean = np.divide(depth.sum(axis=1, keepdims=True), total, out=np.zeros_like(total), where=total > 0)
        return (depth - mean) * weight, weight

    def _peaks(self, ccf: np.ndarray, n_good: np.ndarray):
        n, n_lags = ccf.shape
        best = np.argmax(ccf, axis=1)
        inner = np.clip(best, 1, n_lags - 2)
        rows = np.arange(n)
        left, mid, right = ccf[rows, inner - 1], ccf[rows, inner], ccf[rows, inner + 1]
        offset, curvature = _parabola_peak(left, mid, right)
        lag = (inner - self.max_lag) + offset
        rv = self.c_kms * np.expm1(lag * self.step)
        peak = np.clip(mid, -1.0, 1.0)
        rv_err = _zucker_error(peak, curvature, n_good, self.step * self.c_kms)
        at_edge = (best == 0) | (best == n_lags - 1)
        rv_err[at_edge | ~np.isfinite(rv_err)] = np.inf
        return rv, rv_err, peak


def _parabola_peak(left, mid, right):
    """Sub-step offset of a peak from three samples: parabola through log(ccf) when all
    three are positive (exact for a Gaussian peak), through ccf itself otherwise.
    Also returns the CCF's second derivative (per step^2) at the peak."""
    positive = (left > 0) & (mid > 0) & (right > 0)
    with np.errstate(divide="ignore", invalid="ignore"):
        la, lb, lc = (np.log(np.where(positive, v, 1.0)) for v in (left, mid, right))
        a = np.where(positive, la, left)
        b = np.where(positive, lb, mid)
        c = np.where(positive, lc, right)
        denom = a - 2.0 * b + c
        offset = np.where(denom < 0, 0.5 * (a - c) / denom, 0.0)
    offset = np.clip(np.nan_to_num(offset), -0.5, 0.5)
    curvature = left - 2.0 * mid + right
    return offset, curvature


def _zucker_error(peak, curvature, n_good, step_kms):
    """Zucker (2003) eq. 8: sigma^2 = -[N C''/C * C^2/(1 - C^2)]^-1, C'' per km/s^2."""
    with np.errstate(divide="ignore", invalid="ignore"):
        second = curvature / step_kms**2
        c2 = np.minimum(peak**2, 1.0 - 1e-12)
        inverse = -n_good * second / peak * c2 / (1.0 - c2)
        return np.where((inverse > 0) & (peak > 0), 1.0 / np.sqrt(inverse), np.inf)


def _segments(wave: np.ndarray) -> list[slice]:
    """Contiguous parts of a grid: a step more than ten times the median starts a new one."""
    steps = np.diff(wave)
    if np.any(steps <= 0):
        raise SpemrError("RV measurement: wavelengths must be strictly ascending")
    breaks = np.flatnonzero(steps > 10.0 * np.median(steps)) + 1
    edges = [0, *breaks.tolist(), wave.size]
    return [slice(a, b) for a, b in zip(edges[:-1], edges[1:]) if b - a > 10]


# ------------------------------------------------------------- RV catalogs
@dataclass(frozen=True, eq=False)  # array fields: compared and hashed by identity
class RVCatalog:
    """RVs keyed by obsid (str of the integer) and by bare file name (no .fits/.gz).

    Integer obsids are held as sorted numpy arrays (``obsids``, ``obsid_values``: rv,
    rv_err): a 50 MB catalog of 5 million rows took 2.5 GB as Python dicts of row dicts.
    ``by_obsid`` keeps the rare obsids that are not 64-bit integers, as text."""

    path: str
    by_obsid: Mapping[str, tuple[float, float]]
    by_filename: Mapping[str, tuple[float, float]]
    obsids: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))
    obsid_values: np.ndarray = field(default_factory=lambda: np.zeros((0, 2)))

    def lookup(self, obsid=None, filename=None) -> tuple[float, float] | None:
        """(rv, rv_err) for a file, by obsid first then file name; None when absent."""
        if obsid is not None:
            key = _obsid_key(obsid)
            number = _int64(key)
            if number is not None and self.obsids.size:
                i = int(np.searchsorted(self.obsids, number))
                if i < self.obsids.size and int(self.obsids[i]) == number:
                    return float(self.obsid_values[i, 0]), float(self.obsid_values[i, 1])
            if key in self.by_obsid:
                return self.by_obsid[key]
        if filename and _filename_key(filename) in self.by_filename:
            return self.by_filename[_filename_key(filename)]
        return None

    def __len__(self) -> int:
        return int(self.obsids.size) + len(self.by_obsid) + len(self.by_filename)


def load_rv_catalog(path: str | Path) -> RVCatalog:
    """Read a CSV with an `obsid` and/or `filename` column and an RV column (`rv`, `rv_kms`
    or LAMOST's `rv_ku0`, ...; optional `rv_err`). Raises InputFileError naming the file.
    Rows are streamed (never all held); a later row for the same key wins."""
    path = Path(path)
    require_regular_file(path, "RV catalog")
    by_obsid: dict[str, tuple[float, float]] = {}
    by_filename: dict[str, tuple[float, float]] = {}
    keys, rvs, errs = array("q"), array("d"), array("d")
    try:
        with open(path, newline="", encoding="utf-8-sig") as handle:
            reader = csv.DictReader(handle)
            fields = {name.strip().lower(): name for name in (reader.fieldnames or [])}
            rv_col = next((fields[c] for c in _RV_COLUMNS if c in fields), None)
            err_col = next((fields[c] for c in _RV_ERR_COLUMNS if c in fields), None)
            if rv_col is None or not any(c in fields for c in ("obsid", "filename")):
                raise InputFileError(
                    path,
                    f"RV catalog needs an obsid or filename column and an rv column (one of {', '.join(_RV_COLUMNS)})",
                )
            obsid_col, filename_col = fields.get("obsid"), fields.get("filename")
            for number, row in enumerate(reader, start=2):
                value = (_number(path, row[rv_col], number), _number(path, row.get(err_col), number, 0.0))
                if not np.isfinite(value[0]):
                    continue
                if obsid_col is not None and (row.get(obsid_col) or "").strip():
                    key = _obsid_key(row[obsid_col])
                    integer = _int64(key)
                    if integer is None:
                        by_obsid[key] = value
                    else:
                        keys.append(integer)
                        rvs.append(value[0])
                        errs.append(value[1])
                if filename_col is not None and (row.get(filename_col) or "").strip():
                    by_filename[_filename_key(row[filename_col])] = value
    except FileNotFoundError:
        raise InputFileError(path, "RV catalog not found") from None
    except (OSError, UnicodeDecodeError, csv.Error) as error:
        raise InputFileError(path, f"cannot be read as a CSV RV catalog ({error})") from None
    obsids = np.frombuffer(keys, dtype=np.int64) if len(keys) else np.zeros(0, np.int64)
    order = np.argsort(obsids, kind="stable")
    ordered = obsids[order]
    last = np.append(ordered[1:] != ordered[:-1], True) if ordered.size else np.zeros(0, bool)
    kept = order[last]  # a later row for the same obsid wins, as with a dict
    values = np.stack([np.frombuffer(rvs, dtype=np.float64), np.frombuffer(errs, dtype=np.float64)], axis=1)
    return RVCatalog(str(path), by_obsid, by_filename, obsids[kept].copy(), values[kept] if len(keys) else values)


def _int64(key: str) -> int | None:
    """The obsid key as a 64-bit integer, or None (text such as '1e400', or too large)."""
    try:
        number = int(key)
    except ValueError:
        return None
    return number if -(2**63) <= number < 2**63 else None


def _number(path, text, line: int, default: float = np.nan) -> float:
    if text is None or not str(text).strip():
        return default
    try:
        return float(text)
    except ValueError:
        raise InputFileError(path, f"line {line}: {text!r} is not a number") from None


def _obsid_key(obsid) -> str:
    text = str(obsid).strip()
    try:
        return str(int(text))
    except ValueError:
        pass
    try:
        return str(int(float(text)))  # "1.23e8" as some tables write it
    except (ValueError, OverflowError):  # "1e400": no such obsid, kept as text
        return text


def _filename_key(name) -> str:
    base = Path(str(name).strip()).name.lower()
    for suffix in _FITS_SUFFIXES:
        if base.endswith(suffix):
            base = base[: -len(suffix)]
    return base
