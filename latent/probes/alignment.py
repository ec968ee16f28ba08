"""Alignment of species-centroid geometry with the taxonomy: Mantel, CKA and RSA rank correlations.

Every statistic here compares two ``(S, S)`` species matrices, the embedding distances between species
centroids and the taxonomic distances (LCA height 0..7), or a kernel built from each; the null keeps the
embedding and permutes which species sits at which leaf (:mod:`latent.probes.base`). Under a species
permutation ``p`` the taxonomic matrix becomes ``T[p][:, p]``, so every null statistic below is a
function of the *permuted quadratic form*

    Q(p) = sum_{i<j} X[p_i, p_j] * Y[i, j]

of a matrix ``X`` derived from the taxonomy and a fixed matrix ``Y`` derived from the embedding
(:func:`permuted_pair_sums`). It is O(S^2) per permutation and cannot be made cheaper in general (it is
the quadratic-assignment objective). A compiled kernel (numba: installed with umap-learn, which latent
requires; scikit-bio uses it too) computes it for blocks of 16 permutations at a time, so each segment of
``Y`` is read from memory once per block, gathers each permuted row of ``X`` into a buffer and takes
contiguous dot products; ``X`` with at most 256 distinct values (taxonomic distances and their ranks) is
stored as uint8 codes with a lookup table, 4 MB at S = 2,000, so its rows stay in cache. On 2,000
species and 999 permutations this is about 2x faster than ``skbio.stats.distance.mantel``
(``benchmarks/bench_mantel.py``). Without numba a NumPy fallback gives the same values, about 10x
slower than scikit-bio.

Statistics
----------
* **Mantel** (:func:`mantel`): Pearson (or Spearman: Pearson of the average ranks of the condensed
  matrices, ranked once) correlation of the condensed matrices; the p-value counts the observed value
  as one permutation, ``(1 + #{null >= r}) / (1 + permutations)`` for ``alternative="greater"``,
  exactly as ``skbio.stats.distance.mantel`` does (which also permutes the rows and columns of its
  first matrix together). Null values within ``1e-12`` of ``r`` (ties, e.g. permutations that swap two
  species of one genus and leave ``T`` unchanged) count as at least as extreme.
* **Linear CKA** (Kornblith et al. 2019) between the centroids ``(S, d)`` and the taxonomy's feature
  matrix (one-hot of every rank stacked, so its Gram matrix ``L = 7 - T`` counts shared ranks):
  ``CKA = <Kc, Lc>_F / (||Kc||_F ||Lc||_F)`` with ``Kc``, ``Lc`` the double-centred Gram matrices. With
  ``distance="cosine"`` the linear kernel is taken on L2-normalised centroids (cosine similarity), with
  ``"euclidean"`` on the raw centroids.
* **RSA** rank correlations for a model matrix with many ties (the taxonomy has at most 8 distinct
  values): Kendall's tau-a (``(concordant - discordant) / (N (N - 1) / 2)`` over the ``N`` species pairs,
  as rsatoolbox's ``compare_kendall_tau_a``) and rho-a (``12 sum (r_x - m)(r_y - m) / (N^3 - N)`` of
  average ranks, rsatoolbox's ``compare_rho_a``). Both favour models that predict ties less than
  tau-b / Spearman do.

Ties and degenerate input
-------------------------
Centroid distances come from :func:`centroid_distances`: Euclidean distances near 0 are recomputed
from coordinate differences (the Gram form leaves ``~1e-8 |x|`` of noise between identical centroids)
and distances within ``REL_TOL`` (1e-12) of the largest distance the space allows are made exactly
equal (:func:`snap_ties`), so that rounding never orders tied pairs (it would order them by where the
rows sit, i.e. by species order). Every statistic here treats ties without an order (average ranks,
tau-a counts tied pairs as 0). When all distances among the probed species tie (identical vectors,
all-zero vectors with ``euclidean``, parallel vectors with ``cosine``, a regular simplex), or all
taxonomic distances do (one genus), the input is **degenerate** (:func:`degenerate_note`): every row
has value NaN, no p-value (``permutations`` 0), ``degenerate`` True and a ``note`` saying why. CKA is
computed from the double-centred Gram matrix centred once more as a matrix (``sum Kc = 0`` to rounding
of ``Kc`` itself), clipped to [0, 1]: with near-constant centroids, centring leaves a rounding offset
``c`` in every row, ``Kc = c c'`` is constant, and ``7 sum Kc - 2 sum Kc_ij T_ij`` over
``||Kc|| ||Lc||`` came out as ``(7 S^2 - sum T) / (S ||Lc||)`` whatever ``c``: 0.60 for the built-in
47 species, 3.05 for 300 species of a balanced tree (the reviewer's 2.83). :func:`linear_cka` is NaN
for features constant up to rounding.

Uncertainty
-----------
Every statistic gets a percentile CI from a cluster bootstrap over species
(:func:`latent.stats.cluster_ci` via :func:`species_cis`; none below
:data:`latent.stats.MIN_CLUSTERS` = 10 species, ``ci_note`` says so). A resample draws ``S`` species
with replacement and is treated as the data set of its draws, with pairs of two copies of one species
left out (a copy pair is a spurious zero-distance pair, or a second diagonal entry of a kernel): the
pair statistics weigh pair ``(i, j)`` by ``w_i w_j`` (``w`` the draw counts; Pearson and CKA as
quadratic forms in ``w``, Spearman / rho-a / tau-a by ranking the weighted multiset of pairs,
:class:`_PairRanks`, :class:`_PairTau`), which equals the statistic on the expanded resample. Settings:
``n_boot`` (1000) for the Pearson Mantel r and CKA, ``n_boot_rank`` (``min(n_boot, 200)``) for the
rank statistics; tau-a resamples its own species sample.

Sizes
-----
``S`` species give ``N = S (S - 1) / 2`` pairs. Above ``options.max_pairs`` pairs a stratified seeded
sample of species is used for the whole probe (systematic sampling along lineage order, so every clade
keeps its share); tau-a, whose null costs ``O(N * levels)`` per permutation, uses its own species sample
above ``tau_max_pairs`` pairs. The rows' ``n`` is the number of species used and ``pairs`` the pairs.
"""

from __future__ import annotations

import functools
import hashlib
import logging
import time
from collections.abc import Callable
from typing import Any, NamedTuple

import numpy as np
import pandas as pd

from latent.errors import InputError
from latent.probes.base import (
    ProbeData,
    ProbeOptions,
    ProbeResult,
    null_row,
    pairwise_distances,
    species_permutations,
)
from latent.probes.common import (DEFAULT_N_BOOT, DEFAULT_N_BOOT_EXPENSIVE, average_ranks, empty_null_frame,
                                  int_setting, max_items_for_pairs, null_frame, snap_ties, stratified_species,
                                  tie_null)
from latent.stats import cluster_ci

__all__ = [
    "MantelResult",
    "PermutedCorrelation",
    "mantel",
    "permuted_pair_sums",
    "condensed",
    "linear_cka",
    "taxonomy_features",
    "species_distances",
    "kendall_tau_a",
    "rho_a",
    "stratified_species",
    "REL_TOL",
    "snap_ties",
    "centroid_distances",
    "degenerate_note",
    "species_cis",
    "probe_alignment",
]

log = logging.getLogger(__name__)

#: Null values this close to the observed statistic are ties (they count as at least as extreme).
TIE_TOL = 1e-12
#: Embedding distances within ``REL_TOL`` times the largest distance the space allows are ties
#: (:func:`centroid_distances`); a matrix whose distances all tie is degenerate (:func:`degenerate_note`).
REL_TOL = 1e-12

_METHODS = ("pearson", "spearman")
_ALTERNATIVES = ("greater", "less", "two-sided")
_ENGINES = ("auto", "numba", "numpy")


