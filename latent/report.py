"""``latent report``: from caches to one document that answers "does this space reflect the taxonomy?".

For each cache (one model each; several side by side) the report runs what is missing, reusing results
already computed for the same cache and settings:

- evaluations (``latent evaluate``; by default a linear probe on a random split and kNN on a
  species-disjoint split) into ``DIR/runs/<cache>/evaluate-<method>-<split>-seed<S>-boot<B>/``;
- probes (``latent probe``) into ``DIR/runs/<cache>/probe-<distance>-perm<N>-seed<S>-<hash>/``;
- 2-D projections of the images into ``DIR/runs/<cache>/projection-<method>-seed<S>.csv``.

Each step writes ``settings.json`` (the cache's path, size and modification time, and every
parameter) last; a later report skips the step when that file matches, unless ``force``. Output
names derive from the parameters (the hash covers those not spelled out in the name).

Then it draws the figures from those results tables only (``DIR/figures/*.png`` and ``*.pdf``) and
writes ``DIR/report.md`` and ``DIR/report.html`` (self-contained: figures embedded). The report starts
with the answer: per rank, each statistic with its effect size, CI, permutation p-value and a verdict
reached by the rule in :data:`VERDICT_RULE`; then the figures; then the provenance.
"""

from __future__ import annotations

import base64
import hashlib
import html
import json
import logging
import math
import os
import platform
import subprocess
import time
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np
import pandas as pd

from latent._version import __version__
from latent.errors import InputError
from latent.ranks import RANK_NAMES

__all__ = ["ReportSettings", "ReportResult", "build_report", "draw_figures", "EVIDENCE", "VERDICT_RULE", "verdicts"]

log = logging.getLogger(__name__)

#: Statistics read as evidence, per rank and for the whole hierarchy: (probe, metric, extra filter,
#: the direction the taxonomy predicts, plain name).
EVIDENCE: tuple[tuple[str, str, dict, str, str], ...] = (
    ("distances", "intra_inter_ratio", {}, "less", "intra/inter-clade distance ratio"),
    ("clusters", "silhouette", {}, "greater", "silhouette"),
    ("dendrogram", "fmi", {}, "greater", "dendrogram cut vs taxa (Fowlkes-Mallows)"),
    ("dendrogram", "clade_recovery", {}, "greater", "taxa recovered as dendrogram clades"),
    ("separability", "linear_accuracy", {"split": "species-disjoint"}, "greater",
     "linear probe on unseen species"),
    ("alignment", "mantel_r_spearman", {}, "greater", "Mantel r (Spearman), centroids vs taxonomy"),
    ("alignment", "cka_taxonomy", {}, "greater", "CKA with the taxonomy kernel"),
    ("dendrogram", "cophenetic_taxonomy_corr", {}, "greater", "dendrogram vs taxonomic distances"),
    ("dendrogram", "bakers_gamma", {}, "greater", "Baker's gamma, dendrogram vs taxonomy"),
)
# Not counted, because they repeat a statistic above: distances' distance_height_spearman is the Spearman
# Mantel r on the same centroid pairs (equal by construction), and ARI moves with FMI (same permutations,
# same p-value when every species is named at the rank). They stay in metrics.csv and the figures.

ALPHA = 0.01

#: Fewest permutations with which a p-value can reach ALPHA ((1 + 0) / (1 + N) <= ALPHA).
MIN_PERMUTATIONS = int(round(1 / ALPHA)) - 1

VERDICT_RULE = (
    f"A statistic is evidence when its species-permutation p-value is <= {ALPHA} and it lies on the side of "
    "its null that the taxonomy predicts (e.g. silhouette above, intra/inter ratio below). Per rank: "
    "'yes' when at least two thirds of the available statistics (and at least two) are evidence, 'partly' "
    "when at least one is, 'no' when none is, 'not testable' when no statistic could be computed at that "
    "rank (e.g. a single taxon). A statistic whose null has fewer than 99 permutations cannot reach p <= 0.01 and "
    "is left out of the count (shown with its p-value in the table). With the default 199 permutations the "
    "smallest possible p-value is 0.005."
)


@dataclass(frozen=True)
class ReportSettings:
    """What the report computes (every field is part of the output names or their hash).

    Attributes
    ----------
    evaluations
        ``(method, split)`` pairs for ``latent evaluate``.
    probes
        Probe names (None: all).
    permutations, distance, seed, max_images, max_pairs, probe_settings
        ``latent probe`` options (see :class:`latent.probes.base.ProbeOptions`).
    n_boot
        Bootstrap resamples of the evaluation CIs.
    projections
        2-D projection methods (``"pca"``, ``"umap"``).
    max_projection_points
        Images drawn in a projection (a seeded sample above it).
    device
        Device for torch steps.
    """

    evaluations: tuple[tuple[str, str], ...] = (("linear", "random"), ("knn", "species-disjoint"))
    probes: "tuple[str, ...] | None" = None
    permutations: int = 199
    distance: str = "cosine"
    seed: int = 0
    max_images: int = 5_000
    max_pairs: int = 2_000_000
    probe_settings: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)
    n_boot: int = 1000
    projections: tuple[str, ...] = ("pca", "umap")
    max_projection_points: int = 20_000
    device: str = "auto"


