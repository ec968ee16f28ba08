"""Figures of the probes against their nulls: the observed statistic on its null distribution, per rank.

Inputs (what every probe writes)
--------------------------------
* Observed rows (``DIR/metrics.csv``): long format ``rank, metric, value, ci_low, ci_high, n`` with
  ``null_mean, null_std, z, p_value, permutations`` where a null applies; optional ``probe``, ``model``.
* Null samples (``DIR/<probe>_null.csv``): ``rank, metric, permutation, value``; optional ``probe``,
  ``model`` (several probes or models concatenated).

The null is the species-permutation null of :mod:`latent.probes.base`: the taxonomy's leaves shuffled
among the species. A statistic the taxonomy explains lies far out in the tail its alternative names.

The probe summary draws each null as its central 95% (the 2.5th-97.5th percentiles of its samples; the
mean +- 1.96 sd, clipped to the statistic's range, only where no samples exist), marks on every panel the
side that supports the taxonomy (:func:`taxonomy_directions`, read from :mod:`latent.verdict` and the probe
registry), and fills a marker by the one significance convention: p (the verdict's adjusted p where the
rows carry it) <= :data:`latent.verdict.ALPHA` on that side.
"""

from __future__ import annotations

import logging
import re
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

__all__ = ["plot_null_distributions", "plot_probe_summary", "format_p", "null_intervals", "statistic_range",
           "taxonomy_directions"]

log = logging.getLogger(__name__)

RANK_ORDER = tuple(RANK_NAMES) + ("all",)
#: The observed value when one model is drawn (Okabe-Ito vermillion).
OBSERVED_COLOR = "#D55E00"
#: A null interval computed from the mean and sd (no null samples): lighter than the sampled one.
NORMAL_NULL_COLOR = "#DDDDDD"


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


#: The bounds of the statistics the probes report: a null interval drawn from its mean and sd is clipped
#: to them (:func:`statistic_range`; names not listed here are matched by their words).
STATISTIC_RANGES: dict[str, tuple[float, float]] = {
    "linear_accuracy": (0.0, 1.0), "silhouette": (-1.0, 1.0), "fmi": (0.0, 1.0), "ari": (-1.0, 1.0),
    "clade_recovery": (0.0, 1.0), "cka_taxonomy": (0.0, 1.0), "calinski_harabasz": (0.0, np.inf),
    "nc1": (0.0, np.inf), "cdnv": (0.0, np.inf), "rank_distance_ratio": (0.0, np.inf),
    "intra_inter_ratio": (0.0, np.inf),
}

#: Directions the taxonomy predicts for statistics that are not verdict or evidence rows (those come from
#: :mod:`latent.verdict` and the probe registry, :func:`taxonomy_directions`).
KNOWN_DIRECTIONS: dict[str, str] = {"nc1": "less", "cdnv": "less", "intra_inter_ratio": "less",
                                    "rank_distance_ratio": "less"}

#: Columns that tell null samples of one probe apart beyond ``rank`` and ``metric`` (matched when both the
#: rows and that probe's null samples have them).
NULL_MATCH_COLUMNS = ("model", "split", "level")

DIRECTION_TEXT = {"less": "\u2193 lower = taxonomy", "greater": "\u2191 higher = taxonomy"}


def statistic_range(metric: str) -> tuple[float, float]:
    """``(low, high)``: the values a statistic can take (``(-inf, inf)`` when unknown).

    Accuracies, recoveries, FMI and CKA lie in [0, 1]; correlations and silhouettes in [-1, 1]; ratios,
    distances and dispersions (NC1, CDNV, Calinski-Harabasz) are >= 0.
    """
    name = str(metric).lower()
    if name in STATISTIC_RANGES:
        return STATISTIC_RANGES[name]
    words = set(re.split(r"[^a-z0-9]+", name))
    if words & {"accuracy", "recall", "precision", "f1", "recovery", "fmi", "cka", "top1", "top5"}:
        return (0.0, 1.0)
    if words & {"corr", "correlation", "spearman", "pearson", "mantel", "rho", "tau", "gamma", "silhouette", "ari"}:
        return (-1.0, 1.0)
    if words & {"ratio", "distance", "delta", "distortion", "nc1", "cdnv", "harabasz"}:
        return (0.0, np.inf)
    return (-np.inf, np.inf)


