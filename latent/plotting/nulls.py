"""Figures of the probes against their nulls: the observed statistic on its null distribution, per rank.

Inputs (what every probe writes)
--------------------------------
* Observed rows (``DIR/metrics.csv``): long format ``rank, metric, value, ci_low, ci_high, n`` with
  ``null_mean, null_std, z, p_value, permutations`` where a null applies; optional ``probe``, ``model``.
* Null samples (``DIR/<probe>_null.csv``): ``rank, metric, permutation, value``; optional ``probe``,
  ``model`` (several probes or models concatenated).

The null is the species-permutation null of :mod:`latent.probes.base`: the taxonomy's leaves shuffled
among the species. A statistic the taxonomy explains lies far out in the tail its alternative names.
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
    OTHER_COLOR,
    check_int,
    figure_legend,
    figure_title,
    grid_shape,
    hide_unused,
    markers,
    model_values,
    new_figure,
    palette,
    require_columns,
    styled,
)

__all__ = ["plot_null_distributions", "plot_probe_summary", "format_p"]

log = logging.getLogger(__name__)

RANK_ORDER = tuple(RANK_NAMES) + ("all",)
#: The observed value when one model is drawn (Okabe-Ito vermillion).
OBSERVED_COLOR = "#D55E00"


def format_p(p: float, permutations: "float | None" = None) -> str:
    """``"p = 0.012"``; at the smallest value a permutation test can give, ``"p = 0.001 (min)"``."""
    if p is None or not np.isfinite(p):
        return "p n/a"
    text = f"p = {p:.2g}" if p < 0.01 else f"p = {p:.3f}".rstrip("0").rstrip(".") if p < 1 else "p = 1"
    if permutations and np.isfinite(permutations) and permutations > 0 and p <= 1.0 / (permutations + 1) + 1e-12:
        text += " (min)"
    return text


def _wrap(text: str, ax: Any, fontsize: float = 8.0) -> str:
    """``text`` broken at spaces into lines that fit the width of ``ax``'s panel."""
    import textwrap

    fig, spec = ax.get_figure(), ax.get_subplotspec()
    ncols = spec.get_gridspec().ncols if spec is not None else 1
    inches = (fig.get_figwidth() if fig is not None else 2.5) / ncols - 0.2
    width = max(12, int(inches * 72.0 / (fontsize * 0.58)))
    return "\n".join(textwrap.wrap(text, width, break_on_hyphens=False, break_long_words=False)) or text


def _rank_sort_key(rank: str) -> int:
    return RANK_ORDER.index(rank) if rank in RANK_ORDER else len(RANK_ORDER)


def _key_columns(*frames: pd.DataFrame) -> list[str]:
    return [c for c in ("probe",) if all(c in f.columns for f in frames)]


def _filter(frame: pd.DataFrame, column: str, values: "Sequence[str] | str | None") -> pd.DataFrame:
    if values is None:
        return frame
    values = [values] if isinstance(values, str) else list(values)
    return frame[frame[column].astype(str).isin(values)]


