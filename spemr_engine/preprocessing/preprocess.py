"""SPEMR preprocessing: rest frame, resampling onto the 3600 + 3600 pixel grid, per-arm
continuum normalisation, quality flags (reference notes, section 2).

The continuum fit is the published algorithm (median-filter de-spiking, then an iterative
5th-order polynomial that replaces (-4 sigma, +3 sigma) outliers by the fit until none
are left), vectorised over a batch: every spectrum of an arm shares the same x grid, so
the least-squares projection onto the polynomial basis is one matrix for all of them and
each iteration is two thin matrix products over the spectra still iterating.
benchmarks/original_way.py has the same algorithm written literally with np.polyfit, one
spectrum at a time; tests/test_preprocess.py and benchmarks/preprocess.py hold the two
against each other.

This module never imports torch (and not Qt).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import NamedTuple, Sequence

import numpy as np
from scipy import ndimage

from . import rv as rvmod
from ..config import InputGrid, PreprocessConfig, default_grid, preprocess_config
from ..errors import SpemrError

# A residual scatter below this (in standardised flux units) means the polynomial fits
# exactly (e.g. a constant arm): then nothing is an outlier, instead of rounding noise.
_EXACT_FIT_SCATTER = 1e-9
RV_GIVEN, RV_CCF = "given", "ccf"
# The selection criteria, each a boolean array of QualityFlags; the order of catalog flags.
FLAG_NAMES = ("low_snr", "bad_pixels", "bad_run", "rv_unreliable", "no_good_pixels", "featureless")
# Spectra processed together in the continuum loop: 16 x 3600 float64 (~460 kB) keeps
# the working arrays in cache, which is most of the vectorised path's speed.
_CHUNK_ROWS = 16


# ------------------------------------------------------------------ results
@dataclass
class QualityFlags:
    """Per-spectrum quality, arrays of length n. usable follows the paper's selection
    (S/N >= reject_min_snr in both arms, <= reject_max_bad_pixels bad grid pixels, no bad
    run longer than reject_max_bad_run) plus a trustworthy RV; reason says why not.

    The one vocabulary of the selection: a boolean array per criterion (named as in
    FLAG_NAMES, the catalog's flag tokens); usable, reason, the catalog's flags and the
    cross-match's cuts all derive from them."""

    snr_blue: np.ndarray
    snr_red: np.ndarray
    bad_fraction: np.ndarray
    longest_bad_run: np.ndarray
    n_bad: np.ndarray
    ccf_peak: np.ndarray
    low_snr: np.ndarray  # S/N < reject_min_snr (or unknown) in either arm
    bad_pixels: np.ndarray  # more than reject_max_bad_pixels bad grid pixels
    bad_run: np.ndarray  # a bad run longer than reject_max_bad_run in an arm
    rv_unreliable: np.ndarray  # CCF peak below the minimum: at the measured RV, or at a given one
    no_good_pixels: np.ndarray  # an arm without one good pixel
    featureless: np.ndarray  # an arm with good pixels but no stellar lines at the RV used
    usable: np.ndarray
    reason: list[str] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.usable)

    def flags(self, i: int) -> list[str]:
        """The failed criteria of spectrum i, as FLAG_NAMES tokens in that order."""
        return [name for name in FLAG_NAMES if getattr(self, name)[i]]

    def columns(self) -> dict[str, np.ndarray]:
        """The flags as named arrays (reason as a string array), e.g. for an .npz."""
        names = ("snr_blue", "snr_red", "bad_fraction", "longest_bad_run", "n_bad", "ccf_peak", "usable")
        out = {name: np.asarray(getattr(self, name)) for name in names}
        out["reason"] = np.asarray(self.reason, dtype=str)
        return out


