"""The tanglegram: the taxonomy tree against the dendrogram of the species centroids.

Inputs: a scipy linkage matrix ``(S - 1, 4)`` of the species centroids (the ``dendrogram`` probe's
array; leaf ``s`` = species table row ``s``) and the species table (columns ``kingdom``..``species``).
The taxonomy tree is drawn from the species table (one level per rank); lines join each species' leaf
in the two trees, coloured by its clade at ``color_rank``. If the dendrogram recovers the taxonomy the
lines run straight across in parallel bundles; crossing lines are species the dendrogram puts elsewhere.
"""

from __future__ import annotations

import logging
from typing import Any

import numpy as np
import pandas as pd
from matplotlib.collections import LineCollection
from matplotlib.figure import Figure
from matplotlib.lines import Line2D

from latent.errors import InputError
from latent.ranks import RANK_NAMES
from latent.plotting.geometry import check_species_table, taxonomy_order
from latent.plotting.style import (
    OTHER_COLOR,
    check_int,
    figure_legend,
    figure_title,
    lineage_keys,
    palette,
    rank_keys,
    shorten,
    styled,
    top_categories,
)

__all__ = ["plot_tanglegram", "dendrogram_segments", "taxonomy_segments", "drawn_depth"]

log = logging.getLogger(__name__)


def dendrogram_segments(Z: np.ndarray, target: "np.ndarray | None" = None) -> tuple[np.ndarray, np.ndarray]:
    """Leaf positions and the line segments of a dendrogram, without recursion (any size).

    Parameters
    ----------
    Z
        ``(S - 1, 4)`` scipy linkage matrix.
    target
        Optional ``(S,)`` position of each leaf in another tree. The dendrogram is then rotated (the two
        children of every merge swapped where that helps; its topology and heights are unchanged) so
        that the child whose leaves have the smaller mean ``target`` comes first: a dendrogram that
        recovers the other tree is drawn in its leaf order, with straight connecting lines.

    Returns
    -------
    tuple of numpy.ndarray
        ``(S,)`` position of each leaf (without ``target``: its rank in
        ``scipy.cluster.hierarchy.leaves_list``, the order of ``scipy``'s ``dendrogram``), and
        ``(3 (S - 1), 2, 2)`` segments ``[(height, position), (height, position)]``.
    """
    from scipy.cluster.hierarchy import leaves_list

    S = Z.shape[0] + 1
    children = Z[:, :2].astype(np.int64)
    if target is None:
        leaves = leaves_list(Z)
    else:
        # Mean target of the leaves under every node (children are merged before their parents).
        total = np.zeros(2 * S - 1)
        total[:S] = np.asarray(target, dtype=np.float64)
        count = np.ones(2 * S - 1)
        for i in range(S - 1):
            a, b = children[i]
            total[S + i] = total[a] + total[b]
            count[S + i] = count[a] + count[b]
        mean = total / count
        swap = mean[children[:, 0]] > mean[children[:, 1]]
        children = np.where(swap[:, None], children[:, ::-1], children)
        # Leaf order by an explicit-stack depth-first walk (first child first).
        leaves = np.empty(S, dtype=np.int64)
        stack, k = [2 * S - 2], 0
        while stack:
            node = stack.pop()
            if node < S:
                leaves[k] = node
                k += 1
            else:
                a, b = children[node - S]
                stack.append(int(b))
                stack.append(int(a))
    y = np.empty(2 * S - 1)
    y[leaves] = np.arange(S, dtype=np.float64)
    h = np.zeros(2 * S - 1)
    segments = np.empty((3 * (S - 1), 2, 2))
    for i in range(S - 1):
        a, b = int(children[i, 0]), int(children[i, 1])
        node, height = S + i, float(Z[i, 2])
        y[node] = (y[a] + y[b]) / 2
        h[node] = height
        segments[3 * i] = ((h[a], y[a]), (height, y[a]))
        segments[3 * i + 1] = ((h[b], y[b]), (height, y[b]))
        segments[3 * i + 2] = ((height, y[a]), (height, y[b]))
    return y[:S], segments


