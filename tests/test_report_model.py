"""The report's "The model" section: a card for the model that made the cache (read from the built module),
the model's-eye view of the embedded images, the card as a figure for the slides; and no card, said in one
line, for a cache that does not record its model."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from latent.extract import embed_images
from latent.modelcard import describe_model
from latent.plotting.modelcard import plot_model_card
from latent.report import ReportSettings, build_report
from latent.synthetic import make_hierarchical, write_synthetic

SETTINGS = ReportSettings(evaluations=(), probes=("alignment",), permutations=19, verdict_permutations=99, n_boot=20,
                          projections=(), slides=True)



def _folder(root: Path) -> tuple[Path, Path]:
    rng = np.random.default_rng(1)
    src = root / "src"
    rows = []
    for g in range(2):
        for s in range(3):
            folder = src / f"g{g}s{s}"
            folder.mkdir(parents=True)
            for i in range(3):
                pixels = rng.integers(0, 255, (40 + 10 * s, 70, 3), dtype=np.uint8)
                Image.fromarray(pixels).save(folder / f"{i}.jpg")
            rows.append({"folder": folder.name, "kingdom": "K", "phylum": "P", "class": "C", "order": "O",
                         "family": f"F{g}", "genus": f"G{g}", "species": f"G{g} s{s}"})
    table = root / "taxonomy.csv"
    pd.DataFrame(rows).to_csv(table, index=False)
    return src, table


@pytest.fixture(scope="module")
def embedded_report(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("model")
    src, table = _folder(tmp)
    cache = tmp / "tiny.h5"
    embed_images(src, cache, model="random-tiny", taxonomy=table, join_on="folder=folder", workers=0, progress=False)
    return build_report([cache], tmp / "rep", settings=SETTINGS)


def test_the_model_section_states_the_architecture_read_from_the_module(embedded_report):
    md = embedded_report.markdown.read_text()
    section = md.split("## The model\n")[1].split("\n## ")[0]
    card = describe_model("random-tiny")
    first = section.strip().splitlines()[0]
    assert first.startswith("random-tiny: random-tiny, a VisionTransformer of 2 blocks (width 64)")
    assert f"into {card.vision['patch_tokens']} patches of 16x16 px" in first
    assert f"{card.parameters['total'] / 1e6:.1f}M parameters" in first
    assert "Model card of random-tiny (latent models --describe random-tiny):" in section
    assert "| Vision tower | layers (blocks) | 2 |" in section
    # the model's-eye view of the embedded folder, in this section
    assert "### What random-tiny receives" in section
    assert (embedded_report.out / "figures" / "model_inputs_random-tiny.png").exists()
    assert not any(p.name.startswith(".inputs") for p in (embedded_report.out / "figures").iterdir())
    # the first screen keeps the data and the answer before it
    heads = re.findall(r"^## (.+)$", md, flags=re.M)
    assert heads.index("The model") > heads.index("The answer per rank")


def test_the_slides_open_with_the_model(embedded_report):
    index = json.loads((embedded_report.out / "report.json").read_text())
    keys = [f["key"] for f in index["figures"]]
    assert "model_card_random-tiny" in keys and "model_inputs_random-tiny" in keys
    assert (embedded_report.out / "figures" / "slides.pdf").exists()
    # the card figure is for the slides: the report body holds the card as a table, not the figure
    assert "![The model: random-tiny]" not in embedded_report.markdown.read_text()


def test_the_card_figure_draws_every_row_it_lists():
    card = describe_model("random-timm-tiny")
    fig = plot_model_card(card)
    sections = [t.get_text() for t in fig.texts if t.get_gid() == "card-section"]
    assert sections == ["Vision tower", "Text tower", "Embedding", "Parameters", "Preprocessing", "Training"]
    rows = " ".join(t.get_text().replace("\n    ", " ") for t in fig.texts if t.get_gid() == "card-row")
    assert "layers (blocks): 12" in rows and "text tower: none (image-only model)" in rows
    assert f"total: {card.parameters['total']:,}" in rows
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    renderer = FigureCanvasAgg(fig).get_renderer()
    for t in fig.texts:  # nothing drawn off the page
        box = t.get_window_extent(renderer)
        assert box.y0 >= 0 and box.x1 <= fig.bbox.x1 + 0.5, t.get_text()[:40]


def test_a_cache_without_its_model_says_so(tmp_path):
    cache = write_synthetic(tmp_path / "birds.h5", make_hierarchical(per_species=3, dim=8, seed=0))
    result = build_report([cache], tmp_path / "rep", settings=SETTINGS)
    section = result.markdown.read_text().split("## The model\n")[1].split("\n## ")[0]
    assert "no model card (" in section