# ---------------------------------------------------------------------- input checks and helpers
def _check_distance_matrix(name: str, value: Any, function: str = "mantel") -> np.ndarray:
    """A square, finite, symmetric, hollow float64 matrix, or a clear InputError."""
    m = np.asarray(value)
    if m.ndim != 2 or m.shape[0] != m.shape[1]:
        raise InputError(f"The {name!r} parameter of {function} must be a square (S, S) distance matrix. "
                         f"Got shape {m.shape}.")
    m = m.astype(np.float64, copy=False)
    if not np.isfinite(m).all():
        raise InputError(f"The {name!r} parameter of {function} must be finite; "
                         f"{int((~np.isfinite(m)).sum())} entries are not.")
    scale = max(float(np.abs(m).max()) if m.size else 0.0, 1.0)
    if not np.allclose(m, m.T, rtol=0.0, atol=1e-10 * scale):
        raise InputError(f"The {name!r} parameter of {function} must be symmetric (a distance matrix); "
                         f"max |m - m.T| = {float(np.abs(m - m.T).max()):.3g}. Pass (m + m.T) / 2 if that is intended.")
    if np.abs(np.diag(m)).max(initial=0.0) > 1e-10 * scale:
        raise InputError(f"The {name!r} parameter of {function} must have a zero diagonal (distance of a "
                         f"species to itself); max |diag| = {float(np.abs(np.diag(m)).max()):.3g}.")
    return m


def _check_choice(name: str, value: Any, choices: tuple[str, ...], function: str) -> str:
    if value not in choices:
        raise InputError(f"The {name!r} parameter of {function} must be one of {', '.join(choices)}. "
                         f"Got {value!r}.")
    return str(value)


def _check_perms(perms: Any, n: int, function: str) -> np.ndarray:
    p = np.asarray(perms)
    if p.ndim != 2 or p.shape[1] != n or not np.issubdtype(p.dtype, np.integer):
        raise InputError(f"The 'perms' parameter of {function} must be an integer (P, {n}) array of "
                         f"permutations of range({n}). Got shape {p.shape}, dtype {p.dtype}.")
    if p.size and not (np.sort(p, axis=1) == np.arange(n)).all():
        raise InputError(f"Every row of the 'perms' parameter of {function} must be a permutation of range({n}).")
    return np.ascontiguousarray(p, dtype=np.int64)


def condensed(m: np.ndarray) -> np.ndarray:
    """``(S (S - 1) / 2,)`` upper triangle of a square matrix, row by row (SciPy's condensed order)."""
    m = np.asarray(m)
    iu = np.triu_indices(m.shape[0], 1)
    return m[iu]


def _square(c: np.ndarray, n: int, dtype: Any = np.float64) -> np.ndarray:
    """Symmetric ``(n, n)`` matrix from a condensed vector (zero diagonal)."""
    out = np.zeros((n, n), dtype=dtype)
    iu = np.triu_indices(n, 1)
    out[iu] = c
    out.T[iu] = c
    return out


def _exact_float32(x: np.ndarray) -> np.ndarray:
    """``x`` as float32 when that is exact (small integers, half-integer ranks), else float64."""
    x32 = x.astype(np.float32)
    return x32 if np.array_equal(x32.astype(np.float64), x) else np.ascontiguousarray(x, dtype=np.float64)


