"""Accuracy of the radiative-transfer emulator on grid spectra it never saw.

Reads the held-out star names from the emulator's manifest, takes those stars from the
project's grid chunks (data/rt_grid) and the shared seed grid where present, and prints
the absolute error in normalised flux per window: median (goal <= 0.003) and 99th
percentile (goal <= 0.02), plus the worst star and the error at the model grid's
resolution (after the rest of a R = 7500 line-spread function). Optionally also scores a
separate folder of chunks (e.g. data/rt_testset) that the emulator never saw either.
Last line: ``ratio: <worst per-window median / 0.003>``.

Usage: python benchmarks/emulator.py [--emulator assets/emulator] [--extra data/rt_testset]
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from spemr_engine.synth.radiative import emulator as emu
from spemr_engine.synth.radiative.grid import RtSpectra, load_chunks, load_turbospectrum_grid, rt_grid

REPO = Path(__file__).resolve().parents[1]
SHARED_GRID = REPO.parent / "shared" / "data" / "turbospectrum_grid" / "grid.npz"


def held_out_spectra(names: set[str]) -> RtSpectra:
    parts = []
    chunks = sorted((REPO / "data" / "rt_grid").glob("*.npz"))
    if chunks:
        every = load_chunks(chunks)
        parts.append(every.take(np.array([str(n) in names for n in every.names])))
    if SHARED_GRID.exists():
        parts.append(load_turbospectrum_grid(SHARED_GRID, names=names))
    return RtSpectra.concatenate(parts)


def at_lamost_resolution(flux: np.ndarray) -> np.ndarray:
    """Apply the rest of a R = 7500 Gaussian LSF on the RT grid (pixels are uniform in log)."""
    from scipy.ndimage import gaussian_filter1d

    grid = rt_grid()
    sigma_px = grid.remaining_sigma_kms(np.array([7500.0]))[0] / (2.99792458e5 * np.log(10) * grid.log_step)
    out = np.empty_like(flux)
    for part in grid.arm_slices().values():
        out[:, part] = gaussian_filter1d(flux[:, part], sigma_px, axis=1, mode="nearest")
    return out


def report(name: str, emulator: emu.Emulator, spectra: RtSpectra) -> float:
    predicted = emulator.predict(spectra.labels, spectra.vmic)
    error = np.abs(predicted - spectra.flux)
    coarse = np.abs(at_lamost_resolution(predicted) - at_lamost_resolution(spectra.flux))
    worst = 0.0
    print(f"{name}: {len(spectra)} spectra")
    for arm, part in emulator.grid.arm_slices().items():
        e, c = error[:, part], coarse[:, part]
        per_star = np.percentile(e, 99, axis=1)
        print(
            f"  {arm:4}: median |error| {np.median(e):.4f} (goal <= 0.003), 99th pct {np.percentile(e, 99):.4f} "
            f"(goal <= 0.02), max {e.max():.3f}; at R=7500: median {np.median(c):.4f}, 99th {np.percentile(c, 99):.4f}; "
            f"worst star {spectra.names[int(np.argmax(per_star))]} (Teff {spectra.labels[int(np.argmax(per_star)), 0]:.0f})"
        )
        worst = max(worst, float(np.median(e)))
    return worst


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--emulator", default=str(REPO / "assets" / "emulator"))
    parser.add_argument("--extra", default=None, help="another folder of RT chunks the emulator never saw")
    args = parser.parse_args()
    emulator = emu.load(args.emulator)
    names = set(emulator.info["training"]["holdout_names"])
    worst = report("held-out grid stars", emulator, held_out_spectra(names))
    if args.extra:
        report(f"{args.extra}", emulator, load_chunks(sorted(Path(args.extra).glob("*.npz"))))
    print(f"ratio: {worst / 0.003:.3f}")


if __name__ == "__main__":
    main()
