"""Within-species variation: is an attribute (life stage, sex, morph) orthogonal to the species structure?

BioCLIP 2's "emergent properties": within a species, images that differ in an attribute (adult vs
juvenile, male vs female) are separated along a direction roughly orthogonal to the directions that
separate species. This probe measures that, per species and over species, against a null.

Input
-----
``options.for_probe("intra_species")["attribute"]``: an ``(n,)`` array or list of per-image categorical
values aligned with the rows of ``data.X`` (after :class:`~latent.probes.base.ProbeData` dropped the
images without a species). ``None``, NaN and ``""`` mean "unknown": those images take no part in the
attribute statistics (they still count in the species centroids). ``attribute_name`` (optional) is
written in the rows' ``attribute`` column.

Per species
-----------
Embeddings are L2-normalised first. A species is *used* when it has at least two attribute values and
at least ``min_per_value`` (default 2) images of each of its two most frequent values ``a`` (most
frequent; ties broken by the values' sorted text) and ``b``; only those images enter its statistics.
Every other species is listed in the table ``skipped`` with the reason.

``attribute_angle_deg``
    The angle (degrees, 0..90) between the attribute direction ``delta = mean(a) - mean(b)`` and the
    *species subspace*: the span of the species centroids (of all species, on the normalised images)
    minus their mean. Its orthonormal basis is the first ``k`` right singular vectors of the centred
    centroid matrix, ``k`` the fewest components that explain at least ``variance`` (setting, default
    0.99) of the centred centroids' total variance, never one whose singular value is below
    ``max(S, d) * eps * s_max`` (numerically zero). ``k`` is the row's ``subspace_dim``. 90 degrees: the
    attribute moves images along no species direction; 0: along species directions only. When ``k`` is
    close to the dimension ``d`` (more species than dimensions) every direction lies nearly inside the
    subspace: read the value against its null (a random within-species split), not against 90.
``attribute_outside_fraction``
    ``|delta - P delta| / |delta|`` (``P`` the projection on the subspace) = ``sin(angle)``: the share of
    the direction's norm outside the species subspace.
``attribute_separability``
    Leave-one-out nearest-centroid accuracy of ``a`` vs ``b`` within the species: each image is given the
    value whose centroid (its own value's centroid computed without it) is nearer, by the probe options'
    distance (cosine: ``1 - cos``; Euclidean); a tie counts half. Chance is the majority share
    ``max(n_a, n_b) / (n_a + n_b)`` (row ``attribute_separability_chance``, per species in the table).

Over species (the rows)
-----------------------
Each row's value is the **median over the used species** (``n`` = species used, ``unit="species"``,
``rank="species"``), its CI a species bootstrap of the median (:func:`latent.stats.cluster_ci`, a
species drawn ``k`` times counts ``k`` times; none below 10 species).

Null
----
The attribute labels are permuted *within each species* (the counts of ``a`` and ``b`` kept; whole
species never mix), seeded by ``options.seed``; every species' statistics are recomputed and the median
taken, giving the null of each row. The number of permutations is the ``permutations`` setting, or
``min(options.permutations, MAX_PERMUTATIONS)`` (999) when absent; rows state it (``permutations``).
``attribute_separability`` is tested one-sided (``greater``: the attribute is visible within
species); the angle and the outside fraction two-sided (a noise direction of a random split sits at
the null; the question is on which side of it the attribute lies). The per-species table has each
species' own null mean and p-value.

Returns rows (``probe="intra_species"``), tables ``species`` (one row per used species) and
``skipped`` (``species``, ``n_images``, ``reason``), arrays ``basis`` (``(k, d)``), ``directions``
(``(S_used, d)``, the unit attribute directions) and the figure's ``axes``, ``coords``, ``coord_species``,
``coord_value`` (:func:`_figure_coordinates`; :mod:`latent.plotting.intra_species` draws them).
"""

from __future__ import annotations

import logging
from typing import Any

import numpy as np
import pandas as pd

from latent.errors import InputError
from latent.probes.base import ProbeData, ProbeOptions, ProbeResult, null_row
from latent.probes.common import DEFAULT_N_BOOT, int_setting
from latent.stats import cluster_ci, null_summary

