"""Model versus model on the same species: paired differences of each rank's primary statistic.

Two embedding spaces of the same images (or, failing common image ids, the same species) are compared
level by level (:mod:`latent.probes.levels`). In each space a species' *effect* is its ratio minus its
mean under the level's restricted null (estimated from ``null_permutations`` permutations), so that
spaces whose distances are spread differently (and whose ratios are biased differently away from 1) are
compared on the same footing. For every species ``s`` that is an anchor in both spaces,
``diff(s) = effect_A(s) - effect_B(s)`` (negative: the rank is more visible in A). The row's value is the
mean over those species. Every ratio inside one parent taxon is computed from the same distances, so
the unit of replication is the parent (clade; e.g. the order when testing families): the CI is a paired clade bootstrap (both models resampled with the same clades:
:func:`latent.stats.cluster_ci`, none below :data:`latent.stats.MIN_CLUSTERS` clades) and the p-value a
paired permutation test that swaps the two models' values for whole clades (a sign flip of the clade's
summed differences; two-sided; every one of the ``2^n`` swaps when that is at most ``permutations``,
else ``permutations`` seeded random ones with the observed counted once).

Common dimension (default on): raw distances move with the dimension at equal planted signal, so both
spaces are projected by PCA (fitted on each model's own probed images) onto ``min(d_A, d_B)`` principal
axes before the statistic is computed; both spaces get the same treatment even when their dimensions
are equal (the projection then only centres and rotates). The row says which dimension was used.

The whole-hierarchy statistic (a Mantel r over species pairs) does not split into per-species terms and
is not compared here.
"""

from __future__ import annotations

import logging
import warnings
from typing import Any

import numpy as np
import pandas as pd

from latent.errors import InputError
from latent.probes.base import ProbeData, ProbeOptions
from latent.probes.levels import DEFAULTS as LEVEL_DEFAULTS
from latent.probes.levels import METRIC, level_statistics, restricted_label_permutations
from latent.ranks import RANK_NAMES
from latent.stats import cluster_ci

__all__ = ["align", "pca_project", "compare_models", "COMPARISON_COLUMNS"]

log = logging.getLogger(__name__)

COMPARISON_COLUMNS = ["model", "versus", "rank", "metric", "value", "ci_low", "ci_high", "n", "p_value",
                      "permutations", "exact", "value_model", "value_versus", "n_species", "level", "dim",
                      "matched_on", "ci_note", "note"]


def pca_project(X: np.ndarray, dim: int) -> np.ndarray:
    """``(n, dim)`` PCA scores of ``(n, d)`` rows on their top ``dim`` principal axes (float64)."""
    X = np.asarray(X, dtype=np.float64)
    Xc = X - X.mean(axis=0)
    cov = Xc.T @ Xc
    values, vectors = np.linalg.eigh(cov)
    order = np.argsort(values)[::-1][:dim]
    return Xc @ vectors[:, order]


def align(a: ProbeData, b: ProbeData) -> tuple[ProbeData, ProbeData, str]:
    """The same images in both (by id) when they share ids, else the species both hold.

    Returns
    -------
    tuple
        ``(a', b', matched_on)`` with ``matched_on`` ``"images"`` or ``"species"``.
    """
    ids_b = {i: k for k, i in enumerate(b.ids)}
    common = [k for k, i in enumerate(a.ids) if i in ids_b]
    if len(common) >= 2 and len({int(a.species[k]) for k in common}) >= 2:
        rows_a = np.asarray(common)
        rows_b = np.asarray([ids_b[a.ids[k]] for k in common])
        tax = a.taxonomy.select_rows(rows_a)
        return (ProbeData.from_arrays(a.X[rows_a], tax, a.ids[rows_a]),
                ProbeData.from_arrays(b.X[rows_b], tax, a.ids[rows_a]), "images")
    la = np.asarray(a.taxonomy.species_labels())[a.species]
    lb = np.asarray(b.taxonomy.species_labels())[b.species]
    shared = np.intersect1d(la, lb)
    if len(shared) < 2:
        raise InputError("The two caches share neither image ids nor at least 2 species: nothing to compare.")
    ka, kb = np.isin(la, shared), np.isin(lb, shared)
    return (ProbeData.from_arrays(a.X[ka], a.taxonomy.select_rows(np.flatnonzero(ka)), a.ids[ka]),
            ProbeData.from_arrays(b.X[kb], b.taxonomy.select_rows(np.flatnonzero(kb)), b.ids[kb]), "species")


