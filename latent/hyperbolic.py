"""Is a finite metric tree-like? Gromov delta-hyperbolicity, and Poincare-ball versus Euclidean fits.

Trees embed with low distortion in hyperbolic space and badly in a Euclidean space of the same
dimension. This module measures how tree-like a distance matrix is in the two standard ways.

Gromov delta (conventions used everywhere in latent)
----------------------------------------------------
For four points ``x, y, z, w`` form the three pair sums ``d(x,y) + d(z,w)``, ``d(x,z) + d(y,w)`` and
``d(x,w) + d(y,z)``. The **four-point delta** of the quadruple is *half* the gap between the largest
and the second largest sum, and the delta of the space is its maximum over all quadruples::

    delta = max_{x,y,z,w} (S_(1) - S_(2)) / 2.

A tree metric (and so every ultrametric, e.g. taxonomic LCA heights) has ``delta = 0``. The
**relative delta** is ``delta_rel = 2 * delta / diameter`` (Khrulkov et al., CVPR 2020); it lies in
``[0, 1]`` for a metric and does not change when all distances are scaled.

With a base point ``w`` and Gromov products ``(x|y)_w = (d(x,w) + d(y,w) - d(x,y)) / 2``, the
delta *at* ``w`` is (Fournier, Ismail & Vigneron, arXiv 1210.3323)::

    delta_w = max_{x,y} [ max_z min((x|z)_w, (z|y)_w) - (x|y)_w ],

a (max,min) matrix product. ``delta_w`` is the four-point delta maximised over the quadruples that
contain ``w``, so with this module's convention ``delta = max_w delta_w`` and, for any metric and any
base point (Gromov's lemma, as stated by Fournier et al.)::

    delta_w <= delta <= 2 * delta_w.

Papers differ by a factor 2 (some call ``S_(1) - S_(2)`` itself delta): ours is the half gap.

Methods of :func:`gromov_delta`
-------------------------------
``exact``
    The maximum over all quadruples, ``O(n^4)`` time (about ``n^4 / 4`` quadruples after symmetry),
    in chunks of at most ``max_elements`` entries (never an ``n^3`` or ``n^4`` array); for small
    ``n`` only (refused above :data:`EXACT_MAX_N`).
``base_point``
    ``delta_w`` for one base point by the chunked (max,min) product, ``O(n^3)`` time and ``O(n^2)``
    memory, with torch on the GPU when one is present. A lower bound within a factor 2 of ``delta``.
``sampled``
    Khrulkov et al.'s estimator: ``tries`` random subsets of ``sample_size`` points, ``delta_w`` at
    the first sampled point of each, reported as the mean (and standard deviation, ``ddof=0``) of
    ``delta`` and of ``delta_rel = 2 delta / diameter(subset)`` over the tries. Their code builds an
    ``n^3`` tensor (27 GB at n = 1,500); here each try is the chunked ``base_point`` computation.

Fits
----
:func:`fit_distances` places ``S`` points in the Poincare ball (geoopt ``PoincareBall``, curvature
-1, ``ManifoldParameter``, ``RiemannianAdam``, float64) or in Euclidean space of the same dimension so
that ``scale * d(u_i, u_j)`` matches a target distance matrix; ``scale`` is learned in both geometries
(in the ball a learned scale is a learned curvature ``-1 / scale^2``). Both use the same loss, the
mean over pairs of the squared relative error ``((scale * d_ij - t_ij) / t_ij)^2``, the same
optimiser, learning rate schedule, seed and initialisation (the target's classical MDS layout, mapped
into the ball by ``expmap0``). They are compared by (Sala et al., ICML 2018):

* average distortion :func:`distortion`: ``mean_{i<j} |d_fit - t| / t``;
* worst-case distortion :func:`worst_case_distortion`: ``max(d_fit / t) / min(d_fit / t)`` (largest
  expansion times largest contraction; 1 is an isometry up to scale);
* MAP :func:`mean_average_precision`: for each point ``a`` and each relevant point ``b`` (its nearest
  taxonomic relatives, :func:`nearest_relatives`), the fraction of relevant points among the points
  at least as close to ``a`` as ``b`` in the fit; averaged over ``b``, then over ``a`` (equal to
  scikit-learn's ``label_ranking_average_precision_score`` with scores ``-d_fit``).

Pairs with a target distance of 0 (duplicate points) have no relative error and are left out of the
loss and of the distortions (their number is logged).

Because the ball with a learned curvature tends to Euclidean space as the curvature goes to 0, a
Poincare fit can approach, but not beat, a Euclidean one on Euclidean data; on a tree metric at low
dimension it is much better.

Caveat: tree-like is not the same as taxonomic
----------------------------------------------
Neither measure uses labels. Points with no structure at all in high dimension (a Gaussian cloud)
have nearly equal pairwise distances, i.e. they form a star, which is itself a tree: measured on
``latent.synthetic.make_hierarchical`` centroids (47 species, 64 dimensions) the relative delta of
``signal=0`` data (~0.3) is as low as that of a planted hierarchy with equal offsets per rank, and
its Poincare advantage at dimension 2 (Euclidean / Poincare distortion ~3.2) is nearly as large.
Read both against the random-features baseline and with a label-aware measure (the fits' MAP).
"""

