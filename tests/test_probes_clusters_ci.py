"""Clusters probe: species-bootstrap CIs (built by hand here), species/taxa counts, ties and degenerate input."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import calinski_harabasz_score, silhouette_samples

import latent.probes.clusters as clusters
from latent.probes.base import ProbeData, ProbeOptions
from latent.probes.clusters import ClusterSums, probe_clusters
from latent.stats import MIN_CLUSTERS, bootstrap_indices
from latent.synthetic import builtin_taxonomy_path, make_hierarchical
from latent.taxonomy import Taxonomy

RANKS = ("kingdom", "phylum", "class", "order", "family", "genus", "species")
METRICS = ("silhouette", "calinski_harabasz", "nc1", "cdnv")


def _data(signal=1.0, per_species=3, dim=16, seed=0, taxonomy=None) -> ProbeData:
    syn = make_hierarchical(taxonomy, per_species=per_species, dim=dim, signal=signal, seed=seed)
    return ProbeData.from_arrays(syn.embeddings, syn.taxonomy, syn.ids)


def _row(frame, metric, rank):
    sel = frame[(frame["metric"] == metric) & (frame["rank"] == rank)]
    assert len(sel) == 1, (metric, rank, len(sel))
    return sel.iloc[0]


def _geometry(X, metric):
    X = np.asarray(X, dtype=np.float64)
    return X / np.linalg.norm(X, axis=1, keepdims=True) if metric == "cosine" else X


def _expand(data, species, draws, r):
    """The resample written out: copy p of species draws[p] brings its images; labels are the taxon at rank
    r (the copy itself at rank species)."""
    rows, labels, copies = [], [], []
    for p, s in enumerate(species[draws]):
        members = np.flatnonzero(data.species == s)
        rows.append(members)
        copies.append(np.full(len(members), p))
        labels.append(np.full(len(members), p if r == 6 else data.codes[s, r]))
    return np.concatenate(rows), np.concatenate(labels), np.concatenate(copies)


def _nc1(X, y):
    classes = np.unique(y)
    C, (N, d) = len(classes), X.shape
    mu_g = X.mean(axis=0)
    S_W, S_B = np.zeros((d, d)), np.zeros((d, d))
    for c in classes:
        Xc = X[y == c]
        mu = Xc.mean(axis=0)
        S_W += (Xc - mu).T @ (Xc - mu)
        S_B += np.outer(mu - mu_g, mu - mu_g)
    return np.trace(S_W / N @ np.linalg.pinv(S_B / C, rcond=1e-10, hermitian=True)) / C


def _cdnv(X, y, same_species=None):
    """Mean over class pairs; pairs of a species with its own copy (``same_species[a] == same_species[b]``)
    are left out."""
    classes = np.unique(y)
    mu = {c: X[y == c].mean(axis=0) for c in classes}
    var = {c: ((X[y == c] - mu[c]) ** 2).sum(axis=1).mean() for c in classes}
    values = [(var[a] + var[b]) / (2 * ((mu[a] - mu[b]) ** 2).sum())
              for i, a in enumerate(classes) for b in classes[i + 1:]
              if same_species is None or same_species[a] != same_species[b]]
    return float(np.mean(values))


def _ch_fixed_df(X, y, n_classes):
    """Calinski-Harabasz of the expanded resample with the data's degrees of freedom (``n_classes`` taxa)."""
    N, C = len(y), len(np.unique(y))
    return calinski_harabasz_score(X, y) * (C - 1) / (N - C) * (N - n_classes) / (n_classes - 1)


