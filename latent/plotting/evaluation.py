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

What is drawn is what the data says:

* accuracy: ranks with one candidate taxon (any predictor scores 1) and top-5 at ranks with 5 or fewer
  classes are not drawn, and the legend's title says which; every point has its chance level (dashed:
  1 / classes, top-5: 5 / classes) and, where the table has ``majority`` rows, the majority-class level
  (dotted);
* severity and divergence: a series with no counts (no mistakes, species not predicted) draws no bars
  and is named once, in the legend; a panel with no bars at all says why once; a k-fold run is counted
  per fold with the number of folds ("250 images per fold, 5 folds"), never as the sum over folds.
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
    MAX_FIGURE_INCHES,
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


#: Notes of ``latent evaluate`` on a rank with one candidate taxon (any predictor scores 1 there).
TRIVIAL_NOTES = ("one taxon at this rank", "one candidate taxon")
#: Metrics whose chance level is the share of the classes a random guess covers (1/K, top-5: 5/K).
CHANCE_METRICS = {"top1": 1, "top5": 5, "balanced_accuracy": 1}
#: Metric names of a majority-class baseline row (accuracy of always predicting the most frequent class).
MAJORITY_METRICS = ("majority", "majority_class", "majority_top1")
#: Colour of the chance and majority-class lines.
BASELINE_COLOR = "#555555"


def _classes_per_row(frame: pd.DataFrame, counts: pd.DataFrame) -> np.ndarray:
    """``(n_rows,)`` number of candidate classes of each row: its (model, series, rank)'s ``n_classes`` row,
    else the row's own ``n_taxa`` (NaN when neither is there)."""
    lookup = {(m, s, r): float(v) for m, s, r, v in
              zip(counts["_model"], counts["_series"], counts["rank"], pd.to_numeric(counts["value"], errors="coerce"))}
    own = (pd.to_numeric(frame["n_taxa"], errors="coerce").to_numpy(float) if "n_taxa" in frame.columns
           else np.full(len(frame), np.nan))
    out = np.array([lookup.get(key, np.nan) for key in zip(frame["_model"], frame["_series"], frame["rank"])],
                   dtype=float)
    return np.where(np.isfinite(out), out, own)


def _trivial_rows(frame: pd.DataFrame, classes: np.ndarray) -> np.ndarray:
    """``(n_rows,)`` bool: the rank has one candidate taxon (``n_classes``/``n_taxa`` 1, or the note says so)."""
    notes = model_values(frame, "note").str.lower()  # "" where absent or NaN
    noted = notes.apply(lambda n: any(t in n for t in TRIVIAL_NOTES)).to_numpy(bool)
    return noted | (np.isfinite(classes) & (classes <= 1))


def _dropped_note(dropped: "dict[str, list[tuple[str, str]]]", everyone: "list[tuple[str, str]]", what: str) -> str:
    """``"kingdom, phylum, genus (knn) not drawn: <what>"`` from ``{rank: [(model, series), ...]}``.

    A rank left out for every (model, series) of the figure is named alone; otherwise the series (and
    models, when there are several) it is left out for follow in brackets. ``""`` when nothing is dropped.
    """
    if not dropped:
        return ""
    several_models = len({m for m, _ in everyone}) > 1
    parts = []
    for rank in RANK_NAMES:
        where = list(dict.fromkeys(dropped.get(rank, [])))
        if not where:
            continue
        if set(where) >= set(everyone):
            parts.append(rank)
            continue
        names = [": ".join(x for x in ((m if several_models else ""), s) if x) for m, s in where]
        names = [n for n in names if n]
        parts.append(f"{rank} ({', '.join(names)})" if names else rank)
    return f"{', '.join(parts)} not drawn: {what}"


