"""Importing embeddings made elsewhere (numpy, parquet, pybioclip JSON) into an embedding cache.

Everything is read and checked before anything is written: on bad input nothing reaches the disk.
"""

from __future__ import annotations

import json
import logging
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from latent.errors import InputError, format_list
from latent.ranks import RANK_NAMES, RANKS
from latent.tables import read_table
from latent.taxonomy import Taxonomy, lineages_from_table, resolve_rank_columns

__all__ = ["LoadedEmbeddings", "ImportReport", "load_embeddings", "import_embeddings", "join_taxonomy", "parse_join"]

log = logging.getLogger(__name__)

EMBEDDING_SUFFIXES = (".npy", ".npz", ".parquet", ".pq", ".json")
_ARRAY_KEYS = ("embeddings", "embedding", "features", "x")
_BLOCK_ROWS = 8192


@dataclass(frozen=True)
class LoadedEmbeddings:
    """Embeddings read from a file: ``array`` ``(N, D)``, optional ``ids`` ``(N,)`` and the model name."""

    array: np.ndarray
    ids: "np.ndarray | None"
    model: "str | None"
    path: Path


@dataclass(frozen=True)
class ImportReport:
    """What an import wrote: rows, dimension, unlabelled rows and the output path."""

    path: Path
    rows: int
    dim: int
    unlabelled: int
    normalized: bool
    taxonomy: Taxonomy


def _stack_rows(values: "list | np.ndarray", what: str) -> np.ndarray:
    """Stack per-row vectors into ``(N, D)``; ragged or non-numeric rows are named in the error."""
    lengths = np.array([len(v) if v is not None and np.ndim(v) == 1 else -1 for v in values])
    if len(lengths) and (lengths != lengths[0]).any() or (lengths == -1).any():
        common = np.bincount(lengths[lengths >= 0]).argmax() if (lengths >= 0).any() else -1
        bad = np.flatnonzero(lengths != common)
        raise InputError(
            f"{what}: every row must be a vector of the same length; most have {common} values but rows "
            f"{format_list(bad)} have {format_list(lengths[bad])} (-1 = not a vector)."
        )
    try:
        return np.asarray(np.stack([np.asarray(v) for v in values]) if len(values) else np.empty((0, 0)), dtype=np.float32)
    except (TypeError, ValueError) as exc:
        raise InputError(f"{what}: the embedding values are not numbers ({exc}).") from exc


