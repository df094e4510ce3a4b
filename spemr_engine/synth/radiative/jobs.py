"""Job lists for the radiative-transfer grid, drawn from the project's own label sampler.

Stars come in blocks of BLOCK, each block from ``generate.make_stars`` with its own seed
derived from (seed, block), so the list for N stars is a prefix of the list for more
stars: a grid can be extended by asking for more. A fraction ``widen`` of the stars is
jittered (presets/rt_synthesis.json) so an emulator trained on the grid sees the edges of
the prior, not only its bulk. Broadening comes from each star's own seed
(``generate.broadening_for``); stars outside atmosnet's range are dropped.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ...config import LABELS, _preset
from ...errors import InputFileError
from ..generate import broadening_for, make_stars

BLOCK = 256
_WIDEN_STREAM = 7


@dataclass
class GridJob:
    """One star: its 16 labels (config.LABELS order), broadening and generator seed
    (-1 when it did not come from the sampler)."""

    name: str
    labels: np.ndarray
    vmic: float
    vmac: float
    vsini: float
    resolution: float
    seed: int = -1

    @property
    def alpha_fe(self) -> float:
        """[alpha/Fe] for the atmosphere and Turbospectrum's mix: mean alpha [X/H] - [Fe/H]."""
        alpha = [self.labels[LABELS.index(k)] for k in _preset("rt_synthesis")["alpha_labels"]]
        return float(np.mean(alpha) - self.labels[LABELS.index("FeH")])

    def atmosphere_params(self) -> np.ndarray:
        """(Teff, log g, [Fe/H], [alpha/Fe]), atmosnet's inputs."""
        return np.array([*self.labels[:3], self.alpha_fe], dtype=np.float64)

    def abundances(self) -> dict[str, float]:
        """[X/H] of every element label ([Fe/H] excluded: it is the metallicity)."""
        return {k: float(self.labels[LABELS.index(k)]) for k in _preset("rt_synthesis")["elements"]}

    def to_dict(self) -> dict:
        return {
            "name": self.name,
            "labels": [float(x) for x in self.labels],
            "vmic": self.vmic,
            "vmac": self.vmac,
            "vsini": self.vsini,
            "R": self.resolution,
            "seed": self.seed,
        }

    @classmethod
    def from_dict(cls, d: dict) -> GridJob:
        """Also reads the reference tools' jobs (same keys; no seed)."""
        labels = np.asarray(d["labels"], dtype=np.float64)
        if labels.shape != (len(LABELS),) or not np.all(np.isfinite(labels)):
            raise ValueError(f"job {d.get('name')!r}: labels must be {len(LABELS)} finite numbers")
        return cls(
            str(d["name"]),
            labels,
            float(d["vmic"]),
            float(d.get("vmac", 0.0)),
            float(d.get("vsini", 0.0)),
            float(d.get("R", d.get("resolution", np.nan))),
            int(d.get("seed", -1)),
        )


def _widen(labels: np.ndarray, fraction: float, rng: np.random.Generator) -> np.ndarray:
    """Jitter a random ``fraction`` of the stars and clip their Teff and log g to the set
    ranges (the others keep the prior exactly)."""
    spec = _preset("rt_synthesis")["widen"]
    out = labels.copy()
    chosen = rng.random(len(out)) < fraction
    k = int(chosen.sum())
    out[chosen, 0] += rng.normal(0.0, spec["teff_sigma"], k)
    out[chosen, 1] += rng.normal(0.0, spec["logg_sigma"], k)
    out[chosen, 3:] += rng.normal(0.0, spec["abundance_sigma"], (k, out.shape[1] - 3))
    out[chosen, 0] = np.clip(out[chosen, 0], *spec["teff_range"])
    out[chosen, 1] = np.clip(out[chosen, 1], *spec["logg_range"])
    return out


def _block(seed: int, block: int, widen: float) -> tuple[np.ndarray, np.ndarray]:
    stars = make_stars(BLOCK, seed=np.random.SeedSequence([seed, block]))
    labels = stars.labels
    if widen > 0:
        labels = _widen(labels, widen, np.random.default_rng([seed, block, _WIDEN_STREAM]))
    return labels, stars.seeds


def make_jobs(n: int, seed: int, in_range: Callable[[np.ndarray], np.ndarray], widen: float = 0.4) -> list[GridJob]:
    """``n`` jobs named rt<seed>_<index in the draw>. ``in_range`` maps (m, 4) atmosphere
    parameters to a bool mask (e.g. ``atmosnet.in_range`` of the engine's networks)."""
    if n < 1 or not 0.0 <= widen <= 1.0:
        raise ValueError("need n >= 1 and 0 <= widen <= 1")
    jobs: list[GridJob] = []
    block = 0
    while len(jobs) < n:
        labels, seeds = _block(seed, block, widen)
        broad = broadening_for(labels, seeds)
        batch = [
            GridJob(
                f"rt{seed}_{block * BLOCK + i:07d}",
                labels[i],
                float(broad.vmic[i]),
                float(broad.vmac[i]),
                float(broad.vsini[i]),
                float(broad.resolution[i]),
                int(seeds[i]),
            )
            for i in range(len(labels))
        ]
        keep = in_range(np.stack([j.atmosphere_params() for j in batch]))
        jobs += [j for j, ok in zip(batch, keep) if ok]
        block += 1
        if block >= 8 and not jobs:
            raise ValueError("no sampled star is inside the atmosphere range")
    return jobs[:n]


def save_jobs(path: str | Path, jobs: list[GridJob]) -> None:
    Path(path).write_text(json.dumps({"label_names": list(LABELS), "jobs": [j.to_dict() for j in jobs]}))


def load_jobs(path: str | Path) -> list[GridJob]:
    """A job list written by save_jobs, or a plain JSON list of job objects (reference
    tools' format). Bad files raise InputFileError (one line)."""
    try:
        data = json.loads(Path(path).read_text())
        if isinstance(data, dict):
            if list(data.get("label_names", LABELS)) != list(LABELS):
                raise ValueError(f"labels are not {', '.join(LABELS)}")
            data = data["jobs"]
        jobs = [GridJob.from_dict(d) for d in data]
    except FileNotFoundError:
        raise InputFileError(path, "file not found") from None
    except (ValueError, KeyError, TypeError) as error:
        raise InputFileError(path, f"not a job list ({type(error).__name__}: {error})") from None
    names = [j.name for j in jobs]
    if len(set(names)) != len(names) or not jobs:
        raise InputFileError(path, "empty, or job names are not unique (a name is a star's key)")
    return jobs
