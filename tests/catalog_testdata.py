"""Inputs for the catalog tests: small synthetic LAMOST MRS files (spemr_engine.synth),
broken files of every kind, and a tiny random-weight model."""

from __future__ import annotations

import gzip
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
from astropy.io import fits

from mrs_testfiles import arm_hdu, primary_hdu, write_mrs as write_test_mrs
from spemr_engine.model.bundle import create_random_bundle
from spemr_engine.synth.fits_writer import write_mrs
from spemr_engine.synth.generate import make_stars, observe_stars

REPO_ROOT = Path(__file__).resolve().parents[1]


def write_synthetic_files(folder: Path, n: int, seed: int = 7, n_exp: int = 2) -> list[Path]:
    """n realistic MRS files (coadd + n_exp exposures each), names sorted by index."""
    folder.mkdir(parents=True, exist_ok=True)
    stars = make_stars(n, seed)
    paths = []
    for k, obs in enumerate(observe_stars(stars.labels, stars.seeds, n_exp=n_exp, snr_range=(40.0, 80.0))):
        paths.append(
            write_mrs(
                folder / f"med-58800-SYN_sp01-{k:03d}.fits",
                obs,
                900_000 + k,
                stars.labels[k],
                int(stars.seeds[k]),
                fiberid=k + 1,
            )
        )
    return paths


def write_broken_files(folder: Path) -> dict[str, str]:
    """Files that must each give a flagged row: name -> the flag expected."""
    folder.mkdir(parents=True, exist_ok=True)
    good = write_test_mrs(folder / "tmp-whole.fits").read_bytes()
    (folder / "tmp-whole.fits").unlink()
    (folder / "med-corrupt.fits").write_bytes(os.urandom(5000))
    (folder / "med-empty.fits").write_bytes(b"")
    (folder / "med-text.fits").write_text("this is not FITS\n")
    (folder / "med-truncated.fits").write_bytes(good[: len(good) // 2])
    (folder / "med-truncated.fits.gz").write_bytes(gzip.compress(good)[:4000])
    _write_lrs_like(folder / "spec-58000-TEST_sp01-001.fits")
    _write_zero_snr(folder / "med-zero-snr.fits")
    expected = {
        name: "file_error"
        for name in (
            "med-corrupt.fits",
            "med-empty.fits",
            "med-text.fits",
            "med-truncated.fits",
            "med-truncated.fits.gz",
            "spec-58000-TEST_sp01-001.fits",
        )
    }
    expected["med-zero-snr.fits"] = "low_snr"
    return expected


def _write_lrs_like(path: Path) -> None:
    """The layout of a LAMOST low-resolution file: a 5 x N primary image."""
    header = fits.Header()
    header["FILENAME"] = path.name
    header["AUTHOR"] = "LAMOST Pipeline"
    header["TELESCOP"] = "LAMOST"
    fits.PrimaryHDU(np.ones((5, 3909), dtype=np.float32), header=header).writeto(path)


def _write_zero_snr(path: Path) -> None:
    """A readable MRS file whose coadd has S/N 0 in both arms (like med-58268-...)."""
    hdus = [primary_hdu(FILENAME=path.name, OBSID=777)]
    hdus += [arm_hdu(name, snr=0.0) for name in ("COADD_B", "COADD_R", "B-100", "R-100")]
    fits.HDUList(hdus).writeto(path)


def tiny_model(path: Path) -> Path:
    return create_random_bundle(path, "tiny", seed=3)


def run_cli(*args, timeout: float = 300, **popen) -> subprocess.CompletedProcess:
    """``spemr ...`` in a fresh interpreter (its own torch threads, like a user's run)."""
    return subprocess.run(
        [sys.executable, "-m", "spemr_engine", *map(str, args)],
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=REPO_ROOT,
        **popen,
    )


def cli_command(*args) -> list[str]:
    return [sys.executable, "-m", "spemr_engine", *map(str, args)]
