"""Separability probe: planted hierarchy is separable beyond its null; no hierarchy, no separability.

Also: the species-disjoint null redraws the split under each permuted tree (so it sits at the
no-information level, not below it), the observed and null values come from one procedure, rows say
how many test species and taxa a score rests on, and CIs resample species.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

import latent.probes.separability as sep
from latent.errors import InputError
from latent.probes.base import ProbeData, ProbeOptions, species_permutations
from latent.probes.separability import _masked_codes, _species_ci, _split, probe_separability
from latent.ranks import Rank
from latent.splits import species_disjoint_split
from latent.stats import MIN_CLUSTERS
from latent.synthetic import make_hierarchical
from latent.taxonomy import Taxonomy

FAST = {"separability": {"permutations": 4, "n_boot": 200, "grid": [1e-2, 1, 1e2], "max_iter": 100}}


def data(signal: float, seed: int = 0, noise: float = 1.0) -> ProbeData:
    d = make_hierarchical(per_species=8, dim=16, signal=signal, noise=noise, seed=seed)
    return ProbeData.from_arrays(d.embeddings, d.taxonomy, d.ids)


def pairs_data(signal: float, seed: int, genera: int = 4) -> ProbeData:
    """``genera`` genera of two species each in two families: with test_fraction 0.5 one species of every
    genus is held out, so the test species' genus is trained only through its one sister species."""
    rows = [["Animalia", "Chordata", "Aves", "Ord", f"Fam{g % 2}", f"Gen{g}", f"Gen{g} sp{s}"]
            for g in range(genera) for s in range(2)]
    d = make_hierarchical(Taxonomy.from_lineages(rows), per_species=10, dim=8, signal=signal, seed=seed)
    return ProbeData.from_arrays(d.embeddings, d.taxonomy, d.ids)


def row(frame: pd.DataFrame, rank: str, split: str) -> pd.Series:
    rows = frame[(frame["rank"] == rank) & (frame["split"] == split) & (frame["metric"] == "linear_accuracy")]
    assert len(rows) == 1, (rank, split)
    return rows.iloc[0]


def test_planted_hierarchy_separable_beyond_null():
    res = probe_separability(data(3.0, noise=0.5), ProbeOptions(seed=1, device="cpu", extra=FAST))
    rows = res.to_frame()
    for rank in ("phylum", "class", "order", "family", "genus"):
        r = row(rows, rank, "random")
        assert r["value"] > 0.95, rank
        assert r["ci_low"] <= r["value"] <= r["ci_high"]
        # Seen species: random groups of tight species clusters are often separable too (Cover), so the
        # random-split null is high at fine ranks; it can only be matched, never beaten by chance.
        assert r["value"] >= r["null_mean"] and r["permutations"] == 4, rank
        # Unseen species fall in the right genus, family, ... only when the hierarchy is planted; random
        # groups of species give nothing to generalise from. (Species alone in their genus are held out at
        # family and above, where their unseen genus makes the task harder: well above null and chance.)
        d = row(rows, rank, "species-disjoint")
        assert d["value"] > max(d["null_mean"], d["chance"]) + 0.3, rank
        assert d["p_value"] == pytest.approx(1 / 5), rank
    # species: no null under a random split (a permutation only renames species); not scored species-disjoint
    sp = row(rows, "species", "random")
    assert np.isnan(sp["null_mean"]) and sp["permutations"] == 0
    assert rows[(rows["rank"] == "species") & (rows["split"] == "species-disjoint")].empty
    null = res.tables["null"]
    assert set(null.columns) >= {"rank", "metric", "permutation", "value", "split"}
    genus = null[(null["rank"] == "genus") & (null["split"] == "random")]["value"]
    assert len(genus) == 4 and genus.mean() == pytest.approx(row(rows, "genus", "random")["null_mean"])
    assert set(rows["C_rule"]) == {"observed"} and (rows["C"] > 0).all()


def test_chance_column_is_majority_share():
    res = probe_separability(data(1.0), ProbeOptions(seed=0, device="cpu",
                                                      extra={"separability": {**FAST["separability"], "permutations": 0,
                                                                               "splits": "random"}}))
    rows = res.to_frame()
    # built-in taxonomy: 4 kingdoms; the test images of the random split keep the species proportions
    from latent.splits import random_split

    d = data(1.0)
    _, test = random_split(d.taxonomy, test_fraction=0.3, seed=0)
    kingdoms = d.codes[d.species[test], 0]
    assert row(rows, "kingdom", "random")["chance"] == pytest.approx(np.bincount(kingdoms).max() / len(test))
    assert row(rows, "kingdom", "random")["n"] == len(test)
    assert set(rows["split"]) == {"random"}


