"""Fit the synthetic line strengths to the mean real LAMOST MRS spectrum.

Textbook gf values and a one-layer atmosphere do not reproduce real line depths, and a
real spectrum at R ~ 7500 is full of blends no short line list explains. This script
(run by hand; its result is committed in spemr_engine/synth/data/lines.csv):

1. finds absorption features of the published ``flux_mean`` (the mean continuum-normalised
   training spectrum) that no listed line explains and adds them as 'blend' lines
   (Fe I-like, chi = 3 eV);
2. iterates: render a fixed sample of synthetic stars with the reference-set label
   distribution, continuum-normalise them like real input, and nudge each line's
   ``gf_offset`` by log10(target depth / model depth) at its pixel.

Usage: python benchmarks/calibrate_lines.py [--iterations 6] [--stars 600]
Needs ../shared/data/spemr_dr8_label_config.pkl (development only).
"""

from __future__ import annotations

import argparse
import csv
import io
from importlib import resources
from pathlib import Path

import numpy as np
from scipy import ndimage

from spemr_engine.config import default_grid
from spemr_engine.preprocessing.preprocess import normalise_grid
from spemr_engine.safe_pickle import safe_load
from spemr_engine.synth import lines as linemod
from spemr_engine.synth import spectrum as sp
from spemr_engine.synth.labels import sample_labels

LABEL_CONFIG = Path(__file__).resolve().parents[2] / "shared" / "data" / "spemr_dr8_label_config.pkl"
LINES_CSV = Path(resources.files(linemod.DATA_PACKAGE).joinpath("lines.csv"))
BLEND_MIN_DEPTH = 0.025
MATCH_PIXELS = 2.5
# Too weak to show in a mean spectrum: keep their textbook strengths.
FIXED_ELEMENTS = {"O", "S"}
# Identified lines keep their identity: calibration may not switch them off.
ATOMIC_OFFSET_RANGE = (-1.5, 4.0)
BLEND_OFFSET_RANGE = (-3.0, 3.0)


def envelope_depth(flux: np.ndarray) -> np.ndarray:
    """Depth below a local upper envelope (running 90th percentile over +-4 A)."""
    env = ndimage.percentile_filter(flux, 90, size=81, mode="nearest")
    return np.clip(1 - flux / env, 1e-4, None)


def model_mean(stars: int, seed: int = 11) -> np.ndarray:
    for cache in (sp._line_arrays, sp._arm_setup, sp._opacity_constant, linemod.line_table):
        cache.cache_clear()
    sample = sample_labels(stars, seed)
    broadening = sp.sample_broadening(sample.labels, np.random.default_rng(seed + 1))
    out = np.zeros(default_grid().n_pixels)
    for start in range(0, stars, 200):
        part = slice(start, start + 200)
        _, flux = sp.normalised_on_grid(sample.labels[part], broadening.take(part))
        normalised, _ = normalise_grid(flux)
        out += normalised.sum(axis=0)
    return out / stars


def read_rows() -> tuple[list[str], list[dict]]:
    text = LINES_CSV.read_text()
    header = [line for line in text.splitlines() if line.startswith("#")]
    body = [line for line in text.splitlines() if line and not line.startswith("#")]
    return header, list(csv.DictReader(io.StringIO("\n".join(body))))


def write_rows(header: list[str], rows: list[dict]) -> None:
    rows.sort(key=lambda r: float(r["wave_air"]))
    fields = ["element", "ion", "wave_air", "chi", "loggf", "gf_offset", "strong", "origin"]
    out = io.StringIO()
    out.write("\n".join(header) + "\n")
    writer = csv.DictWriter(out, fieldnames=fields, lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    LINES_CSV.write_text(out.getvalue())


def add_blends(rows: list[dict], target_depth: np.ndarray, wave: np.ndarray) -> int:
    listed = linemod.air_to_vacuum(np.array([float(r["wave_air"]) for r in rows]))
    minima = (
        (target_depth > BLEND_MIN_DEPTH)
        & (target_depth >= np.roll(target_depth, 1))
        & (target_depth >= np.roll(target_depth, -1))
    )
    added = 0
    step = wave[1] - wave[0]
    for i in np.flatnonzero(minima):
        if np.min(np.abs(listed - wave[i])) > MATCH_PIXELS * step:
            rows.append(
                {
                    "element": "Fe",
                    "ion": "1",
                    "chi": "3.00",
                    "loggf": "-1.50",
                    "wave_air": f"{float(linemod.vacuum_to_air(wave[i])):.2f}",
                    "gf_offset": "0.00",
                    "strong": "0",
                    "origin": "blend",
                }
            )
            added += 1
    return added


def update_offsets(rows, target_depth, model_depth, wave, gain=0.8) -> float:
    changes = []
    for r in rows:
        if r["element"] in FIXED_ELEMENTS:
            continue
        w = float(linemod.air_to_vacuum(float(r["wave_air"])))
        i = (
            int(round((w - wave[0]) / (wave[1] - wave[0])))
            if w < 6000
            else 3600 + int(round((w - wave[3600]) / (wave[3601] - wave[3600])))
        )
        if not (0 <= i < wave.size) or abs(wave[i] - w) > 0.2:
            continue
        lo, hi = max(i - 1, 0), min(i + 2, wave.size)
        ratio = target_depth[lo:hi].max() / model_depth[lo:hi].max()
        # Saturated (strong) lines deepen slowly with gf: push them harder.
        boost = 2.0 if r["strong"] == "1" else 1.0
        change = float(np.clip(gain * boost * np.log10(ratio), -0.6, 0.6))
        bounds = ATOMIC_OFFSET_RANGE if r["origin"] == "atomic" else BLEND_OFFSET_RANGE
        offset = float(np.clip(float(r["gf_offset"]) + change, *bounds))
        changes.append(abs(offset - float(r["gf_offset"])))
        r["gf_offset"] = f"{offset:.2f}"
    return float(np.median(changes))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--iterations", type=int, default=6)
    parser.add_argument("--stars", type=int, default=600)
    parser.add_argument("--no-blends", action="store_true")
    args = parser.parse_args()
    target = np.asarray(safe_load(LABEL_CONFIG)["flux_mean"], dtype=np.float64)
    wave = default_grid().wave
    target_depth = np.concatenate([envelope_depth(target[:3600]), envelope_depth(target[3600:])])
    header, rows = read_rows()
    if not args.no_blends:
        print("blend lines added:", add_blends(rows, target_depth, wave))
        write_rows(header, rows)
    for iteration in range(args.iterations):
        mean = model_mean(args.stars)
        corr = np.corrcoef(mean, target)[0, 1]
        model_depth = np.concatenate([envelope_depth(mean[:3600]), envelope_depth(mean[3600:])])
        change = update_offsets(rows, target_depth, model_depth, wave)
        write_rows(header, rows)
        print(f"iteration {iteration}: corr(mean, flux_mean) = {corr:.4f}, median |change| = {change:.3f}")
    mean = model_mean(args.stars)
    print(f"final corr(mean, flux_mean) = {np.corrcoef(mean, target)[0, 1]:.4f}")


if __name__ == "__main__":
    main()