def load_embeddings(path: "str | os.PathLike[str]") -> LoadedEmbeddings:
    """Read embeddings from ``.npy``, ``.npz``, ``.parquet`` or pybioclip's ``bioclip embed`` JSON.

    * ``.npy``: a 2-D numeric array.
    * ``.npz``: its only array, or the one named ``embeddings``/``embedding``/``features``/``x``
      (an ``ids`` array, if present, gives the ids).
    * ``.parquet``: the list/array column named ``embedding(s)``/``features``, or the only one.
    * ``.json``: ``{"model": ..., "embeddings": {id: [floats], ...}}``; ids are the keys.

    Returns
    -------
    LoadedEmbeddings
        ``array`` is ``(N, D)`` float16 (if stored so) or float32.
    """
    path = Path(path)
    what = f"The embeddings file {str(path)!r}"
    if not path.is_file():
        raise InputError(f"{what} does not exist (or is not a file).")
    suffix = path.suffix.lower()
    ids = None
    model = None
    if suffix == ".npy":
        try:
            array = np.load(path, allow_pickle=False)
        except ValueError as exc:
            raise InputError(f"{what} is not a plain numeric .npy array ({exc}).") from exc
    elif suffix == ".npz":
        with np.load(path, allow_pickle=False) as npz:
            keys = list(npz.keys())
            key = next((k for k in _ARRAY_KEYS if k in keys), keys[0] if len(keys) == 1 else None)
            if key is None:
                raise InputError(f"{what} holds arrays {format_list(keys)}; name the embeddings one of {', '.join(_ARRAY_KEYS)}.")
            array = npz[key]
            if "ids" in keys and key != "ids":
                ids = npz["ids"].astype(str)
    elif suffix in (".parquet", ".pq"):
        frame = pd.read_parquet(path)
        list_columns = [c for c in frame.columns if len(frame) and isinstance(frame[c].iloc[0], (list, np.ndarray))]
        column = next((c for c in _ARRAY_KEYS if c in frame.columns), list_columns[0] if len(list_columns) == 1 else None)
        if column is None:
            raise InputError(
                f"{what} must have one list/array column (or one named {', '.join(_ARRAY_KEYS)}); "
                f"columns: {format_list(map(str, frame.columns))}."
            )
        array = _stack_rows(list(frame[column]), what)
    elif suffix == ".json":
        try:
            with open(path, encoding="utf-8") as handle:
                payload = json.load(handle)
        except json.JSONDecodeError as exc:
            raise InputError(f"{what} is not valid JSON ({exc}).") from exc
        if not isinstance(payload, dict) or not isinstance(payload.get("embeddings"), dict):
            raise InputError(
                f"{what} must be pybioclip's embed output: {{\"model\": ..., \"embeddings\": {{id: [floats]}}}}."
            )
        model = payload.get("model")
        ids = np.array(list(payload["embeddings"].keys()), dtype=str)
        array = _stack_rows(list(payload["embeddings"].values()), what)
        if not len(ids):
            array = np.empty((0, 0), dtype=np.float32)
    else:
        raise InputError(f"{what} has an unknown suffix {suffix!r}; use one of {', '.join(EMBEDDING_SUFFIXES)}.")
    array = np.asarray(array)
    if array.ndim != 2 or array.shape[0] == 0 or array.shape[1] == 0:
        raise InputError(f"{what} must hold a 2-D array (rows, dimension) with at least one row and column; got shape {array.shape}.")
    if not np.issubdtype(array.dtype, np.number) or np.issubdtype(array.dtype, np.complexfloating):
        raise InputError(f"{what} must hold real numbers; got dtype {array.dtype}.")
    if array.dtype != np.float16:
        array = array.astype(np.float32, copy=False)
    return LoadedEmbeddings(array=array, ids=ids, model=model, path=path)


def _check_finite(array: np.ndarray, ids: np.ndarray) -> None:
    bad = np.flatnonzero(~np.isfinite(array).all(axis=1))
    if len(bad):
        raise InputError(
            f"{len(bad)} embedding rows hold NaN or inf: rows {format_list(bad)} "
            f"(ids {format_list(ids[bad])}). Remove or recompute them; nothing was written."
        )


def _check_ids(ids: np.ndarray, what: str) -> None:
    empty = np.flatnonzero(ids == "")
    if len(empty):
        raise InputError(f"{what}: rows {format_list(empty)} have an empty id; every row needs one. Nothing was written.")
    series = pd.Series(ids)
    dup = series[series.duplicated(keep=False)]
    if len(dup):
        groups = dup.groupby(dup).groups
        shown = [f"{key!r} (rows {format_list(rows)})" for key, rows in list(groups.items())]
        raise InputError(f"{what}: ids must be unique; {len(groups)} are repeated: {format_list(shown, limit=10)}. Nothing was written.")


def join_taxonomy(
    keys: pd.Series, taxonomy: "str | os.PathLike[str] | pd.DataFrame", tax_column: str, *, what: str = "--taxonomy"
) -> np.ndarray:
    """Look up each key in a taxonomy table's ``tax_column``; unmatched keys get an empty lineage.

    Returns
    -------
    numpy.ndarray
        ``(len(keys), 7)`` object array of names (``""`` = unknown), kingdom first.
    """
    table = read_table(taxonomy, what=what)
    column = _find_column(table, tax_column, what=f"the {what} table")
    lineages = lineages_from_table(table, what=f"{what} table")
    index = table[column].astype(str).str.strip()
    dup = index[index.duplicated(keep=False) & (index != "")]
    if len(dup):
        raise InputError(
            f"The join column {column!r} of the {what} table must be unique; repeated values: "
            f"{format_list(sorted(set(dup)))}."
        )
    position = pd.Series(np.arange(len(index)), index=index)
    found = keys.astype(str).str.strip().map(position)
    out = np.full((len(keys), len(RANKS)), "", dtype=object)
    matched = found.notna().to_numpy()
    out[matched] = lineages[found[matched].astype(int).to_numpy()]
    if (~matched).any():
        missing = sorted(set(keys[~matched].astype(str)))
        log.warning(
            "%d rows have no row in the %s table (keys %s): kept as unlabelled",
            int((~matched).sum()), what, format_list(missing, limit=10),
        )
    return out


