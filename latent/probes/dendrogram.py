"""Hierarchical clustering of species centroids compared with the taxonomy.

The dendrogram is ``scipy.cluster.hierarchy.linkage`` of the centroid distances (``options.distance``;
``ward``, ``centroid`` and ``median`` are defined for Euclidean distances only and always use Euclidean
distances of the raw centroids, whatever ``options.distance`` says: the rows' ``distance`` column says
which was used). It is compared with the taxonomy by:

* **cophenetic_taxonomy_corr** / **cophenetic_taxonomy_spearman**: Pearson / Spearman correlation of
  the dendrogram's cophenetic distances with the taxonomic distances (LCA height). This is *not*
  ``scipy.cluster.hierarchy.cophenet(Z, Y)``, which measures how well the tree fits the embedding
  distances it was built from; that number is reported apart as ``cophenetic_fit_embedding`` (no null:
  it does not involve the taxonomy).
* **fmi** / **ari** per rank: the tree cut into as many clusters as the rank has named taxa
  (``fcluster(Z, k, "maxclust")``), scored against the taxa with the Fowlkes-Mallows index and the
  adjusted Rand index (equal to scikit-learn's ``fowlkes_mallows_score`` / ``adjusted_rand_score``) on
  the species named at that rank. Ranks with fewer than 2 taxa or only one species per taxon are
  skipped (the score is trivial there).
* **clade_recovery** per rank: the fraction of the rank's clades with at least 2 species (and not
  every species used: such a clade is always the root) whose species set is exactly the leaf set of a
  node of the dendrogram (a node of the tree with tied merges collapsed, see below).
* **bakers_gamma**: Baker's gamma (Baker 1974, as R dendextend's ``cor_bakers_gamma``): for every pair
  of leaves, the largest number of clusters ``k`` for which the two are still together when each tree
  is cut into ``k`` clusters; the statistic is the Spearman correlation of these numbers between the
  two trees. Both trees are cut at heights, so tied heights cannot be split: for the dendrogram
  ``k = S - #{merges at a height <= h}``, ``h`` the height of the merge that joins the pair (``S - 1 - m``
  for the ``m``-th merge when no two heights tie); for the taxonomy, a multifurcating tree whose
  achievable cuts are its ranks, ``k`` is the number of taxa (placeholders of empty ranks included, as
  in the distances) at the deepest rank the two species share (1 above the kingdoms).

Two coincidences follow from the definitions and are not errors: when every species is named at a
rank, FMI and ARI of a fixed cut are both monotone in the number of same-cluster same-taxon pairs,
so their z and p agree; when the merge heights increase along the merges (every linkage but
``centroid`` and ``median``) and every rank has more taxa than the rank above, Baker's gamma equals
the cophenetic Spearman correlation (both are Spearman correlations of the same pair orderings).

Ties
----
A tie must never be broken by species order: species are numbered in lineage order, so a tie broken
by index merges relatives first and credits the taxonomy for nothing (300 identical vectors gave
Baker's gamma p = 0.005 and clade recovery p = 0.045 that way). Hence:

* distances come from :func:`latent.probes.alignment.centroid_distances` (near-ties within
  ``REL_TOL`` of the distance scale made exact); when all of them tie (identical or all-zero vectors,
  a regular simplex) the input is **degenerate**: every row is NaN with no p-value (``permutations``
  0), ``degenerate`` True and a ``note`` saying why;
* the tree is built on a seeded random relabelling of the species (:func:`shuffled_linkage`; without
  ties the result is exactly SciPy's), so whatever order SciPy's algorithm gives tied candidates is
  independent of the lineages; merge heights that tie (within the same tolerance) are made equal;
* a node joined to its parent at the same height is no clade (:func:`clade_recovery`): a group of
  tied points is a polytomy, and the binary splits SciPy draws inside it do not exist in the data;
* Baker's gamma and the cuts use heights, not the order of merges (above).

With one distinct point per genus, say, genera are legitimately recovered (each genus is a point
apart), while nothing below the tie is credited and nothing above it either when the genus points are
equidistant.

Uncertainty
-----------
Every row but the p-values gets a percentile CI from a cluster bootstrap over species
(:func:`latent.stats.cluster_ci`, probe setting ``n_boot``, default 200: each resample builds a tree).
A resample draws ``S`` species with replacement and the whole probe statistic is recomputed on it:
the tree is built on the drawn points with copies of one species as separate leaves (at distance 0
from each other: they join first and are tied there, so they stay together in every cut and never form
a clade of their own); pairs of two copies of one species are left out of every pair statistic
(correlations, and the FMI / ARI pair counts); a clade must have at least 2 distinct species among
the draws. This is the bootstrap of the data set of species (copies act as weights), not of a
subsample of distinct species, whose spread would be too narrow (``sqrt(1/0.632 - 1) = 0.76`` of the
sampling spread for a smooth statistic). Below :data:`latent.stats.MIN_CLUSTERS` species behind a row
(``n_species``) it has no CI and ``ci_note`` says so.

Nulls permute species among the leaves of the taxonomy (:mod:`latent.probes.base`): the dendrogram,
its cophenetic distances and its cuts do not change, only the taxonomy labels do, so the tree is built
once and each permutation only relabels. Correlations under permutation use
:func:`latent.probes.alignment.permuted_pair_sums`; FMI/ARI come from contingency counts of all
permutations at once; clade recovery compares 64-bit sums of random leaf keys of each permuted clade
with those of the dendrogram's nodes and confirms every match by its leaf set.

Above ``options.max_pairs`` species pairs a stratified seeded sample of species is used (the rows' ``n``
says how many; ``arrays["species"]`` which).
"""

