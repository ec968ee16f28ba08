"""The model's-eye sheet: each original with the unseen area shaded, beside the model's input.

:func:`plot_model_inputs` draws what :func:`latent.show_inputs.show_inputs` computed; it computes no
geometry itself. Artists carry ids a test can find: the shaded margins have gid ``"unseen"``, the
outline of the visible box ``"visible-box"``, the patch grid lines ``"patch-grid"``.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
from matplotlib.figure import Figure
from matplotlib.patches import Rectangle

from latent.errors import InputError
from latent.plotting.style import OKABE_ITO, figure_title, new_figure, shorten, styled

__all__ = ["plot_model_inputs", "describe_transform"]

_SHADE = dict(facecolor="black", alpha=0.6, edgecolor="none", linewidth=0)


def describe_transform(geometry: Mapping[str, Any]) -> str:
    """One sentence for the sheet's title: how the transform resizes and crops."""
    mode, size = geometry.get("resize_mode"), geometry.get("resize_size") or []
    crop, interp = geometry.get("crop_size"), geometry.get("interpolation") or ""
    h, w = (geometry.get("image_size") or [0, 0])[:2]
    if mode == "shortest":
        what = f"shorter side resized to {size[0]} px ({interp})"
        what += f", centre crop {crop[0]}x{crop[-1]}" if crop else ""
    elif mode == "squash":
        what = f"squashed to {h}x{w} px ({interp}), nothing cropped, aspect changed"
    elif mode == "longest":
        what = f"longer side fitted to {h}x{w} px ({interp}), padded, nothing cropped"
    else:
        what = f"{mode} resize to {size}"
    return what


def _shade_unseen(ax: Any, g: Mapping[str, Any]) -> None:
    W, H = g["width"], g["height"]
    x0, x1, y0, y1 = g["x0"], g["x1"], g["y0"], g["y1"]
    boxes = [(0, 0, x0, H), (x1, 0, W - x1, H), (x0, 0, x1 - x0, y0), (x0, y1, x1 - x0, H - y1)]
    for x, y, bw, bh in boxes:
        if bw > 1e-9 and bh > 1e-9:  # image coordinates: pixel i covers [i - 0.5, i + 0.5)
            ax.add_patch(Rectangle((x - 0.5, y - 0.5), bw, bh, gid="unseen", **_SHADE))
    ax.add_patch(Rectangle((x0 - 0.5, y0 - 0.5), x1 - x0, y1 - y0, fill=False, edgecolor=OKABE_ITO[1],
                           linewidth=1.0, linestyle="--", gid="visible-box"))


def _patch_grid(ax: Any, height: int, width: int, patch: int) -> None:
    for x in range(patch, width, patch):
        ax.axvline(x - 0.5, color="white", linewidth=0.35, alpha=0.7, gid="patch-grid")
    for y in range(patch, height, patch):
        ax.axhline(y - 0.5, color="white", linewidth=0.35, alpha=0.7, gid="patch-grid")


@styled
def plot_model_inputs(panels: Sequence[Mapping[str, Any]], geometry: Mapping[str, Any], *, model: str,
                      patch_size: int | None = None, per_row: int = 4) -> Figure:
    """The sheet: for each image, the original (unseen area shaded) and the model's input.

    Parameters
    ----------
    panels : sequence of mapping
        One per image: ``id`` (str), ``original`` (``(h, w, 3)`` uint8 array), ``input``
        (``(H, W, 3)`` float array in [0, 1], the de-normalised model input) and ``geometry``
        (:func:`latent.show_inputs.crop_geometry` of the original's size).
    geometry : mapping
        :func:`latent.modelcard.transform_geometry` of the transform (for the title).
    model : str
        Model name, for the title.
    patch_size : int, optional
        Draw the patch grid (lines every ``patch_size`` input pixels) on the model inputs.
    per_row : int, default 4
        Images per row (each takes two panels).

    Returns
    -------
    matplotlib.figure.Figure
    """
    if not panels:
        raise InputError("The 'panels' parameter of plot_model_inputs is empty: there is nothing to draw.")
    n = len(panels)
    cols = min(per_row, n)
    nrows = math.ceil(n / cols)
    fig, axes = new_figure(nrows, 2 * cols, panel=(1.55, 1.75), extra=(0.0, 0.55))
    for ax in axes.ravel():
        ax.set_axis_off()
    for i, p in enumerate(panels):
        g = p["geometry"]
        ax_o, ax_i = axes[i // cols, 2 * (i % cols)], axes[i // cols, 2 * (i % cols) + 1]
        original = np.asarray(p["original"])
        ax_o.imshow(original, interpolation="antialiased")
        _shade_unseen(ax_o, g)
        seen = f"sees {100 * g['visible_fraction']:.0f}%"
        d = g["aspect_distortion"]  # input px per original px, vertical over horizontal
        if abs(d - 1.0) > 0.005:
            seen += f", {d:.2f}x taller" if d > 1 else f", {1 / d:.2f}x wider"
        ax_o.set_title(f"{shorten(p['id'], 24)}\n{g['width']}x{g['height']}, {seen}", fontsize=6.5)
        model_input = np.asarray(p["input"])
        ax_i.imshow(model_input, interpolation="nearest")
        if patch_size:
            _patch_grid(ax_i, model_input.shape[0], model_input.shape[1], int(patch_size))
        grid = f", {model_input.shape[0] // patch_size}x{model_input.shape[1] // patch_size} patches" \
            if patch_size else ""
        ax_i.set_title(f"model input\n{model_input.shape[1]}x{model_input.shape[0]} px{grid}", fontsize=6.5)
    cropped = any(p["geometry"]["visible_fraction"] < 1.0 for p in panels)
    left = "the area the model never sees shaded" if cropped else "all of it reaches the model"
    figure_title(fig, f"What {model} receives: {describe_transform(geometry)}. Left: original, {left}; right: the "
                      "model's input, de-normalised, at its real resolution.")
    return fig
