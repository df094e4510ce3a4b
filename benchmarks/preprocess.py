"""Preprocessing throughput: the project's path against the original way of working.

    python benchmarks/preprocess.py [--files DIR] [--repeat N]

Prints FITS reading throughput (files/s), then spectra/s for
  project:   spemr_engine.preprocessing.preprocess.preprocess_pairs (batched, vectorised continuum)
  reference: one spectrum at a time: scipy interp1d resampling + the published iterative
             np.polyfit continuum (original_way.normalise_reference)
both for resample + normalise alone (RV given, as the authors took it from a catalog) and
including reading the files, and last `ratio: X` = project / reference spectra/s for
resample + normalise. Everything runs on one core (BLAS threads pinned to 1 below).

Inputs: the real MRS files in ../shared/data/lamost_mrs when present, otherwise
MRS-like files generated here (the project must not need ../shared).
"""

from __future__ import annotations

import os

for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ[_var] = "1"  # one core, before numpy loads its BLAS

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
from astropy.io import fits

from original_way import original_spectrum, read_arms
from spemr_engine.config import preprocess_config
from spemr_engine.reading.lamost import read_mrs
from spemr_engine.preprocessing.preprocess import preprocess_pairs
from spemr_engine.preprocessing.rv import line_spectrum, load_line_list

REPO = Path(__file__).resolve().parents[1]
SHARED_MRS = REPO.parent / "shared" / "data" / "lamost_mrs"
COVERAGE = {"B": (4894.0, 5378.0), "R": (6292.0, 6851.0)}


# ------------------------------------------------------------------- inputs
def write_synthetic_files(folder: Path, n_files: int = 8, n_exposures: int = 4) -> list[Path]:
    """MRS-like files (coadd + exposures, per-pixel rows, LOGLAM) of a line-list star."""
    rng = np.random.default_rng(0)
    lines = load_line_list()
    c = preprocess_config().speed_of_light_kms
    paths = []
    for k in range(n_files):
        rv = rng.uniform(-150, 150)
        hdus = [fits.PrimaryHDU()]
        hdus[0].header["FILENAME"] = f"med-58000-BENCH_sp01-{k:03d}.fits"
        hdus[0].header["OBSID"] = 1000 + k
        for name in ["COADD"] + [str(84000000 + 20 * e) for e in range(n_exposures)]:
            for side in "BR":
                hdus.append(_arm_table(name, side, rv, c, lines, rng))
        path = folder / hdus[0].header["FILENAME"]
        fits.HDUList(hdus).writeto(path, overwrite=True)
        paths.append(path)
    return paths


def _arm_table(name: str, side: str, rv: float, c: float, lines, rng) -> fits.BinTableHDU:
    low, high = COVERAGE[side]
    wave = np.logspace(np.log10(low), np.log10(high), 4000)
    t = (wave - wave.mean()) / (high - low)
    continuum = 900.0 * (1 + 0.4 * t - 0.6 * t**2)
    flux = line_spectrum(wave / (1 + rv / c), lines) * continuum
    flux += rng.normal(0, 1, wave.size) * continuum / 60.0
    ivar = np.full(wave.size, (60.0 / 900.0) ** 2)
    coadd = name == "COADD"
    extname = f"COADD_{side}" if coadd else f"{side}-{name}"
    columns = [
        fits.Column("FLUX", "E", array=flux),
        fits.Column("IVAR", "E", array=ivar),
        fits.Column("LOGLAM", "E", array=np.log10(wave)),
    ]
    masks = ("ANDMASK", "ORMASK") if coadd else ("PIXMASK",)
    columns += [fits.Column(m, "I", array=np.zeros(wave.size, np.int16)) for m in masks]
    hdu = fits.BinTableHDU.from_columns(columns, name=extname)
    hdu.header["SNR"] = 60.0
    return hdu


# ---------------------------------------------------------------- reference
def reference_read(path: Path) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Every arm's wavelength and flux, read with plain astropy (no checks, no masks)."""
    with fits.open(path) as hdul:
        return {h.name: (10 ** h.data["LOGLAM"].astype(float), h.data["FLUX"].astype(float)) for h in hdul[1:]}


def reference_spectrum(path: Path, blue: str, red: str, rv: float, read: bool = True, arrays=None) -> np.ndarray:
    """One spectrum the original way (benchmarks/original_way.py), from the file or from arrays."""
    return original_spectrum(read_arms(path, blue, red) if read else arrays, rv)


# -------------------------------------------------------------------- timing
def best_rates(runs: dict, counts: dict, repeat: int) -> dict:
    """Items per second of the fastest of `repeat` runs of each, the runs interleaved so
    that load from other processes on a shared machine hits every path alike."""
    best = {name: np.inf for name in runs}
    for _ in range(repeat):
        for name, run in runs.items():
            start = time.perf_counter()
            run()
            best[name] = min(best[name], time.perf_counter() - start)
    return {name: counts[name] / best[name] for name in runs}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--files", type=Path, help="folder of med-*.fits(.gz) files")
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        folder = args.files or (SHARED_MRS if SHARED_MRS.is_dir() else None)
        paths = sorted(folder.glob("med-*.fits*")) if folder else write_synthetic_files(Path(tmp))
        print(f"inputs: {len(paths)} files from {folder or 'generated MRS-like files'}")
        run_benchmark(paths, args.repeat)


def run_benchmark(paths: list[Path], repeat: int) -> None:
    files = [read_mrs(p) for p in paths]
    pairs = [(f.path, pair) for f in files for pair in f.pairs]
    rv = 0.0
    print(f"spectra (arm pairs): {len(pairs)}")

    reading = best_rates(
        {"spemr": lambda: [read_mrs(p) for p in paths], "astropy": lambda: [reference_read(p) for p in paths]},
        {"spemr": len(paths), "astropy": len(paths)},
        repeat,
    )
    print(f"FITS reading, spemr read_mrs:       {reading['spemr']:8.1f} files/s")
    print(f"FITS reading, plain astropy:        {reading['astropy']:8.1f} files/s")

    batch = [pair for _, pair in pairs] * max(1, 200 // len(pairs))
    arrays = [[(a.wave, a.flux) for a in (pair.blue, pair.red)] for _, pair in pairs]
    core = best_rates(
        {
            "project": lambda: preprocess_pairs(batch, rv=rv),
            "reference": lambda: [reference_spectrum(None, "", "", rv, read=False, arrays=a) for a in arrays],
        },
        {"project": len(batch), "reference": len(arrays)},
        repeat,
    )
    print(f"resample + normalise, project:      {core['project']:8.1f} spectra/s")
    print(f"resample + normalise, reference:    {core['reference']:8.1f} spectra/s")

    full = best_rates(
        {
            "project": lambda: [preprocess_pairs(f.pairs, rv=rv) for f in map(read_mrs, paths)],
            "reference": lambda: [
                reference_spectrum(path, pair.extname_blue, pair.extname_red, rv) for path, pair in pairs
            ],
            "with_rv": lambda: preprocess_pairs([pair for _, pair in pairs]),
        },
        {"project": len(pairs), "reference": len(pairs), "with_rv": len(pairs)},
        max(1, repeat // 2),
    )
    print(f"read + resample + normalise, project (per file):       {full['project']:8.1f} spectra/s")
    print(f"read + resample + normalise, reference (per spectrum): {full['reference']:8.1f} spectra/s")
    print(f"project incl. RV measured by CCF (no read):            {full['with_rv']:8.1f} spectra/s")
    print(f"ratio: {core['project'] / core['reference']:.1f}")


if __name__ == "__main__":
    main()