from __future__ import annotations

import logging
import time
from typing import Any

import numpy as np
import pandas as pd

from latent.errors import InputError
from latent.probes.alignment import (
    REL_TOL,
    PermutedCorrelation,
    TIE_TOL,
    centroid_distances,
    centroid_species,
    condensed,
    degenerate_note,
    species_cis,
    species_distances,
)
from latent.probes.base import ProbeData, ProbeOptions, ProbeResult, null_row, species_permutations
from latent.probes.common import DEFAULT_N_BOOT_EXPENSIVE, empty_null_frame, int_setting, null_frame, snap_ties, tie_null
from latent.ranks import RANK_NAMES, Rank
from latent.stats import cluster_ci_note

__all__ = [
    "LINKAGE_METHODS",
    "shuffled_linkage",
    "merge_k",
    "taxonomy_k",
    "bakers_gamma",
    "pair_counting_scores",
    "clade_recovery",
    "probe_dendrogram",
]

log = logging.getLogger(__name__)

LINKAGE_METHODS = ("single", "complete", "average", "weighted", "ward", "centroid", "median")
EUCLIDEAN_ONLY = ("ward", "centroid", "median")


# ---------------------------------------------------------------------- ties
def _height_tol(heights: np.ndarray, tol: "float | None") -> float:
    """``tol``, or ``REL_TOL`` times the largest absolute height."""
    if tol is not None:
        return float(tol)
    return REL_TOL * float(np.abs(heights).max(initial=0.0))


def _tie_codes(values: np.ndarray, tol: float) -> np.ndarray:
    """Dense 0-based codes of ``values`` in increasing order, values within ``tol`` (chained) sharing one."""
    _, codes = np.unique(snap_ties(values, tol), return_inverse=True)
    return codes.ravel().astype(np.int64)


def shuffled_linkage(D: np.ndarray, method: str = "average", seed: "int | np.random.Generator" = 0,
                     tol: "float | None" = None) -> np.ndarray:
    """``scipy.cluster.hierarchy.linkage`` of condensed distances, tie-breaking independent of leaf order.

    The leaves are relabelled by a seeded random permutation, linked, and labelled back; the two
    children of each merge are listed smaller id first and merge heights within ``tol`` (default
    ``REL_TOL`` times the largest height) are made equal. Without tied distances this is exactly
    ``linkage(D, method)`` (up to rounding of the heights); with ties, which tied pair SciPy merges
    first no longer follows the species order.

    Returns
    -------
    numpy.ndarray
        ``(S - 1, 4)`` linkage matrix over the original leaf numbers.
    """
    from scipy.spatial.distance import squareform

    return _shuffled_linkage_square(squareform(np.asarray(D, dtype=np.float64), checks=False), method, seed, tol)


def _shuffled_linkage_square(D: np.ndarray, method: str, seed: "int | np.random.Generator",
                             tol: "float | None" = None, leaves: "np.ndarray | None" = None) -> np.ndarray:
    """:func:`shuffled_linkage` of the square ``D[leaves][:, leaves]`` (default all of ``D``)."""
    from scipy.cluster.hierarchy import linkage
    from scipy.spatial.distance import squareform

    leaves = np.arange(D.shape[0]) if leaves is None else np.asarray(leaves)
    S = leaves.size
    rng = seed if isinstance(seed, np.random.Generator) else np.random.default_rng([int(seed), 0x7EE5])
    p = rng.permutation(S)
    sel = leaves[p]
    Z = linkage(squareform(D[np.ix_(sel, sel)], checks=False), method=method)
    children = Z[:, :2].astype(np.int64)
    leaf = children < S
    children[leaf] = p[children[leaf]]
    Z[:, :2] = np.sort(children, axis=1)
    Z[:, 2] = snap_ties(Z[:, 2], _height_tol(Z[:, 2], tol))
    return Z


