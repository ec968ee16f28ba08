"""Figures of the hyperbolic fit: the taxonomy in the Poincare disk, distortion against dimension, loss.

Inputs (the ``hyperbolic_fit`` probe's outputs)
-----------------------------------------------
* Poincare coordinates ``(S, 2)`` of the species (norms < 1) with the species table (columns
  ``kingdom``..``species``, row ``s`` = species ``s``).
* Fit summary: long rows ``rank, metric, value, ci_low, ci_high, n`` whose ``metric`` is
  ``<geometry>_<statistic>@<dim>``: ``poincare_distortion@2``, ``euclidean_map@16``, ... (any statistic
  name works; distortion and MAP are the ones reported); optional ``model``.
* Loss table: ``geometry, dim, step, loss`` (optional ``model``).
"""

from __future__ import annotations

import logging
import re
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd
from matplotlib.collections import LineCollection
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.patches import Circle

from latent.errors import InputError, format_list
from latent.ranks import RANK_NAMES
from latent.plotting.geometry import check_species_table
from latent.plotting.style import (
    OKABE_ITO,
    OTHER_COLOR,
    SEQUENTIAL_CMAP,
    check_int,
    coordinate_sets,
    figure_legend,
    figure_title,
    grid_shape,
    hide_unused,
    lineage_keys,
    model_values,
    new_figure,
    palette,
    rank_keys,
    require_columns,
    shorten,
    styled,
    top_categories,
)

__all__ = ["plot_poincare_disk", "plot_distortion", "plot_fit_loss", "parse_fit_metric"]

log = logging.getLogger(__name__)

GEOMETRIES = ("poincare", "euclidean")
_GEOMETRY_STYLE = {"poincare": {"linestyle": "-", "marker": "o"}, "euclidean": {"linestyle": "--", "marker": "s"}}
_GEOMETRY_COLOUR = {"poincare": OKABE_ITO[0], "euclidean": OKABE_ITO[1]}
_STAT_LABELS = {
    "distortion": "average distortion\n(lower is better)",
    "worst_distortion": "worst-case distortion\n(lower is better)",
    "map": "MAP of taxonomic neighbours\n(higher is better)",
}
_METRIC = re.compile(r"^(poincare|euclidean)_(.+)@(\d+)$")


def parse_fit_metric(metric: str) -> "tuple[str, str, int] | None":
    """``"poincare_distortion@8"`` -> ``("poincare", "distortion", 8)``; None if it is not a fit metric."""
    match = _METRIC.match(str(metric))
    if not match:
        return None
    return match.group(1), match.group(2), int(match.group(3))