# ------------------------------------------------------------------ weighted = expanded resample
@pytest.mark.parametrize("metric", ["cosine", "euclidean"])
def test_weighted_statistics_equal_the_expanded_resample(metric, monkeypatch):
    table = pd.read_csv(builtin_taxonomy_path())
    table.loc[table["genus"] == "Passer", "family"] = ""  # an unnamed family: its species are left out there
    data = _data(per_species=3, dim=24, seed=5, taxonomy=Taxonomy.from_table(table))
    sums = ClusterSums(data, metric, np.argsort(data.species, kind="stable"))
    G = _geometry(data.X, metric)
    observed = {**sums.species_stats(None, list(range(6))), **sums.species_rank_stats()}
    rng = np.random.default_rng(7)
    for r in range(7):
        species, starts = sums.rank_species(r)
        n = len(species)
        ones = np.ones((1, n))
        np.testing.assert_allclose(sums.boot_ch_cdnv(r, ones)[0],
                                   [observed[(r, "calinski_harabasz")], observed[(r, "cdnv")]], rtol=1e-10)
        assert sums.boot_nc1(r, ones)[0] == pytest.approx(observed[(r, "nc1")], rel=1e-9)
        # Many resamples in small chunks (bounded memory) give the values of one resample at a time.
        many = np.vstack([np.bincount(rng.integers(0, n, n), minlength=n) for _ in range(5)]).astype(float)
        one_at_a_time = (np.vstack([sums.boot_ch_cdnv(r, w[None]) for w in many]),
                         [sums.boot_nc1(r, w[None])[0] for w in many])
        T, d = len(starts), sums.sums.shape[1]
        for block in (1, 2 * max(n * d, T * T), 2 * max(n * d, T * max(T, d), d * d)):  # chunks of 1 or 2
            with monkeypatch.context() as m:
                m.setattr(clusters, "BLOCK_ELEMENTS", block)
                np.testing.assert_allclose(sums.boot_ch_cdnv(r, many), one_at_a_time[0], rtol=1e-12)
                np.testing.assert_allclose(sums.boot_nc1(r, many), one_at_a_time[1], rtol=1e-12)
        draws = rng.integers(0, n, n)
        w = np.bincount(draws, minlength=n).astype(float)[None]
        rows, labels, copies = _expand(data, species, draws, r)
        X = G[rows]
        same = species[draws] if r == 6 else None
        ch, cdnv = sums.boot_ch_cdnv(r, w)[0]
        assert ch == pytest.approx(_ch_fixed_df(X, labels, len(starts)), rel=1e-9), r
        assert cdnv == pytest.approx(_cdnv(X, labels, same), rel=1e-9), r
        assert sums.boot_nc1(r, w)[0] == pytest.approx(_nc1(X, labels), rel=1e-7), r
        # NC1 without per-species second moments (large S d^2): the same numbers.
        monkeypatch.setattr(clusters, "NC1_GRAM_ELEMENTS", 0)
        assert sums.boot_nc1(r, w)[0] == pytest.approx(_nc1(X, labels), rel=1e-7), r
        monkeypatch.setattr(clusters, "NC1_GRAM_ELEMENTS", 1 << 24)
    assert len(sums.rank_species(4)[0]) < data.n_species  # the unnamed family's species are not units there


def test_ch_and_silhouette_cis_equal_a_hand_written_species_bootstrap():
    data = _data(signal=1.0, per_species=3, dim=16, seed=2)
    n_boot, seed = 40, 3
    result = probe_clusters(data, ProbeOptions(distance="euclidean", permutations=0, seed=seed,
                                               extra={"clusters": {"n_boot": n_boot}}))
    frame = result.to_frame()
    X = data.X.astype(np.float64)
    S = data.n_species
    species = np.arange(S)
    for r, name in ((3, "order"), (6, "species")):
        n_taxa = len(np.unique(data.codes[:, r]))
        ch, sil = [], []
        for draws in bootstrap_indices(S, n_boot, seed):  # the resamples of latent.stats.cluster_ci
            rows, labels, _ = _expand(data, species, draws, r)
            ch.append(_ch_fixed_df(X[rows], labels, n_taxa))
            # The silhouette keeps each image's a(i), b(i) from the data; the resample picks whose s(i) count.
            s = silhouette_samples(X, data.codes[data.species, r], metric="euclidean")
            sil.append(s[rows].mean())
        row = _row(frame, "calinski_harabasz", name)
        assert row["n_species"] == S and row["n_taxa"] == n_taxa
        low, high = np.quantile(ch, [0.025, 0.975])
        if low <= row["value"] <= high:
            assert row["ci_note"] == ""
            np.testing.assert_allclose([row["ci_low"], row["ci_high"]], [low, high], rtol=1e-9)
        else:  # the bootstrap is biased there (F-type ratios inflate): no CI, and the note gives the range
            assert np.isnan(row["ci_low"]) and f"{low:.4g} to {high:.4g}" in row["ci_note"]
            assert name == "order"  # (here: within-taxon spread shrinks with duplicated species)
        row = _row(frame, "silhouette", name)
        assert row["ci_note"] == ""
        np.testing.assert_allclose([row["ci_low"], row["ci_high"]], np.quantile(sil, [0.025, 0.975]), rtol=1e-9)
    assert _row(frame, "calinski_harabasz", "species")["ci_note"] == ""
    assert result.info["n_boot"] == n_boot and result.info["n_boot_nc1_cdnv"] == n_boot