# ---------------------------------------------------------------------- Baker's gamma
def merge_k(Z: np.ndarray, tol: "float | None" = None) -> np.ndarray:
    """``(S (S - 1) / 2,)`` condensed: the largest k for which each pair of leaves shares a cluster.

    A cut at a height keeps every merge below it; two leaves joined at height ``h`` are together in
    every cut that keeps the merges at heights ``<= h``, which leaves ``k = S - #{merges at <= h}``
    clusters. Without tied heights the ``m``-th merge (0-based row of ``Z``) gives ``k = S - 1 - m``;
    tied merges (within ``tol``, default ``REL_TOL`` times the largest height) are one cut, so their
    order in ``Z`` (arbitrary: the order in which tied pairs were found) does not matter.
    """
    from scipy.cluster.hierarchy import cophenet

    Z = np.asarray(Z, dtype=np.float64)
    S = Z.shape[0] + 1
    codes = _tie_codes(Z[:, 2], _height_tol(Z[:, 2], tol))
    at_or_below = np.cumsum(np.bincount(codes))
    k_merge = (S - at_or_below[codes]).astype(np.float64)
    order = Z.copy()
    order[:, 2] = np.arange(S - 1, dtype=np.float64)
    return k_merge[cophenet(order).astype(np.int64)]


def _taxonomy_kmap(codes: np.ndarray) -> np.ndarray:
    """``(8,)`` k of a pair of species at each LCA height 0..7 (:func:`taxonomy_k`)."""
    codes = np.asarray(codes)
    counts = [np.unique(codes[:, r]).size for r in range(codes.shape[1])]
    return np.array([counts[6 - h] if h <= 6 else 1 for h in range(8)], dtype=np.float64)


def taxonomy_k(codes: np.ndarray, distances: np.ndarray) -> np.ndarray:
    """``(S, S)`` the largest k for which two species share a cluster of a cut of the taxonomy.

    The taxonomy's cuts are its ranks; two species at LCA height ``h`` last share the taxon at rank
    ``6 - h``, a cut into ``k = `` (number of taxa at that rank) clusters; ``k = 1`` for different
    kingdoms (``h = 7``).

    Parameters
    ----------
    codes
        ``(S, 7)`` lineage codes of the species.
    distances
        ``(S, S)`` LCA heights of the same species.
    """
    return _taxonomy_kmap(codes)[np.asarray(distances, dtype=np.int64)]


def bakers_gamma(k1: np.ndarray, k2: np.ndarray) -> float:
    """Spearman correlation of two condensed k vectors; NaN when either is constant (a tree with one
    merge height, or all leaves in one cut, says nothing about the other; dendextend returns 1 when both
    are constant)."""
    from scipy.stats import spearmanr

    k1 = np.asarray(k1, dtype=np.float64).ravel()
    k2 = np.asarray(k2, dtype=np.float64).ravel()
    if k1.shape != k2.shape:
        raise InputError(f"bakers_gamma needs two k vectors of the same length; got {k1.shape} and {k2.shape}.")
    if np.ptp(k1) == 0 or np.ptp(k2) == 0:
        return float("nan")
    return float(spearmanr(k1, k2).statistic)


