"""The tanglegram is untangled (issue 14, item 2): crossings are counted from the connecting lines drawn.

A dendrogram that is the taxonomy up to rotations (and a resolution of its multifurcations) is drawn
with no crossing line; on random and real data the untangled drawing never has more crossings than
scipy's leaf order or the one-sided rotation against the taxonomy's lineage order.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from scipy.cluster.hierarchy import linkage
from scipy.spatial.distance import squareform

from latent.errors import InputError
from latent.plotting.geometry import check_species_table
from latent.plotting.trees import (
    count_crossings,
    dendrogram_segments,
    plot_tanglegram,
    taxonomy_segments,
    untangle,
)
from latent.probes.base import ProbeData
from latent.ranks import RANK_NAMES
from latent.synthetic import balanced_taxonomy, make_hierarchical
from latent.taxonomy import Taxonomy


def drawn_crossings(axes: np.ndarray) -> int:
    """Crossing pairs among the connecting lines drawn (from their end points, brute force)."""
    (links,) = axes[1].collections
    segments = np.asarray(links.get_segments())
    left, right = segments[:, 0, 1], segments[:, 1, 1]
    assert np.allclose(segments[:, 0, 0], 0) and np.allclose(segments[:, 1, 0], 1)
    dl, dr = np.sign(left[:, None] - left[None, :]), np.sign(right[:, None] - right[None, :])
    return int((dl * dr < 0).sum() // 2)


def planted(seed: int = 0) -> tuple[np.ndarray, pd.DataFrame]:
    """The demo's taxonomy (2 classes x 6 orders x 3 families x 2 genera x 2 species: multifurcating),
    rows shuffled; the dendrogram = average linkage of its own LCA heights with every merge's children
    swapped at random: the taxonomy up to rotations and a resolution of its multifurcations."""
    tax = balanced_taxonomy()
    rng = np.random.default_rng(seed)
    perm = rng.permutation(tax.n_species)
    table = tax.species_table().iloc[perm].reset_index(drop=True)
    T = tax.distances().astype(float)[np.ix_(perm, perm)]
    Z = linkage(squareform(T), method="average")
    flip = rng.random(len(Z)) < 0.5
    Z[flip, :2] = Z[flip][:, [1, 0]]
    return Z, table


def test_planted_multifurcating_taxonomy_draws_zero_crossings():
    for seed in range(3):
        Z, table = planted(seed)
        fig, axes = plot_tanglegram(Z, table)
        assert drawn_crossings(axes) == 0
        assert axes[1].get_xlabel() == "0 crossings\n(untangled)"
        # rotating the dendrogram alone against the lineage (alphabetical) order cannot untangle it
        y_tax, _ = taxonomy_segments(table)
        assert count_crossings(y_tax, dendrogram_segments(Z, target=y_tax)[0]) > 0
        fig, axes = plot_tanglegram(Z, table, rotate=False)
        assert drawn_crossings(axes) > 0


def test_taxonomy_side_stays_the_same_tree():
    Z, table = planted(1)
    strings = check_species_table(table, None, parameter="species", function="test")
    order, target, crossings = untangle(Z, strings)
    assert crossings == 0 and sorted(order) == list(range(len(table)))
    pos, segments = taxonomy_segments(strings, order=order)
    _, plain = taxonomy_segments(strings)
    assert len(segments) == len(plain)  # the same nodes and edges, only reordered
    assert np.array_equal(pos, target)
    for rank in RANK_NAMES:  # every clade is contiguous in the drawn order
        keys = strings[rank].to_numpy()[np.argsort(pos)]
        runs = np.r_[True, keys[1:] != keys[:-1]].sum()
        assert runs == len(set(zip(*[strings[r] for r in RANK_NAMES[:RANK_NAMES.index(rank) + 1]])))


def random_linkage(S: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    active, sizes = list(range(S)), {i: 1 for i in range(S)}
    Z = np.empty((S - 1, 4))
    for i in range(S - 1):
        a, b = rng.choice(len(active), 2, replace=False)
        x, y = active[a], active[b]
        for j in sorted((a, b), reverse=True):
            active.pop(j)
        sizes[S + i] = sizes[x] + sizes[y]
        Z[i] = (min(x, y), max(x, y), i + 1.0, sizes[S + i])
        active.append(S + i)
    return Z


def check_never_worse(Z: np.ndarray, table: pd.DataFrame) -> tuple[int, int]:
    fig, axes = plot_tanglegram(Z, table)
    untangled = drawn_crossings(axes)
    fig, axes = plot_tanglegram(Z, table, rotate=False)
    unrotated = drawn_crossings(axes)
    y_tax, _ = taxonomy_segments(table)
    one_sided = count_crossings(y_tax, dendrogram_segments(Z, target=y_tax)[0])
    assert untangled <= one_sided <= unrotated
    return untangled, unrotated


@pytest.mark.parametrize("signal", [0.0, 0.5])
def test_random_and_weak_structure_never_more_crossings(signal):
    syn = make_hierarchical(balanced_taxonomy(), per_species=3, dim=16, signal=signal, seed=2)
    data = ProbeData.from_arrays(syn.embeddings, syn.taxonomy)
    untangled, unrotated = check_never_worse(linkage(data.centroids, "average"), data.taxonomy.species_table())
    assert untangled < unrotated
    table = balanced_taxonomy().species_table()
    check_never_worse(random_linkage(len(table), 3), table)


def test_real_cub10_never_more_crossings(shared):
    import json

    from latent.importer import join_taxonomy

    root = shared("cub10")
    meta = json.loads((root / "bird_metadata.json").read_text())
    lineages = join_taxonomy(pd.Series([m["species"] for m in meta]), root / "taxonomy.csv", "cub_class")
    data = ProbeData.from_arrays(np.load(root / "bird_embeddings.npy"), Taxonomy(lineages))
    check_never_worse(linkage(data.centroids, "average"), data.taxonomy.species_table())


def test_count_crossings_equals_brute_force_with_ties():
    rng = np.random.default_rng(0)
    for _ in range(5):
        a = rng.integers(0, 30, 300).astype(float)
        b = rng.integers(0, 20, 300).astype(float)
        da, db = np.sign(a[:, None] - a[None, :]), np.sign(b[:, None] - b[None, :])
        assert count_crossings(a, b) == int((da * db < 0).sum() // 2)
    assert count_crossings([0, 1, 2], [2, 1, 0]) == 3 and count_crossings([1], [1]) == 0
    with pytest.raises(InputError, match="one length"):
        count_crossings([0, 1], [0, 1, 2])
