"""Is each rank visible beyond its parent? The primary statistic per rank, under a restricted null.

The question a verdict at rank ``r`` answers is not "is there any taxonomic structure?" (the free
species-permutation null of the other probes) but "are the rank-``r`` taxa visible *beyond* their
parent?": do species of one family sit closer together than species of different families of the
same order, once the genera are kept whole?

Levels
------
Ranks whose partitions of the probed species are identical (every order holds one family, as in
cub10's 4 orders and 4 families; one kingdom, one phylum, one class) are one *level*, named by its
ranks (``"order=family"``) and tested once. A level with a single taxon is not testable. The parent of
a level is the level above it (the root for the top one); its *units* are the taxa of the level below
(for the level whose partition is the species: the images).

Statistic (``rank_distance_ratio``)
-----------------------------------
For an item ``i`` (a species centroid, or an image at the species level) of taxon ``T`` with parent
``P``::

    ratio(i) = mean d(i, j) over j in T, j in another unit than i
               / mean d(i, j) over j in P, j not in T

i.e. the distance to relatives whose lowest shared taxon is exactly ``T`` over the distance to
relatives whose lowest shared taxon is exactly ``P`` (one step of the distance-by-LCA-height curve,
with the finer structure held out). Items lacking either kind of relative are left out. Images are
averaged within their species, and the statistic is the mean over species: **the species is the unit**.
Below 1 means the level is visible beyond its parent; the null mean is near 1. Distances are those of
the probe options (cosine by default) between L2-normalised species centroids (images at the species
level, at most ``max_images_per_species`` per species, seeded).

Restricted null
---------------
Within every parent, the level's labels are permuted among the parent's units, whole units moving and
the number of units per taxon kept (Anderson & ter Braak 2003; permutation within blocks). Parent
structure and the structure inside units are the same in every permutation, so only the level itself
is tested. The number of distinct partitions this reaches is counted exactly; when it is at most the
requested number of permutations every distinct partition is enumerated once and the p-value is exact
(``exact=True``; the smallest reachable p is ``1 / distinct``). Otherwise ``permutations`` random ones
are drawn (seeded) and ``p = (1 + #{null <= observed}) / (1 + permutations)``: ties count against the
observed value, never for it. A level whose smallest reachable p exceeds ``alpha`` (setting, default
0.05) is *not testable*, with the reason. So is a level whose distances are all tied (identical
vectors): no p-value is given then.

Uncertainty
-----------
The CI of the statistic is a cluster bootstrap (:func:`latent.stats.cluster_ci`) over the level's parent
taxa (clades): every ratio inside one parent is computed from the same distances (the species of one
family share their relatives), so the parents, not the species, are the independent units; each
resample draws parents with replacement, keeping every species' ratio as observed. Below
:data:`latent.stats.MIN_CLUSTERS` parents there is no CI (``ci_note`` says why; the top level, whose
parent is the root, never has one). ``effect`` is
``value - null_mean`` (negative when the level is visible), with the same interval shifted.

Rows (``probe="levels"``): one per rank (merged ranks repeat their level's numbers; ``level`` names it)
with ``rank, metric, value, ci_low, ci_high, n`` (species behind the value), the null columns,
``effect, effect_ci_low, effect_ci_high, n_species, n_taxa, n_parents, n_units, unit, distinct,
min_p, exact, testable, reason, level, ci_note``. Table ``species``: each species' value per level, the
input of paired model comparisons (:mod:`latent.compare`).
"""

from __future__ import annotations

import itertools
import logging
import math
from collections import Counter
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from latent.errors import InputError
from latent.probes.base import ProbeData, ProbeOptions, ProbeResult, null_row, pairwise_distances
from latent.probes.common import ALPHA, DEFAULT_N_BOOT
from latent.ranks import RANK_NAMES
from latent.stats import cluster_ci, null_summary