@dataclass
class PreprocessedSpectra:
    wave: np.ndarray  # (7200,) grid, vacuum Angstrom, rest frame
    flux: np.ndarray  # (n, 7200) float32, continuum-normalised (not clipped/standardised)
    mask: np.ndarray  # (n, 7200) bool, True = bad pixel carried onto the grid
    rv: np.ndarray  # (n,) km/s used for the rest-frame shift
    rv_err: np.ndarray  # (n,) km/s (0 when given)
    rv_source: list[str]  # "given" | "ccf"
    quality: QualityFlags
    extname_blue: list[str]
    extname_red: list[str]
    # ivar is derived on first use (only fit quality needs it): what it is made from
    _ivar: np.ndarray | None = field(default=None, repr=False, compare=False)
    _ivar_source: _IvarSource | None = field(default=None, repr=False, compare=False)

    def __len__(self) -> int:
        return len(self.flux)

    @property
    def ivar(self) -> np.ndarray:
        """(n, 7200) float32 inverse variance of ``flux``, 0 where ``mask`` (no data) or the
        file has none: the file's ivar through the linear resampling (:func:`resample_ivar`)
        times continuum^2 (:func:`normalised_ivar`). Computed on first use."""
        if self._ivar is None:
            if self._ivar_source is None:
                self._ivar = np.zeros(self.flux.shape, dtype=np.float32)
            else:
                self._ivar = _grid_ivar(*self._ivar_source, self.mask)
                self._ivar_source = None
        return self._ivar

    def arrays(self) -> dict[str, np.ndarray]:
        """Everything as named arrays: what `spemr preprocess` writes to its .npz."""
        out = {
            "wave": self.wave,
            "flux": self.flux,
            "mask": self.mask,
            "ivar": self.ivar,
            "rv": self.rv,
            "rv_err": self.rv_err,
            "rv_source": np.asarray(self.rv_source, dtype=str),
            "extname_blue": np.asarray(self.extname_blue, dtype=str),
            "extname_red": np.asarray(self.extname_red, dtype=str),
        }
        out.update(self.quality.columns())
        return out


# --------------------------------------------------------- spectrum steps
def rest_frame(wave: np.ndarray, rv_kms: float, config: PreprocessConfig | None = None) -> np.ndarray:
    """wave0 = wave / (1 + rv / c): observed to stellar rest frame."""
    c = (config or preprocess_config()).speed_of_light_kms
    return np.asarray(wave, dtype=np.float64) / (1.0 + rv_kms / c)


def repair_bad_pixels(wave: np.ndarray, flux: np.ndarray, mask: np.ndarray | None = None):
    """Interpolate bad pixels (mask, NaN, inf) linearly from their good neighbours.

    Returns (flux, bad). An arm with no good pixel comes back as continuum 1 everywhere,
    all bad, so the rest of the pipeline runs and the quality flags say why."""
    flux = np.asarray(flux, dtype=np.float64)
    bad = ~np.isfinite(flux)
    if mask is not None:
        bad |= np.asarray(mask, dtype=bool)
    if not bad.any():
        return flux.copy(), bad
    good = ~bad
    if not good.any():
        return np.ones_like(flux), bad
    repaired = flux.copy()
    repaired[bad] = np.interp(wave[bad], wave[good], flux[good])
    return repaired, bad


def resample(wave: np.ndarray, flux: np.ndarray, bad: np.ndarray, grid_wave: np.ndarray):
    """Linear interpolation onto grid_wave (wave ascending). A grid pixel is bad when the
    source pixel nearest to it is bad or when it lies outside the source coverage."""
    flux_grid = np.interp(grid_wave, wave, flux)
    outside = (grid_wave < wave[0]) | (grid_wave > wave[-1])
    if not bad.any():
        return flux_grid, outside
    # Interpolating the 0/1 badness gives > 0.5 exactly where the nearer neighbour is bad.
    return flux_grid, (np.interp(grid_wave, wave, bad.astype(np.float64)) > 0.5) | outside


def _median_of_three(a, b, c, out=None):
    """Element-wise median of three arrays."""
    out = np.minimum(a, b, out=out)
    return np.maximum(out, np.minimum(np.maximum(a, b), c), out=out)


_NO_DATA_VARIANCE = 1e30  # stands for infinite variance (ivar 0) in resample_ivar