from __future__ import annotations

import logging
import math
import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from latent.errors import InputError

__all__ = [
    "DELTA_METHODS",
    "GEOMETRIES",
    "EXACT_MAX_N",
    "GromovDelta",
    "FitResult",
    "gromov_delta",
    "gromov_products",
    "fit_distances",
    "classical_mds",
    "poincare_distances",
    "euclidean_distances",
    "distortion",
    "worst_case_distortion",
    "nearest_relatives",
    "mean_average_precision",
    "fit_report",
]

log = logging.getLogger(__name__)

DELTA_METHODS = ("exact", "base_point", "sampled")
GEOMETRIES = ("poincare", "euclidean")

#: Largest number of points :func:`gromov_delta` accepts with ``method="exact"`` (``n^4 / 4``
#: quadruples: ~2 s at n = 200 on 2 CPU cores, and 81x that, some 3 minutes, at 600).
EXACT_MAX_N = 600

#: Default bound on the entries of one temporary block (64 MiB of float64).
MAX_ELEMENTS = 1 << 23


# --------------------------------------------------------------------------------------------- input
def _check_distances(distances: Any, *, function: str, parameter: str = "distances") -> np.ndarray:
    """A validated ``(n, n)`` float64 copy of a symmetric, non-negative, zero-diagonal matrix."""
    try:
        D = np.array(distances, dtype=np.float64)
    except (TypeError, ValueError) as e:
        raise InputError(f"The {parameter!r} parameter of {function} must be a numeric (n, n) matrix. "
                         f"Got {type(distances).__name__} instead.") from e
    if D.ndim != 2 or D.shape[0] != D.shape[1] or D.shape[0] < 1:
        raise InputError(f"The {parameter!r} parameter of {function} must be a square (n, n) matrix with n >= 1. "
                         f"Got shape {D.shape} instead.")
    if not np.isfinite(D).all():
        bad = np.argwhere(~np.isfinite(D))[:5].tolist()
        raise InputError(f"The {parameter!r} parameter of {function} must be finite; entries {bad} are not.")
    if (D < 0).any():
        bad = np.argwhere(D < 0)[:5].tolist()
        raise InputError(f"The {parameter!r} parameter of {function} must be non-negative; entries {bad} "
                         f"are negative (min {D.min():g}).")
    scale = max(float(D.max()), 1.0)
    asym = float(np.abs(D - D.T).max())
    if asym > 1e-9 * scale:
        i, j = np.unravel_index(int(np.argmax(np.abs(D - D.T))), D.shape)
        raise InputError(f"The {parameter!r} parameter of {function} must be symmetric; entry ({i}, {j}) is "
                         f"{D[i, j]!r} but ({j}, {i}) is {D[j, i]!r}. Symmetrise it, e.g. (D + D.T) / 2.")
    diag = float(np.abs(np.diag(D)).max())
    if diag > 1e-9 * scale:
        raise InputError(f"The {parameter!r} parameter of {function} must have a zero diagonal; the largest "
                         f"diagonal entry is {diag!r}.")
    D = (D + D.T) / 2
    np.fill_diagonal(D, 0.0)
    return D


def _check_int(name: str, value: Any, *, minimum: int, function: str) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < minimum:
        raise InputError(f"The {name!r} parameter of {function} must be an integer >= {minimum}. "
                         f"Got {value!r} instead.")
    return int(value)


def _check_positive(name: str, value: Any, *, function: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float, np.number)) or not (
            np.isfinite(value) and value > 0):
        raise InputError(f"The {name!r} parameter of {function} must be a finite number > 0. Got {value!r} instead.")
    return float(value)


