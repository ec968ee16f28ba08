"""2-D projections coloured by each rank: one panel per rank, every taxon coloured up to 12, else the largest.

Input: ``(n, 2)`` coordinates (:func:`latent.projection.project` of images or species centroids) and the
taxonomy table of the same ``n`` points (columns ``kingdom``..``species``: ``Taxonomy.species_table()``
for centroids, or one row per image). Ranks with one taxon (one colour) are not drawn, ranks with the same
partition of the points (cub10's orders and families) are one panel (``"order = family"``); the figure says
so under the panels. Axes are named by the method (``"PC1 (23.4% variance)"``, ``"UMAP 1"``).
"""

from __future__ import annotations

import logging
import textwrap
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.transforms import ScaledTranslation

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
    styled,
    top_categories,
)

__all__ = ["plot_projection", "MAX_DISTINCT", "rank_panels"]

log = logging.getLogger(__name__)

#: Up to this many taxa at a rank, every taxon gets its own colour (no "other").
MAX_DISTINCT = 12
#: Above :data:`MAX_DISTINCT` taxa, the largest this many get colours and the rest are "other" (grey).
DEFAULT_TOP_N = 8
#: Legend text size (points).
LEGEND_FONTSIZE = 6.0
#: After the 8 Okabe-Ito colours, Paul Tol's muted colours in the order that keeps them farthest from the
#: first 8 (his cyan and teal come last: they are close to Okabe-Ito's sky blue and bluish green).
_EXTRA = ("#332288", "#882255", "#999933", "#AA4499", "#117733", "#DDCC77", "#CC6677", "#44AA99", "#88CCEE")


def taxon_colours(n: int) -> list[str]:
    """``n`` colours for the taxa of a panel: Okabe-Ito, then the most distinct of Tol's muted colours."""
    if n <= 8:
        return palette(n)
    extra = list(_EXTRA)
    return palette(8) + [extra[i % len(extra)] for i in range(n - 8)]


def _same_partition(a: np.ndarray, b: np.ndarray) -> bool:
    """Whether two ``(n,)`` label arrays split the points into the same groups."""
    pairs = pd.DataFrame({"a": a, "b": b}).drop_duplicates()
    return len(pairs) == pairs["a"].nunique() == pairs["b"].nunique()


def rank_panels(table: pd.DataFrame, ranks: Sequence[str]) -> tuple[list[tuple[str, ...]], list[str]]:
    """The panels a projection draws: ranks grouped by partition, one-taxon ranks left out.

    Parameters
    ----------
    table
        ``(n, 7+)`` taxonomy table of the points.
    ranks
        Ranks asked for, kingdom first.

    Returns
    -------
    tuple
        The panels (each a tuple of consecutive ranks with the same partition of the points, e.g.
        ``("order", "family")``) and a note per left-out group (e.g. ``"kingdom = phylum = class
        (Aves)"``) for the ranks with one taxon and no unlabelled point.
    """
    groups: list[list[str]] = []
    keys_of = {r: rank_keys(table, r)[0] for r in ranks}
    for rank in ranks:
        if groups and _same_partition(keys_of[groups[-1][-1]], keys_of[rank]):
            groups[-1].append(rank)
        else:
            groups.append([rank])
    panels, dropped = [], []
    for group in groups:
        keys = keys_of[group[-1]]
        named = set(keys) - {""}
        if len(named) <= 1 and not (keys == "").any():
            names = table[group[-1]].astype(str)
            dropped.append(" = ".join(group) + (f" ({names.iloc[0]})" if len(names) else ""))
        else:
            panels.append(tuple(group))
    return panels, dropped


