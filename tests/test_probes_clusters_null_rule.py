"""The clusters probe's work-limited defaults (issue 13, item 4): the NC1 null and the NC1 bootstrap use
the one rule of the separability null (:func:`latent.probes.common.default_permutations`).

- The rule itself: a cap, fewer when one permutation's work exceeds the budget, never below the floor,
  never more than asked.
- Small data keeps every number: the default run equals the run with the old defaults set explicitly
  (199 permutations, 200 NC1 resamples), row for row.
- Large data (a budget below three permutations' work) gets 19 permutations and 50 NC1 resamples, stated
  in the ``permutations`` column and ``info``; explicit settings are used as given.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

import latent.probes.clusters as cl
from latent.probes.base import ProbeData, ProbeOptions
from latent.probes.common import MIN_PERMUTATIONS, default_permutations
from latent.synthetic import make_hierarchical
from latent.taxonomy import Taxonomy


def small_data() -> ProbeData:
    rows = [["Animalia", "Chordata", f"Cls{g // 2 % 2}", f"Ord{g // 2 % 2}", f"Fam{g // 2}", f"Gen{g}", f"Gen{g} sp{s}"]
            for g in range(6) for s in range(3)]
    d = make_hierarchical(Taxonomy.from_lineages(rows), per_species=4, dim=8, signal=1.0, seed=3)
    return ProbeData.from_arrays(d.embeddings, d.taxonomy, d.ids)


def run(data: ProbeData, **settings) -> "cl.ProbeResult":
    return cl.probe_clusters(data, ProbeOptions(seed=0, permutations=199, device="cpu",
                                                extra={"clusters": {"n_boot": 300, **settings}}))


def test_default_permutations_rule():
    assert default_permutations(999, 1.0, cap=199, budget=1e10) == 199
    assert default_permutations(150, 1.0, cap=199, budget=1e10) == 150  # never more than asked
    assert default_permutations(999, 1e10 / 40, cap=199, budget=1e10) == 40
    assert default_permutations(999, 1e12, cap=199, budget=1e10) == MIN_PERMUTATIONS == 19
    assert default_permutations(7, 1e12, cap=199, budget=1e10) == 7
    assert default_permutations(200, 1e12, cap=200, budget=1e10, floor=50) == 50
    assert default_permutations(30, 1e12, cap=30, budget=1e10, floor=50) == 30


def test_expensive_work_counts_svds_and_silhouette_sums():
    data = small_data()
    res = run(data, permutations=0, n_boot=0)
    sums = cl.ClusterSums(data, "cosine", res.arrays["silhouette_rows"])
    taxa = {0: 1, 1: 1, 2: 2, 3: 2, 4: 3, 5: 6}
    ranks = [2, 3, 4, 5]
    expected = sum(taxa[r] * 8 * min(taxa[r], 8) for r in ranks)
    assert cl.expensive_work(sums, ranks) == expected


def test_small_data_numbers_unchanged_by_the_rule():
    data = small_data()
    default = run(data)
    explicit = run(data, permutations=199, n_boot_expensive=200)
    assert default.info["permutations_silhouette_nc1"] == default.info["permutations_nc1"] == 199
    assert default.info["n_boot_nc1"] == 200
    pd.testing.assert_frame_equal(default.to_frame(), explicit.to_frame())
    pd.testing.assert_frame_equal(default.tables["null"], explicit.tables["null"])
    nc1 = default.to_frame().query("metric == 'nc1' and rank != 'species'")
    assert len(nc1) and (nc1["permutations"] == 199).all()


def test_large_data_gets_the_stated_smaller_defaults_and_settings_are_honoured(monkeypatch):
    data = small_data()
    sums = cl.ClusterSums(data, "cosine", run(data, permutations=0, n_boot=0).arrays["silhouette_rows"])
    # a budget below three permutations' work: the data is "large"
    monkeypatch.setattr(cl, "NULL_WORK", cl.expensive_work(sums, [2, 3, 4, 5]) * 3)
    res = run(data)
    rows = res.to_frame().query("rank != 'species'")
    assert res.info["permutations_nc1"] == 19 and res.info["n_boot_nc1"] == cl.MIN_BOOT_NC1 == 50
    assert res.info["permutations_silhouette_nc1"] == 199  # the silhouette's null keeps its default
    assert (rows.query("metric == 'nc1'")["permutations"] == 19).all()
    assert (rows.query("metric not in ('nc1', 'cdnv')")["permutations"] == 199).all()
    # CDNV's null follows the same rule with its own work (every pair of taxa per permutation)
    expected = cl.default_permutations(res.info["permutations"], cl.cdnv_work(sums, [2, 3, 4, 5]),
                                       cap=res.info["permutations"], budget=cl.NULL_WORK)
    assert res.info["permutations_cdnv"] == expected
    assert (rows.query("metric == 'cdnv'")["permutations"] == expected).all()
    # the 19 are the first of the same seeded sequence: the same null values as the full run's first 19
    full = run(data, permutations=199).tables["null"]
    small = res.tables["null"]
    for metric in ("nc1",):
        a = small.query("metric == @metric").groupby("rank")["value"].apply(list)
        b = full.query("metric == @metric").groupby("rank")["value"].apply(lambda v: list(v)[:19])
        for rank in a.index:
            np.testing.assert_array_equal(a[rank], b[rank])
    # explicit settings are used as given
    res = run(data, permutations=25, n_boot_expensive=30)
    assert res.info["permutations_silhouette_nc1"] == res.info["permutations_nc1"] == 25
    assert res.info["n_boot_nc1"] == 30
    assert (res.to_frame().query("metric == 'nc1' and rank != 'species'")["permutations"] == 25).all()


def test_bad_permutations_setting_is_refused():
    with pytest.raises(Exception, match="'permutations' setting of the clusters probe"):
        run(small_data(), permutations=-1)


def test_an_nc1_bootstrap_beyond_its_limit_is_left_out_and_said(monkeypatch):
    # Where even the floor of NC1's species bootstrap would take far longer than the probe (its resamples
    # recompute the within-class variance from the images), NC1 has no CI and ci_note says why; the other
    # statistics keep theirs, and n_boot_expensive set by hand runs it.
    data = small_data()
    monkeypatch.setattr(cl, "NC1_BOOT_LIMIT", 1.0)
    res = run(data)
    rows = res.to_frame()
    nc1 = rows.query("metric == 'nc1'")
    with_units = nc1[nc1["n_species"] >= 10]
    assert len(with_units) and with_units["ci_low"].isna().all()
    assert with_units["ci_note"].str.startswith("no CI: NC1's species bootstrap would take").all()
    assert res.info["n_boot_nc1"] == 0
    ch = rows.query("metric == 'calinski_harabasz' and n_species >= 10")
    assert ch["ci_low"].notna().any()
    forced = run(data, n_boot_expensive=30)
    assert forced.info["n_boot_nc1"] == 30
    assert not forced.to_frame()["ci_note"].fillna("").str.contains("NC1's species bootstrap").any()
