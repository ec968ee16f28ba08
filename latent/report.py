"""``latent report``: from caches to one document that answers "does this space reflect the taxonomy?".

For each cache (one model each; several side by side) :func:`build_report` runs the steps of
:mod:`latent.pipeline` (which states the one reuse rule: a step is reused when its run record holds the
same identity, i.e. the same inputs, parameters and latent version):

- evaluations (``latent evaluate``; by default a linear probe on a random split and kNN on a
  species-disjoint split) into ``DIR/runs/<cache>/evaluate-<method>-<split>-seed<S>-boot<B>/``;
- probes (``latent probe``) into ``DIR/runs/<cache>/probe-<distance>-perm<N>-seed<S>-<hash>/``;
- 2-D projections of the images into ``DIR/runs/<cache>/projection-<method>-seed<S>.csv``.

The whole run holds ``DIR/.latent.lock``: a second ``latent report`` on the same ``DIR`` is refused.
Running the steps (and the model comparisons) is :func:`latent.pipeline.run_report_steps` and
:func:`latent.pipeline.comparison_step`; the verdict rule is :mod:`latent.verdict`; this module only
renders (:func:`render_report`): the figures declared in the registry (:mod:`latent.figures`: each probe's
:attr:`~latent.probes.ProbeSpec.figures`, :data:`latent.evaluate.FIGURES`, the projections) from the
results tables only (``DIR/figures/*.png`` and ``*.pdf``), and ``DIR/report.md`` and ``DIR/report.html``
(self-contained: figures embedded). A new probe thus brings its figures and its supporting rows
(:attr:`~latent.probes.ProbeSpec.evidence`) without editing this module. The report starts with the
answer: per rank, each statistic with its effect size, CI, permutation p-value and a verdict reached by
the rule in :data:`VERDICT_RULE`; then the figures; then the provenance.
"""

from __future__ import annotations

import base64
import functools
import html
import json
import logging
import os
import platform
import shutil
import time
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Sequence

import pandas as pd

from latent._version import __version__
from latent.errors import InputError
from latent.ranks import RANK_NAMES

__all__ = ["ReportSettings", "ReportResult", "build_report", "render_report", "draw_figures", "VERDICT_RULE"]

log = logging.getLogger(__name__)

from latent.verdict import ALPHA, VERDICT_COLUMNS, VERDICT_RULE, supporting_table, verdict_table  # noqa: E402,F401

from latent import pipeline  # noqa: E402
from latent.coverage import COVERAGE_NOTE  # noqa: E402
from latent.tables import format_ci, format_number  # noqa: E402
from latent.figures import FigureSpec, ModelRun  # noqa: E402
from latent.pipeline import PRIMARY_PROBES, ReportSettings, atomic_write_text, folder_lock  # noqa: E402,F401
from latent.pipeline import git_commit as _git_commit  # noqa: E402  (kept importable here)


@dataclass(frozen=True)
class ReportResult:
    """Where the report is and what it found.

    ``answer`` is ``verdicts.csv`` (:data:`latent.verdict.VERDICT_COLUMNS`, one row per model and rank);
    ``comparisons`` is ``comparisons.csv`` (:data:`latent.compare.COMPARISON_COLUMNS`; empty with one model
    and no baseline).
    """

    out: Path
    html: Path
    markdown: Path
    answer: pd.DataFrame
    figures: list[Path]
    runs: dict[str, dict[str, Any]]
    comparisons: pd.DataFrame = field(default_factory=pd.DataFrame)

    def summary(self) -> str:
        lines = [f"report: {self.html}"]
        for model, table in self.answer.groupby("model", sort=False):
            seen, parts = set(), []
            for r in table.itertuples():
                if r.level in seen:
                    continue
                seen.add(r.level)
                parts.append(f"{r.level.replace('=', ' = ')} {r.verdict}")
            lines.append(f"  {model}: {', '.join(parts)}")
        lines.append(f"  {len(self.figures)} figures in {self.out / 'figures'}")
        return "\n".join(lines)


# ------------------------------------------------------------------------------ figures
@dataclass
class _Figure:
    key: str
    title: str
    caption: str
    png: Path
    section: str = "other"


def _drawings(drawn: Any) -> list[Any]:
    """A draw function's result as a list of :class:`latent.figures.Drawing` (none when it drew nothing)."""
    from latent.figures import Drawing

    if drawn is None:
        return []
    items = drawn if isinstance(drawn, list) else [drawn]
    out = []
    for item in items:
        if item is None:
            continue
        if not isinstance(item, Drawing):
            item = Drawing(item[0] if isinstance(item, tuple) else item)
        out.append(item)
    return out


def _draw_figures(models: "Sequence[ModelRun]", fig_dir: Path) -> list[_Figure]:
    """Every registered figure (:func:`latent.figures.registered_figures`) whose data is there, in order.

    Cross-model figures are drawn once; a run of consecutive ``per_model`` figures is drawn model by model.
    """
    import matplotlib.pyplot as plt

    import latent.plotting as lp
    from latent.figures import FigureContext, registered_figures

    fig_dir.mkdir(parents=True, exist_ok=True)
    context = FigureContext(list(models))
    made: list[_Figure] = []

    def emit(spec: FigureSpec, drawn: Any, model: "ModelRun | None") -> None:
        for drawing in _drawings(drawn):
            fields = {"model": model.label if model is not None else "", **drawing.fields}
            try:
                key = spec.key.format_map(fields) + (f"_{model.slug}" if model is not None else "")
                title, caption = spec.title.format_map(fields), spec.caption.format_map(fields)
            except (KeyError, IndexError, ValueError) as e:
                plt.close(drawing.figure)
                raise InputError(f"Figure {spec.key!r} ({spec.draw}): its key, title or caption names {e}, which "
                                 f"its draw function did not give (it gave: {', '.join(fields)}); return a "
                                 f"latent.figures.Drawing with that field.") from None
            paths = lp.save_figure(drawing.figure, fig_dir / key)
            plt.close(drawing.figure)
            made.append(_Figure(key, title, caption, next(p for p in paths if p.suffix == ".png"), spec.section))

    specs = registered_figures()
    i = 0
    while i < len(specs):
        if not specs[i].per_model:
            emit(specs[i], specs[i].load()(context), None)
            i += 1
            continue
        j = i
        while j < len(specs) and specs[j].per_model:
            j += 1
        for model in models:
            for spec in specs[i:j]:
                emit(spec, spec.load()(context, model), model)
        i = j
    return made


