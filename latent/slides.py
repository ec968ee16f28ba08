"""A slide deck (one PDF, 16:9 pages) of a report's figures, for the researchers' presentations.

:func:`write_slides` lays out a title page (the title and subtitle lines: the question, the data summary,
the answer per rank) and then one figure per page: the slide's title at the top, the figure's PNG scaled
to the remaining area with its aspect ratio kept (never stretched, never cropped) and centred, and the
caption wrapped under it (at most :data:`CAPTION_MAX_LINES` lines, the last one ending in an ellipsis when
the caption is longer). Pages are :data:`PAGE_INCHES` (13.333 x 7.5 inches, 960 x 540 points), the
PowerPoint / Keynote / Beamer 16:9 size, so a page can be dropped into a deck as it is.

:func:`slides_from_report` makes ``DIR/figures/slides.pdf`` from a report folder written by
``latent report``: the figures in report order with their titles and captions.

Text is wrapped by measuring it with the font it is drawn in (not by counting characters), so nothing is
cut off at the page's edge; the figure PNG is embedded unresampled (its own pixels, scaled by the PDF).
The PDF is written to ``<path>.tmp-<pid>`` and renamed, so a reader never sees half a file; it has no
creation date (the same inputs give the same bytes). Only matplotlib (and Pillow, which it requires) is
used: no new dependency.
"""

from __future__ import annotations

import json
import logging
import os
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from latent._version import __version__
from latent.errors import InputError

if TYPE_CHECKING:  # pragma: no cover
    from matplotlib.backends.backend_agg import RendererAgg
    from matplotlib.figure import Figure

__all__ = ["Slide", "write_slides", "slides_from_report", "PAGE_INCHES", "CAPTION_MAX_LINES"]

log = logging.getLogger(__name__)

#: Page size (width, height) in inches: 16:9, 960 x 540 points.
PAGE_INCHES: tuple[float, float] = (40.0 / 3.0, 7.5)
#: A caption longer than this many wrapped lines is cut with an ellipsis.
CAPTION_MAX_LINES = 4
#: A slide title longer than this many wrapped lines is cut with an ellipsis.
TITLE_MAX_LINES = 2

# Layout, in points (1/72 inch).
_MARGIN_X = 42.0
_MARGIN_TOP = 30.0
_MARGIN_BOTTOM = 24.0
_GAP = 10.0
_SLIDE_TITLE_SIZE = 24.0
_CAPTION_SIZE = 13.0
_PAGE_NUMBER_SIZE = 9.0
_DECK_TITLE_SIZE = 34.0
_SUBTITLE_SIZE = 18.0
_MIN_DECK_TITLE_SIZE = 16.0
_MIN_SUBTITLE_SIZE = 8.0
_LINESPACING = 1.25
_TEXT_COLOR = "#222222"
_MUTED_COLOR = "#555555"
_ACCENT_COLOR = "#0072B2"  # Okabe-Ito blue, the first colour of latent's figures
_FONT_FAMILY = "DejaVu Sans"  # ships with matplotlib: the same metrics on every machine
# Text is wrapped to this fraction of the width it may take (font hinting differs a hair between backends).
_WRAP_SLACK = 0.98
_ELLIPSIS = "\u2026"


@dataclass(frozen=True)
class Slide:
    """One figure page of a deck.

    Attributes
    ----------
    title
        Shown at the top of the page (wrapped; at most :data:`TITLE_MAX_LINES` lines).
    png
        The figure as a PNG file (any size; scaled to fit the page with its aspect ratio kept).
    caption
        Shown under the figure in smaller type (wrapped; at most :data:`CAPTION_MAX_LINES` lines).
    """

    title: str
    png: Path
    caption: str = ""

    def __post_init__(self) -> None:
        if not isinstance(self.png, Path):
            if not isinstance(self.png, (str, os.PathLike)):
                raise InputError(f"The 'png' parameter of Slide must be a path to a PNG file. "
                                 f"Got {type(self.png).__name__} instead.")
            object.__setattr__(self, "png", Path(self.png))
        object.__setattr__(self, "title", "" if self.title is None else str(self.title))
        object.__setattr__(self, "caption", "" if self.caption is None else str(self.caption))