@styled
def plot_poincare_disk(
    coords: "np.ndarray | Mapping[str, np.ndarray]",
    species: pd.DataFrame,
    *,
    color_rank: str = "order",
    top_n: int = 8,
    edges: bool = False,
    point_size: "float | None" = None,
    zoom: "bool | None" = None,
    title: "str | None" = "Species in the Poincare disk",
) -> tuple[Figure, np.ndarray]:
    """The species of a 2-D Poincare fit in the unit disk, coloured by their clade at one rank.

    Faint circles mark hyperbolic distances d from the centre (Euclidean radius ``tanh(d / 2)``,
    curvature -1; d = 1, 2, 3 on the whole disk; named under the panel, never on the disk): near the rim,
    small Euclidean gaps are large hyperbolic distances. Each coloured clade is named beside the mean of
    its points, towards the centre (so a clade on the rim is not covered by its name); the legend gives
    the names in full.

    Parameters
    ----------
    coords
        ``(S, 2)`` Poincare-disk coordinates (norms < 1), row ``s`` = species table row ``s``; or
        ``{model: (S, 2)}`` for one panel per model.
    species
        ``(S, 7+)`` species table (``kingdom``..``species``).
    color_rank
        Rank whose clades colour the points: the ``top_n`` largest clades, the rest "other" (grey).
    top_n
        Clades given their own colour.
    edges
        Draw the tree as straight segments between clade centres (the Euclidean mean of the
        members' coordinates, a drawing aid, not a hyperbolic barycentre), genus to species and up
        to kingdom; the centre of the disk is the root.
    point_size
        Marker area (default from S).
    zoom
        Show only the disk around the points (True), the whole disk (False), or zoom when every point
        lies within radius 0.5 (None, the default); a zoomed panel says so in its title.
    title
        Figure title.

    Returns
    -------
    (Figure, numpy.ndarray)
        ``(n_models,)`` axes.
    """
    function = "plot_poincare_disk"
    top_n = check_int("top_n", top_n, minimum=1, function=function)
    if color_rank not in RANK_NAMES:
        raise InputError(f"The 'color_rank' parameter of {function} must be one of {', '.join(RANK_NAMES)}. "
                         f"Got {color_rank!r} instead.")
    arrays = coordinate_sets(coords, function=function, what="(S, 2) disk coordinates")
    for name, P in arrays.items():
        where = f" ({name!r})" if name else ""
        norm = np.linalg.norm(P, axis=1)
        if len(norm) and norm.max() >= 1 + 1e-9:
            raise InputError(f"The 'coords' parameter of {function} must lie inside the unit disk{where}; the largest "
                             f"norm is {norm.max():.4g} (row {int(norm.argmax())}). Pass Poincare-ball coordinates.")
    S = next(iter(arrays.values())).shape[0]
    table = check_species_table(species, S, parameter="species", function=function)
    if any(P.shape[0] != S for P in arrays.values()):
        raise InputError(f"The coordinate sets given to {function} have different numbers of species.")
    keys, names = rank_keys(table, color_rank)
    codes, clades, sizes = top_categories(keys, top_n, names=names)
    colours = palette(len(clades))
    has_other = bool(clades) and clades[-1] == "other"
    if has_other:
        colours[-1] = OTHER_COLOR
    point_colours = np.asarray(colours, dtype=object)[codes] if len(codes) else np.zeros(0, dtype=object)
    size = point_size if point_size is not None else float(np.clip(400.0 / np.sqrt(max(S, 1)), 1.0, 40.0))
    # "other" underneath, the clades above it in a seeded random order (no clade hides another).
    shuffled = np.random.default_rng(0).permutation(S)
    other = codes[shuffled] == len(clades) - 1 if has_other else np.zeros(S, dtype=bool)
    draw = np.r_[shuffled[other], shuffled[~other]]
    fig, axes = new_figure(1, len(arrays), panel=(3.6, 3.8), extra=(0.2, 0.9))
    axes = axes[0]
    for ax, (name, P) in zip(axes, arrays.items()):
        radius = float(np.linalg.norm(P, axis=1).max()) if S else 1.0
        zoomed = (radius < 0.5) if zoom is None else bool(zoom)
        limit = min(1.04, max(radius, 1e-6) * 1.15) if zoomed else 1.04
        ax.add_patch(Circle((0, 0), 1.0, fill=False, edgecolor="#333333", linewidth=1.0))
        # Reference circles at hyperbolic distances d from the centre (the three largest in view), named
        # under the panel, not on the disk where the points are.
        shown = [d for d in (0.05, 0.1, 0.2, 0.5, 1, 2, 3) if np.tanh(d / 2) < 0.97 * limit][-3:]
        for d in shown:
            ax.add_patch(Circle((0, 0), np.tanh(d / 2), fill=False, edgecolor="#D0D0D0", linewidth=0.6,
                                linestyle=":"))
        if shown:
            ax.text(0.5, -0.02, "dotted circles: hyperbolic distance " + ", ".join(f"{d:g}" for d in shown)
                    + " from the centre", transform=ax.transAxes, ha="center", va="top", fontsize=6,
                    color="#666666")
        if edges:
            ax.add_collection(LineCollection(_tree_edges(P, table), colors="#999999", linewidths=0.4, alpha=0.6,
                                             zorder=1))
        ax.scatter(P[draw, 0], P[draw, 1], s=size, c=list(point_colours[draw]), linewidths=0.2,
                   edgecolors="white" if S <= 300 else "none", rasterized=S > 2000, zorder=2)
        _label_clades(ax, P, codes, clades, limit)
        ax.set_xlim(-limit, limit)
        ax.set_ylim(-limit, limit)
        ax.set_aspect("equal")
        ax.set_axis_off()
        label = name or f"{S:,} species"
        ax.set_title(f"{label}\n(zoomed to radius {limit:.2g} of 1)" if zoomed and limit < 1 else label, pad=10)
    handles = [Line2D([], [], marker="o", linestyle="", markerfacecolor=c, markeredgecolor="none", markersize=6)
               for c in colours]
    figure_legend(fig, handles, [f"{shorten(c, 40)} ({n:,})" for c, n in zip(clades, sizes)],
                  max_ncol=min(4, max(1, len(clades))), title=f"{color_rank} (species)")
    figure_title(fig, title)
    return fig, axes


