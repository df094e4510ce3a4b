"""Deep-ensemble combination (eq. 1) and min-variance fusion (eqs. 2-3)."""

import numpy as np
import pytest

from spemr_engine.model.ensemble import ensemble_combine, fuse_min_variance


def test_ensemble_combine_matches_paper_equation_1():
    rng = np.random.default_rng(1)
    means = rng.normal(size=(6, 5, 3))
    variances = rng.uniform(0.1, 2.0, size=(6, 5, 3))
    mean, var = ensemble_combine(means, variances)
    np.testing.assert_allclose(mean, means.mean(axis=0))
    eq1 = (variances + means**2).mean(axis=0) - means.mean(axis=0) ** 2
    np.testing.assert_allclose(var, eq1, rtol=1e-10)


def test_ensemble_combine_of_identical_members_is_that_member():
    means = np.tile(np.array([[[5000.0, 3.1]]]), (4, 1, 1))
    variances = np.tile(np.array([[[2500.0, 0.01]]]), (4, 1, 1))
    mean, var = ensemble_combine(means, variances)
    np.testing.assert_allclose(mean, [[5000.0, 3.1]])
    np.testing.assert_allclose(var, [[2500.0, 0.01]])


def test_ensemble_combine_never_negative_for_large_labels():
    # Teff-sized means with tiny variances: eq. 1 written naively in float32 cancels badly.
    means = np.full((6, 100, 1), 6543.21, dtype=np.float32)
    variances = np.full((6, 100, 1), 1e-6, dtype=np.float32)
    _, var = ensemble_combine(means, variances)
    assert np.all(var > 0)
    np.testing.assert_allclose(var, 1e-6, rtol=1e-3)


def test_ensemble_combine_rejects_mismatched_shapes():
    with pytest.raises(ValueError):
        ensemble_combine(np.zeros((2, 3, 4)), np.zeros((2, 3, 5)))


def test_fusion_picks_smallest_variance_sub_model_per_label():
    # 3 sub-models, 2 spectra, 3 labels; the winner differs per label and per spectrum.
    sub_means = np.arange(18, dtype=float).reshape(3, 2, 3)
    sub_vars = np.array(
        [
            [[1.0, 0.5, 9.0], [0.1, 7.0, 7.0]],
            [[2.0, 0.2, 9.0], [0.3, 0.3, 8.0]],
            [[0.9, 0.9, 0.1], [0.2, 7.0, 1.0]],
        ]
    )
    mean, var, winner = fuse_min_variance(sub_means, sub_vars)
    expected_winner = np.array([[2, 1, 2], [0, 1, 2]])
    np.testing.assert_array_equal(winner, expected_winner)
    rows, cols = np.indices(winner.shape)
    np.testing.assert_array_equal(mean, sub_means[expected_winner, rows, cols])
    np.testing.assert_array_equal(var, sub_vars.min(axis=0))


def test_fusion_ignores_nan_variances_and_marks_undecidable_labels():
    sub_means = np.array([[[1.0, 2.0]], [[3.0, 4.0]]])
    sub_vars = np.array([[[np.nan, np.nan]], [[0.5, np.nan]]])
    mean, var, winner = fuse_min_variance(sub_means, sub_vars)
    assert winner[0, 0] == 1 and mean[0, 0] == 3.0 and var[0, 0] == 0.5
    assert np.isnan(mean[0, 1]) and np.isnan(var[0, 1])
