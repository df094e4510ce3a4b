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
    taken as solar-scaled ([X/H] = [Fe/H])."""
    from ..preprocess import normalise_grid
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
    for start in range(0, len(ok), BATCH):
        part = filled[start : start + BATCH]
        fine = render(part, sp.typical_broadening(part), version=WORLD)
        normalised, _bad = normalise_grid(sp.sample_fine(fine, wave))
        out[ok[start : start + BATCH]] = normalised
    return out
