"""Reader speed: spemr_engine.reading.lamost.read_mrs against a plain astropy loop that reads the
same columns the way the original scripts did (fits.open, per-extension .data[...]).

Usage: python benchmarks/read_mrs.py [FOLDER] [--repeat 5]
Default folder: ../shared/data/lamost_mrs (development data). Prints files/s for both and
``ratio: X`` (spemr time / plain time; the reader also decompresses-and-checks the whole
file, sorts, builds masks and pairs, so about 1 is the goal, not less).
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
from astropy.io import fits

from spemr_engine.reading.lamost import read_mrs

DEFAULT_FOLDER = Path(__file__).resolve().parents[2] / "shared" / "data" / "lamost_mrs"


def plain_astropy(path: Path) -> int:
    """What a simple script does: open, pull FLUX/IVAR/LOGLAM of every arm."""
    n = 0
    with fits.open(path) as hdul:
        for hdu in hdul[1:]:
            data = hdu.data
            wave = 10 ** np.asarray(data["LOGLAM"], dtype=np.float64)
            flux = np.asarray(data["FLUX"], dtype=np.float64)
            ivar = np.asarray(data["IVAR"], dtype=np.float64)
            n += wave.size + flux.size + ivar.size
    return n


def timed(func, files, repeat: int) -> float:
    start = time.perf_counter()
    for _ in range(repeat):
        for path in files:
            func(path)
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("folder", nargs="?", default=str(DEFAULT_FOLDER))
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()
    files = sorted(Path(args.folder).glob("med-*.fits*"))
    if not files:
        raise SystemExit(f"no med-*.fits[.gz] files in {args.folder}")
    n_pairs = sum(len(read_mrs(p).pairs) for p in files)  # also warms caches
    ours = timed(read_mrs, files, args.repeat)
    plain = timed(plain_astropy, files, args.repeat)
    n_files = len(files) * args.repeat
    print(f"files: {len(files)} ({n_pairs} arm pairs) x {args.repeat}")
    print(f"read_mrs: {n_files / ours:.1f} files/s, {n_pairs * args.repeat / ours:.1f} pairs/s")
    print(f"plain astropy: {n_files / plain:.1f} files/s")
    print(f"ratio: {ours / plain:.2f}")


if __name__ == "__main__":
    main()
