"""Distances probe: does embedding distance grow with taxonomic (LCA) distance?

Statistics
----------
``by_height`` (table) and ``mean_distance`` rows (rank ``all``, columns ``level``, ``height``)
    Distribution of the embedding distance (``options.distance``: cosine ``1 - cos`` or Euclidean)
    of pairs grouped by their LCA height 0..7 (0: same species, 1: same genus, ..., 6: same kingdom,
    7: different kingdoms; :meth:`latent.taxonomy.Taxonomy.distances`), at two levels:
    ``image`` (pairs of images of the image sample below, heights 0..7) and ``centroid`` (every pair
    of species centroids, heights 1..7). The table has ``n, mean, std`` (ddof 0) and the quantiles
    ``q05, q25, q50, q75, q95`` (``numpy.quantile``, linear) a figure draws as box plots.
``intra_inter_ratio`` (one row per rank with at least 2 named taxa)
    Mean distance of the image pairs whose species share their taxon at the rank, divided by the
    mean distance of the image pairs whose species are in different taxa there. Only species named
    at the rank take part; two images of one species are an intra pair at every rank. Below 1 when
    the space follows the taxonomy. Null: species permutation, ``alternative="less"``. At rank
    ``species`` the ratio is the same under every species permutation, so that row has no null.
``distance_height_spearman`` (rank ``all``)
    Spearman correlation between the distance of two species centroids and their LCA height, over
    all pairs of distinct species (equal to ``scipy.stats.spearmanr`` on those pairs; average ranks
    for ties). Null: species permutation, ``alternative="greater"``.
``height_means_monotonic`` (rank ``all``)
    1.0 if the mean centroid distance strictly increases with the height over the heights present,
    else 0.0 (no row with fewer than 2 heights).

Image sample (the O(n^2) step, n images)
------------------------------------------
If the ``n (n - 1) / 2`` image pairs fit in ``options.max_pairs`` every image is used. Otherwise images
are sampled stratified by species (seeded by ``options.seed``): the same number ``k`` of images from
every species (all images of a species that has fewer), ``k`` the largest number >= 2 for which the
``m`` sampled images give ``m (m - 1) / 2 <= max_pairs``; so every species with two images or more
contributes same-species (height 0) pairs. If even ``k = 2`` gives too many pairs, a seeded random
subset of species is kept, two images each (one if it has one). Every pair among the sampled images is
used: for the ``image`` rows of ``by_height`` and for ``intra_inter_ratio``. ``info`` records the rule,
``k`` and the counts; each row's ``n`` is the number of pairs behind it. The ``(m, m)`` distances are
computed in row blocks aligned on species, reduced at once to per-species-pair sums (``(k_s, k_s)``,
``k_s`` sampled species) and to the ``m (m - 1) / 2 <= max_pairs`` pair values.

Centroid pairs
--------------
``by_height`` centroid rows use all ``S (S - 1) / 2`` pairs, computed in row blocks of about
``2**22`` distances, so memory stays bounded for ``S = 10,000``. ``n``, mean and std are exact (merged
per block). Quantiles are exact too: when the pairs fit in ``max_pairs`` the values are kept; above it
two more passes over the blocks find them (a histogram, then the values of the histogram bins that
hold the order statistics). The Spearman correlation, its null and its bootstrap need every pair's rank
at once: they use all species when ``S (S - 1) / 2 <= max_pairs``, otherwise a seeded uniform random
sample of the largest number of species whose pairs fit (``n_species`` and ``sampled`` columns).

Fast nulls
----------
Under a species permutation ``pi`` species ``s`` takes the lineage of ``pi[s]``
(:meth:`ProbeData.permuted_codes`). The ratio is computed from the sum of the image-pair distances
of every pair of sampled species (``(k_s, k_s)``, once) and the image counts: any labelling of the
species gives every rank's intra and inter sums by adding up the blocks of that matrix (species
sorted by the lineage they take are contiguous per taxon), so a permutation costs O(k_s^2), not
O(m^2). The Spearman correlation under a permutation only changes the sum over pairs of
``rank(distance) * midrank(height)`` (the multiset of heights, hence every mean and variance, is
kept); that sum is a combination of the per-rank sums of distance ranks inside taxa, again block sums
of a ``(S, S)`` matrix: O(S^2) per permutation. Permutation and bootstrap loops run with
single-threaded BLAS (:func:`single_threaded_blas`).

Rows
----
Every row has ``n`` (pairs behind the value), ``n_species`` (species behind it) and ``n_taxa``,
``ci_low``/``ci_high`` with ``ci_note`` (why there is no CI) and ``note`` (why there is no value).
``intra_inter_ratio``: the sampled species named at the rank and their taxa there. ``mean_distance``
at height ``h``: the species in a pair at that height and the taxa at the rank of their LCA (rank
``6 - h``: height 0 the species themselves, height 1 the genera; the root, 1, at height 7).
``distance_height_spearman`` and ``height_means_monotonic``: the species used and the named taxa of
every rank (species included) holding them, the nodes of the tree the distances are compared with.

Uncertainty: a bootstrap over species
-------------------------------------
Images of one species are not independent, so every CI resamples whole species (a cluster bootstrap,
:func:`latent.stats.cluster_ci`; percentile 95 %, seeded by ``options.seed``; below
:data:`latent.stats.MIN_CLUSTERS` (10) species behind a row there is no CI and ``ci_note`` says so). A
species drawn ``w`` times contributes its images ``w`` times: its pairs with another species ``w * w'``
times and its own within-species image pairs ``w`` times; pairs made of a species and its own duplicate
(the same images twice, or a centroid with itself) are dropped. ``intra_inter_ratio`` and the image
``mean_distance`` rows resample the species of the image sample (those named at the rank for the
ratio), the centroid rows and ``height_means_monotonic`` the species of the Spearman (all species when
their pairs fit in ``max_pairs``; otherwise its random sample, and ``ci_note`` says the CI rests on it),
``extra["distances"]["n_boot"]`` times (default 1000): every resample's distance sums by LCA height are
quadratic forms of the resampling weights with the per-species-pair sums (:class:`HeightSums`, a
matrix product per height for all resamples at once). ``distance_height_spearman`` needs the ranks of
every resample's pairs: ``n_boot_spearman`` resamples (default ``min(n_boot, 200)``). A percentile CI
that does not contain the observed value (a biased bootstrap) is not given (:func:`guard_ci`).

Ties and degenerate input
-------------------------
A distance at most :func:`tie_tolerance` (cosine: ``TIE_RTOL = 1024 eps``; Euclidean:
``sqrt(TIE_RTOL) * max |x|``, the rounding of ``|a|^2 + |b|^2 - 2 a.b``) is set to exactly 0
(:func:`latent.probes.common.zero_ties`) before anything is summed, so identical vectors tie exactly whatever the row order.
The Spearman ranks centroid distances with exact ties (:func:`exact_tie_distances`: small Euclidean
distances recomputed from coordinate differences, and distances equal up to ``TIE_RTOL`` times the
scale merged, e.g. those between equidistant points), and tied distances share their midrank. Where
every image pair across taxa is at distance 0 the ratio is NaN, and where every centroid distance is
tied the Spearman is NaN: the row stays, with no CI, no null (``p_value`` NaN, ``permutations`` 0)
and a ``note``. A null value within ``1e-9`` (relative) of the observed one counts as equal to it
(:func:`latent.probes.common.tie_null`; ties count against the observed value).
"""

