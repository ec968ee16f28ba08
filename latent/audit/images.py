"""What the image files say besides taxonomy: size, shape, what preprocessing cuts away, quality, exact copies.

Part of ``latent audit`` (issue 15). Before trusting a probe, know what the model is given:

* :func:`image_properties` reads every file once and returns one row per image: format, size, aspect,
  colour mode, greyscale, tiny, blur (variance of a Laplacian), exposure, the share of the image the
  model's preprocessing removes (``crop_loss``) or how much it distorts it (``distortion``), and the
  SHA-256 of the file's bytes. Headers come from PIL (``Image.open`` is lazy); pixels from a reduced
  decode (``Image.thumbnail``, which uses JPEG ``draft`` scaling) at most :data:`THUMBNAIL_SIDE` pixels
  on the longest side. A file that cannot be read gets ``readable=False`` and the reason in ``error``;
  it never raises.
* :func:`exact_duplicates` groups files with identical bytes (same SHA-256).
* :func:`image_flags_summary` counts the flags in the long format of ``audit.csv``
  (``rank, metric, value, ci_low, ci_high, n``).
* :func:`draw_contact_sheet` / :func:`contact_sheet` show the worst flagged images in a grid.

Thresholds (module constants, all on the decoded thumbnail, 8-bit levels 0..255):

* ``tiny``: shortest side below :data:`TINY_SIDE` pixels (in the file, after EXIF rotation).
* ``greyscale``: mode ``1``/``L``/``LA``/``I``/``F``, or colour with at most :data:`GREY_OUTLIER_SHARE`
  of the pixels whose channel spread ``max(R,G,B) - min(R,G,B)`` exceeds :data:`GREY_TOLERANCE`
  (JPEG chroma noise in a grey photo stays within a few levels).
* ``blur``: variance of the 4-neighbour Laplacian of the grey thumbnail (larger is sharper); ``blurred``
  when below :data:`BLUR_THRESHOLD`. Images smaller than the thumbnail are not enlarged, so ``blur`` of a
  tiny image is on its own pixel scale. See :data:`BLUR_THRESHOLD` for how the threshold was chosen.
* exposure: ``brightness`` is the mean grey level / 255; ``dark_share`` / ``bright_share`` the share of
  pixels at most :data:`CLIP_DARK` / at least :data:`CLIP_BRIGHT` (clipped, within JPEG ringing of 0 and
  255). ``overexposed`` when ``bright_share >= CLIPPED_SHARE`` or ``brightness >= BRIGHT_MEAN``;
  ``underexposed`` when ``dark_share >= CLIPPED_SHARE`` or ``brightness <= DARK_MEAN``. Measured on the
  whole frame: a blown-out white sky or a black background sets a flag although the subject itself may be
  well exposed (on the 306 cub10 photos: one of each, both of this kind).

What the preprocessing removes (``resize_mode``):

* ``"crop"`` (CLIP / BioCLIP: resize the shortest side to ``input_size``, then a centre square crop):
  ``crop_loss = 1 - min(w, h) / max(w, h)`` of the image area is cut away; ``distortion = 1``.
* ``"squash"`` (resize both sides to ``input_size``): nothing is cut (``crop_loss = 0``) but the image is
  stretched by ``distortion = max(w / h, h / w)``.

``upscale = input_size / min(w, h)`` is how much the model's input enlarges the image along its shortest
side (in both modes; for a squash it is the larger of the two axis factors); above 1 the model sees
interpolated pixels.
"""

from __future__ import annotations

import hashlib
import io
import logging
import os
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from PIL import Image, ImageOps

from latent.errors import InputError
from latent.images import DEFAULT_MAX_PIXELS
from latent.probes.common import progress

__all__ = [
    "TINY_SIDE",
    "THUMBNAIL_SIDE",
    "GREY_TOLERANCE",
    "GREY_OUTLIER_SHARE",
    "BLUR_THRESHOLD",
    "CLIP_DARK",
    "CLIP_BRIGHT",
    "CLIPPED_SHARE",
    "BRIGHT_MEAN",
    "DARK_MEAN",
    "RESIZE_MODES",
    "PROPERTY_COLUMNS",
    "FLAG_ORDER",
    "image_properties",
    "exact_duplicates",
    "image_flags_summary",
    "badness_order",
    "draw_contact_sheet",
    "contact_sheet",
]

