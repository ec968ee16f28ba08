"""Ties and degenerate input in the alignment and dendrogram probes, CKA in [0, 1], species-bootstrap CIs.

A tie must never be broken by species order (species are numbered in lineage order, so an index-order
tie-break credits the taxonomy for nothing), and input whose distances all tie has no statistic and no
test. Each case below failed before the fix (identical vectors: Baker's gamma p = 0.005; one point per
family: genus clade recovery 0.5 with p = 0.005; equidistant genus points: order / family clades
recovered with p = 0.005; float rounding between parallel vectors: Mantel p = 0.04, CKA 0.6)."""

from __future__ import annotations

import logging

import numpy as np
import pandas as pd
import pytest

from latent.errors import InputError
from latent.probes.alignment import (
    _cka_statistic,
    centroid_distances,
    condensed,
    linear_cka,
    probe_alignment,
    snap_ties,
    taxonomy_features,
)
from latent.probes.base import ProbeData, ProbeOptions
from latent.probes.dendrogram import clade_recovery, merge_k, probe_dendrogram, shuffled_linkage
from latent.stats import bootstrap_weights
from latent.synthetic import balanced_taxonomy, make_hierarchical
from latent.taxonomy import Taxonomy

#: 48 species: 2 classes x 3 orders x 2 families x 2 genera x 2 species.
BRANCHING = (1, 1, 2, 3, 2, 2, 2)
RANK = {"order": 3, "family": 4, "genus": 5}


@pytest.fixture(autouse=True)
def _quiet(caplog):
    caplog.set_level(logging.ERROR)


def _lineages(branching=BRANCHING, per_species: int = 2) -> np.ndarray:
    return np.repeat(balanced_taxonomy(branching).species_table().to_numpy(dtype=object), per_species, axis=0)


def _data(X: np.ndarray, lineages: np.ndarray) -> ProbeData:
    return ProbeData.from_arrays(np.asarray(X, dtype=np.float32), Taxonomy.from_lineages(lineages))


def _one_point_per(rank: str, kind: str, seed: int = 0, branching=BRANCHING) -> ProbeData:
    """Every image of every species of one rank-``rank`` taxon at the same point: the corners of a regular
    simplex (``kind="simplex"``: all taxa equidistant) or random Gaussian points."""
    lineages = _lineages(branching)
    group = Taxonomy.from_lineages(lineages).row_codes[:, RANK[rank]]
    n = int(group.max()) + 1
    points = np.eye(n) if kind == "simplex" else np.random.default_rng(seed).standard_normal((n, 16))
    return _data(points[group], lineages)


def _options(seed: int = 0, distance: str = "euclidean", permutations: int = 199, n_boot: int = 0) -> ProbeOptions:
    return ProbeOptions(permutations=permutations, seed=seed, distance=distance,
                        extra={"alignment": {"n_boot": n_boot}, "dendrogram": {"n_boot": n_boot}})


def _rows(result) -> pd.DataFrame:
    return result.to_frame().set_index(["rank", "metric"])


def _hsic_cka(X: np.ndarray, Y: np.ndarray) -> float:
    """Linear CKA written from its definition: HSIC(K, L) / sqrt(HSIC(K, K) HSIC(L, L)), K = X X^T."""
    n = X.shape[0]
    H = np.eye(n) - np.ones((n, n)) / n
    K, L = X @ X.T, Y @ Y.T

    def hsic(A, B):
        return np.trace(A @ H @ B @ H) / (n - 1) ** 2

    return hsic(K, L) / np.sqrt(hsic(K, K) * hsic(L, L))


# ---------------------------------------------------------------------- degenerate input: no statistic, no test
def _assert_no_statistic(frame: pd.DataFrame) -> None:
    assert frame.value.isna().all(), frame[["metric", "value"]]
    assert frame.p_value.isna().all() and (frame.permutations == 0).all(), frame[["metric", "p_value"]]
    assert frame.z.isna().all() and frame.ci_low.isna().all() and frame.ci_high.isna().all()
    assert frame.degenerate.all() and frame.note.str.contains("degenerate").all()


