"""HDF5 embedding cache: one file of embeddings, ids and taxonomy, written so that a crash loses nothing.

File format (``format_version`` 1), a contract that other tools read::

    /embeddings        float16 or float32, (N, D), chunked by rows, maxshape (None, D), uncompressed
    /ids               UTF-8 strings, (N,), unique
    /taxonomy/<rank>   UTF-8 strings, (N,), one per rank kingdom..species; species is the binomial; "" = unknown
    /failed/ids, /failed/reasons   UTF-8 strings, (F,): inputs that could not be embedded, and why
    /text/<name>/labels, /text/<name>/embeddings   optional text embeddings, (T,) and (T, D); <name> may be
                       nested, e.g. /text/species/taxon (text embeddings of every species, "taxon" text form)
    /metadata/<column> optional row metadata, (N,) each, one dataset per column of the table the rows came
                       from (e.g. img_type, source_dataset): strings as UTF-8, numbers and bools with their
                       dtype, datetimes as int64 nanoseconds. Attributes: ``column`` (the column's name; the
                       dataset name escapes "/" as "%2F" and "%" as "%25") and ``dtype`` (the pandas dtype
                       to restore, e.g. "str", "int64", "Int64", "boolean", "float32", "category",
                       "datetime64[ns]"); the group's attribute ``order`` lists the dataset names in column
                       order (JSON). Missing values: NaN in float columns; elsewhere "" / 0 / False with
                       /metadata_missing/<column> (bool, (N,), True = missing) beside it.
    /layers/<k>/class, /layers/<k>/patch_mean   optional, (N, W) each, same dtype as /embeddings: the class
                       token and the mean patch token after transformer block k (1-based), through the
                       tower's final LayerNorm (``latent embed --layers``); written with every row, in the same
                       commit. Which blocks, the width and the token rule are in ``extra["layers"]``, part of
                       the provenance identity (a cache with layers never takes rows without them).
    root attributes    format_version, latent_version, model, pretrained, preprocess (JSON), embed_dim,
                       normalized, created (ISO 8601 UTC), source, extra (JSON), complete,
                       rows_committed, failed_committed

A :class:`CacheWriter` writes to ``<path>.partial`` and renames it onto ``<path>`` only once the file is
complete, so ``<path>`` only ever holds a complete cache. Each block of rows is written and flushed before
``rows_committed`` is raised and flushed, and HDF5 metadata evictions are off, so the file on disk changes
only at those flushes. Opening the writer again resumes an interrupted write: its committed rows are copied
into a clean file (a killed HDF5 writer can leave bytes that break later writes in place), and a partial
file that HDF5 cannot read is moved aside to ``<path>.partial.damaged-<time>``, never deleted.

Resume never replaces: a partial that would replace a complete ``<path>`` (one left by an interrupted
``force`` run, marked by its ``replaces_existing`` attribute, or any partial in create mode) is resumed
only with ``force``; without it the writer refuses in one line and ``<path>`` is not touched.

A full disk never breaks a file: HDF5 can neither flush nor close a file after a failed write (and
crashes at exit), so each block's disk space is reserved (``posix_fallocate``) before HDF5 writes it
and given back after; no room is a :class:`~latent.errors.CacheError` naming the path, and the rows
committed before stay in the partial file and resume.
"""

from __future__ import annotations

import contextlib
import errno
import json
import logging
import os
import shutil
from collections import Counter
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Literal

import h5py
import numpy as np

from latent._version import __version__
from latent.errors import CacheError, InputError, ProvenanceError, ResourceError, format_list
from latent.ranks import RANK_NAMES, Rank, parse_rank
from latent.taxonomy import Taxonomy

__all__ = ["FORMAT_VERSION", "LAYER_TOKENS", "Provenance", "CacheWriter", "EmbeddingCache", "open_cache", "check_out_path"]

log = logging.getLogger(__name__)

FORMAT_VERSION = 1
CHUNK_ROWS = 512
_STR = h5py.string_dtype("utf-8")
_CHUNK_CACHE_BYTES = 32 * 2**20  # HDF5 chunk cache per open file (default 1 MiB holds < 1 chunk of 768-d)
_MAX_BLOCK_BYTES = 64 * 2**20  # largest contiguous block read at once by EmbeddingCache.read
_STORE_DTYPES = ("float16", "float32")


def _json(value: Any, what: str) -> str:
    """Canonical JSON (sorted keys, no spaces): equal values give equal strings."""
    try:
        return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False)
    except (TypeError, ValueError) as e:
        raise InputError(f"The {what!r} field must be JSON-serialisable. Got {value!r} instead.") from e


@dataclass(frozen=True)
class Provenance:
    """How the embeddings of a cache were made; rows of different identities are never mixed.

    ``preprocess`` and ``extra`` are normalised through JSON (tuples become lists), so a provenance
    read back from a file compares equal to the one written.
    """

    model: str
    pretrained: str
    preprocess: dict[str, Any]
    embed_dim: int
    normalized: bool
    source: str = ""
    store_dtype: str = "float32"
    extra: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        for name in ("preprocess", "extra"):
            value = getattr(self, name)
            if not isinstance(value, Mapping):
                raise InputError(f"The {name!r} field of Provenance must be a dict. Got {value!r} instead.")
            object.__setattr__(self, name, json.loads(_json(dict(value), name)))
        for name in ("model", "pretrained", "source"):
            if not isinstance(getattr(self, name), str):
                raise InputError(f"The {name!r} field of Provenance must be a str. "
                                 f"Got {getattr(self, name)!r} instead.")
        dim = self.embed_dim
        if isinstance(dim, bool) or not isinstance(dim, (int, np.integer)) or dim < 1:
            raise InputError(f"The 'embed_dim' field of Provenance must be a positive int. Got {dim!r} instead.")
        try:
            dtype = np.dtype(self.store_dtype).name
        except TypeError:
            dtype = None
        if dtype not in _STORE_DTYPES:
            raise InputError(f"The 'store_dtype' field of Provenance must be one of {', '.join(_STORE_DTYPES)}. "
                             f"Got {self.store_dtype!r} instead.")
        object.__setattr__(self, "embed_dim", int(dim))
        object.__setattr__(self, "normalized", bool(self.normalized))
        object.__setattr__(self, "store_dtype", dtype)

    def __hash__(self) -> int:
        return hash((_json(self.identity(), "identity"), self.source, _json(self.extra, "extra")))

    def identity(self) -> dict[str, Any]:
        """The fields that must be equal for rows to share a cache (``preprocess`` as canonical JSON)."""
        identity = {"model": self.model, "pretrained": self.pretrained,
                    "preprocess": _json(self.preprocess, "preprocess"), "embed_dim": self.embed_dim,
                    "normalized": self.normalized, "store_dtype": self.store_dtype}
        if self.extra.get("layers"):  # per-block embeddings: rows without them never join
            identity["layers"] = _json(self.extra["layers"], "layers")
        return identity

    @property
    def layers(self) -> dict[str, Any] | None:
        """The per-block embeddings the cache holds: ``{"blocks": [k, ...], "width": W, "n_blocks": L, ...}``."""
        return self.extra.get("layers") or None

    def describe(self) -> str:
        """One line for humans: model, weights, preprocessing, dimension, dtype, normalisation."""
        text = (f"model {self.model!r}, weights {self.pretrained!r}, "
                f"preprocess {_json(self.preprocess, 'preprocess')}, {self.embed_dim}-d {self.store_dtype}, "
                f"{'L2-normalised' if self.normalized else 'not normalised'}")
        return text + (f", extra {_json(self.extra, 'extra')}" if self.extra else "")

    def _to_attrs(self) -> dict[str, Any]:
        attrs = {k: v for k, v in self.identity().items() if k != "store_dtype"}  # the dtype of /embeddings
        return {**attrs, "source": self.source, "extra": _json(self.extra, "extra")}

    @classmethod
    def _from_file(cls, f: h5py.File) -> Provenance:
        a = {k: _decode(v) for k, v in f.attrs.items()}
        try:
            return cls(model=a["model"], pretrained=a["pretrained"], preprocess=json.loads(a["preprocess"]),
                       embed_dim=a["embed_dim"], normalized=a["normalized"], source=a.get("source", ""),
                       store_dtype=f["embeddings"].dtype.name, extra=json.loads(a.get("extra", "{}")))
        except (KeyError, ValueError, TypeError) as e:
            raise CacheError(f"{f.filename} has no valid provenance attributes ({e!r}).") from e


def _mismatch(where: Path, old: Provenance, new: Provenance, what: str) -> ProvenanceError:
    a, b = old.identity(), new.identity()
    differ = [k for k in dict.fromkeys([*a, *b]) if a.get(k) != b.get(k)]
    return ProvenanceError(
        f"{what} {where} holds embeddings made by\n  {old.describe()}\nbut this run makes\n  {new.describe()}\n"
        f"(they differ in {', '.join(differ)}). Embeddings of different provenance are never mixed: "
        f"write to another output path, or pass --force to replace it.")


