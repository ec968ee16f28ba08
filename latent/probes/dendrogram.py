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
  node of the dendrogram.
* **bakers_gamma**: Baker's gamma (Baker 1974, as R dendextend's ``cor_bakers_gamma``): for every pair
  of leaves, the largest number of clusters ``k`` for which the two are still together when each tree
  is cut into ``k`` clusters; the statistic is the Spearman correlation of these numbers between the
  two trees. For the binary dendrogram ``k = S - 1 - m`` with ``m`` the 0-based merge (row of ``Z``)
  that joins the pair (R's ``cutree`` on an ``hclust``: merges in order); for the taxonomy, a
  multifurcating tree whose achievable cuts are its ranks, ``k`` is the number of taxa (placeholders of
  empty ranks included, as in the distances) at the deepest rank the two species share (1 above the
  kingdoms): dendextend's ``cutree`` on a dendrogram with tied heights.

Two coincidences follow from the definitions and are not errors: when every species is named at a
rank, FMI and ARI of a fixed cut are both monotone in the number of same-cluster same-taxon pairs,
so their z and p agree; when no two merges of the dendrogram have the same height and every rank
has more taxa than the rank above, Baker's gamma equals the cophenetic Spearman correlation (both
are Spearman correlations of the same pair orderings). They part with tied merge heights (single
linkage, identical centroids) or ranks with as many taxa as the rank above.

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
    _Correlator,
    _null_frame,
    _snap_ties,
    centroid_species,
    condensed,
    species_distances,
)
from latent.probes.base import ProbeData, ProbeOptions, ProbeResult, null_row, pairwise_distances, species_permutations
from latent.ranks import RANK_NAMES, Rank

