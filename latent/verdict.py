"""Every decision rule of ``latent``: which statistic answers which question, and what a verdict says.

One question per rank, one primary statistic per question, chosen before looking:

* **rank r** ("is rank r visible beyond its parent?"): ``levels``' ``rank_distance_ratio`` (distance to
  relatives inside the rank-r taxon over distance to relatives outside it within the same parent) under
  the restricted permutation null (the rank's labels permuted among whole child taxa within each parent;
  :mod:`latent.probes.levels`). Ranks with the same partition of the species (cub10's orders and
  families) are one test, counted once.
* **all** ("is there any taxonomic structure?"): the Spearman Mantel r between species-centroid distances
  and taxonomic distances (``alignment``' ``mantel_r_spearman``) under the free null (species permuted
  among the leaves of the tree).

Multiplicity: the p-values of the primary tests of one model (its testable levels plus ``all``) are
adjusted together with **Holm**'s step-down method (family-wise error rate). Verdict words:

* ``yes``: the Holm-adjusted p <= :data:`ALPHA` and the effect is on the side the taxonomy predicts;
* ``no``: testable, but not so;
* ``not testable``: no p-value can be given, with the reason (one taxon; same partition as the parent or
  the child; tied distances; too few distinct restricted permutations to reach :data:`ALPHA`; ...).

Every other statistic (silhouette, FMI, CKA, ... under the free null) is *supporting evidence* (each probe
declares its rows in the registry, :attr:`latent.probes.ProbeSpec.evidence`; :data:`SUPPORTING`): shown
with its Benjamini-Yekutieli-adjusted p-value (FDR under dependence, over all supporting rows of a model),
never counted in a verdict. Statistics that are the same number are shown once (:data:`DUPLICATES`), and
so are ranks with one partition of the species (one row, ``rank`` e.g. ``"order = family"``).
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pandas as pd

from latent.ranks import RANK_NAMES

__all__ = [
    "ALPHA",
    "PRIMARY",
    "PRIMARY_ALL",
    "SUPPORTING",
    "DUPLICATES",
    "supporting_rows",
    "evidence_rows",
    "VERDICT_RULE",
    "VERDICT_COLUMNS",
    "holm",
    "benjamini_yekutieli",
    "verdict_table",
    "supporting_table",
]

#: Family-wise error rate of the primary tests of one model, and the level of every "significant" in the
#: report, figures and captions: defined once, in :mod:`latent.stats`.
from latent.stats import ALPHA  # noqa: E402

#: The primary statistic of every rank: (probe, metric, direction the taxonomy predicts, plain name).
PRIMARY = ("levels", "rank_distance_ratio", "less",
           "distance inside the taxon / distance to other taxa of the same parent (restricted null)")

#: The primary statistic of the whole hierarchy (free null).
PRIMARY_ALL = ("alignment", "mantel_r_spearman", "greater",
               "Spearman Mantel r, species-centroid vs taxonomic distances (free null)")

def supporting_rows() -> tuple[tuple[str, str, dict, str, str], ...]:
    """The supporting statistics (free species-permutation null), read from the probe registry.

    Each probe declares its rows (:attr:`latent.probes.ProbeSpec.evidence`); they come in their declared
    ``order`` (ties: registry order). :data:`SUPPORTING` is this tuple, read when it is accessed.

    Returns
    -------
    tuple
        ``(probe, metric, extra filter, direction, name)`` per row.
    """
    from latent.figures import registered_evidence

    return tuple(tuple(e)[:5] for e in registered_evidence())  # type: ignore[misc]


def __getattr__(name: str) -> Any:
    # SUPPORTING: (probe, metric, extra filter, direction, name) of every supporting statistic, derived from
    # the probe registry when read (so a probe added to the registry adds its rows)
    if name == "SUPPORTING":
        return supporting_rows()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def evidence_rows(metrics: pd.DataFrame) -> pd.DataFrame:
    """The rows of a probe table that a verdict reads (primary) or shows (supporting), in that order."""
    parts = []
    wanted = [(PRIMARY[0], PRIMARY[1], {}), (PRIMARY_ALL[0], PRIMARY_ALL[1], {"rank": "all"}),
              *((probe, metric, extra) for probe, metric, extra, _, _ in supporting_rows())]
    for probe, metric, extra in wanted:
        sel = metrics[(metrics["probe"] == probe) & (metrics["metric"] == metric)]
        for key, value in extra.items():
            sel = sel[sel[key] == value] if key in sel.columns else sel.iloc[0:0]
        parts.append(sel)
    return pd.concat(parts) if parts else metrics.iloc[0:0]


#: Statistics left out of the supporting table because they are another row's number:
#: (probe, metric, the row it equals, why).
DUPLICATES: tuple[tuple[str, str, str, str], ...] = (
    ("distances", "distance_height_spearman", "alignment mantel_r_spearman",
     "the Spearman Mantel r on the same centroid pairs"),
    ("dendrogram", "bakers_gamma", "dendrogram cophenetic_taxonomy_corr",
     "Baker's gamma is the Spearman correlation of the same cophenetic and taxonomic merge levels"),
    ("dendrogram", "ari", "dendrogram fmi", "the same dendrogram cut scored by pair counting"),
)

VERDICT_RULE = (
    f"One primary statistic per rank, chosen before looking: the distance from each species to relatives inside "
    f"its rank-r taxon over the distance to relatives outside it within the same parent (below 1: rank r is "
    f"visible beyond its parent), tested against a restricted null that permutes the rank's labels among whole "
    f"child taxa within each parent; for the whole hierarchy ('all'), the Spearman Mantel r of species-centroid "
    f"and taxonomic distances against species permuted among the leaves. 'yes' when the Holm-adjusted p-value "
    f"(over the ranks and 'all' of one model) is <= {ALPHA} and the effect is on the side the taxonomy predicts; "
    f"'no' otherwise; 'not testable' when no p-value can be given (one taxon, the same partition as a neighbouring "
    f"rank, tied distances, or too few distinct permutations to reach {ALPHA}), with the reason. Ranks with the "
    f"same partition of the species are one test. CIs resample whole parent taxa for a rank and species for "
    f"'all' (none below 10 units). Other statistics are supporting evidence (free null, Benjamini-Yekutieli-"
    f"adjusted) and never change a verdict."
)

#: Columns of ``verdicts.csv`` (one row per model and rank, plus ``all``).
VERDICT_COLUMNS = ["model", "rank", "verdict", "reason", "primary_statistic", "value", "ci_low", "ci_high",
                   "null_mean", "effect", "p_value", "p_adjusted", "n_species", "n_taxa", "permutations", "level"]


def holm(p: "np.ndarray | list[float]") -> np.ndarray:
    """Holm step-down adjusted p-values (NaN entries stay NaN and are not counted).

    Parameters
    ----------
    p
        ``(m,)`` raw p-values.

    Returns
    -------
    numpy.ndarray
        ``(m,)`` adjusted p-values, ``min(1, max_{j <= i} (k - j + 1) p_(j))`` over the ``k`` finite ones.
    """
    p = np.asarray(p, dtype=np.float64)
    out = np.full(p.shape, np.nan)
    ok = np.flatnonzero(np.isfinite(p))
    k = len(ok)
    if not k:
        return out
    order = ok[np.argsort(p[ok], kind="stable")]
    adjusted = np.maximum.accumulate((k - np.arange(k)) * p[order])
    out[order] = np.minimum(adjusted, 1.0)
    return out


def benjamini_yekutieli(p: "np.ndarray | list[float]") -> np.ndarray:
    """Benjamini-Yekutieli adjusted p-values (FDR under arbitrary dependence; NaN stays NaN).

    Returns
    -------
    numpy.ndarray
        ``(m,)``: ``min_{j >= i} min(1, k c(k) p_(j) / j)`` with ``c(k) = sum_{i<=k} 1/i``.
    """
    p = np.asarray(p, dtype=np.float64)
    out = np.full(p.shape, np.nan)
    ok = np.flatnonzero(np.isfinite(p))
    k = len(ok)
    if not k:
        return out
    order = ok[np.argsort(p[ok], kind="stable")]
    c = np.sum(1.0 / np.arange(1, k + 1))
    raw = p[order] * k * c / np.arange(1, k + 1)
    adjusted = np.minimum.accumulate(raw[::-1])[::-1]
    out[order] = np.minimum(adjusted, 1.0)
    return out


def _get(row: "pd.Series | None", key: str, default: Any = math.nan) -> Any:
    if row is None or key not in row.index:
        return default
    value = row[key]
    return default if (isinstance(value, float) and math.isnan(value) and default is not math.nan) else value


def _features(metrics: pd.DataFrame, features: str) -> pd.DataFrame:
    if "features" in metrics.columns:
        return metrics[metrics["features"].fillna("model") == features]
    return metrics if features == "model" else metrics.iloc[0:0]


def verdict_table(metrics: pd.DataFrame, model: str = "", *, features: str = "model") -> pd.DataFrame:
    """The answer per rank (and ``all``) from a probe table (``latent probe``'s ``metrics.csv``).

    Parameters
    ----------
    metrics
        Long probe rows with the ``levels`` and ``alignment`` probes' rows.
    model
        Label written in the ``model`` column.
    features
        ``"model"`` or ``"baseline"`` rows of the table.

    Returns
    -------
    pandas.DataFrame
        :data:`VERDICT_COLUMNS`, one row per rank (kingdom..species) and ``all``.
    """
    m = _features(metrics, features)
    probe, metric, direction, name = PRIMARY
    primary = m[(m["probe"] == probe) & (m["metric"] == metric)] if len(m) else m
    records: list[dict[str, Any]] = []
    for rank in RANK_NAMES:
        sel = primary[primary["rank"] == rank] if len(primary) else primary
        row = sel.iloc[0] if len(sel) else None
        rec = {"model": model, "rank": rank, "primary_statistic": metric, "direction": direction}
        if row is None:
            rec.update(reason="the levels probe did not run", level=rank)
        else:
            testable = bool(_get(row, "testable", False)) and np.isfinite(float(_get(row, "p_value")))
            rec.update(
                value=float(row["value"]), ci_low=float(row["ci_low"]), ci_high=float(row["ci_high"]),
                null_mean=float(_get(row, "null_mean")), effect=float(_get(row, "effect")),
                p_value=float(_get(row, "p_value")) if testable else math.nan,
                n_species=int(_get(row, "n_species", 0) or 0), n_taxa=int(_get(row, "n_taxa", 0) or 0),
                permutations=int(_get(row, "permutations", 0) or 0), level=str(_get(row, "level", rank)),
                reason="" if testable else (str(_get(row, "reason", "")) or "no p-value"))
        records.append(rec)
    probe_a, metric_a, direction_a, _ = PRIMARY_ALL
    sel = m[(m["probe"] == probe_a) & (m["metric"] == metric_a)] if len(m) else m
    if "rank" in sel.columns:
        sel = sel[sel["rank"] == "all"]
    row = sel.iloc[0] if len(sel) else None
    rec = {"model": model, "rank": "all", "primary_statistic": metric_a, "direction": direction_a, "level": "all"}
    if row is None:
        rec["reason"] = "the alignment probe did not run"
    else:
        p = float(_get(row, "p_value"))
        perms = int(_get(row, "permutations", 0) or 0)
        reachable = perms > 0 and 1.0 / (1 + perms) <= ALPHA
        null_mean = float(_get(row, "null_mean"))
        rec.update(value=float(row["value"]), ci_low=float(row["ci_low"]), ci_high=float(row["ci_high"]),
                   null_mean=null_mean, effect=float(row["value"]) - null_mean,
                   p_value=p if (np.isfinite(p) and reachable) else math.nan,
                   n_species=int(_get(row, "n_species", _get(row, "n", 0)) or 0),
                   n_taxa=int(_get(row, "n_species", _get(row, "n", 0)) or 0), permutations=perms,
                   reason="" if (np.isfinite(p) and reachable) else (
                       "no p-value (degenerate distances)" if not np.isfinite(p) else
                       f"{perms} permutations cannot reach p <= {ALPHA}"))
    records.append(rec)
    table = pd.DataFrame.from_records(records)
    for col in VERDICT_COLUMNS + ["direction"]:
        if col not in table.columns:
            table[col] = math.nan
    # Holm over the distinct tests (a level shared by several ranks counts once)
    tests = table.drop_duplicates("level")
    adjusted = pd.Series(holm(tests["p_value"].to_numpy()), index=tests["level"].to_numpy())
    table["p_adjusted"] = table["level"].map(adjusted)
    verdict = []
    for r in table.itertuples(index=False):
        if not np.isfinite(r.p_value):
            verdict.append("not testable")
            continue
        side = r.effect < 0 if r.direction == "less" else r.effect > 0
        verdict.append("yes" if (r.p_adjusted <= ALPHA and side) else "no")
    table["verdict"] = verdict
    # ranks that share a level say so
    shared = table.groupby("level")["rank"].transform("count") > 1
    table.loc[shared & (table["rank"] != "all"), "reason"] = [
        (f"{reason + '; ' if reason else ''}one partition: {level.replace('=', ' = ')} (one test)")
        for reason, level in zip(table.loc[shared & (table["rank"] != "all"), "reason"].fillna(""),
                                 table.loc[shared & (table["rank"] != "all"), "level"])]
    table["reason"] = table["reason"].fillna("")
    return table[VERDICT_COLUMNS]


def supporting_table(metrics: pd.DataFrame, model: str = "", *, features: str = "model") -> pd.DataFrame:
    """The supporting statistics of a probe table, one row each, with BY-adjusted p-values.

    Returns
    -------
    pandas.DataFrame
        ``model, rank, probe, metric, statistic, value, ci_low, ci_high, null_mean, z, p_value, p_adjusted,
        permutations, n, n_species, n_taxa, direction, supports`` (``supports``: adjusted p <= ALPHA on the
        predicted side).
    """
    m = _features(metrics, features)
    records = []
    for probe, metric, extra, direction, name in supporting_rows():
        sel = m[(m["probe"] == probe) & (m["metric"] == metric)] if len(m) else m
        for key, value in extra.items():
            sel = sel[sel[key] == value] if key in sel.columns else sel.iloc[0:0]
        for _, row in sel.iterrows():
            p = float(_get(row, "p_value"))
            null = float(_get(row, "null_mean"))
            records.append({"model": model, "rank": row["rank"], "probe": probe, "metric": metric, "statistic": name,
                            "value": float(row["value"]), "ci_low": float(row["ci_low"]),
                            "ci_high": float(row["ci_high"]), "null_mean": null, "z": float(_get(row, "z")),
                            "p_value": p, "permutations": float(_get(row, "permutations", 0) or 0),
                            "n": int(row["n"]), "n_species": _get(row, "n_species"), "n_taxa": _get(row, "n_taxa"),
                            "direction": direction,
                            "side": bool(row["value"] < null) if direction == "less" else bool(row["value"] > null)})
    cols = ["model", "rank", "probe", "metric", "statistic", "value", "ci_low", "ci_high", "null_mean", "z",
            "p_value", "p_adjusted", "permutations", "n", "n_species", "n_taxa", "direction", "supports"]
    table = pd.DataFrame.from_records(records)
    if table.empty:
        return pd.DataFrame(columns=cols)
    # ranks with one partition of the species (e.g. cub10's orders and families) give the same number: once
    lv = m[(m["probe"] == PRIMARY[0]) & (m["metric"] == PRIMARY[1])] if "level" in m.columns else m.iloc[0:0]
    level_of = dict(zip(lv["rank"], lv["level"])) if len(lv) else {}
    table["level"] = [level_of.get(r, r) for r in table["rank"]]
    table = table.drop_duplicates(["probe", "metric", "level"]).copy()
    table["rank"] = table["level"].str.replace("=", " = ")
    table["p_adjusted"] = benjamini_yekutieli(table["p_value"].to_numpy())
    table["supports"] = (table["p_adjusted"] <= ALPHA) & table["side"]
    return table[cols]