# ------------------------------------------------------------------------------------------ text layout
def _font(size: float, weight: str = "normal") -> Any:
    from matplotlib.font_manager import FontProperties

    return FontProperties(family=_FONT_FAMILY, size=size, weight=weight)


def _text_width(renderer: "RendererAgg", text: str, prop: Any) -> float:
    """Width of ``text`` in points (the renderer draws at 72 dpi, 1 pixel = 1 point)."""
    if not text:
        return 0.0
    width, _, _ = renderer.get_text_width_height_descent(text, prop, ismath=False)
    return float(width) * 72.0 / float(renderer.dpi)


def _split_word(renderer: "RendererAgg", word: str, prop: Any, width: float) -> list[str]:
    """``word`` cut into pieces no wider than ``width`` (a path or a long identifier with no space)."""
    pieces, current = [], ""
    for char in word:
        if current and _text_width(renderer, current + char, prop) > width:
            pieces.append(current)
            current = char
        else:
            current += char
    if current:
        pieces.append(current)
    return pieces


def _truncate(renderer: "RendererAgg", line: str, prop: Any, width: float) -> str:
    """``line`` ending in an ellipsis, cut (at a word boundary when it has one) so that it fits ``width``."""
    line = line.rstrip()
    while line and _text_width(renderer, line + _ELLIPSIS, prop) > width:
        line = (line.rsplit(" ", 1)[0] if " " in line else line[:-1]).rstrip()
    return line + _ELLIPSIS


def _wrap_text(renderer: "RendererAgg", text: str, prop: Any, width: float, *,
              max_lines: "int | None" = None) -> list[str]:
    """``text`` broken into lines no wider than ``width`` points when drawn in font ``prop``.

    Parameters
    ----------
    renderer
        A renderer to measure text with (``FigureCanvasAgg(fig).get_renderer()``).
    text
        Any text; its line breaks are kept, runs of spaces collapse.
    prop
        A :class:`matplotlib.font_manager.FontProperties`.
    width
        The widest a line may be, in points.
    max_lines
        When given and the text needs more lines, the first ``max_lines`` are kept and the last one ends
        in an ellipsis.

    Returns
    -------
    list of str
        The lines (empty for empty text).
    """
    lines: list[str] = []
    for paragraph in str(text).splitlines():
        words = paragraph.split()
        if not words:
            if lines:
                lines.append("")
            continue
        current = ""
        for word in words:
            candidate = f"{current} {word}" if current else word
            if _text_width(renderer, candidate, prop) <= width:
                current = candidate
                continue
            if current:
                lines.append(current)
            pieces = _split_word(renderer, word, prop, width) if _text_width(renderer, word, prop) > width \
                else [word]
            lines.extend(pieces[:-1])
            current = pieces[-1]
        lines.append(current)
    while lines and not lines[-1]:
        lines.pop()
    if max_lines is not None and len(lines) > max_lines:
        kept = lines[:max_lines]
        kept[-1] = _truncate(renderer, kept[-1], prop, width)
        return kept
    return lines


