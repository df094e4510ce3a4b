"""Small learnable reference sets for training/evaluation tests.

Spectra are a continuum of 1 minus absorption lines whose depths depend linearly on the
labels, plus noise: simple, fast, and learnable in a few epochs by the tiny RRNet.
Labels cover all four default regions."""

from __future__ import annotations

import numpy as np

from spemr_engine.config import LABELS, default_grid
from spemr_engine.training.refset import ReferenceSet, ReferenceSetWriter

N_LINES = 48


def synthetic_labels(rng: np.random.Generator, n: int) -> np.ndarray:
    teff = rng.uniform(3600, 7400, n)
    logg = rng.uniform(0.5, 5.0, n)
    feh = rng.uniform(-2.2, 0.5, n)
    abundances = feh[:, None] + rng.normal(0, 0.15, (n, len(LABELS) - 3))
    return np.column_stack([teff, logg, feh, abundances]).astype(np.float32)


def synthetic_flux(rng: np.random.Generator, labels: np.ndarray, noise: float = 0.01) -> np.ndarray:
    wave = default_grid().wave
    layout = np.random.default_rng(12345)  # same lines for every set
    centres = layout.choice(len(wave), N_LINES, replace=False)
    pixel = np.arange(len(wave))
    profiles = np.exp(-0.5 * ((pixel[None, :] - centres[:, None]) / 3.0) ** 2)
    scale = np.array([1000.0, 1.0] + [0.5] * (len(LABELS) - 2))
    offset = np.array([5500.0, 3.0] + [-0.5] * (len(LABELS) - 2))
    z = (labels - offset) / scale
    weights = layout.normal(0, 0.15, (len(LABELS), N_LINES))
    depths = np.clip(0.3 + z @ weights, 0.02, 0.9)
    flux = 1.0 - depths @ profiles
    return (flux + rng.normal(0, noise, flux.shape)).astype(np.float32)


def make_refset(
    path, n_stars: int = 60, repeats: int = 2, seed: int = 0, synthetic: bool = True, nan_label: str | None = None
) -> ReferenceSet:
    """n_stars stars with ``repeats`` spectra each (same labels, new noise)."""
    rng = np.random.default_rng(seed)
    star_labels = synthetic_labels(rng, n_stars)
    labels = np.repeat(star_labels, repeats, axis=0)
    if nan_label:
        labels[:, LABELS.index(nan_label)] = np.nan
    flux = synthetic_flux(rng, np.nan_to_num(labels, nan=-0.5))
    rows = [{"star_id": f"star{i // repeats}", "obsid": str(i)} for i in range(len(labels))]
    with ReferenceSetWriter(path, synthetic=synthetic, source="tests") as writer:
        writer.append(flux, labels, rows)
    return ReferenceSet.open(path)