@dataclass(frozen=True)
class ReportResult:
    """Where the report is and what it found (``answer``: one row per model and rank)."""

    out: Path
    html: Path
    markdown: Path
    answer: pd.DataFrame
    figures: list[Path]
    runs: dict[str, dict[str, Any]]

    def summary(self) -> str:
        lines = [f"report: {self.html}"]
        for model, table in self.answer.groupby("model", sort=False):
            verdicts_ = ", ".join(f"{r.rank} {r.verdict}" for r in table.itertuples())
            lines.append(f"  {model}: {verdicts_}")
        lines.append(f"  {len(self.figures)} figures in {self.out / 'figures'}")
        return "\n".join(lines)


# ------------------------------------------------------------------------------ steps with reuse
def _cache_identity(path: Path) -> dict[str, Any]:
    stat = path.stat()
    return {"path": str(path.resolve()), "size": stat.st_size, "mtime_ns": stat.st_mtime_ns}


def _settings_match(folder: Path, expected: Mapping[str, Any], needed: Sequence[str]) -> bool:
    marker = folder / "settings.json"
    if not marker.exists() or not all((folder / n).exists() for n in needed):
        return False
    try:
        return json.loads(marker.read_text()) == json.loads(json.dumps(expected, default=str))
    except (OSError, json.JSONDecodeError):
        return False


def _write_settings(folder: Path, settings: Mapping[str, Any]) -> None:
    tmp = folder / "settings.json.tmp"
    tmp.write_text(json.dumps(settings, indent=2, sort_keys=True, default=str))
    os.replace(tmp, folder / "settings.json")


def _short_hash(value: Any) -> str:
    return hashlib.sha256(json.dumps(value, sort_keys=True, default=str).encode()).hexdigest()[:8]


def _label(provenance: Any, path: Path, taken: set[str]) -> str:
    base = str(provenance.model or path.stem)
    label = base if base not in taken else f"{base} ({path.stem})"
    k = 2
    while label in taken:
        label, k = f"{base} ({path.stem} {k})", k + 1
    return label


def _label_by_stem(stem: str, taken: set[str]) -> str:
    label, k = stem, 2
    while label in taken:
        label, k = f"{stem} {k}", k + 1
    return label


def _slug(text: str) -> str:
    out = "".join(c if c.isalnum() or c in "-_." else "-" for c in text).strip("-")
    return out or "model"


def _run_evaluations(cache: Path, folder: Path, settings: ReportSettings, force: bool) -> list[Path]:
    from latent.evaluate import evaluate_cache

    dirs = []
    for method, split in settings.evaluations:
        out = folder / f"evaluate-{method}-{split}-seed{settings.seed}-boot{settings.n_boot}"
        params = {"cache": _cache_identity(cache), "step": "evaluate", "method": method, "split": split,
                  "seed": settings.seed, "n_boot": settings.n_boot, "latent_version": __version__}
        if not force and _settings_match(out, params, ["metrics.csv", "severity.csv", "divergence.csv"]):
            log.info("report: reusing %s", out)
        else:
            log.info("report: evaluate %s (%s, %s)", cache, method, split)
            evaluate_cache(cache, out, method=method, split=split, seed=settings.seed, n_boot=settings.n_boot,
                           device=settings.device)
            _write_settings(out, params)
        dirs.append(out)
    return dirs


def _run_probes(cache: Path, folder: Path, settings: ReportSettings, force: bool, baseline: "Path | None") -> Path:
    from latent.probes.base import ProbeOptions
    from latent.probes.run import probe_cache

    options = ProbeOptions(distance=settings.distance, permutations=settings.permutations,
                           max_pairs=settings.max_pairs, max_images=settings.max_images, seed=settings.seed,
                           device=settings.device, extra={k: dict(v) for k, v in settings.probe_settings.items()})
    params = {"cache": _cache_identity(cache), "step": "probe", "probes": list(settings.probes or []) or "all",
              "options": asdict(options), "baseline": None if baseline is None else _cache_identity(baseline),
              "latent_version": __version__}
    out = folder / f"probe-{settings.distance}-perm{settings.permutations}-seed{settings.seed}-{_short_hash(params)}"
    if not force and _settings_match(out, params, ["metrics.csv", "species.csv"]):
        log.info("report: reusing %s", out)
        return out
    log.info("report: probes on %s", cache)
    probe_cache(cache, out, probes=list(settings.probes) if settings.probes else None, options=options,
                baseline=baseline)
    _write_settings(out, params)
    return out