log = logging.getLogger(__name__)

#: An image whose shortest side (pixels) is below this is ``tiny``.
TINY_SIDE: int = 64

#: Longest side (pixels) of the thumbnail that greyscale, blur and exposure are measured on.
THUMBNAIL_SIDE: int = 256

#: Largest channel spread ``max(R,G,B) - min(R,G,B)`` (8-bit levels) of a pixel still counted as grey.
GREY_TOLERANCE: int = 8

#: Largest share of coloured pixels (spread above :data:`GREY_TOLERANCE`) in an image still called greyscale.
GREY_OUTLIER_SHARE: float = 0.01

#: ``blurred`` when the variance of the Laplacian of the grey thumbnail is below this.
#:
#: Chosen on test images: on the 306 real CUB-200 photos of ``../shared/data/cub10`` (sharp subjects,
#: often soft backgrounds) the thumbnail blur ranges from 66 to 11,500 (1st percentile 108, median 908).
#: Every third of those photos blurred with a Gaussian of radius r pixels at full size (about r / 2
#: thumbnail pixels) scores: r = 1, median 278 (1 of 102 below 50: barely visible); r = 2, median 47
#: (52 of 102 below 50); r = 3, median 14 (97 of 102 below 50). 50 flags no original photo and nearly
#: every copy blurred by r >= 3. A heuristic: a smooth, featureless subject (fog, a plain sky) also scores low.
BLUR_THRESHOLD: float = 50.0

#: Grey levels at or below this count as clipped black.
CLIP_DARK: int = 2

#: Grey levels at or above this count as clipped white.
CLIP_BRIGHT: int = 253

#: Share of clipped pixels (black or white) from which an image is under- or over-exposed.
CLIPPED_SHARE: float = 0.25

#: Mean grey level (0..1) from which an image is over-exposed even without clipping.
BRIGHT_MEAN: float = 0.9

#: Mean grey level (0..1) up to which an image is under-exposed even without clipping.
DARK_MEAN: float = 0.1

#: Accepted ``resize_mode`` values of :func:`image_properties`.
RESIZE_MODES: tuple[str, ...] = ("crop", "squash")

#: Columns of :func:`image_properties`, in order.
PROPERTY_COLUMNS: tuple[str, ...] = (
    "path", "readable", "error", "format", "width", "height", "aspect", "mode", "greyscale", "tiny",
    "blur", "blurred", "brightness", "dark_share", "bright_share", "overexposed", "underexposed",
    "crop_loss", "distortion", "upscale", "bytes", "sha256",
)

#: Flags in the order of badness used by :func:`badness_order` (first = worst).
FLAG_ORDER: tuple[str, ...] = ("blurred", "tiny", "greyscale", "overexposed", "underexposed")

_GREY_MODES = frozenset({"1", "L", "LA", "La", "I", "I;16", "I;16B", "I;16L", "I;16N", "F"})
_FLOAT_COLUMNS = ("width", "height", "aspect", "blur", "brightness", "dark_share", "bright_share",
                  "crop_loss", "distortion", "upscale", "bytes")
_BOOL_COLUMNS = ("readable", "greyscale", "tiny", "blurred", "overexposed", "underexposed")


# ------------------------------------------------------------------------------------------ checks
def _check_paths(paths: Any) -> list[str]:
    if isinstance(paths, (str, bytes, os.PathLike)):
        raise InputError(f"The 'paths' parameter of image_properties must be a sequence of image paths. Got the "
                         f"single path {str(paths)!r}; for a folder pass [r.path for r in "
                         f"latent.images.find_images(folder)].")
    try:
        items = list(paths)
    except TypeError:
        raise InputError(f"The 'paths' parameter of image_properties must be a sequence of image paths. "
                         f"Got {type(paths).__name__}.") from None
    bad = [p for p in items if not isinstance(p, (str, os.PathLike))]
    if bad:
        raise InputError(f"The 'paths' parameter of image_properties must hold paths (str or os.PathLike). "
                         f"Got {type(bad[0]).__name__} {bad[0]!r}.")
    return [os.fspath(p) for p in items]


def _check_props(props: Any, function: str, columns: Sequence[str]) -> pd.DataFrame:
    if not isinstance(props, pd.DataFrame):
        raise InputError(f"The 'props' parameter of {function} must be the DataFrame of image_properties. "
                         f"Got {type(props).__name__}.")
    missing = [c for c in columns if c not in props.columns]
    if missing:
        raise InputError(f"The 'props' parameter of {function} lacks the column(s) {', '.join(missing)}; "
                         f"pass the DataFrame returned by image_properties.")
    return props