def _label_clades(ax: Any, P: np.ndarray, codes: np.ndarray, clades: Sequence[str], limit: float) -> None:
    """Name each coloured clade (not "other") beside the mean of its points, towards the centre.

    A clade away from the centre is named just inside its mean position (text running towards the
    centre, so it does not cover its points on the rim); a clade around the centre at its mean.
    """
    import matplotlib.patheffects as pe

    halo = [pe.withStroke(linewidth=2.2, foreground="white")]
    for k, clade in enumerate(clades):
        if clade == "other" and k == len(clades) - 1:
            continue
        members = P[codes == k]
        if not len(members):
            continue
        centre = members.mean(axis=0)
        r = float(np.linalg.norm(centre))
        if r > 0.3 * limit:
            at = centre * max(r - 0.06 * limit, 0.0) / r
            ha = "right" if centre[0] > 0 else "left"
            va = "top" if centre[1] > 0 else "bottom"
        else:
            at, ha, va = centre, "center", "center"
        ax.text(at[0], at[1], shorten(clade, 22), fontsize=6.5, ha=ha, va=va, color="#222222", zorder=3,
                path_effects=halo, gid="clade-label")


def _tree_edges(P: np.ndarray, table: pd.DataFrame) -> np.ndarray:
    """Segments species -> genus centre -> ... -> kingdom centre -> origin (Euclidean clade means)."""
    pieces = []
    child_keys = lineage_keys(table, RANK_NAMES[-1])
    child_pos = pd.DataFrame(P, index=child_keys).groupby(level=0).mean()
    for r in range(len(RANK_NAMES) - 2, -1, -1):
        keys = lineage_keys(table, RANK_NAMES[r])
        centres = pd.DataFrame(P).groupby(keys).mean()
        parent_of = pd.Series(keys, index=child_keys).groupby(level=0).first().reindex(child_pos.index)
        starts = child_pos.to_numpy()
        ends = centres.loc[parent_of.to_numpy()].to_numpy()
        pieces.append(np.stack([starts, ends], axis=1))
        child_keys, child_pos = keys, centres
    pieces.append(np.stack([child_pos.to_numpy(), np.zeros_like(child_pos.to_numpy())], axis=1))
    return np.concatenate(pieces)


def _fit_series(frame: pd.DataFrame) -> pd.Series:
    """One series name per row, the model named once.

    Rows of the embedding target (or without ``target``) are named by their model (``"centroid
    distances"`` when no model is given); rows of the taxonomy target are ``"taxonomy (reference)"``,
    with the model after it only when several models bring one.
    """
    model = model_values(frame)
    if "target" not in frame.columns:
        return model.map(lambda m: m or "centroid distances")
    target = model_values(frame, "target")
    several = model[target == "taxonomy"].nunique() > 1
    names = [("taxonomy (reference" + (f", {m})" if several and m else ")")) if t == "taxonomy"
             else (m or "centroid distances") for m, t in zip(model, target)]
    return pd.Series(names, index=frame.index, dtype=object)


def _converged(frame: pd.DataFrame) -> np.ndarray:
    """``(n,)`` bool: the row's fit converged (True where the table has no ``converged`` record)."""
    if "converged" not in frame.columns:
        return np.ones(len(frame), dtype=bool)
    values = frame["converged"]
    out = values.map(lambda v: str(v).strip().lower() not in ("false", "0", "0.0", "no"))
    return out.to_numpy(dtype=bool)


#: Horizontal offset (in octaves of dimension) between neighbouring series in a panel where two series
#: would hide each other (values within :data:`_OVERLAP` of the panel's range at one dimension).
_DODGE = 0.05
_OVERLAP = 0.03


def _overlapping(sub: pd.DataFrame) -> bool:
    """Whether two series of one panel have nearly equal values at one dimension (one would hide the other)."""
    values = sub["value"].to_numpy(float)
    finite = values[np.isfinite(values)]
    if len(finite) < 2:
        return False
    span = float(finite.max() - finite.min())
    close = _OVERLAP * span if span > 0 else 1e-12
    for _, at in sub.groupby("_dim"):
        y = np.sort(at["value"].to_numpy(float))
        y = y[np.isfinite(y)]
        if len(y) > 1 and (np.diff(y) <= close).any():
            return True
    return False


