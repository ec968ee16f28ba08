"""Importing embeddings made elsewhere (numpy, tables, pybioclip JSON) into an embedding cache.

Two ways in:

* **A self-describing table** (Parquet, CSV/TSV, JSON list of records, JSON lines) that holds the
  embeddings as a list column, the ids and the rank columns, as emb-explorer's parquet files
  (``uuid``, ``emb``, ``kingdom`` .. ``species``, anything else) and the TreeOfLife-200M samples do:
  ``latent import table.parquet --out cache.h5`` and nothing else. The embedding column is the one
  named ``emb``, ``embedding``, ``embeddings``, ``vector`` or ``features`` (or the only list column;
  ``--embedding-column`` to choose), the ids come from ``uuid``, ``id`` or ``image_id`` (``--id-column``
  to choose), the ranks from the rank columns (:func:`latent.taxonomy.resolve_rank_columns`), and every
  other column is kept in the cache as row metadata (``EmbeddingCache.metadata()``) with its dtype.
  In CSV/TSV every value is text, so their metadata columns are kept as text; a CSV embedding cell
  is a list of numbers such as ``[0.1, 0.2]`` or ``0.1 0.2``.
* **Embeddings plus a metadata table** (``--metadata``, row by row, or by id for pybioclip's
  ``bioclip embed`` JSON ``{"model": ..., "embeddings": {path: [floats]}}``), optionally joined to a
  taxonomy table (``--taxonomy``, ``--join-on``). A ``.npy``/``.npz`` file has no ids of its own and
  needs ``--metadata`` and ``--id-column``. pybioclip JSON imports alone too (ids from its keys,
  every row unlabelled).

Which column was used for what is logged and returned in :class:`ImportReport` (``columns``).
Everything is read and checked before anything is written: on bad input nothing reaches the disk.
"""

from __future__ import annotations

import json
import logging
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from latent.errors import InputError, TaxonomyError, format_list
from latent.ranks import RANK_NAMES, RANKS
from latent.tables import read_table
from latent.taxonomy import GENUS_MISMATCH_POLICIES, Taxonomy, lineages_from_table, resolve_rank_columns

__all__ = ["LoadedEmbeddings", "ImportReport", "load_embeddings", "import_embeddings", "join_taxonomy", "parse_join",
           "EMBEDDING_COLUMNS", "ID_COLUMNS"]

log = logging.getLogger(__name__)

TABLE_SUFFIXES = (".parquet", ".pq", ".csv", ".tsv", ".tab", ".json", ".jsonl")
EMBEDDING_SUFFIXES = (".npy", ".npz", *TABLE_SUFFIXES)
#: Names of the embedding column of a table, tried in this order (any case).
EMBEDDING_COLUMNS = ("emb", "embedding", "embeddings", "vector", "features")
#: Names of the id column of a self-describing table, tried in this order (any case).
ID_COLUMNS = ("uuid", "id", "image_id")
_ARRAY_KEYS = ("embeddings", "embedding", "features", "x")
_BLOCK_ROWS = 8192


@dataclass(frozen=True)
class LoadedEmbeddings:
    """Embeddings read from a file: ``array`` ``(N, D)``, optional ``ids`` ``(N,)`` and the model name.

    For a table, ``table`` holds its other columns (row ``i`` = embedding row ``i``) and
    ``embedding_column`` the column the vectors came from.
    """

    array: np.ndarray
    ids: "np.ndarray | None"
    model: "str | None"
    path: Path
    table: "pd.DataFrame | None" = None
    embedding_column: "str | None" = None