# --------------------------------------------------------------------------------------------- delta
@dataclass(frozen=True)
class GromovDelta:
    """Gromov delta of a finite metric (conventions: see the module docstring).

    Attributes
    ----------
    delta
        Four-point delta (half gap); for ``sampled`` the mean over the tries.
    delta_rel
        ``2 * delta / diameter``; for ``sampled`` the mean over tries of each try's relative delta
        (each with its subset's diameter). NaN when the diameter is 0.
    diameter
        Largest distance of the whole metric.
    method
        ``"exact"``, ``"base_point"`` or ``"sampled"``.
    n
        Points in the metric.
    n_used
        Points in each computation (``sample_size`` capped at ``n`` for ``sampled``, else ``n``).
    base_point
        Index of the base point (``base_point``); -1 otherwise.
    tries
        Number of subsets (``sampled``); 1 otherwise.
    delta_std, delta_rel_std
        Standard deviation (``ddof=0``, as Khrulkov et al.) over the tries; 0 unless ``sampled``.
    per_try_delta, per_try_delta_rel
        ``(tries,)`` the value of each try (``sampled``; the single value otherwise).
    per_try_base
        ``(tries,)`` the base point of each try (index into the whole metric; -1 for ``exact``).
    seconds
        Wall time of the computation.
    """

    delta: float
    delta_rel: float
    diameter: float
    method: str
    n: int
    n_used: int
    base_point: int = -1
    tries: int = 1
    delta_std: float = 0.0
    delta_rel_std: float = 0.0
    per_try_delta: np.ndarray = field(default_factory=lambda: np.zeros(0))
    per_try_delta_rel: np.ndarray = field(default_factory=lambda: np.zeros(0))
    per_try_base: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.int64))
    seconds: float = 0.0

    def as_dict(self) -> dict[str, Any]:
        """The scalar fields (JSON-able)."""
        return {k: (float(v) if isinstance(v, float) else v) for k, v in self.__dict__.items()
                if not isinstance(v, np.ndarray)}


def _relative(delta: float, diameter: float) -> float:
    return 2.0 * delta / diameter if diameter > 0 else float("nan")


def gromov_products(distances: np.ndarray, base: int) -> np.ndarray:
    """``(n, n)`` Gromov products ``(x|y)_w = (d(x,w) + d(y,w) - d(x,y)) / 2`` at base point ``w = base``."""
    D = np.asarray(distances, dtype=np.float64)
    row = D[int(base)]
    return (row[:, None] + row[None, :] - D) / 2