__all__ = [
    "LINKAGE_METHODS",
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


# ---------------------------------------------------------------------- Baker's gamma
def merge_k(Z: np.ndarray) -> np.ndarray:
    """``(S (S - 1) / 2,)`` condensed: the largest k for which each pair of leaves shares a cluster.

    Cutting a binary tree into ``k`` clusters undoes its last ``k - 1`` merges, so two leaves joined
    by merge ``m`` (0-based row of ``Z``) stay together up to ``k = S - 1 - m``.
    """
    from scipy.cluster.hierarchy import cophenet

    Z = np.asarray(Z, dtype=np.float64)
    S = Z.shape[0] + 1
    order = Z.copy()
    order[:, 2] = np.arange(S - 1, dtype=np.float64)
    return (S - 1) - cophenet(order)


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
    codes = np.asarray(codes)
    counts = [np.unique(codes[:, r]).size for r in range(codes.shape[1])]
    kmap = np.array([counts[6 - h] if h <= 6 else 1 for h in range(8)], dtype=np.float64)
    return kmap[np.asarray(distances, dtype=np.int64)]


def bakers_gamma(k1: np.ndarray, k2: np.ndarray) -> float:
    """Spearman correlation of two condensed k vectors (1.0 when both are constant, as dendextend)."""
    from scipy.stats import spearmanr

    k1 = np.asarray(k1, dtype=np.float64).ravel()
    k2 = np.asarray(k2, dtype=np.float64).ravel()
    if k1.shape != k2.shape:
        raise InputError(f"bakers_gamma needs two k vectors of the same length; got {k1.shape} and {k2.shape}.")
    if np.ptp(k1) == 0 and np.ptp(k2) == 0:
        return 1.0
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


def _scores_from_sums(ss: np.ndarray, sa: np.ndarray, sb: np.ndarray, n: float) -> tuple[np.ndarray, np.ndarray]:
    """FMI and ARI from ``sum n_ij^2``, ``sum a_i^2`` (classes), ``sum b_j^2`` (clusters) and ``n`` items."""
    ss, sa, sb = np.broadcast_arrays(np.asarray(ss, float), np.asarray(sa, float), np.asarray(sb, float))
    tk, pk, qk = ss - n, sb - n, sa - n
    with np.errstate(invalid="ignore", divide="ignore"):
        fmi = np.where(tk != 0, np.sqrt(tk / pk) * np.sqrt(tk / qk), 0.0)
    # scikit-learn's pair confusion matrix (ordered pairs): tp, fp, fn, tn
    tp = ss - n
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
    """Leaf-key sums of every dendrogram node, for exact clade lookups."""

    def __init__(self, Z: np.ndarray, seed: int = 0) -> None:
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
        self.lookup = {int(h): i for i, h in enumerate(self.sums)}
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


def _clades(codes_r: np.ndarray, named_r: np.ndarray, n_species: int) -> tuple[np.ndarray, np.ndarray]:
    """Species of the eligible clades at one rank: ``(members in clade order, clade start offsets)``.

    Eligible: a named taxon with at least 2 species and not every species.
    """
    values, counts = np.unique(codes_r[named_r], return_counts=True)
    keep = values[(counts >= 2) & (counts < n_species)]
    rows = np.flatnonzero(named_r & np.isin(codes_r, keep))
    order = rows[np.argsort(codes_r[rows], kind="stable")]
    sizes = np.unique(codes_r[order], return_counts=True)[1]
    starts = (np.cumsum(sizes) - sizes).astype(np.int64)
    return order, starts


def clade_recovery(Z: np.ndarray, codes_r: np.ndarray, named_r: "np.ndarray | None" = None,
                   perms: "np.ndarray | None" = None, *, seed: int = 0,
                   index: "_NodeIndex | None" = None) -> tuple[np.ndarray, int]:
    """Fraction of a rank's clades that are exactly a node of the dendrogram, for each permutation.

    Parameters
    ----------
    Z
        ``(S - 1, 4)`` linkage matrix over ``S`` species.
    codes_r, named_r
        ``(S,)`` taxon code of each species at the rank, and whether it is a named taxon (default all).
    perms
        ``(P, S)`` species permutations (species ``s`` takes the taxon of ``perm[s]``); default the identity.
    seed
        Seed of the random leaf keys (the result does not depend on it: matches are confirmed exactly).

    Returns
    -------
    tuple
        ``(P,)`` fractions (NaN when the rank has no eligible clade) and the number of eligible clades.
    """
    Z = np.asarray(Z)
    S = Z.shape[0] + 1
    codes_r = np.asarray(codes_r)
    named_r = np.ones(S, dtype=bool) if named_r is None else np.asarray(named_r, dtype=bool)
    perms = np.arange(S, dtype=np.int64)[None, :] if perms is None else np.asarray(perms, dtype=np.int64)
    members, starts = _clades(codes_r, named_r, S)
    n_clades = int(starts.size)
    if n_clades == 0:
        return np.full(perms.shape[0], np.nan), 0
    index = index or _NodeIndex(Z, seed)
    inverse = np.argsort(perms, axis=1)  # species s has taxon of perm[s]: clade c holds inverse[a], a in c
    keys = index.key[inverse[:, members]]
    with np.errstate(over="ignore"):
        sums = np.add.reduceat(keys, starts, axis=1)
    candidates = np.isin(sums, index.sums)
    ends = np.r_[starts[1:], members.size]
    found = np.zeros(perms.shape[0], dtype=np.int64)
    for t, c in zip(*np.nonzero(candidates)):
        clade = inverse[t, members[starts[c]:ends[c]]]
        found[t] += index.is_node(sums[t, c], clade)
    return found / n_clades, n_clades


# ---------------------------------------------------------------------- the probe
def probe_dendrogram(data: ProbeData, options: ProbeOptions) -> ProbeResult:
    """Hierarchical clustering of species centroids against the taxonomy (see the module notes).

    Probe settings (``options.for_probe("dendrogram")``): ``method`` (``"average"``; one of
    :data:`LINKAGE_METHODS`).

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
        with null columns except the fit. ``tables["null"]`` (rank, metric, permutation, value).
        ``arrays``: ``linkage`` ``(S-1, 4)``, ``leaf_order`` ``(S,)``, ``taxonomy_linkage`` ``(S-1, 4)``
        (average linkage of the taxonomic distances: the taxonomy as a binary ultrametric tree, for a
        tanglegram) and ``taxonomy_leaf_order``, ``cut_labels`` ``(S, 7)`` (cluster of each species in
        the cut at each rank, -1 where skipped), ``codes`` ``(S, 7)``, ``species`` ``(S,)`` indices used.
    """
    from scipy.cluster.hierarchy import cophenet, fcluster, leaves_list, linkage

    settings = options.for_probe("dendrogram")
    method = settings.get("method", "average")
    if method not in LINKAGE_METHODS:
        raise InputError(f"The dendrogram probe setting 'method' must be one of {', '.join(LINKAGE_METHODS)}. "
                         f"Got {method!r}.")
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
    D = condensed(pairwise_distances(centroids, metric=distance))
    Z = linkage(D, method=method)
    coph = cophenet(Z)
    n_pairs = S * (S - 1) // 2
    perms = np.array(list(species_permutations(S, options.permutations, options.seed)), dtype=np.int64).reshape(-1, S)
    all_perms = np.vstack([np.arange(S, dtype=np.int64)[None, :], perms])
    has_null = perms.shape[0] > 0
    extra = {"method": method, "distance": distance}
    rows: list[dict[str, Any]] = []
    nulls: list[pd.DataFrame] = []

    def add(rank: str, metric: str, values: np.ndarray, n: int, **more: Any) -> None:
        observed = float(values[0])
        null = _snap_ties(observed, values[1:]) if has_null else None
        rows.append(null_row(rank, metric, observed, null, n, alternative="greater", **extra, **more))
        if has_null:
            nulls.append(_null_frame(metric, null, rank))

    # Correlations with the taxonomy: one permuted quadratic form each (the taxonomy side is permuted).
    tc = condensed(T).astype(np.float64)
    kdend = merge_k(Z)
    ktax = condensed(taxonomy_k(codes, T))
    for metric, corr in (
        ("cophenetic_taxonomy_corr", _Correlator(tc, coph, S, "pearson")),
        ("cophenetic_taxonomy_spearman", _Correlator(tc, coph, S, "spearman")),
        ("bakers_gamma", _Correlator(ktax, kdend, S, "spearman")),
    ):
        add("all", metric, corr(all_perms), S, pairs=n_pairs)
    fit = float(np.corrcoef(coph, D)[0, 1]) if np.ptp(coph) > 0 and np.ptp(D) > 0 else float("nan")
    rows.append(null_row("all", "cophenetic_fit_embedding", fit, None, S, pairs=n_pairs, **extra))

    # Per rank: cuts scored with FMI / ARI, and clades found as nodes.
    cut_labels = np.full((S, len(RANK_NAMES)), -1, dtype=np.int64)
    index = _NodeIndex(Z, options.seed)
    skipped: dict[str, str] = {}
    for r in range(Rank.SPECIES):
        label = RANK_NAMES[r]
        rows_r = np.flatnonzero(named[:, r])
        taxa = np.unique(codes[rows_r, r])
        k = int(taxa.size)
        if k < 2 or k == rows_r.size:
            skipped[label] = "fewer than 2 taxa" if k < 2 else "one species per taxon"
        else:
            clusters = fcluster(Z, t=k, criterion="maxclust").astype(np.int64) - 1
            cut_labels[:, r] = clusters
            m = rows_r.size
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
            n_clusters = int(np.unique(clusters[rows_r]).size)
            add(label, "fmi", fmi, m, clusters=k, clusters_found=n_clusters)
            add(label, "ari", ari, m, clusters=k, clusters_found=n_clusters)
        recovered, n_clades = clade_recovery(Z, codes[:, r], named[:, r], all_perms, index=index)
        if n_clades:
            add(label, "clade_recovery", recovered, n_clades, clades=n_clades,
                recovered=int(round(recovered[0] * n_clades)))
    null_table = (pd.concat(nulls, ignore_index=True) if nulls
                  else pd.DataFrame({"rank": [], "metric": [], "permutation": np.zeros(0, np.int64), "value": []}))
    Zt = linkage(tc, method="average")
    elapsed = time.perf_counter() - started
    log.info("dendrogram: %d species, %s linkage, %d permutations in %.2f s", S, method, perms.shape[0], elapsed)
    info = {
        "species_total": S_total, "species_used": S, "sampled": bool(S < S_total), "method": method,
        "distance": distance, "permutations": int(perms.shape[0]), "skipped_cuts": skipped,
        "seconds": round(elapsed, 3),
    }
    arrays = {"linkage": Z, "leaf_order": leaves_list(Z).astype(np.int64), "taxonomy_linkage": Zt,
              "taxonomy_leaf_order": leaves_list(Zt).astype(np.int64), "cut_labels": cut_labels,
              "codes": codes, "species": species}
    return ProbeResult("dendrogram", pd.DataFrame(rows), arrays=arrays, tables={"null": null_table}, info=info)