def _model_name_of(provenance: Any) -> "str | None":
    """The registry / open_clip name that made a cache (its reload record first), None when not recorded."""
    if provenance is None:
        return None
    load = (getattr(provenance, "extra", None) or {}).get("load") or {}
    name = load.get("model") or getattr(provenance, "model", None)
    return None if not name or name in ("unknown", "synthetic") else str(name)


def _model_cards(models: "Sequence[ModelRun]", fig_dir: Path) -> tuple[list[tuple[str, Any, str]], list[_Figure]]:
    """Per model its card (:func:`latent.modelcard.describe_model`, offline, no weights read) or why there is
    none, and the figures of the "The model" section: the card as a figure (for the slides) and, when the
    cache was embedded from a folder of images that is still there, the model's-eye view of 8 of them
    (:func:`latent.show_inputs.show_inputs`)."""
    import matplotlib.pyplot as plt

    import latent.plotting as lp
    from latent.figures import slug
    from latent.modelcard import describe_model
    from latent.plotting.modelcard import plot_model_card

    cards, figures = [], []
    for m in models:
        name = _model_name_of(m.provenance)
        load = (getattr(m.provenance, "extra", None) or {}).get("load") or {}
        if name is None:
            cards.append((m.label, None, "the cache does not record the model that made it (imported or synthetic)"))
            continue
        try:
            card = describe_model(name, load.get("pretrained"))
        except Exception as e:  # a name the registry and open_clip do not know: say so, never guess
            cards.append((m.label, None, f"{name!r} cannot be described offline ({str(e).splitlines()[0]})"))
            continue
        cards.append((m.label, card, ""))
        fig = plot_model_card(card)
        key = f"model_card_{slug(m.label)}"
        paths = lp.save_figure(fig, fig_dir / key)
        plt.close(fig)
        figures.append(_Figure(key, f"The model: {m.label}", "Architecture read from the built module (random "
                               "weights, nothing downloaded), preprocessing from its transform, training data and "
                               "text from the registry's sourced facts (latent models --describe " + name + ").",
                               next(p for p in paths if p.suffix == ".png"), "model"))
        source = Path(getattr(m.provenance, "source", "") or "")
        if str(source) not in ("", ".") and source.is_dir():
            from latent.show_inputs import show_inputs

            try:
                png = show_inputs(source, fig_dir / f".inputs-{slug(m.label)}", model=name,
                                  pretrained=load.get("pretrained"), n=8, preprocess=load.get("preprocess", "openclip"))
            except Exception as e:  # unreadable folder: the section says so instead of failing the report
                log.warning("report: no model's-eye view for %s: %s", m.label, str(e).splitlines()[0])
                continue
            key = f"model_inputs_{slug(m.label)}"
            for suffix in (".png", ".pdf"):
                png.with_suffix(suffix).replace(fig_dir / f"{key}{suffix}")
            shutil.rmtree(png.parent, ignore_errors=True)
            figures.append(_Figure(key, f"What {m.label} receives", "8 images of the embedded folder: left, the "
                                   "original with the area the model never sees shaded; right, the model's input "
                                   "after its preprocessing, de-normalised, at its real resolution.",
                                   fig_dir / f"{key}.png", "model"))
    return cards, figures


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
    models = [ModelRun(label, Path(run["cache"]), None, [Path(d) for d in run["evaluations"]], Path(run["probe"]),
                       [Path(p) for p in run["projections"]], {},
                       Path(run["emergence"]) if run.get("emergence") else None)
              for label, run in json.loads(index.read_text())["models"].items()]
    return [f.png for f in _draw_figures(models, Path(out) if out else report_dir / "figures")]


# ------------------------------------------------------------------------------ documents
def _read_csv(path: Path) -> "pd.DataFrame | None":
    """The table at ``path`` (None when absent): read once per version of the file (its size and modification
    time) however many sections ask, and handed out as a copy a section may change."""
    path = Path(path)
    if not path.exists():
        return None
    stat = path.stat()
    return _read_csv_once(str(path.resolve()), stat.st_mtime_ns, stat.st_size).copy()


@functools.lru_cache(maxsize=128)
def _read_csv_once(path: str, mtime_ns: int, size: int) -> pd.DataFrame:
    return pd.read_csv(path, keep_default_na=False, na_values=[""])


_fmt = format_number


def _answer_tables(models: list[ModelRun]) -> tuple[pd.DataFrame, pd.DataFrame]:
    """``(verdicts, supporting)`` of every model, and of its random-features baseline when probed."""
    verdict_frames, support_frames = [], []
    for m in models:
        metrics = _read_csv(m.probe / "metrics.csv")
        if metrics is None:
            metrics = pd.DataFrame(columns=["probe", "metric", "rank", "value", "ci_low", "ci_high", "n"])
        verdict_frames.append(verdict_table(metrics, m.label))
        support_frames.append(supporting_table(metrics, m.label))
        if "features" in metrics.columns and (metrics["features"] == "baseline").any():
            # the random-features baseline, judged by the same rule, next to the model it was probed with
            label = f"{m.label}: random-features baseline"
            verdict_frames.append(verdict_table(metrics, label, features="baseline"))
            support_frames.append(supporting_table(metrics, label, features="baseline"))
    return pd.concat(verdict_frames, ignore_index=True), pd.concat(support_frames, ignore_index=True)


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
            word = str(value).split(":")[0].split(" (")[0].strip()  # "yes: 0.8 ..." / "not testable (why)"
            cls = f' class="v-{word.replace(" ", "-")}"' if col in verdict_cols else ""
            tds.append(f"<td{cls}>{html.escape(str(value))}</td>")
        cells.append("<tr>" + "".join(tds) + "</tr>")
    cells.append("</tbody></table>")
    return "".join(cells)


_ci = format_ci