# ------------------------------------------------------------------------------------------------ pages
def _new_page() -> tuple["Figure", "RendererAgg"]:
    """An empty 16:9 page at 72 dpi (figure pixels = points) and a renderer that measures its text."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=PAGE_INCHES, dpi=72, facecolor="white")
    canvas = FigureCanvasAgg(fig)
    return fig, canvas.get_renderer()


def _points(fig: "Figure") -> tuple[float, float]:
    return fig.get_figwidth() * 72.0, fig.get_figheight() * 72.0


def _place_text(fig: "Figure", renderer: "RendererAgg", lines: list[str], prop: Any, *, x: float, top: float,
                color: str = _TEXT_COLOR, ha: str = "left") -> tuple[Any, float]:
    """Draw ``lines`` with their top at ``top`` points from the page's bottom; returns the text and its bottom."""
    page_w, page_h = _points(fig)
    text = fig.text(x / page_w, top / page_h, "\n".join(lines), fontproperties=prop, color=color, ha=ha,
                    va="top", linespacing=_LINESPACING, parse_math=False, usetex=False)
    extent = text.get_window_extent(renderer)
    return text, float(extent.y0) * 72.0 / float(renderer.dpi)


def _title_page(title: str, subtitle_lines: Sequence[str]) -> "Figure":
    """The deck's first page: ``title`` in large type, then each subtitle line (wrapped), left-aligned.

    Fonts shrink together until everything fits the page; nothing is cut off.

    Parameters
    ----------
    title
        The deck's title.
    subtitle_lines
        ``(k,)`` lines shown under it, in order (each wrapped to the page width).

    Returns
    -------
    matplotlib.figure.Figure
        The page (16:9, :data:`PAGE_INCHES`), with an Agg canvas.
    """
    scale = 1.0
    while True:
        fig, renderer = _new_page()
        page_w, page_h = _points(fig)
        width = (page_w - 2 * _MARGIN_X) * _WRAP_SLACK
        title_size = max(_MIN_DECK_TITLE_SIZE, _DECK_TITLE_SIZE * scale)
        sub_size = max(_MIN_SUBTITLE_SIZE, _SUBTITLE_SIZE * scale)
        title_prop, sub_prop = _font(title_size, "bold"), _font(sub_size)
        top = page_h - _MARGIN_TOP - 0.12 * page_h * scale  # a little air above the title on short decks
        _, bottom = _place_text(fig, renderer, _wrap_text(renderer, title, title_prop, width), title_prop,
                                x=_MARGIN_X, top=top)
        rule_y = bottom - 0.6 * sub_size
        fig.add_artist(_rule(fig, _MARGIN_X, rule_y, min(page_w - 2 * _MARGIN_X, 160.0)))
        top = rule_y - 0.9 * sub_size
        for line in subtitle_lines:
            if not str(line).strip():
                top -= 0.6 * sub_size
                continue
            _, bottom = _place_text(fig, renderer, _wrap_text(renderer, str(line), sub_prop, width), sub_prop,
                                    x=_MARGIN_X, top=top, color=_TEXT_COLOR)
            top = bottom - 0.45 * sub_size
        fits = bottom >= _MARGIN_BOTTOM
        at_minimum = title_size <= _MIN_DECK_TITLE_SIZE and sub_size <= _MIN_SUBTITLE_SIZE
        if fits or at_minimum:
            if not fits:
                log.warning("slides: the title page's %d subtitle lines run past the bottom of the page even at "
                            "%.0f pt; pass fewer lines", len(subtitle_lines), sub_size)
            return fig
        import matplotlib.pyplot as plt

        plt.close(fig)
        scale *= 0.9


def _rule(fig: "Figure", x: float, y: float, length: float) -> Any:
    """A short accent line under the title (``x``, ``y``, ``length`` in points)."""
    from matplotlib.lines import Line2D

    page_w, page_h = _points(fig)
    return Line2D([x / page_w, (x + length) / page_w], [y / page_h, y / page_h], transform=fig.transFigure,
                  color=_ACCENT_COLOR, linewidth=3.0, solid_capstyle="butt")


