"""Every script in benchmarks/ runs to the end at its smallest size, so none can rot.

Scripts that need data outside the repository (../shared, data/ from a grid run) skip with
the reason when it is absent. The figures they print are not checked here: only that the
script finishes and prints what it was written to print."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
BENCH = REPO / "benchmarks"
SAMPLES = REPO / "assets" / "samples"
LABEL_CONFIG = REPO.parent / "shared" / "data" / "spemr_dr8_label_config.pkl"

# script -> (arguments for the smallest run, what must exist, text the output must hold)
SMOKE = {
    "catalog.py": (["--files", "2", "--exposures", "coadd", "--architecture", "tiny", "--workers", "1"], [], "ratio:"),
    "inference.py": (["--n", "16", "--batch-size", "8", "--architecture", "tiny", "--repeat", "1"], [], "ratio:"),
    "preprocess.py": (["--files", str(SAMPLES), "--repeat", "1"], [SAMPLES], "ratio:"),
    "read_mrs.py": ([str(SAMPLES), "--repeat", "1"], [SAMPLES], "ratio:"),
    "training.py": (
        ["--config", "tiny", "--n", "64", "--batch-size", "16", "--epochs", "1", "--device", "cpu"],
        [],
        "whole run",
    ),
    "realism.py": (["--spectra", "20", "--rv", "given"], [LABEL_CONFIG], "correlation of means"),
    "emulator.py": ([], [REPO / "assets" / "emulator", REPO / "data" / "rt_grid"], "ratio:"),
    "domain_shift.py": (["--n", "2", "--out", "{tmp}"], [REPO / "data" / "rt_testset"], "ratio:"),
    "startup.py": (
        ["--runs", "1", "--inferences", "1", str(SAMPLES / "med-58800-SYNTHGIANT_sp01-001.fits.gz")],
        [SAMPLES],
        "inference",
    ),
}
NOT_RUN = {
    "original_way.py": "a module the other benchmarks import, not a script",
    "calibrate_lines.py": "rewrites the committed spemr_engine/synth/data/lines.csv (run by hand)",
}


def test_every_benchmark_is_covered():
    scripts = {p.name for p in BENCH.glob("*.py")}
    assert scripts == set(SMOKE) | set(NOT_RUN), "add new benchmarks to SMOKE (or NOT_RUN with a reason)"


@pytest.mark.slow
@pytest.mark.parametrize("script", sorted(SMOKE))
def test_benchmark_smoke_run(script, tmp_path):
    args, needs, expected = SMOKE[script]
    missing = [str(p) for p in needs if not p.exists()]
    if missing:
        pytest.skip(f"benchmarks/{script} needs {', '.join(missing)} (absent here)")
    command = [sys.executable, str(BENCH / script), *(a.replace("{tmp}", str(tmp_path)) for a in args)]
    # The engine of this checkout (a script's own folder, not the cwd, starts sys.path).
    env = dict(
        os.environ,
        OMP_NUM_THREADS="1",
        PYTHONPATH=os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")])),
    )
    result = subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, f"{' '.join(command)}\n{result.stdout[-2000:]}\n{result.stderr[-4000:]}"
    assert expected in result.stdout, result.stdout[-2000:]
