"""The original way of preprocessing one spectrum, as the benchmarks' baseline: open the
file with astropy, shift to the rest frame, scipy interp1d onto the grid, then the
published iterative polynomial continuum one spectrum at a time."""
from __future__ import annotations

from pathlib import Path

import numpy as np
from astropy.io import fits
from scipy.interpolate import interp1d

from spemr_engine.config import default_grid, preprocess_config
from spemr_engine.preprocess import normalise_reference


def read_arms(path: Path, blue: str, red: str) -> list[tuple[np.ndarray, np.ndarray]]:
    """(wavelength, flux) of the two extensions, read the plain astropy way."""
    with fits.open(path) as hdul:
        return [(10 ** hdul[e].data["LOGLAM"].astype(float), hdul[e].data["FLUX"].astype(float))
                for e in (blue, red)]


def original_spectrum(arms: list[tuple[np.ndarray, np.ndarray]], rv: float) -> np.ndarray:
    """The 7200-pixel normalised input from two (wavelength, flux) arms, one at a time."""
    c = preprocess_config().speed_of_light_kms
    out = []
    for (wave, flux), arm in zip(arms, default_grid().arms):
        order = np.argsort(wave)
        resampled = interp1d(wave[order] / (1 + rv / c), flux[order])(arm.wave)
        out.append(normalise_reference(arm.wave, resampled))
    return np.concatenate(out)
