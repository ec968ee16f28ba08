"""`latent evaluate` end to end: tables written, numbers equal to their reference recomputation,
planted answers found, nulls at chance, bad input explained."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from latent.errors import InputError, LatentError
from latent.evaluate import evaluate_cache
from latent.importer import import_embeddings
from latent.ranks import RANK_NAMES
from latent.results import COLUMNS
from latent.synthetic import builtin_taxonomy, builtin_taxonomy_path, make_hierarchical, write_synthetic

REPO = Path(__file__).resolve().parents[1]


def synth_cache(path: Path, *, signal: float, per_species: int = 12, seed: int = 0) -> Path:
    write_synthetic(path, make_hierarchical(per_species=per_species, dim=32, signal=signal, seed=seed))
    return path


def metric(frame: pd.DataFrame, rank: str, name: str) -> pd.Series:
    rows = frame[(frame["rank"] == rank) & (frame["metric"] == name)]
    assert len(rows) == 1, (rank, name, rows)
    return rows.iloc[0]


def lca_from_lineages(a: pd.Series, b: pd.Series) -> np.ndarray:
    """Reference LCA height from two columns of full species lineages ("K;P;C;O;F;G;S")."""
    out = []
    for x, y in zip(a, b):
        xs, ys = x.split(";"), y.split(";")
        shared = next((i for i in range(7) if xs[i] != ys[i]), 7)
        out.append(7 - shared)
    return np.array(out)


@pytest.fixture(scope="module")
def cub10_linear(tmp_path_factory):
    from tests.conftest import shared_path

    root = shared_path("cub10")
    tmp = tmp_path_factory.mktemp("cub")
    import_embeddings(root / "bird_embeddings.npy", tmp / "cub10.h5", metadata=root / "bird_metadata.json",
                      id_column="path", taxonomy=root / "taxonomy.csv", join_on="species=cub_class")
    report = evaluate_cache(tmp / "cub10.h5", tmp / "out", method="linear", n_boot=200, seed=0)
    return report, tmp / "out"


def test_cub10_linear_tables_with_cis(cub10_linear):
    report, out = cub10_linear
    metrics = pd.read_csv(out / "metrics.csv", keep_default_na=False, na_values=[""])
    assert list(metrics.columns[:6]) == list(COLUMNS)
    assert {"n_species", "n_taxa", "ci_note", "note"} <= set(metrics.columns)
    informative = ("order", "family", "genus", "species")
    n_candidates = report.info["predictor_info"]["n_classes"]
    for rank in informative:
        for name in ("top1", "top5", "balanced_accuracy", "macro_f1"):
            if name == "top5" and n_candidates[rank] <= 5:  # trivially 1 with 5 or fewer classes: not reported
                assert not ((metrics["rank"] == rank) & (metrics["metric"] == name)).any()
                continue
            row = metric(metrics, rank, name)
            assert 0 <= row["ci_low"] <= row["value"] <= row["ci_high"] <= 1, (rank, name)
            assert row["n_species"] == 10 and row["n_taxa"] == n_candidates[rank]  # the CI resamples 10 species
    # one kingdom, phylum and class: predicted trivially; the rows stay, marked as not informative, no CI
    # (issue 11: they used to read 1.000 [1.000, 1.000])
    for rank in ("kingdom", "phylum", "class"):
        assert metric(metrics, rank, "n_classes")["value"] == 1 and metric(metrics, rank, "top1")["value"] == 1
        row = metric(metrics, rank, "top1")
        assert row["note"].startswith("one taxon at this rank: not testable") and np.isnan(row["ci_low"]) and np.isnan(row["ci_high"])
        assert not ((metrics["rank"] == rank) & (metrics["metric"] == "top5")).any()
    assert "trivial (one taxon)" in report.summary() and "1.000 (no CI)" not in report.summary()
    assert metric(metrics, "species", "top1")["n"] == len(pd.read_parquet(out / "predictions.parquet"))
    assert metric(metrics, "species", "top1")["value"] > 0.5  # real CLIP features separate these birds
    for name in ("mistake_severity", "hdist@1", "hdist@5", "hP", "hR", "hF", "hca"):
        metric(metrics, "all", name)
    run = json.loads((out / "run.json").read_text())
    assert run["method"] == "linear" and run["seed"] == 0 and "predictor_info" in run
    assert (out / "severity.csv").exists() and (out / "divergence.csv").exists() and (out / "confusions.csv").exists()


def test_cub10_hierarchical_metrics_equal_recomputation_from_predictions(cub10_linear):
    hiclass_metrics = pytest.importorskip("hiclass.metrics")
    _, out = cub10_linear
    metrics = pd.read_csv(out / "metrics.csv")
    pred = pd.read_parquet(out / "predictions.parquet")
    for rank in RANK_NAMES:  # per-rank top-1 from the written predictions
        labelled = pred[f"true_{rank}"] != ""
        top1 = (pred.loc[labelled, f"pred_lineage_{rank}"] == pred.loc[labelled, f"true_lineage_{rank}"]).mean()
        assert metric(metrics, rank, "top1")["value"] == pytest.approx(top1, abs=1e-12)
    # hP/hR/hF and HCA leave out the one-taxon ranks (issue 11): one kingdom, phylum and class here
    informative = ("order", "family", "genus", "species")
    assert metric(metrics, "all", "hP")["note"] == "ranks left out: kingdom, phylum, class (one taxon)"
    true_cols = [f"true_lineage_{r}" for r in informative]
    pred_cols = [f"pred_lineage_{r}" for r in informative]
    y_true, y_pred = pred[true_cols].to_numpy(dtype=object), pred[pred_cols].to_numpy(dtype=object)
    assert metric(metrics, "all", "hP")["value"] == pytest.approx(hiclass_metrics.precision(y_true, y_pred), abs=1e-12)
    assert metric(metrics, "all", "hR")["value"] == pytest.approx(hiclass_metrics.recall(y_true, y_pred), abs=1e-12)
    assert metric(metrics, "all", "hF")["value"] == pytest.approx(hiclass_metrics.f1(y_true, y_pred), abs=1e-12)
    hca = (y_true == y_pred).all(axis=1).mean()
    assert metric(metrics, "all", "hca")["value"] == pytest.approx(hca, abs=1e-12)
    # severity is defined on the species prediction's lineage in per-rank mode too
    height = lca_from_lineages(pred["true_lineage_species"], pred["pred_lineage_species"])
    mistakes = height[height > 0]
    sev = metric(metrics, "all", "mistake_severity")
    assert sev["n"] == len(mistakes)
    if len(mistakes):
        assert sev["value"] == pytest.approx(mistakes.mean(), abs=1e-12)


def test_strong_signal_near_perfect_zero_signal_at_chance(tmp_path):
    strong = evaluate_cache(synth_cache(tmp_path / "s.h5", signal=1.5), tmp_path / "s", method="knn", n_boot=100).metrics
    for rank in RANK_NAMES:
        assert metric(strong, rank, "top1")["value"] > 0.95, rank
    assert metric(strong, "all", "hdist@1")["value"] < 0.1

    null = evaluate_cache(synth_cache(tmp_path / "z.h5", signal=0.0, per_species=16), tmp_path / "z", method="knn",
                          n_boot=100, mode="flat").metrics
    tax = builtin_taxonomy()
    top1 = metric(null, "species", "top1")
    assert top1["ci_low"] <= 1 / tax.n_species + 0.02 and top1["value"] < 0.1
    # Expected severity of a random wrong species: mean LCA height over pairs of different species
    # (every species has the same number of images, so every true species is equally likely).
    D = tax.distances().astype(float)
    off = ~np.eye(len(D), dtype=bool)
    expected = D[off].mean()
    sev = metric(null, "all", "mistake_severity")
    assert sev["ci_low"] - 0.15 <= expected <= sev["ci_high"] + 0.15
    assert abs(sev["value"] - expected) < 0.4


def test_zero_shot_end_to_end_with_random_tiny_text(tmp_path):
    from latent.extract import embed_images
    from latent.text import embed_text

    rng = np.random.default_rng(0)
    species = ["Passer domesticus", "Passer montanus", "Canis lupus", "Quercus robur"]
    for sp in species:
        (tmp_path / "img" / sp).mkdir(parents=True)
        for k in range(3):
            Image.fromarray(rng.integers(0, 255, (32, 32, 3), dtype=np.uint8)).save(tmp_path / "img" / sp / f"{k}.png")
    cache = tmp_path / "c.h5"
    embed_images(tmp_path / "img", cache, model="random-tiny", taxonomy=builtin_taxonomy_path(), join_on="folder=species",
                 workers=0, progress=False)
    with pytest.raises(InputError, match="latent embed-text"):
        evaluate_cache(cache, tmp_path / "zs", method="zero-shot", n_boot=50)
    embed_text(cache, template_set="single", device="cpu")
    flat = evaluate_cache(cache, tmp_path / "zs", method="zero-shot", n_boot=50)
    assert metric(flat.metrics, "species", "top1")["n"] == 12
    pred = pd.read_parquet(tmp_path / "zs" / "predictions.parquet")
    assert set(pred["pred_species"]) <= set(species)  # only the cache's taxa are candidates
    per_rank = evaluate_cache(cache, tmp_path / "zs2", method="zero-shot", mode="per-rank", n_boot=50)
    assert metric(per_rank.metrics, "genus", "top1")["n"] == 12
    clade = evaluate_cache(cache, tmp_path / "zs3", method="zero-shot", clade="genus=Passer", n_boot=50)
    pred = pd.read_parquet(tmp_path / "zs3" / "predictions.parquet")
    assert len(pred) == 6 and set(pred["pred_genus"]) == {"Passer"}
    with pytest.raises(LatentError, match="no labelled images|No genus named 'Homo'"):
        evaluate_cache(cache, tmp_path / "zs4", method="zero-shot", clade="genus=Homo", n_boot=50)


def test_centroid_shots_and_species_disjoint(tmp_path):
    cache = synth_cache(tmp_path / "s.h5", signal=1.0, per_species=8)
    report = evaluate_cache(cache, tmp_path / "c", method="centroid", shots=1, folds=3, n_boot=50)
    folds = set(report.metrics["fold"].astype(str))
    assert folds == {"0", "1", "2", "mean"}
    with pytest.raises(InputError, match="shots"):
        evaluate_cache(cache, tmp_path / "c2", method="centroid", shots=8, folds=1, n_boot=50)
    disjoint = evaluate_cache(cache, tmp_path / "d", method="knn", split="species-disjoint", n_boot=50).metrics
    assert not ((disjoint["rank"] == "species") & (disjoint["metric"] == "top1")).any()  # not predicted
    assert metric(disjoint, "genus", "top1")["value"] > 0.5
    # hca covers the predicted ranks only (kingdom..genus here), so it cannot exceed genus top-1 nor be 0
    assert 0 < metric(disjoint, "all", "hca")["value"] <= metric(disjoint, "genus", "top1")["value"]
    with pytest.raises(InputError, match="species-disjoint split cannot use --mode flat"):
        evaluate_cache(cache, tmp_path / "d2", method="knn", split="species-disjoint", mode="flat")


def test_cli_evaluate_prints_summary_and_explains_errors(tmp_path):
    cache = synth_cache(tmp_path / "s.h5", signal=1.0, per_species=6)
    env = dict(os.environ, PYTHONPATH=str(REPO))
    run = lambda *a: subprocess.run([sys.executable, "-m", "latent.cli", "evaluate", *map(str, a)], capture_output=True, text=True, env=env)
    proc = run(cache, "--method", "knn", "--out", tmp_path / "e", "--bootstrap", 50)
    assert proc.returncode == 0, proc.stderr
    assert "species" in proc.stdout and "mistake_severity" in proc.stdout
    proc = run(cache, "--method", "zero-shot", "--out", tmp_path / "z")
    assert proc.returncode == 2 and "latent embed-text" in proc.stderr and "Traceback" not in proc.stderr
    proc = run(cache, "--method", "knn", "--out", tmp_path / "q", "--clade", "tribe=X")
    assert proc.returncode == 2 and "clade" in proc.stderr and "Traceback" not in proc.stderr


def test_cli_evaluate_refuses_another_caches_results_without_force(tmp_path, capsys):
    from latent.cli import main

    a = synth_cache(tmp_path / "a.h5", signal=1.0, per_species=4)
    b = synth_cache(tmp_path / "b.h5", signal=0.5, per_species=4, seed=1)
    out = tmp_path / "e"
    assert main(["evaluate", str(a), "--method", "knn", "--out", str(out), "--bootstrap", "20"]) == 0
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    capsys.readouterr()
    assert main(["evaluate", str(b), "--method", "knn", "--out", str(out), "--bootstrap", "20"]) == 2
    err = capsys.readouterr().err
    assert f"{out} holds results of {a.resolve()} (model synthetic); use another --out or --force" in err
    assert "Traceback" not in err and len(err.strip().splitlines()) == 1
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before
    assert main(["evaluate", str(a), "--method", "knn", "--out", str(out), "--bootstrap", "20", "--seed", "1"]) == 0
    assert json.loads((out / "run.json").read_text())["seed"] == 1  # the same cache re-runs in place
    assert main(["evaluate", str(b), "--method", "knn", "--out", str(out), "--bootstrap", "20", "--force"]) == 0
    assert json.loads((out / "run.json").read_text())["cache"] == str(b.resolve())
