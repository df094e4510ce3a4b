"""Fit quality (issue 10, items 6-7): fit_chi2, member_spread, poor_fit + sigma inflation,
region_mismatch, and the thresholds' calibration. Real spectra, the shipped default model
and the project's own generator; nothing under test is mocked."""

from __future__ import annotations

import csv
import json
import subprocess
import sys

import numpy as np
import pytest

from spemr_engine import api, config
from spemr_engine.model.bundle import create_random_bundle, load_bundle
from spemr_engine.errors import ModelBundleError, SpemrError
from spemr_engine.model.fit_quality import (
    UNCALIBRATED_NOTE,
    assess,
    calibration_note,
    fit_chi2,
    member_spread,
    region_mismatch,
    thresholds_of,
)
from spemr_engine.model.inference import Prediction
from spemr_engine.preprocessing.preprocess import preprocess_pairs
from spemr_engine.model.quality_calibration import calibrate
from spemr_engine.synth import build_reference_set
from spemr_engine.synth import spectrum as sp
from spemr_engine.synth.generate import broadening_for, make_stars
from spemr_engine.synth.model_spectra import WORLD, model_spectra

from other_world import SAMPLES, labels_of, observed, other_world_file, samples

SUBMODELS = ["base", "S1", "S2", "S3", "S4"]


@pytest.fixture(scope="module")
def model():
    return api.load_model()


# ------------------------------------------------------------------ fit_chi2
def test_fit_chi2_is_about_one_at_the_true_labels_in_the_own_world():
    stars = make_stars(8, seed=11)
    observations = [
        observed(stars.labels[i : i + 1], int(stars.seeds[i]), sp.typical_broadening(stars.labels[i : i + 1]))
        for i in range(8)
    ]
    spectra = preprocess_pairs([obs.pairs()[0] for obs in observations], rv=np.array([obs.rv for obs in observations]))
    assert spectra.ivar.shape == spectra.flux.shape and (spectra.ivar[spectra.mask] == 0).all()
    chi2 = fit_chi2(spectra.flux, spectra.ivar, model_spectra(stars.labels))
    assert 0.9 < np.median(chi2) < 1.1, chi2
    assert (chi2 < 1.5).all(), chi2
    # With each star's own (random) broadening the typical model is still close.
    own = [
        observed(
            stars.labels[i : i + 1],
            int(stars.seeds[i]),
            broadening_for(stars.labels[i : i + 1], stars.seeds[i : i + 1]),
        )
        for i in range(8)
    ]
    spectra = preprocess_pairs([obs.pairs()[0] for obs in own], rv=np.array([obs.rv for obs in own]))
    chi2 = fit_chi2(spectra.flux, spectra.ivar, model_spectra(stars.labels))
    assert 0.9 < np.median(chi2) < 1.2, chi2


def test_shipped_samples_fit_at_their_true_labels_and_at_the_prediction(model):
    truth = samples()
    for kind in ("giant", "dwarf", "metal-poor"):
        analysis = api.analyse_file(SAMPLES / truth[kind]["filename"], model)
        spectra = analysis.spectra
        at_truth = fit_chi2(spectra.flux[:1], spectra.ivar[:1], model_spectra(labels_of(truth[kind])))[0]
        assert 0.85 < at_truth < 1.3, (kind, at_truth)
        row = analysis.rows()[0]
        assert 0.85 < row["fit_chi2"] < 1.5 and "poor_fit" not in row["flags"], (kind, row)
        assert row["sigma_inflation"] == 1.0 and 0 < row["member_spread"] < 1


