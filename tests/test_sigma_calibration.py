"""Per-label sigma calibration (spemr calibrate-sigma; sigma_calibration.py)."""

from __future__ import annotations

import json
from dataclasses import replace
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from spemr_engine.model import sigma_calibration as sc
from spemr_engine.model.bundle import create_random_bundle, load_bundle
from spemr_engine.errors import ModelBundleError
from spemr_engine.model.fit_quality import member_spread
from spemr_engine.model.inference import SpemrPredictor
from tests.refset_testdata import make_refset

REPO = Path(__file__).resolve().parents[1]


def test_the_factor_puts_68_percent_of_errors_within_one_sigma():
    rng = np.random.default_rng(1)
    true_sigma = rng.uniform(0.5, 2.0, 40_000)
    errors = rng.normal(0.0, true_sigma)
    factor = sc.scale_for(errors, 2.0 * true_sigma)  # sigmas twice too large
    assert abs(factor - 0.5) < 0.01
    assert abs(np.mean(np.abs(errors) < factor * 2.0 * true_sigma) - sc.ONE_SIGMA_COVERAGE) < 1e-3


@pytest.fixture(scope="module")
def calibrated(tmp_path_factory):
    """A random bundle and a small reference set; the bundle calibrated on its valid split."""
    root = tmp_path_factory.mktemp("sigma")
    bundle = create_random_bundle(root / "model", seed=3)
    refset = make_refset(root / "refset", n_stars=60, repeats=2, seed=4)
    raw = load_bundle(bundle)
    calibration, rows = sc.calibrate(bundle, refset.path, split="all", device="cpu")
    return raw, load_bundle(bundle), refset, calibration, rows


def test_calibration_scales_every_sigma_of_a_label_and_nothing_else(calibrated):
    raw, bundle, refset, calibration, rows = calibrated
    assert bundle.sigma_calibration == calibration and raw.sigma_calibration is None
    flux = refset.read_flux(np.arange(20))
    before = SpemrPredictor(raw, device="cpu").predict(flux)
    after = SpemrPredictor(bundle, device="cpu").predict(flux)
    factors = calibration.factors(list(bundle.labels))
    assert np.array_equal(after.mean, before.mean) and np.array_equal(after.winner, before.winner)
    assert np.allclose(after.sigma, before.sigma * factors, rtol=1e-12)
    assert np.allclose(after.sub_sigma, before.sub_sigma * factors, rtol=1e-12)
    assert np.allclose(after.ensemble_sigma(), before.sigma, rtol=1e-12)
    # fit quality stays in the ensemble's units: its thresholds don't depend on the calibration
    assert np.allclose(member_spread(after), member_spread(before), rtol=1e-12, equal_nan=True)


def test_the_calibrated_split_has_68_percent_within_one_sigma(calibrated):
    _, bundle, refset, calibration, rows = calibrated
    assert {row["label"] for row in rows} == set(calibration.scale) == set(bundle.labels)
    flux = refset.read_flux(np.arange(len(refset)))
    prediction = SpemrPredictor(bundle, device="cpu").predict(flux)
    truth = refset.labels[:, [refset.label_names.index(name) for name in bundle.labels]]
    within = np.mean(np.abs(prediction.mean - truth) < prediction.sigma, axis=0)
    assert np.all(np.abs(within - sc.ONE_SIGMA_COVERAGE) <= 2 / len(refset)), within
    for row in rows:  # the factor is what moved each label from before to after
        assert abs(row["within_after"] - sc.ONE_SIGMA_COVERAGE) <= 2 / row["n"]


def _with_entry(tmp_path, entry) -> Path:
    path = create_random_bundle(tmp_path / "model", seed=1)
    manifest = json.loads((path / "manifest.json").read_text())
    manifest[sc.MANIFEST_KEY] = entry
    (path / "manifest.json").write_text(json.dumps(manifest))
    return path


GOOD = {"scale": {"Teff": 0.5}, "coverage": 0.6827, "split": "valid", "n_spectra": 100}


@pytest.mark.parametrize(
    "change",
    [
        {"scale": {"Teff": -1.0}},
        {"scale": {"Teff": 1e300}},
        {"scale": {"Teff": "0.5"}},
        {"scale": {"Teff": True}},
        {"scale": {"NotALabel": 0.5}},
        {"scale": {}},
        {"scale": [0.5]},
        {"coverage": 1.5},
        {"n_spectra": 0},
        {"n_spectra": 2.5},
    ],
)
def test_a_tampered_calibration_is_refused_in_one_line(tmp_path, change):
    path = _with_entry(tmp_path, {**GOOD, **change})
    with pytest.raises(ModelBundleError) as error:
        load_bundle(path)
    message = str(error.value)
    assert "\n" not in message and sc.MANIFEST_KEY in message and "model" in message


@settings(max_examples=40, deadline=None)
@given(value=st.one_of(st.floats(allow_nan=True, allow_infinity=True), st.integers(), st.text(max_size=5)))
def test_any_factor_is_either_valid_or_refused(tmp_path_factory, value):
    labels = ["Teff", "Logg"]
    entry = {**GOOD, "scale": {"Teff": value}}
    try:
        calibration = sc.SigmaCalibration.from_manifest("m", entry, labels)
    except ModelBundleError as error:
        assert "\n" not in str(error)
    else:
        factor = calibration.scale["Teff"]
        assert np.isfinite(factor) and sc.SCALE_RANGE[0] <= factor <= sc.SCALE_RANGE[1]


def test_cli_writes_the_factors_and_refuses_a_missing_refset_in_one_line(tmp_path):
    bundle = create_random_bundle(tmp_path / "model", seed=2)
    refset = make_refset(tmp_path / "refset", n_stars=40, repeats=2, seed=5)
    command = [sys.executable, "-m", "spemr_engine", "calibrate-sigma", str(bundle), str(refset.path), "--split", "all"]
    done = subprocess.run(command, capture_output=True, text=True, cwd=REPO, timeout=300)
    assert done.returncode == 0, done.stderr
    teff = next(line.split() for line in done.stdout.splitlines() if line.startswith("Teff"))
    factor = load_bundle(bundle).sigma_calibration.scale["Teff"]
    assert teff[:2] == ["Teff", "80"] and float(teff[3]) == pytest.approx(factor, abs=1e-3)
    missing = subprocess.run(
        command[:5] + [str(tmp_path / "nowhere")], capture_output=True, text=True, cwd=REPO, timeout=120
    )
    assert missing.returncode == 2 and len(missing.stderr.strip().splitlines()) == 1, missing.stderr


def test_the_app_says_how_the_shipped_models_sigmas_were_made():
    from spemr_engine.config import assets_dir
    from spemr_gui.results import sigma_note

    model = load_bundle(assets_dir() / "models" / "default")
    calibration = model.sigma_calibration
    assert calibration is not None, "the shipped default model must carry calibrated sigmas"
    note = sigma_note(model)
    assert "68 % of held-out errors" in note and f"Teff ×{calibration.scale['Teff']:.2f}" in note
    assert "not calibrated" in sigma_note(replace(model, sigma_calibration=None))
