"""Synthetic known-answer data: the planted hierarchy is there at strong signal and absent at zero."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.stats import spearmanr
from sklearn.neighbors import KNeighborsClassifier

from latent.ranks import Rank
from latent.synthetic import builtin_taxonomy, make_hierarchical
from latent.taxonomy import Taxonomy


def mean_sq_distance_by_height(data):
    x = data.embeddings.astype(np.float64)
    sq = (x * x).sum(1)
    d2 = sq[:, None] + sq[None, :] - 2 * x @ x.T
    h = data.taxonomy.row_distances()
    off = ~np.eye(len(x), dtype=bool)
    return np.array([d2[(h == k) & off].mean() for k in range(8)]), d2[off], h[off]


def test_builtin_taxonomy_is_consistent_and_spans_all_heights():
    tax = builtin_taxonomy()
    assert tax.n_species >= 40 and tax.n_taxa("kingdom") >= 4 and not tax.conflicts
    assert set(np.unique(tax.distances())) == set(range(8))


def test_same_seed_same_data_other_seed_other_data():
    a = make_hierarchical(per_species=3, dim=16, seed=3)
    b = make_hierarchical(per_species=3, dim=16, seed=3)
    c = make_hierarchical(per_species=3, dim=16, seed=4)
    np.testing.assert_array_equal(a.embeddings, b.embeddings)
    assert not np.allclose(a.embeddings, c.embeddings)
    assert a.embeddings.dtype == np.float32 and a.embeddings.shape == (47 * 3, 16)
    assert len(set(a.ids)) == len(a.ids)
    assert list(a.taxonomy.labels("species")[:3]) == [a.taxonomy.species_table()["species"][0]] * 3


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_squared_distance_rises_by_two_signal_squared_per_rank(seed):
    signal, noise = 1.0, 0.5
    data = make_hierarchical(per_species=6, dim=512, signal=signal, noise=noise, seed=seed)
    means, _, _ = mean_sq_distance_by_height(data)
    expected = 2 * signal**2 * np.arange(8) + 2 * noise**2
    # Heights 0-2 pool few independent offsets on the small built-in tree; the rest pool many.
    np.testing.assert_allclose(means, expected, rtol=0.25, atol=0.05)
    assert (np.diff(means) > 0).all()


def test_zero_signal_plants_nothing():
    data = make_hierarchical(per_species=8, dim=256, signal=0.0, noise=1.0, seed=0)
    means, d2, h = mean_sq_distance_by_height(data)
    np.testing.assert_allclose(means, 2.0, rtol=0.03)
    assert abs(spearmanr(d2, h).statistic) < 0.05
    y = data.taxonomy.codes("species")
    knn = KNeighborsClassifier(n_neighbors=1).fit(data.embeddings[::2], y[::2])
    accuracy = knn.score(data.embeddings[1::2], y[1::2])
    assert accuracy < 3 / data.taxonomy.n_species  # chance is 1/47


def test_default_signal_separates_species_by_nearest_neighbour():
    data = make_hierarchical(seed=0)
    y = data.taxonomy.codes("species")
    knn = KNeighborsClassifier(n_neighbors=1).fit(data.embeddings[::2], y[::2])
    assert knn.score(data.embeddings[1::2], y[1::2]) > 0.95
    _, d2, h = mean_sq_distance_by_height(data)
    assert spearmanr(d2, h).statistic > 0.5


def test_rank_scales_plant_structure_at_chosen_ranks_only():
    # Only the family offset: genera and species inside a family are indistinguishable.
    data = make_hierarchical(per_species=4, dim=256, noise=0.3, rank_scales=[0, 0, 0, 0, 1, 0, 0], seed=0)
    means, _, _ = mean_sq_distance_by_height(data)
    np.testing.assert_allclose(means[:3], 2 * 0.3**2, rtol=0.1)  # same species, genus, family
    np.testing.assert_allclose(means[3:], 2 + 2 * 0.3**2, rtol=0.25)  # different families


def test_custom_taxonomy_and_bad_parameters():
    tax = Taxonomy.from_lineages([["A", "B", "C", "D", "E", "F", "F x"], ["A", "B", "C", "D", "E", "F", "F y"]])
    data = make_hierarchical(tax, per_species=2, dim=4)
    assert data.embeddings.shape == (4, 4)
    assert data.taxonomy.n_rows == 4 and data.taxonomy.n_species == 2
    with pytest.raises(ValueError, match="'signal' parameter of make_hierarchical must be a finite number >= 0. Got -1"):
        make_hierarchical(signal=-1)
    with pytest.raises(ValueError, match="'per_species'"):
        make_hierarchical(per_species=0)
    with pytest.raises(ValueError, match="'rank_scales'"):
        make_hierarchical(rank_scales=[1, 2])
