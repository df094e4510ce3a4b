"""Rest-frame, continuum-normalised synthetic spectra at LAMOST MRS resolution.

A deliberately simple stellar-atmosphere model, vectorised over stars and lines, that
still makes every line respond to the labels the way real lines do:

* line-centre opacity ratio eta0 from gf, abundance ([X/H] of the line's element),
  Boltzmann excitation (chi, theta = 5040/Teff), Saha ionisation balance against an
  electron pressure that rises with Teff, log g and metallicity, and H- continuous
  opacity (so neutral lines of ionised-majority elements barely feel gravity while ion
  lines weaken at high gravity, as in real stars);
* equivalent width from a Voigt curve of growth (linear, saturated, damping part) tabulated
  once; the damping parameter grows with gravity, so strong lines (Mg b, Fe 5270, Ca 6439,
  ...) grow pressure-broadened wings in dwarfs;
* H-alpha with a Doppler core and Stark-like wings that grow steeply with Teff;
* molecular bands (TiO, MgH, C2, CN) as runs of pseudo-lines whose strength rises fast
  below ~4000 K and scales with the abundances of the molecule's atoms;
* broadening: LAMOST MRS line-spread function (R ~ 7500), macro-turbulence and rotation,
  applied as one FFT convolution per arm on a fine log-lambda grid.

Lines are deposited as equivalent-width "sticks" on the fine grid, convolved with each
star's kernel, and the observed absorption A becomes flux exp(-A). Elements with no lines
in the windows (K; S has lines only outside the model grid) leave the grid untouched.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import numpy as np
from scipy import fft as sfft
from scipy import sparse
from scipy.special import voigt_profile

from ..config import LABELS, default_grid, preprocess_config
from .lines import bands, elements, line_table

C_KMS = preprocess_config().speed_of_light_kms
LOG_STEP = 2.0e-6  # fine grid step in log10(lambda): 1.38 km/s
# Fine rest-frame coverage per arm: LAMOST raw coverage plus room for |RV| <= 600 km/s.
FINE_ARMS = {"blue": (4860.0, 5410.0), "red": (6255.0, 6895.0)}
K_BOLTZ_EV = 8.617333e-5
AMU_KG = 1.66054e-27
K_BOLTZ_SI = 1.380649e-23
LN10 = np.log(10.0)
H_ALPHA_VAC = 6564.61
LINE_DEPTH_MAX = 0.92  # source function keeps saturated cores off zero
REF_LINE_EW = 0.35  # Fe I 5232.94 in the Sun [A]: fixes the opacity scale
STRONG_WING_HALFWIDTH = 30.0  # [A] window for resolved damping wings
SOLAR = {"Teff": 5777.0, "Logg": 4.44, "FeH": 0.0, "vmic": 1.0}
HALPHA_LOG_K0 = 0.0  # wing strength scale at solar Teff [log10 A^2.5]
HALPHA_TEFF_SLOPE = 0.9  # dex per 1000 K
HALPHA_LOGG_SLOPE = 0.15
HALPHA_CORE_EXTRA_WIDTH = 0.45  # [A]
HALPHA_DEPTH_MAX = 0.95


# ------------------------------------------------------------ curve of growth
@lru_cache(maxsize=1)
def _cog_table():
    """Reduced equivalent width W / dlambda_D = integral of (1 - exp(-eta H(a, v))) dv,
    on a (log eta, log a) grid. H is the Voigt function with H(0, 0) = 1."""
    log_eta = np.linspace(-4.0, 9.0, 131)
    log_a = np.linspace(-4.0, 0.5, 19)
    v = np.concatenate([np.linspace(0, 8, 801)[:-1], np.geomspace(8, 3e5, 700)])
    table = np.empty((log_eta.size, log_a.size))
    for j, la in enumerate(log_a):
        h = np.sqrt(np.pi) * voigt_profile(v, 1 / np.sqrt(2), 10**la)
        absorbed = -np.expm1(-np.outer(10**log_eta, h))
        table[:, j] = 2 * np.trapezoid(absorbed, v, axis=1)
    return log_eta, log_a, np.log10(table)


def reduced_width(log_eta: np.ndarray, log_a: np.ndarray) -> np.ndarray:
    """Bilinear interpolation in the curve-of-growth table (clamped at its edges)."""
    le, la, table = _cog_table()
    x = np.clip((log_eta - le[0]) / (le[1] - le[0]), 0, le.size - 1.000001)
    y = np.clip((log_a - la[0]) / (la[1] - la[0]), 0, la.size - 1.000001)
    i, j = x.astype(int), y.astype(int)
    fx, fy = x - i, y - j
    value = (
        table[i, j] * (1 - fx) * (1 - fy)
        + table[i + 1, j] * fx * (1 - fy)
        + table[i, j + 1] * (1 - fx) * fy
        + table[i + 1, j + 1] * fx * fy
    )
    # Below the table the curve of growth is linear (W proportional to eta): extend it.
    return np.where(log_eta < le[0], value + (log_eta - le[0]), value)


# ------------------------------------------------------------ stellar physics
@dataclass
class Broadening:
    """Per-star nuisance parameters that shape lines but are not labels."""

    vmic: np.ndarray  # km/s micro-turbulence
    vmac: np.ndarray  # km/s macro-turbulence (Gaussian sigma)
    vsini: np.ndarray  # km/s projected rotation
    resolution: np.ndarray  # instrument R (FWHM)
    # Strength of the empirical H-alpha core relative to the calibrated one (generator
    # version 2 only; None = 1): chromospheric cores differ from star to star.
    halpha_core: np.ndarray | None = None

    def __len__(self) -> int:
        return int(self.vmic.size)

    def take(self, index) -> "Broadening":
        core = None if self.halpha_core is None else np.atleast_1d(self.halpha_core[index])
        vmic, vmac, vsini, resolution = (
            np.atleast_1d(getattr(self, f)[index]) for f in ("vmic", "vmac", "vsini", "resolution")
        )
        return Broadening(vmic, vmac, vsini, resolution, halpha_core=core)


TYPICAL_VSINI_KMS = 2.0  # typical_broadening: a slow rotator, below the fine grid's
# rotation threshold (1.5 pixels), so no rotation kernel
TYPICAL_RESOLUTION = 7500.0
VMIC_RANGE, VMAC_RANGE = (0.5, 3.0), (0.5, 8.0)


def _mean_vmic(teff, logg):
    return 2.1 - 0.28 * logg + 0.25e-3 * (teff - 5500)


def _mean_vmac(teff, logg):
    return 2.0 + 0.8e-3 * (teff - 4500) + 0.4 * (4.5 - logg) * 0.5


def sample_broadening(labels: np.ndarray, rng: np.random.Generator) -> Broadening:
    """Micro/macro-turbulence from Teff and log g (giants and hot stars more turbulent),
    rotation: slow for cool stars, fast tail above the Kraft break (~6200 K)."""
    teff, logg = labels[:, 0], labels[:, 1]
    n = len(labels)
    vmic = np.clip(_mean_vmic(teff, logg) + rng.normal(0, 0.12, n), *VMIC_RANGE)
    vmac = np.clip(_mean_vmac(teff, logg) + rng.normal(0, 0.5, n), *VMAC_RANGE)
    fast = np.clip((teff - 6000) / 800, 0, 1)
    vsini = np.where(
        rng.random(n) < fast, rng.lognormal(np.log(30), 0.6, n), rng.exponential(2.5, n) + 1.0 * (logg < 3.5)
    )
    resolution = rng.normal(7500, 250, n)
    return Broadening(vmic, vmac, np.clip(vsini, 0, 150), np.clip(resolution, 6800, 8200))


def typical_broadening(labels: np.ndarray) -> Broadening:
    """The broadening sample_broadening scatters around, without noise: its mean micro-
    and macro-turbulence relations, a slow rotator and the nominal resolution."""
    labels = np.atleast_2d(np.asarray(labels, dtype=np.float64))
    teff, logg = labels[:, 0], labels[:, 1]
    n = len(labels)
    return Broadening(
        np.clip(_mean_vmic(teff, logg), *VMIC_RANGE),
        np.clip(_mean_vmac(teff, logg), *VMAC_RANGE),
        np.full(n, TYPICAL_VSINI_KMS),
        np.full(n, TYPICAL_RESOLUTION),
    )


def electron_pressure_log(teff, logg, feh):
    """log10 Pe [dyn cm^-2] in the line-forming layers: a fit to model atmospheres'
    behaviour (Pe ~ g^(1/3), rising steeply with Teff, more electron donors when metal-rich)."""
    return 1.15 + 8.0 * np.log10(teff / 5777.0) + (logg - 4.44) / 3.0 + 0.3 * feh


def continuum_opacity_log(theta, log_pe):
    """H- bound-free opacity per H atom, up to a constant: Pe theta^2.5 10^(0.754 theta)."""
    return log_pe + 2.5 * np.log10(theta) + 0.754 * theta


class _LineArrays:
    """Line data turned into arrays once (element constants per line, label columns)."""

    def __init__(self):
        table, elem = line_table(), elements()
        self.table = table
        self.wave = table.wave
        self.log_wave = np.log10(table.wave)
        sym = table.element
        self.A_sun = np.array([elem[s].A_sun for s in sym])
        self.chi_ion = np.array([elem[s].chi_ion for s in sym])
        self.log_2u = np.array([elem[s].log_2u_ratio for s in sym])
        self.mass = np.array([elem[s].mass for s in sym])
        self.label_col = np.array([LABELS.index(elem[s].label) for s in sym])
        self.ion = table.ion
        self.chi = table.chi
        self.loggf = table.loggf
        self.strong = table.strong


@lru_cache(maxsize=1)
def _line_arrays() -> _LineArrays:
    return _LineArrays()


def _log_doppler_width(wave, teff, vmic, mass):
    """log10 Doppler width [A]: thermal motion of the absorber plus micro-turbulence."""
    v2 = 2 * K_BOLTZ_SI * teff[:, None] / (mass[None, :] * AMU_KG) / 1e6 + vmic[:, None] ** 2
    return np.log10(wave[None, :] / C_KMS) + 0.5 * np.log10(v2)


def _log_eta_unscaled(lines: _LineArrays, teff, logg, feh, x_h, vmic):
    """log10 eta0 up to the global opacity constant; shapes (n, L)."""
    theta = (5040.0 / teff)[:, None]
    log_pe = electron_pressure_log(teff, logg, feh)[:, None]
    log_t = np.log10(teff)[:, None]
    log_phi = lines.log_2u[None, :] + 2.5 * log_t - theta * lines.chi_ion[None, :] - 0.48
    ratio = log_phi - log_pe  # log N_II / N_I
    log_frac = np.where(
        lines.ion[None, :] == 1, -np.logaddexp(0, ratio * LN10) / LN10, ratio - np.logaddexp(0, ratio * LN10) / LN10
    )
    log_dop = _log_doppler_width(lines.wave, teff, vmic, lines.mass)
    return (
        (
            lines.loggf[None, :]
            + lines.A_sun[None, :]
            - 12.0
            + x_h
            + log_frac
            - theta * lines.chi[None, :]
            - continuum_opacity_log(theta, log_pe)
            + 2 * np.log10(lines.wave / 5000.0)[None, :]
            - log_dop
        ),
        log_dop,
        theta,
    )


def _log_damping(lines: _LineArrays, logg, theta, log_dop):
    """log10 Voigt a: van der Waals broadening grows with pressure (gravity) and for the
    strong, low-excitation lines; divided by the Doppler width."""
    base = np.where(lines.strong, -0.6, -1.6)[None, :]
    return base + 0.4 * (logg[:, None] - 4.44) + 0.3 * (theta - 0.87) - (log_dop - np.log10(0.035))


@lru_cache(maxsize=1)
def _opacity_constant() -> float:
    """The global constant that gives Fe I 5232.94 its solar equivalent width."""
    lines = _line_arrays()
    ref = int(np.argmin(np.abs(lines.wave - 5234.4)))
    one = lambda v: np.array([v], dtype=float)
    x_h = np.zeros((1, len(lines.wave)))
    log_eta, log_dop, theta = _log_eta_unscaled(
        lines, one(SOLAR["Teff"]), one(SOLAR["Logg"]), one(0.0), x_h, one(SOLAR["vmic"])
    )
    log_a = _log_damping(lines, one(SOLAR["Logg"]), theta, log_dop)
    lo, hi = -10.0, 30.0
    for _ in range(60):
        mid = 0.5 * (lo + hi)
        w = LINE_DEPTH_MAX * 10 ** (log_dop[0, ref] + reduced_width(log_eta[0, ref] + mid, log_a[0, ref]))
        lo, hi = (mid, hi) if w < REF_LINE_EW else (lo, mid)
    return 0.5 * (lo + hi)


def line_widths(labels: np.ndarray, vmic: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Equivalent widths [A] of every atomic line for every star, and the part of it in
    damping wings (non-zero for strong lines only). Shapes (n, L)."""
    lines = _line_arrays()
    teff, logg, feh = labels[:, 0], labels[:, 1], labels[:, 2]
    x_h = labels[:, lines.label_col]
    log_eta, log_dop, theta = _log_eta_unscaled(lines, teff, logg, feh, x_h, vmic)
    log_eta = log_eta + _opacity_constant()
    log_a = _log_damping(lines, logg, theta, log_dop)
    total = LINE_DEPTH_MAX * 10 ** (log_dop + reduced_width(log_eta, log_a))
    core = LINE_DEPTH_MAX * 10 ** (log_dop + reduced_width(log_eta, np.full_like(log_a, -4.0)))
    wing = np.where(lines.strong[None, :], np.clip(total - core, 0, None), 0.0)
    return total, wing


