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

__all__ = ["plot_tanglegram", "dendrogram_segments", "taxonomy_segments", "drawn_depth", "count_crossings",
           "taxonomy_follow", "untangle"]

log = logging.getLogger(__name__)


def count_crossings(a: Any, b: Any) -> int:
    """Pairs of connecting lines that cross: pairs ``i < j`` with ``(a_i - a_j) (b_i - b_j) < 0``.

    Parameters
    ----------
    a, b
        ``(S,)`` positions of the same ``S`` leaves on the two sides (ties never cross).

    Returns
    -------
    int
        The number of crossing pairs (``O(S log S)``: a Fenwick tree over the ranks of ``b``).
    """
    a = np.asarray(a, dtype=np.float64).ravel()
    b = np.asarray(b, dtype=np.float64).ravel()
    if a.shape != b.shape:
        raise InputError(f"count_crossings needs two position arrays of one length. Got {a.shape} and {b.shape}.")
    S = len(a)
    if S < 2:
        return 0
    rank_b = np.unique(b, return_inverse=True)[1].astype(np.int64) + 1  # 1-based dense ranks
    size = int(rank_b.max())
    tree = np.zeros(size + 1, dtype=np.int64)
    order = np.lexsort((b, a))
    total, inserted, k = 0, 0, 0
    while k < S:  # a group of equal a: count against the earlier groups only, then insert it
        end = k
        while end + 1 < S and a[order[end + 1]] == a[order[k]]:
            end += 1
        group = rank_b[order[k:end + 1]]
        for r in group:
            i, below_or_equal = int(r), 0
            while i > 0:
                below_or_equal += int(tree[i])
                i -= i & -i
            total += inserted - below_or_equal  # earlier leaves (smaller a) with a larger b
        for r in group:
            i = int(r)
            while i <= size:
                tree[i] += 1
                i += i & -i
        inserted += len(group)
        k = end + 1
    return int(total)


def _rotate_to(Z: np.ndarray, target: np.ndarray) -> np.ndarray:
    """``(S - 1, 2)`` children of every merge, ordered to minimise the crossings against ``target``.

    A swap at a merge changes the order of exactly the leaf pairs it joins (one leaf under each child),
    and of no other pair, so choosing each merge's orientation by the crossings among its own pairs
    (first child's leaves against the second's: ``#{t_x > t_y}`` kept, ``#{t_x < t_y}`` swapped) is
    the fewest crossings any rotation of the dendrogram can draw against a fixed leaf order on the other
    side. Ties keep the child with the smaller mean ``target`` first.
    """
    S = Z.shape[0] + 1
    children = Z[:, :2].astype(np.int64).copy()
    t = np.asarray(target, dtype=np.float64)
    values: dict[int, np.ndarray] = {}  # sorted targets of the leaves under a node not yet merged
    for i in range(S - 1):
        a, b = int(children[i, 0]), int(children[i, 1])
        va = values.pop(a) if a >= S else t[a:a + 1]
        vb = values.pop(b) if b >= S else t[b:b + 1]
        small, large, small_is_a = (va, vb, True) if len(va) <= len(vb) else (vb, va, False)
        below = np.searchsorted(large, small, side="left").sum()        # pairs with t_large < t_small
        above = (len(large) - np.searchsorted(large, small, side="right")).sum()  # t_large > t_small
        a_after_b, a_before_b = (below, above) if small_is_a else (above, below)  # pairs t_a > t_b, t_a < t_b
        keep, swap = int(a_after_b), int(a_before_b)
        if swap < keep or (swap == keep and va.mean() > vb.mean()):
            children[i] = (b, a)
        values[S + i] = np.sort(np.concatenate([va, vb]), kind="mergesort")
    return children