# ---------------------------------------------------------------------------------------- one image
def _orientation_swaps(img: Image.Image) -> bool:
    """Whether the EXIF orientation tag turns the image by 90 degrees (tags 5-8)."""
    try:
        return int(img.getexif().get(0x0112, 1)) in (5, 6, 7, 8)
    except Exception:  # noqa: BLE001 - a broken EXIF block only loses the rotation
        return False


def _pixels(thumb: Image.Image, mode: str) -> tuple[np.ndarray, bool]:
    """Grey levels (float64, ``(h, w)``, 0..255) of a thumbnail and whether it is greyscale."""
    if mode in _GREY_MODES or thumb.mode in _GREY_MODES:
        if thumb.mode in ("1", "L", "LA", "La"):
            grey = np.asarray(thumb.convert("L"), dtype=np.float64)
        else:  # 16/32-bit integer or float grey: rescale a 16-bit range to 8 bits
            grey = np.asarray(thumb, dtype=np.float64)
            if grey.size and np.nanmax(grey) > 255.0:
                grey = grey / 257.0
            grey = np.clip(grey, 0.0, 255.0)
        return grey, True
    rgb = thumb.convert("RGB")
    arr = np.asarray(rgb, dtype=np.int16)
    spread = arr.max(axis=2) - arr.min(axis=2)
    greyscale = bool(spread.size and np.mean(spread > GREY_TOLERANCE) <= GREY_OUTLIER_SHARE)
    return np.asarray(rgb.convert("L"), dtype=np.float64), greyscale


def _laplacian_variance(grey: np.ndarray) -> float:
    """Variance of the 4-neighbour Laplacian of ``grey`` (``(h, w)``); NaN below 3 x 3 pixels."""
    if grey.shape[0] < 3 or grey.shape[1] < 3:
        return float("nan")
    lap = (grey[:-2, 1:-1] + grey[2:, 1:-1] + grey[1:-1, :-2] + grey[1:-1, 2:] - 4.0 * grey[1:-1, 1:-1])
    return float(lap.var())


def _empty_row(path: str) -> dict[str, Any]:
    row: dict[str, Any] = {c: np.nan for c in PROPERTY_COLUMNS}
    row.update(path=path, readable=False, error="", format="", mode="", sha256="",
               greyscale=False, tiny=False, blurred=False, overexposed=False, underexposed=False)
    return row


def _one_image(path: str, input_size: int, resize_mode: str) -> dict[str, Any]:
    row = _empty_row(path)
    try:
        data = Path(path).read_bytes()
    except FileNotFoundError:
        row["error"] = "file not found"
        return row
    except OSError as exc:
        row["error"] = f"cannot read file: {exc.strerror or exc}"
        return row
    row["bytes"] = float(len(data))
    row["sha256"] = hashlib.sha256(data).hexdigest()
    if not data:
        row["error"] = "empty file (0 bytes)"
        return row
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            img = Image.open(io.BytesIO(data))
            row["format"] = str(img.format or "")
            row["mode"] = str(img.mode)
            w, h = img.size
            if _orientation_swaps(img):
                w, h = h, w
            if w * h > DEFAULT_MAX_PIXELS:
                row["error"] = f"image too large ({w} x {h} pixels)"
                return row
            mode = img.mode
            img.thumbnail((THUMBNAIL_SIDE, THUMBNAIL_SIDE))
            img.load()
            grey, greyscale = _pixels(img, mode)
    except Image.DecompressionBombError as exc:
        row["error"] = f"image too large: {exc}"
        return row
    except Exception as exc:  # noqa: BLE001 - any decoder failure makes the file unreadable, never a crash
        reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        row["error"] = f"truncated or corrupt image: {reason}"
        return row
    if w < 1 or h < 1 or grey.size == 0:
        row["error"] = f"image has no pixels ({w} x {h})"
        return row
    blur = _laplacian_variance(grey)
    brightness = float(grey.mean() / 255.0)
    dark = float(np.mean(grey <= CLIP_DARK))
    bright = float(np.mean(grey >= CLIP_BRIGHT))
    short, long_ = min(w, h), max(w, h)
    if resize_mode == "crop":
        crop_loss, distortion = 1.0 - short / long_, 1.0
    else:
        crop_loss, distortion = 0.0, long_ / short
    row.update(
        readable=True, width=float(w), height=float(h), aspect=w / h, greyscale=greyscale,
        tiny=short < TINY_SIDE, blur=blur, blurred=bool(np.isfinite(blur) and blur < BLUR_THRESHOLD),
        brightness=brightness, dark_share=dark, bright_share=bright,
        overexposed=bright >= CLIPPED_SHARE or brightness >= BRIGHT_MEAN,
        underexposed=dark >= CLIPPED_SHARE or brightness <= DARK_MEAN,
        crop_loss=crop_loss, distortion=distortion, upscale=input_size / short,
    )
    return row