def _legend_layout(labels: Sequence[str], panel_inches: float) -> tuple[list[str], int]:
    """Legend labels wrapped to fit the panel (never cut) and the number of columns."""
    char = LEGEND_FONTSIZE * 0.58
    usable = panel_inches * 72.0 - 6.0
    two = int((usable / 2 - 14.0) / char)
    widest = max((len(t) for t in labels), default=0)
    ncol = 2 if len(labels) > 4 and widest <= two else 1
    width = two if ncol == 2 else int((usable - 14.0) / char)
    wrapped = ["\n".join(textwrap.wrap(t, max(width, 12), break_on_hyphens=False)) or t for t in labels]
    return wrapped, ncol


@styled
def plot_projection(
    coords: "np.ndarray | Mapping[str, np.ndarray]",
    labels: pd.DataFrame,
    *,
    ranks: "Sequence[str] | None" = None,
    top_n: "int | None" = None,
    axis_labels: "tuple[str, str] | Mapping[str, tuple[str, str]] | None" = None,
    point_size: "float | None" = None,
    max_cols: int = 4,
    seed: int = 0,
    title: "str | None" = None,
) -> tuple[Figure, np.ndarray]:
    """A 2-D projection coloured by each rank, one panel per rank.

    At a rank with at most :data:`MAX_DISTINCT` taxa every taxon gets a colour; above that the ``top_n``
    taxa with the most points do, and every other taxon, and points unnamed at that rank, are "other"
    (grey, drawn underneath). Legends give every name in full (wrapped, never cut) with its count. Ranks
    with one taxon (one colour) are not drawn, and ranks with the same partition of the points are one
    panel titled ``"order = family"``; the figure names what was left out under the panels. Points are
    drawn in a seeded random order so no clade hides another; above 2,000 points the scatter is
    rasterised inside the PDF.

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
        Taxa per rank given their own colour; default: all of them up to :data:`MAX_DISTINCT` taxa, else
        the :data:`DEFAULT_TOP_N` largest.
    axis_labels
        ``(x label, y label)`` of every panel (``latent.projection.axis_labels``: ``"PC1 (23.4%
        variance)"``, ``"UMAP 1"``), or ``{name: (x, y)}`` per coordinate set. None: no axis labels.
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
        ``(n_sets * n_panels,)`` axes, row by row (one per drawn rank group).
    """
    function = "plot_projection"
    if top_n is not None:
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
    if axis_labels is None:
        names_of: dict[str, tuple[str, str]] = {}
    elif isinstance(axis_labels, Mapping):
        names_of = {str(k): tuple(v) for k, v in axis_labels.items()}  # type: ignore[misc]
    else:
        pair = tuple(axis_labels)
        if len(pair) != 2 or not all(isinstance(t, str) for t in pair):
            raise InputError(f"The 'axis_labels' parameter of {function} must be (x label, y label) or "
                             f"{{name: (x, y)}}. Got {axis_labels!r} instead.")
        names_of = {name: pair for name in arrays}  # type: ignore[misc]
    table = labels.reset_index(drop=True)
    ranks = sorted(ranks, key=RANK_NAMES.index)
    panels, dropped = rank_panels(table, ranks)
    if not panels:
        raise InputError(f"Every rank asked of {function} has one taxon ({'; '.join(dropped)}): nothing to colour. "
                         "Pass ranks with several taxa.")
    size = point_size if point_size is not None else float(np.clip(400.0 / np.sqrt(max(n, 1)), 0.5, 25.0))
    rng = np.random.default_rng(seed)
    shuffled = rng.permutation(n)
    panel_width = 2.5
    categories, legends = {}, {}
    for group in panels:
        keys, _ = rank_keys(table, group[-1])
        names = np.array([" / ".join(parts) for parts in zip(*(rank_keys(table, r)[1] for r in group))], dtype=object)
        n_taxa = len(set(keys) - {""})
        keep = top_n if top_n is not None else (n_taxa if n_taxa <= MAX_DISTINCT else DEFAULT_TOP_N)
        codes, clades, sizes = top_categories(keys, max(1, keep), names=names)
        categories[group] = (codes, clades, sizes, n_taxa)
        legends[group] = _legend_layout([f"{c} ({s:,})" for c, s in zip(clades, sizes)], panel_width)
    legend_rows = max(int(np.ceil(sum(t.count("\n") + 1 for t in text) / ncol)) for text, ncol in legends.values())
    if len(arrays) == 1:
        nrows, ncols = grid_shape(len(panels), max_cols)
    else:
        nrows, ncols = len(arrays), len(panels)
    fig, axes = new_figure(nrows, ncols, panel=(panel_width, 2.75 + 0.118 * legend_rows),
                           extra=(0.2, 0.4 + 0.25 * bool(dropped)))
    flat = axes.ravel()
    k = 0
    for name, P in arrays.items():
        xlabel, ylabel = names_of.get(name, ("", ""))
        for group in panels:
            ax = flat[k]
            k += 1
            codes, clades, sizes, n_taxa = categories[group]
            colours = taxon_colours(len(clades))
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
            label = " = ".join(group)
            ax.set_title(f"{(name + ': ') if name else ''}{label} ({n_taxa:,} {'taxon' if n_taxa == 1 else 'taxa'})")
            ax.set_xlabel(xlabel, fontsize=7, labelpad=2)
            if len(arrays) > 1 and name and group == panels[0]:
                ax.set_ylabel(f"{name}\n{ylabel}" if ylabel else name, fontsize=7 if ylabel else None)
            else:
                ax.set_ylabel(ylabel, fontsize=7, labelpad=2)
            handles = [Line2D([], [], marker="o", linestyle="", markersize=5, markerfacecolor=c,
                              markeredgecolor="none") for c in colours]
            text, ncol = legends[group]
            below = ax.transAxes + ScaledTranslation(0, -(14.0 if xlabel else 2.0) / 72.0, fig.dpi_scale_trans)
            ax.legend(handles, text, loc="upper center", bbox_to_anchor=(0.5, 0.0), bbox_transform=below, ncol=ncol,
                      fontsize=LEGEND_FONTSIZE, handletextpad=0.2, columnspacing=0.6, borderaxespad=0.0,
                      labelspacing=0.25)
    hide_unused(axes, k)
    if dropped:
        fig.supxlabel("Not drawn (one taxon, one colour): " + "; ".join(dropped), fontsize=7.5, color="#333333")
    figure_title(fig, title)
    return fig, flat[:k]