__all__ = ["probe_intra_species", "attribute_from_cache", "species_subspace", "attribute_statistics",
           "weighted_median", "DEFAULTS", "METRICS", "MAX_PERMUTATIONS", "FIGURE_SPECIES"]

log = logging.getLogger(__name__)

PROBE = "intra_species"
#: Species drawn in the figure's scatter (arrays ``coords``, ``coord_species``, ``coord_value``).
FIGURE_SPECIES = 8
#: The most permutations used when the ``permutations`` setting is absent.
MAX_PERMUTATIONS = 999
DEFAULTS: dict[str, Any] = {"attribute": None, "attribute_name": "attribute", "permutations": None,
                            "n_boot": DEFAULT_N_BOOT, "variance": 0.99, "min_per_value": 2}
#: Row metrics and the side of their null test.
METRICS = {"attribute_angle_deg": "two-sided", "attribute_outside_fraction": "two-sided",
           "attribute_separability": "greater"}
_TAG = 0x1A7A
_TIE = 1e-12


# ----------------------------------------------------------------------------------------- statistics
def species_subspace(centroids: np.ndarray, variance: float = 0.99) -> np.ndarray:
    """Orthonormal basis of the span of the centred species centroids.

    Parameters
    ----------
    centroids
        ``(S, d)`` species centroids.
    variance
        In ``(0, 1]``: keep the fewest leading components explaining at least this share of the
        centred centroids' total variance (singular values below ``max(S, d) * eps * s_max`` never kept).

    Returns
    -------
    numpy.ndarray
        ``(k, d)`` float64 orthonormal rows (``k = 0`` when every centroid is the same).
    """
    C = np.asarray(centroids, dtype=np.float64)
    C = C - C.mean(axis=0)
    _, s, vt = np.linalg.svd(C, full_matrices=False)
    if s.size == 0 or s[0] <= 0:
        return np.zeros((0, C.shape[1]))
    nonzero = int(np.count_nonzero(s > max(C.shape) * np.finfo(np.float64).eps * s[0]))
    share = np.cumsum(s[:nonzero] ** 2) / np.sum(s[:nonzero] ** 2)
    k = min(nonzero, int(np.searchsorted(share, float(variance) - 1e-12)) + 1)
    return vt[:k]


def attribute_statistics(Xs: np.ndarray, Y: np.ndarray, basis: np.ndarray, distance: str = "cosine"
                         ) -> dict[str, np.ndarray]:
    """The attribute statistics of one species for one or several labellings.

    Parameters
    ----------
    Xs
        ``(m, d)`` unit-normalised images of the species (its two attribute values only).
    Y
        ``(P, m)`` 0/1 labellings (1: value ``a``), each with at least 2 images of each value.
    basis
        ``(k, d)`` orthonormal basis of the species subspace (:func:`species_subspace`).
    distance
        ``"cosine"`` or ``"euclidean"`` (the nearest-centroid rule).

    Returns
    -------
    dict
        ``angle`` (degrees), ``outside``, ``separability``: ``(P,)`` float64 each (NaN where the two
        attribute means coincide); ``direction``: ``(P, d)`` unit attribute directions.
    """
    Xs = np.asarray(Xs, dtype=np.float64)
    Y = np.asarray(Y, dtype=np.float64)
    n1 = Y.sum(axis=1, keepdims=True)
    n0 = Y.shape[1] - n1
    delta = (Y @ Xs) / n1 - ((1.0 - Y) @ Xs) / n0  # (P, d)
    norm = np.linalg.norm(delta, axis=1)
    inside = np.linalg.norm(delta @ basis.T, axis=1) if basis.shape[0] else np.zeros(len(delta))
    with np.errstate(divide="ignore", invalid="ignore"):
        cos = np.clip(np.where(norm > 0, inside / norm, np.nan), 0.0, 1.0)
        direction = np.where(norm[:, None] > 0, delta / norm[:, None], np.nan)
    angle = np.degrees(np.arccos(cos))
    outside = np.sqrt(np.maximum(1.0 - cos ** 2, 0.0))

    # Leave-one-out nearest centroid from the Gram matrix (|x| = 1): x.S_c and |S_c|^2 per labelling.
    G = Xs @ Xs.T
    T1 = Y @ G  # (P, m): x_i . S_a
    T0 = G.sum(axis=0)[None, :] - T1  # x_i . S_b
    Q1 = np.einsum("pm,pm->p", T1, Y)[:, None]  # |S_a|^2
    Q0 = np.einsum("pm,pm->p", T0, 1.0 - Y)[:, None]
    own_n = np.where(Y == 1, n1, n0) - 1.0
    other_n = np.where(Y == 1, n0, n1)
    own_T, other_T = np.where(Y == 1, T1, T0), np.where(Y == 1, T0, T1)
    own_Q, other_Q = np.where(Y == 1, Q1, Q0), np.where(Y == 1, Q0, Q1)
    dot_own = (own_T - 1.0) / own_n
    sq_own = np.maximum((own_Q - 2.0 * own_T + 1.0) / own_n ** 2, 0.0)
    dot_other = other_T / other_n
    sq_other = np.maximum(other_Q / other_n ** 2, 0.0)
    if distance == "cosine":
        with np.errstate(divide="ignore", invalid="ignore"):
            d_own = 1.0 - np.where(sq_own > 0, dot_own / np.sqrt(sq_own), 0.0)
            d_other = 1.0 - np.where(sq_other > 0, dot_other / np.sqrt(sq_other), 0.0)
    else:
        d_own = np.sqrt(np.maximum(1.0 - 2.0 * dot_own + sq_own, 0.0))
        d_other = np.sqrt(np.maximum(1.0 - 2.0 * dot_other + sq_other, 0.0))
    gap = d_other - d_own
    correct = np.where(np.abs(gap) <= _TIE, 0.5, (gap > 0).astype(np.float64))
    separability = correct.mean(axis=1)
    return {"angle": angle, "outside": outside, "separability": separability, "direction": direction}