@pytest.mark.parametrize("probe", [probe_alignment, probe_dendrogram])
@pytest.mark.parametrize("case", ["identical-cosine", "identical-euclidean", "zeros-euclidean", "parallel-cosine"])
def test_all_tied_distances_give_no_statistic_and_no_p_value(probe, case):
    lineages = _lineages()
    rng = np.random.default_rng(3)
    v = rng.standard_normal(16)
    X = np.tile(v, (len(lineages), 1))
    if case.startswith("zeros"):
        X = np.zeros_like(X)
    if case.startswith("parallel"):  # the same direction at other lengths: cosine distances are float rounding
        X = X * rng.choice([0.5, 1.0, 2.0, 3.0], size=(len(lineages), 1))
    data = _data(X, lineages)
    res = probe(data, _options(distance=case.split("-")[1], n_boot=50))
    frame = res.to_frame()
    _assert_no_statistic(frame)
    # the rows are all there (the report shows why each is missing)
    expected = ({"mantel_r_pearson", "mantel_p", "mantel_r_spearman", "cka_taxonomy", "rsa_rho_a", "rsa_tau_a"}
                if probe is probe_alignment else {"cophenetic_taxonomy_corr", "bakers_gamma", "fmi", "clade_recovery"})
    assert expected <= set(frame.metric)
    assert res.info["degenerate"]


def test_zero_vectors_have_no_cosine_distance():
    data = _data(np.zeros((96, 8)), _lineages())
    for probe in (probe_alignment, probe_dendrogram):
        with pytest.raises(InputError, match="zero vector"):
            probe(data, _options(distance="cosine"))


def test_gram_form_noise_between_identical_centroids_is_removed():
    # |a|^2 + |b|^2 - 2 a.b leaves ~1e-8 |a| where a = b; the recomputation gives exact zeros and ties
    rng = np.random.default_rng(0)
    points = rng.standard_normal((5, 64)) * 1e3 + 7.0
    C = points[rng.integers(0, 5, 40)]
    D, tol = centroid_distances(C, "euclidean")
    same = (C[:, None, :] == C[None, :, :]).all(axis=2)
    assert (D[same] == 0).all() and (D[~same] > 0).all()
    assert np.unique(condensed(D)).size == 1 + 10  # 0 and the 10 distances between the 5 points, exactly
    assert tol == pytest.approx(1e-12 * 2 * np.linalg.norm(C, axis=1).max())
    np.testing.assert_array_equal(snap_ties(np.array([1.0, 1.0 + 1e-13, 2.0, 1e-14]), 1e-12), [1.0, 1.0, 2.0, 0.0])


# ---------------------------------------------------------------------- partial ties: no credit by species order
@pytest.mark.parametrize("kind", ["simplex", "random"])
def test_one_point_per_family_gives_no_genus_clade_credit(kind):
    """All species of a family coincide: the genera below the tie are not clades of the data."""
    for seed in range(4):
        rows = _rows(probe_dendrogram(_one_point_per("family", kind, seed), _options(seed)))
        genus = rows.loc[("genus", "clade_recovery")]
        assert genus.value == 0.0 and (np.isnan(genus.p_value) or genus.p_value > 0.5), (seed, genus.p_value)
        family = rows.loc[("family", "clade_recovery")]
        assert family.value == 1.0 and family.p_value < 0.01  # the families are points apart: real


def test_equidistant_genus_points_give_no_credit_above_genus():
    """Genera at the corners of a simplex: every distance between genera ties. Merging them in species
    order used to recover orders and families with p = 0.005."""
    for seed in range(4):
        rows = _rows(probe_dendrogram(_one_point_per("genus", "simplex", seed), _options(seed)))
        for rank in ("class", "order", "family"):
            for metric in ("fmi", "ari", "clade_recovery"):
                p = rows.loc[(rank, metric), "p_value"]
                assert np.isnan(p) or p > 0.5, (seed, rank, metric, p)
        # each genus is a point apart from all others: the genera (and nothing below them) are recovered
        assert rows.loc[("genus", "clade_recovery"), "value"] == 1.0
        assert rows.loc[("genus", "clade_recovery"), "p_value"] < 0.01


