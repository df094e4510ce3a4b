"""Shared-feature inference equals separate full networks; fusion and bookkeeping."""

import numpy as np
import pytest
import torch

from spemr_engine import config
from spemr_engine.model.bundle import create_random_bundle, load_bundle
from spemr_engine.errors import Cancelled, SpemrError
from spemr_engine.model.inference import SpemrPredictor, resolve_device
from spemr_engine.progress import PREDICT, Count


@pytest.fixture(scope="module")
def bundle(tmp_path_factory):
    return load_bundle(create_random_bundle(tmp_path_factory.mktemp("inf") / "model", "tiny", seed=7))


@pytest.fixture(scope="module")
def predictor(bundle):
    return SpemrPredictor(bundle, device="cpu", batch_size=64)


@pytest.fixture(scope="module")
def flux():
    rng = np.random.default_rng(0)
    return (1.0 + 0.1 * rng.standard_normal((12, 7200))).astype(np.float32)


@pytest.fixture(scope="module")
def prediction(predictor, flux):
    return predictor.predict(flux)


def test_shared_features_equal_separate_full_networks(bundle, predictor):
    x = np.random.default_rng(1).standard_normal((9, 7200)).astype(np.float32)
    means, variances = predictor.standardised_outputs(x)
    assert means.shape == (9, 5, bundle.members, 16)
    worst = 0.0
    with torch.inference_mode():
        for member in range(bundle.members):
            for network in bundle.networks:
                columns = bundle.label_indices(network)
                for s, submodel in enumerate(bundle.submodels):
                    net = bundle.build_network(member, network, region=submodel)
                    mu, var = net(torch.from_numpy(x))
                    worst = max(
                        worst,
                        np.abs(means[:, s, member, columns] - mu.numpy()).max(),
                        np.abs(variances[:, s, member, columns] - var.numpy()).max(),
                    )
    assert worst < 1e-5


def test_sub_models_really_differ(prediction):
    spread = np.ptp(prediction.sub_mean, axis=1)
    assert np.all(spread > 0)


def _hand_built(n_sub=5, members=2, n=3):
    rng = np.random.default_rng(5)
    means = rng.normal(size=(n, n_sub, members, 16)).astype(np.float32)
    variances = rng.uniform(0.05, 1.0, size=(n, n_sub, members, 16)).astype(np.float32)
    return means, variances


def test_fusion_picks_smallest_variance_region_per_label(bundle, predictor):
    means, variances = _hand_built()
    variances[:, 0] = 1e-4  # the base is most confident but never fused
    for row, sub, label in ((0, 3, 5), (2, 1, 0)):  # S3 wins label 5 of spectrum 0, S1 Teff of 2
        variances[row, sub, :, label] = 1e-3
        means[row, sub, :, label] = 0.25  # members agree, so the ensemble is confident
    prediction = predictor.combine(means, variances)
    assert prediction.fused_over == ["S1", "S2", "S3", "S4"]
    assert prediction.winner[0, 5] == 3 and prediction.winner[2, 0] == 1
    assert np.all(prediction.winner >= 1)
    std, mean = bundle.label_std, bundle.label_mean
    member = means.astype(np.float64) * std + mean
    member_var = variances.astype(np.float64) * std**2
    sub_var = member_var.mean(axis=2) + member.var(axis=2)
    np.testing.assert_allclose(prediction.sub_sigma, np.sqrt(sub_var), rtol=1e-9)
    expected = 1 + np.argmin(sub_var[:, 1:], axis=1)
    np.testing.assert_array_equal(prediction.winner, expected)
    rows, cols = np.indices(expected.shape)
    np.testing.assert_allclose(prediction.mean, member.mean(axis=2)[rows, expected, cols])
    np.testing.assert_allclose(prediction.sigma, np.sqrt(sub_var[rows, expected, cols]))
    np.testing.assert_allclose(prediction.member_mean, member)


def test_prediction_shapes_and_units(prediction, flux):
    n = len(flux)
    assert prediction.labels == list(config.LABELS)
    assert prediction.submodels == ["base", "S1", "S2", "S3", "S4"]
    assert prediction.mean.shape == prediction.sigma.shape == prediction.winner.shape == (n, 16)
    assert prediction.sub_mean.shape == (n, 5, 16) and prediction.member_mean.shape == (n, 5, 2, 16)
    assert np.all(prediction.sigma > 0)
    # placeholder statistics centre Teff near 5000 K: destandardised, not raw network output
    assert 2000 < np.median(prediction.mean[:, 0]) < 8000


def test_batching_does_not_change_results(bundle, prediction, flux):
    other = SpemrPredictor(bundle, device="cpu", batch_size=5)
    np.testing.assert_allclose(other.predict(flux).mean, prediction.mean, rtol=1e-6)


