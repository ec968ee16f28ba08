"""Linear probe: the torch solver minimises scikit-learn's objective; the C sweep, split, label mapping,
per-rank probes on planted hierarchies, and the input errors."""

from __future__ import annotations

import logging
import subprocess
import sys

import numpy as np
import pytest

from latent.errors import InputError
from latent.linear import (
    DEFAULT_GRID,
    LogisticModel,
    fit_logistic,
    linear_probe,
    linear_probe_ranks,
    sweep_C,
    train_val_split,
)
from latent.synthetic import make_hierarchical


def _blobs(seed: int, n: int = 300, d: int = 20, k: int = 5, spread: float = 0.5):
    rng = np.random.default_rng(seed)
    y = rng.integers(0, k, n)
    X = rng.standard_normal((n, d)) + spread * rng.standard_normal((k, d))[y]
    return X, y


def _sk_objective(X: np.ndarray, y: np.ndarray, C: float, coef: np.ndarray, intercept: np.ndarray) -> float:
    """scikit-learn's objective ``C * sum CE + 0.5 ||coef||^2`` for its own parameter layout."""
    Z = X @ coef.T + intercept
    if coef.shape[0] == 1:  # binary: logit of class 1 against 0
        Z = np.concatenate([np.zeros_like(Z), Z], axis=1)
    m = Z.max(axis=1, keepdims=True)
    lse = m[:, 0] + np.log(np.exp(Z - m).sum(axis=1))
    return float(C * np.sum(lse - Z[np.arange(len(y)), y]) + 0.5 * np.sum(coef**2))


# ------------------------------------------------------------------------------------- the objective
@pytest.mark.parametrize("k", [2, 3, 5])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_fit_matches_sklearn(seed, k):
    from sklearn.linear_model import LogisticRegression

    X, y = _blobs(seed, k=k)
    for C in (0.01, 1.0, 30.0):
        ref = LogisticRegression(C=C, tol=1e-10, max_iter=10000).fit(X, y)
        model = fit_logistic(X, y, C=C, tol=1e-10, max_iter=10000, dtype="float64", device="cpu")
        coef, intercept = model.sklearn_params()
        ref_intercept = ref.intercept_ if k == 2 else ref.intercept_ - ref.intercept_.mean()
        scale = np.abs(ref.coef_).max()
        assert np.abs(coef - ref.coef_).max() <= 1e-4 * scale, (seed, k, C)
        assert np.abs(intercept - ref_intercept).max() <= 1e-4 * max(np.abs(ref_intercept).max(), scale), (seed, k, C)
        np.testing.assert_allclose(model.predict_proba(X), ref.predict_proba(X), atol=1e-5, rtol=0)
        # the same objective: ours is no worse than scikit-learn's at its own solution
        ours = _sk_objective(X, y, C, coef, intercept)
        theirs = _sk_objective(X, y, C, ref.coef_, ref.intercept_)
        assert ours <= theirs * (1 + 1e-9) + 1e-9, (ours, theirs)


def test_float32_default_close_to_sklearn():
    from sklearn.linear_model import LogisticRegression

    X, y = _blobs(4, n=400, d=30, k=4)
    X = (X / np.linalg.norm(X, axis=1, keepdims=True)).astype(np.float32)
    ref = LogisticRegression(C=10.0, tol=1e-10, max_iter=10000).fit(X.astype(np.float64), y)
    model = fit_logistic(X, y, C=10.0, tol=1e-5, device="cpu")
    np.testing.assert_allclose(model.predict_proba(X), ref.predict_proba(X), atol=2e-3)
    assert model.W.shape == (30, 4) and model.b.shape == (4,)
    assert np.array_equal(model.classes, np.arange(4))


def test_warm_start_reaches_the_same_solution():
    X, y = _blobs(5, k=4)
    cold = fit_logistic(X, y, C=3.0, tol=1e-9, dtype="float64", device="cpu")
    start = fit_logistic(X, y, C=0.01, dtype="float64", device="cpu")
    warm = fit_logistic(X, y, C=3.0, tol=1e-9, dtype="float64", device="cpu", warm_start=start)
    np.testing.assert_allclose(warm.predict_proba(X), cold.predict_proba(X), atol=1e-6)
    warm2 = fit_logistic(X, y, C=3.0, tol=1e-9, dtype="float64", device="cpu", warm_start=(start.W, start.b))
    np.testing.assert_allclose(warm2.W, warm.W, atol=1e-6)


def test_model_outputs():
    X, y = _blobs(6, k=3)
    model = fit_logistic(X, y + 10, C=1.0, device="cpu")
    proba = model.predict_proba(X)
    assert proba.shape == (len(X), 3)
    np.testing.assert_allclose(proba.sum(axis=1), 1.0, atol=1e-9)
    assert set(model.predict(X)) <= {10, 11, 12}
    np.testing.assert_allclose(model.decision_function(X), X @ model.W + model.b)
    assert 0.5 < model.score(X, y + 10) <= 1.0
    assert isinstance(model, LogisticModel) and model.n_features == X.shape[1] and model.n_classes == 3


