"""Top-down prediction: the restricted walk down the tree, and its comparison with the flat predictor."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pandas as pd
import pytest

from latent.errors import InputError
from latent.metrics import evaluate_predictions
from latent.predictions import Predictions, true_codes
from latent.predictors import predict_centroid, predict_knn, predict_linear, predict_zero_shot
from latent.ranks import RANK_NAMES, RANKS, Rank
from latent.splits import random_split
from latent.synthetic import balanced_taxonomy, make_hierarchical
from latent.taxonomy import Taxonomy
from latent.topdown import (COMPARISON_METRICS, TOPDOWN_MODE, compare_topdown, full_k, predict_topdown,
                            topdown_comparison, topdown_predictions)

# ------------------------------------------------------------------------------ the hand-built tree
# Two kingdoms, four species: K1 > ... > F1 > G1 > {G1 a, G1 b};  K2 > ... > F2 > {G2 > G2 c, G3 > G3 d}.
TINY = [
    ["K1", "P1", "C1", "O1", "F1", "G1", "G1 a"],
    ["K1", "P1", "C1", "O1", "F1", "G1", "G1 b"],
    ["K2", "P2", "C2", "O2", "F2", "G2", "G2 c"],
    ["K2", "P2", "C2", "O2", "F2", "G3", "G3 d"],
]
# One text direction per node (basis vector index), per rank, in node order (nodes are numbered in
# lineage order: K1 = 0, K2 = 1; G1 = 0, G2 = 1, G3 = 2; species a, b, c, d = 0..3).
NODE_DIMS = {0: [0, 1], 1: [2, 3], 2: [4, 5], 3: [6, 7], 4: [8, 9], 5: [10, 11, 12], 6: [13, 14, 15, 16]}
DIM = 17
# Per image, the weight of each node's direction: the cosine with that node's text is weight / |x|.
WEIGHTS = [
    # kingdom      upper ranks (node 0, node 1)   genus G1 G2 G3    species a  b  c  d
    {0: [.6, .4], 1: [.3, .7], 5: [.2, .5, .3], 6: [.3, .1, .6, .0]},
    {0: [.1, .9], 1: [.2, .8], 5: [.5, .2, .3], 6: [.5, .0, .4, .1]},
]
# The paths by hand (node codes per rank, root first):
# image 0: K1 (.6 > .4); among K1's children only P1, C1, O1, F1 (though P2.. score higher); genus
#   among F1's children: only G1; species among G1's: a (.3) before b (.1).
# image 1: K2 (.9); P2, C2, O2, F2; genus among F2's children G2 (.2), G3 (.3): G3; species among
#   G3's children: only d.
PATH = [[0, 0, 0, 0, 0, 0, 0], [1, 1, 1, 1, 1, 2, 3]]
# Per-rank argmax without the restriction (inconsistent for image 0: K1 but P2; image 1: G1 under F2's K2).
PER_RANK = [[0, 1, 1, 1, 1, 1, 2], [1, 1, 1, 1, 1, 0, 0]]


def tiny_taxonomy() -> Taxonomy:
    return Taxonomy(np.asarray(TINY, dtype=object))


def tiny_texts(tax: Taxonomy) -> dict[str, tuple[list[str], np.ndarray]]:
    texts = {}
    for r in RANKS:
        keys = [";".join(tax.lineage(r, node)) for node in range(tax.n_nodes(r))]
        emb = np.zeros((len(keys), DIM))
        emb[np.arange(len(keys)), NODE_DIMS[r]] = 1.0
        texts[r.label] = (keys, emb)
    return texts


def tiny_images() -> np.ndarray:
    X = np.zeros((len(WEIGHTS), DIM))
    for i, weights in enumerate(WEIGHTS):
        for r in RANKS:
            w = weights.get(int(r), weights[1] if 1 <= int(r) <= 4 else None)
            X[i, NODE_DIMS[r]] = w
    return X


def test_tiny_tree_zero_shot_walks_the_path_computed_by_hand():
    tax = tiny_taxonomy()
    X, texts = tiny_images(), tiny_texts(tax)
    rows = np.array([0, 3])  # any two rows: the truth does not enter the walk
    per_rank = predict_zero_shot(X, rows, tax, texts, mode="per-rank", logit_scale=10.0, k=4)
    np.testing.assert_array_equal(per_rank.topk[:, :, 0], PER_RANK)
    td = predict_topdown("zero-shot", X, rows, tax, texts, logit_scale=10.0, k=4)
    assert td.method == "zero-shot-topdown" and td.mode == TOPDOWN_MODE
    np.testing.assert_array_equal(td.topk[:, :, 0], PATH)
    # top-k: the k best children of the top-1 parent; at the kingdom the predictor's own list
    np.testing.assert_array_equal(td.topk[0, Rank.KINGDOM], [0, 1, -1, -1])
    np.testing.assert_array_equal(td.topk[0, Rank.SPECIES], [0, 1, -1, -1])  # a (.3), b (.1): G1's children
    np.testing.assert_array_equal(td.topk[1, Rank.GENUS], [2, 1, -1, -1])  # G3 (.3), G2 (.2): F2's children
    np.testing.assert_array_equal(td.topk[1, Rank.SPECIES], [3, -1, -1, -1])  # d: G3's only child
    # scores are the per-rank probabilities of the chosen taxa: softmax(10 * cos) over the rank's texts
    norm = np.linalg.norm(X, axis=1)
    genus = np.exp(10 * np.array([.5, .2, .3]) / norm[1])
    genus /= genus.sum()
    np.testing.assert_allclose(td.scores[1, Rank.GENUS, :2], genus[[2, 1]])
    assert np.isnan(td.scores[1, Rank.SPECIES, 1:]).all()
    np.testing.assert_array_equal(td.n_candidates, [2, 2, 2, 2, 2, 3, 4])


def test_a_rank_without_a_child_is_skipped_and_the_next_rank_stays_under_the_last_choice():
    tax = tiny_taxonomy()
    n = 1
    topk = np.full((n, 7, 4), -1, dtype=np.int64)
    scores = np.full((n, 7, 4), np.nan)
    for r, (codes, values) in {0: ([0, 1], [.7, .3]), 1: ([1, 0], [.6, .4]), 2: ([0, 1], [.5, .5]),
                               3: ([0, 1], [.9, .1]), 4: ([0, 1], [.8, .2]),
                               5: ([1, 2], [.6, .4]),  # no genus under F1 is scored (G1 missing)
                               6: ([2, 1, 0, 3], [.4, .3, .2, .1])}.items():
        topk[0, r, :len(codes)], scores[0, r, :len(codes)] = codes, values
    ranked = Predictions(taxonomy=tax, rows=np.array([0]), ids=np.array(["x"]), true=true_codes(tax, np.array([0])),
                         topk=topk, scores=scores, method="hand", mode="per-rank",
                         n_candidates=np.array([2, 2, 2, 2, 2, 2, 4]))
    td = topdown_predictions(ranked, k=3)
    # K1, then P1 (P2 scores higher but is K2's), C1, O1, F1; no genus under F1; species under F1: b, a
    np.testing.assert_array_equal(td.topk[0, :, 0], [0, 0, 0, 0, 0, -1, 1])
    np.testing.assert_array_equal(td.topk[0, Rank.SPECIES], [1, 0, -1])
    np.testing.assert_allclose(td.scores[0, Rank.SPECIES, :2], [.3, .2])
    assert td.info["rows_without_child"] == {"genus": 1}


def test_incomplete_ranked_lists_are_refused():
    tax = tiny_taxonomy()
    X, texts = tiny_images(), tiny_texts(tax)
    short = predict_zero_shot(X, np.array([0, 1]), tax, texts, mode="per-rank", k=2)
    with pytest.raises(InputError, match="k=latent.topdown.full_k"):
        topdown_predictions(short)
    with pytest.raises(InputError, match="base_mode"):
        predict_topdown("zero-shot", X, np.array([0, 1]), tax, texts, mode="flat")
    with pytest.raises(InputError, match="method"):
        predict_topdown("svm", X, np.array([0, 1]), tax, texts)
    assert full_k(tax) == 4


# ------------------------------------------------------------------------------ comparison by hand
def hand_predictions(tax: Taxonomy, rows: np.ndarray, top1: np.ndarray, mode: str, method: str) -> Predictions:
    topk = np.asarray(top1, dtype=np.int64)[:, :, None]
    return Predictions(taxonomy=tax, rows=rows, ids=rows.astype(str), true=true_codes(tax, rows), topk=topk,
                       scores=np.where(topk >= 0, 1.0, np.nan), method=method, mode=mode)


def test_comparison_values_by_hand():
    tax = tiny_taxonomy()
    rows = np.array([0, 1, 2, 3])  # true lineages: a, b (K1..G1), c (K2..G2), d (K2..G3)
    flat_top1 = np.array([
        [0, 0, 0, 0, 0, 0, 0],   # a: all right
        [1, 0, 0, 0, 0, 0, 1],   # b: kingdom wrong, the rest right (inconsistent at phylum)
        [1, 1, 1, 1, 1, 2, 2],   # c: genus wrong (G3), species right (inconsistent at species)
        [1, 1, 1, 1, 1, 2, 3],   # d: all right
    ])
    td_top1 = np.array([
        [0, 0, 0, 0, 0, 0, 1],   # a: species wrong
        [1, 1, 1, 1, 1, 1, 2],   # b: kingdom wrong, and everything below
        [1, 1, 1, 1, 1, 2, 3],   # c: genus wrong, species wrong
        [1, 1, 1, 1, 1, 2, 3],   # d: all right
    ])
    flat = hand_predictions(tax, rows, flat_top1, "flat", "hand")
    td = hand_predictions(tax, rows, td_top1, "top-down", "hand-topdown")
    table = compare_topdown(flat, td, tax, n_boot=0)
    got = {(r, m, mode): v for r, m, mode, v in table[["rank", "metric", "mode", "value"]].itertuples(index=False)}
    # accuracy and paired difference
    assert got[("kingdom", "top1", "flat")] == 0.75 and got[("kingdom", "top1", "top-down")] == 0.75
    assert got[("phylum", "top1", "flat")] == 1.0 and got[("phylum", "top1", "top-down")] == 0.75
    assert got[("phylum", "top1_difference", "top-down - flat")] == -0.25
    assert got[("genus", "top1", "flat")] == 0.75 and got[("genus", "top1", "top-down")] == 0.5
    assert got[("species", "top1", "flat")] == 1.0 and got[("species", "top1", "top-down")] == 0.25
    assert got[("species", "top1_difference", "top-down - flat")] == -0.75
    # consistency of the rank-wise top-1: flat breaks at phylum (b) and species (c); top-down never
    assert got[("phylum", "consistency", "flat")] == 0.75 and got[("species", "consistency", "flat")] == 0.75
    assert got[("genus", "consistency", "flat")] == 1.0
    assert all(got[(r, "consistency", "top-down")] == 1.0 for r in RANK_NAMES[1:])
    # error propagation at phylum: parent (kingdom) wrong only for b; flat right at phylum -> 0, top-down 1
    assert got[("phylum", "error_given_wrong_parent", "flat")] == 0.0
    assert got[("phylum", "error_given_wrong_parent", "top-down")] == 1.0
    # ... at species: parent (genus) wrong for c (flat) / b, c (top-down); flat right there
    assert got[("species", "error_given_wrong_parent", "flat")] == 0.0
    assert got[("species", "error_given_wrong_parent", "top-down")] == 1.0
    # accuracy given a right parent at species: flat a, b, d all right -> 1; top-down a wrong, d right -> 0.5
    assert got[("species", "top1_given_right_parent", "flat")] == 1.0
    assert got[("species", "top1_given_right_parent", "top-down")] == 0.5
    n = table.set_index(["rank", "metric", "mode"])["n"]
    assert n[("species", "error_given_wrong_parent", "top-down")] == 2
    assert n[("species", "top1_given_right_parent", "top-down")] == 2
    # 4 species < 10: no CI, said in ci_note; the metrics in the documented order, root first
    assert table["ci_low"].isna().all()
    assert (table.loc[table["n"] > 0, "ci_note"].str.fullmatch(r"no CI: [1-4] species \(< 10\)")).all()
    assert (table.loc[table["n"] == 0, "ci_note"] == "no CI: no images").all()
    assert (table.loc[table["metric"] == "top1", "ci_note"] == "no CI: 4 species (< 10)").all()
    assert list(dict.fromkeys(table["rank"])) == list(RANK_NAMES)
    assert list(dict.fromkeys(table.loc[table["rank"] == "species", "metric"])) == list(COMPARISON_METRICS)


def test_comparison_refuses_predictions_of_other_rows():
    tax = tiny_taxonomy()
    flat = hand_predictions(tax, np.array([0, 1]), np.zeros((2, 7)), "flat", "hand")
    other = hand_predictions(tax, np.array([1, 2]), np.zeros((2, 7)), "top-down", "hand-topdown")
    with pytest.raises(InputError, match="same test images"):
        compare_topdown(flat, other, tax)
    with pytest.raises(InputError, match="'taxonomy'"):
        compare_topdown(flat, flat, "not a taxonomy")


# ------------------------------------------------------------------------------ planted hierarchies
TREE = (1, 1, 2, 3, 2, 2, 2)  # 48 species: 2 classes, 6 orders, 12 families, 24 genera
#: weak offsets at phylum..family (species far apart, their higher taxa barely), strong below
NOISY_UPPER = dict(rank_scales=[1, 0.1, 0.1, 0.1, 0.1, 1.5, 3], noise=1.0)
#: strong offsets at phylum..family, weak genera and species, noisy images
CLEAN_UPPER = dict(rank_scales=[1, 3, 3, 3, 3, 1, 1], noise=2.0)
PREDICTORS = {"knn": predict_knn, "centroid": predict_centroid, "linear": predict_linear}


def planted_split(seed: int, setting: dict):
    data = make_hierarchical(balanced_taxonomy(TREE), per_species=8, dim=32, signal=1.0, seed=seed, **setting)
    train, test = random_split(data.taxonomy, np.arange(data.taxonomy.n_rows), test_fraction=0.5, seed=seed)
    return data, train, test


def flat_and_topdown(method: str, seed: int, setting: dict):
    data, train, test = planted_split(seed, setting)
    X = data.embeddings
    flat = PREDICTORS[method](X[train], train, X[test], test, data.taxonomy, mode="flat")
    td = predict_topdown(method, X[train], train, X[test], test, data.taxonomy)
    return data, flat, td


def rows_of(table: pd.DataFrame, metric: str, mode: str) -> pd.DataFrame:
    return table[(table["metric"] == metric) & (table["mode"] == mode)].set_index("rank")


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("method", ["centroid", "linear"])
def test_noisy_upper_ranks_top_down_loses_below_them(method, seed):
    """Per-rank classifiers of weakly planted ranks (class..family) are poor; flat sums strong species
    scores up. Top-down commits to the poor class choice, and a wrong class dooms every rank below:
    its accuracy falls below flat's at class and stays below at every lower rank (CI excludes 0)."""
    data, flat, td = flat_and_topdown(method, seed, NOISY_UPPER)
    table = compare_topdown(flat, td, data.taxonomy, n_boot=1000, seed=seed)
    diff = rows_of(table, "top1_difference", "top-down - flat")
    for rank in ("order", "family", "genus", "species"):
        assert diff.loc[rank, "ci_high"] < 0, (rank, diff.loc[rank].to_dict())
    # the loss is propagation: top-down is never right below a wrong parent, and given a right
    # family it is as good as flat at genus and species (the strong ranks)
    wrong = rows_of(table, "error_given_wrong_parent", "top-down")
    assert wrong.loc[["order", "family", "genus", "species"], "n"].min() > 0
    assert (wrong.loc[["order", "family", "genus", "species"], "value"] == 1.0).all()
    given = rows_of(table, "top1_given_right_parent", "top-down")
    assert given.loc["species", "value"] >= 0.95
    # errors accumulate: accuracy never rises going down
    acc = rows_of(table, "top1", "top-down")["value"].reindex(RANK_NAMES[2:]).to_numpy()
    assert (np.diff(acc) <= 0).all()


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("method", ["knn", "centroid", "linear"])
def test_clean_upper_ranks_flat_and_top_down_agree_within_the_ci(method, seed):
    data, flat, td = flat_and_topdown(method, seed, CLEAN_UPPER)
    table = compare_topdown(flat, td, data.taxonomy, n_boot=1000, seed=seed)
    diff = rows_of(table, "top1_difference", "top-down - flat")
    flat_acc = rows_of(table, "top1", "flat")
    assert flat_acc.loc["species", "value"] < 0.95  # not trivially easy: species errors exist
    for rank in RANK_NAMES[2:]:
        assert diff.loc[rank, "ci_low"] <= 0 <= diff.loc[rank, "ci_high"], (rank, diff.loc[rank].to_dict())


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("method", ["knn", "centroid", "linear"])
@pytest.mark.parametrize("setting", ["noisy", "clean"])
def test_top_down_consistency_is_exactly_one(method, seed, setting):
    data, flat, td = flat_and_topdown(method, seed, NOISY_UPPER if setting == "noisy" else CLEAN_UPPER)
    top1 = td.topk[:, :, 0]
    assert (top1 >= 0).all()
    for r in RANKS[1:]:
        np.testing.assert_array_equal(data.taxonomy.node_parents[r][top1[:, r]], top1[:, r - 1])
    table = compare_topdown(flat, td, data.taxonomy, n_boot=0)
    assert (rows_of(table, "consistency", "top-down")["value"] == 1.0).all()


