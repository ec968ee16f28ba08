"""The report as a results section: the question as title, the data and model first, the answer per rank
with its CI and units, sections that open with what they found, the same content in Markdown and HTML."""

from __future__ import annotations

import re
from pathlib import Path
from types import SimpleNamespace

import pytest

from latent.pipeline import _label, _model_name
from latent.report import ReportSettings, answer_sentence, build_report
from latent.synthetic import make_hierarchical, write_synthetic

SETTINGS = ReportSettings(evaluations=(("knn", "species-disjoint"),), probes=("alignment",), permutations=199,
                          n_boot=50, projections=())


@pytest.fixture(scope="module")
def report(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("doc")
    cache = write_synthetic(tmp / "birds.h5", make_hierarchical(per_species=6, dim=16, signal=2.0, seed=0))
    return build_report([cache], tmp / "rep", settings=SETTINGS)


def test_title_is_the_question_and_the_first_screen_is_data_model_answer(report):
    md = report.markdown.read_text()
    assert md.splitlines()[0] == "# Does the embedding space reflect the taxonomy?"
    heads = re.findall(r"^## (.+)$", md, flags=re.M)
    assert heads[:4] == ["Data and model", "The answer per rank", "The model", "What could be tested"]
    first = md.split("## The answer per rank")[1].split("\n## ")[0]
    # the answer sentence and the table, one cell per rank with value, CI where there is one, p and units
    label = next(iter(report.runs))
    assert answer_sentence(report.answer, label) in first
    assert re.search(r"\| all \| yes: 0\.\d+ \[0\.\d+, 0\.\d+\] vs null .*, p_adj .*, \d+ species \|", first)
    assert "### Evidence per rank" in first  # the key figure follows the answer


def test_sections_open_with_what_they_found(report):
    md = report.markdown.read_text()
    evaluation = md.split("## Evaluation: can the ranks be predicted?")[1].split("\n## ")[0]
    assert re.search(r"knn on a species-disjoint split: top-1 \d\.\d{3}", evaluation.strip().splitlines()[0])
    geometry = md.split("## Geometry:")[1].split("\n## ")[0]
    assert re.search(r"\d+ of \d+ supporting statistics support the taxonomy", geometry)


def test_markdown_and_html_say_the_same(report):
    md, page = report.markdown.read_text(), report.html.read_text()
    for heading in re.findall(r"^#{1,3} (.+)$", md, flags=re.M):
        assert heading.replace("&", "&amp;") in page, heading
    assert page.count("<figure") == md.count("![")


def test_answer_sentence_groups_ranks_by_verdict():
    import pandas as pd

    verdict = pd.DataFrame({"model": ["m"] * 5, "level": ["kingdom=phylum", "class", "order", "genus", "all"],
                            "verdict": ["not testable", "yes", "no", "yes", "yes"]})
    assert answer_sentence(verdict, "m") == ("m: yes at class and genus; no at order; not testable at kingdom = "
                                             "phylum; the whole hierarchy: yes.")


def test_a_cache_without_a_recorded_model_is_named_by_its_file():
    assert _model_name(SimpleNamespace(model="unknown"), Path("runs/tol1k.h5")) == "tol1k"
    assert _model_name(SimpleNamespace(model=""), Path("tol1k.h5")) == "tol1k"
    assert _model_name(SimpleNamespace(model="bioclip-2"), Path("tol1k.h5")) == "bioclip-2"
    assert _label(SimpleNamespace(model="unknown"), Path("x/tol1k.h5"), set()) == "tol1k"
