"""The original way of preprocessing one spectrum, as the benchmarks' baseline: open the
file with astropy, shift to the rest frame, scipy interp1d onto the grid, then the
published iterative polynomial continuum one spectrum at a time.

``continuum_reference``/``normalise_reference`` are that continuum written literally with
np.polyfit (the engine's vectorised one is spemr_engine.preprocessing.preprocess.fit_continuum); they
live here, not in the engine, because only this baseline and tests/test_preprocess.py
(which holds the engine against them) use them."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from astropy.io import fits
from scipy import signal
from scipy.interpolate import interp1d

from spemr_engine.config import PreprocessConfig, default_grid, preprocess_config
from spemr_engine.preprocessing.preprocess import _EXACT_FIT_SCATTER, divide_by_continuum


def read_arms(path: Path, blue: str, red: str) -> list[tuple[np.ndarray, np.ndarray]]:
    """(wavelength, flux) of the two extensions, read the plain astropy way."""
    with fits.open(path) as hdul:
        return [(10 ** hdul[e].data["LOGLAM"].astype(float), hdul[e].data["FLUX"].astype(float)) for e in (blue, red)]


def original_spectrum(arms: list[tuple[np.ndarray, np.ndarray]], rv: float) -> np.ndarray:
    """The 7200-pixel normalised input from two (wavelength, flux) arms, one at a time."""
    c = preprocess_config().speed_of_light_kms
    out = []
    for (wave, flux), arm in zip(arms, default_grid().arms):
        order = np.argsort(wave)
        resampled = interp1d(wave[order] / (1 + rv / c), flux[order])(arm.wave)
        out.append(normalise_reference(arm.wave, resampled))
    return np.concatenate(out)


# ------------------------------------------------ the published algorithm, literally
def _despike_reference(flux: np.ndarray, config: PreprocessConfig) -> np.ndarray:
    """The authors' de-spiking step as written in their sp_median_polyfit1stage:
    scipy.signal.medfilt, deviation = median - flux, keep -low sigma < deviation <
    +high sigma, the rest take the median."""
    flux = np.asarray(flux, dtype=np.float64)
    filtered = signal.medfilt(flux, config.median_filter_width)
    deviation = filtered - flux
    sigma = deviation.std()
    keep = (deviation < config.outlier_sigma_high * sigma) & (deviation > -config.outlier_sigma_low * sigma)
    return np.where(keep, flux, filtered)


def _continuum_reference_clean(wave: np.ndarray, clean: np.ndarray, config: PreprocessConfig):
    x = np.log10(np.asarray(wave, dtype=np.float64))
    x = (x - x.mean()) / x.std()
    mean, scale = clean.mean(), clean.std()
    scale = scale if scale > 0 else 1.0
    y = (clean - mean) / scale
    for _ in range(config.continuum_max_iterations):
        fit = np.polyval(np.polyfit(x, y, config.continuum_poly_order), x)
        residual = fit - y
        sigma = residual.std()
        if not sigma > _EXACT_FIT_SCATTER:
            break
        outside = ~((residual > -config.outlier_sigma_low * sigma) & (residual < config.outlier_sigma_high * sigma))
        if not outside.any():
            break
        y[outside] = fit[outside]
    return fit * scale + mean


def continuum_reference(wave: np.ndarray, flux: np.ndarray, config: PreprocessConfig | None = None) -> np.ndarray:
    """Continuum of ONE spectrum, the published algorithm step by step with np.polyfit.
    Takes the raw (not yet de-spiked) flux; returns the continuum of its de-spiked flux."""
    config = config or preprocess_config()
    return _continuum_reference_clean(wave, _despike_reference(flux, config), config)


def normalise_reference(wave: np.ndarray, flux: np.ndarray, config: PreprocessConfig | None = None) -> np.ndarray:
    """One spectrum of one arm normalised the literal way (for tests and the benchmark)."""
    config = config or preprocess_config()
    clean = _despike_reference(flux, config)
    return divide_by_continuum(clean, _continuum_reference_clean(wave, clean, config))[0]