def drawn_depth(species: pd.DataFrame, max_nodes: "int | None") -> int:
    """Deepest rank index whose clades are drawn one by one: every rank with at most ``max_nodes`` nodes."""
    if max_nodes is None:
        return len(RANK_NAMES) - 1
    depth = 0
    for r, rank in enumerate(RANK_NAMES):
        if len(set(lineage_keys(species, rank))) <= max_nodes:
            depth = r
    return depth


def taxonomy_segments(species: pd.DataFrame, max_nodes: "int | None" = None) -> tuple[np.ndarray, np.ndarray]:
    """Leaf positions and line segments of the taxonomy tree of a species table.

    Species are placed in lineage order (0..S-1); each node sits at x = its rank index (kingdom 0 ..
    species 6, the root at -1) and at the mean position of its children.

    Parameters
    ----------
    species
        ``(S, 7+)`` species table (``kingdom``..``species``).
    max_nodes
        Draw one by one only the ranks with at most this many nodes (default: all). Below the deepest
        such rank ``d`` the tree is collapsed: each rank-``d`` clade is a vertical bar at x = ``d``
        spanning its species (drawn at the bar's midpoint), which keeps 10,000 leaves legible.

    Returns
    -------
    tuple of numpy.ndarray
        ``(S,)`` position of each species (table row) and ``(k, 2, 2)`` segments ``[(x, y), (x, y)]``.
    """
    S = len(species)
    order = taxonomy_order(species)
    pos = np.empty(S)
    pos[order] = np.arange(S, dtype=np.float64)
    keys = [lineage_keys(species, rank) for rank in RANK_NAMES]
    depth = drawn_depth(species, max_nodes)
    pieces = []
    if depth == len(RANK_NAMES) - 1:
        ys = pd.Series(pos).groupby(keys[-1]).mean()  # species nodes (duplicated rows share one leaf)
    else:
        grouped = pd.Series(pos).groupby(keys[depth])
        lo, hi = grouped.min(), grouped.max()
        pieces.append(np.stack([np.column_stack([np.full(len(lo), float(depth)), lo.to_numpy()]),
                                np.column_stack([np.full(len(lo), float(depth)), hi.to_numpy()])], axis=1))
        ys = (lo + hi) / 2
    for r in range(depth, -1, -1):
        parent = keys[r - 1] if r > 0 else np.full(S, "<root>", dtype=object)
        parent_of = pd.Series(parent).groupby(keys[r]).first().reindex(ys.index)
        y = ys.to_numpy()
        # Edge from each node (x = r) back to its parent's level (x = r - 1).
        pieces.append(np.stack([np.column_stack([np.full(len(y), r - 1.0), y]),
                                np.column_stack([np.full(len(y), float(r)), y])], axis=1))
        grouped = pd.Series(y).groupby(parent_of.to_numpy(), sort=False)
        lo, hi = grouped.min(), grouped.max()
        span = (hi > lo).to_numpy()
        # Vertical edge at x = r - 1 joining the children of each parent; the parent sits at their mean.
        pieces.append(np.stack([np.column_stack([np.full(span.sum(), r - 1.0), lo.to_numpy()[span]]),
                                np.column_stack([np.full(span.sum(), r - 1.0), hi.to_numpy()[span]])], axis=1))
        ys = grouped.mean()
    return pos, np.concatenate(pieces).astype(np.float64)