def band_widths(labels: np.ndarray) -> list[np.ndarray]:
    """Total equivalent width [A] of each molecular band per star (list over bands)."""
    theta = 5040.0 / labels[:, 0]
    logg = labels[:, 1]
    out = []
    for band in bands():
        abundance = sum(labels[:, LABELS.index(_label_of(sym))] for sym in band.elements)
        log_w = (
            band.log_strength
            + abundance
            + band.theta_slope * (theta - 5040.0 / 3600.0)
            + band.logg_slope * (logg - 4.5)
        )
        # A band saturates: it cannot absorb more than its extent.
        w = 10 ** np.minimum(log_w, 3.0)
        out.append(band.extent * 0.6 * (1 - np.exp(-w / (band.extent * 0.6))))
    return out


def _label_of(symbol: str) -> str:
    label = elements()[symbol].label
    if label is None:
        raise ValueError(f"element {symbol} has no label")
    return label


# ------------------------------------------------------------ fine grid + rendering
@dataclass(frozen=True)
class FineArm:
    name: str
    log_start: float
    n: int

    @property
    def log_wave(self) -> np.ndarray:
        return self.log_start + LOG_STEP * np.arange(self.n)

    @property
    def wave(self) -> np.ndarray:
        return 10**self.log_wave


@lru_cache(maxsize=None)
def fine_arms() -> tuple[FineArm, ...]:
    out = []
    for name, (lo, hi) in FINE_ARMS.items():
        start = np.log10(lo)
        out.append(FineArm(name, start, int(np.ceil((np.log10(hi) - start) / LOG_STEP))))
    return tuple(out)


