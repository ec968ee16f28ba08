"""Clusters probe: how well do the taxa of each rank form clusters of images?

For every rank with at least 2 named taxa, on the images whose species is named at that rank (labels:
their taxon at the rank):

``silhouette``
    Mean silhouette with ``options.distance`` (equal to ``sklearn.metrics.silhouette_score`` on the
    same rows and labels; taxa of one image take no part, see below). O(n^2): above ``options.max_images`` it is computed on
    a seeded sample of images stratified by species (the same number ``k >= 2`` from every species,
    ``k`` the largest that fits, or two images of a random subset of species if even ``k = 2`` does not
    fit, so the species-rank silhouette stays defined); the row's ``n`` is the number of images used
    and ``sampled`` says whether they were sampled.
``calinski_harabasz``
    Between- over within-cluster dispersion, each divided by its degrees of freedom (equal to
    ``sklearn.metrics.calinski_harabasz_score``, except NaN where the within dispersion is 0: see
    "Ties and degenerate input").
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

Which taxa take part (the unit is the image)
--------------------------------------------
At each rank only taxa with at least :data:`MIN_IMAGES` (2) images take part (:func:`single_image_taxa`):
a one-image taxon has no within-taxon distance (sklearn's silhouette scores it 0, diluting the mean
toward 0; it adds a class without spread to Calinski-Harabasz, NC1 and CDNV). On a random sample of a
collection (``tol1k``: 739 of 790 species with one image) most species and many genera are such taxa.
They are left out at that rank like unnamed ones: the silhouette equals
``sklearn.metrics.silhouette_score`` on the images of the taxa with two or more images. The taxa are
nodes of the tree, so the nulls keep them: a permuted labelling fills the same nodes with other species.
A rank with fewer than 2 such taxa has no rows (the ``skipped`` table says why). Every row states
``unit = "image"``, ``n_units`` (its images), ``n_taxa_single`` (taxa left out at its rank) and
``coverage`` (the same in words).

Rows
----
One per rank with at least 2 taking part taxa and statistic: ``value``, ``n`` (images behind it),
``n_species`` (species behind it: those named at the rank; for the silhouette, those of its sample),
``n_taxa`` (taxa of the rank among them), ``ci_low``/``ci_high`` and ``ci_note`` (why there is no CI),
``note`` (why there is no value), the null columns, ``sampled`` and ``space``. Statistics that are
undefined for lack of classes or images (one image per class) are listed in the ``skipped`` table.

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
SVD of the ``(C, d)`` class means at every rank (and a CDNV permutation every pair of taxa), so those
nulls use the setting
``options.for_probe("clusters")["permutations"]`` when given (never more than ``options.permutations``).
Without it the silhouette uses ``min(options.permutations, 199)`` and NC1 a stated smaller number on
large data, :func:`latent.probes.common.default_permutations` (the rule of the separability null):
``min(options.permutations, 199)``, fewer, never below 19 (p reaches 0.05), when one permutation's work
(:func:`expensive_work`: ``sum_r C_r d min(C_r, d)`` multiply-adds) exceeds :data:`NULL_WORK` / 199.
Small data (cub10, the demo) keep 199; the 1,030 real BioCLIP 2 embeddings of ``tol1k`` (700 genera in
768 d) get 20 (BENCHMARKS.md). CDNV's permutation pairs every two taxa of a rank (:func:`cdnv_work`,
``sum_r d C_r (C_r - 1) / 2``): without the setting it uses ``options.permutations``, fewer by the same rule
(cap ``options.permutations``, budget :data:`NULL_WORK`, never below 19) when thousands of taxa make one
permutation costly (100,000 images of 10,000 species: 1.6e9 multiply-adds a permutation, so 19). They are the first ones of the
same seeded sequence; Calinski-Harabasz uses ``options.permutations``. The ``permutations`` column reports the count behind each row,
``info["permutations_silhouette_nc1"]`` the silhouette's and ``info["permutations_nc1"]`` NC1's.
The loops run with single-threaded BLAS (many small calls). In the species bootstrap, the class sums of
every resample are one sparse product and NC1's SVD runs on the taxa drawn only (the others are zero
rows), the same numbers up to summation order (1e-15 relative; tests/test_probes_speed.py).

Uncertainty: a bootstrap over species
-------------------------------------
Images of one species are not independent, so every CI resamples whole species
(:func:`latent.stats.cluster_ci`, percentile 95 %, seeded by ``options.seed``): the units of a row are
its ``n_species`` species; below :data:`latent.stats.MIN_CLUSTERS` (10) there is no CI and ``ci_note``
says so. ``extra["clusters"]["n_boot"]`` resamples (default 1000) for the silhouette and
Calinski-Harabasz, ``n_boot_expensive`` (default ``min(n_boot, 200)``) for NC1 and CDNV (an SVD, or
all pairs of taxa, per resample); when ``n_boot_expensive`` is not set, NC1 uses the null's
work-limited rule (:func:`latent.probes.common.default_permutations` with :func:`expensive_work` over
every rank, cap ``n_boot_expensive``, never below :data:`MIN_BOOT_NC1` = 50): 200 on cub10 and the
demo, 50 on ``tol1k`` (where NC1's CI is dropped as biased at 6 of 7 ranks anyway); ``info["n_boot_nc1"]``
says how many. CDNV the same with :func:`cdnv_work` (``info["n_boot_cdnv"]``). An NC1 resample also needs the
within-class variance along its own directions, from the images when the per-species second moments do not
fit (:func:`nc1_boot_work`: ``N d k``): where even the 50 resamples would exceed :data:`NC1_BOOT_LIMIT` (100,000
images of 10,000 species: 8.2e12 multiply-adds, hours on 2 cores) NC1 has no CI and ``ci_note`` says why
(``n_boot_expensive`` set by hand runs it). Every statistic is recomputed from the per-species sums with weights,
vectorised over resamples (:func:`weighted_ch_cdnv`, :func:`weighted_nc1`): a species drawn ``k`` times
enters as ``k`` species with its images and its lineage, so its images count ``k`` times in its taxon;
at rank species each copy is a class of its own and a class is never paired with its own copy (CDNV).
Calinski-Harabasz keeps the data's degrees of freedom (``C`` taxa): the duplicates stand in for the
taxa none of whose species were drawn, and counting only the taxa drawn would inflate it by
``(C - 1) / (C* - 1)`` (about 1.6 on the built-in tree). The silhouette keeps every sampled image's
``a(i)`` and ``b(i)`` from the observed data and resamples which images' ``s(i)`` enter the mean, by
species (the mean of ``s(i)`` weighted by its species' draws): it conditions on the neighbours, and
does not recompute distances to duplicated images. A percentile CI that does not contain the observed
value (the species bootstrap is then biased for that statistic there) is not given: ``ci_note`` says
so with the resamples' range (:func:`latent.probes.distances.guard_ci`). NC1 is the usual case: a
resample holds fewer distinct taxa, ``S_B`` loses rank and NC1, which grows with the number of taxa for
the dimension, shrinks; it keeps a CI only at ranks with few taxa (cub10's 4 orders, the built-in
tree's 4 kingdoms). Calinski-Harabasz, a ratio of dispersions, is biased upward on resamples too
(taxon means jitter, duplicated species shrink the spread within taxa); with few images per species its
CI can be left out the same way.

Ties and degenerate input
-------------------------
A squared distance or variance at most ``tie2 = TIE_RTOL * max |x|^2`` (``TIE_RTOL = 1024 eps``, of
the geometry's vectors) is 0 up to rounding: distances are snapped to exactly 0 below it
(:func:`latent.probes.common.zero_ties`), so tied vectors tie exactly whatever the row order. If every
image is the same vector (every distance 0), every row has ``value`` NaN, no CI, no null
(``p_value`` NaN, ``permutations`` 0) and ``note`` says why. At a rank where every taxon is one point
the within dispersion is 0 and Calinski-Harabasz is NaN (scikit-learn returns 1.0); two taxa with the
same mean make CDNV NaN; NC1 leaves out the directions of ``S_B`` at most ``tie2`` (NaN when none is
left); a tie ``a(i) = b(i) = 0`` gives ``s(i) = 0`` (no separation), as scikit-learn. Such rows keep
their ``n`` and say why in ``note``. A null value within ``1e-9`` (relative) of the observed one is
counted as equal to it (ties count against the observed value), so a permutation that reproduces the
observed labelling never falls below it by rounding.
"""