def test_nonsense_labels_get_a_model_spectrum_that_fits_badly(model):
    """A broken or hostile model's labels (Teff -500 K or 1e6 K, [Mg/H] +50) are clipped
    into what the world renders: fit_chi2 is large instead of the line model crashing."""
    truth = labels_of(samples()["giant"])
    spectra = api.analyse_file(SAMPLES / samples()["giant"]["filename"], model).spectra
    nonsense = np.repeat(truth, 3, axis=0)
    nonsense[0, 0], nonsense[1, 0], nonsense[2, config.LABELS.index("MgH")] = -500.0, 1e6, 50.0
    flux = model_spectra(nonsense)
    assert np.isfinite(flux).all()
    chi2 = fit_chi2(np.repeat(spectra.flux[:1], 3, axis=0), np.repeat(spectra.ivar[:1], 3, axis=0), flux)
    at_truth = fit_chi2(spectra.flux[:1], spectra.ivar[:1], model_spectra(truth))[0]
    assert (chi2[:2] > 10).all() and chi2[2] > at_truth + 0.2, (chi2, at_truth)
    assert np.array_equal(model_spectra(truth), model_spectra(truth.copy()))  # in-domain: unclipped


def test_model_spectra_is_normalised_like_templates_and_handles_missing_labels():
    labels = labels_of(samples()["giant"])
    flux = model_spectra(np.vstack([labels, np.full((1, 16), np.nan)]))
    assert flux.shape == (2, config.default_grid().n_pixels)
    assert np.isnan(flux[1]).all() and np.isfinite(flux[0]).all()
    assert abs(np.median(flux[0]) - 1.0) < 0.03 and flux[0].min() < 0.7
    partial = labels.copy()
    partial[0, 3:] = np.nan  # abundances unknown: solar-scaled
    assert np.isfinite(model_spectra(partial)).all()


# ------------------------------------------------------- another world: flag
def test_a_spectrum_from_another_world_is_flagged_and_its_sigmas_inflated(tmp_path, model):
    path = other_world_file(tmp_path)
    thresholds = model.quality
    assert thresholds is not None, "the shipped default model must be calibrated"
    analysis = api.analyse_file(path, model)
    row = analysis.rows()[0]
    assert row["fit_chi2"] > 3 * thresholds.fit_chi2_max, row["fit_chi2"]
    assert "poor_fit" in row["flags"].split("|")
    factor = row["sigma_inflation"]
    assert factor == pytest.approx(
        max(
            np.sqrt(row["fit_chi2"] / thresholds.fit_chi2_max), row["member_spread"] / thresholds.member_spread_max, 1.0
        )
    )
    assert factor > 1.3
    raw = api.predictor_for(model).predict(analysis.spectra.flux[:1])
    assert row["Teff[K]_err"] == pytest.approx(raw.sigma[0, 0] * factor, rel=1e-6)
    assert row["FeH_err"] == pytest.approx(raw.sigma[0, 2] * factor, rel=1e-6)
    assert row["Teff[K]"] == pytest.approx(raw.mean[0, 0], rel=1e-9)  # values unchanged
    np.testing.assert_allclose(analysis.prediction.sigma[0], raw.sigma[0] * factor, rtol=1e-6)


def test_the_cli_writes_the_columns_and_flags(tmp_path, model):
    path = other_world_file(tmp_path)
    out = tmp_path / "out.csv"
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "spemr_engine",
            "predict",
            str(path),
            str(SAMPLES / samples()["giant"]["filename"]),
            "-o",
            str(out),
        ],
        capture_output=True,
        text=True,
    )
    assert done.returncode == 0, done.stderr
    assert "fit quality not calibrated" not in done.stderr  # the default model is
    rows = list(csv.DictReader(open(out)))
    for column in ("fit_chi2", "member_spread", "sigma_inflation", "region_mismatch"):
        assert column in rows[0]
    assert "poor_fit" in rows[0]["flags"] and float(rows[0]["sigma_inflation"]) > 1
    assert "poor_fit" not in rows[1]["flags"] and float(rows[1]["sigma_inflation"]) == 1.0


