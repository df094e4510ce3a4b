"""Build a synthetic reference set in the engine's format.

Like the real LAMOST x APOGEE set, it is organised by star: each star contributes its
coadd and some of its single exposures (several spectra sharing a star_id, so splits stay
by star). Every spectrum goes through the normal preprocessing (preprocess_pairs) so the
training inputs look like real inputs, and the paper's selection (S/N >= 10, <= 100 bad
pixels, <= 30 consecutive) is applied through its quality flags. The RV given to the
preprocessing is the true one plus a catalog-like error, as the authors used the LAMOST
catalog RV; ``rv_mode="ccf"`` measures it from the spectrum instead (slower).
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Callable

import numpy as np

from ..errors import Cancelled, InputFileError
from ..preprocessing.preprocess import preprocess_pairs
from ..training.refset import ReferenceSetWriter
from .generate import GENERATOR_VERSION, make_stars, observe_stars

CATALOG_RV_ERROR_KMS = 1.0
OBSID_BASE = 900_000_000


def _spectra_of(obs, max_exposures: int):
    pairs = obs.pairs()
    return pairs[: 1 + max_exposures]


def build_reference_set(
    path: str | Path,
    n_stars: int,
    seed: int = 0,
    max_exposures: int = 3,
    rv_mode: str = "catalog",
    batch_size: int = 64,
    progress: Callable[[dict], None] | None = None,
    cancel: Callable[[], bool] | None = None,
    version: int = GENERATOR_VERSION,
):
    """Generate ``n_stars`` stars and write their usable spectra to a reference set at
    ``path``. Returns the finished spemr_engine.training.refset.ReferenceSet."""
    if rv_mode not in ("catalog", "ccf"):
        raise ValueError(f"rv_mode must be 'catalog' or 'ccf', not {rv_mode!r}")
    stars = make_stars(n_stars, seed)
    source = (
        f"spemr synthetic generator v{version}: {n_stars} stars, seed {seed}, "
        f"coadd + up to {max_exposures} exposures per star, rv {rv_mode}"
    )
    writer = ReferenceSetWriter(path, synthetic=True, source=source)
    if writer.source != source:
        raise InputFileError(path, f"unfinished reference set was made as '{writer.source}', not '{source}'")
    done_stars = _stars_already_written(writer)
    started, kept, rejected = time.monotonic(), 0, 0
    for start in range(done_stars, n_stars, batch_size):
        if cancel is not None and cancel():
            raise Cancelled(f"stopped after {start} of {n_stars} stars; run again to resume")
        part = np.arange(start, min(start + batch_size, n_stars))
        pairs, star_index = [], []
        for i, obs in zip(
            part, observe_stars(stars.labels[part], stars.seeds[part], batch_size=batch_size, version=version)
        ):
            chosen = _spectra_of(obs, max_exposures)
            pairs += chosen
            star_index += [(int(i), obs.rv)] * len(chosen)
        true_rv = np.array([rv for _, rv in star_index])
        rv = None if rv_mode == "ccf" else true_rv + _catalog_rv_error(stars.seeds, star_index)
        spectra = preprocess_pairs(pairs, rv=rv)
        usable = spectra.quality.usable
        rows = [
            _row(star_index[k][0], stars.seeds[star_index[k][0]], pairs[k], spectra, int(k), version)
            for k in np.flatnonzero(usable)
        ]
        labels = stars.labels[[star_index[k][0] for k in np.flatnonzero(usable)]]
        # A star's spectra are written in one append, so resuming never splits a star.
        writer.append(spectra.flux[usable], labels.reshape(-1, stars.labels.shape[1]), rows)
        kept += int(usable.sum())
        rejected += int((~usable).sum())
        if progress is not None:
            progress(
                {
                    "stars_done": int(part[-1]) + 1,
                    "stars_total": n_stars,
                    "spectra_kept": kept,
                    "spectra_rejected": rejected,
                    "elapsed_s": time.monotonic() - started,
                }
            )
    return writer.close()


def _catalog_rv_error(seeds: np.ndarray, star_index: list) -> np.ndarray:
    """Per-spectrum catalog RV error, fixed by the star's seed (so resuming is exact)."""
    out, count = np.empty(len(star_index)), dict[int, int]()
    for k, (star, _rv) in enumerate(star_index):
        count[star] = count.get(star, -1) + 1
        out[k] = np.random.default_rng([int(seeds[star]), 4, count[star]]).normal(0, CATALOG_RV_ERROR_KMS)
    return out


def _row(star: int, seed: int, pair, spectra, k: int, version: int) -> dict:
    obsid = OBSID_BASE + star
    return {
        "star_id": f"SYN{star:07d}",
        "obsid": obsid,
        "filename": f"med-synthetic-{star:07d}.fits",
        "extname_blue": spectra.extname_blue[k],
        "extname_red": spectra.extname_red[k],
        "snr_blue": float(spectra.quality.snr_blue[k]),
        "snr_red": float(spectra.quality.snr_red[k]),
        "seed": str(int(seed)),
        "generator": str(int(version)),
    }


def _stars_already_written(writer: ReferenceSetWriter) -> int:
    """Resume point: stars are written in order, so the next star is one past the last
    star_id in the set (0 for a new set)."""
    if len(writer) == 0:
        return 0
    rows = (writer.path / "spectra.csv").read_text().strip().splitlines()
    last = rows[-1].split(",")[0]
    return int(last.removeprefix("SYN")) + 1