def _sign_flip_p(d: np.ndarray, total: float, permutations: int, seed: int) -> tuple[float, int, bool]:
    """Two-sided paired permutation p-value of ``sum(d) / total`` by sign flips of the clade sums ``d``."""
    n = len(d)
    observed = abs(d.sum() / total)
    tol = 1e-12 * max(1.0, observed)
    if n <= 20 and 2 ** n <= permutations:
        signs = ((np.arange(2 ** n)[:, None] >> np.arange(n)) & 1) * 2 - 1
        null = np.abs(signs @ d) / total
        return float(np.count_nonzero(null >= observed - tol) / len(null)), int(len(null)), True
    rng = np.random.default_rng([int(seed), 0xC0A7])
    hits, done = 0, 0
    while done < permutations:
        c = min(permutations - done, max(1, (1 << 22) // max(n, 1)))
        signs = rng.integers(0, 2, size=(c, n)) * 2 - 1
        hits += int(np.count_nonzero(np.abs(signs @ d) / total >= observed - tol))
        done += c
    return float((1 + hits) / (1 + permutations)), int(permutations), False


def _effects(stat: Any, n_perm: int, seed: int) -> np.ndarray:
    """``(C,)`` each species' ratio minus its mean under the restricted null (NaN: not an anchor)."""
    observed = stat.cluster_values(stat.unit_label[None, :])[0]
    labels = restricted_label_permutations(stat.unit_label, stat.unit_parent, n_perm, seed)
    null = stat.cluster_values(labels)
    with np.errstate(invalid="ignore"), warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        return observed - np.nanmean(null, axis=0)


def compare_models(a: ProbeData, b: ProbeData, *, labels: tuple[str, str] = ("A", "B"),
                   options: "ProbeOptions | None" = None, common_dim: bool = True, n_boot: int = 1000,
                   permutations: int = 9999, null_permutations: int = 199,
                   settings: "dict[str, Any] | None" = None) -> pd.DataFrame:
    """Paired difference A - B of each level's primary statistic (see the module docstring).

    Parameters
    ----------
    a, b
        Probe data of the two models (e.g. :func:`latent.probes.run.load_probe_data`).
    labels
        Names of A and B (the ``model`` and ``versus`` columns).
    options
        Distance and seed (:class:`~latent.probes.base.ProbeOptions`).
    common_dim
        Project both onto ``min(d_A, d_B)`` PCA axes first.
    n_boot, permutations
        Clade bootstrap resamples and sign-flip permutations.
    null_permutations
        Restricted permutations from which each species' null expectation is estimated.
    settings
        ``levels`` probe settings (e.g. ``max_images_per_species``).

    Returns
    -------
    pandas.DataFrame
        :data:`COMPARISON_COLUMNS`, one row per rank.
    """
    options = options or ProbeOptions()
    a, b, matched = align(a, b)
    dim = min(a.X.shape[1], b.X.shape[1])
    if common_dim:
        a = ProbeData.from_arrays(pca_project(a.X, dim).astype(np.float32), a.taxonomy, a.ids)
        b = ProbeData.from_arrays(pca_project(b.X, dim).astype(np.float32), b.taxonomy, b.ids)
    cfg = {**LEVEL_DEFAULTS, **(settings or {})}
    setups_a = level_statistics(a, options, settings=cfg)
    # species are paired by label below (B's numbering follows its own taxonomy when matched on species)
    setups_b = level_statistics(b, options, settings=cfg)
    names_a = np.asarray(a.taxonomy.species_labels())
    names_b = np.asarray(b.taxonomy.species_labels())
    rows = []
    for sa, sb in zip(setups_a, setups_b):
        base = {"model": labels[0], "versus": labels[1], "metric": f"{METRIC}_effect_difference", "level": sa.level.name,
                "dim": dim if common_dim else np.nan, "matched_on": matched}
        note = ""
        if sa.statistic is None or sb.statistic is None:
            note = f"not compared: {sa.reason or sb.reason}"
            for r in sa.level.ranks:
                rows.append({**base, "rank": RANK_NAMES[r], "value": np.nan, "n": 0, "n_species": 0, "note": note})
            continue
        va = _effects(sa.statistic, null_permutations, options.seed)
        vb = _effects(sb.statistic, null_permutations, options.seed)
        by_name_b = dict(zip(names_b[sb.species], vb))
        pb = np.asarray([by_name_b.get(n, np.nan) for n in names_a[sa.species]])
        ok = np.isfinite(va) & np.isfinite(pb)
        d = va[ok] - pb[ok]
        # the unit of replication is the parent taxon (clade), as in the levels probe
        _, groups = np.unique(sa.groups[ok], return_inverse=True)
        n_groups = int(groups.max()) + 1 if len(groups) else 0
        group_sum = np.bincount(groups, weights=d, minlength=n_groups)
        group_n = np.bincount(groups, minlength=n_groups).astype(np.float64)
        if not len(d):
            for r in sa.level.ranks:
                rows.append({**base, "rank": RANK_NAMES[r], "value": np.nan, "n": 0, "n_species": 0,
                             "note": "not compared: no species is an anchor in both"})
            continue
        low, high, ci_note = cluster_ci(lambda w: (w @ group_sum) / np.maximum(w @ group_n, 1e-300), n_groups,
                                        n_boot=n_boot, seed=options.seed,
                                        unit=f"{sa.group_name} taxa")
        p, used, exact = _sign_flip_p(group_sum, group_n.sum(), permutations, options.seed)
        for r in sa.level.ranks:
            rows.append({**base, "rank": RANK_NAMES[r], "value": float(d.mean()), "ci_low": low, "ci_high": high,
                         "n": int(len(d)), "p_value": p, "permutations": used, "exact": exact,
                         "value_model": float(va[ok].mean()), "value_versus": float(pb[ok].mean()),
                         "n_species": int(len(d)), "clades": n_groups, "ci_note": ci_note,
                         "note": f"negative: the rank is more visible in {labels[0]}"})
    table = pd.DataFrame.from_records(rows)
    for col in COMPARISON_COLUMNS:
        if col not in table.columns:
            table[col] = np.nan
    return table[COMPARISON_COLUMNS]