# ---------------------------------------------------------------------- FMI / ARI
def _sum_sq_counts(keys: np.ndarray) -> np.ndarray:
    """Per row of ``(P, m)`` non-negative int keys: the sum of squared multiplicities of its values."""
    P, m = keys.shape
    if m == 0:
        return np.zeros(P)
    span = int(keys.max()) + 1
    flat = (keys + np.arange(P, dtype=np.int64)[:, None] * span).ravel()
    values, counts = np.unique(flat, return_counts=True)
    return np.bincount(values // span, weights=counts.astype(np.float64) ** 2, minlength=P)


def _scores_from_sums(ss: np.ndarray, sa: np.ndarray, sb: np.ndarray, n: float,
                      self_pairs: "float | None" = None) -> tuple[np.ndarray, np.ndarray]:
    """FMI and ARI from ``sum n_ij^2``, ``sum a_i^2`` (classes), ``sum b_j^2`` (clusters) and ``n`` items.

    ``self_pairs`` is the number of ordered item pairs that are no pairs (default ``n``: each item with
    itself). In a bootstrap resample the items are the draws, and pairs of two copies of one species
    (always one taxon and one cluster) are no pairs either: ``self_pairs = sum_s w_s^2``.
    """
    ss, sa, sb = np.broadcast_arrays(np.asarray(ss, float), np.asarray(sa, float), np.asarray(sb, float))
    own = float(n) if self_pairs is None else float(self_pairs)
    tk, pk, qk = ss - own, sb - own, sa - own
    with np.errstate(invalid="ignore", divide="ignore"):
        fmi = np.where(tk != 0, np.sqrt(tk / pk) * np.sqrt(tk / qk), 0.0)
    # scikit-learn's pair confusion matrix (ordered pairs): tp, fp, fn, tn
    tp = ss - own
    fp = sb - ss
    fn = sa - ss
    tn = n * n - fp - fn - ss
    with np.errstate(invalid="ignore", divide="ignore"):
        ari = 2.0 * (tp * tn - fn * fp) / ((tp + fn) * (fn + tn) + (tp + fp) * (fp + tn))
    ari = np.where((fn == 0) & (fp == 0), 1.0, ari)
    return fmi, ari


def pair_counting_scores(truth: np.ndarray, pred: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Fowlkes-Mallows index and adjusted Rand index of each row of ``truth`` against ``pred``.

    Same formulas and special cases as scikit-learn's ``fowlkes_mallows_score`` and
    ``adjusted_rand_score`` (via the pair confusion matrix), vectorised over rows.

    Parameters
    ----------
    truth, pred
        ``(P, m)`` or ``(m,)`` non-negative integer labels (each row one labelling of ``m`` items).

    Returns
    -------
    tuple of numpy.ndarray
        ``(P,)`` FMI and ``(P,)`` ARI (floats, not arrays, for 1-d input).
    """
    flat = np.ndim(truth) == 1
    t = np.atleast_2d(np.asarray(truth, dtype=np.int64))
    p = np.atleast_2d(np.asarray(pred, dtype=np.int64))
    if t.shape != p.shape or (t.size and (t.min() < 0 or p.min() < 0)):
        raise InputError(f"pair_counting_scores needs label arrays of the same shape with labels >= 0; got "
                         f"{t.shape} and {p.shape}.")
    span = int(t.max(initial=0)) + 1
    ss = _sum_sq_counts(p * span + t)  # sum n_ij^2
    sa = _sum_sq_counts(t)  # sum a_i^2 (class sizes)
    sb = _sum_sq_counts(p)  # sum b_j^2 (cluster sizes)
    fmi, ari = _scores_from_sums(ss, sa, sb, float(t.shape[1]))
    if flat:
        return float(fmi[0]), float(ari[0])
    return fmi, ari


# ---------------------------------------------------------------------- clade recovery
class _NodeIndex:
    """Leaf-key sums of the dendrogram's clades, for exact clade lookups.

    A node merged into its parent at the same height (within ``tol``, default ``REL_TOL`` times the
    largest height) is no clade: tied points form a polytomy, and the binary splits inside it are
    artefacts of the order in which tied pairs were merged. A node above its parent (an inversion of
    centroid / median linkage) is a clade.
    """

    def __init__(self, Z: np.ndarray, seed: int = 0, tol: "float | None" = None) -> None:
        self.Z = np.asarray(Z)
        S = self.Z.shape[0] + 1
        self.S = S
        self.key = np.random.default_rng([int(seed), 0xC1ADE]).integers(0, 2**63, size=S, dtype=np.int64).view(np.uint64)
        sums = np.zeros(2 * S - 1, dtype=np.uint64)
        sums[:S] = self.key
        children = self.Z[:, :2].astype(np.int64)
        with np.errstate(over="ignore"):
            for i, (a, b) in enumerate(children):
                sums[S + i] = sums[a] + sums[b]
        self.sums = sums[S:]
        self.sizes = self.Z[:, 3].astype(np.int64)
        height = _tie_codes(self.Z[:, 2], _height_tol(self.Z[:, 2], tol)) if S > 1 else np.zeros(0, np.int64)
        parent = np.full(S - 1, -1, dtype=np.int64)
        inner = children >= S
        parent[children[inner] - S] = np.nonzero(inner)[0]
        self.clade = (parent < 0) | (height != height[np.maximum(parent, 0)])
        self.clade_sums = self.sums[self.clade]
        self.lookup = {int(h): i for i, h in enumerate(self.sums) if self.clade[i]}
        self._leaves: dict[int, np.ndarray] = {}

    def leaves(self, node: int) -> np.ndarray:
        """Sorted leaves under internal node ``node`` (0-based row of ``Z``)."""
        if node not in self._leaves:
            out, stack = [], [self.S + node]
            while stack:
                k = stack.pop()
                if k < self.S:
                    out.append(k)
                else:
                    stack.extend(int(c) for c in self.Z[k - self.S, :2])
            self._leaves[node] = np.sort(np.asarray(out, dtype=np.int64))
        return self._leaves[node]

    def is_node(self, key_sum: int, members: np.ndarray) -> bool:
        node = self.lookup.get(int(key_sum))
        if node is None or self.sizes[node] != members.size:
            return False
        return bool(np.array_equal(self.leaves(node), np.sort(members)))


def _clades(codes_r: np.ndarray, named_r: np.ndarray, units: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Leaves of the eligible clades at one rank: ``(members in clade order, clade start offsets)``.

    Eligible: a named taxon with at least 2 distinct units (species) and not every unit.
    """
    span = int(units.max(initial=0)) + 1
    pairs = np.unique(codes_r[named_r].astype(np.int64) * span + units[named_r])  # distinct (taxon, unit)
    values, counts = np.unique(pairs // span, return_counts=True)
    keep = values[(counts >= 2) & (counts < np.unique(units).size)]
    rows = np.flatnonzero(named_r & np.isin(codes_r, keep))
    order = rows[np.argsort(codes_r[rows], kind="stable")]
    sizes = np.unique(codes_r[order], return_counts=True)[1]
    starts = (np.cumsum(sizes) - sizes).astype(np.int64)
    return order, starts


def clade_recovery(Z: np.ndarray, codes_r: np.ndarray, named_r: "np.ndarray | None" = None,
                   perms: "np.ndarray | None" = None, *, seed: int = 0,
                   index: "_NodeIndex | None" = None, units: "np.ndarray | None" = None,
                   tol: "float | None" = None) -> tuple[np.ndarray, int]:
    """Fraction of a rank's clades that are exactly a clade of the dendrogram, for each permutation.

    A clade of the dendrogram is the leaf set of a node whose merge height differs from its parent's
    (see :class:`_NodeIndex`: tied merges form one polytomy).

    Parameters
    ----------
    Z
        ``(S - 1, 4)`` linkage matrix over ``S`` leaves.
    codes_r, named_r
        ``(S,)`` taxon code of each leaf at the rank, and whether it is a named taxon (default all).
    perms
        ``(P, S)`` leaf permutations (leaf ``s`` takes the taxon of ``perm[s]``); default the identity.
    seed
        Seed of the random leaf keys (the result does not depend on it: matches are confirmed exactly).
    units
        ``(S,)`` species of each leaf when leaves repeat species (a bootstrap resample): a clade needs 2
        distinct species. Default: every leaf its own species.
    tol
        Merge heights this close are tied (default ``REL_TOL`` times the largest height).

    Returns
    -------
    tuple
        ``(P,)`` fractions (NaN when the rank has no eligible clade) and the number of eligible clades.
    """
    Z = np.asarray(Z)
    S = Z.shape[0] + 1
    codes_r = np.asarray(codes_r)
    named_r = np.ones(S, dtype=bool) if named_r is None else np.asarray(named_r, dtype=bool)
    units = np.arange(S, dtype=np.int64) if units is None else np.asarray(units, dtype=np.int64)
    perms = np.arange(S, dtype=np.int64)[None, :] if perms is None else np.asarray(perms, dtype=np.int64)
    members, starts = _clades(codes_r, named_r, units)
    n_clades = int(starts.size)
    if n_clades == 0:
        return np.full(perms.shape[0], np.nan), 0
    index = index or _NodeIndex(Z, seed, tol)
    inverse = np.argsort(perms, axis=1)  # species s has taxon of perm[s]: clade c holds inverse[a], a in c
    keys = index.key[inverse[:, members]]
    with np.errstate(over="ignore"):
        sums = np.add.reduceat(keys, starts, axis=1)
    candidates = np.isin(sums, index.clade_sums)
    ends = np.r_[starts[1:], members.size]
    found = np.zeros(perms.shape[0], dtype=np.int64)
    for t, c in zip(*np.nonzero(candidates)):
        clade = inverse[t, members[starts[c]:ends[c]]]
        found[t] += index.is_node(sums[t, c], clade)
    return found / n_clades, n_clades


# ---------------------------------------------------------------------- statistics of one tree (bootstrap)
class _Cutter:
    """Flat clusters of ``fcluster(Z, k, "maxclust")`` for many ``k`` (the same partitions; labels differ).

    As SciPy: each merge gets the largest height in its subtree (``MR``, monotone even where centroid /
    median linkage has inversions), the cut keeps the merges with ``MR <= r`` for the smallest ``r`` that
    leaves at most ``k`` clusters; tied heights are kept or cut together.
    """

    def __init__(self, Z: np.ndarray) -> None:
        self.Z = np.asarray(Z)
        S = self.Z.shape[0] + 1
        self.S = S
        self.children = self.Z[:, :2].astype(np.int64)
        mr = self.Z[:, 2].astype(np.float64).copy()
        for i, (a, b) in enumerate(self.children):
            if a >= S:
                mr[i] = max(mr[i], mr[a - S])
            if b >= S:
                mr[i] = max(mr[i], mr[b - S])
        self.mr = mr
        self.sorted = np.sort(mr)

    def __call__(self, k: int) -> np.ndarray:
        S = self.S
        if k >= S:
            return np.arange(S, dtype=np.int64)
        # keeping the merges with MR <= r leaves S - #{MR <= r} clusters; the smallest admissible r
        r = self.sorted[S - 1 - max(int(k), 1)]
        kept = self.mr <= r
        rep = np.arange(2 * S - 1, dtype=np.int64)
        for i in range(S - 2, -1, -1):
            if kept[i]:
                rep[self.children[i]] = rep[S + i]
        return np.unique(rep[:S], return_inverse=True)[1].ravel().astype(np.int64)


def _corr(a: np.ndarray, b: np.ndarray) -> float:
    """Pearson correlation; NaN when either side is constant."""
    if a.size < 2 or np.ptp(a) == 0 or np.ptp(b) == 0:
        return float("nan")
    a = a - a.mean()
    b = b - b.mean()
    return float(np.clip(np.dot(a, b) / np.sqrt(np.dot(a, a) * np.dot(b, b)), -1.0, 1.0))


def _code_ranks(codes: np.ndarray) -> np.ndarray:
    """Average ranks of values given by their dense codes (ties share a code): ``O(n)``, no sort."""
    counts = np.bincount(codes).astype(np.float64)
    mid = np.cumsum(counts) - counts + (counts + 1.0) / 2.0
    return mid[codes]


def _tree_statistics(draws: np.ndarray, D: np.ndarray, T: np.ndarray, codes: np.ndarray, named: np.ndarray,
                     method: str, rng: np.random.Generator, keys: list[tuple[str, str]],
                     pairs: "tuple[np.ndarray, np.ndarray] | None" = None) -> np.ndarray:
    """The probe's statistics ``keys`` on the species ``draws`` (with repeats: a bootstrap resample).

    Copies of one species are separate leaves at distance 0; pairs of two copies are left out of the
    pair statistics (see the module notes). ``D``, ``T`` are the ``(S, S)`` embedding and taxonomic
    distances of all species, ``codes``, ``named`` their ``(S, 7)`` lineages; ``pairs`` the
    ``np.triu_indices(draws.size, 1)`` (to reuse).
    """
    from scipy.cluster.hierarchy import cophenet

    out = np.full(len(keys), np.nan)
    n = draws.size
    if n < 3 or np.unique(draws).size < 3:
        return out
    Z = _shuffled_linkage_square(D, method, rng, leaves=draws)
    ii, jj = pairs if pairs is not None else np.triu_indices(n, 1)
    a, b = draws[ii], draws[jj]
    keep = np.flatnonzero(a != b)
    a, b = a[keep], b[keep]
    order = Z.copy()
    order[:, 2] = np.arange(n - 1, dtype=np.float64)
    merge = cophenet(order).astype(np.int64)[keep]  # the merge that joins each pair
    hcode = _tie_codes(Z[:, 2], _height_tol(Z[:, 2], None))  # dense codes of the (tied) merge heights
    coph = Z[merge, 2]
    t = T[a, b].astype(np.int64)
    codes_b, named_b = codes[draws], named[draws]
    index, cutter = None, None
    for c, (rank, metric) in enumerate(keys):
        if metric == "cophenetic_taxonomy_corr":
            out[c] = _corr(coph, t.astype(np.float64))
        elif metric == "cophenetic_taxonomy_spearman":
            out[c] = _corr(_code_ranks(hcode[merge]), _code_ranks(t))
        elif metric == "bakers_gamma":
            # k of the dendrogram decreases with the merge height (merge_k); k of the taxonomy is a
            # function of the LCA height with possibly equal values at neighbouring heights
            _, kcode = np.unique(_taxonomy_kmap(codes_b), return_inverse=True)
            out[c] = _corr(_code_ranks(hcode.max() - hcode[merge]), _code_ranks(kcode.ravel()[t]))
        elif metric == "cophenetic_fit_embedding":
            out[c] = _corr(coph, D[a, b])
        elif metric in ("fmi", "ari"):
            r = RANK_NAMES.index(rank)
            rows = np.flatnonzero(named_b[:, r])
            taxa = np.unique(codes_b[rows, r])
            k = int(taxa.size)
            if k < 2 or k == np.unique(draws[rows]).size:
                continue
            cutter = cutter or _Cutter(Z)
            clusters = cutter(k)[rows]
            truth = np.searchsorted(taxa, codes_b[rows, r])
            own = float((np.bincount(draws[rows]).astype(np.float64) ** 2).sum())
            ss = _sum_sq_counts((clusters * k + truth)[None, :])
            sa = _sum_sq_counts(truth[None, :])
            sb = _sum_sq_counts(clusters[None, :])
            fmi, ari = _scores_from_sums(ss, sa, sb, float(rows.size), own)
            out[c] = float(fmi[0] if metric == "fmi" else ari[0])
        elif metric == "clade_recovery":
            r = RANK_NAMES.index(rank)
            index = index or _NodeIndex(Z)
            out[c] = float(clade_recovery(Z, codes_b[:, r], named_b[:, r], units=draws, index=index)[0][0])
    return out


# ---------------------------------------------------------------------- the probe
def probe_dendrogram(data: ProbeData, options: ProbeOptions) -> ProbeResult:
    """Hierarchical clustering of species centroids against the taxonomy (see the module notes).

    Probe settings (``options.for_probe("dendrogram")``): ``method`` (``"average"``; one of
    :data:`LINKAGE_METHODS`); ``n_boot`` (200; 0: no CIs) species-bootstrap resamples, each of which
    builds a tree.

    Parameters
    ----------
    data
        Embeddings and taxonomy; the species centroids ``(S, d)`` are clustered.
    options
        ``distance``, ``permutations``, ``seed``, ``max_pairs`` (species pairs above which a stratified
        species sample is used).

    Returns
    -------
    ProbeResult
        Rows: rank ``"all"`` ``cophenetic_taxonomy_corr``, ``cophenetic_taxonomy_spearman``,
        ``bakers_gamma``, ``cophenetic_fit_embedding`` (no null); per rank ``fmi``, ``ari``
        (``clusters`` column: the cut), ``clade_recovery`` (``clades`` and ``recovered`` columns), all
        with null columns except the fit, and with a species-bootstrap CI; ``n_species`` (species behind
        the value: named at the rank), ``n_taxa`` (taxa at the rank; for ``all`` the species),
        ``ci_note`` (why no CI), ``degenerate`` and ``note`` (why no statistic: all distances tied).
        ``tables["null"]`` (rank, metric, permutation, value). ``arrays``: ``linkage`` ``(S-1, 4)``,
        ``leaf_order`` ``(S,)``, ``taxonomy_linkage`` ``(S-1, 4)`` (average linkage of the taxonomic
        distances: the taxonomy as a binary ultrametric tree, for a tanglegram) and
        ``taxonomy_leaf_order``, ``cut_labels`` ``(S, 7)`` (cluster of each species in the cut at each
        rank, -1 where skipped), ``codes`` ``(S, 7)``, ``species`` ``(S,)`` indices used.
    """
    from scipy.cluster.hierarchy import cophenet, fcluster, leaves_list, linkage

    settings = options.for_probe("dendrogram")
    method = settings.get("method", "average")
    if method not in LINKAGE_METHODS:
        raise InputError(f"The dendrogram probe setting 'method' must be one of {', '.join(LINKAGE_METHODS)}. "
                         f"Got {method!r}.")
    n_boot = int_setting(settings, "n_boot", DEFAULT_N_BOOT_EXPENSIVE, "dendrogram")
    S_total = data.n_species
    species = centroid_species(data, options, "dendrogram")
    S = int(species.size)
    started = time.perf_counter()
    centroids = data.centroids[species]
    codes = data.codes[species]
    named = data.named[species]
    T = species_distances(data, species)
    distance = "euclidean" if method in EUCLIDEAN_ONLY else options.distance
    if distance != options.distance:
        log.info("dendrogram: %s linkage is defined for Euclidean distances; using them instead of %s",
                 method, options.distance)
    Dsq, tol = centroid_distances(centroids, distance)
    D = condensed(Dsq)
    tc = condensed(T).astype(np.float64)
    note = degenerate_note(D, tc, S)
    if note:
        log.warning("dendrogram: %s", note)
    Z = shuffled_linkage(D, method, options.seed)
    coph = cophenet(Z)
    n_pairs = S * (S - 1) // 2
    perms = np.array(list(species_permutations(S, options.permutations, options.seed)), dtype=np.int64).reshape(-1, S)
    all_perms = np.vstack([np.arange(S, dtype=np.int64)[None, :], perms])
    has_null = perms.shape[0] > 0
    extra = {"method": method, "distance": distance}
    pending: list[tuple[str, str, np.ndarray, int, dict[str, Any]]] = []

    def add(rank: str, metric: str, values: np.ndarray, n: int, **more: Any) -> None:
        if note:  # degenerate: no statistic, no null
            values = np.full(values.shape, np.nan)
        pending.append((rank, metric, values, n, {"degenerate": bool(note), "note": note, **more}))

    # Correlations with the taxonomy: one permuted quadratic form each (the taxonomy side is permuted).
    kdend = merge_k(Z)
    ktax = condensed(taxonomy_k(codes, T))
    for metric, corr in (
        ("cophenetic_taxonomy_corr", PermutedCorrelation(tc, coph, S, "pearson")),
        ("cophenetic_taxonomy_spearman", PermutedCorrelation(tc, coph, S, "spearman")),
        ("bakers_gamma", PermutedCorrelation(ktax, kdend, S, "spearman")),
    ):
        add("all", metric, corr(all_perms) if not note else np.zeros(all_perms.shape[0]), S,
            pairs=n_pairs, n_species=S, n_taxa=S)
    # the fit of the tree to the embedding does not involve the taxonomy: degenerate only with the embedding
    fit_note = note if np.ptp(D) == 0 else ""
    fit = _corr(coph, D) if not fit_note else float("nan")
    pending.append(("all", "cophenetic_fit_embedding", np.array([fit]), S,
                    {"degenerate": bool(fit_note), "note": fit_note, "pairs": n_pairs, "n_species": S, "n_taxa": S}))

    # Per rank: cuts scored with FMI / ARI, and clades found as nodes.
    cut_labels = np.full((S, len(RANK_NAMES)), -1, dtype=np.int64)
    index = _NodeIndex(Z, options.seed)
    skipped: dict[str, str] = {}
    for r in range(Rank.SPECIES):
        label = RANK_NAMES[r]
        rows_r = np.flatnonzero(named[:, r])
        taxa = np.unique(codes[rows_r, r])
        k = int(taxa.size)
        m = rows_r.size
        if k < 2 or k == rows_r.size:
            skipped[label] = "fewer than 2 taxa" if k < 2 else "one species per taxon"
        else:
            clusters = fcluster(Z, t=k, criterion="maxclust").astype(np.int64) - 1
            if not note:
                cut_labels[:, r] = clusters
            perm_codes = codes[:, r][all_perms]  # (P + 1, S): species s takes the taxon of perm[s]
            if named[:, r].all():
                truth = np.searchsorted(taxa, perm_codes)
                pred = clusters[None, :]
                sb = _sum_sq_counts(pred)  # the same species every permutation
            else:
                mask = named[:, r][all_perms]
                truth = np.searchsorted(taxa, perm_codes[mask].reshape(-1, m))
                pred = np.broadcast_to(clusters, mask.shape)[mask].reshape(-1, m)
                sb = _sum_sq_counts(pred)
            span = k
            ss = _sum_sq_counts(np.broadcast_to(pred, truth.shape) * span + truth)
            sa = _sum_sq_counts(truth[:1])  # class sizes do not change under permutation
            fmi, ari = _scores_from_sums(ss, sa, sb, float(m))
            n_clusters = int(np.unique(clusters[rows_r]).size) if not note else np.nan
            add(label, "fmi", fmi, m, clusters=k, clusters_found=n_clusters, n_species=m, n_taxa=k)
            add(label, "ari", ari, m, clusters=k, clusters_found=n_clusters, n_species=m, n_taxa=k)
        recovered, n_clades = clade_recovery(Z, codes[:, r], named[:, r], all_perms, index=index)
        if n_clades:
            add(label, "clade_recovery", recovered, n_clades, clades=n_clades,
                recovered=int(round(recovered[0] * n_clades)) if not note else np.nan, n_species=m, n_taxa=k)

    # Species-bootstrap CIs: every resample rebuilds the tree (see the module notes).
    live = [i for i, (*_, more) in enumerate(pending) if not more["degenerate"]]
    keys = [pending[i][:2] for i in live]
    cis: list[tuple[float, float, str]] = [(np.nan, np.nan, "no CI: degenerate input")] * len(pending)
    if keys:
        boot_rng = np.random.default_rng([int(options.seed), 0xB007])
        pairs = np.triu_indices(S, 1)

        def statistic(w: np.ndarray) -> np.ndarray:
            counts = np.rint(w).astype(np.int64)
            return np.stack([_tree_statistics(np.repeat(np.arange(S), row), Dsq, T, codes, named, method,
                                              boot_rng, keys, pairs) for row in counts])

        for i, ci in zip(live, species_cis(statistic, S, len(keys), n_boot=int(n_boot), seed=options.seed)):
            cis[i] = ci

    rows: list[dict[str, Any]] = []
    nulls: list[pd.DataFrame] = []
    for (rank, metric, values, n, more), (low, high, ci_note) in zip(pending, cis):
        row_note = cluster_ci_note(more["n_species"])
        if row_note and not more["degenerate"]:
            low, high, ci_note = np.nan, np.nan, row_note
        observed = float(values[0])
        with_null = has_null and metric != "cophenetic_fit_embedding"
        null = tie_null(values[1:], observed, atol=TIE_TOL) if with_null else None
        rows.append(null_row(rank, metric, observed, null, n, alternative="greater", ci=(low, high),
                             **extra, **more, ci_note=ci_note))
        if with_null:
            nulls.append(null_frame(rank, metric, null))
    null_table = pd.concat(nulls, ignore_index=True) if nulls else empty_null_frame()
    Zt = linkage(tc, method="average")
    elapsed = time.perf_counter() - started
    log.info("dendrogram: %d species, %s linkage, %d permutations in %.2f s", S, method, perms.shape[0], elapsed)
    info = {
        "species_total": S_total, "species_used": S, "sampled": bool(S < S_total), "method": method,
        "distance": distance, "permutations": int(perms.shape[0]), "skipped_cuts": skipped,
        "n_boot": int(n_boot), "tie_tolerance": tol, "degenerate": note,
        "bootstrap": "species resampled with replacement, the tree rebuilt on the draws (copies of a species "
                     "as leaves at distance 0); pairs of two copies left out of pair statistics",
        "seconds": round(elapsed, 3),
    }
    arrays = {"linkage": Z, "leaf_order": leaves_list(Z).astype(np.int64), "taxonomy_linkage": Zt,
              "taxonomy_leaf_order": leaves_list(Zt).astype(np.int64), "cut_labels": cut_labels,
              "codes": codes, "species": species}
    return ProbeResult("dendrogram", pd.DataFrame(rows), arrays=arrays, tables={"null": null_table}, info=info)