@styled
def plot_null_distributions(
    null: pd.DataFrame,
    observed: pd.DataFrame,
    *,
    metrics: "Sequence[str] | str | None" = None,
    ranks: "Sequence[str] | str | None" = None,
    max_cols: int = 4,
    bins: int = 30,
    title: "str | None" = "Observed statistics against the species-permutation null",
) -> tuple[Figure, np.ndarray]:
    """One panel per statistic and rank: the null histogram and the observed value (vertical line).

    Parameters
    ----------
    null
        Null samples: ``rank, metric, permutation, value`` (optional ``probe``, ``model``).
    observed
        Observed rows: ``rank, metric, value`` and, where present, ``p_value``, ``z``,
        ``permutations`` (optional ``probe``, ``model``). ``probe`` and ``model`` match rows to null
        samples only when both tables have the column.
    metrics, ranks
        Keep only these metrics / ranks (default all in ``null``).
    max_cols
        Panels per row.
    bins
        Histogram bins (shared by the models of a panel).
    title
        Figure title.

    Returns
    -------
    (Figure, numpy.ndarray)
        The panels in order (metric, then rank from kingdom to species and ``all``). The title of each
        panel gives the p-value and z of every model.
    """
    function = "plot_null_distributions"
    require_columns(null, ["rank", "metric", "permutation", "value"], parameter="null", function=function,
                    hint="Pass a probe's null samples table (<probe>_null.csv).")
    require_columns(observed, ["rank", "metric", "value"], parameter="observed", function=function,
                    hint="Pass the probe's rows (metrics.csv).")
    max_cols = check_int("max_cols", max_cols, minimum=1, function=function)
    bins = check_int("bins", bins, minimum=2, function=function)
    samples = _filter(_filter(null, "metric", metrics), "rank", ranks).copy()
    samples = samples[np.isfinite(samples["value"].to_numpy(float))]
    if samples.empty:
        raise InputError(f"The 'null' table of {function} has no finite samples"
                         f"{' for the metrics/ranks asked' if metrics or ranks else ''}. Metrics present: "
                         f"{format_list(sorted(set(null['metric'].astype(str))))}.")
    keys = _key_columns(samples, observed)
    samples["_model"] = model_values(samples)
    obs = observed.copy()
    # Models are matched only when both tables name them (a probe's null CSV has no model column).
    obs["_model"] = model_values(obs) if "model" in samples.columns else ""
    panel_keys = samples[keys + ["metric", "rank"]].drop_duplicates()
    metric_order = {m: i for i, m in enumerate(dict.fromkeys(samples["metric"].astype(str)))}
    panel_keys = panel_keys.assign(_m=panel_keys["metric"].map(metric_order),
                                   _r=panel_keys["rank"].map(_rank_sort_key)).sort_values(keys + ["_m", "_r"])
    models = list(dict.fromkeys(samples["_model"]))
    colours = dict(zip(models, palette(len(models))))
    n_panels = len(panel_keys)
    if n_panels > 48:
        log.warning("%s: %d panels; pass metrics= or ranks= to keep the figure readable", function, n_panels)
    nrows, ncols = grid_shape(n_panels, max_cols)
    fig, axes = new_figure(nrows, ncols, panel=(2.5, 2.0 + 0.17 * max(0, len(models) - 1)), extra=(0.2, 0.5))
    flat = axes.ravel()
    for ax, key in zip(flat, panel_keys.itertuples(index=False)):
        spec = dict(zip(keys + ["metric", "rank"], key[: len(keys) + 2]))
        mask = np.ones(len(samples), dtype=bool)
        omask = np.ones(len(obs), dtype=bool)
        for c, v in spec.items():
            mask &= (samples[c].astype(str) == str(v)).to_numpy()
            omask &= (obs[c].astype(str) == str(v)).to_numpy()
        sub, osub = samples[mask], obs[omask]
        values = sub["value"].to_numpy(float)
        observed_values = osub["value"].to_numpy(float)
        lo = np.nanmin(np.r_[values, observed_values])
        hi = np.nanmax(np.r_[values, observed_values])
        edges = np.histogram_bin_edges(values, bins=bins)
        lines = []
        for model in models:
            v = sub.loc[sub["_model"] == model, "value"].to_numpy(float)
            colour = OTHER_COLOR if len(models) == 1 else colours[model]
            if v.size:
                ax.hist(v, bins=edges, color=colour, alpha=0.85 if len(models) == 1 else 0.45,
                        edgecolor="none")
            row = osub[osub["_model"] == model]
            if row.empty:
                lines.append(f"{model + ': ' if model else ''}observed missing")
                continue
            if len(row) > 1:
                log.warning("%s: %d observed rows for %s; the first is drawn (add a 'model' or 'probe' column to "
                            "both tables to tell them apart)", function, len(row), spec)
            r = row.iloc[0]
            ax.axvline(float(r["value"]), color=colours[model] if len(models) > 1 else OBSERVED_COLOR,
                       linewidth=1.8)
            p = float(r["p_value"]) if "p_value" in row.columns else np.nan
            z = float(r["z"]) if "z" in row.columns else np.nan
            perms = float(r["permutations"]) if "permutations" in row.columns else float(len(v))
            text = format_p(p, perms)
            if np.isfinite(z):
                text += f", z = {z:.3g}"
            lines.append(f"{model + ': ' if model else ''}{text}")
        pad = 0.06 * (hi - lo) if hi > lo else 0.5 * max(abs(hi), 1e-3)
        ax.set_xlim(lo - pad, hi + pad)
        name = f"{spec['probe']}: " if "probe" in spec else ""
        head = _wrap(f"{name}{spec['metric']} ({spec['rank']})", ax)
        ax.set_title(head + "\n" + "\n".join(lines), fontsize=8)
        ax.set_yticks([])
        ax.spines["left"].set_visible(False)
        ax.tick_params(axis="x", labelsize=7)
    hide_unused(axes, n_panels)
    handles: list[Any] = []
    labels: list[str] = []
    if len(models) == 1:
        handles += [Patch(facecolor=OTHER_COLOR), Line2D([], [], color=OBSERVED_COLOR, linewidth=1.8)]
        labels += [f"null ({samples['permutation'].nunique():,} permutations)", "observed"]
    else:
        for model in models:
            handles.append(Patch(facecolor=colours[model], alpha=0.6))
            labels.append(f"{model or 'model'}: null (bars), observed (line)")
    figure_legend(fig, handles, labels, max_ncol=min(len(labels), 3))
    figure_title(fig, title)
    return fig, flat[:n_panels]


