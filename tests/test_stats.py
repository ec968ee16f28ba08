"""Resampling statistics: bootstrap coverage, scaling, reproducibility; permutation p-values."""

from __future__ import annotations

import logging
import math

import numpy as np
import pytest
from scipy import stats as sps

from latent.stats import (
    bootstrap_ci,
    bootstrap_ci_fn,
    bootstrap_distribution,
    bootstrap_indices,
    bootstrap_weights,
    iter_bootstrap_indices,
    null_summary,
    percentile_interval,
    permutation_pvalue,
)


# ---------------------------------------------------------------------- resample indices
def test_bootstrap_indices_shape_range_and_seed():
    idx = bootstrap_indices(50, 30, seed=3)
    assert idx.shape == (30, 50) and idx.dtype == np.int64
    assert idx.min() >= 0 and idx.max() < 50
    assert np.array_equal(idx, bootstrap_indices(50, 30, seed=3))
    assert not np.array_equal(idx, bootstrap_indices(50, 30, seed=4))
    # default_rng(seed), as documented
    assert np.array_equal(idx, np.random.default_rng(3).integers(0, 50, size=(30, 50)))


@pytest.mark.parametrize("max_elements", [1, 7, 100, 1000, 10**6])
def test_chunks_concatenate_to_the_full_resamples(max_elements):
    chunks = list(iter_bootstrap_indices(40, 23, seed=11, max_elements=max_elements))
    assert all(c.shape[1] == 40 and c.shape[0] >= 1 for c in chunks)
    assert np.array_equal(np.concatenate(chunks), bootstrap_indices(40, 23, seed=11))


def test_bootstrap_weights_count_occurrences():
    idx = np.array([[0, 0, 2], [1, 2, 2]])
    w = bootstrap_weights(idx, 4)
    assert np.array_equal(w, [[2, 0, 1, 0], [0, 1, 2, 0]])
    x = np.array([1.0, 10.0, 100.0, 1000.0])
    assert np.array_equal(w @ x, x[idx].sum(axis=1))


def test_bootstrap_distribution_matches_gathered_means():
    x = np.random.default_rng(0).normal(size=301)
    dist = bootstrap_distribution(lambda w: w @ x / len(x), len(x), n_boot=257, seed=5, max_elements=1000)
    expected = x[bootstrap_indices(len(x), 257, seed=5)].mean(axis=1)
    np.testing.assert_allclose(dist, expected, rtol=0, atol=1e-12)


# ---------------------------------------------------------------------- bootstrap_ci
def test_mean_interval_is_the_percentile_interval_of_resampled_means():
    x = np.random.default_rng(1).exponential(size=200)
    low, high = bootstrap_ci(x, n_boot=500, seed=2, alpha=0.1)
    means = x[bootstrap_indices(200, 500, seed=2)].mean(axis=1)
    assert low == pytest.approx(np.quantile(means, 0.05), abs=1e-12)
    assert high == pytest.approx(np.quantile(means, 0.95), abs=1e-12)


def test_other_statistics_use_the_same_resamples():
    x = np.random.default_rng(2).normal(size=99)
    low, high = bootstrap_ci(x, n_boot=300, seed=7, statistic=np.median)
    medians = np.median(x[bootstrap_indices(99, 300, seed=7)], axis=1)
    assert (low, high) == pytest.approx((np.quantile(medians, 0.025), np.quantile(medians, 0.975)), abs=1e-12)


def test_ci_of_the_mean_covers_the_true_mean_about_95_percent():
    rng = np.random.default_rng(2024)
    mu, covered = 1.3, 0
    for rep in range(200):
        x = rng.normal(mu, 2.0, size=60)
        low, high = bootstrap_ci(x, n_boot=1000, seed=rep)
        covered += low <= mu <= high
    assert 0.90 <= covered / 200 <= 0.99


def test_interval_width_shrinks_like_one_over_sqrt_n():
    rng = np.random.default_rng(5)
    widths = {}
    for n in (100, 1600):
        w = []
        for rep in range(20):
            low, high = bootstrap_ci(rng.normal(size=n), n_boot=500, seed=rep)
            w.append(high - low)
        widths[n] = np.mean(w)
    ratio = widths[100] / widths[1600]  # sqrt(1600 / 100) = 4
    assert 3.3 < ratio < 4.8
    # and the width itself is about 2 * 1.96 * sigma / sqrt(n)
    assert widths[1600] == pytest.approx(2 * 1.96 / 40, rel=0.1)


def test_same_seed_same_interval():
    x = np.random.default_rng(3).normal(size=500)
    assert bootstrap_ci(x, seed=9) == bootstrap_ci(x, seed=9)
    assert bootstrap_ci(x, seed=9) != bootstrap_ci(x, seed=10)


def test_empty_values_and_no_resamples_give_nan():
    low, high = bootstrap_ci(np.array([]))
    assert math.isnan(low) and math.isnan(high)
    low, high = bootstrap_ci(np.ones(5), n_boot=0)
    assert math.isnan(low) and math.isnan(high)
    assert bootstrap_ci(np.full(7, 2.5), n_boot=50) == (2.5, 2.5)


def test_bootstrap_ci_rejects_bad_input():
    with pytest.raises(ValueError, match="'values' parameter of bootstrap_ci must be 1-d"):
        bootstrap_ci(np.ones((3, 2)))
    with pytest.raises(ValueError, match="'alpha' parameter of bootstrap_ci"):
        bootstrap_ci(np.ones(3), alpha=1.5)
    with pytest.raises(ValueError, match="'n_boot' parameter of bootstrap_ci"):
        bootstrap_ci(np.ones(3), n_boot=-1)


