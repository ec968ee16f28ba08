"""Within-species variation: the attribute against the species structure (the ``intra_species`` probe).

In the style of the BioCLIP 2 paper's life-stage figure. Left: the images of a few species on two axes,
the species axis (the leading direction of their centroids inside the species subspace) and the attribute
axis (the mean attribute direction's part outside that subspace); colour = species, marker = attribute
value. An attribute orthogonal to the species structure splits each species' images along the attribute
axis; one inside it does not. Right: each used species' angle between its attribute direction and the
species subspace (dot; filled: its own within-species permutation p <= ALPHA on either side), beside the
mean of its null (grey bar), with the median over species written in the panel.

Inputs are the probe's outputs: the ``species`` table (``intra_species_species.csv``), its rows
(``metrics.csv``) and its arrays (``intra_species.npz``: ``coords``, ``coord_species``, ``coord_value``).
"""

from __future__ import annotations

import logging
from typing import Any

import numpy as np
import pandas as pd
from matplotlib.figure import Figure
from matplotlib.lines import Line2D

from latent.errors import InputError
from latent.plotting.nulls import format_p
from latent.plotting.style import check_int, figure_legend, figure_title, new_figure, palette, shorten, styled

__all__ = ["plot_intra_species", "report_intra_species"]

log = logging.getLogger(__name__)

PROBE = "intra_species"
ANGLE = "attribute_angle_deg"


def _value_names(table: pd.DataFrame) -> tuple[str, str]:
    """The two values' names when every species compares the same two, else generic names."""
    pairs = {(str(a), str(b)) for a, b in zip(table["value_a"], table["value_b"])}
    if len(pairs) == 1:
        return next(iter(pairs))
    return "most frequent value", "second value"


