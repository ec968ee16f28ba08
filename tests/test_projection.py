"""2-D projections: PCA equals an independent SVD; UMAP keeps a planted hierarchy's species apart and
does not invent one at signal 0; seeds reproduce; bad input is explained."""

from __future__ import annotations

import numpy as np
import pytest

from latent.errors import InputError
from latent.projection import project
from latent.synthetic import make_hierarchical


def knn_species_accuracy(Y: np.ndarray, species: np.ndarray, k: int = 5) -> float:
    """Leave-one-out k-nearest-neighbour accuracy of the species in the 2-D coordinates."""
    D = ((Y[:, None, :] - Y[None, :, :]) ** 2).sum(-1)
    np.fill_diagonal(D, np.inf)
    nearest = np.argsort(D, axis=1)[:, :k]
    votes = species[nearest]
    predicted = np.array([np.bincount(v).argmax() for v in votes])
    return float((predicted == species).mean())


def data(signal: float, seed: int = 0):
    syn = make_hierarchical(per_species=10, dim=32, signal=signal, noise=0.5, seed=seed)
    return syn.embeddings.astype(np.float64), syn.taxonomy.codes("species")


def test_pca_equals_numpy_svd_up_to_sign():
    X, _ = data(1.0)
    Y = project(X, method="pca")
    Xc = X - X.mean(axis=0)
    U, s, _ = np.linalg.svd(Xc, full_matrices=False)
    expected = U[:, :2] * s[:2]
    signs = np.sign((Y * expected).sum(axis=0))
    assert Y.shape == (len(X), 2)
    assert np.allclose(Y, expected * signs, atol=1e-8)
    # one column: the second coordinate is 0
    Y1 = project(X[:, :1], method="pca")
    assert np.allclose(Y1[:, 1], 0) and np.allclose(np.abs(Y1[:, 0]), np.abs(X[:, 0] - X[:, 0].mean()))


def test_umap_keeps_planted_species_apart_and_not_a_null():
    X, species = data(1.5)
    Y = project(X, method="umap", seed=0)
    assert Y.shape == (len(X), 2) and np.isfinite(Y).all()
    chance = 1 / len(np.unique(species))
    planted = knn_species_accuracy(Y, species)
    assert planted > 0.8
    for seed in (1, 2):
        X0, species0 = data(0.0, seed=seed)
        assert knn_species_accuracy(project(X0, method="umap", seed=0), species0) < chance + 0.1
    # the same seed gives the same picture
    assert np.array_equal(project(X[:120], method="umap", seed=3), project(X[:120], method="umap", seed=3))


def test_tiny_input_lowers_neighbours():
    X, _ = data(1.0)
    Y = project(X[:8], method="umap", seed=0)
    assert Y.shape == (8, 2) and np.isfinite(Y).all()


@pytest.mark.parametrize("kwargs, match", [
    ({"method": "tsne"}, "'method'"),
    ({"seed": -1}, "'seed'"),
    ({"n_neighbors": 1}, "'n_neighbors'"),
    ({"min_dist": 2.0}, "'min_dist'"),
    ({"metric": "manhattan"}, "'metric'"),
])
def test_bad_settings(kwargs, match):
    with pytest.raises(InputError, match=match):
        project(np.ones((10, 3)), **kwargs)


def test_bad_arrays():
    with pytest.raises(InputError, match="2-D"):
        project(np.ones(10), method="pca")
    with pytest.raises(InputError, match="at least 3 rows"):
        project(np.ones((2, 3)), method="pca")
    X = np.ones((10, 3))
    X[4, 1] = np.nan
    with pytest.raises(InputError, match=r"finite; 1 row\(s\).*\[4\]"):
        project(X, method="pca")
    with pytest.raises(InputError, match="zero row"):
        project(np.zeros((10, 3)), method="umap")