def _run_projections(cache: Path, folder: Path, settings: ReportSettings, force: bool) -> list[Path]:
    from latent.cache import open_cache
    from latent.projection import project

    paths = []
    for method in settings.projections:
        path = folder / f"projection-{method}-seed{settings.seed}.csv"
        params = {"cache": _cache_identity(cache), "step": "projection", "method": method, "seed": settings.seed,
                  "max_points": settings.max_projection_points, "latent_version": __version__}
        marker = folder / f"projection-{method}-seed{settings.seed}.settings.json"
        if not force and path.exists() and marker.exists() and json.loads(marker.read_text()) == json.loads(
                json.dumps(params, default=str)):
            paths.append(path)
            continue
        with open_cache(cache) as c:
            taxonomy = c.taxonomy()
            rows = np.flatnonzero(taxonomy.labelled("species"))
            if len(rows) > settings.max_projection_points:
                rng = np.random.default_rng(settings.seed)
                rows = np.sort(rng.choice(rows, settings.max_projection_points, replace=False))
            X = c.read(rows, normalize=True)
            ids = np.asarray(c.ids)[rows]
        log.info("report: %s projection of %d images", method, len(rows))
        xy = project(X, method=method, seed=settings.seed)
        table = pd.DataFrame({"id": ids})
        for r, name in enumerate(RANK_NAMES):
            table[name] = taxonomy.row_names[rows, r].astype(str)
        table["x"], table["y"] = xy[:, 0], xy[:, 1]
        tmp = path.with_name(path.name + ".tmp")
        table.to_csv(tmp, index=False)
        os.replace(tmp, path)
        marker.write_text(json.dumps(params, indent=2, sort_keys=True, default=str))
        paths.append(path)
    return paths


# ------------------------------------------------------------------------------ the answer
def _evidence_subset(metrics: pd.DataFrame) -> pd.DataFrame:
    """The rows of a probe table that are evidence statistics (:data:`EVIDENCE`), in its order."""
    parts = []
    for probe, metric, extra, _, _ in EVIDENCE:
        sel = metrics[(metrics["probe"] == probe) & (metrics["metric"] == metric)]
        for key, value in extra.items():
            sel = sel[sel[key] == value] if key in sel.columns else sel.iloc[0:0]
        parts.append(sel)
    return pd.concat(parts) if parts else metrics.iloc[0:0]


def _evidence_rows(metrics: pd.DataFrame, features: str = "model") -> pd.DataFrame:
    """The evidence statistics of one model's probe table (``features`` ``"model"`` or ``"baseline"``),
    one row each, with ``evidence`` (bool)."""
    m = metrics[metrics["features"] == features] if "features" in metrics.columns else metrics
    records = []
    for probe, metric, extra, direction, name in EVIDENCE:
        sel = m[(m["probe"] == probe) & (m["metric"] == metric)]
        for key, value in extra.items():
            sel = sel[sel[key] == value] if key in sel.columns else sel.iloc[0:0]
        for row in sel.itertuples(index=False):
            p = float(getattr(row, "p_value", math.nan))
            null = float(getattr(row, "null_mean", math.nan))
            side = row.value < null if direction == "less" else row.value > null
            perms = float(getattr(row, "permutations", math.nan))
            records.append({"rank": row.rank, "probe": probe, "metric": metric, "statistic": name,
                            "permutations": perms, "testable": bool(perms >= MIN_PERMUTATIONS),
                            "value": row.value, "ci_low": row.ci_low, "ci_high": row.ci_high,
                            "null_mean": null, "z": float(getattr(row, "z", math.nan)), "p_value": p,
                            "n": row.n, "direction": direction,
                            "evidence": bool(not math.isnan(p) and p <= ALPHA and side)})
    return pd.DataFrame(records, columns=["rank", "probe", "metric", "statistic", "permutations", "testable", "value", "ci_low", "ci_high",
                                          "null_mean", "z", "p_value", "n", "direction", "evidence"])


def verdicts(evidence: pd.DataFrame) -> pd.DataFrame:
    """Per rank (and ``all``): statistics available, how many are evidence, and the verdict (:data:`VERDICT_RULE`).

    Parameters
    ----------
    evidence
        Output of the evidence selection: ``rank``, ``p_value`` and ``evidence`` columns.

    Returns
    -------
    pandas.DataFrame
        ``rank, available, evidence, verdict`` for the seven ranks and ``all``.
    """
    out = []
    for rank in (*RANK_NAMES, "all"):
        rows = evidence[(evidence["rank"] == rank) & evidence["p_value"].notna() & evidence["testable"]]
        k, e = len(rows), int(rows["evidence"].sum())
        if k == 0:
            verdict = "not testable"
        elif e >= max(2, math.ceil(2 * k / 3)):
            verdict = "yes"
        elif e >= 1:
            verdict = "partly"
        else:
            verdict = "no"
        out.append({"rank": rank, "available": k, "evidence": e, "verdict": verdict})
    return pd.DataFrame(out)