# ------------------------------------------------------------------------------------------ public
def image_properties(paths: Sequence["str | os.PathLike[str]"], *, input_size: int = 224,
                     resize_mode: str = "crop") -> pd.DataFrame:
    """Properties of each image file, read once: size, shape, preprocessing loss, quality flags, content hash.

    Parameters
    ----------
    paths : sequence of str or os.PathLike, length n
        Image files (for a folder: ``[r.path for r in latent.images.find_images(folder)]``).
    input_size : int, default 224
        Side of the model's square input, in pixels (224 for BioCLIP 2 / CLIP ViT-B and ViT-L/14).
    resize_mode : {"crop", "squash"}, default "crop"
        The model's preprocessing: resize the shortest side then centre-crop a square (``"crop"``), or
        resize both sides to the square (``"squash"``).

    Returns
    -------
    pandas.DataFrame
        n rows, in the order of ``paths``, with the columns of :data:`PROPERTY_COLUMNS`:

        * ``path`` (str, as given), ``readable`` (bool), ``error`` (str, ``""`` when readable),
        * ``format`` (``"JPEG"``, ``"PNG"``, ...), ``width``, ``height`` (pixels, after EXIF rotation),
          ``aspect`` (width / height), ``mode`` (PIL mode of the file: ``"RGB"``, ``"L"``, ...),
        * ``greyscale``, ``tiny``, ``blurred``, ``overexposed``, ``underexposed`` (bool),
        * ``blur`` (variance of the Laplacian of the grey thumbnail; larger = sharper),
          ``brightness`` (mean grey level, 0..1), ``dark_share`` / ``bright_share`` (share of clipped pixels),
        * ``crop_loss`` (share of the area the preprocessing removes, 0..1), ``distortion`` (>= 1),
          ``upscale`` (``input_size`` / shortest side),
        * ``bytes`` (file size), ``sha256`` (hex digest of the file's bytes; ``""`` when it could not be read).

        Numbers are NaN and flags False where ``readable`` is False. The file's bytes are hashed even when
        the image is unreadable, so identical broken files still show as duplicates.

    Raises
    ------
    InputError
        If ``paths`` is a single path or holds something other than paths, or ``input_size`` /
        ``resize_mode`` is invalid.

    Notes
    -----
    Never raises for a bad file: a missing, empty, truncated or unidentifiable file, or one larger than
    :data:`latent.images.DEFAULT_MAX_PIXELS`, gets ``readable=False`` and its reason in ``error``.
    The thresholds are the module constants (see the module docstring).
    """
    items = _check_paths(paths)
    if isinstance(input_size, bool) or not isinstance(input_size, (int, np.integer)) or input_size < 1:
        raise InputError(f"The 'input_size' parameter of image_properties must be a positive integer (pixels). "
                         f"Got {input_size!r}.")
    if resize_mode not in RESIZE_MODES:
        raise InputError(f"The 'resize_mode' parameter of image_properties must be one of "
                         f"{', '.join(map(repr, RESIZE_MODES))}. Got {resize_mode!r}.")
    rows = [_one_image(p, int(input_size), resize_mode)
            for p in progress(items, total=len(items), desc="reading images")]
    frame = pd.DataFrame(rows, columns=list(PROPERTY_COLUMNS))
    for column in _BOOL_COLUMNS:
        frame[column] = frame[column].astype(bool)
    for column in _FLOAT_COLUMNS:
        frame[column] = frame[column].astype(np.float64)
    for column in ("path", "error", "format", "mode", "sha256"):
        frame[column] = frame[column].astype(object)
    unreadable = int((~frame["readable"]).sum())
    log.info("read %d image file(s): %d unreadable, %d greyscale, %d tiny, %d blurred", len(frame), unreadable,
             int(frame["greyscale"].sum()), int(frame["tiny"].sum()), int(frame["blurred"].sum()))
    return frame


