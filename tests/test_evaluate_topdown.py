"""``latent evaluate --top-down``: the same predictor flat and top-down on the same split, topdown.csv."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pandas as pd
import pytest

import latent
from latent.cli import main
from latent.errors import InputError
from latent.metrics import evaluate_predictions
from latent.predictors import predict_centroid
from latent.ranks import RANK_NAMES, RANKS
from latent.results import read_results
from latent.splits import kshot_split
from latent.synthetic import balanced_taxonomy, make_hierarchical, write_synthetic
from latent.topdown import compare_topdown, predict_topdown

NOISY_UPPER = dict(rank_scales=[1, 0.1, 0.1, 0.1, 0.1, 1.5, 3], noise=1.0)


@pytest.fixture(scope="module")
def data():
    return make_hierarchical(balanced_taxonomy((1, 1, 2, 3, 2, 2, 2)), per_species=8, dim=32, seed=0, **NOISY_UPPER)


def test_centroid_folds_equal_the_comparison_recomputed_on_each_fold(data, tmp_path):
    ev = latent.evaluate(data.embeddings, data.taxonomy, method="centroid", folds=2, top_down=True, n_boot=100)
    assert ev.info["top_down"] is True
    assert sorted(set(ev.topdown["fold"])) == ["0", "1"]
    rows = np.arange(data.taxonomy.n_rows)
    X = data.embeddings.astype(np.float32)
    X = X / np.linalg.norm(X, axis=1, keepdims=True)  # as evaluate reads them
    for fold in (0, 1):
        support, query = kshot_split(data.taxonomy, rows, shots=5, fold=fold, seed=0)
        flat = predict_centroid(X[support], support, X[query], query, data.taxonomy, mode="flat", ids=ev_ids(data))
        td = predict_topdown("centroid", X[support], support, X[query], query, data.taxonomy, ids=ev_ids(data))
        expected = compare_topdown(flat, td, data.taxonomy, n_boot=100, seed=0)
        got = ev.topdown[ev.topdown["fold"] == str(fold)]
        np.testing.assert_allclose(got["value"].to_numpy(), expected["value"].to_numpy())
        np.testing.assert_allclose(got["ci_low"].to_numpy(), expected["ci_low"].to_numpy())
    species = ev.topdown[(ev.topdown["metric"] == "top1_difference") & (ev.topdown["rank"] == "species")]
    assert (species["ci_high"] < 0).all()  # noisy upper ranks: the walk loses
    files = ev.save(tmp_path / "out")
    assert tmp_path / "out" / "topdown.csv" in files
    back = read_results(tmp_path / "out" / "topdown.csv")
    np.testing.assert_allclose(back["value"].to_numpy(), ev.topdown["value"].to_numpy())
    assert "top-down - flat top1 (fold 0): class " in ev.summary()


def ev_ids(data):
    return np.arange(data.taxonomy.n_rows).astype(str)


def test_zero_shot_top_down_reads_every_rank_text(data):
    tax = data.taxonomy
    text = {}
    for r in RANKS:  # each node's text: the mean planted species vector below it
        codes = tax.species_codes[:, r]
        means = np.stack([data.species_means[codes == node].mean(axis=0) for node in range(tax.n_nodes(r))])
        text[r.label] = ([";".join(tax.lineage(r, node)) for node in range(tax.n_nodes(r))], means)
    ev = latent.evaluate(data.embeddings, tax, method="zero-shot", text=text, top_down=True, n_boot=0)
    table = ev.topdown
    assert set(table["rank"]) == set(RANK_NAMES)
    consistency = table[(table["metric"] == "consistency") & (table["mode"] == "top-down")]
    assert len(consistency) == 6 and (consistency["value"] == 1.0).all()


def test_every_metric_reads_top_down_predictions(data):
    """evaluate_predictions accepts mode "top-down" and scores it as per-rank predictions (H = the top-1
    of each rank, here a consistent lineage)."""
    rows = np.arange(data.taxonomy.n_rows)
    support, query = kshot_split(data.taxonomy, rows, shots=5, fold=0, seed=0)
    X = data.embeddings
    td = predict_topdown("centroid", X[support], support, X[query], query, data.taxonomy)
    metrics = evaluate_predictions(td, n_boot=0).metrics
    assert set(metrics["mode"]) == {"top-down"} and set(metrics["method"]) == {"centroid-topdown"}
    same = evaluate_predictions(replace(td, mode="per-rank"), n_boot=0).metrics
    np.testing.assert_allclose(metrics["value"].to_numpy(), same["value"].to_numpy())
    hier = metrics.set_index(["rank", "metric"])
    assert hier.loc[("all", "consistency"), "value"] == 1.0


def test_species_disjoint_top_down_is_refused(data):
    with pytest.raises(InputError, match="--top-down compares with the flat predictor"):
        latent.evaluate(data.embeddings, data.taxonomy, method="knn", split="species-disjoint", top_down=True)


def test_cli_writes_topdown_csv(data, tmp_path, capsys):
    cache = write_synthetic(tmp_path / "synth.h5", data)
    out = tmp_path / "knn"
    assert main(["evaluate", str(cache), "--method", "knn", "--top-down", "--out", str(out), "--bootstrap", "20"]) == 0
    assert "top-down - flat top1: " in capsys.readouterr().out
    table = pd.read_csv(out / "topdown.csv")
    assert {"flat", "top-down", "top-down - flat"} == set(table["mode"])
    assert set(table["model"]) == {"synthetic"}
