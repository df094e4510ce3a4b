"""Accuracy of a model on LAMOST-like files made from spectra it was not made from.

Held-out radiative-transfer stars (Turbospectrum, never seen by the emulator or the model;
`data/rt_testset/`) are observed like LAMOST coadds (their own R, macro-turbulence and
rotation; random RV; S/N 15-90 in the red arm; continuum, noise, bad pixels, sky) and
written as MRS FITS files, which go end to end through `spemr predict`. The same stars can
be observed in other worlds for the cross-world table:

  rt         Turbospectrum spectra + the synthetic world's empirical parts (bands, H-alpha core)
  rt-pure    Turbospectrum spectra alone (LTE, no molecules: the most independent set)
  v1         the version-1 line-model generator at the same labels and broadening
  v2         the version-2 world (emulator) at the same labels and broadening

Prints per label MAE, bias, scatter and the share of errors within 1 sigma, the RV error,
and how often rows were flagged poor_fit / region_mismatch. Last line:
``ratio: <Teff MAE / 80 K goal>``.

Usage: python benchmarks/domain_shift.py [--model DIR] [--world rt-pure] [--rt data/rt_testset]
                                         [--n 120] [--out /tmp/ds] [--seed 11]
"""

from __future__ import annotations

import argparse
import csv
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

from spemr_engine.config import LABELS
from spemr_engine.synth import rt_world
from spemr_engine.synth import spectrum as sp
from spemr_engine.synth.fits_writer import write_mrs
from spemr_engine.synth.generate import render
from spemr_engine.synth.observe import observe, sample_conditions
from spemr_engine.synth.radiative.grid import load_directory

REPO = Path(__file__).resolve().parents[1]
SHOWN = ("Teff", "Logg", "FeH", "MgH")
SNR_RANGE = (15.0, 90.0)


def observe_world(spectra, world: str, seed: int):
    """One Observation (coadd only) per star, conditions fixed by (seed, index)."""
    broadening = sp.Broadening(
        spectra.vmic.astype(float),
        spectra.vmac.astype(float),
        spectra.vsini.astype(float),
        spectra.resolution.astype(float),
    )
    labels = spectra.labels.astype(np.float64)
    for start in range(0, len(spectra), 32):
        part = slice(start, start + 32)
        b = broadening.take(part)
        if world in ("rt", "rt-pure"):
            fine = rt_world.render(labels[part], b, rt_flux=spectra.flux[part], empirical=world == "rt")
        else:
            fine = render(labels[part], b, version=int(world[1:]))
        for j in range(len(labels[part])):
            k = start + j
            rng = np.random.default_rng([seed, k])
            cond = sample_conditions(rng, labels[k], snr_range=SNR_RANGE, n_exp=1)
            cond.snr_red = float(rng.uniform(*SNR_RANGE))
            one = {name: flux[j : j + 1] for name, flux in fine.items()}
            obs = observe(one, float(labels[k, 0]), cond, np.random.default_rng([seed, k, 3]), exposures=False)
            obs.meta["generator"] = world
            yield k, obs


def write_files(spectra, world: str, out: Path, seed: int) -> list[tuple[Path, float]]:
    out.mkdir(parents=True, exist_ok=True)
    written = []
    for k, obs in observe_world(spectra, world, seed):
        path = out / f"med-59000-RTTEST{k:04d}_sp01-{k % 250 + 1:03d}.fits.gz"
        write_mrs(path, obs, 980_000_000 + k, spectra.labels[k], None, fiberid=k % 250 + 1)
        written.append((path, obs.rv))
    return written


def summarise(rows: list[dict], truth: np.ndarray, rvs: np.ndarray) -> None:
    print(f"{'label':6} {'n':>4} {'MAE':>8} {'bias':>8} {'scatter':>8} {'<1 sigma':>9}")
    for name in SHOWN:
        j = LABELS.index(name)
        column = "Teff[K]" if name == "Teff" else name
        pred = np.array([float(r.get(column) or "nan") for r in rows])
        sig = np.array([float(r.get(f"{column}_err") or "nan") for r in rows])
        ok = np.isfinite(pred)
        err = pred[ok] - truth[ok, j]
        within = np.mean(np.abs(err) < sig[ok]) if ok.any() else float("nan")
        print(
            f"{name:6} {ok.sum():4d} {np.mean(np.abs(err)):8.3f} {np.mean(err):8.3f} {np.std(err):8.3f} "
            f"{100 * within:8.0f}%"
        )
    rv = np.array([float(r.get("rv") or "nan") for r in rows])
    print(f"RV MAE {np.nanmean(np.abs(rv - rvs)):.2f} km/s")
    flags = [str(r.get("flags", "")) for r in rows]
    for flag in ("poor_fit", "region_mismatch"):
        print(f"{flag}: {sum(flag in f for f in flags)} of {len(rows)} rows")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default=None, help="model bundle (default: the shipped one)")
    parser.add_argument("--world", default="rt-pure", choices=("rt", "rt-pure", "v1", "v2"))
    parser.add_argument("--rt", default=str(REPO / "data" / "rt_testset"), help="folder of held-out RT chunks")
    parser.add_argument("--n", type=int, default=None, help="first N stars only")
    parser.add_argument("--out", default="/tmp/spemr_domain_shift", help="folder for the FITS files and table")
    parser.add_argument("--seed", type=int, default=11)
    args = parser.parse_args()
    spectra = load_directory(args.rt)
    if args.n:
        spectra = spectra.take(np.arange(min(args.n, len(spectra))))
    out = Path(args.out) / args.world
    started = time.monotonic()
    written = write_files(spectra, args.world, out, args.seed)
    print(f"{len(written)} files ({args.world}) written in {time.monotonic() - started:.0f} s")
    table = out / "predictions.csv"
    command = [sys.executable, "-m", "spemr_engine", "predict", *[str(p) for p, _ in written], "-o", str(table)]
    if args.model:
        command += ["--model", args.model]
    started = time.monotonic()
    subprocess.run(command, check=True, stderr=subprocess.DEVNULL)
    print(f"spemr predict: {time.monotonic() - started:.0f} s")
    with open(table, newline="") as handle:
        rows = [r for r in csv.DictReader(handle) if not r.get("extname_blue") or r["extname_blue"] == "COADD_B"]
    index = {str(p): k for k, (p, _) in enumerate(written)}
    order = [index[r["source"]] for r in rows]
    summarise(rows, spectra.labels[order], np.array([written[k][1] for k in order]))
    teff = np.array([float(r.get("Teff[K]") or "nan") for r in rows])
    print(f"ratio: {np.nanmean(np.abs(teff - spectra.labels[order, 0])) / 80.0:.3f}")


if __name__ == "__main__":
    main()