# ------------------------------------------------------------------------------ figures
@dataclass
class _Model:
    label: str
    cache: Path
    provenance: Any
    evaluations: list[Path]
    probe: Path
    projections: list[Path]
    info: dict[str, Any] = field(default_factory=dict)


def _read_csv(path: Path) -> "pd.DataFrame | None":
    return pd.read_csv(path, keep_default_na=False, na_values=[""]) if path.exists() else None


def _concat(frames: Mapping[str, "pd.DataFrame | None"]) -> "pd.DataFrame | None":
    parts = [f.assign(model=label) for label, f in frames.items() if f is not None and len(f)]
    return pd.concat(parts, ignore_index=True) if parts else None


def _npz(path: Path) -> dict[str, np.ndarray]:
    if not path.exists():
        return {}
    with np.load(path, allow_pickle=False) as f:
        return {k: f[k] for k in f.files}


def _eval_table(model: "_Model", name: str) -> "pd.DataFrame | None":
    """One evaluation table of every evaluation of a model, with its ``method`` and ``split``."""
    parts = []
    for d in model.evaluations:
        table = _read_csv(d / name)
        run = json.loads((d / "run.json").read_text()) if (d / "run.json").exists() else {}
        if table is not None and len(table):
            parts.append(table.assign(method=run.get("method", d.name), split=run.get("split", "")))
    return pd.concat(parts, ignore_index=True) if parts else None


@dataclass
class _Figure:
    key: str
    title: str
    caption: str
    png: Path


def _draw_figures(models: list[_Model], fig_dir: Path) -> list[_Figure]:
    import latent.plotting as lp

    fig_dir.mkdir(parents=True, exist_ok=True)
    made: list[_Figure] = []

    def save(key: str, drawn: Any, title: str, caption: str) -> None:
        fig = drawn[0]
        paths = lp.save_figure(fig, fig_dir / key)
        import matplotlib.pyplot as plt

        plt.close(fig)
        png = next(p for p in paths if p.suffix == ".png")
        made.append(_Figure(key, title, caption, png))

    probe_rows = _concat({m.label: _read_csv(m.probe / "metrics.csv") for m in models})
    if probe_rows is not None:
        if "features" in probe_rows.columns:
            probe_rows = probe_rows[probe_rows["features"] == "model"]
        with_null = _evidence_subset(probe_rows)
        with_null = with_null[with_null["null_mean"].notna()] if "null_mean" in with_null else with_null.iloc[0:0]
        if len(with_null):
            save("probe_summary", lp.plot_probe_summary(with_null),
                 "Evidence per rank: observed statistic against its null",
                 "Each statistic (marker) against the mean of its species-permutation null (line); filled markers are "
                 "significant at p <= 0.05.")
    evals = {}
    for m in models:
        parts = [_read_csv(d / "metrics.csv") for d in m.evaluations]
        parts = [p for p in parts if p is not None]
        evals[m.label] = pd.concat(parts, ignore_index=True) if parts else None
    eval_rows = _concat(evals)
    if eval_rows is not None:
        save("accuracy", lp.plot_rank_accuracy(eval_rows), "Accuracy per rank",
             "Top-1 accuracy per rank with bootstrap 95% CIs, per method, split and model.")
        severity = _concat({m.label: _eval_table(m, "severity.csv") for m in models})
        if severity is not None:
            save("mistake_severity", lp.plot_mistake_severity(severity), "How wrong are the mistakes?",
                 "LCA height of wrong top-1 species predictions (1 = right genus, 7 = wrong kingdom).")
        divergence = _concat({m.label: _eval_table(m, "divergence.csv") for m in models})
        if divergence is not None:
            save("first_divergence", lp.plot_first_divergence(divergence), "First wrong rank",
                 "The highest rank at which the top-1 prediction leaves the true lineage.")
    by_height = _concat({m.label: _read_csv(m.probe / "distances_by_height.csv") for m in models})
    if by_height is not None:
        save("distance_by_height", lp.plot_distance_by_height(by_height), "Embedding distance by taxonomic distance",
             "Distance between images and between species centroids, grouped by the height of their lowest "
             "common ancestor (0 = same species ... 7 = different kingdoms).")
    for m in models:
        species = _read_csv(m.probe / "species.csv")
        if species is None:
            continue
        slug = _slug(m.label)
        align = _npz(m.probe / "alignment.npz")
        if "centroid_distances" in align:
            save(f"distance_matrix_{slug}", lp.plot_distance_matrix(align["centroid_distances"], species),
                 f"Centroid distances in taxonomic order ({m.label})",
                 "Species-centroid distances, species in taxonomy order; lines mark the boundaries of higher taxa.")
        dend = _npz(m.probe / "dendrogram.npz")
        if "linkage" in dend:
            save(f"tanglegram_{slug}", lp.plot_tanglegram(dend["linkage"], species),
                 f"Dendrogram of centroids against the taxonomy ({m.label})",
                 "Left: the taxonomy; right: average-linkage clustering of species centroids; lines join the same species.")
        hyp = _npz(m.probe / "hyperbolic_fit.npz")
        if "poincare@2" in hyp:
            fitted = species.iloc[hyp["species"]] if "species" in hyp else species
            coords = {"embedding fit": hyp["poincare@2"]}
            if "taxonomy_poincare@2" in hyp:
                coords["taxonomy fit"] = hyp["taxonomy_poincare@2"]
            save(f"poincare_{slug}", lp.plot_poincare_disk(coords, fitted.reset_index(drop=True)),
                 f"Species in the Poincare disk ({m.label})",
                 "Two-dimensional Poincare-ball fits of the species-centroid distances (left) and of the taxonomic "
                 "distances (right), coloured by order.")
        nulls = [t for t in (_read_csv(m.probe / f"{p}_null.csv") for p in ("alignment", "dendrogram", "distances"))
                 if t is not None]
        if nulls and probe_rows is not None:
            observed = probe_rows[probe_rows["model"] == m.label]
            null = pd.concat(nulls, ignore_index=True)
            null = null[null["rank"] == "all"]
            if len(null):
                save(f"nulls_{slug}", lp.plot_null_distributions(null, observed[observed["rank"] == "all"]),
                     f"Whole-hierarchy statistics against their nulls ({m.label})",
                     "Histogram: the statistic with species permuted among the leaves of the tree; line: observed.")
        for path in m.projections:
            table = _read_csv(path)
            method = path.stem.split("-")[1]
            save(f"projection_{method}_{slug}", lp.plot_projection(table[["x", "y"]].to_numpy(), table),
                 f"{method.upper()} projection of the images ({m.label})",
                 f"{method.upper()} of the image embeddings ({len(table)} images), coloured by each rank; "
                 "the largest taxa get colours, the rest is grey.")
    if probe_rows is not None and "target" in probe_rows.columns:
        fits = probe_rows[probe_rows["probe"] == "hyperbolic_fit"]
        if len(fits):
            embedding = fits[fits["target"] == "embedding"]
            reference = fits[fits["target"] == "taxonomy"]
            reference = reference[reference["model"] == reference["model"].iloc[0]].assign(model="") \
                if len(reference) else reference
            save("distortion", lp.plot_distortion(pd.concat([embedding, reference], ignore_index=True)),
                 "Poincare vs Euclidean fits at equal dimension",
                 "Average distortion and MAP of fits of the species-centroid distances in the Poincare ball and in "
                 "Euclidean space of the same dimension; the taxonomy's own distances as the reference (a tree: the "
                 "Poincare ball should win).")
        losses = _concat({m.label: _read_csv(m.probe / "hyperbolic_fit_loss.csv") for m in models})
        if losses is not None and len(losses):
            if "target" in losses.columns:
                losses = losses[losses["target"] == "embedding"]
            save("fit_loss", lp.plot_fit_loss(losses), "Convergence of the fits",
                 "Loss of the Poincare and Euclidean fits of the centroid distances against the optimisation step.")
    return made