def test_cis_cover_the_value_on_planted_data():
    data = _data(signal=1.0, per_species=20, dim=64, seed=0)  # make_hierarchical's defaults
    frame = probe_clusters(data, ProbeOptions(permutations=0, seed=0)).to_frame()
    assert len(frame) == 28 and (frame["n_species"] == 47).all()
    covered = (frame["ci_low"] <= frame["value"]) & (frame["value"] <= frame["ci_high"])
    has_ci = np.isfinite(frame["ci_low"]) & np.isfinite(frame["ci_high"])
    # Every CI given covers its value; a row without one says why.
    assert (covered == has_ci).all()
    assert frame.loc[~has_ci, "ci_note"].str.startswith("no CI: the species bootstrap is biased").all()
    for metric in ("silhouette", "calinski_harabasz"):  # the supporting statistics always get one here
        assert has_ci[frame["metric"] == metric].all(), metric
    assert has_ci[frame["metric"] == "cdnv"].sum() >= 5
    width = frame["ci_high"] - frame["ci_low"]
    assert (width[has_ci] > 0).all()


def test_no_ci_below_ten_species_and_counts_per_rank():
    # 12 species: 3 orders of 2 genera of 2 species; the family of the third order left empty.
    lineages = []
    for i in range(12):
        family = "" if i >= 8 else f"F{i // 4}"
        lineages.append(["Animalia", "Chordata", "Aves", f"O{i // 4}", family, f"G{i // 2}", f"G{i // 2} s{i}"])
    rows = [lin for lin in lineages for _ in range(4)]
    X = np.random.default_rng(0).standard_normal((len(rows), 8)).astype(np.float32)
    data = ProbeData.from_arrays(X, Taxonomy.from_lineages(rows))
    frame = probe_clusters(data, ProbeOptions(permutations=9, extra={"clusters": {"n_boot": 50}})).to_frame()
    family = frame[frame["rank"] == "family"]
    assert (family["n_species"] == 8).all() and (family["n_taxa"] == 2).all()
    assert family["ci_low"].isna().all() and (family["ci_note"] == f"no CI: 8 species (< {MIN_CLUSTERS})").all()
    genus = frame[frame["rank"] == "genus"]
    assert (genus["n_species"] == 12).all() and (genus["n_taxa"] == 6).all()
    assert not genus["ci_note"].str.contains("species \\(<").any()
    assert np.isfinite(_row(frame, "silhouette", "genus")["ci_low"])
    nine = ProbeData.from_arrays(X[:36], Taxonomy.from_lineages(rows[:36]))
    small = probe_clusters(nine, ProbeOptions(permutations=9)).to_frame()
    assert small["ci_low"].isna().all() and small["ci_high"].isna().all()
    assert small["ci_note"].str.fullmatch(r"no CI: \d species \(< 10\)").all()