from __future__ import annotations

import contextlib
import logging
import math
from collections.abc import Iterator
from typing import Any

import numpy as np
import pandas as pd

from latent.errors import InputError
from latent.probes.base import ProbeData, ProbeOptions, ProbeResult, null_row, pairwise_distances, species_permutations
from latent.ranks import RANK_NAMES, Rank
from latent.probes.common import (ALPHA, DEFAULT_N_BOOT, DEFAULT_N_BOOT_EXPENSIVE, average_ranks, int_setting,
                                  max_items_for_pairs, null_frame, run_starts, snap_ties, stratified_sample, tie_null,
                                  zero_ties)
from latent.results import metric_row
from latent.stats import bootstrap_distribution, cluster_ci, cluster_ci_note, percentile_interval
from latent.taxonomy import N_RANKS, lca_height

__all__ = ["probe_distances", "species_cis", "guard_ci", "tie_tolerance", "exact_tie_distances", "HeightSums",
           "height_support"]

log = logging.getLogger(__name__)

PROBE = "distances"
#: LCA heights 0 (same species) .. 7 (different kingdoms).
N_HEIGHTS = N_RANKS + 1
QUANTILES = (0.05, 0.25, 0.5, 0.75, 0.95)
QUANTILE_COLUMNS = ("q05", "q25", "q50", "q75", "q95")
#: Distances held per block of a blocked pairwise computation (32 MiB of float64).
BLOCK_ELEMENTS = 1 << 22
#: Histogram bins per height of the streamed exact quantiles.
HIST_BINS = 1 << 14
#: A squared distance at most ``TIE_RTOL`` times the largest squared norm of the vectors is 0 up to the
#: rounding of its computation (a tie).
TIE_RTOL = 1024 * float(np.finfo(np.float64).eps)
#: A null value within this relative distance of the observed value is equal to it (a tie).
TIE_STAT_RTOL = 1e-9
GENUS = int(Rank.GENUS)
SPECIES = int(Rank.SPECIES)
_IMAGE_SAMPLE_TAG = 0xD157
_SPECIES_SAMPLE_TAG = 0xC3A7


# ------------------------------------------------------------------------------ ties and intervals
def tie_tolerance(X: np.ndarray, metric: str) -> float:
    """Distances at or below this are 0 up to rounding (ties), for ``metric`` on the rows of ``X``.

    Cosine distances ``1 - cos`` of unit vectors have an absolute rounding error of a few ``eps``:
    :data:`TIE_RTOL`. Euclidean distances come from ``|a|^2 + |b|^2 - 2 a.b`` (error a few ``eps``
    times the squared norms) and a square root: ``sqrt(TIE_RTOL) * max |x|``.
    """
    if metric == "cosine":
        return TIE_RTOL
    X = np.asarray(X, dtype=np.float64)
    if X.size == 0:
        return 0.0
    return math.sqrt(TIE_RTOL * float(np.einsum("ij,ij->i", X, X).max()))


