"""Clusters probe: how well do the taxa of each rank form clusters of images?

For every rank with at least 2 named taxa, on the images whose species is named at that rank (labels:
their taxon at the rank):

``silhouette``
    Mean silhouette with ``options.distance`` (equal to ``sklearn.metrics.silhouette_score`` on the
    same rows and labels; singletons score 0). O(n^2): above ``options.max_images`` it is computed on
    a seeded sample of images stratified by species (the same number ``k >= 2`` from every species,
    ``k`` the largest that fits, or two images of a random subset of species if even ``k = 2`` does not
    fit, so the species-rank silhouette stays defined); the row's ``n`` is the number of images used
    and ``sampled`` says whether they were sampled.
``calinski_harabasz``
    Between- over within-cluster dispersion, each divided by its degrees of freedom (equal to
    ``sklearn.metrics.calinski_harabasz_score``).
``nc1``
    ``tr(S_W S_B^+) / C`` (Papyan, Han & Donoho 2020): ``S_W`` the within-class covariance averaged over
    the images, ``(1/N) sum_i (x_i - mu_c(i)) (x_i - mu_c(i))^T``; ``S_B`` the covariance of the class
    means around the global mean of the images, ``(1/C) sum_c (mu_c - mu_G) (mu_c - mu_G)^T``; ``C``
    classes; ``^+`` the Moore-Penrose pseudo-inverse (singular values of ``[mu_c - mu_G]`` below
    ``max(shape) * eps * largest`` count as 0, numpy's rank rule). Small when classes collapse.
    Pitfall: when ``C - 1 >= d`` the class means span the whole space, ``S_B`` has small eigenvalues
    in every direction and NC1 becomes large and erratic (a property of the statistic, seen e.g. at a
    rank with 72 taxa in 64 dimensions); read it at ranks with ``C - 1`` well below ``d``.
``cdnv``
    Mean over pairs of classes of ``(var_c + var_c') / (2 ||mu_c - mu_c'||^2)``, ``var_c`` the mean
    squared distance of the class's images to its mean (class-distance normalised variance).

Geometry: the silhouette uses ``options.distance``. Calinski-Harabasz, NC1 and CDNV are Euclidean
statistics; with ``distance="cosine"`` they are computed on the L2-normalised embeddings (where
squared Euclidean distance is twice the cosine distance), with ``"euclidean"`` on the raw ones (column
``space``). They use every image (O(n d) from per-species sums).

Nulls and their cost
--------------------
Species permutation (species ``s`` takes the lineage of ``perm[s]``, see :mod:`latent.probes.base`);
``alternative="greater"`` for silhouette and Calinski-Harabasz, ``"less"`` for NC1 and CDNV. At rank
``species`` every statistic is the same under any species permutation, so those rows have no null.
Nothing is recomputed from images per permutation: Calinski-Harabasz, NC1 and CDNV come from per-species
counts, sums and squared norms (the class statistics of any labelling are sums of species blocks) and
the ``(d, d)`` second moment of the images; the silhouette from the ``(m, k)`` sums of the distances of
every sampled image to the images of each sampled species (computed once, in row blocks), whose columns
each labelling adds up by taxon. A silhouette permutation still costs O(m k) and an NC1 permutation an
SVD of the ``(C, d)`` class means, so those two nulls use
``options.for_probe("clusters").get("permutations", min(options.permutations, 199))`` permutations
(the first ones of the same seeded sequence, never more than ``options.permutations``); Calinski-Harabasz
and CDNV use ``options.permutations``. The ``permutations`` column reports the count behind each row.
The loops run with single-threaded BLAS (many small calls).
"""

from __future__ import annotations

import logging
from typing import Any

import numpy as np
import pandas as pd

from latent.errors import InputError
from latent.probes.base import ProbeData, ProbeOptions, ProbeResult, null_row, pairwise_distances, species_permutations
from latent.probes.distances import (BLOCK_ELEMENTS, GENUS, SPECIES, _check_int_option, _null_frame, _starts,
                                     named_nodes, rank_blocks, ranks_with_taxa, single_threaded_blas,
                                     stratified_sample)
from latent.ranks import RANK_NAMES
from latent.taxonomy import N_RANKS

