"""Flat against top-down prediction, rank by rank: accuracy of each and their paired difference.

Left panel: top-1 accuracy at each rank of the flat predictor (circles) and the top-down one
(squares), side by side, with their species-bootstrap 95 % CIs. Right panel: top-down minus flat
accuracy on the same images with its paired CI (the same resampled species for both), and a dashed
line at 0 (no difference): below it, the walk down the tree lost images a flat prediction kept (a
wrong parent dooms every rank below). Ranks with one true taxon among the test images are not drawn
(not testable, as in :mod:`latent.metrics`); the figure says which.

Input: :func:`latent.topdown.compare_topdown`'s table (one model, one fold).
"""

from __future__ import annotations

import logging
import os
from typing import Any

import numpy as np
import pandas as pd
from matplotlib.figure import Figure
from matplotlib.lines import Line2D

from latent.errors import InputError
from latent.plotting.style import (figure_legend, figure_title, markers, new_figure, palette, require_columns,
                                   save_figure, styled)
from latent.ranks import RANK_NAMES

__all__ = ["plot_topdown", "ACCURACY_LABEL", "DIFFERENCE_LABEL"]

log = logging.getLogger(__name__)

ACCURACY_LABEL = "top-1 accuracy (95% CI)"
DIFFERENCE_LABEL = "top-down \u2212 flat accuracy (paired 95% CI)"
#: Horizontal offset of the two series (ranks are 1 apart).
DODGE = 0.12
_COLUMNS = ("rank", "metric", "mode", "value", "ci_low", "ci_high")
_ONE_TAXON = "one taxon"


def _single(table: pd.DataFrame, column: str) -> None:
    if column in table.columns and table[column].nunique(dropna=False) > 1:
        raise InputError(f"The 'table' parameter of plot_topdown holds {table[column].nunique(dropna=False)} values of "
                         f"{column!r}; draw one per call (select its rows).")


def _error_bars(ax: Any, x: np.ndarray, rows: pd.DataFrame, *, colour: str, marker: str, gid: str) -> None:
    y = rows["value"].to_numpy(float)
    lo = np.nan_to_num(y - rows["ci_low"].to_numpy(float), nan=0.0).clip(min=0)
    hi = np.nan_to_num(rows["ci_high"].to_numpy(float) - y, nan=0.0).clip(min=0)
    container = ax.errorbar(x, y, yerr=np.vstack([lo, hi]), color=colour, marker=marker, markersize=4.5,
                            linewidth=1.1, elinewidth=1.0)
    container.lines[0].set_gid(gid)
    for bars in container.lines[2]:
        bars.set_gid(gid + "-ci")