@styled
def plot_rank_accuracy(
    metrics: pd.DataFrame,
    *,
    metric: str = "top1",
    ranks: "Sequence[str] | None" = None,
    series: "Sequence[str] | None" = None,
    title: "str | None" = None,
    baselines: bool = True,
) -> tuple[Figure, np.ndarray]:
    """Accuracy at each rank with its confidence interval, per method (series) and model (panels).

    Ranks with one candidate taxon (``n_classes`` or ``n_taxa`` 1, or the note "one taxon at this
    rank": any predictor scores 1 there) are not drawn, and neither is top-5 at a rank with 5 or fewer
    classes (it is 1 by construction); the legend's title says which were left out (also those that
    ``latent evaluate`` left without a row of the metric, as their ``n_classes`` rows show). Each drawn point has its
    chance level beside it (a dashed segment: 1 / classes, top-5: 5 / classes) and, where the table has a
    ``majority`` row for the rank (accuracy of always answering the most frequent class), a dotted one.

    Parameters
    ----------
    metrics
        Long-format table (``latent evaluate``'s ``metrics.csv``, or several concatenated) with
        ``rank, metric, value, ci_low, ci_high, n``; optional ``n_taxa``, ``note``, ``n_classes`` rows
        (the number of classes per rank), ``majority`` rows, ``model`` (one panel per model),
        ``method``/``mode``/``split``/``probe`` (series) and ``fold`` (only single runs and the
        ``"mean"`` rows are drawn).
    metric
        Which metric to draw (``top1``, ``top5``, ``balanced_accuracy``, ``macro_f1``, ...).
    ranks
        Ranks to show (default all seven; ranks without rows, or with one taxon, are left out).
    series
        Columns naming a series (default: ``method`` plus whichever of ``mode``, ``split``,
        ``probe`` take more than one value).
    title
        Figure title.
    baselines
        Draw the chance and majority-class segments (where the number of classes is known).

    Returns
    -------
    (Figure, numpy.ndarray)
        The figure and its ``(n_models,)`` axes. Each panel has one error-bar container per drawn
        series, a ``LineCollection`` with gid ``"chance"`` (one segment per drawn point whose classes
        are known) and, with majority rows, one with gid ``"majority"``.

    Raises
    ------
    InputError
        Missing columns, no rows for ``metric``, or two rows for one (model, series, rank).
    """
    from matplotlib.collections import LineCollection

    function = "plot_rank_accuracy"
    require_columns(metrics, ["rank", "metric", "value", "ci_low", "ci_high"], parameter="metrics", function=function,
                    hint="Pass a results table in the long format (metrics.csv of latent evaluate).")
    ranks = check_ranks(ranks, function=function)
    table = _drop_folds(metrics)
    names = table["metric"].astype(str)
    table = table[names.isin([metric, "n_classes", *MAJORITY_METRICS]) & table["rank"].isin(ranks)].copy()
    table["_series"] = _series_labels(table, series)
    table["_model"] = model_values(table)
    frame = table[table["metric"].astype(str) == metric].copy()
    if frame.empty:
        have = sorted(set(metrics["metric"].astype(str)))
        raise InputError(f"The 'metrics' table of {function} has no rows of metric {metric!r} at ranks "
                         f"{', '.join(ranks)}. Metrics present: {format_list(have)}.")
    dup = frame.duplicated(["_model", "_series", "rank"], keep=False)
    if dup.any():
        example = frame.loc[dup, ["_model", "_series", "rank"]].iloc[0].tolist()
        raise InputError(f"The 'metrics' table of {function} has several {metric!r} rows for model/series/rank "
                         f"{example}. Add a column that tells them apart and name it in 'series'.")
    counts = table[table["metric"].astype(str) == "n_classes"].drop_duplicates(["_model", "_series", "rank"])
    majority = table[table["metric"].astype(str).isin(MAJORITY_METRICS)].drop_duplicates(["_model", "_series", "rank"])
    frame["_classes"] = _classes_per_row(frame, counts)
    trivial = _trivial_rows(frame, frame["_classes"].to_numpy(float))
    short = np.zeros(len(frame), dtype=bool)
    if metric == "top5":
        short = ~trivial & np.isfinite(frame["_classes"].to_numpy(float)) & (frame["_classes"].to_numpy(float) <= 5)
    models = list(dict.fromkeys(frame["_model"]))
    one_taxon: dict[str, list[tuple[str, str]]] = {}
    few: dict[str, list[tuple[str, str]]] = {}
    for rank, model, label in zip(frame.loc[trivial, "rank"], frame.loc[trivial, "_model"], frame.loc[trivial, "_series"]):
        one_taxon.setdefault(rank, []).append((model, label))
    for rank, model, label in zip(frame.loc[short, "rank"], frame.loc[short, "_model"], frame.loc[short, "_series"]):
        few.setdefault(rank, []).append((model, label))
    # ranks latent evaluate left without a row of the metric because they are trivial (its n_classes row says)
    have = set(zip(frame["_model"], frame["_series"], frame["rank"]))
    for model, label, rank, k in zip(counts["_model"], counts["_series"], counts["rank"],
                                     pd.to_numeric(counts["value"], errors="coerce")):
        if (model, label, rank) in have or model not in models:
            continue
        if k <= 1:
            one_taxon.setdefault(rank, []).append((model, label))
        elif metric == "top5" and k <= 5:
            few.setdefault(rank, []).append((model, label))
    everyone = list(dict.fromkeys(zip(frame["_model"], frame["_series"])))
    notes = [_dropped_note(one_taxon, everyone, "one taxon (any predictor scores 1)"),
             _dropped_note(few, everyone, "5 or fewer classes (top-5 is 1 by construction)")]
    drawn = frame[~trivial & ~short]
    shown = [r for r in ranks if r in set(drawn["rank"])]
    labels = list(dict.fromkeys(drawn["_series"])) or list(dict.fromkeys(frame["_series"]))
    colours, shapes = palette(len(labels)), markers(len(labels))
    panel_width = max(2.8, 0.5 * len(shown) + 0.6)
    note = "; ".join(n for n in notes if n)
    if note:  # wrapped to the figure's width; the figure grows by its lines
        import textwrap

        figure_width = min(MAX_FIGURE_INCHES[0], panel_width * len(models) + 0.3)
        note = "\n".join(textwrap.wrap(note, max(30, int(figure_width * 72.0 / (8.0 * 0.55)))))
    fig, axes = new_figure(1, len(models), panel=(panel_width, 2.6),
                           extra=(0.3, 0.6 + (0.16 * (note.count("\n") + 1) if note else 0.0)), sharey=True)
    axes = axes[0]
    width = 0.6
    step = width / max(1, len(labels))
    offsets = (np.arange(len(labels)) - (len(labels) - 1) / 2) * step
    x_of = {r: i for i, r in enumerate(shown)}
    bounded = bool(((frame["value"] >= 0) & (frame["value"] <= 1)).all())
    majority_of = {(m, s, r): float(v) for m, s, r, v in zip(majority["_model"], majority["_series"],
                                                             majority["rank"], majority["value"])}
    per_class = CHANCE_METRICS.get(metric)
    any_chance = any_majority = False
    for ax, model in zip(axes, models):
        sub = drawn[drawn["_model"] == model]
        chance_segments, majority_segments = [], []
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
            half = max(step, 0.2) * 0.45
            for xi, k, rank in zip(x, rows["_classes"].to_numpy(float), rows["rank"]):
                if per_class is not None and np.isfinite(k) and k > per_class:
                    level = per_class / k
                    chance_segments.append([(xi - half, level), (xi + half, level)])
                if (model, label, rank) in majority_of and np.isfinite(majority_of[(model, label, rank)]):
                    level = majority_of[(model, label, rank)]
                    majority_segments.append([(xi - half, level), (xi + half, level)])
        if baselines and chance_segments:
            ax.add_collection(LineCollection(chance_segments, colors=BASELINE_COLOR, linestyles="--",
                                             linewidths=1.0, gid="chance", zorder=1.5))
            any_chance = True
        if baselines and majority_segments:
            ax.add_collection(LineCollection(majority_segments, colors=BASELINE_COLOR, linestyles=":",
                                             linewidths=1.3, gid="majority", zorder=1.5))
            any_majority = True
        ax.set_xticks(range(len(shown)), shown, rotation=35, ha="right", rotation_mode="anchor")
        ax.set_xlim(-0.6, max(len(shown), 1) - 0.4)
        ax.grid(axis="y")
        ax.set_axisbelow(True)
        if model:
            ax.set_title(model)
        if sub.empty:
            ax.text(0.5, 0.5, "no rank with more than one taxon", transform=ax.transAxes, ha="center",
                    va="center", color="#555555")
        if bounded:
            ax.set_ylim(0, 1.03)
    axes[0].set_ylabel(METRIC_LABELS.get(metric, metric) + " (95% CI)")
    handles: list[Any] = [Line2D([], [], color=c, marker=m, linewidth=1.1) for c, m in zip(colours, shapes)]
    texts = [lab or METRIC_LABELS.get(metric, metric) for lab in labels]
    if any_chance:
        handles.append(Line2D([], [], color=BASELINE_COLOR, linestyle="--", linewidth=1.0))
        texts.append("chance (1 / classes)" if per_class == 1 else f"chance ({per_class} / classes)")
    if any_majority:
        handles.append(Line2D([], [], color=BASELINE_COLOR, linestyle=":", linewidth=1.3))
        texts.append("majority class")
    legend = figure_legend(fig, handles, texts, max_ncol=min(len(texts), 4), title=note or None)
    if note:
        legend.get_title().set_color("#555555")
    figure_title(fig, title)
    return fig, axes