def keys_nonempty(table: pd.DataFrame, rank: str) -> np.ndarray:
    """Lineage keys of the rows named at ``rank`` (for counting taxa)."""
    keys, _ = rank_keys(table, rank)
    return keys[keys != ""]


# ------------------------------------------------------------------------------ report adapters
def report_projections(context: Any, model: Any) -> list[Any]:
    """One figure per 2-D projection of a model (``context``: a ``latent.figures.FigureContext``).

    Axes are named by the method; PCA's with the variance each axis explains when the projection table
    has it (:data:`latent.projection.EXPLAINED_COLUMNS`).

    Returns
    -------
    list of latent.figures.Drawing
        Each with ``method``, ``METHOD`` and ``n`` (images) for the spec's key, title and caption.
    """
    from latent.figures import Drawing
    from latent.projection import EXPLAINED_COLUMNS, axis_labels

    drawings = []
    for method, table in context.projections(model):
        explained = (table[list(EXPLAINED_COLUMNS)].iloc[0].to_numpy(float)
                     if set(EXPLAINED_COLUMNS) <= set(table.columns) and len(table) else None)
        if method == "pca" and explained is None:
            log.info("report_projections: the PCA table of %s has no %s columns: axes without variance explained",
                     model.label, "/".join(EXPLAINED_COLUMNS))
        fig, _ = plot_projection(table[["x", "y"]].to_numpy(), table, axis_labels=axis_labels(method, explained))
        drawings.append(Drawing(fig, {"method": method, "METHOD": method.upper(), "n": len(table)}))
    return drawings
