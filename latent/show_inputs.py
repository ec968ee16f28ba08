"""The model's-eye view: images as the model receives them, beside the originals.

:func:`show_inputs` takes a folder of images or a manifest, runs a sample of images through the
model's own evaluation transform (built without weights: :func:`latent.modelcard.model_transform`),
undoes the normalisation, and draws each original with the area the model never sees shaded beside
the model's input at its real resolution (optionally with the patch grid). It writes
``model_inputs.png`` / ``.pdf`` and ``model_inputs.csv`` (the crop geometry of every image).

:func:`crop_geometry` is the pure part: where the visible box of an image of a given size lies in
its own pixel coordinates, for the transform geometry of :func:`latent.modelcard.transform_geometry`.
It follows torchvision's arithmetic exactly (``Resize(int)``: the shorter side to ``s``, the longer to
``int(s * long / short)``; ``CenterCrop``: offset ``int(round((size - crop) / 2))``, padding when the
crop is larger) and open_clip's ``ResizeKeepRatio`` (``round(side / ratio)``).
"""

from __future__ import annotations

import contextlib
import logging
import os
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import numpy as np

from latent.errors import InputError

__all__ = ["crop_geometry", "show_inputs", "denormalise", "GEOMETRY_COLUMNS"]

log = logging.getLogger(__name__)

#: Columns of ``model_inputs.csv`` (one row per image drawn or skipped).
GEOMETRY_COLUMNS = ("id", "path", "width", "height", "resize_mode", "resized_width", "resized_height", "x0", "y0",
                    "x1", "y1", "visible_fraction", "scale_x", "scale_y", "aspect_distortion", "input_width",
                    "input_height", "pad_left", "pad_top", "pad_right", "pad_bottom", "patch_size", "patch_grid",
                    "error")


_INT_COLUMNS = ("width", "height", "resized_width", "resized_height", "input_width", "input_height", "pad_left",
                "pad_top", "pad_right", "pad_bottom", "patch_size")


def _resized_size(width: int, height: int, geo: Mapping[str, Any]) -> tuple[int, int]:
    mode, size = geo["resize_mode"], list(geo["resize_size"])
    if mode == "shortest":
        s = int(size[0])
        short, long = (width, height) if width <= height else (height, width)
        new_short, new_long = s, int(s * long / short)  # torchvision _compute_resized_output_size
        return (new_short, new_long) if width <= height else (new_long, new_short)
    if mode == "squash":
        return int(size[-1]), int(size[0])
    if mode in ("longest", "fit_shortest"):
        th, tw = int(size[0]), int(size[-1])
        rh, rw = height / th, width / tw
        ratio = max(rh, rw) if mode == "longest" else min(rh, rw)
        return int(round(width / ratio)), int(round(height / ratio))  # open_clip ResizeKeepRatio
    raise InputError(f"The 'transform_info' parameter of crop_geometry has resize_mode {mode!r}; expected "
                     "'shortest', 'squash', 'longest' or 'fit_shortest'.")


def _crop_axis(size: int, crop: int) -> tuple[int, int, int, int]:
    """One axis of torchvision's CenterCrop: (first visible resized pixel, end, pad before, pad after)."""
    if crop > size:  # torchvision pads (crop - size) // 2 before, the rest after, then crops at 0
        before = (crop - size) // 2
        return 0, size, before, crop - size - before
    offset = int(round((size - crop) / 2.0))
    return offset, offset + crop, 0, 0