def weighted_median(values: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """Median of ``values`` (``(n,)``) under each row of ``weights`` (``(c, n)`` counts, e.g. bootstrap draws).

    With all weights equal it is :func:`numpy.median` (the mean of the two middle values for an even
    count). NaN values are left out; a row with no weight gives NaN. Returns ``(c,)`` float64.
    """
    values = np.asarray(values, dtype=np.float64)
    W = np.atleast_2d(np.asarray(weights, dtype=np.float64))
    keep = ~np.isnan(values)
    order = np.argsort(values[keep], kind="stable")
    v = values[keep][order]
    W = W[:, keep][:, order]
    out = np.full(W.shape[0], np.nan)
    if v.size == 0:
        return out
    cum = np.cumsum(W, axis=1)
    total = cum[:, -1:]
    ok = total[:, 0] > 0
    half = total / 2.0
    lower = np.minimum((cum < half - 1e-9).sum(axis=1), v.size - 1)
    upper = np.minimum((cum <= half + 1e-9).sum(axis=1), v.size - 1)
    out[ok] = (v[lower[ok]] + v[upper[ok]]) / 2.0
    return out


# ---------------------------------------------------------------------------------------------- probe
def attribute_from_cache(cache_path: Any, data: ProbeData, column: str) -> np.ndarray:
    """The row metadata column ``column`` of a cache, aligned with the rows of ``data`` by image id.

    Parameters
    ----------
    cache_path
        The cache ``data`` was loaded from (:func:`latent.probes.run.load_probe_data`).
    data
        The probed images (``data.ids`` ``(n,)``, every one a row id of the cache).
    column
        A metadata column (``latent info CACHE`` lists them), e.g. ``img_type``, ``life_stage``.

    Returns
    -------
    numpy.ndarray
        ``(n,)`` object array, the value of each probed image (the ``attribute`` setting of this probe).
    """
    from latent.cache import open_cache

    with open_cache(cache_path) as cache:
        columns = [name for name, _ in cache.metadata_columns()]
        if column not in columns:
            raise InputError(f"The 'attribute' column {column!r} is not in the row metadata of {cache_path}; its "
                             f"columns: {', '.join(columns) or 'none'} (see `latent info {cache_path}`).")
        values = np.asarray(cache.metadata([column])[column].to_numpy(), dtype=object)
        ids = np.asarray(cache.ids).astype(str)
    from latent.api import rows_of_ids

    rows, missing = rows_of_ids(ids, data.ids)
    if missing:
        raise InputError(f"{len(missing)} probed image id(s) are not rows of {cache_path} (first: {missing[0]!r}); "
                         f"pass the cache the probe data was loaded from.")
    return values[rows]


def _attribute_values(raw: Any, n: int) -> np.ndarray:
    """``(n,)`` object array of attribute values as text, ``""`` for unknown (None, NaN, empty)."""
    if raw is None:
        raise InputError("The intra_species probe needs an attribute: set options.extra={'intra_species': "
                         "{'attribute': <one value per image>}} (latent probe --attribute COLUMN).")
    if isinstance(raw, (str, bytes)):
        raise InputError(f"The 'attribute' setting of the intra_species probe must be one value per image "
                         f"(an array or list of length {n}), not the text {raw!r}; pass the column's values.")
    values = np.asarray(raw, dtype=object).reshape(-1) if np.ndim(raw) else np.asarray([raw], dtype=object)
    if values.shape != (n,):
        raise InputError(f"The 'attribute' setting of the intra_species probe must have one value per image "
                         f"({n}, the rows of data.X); got {values.shape[0]} values. Align it with the probed rows.")
    out = np.empty(n, dtype=object)
    for i, v in enumerate(values):
        missing = v is None or (isinstance(v, (float, np.floating)) and np.isnan(v)) or (
            isinstance(v, str) and v.strip() == "")
        out[i] = "" if missing else str(v)
    return out


def _figure_coordinates(U: np.ndarray, picked: list[np.ndarray], picked_value: list[np.ndarray], basis: np.ndarray,
                        directions: np.ndarray) -> dict[str, np.ndarray]:
    """The arrays of the figure (:mod:`latent.plotting.intra_species`): the used images on two axes.

    Drawn: up to :data:`FIGURE_SPECIES` used species, those with the most images (ties spread along
    lineage order). ``axes`` ``(2, d)``: the species axis (the leading direction of the drawn species'
    centroids inside the species subspace) and the attribute axis (the mean attribute direction's part
    outside the subspace, normalised; the mean direction itself, minus its species-axis part, when none is
    outside).
    ``coords`` ``(N, 2)`` float32 of their images (centred on their mean), ``coord_species`` ``(N,)`` the
    row of each image's species in the ``species`` table, ``coord_value`` ``(N,)`` 1 for value ``a``.
    """
    d = U.shape[1]
    empty = {"axes": np.zeros((2, d), np.float32), "coords": np.zeros((0, 2), np.float32),
             "coord_species": np.zeros(0, np.int64), "coord_value": np.zeros(0, np.int8)}
    if not picked:
        return empty
    # The figure's species: the most images first, ties spread along lineage order (golden-ratio steps).
    m = len(picked)
    spread = (np.arange(m) * 0.6180339887498949) % 1.0
    shown = np.sort(np.lexsort((spread, -np.asarray([len(k) for k in picked])))[:FIGURE_SPECIES])
    picked = [picked[i] for i in shown]
    picked_value = [picked_value[i] for i in shown]
    index = np.concatenate(picked)
    Z = U[index] - U[index].mean(axis=0)
    centroids = np.stack([U[k].mean(axis=0) for k in picked])
    centred = centroids - centroids.mean(axis=0)
    inside = centred @ basis.T @ basis if basis.shape[0] else centred
    source = inside if np.linalg.norm(inside) > 0 else Z
    e1 = np.linalg.svd(source, full_matrices=False)[2][0]
    mean_direction = np.nanmean(directions, axis=0) if np.isfinite(directions).any() else np.zeros(d)
    outside = mean_direction - basis.T @ (basis @ mean_direction) if basis.shape[0] else mean_direction
    e2 = outside - (outside @ e1) * e1
    if np.linalg.norm(e2) <= 1e-12:
        e2 = mean_direction - (mean_direction @ e1) * e1
    if np.linalg.norm(e2) <= 1e-12:
        return empty
    e2 = e2 / np.linalg.norm(e2)
    axes = np.stack([e1, e2])
    return {"axes": axes.astype(np.float32), "coords": (Z @ axes.T).astype(np.float32),
            "coord_species": np.repeat(shown, [len(k) for k in picked]).astype(np.int64),
            "coord_value": np.concatenate(picked_value).astype(np.int8)}


def probe_intra_species(data: ProbeData, options: ProbeOptions) -> ProbeResult:
    """Angle, outside fraction and separability of a within-species attribute (module docstring).

    Parameters
    ----------
    data
        The images (``data.X`` ``(n, d)``, ``data.species`` ``(n,)``).
    options
        ``distance``, ``permutations``, ``seed``; settings ``options.extra["intra_species"]``:
        ``attribute`` (``(n,)`` values, required), ``attribute_name`` (text, default ``"attribute"``),
        ``permutations`` (default ``min(options.permutations, 999)``), ``n_boot`` (default 1000),
        ``variance`` (default 0.99) and ``min_per_value`` (default 2, at least 2).

    Returns
    -------
    ProbeResult
        Rows ``attribute_angle_deg``, ``attribute_outside_fraction``, ``attribute_separability`` (with
        null columns) and ``attribute_separability_chance`` (no null), ``rank="species"``,
        ``unit="species"``, ``n`` = species used; tables ``species`` and ``skipped``; arrays ``basis``,
        ``directions``.
    """
    cfg = options.for_probe(PROBE)
    X = np.asarray(data.X, dtype=np.float64)
    n, d = X.shape
    values = _attribute_values(cfg.get("attribute"), n)
    name = str(cfg.get("attribute_name", DEFAULTS["attribute_name"]))
    n_boot = int_setting(cfg, "n_boot", DEFAULT_N_BOOT, PROBE)
    min_per_value = int_setting(cfg, "min_per_value", DEFAULTS["min_per_value"], PROBE, minimum=2)
    asked = cfg.get("permutations")
    n_perm = (min(int(options.permutations), MAX_PERMUTATIONS) if asked is None
              else int_setting(cfg, "permutations", None, PROBE))
    variance = cfg.get("variance", DEFAULTS["variance"])
    if isinstance(variance, bool) or not isinstance(variance, (int, float, np.number)) or not 0 < variance <= 1:
        raise InputError(f"The 'variance' setting of the intra_species probe must be a number in (0, 1]. "
                         f"Got {variance!r}; set it with options.extra={{'intra_species': {{'variance': 0.99}}}}.")

    norms = np.linalg.norm(X, axis=1)
    if (norms == 0).any():
        raise InputError(f"The intra_species probe needs non-zero vectors; {int((norms == 0).sum())} image(s) are "
                         f"all-zero (first: {data.ids[np.flatnonzero(norms == 0)[0]]}); drop them or fix the cache.")
    U = X / norms[:, None]
    species = np.asarray(data.species, dtype=np.int64)
    S = data.n_species
    counts = np.bincount(species, minlength=S)
    sums = np.zeros((S, d))
    np.add.at(sums, species, U)
    basis = species_subspace(sums / np.maximum(counts, 1)[:, None], float(variance))
    labels = np.asarray(data.taxonomy.species_labels(), dtype=object)

    rng = np.random.default_rng([int(options.seed), _TAG])
    used, skipped, observed, nulls, directions = [], [], [], [], []
    picked: list[np.ndarray] = []  # the images of each used species (its two values)
    picked_value: list[np.ndarray] = []
    for s in range(S):
        rows = np.flatnonzero((species == s) & (values != ""))
        tally = pd.Series(values[rows]).value_counts() if rows.size else pd.Series(dtype=int)
        if tally.size:
            tally = tally.sort_index(kind="stable").sort_values(ascending=False, kind="stable")
        if tally.size < 2:
            skipped.append((labels[s], int(counts[s]), "fewer than 2 attribute values"
                            if rows.size else "no image with a known attribute value"))
            continue
        a, b = str(tally.index[0]), str(tally.index[1])
        if int(tally.iloc[1]) < min_per_value:
            skipped.append((labels[s], int(counts[s]), f"{int(tally.iloc[1])} image(s) of its second value {b!r} "
                                                       f"(fewer than {min_per_value})"))
            continue
        keep = rows[(values[rows] == a) | (values[rows] == b)]
        y = (values[keep] == a).astype(np.float64)
        stats = attribute_statistics(U[keep], y[None, :], basis, options.distance)
        null = attribute_statistics(U[keep], rng.permuted(np.tile(y, (n_perm, 1)), axis=1), basis,
                                    options.distance) if n_perm else None
        picked.append(keep)
        picked_value.append(y.astype(np.int8))
        n_a, n_b = int(y.sum()), int(len(y) - y.sum())
        used.append({"species": labels[s], "value_a": a, "value_b": b, "n_a": n_a, "n_b": n_b,
                     "chance": max(n_a, n_b) / (n_a + n_b)})
        observed.append(stats)
        nulls.append(null)
        directions.append(stats["direction"][0])

    keys = {"attribute_angle_deg": "angle", "attribute_outside_fraction": "outside",
            "attribute_separability": "separability"}
    table = pd.DataFrame.from_records(used, columns=["species", "value_a", "value_b", "n_a", "n_b", "chance"])
    for metric, key in keys.items():
        table[metric] = [float(o[key][0]) for o in observed]
        if n_perm:
            table[metric + "_null_mean"] = [float(np.nanmean(z[key])) for z in nulls]
            table[metric + "_p_value"] = [null_summary(float(o[key][0]), z[key], METRICS[metric])["p_value"]
                                          for o, z in zip(observed, nulls)]
    m = len(used)
    common = {"unit": "species", "attribute": name, "distance": options.distance, "subspace_dim": int(basis.shape[0]),
              "dim": int(d), "variance": float(variance), "statistic": "median over species",
              "n_images": int(sum(u["n_a"] + u["n_b"] for u in used)), "n_skipped": len(skipped),
              "null_model": "attribute labels permuted within species"}
    out_rows: list[dict[str, Any]] = []
    if m == 0:
        note = (f"no species has {min_per_value}+ images of each of two {name} values "
                f"({len(skipped)} skipped, see the skipped table)")
        log.warning("intra_species: %s", note)
        for metric in (*keys, "attribute_separability_chance"):
            out_rows.append(null_row("species", metric, np.nan, None, 0, ci_note="no CI: no value", note=note,
                                     **common))
    else:
        ones = np.ones((1, m))
        for metric, key in keys.items():
            per_species = table[metric].to_numpy(dtype=np.float64)
            value = float(weighted_median(per_species, ones)[0])
            null = None
            if n_perm:
                null = np.stack([z[key] for z in nulls], axis=1)  # (P, m)
                null = np.array([np.nanmedian(row) if np.isfinite(row).any() else np.nan for row in null])
            low, high, ci_note = cluster_ci(lambda w, v=per_species: weighted_median(v, w), m, n_boot=n_boot,
                                            seed=options.seed)
            out_rows.append(null_row("species", metric, value, null, m, alternative=METRICS[metric],
                                     ci=(low, high), ci_note=ci_note, note="", **common))
        chance = table["chance"].to_numpy(dtype=np.float64)
        low, high, ci_note = cluster_ci(lambda w: weighted_median(chance, w), m, n_boot=n_boot, seed=options.seed)
        out_rows.append(null_row("species", "attribute_separability_chance", float(np.median(chance)), None, m,
                                 ci=(low, high), ci_note=ci_note, note="majority share of the two values",
                                 **common))
    frame = pd.DataFrame.from_records(out_rows)
    skipped_table = pd.DataFrame.from_records(skipped, columns=["species", "n_images", "reason"])
    info = {"attribute": name, "permutations": int(n_perm), "permutations_asked": options.permutations if asked is
            None else int(asked), "subspace_dim": int(basis.shape[0]), "dim": int(d), "variance": float(variance),
            "species_used": m, "species_skipped": len(skipped), "min_per_value": min_per_value, "n_boot": n_boot}
    if asked is None and n_perm < options.permutations:
        log.info("intra_species: %d permutations (capped from %d)", n_perm, options.permutations)
    log.info("intra_species: %d species used, %d skipped, species subspace of dimension %d in %d",
             m, len(skipped), basis.shape[0], d)
    arrays = {"basis": basis.astype(np.float32),
              "directions": (np.stack(directions) if directions else np.zeros((0, d))).astype(np.float32)}
    arrays.update(_figure_coordinates(U, picked, picked_value, basis, arrays["directions"]))
    return ProbeResult(PROBE, frame, arrays=arrays, tables={"species": table, "skipped": skipped_table}, info=info)
