"""Alignment probe: Mantel against scikit-bio, CKA against its feature-space definition, RSA tau-a / rho-a
against brute-force definitions, nulls against explicit recomputation, planted hierarchy found, no
hierarchy not found, real cub10 CLIP embeddings."""

from __future__ import annotations

import itertools
import json

import numpy as np
import pandas as pd
import pytest
from scipy.stats import pearsonr, spearmanr

from latent.errors import InputError
from latent.stats import bootstrap_distribution
from latent.probes.alignment import (
    _pearson_statistic,
    _PairRanks,
    _PairTau,
    _PermutedMatrix,
    _TauA,
    condensed,
    kendall_tau_a,
    linear_cka,
    mantel,
    permuted_pair_sums,
    probe_alignment,
    rho_a,
    stratified_species,
    taxonomy_features,
)
from latent.probes.base import ProbeData, ProbeOptions, pairwise_distances, species_permutations
from latent.stats import bootstrap_weights
from latent.synthetic import make_hierarchical
from latent.taxonomy import Taxonomy

skbio_mantel = pytest.importorskip("skbio.stats.distance").mantel


def _random_distances(n: int, seed: int, dim: int = 5) -> np.ndarray:
    pts = np.random.default_rng(seed).standard_normal((n, dim))
    return pairwise_distances(pts, metric="euclidean")


def _data(signal: float, seed: int = 0, noise: float = 1.0, per_species: int = 4, dim: int = 32) -> ProbeData:
    synth = make_hierarchical(per_species=per_species, dim=dim, signal=signal, noise=noise, seed=seed)
    return ProbeData.from_arrays(synth.embeddings, synth.taxonomy, synth.ids)


def _brute_tau_a(x: np.ndarray, y: np.ndarray) -> float:
    n = len(x)
    total = sum(np.sign(x[i] - x[j]) * np.sign(y[i] - y[j]) for i, j in itertools.combinations(range(n), 2))
    return total / (n * (n - 1) / 2)


# ---------------------------------------------------------------------- Mantel vs scikit-bio
@pytest.mark.parametrize("method", ["pearson", "spearman"])
@pytest.mark.parametrize("engine", ["numba", "numpy"])
def test_mantel_equals_skbio_r_and_p_with_the_same_permutations(method, engine):
    if engine == "numba":
        pytest.importorskip("numba")
    x = _random_distances(30, 1)
    y = x + _random_distances(30, 2) * 1.5  # correlated but noisy
    for alternative in ("greater", "less", "two-sided"):
        ours = mantel(x, y, method=method, permutations=199, seed=7, alternative=alternative, engine=engine)
        r, p, n = skbio_mantel(x, y, method=method, permutations=199, alternative=alternative,
                               seed=np.random.default_rng(7))
        assert ours.r == pytest.approx(r, abs=1e-12)
        assert ours.p_value == p  # same permutations, same counting rule
        assert ours.n == n == 30 and ours.null.shape == (199,)


def test_mantel_matches_skbio_on_weak_correlation_where_p_is_not_extreme():
    x = _random_distances(25, 3)
    y = _random_distances(25, 4)
    ours = mantel(x, y, permutations=499, seed=11, alternative="two-sided")
    r, p, _ = skbio_mantel(x, y, permutations=499, alternative="two-sided", seed=np.random.default_rng(11))
    assert ours.r == pytest.approx(r, abs=1e-12)
    assert 0.02 < p < 1 and ours.p_value == p


def test_mantel_null_is_the_correlation_of_the_explicitly_permuted_matrix():
    x = _random_distances(12, 5)
    y = _random_distances(12, 6)
    perms = np.array([np.random.default_rng(i).permutation(12) for i in range(6)])
    res = mantel(x, y, perms=perms)
    expected = [pearsonr(condensed(x[p][:, p]), condensed(y)).statistic for p in perms]
    np.testing.assert_allclose(res.null, expected, atol=1e-12)
    res_s = mantel(x, y, perms=perms, method="spearman")
    expected_s = [spearmanr(condensed(x[p][:, p]), condensed(y)).statistic for p in perms]
    np.testing.assert_allclose(res_s.null, expected_s, atol=1e-12)
    assert res.r == pytest.approx(pearsonr(condensed(x), condensed(y)).statistic, abs=1e-12)