def test_no_hierarchy_no_generalisation_to_unseen_species():
    # signal 0: species-disjoint accuracy at genus and above is near the null (no taxonomy to learn)
    diffs = []
    for seed in range(3):
        res = probe_separability(data(0.0, seed=seed), ProbeOptions(seed=seed, device="cpu", extra={
            "separability": {**FAST["separability"], "splits": ["species-disjoint"]}}))
        rows = res.to_frame()
        for rank in ("order", "family", "genus"):
            r = row(rows, rank, "species-disjoint")
            diffs.append(r["value"] - r["null_mean"])
    assert abs(np.mean(diffs)) < 0.1, diffs


def test_species_disjoint_null_sits_at_chance_without_structure_and_below_planted_structure():
    # Two species per genus, one held out: each test species' genus is trained through one sister
    # species, so with no structure the accuracy at genus is ~1/4 (4 genera) and at family ~1/2. The
    # null redraws the split on the permuted tree, so its test species have a trained sister too and
    # the null mean sits there as well. (Reusing the observed split under permuted labels left ~3/7 of
    # the genus test species with a label never trained: a null mean of ~0.08 against an observed ~0.26
    # on these very data, and p = 0.05 with no structure at all.)
    settings = {"splits": ["species-disjoint"], "permutations": 19, "n_boot": 0, "test_fraction": 0.5}
    observed, nulls = {"genus": [], "family": []}, {"genus": [], "family": []}
    for seed in range(6):
        rows = probe_separability(pairs_data(0.0, seed), ProbeOptions(seed=seed, device="cpu", extra={
            "separability": settings})).to_frame()
        for rank, chance in (("genus", 0.25), ("family", 0.5)):
            r = row(rows, rank, "species-disjoint")
            assert abs(r["null_mean"] - chance) < 0.08, (seed, rank, r["null_mean"])
            observed[rank].append(r["value"])
            nulls[rank].append(r["null_mean"])
    for rank in ("genus", "family"):
        assert abs(np.mean(observed[rank]) - np.mean(nulls[rank])) < 0.08, (rank, observed[rank], nulls[rank])
    # planted structure: the observed value is above the null
    for seed in range(3):
        rows = probe_separability(pairs_data(2.0, seed), ProbeOptions(seed=seed, device="cpu", extra={
            "separability": settings})).to_frame()
        for rank in ("genus", "family"):
            r = row(rows, rank, "species-disjoint")
            assert r["value"] > r["null_mean"] + 0.2, (seed, rank)


def test_one_split_rule_for_the_observed_and_the_permuted_tree():
    d = pairs_data(1.0, 0, genera=6)
    for seed in range(3):
        train, test = _split(d, "species-disjoint", d.codes, seed, 0.3)
        expected = species_disjoint_split(d.taxonomy, test_fraction=0.3, seed=seed)
        np.testing.assert_array_equal(train, expected[0])
        np.testing.assert_array_equal(test, expected[1])
    n_test = len(np.unique(d.species[test]))
    for perm in species_permutations(d.n_species, 5, seed=2):
        codes = d.permuted_codes(perm)
        train_p, test_p = _split(d, "species-disjoint", codes, 2, 0.3)
        Y = _masked_codes(d, codes, d.permuted_named(perm))
        assert len(np.unique(d.species[test_p])) == n_test
        assert not set(d.species[train_p]) & set(d.species[test_p])
        for r in (Rank.GENUS, Rank.FAMILY, Rank.ORDER):  # every test image's permuted label is trained
            assert set(Y[test_p, r]) <= set(Y[train_p, r]), r
    # the random split does not depend on the codes
    a = _split(d, "random", d.codes, 0, 0.3)
    b = _split(d, "random", d.permuted_codes(np.roll(np.arange(d.n_species), 1)), 0, 0.3)
    assert all(np.array_equal(x, y) for x, y in zip(a, b))


@pytest.mark.parametrize("rule", ["observed", "sweep", 3.0])
def test_observed_and_null_are_one_procedure(monkeypatch, rule):
    # With identity "permutations" every null value must equal the observed value exactly: the observed
    # statistic is the null statistic at the true taxonomy (same split rule, same C, same fit).
    monkeypatch.setattr(sep, "species_permutations", lambda n, k, seed=0: (np.arange(n) for _ in range(k)))
    res = probe_separability(pairs_data(1.0, 0, genera=6), ProbeOptions(seed=0, device="cpu", extra={
        "separability": {"permutations": 2, "n_boot": 0, "grid": [1e-1, 1e1], "C": rule}}))
    rows = res.to_frame()
    tested = rows[rows["permutations"] > 0]
    assert len(tested) >= 4
    np.testing.assert_allclose(tested["null_mean"], tested["value"], atol=1e-12)
    assert (tested["null_std"] == 0).all() and (tested["p_value"] == 1).all()
    assert set(rows["C_rule"]) == {str(float(rule)) if isinstance(rule, float) else rule}
    if isinstance(rule, float):
        assert (rows["C"] == rule).all()


