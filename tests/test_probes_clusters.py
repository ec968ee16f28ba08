"""Clusters probe: planted hierarchy found, null not found, equal to scikit-learn, hand-computed NC1/CDNV."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import calinski_harabasz_score, silhouette_score

from latent.errors import InputError
from latent.probes.base import ProbeData, ProbeOptions, species_permutations
from latent.probes.clusters import (ClusterSums, calinski_harabasz_from_sums, cdnv_from_sums, nc1_from_sums,
                                    probe_clusters)
from latent.synthetic import builtin_taxonomy_path, make_hierarchical
from latent.taxonomy import Taxonomy

RANKS = ("kingdom", "phylum", "class", "order", "family", "genus", "species")


def _taxonomy_with_placeholder() -> Taxonomy:
    """The built-in taxonomy with the family of *Passer* left empty (an unnamed placeholder family)."""
    table = pd.read_csv(builtin_taxonomy_path())
    table.loc[table["genus"] == "Passer", "family"] = ""
    return Taxonomy.from_table(table)


def _data(signal=3.0, per_species=4, dim=16, seed=0, taxonomy=None) -> ProbeData:
    syn = make_hierarchical(taxonomy, per_species=per_species, dim=dim, signal=signal, seed=seed)
    return ProbeData.from_arrays(syn.embeddings, syn.taxonomy, syn.ids)


def _row(result, metric, rank):
    frame = result.to_frame()
    sel = frame[(frame["metric"] == metric) & (frame["rank"] == rank)]
    assert len(sel) == 1, (metric, rank, len(sel))
    return sel.iloc[0]


def _geometry(X, metric):
    X = np.asarray(X, dtype=np.float64)
    return X / np.linalg.norm(X, axis=1, keepdims=True) if metric == "cosine" else X


def _nc1_bruteforce(X, y):
    classes = np.unique(y)
    C, (N, d) = len(classes), X.shape
    mu_g = X.mean(axis=0)
    S_W, S_B = np.zeros((d, d)), np.zeros((d, d))
    for c in classes:
        Xc = X[y == c]
        mu = Xc.mean(axis=0)
        S_W += (Xc - mu).T @ (Xc - mu)
        S_B += np.outer(mu - mu_g, mu - mu_g)
    S_W, S_B = S_W / N, S_B / C
    return np.trace(S_W @ np.linalg.pinv(S_B, rcond=1e-10, hermitian=True)) / C


def _cdnv_bruteforce(X, y):
    classes = np.unique(y)
    mu = {c: X[y == c].mean(axis=0) for c in classes}
    var = {c: ((X[y == c] - mu[c]) ** 2).sum(axis=1).mean() for c in classes}
    values = [(var[a] + var[b]) / (2 * ((mu[a] - mu[b]) ** 2).sum())
              for i, a in enumerate(classes) for b in classes[i + 1:]]
    return float(np.mean(values))


# ------------------------------------------------------------------------------ known answers
def test_planted_hierarchy_is_found():
    # dim > C - 1 at every rank: with C - 1 >= d, S_B has tiny eigenvalues and NC1 is unstable.
    data = _data(signal=3.0, per_species=5, dim=64, seed=1)
    result = probe_clusters(data, ProbeOptions(permutations=99, seed=0))
    for rank in ("kingdom", "phylum", "class", "order", "family", "genus"):
        sil = _row(result, "silhouette", rank)
        assert sil["value"] > 0.15 and sil["p_value"] <= 0.02 and sil["z"] > 3, rank
        for metric in ("calinski_harabasz", "nc1", "cdnv"):
            row = _row(result, metric, rank)
            assert row["p_value"] <= 0.02 and row["permutations"] == 99, (rank, metric)
            if metric == "calinski_harabasz":
                assert row["value"] > 2 * row["null_mean"], rank
            else:
                assert row["value"] < 0.5 * row["null_mean"], (rank, metric)
    assert _row(result, "silhouette", "species")["value"] > 0.3
    assert _row(result, "silhouette", "species")["permutations"] == 0  # species rank: no null
    assert len(result.tables["null"]) == 6 * 4 * 99


def test_zero_signal_is_not_found():
    pvalues = {m: [] for m in ("silhouette", "calinski_harabasz", "nc1", "cdnv")}
    for seed in range(5):
        data = _data(signal=0.0, per_species=4, dim=16, seed=seed)
        result = probe_clusters(data, ProbeOptions(permutations=99, seed=seed))
        for metric in pvalues:
            for rank in ("kingdom", "order", "genus"):
                row = _row(result, metric, rank)
                assert abs(row["z"]) < 3.5, (seed, metric, rank)
                pvalues[metric].append(row["p_value"])
        # Noise around the origin: the kingdom silhouette is near 0 (small genera make the genus one
        # negative, under the null as much as observed: the z above).
        assert abs(_row(result, "silhouette", "kingdom")["value"]) < 0.1
    # 15 p-values per statistic (5 seeds x 3 ranks, correlated within a seed): uniform under the
    # null, so neither small on average nor often below 0.05.
    for metric, p in pvalues.items():
        assert np.mean(p) > 0.25 and sum(v < 0.05 for v in p) <= 3, (metric, p)
    pooled = np.concatenate(list(pvalues.values()))
    assert np.mean(pooled < 0.05) < 0.15 and np.mean(pooled) > 0.35


# --------------------------------------------------------------- independent implementations
@pytest.mark.parametrize("metric", ["cosine", "euclidean"])
def test_silhouette_and_ch_equal_sklearn_with_placeholders(metric):
    data = _data(signal=1.0, per_species=3, taxonomy=_taxonomy_with_placeholder())
    result = probe_clusters(data, ProbeOptions(distance=metric, permutations=3))
    X = data.X.astype(np.float64)
    for r, name in enumerate(RANKS):
        rows = data.named[data.species, r]
        labels = data.codes[data.species, r][rows]
        sil = _row(result, "silhouette", name)
        assert sil["value"] == pytest.approx(silhouette_score(X[rows], labels, metric=metric), abs=1e-9)
        assert sil["n"] == rows.sum() and not sil["sampled"]
        ch = _row(result, "calinski_harabasz", name)
        assert ch["value"] == pytest.approx(calinski_harabasz_score(_geometry(X, metric)[rows], labels), rel=1e-9)
    assert _row(result, "silhouette", "family")["n"] < len(X)  # the unnamed family is left out


@pytest.mark.parametrize("metric", ["cosine", "euclidean"])
def test_fast_null_labellings_equal_direct_computation(metric):
    data = _data(signal=1.0, per_species=3, seed=3, taxonomy=_taxonomy_with_placeholder())
    sums = ClusterSums(data, metric, np.argsort(data.species, kind="stable"))
    ranks = [0, 1, 2, 3, 4, 5]
    X = data.X.astype(np.float64)
    G = _geometry(X, metric)
    for perm in species_permutations(data.n_species, 2, seed=11):
        codes, named = data.permuted_codes(perm), data.permuted_named(perm)
        fast = {**sums.species_stats(perm, ranks), **sums.silhouettes(perm, ranks)}
        for r in ranks:
            rows = named[data.species, r]
            y = codes[data.species, r][rows]
            assert fast[(r, "silhouette")] == pytest.approx(silhouette_score(X[rows], y, metric=metric), abs=1e-9)
            assert fast[(r, "calinski_harabasz")] == pytest.approx(calinski_harabasz_score(G[rows], y), rel=1e-9)
            assert fast[(r, "nc1")] == pytest.approx(_nc1_bruteforce(G[rows], y), rel=1e-8)
            assert fast[(r, "cdnv")] == pytest.approx(_cdnv_bruteforce(G[rows], y), rel=1e-9)


def test_nc1_and_cdnv_hand_computed():
    # Two classes in the plane: A = {(0,-1), (0,1)}, B = {(0,3), (0,5)}. S_W = diag(0, 1),
    # S_B = diag(0, 4): NC1 = tr(S_W S_B^+) / 2 = (1/4) / 2 = 1/8. var_A = var_B = 1,
    # ||mu_A - mu_B||^2 = 16: CDNV = 2 / 32 = 1/16.
    X = np.array([[0.0, -1.0], [0.0, 1.0], [0.0, 3.0], [0.0, 5.0]])
    N_t = np.array([2.0, 2.0])
    Sum_t = np.array([X[:2].sum(0), X[2:].sum(0)])
    Sq_t = np.array([(X[:2] ** 2).sum(), (X[2:] ** 2).sum()])
    assert nc1_from_sums(N_t, Sum_t, X.T @ X) == pytest.approx(1 / 8, rel=1e-12)
    assert cdnv_from_sums(N_t, Sum_t, Sq_t) == pytest.approx(1 / 16, rel=1e-12)
    # Calinski-Harabasz: between = 2*4 + 2*4 = 16 over C - 1 = 1; within = 4 over N - C = 2: 8.
    assert calinski_harabasz_from_sums(N_t, Sum_t, Sq_t) == pytest.approx(8.0, rel=1e-12)


def test_nc1_and_cdnv_hand_computed_through_the_probe():
    # Three genera on a line: A = {0, 2}, B = {4, 6, 8}, C = {10}, one image per species. C has one image,
    # so it takes no part at genus (the unit is the image: a one-image taxon has no spread).
    # On A and B: mu = 1, 6; var = 1, 8/3; global mean 4. S_W = (2 + 8) / 5 = 2;
    # S_B = ((1-4)^2 + (6-4)^2) / 2 = 13/2; NC1 = (2 / (13/2)) / 2 = 2/13. CDNV = (1 + 8/3) / (2*25).
    lineage = ["Animalia", "Chordata", "Aves", "Passeriformes", "Paridae"]
    genera = ["Aa", "Aa", "Bb", "Bb", "Bb", "Cc"]
    table = [lineage + [g, f"{g} s{i}"] for i, g in enumerate(genera)]
    data = ProbeData.from_arrays(np.array([[0.0], [2.0], [4.0], [6.0], [8.0], [10.0]]),
                                 Taxonomy.from_lineages(table))
    result = probe_clusters(data, ProbeOptions(distance="euclidean", permutations=0))
    assert _row(result, "nc1", "genus")["value"] == pytest.approx(2 / 13, rel=1e-12)
    expected_cdnv = (1 + 8 / 3) / 50
    assert _row(result, "cdnv", "genus")["value"] == pytest.approx(expected_cdnv, rel=1e-12)
    genus = _row(result, "nc1", "genus")
    assert genus["n_taxa"] == 2 and genus["n"] == 5 and genus["n_taxa_single"] == 1
    assert genus["unit"] == "image" and genus["n_units"] == 5 and genus["coverage"] == "1 of 3 taxa have one image: left out"
    skipped = result.tables["skipped"]
    assert {"kingdom", "family"} <= set(skipped["rank"])  # a single taxon: no rows
    assert set(result.to_frame()["rank"]) <= {"genus"}  # every species has one image: no species rows
    assert "taxa with 2 or more images" in set(skipped.loc[skipped["rank"] == "species", "reason"]).pop()


def test_sampled_silhouette_equals_sklearn_on_its_rows():
    data = _data(signal=1.0, per_species=6, seed=2)
    result = probe_clusters(data, ProbeOptions(max_images=150, permutations=3))
    rows = result.arrays["silhouette_rows"]
    assert len(rows) == 141 and np.all(np.bincount(data.species[rows]) == 3)  # 3 of each species
    for r, name in enumerate(RANKS):
        sil = _row(result, "silhouette", name)
        assert sil["sampled"] and sil["n"] == len(rows)
        expected = silhouette_score(data.X[rows].astype(np.float64), data.codes[data.species[rows], r], metric="cosine")
        assert sil["value"] == pytest.approx(expected, abs=1e-9)
        assert _row(result, "calinski_harabasz", name)["n"] == len(data.X)  # every image
    assert result.info["silhouette_sample"]["per_species"] == 3


def test_permutation_cap_of_the_expensive_nulls():
    data = _data(signal=1.0, per_species=2)
    result = probe_clusters(data, ProbeOptions(permutations=20, extra={"clusters": {"permutations": 7}}))
    assert _row(result, "silhouette", "genus")["permutations"] == 7
    assert _row(result, "nc1", "genus")["permutations"] == 7
    assert _row(result, "calinski_harabasz", "genus")["permutations"] == 20
    null = result.tables["null"]
    assert len(null[(null["metric"] == "cdnv") & (null["rank"] == "order")]) == 7
    default = probe_clusters(data, ProbeOptions(permutations=300))
    assert _row(default, "silhouette", "kingdom")["permutations"] == 199
    assert _row(default, "cdnv", "genus")["permutations"] == 300  # small: every permutation asked


def test_cdnv_null_and_bootstrap_follow_the_work_rule(monkeypatch):
    # Thousands of taxa make one CDNV permutation cost seconds: without the setting its null and bootstrap
    # take the work-limited rule of NC1 (cap, budget, never below 19 / 50), said in the rows and info.
    from latent.probes import clusters as module

    data = _data(signal=1.0, per_species=2)
    monkeypatch.setattr(module, "NULL_WORK", 1.0)  # every permutation over budget: the floors
    result = probe_clusters(data, ProbeOptions(permutations=300, extra={"clusters": {"n_boot": 300}}))
    assert _row(result, "cdnv", "genus")["permutations"] == 19
    assert _row(result, "calinski_harabasz", "genus")["permutations"] == 300
    assert result.info["permutations_cdnv"] == 19 and result.info["n_boot_cdnv"] == 50
    null = result.tables["null"]
    assert len(null[(null["metric"] == "cdnv") & (null["rank"] == "genus")]) == 19


def test_bad_options_are_refused():
    data = _data(per_species=2)
    with pytest.raises(InputError, match="'permutations'.*-1"):
        probe_clusters(data, ProbeOptions(extra={"clusters": {"permutations": -1}}))
    with pytest.raises(InputError, match="'max_images'.*1"):
        probe_clusters(data, ProbeOptions(max_images=1))


# ------------------------------------------------------------------------------------- real data
def test_cub10_every_statistic(shared):
    import json

    from latent.importer import join_taxonomy

    root = shared("cub10")
    X = np.load(root / "bird_embeddings.npy")
    meta = pd.DataFrame(json.loads((root / "bird_metadata.json").read_text()))
    lineages = join_taxonomy(meta["species"], root / "taxonomy.csv", "cub_class")
    data = ProbeData.from_arrays(X, Taxonomy(lineages, on_conflict="warn"), meta["path"].to_numpy())
    result = probe_clusters(data, ProbeOptions(permutations=99, seed=0))
    frame = result.to_frame()
    assert set(frame["rank"]) == {"order", "family", "genus", "species"}
    assert len(frame) == 16 and np.isfinite(frame["value"]).all()
    upper = frame[frame["rank"] != "species"]
    assert np.isfinite(upper[["null_mean", "null_std", "z", "p_value"]].to_numpy(float)).all()
    Xd = data.X.astype(np.float64)
    for r, name in ((3, "order"), (5, "genus"), (6, "species")):
        labels = data.codes[data.species, r]
        assert _row(result, "silhouette", name)["value"] == pytest.approx(
            silhouette_score(Xd, labels, metric="cosine"), abs=1e-9)
        assert _row(result, "calinski_harabasz", name)["value"] == pytest.approx(
            calinski_harabasz_score(_geometry(Xd, "cosine"), labels), rel=1e-9)
        if name == "genus":  # (a 512 x 512 pseudo-inverse: once)
            assert _row(result, "nc1", name)["value"] == pytest.approx(
                _nc1_bruteforce(_geometry(Xd, "cosine"), labels), rel=1e-6)
    # Real CLIP photos of 10 species: species form clusters (positive silhouette, NC1 below its null).
    assert _row(result, "silhouette", "species")["value"] > 0
    assert _row(result, "nc1", "genus")["z"] < 0
