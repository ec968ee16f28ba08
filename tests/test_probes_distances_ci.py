"""Distances probe: species-bootstrap CIs (built by hand here), species/taxa counts, ties and degenerate input."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from scipy.spatial.distance import cdist

from latent.probes.base import ProbeData, ProbeOptions
from latent.probes.common import tie_null, zero_ties
from latent.probes.distances import (TIE_STAT_RTOL, CentroidSpearman, ImagePairSums, exact_tie_distances, guard_ci,
                                     probe_distances, ratio_from_parts, tie_tolerance)
from latent.stats import MIN_CLUSTERS, bootstrap_indices
from latent.synthetic import builtin_taxonomy_path, make_hierarchical
from latent.taxonomy import Taxonomy, lca_height

RANKS = ("kingdom", "phylum", "class", "order", "family", "genus", "species")


def _data(signal=1.0, per_species=3, dim=16, seed=0, taxonomy=None) -> ProbeData:
    syn = make_hierarchical(taxonomy, per_species=per_species, dim=dim, signal=signal, seed=seed)
    return ProbeData.from_arrays(syn.embeddings, syn.taxonomy, syn.ids)


def _taxonomy_with_placeholder() -> Taxonomy:
    table = pd.read_csv(builtin_taxonomy_path())
    table.loc[table["genus"] == "Passer", "family"] = ""
    return Taxonomy.from_table(table)


def _row(frame, metric, rank="all", **where):
    sel = frame[(frame["metric"] == metric) & (frame["rank"] == rank)]
    for key, value in where.items():
        sel = sel[sel[key] == value]
    assert len(sel) == 1, (metric, rank, where, len(sel))
    return sel.iloc[0]


# ------------------------------------------------------------------ weighted = expanded resample
def test_height_sums_equal_the_expanded_resample():
    data = _data(per_species=3, seed=4)
    S = data.n_species
    pairs = ImagePairSums(data, np.arange(len(data.X)), "cosine")
    draws = np.random.default_rng(2).integers(0, S, S)
    w = np.bincount(draws, minlength=S).astype(float)[None]
    sums, counts = pairs.height_sums()(w)
    # Expanded resample: copy p of species s brings its images; pairs inside one copy are kept, pairs
    # between two copies of one species dropped; ordered pairs (both orders), as the sums.
    D = cdist(data.X.astype(float), data.X.astype(float), "cosine")
    H = lca_height(data.codes, data.codes)
    images = [(p, s, i) for p, s in enumerate(draws) for i in np.flatnonzero(data.species == s)]
    expected_s, expected_c = np.zeros(8), np.zeros(8)
    for p, s, i in images:
        for q, t, j in images:
            if (p == q and i == j) or (p != q and s == t):
                continue
            expected_s[H[s, t]] += D[i, j]
            expected_c[H[s, t]] += 1
    np.testing.assert_allclose(sums[0], expected_s, rtol=1e-9, atol=1e-12)
    np.testing.assert_array_equal(counts[0], expected_c)
    # Centroids: one item per species.
    sp = CentroidSpearman(data, np.arange(S), "cosine")
    csums, ccounts = sp.height_sums()(w)
    Dc = cdist(data.centroids, data.centroids, "cosine")
    es, ec = np.zeros(8), np.zeros(8)
    for p, s in enumerate(draws):
        for q, t in enumerate(draws):
            if s != t:
                es[H[s, t]] += Dc[s, t]
                ec[H[s, t]] += 1
    np.testing.assert_allclose(csums[0], es, rtol=1e-9, atol=1e-12)
    np.testing.assert_array_equal(ccounts[0], ec)


def test_ratio_and_centroid_cis_equal_a_hand_written_species_bootstrap():
    data = _data(per_species=3, seed=1, taxonomy=_taxonomy_with_placeholder())
    n_boot, seed = 30, 4
    result = probe_distances(data, ProbeOptions(permutations=0, seed=seed, extra={"distances": {"n_boot": n_boot}}))
    frame = result.to_frame()
    S = data.n_species
    pairs = ImagePairSums(data, np.arange(len(data.X)), "cosine")
    for r, name in enumerate(RANKS):
        named = np.flatnonzero(data.named[:, r])  # the units: species named at the rank
        ratios = []
        for idx in bootstrap_indices(len(named), n_boot, seed):  # the resamples of latent.stats.cluster_ci
            w = np.zeros(S)
            np.add.at(w, named[idx], 1.0)
            ratios.append(ratio_from_parts(pairs.parts(weights=w))[r])
        row = _row(frame, "intra_inter_ratio", name)
        assert row["n_species"] == len(named) and row["n_taxa"] == len(np.unique(data.codes[named, r]))
        assert row["ci_note"] == ""
        np.testing.assert_allclose([row["ci_low"], row["ci_high"]], np.quantile(ratios, [0.025, 0.975]), rtol=1e-9)
    assert _row(frame, "intra_inter_ratio", "family")["n_species"] < S  # Passer has no family
    # Centroid mean distance at height 4 (same class, different orders), pair by pair.
    Dc = cdist(data.centroids, data.centroids, "cosine")
    H = data.species_distances()
    means = []
    for idx in bootstrap_indices(S, n_boot, seed):
        a, b = np.meshgrid(idx, idx, indexing="ij")
        keep = (a != b) & (H[a, b] == 4)
        means.append(Dc[a[keep], b[keep]].mean())
    row = _row(frame, "mean_distance", level="centroid", height=4)
    np.testing.assert_allclose([row["ci_low"], row["ci_high"]], np.quantile(means, [0.025, 0.975]), rtol=1e-9)


def test_statistics_of_unit_weights_equal_the_observed_rows():
    data = _data(per_species=3, seed=3)
    result = probe_distances(data, ProbeOptions(permutations=0, extra={"distances": {"n_boot": 0}}))
    frame = result.to_frame()
    pairs = ImagePairSums(data, result.arrays["image_rows"], "cosine")
    sums, counts = pairs.height_sums()(np.ones((1, data.n_species)))
    table = result.tables["by_height"]
    image = table[table["level"] == "image"].set_index("height")["mean"]
    np.testing.assert_allclose((sums / counts)[0, image.index], image.to_numpy(), rtol=1e-9)
    for r, name in enumerate(RANKS):
        value = _row(frame, "intra_inter_ratio", name)["value"]
        cut = 7 - r
        ratio = (sums[0, :cut].sum() / counts[0, :cut].sum()) / (sums[0, cut:].sum() / counts[0, cut:].sum())
        assert ratio == pytest.approx(value, rel=1e-9)
    assert frame["ci_note"].eq("no CI: 0 bootstrap resamples").all() and frame["ci_low"].isna().all()


def test_cis_cover_the_value_on_planted_data_and_counts():
    data = _data(signal=1.0, per_species=20, dim=64, seed=0)  # make_hierarchical's defaults
    frame = probe_distances(data, ProbeOptions(permutations=0, seed=0)).to_frame()
    has_ci = np.isfinite(frame["ci_low"])
    assert has_ci.all(), frame.loc[~has_ci, ["metric", "rank", "height", "ci_note"]]
    assert ((frame["ci_low"] <= frame["value"]) & (frame["value"] <= frame["ci_high"])).all()
    assert (frame["ci_note"] == "").all() and (frame["note"] == "").all()
    # Species and taxa behind each mean distance: height 1 pairs are congeneric species.
    genus_sizes = np.bincount(np.unique(data.codes[:, 5], return_inverse=True)[1])
    row = _row(frame, "mean_distance", level="image", height=1)
    assert row["n_species"] == genus_sizes[genus_sizes >= 2].sum() and row["n_taxa"] == (genus_sizes >= 2).sum()
    assert _row(frame, "mean_distance", level="image", height=0)["n_taxa"] == 47
    assert _row(frame, "mean_distance", level="image", height=7)["n_taxa"] == 1
    assert (frame.loc[frame["metric"] == "intra_inter_ratio", "n_species"] == 47).all()
    assert _row(frame, "intra_inter_ratio", "genus")["n_taxa"] == 40


def test_no_ci_below_ten_species():
    lineages = [["Animalia", "Chordata", "Aves", f"O{i // 4}", f"F{i // 4}", f"G{i // 2}", f"G{i // 2} s{i}"]
                for i in range(9)]
    rows = [lin for lin in lineages for _ in range(3)]
    X = np.random.default_rng(0).standard_normal((len(rows), 8)).astype(np.float32)
    data = ProbeData.from_arrays(X, Taxonomy.from_lineages(rows))
    frame = probe_distances(data, ProbeOptions(permutations=9)).to_frame()
    assert frame["ci_low"].isna().all() and frame["ci_high"].isna().all()
    assert frame["ci_note"].str.fullmatch(r"no CI: \d species \(< 10\)").all()
    assert (frame.loc[frame["metric"] == "intra_inter_ratio", "n_species"] == 9).all()
    assert MIN_CLUSTERS == 10


# ------------------------------------------------------------------------- ties and degenerate input
def _tied_data(kind, seed=0, per_species=4, dim=8):
    tree = [["Animalia", "Chordata", f"C{c}", f"O{c}{o}", f"F{c}{o}{f}", f"G{c}{o}{f}{g}", f"G{c}{o}{f}{g} s{s}"]
            for c in range(2) for o in range(2) for f in range(2) for g in range(2) for s in range(3)]
    rows = [lin for lin in tree for _ in range(per_species)]
    rng = np.random.default_rng(seed)
    if kind == "identical":
        X = np.tile(rng.standard_normal(dim) + 3.0, (len(rows), 1))
    else:
        points = {}
        X = np.array([points.setdefault(r[5], rng.standard_normal(dim)) for r in rows])
    X = X.astype(np.float32)
    return ProbeData.from_arrays(X, Taxonomy.from_lineages(rows)), rows, X


@pytest.mark.parametrize("metric", ["cosine", "euclidean"])
def test_identical_vectors_give_no_ratio_no_correlation_and_no_test(metric):
    data, _, _ = _tied_data("identical")
    result = probe_distances(data, ProbeOptions(distance=metric, permutations=19, extra={"distances": {"n_boot": 50}}))
    frame = result.to_frame()
    tested = frame[frame["metric"].isin(["intra_inter_ratio", "distance_height_spearman"])]
    assert len(tested) == 6
    assert tested["value"].isna().all() and tested["p_value"].isna().all() and (tested["permutations"] == 0).all()
    assert tested["note"].str.contains("distance 0|tied").all() and tested["ci_low"].isna().all()
    assert len(result.tables["null"]) == 0
    # Every distance is exactly 0 (snapped ties), whatever the rounding of 1 - cos or of the norms.
    means = frame[frame["metric"] == "mean_distance"]
    assert (means["value"] == 0).all() and (means["ci_high"] == 0).all()
    assert _row(frame, "height_means_monotonic")["value"] == 0.0


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_one_point_per_genus(seed):
    data, rows, X = _tied_data("genus", seed=seed)
    options = ProbeOptions(distance="euclidean" if seed % 2 else "cosine", permutations=19, seed=seed,
                           extra={"distances": {"n_boot": 50}})
    frame = probe_distances(data, options).to_frame()
    species = _row(frame, "intra_inter_ratio", "species")
    # Images of one species are at distance 0 (so are congeneric species): the nested ratio is 0 but no
    # test is claimed at species (no null there).
    assert species["value"] == 0.0 and np.isnan(species["p_value"]) and species["permutations"] == 0
    genus = _row(frame, "intra_inter_ratio", "genus")
    assert genus["value"] == 0.0 and genus["p_value"] == pytest.approx(1 / 20)
    assert _row(frame, "mean_distance", level="centroid", height=1)["value"] == 0.0
    # Ties are not broken by row order: the same images in another order give the same rows.
    order = np.random.default_rng(seed).permutation(len(rows))
    shuffled = ProbeData.from_arrays(X[order], Taxonomy.from_lineages([rows[i] for i in order]))
    again = probe_distances(shuffled, options).to_frame()
    pd.testing.assert_series_equal(frame["p_value"], again["p_value"])
    np.testing.assert_allclose(frame["value"], again["value"], rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(frame[["ci_low", "ci_high"]], again[["ci_low", "ci_high"]], rtol=1e-9, atol=1e-12)


def _equidistant(n_points: int, dim: int = 64, seed: int = 0) -> np.ndarray:
    """``c + e_g``, ``c = 5`` on the first ``n_points`` coordinates: every coordinate exact in float32, all
    norms equal, every cosine distance between two points the same number (up to rounding)."""
    rng = np.random.default_rng(seed)
    rest = rng.standard_normal(dim - n_points) * 10.0 ** rng.integers(-3, 1, dim - n_points)
    offset = np.r_[np.full(n_points, 5.0), rest].astype(np.float32)
    corner = np.eye(n_points, dim, dtype=np.float32)
    X = offset + corner
    assert np.all(X - offset == corner)  # exact: the ties are real
    return X


def test_exact_tie_distances_merge_rounding():
    from latent.probes.base import pairwise_distances

    X = _equidistant(16).astype(np.float64)
    for metric in ("cosine", "euclidean"):
        raw = pairwise_distances(X, metric=metric)[np.triu_indices(16, 1)]
        D = exact_tie_distances(X, metric)
        assert len(np.unique(D[np.triu_indices(16, 1)])) == 1 and np.all(np.diag(D) == 0)
        np.testing.assert_allclose(D[np.triu_indices(16, 1)], raw, rtol=1e-12)
    # (pairwise_distances rounds the 120 equal cosine distances to several values here with OpenBLAS)
    D = exact_tie_distances(np.vstack([X, X[:1] * (1 + 1e-7)]), "euclidean")  # a near-copy is not a tie
    assert D[0, 16] > 0 and exact_tie_distances(np.vstack([X, X[:1]]), "euclidean")[0, 16] == 0


def test_equidistant_genera_tie_exactly_whatever_the_order():
    # 16 equidistant genera: the Spearman is that of the midranks, whatever the species or row order.
    from scipy.stats import spearmanr

    tree = [["Animalia", "Chordata", f"C{c}", f"O{c}{o}", f"F{c}{o}{f}", f"G{c}{o}{f}{g}", f"G{c}{o}{f}{g} s{s}"]
            for c in range(2) for o in range(2) for f in range(2) for g in range(2) for s in range(3)]
    rows = [lin for lin in tree for _ in range(2)]
    genus = {name: i for i, name in enumerate(sorted({r[5] for r in rows}))}
    X = _equidistant(16)[[genus[r[5]] for r in rows]]
    options = ProbeOptions(distance="cosine", permutations=19, extra={"distances": {"n_boot": 50}})
    frame = probe_distances(ProbeData.from_arrays(X, Taxonomy.from_lineages(rows)), options).to_frame()
    rho = _row(frame, "distance_height_spearman")
    # Pairs of one genus at 0 (height 1), every other pair tied: rho from midranks alone.
    codes = Taxonomy.from_lineages(tree).species_codes
    H = lca_height(codes, codes)[np.triu_indices(48, 1)]
    assert rho["value"] == pytest.approx(spearmanr((H > 1).astype(float), H).statistic, abs=1e-12)
    # Renamed genera (another species order) and shuffled rows: the same correlation.
    # (a species binomial keeps its genus: Taxonomy refuses "Pica pica" under genus Corvus)
    renamed = [r[:5] + [g, f"{g} {r[6].split(' ')[1][::-1]}"] for r in rows for g in ["Z" + r[5][1:][::-1]]]
    order = np.random.default_rng(1).permutation(len(rows))
    again = probe_distances(ProbeData.from_arrays(X[order], Taxonomy.from_lineages([renamed[i] for i in order])),
                            options).to_frame()
    assert _row(again, "distance_height_spearman")["value"] == pytest.approx(rho["value"], abs=1e-12)


def test_tie_helpers():
    X = np.tile(np.array([[3.0, 4.0]]), (3, 1))
    from latent.probes.base import pairwise_distances

    for metric in ("cosine", "euclidean"):
        D = zero_ties(pairwise_distances(X * [[1.0], [1.0 + 1e-15], [1.0]], X, metric), tie_tolerance(X, metric))
        assert (D == 0).all()
    assert tie_tolerance(X, "euclidean") == pytest.approx(np.sqrt(1024 * np.finfo(float).eps) * 5)
    null = tie_null(np.array([0.5, 0.5 + 1e-13, 0.4, np.nan]), 0.5, rtol=TIE_STAT_RTOL)
    assert null[1] == 0.5 and null[2] == 0.4 and np.isnan(null[3])
    assert guard_ci(1.0, (0.5, 0.9), "")[1].startswith("no CI: the species bootstrap is biased")
    assert guard_ci(0.7, (0.5, 0.9), "") == ((0.5, 0.9), "")
    assert np.isnan(guard_ci(0.7, (0.5, 0.9), "no CI: 5 species (< 10)")[0][0])