def _figure_page(slide: Slide, *, number: "int | None" = None, total: "int | None" = None,
                 image: Any = None) -> "Figure":
    """One figure page: the title at the top, the PNG scaled to fit and centred, the caption under it.

    Parameters
    ----------
    slide
        What to show.
    number, total
        Page number and page count, shown small at the bottom right when both are given.
    image
        ``(h, w, channels)`` uint8 pixels of ``slide.png`` (read from the file when None).

    Returns
    -------
    matplotlib.figure.Figure
        The page (16:9, :data:`PAGE_INCHES`), with an Agg canvas; its one axes holds the image.
    """
    import numpy as np

    if image is None:
        image = _read_png(slide.png)
    image = np.asarray(image)
    img_h, img_w = int(image.shape[0]), int(image.shape[1])

    fig, renderer = _new_page()
    page_w, page_h = _points(fig)
    width = (page_w - 2 * _MARGIN_X) * _WRAP_SLACK

    title_prop = _font(_SLIDE_TITLE_SIZE, "bold")
    title_lines = _wrap_text(renderer, slide.title, title_prop, width, max_lines=TITLE_MAX_LINES)
    top = page_h - _MARGIN_TOP
    if title_lines:
        _, title_bottom = _place_text(fig, renderer, title_lines, title_prop, x=_MARGIN_X, top=top)
        area_top = title_bottom - _GAP
    else:
        area_top = top

    bottom_limit = _MARGIN_BOTTOM
    if number is not None and total is not None:
        fig.text((page_w - _MARGIN_X) / page_w, 10.0 / page_h, f"{number} / {total}",
                 fontproperties=_font(_PAGE_NUMBER_SIZE), color=_MUTED_COLOR, ha="right", va="bottom",
                 parse_math=False)

    caption_prop = _font(_CAPTION_SIZE)
    caption_lines = _wrap_text(renderer, slide.caption, caption_prop, width, max_lines=CAPTION_MAX_LINES)
    caption = None
    caption_height = 0.0
    if caption_lines:
        # Measure the caption where it will not stay, then move it under the image.
        caption, caption_bottom = _place_text(fig, renderer, caption_lines, caption_prop, x=_MARGIN_X,
                                              top=page_h, color=_MUTED_COLOR)
        caption_height = page_h - caption_bottom + _GAP

    area_bottom = bottom_limit + caption_height
    area_w = page_w - 2 * _MARGIN_X
    area_h = max(1.0, area_top - area_bottom)
    scale = min(area_w / img_w, area_h / img_h)
    shown_w, shown_h = img_w * scale, img_h * scale
    left = (page_w - shown_w) / 2.0
    image_bottom = area_bottom + (area_h - shown_h) / 2.0
    ax = fig.add_axes((left / page_w, image_bottom / page_h, shown_w / page_w, shown_h / page_h))
    ax.imshow(image, interpolation="none", aspect="equal", resample=False)
    ax.set_axis_off()
    ax.set_xlim(-0.5, img_w - 0.5)
    ax.set_ylim(img_h - 0.5, -0.5)

    if caption is not None:
        caption_top = image_bottom - _GAP
        caption.set_position((_MARGIN_X / page_w, caption_top / page_h))
    return fig


# ---------------------------------------------------------------------------------------------- inputs
def _png_size(path: Path) -> tuple[int, int]:
    """``(width, height)`` in pixels of the image at ``path`` (header only); InputError when unreadable."""
    from PIL import Image, UnidentifiedImageError

    if not path.is_file():
        raise InputError(f"Slide figure {path} does not exist: draw the figures first (latent report) or fix the path.")
    try:
        with Image.open(path) as im:
            return int(im.size[0]), int(im.size[1])
    except (UnidentifiedImageError, OSError) as e:
        raise InputError(f"Slide figure {path} is not a readable image ({e}): redraw it or remove the slide.") from None


def _read_png(path: Path) -> Any:
    """``(h, w, 3 or 4)`` uint8 pixels of the image at ``path`` (palette and grey images as RGB(A))."""
    import numpy as np
    from PIL import Image

    with Image.open(path) as im:
        if im.mode not in ("RGB", "RGBA"):
            im = im.convert("RGBA" if "A" in im.getbands() or "transparency" in im.info else "RGB")
        return np.asarray(im)