def taxonomy_directions() -> dict[tuple[str, str], str]:
    """``{(probe, metric): "less" | "greater"}``: the side of the null the taxonomy predicts.

    Read from :mod:`latent.verdict` (:data:`~latent.verdict.PRIMARY`, :data:`~latent.verdict.PRIMARY_ALL`)
    and the probe registry's evidence rows (:func:`latent.verdict.supporting_rows`).
    """
    from latent.verdict import PRIMARY, PRIMARY_ALL, supporting_rows

    out = {(PRIMARY[0], PRIMARY[1]): PRIMARY[2], (PRIMARY_ALL[0], PRIMARY_ALL[1]): PRIMARY_ALL[2]}
    for probe, metric, _, direction, _ in supporting_rows():
        out.setdefault((probe, metric), direction)
    return out


def _strings(frame: pd.DataFrame, columns: Sequence[str]) -> pd.Series:
    """One string key per row from ``columns`` (NaN as ``""``)."""
    if not columns:
        return pd.Series([""] * len(frame), index=frame.index, dtype=object)
    parts = frame[list(columns)].astype(object)
    parts = parts.where(parts.notna(), "").astype(str)
    key = parts.iloc[:, 0]
    for column in parts.columns[1:]:
        key = key + "\x1f" + parts[column]
    return key


def null_intervals(rows: pd.DataFrame, null: "pd.DataFrame | None" = None, *,
                   coverage: float = 0.95) -> pd.DataFrame:
    """The central ``coverage`` interval of each row's null, clipped to the statistic's range.

    From the null samples where they match the row (the 2.5th and 97.5th percentiles for 95%), else from
    the null's mean and sd (``mean +- 1.96 sd`` for 95%, a normal approximation).

    Parameters
    ----------
    rows
        ``(m, ...)`` probe rows: ``rank, metric`` and ``null_mean, null_std`` (``probe`` and the
        :data:`NULL_MATCH_COLUMNS` optional).
    null
        Null samples ``rank, metric, value`` (or ``null``, as the ``levels`` probe writes), optional
        ``probe``, ``permutation`` and :data:`NULL_MATCH_COLUMNS`; several probes/models concatenated.
    coverage
        Central mass of the interval, in (0, 1).

    Returns
    -------
    pandas.DataFrame
        ``rows`` with ``null_low``, ``null_high`` (``(m,)`` floats, NaN when no null) and ``null_source``
        (``"samples"``, ``"normal"`` or ``""``) and ``null_samples`` (samples behind it; 0 for normal).
    """
    from statistics import NormalDist

    if not 0 < coverage < 1:
        raise InputError(f"The 'coverage' parameter of null_intervals must be in (0, 1). Got {coverage!r}.")
    out = rows.copy()
    tail = (1.0 - coverage) / 2.0
    low = np.full(len(out), np.nan)
    high = np.full(len(out), np.nan)
    count = np.zeros(len(out), dtype=np.int64)
    source = np.full(len(out), "", dtype=object)
    if null is not None and len(null) and len(out):
        samples = null
        if "null" in samples.columns:  # the levels probe's samples are in a column "null"
            samples = samples.assign(value=samples["value"].fillna(samples["null"]) if "value" in samples.columns
                                     else samples["null"]).drop(columns="null")
        require_columns(samples, ["rank", "metric", "value"], parameter="null", function="null_intervals",
                        hint="Pass null samples (<probe>_null.csv).")
        samples = samples[np.isfinite(pd.to_numeric(samples["value"], errors="coerce").to_numpy(float))]
        by_probe = "probe" in samples.columns and "probe" in out.columns
        groups = samples.groupby(samples["probe"].astype(str), sort=False) if by_probe else [("", samples)]
        for probe, group in groups:
            group = group.dropna(axis=1, how="all")
            keys = ["rank", "metric"] + [c for c in NULL_MATCH_COLUMNS if c in group.columns and c in out.columns]
            where = (out["probe"].astype(str) == probe).to_numpy() if by_probe else np.ones(len(out), bool)
            if not where.any():
                continue
            values = pd.to_numeric(group["value"]).astype(float)
            grouped = values.groupby(_strings(group, keys).to_numpy())
            lo, hi, n = grouped.quantile(tail), grouped.quantile(1.0 - tail), grouped.count()
            row_keys = _strings(out.loc[where], keys).to_numpy()
            idx = np.flatnonzero(where)
            found = np.isin(row_keys, lo.index.to_numpy())
            low[idx[found]] = lo.reindex(row_keys[found]).to_numpy(float)
            high[idx[found]] = hi.reindex(row_keys[found]).to_numpy(float)
            count[idx[found]] = n.reindex(row_keys[found]).to_numpy(np.int64)
            source[idx[found]] = "samples"
    if {"null_mean", "null_std"} <= set(out.columns):
        mean = pd.to_numeric(out["null_mean"], errors="coerce").to_numpy(float)
        sd = pd.to_numeric(out["null_std"], errors="coerce").to_numpy(float)
        z = NormalDist().inv_cdf(1.0 - tail)
        normal = (source == "") & np.isfinite(mean) & np.isfinite(sd)
        low[normal], high[normal] = mean[normal] - z * sd[normal], mean[normal] + z * sd[normal]
        source[normal] = "normal"
    bounds = np.array([statistic_range(m) for m in out["metric"].astype(str)]).reshape(-1, 2)
    out["null_low"] = np.clip(low, bounds[:, 0], bounds[:, 1])
    out["null_high"] = np.clip(high, bounds[:, 0], bounds[:, 1])
    out["null_source"] = source
    out["null_samples"] = count
    return out