def test_bad_row_gives_nan_only_for_that_row(predictor, flux):
    bad = flux[:5].copy()
    bad[3, 100] = np.nan
    prediction = predictor.predict(bad)
    assert np.all(np.isnan(prediction.mean[3])) and np.all(prediction.winner[3] == -1)
    assert np.all(np.isfinite(np.delete(prediction.mean, 3, axis=0)))


def test_progress_and_cancel(bundle, flux):
    seen = []
    predictor = SpemrPredictor(bundle, device="cpu", batch_size=5)
    predictor.predict(flux[:7], progress=seen.append)
    assert seen == [Count(PREDICT, done=5, total=7), Count(PREDICT, done=7, total=7)]
    with pytest.raises(Cancelled):
        predictor.predict(flux, cancel=lambda: True)


def test_empty_and_single_spectrum_inputs(predictor, flux):
    assert predictor.predict(np.zeros((0, 7200))).mean.shape == (0, 16)
    assert predictor.predict(flux[0]).member_mean.shape == (1, 5, 2, 16)


def test_wrong_input_shape_is_a_clear_error(predictor):
    with pytest.raises(SpemrError, match=r"expected flux of shape \(n, 7200\)"):
        predictor.predict(np.ones((2, 7000)))


def test_expand_keeps_unusable_rows(predictor, flux):
    prediction = predictor.predict(flux[:2]).expand(np.array([0, 2]), 3)
    assert len(prediction) == 3 and np.all(np.isnan(prediction.mean[1]))
    assert np.all(prediction.winner[1] == -1) and np.all(prediction.winner_names()[1] == "")
    assert prediction.winner_names()[0, 0] in {"S1", "S2", "S3", "S4"}


def test_base_only_bundle_fuses_over_base(tmp_path, flux):
    predictor = SpemrPredictor(create_random_bundle(tmp_path / "m", regions=()), device="cpu")
    prediction = predictor.predict(flux[:4])
    assert prediction.fused_over == ["base"] and np.all(prediction.winner == 0)
    np.testing.assert_array_equal(prediction.mean, prediction.sub_mean[:, 0])


def test_device_resolution():
    assert resolve_device("cpu").type == "cpu"
    assert resolve_device("auto").type == ("cuda" if torch.cuda.is_available() else "cpu")
    if not torch.cuda.is_available():
        with pytest.raises(SpemrError, match="CUDA is not available"):
            resolve_device("cuda")


def test_regions_with_their_own_flux_statistics_get_their_own_feature_pass(tmp_path, flux):
    """S2 and S4 share one set of own flux statistics, S3 has another (label statistics
    alike): three input groups; each sub-model's standardised outputs equal its full
    network run on the flux standardised with its own statistics; a batch size that splits
    the input changes nothing; standardised_outputs (base-standardised input) refuses."""
    from spemr_engine.model.bundle import Statistics
    from spemr_engine.preprocessing.preprocess import standardise

    first = Statistics(np.linspace(0.85, 1.05, 7200), np.full(7200, 0.05), np.full(16, 0.1), np.full(16, 0.5))
    second = Statistics(np.full(7200, 0.95), np.full(7200, 0.2), np.full(16, -0.1), np.full(16, 2.0))
    path = create_random_bundle(
        tmp_path / "m", "tiny", seed=3, region_statistics={"S2": first, "S3": second, "S4": first}
    )
    bundle = load_bundle(path)
    predictor = SpemrPredictor(bundle, device="cpu", batch_size=5)
    assert [g.submodels for g in predictor.groups] == [(0, 1), (2, 4), (3,)]
    means, variances = predictor.outputs(flux)
    with torch.inference_mode():
        for member in range(bundle.members):
            for network in bundle.networks:
                columns = bundle.label_indices(network)
                for s, submodel in enumerate(bundle.submodels):
                    own = bundle.statistics_of(submodel)
                    x = torch.from_numpy(standardise(flux, own.flux_mean, own.flux_std))
                    mu, var = bundle.build_network(member, network, region=submodel)(x)
                    np.testing.assert_allclose(means[:, s, member, columns], mu.numpy(), atol=1e-5)
                    np.testing.assert_allclose(variances[:, s, member, columns], var.numpy(), atol=1e-5)
    whole = SpemrPredictor(bundle, device="cpu", batch_size=64).predict(flux)
    np.testing.assert_allclose(predictor.predict(flux).mean, whole.mean, rtol=1e-6)
    with pytest.raises(SpemrError, match="regions with their own statistics need the flux itself"):
        predictor.standardised_outputs(flux)