@styled
def plot_probe_summary(
    rows: pd.DataFrame,
    *,
    metrics: "Sequence[str] | str | None" = None,
    alpha: float = 0.05,
    max_cols: int = 3,
    title: "str | None" = "Probes per rank: observed vs null",
) -> tuple[Figure, np.ndarray]:
    """Per-rank probe summary: observed value against the null mean (+- 2 null sd), z and p annotated.

    One panel per (probe, metric); ranks on the x axis (``all`` last). A filled marker is
    significant at ``alpha`` (permutation p-value), a hollow one is not. With one model every point is
    annotated with its z and p.

    Parameters
    ----------
    rows
        Probe rows: ``rank, metric, value, null_mean, null_std, p_value`` (``z``, ``ci_low``,
        ``ci_high``, ``probe``, ``model`` optional). Rows without a null (NaN ``null_mean``) are left out.
    metrics
        Keep only these metrics.
    alpha
        Significance level of the filled markers.
    max_cols, title
        Panels per row; figure title.

    Returns
    -------
    (Figure, numpy.ndarray)
        The panels in order.
    """
    function = "plot_probe_summary"
    require_columns(rows, ["rank", "metric", "value", "null_mean", "null_std", "p_value"], parameter="rows",
                    function=function, hint="Pass probe rows with their null columns (metrics.csv of a probe).")
    max_cols = check_int("max_cols", max_cols, minimum=1, function=function)
    if isinstance(alpha, bool) or not isinstance(alpha, (int, float, np.number)) or not 0 < alpha < 1:
        raise InputError(f"The 'alpha' parameter of {function} must be a number in (0, 1). Got {alpha!r} instead.")
    frame = _filter(rows, "metric", metrics).copy()
    frame = frame[np.isfinite(frame["null_mean"].to_numpy(float)) & np.isfinite(frame["value"].to_numpy(float))]
    if frame.empty:
        raise InputError(f"The 'rows' table of {function} has no rows with an observed value and a null mean "
                         f"(run the probes with permutations > 0).")
    frame["_model"] = model_values(frame)
    keys = ["probe", "metric"] if "probe" in frame.columns else ["metric"]
    panels = list(dict.fromkeys(map(tuple, frame[keys].astype(str).to_numpy())))
    models = list(dict.fromkeys(frame["_model"]))
    colours, shapes = palette(len(models)), markers(len(models))
    nrows, ncols = grid_shape(len(panels), max_cols)
    n_ranks = frame["rank"].nunique()
    fig, axes = new_figure(nrows, ncols, panel=(max(2.6, 0.42 * n_ranks + 0.8), 2.5), extra=(0.2, 0.6))
    flat = axes.ravel()
    width = 0.55
    for ax, panel in zip(flat, panels):
        mask = np.ones(len(frame), dtype=bool)
        for c, v in zip(keys, panel):
            mask &= (frame[c].astype(str) == v).to_numpy()
        sub = frame[mask]
        ranks = sorted(set(sub["rank"].astype(str)), key=_rank_sort_key)
        x_of = {r: i for i, r in enumerate(ranks)}
        for j, model in enumerate(models):
            m = sub[sub["_model"] == model]
            if m.empty:
                continue
            off = (j - (len(models) - 1) / 2) * (width / max(1, len(models)))
            x = m["rank"].astype(str).map(x_of).to_numpy(float) + off
            null_mean = m["null_mean"].to_numpy(float)
            null_sd = np.nan_to_num(m["null_std"].to_numpy(float), nan=0.0)
            ax.vlines(x, null_mean - 2 * null_sd, null_mean + 2 * null_sd, color=OTHER_COLOR, linewidth=5,
                      zorder=1)
            ax.scatter(x, null_mean, marker="_", color="#555555", s=60, zorder=2, linewidths=1.2)
            y = m["value"].to_numpy(float)
            if {"ci_low", "ci_high"} <= set(m.columns):
                lo = np.nan_to_num(y - m["ci_low"].to_numpy(float), nan=0.0).clip(min=0)
                hi = np.nan_to_num(m["ci_high"].to_numpy(float) - y, nan=0.0).clip(min=0)
                if (lo > 0).any() or (hi > 0).any():
                    ax.errorbar(x, y, yerr=np.vstack([lo, hi]), fmt="none", ecolor=colours[j], elinewidth=1,
                                zorder=3)
            p = m["p_value"].to_numpy(float)
            significant = np.isfinite(p) & (p < alpha)
            ax.scatter(x[significant], y[significant], marker=shapes[j], s=28, color=colours[j], zorder=4)
            ax.scatter(x[~significant], y[~significant], marker=shapes[j], s=28, facecolors="white",
                       edgecolors=colours[j], linewidths=1.2, zorder=4)
            if len(models) == 1:
                z_values = m["z"].to_numpy(float) if "z" in m.columns else np.full(len(m), np.nan)
                # Above everything drawn at that rank (the point, its interval and the null band).
                top = np.fmax(y, null_mean + 2 * null_sd)
                if {"ci_high"} <= set(m.columns):
                    top = np.fmax(top, m["ci_high"].to_numpy(float))
                for xi, yi, zi, pi in zip(x, top, z_values, p):
                    parts = [f"z={zi:.3g}" if abs(zi) < 1000 else f"z={zi:.1e}"] if np.isfinite(zi) else []
                    if np.isfinite(pi):
                        parts.append(format_p(pi).replace(" = ", "="))
                    if parts:
                        ax.annotate("\n".join(parts), (xi, yi), xytext=(0, 5), textcoords="offset points",
                                    ha="center", va="bottom", fontsize=5.5, color="#333333", linespacing=1.0)
        ax.set_xticks(range(len(ranks)), ranks, rotation=35, ha="right", rotation_mode="anchor")
        ax.set_xlim(-0.6, len(ranks) - 0.4)
        ax.margins(y=0.15)
        ax.set_title(_wrap(": ".join(panel), ax, fontsize=8.5), fontsize=8.5)
        ax.grid(axis="y")
        ax.set_axisbelow(True)
    hide_unused(axes, len(panels))
    handles: list[Any] = [Line2D([], [], color=OTHER_COLOR, linewidth=5), ]
    labels = ["null mean \u00b1 2 sd"]
    for j, model in enumerate(models):
        handles.append(Line2D([], [], marker=shapes[j], linestyle="", color=colours[j]))
        labels.append(f"{model or 'observed'}")
    handles.append(Line2D([], [], marker="o", linestyle="", markerfacecolor="white", markeredgecolor="#333333"))
    labels.append(f"hollow: p \u2265 {alpha:g}")
    figure_legend(fig, handles, labels, max_ncol=min(len(labels), 5))
    figure_title(fig, title)
    return fig, flat[: len(panels)]