def _check_slides(slides: Any) -> list[Slide]:
    if isinstance(slides, (str, bytes, Slide)) or not isinstance(slides, Sequence):
        raise InputError(f"The 'slides' parameter of write_slides must be a list of latent.slides.Slide. "
                         f"Got {type(slides).__name__} instead.")
    bad = [i for i, s in enumerate(slides) if not isinstance(s, Slide)]
    if bad:
        raise InputError(f"The 'slides' parameter of write_slides must hold only latent.slides.Slide; item {bad[0]} "
                         f"is a {type(slides[bad[0]]).__name__}.")
    return list(slides)


# ------------------------------------------------------------------------------------------- public API
def write_slides(path: "str | os.PathLike[str]", slides: Sequence[Slide], *, title: str,
                 subtitle_lines: Sequence[str] = ()) -> Path:
    """Write a 16:9 slide deck: a title page, then one figure per page, as one PDF.

    Parameters
    ----------
    path
        The PDF to write (parent folders are created; an existing file is replaced).
    slides
        ``(k,)`` the figure pages, in order.
    title
        The deck's title (first page, large type; also the PDF's Title).
    subtitle_lines
        ``(m,)`` lines under the title on the first page: the question, the data summary, the answer per
        rank. Each is wrapped to the page width; the type shrinks until all of them fit.

    Returns
    -------
    pathlib.Path
        ``path``: a PDF of ``1 + k`` pages, each 960 x 540 points.

    Raises
    ------
    InputError
        A slide's PNG is missing or unreadable (nothing is written), or ``slides`` is not a list of
        :class:`Slide`.
    """
    import matplotlib.pyplot as plt
    from matplotlib.backends.backend_pdf import PdfPages

    from latent.plotting.style import latent_style

    slides = _check_slides(slides)
    if isinstance(subtitle_lines, str):
        subtitle_lines = [subtitle_lines]
    subtitle_lines = [str(line) for line in subtitle_lines]
    title = "" if title is None else str(title)
    for slide in slides:  # every figure checked before anything is written
        _png_size(slide.png)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f"{path.name}.tmp-{os.getpid()}")
    total = 1 + len(slides)
    metadata = {"Title": title, "Creator": f"latent {__version__}", "Producer": f"latent {__version__}",
                "CreationDate": None}
    try:
        with latent_style(), PdfPages(tmp, metadata=metadata) as pdf:
            pages = [lambda: _title_page(title, subtitle_lines)]
            pages += [lambda s=s, n=n: _figure_page(s, number=n, total=total) for n, s in enumerate(slides, 2)]
            for make in pages:
                fig = make()
                try:
                    pdf.savefig(fig)
                finally:
                    plt.close(fig)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    log.info("slides: wrote %s (%d pages)", path, total)
    return path


_MD_IMAGE = re.compile(r"^!\[[^\]]*\]\((?P<png>[^)\s]+\.png)\)\s*$")


def _figures_from_markdown(report_dir: Path) -> list[dict[str, str]]:
    """The figures of ``report_dir/report.md`` in order: a heading, then ``![..](png)``, then the caption.

    The caption is the paragraph right after the image (up to the next blank line or heading). A figure
    shown twice (a key figure on the first screen, then again in its section) is kept once, where it
    appears last (its own section, with its own heading).
    """
    md = report_dir / "report.md"
    if not md.is_file():
        return []
    lines = md.read_text(encoding="utf-8").splitlines()
    records, heading = [], ""
    i = 0
    while i < len(lines):
        line = lines[i].strip()
        if line.startswith("#"):
            heading = line.lstrip("#").strip()
        match = _MD_IMAGE.match(line)
        if match:
            j = i + 1
            while j < len(lines) and not lines[j].strip():
                j += 1
            caption = []
            while j < len(lines) and lines[j].strip() and not lines[j].lstrip().startswith(("#", "![")):
                caption.append(lines[j].strip())
                j += 1
            records.append({"title": heading or Path(match.group("png")).stem, "png": match.group("png"),
                            "caption": " ".join(caption)})
            heading = ""
            i = j
            continue
        i += 1
    last = {r["png"]: n for n, r in enumerate(records)}
    return [r for n, r in enumerate(records) if last[r["png"]] == n]


