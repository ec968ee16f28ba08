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

Bootstrap
---------
Percentile intervals (95 %) resample species with replacement (``n_boot`` from
``options.for_probe("distances")["n_boot"]``, default 200; seeded by ``options.seed``; the resamples of
:func:`latent.stats.bootstrap_indices`), for ``intra_inter_ratio`` (species of the image sample) and
``distance_height_spearman`` (species of the Spearman). A species drawn ``w`` times contributes its
images ``w`` times: its pairs with another species ``w * w'`` times and its own within-species image
pairs ``w`` times; pairs made of a species and its own duplicate (the same images twice, or a centroid
with itself) are dropped.
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
from latent.results import metric_row
from latent.stats import bootstrap_weights, iter_bootstrap_indices, percentile_interval
from latent.taxonomy import N_RANKS, lca_height

__all__ = ["probe_distances"]

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
DEFAULT_N_BOOT = 200
GENUS = int(Rank.GENUS)
SPECIES = int(Rank.SPECIES)
_IMAGE_SAMPLE_TAG = 0xD157
_SPECIES_SAMPLE_TAG = 0xC3A7


# ---------------------------------------------------------------------------------------- helpers
def _starts(values: np.ndarray) -> np.ndarray:
    """``(runs,)`` start positions of the runs of equal values of a ``(k,)`` array."""
    values = np.asarray(values)
    if values.size == 0:
        return np.zeros(0, dtype=np.int64)
    return np.flatnonzero(np.r_[True, values[1:] != values[:-1]])