# ------------------------------------------------------------------------------ report adapters
#: The probes whose whole-hierarchy null samples (``<probe>_null.csv``) the report's null figure shows.
NULL_PROBES = ("alignment", "dendrogram", "distances")


def report_probe_summary(context: Any) -> "tuple[Figure, np.ndarray] | None":
    """The report's evidence figure: each verdict's and supporting row against its null (None without nulls).

    ``context`` is a :class:`latent.figures.FigureContext`.
    """
    from latent.verdict import evidence_rows

    rows = context.probe_metrics()
    if rows is None:
        return None
    with_null = evidence_rows(rows)
    with_null = with_null[with_null["null_mean"].notna()] if "null_mean" in with_null else with_null.iloc[0:0]
    return plot_probe_summary(with_null) if len(with_null) else None


def report_nulls(context: Any, model: Any) -> "tuple[Figure, np.ndarray] | None":
    """One model's whole-hierarchy statistics against their null samples (None without null samples)."""
    nulls = [t for t in (context.probe_table(model, f"{p}_null.csv") for p in NULL_PROBES) if t is not None]
    rows = context.probe_metrics()
    if not nulls or rows is None:
        return None
    observed = rows[rows["model"] == model.label]
    null = pd.concat(nulls, ignore_index=True)
    null = null[null["rank"] == "all"]
    if not len(null):
        return None
    return plot_null_distributions(null, observed[observed["rank"] == "all"])
