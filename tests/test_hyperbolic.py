"""Gromov delta (exact / base point / sampled) against brute force and known values; Poincare vs Euclidean fits."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
from scipy.sparse.csgraph import minimum_spanning_tree, shortest_path
from scipy.spatial.distance import cdist

from latent.errors import InputError
from latent.hyperbolic import (
    EXACT_MAX_N, distortion, euclidean_distances, fit_distances, fit_report, gromov_delta, gromov_products,
    mean_average_precision, nearest_relatives, poincare_distances, worst_case_distortion,
)
from latent.synthetic import builtin_taxonomy
from latent.taxonomy import Taxonomy


# ---------------------------------------------------------------------- references
def brute_force_delta(D: np.ndarray) -> float:
    """Four-point delta by a plain loop over every set of four distinct points (half the gap)."""
    best = 0.0
    for x, y, z, w in itertools.combinations(range(len(D)), 4):
        sums = sorted([D[x, y] + D[z, w], D[x, z] + D[y, w], D[x, w] + D[y, z]])
        best = max(best, (sums[2] - sums[1]) / 2)
    return best


def naive_delta_at(D: np.ndarray, w: int) -> float:
    """delta_w with the whole (n, n, n) tensor, as Khrulkov et al.'s code (small n only)."""
    G = gromov_products(D, w)
    maxmin = np.max(np.minimum(G[:, :, None], G[None, :, :]), axis=1)
    return float(np.max(maxmin - G))


def random_metric(kind: str, n: int, rng: np.random.Generator) -> np.ndarray:
    if kind == "euclidean":
        X = rng.normal(size=(n, int(rng.integers(1, 6))))
        return cdist(X, X)
    if kind == "graph":  # shortest paths on a complete graph with random weights: a general metric
        W = rng.uniform(0.1, 3.0, size=(n, n))
        W = np.triu(W, 1)
        return shortest_path(W + W.T, directed=False)
    if kind == "l1":
        X = rng.integers(0, 5, size=(n, 3))
        return cdist(X, X, "cityblock")
    if kind == "symmetric":  # not a metric: the exact formula is an identity for any symmetric matrix
        A = rng.uniform(0, 1, size=(n, n))
        A = A + A.T
        np.fill_diagonal(A, 0)
        return A
    raise AssertionError(kind)


def random_tree_metric(n: int, rng: np.random.Generator) -> np.ndarray:
    """Path metric of a random weighted spanning tree on n nodes (a tree metric, not an ultrametric)."""
    W = np.triu(rng.uniform(0.5, 2.0, size=(n, n)), 1)
    T = minimum_spanning_tree(W + W.T)
    return shortest_path(T, directed=False)


# ---------------------------------------------------------------------- exact
@pytest.mark.parametrize("seed", range(6))
@pytest.mark.parametrize("kind", ["euclidean", "graph", "l1", "symmetric"])
def test_exact_equals_brute_force_four_point_loop(kind, seed):
    rng = np.random.default_rng([seed, 17])
    for n in (4, 5, 7, 9, 11):
        D = random_metric(kind, n, rng)
        assert gromov_delta(D, "exact").delta == pytest.approx(brute_force_delta(D), abs=1e-12)


def test_exact_chunking_does_not_change_the_value():
    D = random_metric("graph", 14, np.random.default_rng(3))
    ref = brute_force_delta(D)
    for max_elements in (1, 10, 100, 10**6):
        assert gromov_delta(D, "exact", max_elements=max_elements).delta == pytest.approx(ref, abs=1e-12)


@pytest.mark.parametrize("seed", range(3))
def test_tree_metrics_have_delta_zero(seed):
    rng = np.random.default_rng(seed)
    D = random_tree_metric(25, rng)
    assert gromov_delta(D, "exact").delta == pytest.approx(0.0, abs=1e-12)
    assert gromov_delta(D, "base_point", base_point=int(rng.integers(25)), dtype="float64").delta == \
        pytest.approx(0.0, abs=1e-12)


def test_taxonomic_distances_are_ultrametric_delta_zero():
    D = builtin_taxonomy().distances().astype(float)
    # a tree metric, but not a trivial one: three distinct heights at least
    assert len(np.unique(D)) >= 4
    for method in ("exact", "base_point", "sampled"):
        res = gromov_delta(D, method, sample_size=30, tries=3)
        assert res.delta == 0.0 and res.delta_rel == 0.0