@dataclass(frozen=True)
class ImportReport:
    """What an import wrote: rows, dimension, unlabelled rows, the output path and which column did what.

    ``columns`` maps ``"embeddings"``, ``"ids"``, ``"ranks"``, ``"metadata"`` and ``"not kept"`` to
    what was used (see :meth:`describe`).
    """

    path: Path
    rows: int
    dim: int
    unlabelled: int
    normalized: bool
    taxonomy: Taxonomy
    columns: dict = field(default_factory=dict)

    def describe(self) -> str:
        """One line: ``embeddings: emb (768-d); ids: uuid; ranks: kingdom..species; metadata kept: ...``."""
        c = self.columns
        parts = [f"embeddings: {c.get('embeddings', '?')} ({self.dim}-d)", f"ids: {c.get('ids', '?')}",
                 f"ranks: {c.get('ranks', 'none')}",
                 f"metadata kept: {format_list(c['metadata'], limit=30) if c.get('metadata') else 'none'}"]
        return "; ".join(parts)


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


def _parse_vector(value: object) -> object:
    """A table cell as a vector: lists and arrays as they are; text such as ``"[0.1, 0.2]"`` parsed."""
    if isinstance(value, str):
        parts = value.strip().strip("[]()").replace(",", " ").split()
        try:
            return np.array(parts, dtype=np.float64)
        except ValueError:
            return "not numbers"
    if isinstance(value, (list, tuple)):
        return np.asarray(value, dtype=object) if any(isinstance(v, str) for v in value) else np.asarray(value)
    return value


def _table_column(frame: pd.DataFrame, requested: "str | None", names: tuple, *, role: str, option: str,
                  what: str, list_only: bool = False) -> "str | None":
    """The column of ``frame`` for ``role``: ``requested``, else the one of ``names`` present (any case)."""
    if requested is not None:
        return _find_column(frame, requested, what=what)
    lowered = {}
    for c in frame.columns:
        lowered.setdefault(str(c).strip().lower(), c)
    found = [lowered[n] for n in names if n in lowered]
    if role == "embeddings" and len(found) > 1:
        raise InputError(f"{what} has several embedding columns ({format_list(map(str, found))}); choose one with "
                         f"{option} NAME.")
    if found:
        return found[0]
    if list_only:
        vectors = [c for c in frame.columns
                   if len(frame) and isinstance(frame[c].iloc[0], (list, tuple, np.ndarray))]
        if len(vectors) == 1:
            return vectors[0]
    return None


def _table_embeddings(frame: pd.DataFrame, column: "str | None", what: str) -> tuple[np.ndarray, str]:
    """The ``(N, D)`` embeddings of a table and the column they came from."""
    name = _table_column(frame, column, EMBEDDING_COLUMNS, role="embeddings", option="--embedding-column",
                         what=what, list_only=True)
    if name is None:
        raise InputError(
            f"{what} has no embedding column: name the column of vectors one of {', '.join(EMBEDDING_COLUMNS)}, "
            f"or give --embedding-column NAME; columns: {format_list(map(str, frame.columns))}."
        )
    values = [_parse_vector(v) for v in frame[name].to_numpy(dtype=object)]
    text = [i for i, v in enumerate(values) if isinstance(v, str)]
    if text:
        raise InputError(f"{what}, column {str(name)!r}: rows {format_list(text, limit=10)} are not lists of numbers "
                         f"(e.g. {str(frame[name].iloc[text[0]])[:40]!r}).")
    return _stack_rows(values, f"{what}, column {str(name)!r}"), str(name)