def test_mantel_counts_exact_ties_as_extreme():
    # x is invariant under swapping species 0 and 1, so that permutation gives exactly r.
    x = np.array([[0, 1, 4, 4], [1, 0, 4, 4], [4, 4, 0, 2], [4, 4, 2, 0]], dtype=float)
    y = _random_distances(4, 9)
    res = mantel(x, y, perms=np.array([[1, 0, 2, 3], [0, 1, 3, 2], [2, 3, 0, 1]]))
    assert res.null[0] == res.r and res.null[1] == res.r
    assert res.p_value == pytest.approx((1 + np.count_nonzero(res.null >= res.r)) / 4)
    assert res.p_value >= 0.75


@pytest.mark.parametrize("coded", [False, True])
def test_permuted_pair_sums_engines_agree_with_brute_force(coded):
    pytest.importorskip("numba")
    rng = np.random.default_rng(0)
    x = _random_distances(40, 1)
    if coded:  # few distinct values: stored as uint8 codes + table inside
        x = np.round(x * 2) + 0.25 * (x > 3)
        np.fill_diagonal(x, 0)
    ys = rng.standard_normal((3, 40 * 39 // 2))
    perms = np.array([rng.permutation(40) for _ in range(37)])  # not a multiple of the block of 16
    brute = np.array([[np.dot(condensed(x[p][:, p]), y) for y in ys] for p in perms])
    np.testing.assert_allclose(permuted_pair_sums(x, ys, perms, engine="numba"), brute, rtol=1e-11, atol=1e-11)
    np.testing.assert_allclose(permuted_pair_sums(x, ys, perms, engine="numpy"), brute, rtol=1e-11, atol=1e-11)
    assert (_PermutedMatrix(condensed(x), 40).codes is not None) == coded


@pytest.mark.parametrize("bad, match", [
    (np.zeros((3, 4)), "square"),
    (np.array([[0, 1, 2], [1, 0, 3], [2, 5, 0]], float), "symmetric"),
    (np.array([[1, 1, 2], [1, 0, 3], [2, 3, 0]], float), "zero diagonal"),
    (np.array([[0, np.nan, 2], [np.nan, 0, 3], [2, 3, 0]]), "finite"),
])
def test_mantel_rejects_bad_matrices_naming_the_parameter(bad, match):
    good = _random_distances(bad.shape[0], 0) if bad.shape[0] == bad.shape[1] else _random_distances(3, 0)
    with pytest.raises(InputError, match=f"'x'.*{match}|{match}.*'x'"):
        mantel(bad, good)


def test_mantel_rejects_bad_options():
    x, y = _random_distances(5, 0), _random_distances(5, 1)
    with pytest.raises(InputError, match="'method'.*kendall"):
        mantel(x, y, method="kendall")
    with pytest.raises(InputError, match="'alternative'"):
        mantel(x, y, alternative="bigger")
    with pytest.raises(InputError, match="at least 3"):
        mantel(x[:2, :2], y[:2, :2])
    with pytest.raises(InputError, match="same shape"):
        mantel(x, _random_distances(6, 1))
    with pytest.raises(InputError, match="'perms'"):
        mantel(x, y, perms=np.array([[0, 0, 1, 2, 3]]))
    r = mantel(np.where(np.eye(5, dtype=bool), 0.0, 1.0), y)  # constant taxonomy: undefined, not an error
    assert np.isnan(r.r) and np.isnan(r.p_value)


# ---------------------------------------------------------------------- bootstrap, CKA, RSA
def test_bootstrap_r_is_the_correlation_over_pairs_of_distinct_species_in_the_resample():
    a = _random_distances(15, 1)
    b = a + _random_distances(15, 2)
    # the statistic the alignment probe bootstraps, on latent.stats' species resamples
    boot = bootstrap_distribution(_pearson_statistic(a, b), 15, n_boot=6, seed=3, max_elements=15 * 32)
    idx = np.random.default_rng(3).integers(0, 15, size=(6, 15))  # latent.stats resamples for seed 3
    for value, draw in zip(boot, idx):
        ii, jj = np.triu_indices(15, 1)
        keep = draw[ii] != draw[jj]  # pairs of two copies of one species are not pairs of species
        expected = pearsonr(a[draw[ii], draw[jj]][keep], b[draw[ii], draw[jj]][keep]).statistic
        assert value == pytest.approx(expected, abs=1e-10)


@pytest.mark.parametrize("engine", ["numba", "numpy"])
def test_bootstrap_rank_statistics_are_those_of_the_expanded_resample(engine):
    # Spearman r, rho-a and tau-a of a resample: its pairs of draws of two different species, ranked
    # among themselves (ties in both: few taxonomic levels, rounded distances)
    if engine == "numba":
        pytest.importorskip("numba")
    rng = np.random.default_rng(6)
    S = 13
    T = np.round(_random_distances(S, 1, dim=2))
    D = np.round(_random_distances(S, 2), 1)
    idx = rng.integers(0, S, size=(5, S))
    w = bootstrap_weights(idx, S)
    ranks = _PairRanks(condensed(T), condensed(D), S, engine)(w)
    tau = _PairTau(condensed(T), condensed(D), S, engine)(w)
    np.testing.assert_allclose(_PairRanks(condensed(T), condensed(D), S)(np.ones((1, S)))[0],
                               [spearmanr(condensed(T), condensed(D)).statistic, rho_a(condensed(T), condensed(D))],
                               atol=1e-12)
    for b, draw in enumerate(idx):
        ii, jj = np.triu_indices(S, 1)
        keep = draw[ii] != draw[jj]
        t, d = T[draw[ii], draw[jj]][keep], D[draw[ii], draw[jj]][keep]
        assert ranks[b, 0] == pytest.approx(spearmanr(t, d).statistic, abs=1e-12)
        assert ranks[b, 1] == pytest.approx(rho_a(t, d), abs=1e-12)
        assert tau[b] == pytest.approx(_brute_tau_a(t, d), abs=1e-12)


def test_linear_cka_known_answers():
    X = np.random.default_rng(0).standard_normal((20, 4))
    Q, _ = np.linalg.qr(np.random.default_rng(1).standard_normal((4, 4)))
    assert linear_cka(X, X @ Q * 3.0 + 5.0) == pytest.approx(1.0, abs=1e-12)  # rotation, scale, shift
    assert linear_cka(X, np.random.default_rng(2).standard_normal((20, 4))) < 0.6


def test_taxonomy_features_gram_counts_shared_ranks():
    data = _data(1.0)
    Zf = taxonomy_features(data.codes)
    np.testing.assert_array_equal(Zf @ Zf.T, 7 - data.species_distances().astype(float))


def test_tau_a_equals_brute_force_with_ties_in_both():
    rng = np.random.default_rng(4)
    x = rng.integers(0, 4, 40).astype(float)
    y = np.round(rng.standard_normal(40), 1) + 0.3 * x
    assert kendall_tau_a(x, y) == pytest.approx(_brute_tau_a(x, y), abs=1e-12)
    assert kendall_tau_a(x, np.ones(40)) == 0.0


@pytest.mark.parametrize("engine", ["numba", "numpy"])
def test_tau_a_permuted_kernel_equals_brute_force(engine):
    if engine == "numba":
        pytest.importorskip("numba")
    data = _data(0.5, per_species=2)
    sel = np.arange(0, 47, 4)  # 12 species of several kingdoms: taxonomic distances with many ties
    T = data.species_distances()[np.ix_(sel, sel)]
    D = np.round(pairwise_distances(data.centroids[sel]), 1)  # ties in D as well
    perms = np.vstack([np.arange(12), [np.random.default_rng(i).permutation(12) for i in range(4)]])
    got = _TauA(T, D)(perms, engine)
    want = [_brute_tau_a(condensed(T[p][:, p]).astype(float), condensed(D)) for p in perms]
    np.testing.assert_allclose(got, want, atol=1e-12)
    # a subset of species keeps the permutation of all of them
    sub = np.array([0, 2, 3, 7, 8, 11])
    got_sub = _TauA(T, D, sub)(perms, engine)
    want_sub = [_brute_tau_a(condensed(T[p][:, p][np.ix_(sub, sub)]).astype(float), condensed(D[np.ix_(sub, sub)]))
                for p in perms]
    np.testing.assert_allclose(got_sub, want_sub, atol=1e-12)


def test_rho_a_is_spearman_without_ties_and_smaller_with_them():
    rng = np.random.default_rng(5)
    x, y = rng.standard_normal(50), rng.standard_normal(50)
    assert rho_a(x, y) == pytest.approx(spearmanr(x, y).statistic, abs=1e-12)
    xt = np.round(x)  # heavy ties
    rx, ry = pd.Series(xt).rank().to_numpy(), pd.Series(y).rank().to_numpy()
    assert rho_a(xt, y) == pytest.approx(12 * np.dot(rx - 25.5, ry - 25.5) / (50 ** 3 - 50), abs=1e-12)
    assert abs(rho_a(xt, y)) < abs(spearmanr(xt, y).statistic)


def test_stratified_species_is_spread_over_lineage_order():
    idx = stratified_species(1000, 100, seed=3)
    assert idx.size == 100 and np.all(np.diff(idx) >= 9) and np.all(np.diff(idx) <= 11)
    assert np.array_equal(stratified_species(50, 80), np.arange(50))


# ---------------------------------------------------------------------- the probe
def _rows(result) -> dict[str, pd.Series]:
    frame = result.to_frame()
    return {m: frame[frame.metric == m].iloc[0] for m in frame.metric}


def test_probe_values_and_nulls_equal_independent_recomputation():
    data = _data(0.7, seed=1)
    options = ProbeOptions(permutations=20, seed=5, distance="cosine", extra={"alignment": {"n_boot": 50}})
    res = probe_alignment(data, options)
    rows = _rows(res)
    T = data.species_distances()
    D = pairwise_distances(data.centroids, metric="cosine")
    r, p, _ = skbio_mantel(T.astype(float), D, permutations=0)
    assert rows["mantel_r_pearson"].value == pytest.approx(r, abs=1e-10)
    assert rows["mantel_r_spearman"].value == pytest.approx(spearmanr(condensed(T), condensed(D)).statistic, abs=1e-10)
    U = data.centroids / np.linalg.norm(data.centroids, axis=1, keepdims=True)
    assert rows["cka_taxonomy"].value == pytest.approx(linear_cka(U, taxonomy_features(data.codes)), abs=1e-10)
    assert rows["rsa_tau_a"].value == pytest.approx(kendall_tau_a(condensed(T), condensed(D)), abs=1e-10)
    assert rows["rsa_rho_a"].value == pytest.approx(rho_a(condensed(T), condensed(D)), abs=1e-10)
    low, high = rows["mantel_r_pearson"][["ci_low", "ci_high"]]
    assert low < rows["mantel_r_pearson"].value < high
    for metric in ("mantel_r_spearman", "cka_taxonomy", "rsa_rho_a", "rsa_tau_a"):  # every statistic has a CI
        assert rows[metric].ci_low < rows[metric].value < rows[metric].ci_high, metric
        assert rows[metric].ci_note == "" and rows[metric].n_species == 47 and rows[metric].n_taxa == 47
    # nulls: the same statistics with the taxonomy of permuted species (species s takes lineage perm[s])
    null = res.tables["null"]
    perms = list(species_permutations(data.n_species, 20, 5))
    for t in (0, 7, 19):
        Tp = T[perms[t]][:, perms[t]]
        got = null[null.permutation == t].set_index("metric").value
        assert got["mantel_r_pearson"] == pytest.approx(pearsonr(condensed(Tp), condensed(D)).statistic, abs=1e-10)
        assert got["mantel_r_spearman"] == pytest.approx(spearmanr(condensed(Tp), condensed(D)).statistic, abs=1e-10)
        assert got["cka_taxonomy"] == pytest.approx(
            linear_cka(U, taxonomy_features(data.permuted_codes(perms[t]))), abs=1e-10)
        assert got["rsa_tau_a"] == pytest.approx(kendall_tau_a(condensed(Tp), condensed(D)), abs=1e-10)
        assert got["rsa_rho_a"] == pytest.approx(rho_a(condensed(Tp), condensed(D)), abs=1e-10)
    assert set(null.metric) == {"mantel_r_pearson", "mantel_r_spearman", "cka_taxonomy", "rsa_rho_a", "rsa_tau_a"}
    assert rows["mantel_p"].value == rows["mantel_r_pearson"].p_value
    assert res.arrays["centroid_distances"].dtype == np.float32 and res.arrays["centroid_distances"].shape == (47, 47)
    assert res.arrays["taxonomic_distances"].dtype == np.uint8


def test_planted_hierarchy_is_found(planted_probe_data):
    res = probe_alignment(planted_probe_data, ProbeOptions(permutations=199, extra={"alignment": {"n_boot": 50}}))
    rows = _rows(res)
    for metric in ("mantel_r_pearson", "mantel_r_spearman", "cka_taxonomy", "rsa_rho_a", "rsa_tau_a"):
        assert rows[metric].p_value < 0.01, metric
        assert rows[metric].z > 5, metric
    assert rows["mantel_r_pearson"].value > 0.45 and rows["cka_taxonomy"].value > 0.6
    assert rows["mantel_r_pearson"].ci_low > 0.3
    assert rows["cka_taxonomy"].null_mean < 0.45  # CKA is biased upward under the null; the null shows how much


def test_no_hierarchy_is_not_found_over_seeds():
    metrics = ("mantel_r_pearson", "mantel_r_spearman", "cka_taxonomy", "rsa_rho_a", "rsa_tau_a")
    p = {m: [] for m in metrics}
    z = {m: [] for m in metrics}
    for seed in range(6):
        rows = _rows(probe_alignment(_data(0.0, seed=seed), ProbeOptions(permutations=99, seed=seed,
                                                                          extra={"alignment": {"n_boot": 0}})))
        for m in metrics:
            p[m].append(rows[m].p_value)
            z[m].append(rows[m].z)
    for m in metrics:
        assert np.mean(np.array(p[m]) < 0.05) <= 2 / 6, (m, p[m])
        assert abs(np.mean(z[m])) < 1.5, (m, z[m])
        assert np.mean(p[m]) > 0.2, (m, p[m])


def test_graded_signal_gives_graded_alignment():
    values = []
    for signal in (0.0, 0.3, 1.0):
        rows = _rows(probe_alignment(_data(signal, seed=2), ProbeOptions(permutations=0,
                                                                         extra={"alignment": {"n_boot": 0}})))
        values.append([rows[m].value for m in ("mantel_r_pearson", "cka_taxonomy", "rsa_tau_a")])
    values = np.array(values)
    assert np.all(np.diff(values, axis=0) > 0), values


def test_probe_samples_species_above_max_pairs_and_tau_above_its_own_limit():
    data = _data(1.0)
    options = ProbeOptions(permutations=10, max_pairs=300, extra={"alignment": {"n_boot": 0, "tau_max_pairs": 100}})
    res = probe_alignment(data, options)
    rows = _rows(res)
    assert rows["mantel_r_pearson"].n == 25 and rows["mantel_r_pearson"].pairs == 300
    assert rows["rsa_tau_a"].n == 14 and rows["rsa_tau_a"].pairs == 91
    assert res.info["sampled"] and res.arrays["species"].size == 25


def test_single_genus_gives_undefined_statistics_not_an_error():
    tax = Taxonomy.from_lineages([["K", "P", "C", "O", "F", "G", f"G s{i}"] for i in range(5)])
    synth = make_hierarchical(tax, per_species=3, dim=8, seed=0)
    res = probe_alignment(ProbeData.from_arrays(synth.embeddings, synth.taxonomy), ProbeOptions(permutations=9))
    frame = res.to_frame()
    assert frame.value.isna().all() and frame.p_value.isna().all() and (frame.permutations == 0).all()
    assert frame.degenerate.all() and frame.note.str.contains("taxonomic distances").all()
    assert len(res.tables["null"]) == 5 * 9


def test_probe_rejects_bad_settings():
    data = _data(1.0)
    with pytest.raises(InputError, match="'n_boot'"):
        probe_alignment(data, ProbeOptions(extra={"alignment": {"n_boot": -1}}))
    with pytest.raises(InputError, match="'n_boot_rank'"):
        probe_alignment(data, ProbeOptions(extra={"alignment": {"n_boot_rank": 1.5}}))


# ---------------------------------------------------------------------- real data
def _cub10(shared) -> ProbeData:
    from latent.importer import join_taxonomy

    root = shared("cub10")
    X = np.load(root / "bird_embeddings.npy")
    meta = json.loads((root / "bird_metadata.json").read_text())
    lineages = join_taxonomy(pd.Series([m["species"] for m in meta]), root / "taxonomy.csv", "cub_class")
    return ProbeData.from_arrays(X, Taxonomy(lineages), [m["path"] for m in meta])


def test_cub10_every_statistic_with_its_null_and_mantel_equal_to_skbio(shared):
    data = _cub10(shared)
    assert data.n_species == 10
    res = probe_alignment(data, ProbeOptions(permutations=999, seed=0))
    rows = _rows(res)
    T = data.species_distances().astype(float)
    D = pairwise_distances(data.centroids, metric="cosine")
    for method, metric in (("pearson", "mantel_r_pearson"), ("spearman", "mantel_r_spearman")):
        r, _, _ = skbio_mantel(T, D, method=method, permutations=0)
        assert rows[metric].value == pytest.approx(r, abs=1e-6)
        ours = mantel(T, D, method=method, permutations=999, seed=3)
        r, p, _ = skbio_mantel(T, D, method=method, permutations=999, alternative="greater",
                               seed=np.random.default_rng(3))
        assert ours.r == pytest.approx(r, abs=1e-6) and ours.p_value == p
    for metric in ("mantel_r_pearson", "mantel_r_spearman", "cka_taxonomy", "rsa_rho_a", "rsa_tau_a"):
        row = rows[metric]
        assert row.permutations == 999 and 0 < row.p_value <= 1 and np.isfinite(row.null_std), metric
        assert row.value > row.null_mean, metric  # the real (modest) taxonomic signal of CLIP on birds
    assert (res.tables["null"].groupby("metric").size() == 999).all()
    assert rows["mantel_r_pearson"].p_value < 0.05
