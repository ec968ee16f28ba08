"""Where in the network each rank appears: the primary statistic per rank against depth.

One line per testable level (ranks with one partition of the species are one level, drawn once and named
``"order = family"``): ``rank_distance_ratio`` (distance to relatives inside the taxon over distance to
relatives outside it within the same parent; below 1: the rank is visible) at each layer, with its 95 %
cluster-bootstrap CI as a vertical bar where there is one (the top level, whose parent is the root, has
none). A marker is filled where that layer's verdict is "yes" (Holm-adjusted p <= ALPHA, ratio below its
null), open otherwise; a short vertical tick in the level's colour rising from the x axis marks the layer
at which the rank emerges (the first layer from which it is "yes" at every later layer,
:func:`latent.layers.emergence_layers`). Series are dodged sideways by :data:`DODGE` layers each, so
equal values and their CIs stay apart. A dashed line at 1
is "no structure" (the restricted null's mean is near 1).

Input: :func:`latent.layers.emergence`'s table (one model).
"""

from __future__ import annotations

import logging
from typing import Any

import numpy as np
import pandas as pd
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from matplotlib.lines import Line2D

from latent.errors import InputError
from latent.plotting.style import figure_legend, figure_title, new_figure, palette, require_columns, styled

__all__ = ["plot_emergence", "plot_emergence_models", "report_emergence", "Y_LABEL", "X_LABEL"]

log = logging.getLogger(__name__)

X_LABEL = "layer"
Y_LABEL = "distance inside / outside the taxon (below 1: visible)"
#: Horizontal offset between neighbouring series (layers are 1 apart).
DODGE = 0.07
_COLUMNS = ("layer", "rank", "value", "ci_low", "ci_high", "verdict")


def _series(table: pd.DataFrame) -> list[tuple[str, str, pd.DataFrame]]:
    """``(label, first rank, rows by layer)`` per level testable at some layer, coarse to fine."""
    from latent.ranks import RANK_NAMES

    levels = table["level"].astype(str) if "level" in table.columns else table["rank"].astype(str)
    out, seen = [], set()
    for rank in [r for r in RANK_NAMES if r in set(table["rank"])]:
        sel = table[table["rank"] == rank]
        level = str(levels[sel.index].iloc[0])
        if level in seen:
            continue
        seen.add(level)
        if not (sel["verdict"] != "not testable").any() or not np.isfinite(sel["value"].astype(float)).any():
            continue
        out.append((level.replace("=", " = "), rank, sel.sort_values("layer")))
    return out


def _draw_series(ax: Axes, sel: pd.DataFrame, x_column: str, dx: float, colour: str, tick_at: float, *,
                 linewidth: float, markersize: float) -> None:
    """One series against depth: its line, CI bars, filled ("yes") and open markers, and the emergence tick
    at ``tick_at`` (in ``x_column`` units; NaN: none), all moved sideways by ``dx``."""
    x = sel[x_column].to_numpy(dtype=float) + dx
    y = sel["value"].to_numpy(dtype=float)
    ok = np.isfinite(y)
    ax.plot(x[ok], y[ok], color=colour, linewidth=linewidth, gid="emergence-line", zorder=2)
    lo, hi = sel["ci_low"].to_numpy(dtype=float), sel["ci_high"].to_numpy(dtype=float)
    ci = ok & np.isfinite(lo) & np.isfinite(hi)
    if ci.any():
        ax.vlines(x[ci], lo[ci], hi[ci], color=colour, linewidth=linewidth - 0.4, alpha=0.8, gid="emergence-ci",
                  zorder=2)
    yes = ok & (sel["verdict"] == "yes").to_numpy()
    if yes.any():
        ax.plot(x[yes], y[yes], linestyle="none", marker="o", markersize=markersize, color=colour,
                markeredgecolor=colour, gid="emergence-yes", zorder=3)
    if (ok & ~yes).any():
        ax.plot(x[ok & ~yes], y[ok & ~yes], linestyle="none", marker="o", markersize=markersize, color=colour,
                markerfacecolor="white", markeredgecolor=colour, gid="emergence-no", zorder=3)
    if np.isfinite(tick_at):
        # a short vertical tick rising from the x axis, dodged like its series
        ax.plot([tick_at + dx] * 2, [0.0, 0.08], color=colour, linewidth=2.4, solid_capstyle="butt",
                transform=ax.get_xaxis_transform(), clip_on=False, gid="emergence-tick", zorder=4)