@styled
def plot_distortion(
    summary: pd.DataFrame,
    *,
    statistics: "Sequence[str] | None" = None,
    title: "str | None" = "Poincare vs Euclidean fits of the centroid distances",
) -> tuple[Figure, np.ndarray]:
    """Fit quality against embedding dimension for both geometries, one panel per statistic.

    Parameters
    ----------
    summary
        Long rows with ``metric`` = ``<geometry>_<statistic>@<dim>`` (``poincare_distortion@2``,
        ``euclidean_map@16``, ...), ``value`` and optional ``ci_low``, ``ci_high`` (error bars),
        ``model``, ``target`` (``embedding`` or ``taxonomy``: the fit of the taxonomy's own distances,
        a reference series) and ``converged`` (the fit met its tolerance; absent: taken as converged).
        Other metrics are ignored.
    statistics
        Which statistics to draw (default all found: distortion first, MAP last).
    title
        Figure title.

    Returns
    -------
    (Figure, numpy.ndarray)
        ``(n_statistics,)`` axes. One series: colour and line style both mark the geometry; several
        (models, or the taxonomy's reference): colour is the series, line style and marker (solid
        circles Poincare, dashed squares Euclidean) the geometry. In a panel where two series have
        nearly equal values at one dimension, the series are offset a little along the dimension axis so
        that both stay visible side by side. A fit that did not converge is a
        hollow marker outside its series' line (left out of the comparison), and the legend says so.
    """
    function = "plot_distortion"
    require_columns(summary, ["metric", "value"], parameter="summary", function=function,
                    hint="Pass the hyperbolic_fit probe's rows (metrics poincare_distortion@D, ...).")
    parsed = summary["metric"].astype(str).map(parse_fit_metric)
    frame = summary[parsed.notna()].copy()
    if frame.empty:
        raise InputError(f"The 'summary' table of {function} has no metrics named <geometry>_<statistic>@<dim> "
                         f"(e.g. poincare_distortion@2). Metrics present: "
                         f"{format_list(sorted(set(summary['metric'].astype(str))))}.")
    frame["_geometry"] = [p[0] for p in parsed[parsed.notna()]]
    frame["_stat"] = [p[1] for p in parsed[parsed.notna()]]
    frame["_dim"] = [p[2] for p in parsed[parsed.notna()]]
    frame["_model"] = _fit_series(frame)
    frame["_converged"] = _converged(frame)
    found = list(dict.fromkeys(frame["_stat"]))
    order = {"distortion": 0, "worst_distortion": 1, "map": 3}
    found.sort(key=lambda s: order.get(s, 2))
    if statistics is not None:
        statistics = [statistics] if isinstance(statistics, str) else list(statistics)
        bad = [s for s in statistics if s not in found]
        if bad:
            raise InputError(f"The 'statistics' parameter of {function} names {format_list(bad)}, not in the table "
                             f"(found: {format_list(found)}).")
        found = statistics
    dup = frame.duplicated(["_model", "_geometry", "_stat", "_dim"], keep=False)
    if dup.any():
        raise InputError(f"The 'summary' table of {function} has several rows for one model/metric "
                         f"({frame.loc[dup, ['_model', 'metric']].iloc[0].tolist()}); add a 'model' (or "
                         "'target') column.")
    models = list(dict.fromkeys(frame["_model"]))
    model_colours = dict(zip(models, palette(len(models))))
    series = [(m, g) for m in models for g in GEOMETRIES]
    shift = {key: 2.0 ** (_DODGE * (i - (len(series) - 1) / 2)) for i, key in enumerate(series)}
    nrows, ncols = grid_shape(len(found), 3)
    fig, axes = new_figure(nrows, ncols, panel=(2.9, 2.5), extra=(0.2, 0.8))
    flat = axes.ravel()
    dims = sorted(set(frame["_dim"]))
    hollow_drawn = False
    for ax, stat in zip(flat, found):
        sub = frame[frame["_stat"] == stat]
        dodge = _overlapping(sub)
        for model in models:
            for geometry in GEOMETRIES:
                rows = sub[(sub["_model"] == model) & (sub["_geometry"] == geometry)].sort_values("_dim")
                if rows.empty:
                    continue
                colour = _GEOMETRY_COLOUR[geometry] if len(models) == 1 else model_colours[model]
                x = rows["_dim"].to_numpy(float) * (shift[(model, geometry)] if dodge else 1.0)
                y = rows["value"].to_numpy(float)
                ok = rows["_converged"].to_numpy(bool)
                err = None
                if {"ci_low", "ci_high"} <= set(rows.columns):
                    lo = np.nan_to_num(y - rows["ci_low"].to_numpy(float), nan=0.0).clip(min=0)
                    hi = np.nan_to_num(rows["ci_high"].to_numpy(float) - y, nan=0.0).clip(min=0)
                    err = np.vstack([lo, hi]) if (lo > 0).any() or (hi > 0).any() else None
                if ok.any():
                    ax.errorbar(x[ok], y[ok], yerr=None if err is None else err[:, ok], color=colour,
                                markersize=4.5, gid=f"converged:{model}:{geometry}", **_GEOMETRY_STYLE[geometry])
                if (~ok).any():
                    ax.errorbar(x[~ok], y[~ok], yerr=None if err is None else err[:, ~ok], color=colour,
                                markersize=4.5, markerfacecolor="white", markeredgewidth=1.1, linestyle="none",
                                marker=_GEOMETRY_STYLE[geometry]["marker"], gid=f"not-converged:{model}:{geometry}")
                    hollow_drawn = True
        ax.set_xscale("log", base=2)
        ax.set_xticks(dims, [str(d) for d in dims])
        ax.minorticks_off()
        if len(dims) == 1:
            ax.set_xlim(dims[0] / 2 ** 0.5, dims[0] * 2 ** 0.5)
        ax.set_xlabel("dimension")
        ax.set_ylabel(_STAT_LABELS.get(stat, stat))
        ax.grid(axis="y")
        ax.set_axisbelow(True)
    hide_unused(axes, len(found))
    handles: list[Any] = []
    labels: list[str] = []
    for geometry in GEOMETRIES:
        colour = _GEOMETRY_COLOUR[geometry] if len(models) == 1 else "#444444"
        handles.append(Line2D([], [], color=colour, **_GEOMETRY_STYLE[geometry]))
        labels.append("Poincare ball" if geometry == "poincare" else "Euclidean")
    if len(models) > 1:
        for model in models:
            handles.append(Line2D([], [], color=model_colours[model], linewidth=3))
            labels.append(model)
    if hollow_drawn:
        handles.append(Line2D([], [], color="#444444", marker="o", markerfacecolor="white", linestyle="none"))
        labels.append("not converged")
    note = None
    if hollow_drawn:
        import textwrap

        note = "\n".join(textwrap.wrap("hollow: the fit did not converge (its loss still fell at the last step); it "
                                       "is left out of the lines and of the comparison",
                                       max(30, int(fig.get_figwidth() * 72 / (7.5 * 0.55)))))
    figure_legend(fig, handles, labels, max_ncol=min(len(labels), 5), title=note)
    figure_title(fig, title)
    return fig, flat[: len(found)]