def resample_ivar(wave: np.ndarray, ivar: np.ndarray, grid_wave: np.ndarray) -> np.ndarray:
    """Inverse variance of :func:`resample`'s linear interpolation, propagated exactly for
    independent source pixels: var = (1 - f)^2 var_i + f^2 var_(i+1). 0 (no information)
    where a contributing pixel has ivar <= 0 or the grid pixel lies outside the source."""
    ivar = np.asarray(ivar, dtype=np.float64)
    n = wave.size
    if n < 2:
        return np.zeros(grid_wave.shape)
    # np.interp of the pixel index gives each grid pixel's fractional source position
    # (it searches sorted queries incrementally: much faster than searchsorted here).
    position = np.interp(grid_wave, wave, np.arange(n, dtype=np.float64))
    left = np.minimum(position.astype(np.intp), n - 2)
    f = position - left
    var = np.divide(1.0, ivar, out=np.full(n, _NO_DATA_VARIANCE), where=ivar > 0)
    total = (1.0 - f) ** 2 * var[left]
    total += f**2 * var[left + 1]
    out = np.divide(1.0, total, out=np.zeros(total.shape), where=total < 0.1 * _NO_DATA_VARIANCE)
    out[(grid_wave < wave[0]) | (grid_wave > wave[-1])] = 0.0
    return out


def median3(flux: np.ndarray) -> np.ndarray:
    """Median filter of width 3 along the last axis with zero padding at both ends, as
    scipy.signal.medfilt(flux, 3) (the authors' filter): the first pixel is
    median(0, x0, x1), the last median(x[-2], x[-1], 0). A handful of vectorised
    min/max operations instead of a sort per pixel."""
    flux = np.asarray(flux, dtype=np.float64)
    out = flux.copy()
    if flux.shape[-1] < 2:
        out[...] = _median_of_three(np.zeros_like(flux), flux, np.zeros_like(flux))
        return out
    zero = np.zeros_like(flux[..., :1])
    left = np.concatenate([zero, flux[..., :-1]], axis=-1)
    right = np.concatenate([flux[..., 1:], zero], axis=-1)
    return _median_of_three(left, flux, right, out=out)


def median_filter(flux: np.ndarray, width: int) -> np.ndarray:
    """scipy.signal.medfilt(row, width) on every row (zero-padded ends)."""
    if width == 3:
        return median3(flux)
    return ndimage.median_filter(np.asarray(flux, dtype=np.float64), size=(1, width), mode="constant", cval=0.0)


def _outliers(
    residual: np.ndarray,
    sigma: np.ndarray,
    config: PreprocessConfig,
    out: np.ndarray | None = None,
    scratch: np.ndarray | None = None,
) -> np.ndarray:
    """Pixels not strictly inside (-low sigma, +high sigma), per row (sigma (n, 1)), as the
    authors keep only low < r < high; none when the scatter is ~0 (an exact fit, where
    their loop would never end). out/scratch: optional boolean buffers of residual's shape."""
    exact = sigma <= _EXACT_FIT_SCATTER
    low = np.where(exact, -np.inf, -config.outlier_sigma_low * sigma)
    high = np.where(exact, np.inf, config.outlier_sigma_high * sigma)
    out = np.less_equal(residual, low, out=out)
    return np.logical_or(out, np.greater_equal(residual, high, out=scratch), out=out)


def despike(flux: np.ndarray, config: PreprocessConfig | None = None) -> np.ndarray:
    """Step 1 of the continuum (batch, along axis -1), the authors' convention: with
    deviation = median - flux (median: width-3 filter, zero-padded ends), pixels whose
    deviation falls outside (-4 sigma, +3 sigma) take the filtered value. So dips more
    than 3 sigma below the median and spikes more than 4 sigma above it are replaced."""
    config = config or preprocess_config()
    flux = np.atleast_2d(np.asarray(flux, dtype=np.float64))
    filtered = median_filter(flux, config.median_filter_width)
    deviation = filtered - flux
    sigma = _row_std(deviation, deviation.mean(axis=1, keepdims=True))
    return np.where(_outliers(deviation, sigma, config), filtered, flux)


def _standard_x(wave: np.ndarray) -> np.ndarray:
    x = np.log10(np.asarray(wave, dtype=np.float64))
    return (x - x.mean()) / x.std()


def _row_std(values: np.ndarray, mean: np.ndarray) -> np.ndarray:
    """np.std along axis 1 (keepdims) given the row means, in two cheap passes."""
    centred = values - mean
    return np.sqrt(np.einsum("ij,ij->i", centred, centred) / values.shape[1])[:, None]


