"""Resampling statistics: seeded bootstrap intervals and permutation p-values.

Conventions
-----------
* **Bootstrap.** Resample the ``n`` units (images, pairs, species, ...) with replacement ``n_boot``
  times, with ``numpy.random.default_rng(seed)``; the interval is the percentile interval
  ``(q(alpha/2), q(1 - alpha/2))`` of the resampled statistic. The resamples are those of
  :func:`bootstrap_indices`: the same ``(n, n_boot, seed)`` resamples the same units everywhere, so
  intervals are reproducible bit for bit and metrics computed on the same rows share their resamples.
* **Memory.** Resamples are processed in chunks of at most ``max_elements`` indices
  (:func:`iter_bootstrap_indices`); the chunks concatenate to exactly :func:`bootstrap_indices`.
* **Undefined resamples.** A statistic that is undefined on a resample (e.g. a ratio whose denominator
  is 0 there) is NaN; NaN resamples are left out of the interval and their count is logged.
* **Permutation p-values** count the observed statistic as one of the permutations:
  ``(1 + #{null >= observed}) / (1 + len(null))`` (Phipson & Smyth 2010), never 0.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator

import numpy as np

__all__ = [
    "bootstrap_indices",
    "iter_bootstrap_indices",
    "bootstrap_weights",
    "bootstrap_distribution",
    "percentile_interval",
    "bootstrap_ci",
    "bootstrap_ci_fn",
    "permutation_pvalue",
    "null_summary",
    "ALPHA",
    "DEFAULT_N_BOOT",
    "MIN_CLUSTERS",
    "cluster_ci",
    "cluster_ci_note",
]

log = logging.getLogger(__name__)

#: Default bound on the number of resampled indices held in memory at once (32 MiB of int64).
MAX_ELEMENTS = 1 << 22

#: Fewest independent units (species, or clades) a bootstrap CI may rest on. Images of one species are
#: not independent, so every CI of latent resamples whole species (a cluster bootstrap); below this many
#: units a percentile interval is unreliable and no CI is given (the row says so in ``ci_note``).
MIN_CLUSTERS = 10

#: Level of every confidence interval (``1 - ALPHA`` = 95 %) and of the per-rank tests.
ALPHA = 0.05

#: Default number of bootstrap resamples of a CI.
DEFAULT_N_BOOT = 1000

#: Fraction of undefined (NaN) resamples above which a warning, not a debug message, is logged.
NAN_WARN_FRACTION = 0.1


def _check_int(name: str, value: object, *, minimum: int, function: str) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < minimum:
        raise ValueError(
            f"The {name!r} parameter of {function} must be an integer >= {minimum}. Got {value!r} instead."
        )
    return int(value)


def _check_alpha(alpha: object, *, function: str) -> float:
    if isinstance(alpha, bool) or not isinstance(alpha, (int, float, np.number)) or not 0 < float(alpha) < 1:
        raise ValueError(f"The 'alpha' parameter of {function} must be a number in (0, 1). Got {alpha!r} instead.")
    return float(alpha)


def bootstrap_indices(n: int, n_boot: int, seed: int = 0) -> np.ndarray:
    """Row indices of ``n_boot`` bootstrap resamples of ``n`` units.

    Parameters
    ----------
    n
        Number of units to resample (>= 0).
    n_boot
        Number of resamples (>= 0).
    seed
        Seed of ``numpy.random.default_rng``.

    Returns
    -------
    numpy.ndarray
        ``(n_boot, n)`` ``int64`` in ``[0, n)``; row ``b`` is resample ``b``.
    """
    n = _check_int("n", n, minimum=0, function="bootstrap_indices")
    n_boot = _check_int("n_boot", n_boot, minimum=0, function="bootstrap_indices")
    if n == 0 or n_boot == 0:
        return np.zeros((n_boot, n), dtype=np.int64)
    return np.random.default_rng(seed).integers(0, n, size=(n_boot, n), dtype=np.int64)


def iter_bootstrap_indices(
    n: int, n_boot: int, seed: int = 0, *, max_elements: int = MAX_ELEMENTS
) -> Iterator[np.ndarray]:
    """The rows of :func:`bootstrap_indices` in chunks of at most ``max_elements`` indices.

    The chunks are drawn one after another from the same generator, so ``np.concatenate`` of them is
    exactly ``bootstrap_indices(n, n_boot, seed)``.

    Yields
    ------
    numpy.ndarray
        ``(c, n)`` ``int64``, ``c >= 1`` resamples at a time.
    """
    n = _check_int("n", n, minimum=0, function="iter_bootstrap_indices")
    n_boot = _check_int("n_boot", n_boot, minimum=0, function="iter_bootstrap_indices")
    max_elements = _check_int("max_elements", max_elements, minimum=1, function="iter_bootstrap_indices")
    if n_boot == 0:
        return
    if n == 0:
        yield np.zeros((n_boot, 0), dtype=np.int64)
        return
    rng = np.random.default_rng(seed)
    chunk = max(1, min(n_boot, max_elements // n))
    for start in range(0, n_boot, chunk):
        yield rng.integers(0, n, size=(min(chunk, n_boot - start), n), dtype=np.int64)


def bootstrap_weights(indices: np.ndarray, n: int) -> np.ndarray:
    """How many times each unit appears in each resample.

    Parameters
    ----------
    indices
        ``(c, m)`` resampled indices in ``[0, n)`` (a chunk of :func:`bootstrap_indices`).
    n
        Number of units.

    Returns
    -------
    numpy.ndarray
        ``(c, n)`` ``float64`` counts; ``weights @ values`` is the resampled sum of ``values``.
    """
    c = indices.shape[0]
    keys = (indices + (np.arange(c, dtype=np.int64) * n)[:, None]).ravel()
    return np.bincount(keys, minlength=c * n).reshape(c, n).astype(np.float64)


def bootstrap_distribution(
    statistic: Callable[[np.ndarray], np.ndarray],
    n: int,
    *,
    n_boot: int = DEFAULT_N_BOOT,
    seed: int = 0,
    max_elements: int = MAX_ELEMENTS,
) -> np.ndarray:
    """Bootstrap distribution of statistics that are functions of resampling weights.

    Vectorised over resamples: ``statistic`` receives a whole chunk of resamples as weights.

    Parameters
    ----------
    statistic
        Maps ``(c, n)`` weights (:func:`bootstrap_weights`) to ``(c,)`` or ``(c, q)`` values, NaN
        where undefined. Weighted sums ``weights @ x`` give resampled totals; per-class counts are
        ``weights @ one_hot``.
    n
        Number of units.
    n_boot, seed, max_elements
        As in :func:`iter_bootstrap_indices`.

    Returns
    -------
    numpy.ndarray
        ``(n_boot,)`` or ``(n_boot, q)`` resampled statistics, in the order of :func:`bootstrap_indices`.
    """
    parts = [np.asarray(statistic(bootstrap_weights(idx, n)), dtype=np.float64)
             for idx in iter_bootstrap_indices(n, n_boot, seed, max_elements=max_elements)]
    if not parts:
        return np.zeros((0,), dtype=np.float64)
    return np.concatenate(parts, axis=0)


def percentile_interval(
    samples: np.ndarray, alpha: float = ALPHA, *, what: str = "statistic"
) -> tuple[float, float] | np.ndarray:
    """Percentile interval of bootstrap samples, ignoring NaN (undefined) resamples.

    Parameters
    ----------
    samples
        ``(n_boot,)`` or ``(n_boot, q)`` resampled statistics.
    alpha
        1 - coverage.
    what
        Name used in the log message about undefined resamples.

    Returns
    -------
    tuple of float or numpy.ndarray
        ``(low, high)`` for 1-d samples; a ``(q, 2)`` array for 2-d samples. NaN where every resample
        is undefined (or there are none).
    """
    alpha = _check_alpha(alpha, function="percentile_interval")
    s = np.asarray(samples, dtype=np.float64)
    flat = s.ndim == 1
    s2 = s[:, None] if flat else s
    out = np.full((s2.shape[1], 2), np.nan)
    for j in range(s2.shape[1]):
        column = s2[:, j]
        finite = column[~np.isnan(column)]
        dropped = column.size - finite.size
        if dropped:
            level = logging.WARNING if dropped >= NAN_WARN_FRACTION * column.size else logging.DEBUG
            log.log(level, "bootstrap of %s: %d of %d resamples undefined (NaN), left out of the interval",
                    what, dropped, column.size)
        if finite.size:
            out[j] = np.quantile(finite, [alpha / 2, 1 - alpha / 2])
    if flat:
        return float(out[0, 0]), float(out[0, 1])
    return out


def bootstrap_ci(
    values: np.ndarray,
    *,
    n_boot: int = DEFAULT_N_BOOT,
    seed: int = 0,
    alpha: float = ALPHA,
    statistic: Callable[..., object] = np.mean,
    max_elements: int = MAX_ELEMENTS,
) -> tuple[float, float]:
    """Percentile bootstrap interval of a statistic of per-unit values.

    Parameters
    ----------
    values
        ``(n,)`` one value per unit (e.g. 1/0 correct per image).
    n_boot, seed, alpha
        Number of resamples, seed of the generator, 1 - coverage.
    statistic
        ``np.mean`` (default; vectorised as resampled sums / n) or any function accepting an
        ``axis`` keyword (``np.median``, ``np.std``, ...), applied to ``(c, n)`` resampled values.
    max_elements
        Bound on resampled values held in memory at once.

    Returns
    -------
    tuple of float
        ``(low, high)``; ``(nan, nan)`` when ``values`` is empty or ``n_boot`` is 0.
    """
    _check_int("n_boot", n_boot, minimum=0, function="bootstrap_ci")
    alpha = _check_alpha(alpha, function="bootstrap_ci")
    x = np.asarray(values, dtype=np.float64)
    if x.ndim != 1:
        raise ValueError(f"The 'values' parameter of bootstrap_ci must be 1-d (n,). Got shape {x.shape} instead.")
    n = x.size
    if n == 0 or n_boot == 0:
        return (np.nan, np.nan)
    if statistic is np.mean:
        samples = bootstrap_distribution(lambda w: w @ x / n, n, n_boot=n_boot, seed=seed, max_elements=max_elements)
    else:
        parts = [np.asarray(statistic(x[idx], axis=1), dtype=np.float64)
                 for idx in iter_bootstrap_indices(n, n_boot, seed, max_elements=max_elements)]
        samples = np.concatenate(parts)
    return percentile_interval(samples, alpha, what=getattr(statistic, "__name__", "statistic"))


def bootstrap_ci_fn(
    fn: Callable[[np.ndarray], float],
    n: int,
    *,
    n_boot: int = DEFAULT_N_BOOT,
    seed: int = 0,
    alpha: float = ALPHA,
) -> tuple[float, float]:
    """Percentile bootstrap interval of a statistic that needs the whole resample.

    For statistics that are not a function of per-unit sums (e.g. a rank correlation). Calls ``fn``
    once per resample; prefer :func:`bootstrap_distribution` where the statistic can be written on
    resampling weights.

    Parameters
    ----------
    fn
        Maps ``(n,)`` resampled indices to a float; NaN (or an infinite value) where undefined on
        that resample, which is then ignored.
    n
        Number of units.
    n_boot, seed, alpha
        As in :func:`bootstrap_ci` (same resamples as :func:`bootstrap_indices`).

    Returns
    -------
    tuple of float
        ``(low, high)``; ``(nan, nan)`` when no resample is defined.
    """
    n = _check_int("n", n, minimum=0, function="bootstrap_ci_fn")
    n_boot = _check_int("n_boot", n_boot, minimum=0, function="bootstrap_ci_fn")
    alpha = _check_alpha(alpha, function="bootstrap_ci_fn")
    if n == 0 or n_boot == 0:
        return (np.nan, np.nan)
    samples = np.empty(n_boot)
    b = 0
    for chunk in iter_bootstrap_indices(n, n_boot, seed):
        for idx in chunk:
            value = float(fn(idx))
            samples[b] = value if np.isfinite(value) else np.nan
            b += 1
    return percentile_interval(samples, alpha, what=getattr(fn, "__name__", "statistic"))


_ALTERNATIVES = ("greater", "less", "two-sided")


def permutation_pvalue(observed: float, null: np.ndarray, alternative: str = "greater") -> float:
    """Permutation p-value, counting the observed statistic as one of the permutations.

    Parameters
    ----------
    observed
        The statistic on the real data.
    null
        ``(n_perm,)`` the statistic on permuted data (NaN entries are left out).
    alternative
        ``"greater"``: ``(1 + #{null >= observed}) / (1 + n_perm)``; ``"less"``: with ``<=``;
        ``"two-sided"``: by distance from the null mean, ``|null - mean| >= |observed - mean|``.

    Returns
    -------
    float
        In ``(0, 1]``; NaN if ``observed`` is NaN.
    """
    if alternative not in _ALTERNATIVES:
        raise ValueError(
            f"The 'alternative' parameter of permutation_pvalue must be one of {', '.join(_ALTERNATIVES)}. "
            f"Got {alternative!r} instead."
        )
    z = np.asarray(null, dtype=np.float64).ravel()
    z = z[~np.isnan(z)]
    obs = float(observed)
    if np.isnan(obs):
        return float("nan")
    if alternative == "greater":
        hits = np.count_nonzero(z >= obs)
    elif alternative == "less":
        hits = np.count_nonzero(z <= obs)
    else:
        centre = z.mean() if z.size else obs
        # A relative tolerance so that ties in distance are not lost to rounding of the mean.
        dist_obs = abs(obs - centre)
        hits = np.count_nonzero(np.abs(z - centre) >= dist_obs * (1 - 1e-12))
    return float((1 + hits) / (1 + z.size))


def null_summary(observed: float, null: np.ndarray, alternative: str = "greater") -> dict[str, float]:
    """Where the observed statistic lies in its null distribution.

    Parameters
    ----------
    observed
        The statistic on the real data.
    null
        ``(n_perm,)`` the statistic under the null (NaN entries are left out).
    alternative
        Passed to :func:`permutation_pvalue`.

    Returns
    -------
    dict
        ``null_mean``, ``null_std`` (ddof 0), ``z = (observed - null_mean) / null_std`` (NaN when the
        std is 0) and ``p_value``.
    """
    z = np.asarray(null, dtype=np.float64).ravel()
    z = z[~np.isnan(z)]
    mean = float(z.mean()) if z.size else float("nan")
    std = float(z.std()) if z.size else float("nan")
    score = (float(observed) - mean) / std if z.size and std > 0 else float("nan")
    return {"null_mean": mean, "null_std": std, "z": score,
            "p_value": permutation_pvalue(observed, z, alternative)}


def cluster_ci_note(n_units: int, unit: str = "species") -> str:
    """Why a row has no CI (``""`` when it has one): fewer than :data:`MIN_CLUSTERS` units."""
    return "" if int(n_units) >= MIN_CLUSTERS else f"no CI: {int(n_units)} {unit} (< {MIN_CLUSTERS})"


def cluster_ci(
    statistic: Callable[[np.ndarray], np.ndarray],
    n_units: int,
    *,
    n_boot: int = DEFAULT_N_BOOT,
    seed: int = 0,
    alpha: float = ALPHA,
    unit: str = "species",
    max_elements: int = MAX_ELEMENTS,
) -> tuple[float, float, str]:
    """Percentile CI of a statistic over a cluster bootstrap of whole units (species or clades).

    Parameters
    ----------
    statistic
        Maps ``(c, n_units)`` resampling weights (how many times each unit is drawn, as in
        :func:`bootstrap_weights`) to ``(c,)`` values, NaN where undefined. Every image of a unit
        drawn ``k`` times counts ``k`` times.
    n_units
        Number of units (species or clades) resampled.
    n_boot, seed, alpha, max_elements
        As in :func:`bootstrap_distribution` / :func:`percentile_interval`.
    unit
        Name of the unit, for the note.

    Returns
    -------
    tuple
        ``(low, high, note)``: NaN bounds and a note (:func:`cluster_ci_note`) when there are fewer
        than :data:`MIN_CLUSTERS` units or ``n_boot`` is 0.
    """
    n_units = _check_int("n_units", n_units, minimum=0, function="cluster_ci")
    note = cluster_ci_note(n_units, unit)
    if note or n_boot == 0:
        return float("nan"), float("nan"), note or "no CI: 0 bootstrap resamples"
    samples = bootstrap_distribution(statistic, n_units, n_boot=n_boot, seed=seed, max_elements=max_elements)
    low, high = percentile_interval(samples, alpha, what=f"{unit} bootstrap")
    return low, high, ""