def max_items_for_pairs(max_pairs: int) -> int:
    """Largest ``m`` with ``m (m - 1) / 2 <= max_pairs`` (at least 1)."""
    m = int((1 + math.isqrt(1 + 8 * int(max_pairs))) // 2)
    while m * (m - 1) // 2 > max_pairs:
        m -= 1
    while (m + 1) * m // 2 <= max_pairs:
        m += 1
    return max(m, 1)


def stratified_sample(species: np.ndarray, n_species: int, max_rows: int, *, min_per_species: int,
                      seed: int, tag: int) -> tuple[np.ndarray, int, bool]:
    """A seeded sample of at most ``max_rows`` rows, stratified by species.

    Every species gives ``min(count, k)`` random rows, ``k >= min_per_species`` the largest for which
    the total fits; if even ``k = min_per_species`` does not fit, a random subset of species gives
    ``min(count, min_per_species)`` rows each.

    Parameters
    ----------
    species
        ``(n,)`` species index of each row, in ``[0, n_species)``.

    Returns
    -------
    tuple
        ``(m,)`` int64 rows sorted by species then row; ``k`` (0 when species were subsampled, -1 when
        every row was kept); whether a sample was drawn.
    """
    species = np.asarray(species, dtype=np.int64)
    order = np.argsort(species, kind="stable")
    if len(species) <= max_rows:
        return order, -1, False
    counts = np.bincount(species, minlength=n_species)
    rng = np.random.default_rng([int(seed), int(tag)])

    def size(k: int) -> int:
        return int(np.minimum(counts, k).sum())

    lo, hi = int(min_per_species), int(counts.max())
    if lo <= hi and size(lo) <= max_rows:
        while lo < hi:
            mid = (lo + hi + 1) // 2
            if size(mid) <= max_rows:
                lo = mid
            else:
                hi = mid - 1
        take, k = np.minimum(counts, lo), lo
    else:
        species_order = rng.permutation(n_species)
        per = np.minimum(counts[species_order], min_per_species)
        keep = np.cumsum(per) <= max_rows
        take = np.zeros(n_species, dtype=np.int64)
        take[species_order[keep]] = per[keep]
        k = 0
    first = np.r_[0, np.cumsum(counts)[:-1]]
    rows = []
    for s in np.flatnonzero(take).tolist():
        members = order[first[s]:first[s] + counts[s]]
        if take[s] < counts[s]:
            members = np.sort(rng.choice(members, size=int(take[s]), replace=False))
        rows.append(members)
    return np.concatenate(rows).astype(np.int64), int(k), True


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
    s = _starts(L[:, top])
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
        s = _starts(Lr[:, r])
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


def _check_int_option(cfg: dict, key: str, default: int, probe: str, minimum: int = 0) -> int:
    value = cfg.get(key, default)
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < minimum:
        raise InputError(f"The {key!r} setting of the {probe} probe must be an integer >= {minimum}. "
                         f"Got {value!r}; set it with options.extra={{'{probe}': {{'{key}': ...}}}}.")
    return int(value)


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

    def __init__(self, data: ProbeData, rows: np.ndarray, metric: str) -> None:
        sp = data.species[rows]
        st = _starts(sp)
        m = len(rows)
        self.species = sp[st]
        self.n = np.diff(np.r_[st, m]).astype(np.float64)
        k = len(self.species)
        self.codes = data.codes
        self.named = named_nodes(data)
        local = np.repeat(np.arange(k), np.diff(np.r_[st, m]))
        H = lca_height(data.codes[self.species], data.codes[self.species])
        X = data.X[rows]
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
            D = pairwise_distances(X[r0:r1], X, metric)
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
def _centroid_blocks(centroids: np.ndarray, codes: np.ndarray, metric: str) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """Distances and LCA heights of the centroid pairs ``i < j``, a block of rows at a time."""
    S = len(centroids)
    step = max(1, BLOCK_ELEMENTS // max(S, 1))
    columns = np.arange(S)
    for i0 in range(0, S - 1, step):
        i1 = min(S, i0 + step)
        D = pairwise_distances(centroids[i0:i1], centroids, metric)
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


def centroid_height_table(data: ProbeData, metric: str, max_pairs: int) -> tuple[list[dict[str, Any]], dict[str, Any]]:
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
        return _centroid_blocks(centroids, codes, metric)

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
        D = pairwise_distances(data.centroids[self.species], metric=metric)
        H = lca_height(self.codes[self.species], self.codes[self.species])
        iu, ju = np.triu_indices(k, 1)
        d, h = D[iu, ju], H[iu, ju].astype(np.int64)
        from scipy.stats import rankdata

        rd = rankdata(d)
        count_h = np.bincount(h, minlength=N_HEIGHTS).astype(np.float64)
        g = np.cumsum(count_h) - count_h + (count_h + 1) / 2  # midrank of each height
        gh = g[h]
        self.n_pairs = int(len(d))
        self.mean_rd, self.sd_rd = float(rd.mean()) if len(d) else np.nan, float(rd.std()) if len(d) else np.nan
        self.mean_g, self.sd_g = float(gh.mean()) if len(d) else np.nan, float(gh.std()) if len(d) else np.nan
        self.defined = len(d) >= 2 and np.count_nonzero(count_h) >= 2 and self.sd_rd > 0
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
        self._groups = _starts(ds)
        self._group_id = np.repeat(np.arange(len(self._groups)), np.diff(np.r_[self._groups, len(ds)]))
        self._hs = h[order]
        self._iu, self._ju = iu[order], ju[order]

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
        set ``n_boot`` (default 200; 0: no intervals).

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
    n_boot = _check_int_option(cfg, "n_boot", DEFAULT_N_BOOT, PROBE)
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
    pairs = ImagePairSums(data, image_rows, metric)
    table = []
    for h in range(N_HEIGHTS):
        stats = _height_stats(pairs.values[pairs.heights == h])
        if stats:
            table.append({"level": "image", "height": h, **stats})

    # Centroid pairs -----------------------------------------------------------------------------
    centroid_table, centroid_info = centroid_height_table(data, metric, options.max_pairs)
    table += centroid_table
    by_height = pd.DataFrame.from_records(
        table, columns=["level", "height", "n", "mean", "std", *QUANTILE_COLUMNS])
    for rec in table:
        rows.append(metric_row("all", "mean_distance", rec["mean"], None, rec["n"], level=rec["level"],
                               height=int(rec["height"])))

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
    ratio_boot = np.full((n_boot, N_RANKS), np.nan)
    spearman_boot = np.full(n_boot, np.nan)
    with single_threaded_blas():
        for b, perm in enumerate(species_permutations(S, n_perm, seed)):
            if null_ranks:
                ratio_null[b] = ratio_from_parts(pairs.parts(perm, species_rank=False))
            spearman_null[b] = spearman.null(perm)

        # Bootstrap --------------------------------------------------------------------------------
        b = 0
        for chunk in iter_bootstrap_indices(len(pairs.species), n_boot, seed):
            for w in bootstrap_weights(chunk, len(pairs.species)):
                ratio_boot[b] = ratio_from_parts(pairs.parts(weights=w))
                b += 1
        if spearman.defined:
            b = 0
            for chunk in iter_bootstrap_indices(len(spearman_species), n_boot, seed):
                for w in bootstrap_weights(chunk, len(spearman_species)):
                    spearman_boot[b] = spearman.bootstrap(w)
                    b += 1

    # Rows ---------------------------------------------------------------------------------------
    for r in range(N_RANKS):
        name = RANK_NAMES[r]
        if r not in ratio_ranks:
            log.info("distances: rank %s has fewer than 2 named taxa; no intra_inter_ratio", name)
            skipped.append({"rank": name, "metric": "intra_inter_ratio", "reason": "fewer than 2 named taxa"})
            continue
        intra_s, intra_c, inter_s, inter_c = observed_parts[r]
        if not np.isfinite(observed_ratio[r]):
            skipped.append({"rank": name, "metric": "intra_inter_ratio",
                            "reason": "no intra or no inter pairs in the image sample"})
            continue
        null = ratio_null[:, r] if r in null_ranks and n_perm else None
        ci = percentile_interval(ratio_boot[:, r], what=f"intra_inter_ratio ({name})") if n_boot else None
        rows.append(null_row(
            name, "intra_inter_ratio", float(observed_ratio[r]), null, int(round((intra_c + inter_c) / 2)),
            alternative="less", ci=ci, level="image", mean_intra=intra_s / intra_c, mean_inter=inter_s / inter_c,
            n_intra=int(round(intra_c / 2)), n_inter=int(round(inter_c / 2)), n_species=len(pairs.species),
            sampled=bool(sampled)))
        if null is not None:
            null_records.append(_null_frame(name, "intra_inter_ratio", null))
    if spearman.defined:
        ci = percentile_interval(spearman_boot, what="distance_height_spearman") if n_boot else None
        null = spearman_null if n_perm else None
        rows.append(null_row("all", "distance_height_spearman", spearman.observed, null, spearman.n_pairs,
                             alternative="greater", ci=ci, level="centroid", n_species=len(spearman_species),
                             sampled=bool(spearman_sampled)))
        if null is not None:
            null_records.append(_null_frame("all", "distance_height_spearman", null))
    else:
        skipped.append({"rank": "all", "metric": "distance_height_spearman",
                        "reason": "centroid pairs span fewer than 2 LCA heights"})
    means = [(rec["height"], rec["mean"]) for rec in centroid_table]
    if len(means) >= 2:
        ordered = [m for _, m in sorted(means)]
        monotonic = float(all(b > a for a, b in zip(ordered, ordered[1:])))
        rows.append(metric_row("all", "height_means_monotonic", monotonic, None, centroid_info["pairs"],
                               level="centroid", n_heights=len(means)))
    else:
        skipped.append({"rank": "all", "metric": "height_means_monotonic",
                        "reason": "centroid pairs span fewer than 2 LCA heights"})

    info = {
        "distance": metric, "permutations": n_perm, "n_boot": n_boot, "seed": seed,
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


def _null_frame(rank: str, metric: str, null: np.ndarray) -> pd.DataFrame:
    return pd.DataFrame({"rank": rank, "metric": metric, "permutation": np.arange(len(null)),
                         "value": np.asarray(null, dtype=np.float64)})