def exact_duplicates(props: pd.DataFrame, *, as_pairs: bool = False) -> pd.DataFrame:
    """Files with identical bytes (the same SHA-256), as groups or as pairs.

    Parameters
    ----------
    props : pandas.DataFrame
        The table of :func:`image_properties` (needs ``path`` and ``sha256``). Files whose bytes could
        not be read (``sha256 == ""``) are left out; unreadable images with readable bytes are kept.
    as_pairs : bool, default False
        False: one row per file in a group of two or more. True: one row per pair linking each later
        member of a group to its first member (k - 1 pairs for a group of k, never k^2).

    Returns
    -------
    pandas.DataFrame
        Groups (``as_pairs=False``): columns ``group`` (0, 1, ... in order of first appearance),
        ``sha256``, ``path``, ``group_size``, ordered by group then by the order in ``props``.
        Pairs (``as_pairs=True``): columns ``path_a`` (the group's first file), ``path_b``, ``sha256``,
        ``kind`` (``"exact"``). Empty (with these columns) when no two files are identical.
    """
    props = _check_props(props, "exact_duplicates", ("path", "sha256"))
    hashes = props["sha256"].fillna("").astype(str)
    keep = hashes != ""
    sub = pd.DataFrame({"sha256": hashes[keep].to_numpy(), "path": props.loc[keep, "path"].astype(str).to_numpy()})
    sizes = sub.groupby("sha256", sort=False)["path"].transform("size")
    sub = sub[sizes >= 2].assign(group_size=sizes[sizes >= 2].astype(int))
    first_seen = {h: i for i, h in enumerate(pd.unique(sub["sha256"]))}
    sub = sub.assign(group=sub["sha256"].map(first_seen).astype(int))
    sub = sub.sort_values("group", kind="stable").reset_index(drop=True)
    if not as_pairs:
        return sub[["group", "sha256", "path", "group_size"]]
    firsts = sub.groupby("group", sort=True)["path"].transform("first")
    later = sub["path"] != firsts
    later &= sub.groupby("group").cumcount() > 0
    return pd.DataFrame({"path_a": firsts[later].to_numpy(), "path_b": sub.loc[later, "path"].to_numpy(),
                         "sha256": sub.loc[later, "sha256"].to_numpy(), "kind": "exact"},
                        columns=["path_a", "path_b", "sha256", "kind"])