def _deposit_matrix(arm: FineArm, wave: np.ndarray) -> sparse.csr_matrix:
    """(n_lines, arm.n) linear-interpolation weights that put each line's equivalent
    width [A] into fine pixels as absorption density (per pixel, dimensionless)."""
    pos = (np.log10(wave) - arm.log_start) / LOG_STEP
    inside = (pos >= 0) & (pos < arm.n - 1)
    i = np.floor(np.where(inside, pos, 0)).astype(int)
    f = np.where(inside, pos - i, 0)
    pixel_width = wave * LN10 * LOG_STEP
    w0 = np.where(inside, (1 - f) / pixel_width, 0)
    w1 = np.where(inside, f / pixel_width, 0)
    rows = np.concatenate([np.arange(wave.size)] * 2)
    return sparse.csr_matrix((np.concatenate([w0, w1]), (rows, np.concatenate([i, i + 1]))), shape=(wave.size, arm.n))


@lru_cache(maxsize=None)
def _arm_setup(name: str):
    arm = next(a for a in fine_arms() if a.name == name)
    lines = _line_arrays()
    atomic = _deposit_matrix(arm, lines.wave)
    band_parts = []
    for band in bands():
        wave, weight = band.pseudo_lines()
        # One fixed absorption-density shape per band (weights sum to 1): scaled per star.
        band_parts.append(np.asarray(_deposit_matrix(arm, wave).T @ weight).ravel())
    strong = np.flatnonzero(lines.strong & (lines.wave > arm.wave[0]) & (lines.wave < arm.wave[-1]))
    return arm, atomic.T.tocsr(), band_parts, strong