@styled
def plot_fit_loss(
    losses: pd.DataFrame,
    *,
    title: "str | None" = "Fit loss",
) -> tuple[Figure, np.ndarray]:
    """Training loss of the fits against the step: one panel per geometry (rows per model), colour = dimension.

    Parameters
    ----------
    losses
        Columns ``geometry``, ``dim``, ``step``, ``loss``; optional ``model`` and ``target`` (rows of
        panels per model and target) and ``converged`` (per fit: the fit met its tolerance). A fit that
        did not converge is drawn dashed and the legend says so.
    title
        Figure title.

    Returns
    -------
    (Figure, numpy.ndarray)
        ``(n_models, n_geometries)`` axes.
    """
    function = "plot_fit_loss"
    require_columns(losses, ["geometry", "dim", "step", "loss"], parameter="losses", function=function,
                    hint="Pass the hyperbolic_fit probe's loss table.")
    if losses.empty:
        raise InputError(f"The 'losses' table of {function} is empty.")
    frame = losses.copy()
    frame["_model"] = _fit_series(frame)
    frame["_converged"] = _converged(frame)
    frame["geometry"] = frame["geometry"].astype(str)
    present = set(frame["geometry"])
    geometries = [g for g in GEOMETRIES if g in present] + sorted(present - set(GEOMETRIES))
    models = list(dict.fromkeys(frame["_model"]))
    dims = sorted(set(frame["dim"].astype(int)))
    import matplotlib as mpl

    cmap = mpl.colormaps[SEQUENTIAL_CMAP]
    dim_colour = {d: cmap(0.1 + 0.8 * i / max(1, len(dims) - 1)) for i, d in enumerate(dims)}
    fig, axes = new_figure(len(models), len(geometries), panel=(2.9, 2.3), extra=(0.2, 0.6), sharey=True)
    positive = bool((frame["loss"] > 0).all())
    dashed = False
    for i, model in enumerate(models):
        for j, geometry in enumerate(geometries):
            ax = axes[i, j]
            sub = frame[(frame["_model"] == model) & (frame["geometry"] == geometry)]
            for d in dims:
                rows = sub[sub["dim"].astype(int) == d].sort_values("step")
                if not rows.empty:
                    converged = bool(rows["_converged"].all())
                    dashed |= not converged
                    ax.plot(rows["step"], rows["loss"], color=dim_colour[d], linewidth=1.1,
                            linestyle="-" if converged else "--",
                            gid=f"{'converged' if converged else 'not-converged'}:dim{d}")
            if positive:
                ax.set_yscale("log")
            name = {"poincare": "Poincare ball", "euclidean": "Euclidean"}.get(geometry, geometry)
            ax.set_title(f"{model}: {name}" if model else name)
            ax.set_xlabel("step")
        axes[i, 0].set_ylabel("loss")
    handles = [Line2D([], [], color=dim_colour[d], linewidth=2) for d in dims]
    labels = [f"dim {d}" for d in dims]
    if dashed:
        handles.append(Line2D([], [], color="#444444", linewidth=1.5, linestyle="--"))
        labels.append("dashed: not converged")
    figure_legend(fig, handles, labels, max_ncol=min(len(labels), 6))
    figure_title(fig, title)
    return fig, axes