@styled
def plot_intra_species(
    species: pd.DataFrame,
    coords: np.ndarray,
    coord_species: np.ndarray,
    coord_value: np.ndarray,
    *,
    rows: "pd.DataFrame | None" = None,
    max_species: int = 8,
    title: "str | None" = "Within-species attribute against the species structure",
) -> tuple[Figure, np.ndarray]:
    """Images of a few species on the species and attribute axes; each species' angle against its null.

    Parameters
    ----------
    species
        The probe's ``species`` table (``species``, ``value_a``, ``value_b``, ``n_a``, ``n_b``,
        ``attribute_angle_deg``; ``attribute_angle_deg_null_mean`` and ``_p_value`` when a null was run).
    coords
        ``(N, 2)`` the used images on the species axis and the attribute axis.
    coord_species
        ``(N,)`` row of each image's species in ``species``.
    coord_value
        ``(N,)`` 1 for the species' most frequent value (``value_a``), 0 for the second.
    rows
        The probe's rows (``metric``, ``value``, ``p_value``, ``attribute``), for the median written in
        the right panel (optional).
    max_species
        Species drawn on the left (those with the most images).
    title
        Figure title (None: none).

    Returns
    -------
    tuple
        ``(figure, axes)``, ``axes`` ``(1, 2)``.
    """
    from latent.verdict import ALPHA

    max_species = check_int("max_species", max_species, minimum=1, function="plot_intra_species")
    missing = [c for c in ("species", "value_a", "value_b", "n_a", "n_b", ANGLE) if c not in species.columns]
    if missing:
        raise InputError(f"The 'species' parameter of plot_intra_species lacks column(s) {', '.join(missing)}; "
                         f"pass the intra_species probe's species table (intra_species_species.csv).")
    coords = np.asarray(coords, dtype=np.float64).reshape(-1, 2)
    coord_species = np.asarray(coord_species, dtype=np.int64).ravel()
    coord_value = np.asarray(coord_value).astype(bool).ravel()
    if not len(coords) == len(coord_species) == len(coord_value):
        raise InputError(f"plot_intra_species needs one species and one value per image: got {len(coords)} "
                         f"coordinates, {len(coord_species)} species and {len(coord_value)} values.")
    if len(coord_species) and (coord_species.min() < 0 or coord_species.max() >= len(species)):
        raise InputError(f"The 'coord_species' parameter of plot_intra_species must index the {len(species)} rows "
                         f"of the species table; got values up to {coord_species.max()}.")
    fig, axes = new_figure(1, 2, panel=(4.2, 3.6), extra=(0.0, 0.9))
    left, right = axes[0]
    name_a, name_b = _value_names(species) if len(species) else ("", "")
    attribute = ""
    if rows is not None and len(rows) and "attribute" in rows.columns:
        attribute = str(rows["attribute"].iloc[0])

    # Left: images of the species with the most images ---------------------------------------------
    sizes = (species["n_a"] + species["n_b"]).to_numpy()
    present = np.unique(coord_species)
    shown = present[np.argsort(-sizes[present], kind="stable")][:max_species]
    colours = palette(len(shown))
    handles, labels = [], []
    for colour, s in zip(colours, shown):
        mine = coord_species == s
        for value, marker in ((True, "o"), (False, "^")):
            pick = mine & (coord_value == value)
            left.scatter(coords[pick, 0], coords[pick, 1], s=18, marker=marker, color=colour,
                         edgecolor="white" if value else colour, linewidth=0.4,
                         facecolor=colour if value else "none")
        handles.append(Line2D([], [], marker="s", linestyle="", color=colour))
        labels.append(shorten(species["species"].iloc[s], 26))
    for value, marker, name in ((True, "o", name_a), (False, "^", name_b)):
        handles.append(Line2D([], [], marker=marker, linestyle="", color="0.3",
                              markerfacecolor="0.3" if value else "none"))
        generic = name in ("most frequent value", "second value")
        labels.append(shorten(name if generic or not attribute else f"{attribute} = {name}", 30))
    left.set_xlabel("species axis (inside the species subspace)")
    left.set_ylabel(f"{attribute or 'attribute'} axis (outside the species subspace)")
    left.set_title(f"{len(shown)} of {len(species)} species")
    if not len(shown):
        left.text(0.5, 0.5, "no species with two attribute values", ha="center", va="center",
                  transform=left.transAxes)

    # Right: each species' angle against its null --------------------------------------------------
    order = np.argsort(species[ANGLE].to_numpy(dtype=np.float64), kind="stable")
    x = np.arange(len(order))
    angle = species[ANGLE].to_numpy(dtype=np.float64)[order]
    null_column = ANGLE + "_null_mean"
    if null_column in species.columns:
        null_mean = species[null_column].to_numpy(dtype=np.float64)[order]
        right.scatter(x, null_mean, marker="_", s=60 if len(x) <= 40 else 20, color="0.6", linewidth=1.5, zorder=1)
    p_column = ANGLE + "_p_value"
    significant = (species[p_column].to_numpy(dtype=np.float64)[order] <= ALPHA) if p_column in species.columns \
        else np.zeros(len(order), dtype=bool)
    right.scatter(x[significant], angle[significant], s=16, color="C0", zorder=2)
    right.scatter(x[~significant], angle[~significant], s=16, facecolor="none", edgecolor="C0", zorder=2)
    right.axhline(90.0, color="0.4", linestyle=":", linewidth=0.8)
    right.set_ylim(0, 95)
    right.set_xlabel("species (sorted by angle)")
    right.set_ylabel("angle to the species subspace (degrees)")
    if len(order) <= 12:
        right.set_xticks(x, [shorten(species["species"].iloc[i], 14) for i in order], rotation=45, ha="right")
    else:
        right.set_xticks([])
    if rows is not None and len(rows):
        row = rows[rows["metric"] == ANGLE]
        if len(row) and np.isfinite(row["value"].iloc[0]):
            r = row.iloc[0]
            text = f"median {r['value']:.0f}\N{DEGREE SIGN}"
            if "null_mean" in row.columns and np.isfinite(r.get("null_mean", np.nan)):
                p_text = format_p(r["p_value"], r.get("permutations"))
                text += f" (null {r['null_mean']:.0f}\N{DEGREE SIGN}, {p_text}, {int(r['n'])} species)"
            right.text(0.02, 0.03, text, transform=right.transAxes, fontsize=8, va="bottom")
    right.set_title("attribute direction per species")
    handles += [Line2D([], [], marker="o", linestyle="", color="C0"),
                Line2D([], [], marker="o", linestyle="", markerfacecolor="none", color="C0"),
                Line2D([], [], marker="_", linestyle="", color="0.6", markersize=10, markeredgewidth=1.5)]
    labels += [f"p <= {ALPHA:g}", f"p > {ALPHA:g}", "null mean"]
    figure_legend(fig, handles, labels, max_ncol=4)
    figure_title(fig, title)
    return fig, axes


def report_intra_species(context: Any, model: Any) -> "tuple[Figure, np.ndarray] | None":
    """One model's figure from its probe folder (None when the probe did not run or used no species)."""
    table = context.probe_table(model, f"{PROBE}_species.csv")
    arrays = context.npz(model, f"{PROBE}.npz")
    if table is None or not len(table) or "coords" not in arrays:
        return None
    rows = context.probe_table(model, "metrics.csv")
    if rows is not None and "probe" in rows.columns:
        rows = rows[rows["probe"] == PROBE]
    return plot_intra_species(table, arrays["coords"], arrays["coord_species"], arrays["coord_value"], rows=rows,
                              title=None)
