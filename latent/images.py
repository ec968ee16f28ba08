"""Finding image files and opening them robustly as RGB, for embedding extraction.

Real organism photos are messy: rotated by an EXIF tag, CMYK, 16-bit greyscale, palette or
transparent, or simply broken. This module

* finds images in a folder (:func:`find_images`) or a manifest table (:func:`records_from_manifest`),
* opens one as a fully decoded 8-bit RGB image (:func:`load_rgb`), or raises :class:`ImageLoadError`
  with a short human reason ("empty file (0 bytes)", "truncated or corrupt image: ...") that the
  caller logs before skipping the file,
* wraps a list of records as a map-style dataset for ``torch.utils.data.DataLoader``
  (:class:`ImageDataset`, :func:`collate_skip_failed`) in which a bad file never stops a run: it
  becomes a failed index with its reason.

Importing this module does not import torch; :func:`collate_skip_failed` imports it when called.
"""

from __future__ import annotations

import logging
import numbers
import os
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path, PurePath
from typing import TYPE_CHECKING, Any

import numpy as np
from PIL import Image, ImageFile, ImageOps, UnidentifiedImageError

from latent.errors import InputError, LatentError, format_list

if TYPE_CHECKING:  # pragma: no cover
    import pandas as pd

__all__ = [
    "IMAGE_SUFFIXES",
    "BAD_NAME_REASON",
    "printable_name",
    "DEFAULT_MAX_PIXELS",
    "ImageRecord",
    "ImageLoadError",
    "find_images",
    "records_from_manifest",
    "load_rgb",
    "ImageDataset",
    "collate_skip_failed",
]

log = logging.getLogger(__name__)

#: File name suffixes (lower case) taken as images by :func:`find_images`; matched case-insensitively.
IMAGE_SUFFIXES: tuple[str, ...] = (".bmp", ".gif", ".jpeg", ".jpg", ".png", ".tif", ".tiff", ".webp")

#: Largest image, in pixels (width x height), that :func:`load_rgb` decodes by default:
#: 178,956,970 pixels, twice PIL's default ``Image.MAX_IMAGE_PIXELS`` (89,478,485), i.e. the size at
#: which PIL itself refuses an image as a decompression bomb. About 13,400 x 13,400 pixels, or
#: roughly 537 MB once decoded as RGB. Larger files are skipped with the reason "image too large".
DEFAULT_MAX_PIXELS: int = 178_956_970

#: The PIL formats :func:`load_rgb` will open, whatever the file is called. Anything else
#: (EPS, which would run Ghostscript, PSD, ICO, ...) is "not an image". Camera JPEGs holding a
#: second (preview or stereo) picture open through "JPEG" as PIL's MPO images.
_PIL_FORMATS: tuple[str, ...] = ("JPEG", "PNG", "WEBP", "TIFF", "BMP", "DIB", "GIF")

_WHITE = (255, 255, 255)
_warned_truncated: list[bool] = []  # non-empty once the LOAD_TRUNCATED_IMAGES warning was logged
_ALPHA_MODES = frozenset({"RGBA", "RGBa", "LA", "La", "PA"})


class ImageLoadError(LatentError):
    """An image file could not be opened; ``reason`` says why in a few words.

    Parameters
    ----------
    reason : str
        Short human reason, e.g. ``"empty file (0 bytes)"``; ``str(error)`` is the reason, prefixed
        by the path when one is given.
    path : str or os.PathLike, optional
        The file concerned.
    """

    def __init__(self, reason: str, path: "str | os.PathLike[str] | None" = None) -> None:
        self.reason = reason
        self.path = None if path is None else Path(path)
        super().__init__(reason if path is None else f"{path}: {reason}")

    def __reduce__(self) -> tuple[Any, ...]:
        # Keeps the error picklable (DataLoader workers) despite the two-argument constructor.
        return (type(self), (self.reason, self.path))


@dataclass(frozen=True)
class ImageRecord:
    """One image to embed.

    Attributes
    ----------
    id : str
        Stable identifier: the path relative to the scanned root with ``/`` separators
        (``"001.Black_footed_Albatross/0000.jpg"``), or the path string as given in a manifest.
    path : pathlib.Path
        Absolute path of the file.
    folder : str
        Name of the folder holding the file (the label key in class-per-folder datasets); ``""`` for
        a file directly in the root.
    """

    id: str
    path: Path
    folder: str