@styled
def plot_emergence(table: pd.DataFrame, ax: "Axes | None" = None, *,
                   title: "str | None" = "Where in the network each rank appears") -> tuple[Figure, Axes]:
    """The primary statistic per rank against depth, with CIs, verdicts and the layer of emergence.

    Parameters
    ----------
    table
        :func:`latent.layers.emergence`'s table of one model: columns ``layer, rank, value, ci_low,
        ci_high, verdict`` (``level`` optional), one row per layer and rank.
    ax
        Axes to draw on (its figure gets no legend or title; the axes get a legend). None: a new figure
        with the legend below the panel.
    title
        Figure title (new figure only; None or "" for none).

    Returns
    -------
    (Figure, Axes)
        Artists by ``gid``: ``"emergence-line"`` (one line per drawn level), ``"emergence-ci"`` (one
        collection of CI bars per level that has any), ``"emergence-yes"`` / ``"emergence-no"`` (filled /
        open markers, one artist per level where present), ``"emergence-tick"`` (one per level that
        emerges, at its emergence layer) and ``"no-structure"`` (the line at 1).
    """
    from latent.layers import emergence_layers
    from latent.verdict import ALPHA

    require_columns(table, _COLUMNS, parameter="table", function="plot_emergence",
                    hint="Pass latent.layers.emergence()'s table.")
    if "model" in table.columns and table["model"].nunique(dropna=False) > 1:
        raise InputError(f"The 'table' parameter of plot_emergence holds {table['model'].nunique(dropna=False)} models; "
                         f"draw one model per call (select its rows, and pass ax= to share a figure).")
    if ax is None:
        fig, axes = new_figure(1, 1, panel=(5.6, 3.8), extra=(0.0, 0.6))
        ax, own = axes[0, 0], True
    else:
        fig, own = ax.get_figure(), False
    first = emergence_layers(table).set_index("rank")["emergence_layer"] if len(table) else pd.Series(dtype=float)
    series = _series(table)
    colours = palette(len(series))
    handles: list[Any] = []
    labels: list[str] = []
    ax.axhline(1.0, color="0.45", linestyle="--", linewidth=0.9, gid="no-structure", zorder=1)
    for i, ((label, rank, sel), colour) in enumerate(zip(series, colours)):
        # series are dodged sideways (under a quarter of a layer in all) so equal values and CIs stay apart
        dx = (i - (len(series) - 1) / 2.0) * DODGE
        k = float(first.get(rank, np.nan))
        _draw_series(ax, sel, "layer", dx, colour, k, linewidth=1.4, markersize=5.5)
        handles.append(Line2D([], [], color=colour, marker="o", linewidth=1.4))
        labels.append(label + (f" (emerges at {int(k)})" if np.isfinite(k) else ""))
    handles += [Line2D([], [], color="0.3", marker="o", linestyle="none"),
                Line2D([], [], color="0.3", marker="o", markerfacecolor="white", linestyle="none"),
                Line2D([], [], color="0.3", marker="|", markersize=10, markeredgewidth=2.4, linestyle="none")]
    labels += [f"yes (Holm p <= {ALPHA:g})", "no / not testable", "emergence layer (axis tick)"]
    layers = np.unique(table["layer"].to_numpy(dtype=float)) if len(table) else np.zeros(0)
    if len(layers):
        ax.set_xticks(layers)
        ax.set_xticklabels([str(int(v)) for v in layers])
        ax.set_xlim(layers.min() - 0.4, layers.max() + 0.4)
    ax.set_xlabel(X_LABEL)
    ax.set_ylabel(Y_LABEL)
    if not series:
        ax.text(0.5, 0.5, "no rank is testable at any layer", transform=ax.transAxes, ha="center", va="center",
                color="0.4", gid="emergence-empty")
    if own:
        figure_legend(fig, handles, labels, max_ncol=3)
        figure_title(fig, title)
    else:
        ax.legend(handles, labels, fontsize="small", loc="best")
    return fig, ax


def _x_of(table: pd.DataFrame) -> tuple[str, str]:
    """The depth axis shared by several models: the block number when every model has as many blocks,
    else the relative depth ``block / n_blocks``."""
    if "n_blocks" in table.columns and table["n_blocks"].nunique(dropna=True) > 1:
        return "depth", "relative depth (block / blocks of the model)"
    return "layer", "block (after transformer block k)"