def draw_figures(report_dir: "str | os.PathLike[str]", out: "str | os.PathLike[str] | None" = None) -> list[Path]:
    """Redraw a report's figures from its results tables only (``report.json`` lists them).

    Parameters
    ----------
    report_dir
        A folder written by :func:`build_report`.
    out
        Where to write the figures (default ``report_dir/figures``).

    Returns
    -------
    list of Path
        The PNG files (a PDF beside each).
    """
    report_dir = Path(report_dir)
    index = report_dir / "report.json"
    if not index.exists():
        raise InputError(f"{report_dir} has no report.json: run `latent report` (or `latent run`) first.")
    models = [_Model(label, Path(run["cache"]), None, [Path(d) for d in run["evaluations"]], Path(run["probe"]),
                     [Path(p) for p in run["projections"]])
              for label, run in json.loads(index.read_text())["models"].items()]
    return [f.png for f in _draw_figures(models, Path(out) if out else report_dir / "figures")]


# ------------------------------------------------------------------------------ documents
def _fmt(value: Any, digits: int = 3) -> str:
    try:
        v = float(value)
    except (TypeError, ValueError):
        return str(value)
    if math.isnan(v):
        return "-"
    return f"{v:.{digits}g}"


def _answer_tables(models: list[_Model]) -> tuple[pd.DataFrame, pd.DataFrame]:
    verdict_frames, evidence_frames = [], []
    for m in models:
        metrics = _read_csv(m.probe / "metrics.csv")
        ev = _evidence_rows(metrics) if metrics is not None else _evidence_rows(pd.DataFrame(
            columns=["probe", "metric", "rank", "value", "ci_low", "ci_high", "n"]))
        evidence_frames.append(ev.assign(model=m.label))
        verdict_frames.append(verdicts(ev).assign(model=m.label))
        if metrics is not None and "features" in metrics.columns and (metrics["features"] == "baseline").any():
            # the random-features baseline, judged by the same rule, next to the model it was probed with
            label = f"{m.label}: random-features baseline"
            base = _evidence_rows(metrics, "baseline")
            evidence_frames.append(base.assign(model=label))
            verdict_frames.append(verdicts(base).assign(model=label))
    return pd.concat(verdict_frames, ignore_index=True), pd.concat(evidence_frames, ignore_index=True)