__all__ = [
    "Level",
    "levels_of",
    "count_partitions",
    "enumerate_partitions",
    "restricted_label_permutations",
    "LevelStatistic",
    "level_statistics",
    "probe_levels",
    "DEFAULTS",
]

log = logging.getLogger(__name__)

METRIC = "rank_distance_ratio"

DEFAULTS: dict[str, Any] = {
    "permutations": None,  # None: the probe options' permutations
    "alpha": ALPHA,
    "n_boot": DEFAULT_N_BOOT,
    "max_images_per_species": 10,
    "max_species": 3000,
}

#: Relative tolerance under which two distances (or statistics) count as tied.
TIE_TOL = 1e-10


@dataclass(frozen=True)
class Level:
    """Ranks with one partition of the species.

    Attributes
    ----------
    ranks
        Rank indices (0..6) of the level, coarse to fine.
    n_taxa
        Taxa in the partition.
    """

    ranks: tuple[int, ...]
    n_taxa: int

    @property
    def name(self) -> str:
        return "=".join(RANK_NAMES[r] for r in self.ranks)

    @property
    def rank(self) -> int:
        """The finest rank of the level (the codes used)."""
        return self.ranks[-1]


def levels_of(codes: np.ndarray) -> list[Level]:
    """Group consecutive ranks with identical partitions.

    Parameters
    ----------
    codes
        ``(S, 7)`` lineage codes of the species (nested: rank ``r + 1`` refines rank ``r``).

    Returns
    -------
    list of Level
        Coarse to fine; the last one is the species partition.
    """
    counts = [len(np.unique(codes[:, r])) for r in range(codes.shape[1])]
    levels: list[list[int]] = []
    for r, c in enumerate(counts):
        if levels and counts[levels[-1][-1]] == c:
            levels[-1].append(r)
        else:
            levels.append([r])
    return [Level(tuple(rs), counts[rs[0]]) for rs in levels]


# ------------------------------------------------------------------------------ partitions
def _partition_count(sizes: Sequence[int]) -> int:
    """Distinct set partitions of ``sum(sizes)`` units into blocks of the given sizes."""
    m = sum(sizes)
    count = math.factorial(m)
    for s in sizes:
        count //= math.factorial(s)
    for mult in Counter(sizes).values():
        count //= math.factorial(mult)
    return count


def count_partitions(labels: np.ndarray, parents: np.ndarray) -> int:
    """Distinct partitions reachable by permuting ``labels`` among units within each parent.

    Parameters
    ----------
    labels, parents
        ``(U,)`` the level's taxon and the parent of each unit.

    Returns
    -------
    int
        The product over parents of the number of set partitions of its units into blocks of the
        observed sizes (a relabelling of equal-sized taxa is the same partition).
    """
    total = 1
    for q in np.unique(parents):
        sizes = list(Counter(labels[parents == q].tolist()).values())
        total *= _partition_count(sizes)
    return total


def _block_partitions(m: int, sizes: Sequence[int]) -> Iterator[np.ndarray]:
    """Each set partition of ``range(m)`` into blocks of ``sizes`` once, as ``(m,)`` block ids."""
    labels = np.full(m, -1, dtype=np.int64)

    def rec(remaining: tuple[int, ...], left: Counter, block: int) -> Iterator[np.ndarray]:
        if not remaining:
            yield labels.copy()
            return
        first, rest = remaining[0], remaining[1:]
        for size in sorted(s for s, c in left.items() if c > 0):
            left[size] -= 1
            for comb in itertools.combinations(rest, size - 1):
                members = (first, *comb)
                labels[list(members)] = block
                chosen = set(comb)
                yield from rec(tuple(x for x in rest if x not in chosen), left, block + 1)
            labels[[first]] = -1
            left[size] += 1

    yield from rec(tuple(range(m)), Counter(sizes), 0)