# ---------------------------------------------------------------------- ties and degenerate input
def centroid_distances(centroids: np.ndarray, metric: str) -> tuple[np.ndarray, float]:
    """``(S, S)`` distances between species centroids, with exact ties, and the tie tolerance.

    :func:`latent.probes.base.pairwise_distances`, then: Euclidean distances below ``1e-4`` of the
    scale are recomputed from coordinate differences (the Gram form ``|a|^2 + |b|^2 - 2 a.b`` leaves
    ``~1e-8 |a|`` of noise where ``a = b``, so identical centroids come out at different small
    distances), and :func:`snap_ties` with ``tol = REL_TOL * scale``, ``scale`` the largest distance the
    space allows (2 for cosine distance, twice the largest centroid norm for Euclidean).

    Returns
    -------
    tuple
        ``(D, tol)``: ``D`` float64 symmetric with zero diagonal.
    """
    C = np.asarray(centroids, dtype=np.float64)
    D = pairwise_distances(C, metric=metric)
    S = C.shape[0]
    if metric == "euclidean":
        scale = 2.0 * float(np.sqrt(np.einsum("ij,ij->i", C, C).max(initial=0.0)))
    else:
        scale = 2.0
    tol = REL_TOL * scale
    iu0, iu1 = np.triu_indices(S, 1)
    dc = D[iu0, iu1]
    if metric == "euclidean" and dc.size:
        small = np.flatnonzero(dc <= 1e-4 * scale)
        step = max(1, (1 << 20) // max(C.shape[1], 1))
        for start in range(0, small.size, step):
            k = small[start:start + step]
            diff = C[iu0[k]] - C[iu1[k]]
            dc[k] = np.sqrt(np.einsum("ij,ij->i", diff, diff))
    dc = snap_ties(dc, tol)
    D = np.zeros((S, S))
    D[iu0, iu1] = dc
    D[iu1, iu0] = dc
    return D, tol


def degenerate_note(embedding: np.ndarray, taxonomy: np.ndarray, n_species: int) -> str:
    """Why no statistic comparing the two condensed matrices is defined (``""`` when they are).

    ``embedding`` must come from :func:`centroid_distances` (ties exact), so "constant" is exact equality.
    """
    if embedding.size and np.ptp(embedding) == 0:
        return (f"degenerate: the embedding distances among the {n_species} species are all equal (within "
                f"{REL_TOL:g} of their scale; e.g. identical or all-zero vectors): no statistic and no test")
    if taxonomy.size and np.ptp(taxonomy) == 0:
        return (f"degenerate: the taxonomic distances among the {n_species} species are all equal (one taxon "
                "at every rank): no statistic and no test")
    return ""


#: Permutations processed together by the compiled kernel: each row segment of the fixed matrices is
#: read from memory once for all of them.
_PERM_BLOCK = 16
#: Largest number of distinct values for which the permuted matrix is stored as uint8 codes + a table.
_MAX_CODES = 256


class _PermutedMatrix:
    """The matrix whose species are permuted, prepared for the kernel.

    With at most 256 distinct off-diagonal values (taxonomic distances, their ranks) it is stored as
    ``(n, n)`` uint8 codes and a float64 table (4 MB at n = 2,000: it stays in cache while rows are
    gathered in permuted order); otherwise as a dense float32 (when exact) or float64 matrix.

    Parameters
    ----------
    xc
        Condensed values.
    n
        Number of species.
    ranks
        Replace the values by their average ranks (Spearman); ranking a permuted matrix gives the
        permuted ranks, so this is done once.
    """

    def __init__(self, xc: np.ndarray, n: int, *, ranks: bool = False) -> None:
        xc = np.asarray(xc, dtype=np.float64)
        self.n = n
        self.codes: "np.ndarray | None" = None
        self.table: "np.ndarray | None" = None
        self.dense: "np.ndarray | None" = None
        few = xc.size == 0 or np.unique(xc[:: max(1, xc.size // 4096)]).size <= _MAX_CODES
        if ranks or few:
            values, inverse, counts = np.unique(xc, return_inverse=True, return_counts=True)
            table = (np.cumsum(counts) - (counts - 1) / 2.0) if ranks else values
            self.condensed = table[inverse]
            if values.size <= _MAX_CODES:
                self.codes = _square(inverse.astype(np.uint8), n, np.uint8)
                self.table = np.ascontiguousarray(table, dtype=np.float64)
        else:
            self.condensed = xc
        if self.codes is None:
            self.dense = _exact_float32(_square(self.condensed, n))

    def matrix(self) -> np.ndarray:
        """``(n, n)`` float64 values (zero diagonal not guaranteed for coded matrices)."""
        return self.table[self.codes] if self.codes is not None else self.dense.astype(np.float64)


# ---------------------------------------------------------------------- compiled kernels
# ``prange`` is ``range`` until numba is loaded; _kernels() rebinds it to numba.prange before compiling
# the module-level kernels below (numba reads globals at compile time), so importing this module does
# not import numba and the kernels can be cached on disk.
prange = range


def _sums_coded_kernel(codes, table, ys, perms, block, out):  # pragma: no cover - compiled by numba
    n = codes.shape[0]
    n_y = ys.shape[0]
    n_perm = perms.shape[0]
    for b in prange((n_perm + block - 1) // block):
        t0 = b * block
        t1 = min(t0 + block, n_perm)
        acc = np.zeros((t1 - t0, n_y))
        buf = np.empty(n)
        for i in range(n - 1):
            m = n - 1 - i
            start = i * (n - 1) - (i * (i - 1)) // 2
            for t in range(t0, t1):
                p = perms[t]
                row = codes[p[i]]
                for jj in range(m):
                    buf[jj] = table[row[p[i + 1 + jj]]]
                for k in range(n_y):
                    s = 0.0
                    for jj in range(m):
                        s += buf[jj] * ys[k, start + jj]
                    acc[t - t0, k] += s
        for t in range(t0, t1):
            for k in range(n_y):
                out[t, k] = acc[t - t0, k]


def _sums_dense_kernel(x, ys, perms, block, out):  # pragma: no cover - compiled by numba
    n = x.shape[0]
    n_y = ys.shape[0]
    n_perm = perms.shape[0]
    for b in prange((n_perm + block - 1) // block):
        t0 = b * block
        t1 = min(t0 + block, n_perm)
        acc = np.zeros((t1 - t0, n_y))
        buf = np.empty(n)
        for i in range(n - 1):
            m = n - 1 - i
            start = i * (n - 1) - (i * (i - 1)) // 2
            for t in range(t0, t1):
                p = perms[t]
                row = x[p[i]]
                for jj in range(m):
                    buf[jj] = row[p[i + 1 + jj]]
                for k in range(n_y):
                    s = 0.0
                    for jj in range(m):
                        s += buf[jj] * ys[k, start + jj]
                    acc[t - t0, k] += s
        for t in range(t0, t1):
            for k in range(n_y):
                out[t, k] = acc[t - t0, k]


def _tau_kernel(levels, sub, pos, new_block, n_levels, perms, out):  # pragma: no cover - compiled by numba
    m = sub.shape[0]
    n_pairs = pos.shape[0]
    for t in prange(perms.shape[0]):
        p = perms[t]
        # pass 1, in row order (cache-friendly gathers): the level of every pair, stored at the pair's
        # position in the order of d
        g = np.empty(n_pairs, dtype=np.uint8)
        c = 0
        for a in range(m - 1):
            row = levels[p[sub[a]]]
            for b in range(a + 1, m):
                g[pos[c]] = row[p[sub[b]]]
                c += 1
        # pass 2, in the order of d: each pair adds #(earlier, lower level) - #(earlier, higher level);
        # pairs tied in d become "earlier" only from the next tie block on
        before = np.zeros(n_levels, dtype=np.int64)
        pending = np.zeros(n_levels, dtype=np.int64)
        s = 0
        for v in range(n_pairs):
            if new_block[v]:
                for k in range(n_levels):
                    before[k] += pending[k]
                    pending[k] = 0
            gv = g[v]
            lower = 0
            higher = 0
            for k in range(gv):
                lower += before[k]
            for k in range(gv + 1, n_levels):
                higher += before[k]
            s += lower - higher
            pending[gv] += 1
        out[t] = s


def _wranks_kernel(w, pi, pj, bx, nbx, by, nby, out):  # pragma: no cover - compiled by numba
    # per resample: the weight of each tie block of x and y, their average ranks, then the weighted
    # moments of the ranks about the mean rank (n + 1) / 2: out = n, sxy, sxx, syy
    n_pairs = pi.shape[0]
    for b in prange(w.shape[0]):
        sx = np.zeros(nbx)
        sy = np.zeros(nby)
        n = 0.0
        for p in range(n_pairs):
            W = w[b, pi[p]] * w[b, pj[p]]
            sx[bx[p]] += W
            sy[by[p]] += W
            n += W
        acc = 0.0
        for k in range(nbx):
            t = sx[k]
            sx[k] = acc + (t + 1.0) / 2.0
            acc += t
        acc = 0.0
        for k in range(nby):
            t = sy[k]
            sy[k] = acc + (t + 1.0) / 2.0
            acc += t
        m = (n + 1.0) / 2.0
        sxy = 0.0
        sxx = 0.0
        syy = 0.0
        for p in range(n_pairs):
            W = w[b, pi[p]] * w[b, pj[p]]
            if W != 0.0:
                dx = sx[bx[p]] - m
                dy = sy[by[p]] - m
                sxy += W * dx * dy
                sxx += W * dx * dx
                syy += W * dy * dy
        out[b, 0] = n
        out[b, 1] = sxy
        out[b, 2] = sxx
        out[b, 3] = syy


def _wtau_kernel(w, pi, pj, x, new_block, n_levels, out):  # pragma: no cover - compiled by numba
    # pairs in the order of y; per level the weight of earlier tie blocks: out = n, concordant - discordant
    n_pairs = pi.shape[0]
    for b in prange(w.shape[0]):
        before = np.zeros(n_levels)
        pending = np.zeros(n_levels)
        s = 0.0
        n = 0.0
        for v in range(n_pairs):
            if new_block[v]:
                for k in range(n_levels):
                    before[k] += pending[k]
                    pending[k] = 0.0
            W = w[b, pi[v]] * w[b, pj[v]]
            if W == 0.0:
                continue
            g = x[v]
            lower = 0.0
            higher = 0.0
            for k in range(g):
                lower += before[k]
            for k in range(g + 1, n_levels):
                higher += before[k]
            s += W * (lower - higher)
            pending[g] += W
            n += W
        out[b, 0] = n
        out[b, 1] = s


@functools.lru_cache(maxsize=1)
def _kernels() -> "dict[str, Any] | None":
    """The numba-compiled kernels (cached on disk), or None when numba is unavailable."""
    try:
        import numba
    except ImportError:  # pragma: no cover - numba ships with umap-learn
        log.info("numba is not installed: permutation nulls use the (slower) NumPy path")
        return None
    globals()["prange"] = numba.prange
    jit = numba.njit(parallel=True, fastmath=True, cache=True, nogil=True)
    return {"coded": jit(_sums_coded_kernel), "dense": jit(_sums_dense_kernel), "tau": jit(_tau_kernel),
            "wranks": jit(_wranks_kernel), "wtau": jit(_wtau_kernel)}


def _engine(engine: str, function: str) -> str:
    engine = _check_choice("engine", engine, _ENGINES, function)
    if engine == "auto":
        return "numba" if _kernels() is not None else "numpy"
    if engine == "numba" and _kernels() is None:
        raise InputError(f"The 'engine' parameter of {function} is 'numba' but numba is not installed; "
                         "use engine='numpy' or install numba.")
    return engine


def _pair_sums(x: _PermutedMatrix, ys: np.ndarray, perms: np.ndarray, engine: str = "auto") -> np.ndarray:
    """:func:`permuted_pair_sums` on a prepared matrix and checked ``(P, n)`` int64 permutations."""
    ys = np.ascontiguousarray(np.atleast_2d(ys), dtype=np.float64)
    out = np.zeros((perms.shape[0], ys.shape[0]))
    if perms.shape[0] == 0:
        return out
    perms = np.ascontiguousarray(perms, dtype=np.int64)
    if _engine(engine, "permuted_pair_sums") == "numba":
        kernels = _kernels()
        if x.codes is not None:
            kernels["coded"](x.codes, x.table, ys, perms, _PERM_BLOCK, out)
        else:
            kernels["dense"](x.dense, ys, perms, _PERM_BLOCK, out)
        return out
    xk = x.matrix()
    iu0, iu1 = np.triu_indices(x.n, 1)
    for t, p in enumerate(perms):
        out[t] = ys @ xk[p[iu0], p[iu1]]
    return out


def permuted_pair_sums(x: np.ndarray, ys: np.ndarray, perms: np.ndarray, *, engine: str = "auto") -> np.ndarray:
    """``Q[t, k] = sum_{i<j} x[p_i, p_j] * ys[k][(i, j)]`` for every permutation ``p = perms[t]``.

    The building block of every permutation null here: the rows and columns of ``x`` are permuted
    together (whole species move) and paired with the fixed condensed matrices ``ys``. The compiled
    kernel works on blocks of 16 permutations at a time (each segment of ``ys`` is read once per
    block) and stores ``x`` as uint8 codes when it has at most 256 distinct values.

    Parameters
    ----------
    x
        ``(n, n)`` symmetric matrix (only ``i != j`` entries are read).
    ys
        ``(k, n (n - 1) / 2)`` condensed matrices in SciPy's order (row by row of the upper triangle).
    perms
        ``(P, n)`` permutations of ``range(n)``.
    engine
        ``"auto"`` (numba when installed), ``"numba"`` or ``"numpy"``.

    Returns
    -------
    numpy.ndarray
        ``(P, k)`` float64.
    """
    x = np.asarray(x, dtype=np.float64)
    if x.ndim != 2 or x.shape[0] != x.shape[1]:
        raise InputError(f"The 'x' parameter of permuted_pair_sums must be a square matrix; got shape {x.shape}.")
    n = x.shape[0]
    ys = np.atleast_2d(np.asarray(ys, dtype=np.float64))
    if ys.ndim != 2 or ys.shape[1] != n * (n - 1) // 2:
        raise InputError(f"The 'ys' parameter of permuted_pair_sums must hold condensed ({n} x {n}) matrices "
                         f"of length {n * (n - 1) // 2}; got shape {ys.shape}.")
    perms = _check_perms(perms, n, "permuted_pair_sums")
    return _pair_sums(_PermutedMatrix(condensed(x), n), ys, perms, engine)


def _pvalue(r: float, null: np.ndarray, alternative: str) -> float:
    """skbio's Mantel p-value (two-sided: ``|null| >= |r|``), ties within TIE_TOL counted."""
    if np.isnan(r) or null.size == 0:
        return float("nan")
    if alternative == "greater":
        hits = np.count_nonzero(null >= r - TIE_TOL)
    elif alternative == "less":
        hits = np.count_nonzero(null <= r + TIE_TOL)
    else:
        hits = np.count_nonzero(np.abs(null) >= abs(r) - TIE_TOL)
    return float((hits + 1) / (null.size + 1))


# ---------------------------------------------------------------------- Mantel
class MantelResult(NamedTuple):
    """Result of :func:`mantel`: ``r, p_value, n, null`` (unpacks as a 4-tuple)."""

    r: float
    p_value: float
    n: int
    null: np.ndarray


class PermutedCorrelation:
    """Pearson (or Spearman) correlations ``corr(x[p][:, p], y)`` for many permutations ``p`` of ``x``'s species.

    ``x`` and ``y`` are condensed; ``method="spearman"`` ranks both once (a permutation of species only
    reorders the condensed entries, so the ranks of the permuted ``x`` are the permuted ranks).
    """

    def __init__(self, xc: np.ndarray, yc: np.ndarray, n: int, method: str) -> None:
        spearman = method == "spearman"
        self.x = _PermutedMatrix(xc, n, ranks=spearman)
        xc = self.x.condensed
        yc = average_ranks(yc) if spearman else np.asarray(yc, dtype=np.float64)
        self.n = n
        self.constant = bool(np.ptp(xc) == 0 or np.ptp(yc) == 0)
        self.xmean = float(xc.mean())
        self.xnorm = float(np.linalg.norm(xc - self.xmean))
        ycen = yc - yc.mean()
        self.ynorm = float(np.linalg.norm(ycen))
        self.y = ycen / self.ynorm if self.ynorm > 0 else ycen
        self.ysum = float(self.y.sum())

    def from_sums(self, sums: np.ndarray) -> np.ndarray:
        """Correlations from ``_pair_sums(self.x, self.y, perms)``."""
        if self.constant:
            return np.full(sums.shape, np.nan)
        return np.clip((sums - self.xmean * self.ysum) / self.xnorm, -1.0, 1.0)

    def __call__(self, perms: np.ndarray, engine: str = "auto") -> np.ndarray:
        if self.constant:
            return np.full(perms.shape[0], np.nan)
        return self.from_sums(_pair_sums(self.x, self.y[None, :], perms, engine)[:, 0])


def mantel(
    x: Any,
    y: Any,
    *,
    method: str = "pearson",
    permutations: int = 999,
    seed: "int | np.random.Generator" = 0,
    alternative: str = "greater",
    perms: "np.ndarray | None" = None,
    engine: str = "auto",
) -> MantelResult:
    """Mantel test between two distance matrices, permuting whole species of ``x``.

    Same statistic and p-value as ``skbio.stats.distance.mantel(x, y, method, permutations,
    alternative)``: ``r`` is the Pearson (or Spearman) correlation of the condensed matrices; each
    permutation ``p`` reorders the rows and columns of ``x`` together (``x[p][:, p]``); the p-value is
    ``(1 + #{null at least as extreme as r}) / (1 + permutations)`` (``"two-sided"``: ``|null| >=
    |r|``, as skbio). With an integer ``seed`` the permutations are those skbio draws for the same seed
    (``rng.permutation(S)`` repeated), so the p-values match skbio's exactly.

    Parameters
    ----------
    x, y
        ``(S, S)`` symmetric distance matrices with zero diagonal, species in the same order; ``S >= 3``.
    method
        ``"pearson"`` or ``"spearman"``.
    permutations
        Number of permutations (0: no test, ``p_value`` NaN). Ignored when ``perms`` is given.
    seed
        Seed or ``numpy.random.Generator`` of the permutations.
    alternative
        ``"greater"`` (default: the taxonomy predicts a positive correlation), ``"less"`` or ``"two-sided"``.
    perms
        ``(P, S)`` explicit permutations (e.g. :func:`latent.probes.base.species_permutations`).
    engine
        ``"auto"``, ``"numba"`` or ``"numpy"`` (see :func:`permuted_pair_sums`).

    Returns
    -------
    MantelResult
        ``r`` (float), ``p_value`` (float), ``n`` (S), ``null`` (``(P,)`` float64 permuted statistics).
        ``r`` and ``p_value`` are NaN (logged) when either matrix is constant.
    """
    method = _check_choice("method", method, _METHODS, "mantel")
    alternative = _check_choice("alternative", alternative, _ALTERNATIVES, "mantel")
    X = _check_distance_matrix("x", x)
    Y = _check_distance_matrix("y", y)
    if X.shape != Y.shape:
        raise InputError(f"The 'x' and 'y' parameters of mantel must have the same shape; got {X.shape} and {Y.shape}.")
    n = X.shape[0]
    if n < 3:
        raise InputError(f"mantel needs distance matrices of at least 3 species; got {n}.")
    if perms is None:
        if isinstance(permutations, bool) or not isinstance(permutations, (int, np.integer)) or permutations < 0:
            raise InputError(f"The 'permutations' parameter of mantel must be an integer >= 0. Got {permutations!r}.")
        rng = seed if isinstance(seed, np.random.Generator) else np.random.default_rng(seed)
        perms = np.array([rng.permutation(n) for _ in range(int(permutations))], dtype=np.int64).reshape(-1, n)
    else:
        perms = _check_perms(perms, n, "mantel")
    corr = PermutedCorrelation(condensed(X), condensed(Y), n, method)
    if corr.constant:
        log.warning("mantel: a distance matrix is constant; the correlation is undefined (NaN)")
        return MantelResult(float("nan"), float("nan"), n, np.full(perms.shape[0], np.nan))
    identity = np.arange(n, dtype=np.int64)[None, :]
    stats = corr(np.vstack([identity, perms]), engine)
    r, null = float(stats[0]), stats[1:]
    return MantelResult(r, _pvalue(r, null, alternative), n, null)


# ---------------------------------------------------------------------- species bootstrap
def _in_row_chunks(fn: Callable[[np.ndarray], np.ndarray], w: np.ndarray, per_row: int) -> np.ndarray:
    """``fn`` applied to row blocks of ``w`` holding at most ~4M ``per_row``-sized temporaries, stacked."""
    step = max(1, (1 << 22) // int(per_row)) if per_row > 0 else max(w.shape[0], 1)
    return np.concatenate([np.asarray(fn(w[i:i + step]), dtype=np.float64) for i in range(0, w.shape[0], step)])


def _pearson_statistic(a: np.ndarray, b: np.ndarray) -> Callable[[np.ndarray], np.ndarray]:
    """Weights ``(c, S)`` -> ``(c,)`` Pearson r of the condensed ``a``, ``b`` over the pairs of each resample.

    A resample draws ``S`` species with replacement; its pairs are the pairs of draws of two different
    species (pairs of two copies of one species would be spurious zero-distance pairs), so a pair
    ``(i, j)`` counts ``w_i * w_j`` times, ``w`` the draw counts. All moments are quadratic forms
    ``w^T M w`` (a matrix product per chunk of resamples).
    """
    n = a.shape[0]
    off = ~np.eye(n, dtype=bool)
    A = np.where(off, a - condensed(a).mean(), 0.0)
    B = np.where(off, b - condensed(b).mean(), 0.0)

    def statistic(w: np.ndarray) -> np.ndarray:
        q = [0.5 * np.einsum("bi,bi->b", w @ m, w) for m in (A, B)]
        for x, y in ((A, A), (B, B), (A, B)):
            q.append(0.5 * np.einsum("bi,bi->b", w @ (x * y), w))
        sa, sb, saa, sbb, sab = q
        total = 0.5 * (w.sum(axis=1) ** 2 - (w * w).sum(axis=1))
        with np.errstate(invalid="ignore", divide="ignore"):
            cov = sab - sa * sb / total
            va = saa - sa * sa / total
            vb = sbb - sb * sb / total
            r = cov / np.sqrt(va * vb)
        r[~np.isfinite(r) | (va <= 1e-12 * np.abs(saa)) | (vb <= 1e-12 * np.abs(sbb))] = np.nan
        return np.clip(r, -1.0, 1.0)

    return statistic


def _double_centred(m: np.ndarray) -> np.ndarray:
    return m - m.mean(axis=0) - m.mean(axis=1)[:, None] + m.mean()


def _cka_statistic(G: np.ndarray, L: np.ndarray) -> Callable[[np.ndarray], np.ndarray]:
    """Weights ``(c, S)`` -> ``(c,)`` linear CKA of each resample, pairs of two copies of a species left out.

    ``G`` and ``L`` are ``(S, S)`` linear kernels (Gram matrices of the two feature sets). A resample is
    the data set of its ``n = sum(w)`` draws, centred with its own means (``Kc = H K H`` over the draws);
    CKA is ``<Kc, Lc> / (||Kc|| ||Lc||)`` where, as in the pair statistics, the entries of two copies of
    one species are left out: a copy pair is a second diagonal entry (``Kc_ii Lc_ii >= 0``), so keeping
    it would inflate CKA (each species drawn twice doubles its diagonal weight). Entry ``(i, j)`` of the
    species matrices weighs ``w_i w_j`` off the diagonal and ``w_i`` on it:
    ``<A, B>_w = w'(A o B)w - sum_i (w_i^2 - w_i) A_ii B_ii`` with ``A = H K H`` written through ``Kw``
    and ``w'Kw`` (``o`` elementwise). With every ``w_i = 1`` this is the CKA of the species.
    NaN where either kernel is constant on the resample.
    """
    dG, dL = np.diag(G).copy(), np.diag(L).copy()

    def statistic(w: np.ndarray) -> np.ndarray:
        n = w.sum(axis=1)
        extra = w * w - w  # copy pairs per species

        def parts(M: np.ndarray, dM: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
            Mw = w @ M
            wMw = np.einsum("bi,bi->b", w, Mw)
            diag = dM[None, :] - 2.0 * Mw / n[:, None] + (wMw / n ** 2)[:, None]  # (H M H)_ii
            return Mw, wMw, diag

        pg, pl = parts(G, dG), parts(L, dL)

        def inner(A: np.ndarray, pa: tuple, B: np.ndarray, pb: tuple) -> tuple[np.ndarray, np.ndarray]:
            (Aw, wAw, da), (Bw, wBw, db) = pa, pb
            q = np.einsum("bi,bi->b", w @ (A * B), w)
            full = q - 2.0 / n * np.einsum("bi,bi,bi->b", w, Aw, Bw) + wAw * wBw / n ** 2
            return full - np.einsum("bi,bi,bi->b", extra, da, db), q

        kl, _ = inner(G, pg, L, pl)
        kk, qk = inner(G, pg, G, pg)
        ll, ql = inner(L, pl, L, pl)
        with np.errstate(invalid="ignore", divide="ignore"):
            cka = kl / np.sqrt(kk * ll)
        cka[~np.isfinite(cka) | (kk <= 1e-12 * np.abs(qk)) | (ll <= 1e-12 * np.abs(ql))] = np.nan
        return np.clip(cka, 0.0, 1.0)

    return statistic


class _PairRanks:
    """Weights ``(c, S)`` -> ``(c, 2)`` Spearman r and rho-a of condensed ``x``, ``y`` over each resample's pairs.

    The pairs of a resample are those of :func:`_pearson_statistic` (pair ``(i, j)`` counted ``w_i w_j``
    times); both are ranked among themselves (average ranks of the multiset: the weight of the tie
    blocks below plus half the block), which is what ranking the expanded vectors gives. ``O(pairs)``
    per resample (compiled kernel, or NumPy).
    """

    def __init__(self, xc: np.ndarray, yc: np.ndarray, n: int, engine: str = "auto") -> None:
        self.pi, self.pj = (a.astype(np.int64) for a in np.triu_indices(n, 1))
        self.engine = engine
        self.blocks = []
        for v in (np.asarray(xc, dtype=np.float64), np.asarray(yc, dtype=np.float64)):
            _, inverse = np.unique(v, return_inverse=True)
            inverse = inverse.ravel().astype(np.int64)
            order = np.argsort(inverse, kind="stable")
            starts = np.flatnonzero(np.r_[True, np.diff(inverse[order]) != 0])
            self.blocks.append((order, starts, inverse, int(inverse.max(initial=-1)) + 1))

    def _ranks(self, W: np.ndarray, k: int) -> np.ndarray:
        order, starts, inverse, _ = self.blocks[k]
        sums = np.add.reduceat(W[:, order], starts, axis=1)
        mid = np.cumsum(sums, axis=1) - sums + (sums + 1.0) / 2.0
        return mid[:, inverse]

    def _moments(self, w: np.ndarray) -> np.ndarray:
        """``(c, 4)``: pairs ``n`` and the weighted ``sxy``, ``sxx``, ``syy`` of the ranks about ``(n + 1) / 2``."""
        if _engine(self.engine, "the rank bootstrap") == "numba":
            out = np.zeros((w.shape[0], 4))
            (_, _, bx, nbx), (_, _, by, nby) = self.blocks
            _kernels()["wranks"](np.ascontiguousarray(w, dtype=np.float64), self.pi, self.pj, bx, nbx, by, nby, out)
            return out
        W = w[:, self.pi] * w[:, self.pj]
        n = W.sum(axis=1)
        rx, ry = self._ranks(W, 0), self._ranks(W, 1)
        m = ((n + 1.0) / 2.0)[:, None]  # the weighted mean of either rank vector
        return np.column_stack([n, np.einsum("bp,bp->b", W, (rx - m) * (ry - m)),
                                np.einsum("bp,bp->b", W, (rx - m) ** 2), np.einsum("bp,bp->b", W, (ry - m) ** 2)])

    def __call__(self, w: np.ndarray) -> np.ndarray:
        compiled = _engine(self.engine, "the rank bootstrap") == "numba"  # O(pairs) memory per thread
        n, sxy, sxx, syy = _in_row_chunks(self._moments, w, 0 if compiled else 8 * self.pi.size).reshape(-1, 4).T
        with np.errstate(invalid="ignore", divide="ignore"):
            r = sxy / np.sqrt(sxx * syy)
            rho = 12.0 * sxy / (n ** 3 - n)
        bad = ~np.isfinite(r) | (sxx <= 1e-12 * n ** 3) | (syy <= 1e-12 * n ** 3)
        r[bad] = np.nan
        rho[bad | (n < 2)] = np.nan
        return np.column_stack([np.clip(r, -1.0, 1.0), rho])



#: Public name of :class:`_PairRanks` (used by the text-side probes).
PairRanks = _PairRanks

class _PairTau:
    """Weights ``(c, S)`` -> ``(c,)`` Kendall tau-a of condensed ``x`` (at most 255 levels) and ``y`` over
    each resample's pairs (weighted as in :class:`_PairRanks`): ``sum_{p<q} W_p W_q sign(x_p - x_q)
    sign(y_p - y_q) / (n (n - 1) / 2)`` with ``n = sum W``. Pairs are sorted by ``y`` once; per level of
    ``x`` a running sum of the weight of earlier tie blocks gives the concordant minus discordant weight.
    """

    def __init__(self, xc: np.ndarray, yc: np.ndarray, n: int, engine: str = "auto") -> None:
        pi, pj = np.triu_indices(n, 1)
        levels, x = np.unique(np.asarray(xc), return_inverse=True)
        if levels.size > 255:
            raise InputError(f"tau-a of a resample needs at most 255 distinct taxonomy values; got {levels.size}.")
        y = np.asarray(yc, dtype=np.float64)
        order = np.argsort(y, kind="stable")
        ys = y[order]
        self.engine = engine
        self.pi, self.pj = pi[order].astype(np.int64), pj[order].astype(np.int64)
        self.x = x.ravel()[order].astype(np.int64)
        new = np.r_[True, ys[1:] != ys[:-1]]
        self.new_block = new.astype(np.uint8)
        self.block_start = np.maximum.accumulate(np.where(new, np.arange(ys.size), 0))
        self.n_levels = int(levels.size)

    def _sums(self, w: np.ndarray) -> np.ndarray:
        """``(c, 2)``: pairs ``n`` and concordant minus discordant weight."""
        if _engine(self.engine, "the tau-a bootstrap") == "numba":
            out = np.zeros((w.shape[0], 2))
            _kernels()["wtau"](np.ascontiguousarray(w, dtype=np.float64), self.pi, self.pj, self.x,
                               self.new_block, self.n_levels, out)
            return out
        W = w[:, self.pi] * w[:, self.pj]
        s = np.zeros(w.shape[0])
        for k in range(self.n_levels):
            Wk = np.where(self.x == k, W, 0.0)
            before = (np.cumsum(Wk, axis=1) - Wk)[:, self.block_start]  # weight of level k in earlier blocks
            sign = np.sign(self.x - k).astype(np.float64)  # +1: k is lower (concordant), -1: higher
            s += np.einsum("bp,bp->b", W, before * sign)
        return np.column_stack([W.sum(axis=1), s])

    def __call__(self, w: np.ndarray) -> np.ndarray:
        compiled = _engine(self.engine, "the tau-a bootstrap") == "numba"
        n, s = _in_row_chunks(self._sums, w, 0 if compiled else 4 * self.pi.size).reshape(-1, 2).T
        with np.errstate(invalid="ignore", divide="ignore"):
            tau = s / (n * (n - 1.0) / 2.0)
        tau[~np.isfinite(tau)] = np.nan
        return np.clip(tau, -1.0, 1.0)


def species_cis(statistic: Callable[[np.ndarray], np.ndarray], n_species: int, n_stats: int, *,
                n_boot: int, seed: int) -> list[tuple[float, float, str]]:
    """Cluster-bootstrap CIs over species (:func:`latent.stats.cluster_ci`) of ``n_stats`` statistics
    computed together.

    ``statistic`` maps ``(c, n_species)`` weights to ``(c, n_stats)`` values (NaN where undefined); it is
    called once per chunk of resamples, each :func:`~latent.stats.cluster_ci` call reading its column.

    Returns
    -------
    list
        ``(low, high, ci_note)`` per statistic: NaN bounds and a note below
        :data:`latent.stats.MIN_CLUSTERS` species or with ``n_boot = 0``.
    """
    cache: dict[tuple, np.ndarray] = {}

    def column(j: int) -> Callable[[np.ndarray], np.ndarray]:
        def f(w: np.ndarray) -> np.ndarray:
            key = (w.shape, hashlib.blake2b(np.ascontiguousarray(w).tobytes(), digest_size=16).digest())
            if key not in cache:
                cache[key] = np.asarray(statistic(w), dtype=np.float64).reshape(w.shape[0], n_stats)
            return cache[key][:, j]
        return f

    return [cluster_ci(column(j), int(n_species), n_boot=int(n_boot), seed=int(seed), unit="species")
            for j in range(n_stats)]


# ---------------------------------------------------------------------- CKA, RSA
def linear_cka(X: np.ndarray, Z: np.ndarray) -> float:
    """Linear CKA (Kornblith et al. 2019) between feature matrices ``X (S, d)`` and ``Z (S, f)``.

    ``||Zc^T Xc||_F^2 / (||Xc^T Xc||_F ||Zc^T Zc||_F)`` with column-centred ``Xc``, ``Zc``; in [0, 1].
    NaN when either matrix is constant over the rows (``||Xc||_F <= 1e-12 ||X||_F``: what is left after
    centring is rounding), since the centred kernel is then zero (or rounding noise) and CKA 0/0.
    """
    X = np.asarray(X, dtype=np.float64)
    Z = np.asarray(Z, dtype=np.float64)
    if X.ndim != 2 or Z.ndim != 2 or X.shape[0] != Z.shape[0]:
        raise InputError(f"linear_cka needs two (S, d) matrices with the same S; got {X.shape} and {Z.shape}.")
    Xc = X - X.mean(axis=0)
    Zc = Z - Z.mean(axis=0)
    for M, Mc in ((X, Xc), (Z, Zc)):
        if np.linalg.norm(Mc) <= REL_TOL * np.linalg.norm(M) or not np.linalg.norm(Mc) > 0:
            return float("nan")
    num = np.linalg.norm(Zc.T @ Xc) ** 2
    den = np.linalg.norm(Xc.T @ Xc) * np.linalg.norm(Zc.T @ Zc)
    return float(np.clip(num / den, 0.0, 1.0)) if den > 0 else float("nan")


def taxonomy_features(codes: np.ndarray) -> np.ndarray:
    """``(S, sum of nodes)`` one-hot of every rank stacked; its Gram matrix counts shared ranks (``7 - T``)."""
    codes = np.asarray(codes)
    blocks = []
    for r in range(codes.shape[1]):
        _, inverse = np.unique(codes[:, r], return_inverse=True)
        block = np.zeros((codes.shape[0], int(inverse.max()) + 1))
        block[np.arange(codes.shape[0]), inverse] = 1.0
        blocks.append(block)
    return np.hstack(blocks)


def kendall_tau_a(x: np.ndarray, y: np.ndarray) -> float:
    """Kendall's tau-a, ``(concordant - discordant) / (N (N - 1) / 2)``: pairs tied in either count 0.

    Computed from SciPy's tau-b and the tie counts (``O(N log N)``):
    ``tau_a = tau_b sqrt((n0 - n1)(n0 - n2)) / n0``.
    """
    from scipy.stats import kendalltau

    x = np.asarray(x, dtype=np.float64).ravel()
    y = np.asarray(y, dtype=np.float64).ravel()
    if x.shape != y.shape or x.size < 2:
        raise InputError(f"kendall_tau_a needs two vectors of the same length >= 2; got {x.shape} and {y.shape}.")
    n0 = x.size * (x.size - 1) / 2

    def ties(v: np.ndarray) -> float:
        _, counts = np.unique(v, return_counts=True)
        return float((counts * (counts - 1) / 2).sum())

    n1, n2 = ties(x), ties(y)
    if n1 == n0 or n2 == n0:
        return 0.0
    tau_b = kendalltau(x, y, variant="b").statistic
    return float(np.clip(tau_b * np.sqrt((n0 - n1) * (n0 - n2)) / n0, -1.0, 1.0))


def rho_a(x: np.ndarray, y: np.ndarray) -> float:
    """rho-a: ``12 sum (r_x - m)(r_y - m) / (N^3 - N)`` of average ranks (Spearman without tie correction)."""
    rx = average_ranks(np.asarray(x, dtype=np.float64).ravel())
    ry = average_ranks(np.asarray(y, dtype=np.float64).ravel())
    n = rx.size
    m = (n + 1) / 2
    return float(12.0 * np.dot(rx - m, ry - m) / (n ** 3 - n))


class _TauA:
    """Kendall tau-a between fixed distances ``d`` and the permuted taxonomy ``t[p][:, p]``.

    ``t`` and ``d`` are ``(S, S)``; with ``subset`` only the pairs of those species enter (the
    permutations still act on all ``S`` species, so the subset takes the lineages the permutation gives it).

    Pairs are sorted by ``d`` once; for a permutation, the level of every pair is gathered in row
    order and stored at the pair's position in that sorted order, then a pass in sorted order keeps
    counts of the levels already seen (ties in ``d`` are committed at the end of their block), so each
    pair adds ``#(earlier, lower level) - #(earlier, higher level)``: ``O(N * levels)`` per permutation.
    """

    def __init__(self, t: np.ndarray, d: np.ndarray, subset: "np.ndarray | None" = None) -> None:
        n = t.shape[0]
        values, inverse = np.unique(condensed(t), return_inverse=True)
        self.n_levels = int(values.size)
        if self.n_levels > 255:
            raise InputError(f"tau-a against a permuted matrix needs at most 255 distinct values; got {self.n_levels}.")
        level = np.zeros((n, n), dtype=np.uint8)  # at most 8 levels (LCA heights 0..7)
        iu0, iu1 = np.triu_indices(n, 1)
        level[iu0, iu1] = inverse
        level[iu1, iu0] = inverse
        self.levels = level
        sub = np.arange(n) if subset is None else np.asarray(subset, dtype=np.int64)
        dc = condensed(d[np.ix_(sub, sub)])
        s0, s1 = np.triu_indices(sub.size, 1)
        order = np.argsort(dc, kind="stable")
        self.sub = np.ascontiguousarray(sub, dtype=np.int64)
        self.pos = np.empty(dc.size, dtype=np.int32 if dc.size < 2**31 else np.int64)
        self.pos[order] = np.arange(dc.size)
        self.pi = sub[s0[order]].astype(np.int64)
        self.pj = sub[s1[order]].astype(np.int64)
        ds = dc[order]
        new_block = np.r_[True, ds[1:] != ds[:-1]]
        self.new_block = new_block.astype(np.uint8)
        self.block_start = np.maximum.accumulate(np.where(new_block, np.arange(ds.size), 0)).astype(np.int64)
        self.n_pairs = int(dc.size)
        self.total = self.n_pairs * (self.n_pairs - 1) / 2

    def __call__(self, perms: np.ndarray, engine: str = "auto") -> np.ndarray:
        perms = np.ascontiguousarray(perms, dtype=np.int64)
        out = np.zeros(perms.shape[0], dtype=np.int64)
        if self.n_pairs < 2 or perms.shape[0] == 0:
            return np.full(perms.shape[0], np.nan)
        if _engine(engine, "tau-a") == "numba":
            _kernels()["tau"](self.levels, self.sub, self.pos, self.new_block, self.n_levels, perms, out)
        else:
            start = self.block_start
            for t, p in enumerate(perms):
                g = self.levels[p[self.pi], p[self.pj]].astype(np.int64)
                s = 0
                for k in range(self.n_levels):
                    ind = (g == k).astype(np.int64)
                    before = (np.cumsum(ind) - ind)[start]
                    s += int(np.dot(np.sign(g - k), before))
                out[t] = s
        return out / self.total


# ---------------------------------------------------------------------- species sampling
def species_distances(data: ProbeData, species: np.ndarray) -> np.ndarray:
    """``(m, m)`` uint8 taxonomic distances of the species ``species`` (all of them: ``data.species_distances()``)."""
    from latent.taxonomy import lca_height

    if species.size == data.n_species:
        return data.species_distances()
    return lca_height(data.codes[species], data.codes[species])


def centroid_species(data: ProbeData, options: ProbeOptions, probe: str) -> np.ndarray:
    """The species a centroid-pair probe uses: all, or a stratified seeded sample when their pairs
    exceed ``options.max_pairs`` (logged). Raises when fewer than 3 species remain."""
    S_total = data.n_species
    species = stratified_species(S_total, max_items_for_pairs(options.max_pairs), options.seed)
    if species.size < 3:
        raise InputError(f"The {probe} probe needs at least 3 species; got {species.size}.")
    if species.size < S_total:
        log.info("%s: %d species give %d pairs > max_pairs %d; using a stratified sample of %d species",
                 probe, S_total, S_total * (S_total - 1) // 2, options.max_pairs, species.size)
    return species


# ---------------------------------------------------------------------- the probe
def probe_alignment(data: ProbeData, options: ProbeOptions) -> ProbeResult:
    """Mantel (Pearson, Spearman), linear CKA and RSA (tau-a, rho-a) of centroids against the taxonomy.

    Probe settings (``options.for_probe("alignment")``): ``n_boot`` (1000) species-bootstrap resamples
    for the CIs of the Pearson Mantel r and CKA (quadratic forms of the resampling weights: cheap);
    ``n_boot_rank`` (``min(n_boot, 200)``) resamples for the CIs of the rank statistics (Spearman
    Mantel r, rho-a, tau-a: every resample ranks its pairs); 0 turns a CI off. ``tau_max_pairs``
    (500,000) pairs above which tau-a is computed on a stratified species sample.

    Parameters
    ----------
    data
        Embeddings and taxonomy; the species centroids ``(S, d)`` are used.
    options
        ``distance`` (centroid distance; also the CKA kernel, see the module notes), ``permutations``,
        ``seed``, ``max_pairs`` (species pairs above which a stratified species sample is used).

    Returns
    -------
    ProbeResult
        Rows (rank ``"all"``): ``mantel_r_pearson``, ``mantel_r_spearman``, ``mantel_p`` (the Pearson
        Mantel p-value as the value), ``cka_taxonomy``, ``rsa_rho_a``, ``rsa_tau_a``, each statistic
        with a species-bootstrap CI and null columns from the same species permutations; ``n`` species
        used, ``pairs`` species pairs, ``n_species`` (species behind the value), ``n_taxa`` (for
        ``all``: the species), ``ci_note`` (why there is no CI), ``degenerate`` and ``note`` (why no
        statistic is defined: all embedding, or all taxonomic, distances tied). ``tables["null"]``
        (rank, metric, permutation, value); ``arrays``: ``centroid_distances`` ``(S, S)`` float32,
        ``taxonomic_distances`` ``(S, S)`` uint8, ``species`` ``(S,)`` indices used.
    """
    settings = options.for_probe("alignment")
    n_boot = int_setting(settings, "n_boot", DEFAULT_N_BOOT, "alignment")
    tau_max_pairs = int_setting(settings, "tau_max_pairs", 500_000, "alignment")
    n_boot_rank = int_setting(settings, "n_boot_rank", min(n_boot, DEFAULT_N_BOOT_EXPENSIVE), "alignment")
    S_total = data.n_species
    species = centroid_species(data, options, "alignment")
    S = int(species.size)
    started = time.perf_counter()
    centroids = data.centroids[species]
    T = species_distances(data, species)
    D, tol = centroid_distances(centroids, options.distance)
    n_pairs = S * (S - 1) // 2
    perms = np.array(list(species_permutations(S, options.permutations, options.seed)), dtype=np.int64).reshape(-1, S)
    all_perms = np.vstack([np.arange(S, dtype=np.int64)[None, :], perms])
    tc, dc = condensed(T).astype(np.float64), condensed(D)
    note = degenerate_note(dc, tc, S)

    # One pass of the kernel with x = T serves the Pearson Mantel and CKA; one with x = ranks of T the
    # Spearman Mantel and rho-a (rho-a is the Spearman statistic times a constant for fixed data).
    pearson = PermutedCorrelation(tc, dc, S, "pearson")
    spearman = PermutedCorrelation(tc, dc, S, "spearman")
    K = centroids / np.linalg.norm(centroids, axis=1, keepdims=True) if options.distance == "cosine" else centroids
    Kc = K - K.mean(axis=0)
    # double-centred linear kernel, centred once more as a matrix so that its sum is 0 to rounding of
    # its own size (not of the centroids': with near-constant centroids the two differ by many orders)
    gram = _double_centred(Kc @ Kc.T)
    L = 7.0 - T.astype(np.float64)
    Lc = _double_centred(L)
    cka_den = float(np.linalg.norm(gram) * np.linalg.norm(Lc))
    if note:
        log.warning("alignment: %s", note)
        sums_t = np.full((all_perms.shape[0], 2), np.nan)
        sums_r = np.full((all_perms.shape[0], 1), np.nan)
    else:
        sums_t = _pair_sums(pearson.x, np.vstack([pearson.y, condensed(gram)]), all_perms)
        sums_r = _pair_sums(spearman.x, spearman.y[None, :], all_perms)
    r_pearson = pearson.from_sums(sums_t[:, 0])
    r_spearman = spearman.from_sums(sums_r[:, 0])
    # <Kc, L_p>_F = 7 * sum(Kc) - 2 sum_{i<j} Kc_ij T_p,ij  with sum(Kc) = 0 (centred; T has a zero diagonal)
    with np.errstate(invalid="ignore", divide="ignore"):
        cka = (np.clip(-2.0 * sums_t[:, 1] / cka_den, 0.0, 1.0) if cka_den > 0 and not note
               else np.full(all_perms.shape[0], np.nan))
    rho_scale = spearman.xnorm * spearman.ynorm * 12.0 / (n_pairs ** 3 - n_pairs) if n_pairs > 1 else np.nan
    rho = r_spearman * rho_scale

    # tau-a on its own species sample when the pairs exceed tau_max_pairs (same permutations).
    tau_idx = stratified_species(S, max(max_items_for_pairs(tau_max_pairs), 3), options.seed)
    if tau_idx.size < S:
        log.info("alignment: tau-a on a stratified sample of %d of %d species (tau_max_pairs %d)",
                 tau_idx.size, S, tau_max_pairs)
    tau = (_TauA(T, D, tau_idx)(all_perms) if not note else np.full(all_perms.shape[0], np.nan))

    # Species-bootstrap CIs (cluster bootstrap: whole species resampled, see the module notes).
    m_tau = int(tau_idx.size)
    no_ci = (float("nan"), float("nan"), "no CI: " + note.split(":")[0] + " input" if note else "")
    cis: dict[str, tuple[float, float, str]] = {}
    if note:
        cis = {m: no_ci for m in ("mantel_r_pearson", "cka_taxonomy", "mantel_r_spearman", "rsa_rho_a", "rsa_tau_a")}
    else:
        pearson_stat = _pearson_statistic(T.astype(np.float64), D)
        cka_stat = _cka_statistic(Kc @ Kc.T, L)
        lin = species_cis(lambda w: np.column_stack([pearson_stat(w), cka_stat(w)]), S, 2,
                          n_boot=int(n_boot), seed=options.seed)
        ranks = species_cis(_PairRanks(tc, dc, S), S, 2, n_boot=int(n_boot_rank), seed=options.seed)
        T_tau = T[np.ix_(tau_idx, tau_idx)]
        D_tau = D[np.ix_(tau_idx, tau_idx)]
        tau_ci = species_cis(_PairTau(condensed(T_tau), condensed(D_tau), m_tau), m_tau, 1,
                             n_boot=int(n_boot_rank), seed=options.seed)
        cis = {"mantel_r_pearson": lin[0], "cka_taxonomy": lin[1], "mantel_r_spearman": ranks[0],
               "rsa_rho_a": ranks[1], "rsa_tau_a": tau_ci[0]}

    p_pearson = _pvalue(float(r_pearson[0]), r_pearson[1:], "greater")
    extra = {"pairs": n_pairs, "distance": options.distance, "degenerate": bool(note), "note": note}
    rows: list[dict[str, Any]] = []
    nulls: list[pd.DataFrame] = []
    has_null = perms.shape[0] > 0
    for metric, values, n_sp, pairs in (
        ("mantel_r_pearson", r_pearson, S, n_pairs),
        ("mantel_r_spearman", r_spearman, S, n_pairs),
        ("cka_taxonomy", cka, S, n_pairs),
        ("rsa_rho_a", rho, S, n_pairs),
        ("rsa_tau_a", tau, m_tau, m_tau * (m_tau - 1) // 2),
    ):
        observed = float(values[0])
        null = tie_null(values[1:], observed, atol=TIE_TOL) if has_null else None
        low, high, ci_note = cis[metric]
        rows.append(null_row("all", metric, observed, null, n_sp, alternative="greater", ci=(low, high),
                             **{**extra, "pairs": pairs, "n_species": n_sp, "n_taxa": n_sp, "ci_note": ci_note}))
        if has_null:
            nulls.append(null_frame("all", metric, null))
        if metric == "mantel_r_pearson":
            row = null_row("all", "mantel_p", p_pearson, None, S,
                           **{**extra, "n_species": S, "n_taxa": S, "ci_note": "a p-value: no CI"})
            row["permutations"] = int(perms.shape[0]) if np.isfinite(p_pearson) else 0
            rows.append(row)
    null_table = pd.concat(nulls, ignore_index=True) if nulls else empty_null_frame()
    elapsed = time.perf_counter() - started
    log.info("alignment: %d species, %d permutations in %.2f s", S, perms.shape[0], elapsed)
    info = {
        "species_total": S_total, "species_used": S, "sampled": bool(S < S_total),
        "tau_species_used": m_tau, "permutations": int(perms.shape[0]),
        "n_boot": int(n_boot), "n_boot_rank": int(n_boot_rank), "distance": options.distance,
        "tie_tolerance": tol, "degenerate": note,
        "cka_kernel": "linear on L2-normalised centroids" if options.distance == "cosine" else "linear on centroids",
        "bootstrap": "species resampled with replacement; pairs of two copies of one species left out (pair "
                     "statistics), copies as repeated rows (CKA)",
        "seconds": round(elapsed, 3),
    }
    arrays = {"centroid_distances": D.astype(np.float32), "taxonomic_distances": T.astype(np.uint8),
              "species": species}
    return ProbeResult("alignment", pd.DataFrame(rows), arrays=arrays, tables={"null": null_table}, info=info)
