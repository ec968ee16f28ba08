"""Figures of ``latent evaluate`` results: per-rank accuracy, mistake severity, first wrong rank.

Inputs are the tables ``latent evaluate`` writes (concatenate several runs, or several models with a
``model`` column, to compare them):

* ``metrics.csv``: long format ``rank, metric, value, ci_low, ci_high, n`` + ``method``, ``mode``,
  ``split``, ``model`` and, for the k-shot centroid predictor, ``fold`` (``"0"``.. and ``"mean"``).
* ``severity.csv``: ``height`` (1..7), ``count``, ``fraction`` + ``method``, ``mode`` [, ``fold``].
* ``divergence.csv``: ``divergence`` (``kingdom``..``species``, ``correct``), ``count``, ``fraction``
  + ``method``, ``mode`` [, ``fold``].

Panels are models (side by side, shared y axis); within a panel every series (method, and mode or
split where those differ) has its own colour and marker.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.patches import Patch

from latent.errors import InputError, format_list
from latent.ranks import RANK_NAMES
from latent.plotting.style import (
    check_ranks,
    figure_legend,
    figure_title,
    markers,
    model_values,
    new_figure,
    palette,
    require_columns,
    styled,
)

__all__ = ["plot_rank_accuracy", "plot_mistake_severity", "plot_first_divergence", "METRIC_LABELS"]

log = logging.getLogger(__name__)

#: Axis labels of the metrics ``latent evaluate`` writes.
METRIC_LABELS = {
    "top1": "top-1 accuracy",
    "top5": "top-5 accuracy",
    "balanced_accuracy": "balanced accuracy",
    "macro_f1": "macro F1",
    "consistency": "consistency with the rank above",
}
#: Columns that tell series apart within one model, in the order they are named in a legend.
SERIES_COLUMNS = ("method", "mode", "split", "probe")


def _drop_folds(frame: pd.DataFrame) -> pd.DataFrame:
    """Rows of single runs and the fold means (``fold`` NaN/"" or ``"mean"``); per-fold rows dropped."""
    if "fold" not in frame.columns:
        return frame
    fold = frame["fold"].astype(object).where(frame["fold"].notna(), "").astype(str)
    return frame[(fold == "") | (fold == "mean")]


def _series_labels(frame: pd.DataFrame, series: "Sequence[str] | None") -> pd.Series:
    """One label per row from the series columns (those that vary, method always when present)."""
    if series is None:
        series = [c for c in SERIES_COLUMNS if c in frame.columns
                  and (c == "method" or model_values(frame, c).nunique() > 1)]
    else:
        series = list(series)
        missing = [c for c in series if c not in frame.columns]
        if missing:
            raise InputError(f"The 'series' columns {', '.join(missing)} are not in the table "
                             f"(columns: {format_list(map(str, frame.columns))}).")
    if not series:
        return pd.Series([""] * len(frame), index=frame.index, dtype=object)
    parts = [model_values(frame, c) for c in series]
    label = parts[0]
    for p in parts[1:]:
        label = label + " / " + p
    return label.str.strip(" /")


def _panel_axes(fig: Figure, axes: np.ndarray) -> list[Any]:
    return list(np.asarray(axes).ravel())


@styled
def plot_rank_accuracy(
    metrics: pd.DataFrame,
    *,
    metric: str = "top1",
    ranks: "Sequence[str] | None" = None,
    series: "Sequence[str] | None" = None,
    title: "str | None" = None,
) -> tuple[Figure, np.ndarray]:
    """Accuracy at each rank with its confidence interval, per method (series) and model (panels).

    Parameters
    ----------
    metrics
        Long-format table (``latent evaluate``'s ``metrics.csv``, or several concatenated) with
        ``rank, metric, value, ci_low, ci_high, n``; optional ``model`` (one panel per model),
        ``method``/``mode``/``split``/``probe`` (series) and ``fold`` (only single runs and the
        ``"mean"`` rows are drawn).
    metric
        Which metric to draw (``top1``, ``top5``, ``balanced_accuracy``, ``macro_f1``, ...).
    ranks
        Ranks to show (default all seven; ranks without rows are left out).
    series
        Columns naming a series (default: ``method`` plus whichever of ``mode``, ``split``,
        ``probe`` take more than one value).
    title
        Figure title.

    Returns
    -------
    (Figure, numpy.ndarray)
        The figure and its ``(n_models,)`` axes.

    Raises
    ------
    InputError
        Missing columns, no rows for ``metric``, or two rows for one (model, series, rank).
    """
    function = "plot_rank_accuracy"
    require_columns(metrics, ["rank", "metric", "value", "ci_low", "ci_high"], parameter="metrics", function=function,
                    hint="Pass a results table in the long format (metrics.csv of latent evaluate).")
    ranks = check_ranks(ranks, function=function)
    frame = _drop_folds(metrics)
    frame = frame[(frame["metric"].astype(str) == metric) & frame["rank"].isin(ranks)].copy()
    if frame.empty:
        have = sorted(set(metrics["metric"].astype(str)))
        raise InputError(f"The 'metrics' table of {function} has no rows of metric {metric!r} at ranks "
                         f"{', '.join(ranks)}. Metrics present: {format_list(have)}.")
    frame["_series"] = _series_labels(frame, series)
    frame["_model"] = model_values(frame)
    dup = frame.duplicated(["_model", "_series", "rank"], keep=False)
    if dup.any():
        example = frame.loc[dup, ["_model", "_series", "rank"]].iloc[0].tolist()
        raise InputError(f"The 'metrics' table of {function} has several {metric!r} rows for model/series/rank "
                         f"{example}. Add a column that tells them apart and name it in 'series'.")
    shown = [r for r in ranks if r in set(frame["rank"])]
    models = list(dict.fromkeys(frame["_model"]))
    labels = list(dict.fromkeys(frame["_series"]))
    colours, shapes = palette(len(labels)), markers(len(labels))
    fig, axes = new_figure(1, len(models), panel=(max(2.8, 0.5 * len(shown) + 0.6), 2.6), extra=(0.3, 0.5),
                           sharey=True)
    axes = axes[0]
    width = 0.6
    offsets = (np.arange(len(labels)) - (len(labels) - 1) / 2) * (width / max(1, len(labels)))
    x_of = {r: i for i, r in enumerate(shown)}
    bounded = bool(((frame["value"] >= 0) & (frame["value"] <= 1)).all())
    for ax, model in zip(axes, models):
        sub = frame[frame["_model"] == model]
        for j, label in enumerate(labels):
            rows = sub[sub["_series"] == label]
            if rows.empty:
                continue
            rows = rows.assign(_x=rows["rank"].map(x_of)).sort_values("_x")
            x = rows["_x"].to_numpy(float) + offsets[j]
            y = rows["value"].to_numpy(float)
            lo = np.nan_to_num(y - rows["ci_low"].to_numpy(float), nan=0.0).clip(min=0)
            hi = np.nan_to_num(rows["ci_high"].to_numpy(float) - y, nan=0.0).clip(min=0)
            ax.errorbar(x, y, yerr=np.vstack([lo, hi]), color=colours[j], marker=shapes[j], markersize=4.5,
                        linewidth=1.1, elinewidth=1.0, label=label or metric)
        ax.set_xticks(range(len(shown)), shown, rotation=35, ha="right", rotation_mode="anchor")
        ax.set_xlim(-0.6, len(shown) - 0.4)
        ax.grid(axis="y")
        ax.set_axisbelow(True)
        if model:
            ax.set_title(model)
        if bounded:
            ax.set_ylim(0, 1.03)
    axes[0].set_ylabel(METRIC_LABELS.get(metric, metric) + " (95% CI)")
    handles = [Line2D([], [], color=c, marker=m, linewidth=1.1) for c, m in zip(colours, shapes)]
    figure_legend(fig, handles, [lab or metric for lab in labels],
               max_ncol=min(len(labels), 4), title=None)
    figure_title(fig, title)
    return fig, axes


def _counts_by_series(frame: pd.DataFrame, category: str, categories: Sequence[Any],
                      series: "Sequence[str] | None") -> pd.DataFrame:
    """Counts summed over folds per (model, series, category), with fractions and series totals."""
    frame = frame.copy()
    if "fold" in frame.columns:  # severity/divergence tables have per-fold counts only: add them up
        fold = frame["fold"].astype(object).where(frame["fold"].notna(), "").astype(str)
        frame = frame[fold != "mean"]
    frame["_series"] = _series_labels(frame, series)
    frame["_model"] = model_values(frame)
    frame = frame[frame[category].isin(categories)]
    grouped = frame.groupby(["_model", "_series", category], sort=False)["count"].sum().reset_index()
    totals = grouped.groupby(["_model", "_series"], sort=False)["count"].transform("sum")
    grouped["_total"] = totals
    grouped["_fraction"] = np.where(totals > 0, grouped["count"] / totals.where(totals > 0, 1), np.nan)
    return grouped


def _grouped_bars(table: pd.DataFrame, category: str, categories: Sequence[Any], ticklabels: Sequence[str], *,
                  xlabel: str, ylabel: str, unit: str, title: "str | None", highlight: "Any | None" = None,
                  ) -> tuple[Figure, np.ndarray]:
    models = list(dict.fromkeys(table["_model"]))
    labels = list(dict.fromkeys(table["_series"]))
    colours = palette(len(labels))
    fig, axes = new_figure(1, len(models), panel=(max(2.8, 0.5 * len(categories) + 0.6), 2.6), extra=(0.3, 0.6),
                           sharey=True)
    axes = axes[0]
    width = 0.8 / max(1, len(labels))
    pos = {c: i for i, c in enumerate(categories)}
    legend_labels: dict[str, str] = {}
    for ax, model in zip(axes, models):
        sub = table[table["_model"] == model]
        for j, label in enumerate(labels):
            rows = sub[sub["_series"] == label]
            if rows.empty:
                continue
            x = rows[category].map(pos).to_numpy(float) + (j - (len(labels) - 1) / 2) * width
            y = np.nan_to_num(rows["_fraction"].to_numpy(float), nan=0.0)
            hatches = ["//" if highlight is not None and c == highlight else None for c in rows[category]]
            bars = ax.bar(x, y, width=width * 0.92, color=colours[j], edgecolor="white", linewidth=0.4)
            for bar, hatch in zip(bars, hatches):
                if hatch:
                    bar.set_hatch(hatch)
                    bar.set_edgecolor("#444444")
            total = int(rows["_total"].iloc[0])
            if total == 0:
                ax.text(0.5, 0.5, f"no {unit}", transform=ax.transAxes, ha="center", va="center", color="#555555")
            legend_labels[label] = f"{label or 'all'} (n = {total:,} {unit})" if len(models) == 1 else (label or "all")
        ax.set_xticks(range(len(categories)), ticklabels, fontsize=7.5)
        ax.set_xlim(-0.6, len(categories) - 0.4)
        ax.grid(axis="y")
        ax.set_axisbelow(True)
        if model:
            n_text = ", ".join(f"{lab or 'all'} {int(g['_total'].iloc[0]):,}"
                               for lab, g in sub.groupby("_series", sort=False))
            ax.set_title(f"{model}\n({unit}: {n_text})" if len(models) > 1 else model)
        ax.set_xlabel(xlabel)
    axes[0].set_ylabel(ylabel)
    upper = float(np.nanmax(table["_fraction"].to_numpy(float), initial=0.0))
    axes[0].set_ylim(0, min(1.0, upper * 1.12) if upper > 0 else 1.0)
    handles = [Patch(facecolor=c) for c in colours]
    figure_legend(fig, handles, [legend_labels.get(lab, lab or "all") for lab in labels],
               max_ncol=min(len(labels), 3))
    figure_title(fig, title)
    return fig, axes


@styled
def plot_mistake_severity(
    severity: pd.DataFrame,
    *,
    series: "Sequence[str] | None" = None,
    title: "str | None" = "How wrong are the mistakes?",
) -> tuple[Figure, np.ndarray]:
    """Histogram of the LCA height of the top-1 species mistakes (1 = right genus .. 7 = wrong kingdom).

    Parameters
    ----------
    severity
        ``latent evaluate``'s ``severity.csv`` (or several concatenated): ``height`` (1..7),
        ``count``; optional ``method``, ``mode``, ``split`` (series), ``model`` (panels) and
        ``fold`` (counts are summed over folds).
    series
        Columns naming a series (default: ``method`` and whichever of ``mode``, ``split`` vary).
    title
        Figure title.

    Returns
    -------
    (Figure, numpy.ndarray)
        ``(n_models,)`` axes. Bars are fractions of the mistakes of the series; the legend (or panel
        title) gives the number of mistakes.
    """
    function = "plot_mistake_severity"
    require_columns(severity, ["height", "count"], parameter="severity", function=function,
                    hint="Pass severity.csv written by latent evaluate.")
    heights = list(range(1, len(RANK_NAMES) + 1))
    table = _counts_by_series(severity.assign(height=pd.to_numeric(severity["height"])), "height", heights, series)
    if table.empty:
        raise InputError(f"The 'severity' table of {function} has no rows with height 1..7.")
    # Height h: the lowest common ancestor is at rank 6 - h (h = 7: none, different kingdoms).
    ticks = [f"{h}\n{RANK_NAMES[len(RANK_NAMES) - 1 - h] if h < len(RANK_NAMES) else 'none'}" for h in heights]
    return _grouped_bars(table, "height", heights, ticks, xlabel="LCA height (shared ancestor rank)",
                         ylabel="fraction of mistakes", unit="mistakes", title=title)


@styled
def plot_first_divergence(
    divergence: pd.DataFrame,
    *,
    series: "Sequence[str] | None" = None,
    title: "str | None" = "First wrong rank of the top-1 species",
) -> tuple[Figure, np.ndarray]:
    """Distribution of the highest rank at which the predicted lineage leaves the true one.

    Parameters
    ----------
    divergence
        ``latent evaluate``'s ``divergence.csv`` (or several concatenated): ``divergence``
        (``kingdom``..``species`` or ``correct``), ``count``; optional ``method``, ``mode``, ``split``
        (series), ``model`` (panels), ``fold`` (counts summed over folds).
    series, title
        As in :func:`plot_mistake_severity`.

    Returns
    -------
    (Figure, numpy.ndarray)
        ``(n_models,)`` axes; bars are fractions of the images with a known species (``correct``
        hatched).
    """
    function = "plot_first_divergence"
    require_columns(divergence, ["divergence", "count"], parameter="divergence", function=function,
                    hint="Pass divergence.csv written by latent evaluate.")
    categories = list(RANK_NAMES) + ["correct"]
    table = _counts_by_series(divergence, "divergence", categories, series)
    if table.empty:
        raise InputError(f"The 'divergence' table of {function} has no rows with divergence in "
                         f"{', '.join(categories)}.")
    fig, axes = _grouped_bars(table, "divergence", categories, categories, xlabel="first wrong rank",
                              ylabel="fraction of test images", unit="images", title=title, highlight="correct")
    for ax in axes:
        ax.tick_params(axis="x", labelrotation=35)
        for label in ax.get_xticklabels():
            label.set_ha("right")
            label.set_rotation_mode("anchor")
    return fig, axes


# ------------------------------------------------------------------------------ report adapters
def report_accuracy(context: Any) -> "tuple[Figure, Any] | None":
    """Accuracy per rank of every evaluation of every model (``context``: a ``latent.figures.FigureContext``)."""
    rows = context.evaluation_metrics()
    return None if rows is None else plot_rank_accuracy(rows)


def report_mistake_severity(context: Any) -> "tuple[Figure, Any] | None":
    """LCA heights of the wrong species predictions (``severity.csv`` of the evaluations)."""
    rows = context.evaluation_tables("severity.csv")
    return None if rows is None else plot_mistake_severity(rows)


def report_first_divergence(context: Any) -> "tuple[Figure, Any] | None":
    """The first wrong rank of the predictions (``divergence.csv`` of the evaluations)."""
    rows = context.evaluation_tables("divergence.csv")
    return None if rows is None else plot_first_divergence(rows)