@pytest.mark.parametrize("n", [8, 12, 16, 20])
def test_cycle_graph_known_value(n):
    # Analytic: on the cycle C_n (unit edges, 4 | n), four equally spaced vertices give pair sums n/2,
    # n/2 and n (the two diagonals): half gap n/4; no quadruple does better (checked by brute force
    # for n <= 12 here).
    k = np.arange(n)
    D = np.minimum(np.abs(k[:, None] - k[None, :]), n - np.abs(k[:, None] - k[None, :])).astype(float)
    res = gromov_delta(D, "exact")
    assert res.delta == pytest.approx(n / 4, abs=1e-12)
    assert res.diameter == n / 2 and res.delta_rel == pytest.approx(1.0)
    if n <= 12:
        assert brute_force_delta(D) == pytest.approx(n / 4, abs=1e-12)


@pytest.mark.parametrize("m", [1, 2, 3, 4])
def test_euclidean_grid_known_value(m):
    # Analytic: the (m+1) x (m+1) integer grid in the Euclidean plane; its four corners give pair sums
    # 2m, 2m (sides) and 2 sqrt(2) m (diagonals): half gap (sqrt(2) - 1) m, the maximum (brute force
    # agrees for m <= 3: 16 points).
    g = np.array([(i, j) for i in range(m + 1) for j in range(m + 1)], dtype=float)
    D = cdist(g, g)
    expected = (math.sqrt(2) - 1) * m
    res = gromov_delta(D, "exact")
    assert res.delta == pytest.approx(expected, abs=1e-12)
    assert res.delta_rel == pytest.approx(2 * expected / (math.sqrt(2) * m))
    if m <= 3:
        assert brute_force_delta(D) == pytest.approx(expected, abs=1e-12)


def test_relative_delta_is_scale_free():
    D = random_metric("graph", 10, np.random.default_rng(8))
    a, b = gromov_delta(D, "exact"), gromov_delta(3 * D, "exact")
    assert b.delta == pytest.approx(3 * a.delta)
    assert b.delta_rel == pytest.approx(a.delta_rel)
    assert a.delta_rel == pytest.approx(2 * a.delta / D.max())
    assert 0 < a.delta_rel <= 1


# ---------------------------------------------------------------------- base point
@pytest.mark.parametrize("seed", range(4))
@pytest.mark.parametrize("kind", ["euclidean", "graph", "l1"])
def test_base_point_within_the_proven_factor_of_exact(kind, seed):
    # Fournier, Ismail & Vigneron (Gromov's lemma), our half-gap convention: delta_w <= delta <= 2 delta_w.
    rng = np.random.default_rng([seed, 99])
    D = random_metric(kind, 24, rng)
    exact = gromov_delta(D, "exact").delta
    at = [gromov_delta(D, "base_point", base_point=w, dtype="float64").delta for w in range(len(D))]
    for w in range(len(D)):
        assert at[w] <= exact + 1e-9
        assert exact <= 2 * at[w] + 1e-9
        assert at[w] == pytest.approx(naive_delta_at(D, w), abs=1e-9)
    # delta is the maximum of delta_w over base points: an identity, so the two kernels must agree.
    assert max(at) == pytest.approx(exact, abs=1e-9)


def test_base_point_float32_and_chunks():
    D = random_metric("euclidean", 60, np.random.default_rng(5))
    ref = naive_delta_at(D, 7)
    for max_elements in (1, 1000, 10**7):
        r64 = gromov_delta(D, "base_point", base_point=7, dtype="float64", max_elements=max_elements).delta
        assert r64 == pytest.approx(ref, abs=1e-12)
    r32 = gromov_delta(D, "base_point", base_point=7).delta
    assert abs(r32 - ref) <= 2e-7 * D.max()


