"""`latent report` / `latent run` / `latent demo`: results reused, verdict rule, documents that render."""

from __future__ import annotations

import base64
import re
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from latent.cli import main
from latent.errors import InputError
from latent.experiment import load_config, run_experiment
from latent.report import ReportSettings, build_report
from latent.synthetic import balanced_taxonomy, make_hierarchical, write_synthetic
from latent.verdict import VERDICT_COLUMNS

REPO = Path(__file__).resolve().parents[1]
FAST = ReportSettings(evaluations=(("knn", "random"),), probes=("separability",), permutations=99,
                      probe_settings={"separability": {"permutations": 2, "grid": [0.1, 10], "n_boot": 50}},
                      n_boot=50, projections=("pca",))


def synth(path: Path, signal: float, seed: int = 0) -> Path:
    write_synthetic(path, make_hierarchical(per_species=6, dim=16, signal=signal, seed=seed))
    return path


def balanced(path: Path, signal: float, seed: int = 0, dim: int = 16) -> Path:
    """Synthetic data on a balanced taxonomy with enough taxa per parent to test class..species."""
    write_synthetic(path, make_hierarchical(balanced_taxonomy(), per_species=3, dim=dim, signal=signal, seed=seed))
    return path


def test_report_two_caches_reuse_and_force(tmp_path):
    a, b = synth(tmp_path / "planted.h5", 2.0), synth(tmp_path / "none.h5", 0.0, seed=1)
    out = tmp_path / "rep"
    result = build_report([a, b], out, settings=FAST)
    html = result.html.read_text()
    assert result.html.exists() and result.markdown.exists()
    # two models side by side: labels made unique from the cache names
    assert set(result.answer["model"]) == {"planted", "none"}
    assert "planted" in html and "Provenance" in html and "Rule." in html
    assert re.search(r"class=\"v-(yes|no|partly|not-testable)\"", html)  # verdict cells are styled
    images = re.findall(r"src='data:image/png;base64,([^']+)'", html)
    assert len(images) == len(result.figures) >= 4
    assert all(base64.b64decode(i)[:8] == b"\x89PNG\r\n\x1a\n" for i in images)
    md = result.markdown.read_text()
    for fig in result.figures:
        assert fig.exists() and fig.with_suffix(".pdf").read_bytes()[:4] == b"%PDF"
        assert f"]({fig.relative_to(out).as_posix()})" in md
    # the figures redraw from the results tables alone (figures/draw_report_figures.py)
    from latent.report import draw_figures

    redrawn = draw_figures(out, tmp_path / "redrawn")
    assert sorted(p.name for p in redrawn) == sorted(p.name for p in result.figures)
    # reuse: the second report recomputes nothing
    marks = {p: p.stat().st_mtime_ns for p in out.glob("runs/*/*/metrics.csv")}
    assert len(marks) == 4  # 2 models x (1 evaluation + 1 probe run)
    build_report([a, b], out, settings=FAST)
    assert {p: p.stat().st_mtime_ns for p in out.glob("runs/*/*/metrics.csv")} == marks
    # a changed setting gets its own folder; force recomputes
    build_report([a], out, settings=ReportSettings(**{**FAST.__dict__, "seed": 1}))
    assert len(list(out.glob("runs/planted-*/evaluate-knn-random-seed1-*"))) == 1
    build_report([a, b], out, settings=FAST, force=True)
    assert any(p.stat().st_mtime_ns != t for p, t in marks.items())


def _chromium() -> "str | None":
    return shutil.which("chromium") or shutil.which("chromium-browser") or shutil.which("google-chrome")