def _standardise_rows(flux: np.ndarray):
    mean = flux.mean(axis=1, keepdims=True)
    scale = _row_std(flux, mean)
    scale[~(scale > 0)] = 1.0
    work = flux - mean
    work /= scale
    return work, mean, scale


def _polynomial_basis(wave: np.ndarray, order: int) -> np.ndarray:
    """Orthonormal basis (m, order+1) of polynomials in standardised log10(wave): the
    least-squares fit of any row y is then (y @ Q) @ Q.T, the same for every spectrum."""
    basis, _ = np.linalg.qr(np.vander(_standard_x(wave), order + 1))
    return basis


def fit_continuum(
    wave: np.ndarray, flux: np.ndarray, config: PreprocessConfig | None = None, chunk_rows: int = _CHUNK_ROWS
):
    """Continuum of a batch of de-spiked spectra sharing one wavelength grid (n, m).

    Each spectrum's continuum is its last fit: the one with no outliers left, or the fit
    at the iteration cap. Returns (continuum (n, m), iterations used (n,))."""
    config = config or preprocess_config()
    flux = np.atleast_2d(np.asarray(flux, dtype=np.float64))
    basis = _polynomial_basis(wave, config.continuum_poly_order)
    continuum = np.empty_like(flux)
    iterations = np.zeros(len(flux), dtype=np.int64)
    for start in range(0, len(flux), chunk_rows):
        rows = slice(start, start + chunk_rows)
        continuum[rows], iterations[rows] = _fit_chunk(flux[rows], basis, config)
    return continuum, iterations


def _fit_chunk(flux: np.ndarray, basis: np.ndarray, config: PreprocessConfig):
    """The replace-and-refit loop for a few spectra at once, small enough to stay in
    cache, in preallocated arrays; rows leave the working set once they have no outliers.

    One array holds the residual r = fit - y; replacing outliers by the fit is y += r
    there. The residual scatter is sqrt(mean(r^2)): with a constant term in the basis
    the least-squares residual has zero mean, so this equals np.std(r) to rounding."""
    work, mean, scale = _standardise_rows(flux)
    n_rows, n_pixels = work.shape
    fit, residual = np.empty_like(work), np.empty_like(work)
    outliers, scratch = np.empty(work.shape, dtype=bool), np.empty(work.shape, dtype=bool)
    iterations = np.full(n_rows, config.continuum_max_iterations, dtype=np.int64)
    active = np.arange(n_rows)
    for iteration in range(1, config.continuum_max_iterations + 1):
        k = active.size
        y, r, o = work[:k], residual[:k], outliers[:k]
        np.matmul(y @ basis, basis.T, out=r)
        np.subtract(r, y, out=r)
        sigma = np.sqrt(np.einsum("ij,ij->i", r, r) / n_pixels)[:, None]
        _outliers(r, sigma, config, out=o, scratch=scratch[:k])
        going = np.asarray(o.any(axis=1))  # an array: numpy's stubs allow a scalar for an axis reduction
        if iteration == config.continuum_max_iterations:
            going[:] = False  # cap reached: keep the last fit
        if not going.all():
            done = ~going
            fit[active[done]] = y[done] + r[done]
            iterations[active[done]] = iteration
            if not going.any():
                break
        np.add(y, r, out=y, where=o)  # outliers take the fit's value
        if not going.all():
            keep = int(going.sum())
            work[:keep], active = y[going], active[going]
    fit *= scale
    fit += mean
    return fit, iterations


def divide_by_continuum(flux: np.ndarray, continuum: np.ndarray):
    """flux / continuum; where the continuum is not positive (a dead arm, pure noise)
    the result is 1 and the pixel is reported bad. Returns (normalised, bad)."""
    with np.errstate(divide="ignore", invalid="ignore"):
        normalised = flux / continuum
    bad = ~(continuum > 0)
    bad |= ~np.isfinite(normalised)
    if bad.any():
        normalised[bad] = 1.0
    return normalised, bad