def _partitions(frame: pd.DataFrame) -> tuple[dict[tuple[str, str], tuple[str, ...]], set[tuple[str, str]]]:
    """``{(model, rank): ranks of its partition}`` and the ``(model, rank)`` with one taxon.

    A partition comes from a row's ``level`` when it names ranks joined by ``=`` (the ``levels`` probe:
    ``"order=family"``: one partition of the species). One-taxon ranks: the ``levels`` probe's ``n_taxa``
    (rows with a partition) where there are such rows, else the largest ``n_taxa`` of the rank.
    """
    level_of: dict[tuple[str, str], tuple[str, ...]] = {}
    has_level = np.zeros(len(frame), dtype=bool)
    if "level" in frame.columns:
        for i, (model, rank, level) in enumerate(zip(frame["_model"], frame["rank"].astype(str), frame["level"])):
            if not isinstance(level, str):
                continue
            parts = tuple(sorted((p.strip() for p in level.split("=")), key=_rank_sort_key))
            if rank in parts and all(p in RANK_NAMES for p in parts):
                level_of.setdefault((model, rank), parts)
                has_level[i] = True
    single: set[tuple[str, str]] = set()
    if "n_taxa" in frame.columns:
        taxa = pd.to_numeric(frame["n_taxa"], errors="coerce")
        for model in dict.fromkeys(frame["_model"]):
            mine = (frame["_model"] == model).to_numpy()
            use = mine & has_level if (mine & has_level).any() else mine
            most = taxa[use].groupby(frame["rank"].astype(str)[use]).max()
            single |= {(model, r) for r, n in most.items() if r != "all" and np.isfinite(n) and n <= 1}
    return level_of, single


def _fill_p(frame: pd.DataFrame) -> tuple[np.ndarray, bool]:
    """The p-value that decides each marker (adjusted where the rows carry it) and whether any is adjusted."""
    p = pd.to_numeric(frame["p_value"], errors="coerce").to_numpy(float)
    if "p_adjusted" in frame.columns:
        adjusted = pd.to_numeric(frame["p_adjusted"], errors="coerce").to_numpy(float)
        use = np.isfinite(adjusted)
        if use.any():
            return np.where(use, adjusted, p), True
    return p, False


