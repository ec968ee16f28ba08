"""One look for every figure: a style sheet, colour-blind-safe palettes and shared helpers.

* :data:`STYLE` is the rcParams sheet every plotting function draws under (:func:`latent_style`):
  9 pt sans-serif text, no top/right spines, light grid, TrueType fonts embedded in PDFs (editable
  text), the Okabe-Ito colour cycle and the perceptual, colour-vision-deficiency-safe ``cividis``
  colormap.
* :data:`OKABE_ITO` (Okabe & Ito 2008) is the categorical palette: models, methods and the top
  clades of a rank get its colours in order; :data:`TOL_MUTED` (Paul Tol) extends it past 8
  categories; :data:`OTHER_COLOR` (light grey) is the "other" bucket.
* Figures are :class:`matplotlib.figure.Figure` objects made without pyplot (no global state, nothing
  shown, nothing leaked); :func:`save_figure` writes them as vector PDF and PNG.
"""

from __future__ import annotations

import functools
import logging
import os
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TypeVar

import matplotlib as mpl
import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from latent._version import __version__
from latent.errors import InputError, format_list
from latent.ranks import RANK_NAMES

__all__ = [
    "STYLE",
    "OKABE_ITO",
    "TOL_MUTED",
    "OTHER_COLOR",
    "SEQUENTIAL_CMAP",
    "PANEL_INCHES",
    "MAX_FIGURE_INCHES",
    "latent_style",
    "styled",
    "new_figure",
    "palette",
    "markers",
    "top_categories",
    "rank_keys",
    "lineage_keys",
    "shorten",
    "save_figure",
    "figure_legend",
    "figure_title",
]

log = logging.getLogger(__name__)

#: Okabe-Ito colours, most distinguishable first (blue, orange, bluish green, vermillion, reddish
#: purple, sky blue, yellow, black).
OKABE_ITO: tuple[str, ...] = ("#0072B2", "#E69F00", "#009E73", "#D55E00", "#CC79A7", "#56B4E9", "#F0E442", "#000000")
#: Paul Tol's "muted" palette: used after the 8 Okabe-Ito colours.
TOL_MUTED: tuple[str, ...] = ("#332288", "#88CCEE", "#44AA99", "#117733", "#999933", "#DDCC77", "#CC6677",
                              "#882255", "#AA4499")
#: The "other" bucket and null distributions.
OTHER_COLOR = "#BBBBBB"
#: Perceptually uniform and readable with colour-vision deficiencies (Nunez et al. 2018).
SEQUENTIAL_CMAP = "cividis"
#: Size of one panel (width, height) in inches; figures grow with their panels up to MAX_FIGURE_INCHES.
PANEL_INCHES = (2.6, 2.3)
MAX_FIGURE_INCHES = (14.0, 16.0)
_MARKERS = ("o", "s", "^", "D", "v", "P", "X", "<", ">", "h")

STYLE: dict[str, Any] = {
    "font.family": "sans-serif",
    "font.sans-serif": ["DejaVu Sans", "Arial", "Helvetica", "Liberation Sans"],
    "font.size": 9,
    "axes.titlesize": 9.5,
    "axes.labelsize": 9,
    "axes.titleweight": "regular",
    "figure.titlesize": 11,
    "xtick.labelsize": 8,
    "ytick.labelsize": 8,
    "legend.fontsize": 7.5,
    "legend.title_fontsize": 8,
    "legend.frameon": False,
    "axes.spines.top": False,
    "axes.spines.right": False,
    "axes.linewidth": 0.8,
    "axes.grid": False,
    "grid.color": "#E5E5E5",
    "grid.linewidth": 0.6,
    "axes.prop_cycle": mpl.cycler(color=list(OKABE_ITO)),
    "image.cmap": SEQUENTIAL_CMAP,
    "lines.linewidth": 1.4,
    "lines.markersize": 5,
    "errorbar.capsize": 2.5,
    "figure.dpi": 100,
    "savefig.dpi": 200,
    "pdf.fonttype": 42,
    "ps.fonttype": 42,
    "svg.fonttype": "none",
}

F = TypeVar("F", bound=Callable[..., Any])


@contextmanager
def latent_style() -> Iterator[None]:
    """Context in which matplotlib uses :data:`STYLE` (restored on exit)."""
    with mpl.rc_context(STYLE):
        yield


def styled(function: F) -> F:
    """Decorator: run a plotting function under :func:`latent_style`."""

    @functools.wraps(function)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        with latent_style():
            return function(*args, **kwargs)

    return wrapper  # type: ignore[return-value]


