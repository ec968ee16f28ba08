"""`latent evaluate --method linear` runs the per-rank sweep that BENCHMARKS.md measures (issue 12)."""

from __future__ import annotations

import numpy as np

from latent.linear import linear_probe
from latent.predictors import predict_linear
from latent.ranks import RANKS, Rank
from latent.splits import random_split


def _per_rank_loop(Xtr, train, Xte, tax, **options):
    """The former path: one independent `linear_probe` per rank (own centring and rotation each)."""
    out = {}
    for r in RANKS:
        labels = tax.codes(r)[train]
        keep = labels >= 0
        if len(np.unique(labels[keep])) < 2:
            continue
        res = linear_probe(Xtr[keep], labels[keep], Xte, **options)
        out[r.label] = res
    return out


def test_predict_linear_uses_the_shared_rank_sweep(planted, monkeypatch):
    import latent.linear as linear

    calls = []
    real = linear.linear_probe_ranks

    def spy(*args, **kwargs):
        calls.append(kwargs.get("ranks"))
        return real(*args, **kwargs)

    # observe (not replace) the call: the real sweep runs
    monkeypatch.setattr(linear, "linear_probe_ranks", spy)
    syn = planted
    train, test = random_split(syn.taxonomy, seed=0)
    X = syn.embeddings
    pred = predict_linear(X[train], train, X[test], test, syn.taxonomy, device="cpu", grid=[0.1, 1.0, 10.0],
                          refine=False)
    assert len(calls) == 1 and [Rank(r) for r in calls[0]] == list(RANKS)
    assert set(pred.info["best_C"]) == {r.label for r in RANKS}


def test_predict_linear_equals_the_per_rank_loop_within_tolerance(planted):
    syn = planted
    tax, X = syn.taxonomy, syn.embeddings
    train, test = random_split(tax, seed=1)
    Xn = X / np.linalg.norm(X, axis=1, keepdims=True)
    options = dict(grid=[0.01, 1.0, 100.0], refine=False, seed=0, device="cpu")
    pred = predict_linear(X[train], train, X[test], test, tax, **options)
    loop = _per_rank_loop(Xn[train], train, Xn[test], tax, **options)
    assert set(loop) == set(pred.info["best_C"])
    for r in RANKS:
        res = loop[r.label]
        truth = tax.codes(r)[test]
        acc_loop = float(np.mean(res.predict() == truth))
        acc_new = float(np.mean(pred.topk[:, r, 0] == truth))
        assert pred.info["best_C"][r.label] == res.best_C, r
        assert abs(acc_new - acc_loop) <= 0.01, (r, acc_new, acc_loop)
        order = np.argsort(res.classes)
        proba = np.sort(res.test_proba[:, order], axis=1)[:, ::-1][:, :5]
        k = min(5, proba.shape[1])
        np.testing.assert_allclose(pred.scores[:, r, :k], proba[:, :k], atol=2e-3)
