"""Fit-quality thresholds from the training world (``spemr calibrate-quality``).

fit_chi2 needs each spectrum's inverse variance, which a reference set does not store
(only the normalised flux). For a synthetic reference set every spectrum is rebuilt from
its star's labels and generator seed (the same observation, the same catalog-like RV
error, the same preprocessing as ``synth-refset``), and the rebuilt flux is checked
against the stored flux, so the thresholds are measured on exactly the held-out spectra.
A reference set made from real files has no seeds: it is refused with one line.

The ``percentile`` (presets/fit_quality.json: 99) of fit_chi2 and of member_spread over
the chosen split (default: test, by star as in training; ``all`` for a set the model
never saw) become ``fit_chi2_max`` and ``member_spread_max`` in the manifest's
``quality`` entry (bundle.update_manifest), with the distribution they come from.
"""

from __future__ import annotations

import datetime as _dt
from pathlib import Path
from typing import Callable

import numpy as np

from .. import config
from .bundle import ModelBundle, load_bundle, update_manifest
from ..errors import Cancelled, SpemrError
from ..progress import CALIBRATE, Count, CountProgress
from .fit_quality import QualityThresholds
from ..training.refset import ReferenceSet

STARS_PER_BATCH = 32
REBUILD_TOLERANCE = 2e-3  # |rebuilt - stored| normalised flux (stored as float32)
# Pixels per spectrum allowed beyond it: rebuilt one star at a time instead of in the
# builder's batches, float rounding can flip a near-threshold de-spiking decision (one
# pixel of 9,200 spectra in the default model's set, off by 0.0076); another generator
# version differs at thousands of pixels.
REBUILD_FLIPS_ALLOWED = 3
REPORT_PERCENTILES = (50, 90, 95, 99, 99.9)