def _reversed_names(lineages: np.ndarray) -> np.ndarray:
    """The same tree with the names of all siblings in reverse sort order, so species are numbered backwards."""
    flip = str.maketrans("0123456789", "9876543210")
    return np.vectorize(lambda name: str(name).translate(flip), otypes=[object])(lineages)


def test_tied_statistics_do_not_depend_on_species_order_or_tie_breaking_seed():
    lineages = _lineages()
    group = Taxonomy.from_lineages(lineages).row_codes[:, RANK["genus"]]
    points = np.eye(int(group.max()) + 1)  # equidistant genus points: ties within and between genera
    values = []
    for reverse in (False, True):
        data = _data(points[group], _reversed_names(lineages) if reverse else lineages)
        first = data.taxonomy.species_table().species.iloc[0]
        assert first == (_reversed_names(lineages)[-1, 6] if reverse else lineages[0, 6])
        for seed in (0, 1, 2):
            frame = probe_dendrogram(data, _options(seed, permutations=0)).to_frame()
            values.append(frame.set_index(["rank", "metric"]).value.sort_index())
    for v in values[1:]:
        pd.testing.assert_series_equal(v, values[0])


def test_polytomy_nodes_are_no_clades_and_tied_merges_are_one_cut():
    # 4 identical points then 2 identical points: SciPy draws binary merges at height 0 inside each group
    D = condensed(np.array([[0, 0, 0, 0, 2, 2], [0, 0, 0, 0, 2, 2], [0, 0, 0, 0, 2, 2], [0, 0, 0, 0, 2, 2],
                            [2, 2, 2, 2, 0, 0], [2, 2, 2, 2, 0, 0]], dtype=float))
    Z = shuffled_linkage(D, "average", 0)
    got, n = clade_recovery(Z, np.array([0, 0, 1, 1, 2, 2]))  # {0,1} and {2,3} split a polytomy
    assert n == 3 and got[0] == pytest.approx(1 / 3)  # only {4,5} (a node below the root height) counts
    assert clade_recovery(Z, np.array([0, 0, 0, 0, 1, 1]))[0][0] == 1.0
    # the 4 merges at height 0 are one cut (2 clusters), whatever order SciPy listed them in
    group = np.r_[0, 0, 0, 0, 1, 1]
    same = condensed((group[:, None] == group[None, :]).astype(float)) == 1
    np.testing.assert_array_equal(merge_k(Z), np.where(same, 2.0, 1.0))


# ---------------------------------------------------------------------- CKA in [0, 1]
def test_linear_cka_is_in_unit_interval_and_equals_its_hsic_definition():
    for seed in range(12):
        rng = np.random.default_rng(seed)
        n, d, f = rng.integers(5, 30), rng.integers(1, 10), rng.integers(1, 10)
        X = rng.standard_normal((n, d)) * 10.0 ** rng.uniform(-2, 2) + rng.standard_normal(d) * 3.0
        Y = rng.standard_normal((n, f)) @ rng.standard_normal((f, f)) + 5.0
        value = linear_cka(X, Y)
        assert 0.0 <= value <= 1.0
        assert value == pytest.approx(_hsic_cka(X, Y), abs=1e-9)
    v = np.random.default_rng(0).standard_normal(8)
    U = np.tile(v / np.linalg.norm(v), (20, 1)) * (1 + 1e-16 * np.arange(20))[:, None]
    assert np.isnan(linear_cka(U, np.random.default_rng(1).standard_normal((20, 3))))  # constant up to rounding
    assert np.isnan(linear_cka(np.zeros((20, 3)), np.random.default_rng(1).standard_normal((20, 3))))