def normalise(
    wave: np.ndarray,
    flux: np.ndarray,
    config: PreprocessConfig | None = None,
    chunk_rows: int = _CHUNK_ROWS,
    continuum_out: np.ndarray | None = None,
):
    """Continuum-normalise a batch (n, m) of one arm: de-spike, fit, divide the de-spiked
    flux by the continuum (the de-spiking is there to keep cosmic rays out of the input).
    Works through the batch a few rows at a time so every pass stays in cache.
    Returns (normalised, bad); ``continuum_out`` (n, m), when given, receives the continuum."""
    config = config or preprocess_config()
    flux = np.atleast_2d(np.asarray(flux, dtype=np.float64))
    basis = _polynomial_basis(wave, config.continuum_poly_order)
    out, bad = np.empty_like(flux), np.zeros(flux.shape, dtype=bool)
    for start in range(0, len(flux), chunk_rows):
        rows = slice(start, start + chunk_rows)
        clean = despike(flux[rows], config)
        continuum, _ = _fit_chunk(clean, basis, config)
        out[rows], bad[rows] = divide_by_continuum(clean, continuum)
        if continuum_out is not None:
            continuum_out[rows] = continuum
    return out, bad


def normalised_ivar(ivar: np.ndarray, continuum: np.ndarray, bad: np.ndarray) -> np.ndarray:
    """Inverse variance of flux / continuum, the continuum taken as exact: ivar * continuum^2,
    0 where the pixel is bad. The one place the normalised flux's ivar is derived."""
    with np.errstate(invalid="ignore", over="ignore"):
        out = np.asarray(ivar, dtype=np.float64) * np.asarray(continuum, dtype=np.float64) ** 2
    out[bad | ~np.isfinite(out) | ~(out > 0)] = 0.0
    return out


def normalise_grid(
    flux: np.ndarray,
    grid: InputGrid | None = None,
    config: PreprocessConfig | None = None,
    continuum_out: np.ndarray | None = None,
):
    """Normalise (n, 7200) grid flux arm by arm. Returns (normalised, bad);
    ``continuum_out`` (n, 7200), when given, receives the continuum."""
    grid = grid or default_grid()
    flux = np.atleast_2d(np.asarray(flux, dtype=np.float64))
    out, bad = np.empty_like(flux), np.zeros(flux.shape, dtype=bool)
    for arm, part in zip(grid.arms, grid.arm_slices().values()):
        out[:, part], bad[:, part] = normalise(
            arm.wave, flux[:, part], config, continuum_out=None if continuum_out is None else continuum_out[:, part]
        )
    return out, bad


# --------------------------------------------------------------- model input
def standardise(
    flux: np.ndarray, flux_mean: np.ndarray, flux_std: np.ndarray, config: PreprocessConfig | None = None
) -> np.ndarray:
    """Model input: clip normalised flux to [clip_min, clip_max], then (x - mean) / std
    per pixel with the training set's statistics. float32."""
    config = config or preprocess_config()
    clipped = np.clip(np.asarray(flux, dtype=np.float64), config.clip_min, config.clip_max)
    std = np.asarray(flux_std, dtype=np.float64)
    safe_std = np.where(std > 0, std, 1.0)
    return ((clipped - np.asarray(flux_mean, dtype=np.float64)) / safe_std).astype(np.float32)


# ----------------------------------------------------------------- quality
def longest_run(bad: np.ndarray) -> np.ndarray:
    """Length of the longest run of True along the last axis, per row."""
    bad = np.atleast_2d(np.asarray(bad, dtype=bool))
    padded = np.zeros((bad.shape[0], bad.shape[1] + 2), dtype=np.int8)
    padded[:, 1:-1] = bad
    edges = np.diff(padded, axis=1)
    out = np.zeros(bad.shape[0], dtype=np.int64)
    for row in np.flatnonzero(bad.any(axis=1)):
        starts = np.flatnonzero(edges[row] == 1)
        ends = np.flatnonzero(edges[row] == -1)
        out[row] = int((ends - starts).max())
    return out