def image_flags_summary(props: pd.DataFrame) -> pd.DataFrame:
    """The image properties as rows of ``audit.csv``: counts of each flag and summaries of size and shape.

    Parameters
    ----------
    props : pandas.DataFrame
        The table of :func:`image_properties`.

    Returns
    -------
    pandas.DataFrame
        Long format, columns ``rank`` (always ``"all"``), ``metric``, ``value``, ``ci_low``, ``ci_high``
        (NaN: counts and descriptive summaries carry no interval), ``n`` (the denominator), ``unit``:

        * ``images`` (files; n = files), ``unreadable`` (n = files),
        * ``greyscale``, ``tiny``, ``blurred``, ``overexposed``, ``underexposed`` (counts; n = readable),
        * ``exact_duplicate_groups`` (groups of identical files) and ``exact_duplicate_files`` (files that
          are a copy of an earlier one, i.e. could be removed; n = files),
        * ``crop_loss_mean``, ``crop_loss_max``, ``distortion_max``, ``upscale_max``, ``aspect_median``,
          ``aspect_min``, ``aspect_max``, ``width_median``, ``height_median``, ``min_side_min``,
          ``blur_median``, ``brightness_median`` (n = readable),
        * ``format:<FORMAT>`` (files per format, e.g. ``format:JPEG``; n = readable).
    """
    needed = ("path", "readable", "format", "width", "height", "aspect", "greyscale", "tiny", "blur", "blurred",
              "brightness", "overexposed", "underexposed", "crop_loss", "distortion", "upscale", "sha256")
    props = _check_props(props, "image_flags_summary", needed)
    total = len(props)
    ok = props[props["readable"].astype(bool)]
    n_ok = len(ok)
    rows: list[tuple[str, float, int, str]] = [("images", float(total), total, "count"),
                                               ("unreadable", float(total - n_ok), total, "count")]
    for flag in ("greyscale", "tiny", "blurred", "overexposed", "underexposed"):
        rows.append((flag, float(ok[flag].astype(bool).sum()), n_ok, "count"))
    groups = exact_duplicates(props)
    n_groups = int(groups["group"].nunique()) if len(groups) else 0
    rows.append(("exact_duplicate_groups", float(n_groups), total, "count"))
    rows.append(("exact_duplicate_files", float(len(groups) - n_groups), total, "count"))

    def stat(values: pd.Series, how: str) -> float:
        values = values.astype(float).dropna()
        return float(getattr(values, how)()) if len(values) else float("nan")

    min_side = np.minimum(ok["width"].astype(float), ok["height"].astype(float))
    rows += [
        ("crop_loss_mean", stat(ok["crop_loss"], "mean"), n_ok, "share of area"),
        ("crop_loss_max", stat(ok["crop_loss"], "max"), n_ok, "share of area"),
        ("distortion_max", stat(ok["distortion"], "max"), n_ok, "ratio"),
        ("upscale_max", stat(ok["upscale"], "max"), n_ok, "ratio"),
        ("aspect_median", stat(ok["aspect"], "median"), n_ok, "width/height"),
        ("aspect_min", stat(ok["aspect"], "min"), n_ok, "width/height"),
        ("aspect_max", stat(ok["aspect"], "max"), n_ok, "width/height"),
        ("width_median", stat(ok["width"], "median"), n_ok, "pixels"),
        ("height_median", stat(ok["height"], "median"), n_ok, "pixels"),
        ("min_side_min", stat(pd.Series(min_side), "min"), n_ok, "pixels"),
        ("blur_median", stat(ok["blur"], "median"), n_ok, "Laplacian variance"),
        ("brightness_median", stat(ok["brightness"], "median"), n_ok, "share of 255"),
    ]
    for fmt, count in ok["format"].astype(str).value_counts().sort_index().items():
        rows.append((f"format:{fmt or 'unknown'}", float(count), n_ok, "count"))
    frame = pd.DataFrame(rows, columns=["metric", "value", "n", "unit"])
    frame.insert(0, "rank", "all")
    frame.insert(3, "ci_low", np.nan)
    frame.insert(4, "ci_high", np.nan)
    frame["n"] = frame["n"].astype(int)
    return frame[["rank", "metric", "value", "ci_low", "ci_high", "n", "unit"]]


def badness_order(props: pd.DataFrame) -> pd.DataFrame:
    """The readable images with at least one flag, worst first, with a ``flags`` caption column.

    Badness: the first flag of :data:`FLAG_ORDER` an image has decides its class (blurred before tiny
    before greyscale before over- / under-exposed); within a class more flags come first, then the more
    severe value: lower ``blur`` for blurred, smaller shortest side for tiny, larger distance of
    ``brightness`` from 0.5 for the rest; ties keep the order of ``props``.

    Parameters
    ----------
    props : pandas.DataFrame
        The table of :func:`image_properties`.

    Returns
    -------
    pandas.DataFrame
        The flagged readable rows of ``props`` (unreadable files skipped), reordered, with ``flags``
        (str, e.g. ``"blurred, tiny"``) added.
    """
    props = _check_props(props, "badness_order", ("path", "readable", "width", "height", "blur", "brightness")
                         + FLAG_ORDER)
    ok = props[props["readable"].astype(bool)].copy()
    flags = ok[list(FLAG_ORDER)].astype(bool)
    ok = ok[flags.any(axis=1)]
    flags = flags.loc[ok.index]
    if ok.empty:
        return ok.assign(flags=pd.Series(dtype=object))
    first = flags.to_numpy().argmax(axis=1)
    count = flags.sum(axis=1).to_numpy()
    min_side = np.minimum(ok["width"].to_numpy(float), ok["height"].to_numpy(float))
    severity = np.where(first == 0, ok["blur"].to_numpy(float),
                        np.where(first == 1, min_side, -np.abs(ok["brightness"].to_numpy(float) - 0.5)))
    order = np.lexsort((np.arange(len(ok)), np.nan_to_num(severity, nan=np.inf), -count, first))
    ok = ok.iloc[order].copy()
    ok["flags"] = [", ".join(f for f in FLAG_ORDER if row[f]) for _, row in flags.loc[ok.index].iterrows()]
    return ok