def new_figure(nrows: int = 1, ncols: int = 1, *, panel: "tuple[float, float] | None" = None,
               extra: tuple[float, float] = (0.0, 0.0), squeeze: bool = False,
               **subplot_kw: Any) -> tuple[Figure, Any]:
    """A constrained-layout figure of ``nrows x ncols`` panels sized ``panel`` inches each (+ ``extra``).

    The size is capped at :data:`MAX_FIGURE_INCHES`. Returns ``(fig, axes)``, ``axes`` a
    ``(nrows, ncols)`` array unless ``squeeze``.
    """
    pw, ph = panel or PANEL_INCHES
    width = min(MAX_FIGURE_INCHES[0], pw * ncols + extra[0])
    height = min(MAX_FIGURE_INCHES[1], ph * nrows + extra[1])
    fig = Figure(figsize=(width, height), layout="constrained")
    axes = fig.subplots(nrows, ncols, squeeze=squeeze, **subplot_kw)
    return fig, axes


def palette(n: int) -> list[str]:
    """``n`` categorical colours: Okabe-Ito, then Tol muted, then repeating (with a logged note)."""
    colours = list(OKABE_ITO) + list(TOL_MUTED)
    if n > len(colours):
        log.info("%d categories but %d distinct colours: colours repeat (markers tell them apart)", n, len(colours))
    return [colours[i % len(colours)] for i in range(max(0, n))]


def markers(n: int) -> list[str]:
    """``n`` marker shapes (so series stay distinct in greyscale)."""
    return [_MARKERS[i % len(_MARKERS)] for i in range(max(0, n))]


def shorten(text: str, width: int = 28) -> str:
    """``text`` cut to ``width`` characters with an ellipsis."""
    text = str(text)
    return text if len(text) <= width else text[: max(1, width - 1)] + "\u2026"


def rank_keys(table: pd.DataFrame, rank: str) -> tuple[np.ndarray, np.ndarray]:
    """Identity and display name of every row's taxon at ``rank``.

    Taxa are identified by their lineage (kingdom..rank joined by ``;``), so homonyms in different
    kingdoms stay apart; the display name is the name at ``rank``.

    Parameters
    ----------
    table
        ``(n, >=7)`` a taxonomy table with columns ``kingdom`` .. ``species`` (at least down to ``rank``).
    rank
        A rank name.

    Returns
    -------
    tuple of numpy.ndarray
        ``(n,)`` keys (``""`` where the row has no name at ``rank``) and ``(n,)`` names.
    """
    keys = lineage_keys(table, rank)
    column = table[rank]
    names = column.astype(object).where(column.notna(), "").astype(str).to_numpy(dtype=object)
    keys = np.where(names == "", "", keys).astype(object)
    return keys, names


def lineage_keys(table: pd.DataFrame, rank: str) -> np.ndarray:
    """``(n,)`` object array: the names from kingdom down to ``rank`` joined by ``;`` (placeholders kept)."""
    depth = RANK_NAMES.index(rank)
    keys = None
    for column in RANK_NAMES[: depth + 1]:
        text = table[column].astype(object).where(table[column].notna(), "").astype(str)
        keys = text if keys is None else keys + ";" + text
    return keys.to_numpy(dtype=object)