def _wing_profiles(arm: FineArm, wing_width, strong_index, out):
    """Add resolved damping wings: depth 1 - exp(-c / dlambda^2) whose area is the wing
    equivalent width (c = (W / 2 sqrt(pi))^2)."""
    lines = _line_arrays()
    wave = arm.wave
    for li in strong_index:
        w = wing_width[:, li]
        if not np.any(w > 1e-4):
            continue
        centre = lines.wave[li]
        lo, hi = np.searchsorted(wave, [centre - STRONG_WING_HALFWIDTH, centre + STRONG_WING_HALFWIDTH])
        d = wave[lo:hi] - centre
        c = (w / (2 * np.sqrt(np.pi))) ** 2
        core = 0.02 + 2e-3 * centre / 5000
        out[:, lo:hi] += -np.expm1(-c[:, None] / (d[None, :] ** 2 + core**2))


def _halpha(arm: FineArm, labels, vmic, out):
    """H-alpha: saturated Doppler core plus Stark-like wings, tau ~ K / dlambda^2.5, with
    K rising steeply with Teff (population of n = 2)."""
    wave = arm.wave
    if not (wave[0] < H_ALPHA_VAC < wave[-1]):
        return
    teff, logg = labels[:, 0], labels[:, 1]
    lo, hi = np.searchsorted(wave, [H_ALPHA_VAC - 60, H_ALPHA_VAC + 60])
    d = wave[lo:hi] - H_ALPHA_VAC
    log_k = HALPHA_LOG_K0 + HALPHA_TEFF_SLOPE * (teff - 5777) / 1000 + HALPHA_LOGG_SLOPE * (logg - 4.44)
    tau_wing = 10 ** log_k[:, None] / (d[None, :] ** 2 + 0.25) ** 1.25
    doppler = H_ALPHA_VAC / C_KMS * np.sqrt(2 * K_BOLTZ_SI * teff / (1.008 * AMU_KG) / 1e6 + vmic**2)
    # Fine structure, Stark and non-LTE effects widen the real core well beyond Doppler.
    doppler = np.sqrt(doppler**2 + HALPHA_CORE_EXTRA_WIDTH**2)
    tau_core = (
        30
        * np.clip(10 ** (0.5 * (teff - 5777) / 1000), 0.05, 20)[:, None]
        * np.exp(-((d[None, :] / doppler[:, None]) ** 2))
    )
    out[:, lo:hi] += HALPHA_DEPTH_MAX * -np.expm1(-(tau_wing + tau_core))