def _markdown_table(frame: pd.DataFrame) -> str:
    head = "| " + " | ".join(map(str, frame.columns)) + " |"
    sep = "|" + "|".join("---" for _ in frame.columns) + "|"
    body = ["| " + " | ".join(str(v) for v in row) + " |" for row in frame.itertuples(index=False)]
    return "\n".join([head, sep, *body])


def _html_table(frame: pd.DataFrame, verdict_cols: Sequence[str] = ()) -> str:
    cells = ["<table><thead><tr>" + "".join(f"<th>{html.escape(str(c))}</th>" for c in frame.columns) + "</tr></thead><tbody>"]
    for row in frame.itertuples(index=False):
        tds = []
        for col, value in zip(frame.columns, row):
            cls = f' class="v-{str(value).split(" (")[0].replace(" ", "-")}"' if col in verdict_cols else ""
            tds.append(f"<td{cls}>{html.escape(str(value))}</td>")
        cells.append("<tr>" + "".join(tds) + "</tr>")
    cells.append("</tbody></table>")
    return "".join(cells)


def _verdict_wide(verdict: pd.DataFrame) -> pd.DataFrame:
    wide = verdict.assign(cell=lambda f: f["verdict"] + " (" + f["evidence"].astype(str) + "/" +
                          f["available"].astype(str) + ")")
    table = wide.pivot(index="rank", columns="model", values="cell").reindex([*RANK_NAMES, "all"])
    table = table[list(dict.fromkeys(verdict["model"]))]
    return table.reset_index()


def _evidence_display(evidence: pd.DataFrame) -> pd.DataFrame:
    if evidence.empty:
        return pd.DataFrame(columns=["model", "rank", "statistic", "value", "95% CI", "null mean", "z", "p", "n", "evidence"])
    order = {r: i for i, r in enumerate([*RANK_NAMES, "all"])}
    ev = evidence.assign(_o=evidence["rank"].map(order)).sort_values(["_o", "statistic", "model"], kind="stable")
    return pd.DataFrame({
        "rank": ev["rank"], "statistic": ev["statistic"], "model": ev["model"],
        "value": ev["value"].map(_fmt),
        "95% CI": [f"[{_fmt(a)}, {_fmt(b)}]" if not (pd.isna(a) or pd.isna(b)) else "-"
                   for a, b in zip(ev["ci_low"], ev["ci_high"])],
        "null mean": ev["null_mean"].map(_fmt), "z": ev["z"].map(lambda v: _fmt(v, 2)),
        "p": ev["p_value"].map(_fmt), "permutations": ev["permutations"].map(lambda v: _fmt(v, 6)), "n": ev["n"],
        "evidence": [("yes" if e else "no") if t else "too few permutations" for e, t in zip(ev["evidence"], ev["testable"])],
    })


def _treelike_table(models: list[_Model]) -> pd.DataFrame:
    """Per model: relative Gromov delta of the centroid distances (with the taxonomy's own value and the
    baseline's when probed) and the Poincare / Euclidean distortion at dimension 2."""
    rows = []
    for m in models:
        metrics = _read_csv(m.probe / "metrics.csv")
        if metrics is None or "target" not in metrics.columns:
            continue

        def pick(probe: str, metric: str, target: str, features: str = "model", method: "str | None" = None) -> str:
            sel = metrics[(metrics["probe"] == probe) & (metrics["metric"] == metric) & (metrics["target"] == target)]
            if "features" in sel.columns:
                sel = sel[sel["features"] == features]
            if method is not None and "method" in sel.columns:
                sel = sel[sel["method"] == method]
            return _fmt(sel["value"].iloc[0]) if len(sel) else "-"

        methods = metrics.loc[(metrics["probe"] == "hyperbolicity") & (metrics["metric"] == "delta_rel"), "method"]
        method = next((x for x in ("exact", "base_point", "sampled") if x in set(methods)), None)
        if method is None and not (metrics["probe"] == "hyperbolic_fit").any():
            continue
        rows.append({
            "model": m.label, "delta method": method or "-",
            "relative delta (embedding)": pick("hyperbolicity", "delta_rel", "embedding", method=method),
            "relative delta (taxonomy)": pick("hyperbolicity", "delta_rel", "taxonomy", method=method),
            "relative delta (baseline)": pick("hyperbolicity", "delta_rel", "embedding", "baseline", method),
            "Poincare distortion@2": pick("hyperbolic_fit", "poincare_distortion@2", "embedding"),
            "Euclidean distortion@2": pick("hyperbolic_fit", "euclidean_distortion@2", "embedding"),
            "Poincare MAP@2": pick("hyperbolic_fit", "poincare_map@2", "embedding"),
            "Euclidean MAP@2": pick("hyperbolic_fit", "euclidean_map@2", "embedding"),
        })
    return pd.DataFrame(rows)