def exact_tie_distances(C: np.ndarray, metric: str) -> np.ndarray:
    """``(k, k)`` distances between the rows of ``C`` with exact ties, for statistics on ranks.

    :func:`latent.probes.base.pairwise_distances`; Euclidean distances below ``1e-4`` of the scale are
    recomputed from coordinate differences (the Gram form leaves ``~1e-8 |x|`` where two rows are equal);
    then values within ``TIE_RTOL * scale`` of 0 become 0 and sorted neighbours at most that far apart
    share one value (the smallest of their run), so that distances equal up to rounding (equidistant
    points) tie exactly and their order never comes from the row order. ``scale``: the largest distance
    the space allows (2 for cosine, twice the largest norm for Euclidean).
    """
    C = np.asarray(C, dtype=np.float64)
    k = len(C)
    D = pairwise_distances(C, metric=metric)
    scale = 2.0 if metric == "cosine" else 2.0 * math.sqrt(float(np.einsum("ij,ij->i", C, C).max(initial=0.0)))
    iu, ju = np.triu_indices(k, 1)
    d = D[iu, ju]
    if metric == "euclidean" and d.size:
        small = np.flatnonzero(d <= 1e-4 * scale)
        step = max(1, BLOCK_ELEMENTS // max(C.shape[1], 1))
        for start in range(0, small.size, step):
            sel = small[start:start + step]
            diff = C[iu[sel]] - C[ju[sel]]
            d[sel] = np.sqrt(np.einsum("ij,ij->i", diff, diff))
    tol = TIE_RTOL * scale
    d = snap_ties(zero_ties(d, tol), tol)
    out = np.zeros((k, k))
    out[iu, ju] = d
    out[ju, iu] = d
    return out


def species_cis(statistic: Any, n_units: int, *, n_boot: int, seed: int, alpha: float = ALPHA,
                unit: str = "species", what: str = "statistic") -> tuple[np.ndarray, str]:
    """:func:`latent.stats.cluster_ci` for a statistic with several columns, on one set of resamples.

    Parameters
    ----------
    statistic
        Maps ``(c, n_units)`` resampling weights to ``(c, q)`` values (NaN where undefined).
    n_units, n_boot, seed, alpha, unit
        As in :func:`latent.stats.cluster_ci` (same resamples for the same ``n_units, n_boot, seed``).

    Returns
    -------
    tuple
        ``(q, 2)`` intervals (NaN without a CI) and the note (:func:`latent.stats.cluster_ci_note`;
        ``""`` with a CI).
    """
    note = cluster_ci_note(n_units, unit)
    if note or n_boot == 0:
        return np.full((0, 2), np.nan), note or "no CI: 0 bootstrap resamples"
    samples = bootstrap_distribution(statistic, n_units, n_boot=n_boot, seed=seed)
    cis = percentile_interval(samples.reshape(n_boot, -1), alpha, what=f"{unit} bootstrap of {what}")
    return np.atleast_2d(cis), ""


def guard_ci(value: float, ci: "tuple[float, float]", note: str) -> tuple[tuple[float, float], str]:
    """The CI of a row, or none when the percentile interval does not contain the observed value.

    The percentile interval assumes the resampled statistic is centred on the observed one; when the
    observed value lies outside the 95 % range of the resamples, the species bootstrap is biased for that
    statistic there (e.g. NC1 when the taxa are many for the dimension: a resample holds fewer distinct
    taxa) and no CI is given; ``ci_note`` says so and gives the range. A ``note`` that starts with
    ``"no CI"`` (too few species, no resamples) leaves the row without a CI; another note is kept with it.
    """
    low, high = ci
    if note.startswith("no CI"):
        return (np.nan, np.nan), note
    if not (np.isfinite(value) and np.isfinite(low) and np.isfinite(high)):
        return (low, high), note
    slack = TIE_STAT_RTOL * max(abs(value), abs(low), abs(high))
    if low - slack <= value <= high + slack:
        return (low, high), note
    return (np.nan, np.nan), (f"no CI: the species bootstrap is biased here (the value {value:.4g} lies outside "
                              f"the 95% range of the resamples, {low:.4g} to {high:.4g})")


def _ci_at(cis: np.ndarray, j: int) -> tuple[float, float]:
    """Column ``j`` of :func:`species_cis` (NaN when there is no CI)."""
    return (float(cis[j, 0]), float(cis[j, 1])) if j < len(cis) else (np.nan, np.nan)


# ---------------------------------------------------------------------------------------- helpers
def rank_blocks(M: "np.ndarray | None", V: "np.ndarray | None", L: np.ndarray, order: "np.ndarray | None" = None,
                top: int = GENUS) -> list[tuple[Any, Any, np.ndarray]]:
    """Add up a species matrix and species vectors over the taxa of every rank.

    Parameters
    ----------
    M
        ``(k, k)`` values of pairs of species (or None), rows and columns in the order of ``L``; with
        ``order``, in another order: row and column ``order[i]`` of ``M`` belong to row ``i`` of ``L``.
    V
        ``(k, q)`` values of species (or None), in the order of ``L``.
    L
        ``(k, 7)`` lineage codes of the ``k`` species, in lineage order (every rank's codes
        non-decreasing, so each taxon is a contiguous run).
    order
        ``(k,)`` optional reordering of ``M`` (cheaper than reordering it first: rows are gathered, reduced
        to taxa, and only then are the columns gathered).
    top
        Finest rank aggregated (default genus).

    Returns
    -------
    list
        Entry ``r`` (``0..top``): ``(B_r, V_r, nodes_r)`` with ``B_r`` ``(T_r, T_r)`` the sums of ``M``
        over pairs of taxa at rank ``r`` (None without ``M``), ``V_r`` ``(T_r, q)`` and ``nodes_r``
        ``(T_r,)`` the taxa's node codes.
    """
    out: list[tuple[Any, Any, np.ndarray]] = [None] * (top + 1)  # type: ignore[list-item]
    s = run_starts(L[:, top])
    if M is None:
        B = None
    elif order is None:
        B = np.add.reduceat(np.add.reduceat(M, s, axis=0), s, axis=1)
    else:
        B = np.add.reduceat(np.add.reduceat(M[order], s, axis=0)[:, order], s, axis=1)
    Vr = None if V is None else np.add.reduceat(V, s, axis=0)
    Lr = L[s]
    out[top] = (B, Vr, Lr[:, top])
    for r in range(top - 1, -1, -1):
        s = run_starts(Lr[:, r])
        if B is not None:
            B = np.add.reduceat(np.add.reduceat(B, s, axis=0), s, axis=1)
        if Vr is not None:
            Vr = np.add.reduceat(Vr, s, axis=0)
        Lr = Lr[s]
        out[r] = (B, Vr, Lr[:, r])
    return out


def named_nodes(data: ProbeData) -> list[np.ndarray]:
    """Per rank, ``(n_nodes[r],)`` bool: the node has a name (placeholders of empty ranks do not)."""
    return [np.asarray(data.taxonomy.node_names[r] != "", dtype=bool) for r in range(N_RANKS)]


def ranks_with_taxa(data: ProbeData, minimum: int = 2) -> list[int]:
    """Ranks at which at least ``minimum`` named taxa hold species of ``data``."""
    out = []
    for r in range(N_RANKS):
        rows, labels = data.rank_labels(r)
        if len(np.unique(labels)) >= minimum:
            out.append(r)
    return out


def single_threaded_blas() -> Any:
    """Context in which BLAS/LAPACK run on one thread (threadpoolctl; a no-op without it).

    Permutation and bootstrap loops make many small matrix calls; a multi-threaded BLAS spends more
    on waking its threads than on the work, and far more when other processes hold the cores.
    """
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:  # pragma: no cover - threadpoolctl comes with scikit-learn
        return contextlib.nullcontext()
    return threadpool_limits(limits=1, user_api="blas")


def _height_stats(values: np.ndarray) -> dict[str, float]:
    if values.size == 0:
        return {}
    q = np.quantile(values, QUANTILES)
    return {"n": int(values.size), "mean": float(values.mean()), "std": float(values.std()),
            **{c: float(v) for c, v in zip(QUANTILE_COLUMNS, q)}}


# ----------------------------------------------------------------------------------- image pairs
class ImagePairSums:
    """Per-species-pair sums of image-pair distances on an image sample (fast intra/inter ratio).

    Parameters
    ----------
    data
        The probe data.
    rows
        ``(m,)`` image rows sorted by species (:func:`stratified_sample`).
    metric
        ``"cosine"`` or ``"euclidean"``.

    Attributes
    ----------
    species : numpy.ndarray
        ``(k,)`` the sampled species (increasing, so in lineage order).
    n : numpy.ndarray
        ``(k,)`` sampled images per species.
    W : numpy.ndarray
        ``(k, k)`` sum of ``d(i, j)`` over ordered pairs of distinct images ``i`` of species ``a`` and
        ``j`` of species ``b`` (the diagonal is twice the within-species pair sum).
    values, heights : numpy.ndarray
        ``(m (m - 1) / 2,)`` distance and LCA height of every image pair ``i < j``.
    """

    def __init__(self, data: ProbeData, rows: np.ndarray, metric: str, device: Any = None) -> None:
        sp = data.species[rows]
        st = run_starts(sp)
        m = len(rows)
        self.species = sp[st]
        self.n = np.diff(np.r_[st, m]).astype(np.float64)
        k = len(self.species)
        self.codes = data.codes
        self.named = named_nodes(data)
        local = np.repeat(np.arange(k), np.diff(np.r_[st, m]))
        H = lca_height(data.codes[self.species], data.codes[self.species])
        X = data.X[rows]
        tol = tie_tolerance(X, metric)
        W = np.zeros((k, k))
        values, heights = [], []
        bounds = np.r_[st, m]
        max_rows = max(1, BLOCK_ELEMENTS // max(m, 1))
        lo = 0
        columns = np.arange(m)
        while lo < k:
            hi = int(np.searchsorted(bounds, bounds[lo] + max_rows, side="right")) - 1
            hi = min(max(hi, lo + 1), k)
            r0, r1 = int(bounds[lo]), int(bounds[hi])
            D = zero_ties(pairwise_distances(X[r0:r1], X, metric, device=device), tol)
            D[np.arange(r1 - r0), np.arange(r0, r1)] = 0.0
            W[lo:hi] = np.add.reduceat(np.add.reduceat(D, st, axis=1), st[lo:hi] - r0, axis=0)
            upper = columns[None, :] > np.arange(r0, r1)[:, None]
            values.append(D[upper])
            heights.append(H[np.ix_(local[r0:r1], local)][upper])
            lo = hi
        self.W = (W + W.T) / 2
        self.values = np.concatenate(values) if values else np.zeros(0)
        self.heights = np.concatenate(heights) if heights else np.zeros(0, dtype=np.uint8)
        log.info("distances: %d image pairs of %d images of %d species", self.values.size, m, k)

    def height_sums(self, subset: "np.ndarray | None" = None) -> HeightSums:
        """The :class:`HeightSums` of the sampled species (positions ``subset`` of :attr:`species`)."""
        idx = np.arange(len(self.species)) if subset is None else np.asarray(subset)
        return HeightSums(self.W[np.ix_(idx, idx)], self.n[idx], self.codes[self.species[idx]],
                          within=np.diag(self.W)[idx])

    def parts(self, perm: "np.ndarray | None" = None, weights: "np.ndarray | None" = None,
              species_rank: bool = True) -> np.ndarray:
        """Intra/inter sums of every rank under a labelling of the species.

        Parameters
        ----------
        perm
            ``(S,)`` species permutation (species ``s`` takes the lineage of ``perm[s]``); None: the
            true lineages.
        weights
            ``(k,)`` multiplicity of each sampled species (bootstrap); None: 1. Not with ``perm``.
        species_rank
            Also the species rank (False: left NaN; it does not change under a permutation).

        Returns
        -------
        numpy.ndarray
            ``(7, 4)``: per rank ``intra_sum, intra_count, inter_sum, inter_count`` over ordered
            image pairs (twice the unordered values); NaN at ranks with fewer than 2 named taxa.
        """
        if perm is not None and weights is not None:
            raise ValueError("ImagePairSums.parts takes a permutation or weights, not both")
        W, o = self.W, None
        n = self.n
        if perm is None:
            L = self.codes[self.species]
        else:
            pos = np.asarray(perm)[self.species]
            o = np.argsort(pos, kind="stable")
            L = self.codes[pos[o]]
            n = n[o]
        if weights is None:
            w = np.ones(len(n))
        else:
            w = np.asarray(weights, dtype=np.float64)
            diagonal = np.diag(W) * w
            W = W * np.outer(w, w)
            np.fill_diagonal(W, diagonal)
        V = np.stack([w * n, (w * n) ** 2, w * n * (n - 1)], axis=1)
        out = np.full((N_RANKS, 4), np.nan)
        for r, (B, Vr, nodes) in enumerate(rank_blocks(W, V, L, order=o)):
            out[r] = _intra_inter(B, Vr, self.named[r][nodes])
        if species_rank:
            out[SPECIES] = _intra_inter(W if o is None else W[o][:, o], V, np.ones(len(n), dtype=bool))
        return out


class HeightSums:
    """Distance sums and pair counts by LCA height on a species resample, vectorised over resamples.

    A species drawn ``w`` times enters as ``w`` species with its items (images, or its centroid): a pair
    of distinct species ``(a, b)`` counts ``w_a w_b`` times, the pairs inside one species ``w_a`` times,
    and a species is never paired with its own duplicate.

    Parameters
    ----------
    M
        ``(k, k)`` sum of the distances over ordered pairs of items of species ``a`` and ``b``, ``a != b``
        (the diagonal is ignored).
    n
        ``(k,)`` items per species.
    codes
        ``(k, 7)`` lineage codes, species in lineage order.
    within
        ``(k,)`` sum over ordered pairs of distinct items of one species (height 0), or None (one item
        per species).
    """

    def __init__(self, M: np.ndarray, n: np.ndarray, codes: np.ndarray, within: "np.ndarray | None" = None) -> None:
        k = len(n)
        self.n = np.asarray(n, dtype=np.float64)
        self.codes = np.asarray(codes)
        self.within = None if within is None else np.asarray(within, dtype=np.float64)
        self.H = lca_height(self.codes, self.codes)
        self.heights = [h for h in range(1, N_HEIGHTS) if k and (self.H == h).any()]
        M = np.array(M, dtype=np.float64)
        np.fill_diagonal(M, 0.0)
        self.M = M
        self.starts = [run_starts(self.codes[:, r]) for r in range(SPECIES)]

    def __call__(self, W: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """``(c, 8)`` distance sums and ``(c, 8)`` counts of ordered pairs per height, for ``(c, k)`` weights."""
        W = np.asarray(W, dtype=np.float64)
        c = W.shape[0]
        sums, counts = np.zeros((c, N_HEIGHTS)), np.zeros((c, N_HEIGHTS))
        for h in self.heights:
            sums[:, h] = np.einsum("ck,ck->c", W @ np.where(self.H == h, self.M, 0.0), W)
        wn = W * self.n
        self_pairs = (wn ** 2).sum(axis=1)
        shared = [(wn.sum(axis=1) ** 2) - self_pairs]  # rank -1 (the root): every pair of distinct species
        for r in range(SPECIES):
            shared.append((np.add.reduceat(wn, self.starts[r], axis=1) ** 2).sum(axis=1) - self_pairs)
        shared.append(np.zeros(c))  # distinct species never share the species rank
        for h in range(1, N_HEIGHTS):
            counts[:, h] = shared[N_RANKS - h] - shared[N_RANKS - h + 1]
        if self.within is not None:
            sums[:, 0] = W @ self.within
            counts[:, 0] = W @ (self.n * (self.n - 1))
        return sums, counts


def height_support(codes: np.ndarray, within: "np.ndarray | None" = None) -> list[tuple[int, int]]:
    """Per LCA height ``0..7``, ``(species, taxa)`` behind its pairs, from the lineage codes alone.

    ``species``: the species that are in a pair at that height (height 0: those with ``within`` True,
    i.e. two items or more); ``taxa``: the distinct taxa at the rank of their LCA (rank ``6 - h``; the
    root, 1, for height 7).
    """
    codes = np.asarray(codes)
    k = len(codes)
    out = []
    for h in range(N_HEIGHTS):
        if h == 0:
            inside = np.zeros(k, dtype=bool) if within is None else np.asarray(within, dtype=bool)
        elif h == N_HEIGHTS - 1:
            inside = np.full(k, len(np.unique(codes[:, 0])) >= 2)
        else:
            q = N_RANKS - 1 - h  # the LCA rank: pairs share rank q, differ at rank q + 1
            children = np.unique(codes[:, [q, q + 1]], axis=0)
            taxa, n_children = np.unique(children[:, 0], return_counts=True)
            inside = np.isin(codes[:, q], taxa[n_children >= 2])
        if not inside.any():
            out.append((0, 0))
            continue
        n_taxa = 1 if h == N_HEIGHTS - 1 else len(np.unique(codes[inside, N_RANKS - 1 - h]))
        out.append((int(inside.sum()), int(n_taxa)))
    return out


def taxa_count(data: ProbeData, species: np.ndarray) -> int:
    """Named taxa of every rank (species included) holding ``species``: the nodes of their tree."""
    species = np.asarray(species)
    return int(sum(len(np.unique(data.codes[species, r][data.named[species, r]])) for r in range(N_RANKS)))


def _ratio_from_heights(sums: np.ndarray, counts: np.ndarray, r: int) -> np.ndarray:
    """``(c,)`` intra/inter ratio at rank ``r`` from height sums of species all named at ``r``: intra
    pairs are those of height ``<= 6 - r``."""
    cut = N_RANKS - r
    intra_s, intra_c = sums[:, :cut].sum(axis=1), counts[:, :cut].sum(axis=1)
    inter_s, inter_c = sums[:, cut:].sum(axis=1), counts[:, cut:].sum(axis=1)
    return ratio_from_parts(np.stack([intra_s, intra_c, inter_s, inter_c], axis=-1))


def _intra_inter(B: np.ndarray, V: np.ndarray, named: np.ndarray) -> np.ndarray:
    """``(4,)`` intra sum, intra count, inter sum, inter count over the named taxa of one rank."""
    if np.count_nonzero(named) < 2:
        return np.full(4, np.nan)
    if named.all():
        Bn, Vn = B, V
    else:
        Bn, Vn = B[np.ix_(named, named)], V[named]
    intra_s = float(np.trace(Bn))
    all_s = float(Bn.sum())
    intra_c = float((Vn[:, 0] ** 2 - Vn[:, 1] + Vn[:, 2]).sum())
    all_c = float(Vn[:, 0].sum() ** 2 - Vn[:, 1].sum() + Vn[:, 2].sum())
    return np.array([intra_s, intra_c, all_s - intra_s, all_c - intra_c])


def ratio_from_parts(parts: np.ndarray) -> np.ndarray:
    """``(..., 7)`` intra/inter ratio from :meth:`ImagePairSums.parts` (NaN where undefined)."""
    parts = np.asarray(parts, dtype=np.float64)
    intra_s, intra_c, inter_s, inter_c = (parts[..., i] for i in range(4))
    with np.errstate(divide="ignore", invalid="ignore"):
        ratio = (intra_s / intra_c) / (inter_s / inter_c)
    ok = (intra_c > 0) & (inter_c > 0) & (inter_s > 0)
    return np.where(ok, ratio, np.nan)


# ------------------------------------------------------------------------------- centroid pairs
def _centroid_blocks(centroids: np.ndarray, codes: np.ndarray, metric: str,
                     device: Any = None) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """Distances and LCA heights of the centroid pairs ``i < j``, a block of rows at a time."""
    S = len(centroids)
    step = max(1, BLOCK_ELEMENTS // max(S, 1))
    columns = np.arange(S)
    tol = tie_tolerance(centroids, metric)
    for i0 in range(0, S - 1, step):
        i1 = min(S, i0 + step)
        D = zero_ties(pairwise_distances(centroids[i0:i1], centroids, metric, device=device), tol)
        H = lca_height(codes[i0:i1], codes)
        upper = columns[None, :] > np.arange(i0, i1)[:, None]
        yield D[upper], H[upper]


def _merge_moments(acc: np.ndarray, values: np.ndarray, heights: np.ndarray) -> None:
    """Chan's parallel update of ``acc`` ``(8, 3)`` = (count, mean, M2) per height."""
    for h in np.unique(heights).tolist():
        v = values[heights == h]
        nb, mb = v.size, float(v.mean())
        m2b = float(((v - mb) ** 2).sum())
        na, ma, m2a = acc[h]
        n = na + nb
        delta = mb - ma
        acc[h] = (n, ma + delta * nb / n, m2a + m2b + delta * delta * na * nb / n)


def _streamed_quantiles(blocks, counts: np.ndarray, lo: np.ndarray, hi: np.ndarray) -> np.ndarray:
    """Exact ``numpy.quantile`` (linear) of each height's values, in two more passes over ``blocks``.

    Pass 1 histograms the values of each height in :data:`HIST_BINS` bins between its min and max;
    pass 2 keeps the values of the bins (and their neighbours) that hold the order statistics the
    quantiles interpolate, with a fresh histogram, and reads the order statistics off them.

    Returns
    -------
    numpy.ndarray
        ``(8, 5)`` quantiles (NaN for heights without pairs).
    """
    nb = HIST_BINS
    span = np.where(hi > lo, hi - lo, 1.0)

    def cells(v: np.ndarray, h: np.ndarray) -> np.ndarray:
        b = np.clip(((v - lo[h]) / span[h] * nb).astype(np.int64), 0, nb - 1)
        return h.astype(np.int64) * nb + b

    hist = np.zeros(N_HEIGHTS * nb, dtype=np.int64)
    for v, h in blocks():
        hist += np.bincount(cells(v, h), minlength=N_HEIGHTS * nb)
    targets = []
    for h in np.flatnonzero(counts > 0).tolist():
        n = int(counts[h])
        for q in QUANTILES:
            pos = q * (n - 1)
            k0 = int(math.floor(pos))
            targets.append((h, q, k0, min(k0 + 1, n - 1), pos - k0))
    cum = hist.reshape(N_HEIGHTS, nb).cumsum(axis=1)
    need = np.zeros(N_HEIGHTS * nb, dtype=bool)
    for h, _, k0, k1, _ in targets:
        for k in (k0, k1):
            b = int(np.searchsorted(cum[h], k, side="right"))
            need[h * nb + max(b - 1, 0): h * nb + min(b + 2, nb)] = True
    kept_v, kept_c = [], []
    hist2 = np.zeros_like(hist)
    for v, h in blocks():
        c = cells(v, h)
        hist2 += np.bincount(c, minlength=N_HEIGHTS * nb)
        sel = need[c]
        kept_v.append(v[sel])
        kept_c.append(c[sel])
    kv = np.concatenate(kept_v)
    kc = np.concatenate(kept_c)
    order = np.lexsort((kv, kc))
    kv, kc = kv[order], kc[order]
    cum2 = hist2.reshape(N_HEIGHTS, nb).cumsum(axis=1)

    def order_stat(h: int, k: int) -> float:
        b = int(np.searchsorted(cum2[h], k, side="right"))
        cell = h * nb + b
        below = int(cum2[h, b - 1]) if b > 0 else 0
        first = int(np.searchsorted(kc, cell, side="left"))
        last = int(np.searchsorted(kc, cell, side="right"))
        if not need[cell] or last - first != hist2[cell]:
            log.warning("distances: streamed quantile of height %d could not be resolved exactly", h)
            return float("nan")
        return float(kv[first + k - below])

    out = np.full((N_HEIGHTS, len(QUANTILES)), np.nan)
    for h, q, k0, k1, frac in targets:
        a, b = order_stat(h, k0), order_stat(h, k1)
        out[h, QUANTILES.index(q)] = a + (b - a) * frac
    return out


def centroid_height_table(data: ProbeData, metric: str, max_pairs: int,
                          device: Any = None) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """``by_height`` rows of the centroid level, from all species pairs in row blocks.

    Returns
    -------
    tuple
        The table rows (one per height present) and notes (``pairs``, ``quantiles``: ``"kept"`` or
        ``"streamed"``).
    """
    centroids, codes = data.centroids, data.codes
    S = len(centroids)
    total = S * (S - 1) // 2
    keep = total <= max_pairs

    def blocks() -> Iterator[tuple[np.ndarray, np.ndarray]]:
        return _centroid_blocks(centroids, codes, metric, device)

    table = []
    if keep:
        parts = list(blocks())
        values = np.concatenate([p[0] for p in parts]) if parts else np.zeros(0)
        heights = np.concatenate([p[1] for p in parts]) if parts else np.zeros(0, dtype=np.uint8)
        for h in range(N_HEIGHTS):
            stats = _height_stats(values[heights == h])
            if stats:
                table.append({"level": "centroid", "height": h, **stats})
        return table, {"pairs": total, "quantiles": "kept"}
    acc = np.zeros((N_HEIGHTS, 3))
    lo = np.full(N_HEIGHTS, np.inf)
    hi = np.full(N_HEIGHTS, -np.inf)
    for v, h in blocks():
        _merge_moments(acc, v, h)
        for hh in np.unique(h).tolist():
            vv = v[h == hh]
            lo[hh] = min(lo[hh], float(vv.min()))
            hi[hh] = max(hi[hh], float(vv.max()))
    counts = acc[:, 0].astype(np.int64)
    quantiles = _streamed_quantiles(blocks, counts, lo, hi)
    for h in np.flatnonzero(counts > 0).tolist():
        table.append({"level": "centroid", "height": h, "n": int(counts[h]), "mean": float(acc[h, 1]),
                      "std": float(np.sqrt(acc[h, 2] / counts[h])),
                      **{c: float(v) for c, v in zip(QUANTILE_COLUMNS, quantiles[h])}})
    log.info("distances: %d centroid pairs in blocks; quantiles streamed in two more passes", total)
    return table, {"pairs": total, "quantiles": "streamed"}


class CentroidSpearman:
    """Spearman correlation of centroid distance with LCA height, its fast null and bootstrap.

    Parameters
    ----------
    data
        The probe data.
    species
        ``(k,)`` increasing species indices whose pairs are used.
    metric
        ``"cosine"`` or ``"euclidean"``.

    Attributes
    ----------
    observed : float
        Spearman's rho over the ``k (k - 1) / 2`` pairs (NaN with fewer than 2 heights).
    n_pairs : int
    """

    def __init__(self, data: ProbeData, species: np.ndarray, metric: str) -> None:
        self.species = np.asarray(species, dtype=np.int64)
        self.codes = data.codes
        k = len(self.species)
        D = exact_tie_distances(data.centroids[self.species], metric)
        self.D = D
        H = lca_height(self.codes[self.species], self.codes[self.species])
        iu, ju = np.triu_indices(k, 1)
        d, h = D[iu, ju], H[iu, ju].astype(np.int64)
        rd = average_ranks(d)
        count_h = np.bincount(h, minlength=N_HEIGHTS).astype(np.float64)
        g = np.cumsum(count_h) - count_h + (count_h + 1) / 2  # midrank of each height
        gh = g[h]
        self.n_pairs = int(len(d))
        self.mean_rd, self.sd_rd = float(rd.mean()) if len(d) else np.nan, float(rd.std()) if len(d) else np.nan
        self.mean_g, self.sd_g = float(gh.mean()) if len(d) else np.nan, float(gh.std()) if len(d) else np.nan
        self.n_heights = int(np.count_nonzero(count_h))
        #: Every centroid distance tied (identical centroids): no rank correlation, no test.
        self.tied = len(d) >= 2 and not self.sd_rd > 0
        self.defined = len(d) >= 2 and self.n_heights >= 2 and self.sd_rd > 0
        self.observed = self._rho(float(rd @ gh)) if self.defined else float("nan")
        self.sum_rd = float(rd.sum())
        self.g7 = float(g[N_RANKS])
        # Sharing rank r lowers the height from 7 - r to 6 - r.
        self.delta = np.array([g[N_RANKS - 1 - r] - g[N_RANKS - r] for r in range(GENUS + 1)])
        RD = np.zeros((k, k))
        RD[iu, ju] = rd
        self.RD = RD + RD.T
        # Bootstrap: everything in the order of increasing distance, with its tie groups.
        order = np.argsort(d, kind="stable")
        ds = d[order]
        self._groups = run_starts(ds)
        self._group_id = np.repeat(np.arange(len(self._groups)), np.diff(np.r_[self._groups, len(ds)]))
        self._hs = h[order]
        self._iu, self._ju = iu[order], ju[order]

    def height_sums(self) -> HeightSums:
        """The :class:`HeightSums` of the centroid pairs of these species (one item per species)."""
        return HeightSums(self.D, np.ones(len(self.species)), self.codes[self.species])

    def _rho(self, cross: float) -> float:
        P = self.n_pairs
        return (cross / P - self.mean_rd * self.mean_g) / (self.sd_rd * self.sd_g)

    def null(self, perm: np.ndarray) -> float:
        """Spearman's rho when species ``s`` takes the lineage of ``perm[s]``, from block sums."""
        if not self.defined:
            return float("nan")
        pos = np.asarray(perm)[self.species]
        o = np.argsort(pos, kind="stable")
        L = self.codes[pos[o]]
        cross = self.g7 * self.sum_rd
        for r, (B, _, _) in enumerate(rank_blocks(self.RD, None, L, order=o)):
            cross += self.delta[r] * float(np.trace(B)) / 2
        return self._rho(cross)

    def bootstrap(self, weights: np.ndarray) -> float:
        """Spearman's rho on a species resample (``(k,)`` multiplicities): pair ``(a, b)`` counts
        ``w_a w_b`` times; a species is never paired with its own duplicate."""
        w = np.asarray(weights, dtype=np.float64)
        om = w[self._iu] * w[self._ju]
        # Midrank of a value with total weight c after cumulative weight C: C - (c - 1) / 2.
        if len(self._groups) == len(om):  # no tied distances
            x = np.cumsum(om)
            N = float(x[-1]) if len(x) else 0.0
            x -= (om - 1) / 2
        else:
            gw = np.add.reduceat(om, self._groups)
            cw = np.cumsum(gw)
            N = float(cw[-1])
            x = (cw - (gw - 1) / 2)[self._group_id]
        if N < 2:
            return float("nan")
        hw = np.bincount(self._hs, weights=om, minlength=N_HEIGHTS)
        y = (np.cumsum(hw) - (hw - 1) / 2)[self._hs]
        # Elementwise products and sums, not BLAS dots: no thread start-up per resample.
        x -= (om * x).sum() / N
        y -= (om * y).sum() / N
        ox = om * x
        vx, vy, cov = float((ox * x).sum()), float((om * y * y).sum()), float((ox * y).sum())
        if vx <= 0 or vy <= 0:
            return float("nan")
        return cov / math.sqrt(vx * vy)


# ------------------------------------------------------------------------------------- the probe
def probe_distances(data: ProbeData, options: ProbeOptions) -> ProbeResult:
    """Embedding distance against LCA height: by-height distributions, intra/inter ratio, Spearman.

    See the module docstring for every statistic, the image sample, the blocked centroid pass, the
    fast nulls and the bootstrap.

    Parameters
    ----------
    data
        ``X`` ``(n, d)`` image embeddings with species, lineages and ``(S, d)`` centroids.
    options
        ``distance``, ``permutations``, ``max_pairs`` (>= 1), ``seed``; ``extra["distances"]`` may
        set ``n_boot`` (default 1000; 0: no intervals) and ``n_boot_spearman`` (default
        ``min(n_boot, 200)``).

    Returns
    -------
    ProbeResult
        Rows ``mean_distance`` (rank ``all``, per ``level`` and ``height``), ``intra_inter_ratio``
        (per rank), ``distance_height_spearman`` and ``height_means_monotonic`` (rank ``all``);
        tables ``by_height`` (``level, height, n, mean, std, q05..q95``), ``null`` (``rank, metric,
        permutation, value``) and ``skipped``; arrays ``image_rows`` ``(m,)`` and
        ``spearman_species`` ``(k,)``.
    """
    cfg = options.for_probe(PROBE)
    n_boot = int_setting(cfg, "n_boot", DEFAULT_N_BOOT, PROBE)
    n_boot_spearman = min(int_setting(cfg, "n_boot_spearman", min(n_boot, DEFAULT_N_BOOT_EXPENSIVE), PROBE),
                          n_boot)
    if options.max_pairs < 1:
        raise InputError(f"The 'max_pairs' option must be >= 1 for the {PROBE} probe (it bounds the image "
                         f"and centroid pairs used). Got {options.max_pairs!r}.")
    metric, seed = options.distance, int(options.seed)
    S = data.n_species
    rows: list[dict[str, Any]] = []
    skipped: list[dict[str, Any]] = []
    null_records: list[pd.DataFrame] = []

    # Image pairs --------------------------------------------------------------------------------
    image_rows, per_species, sampled = stratified_sample(
        data.species, S, max_items_for_pairs(options.max_pairs), min_per_species=2, seed=seed,
        tag=_IMAGE_SAMPLE_TAG)
    pairs = ImagePairSums(data, image_rows, metric, options.device)
    table = []
    for h in range(N_HEIGHTS):
        stats = _height_stats(pairs.values[pairs.heights == h])
        if stats:
            table.append({"level": "image", "height": h, **stats})

    # Centroid pairs -----------------------------------------------------------------------------
    centroid_table, centroid_info = centroid_height_table(data, metric, options.max_pairs, options.device)
    table += centroid_table
    by_height = pd.DataFrame.from_records(
        table, columns=["level", "height", "n", "mean", "std", *QUANTILE_COLUMNS])

    k_max = max_items_for_pairs(options.max_pairs)
    if S <= k_max:
        spearman_species, spearman_sampled = np.arange(S), False
    else:
        rng = np.random.default_rng([seed, _SPECIES_SAMPLE_TAG])
        spearman_species, spearman_sampled = np.sort(rng.choice(S, size=k_max, replace=False)), True
        log.info("distances: Spearman on a random sample of %d of %d species (max_pairs %d)", k_max, S,
                 options.max_pairs)
    spearman = CentroidSpearman(data, spearman_species, metric)

    # Nulls ----------------------------------------------------------------------------------------
    ratio_ranks = ranks_with_taxa(data)
    null_ranks = [r for r in ratio_ranks if r != SPECIES]
    observed_parts = pairs.parts()
    observed_ratio = ratio_from_parts(observed_parts)
    n_perm = int(options.permutations)
    ratio_null = np.full((n_perm, N_RANKS), np.nan)
    spearman_null = np.full(n_perm, np.nan)
    tested = [r for r in null_ranks if np.isfinite(observed_ratio[r])]
    with single_threaded_blas():
        for b, perm in enumerate(species_permutations(S, n_perm, seed)):
            if tested:
                ratio_null[b] = ratio_from_parts(pairs.parts(perm, species_rank=False))
            if spearman.defined:
                spearman_null[b] = spearman.null(perm)

        # Bootstrap over species -------------------------------------------------------------------
        named_sampled = data.named[pairs.species]  # (k, 7)
        full = [r for r in ratio_ranks if named_sampled[:, r].all()]
        image_sums = pairs.height_sums()

        def image_statistic(W: np.ndarray) -> np.ndarray:
            sums, counts = image_sums(W)
            with np.errstate(divide="ignore", invalid="ignore"):
                means = sums / counts
            return np.column_stack([means] + [_ratio_from_heights(sums, counts, r) for r in full])

        image_cis, image_note = species_cis(image_statistic, len(pairs.species), n_boot=n_boot, seed=seed,
                                            what="image-pair statistics")
        ratio_cis = {r: (_ci_at(image_cis, N_HEIGHTS + j), image_note) for j, r in enumerate(full)}
        for r in ratio_ranks:
            if r in ratio_cis:
                continue
            subset = np.flatnonzero(named_sampled[:, r])
            sub_sums = pairs.height_sums(subset)

            def ratio_statistic(W: np.ndarray, sub_sums: HeightSums = sub_sums, r: int = r) -> np.ndarray:
                return _ratio_from_heights(*sub_sums(W), r)

            low, high, note = cluster_ci(ratio_statistic, len(subset), n_boot=n_boot, seed=seed)
            ratio_cis[r] = ((low, high), note)

        centroid_sums = spearman.height_sums()
        centroid_heights = [int(rec["height"]) for rec in centroid_table]

        # Heights without centroid pairs in the data (always height 0: a species has one centroid) have no row
        # and no CI: their column is a constant 0 so the bootstrap does not report it as undefined.
        absent_heights = np.setdiff1d(np.arange(N_HEIGHTS), centroid_heights)

        def centroid_statistic(W: np.ndarray) -> np.ndarray:
            sums, counts = centroid_sums(W)
            with np.errstate(divide="ignore", invalid="ignore"):
                means = sums / counts
            means[:, absent_heights] = 0.0
            ordered = means[:, centroid_heights]
            monotonic = np.where(np.isnan(ordered).any(axis=1), np.nan,
                                 (np.diff(ordered, axis=1) > 0).all(axis=1).astype(np.float64))
            return np.column_stack([means, monotonic])

        centroid_cis, centroid_note = species_cis(centroid_statistic, len(spearman_species), n_boot=n_boot,
                                                  seed=seed, what="centroid-pair statistics")
        if spearman_sampled and not centroid_note:
            centroid_note = (f"CI over the {len(spearman_species)} species of the Spearman sample "
                             f"(all {S} species' pairs exceed max_pairs)")
        spearman_ci: tuple[float, float] = (np.nan, np.nan)
        spearman_note = ""
        if spearman.defined:
            low, high, spearman_note = cluster_ci(
                lambda W: np.array([spearman.bootstrap(w) for w in W]), len(spearman_species),
                n_boot=n_boot_spearman, seed=seed)
            spearman_ci = (low, high)

    # Rows ---------------------------------------------------------------------------------------
    support = {"image": height_support(data.codes[pairs.species], pairs.n >= 2),
               "centroid": height_support(data.codes)}
    for rec in table:
        level, h = rec["level"], int(rec["height"])
        cis, note = (image_cis, image_note) if level == "image" else (centroid_cis, centroid_note)
        n_sp, n_tx = support[level][h]
        ci, note = guard_ci(rec["mean"], _ci_at(cis, h), cluster_ci_note(n_sp) or note)
        rows.append(metric_row("all", "mean_distance", rec["mean"], ci, rec["n"], level=level,
                               height=h, n_species=n_sp, n_taxa=n_tx, ci_note=note, note=""))
    for r in range(N_RANKS):
        name = RANK_NAMES[r]
        if r not in ratio_ranks:
            log.info("distances: rank %s has fewer than 2 named taxa; no intra_inter_ratio", name)
            skipped.append({"rank": name, "metric": "intra_inter_ratio", "reason": "fewer than 2 named taxa"})
            continue
        intra_s, intra_c, inter_s, inter_c = observed_parts[r]
        if not (intra_c > 0 and inter_c > 0):
            skipped.append({"rank": name, "metric": "intra_inter_ratio",
                            "reason": "no intra or no inter pairs in the image sample"})
            continue
        named_r = named_sampled[:, r]
        counts = dict(n_species=int(named_r.sum()),
                      n_taxa=int(len(np.unique(data.codes[pairs.species[named_r], r]))),
                      n_intra=int(round(intra_c / 2)), n_inter=int(round(inter_c / 2)), sampled=bool(sampled))
        n_pairs = int(round((intra_c + inter_c) / 2))
        if not np.isfinite(observed_ratio[r]):  # inter_s == 0: every pair across taxa is a tie at 0
            rows.append(null_row(name, "intra_inter_ratio", np.nan, None, n_pairs, alternative="less", level="image",
                                 mean_intra=intra_s / intra_c, mean_inter=0.0, **counts, ci_note="no CI: no value",
                                 note="every image pair across taxa at distance 0 (tied vectors): no ratio, no test"))
            continue
        null = (tie_null(ratio_null[:, r], observed_ratio[r], rtol=TIE_STAT_RTOL)
                if r in null_ranks and np.isfinite(ratio_null[:, r]).any() else None)
        ci, ci_note = guard_ci(float(observed_ratio[r]), *ratio_cis[r])
        rows.append(null_row(
            name, "intra_inter_ratio", float(observed_ratio[r]), null, n_pairs, alternative="less", ci=ci,
            level="image", mean_intra=intra_s / intra_c, mean_inter=inter_s / inter_c, **counts, ci_note=ci_note,
            note=""))
        if null is not None:
            null_records.append(null_frame(name, "intra_inter_ratio", null))
    spearman_counts = dict(n_species=len(spearman_species), n_taxa=taxa_count(data, spearman_species),
                           sampled=bool(spearman_sampled))
    if spearman.defined:
        spearman_ci, spearman_note = guard_ci(spearman.observed, spearman_ci, spearman_note)
        null = tie_null(spearman_null, spearman.observed, rtol=TIE_STAT_RTOL) if np.isfinite(spearman_null).any() else None
        rows.append(null_row("all", "distance_height_spearman", spearman.observed, null, spearman.n_pairs,
                             alternative="greater", ci=spearman_ci, level="centroid", **spearman_counts,
                             ci_note=spearman_note, note=""))
        if null is not None:
            null_records.append(null_frame("all", "distance_height_spearman", null))
    elif spearman.tied and spearman.n_heights >= 2:
        rows.append(null_row("all", "distance_height_spearman", np.nan, None, spearman.n_pairs, alternative="greater",
                             level="centroid", **spearman_counts, ci_note="no CI: no value",
                             note="every centroid distance tied (identical centroids): no correlation, no test"))
    else:
        skipped.append({"rank": "all", "metric": "distance_height_spearman",
                        "reason": "centroid pairs span fewer than 2 LCA heights"})
    means = [(rec["height"], rec["mean"]) for rec in centroid_table]
    if len(means) >= 2:
        ordered = [m for _, m in sorted(means)]
        monotonic = float(all(b > a for a, b in zip(ordered, ordered[1:])))
        ci, note = guard_ci(monotonic, _ci_at(centroid_cis, N_HEIGHTS), centroid_note)
        rows.append(metric_row("all", "height_means_monotonic", monotonic, ci, centroid_info["pairs"],
                               level="centroid", n_heights=len(means), n_species=S,
                               n_taxa=taxa_count(data, np.arange(S)), ci_note=note, note=""))
    else:
        skipped.append({"rank": "all", "metric": "height_means_monotonic",
                        "reason": "centroid pairs span fewer than 2 LCA heights"})

    info = {
        "distance": metric, "permutations": n_perm, "n_boot": n_boot, "n_boot_spearman": n_boot_spearman,
        "seed": seed,
        "image_sample": {"rule": "all images" if not sampled else (
            f"{per_species} images per species (stratified)" if per_species > 0
            else "random species subset, 2 images each"),
            "images": int(len(image_rows)), "species": int(len(pairs.species)),
            "pairs": int(pairs.values.size), "max_pairs": int(options.max_pairs)},
        "centroid_pairs": centroid_info,
        "spearman": {"species": int(len(spearman_species)), "pairs": spearman.n_pairs,
                     "sampled": bool(spearman_sampled)},
    }
    null_table = (pd.concat(null_records, ignore_index=True) if null_records
                  else pd.DataFrame(columns=["rank", "metric", "permutation", "value"]))
    return ProbeResult(
        probe=PROBE, rows=pd.DataFrame.from_records(rows),
        arrays={"image_rows": image_rows, "spearman_species": spearman_species},
        tables={"by_height": by_height, "null": null_table,
                "skipped": pd.DataFrame(skipped, columns=["rank", "metric", "reason"])},
        info=info)