def test_top_down_over_flat_centroid_scores_is_the_flat_prediction():
    """The nearest-centroid flat scores map up by the maximum, so the best node at every rank holds the
    nearest species centroid: walking them down ends at it, through its lineage."""
    data, train, test = planted_split(0, NOISY_UPPER)
    X = data.embeddings
    flat = predict_centroid(X[train], train, X[test], test, data.taxonomy, mode="flat")
    td = predict_topdown("centroid", X[train], train, X[test], test, data.taxonomy, base_mode="flat")
    species = flat.topk[:, Rank.SPECIES, 0]
    np.testing.assert_array_equal(td.topk[:, :, 0], data.taxonomy.species_codes[species])


def test_knn_per_rank_votes_are_the_flat_shares_so_both_walks_agree():
    """Every training image labelled at every rank: the same neighbours vote at every rank, so the
    per-rank shares are the flat species shares summed up, and the two walks are one."""
    data, train, test = planted_split(1, CLEAN_UPPER)
    X = data.embeddings
    args = (X[train], train, X[test], test, data.taxonomy)
    per_rank, flat = predict_topdown("knn", *args), predict_topdown("knn", *args, base_mode="flat")
    np.testing.assert_array_equal(per_rank.topk, flat.topk)
    np.testing.assert_allclose(per_rank.scores, flat.scores)
    assert per_rank.info["base_mode"] == "per-rank" and flat.info["base_mode"] == "flat"


