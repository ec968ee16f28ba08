"""`latent probe`: the runner writes one long table plus figure inputs; bad input is explained."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from latent.cli import main
from latent.errors import InputError
from latent.probes import PROBES, parse_probes
from latent.probes.base import ProbeOptions
from latent.probes.run import probe_cache
from latent.results import COLUMNS, read_results
from latent.synthetic import make_hierarchical, write_synthetic

FAST = ["--set", "separability.permutations=2", "--set", "separability.grid=[0.1,10]",
        "--set", "separability.splits=\"random\"", "--set", "separability.n_boot=50"]


def synth(path: Path, signal: float, seed: int = 0) -> Path:
    write_synthetic(path, make_hierarchical(per_species=6, dim=16, signal=signal, seed=seed))
    return path


def test_list_names_every_probe(capsys):
    assert main(["probe", "--list"]) == 0
    out = capsys.readouterr().out
    for name in PROBES:
        assert name in out
    for name in ("distances", "clusters", "separability", "alignment", "dendrogram", "hyperbolicity",
                 "hyperbolic_fit"):
        assert name in PROBES


def test_runner_writes_tables_and_baseline(tmp_path, capsys):
    cache = synth(tmp_path / "a.h5", 2.0)
    base = synth(tmp_path / "b.h5", 0.0, seed=5)  # same images (ids), no hierarchy
    out = tmp_path / "probe"
    assert main(["probe", str(cache), "--out", str(out), "--probes", "separability", "--baseline", str(base),
                 "--permutations", "3", "--seed", "2", *FAST]) == 0
    printed = capsys.readouterr().out
    assert "separability" in printed and "linear_accuracy" in printed
    metrics = read_results(out / "metrics.csv")
    assert list(metrics.columns[:6]) == list(COLUMNS)
    assert {"probe", "features", "model", "null_mean", "p_value", "permutations"} <= set(metrics.columns)
    assert set(metrics["features"]) == {"model", "baseline"}
    model = metrics[(metrics["features"] == "model") & (metrics["rank"] == "genus")]["value"].iloc[0]
    baseline = metrics[(metrics["features"] == "baseline") & (metrics["rank"] == "genus")]["value"].iloc[0]
    assert model > baseline + 0.3
    run = json.loads((out / "run.json").read_text())
    assert run["options"]["seed"] == 2 and run["options"]["permutations"] == 3
    assert run["probes"] == ["separability"] and run["n_species"] == 47 and run["baseline"].endswith("b.h5")
    assert (out / "separability_null.csv").exists() and (out / "separability_baseline_null.csv").exists()
    species = pd.read_csv(out / "species.csv")
    assert len(species) == 47 and species["images"].sum() == run["n_images"] == 47 * 6
    # the species table is in taxonomy (lineage) order: clades are contiguous
    assert species["genus"].ne(species["genus"].shift()).sum() == species.groupby(
        ["kingdom", "phylum", "class", "order", "family", "genus"], sort=False).ngroups


def test_same_seed_same_table(tmp_path):
    cache = synth(tmp_path / "a.h5", 1.0)
    opts = ProbeOptions(permutations=2, seed=3, device="cpu", extra={
        "separability": {"grid": [0.1, 10], "splits": "random", "n_boot": 50}})
    a = probe_cache(cache, tmp_path / "x", probes="separability", options=opts).metrics
    b = probe_cache(cache, tmp_path / "y", probes="separability", options=opts).metrics
    pd.testing.assert_frame_equal(a, b)


def test_bad_input_explained(tmp_path, capsys):
    cache = synth(tmp_path / "a.h5", 1.0)
    with pytest.raises(InputError, match="probes from"):
        parse_probes("distances,nope")
    assert main(["probe", str(cache), "--out", str(tmp_path / "o"), "--set", "oops"]) == 2
    assert "PROBE.SETTING=VALUE" in capsys.readouterr().err
    assert main(["probe", str(cache), "--out", str(tmp_path / "o"), "--permutations", "-1"]) == 2
    assert "permutations' option" in capsys.readouterr().err  # '--permutations' (CLI) or 'permutations'
    assert main(["probe", str(cache), "--out", str(tmp_path / "o"), "--clade", "genus=Nothingus"]) == 2
    assert "Nothingus" in capsys.readouterr().err
    other = tmp_path / "other.h5"
    write_synthetic(other, make_hierarchical(per_species=3, dim=16, seed=0))  # fewer images: ids missing
    assert main(["probe", str(cache), "--out", str(tmp_path / "o"), "--probes", "separability",
                 "--baseline", str(other)]) == 2
    assert "lacks" in capsys.readouterr().err
    assert main(["probe", str(cache)]) == 2
    assert not (tmp_path / "o" / "metrics.csv").exists()


def test_probe_refuses_another_caches_results_without_force(tmp_path, capsys):
    a = synth(tmp_path / "a.h5", 1.0)
    b = synth(tmp_path / "b.h5", 0.0, seed=5)
    out = tmp_path / "p"
    args = ["--probes", "separability", "--permutations", "2", *FAST]
    assert main(["probe", str(a), "--out", str(out), *args]) == 0
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    capsys.readouterr()
    assert main(["probe", str(b), "--out", str(out), *args]) == 2
    err = capsys.readouterr().err
    assert f"{out} holds results of {a.resolve()} (model synthetic); use another --out or --force" in err
    assert "Traceback" not in err
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before
    assert main(["probe", str(b), "--out", str(out), *args, "--force"]) == 0
    assert json.loads((out / "run.json").read_text())["cache"] == str(b.resolve())