def _counts_by_series(frame: pd.DataFrame, category: str, categories: Sequence[Any],
                      series: "Sequence[str] | None") -> pd.DataFrame:
    """Counts summed over folds per (model, series, category), with fractions, series totals and folds.

    Returns
    -------
    pandas.DataFrame
        One row per (``_model``, ``_series``, category): ``count`` (summed over folds), ``_total`` (the
        series' count over all categories and folds), ``_fraction``, ``_folds`` (number of folds, 0 for a
        single run) and ``_fold_min``/``_fold_max`` (the smallest and largest per-fold total).
    """
    frame = frame.copy()
    fold = pd.Series([""] * len(frame), index=frame.index, dtype=object)
    if "fold" in frame.columns:  # severity/divergence tables have per-fold counts only: add them up
        fold = frame["fold"].astype(object).where(frame["fold"].notna(), "").astype(str)
        frame = frame[fold != "mean"]
        fold = fold[fold != "mean"]
    frame["_fold"] = fold
    frame["_series"] = _series_labels(frame, series)
    frame["_model"] = model_values(frame)
    frame = frame[frame[category].isin(categories)]
    frame = frame.assign(count=pd.to_numeric(frame["count"], errors="coerce").fillna(0))
    grouped = frame.groupby(["_model", "_series", category], sort=False)["count"].sum().reset_index()
    totals = grouped.groupby(["_model", "_series"], sort=False)["count"].transform("sum")
    grouped["_total"] = totals
    grouped["_fraction"] = np.where(totals > 0, grouped["count"] / totals.where(totals > 0, 1), np.nan)
    per_fold = frame[frame["_fold"] != ""].groupby(["_model", "_series", "_fold"], sort=False)["count"].sum()
    folds = per_fold.groupby(level=[0, 1], sort=False).agg(["size", "min", "max"])
    keys = list(zip(grouped["_model"], grouped["_series"]))
    grouped["_folds"] = [int(folds.loc[k, "size"]) if k in folds.index else 0 for k in keys]
    grouped["_fold_min"] = [int(folds.loc[k, "min"]) if k in folds.index else 0 for k in keys]
    grouped["_fold_max"] = [int(folds.loc[k, "max"]) if k in folds.index else 0 for k in keys]
    return grouped