def quality_flags(
    mask: np.ndarray,
    snr_blue,
    snr_red,
    ccf_peak,
    rv_measured,
    grid: InputGrid | None = None,
    config: PreprocessConfig | None = None,
    ccf_settings: rvmod.CCFSettings | None = None,
    arm_peak: dict[str, np.ndarray] | None = None,
) -> QualityFlags:
    """The paper's selection rule per spectrum, with the reasons spelled out, plus a
    check the paper's data never needed: arm_peak (each arm's correlation with the RV
    template at the RV used, when computed) below min_arm_peak means that arm holds no
    stellar lines, so labels from it would be plausible nonsense."""
    grid, config = grid or default_grid(), config or preprocess_config()
    ccf_settings = ccf_settings or rvmod.CCFSettings()
    min_peak = ccf_settings.min_peak
    mask = np.atleast_2d(mask)
    n_bad = mask.sum(axis=1)
    runs = (
        np.max([longest_run(mask[:, part]) for part in grid.arm_slices().values()], axis=0)
        if len(mask)
        else np.zeros(0, dtype=np.int64)
    )
    snr_blue, snr_red = np.asarray(snr_blue, float), np.asarray(snr_red, float)
    ccf_peak, rv_measured = np.asarray(ccf_peak, float), np.asarray(rv_measured, bool)
    dead = {arm: np.asarray(mask[:, part].all(axis=1)) for arm, part in grid.arm_slices().items()}
    low = {"blue": ~(snr_blue >= config.reject_min_snr), "red": ~(snr_red >= config.reject_min_snr)}
    arm_peak = {arm: np.asarray(peak, float) for arm, peak in (arm_peak or {}).items()}
    lineless = {arm: ~dead[arm] & (arm_peak[arm] < ccf_settings.min_arm_peak) for arm in dead if arm in arm_peak}
    criteria = {
        "low_snr": low["blue"] | low["red"],
        "bad_pixels": n_bad > config.reject_max_bad_pixels,
        "bad_run": runs > config.reject_max_bad_run,
        # A measured RV needs a peak; a given one is judged by the spectrum's correlation
        # with the template at that RV (NaN: not computed, no judgement): a wrong RV or a
        # spectrum without stellar lines (flat, smooth, noise) must not be labelled usable.
        "rv_unreliable": np.where(rv_measured, ~(ccf_peak >= min_peak), ccf_peak < min_peak),
        "no_good_pixels": np.any(list(dead.values()), axis=0) if dead else np.zeros(len(mask), bool),
    }
    # At an untrustworthy RV no arm correlates: that is the RV's flag, not the arms'.
    for arm in lineless:
        lineless[arm] &= ~criteria["rv_unreliable"]
    criteria["featureless"] = np.any(list(lineless.values()), axis=0) if lineless else np.zeros(len(mask), bool)
    reasons = []
    for i in range(len(mask)):
        why = [f"{arm} arm has no good pixels" for arm in dead if dead[arm][i]]
        why += [
            f"{arm} S/N {snr:.1f} < {config.reject_min_snr:g}"
            for arm, snr in (("blue", snr_blue[i]), ("red", snr_red[i]))
            if low[arm][i]
        ]
        if criteria["bad_pixels"][i]:
            why.append(f"{n_bad[i]} bad pixels > {config.reject_max_bad_pixels}")
        if criteria["bad_run"][i]:
            why.append(f"{runs[i]} consecutive bad pixels > {config.reject_max_bad_run}")
        if criteria["rv_unreliable"][i] and rv_measured[i]:
            why.append(f"RV cross-correlation peak {ccf_peak[i]:.2f} < {min_peak:g} (RV unreliable)")
        elif criteria["rv_unreliable"][i]:
            why.append(
                f"correlation with the RV template at the given RV {ccf_peak[i]:.2f} < {min_peak:g} "
                "(the RV is wrong or the spectrum has no stellar lines)"
            )
        why += [
            f"{arm} arm has no stellar lines (template correlation {arm_peak[arm][i]:.2f} "
            f"< {ccf_settings.min_arm_peak:g})"
            for arm in lineless
            if lineless[arm][i]
        ]
        reasons.append("; ".join(why) if why else "ok")
    usable = ~np.any([criteria[name] for name in FLAG_NAMES], axis=0) if len(mask) else np.zeros(0, bool)
    return QualityFlags(
        snr_blue=snr_blue,
        snr_red=snr_red,
        bad_fraction=n_bad / max(mask.shape[1], 1),
        longest_bad_run=runs,
        n_bad=n_bad.astype(np.int64),
        ccf_peak=ccf_peak,
        usable=usable,
        reason=reasons,
        **{name: np.asarray(criteria[name], dtype=bool) for name in FLAG_NAMES},
    )