# ---------------------------------------------------------------------- sampled
def test_sampled_is_reproducible_by_seed_and_bounded():
    D = random_metric("euclidean", 80, np.random.default_rng(2))
    a = gromov_delta(D, "sampled", sample_size=30, tries=6, seed=4, dtype="float64")
    b = gromov_delta(D, "sampled", sample_size=30, tries=6, seed=4, dtype="float64")
    c = gromov_delta(D, "sampled", sample_size=30, tries=6, seed=5, dtype="float64")
    assert np.array_equal(a.per_try_delta, b.per_try_delta) and np.array_equal(a.per_try_base, b.per_try_base)
    assert not np.array_equal(a.per_try_delta, c.per_try_delta)
    assert a.n_used == 30 and a.tries == 6 and len(a.per_try_delta) == 6
    assert a.delta == pytest.approx(a.per_try_delta.mean()) and a.delta_std == pytest.approx(a.per_try_delta.std())
    assert a.delta_rel == pytest.approx(a.per_try_delta_rel.mean())
    # a subset's delta_w is at most the whole metric's delta (delta_w <= delta(subset) <= delta)
    whole = max(gromov_delta(D, "base_point", base_point=w, dtype="float64").delta for w in range(0, 80, 8))
    assert (a.per_try_delta <= 2 * whole + 1e-9).all()
    assert ((a.per_try_delta_rel >= 0) & (a.per_try_delta_rel <= 1)).all()


def test_sampled_on_the_whole_set_is_base_point_at_each_try_base():
    D = random_metric("graph", 20, np.random.default_rng(6))
    s = gromov_delta(D, "sampled", sample_size=100, tries=4, seed=1, dtype="float64")
    assert s.n_used == 20
    for t in range(4):
        w = int(s.per_try_base[t])
        assert s.per_try_delta[t] == pytest.approx(naive_delta_at(D, w), abs=1e-12)
        assert s.per_try_delta_rel[t] == pytest.approx(2 * naive_delta_at(D, w) / D.max(), abs=1e-12)


# ---------------------------------------------------------------------- input errors
def test_bad_input_errors_name_the_parameter():
    D = random_metric("euclidean", 6, np.random.default_rng(0))
    with pytest.raises(InputError, match="'method'.*'nope'"):
        gromov_delta(D, "nope")
    with pytest.raises(InputError, match="square"):
        gromov_delta(D[:, :5])
    bad = D.copy()
    bad[0, 1] += 1
    with pytest.raises(InputError, match="symmetric"):
        gromov_delta(bad)
    with pytest.raises(InputError, match="non-negative"):
        gromov_delta(-D)
    nan = D.copy()
    nan[1, 2] = nan[2, 1] = np.nan
    with pytest.raises(InputError, match="finite"):
        gromov_delta(nan)
    with pytest.raises(InputError, match="'base_point'.*\\[0, 6\\)"):
        gromov_delta(D, "base_point", base_point=6)
    with pytest.raises(InputError, match="exact.*limited"):
        gromov_delta(np.zeros((EXACT_MAX_N + 1, EXACT_MAX_N + 1)), "exact")
    with pytest.raises(InputError, match="'geometry'"):
        fit_distances(D, "spherical")
    with pytest.raises(InputError, match="'dim'"):
        fit_distances(D, "poincare", 0)


# ---------------------------------------------------------------------- distances and metrics
def test_poincare_distance_matches_closed_form_and_geoopt():
    import geoopt
    import torch

    r = 0.7
    pts = np.array([[0.0, 0.0], [r, 0.0], [0.0, -0.5], [-0.3, 0.4]])
    P = poincare_distances(pts)
    assert P[0, 1] == pytest.approx(math.log((1 + r) / (1 - r)), rel=1e-12)  # 2 artanh(r)
    ball = geoopt.PoincareBall(c=1.0)
    t = torch.as_tensor(pts, dtype=torch.float64)
    ref = ball.dist(t[:, None, :], t[None, :, :]).numpy()
    np.testing.assert_allclose(P, ref, atol=1e-10)


def test_distortion_and_worst_case_by_hand():
    target = np.array([[0, 1, 2], [1, 0, 2], [2, 2, 0]], dtype=float)
    fitted = np.array([[0, 2, 2], [2, 0, 1], [2, 1, 0]], dtype=float)
    # pairs (0,1): |2-1|/1 = 1; (0,2): 0; (1,2): |1-2|/2 = 0.5  -> mean 0.5
    assert distortion(fitted, target) == pytest.approx(0.5)
    # ratios 2, 1, 0.5 -> max expansion 2 / min 0.5 = 4
    assert worst_case_distortion(fitted, target) == pytest.approx(4.0)
    assert worst_case_distortion(2.5 * target, target) == pytest.approx(1.0)
    assert distortion(target, target) == 0.0