# ------------------------------------------------------------------------------ report adapters
def report_poincare(context: Any, model: Any) -> "tuple[Figure, Any] | None":
    """One model's species in the Poincare disk (``hyperbolic_fit.npz``, ``species.csv``); a panel whose
    2-D Poincare fit did not converge (``metrics.csv``) says so in its title."""
    species = context.species(model)
    hyp = context.npz(model, "hyperbolic_fit.npz")
    if species is None or "poincare@2" not in hyp:
        return None
    fitted = species.iloc[hyp["species"]] if "species" in hyp else species
    rows = context.probe_table(model, "metrics.csv")
    late: set[str] = set()
    if rows is not None and {"probe", "metric", "target", "converged"} <= set(rows.columns):
        fits = rows[(rows["probe"] == "hyperbolic_fit") & (rows["metric"] == "poincare_distortion@2")]
        if "features" in fits.columns:
            fits = fits[fits["features"] == "model"]
        late = set(fits.loc[~_converged(fits), "target"].astype(str))

    def name(target: str) -> str:
        return f"{target} fit" + (" (not converged)" if target in late else "")

    coords = {name("embedding"): hyp["poincare@2"]}
    if "taxonomy_poincare@2" in hyp:
        coords[name("taxonomy")] = hyp["taxonomy_poincare@2"]
    return plot_poincare_disk(coords, fitted.reset_index(drop=True))


def report_distortion(context: Any) -> "tuple[Figure, Any] | None":
    """Poincare vs Euclidean fits of every model, the taxonomy's own fit as the reference."""
    rows = context.probe_metrics()
    if rows is None or "target" not in rows.columns:
        return None
    fits = rows[rows["probe"] == "hyperbolic_fit"]
    if not len(fits):
        return None
    embedding = fits[fits["target"] == "embedding"]
    reference = fits[fits["target"] == "taxonomy"]
    reference = reference[reference["model"] == reference["model"].iloc[0]].assign(model="") \
        if len(reference) else reference
    return plot_distortion(pd.concat([embedding, reference], ignore_index=True))


def report_fit_loss(context: Any) -> "tuple[Figure, Any] | None":
    """Loss of the fits of every model against the optimisation step (``hyperbolic_fit_loss.csv``)."""
    rows = context.probe_metrics()
    if rows is None or "target" not in rows.columns:
        return None
    losses = context.probe_tables("hyperbolic_fit_loss.csv")
    if losses is None or not len(losses):
        return None
    if "target" in losses.columns:
        losses = losses[losses["target"] == "embedding"]
    fits = rows[(rows["probe"] == "hyperbolic_fit") & rows["metric"].astype(str).str.contains("_distortion@")]
    keys = [c for c in ("model", "target", "geometry", "dim") if c in fits.columns and c in losses.columns]
    if "converged" in fits.columns and {"geometry", "dim"} <= set(keys):
        record = fits[keys + ["converged"]].drop_duplicates(keys)
        record = record.assign(dim=record["dim"].astype(float).astype(int))
        losses = losses.assign(dim=losses["dim"].astype(int)).merge(record, on=keys, how="left")
    return plot_fit_loss(losses)