def load_embeddings(path: "str | os.PathLike[str]", *, embedding_column: "str | None" = None) -> LoadedEmbeddings:
    """Read embeddings from ``.npy``, ``.npz``, a table (Parquet, CSV/TSV, JSON) or pybioclip JSON.

    * ``.npy``: a 2-D numeric array.
    * ``.npz``: its only array, or the one named ``embeddings``/``embedding``/``features``/``x``
      (or ``embedding_column``); an ``ids`` array, if present, gives the ids.
    * A table (``.parquet``/``.pq``, ``.csv``, ``.tsv``/``.tab``, ``.json`` list of records, ``.jsonl``):
      the column ``embedding_column``, else the one named ``emb``/``embedding``/``embeddings``/
      ``vector``/``features`` (any case), else the only list column. Its other columns are returned
      in ``table``.
    * ``.json`` holding an object: pybioclip's ``bioclip embed`` output,
      ``{"model": ..., "embeddings": {id: [floats], ...}}``; ids are the keys.

    Returns
    -------
    LoadedEmbeddings
        ``array`` is ``(N, D)`` float16 (if stored so) or float32.

    Raises
    ------
    InputError
        Missing file, unknown suffix, no (or several) embedding columns, ragged or non-numeric vectors
        (rows and column named), wrong shape.
    """
    path = Path(path)
    what = f"The embeddings file {str(path)!r}"
    if not path.is_file():
        raise InputError(f"{what} does not exist (or is not a file).")
    suffix = path.suffix.lower()
    ids = None
    model = None
    table = None
    column = None
    if suffix == ".npy":
        if embedding_column is not None:
            raise InputError(f"--embedding-column applies to tables and .npz files; {what} is a plain .npy array: "
                             f"leave it out.")
        try:
            array = np.load(path, allow_pickle=False)
        except ValueError as exc:
            raise InputError(f"{what} is not a plain numeric .npy array ({exc}).") from exc
    elif suffix == ".npz":
        with np.load(path, allow_pickle=False) as npz:
            keys = list(npz.keys())
            if embedding_column is not None and embedding_column not in keys:
                raise InputError(f"{what} has no array {embedding_column!r} (--embedding-column); arrays: "
                                 f"{format_list(keys)}.")
            key = embedding_column or next((k for k in _ARRAY_KEYS if k in keys), keys[0] if len(keys) == 1 else None)
            if key is None:
                raise InputError(f"{what} holds arrays {format_list(keys)}; name the embeddings one of {', '.join(_ARRAY_KEYS)} "
                                 f"or give --embedding-column NAME.")
            array = npz[key]
            if "ids" in keys and key != "ids":
                ids = npz["ids"].astype(str)
    elif suffix == ".json" and isinstance(payload := _read_json(path, what), dict):
        if embedding_column is not None:
            raise InputError(f"--embedding-column applies to tables; {what} is pybioclip embed JSON "
                             f"(its vectors are under \"embeddings\"): leave it out.")
        if not isinstance(payload.get("embeddings"), dict):
            raise InputError(
                f"{what} must be pybioclip's embed output: {{\"model\": ..., \"embeddings\": {{id: [floats]}}}} "
                f"(or a JSON list of records with an embedding column)."
            )
        model = payload.get("model")
        ids = np.array(list(payload["embeddings"].keys()), dtype=str)
        array = _stack_rows(list(payload["embeddings"].values()), what)
        if not len(ids):
            array = np.empty((0, 0), dtype=np.float32)
    elif suffix in TABLE_SUFFIXES:
        if suffix == ".json" and not all(isinstance(r, dict) for r in payload):
            raise InputError(f"{what} must hold a JSON list of records ([{{\"column\": value, ...}}, ...]) or "
                             f"pybioclip's embed output.")
        frame = (pd.DataFrame.from_records(payload) if suffix == ".json"
                 else read_table(path, what=f"embeddings table {str(path)!r}"))
        array, column = _table_embeddings(frame, embedding_column, what)
        table = frame.drop(columns=[c for c in frame.columns if str(c) == column])
    else:
        raise InputError(f"{what} has an unknown suffix {suffix!r}; use one of {', '.join(EMBEDDING_SUFFIXES)}.")
    array = np.asarray(array)
    if array.ndim != 2 or array.shape[0] == 0 or array.shape[1] == 0:
        raise InputError(f"{what} must hold a 2-D array (rows, dimension) with at least one row and column; got shape {array.shape}.")
    if not np.issubdtype(array.dtype, np.number) or np.issubdtype(array.dtype, np.complexfloating):
        raise InputError(f"{what} must hold real numbers; got dtype {array.dtype}.")
    if array.dtype != np.float16:
        array = array.astype(np.float32, copy=False)
    return LoadedEmbeddings(array=array, ids=ids, model=model, path=path, table=table, embedding_column=column)