# --------------------------------------------------------------------------------------------------
# Finding images
# --------------------------------------------------------------------------------------------------


BAD_NAME_REASON = "file name is not valid UTF-8 (an HDF5 cache stores UTF-8 ids): rename the file to embed it"


def printable_name(name: str) -> "str | None":
    """``None`` when ``name`` is valid UTF-8 text, else a printable form of it (bad bytes as ``\\xNN``).

    File names that are not UTF-8 reach Python as lone surrogates (``os.fsdecode``); they cannot be
    stored as cache ids. ``printable_name("bad\\udcff.jpg")`` is ``"bad\\\\xff.jpg"``.
    """
    try:
        name.encode("utf-8")
    except UnicodeEncodeError:
        return os.fsencode(name).decode("utf-8", "backslashreplace")
    return None


def _is_image_name(name: str) -> bool:
    return os.path.splitext(name)[1].lower() in IMAGE_SUFFIXES


def find_images(root: "str | os.PathLike[str]") -> list[ImageRecord]:
    """Find image files under ``root``, recursively, in a deterministic order.

    A file is an image when its suffix, in any case, is in :data:`IMAGE_SUFFIXES`; other files are
    ignored. Files and folders whose name starts with ``.`` (``.DS_Store``, ``._x.jpg``, ``.git``)
    are skipped. Symbolic links to folders are followed, each real folder once, so a link loop
    cannot make the walk endless; broken links are skipped with a warning. Files are not opened:
    :func:`load_rgb` reports unreadable ones.

    Parameters
    ----------
    root : str or os.PathLike
        Folder to scan.

    Returns
    -------
    list of ImageRecord
        Sorted by ``id`` (the POSIX path relative to ``root``); empty when no image was found.

    Raises
    ------
    InputError
        If ``root`` does not exist or is not a folder.
    """
    base = Path(root).expanduser().absolute()
    if not base.exists():
        raise InputError(f"The image folder {str(root)!r} does not exist.")
    if not base.is_dir():
        raise InputError(f"The image folder {str(root)!r} is not a folder; give the folder holding the images.")

    records: list[ImageRecord] = []
    seen_dirs: set[str] = {os.path.realpath(base)}
    stack: list[tuple[Path, tuple[str, ...]]] = [(base, ())]
    broken = 0
    while stack:
        folder, parts = stack.pop()
        try:
            with os.scandir(folder) as it:
                entries = sorted(it, key=lambda e: e.name)
        except OSError as exc:
            log.warning("Skipping unreadable folder %s: %s", folder, exc)
            continue
        subdirs: list[tuple[Path, tuple[str, ...]]] = []
        for entry in entries:
            if entry.name.startswith("."):
                continue
            try:
                is_dir = entry.is_dir()  # follows symlinks
                is_file = not is_dir and entry.is_file()
            except OSError:
                is_dir = is_file = False
            if is_dir:
                real = os.path.realpath(entry.path)
                if real in seen_dirs:
                    log.debug("Not following %s again (already visited as %s)", entry.path, real)
                    continue
                seen_dirs.add(real)
                subdirs.append((Path(entry.path), (*parts, entry.name)))
            elif is_file:
                if _is_image_name(entry.name):
                    rel = (*parts, entry.name)
                    records.append(
                        ImageRecord(id="/".join(rel), path=base.joinpath(*rel), folder=parts[-1] if parts else "")
                    )
            elif entry.is_symlink() and _is_image_name(entry.name):
                broken += 1
                log.warning("Skipping broken symbolic link %s", entry.path)
        stack.extend(reversed(subdirs))
    records.sort(key=lambda r: r.id)
    log.info("Found %d images under %s%s", len(records), base, f" ({broken} broken links skipped)" if broken else "")
    return records