def _decode(value: Any) -> Any:
    if isinstance(value, bytes):
        return value.decode("utf-8")
    if isinstance(value, (np.generic, np.ndarray)):
        return value.tolist()
    return value


def _rank_name(rank: Rank | str | int) -> str:
    try:
        return parse_rank(rank).label
    except ValueError as e:
        raise InputError(str(e)) from e


def _is_lock_error(e: OSError) -> bool:
    """True for HDF5's "unable to lock file" (another process holds the file open for writing).

    Only the lock failure counts: a truncated file's message ("truncated file: ... sblock->base_addr")
    also contains the letters "lock".
    """
    return getattr(e, "errno", None) in (errno.EAGAIN, errno.EWOULDBLOCK) or "unable to lock file" in str(e).lower()


_NO_SPACE_ERRNOS = frozenset(code for code in (errno.ENOSPC, errno.EFBIG, getattr(errno, "EDQUOT", None))
                             if code is not None)
_NO_SPACE_TEXT = ("no space left", "file too large", "disk quota", "errno = 28", "errno = 27", "errno = 122")


def _is_no_space(e: BaseException) -> bool:
    """True if ``e`` (an OSError, or HDF5's RuntimeError wrapping a failed write) means the disk is full."""
    if getattr(e, "errno", None) in _NO_SPACE_ERRNOS:
        return True
    return isinstance(e, (OSError, RuntimeError)) and any(t in str(e).lower() for t in _NO_SPACE_TEXT)


def _no_space(path: Path, e: BaseException) -> ResourceError:
    detail = getattr(e, "strerror", None) or e
    if getattr(e, "errno", None) == errno.EFBIG:
        return ResourceError(f"file too large: {path} would pass the file size limit ({detail}); raise the limit "
                             f"(ulimit -f) or choose another --out; the partial cache is kept and resumes.")
    return ResourceError(f"no space left on the device holding {path} ({detail}); free "
                         f"space or choose another --out; the partial cache is kept and resumes.")


def _check_room(path: Path, nbytes: int, shown: Path) -> None:
    """Refuse (CacheError naming ``shown``) before writing ``nbytes`` more into ``path`` if the disk or
    RLIMIT_FSIZE has no room.

    HDF5 cannot recover from a failed write (its file can then neither be flushed nor closed, and the
    process crashes at exit), so space is checked, or reserved (:func:`_reserve`), before writing.
    """
    try:
        stat = os.statvfs(path.parent if not path.exists() or not path.is_dir() else path)
        free = stat.f_bavail * stat.f_frsize
    except (OSError, AttributeError):
        free = None
    size = path.stat().st_size if path.exists() else 0
    try:
        import resource

        limit = resource.getrlimit(resource.RLIMIT_FSIZE)[0]
        limit = None if limit == resource.RLIM_INFINITY else limit
    except (ImportError, ValueError, OSError):
        limit = None
    if free is not None and nbytes > free:
        raise _no_space(shown, OSError(errno.ENOSPC, f"{free} bytes free, {nbytes} needed"))
    if limit is not None and size + nbytes > limit:
        raise _no_space(shown, OSError(errno.EFBIG, f"the file size limit is {limit} bytes, {nbytes} more needed"))


def _reserve(f: h5py.File, path: Path, nbytes: int, shown: Path) -> None:
    """Allocate ``nbytes`` past the end of the open file ``f`` so that HDF5's next writes cannot fail.

    :func:`_release` gives back what HDF5 did not use. Where the file system cannot preallocate, the
    free space is checked instead.
    """
    fd = f.id.get_vfd_handle()
    try:
        os.posix_fallocate(fd, max(os.fstat(fd).st_size, f.id.get_filesize()), max(1, int(nbytes)))
    except OSError as e:
        if e.errno in _NO_SPACE_ERRNOS:
            _release(f)
            raise _no_space(shown, e) from e
        if e.errno not in (errno.EOPNOTSUPP, errno.EINVAL, errno.ENOSYS, getattr(errno, "ENOTSUP", errno.EOPNOTSUPP)):
            raise ResourceError(f"cannot write to {path} ({e.strerror or e}).") from e
        _check_room(path, nbytes, shown)
    except AttributeError:  # no posix_fallocate on this platform
        _check_room(path, nbytes, shown)


def _release(f: h5py.File) -> None:
    """Cut the file back to the size HDF5 uses (after a flush), returning the unused reservation."""
    fd = f.id.get_vfd_handle()
    used = f.id.get_filesize()
    if os.fstat(fd).st_size > used:
        os.ftruncate(fd, used)


def _string_bytes(values: Sequence[str]) -> int:
    """Generous HDF5 size of variable-length strings: UTF-8 bytes, heap headers and padding."""
    return sum(len(v.encode("utf-8", "surrogateescape")) for v in values) * 2 + 64 * len(values)


def check_out_path(out: str | os.PathLike, what: str = "--out") -> Path:
    """The cache path ``out`` to write, refused (InputError) when it is a directory or its folder is missing.

    Called before any work, so that a bad ``--out`` is one line at once, not an error after the
    embeddings have been computed.
    """
    path = Path(os.fspath(out))
    if path.is_dir():
        raise InputError(f"{what} {path} is a directory; give the path of the cache file to write "
                         f"(e.g. {path / 'embeddings.h5'}).")
    if not path.parent.is_dir():
        raise InputError(f"{what} {path}: the folder {path.parent} does not exist; create it or choose another "
                         f"{what}.")
    return path


def _partial_path(path: Path) -> Path:
    return path.with_name(path.name + ".partial")


def _set_aside(path: Path, tag: str) -> Path:
    """Rename ``path`` to ``<path>.<tag>-<UTC timestamp>`` (data is moved aside, never deleted)."""
    stamp = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%S.%fZ")
    target, n = path.with_name(f"{path.name}.{tag}-{stamp}"), 0
    while target.exists():
        n += 1
        target = path.with_name(f"{path.name}.{tag}-{stamp}-{n}")
    os.replace(path, target)
    return target


def _fsync(path: Path, *, best_effort: bool = False) -> None:
    """Flush ``path`` to disk (``best_effort`` for directories, which some systems cannot fsync)."""
    try:
        fd = os.open(path, os.O_RDONLY if path.is_dir() else os.O_RDWR)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
    except OSError:
        if not best_effort:
            raise


def _open_for_write(path: Path) -> h5py.File:
    """Open ``path`` read-write with metadata evictions off: the file on disk changes only at flushes."""
    f = h5py.File(path, "r+", rdcc_nbytes=_CHUNK_CACHE_BYTES)
    config = f.id.get_mdc_config()
    config.evictions_enabled, config.incr_mode, config.flash_incr_mode, config.decr_mode = False, 0, 0, 0
    f.id.set_mdc_config(config)
    return f


def _tmp_path(path: Path) -> Path:
    return path.with_name(path.name + ".tmp")


def _create_file(target: Path, dim: int, dtype: Any, chunk_rows: int, attrs: Mapping[str, Any]) -> None:
    """Write an empty cache (all datasets of length 0) with root attributes ``attrs`` at ``target``."""
    with h5py.File(target, "w") as f:
        f.create_dataset("embeddings", shape=(0, dim), maxshape=(None, dim), chunks=(chunk_rows, dim), dtype=dtype)
        for name in ("ids", *(f"taxonomy/{r}" for r in RANK_NAMES), "failed/ids", "failed/reasons"):
            f.create_dataset(name, shape=(0,), maxshape=(None,), chunks=(4 * chunk_rows,), dtype=_STR)
        f.attrs.update(attrs)


_LAYERS = "layers"
#: The tokens stored after each block: ``/layers/<k>/<token>``.
LAYER_TOKENS = ("class", "patch_mean")


def _layer_names(spec: Mapping[str, Any] | None) -> list[str]:
    """Dataset names of the per-block embeddings described by ``extra["layers"]``."""
    if not spec:
        return []
    return [f"{_LAYERS}/{int(k)}/{token}" for k in spec["blocks"] for token in LAYER_TOKENS]


def _create_layers(f: h5py.File, spec: Mapping[str, Any] | None, dtype: Any, chunk_rows: int) -> None:
    width = int(spec["width"]) if spec else 0
    for name in _layer_names(spec):
        f.create_dataset(name, shape=(0, width), maxshape=(None, width), chunks=(chunk_rows, width), dtype=dtype)


