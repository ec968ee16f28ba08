"""A model card as one figure (a slide of the report's deck): what the model is, what it sees, what it read.

Input: a :class:`latent.modelcard.ModelCard`. The figure lists, in two columns, the card's rows that a slide
can hold (architecture, embedding, parameters, preprocessing; training data and text), each value wrapped to
its column; sources and published evaluations stay in the report's table.
"""

from __future__ import annotations

import textwrap
from typing import Any

from matplotlib.figure import Figure

from latent.plotting.style import figure_title, styled

__all__ = ["plot_model_card", "CARD_SECTIONS"]

#: Sections of :meth:`latent.modelcard.ModelCard.rows` drawn, per column.
CARD_SECTIONS = (("Vision tower", "Text tower", "Embedding", "Parameters"), ("Preprocessing", "Training"))
_SKIP = {("Training", "source"), ("Preprocessing", "read from")}


@styled
def plot_model_card(card: Any, *, title: "str | None" = None, width: int = 70) -> Figure:
    """The card's rows as text in two columns.

    Parameters
    ----------
    card
        A :class:`latent.modelcard.ModelCard`.
    title
        Figure title (default: the model's name and description).
    width
        Characters per line of a wrapped value.

    Returns
    -------
    matplotlib.figure.Figure
        Texts by ``gid``: ``"card-section"`` (one per section drawn) and ``"card-row"`` (one per row: ``field:
        value``).
    """
    rows = [r for r in card.rows() if (r[0], r[1]) not in _SKIP]
    height = 7.5
    fig = Figure(figsize=(13.333, height))
    line = 9.0 * 1.45 / 72.0 / height  # one text line in figure fraction
    for column, sections in enumerate(CARD_SECTIONS):
        y = 0.90  # under the title
        x = 0.03 + 0.49 * column
        for section in sections:
            part = [(f, v) for s, f, v in rows if s == section]
            if not part:
                continue
            fig.text(x, y, section, fontsize=11.5, fontweight="bold", va="top", gid="card-section")
            y -= 1.6 * line
            for field, value in part:
                lines = textwrap.wrap(f"{field}: {value}", width=width, subsequent_indent="    ") or [field]
                fig.text(x + 0.012, y, "\n".join(lines), fontsize=9.0, va="top", gid="card-row", linespacing=1.3)
                y -= line * len(lines) + 0.25 * line
            y -= 0.6 * line
    description = str(card.spec.get("description") or "")
    figure_title(fig, title if title is not None else f"{card.name}: {description}" if description else card.name)
    return fig