def test_real_lamost_files_the_model_cannot_fit_are_flagged_poor_fit(shared_mrs_files, model):
    """The two high-S/N giants (coadd S/N 160-280) are not reproduced to the noise by the
    synthetic world: flagged, sigmas inflated; every row's flag follows its measures."""
    flagged = set()
    for path in shared_mrs_files:
        for row in api.analyse_file(path, model).rows():
            if not row["usable"]:
                continue
            over = (
                row["fit_chi2"] > model.quality.fit_chi2_max or row["member_spread"] > model.quality.member_spread_max
            )
            assert ("poor_fit" in row["flags"]) == over
            assert (row["sigma_inflation"] > 1) == over
            if over:
                flagged.add(path.name.split("-")[1])
    assert {"58025", "58408"} <= flagged


# ---------------------------------------------------------- region mismatch
def _prediction(mean_row: dict, sigma_row: dict, winner: str, members=None) -> Prediction:
    labels = list(config.LABELS)
    mean = np.zeros((1, 16))
    sigma = np.full((1, 16), 0.1)
    for name, value in mean_row.items():
        mean[0, labels.index(name)] = value
    for name, value in sigma_row.items():
        sigma[0, labels.index(name)] = value
    winner_index = np.full((1, 16), SUBMODELS.index(winner))
    sub_mean = np.repeat(mean[:, None], 5, axis=1)
    sub_sigma = np.repeat(sigma[:, None], 5, axis=1)
    member_mean = np.repeat(sub_mean[:, :, None], 3, axis=2) if members is None else members
    return Prediction(labels, SUBMODELS, SUBMODELS[1:], mean, sigma, winner_index, sub_mean, sub_sigma, member_mean)


def test_region_mismatch_on_constructed_predictions():
    regions = config.default_regions()
    star = {"Teff": 5500.0, "Logg": 2.9, "FeH": -1.75}
    errors = {"Teff": 100.0, "Logg": 0.2, "FeH": 0.1}
    assert region_mismatch(_prediction(star, errors, "S1"), regions) == [["S1"]]
    assert region_mismatch(_prediction(star, errors, "S3"), regions) == [[]]
    near = dict(star, FeH=-1.15)  # 1.5 sigma outside S1: consistent
    assert region_mismatch(_prediction(near, errors, "S1"), regions) == [[]]
    hot = {"Teff": 7200.0, "Logg": 4.0, "FeH": 0.0}
    assert region_mismatch(_prediction(hot, errors, "S1"), regions) == [["S1"]]
    assert region_mismatch(_prediction(hot, errors, "S2"), regions) == [[]]
    assert region_mismatch(_prediction(hot, errors, "base"), regions) == [[]]  # base has no region
    s1 = next(r for r in regions if r.name == "S1")
    distance = s1.outside_sigma(
        _prediction(star, errors, "S1").mean, _prediction(star, errors, "S1").sigma, config.LABELS
    )
    assert distance[0] == pytest.approx(7.5)


def test_the_mismatch_text_gives_the_distance_the_flag_was_judged_with():
    """A poor_fit row's shown sigmas are inflated; the text divides the inflation back out,
    so it never says "1.5 sigma outside" for a row flagged at more than 2 sigma."""
    from spemr_gui.results import region_mismatch_text

    regions = config.default_regions()
    star, errors = {"Teff": 5500.0, "Logg": 2.9, "FeH": -1.75}, {"Teff": 100.0, "Logg": 0.2, "FeH": 0.1}
    shown = _prediction(star, {name: 3.0 * value for name, value in errors.items()}, "S1")  # inflated x3
    assert "7.5σ outside" in region_mismatch_text(shown, ["S1"], regions, inflation=3.0)
    assert "2.5σ outside" in region_mismatch_text(shown, ["S1"], regions)


