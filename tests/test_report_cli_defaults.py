"""`latent report CACHE --out DIR` with the default probe list (no --probes): every default probe runs."""

from __future__ import annotations

import json

from latent.cli import main
from latent.probes import PROBES
from latent.synthetic import make_hierarchical, write_synthetic


def test_report_without_probes_runs_every_default_probe(tmp_path, capsys):
    cache = tmp_path / "s.h5"
    write_synthetic(cache, make_hierarchical(per_species=3, dim=8, seed=0))
    out = tmp_path / "rep"
    code = main(["report", str(cache), "--out", str(out), "--evaluate", "knn:random", "--projections", "pca",
                 "--verdict-permutations", "19", "--permutations", "9", "--bootstrap", "20",
                 "--set", "separability.permutations=2", "--set", "hyperbolic_fit.steps=50"])
    captured = capsys.readouterr()
    assert code == 0, captured.err
    assert "Traceback" not in captured.err and (out / "report.html").exists()
    runs = json.loads((out / "report.json").read_text())["models"]
    probe_dir = next(iter(runs.values()))["probe"]
    ran = json.loads((tmp_path / probe_dir / "run.json").read_text())["probes"]
    assert ran == [name for name, spec in PROBES.items() if spec.default]