def test_map_equals_sklearn_label_ranking_average_precision():
    from sklearn.metrics import label_ranking_average_precision_score

    rng = np.random.default_rng(0)
    for _ in range(5):
        S = 25
        X = rng.normal(size=(S, 3))
        F = cdist(X, X)
        F = np.round(F, 1)  # ties included
        R = rng.random((S, S)) < 0.2
        R[np.arange(S), rng.integers(0, S, S)] = True
        np.fill_diagonal(R, False)
        keep = R.any(axis=1)
        off = ~np.eye(S, dtype=bool)
        y_true = R[off].reshape(S, S - 1)[keep]
        y_score = -F[off].reshape(S, S - 1)[keep]
        assert mean_average_precision(F, R) == pytest.approx(label_ranking_average_precision_score(y_true, y_score),
                                                             abs=1e-12)


def test_map_and_nearest_relatives_by_hand():
    # species 0,1 congeners; 2,3 congeners; the two genera in one family
    T = np.array([[0, 1, 2, 2], [1, 0, 2, 2], [2, 2, 0, 1], [2, 2, 1, 0]], dtype=float)
    R = nearest_relatives(T)
    assert np.array_equal(R, [[0, 1, 0, 0], [1, 0, 0, 0], [0, 0, 0, 1], [0, 0, 1, 0]])
    assert mean_average_precision(T, R) == 1.0
    # a fit that puts species 0 closer to 2 than to 1: rank of 1 from 0 is 2 -> precision 1/2
    F = T.copy()
    F[0, 2] = F[2, 0] = 0.5
    # AP: a=0: 1/2; a=1: 1; a=2: its relative 3 at 1, but 0 at 0.5 -> 1/2; a=3: 1
    assert mean_average_precision(F, R) == pytest.approx((0.5 + 1 + 0.5 + 1) / 4)


# ---------------------------------------------------------------------- fits
def _sub(D: np.ndarray, k: int, seed: int) -> np.ndarray:
    idx = np.sort(np.random.default_rng(seed).choice(len(D), size=min(k, len(D)), replace=False))
    return D[np.ix_(idx, idx)]


def test_fit_is_seeded_and_converges():
    T = builtin_taxonomy().distances().astype(float)[:20, :20]
    a = fit_distances(T, "poincare", 2, steps=100, seed=3)
    b = fit_distances(T, "poincare", 2, steps=100, seed=3)
    assert np.array_equal(a.coords, b.coords) and np.array_equal(a.loss, b.loss)
    assert a.loss.shape == (100,) and a.loss[-1] < 0.5 * a.loss[0]
    assert (np.linalg.norm(a.coords, axis=1) < 1).all()
    np.testing.assert_allclose(a.fitted, a.scale * poincare_distances(a.coords))


def test_poincare_beats_euclidean_on_the_builtin_taxonomy():
    T = builtin_taxonomy().distances().astype(float)  # 47 species, tree metric
    p = fit_report(fit_distances(T, "poincare", 2, steps=POINCARE_STEPS), T)
    e = fit_report(fit_distances(T, "euclidean", 2, steps=POINCARE_STEPS), T)
    assert p["distortion"] < TREE_RATIO * e["distortion"]


def test_poincare_beats_euclidean_on_rare_species_taxonomy(shared):
    path = shared("rare_species", "rare_species_metadata.csv")
    T = _sub(Taxonomy.from_table(path).distances().astype(float), 60, seed=0)
    p = fit_report(fit_distances(T, "poincare", 2, steps=POINCARE_STEPS), T)
    e = fit_report(fit_distances(T, "euclidean", 2, steps=POINCARE_STEPS), T)
    assert p["distortion"] < TREE_RATIO * e["distortion"]


@pytest.mark.parametrize("seed", [0, 1])
def test_euclidean_wins_for_points_from_a_plane(seed):
    X = np.random.default_rng(seed).uniform(size=(40, 2))
    T = cdist(X, X)
    e = fit_distances(T, "euclidean", 2, steps=POINCARE_STEPS, seed=seed)
    p = fit_distances(T, "poincare", 2, steps=POINCARE_STEPS, seed=seed)
    de, dp = distortion(e.fitted, T), distortion(p.fitted, T)
    assert de < PLANE_EUCLID_MAX
    assert de < dp
    np.testing.assert_allclose(e.fitted, e.scale * euclidean_distances(e.coords))


POINCARE_STEPS = 500
TREE_RATIO = 0.4
PLANE_EUCLID_MAX = 0.02