@styled
def plot_probe_summary(
    rows: pd.DataFrame,
    *,
    null: "pd.DataFrame | None" = None,
    metrics: "Sequence[str] | str | None" = None,
    alpha: "float | None" = None,
    directions: "Mapping[Any, str] | None" = None,
    max_cols: int = 3,
    title: "str | None" = "Probes per rank: observed vs null",
) -> tuple[Figure, np.ndarray]:
    """Per-rank probe summary: the observed value against the central 95% of its null, z and p annotated.

    One panel per (probe, metric); ranks on the x axis (``all`` last). The grey bar is the central 95%
    of the null: the 2.5th-97.5th percentiles of the null samples (``null``), or, for rows without
    samples, ``null mean +- 1.96 null sd`` (drawn lighter and said so in the legend); both clipped to
    the statistic's range (:func:`statistic_range`). Each panel says which side supports the taxonomy
    ("lower = taxonomy" / "higher = taxonomy"). A marker is filled when its p-value (``p_adjusted``
    where the rows have it, else ``p_value``) is <= ``alpha`` and the value lies on that side of the null
    mean; hollow otherwise. Ranks with one partition of the species (a ``level`` such as
    ``"order=family"``) are one column, ``"order = family"``; ranks with one taxon are left out and
    named in the legend's title.

    Parameters
    ----------
    rows
        ``(m, ...)`` probe rows: ``rank, metric, value, null_mean, null_std, p_value`` (``z``,
        ``ci_low``, ``ci_high``, ``p_adjusted``, ``level``, ``n_taxa``, ``direction``, ``probe``, ``model``
        optional). Rows without a null (NaN ``null_mean``) are not drawn (their ``level``/``n_taxa``
        still name the partitions).
    null
        Null samples (``rank, metric, value`` or ``null``; ``probe``, ``model``, ``split``, ``level``
        optional), see :func:`null_intervals`. None: every interval from the mean and sd.
    metrics
        Keep only these metrics.
    alpha
        Significance level of the filled markers (default :data:`latent.verdict.ALPHA`).
    directions
        ``{(probe, metric) or metric: "less" | "greater"}`` overriding the directions of
        :func:`taxonomy_directions` (a ``direction`` column in ``rows`` wins over both).
    max_cols, title
        Panels per row; figure title.

    Returns
    -------
    (Figure, numpy.ndarray)
        The panels in order.
    """
    from latent.verdict import ALPHA

    function = "plot_probe_summary"
    require_columns(rows, ["rank", "metric", "value", "null_mean", "null_std", "p_value"], parameter="rows",
                    function=function, hint="Pass probe rows with their null columns (metrics.csv of a probe).")
    max_cols = check_int("max_cols", max_cols, minimum=1, function=function)
    alpha = ALPHA if alpha is None else alpha
    if isinstance(alpha, bool) or not isinstance(alpha, (int, float, np.number)) or not 0 < alpha < 1:
        raise InputError(f"The 'alpha' parameter of {function} must be a number in (0, 1). Got {alpha!r} instead.")
    frame = _filter(rows, "metric", metrics).copy()
    frame["rank"] = frame["rank"].astype(str)
    frame["_model"] = model_values(frame)
    level_of, single = _partitions(frame)
    frame["_label"] = [" = ".join(level_of.get((m, r), (r,))) for m, r in zip(frame["_model"], frame["rank"])]
    frame["_order"] = [min(_rank_sort_key(p) for p in lab.split(" = ")) for lab in frame["_label"]]
    one_taxon = np.array([(m, r) in single for m, r in zip(frame["_model"], frame["rank"])], dtype=bool)
    dropped = sorted(set(frame.loc[one_taxon, "_label"]), key=lambda lab: _rank_sort_key(lab.split(" = ")[0]))
    frame = frame[~one_taxon]
    frame = frame[np.isfinite(pd.to_numeric(frame["null_mean"], errors="coerce").to_numpy(float))
                  & np.isfinite(pd.to_numeric(frame["value"], errors="coerce").to_numpy(float))]
    if frame.empty:
        raise InputError(f"The 'rows' table of {function} has no rows with an observed value and a null mean "
                         f"(run the probes with permutations > 0).")
    keys = ["probe", "metric"] if "probe" in frame.columns else ["metric"]
    # one partition, one column: the first rank's row (the same number at every rank of the partition)
    frame["_rank_index"] = frame["rank"].map(_rank_sort_key)
    # rows that differ otherwise (a split, a level that is not a partition such as "image") are kept apart
    frame["_variant"] = [str(v) if isinstance(v, str) and (m, r) not in level_of else ""
                         for v, m, r in zip(frame["level"] if "level" in frame.columns else [None] * len(frame),
                                            frame["_model"], frame["rank"])]
    subset = ["_model", *keys, "_label", "_variant"] + [c for c in ("split",) if c in frame.columns]
    frame = frame.sort_values("_rank_index", kind="stable").drop_duplicates(subset).sort_index()
    frame = null_intervals(frame, null)
    known = taxonomy_directions()
    if directions:
        known.update({(k if isinstance(k, tuple) else ("", str(k))): v for k, v in directions.items()})

    def direction_of(panel: tuple[str, ...], sub: pd.DataFrame) -> str:
        if "direction" in sub.columns:
            given = [d for d in sub["direction"] if d in DIRECTION_TEXT]
            if given:
                return given[0]
        metric = panel[-1]
        probe = panel[0] if len(panel) == 2 else ""
        if (probe, metric) in known:
            return known[(probe, metric)]
        if ("", metric) in known:
            return known[("", metric)]
        candidates = {d for (_, m), d in known.items() if m == metric}
        if len(candidates) == 1 and not probe:
            return candidates.pop()
        return KNOWN_DIRECTIONS.get(metric, "")

    panels = list(dict.fromkeys(map(tuple, frame[keys].astype(str).to_numpy())))
    models = list(dict.fromkeys(frame["_model"]))
    colours, shapes = palette(len(models)), markers(len(models))
    nrows, ncols = grid_shape(len(panels), max_cols)
    n_ranks = frame["_label"].nunique()
    widest = max(len(lab) for lab in frame["_label"])
    fig, axes = new_figure(nrows, ncols, panel=(max(2.6, 0.42 * n_ranks + 0.8), 2.7 + 0.05 * max(0, widest - 8)),
                           extra=(0.2, 0.8 + 0.15 * bool(dropped)))
    flat = axes.ravel()
    width = 0.55
    any_adjusted = False
    sources: set[str] = set()
    for ax, panel in zip(flat, panels):
        mask = np.ones(len(frame), dtype=bool)
        for c, v in zip(keys, panel):
            mask &= (frame[c].astype(str) == v).to_numpy()
        sub = frame[mask]
        direction = direction_of(panel, sub)
        labels = sorted(set(sub["_label"]), key=lambda lab: (sub.loc[sub["_label"] == lab, "_order"].min(), lab))
        x_of = {lab: i for i, lab in enumerate(labels)}
        for j, model in enumerate(models):
            m = sub[sub["_model"] == model]
            if m.empty:
                continue
            off = (j - (len(models) - 1) / 2) * (width / max(1, len(models)))
            x = m["_label"].map(x_of).to_numpy(float) + off
            null_mean = m["null_mean"].to_numpy(float)
            null_low, null_high = m["null_low"].to_numpy(float), m["null_high"].to_numpy(float)
            source = m["null_source"].to_numpy(object)
            for kind, colour, lw in (("samples", OTHER_COLOR, 5), ("normal", NORMAL_NULL_COLOR, 3)):
                use = (source == kind) & np.isfinite(null_low) & np.isfinite(null_high)
                if use.any():
                    sources.add(kind)
                    ax.vlines(x[use], null_low[use], null_high[use], color=colour, linewidth=lw, zorder=1)
            ax.scatter(x, null_mean, marker="_", color="#555555", s=60, zorder=2, linewidths=1.2)
            y = m["value"].to_numpy(float)
            if {"ci_low", "ci_high"} <= set(m.columns):
                lo = np.nan_to_num(y - m["ci_low"].to_numpy(float), nan=0.0).clip(min=0)
                hi = np.nan_to_num(m["ci_high"].to_numpy(float) - y, nan=0.0).clip(min=0)
                if (lo > 0).any() or (hi > 0).any():
                    ax.errorbar(x, y, yerr=np.vstack([lo, hi]), fmt="none", ecolor=colours[j], elinewidth=1,
                                zorder=3)
            p, adjusted = _fill_p(m)
            any_adjusted |= adjusted
            side = (y < null_mean) if direction == "less" else (y > null_mean) if direction == "greater" else \
                np.ones(len(y), dtype=bool)
            significant = np.isfinite(p) & (p <= alpha) & side
            ax.scatter(x[significant], y[significant], marker=shapes[j], s=28, color=colours[j], zorder=4)
            ax.scatter(x[~significant], y[~significant], marker=shapes[j], s=28, facecolors="white",
                       edgecolors=colours[j], linewidths=1.2, zorder=4)
            if len(models) == 1:
                z_values = m["z"].to_numpy(float) if "z" in m.columns else np.full(len(m), np.nan)
                # Above everything drawn at that rank (the point, its interval and the null interval).
                top = np.fmax(y, null_high)
                if "ci_high" in m.columns:
                    top = np.fmax(top, m["ci_high"].to_numpy(float))
                testable = (m["testable"].astype(str).str.lower() != "false").to_numpy() if "testable" in m.columns \
                    else np.ones(len(m), dtype=bool)
                for xi, yi, zi, pi, ti in zip(x, top, z_values, p, testable):
                    parts = [f"z={zi:.3g}" if abs(zi) < 1000 else f"z={zi:.1e}"] if np.isfinite(zi) else []
                    if np.isfinite(pi):
                        parts.append(("adj " if adjusted else "") + format_p(pi).replace(" = ", "="))
                    elif not ti:
                        parts.append("not testable")
                    if parts:
                        ax.annotate("\n".join(parts), (xi, yi), xytext=(0, 5), textcoords="offset points",
                                    ha="center", va="bottom", fontsize=5.5, color="#333333", linespacing=1.0)
        ax.set_xticks(range(len(labels)), [lab.replace(" = ", " =\n") if len(lab) > 14 else lab for lab in labels],
                      rotation=35 if len(labels) > 2 else 0, ha="right" if len(labels) > 2 else "center",
                      rotation_mode="anchor")
        ax.set_xlim(-0.6, len(labels) - 0.4)
        ax.margins(y=0.15)
        head = _wrap(": ".join(panel), ax, fontsize=8.5)
        ax.set_title(head + (f"\n{DIRECTION_TEXT[direction]}" if direction else ""), fontsize=8.5)
        ax.grid(axis="y")
        ax.set_axisbelow(True)
    hide_unused(axes, len(panels))
    handles: list[Any] = []
    labels_: list[str] = []
    if "samples" in sources:
        handles.append(Line2D([], [], color=OTHER_COLOR, linewidth=5))
        labels_.append("null: central 95% (2.5th\u201397.5th percentile)")
    if "normal" in sources:
        handles.append(Line2D([], [], color=NORMAL_NULL_COLOR, linewidth=3))
        labels_.append("null: mean \u00b1 1.96 sd (no samples)")
    handles.append(Line2D([], [], marker="_", linestyle="", color="#555555", markersize=8))
    labels_.append("null mean")
    for j, model in enumerate(models):
        handles.append(Line2D([], [], marker=shapes[j], linestyle="", color=colours[j]))
        labels_.append(f"{model or 'observed'}")
    which = "adjusted p" if any_adjusted else "p"
    handles.append(Line2D([], [], marker="o", linestyle="", color="#333333"))
    labels_.append(f"filled: {which} \u2264 {alpha:g}, taxonomy side")
    handles.append(Line2D([], [], marker="o", linestyle="", markerfacecolor="white", markeredgecolor="#333333"))
    labels_.append(f"hollow: {which} > {alpha:g} or other side")
    note = (f"Not drawn (one taxon): {', '.join(dropped)}" if dropped else None)
    figure_legend(fig, handles, labels_, max_ncol=3, title=note)
    figure_title(fig, title)
    return fig, flat[: len(panels)]


