"""Distances probe: planted hierarchy found, null not found, fast paths equal brute force and scipy."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
from scipy.spatial.distance import cdist
from scipy.stats import spearmanr

import latent.probes.distances as distances
from latent.errors import InputError
from latent.probes.base import ProbeData, ProbeOptions, species_permutations
from latent.probes.distances import (CentroidSpearman, ImagePairSums, centroid_height_table, max_items_for_pairs,
                                     probe_distances, ratio_from_parts, stratified_sample)
from latent.synthetic import builtin_taxonomy_path, make_hierarchical
from latent.taxonomy import Taxonomy, lca_height

SCIPY_METRIC = {"cosine": "cosine", "euclidean": "euclidean"}


def _taxonomy_with_placeholder() -> Taxonomy:
    """The built-in taxonomy with the family of *Passer* left empty (an unnamed placeholder family)."""
    table = pd.read_csv(builtin_taxonomy_path())
    table.loc[table["genus"] == "Passer", "family"] = ""
    return Taxonomy.from_table(table)


def _data(signal=3.0, per_species=3, dim=16, seed=0, taxonomy=None) -> ProbeData:
    syn = make_hierarchical(taxonomy, per_species=per_species, dim=dim, signal=signal, seed=seed)
    return ProbeData.from_arrays(syn.embeddings, syn.taxonomy, syn.ids)


def _row(result, metric, rank="all", **where):
    frame = result.to_frame()
    sel = frame[(frame["metric"] == metric) & (frame["rank"] == rank)]
    for key, value in where.items():
        sel = sel[sel[key] == value]
    assert len(sel) == 1, (metric, rank, where, len(sel))
    return sel.iloc[0]


def _bruteforce_ratios(X, species, codes, named, metric) -> dict[int, float]:
    """Mean intra / mean inter distance per rank, one image pair at a time."""
    D = cdist(np.asarray(X, dtype=np.float64), np.asarray(X, dtype=np.float64), SCIPY_METRIC[metric])
    out = {}
    for r in range(7):
        intra, inter = [], []
        for i in range(len(X)):
            for j in range(i + 1, len(X)):
                a, b = species[i], species[j]
                if not (named[a, r] and named[b, r]):
                    continue
                (intra if codes[a, r] == codes[b, r] else inter).append(D[i, j])
        out[r] = np.mean(intra) / np.mean(inter) if intra and inter else np.nan
    return out


# ------------------------------------------------------------------------------ known answers
def test_planted_hierarchy_is_found():
    data = _data(signal=3.0, per_species=4, dim=128, seed=1)
    result = probe_distances(data, ProbeOptions(permutations=99, seed=0, extra={"distances": {"n_boot": 50}}))
    rho = _row(result, "distance_height_spearman")
    # Heights take 7 values with many ties, so even distances ordered exactly by height give a
    # Spearman below 1 (0.85 on the built-in tree): compare with that ceiling.
    H = data.species_distances()[np.triu_indices(data.n_species, 1)].astype(float)
    ceiling = spearmanr(H + 1e-9 * np.arange(H.size), H).statistic
    assert 0.8 < ceiling < 0.9
    assert rho["value"] > 0.9 * ceiling and rho["p_value"] <= 0.02 and rho["z"] > 3
    assert rho["ci_low"] <= rho["value"] <= rho["ci_high"] and rho["ci_low"] > 0.6
    for rank in ("kingdom", "phylum", "class", "order", "family", "genus"):
        ratio = _row(result, "intra_inter_ratio", rank)
        assert ratio["value"] < 0.75, rank
        assert ratio["p_value"] <= 0.02 and ratio["null_mean"] > ratio["value"], rank
        assert ratio["ci_high"] < 1.0
    species = _row(result, "intra_inter_ratio", "species")
    assert species["value"] < 0.5 and species["permutations"] == 0 and np.isnan(species["p_value"])
    assert _row(result, "height_means_monotonic")["value"] == 1.0
    by_height = result.tables["by_height"]
    image = by_height[by_height["level"] == "image"].set_index("height")["mean"]
    assert (np.diff(image.to_numpy()) > 0).all() and list(image.index) == list(range(8))
    null = result.tables["null"]
    assert set(null["metric"]) == {"intra_inter_ratio", "distance_height_spearman"}
    assert len(null[(null["metric"] == "distance_height_spearman")]) == 99


def test_zero_signal_is_not_found():
    p_rho, p_ratio = [], []
    for seed in range(5):
        data = _data(signal=0.0, per_species=3, dim=16, seed=seed)
        result = probe_distances(data, ProbeOptions(permutations=99, seed=seed, extra={"distances": {"n_boot": 0}}))
        rho = _row(result, "distance_height_spearman")
        assert abs(rho["value"]) < 0.1 and abs(rho["z"]) < 3
        p_rho.append(rho["p_value"])
        for rank in ("kingdom", "class", "genus"):
            ratio = _row(result, "intra_inter_ratio", rank)
            assert abs(ratio["value"] - 1) < 0.05 and abs(ratio["z"]) < 3.5
            p_ratio.append(ratio["p_value"])
    assert np.mean(p_rho) > 0.2 and sum(p < 0.05 for p in p_rho) <= 1
    assert np.mean(p_ratio) > 0.2 and sum(p < 0.05 for p in p_ratio) <= 2


# ---------------------------------------------------------------------- equality with brute force
@pytest.mark.parametrize("metric", ["cosine", "euclidean"])
def test_ratio_equals_pair_loop_with_placeholders(metric):
    data = _data(signal=1.0, per_species=3, taxonomy=_taxonomy_with_placeholder())
    assert not data.named[:, 4].all()  # an unnamed family: its species are left out at rank family
    result = probe_distances(data, ProbeOptions(distance=metric, permutations=5, extra={"distances": {"n_boot": 0}}))
    expected = _bruteforce_ratios(data.X, data.species, data.codes, data.named, metric)
    for r, name in enumerate(("kingdom", "phylum", "class", "order", "family", "genus", "species")):
        assert _row(result, "intra_inter_ratio", name)["value"] == pytest.approx(expected[r], rel=1e-9)
    # The fast permutation path against the pair loop with permuted lineages.
    pairs = ImagePairSums(data, np.arange(len(data.X)), metric)
    for perm in species_permutations(data.n_species, 2, seed=3):
        fast = ratio_from_parts(pairs.parts(perm))
        slow = _bruteforce_ratios(data.X, data.species, data.permuted_codes(perm), data.permuted_named(perm), metric)
        np.testing.assert_allclose(fast, [slow[r] for r in range(7)], rtol=1e-9)


def test_ratio_bootstrap_equals_expanded_resample():
    data = _data(signal=1.0, per_species=3, seed=2)
    pairs = ImagePairSums(data, np.arange(len(data.X)), "cosine")
    rng = np.random.default_rng(5)
    idx = rng.integers(0, data.n_species, data.n_species)
    w = np.bincount(idx, minlength=data.n_species)
    fast = ratio_from_parts(pairs.parts(weights=w))
    # Expanded resample: copy p of species s brings its images; pairs inside one copy are kept,
    # pairs between two copies of one species are dropped.
    D = cdist(data.X.astype(float), data.X.astype(float), "cosine")
    images = [(p, s, i) for p, s in enumerate(idx) for i in np.flatnonzero(data.species == s)]
    sums = np.zeros((7, 2, 2))
    for x in range(len(images)):
        p, s, i = images[x]
        for y in range(x + 1, len(images)):
            q, t, j = images[y]
            if p != q and s == t:
                continue
            for r in range(7):
                same = int(data.codes[s, r] == data.codes[t, r])
                sums[r, same] += (D[i, j], 1)
    slow = (sums[:, 1, 0] / sums[:, 1, 1]) / (sums[:, 0, 0] / sums[:, 0, 1])
    np.testing.assert_allclose(fast, slow, rtol=1e-9)


def test_spearman_equals_scipy_and_fast_null_and_bootstrap_equal_brute_force():
    data = _data(signal=1.0, per_species=3, seed=4)
    S = data.n_species
    sp = CentroidSpearman(data, np.arange(S), "cosine")
    D = cdist(data.centroids, data.centroids, "cosine")
    H = data.species_distances()
    iu = np.triu_indices(S, 1)
    assert sp.observed == pytest.approx(spearmanr(D[iu], H[iu]).statistic, abs=1e-12)
    assert sp.null(np.arange(S)) == pytest.approx(sp.observed, abs=1e-12)
    for perm in species_permutations(S, 3, seed=7):
        Hp = H[np.ix_(perm, perm)]
        assert sp.null(perm) == pytest.approx(spearmanr(D[iu], Hp[iu]).statistic, abs=1e-12)
    rng = np.random.default_rng(0)
    idx = rng.integers(0, S, S)
    pa, pb = np.triu_indices(S, 1)
    keep = idx[pa] != idx[pb]  # a species is never paired with its own duplicate
    a, b = idx[pa][keep], idx[pb][keep]
    expected = spearmanr(D[a, b], H[a, b]).statistic
    assert sp.bootstrap(np.bincount(idx, minlength=S)) == pytest.approx(expected, abs=1e-12)
    # Tied distances (two species with the same images, so the same centroid): midranks of ties.
    syn = make_hierarchical(per_species=2, dim=8, seed=4)
    X = syn.embeddings.copy()
    X[:2] = X[2:4]
    tied = ProbeData.from_arrays(X, syn.taxonomy)
    sp_tied = CentroidSpearman(tied, np.arange(S), "euclidean")
    Dt = cdist(tied.centroids, tied.centroids)
    assert len(np.unique(Dt[iu])) < len(iu[0])
    assert sp_tied.observed == pytest.approx(spearmanr(Dt[iu], H[iu]).statistic, abs=1e-12)
    a2, b2 = idx[pa][keep], idx[pb][keep]
    assert sp_tied.bootstrap(np.bincount(idx, minlength=S)) == pytest.approx(
        spearmanr(Dt[a2, b2], H[a2, b2]).statistic, abs=1e-12)
    result = probe_distances(data, ProbeOptions(permutations=0, extra={"distances": {"n_boot": 0}}))
    row = _row(result, "distance_height_spearman")
    assert row["value"] == pytest.approx(spearmanr(D[iu], H[iu]).statistic, abs=1e-12)
    assert row["n"] == S * (S - 1) // 2 and row["permutations"] == 0 and np.isnan(row["ci_low"])


def test_by_height_tables_equal_numpy_on_all_pairs(monkeypatch):
    data = _data(signal=1.0, per_species=3, seed=6)
    result = probe_distances(data, ProbeOptions(permutations=0, extra={"distances": {"n_boot": 0}}))
    table = result.tables["by_height"].set_index(["level", "height"])
    D = cdist(data.X.astype(float), data.X.astype(float), "cosine")
    H = lca_height(data.codes[data.species], data.codes[data.species])
    iu = np.triu_indices(len(D), 1)
    for level, d, h in (("image", D[iu], H[iu]),):
        for height in np.unique(h):
            v = d[h == height]
            rec = table.loc[(level, int(height))]
            assert rec["n"] == v.size
            np.testing.assert_allclose([rec["mean"], rec["std"]], [v.mean(), v.std()], rtol=1e-9)
            np.testing.assert_allclose(rec[["q05", "q25", "q50", "q75", "q95"]].to_numpy(float),
                                       np.quantile(v, distances.QUANTILES), rtol=1e-9)
    Dc = cdist(data.centroids, data.centroids, "cosine")
    Hc = data.species_distances()
    ic = np.triu_indices(data.n_species, 1)
    kept, notes = centroid_height_table(data, "cosine", max_pairs=10**9)
    monkeypatch.setattr(distances, "BLOCK_ELEMENTS", 150)  # several row blocks
    streamed, notes2 = centroid_height_table(data, "cosine", max_pairs=10)
    assert notes["quantiles"] == "kept" and notes2["quantiles"] == "streamed"
    for rec_k, rec_s in zip(kept, streamed):
        v = Dc[ic][Hc[ic] == rec_k["height"]]
        expected = [v.size, v.mean(), v.std(), *np.quantile(v, distances.QUANTILES)]
        cols = ["n", "mean", "std", "q05", "q25", "q50", "q75", "q95"]
        np.testing.assert_allclose([rec_k[c] for c in cols], expected, rtol=1e-9)
        np.testing.assert_allclose([rec_s[c] for c in cols], expected, rtol=1e-9)
        assert (table.loc[("centroid", rec_k["height"]), "mean"]) == pytest.approx(v.mean(), rel=1e-9)
    long = result.to_frame()
    means = long[long["metric"] == "mean_distance"]
    assert len(means) == len(table) and set(means["level"]) == {"image", "centroid"}


def test_sampled_image_pairs_keep_same_species_pairs_and_are_seeded():
    data = _data(signal=1.0, per_species=10, seed=0)
    options = ProbeOptions(max_pairs=20_000, permutations=9, seed=3, extra={"distances": {"n_boot": 5}})
    result = probe_distances(data, options)
    rows = result.arrays["image_rows"]
    m = len(rows)
    # 4 images of each of the 47 species: 188 images, 17,578 pairs; 5 each would be 27,495.
    assert m == 188 and np.all(np.bincount(data.species[rows], minlength=data.n_species) == 4)
    assert result.info["image_sample"]["pairs"] == m * (m - 1) // 2 <= 20_000
    table = result.tables["by_height"]
    assert table[(table["level"] == "image") & (table["height"] == 0)]["n"].iloc[0] > 0
    ratio = _row(result, "intra_inter_ratio", "genus")
    assert ratio["sampled"] and ratio["n"] <= 20_000
    sub = data.X[rows]
    expected = _bruteforce_ratios(sub, data.species[rows], data.codes, data.named, "cosine")
    assert ratio["value"] == pytest.approx(expected[5], rel=1e-9)
    again = probe_distances(data, options)
    pd.testing.assert_frame_equal(result.to_frame(), again.to_frame())
    # Spearman on a species sample when the centroid pairs exceed max_pairs.
    small = probe_distances(data, ProbeOptions(max_pairs=300, permutations=5, extra={"distances": {"n_boot": 0}}))
    rho = _row(small, "distance_height_spearman")
    assert rho["sampled"] and rho["n"] <= 300 and rho["n_species"] == max_items_for_pairs(300)


def test_stratified_sample_subsets_species_when_two_each_do_not_fit():
    species = np.repeat(np.arange(50), 4)
    rows, k, sampled = stratified_sample(species, 50, 31, min_per_species=2, seed=0, tag=1)
    counts = np.bincount(species[rows], minlength=50)
    assert sampled and k == 0 and len(rows) == 30 and set(np.unique(counts)) == {0, 2}
    rows, k, sampled = stratified_sample(species, 50, 160, min_per_species=2, seed=0, tag=1)
    assert k == 3 and len(rows) == 150 and np.all(np.diff(species[rows]) >= 0)
    assert max_items_for_pairs(1) == 2 and max_items_for_pairs(2_000_000) == 2000


def test_bad_options_are_refused():
    data = _data(per_species=2)
    with pytest.raises(InputError, match="'n_boot'.*-1"):
        probe_distances(data, ProbeOptions(extra={"distances": {"n_boot": -1}}))
    with pytest.raises(InputError, match="'max_pairs'.*0"):
        probe_distances(data, ProbeOptions(max_pairs=0))


# ------------------------------------------------------------------------------------- real data
def _cub10(shared) -> ProbeData:
    from latent.importer import join_taxonomy

    root = shared("cub10")
    X = np.load(root / "bird_embeddings.npy")
    meta = pd.DataFrame(json.loads((root / "bird_metadata.json").read_text()))
    lineages = join_taxonomy(meta["species"], root / "taxonomy.csv", "cub_class")
    return ProbeData.from_arrays(X, Taxonomy(lineages, on_conflict="warn"), meta["path"].to_numpy())


def test_cub10_every_statistic(shared):
    data = _cub10(shared)
    assert data.n_species == 10 and len(data.X) == 300
    result = probe_distances(data, ProbeOptions(permutations=199, seed=0, extra={"distances": {"n_boot": 100}}))
    frame = result.to_frame()
    ratios = frame[frame["metric"] == "intra_inter_ratio"].set_index("rank")
    assert list(ratios.index) == ["order", "family", "genus", "species"]  # 1 kingdom, phylum, class
    assert (ratios["value"] < 1).all() and (ratios["ci_high"] < 1).all()
    assert set(result.tables["skipped"]["rank"]) >= {"kingdom", "phylum", "class"}
    # The data README: mean cosine similarity 0.815 same species, 0.790 same genus, 0.767 same
    # family, 0.713 different order (height 4; each order holds one family, so no height 3).
    table = result.tables["by_height"]
    image = table[table["level"] == "image"].set_index("height")
    assert list(image.index) == [0, 1, 2, 4]
    np.testing.assert_allclose(1 - image["mean"].to_numpy(), [0.815, 0.790, 0.767, 0.713], atol=6e-4)
    assert image["n"].sum() == 300 * 299 // 2
    rho = _row(result, "distance_height_spearman")
    assert rho["n"] == 45 and 0.3 < rho["value"] <= 1 and rho["ci_low"] < rho["value"] < rho["ci_high"]
    assert rho["p_value"] < 0.1  # 10 species: a modest but real signal
    assert _row(result, "height_means_monotonic")["value"] in (0.0, 1.0)
    for col in ("null_mean", "null_std", "z", "p_value"):
        assert np.isfinite(ratios.loc[["order", "family", "genus"], col]).all()


def test_no_undefined_bootstrap_warning_for_heights_without_centroid_pairs(planted_probe_data, caplog):
    # height 0 (same species) has no centroid pairs: no row, no CI, and no "resamples undefined" warning
    with caplog.at_level("WARNING", logger="latent"):
        result = distances.probe_distances(planted_probe_data, ProbeOptions(permutations=0))
    assert "undefined" not in caplog.text, caplog.text
    rows = result.to_frame()
    centroid = rows[(rows["metric"] == "mean_distance") & (rows["level"] == "centroid")]
    assert 0 not in set(centroid["height"]) and centroid["ci_low"].notna().all()