# ------------------------------------------------------------------------- ties and degenerate input
def _genus_tree():
    """2 classes x 2 orders x 2 families x 2 genera x 3 species."""
    return [["Animalia", "Chordata", f"C{c}", f"O{c}{o}", f"F{c}{o}{f}", f"G{c}{o}{f}{g}", f"G{c}{o}{f}{g} s{s}"]
            for c in range(2) for o in range(2) for f in range(2) for g in range(2) for s in range(3)]


def _tied_data(kind, seed=0, per_species=4, dim=8):
    rows = [lin for lin in _genus_tree() for _ in range(per_species)]
    rng = np.random.default_rng(seed)
    if kind == "identical":
        X = np.tile(rng.standard_normal(dim) + 3.0, (len(rows), 1))
    else:  # one distinct point per genus: the species of a genus are identical
        points = {}
        X = np.array([points.setdefault(r[5], rng.standard_normal(dim)) for r in rows])
    return ProbeData.from_arrays(X.astype(np.float32), Taxonomy.from_lineages(rows)), rows, X.astype(np.float32)


@pytest.mark.parametrize("metric", ["cosine", "euclidean"])
def test_identical_vectors_give_no_statistic_and_no_test(metric):
    data, _, _ = _tied_data("identical")
    result = probe_clusters(data, ProbeOptions(distance=metric, permutations=19, extra={"clusters": {"n_boot": 50}}))
    frame = result.to_frame()
    assert set(frame["rank"]) == {"class", "order", "family", "genus", "species"} and len(frame) == 20
    assert frame["value"].isna().all() and frame["p_value"].isna().all() and (frame["permutations"] == 0).all()
    assert frame["ci_low"].isna().all() and frame["note"].str.startswith("all images identical").all()
    assert frame["z"].isna().all() and len(result.tables["null"]) == 0 and result.info["identical"]


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_one_point_per_genus_shows_no_species_separation(seed):
    data, rows, X = _tied_data("genus", seed=seed)
    options = ProbeOptions(distance="euclidean" if seed % 2 else "cosine", permutations=19, seed=seed,
                           extra={"clusters": {"n_boot": 50}})
    frame = probe_clusters(data, options).to_frame()
    # Species of one genus coincide: no separation at species (s = 0 for every image, a = b = 0), and
    # the statistics that divide by a within-taxon or between-taxa dispersion of 0 are undefined.
    species = {m: _row(frame, m, "species") for m in METRICS}
    assert species["silhouette"]["value"] == 0.0
    assert np.isnan(species["calinski_harabasz"]["value"]) and "within-taxon dispersion 0" in species[
        "calinski_harabasz"]["note"]
    assert np.isnan(species["cdnv"]["value"]) and "same mean" in species["cdnv"]["note"]
    for row in species.values():  # no evidence claimed at species: no p-value at all
        assert np.isnan(row["p_value"]) and row["permutations"] == 0
    genus = {m: _row(frame, m, "genus") for m in METRICS}
    assert genus["silhouette"]["value"] == 1.0 and genus["nc1"]["value"] == 0.0 and genus["cdnv"]["value"] == 0.0
    assert np.isnan(genus["calinski_harabasz"]["value"]) and np.isnan(genus["calinski_harabasz"]["p_value"])
    assert genus["silhouette"]["p_value"] == pytest.approx(1 / 20)  # genera are real: the smallest p
    # A row never has a p-value without a value.
    assert frame.loc[frame["value"].isna(), "p_value"].isna().all()
    # Ties are not broken by row order: the same images in another order give the same rows.
    order = np.random.default_rng(seed).permutation(len(rows))
    shuffled = ProbeData.from_arrays(X[order], Taxonomy.from_lineages([rows[i] for i in order]))
    again = probe_clusters(shuffled, options).to_frame()
    pd.testing.assert_series_equal(frame["p_value"], again["p_value"])
    pd.testing.assert_series_equal(frame["note"], again["note"])
    np.testing.assert_allclose(frame["value"], again["value"], rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(frame[["ci_low", "ci_high"]], again[["ci_low", "ci_high"]], rtol=1e-9, atol=1e-12)