def enumerate_partitions(labels: np.ndarray, parents: np.ndarray) -> np.ndarray:
    """Every distinct restricted partition (see :func:`count_partitions`) as label arrays.

    Returns
    -------
    numpy.ndarray
        ``(count, U)`` int64; labels are block ids offset per parent (only equality within a parent
        matters). The observed partition is one of the rows.
    """
    U = len(labels)
    per_parent = []
    for q in np.unique(parents):
        idx = np.flatnonzero(parents == q)
        sizes = list(Counter(labels[idx].tolist()).values())
        per_parent.append((idx, [p + q * U for p in _block_partitions(len(idx), sizes)]))
    rows = []
    for combo in itertools.product(*(options for _, options in per_parent)):
        row = np.empty(U, dtype=np.int64)
        for (idx, _), part in zip(per_parent, combo):
            row[idx] = part
        rows.append(row)
    return np.asarray(rows, dtype=np.int64).reshape(-1, U)


def restricted_label_permutations(labels: np.ndarray, parents: np.ndarray, n_perm: int,
                                  seed: int = 0) -> np.ndarray:
    """``n_perm`` random permutations of ``labels`` among units within each parent (sizes kept).

    Returns
    -------
    numpy.ndarray
        ``(n_perm, U)`` permuted labels (seeded: the same arguments give the same rows).
    """
    labels = np.asarray(labels, dtype=np.int64)
    parents = np.asarray(parents, dtype=np.int64)
    rng = np.random.default_rng([int(seed), 0x1E7E15])
    by_parent = np.argsort(parents, kind="stable")
    sorted_labels = labels[by_parent]
    out = np.empty((int(n_perm), len(labels)), dtype=np.int64)
    for p in range(int(n_perm)):
        order = np.lexsort((rng.random(len(labels)), parents))
        out[p, order] = sorted_labels
    return out


# ------------------------------------------------------------------------------ the statistic
@dataclass
class _Block:
    """One parent: its items, their units, and item-to-unit distance sums."""

    items: np.ndarray     # (m,) item indices (global)
    unit: np.ndarray      # (m,) local unit of each item
    units: np.ndarray     # (k,) global unit indices
    sums: np.ndarray      # (m, k) sum of distances from item to the items of each unit
    sizes: np.ndarray     # (k,) items per unit


