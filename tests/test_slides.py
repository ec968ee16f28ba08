"""The slide deck (latent.slides): 16:9 pages, one figure per page, aspect ratio kept, text never cut off."""

from __future__ import annotations

import json
import re
import zlib
from pathlib import Path

import matplotlib
import pytest
from PIL import Image

matplotlib.use("Agg")

from latent.errors import InputError  # noqa: E402
from latent.slides import (  # noqa: E402
    CAPTION_MAX_LINES,
    Slide,
    _figure_page,
    _title_page,
    slides_from_report,
    write_slides,
)

LONG_CAPTION = ("Each statistic (marker) against the central 95% interval of its species-permutation null; filled "
                "markers have an adjusted p at or below the threshold on the side the taxonomy predicts. ") * 12
SUBTITLES = [
    "Does BioCLIP 2's embedding space reflect the taxonomy of life?",
    "1,030 images, 854 labelled at species, 790 species, 5 kingdoms; model bioclip-2 (hf-hub:imageomics/bioclip-2)",
    "Answer per rank: kingdom no, phylum no, class yes (ratio 0.95, p = 0.001), order yes, family yes "
    "(0.92 [0.89, 0.96]), genus yes (0.82 [0.75, 0.89]), species yes (0.56 [0.34, 0.78]), all yes "
    "(Spearman Mantel r 0.12 [0.10, 0.14])",
    "an_identifier_without_any_space_" * 8,
]


def _png(path: Path, size: tuple[int, int], colour: str = "#0072B2") -> Path:
    Image.new("RGB", size, colour).save(path)
    return path


def _pages(pdf: Path) -> list[bytes]:
    """The page objects' dictionaries of a PDF written by matplotlib (uncompressed object headers)."""
    data = pdf.read_bytes()
    return re.findall(rb"/Type\s*/Page\b(?!s).*?>>", data, flags=re.S)


def _media_boxes(pdf: Path) -> list[tuple[float, ...]]:
    boxes = re.findall(rb"/MediaBox\s*\[([^\]]*)\]", pdf.read_bytes())
    return [tuple(float(v) for v in box.split()) for box in boxes]


def _texts(fig) -> list:
    return [t for t in fig.texts if t.get_text()]


def _all_inside_page(fig) -> None:
    renderer = fig.canvas.get_renderer()
    page = fig.bbox
    for text in _texts(fig):
        box = text.get_window_extent(renderer)
        assert box.width <= page.width + 0.5, text.get_text()[:60]
        assert box.x0 >= -0.5 and box.x1 <= page.x1 + 0.5, text.get_text()[:60]
        assert box.y0 >= -0.5 and box.y1 <= page.y1 + 0.5, text.get_text()[:60]


def test_pages_are_16_9_and_one_per_figure(tmp_path):
    slides = [Slide(f"Figure {i}", _png(tmp_path / f"f{i}.png", size), f"caption {i}")
              for i, size in enumerate([(800, 200), (300, 900), (500, 500)])]
    out = write_slides(tmp_path / "deck" / "slides.pdf", slides, title="A deck", subtitle_lines=["one", "two"])
    assert out == tmp_path / "deck" / "slides.pdf" and out.is_file()
    assert out.read_bytes().startswith(b"%PDF")
    assert len(_pages(out)) == 1 + len(slides)
    boxes = _media_boxes(out)
    assert len(boxes) == 1 + len(slides)
    for box in boxes:
        assert box == pytest.approx((0.0, 0.0, 960.0, 540.0), abs=0.01)
    assert not [p for p in out.parent.iterdir() if ".tmp-" in p.name]


def test_pdf_embeds_each_png_unresampled_and_unstretched(tmp_path):
    sizes = [(800, 200), (300, 900), (500, 500)]
    slides = [Slide(f"F{i}", _png(tmp_path / f"f{i}.png", size)) for i, size in enumerate(sizes)]
    data = write_slides(tmp_path / "slides.pdf", slides, title="T").read_bytes()
    embedded = re.findall(rb"/Subtype\s*/Image\s*/Width (\d+) /Height (\d+)", data)
    assert sorted((int(w), int(h)) for w, h in embedded) == sorted(sizes)  # the PNGs' own pixels
    drawn = []  # the scale of each image as placed on its page: "w 0 0 -h 0 h cm /I1 Do"
    for stream in re.findall(rb"stream\r?\n(.*?)\r?\nendstream", data, flags=re.S):
        try:
            text = zlib.decompress(stream)
        except zlib.error:
            continue
        drawn += re.findall(rb"([\d.]+) 0 0 -([\d.]+) 0 [\d.]+ cm\s*/I\d+ Do", text)
    ratios = sorted(float(w) / float(h) for w, h in drawn)
    assert ratios == pytest.approx(sorted(w / h for w, h in sizes), rel=0.01)
    assert all(float(w) <= 960 and float(h) <= 540 for w, h in drawn)