def rebuild_spectra(refset: ReferenceSet, indices: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(flux, ivar) of synthetic reference-set spectra ``indices``, re-observed from their
    seeds and preprocessed as synth-refset did. Raises SpemrError when the set has no
    seeds or a rebuilt spectrum differs from the stored one."""
    from ..preprocessing.preprocess import preprocess_pairs
    from ..synth.generate import observe_stars
    from ..synth.refset_builder import CATALOG_RV_ERROR_KMS

    rows = refset.rows
    if not refset.synthetic or not all(str(rows[i].get("seed") or "") for i in indices):
        raise SpemrError(
            f"{refset.path}: fit_chi2 needs each spectrum's inverse variance, which only a "
            "synthetic reference set (with generator seeds) can rebuild; this one has none"
        )
    measure_rv = "rv ccf" in refset.source
    n_pixels = refset.grid.n_pixels
    flux, ivar = np.empty((len(indices), n_pixels), np.float32), np.empty((len(indices), n_pixels), np.float32)
    stars: dict[str, list[int]] = {}
    for k, i in enumerate(indices):
        stars.setdefault(str(rows[i]["star_id"]), []).append(k)
    labels = np.asarray(refset.labels, dtype=np.float64)
    for star, where in stars.items():
        first = indices[where[0]]
        seed = int(rows[first]["seed"])
        version = int(rows[first].get("generator") or 1)  # sets without the column: v1
        obs = next(observe_stars(labels[first : first + 1], np.array([seed], dtype=np.int64), version=version))
        pairs = obs.pairs()
        names = [(p.extname_blue, p.extname_red) for p in pairs]
        chosen = []
        for k in where:
            key = (str(rows[indices[k]]["extname_blue"]), str(rows[indices[k]]["extname_red"]))
            if key not in names:
                raise SpemrError(
                    f"{refset.path}: spectrum {indices[k]} ({star} {key[0]}) cannot be "
                    "rebuilt from its seed (another generator version?)"
                )
            chosen.append(names.index(key))
        rv = (
            None
            if measure_rv
            else np.array(
                [
                    obs.rv + np.random.default_rng([seed, 4, position]).normal(0, CATALOG_RV_ERROR_KMS)
                    for position in chosen
                ]
            )
        )
        spectra = preprocess_pairs([pairs[p] for p in chosen], rv=rv, grid=refset.grid)
        flux[where], ivar[where] = spectra.flux, spectra.ivar
    stored = refset.read_flux(indices)
    difference = np.abs(stored - flux)
    off = np.sum(~(difference <= REBUILD_TOLERANCE), axis=1)  # NaN counts as off
    if len(indices) and off.max() > REBUILD_FLIPS_ALLOWED:
        worst = int(np.argmax(off))
        raise SpemrError(
            f"{refset.path}: spectra rebuilt from their seeds differ from the stored ones "
            f"(spectrum {int(indices[worst])}: {int(off[worst])} pixels by more than "
            f"{REBUILD_TOLERANCE:g}, up to {float(np.nanmax(difference[worst])):.3g}; another generator version?)"
        )
    return flux, ivar


def measure(
    model: ModelBundle,
    refset: ReferenceSet,
    indices: np.ndarray,
    device: str = "auto",
    batch_size: int = 256,
    progress: CountProgress | None = None,
    cancel: Callable[[], bool] | None = None,
) -> dict[str, np.ndarray]:
    """fit_chi2 and member_spread of the raw predictions of reference-set spectra."""
    from .fit_quality import assess
    from .inference import SpemrPredictor

    predictor = SpemrPredictor(model, device=device, batch_size=batch_size)
    chi2, spread = np.full(len(indices), np.nan), np.full(len(indices), np.nan)
    order = np.argsort(indices, kind="stable")  # stars' spectra are adjacent
    step = STARS_PER_BATCH * 4
    for start in range(0, len(order), step):
        if cancel is not None and cancel():
            raise Cancelled(f"calibration cancelled after {start} of {len(indices)} spectra")
        part = order[start : start + step]
        flux, ivar = rebuild_spectra(refset, indices[part])
        fit = assess(predictor.predict(flux), flux, ivar, model)  # exactly what rows get
        chi2[part], spread[part] = fit.fit_chi2, fit.member_spread
        if progress is not None:
            progress(Count(CALIBRATE, done=min(start + step, len(order)), total=len(order)))
    return {"fit_chi2": chi2, "member_spread": spread}


def calibrate(
    model: ModelBundle | str | Path,
    refset: ReferenceSet | str | Path,
    split: str = "test",
    percentile: float | None = None,
    device: str = "auto",
    batch_size: int = 256,
    write: bool = True,
    progress: CountProgress | None = None,
    cancel: Callable[[], bool] | None = None,
) -> dict:
    """Measure both fit-quality measures on ``split`` of ``refset`` and (``write``) store
    their ``percentile`` in the model's manifest. Returns the manifest ``quality`` entry
    (thresholds plus the distribution they come from)."""
    from ..training.evaluate import _resolve_indices

    bundle = model if isinstance(model, ModelBundle) else load_bundle(model)
    refset = refset if isinstance(refset, ReferenceSet) else ReferenceSet.open(refset)
    percentile = config.fit_quality_config().percentile if percentile is None else float(percentile)
    split_name, indices = _resolve_indices(bundle, refset, split)
    if not len(indices):
        raise SpemrError(f"{refset.path}: split {split_name!r} holds no spectra")
    values = measure(bundle, refset, np.asarray(indices), device, batch_size, progress, cancel)
    from ..synth.generate import world_id
    from ..synth.model_spectra import WORLD

    entry = {
        "percentile": percentile,
        "n_spectra": int(len(indices)),
        "model_spectra_world": WORLD,
        "model_spectra_world_id": world_id(WORLD),
        "reference_set": str(refset.path),
        "reference_source": refset.source,
        "split": split_name,
        "date": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
    }
    distribution = {}
    for name, array in values.items():
        finite = array[np.isfinite(array)]
        key = f"{name}_max"
        if not finite.size:
            raise SpemrError(
                f"{bundle.path}: no finite {name} on {refset.path} (a one-member model has no member spread)"
            )
        entry[key] = float(np.percentile(finite, percentile))
        distribution[name] = {f"p{p:g}": float(np.percentile(finite, p)) for p in REPORT_PERCENTILES}
        distribution[name]["max"] = float(finite.max())
    entry["distribution"] = distribution
    QualityThresholds.from_manifest(bundle.path, entry)  # refuse before writing
    if write:
        update_manifest(bundle.path, quality=entry)
    return entry