def _read_json(path: Path, what: str) -> "dict | list":
    """The JSON of ``path``: an object (pybioclip embed output) or a list (a table of records)."""
    try:
        with open(path, encoding="utf-8") as handle:
            payload = json.load(handle)
    except json.JSONDecodeError as exc:
        raise InputError(f"{what} is not valid JSON ({exc}).") from exc
    except UnicodeDecodeError as exc:
        raise InputError(f"{what} is not UTF-8 text ({exc}).") from exc
    if not isinstance(payload, (dict, list)):
        raise InputError(f"{what} must hold pybioclip's embed output (an object) or a list of records; "
                         f"got a JSON {type(payload).__name__}.")
    return payload


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
    embedding_column: "str | None" = None,
    taxonomy: "str | os.PathLike[str] | pd.DataFrame | None" = None,
    join_on: "str | None" = None,
    model: "str | None" = None,
    pretrained: str = "unknown",
    force: bool = False,
    on_conflict: str = "raise",
    on_genus_mismatch: str = "warn",
) -> ImportReport:
    """Import embeddings and their labels into a new embedding cache.

    Parameters
    ----------
    embeddings
        A self-describing table (Parquet, CSV/TSV, JSON records or lines with an embedding column),
        ``.npy``, ``.npz`` or pybioclip JSON (see :func:`load_embeddings` and the module notes).
    out
        The cache to write (HDF5). An existing cache is never overwritten unless ``force``.
    metadata
        CSV, JSON (list of records) or Parquet, one row per embedding row in the same order. For
        pybioclip JSON (whose ids are its keys) rows are matched by ``id_column`` instead. Not needed
        for a self-describing table (its own columns are its metadata).
    id_column
        Column of ``metadata`` (or, without ``metadata``, of the embeddings table) holding the unique
        row ids; a table's default is its ``uuid``, ``id`` or ``image_id`` column.
    embedding_column
        Column of the embeddings table (or array of the ``.npz``) holding the vectors; by default the
        one named ``emb``, ``embedding``, ``embeddings``, ``vector`` or ``features``.
    taxonomy, join_on
        A taxonomy table and ``"META_COL=TAX_COL"``: labels are looked up by ``metadata[META_COL]``
        (or the table's own column). Without them, rank columns are read from the metadata or the
        table itself when it has them.
    model, pretrained
        Provenance of the embeddings (what made them); ``model`` defaults to the JSON's ``model`` field,
        else ``"unknown"``.
    force
        Replace an existing cache at ``out`` (or finish a replacement left by an interrupted forced import).
    on_conflict : {"raise", "warn"}
        A name with two parents in one kingdom: refuse, or warn and keep the lineages apart.
    on_genus_mismatch : {"warn", "raise"}
        A species binomial of another genus than its row's genus column (often a synonym): warn in one
        line and keep it (the lineage columns decide), or refuse.

    Every column of the metadata (or of the self-describing table) that is not the ids, the
    embeddings or a rank column used for the labels is kept in the cache as row metadata
    (``EmbeddingCache.metadata()``).

    Returns
    -------
    ImportReport
        With ``columns``: which column was used for what (also logged).

    Raises
    ------
    InputError
        ``out`` is a directory, row-count mismatch, NaN or inf (rows named), duplicate or missing ids,
        no embedding column, ragged vectors, wrong dimensions, missing columns; nothing is written.
    """
    from latent.cache import check_out_path

    if on_conflict not in ("raise", "warn"):
        raise InputError(f"The 'on_conflict' parameter of import_embeddings must be 'raise' or 'warn'. "
                         f"Got {on_conflict!r} instead.")
    if on_genus_mismatch not in GENUS_MISMATCH_POLICIES:
        raise InputError(f"The 'on_genus_mismatch' parameter of import_embeddings must be 'warn' or 'raise'. "
                         f"Got {on_genus_mismatch!r} instead.")
    check_out_path(out)  # before any work
    loaded = load_embeddings(embeddings, embedding_column=embedding_column)
    array = loaded.array
    n = array.shape[0]
    meta = None if metadata is None else read_table(metadata, what="--metadata")
    name = loaded.path.name
    columns: dict = {"embeddings": loaded.embedding_column or f"the array of {name}"}
    meta_what = "--metadata"
    id_col = None

    # ---- ids, and metadata rows aligned with the embedding rows
    if loaded.table is not None and meta is None:  # a self-describing table: its own columns are the metadata
        meta, meta_what = loaded.table, f"the table {name}"
        id_col = _table_column(meta, id_column, ID_COLUMNS, role="ids", option="--id-column", what=meta_what)
        if id_col is None:
            raise InputError(
                f"{name} has no id column (one named {', '.join(ID_COLUMNS)}): give --id-column NAME naming its "
                f"column of unique row ids; columns: {format_list(map(str, meta.columns))}."
            )
        ids = _id_strings(meta[id_col])
        columns["ids"] = str(id_col)
    elif loaded.ids is not None:
        ids = loaded.ids
        columns["ids"] = ("the keys of \"embeddings\" (pybioclip embed JSON)" if loaded.path.suffix.lower() == ".json"
                          else f"the ids array of {name}")
        if meta is not None:
            if id_column is None:
                raise InputError("With embeddings that carry their own ids (pybioclip JSON), give --id-column to match --metadata rows to them.")
            id_col = _find_column(meta, id_column, what="--metadata")
            _check_ids(meta[id_col].astype(str).to_numpy(), "--metadata")
            meta = meta.set_index(meta[id_col].astype(str)).reindex(ids).reset_index(drop=True)
    else:
        if meta is None or id_column is None:
            raise InputError(
                f"{name} has no ids of its own: give --metadata (one row per embedding, same order) "
                "and --id-column naming the id column."
            )
        if len(meta) != n:
            raise InputError(
                f"Row-count mismatch: {name} has {n} embedding rows but the metadata has {len(meta)} rows; "
                "they must correspond row by row. Nothing was written."
            )
        id_col = _find_column(meta, id_column, what="--metadata")
        ids = meta[id_col].astype(str).str.strip().to_numpy()
        columns["ids"] = f"{id_col} (--metadata)"
    ids = np.asarray(ids, dtype=object).astype(str)
    _check_ids(ids, f"Embedding ids (column {columns['ids']})" if id_col is not None else "Embedding ids")
    _check_finite(array, ids)

    # ---- labels
    rank_columns: list = []
    if taxonomy is not None:
        if join_on is None:
            raise InputError("--taxonomy needs --join-on META_COL=TAX_COL to know which metadata column to look up.")
        if meta is None:
            raise InputError("--taxonomy needs --metadata: the join key comes from a metadata column.")
        meta_col, tax_col = parse_join(join_on)
        key = _find_column(meta, meta_col, what=meta_what)
        lineages = join_taxonomy(meta[key].fillna(""), taxonomy, tax_col)
        columns["ranks"] = f"joined from --taxonomy on {key}={tax_col}"
    elif meta is not None and loaded.table is not None and meta_what != "--metadata":
        rank_columns = _self_rank_columns(meta, meta_what)
        if rank_columns:
            lineages = lineages_from_table(meta[rank_columns], what=meta_what)
            columns["ranks"] = _describe_ranks(rank_columns)
        else:
            log.warning("%s has no rank columns (kingdom..species) and no --taxonomy was given: every row is "
                        "unlabelled", name)
            lineages = np.full((n, len(RANKS)), "", dtype=object)
            columns["ranks"] = "none (every row unlabelled)"
    elif meta is not None:
        try:
            found = resolve_rank_columns(list(meta.columns), what="--metadata")
        except Exception:
            log.warning("the metadata has no rank columns and no --taxonomy was given: every row is unlabelled")
            lineages = np.full((n, len(RANKS)), "", dtype=object)
            columns["ranks"] = "none (every row unlabelled)"
        else:
            lineages = lineages_from_table(meta.fillna(""), what="--metadata")
            rank_columns = [found[r] for r in RANKS]
            columns["ranks"] = _describe_ranks(rank_columns)
    else:
        log.warning("no metadata or taxonomy given: every row is unlabelled")
        lineages = np.full((n, len(RANKS)), "", dtype=object)
        columns["ranks"] = "none (every row unlabelled)"
    tax = Taxonomy(lineages, on_conflict=on_conflict, what=f"taxonomy of {name}",
                   on_genus_mismatch=on_genus_mismatch)
    unlabelled = int((~tax.labelled("species")).sum())
    if unlabelled and taxonomy is None:  # (a join already warned about its unmatched rows)
        log.warning("%d of %d rows have no species label: kept, unlabelled", unlabelled, n)

    # ---- row metadata: every other column
    kept = None
    if meta is not None:
        drop = {str(c) for c in (id_col, *rank_columns) if c is not None}
        kept = meta[[c for c in meta.columns if str(c) not in drop]].reset_index(drop=True)
        not_kept = _unstorable_columns(kept)
        if not_kept:
            log.warning("%s: columns %s hold lists or other non-scalar values: not kept as metadata", name,
                        format_list(map(repr, not_kept)))
            kept = kept.drop(columns=not_kept)
            columns["not kept"] = [str(c) for c in not_kept]
        columns["metadata"] = [str(c) for c in kept.columns]

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
            **({"columns": {k: v for k, v in columns.items() if k != "metadata"}} if loaded.table is not None else {}),
        },
    )
    labels = {name_: tax.labels(rank) for rank, name_ in zip(RANKS, RANK_NAMES)}
    with CacheWriter.open(out, provenance, force=force) as writer:
        for start in range(0, n, _BLOCK_ROWS):
            block = slice(start, min(start + _BLOCK_ROWS, n))
            writer.append(list(ids[block]), array[block], {k: v[block] for k, v in labels.items()})
        if kept is not None and len(kept.columns):
            writer.write_metadata(kept)
    report = ImportReport(path=Path(out), rows=n, dim=int(array.shape[1]), unlabelled=unlabelled,
                          normalized=normalized, taxonomy=tax, columns=columns)
    log.info("imported %d rows of dimension %d into %s (%d unlabelled); %s", n, array.shape[1], out, unlabelled,
             report.describe())
    return report


