"""Permutations: asked for, used, and said. A null that uses fewer permutations than asked (the expensive
silhouette/NC1 and separability nulls) says so in its rows, on the console and in the report."""

from __future__ import annotations

import latent
from latent.probes.common import permutations_used
from latent.synthetic import make_hierarchical


def test_console_says_which_nulls_used_fewer_than_asked():
    d = make_hierarchical(per_species=4, dim=8, signal=1.0, seed=0)
    probes = latent.run_probes(d.embeddings, d.taxonomy, probes="clusters,separability", permutations=999,
                               settings={"separability": {"permutations": 3, "grid": [1.0], "n_boot": 20},
                                         "clusters": {"n_boot": 0}})
    rows = probes.metrics
    assert set(rows.loc[rows["probe"] == "separability", "permutations"].dropna()) <= {0, 3}
    sil = rows[(rows["probe"] == "clusters") & (rows["metric"] == "silhouette") & (rows["rank"] != "species")]
    assert set(sil["permutations"]) == {199}  # the silhouette null's cap, in the row
    line = probes.summary().splitlines()[-1]
    assert line.startswith("  permutations used: clusters 199/999, separability 3 (asked 999;"), line


def test_nothing_said_when_every_null_used_what_was_asked():
    d = make_hierarchical(per_species=4, dim=8, signal=1.0, seed=0)
    probes = latent.run_probes(d.embeddings, d.taxonomy, probes="alignment", permutations=19,
                               settings={"alignment": {"n_boot": 20, "n_boot_rank": 20}})
    assert permutations_used(probes.metrics, 19) == "alignment 19"
    assert permutations_used(probes.metrics.iloc[0:0], 19) == ""