def test_no_figures_gives_the_title_page_only(tmp_path):
    out = write_slides(tmp_path / "slides.pdf", [], title="Nothing drawn")
    assert len(_pages(out)) == 1


def test_same_inputs_give_the_same_bytes(tmp_path):
    slides = [Slide("A", _png(tmp_path / "a.png", (400, 300)), "c")]
    first = write_slides(tmp_path / "one.pdf", slides, title="T").read_bytes()
    second = write_slides(tmp_path / "two.pdf", slides, title="T").read_bytes()
    assert first == second


@pytest.mark.parametrize("size", [(1600, 200), (200, 1400), (900, 600), (37, 11)])
def test_figure_keeps_its_aspect_ratio_fits_and_is_centred(tmp_path, size):
    slide = Slide("A title", _png(tmp_path / "f.png", size), "A caption under the figure.")
    fig = _figure_page(slide)
    renderer = fig.canvas.get_renderer()
    images = [im for ax in fig.axes for im in ax.get_images()]
    assert len(images) == 1
    box = images[0].get_window_extent(renderer)
    assert box.width / box.height == pytest.approx(size[0] / size[1], rel=0.01)
    page = fig.bbox
    assert box.x0 >= -0.5 and box.x1 <= page.x1 + 0.5 and box.y0 >= -0.5 and box.y1 <= page.y1 + 0.5
    assert (box.x0 + box.x1) / 2 == pytest.approx(page.x1 / 2, abs=1.0)  # centred across the page
    # Large: it fills the width or the height left between the title and the caption.
    assert box.width >= 0.8 * (page.width - 2 * 42) or box.height >= 0.6 * page.height
    # The caption sits under the image, the title above it, neither overlapping it.
    title, caption = (t for t in _texts(fig) if t.get_text() in ("A title", "A caption under the figure."))
    assert title.get_window_extent(renderer).y0 >= box.y1
    assert caption.get_window_extent(renderer).y1 <= box.y0
    _all_inside_page(fig)


def test_long_caption_is_wrapped_and_cut_at_four_lines(tmp_path):
    slide = Slide("A very long title " * 12, _png(tmp_path / "f.png", (800, 400)), LONG_CAPTION)
    fig = _figure_page(slide)
    _all_inside_page(fig)
    caption = next(t for t in _texts(fig) if t.get_text().startswith("Each statistic"))
    lines = caption.get_text().split("\n")
    assert 2 <= len(lines) <= CAPTION_MAX_LINES
    assert lines[-1].endswith("\u2026")
    shown = " ".join(caption.get_text()[:-1].split())
    assert (" ".join(LONG_CAPTION.split()) + " ").startswith(shown + " ")  # cut between two words
    title = next(t for t in _texts(fig) if t.get_text().startswith("A very long title"))
    assert len(title.get_text().split("\n")) <= 2


def test_short_caption_is_shown_whole(tmp_path):
    caption = "Top-1 accuracy per rank with species-bootstrap 95% CIs; dashed: chance (1 / classes). $x$ stays text."
    fig = _figure_page(Slide("Accuracy", _png(tmp_path / "f.png", (800, 400)), caption))
    shown = [t.get_text() for t in _texts(fig)]
    assert caption in shown
    assert not any("\u2026" in s for s in shown)


def test_title_page_shows_every_subtitle_line_within_the_page():
    fig = _title_page("Does the embedding space reflect the taxonomy of life?", SUBTITLES)
    _all_inside_page(fig)
    drawn = "".join("".join(t.get_text().split()) for t in _texts(fig))
    for line in SUBTITLES:
        assert "".join(line.split()) in drawn, line[:50]
    # Long lines are wrapped, not left running off the page.
    assert any(t.get_text().count("\n") >= 1 for t in _texts(fig))


def test_title_page_shrinks_many_lines_to_fit():
    lines = [f"line {i}: " + "a result sentence that takes some room on the page " * 2 for i in range(25)]
    fig = _title_page("A title", lines)
    _all_inside_page(fig)
    drawn = "".join("".join(t.get_text().split()) for t in _texts(fig))
    assert all("".join(line.split()) in drawn for line in lines)