TREELIKE_NOTE = (
    "Relative delta = 2 delta / diameter of the species-centroid distances (0 for a tree metric; the taxonomy's "
    "own distances are ultrametric, so 0). These have no permutation null (they do not depend on the labels): "
    "compare them with the random-features baseline when one was probed. Distortion is the mean of "
    "|d_fit - d| / d over species pairs; lower is better; MAP recovers each species' nearest taxonomic relatives.")


def _provenance(models: list[_Model], settings: ReportSettings) -> pd.DataFrame:
    rows = []
    for m in models:
        p = m.provenance
        rows.append({"model": m.label, "cache": str(m.cache), "model name": p.model, "weights": p.pretrained,
                     "preprocessing": json.dumps(p.preprocess, sort_keys=True) if p.preprocess else "-",
                     "images probed": m.info.get("n_images", "-"), "species": m.info.get("n_species", "-"),
                     "embedding dim": m.info.get("dim", "-"), "source": getattr(p, "source", "") or "-",
                     "created": getattr(p, "created", "") or "-"})
    return pd.DataFrame(rows)


def _git_commit() -> str:
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], cwd=Path(__file__).resolve().parents[1],
                             capture_output=True, text=True, timeout=10)
        return out.stdout.strip() if out.returncode == 0 else "-"
    except (OSError, subprocess.SubprocessError):
        return "-"


_CSS = """
body{font-family:system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;max-width:1100px;margin:2em auto;padding:0 1em;
color:#222;line-height:1.45}
h1{font-size:1.7em;margin-bottom:.2em}h2{margin-top:1.8em;border-bottom:1px solid #ddd;padding-bottom:.2em}
table{border-collapse:collapse;margin:.8em 0;font-size:.9em}th,td{border:1px solid #ccc;padding:.25em .6em;text-align:left}
th{background:#f2f2f2}.v-yes{background:#d7ecd9}.v-partly{background:#fbf0c9}.v-no{background:#f6d5d1}
.v-not-testable{color:#888}figure{margin:1.5em 0}figure img{max-width:100%;border:1px solid #eee}
figcaption{font-size:.9em;color:#444}.rule{font-size:.9em;background:#f7f7f7;padding:.6em .8em;border-left:3px solid #999}
code{background:#f3f3f3;padding:0 .2em}
"""


def _write_documents(out: Path, models: list[_Model], settings: ReportSettings, verdict: pd.DataFrame,
                     evidence: pd.DataFrame, figures: list[_Figure]) -> tuple[Path, Path]:
    wide = _verdict_wide(verdict)
    detail = _evidence_display(evidence)
    treelike = _treelike_table(models)
    prov = _provenance(models, settings)
    names = ", ".join(m.label for m in models)
    created = datetime.now(timezone.utc).isoformat(timespec="seconds")
    run_info = {"latent version": __version__, "git commit": _git_commit(), "python": platform.python_version(),
                "created": created, "seed": settings.seed, "permutations": settings.permutations,
                "bootstrap resamples": settings.n_boot, "distance": settings.distance,
                "evaluations": ", ".join(f"{m} ({s})" for m, s in settings.evaluations),
                "probes": ", ".join(settings.probes) if settings.probes else "all"}
    intro = (f"Does the embedding space of {names} reflect the taxonomy? Each row below is one rank; each cell "
             "gives the verdict and how many of the statistics available at that rank are evidence.")

    md = [f"# Does the embedding space reflect the taxonomy? ({names})", "", intro, "",
          _markdown_table(wide), "", f"**Rule.** {VERDICT_RULE}", "", "## Evidence per statistic", "",
          _markdown_table(detail), ""]
    if len(treelike):
        md += ["## Is the space tree-like?", "", _markdown_table(treelike), "", TREELIKE_NOTE, ""]
    md += ["## Figures", ""]
    for f in figures:
        md += [f"### {f.title}", "", f"![{f.title}]({f.png.relative_to(out).as_posix()})", "", f.caption, ""]
    md += ["## Provenance", "", _markdown_table(prov), "",
           _markdown_table(pd.DataFrame({"setting": list(run_info), "value": [str(v) for v in run_info.values()]})),
           "", "Results tables: " + ", ".join(f"`{d.relative_to(out).as_posix()}`" for m in models
                                               for d in [*m.evaluations, m.probe]), ""]
    md_path = out / "report.md"
    tmp = out / "report.md.tmp"
    tmp.write_text("\n".join(md), encoding="utf-8")
    os.replace(tmp, md_path)

    parts = [f"<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'><title>latent report: {html.escape(names)}</title>"
             f"<style>{_CSS}</style></head><body>",
             f"<h1>Does the embedding space reflect the taxonomy?</h1><p>{html.escape(intro)}</p>",
             _html_table(wide, verdict_cols=[c for c in wide.columns if c != "rank"]),
             f"<p class='rule'><b>Rule.</b> {html.escape(VERDICT_RULE)}</p>",
             "<h2>Evidence per statistic</h2><details><summary>Every statistic behind the verdicts "
             f"({len(detail)} rows): value, bootstrap CI, null mean, z, permutation p-value</summary>",
             _html_table(detail), "</details>"]
    if len(treelike):
        parts += ["<h2>Is the space tree-like?</h2>", _html_table(treelike), f"<p class='rule'>{html.escape(TREELIKE_NOTE)}</p>"]
    parts.append("<h2>Figures</h2>")
    for f in figures:
        data = base64.b64encode(f.png.read_bytes()).decode("ascii")
        parts.append(f"<figure id='{html.escape(f.key)}'><h3>{html.escape(f.title)}</h3>"
                     f"<img alt='{html.escape(f.title)}' src='data:image/png;base64,{data}'>"
                     f"<figcaption>{html.escape(f.caption)} (vector version: "
                     f"<code>{html.escape(f.png.with_suffix('.pdf').relative_to(out).as_posix())}</code>)</figcaption></figure>")
    parts += ["<h2>Provenance</h2>", _html_table(prov),
              _html_table(pd.DataFrame({"setting": list(run_info), "value": [str(v) for v in run_info.values()]})),
              "</body></html>"]
    html_path = out / "report.html"
    tmp = out / "report.html.tmp"
    tmp.write_text("".join(parts), encoding="utf-8")
    os.replace(tmp, html_path)
    return html_path, md_path


