"""What several probes share: tie handling, null tables, sample sizes, settings and default sizes.

One definition of each, used by every probe module (a probe module imports nothing private from
another):

* **Ties.** Distances equal up to rounding must tie exactly, or rounding (BLAS summation order, the
  Gram form of a distance) decides their order, i.e. the species order does. :func:`zero_ties` sets
  distances at or below a tolerance to 0; :func:`snap_ties` also makes sorted neighbours at most the
  tolerance apart share one value; :func:`tie_null` sets the null values within a tolerance of the
  observed statistic to it, so a permutation that reproduces the observed labelling counts as at
  least as extreme whatever the rounding; :func:`average_ranks` ranks with ties sharing their mean rank.
* **Null tables.** :func:`null_frame` (and :func:`empty_null_frame`) give the ``rank, metric,
  permutation, value`` table of null samples that ``latent probe`` saves beside ``metrics.csv``.
* **Sampling.** :func:`max_items_for_pairs`: the most items whose pairs fit in ``max_pairs`` (the one
  formula every probe that samples species or images uses); :func:`stratified_species` (a systematic
  sample of species along lineage order) and :func:`stratified_sample` (rows stratified by species),
  both seeded.
* **Settings.** :func:`int_setting` reads an integer probe setting with the one error message.
* **Defaults.** :data:`DEFAULT_N_BOOT_EXPENSIVE` and :data:`DEFAULT_EXPENSIVE_PERMUTATIONS`; the level
  ``ALPHA`` and ``DEFAULT_N_BOOT`` (resamples of a cheap CI) are :mod:`latent.stats`' (re-exported).
  :func:`default_permutations`: the one rule for the stated smaller null of an expensive statistic on
  large data (a cap, fewer when one permutation's work exceeds a budget, never below
  :data:`MIN_PERMUTATIONS`), used by the separability and clusters probes.
* **Progress.** :func:`progress`: a tqdm bar on stderr for a long loop (permutation nulls), only when
  stderr is a terminal and not under pytest; otherwise the plain iterable.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from typing import Any

import numpy as np
import pandas as pd

from latent.errors import InputError
from latent.stats import ALPHA, DEFAULT_N_BOOT  # defined once, in latent.stats (re-exported here)

__all__ = [
    "ALPHA",
    "DEFAULT_N_BOOT",
    "DEFAULT_N_BOOT_EXPENSIVE",
    "DEFAULT_EXPENSIVE_PERMUTATIONS",
    "MIN_PERMUTATIONS",
    "default_permutations",
    "progress",
    "NULL_COLUMNS",
    "average_ranks",
    "empty_null_frame",
    "int_setting",
    "max_items_for_pairs",
    "null_frame",
    "run_starts",
    "snap_ties",
    "stratified_sample",
    "largest_sample",
    "stratified_species",
    "tie_null",
    "zero_ties",
]

#: Resamples of a CI whose resample is expensive (ranks of all pairs, an SVD, a tree): the default is
#: ``min(n_boot, DEFAULT_N_BOOT_EXPENSIVE)``.
DEFAULT_N_BOOT_EXPENSIVE = 200
#: Permutations of a null whose statistic is expensive (silhouette, NC1): the default is
#: ``min(options.permutations, DEFAULT_EXPENSIVE_PERMUTATIONS)``.
DEFAULT_EXPENSIVE_PERMUTATIONS = 199
#: The fewest permutations :func:`default_permutations` gives on large data (p can reach 0.05).
MIN_PERMUTATIONS = 19
#: Smallest number of loop steps worth a progress bar.
PROGRESS_MIN = 20


def default_permutations(requested: int, work: float, *, cap: int, budget: float,
                         floor: int = MIN_PERMUTATIONS) -> int:
    """Permutations of an expensive null when its ``permutations`` setting is absent.

    ``min(requested, cap)``, fewer on large data (``budget / work``: the permutations whose work fits
    in the budget) but never fewer than ``min(requested, floor)``. The one rule of every probe whose
    null (or expensive bootstrap) is work-limited; the probe states the number in its ``permutations``
    column and ``info``, and an explicit setting is used as given (this function is not called).

    Parameters
    ----------
    requested
        ``options.permutations``.
    work
        The work of one permutation, in the probe's unit (multiply-adds).
    cap
        The most permutations the default gives.
    budget
        The work the default null may spend, in the same unit as ``work``.
    floor
        The fewest it gives (:data:`MIN_PERMUTATIONS`, 19: p reaches 0.05).

    Returns
    -------
    int
        The number of permutations.
    """
    affordable = int(budget // work) if work > 0 else int(cap)
    return min(int(requested), max(int(floor), min(int(cap), affordable)))


def show_progress() -> bool:
    """Whether a progress bar may be drawn: stderr is a terminal and no test is running."""
    import os
    import sys

    isatty = getattr(sys.stderr, "isatty", None)
    return bool(isatty and isatty()) and "PYTEST_CURRENT_TEST" not in os.environ


def progress(iterable: Any, *, total: int, desc: str) -> Any:
    """``iterable`` wrapped in a tqdm bar on stderr (``desc``, ``total`` steps) when :func:`show_progress`
    and ``total >= PROGRESS_MIN``; else ``iterable`` itself. Never on stdout, never in tests or logs."""
    if total < PROGRESS_MIN or not show_progress():
        return iterable
    try:
        from tqdm.auto import tqdm
    except ImportError:  # pragma: no cover - tqdm is a dependency
        return iterable
    return tqdm(iterable, total=total, desc=desc, leave=False, dynamic_ncols=True)


#: Columns of a table of null samples.
NULL_COLUMNS = ("rank", "metric", "permutation", "value")


# ---------------------------------------------------------------------------------------- ties
def zero_ties(D: np.ndarray, tol: float) -> np.ndarray:
    """Set the distances of ``D`` at or below ``tol`` to exactly 0 (in place), so that tied vectors tie
    exactly and no tie is broken by the rounding of a row order. Returns ``D``."""
    D[D <= tol] = 0.0
    return D


def snap_ties(values: np.ndarray, tol: float) -> np.ndarray:
    """``values`` with near-ties made exact: values within ``tol`` of 0 become 0, and values whose sorted
    neighbours are at most ``tol`` apart share one value (the smallest of their run).

    Rounding (the Gram-matrix form of a distance, BLAS summation order) can make copies of one distance
    differ in the last bits, and which copy comes out smaller then depends on where the rows sit, i.e.
    on the species order. Snapping makes such ties exact so that every later step treats them alike.
    A copy is returned (float64).
    """
    v = np.array(values, dtype=np.float64, copy=True)
    if v.size == 0:
        return v
    v[np.abs(v) <= tol] = 0.0
    order = np.argsort(v, kind="stable")
    s = v[order]
    new = np.r_[True, np.diff(s) > tol]
    v[order] = s[new][np.cumsum(new) - 1]
    return v


def tie_null(null: np.ndarray, observed: float, *, rtol: float = 0.0, atol: float = 0.0) -> np.ndarray:
    """A float64 copy of ``null`` with the values within ``atol + rtol * |observed|`` of ``observed`` set to it.

    A permutation that reproduces the observed labelling gives the observed statistic summed in another
    order; rounding must not decide whether it counts as ``>=`` (ties count against the observed value,
    as in :func:`latent.stats.permutation_pvalue`). Nothing changes when ``observed`` is not finite.
    """
    null = np.array(null, dtype=np.float64)
    if np.isfinite(observed):
        null[np.abs(null - observed) <= atol + rtol * abs(observed)] = observed
    return null


def average_ranks(values: np.ndarray) -> np.ndarray:
    """``(n,)`` float64 ranks 1..n of ``values``, tied values sharing their mean rank (Spearman's ranks)."""
    from scipy.stats import rankdata

    return rankdata(values, method="average").astype(np.float64)


def run_starts(values: np.ndarray) -> np.ndarray:
    """``(runs,)`` start positions of the runs of equal values of a ``(k,)`` array."""
    values = np.asarray(values)
    if values.size == 0:
        return np.zeros(0, dtype=np.int64)
    return np.flatnonzero(np.r_[True, values[1:] != values[:-1]])


# ---------------------------------------------------------------------------------- null tables
def null_frame(rank: str, metric: str, null: np.ndarray) -> pd.DataFrame:
    """The null samples of one statistic: columns :data:`NULL_COLUMNS`, one row per permutation."""
    return pd.DataFrame({"rank": rank, "metric": metric, "permutation": np.arange(len(null), dtype=np.int64),
                         "value": np.asarray(null, dtype=np.float64)})


def empty_null_frame() -> pd.DataFrame:
    """A table of null samples with no rows (a probe run without permutations), typed as :func:`null_frame`'s."""
    return pd.DataFrame({"rank": pd.Series(dtype=str), "metric": pd.Series(dtype=str),
                         "permutation": pd.Series(dtype=np.int64), "value": pd.Series(dtype=np.float64)})


# ------------------------------------------------------------------------------------- sampling
def max_items_for_pairs(max_pairs: int) -> int:
    """Largest ``m`` with ``m (m - 1) / 2 <= max_pairs`` (at least 1)."""
    m = int((1 + math.isqrt(1 + 8 * max(int(max_pairs), 0))) // 2)
    while m * (m - 1) // 2 > max_pairs:
        m -= 1
    while (m + 1) * m // 2 <= max_pairs:
        m += 1
    return max(m, 1)


def stratified_species(n_species: int, m: int, seed: int = 0) -> np.ndarray:
    """``m`` of ``n_species`` species by systematic sampling along lineage order (random start).

    Species are numbered in lineage order, so equally spaced positions give every clade a share
    of the sample proportional to its size (stratification by every rank at once).

    Returns
    -------
    numpy.ndarray
        ``(m,)`` sorted int64 species indices (all species when ``m >= n_species``).
    """
    if m >= n_species:
        return np.arange(n_species, dtype=np.int64)
    step = n_species / m
    start = np.random.default_rng([int(seed), 0x5A3]).random() * step
    return np.minimum(np.floor(start + step * np.arange(m)).astype(np.int64), n_species - 1)


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


def largest_sample(species: np.ndarray, n_species: int, fits: Callable[[np.ndarray], bool], *, max_rows: int,
                   min_per_species: int, seed: int, tag: int, smallest: int = 50) -> tuple[np.ndarray, bool]:
    """The largest of the samples :func:`stratified_sample` draws (at most ``max_rows`` rows) for which
    ``fits(rows)`` holds: the one rule for a sample sized to a work budget.

    The samples of growing size are nested (more rows per species, or a longer prefix of one seeded order of
    the species), so a work that grows with the rows and their taxa grows with the size, and a bisection on
    the size finds the largest that fits. Below ``smallest`` rows nothing is tried: that sample is returned
    even when it does not fit.

    Returns
    -------
    rows : numpy.ndarray
        ``(m,)`` sorted int64 rows.
    whole : bool
        Whether the sample of ``max_rows`` rows (every row when there are no more) fits: then ``rows`` is it.
    """
    def draw(m: int) -> np.ndarray:
        return np.sort(stratified_sample(species, n_species, m, min_per_species=min_per_species, seed=seed,
                                         tag=tag)[0])

    hi = min(len(species), int(max_rows))
    lo = min(int(smallest), hi)
    rows = draw(hi)
    if fits(rows):
        return rows, True
    hi -= 1
    while lo < hi:
        mid = (lo + hi + 1) // 2
        if fits(draw(mid)):
            lo = mid
        else:
            hi = mid - 1
    return draw(lo), False


# ------------------------------------------------------------------------------------- settings
def int_setting(cfg: Mapping[str, Any], key: str, default: "int | None", probe: str, minimum: int = 0) -> int:
    """The integer setting ``key`` of ``probe`` from ``cfg`` (``default`` if absent), or an InputError
    naming the setting, the value and how to set it."""
    value = cfg.get(key, default)
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < minimum:
        raise InputError(f"The {key!r} setting of the {probe} probe must be an integer >= {minimum}. "
                         f"Got {value!r}; set it with options.extra={{'{probe}': {{'{key}': ...}}}}.")
    return int(value)


def permutations_used(metrics: Any, asked: "int | None" = None) -> str:
    """What each probe's nulls used, from its rows' ``permutations`` column: ``"levels 999, separability 19"``
    (several counts of one probe joined by ``/``), with ``"(asked N)"`` when some used fewer than asked.

    Nulls that are expensive use a stated smaller number on large data (:func:`default_permutations`;
    ``PROBE.permutations`` sets it); this is how the console and the report's provenance say so.
    Returns ``""`` when no row has a permutation count.
    """
    if metrics is None or not len(metrics) or "permutations" not in metrics.columns or "probe" not in metrics.columns:
        return ""
    rows = metrics[metrics["features"].fillna("model") == "model"] if "features" in metrics.columns else metrics
    rows = rows[rows["permutations"].notna() & (rows["permutations"] > 0)]
    parts, fewer = [], False
    for probe, table in rows.groupby("probe", sort=False):
        counts = sorted({int(v) for v in table["permutations"]})
        fewer = fewer or (asked is not None and probe != "levels" and min(counts) < int(asked))
        parts.append(f"{probe} {'/'.join(map(str, counts))}")
    if not parts:
        return ""
    note = ", ".join(parts)
    if fewer:
        note += (f" (asked {int(asked)}; each row's count is in its 'permutations' column: expensive nulls use "
                 f"fewer unless PROBE.permutations is set)")
    return note
