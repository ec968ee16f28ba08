"""latent.kernels: the torch path (run here on the CPU through a torch.device, as it runs on a GPU) equals the
numpy path and scipy; the rule that picks the path; the kNN predictor's neighbours through both paths."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy.spatial.distance import cdist

from latent.errors import InputError
from latent.kernels import kernel_device, nearest, pairwise_distances

TORCH_CPU = torch.device("cpu")



@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("metric", ["cosine", "euclidean"])
def test_pairwise_distances_both_paths_equal_scipy(seed, metric):
    rng = np.random.default_rng(seed)
    A, B = rng.normal(size=(37, 9)), rng.normal(size=(23, 9))
    ref = cdist(A, B, metric)
    for device in ("cpu", TORCH_CPU):
        got = pairwise_distances(A, B, metric, device=device, block_rows=5)
        np.testing.assert_allclose(got, ref, atol=1e-12)
    square = pairwise_distances(A, metric=metric, device=TORCH_CPU, block_rows=4)
    assert np.all(np.diag(square) == 0) and np.array_equal(square, square.T)
    np.testing.assert_allclose(square, cdist(A, A, metric), atol=1e-12)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_nearest_both_paths_agree_and_are_the_true_neighbours(seed):
    rng = np.random.default_rng(seed)
    Q, R = rng.normal(size=(41, 16)), rng.normal(size=(200, 16))
    Q /= np.linalg.norm(Q, axis=1, keepdims=True)
    R /= np.linalg.norm(R, axis=1, keepdims=True)
    brute = np.argsort(-(Q @ R.T), axis=1, kind="stable")[:, :7]
    for device in ("cpu", TORCH_CPU):
        idx, sims = nearest(Q, R, 7, device=device, block_rows=8)
        assert np.array_equal(idx, brute)
        np.testing.assert_allclose(sims, np.take_along_axis(Q @ R.T, brute, axis=1), atol=1e-12)
        assert np.all(np.diff(sims, axis=1) <= 0)


def test_nearest_breaks_ties_by_row_on_both_paths():
    R = np.array([[1.0, 0.0], [0.0, 1.0], [1.0, 0.0], [1.0, 0.0]])
    Q = np.array([[1.0, 0.0]])
    for device in ("cpu", TORCH_CPU):
        idx, sims = nearest(Q, R, 2, device=device)
        assert idx.tolist() == [[0, 2]] and sims.tolist() == [[1.0, 1.0]]
        idx, _ = nearest(Q, R, 4, device=device)
        assert idx.tolist() == [[0, 2, 3, 1]]


def test_the_rule_and_bad_input():
    assert kernel_device("cpu") is None
    assert kernel_device(TORCH_CPU) == TORCH_CPU
    assert (kernel_device("auto") is None) == (not torch.cuda.is_available())
    with pytest.raises(InputError):
        kernel_device("tpu")
    with pytest.raises(InputError, match="'m'"):
        nearest(np.ones((2, 2)), np.ones((3, 2)), 4)
    with pytest.raises(InputError, match="metric"):
        pairwise_distances(np.ones((2, 2)), metric="manhattan")


def test_knn_predictions_are_the_same_through_both_paths():
    from latent.predictors import predict_knn
    from latent.synthetic import make_hierarchical

    data = make_hierarchical(per_species=6, dim=16, signal=1.0, seed=3)
    n = data.taxonomy.n_rows
    rows = np.arange(n)
    train, test = rows[rows % 3 != 0], rows[rows % 3 == 0]
    X = data.embeddings
    a = predict_knn(X[train], train, X[test], test, data.taxonomy, device="cpu", chunk_size=7)
    b = predict_knn(X[train], train, X[test], test, data.taxonomy, device=TORCH_CPU, chunk_size=11)
    assert np.array_equal(a.topk, b.topk)
    np.testing.assert_allclose(a.scores, b.scores, atol=1e-6, equal_nan=True)


@pytest.mark.parametrize("metric", ["cosine", "euclidean"])
def test_probes_on_the_torch_path_equal_the_numpy_path(metric):
    # The probes' O(n^2) distance blocks (image pairs, centroid pairs, silhouette, hubness) run on the options'
    # device through latent.kernels in float64: on torch (here its CPU device, as on a GPU) every row equals
    # the numpy path, duplicated images included (they still tie at exactly 0).
    import latent
    from latent.probes.base import ProbeOptions
    from latent.synthetic import make_hierarchical

    data = make_hierarchical(per_species=4, dim=12, signal=1.0, seed=3)
    X = data.embeddings.copy()
    X[1] = X[0]  # a duplicated image
    settings = {"clusters": {"n_boot": 50}, "distances": {"n_boot": 50}}
    runs = {}
    for name, device in (("numpy", "cpu"), ("torch", torch.device("cpu"))):
        options = ProbeOptions(permutations=19, distance=metric, device=device, max_images=120, max_pairs=4000)
        runs[name] = latent.run_probes(X, data.taxonomy, probes="distances,clusters,shape", options=options,
                                       settings=settings).metrics
    a, b = runs["numpy"], runs["torch"]
    assert len(a) == len(b) and len(a) > 20
    np.testing.assert_allclose(a["value"].to_numpy(float), b["value"].to_numpy(float), rtol=1e-9, atol=1e-12)
    np.testing.assert_array_equal(a["p_value"].to_numpy(float), b["p_value"].to_numpy(float))


def test_probe_distances_on_a_torch_device_are_float64_and_tie_exactly():
    from latent.probes.base import pairwise_distances as probe_distances
    from latent.probes.common import zero_ties
    from latent.probes.distances import tie_tolerance

    rng = np.random.default_rng(0)
    A = rng.standard_normal((30, 7))
    A[5] = A[2]
    for metric in ("cosine", "euclidean"):
        ref = probe_distances(A, metric=metric)
        got = probe_distances(A, metric=metric, device=torch.device("cpu"))
        assert got.dtype == np.float64
        np.testing.assert_allclose(got, ref, rtol=0, atol=1e-13)
        snapped = zero_ties(got, tie_tolerance(A, metric))  # as the probes do before summing
        assert snapped[2, 5] == snapped[5, 2] == 0.0
    # None, "cpu" and "auto" without a GPU stay on the numpy path, bit for bit
    for device in (None, "cpu") + (("auto",) if not torch.cuda.is_available() else ()):
        np.testing.assert_array_equal(probe_distances(A, device=device), probe_distances(A))
