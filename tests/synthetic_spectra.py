"""Synthetic MRS-like arm pairs for preprocessing and RV tests: the shipped line list
rendered as a star (optionally with perturbed depths and widths so the template does
not match exactly), Doppler-shifted, times a curved instrumental continuum, plus noise."""

from __future__ import annotations

import dataclasses

import numpy as np

from spemr_engine.config import preprocess_config
from spemr_engine.reading.lamost import Arm, ArmPair
from spemr_engine.preprocessing.rv import line_spectrum, load_line_list

# Raw coverage of real MRS arms (reference notes section 7), wider than the model grid.
COVERAGE = {"B": (4894.0, 5378.0), "R": (6292.0, 6851.0)}
N_RAW_PIXELS = 4000


def star_lines(rng: np.random.Generator | None = None, scatter: float = 0.0):
    """The line list, each depth and width scaled by up to +-scatter (template mismatch)."""
    lines = load_line_list()
    if rng is None or scatter == 0:
        return lines
    return tuple(
        dataclasses.replace(
            line,
            depth=min(line.depth * rng.uniform(1 - scatter, 1 + scatter), 0.95),
            fwhm=line.fwhm * rng.uniform(1.0, 1 + scatter),
        )
        for line in lines
    )


def synthetic_arm(
    side: str,
    rv: float,
    snr: float,
    rng: np.random.Generator,
    lines,
    extname: str | None = None,
    n_pixels: int = N_RAW_PIXELS,
) -> Arm:
    low, high = COVERAGE[side]
    wave = np.logspace(np.log10(low), np.log10(high), n_pixels)
    c = preprocess_config().speed_of_light_kms
    star = line_spectrum(wave / (1.0 + rv / c), lines)
    t = (wave - wave.mean()) / (high - low)
    continuum = 800.0 * (1.0 + 0.5 * t - 0.8 * t**2 + 0.3 * t**3)
    sigma = continuum / snr
    flux = star * continuum + rng.normal(0.0, 1.0, n_pixels) * sigma
    return Arm(
        extname=extname or f"COADD_{side}",
        side=side,
        wave=wave,
        flux=flux,
        ivar=1.0 / sigma**2,
        mask=np.zeros(n_pixels, dtype=bool),
        snr=float(snr),
        exptime=None,
        lmjm=None,
    )


def synthetic_pair(rv: float, snr: float = 50.0, seed: int = 0, scatter: float = 0.0) -> ArmPair:
    rng = np.random.default_rng(seed)
    lines = star_lines(rng, scatter)
    return ArmPair(blue=synthetic_arm("B", rv, snr, rng, lines), red=synthetic_arm("R", rv, snr, rng, lines), lmjm=None)