def _kernel_spectrum(n_fft: int, broadening: Broadening, applied_sigma_kms: float = 0.0) -> np.ndarray:
    """rFFT of each star's broadening kernel (instrument LSF + macro-turbulence: Gaussian;
    rotation: Gray's profile, limb darkening 0.6), on the fine grid's velocity pixels.
    ``applied_sigma_kms``: a Gaussian the spectrum already has (removed in quadrature)."""
    dv = C_KMS * LN10 * LOG_STEP
    lsf_sigma2 = np.clip((C_KMS / broadening.resolution / 2.3548) ** 2 - applied_sigma_kms**2, 0, None)
    sigma = np.sqrt(lsf_sigma2 + broadening.vmac**2) / dv
    freq = np.fft.rfftfreq(n_fft)
    spectrum = np.exp(-2 * (np.pi * freq[None, :] * sigma[:, None]) ** 2).astype(np.complex128)
    rotating = np.flatnonzero(broadening.vsini > 1.5 * dv)
    if rotating.size:
        half = int(np.ceil(broadening.vsini[rotating].max() / dv)) + 1
        x = np.arange(-half, half + 1) * dv
        eps = 0.6
        u = np.clip(1 - (x[None, :] / broadening.vsini[rotating, None]) ** 2, 0, None)
        kernel = 2 * (1 - eps) * np.sqrt(u) + 0.5 * np.pi * eps * u
        kernel /= kernel.sum(axis=1, keepdims=True)
        padded = np.zeros((rotating.size, n_fft))
        padded[:, : half + 1] = kernel[:, half:]
        padded[:, -half:] = kernel[:, :half]
        spectrum[rotating] *= sfft.rfft(padded, axis=1)
    return spectrum


def render_arm(
    name: str,
    labels: np.ndarray,
    broadening: Broadening,
    widths: np.ndarray | None = None,
    wings: np.ndarray | None = None,
) -> np.ndarray:
    """Normalised rest-frame flux (n, arm.n) on the fine grid of arm ``name``."""
    if widths is None or wings is None:
        widths, wings = line_widths(labels, broadening.vmic)
    absorption = atomic_absorption(name, widths, wings) + band_absorption(name, labels)
    _halpha(fine_arm(name), labels, broadening.vmic, absorption)
    return np.exp(-np.clip(convolve(absorption, broadening), 0, None))