from __future__ import annotations

import logging
from typing import Any

import numpy as np
import pandas as pd

from latent.errors import InputError
from latent.probes.base import ProbeData, ProbeOptions, ProbeResult, null_row, pairwise_distances, species_permutations
from latent.probes.common import (DEFAULT_EXPENSIVE_PERMUTATIONS, DEFAULT_N_BOOT, DEFAULT_N_BOOT_EXPENSIVE,
                                  default_permutations, int_setting,
                                  null_frame, progress, run_starts, stratified_sample, tie_null, zero_ties)
from latent.probes.distances import (BLOCK_ELEMENTS, GENUS, SPECIES, TIE_RTOL, TIE_STAT_RTOL, guard_ci, named_nodes,
                                     rank_blocks, ranks_with_taxa, single_threaded_blas, tie_tolerance)
from latent.ranks import RANK_NAMES
from latent.stats import cluster_ci, cluster_ci_note
from latent.taxonomy import N_RANKS

__all__ = ["probe_clusters", "silhouette_from_sums", "silhouette_samples_from_sums", "calinski_harabasz_from_sums",
           "nc1_from_sums", "cdnv_from_sums", "weighted_ch_cdnv", "silhouette_species_sums", "ClusterSums",
           "NULL_WORK", "MIN_BOOT_NC1", "expensive_work", "cdnv_work", "nc1_boot_work", "NC1_BOOT_LIMIT"]

log = logging.getLogger(__name__)

PROBE = "clusters"
#: Largest ``S * d * d`` for which the NC1 bootstrap keeps per-species second moments (else it projects
#: the images on each resample's directions).
NC1_GRAM_ELEMENTS = 1 << 24
#: Budget of the default silhouette and NC1 null, in units of :func:`expensive_work` (multiply-adds of one
#: permutation): ~1e10 is ~10 s of CPU on one thread.
NULL_WORK = 1e10
#: The fewest species-bootstrap resamples the work-limited default gives NC1 (``n_boot_expensive`` unset).
MIN_BOOT_NC1 = 50
METRICS = ("silhouette", "calinski_harabasz", "nc1", "cdnv")
ALTERNATIVES = {"silhouette": "greater", "calinski_harabasz": "greater", "nc1": "less", "cdnv": "less"}
_SAMPLE_TAG = 0x5117


#: The fewest images a taxon needs to take part in an image-level statistic at its rank.
MIN_IMAGES = 2


def single_image_taxa(data: ProbeData) -> tuple[np.ndarray, list[np.ndarray], dict[int, tuple[int, int]]]:
    """Which taxa take part at each rank: named, with at least :data:`MIN_IMAGES` images.

    Parameters
    ----------
    data
        The probe data.

    Returns
    -------
    named_species : numpy.ndarray
        ``(S, 7)`` bool: the species' taxon at the rank takes part (a copy; ``data.named`` is untouched).
    named : list of numpy.ndarray
        Per rank, ``(n_nodes[r],)`` bool: the node takes part.
    single : dict
        ``{rank: (taxa left out, images left out)}``: named taxa with fewer than :data:`MIN_IMAGES` images.
    """
    named = named_nodes(data)
    named_species = np.array(data.named, dtype=bool, copy=True)
    counts = np.asarray(data.counts, dtype=np.int64)
    single: dict[int, tuple[int, int]] = {}
    for r in range(N_RANKS):
        codes = data.codes[:, r]
        images = np.bincount(codes[named_species[:, r]], weights=counts[named_species[:, r]],
                             minlength=len(named[r]))
        few = named[r] & (images > 0) & (images < MIN_IMAGES)
        single[r] = (int(few.sum()), int(images[few].sum()))
        named[r] = named[r] & ~few
        named_species[:, r] &= named[r][codes]
    return named_species, named, single


# -------------------------------------------------------------------------- statistics from sums
def silhouette_samples_from_sums(Dl: np.ndarray, counts: np.ndarray, labels: np.ndarray,
                                 named: np.ndarray) -> "np.ndarray | None":
    """Silhouette of every image from the sums of distances of every image to every cluster.

    Parameters are those of :func:`silhouette_from_sums`.

    Returns
    -------
    numpy.ndarray or None
        ``(m,)`` ``s(i) = (b - a) / max(a, b)`` (0 for a singleton cluster and for a tie ``a = b = 0``,
        as ``sklearn.metrics.silhouette_samples``), NaN for images of clusters not taking part; None
        unless ``2 <= clusters <= images - 1``.
    """
    rows = named[labels]
    out = np.full(len(labels), np.nan)
    if not named.all():
        Dl, counts = Dl[:, named], counts[named]
        labels = (np.cumsum(named) - 1)[labels]
    if not rows.all():
        Dl, labels = Dl[rows], labels[rows]
    C, N = len(counts), len(labels)
    if not 2 <= C <= N - 1:
        return None
    idx = np.arange(N)
    with np.errstate(divide="ignore", invalid="ignore"):
        a = Dl[idx, labels] / (counts[labels] - 1)
        means = Dl / counts
        means[idx, labels] = np.inf
        b = means.min(axis=1)
        s = (b - a) / np.maximum(a, b)
    out[rows] = np.nan_to_num(s)
    return out


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
    s = silhouette_samples_from_sums(Dl, counts, labels, named)
    return float("nan") if s is None else float(np.nanmean(s))


