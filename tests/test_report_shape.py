"""The report's "shape of the space" table: the shape probe's rows of every model, on the raw vectors."""

from __future__ import annotations

import numpy as np
import pandas as pd

from latent.cache import CacheWriter, Provenance
from latent.report import ReportSettings, build_report
from latent.synthetic import make_hierarchical

SETTINGS = ReportSettings(evaluations=(), probes=("shape",), permutations=9, verdict_permutations=19, n_boot=20,
                          projections=())


def _cache(path, X, labels, model):
    prov = Provenance(model=model, pretrained="none", preprocess={}, embed_dim=X.shape[1], normalized=False)
    with CacheWriter.open(path, prov) as w:
        w.append([f"i{k}" for k in range(len(X))], X, labels)
    return path


def test_shape_table_compares_models_on_raw_vectors(tmp_path):
    data = make_hierarchical(per_species=4, dim=16, signal=1.0, seed=0)
    labels = {rank: data.taxonomy.row_names[:, r].astype(str).tolist()
              for r, rank in enumerate(("kingdom", "phylum", "class", "order", "family", "genus", "species"))}
    X = np.asarray(data.embeddings, dtype=np.float64)
    centred = X - X.mean(axis=0)
    offset = 50 * centred / np.linalg.norm(centred, axis=1, keepdims=True) + 400.0  # norms ~400, all alike
    a = _cache(tmp_path / "iso.h5", centred, labels, "isotropic")
    b = _cache(tmp_path / "off.h5", offset, labels, "offset")
    result = build_report([a, b], tmp_path / "rep", settings=SETTINGS)
    md = result.markdown.read_text()
    assert "## The shape of the space" in md
    table = md.split("## The shape of the space", 1)[1].split("\n\n")[1]
    rows = {line.split("|")[1].strip(): [c.strip() for c in line.split("|")[2:-1]]
            for line in table.splitlines()[2:]}
    header = [c.strip() for c in table.splitlines()[0].split("|")[2:-1]]
    iso, off = dict(zip(header, rows["isotropic"])), dict(zip(header, rows["offset"]))
    # the offset model's vectors share a direction: anisotropic until centred; the isotropic one is not
    assert float(off["mean cosine"]) > 0.9 and abs(float(off["mean cosine (centred)"])) < 0.05
    assert abs(float(iso["mean cosine"])) < 0.1
    assert iso["vectors"] == off["vectors"] == "raw"
    assert float(off["median norm"]) > 300 and float(iso["median norm"]) < 300
    # the numbers are the probe's own rows
    for label, path in (("isotropic", a), ("offset", b)):
        folder = result.runs[label]["probe"]
        metrics = pd.read_csv(f"{folder}/metrics.csv")
        value = metrics.loc[(metrics["probe"] == "shape") & (metrics["metric"] == "mean_cosine"), "value"].iloc[0]
        got = dict(zip(header, rows[label]))["mean cosine"]
        assert got == f"{value:.3g}"
    assert "The shape of the space" in result.html.read_text()