def test_report_renders_in_headless_chromium(tmp_path):
    browser = _chromium()
    if browser is None:
        pytest.skip("no chromium on this machine (Debian: apt-get install chromium)")
    a = synth(tmp_path / "a.h5", 2.0)
    result = build_report([a], tmp_path / "rep", settings=FAST)
    shot = tmp_path / "shot.png"
    dom = subprocess.run([browser, "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                          "--virtual-time-budget=5000", "--dump-dom", result.html.as_uri()],
                         capture_output=True, text=True, timeout=120)
    assert dom.returncode == 0, dom.stderr[-2000:]
    assert "Does the embedding space reflect the taxonomy?" in dom.stdout
    assert dom.stdout.count("<img") == len(result.figures)
    subprocess.run([browser, "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                    f"--screenshot={shot}", "--window-size=1200,3000", result.html.as_uri()],
                   capture_output=True, timeout=120, check=True)
    import matplotlib.image as mpimg

    img = mpimg.imread(shot)
    assert img.shape[:2] == (3000, 1200)
    # the page is not blank: figures (non-white pixels) are drawn
    assert (img[..., :3] < 0.9).mean() > 0.02


def test_config_errors(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: x\ndata: {synth: {}}\nfoo: 1\n")
    with pytest.raises(InputError, match="unknown key.*foo"):
        load_config(bad)
    bad.write_text("name: x\ndata: {pictures: {}}\n")
    with pytest.raises(InputError, match="exactly one of import, images, synth"):
        load_config(bad)
    bad.write_text("name: x\ndata: {images: {source: imgs}}\n")
    with pytest.raises(InputError, match="models"):
        load_config(bad)
    bad.write_text("name: 'a b'\ndata: {synth: {}}\n")
    with pytest.raises(InputError, match="'name'"):
        load_config(bad)
    bad.write_text("name: x\ndata: {synth: {}}\nprobe: {permutation: 5}\n")
    with pytest.raises(InputError, match="Unknown probe setting"):
        run_experiment(bad, results=tmp_path / "r")
    assert not (tmp_path / "r").exists()
    assert main(["run", str(tmp_path / "missing.yaml")]) == 2


def test_synthetic_experiment_records_config_and_versions(tmp_path):
    config = tmp_path / "exp.yaml"
    config.write_text(
        "name: tiny\nseed: 0\ndata:\n  synth: {signal: [2.0, 0.0], per_species: 5, dim: 16}\n"
        "evaluate: [{method: knn, split: random}]\n"
        "probe: {probes: [separability], permutations: 99, settings: {separability: {permutations: 2, grid: [1.0],"
        " refine: false, n_boot: 20, splits: random}}}\n"
        "report: {projections: [pca], n_boot: 20}\n")
    result = run_experiment(config, results=tmp_path / "results")
    out = tmp_path / "results" / "tiny"
    assert (out / "config.yaml").read_text().startswith("# run from")
    import json

    versions = json.loads((out / "versions.json").read_text())
    assert versions["latent"] and "numpy" in versions["packages"] and "git_commit" in versions
    assert sorted(p.name for p in (out / "caches").glob("*.h5")) == [
        "synth-signal0-noise1-dim16-n5-seed0.h5", "synth-signal2-noise1-dim16-n5-seed0.h5"]
    assert result.report.html.exists() and len(result.report.answer["model"].unique()) == 2
    # a second run skips every step (caches and results exist)
    before = {p: p.stat().st_mtime_ns for p in out.rglob("*.h5")}
    run_experiment(config, results=tmp_path / "results")
    assert {p: p.stat().st_mtime_ns for p in out.rglob("*.h5")} == before


def test_report_planted_vs_null_in_answer(tmp_path):
    """The verdicts construct their answer: a planted hierarchy is 'yes' at every testable rank, none never is."""
    a, b = balanced(tmp_path / "planted.h5", 2.0), balanced(tmp_path / "none.h5", 0.0, seed=1)
    settings = ReportSettings(evaluations=(), probes=("distances", "clusters", "alignment"), permutations=99,
                              projections=())
    result = build_report([a, b], tmp_path / "rep", settings=settings)
    ans = result.answer.set_index(["model", "rank"])
    # one kingdom and one phylum: one partition, nothing to test
    assert ans.loc[("planted", "kingdom"), "verdict"] == "not testable"
    assert "one kingdom=phylum taxon" in ans.loc[("planted", "phylum"), "reason"]
    for rank in ("class", "order", "family", "genus", "species", "all"):
        assert ans.loc[("planted", rank), "verdict"] == "yes", rank
        assert ans.loc[("none", rank), "verdict"] == "no", rank
    # verdicts.csv is the machine-readable answer, and the documents render from it
    table = pd.read_csv(tmp_path / "rep" / "verdicts.csv")
    assert list(table.columns) == VERDICT_COLUMNS and len(table) == 2 * 8
    comparisons = pd.read_csv(tmp_path / "rep" / "comparisons.csv").set_index("rank")
    for rank in ("family", "genus", "species"):
        assert comparisons.loc[rank, "value"] < 0 and comparisons.loc[rank, "p_value"] <= 0.05, rank
    # class and order sit in 1 and 2 parents: no replication to compare on, so no small p and no CI
    assert (comparisons.loc[["class", "order"], "p_value"] >= 0.5).all()
    assert comparisons.loc[["class", "order"], "ci_low"].isna().all()
    html = result.html.read_text()
    assert "Holm" in html and "Model versus model" in html and "Supporting statistics" in html


@pytest.mark.parametrize("config", sorted((REPO / "experiments").glob("*.yaml")), ids=lambda p: p.name)
def test_shipped_experiment_configs_are_valid(config):
    from latent.experiment import _report_settings

    loaded = load_config(config)
    settings = _report_settings(loaded)
    assert settings.evaluations and loaded["name"]


def test_cub10_experiment_end_to_end(tmp_path, shared):
    """The shipped cub10 study (fewer permutations, PCA only, to stay quick) on the real embeddings."""
    import yaml

    shared("cub10")
    config = yaml.safe_load((REPO / "experiments" / "cub10.yaml").read_text())
    config["probe"] = {"permutations": 99, "settings": {"separability": {"permutations": 2, "n_boot": 50},
                                                         "hyperbolic_fit": {"steps": 200}}}
    config["report"] = {"projections": ["pca"], "n_boot": 100}
    for key in ("embeddings", "metadata", "taxonomy"):
        config["data"]["import"][key] = config["data"]["import"][key].replace(
            "${LATENT_SHARED_DATA}", str(shared("cub10").parent))
    path = tmp_path / "cub10.yaml"
    path.write_text(yaml.safe_dump(config))
    result = run_experiment(path, results=tmp_path / "results")
    answer = result.report.answer.set_index("rank")
    # one kingdom, phylum and class in cub10: nothing to test there
    for rank in ("kingdom", "phylum", "class"):
        assert answer.loc[rank, "verdict"] == "not testable", rank
    # 4 orders of one family each: one partition, one test
    assert answer.loc["order", "level"] == answer.loc["family", "level"] == "order=family"
    assert answer.loc["order", "verdict"] == answer.loc["family", "verdict"]
    # genus beyond family: 12 distinct within-family relabellings cannot reach p <= 0.05
    assert answer.loc["genus", "verdict"] == "not testable"
    assert "only 12 distinct restricted permutations" in answer.loc["genus", "reason"]
    html = result.report.html.read_text()
    assert html.count("data:image/png;base64,") == len(result.report.figures) >= 8


def test_baseline_judged_by_the_same_rule(tmp_path):
    """A random-features baseline of the same images gets its own verdicts next to the model's."""
    model, base = balanced(tmp_path / "model.h5", 2.0), balanced(tmp_path / "random.h5", 0.0, seed=9)
    settings = ReportSettings(evaluations=(), probes=("distances", "clusters", "alignment"), permutations=99,
                              projections=())
    result = build_report([model], tmp_path / "rep", settings=settings, baseline=base)
    ans = result.answer.set_index(["model", "rank"])
    label = "synthetic: random-features baseline"
    for rank in ("class", "order", "family", "genus", "species", "all"):
        assert ans.loc[("synthetic", rank), "verdict"] == "yes", rank
        assert ans.loc[(label, rank), "verdict"] == "no", rank
    assert label in result.html.read_text() and label in result.markdown.read_text()