def records_from_manifest(
    table: "pd.DataFrame",
    path_column: str,
    *,
    root: "str | os.PathLike[str] | None" = None,
) -> list[ImageRecord]:
    """Image records from a manifest table with one image path per row, in the table's order.

    Parameters
    ----------
    table : pandas.DataFrame
        The manifest, one row per image.
    path_column : str
        Column holding the image paths, absolute or relative.
    root : str or os.PathLike, optional
        Folder that relative paths are resolved against. Callers reading a manifest file pass the
        manifest's own folder; ``None`` means the current working directory.

    Returns
    -------
    list of ImageRecord
        ``id`` is the path string exactly as written in the table, ``path`` the absolute path and
        ``folder`` the name of the folder holding the file as written (``""`` for a bare file
        name). Files are not checked for existence: :func:`load_rgb` reports missing ones.

    Raises
    ------
    InputError
        If ``path_column`` is missing, holds empty values, or lists a file more than once
        (including the same file written two ways, such as ``a.jpg`` and ``./a.jpg``).
    """
    if path_column not in table.columns:
        raise InputError(
            f"The path_column {path_column!r} is not a column of the manifest; "
            f"available columns: {format_list(map(str, table.columns))}."
        )
    base = Path(root if root is not None else os.getcwd()).expanduser().absolute()
    values = table[path_column].tolist()
    import pandas as pd

    empty = [i for i, v in enumerate(values) if (np.ndim(v) == 0 and pd.isna(v)) or not str(v).strip()]
    if empty:
        raise InputError(
            f"The path_column {path_column!r} of the manifest is empty in rows {format_list(empty)} "
            f"(0-based); every row needs an image path."
        )
    ids = [os.fspath(v) if isinstance(v, os.PathLike) else str(v) for v in values]
    paths = [base / Path(s).expanduser() for s in ids]
    by_file: dict[str, list[str]] = {}
    for s, p in zip(ids, paths):
        by_file.setdefault(os.path.normpath(p), []).append(s)
    dupes = [" = ".join(sorted(set(g))) if len(set(g)) > 1 else g[0] for g in by_file.values() if len(g) > 1]
    if dupes:
        raise InputError(
            f"The path_column {path_column!r} of the manifest lists {len(dupes)} image(s) more than once: "
            f"{format_list(dupes)}. Remove the repeated rows."
        )
    return [
        ImageRecord(id=s, path=Path(os.path.normpath(p)), folder=PurePath(s).parent.name)
        for s, p in zip(ids, paths)
    ]


# --------------------------------------------------------------------------------------------------
# Loading one image
# --------------------------------------------------------------------------------------------------


def _to_uint8(values: np.ndarray, scale_16bit: bool) -> np.ndarray:
    """Map greyscale values of any depth to 0..255 (see :func:`load_rgb` for the rules)."""
    a = values.astype(np.float64, copy=False)
    finite = np.isfinite(a)
    if not finite.all():
        a = np.where(finite, a, 0.0)
    lo, hi = (float(a.min()), float(a.max())) if a.size else (0.0, 0.0)
    if scale_16bit or (lo >= 0 and hi <= 65535 and values.dtype.kind in "iu"):
        a = a / 257.0  # 65535 -> 255, 32768 -> 127.5
    elif values.dtype.kind == "f" and lo >= 0 and hi <= 1:
        a = a * 255.0
    elif values.dtype.kind == "f" and lo >= 0 and hi <= 255:
        pass
    elif hi > lo:  # other ranges (negative, beyond 16 bits): stretch linearly onto 0..255
        a = (a - lo) * (255.0 / (hi - lo))
    else:
        a = np.zeros_like(a)
    return np.clip(np.rint(a), 0, 255).astype(np.uint8)


def _flatten_on_white(im: Image.Image) -> Image.Image:
    """Composite an image with transparency over a white background; return RGB."""
    if im.mode == "La":  # premultiplied, no direct PIL conversion to RGBA
        la = np.asarray(im, dtype=np.float64)
        alpha = la[..., 1]
        grey = np.where(alpha > 0, la[..., 0] * 255.0 / np.maximum(alpha, 1), 0)
        im = Image.fromarray(np.clip(np.rint(np.stack([grey, alpha], -1)), 0, 255).astype(np.uint8), "LA")
    rgba = im.convert("RGBA")
    out = Image.new("RGB", rgba.size, _WHITE)
    out.paste(rgba.convert("RGB"), mask=rgba.getchannel("A"))
    return out