# ------------------------------------------------------------------------------ report adapters
#: The probes whose whole-hierarchy null samples (``<probe>_null.csv``) the report's null figure shows.
NULL_PROBES = ("alignment", "dendrogram", "distances")


def adjusted_p_values(rows: pd.DataFrame) -> pd.Series:
    """The verdict's adjusted p-value of each evidence row (NaN where it has none).

    Primary rows (:data:`latent.verdict.PRIMARY` per rank, :data:`~latent.verdict.PRIMARY_ALL` at
    ``all``): Holm over one model's tests (:func:`latent.verdict.verdict_table`); supporting rows:
    Benjamini-Yekutieli over one model's supporting rows (:func:`latent.verdict.supporting_table`).

    Parameters
    ----------
    rows
        ``(m, ...)`` probe rows with ``probe``, ``metric``, ``rank`` (``model`` optional).

    Returns
    -------
    pandas.Series
        ``(m,)`` floats on ``rows.index``.
    """
    from latent.verdict import PRIMARY, PRIMARY_ALL, supporting_table, verdict_table

    out = pd.Series(np.nan, index=rows.index, dtype=float)
    models = model_values(rows)
    for model in dict.fromkeys(models):
        sub = rows[(models == model).to_numpy()]
        verdicts = verdict_table(sub, model)
        primary = dict(zip(verdicts["rank"].astype(str), verdicts["p_adjusted"].astype(float)))
        is_primary = (sub["probe"] == PRIMARY[0]) & (sub["metric"] == PRIMARY[1]) & (sub["rank"] != "all")
        out.loc[sub.index[is_primary.to_numpy()]] = sub.loc[is_primary, "rank"].astype(str).map(primary).to_numpy()
        is_all = (sub["probe"] == PRIMARY_ALL[0]) & (sub["metric"] == PRIMARY_ALL[1]) & (sub["rank"] == "all")
        out.loc[sub.index[is_all.to_numpy()]] = primary.get("all", np.nan)
        support = supporting_table(sub, model)
        if not len(support):
            continue
        adjusted = {(p, m, str(r)): float(v) for p, m, r, v in
                    zip(support["probe"], support["metric"], support["rank"], support["p_adjusted"])}
        lv = sub[is_primary] if "level" in sub.columns else sub.iloc[0:0]
        label_of = {r: str(v).replace("=", " = ") for r, v in zip(lv["rank"], lv["level"]) if isinstance(v, str)}
        rest = ~(is_primary | is_all).to_numpy()
        for index, row in sub[rest].iterrows():
            key = (row["probe"], row["metric"], label_of.get(str(row["rank"]), str(row["rank"])))
            if key in adjusted:
                out.loc[index] = adjusted[key]
    return out


