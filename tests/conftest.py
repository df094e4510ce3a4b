"""Shared fixtures. Real LAMOST files live in ../shared (read-only, not part of the
repo): tests that need them skip with a clear reason when it is absent."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
# One BLAS/torch thread per process: the suite runs worker processes and Dask workers
# beside the test process on 2 cores, and oversubscribed threads made it 5x slower.
os.environ.setdefault("OMP_NUM_THREADS", "1")

REPO_ROOT = Path(__file__).resolve().parents[1]
# SPEMR_SHARED_DATA points elsewhere, e.g. from a git worktree that is not beside ../shared.
SHARED_DATA = Path(os.environ.get("SPEMR_SHARED_DATA") or REPO_ROOT.parent / "shared" / "data")


def _shared(relative: str) -> Path:
    path = SHARED_DATA / relative
    if not path.exists():
        pytest.skip(f"shared data not available: {path} (read-only ../shared is absent)")
    return path


@pytest.fixture(scope="session")
def shared_mrs_dir() -> Path:
    return _shared("lamost_mrs")


@pytest.fixture(scope="session")
def shared_mrs_files(shared_mrs_dir) -> list[Path]:
    return sorted(shared_mrs_dir.glob("med-*.fits*"))


@pytest.fixture(scope="session")
def mrs_files() -> list[Path]:
    """For tests that need any MRS files (coadd + exposures) rather than particular real
    stars: the real ones in ../shared when present, else the shipped synthetic samples."""
    shared = SHARED_DATA / "lamost_mrs"
    folder = shared if shared.is_dir() else REPO_ROOT / "assets" / "samples"
    return sorted(folder.glob("med-*.fits*"))


@pytest.fixture(scope="session")
def shared_lrs_file() -> Path:
    return _shared("lamost_lrs/spec-58397-EG014118N254444M01_sp03-031.fits")


@pytest.fixture(scope="session")
def shared_label_config() -> Path:
    return _shared("spemr_dr8_label_config.pkl")


@pytest.fixture(scope="session")
def shared_isochrones() -> Path:
    return _shared("mist_iso_7gyr.csv")