def _copy_committed(src: h5py.File, target: Path) -> None:
    """Write at ``target`` a clean copy of the committed rows, failures, text groups and attrs of ``src``."""
    n, m = int(src.attrs["rows_committed"]), int(src.attrs["failed_committed"])
    emb = src["embeddings"]
    chunk_rows = emb.chunks[0] if emb.chunks else CHUNK_ROWS  # a virtual cache (latent.distributed) has no chunks
    _create_file(target, emb.shape[1], emb.dtype, chunk_rows, {**src.attrs, "complete": False})
    step = max(chunk_rows, _MAX_BLOCK_BYTES // (emb.shape[1] * emb.dtype.itemsize))
    layers = _layer_names(json.loads(_decode(src.attrs.get("extra", "{}"))).get("layers"))
    counts = [("embeddings", n), ("ids", n), *((f"taxonomy/{r}", n) for r in RANK_NAMES),
              ("failed/ids", m), ("failed/reasons", m), *((name, n) for name in layers)]
    with h5py.File(target, "r+") as dst:
        _create_layers(dst, json.loads(_decode(src.attrs.get("extra", "{}"))).get("layers"), emb.dtype, chunk_rows)
        for name, count in counts:
            source, copy = src[name], dst[name]
            if source.shape[0] < count:
                raise CacheError(f"/{name} holds {source.shape[0]} rows, fewer than the {count} committed")
            copy.resize(count, axis=0)
            reader = source if source.dtype.kind == "f" else source.asstr()
            for a in range(0, count, step):
                copy[a:min(count, a + step)] = reader[a:min(count, a + step)]
        for group in ("text", _META, _META_MISSING):
            if group in src:
                src.copy(src[group], dst, name=group)


# ---------------------------------------------------------------------------- row metadata
_META, _META_MISSING = "metadata", "metadata_missing"


def _meta_name(column: str) -> str:
    """HDF5 dataset name of a metadata column: "/" and "%" escaped; "" and "." spelled out."""
    name = column.replace("%", "%25").replace("/", "%2F")
    return {"": "%00", ".": "%2E"}.get(name, name)


def _encode_column(series: Any, column: str) -> tuple[np.ndarray, np.ndarray | None, str]:
    """``(values, missing mask or None, dtype name)`` of one metadata column for HDF5.

    Raises
    ------
    InputError
        A column whose values are not scalars (lists, dicts, bytes): it cannot be one value per row.
    """
    import pandas as pd
    from pandas.api import types

    dtype = series.dtype
    missing = series.isna().to_numpy()
    kind = str(dtype)
    if isinstance(dtype, pd.CategoricalDtype):
        series, kind = series.astype(object), "category"
    elif types.is_bool_dtype(dtype):
        values = series.fillna(False).to_numpy(dtype=bool)
        return values, (missing if missing.any() or kind == "boolean" else None), kind
    elif types.is_integer_dtype(dtype):
        numpy_dtype = getattr(dtype, "numpy_dtype", dtype)
        values = series.fillna(0).to_numpy(dtype=numpy_dtype)
        return values, (missing if missing.any() or kind != str(numpy_dtype) else None), kind
    elif types.is_float_dtype(dtype):
        numpy_dtype = getattr(dtype, "numpy_dtype", dtype)
        return series.to_numpy(dtype=numpy_dtype, na_value=np.nan), None, kind
    elif types.is_datetime64_dtype(dtype):  # tz-naive; tz-aware datetimes are kept as ISO text below
        values = series.to_numpy(dtype="datetime64[ns]").view(np.int64).copy()
        values[missing] = 0
        return values, missing, kind
    elif types.is_numeric_dtype(dtype):  # complex
        raise InputError(f"The metadata column {column!r} holds {dtype} values, which a cache does not store; "
                         f"drop the column or convert it to text.")
    objects = series.to_numpy(dtype=object)
    bad = [i for i, v in enumerate(objects) if not missing[i] and isinstance(v, (list, tuple, dict, set, np.ndarray, bytes))]
    if bad:
        raise InputError(f"The metadata column {column!r} holds lists or other non-scalar values (rows "
                         f"{format_list(bad, limit=5)}): a cache keeps one value per row; drop the column.")
    if kind not in ("str", "category", "string"):
        kinds = {type(v).__name__ for v, m in zip(objects, missing) if not m}
        if kinds - {"str"}:
            log.info("metadata column %r mixes %s values: kept as text", column, ", ".join(sorted(kinds)))
        kind = "str"
    values = np.array(["" if m else str(v) for v, m in zip(objects, missing)], dtype=object)
    return values, (missing if missing.any() else None), kind


def _decode_column(values: np.ndarray, missing: np.ndarray | None, kind: str) -> Any:
    """The pandas Series (or array) of one stored metadata column, dtype and missing values restored."""
    import pandas as pd

    if kind in ("str", "category", "string"):
        objects = np.asarray(values, dtype=object)
        if missing is not None:
            objects = objects.copy()
            objects[missing] = None
        series = pd.Series(objects).astype("str")  # missing (None) stays missing
        return series if kind == "str" else series.astype(kind)
    if kind.startswith("datetime64"):
        times = values.view("datetime64[ns]").copy()
        if missing is not None:
            times[missing] = np.datetime64("NaT")
        return pd.Series(times).astype(kind)
    if missing is not None:
        array = pd.array(values, dtype=kind)
        array[missing] = pd.NA
        return pd.Series(array)
    return pd.Series(values).astype(kind)  # numpy dtypes, and nullable floats (NaN -> NA)


def _write_metadata(f: h5py.File, frame: Any) -> None:
    """Write (or replace) the row metadata ``frame`` (one row per cache row) under /metadata."""
    for group in (_META, _META_MISSING):
        if group in f:
            del f[group]
    meta, masks = f.create_group(_META), None
    order = []
    for column in frame.columns:
        name = _meta_name(str(column))
        values, missing, kind = _encode_column(frame[column], str(column))
        ds = meta.create_dataset(name, data=values, dtype=_STR if values.dtype == object else values.dtype)
        ds.attrs["column"], ds.attrs["dtype"] = str(column), kind
        if missing is not None:
            masks = masks if masks is not None else f.create_group(_META_MISSING)
            masks.create_dataset(name, data=missing.astype(bool))
        order.append(name)
    meta.attrs["order"] = _json(order, "order")


def _metadata_nbytes(frame: Any) -> int:
    """Generous disk size of ``frame`` stored as row metadata."""
    total = 2**20
    for column in frame.columns:
        series = frame[column]
        if series.dtype == object or str(series.dtype) in ("str", "string", "category"):
            total += _string_bytes([str(v) for v in series.to_numpy(dtype=object)])
        else:
            total += 8 * len(series)
        total += len(series) + 4096
    return total


_BROKEN_FILES: list[h5py.File] = []  # files whose HDF5 write failed: kept open, never closed (see _writing)
_REPLACES = "replaces_existing"  # root attribute of a partial that will replace a complete cache (--force)


def _refuse_replacement(path: Path, partial: Path, mode: str) -> None:
    """Refuse to resume a partial that would replace the complete cache ``path`` without ``force``.

    In create mode any partial would replace ``path``; in append mode only one written by a
    ``--force`` run (marked with the ``replaces_existing`` attribute). A partial HDF5 cannot read is
    left to :meth:`CacheWriter._resume` (moved aside, never deleted).
    """
    try:
        with h5py.File(partial, "r") as f:
            replaces = bool(f.attrs.get(_REPLACES, False))
    except OSError as e:
        if _is_lock_error(e):
            raise ResourceError(f"{partial} is open in another process; is another write to it running?") from e
        return
    if replaces:
        raise CacheError(f"{path} is complete; a replacement left by an interrupted --force run is in {partial}: "
                         f"re-run with --force to finish it, or delete it.")
    if mode == "create":
        raise CacheError(f"{path} is complete; rows being added to it by an interrupted run are in {partial}: "
                         f"re-run that command to finish them, pass --force to replace {path}, or delete {partial}.")


def _row_datasets(f: h5py.File) -> list[h5py.Dataset]:
    layers = _layer_names(json.loads(_decode(f.attrs.get("extra", "{}"))).get("layers"))
    return [f["embeddings"], f["ids"], *(f["taxonomy"][r] for r in RANK_NAMES), *(f[name] for name in layers)]


def _str_list(values: Sequence[str], what: str) -> list[str]:
    if isinstance(values, str):
        raise InputError(f"The {what!r} parameter must be a sequence of strings, not one string ({values!r}).")
    out = list(values)
    bad = [v for v in out if not isinstance(v, str) or v == ""]
    if bad:
        raise InputError(f"The {what!r} parameter must hold non-empty strings. Got {format_list(map(repr, bad))}.")
    return out


def _labels(values: Sequence[Any], rank: str, k: int) -> list[str]:
    """Rank labels for one block: None and NaN become "" (unknown)."""
    out = ["" if v is None or (isinstance(v, float) and v != v) else v for v in values]
    bad = [v for v in out if not isinstance(v, str)]
    if len(out) != k or bad:
        raise InputError(f"taxonomy[{rank!r}] must hold {k} strings (one per row). "
                         f"Got {len(out)} values{', including ' + format_list(map(repr, bad)) if bad else ''}.")
    return out


def _write_strings(ds: h5py.Dataset, start: int, values: Sequence[str]) -> None:
    ds[start:start + len(values)] = np.array(values, dtype=object)


class CacheWriter:
    """Writes an embedding cache crash-safely; use :meth:`open` and a ``with`` block.

    Leaving the ``with`` block normally finalizes the cache (``<path>.partial`` is renamed onto
    ``<path>``); leaving it by an exception keeps the partial file, which the next :meth:`open`
    resumes. ``existing_ids`` and ``n_rows`` let a resuming caller skip the work already done.
    """

    def __init__(self, path: Path, file: h5py.File, provenance: Provenance) -> None:
        self.path, self.partial_path, self.provenance = path, _partial_path(path), provenance
        self._file: h5py.File | None = file
        self._n = int(file.attrs["rows_committed"])
        self._n_failed = int(file.attrs["failed_committed"])
        self._ids = set(file["ids"].asstr()[: self._n])
        self._failed_ids = set(file["failed/ids"].asstr()[: self._n_failed])
        self._finalized = False
        self._broken = False
        self._told = False  # the last error said already that the partial is kept and resumes

    @classmethod
    def open(cls, path: str | os.PathLike, provenance: Provenance, *, mode: Literal["create", "append"] = "create",
             force: bool = False, resume: bool = True, chunk_rows: int = CHUNK_ROWS) -> CacheWriter:
        """Open a writer for the cache at ``path``.

        Parameters
        ----------
        path : str or os.PathLike
            Final cache path; writes go to ``<path>.partial`` beside it.
        provenance : Provenance
            How the embeddings are made. Rows of another provenance identity are never mixed in.
        mode : {"create", "append"}
            ``"create"`` refuses an existing complete cache unless ``force``; ``"append"`` adds rows
            to it if its provenance identity matches (otherwise ProvenanceError, or with ``force`` a
            new cache).
        force : bool
            Replace an existing cache, or discard an interrupted write of another provenance (renamed
            to ``<path>.partial.discarded-<time>``). The old cache is replaced only at finalize.
        resume : bool
            Resume ``<path>.partial`` if present (an interrupted write of the same provenance is resumed
            even with ``force``). With False it is moved aside and the write starts again.
        chunk_rows : int
            Rows per HDF5 chunk of ``/embeddings`` for a new file.

        Raises
        ------
        CacheError
            ``path`` exists in create mode without ``force``, or the partial is open elsewhere.
        ProvenanceError
            An existing cache or partial was made with another provenance identity and not ``force``.
        """
        path = check_out_path(path, "The cache path")
        partial = _partial_path(path)
        if mode not in ("create", "append"):
            raise InputError(f"The 'mode' parameter of CacheWriter.open must be 'create' or 'append'. "
                             f"Got {mode!r} instead.")
        if not isinstance(provenance, Provenance):
            raise InputError(f"The 'provenance' parameter of CacheWriter.open must be a Provenance. "
                             f"Got {type(provenance).__name__} instead.")
        file = None
        if partial.exists() and path.exists() and not force:
            _refuse_replacement(path, partial, mode)
        if partial.exists() and not resume:
            log.warning("Moved the interrupted write %s aside to %s (resume=False).", partial,
                        _set_aside(partial, "discarded"))
        elif partial.exists():
            file = cls._resume(partial, provenance, force)
        if file is None:
            file = cls._start(path, provenance, mode, force, chunk_rows)
        return cls(path, file, provenance)

    @staticmethod
    def _resume(partial: Path, provenance: Provenance, force: bool) -> h5py.File | None:
        """Rebuild the committed rows of an interrupted write into a clean file and open it.

        A killed writer can leave bytes past the committed rows that HDF5 trips over when writing
        there again (stale string-heap references, allocations past the recorded end of file), so
        the committed rows are copied into a fresh file instead of being written over in place.
        """
        tmp, old, problem = _tmp_path(partial), None, None
        _check_room(tmp, partial.stat().st_size + 2**20, partial)  # the committed rows are copied into a new file
        try:
            with h5py.File(partial, "r") as src:
                old = Provenance._from_file(src)
                if old.identity() == provenance.identity():
                    _copy_committed(src, tmp)
        except OSError as e:
            if _is_lock_error(e):
                raise ResourceError(f"{partial} is open in another process; is another write to it running?") from e
            problem = e
        except (CacheError, KeyError, ValueError, TypeError) as e:
            problem = e
        if problem is not None:
            log.warning("The interrupted write %s cannot be resumed (%s); moved it aside to %s and starting "
                        "again.", partial, problem, _set_aside(partial, "damaged"))
            return None
        if old.identity() != provenance.identity():
            if not force:
                raise _mismatch(partial, old, provenance, "The interrupted write")
            log.warning("force: moved the interrupted write %s (%s) aside to %s.", partial, old.describe(),
                        _set_aside(partial, "discarded"))
            return None
        os.replace(tmp, partial)
        f = _open_for_write(partial)
        log.info("Resuming the interrupted write %s: %d rows and %d failures already committed.",
                 partial, f.attrs["rows_committed"], f.attrs["failed_committed"])
        return f

    @staticmethod
    def _start(path: Path, provenance: Provenance, mode: str, force: bool, chunk_rows: int) -> h5py.File:
        partial = _partial_path(path)
        tmp = _tmp_path(partial)  # the partial appears only once initialised
        if path.exists() and mode == "create" and not force:
            raise CacheError(f"The cache {path} already exists; pass --force to replace it, or write to another "
                             f"path (the Python API can also add rows with CacheWriter.open(..., mode='append')).")
        if path.exists() and mode == "append":
            with open_cache(path) as old_cache:
                old = old_cache.provenance
            if old.identity() == provenance.identity():
                _check_room(tmp, path.stat().st_size + 2**20, path)
                with h5py.File(path, "r") as src:
                    virtual = src["embeddings"].is_virtual
                    if virtual:  # a virtual cache over Ray shards: its rows are copied into an ordinary cache
                        _copy_committed(src, tmp)
                if not virtual:
                    shutil.copyfile(path, tmp)
                with h5py.File(tmp, "r+") as f:
                    f.attrs["complete"] = False
                    f.attrs[_REPLACES] = False
                os.replace(tmp, partial)
                log.info("Appending to %s (through %s).", path, partial)
                return _open_for_write(partial)
            if not force:
                raise _mismatch(path, old, provenance, "The cache")
        if path.exists():
            log.warning("force: %s will be replaced when the new cache is complete.", path)
        attrs = {"format_version": FORMAT_VERSION, "latent_version": __version__, **provenance._to_attrs(),
                 "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
                 "complete": False, "rows_committed": 0, "failed_committed": 0, _REPLACES: path.exists()}
        _check_room(tmp, 2**20, path)
        _create_file(tmp, provenance.embed_dim, provenance.store_dtype, chunk_rows, attrs)
        if provenance.layers:
            with h5py.File(tmp, "r+") as f:
                _create_layers(f, provenance.layers, provenance.store_dtype, chunk_rows)
        os.replace(tmp, partial)
        return _open_for_write(partial)

    @property
    def n_rows(self) -> int:
        """Rows committed so far (including those of a resumed or appended-to cache)."""
        return self._n

    @property
    def existing_ids(self) -> set[str]:
        """Ids of the committed rows (a copy)."""
        return set(self._ids)

    @property
    def failed_ids(self) -> set[str]:
        """Ids recorded by :meth:`add_failed` (a copy)."""
        return set(self._failed_ids)

    def _h5(self) -> h5py.File:
        if self._broken:
            raise ResourceError(f"The writer of {self.partial_path} stopped after a failed write; the rows committed "
                             f"before it are kept and resume.")
        if self._file is None:
            raise CacheError(f"The writer of {self.path} is closed.")
        return self._file

    @contextlib.contextmanager
    def _writing(self, nbytes: int) -> Iterator[h5py.File]:
        """Reserve ``nbytes`` on disk, run the HDF5 writes of the block, then give back the unused space.

        A full disk is refused before HDF5 writes anything (:func:`_reserve`). Should an HDF5 write fail
        anyway, the writer stops: HDF5 can neither flush nor close such a file, so it is left open (not
        closed, which crashes) and the rows committed before stay readable and resume.
        """
        f = self._h5()
        try:
            _reserve(f, self.partial_path, nbytes, self.path)
        except CacheError:
            self._told = True  # the error already says that the partial cache is kept
            raise
        try:
            yield f
        except (OSError, RuntimeError) as e:  # HDF5 reports failed writes as either
            self._broken = self._told = True
            _BROKEN_FILES.append(f)  # never closed nor freed: HDF5 would crash doing either
            self._file = None
            if _is_no_space(e):
                raise _no_space(self.path, e) from e
            raise ResourceError(f"writing {self.partial_path} failed ({e}); the rows committed before are kept "
                             f"and resume.") from e
        _release(f)

    def _block_bytes(self, k: int, strings: Sequence[str]) -> int:
        """Generous disk size of a block of ``k`` rows with ``strings``: data, whole new chunks, metadata."""
        f = self._h5()
        emb = f["embeddings"]
        string_chunk = f["ids"].chunks[0] * 16
        spec = self.provenance.layers
        width = len(_layer_names(spec)) * int(spec["width"]) if spec else 0
        return ((k + 2 * emb.chunks[0]) * (emb.shape[1] + width) * emb.dtype.itemsize + 20 * string_chunk
                + _string_bytes(strings) + 2**20)

    def _commit(self, attr: str, value: int) -> None:
        f = self._h5()
        f.flush()  # data first, then the counter that makes it count
        f.attrs[attr] = value
        f.flush()

    def append(self, ids: Sequence[str], embeddings: np.ndarray,
               taxonomy: Mapping[str | Rank, Sequence[str]] | None = None,
               layers: Mapping[int, Mapping[str, np.ndarray]] | None = None) -> None:
        """Validate and commit one block of rows; nothing is written if any check fails.

        Parameters
        ----------
        ids : sequence of str, (k,)
            Unique row ids, none already in the cache.
        embeddings : np.ndarray, (k, D)
            Finite values (also after the cast to the store dtype); ``D == provenance.embed_dim``.
        taxonomy : mapping rank name -> sequence of str (k,), optional
            Labels per rank; missing ranks, None and NaN are stored as "" (unknown).
        layers : mapping block -> {"class": (k, W), "patch_mean": (k, W)}, optional
            Required exactly when the provenance has ``extra["layers"]``: every block it lists, both tokens.
        """
        f = self._h5()
        if _META in f:
            raise CacheError(f"{self.path} keeps row metadata ({len(f[_META])} columns), one value per row: rows "
                             f"cannot be added to it; write a new cache (or pass --force to replace it).")
        ids = _str_list(ids, "ids")
        emb, k, dim = np.asarray(embeddings), len(ids), self.provenance.embed_dim
        if emb.ndim != 2 or emb.shape != (k, dim) or not np.issubdtype(emb.dtype, np.number):
            raise InputError(f"The 'embeddings' parameter of append must be a numeric array of shape ({k}, {dim}) "
                             f"(one row per id). Got {emb.dtype} shape {emb.shape} instead.")
        taxonomy = {} if taxonomy is None else {str(key): v for key, v in taxonomy.items()}
        unknown = [key for key in taxonomy if key not in RANK_NAMES]
        if unknown:
            raise InputError(f"The 'taxonomy' parameter of append has keys that are not ranks: {format_list(unknown)}. "
                             f"Valid keys: {', '.join(RANK_NAMES)}.")
        labels = {r: _labels(taxonomy[r], r, k) if r in taxonomy else [""] * k for r in RANK_NAMES}
        repeated = [i for i, c in Counter(ids).items() if c > 1]
        if repeated:
            raise InputError(f"The 'ids' parameter of append must be unique; repeated: {format_list(repeated)}.")
        present = [i for i in ids if i in self._ids]
        if present:
            raise InputError(f"{len(present)} ids are already in {self.partial_path}: {format_list(present)}. "
                             f"Skip the ids in writer.existing_ids.")
        with np.errstate(over="ignore", invalid="ignore"):
            data = emb.astype(self.provenance.store_dtype)
        bad = np.flatnonzero(~np.isfinite(data).all(axis=1))
        if bad.size:
            raise InputError(f"embeddings hold NaN or infinite values (or values too large for "
                             f"{self.provenance.store_dtype}) in {bad.size} rows: "
                             f"{format_list(f'{i} (id {ids[i]!r})' for i in bad)}; nothing was written.")
        layer_data = self._layer_data(layers, ids)
        if k == 0:
            return
        n0 = self._n
        with self._writing(self._block_bytes(k, [*ids, *(v for r in RANK_NAMES for v in labels[r])])):
            for ds in _row_datasets(f):
                ds.resize(n0 + k, axis=0)
            f["embeddings"][n0:n0 + k] = data
            _write_strings(f["ids"], n0, ids)
            for r in RANK_NAMES:
                _write_strings(f["taxonomy"][r], n0, labels[r])
            for name, values in layer_data.items():
                f[name][n0:n0 + k] = values
            self._commit("rows_committed", n0 + k)
        self._n += k
        self._ids.update(ids)

    def _layer_data(self, layers: Mapping[int, Mapping[str, np.ndarray]] | None, ids: list[str]) -> dict[str, np.ndarray]:
        """Check ``layers`` against the provenance and cast it: dataset name -> (k, W) in the store dtype."""
        spec, k = self.provenance.layers, len(ids)
        if not spec:
            if layers:
                raise InputError(f"The 'layers' parameter of append was given, but {self.path} was opened without "
                                 f"layers (Provenance.extra['layers']); open it with the blocks to store.")
            return {}
        width = int(spec["width"])
        blocks = [int(b) for b in spec["blocks"]]
        if not isinstance(layers, Mapping) or sorted(int(b) for b in layers) != blocks:
            got = "nothing" if not layers else sorted(layers) if isinstance(layers, Mapping) else type(layers).__name__
            raise InputError(f"The 'layers' parameter of append must hold blocks {blocks} of {self.path}, each with "
                             f"{' and '.join(LAYER_TOKENS)} arrays of shape ({k}, {width}). Got {got}.")
        out: dict[str, np.ndarray] = {}
        for block, tokens in layers.items():
            for token in LAYER_TOKENS:
                value = np.asarray(tokens.get(token) if isinstance(tokens, Mapping) else None)
                if value.shape != (k, width) or not np.issubdtype(value.dtype, np.number):
                    raise InputError(f"The 'layers' parameter of append must give block {block} a {token!r} array of "
                                     f"shape ({k}, {width}). Got {value.dtype} shape {value.shape} instead.")
                with np.errstate(over="ignore", invalid="ignore"):
                    data = value.astype(self.provenance.store_dtype)
                bad = np.flatnonzero(~np.isfinite(data).all(axis=1))
                if bad.size:
                    raise InputError(f"block {block} {token} embeddings hold NaN or infinite values (or values too "
                                     f"large for {self.provenance.store_dtype}) in {bad.size} rows: "
                                     f"{format_list(f'{i} (id {ids[i]!r})' for i in bad)}; nothing was written.")
                out[f"{_LAYERS}/{int(block)}/{token}"] = data
        return out

    def add_failed(self, ids: Sequence[str], reasons: Sequence[str] | str) -> None:
        """Record inputs that could not be embedded, ``reasons`` (k,) or one reason for all."""
        f = self._h5()
        ids = _str_list(ids, "ids")
        reasons = [reasons] * len(ids) if isinstance(reasons, str) else list(reasons)
        if len(reasons) != len(ids) or not all(isinstance(r, str) for r in reasons):
            raise InputError(f"The 'reasons' parameter of add_failed must hold {len(ids)} strings. Got {reasons!r}.")
        if not ids:
            return
        m0 = self._n_failed
        with self._writing(self._block_bytes(0, [*ids, *reasons])):
            for name, values in (("failed/ids", ids), ("failed/reasons", reasons)):
                f[name].resize(m0 + len(ids), axis=0)
                _write_strings(f[name], m0, values)
            self._commit("failed_committed", m0 + len(ids))
        self._n_failed += len(ids)
        self._failed_ids.update(ids)

    def write_metadata(self, frame: Any) -> None:
        """Store (or replace) row metadata: a pandas DataFrame with one row per committed row, in row order.

        Every column becomes ``/metadata/<column>`` with its dtype (see the module notes); write it
        after the last :meth:`append` (rows cannot be added to a cache with metadata).

        Raises
        ------
        InputError
            ``frame`` has another number of rows than the cache, repeated column names, or a column
            of non-scalar values (named).
        """
        import pandas as pd

        f = self._h5()
        if not isinstance(frame, pd.DataFrame):
            raise InputError(f"The 'frame' parameter of write_metadata must be a pandas DataFrame. "
                             f"Got {type(frame).__name__} instead.")
        if len(frame) != self._n:
            raise InputError(f"The row metadata has {len(frame)} rows but the cache has {self._n}; give one row "
                             f"per cache row, in row order.")
        names = [_meta_name(str(c)) for c in frame.columns]
        repeated = sorted({n for n in names if names.count(n) > 1})
        if repeated:
            raise InputError(f"The row metadata has repeated column names: {format_list(repeated)}; rename them.")
        frame = frame.reset_index(drop=True)
        for column in frame.columns:  # every column checked before anything is written
            _encode_column(frame[column], str(column))
        with self._writing(_metadata_nbytes(frame)):
            _write_metadata(f, frame)
            f.flush()

    def write_text_group(self, name: str, labels: Sequence[str], embeddings: np.ndarray,
                         attrs: Mapping[str, Any] | None = None) -> None:
        """Store (or replace) text embeddings under ``/text/<name>``: labels (T,), embeddings (T, D')."""
        f = self._h5()
        if not isinstance(name, str) or not name or any(not part for part in name.split("/")):
            raise InputError(f"The 'name' parameter of write_text_group must be a non-empty path such as "
                             f"'species/taxon' (no empty parts). Got {name!r} instead.")
        labels = _str_list(labels, "labels")
        emb = np.asarray(embeddings, dtype=self.provenance.store_dtype)
        if emb.ndim != 2 or emb.shape[0] != len(labels) or not np.isfinite(emb).all():
            raise InputError(f"The 'embeddings' parameter of write_text_group must be finite, of shape "
                             f"({len(labels)}, D). Got shape {emb.shape} instead.")
        with self._writing(emb.nbytes + _string_bytes(labels) + 2**20):
            if f"text/{name}" in f:
                del f[f"text/{name}"]
            group = f.create_group(f"text/{name}")
            group.create_dataset("labels", data=np.array(labels, dtype=object), dtype=_STR)
            group.create_dataset("embeddings", data=emb)
            json_keys = []
            for key, value in (attrs or {}).items():
                if not isinstance(value, (str, bool, int, float)):
                    value, json_keys = _json(value, key), json_keys + [key]
                group.attrs[key] = value
            group.attrs["_json_keys"] = _json(json_keys, "_json_keys")
            f.flush()

    def read_text_group(self, name: str) -> tuple[np.ndarray, np.ndarray, dict[str, Any]]:
        """Labels (T,), embeddings (T, D') as float32 and attrs of ``/text/<name>``."""
        return _read_text_group(self._h5(), name)

    def finalize(self) -> Path:
        """Mark the cache complete, fsync it and rename it onto ``path``; returns ``path``."""
        if self._finalized:
            return self.path
        with self._writing(2**20) as f:
            if _REPLACES in f.attrs:
                del f.attrs[_REPLACES]
            f.attrs["complete"] = True
            f.flush()
        f.close()
        self._file = None
        _fsync(self.partial_path)
        os.replace(self.partial_path, self.path)
        _fsync(self.path.parent, best_effort=True)
        self._finalized = True
        log.info("Wrote %s: %d rows, %d failures.", self.path, self._n, self._n_failed)
        return self.path

    close = finalize

    def abort(self) -> None:
        """Close without finalizing: the committed rows stay in the partial file for a resume."""
        if self._file is not None and not self._broken:
            self._file.close()
            self._file = None
            (log.info if self._told else log.warning)(
                "Left the unfinished cache %s (%d rows committed); run again to resume it.", self.partial_path, self._n)

    def __enter__(self) -> CacheWriter:
        return self

    def __exit__(self, exc_type: type | None, exc: BaseException | None, tb: object) -> None:
        if exc_type is None:
            self.finalize()
        else:
            self.abort()


def _read_text_group(f: h5py.File, name: str) -> tuple[np.ndarray, np.ndarray, dict[str, Any]]:
    if f"text/{name}" not in f:
        raise CacheError(f"{f.filename} has no text group {name!r}.")
    group = f[f"text/{name}"]
    attrs = {k: _decode(v) for k, v in group.attrs.items()}
    for key in json.loads(attrs.pop("_json_keys", "[]")):
        attrs[key] = json.loads(attrs[key])
    return group["labels"].asstr()[:], group["embeddings"][:].astype(np.float32), attrs


class EmbeddingCache:
    """Read-only view of a cache file; the HDF5 file is opened once and reopened after a fork."""

    def __init__(self, path: str | os.PathLike, *, allow_incomplete: bool = False, layer: int | None = None,
                 token: str = "class") -> None:
        path = Path(os.fspath(path))
        partial = _partial_path(path)
        if not path.exists() and partial.exists():
            if not allow_incomplete:
                raise CacheError(f"No cache at {path}, but an interrupted write exists at {partial}: re-run the "
                                 f"command that wrote it to resume, or pass allow_incomplete=True to read the "
                                 f"rows committed so far.")
            path = partial
        elif not path.exists():
            raise CacheError(f"No embedding cache at {path}.")
        elif partial.exists():
            log.warning("A write to %s is running or was interrupted; reading the last complete cache.", partial)
        self.path = path
        self._file: h5py.File | None = None
        self._pid = -1
        self._labels: dict[str, np.ndarray] = {}
        self._taxonomy: Taxonomy | None = None
        self._ids: np.ndarray | None = None
        self.layer: int | None = None
        self.token = "class"
        self._emb = "embeddings"  # the dataset read() reads: /embeddings, or /layers/<k>/<token> for a layer view
        f = self._h5()
        try:
            if "embeddings" not in f or "ids" not in f or "format_version" not in f.attrs:
                raise CacheError(f"{path} is not a latent embedding cache (no /embeddings, /ids or format_version).")
            version = int(f.attrs["format_version"])
            if version > FORMAT_VERSION:
                raise CacheError(f"{path} has cache format {version}, newer than the format {FORMAT_VERSION} that "
                                 f"latent {__version__} reads; upgrade latent.")
            self.complete = bool(f.attrs.get("complete", False))
            if not self.complete and not allow_incomplete:
                raise CacheError(f"{path} is incomplete (an interrupted write): re-run the command to resume it, "
                                 f"or pass allow_incomplete=True to read the committed rows.")
            stored = f["embeddings"].shape[0]
            self._n = min(int(f.attrs.get("rows_committed", stored)), stored)
            if f["ids"].shape[0] < self._n:
                raise CacheError(f"{path} is damaged: /ids is shorter than /embeddings.")
            _check_virtual_sources(f, path)
            if layer is not None:
                self._select_layer(layer, token)
        except BaseException:
            self.close()
            raise

    @property
    def layers(self) -> list[int]:
        """Blocks whose embeddings the cache holds (1-based, ``latent embed --layers``); [] when none."""
        spec = self.provenance.layers
        return [int(k) for k in spec["blocks"]] if spec else []

    def _select_layer(self, layer: Any, token: str) -> None:
        stored = self.layers
        if not stored:
            raise InputError(f"The 'layer' parameter (--layer) was {layer!r}, but {self.path} holds no per-layer "
                             f"embeddings; make a cache with them: latent embed ... --layers all.")
        if isinstance(layer, bool) or not isinstance(layer, (int, np.integer)) or int(layer) not in stored:
            raise InputError(f"The 'layer' parameter (--layer) must be one of the blocks {self.path} holds "
                             f"({block_ranges(stored)}). Got {layer!r} instead.")
        if token not in LAYER_TOKENS:
            raise InputError(f"The 'token' parameter must be one of {', '.join(LAYER_TOKENS)}. Got {token!r} instead.")
        self.layer, self.token = int(layer), token
        self._emb = f"{_LAYERS}/{int(layer)}/{token}"

    def _h5(self) -> h5py.File:
        if self._file is None or self._pid != os.getpid():
            with self._reading():
                self._file = h5py.File(self.path, "r", rdcc_nbytes=_CHUNK_CACHE_BYTES)
            self._pid = os.getpid()
        return self._file

    @contextlib.contextmanager
    def _reading(self) -> Iterator[None]:
        """Turn HDF5 read failures (a file damaged by a killed writer) into CacheError."""
        try:
            yield
        except OSError as e:
            if _is_lock_error(e):
                raise ResourceError(f"{self.path} is open for writing in another process ({e}).") from e
            raise ResourceError(f"{self.path} is damaged or truncated (not a readable HDF5 file): {e}; it cannot be "
                             f"read (write it again, or restore a copy).") from e

    def close(self) -> None:
        """Close the HDF5 file (it is reopened on the next read)."""
        if self._file is not None and self._pid == os.getpid():
            self._file.close()
        self._file = None

    def __enter__(self) -> EmbeddingCache:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __getstate__(self) -> dict[str, Any]:  # picklable for DataLoader workers: they reopen the file
        return {**self.__dict__, "_file": None}

    def __len__(self) -> int:
        return self._n

    def __repr__(self) -> str:
        view = "" if self.layer is None else f", layer={self.layer}, token={self.token!r}"
        return f"EmbeddingCache({str(self.path)!r}, rows={self._n}, dim={self.dim}, dtype={self.dtype.name}{view})"

    @property
    def n_rows(self) -> int:
        """Number of rows N (the committed rows of an incomplete file)."""
        return self._n

    @property
    def dim(self) -> int:
        """Embedding dimension D."""
        return int(self._h5()[self._emb].shape[1])

    @property
    def dtype(self) -> np.dtype:
        """Stored dtype of ``/embeddings`` (float16 or float32)."""
        return self._h5()[self._emb].dtype

    @property
    def attrs(self) -> dict[str, Any]:
        """Root attributes as Python values (JSON attributes left as strings)."""
        return {k: _decode(v) for k, v in self._h5().attrs.items()}

    @property
    def provenance(self) -> Provenance:
        """How the embeddings were made."""
        return Provenance._from_file(self._h5())

    @property
    def ids(self) -> np.ndarray:
        """Row ids, object array of str, (N,)."""
        if self._ids is None:
            with self._reading():
                self._ids = self._h5()["ids"].asstr()[: self._n]
        return self._ids

    def labels(self, rank: Rank | str | int) -> np.ndarray:
        """Labels at ``rank``, object array of str, (N,); "" where unknown."""
        name = _rank_name(rank)
        if name not in self._labels:
            f = self._h5()
            key = f"taxonomy/{name}"
            with self._reading():
                self._labels[name] = _read_labels(f[key], self._n) if key in f else np.full(self._n, "", dtype=object)
        return self._labels[name]

    def taxonomy_frame(self) -> Any:
        """pandas.DataFrame (N rows) with columns ``id`` and the seven rank names."""
        import pandas as pd

        return pd.DataFrame({"id": self.ids, **{r: self.labels(r) for r in RANK_NAMES}})

    def failed(self) -> Any:
        """pandas.DataFrame with columns ``id`` and ``reason``, one row per input that failed."""
        import pandas as pd

        f = self._h5()
        if "failed" not in f:
            return pd.DataFrame({"id": [], "reason": []}, dtype=object)
        n = int(f.attrs.get("failed_committed", f["failed/ids"].shape[0]))
        with self._reading():
            return pd.DataFrame({"id": f["failed/ids"].asstr()[:n], "reason": f["failed/reasons"].asstr()[:n]})

    def metadata_columns(self) -> list[tuple[str, str]]:
        """``(column, dtype)`` of the row metadata, in column order; ``[]`` when the cache keeps none."""
        f = self._h5()
        if _META not in f:
            return []
        with self._reading():
            meta = f[_META]
            order = json.loads(_decode(meta.attrs.get("order", "[]"))) or sorted(meta)
            return [(str(_decode(meta[n].attrs.get("column", n))), str(_decode(meta[n].attrs.get("dtype", "str"))))
                    for n in order]

    def metadata(self, columns: Sequence[str] | None = None) -> Any:
        """Row metadata as a pandas DataFrame, row ``i`` = cache row ``i`` (a 0..N-1 index), dtypes restored.

        Parameters
        ----------
        columns : sequence of str, optional
            Only these columns (by name); all by default.

        Returns
        -------
        pandas.DataFrame
            ``(N, n_columns)``; no columns when the cache keeps no metadata. Missing values are NaN
            (float), NA (nullable int/bool) or NaN in text columns, as in the table imported.

        Raises
        ------
        InputError
            A requested column is not kept in the cache (the message lists those that are).
        """
        import pandas as pd

        f = self._h5()
        kept = self.metadata_columns()
        names = [c for c, _ in kept]
        if columns is not None:
            columns = [columns] if isinstance(columns, str) else list(columns)
            unknown = [c for c in columns if c not in names]
            if unknown:
                raise InputError(f"{self.path} keeps no metadata column {format_list(map(repr, unknown))}; it keeps: "
                                 f"{format_list(names) if names else 'none'}.")
        wanted = names if columns is None else columns
        out = {}
        with self._reading():
            for column in wanted:
                name = _meta_name(column)
                ds = f[_META][name]
                values = ds.asstr()[: self._n] if h5py.check_string_dtype(ds.dtype) else ds[: self._n]
                mask = f[_META_MISSING][name][: self._n] if _META_MISSING in f and name in f[_META_MISSING] else None
                out[column] = _decode_column(np.asarray(values), mask, str(_decode(ds.attrs.get("dtype", "str"))))
        return pd.DataFrame(out, index=pd.RangeIndex(self._n)) if out else pd.DataFrame(index=pd.RangeIndex(self._n))

    def text_groups(self) -> list[str]:
        """Names of the text-embedding groups under ``/text``, nested names included (``"species/taxon"``), sorted."""
        f = self._h5()
        if "text" not in f or self.layer is not None:  # text lives in the final embedding space, not a layer's
            return []
        names: list[str] = []
        f["text"].visititems(lambda name, obj: names.append(name) if isinstance(obj, h5py.Group) and "embeddings" in obj else None)
        return sorted(names)

    def read_text_group(self, name: str) -> tuple[np.ndarray, np.ndarray, dict[str, Any]]:
        """Labels (T,), embeddings (T, D') as float32 and attrs of ``/text/<name>``."""
        if self.layer is not None:
            raise InputError(f"Text embeddings live in the final embedding space of {self.path}, not in layer "
                             f"{self.layer}: run text probes without --layer.")
        return _read_text_group(self._h5(), name)

    def _rows(self, rows: Any) -> slice | np.ndarray:
        n = self._n
        if rows is None:
            return slice(0, n)
        if isinstance(rows, slice):
            start, stop, step = rows.indices(n)
            return slice(start, max(start, stop)) if step == 1 else np.arange(start, stop, step)
        idx = np.asarray(rows)
        if idx.dtype == bool:
            if idx.shape != (n,):
                raise InputError(f"A boolean 'rows' mask must have shape ({n},). Got shape {idx.shape} instead.")
            return np.flatnonzero(idx)
        if idx.ndim == 1 and idx.size == 0:
            return np.empty(0, dtype=np.int64)
        if idx.ndim != 1 or not np.issubdtype(idx.dtype, np.integer):
            raise InputError(f"The 'rows' parameter must be None, a slice, a boolean mask ({n},) or 1-D integer "
                             f"indices. Got {idx.dtype} of shape {idx.shape} instead.")
        bad = idx[(idx < -n) | (idx >= n)]
        if bad.size:
            raise InputError(f"Row indices out of range for a cache of {n} rows: {format_list(bad.tolist())}.")
        return np.where(idx < 0, idx + n, idx).astype(np.int64)

    def _gather(self, idx: np.ndarray, dtype: Any, normalize: bool) -> np.ndarray:
        """Rows ``idx`` in order, read as sorted contiguous blocks (scattered h5py reads are slow), each block
        cast (and normalised) on its own: only the output is held in full, never the stored array beside it."""
        ds = self._h5()[self._emb]
        uniq, inverse = np.unique(idx, return_inverse=True)
        target = ds.dtype if dtype is None else np.dtype(dtype)
        out = np.empty((uniq.size, ds.shape[1]), dtype=target)
        gap = ds.chunks[0] if ds.chunks else CHUNK_ROWS  # read through gaps shorter than a chunk
        span = max(gap, _MAX_BLOCK_BYTES // max(1, ds.shape[1] * ds.dtype.itemsize))
        breaks = np.flatnonzero(np.diff(uniq) > gap) + 1
        bounds = np.concatenate([[0], breaks, [uniq.size]])
        for a, b in zip(bounds[:-1].tolist(), bounds[1:].tolist()):
            while a < b:
                lo = int(uniq[a])
                e = a + int(np.searchsorted(uniq[a:b], lo + span))
                out[a:e] = _finish(ds[lo:int(uniq[e - 1]) + 1][uniq[a:e] - lo], dtype, normalize)
                a = e
        inverse = inverse.reshape(-1)
        if uniq.size == inverse.size and (inverse == np.arange(inverse.size)).all():
            return out  # sorted, no repeats: no reordered copy
        return out[inverse]

    def read(self, rows: Any = None, *, dtype: Any = np.float32, normalize: bool = False) -> np.ndarray:
        """Embeddings of ``rows``, (k, D).

        Read in blocks of at most 64 MB of stored values, each cast (and normalised) on its own, so a
        float16 cache read as float32 holds only the float32 result, not the float16 array beside it.

        Parameters
        ----------
        rows : None, slice, bool array (N,) or int array (k,)
            None for all rows; integer indices in any order, with repeats and negative values allowed.
        dtype : numpy dtype or None
            Output dtype (float16 is widened to float32 by default); None keeps the stored dtype.
        normalize : bool
            L2-normalise each row (computed in float32, or float64 for a float64 output); all-zero rows
            stay zero.
        """
        sel = self._rows(rows)
        with self._reading():
            if not isinstance(sel, slice):
                return self._gather(sel, dtype, normalize)
            ds = self._h5()[self._emb]
            step = max(1, _MAX_BLOCK_BYTES // max(1, ds.shape[1] * ds.dtype.itemsize))
            target = ds.dtype if dtype is None else np.dtype(dtype)
            out = np.empty((sel.stop - sel.start, ds.shape[1]), dtype=target)
            for a in range(sel.start, sel.stop, step):
                b = min(sel.stop, a + step)
                out[a - sel.start:b - sel.start] = _finish(ds[a:b], dtype, normalize)
        return out

    def iter_blocks(self, block_rows: int = 4096, *, dtype: Any = np.float32,
                    normalize: bool = False) -> Iterator[tuple[slice, np.ndarray]]:
        """Yield ``(rows, embeddings)`` for consecutive blocks: a slice and its (b, D) array."""
        if isinstance(block_rows, bool) or not isinstance(block_rows, (int, np.integer)) or block_rows < 1:
            raise InputError(f"The 'block_rows' parameter must be a positive int. Got {block_rows!r} instead.")
        ds = self._h5()[self._emb]
        for start in range(0, self._n, int(block_rows)):
            rows = slice(start, min(self._n, start + int(block_rows)))
            with self._reading():
                data = ds[rows]
            yield rows, _finish(data, dtype, normalize)

    def taxonomy(self) -> Taxonomy:
        """The :class:`~latent.taxonomy.Taxonomy` of the rows (row ``i`` is cache row ``i``), built once.

        Conflicting lineages (a name with two parents in a kingdom) are logged, not raised: the cache
        holds what was written.
        """
        if self._taxonomy is None:
            self._taxonomy = Taxonomy.from_table(self.taxonomy_frame(), on_conflict="warn")
        return self._taxonomy

    def select(self, rank: Rank | str | int | None = None, name: str | Sequence[str] | None = None, *,
               lineage: Sequence[str] | None = None, **rank_equals: str) -> np.ndarray:
        """Sorted row indices (k,) of one clade, or of rows whose labels equal the given names.

        * ``select(rank="class", name="Aves")``: the rows of the clade, identified through the
          taxonomy: a homonym name (two genera *Morus*) raises with the candidate lineages; give one
          as ``name="Animalia;Chordata;Aves;Suliformes;Sulidae;Morus"`` or a sequence.
        * ``select(lineage=["Animalia", "Chordata", "Aves"])``: the clade named by its lineage,
          kingdom down.
        * ``select(family="Alcidae", kingdom="Animalia")``: exact label matches, combined with "and".
        """
        if (rank is None) != (name is None):
            raise InputError("select needs rank= and name= together (e.g. rank='class', name='Aves').")
        unknown = [k for k in rank_equals if k not in RANK_NAMES]
        if unknown:
            raise InputError(f"select got unknown keywords {format_list(unknown)}; use rank names "
                             f"({', '.join(RANK_NAMES)}), rank= and name=, or lineage=.")
        mask = np.ones(self._n, dtype=bool)
        if lineage is not None:
            if isinstance(lineage, str) or not 1 <= len(lineage) <= len(RANK_NAMES):
                raise InputError(f"The 'lineage' parameter of select must be a sequence of 1 to 7 names from "
                                 f"kingdom down. Got {lineage!r} instead.")
            rank, name = len(lineage) - 1, list(lineage)
        if rank is not None:
            mask &= self.taxonomy().clade_mask(rank, name)
        elif not rank_equals:
            raise InputError("select needs at least one condition, e.g. select(family='Alcidae').")
        for rank_name, value in rank_equals.items():
            if not isinstance(value, str):
                raise InputError(f"select compares labels with strings. Got {rank_name}={value!r} instead.")
            mask &= self.labels(rank_name) == value
        return np.flatnonzero(mask)

    def summary(self) -> dict[str, Any]:
        """Rows, dim, dtype, provenance, completeness, taxa per rank, unlabelled rows, failures and metadata.

        ``metadata`` lists the kept row-metadata columns: ``column``, ``dtype``, ``distinct`` (number of
        distinct values) and ``missing`` (rows without a value).

        ``taxa[rank]`` counts distinct non-empty labels at ``rank`` by their full lineage from
        kingdom down, so homonyms in different clades count separately.
        """
        tax = self.taxonomy()
        taxa = {r.label: tax.n_taxa(r) for r in Rank}
        meta = self.metadata()
        metadata = [{"column": str(c), "dtype": kind, "distinct": int(meta[c].nunique(dropna=True)),
                     "missing": int(meta[c].isna().sum())} for c, kind in self.metadata_columns()]
        attrs, prov = self.attrs, self.provenance
        return {"path": str(self.path), "rows": self._n, "dim": self.dim, "dtype": self.dtype.name,
                "complete": self.complete, "created": attrs.get("created", ""),
                "format_version": attrs["format_version"], "latent_version": attrs.get("latent_version", ""),
                "model": prov.model, "pretrained": prov.pretrained, "preprocess": prov.preprocess,
                "normalized": prov.normalized, "source": prov.source, "extra": prov.extra,
                "taxa": taxa, "unlabelled": int((self.labels("species") == "").sum()),
                "failed": len(self.failed()), "text_groups": self.text_groups(), "metadata": metadata}


def _check_virtual_sources(f: h5py.File, path: Path) -> None:
    """Refuse a virtual cache (``latent embed --engine ray``) whose shard files are gone: HDF5 would read
    their rows as zeros and empty ids without a word."""
    missing: set[str] = set()
    for ds in (f[name] for name in ("embeddings", "ids", "failed/ids") if name in f):
        if ds.is_virtual:
            for source in ds.virtual_sources():
                name = source.file_name
                if name != "." and not (Path(name) if os.path.isabs(name) else path.parent / name).is_file():
                    missing.add(name)
    if missing:
        raise CacheError(f"{path} is a virtual cache over shard files, and {len(missing)} of them are missing "
                         f"({format_list(sorted(missing), limit=3)}); move the cache and its .shards folder together, "
                         f"or embed again.")


def _finish(data: np.ndarray, dtype: Any, normalize: bool) -> np.ndarray:
    target = data.dtype if dtype is None else np.dtype(dtype)
    if normalize:
        data = data.astype(np.float64 if target == np.float64 else np.float32)
        norms = np.linalg.norm(data, axis=1, keepdims=True)
        np.divide(data, norms, out=data, where=norms > 0)
    return data.astype(target, copy=False)


#: Rows of a label dataset decoded at once (:func:`_read_labels`).
LABEL_BLOCK_ROWS = 1 << 16


def _read_labels(ds: Any, n: int) -> np.ndarray:
    """The first ``n`` labels of a string dataset, ``(n,)`` object array of str, read in blocks.

    Rows with the same label share one str object (a million images of 10,000 species hold 10,000 names,
    not a million): each block is decoded, reduced to its distinct labels, and mapped to codes.
    """
    index: dict[str, int] = {}
    codes = np.empty(n, dtype=np.int64)
    strings = ds.asstr()
    for a in range(0, n, LABEL_BLOCK_ROWS):
        b = min(n, a + LABEL_BLOCK_ROWS)
        distinct, inverse = np.unique(np.asarray(strings[a:b], dtype=object), return_inverse=True)
        local = np.fromiter((index.setdefault(v, len(index)) for v in distinct), dtype=np.int64, count=len(distinct))
        codes[a:b] = local[inverse.reshape(-1)]
    names = np.empty(len(index), dtype=object)
    names[:] = list(index)
    return names[codes]


def open_cache(path: str | os.PathLike, *, allow_incomplete: bool = False, layer: int | None = None,
               token: str = "class") -> EmbeddingCache:
    """Open the cache at ``path`` for reading (also a context manager).

    With ``layer`` (a block the cache holds, see :attr:`EmbeddingCache.layers`), :meth:`~EmbeddingCache.read`,
    :meth:`~EmbeddingCache.iter_blocks`, ``dim`` and ``dtype`` are those of ``/layers/<layer>/<token>``
    (``token`` "class" or "patch_mean"); ids, taxonomy and metadata are the same rows, and there are no
    text groups (text lives in the final space).

    Raises
    ------
    CacheError
        No cache (or only an interrupted write, unless ``allow_incomplete``), an incomplete file,
        a file that is not a latent cache, or a newer format.
    """
    return EmbeddingCache(path, allow_incomplete=allow_incomplete, layer=layer, token=token)


def block_ranges(values: Sequence[int]) -> str:
    """``[1, 2, 3, 5]`` -> ``"1-3, 5"``."""
    out: list[str] = []
    for v in sorted(values):
        if out and out[-1].split("-")[-1] == str(v - 1):
            out[-1] = f"{out[-1].split('-')[0]}-{v}"
        else:
            out.append(str(v))
    return ", ".join(out)
