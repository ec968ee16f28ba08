"""Dendrogram probe: FMI/ARI equal to scikit-learn, Baker's gamma and clade recovery on hand-computed
trees, nulls equal to explicit recomputation, planted hierarchy recovered at every rank, no hierarchy
not recovered, graded signal graded, real cub10 CLIP embeddings."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
from scipy.cluster.hierarchy import cophenet, fcluster, linkage, to_tree
from scipy.stats import pearsonr, spearmanr
from sklearn.metrics import adjusted_rand_score, fowlkes_mallows_score

from latent.errors import InputError
from latent.probes.alignment import condensed
from latent.probes.base import ProbeData, ProbeOptions, pairwise_distances, species_permutations
from latent.probes.dendrogram import (
    _Cutter,
    _tree_statistics,
    bakers_gamma,
    clade_recovery,
    merge_k,
    pair_counting_scores,
    probe_dendrogram,
    shuffled_linkage,
    taxonomy_k,
)
from latent.ranks import RANK_NAMES
from latent.synthetic import make_hierarchical
from latent.taxonomy import Taxonomy

# Two trees on leaves 0..3 (rows: child, child, height, size). Z1 = ((0,1),(2,3)); Z2 = ((0,2),(1,3)).
Z1 = np.array([[0, 1, 1.0, 2], [2, 3, 2.0, 2], [4, 5, 3.0, 4]])
Z2 = np.array([[0, 2, 1.0, 2], [1, 3, 2.0, 2], [4, 5, 3.0, 4]])


def _data(signal: float, seed: int = 0, noise: float = 1.0, per_species: int = 4, dim: int = 32) -> ProbeData:
    synth = make_hierarchical(per_species=per_species, dim=dim, signal=signal, noise=noise, seed=seed)
    return ProbeData.from_arrays(synth.embeddings, synth.taxonomy, synth.ids)


def _with_empty_ranks() -> Taxonomy:
    """The built-in taxonomy with empty families (Carnivora, Anura) and an empty order (Fagales)."""
    from latent.synthetic import builtin_taxonomy

    table = builtin_taxonomy().species_table()
    table.loc[table.order.isin(["Carnivora", "Anura"]), "family"] = ""
    table.loc[table.order == "Fagales", "order"] = ""
    return Taxonomy.from_lineages(table.to_numpy(dtype=object))


def _rows(result) -> pd.DataFrame:
    return result.to_frame().set_index(["rank", "metric"])


# ---------------------------------------------------------------------- pieces against hand / sklearn
def test_pair_counting_scores_equal_sklearn():
    rng = np.random.default_rng(0)
    truth = rng.integers(0, 5, size=(30, 40))
    pred = rng.integers(0, 7, size=(30, 40))
    pred[0] = truth[0]  # identical partitions
    pred[1] = 0  # one cluster
    truth[2] = np.arange(40) % 2
    pred[2] = np.arange(40)  # all singletons
    fmi, ari = pair_counting_scores(truth, pred)
    for t in range(30):
        assert fmi[t] == pytest.approx(fowlkes_mallows_score(truth[t], pred[t]), abs=1e-12)
        assert ari[t] == pytest.approx(adjusted_rand_score(truth[t], pred[t]), abs=1e-12)
    assert pair_counting_scores(truth[0], truth[0]) == (1.0, 1.0)


def test_merge_k_and_bakers_gamma_hand_computed():
    # pairs in condensed order (0,1),(0,2),(0,3),(1,2),(1,3),(2,3)
    np.testing.assert_array_equal(merge_k(Z1), [3, 1, 1, 1, 1, 2])
    np.testing.assert_array_equal(merge_k(Z2), [1, 3, 1, 1, 2, 1])
    # ranks [6,2.5,2.5,2.5,2.5,5] and [2.5,6,2.5,2.5,5,2.5]: sum d1 d2 = -6, sum d^2 = 12.5 each
    assert bakers_gamma(merge_k(Z1), merge_k(Z2)) == pytest.approx(-0.48, abs=1e-12)


def test_bakers_gamma_of_identical_trees_is_one():
    pts = np.random.default_rng(3).standard_normal((15, 4))
    d = condensed(pairwise_distances(pts, metric="euclidean"))
    Za, Zb = linkage(d, "single"), linkage(d ** 2, "single")  # single linkage: same tree, other heights
    assert not np.array_equal(Za[:, 2], Zb[:, 2])
    assert bakers_gamma(merge_k(Za), merge_k(Zb)) == 1.0
    assert bakers_gamma(merge_k(Za), merge_k(linkage(d, "complete"))) < 1.0


def test_taxonomy_k_hand_computed():
    tax = Taxonomy.from_lineages([
        ["K1", "P1", "C1", "O1", "F1", "G1", "G1 a"],
        ["K1", "P1", "C1", "O1", "F1", "G1", "G1 b"],
        ["K1", "P1", "C1", "O1", "F1", "G2", "G2 c"],
        ["K1", "P1", "C1", "O2", "F2", "G3", "G3 d"],
        ["K2", "P2", "C2", "O3", "F3", "G4", "G4 e"],
    ])
    # taxa per rank: 2 kingdoms, 2 phyla, 2 classes, 3 orders, 3 families, 4 genera, 5 species
    k = taxonomy_k(tax.species_codes, tax.distances())
    np.testing.assert_array_equal(condensed(k), [4, 3, 2, 1, 3, 2, 1, 2, 1, 1])


def test_clade_recovery_hand_computed_and_under_permutation():
    got, n = clade_recovery(Z1, np.array([0, 0, 1, 1]))
    assert n == 2 and got[0] == 1.0
    assert clade_recovery(Z1, np.array([0, 1, 0, 1]))[0][0] == 0.0
    got, n = clade_recovery(Z1, np.array([0, 0, 0, 1]))  # {0,1,2} is no node; {3} is too small
    assert n == 1 and got[0] == 0.0
    got, n = clade_recovery(Z1, np.array([0, 0, 1, 1]), np.array([True, True, False, False]))
    assert n == 1 and got[0] == 1.0  # only the named clade {0,1} counts
    assert np.isnan(clade_recovery(Z1, np.array([0, 0, 0, 0]))[0][0])  # the root clade is not counted
    perms = np.array([[1, 0, 2, 3], [0, 2, 1, 3], [2, 3, 0, 1]])
    np.testing.assert_array_equal(clade_recovery(Z1, np.array([0, 0, 1, 1]), perms=perms)[0], [1.0, 0.0, 1.0])


@pytest.mark.parametrize("method", ["single", "complete", "average", "weighted", "ward", "centroid", "median"])
def test_shuffled_linkage_is_scipys_without_ties_and_cuts_equal_fcluster(method):
    rng = np.random.default_rng(1)
    for trial in range(4):
        pts = rng.standard_normal((25, 3))
        d = condensed(pairwise_distances(pts, metric="euclidean"))
        np.testing.assert_allclose(shuffled_linkage(d, method, seed=trial), linkage(d, method), rtol=1e-10, atol=1e-12)
        Z = linkage(np.round(d, 0) if trial % 2 else d, method)  # with and without tied distances
        cutter = _Cutter(Z)
        for k in range(1, 27):
            assert adjusted_rand_score(fcluster(Z, k, "maxclust"), cutter(k)) == 1.0 or \
                (np.unique(fcluster(Z, k, "maxclust")).size == 1 and np.unique(cutter(k)).size == 1)


def test_bootstrap_fmi_ari_leave_out_pairs_of_copies():
    data = _data(0.6, seed=3)
    D = pairwise_distances(data.centroids, metric="cosine")
    T = data.species_distances()
    draws = np.sort(np.random.default_rng(0).integers(0, data.n_species, data.n_species))
    keys = [("family", "fmi"), ("family", "ari")]
    got = _tree_statistics(draws, D, T, data.codes, data.named, "average", np.random.default_rng(5), keys)
    # brute force on the same tree: pairs of draws of two different species
    Z = shuffled_linkage(condensed(D[np.ix_(draws, draws)]), "average", np.random.default_rng(5))
    taxa = data.codes[draws, 4]
    cut = fcluster(Z, np.unique(taxa).size, "maxclust")
    ii, jj = np.triu_indices(draws.size, 1)
    keep = draws[ii] != draws[jj]
    same_t, same_c = (taxa[ii] == taxa[jj])[keep], (cut[ii] == cut[jj])[keep]
    tp, a, b, n = (same_t & same_c).sum(), same_t.sum(), same_c.sum(), keep.sum()
    assert got[0] == pytest.approx(tp / np.sqrt(a * b), abs=1e-12)
    expected = a * b / n
    assert got[1] == pytest.approx((tp - expected) / ((a + b) / 2 - expected), abs=1e-12)


def test_bakers_gamma_of_a_constant_tree_is_undefined():
    assert np.isnan(bakers_gamma(np.ones(6), np.arange(6.0)))
    assert np.isnan(bakers_gamma(np.ones(6), np.ones(6)))


def _brute_clade_recovery(Z: np.ndarray, labels: np.ndarray) -> float:
    root, nodes = to_tree(Z, rd=True)
    node_sets = {frozenset(node.pre_order()) for node in nodes if not node.is_leaf()}
    clades = [frozenset(np.flatnonzero(labels == v)) for v in np.unique(labels)]
    clades = [c for c in clades if 2 <= len(c) < len(labels)]
    return np.mean([c in node_sets for c in clades]) if clades else np.nan


# ---------------------------------------------------------------------- the probe
@pytest.mark.parametrize("empty_ranks", [False, True])
def test_probe_values_and_nulls_equal_independent_recomputation(empty_ranks):
    if empty_ranks:
        synth = make_hierarchical(_with_empty_ranks(), per_species=4, dim=32, signal=0.6, seed=1)
        data = ProbeData.from_arrays(synth.embeddings, synth.taxonomy, synth.ids)
        assert not data.named.all()
    else:
        data = _data(0.6, seed=1)
    res = probe_dendrogram(data, ProbeOptions(permutations=15, seed=4, extra={"dendrogram": {"n_boot": 20}}))
    rows = _rows(res)
    Z = res.arrays["linkage"]
    D = condensed(pairwise_distances(data.centroids, metric="cosine"))
    np.testing.assert_allclose(Z, linkage(D, "average"))
    T = data.species_distances()
    coph = cophenet(Z)
    assert rows.loc[("all", "cophenetic_fit_embedding"), "value"] == pytest.approx(cophenet(Z, D)[0], abs=1e-12)
    null = res.tables["null"]
    perms = [np.arange(data.n_species)] + list(species_permutations(data.n_species, 15, 4))
    for t, p in enumerate(perms):
        codes, named = data.permuted_codes(p), data.permuted_named(p)
        Tp = T[p][:, p]
        want = {
            ("all", "cophenetic_taxonomy_corr"): pearsonr(coph, condensed(Tp)).statistic,
            ("all", "cophenetic_taxonomy_spearman"): spearmanr(coph, condensed(Tp)).statistic,
            ("all", "bakers_gamma"): spearmanr(merge_k(Z), condensed(taxonomy_k(codes, Tp))).statistic,
        }
        for r, name in enumerate(RANK_NAMES[:-1]):
            if (name, "fmi") in rows.index:
                k = int(rows.loc[(name, "fmi"), "clusters"])
                cut = fcluster(Z, k, "maxclust")
                sel = named[:, r]
                want[(name, "fmi")] = fowlkes_mallows_score(codes[sel, r], cut[sel])
                want[(name, "ari")] = adjusted_rand_score(codes[sel, r], cut[sel])
            if (name, "clade_recovery") in rows.index:
                labels = np.where(named[:, r], codes[:, r], -1 - np.arange(data.n_species))
                want[(name, "clade_recovery")] = _brute_clade_recovery(Z, labels)
        for key, value in want.items():
            got = rows.loc[key, "value"] if t == 0 else null[(null["rank"] == key[0]) & (null.metric == key[1])
                                                               & (null.permutation == t - 1)].value.iloc[0]
            assert got == pytest.approx(value, abs=1e-10), (t, key)
    assert {"fmi", "ari", "clade_recovery"} <= set(null.metric)
    # the bootstrap's statistics of one tree, on every species once, are the observed values
    keys = list(rows.index)
    again = _tree_statistics(np.arange(data.n_species), pairwise_distances(data.centroids, metric="cosine"), T,
                             data.codes, data.named, "average", np.random.default_rng(0), keys)
    np.testing.assert_allclose(again, rows.value.to_numpy(), atol=1e-10)
    assert (rows.ci_low <= rows.value + 1e-12).all() and (rows.value <= rows.ci_high + 1e-12).all()
    assert res.arrays["leaf_order"].shape == (47,) and res.arrays["taxonomy_linkage"].shape == (46, 4)
    np.testing.assert_allclose(cophenet(res.arrays["taxonomy_linkage"]), condensed(T))


def test_planted_hierarchy_is_recovered_at_every_rank():
    data = _data(1.0, noise=0.05, dim=256, per_species=3)
    res = probe_dendrogram(data, ProbeOptions(permutations=199, seed=0, extra={"dendrogram": {"n_boot": 0}}))
    frame = res.to_frame()
    rows = frame.set_index(["rank", "metric"])
    assert rows.loc[("all", "cophenetic_taxonomy_corr"), "value"] > 0.95
    # rank statistics stay below 1: a binary tree splits every polytomy of the taxonomy into several heights
    for metric in ("cophenetic_taxonomy_corr", "cophenetic_taxonomy_spearman", "bakers_gamma"):
        assert rows.loc[("all", metric), "value"] > 0.85, metric
        assert rows.loc[("all", metric), "p_value"] < 0.01, metric
    ranks = set(frame[frame.metric == "fmi"]["rank"])
    assert ranks == {"kingdom", "phylum", "class", "order", "family", "genus"}
    for metric in ("fmi", "ari", "clade_recovery"):
        sub = frame[frame.metric == metric]
        assert len(sub) == 6, metric
        assert (sub.value > 0.95).all(), sub[["rank", "value"]]
        assert (sub.p_value < 0.01).all(), sub[["rank", "p_value"]]


def test_no_hierarchy_is_not_found_over_seeds():
    frames = []
    for seed in range(6):
        res = probe_dendrogram(_data(0.0, seed=seed), ProbeOptions(permutations=99, seed=seed,
                                                                  extra={"dendrogram": {"n_boot": 0}}))
        frames.append(res.to_frame().assign(seed=seed))
    frame = pd.concat(frames)
    frame = frame[frame.permutations > 0]
    for (rank, metric), sub in frame.groupby(["rank", "metric"]):
        p = sub.p_value.dropna()
        assert np.mean(p < 0.05) <= 2 / 6, (rank, metric, p.tolist())
    assert abs(frame.z.mean()) < 0.5, frame.z.mean()
    assert frame.p_value.mean() > 0.3
    assert np.mean(frame.p_value < 0.05) < 0.15


def test_graded_signal_gives_graded_statistics():
    values = []
    for signal in (0.0, 0.3, 1.0):
        options = ProbeOptions(permutations=0, extra={"dendrogram": {"n_boot": 0}})
        frame = probe_dendrogram(_data(signal, seed=2), options).to_frame()
        values.append([
            frame[frame.metric == "cophenetic_taxonomy_corr"].value.iloc[0],
            frame[frame.metric == "bakers_gamma"].value.iloc[0],
            frame[frame.metric == "fmi"].value.mean(),
            frame[frame.metric == "clade_recovery"].value.mean(),
        ])
    values = np.array(values)
    assert np.all(np.diff(values, axis=0) > 0), values


def test_ward_uses_euclidean_distances_and_bad_method_is_rejected():
    data = _data(1.0)
    res = probe_dendrogram(data, ProbeOptions(permutations=0, distance="cosine",
                                                    extra={"dendrogram": {"method": "ward", "n_boot": 0}}))
    np.testing.assert_allclose(res.arrays["linkage"], linkage(data.centroids, "ward"))
    assert set(res.to_frame().distance) == {"euclidean"} and res.info["distance"] == "euclidean"
    with pytest.raises(InputError, match="'method'.*'median-ish'"):
        probe_dendrogram(data, ProbeOptions(extra={"dendrogram": {"method": "median-ish"}}))
    with pytest.raises(InputError, match="'n_boot'"):
        probe_dendrogram(data, ProbeOptions(extra={"dendrogram": {"n_boot": -2}}))


def test_single_genus_gives_undefined_correlations_and_no_cuts():
    tax = Taxonomy.from_lineages([["K", "P", "C", "O", "F", "G", f"G s{i}"] for i in range(5)])
    synth = make_hierarchical(tax, per_species=3, dim=8, seed=0)
    res = probe_dendrogram(ProbeData.from_arrays(synth.embeddings, synth.taxonomy), ProbeOptions(permutations=9))
    frame = res.to_frame()
    assert set(frame.metric) == {"cophenetic_taxonomy_corr", "cophenetic_taxonomy_spearman", "bakers_gamma",
                                 "cophenetic_fit_embedding"}
    assert frame[frame.metric != "cophenetic_fit_embedding"].value.isna().all()
    taxonomy_rows = frame[frame.metric != "cophenetic_fit_embedding"]
    assert taxonomy_rows.degenerate.all() and (taxonomy_rows.permutations == 0).all()
    fit = frame[frame.metric == "cophenetic_fit_embedding"].iloc[0]  # the fit does not involve the taxonomy
    assert np.isfinite(fit.value) and not fit.degenerate and "5 species" in fit.ci_note
    assert res.info["skipped_cuts"]["genus"] == "fewer than 2 taxa"


def test_probe_samples_species_above_max_pairs():
    res = probe_dendrogram(_data(1.0), ProbeOptions(permutations=5, max_pairs=200, extra={"dendrogram": {"n_boot": 0}}))
    assert res.arrays["species"].size == 20 and res.arrays["linkage"].shape == (19, 4)
    assert (res.to_frame().query("metric == 'cophenetic_taxonomy_corr'").n == 20).all()


# ---------------------------------------------------------------------- real data
def test_cub10_every_statistic_with_its_null(shared):
    from latent.importer import join_taxonomy

    root = shared("cub10")
    meta = json.loads((root / "bird_metadata.json").read_text())
    lineages = join_taxonomy(pd.Series([m["species"] for m in meta]), root / "taxonomy.csv", "cub_class")
    data = ProbeData.from_arrays(np.load(root / "bird_embeddings.npy"), Taxonomy(lineages))
    res = probe_dendrogram(data, ProbeOptions(permutations=999, seed=0))
    frame = res.to_frame()
    # 10 species, 4 orders, 4 families, 7 genera: cuts at order, family, genus; clades of >= 2 species
    assert set(frame[frame.metric == "fmi"]["rank"]) == {"order", "family", "genus"}
    assert set(frame[frame.metric == "clade_recovery"]["rank"]) == {"order", "family", "genus"}
    with_null = frame[frame.metric != "cophenetic_fit_embedding"]
    assert (with_null.permutations == 999).all()
    assert with_null.p_value.between(0.001, 1).all() and np.isfinite(with_null.null_mean).all()
    assert (res.tables["null"].groupby(["rank", "metric"]).size() == 999).all()
    rows = frame.set_index(["rank", "metric"])
    assert rows.loc[("all", "cophenetic_taxonomy_corr"), "value"] > rows.loc[("all", "cophenetic_taxonomy_corr"),
                                                                             "null_mean"]