def _count_text(rows: pd.DataFrame, unit: str) -> str:
    """``"1,234 <unit>"`` of a single run, ``"250 <unit> per fold, 5 folds"`` of a k-fold run."""
    first = rows.iloc[0]
    folds = int(first["_folds"])
    if folds <= 1:
        return f"{int(first['_total']):,} {unit}"
    low, high = int(first["_fold_min"]), int(first["_fold_max"])
    each = f"{low:,}" if low == high else f"{low:,}-{high:,}"
    return f"{each} {unit} per fold, {folds} folds"


def _grouped_bars(table: pd.DataFrame, category: str, categories: Sequence[Any], ticklabels: Sequence[str], *,
                  xlabel: str, ylabel: str, unit: str, empty: str, title: "str | None",
                  highlight: "Any | None" = None, empty_of: "dict[tuple[str, str], str] | None" = None,
                  ) -> tuple[Figure, np.ndarray]:
    """Bars of the fractions per category, one colour per series, one panel per model.

    A series with no counts (``empty``, e.g. "no species mistakes") draws nothing: it is named as such in
    the legend (or in the panel title when there are several models) and never labels a panel that shows
    bars; a panel where every series is empty says ``empty`` once, in its middle. ``empty_of`` gives
    another text for some ``(model, series)`` (e.g. "species not predicted").
    """
    empty_of = empty_of or {}

    def why(model: str, label: str) -> str:
        return empty_of.get((model, label), empty)

    def why_everywhere(pairs: "list[tuple[str, str]]") -> str:
        texts = {why(m, lab) for m, lab in pairs}
        return texts.pop() if len(texts) == 1 else empty

    models = list(dict.fromkeys(table["_model"]))
    labels = list(dict.fromkeys(table["_series"]))
    totals = table.drop_duplicates(["_model", "_series"]).set_index(["_model", "_series"])["_total"]
    filled = [lab for lab in labels if (totals.xs(lab, level="_series") > 0).any()]
    colours = dict(zip(labels, palette(len(labels))))
    fig, axes = new_figure(1, len(models), panel=(max(2.8, 0.5 * len(categories) + 0.6), 2.6), extra=(0.3, 0.6),
                           sharey=True)
    axes = axes[0]
    width = 0.8 / max(1, len(filled))
    pos = {c: i for i, c in enumerate(categories)}
    for ax, model in zip(axes, models):
        sub = table[table["_model"] == model]
        drawn = 0
        for j, label in enumerate(filled):
            rows = sub[sub["_series"] == label]
            if rows.empty or int(rows["_total"].iloc[0]) == 0:
                continue
            x = rows[category].map(pos).to_numpy(float) + (j - (len(filled) - 1) / 2) * width
            y = np.nan_to_num(rows["_fraction"].to_numpy(float), nan=0.0)
            bars = ax.bar(x, y, width=width * 0.92, color=colours[label], edgecolor="white", linewidth=0.4,
                          label=label or "all")
            drawn += 1
            for bar, value in zip(bars, rows[category]):
                if highlight is not None and value == highlight:
                    bar.set_hatch("//")
                    bar.set_edgecolor("#444444")
        if drawn == 0:
            pairs = [(model, lab) for lab in dict.fromkeys(sub["_series"])]
            ax.text(0.5, 0.5, why_everywhere(pairs), transform=ax.transAxes, ha="center", va="center",
                    color="#555555")
        ax.set_xticks(range(len(categories)), ticklabels, fontsize=7.5)
        ax.set_xlim(-0.6, len(categories) - 0.4)
        ax.grid(axis="y")
        ax.set_axisbelow(True)
        if model:
            if len(models) > 1:
                parts = []
                for lab, g in sub.groupby("_series", sort=False):
                    if lab not in filled:  # empty in every panel: the legend says so once
                        continue
                    count = _count_text(g, unit) if int(g["_total"].iloc[0]) > 0 else why(model, lab)
                    parts.append(f"{lab}: {count}" if lab else count)
                ax.set_title("\n".join([model, *parts]), fontsize=8)
            else:
                ax.set_title(model)
        ax.set_xlabel(xlabel)
    axes[0].set_ylabel(ylabel)
    upper = float(np.nanmax(table["_fraction"].to_numpy(float), initial=0.0))
    axes[0].set_ylim(0, min(1.0, upper * 1.12) if upper > 0 else 1.0)
    handles: list[Any] = []
    texts: list[str] = []
    for label in labels:
        name = label or "all"
        rows = table[table["_series"] == label]
        if label in filled:
            handles.append(Patch(facecolor=colours[label]))
            texts.append(f"{name} ({_count_text(rows, unit)})" if len(models) == 1 else name)
        else:
            handles.append(Patch(facecolor="none", edgecolor="none"))
            texts.append(f"{name}: {why_everywhere([(m, label) for m in dict.fromkeys(rows['_model'])])}")
    figure_legend(fig, handles, texts, max_ncol=min(len(texts), 3))
    figure_title(fig, title)
    return fig, axes