def _exact_delta(D: np.ndarray, max_elements: int) -> float:
    """Maximum half gap over all quadruples, in chunks (float64, numpy).

    For every quadruple the pairing with the largest sum can be written ``(x y | z w)`` with ``x``
    the smallest index of the four. So for each ``x`` the ``(y, z, w)`` range over the later points
    ``R`` and the gap of the pairing ``(x y | z w)`` against the larger of the two other sums is
    ``a[y] + B[z, w] - max(a[z] + B[y, w], a[w] + B[y, z])`` with ``a = D[x, R]``, ``B = D[R, R]``;
    its maximum (clipped at 0: repeated points give gaps <= 0) is ``2 * delta``.
    """
    n = D.shape[0]
    best = 0.0
    for x in range(n - 3):
        a = D[x, x + 1:]
        B = D[x + 1:, x + 1:]
        m = a.shape[0]
        chunk = max(1, int(max_elements) // (m * m))
        Bz = a[None, :, None]  # a[z]
        Bw = a[None, None, :]  # a[w]
        for start in range(0, m, chunk):
            Y = slice(start, min(m, start + chunk))
            s1 = a[Y, None, None] + B[None, :, :]
            s2 = Bz + B[Y, None, :]
            s3 = Bw + B[Y, :, None]
            gap = float((s1 - np.maximum(s2, s3)).max())
            if gap > best:
                best = gap
    return best / 2.0


def _torch_delta_at(G: Any, max_elements: int) -> float:
    """``delta_w = max_{x,y} [max_z min(G[x,z], G[z,y]) - G[x,y]]`` for a torch ``(n, n)`` tensor ``G``.

    Rows ``x`` are taken in blocks of ``b`` (a ``(b, n)`` accumulator and one ``(b, n)`` temporary,
    ``b * n <= max_elements``; on the CPU also ``<= 2^20`` so they stay in cache); for each ``z`` the
    block's running maximum is updated in place with ``min(G[x, z], G[z, :])``. Memory is ``O(n^2)``:
    ``G`` and two blocks, never an ``n^3`` tensor.
    """
    import torch

    n = G.shape[0]
    budget = int(max_elements) if G.device.type != "cpu" else min(int(max_elements), 1 << 20)
    b = int(max(1, min(n, budget // max(1, n))))
    best = -math.inf
    with torch.no_grad():
        tmp = torch.empty((b, n), dtype=G.dtype, device=G.device)
        for start in range(0, n, b):
            rows = G[start:start + b]  # (b', n): G[x, z]
            acc = torch.full_like(rows, -math.inf)
            out = tmp[:rows.shape[0]]
            for z in range(n):
                torch.minimum(rows[:, z:z + 1], G[z:z + 1], out=out)
                torch.maximum(acc, out, out=acc)
            best = max(best, float((acc - rows).max()))
    return max(best, 0.0)


def _base_point_delta(D: np.ndarray, base: int, *, device: Any, dtype: str, max_elements: int) -> float:
    import torch

    from latent.devices import resolve_device

    dev = resolve_device(device, function="gromov_delta")
    tdtype = torch.float32 if dtype == "float32" else torch.float64
    G = torch.as_tensor(gromov_products(D, base), dtype=tdtype, device=dev)
    return _torch_delta_at(G, max_elements)


def gromov_delta(distances: Any, method: str = "base_point", *, base_point: int = 0, sample_size: int = 1500,
                 tries: int = 10, seed: int = 0, device: Any = "auto", dtype: str = "float32",
                 max_elements: int = MAX_ELEMENTS) -> GromovDelta:
    """Gromov delta-hyperbolicity of a finite metric (four-point delta, half-gap convention).

    Parameters
    ----------
    distances
        ``(n, n)`` symmetric, non-negative matrix with a zero diagonal (a metric: the factor-2 bound
        of ``base_point`` is proven for metrics).
    method
        ``"exact"`` (all quadruples, ``n <=`` :data:`EXACT_MAX_N`), ``"base_point"`` (``delta_w``,
        ``delta_w <= delta <= 2 delta_w``) or ``"sampled"`` (Khrulkov et al.: mean over ``tries``
        subsets). See the module docstring.
    base_point
        Base point ``w`` of ``base_point`` (an index in ``[0, n)``).
    sample_size, tries, seed
        ``sampled`` only: points per subset (capped at ``n``), number of subsets, seed of
        ``numpy.random.default_rng`` drawing them. The same arguments give the same result.
    device
        torch device of ``base_point`` / ``sampled`` (``"auto"``: CUDA when present, else CPU).
    dtype
        ``"float32"`` (default, twice as fast; the (max,min) product only selects values, so the
        error is the rounding of the Gromov products, at most ~1.2e-7 x the diameter) or
        ``"float64"``. ``exact`` always uses float64.
    max_elements
        Bound on the entries of one temporary block (memory of the chunks).

    Returns
    -------
    GromovDelta
        ``delta``, ``delta_rel = 2 delta / diameter``, the diameter and the settings used.

    Raises
    ------
    InputError
        A malformed matrix, an unknown method, ``exact`` above :data:`EXACT_MAX_N` points, or a
        base point outside ``[0, n)``.
    """
    fn = "gromov_delta"
    if method not in DELTA_METHODS:
        raise InputError(f"The 'method' parameter of {fn} must be one of {', '.join(DELTA_METHODS)}. "
                         f"Got {method!r} instead.")
    if dtype not in ("float32", "float64"):
        raise InputError(f"The 'dtype' parameter of {fn} must be 'float32' or 'float64'. Got {dtype!r} instead.")
    max_elements = _check_int("max_elements", max_elements, minimum=1, function=fn)
    D = _check_distances(distances, function=fn)
    n = D.shape[0]
    diameter = float(D.max())
    t0 = time.perf_counter()
    if method == "exact":
        if n > EXACT_MAX_N:
            raise InputError(f"The 'method' parameter of {fn} is 'exact' but the metric has {n} points; exact "
                             f"is O(n^4) and limited to {EXACT_MAX_N} points. Use method='base_point' "
                             f"(within a factor 2) or 'sampled'.")
        delta = _exact_delta(D, max_elements)
        seconds = time.perf_counter() - t0
        log.info("gromov_delta exact: n=%d delta=%.6g (%.2fs)", n, delta, seconds)
        return GromovDelta(delta, _relative(delta, diameter), diameter, method, n, n,
                           per_try_delta=np.array([delta]), per_try_delta_rel=np.array([_relative(delta, diameter)]),
                           per_try_base=np.array([-1]), seconds=seconds)
    if method == "base_point":
        base = _check_int("base_point", base_point, minimum=0, function=fn)
        if base >= n:
            raise InputError(f"The 'base_point' parameter of {fn} must be an index in [0, {n}). Got {base_point!r}.")
        delta = _base_point_delta(D, base, device=device, dtype=dtype, max_elements=max_elements)
        seconds = time.perf_counter() - t0
        log.info("gromov_delta base_point %d: n=%d delta=%.6g (%.2fs)", base, n, delta, seconds)
        return GromovDelta(delta, _relative(delta, diameter), diameter, method, n, n, base_point=base,
                           per_try_delta=np.array([delta]), per_try_delta_rel=np.array([_relative(delta, diameter)]),
                           per_try_base=np.array([base]), seconds=seconds)
    # sampled
    sample_size = _check_int("sample_size", sample_size, minimum=1, function=fn)
    tries = _check_int("tries", tries, minimum=1, function=fn)
    seed = _check_int("seed", seed, minimum=0, function=fn)
    m = min(sample_size, n)
    rng = np.random.default_rng(seed)
    deltas = np.zeros(tries)
    rels = np.zeros(tries)
    bases = np.zeros(tries, dtype=np.int64)
    for t in range(tries):
        idx = rng.choice(n, size=m, replace=False)
        sub = D[np.ix_(idx, idx)]
        deltas[t] = _base_point_delta(sub, 0, device=device, dtype=dtype, max_elements=max_elements)
        rels[t] = _relative(deltas[t], float(sub.max()))
        bases[t] = idx[0]
    seconds = time.perf_counter() - t0
    log.info("gromov_delta sampled: n=%d, %d tries of %d points: delta=%.6g +- %.3g, delta_rel=%.4g (%.2fs)",
             n, tries, m, deltas.mean(), deltas.std(), rels.mean(), seconds)
    return GromovDelta(float(deltas.mean()), float(rels.mean()), diameter, method, n, m, tries=tries,
                       delta_std=float(deltas.std()), delta_rel_std=float(rels.std()), per_try_delta=deltas,
                       per_try_delta_rel=rels, per_try_base=bases, seconds=seconds)


# --------------------------------------------------------------------------------------------- metrics
def poincare_distances(coords: Any) -> np.ndarray:
    """``(S, S)`` distances in the Poincare ball of curvature -1 (float64)::

        d(u, v) = arcosh(1 + 2 ||u - v||^2 / ((1 - ||u||^2) (1 - ||v||^2)))

    Parameters
    ----------
    coords
        ``(S, D)`` points with norm < 1.
    """
    X = np.asarray(coords, dtype=np.float64)
    if X.ndim != 2:
        raise InputError(f"The 'coords' parameter of poincare_distances must be (S, D). Got shape {X.shape}.")
    sq = np.einsum("ij,ij->i", X, X)
    if (sq >= 1).any():
        raise InputError(f"The 'coords' parameter of poincare_distances must lie inside the unit ball; "
                         f"{int((sq >= 1).sum())} point(s) have norm >= 1.")
    diff = np.maximum(sq[:, None] + sq[None, :] - 2 * X @ X.T, 0.0)
    arg = 1 + 2 * diff / ((1 - sq)[:, None] * (1 - sq)[None, :])
    out = np.arccosh(np.maximum(arg, 1.0))
    np.fill_diagonal(out, 0.0)
    return (out + out.T) / 2


def euclidean_distances(coords: Any) -> np.ndarray:
    """``(S, S)`` Euclidean distances between the rows of ``(S, D)`` ``coords`` (float64)."""
    X = np.asarray(coords, dtype=np.float64)
    diff = X[:, None, :] - X[None, :, :]
    return np.sqrt(np.einsum("ijk,ijk->ij", diff, diff))


def _pairs(target: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Upper-triangle pairs ``i < j`` with a positive target distance."""
    i, j = np.triu_indices(target.shape[0], k=1)
    keep = target[i, j] > 0
    if not keep.all():
        log.info("hyperbolic: %d of %d pairs have target distance 0 and are left out", int((~keep).sum()), len(keep))
    return i[keep], j[keep]


def _check_pair(fitted: Any, target: Any, function: str) -> tuple[np.ndarray, np.ndarray]:
    T = _check_distances(target, function=function, parameter="target")
    F = np.asarray(fitted, dtype=np.float64)
    if F.shape != T.shape:
        raise InputError(f"The 'fitted' parameter of {function} must have the shape of 'target' {T.shape}. "
                         f"Got {F.shape} instead.")
    if not np.isfinite(F).all():
        raise InputError(f"The 'fitted' parameter of {function} must be finite.")
    return F, T


def distortion(fitted: Any, target: Any) -> float:
    """Average distortion ``mean_{i<j, t_ij > 0} |f_ij - t_ij| / t_ij`` of ``(S, S)`` fitted distances."""
    F, T = _check_pair(fitted, target, "distortion")
    i, j = _pairs(T)
    if len(i) == 0:
        return float("nan")
    return float(np.mean(np.abs(F[i, j] - T[i, j]) / T[i, j]))


def worst_case_distortion(fitted: Any, target: Any) -> float:
    """Worst-case distortion ``max(f/t) / min(f/t)`` over pairs ``i < j`` with ``t_ij > 0``.

    1 means an isometry up to scale; ``inf`` when two distinct points were fitted onto one.
    """
    F, T = _check_pair(fitted, target, "worst_case_distortion")
    i, j = _pairs(T)
    if len(i) == 0:
        return float("nan")
    ratio = F[i, j] / T[i, j]
    low = float(ratio.min())
    return float("inf") if low <= 0 else float(ratio.max()) / low


def nearest_relatives(target: Any) -> np.ndarray:
    """``(S, S)`` bool: ``b`` is one of ``a``'s nearest relatives (``t_ab`` is the smallest ``t_ac``, ``c != a``).

    With taxonomic distances these are the species that share ``a``'s lowest shared clade (its
    congeners if any, else its confamilials, ...). The diagonal is False.
    """
    T = _check_distances(target, function="nearest_relatives", parameter="target")
    S = T.shape[0]
    if S < 2:
        raise InputError("The 'target' parameter of nearest_relatives needs at least 2 points.")
    off = T + np.diag(np.full(S, np.inf))
    nearest = off.min(axis=1)
    return off == nearest[:, None]


def mean_average_precision(fitted: Any, relevant: Any) -> float:
    """MAP of recovering each point's relevant points from fitted distances (Sala et al. 2018).

    ``MAP = mean_a mean_{b in N_a} |N_a ∩ R_ab| / |R_ab|`` with ``R_ab = {c != a : f_ac <= f_ab}``
    (ties count as closer, as scikit-learn's ``label_ranking_average_precision_score``, which this
    equals with scores ``-f``). Points with no relevant point are left out.

    Parameters
    ----------
    fitted
        ``(S, S)`` fitted distances.
    relevant
        ``(S, S)`` bool, e.g. :func:`nearest_relatives` of the target (the diagonal is ignored).
    """
    F = np.asarray(fitted, dtype=np.float64)
    R = np.asarray(relevant, dtype=bool)
    if F.ndim != 2 or F.shape[0] != F.shape[1] or R.shape != F.shape:
        raise InputError(f"The 'fitted' and 'relevant' parameters of mean_average_precision must be (S, S) of the "
                         f"same shape. Got {F.shape} and {R.shape}.")
    S = F.shape[0]
    aps = []
    for a in range(S):
        others = np.delete(np.arange(S), a)
        f = F[a, others]
        rel = R[a, others]
        if not rel.any():
            continue
        all_sorted = np.sort(f)
        rel_sorted = np.sort(f[rel])
        fr = f[rel]
        ranks = np.searchsorted(all_sorted, fr, side="right")
        hits = np.searchsorted(rel_sorted, fr, side="right")
        aps.append(np.mean(hits / ranks))
    return float(np.mean(aps)) if aps else float("nan")


# --------------------------------------------------------------------------------------------- fits
@dataclass(frozen=True)
class FitResult:
    """Points fitted to a target distance matrix in one geometry.

    Attributes
    ----------
    geometry
        ``"poincare"`` or ``"euclidean"``.
    dim
        Dimension ``D``.
    coords
        ``(S, D)`` float64 coordinates (in the unit ball of curvature -1 for ``poincare``).
    scale
        Learned factor: fitted distance ``= scale * d(u_i, u_j)``.
    fitted
        ``(S, S)`` fitted distances (``scale`` applied), from the closed-form distance of the geometry.
    loss
        ``(steps_run,)`` the loss at each step (before the step's update).
    final_loss
        The loss of the returned coordinates.
    pairs
        Pairs in the loss (``i < j`` with a positive target).
    steps, lr, seed
        Settings used.
    seconds
        Wall time of the fit.
    steps_run
        Steps taken (``steps`` unless the fit stopped early at its tolerance).
    converged
        The loss changed less than ``tol`` (relative) over ``CONVERGENCE_WINDOW`` steps, at a check
        (every ``CONVERGENCE_WINDOW`` steps, and at the last step) where the fit then stopped; False when
        the loss was still falling at the last step (or no tolerance was given).
    tol
        The tolerance (None: every step is run).
    """

    geometry: str
    dim: int
    coords: np.ndarray
    scale: float
    fitted: np.ndarray
    loss: np.ndarray
    pairs: int
    steps: int
    lr: float
    seed: int
    seconds: float
    final_loss: float
    steps_run: int = 0
    converged: bool = False
    tol: "float | None" = None



def classical_mds(target: np.ndarray, dim: int) -> np.ndarray:
    """``(S, dim)`` classical (Torgerson) MDS coordinates of a distance matrix.

    The top ``dim`` eigenvectors of ``B = -J T^2 J / 2`` (``J`` the centring matrix) times the square
    roots of their eigenvalues (negative eigenvalues of a non-Euclidean target give zero columns, as
    do dimensions beyond ``S``).
    """
    T = np.asarray(target, dtype=np.float64)
    S = T.shape[0]
    J = np.eye(S) - 1.0 / S
    B = -0.5 * J @ (T * T) @ J
    w, V = np.linalg.eigh((B + B.T) / 2)
    order = np.argsort(w)[::-1][:dim]
    out = np.zeros((S, dim))
    out[:, :len(order)] = V[:, order] * np.sqrt(np.maximum(w[order], 0.0))
    return out


class _torch_threads:
    """Set torch's CPU thread count inside a ``with`` block (None: leave it), restoring it after."""

    def __init__(self, threads: "int | None") -> None:
        self.threads = threads
        self.saved: "int | None" = None

    def __enter__(self) -> None:
        if self.threads is not None:
            import torch

            self.saved = torch.get_num_threads()
            torch.set_num_threads(int(self.threads))

    def __exit__(self, *exc: Any) -> None:
        if self.saved is not None:
            import torch

            torch.set_num_threads(self.saved)


#: Steps over which :func:`fit_distances` measures the loss change for its tolerance.
CONVERGENCE_WINDOW = 50


def fit_distances(target: Any, geometry: str = "poincare", dim: int = 2, *, steps: int = 1000, lr: float = 0.1,
                  seed: int = 0, init_radius: float = 1.5, device: Any = "cpu",
                  threads: "int | None" = 1, tol: "float | None" = None) -> FitResult:
    """Fit ``S`` points in the Poincare ball or in Euclidean space to a target distance matrix.

    The loss is the mean over pairs ``i < j`` with ``t_ij > 0`` of ``((scale * d_ij - t_ij) / t_ij)^2``
    (full batch, float64).

    Initialisation (the same in both geometries): the classical MDS coordinates of the target in
    ``dim`` dimensions (:func:`classical_mds`), scaled so that the largest coordinate is
    ``init_radius``, plus a seeded uniform jitter of ``init_radius / 100``; these are the Euclidean
    points and, through ``expmap0`` (distance from the origin ``2 |v|``), the points in the ball. The
    learned ``scale`` starts at ``mean(t) / mean(d_init)``. Optimiser: geoopt ``RiemannianAdam``
    (Riemannian on the ball, plain Adam in Euclidean space) with a cosine learning-rate decay from
    ``lr`` to ``lr / 100`` over ``steps``. Starting from the MDS layout at a radius where the ball is
    already curved (``init_radius`` ~1-2) converges much faster than a random start near the origin,
    where the ball is nearly flat and the fit stays Euclidean-like for hundreds of steps. The fit is a
    local optimisation: the result depends (mildly) on the seed.

    Parameters
    ----------
    target
        ``(S, S)`` target distances (symmetric, non-negative, zero diagonal; S >= 3).
    geometry
        ``"poincare"`` (geoopt ``PoincareBall(c=1)`` with a ``ManifoldParameter``) or ``"euclidean"``.
    dim
        Dimension ``D >= 1``.
    steps, lr, seed
        Optimisation steps, learning rate, seed of the jitter (``torch.Generator``).
    init_radius
        Largest initial coordinate (tangent-space radius at the origin for the ball).
    device
        torch device (``"cpu"``, ``"cuda"``, ``"auto"``).
    threads
        torch CPU threads during the fit (default 1: the tensors are small and extra threads only
        contend with other work; None leaves torch's setting). Restored afterwards.
    tol
        Convergence tolerance (None: run every step). Every :data:`CONVERGENCE_WINDOW` steps, and at the
        last step, the fit stops when the loss fell by less than ``tol`` times the current loss over the
        last window (``(L[t - W] - L[t]) <= tol * L[t]``); the learning-rate schedule is the one of ``steps``
        either way, so a fit that does not stop is the fit without ``tol``. ``converged`` and
        ``steps_run`` of the result say what happened.

    Returns
    -------
    FitResult
    """
    fn = "fit_distances"
    if geometry not in GEOMETRIES:
        raise InputError(f"The 'geometry' parameter of {fn} must be one of {', '.join(GEOMETRIES)}. "
                         f"Got {geometry!r} instead.")
    dim = _check_int("dim", dim, minimum=1, function=fn)
    steps = _check_int("steps", steps, minimum=1, function=fn)
    seed = _check_int("seed", seed, minimum=0, function=fn)
    lr = _check_positive("lr", lr, function=fn)
    init_radius = _check_positive("init_radius", init_radius, function=fn)
    if tol is not None:
        tol = _check_positive("tol", tol, function=fn)
    if threads is not None:
        threads = _check_int("threads", threads, minimum=1, function=fn)
    T = _check_distances(target, function=fn, parameter="target")
    S = T.shape[0]
    if S < 3:
        raise InputError(f"The 'target' parameter of {fn} needs at least 3 points; got {S}.")
    i, j = _pairs(T)
    if len(i) == 0:
        raise InputError(f"The 'target' parameter of {fn} has no pair at a positive distance: nothing to fit.")

    import warnings

    import torch

    with warnings.catch_warnings():  # geoopt decorates with torch.jit.script, which torch now warns about
        warnings.filterwarnings("ignore", message=r".*torch\.jit\.script.*", category=FutureWarning)
        import geoopt

    from latent.devices import resolve_device

    dev = resolve_device(device, function=fn)
    t0 = time.perf_counter()
    mds = classical_mds(T, dim)
    top = float(np.abs(mds).max())
    mds = mds * (init_radius / top) if top > 0 else mds
    gen = torch.Generator().manual_seed(seed)
    jitter = (torch.rand((S, dim), generator=gen, dtype=torch.float64) * 2 - 1) * (init_radius / 100)
    v = torch.as_tensor(mds, dtype=torch.float64) + jitter
    ti = torch.as_tensor(i, device=dev)
    tj = torch.as_tensor(j, device=dev)
    tt = torch.as_tensor(T[i, j], dtype=torch.float64, device=dev)
    if geometry == "poincare":
        manifold = geoopt.PoincareBall(c=1.0)
        init = manifold.expmap0(v)
    else:
        manifold = geoopt.Euclidean(ndim=1)
        init = v
    x = geoopt.ManifoldParameter(init.to(dev), manifold=manifold)

    def pair_distances() -> "torch.Tensor":
        if geometry == "poincare":
            return manifold.dist(x[ti], x[tj])
        diff = x[ti] - x[tj]
        return torch.sqrt((diff * diff).sum(dim=-1).clamp_min(1e-30))

    with _torch_threads(threads if dev.type == "cpu" else None):
        with torch.no_grad():
            d0 = pair_distances()
            log_scale0 = math.log(float(tt.mean()) / max(float(d0.mean()), 1e-30))
        log_scale = torch.nn.Parameter(torch.tensor(log_scale0, dtype=torch.float64, device=dev))
        opt = geoopt.optim.RiemannianAdam([x, log_scale], lr=lr)
        sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=steps, eta_min=lr / 100)
        losses = torch.zeros(steps, dtype=torch.float64, device=dev)
        steps_run, converged = steps, False
        for step in range(steps):
            opt.zero_grad()
            rel = (torch.exp(log_scale) * pair_distances() - tt) / tt
            loss = (rel * rel).mean()
            loss.backward()
            losses[step] = loss.detach()
            check = step % CONVERGENCE_WINDOW == 0 or step == steps - 1  # the last window is checked too
            if tol is not None and step >= CONVERGENCE_WINDOW and check:
                now, before = float(losses[step]), float(losses[step - CONVERGENCE_WINDOW])
                if before - now <= tol * now:  # the loss before this step's update: stop without it
                    steps_run, converged = step + 1, True
                    break
            opt.step()
            sched.step()
        losses = losses[:steps_run]
        coords = x.detach().cpu().numpy().astype(np.float64)
        scale = float(torch.exp(log_scale).detach().cpu())
        loss_curve = losses.cpu().numpy()
    base = poincare_distances(coords) if geometry == "poincare" else euclidean_distances(coords)
    fitted = scale * base
    final_loss = float(np.mean(((fitted[i, j] - T[i, j]) / T[i, j]) ** 2))
    seconds = time.perf_counter() - t0
    log.info("fit %s dim %d: S=%d, %d of %d steps%s, loss %.4g -> %.4g, scale %.4g (%.1fs)", geometry, dim, S,
             steps_run, steps, " (converged)" if converged else "", loss_curve[0], loss_curve[-1], scale, seconds)
    return FitResult(geometry, dim, coords, scale, fitted, loss_curve, len(i), steps, lr, seed, seconds, final_loss,
                     steps_run, converged, tol)


def fit_report(fit: FitResult, target: np.ndarray, relevant: "np.ndarray | None" = None) -> dict[str, float]:
    """Distortion, worst-case distortion and MAP of a fit (``relevant`` defaults to the target's nearest relatives)."""
    rel = nearest_relatives(target) if relevant is None else relevant
    return {"distortion": distortion(fit.fitted, target),
            "worst_distortion": worst_case_distortion(fit.fitted, target),
            "map": mean_average_precision(fit.fitted, rel)}