def _caption_path(path: str, width: int = 30) -> str:
    """The last two parts of ``path`` (``folder/file``), cut from the left to ``width`` characters."""
    parts = Path(path).parts
    tail = "/".join(parts[-2:]) if len(parts) >= 2 else str(path)
    return tail if len(tail) <= width else "\u2026" + tail[-(width - 1):]


def _display_thumbnail(path: str) -> "np.ndarray | None":
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            with Image.open(path) as img:
                img.thumbnail((THUMBNAIL_SIDE * 2, THUMBNAIL_SIDE * 2))
                img = ImageOps.exif_transpose(img)
                img.thumbnail((THUMBNAIL_SIDE, THUMBNAIL_SIDE))
                if img.mode in _GREY_MODES:
                    return np.asarray(img.convert("L"))
                return np.asarray(img.convert("RGB"))
    except Exception as exc:  # noqa: BLE001 - a file changed since it was read is shown as missing
        log.warning("contact sheet: cannot show %s (%s)", path, exc)
        return None


def draw_contact_sheet(props: pd.DataFrame, n: int = 16, *, max_cols: int = 4) -> Any:
    """A grid of the ``n`` worst flagged images (see :func:`badness_order`), each captioned with its path and flags.

    Parameters
    ----------
    props : pandas.DataFrame
        The table of :func:`image_properties`.
    n : int, default 16
        Most images shown.
    max_cols : int, default 4
        Columns of the grid.

    Returns
    -------
    matplotlib.figure.Figure
        One panel (an ``AxesImage``, axis off, title ``"<folder>/<file>\\n<flags>\\n<w>x<h> px, blur <b>"``)
        per image shown;
        a single panel with a note when no readable image is flagged.
    """
    from latent.plotting.style import check_int, figure_title, grid_shape, hide_unused, latent_style, new_figure

    n = check_int("n", n, minimum=1, function="contact_sheet")
    max_cols = check_int("max_cols", max_cols, minimum=1, function="contact_sheet")
    worst = badness_order(props)
    n_ok = int(props["readable"].astype(bool).sum())
    with latent_style():
        shown = worst.head(n)
        if shown.empty:
            fig, axes = new_figure(1, 1, panel=(4.0, 1.5))
            ax = axes[0, 0]
            ax.set_axis_off()
            ax.text(0.5, 0.5, f"No flagged image among {n_ok} readable image(s).", ha="center", va="center",
                    transform=ax.transAxes)
            return fig
        nrows, ncols = grid_shape(len(shown), max_cols=max_cols)
        fig, axes = new_figure(nrows, ncols, panel=(2.2, 2.5))
        for ax, (_, row) in zip(axes.ravel(), shown.iterrows()):
            ax.set_axis_off()
            pixels = _display_thumbnail(str(row["path"]))
            if pixels is None:
                ax.text(0.5, 0.5, "file changed or gone", ha="center", va="center", transform=ax.transAxes)
            elif pixels.ndim == 2:
                ax.imshow(pixels, cmap="gray", vmin=0, vmax=255, interpolation="nearest")
            else:
                ax.imshow(pixels, interpolation="nearest")
            detail = f"{row['width']:.0f}x{row['height']:.0f} px, blur {row['blur']:.0f}"
            ax.set_title(f"{_caption_path(str(row['path']))}\n{row['flags']}\n{detail}", fontsize=7)
        hide_unused(axes, len(shown))
        figure_title(fig, f"Worst images: {len(shown)} of {len(worst)} flagged, {n_ok} readable "
                          f"(blurred, then tiny, greyscale, exposure)")
    return fig


def contact_sheet(props: pd.DataFrame, out_png: "str | os.PathLike[str]", n: int = 16) -> Path:
    """Draw :func:`draw_contact_sheet` and write it as a PNG.

    Parameters
    ----------
    props : pandas.DataFrame
        The table of :func:`image_properties`.
    out_png : str or os.PathLike
        The PNG to write (``.png`` added when absent); parent folders are created.
    n : int, default 16
        Most images shown.

    Returns
    -------
    pathlib.Path
        The PNG written.
    """
    from latent.plotting.style import save_figure

    fig = draw_contact_sheet(props, n)
    return save_figure(fig, out_png, formats=("png",))[0]