def dendrogram_segments(Z: np.ndarray, target: "np.ndarray | None" = None) -> tuple[np.ndarray, np.ndarray]:
    """Leaf positions and the line segments of a dendrogram, without recursion (any size).

    Parameters
    ----------
    Z
        ``(S - 1, 4)`` scipy linkage matrix.
    target
        Optional ``(S,)`` position of each leaf in another tree. The dendrogram is then rotated (the two
        children of merges swapped; its topology and heights are unchanged) to draw the fewest crossing
        lines against ``target`` that any rotation can (see :func:`_rotate_to`): a dendrogram that
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
    if target is None:
        children = Z[:, :2].astype(np.int64)
        leaves = leaves_list(Z)
    else:
        children = _rotate_to(Z, np.asarray(target, dtype=np.float64))
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


def taxonomy_follow(species: pd.DataFrame, positions: np.ndarray) -> np.ndarray:
    """``(S,)`` order of the species table's rows: the taxonomy rotated to follow other leaf positions.

    Every clade stays contiguous; the children of each node are ordered by the mean ``positions`` of
    their species (the barycentre rule), ties by lineage, species within a genus by their own position.

    Parameters
    ----------
    species
        ``(S, 7)`` species table as strings (:func:`check_species_table`).
    positions
        ``(S,)`` position of each species row on the other side (e.g. its dendrogram leaf).
    """
    pos = pd.Series(np.asarray(positions, dtype=np.float64))
    keys: list[np.ndarray] = []
    for rank in RANK_NAMES:
        lineage = lineage_keys(species, rank)
        keys.append(pos.groupby(lineage).transform("mean").to_numpy())
        keys.append(pd.factorize(pd.Series(lineage), sort=True)[0])
    keys.append(pos.to_numpy())
    return np.lexsort(keys[::-1]).astype(np.int64)


def untangle(Z: np.ndarray, species: pd.DataFrame, *, max_rounds: int = 20) -> tuple[np.ndarray, np.ndarray, int]:
    """Leaf orders of both trees of a tanglegram with few crossing lines (rotations only).

    A two-sided version of dendextend's step-wise ``untangle``: the dendrogram is rotated to the fewest
    crossings against the taxonomy's lineage order (optimal for that order, :func:`_rotate_to`); then,
    in turns, the taxonomy's children are reordered by the barycentre of their species' dendrogram
    positions (:func:`taxonomy_follow`) and the dendrogram rotated again, each round kept only when it
    draws fewer crossings. Topologies and merge heights never change; a dendrogram that equals the
    taxonomy up to rotations (and a resolution of its multifurcations) is drawn with no crossing.

    Parameters
    ----------
    Z
        ``(S - 1, 4)`` scipy linkage matrix (leaf ``s`` = species table row ``s``).
    species
        ``(S, 7)`` species table as strings.
    max_rounds
        Most alternations after the first rotation.

    Returns
    -------
    tuple
        ``(S,)`` taxonomy order of the rows (for :func:`taxonomy_segments`), ``(S,)`` target positions
        of the rows on the taxonomy side (for :func:`dendrogram_segments`) and the number of crossings.
    """
    S = len(species)
    order = taxonomy_order(species)
    t = np.empty(S)
    t[order] = np.arange(S, dtype=np.float64)
    y = dendrogram_segments(Z, target=t)[0]
    best = count_crossings(t, y)
    for _ in range(max_rounds):
        if best == 0:
            break
        new_order = taxonomy_follow(species, y)
        t_new = np.empty(S)
        t_new[new_order] = np.arange(S, dtype=np.float64)
        y_new = dendrogram_segments(Z, target=t_new)[0]
        crossings = count_crossings(t_new, y_new)
        if crossings >= best:
            break
        order, t, y, best = new_order, t_new, y_new, crossings
    return order, t, best


def drawn_depth(species: pd.DataFrame, max_nodes: "int | None") -> int:
    """Deepest rank index whose clades are drawn one by one: every rank with at most ``max_nodes`` nodes."""
    if max_nodes is None:
        return len(RANK_NAMES) - 1
    depth = 0
    for r, rank in enumerate(RANK_NAMES):
        if len(set(lineage_keys(species, rank))) <= max_nodes:
            depth = r
    return depth


def taxonomy_segments(species: pd.DataFrame, max_nodes: "int | None" = None,
                      order: "np.ndarray | None" = None) -> tuple[np.ndarray, np.ndarray]:
    """Leaf positions and line segments of the taxonomy tree of a species table.

    Species are placed in lineage order (0..S-1, or ``order``); each node sits at x = its rank index (kingdom 0 ..
    species 6, the root at -1) and at the mean position of its children.

    Parameters
    ----------
    species
        ``(S, 7+)`` species table (``kingdom``..``species``).
    max_nodes
        Draw one by one only the ranks with at most this many nodes (default: all). Below the deepest
        such rank ``d`` the tree is collapsed: each rank-``d`` clade is a vertical bar at x = ``d``
        spanning its species (drawn at the bar's midpoint), which keeps 10,000 leaves legible.
    order
        ``(S,)`` order of the rows from top to bottom (default: lineage order); every clade must be
        contiguous in it (e.g. :func:`taxonomy_follow`).

    Returns
    -------
    tuple of numpy.ndarray
        ``(S,)`` position of each species (table row) and ``(k, 2, 2)`` segments ``[(x, y), (x, y)]``.
    """
    S = len(species)
    order = taxonomy_order(species) if order is None else np.asarray(order, dtype=np.int64)
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
        Untangle (:func:`untangle`): rotate the dendrogram (swap the children of merges) and reorder the
        taxonomy's children, topologies and heights unchanged, to draw few crossing lines, as
        tanglegrams usually do; False keeps scipy's leaf order and the taxonomy's lineage order. The
        number of crossing lines is written under the lines.
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
    if rotate:
        tax_order, target, crossings = untangle(Z, table)
        y_tax, tax_segments = taxonomy_segments(table, max_nodes=max_nodes, order=tax_order)
        y_den, den_segments = dendrogram_segments(Z, target=target)
    else:
        y_tax, tax_segments = taxonomy_segments(table, max_nodes=max_nodes)
        y_den, den_segments = dendrogram_segments(Z)
        crossings = count_crossings(y_tax, y_den)
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
    link_ax.set_xlabel(f"{crossings:,} crossing{'s' if crossings != 1 else ''}"
                       + ("\n(untangled)" if rotate else "\n(not untangled)"), fontsize=7)
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
