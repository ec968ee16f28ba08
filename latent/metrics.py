"""Hierarchical evaluation of ranked predictions: per-rank accuracy, mistake severity, hP/hR/hF.

:func:`evaluate_predictions` turns a :class:`~latent.predictions.Predictions` into an
:class:`EvaluationResult`: a long-format metrics table (``rank, metric, value, ci_low, ci_high, n``,
plus ``method`` and ``mode``) and three "how is it wrong" tables.

Definitions
-----------
Taxa are compared as node codes of one taxonomy, so a match is a match of full lineages (homonyms
never collapse). A row unlabelled at a rank (``true == -1``) is left out of every metric at that rank;
``n`` is always the number of rows (or mistakes) behind a value.

Per rank ``r`` (only ranks the predictor predicts, i.e. some ``topk[:, r, 0] >= 0``); rows are those
labelled at ``r``, and a labelled row without a prediction at ``r`` counts as wrong:

* ``top1``: the top-1 node is the true node; ``top5``: the true node is among the first 5
  (only when ``k >= 5``).
* ``balanced_accuracy``: mean recall over the true classes present (``sklearn.metrics.
  balanced_accuracy_score``).
* ``macro_f1``: mean over classes of ``2 TP / (2 TP + FP + FN)``, averaged over the union of the true
  and predicted classes among the evaluated rows, which is scikit-learn's default label set
  (``f1_score(average="macro")``): a class that is predicted but never true counts with F1 = 0.
* ``n_classes``: distinct true classes among the evaluated rows (no interval).
* ``consistency`` (ranks phylum..species): among rows predicted at ``r`` and ``r - 1`` in the
  hierarchical prediction (below), the fraction whose rank-``r`` node is a child of the rank-``r - 1``
  node.

Over the whole hierarchy (``rank = "all"``):

* Species-level metrics use the top-1 *species* prediction and its lineage, on rows whose true species
  is known (and that have a species prediction): ``top1_error``; ``mistake_severity`` = mean LCA height
  (0..7, :func:`latent.taxonomy.lca_height`) between predicted and true species over the mistakes only
  (Bertinetto et al. 2020; ``n`` = number of mistakes, NaN with ``n = 0`` when there are none);
  ``hdist@1`` and ``hdist@5`` = mean LCA height over all rows and their top-1 / top-5 species (correct
  ones count 0; a row's padding entries are skipped, its value is the mean of its valid entries).
* The *hierarchical prediction* ``H`` (``(n, 7)`` nodes) is, in ``flat`` mode, the lineage of the
  top-1 species (so it is consistent by construction, even where the rank-wise top-1 of summed
  probabilities differs), and in ``per-rank`` mode the top-1 node of each rank (possibly
  inconsistent). ``hP``, ``hR``, ``hF`` (micro) and ``hP_macro``, ``hR_macro``, ``hF_macro``
  (Kiritchenko et al. 2006) use ``A`` = the nodes of ``H`` (unnamed placeholder nodes of empty
  intermediate ranks are not taxa and are left out) and ``B`` = the true nodes at the labelled ranks:
  micro ``hP = sum|A & B| / sum|A|``, ``hR = sum|A & B| / sum|B|``, ``hF = 2 hP hR / (hP + hR)``; macro
  averages the per-row ``hP_i``, ``hR_i``, ``hF_i`` (``hF_i = 0`` when ``hP_i + hR_i = 0``). Rows with an
  empty ``A`` or ``B`` are left out (the per-row ratios are undefined there). These are exactly
  ``hiclass.metrics.precision/recall/f1`` on full-lineage label strings with ``""`` where a node is
  absent (hiclass drops ``""`` from both sets). A prediction deeper than the truth (a species predicted
  for a row known only to genus) enlarges ``A`` and so lowers ``hP``.
* ``hca`` (hierarchically consistent accuracy, ProTeCt): on rows whose true species is known, the
  fraction with ``H`` right at every labelled rank that the predictor predicts (all seven, except
  ranks left unnamed in the taxonomy, which have no truth to compare, and ranks not predicted at all,
  such as the species on a species-disjoint split).
* ``consistency``: the fraction of rows whose every adjacent pair of predicted ranks in ``H`` is
  consistent (rows with at least one such pair).

Every value except ``n_classes`` has a percentile bootstrap interval from resampling the rows behind
it (seeded; :mod:`latent.stats`), vectorised over resamples with resampling weights.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd
from scipy import sparse

from latent.errors import InputError
from latent.predictions import Predictions
from latent.ranks import RANK_NAMES, RANKS, Rank
from latent.results import metric_row, results_frame
from latent.stats import MAX_ELEMENTS, bootstrap_distribution, percentile_interval
from latent.taxonomy import Taxonomy

__all__ = [
    "EvaluationResult",
    "evaluate_predictions",
    "hierarchical_predictions",
    "paired_lca_height",
    "MODES",
    "DIVERGENCE_LABELS",
]

log = logging.getLogger(__name__)

N_RANKS = len(RANKS)
MAX_HEIGHT = N_RANKS
MODES = ("flat", "per-rank")
#: Categories of the divergence table, root first: the rank where the lineages first differ, or correct.
DIVERGENCE_LABELS = tuple(RANK_NAMES) + ("correct",)
TOP_K = 5

Statistic = Callable[[np.ndarray], np.ndarray]


@dataclass(frozen=True)
class EvaluationResult:
    """Metrics of one set of predictions.

    Attributes
    ----------
    metrics : pandas.DataFrame
        Long format ``rank, metric, value, ci_low, ci_high, n, method, mode`` (see module docstring).
    severity_histogram : pandas.DataFrame
        ``height`` 1..7, ``count`` of top-1 species mistakes at that LCA height, ``fraction`` of the
        mistakes (NaN when there are none), plus ``method``, ``mode``.
    divergence : pandas.DataFrame
        ``divergence`` (``kingdom`` .. ``species``: the highest rank at which the top-1 species'
        lineage differs from the truth; ``correct``), ``count``, ``fraction`` of the rows with a
        known species, plus ``method``, ``mode``.
    confusions : pandas.DataFrame
        ``rank, true, pred, true_lineage, pred_lineage, count, n_true``: at each rank, the most
        frequent wrong (true, predicted) pairs, most frequent first (``n_true`` = evaluated rows of
        that true taxon); names are node names, lineages ``"Kingdom;Phylum;...;name"``.
    info : dict
        ``method``, ``mode``, ``n`` rows, ``n_boot``, ``seed``, ``alpha``.
    """

    metrics: pd.DataFrame
    severity_histogram: pd.DataFrame
    divergence: pd.DataFrame
    confusions: pd.DataFrame
    info: dict[str, Any] = field(default_factory=dict)

    def to_frame(self) -> pd.DataFrame:
        """The metrics table in the long format (a copy)."""
        return self.metrics.copy()

    def value(self, metric: str, rank: str = "all") -> float:
        """The value of one metric (``rank`` a rank name or ``"all"``); KeyError if absent."""
        hit = self.metrics[(self.metrics["rank"] == rank) & (self.metrics["metric"] == metric)]
        if hit.empty:
            raise KeyError(f"No metric {metric!r} at rank {rank!r}.")
        return float(hit["value"].iloc[0])


# ---------------------------------------------------------------------- helpers
def paired_lca_height(codes_a: np.ndarray, codes_b: np.ndarray) -> np.ndarray:
    """LCA height between paired lineages (the diagonal of :func:`latent.taxonomy.lca_height`).

    Parameters
    ----------
    codes_a, codes_b
        ``(..., 7)`` integer lineage codes of the same shape (or broadcastable); ``-1`` (unknown)
        never counts as shared.

    Returns
    -------
    numpy.ndarray
        ``(...)`` ``int64``: 7 minus the number of ranks the two lineages share.
    """
    a = np.asarray(codes_a)
    b = np.asarray(codes_b)
    shared = (a == b) & (a >= 0)
    return MAX_HEIGHT - shared.sum(axis=-1, dtype=np.int64)


def hierarchical_predictions(pred: Predictions) -> np.ndarray:
    """The one predicted lineage per row used by hP/hR/hF, HCA and consistency.

    Returns
    -------
    numpy.ndarray
        ``(n, 7)`` node codes: in ``flat`` mode the lineage of the top-1 species (``-1`` rows where no
        species is predicted); in ``per-rank`` mode the top-1 node of each rank.
    """
    topk = np.asarray(pred.topk, dtype=np.int64)
    if pred.mode == "flat":
        species = topk[:, Rank.SPECIES, 0]
        lineages = pred.taxonomy.species_codes[np.maximum(species, 0)]
        return np.where((species >= 0)[:, None], lineages, -1)
    return topk[:, :, 0].copy()


@dataclass(frozen=True)
class _Job:
    """Metrics computed from one statistic of resampling weights over ``m`` rows.

    ``statistic`` maps ``(c, m)`` weights to ``(c, len(names))`` values; ``n`` is the ``n`` column of
    each metric; ``emit`` says which of them become rows; ``width`` is the number of values per
    resample the statistic holds in memory at once (e.g. the number of classes), to size the chunks.
    """

    rank: str
    names: tuple[str, ...]
    statistic: Statistic
    m: int
    n: tuple[int, ...]
    emit: tuple[bool, ...]
    width: int = 0


def _job(rank: str, names: tuple[str, ...], statistic: Statistic, m: int,
         n: "tuple[int, ...] | None" = None, emit: "tuple[bool, ...] | None" = None, width: int = 0) -> _Job:
    return _Job(rank, names, statistic, m, n or (m,) * len(names), emit or (True,) * len(names), width)


def _mean_job(rank: str, name: str, x: np.ndarray) -> _Job:
    return _job(rank, (name,), lambda w: (w @ x) / w.sum(axis=1), len(x))


def _run_jobs(items: "list[_Job | dict[str, Any]]", *, n_boot: int, seed: int, alpha: float) -> list[dict[str, Any]]:
    """Point values and percentile intervals of every job; rows in the order given.

    Jobs over the same number of rows share one pass over the resamples: the resamples depend only on
    ``(m, n_boot, seed)`` (:func:`latent.stats.bootstrap_indices`), so sharing gives exactly the
    intervals of separate runs, at the cost of one set of resampling weights.
    """
    jobs = [item for item in items if isinstance(item, _Job)]
    results: dict[int, tuple[np.ndarray, np.ndarray]] = {}
    for m in sorted({job.m for job in jobs}):
        group = [job for job in jobs if job.m == m]
        widths = [len(job.names) for job in group]
        total = sum(widths)
        values = np.full(total, np.nan)
        cis = np.full((total, 2), np.nan)
        if m:
            def statistic(w: np.ndarray, group: list[_Job] = group) -> np.ndarray:
                return np.column_stack([np.asarray(job.statistic(w), dtype=np.float64).reshape(len(w), -1)
                                        for job in group])

            with np.errstate(divide="ignore", invalid="ignore"):
                values = statistic(np.ones((1, m)))[0]
                if n_boot:
                    # Chunks bounded by the widest per-resample array (weights or class counts).
                    widest = max([m] + [4 * job.width for job in group])
                    samples = bootstrap_distribution(statistic, m, n_boot=n_boot, seed=seed,
                                                     max_elements=max(1, MAX_ELEMENTS * m // widest))
            if n_boot:
                names = [f"{name} ({job.rank})" for job in group for name in job.names]
                for j, name in enumerate(names):
                    if not np.isnan(values[j]):  # no interval around an undefined value
                        cis[j] = percentile_interval(samples[:, j], alpha, what=name)
        offsets = np.cumsum([0] + widths)
        for job, lo in zip(group, offsets[:-1]):
            results[id(job)] = (values[lo:lo + len(job.names)], cis[lo:lo + len(job.names)])
    rows: list[dict[str, Any]] = []
    for item in items:
        if not isinstance(item, _Job):
            rows.append(item)
            continue
        values, cis = results[id(item)]
        for j, name in enumerate(item.names):
            if item.emit[j]:
                rows.append(metric_row(item.rank, name, values[j], tuple(cis[j]), item.n[j]))
    return rows


def _ratio(num: np.ndarray, den: np.ndarray) -> np.ndarray:
    return np.where(den > 0, num / np.where(den > 0, den, 1.0), np.nan)


def _lineage_strings(taxonomy: Taxonomy, rank: int, nodes: np.ndarray) -> list[str]:
    return [";".join(taxonomy.lineage(rank, int(node))) for node in nodes]


def _validate(pred: Predictions, n_boot: object, seed: object, alpha: object, top_confusions: object) -> None:
    if not isinstance(pred, Predictions):
        raise TypeError(
            f"The 'pred' parameter of evaluate_predictions must be a Predictions. Got {type(pred).__name__} instead."
        )
    for name, value, minimum in (("n_boot", n_boot, 0), ("seed", seed, 0), ("top_confusions", top_confusions, 0)):
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < minimum:
            raise ValueError(
                f"The {name!r} parameter of evaluate_predictions must be an integer >= {minimum}. "
                f"Got {value!r} instead."
            )
    if isinstance(alpha, bool) or not isinstance(alpha, (int, float, np.number)) or not 0 < float(alpha) < 1:
        raise ValueError(
            f"The 'alpha' parameter of evaluate_predictions must be a number in (0, 1). Got {alpha!r} instead."
        )
    if pred.mode not in MODES:
        raise InputError(f"Predictions.mode must be one of {', '.join(MODES)}. Got {pred.mode!r} instead.")
    tax = pred.taxonomy
    for what, array in (("true", pred.true), ("topk", pred.topk)):
        a = np.asarray(array)
        if not np.issubdtype(a.dtype, np.integer):
            raise InputError(f"Predictions.{what} must hold integer node codes. Got dtype {a.dtype} instead.")
        for r in RANKS:
            col = a[:, r]
            bad = (col < -1) | (col >= tax.n_nodes(r))
            if bad.any():
                raise InputError(
                    f"Predictions.{what} holds codes outside -1..{tax.n_nodes(r) - 1} at rank {r.label}: "
                    f"{np.unique(col[bad])[:10].tolist()}. Codes must be nodes of Predictions.taxonomy."
                )


# ---------------------------------------------------------------------- per rank
def _rank_metrics(true: np.ndarray, topk: np.ndarray, rank: Rank) -> "list[_Job | dict[str, Any]]":
    """top1, top5, balanced_accuracy, macro_f1, n_classes at one rank (rows labelled there)."""
    label = rank.label
    rows = np.flatnonzero(true[:, rank] >= 0)
    m = len(rows)
    t = true[rows, rank]
    cand = topk[rows, rank, :]
    p1 = cand[:, 0]
    missing = int(np.count_nonzero(p1 < 0))
    if missing:
        log.warning("rank %s: %d of %d labelled rows have no prediction; counted as wrong", label, missing, m)
    with_top5 = topk.shape[2] >= TOP_K
    correct = (p1 == t).astype(np.float64)
    in_top = (cand[:, :TOP_K] == t[:, None]).any(axis=1).astype(np.float64)
    # Compact class indices over the union of true and predicted codes (sklearn's label set).
    classes = np.unique(np.concatenate([t, p1]))
    ti = np.searchsorted(classes, t)
    pi = np.searchsorted(classes, p1)
    n_cls = len(classes)
    cols = np.arange(m)
    ones = np.ones(m)
    onehot_true = sparse.csr_matrix((ones, (ti, cols)), shape=(n_cls, m))
    onehot_tp = sparse.csr_matrix((correct, (ti, cols)), shape=(n_cls, m))
    onehot_pred = sparse.csr_matrix((ones, (pi, cols)), shape=(n_cls, m))
    per_row = np.stack([correct, in_top], axis=1)

    def statistic(w: np.ndarray) -> np.ndarray:
        total = w.sum(axis=1)
        acc = (w @ per_row) / total[:, None]
        wt = np.ascontiguousarray(w.T)
        n_true = (onehot_true @ wt).T  # (c, C)
        tp = (onehot_tp @ wt).T
        n_pred = (onehot_pred @ wt).T
        present = n_true > 0
        recall = np.where(present, tp / np.where(present, n_true, 1.0), 0.0)
        balanced = recall.sum(axis=1) / present.sum(axis=1)
        denom = n_true + n_pred
        seen = denom > 0
        f1 = np.where(seen, 2 * tp / np.where(seen, denom, 1.0), 0.0)
        macro = f1.sum(axis=1) / seen.sum(axis=1)
        return np.column_stack([acc, balanced, macro])

    names = ("top1", "top5", "balanced_accuracy", "macro_f1")
    emit = (True, with_top5, True, True)
    return [_job(label, names, statistic, m, emit=emit, width=n_cls),
            metric_row(label, "n_classes", float(len(np.unique(t))), None, m)]


def _rank_confusions(
    taxonomy: Taxonomy, true: np.ndarray, topk: np.ndarray, rank: Rank, top: int,
) -> pd.DataFrame:
    """The ``top`` most frequent wrong (true, predicted) pairs at one rank."""
    t_all = true[:, rank]
    p_all = topk[:, rank, 0]
    evaluated = t_all >= 0
    wrong = evaluated & (p_all >= 0) & (p_all != t_all)
    n_nodes = taxonomy.n_nodes(rank)
    keys, counts = np.unique(t_all[wrong] * n_nodes + p_all[wrong], return_counts=True)
    order = np.lexsort((keys, -counts))[:top]  # most frequent first, ties by (true, pred) code
    keys, counts = keys[order], counts[order]
    t_codes, p_codes = keys // n_nodes, keys % n_nodes
    n_true = np.bincount(t_all[evaluated], minlength=n_nodes)[t_codes]
    names = np.asarray(taxonomy.node_names[rank], dtype=object)
    return pd.DataFrame({
        "rank": rank.label,
        "true": names[t_codes].astype(str),
        "pred": names[p_codes].astype(str),
        "true_lineage": _lineage_strings(taxonomy, rank, t_codes),
        "pred_lineage": _lineage_strings(taxonomy, rank, p_codes),
        "count": counts.astype(np.int64),
        "n_true": n_true.astype(np.int64),
    })


# ---------------------------------------------------------------------- whole hierarchy
def _species_metrics(taxonomy: Taxonomy, true: np.ndarray, topk: np.ndarray) -> tuple[list[_Job], np.ndarray]:
    """top1_error, mistake_severity, hdist@1, hdist@5; also the ``(m,)`` top-1 heights."""
    species_codes = taxonomy.species_codes
    known = true[:, Rank.SPECIES] >= 0
    predicted = topk[:, Rank.SPECIES, 0] >= 0
    n_unpredicted = int(np.count_nonzero(known & ~predicted))
    if n_unpredicted:
        log.warning("%d rows with a known species have no species prediction; left out of the species-level "
                    "metrics", n_unpredicted)
    rows = np.flatnonzero(known & predicted)
    m = len(rows)
    truth = species_codes[true[rows, Rank.SPECIES]]  # (m, 7) full lineages, placeholders included
    cand = topk[rows, Rank.SPECIES, :TOP_K]  # (m, k')
    valid = cand >= 0
    heights = paired_lca_height(truth[:, None, :], species_codes[np.maximum(cand, 0)]).astype(np.float64)
    h1 = heights[:, 0] if m else np.zeros(0)
    mistake = (h1 > 0).astype(np.float64)
    n_valid = valid.sum(axis=1)
    h5 = np.where(valid, heights, 0.0).sum(axis=1) / np.maximum(n_valid, 1)
    per_row = np.column_stack([mistake, h1 * mistake, h1, h5])

    def statistic(w: np.ndarray) -> np.ndarray:
        s = w @ per_row
        total = w.sum(axis=1)
        return np.column_stack([s[:, 0] / total, _ratio(s[:, 1], s[:, 0]), s[:, 2] / total, s[:, 3] / total])

    names = ("top1_error", "mistake_severity", "hdist@1", "hdist@5")
    n_mistakes = int(mistake.sum())
    job = _job("all", names, statistic, m, n=(m, n_mistakes, m, m), emit=(True, True, True, topk.shape[2] >= TOP_K))
    return [job], h1.astype(np.int64)


def _set_metrics(taxonomy: Taxonomy, true: np.ndarray, hier: np.ndarray) -> list[_Job]:
    """hP, hR, hF (micro and macro), hca and consistency of the hierarchical prediction ``hier``."""
    n = len(true)
    placeholder = np.zeros(hier.shape, dtype=bool)
    for r in RANKS:
        is_placeholder = np.asarray(taxonomy.node_names[r], dtype=object) == ""
        if is_placeholder.size:
            placeholder[:, r] = is_placeholder[np.maximum(hier[:, r], 0)]
    in_a = (hier >= 0) & ~placeholder
    in_b = true >= 0
    inter = (in_a & in_b & (hier == true)).sum(axis=1).astype(np.float64)
    size_a = in_a.sum(axis=1).astype(np.float64)
    size_b = in_b.sum(axis=1).astype(np.float64)
    used = (size_a > 0) & (size_b > 0)
    if n - int(used.sum()):
        log.info("hP/hR/hF: %d of %d rows left out (no predicted or no true node)", n - int(used.sum()), n)
    ia, sa, sb = inter[used], size_a[used], size_b[used]
    p_i, r_i = ia / sa, ia / sb
    f_i = np.where(p_i + r_i > 0, 2 * p_i * r_i / np.where(p_i + r_i > 0, p_i + r_i, 1.0), 0.0)
    per_row = np.column_stack([ia, sa, sb, p_i, r_i, f_i])

    def set_statistic(w: np.ndarray) -> np.ndarray:
        s = w @ per_row
        total = w.sum(axis=1)
        hp, hr = s[:, 0] / s[:, 1], s[:, 0] / s[:, 2]
        hf = np.where(hp + hr > 0, 2 * hp * hr / np.where(hp + hr > 0, hp + hr, 1.0), 0.0)
        return np.column_stack([hp, hr, hf, s[:, 3] / total, s[:, 4] / total, s[:, 5] / total])

    names = ("hP", "hR", "hF", "hP_macro", "hR_macro", "hF_macro")
    out = [_job("all", names, set_statistic, int(used.sum()))]

    # HCA: right at every labelled rank, on rows whose species is known.
    hca_rows = true[:, Rank.SPECIES] >= 0
    # Only ranks the predictor predicts take part (a species-disjoint split predicts no species).
    predicted_ranks = (hier >= 0).any(axis=0)
    right = ((hier == true) | (true < 0) | ~predicted_ranks).all(axis=1)[hca_rows].astype(np.float64)
    out.append(_mean_job("all", "hca", right))

    # Consistency: rank r's node is a child of rank r-1's node, for adjacent predicted ranks.
    pair_valid = np.zeros((n, N_RANKS - 1), dtype=bool)
    pair_ok = np.zeros((n, N_RANKS - 1), dtype=bool)
    for r in RANKS[1:]:
        valid = (hier[:, r] >= 0) & (hier[:, r - 1] >= 0)
        parents = np.asarray(taxonomy.node_parents[r], dtype=np.int64)
        ok = valid & (parents[np.maximum(hier[:, r], 0)] == hier[:, r - 1]) if parents.size else valid & False
        pair_valid[:, r - 1], pair_ok[:, r - 1] = valid, ok
        if valid.any():
            out.append(_mean_job(r.label, "consistency", ok[valid].astype(np.float64)))
    any_pair = pair_valid.any(axis=1)
    if any_pair.any():
        out.append(_mean_job("all", "consistency", (pair_ok | ~pair_valid).all(axis=1)[any_pair].astype(np.float64)))
    return out


def _severity_tables(h1: np.ndarray) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Histogram of mistake heights (1..7) and divergence ranks (kingdom..species, correct)."""
    counts = np.bincount(h1, minlength=MAX_HEIGHT + 1)  # index = height 0..7
    n_mistakes = int(counts[1:].sum())
    with np.errstate(divide="ignore", invalid="ignore"):
        hist = pd.DataFrame({
            "height": np.arange(1, MAX_HEIGHT + 1),
            "count": counts[1:].astype(np.int64),
            "fraction": counts[1:] / n_mistakes if n_mistakes else np.full(MAX_HEIGHT, np.nan),
        })
    # Height h > 0 means the lineages first differ at rank 7 - h (h = 7: kingdom, h = 1: species).
    div_counts = np.append(counts[MAX_HEIGHT:0:-1], counts[0]).astype(np.int64)
    total = len(h1)
    divergence = pd.DataFrame({
        "divergence": list(DIVERGENCE_LABELS),
        "count": div_counts,
        "fraction": div_counts / total if total else np.full(len(DIVERGENCE_LABELS), np.nan),
    })
    return hist, divergence