@styled
def plot_emergence_models(table: pd.DataFrame, *,
                          title: "str | None" = "Where in the network each rank appears, model by model"
                          ) -> tuple[Figure, Any]:
    """Per rank, the primary statistic against depth for several models on the same axes.

    Parameters
    ----------
    table
        :func:`latent.layers.emergence_from_cache`'s tables of several models stacked, with a ``model``
        column: ``model, layer, rank, value, ci_low, ci_high, verdict`` (``level``, ``n_blocks``, ``depth``
        optional). Models of different depths are drawn against ``depth`` (block / blocks).

    Returns
    -------
    (Figure, ndarray of Axes)
        One panel per level testable in some model (coarse to fine). Artists by ``gid`` as in
        :func:`plot_emergence` (``"emergence-line"`` one per model and panel drawn, ``"emergence-ci"``,
        ``"emergence-yes"``, ``"emergence-no"``, ``"emergence-tick"``, ``"no-structure"``); each panel's
        title names its level.
    """
    from latent.layers import emergence_layers
    from latent.verdict import ALPHA

    require_columns(table, (*_COLUMNS, "model"), parameter="table", function="plot_emergence_models",
                    hint="Stack latent.layers.emergence_from_cache() tables with a 'model' column.")
    models = list(dict.fromkeys(table["model"].astype(str)))
    x_column, x_label = _x_of(table)
    levels: list[tuple[str, str]] = []
    for model in models:
        for label, rank, _ in _series(table[table["model"].astype(str) == model]):
            if rank not in [r for _, r in levels]:
                levels.append((label, rank))
    from latent.ranks import RANK_NAMES

    levels.sort(key=lambda item: RANK_NAMES.index(item[1]))
    ncols = min(3, max(1, len(levels)))
    nrows = max(1, -(-len(levels) // ncols))
    fig, axes = new_figure(nrows, ncols, panel=(3.4, 2.6), extra=(0.0, 0.7), sharey=True)
    colours = dict(zip(models, palette(len(models))))
    span = float(table[x_column].max() - table[x_column].min()) if len(table) else 1.0
    dodge = DODGE * (span / max(1, table["layer"].nunique() - 1) if x_column == "depth" else 1.0)
    first = {m: emergence_layers(table[table["model"].astype(str) == m]).set_index("rank")["emergence_layer"]
             for m in models}
    for ax, (label, rank) in zip(axes.flat, levels):
        ax.axhline(1.0, color="0.45", linestyle="--", linewidth=0.9, gid="no-structure", zorder=1)
        for i, model in enumerate(models):
            sel = table[(table["model"].astype(str) == model) & (table["rank"] == rank)].sort_values("layer")
            if not np.isfinite(sel["value"].to_numpy(dtype=float)).any():
                continue
            k = float(first[model].get(rank, np.nan))
            at = sel.loc[sel["layer"] == k, x_column].to_numpy(dtype=float) if np.isfinite(k) else np.zeros(0)
            _draw_series(ax, sel, x_column, (i - (len(models) - 1) / 2.0) * dodge, colours[model],
                         float(at[0]) if len(at) else np.nan, linewidth=1.3, markersize=4.5)
        ax.set_title(label, fontsize="medium")
        ax.set_xlabel(x_label)
    for ax in list(axes.flat)[len(levels):]:
        ax.set_visible(False)
    for row in axes:
        row[0].set_ylabel("inside / outside distance")
    if not levels:
        axes.flat[0].set_visible(True)
        axes.flat[0].text(0.5, 0.5, "no rank is testable at any layer", transform=axes.flat[0].transAxes,
                          ha="center", va="center", color="0.4", gid="emergence-empty")
    handles = [Line2D([], [], color=colours[m], marker="o", linewidth=1.3) for m in models]
    labels = list(models)
    handles += [Line2D([], [], color="0.3", marker="o", linestyle="none"),
                Line2D([], [], color="0.3", marker="o", markerfacecolor="white", linestyle="none"),
                Line2D([], [], color="0.3", marker="|", markersize=10, markeredgewidth=2.4, linestyle="none")]
    labels += [f"yes (Holm p <= {ALPHA:g})", "no", "emerges here (axis tick)"]
    figure_legend(fig, handles, labels, max_ncol=4)
    figure_title(fig, title)
    return fig, axes


def report_emergence(context: Any) -> Any:
    """Report adapter: every model's ``emergence-*.csv`` (``latent report --layers``); None when none has one.

    One model: :func:`plot_emergence` (ranks as lines). Several: :func:`plot_emergence_models` (one panel per
    rank, models as lines, on relative depth when their block counts differ).
    """
    from latent.figures import Drawing

    tables = {m.label: context.read_csv(m.emergence) for m in context.models if getattr(m, "emergence", None)}
    table = context.concat(tables)
    if table is None:
        return None
    models = list(dict.fromkeys(table["model"].astype(str)))
    if len(models) == 1:
        fig, _ = plot_emergence(table.drop(columns="model"), title=None)
    else:
        fig, _ = plot_emergence_models(table, title=None)
    blocks = ", ".join(f"{m} {int(table.loc[table['model'] == m, 'n_blocks'].iloc[0])}" for m in models
                       if "n_blocks" in table.columns)
    return Drawing(fig, {"blocks": blocks or "not recorded"})