def _verdict_detail(verdict: pd.DataFrame) -> pd.DataFrame:
    v = verdict.drop_duplicates(["model", "level"])
    return pd.DataFrame({
        "model": v["model"], "rank": v["level"].str.replace("=", " = "), "verdict": v["verdict"],
        "reason": v["reason"].fillna(""), "statistic": v["primary_statistic"], "value": v["value"].map(_fmt),
        "95% CI": [_ci(a, b) for a, b in zip(v["ci_low"], v["ci_high"])],
        "null mean": v["null_mean"].map(_fmt), "effect": v["effect"].map(_fmt),
        "p": v["p_value"].map(_fmt), "p (Holm)": v["p_adjusted"].map(_fmt),
        "species": v["n_species"].map(lambda x: _fmt(x, 6)), "taxa": v["n_taxa"].map(lambda x: _fmt(x, 6)),
        "permutations": v["permutations"].map(lambda x: _fmt(x, 6)),
    })


def _comparison_display(comparisons: pd.DataFrame) -> pd.DataFrame:
    c = comparisons.drop_duplicates(["model", "versus", "level"])
    return pd.DataFrame({
        "model": c["model"], "versus": c["versus"], "rank": c["level"].str.replace("=", " = "),
        "difference of effects": c["value"].map(_fmt), "95% CI": [_ci(a, b) for a, b in zip(c["ci_low"], c["ci_high"])],
        "p (paired)": c["p_value"].map(_fmt), "species": c["n_species"].map(lambda x: _fmt(x, 6)),
        "dim": c["dim"].map(lambda x: _fmt(x, 6)), "matched on": c["matched_on"],
        "note": [n if not pd.isna(n) and n else (cn if not pd.isna(cn) else "") for n, cn in zip(c["note"], c["ci_note"])],
    })


COMPARISON_NOTE = (
    "Per rank, the difference between two models' effects (each species' ratio minus its mean under the "
    "restricted null) on the same species; negative: the rank is more visible in the first model. Both spaces "
    "are projected onto the same number of PCA axes first (the smaller dimension), since raw statistics grow "
    "with the dimension. CI: paired bootstrap over the parent taxa; p: paired permutation test swapping the two "
    "models' values for whole parent taxa (two-sided).")


def _evidence_display(evidence: pd.DataFrame) -> pd.DataFrame:
    if evidence.empty:
        return pd.DataFrame(columns=["rank", "statistic", "model", "value", "95% CI", "null mean", "z", "p",
                                     "p (BY)", "permutations", "n", "supports"])
    order = {r: i for i, r in enumerate([*RANK_NAMES, "all"])}
    ev = evidence.assign(_o=evidence["rank"].astype(str).str.split(" = ").str[0].map(order))
    ev = ev.sort_values(["_o", "statistic", "model"], kind="stable")
    return pd.DataFrame({
        "rank": ev["rank"], "statistic": ev["statistic"], "model": ev["model"],
        "value": ev["value"].map(_fmt), "95% CI": [_ci(a, b) for a, b in zip(ev["ci_low"], ev["ci_high"])],
        "null mean": ev["null_mean"].map(_fmt), "z": ev["z"].map(lambda v: _fmt(v, 2)),
        "p": ev["p_value"].map(_fmt), "p (BY)": ev["p_adjusted"].map(_fmt),
        "permutations": ev["permutations"].map(lambda v: _fmt(v, 6)), "n": ev["n"],
        "supports": ["yes" if s else "no" for s in ev["supports"]],
    })


