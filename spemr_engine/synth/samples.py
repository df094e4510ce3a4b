"""Pick synthetic stars of a named kind and write them as sample MRS files.

Kinds follow the paper's sparse regions and its Figure 8 examples: a giant, a dwarf, a
hot, a cool and a metal-poor star. Stars are drawn from the normal label distribution and
the first one of each kind is taken, so a (kind, seed) pair always gives the same star.
"""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np

from ..config import LABELS
from .fits_writer import write_mrs
from .generate import SyntheticStars, make_stars, observe_stars

_T, _G, _M = (LABELS.index(n) for n in ("Teff", "Logg", "FeH"))

KINDS = {
    "giant": lambda l: (l[:, _G] < 3.3) & (l[:, _T] > 4300) & (l[:, _T] < 5300) & (l[:, _M] > -0.8),
    "dwarf": lambda l: (l[:, _G] > 4.2) & (l[:, _T] > 5000) & (l[:, _T] < 6200) & (l[:, _M] > -0.8),
    "hot": lambda l: l[:, _T] > 6600,
    "cool": lambda l: l[:, _T] < 3900,
    "metal-poor": lambda l: l[:, _M] < -1.2,
}
POOL = 20000


def pick_stars(kind: str, n: int = 1, seed: int = 0) -> SyntheticStars:
    if kind not in KINDS:
        raise ValueError(f"unknown kind {kind!r} (choose from {', '.join(KINDS)})")
    pool = make_stars(POOL, seed)
    hits = np.flatnonzero(KINDS[kind](pool.labels))[:n]
    if hits.size < n:
        raise ValueError(f"only {hits.size} {kind} stars among {POOL} (seed {seed})")
    sample = pool.sample
    sub = type(sample)(labels=sample.labels[hits], population=sample.population[hits], component=sample.component[hits])
    return SyntheticStars(sample=sub, seeds=pool.seeds[hits])


def write_samples(
    out_dir: str | Path, kinds: list[str] | None = None, seed: int = 0, n_exp: int = 2, snr_red: float | None = 60.0
) -> list[Path]:
    """One gzip-compressed MRS file per kind plus ``samples.csv`` with the true labels."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    written, table = [], []
    for k, kind in enumerate(kinds or list(KINDS)):
        stars = pick_stars(kind, 1, seed)
        overrides: dict = {"n_exp": n_exp} | ({"snr_range": (snr_red, snr_red * 1.0001)} if snr_red else {})
        obs = next(observe_stars(stars.labels, stars.seeds, **overrides))
        obsid = 990_000_000 + 100 * seed + k
        name = f"med-58800-SYNTH{kind.upper().replace('-', '')}_sp01-{k + 1:03d}.fits.gz"
        path = write_mrs(
            out_dir / name,
            obs,
            obsid,
            stars.labels[0],
            int(stars.seeds[0]),
            ra=30.0 + 40 * k,
            dec=10.0 + 5 * k,
            fiberid=k + 1,
        )
        written.append(path)
        table.append(
            {
                "filename": name,
                "kind": kind,
                "obsid": obsid,
                "seed": str(int(stars.seeds[0])),
                "rv_kms": round(obs.rv, 3),
                **{n: round(float(v), 4) for n, v in zip(LABELS, stars.labels[0])},
            }
        )
    with open(out_dir / "samples.csv", "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(table[0]))
        writer.writeheader()
        writer.writerows(table)
    return written