def report_probe_summary(context: Any) -> "tuple[Figure, np.ndarray] | None":
    """The report's evidence figure: each verdict's and supporting row against its null (None without nulls).

    Nulls are drawn from the probes' null samples (``<probe>_null.csv``) as their central 95%; markers are
    filled by the verdict's adjusted p-values (:func:`adjusted_p_values`). ``context`` is a
    :class:`latent.figures.FigureContext`.
    """
    from latent.verdict import evidence_rows

    rows = context.probe_metrics()
    if rows is None:
        return None
    evidence = evidence_rows(rows)
    if "null_mean" not in evidence.columns or not evidence["null_mean"].notna().any():
        return None
    evidence = evidence.assign(p_adjusted=adjusted_p_values(evidence))
    probes = list(dict.fromkeys(evidence["probe"].astype(str)))
    return plot_probe_summary(evidence, null=_null_samples(context, probes))


def _null_samples(context: Any, probes: Sequence[str]) -> "pd.DataFrame | None":
    """Every model's null samples of ``probes``, with ``probe`` and ``model`` columns (None when absent)."""
    parts = []
    for model in context.models:
        for probe in probes:
            table = context.probe_table(model, f"{probe}_null.csv")
            if table is not None and len(table):
                parts.append(table.assign(probe=probe, model=model.label))
    return pd.concat(parts, ignore_index=True) if parts else None


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