def _ch(extra: np.ndarray, intra: np.ndarray, N: np.ndarray, C: np.ndarray, tie2: float) -> np.ndarray:
    """Calinski-Harabasz from between (``extra``) and within (``intra``) dispersions, vectorised.

    A dispersion at most ``N * tie2`` (a mean squared distance at most ``tie2``) is 0 up to rounding;
    NaN when the within dispersion is 0 (every class one point, or every image tied) or unless
    ``2 <= C <= N - 1``.
    """
    extra, intra, N, C = (np.asarray(v, dtype=np.float64) for v in (extra, intra, N, C))
    with np.errstate(divide="ignore", invalid="ignore"):
        extra = np.where(extra <= N * tie2, 0.0, extra)
        ok = (C >= 2) & (N - C >= 1) & (intra > N * tie2)
        return np.where(ok, extra * (N - C) / (intra * (C - 1)), np.nan)


def calinski_harabasz_from_sums(N_t: np.ndarray, Sum_t: np.ndarray, Sq_t: np.ndarray, tie2: float = 0.0) -> float:
    """Calinski-Harabasz index from per-class counts ``(C,)``, sums ``(C, d)`` and squared norms ``(C,)``.

    Equal to ``sklearn.metrics.calinski_harabasz_score``, except that a within dispersion of 0 (up to
    ``tie2`` per image, see :func:`_ch`) gives NaN where scikit-learn returns 1.0. NaN unless
    ``2 <= C <= N - 1``.
    """
    C, N = len(N_t), float(N_t.sum())
    if not 2 <= C <= N - 1:
        return float("nan")
    between_c = float(((Sum_t ** 2).sum(axis=1) / N_t).sum())
    extra = between_c - float((Sum_t.sum(axis=0) ** 2).sum()) / N
    intra = float(Sq_t.sum()) - between_c
    if intra <= N * tie2:
        return float("nan")
    return (0.0 if extra <= N * tie2 else extra) * (N - C) / (intra * (C - 1))  # as _ch, for one value


def nc1_from_sums(N_t: np.ndarray, Sum_t: np.ndarray, G: np.ndarray, tie2: float = 0.0) -> float:
    """NC1 ``tr(S_W S_B^+) / C`` from class counts ``(C,)``, class sums ``(C, d)`` and ``G`` ``(d, d)``,
    the sum of ``x x^T`` over the same images (any common origin).

    Directions of ``S_B`` with an eigenvalue at most ``tie2`` are left out (0 up to rounding), and
    within variances at most ``tie2`` count as 0; NaN when no direction is left (all class means tied).
    """
    C, N = len(N_t), float(N_t.sum())
    if C < 2:
        return float("nan")
    mu = Sum_t / N_t[:, None]
    M = mu - Sum_t.sum(axis=0) / N
    _, s, Vt = np.linalg.svd(M, full_matrices=False)
    return _nc1_terms(s, Vt, C, M.shape[1], lambda V: np.einsum("ik,ik->k", V, G @ V),
                      lambda V: ((Sum_t @ V) ** 2 / N_t[:, None]).sum(axis=0), N, tie2)


def _nc1_terms(s: np.ndarray, Vt: np.ndarray, C: float, d: int, second, between, N: float, tie2: float) -> float:
    """``sum_k q_k / s_k^2`` over the kept directions ``v_k`` of ``S_B`` (``s``: singular values of the
    ``sqrt(class weight)``-scaled centred class means, so ``lambda_k = s_k^2 / C``); ``q_k = (second(V) -
    between(V)) / N`` is ``v_k' S_W v_k``. Equal to ``tr(S_W S_B^+) / C``."""
    if s.size == 0 or s[0] == 0:
        return float("nan")
    keep = (s > s[0] * max(C, d) * np.finfo(np.float64).eps) & (s ** 2 / C > tie2)
    if not keep.any():
        return float("nan")
    V = Vt[keep].T
    q = (second(V) - between(V)) / N  # v' S_W v
    q = np.where(q <= tie2, 0.0, q)
    return float((q / s[keep] ** 2).sum())


def _cdnv_pairs(var_a: np.ndarray, var_b: np.ndarray, d2: np.ndarray, tie2: float) -> tuple[np.ndarray, np.ndarray]:
    """``(var_a + var_b) / (2 d2)`` and the mask of tied pairs (squared distance at most ``tie2``: 0 up
    to rounding; their value is undefined). Entries that are no pair carry ``d2 = inf`` (value 0)."""
    d2 = np.maximum(d2, 0.0)
    tied = d2 <= tie2
    with np.errstate(divide="ignore", invalid="ignore"):
        return (var_a + var_b) / (2.0 * np.where(tied, np.inf, d2)), tied