@styled
def plot_topdown(table: pd.DataFrame, out: "str | os.PathLike[str] | None" = None, *,
                 title: "str | None" = "Flat and top-down prediction per rank") -> tuple[Figure, np.ndarray]:
    """Per rank, flat and top-down top-1 accuracy with CIs, and their paired difference.

    Parameters
    ----------
    table
        :func:`latent.topdown.compare_topdown`'s table (``rank, metric, mode, value, ci_low, ci_high``;
        ``method``, ``note``, ``n_taxa`` read where present): ``top1`` rows of two modes (the first is
        the baseline, drawn as circles) and ``top1_difference`` rows. One model and one fold.
    out
        Path stem to save the figure to (``.pdf`` and ``.png``, :func:`latent.plotting.style.save_figure`);
        None: not saved.
    title
        Figure title (None or "" for none).

    Returns
    -------
    (Figure, numpy.ndarray)
        The figure and its two axes. Artists by ``gid``: ``"topdown-accuracy-0"`` (baseline) and
        ``"topdown-accuracy-1"`` (top-down) data lines with ``"...-ci"`` bar collections,
        ``"topdown-difference"`` (with ``"topdown-difference-ci"``) and ``"no-difference"`` (the line at 0).

    Raises
    ------
    InputError
        Missing columns, no ``top1`` rows of two modes, or several models or folds.
    """
    require_columns(table, _COLUMNS, parameter="table", function="plot_topdown",
                    hint="Pass latent.topdown.compare_topdown()'s table (topdown.csv of latent evaluate --top-down).")
    for column in ("model", "fold"):
        _single(table, column)
    accuracy = table[table["metric"] == "top1"]
    modes = list(dict.fromkeys(accuracy["mode"].astype(str)))
    if len(modes) != 2:
        raise InputError(f"The 'table' parameter of plot_topdown needs top1 rows of two modes (flat and top-down); it "
                         f"has {len(modes)} ({', '.join(modes) or 'none'}).")
    difference = table[table["metric"] == "top1_difference"]
    notes = table["note"].fillna("").astype(str) if "note" in table.columns else pd.Series("", index=table.index)
    one_taxon = {r for r, note in zip(table["rank"], notes) if note.startswith(_ONE_TAXON)}
    if "n_taxa" in table.columns:
        one_taxon |= set(accuracy.loc[pd.to_numeric(accuracy["n_taxa"], errors="coerce") < 2, "rank"])
    present = set(accuracy["rank"])
    shown = [r for r in RANK_NAMES if r in present and r not in one_taxon]
    dropped = [r for r in RANK_NAMES if r in present and r in one_taxon]
    x_of = {r: i for i, r in enumerate(shown)}
    width = max(2.8, 0.5 * len(shown) + 0.8)
    fig, axes = new_figure(1, 2, panel=(width, 2.8), extra=(0.3, 0.7))
    axes = axes[0]
    colours, shapes = palette(2), markers(2)
    handles: list[Any] = []
    labels: list[str] = []
    ax = axes[0]
    for j, mode in enumerate(modes):
        rows = accuracy[(accuracy["mode"].astype(str) == mode) & accuracy["rank"].isin(shown)]
        rows = rows.assign(_x=rows["rank"].map(x_of)).sort_values("_x")
        method = str(rows["method"].iloc[0]) if "method" in rows.columns and len(rows) else ""
        if len(rows):
            _error_bars(ax, rows["_x"].to_numpy(float) + (j - 0.5) * 2 * DODGE, rows, colour=colours[j],
                        marker=shapes[j], gid=f"topdown-accuracy-{j}")
        handles.append(Line2D([], [], color=colours[j], marker=shapes[j], linewidth=1.1))
        labels.append(f"{mode} ({method})" if method and method != mode else mode)
    ax.set_ylim(0, 1.03)
    ax.set_ylabel(ACCURACY_LABEL)
    ax.set_title("accuracy")
    ax = axes[1]
    ax.axhline(0.0, color="0.45", linestyle="--", linewidth=0.9, gid="no-difference", zorder=1)
    rows = difference[difference["rank"].isin(shown)]
    rows = rows.assign(_x=rows["rank"].map(x_of)).sort_values("_x")
    if len(rows):
        _error_bars(ax, rows["_x"].to_numpy(float), rows, colour="0.2", marker="D", gid="topdown-difference")
        handles.append(Line2D([], [], color="0.2", marker="D", linewidth=1.1))
        labels.append(f"{modes[1]} \u2212 {modes[0]}")
    ax.set_ylabel(DIFFERENCE_LABEL)
    ax.set_title("paired difference")
    for ax in axes:
        ax.set_xticks(range(len(shown)), shown, rotation=35, ha="right", rotation_mode="anchor")
        ax.set_xlim(-0.6, max(len(shown), 1) - 0.4)
        ax.grid(axis="y")
        ax.set_axisbelow(True)
        if not shown:
            ax.text(0.5, 0.5, "no rank with more than one taxon", transform=ax.transAxes, ha="center",
                    va="center", color="0.4", gid="topdown-empty")
    note = f"not drawn: {', '.join(dropped)} (one true taxon: not testable)" if dropped else None
    legend = figure_legend(fig, handles, labels, max_ncol=3, title=note)
    if note:
        legend.get_title().set_color("#555555")
    figure_title(fig, title)
    if out is not None:
        save_figure(fig, out)
    return fig, axes