def estimate_snr(flux: np.ndarray, ivar: np.ndarray | None, bad: np.ndarray) -> float:
    """Median per-pixel S/N over good pixels: the fallback when a header has no SNR."""
    if ivar is None:
        return float("nan")
    good = ~bad & (np.asarray(ivar) > 0) & np.isfinite(flux)
    if not good.any():
        return 0.0
    return float(np.median(flux[good] * np.sqrt(np.asarray(ivar)[good])))


# ------------------------------------------------------------ batch driver
@dataclass
class _CleanArm:
    wave: np.ndarray
    flux: np.ndarray
    bad: np.ndarray
    snr: float
    ivar: np.ndarray | None = None  # the arm's ivar as read (None when it has none)


class _IvarSource(NamedTuple):
    """What PreprocessedSpectra.ivar is made from on first use: _grid_ivar's arguments but the mask."""

    arms: Sequence[tuple[_CleanArm, _CleanArm]]
    rv: np.ndarray
    arm_waves: Sequence[np.ndarray]
    config: PreprocessConfig
    continuum: np.ndarray


def _clean_arm(arm) -> _CleanArm:
    wave = np.asarray(arm.wave, dtype=np.float64)
    unusable = getattr(arm, "unusable", None)
    flux, bad = repair_bad_pixels(wave, arm.flux, getattr(arm, "mask", None) if unusable is None else unusable)
    snr = getattr(arm, "snr", float("nan"))
    snr = float("nan") if snr is None else float(snr)
    raw_ivar = getattr(arm, "ivar", None)
    if not np.isfinite(snr):
        snr = estimate_snr(np.asarray(arm.flux, float), raw_ivar, bad)
    return _CleanArm(wave, flux, bad, snr, raw_ivar)


def _resample_batch(
    arms: Sequence[tuple[_CleanArm, _CleanArm]],
    rv: np.ndarray,
    arm_waves: Sequence[np.ndarray],
    config: PreprocessConfig,
):
    """Shift each pair by its rv and resample both arms onto arm_waves (blue, red)."""
    n, m = len(arms), sum(w.size for w in arm_waves)
    flux, bad = np.empty((n, m)), np.empty((n, m), dtype=bool)
    for i, pair in enumerate(arms):
        start = 0
        for arm, target in zip(pair, arm_waves):
            part = slice(start, start + target.size)
            flux[i, part], bad[i, part] = resample(rest_frame(arm.wave, rv[i], config), arm.flux, arm.bad, target)
            start += target.size
    return flux, bad


def _grid_ivar(
    arms: Sequence[tuple[_CleanArm, _CleanArm]],
    rv: np.ndarray,
    arm_waves: Sequence[np.ndarray],
    config: PreprocessConfig,
    continuum: np.ndarray,
    mask: np.ndarray,
) -> np.ndarray:
    """PreprocessedSpectra.ivar: each arm's ivar (0 at its bad pixels) resampled like the
    flux, then normalised by the continuum; 0 where ``mask``. float32 (n, m)."""
    n, m = len(arms), sum(w.size for w in arm_waves)
    ivar = np.zeros((n, m))
    for i, pair in enumerate(arms):
        start = 0
        for arm, target in zip(pair, arm_waves):
            part = slice(start, start + target.size)
            if arm.ivar is not None:
                raw = np.asarray(arm.ivar, dtype=np.float64)
                clean = np.where(arm.bad | ~np.isfinite(raw), 0.0, raw)
                ivar[i, part] = resample_ivar(rest_frame(arm.wave, rv[i], config), clean, target)
            start += target.size
    return normalised_ivar(ivar, continuum, mask).astype(np.float32)


def _rv_request(rv, n: int) -> np.ndarray:
    """rv argument -> (n,) array, NaN where it must be measured."""
    if rv is None:
        return np.full(n, np.nan)
    values = np.asarray(rv, dtype=np.float64)
    if values.ndim == 0:
        values = np.full(n, float(values))
    if values.shape != (n,):
        raise SpemrError(f"rv: expected one value or {n} values (one per spectrum), got {values.size}")
    if np.isinf(values).any():
        raise SpemrError(f"rv: {values[np.isinf(values)][0]} km/s is not a velocity (NaN means measure)")
    return values.copy()


