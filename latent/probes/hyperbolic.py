"""Hyperbolicity probes: is the species-centroid geometry tree-like?

Two probes of ``latent probe``, both on species centroids (``data.centroids``) with the embedding
distance ``options.distance``:

``hyperbolicity`` (:func:`probe_hyperbolicity`)
    Gromov delta and relative delta ``2 delta / diameter`` of the centroid distances
    (:func:`latent.hyperbolic.gromov_delta`, half-gap four-point convention, see that module), by each
    method asked for, and the same for the taxonomic distances of the same species as a reference
    (an ultrametric: delta 0).
``hyperbolic_fit`` (:func:`probe_hyperbolic_fit`)
    Poincare-ball and Euclidean fits at equal dimension (default 2, 4, 8, 16) of the centroid distances
    and, as a reference, of the taxonomic distances; average and worst-case distortion and MAP of each
    species' nearest taxonomic relatives in the fit.

Nulls and baselines
-------------------
Neither probe has a species-permutation null: the delta of the embedding distances, and a fit of
them, do not depend on which species sits at which leaf of the taxonomy (permuting labels leaves both
unchanged, so species-permuted centroids are no baseline for them). The comparisons are instead
(1) the taxonomy's own row (``target="taxonomy"``: delta 0, the best a geometry can do for a tree),
(2) random Gaussian features of the same size: ``hyperbolicity`` computes the relative delta, by the
same method and settings, of isotropic Gaussian points with as many points (species used) and
dimensions as the centroids, under the same distance, for several seeded draws
(:func:`random_delta`, :func:`random_draws`); the embedding's ``delta_rel`` row carries the draws'
mean and the 95% prediction interval of one more draw (:func:`prediction_interval`: ``random_mean``,
``random_low``, ``random_high``, ``random_draws``) and where the value lies (``random_position``:
``below`` = more tree-like than random data of its size, ``inside``, ``above``); the draws are
``tables["random"]``, and :func:`treelike_sentence` reads it all in one sentence; (3) the baseline
embeddings that the ``latent probe`` runner evaluates with the same probe (rows
``features="baseline"``). ``tables["null"]`` is empty (it keeps its columns so every probe's outputs
have the same shape). Only the fits' MAP uses the taxonomy (which species are relevant), and it is
reported without a null as well. Isotropic random points in many dimensions are nearly equidistant (a
star, itself a tree), so a real, anisotropic space can be *less* tree-like than them.

Cost and sampling
-----------------
``base_point`` delta is ``O(S^3)`` time, ``O(S^2)`` memory (about 1 s at S = 2,000 on 2 CPU cores);
``exact`` is ``O(S^4)`` and runs only up to ``exact_max`` species; a fit is ``steps`` full-batch steps
over ``S (S - 1) / 2`` pairs. Above ``max_species`` species a seeded uniform sample of species
(``numpy.random.default_rng([seed, 0x48595042])``, kept in lineage order) is used; each row's ``n``
is the number of species used, ``species_total`` the number available, ``sampled`` says whether a
sample was taken, and ``arrays["species"]`` holds the indices used. The random-features baseline
repeats each delta on random draws (:func:`random_draws`: up to 20 per method within a fixed cost;
at 790 species 5 ``base_point`` draws and none for ``sampled`` or ``exact``, whose draws would cost
several times the probe itself).
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd

from latent.errors import InputError
from latent.hyperbolic import (
    DELTA_METHODS, GEOMETRIES, fit_distances, fit_report, gromov_delta, mean_average_precision, nearest_relatives,
)
from latent.probes.base import ProbeData, ProbeOptions, ProbeResult, null_row, pairwise_distances
from latent.probes.common import empty_null_frame, int_setting

__all__ = ["HYPERBOLICITY_DEFAULTS", "HYPERBOLIC_FIT_DEFAULTS", "RANDOM_DRAWS", "probe_hyperbolicity",
           "probe_hyperbolic_fit", "random_delta", "random_draws", "prediction_interval", "treelike_sentence"]

log = logging.getLogger(__name__)

#: Settings of ``hyperbolicity`` (``options.extra["hyperbolicity"]`` overrides them).
HYPERBOLICITY_DEFAULTS: dict[str, Any] = {
    # "auto": base_point and sampled, plus exact when S <= exact_max; or a list / "a,b" of methods.
    "methods": "auto",
    "exact_max": 200,       # species up to which "auto" adds exact (O(S^4): ~2 s at 200 on 2 cores)
    # above: a seeded sample of species. base_point is O(S^3): 0.3 s at 1,000 (2 threads, quiet machine),
    # 259 s at 4,000 (1 thread, loaded machine), and the probe runs it ~7 times
    "max_species": 2000,
    "base_point": 0,        # base point (index among the species used) of base_point
    "sample_size": 1500,    # sampled: points per try (Khrulkov et al.), capped at S
    "tries": 10,            # sampled: number of tries
    "dtype": "float32",     # of the (max,min) product (see latent.hyperbolic.gromov_delta)
}

#: Draws of random Gaussian features per delta method (at most; see :func:`random_draws`).
RANDOM_DRAWS = 20
#: Fewest draws that give an interval; a method whose draws would cost more is left without a baseline
#: (``exact``, ``sampled``) or given this many (``base_point``).
RANDOM_MIN_DRAWS = 5
#: Cost budget of one method's draws, in units of one (max,min) step of a base-point delta (about 1 ns on
#: one CPU core: ~2 s); the number of draws follows from it and from n, so it never depends on timing.
RANDOM_BUDGET = 2e9


#: Default ``tol`` of ``hyperbolic_fit``: a fit stops when its loss fell by less than ``tol`` (relative)
#: over 50 steps; 0 runs every step.
FIT_TOL = 3e-4

#: Settings of ``hyperbolic_fit`` (``options.extra["hyperbolic_fit"]`` overrides them).
HYPERBOLIC_FIT_DEFAULTS: dict[str, Any] = {
    "dims": (2, 4, 8, 16),
    "steps": 1000,          # full-batch RiemannianAdam steps per fit (at most: see tol)
    "lr": 0.1,              # cosine-decayed to lr / 100
    "init_radius": 1.5,     # largest coordinate of the (shared) classical-MDS start
    "max_species": 200,     # above: a seeded sample (19,900 pairs; ~80 s for both targets x 4 dims on 2 cores)
    "targets": ("embedding", "taxonomy"),
    "tol": FIT_TOL,         # convergence tolerance (each row records steps_run and converged)
}

_TARGETS = ("embedding", "taxonomy")


def _settings(options: ProbeOptions, probe: str, defaults: Mapping[str, Any]) -> dict[str, Any]:
    given = options.for_probe(probe)
    unknown = sorted(set(given) - set(defaults))
    if unknown:
        raise InputError(f"Unknown setting(s) {', '.join(map(repr, unknown))} for probe {probe!r}. "
                         f"Settings: {', '.join(defaults)}.")
    return {**defaults, **given}


def _list_setting(settings: Mapping[str, Any], name: str, probe: str, allowed: "Sequence[str] | None" = None) -> list:
    value = settings[name]
    if isinstance(value, str):
        items: list = [v.strip() for v in value.split(",") if v.strip()]
    elif isinstance(value, (int, np.integer)) and not isinstance(value, bool):
        items = [int(value)]
    elif isinstance(value, Sequence):
        items = list(value)
    else:
        items = []
    if not items or (allowed is not None and any(v not in allowed for v in items)):
        expect = f"names from {', '.join(allowed)}" if allowed is not None else "values"
        raise InputError(f"The {name!r} setting of probe {probe!r} must be a non-empty list (or 'a,b') of {expect}. "
                         f"Got {value!r}.")
    return items


def _species_sample(S: int, cap: int, seed: int) -> np.ndarray:
    """Indices of the species used: all of them, or a seeded uniform sample of ``cap`` in lineage order."""
    if S <= cap:
        return np.arange(S)
    rng = np.random.default_rng([int(seed), 0x48595042])
    idx = np.sort(rng.choice(S, size=cap, replace=False))
    log.info("hyperbolic probes: %d of %d species sampled (seed %d)", cap, S, seed)
    return idx


def _target_matrices(data: ProbeData, idx: np.ndarray, distance: str, targets: Sequence[str]) -> dict[str, np.ndarray]:
    out: dict[str, np.ndarray] = {}
    for target in targets:
        if target == "embedding":
            out[target] = pairwise_distances(data.centroids[idx], metric=distance)
        else:
            out[target] = data.species_distances()[np.ix_(idx, idx)].astype(np.float64)
    return out


def random_draws(method: str, n: int, sample_size: int, tries: int) -> int:
    """Draws of random features for one delta method: :data:`RANDOM_DRAWS` within :data:`RANDOM_BUDGET`.

    The cost of one draw is ``n^3`` (``base_point``), ``tries * m^3`` with ``m = min(n, sample_size)``
    (``sampled``) or ``4.5 n^4`` (``exact``); below :data:`RANDOM_MIN_DRAWS` draws, ``exact`` and
    ``sampled`` get none (on ``tol1k``, 790 species, five sampled draws would cost five times the probe
    itself) and ``base_point``, the cheapest, gets :data:`RANDOM_MIN_DRAWS`: the report's sentence then
    reads the method with a baseline.
    """
    m = min(n, sample_size)
    cost = {"base_point": float(n) ** 3, "sampled": tries * float(m) ** 3, "exact": 4.5 * float(n) ** 4}[method]
    draws = int(min(RANDOM_DRAWS, RANDOM_BUDGET // max(cost, 1.0)))
    if draws < RANDOM_MIN_DRAWS:
        return RANDOM_MIN_DRAWS if method == "base_point" else 0
    return draws


def random_delta(n: int, dim: int, method: str, draws: int, *, distance: str = "cosine", seed: int = 0,
                 **delta_kwargs: Any) -> pd.DataFrame:
    """Gromov delta of isotropic Gaussian points of the same size: the random-features baseline.

    Parameters
    ----------
    n, dim
        Points and dimensions (those of the species centroids used).
    method
        Delta method (:func:`latent.hyperbolic.gromov_delta`), the same as the observed value's.
    draws
        Independent draws; draw ``k`` is ``numpy.random.default_rng([seed, 0x52414E44, k])`` standard
        normal ``(n, dim)`` features (and seed ``seed + 1 + k`` for the subsets of ``sampled``).
    distance
        ``"cosine"`` or ``"euclidean"``, as the observed distances.
    delta_kwargs
        Passed to :func:`~latent.hyperbolic.gromov_delta` (``base_point``, ``sample_size``, ``tries``,
        ``device``, ``dtype``).

    Returns
    -------
    pandas.DataFrame
        ``(draws, 5)``: ``method``, ``draw``, ``seed``, ``delta``, ``delta_rel``.
    """
    out = []
    for k in range(int(draws)):
        X = np.random.default_rng([int(seed), 0x52414E44, k]).standard_normal((int(n), int(dim)))
        res = gromov_delta(pairwise_distances(X, metric=distance), method, seed=int(seed) + 1 + k, **delta_kwargs)
        out.append({"method": method, "draw": k, "seed": int(seed), "delta": res.delta, "delta_rel": res.delta_rel})
    return pd.DataFrame(out, columns=["method", "draw", "seed", "delta", "delta_rel"])


def prediction_interval(values: Any, level: float = 0.95) -> tuple[float, float, float]:
    """Mean and ``level`` prediction interval of one more draw: ``mean +- t sd sqrt(1 + 1/k)``.

    ``values`` is ``(k,)`` draws (``k >= 2``; ``sd`` with ``ddof=1``, ``t`` the Student quantile with
    ``k - 1`` degrees of freedom). Unlike the central quantiles of a few draws it does not shrink
    with a small ``k``; where a value outside it is called below or above.
    """
    from scipy.stats import t as student

    v = np.asarray(values, dtype=np.float64)
    v = v[np.isfinite(v)]
    if len(v) < 2:
        return (float(v.mean()) if len(v) else float("nan")), float("nan"), float("nan")
    mean, sd = float(v.mean()), float(v.std(ddof=1))
    half = float(student.ppf(0.5 + level / 2, len(v) - 1)) * sd * math.sqrt(1 + 1 / len(v))
    return mean, mean - half, mean + half


def _position(value: float, low: float, high: float) -> str:
    if not (np.isfinite(value) and np.isfinite(low) and np.isfinite(high)):
        return ""
    return "below" if value < low else ("above" if value > high else "inside")


def probe_hyperbolicity(data: ProbeData, options: ProbeOptions) -> ProbeResult:
    """Gromov delta of the species-centroid distances, with the taxonomy's delta as a reference.

    Settings (``options.for_probe("hyperbolicity")``, defaults in :data:`HYPERBOLICITY_DEFAULTS`):
    ``methods`` ("auto": ``base_point`` and ``sampled``, plus ``exact`` when ``S <= exact_max``),
    ``exact_max``, ``max_species``, ``base_point``, ``sample_size``, ``tries``, ``dtype``.

    No species-permutation null applies (see the module docstring): the embedding's delta does not
    depend on the taxonomy labels. It is compared with the ``target="taxonomy"`` row (0 for an
    ultrametric) and with random Gaussian features of the same size (:func:`random_delta`, by the same
    method; :func:`random_draws` draws per method, none for ``exact`` above about 100 species), and
    read by :func:`treelike_sentence`.

    Returns
    -------
    ProbeResult
        Rows (rank ``"all"``) ``delta`` and ``delta_rel`` (``2 delta / diameter``) per ``method`` and
        ``target`` (``"embedding"``, ``"taxonomy"``), with ``std`` (over the tries of ``sampled``),
        ``diameter``, ``tries``, ``n_used``, ``base_point``, ``distance``, ``species_total``,
        ``sampled``; the embedding's ``delta_rel`` rows also ``random_mean``, ``random_low``,
        ``random_high`` (95% prediction interval of one more draw, :func:`prediction_interval`),
        ``random_draws`` and ``random_position``
        (``below`` / ``inside`` / ``above``). ``tables["tries"]`` (target, method, try,
        base_point, delta, delta_rel), ``tables["random"]`` (method, draw, seed, delta, delta_rel) and an
        empty ``tables["null"]``; ``arrays["species"]`` ``(n,)`` the species indices used.
    """
    probe = "hyperbolicity"
    settings = _settings(options, probe, HYPERBOLICITY_DEFAULTS)
    S = data.n_species
    exact_max = int_setting(settings, "exact_max", None, probe, 0)
    cap = int_setting(settings, "max_species", None, probe, 4)
    base = int_setting(settings, "base_point", None, probe, 0)
    sample_size = int_setting(settings, "sample_size", None, probe, 4)
    tries = int_setting(settings, "tries", None, probe, 1)
    if settings["methods"] == "auto":
        methods = ["base_point", "sampled"] + (["exact"] if min(S, cap) <= exact_max else [])
    else:
        methods = _list_setting(settings, "methods", probe, DELTA_METHODS)
    idx = _species_sample(S, cap, options.seed)
    n = len(idx)
    if base >= n:
        raise InputError(f"The 'base_point' setting of probe {probe!r} must be below the number of species used "
                         f"({n}). Got {base}.")
    rows, tries_rows, random_frames = [], [], []
    dim = int(data.centroids.shape[1])
    kwargs = dict(base_point=base, sample_size=sample_size, tries=tries, device=options.device, dtype=settings["dtype"])
    for target, D in _target_matrices(data, idx, options.distance, _TARGETS).items():
        for method in methods:
            res = gromov_delta(D, method, seed=options.seed, **kwargs)
            extra = dict(method=method, target=target,
                         distance=options.distance if target == "embedding" else "taxonomic",
                         diameter=res.diameter, tries=res.tries, n_used=res.n_used, base_point=res.base_point,
                         species_total=S, sampled=bool(n < S), seconds=res.seconds)
            rows.append(null_row("all", "delta", res.delta, None, n, std=res.delta_std, **extra))
            random_cols: dict[str, Any] = {}
            draws = random_draws(method, n, sample_size, tries) if target == "embedding" else 0
            if draws:
                drawn = random_delta(n, dim, method, draws, distance=options.distance, seed=options.seed, **kwargs)
                random_frames.append(drawn)
                values = drawn["delta_rel"].to_numpy(float)
                values = values[np.isfinite(values)]
                if len(values):
                    mean, low, high = prediction_interval(values)
                    random_cols = dict(random_mean=mean, random_low=low, random_high=high, random_draws=len(values),
                                       random_position=_position(res.delta_rel, low, high))
                    log.info("hyperbolicity %s: delta_rel %.4g, random Gaussian features %.4g [%.4g, %.4g] "
                             "(%d draws): %s", method, res.delta_rel, mean, low, high, len(values),
                             random_cols["random_position"])
            rows.append(null_row("all", "delta_rel", res.delta_rel, None, n, std=res.delta_rel_std, **extra,
                                 **random_cols))
            for t in range(len(res.per_try_delta)):
                tries_rows.append({"target": target, "method": method, "try": t,
                                   "base_point": int(res.per_try_base[t]), "delta": float(res.per_try_delta[t]),
                                   "delta_rel": float(res.per_try_delta_rel[t])})
            log.info("hyperbolicity %s %s: delta %.4g, delta_rel %.4g", target, method, res.delta, res.delta_rel)
    info = {"settings": {k: (list(v) if isinstance(v, tuple) else v) for k, v in settings.items()},
            "methods": methods, "species_used": n, "species_total": S, "distance": options.distance,
            "convention": "delta = max over quadruples of half the gap between the two largest pair sums; "
                          "delta_rel = 2 delta / diameter",
            "null": "none: delta of the embedding does not depend on the taxonomy labels (species-permuted "
                    "centroids have the same delta); compared with the taxonomy row (a tree: 0) and with random "
                    "Gaussian features of the same size (columns random_* of the embedding's delta_rel rows)",
            "random": {"features": f"isotropic Gaussian, {n} x {dim}, distance {options.distance}",
                       "draws": {m: random_draws(m, n, sample_size, tries) for m in methods},
                       "interval": "95% prediction interval of one more draw: mean +- t sd sqrt(1 + 1/k)"}}
    random_table = (pd.concat(random_frames, ignore_index=True) if random_frames
                    else pd.DataFrame(columns=["method", "draw", "seed", "delta", "delta_rel"]))
    return ProbeResult(probe, pd.DataFrame(rows), arrays={"species": idx},
                       tables={"tries": pd.DataFrame(tries_rows), "random": random_table, "null": empty_null_frame()},
                       info=info)


def probe_hyperbolic_fit(data: ProbeData, options: ProbeOptions) -> ProbeResult:
    """Poincare-ball versus Euclidean fits of the centroid distances (and of the taxonomy) at equal dimension.

    Settings (``options.for_probe("hyperbolic_fit")``, defaults in :data:`HYPERBOLIC_FIT_DEFAULTS`):
    ``dims`` (2, 4, 8, 16), ``steps`` (1000), ``lr`` (0.1), ``init_radius`` (1.5), ``max_species``
    (200), ``targets`` (``embedding`` = centroid distances with ``options.distance``, ``taxonomy``
    = LCA heights, the tree reference) and ``tol`` (3e-4: a fit stops when its loss fell by less than
    ``tol`` times the loss over the last 50 steps; 0 runs every step). Each fit is
    :func:`latent.hyperbolic.fit_distances` with seed ``options.seed`` on ``options.device``; the row
    columns ``steps_run`` and ``converged`` say whether it stopped at the tolerance.

    No label null applies to a fit of embedding distances (see the module docstring); MAP counts
    each species' nearest taxonomic relatives (:func:`latent.hyperbolic.nearest_relatives` of the
    taxonomic distances among the species used) and ``embedding_map`` gives the same MAP in the
    original centroid distances as a reference.

    Returns
    -------
    ProbeResult
        Rows (rank ``"all"``) ``{geometry}_distortion@{D}``, ``{geometry}_worst_distortion@{D}``,
        ``{geometry}_map@{D}`` for geometry ``poincare`` / ``euclidean`` and ``distortion_ratio@{D}``
        (euclidean / poincare average distortion: > 1 when the ball fits better; its ``converged`` is
        True only when both fits converged, else ``note`` says which did not: no comparison), with columns
        ``target``, ``geometry``, ``dim``, ``steps``, ``lr``, ``scale``, ``final_loss``, ``pairs``,
        ``species_total``, ``sampled``; ``embedding_map``. ``arrays``: ``"{geometry}@{D}"`` ``(n, D)``
        fitted coordinates of the embedding target, ``"taxonomy_{geometry}@{D}"`` those of the
        taxonomy target, ``"species"`` ``(n,)`` indices used. ``tables["loss"]`` (target, geometry,
        dim, step, loss) and an empty ``tables["null"]``.
    """
    probe = "hyperbolic_fit"
    settings = _settings(options, probe, HYPERBOLIC_FIT_DEFAULTS)
    dims = _list_setting(settings, "dims", probe)
    if any(isinstance(d, bool) or not isinstance(d, (int, np.integer)) or d < 1 for d in dims):
        raise InputError(f"The 'dims' setting of probe {probe!r} must be integers >= 1. Got {settings['dims']!r}.")
    targets = _list_setting(settings, "targets", probe, _TARGETS)
    steps = int_setting(settings, "steps", None, probe, 1)
    tol = settings["tol"]
    if isinstance(tol, bool) or not isinstance(tol, (int, float)) or not 0 <= tol < math.inf:
        raise InputError(f"The 'tol' setting of probe {probe!r} must be a number >= 0 (0: run every step). "
                         f"Got {tol!r}.")
    tol = float(tol) if tol > 0 else None
    cap = int_setting(settings, "max_species", None, probe, 3)
    S = data.n_species
    if S < 3:
        raise InputError(f"Probe {probe!r} needs at least 3 species; got {S}.")
    idx = _species_sample(S, cap, options.seed)
    n = len(idx)
    matrices = _target_matrices(data, idx, options.distance, _TARGETS)
    relevant = nearest_relatives(matrices["taxonomy"])
    rows: list[dict[str, Any]] = []
    arrays: dict[str, np.ndarray] = {"species": idx}
    loss_frames = []
    common = dict(species_total=S, sampled=bool(n < S))
    if "embedding" in targets:
        rows.append(null_row("all", "embedding_map", mean_average_precision(matrices["embedding"], relevant), None, n,
                             target="embedding", geometry="original", dim=int(data.centroids.shape[1]), **common))
    for target in targets:
        T = matrices[target]
        for dim in dims:
            dist, converged = {}, {}
            for geometry in GEOMETRIES:
                fit = fit_distances(T, geometry, int(dim), steps=steps, lr=settings["lr"], seed=options.seed,
                                    init_radius=settings["init_radius"], device=options.device, tol=tol)
                report = fit_report(fit, T, relevant)
                dist[geometry] = report["distortion"]
                converged[geometry] = bool(fit.converged)
                extra = dict(target=target, geometry=geometry, dim=int(dim), steps=steps, lr=float(settings["lr"]),
                             scale=fit.scale, final_loss=fit.final_loss, pairs=fit.pairs, seconds=fit.seconds,
                             steps_run=fit.steps_run, converged=fit.converged, tol=tol or 0.0,
                             **common)
                for name, key in (("distortion", "distortion"), ("worst_distortion", "worst_distortion"),
                                  ("map", "map")):
                    rows.append(null_row("all", f"{geometry}_{name}@{dim}", report[key], None, n, **extra))
                key = f"{geometry}@{dim}" if target == "embedding" else f"taxonomy_{geometry}@{dim}"
                arrays[key] = fit.coords
                loss_frames.append(pd.DataFrame({"target": target, "geometry": geometry, "dim": int(dim),
                                                 "step": np.arange(len(fit.loss)), "loss": fit.loss}))
            ratio = dist["euclidean"] / dist["poincare"] if dist["poincare"] > 0 else float("inf")
            both = all(converged.values())
            late = [g for g in GEOMETRIES if not converged[g]]
            rows.append(null_row("all", f"distortion_ratio@{dim}", ratio, None, n, target=target,
                                 geometry="euclidean/poincare", dim=int(dim), steps=steps, converged=both,
                                 tol=tol or 0.0, **common,
                                 note="" if both else f"not a comparison: the {' and '.join(late)} fit did not "
                                                      f"converge in {steps} steps"))
            log.info("hyperbolic_fit %s dim %d: distortion poincare %.4g, euclidean %.4g", target, dim,
                     dist["poincare"], dist["euclidean"])
    info = {"settings": {k: (list(v) if isinstance(v, tuple) else v) for k, v in settings.items()},
            "species_used": n, "species_total": S, "distance": options.distance,
            "loss": "mean over pairs of ((scale * d_fit - t) / t)^2, scale learned",
            "null": "none: fits of embedding distances do not depend on the taxonomy labels; compare with the "
                    "taxonomy target and the random-features baseline"}
    return ProbeResult(probe, pd.DataFrame(rows), arrays=arrays,
                       tables={"loss": pd.concat(loss_frames, ignore_index=True), "null": empty_null_frame()},
                       info=info)


#: Methods in the order :func:`treelike_sentence` prefers them (the mean over base points first: its
#: spread over random draws is the smallest).
SENTENCE_METHODS = ("sampled", "exact", "base_point")


def _model_rows(frame: pd.DataFrame) -> pd.DataFrame:
    if "features" in frame.columns:
        frame = frame[frame["features"].astype(str).isin(["model", "", "nan"])]
    return frame


def treelike_sentence(rows: pd.DataFrame) -> str:
    """One sentence: is the space more tree-like than random data of its size?

    Parameters
    ----------
    rows
        The ``hyperbolicity`` probe's rows of one model (a ``metrics.csv`` with other probes' rows and a
        ``features`` column is fine: only ``probe == "hyperbolicity"`` and ``features == "model"`` are
        read). Needs the embedding's ``delta_rel`` row of one method with its ``random_*`` columns; the
        taxonomy's row of that method is quoted when present.

    Returns
    -------
    str
        E.g. (the demo's planted hierarchy) "Relative Gromov delta of the species-centroid distances is
        0.615 (sampled, 144 species), below random Gaussian features of the same size (0.688; 95%
        prediction interval 0.651-0.724 from 20 draws): the space is more tree-like than random data of
        its size (the taxonomy itself, a tree: 0)." An empty string when there is no ``delta_rel`` row.
    """
    if not isinstance(rows, pd.DataFrame):
        raise InputError(f"The 'rows' parameter of treelike_sentence must be a pandas DataFrame (the "
                         f"hyperbolicity probe's rows). Got {type(rows).__name__}.")
    frame = rows
    if "probe" in frame.columns:
        frame = frame[frame["probe"].astype(str) == "hyperbolicity"]
    frame = _model_rows(frame)
    if not {"metric", "value", "target", "method"} <= set(frame.columns):
        return ""
    frame = frame[frame["metric"].astype(str) == "delta_rel"]
    embedding = frame[frame["target"].astype(str) == "embedding"]
    if embedding.empty:
        return ""
    has_random = (embedding[["random_low", "random_high"]].notna().all(axis=1)
                  if {"random_low", "random_high"} <= set(embedding.columns)
                  else pd.Series(False, index=embedding.index))
    methods = [str(m) for m in embedding["method"]]
    ranked = sorted(range(len(embedding)), key=lambda i: (not bool(has_random.iloc[i]),
                                                         SENTENCE_METHODS.index(methods[i])
                                                         if methods[i] in SENTENCE_METHODS else 9))
    row = embedding.iloc[ranked[0]]
    method, value, n = str(row["method"]), float(row["value"]), int(row["n"]) if "n" in row else 0
    tax = frame[(frame["target"].astype(str) == "taxonomy") & (frame["method"].astype(str) == method)]
    tax_text = f" (the taxonomy itself, a tree: {float(tax['value'].iloc[0]):.3g})" if len(tax) else ""
    head = f"Relative Gromov delta of the species-centroid distances is {value:.3f} ({method}, {n:,} species)"
    if not bool(has_random.iloc[ranked[0]]):
        return (f"{head}; no random-features baseline was computed for it, so whether the space is more "
                f"tree-like than random data of its size is not tested{tax_text}.")
    low, high, mean = float(row["random_low"]), float(row["random_high"]), float(row["random_mean"])
    draws = int(row["random_draws"])
    position = _position(value, low, high)
    if not position:
        return f"{head}: not compared with random features (no finite value){tax_text}."
    reading = {"below": "more tree-like than random data of its size",
               "inside": "no more tree-like than random data of its size",
               "above": "less tree-like than random data of its size (random points in many dimensions are "
                        "nearly equidistant: a star, itself a tree)"}[position]
    where = {"below": "below", "inside": "inside the range of", "above": "above"}[position]
    return (f"{head}, {where} random Gaussian features of the same size ({mean:.3f}; 95% prediction interval "
            f"{low:.3f}-{high:.3f} from {draws} draws): the space is {reading}{tax_text}.")