@styled
def plot_mistake_severity(
    severity: pd.DataFrame,
    *,
    divergence: "pd.DataFrame | None" = None,
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
    divergence
        The matching ``divergence.csv`` rows (optional): a series without mistakes whose divergence
        counts are all 0 made no species predictions (e.g. kNN on a species-disjoint split) and is
        said to be "species not predicted" rather than "no species mistakes".
    series
        Columns naming a series (default: ``method`` and whichever of ``mode``, ``split`` vary).
    title
        Figure title.

    Returns
    -------
    (Figure, numpy.ndarray)
        ``(n_models,)`` axes. Bars are fractions of the mistakes of the series (pooled over folds); the
        legend (or panel title) gives the number of mistakes (per fold and the number of folds for a
        k-fold run). A series without mistakes draws no bars and is named once, in the legend.
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
    empty_of: dict[tuple[str, str], str] = {}
    if divergence is not None:
        require_columns(divergence, ["divergence", "count"], parameter="divergence", function=function,
                        hint="Pass divergence.csv written by latent evaluate (or None).")
        predicted = _counts_by_series(divergence, "divergence", list(RANK_NAMES) + ["correct"], series)
        for (model, label), total in predicted.groupby(["_model", "_series"], sort=False)["_total"].first().items():
            if int(total) == 0:
                empty_of[(model, label)] = "species not predicted"
    return _grouped_bars(table, "height", heights, ticks, xlabel="LCA height (shared ancestor rank)",
                         ylabel="fraction of mistakes", unit="mistakes", empty="no species mistakes", title=title,
                         empty_of=empty_of)


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
                              ylabel="fraction of test images", unit="images",
                              empty="species not predicted", title=title, highlight="correct")
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
    return None if rows is None else plot_mistake_severity(rows, divergence=context.evaluation_tables("divergence.csv"))


def report_first_divergence(context: Any) -> "tuple[Figure, Any] | None":
    """The first wrong rank of the predictions (``divergence.csv`` of the evaluations)."""
    rows = context.evaluation_tables("divergence.csv")
    return None if rows is None else plot_first_divergence(rows)