def _treelike_table(models: list[ModelRun]) -> pd.DataFrame:
    """Per model: relative Gromov delta of the centroid distances (with the taxonomy's own value and the
    baseline's when probed) and the Poincare / Euclidean distortion at dimension 2."""
    rows = []
    for m in models:
        metrics = _read_csv(m.probe / "metrics.csv")
        if metrics is None or "target" not in metrics.columns:
            continue

        def select(probe: str, metric: str, target: str, features: str = "model",
                   method: "str | None" = None) -> pd.DataFrame:
            sel = metrics[(metrics["probe"] == probe) & (metrics["metric"] == metric) & (metrics["target"] == target)]
            if "features" in sel.columns:
                sel = sel[sel["features"] == features]
            if method is not None and "method" in sel.columns:
                sel = sel[sel["method"] == method]
            return sel

        def pick(probe: str, metric: str, target: str, features: str = "model", method: "str | None" = None) -> str:
            sel = select(probe, metric, target, features, method)
            if not len(sel):
                return "-"
            if probe == "hyperbolic_fit" and "converged" in sel.columns and str(sel["converged"].iloc[0]) == "False":
                return "not converged"
            return _fmt(sel["value"].iloc[0])

        def random_of(method: "str | None") -> str:
            sel = select("hyperbolicity", "delta_rel", "embedding", method=method)
            if not len(sel) or "random_low" not in sel.columns or pd.isna(sel["random_low"].iloc[0]):
                return "-"
            r = sel.iloc[0]
            return f"{_fmt(r['random_mean'])} [{_fmt(r['random_low'])}, {_fmt(r['random_high'])}]"

        # the method the sentence reads: one with a random baseline first (latent.probes.hyperbolic)
        embedding = select("hyperbolicity", "delta_rel", "embedding")
        with_random = (set(embedding.loc[embedding["random_low"].notna(), "method"])
                       if "random_low" in embedding.columns else set())
        methods = set(embedding["method"]) if "method" in embedding.columns else set()
        ranked = sorted(methods, key=lambda x: (x not in with_random, ("sampled", "exact", "base_point").index(x)
                                                if x in ("sampled", "exact", "base_point") else 9))
        method = ranked[0] if ranked else None
        if method is None and not (metrics["probe"] == "hyperbolic_fit").any():
            continue
        rows.append({
            "model": m.label, "delta method": method or "-",
            "relative delta (embedding)": pick("hyperbolicity", "delta_rel", "embedding", method=method),
            "relative delta (random Gaussian, 95% PI)": random_of(method),
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
    "they are compared with random Gaussian features of the same size (several seeded draws, 95% prediction "
    "interval) and with the random-features baseline when one was probed. Fits that did not converge are not "
    "compared. Distortion is the mean of "
    "|d_fit - d| / d over species pairs; lower is better; MAP recovers each species' nearest taxonomic relatives.")


#: The shape probe's rows shown in the report (metric, column heading), per model and features.
SHAPE_COLUMNS = (
    ("norm_median", "median norm"), ("mean_cosine", "mean cosine"), ("mean_cosine_centred", "mean cosine (centred)"),
    ("participation_ratio", "participation ratio"), ("participation_ratio_centred", "participation ratio (centred)"),
    ("components_90_centred", "PCs for 90% (centred)"), ("k_occurrence_skew", "k-occurrence skew"),
    ("antihub_share", "anti-hubs"), ("mantel_spearman", "Mantel r"), ("mantel_spearman_centred", "Mantel r (centred)"),
)


def _shape_table(models: list[ModelRun]) -> pd.DataFrame:
    """Per model (and its baseline when probed): the ``shape`` probe's summary of the space."""
    rows = []
    for m in models:
        metrics = _read_csv(m.probe / "metrics.csv")
        if metrics is None:
            continue
        shape = metrics[metrics["probe"] == "shape"]
        if not len(shape):
            continue
        for features in (["model", "baseline"] if "features" in shape.columns else ["model"]):
            sel = shape[shape["features"] == features] if "features" in shape.columns else shape
            if not len(sel):
                continue
            values = dict(zip(sel["metric"], sel["value"]))
            row = {"model": m.label if features == "model" else f"{m.label} (baseline)"}
            space = sel["space"].dropna().iloc[0] if "space" in sel.columns and sel["space"].notna().any() else ""
            row["vectors"] = space or "-"
            row.update({heading: _fmt(values.get(metric, float("nan"))) for metric, heading in SHAPE_COLUMNS})
            rows.append(row)
    return pd.DataFrame(rows)


SHAPE_NOTE = (
    "Raw vectors (before the L2 normalisation every other statistic uses). Mean cosine: over all image pairs "
    "(anisotropy; 0 for an isotropic space), and after subtracting the mean vector. Participation ratio: "
    "(sum of PCA eigenvalues)^2 / sum of their squares, an effective number of dimensions. k-occurrence skew: "
    "how unevenly images are among the 10 nearest neighbours of others (hubness); anti-hubs: share of images "
    "that are nobody's neighbour. Mantel r: Spearman correlation of species-centroid and taxonomic distances, "
    "before and after centring (the alignment probe gives its null). Descriptive: no null.")


def _coverage_tables(models: list[ModelRun]) -> list[tuple[str, pd.DataFrame]]:
    """Per model: what could be tested at each rank (:func:`latent.coverage.rank_coverage`), from its probe
    run's ``species.csv`` and ``metrics.csv`` and its evaluations' ``metrics.csv``."""
    from latent.coverage import COVERAGE_COLUMNS, rank_coverage

    out = []
    for m in models:
        species = (pd.read_csv(m.probe / "species.csv", keep_default_na=False)
                   if (m.probe / "species.csv").exists() else None)
        if species is None:
            continue
        evaluations = {}
        for d in m.evaluations:
            info = json.loads((d / "run.json").read_text()) if (d / "run.json").exists() else {}
            name = f"{info.get('method', d.name)} ({info.get('split', '')})".replace(" ()", "")
            evaluations[name] = _read_csv(d / "metrics.csv")
        out.append((m.label, rank_coverage(species, _read_csv(m.probe / "metrics.csv"), evaluations)[COVERAGE_COLUMNS]))
    return out


_CSS = """
body{font-family:system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;max-width:1100px;margin:2em auto;padding:0 1em;
color:#222;line-height:1.45}
h1{font-size:1.7em;margin-bottom:.2em}h2{margin-top:1.8em;border-bottom:1px solid #ddd;padding-bottom:.2em}
table{border-collapse:collapse;margin:.8em 0;font-size:.9em;max-width:100%}td{overflow-wrap:anywhere}th,td{border:1px solid #ccc;padding:.25em .6em;text-align:left}
th{background:#f2f2f2}.v-yes{background:#d7ecd9}.v-partly{background:#fbf0c9}.v-no{background:#f6d5d1}
.v-not-testable{color:#888}figure{margin:1.5em 0}figure img{max-width:100%;border:1px solid #eee}
figcaption{font-size:.9em;color:#444}.rule{font-size:.9em;background:#f7f7f7;padding:.6em .8em;border-left:3px solid #999}
code{background:#f3f3f3;padding:0 .2em}
.answer{font-size:1.1em;font-weight:600}table.compact td{overflow-wrap:anywhere}figure.key img{width:100%}
table.provenance{table-layout:fixed;width:100%}table.provenance td{word-break:break-word;overflow-wrap:anywhere}
table.provenance td:first-child{width:28%}details{margin:.8em 0}
"""


#: The question every report answers (its title).
QUESTION = "Does the embedding space reflect the taxonomy?"

SECTION_TITLES = {"evaluation": "Evaluation: can the ranks be predicted?",
                  "geometry": "Geometry: do taxa form clusters, and do distances follow the tree?",
                  "hierarchy": "Hierarchy: is each rank visible beyond its parent?",
                  "tree-likeness": "Is the space tree-like?", "learned": "Learned from images or from names?",
                  "other": "Other figures"}


def _join(words: list[str]) -> str:
    return words[0] if len(words) == 1 else ", ".join(words[:-1]) + " and " + words[-1]


def answer_sentence(verdict: pd.DataFrame, model: str) -> str:
    """One sentence with a model's answer per rank, from its :func:`latent.verdict.verdict_table` rows."""
    rows = verdict[verdict["model"] == model].drop_duplicates("level")
    groups: dict[str, list[str]] = {"yes": [], "no": [], "not testable": []}
    whole = ""
    for r in rows.itertuples(index=False):
        if r.level == "all":
            whole = r.verdict
            continue
        groups.setdefault(r.verdict, []).append(r.level.replace("=", " = "))
    parts = []
    if groups["yes"]:
        parts.append(f"yes at {_join(groups['yes'])}")
    if groups["no"]:
        parts.append(f"no at {_join(groups['no'])}")
    if groups["not testable"]:
        parts.append(f"not testable at {_join(groups['not testable'])}")
    tail = {"yes": "; the whole hierarchy: yes", "no": "; the whole hierarchy: no",
            "not testable": "; the whole hierarchy: not testable"}.get(whole, "")
    return f"{model}: " + "; ".join(parts) + tail + "."


def _answer_cells(verdict: pd.DataFrame) -> pd.DataFrame:
    """One row per tested partition, one column per model: verdict, value [CI], adjusted p, units."""
    order = {r: i for i, r in enumerate([*RANK_NAMES, "all"])}
    levels = list(dict.fromkeys(verdict.sort_values("rank", key=lambda x: x.map(order), kind="stable")["level"]))
    table = {"rank": [lv.replace("=", " = ") for lv in levels]}
    for model in dict.fromkeys(verdict["model"]):
        rows = verdict[verdict["model"] == model].drop_duplicates("level").set_index("level")
        cells = []
        for lv in levels:
            if lv not in rows.index:
                cells.append("-")
                continue
            r = rows.loc[lv]
            units = f"{_fmt(r['n_species'], 6)} species"
            if r["verdict"] == "not testable":
                cells.append(f"not testable ({r['reason']})" if r["reason"] else "not testable")
                continue
            ci = _ci(r["ci_low"], r["ci_high"])
            cells.append(f"{r['verdict']}: {_fmt(r['value'])}{' ' + ci if ci != '-' else ''} vs null "
                         f"{_fmt(r['null_mean'])}, p_adj {_fmt(r['p_adjusted'], 2)}, {units}")
        table[model] = cells
    return pd.DataFrame(table)


_RANK_PLURAL = {"kingdom": "kingdoms", "phylum": "phyla", "class": "classes", "order": "orders",
                "family": "families", "genus": "genera", "species": "species"}


def _data_summary(models: list[ModelRun]) -> pd.DataFrame:
    """Per model: what was embedded by which model and weights, and how many taxa per rank."""
    rows = []
    for m in models:
        p = m.provenance
        species = (pd.read_csv(m.probe / "species.csv", keep_default_na=False)
                   if (m.probe / "species.csv").exists() else None)
        name = getattr(p, "model", "") if p is not None else ""
        row = {"model": m.label,
               "model name": name if name and name != "unknown" else
               "not recorded (imported without --model)",
               "weights": (getattr(p, "pretrained", "") if getattr(p, "pretrained", "") not in ("", "unknown", None)
                           else "not recorded") if p is not None else "-",
               "images": m.info.get("n_images", "-"), "species": m.info.get("n_species", "-")}
        if species is not None:
            images = pd.to_numeric(species.get("images"), errors="coerce")
            if images is not None:
                row["species"] = f"{row['species']} ({int((images == 1).sum())} with one image)"
            taxa = []
            for rank in RANK_NAMES[:-1]:
                if rank in species.columns:
                    named = species[rank].astype(str).str.strip() != ""
                    n = int(species.loc[named, RANK_NAMES[:RANK_NAMES.index(rank) + 1]]
                            .astype(str).agg(";".join, axis=1).nunique())
                    taxa.append(f"{n} {_RANK_PLURAL[rank] if n != 1 else rank}")
            row["taxa"] = ", ".join(taxa)
        row["dim"] = m.info.get("dim", "-")
        rows.append(row)
    return pd.DataFrame(rows)


def _evaluation_sentence(models: list[ModelRun]) -> str:
    """What the evaluations found, in one or two sentences (top-1 at the finest and coarsest ranks scored)."""
    parts = []
    for m in models:
        for d in m.evaluations:
            metrics = _read_csv(d / "metrics.csv")
            info = json.loads((d / "run.json").read_text()) if (d / "run.json").exists() else {}
            if metrics is None:
                continue
            top1 = metrics[(metrics["metric"] == "top1")]
            if "fold" in top1.columns and (top1["fold"].astype(str) == "mean").any():
                top1 = top1[top1["fold"].astype(str) == "mean"]
            if "n_taxa" in top1.columns:
                top1 = top1[pd.to_numeric(top1["n_taxa"], errors="coerce").fillna(2) >= 2]
            ranked = [r for r in RANK_NAMES[::-1] if r in set(top1["rank"])]
            if not ranked:
                continue
            pick = [ranked[0]] if len(ranked) == 1 else [ranked[0], ranked[-1]]
            said = []
            for rank in pick:
                row = top1[top1["rank"] == rank].iloc[0]
                ci = (f" [{row['ci_low']:.3f}, {row['ci_high']:.3f}]"
                      if pd.notna(row["ci_low"]) and pd.notna(row["ci_high"]) else "")
                said.append(f"{row['value']:.3f}{ci} at {rank} (n = {int(row['n'])} test images)")
            label = f"{info.get('method', d.name)} on a {info.get('split', '')} split".replace(" on a  split", "")
            parts.append(f"{m.label}, {label}: top-1 {' and '.join(said)}")
    return ("; ".join(parts) + ".") if parts else ""


def _support_sentence(evidence: pd.DataFrame) -> str:
    if evidence.empty:
        return ""
    out = []
    for model, table in evidence.groupby("model", sort=False):
        k = int(table["supports"].sum())
        out.append(f"{model}: {k} of {len(table)} supporting statistics support the taxonomy "
                   f"(Benjamini-Yekutieli-adjusted p <= {ALPHA:g} on the side the taxonomy predicts)")
    return "; ".join(out) + ". They never change a verdict."


def _comparison_sentence(comparisons: pd.DataFrame) -> str:
    if comparisons is None or comparisons.empty:
        return ""
    c = comparisons.drop_duplicates(["model", "versus", "level"])
    out = []
    for (a, b), table in c.groupby(["model", "versus"], sort=False):
        p = pd.to_numeric(table["p_value"], errors="coerce")
        clearer = [lv.replace("=", " = ") for lv, v, q in zip(table["level"], table["value"], p) if q <= ALPHA and v < 0]
        weaker = [lv.replace("=", " = ") for lv, v, q in zip(table["level"], table["value"], p) if q <= ALPHA and v > 0]
        said = []
        if clearer:
            said.append(f"{a} shows {_join(clearer)} more clearly than {b}")
        if weaker:
            said.append(f"{b} shows {_join(weaker)} more clearly than {a}")
        out.append("; ".join(said) if said else f"no rank differs between {a} and {b} at p <= {ALPHA:g}")
    return "; ".join(out) + " (paired tests over parent taxa; not adjusted for the number of ranks)."


def _treelike_sentence(models: list[ModelRun]) -> str:
    try:
        from latent.probes.hyperbolic import treelike_sentence
    except ImportError:  # pragma: no cover - the probe module always has it
        return ""
    out = []
    for m in models:
        metrics = _read_csv(m.probe / "metrics.csv")
        if metrics is None:
            continue
        text = treelike_sentence(metrics[metrics["probe"].isin(["hyperbolicity", "hyperbolic_fit"])])
        if text:
            out.append(f"{m.label}: {text}" if len(models) > 1 else text)
    return " ".join(out)


def _provenance_rows(models: list[ModelRun], run_info: dict[str, Any]) -> pd.DataFrame:
    """Provenance as ``setting, value`` rows (long values wrap instead of widening the page)."""
    rows = []
    for m in models:
        p = m.provenance
        prefix = f"{m.label}: " if len(models) > 1 else ""
        items = {"cache": str(m.cache), "model name": getattr(p, "model", "-"),
                 "weights": getattr(p, "pretrained", "-"),
                 "preprocessing": json.dumps(p.preprocess, sort_keys=True) if p is not None and p.preprocess else "-",
                 "embedding source": getattr(p, "source", "") or "-", "cache created": getattr(p, "created", "") or "-",
                 "results": ", ".join(d.name for d in [*m.evaluations, m.probe])}
        permutations = _permutations_used(m)
        if permutations:
            items["permutations used"] = permutations
        rows += [{"setting": prefix + k, "value": str(v)} for k, v in items.items()]
    rows += [{"setting": k, "value": str(v)} for k, v in run_info.items()]
    return pd.DataFrame(rows)


def _permutations_used(m: ModelRun) -> str:
    """Per probe, the permutations its rows used (:func:`latent.probes.common.permutations_used`)."""
    from latent.probes.common import permutations_used

    asked = (m.info.get("options") or {}).get("permutations") if m.info else None
    return permutations_used(_read_csv(m.probe / "metrics.csv"), asked)


def _audits(models: list[ModelRun], out: Path) -> list[tuple[str, Path, list[str]]]:
    """``latent audit`` folders of the report's caches (sub-folders of the report folder or of the cache's
    folder whose ``audit.json`` names the cache), with their headlines."""
    from latent.audit.run import find_audits

    found = []
    for m in models:
        for folder in find_audits(m.cache, [out, m.cache.parent]):
            record = json.loads((folder / "audit.json").read_text())
            found.append((m.label, folder, list(record.get("headlines", []))))
    return found


class _Doc:
    """The report as blocks rendered to Markdown and HTML alike (so both say the same)."""

    def __init__(self, out: Path) -> None:
        self.out = out
        self.md: list[str] = []
        self.html: list[str] = []

    def h(self, level: int, text: str, anchor: str = "") -> None:
        self.md += ["#" * level + " " + text, ""]
        ident = f" id='{html.escape(anchor)}'" if anchor else ""
        self.html.append(f"<h{level}{ident}>{html.escape(text)}</h{level}>")

    def p(self, text: str, cls: str = "") -> None:
        if not text:
            return
        self.md += [text, ""]
        self.html.append(f"<p{f' class={chr(39)}{cls}{chr(39)}' if cls else ''}>{html.escape(text)}</p>")

    def table(self, frame: pd.DataFrame, verdict_cols: Sequence[str] = (), cls: str = "") -> None:
        self.md += [_markdown_table(frame), ""]
        body = _html_table(frame, verdict_cols=verdict_cols)
        self.html.append(body.replace("<table>", f"<table class='{cls}'>", 1) if cls else body)

    def details(self, summary: str, frame: pd.DataFrame) -> None:
        self.md += [f"{summary}:", "", _markdown_table(frame), ""]
        self.html += [f"<details><summary>{html.escape(summary)}</summary>", _html_table(frame), "</details>"]

    def figure(self, f: _Figure, cls: str = "") -> None:
        self.md += [f"### {f.title}", "", f"![{f.title}]({f.png.relative_to(self.out).as_posix()})", "", f.caption, ""]
        data = base64.b64encode(f.png.read_bytes()).decode("ascii")
        self.html.append(
            f"<figure id='{html.escape(f.key)}'{f' class={chr(39)}{cls}{chr(39)}' if cls else ''}>"
            f"<h3>{html.escape(f.title)}</h3><img alt='{html.escape(f.title)}' src='data:image/png;base64,{data}'>"
            f"<figcaption>{html.escape(f.caption)} (vector version: "
            f"<code>{html.escape(f.png.with_suffix('.pdf').relative_to(self.out).as_posix())}</code>)</figcaption>"
            "</figure>")


def _write_documents(out: Path, models: list[ModelRun], settings: ReportSettings, verdict: pd.DataFrame,
                     evidence: pd.DataFrame, comparisons: pd.DataFrame, figures: list[_Figure],
                     cards: "Sequence[tuple[str, Any, str]]" = ()) -> tuple[Path, Path]:
    """``report.md`` and ``report.html``: first the question, the data, the model and the answer per rank with
    one key figure; then a section per question, each opening with what it found; then the provenance."""
    answer = _answer_cells(verdict)
    vdetail = _verdict_detail(verdict)
    detail = _evidence_display(evidence)
    if verdict["model"].nunique() == 1:  # one model: its name is in the title, not in every row
        vdetail, detail = vdetail.drop(columns="model"), detail.drop(columns="model")
    compared = _comparison_display(comparisons) if len(comparisons) else None
    treelike = _treelike_table(models)
    shape = _shape_table(models)
    coverage = _coverage_tables(models)
    names = ", ".join(m.label for m in models)
    created = datetime.now(timezone.utc).isoformat(timespec="seconds")
    run_info = {"latent version": __version__, "git commit": _git_commit(), "python": platform.python_version(),
                "created": created, "seed": settings.seed,
                "permutations asked (primary, restricted null)": settings.probe_settings.get("levels", {}).get(
                    "permutations", settings.verdict_permutations),
                "permutations asked (supporting, free null)": settings.permutations,
                "bootstrap resamples": settings.n_boot, "distance": settings.distance,
                "alpha (Holm, per model)": ALPHA,
                "comparisons at a common dimension": settings.common_dim,
                "evaluations": ", ".join(f"{m} ({s})" for m, s in settings.evaluations),
                "probes": ", ".join(settings.probes) if settings.probes else "all"}
    doc = _Doc(out)
    doc.h(1, QUESTION)
    doc.p(f"{'Models' if len(models) > 1 else 'Model'}: {names}.", cls="answer")
    doc.p(f"Each rank is tested with one primary statistic chosen before looking (distance to relatives inside "
          f"the taxon over distance to relatives outside it within the parent; below 1: the rank is visible beyond "
          f"its parent) against a restricted permutation null, Holm-adjusted over the ranks of a model "
          f"(alpha {ALPHA:g}). Machine-readable: verdicts.csv, supporting.csv, comparisons.csv.")
    doc.h(2, "Data and model", "data")
    doc.table(_data_summary(models), cls="compact")
    for label, folder, headlines in _audits(models, out):
        doc.p(f"Audit of the data ({label}): {folder / 'audit.md'}. " + "; ".join(headlines) + ".")
    doc.h(2, "The answer per rank", "answer")
    for model in dict.fromkeys(verdict["model"]):
        doc.p(answer_sentence(verdict, model), cls="answer")
    doc.table(answer, verdict_cols=[c for c in answer.columns if c != "rank"])
    for f in figures:
        if f.section == "answer":
            doc.figure(f, cls="key")
    doc.p(f"Rule. {VERDICT_RULE}", cls="rule")

    _model_section(doc, cards, figures)

    doc.h(2, "What could be tested", "coverage")
    for label, table in coverage:
        if len(coverage) > 1:
            doc.h(3, label)
        doc.table(table)
    doc.p(COVERAGE_NOTE, cls="rule")

    evaluation_figures = [f for f in figures if f.section == "evaluation"]
    if evaluation_figures or any(m.evaluations for m in models):
        doc.h(2, SECTION_TITLES["evaluation"], "evaluation")
        doc.p(_evaluation_sentence(models))
        for f in evaluation_figures:
            doc.figure(f)

    doc.h(2, SECTION_TITLES["geometry"], "geometry")
    doc.p(_support_sentence(evidence))
    doc.details(f"Supporting statistics (free null; {len(detail)} rows): value, species-bootstrap CI, null mean, z, "
                "permutation p-value and its Benjamini-Yekutieli adjustment", detail)
    if len(shape):
        doc.h(3, "The shape of the space")
        doc.table(shape)
        doc.p(SHAPE_NOTE, cls="rule")
    for f in figures:
        if f.section == "geometry":
            doc.figure(f)

    doc.h(2, SECTION_TITLES["hierarchy"], "hierarchy")
    doc.p("The primary test per rank, with its CI (a bootstrap over parent taxa), null mean, effect, raw and "
          "Holm-adjusted p, and the units it rests on.")
    doc.table(vdetail, verdict_cols=["verdict"])
    for f in figures:
        if f.section == "hierarchy":
            doc.figure(f)

    if len(treelike) or any(f.section == "tree-likeness" for f in figures):
        doc.h(2, SECTION_TITLES["tree-likeness"], "treelike")
        doc.p(_treelike_sentence(models))
        if len(treelike):
            doc.table(treelike)
            doc.p(TREELIKE_NOTE, cls="rule")
        for f in figures:
            if f.section == "tree-likeness":
                doc.figure(f)

    if compared is not None:
        doc.h(2, "Model versus model", "comparisons")
        doc.p(_comparison_sentence(comparisons))
        doc.table(compared)
        doc.p(COMPARISON_NOTE, cls="rule")

    _learned_section(doc, models, verdict, figures)

    # (the model card as a figure is for the slides: the report holds the card as a table)
    other = [f for f in figures if f.section not in ("answer", "model")
             and (f.section not in SECTION_TITLES or f.section == "other")]
    if other:
        doc.h(2, SECTION_TITLES["other"], "other")
        for f in other:
            doc.figure(f)

    doc.h(2, "Provenance", "provenance")
    doc.table(_provenance_rows(models, run_info), cls="provenance")
    doc.p(("Slides (16:9 PDF, one figure per page): figures/slides.pdf. " if settings.slides else
           "Slides (16:9 PDF, one figure per page): `latent report --slides`. ") + "Results tables: "
          + ", ".join(d.relative_to(out).as_posix() for m in models for d in [*m.evaluations, m.probe]
                      if d.is_relative_to(out)))
    md_path = atomic_write_text(out / "report.md", "\n".join(doc.md))
    page = (f"<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'><title>latent report: {html.escape(names)}"
            f"</title><style>{_CSS}</style></head><body>" + "".join(doc.html) + "</body></html>")
    html_path = atomic_write_text(out / "report.html", page)
    return html_path, md_path


def _model_section(doc: _Doc, cards: "Sequence[tuple[str, Any, str]]", figures: list[_Figure]) -> None:
    """"The model": per model one sentence (architecture, size, training), its card in a collapsed table, and
    the model's-eye view of the embedded images when there is one."""
    if not cards:
        return
    doc.h(2, "The model", "model")
    for label, card, reason in cards:
        if card is None:
            doc.p(f"{label}: no model card ({reason}).")
            continue
        v, p = card.vision, card.parameters
        grid = "x".join(str(g) for g in v.get("patch_grid") or []) or "-"
        patch = "x".join(str(g) for g in v.get("patch_size") or []) or "-"
        size = "x".join(str(g) for g in v.get("image_size") or []) or "-"
        doc.p(f"{label}: {card.name}, a {v.get('type', 'vision')} of {v.get('layers')} blocks (width {v.get('width')}) "
              f"that cuts a {size} px input into {v.get('patch_tokens')} patches of {patch} px ({grid}); "
              f"{card.embed_dim}-d embeddings; {p['total'] / 1e6:.1f}M parameters"
              f"{'' if card.text is not None else ', no text tower'}. Trained on: "
              f"{card.training.get('trained_on')}. Text in training: {card.training.get('training_text')}.")
        rows = pd.DataFrame(card.rows(), columns=["section", "field", "value"])
        doc.details(f"Model card of {label} (latent models --describe {card.name})", rows)
    for f in figures:
        if f.section == "model" and f.key.startswith("model_inputs_"):
            doc.figure(f)


def _learned_section(doc: _Doc, models: list[ModelRun], verdict: pd.DataFrame, figures: list[_Figure]) -> None:
    """"Learned from images or from names?" (:mod:`latent.learned`): shown when the report holds something
    that can tell (an image-only or random model, text probes, or per-layer results)."""
    from latent.learned import LEARNED_NOTE, NAMES_KIND, learned_sentence, learned_tables, training_text

    own = verdict[verdict["model"].isin([m.label for m in models])]
    tables = learned_tables(models, own, {m.label: _read_csv(m.probe / "metrics.csv") for m in models})
    kinds = {training_text(m.provenance)[0] for m in models}
    layer_figures = [f for f in figures if f.section == "learned"]
    if not (layer_figures or "text" in tables or "alignment" in tables or (kinds - {NAMES_KIND} and len(models) > 1)):
        return
    doc.h(2, SECTION_TITLES["learned"], "learned")
    doc.p(learned_sentence(models, own))
    doc.table(tables["spaces"])
    if "text" in tables:
        doc.h(3, "The text space of the names")
        doc.table(tables["text"])
    if "alignment" in tables:
        doc.details("Each image against its own taxon's text and the siblings' (image_text_alignment)",
                    tables["alignment"])
    for f in layer_figures:
        doc.figure(f)
    doc.p(LEARNED_NOTE, cls="rule")


def _summary_lines(models: list[ModelRun], verdict: pd.DataFrame) -> list[str]:
    """The first screen in lines (the slides' title page): data, model and the answer per model."""
    lines = []
    for row in _data_summary(models).to_dict("records"):
        lines.append(f"{row['model']}: {row['model name']} ({row['weights']}); {row['images']} images, "
                     f"{row['species']} species; {row.get('taxa', '')}")
    lines += [answer_sentence(verdict, model) for model in dict.fromkeys(verdict["model"])]
    return lines


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
        Recompute every step even where its results exist (see :mod:`latent.pipeline` for the reuse rule).

    Returns
    -------
    ReportResult

    Raises
    ------
    InputError
        No cache, a cache or the baseline missing, or ``out`` holds something else (a file, another kind
        of latent output).
    CacheError
        Another latent process is writing into ``out`` (its ``.latent.lock`` is held).
    """
    settings = settings or ReportSettings()
    if not caches:
        raise InputError("latent report needs at least one cache.")
    paths = [Path(c) for c in caches]
    missing = [str(p) for p in paths if not p.exists()]
    if missing:
        raise InputError(f"Cache(s) not found: {', '.join(missing)}.")
    if baseline is not None and not Path(baseline).exists():
        raise InputError(f"--baseline {baseline} not found; give the random-features cache of the same images.")
    base = None if baseline is None else Path(baseline)
    if settings.layers:
        from latent.cache import open_cache

        def has_layers(path: Path) -> bool:
            with open_cache(path) as cache:
                return bool(cache.layers)

        if not any(has_layers(p) for p in paths):
            raise InputError("--layers draws where in the network each rank appears, but none of the caches holds "
                             "per-layer embeddings; make them with latent embed ... --layers all.")
    with folder_lock(out, "report") as out:
        start = time.perf_counter()
        models = pipeline.run_report_steps(paths, out, settings, force=force, baseline=base)
        comparisons = pipeline.comparison_step(models, settings, base)
        result = render_report(out, models, settings, comparisons)
        log.info("report written to %s in %.1fs", result.html, time.perf_counter() - start)
        return result


def render_report(out: "str | os.PathLike[str]", models: "Sequence[ModelRun]", settings: ReportSettings,
                  comparisons: "pd.DataFrame | None" = None) -> ReportResult:
    """Render a report from its results tables only: figures, answer tables, documents.

    Runs nothing: the steps (:func:`latent.pipeline.run_report_steps`) and the model comparisons
    (:func:`latent.pipeline.comparison_step`) come first. The figures are those declared in the registry
    (:func:`latent.figures.registered_figures`) whose data is there; the answer is reached by
    :mod:`latent.verdict`.

    Parameters
    ----------
    out
        The report folder (the caller holds its lock).
    models
        The report's models and their run folders (:class:`latent.figures.ModelRun`).
    settings
        What was computed (shown in the provenance; recorded in ``report.json``).
    comparisons
        ``comparisons.csv`` rows (:data:`latent.compare.COMPARISON_COLUMNS`); None: no comparison.

    Returns
    -------
    ReportResult
    """
    from latent.compare import COMPARISON_COLUMNS

    out = Path(out)
    models = list(models)
    if comparisons is None:
        comparisons = pd.DataFrame(columns=COMPARISON_COLUMNS)
    figures = _draw_figures(models, out / "figures")
    cards, card_figures = _model_cards(models, out / "figures")
    figures = [*figures, *card_figures]
    verdict, evidence = _answer_tables(models)
    for name, table in (("verdicts.csv", verdict), ("supporting.csv", evidence), ("comparisons.csv", comparisons)):
        atomic_write_text(out / name, table.to_csv(index=False))
    html_path, md_path = _write_documents(out, models, settings, verdict, evidence, comparisons, figures, cards)
    runs = {m.label: {"cache": str(m.cache.resolve()), "evaluations": [str(d.resolve()) for d in m.evaluations],
                      "probe": str(m.probe.resolve()), "projections": [str(p.resolve()) for p in m.projections],
                      "emergence": None if m.emergence is None else str(m.emergence.resolve())}
            for m in models}
    summary_lines = _summary_lines(models, verdict)
    figure_records = [{"key": f.key, "title": f.title, "caption": f.caption, "section": f.section,
                       "png": f.png.relative_to(out).as_posix()} for f in figures]
    atomic_write_text(out / "report.json", json.dumps({"models": runs, "settings": asdict(settings),
                                                       "latent_version": __version__, "title": QUESTION,
                                                       "summary_lines": summary_lines, "figures": figure_records},
                                                      indent=2, default=str))
    if settings.slides:
        _write_slides(out, figures, summary_lines)
    return ReportResult(out, html_path, md_path, verdict, [f.png for f in figures], runs, comparisons)


def _write_slides(out: Path, figures: list[_Figure], summary_lines: list[str]) -> Path:
    """``figures/slides.pdf``: the title page (question, data, answer) and the figures in section order."""
    from latent.figures import SECTIONS
    from latent.slides import Slide, write_slides

    in_sections = sorted(figures, key=lambda f: SECTIONS.index(f.section) if f.section in SECTIONS else len(SECTIONS))
    return write_slides(out / "figures" / "slides.pdf", [Slide(f.title, f.png, f.caption) for f in in_sections],
                        title=QUESTION, subtitle_lines=summary_lines)