# ---------------------------------------------------------------------- bootstrap_ci_fn
def test_ci_fn_equals_ci_for_the_mean():
    x = np.random.default_rng(4).normal(size=80)
    by_fn = bootstrap_ci_fn(lambda idx: x[idx].mean(), 80, n_boot=400, seed=3)
    assert by_fn == pytest.approx(bootstrap_ci(x, n_boot=400, seed=3), abs=1e-12)


def test_ci_fn_ignores_undefined_resamples_and_logs_them(caplog):
    x = np.r_[np.zeros(3), np.ones(3)]

    def ratio(idx):  # undefined when the resample holds no 1
        ones = x[idx].sum()
        return ones / ones if ones else float("nan")

    with caplog.at_level(logging.DEBUG, logger="latent.stats"):
        low, high = bootstrap_ci_fn(ratio, 6, n_boot=2000, seed=0)
    assert (low, high) == (1.0, 1.0)  # NaN resamples did not enter the interval
    # P(no 1 among 6 draws) = 1/64: ~31 of 2000 undefined, counted in the log
    assert any("resamples undefined" in r.getMessage() for r in caplog.records)

    with caplog.at_level(logging.WARNING, logger="latent.stats"):
        low, high = bootstrap_ci_fn(lambda idx: float("nan"), 6, n_boot=50, seed=0)
    assert math.isnan(low) and math.isnan(high)
    assert any("50 of 50 resamples undefined" in r.getMessage() for r in caplog.records if r.levelno == logging.WARNING)


def test_percentile_interval_columns():
    samples = np.column_stack([np.arange(101.0), np.r_[np.full(50, np.nan), np.arange(51.0)]])
    out = percentile_interval(samples, 0.1)
    assert out.shape == (2, 2)
    np.testing.assert_allclose(out[0], [5.0, 95.0])
    np.testing.assert_allclose(out[1], np.quantile(np.arange(51.0), [0.05, 0.95]))


# ---------------------------------------------------------------------- permutation p-values
def test_permutation_pvalue_hand_computed():
    null = np.array([1.0, 2.0, 3.0, 4.0])
    assert permutation_pvalue(3.0, null) == pytest.approx(3 / 5)  # 3 and 4 are >= 3
    assert permutation_pvalue(3.0, null, "less") == pytest.approx(4 / 5)  # 1, 2, 3
    # mean 2.5: |3 - 2.5| = 0.5, distances 1.5, 0.5, 0.5, 1.5 all >= 0.5
    assert permutation_pvalue(3.0, null, "two-sided") == pytest.approx(5 / 5)
    assert permutation_pvalue(10.0, [0.0, 1.0, 2.0]) == pytest.approx(1 / 4)  # never 0
    assert permutation_pvalue(10.0, [0.0, 1.0, 2.0], "less") == pytest.approx(4 / 4)
    # mean 1: |10 - 1| = 9, distances 1, 0, 1
    assert permutation_pvalue(10.0, [0.0, 1.0, 2.0], "two-sided") == pytest.approx(1 / 4)
    assert permutation_pvalue(-8.0, [0.0, 1.0, 2.0], "two-sided") == pytest.approx(1 / 4)
    assert permutation_pvalue(0.5, [0.0, np.nan, 1.0]) == pytest.approx(2 / 3)  # NaN left out
    assert math.isnan(permutation_pvalue(float("nan"), null))
    with pytest.raises(ValueError, match="'alternative' parameter of permutation_pvalue"):
        permutation_pvalue(1.0, null, "bigger")


def test_null_summary_hand_computed():
    out = null_summary(5.0, [1.0, 2.0, 3.0, 4.0])
    assert out["null_mean"] == pytest.approx(2.5)
    assert out["null_std"] == pytest.approx(math.sqrt(1.25))
    assert out["z"] == pytest.approx(2.5 / math.sqrt(1.25))
    assert out["p_value"] == pytest.approx(1 / 5)
    flat = null_summary(1.0, [2.0, 2.0, 2.0])
    assert flat["null_std"] == 0 and math.isnan(flat["z"]) and flat["p_value"] == pytest.approx(1.0)


def _two_group_pvalues(shift: float, reps: int, seed: int) -> np.ndarray:
    """p-values of a difference-of-means permutation test, ``reps`` independent data sets."""
    rng = np.random.default_rng(seed)
    n, n_perm = 20, 199
    labels = np.r_[np.ones(n // 2, bool), np.zeros(n // 2, bool)]
    out = np.empty(reps)
    for rep in range(reps):
        x = rng.normal(size=n) + shift * labels
        observed = x[labels].mean() - x[~labels].mean()
        perms = np.argsort(rng.random((n_perm, n)), axis=1)
        permuted = labels[perms]  # (n_perm, n) shuffled labels
        null = (permuted * x).sum(1) / (n // 2) - (~permuted * x).sum(1) / (n // 2)
        out[rep] = permutation_pvalue(observed, null)
    return out


def test_pvalues_are_uniform_under_the_null():
    p = _two_group_pvalues(0.0, 500, seed=12)
    assert sps.kstest(p, "uniform").pvalue > 0.01
    assert p.min() >= 1 / 200


def test_pvalues_are_small_under_an_alternative():
    p = _two_group_pvalues(2.0, 100, seed=13)
    assert np.mean(p < 0.05) > 0.9
    assert sps.kstest(p, "uniform").pvalue < 0.01