def _check_linkage(Z: Any, S: int, function: str) -> np.ndarray:
    from scipy.cluster.hierarchy import is_valid_linkage

    Z = np.asarray(Z, dtype=np.float64)
    if Z.ndim != 2 or Z.shape != (S - 1, 4):
        raise InputError(f"The 'linkage' parameter of {function} must be a (S - 1, 4) scipy linkage matrix for the "
                         f"{S} species of the table, i.e. shape ({S - 1}, 4). Got shape {Z.shape} instead.")
    if not is_valid_linkage(Z):
        raise InputError(f"The 'linkage' parameter of {function} is not a valid scipy linkage matrix "
                         "(see scipy.cluster.hierarchy.is_valid_linkage).")
    return Z


@styled
def plot_tanglegram(
    linkage: np.ndarray,
    species: pd.DataFrame,
    *,
    color_rank: "str | None" = None,
    top_n: int = 8,
    max_labels: int = 60,
    rotate: bool = True,
    title: "str | None" = "Taxonomy (left) against the centroid dendrogram (right)",
) -> tuple[Figure, np.ndarray]:
    """Tanglegram of the taxonomy tree (left) and the dendrogram of species centroids (right).

    Parameters
    ----------
    linkage
        ``(S - 1, 4)`` scipy linkage matrix of the species centroids (leaf ``s`` = table row ``s``).
    species
        ``(S, 7+)`` species table (``kingdom``..``species``), the rows the linkage clustered.
    color_rank
        Rank whose clades colour the connecting lines (top ``top_n`` clades + "other"). Default: the
        highest rank with at least 2 clades.
    top_n
        Clades given their own colour.
    max_labels
        Species names are written only when there are at most this many species.
    rotate
        Rotate the dendrogram (swap the children of merges; topology and heights unchanged) to follow
        the taxonomy's order, as tanglegrams usually do; False keeps scipy's leaf order.
    title
        Figure title.

    Returns
    -------
    (Figure, numpy.ndarray)
        Axes ``[taxonomy tree, connectors, dendrogram]`` (label columns, when drawn, are not included).
    """
    function = "plot_tanglegram"
    top_n = check_int("top_n", top_n, minimum=1, function=function)
    max_labels = check_int("max_labels", max_labels, minimum=0, function=function)
    if not isinstance(species, pd.DataFrame):
        raise InputError(f"The 'species' parameter of {function} must be a pandas DataFrame (the species table). "
                         f"Got {type(species).__name__} instead.")
    S = len(species)
    if S < 2:
        raise InputError(f"The 'species' parameter of {function} needs at least 2 species. Got {S}.")
    table = check_species_table(species, None, parameter="species", function=function)
    Z = _check_linkage(linkage, S, function)
    if color_rank is None:
        color_rank = next((r for r in RANK_NAMES if table[r].nunique() >= 2), "species")
    elif color_rank not in RANK_NAMES:
        raise InputError(f"The 'color_rank' parameter of {function} must be a rank name. Got {color_rank!r}.")

    keys, names = rank_keys(table, color_rank)
    codes, clades, sizes = top_categories(keys, top_n, names=names)
    colours = palette(len(clades))
    if clades and clades[-1] == "other" and (codes == len(clades) - 1).any():
        colours[-1] = OTHER_COLOR
    line_colours = np.asarray(colours, dtype=object)[codes]

    labelled = 0 < S <= max_labels
    height = float(np.clip(0.13 * S + 1.6, 3.6, 12.0)) if labelled else 4.8
    fontsize = min(7.0, 0.8 * (height - 1.4) * 72.0 / S) if labelled else 0.0
    if labelled and fontsize < 4.0:
        labelled = False
    # Clades thinner than about 2 points are not drawn one by one (the tree is collapsed below them).
    max_nodes = None if labelled else max(60, int((height - 1.4) * 72.0 / 2.0))
    depth = drawn_depth(table, max_nodes)
    y_tax, tax_segments = taxonomy_segments(table, max_nodes=max_nodes)
    y_den, den_segments = dendrogram_segments(Z, target=y_tax if rotate else None)
    widths = [1.5, 1.4, 1.0, 1.4, 1.5] if labelled else [1.6, 1.2, 1.6]
    fig = Figure(figsize=(sum(widths) + 0.6, height), layout="constrained")
    grid = fig.add_gridspec(1, len(widths), width_ratios=widths, wspace=0.0)
    axes = [fig.add_subplot(grid[0, i]) for i in range(len(widths))]
    for ax in axes[1:]:
        ax.sharey(axes[0])
    tree_ax, den_ax = axes[0], axes[-1]
    link_ax = axes[len(widths) // 2]
    lw = 0.9 if S <= 200 else (0.5 if S <= 2000 else 0.25)
    tree_ax.add_collection(LineCollection(tax_segments, colors="#333333", linewidths=lw))
    tree_ax.set_xlim(-1.1, depth + 0.1)
    tree_ax.set_xticks(range(depth + 1), RANK_NAMES[: depth + 1], rotation=60, ha="right", rotation_mode="anchor",
                       fontsize=7)
    tree_ax.set_title("taxonomy")
    if depth < len(RANK_NAMES) - 1:
        tree_ax.set_xlabel(f"bars: {RANK_NAMES[depth]} clades", fontsize=7)
    den_ax.add_collection(LineCollection(den_segments, colors="#333333", linewidths=lw))
    top = float(Z[:, 2].max()) if len(Z) else 1.0
    den_ax.set_xlim(top * 1.03 if top > 0 else 1.0, -0.02 * (top if top > 0 else 1.0))
    den_ax.set_xlabel("merge height")
    den_ax.set_title("centroid dendrogram")
    alpha = 0.9 if S <= 200 else float(np.clip(200.0 / S, 0.15, 0.9))
    order = np.argsort(codes == (len(clades) - 1) if clades and clades[-1] == "other" else np.zeros(S), kind="stable")
    link_segments = np.stack([np.column_stack([np.zeros(S), y_tax]), np.column_stack([np.ones(S), y_den])], axis=1)
    link_ax.add_collection(LineCollection(link_segments[order[::-1]], colors=list(line_colours[order[::-1]]),
                                          linewidths=max(lw, 0.6), alpha=alpha))
    link_ax.set_xlim(0, 1)
    for ax in axes:
        ax.set_ylim(S - 0.5, -0.5)
        ax.tick_params(axis="y", left=False, labelleft=False)
        for side in ("left", "top", "right"):
            ax.spines[side].set_visible(False)
    for ax in axes[1:-1]:
        ax.set_xticks([])
        ax.spines["bottom"].set_visible(False)
    if labelled:
        label_names = [shorten(n, 26) for n in table["species"]]
        left_ax, right_ax = axes[1], axes[3]
        for s in range(S):
            left_ax.text(0.02, y_tax[s], label_names[s], ha="left", va="center", fontsize=fontsize,
                         transform=left_ax.get_yaxis_transform())
            right_ax.text(0.98, y_den[s], label_names[s], ha="right", va="center", fontsize=fontsize,
                          transform=right_ax.get_yaxis_transform())
    handles = [Line2D([], [], color=c, linewidth=2) for c in colours]
    legend_labels = [f"{shorten(c, 24)} ({n:,})" for c, n in zip(clades, sizes)]
    figure_legend(fig, handles, legend_labels, max_ncol=min(4, len(clades)),
               title=f"lines join the {S:,} species, coloured by {color_rank}"
               + ("" if labelled else f" (names hidden above {max_labels} species)"))
    figure_title(fig, title)
    return fig, np.asarray([tree_ax, link_ax, den_ax], dtype=object)


# ------------------------------------------------------------------------------ report adapters
def report_tanglegram(context: Any, model: Any) -> "tuple[Figure, Any] | None":
    """One model's centroid dendrogram against the taxonomy (``dendrogram.npz``, ``species.csv``)."""
    species = context.species(model)
    dend = context.npz(model, "dendrogram.npz")
    if species is None or "linkage" not in dend:
        return None
    return plot_tanglegram(dend["linkage"], species)