def crop_geometry(width: int, height: int, transform_info: Mapping[str, Any]) -> dict[str, Any]:
    """Which part of a ``width x height`` image the model sees, in the image's own pixel coordinates.

    Pure: no image, no model.

    Parameters
    ----------
    width, height : int
        Size of the original image in pixels (after EXIF rotation, as :func:`latent.images.load_rgb`
        gives it).
    transform_info : mapping
        ``resize_mode`` (``"shortest"``, ``"squash"``, ``"longest"``, ``"fit_shortest"``),
        ``resize_size`` (``[s]`` for shortest, ``[h, w]`` otherwise), ``crop_size`` (``[h, w]`` or
        None) and ``image_size`` (``[h, w]``): :func:`latent.modelcard.transform_geometry` gives it.

    Returns
    -------
    dict
        ``x0, y0, x1, y1`` (float): the visible box ``[x0, x1) x [y0, y1)`` of the original;
        ``visible_fraction`` (its share of the original's area); ``resized_width/height`` (size
        after the resize step); ``scale_x, scale_y`` (input pixels per original pixel);
        ``aspect_distortion`` (``scale_y / scale_x``: 1 when the aspect is kept);
        ``input_width/height``; ``pad_left/top/right/bottom`` (padding in input pixels, where the
        crop is larger than the resized image); ``resize_mode``.

    Examples
    --------
    A 400 x 200 image, shorter side resized to 224 then a centre crop of 224: the resize gives
    448 x 224, the crop keeps x in [112, 336) of it, i.e. x in [100, 300) of the original.

    >>> g = crop_geometry(400, 200, {"resize_mode": "shortest", "resize_size": [224],
    ...                              "crop_size": [224, 224], "image_size": [224, 224]})
    >>> (g["x0"], g["x1"], g["y0"], g["y1"])
    (100.0, 300.0, 0.0, 200.0)
    """
    for param, value in (("width", width), ("height", height)):
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
            raise InputError(f"The {param!r} parameter of crop_geometry must be a positive integer. "
                             f"Got {value!r} instead.")
    if not isinstance(transform_info, Mapping) or not {"resize_mode", "resize_size"} <= set(transform_info):
        raise InputError("The 'transform_info' parameter of crop_geometry must be a mapping with resize_mode, "
                         f"resize_size, crop_size and image_size (latent.modelcard.transform_geometry). "
                         f"Got {transform_info!r} instead.")
    width, height = int(width), int(height)
    rw, rh = _resized_size(width, height, transform_info)
    crop = transform_info.get("crop_size")
    if crop:
        ch, cw = int(crop[0]), int(crop[-1])
        left, right, pad_l, pad_r = _crop_axis(rw, cw)
        top, bottom, pad_t, pad_b = _crop_axis(rh, ch)
        in_w, in_h = cw, ch
    else:
        left, right, top, bottom, pad_l, pad_r, pad_t, pad_b = 0, rw, 0, rh, 0, 0, 0, 0
        in_w, in_h = rw, rh
    sx, sy = rw / width, rh / height
    x0, x1, y0, y1 = left * width / rw, right * width / rw, top * height / rh, bottom * height / rh
    return {"width": width, "height": height, "resize_mode": str(transform_info["resize_mode"]),
            "resized_width": rw, "resized_height": rh, "x0": x0, "y0": y0, "x1": x1, "y1": y1,
            "visible_fraction": (x1 - x0) * (y1 - y0) / (width * height), "scale_x": sx, "scale_y": sy,
            "aspect_distortion": sy / sx, "input_width": in_w, "input_height": in_h,
            "pad_left": pad_l, "pad_top": pad_t, "pad_right": pad_r, "pad_bottom": pad_b}


def denormalise(tensor: Any, mean: Any, std: Any) -> np.ndarray:
    """A normalised ``(3, H, W)`` model input back to an ``(H, W, 3)`` float image in [0, 1].

    ``x * std + mean`` per channel, clipped to [0, 1] (resampling overshoot of bicubic filters).
    """
    x = np.asarray(tensor.detach().cpu().numpy() if hasattr(tensor, "detach") else tensor, dtype=np.float64)
    if x.ndim != 3 or x.shape[0] != 3:
        raise InputError(f"The 'tensor' parameter of denormalise must be (3, H, W). Got shape {x.shape} instead.")
    m = np.asarray(mean, dtype=np.float64).reshape(3, 1, 1)
    s = np.asarray(std, dtype=np.float64).reshape(3, 1, 1)
    return np.clip(x * s + m, 0.0, 1.0).transpose(1, 2, 0)


class _DropUnlabelledWarning(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.msg).startswith("no taxonomy given")


@contextlib.contextmanager
def _quiet_unlabelled() -> Iterator[None]:
    logger, flt = logging.getLogger("latent.extract"), _DropUnlabelledWarning()
    logger.addFilter(flt)
    try:
        yield
    finally:
        logger.removeFilter(flt)