def test_region_mismatch_flag_in_rows_for_the_metal_poor_sample(model):
    analysis = api.analyse_file(SAMPLES / samples()["metal-poor"]["filename"], model)
    prediction, row = analysis.prediction, analysis.rows()[0]
    feh = config.LABELS.index("FeH")
    s1 = next(r for r in model.regions if r.name == "S1")
    outside = s1.outside_sigma(prediction.mean, prediction.sigma, prediction.labels)[0]
    if prediction.winner_names()[0, feh] == "S1" and outside > 2:
        assert "region_mismatch" in row["flags"] and "S1" in row["region_mismatch"].split("|")
    else:
        assert "region_mismatch" not in row["flags"]


def test_member_spread_is_the_members_share_of_the_sigma():
    members = np.zeros((1, 5, 3, 16))
    members[0, 1, :, 0] = [5000.0, 5100.0, 5200.0]  # S1 members disagree on Teff
    prediction = _prediction({"Teff": 5100.0}, {"Teff": 163.3}, "S1", members=members)
    assert member_spread(prediction)[0] == pytest.approx(np.std([5000, 5100, 5200]) / 163.3)
    one = _prediction({"Teff": 5100.0}, {"Teff": 100.0}, "S1", members=members[:, :, :1])
    assert np.isnan(member_spread(one)[0])


# ------------------------------------------------------------- calibration
@pytest.fixture(scope="module")
def small_refset(tmp_path_factory):
    return build_reference_set(tmp_path_factory.mktemp("rs") / "rs", n_stars=10, seed=3, max_exposures=1, version=WORLD)


def test_calibration_writes_thresholds_and_bad_ones_are_refused(tmp_path, small_refset):
    bundle_dir = create_random_bundle(tmp_path / "model", "tiny", seed=1)
    bundle = load_bundle(bundle_dir)
    assert bundle.quality is None and calibration_note(bundle) == UNCALIBRATED_NOTE
    entry = calibrate(bundle_dir, small_refset.path, split="all")
    reloaded = load_bundle(bundle_dir)
    assert reloaded.quality.fit_chi2_max == entry["fit_chi2_max"] > 0
    assert reloaded.quality.member_spread_max == entry["member_spread_max"] > 0
    assert reloaded.quality.n_spectra == len(small_refset) and calibration_note(reloaded) is None
    assert entry["distribution"]["fit_chi2"]["p99"] == entry["fit_chi2_max"]
    from spemr_engine.synth.generate import world_id

    assert reloaded.quality.world_id == world_id(WORLD)

    # thresholds measured against another world's model spectra (e.g. an emulator since
    # retrained) count as none, and the note says why
    manifest = json.loads((bundle_dir / "manifest.json").read_text())
    manifest["quality"]["model_spectra_world_id"] = "v2:0000000000000000"
    (bundle_dir / "manifest.json").write_text(json.dumps(manifest))
    stale = load_bundle(bundle_dir)
    assert stale.quality is not None and thresholds_of(stale) is None
    assert "v2:0000000000000000" in calibration_note(stale)

    manifest = json.loads((bundle_dir / "manifest.json").read_text())
    for bad in (-1.0, None, "5", float("nan")):
        manifest["quality"]["fit_chi2_max"] = bad
        (bundle_dir / "manifest.json").write_text(json.dumps(manifest))
        with pytest.raises(ModelBundleError) as error:
            load_bundle(bundle_dir)
        assert "fit_chi2_max" in str(error.value) and "\n" not in str(error.value)
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "spemr_engine",
            "predict",
            str(SAMPLES / samples()["giant"]["filename"]),
            "-o",
            str(tmp_path / "x.csv"),
            "--model",
            str(bundle_dir),
        ],
        capture_output=True,
        text=True,
    )
    assert done.returncode == 2
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and "quality thresholds" in lines[0] and "fit_chi2_max" in lines[0]