def _convert_rgb(im: Image.Image) -> Image.Image:
    """Convert a loaded image of any PIL mode to 8-bit RGB (see :func:`load_rgb`)."""
    mode = im.mode
    if mode == "RGB" and "transparency" not in im.info:
        return im
    if mode.startswith("I;16") or mode in ("I", "F"):
        grey = _to_uint8(np.asarray(im), scale_16bit=mode.startswith("I;16"))
        return Image.fromarray(grey, "L").convert("RGB")
    if mode in _ALPHA_MODES or "transparency" in im.info:
        return _flatten_on_white(im)
    return im.convert("RGB")  # L, 1, P, CMYK, YCbCr, LAB, HSV, RGBX


def load_rgb(
    path: "str | os.PathLike[str]",
    *,
    max_pixels: "int | None" = DEFAULT_MAX_PIXELS,
    reduce_to: "int | None" = None,
) -> Image.Image:
    """Open an image file as a fully decoded 8-bit RGB image, or say in a few words why not.

    What is done to the image:

    * the EXIF orientation tag is applied (:func:`PIL.ImageOps.exif_transpose`), so a phone photo
      stored sideways comes out upright; a malformed EXIF block is ignored (logged at DEBUG);
    * the first frame is used for animated GIF/WebP and multi-page TIFF;
    * CMYK, YCbCr, LAB, HSV, bilevel (``1``), greyscale ``L`` and palette ``P`` are converted by PIL;
    * transparency (``RGBA``, ``LA``, ``PA``, palette or greyscale/RGB with a ``tRNS`` transparent
      colour) is composited over a **white** background, not black;
    * high-bit greyscale is scaled, not clipped (PIL's own ``convert`` clips every value above 255
      to white, so a 16-bit photo would come out all white): 16-bit modes (``I;16``, ``I;16B``, ...)
      and 32-bit integer ``I`` images with values in 0..65535 are divided by 257 (65535 -> 255,
      32768 -> 128); float ``F`` images in 0..1 are multiplied by 255 and those in 0..255 kept;
      anything else (negative values, beyond 16 bits) is stretched linearly from its minimum and
      maximum onto 0..255. NaN and infinite values become 0. Colour profiles (ICC) are not applied.

    Truncated files fail: this module never sets ``PIL.ImageFile.LOAD_TRUNCATED_IMAGES`` (a warning
    is logged if someone else has set it, since PIL would then pad broken images with grey).

    Parameters
    ----------
    path : str or os.PathLike
        The image file. Its content decides the format, not its name; only JPEG (and MPO), PNG, WebP,
        TIFF, BMP and GIF are opened.
    max_pixels : int or None, default DEFAULT_MAX_PIXELS
        Largest width x height decoded, checked from the file header before any pixel is decoded,
        so a decompression bomb costs nothing. ``None`` lifts this limit, but PIL's own global
        limit (``2 * PIL.Image.MAX_IMAGE_PIXELS``) still applies, and also applies when
        ``max_pixels`` is above it; neither is changed here.
    reduce_to : int or None, default None
        JPEG only, a speed-up for large photos: let the decoder shrink the image by 1/2, 1/4 or
        1/8 (PIL's ``draft``) as long as both sides stay at least ``reduce_to`` pixels. Give the
        model's input size or more (e.g. 224 for a 224 x 224 model), or ``None`` to decode at full size.

    Returns
    -------
    PIL.Image.Image
        Mode ``"RGB"``, loaded in memory, not tied to the file.

    Raises
    ------
    ImageLoadError
        With ``reason`` one of: ``"file not found"``, ``"not a regular file"``,
        ``"unreadable file: ..."``, ``"empty file (0 bytes)"``,
        ``"not an image: cannot identify image file"``,
        ``"image too large: W x H pixels > limit of N pixels"``,
        ``"empty image (W x H pixels)"``, ``"truncated or corrupt image: ..."``,
        ``"unsupported image mode ...: ..."``, ``"out of memory decoding W x H pixels"``.
    """
    _check_positive_int("max_pixels", max_pixels, "load_rgb")
    _check_positive_int("reduce_to", reduce_to, "load_rgb")
    if ImageFile.LOAD_TRUNCATED_IMAGES and not _warned_truncated:
        _warned_truncated.append(True)
        log.warning(
            "PIL.ImageFile.LOAD_TRUNCATED_IMAGES is True (set outside latent): truncated images "
            "will load padded with grey instead of failing."
        )
    try:
        st = os.stat(path)
    except FileNotFoundError:
        raise ImageLoadError("file not found", path) from None
    except OSError as exc:
        raise ImageLoadError(f"unreadable file: {exc.strerror or exc}", path) from exc
    if not os.path.isfile(path):
        raise ImageLoadError("not a regular file", path)
    if st.st_size == 0:
        raise ImageLoadError("empty file (0 bytes)", path)

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            im = Image.open(path, formats=_PIL_FORMATS)
        except UnidentifiedImageError:
            if _has_image_signature(path):  # a known format whose header is cut or damaged
                raise ImageLoadError("truncated or corrupt image: unreadable header", path) from None
            raise ImageLoadError("not an image: cannot identify image file", path) from None
        except Image.DecompressionBombError as exc:
            raise ImageLoadError(f"image too large: {exc}", path) from None
        except (FileNotFoundError, PermissionError, IsADirectoryError) as exc:
            raise ImageLoadError(f"unreadable file: {exc.strerror or exc}", path) from exc
        except Exception as exc:  # a broken header can raise almost anything in PIL's plugins
            raise ImageLoadError(f"truncated or corrupt image: {_describe(exc)}", path) from exc
        try:
            width, height = im.size
            if max_pixels is not None and width * height > max_pixels:
                raise ImageLoadError(
                    f"image too large: {width} x {height} pixels > limit of {max_pixels} pixels", path
                )
            if width == 0 or height == 0:
                raise ImageLoadError(f"empty image ({width} x {height} pixels)", path)
            try:
                im.seek(0)
                if reduce_to is not None and im.format in ("JPEG", "MPO"):
                    im.draft(None, (reduce_to, reduce_to))
                im.load()
            except MemoryError:
                raise ImageLoadError(f"out of memory decoding {width} x {height} pixels", path) from None
            except Exception as exc:
                raise ImageLoadError(f"truncated or corrupt image: {_describe(exc)}", path) from exc
            try:
                upright = ImageOps.exif_transpose(im)
            except Exception as exc:  # malformed EXIF: keep the pixels as stored
                log.debug("Ignoring unreadable EXIF orientation of %s: %s", path, _describe(exc))
                upright = im
            try:
                rgb = _convert_rgb(upright)
            except MemoryError:
                raise ImageLoadError(f"out of memory decoding {width} x {height} pixels", path) from None
            except Exception as exc:
                raise ImageLoadError(f"unsupported image mode {upright.mode}: {_describe(exc)}", path) from exc
            if rgb is im:  # detach from the file before closing it
                rgb = im.copy()
        finally:
            im.close()
    for w in caught:
        log.debug("PIL warning for %s: %s", path, w.message)
    return rgb