def fine_arm(name: str) -> FineArm:
    return _arm_setup(name)[0]


def atomic_absorption(name: str, widths: np.ndarray, wings: np.ndarray) -> np.ndarray:
    """Unbroadened absorption density of the atomic lines (sticks + resolved strong wings)."""
    arm, atomic, _bands, strong = _arm_setup(name)
    absorption = np.ascontiguousarray((atomic @ (widths - wings).T).T)
    _wing_profiles(arm, wings, strong, absorption)
    return absorption


def band_absorption(name: str, labels: np.ndarray) -> np.ndarray:
    """Unbroadened absorption density of the molecular bands (empirical pseudo-lines)."""
    arm, _atomic, band_parts, _strong = _arm_setup(name)
    absorption = np.zeros((len(labels), arm.n))
    for shape, band_w in zip(band_parts, band_widths(labels)):
        if shape.any():
            absorption += band_w[:, None] * shape[None, :]
    return absorption


def convolve(values: np.ndarray, broadening: Broadening, applied_sigma_kms: float = 0.0) -> np.ndarray:
    """Each row (on its arm's fine grid) convolved with that star's broadening kernel."""
    n = values.shape[1]
    n_fft = sfft.next_fast_len(n + 2048, real=True)
    transformed = sfft.rfft(values, n=n_fft, axis=1, workers=-1)
    transformed *= _kernel_spectrum(n_fft, broadening, applied_sigma_kms)
    return sfft.irfft(transformed, n=n_fft, axis=1, workers=-1)[:, :n]


def gaussian_smooth(values: np.ndarray, sigma_kms: float) -> np.ndarray:
    """Rows on a fine grid convolved with one Gaussian of sigma [km/s] (FFT, zero-padded)."""
    n = values.shape[1]
    n_fft = sfft.next_fast_len(n + 2048, real=True)
    sigma = sigma_kms / (C_KMS * LN10 * LOG_STEP)
    kernel = np.exp(-2 * (np.pi * np.fft.rfftfreq(n_fft) * sigma) ** 2)
    return sfft.irfft(sfft.rfft(values, n=n_fft, axis=1, workers=-1) * kernel, n=n_fft, axis=1, workers=-1)[:, :n]


def render(labels: np.ndarray, broadening: Broadening) -> dict[str, np.ndarray]:
    """Fine-grid normalised rest-frame flux per arm for a batch of stars."""
    labels = np.atleast_2d(np.asarray(labels, dtype=np.float64))
    widths, wings = line_widths(labels, broadening.vmic)
    return {arm.name: render_arm(arm.name, labels, broadening, widths, wings) for arm in fine_arms()}


def sample_fine(fine: dict[str, np.ndarray], wave: np.ndarray, rv_kms: np.ndarray | float = 0.0) -> np.ndarray:
    """Interpolate fine-grid spectra (one row per star) at observed vacuum wavelengths
    ``wave`` (1-D, shared, or 2-D per star) for a star moving at ``rv_kms``."""
    n = next(iter(fine.values())).shape[0]
    rv = np.broadcast_to(np.asarray(rv_kms, dtype=np.float64), (n,))
    wave = np.broadcast_to(np.atleast_2d(wave), (n, np.shape(wave)[-1]))
    out = np.ones(wave.shape)
    log_rest = np.log10(wave) - np.log10(1 + rv / C_KMS)[:, None]
    for arm in fine_arms():
        pos = (log_rest - arm.log_start) / LOG_STEP
        inside = (pos >= 0) & (pos < arm.n - 1)
        if not inside.any():
            continue
        i = np.clip(np.floor(pos).astype(int), 0, arm.n - 2)
        f = pos - i
        rows = np.arange(n)[:, None]
        values = fine[arm.name][rows, i] * (1 - f) + fine[arm.name][rows, i + 1] * f
        out = np.where(inside, values, out)
    return out


def normalised_on_grid(labels: np.ndarray, broadening: Broadening) -> tuple[np.ndarray, np.ndarray]:
    """Noiseless rest-frame normalised spectra on the model's input grid: (wave, (n, 7200)).
    This is the 'template' view of a star: no continuum, noise or instrument defects."""
    wave = default_grid().wave
    return wave, sample_fine(render(labels, broadening), wave)
