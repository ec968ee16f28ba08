"""Top-down prediction: the kingdom first, then each rank only among the children of the chosen parent.

A flat predictor scores the species and sums (or, for the nearest centroid, maximises) up the tree; a
per-rank predictor scores every rank on its own, so its ranks may disagree (a genus outside the
predicted family). A **top-down** predictor walks the tree: it takes the best kingdom, then the best
phylum *among that kingdom's children*, and so on down to the species. Its predicted lineage is
consistent by construction, and an error is never repaired below: a wrong family dooms the genus.

How the scores are got
----------------------
Every predictor of :mod:`latent.predictors` (zero-shot, kNN, nearest centroid, linear) already scores
each candidate taxon at every rank. :func:`predict_topdown` calls it once with ``k`` = every
candidate (:func:`full_k`), in ``per-rank`` mode by default (each rank's own classifier: its own
softmax over the rank's texts, its own probe, its own centroids, the same neighbours voting at every
rank), and :func:`topdown_predictions` makes the restricted choice from those complete ranked lists.
(For kNN with every training image labelled at every rank, the per-rank votes are the flat species
shares summed up the tree: flat and top-down then differ only by the walk.)
``base_mode="flat"`` walks the flat scores instead (species probabilities summed up the tree; for the
nearest centroid, whose flat scores are the maximum over the species below, the walk ends at the
nearest species centroid, i.e. it equals the flat prediction).

Restricted choice (at rank ``r`` for one image)
   The candidates are the taxa of the predictor's ranked list at ``r`` that lie under the node chosen
   at the deepest rank above ``r`` that got one (normally ``r - 1``); the top-1 is the best-scored of
   them, and the **top-k at a rank in top-down mode are the k best among the children of the top-1
   parent** (fewer when it has fewer scored children; the rest is ``-1``/NaN, as kNN's short lists,
   and the metrics count a truth beyond the list as missed). At the kingdom
   the list is the predictor's own. When no candidate lies under the chosen node (a rank left
   unnamed there, a taxon without a text, no neighbour labelled at ``r``), the rank gets no
   prediction for that image and the next rank is restricted to the descendants of the last chosen
   node. Scores are the predictor's per-rank scores of the chosen taxa (not renormalised among the
   children), so a probability stays the probability that rank's classifier gave.

The result is a :class:`~latent.predictions.Predictions` with ``method`` ``"<method>-topdown"`` and
``mode`` ``"top-down"`` (:data:`TOPDOWN_MODE`): every metric of :mod:`latent.metrics` reads it as it
reads per-rank predictions (the hierarchical prediction is the top-1 node of each rank, here a
consistent lineage).

Comparison with flat
--------------------
:func:`compare_topdown` scores a flat and a top-down prediction of the same test images, rank by rank,
in the long results format (``rank, metric, value, ci_low, ci_high, n, n_species, n_taxa, ci_note,
note, method, mode``). At each rank ``r`` (rows labelled there, a row without a prediction counting as
wrong):

``top1``
    Accuracy of each predictor (``mode`` says which: ``flat`` or ``top-down``); the same value and CI
    as :func:`latent.metrics.evaluate_predictions` gives.
``top1_difference``
    Top-down minus flat accuracy on the same images (``mode = "top-down - flat"``), with a paired CI:
    each resample draws species once and scores both predictors on the same draw.
``consistency`` (phylum .. species)
    Among images with a top-1 at ``r`` and ``r - 1``, the share whose rank-``r`` node is a child of
    the rank-``r - 1`` node. These are the rank-wise top-1 nodes that ``top1`` scores: for a flat
    predictor the top-1 of the summed scores at each rank, which may disagree with each other (the
    metrics module's flat ``consistency`` reads the top-1 species' lineage instead, 1 by
    construction). Top-down: exactly 1.
``error_given_wrong_parent`` (phylum .. species)
    Of the images labelled at ``r - 1`` and ``r`` whose top-1 at ``r - 1`` is wrong, the share wrong
    at ``r``: how errors propagate. Top-down: exactly 1 (the true node is not a child of a wrong
    parent), except for images left without a top-1 at ``r - 1`` (no scored child there), which count
    as a wrong parent although their rank-``r`` choice may be right. ``n`` is the number of such images.
``top1_given_right_parent`` (phylum .. species)
    Of the images labelled at ``r - 1`` and ``r`` whose top-1 at ``r - 1`` is right, the accuracy at
    ``r``.

Every CI is the species (cluster) bootstrap of :mod:`latent.metrics`: the species behind a row are
resampled with :func:`latent.stats.bootstrap_distribution` (seeded, so rows over the same number of
species share their draws), every image of a species drawn twice counts twice; below
:data:`latent.stats.MIN_CLUSTERS` species, or at a rank with one true taxon, no CI (``ci_note`` says
why).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from latent.errors import InputError
from latent.predictions import Predictions
from latent.ranks import RANK_NAMES, RANKS, Rank
from latent.results import metric_row, results_frame
from latent.stats import ALPHA, MIN_CLUSTERS, bootstrap_distribution, cluster_ci_note, percentile_interval
from latent.taxonomy import Taxonomy

__all__ = ["TOPDOWN_MODE", "METHODS", "BASE_MODES", "COMPARISON_METRICS", "full_k", "topdown_predictions",
           "predict_topdown", "compare_topdown", "topdown_comparison", "summary_line"]

log = logging.getLogger(__name__)

#: ``Predictions.mode`` of a top-down prediction.
TOPDOWN_MODE = "top-down"
#: The predictors that can be walked top-down (:func:`predict_topdown`).
METHODS = ("zero-shot", "linear", "knn", "centroid")
#: Whose scores the walk reads: each rank's own classifier, or the flat species scores mapped up.
BASE_MODES = ("per-rank", "flat")
#: The metrics of :func:`compare_topdown`, in table order.
COMPARISON_METRICS = ("top1", "top1_difference", "consistency", "error_given_wrong_parent",
                      "top1_given_right_parent")
_N_RANKS = len(RANKS)
_ONE_TAXON_NOTE = "one taxon at this rank: not testable"
_ONE_TAXON_CI = "no CI: one taxon"


# ---------------------------------------------------------------------------------------- prediction
def full_k(taxonomy: Taxonomy) -> int:
    """The ``k`` that keeps every candidate at every rank: the largest number of nodes at any rank."""
    return max(1, max(taxonomy.n_nodes(r) for r in RANKS))


def _ancestor_table(taxonomy: Taxonomy) -> list[np.ndarray]:
    """Per rank ``r``, ``(n_nodes[r], 7)`` the ancestor of every node at each rank ``<= r`` (itself at
    ``r``; ``-1`` below ``r``)."""
    tables: list[np.ndarray] = []
    for r in RANKS:
        n = taxonomy.n_nodes(r)
        table = np.full((n, _N_RANKS), -1, dtype=np.int64)
        if r > 0 and n:
            table[:, :r] = tables[r - 1][np.asarray(taxonomy.node_parents[r], dtype=np.int64), :r]
        table[:, r] = np.arange(n)
        tables.append(table)
    return tables


def topdown_predictions(ranked: Predictions, *, k: int = 5) -> Predictions:
    """Walk a predictor's complete ranked lists down the tree (module docstring: *Restricted choice*).

    Parameters
    ----------
    ranked
        Predictions whose lists at every predicted rank hold every candidate taxon with its score
        (``ranked.k >= ranked.candidates(r)``: call the predictor with ``k = full_k(taxonomy)``), in
        ``per-rank`` or ``flat`` mode.
    k
        Top-``k`` kept per rank: at the kingdom the ``k`` best kingdoms, below it the ``k`` best
        children of the top-1 node above (fewer where it has fewer scored children; ``-1``/NaN pad).

    Returns
    -------
    Predictions
        ``(n, 7, k)`` codes and the predictor's scores of them; ``method`` ``"<ranked.method>-topdown"``,
        ``mode`` ``"top-down"``, ``n_candidates`` the predictor's; ``info`` the predictor's plus
        ``base_method``, ``base_mode`` and ``rows_without_child`` (per rank, the images whose chosen node
        above had no scored child there, so that rank was left unpredicted for them).

    Raises
    ------
    InputError
        ``ranked`` is not a complete ranked list, is already top-down, or ``k`` is not an integer >= 1.
    """
    function = "topdown_predictions"
    if not isinstance(ranked, Predictions):
        raise InputError(f"The 'ranked' parameter of {function} must be a Predictions. Got {type(ranked).__name__}.")
    if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k < 1:
        raise InputError(f"The 'k' parameter of {function} must be an integer >= 1. Got {k!r} instead.")
    if ranked.mode not in BASE_MODES:
        raise InputError(f"The 'ranked' parameter of {function} must be {' or '.join(BASE_MODES)} predictions. Got "
                         f"mode {ranked.mode!r} instead.")
    tax = ranked.taxonomy
    topk_in = np.asarray(ranked.topk, dtype=np.int64)
    scores_in = np.asarray(ranked.scores, dtype=np.float64)
    predicted = [r for r in RANKS if (topk_in[:, r, 0] >= 0).any()]
    for r in predicted:
        if ranked.candidates(r) > ranked.k:
            raise InputError(
                f"The 'ranked' parameter of {function} holds top-{ranked.k} lists but {ranked.candidates(r)} "
                f"candidate taxa at {r.label}: the restricted choice needs every candidate's score. Call the "
                f"predictor with k=latent.topdown.full_k(taxonomy) ({full_k(tax)})."
            )
    n = ranked.n
    ancestors = _ancestor_table(tax)
    topk = np.full((n, _N_RANKS, k), -1, dtype=np.int64)
    scores = np.full((n, _N_RANKS, k), np.nan)
    last_rank = np.full(n, -1, dtype=np.int64)  # deepest rank with a chosen node, per image
    last_node = np.full(n, -1, dtype=np.int64)
    without_child: dict[str, int] = {}
    rows = np.arange(n)
    for r in predicted:
        cand = topk_in[:, r, :]  # (n, K) best first
        valid = cand >= 0
        above = ancestors[r][np.maximum(cand, 0), np.maximum(last_rank, 0)[:, None]]  # (n, K)
        ok = valid & ((last_rank < 0)[:, None] | (above == last_node[:, None]))
        # the first k allowed entries, in the predictor's order (a stable sort keeps best-first)
        order = np.argsort(~ok, axis=1, kind="stable")[:, :k]
        keep = np.take_along_axis(ok, order, axis=1)
        width = order.shape[1]
        topk[:, r, :width] = np.where(keep, np.take_along_axis(cand, order, axis=1), -1)
        scores[:, r, :width] = np.where(keep, np.take_along_axis(scores_in[:, r, :], order, axis=1), np.nan)
        chosen = topk[:, r, 0] >= 0
        stuck = valid.any(axis=1) & ~chosen
        if stuck.any():
            without_child[r.label] = int(stuck.sum())
            log.info("top-down: %d of %d images have no scored %s under the node chosen above; %s left unpredicted "
                     "for them", int(stuck.sum()), n, r.label, r.label)
        last_rank = np.where(chosen, int(r), last_rank)
        last_node = np.where(chosen, topk[rows, r, 0], last_node)
    info = {**ranked.info, "base_method": ranked.method, "base_mode": ranked.mode, "k_scored": ranked.k,
            "rows_without_child": without_child}
    return Predictions(taxonomy=tax, rows=ranked.rows, ids=ranked.ids, true=ranked.true, topk=topk, scores=scores,
                       method=f"{ranked.method}-topdown", mode=TOPDOWN_MODE, info=info,
                       n_candidates=ranked.n_candidates)


def _find_taxonomy(args: tuple[Any, ...], options: dict[str, Any]) -> Taxonomy:
    if isinstance(options.get("taxonomy"), Taxonomy):
        return options["taxonomy"]
    for arg in args:
        if isinstance(arg, Taxonomy):
            return arg
    raise InputError("predict_topdown needs the predictor's 'taxonomy' argument (a latent Taxonomy); none was given.")


def predict_topdown(method: str, *args: Any, k: int = 5, base_mode: str = "per-rank", **options: Any) -> Predictions:
    """Top-down prediction with one of the predictors of :mod:`latent.predictors`.

    Calls the predictor (``predict_zero_shot``, ``predict_linear``, ``predict_knn`` or
    ``predict_centroid``) with its own arguments, ``mode=base_mode`` and ``k = full_k(taxonomy)`` (every
    candidate scored), then :func:`topdown_predictions`.

    Parameters
    ----------
    method
        ``zero-shot``, ``linear``, ``knn`` or ``centroid``.
    *args, **options
        The predictor's arguments, as for the flat or per-rank call (e.g. ``X_train, train_rows, X_test,
        test_rows, taxonomy, k_neighbors=20`` for kNN; ``X_test, test_rows, taxonomy, text`` for zero-shot).
    k
        Top-``k`` kept per rank (the ``k`` best children of the top-1 parent).
    base_mode
        ``per-rank`` (default: each rank's own scores) or ``flat`` (the species scores mapped up the tree).

    Returns
    -------
    Predictions
        ``method="<method>-topdown"``, ``mode="top-down"``. Memory: the predictor's lists are
        ``(n, 7, full_k)`` codes and scores (16 bytes each) before the walk keeps ``k``.
    """
    from latent import predictors

    functions = {"zero-shot": predictors.predict_zero_shot, "linear": predictors.predict_linear,
                 "knn": predictors.predict_knn, "centroid": predictors.predict_centroid}
    if method not in functions:
        raise InputError(f"The 'method' parameter of predict_topdown must be one of {', '.join(METHODS)}. "
                         f"Got {method!r} instead.")
    if base_mode not in BASE_MODES:
        raise InputError(f"The 'base_mode' parameter of predict_topdown must be one of {', '.join(BASE_MODES)}. "
                         f"Got {base_mode!r} instead.")
    if "mode" in options:
        raise InputError("predict_topdown takes 'base_mode' (per-rank or flat), not 'mode': its mode is top-down.")
    taxonomy = _find_taxonomy(args, options)
    ranked = functions[method](*args, mode=base_mode, k=full_k(taxonomy), **options)
    return topdown_predictions(ranked, k=k)


# ---------------------------------------------------------------------------------------- comparison
@dataclass(frozen=True)
class _Stat:
    """Values of a statistic of image weights over ``rows`` (indices into the test images)."""

    rank: str
    names: tuple[str, ...]
    statistic: Callable[[np.ndarray], np.ndarray]  # (c, m) row weights -> (c, len(names))
    rows: np.ndarray
    methods: tuple[str, ...]
    modes: tuple[str, ...]
    n_taxa: int
    one_taxon: bool = False


def _weighted_mean(x: np.ndarray) -> Callable[[np.ndarray], np.ndarray]:
    x = np.asarray(x, dtype=np.float64)

    def statistic(w: np.ndarray) -> np.ndarray:
        total = w.sum(axis=1)
        with np.errstate(divide="ignore", invalid="ignore"):
            return np.where(total > 0, (w @ x) / np.where(total > 0, total, 1.0), np.nan)[:, None]

    return statistic


def _run(stat: _Stat, units: np.ndarray, *, n_boot: int, seed: int, alpha: float) -> list[dict[str, Any]]:
    """Rows of the long format for one statistic: values, species-bootstrap CIs (as :mod:`latent.metrics`)."""
    m = len(stat.rows)
    species, local = np.unique(units[stat.rows], return_inverse=True)
    local = local.ravel()
    n_species = len(species)
    if m:
        values = np.asarray(stat.statistic(np.ones((1, m))), dtype=np.float64).reshape(-1)
    else:
        values = np.full(len(stat.names), np.nan)
    cis = np.full((len(stat.names), 2), np.nan)
    if not m:
        notes = ["no CI: no images"] * len(values)
    elif stat.one_taxon:
        notes = [_ONE_TAXON_CI] * len(values)
    elif n_species < MIN_CLUSTERS:
        notes = [cluster_ci_note(n_species)] * len(values)
    elif not n_boot:
        notes = ["no CI: 0 bootstrap resamples"] * len(values)
    else:
        notes = ["" if np.isfinite(v) else "no CI: value undefined" for v in values]
        if any(not note for note in notes):
            samples = bootstrap_distribution(lambda w: stat.statistic(w[:, local]), n_species, n_boot=n_boot,
                                             seed=seed)
            for j, note in enumerate(notes):
                if not note:
                    cis[j] = percentile_interval(samples[:, j], alpha, what=f"{stat.names[j]} ({stat.rank})")
    return [metric_row(stat.rank, name, values[j], tuple(cis[j]), m, n_species=n_species, n_taxa=stat.n_taxa,
                       ci_note=notes[j], note=_ONE_TAXON_NOTE if stat.one_taxon else "", method=stat.methods[j],
                       mode=stat.modes[j])
            for j, name in enumerate(stat.names)]


def _check_pair(flat: Any, topdown: Any, taxonomy: Any) -> None:
    function = "compare_topdown"
    for name, pred in (("flat", flat), ("topdown", topdown)):
        if not isinstance(pred, Predictions):
            raise InputError(f"The {name!r} parameter of {function} must be a Predictions. Got {type(pred).__name__}.")
    if not isinstance(taxonomy, Taxonomy):
        raise InputError(f"The 'taxonomy' parameter of {function} must be a Taxonomy. Got {type(taxonomy).__name__}.")
    for name, pred in (("flat", flat), ("topdown", topdown)):
        tax = pred.taxonomy
        same = tax is taxonomy or (
            all(tax.n_nodes(r) == taxonomy.n_nodes(r) for r in RANKS)
            and all(np.array_equal(tax.node_parents[r], taxonomy.node_parents[r]) for r in RANKS))
        if not same:
            raise InputError(f"The {name!r} predictions of {function} use another taxonomy than the 'taxonomy' "
                             f"parameter: predict both on the same cache's taxonomy.")
    if not (np.array_equal(flat.rows, topdown.rows) and np.array_equal(flat.true, topdown.true)):
        raise InputError(f"The 'flat' and 'topdown' parameters of {function} must predict the same test images in "
                         f"the same order ({flat.n} and {topdown.n} rows given): use one split for both.")


def compare_topdown(flat: Predictions, topdown: Predictions, taxonomy: Taxonomy, *, n_boot: int = 1000,
                    seed: int = 0, alpha: float = ALPHA) -> pd.DataFrame:
    """Flat against top-down on the same test images, rank by rank, with paired species-bootstrap CIs.

    Parameters
    ----------
    flat
        The flat predictor's predictions (any mode works as the baseline; ``mode`` labels its rows).
    topdown
        Top-down predictions of the same ``(n,)`` test rows (:func:`predict_topdown`).
    taxonomy
        The taxonomy both were predicted on (parent links decide consistency).
    n_boot
        Species-bootstrap resamples per CI (0: no CIs).
    seed
        Seed of the resampling; the same species are drawn for both predictors.
    alpha
        1 - coverage of the percentile intervals.

    Returns
    -------
    pandas.DataFrame
        The long format ``rank, metric, value, ci_low, ci_high, n, n_species, n_taxa, ci_note, note,
        method, mode``; metrics :data:`COMPARISON_METRICS` (module docstring), ranks root first, at
        ranks both predict.

    Raises
    ------
    InputError
        Not two Predictions of the same test rows on ``taxonomy``, or bad ``n_boot``/``seed``/``alpha``.
    """
    from latent.metrics import species_units

    _check_pair(flat, topdown, taxonomy)
    for name, value in (("n_boot", n_boot), ("seed", seed)):
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 0:
            raise InputError(f"The {name!r} parameter of compare_topdown must be an integer >= 0. Got {value!r}.")
    if isinstance(alpha, bool) or not isinstance(alpha, (int, float, np.floating)) or not 0 < alpha < 1:
        raise InputError(f"The 'alpha' parameter of compare_topdown must be a number in (0, 1). Got {alpha!r}.")
    true = np.asarray(flat.true, dtype=np.int64)
    units, _ = species_units(true)
    preds = (flat, topdown)
    top1 = [np.asarray(p.topk, dtype=np.int64)[:, :, 0] for p in preds]  # (n, 7) each
    methods = tuple(p.method for p in preds)
    modes = tuple(p.mode for p in preds)
    stats: list[_Stat] = []
    for r in RANKS:
        if not all((t[:, r] >= 0).any() for t in top1):
            log.info("compare_topdown: %s is not predicted by both; left out", r.label)
            continue
        labelled = np.flatnonzero(true[:, r] >= 0)
        if not len(labelled):
            continue
        truth = true[labelled, r]
        n_taxa = int(np.unique(truth).size)
        correct = np.column_stack([(t[labelled, r] == truth) for t in top1]).astype(np.float64)  # (m, 2)

        def accuracy(w: np.ndarray, correct: np.ndarray = correct) -> np.ndarray:
            acc = (w @ correct) / w.sum(axis=1)[:, None]
            return np.column_stack([acc, acc[:, 1] - acc[:, 0]])

        stats.append(_Stat(r.label, ("top1", "top1", "top1_difference"), accuracy, labelled,
                           methods + (f"{methods[1]} - {methods[0]}",), modes + (f"{modes[1]} - {modes[0]}",),
                           n_taxa, one_taxon=n_taxa < 2))
        if r == Rank.KINGDOM:
            continue
        parents = np.asarray(taxonomy.node_parents[r], dtype=np.int64)
        both = np.flatnonzero((true[:, r] >= 0) & (true[:, r - 1] >= 0))
        for i, t in enumerate(top1):
            if not (t[:, r - 1] >= 0).any():
                continue
            pair = np.flatnonzero((t[:, r] >= 0) & (t[:, r - 1] >= 0))
            consistent = (parents[t[pair, r]] == t[pair, r - 1]).astype(np.float64)
            pair_taxa = true[pair, r]
            stats.append(_Stat(r.label, ("consistency",), _weighted_mean(consistent), pair, (methods[i],), (modes[i],),
                               int(np.unique(pair_taxa[pair_taxa >= 0]).size)))
            parent_right = t[both, r - 1] == true[both, r - 1]
            right = (t[both, r] == true[both, r]).astype(np.float64)
            for name, mask, x in (("error_given_wrong_parent", ~parent_right, 1.0 - right),
                                  ("top1_given_right_parent", parent_right, right)):
                sub = both[mask]
                stats.append(_Stat(r.label, (name,), _weighted_mean(x[mask]), sub, (methods[i],), (modes[i],),
                                   int(np.unique(true[sub, r]).size)))
    rows = [row for stat in stats for row in _run(stat, units, n_boot=int(n_boot), seed=int(seed), alpha=float(alpha))]
    order = {name: i for i, name in enumerate(COMPARISON_METRICS)}
    table = results_frame(rows) if rows else results_frame([], method=None, mode=None)
    if len(table):
        table["_r"] = [RANK_NAMES.index(x) for x in table["rank"]]
        table["_m"] = table["metric"].map(order)
        table = table.sort_values(["_r", "_m"], kind="stable").drop(columns=["_r", "_m"]).reset_index(drop=True)
    log.info("compare_topdown: %s vs %s on %d images, %d rows", methods[0], methods[1], flat.n, len(table))
    return table


def topdown_comparison(predict: Callable[[str, int], Predictions], *, k: int = 5, n_boot: int = 1000, seed: int = 0,
                       score: "Callable[[Predictions], Predictions] | None" = None
                       ) -> tuple[Predictions, Predictions, pd.DataFrame]:
    """The flat and top-down predictions of one predictor on one split, and their comparison.

    Parameters
    ----------
    predict
        ``predict(mode, k) -> Predictions``: the predictor on the split, called as
        ``predict("flat", k)`` and ``predict("per-rank", full_k(taxonomy))``.
    k
        Top-``k`` kept per rank.
    n_boot, seed
        As :func:`compare_topdown`.
    score
        Applied to both predictions before they are compared (e.g. the coverage rule
        :func:`latent.splits.predictable_truth` that ``latent evaluate`` applies); None: as predicted.

    Returns
    -------
    flat, topdown : Predictions
    table : pandas.DataFrame
        :func:`compare_topdown`'s table.
    """
    flat = predict("flat", k)
    topdown = topdown_predictions(predict("per-rank", full_k(flat.taxonomy)), k=k)
    if score is not None:
        flat, topdown = score(flat), score(topdown)
    return flat, topdown, compare_topdown(flat, topdown, flat.taxonomy, n_boot=n_boot, seed=seed)


def summary_line(table: pd.DataFrame) -> str:
    """One line for a console summary: the paired top-1 difference (top-down minus flat) with its CI at
    each rank with more than one taxon, e.g. ``"top-down - flat top1: class -0.21 [-0.33, -0.10], ..."``
    (the first fold of a k-fold table, said so)."""
    rows = table[table["metric"] == "top1_difference"]
    fold = ""
    if "fold" in rows.columns and rows["fold"].notna().any():
        first = rows["fold"].dropna().astype(str).iloc[0]
        rows, fold = rows[rows["fold"].astype(str) == first], f" (fold {first})"
    if "n_taxa" in rows.columns:
        rows = rows[pd.to_numeric(rows["n_taxa"], errors="coerce") >= 2]
    cells = []
    for rank, value, low, high in rows[["rank", "value", "ci_low", "ci_high"]].itertuples(index=False):
        ci = f" [{low:+.2f}, {high:+.2f}]" if np.isfinite(low) and np.isfinite(high) else " (no CI)"
        cells.append(f"{rank} {value:+.2f}{ci}")
    return f"top-down - flat top1{fold}: " + (", ".join(cells) if cells else "no rank with more than one taxon")