def test_missing_png_raises_and_writes_nothing(tmp_path):
    good = _png(tmp_path / "good.png", (400, 300))
    missing = tmp_path / "figures" / "missing.png"
    out = tmp_path / "out" / "slides.pdf"
    with pytest.raises(InputError) as info:
        write_slides(out, [Slide("ok", good), Slide("gone", missing)], title="T")
    message = str(info.value)
    assert str(missing) in message and "\n" not in message
    assert not out.exists()
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").iterdir())


def test_unreadable_png_raises(tmp_path):
    bad = tmp_path / "bad.png"
    bad.write_text("not an image")
    with pytest.raises(InputError, match="bad.png"):
        write_slides(tmp_path / "slides.pdf", [Slide("bad", bad)], title="T")
    assert not (tmp_path / "slides.pdf").exists()


def test_slides_must_be_slides(tmp_path):
    with pytest.raises(InputError, match="'slides'"):
        write_slides(tmp_path / "s.pdf", ["figure.png"], title="T")


def _report(tmp_path: Path, *, with_list: bool) -> Path:
    report = tmp_path / "report"
    (report / "figures").mkdir(parents=True)
    figures = [("accuracy", "Accuracy per rank", "Top-1 accuracy per rank."),
               ("probe_summary", "Evidence per rank", "Each statistic against its null."),
               ("projection_pca_m", "PCA projection of the images (m)", "PCA of the image embeddings.")]
    for key, _, _ in figures:
        _png(report / "figures" / f"{key}.png", (600, 400))
    index = {"models": {"m": {}}, "settings": {}, "latent_version": "0"}
    if with_list:
        index["figures"] = [{"key": k, "title": t, "caption": c, "png": f"figures/{k}.png"} for k, t, c in figures]
        index["summary_lines"] = ["The question", "The data", "The answer"]
    (report / "report.json").write_text(json.dumps(index))
    # The first screen repeats the key figure; its own section (with its title and caption) comes later.
    md = ["# Report", "", "## The answer", "", "![Evidence](figures/probe_summary.png)", "", "Key figure.", "",
          "## Figures", ""]
    for key, title, caption in figures:
        md += [f"### {title}", "", f"![{title}](figures/{key}.png)", "", caption, ""]
    (report / "report.md").write_text("\n".join(md))
    (report / "verdicts.csv").write_text("model,rank,verdict\nm,class,yes\nm,order,no\n")
    return report


@pytest.mark.parametrize("with_list", [True, False])
def test_slides_from_report(tmp_path, with_list, monkeypatch):
    report = _report(tmp_path, with_list=with_list)
    pages = []
    import latent.slides as slides_module

    real = slides_module._figure_page
    monkeypatch.setattr(slides_module, "_figure_page",
                        lambda slide, **kw: pages.append(slide) or real(slide, **kw))
    out = slides_from_report(report)
    assert out == report / "figures" / "slides.pdf"
    assert len(_pages(out)) == 4
    assert [s.title for s in pages] == ["Accuracy per rank", "Evidence per rank", "PCA projection of the images (m)"]
    assert [s.caption for s in pages] == ["Top-1 accuracy per rank.", "Each statistic against its null.",
                                          "PCA of the image embeddings."]


def test_slides_from_report_needs_a_report(tmp_path):
    with pytest.raises(InputError, match="report.json"):
        slides_from_report(tmp_path)


def test_report_writes_slides_only_when_asked(tmp_path):
    import re as _re

    from latent.report import ReportSettings, build_report
    from latent.synthetic import make_hierarchical, write_synthetic

    cache = write_synthetic(tmp_path / "s.h5", make_hierarchical(per_species=4, dim=8, signal=2.0, seed=0))
    settings = ReportSettings(evaluations=(), probes=("alignment",), permutations=19, n_boot=20, projections=(),
                              verdict_permutations=99)
    plain = build_report([cache], tmp_path / "plain", settings=settings)
    assert not (plain.out / "figures" / "slides.pdf").exists()
    assert "latent report --slides" in plain.markdown.read_text()
    deck = build_report([cache], tmp_path / "deck", settings=ReportSettings(**{**settings.__dict__, "slides": True}))
    pdf = (deck.out / "figures" / "slides.pdf").read_bytes()
    pages = _re.findall(rb"/Type\s*/Page[^s]", pdf)
    assert len(pages) == 1 + len(deck.figures)
    assert "figures/slides.pdf" in deck.markdown.read_text()
