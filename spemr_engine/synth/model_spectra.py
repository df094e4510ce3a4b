"""The model spectrum at given labels: what fit-quality measures compare observations with.

    model_spectra(labels (n, 16)) -> flux (n, 7200)

Noiseless, rest-frame, on ``config.default_grid()``, and normalised with the pipeline's
own polynomial pseudo-continuum (``preprocess.normalise_grid``), exactly as the template
library normalises templates rebuilt from seeds, so it is comparable pixel for pixel with
a preprocessed observation. Broadening is deterministic and typical
(``spectrum.typical_broadening``: mean micro/macro-turbulence relations, vsini 2 km/s,
R = 7500).

This is the ONE place that decides how a model spectrum is made: the current synthetic
world (``WORLD`` = the generator's version: 2, atomic lines from the radiative-transfer
emulator), whatever a model was trained on, so fit_chi2 measures how well the labels
reproduce the spectrum in the project's most physical model. Thresholds record the world
they were measured with; a calibration made with another one counts as none.
"""

from __future__ import annotations

import numpy as np

from ..config import default_grid
from .generate import GENERATOR_VERSION

BATCH = 32  # stars rendered at once (the fine grids are ~0.5 MB per star and arm)
WORLD = GENERATOR_VERSION  # synth.generate version whose physics makes the model spectrum


def model_spectra(labels: np.ndarray) -> np.ndarray:
    """(n, 16) labels in config.LABELS order -> (n, 7200) float64 normalised model flux.
    Rows with a non-finite Teff, log g or [Fe/H] come back NaN; other NaN abundances are
    taken as solar-scaled ([X/H] = [Fe/H]). Labels outside what the world renders are
    clipped into it first (presets/synthetic_world.json ``model_spectra_domain``): a
    nonsense prediction then fits badly and is flagged rather than breaking the line model."""
    from ..preprocessing.preprocess import normalise_grid
    from . import spectrum as sp
    from .generate import render

    labels = np.atleast_2d(np.asarray(labels, dtype=np.float64))
    wave = default_grid().wave
    n_pixels = wave.size
    out = np.full((len(labels), n_pixels), np.nan)
    ok = np.flatnonzero(np.isfinite(labels[:, :3]).all(axis=1))
    if not ok.size:
        return out
    filled = labels[ok].copy()
    missing = ~np.isfinite(filled)
    filled[missing] = np.broadcast_to(filled[:, 2:3], filled.shape)[missing]
    filled = clip_to_domain(filled)
    for start in range(0, len(ok), BATCH):
        part = filled[start : start + BATCH]
        fine = render(part, sp.typical_broadening(part), version=WORLD)
        normalised, _bad = normalise_grid(sp.sample_fine(fine, wave))
        out[ok[start : start + BATCH]] = normalised
    return out


def clip_to_domain(labels: np.ndarray) -> np.ndarray:
    """(n, 16) labels in config.LABELS order clipped into ``model_spectra_domain``."""
    from .rt_world import world_settings

    domain = world_settings()["model_spectra_domain"]
    low = np.full(labels.shape[1], domain["abundance"][0])
    high = np.full(labels.shape[1], domain["abundance"][1])
    low[:2], high[:2] = (domain["Teff"][0], domain["Logg"][0]), (domain["Teff"][1], domain["Logg"][1])
    return np.clip(labels, low, high)
