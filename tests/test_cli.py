"""The command line, run as users run it: real subprocesses of the installed console script."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from latent.cache import open_cache
from latent.synthetic import builtin_taxonomy_path

REPO = Path(__file__).resolve().parents[1]


def latent(*args: str, cwd: Path | None = None, check: bool = True) -> subprocess.CompletedProcess:
    env = dict(os.environ, PYTHONPATH=str(REPO))
    proc = subprocess.run([sys.executable, "-m", "latent.cli", *map(str, args)], capture_output=True, text=True, cwd=cwd, env=env)
    if check and proc.returncode != 0:
        raise AssertionError(f"latent {' '.join(map(str, args))} failed ({proc.returncode}):\n{proc.stdout}\n{proc.stderr}")
    return proc


def test_import_latent_does_not_import_torch():
    code = "import sys, latent, latent.cli, latent.taxonomy, latent.synthetic; print('torch' in sys.modules, 'h5py' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, env=dict(os.environ, PYTHONPATH=str(REPO)))
    assert out.stdout.split() == ["False", "False"]


def test_version_and_help():
    assert latent("--version").stdout.startswith("latent ")
    assert "taxonomy" in latent("--help").stdout


def test_taxonomy_command_writes_newick_and_distances(tmp_path):
    proc = latent("taxonomy", builtin_taxonomy_path(), "--newick", tmp_path / "t.nwk", "--distances", tmp_path / "d.csv")
    assert "47 species" in proc.stdout and "conflicts: 0" in proc.stdout
    assert (tmp_path / "t.nwk").read_text().strip().endswith(";")
    d = pd.read_csv(tmp_path / "d.csv", index_col=0)
    assert d.shape == (47, 47) and list(d.index) == list(d.columns)
    assert d.loc["Morus alba", "Morus nigra"] == 1 and d.loc["Morus alba", "Morus bassanus"] == 7
    assert (d.to_numpy() == d.to_numpy().T).all()


def test_taxonomy_command_reports_conflicts_as_an_error(tmp_path):
    bad = pd.read_csv(builtin_taxonomy_path())
    bad.loc[bad["species"] == "Bombus terrestris", "family"] = "Wrongidae"  # Bombus now has two families
    bad.to_csv(tmp_path / "bad.csv", index=False)
    proc = latent("taxonomy", tmp_path / "bad.csv", check=False)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert "more than one parent" in proc.stderr and "Wrongidae" in proc.stderr
    assert "conflicts: 1" in latent("taxonomy", tmp_path / "bad.csv", "--on-conflict", "warn").stdout


def test_synth_then_info(tmp_path):
    latent("synth", "--out", tmp_path / "s.h5", "--per-species", 3, "--dim", 8, "--seed", 1)
    info = latent("info", tmp_path / "s.h5").stdout
    assert "rows        141" in info and "untrained / synthetic" in info and "species       47" in info
    proc = latent("synth", "--out", tmp_path / "s.h5", check=False)
    assert proc.returncode == 2 and "--force" in proc.stderr
    latent("synth", "--out", tmp_path / "s.h5", "--per-species", 2, "--dim", 8, "--force")
    with open_cache(tmp_path / "s.h5") as cache:
        assert cache.n_rows == 94


def test_info_on_missing_cache_is_a_clear_error(tmp_path):
    proc = latent("info", tmp_path / "nope.h5", check=False)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr and "nope.h5" in proc.stderr


def test_readme_cub10_import_command(shared, tmp_path):
    root = shared("cub10")
    data = root.parent
    proc = latent("import", data / "cub10/bird_embeddings.npy", "--metadata", data / "cub10/bird_metadata.json",
                  "--id-column", "path", "--taxonomy", data / "cub10/taxonomy.csv", "--join-on", "species=cub_class",
                  "--out", tmp_path / "cub10.h5")
    assert "306 embeddings" in proc.stdout and "6 rows unlabelled" in proc.stdout
    assert "6 rows have no row in the --taxonomy table" in proc.stderr
    info = latent("info", tmp_path / "cub10.h5").stdout
    for line in ("species       10", "genus          7", "family         4", "order          4", "unlabelled  6 rows"):
        assert line in info
