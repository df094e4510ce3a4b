"""Arrays the spectrum plots show, computed without Qt so they can be tested and
exported exactly as plotted: raw flux with its ivar-based 1-sigma error, the masked
pixels as wavelength intervals, and the normalised model input on the rest-frame grid.
"""

from __future__ import annotations

import csv
import io
from dataclasses import dataclass

import numpy as np

from spemr_engine.config import default_grid, preprocess_config

ARM_NAMES = {"B": "blue", "R": "red"}


@dataclass
class ArmCurve:
    """One plotted arm: x (Angstrom), y, 1-sigma error (NaN when unknown), mask."""

    arm: str  # "blue" | "red"
    wave: np.ndarray
    flux: np.ndarray
    error: np.ndarray
    mask: np.ndarray  # True = bad pixel
    frame: str  # "observed" | "rest"


def raw_curve(arm) -> ArmCurve:
    """A reader Arm as plotted: error = 1/sqrt(ivar) where ivar > 0. Flux exactly 0
    (or non-finite) is no data (spemr_engine.reading.lamost.pixel_masks): a gap in the curve,
    inside the shaded mask, as the normalised view interpolates over it, never a fake
    line down to 0."""
    ivar = np.asarray(arm.ivar, dtype=np.float64)
    flux = np.asarray(arm.flux, dtype=np.float64)
    no_data = ~np.isfinite(flux) | (flux == 0)
    error = np.full(ivar.shape, np.nan)
    good = (ivar > 0) & ~no_data
    error[good] = 1.0 / np.sqrt(ivar[good])
    return ArmCurve(
        ARM_NAMES.get(arm.side, arm.side),
        np.asarray(arm.wave, float),
        np.where(no_data, np.nan, flux),
        error,
        np.asarray(arm.mask, bool) | no_data,
        "observed",
    )


def raw_curves(pair) -> list[ArmCurve]:
    return [raw_curve(pair.blue), raw_curve(pair.red)]


def normalised_curves(spectra, row: int = 0, grid=None) -> list[ArmCurve]:
    """The continuum-normalised model input of one row, split into the grid's arms."""
    grid = grid or default_grid()
    wave = np.asarray(spectra.wave, dtype=np.float64)
    flux = np.asarray(spectra.flux[row], dtype=np.float64)
    mask = np.asarray(spectra.mask[row], dtype=bool)
    curves = []
    for name, part in grid.arm_slices().items():
        curves.append(
            ArmCurve(name, wave[part], flux[part], np.full(part.stop - part.start, np.nan), mask[part], "rest")
        )
    return curves


def mask_intervals(wave: np.ndarray, mask: np.ndarray) -> list[tuple[float, float]]:
    """Contiguous runs of masked pixels as (start, stop) wavelengths, widened by half a
    pixel on each side so a single bad pixel still shows as a band."""
    wave = np.asarray(wave, dtype=np.float64)
    mask = np.asarray(mask, dtype=bool)
    if wave.size == 0 or not mask.any():
        return []
    edges = np.diff(np.concatenate([[0], mask.astype(np.int8), [0]]))
    starts = np.flatnonzero(edges == 1)
    stops = np.flatnonzero(edges == -1) - 1
    half = np.gradient(wave) / 2 if wave.size > 1 else np.array([0.05])
    return [(float(wave[a] - half[a]), float(wave[b] + half[b])) for a, b in zip(starts, stops)]


def finite_range(values: np.ndarray, lower_pct: float = 0.05, upper_pct: float = 99.5) -> tuple[float, float]:
    """A robust y range (percentiles of finite values) so a few spikes do not flatten
    the plot; (0, 1) when nothing is finite."""
    values = np.asarray(values, dtype=np.float64)
    values = values[np.isfinite(values)]
    if values.size == 0:
        return 0.0, 1.0
    low, high = np.percentile(values, [lower_pct, upper_pct])
    if high <= low:
        high = low + 1.0
    pad = 0.08 * (high - low)
    return float(low - pad), float(high + pad)


def observed_wavelength(rest_wave: np.ndarray | float, rv_kms: float) -> np.ndarray:
    """Where a rest-frame line appears in the observed spectrum (the reference
    doc's rest-frame shift inverted: wave = wave0 * (1 + rv/c))."""
    c = preprocess_config().speed_of_light_kms
    return np.asarray(rest_wave, dtype=np.float64) * (1.0 + float(rv_kms) / c)


def curves_to_csv(curves: list[ArmCurve]) -> str:
    """The plotted data as CSV text: arm, frame, wavelength, flux, error, masked."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(["arm", "frame", "wavelength_angstrom", "flux", "error", "masked"])
    for curve in curves:
        for w, f, e, m in zip(curve.wave, curve.flux, curve.error, curve.mask):
            writer.writerow([curve.arm, curve.frame, f"{w:.4f}", _num(f), _num(e), int(m)])
    return out.getvalue()


def _num(value: float) -> str:
    return "" if not np.isfinite(value) else f"{value:.6g}"


SMOOTHING_KINDS = ("none", "box", "Gaussian")


def smoothing_kernel(kind: str, width: float) -> np.ndarray | None:
    """Normalised kernel: a box of ``width`` pixels, or a Gaussian of sigma ``width``
    pixels (cut at 4 sigma); None for no smoothing."""
    if kind == "box" and width > 0:
        n = max(1, int(round(width)))
        return np.full(n, 1.0 / n)
    if kind == "Gaussian" and width > 0:
        radius = max(1, int(np.ceil(4 * width)))
        x = np.arange(-radius, radius + 1, dtype=np.float64)
        kernel = np.exp(-0.5 * (x / width) ** 2)
        return kernel / kernel.sum()
    return None


def smooth_curve(curve: ArmCurve, kind: str, width: float) -> ArmCurve:
    """The curve smoothed for display (never for the model): a weighted convolution
    over the good pixels only (masked and missing pixels neither contribute nor get
    filled in), the error propagated as sqrt(sum k^2 e^2) / sum k."""
    kernel = smoothing_kernel(kind, width)
    if kernel is None or curve.wave.size == 0:
        return curve
    flux = np.asarray(curve.flux, dtype=np.float64)
    good = np.isfinite(flux) & ~np.asarray(curve.mask, bool)
    weight = np.convolve(good.astype(np.float64), kernel, mode="same")
    total = np.convolve(np.where(good, flux, 0.0), kernel, mode="same")
    with np.errstate(invalid="ignore", divide="ignore"):
        smoothed = np.where(good & (weight > 0), total / weight, np.nan)
        error = np.asarray(curve.error, dtype=np.float64)
        known = good & np.isfinite(error)
        variance = np.convolve(np.where(known, error**2, 0.0), kernel**2, mode="same")
        known_weight = np.convolve(known.astype(np.float64), kernel, mode="same")
        smoothed_error = np.where(known & (known_weight > 0), np.sqrt(variance) / known_weight, np.nan)
    return ArmCurve(curve.arm, curve.wave, smoothed, smoothed_error, curve.mask, curve.frame)