def top_categories(keys: "Sequence[str] | np.ndarray", top_n: int, *,
                   names: "Sequence[str] | np.ndarray | None" = None, other: str = "other") -> tuple[np.ndarray, list[str], list[int]]:
    """The ``top_n`` most frequent categories; every other one (and ``""``) goes to an "other" bucket.

    When only one category would be left over it is kept (an "other" of one is no summary).

    Parameters
    ----------
    keys
        ``(n,)`` category identities (``""`` = unlabelled, always in "other").
    top_n
        How many categories to keep (>= 1).
    names
        ``(n,)`` display names (default the keys); two kept categories with the same name are told
        apart by their key.

    Returns
    -------
    tuple
        ``(n,)`` int index of each row's category (``len(labels) - 1`` for "other" when there is one),
        the category labels (most frequent first, ``other`` last when present) and their counts.
    """
    top_n = check_int("top_n", top_n, minimum=1, function="top_categories")
    keys = np.asarray(keys, dtype=object)
    names = keys if names is None else np.asarray(names, dtype=object)
    if keys.shape != names.shape:
        raise InputError(f"keys {keys.shape} and names {names.shape} must have the same shape.")
    counts = pd.Series(keys[keys != ""]).value_counts(sort=False)
    # Most frequent first; ties by key so the order is deterministic.
    order = sorted(counts.index, key=lambda k: (-int(counts[k]), str(k)))
    has_unlabelled = bool((keys == "").any())
    if len(order) <= top_n or (len(order) == top_n + 1 and not has_unlabelled):
        kept = order
    else:
        kept = order[:top_n]
    index_of = {k: i for i, k in enumerate(kept)}
    first_name = {}
    for k, nm in zip(keys, names):
        first_name.setdefault(k, nm)
    labels = [str(first_name[k]) for k in kept]
    repeated = pd.Series(labels).duplicated(keep=False).to_numpy()
    labels = [str(k) if dup else lab for k, lab, dup in zip(kept, labels, repeated)]
    n_other = len(kept)
    codes = np.fromiter((index_of.get(k, n_other) for k in keys), dtype=np.int64, count=len(keys))
    sizes = [int(counts[k]) for k in kept]
    if (codes == n_other).any():
        labels.append(other)
        sizes.append(int((codes == n_other).sum()))
    return codes, labels, sizes


def save_figure(fig: Figure, path_stem: "str | os.PathLike[str]", *, formats: Sequence[str] = ("pdf", "png"),
                dpi: int = 200) -> list[Path]:
    """Write ``fig`` as vector PDF and PNG (``dpi`` 200) beside each other.

    Files are written to a temporary name and renamed, so a reader never sees half a file. The PDF
    has no creation date (the same figure gives the same bytes).

    Parameters
    ----------
    fig
        The figure (from any function of :mod:`latent.plotting`).
    path_stem
        Path without extension (``out/accuracy`` -> ``out/accuracy.pdf``, ``out/accuracy.png``); a
        ``.pdf``/``.png``/``.svg`` suffix is dropped. Parent folders are created.
    formats
        Any of ``pdf``, ``png``, ``svg``.
    dpi
        Resolution of the PNG (the PDF is vector; rasterised layers such as large scatters use it too).

    Returns
    -------
    list of pathlib.Path
        The files written, in the order of ``formats``.
    """
    if not isinstance(fig, Figure):
        raise InputError(f"The 'fig' parameter of save_figure must be a matplotlib Figure. Got {type(fig).__name__}.")
    allowed = ("pdf", "png", "svg")
    bad = [f for f in formats if f not in allowed]
    if bad or not formats:
        raise InputError(f"The 'formats' parameter of save_figure must name some of {', '.join(allowed)}. "
                         f"Got {format_list(map(repr, formats)) or 'nothing'}.")
    if isinstance(dpi, bool) or not isinstance(dpi, (int, np.integer)) or dpi < 10:
        raise InputError(f"The 'dpi' parameter of save_figure must be an integer >= 10. Got {dpi!r}.")
    stem = Path(path_stem)
    if stem.suffix.lower() in (".pdf", ".png", ".svg"):
        stem = stem.with_suffix("")
    stem.parent.mkdir(parents=True, exist_ok=True)
    written = []
    with latent_style():
        for fmt in formats:
            path = stem.with_name(stem.name + "." + fmt)
            tmp = path.with_name(path.name + ".tmp")
            metadata = {"pdf": {"Creator": f"latent {__version__}", "CreationDate": None},
                        "png": {"Software": f"latent {__version__}"},
                        "svg": {"Creator": f"latent {__version__}", "Date": None}}[fmt]
            fig.savefig(tmp, format=fmt, dpi=dpi, metadata=metadata)
            os.replace(tmp, path)
            written.append(path)
    log.info("saved figure %s (%s)", stem, ", ".join(formats))
    return written


# ---------------------------------------------------------------------- input checks shared by the figures
def require_columns(frame: Any, columns: Sequence[str], *, parameter: str, function: str,
                    hint: str = "") -> pd.DataFrame:
    """``frame`` as a DataFrame holding ``columns``; InputError naming what is missing otherwise."""
    if not isinstance(frame, pd.DataFrame):
        raise InputError(f"The {parameter!r} parameter of {function} must be a pandas DataFrame. "
                         f"Got {type(frame).__name__} instead.")
    missing = [c for c in columns if c not in frame.columns]
    if missing:
        raise InputError(
            f"The {parameter!r} parameter of {function} lacks column(s) {', '.join(missing)}; it has "
            f"{format_list(map(str, frame.columns))}. {hint}".strip()
        )
    return frame