class LevelStatistic:
    """The ratio statistic of one level for any relabelling of its units (vectorised over labellings).

    Parameters
    ----------
    X
        ``(n, d)`` items (species centroids or images).
    item_unit
        ``(n,)`` unit of each item (0..U-1).
    unit_label, unit_parent
        ``(U,)`` the level's taxon and the parent of each unit.
    item_cluster
        ``(n,)`` species of each item (0..C-1): item ratios are averaged per species.
    metric
        ``"cosine"`` or ``"euclidean"``.
    """

    def __init__(self, X: np.ndarray, item_unit: np.ndarray, unit_label: np.ndarray, unit_parent: np.ndarray,
                 item_cluster: np.ndarray, metric: str) -> None:
        self.unit_label = np.asarray(unit_label, dtype=np.int64)
        self.unit_parent = np.asarray(unit_parent, dtype=np.int64)
        self.item_cluster = np.asarray(item_cluster, dtype=np.int64)
        self.n_clusters = int(self.item_cluster.max()) + 1 if len(self.item_cluster) else 0
        self.blocks: list[_Block] = []
        lo, hi = np.inf, -np.inf
        X = np.asarray(X, dtype=np.float64)
        # distances below this are zero (float32 rounding of identical vectors): never a signal
        if metric == "cosine":
            self.tol = 1e-6
        else:
            spread = np.sqrt(((X - X.mean(axis=0)) ** 2).sum(axis=1).mean()) if len(X) else 0.0
            self.tol = 1e-6 * float(spread)
        item_parent = self.unit_parent[item_unit]
        for q in np.unique(self.unit_parent):
            if len(np.unique(self.unit_label[self.unit_parent == q])) < 2:
                continue  # one taxon in this parent: no item here has relatives outside its taxon
            items = np.flatnonzero(item_parent == q)
            units, local = np.unique(item_unit[items], return_inverse=True)
            D = pairwise_distances(X[items], metric=metric)
            D[D <= self.tol] = 0.0
            off = D[~np.eye(len(items), dtype=bool)]
            if off.size:
                lo, hi = min(lo, off.min()), max(hi, off.max())
            onehot = np.zeros((len(items), len(units)))
            onehot[np.arange(len(items)), local] = 1.0
            self.blocks.append(_Block(items, local, units, D @ onehot, onehot.sum(axis=0)))
        #: all distances among the items that enter the statistic are equal (identical vectors ...)
        self.tied = bool(not np.isfinite(lo) or hi - lo <= max(self.tol, TIE_TOL * max(abs(lo), abs(hi))))

    def item_ratios(self, labels: np.ndarray) -> np.ndarray:
        """``(P, n)`` ratio of every item under each of ``P`` unit labellings ``(P, U)`` (NaN: not an anchor)."""
        labels = np.atleast_2d(labels)
        P = labels.shape[0]
        n = len(self.item_cluster)
        out = np.full((P, n), np.nan)
        for b in self.blocks:
            m, k = b.sums.shape
            chunk = max(1, (1 << 22) // max(1, m * k))
            own = np.zeros((m, k), dtype=bool)
            own[np.arange(m), b.unit] = True
            tot = b.sums.sum(axis=1) - b.sums[np.arange(m), b.unit]
            totc = b.sizes.sum() - b.sizes[b.unit]
            for s in range(0, P, chunk):
                L = labels[s:s + chunk][:, b.units]                  # (c, k)
                same = (L[:, b.unit][:, :, None] == L[:, None, :]) & ~own   # (c, m, k)
                num = np.einsum("cmk,mk->cm", same, b.sums)
                cnt = same @ b.sizes
                with np.errstate(divide="ignore", invalid="ignore"):
                    inside = num / cnt
                    outside = (tot - num) / (totc - cnt)
                    ratio = inside / outside
                ratio[(cnt == 0) | (totc - cnt == 0)] = np.nan
                ratio[(inside == 0) & (outside == 0)] = np.nan
                out[s:s + chunk, b.items] = ratio
        return out

    def cluster_values(self, labels: np.ndarray) -> np.ndarray:
        """``(P, C)`` mean item ratio per species (NaN where a species has no anchor item)."""
        r = self.item_ratios(labels)
        ok = np.isfinite(r)
        C = self.n_clusters
        sums = np.zeros((r.shape[0], C))
        counts = np.zeros((r.shape[0], C))
        for j in range(r.shape[0]):
            sums[j] = np.bincount(self.item_cluster[ok[j]], weights=r[j, ok[j]], minlength=C)
            counts[j] = np.bincount(self.item_cluster[ok[j]], minlength=C)
        with np.errstate(invalid="ignore"):
            return sums / counts

    def statistic(self, labels: np.ndarray) -> np.ndarray:
        """``(P,)`` mean over species of :meth:`cluster_values` (NaN when no species is an anchor)."""
        v = self.cluster_values(labels)
        with np.errstate(invalid="ignore"):
            ok = np.isfinite(v)
            return np.where(ok.any(axis=1), np.where(ok, v, 0).sum(axis=1) / np.maximum(ok.sum(axis=1), 1), np.nan)


@dataclass(frozen=True)
class LevelSetup:
    """Everything one level's test needs (built by :func:`level_setup`)."""

    level: Level
    parent: "Level | None"
    unit_name: str                      # "species" or "image" or a rank name
    statistic: "LevelStatistic | None"  # None: not testable (see reason)
    reason: str
    species: np.ndarray                 # (C,) species index (ProbeData numbering) of each cluster
    n_taxa: int
    n_parents: int
    n_units: int
    distinct: int
    groups: "np.ndarray | None" = None  # (C,) resampling unit of each species: its parent taxon
    group_name: str = "root"


def group_weights(weights: np.ndarray, groups: np.ndarray) -> np.ndarray:
    """Expand ``(c, G)`` clade resampling weights to ``(c, C)`` species weights (``groups``: ``(C,)``)."""
    return weights[:, groups]


def _sample_images(data: ProbeData, species: np.ndarray, cap: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng([int(seed), 0x1A6E5])
    rows = []
    for s in species:
        idx = np.flatnonzero(data.species == s)
        if len(idx) > cap:
            idx = np.sort(rng.choice(idx, cap, replace=False))
        rows.append(idx)
    return np.concatenate(rows) if rows else np.zeros(0, dtype=np.int64)


def level_setup(data: ProbeData, levels: list[Level], i: int, *, metric: str, species: np.ndarray,
                max_images_per_species: int, seed: int) -> LevelSetup:
    """Items, units and parents of level ``i`` over the given species (ProbeData indices)."""
    level = levels[i]
    parent = levels[i - 1] if i > 0 else None
    named = data.named[species][:, list(level.ranks)].all(axis=1)
    sp = species[named]
    codes = data.codes[sp]
    label = codes[:, level.rank]
    pcodes = codes[:, parent.rank] if parent is not None else np.zeros(len(sp), dtype=np.int64)
    n_taxa = len(np.unique(label))
    n_parents = len(np.unique(pcodes))
    species_level = i == len(levels) - 1 and level.n_taxa == len(species)  # (a sample of species, or all)
    unit_name = "image" if species_level else "=".join(RANK_NAMES[r] for r in levels[i + 1].ranks)
    empty = dict(statistic=None, species=sp, n_taxa=n_taxa, n_parents=n_parents, n_units=0, distinct=1)
    if level.n_taxa < 2 or n_taxa < 2:
        return LevelSetup(level, parent, unit_name, reason=f"one {level.name} taxon", **empty)
    if species_level:
        rows = _sample_images(data, sp, max_images_per_species, seed)
        X = data.X[rows].astype(np.float64)
        species_of_row = data.species[rows]
        cluster_of_species = {int(s): c for c, s in enumerate(sp)}
        item_cluster = np.asarray([cluster_of_species[int(s)] for s in species_of_row], dtype=np.int64)
        item_unit = np.arange(len(rows))
        unit_label = data.codes[species_of_row, level.rank]
        unit_parent = (data.codes[species_of_row, parent.rank] if parent is not None
                       else np.zeros(len(rows), dtype=np.int64))
    else:
        X = data.centroids[sp]
        item_cluster = np.arange(len(sp))
        child = levels[i + 1].rank
        _, item_unit = np.unique(codes[:, child], return_inverse=True)
        U = int(item_unit.max()) + 1
        first = np.zeros(U, dtype=np.int64)
        first[item_unit[::-1]] = np.arange(len(sp))[::-1]
        unit_label, unit_parent = label[first], pcodes[first]
    n_units = len(unit_label)
    if metric == "cosine" and (np.linalg.norm(X, axis=1) == 0).any():
        return LevelSetup(level, parent, unit_name, None, "zero vectors: cosine distance is undefined, no test",
                          species=sp, n_taxa=n_taxa, n_parents=n_parents, n_units=n_units, distinct=1)
    # keep only parents holding units of >= 2 taxa, and taxa holding >= 2 units somewhere
    distinct = count_partitions(unit_label, unit_parent)
    stat = LevelStatistic(X, item_unit, unit_label, unit_parent, item_cluster, metric)
    _, groups = np.unique(pcodes, return_inverse=True)
    common = dict(species=sp, n_taxa=n_taxa, n_parents=n_parents, n_units=n_units, distinct=distinct,
                  groups=groups, group_name=parent.name if parent is not None else "root")
    if not stat.blocks:
        return LevelSetup(level, parent, unit_name, None,
                          f"every {parent.name if parent else 'parent'} holds one {level.name} taxon", **common)
    if stat.tied:
        return LevelSetup(level, parent, unit_name, None, "all distances are tied (identical vectors): no test",
                          **common)
    return LevelSetup(level, parent, unit_name, stat, "", **common)


def _observed_labels(setup: LevelSetup) -> np.ndarray:
    return setup.statistic.unit_label[None, :]


def level_statistics(data: ProbeData, options: ProbeOptions, *, species: "np.ndarray | None" = None,
                     settings: "dict[str, Any] | None" = None) -> list[LevelSetup]:
    """The setup of every level of ``data`` (see :func:`level_setup`)."""
    cfg = {**DEFAULTS, **(settings or {})}
    species = np.arange(data.n_species) if species is None else np.asarray(species)
    levels = levels_of(data.codes[species])
    return [level_setup(data, levels, i, metric=options.distance, species=species,
                        max_images_per_species=int(cfg["max_images_per_species"]), seed=options.seed)
            for i in range(len(levels))]


def _settings(options: ProbeOptions) -> dict[str, Any]:
    cfg = options.for_probe("levels")
    unknown = sorted(set(cfg) - set(DEFAULTS))
    if unknown:
        raise InputError(f"Unknown levels setting(s) {', '.join(unknown)}; known: {', '.join(DEFAULTS)}.")
    out = {**DEFAULTS, **cfg}
    if out["permutations"] is None:
        out["permutations"] = options.permutations
    for key in ("permutations", "n_boot", "max_images_per_species", "max_species"):
        v = out[key]
        if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < (1 if key != "n_boot" and key != "permutations" else 0):
            raise InputError(f"The levels setting {key!r} must be a non-negative integer. Got {v!r}.")
    a = out["alpha"]
    if isinstance(a, bool) or not isinstance(a, (int, float)) or not 0 < a < 1:
        raise InputError(f"The levels setting 'alpha' must be a number in (0, 1). Got {a!r}.")
    return out


def _sample_species(data: ProbeData, cap: int, seed: int) -> np.ndarray:
    S = data.n_species
    if S <= cap:
        return np.arange(S)
    rng = np.random.default_rng([int(seed), 0x5A3])
    return np.sort(rng.choice(S, cap, replace=False))


def _at_most(null: np.ndarray, observed: float) -> int:
    """Null values at most ``observed``, ties (within :data:`TIE_TOL`, relative, at least absolute) included."""
    return int(np.count_nonzero(null <= observed + TIE_TOL * max(abs(observed), 1.0)))


def probe_levels(data: ProbeData, options: ProbeOptions) -> ProbeResult:
    """The primary statistic per rank under its restricted null (see the module docstring)."""
    cfg = _settings(options)
    species = _sample_species(data, int(cfg["max_species"]), options.seed)
    setups = level_statistics(data, options, species=species, settings=cfg)
    n_perm, alpha = int(cfg["permutations"]), float(cfg["alpha"])
    rows, species_rows, null_frames, info = [], [], [], {"levels": []}
    for setup in setups:
        level = setup.level
        base = dict(level=level.name, unit=setup.unit_name, n_taxa=setup.n_taxa, n_parents=setup.n_parents,
                    n_units=setup.n_units, distinct=float(min(setup.distinct, 10**300)), min_p=1.0 / min(setup.distinct, 10**300) if setup.distinct else np.nan,
                    species_sampled=len(species) < data.n_species)
        reason = setup.reason
        stat = setup.statistic
        if stat is not None and setup.distinct - 1 < 1:
            reason = "a single reachable partition"
        if stat is not None and not reason:
            observed_clusters = stat.cluster_values(_observed_labels(setup))[0]
            observed = float(stat.statistic(_observed_labels(setup))[0])
            if not np.isfinite(observed):
                reason = "no species has relatives both inside and outside its taxon within the parent"
        if stat is None or reason:
            for r in level.ranks:
                rows.append(null_row(RANK_NAMES[r], METRIC, np.nan, None, 0, alternative="less", **base,
                                     n_species=len(setup.species), testable=False, reason=reason, exact=False,
                                     effect=np.nan, effect_ci_low=np.nan, effect_ci_high=np.nan, ci_note=""))
            info["levels"].append({"level": level.name, "testable": False, "reason": reason})
            continue
        exact = setup.distinct <= max(n_perm, 1)
        if exact:
            labels = enumerate_partitions(stat.unit_label, stat.unit_parent)
            null_all = stat.statistic(labels)
            finite = null_all[np.isfinite(null_all)]
            hits = _at_most(finite, observed)
            p = hits / max(len(finite), 1)
            summary = null_summary(observed, finite, "less")
            null = finite
            perms_used = len(labels)
        else:
            labels = restricted_label_permutations(stat.unit_label, stat.unit_parent, n_perm, options.seed)
            null = stat.statistic(labels) if n_perm else np.zeros(0)
            finite = null[np.isfinite(null)]
            hits = _at_most(finite, observed)
            summary = null_summary(observed, finite, "less")
            p = (1 + hits) / (1 + len(finite)) if len(finite) else np.nan
            perms_used = len(finite)
        min_p = (1.0 / setup.distinct) if exact else 1.0 / (1 + perms_used)
        testable = bool(min_p <= alpha and perms_used > 0)
        reason = "" if testable else (
            f"only {setup.distinct} distinct restricted permutations: the smallest p ({min_p:.3g}) exceeds {alpha}"
            if exact else f"{perms_used} permutations cannot reach p <= {alpha}")
        ok = np.isfinite(observed_clusters)
        values = observed_clusters[ok]
        # resample parents: every ratio inside one parent is computed from the same distances
        _, groups = np.unique(setup.groups[ok], return_inverse=True)
        low, high, note = cluster_ci(
            lambda w: (group_weights(w, groups) @ values) / np.maximum(group_weights(w, groups).sum(axis=1), 1e-300),
            int(groups.max()) + 1 if len(groups) else 0, n_boot=int(cfg["n_boot"]), seed=options.seed,
            unit=f"{setup.group_name} taxa")
        null_mean = summary["null_mean"]
        n_groups = int(groups.max()) + 1 if len(groups) else 0
        for r in level.ranks:
            rows.append(null_row(
                RANK_NAMES[r], METRIC, observed, None, int(ok.sum()), clades=n_groups, alternative="less", ci=(low, high),
                **{**base, "min_p": min_p}, n_species=int(ok.sum()), testable=testable, reason=reason, exact=exact,
                effect=observed - null_mean, effect_ci_low=low - null_mean, effect_ci_high=high - null_mean,
                ci_note=note) | {"null_mean": null_mean, "null_std": summary["null_std"], "z": summary["z"],
                                  "p_value": float(p) if testable else np.nan, "p_raw": float(p),
                                  "permutations": perms_used})
        for c, value in zip(setup.species[ok], values):
            species_rows.append({"level": level.name, "species": int(c), "value": float(value)})
        null_frames.append(pd.DataFrame({"level": level.name, "rank": RANK_NAMES[level.ranks[0]], "metric": METRIC,
                                         "null": null}))
        info["levels"].append({"level": level.name, "testable": testable, "reason": reason, "exact": exact,
                               "distinct": setup.distinct if setup.distinct < 10**15 else float(min(setup.distinct, 10**300))})
    tables = {"species": pd.DataFrame(species_rows, columns=["level", "species", "value"])}
    if null_frames:
        tables["null"] = pd.concat(null_frames, ignore_index=True)
    info.update(permutations=n_perm, alpha=alpha, species=len(species), species_total=data.n_species)
    return ProbeResult("levels", pd.DataFrame(rows), tables=tables, info=info)
