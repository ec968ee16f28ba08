"""Figures and evidence rows are declared beside the probe: the report only renders the registry.

A report on a small synthetic cache draws every registered figure; a probe added to the registry at test
time brings its figure and its supporting row without editing :mod:`latent.report`; a figure whose data
is absent is skipped.
"""

from __future__ import annotations

import dataclasses
import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

import latent.probes as probes_pkg
from latent.errors import InputError
from latent.figures import Evidence, FigureContext, FigureSpec, ModelRun, registered_evidence, registered_figures
from latent.probes import PROBES, ProbeSpec
from latent.probes.base import ProbeResult
from latent.report import ReportSettings, build_report, draw_figures
from latent.synthetic import make_hierarchical, write_synthetic

CHEAP_PROBES = {
    "levels": {"permutations": 19, "n_boot": 20},
    "clusters": {"permutations": 9, "n_boot": 20, "n_boot_expensive": 10},
    "separability": {"permutations": 2, "grid": [0.1, 10], "n_boot": 20},
    "alignment": {"n_boot": 20, "n_boot_rank": 20},
    "dendrogram": {"n_boot": 20},
    "distances": {"n_boot": 20},
    "hyperbolic_fit": {"dims": [2], "steps": 30},
}
ALL = ReportSettings(evaluations=(("knn", "random"),), probes=None, permutations=9, n_boot=20,
                     probe_settings=CHEAP_PROBES, verdict_permutations=19, projections=("pca",), device="cpu")


def toy_settings() -> ReportSettings:
    """The toy probe (and the primary probes a report always adds), once the toy is registered."""
    return ReportSettings(evaluations=(), probes=("toy",), permutations=9, n_boot=20,
                          probe_settings={"levels": {"permutations": 19, "n_boot": 20},
                                          "alignment": {"n_boot": 20, "n_boot_rank": 20}},
                          verdict_permutations=19, projections=(), device="cpu")


def synth(path: Path, signal: float = 2.0, seed: int = 0) -> Path:
    write_synthetic(path, make_hierarchical(per_species=6, dim=16, signal=signal, seed=seed))
    return path


def _figure_section(md: str) -> str:
    """The report from the answer to the provenance: every figure, in the sections that show them."""
    return md.split("## The answer per rank", 1)[1].split("## Provenance", 1)[0]