def cdnv_from_sums(N_t: np.ndarray, Sum_t: np.ndarray, Sq_t: np.ndarray, tie2: float = 0.0) -> float:
    """Mean over class pairs of ``(var_c + var_c') / (2 ||mu_c - mu_c'||^2)``, in row blocks of pairs.

    Variances and squared distances at most ``tie2`` are 0 (ties); NaN when two class means coincide.
    """
    C = len(N_t)
    if C < 2:
        return float("nan")
    mu = Sum_t / N_t[:, None]
    sqn = (mu ** 2).sum(axis=1)
    var = _variances(Sq_t / N_t - sqn, tie2)
    total = 0.0
    step = max(1, BLOCK_ELEMENTS // C)
    columns = np.arange(C)
    for i0 in range(0, C - 1, step):
        i1 = min(C, i0 + step)
        upper = columns[None, :] > np.arange(i0, i1)[:, None]
        d2 = (sqn[i0:i1, None] + sqn[None, :] - 2.0 * mu[i0:i1] @ mu.T)[upper]
        if (d2 <= tie2).any():  # two class means tied (as _cdnv_pairs)
            return float("nan")
        total += float(((var[i0:i1, None] + var[None, :])[upper] / (2.0 * d2)).sum())
    return total / (C * (C - 1) / 2)


def _variances(var: np.ndarray, tie2: float) -> np.ndarray:
    """Variances, with those at most ``tie2`` (and rounding below 0) set to 0."""
    var = np.maximum(var, 0.0)
    var[var <= tie2] = 0.0
    return var


# ------------------------------------------------------------------------ weighted (bootstrap) versions
def weighted_ch_cdnv(W: np.ndarray, counts: np.ndarray, sums: np.ndarray, sq: np.ndarray, starts: np.ndarray,
                     *, species_classes: bool, tie2: float, ch: bool = True, cdnv: bool = True) -> np.ndarray:
    """Calinski-Harabasz and CDNV on species resamples, vectorised over resamples.

    A species drawn ``w`` times enters as ``w`` species with its images and its lineage above species:
    its images count ``w`` times in its taxon. At rank species (``species_classes``) each copy is a
    class of its own (the number of classes is the number of species drawn; a class and its own copy are
    never a CDNV pair); at higher ranks the classes are the taxa with a species drawn. Calinski-Harabasz
    keeps the degrees of freedom of the data, ``C = T`` classes (the duplicates stand in for the taxa not
    drawn; counting only the taxa drawn, about 63 % of them where taxa hold one species, would inflate it
    by ``(T - 1) / (C* - 1)``); it is NaN when fewer than 2 taxa are drawn.

    Parameters
    ----------
    W
        ``(c, n)`` resampling weights of the ``n`` species (lineage order).
    counts, sums, sq
        ``(n,)`` images, ``(n, d)`` sums and ``(n,)`` squared norms of the images of each species.
    starts
        ``(T,)`` first species of each class (taxa are runs of species).
    ch, cdnv
        Which of the two to compute (CDNV costs ``O(T^2 d)`` per resample, Calinski-Harabasz ``O(n d)``).

    Returns
    -------
    numpy.ndarray
        ``(c, 2)``: Calinski-Harabasz and CDNV (NaN where undefined or not computed).
    """
    W = np.asarray(W, dtype=np.float64)
    c, (n, d) = W.shape[0], sums.shape
    out = np.full((c, 2), np.nan)
    if species_classes:
        mu = sums / counts[:, None]
        N = W @ counts
        between_c = W @ ((sums ** 2).sum(axis=1) / counts)
        extra = between_c - ((W @ sums) ** 2).sum(axis=1) / N
        out[:, 0] = _ch(extra, W @ sq - between_c, N, W.sum(axis=1), tie2) if ch else np.nan
        if not cdnv:
            return out
        sqn = (mu ** 2).sum(axis=1)
        var = _variances(sq / counts - sqn, tie2)
        acc = np.zeros((c, n))
        step = max(1, BLOCK_ELEMENTS // max(n, 1))
        any_tied = False
        for i0 in range(0, n, step):
            i1 = min(n, i0 + step)
            d2 = sqn[i0:i1, None] + sqn[None, :] - 2.0 * mu[i0:i1] @ mu.T
            d2[np.arange(i1 - i0), np.arange(i0, i1)] = np.inf  # a species and its own copy: no pair
            f, tied = _cdnv_pairs(var[i0:i1, None], var[None, :], d2, tie2)
            any_tied |= bool(tied.any())
            acc += W[:, i0:i1] @ f
        with np.errstate(divide="ignore", invalid="ignore"):
            out[:, 1] = (acc * W).sum(axis=1) / (W.sum(axis=1) ** 2 - (W ** 2).sum(axis=1))
        if any_tied:
            out[:, 1] = np.nan
        return out
    T = len(starts)
    step = max(1, BLOCK_ELEMENTS // max(n * d, T * T if cdnv else 1, 1))
    iu, ju = np.triu_indices(T, 1)
    flat = iu * T + ju
    for c0 in range(0, c, step):
        w = W[c0:c0 + step]
        N_t, Sum_t, present, safe = _class_sums(w, counts, sums, starts)
        Sq_t = np.add.reduceat(w * sq, starts, axis=1)
        N = N_t.sum(axis=1)
        between_c = ((Sum_t ** 2).sum(axis=2) / safe).sum(axis=1)
        extra = between_c - (Sum_t.sum(axis=1) ** 2).sum(axis=1) / N
        if ch:
            value = _ch(extra, Sq_t.sum(axis=1) - between_c, N, np.full(len(w), float(T)), tie2)
            out[c0:c0 + step, 0] = np.where(present.sum(axis=1) >= 2, value, np.nan)
        if not cdnv:
            continue
        mu = Sum_t / safe[:, :, None]
        sqn = (mu ** 2).sum(axis=2)
        var = _variances(Sq_t / safe - sqn, tie2)
        G = np.matmul(mu, mu.transpose(0, 2, 1)).reshape(len(w), T * T)[:, flat]
        valid = present[:, iu] & present[:, ju]
        d2 = np.where(valid, sqn[:, iu] + sqn[:, ju] - 2.0 * G, np.inf)
        f, tied = _cdnv_pairs(var[:, iu], var[:, ju], d2, tie2)
        with np.errstate(divide="ignore", invalid="ignore"):
            mean_f = f.sum(axis=1) / valid.sum(axis=1)
        out[c0:c0 + step, 1] = np.where(tied.any(axis=1), np.nan, mean_f)
    return out


def _taxon_sums(w: np.ndarray, sums: np.ndarray, starts: np.ndarray) -> np.ndarray:
    """``(c, T, d)`` weighted sums ``sum_{s in t} w[b, s] sums[s]`` of the runs of species starting at
    ``starts``: one sparse product (``c n`` non-zeros) instead of a ``(c, n, d)`` temporary reduced by
    ``np.add.reduceat``; the same products added in the same order."""
    from scipy import sparse

    c, n = w.shape
    T, d = len(starts), sums.shape[1]
    taxon = np.repeat(np.arange(T), np.diff(np.append(starts, n)))
    rows = (np.arange(c)[:, None] * T + taxon[None, :]).ravel()
    S = sparse.csr_matrix((np.asarray(w, dtype=np.float64).ravel(), (rows, np.tile(np.arange(n), c))),
                          shape=(c * T, n))
    return np.asarray(S @ sums).reshape(c, T, d)


def _class_sums(w: np.ndarray, counts: np.ndarray, sums: np.ndarray,
                starts: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Per resample and class: images ``(c, T)``, sums ``(c, T, d)``, drawn ``(c, T)`` bool and the
    images with 1 for classes not drawn (a safe divisor)."""
    N_t = np.add.reduceat(w * counts, starts, axis=1)
    Sum_t = _taxon_sums(w, sums, starts)
    present = N_t > 0
    return N_t, Sum_t, present, np.where(present, N_t, 1.0)


def _svd_drawn_rows(M: np.ndarray, drawn: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Singular values ``(c, k)`` and right singular vectors ``(c, k, d)`` of each ``M[b]`` ``(T, d)``,
    ``k = min(T, d)``, computed on its drawn rows only (the others are zero rows: they change neither
    the singular values nor the vectors of the non-zero ones, only the cost, O(T^2 d) -> O(m^2 d) with
    ``m`` the rows drawn, ~63 % of the taxa when taxa hold one species). Missing singular values are
    0 with zero vectors (never kept by :func:`weighted_nc1`'s rank rule)."""
    c, T, d = M.shape
    k = min(T, d)
    if drawn.all():
        _, s, Vt = np.linalg.svd(M, full_matrices=False)
        return s, Vt
    s = np.zeros((c, k))
    Vt = np.zeros((c, k, d))
    for b in range(c):
        rows = M[b][drawn[b]]
        if not len(rows):
            continue
        _, sb, Vb = np.linalg.svd(rows, full_matrices=False)
        s[b, :len(sb)] = sb
        Vt[b, :len(sb)] = Vb
    return s, Vt


def weighted_nc1(W: np.ndarray, counts: np.ndarray, sums: np.ndarray, starts: np.ndarray, *, species_classes: bool,
                 tie2: float, gram: "np.ndarray | None" = None, images: "np.ndarray | None" = None,
                 image_starts: "np.ndarray | None" = None) -> np.ndarray:
    """NC1 on species resamples (weighted as in :func:`weighted_ch_cdnv`), vectorised over resamples.

    Parameters
    ----------
    W, counts, sums, starts, species_classes, tie2
        As in :func:`weighted_ch_cdnv`.
    gram
        ``(n, d * d)`` per-species sums of ``x x^T`` (same origin as ``sums``); without it,
        ``images`` ``(N, d)`` (the images of the ``n`` species, sorted by species, first of each at
        ``image_starts``) give ``v' G_w v`` per resample.

    Returns
    -------
    numpy.ndarray
        ``(c,)`` NC1 (NaN where undefined), as :func:`nc1_from_sums` on the expanded resample.
    """
    W = np.asarray(W, dtype=np.float64)
    c, (n, d) = W.shape[0], sums.shape
    T = n if species_classes else len(starts)
    out = np.full(c, np.nan)
    step = max(1, BLOCK_ELEMENTS // max(n * d, T * max(T, d), d * d))
    eps = np.finfo(np.float64).eps
    for c0 in range(0, c, step):
        w = W[c0:c0 + step]
        if species_classes:
            N_t, Sum_t, cw = w * counts, w[:, :, None] * sums[None], w
            safe = np.where(w > 0, N_t, 1.0)
        else:
            N_t, Sum_t, present, safe = _class_sums(w, counts, sums, starts)
            cw = present.astype(np.float64)
        N, C = N_t.sum(axis=1), cw.sum(axis=1)
        classes = np.count_nonzero(cw, axis=1)
        M = np.sqrt(cw)[:, :, None] * (Sum_t / safe[:, :, None] - (Sum_t.sum(axis=1) / N[:, None])[:, None, :])
        s, Vt = _svd_drawn_rows(M, cw > 0)  # s (c, k), Vt (c, k, d)
        s0 = s[:, :1]
        with np.errstate(divide="ignore", invalid="ignore"):
            keep = (s > s0 * np.maximum(C, d)[:, None] * eps) & (s ** 2 / C[:, None] > tie2) & (s0 > 0)
        V = Vt.transpose(0, 2, 1)  # (c, d, k)
        if gram is not None:
            second = (V * ((w @ gram).reshape(-1, d, d) @ V)).sum(axis=1)
        else:
            second = np.stack([wb @ np.add.reduceat((images @ Vb) ** 2, image_starts, axis=0) for wb, Vb in zip(w, V)])
        between = ((Sum_t @ V) ** 2 / safe[:, :, None]).sum(axis=1)
        q = (second - between) / N[:, None]
        q = np.where(q <= tie2, 0.0, q)
        value = np.where(keep, q / np.where(keep, s ** 2, 1.0), 0.0).sum(axis=1)
        out[c0:c0 + step] = np.where((classes >= 2) & keep.any(axis=1), value, np.nan)
    return out


# ------------------------------------------------------------------------------ the fast labellings
class ClusterSums:
    """Sufficient statistics of the clusters probe; any labelling or resample of the species re-aggregates them.

    Parameters
    ----------
    data
        The probe data.
    metric
        ``options.distance``.
    silhouette_rows
        ``(m,)`` image rows (sorted by species) of the silhouette.

    Attributes
    ----------
    tie2 : float
        Squared distances (and variances) at most this are 0 up to rounding: :data:`TIE_RTOL` times the
        largest squared norm of the vectors (of the geometry: unit vectors with ``cosine``).
    identical : bool
        Every image is the same vector up to rounding (every distance 0): no statistic is defined.
    """

    def __init__(self, data: ProbeData, metric: str, silhouette_rows: np.ndarray, device: Any = None) -> None:
        self.codes = data.codes
        # The unit of every statistic is the image, so a taxon takes part at a rank only with at least
        # MIN_IMAGES images (a one-image taxon has no within-taxon distance: sklearn's silhouette scores it
        # 0 and it adds a class with no spread to Calinski-Harabasz and NC1). Those taxa are left out at that
        # rank like unnamed ones, in the observed value, every null labelling and every resample.
        self.named_species, self.named, self.single = single_image_taxa(data)
        self.species_of_row = data.species
        S = data.n_species
        X = np.asarray(data.X, dtype=np.float64)
        if metric == "cosine":
            norms = np.linalg.norm(X, axis=1)
            if (norms == 0).any():
                raise InputError("Cosine geometry is undefined for a zero embedding; use --distance euclidean.")
            X = X / norms[:, None]
        self.tie2 = TIE_RTOL * float(np.einsum("ij,ij->i", X, X).max()) if len(X) else 0.0
        X = X - X.mean(axis=0)  # a common origin near the data: fewer cancellations in the sums
        self.X = X
        order = np.argsort(data.species, kind="stable")
        first = run_starts(data.species[order])
        self.order, self.first = order, first
        self.counts = data.counts.astype(np.float64)
        self.sums = np.add.reduceat(X[order], first, axis=0)
        self.sq = np.add.reduceat((X ** 2).sum(axis=1)[order], first)
        self.identical = bool(self.sq.sum() <= self.counts.sum() * self.tie2)
        self.G = X.T @ X
        self.V = np.column_stack([self.counts, self.sq, self.sums])  # (S, 2 + d)
        self._species_G: "np.ndarray | None" = None
        # Silhouette: distances of every sampled image to the sampled images of each species.
        rows = np.asarray(silhouette_rows)
        sp = data.species[rows]
        st = run_starts(sp)
        m = len(rows)
        self.sil_species = sp[st]
        self.sil_counts = np.diff(np.r_[st, m]).astype(np.float64)
        self.sil_local = np.repeat(np.arange(len(st)), np.diff(np.r_[st, m]))
        Xs = np.asarray(data.X[rows], dtype=np.float64)
        tol = tie_tolerance(Xs, metric)
        Dsp = np.empty((m, len(st)))
        step = max(1, BLOCK_ELEMENTS // max(m, 1))
        for r0 in range(0, m, step):
            r1 = min(m, r0 + step)
            D = zero_ties(pairwise_distances(Xs[r0:r1], Xs, metric, device=device), tol)
            D[np.arange(r1 - r0), np.arange(r0, r1)] = 0.0
            Dsp[r0:r1] = np.add.reduceat(D, st, axis=1)
        self.Dsp = Dsp
        self.n_species = S

    # species-level statistics ------------------------------------------------------------------
    def species_stats(self, perm: "np.ndarray | None", ranks: list[int], expensive: bool = True,
                      cdnv: bool = True) -> dict:
        """Calinski-Harabasz, NC1 (if ``expensive``) and CDNV (if ``cdnv``) at ``ranks`` (< species) under a
        labelling.

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
            out[(r, "calinski_harabasz")] = calinski_harabasz_from_sums(N_t, Sum_t, Sq_t, self.tie2)
            if cdnv:
                out[(r, "cdnv")] = cdnv_from_sums(N_t, Sum_t, Sq_t, self.tie2)
            if expensive:
                out[(r, "nc1")] = nc1_from_sums(N_t, Sum_t, self._second_moment(r, inverse), self.tie2)
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
        """The four statistics with every species (of at least two images) its own class (no null:
        permutation-invariant)."""
        keep = self.named_species[:, SPECIES]
        counts, sums, sq = self.counts[keep], self.sums[keep], self.sq[keep]
        out: dict[Any, float] = {
            (SPECIES, "n"): float(counts.sum()), (SPECIES, "taxa"): float(len(counts)),
            (SPECIES, "calinski_harabasz"): calinski_harabasz_from_sums(counts, sums, sq, self.tie2),
            (SPECIES, "cdnv"): cdnv_from_sums(counts, sums, sq, self.tie2),
            (SPECIES, "nc1"): nc1_from_sums(counts, sums, self._second_moment(SPECIES, None), self.tie2),
        }
        s = silhouette_samples_from_sums(self.Dsp, self.sil_counts, self.sil_local, keep[self.sil_species])
        out[(SPECIES, "silhouette")] = float("nan") if s is None else float(np.nanmean(s))
        out[(SPECIES, "sil_s")] = s
        out[(SPECIES, "sil_n")] = float(len(self.sil_local))
        return out

    # silhouette -------------------------------------------------------------------------------------
    def silhouettes(self, perm: "np.ndarray | None", ranks: list[int], samples: bool = False) -> dict:
        """Silhouette at ``ranks`` (< species) under a labelling; ``(rank, "sil_n")`` images used and, with
        ``samples``, ``(rank, "sil_s")`` the ``(m,)`` silhouette of every sampled image (NaN if unnamed)."""
        pos = self.sil_species if perm is None else np.asarray(perm)[self.sil_species]
        o = np.argsort(pos, kind="stable")
        L = self.codes[pos[o]]
        sorted_position = np.empty_like(o)
        sorted_position[o] = np.arange(len(o))
        image_position = sorted_position[self.sil_local]
        s = run_starts(L[:, GENUS])
        Dr = np.add.reduceat(self.Dsp[:, o], s, axis=1)
        counts = np.add.reduceat(self.sil_counts[o], s)
        block = np.cumsum(np.isin(np.arange(len(o)), s)) - 1  # genus block of each sorted species
        Lr = L[s]
        out: dict[Any, Any] = {}
        for r in range(GENUS, -1, -1):
            if r < GENUS:
                t = run_starts(Lr[:, r])
                Dr = np.add.reduceat(Dr, t, axis=1)
                counts = np.add.reduceat(counts, t)
                block = (np.cumsum(np.isin(np.arange(len(Lr)), t)) - 1)[block]
                Lr = Lr[t]
            if r in ranks:
                labels = block[image_position]
                named = self.named[r][Lr[:, r]]
                values = silhouette_samples_from_sums(Dr, counts, labels, named)
                out[(r, "silhouette")] = float("nan") if values is None else float(np.nanmean(values))
                out[(r, "sil_n")] = float(np.count_nonzero(named[labels]))
                if samples:
                    out[(r, "sil_s")] = values
        return out

    # species bootstrap -----------------------------------------------------------------------------
    def rank_species(self, r: int) -> tuple[np.ndarray, np.ndarray]:
        """The species named at rank ``r`` (lineage order) and the first of each taxon among them."""
        species = np.flatnonzero(self.named_species[:, r])
        return species, run_starts(self.codes[species, r])

    def boot_ch_cdnv(self, r: int, W: np.ndarray, ch: bool = True, cdnv: bool = True) -> np.ndarray:
        """``(c, 2)`` Calinski-Harabasz and CDNV at rank ``r`` on ``(c, n_r)`` resamples of its species."""
        species, starts = self.rank_species(r)
        return weighted_ch_cdnv(W, self.counts[species], self.sums[species], self.sq[species], starts,
                                species_classes=r == SPECIES, tie2=self.tie2, ch=ch, cdnv=cdnv)

    def gram_fits(self) -> bool:
        """Whether the per-species second moments (:meth:`_gram`) fit in :data:`NC1_GRAM_ELEMENTS`."""
        S, d = self.sums.shape
        return S * d * d <= NC1_GRAM_ELEMENTS

    def _gram(self) -> "np.ndarray | None":
        """``(S, d * d)`` per-species sums of ``x x^T``, when they fit in :data:`NC1_GRAM_ELEMENTS`."""
        S, d = self.sums.shape
        if not self.gram_fits():
            return None
        if self._species_G is None:
            Xo = self.X[self.order]
            bounds = np.r_[self.first, len(Xo)]
            self._species_G = np.stack([Xo[a:b].T @ Xo[a:b] for a, b in zip(bounds[:-1], bounds[1:])]).reshape(S, d * d)
        return self._species_G

    def boot_nc1(self, r: int, W: np.ndarray) -> np.ndarray:
        """``(c,)`` NC1 at rank ``r`` on ``(c, n_r)`` resamples of its species (:func:`weighted_nc1`)."""
        species, starts = self.rank_species(r)
        gram = self._gram()
        kwargs: dict[str, Any] = {}
        if gram is not None:
            kwargs["gram"] = gram[species]
        else:  # v' G_w v from the images of the rank's species: O(N d k) per resample
            rows = self.order[np.isin(self.species_of_row[self.order], species)]
            kwargs.update(images=self.X[rows], image_starts=run_starts(self.species_of_row[rows]))
        return weighted_nc1(W, self.counts[species], self.sums[species], starts, species_classes=r == SPECIES,
                            tie2=self.tie2, **kwargs)


# ------------------------------------------------------------------------------------- the probe
def _n_taxa(sums: ClusterSums, r: int) -> float:
    """Taxa taking part at rank ``r`` (named, with :data:`MIN_IMAGES` images or more)."""
    return float(len(np.unique(sums.codes[sums.named_species[:, r], r])))


def expensive_work(sums: ClusterSums, ranks: list[int]) -> float:
    """Work of one permutation of the NC1 null (or one NC1 resample): ``sum_r C_r d min(C_r, d)``, the SVD
    of the ``(C_r, d)`` class means at each rank ``r`` of ``ranks``, in multiply-adds."""
    d = sums.sums.shape[1]
    return sum(_n_taxa(sums, r) * d * min(_n_taxa(sums, r), d) for r in ranks)


#: Most work the NC1 species bootstrap may take at its floor (:data:`MIN_BOOT_NC1` resamples, :func:`nc1_boot_work`
#: each) before its CI is left out (said in ``ci_note``). Computed with these functions: 10,000 images of 1,000
#: species take 8.2e11 (the clusters probe there: 113 s on 2 cores, BENCHMARKS.md), 100,000 images of 10,000
#: species 8.2e12.
NC1_BOOT_LIMIT = 2e12


def nc1_boot_work(sums: ClusterSums, ranks: list[int]) -> float:
    """Work of one NC1 bootstrap resample over ``ranks``: per rank the SVD of the class means (``C d k``) and the
    within-class variance along its ``k = min(C, d)`` directions, from the per-species second moments when they
    fit (``d d k``, :meth:`ClusterSums._gram`) or else from the rank's images (``N d k``)."""
    d = sums.sums.shape[1]
    work = 0.0
    for r in ranks:
        C = _n_taxa(sums, r)
        k = min(C, d)
        N = float(sums.counts[sums.named_species[:, r]].sum())
        work += C * d * k + (d * d * k if sums.gram_fits() else N * d * k)
    return work


def cdnv_work(sums: ClusterSums, ranks: list[int]) -> float:
    """Work of one permutation of the CDNV null (or one CDNV resample): ``sum_r d C_r (C_r - 1) / 2``, the
    distances of every pair of class means at each rank ``r`` of ``ranks``, in multiply-adds (100,000 images of
    10,000 species in 768 d: 1.6e9 over the ranks above species)."""
    d = sums.sums.shape[1]
    return sum(d * _n_taxa(sums, r) * (_n_taxa(sums, r) - 1) / 2 for r in ranks)


_TIE_NOTES = {
    "silhouette": "every image tied with its taxon and its nearest taxon: undefined",
    "calinski_harabasz": "within-taxon dispersion 0 (every taxon one point, tied vectors): undefined",
    "nc1": "every taxon mean tied: undefined",
    "cdnv": "two taxa with the same mean (tied vectors): undefined",
}
IDENTICAL_NOTE = "all images identical (every distance 0): no statistic, no test"


def probe_clusters(data: ProbeData, options: ProbeOptions) -> ProbeResult:
    """Silhouette, Calinski-Harabasz, NC1 and CDNV of the taxa of every rank, with species-permutation
    nulls and species-bootstrap CIs.

    See the module docstring for the definitions, the silhouette sample, the cost of the nulls, the
    bootstrap and the ties.

    Parameters
    ----------
    data
        ``X`` ``(n, d)`` image embeddings with their species and lineages.
    options
        ``distance``, ``permutations``, ``max_images``, ``seed``; ``extra["clusters"]`` may set
        ``permutations`` (silhouette and NC1 nulls; default ``min(options.permutations, 199)``, NC1 fewer
        on large data: :func:`~latent.probes.common.default_permutations`),
        ``n_boot`` (default 1000; 0: no CIs) and ``n_boot_expensive`` (NC1 and CDNV, default
        ``min(n_boot, 200)``; NC1 fewer, at least 50, on large data when it is not set).

    Returns
    -------
    ProbeResult
        Rows ``silhouette``, ``calinski_harabasz``, ``nc1``, ``cdnv`` per rank with at least 2 named
        taxa (columns ``n_species``, ``n_taxa``, ``sampled``, ``space``, ``ci_note``, ``note`` and the
        null columns); tables ``null`` (``rank, metric, permutation, value``) and ``skipped``; array
        ``silhouette_rows`` ``(m,)``.
    """
    cfg = options.for_probe(PROBE)
    n_perm = int(options.permutations)
    n_expensive_set = int_setting(cfg, "permutations", 0, PROBE) if "permutations" in cfg else None
    n_boot = int_setting(cfg, "n_boot", DEFAULT_N_BOOT, PROBE)
    n_boot_expensive = min(int_setting(cfg, "n_boot_expensive", min(n_boot, DEFAULT_N_BOOT_EXPENSIVE), PROBE),
                           n_boot)
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
    sums = ClusterSums(data, metric, sil_rows, options.device)
    named_ranks = ranks_with_taxa(data)
    ranks = [r for r in named_ranks if len(np.unique(data.codes[sums.named_species[:, r], r])) >= 2]
    skipped = [{"rank": RANK_NAMES[r], "metric": "all",
                "reason": ("fewer than 2 named taxa" if r not in named_ranks else
                           f"fewer than 2 taxa with {MIN_IMAGES} or more images ({sums.single[r][0]} taxa have "
                           f"one image)")}
               for r in range(N_RANKS) if r not in ranks]
    for rec in skipped:
        log.info("clusters: rank %s: %s; no rows", rec["rank"], rec["reason"])
    upper = [r for r in ranks if r != SPECIES]
    if n_expensive_set is None:
        n_expensive = min(n_perm, DEFAULT_EXPENSIVE_PERMUTATIONS)
        work = expensive_work(sums, upper)
        n_nc1 = default_permutations(n_perm, work, cap=DEFAULT_EXPENSIVE_PERMUTATIONS, budget=NULL_WORK)
        if n_nc1 < n_expensive:
            log.info("%s: %d of %d permutations for NC1 (one permutation ~%.2g multiply-adds; set "
                     "%s.permutations for more)", PROBE, n_nc1, n_perm, work, PROBE)
        work_cdnv = cdnv_work(sums, upper)
        n_cdnv = default_permutations(n_perm, work_cdnv, cap=n_perm, budget=NULL_WORK)
        if n_cdnv < n_perm:
            log.info("%s: %d of %d permutations for CDNV (one permutation ~%.2g multiply-adds; set "
                     "%s.permutations for more)", PROBE, n_cdnv, n_perm, work_cdnv, PROBE)
    else:
        n_expensive = n_nc1 = n_cdnv = min(n_expensive_set, n_perm)
    if sums.identical:
        log.warning("clusters: %s", IDENTICAL_NOTE)

    observed = {**sums.species_stats(None, upper), **sums.silhouettes(None, upper, samples=True)}
    if SPECIES in ranks:
        observed.update(sums.species_rank_stats())
    if sums.identical:  # every distance 0: no statistic (not sklearn's silhouette 0 or CH 1)
        observed.update({(r, m): np.nan for r in ranks for m in METRICS})
    sizes = {"calinski_harabasz": n_perm, "cdnv": n_cdnv, "silhouette": n_expensive, "nc1": n_nc1}
    nulls = {(r, m): np.full(sizes[m], np.nan)
             for r in upper for m in METRICS}
    with single_threaded_blas():
        n_null = 0 if sums.identical else n_perm
        if n_null and upper:
            log.info("%s: null of %d ranks, %d permutations (%d for the silhouette, %d for NC1, %d for CDNV)", PROBE,
                     len(upper), n_null, min(n_expensive, n_null), min(n_nc1, n_null), min(n_cdnv, n_null))
        for b, perm in progress(enumerate(species_permutations(S, n_null, seed)), total=n_null, desc=f"{PROBE} null"):
            values = sums.species_stats(perm, upper, expensive=b < n_nc1, cdnv=b < n_cdnv)
            if b < n_expensive:
                values.update(sums.silhouettes(perm, upper))
            for (r, m), value in values.items():
                if (r, m) in nulls:
                    nulls[(r, m)][b] = value
        nc1_skipped = ""
        if "n_boot_expensive" in cfg:
            n_boot_nc1 = n_boot_cdnv = n_boot_expensive
        else:  # NC1's resample is an SVD per rank, CDNV's every pair of taxa: the work-limited rule of the
            # null, at least 50 resamples
            n_boot_nc1 = default_permutations(n_boot_expensive, expensive_work(sums, ranks), cap=n_boot_expensive,
                                              budget=NULL_WORK, floor=MIN_BOOT_NC1)
            n_boot_cdnv = default_permutations(n_boot_expensive, cdnv_work(sums, ranks), cap=n_boot_expensive,
                                               budget=NULL_WORK, floor=MIN_BOOT_NC1)
            for name, used in (("NC1", n_boot_nc1), ("CDNV", n_boot_cdnv)):
                if used < n_boot_expensive:
                    log.info("%s: %d of %d bootstrap resamples for %s (set %s.n_boot_expensive for more)", PROBE,
                             used, n_boot_expensive, name, PROBE)
            boot_work = nc1_boot_work(sums, ranks)
            if n_boot_nc1 * boot_work > NC1_BOOT_LIMIT:  # even the floor would take far longer than the probe
                nc1_skipped = (f"no CI: NC1's species bootstrap would take ~{n_boot_nc1 * boot_work:.1e} "
                               f"multiply-adds ({n_boot_nc1} resamples of the SVD and the within-class variance "
                               f"along its directions, from {int(sums.counts.sum()):,} images; set "
                               f"{PROBE}.n_boot_expensive to run it)")
                log.info("%s: %s", PROBE, nc1_skipped)
                n_boot_nc1 = 0  # none run (info["n_boot_nc1"])
        cis = {} if sums.identical else _bootstrap_cis(sums, observed, ranks, n_boot, n_boot_expensive, seed,
                                                       n_boot_nc1, n_boot_cdnv, nc1_skipped)

    space = "l2_normalized" if metric == "cosine" else "raw"
    rows, null_records = [], []
    for r in ranks:
        name = RANK_NAMES[r]
        species, _ = sums.rank_species(r)
        sil_species = _silhouette_species(sums, r)
        for m in METRICS:
            is_sil = m == "silhouette"
            n = observed[(r, "sil_n")] if is_sil else observed[(r, "n")]
            taxa = len(np.unique(sums.codes[sil_species, r])) if is_sil else int(observed[(r, "taxa")])
            left_out, left_images = sums.single[r]
            extra = dict(level="image", n_species=len(sil_species) if is_sil else len(species), n_taxa=int(taxa),
                         sampled=bool(sampled) if is_sil else False, space=metric if is_sil else space,
                         unit="image", n_units=int(n), n_taxa_single=left_out,
                         coverage=(f"{left_out} of {left_out + int(taxa)} taxa have one image: left out" if left_out
                                   else ""))
            value = observed.get((r, m), np.nan)
            if not np.isfinite(value):
                if not sums.identical and (taxa < 2 or n - taxa < 1):
                    skipped.append({"rank": name, "metric": m, "reason": "undefined (too few classes or images)"})
                    continue
                note = IDENTICAL_NOTE if sums.identical else _TIE_NOTES[m]
                rows.append(null_row(name, m, np.nan, None, int(n), alternative=ALTERNATIVES[m], **extra,
                                     ci_note="no CI: no value", note=note))
                continue
            null = nulls.get((r, m))
            null = tie_null(null, float(value), rtol=TIE_STAT_RTOL) if null is not None and np.isfinite(null).any() else None
            ci, ci_note = guard_ci(float(value), *cis.get((r, m), ((np.nan, np.nan), "no CI: 0 bootstrap resamples")))
            rows.append(null_row(name, m, float(value), null, int(n), alternative=ALTERNATIVES[m], ci=ci, **extra,
                                 ci_note=ci_note, note=""))
            if null is not None:
                null_records.append(null_frame(name, m, null))
    info = {"distance": metric, "permutations": n_perm, "permutations_silhouette_nc1": n_expensive,
            "permutations_nc1": n_nc1, "permutations_cdnv": n_cdnv, "seed": seed,
            "n_boot": n_boot, "n_boot_nc1_cdnv": n_boot_expensive,
            "n_boot_nc1": n_boot_nc1 if not sums.identical else 0,
            "n_boot_cdnv": n_boot_cdnv if not sums.identical else 0, "identical": bool(sums.identical),
            "silhouette_sample": {"images": int(len(sil_rows)), "of": int(len(data.species)), "sampled": bool(sampled),
                                  "per_species": int(per_species), "max_images": int(options.max_images)}}
    null_table = (pd.concat(null_records, ignore_index=True) if null_records
                  else pd.DataFrame(columns=["rank", "metric", "permutation", "value"]))
    return ProbeResult(probe=PROBE, rows=pd.DataFrame.from_records(rows), arrays={"silhouette_rows": sil_rows},
                       tables={"null": null_table,
                               "skipped": pd.DataFrame(skipped, columns=["rank", "metric", "reason"])},
                       info=info)


def _silhouette_species(sums: ClusterSums, r: int) -> np.ndarray:
    """The species of the silhouette sample named at rank ``r``."""
    return sums.sil_species[sums.named_species[sums.sil_species, r]]


def silhouette_species_sums(sums: ClusterSums, values: np.ndarray, r: int) -> tuple[np.ndarray, np.ndarray]:
    """Per species of the silhouette sample named at rank ``r``: the sum of its images' ``s(i)`` and their count."""
    local = np.flatnonzero(sums.named_species[sums.sil_species, r])
    k = len(sums.sil_species)
    total = np.bincount(sums.sil_local, weights=np.nan_to_num(values), minlength=k)
    count = np.bincount(sums.sil_local, minlength=k).astype(np.float64)
    return total[local], count[local]


def _bootstrap_cis(sums: ClusterSums, observed: dict, ranks: list[int], n_boot: int, n_boot_expensive: int,
                   seed: int, n_boot_nc1: "int | None" = None, n_boot_cdnv: "int | None" = None,
                   nc1_skipped: str = "") -> dict:
    """``{(rank, metric): ((low, high), ci_note)}``: species-bootstrap CIs of the finite observed values
    (``nc1_skipped``: NC1's bootstrap is not run and this is its note, where the rank has the species for one)."""
    out: dict[Any, Any] = {}
    for r in ranks:
        species, _ = sums.rank_species(r)
        finite = {m: np.isfinite(observed.get((r, m), np.nan)) for m in METRICS}
        if finite["calinski_harabasz"]:
            low, high, note = cluster_ci(lambda W, r=r: sums.boot_ch_cdnv(r, W, cdnv=False)[:, 0], len(species),
                                         n_boot=n_boot, seed=seed)
            out[(r, "calinski_harabasz")] = ((low, high), note)
        if finite["cdnv"]:
            low, high, note = cluster_ci(lambda W, r=r: sums.boot_ch_cdnv(r, W, ch=False)[:, 1], len(species),
                                         n_boot=n_boot_expensive if n_boot_cdnv is None else n_boot_cdnv, seed=seed)
            out[(r, "cdnv")] = ((low, high), note)
        if finite["nc1"] and nc1_skipped:
            out[(r, "nc1")] = ((np.nan, np.nan), cluster_ci_note(len(species)) or nc1_skipped)
        elif finite["nc1"]:
            low, high, note = cluster_ci(lambda W, r=r: sums.boot_nc1(r, W), len(species),
                                         n_boot=n_boot_expensive if n_boot_nc1 is None else n_boot_nc1,
                                         seed=seed)
            out[(r, "nc1")] = ((low, high), note)
        if finite["silhouette"]:
            total, count = silhouette_species_sums(sums, observed[(r, "sil_s")], r)
            low, high, note = cluster_ci(lambda W, t=total, n=count: (W @ t) / (W @ n), len(total), n_boot=n_boot,
                                         seed=seed)
            out[(r, "silhouette")] = ((low, high), note)
    return out