# ------------------------------------------------------------------------------------- the sweep
def test_sweep_picks_a_best_validation_c():
    X, y = _blobs(7, n=400, d=20, k=5, spread=0.4)
    best_C, table = sweep_C(X[:300], y[:300], X[300:], y[300:], device="cpu")
    assert list(table["C"]) == sorted(table["C"])
    assert set(np.round(np.log10(DEFAULT_GRID), 6)) <= set(np.round(np.log10(table["C"]), 6))
    assert table["C"].min() >= 1e-6 * (1 - 1e-9) and table["C"].max() <= 1e6 * (1 + 1e-9)
    assert (table["stage"] == "refine").sum() >= 1
    best_acc = table.loc[np.isclose(table["C"], best_C), "val_accuracy"].iloc[0]
    assert best_acc == table["val_accuracy"].max()
    # without refinement: only the grid, and the best is a grid value
    best_grid, table_grid = sweep_C(X[:300], y[:300], X[300:], y[300:], grid=[0.01, 1.0, 100.0], refine=False,
                                    device="cpu")
    assert list(table_grid["C"]) == [0.01, 1.0, 100.0]
    assert best_grid in (0.01, 1.0, 100.0)
    assert table_grid.loc[table_grid["C"] == best_grid, "val_accuracy"].iloc[0] == table_grid["val_accuracy"].max()


def test_sklearn_solver_gives_the_same_probe():
    X, y = _blobs(8, n=300, d=10, k=3, spread=0.6)
    Xte, yte = _blobs(9, n=200, d=10, k=3, spread=0.6)
    grid = [1e-2, 1.0, 1e2]
    ours = linear_probe(X, y, Xte, grid=grid, device="cpu", tol=1e-6)
    ref = linear_probe(X, y, Xte, grid=grid, solver="sklearn", tol=1e-6)
    assert ours.best_C == ref.best_C
    np.testing.assert_allclose(ours.test_proba, ref.test_proba, atol=1e-3)


# ------------------------------------------------------------------------------------- known answers
def test_separable_planted_data_is_learned():
    rng = np.random.default_rng(10)
    W = rng.standard_normal((16, 6))
    X = rng.standard_normal((3000, 16))
    logits = np.sort(X @ W, axis=1)
    X = X[logits[:, -1] - logits[:, -2] > 1.0][:900]  # a margin around every boundary
    y = np.argmax(X @ W, axis=1)
    result = linear_probe(X[:600], y[:600], X[600:], device="cpu")
    assert result.accuracy(y[600:]) >= 0.98
    assert result.best_C >= 1.0  # separable: weak regularisation wins


def test_noise_labels_stay_at_chance():
    rng = np.random.default_rng(11)
    X = rng.standard_normal((1600, 20))
    y = rng.integers(0, 5, 1600)
    result = linear_probe(X[:600], y[:600], X[600:], device="cpu")
    assert abs(result.accuracy(y[600:]) - 0.2) < 0.06


def _split_per_species(data, n_test: int):
    per = data.params["per_species"]
    k = np.arange(len(data.embeddings)) % per
    test = k >= per - n_test
    X = data.embeddings / np.linalg.norm(data.embeddings, axis=1, keepdims=True)
    return X[~test], data.taxonomy.row_codes[~test], X[test], data.taxonomy.row_codes[test]


def test_planted_hierarchy_found_at_every_rank(planted):
    Xtr, Ytr, Xte, Yte = _split_per_species(planted, 4)
    result = linear_probe_ranks(Xtr, Ytr, Xte, Yte, device="cpu", grid=np.logspace(-2, 4, 7))
    assert set(result.test_accuracy) == {"kingdom", "phylum", "class", "order", "family", "genus", "species"}
    for rank, acc in result.test_accuracy.items():
        assert acc >= 0.95, (rank, acc)
    frame = result.to_frame()
    assert list(frame.columns[:6]) == ["rank", "metric", "value", "ci_low", "ci_high", "n"]
    assert set(frame["metric"]) == {"test_accuracy", "val_accuracy", "best_C", "n_classes"}
    assert (frame["method"] == "linear").all()
    species_classes = frame[(frame["rank"] == "species") & (frame["metric"] == "n_classes")]["value"].iloc[0]
    assert species_classes == 47


def test_no_signal_no_species():
    data = make_hierarchical(per_species=20, dim=32, signal=0.0, seed=2)
    Xtr, Ytr, Xte, Yte = _split_per_species(data, 10)
    result = linear_probe_ranks(Xtr, Ytr, Xte, Yte, ranks=["species"], device="cpu", grid=np.logspace(-3, 3, 7))
    assert abs(result.test_accuracy["species"] - 1 / 47) < 0.035