def _observation_waves(grid: InputGrid, settings: rvmod.CCFSettings, c_kms: float):
    """Observed-frame grids for the RV search: each arm's grid widened by the search range."""
    factor = 1.0 + settings.search_kms / c_kms
    waves = []
    for arm in grid.arms:
        low = int(np.ceil((arm.start - arm.start / factor) / arm.step))
        high = int(np.ceil((arm.stop * factor - arm.stop) / arm.step))
        waves.append(arm.start + arm.step * np.arange(-low, arm.n_pixels + high))
    return waves


def measure_pairs_rv(
    cleaned,
    template=None,
    grid: InputGrid | None = None,
    config: PreprocessConfig | None = None,
    settings: rvmod.CCFSettings | None = None,
) -> rvmod.RVResult:
    """RV by CCF for cleaned arm pairs: normalise in the observed frame on the widened
    grid (same continuum algorithm), then cross-correlate with the template."""
    grid, config = grid or default_grid(), config or preprocess_config()
    settings = settings or rvmod.CCFSettings()
    waves = _observation_waves(grid, settings, config.speed_of_light_kms)
    flux, bad = _resample_batch(cleaned, np.zeros(len(cleaned)), waves, config)
    start = 0
    for wave in waves:
        part = slice(start, start + wave.size)
        flux[:, part], cont_bad = normalise(wave, flux[:, part], config)
        bad[:, part] |= cont_bad
        start += wave.size
    return rvmod.measure_rv(np.concatenate(waves), flux, bad, template, settings)


def preprocess_pairs(
    pairs,
    rv=None,
    rv_template=None,
    config: PreprocessConfig | None = None,
    grid: InputGrid | None = None,
    ccf_settings: rvmod.CCFSettings | None = None,
) -> PreprocessedSpectra:
    """Arm pairs (spemr_engine.reading.lamost.ArmPair or anything with .blue/.red arms having
    wave, flux, mask, snr, extname) -> the SPEMR input on the grid, with flags.

    rv: None (measure every spectrum by CCF), a float for all, or one value per pair
    (NaN = measure that one). rv_template: (wave, flux) rest-frame template for the CCF;
    default: the shipped line-list template."""
    grid, config = grid or default_grid(), config or preprocess_config()
    pairs = list(pairs)
    n = len(pairs)
    cleaned = [(_clean_arm(p.blue), _clean_arm(p.red)) for p in pairs]
    rv_used = _rv_request(rv, n)
    rv_err = np.zeros(n)
    ccf_peak = np.full(n, np.nan)
    measure = ~np.isfinite(rv_used)
    if measure.any():
        todo = np.flatnonzero(measure)
        found = measure_pairs_rv([cleaned[i] for i in todo], rv_template, grid, config, ccf_settings)
        rv_used[todo], rv_err[todo], ccf_peak[todo] = found.rv, found.rv_err, found.ccf_peak
    arm_waves = [arm.wave for arm in grid.arms]
    flux, bad = _resample_batch(cleaned, rv_used, arm_waves, config)
    continuum = np.empty_like(flux)
    flux, continuum_bad = normalise_grid(flux, grid, config, continuum_out=continuum)
    bad |= continuum_bad
    given = np.flatnonzero(~measure)
    if given.size:
        ccf_peak[given] = rvmod.template_correlation(grid.wave, flux[given], bad[given], rv_template)
    arm_peak = {
        arm: rvmod.template_correlation(grid.wave[part], flux[:, part], bad[:, part], rv_template)
        for arm, part in grid.arm_slices().items()
    }
    quality = quality_flags(
        bad,
        [b.snr for b, _ in cleaned],
        [r.snr for _, r in cleaned],
        ccf_peak,
        measure,
        grid,
        config,
        ccf_settings,
        arm_peak,
    )
    return PreprocessedSpectra(
        wave=grid.wave,
        flux=flux.astype(np.float32).reshape(n, grid.n_pixels),
        mask=bad.reshape(n, grid.n_pixels),
        rv=rv_used,
        rv_err=rv_err,
        rv_source=[RV_CCF if m else RV_GIVEN for m in measure],
        quality=quality,
        extname_blue=[str(getattr(p.blue, "extname", "")) for p in pairs],
        extname_red=[str(getattr(p.red, "extname", "")) for p in pairs],
        _ivar_source=_IvarSource(cleaned, rv_used, arm_waves, config, continuum),
    )
