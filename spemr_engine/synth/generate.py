"""Deterministic synthetic stars: labels + one integer seed per star rebuild everything.

The master seed draws the labels (labels.sample_labels) and one 63-bit seed per star.
A star's seed alone fixes its broadening (micro/macro-turbulence, rotation, resolution)
and, separately, its observation (RV, S/N, exposures, defects). So the noiseless template
of any training star can be rebuilt from (labels, seed) without storing its flux.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterator

import numpy as np

from . import rt_world
from . import spectrum as sp
from .labels import LabelSample, sample_labels
from .observe import Conditions, Observation, observe, sample_conditions

# Version of the generator's physics + line data. Bump when a change alters spectra, so
# template libraries can tell they were built by another generator. Every version that a
# shipped library or a cross-world comparison needs stays renderable.
GENERATOR_VERSION = 2
WORLDS = {
    1: "lines: one-layer curve-of-growth line model (synth.spectrum)",
    2: "rt: radiative-transfer emulator + empirical bands and H-alpha core (synth.rt_world)",
}
_BROADENING_STREAM, _OBSERVING_STREAM, _NOISE_STREAM, _HALPHA_STREAM = 1, 2, 3, 5


@dataclass
class SyntheticStars:
    sample: LabelSample
    seeds: np.ndarray  # int64, one per star

    @property
    def labels(self) -> np.ndarray:
        return self.sample.labels

    def __len__(self) -> int:
        return len(self.seeds)


def make_stars(n: int, seed: int | np.random.SeedSequence = 0) -> SyntheticStars:
    rng = np.random.default_rng(seed)
    sample = sample_labels(n, rng)
    seeds = rng.integers(0, 2**63 - 1, size=n, dtype=np.int64)
    return SyntheticStars(sample=sample, seeds=seeds)


def _stream(seed: int, stream: int) -> np.random.Generator:
    return np.random.default_rng([int(seed), stream])


def broadening_for(labels: np.ndarray, seeds: np.ndarray) -> sp.Broadening:
    """Each star's broadening from its own seed (independent of batch composition)."""
    labels = np.atleast_2d(labels)
    seeds = np.atleast_1d(seeds)
    parts = [sp.sample_broadening(labels[i : i + 1], _stream(s, _BROADENING_STREAM)) for i, s in enumerate(seeds)]
    # Own stream, so version-1 stars (which ignore it) keep their exact broadening.
    core = np.array([rt_world.sample_halpha_core(_stream(s, _HALPHA_STREAM)) for s in seeds])
    vmic, vmac, vsini, resolution = (
        np.concatenate([getattr(p, f) for p in parts]) for f in ("vmic", "vmac", "vsini", "resolution")
    )
    return sp.Broadening(vmic, vmac, vsini, resolution, halpha_core=core)


def world_id(version: int = GENERATOR_VERSION) -> str:
    """What makes a version's spectra exactly: version 2 also depends on the emulator's
    weights, so a retrained emulator is another world (templates and fit-quality
    thresholds made with the old one no longer apply)."""
    if version == 1:
        return "v1"
    if version == 2:
        return f"v2:{rt_world.emulator_id()}"
    raise ValueError(f"unknown synthetic generator version {version!r} (known: {sorted(WORLDS)})")


def render(labels: np.ndarray, broadening: sp.Broadening, version: int = GENERATOR_VERSION) -> dict[str, np.ndarray]:
    """Fine-grid rest-frame normalised flux per arm in the world of generator ``version``."""
    if version == 1:
        return sp.render(labels, broadening)
    if version == 2:
        return rt_world.render(labels, broadening)
    raise ValueError(f"unknown synthetic generator version {version!r} (known: {sorted(WORLDS)})")


def noiseless_grid(
    labels: np.ndarray, seeds: np.ndarray, version: int = GENERATOR_VERSION
) -> tuple[np.ndarray, np.ndarray]:
    """Rest-frame normalised noiseless spectra on the model grid: (wave, (n, 7200))."""
    labels = np.atleast_2d(np.asarray(labels, dtype=np.float64))
    wave = sp.default_grid().wave
    return wave, sp.sample_fine(render(labels, broadening_for(labels, seeds), version), wave)


def conditions_for(labels_row: np.ndarray, seed: int, **overrides) -> Conditions:
    return sample_conditions(_stream(seed, _OBSERVING_STREAM), labels_row, **overrides)


def observe_stars(
    labels: np.ndarray,
    seeds: np.ndarray,
    exposures: bool = True,
    batch_size: int = 64,
    version: int = GENERATOR_VERSION,
    **condition_overrides,
) -> Iterator[Observation]:
    """Render and observe stars in batches; yields one Observation per star, in order."""
    labels = np.atleast_2d(np.asarray(labels, dtype=np.float64))
    seeds = np.atleast_1d(seeds)
    for start in range(0, len(labels), batch_size):
        part = slice(start, start + batch_size)
        fine = render(labels[part], broadening_for(labels[part], seeds[part]), version)
        for j, (row, seed) in enumerate(zip(labels[part], seeds[part])):
            cond = conditions_for(row, int(seed), **condition_overrides)
            one = {name: flux[j : j + 1] for name, flux in fine.items()}
            obs = observe(one, float(row[0]), cond, _stream(int(seed), _NOISE_STREAM), exposures)
            obs.meta["generator"] = version
            yield obs
