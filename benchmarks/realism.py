"""Realism check of the synthetic spectra against the real LAMOST x APOGEE training set.

Generates stars with the reference-set label distribution, observes them (noise, RV,
defects), preprocesses the spectra with the normal pipeline (CCF radial velocity,
resampling, continuum normalisation; only spectra passing the paper's quality cuts), and
compares the mean and std spectra with the published flux_mean / flux_std.

Prints: correlation of the means (goal >= 0.96), rms of the mean difference in the Mg b,
Fe 5270 and H-alpha windows (goal <= 0.04 each), median per-pixel std ratio synthetic /
real (goal in [0.9, 1.1]), the line-core minima of the means, per-arm figures, and the
wavelength windows where the means differ most, with the nearest listed line.
Last line: ``ratio: <median std ratio>``.

Usage: python benchmarks/realism.py [--spectra 5000] [--seed 2026] [--rv given|ccf] [--generator 2]
Needs ../shared/data/spemr_dr8_label_config.pkl.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np

from spemr_engine.config import default_grid
from spemr_engine.preprocessing.preprocess import preprocess_pairs
from spemr_engine.safe_pickle import safe_load
from spemr_engine.synth.generate import GENERATOR_VERSION, make_stars, observe_stars
from spemr_engine.synth.lines import line_table

LABEL_CONFIG = Path(__file__).resolve().parents[2] / "shared" / "data" / "spemr_dr8_label_config.pkl"
WINDOW = 20  # pixels (2 A) per reported window
# Windows of the goals (vacuum A, rest frame) and the line cores reported.
GOAL_WINDOWS = {
    "Mg b 5167-5185": (5167.0, 5185.0),
    "Fe 5270 (5265-5275)": (5265.0, 5275.0),
    "H-alpha 6550-6580": (6550.0, 6580.0),
}
CORES = {"Mg b2 5174.1": 5174.1, "Mg b1 5185.0": 5185.0, "Fe 5271.0": 5271.0, "H-alpha 6564.6": 6564.6}


def generate(n_spectra: int, seed: int, rv_mode: str, version: int = GENERATOR_VERSION):
    """Preprocessed fluxes of ~n_spectra usable spectra (coadd + up to 3 exposures per star)."""
    stars = make_stars(max(n_spectra // 2, 10), seed)  # ~2.5 usable spectra per star
    fluxes, total, started = [], 0, time.monotonic()
    batch = 64
    for start in range(0, len(stars), batch):
        part = slice(start, start + batch)
        pairs, rvs = [], []
        for obs in observe_stars(stars.labels[part], stars.seeds[part], batch_size=batch, version=version):
            chosen = obs.pairs()[:4]
            pairs += chosen
            rvs += [obs.rv] * len(chosen)
        spectra = preprocess_pairs(pairs, rv=None if rv_mode == "ccf" else np.array(rvs))
        fluxes.append(spectra.flux[spectra.quality.usable])
        total += int(spectra.quality.usable.sum())
        if total >= n_spectra:
            break
    flux = np.concatenate(fluxes)[:n_spectra]
    return flux, time.monotonic() - started


def nearest_line(wave: float) -> str:
    table = line_table()
    i = int(np.argmin(np.abs(table.wave - wave)))
    ion = "I" * int(table.ion[i])
    return f"{table.element[i]} {ion} {table.wave[i]:.2f} ({table.origin[i]})"


def report_windows(wave, diff, n=8) -> None:
    n_win = diff.size // WINDOW
    score = np.abs(diff[: n_win * WINDOW]).reshape(n_win, WINDOW).mean(axis=1)
    print(f"largest mean differences (synthetic - real), {WINDOW // 10} A windows:")
    for w in np.argsort(score)[::-1][:n]:
        part = slice(w * WINDOW, (w + 1) * WINDOW)
        peak = part.start + int(np.argmax(np.abs(diff[part])))
        print(
            f"  {wave[part.start]:7.1f}-{wave[part.stop - 1]:7.1f} A  mean |diff| {score[w]:.3f}"
            f"  peak {diff[peak]:+.3f} at {wave[peak]:.1f}  nearest: {nearest_line(wave[peak])}"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--spectra", type=int, default=5000)
    parser.add_argument("--seed", type=int, default=2026)
    parser.add_argument("--rv", choices=("given", "ccf"), default="ccf")
    parser.add_argument(
        "--generator",
        type=int,
        default=GENERATOR_VERSION,
        help=f"synthetic world (generator version, default {GENERATOR_VERSION})",
    )
    args = parser.parse_args()
    published = safe_load(LABEL_CONFIG)
    real_mean = np.asarray(published["flux_mean"], dtype=np.float64)
    real_std = np.asarray(published["flux_std"], dtype=np.float64)
    flux, seconds = generate(args.spectra, args.seed, args.rv, args.generator)
    # Same clipping as the network input, so outliers weigh like they do in training.
    flux = np.clip(flux.astype(np.float64), -0.5, 2.5)
    mean, std = flux.mean(axis=0), flux.std(axis=0)
    wave = default_grid().wave
    print(
        f"spectra: {len(flux)} usable, generated + preprocessed in {seconds:.0f} s "
        f"({len(flux) / seconds:.1f} spectra/s, rv {args.rv})"
    )
    print(f"generator v{args.generator}")
    print(f"correlation of means: {np.corrcoef(mean, real_mean)[0, 1]:.4f} (goal >= 0.96)")
    for name, (lo, hi) in GOAL_WINDOWS.items():
        part = (wave >= lo) & (wave <= hi)
        rms = float(np.sqrt(np.mean((mean[part] - real_mean[part]) ** 2)))
        print(
            f"  {name}: rms of the mean difference {rms:.3f} (goal <= 0.04), "
            f"corr {np.corrcoef(mean[part], real_mean[part])[0, 1]:.3f}"
        )
    for name, centre in CORES.items():
        part = np.abs(wave - centre) <= 1.0
        print(f"  core minimum {name}: synthetic {mean[part].min():.3f} real {real_mean[part].min():.3f}")
    for arm, part in default_grid().arm_slices().items():
        print(
            f"  {arm}: corr {np.corrcoef(mean[part], real_mean[part])[0, 1]:.4f}, "
            f"median mean synthetic {np.median(mean[part]):.4f} real {np.median(real_mean[part]):.4f}, "
            f"median std ratio {np.median(std[part] / real_std[part]):.3f}"
        )
    print(f"correlation of stds: {np.corrcoef(std, real_std)[0, 1]:.4f}")
    report_windows(wave, mean - real_mean)
    ratio = float(np.median(std / real_std))
    print(f"median per-pixel std ratio synthetic/real: {ratio:.3f} (goal in [0.9, 1.1])")
    print(f"ratio: {ratio:.3f}")


if __name__ == "__main__":
    main()
