"""Learned from images or from names? ``latent report --layers`` from caches with per-layer embeddings (planted
depths of emergence found, two models of different depths on one figure), the report section, and the
random-token control of ``text_geometry`` run with the cache's own text encoder."""

from __future__ import annotations

import re
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest

from latent.errors import InputError
from latent.layers import emergence_layers, layer_stack_taxonomy, make_layer_stack, write_layer_cache
from latent.learned import learned_tables, training_text
from latent.report import ReportSettings, build_report

SETTINGS = ReportSettings(evaluations=(), probes=("alignment",), permutations=99, verdict_permutations=199,
                          n_boot=50, projections=(), layers=True)
PLANTED = {"deep": (6, {"class": 0, "family": 1, "genus": 3}), "shallow": (3, {"class": 0, "order": 2})}



@pytest.fixture(scope="module")
def layer_report(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("layers")
    tax = layer_stack_taxonomy(per_species=4)
    caches = []
    for name, (n_layers, emerge) in PLANTED.items():
        stack = make_layer_stack(n_layers=n_layers, emerge=emerge, per_species=4, dim=24, seed=5)
        caches.append(write_layer_cache(tmp / f"{name}.h5", stack, tax, model=f"{name}-vit"))
    return build_report(caches, tmp / "rep", settings=SETTINGS), tmp


def test_report_layers_finds_the_planted_depths(layer_report):
    result, tmp = layer_report
    found = {}
    for csv in sorted((tmp / "rep" / "runs").rglob("emergence-perm*.csv")):
        table = pd.read_csv(csv, keep_default_na=False, na_values=[""])
        name = "deep" if "deep" in csv.parent.name else "shallow"
        assert int(table["n_blocks"].iloc[0]) == PLANTED[name][0]
        assert sorted(table["layer"].unique()) == list(range(1, PLANTED[name][0] + 1))  # 1-based blocks
        first = emergence_layers(table).set_index("rank")["emergence_layer"]
        found[name] = {r: int(first[r]) for r in first.index if np.isfinite(first[r])}
    # planted at layer index k (0-based) = block k + 1; ranks not planted never emerge
    assert found["deep"] == {"class": 1, "family": 2, "genus": 4}
    assert found["shallow"] == {"class": 1, "order": 3}


def test_one_figure_puts_both_models_on_one_depth_axis(layer_report):
    result, tmp = layer_report
    png = tmp / "rep" / "figures" / "emergence.png"
    assert png.exists() and png.with_suffix(".pdf").exists()
    from latent.figures import FigureContext, ModelRun
    from latent.plotting.layers import report_emergence

    runs = [ModelRun(name, Path(), None, [], Path(), [], {}, next((tmp / "rep" / "runs").glob(f"{name}*/emergence-*.csv")))
            for name in PLANTED]
    drawing = report_emergence(FigureContext(runs))
    axes = [ax for ax in drawing.figure.axes if ax.get_visible()]
    titles = [ax.get_title() for ax in axes]
    # a panel per level testable in some model (class, order, family, genus, species), models as lines
    assert titles == ["class", "order", "family", "genus", "species"]
    assert all("relative depth" in ax.get_xlabel() for ax in axes)  # 6 and 3 blocks: depth = block / blocks
    family = axes[titles.index("family")]
    lines = [a for a in family.get_lines() if a.get_gid() == "emergence-line"]
    assert len(lines) == 2
    assert max(lines[0].get_xdata()) == pytest.approx(1.0, abs=0.1) and max(lines[1].get_xdata()) == pytest.approx(1.0, abs=0.1)
    ticks = [a for a in family.get_lines() if a.get_gid() == "emergence-tick"]
    assert len(ticks) == 1  # family emerges in the deep model only
    assert drawing.fields["blocks"] == "deep 6, shallow 3"
    legend = drawing.figure.legends[0]
    assert {"deep", "shallow"} <= {t.get_text() for t in legend.get_texts()}


def test_the_section_learned_from_images_or_names(layer_report):
    result, _ = layer_report
    md = result.markdown.read_text()
    heads = re.findall(r"^## (.+)$", md, flags=re.M)
    assert "Learned from images or from names?" in heads
    section = md.split("## Learned from images or from names?")[1].split("\n## ")[0]
    assert "### Where in the network each rank appears" in section
    assert re.search(r"deep-vit \(random weights\): yes at \d+ of \d+ testable ranks \(class, family, genus\)", section)
    assert "| image space of | text in training |" in section
    page = result.html.read_text()
    assert "Learned from images or from names?" in page and "id='emergence'" in page


def test_report_layers_without_layer_caches_is_refused(tmp_path):
    from latent.synthetic import make_hierarchical, write_synthetic

    cache = write_synthetic(tmp_path / "flat.h5", make_hierarchical(per_species=3, dim=8, seed=0))
    with pytest.raises(InputError, match="--layers all"):
        build_report([cache], tmp_path / "rep", settings=SETTINGS)
    assert not (tmp_path / "rep").exists()


def test_training_text_reads_the_registry_and_never_guesses():
    assert training_text(SimpleNamespace(model="bioclip-2", extra={}))[0] == "names"
    assert training_text(SimpleNamespace(model="dinov2-vit-l-14", extra={}))[0] == "no text"
    assert training_text(SimpleNamespace(model="random-timm-tiny", extra={"untrained": True}))[0] == "random"
    assert training_text(SimpleNamespace(model="my-imported-thing", extra={})) == ("not recorded", "not recorded")


def test_learned_tables_read_the_text_rows():
    verdict = pd.DataFrame({"model": ["m", "m"], "rank": ["genus", "species"], "level": ["genus", "species"],
                            "verdict": ["yes", "no"], "value": [0.5, 0.97]})
    metrics = pd.DataFrame({
        "probe": ["text_geometry"] * 3, "rank": ["all"] * 3, "features": ["model"] * 3, "form": ["taxon"] * 3,
        "metric": ["text_mantel_r_spearman", "text_control_mantel_r_spearman", "text_minus_control_r"],
        "value": [0.8, 0.6, 0.2], "ci_low": [0.7, 0.5, 0.1], "ci_high": [0.9, 0.7, 0.3], "null_mean": [0, 0, np.nan],
        "p_value": [0.001, 0.001, np.nan], "note": ["", "", ""]})
    tables = learned_tables([SimpleNamespace(label="m", provenance=SimpleNamespace(model="bioclip-2", extra={}))],
                            verdict, {"m": metrics})
    assert tables["spaces"].to_dict("records") == [{"image space of": "m", "text in training": tables["spaces"].iloc[0, 1],
                                                   "genus": "yes 0.5", "species": "no 0.97"}]
    assert tables["text"].iloc[0]["text minus control"] == "0.2 [0.1, 0.3]"
    assert "alignment" not in tables


@pytest.mark.slow
def test_random_token_control_uses_the_caches_own_text_encoder(tmp_path):

    from latent.probes.run import probe_cache
    from latent.synthetic import make_hierarchical, write_synthetic
    from latent.text import embed_text

    data = make_hierarchical(per_species=2, dim=32, seed=1)
    # a cache "made by" random-tiny (its 32-d), so embed-text can reload the model and the control can run
    from latent.cache import CacheWriter, Provenance
    from latent.ranks import RANK_NAMES

    prov = Provenance(model="random-tiny", pretrained="random-init seed=0", preprocess={}, embed_dim=32,
                      normalized=False, extra={"untrained": True, "load": {"model": "random-tiny", "pretrained": None,
                                                                            "preprocess": "openclip", "seed": 0}})
    path = tmp_path / "tiny.h5"
    with CacheWriter.open(path, prov) as w:
        w.append([f"i{k}" for k in range(data.taxonomy.n_rows)], data.embeddings,
                 {r: data.taxonomy.row_names[:, k].astype(str) for k, r in enumerate(RANK_NAMES)})
    embed_text(path, template_set="single", forms=("taxon",), ranks=["species"], device="cpu")
    result = probe_cache(path, tmp_path / "p", probes="text_geometry", force=True)
    rows = result.to_frame().set_index("metric")
    assert np.isfinite(rows.loc["text_control_mantel_r_spearman", "value"])
    assert np.isfinite(rows.loc["text_minus_control_r", "value"])
    # a cache that cannot reload its model (here: imported, no record) gets no control, and says so
    imported = write_synthetic(tmp_path / "imp.h5", data)
    from latent.cache import open_cache

    with open_cache(path) as c:
        keys, emb, attrs = c.read_text_group("species/taxon")
    with CacheWriter.open(imported, open_cache(imported).provenance, mode="append") as w:
        w.write_text_group("species/taxon", list(keys), emb, attrs)
    rows = probe_cache(imported, tmp_path / "q", probes="text_geometry").to_frame().set_index("metric")
    assert np.isnan(rows.loc["text_control_mantel_r_spearman", "value"])
    assert "no random-token control" in rows.loc["text_control_mantel_r_spearman", "note"]