def _sample(records: list[Any], n: int, seed: int) -> list[Any]:
    if len(records) <= n:
        return list(records)
    rng = np.random.default_rng(seed)
    picked = np.sort(rng.choice(len(records), size=n, replace=False))
    return [records[i] for i in picked]


def show_inputs(
    source: str | os.PathLike[str],
    out: str | os.PathLike[str],
    *,
    model: str = "bioclip-2",
    pretrained: str | os.PathLike[str] | None = None,
    n: int = 16,
    seed: int = 0,
    patch_grid: bool = False,
    path_column: str | None = None,
    preprocess: str = "openclip",
) -> Path:
    """Draw a sheet of images as the model receives them, beside the originals.

    Parameters
    ----------
    source : str or path-like
        A folder of images (searched recursively) or a manifest table with a path column, as
        :func:`latent.extract.collect_inputs` reads them.
    out : str or path-like
        Output folder (created): ``model_inputs.png``, ``model_inputs.pdf``, ``model_inputs.csv``.
    model, pretrained : str
        The model whose transform is shown (:func:`latent.models.resolve_model`); no weights are read.
    n : int, default 16
        Number of images drawn (a seeded sample without replacement when the source has more).
    seed : int, default 0
        Seed of that sample.
    patch_grid : bool, default False
        Overlay the vision tower's patch grid on the model inputs.
    path_column : str, optional
        The manifest's path column.
    preprocess : {"openclip", "squash"}, default "openclip"
        As for :func:`latent.models.load_model`.

    Returns
    -------
    pathlib.Path
        The PNG written.
    """
    from latent.extract import collect_inputs
    from latent.images import load_rgb
    from latent.modelcard import model_transform
    from latent.plotting.inputs import plot_model_inputs
    from latent.plotting.style import save_figure

    if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or not 1 <= n <= 64:
        raise InputError(f"The 'n' parameter of show_inputs must be an integer from 1 to 64. Got {n!r} instead.")
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise InputError(f"The 'seed' parameter of show_inputs must be a non-negative integer. Got {seed!r} instead.")
    with _quiet_unlabelled():  # labels are not needed to look at images
        records, _ = collect_inputs(source, path_column=path_column)
    transform, geo, patch = model_transform(model, pretrained, preprocess=preprocess)
    from latent.models import resolve_model

    spec = resolve_model(model, pretrained)
    chosen = _sample(records, int(n), int(seed))
    panels, rows = [], []
    for rec in chosen:
        row: dict[str, Any] = {c: None for c in GEOMETRY_COLUMNS}
        row.update(id=rec.id, path=str(rec.path), patch_size=patch, error="")
        try:
            image = load_rgb(rec.path)
        except Exception as e:  # noqa: BLE001 - a bad file is recorded in the table and skipped
            row["error"] = str(e).splitlines()[0] if str(e) else type(e).__name__
            log.warning("skipped %s: %s", rec.id, row["error"])
            rows.append(row)
            continue
        g = crop_geometry(image.width, image.height, geo)
        row.update({k: g[k] for k in g if k in row})
        if patch:
            row["patch_grid"] = f"{g['input_height'] // patch}x{g['input_width'] // patch}"
        model_input = denormalise(transform(image), geo["mean"], geo["std"])
        panels.append({"id": rec.id, "original": np.asarray(image), "input": model_input, "geometry": g})
        rows.append(row)
    if not panels:
        raise InputError(f"None of the {len(chosen)} sampled images of {str(source)!r} could be read "
                         f"(first error: {rows[0]['error'] if rows else 'none'}).")
    import pandas as pd

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    table = pd.DataFrame(rows, columns=list(GEOMETRY_COLUMNS))
    for column in _INT_COLUMNS:  # integers stay integers beside the empty cells of a skipped file
        table[column] = table[column].astype("Int64")
    tmp = out / ".model_inputs.csv.tmp"
    table.to_csv(tmp, index=False)
    os.replace(tmp, out / "model_inputs.csv")
    fig = plot_model_inputs(panels, geo, model=spec.name, patch_size=patch if patch_grid else None)
    written = save_figure(fig, out / "model_inputs")
    log.info("wrote %s (%d images, %d skipped)", written[-1], len(panels), len(rows) - len(panels))
    return next(p for p in written if p.suffix == ".png")