def _check_positive_int(name: str, value: object, where: str) -> None:
    """Raise :class:`InputError` unless ``value`` is ``None`` or a positive integer."""
    if value is not None and (isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < 1):
        raise InputError(f"The {name!r} parameter of {where} must be a positive int or None. Got {value!r} instead.")


_SIGNATURES: tuple[bytes, ...] = (b"\xff\xd8\xff", b"\x89PNG", b"GIF8", b"II*\x00", b"MM\x00*", b"BM")


def _has_image_signature(path: "str | os.PathLike[str]") -> bool:
    """Whether the file starts with the magic bytes of one of the formats :func:`load_rgb` opens."""
    try:
        with open(path, "rb") as fh:
            head = fh.read(12)
    except OSError:
        return False
    return head.startswith(_SIGNATURES) or (head[:4] == b"RIFF" and head[8:12] == b"WEBP")


def _describe(exc: BaseException) -> str:
    """``str(exc)``, or the exception class name when the message is empty."""
    text = str(exc).strip()
    return text if text else type(exc).__name__


# --------------------------------------------------------------------------------------------------
# Dataset for torch's DataLoader
# --------------------------------------------------------------------------------------------------


class ImageDataset:
    """Map-style dataset of images for ``torch.utils.data.DataLoader`` that never raises on a bad file.

    Not a subclass of ``torch.utils.data.Dataset`` (so that importing it does not import torch);
    ``DataLoader`` only needs ``__len__`` and ``__getitem__``. Pair it with
    ``collate_fn=collate_skip_failed``. Picklable for worker processes as long as ``transform`` is.

    Parameters
    ----------
    records : sequence of ImageRecord
        The images, in the order of the dataset's indices.
    transform : callable
        Maps an RGB ``PIL.Image.Image`` to a tensor ``(C, H, W)`` of the same shape for every image
        (e.g. the preprocessing returned by ``open_clip.create_model_and_transforms``).
    max_pixels : int or None, default DEFAULT_MAX_PIXELS
        Passed to :func:`load_rgb`.
    reduce_to : int or None, default None
        Passed to :func:`load_rgb`: faster JPEG decoding at no less than this many pixels a side.
    """

    def __init__(
        self,
        records: Sequence[ImageRecord],
        transform: Callable[[Image.Image], Any],
        *,
        max_pixels: "int | None" = DEFAULT_MAX_PIXELS,
        reduce_to: "int | None" = None,
    ) -> None:
        if not callable(transform):
            raise InputError(
                f"The 'transform' parameter of ImageDataset must be callable (PIL image -> tensor). "
                f"Got {type(transform).__name__} instead."
            )
        self.records = list(records)
        self.transform = transform
        _check_positive_int("max_pixels", max_pixels, "ImageDataset")
        _check_positive_int("reduce_to", reduce_to, "ImageDataset")
        self.max_pixels = max_pixels
        self.reduce_to = reduce_to

    def __len__(self) -> int:
        return len(self.records)

    def __getitem__(self, index: int) -> dict[str, Any]:
        """Load and transform one image.

        Returns
        -------
        dict
            ``{"index": index, "image": tensor or None, "error": ""}``; when the file cannot be
            loaded or the transform fails, ``image`` is ``None`` and ``error`` the reason
            (:attr:`ImageLoadError.reason`, or ``"<ExceptionClass>: <message>"`` for any other
            exception).
        """
        record = self.records[index]
        try:
            image = self.transform(load_rgb(record.path, max_pixels=self.max_pixels, reduce_to=self.reduce_to))
        except ImageLoadError as exc:
            log.debug("Skipping %s: %s", record.id, exc.reason)
            return {"index": index, "image": None, "error": exc.reason}
        except Exception as exc:
            reason = f"{type(exc).__name__}: {exc}"
            log.debug("Skipping %s: %s", record.id, reason)
            return {"index": index, "image": None, "error": reason}
        return {"index": index, "image": image, "error": ""}