def test_top_down_is_the_restricted_argmax_of_the_per_rank_scores():
    """Independent check of the walk: recompute it from the full per-rank score matrices."""
    data, train, test = planted_split(1, NOISY_UPPER)
    X = data.embeddings
    tax = data.taxonomy
    ranked = predict_linear(X[train], train, X[test], test, tax, mode="per-rank", k=full_k(tax))
    td = topdown_predictions(ranked, k=3)
    for i in range(ranked.n):
        parent = -1
        for r in RANKS:
            codes, values = ranked.topk[i, r], ranked.scores[i, r]
            allowed = [(v, -j, c) for j, (c, v) in enumerate(zip(codes, values))
                       if c >= 0 and (r == 0 or tax.node_parents[r][c] == parent)]
            best = [c for _, _, c in sorted(allowed, reverse=True)[:3]]
            assert td.topk[i, r, :len(best)].tolist() == best
            parent = best[0]


def test_the_comparison_accuracy_and_its_ci_equal_the_metrics_module():
    """compare_topdown's accuracy rows and CIs equal latent.metrics' (same species bootstrap, same seed).
    The top-down predictions are scored there as per-rank ones (the top-1 of each rank is H in both);
    evaluate_predictions on mode "top-down" itself is tested with latent evaluate --top-down."""
    data, flat, td = flat_and_topdown("centroid", 0, NOISY_UPPER)
    table = compare_topdown(flat, td, data.taxonomy, n_boot=200, seed=3)
    for pred, mode in ((flat, "flat"), (replace(td, mode="per-rank"), "top-down")):
        metrics = evaluate_predictions(pred, n_boot=200, seed=3).metrics
        ours = rows_of(table, "top1", mode)
        theirs = metrics[metrics["metric"] == "top1"].set_index("rank")
        for rank in RANK_NAMES:
            np.testing.assert_allclose(ours.loc[rank, ["value", "ci_low", "ci_high"]].to_numpy(dtype=float),
                                       theirs.loc[rank, ["value", "ci_low", "ci_high"]].to_numpy(dtype=float))
            assert ours.loc[rank, "n_species"] == theirs.loc[rank, "n_species"]
    hier = evaluate_predictions(replace(td, mode="per-rank"), n_boot=0).metrics.set_index(["rank", "metric"])
    assert hier.loc[("all", "consistency"), "value"] == 1.0


def test_topdown_comparison_runs_one_predictor_on_one_split():
    data, train, test = planted_split(2, CLEAN_UPPER)
    X = data.embeddings
    calls = []

    def predict(mode: str, k: int) -> Predictions:
        calls.append((mode, k))
        return predict_knn(X[train], train, X[test], test, data.taxonomy, mode=mode, k=k)

    flat, td, table = topdown_comparison(predict, n_boot=0)
    assert calls == [("flat", 5), ("per-rank", full_k(data.taxonomy))]
    assert flat.mode == "flat" and td.mode == TOPDOWN_MODE and td.method == "knn-topdown"
    assert set(table["mode"]) == {"flat", "top-down", "top-down - flat"}
    expected = compare_topdown(flat, td, data.taxonomy, n_boot=0)
    pd.testing.assert_frame_equal(table, expected)