def test_rows_count_test_species_and_taxa():
    d = data(1.0)
    res = probe_separability(d, ProbeOptions(seed=0, device="cpu", extra={
        "separability": {**FAST["separability"], "permutations": 0}}))
    rows = res.to_frame()
    Y = _masked_codes(d, d.codes, d.named)
    for split in ("random", "species-disjoint"):
        train, test = _split(d, split, d.codes, 0, 0.3)
        for r in rows[rows["split"] == split].itertuples():
            ri = Rank[r.rank.upper()]
            labelled = test[Y[test, ri] >= 0]
            # the coverage rule: scored where the test image's taxon at the rank has a training image
            scored = labelled[np.isin(Y[labelled, ri], Y[train, ri])]
            assert r.n == r.n_units == len(scored) and r.unit == "image"
            assert r.n_test_unscored == len(labelled) - len(scored)
            assert (r.coverage == "") == (len(labelled) == len(scored))
            assert r.n_species == len(np.unique(d.species[scored])), (split, r.rank)
            assert r.n_taxa == len(np.unique(Y[scored, ri])), (split, r.rank)
            if r.n_species < MIN_CLUSTERS:
                assert np.isnan(r.ci_low) and np.isnan(r.ci_high) and "no CI" in r.ci_note
            else:
                assert r.ci_low <= r.value <= r.ci_high and r.ci_note == ""
    # random split: every species has test images (47 in the built-in taxonomy)
    assert (rows[(rows["split"] == "random") & (rows["rank"] == "species")]["n_species"] == 47).all()
    # the built-in taxonomy has few genera of several species (30 of 38 genera have one): held out at every
    # rank, species are scored at kingdom on more species than at genus, where only those with a congener count
    disjoint = rows[rows["split"] == "species-disjoint"].set_index("rank")
    assert disjoint.loc["kingdom", "n_species"] > disjoint.loc["genus", "n_species"]
    assert disjoint.loc["genus", "n_test_unscored"] > 0 and disjoint.loc["kingdom", "n_test_unscored"] == 0


def test_species_ci_needs_ten_species():
    # two test species with accuracies 14/15 = 0.93 and 6/15 = 0.40: an image bootstrap would give a
    # narrow interval around 0.67; two species give no CI at all
    correct = np.r_[np.ones(14), 0, np.ones(6), np.zeros(9)]
    species = np.repeat([3, 7], 15)
    low, high, note = _species_ci(correct, species, n_boot=500, seed=0)
    assert np.isnan(low) and np.isnan(high)
    assert note == f"no CI: 2 species (< {MIN_CLUSTERS})"


def test_species_ci_is_a_species_bootstrap():
    rng = np.random.default_rng(5)
    k, n_boot, seed = 12, 400, 3
    sizes = rng.integers(2, 9, size=k)
    rates = rng.uniform(0.2, 1.0, size=k)
    codes = np.sort(rng.choice(100, size=k, replace=False))  # any species codes; units in sorted order
    species = np.repeat(codes, sizes)
    correct = np.concatenate([(rng.random(n) < p).astype(float) for n, p in zip(sizes, rates)])
    order = rng.permutation(len(species))  # image order does not matter
    low, high, note = _species_ci(correct[order], species[order], n_boot=n_boot, seed=seed)
    # by hand: draw k species with replacement, pool their images
    hits = np.array([correct[species == c].sum() for c in codes])
    draws = np.random.default_rng(seed).integers(0, k, size=(n_boot, k))
    accuracy = hits[draws].sum(axis=1) / sizes[draws].sum(axis=1)
    expected = np.quantile(accuracy, [0.025, 0.975])
    assert note == ""
    np.testing.assert_allclose([low, high], expected, rtol=1e-12)


def test_default_permutations_follow_the_options():
    # no probe setting: the null has min(options.permutations, separability.default_permutations(...))
    # permutations (99 on small data, so it can reach p <= 0.01; tests/test_probes_speed.py for the rule)
    res = probe_separability(pairs_data(1.0, 0), ProbeOptions(seed=0, permutations=7, device="cpu", extra={
        "separability": {"splits": ["species-disjoint"], "n_boot": 0, "grid": [1.0]}}))
    rows = res.to_frame()
    assert (rows["permutations"] == 7).all() and res.info["permutations"] == 7
    assert len(res.tables["null"]) == 7 * len(rows)
    assert res.info["fits"] == len(rows) * 8 and res.info["fits_not_converged"] == 0


def test_bad_settings():
    with pytest.raises(InputError, match="splits"):
        probe_separability(data(1.0), ProbeOptions(extra={"separability": {"splits": ["kfold"]}}))
    with pytest.raises(InputError, match="'C' setting"):
        probe_separability(data(1.0), ProbeOptions(extra={"separability": {"C": "best"}}))
    with pytest.raises(InputError, match="'test_fraction' setting"):
        probe_separability(data(1.0), ProbeOptions(extra={"separability": {"test_fraction": 1.5}}))
    with pytest.raises(InputError, match="'max_iter' setting"):
        probe_separability(data(1.0), ProbeOptions(extra={"separability": {"C": 1.0, "max_iter": 0}}))