@pytest.fixture(scope="module")
def full_report(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("full")
    return build_report([synth(tmp / "planted.h5")], tmp / "rep", settings=ALL)


def test_every_registered_figure_is_drawn(full_report):
    drawn = {p.stem for p in full_report.figures}
    (label,) = full_report.runs  # the model's label (the synthetic cache's provenance)
    specs = registered_figures()
    assert [s.key for s in specs] == [  # the report's order, from the declarations
        "probe_summary", "accuracy", "mistake_severity", "first_divergence", "distance_by_height",
        "distance_matrix", "tanglegram", "poincare", "nulls", "projection_{method}", "distortion", "fit_loss",
        "intra_species", "emergence"]
    # every figure whose probe ran (the report runs the default probes; intra_species needs --attribute,
    # emergence --layers and a cache with per-layer embeddings)
    from latent.figures import LAYER_FIGURES
    from latent.probes import PROBES

    optional = {f.key for spec in PROBES.values() if not spec.default for f in spec.figures}
    optional |= {f.key for f in LAYER_FIGURES}
    specs = [s for s in specs if s.key not in optional]
    for spec in specs:
        key = spec.key.format(method="pca") + (f"_{label}" if spec.per_model else "")
        assert key in drawn, f"{spec.key} ({spec.draw}) was not drawn"
    assert len(drawn) == len(specs)
    # in the declared order, each with its title and caption (placeholders filled)
    md = _figure_section(full_report.markdown.read_text())
    titles = re.findall(r"^### (.+)\n\n!\[", md, flags=re.M)  # figure headings (an image follows)
    assert titles[0] == "Evidence per rank: observed statistic against its null"
    assert f"PCA projection of the images ({label})" in titles
    assert titles.index(f"Centroid distances in taxonomic order ({label})") < titles.index("Convergence of the fits")
    n_images = len(pd.read_csv(full_report.runs[label]["projections"][0]))
    assert f"PCA of the image embeddings ({n_images} images)" in md
    assert "{" not in md
    # the figures redraw from the results tables alone, the same files
    redrawn = draw_figures(full_report.out, full_report.out.parent / "redrawn")
    assert [p.name for p in redrawn] == [p.name for p in full_report.figures]


def test_drawn_content_comes_from_the_tables(full_report):
    """What the adapters draw: axis labels and panel titles, not only files."""
    models = [ModelRun(label, Path(run["cache"]), None, [Path(d) for d in run["evaluations"]], Path(run["probe"]),
                       [Path(p) for p in run["projections"]]) for label, run in full_report.runs.items()]
    context = FigureContext(models)
    by_key = {s.key: s for s in registered_figures()}
    fig, axes = by_key["probe_summary"].load()(context)
    panel_titles = [ax.get_title() for ax in np.ravel(axes)]
    assert any("rank_distance_ratio" in t for t in panel_titles)  # the primary statistic
    assert any("mantel_r_spearman" in t for t in panel_titles)
    assert any("silhouette" in t for t in panel_titles)  # a supporting row
    fig, ax = by_key["accuracy"].load()(context)
    labels = " ".join(a.get_ylabel() for a in np.ravel(ax))
    assert "accuracy" in labels
    drawings = by_key["projection_{method}"].load()(context, models[0])
    assert [d.fields["method"] for d in drawings] == ["pca"]
    assert drawings[0].fields["n"] == len(pd.read_csv(models[0].projections[0]))


# ------------------------------------------------------------------------------ a probe added at test time
def toy(data, options) -> ProbeResult:
    """A toy probe: the mean norm of the embeddings, one row at rank ``all`` with a fake null."""
    value = float(np.linalg.norm(data.X, axis=1).mean())
    rows = pd.DataFrame([{"metric": "toy_norm", "rank": "all", "value": value,
                          "ci_low": value - 0.1, "ci_high": value + 0.1, "n": len(data.X), "null_mean": 0.5 * value,
                          "null_std": 0.1, "z": 3.0, "p_value": 0.01, "permutations": 99}])
    return ProbeResult("toy", rows)


def report_toy_bar(context: FigureContext):
    """The toy probe's figure: a bar of its metric per model (None when the toy did not run)."""
    from matplotlib.figure import Figure

    rows = context.probe_metrics()
    if rows is None:
        return None
    rows = rows[rows["probe"] == "toy"]
    if not len(rows):
        return None
    fig = Figure()
    ax = fig.add_subplot()
    ax.bar(rows["model"], rows["value"])
    ax.set_title("toy norm per model")
    ax.set_ylabel("mean norm")
    return fig, ax


def report_absent(context: FigureContext, model: ModelRun):
    """A per-model figure whose table no probe writes: always skipped."""
    table = context.probe_table(model, "no_such_table.csv")
    return None if table is None else (_ for _ in ()).throw(AssertionError("table should be absent"))


TOY_SPEC = ProbeSpec(
    "toy", "tests.test_figures_registry:toy", "toy probe", default=False,
    figures=(FigureSpec("toy_bar", "Toy norm", "The mean norm of the embeddings.",
                        "tests.test_figures_registry:report_toy_bar"),
             FigureSpec("toy_absent", "Never drawn ({model})", "No data.",
                        "tests.test_figures_registry:report_absent", per_model=True)),
    evidence=(Evidence("toy", "toy_norm", {}, "greater", "toy mean norm"),))


@pytest.fixture
def with_toy(monkeypatch):
    monkeypatch.setitem(PROBES, "toy", TOY_SPEC)
    assert probes_pkg.PROBES["toy"] is TOY_SPEC


def test_a_new_probe_brings_its_figure_and_evidence(tmp_path, with_toy):
    from latent.verdict import SUPPORTING

    assert SUPPORTING[-1] == ("toy", "toy_norm", {}, "greater", "toy mean norm")
    assert [e.probe for e in registered_evidence()][-1] == "toy"
    result = build_report([synth(tmp_path / "a.h5")], tmp_path / "rep", settings=toy_settings())
    names = [p.stem for p in result.figures]
    assert "toy_bar" in names
    assert not any(n.startswith("toy_absent") for n in names)  # its data is absent: skipped, no error
    md = result.markdown.read_text()
    assert "### Toy norm" in _figure_section(md) and "The mean norm of the embeddings." in md
    assert "Never drawn" not in md
    # the toy's evidence row is in the supporting table and in the evidence figure's data
    supporting = pd.read_csv(result.out / "supporting.csv")
    toy_rows = supporting[supporting["probe"] == "toy"]
    assert list(toy_rows["statistic"]) == ["toy mean norm"] and bool(toy_rows["supports"].iloc[0])
    assert "toy mean norm" in md
    # the drawn figure is the toy's bar
    run = result.runs["a"] if "a" in result.runs else next(iter(result.runs.values()))
    models = [ModelRun("a", Path(run["cache"]), None, [], Path(run["probe"]), [])]
    fig, ax = report_toy_bar(FigureContext(models))
    assert ax.get_title() == "toy norm per model" and len(ax.patches) == 1
    # and it is a panel of the evidence figure (the report's probe summary reads the registry's rows)
    from latent.plotting.nulls import report_probe_summary

    fig, axes = report_probe_summary(FigureContext(models))
    # the direction the toy's evidence row declares is marked on its panel
    assert "toy: toy_norm\n\u2191 higher = taxonomy" in [a.get_title() for a in np.ravel(axes)]


def test_the_registry_without_the_toy_is_unchanged():
    from latent.verdict import SUPPORTING

    assert "toy" not in PROBES
    assert [row[:2] for row in SUPPORTING] == [
        ("distances", "intra_inter_ratio"), ("clusters", "silhouette"), ("clusters", "calinski_harabasz"),
        ("dendrogram", "fmi"), ("dendrogram", "clade_recovery"), ("separability", "linear_accuracy"),
        ("alignment", "cka_taxonomy"), ("dendrogram", "cophenetic_taxonomy_corr")]
    assert all(len(row) == 5 for row in SUPPORTING)


def test_absent_data_is_skipped_not_an_error(tmp_path):
    """A report folder whose probe wrote only its metrics: the figures of the missing tables are skipped."""
    from latent.report import _draw_figures

    probe = tmp_path / "probe"
    probe.mkdir()
    pd.DataFrame([{"probe": "separability", "metric": "linear_accuracy", "rank": "genus", "value": 0.9,
                   "ci_low": 0.8, "ci_high": 1.0, "n": 10}]).to_csv(probe / "metrics.csv", index=False)
    model = ModelRun("m", tmp_path / "m.h5", None, [], probe, [])
    assert _draw_figures([model], tmp_path / "figures") == []  # no null, no evaluation, no npz: nothing drawn
    assert list((tmp_path / "figures").iterdir()) == []


def test_a_missing_placeholder_names_the_figure(tmp_path, monkeypatch):
    from latent.report import _draw_figures

    bad = dataclasses.replace(TOY_SPEC, name="toy", figures=(
        FigureSpec("toy_{nope}", "Toy", "c", "tests.test_figures_registry:report_toy_bar"),))
    monkeypatch.setitem(PROBES, "toy", bad)
    probe = tmp_path / "probe"
    probe.mkdir()
    pd.DataFrame([{"probe": "toy", "metric": "toy_norm", "rank": "all", "value": 1.0}]).to_csv(
        probe / "metrics.csv", index=False)
    with pytest.raises(InputError, match=r"Figure 'toy_\{nope\}'.*'nope'"):
        _draw_figures([ModelRun("m", tmp_path / "m.h5", None, [], probe, [])], tmp_path / "figures")
    assert not list((tmp_path / "figures").glob("*.png"))


def test_bad_declarations_are_refused(monkeypatch):
    with pytest.raises(InputError, match=r"'draw' must be 'module:function'.*draw='report_toy_bar'"):
        FigureSpec("toy_bar", "Toy", "c", "report_toy_bar")
    bad = dataclasses.replace(TOY_SPEC, evidence=(Evidence("toy", "toy_norm", {}, "up", "toy mean norm"),))
    monkeypatch.setitem(PROBES, "toy", bad)
    from latent.verdict import supporting_table

    with pytest.raises(InputError, match=r"Evidence row toy toy_norm: 'direction'.*'up'"):
        supporting_table(pd.DataFrame(columns=["probe", "metric", "rank", "value"]))