def model_groups(frame: pd.DataFrame, column: str = "model") -> list[str]:
    """The models of ``frame`` in order of appearance (``[""]`` when there is no ``model`` column)."""
    if column not in frame.columns:
        return [""]
    values = frame[column].astype(object).where(frame[column].notna(), "").astype(str)
    return list(dict.fromkeys(values))


def model_values(frame: pd.DataFrame, column: str = "model") -> pd.Series:
    """``frame[column]`` as strings (``""`` where absent or NaN)."""
    if column not in frame.columns:
        return pd.Series([""] * len(frame), index=frame.index, dtype=object)
    return frame[column].astype(object).where(frame[column].notna(), "").astype(str)


def grid_shape(n: int, max_cols: int = 4) -> tuple[int, int]:
    """Rows and columns for ``n`` panels wrapped at ``max_cols``."""
    ncols = max(1, min(n, max_cols))
    return int(np.ceil(max(n, 1) / ncols)), ncols


def hide_unused(axes: np.ndarray, used: int) -> None:
    """Hide the panels after the first ``used`` of a panel grid."""
    for ax in np.asarray(axes).ravel()[used:]:
        ax.set_visible(False)


def check_int(name: str, value: Any, *, minimum: int, function: str) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < minimum:
        raise InputError(f"The {name!r} parameter of {function} must be an integer >= {minimum}. "
                         f"Got {value!r} instead.")
    return int(value)


def check_ranks(ranks: "Sequence[str] | str | None", *, function: str, default: Sequence[str] = RANK_NAMES,
                allow_all: bool = False) -> list[str]:
    """Rank names (validated, in the order given); ``default`` when None."""
    if ranks is None:
        return list(default)
    values = [ranks] if isinstance(ranks, str) else list(ranks)
    allowed = list(RANK_NAMES) + (["all"] if allow_all else [])
    bad = [r for r in values if r not in allowed]
    if bad or not values:
        raise InputError(f"The 'ranks' parameter of {function} must name ranks from {', '.join(allowed)}. "
                         f"Got {format_list(map(repr, bad)) or 'nothing'} instead.")
    return values


def figure_legend(fig: Figure, handles: list, labels: list, *, max_ncol: int = 4, title: "str | None" = None) -> Any:
    """A legend under all panels, in as many columns (up to ``max_ncol``) as fit the figure's width."""
    size = float(mpl.rcParams["legend.fontsize"]) if not isinstance(mpl.rcParams["legend.fontsize"], str) else 7.5
    widest = max([len(str(label)) for label in labels] + [1])
    column = widest * size * 0.58 + 2.6 * size + 8.0  # text + handle + spacing, in points
    fits = int(fig.get_figwidth() * 72.0 // column)
    ncol = max(1, min(max_ncol, len(labels), fits))
    return fig.legend(handles, labels, loc="outside lower center", ncol=ncol, title=title)


def figure_title(fig: Figure, title: "str | None") -> None:
    """The figure's title, wrapped to the figure's width (nothing when ``title`` is empty)."""
    if not title:
        return
    import textwrap

    size = mpl.rcParams["figure.titlesize"]
    size = float(size) if not isinstance(size, str) else 11.0
    width = max(12, int(fig.get_figwidth() * 72.0 / (size * 0.56)))
    fig.suptitle("\n".join(textwrap.wrap(str(title), width)) or str(title))


def coordinate_sets(coords: Any, *, function: str, what: str, hint: str = "") -> dict[str, np.ndarray]:
    """``{name: (n, 2) float64}`` from one array or a ``{name: array}`` mapping, checked (2 columns, finite).

    ``what`` names the coordinates in the error (e.g. "(S, 2) disk coordinates"); ``hint`` says what to do.
    """
    sets = dict(coords) if isinstance(coords, Mapping) else {"": coords}
    if not sets:
        raise InputError(f"The 'coords' parameter of {function} is an empty mapping.")
    arrays = {}
    for name, P in sets.items():
        P = np.asarray(P, dtype=np.float64)
        where = f" ({name!r})" if name else ""
        if P.ndim != 2 or P.shape[1] != 2:
            raise InputError(f"The 'coords' parameter of {function} must be {what}{where}. "
                             f"Got shape {P.shape} instead{hint}.")
        if not np.isfinite(P).all():
            raise InputError(f"The 'coords' parameter of {function} holds non-finite values{where}.")
        arrays[name] = P
    return arrays