def _id_strings(values: pd.Series) -> np.ndarray:
    """Ids as stripped text; missing ids become "" (refused by :func:`_check_ids`)."""
    return np.array(["" if pd.isna(v) else str(v).strip() for v in values.to_numpy(dtype=object)], dtype=object)


def _self_rank_columns(table: pd.DataFrame, what: str) -> list:
    """The rank columns of a self-describing table, kingdom first; ``[]`` when it has none at all.

    Raises
    ------
    TaxonomyError
        Some rank columns but not all seven (the message names the missing ranks).
    """
    try:
        found = resolve_rank_columns(list(table.columns), what=what)
    except TaxonomyError as exc:
        names = {str(c).strip().lower() for c in table.columns}
        if not names & {"kingdom", "phylum", "class", "cls", "class_", "order", "family", "genus", "species"}:
            return []
        raise TaxonomyError(f"{exc} Give all seven rank columns, or look the lineages up in a taxonomy table with "
                            f"--taxonomy TABLE --join-on COLUMN=TAX_COLUMN.") from exc
    return [found[r] for r in RANKS]


def _describe_ranks(columns: list) -> str:
    names = [str(c) for c in columns]
    if names == list(RANK_NAMES):
        return "kingdom..species"
    return ", ".join(names)


def _unstorable_columns(frame: pd.DataFrame) -> list:
    """Columns holding lists, arrays, dicts or bytes (a cache keeps one scalar per row and column)."""
    out = []
    for c in frame.columns:
        if frame[c].dtype == object and frame[c].map(
                lambda v: isinstance(v, (list, tuple, dict, set, np.ndarray, bytes))).any():
            out.append(c)
    return out
