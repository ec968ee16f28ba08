"""The seen_unseen probe: structure planted only among the species listed as seen is found there and not among
the others (3 seeds); the split follows the training list's matching rules; a missing list is refused."""

from __future__ import annotations

import json

import numpy as np
import pytest

import latent
from latent.errors import InputError
from latent.probes.levels import METRIC
from latent.synthetic import make_hierarchical
from latent.verdict import ALPHA


def _planted_for_seen(seed: int, tmp_path):
    data = make_hierarchical(per_species=4, dim=16, signal=1.5, seed=seed)
    names = np.asarray(data.taxonomy.labels("species"))
    species = sorted(set(names))
    seen = set(species[::2])
    X = data.embeddings.copy()
    unseen_rows = ~np.isin(names, sorted(seen))
    X[unseen_rows] = np.random.default_rng(seed + 100).normal(size=(int(unseen_rows.sum()), X.shape[1]))
    path = tmp_path / f"seen{seed}.json"
    path.write_text(json.dumps({s.replace(" ", "_").upper(): ["img.jpg"] for s in seen}))  # matched case-insensitively
    return X, data.taxonomy, path, len(seen), len(species) - len(seen)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_structure_of_the_seen_species_only_is_found_there_only(seed, tmp_path):
    X, tax, path, n_seen, n_unseen = _planted_for_seen(seed, tmp_path)
    pr = latent.run_probes(X, tax, probes="seen_unseen", permutations=99, seed=seed,
                           settings={"seen_unseen": {"seen": str(path)}})
    rows = pr.metrics
    (notes,) = [v for k, v in pr.info["probe_info"].items() if k.startswith("seen_unseen")]
    assert notes["seen_species"] == n_seen and notes["unseen_species"] == n_unseen
    assert notes["matched_as"] == {"case-insensitive": n_seen, "": n_unseen}
    at = rows[(rows["metric"] == METRIC) & (rows["rank"] == "species")].set_index("group")
    assert at.loc["seen", "p_value"] <= ALPHA and at.loc["seen", "value"] < 1
    assert at.loc["unseen", "p_value"] > ALPHA
    diff = rows[(rows["metric"] == "unseen_minus_seen") & (rows["rank"] == "species")]
    assert len(diff) == 1 and diff["value"].iloc[0] > 0


def test_needs_the_training_list():
    data = make_hierarchical(per_species=2, dim=8, seed=0)
    with pytest.raises(InputError, match="'seen'"):
        latent.run_probes(data.embeddings, data.taxonomy, probes="seen_unseen", permutations=9)
