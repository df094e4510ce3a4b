"""The authors' continuum normalisation written out step by step, as the source of truth
for the tests (read from Chan-0312/RRNet utils/spectra_pretreatment.py,
sp_median_polyfit1stage / csp_polyfit / flux_transform, which yulongzh/SPEMR reuses; our
own code, not theirs). Deliberately independent of spemr_engine.preprocessing.preprocess, so that a
convention shared by the engine and its own literal reference cannot hide here.

Their conventions, as read:
- median filter: scipy.signal.medfilt(flux, 3), i.e. zero-padded at both ends;
- de-spiking: deviation = median - flux, sigma = std(deviation); a pixel is kept when
  -4 sigma < deviation < +3 sigma, every other pixel takes the median value;
- continuum: flux and log10(wave) standardised, 5th-order np.polyfit; deviation = fit -
  flux; pixels not inside (-4 sigma, +3 sigma) take the fit's value; refit until none;
- output: the de-spiked flux (their filter writes into the input array) / continuum.
"""

from __future__ import annotations

import numpy as np
from scipy.signal import medfilt

LOW, HIGH, ORDER = 4.0, 3.0, 5


def authors_despike(flux: np.ndarray) -> np.ndarray:
    flux = np.array(flux, dtype=np.float64)
    median = medfilt(flux, 3)
    deviation = median - flux
    sigma = np.std(deviation)
    keep = (deviation > -LOW * sigma) & (deviation < HIGH * sigma)
    flux[~keep] = median[~keep]
    return flux


def mirrored_despike(flux: np.ndarray) -> np.ndarray:
    """The mistake this file exists to catch: flux - median, edges repeated."""
    flux = np.array(flux, dtype=np.float64)
    median = np.concatenate([[flux[0]], np.median([flux[:-2], flux[1:-1], flux[2:]], axis=0), [flux[-1]]])
    deviation = flux - median
    sigma = np.std(deviation)
    keep = (deviation > -LOW * sigma) & (deviation < HIGH * sigma)
    flux[~keep] = median[~keep]
    return flux


def authors_continuum(wave: np.ndarray, clean: np.ndarray, max_iterations: int = 50) -> np.ndarray:
    x = np.log10(np.asarray(wave, dtype=np.float64))
    x = (x - x.mean()) / x.std()
    centre, scale = clean.mean(), clean.std()
    y = (clean - centre) / scale
    for _ in range(max_iterations):
        fit = np.polyval(np.polyfit(x, y, ORDER), x)
        deviation = fit - y
        sigma = np.std(deviation)
        keep = (deviation > -LOW * sigma) & (deviation < HIGH * sigma)
        if keep.all():
            break
        y[~keep] = fit[~keep]
    return fit * scale + centre


def authors_normalise(wave: np.ndarray, flux: np.ndarray) -> np.ndarray:
    """One arm on the grid -> normalised flux, their way."""
    clean = authors_despike(flux)
    return clean / authors_continuum(wave, clean)


def authors_grid_flux(
    path, extname: str, rv_kms: float, grid_wave: np.ndarray, float32_wavelengths: bool = True
) -> np.ndarray:
    """One arm of a LAMOST file on the grid, their way (get_flux_data): 10**LOGLAM as
    stored (float32, unless float32_wavelengths=False), wave / (1 + rv / c), linear
    interpolation of the raw FLUX (no-data pixels included), stored as float32."""
    from astropy.io import fits
    from scipy.interpolate import interp1d

    with fits.open(path) as hdul:
        data = hdul[extname].data
        loglam = np.array(data["LOGLAM"]) if float32_wavelengths else np.array(data["LOGLAM"], np.float64)
        wave = 10**loglam / (1 + rv_kms / 299792.458)
        return interp1d(wave, np.array(data["FLUX"]), kind="linear")(grid_wave).astype(np.float32)