__all__ = ["probe_clusters", "silhouette_from_sums", "calinski_harabasz_from_sums", "nc1_from_sums",
           "cdnv_from_sums"]

log = logging.getLogger(__name__)

PROBE = "clusters"
#: Default cap on the permutations of the silhouette and NC1 nulls.
DEFAULT_EXPENSIVE_PERMUTATIONS = 199
METRICS = ("silhouette", "calinski_harabasz", "nc1", "cdnv")
ALTERNATIVES = {"silhouette": "greater", "calinski_harabasz": "greater", "nc1": "less", "cdnv": "less"}
_SAMPLE_TAG = 0x5117


# -------------------------------------------------------------------------- statistics from sums
def silhouette_from_sums(Dl: np.ndarray, counts: np.ndarray, labels: np.ndarray, named: np.ndarray) -> float:
    """Mean silhouette from the sums of distances of every image to every cluster.

    Parameters
    ----------
    Dl
        ``(m, T)`` sum of the distances of image ``i`` to the images of cluster ``t`` (self-distance 0).
    counts
        ``(T,)`` images per cluster (>= 1).
    labels
        ``(m,)`` cluster of each image.
    named
        ``(T,)`` bool: clusters taking part (images of other clusters are left out).

    Returns
    -------
    float
        ``sklearn.metrics.silhouette_score`` of the named images; NaN unless
        ``2 <= clusters <= images - 1``.
    """
    rows = named[labels]
    if not named.all():
        Dl, counts = Dl[:, named], counts[named]
        labels = (np.cumsum(named) - 1)[labels]
    if not rows.all():
        Dl, labels = Dl[rows], labels[rows]
    C, N = len(counts), len(labels)
    if not 2 <= C <= N - 1:
        return float("nan")
    idx = np.arange(N)
    with np.errstate(divide="ignore", invalid="ignore"):
        a = Dl[idx, labels] / (counts[labels] - 1)
        means = Dl / counts
        means[idx, labels] = np.inf
        b = means.min(axis=1)
        s = (b - a) / np.maximum(a, b)
    return float(np.nan_to_num(s).mean())


def calinski_harabasz_from_sums(N_t: np.ndarray, Sum_t: np.ndarray, Sq_t: np.ndarray) -> float:
    """Calinski-Harabasz index from per-class counts ``(C,)``, sums ``(C, d)`` and squared norms ``(C,)``.

    Equal to ``sklearn.metrics.calinski_harabasz_score`` (1.0 when the within dispersion is 0; NaN
    unless ``2 <= C <= N - 1``).
    """
    C, N = len(N_t), float(N_t.sum())
    if not 2 <= C <= N - 1:
        return float("nan")
    between_c = float(((Sum_t ** 2).sum(axis=1) / N_t).sum())
    extra = between_c - float((Sum_t.sum(axis=0) ** 2).sum()) / N
    intra = float(Sq_t.sum()) - between_c
    if intra <= 0:
        return 1.0
    return extra * (N - C) / (intra * (C - 1))


def nc1_from_sums(N_t: np.ndarray, Sum_t: np.ndarray, G: np.ndarray) -> float:
    """NC1 ``tr(S_W S_B^+) / C`` from class counts ``(C,)``, class sums ``(C, d)`` and ``G`` ``(d, d)``,
    the sum of ``x x^T`` over the same images (any common origin)."""
    C, N = len(N_t), float(N_t.sum())
    if C < 2:
        return float("nan")
    mu = Sum_t / N_t[:, None]
    M = mu - Sum_t.sum(axis=0) / N
    _, s, Vt = np.linalg.svd(M, full_matrices=False)
    if s.size == 0 or s[0] == 0:
        return float("nan")
    keep = s > s[0] * max(M.shape) * np.finfo(np.float64).eps
    V = Vt[keep].T
    lam = s[keep] ** 2 / C  # the non-zero eigenvalues of S_B, eigenvectors V
    q = (np.einsum("ik,ik->k", V, G @ V) - ((Sum_t @ V) ** 2 / N_t[:, None]).sum(axis=0)) / N  # v' S_W v
    return float((q / lam).sum() / C)