# ------------------------------------------------------------------------------ entry point
def build_report(
    caches: Sequence["str | os.PathLike[str]"],
    out: "str | os.PathLike[str]",
    *,
    settings: "ReportSettings | None" = None,
    baseline: "str | os.PathLike[str] | None" = None,
    force: bool = False,
) -> ReportResult:
    """Run what is missing for each cache and write ``report.html`` and ``report.md`` into ``out``.

    Parameters
    ----------
    caches
        One or more embedding caches (one model each), compared side by side.
    out
        Report folder (created): ``runs/``, ``figures/``, ``report.md``, ``report.html``.
    settings
        What to compute (:class:`ReportSettings`).
    baseline
        Optional random-features cache of the same images, probed next to every model.
    force
        Recompute every step even where its results exist.

    Returns
    -------
    ReportResult
    """
    from latent.cache import open_cache

    settings = settings or ReportSettings()
    if not caches:
        raise InputError("latent report needs at least one cache.")
    paths = [Path(c) for c in caches]
    missing = [str(p) for p in paths if not p.exists()]
    if missing:
        raise InputError(f"Cache(s) not found: {', '.join(missing)}.")
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    models: list[_Model] = []
    provenances = []
    for path in paths:
        with open_cache(path) as cache:
            provenances.append(cache.provenance)
    names = [str(p.model or path.stem) for p, path in zip(provenances, paths)]
    # shared parts of the file names of one model's caches ("-dim32-seed0") say nothing: drop them
    tokens = {path: path.stem.split("-") for path in paths}
    common = set.intersection(*(set(t) for t in tokens.values())) if len(paths) > 1 else set()
    short = {path: "-".join(t for t in tokens[path] if t not in common) or path.stem for path in paths}
    taken: set[str] = set()
    for path, provenance, name in zip(paths, provenances, names):
        # caches of one model (e.g. synthetic data at several signals) are told apart by their file names
        label = _label(provenance, path, taken) if names.count(name) == 1 else _label_by_stem(short[path], taken)
        taken.add(label)
        # one folder per cache file (not per display label, which depends on the other caches of the report)
        folder = out / "runs" / f"{_slug(path.stem)}-{_short_hash(str(path.resolve()))[:6]}"
        folder.mkdir(parents=True, exist_ok=True)
        evaluations = _run_evaluations(path, folder, settings, force)
        probe = _run_probes(path, folder, settings, force, None if baseline is None else Path(baseline))
        projections = _run_projections(path, folder, settings, force)
        info = json.loads((probe / "run.json").read_text()) if (probe / "run.json").exists() else {}
        models.append(_Model(label, path, provenance, evaluations, probe, projections, info))
    figures = _draw_figures(models, out / "figures")
    verdict, evidence = _answer_tables(models)
    html_path, md_path = _write_documents(out, models, settings, verdict, evidence, figures)
    runs = {m.label: {"cache": str(m.cache.resolve()), "evaluations": [str(d.resolve()) for d in m.evaluations],
                      "probe": str(m.probe.resolve()), "projections": [str(p.resolve()) for p in m.projections]}
            for m in models}
    (out / "report.json").write_text(json.dumps({"models": runs, "settings": asdict(settings),
                                                 "latent_version": __version__}, indent=2, default=str))
    log.info("report written to %s in %.1fs", html_path, time.perf_counter() - start)
    return ReportResult(out, html_path, md_path, verdict, [f.png for f in figures], runs)
