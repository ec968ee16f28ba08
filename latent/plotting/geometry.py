"""Figures of the embedding geometry: distance by LCA height, and the species-centroid distance matrix.

Inputs
------
* Distances by height (the ``distances`` probe's table): columns ``level`` (``"image"`` or
  ``"centroid"``), ``height`` (LCA height 0..7), ``n``, ``mean``, ``std``, ``q05``, ``q25``, ``q50``,
  ``q75``, ``q95`` and, for several models, ``model``. Boxes are drawn from these quantiles
  (``Axes.bxp``), never from raw distances.
* Distance matrix: ``(S, S)`` species-centroid distances whose rows are the rows of a species table
  (columns ``kingdom``..``species``, one row per species, as ``Taxonomy.species_table()``). The clades are
  named where their names fit, boundaries of higher ranks are thicker and darker, ranks with one partition
  of the species are one line style (``"order = family"``), and the colour bar names the distance.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.patches import Patch

from latent.errors import InputError, format_list
from latent.ranks import RANK_NAMES
from latent.plotting.style import (
    SEQUENTIAL_CMAP,
    check_int,
    check_ranks,
    figure_legend,
    figure_title,
    lineage_keys,
    model_values,
    new_figure,
    palette,
    require_columns,
    shorten,
    styled,
)

__all__ = ["plot_distance_by_height", "plot_distance_matrix", "height_label", "taxonomy_order", "boundary_groups"]

log = logging.getLogger(__name__)

QUANTILES = ("q05", "q25", "q50", "q75", "q95")
LEVELS = ("image", "centroid")


def height_label(height: int) -> str:
    """``"2\\nfamily"``: an LCA height and the rank of the common ancestor (0: same species)."""
    h = int(height)
    top = len(RANK_NAMES)
    rank = "none" if h >= top else RANK_NAMES[top - 1 - h]
    return f"{h}\n{rank}"


def _compact(n: float) -> str:
    n = float(n)
    for div, suffix in ((1e9, "G"), (1e6, "M"), (1e3, "k")):
        if n >= div:
            return f"{n / div:.3g}{suffix}"
    return f"{int(n)}"


@styled
def plot_distance_by_height(
    table: pd.DataFrame,
    *,
    levels: "Sequence[str] | None" = None,
    ylabel: str = "embedding distance",
    title: "str | None" = "Embedding distance by taxonomic distance",
) -> tuple[Figure, np.ndarray]:
    """Box plots of embedding distance per LCA height, one panel per level, one box colour per model.

    Boxes span ``q25``..``q75`` with the median ``q50``; whiskers ``q05``..``q95``; the diamond is the
    mean. If the space reflects the taxonomy, boxes climb with the height.

    Parameters
    ----------
    table
        Columns ``level``, ``height``, ``mean``, ``q05``, ``q25``, ``q50``, ``q75``, ``q95`` (``n``
        optional: shown under the ticks for one model); optional ``model`` (boxes side by side).
    levels
        Which levels to draw (default those present, ``image`` then ``centroid``).
    ylabel, title
        Axis label and figure title.

    Returns
    -------
    (Figure, numpy.ndarray)
        ``(n_levels,)`` axes.
    """
    function = "plot_distance_by_height"
    require_columns(table, ["level", "height", "mean", *QUANTILES], parameter="table", function=function,
                    hint="Pass the distances-by-height table of the distances probe.")
    frame = table.copy()
    frame["level"] = frame["level"].astype(str)
    present = [lv for lv in LEVELS if lv in set(frame["level"])] + sorted(set(frame["level"]) - set(LEVELS))
    if levels is not None:
        levels = [levels] if isinstance(levels, str) else list(levels)
        bad = [lv for lv in levels if lv not in present]
        if bad:
            raise InputError(f"The 'levels' parameter of {function} names {format_list(bad)}, not in the table "
                             f"(levels present: {format_list(present)}).")
        present = levels
    frame = frame[frame["level"].isin(present)]
    frame = frame[np.isfinite(frame[list(QUANTILES)].to_numpy(float)).all(axis=1)]
    if frame.empty:
        raise InputError(f"The 'table' of {function} has no rows with finite quantiles.")
    frame["_model"] = model_values(frame)
    frame["height"] = frame["height"].astype(int)
    dup = frame.duplicated(["_model", "level", "height"], keep=False)
    if dup.any():
        raise InputError(f"The 'table' of {function} has several rows for one model/level/height "
                         f"({frame.loc[dup, ['_model', 'level', 'height']].iloc[0].tolist()}); add a 'model' column.")
    models = list(dict.fromkeys(frame["_model"]))
    colours = palette(len(models))
    heights = sorted(set(frame["height"]))
    fig, axes = new_figure(1, len(present), panel=(max(2.8, 0.4 * len(heights) * (1 + 0.3 * (len(models) - 1)) + 0.8),
                                                   2.8), extra=(0.3, 0.4))
    axes = axes[0]
    width = 0.8 / len(models)
    for ax, level in zip(axes, present):
        sub = frame[frame["level"] == level]
        level_heights = sorted(set(sub["height"]))
        pos = {h: i for i, h in enumerate(level_heights)}
        for j, model in enumerate(models):
            rows = sub[sub["_model"] == model].sort_values("height")
            if rows.empty:
                continue
            stats = [{"med": r.q50, "q1": r.q25, "q3": r.q75, "whislo": r.q05, "whishi": r.q95, "mean": r.mean,
                      "fliers": []} for r in rows.itertuples()]
            positions = rows["height"].map(pos).to_numpy(float) + (j - (len(models) - 1) / 2) * width
            ax.bxp(stats, positions=positions, widths=width * 0.8, showmeans=True, showfliers=False,
                   patch_artist=True, manage_ticks=False,
                   boxprops={"facecolor": colours[j], "edgecolor": "#333333", "linewidth": 0.7, "alpha": 0.85},
                   medianprops={"color": "black", "linewidth": 1.1},
                   whiskerprops={"color": "#333333", "linewidth": 0.7},
                   capprops={"color": "#333333", "linewidth": 0.7},
                   meanprops={"marker": "D", "markerfacecolor": "white", "markeredgecolor": "black",
                              "markersize": 3.5})
        ticks = [height_label(h) for h in level_heights]
        if len(models) == 1 and "n" in sub.columns:
            n_of = dict(zip(sub["height"], sub["n"]))
            ticks = [f"{t}\nn={_compact(n_of[h])}" for t, h in zip(ticks, level_heights)]
        ax.set_xticks(range(len(level_heights)), ticks, fontsize=7)
        ax.set_xlim(-0.6, len(level_heights) - 0.4)
        ax.set_title(f"{level} pairs" if level in LEVELS else level)
        ax.set_xlabel("LCA height (shared ancestor rank)")
        ax.grid(axis="y")
        ax.set_axisbelow(True)
    axes[0].set_ylabel(ylabel)
    handles: list[Any] = [Patch(facecolor=c, edgecolor="#333333", linewidth=0.7) for c in colours]
    labels = [m or "embedding" for m in models]
    handles.append(Line2D([], [], marker="D", linestyle="", markerfacecolor="white", markeredgecolor="black",
                          markersize=3.5))
    labels.append("mean (box: quartiles, whiskers: 5-95%)")
    figure_legend(fig, handles, labels, max_ncol=min(len(labels), 4))
    figure_title(fig, title)
    return fig, axes


# ---------------------------------------------------------------------- distance matrix
def taxonomy_order(species: pd.DataFrame) -> np.ndarray:
    """``(S,)`` permutation putting species table rows in lineage order (kingdom first, then names).

    The order of ``Taxonomy.species_table()`` already is this order (identity permutation).
    """
    columns = [species[r].astype(object).where(species[r].notna(), "").astype(str).to_numpy() for r in RANK_NAMES]
    return np.lexsort(columns[::-1]).astype(np.int64)


def check_species_table(species: Any, n: "int | None", *, parameter: str, function: str) -> pd.DataFrame:
    """The species table with ``kingdom..species`` as strings; its length must be ``n``."""
    require_columns(species, list(RANK_NAMES), parameter=parameter, function=function,
                    hint="Pass one row per species with the seven rank columns (Taxonomy.species_table()).")
    if n is not None and len(species) != n:
        raise InputError(f"The {parameter!r} parameter of {function} has {len(species)} rows but the matrix/"
                         f"coordinates have {n} species; they must be the same species in the same order.")
    out = species[list(RANK_NAMES)].astype(object)
    return out.where(out.notna(), "").astype(str).reset_index(drop=True)


def clade_runs(species: pd.DataFrame, rank: str) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """Start, end (exclusive) and name of each run of consecutive species in one clade at ``rank``."""
    keys = lineage_keys(species, rank)
    if not len(keys):
        return np.zeros(0, np.int64), np.zeros(0, np.int64), []
    starts = np.flatnonzero(np.r_[True, keys[1:] != keys[:-1]])
    ends = np.r_[starts[1:], len(keys)]
    names = species[rank].to_numpy(dtype=object)[starts].astype(str).tolist()
    return starts, ends, names


def _block_means(D: np.ndarray, size: int) -> np.ndarray:
    """Mean of ``size x size`` blocks (the last ones smaller): ``(ceil(S/size), ceil(S/size))``."""
    S = D.shape[0]
    idx = np.arange(0, S, size)
    counts = np.diff(np.r_[idx, S]).astype(np.float64)
    rows = np.add.reduceat(D, idx, axis=0, dtype=np.float64)
    blocks = np.add.reduceat(rows, idx, axis=1)
    return blocks / np.outer(counts, counts)


def boundary_groups(species: pd.DataFrame, ranks: Sequence[str]) -> list[tuple[str, ...]]:
    """``ranks`` (kingdom first) grouped by partition: consecutive ranks with the same clade boundaries.

    In taxonomy order two ranks with the same partition of the species (cub10's orders and families) cut
    the matrix at the same places; they are one group, drawn and named once (``"order = family"``).
    """
    groups: list[list[str]] = []
    cuts_of: dict[str, tuple[int, ...]] = {}
    for rank in sorted(ranks, key=RANK_NAMES.index):
        cuts_of[rank] = tuple(clade_runs(species, rank)[0][1:].tolist())
        if groups and cuts_of[groups[-1][-1]] == cuts_of[rank]:
            groups[-1].append(rank)
        else:
            groups.append([rank])
    return [tuple(g) for g in groups]


#: Boundary lines from the highest drawn rank down: (width in points, colour), thinner where species are
#: small on the page, under a white halo (where blocks are large enough) so they read on dark and light cells.
BOUNDARY_STYLES = ((2.2, "#000000"), (1.1, "#444444"), (0.5, "#888888"))
#: Text size of the taxon labels (points) and the height (points) a horizontal label needs.
LABEL_FONTSIZE = 6.5
LABEL_POINTS = 7.5


def _text_points(text: str, size: float = LABEL_FONTSIZE) -> float:
    return len(text) * size * 0.58 + 3.0


@styled
def plot_distance_matrix(
    D: "np.ndarray | Mapping[str, np.ndarray]",
    species: pd.DataFrame,
    *,
    boundary_ranks: "Sequence[str] | None" = None,
    label_rank: "str | None" = None,
    max_pixels: int = 800,
    max_boundaries: int = 200,
    distance: "str | None" = None,
    colorbar_label: "str | None" = None,
    title: "str | None" = "Species-centroid distances in taxonomic order",
) -> tuple[Figure, np.ndarray]:
    """The species-centroid distance matrix ordered by the taxonomy, with clade boundaries and names.

    If the space reflects the taxonomy, the matrix is nested dark blocks along the diagonal that the
    boundary lines enclose. Boundaries of higher ranks are thicker and darker (legend); ranks with the
    same partition of the species are one line style named ``"order = family"``. The clades are named on
    the left at the finest rank whose names all fit (species when they do), else the largest clades of
    the highest drawn rank; the highest drawn rank is named along the top when the left names a finer one.

    Parameters
    ----------
    D
        ``(S, S)`` distances, row/column ``s`` = species table row ``s``; or ``{model: (S, S)}`` for one
        panel per model (each with its own colour scale). Species not in taxonomy order are reordered.
    species
        ``(S, 7+)`` species table, columns ``kingdom``..``species``.
    boundary_ranks
        Ranks whose clade boundaries are drawn. Default: the ranks above species with
        2..``max_boundaries`` clades, down to the third distinct partition.
    label_rank
        Rank named on the left (only the clades tall enough for a label). Default: as above.
    max_pixels
        Above this many species the matrix is shown as block means of consecutive species (taxonomy
        order, so blocks stay inside clades where clades are large); the x label says so.
    max_boundaries
        Ranks with more clades than this get no lines by default (they would fill the picture).
    distance
        The distance of the matrix (``"cosine"``, ``"euclidean"``): the colour bar reads
        ``"<distance> distance between species centroids"``.
    colorbar_label
        The colour bar's label as given (overrides ``distance``); default ``"centroid distance"`` when
        neither is given.
    title
        Figure title.

    Returns
    -------
    (Figure, numpy.ndarray)
        ``(n_models,)`` axes (colour bars not included).
    """
    import matplotlib.patheffects as path_effects

    function = "plot_distance_matrix"
    mats = dict(D) if isinstance(D, Mapping) else {"": D}
    if not mats:
        raise InputError(f"The 'D' parameter of {function} is an empty mapping; give at least one matrix.")
    max_pixels = check_int("max_pixels", max_pixels, minimum=10, function=function)
    if distance is not None and (not isinstance(distance, str) or not distance.strip()):
        raise InputError(f"The 'distance' parameter of {function} must name the distance (e.g. 'cosine'). "
                         f"Got {distance!r} instead.")
    arrays = {}
    for name, M in mats.items():
        M = np.asarray(M)
        if M.ndim != 2 or M.shape[0] != M.shape[1] or M.shape[0] < 2:
            raise InputError(f"The 'D' parameter of {function} must be a square (S, S) matrix with S >= 2"
                             f"{f' (model {name!r})' if name else ''}. Got shape {M.shape} instead.")
        if not np.issubdtype(M.dtype, np.number):
            raise InputError(f"The 'D' parameter of {function} must be numeric. Got dtype {M.dtype}.")
        arrays[name] = M
    S = next(iter(arrays.values())).shape[0]
    if any(M.shape[0] != S for M in arrays.values()):
        raise InputError(f"The matrices given to {function} have different sizes "
                         f"({', '.join(f'{k}: {v.shape[0]}' for k, v in arrays.items())}); they must share species.")
    table = check_species_table(species, S, parameter="species", function=function)
    order = taxonomy_order(table)
    if not np.array_equal(order, np.arange(S)):
        log.info("%s: species are not in taxonomy order; rows and columns reordered", function)
        table = table.iloc[order].reset_index(drop=True)
        arrays = {k: M[np.ix_(order, order)] for k, M in arrays.items()}
    n_clades = {r: len(clade_runs(table, r)[0]) for r in RANK_NAMES}
    if boundary_ranks is None:
        eligible = [r for r in RANK_NAMES[:-1] if 2 <= n_clades[r] <= max_boundaries]
        groups = boundary_groups(table, eligible)[:3]
    else:
        groups = boundary_groups(table, check_ranks(boundary_ranks, function=function))
        groups = [g for g in groups if n_clades[g[0]] >= 2]
    if label_rank is not None and label_rank not in RANK_NAMES:
        raise InputError(f"The 'label_rank' parameter of {function} must be a rank name. Got {label_rank!r}.")
    size = int(np.ceil(S / max_pixels))
    side = 4.2
    points_per_species = side * 72.0 / S
    # left: the finest rank whose names all fit (or label_rank); top: the highest drawn rank when finer on the left
    if label_rank is None:
        candidates = [r for r in RANK_NAMES[::-1] if n_clades[r] >= 2]
        fits = [r for r in candidates
                if ((np.diff(np.r_[clade_runs(table, r)[0], S])) * points_per_species >= LABEL_POINTS).all()]
        label_rank = fits[0] if fits else (groups[0][0] if groups else
                                           next((r for r in RANK_NAMES if 2 <= n_clades[r] <= 40), None))
    label_group = next((g for g in groups if label_rank in g), (label_rank,) if label_rank else ())
    top_group = groups[0] if groups and label_rank and RANK_NAMES.index(groups[0][-1]) < RANK_NAMES.index(label_rank) \
        else None
    # the figure's size follows what surrounds the square matrix (names, colour bar), so the compressed
    # layout leaves no blank band under the title or above the legend
    left_names = [n for n in clade_runs(table, label_rank)[2]] if label_rank else []
    left = max([_text_points(shorten(n or "(unnamed)", 40)) for n in left_names] + [0.0]) / 72.0 + 0.45
    top = 0.0
    if top_group is not None:
        starts, ends, names = clade_runs(table, top_group[0])
        widths = (ends - starts) * points_per_species
        flat = all(_text_points(n or "(unnamed)") <= w for n, w in zip(names, widths))
        top = 0.45 if flat else max(_text_points(n or "(unnamed)") for n in names) / 72.0 + 0.3
    fig, axes = new_figure(1, len(arrays), panel=(left + side + 1.1, side + top),
                           extra=(0.2, 0.55 + 0.3 * bool(groups)))
    fig.set_layout_engine("compressed")  # the matrix is square: no blank band under the title
    axes = axes[0]
    # lines never wider than a few species: a thick line would hide a small clade
    line_scale = float(np.clip(points_per_species / 2.5, 0.3, 1.0))

    def halo(lw: float) -> list[Any]:
        return [path_effects.Stroke(linewidth=1.8 * lw, foreground="white", alpha=0.7), path_effects.Normal()]

    for ax, (name, M) in zip(axes, arrays.items()):
        shown = _block_means(M, size) if size > 1 else np.asarray(M, dtype=np.float64)
        finite = shown[np.isfinite(shown)]
        off = shown[~np.eye(len(shown), dtype=bool)] if size == 1 else finite
        off = off[np.isfinite(off)]
        vmin, vmax = (np.quantile(off, [0.01, 0.99]) if off.size else (0.0, 1.0))
        image = ax.imshow(np.ma.masked_invalid(shown), cmap=SEQUENTIAL_CMAP, vmin=vmin, vmax=vmax,
                          extent=(0, S, S, 0), interpolation="nearest", aspect="equal")
        for depth, group in enumerate(groups):
            cuts = clade_runs(table, group[0])[0][1:]
            if not len(cuts):
                continue
            width, colour = BOUNDARY_STYLES[min(depth, len(BOUNDARY_STYLES) - 1)]
            lw = width * line_scale * (1.0 if len(cuts) < 60 else 0.6)
            for draw in (ax.hlines, ax.vlines):
                lines = draw(cuts, 0, S, colors=colour, linewidth=lw, zorder=2 + (len(groups) - depth) / 10)
                if points_per_species >= 2.0:  # a white halo where blocks are large enough to spare it
                    lines.set_path_effects(halo(lw))
                lines.set_label(" = ".join(group))
        ax.set_xlim(0, S)
        ax.set_ylim(S, 0)
        ax.set_xticks([])
        if label_rank is not None:
            starts, ends, names = clade_runs(table, label_rank)
            keep = (ends - starts) * points_per_species >= LABEL_POINTS
            ax.set_yticks(((starts + ends) / 2)[keep], [shorten(n or "(unnamed)", 40) for n, k in zip(names, keep)
                                                        if k], fontsize=LABEL_FONTSIZE)
            ax.set_ylabel(f"{' = '.join(label_group)} (taxonomy order)")
            if not keep.all():
                log.info("%s: %d of %d %s labels left out (too small to read)", function, int((~keep).sum()),
                         len(keep), label_rank)
        else:
            ax.set_yticks([])
            ax.set_ylabel("species (taxonomy order)")
        if top_group is not None:
            starts, ends, names = clade_runs(table, top_group[0])
            texts = [n or "(unnamed)" for n in names]
            widths = (ends - starts) * points_per_species
            flat = all(_text_points(t) <= w for t, w in zip(texts, widths))
            keep = np.ones(len(texts), bool) if flat else widths >= LABEL_POINTS
            above = ax.secondary_xaxis("top")
            above.set_xticks(((starts + ends) / 2)[keep], [t for t, k in zip(texts, keep) if k],
                             fontsize=LABEL_FONTSIZE, rotation=0 if flat else 90)
            above.tick_params(axis="x", length=0)
            above.spines["top"].set_visible(False)
            above.set_xlabel(" = ".join(top_group), fontsize=8)
        ax.set_xlabel(f"{S:,} species (taxonomy order)" + (f"; blocks of {size}" if size > 1 else ""))
        ax.tick_params(axis="y", length=0)
        for spine in ax.spines.values():
            spine.set_visible(False)
        if name:
            ax.set_title(name)
        bar = fig.colorbar(image, ax=ax, shrink=0.75, pad=0.02)
        bar.set_label(colorbar_label or (f"{distance} distance between species centroids" if distance
                                         else "centroid distance"))
    if groups:
        handles = [Line2D([], [], color=BOUNDARY_STYLES[min(d, 2)][1],
                          linewidth=BOUNDARY_STYLES[min(d, 2)][0] * max(line_scale, 0.5)) for d in range(len(groups))]
        figure_legend(fig, handles, [f"{' = '.join(g)} boundaries" for g in groups], max_ncol=3)
    figure_title(fig, title)
    return fig, axes


# ------------------------------------------------------------------------------ report adapters
def report_distance_by_height(context: Any) -> "tuple[Figure, Any] | None":
    """Distances by LCA height of every model (``distances_by_height.csv``; ``context``: a FigureContext)."""
    rows = context.probe_tables("distances_by_height.csv")
    return None if rows is None else plot_distance_by_height(rows)


def report_distance_matrix(context: Any, model: Any) -> "tuple[Figure, Any] | None":
    """One model's species-centroid distances in taxonomy order (``alignment.npz``, ``species.csv``)."""
    species = context.species(model)
    align = context.npz(model, "alignment.npz")
    if species is None or "centroid_distances" not in align:
        return None
    return plot_distance_matrix(align["centroid_distances"], species, distance=_probe_distance(model))


def _probe_distance(model: Any) -> "str | None":
    """The distance the probes of ``model`` used (``run.json`` options), None when not recorded."""
    import json

    path = model.probe / "run.json"
    if not path.exists():
        return None
    try:
        value = json.loads(path.read_text()).get("options", {}).get("distance")
    except (OSError, ValueError) as error:
        log.warning("report_distance_matrix: %s unreadable (%s); the colour bar does not name the distance",
                    path, error)
        return None
    return str(value) if value else None
