"""Deep-ensemble combination (paper eq. 1) and SPEMR min-variance fusion (eqs. 2-3).

Pure numpy so that the trainer, the evaluator and the inference engine share one
definition of how members and sub-models become one answer.
"""

from __future__ import annotations

import numpy as np


def ensemble_combine(means: np.ndarray, variances: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Combine M ensemble members: arrays (M, n, L) -> mean, variance (n, L).

    Paper eq. 1: var = mean_i(var_i + mu_i^2) - mean^2. It is evaluated in the
    algebraically identical form mean_i(var_i) + mean_i((mu_i - mean)^2), which cannot
    cancel to a tiny negative number for large labels (Teff ~ 5000 K squared loses
    the variance in float32); any negative input variance is clipped to zero.
    """
    means = np.asarray(means, dtype=np.float64)
    variances = np.asarray(variances, dtype=np.float64)
    if means.shape != variances.shape or means.ndim != 3:
        raise ValueError(f"means {means.shape} and variances {variances.shape} must both be (M, n, L)")
    mean = means.mean(axis=0)
    spread = ((means - mean) ** 2).mean(axis=0)
    variance = np.maximum(variances, 0.0).mean(axis=0) + spread
    return mean, variance


def fuse_min_variance(sub_means: np.ndarray, sub_variances: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per spectrum and label, keep the sub-model with the smallest variance (eqs. 2-3).

    Arrays (S, n, L) -> mean, variance (n, L) and winner (n, L), the index of the chosen
    sub-model along S. A NaN variance never wins; where no sub-model has a finite variance
    the result is NaN with winner 0. Ties go to the earlier sub-model.
    """
    sub_means = np.asarray(sub_means, dtype=np.float64)
    sub_variances = np.asarray(sub_variances, dtype=np.float64)
    if sub_means.shape != sub_variances.shape or sub_means.ndim != 3:
        raise ValueError(f"sub_means {sub_means.shape} and sub_variances {sub_variances.shape} must both be (S, n, L)")
    if sub_means.shape[0] == 0:
        raise ValueError("fusion needs at least one sub-model")
    ranked = np.where(np.isnan(sub_variances), np.inf, sub_variances)
    winner = np.argmin(ranked, axis=0)
    pick = winner[np.newaxis]
    mean = np.take_along_axis(sub_means, pick, axis=0)[0]
    variance = np.take_along_axis(sub_variances, pick, axis=0)[0]
    undecided = np.isinf(ranked).all(axis=0)
    mean[undecided] = np.nan
    variance[undecided] = np.nan
    return mean, variance, winner