def _report_subtitle(report_dir: Path, index: dict[str, Any]) -> list[str]:
    """Title-page lines of a report: its own (``report.json`` ``summary_lines``) or the answer per rank."""
    lines = index.get("summary_lines") or index.get("subtitle_lines")
    if isinstance(lines, list) and lines:
        return [str(line) for line in lines]
    lines = []
    models = list((index.get("models") or {}).keys())
    if models:
        lines.append(("Models: " if len(models) > 1 else "Model: ") + ", ".join(models))
    verdicts = report_dir / "verdicts.csv"
    if verdicts.is_file():
        import pandas as pd

        table = pd.read_csv(verdicts, keep_default_na=False, na_values=[""])
        if {"model", "rank", "verdict"} <= set(table.columns):
            for model, rows in table.groupby("model", sort=False):
                answer = ", ".join(f"{r} {v}" for r, v in zip(rows["rank"], rows["verdict"]))
                lines.append(f"{model}: {answer}" if len(models) > 1 else f"Answer per rank: {answer}")
    return lines


def slides_from_report(report_dir: "str | os.PathLike[str]") -> Path:
    """Write ``report_dir/figures/slides.pdf``: the report's figures, one per page, in report order.

    The figure list is ``report.json``'s ``figures`` (records with ``title``, ``caption`` and ``png``,
    the PNG's path relative to ``report_dir`` or absolute); a report without it is read from its
    ``report.md`` (each figure a ``### title`` heading, the image, then the caption). The title page shows
    ``report.json``'s ``title`` and ``summary_lines`` when present, else the models and the answer per
    rank from ``verdicts.csv``.

    Parameters
    ----------
    report_dir
        A folder written by ``latent report`` (or ``latent run`` / ``latent demo``).

    Returns
    -------
    pathlib.Path
        The PDF written.

    Raises
    ------
    InputError
        No ``report.json``, no figure list, or a listed PNG is missing.
    """
    report_dir = Path(report_dir)
    index_path = report_dir / "report.json"
    if not index_path.is_file():
        raise InputError(f"{report_dir} has no report.json: run `latent report` (or `latent run`) first.")
    try:
        index = json.loads(index_path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as e:
        raise InputError(f"{index_path} is not readable JSON ({e}): run `latent report` again.") from None
    records = index.get("figures")
    if not isinstance(records, list):
        records = _figures_from_markdown(report_dir)
        if not records:
            raise InputError(f"{index_path} lists no figures and {report_dir / 'report.md'} shows none: run "
                             f"`latent report` again.")
        log.info("slides: %s has no figure list; read %d figures from report.md", index_path, len(records))
    slides = []
    for i, record in enumerate(records):
        if not isinstance(record, dict) or not (record.get("png") or record.get("key")):
            raise InputError(f"{index_path}: figure {i} must be a record with 'png' (or 'key'), 'title' and "
                             f"'caption'. Got {record!r}.")
        png = Path(record["png"]) if record.get("png") else Path("figures") / f"{record['key']}.png"
        png = png if png.is_absolute() else report_dir / png
        slides.append(Slide(str(record.get("title") or png.stem), png, str(record.get("caption") or "")))
    title = str(index.get("title") or index.get("question")
                or "Does the embedding space reflect the taxonomy of life?")
    return write_slides(report_dir / "figures" / "slides.pdf", slides, title=title,
                        subtitle_lines=_report_subtitle(report_dir, index))