def cdnv_from_sums(N_t: np.ndarray, Sum_t: np.ndarray, Sq_t: np.ndarray) -> float:
    """Mean over class pairs of ``(var_c + var_c') / (2 ||mu_c - mu_c'||^2)``, in row blocks of pairs."""
    C = len(N_t)
    if C < 2:
        return float("nan")
    mu = Sum_t / N_t[:, None]
    sqn = (mu ** 2).sum(axis=1)
    var = np.maximum(Sq_t / N_t - sqn, 0.0)
    total = 0.0
    step = max(1, BLOCK_ELEMENTS // C)
    columns = np.arange(C)
    for i0 in range(0, C - 1, step):
        i1 = min(C, i0 + step)
        d2 = np.maximum(sqn[i0:i1, None] + sqn[None, :] - 2.0 * mu[i0:i1] @ mu.T, 0.0)
        upper = columns[None, :] > np.arange(i0, i1)[:, None]
        with np.errstate(divide="ignore"):
            total += float(((var[i0:i1, None] + var[None, :])[upper] / (2.0 * d2[upper])).sum())
    return total / (C * (C - 1) / 2)


# ------------------------------------------------------------------------------ the fast labellings
class ClusterSums:
    """Sufficient statistics of the clusters probe; any labelling of the species re-aggregates them.

    Parameters
    ----------
    data
        The probe data.
    metric
        ``options.distance``.
    silhouette_rows
        ``(m,)`` image rows (sorted by species) of the silhouette.
    """

    def __init__(self, data: ProbeData, metric: str, silhouette_rows: np.ndarray) -> None:
        self.codes = data.codes
        self.named_species = data.named
        self.named = named_nodes(data)
        self.species_of_row = data.species
        S = data.n_species
        X = np.asarray(data.X, dtype=np.float64)
        if metric == "cosine":
            norms = np.linalg.norm(X, axis=1)
            if (norms == 0).any():
                raise InputError("Cosine geometry is undefined for a zero embedding; use --distance euclidean.")
            X = X / norms[:, None]
        X = X - X.mean(axis=0)  # a common origin near the data: fewer cancellations in the sums
        self.X = X
        order = np.argsort(data.species, kind="stable")
        first = _starts(data.species[order])
        self.counts = data.counts.astype(np.float64)
        self.sums = np.add.reduceat(X[order], first, axis=0)
        self.sq = np.add.reduceat((X ** 2).sum(axis=1)[order], first)
        self.G = X.T @ X
        self.V = np.column_stack([self.counts, self.sq, self.sums])  # (S, 2 + d)
        # Silhouette: distances of every sampled image to the sampled images of each species.
        rows = np.asarray(silhouette_rows)
        sp = data.species[rows]
        st = _starts(sp)
        m = len(rows)
        self.sil_species = sp[st]
        self.sil_counts = np.diff(np.r_[st, m]).astype(np.float64)
        self.sil_local = np.repeat(np.arange(len(st)), np.diff(np.r_[st, m]))
        Xs = np.asarray(data.X[rows], dtype=np.float64)
        Dsp = np.empty((m, len(st)))
        step = max(1, BLOCK_ELEMENTS // max(m, 1))
        for r0 in range(0, m, step):
            r1 = min(m, r0 + step)
            D = pairwise_distances(Xs[r0:r1], Xs, metric)
            D[np.arange(r1 - r0), np.arange(r0, r1)] = 0.0
            Dsp[r0:r1] = np.add.reduceat(D, st, axis=1)
        self.Dsp = Dsp
        self.n_species = S

    # species-level statistics ------------------------------------------------------------------
    def species_stats(self, perm: "np.ndarray | None", ranks: list[int], expensive: bool = True) -> dict:
        """Calinski-Harabasz, NC1 (if ``expensive``) and CDNV at ``ranks`` (< species) under a labelling.

        Returns
        -------
        dict
            ``{(rank, metric): value}`` plus ``(rank, "n")`` images and ``(rank, "taxa")`` classes used.
        """
        if perm is None:
            V, inverse = self.V, None
        else:
            inverse = np.argsort(perm)  # the species that takes lineage row j is inverse[j]
            V = self.V[inverse]
        out: dict[Any, float] = {}
        blocks = rank_blocks(None, V, self.codes)
        for r in ranks:
            _, Vr, nodes = blocks[r]
            nb = self.named[r][nodes]
            N_t, Sq_t, Sum_t = Vr[nb, 0], Vr[nb, 1], Vr[nb, 2:]
            out[(r, "n")], out[(r, "taxa")] = float(N_t.sum()), float(len(N_t))
            out[(r, "calinski_harabasz")] = calinski_harabasz_from_sums(N_t, Sum_t, Sq_t)
            out[(r, "cdnv")] = cdnv_from_sums(N_t, Sum_t, Sq_t)
            if expensive:
                out[(r, "nc1")] = nc1_from_sums(N_t, Sum_t, self._second_moment(r, inverse))
        return out

    def _second_moment(self, r: int, inverse: "np.ndarray | None") -> np.ndarray:
        """``(d, d)`` sum of ``x x^T`` over the images of the species named at rank ``r``."""
        unnamed = np.flatnonzero(~self.named_species[:, r])
        if unnamed.size == 0:
            return self.G
        species = unnamed if inverse is None else inverse[unnamed]
        Xu = self.X[np.isin(self.species_of_row, species)]
        return self.G - Xu.T @ Xu

    def species_rank_stats(self) -> dict:
        """The four statistics with every species its own class (no null: permutation-invariant)."""
        out: dict[Any, float] = {
            (SPECIES, "n"): float(self.counts.sum()), (SPECIES, "taxa"): float(len(self.counts)),
            (SPECIES, "calinski_harabasz"): calinski_harabasz_from_sums(self.counts, self.sums, self.sq),
            (SPECIES, "cdnv"): cdnv_from_sums(self.counts, self.sums, self.sq),
            (SPECIES, "nc1"): nc1_from_sums(self.counts, self.sums, self.G),
        }
        out[(SPECIES, "silhouette")] = silhouette_from_sums(
            self.Dsp, self.sil_counts, self.sil_local, np.ones(len(self.sil_counts), dtype=bool))
        out[(SPECIES, "sil_n")] = float(len(self.sil_local))
        return out

    # silhouette -------------------------------------------------------------------------------------
    def silhouettes(self, perm: "np.ndarray | None", ranks: list[int]) -> dict:
        """Silhouette at ``ranks`` (< species) under a labelling; ``(rank, "sil_n")`` images used."""
        pos = self.sil_species if perm is None else np.asarray(perm)[self.sil_species]
        o = np.argsort(pos, kind="stable")
        L = self.codes[pos[o]]
        sorted_position = np.empty_like(o)
        sorted_position[o] = np.arange(len(o))
        image_position = sorted_position[self.sil_local]
        s = _starts(L[:, GENUS])
        Dr = np.add.reduceat(self.Dsp[:, o], s, axis=1)
        counts = np.add.reduceat(self.sil_counts[o], s)
        block = np.cumsum(np.isin(np.arange(len(o)), s)) - 1  # genus block of each sorted species
        Lr = L[s]
        out: dict[Any, float] = {}
        for r in range(GENUS, -1, -1):
            if r < GENUS:
                t = _starts(Lr[:, r])
                Dr = np.add.reduceat(Dr, t, axis=1)
                counts = np.add.reduceat(counts, t)
                block = (np.cumsum(np.isin(np.arange(len(Lr)), t)) - 1)[block]
                Lr = Lr[t]
            if r in ranks:
                labels = block[image_position]
                named = self.named[r][Lr[:, r]]
                out[(r, "silhouette")] = silhouette_from_sums(Dr, counts, labels, named)
                out[(r, "sil_n")] = float(np.count_nonzero(named[labels]))
        return out


# ------------------------------------------------------------------------------------- the probe
def probe_clusters(data: ProbeData, options: ProbeOptions) -> ProbeResult:
    """Silhouette, Calinski-Harabasz, NC1 and CDNV of the taxa of every rank, with species-permutation nulls.

    See the module docstring for the definitions, the silhouette sample and the cost of the nulls.

    Parameters
    ----------
    data
        ``X`` ``(n, d)`` image embeddings with their species and lineages.
    options
        ``distance``, ``permutations``, ``max_images``, ``seed``; ``extra["clusters"]["permutations"]``
        caps the silhouette and NC1 nulls (default ``min(options.permutations, 199)``).

    Returns
    -------
    ProbeResult
        Rows ``silhouette``, ``calinski_harabasz``, ``nc1``, ``cdnv`` per rank with at least 2 named
        taxa (columns ``n_taxa``, ``sampled``, ``space``, and the null columns); tables ``null``
        (``rank, metric, permutation, value``) and ``skipped``; array ``silhouette_rows`` ``(m,)``.
    """
    cfg = options.for_probe(PROBE)
    n_perm = int(options.permutations)
    n_expensive = min(_check_int_option(cfg, "permutations", min(n_perm, DEFAULT_EXPENSIVE_PERMUTATIONS), PROBE),
                      n_perm)
    if options.max_images < 2:
        raise InputError(f"The 'max_images' option must be >= 2 for the {PROBE} probe (the silhouette needs "
                         f"pairs of images). Got {options.max_images!r}.")
    metric, seed = options.distance, int(options.seed)
    S = data.n_species
    sil_rows, per_species, sampled = stratified_sample(data.species, S, int(options.max_images), min_per_species=2,
                                                       seed=seed, tag=_SAMPLE_TAG)
    if sampled:
        log.info("clusters: silhouette on %d of %d images (%s)", len(sil_rows), len(data.species),
                 f"{per_species} per species" if per_species > 0 else "2 images of a random subset of species")
    sums = ClusterSums(data, metric, sil_rows)
    ranks = ranks_with_taxa(data)
    skipped = [{"rank": RANK_NAMES[r], "metric": "all", "reason": "fewer than 2 named taxa"}
               for r in range(N_RANKS) if r not in ranks]
    for rec in skipped:
        log.info("clusters: rank %s has fewer than 2 named taxa; no rows", rec["rank"])
    upper = [r for r in ranks if r != SPECIES]

    observed = {**sums.species_stats(None, upper), **sums.silhouettes(None, upper)}
    if SPECIES in ranks:
        observed.update(sums.species_rank_stats())
    nulls = {(r, m): np.full(n_perm if m in ("calinski_harabasz", "cdnv") else n_expensive, np.nan)
             for r in upper for m in METRICS}
    with single_threaded_blas():
        for b, perm in enumerate(species_permutations(S, n_perm, seed)):
            expensive = b < n_expensive
            values = sums.species_stats(perm, upper, expensive=expensive)
            if expensive:
                values.update(sums.silhouettes(perm, upper))
            for (r, m), value in values.items():
                if (r, m) in nulls:
                    nulls[(r, m)][b] = value

    space = "l2_normalized" if metric == "cosine" else "raw"
    rows, null_records = [], []
    for r in ranks:
        name = RANK_NAMES[r]
        for m in METRICS:
            value = observed.get((r, m), np.nan)
            if not np.isfinite(value):
                skipped.append({"rank": name, "metric": m, "reason": "undefined (too few classes or images)"})
                continue
            null = nulls.get((r, m))
            null = null if null is not None and null.size else None
            is_sil = m == "silhouette"
            n = observed[(r, "sil_n")] if is_sil else observed[(r, "n")]
            rows.append(null_row(name, m, float(value), null, int(n), alternative=ALTERNATIVES[m], level="image",
                                 n_taxa=int(observed[(r, "taxa")]), sampled=bool(sampled) if is_sil else False,
                                 space=metric if is_sil else space))
            if null is not None:
                null_records.append(_null_frame(name, m, null))
    info = {"distance": metric, "permutations": n_perm, "permutations_silhouette_nc1": n_expensive, "seed": seed,
            "silhouette_sample": {"images": int(len(sil_rows)), "of": int(len(data.species)), "sampled": bool(sampled),
                                  "per_species": int(per_species), "max_images": int(options.max_images)}}
    null_table = (pd.concat(null_records, ignore_index=True) if null_records
                  else pd.DataFrame(columns=["rank", "metric", "permutation", "value"]))
    return ProbeResult(probe=PROBE, rows=pd.DataFrame.from_records(rows), arrays={"silhouette_rows": sil_rows},
                       tables={"null": null_table,
                               "skipped": pd.DataFrame(skipped, columns=["rank", "metric", "reason"])},
                       info=info)