def test_rebuilt_spectra_tolerate_a_flipped_pixel_but_not_another_world(tmp_path, small_refset):
    """Rebuilding star by star can flip a near-threshold de-spiking decision (one pixel of
    the default model's 9,200 spectra); a spectrum unlike its seed's is refused."""
    import shutil

    from spemr_engine.model.quality_calibration import rebuild_spectra
    from spemr_engine.training.refset import ReferenceSet

    copy = tmp_path / "rs"
    shutil.copytree(small_refset.path, copy)
    flux = np.memmap(copy / "flux.f32", dtype=np.float32, mode="r+").reshape(len(small_refset), -1)
    flux[2, 1000] += 0.01
    flux.flush()
    indices = np.arange(len(small_refset))
    rebuilt, _ = rebuild_spectra(ReferenceSet.open(copy), indices)
    assert abs(float(rebuilt[2, 1000]) - float(flux[2, 1000])) == pytest.approx(0.01, abs=1e-4)
    flux[2, 2000:2010] += 0.01
    flux.flush()
    with pytest.raises(SpemrError, match=r"spectrum 2: 11 pixels by more than 0.002"):
        rebuild_spectra(ReferenceSet.open(copy), indices)


def test_an_uncalibrated_model_fills_the_columns_but_never_flags_poor_fit(tmp_path):
    bundle = load_bundle(create_random_bundle(tmp_path / "model", "tiny", seed=2))
    path = other_world_file(tmp_path)
    row = api.analyse_file(path, bundle).rows()[0]
    assert row["fit_chi2"] > 10 and row["member_spread"] >= 0
    assert "poor_fit" not in row["flags"] and row["sigma_inflation"] == 1.0


def test_calibration_refuses_a_reference_set_without_seeds(tmp_path, small_refset):
    from spemr_engine.training.refset import ReferenceSetWriter

    writer = ReferenceSetWriter(tmp_path / "real", synthetic=False, source="real files")
    rows = [{k: v for k, v in r.items() if k != "seed"} for r in small_refset.rows[:3]]
    writer.append(small_refset.read_flux(np.arange(3)), np.asarray(small_refset.labels)[:3], rows)
    writer.close()
    bundle_dir = create_random_bundle(tmp_path / "model", "tiny", seed=1)
    with pytest.raises(SpemrError, match="inverse variance"):
        calibrate(bundle_dir, tmp_path / "real", split="all")


def test_assess_uses_the_model_thresholds(model):
    analysis = api.analyse_file(SAMPLES / samples()["dwarf"]["filename"], model)
    usable = np.flatnonzero(analysis.usable)
    raw = api.predictor_for(model).predict(analysis.spectra.flux[usable])
    fit = assess(raw, analysis.spectra.flux[usable], analysis.spectra.ivar[usable], model, keep_model_flux=True)
    assert fit.calibrated and fit.model_flux.shape == analysis.spectra.flux[usable].shape
    np.testing.assert_allclose(fit.fit_chi2, analysis.fit.fit_chi2[usable])


def test_fit_quality_does_not_depend_on_the_batch(model):
    """The catalog labels spectra in blocks shared with other files; a spectrum's fit
    columns must not depend on its companions (resume reproduces a run bit for bit)."""
    stars = make_stars(12, seed=5)
    observations = [
        observed(
            stars.labels[i : i + 1],
            int(stars.seeds[i]),
            broadening_for(stars.labels[i : i + 1], stars.seeds[i : i + 1]),
        )
        for i in range(12)
    ]
    spectra = preprocess_pairs([obs.pairs()[0] for obs in observations], rv=np.array([obs.rv for obs in observations]))
    raw = api.predictor_for(model).predict(spectra.flux)
    together = assess(raw, spectra.flux, spectra.ivar, model)
    rows = [3, 7, 11]
    from spemr_engine.batch.catalog_rows import _take

    alone = assess(_take(raw, np.array(rows)), spectra.flux[rows], spectra.ivar[rows], model)
    assert np.array_equal(together.fit_chi2[rows], alone.fit_chi2)
    assert np.array_equal(together.sigma_inflation[rows], alone.sigma_inflation)
    assert np.array_equal(together.member_spread[rows], alone.member_spread)