# ------------------------------------------------------------------------------------- labels, split, ranks
def test_arbitrary_labels_map_back():
    X, y = _blobs(12, n=300, d=12, k=4, spread=0.8)
    Xte, yte = _blobs(12, n=100, d=12, k=4, spread=0.8)
    codes = np.array([1000, 7, -3, 42])
    plain = linear_probe(X, y, Xte, device="cpu", grid=[0.1, 10.0])
    mapped = linear_probe(X, codes[y], Xte, device="cpu", grid=[0.1, 10.0])
    assert list(mapped.classes) == [-3, 7, 42, 1000]
    # column j of mapped is class codes-sorted[j]; plain's columns are 0..3
    order = np.argsort(codes)
    np.testing.assert_allclose(mapped.test_proba, plain.test_proba[:, order], atol=1e-6)
    assert set(mapped.predict()) <= set(codes)
    assert mapped.accuracy(codes[yte]) == plain.accuracy(yte)


def test_train_val_split_stratified():
    y = np.array([0] * 10 + [1] * 5 + [2] * 1 + [3] * 2)
    train, val = train_val_split(y, val_fraction=0.2, seed=0)
    assert np.intersect1d(train, val).size == 0
    assert np.array_equal(np.union1d(train, val), np.arange(len(y)))
    counts = np.bincount(y[val], minlength=4)
    assert list(counts) == [2, 1, 0, 0]  # single-sample class stays in train; round(0.4) = 0
    again = train_val_split(y, val_fraction=0.2, seed=0)
    assert np.array_equal(again[1], val)
    _, val_plain = train_val_split(y, val_fraction=0.5, seed=1, stratify=False)
    assert len(val_plain) == 9


def test_ranks_skip_unlabelled_rows_and_single_class_ranks(caplog, planted):
    Xtr, Ytr, Xte, Yte = _split_per_species(planted, 3)
    Ytr = Ytr.copy()
    Ytr[:, 0] = 5  # one kingdom only
    Ytr[::4, 6] = -1  # some rows unknown at species
    with caplog.at_level(logging.WARNING, logger="latent.linear"):
        result = linear_probe_ranks(Xtr, Ytr, Xte, ranks=["kingdom", "species"], device="cpu", grid=[0.1, 10.0])
    assert "kingdom" in result.skipped and "kingdom" not in result.results
    assert "kingdom" in caplog.text and "skipped" in caplog.text
    res = result.results["species"]
    assert res.n_train + res.n_val == int((Ytr[:, 6] >= 0).sum())
    assert res.test_proba.shape == (len(Xte), 47)
    assert result.test_accuracy == {}


# ------------------------------------------------------------------------------------- errors
def test_errors():
    X, y = _blobs(13, n=50, d=4, k=3)
    with pytest.raises(InputError, match=r"The 'y_train' parameter of linear_probe must be labels of at least 2 "
                                         r"classes\. Got 1 class \(label 0\) instead\."):
        linear_probe(X, np.zeros(50, dtype=int), X, device="cpu")
    with pytest.raises(InputError, match=r"The 'y' parameter of fit_logistic must be labels of at least 2 classes"):
        fit_logistic(X, np.full(50, 3), C=1.0, device="cpu")
    bad = X.copy()
    bad[[3, 17], 1] = np.nan
    with pytest.raises(InputError, match=r"The 'X_train' parameter of linear_probe must be finite .* "
                                         r"2 row\(s\): 3, 17"):
        linear_probe(bad, y, X, device="cpu")
    with pytest.raises(InputError, match=r"The 'y_train' parameter of linear_probe must be an array with one label "
                                         r"per row of X_train \(50 rows\)\. Got 49 labels instead\."):
        linear_probe(X, y[:49], X, device="cpu")
    with pytest.raises(InputError, match=r"The 'X_test' parameter of linear_probe must be an array with 4 columns"):
        linear_probe(X, y, X[:, :3], device="cpu")
    with pytest.raises(InputError, match=r"The 'C' parameter of fit_logistic must be a finite number > 0"):
        fit_logistic(X, y, C=0.0, device="cpu")
    with pytest.raises(InputError, match=r"The 'grid' parameter of sweep_C must be"):
        sweep_C(X, y, X, y, grid=[-1.0], device="cpu")
    with pytest.raises(InputError, match=r"The 'Y_train' parameter of linear_probe_ranks must be an \(n, 7\) array"):
        linear_probe_ranks(X, y, X, device="cpu")
    with pytest.raises(InputError, match=r"The 'solver' parameter of linear_probe must be one of"):
        linear_probe(X, y, X, solver="liblinear")
    with pytest.raises(InputError, match=r"The 'device' parameter of fit_logistic must be"):
        fit_logistic(X, y, C=1.0, device="tpu:7")


def test_import_does_not_import_torch():
    code = "import sys, latent.linear; assert 'torch' not in sys.modules, 'torch imported'"
    subprocess.run([sys.executable, "-c", code], check=True)
