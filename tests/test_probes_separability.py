"""Separability probe: planted hierarchy is separable beyond its null; no hierarchy, no separability."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from latent.errors import InputError
from latent.probes.base import ProbeData, ProbeOptions
from latent.probes.separability import probe_separability
from latent.synthetic import make_hierarchical

FAST = {"separability": {"permutations": 4, "n_boot": 200, "grid": [1e-2, 1, 1e2], "max_iter": 100}}


def data(signal: float, seed: int = 0, noise: float = 1.0) -> ProbeData:
    d = make_hierarchical(per_species=8, dim=16, signal=signal, noise=noise, seed=seed)
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
        # groups of species give nothing to generalise from.
        d = row(rows, rank, "species-disjoint")
        assert d["value"] > 0.6 and d["value"] > d["null_mean"] + 0.5, rank
        assert d["p_value"] == pytest.approx(1 / 5), rank
    # species: no null under a random split (a permutation only renames species); not scored species-disjoint
    sp = row(rows, "species", "random")
    assert np.isnan(sp["null_mean"]) and sp["permutations"] == 0
    assert rows[(rows["rank"] == "species") & (rows["split"] == "species-disjoint")].empty
    null = res.tables["null"]
    assert set(null.columns) >= {"rank", "metric", "permutation", "value", "split"}
    genus = null[(null["rank"] == "genus") & (null["split"] == "random")]["value"]
    assert len(genus) == 4 and genus.mean() == pytest.approx(row(rows, "genus", "random")["null_mean"])


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


def test_bad_split_setting():
    with pytest.raises(InputError, match="splits"):
        probe_separability(data(1.0), ProbeOptions(extra={"separability": {"splits": ["kfold"]}}))
