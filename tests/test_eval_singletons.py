"""Species with one image in a random split: in training only, and said so (run.json, species rows)."""

from __future__ import annotations

import numpy as np

import latent
from latent.synthetic import make_hierarchical


def test_single_image_species_are_train_only_and_said(tmp_path):
    data = make_hierarchical(per_species=4, dim=16, signal=1.0, seed=0)
    species = data.taxonomy.row_codes[:, 6]
    singles = np.unique(species)[::3]  # every third species keeps one image
    keep = np.ones(len(species), bool)
    for s in singles:
        keep[np.flatnonzero(species == s)[1:]] = False
    ev = latent.evaluate(data.embeddings[keep], data.taxonomy.select_rows(np.flatnonzero(keep)), method="knn",
                         n_boot=20)
    n_species = len(np.unique(species))
    assert ev.info["n_single_image_species_train_only"] == len(singles)
    rows = ev.to_frame()
    at_species = rows[rows["rank"] == "species"]
    note = f"{len(singles)} of {n_species} species have one image: in training only"
    assert at_species["note"].str.contains(note, regex=False).all()
    assert not rows[rows["rank"] == "genus"]["note"].fillna("").str.contains("have one image").any()
    tested = int(at_species["n_species"].iloc[0])
    assert 0 < tested <= n_species - len(singles) and f"tested on {tested} species" in at_species["note"].iloc[0]
    # without singletons nothing is said
    full = latent.evaluate(data.embeddings, data.taxonomy, method="knn", n_boot=20)
    assert full.info["n_single_image_species_train_only"] == 0
    assert not full.to_frame()["note"].fillna("").str.contains("have one image").any()