# ---------------------------------------------------------------------- entry point
def evaluate_predictions(
    pred: Predictions,
    *,
    n_boot: int = 1000,
    seed: int = 0,
    alpha: float = 0.05,
    top_confusions: int = 10,
) -> EvaluationResult:
    """Hierarchical evaluation of ranked predictions (definitions in the module docstring).

    Parameters
    ----------
    pred
        ``Predictions`` with ``true (n, 7)`` and ``topk (n, 7, k)`` node codes of ``pred.taxonomy``.
    n_boot
        Bootstrap resamples of the rows for every interval (0: no intervals, NaN).
    seed
        Seed of the resampling; the same seed gives the same intervals.
    alpha
        1 - coverage of the percentile intervals.
    top_confusions
        How many of the most frequent wrong pairs to keep per rank.

    Returns
    -------
    EvaluationResult
        ``metrics`` (long format), ``severity_histogram``, ``divergence``, ``confusions``.

    Raises
    ------
    InputError
        ``pred.mode`` is not ``flat`` or ``per-rank``, or a code is not a node of the taxonomy.
    """
    _validate(pred, n_boot, seed, alpha, top_confusions)
    n_boot, seed, alpha = int(n_boot), int(seed), float(alpha)
    tax = pred.taxonomy
    true = np.asarray(pred.true, dtype=np.int64)
    topk = np.asarray(pred.topk, dtype=np.int64)
    boot = {"n_boot": n_boot, "seed": seed, "alpha": alpha}
    if pred.k < TOP_K:
        log.info("k = %d < %d: top5 and hdist@5 not computed", pred.k, TOP_K)

    items: list[_Job | dict[str, Any]] = []
    confusions = []
    for rank in RANKS:
        if not (topk[:, rank, 0] >= 0).any():
            log.debug("rank %s: not predicted, skipped", rank.label)
            continue
        items += _rank_metrics(true, topk, rank)
        confusions.append(_rank_confusions(tax, true, topk, rank, int(top_confusions)))

    h1 = np.zeros(0, dtype=np.int64)
    if (topk[:, Rank.SPECIES, 0] >= 0).any():
        species_jobs, h1 = _species_metrics(tax, true, topk)
        items += species_jobs
    else:
        log.info("species not predicted: species-level metrics (severity, hdist) skipped")
    items += _set_metrics(tax, true, hierarchical_predictions(pred))
    rows = _run_jobs(items, **boot)

    constant = {"method": pred.method, "mode": pred.mode}
    metrics = results_frame(rows, **constant)
    hist, divergence = _severity_tables(h1)
    columns = ["rank", "true", "pred", "true_lineage", "pred_lineage", "count", "n_true"]
    confusion_frame = (pd.concat(confusions, ignore_index=True) if confusions
                       else pd.DataFrame({c: [] for c in columns}))
    info = {**constant, "n": pred.n, **boot}
    log.info("evaluated %d rows (%s, %s): %d metric rows", pred.n, pred.method, pred.mode, len(metrics))
    return EvaluationResult(
        metrics=metrics,
        severity_histogram=hist.assign(**constant),
        divergence=divergence.assign(**constant),
        confusions=confusion_frame.assign(**constant),
        info=info,
    )
