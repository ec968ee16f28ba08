"""Hierarchical evaluation of ranked predictions: per-rank accuracy, mistake severity, hP/hR/hF.

:func:`evaluate_predictions` turns a :class:`~latent.predictions.Predictions` into an
:class:`EvaluationResult`: a long-format metrics table (``rank, metric, value, ci_low, ci_high, n``,
then ``n_species, n_taxa, ci_note, note``, plus ``method`` and ``mode``) and three "how is it wrong"
tables.

Columns
-------
``n``
    Rows (images; mistakes for ``mistake_severity``) behind the value.
``n_species``
    Species behind the value: the independent units it rests on and its CI resamples (below). A row
    whose species is unknown belongs to the unit of the deepest taxon it is known to (its unknown
    species), so this counts distinct "deepest known taxa" among the rows.
``n_taxa``
    Distinct true taxa at the row's rank among the rows behind the value (at ``rank = "all"``: the
    distinct deepest known taxa, i.e. ``n_species``).
``ci_note``
    ``""`` when the row has a CI, else why not: fewer than :data:`latent.stats.MIN_CLUSTERS` species
    (``"no CI: 4 species (< 10)"``), one taxon, an undefined value, or ``n_boot = 0``.
``note``
    What the reader must know to read the value: ``"one taxon at this rank: not testable"``, ranks left out of
    the hierarchical metrics, rows whose top-k list was shorter than k.

Definitions
-----------
Taxa are compared as node codes of one taxonomy, so a match is a match of full lineages (homonyms
never collapse). A row unlabelled at a rank (``true == -1``) is left out of every metric at that rank.

Per rank ``r`` (only ranks the predictor predicts, i.e. some ``topk[:, r, 0] >= 0``); rows are those
labelled at ``r``, and a labelled row without a prediction at ``r`` counts as wrong:

* ``top1``: the top-1 node is the true node.
* ``top5``: the true node is among the first 5. Reported only when ``k >= 5`` and the rank has more
  than 5 candidates (:meth:`~latent.predictions.Predictions.candidates`): with 5 or fewer it is
  trivially 1. A row whose list holds fewer than 5 taxa (kNN: only taxa its neighbours vote for) is
  not padded: the truth beyond its list counts as missed, and ``note`` says in how many rows.
* ``balanced_accuracy``: mean recall over the true classes present (``sklearn.metrics.
  balanced_accuracy_score``).
* ``macro_f1``: mean over classes of ``2 TP / (2 TP + FP + FN)``, averaged over the union of the true
  and predicted classes among the evaluated rows, which is scikit-learn's default label set
  (``f1_score(average="macro")``): a class that is predicted but never true counts with F1 = 0. In a
  species-bootstrap resample the label set is the true classes drawn plus those never-true classes: a
  true class none of whose species was drawn is not a class of that resample (counting it with F1 = 0
  would bias every resample downwards).
* ``n_classes``: distinct true classes among the evaluated rows (no interval).
* **One taxon.** At a rank with a single true taxon among its rows (``n_taxa = 1``, e.g. one kingdom;
  the rank :func:`informative_ranks` leaves out as ``"one taxon"``) accuracy does not measure taxonomic
  knowledge: ``top1``, ``top5``, ``balanced_accuracy`` and ``macro_f1`` keep their value (as computed)
  but get ``note = "one taxon at this rank: not testable"`` (the word the verdicts use for such a
  rank), with "(one candidate taxon: any predictor scores 1)" when the predictor had no other taxon
  to choose, and no CI (``ci_note = "no CI: one taxon"``). So does the species ``top1_error``.
* ``consistency`` (ranks order..species, see *informative ranks*): among rows predicted at ``r`` and
  ``r - 1`` in the hierarchical prediction (below), the fraction whose rank-``r`` node is a child of
  the rank-``r - 1`` node. Only pairs of two informative ranks count.

*Informative ranks* (for hP/hR/hF, ``hca`` and ``consistency``): ranks the predictor predicts (some row
has a prediction there) with at least two distinct true taxa among the test rows. A rank with one true
taxon is root-like (every prediction that stays inside the truth's clade matches it trivially), and a
rank the split cannot predict (the species of a species-disjoint split, whose test species were never
trained) would count against recall a node no prediction could hold. Both are left out, and the
``note`` of those rows names them.

Over the whole hierarchy (``rank = "all"``):

* Species-level metrics use the top-1 *species* prediction and its lineage, on rows whose true species
  is known (and that have a species prediction): ``top1_error``; ``mistake_severity`` = mean LCA height
  (0..7, :func:`latent.taxonomy.lca_height`) between predicted and true species over the mistakes only
  (Bertinetto et al. 2020; ``n`` = number of mistakes, NaN with ``n = 0`` when there are none);
  ``hdist@1`` and ``hdist@5`` = mean LCA height over all rows and their top-1 / top-5 species (correct
  ones count 0; a row's padding entries are skipped, its value is the mean of its valid entries;
  ``hdist@5`` follows the ``top5`` rule: not reported with 5 or fewer species candidates).
  ``top1_error`` follows the one-class rule of the species rank.
* The *hierarchical prediction* ``H`` (``(n, 7)`` nodes) is, in ``flat`` mode, the lineage of the
  top-1 species (so it is consistent by construction, even where the rank-wise top-1 of summed
  probabilities differs), and in ``per-rank`` and ``top-down`` (:mod:`latent.topdown`) mode the
  top-1 node of each rank (possibly inconsistent per-rank, consistent by construction top-down).
  ``hP``, ``hR``, ``hF`` (micro) and ``hP_macro``, ``hR_macro``, ``hF_macro``
  (Kiritchenko et al. 2006) use, at the informative ranks only, ``A`` = the nodes of ``H`` (unnamed
  placeholder nodes of empty intermediate ranks are not taxa and are left out) and ``B`` = the true
  nodes at the labelled ranks: micro ``hP = sum|A & B| / sum|A|``, ``hR = sum|A & B| / sum|B|``,
  ``hF = 2 hP hR / (hP + hR)``; macro averages the per-row ``hP_i``, ``hR_i``, ``hF_i`` (``hF_i = 0``
  when ``hP_i + hR_i = 0``). Rows with an empty ``A`` or ``B`` are left out (the per-row ratios are
  undefined there). These are exactly ``hiclass.metrics.precision/recall/f1`` on full-lineage label
  strings of the informative ranks with ``""`` where a node is absent (hiclass drops ``""`` from both
  sets). A prediction deeper than the truth (a species predicted for a row known only to genus)
  enlarges ``A`` and so lowers ``hP``.
* ``hca`` (hierarchically consistent accuracy, ProTeCt): on rows whose true species is known, the
  fraction with ``H`` right at every informative rank where the row is labelled (ranks left unnamed
  in the taxonomy have no truth to compare).
* ``consistency``: the fraction of rows whose every adjacent pair of informative ranks predicted in
  ``H`` is consistent (rows with at least one such pair).

Uncertainty
-----------
Images of one species are not independent, so every interval is a **species (cluster) bootstrap**:
each resample draws the ``n_species`` species behind the value with replacement
(:func:`latent.stats.bootstrap_indices` over the species, numbered in order of (deepest known rank,
node code); seeded), and every row of a drawn species counts as many times as the species is drawn;
the statistic is recomputed on those row weights and the percentile interval taken
(:func:`latent.stats.cluster_ci` gives the same interval for one statistic). An image bootstrap would
treat the images of a species as independent draws and give intervals too narrow whenever species
differ (the within-species correlation is ignored). With fewer than :data:`latent.stats.MIN_CLUSTERS`
species a percentile interval is unreliable: the value is given without a CI and ``ci_note`` says so.
``n_classes`` has no interval. Resamples are vectorised as weights (``(c, n_species)`` species
weights mapped to ``(c, m)`` row weights). In the class-averaged metrics (``balanced_accuracy``,
``macro_f1``) a species drawn twice is still one class (its rows weigh twice, its recall counts once),
exactly as scikit-learn scores the resampled rows; their intervals are therefore slightly conservative.
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
from latent.stats import MAX_ELEMENTS, MIN_CLUSTERS, bootstrap_distribution, cluster_ci_note, percentile_interval
from latent.taxonomy import Taxonomy

__all__ = [
    "EvaluationResult",
    "evaluate_predictions",
    "hierarchical_predictions",
    "paired_lca_height",
    "MODES",
    "DIVERGENCE_LABELS",
    "ONE_CLASS_NOTE",
    "species_units",
    "informative_ranks",
]

log = logging.getLogger(__name__)

N_RANKS = len(RANKS)
MAX_HEIGHT = N_RANKS
MODES = ("flat", "per-rank", "top-down")
#: Categories of the divergence table, root first: the rank where the lineages first differ, or correct.
DIVERGENCE_LABELS = tuple(RANK_NAMES) + ("correct",)
TOP_K = 5
#: ``note`` of accuracy rows at a rank with a single true taxon among the scored rows: the same rank is
#: "not testable" in the verdicts (:mod:`latent.verdict`, reason "one taxon").
ONE_CLASS_NOTE = "one taxon at this rank: not testable"
#: Added to :data:`ONE_CLASS_NOTE` when the predictor also had a single candidate taxon there.
_ONE_CANDIDATE = " (one candidate taxon: any predictor scores 1)"
_ONE_CLASS_CI = "no CI: one taxon"

Statistic = Callable[[np.ndarray], np.ndarray]


@dataclass(frozen=True)
class EvaluationResult:
    """Metrics of one set of predictions.

    Attributes
    ----------
    metrics : pandas.DataFrame
        Long format ``rank, metric, value, ci_low, ci_high, n, n_species, n_taxa, ci_note, note, method,
        mode`` (see the module docstring).
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
        ``method``, ``mode``, ``n`` rows, ``n_boot``, ``seed``, ``alpha``, ``bootstrap_unit``
        (``"species"``), ``min_clusters``, ``n_species`` (units among all rows), ``informative_ranks``
        and ``left_out_ranks`` (``{rank: reason}``) of the hierarchical metrics.
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
        species is predicted); in ``per-rank`` and ``top-down`` mode the top-1 node of each rank.
    """
    topk = np.asarray(pred.topk, dtype=np.int64)
    if pred.mode == "flat":
        species = topk[:, Rank.SPECIES, 0]
        lineages = pred.taxonomy.species_codes[np.maximum(species, 0)]
        return np.where((species >= 0)[:, None], lineages, -1)
    return topk[:, :, 0].copy()


def species_units(true: np.ndarray) -> tuple[np.ndarray, int]:
    """The resampling unit (species) of every row.

    Parameters
    ----------
    true
        ``(n, 7)`` true node codes (``-1`` unlabelled).

    Returns
    -------
    units : numpy.ndarray
        ``(n,)`` int64 in ``[0, n_units)``: rows of one species share a unit. A row whose species is
        unknown belongs to the unit of the deepest taxon it is known to; a row with no label at all is
        a unit of its own. Units are numbered in order of (deepest known rank, node code), so rows all
        known to species are numbered by species code.
    n_units : int
    """
    t = np.asarray(true, dtype=np.int64)
    n = len(t)
    if not n:
        return np.zeros(0, dtype=np.int64), 0
    labelled = t >= 0
    depth = np.where(labelled.any(axis=1), N_RANKS - 1 - np.argmax(labelled[:, ::-1], axis=1), -1)
    code = t[np.arange(n), np.maximum(depth, 0)]
    width = int(t.max()) + 1 if labelled.any() else 1
    key = np.where(depth >= 0, depth * width + code, -1 - np.arange(n))
    uniq, units = np.unique(key, return_inverse=True)
    return units.astype(np.int64).ravel(), int(len(uniq))


def informative_ranks(pred_or_true: "Predictions | np.ndarray", hier: "np.ndarray | None" = None
                      ) -> tuple[np.ndarray, dict[str, str]]:
    """Which ranks take part in hP/hR/hF, ``hca`` and ``consistency`` (module docstring).

    Parameters
    ----------
    pred_or_true
        A :class:`Predictions` (``hier`` is then its :func:`hierarchical_predictions`), or ``(n, 7)``
        true codes with ``hier`` ``(n, 7)`` predicted codes.

    Returns
    -------
    keep : numpy.ndarray
        ``(7,)`` bool: predicted at some row and at least two distinct true taxa among the rows.
    left_out : dict
        ``{rank name: reason}`` for the other ranks (``"one taxon"``, ``"not predicted"``).
    """
    if isinstance(pred_or_true, Predictions):
        true, hier = np.asarray(pred_or_true.true), hierarchical_predictions(pred_or_true)
    else:
        true = np.asarray(pred_or_true)
        if hier is None:
            raise ValueError("informative_ranks needs the predicted codes 'hier' with an array of true codes.")
    keep = np.zeros(N_RANKS, dtype=bool)
    left_out: dict[str, str] = {}
    for r in RANKS:
        col = true[:, r]
        n_taxa = np.unique(col[col >= 0]).size
        if not (np.asarray(hier)[:, r] >= 0).any():
            left_out[r.label] = "not predicted"
        elif n_taxa < 2:
            left_out[r.label] = "one taxon" if n_taxa == 1 else "no true taxon"
        else:
            keep[r] = True
    return keep, left_out


def _left_out_note(left_out: dict[str, str]) -> str:
    if not left_out:
        return ""
    by_reason: dict[str, list[str]] = {}
    for rank, reason in left_out.items():
        by_reason.setdefault(reason, []).append(rank)
    return "ranks left out: " + "; ".join(f"{', '.join(ranks)} ({reason})" for reason, ranks in by_reason.items())


@dataclass(frozen=True)
class _Job:
    """Metrics computed from one statistic of row weights over the rows ``rows``.

    ``statistic`` maps ``(c, m)`` row weights (``m = len(rows)``) to ``(c, len(names))`` values;
    ``rows`` are indices into the ``n`` prediction rows (they decide the species resampled); ``n`` is
    the ``n`` column of each metric; ``emit`` says which of them become rows; ``notes`` is the
    ``note`` of each; ``no_ci`` (``""`` or a reason) withholds every CI of the job; ``n_taxa`` is its
    ``n_taxa`` column; ``width`` is the number of values per resample the statistic holds in memory at
    once (e.g. the number of classes), to size the chunks.
    """

    rank: str
    names: tuple[str, ...]
    statistic: Statistic
    rows: np.ndarray
    n: tuple[int, ...]
    emit: tuple[bool, ...]
    notes: tuple[str, ...]
    n_taxa: int = -1
    no_ci: str = ""
    width: int = 0

    @property
    def m(self) -> int:
        return len(self.rows)


def _job(rank: str, names: tuple[str, ...], statistic: Statistic, rows: np.ndarray, *,
         n: "tuple[int, ...] | None" = None, emit: "tuple[bool, ...] | None" = None,
         notes: "tuple[str, ...] | str" = "", n_taxa: int = -1, no_ci: str = "", width: int = 0) -> _Job:
    rows = np.asarray(rows, dtype=np.int64)
    k = len(names)
    notes = (notes,) * k if isinstance(notes, str) else tuple(notes)
    return _Job(rank, names, statistic, rows, n or (len(rows),) * k, emit or (True,) * k, notes, n_taxa, no_ci, width)


def _mean_job(rank: str, name: str, x: np.ndarray, rows: np.ndarray, **options: Any) -> _Job:
    return _job(rank, (name,), lambda w: (w @ x) / w.sum(axis=1), rows, **options)


def _run_jobs(items: "list[_Job | dict[str, Any]]", units: np.ndarray, *, n_boot: int, seed: int,
              alpha: float) -> list[dict[str, Any]]:
    """Point values and species-bootstrap percentile intervals of every job; rows in the order given.

    Parameters
    ----------
    items
        Jobs, and ready rows (dicts) passed through.
    units
        ``(n,)`` species unit of every prediction row (:func:`species_units`).

    Each job resamples the ``S`` species among its own rows (numbered in unit order): species weights
    ``W`` ``(c, S)`` from :func:`latent.stats.bootstrap_indices` ``(S, n_boot, seed)`` become row
    weights ``W[:, species_of_row]``, which the job's statistic reads; this is
    :func:`latent.stats.cluster_ci` for each metric. The resamples depend only on
    ``(S, n_boot, seed)``, so jobs over the same number of species share one pass (exactly the
    intervals of separate runs). Jobs with ``S < MIN_CLUSTERS`` get no CI (``ci_note`` says so).
    """
    jobs = [item for item in items if isinstance(item, _Job)]
    local: dict[int, tuple[np.ndarray, int]] = {}
    mapping_key: dict[int, bytes] = {}  # jobs over the same rows share their row weights
    for job in jobs:
        uniq, inverse = np.unique(units[job.rows], return_inverse=True)
        local[id(job)] = (inverse.astype(np.int64).ravel(), len(uniq))
        mapping_key[id(job)] = job.rows.tobytes()
    results: dict[int, tuple[np.ndarray, np.ndarray, list[str]]] = {}
    for job in jobs:  # point values (all weights 1)
        with np.errstate(divide="ignore", invalid="ignore"):
            values = (np.asarray(job.statistic(np.ones((1, job.m))), dtype=np.float64).reshape(-1)
                      if job.m else np.full(len(job.names), np.nan))
        notes = []
        s_units = local[id(job)][1]
        for v in values:
            if job.no_ci:
                notes.append(job.no_ci)
            elif s_units < MIN_CLUSTERS:
                notes.append(cluster_ci_note(s_units))
            elif not n_boot:
                notes.append("no CI: 0 bootstrap resamples")
            elif np.isnan(v):
                notes.append("no CI: value undefined")
            else:
                notes.append("")
        results[id(job)] = (values, np.full((len(job.names), 2), np.nan), notes)
    if n_boot:
        with_ci = [job for job in jobs if any(not note for note in results[id(job)][2])]
        for s_units in sorted({local[id(job)][1] for job in with_ci}):
            group = [job for job in with_ci if local[id(job)][1] == s_units]

            def statistic(w: np.ndarray, group: list[_Job] = group) -> np.ndarray:
                row_weights: dict[bytes, np.ndarray] = {}
                out = []
                for job in group:
                    key = mapping_key[id(job)]
                    if key not in row_weights:
                        row_weights[key] = w[:, local[id(job)][0]]  # (c, m): each row weighs as its species
                    out.append(np.asarray(job.statistic(row_weights[key]), dtype=np.float64).reshape(len(w), -1))
                return np.column_stack(out)

            # Chunks bounded by the widest per-resample array (species or row weights, class counts).
            widest = max([s_units] + [job.m for job in group] + [4 * job.width for job in group])
            with np.errstate(divide="ignore", invalid="ignore"):
                samples = bootstrap_distribution(statistic, s_units, n_boot=n_boot, seed=seed,
                                                 max_elements=max(1, MAX_ELEMENTS * s_units // widest))
            col = 0
            for job in group:
                values, cis, notes = results[id(job)]
                for j, name in enumerate(job.names):
                    if not notes[j]:
                        cis[j] = percentile_interval(samples[:, col + j], alpha, what=f"{name} ({job.rank})")
                col += len(job.names)
    rows: list[dict[str, Any]] = []
    for item in items:
        if not isinstance(item, _Job):
            rows.append(item)
            continue
        values, cis, notes = results[id(item)]
        s_units = local[id(item)][1]
        n_taxa = item.n_taxa if item.n_taxa >= 0 else s_units
        for j, name in enumerate(item.names):
            if item.emit[j]:
                rows.append(metric_row(item.rank, name, values[j], tuple(cis[j]), item.n[j], n_species=s_units,
                                       n_taxa=n_taxa, ci_note=notes[j], note=item.notes[j]))
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
def _short_list_note(cand: np.ndarray, k: int, what: str) -> str:
    """``note`` for top-k values when some rows rank fewer than ``k`` taxa (``cand`` ``(m, k')``)."""
    short = int(np.count_nonzero((cand[:, :k] >= 0).sum(axis=1) < k))
    if not short:
        return ""
    return (f"{what}: {short} of {len(cand)} rows rank fewer than {k} taxa (no other taxon scored); "
            "the truth beyond a short list counts as missed")


def _join(*notes: str) -> str:
    return "; ".join(n for n in notes if n)


def _rank_metrics(true: np.ndarray, topk: np.ndarray, rank: Rank, n_candidates: int, one_taxon: bool
                  ) -> "list[_Job | dict[str, Any]]":
    """top1, top5, balanced_accuracy, macro_f1, n_classes at one rank (rows labelled there).

    ``n_candidates`` is the number of taxa the predictor chose among at ``rank``: top5 is emitted
    only when ``k >= 5`` and ``n_candidates > 5``. ``one_taxon``: :func:`informative_ranks` left the
    rank out as "one taxon" (accuracy rows get :data:`ONE_CLASS_NOTE` and no CI).
    """
    label = rank.label
    rows = np.flatnonzero(true[:, rank] >= 0)
    m = len(rows)
    t = true[rows, rank]
    cand = topk[rows, rank, :]
    p1 = cand[:, 0]
    missing = int(np.count_nonzero(p1 < 0))
    if missing:
        log.warning("rank %s: %d of %d labelled rows have no prediction; counted as wrong", label, missing, m)
    with_top5 = topk.shape[2] >= TOP_K and n_candidates > TOP_K
    if topk.shape[2] >= TOP_K and not with_top5:
        log.info("rank %s: %d candidate taxa (<= %d): top%d is trivially 1 and not reported", label, n_candidates,
                 TOP_K, TOP_K)
    n_taxa = int(np.unique(t).size)
    one_class = one_taxon
    if one_class:
        log.info("rank %s: one true taxon among the %d scored rows: not testable, no CI", label, m)
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
    # Classes predicted but never true among these rows stay in every resample's label set (F1 = 0, as
    # sklearn counts them); a true class none of whose species is drawn is not a class of that resample.
    never_true = np.bincount(ti, minlength=n_cls) == 0

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
        seen = present | (never_true & (n_pred > 0))
        f1 = np.where(denom > 0, 2 * tp / np.where(denom > 0, denom, 1.0), 0.0)
        macro = f1.sum(axis=1) / seen.sum(axis=1)
        return np.column_stack([acc, balanced, macro])

    names = ("top1", "top5", "balanced_accuracy", "macro_f1")
    emit = (True, with_top5, True, True)
    base = (ONE_CLASS_NOTE + (_ONE_CANDIDATE if n_candidates == 1 else "")) if one_class else ""
    short = _short_list_note(cand, TOP_K, f"top{TOP_K}") if with_top5 else ""
    notes = (base, _join(base, short), base, base)
    return [_job(label, names, statistic, rows, emit=emit, notes=notes, n_taxa=n_taxa,
                 no_ci=_ONE_CLASS_CI if one_class else "", width=n_cls),
            metric_row(label, "n_classes", float(n_taxa), None, m, n_species=0, n_taxa=n_taxa, ci_note="no CI: a count",
                       note="")]


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
def _species_metrics(taxonomy: Taxonomy, true: np.ndarray, topk: np.ndarray, n_candidates: int
                     ) -> tuple[list[_Job], np.ndarray]:
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
    with_top5 = topk.shape[2] >= TOP_K and n_candidates > TOP_K
    one_class = np.unique(truth[:, Rank.SPECIES]).size == 1
    one_note = ONE_CLASS_NOTE + (_ONE_CANDIDATE if n_candidates == 1 else "")
    notes = (one_note if one_class else "", "", "",
             _short_list_note(cand, TOP_K, "hdist@5 (mean over the listed species)") if with_top5 else "")
    job = _job("all", names, statistic, rows, n=(m, n_mistakes, m, m), emit=(True, True, True, with_top5),
               notes=notes)
    jobs = [job]
    if one_class:  # only top1_error is the one-class accuracy; the distances keep their CIs
        jobs = [_job("all", names[:1], lambda w: statistic(w)[:, :1], rows, n=(m,), notes=notes[:1],
                     no_ci=_ONE_CLASS_CI),
                _job("all", names[1:], lambda w: statistic(w)[:, 1:], rows, n=(n_mistakes, m, m),
                     emit=(True, True, with_top5), notes=notes[1:])]
    return jobs, h1.astype(np.int64)


def _set_metrics(taxonomy: Taxonomy, true: np.ndarray, hier: np.ndarray) -> list[_Job]:
    """hP, hR, hF (micro and macro), hca and consistency of the hierarchical prediction ``hier``,
    over the informative ranks (:func:`informative_ranks`)."""
    n = len(true)
    keep, left_out = informative_ranks(true, hier)
    note = _left_out_note(left_out)
    if left_out:
        log.info("hierarchical metrics: %s", note)
    placeholder = np.zeros(hier.shape, dtype=bool)
    for r in RANKS:
        is_placeholder = np.asarray(taxonomy.node_names[r], dtype=object) == ""
        if is_placeholder.size:
            placeholder[:, r] = is_placeholder[np.maximum(hier[:, r], 0)]
    in_a = (hier >= 0) & ~placeholder & keep
    in_b = (true >= 0) & keep
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
    out = [_job("all", names, set_statistic, np.flatnonzero(used), notes=note)]

    # HCA: right at every informative labelled rank, on rows whose species is known.
    hca_rows = np.flatnonzero(true[:, Rank.SPECIES] >= 0)
    right = ((hier == true) | (true < 0) | ~keep).all(axis=1)[hca_rows].astype(np.float64)
    if keep.any():
        out.append(_mean_job("all", "hca", right, hca_rows, notes=note))

    # Consistency: rank r's node is a child of rank r-1's node, for adjacent informative predicted ranks.
    pair_valid = np.zeros((n, N_RANKS - 1), dtype=bool)
    pair_ok = np.zeros((n, N_RANKS - 1), dtype=bool)
    for r in RANKS[1:]:
        if not (keep[r] and keep[r - 1]):
            continue
        valid = (hier[:, r] >= 0) & (hier[:, r - 1] >= 0)
        parents = np.asarray(taxonomy.node_parents[r], dtype=np.int64)
        ok = valid & (parents[np.maximum(hier[:, r], 0)] == hier[:, r - 1]) if parents.size else valid & False
        pair_valid[:, r - 1], pair_ok[:, r - 1] = valid, ok
        if valid.any():
            rows = np.flatnonzero(valid)
            out.append(_mean_job(r.label, "consistency", ok[rows].astype(np.float64), rows,
                                 n_taxa=int(np.unique(true[rows, r][true[rows, r] >= 0]).size)))
    any_pair = pair_valid.any(axis=1)
    if any_pair.any():
        rows = np.flatnonzero(any_pair)
        out.append(_mean_job("all", "consistency", (pair_ok | ~pair_valid).all(axis=1)[rows].astype(np.float64),
                             rows, notes=note))
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
        Species-bootstrap resamples for every interval (0: no intervals, NaN); see the module
        docstring (*Uncertainty*): below :data:`latent.stats.MIN_CLUSTERS` species a row has no CI.
    seed
        Seed of the resampling; the same seed gives the same intervals.
    alpha
        1 - coverage of the percentile intervals.
    top_confusions
        How many of the most frequent wrong pairs to keep per rank.

    Returns
    -------
    EvaluationResult
        ``metrics`` (long format with ``n_species``, ``n_taxa``, ``ci_note``, ``note``),
        ``severity_histogram``, ``divergence``, ``confusions``.

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
    units, n_units = species_units(true)
    if n_units < MIN_CLUSTERS:
        log.warning("%d species among the %d test rows (< %d): no confidence intervals", n_units, pred.n, MIN_CLUSTERS)

    hier = hierarchical_predictions(pred)
    keep, left_out = informative_ranks(true, hier)  # one rule for "one taxon" everywhere below
    items: list[_Job | dict[str, Any]] = []
    confusions = []
    for rank in RANKS:
        if not (topk[:, rank, 0] >= 0).any():
            log.debug("rank %s: not predicted, skipped", rank.label)
            continue
        items += _rank_metrics(true, topk, rank, pred.candidates(rank), left_out.get(rank.label) == "one taxon")
        confusions.append(_rank_confusions(tax, true, topk, rank, int(top_confusions)))

    h1 = np.zeros(0, dtype=np.int64)
    if (topk[:, Rank.SPECIES, 0] >= 0).any():
        species_jobs, h1 = _species_metrics(tax, true, topk, pred.candidates(Rank.SPECIES))
        items += species_jobs
    else:
        log.info("species not predicted: species-level metrics (severity, hdist) skipped")
    items += _set_metrics(tax, true, hier)
    rows = _run_jobs(items, units, **boot)
    for row in rows:  # ready rows (n_classes) rest on the species of their rank's rows
        if row["metric"] == "n_classes":
            labelled = true[:, RANK_NAMES.index(row["rank"])] >= 0
            row["n_species"] = int(np.unique(units[labelled]).size)

    constant = {"method": pred.method, "mode": pred.mode}
    metrics = results_frame(rows, **constant)
    hist, divergence = _severity_tables(h1)
    columns = ["rank", "true", "pred", "true_lineage", "pred_lineage", "count", "n_true"]
    confusion_frame = (pd.concat(confusions, ignore_index=True) if confusions
                       else pd.DataFrame({c: [] for c in columns}))
    info = {**constant, "n": pred.n, **boot, "bootstrap_unit": "species", "min_clusters": MIN_CLUSTERS,
            "n_species": n_units, "informative_ranks": [r.label for r in RANKS if keep[r]], "left_out_ranks": left_out}
    log.info("evaluated %d rows (%s, %s): %d metric rows", pred.n, pred.method, pred.mode, len(metrics))
    return EvaluationResult(
        metrics=metrics,
        severity_histogram=hist.assign(**constant),
        divergence=divergence.assign(**constant),
        confusions=confusion_frame.assign(**constant),
        info=info,
    )
