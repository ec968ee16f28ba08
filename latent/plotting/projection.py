"""2-D projections coloured by each rank: one panel per rank, the largest clades coloured, the rest "other".

Input: ``(n, 2)`` coordinates (:func:`latent.projection.project` of images or species centroids) and the
taxonomy table of the same ``n`` points (columns ``kingdom``..``species``: ``Taxonomy.species_table()``
for centroids, or one row per image).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd
from matplotlib.figure import Figure
from matplotlib.lines import Line2D

from latent.errors import InputError
from latent.ranks import RANK_NAMES
from latent.plotting.style import (
    OTHER_COLOR,
    check_int,
    coordinate_sets,
    check_ranks,
    figure_title,
    grid_shape,
    hide_unused,
    new_figure,
    palette,
    rank_keys,
    require_columns,
    shorten,
    styled,
    top_categories,
)

__all__ = ["plot_projection"]

log = logging.getLogger(__name__)


@styled
def plot_projection(
    coords: "np.ndarray | Mapping[str, np.ndarray]",
    labels: pd.DataFrame,
    *,
    ranks: "Sequence[str] | None" = None,
    top_n: int = 8,
    point_size: "float | None" = None,
    max_cols: int = 4,
    seed: int = 0,
    title: "str | None" = None,
) -> tuple[Figure, np.ndarray]:
    """A 2-D projection coloured by each rank, one panel per rank.

    At each rank the ``top_n`` taxa with the most points get Okabe-Ito colours and a legend entry (with
    their count); every other taxon, and points unnamed at that rank, are "other" (grey, drawn
    underneath). Points are drawn in a seeded random order so no clade hides another; above 2,000
    points the scatter is rasterised inside the PDF.

    Parameters
    ----------
    coords
        ``(n, 2)`` coordinates, or ``{name: (n, 2)}`` (e.g. ``{"UMAP": ..., "PCA": ...}`` or one per
        model) for one row of panels each.
    labels
        ``(n, 7+)`` taxonomy table of the points (columns ``kingdom``..``species``), row ``i`` for
        point ``i``.
    ranks
        Ranks to draw (default all seven).
    top_n
        Taxa per rank given their own colour (default 8, the Okabe-Ito palette).
    point_size
        Marker area in points^2 (default from n).
    max_cols
        Panels per row when one coordinate set is drawn.
    seed
        Seed of the drawing order.
    title
        Figure title.

    Returns
    -------
    (Figure, numpy.ndarray)
        ``(n_sets * n_ranks,)`` axes, row by row.
    """
    function = "plot_projection"
    top_n = check_int("top_n", top_n, minimum=1, function=function)
    max_cols = check_int("max_cols", max_cols, minimum=1, function=function)
    ranks = check_ranks(ranks, function=function)
    arrays = coordinate_sets(coords, function=function, what="(n, 2) coordinates",
                             hint=" (project to 2-D with latent.projection.project)")
    n = next(iter(arrays.values())).shape[0]
    if any(P.shape[0] != n for P in arrays.values()):
        raise InputError(f"The coordinate sets given to {function} have different numbers of points.")
    require_columns(labels, list(ranks), parameter="labels", function=function,
                    hint="Pass the taxonomy table of the points (Taxonomy.species_table() or one row per image).")
    missing_above = [r for r in RANK_NAMES[: max(RANK_NAMES.index(r) for r in ranks) + 1] if r not in labels.columns]
    if missing_above:
        raise InputError(f"The 'labels' parameter of {function} lacks column(s) {', '.join(missing_above)} "
                         "(taxa are identified by their lineage, kingdom down).")
    if len(labels) != n:
        raise InputError(f"The 'labels' parameter of {function} has {len(labels)} rows for {n} points; "
                         "give one taxonomy row per point, in the same order.")
    table = labels.reset_index(drop=True)
    size = point_size if point_size is not None else float(np.clip(400.0 / np.sqrt(max(n, 1)), 0.5, 25.0))
    rng = np.random.default_rng(seed)
    shuffled = rng.permutation(n)
    if len(arrays) == 1:
        nrows, ncols = grid_shape(len(ranks), max_cols)
    else:
        nrows, ncols = len(arrays), len(ranks)
    fig, axes = new_figure(nrows, ncols, panel=(2.5, 3.55), extra=(0.2, 0.4))
    flat = axes.ravel()
    categories = {}
    for rank in ranks:
        keys, names = rank_keys(table, rank)
        categories[rank] = top_categories(keys, top_n, names=names)
    k = 0
    for name, P in arrays.items():
        for rank in ranks:
            ax = flat[k]
            k += 1
            codes, clades, sizes = categories[rank]
            colours = palette(len(clades))
            has_other = bool(clades) and clades[-1] == "other"
            if has_other:
                colours[-1] = OTHER_COLOR
            other = codes == len(clades) - 1 if has_other else np.zeros(n, dtype=bool)
            order = np.r_[shuffled[other[shuffled]], shuffled[~other[shuffled]]]
            colour_of = np.asarray(colours, dtype=object)[codes] if n else np.zeros(0, dtype=object)
            ax.scatter(P[order, 0], P[order, 1], s=size, c=list(colour_of[order]), linewidths=0,
                       rasterized=n > 2000)
            ax.set_xticks([])
            ax.set_yticks([])
            ax.set_aspect("equal", adjustable="datalim")
            for spine in ax.spines.values():
                spine.set_visible(True)
                spine.set_color("#999999")
                spine.set_linewidth(0.6)
            n_taxa = len(set(keys_nonempty(table, rank)))
            ax.set_title(f"{(name + ': ') if name else ''}{rank} ({n_taxa:,} taxa)")
            if name and rank == ranks[0]:
                ax.set_ylabel(name)
            handles = [Line2D([], [], marker="o", linestyle="", markersize=5, markerfacecolor=c,
                              markeredgecolor="none") for c in colours]
            text = [f"{shorten(c, 17)} ({s:,})" for c, s in zip(clades, sizes)]
            ax.legend(handles, text, loc="upper center", bbox_to_anchor=(0.5, -0.02), ncol=1 if len(clades) <= 4
                      else 2, fontsize=6, handletextpad=0.2, columnspacing=0.6, borderaxespad=0.0,
                      labelspacing=0.25)
    hide_unused(axes, k)
    figure_title(fig, title)
    return fig, flat[:k]


def keys_nonempty(table: pd.DataFrame, rank: str) -> np.ndarray:
    """Lineage keys of the rows named at ``rank`` (for counting taxa)."""
    keys, _ = rank_keys(table, rank)
    return keys[keys != ""]


# ------------------------------------------------------------------------------ report adapters
def report_projections(context: Any, model: Any) -> list[Any]:
    """One figure per 2-D projection of a model (``context``: a ``latent.figures.FigureContext``).

    Returns
    -------
    list of latent.figures.Drawing
        Each with ``method``, ``METHOD`` and ``n`` (images) for the spec's key, title and caption.
    """
    from latent.figures import Drawing

    return [Drawing(plot_projection(table[["x", "y"]].to_numpy(), table)[0],
                    {"method": method, "METHOD": method.upper(), "n": len(table)})
            for method, table in context.projections(model)]