@pytest.mark.parametrize("distance", ["cosine", "euclidean"])
def test_probe_cka_and_its_null_are_in_unit_interval_and_equal_hsic(distance):
    for seed in range(3):
        synth = make_hierarchical(per_species=2, dim=16, signal=0.3 * seed, seed=seed)
        data = ProbeData.from_arrays(synth.embeddings, synth.taxonomy)
        res = probe_alignment(data, _options(seed, distance=distance, permutations=30))
        C = data.centroids
        U = C / np.linalg.norm(C, axis=1, keepdims=True) if distance == "cosine" else C
        row = _rows(res).loc[("all", "cka_taxonomy")]
        assert row.value == pytest.approx(_hsic_cka(U, taxonomy_features(data.codes)), abs=1e-10)
        null = res.tables["null"].query("metric == 'cka_taxonomy'").value
        assert null.between(0, 1).all() and 0 <= row.value <= 1


def test_bootstrap_cka_leaves_out_copy_pairs_and_equals_the_full_cka_without_copies():
    rng = np.random.default_rng(2)
    X, F = rng.standard_normal((12, 4)), rng.integers(0, 2, (12, 5)).astype(float)
    G = (X - X.mean(0)) @ (X - X.mean(0)).T
    stat = _cka_statistic(G, F @ F.T)
    assert stat(np.ones((1, 12)))[0] == pytest.approx(_hsic_cka(X, F), abs=1e-12)
    idx = rng.integers(0, 12, (4, 12))
    for value, draw in zip(stat(bootstrap_weights(idx, 12)), idx):
        n = draw.size
        H = np.eye(n) - 1.0 / n
        K, L = H @ X[draw] @ X[draw].T @ H, H @ F[draw] @ F[draw].T @ H
        keep = (draw[:, None] != draw[None, :]) | np.eye(n, dtype=bool)
        want = (K * L * keep).sum() / np.sqrt((K * K * keep).sum() * (L * L * keep).sum())
        assert 0 <= value <= 1 and value == pytest.approx(want, abs=1e-12)


# ---------------------------------------------------------------------- species-level CIs
def test_every_statistic_has_a_species_ci_that_covers_it_on_structured_data():
    synth = make_hierarchical(per_species=3, dim=64, signal=1.0, noise=0.3, seed=0)
    data = ProbeData.from_arrays(synth.embeddings, synth.taxonomy)
    for probe in (probe_alignment, probe_dendrogram):
        frame = probe(data, _options(distance="cosine", permutations=19, n_boot=100)).to_frame()
        assert {"n_species", "n_taxa", "ci_note", "degenerate", "note"} <= set(frame.columns)
        assert not frame.degenerate.any() and (frame.note == "").all()
        stats = frame[frame.metric != "mantel_p"]
        assert (stats.ci_note == "").all(), stats[["rank", "metric", "ci_note"]]
        assert (stats.ci_low <= stats.value + 1e-12).all() and (stats.value <= stats.ci_high + 1e-12).all(), \
            stats[["rank", "metric", "value", "ci_low", "ci_high"]]
        assert (stats.ci_low < stats.ci_high).any()
        alls = frame[frame["rank"] == "all"]
        assert (alls.n_species == 47).all() and (alls.n_taxa == 47).all()
        if probe is probe_dendrogram:
            genus = frame[(frame["rank"] == "genus") & (frame.metric == "fmi")].iloc[0]
            assert genus.n_species == 47 and genus.n_taxa == data.taxonomy.n_taxa(5)


def test_fewer_than_10_species_get_no_ci_and_say_so():
    lineages = _lineages((1, 1, 1, 2, 2, 2, 1), per_species=3)  # 8 species
    X = np.random.default_rng(0).standard_normal((len(lineages), 8))
    for probe in (probe_alignment, probe_dendrogram):
        frame = probe(_data(X, lineages), _options(permutations=9, n_boot=50)).to_frame()
        stats = frame[frame.metric != "mantel_p"]
        assert len(stats) and stats.ci_low.isna().all() and stats.ci_high.isna().all()
        assert stats.ci_note.str.contains("8 species").all() and stats.ci_note.str.contains("< 10").all()
        assert np.isfinite(stats.value).any()  # the statistics themselves are there