def _find_column(frame: pd.DataFrame, name: str, *, what: str) -> str:
    if name in frame.columns:
        return name
    lowered = {str(c).lower(): c for c in frame.columns}
    if name.lower() in lowered:
        return lowered[name.lower()]
    raise InputError(f"There is no column {name!r} in {what}; columns: {format_list(map(str, frame.columns))}.")


def parse_join(join_on: str, *, form: str = "META_COL=TAX_COL", example: str = "species=cub_class") -> tuple[str, str]:
    """Split ``"LEFT=RIGHT"`` of a ``--join-on`` option into its two column names."""
    left, sep, right = join_on.partition("=")
    if not sep or not left.strip() or not right.strip():
        raise InputError(f"The 'join_on' parameter must look like {form} (e.g. {example}). Got {join_on!r} instead.")
    return left.strip(), right.strip()


def import_embeddings(
    embeddings: "str | os.PathLike[str]",
    out: "str | os.PathLike[str]",
    *,
    metadata: "str | os.PathLike[str] | pd.DataFrame | None" = None,
    id_column: "str | None" = None,
    taxonomy: "str | os.PathLike[str] | pd.DataFrame | None" = None,
    join_on: "str | None" = None,
    model: "str | None" = None,
    pretrained: str = "unknown",
    force: bool = False,
    on_conflict: str = "raise",
) -> ImportReport:
    """Import embeddings and their labels into a new embedding cache.

    Parameters
    ----------
    embeddings
        ``.npy``, ``.npz``, ``.parquet`` or pybioclip JSON (see :func:`load_embeddings`).
    out
        The cache to write (HDF5). An existing cache is never overwritten unless ``force``.
    metadata
        CSV, JSON (list of records) or Parquet, one row per embedding row in the same order. For
        pybioclip JSON (whose ids are its keys) rows are matched by ``id_column`` instead.
    id_column
        Column of ``metadata`` holding the unique row ids (e.g. image paths).
    taxonomy, join_on
        A taxonomy table and ``"META_COL=TAX_COL"``: labels are looked up by ``metadata[META_COL]``.
        Without them, rank columns are read from ``metadata`` itself when it has them.
    model, pretrained
        Provenance of the embeddings (what made them); ``model`` defaults to the JSON's ``model`` field,
        else ``"unknown"``.
    force
        Replace an existing cache at ``out`` (or finish a replacement left by an interrupted forced import).
    on_conflict : {"raise", "warn"}
        Lineage conflicts in the labels (a name with two parents in a kingdom, a species binomial of
        another genus than its genus column): refuse, or warn and keep them as written.

    Returns
    -------
    ImportReport

    Raises
    ------
    InputError
        ``out`` is a directory, row-count mismatch, NaN or inf (rows named), duplicate ids, wrong
        dimensions, missing columns; nothing is written.
    """
    from latent.cache import check_out_path

    if on_conflict not in ("raise", "warn"):
        raise InputError(f"The 'on_conflict' parameter of import_embeddings must be 'raise' or 'warn'. "
                         f"Got {on_conflict!r} instead.")
    check_out_path(out)  # before any work
    loaded = load_embeddings(embeddings)
    array = loaded.array
    n = array.shape[0]
    meta = None if metadata is None else read_table(metadata, what="--metadata")

    # ---- ids, and metadata rows aligned with the embedding rows
    if loaded.ids is not None:
        ids = loaded.ids
        if meta is not None:
            if id_column is None:
                raise InputError("With embeddings that carry their own ids (pybioclip JSON), give --id-column to match --metadata rows to them.")
            column = _find_column(meta, id_column, what="--metadata")
            _check_ids(meta[column].astype(str).to_numpy(), "--metadata")
            meta = meta.set_index(meta[column].astype(str)).reindex(ids).reset_index(drop=True)
    else:
        if meta is None or id_column is None:
            raise InputError(
                f"{loaded.path.name} has no ids of its own: give --metadata (one row per embedding, same order) "
                "and --id-column naming the id column."
            )
        if len(meta) != n:
            raise InputError(
                f"Row-count mismatch: {loaded.path.name} has {n} embedding rows but the metadata has {len(meta)} rows; "
                "they must correspond row by row. Nothing was written."
            )
        column = _find_column(meta, id_column, what="--metadata")
        ids = meta[column].astype(str).str.strip().to_numpy()
    ids = np.asarray(ids, dtype=object).astype(str)
    _check_ids(ids, "Embedding ids")
    _check_finite(array, ids)

    # ---- labels
    if taxonomy is not None:
        if join_on is None:
            raise InputError("--taxonomy needs --join-on META_COL=TAX_COL to know which metadata column to look up.")
        if meta is None:
            raise InputError("--taxonomy needs --metadata: the join key comes from a metadata column.")
        meta_col, tax_col = parse_join(join_on)
        key = _find_column(meta, meta_col, what="--metadata")
        lineages = join_taxonomy(meta[key].fillna(""), taxonomy, tax_col)
    elif meta is not None:
        try:
            resolve_rank_columns(list(meta.columns), what="--metadata")
        except Exception:
            log.warning("the metadata has no rank columns and no --taxonomy was given: every row is unlabelled")
            lineages = np.full((n, len(RANKS)), "", dtype=object)
        else:
            lineages = lineages_from_table(meta.fillna(""), what="--metadata")
    else:
        log.warning("no metadata or taxonomy given: every row is unlabelled")
        lineages = np.full((n, len(RANKS)), "", dtype=object)
    tax = Taxonomy(lineages, on_conflict=on_conflict, what="imported taxonomy")
    unlabelled = int((~tax.labelled("species")).sum())
    if unlabelled and taxonomy is None:  # (a join already warned about its unmatched rows)
        log.warning("%d of %d rows have no species label: kept, unlabelled", unlabelled, n)

    # ---- provenance and write
    from latent.cache import CacheWriter, Provenance

    norms = np.linalg.norm(array.astype(np.float32), axis=1)
    normalized = bool(np.allclose(norms, 1.0, atol=1e-3))
    provenance = Provenance(
        model=model or loaded.model or "unknown",
        pretrained=pretrained,
        preprocess={"name": "unknown", "note": "imported embeddings; preprocessing not recorded by their maker"},
        embed_dim=int(array.shape[1]),
        normalized=normalized,
        source=str(loaded.path.resolve()),
        store_dtype="float16" if array.dtype == np.float16 else "float32",
        extra={
            "imported": True,
            "metadata": None if metadata is None or isinstance(metadata, pd.DataFrame) else str(Path(metadata).resolve()),
            "taxonomy": None if taxonomy is None or isinstance(taxonomy, pd.DataFrame) else str(Path(taxonomy).resolve()),
            "join_on": join_on,
        },
    )
    labels = {name: tax.labels(rank) for rank, name in zip(RANKS, RANK_NAMES)}
    with CacheWriter.open(out, provenance, force=force) as writer:
        for start in range(0, n, _BLOCK_ROWS):
            block = slice(start, min(start + _BLOCK_ROWS, n))
            writer.append(list(ids[block]), array[block], {k: v[block] for k, v in labels.items()})
    log.info("imported %d rows of dimension %d into %s (%d unlabelled)", n, array.shape[1], out, unlabelled)
    return ImportReport(path=Path(out), rows=n, dim=int(array.shape[1]), unlabelled=unlabelled, normalized=normalized, taxonomy=tax)