def collate_skip_failed(batch: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """Collate :class:`ImageDataset` items, stacking the images that loaded and listing the others.

    Parameters
    ----------
    batch : sequence of dict
        Items from :meth:`ImageDataset.__getitem__`.

    Returns
    -------
    dict
        ``images``: tensor ``(k, C, H, W)`` of the ``k`` good images, or an empty tensor of shape
        ``(0,)`` when every image of the batch failed (check ``len(indices)``, not the shape);
        ``indices``: ``torch.long`` tensor ``(k,)`` of their dataset indices;
        ``failed_indices``: list of int; ``failed_reasons``: list of str, aligned with it.

    Raises
    ------
    ValueError
        If the good images do not share one shape (the transform must resize them alike).
    """
    import torch

    good = [item for item in batch if item["image"] is not None]
    bad = [item for item in batch if item["image"] is None]
    if good:
        shapes = {tuple(item["image"].shape) for item in good}
        if len(shapes) > 1:
            raise ValueError(
                f"collate_skip_failed: the transform returned images of different shapes "
                f"{format_list(sorted(shapes))}; it must resize and crop every image to one size."
            )
        images = torch.stack([item["image"] for item in good])
    else:
        images = torch.empty((0,))
    return {
        "images": images,
        "indices": torch.tensor([int(item["index"]) for item in good], dtype=torch.long),
        "failed_indices": [int(item["index"]) for item in bad],
        "failed_reasons": [str(item["error"]) for item in bad],
    }
