"""Reading the tables users give latent (taxonomies, manifests, metadata) into pandas.

Every value is read as text, exactly as written: no column is parsed into numbers or dates and no
marker such as ``NA`` is turned into a missing value here (the taxonomy decides what is empty).
"""

from __future__ import annotations

import csv
import json
import logging
import os
from pathlib import Path

import pandas as pd

from latent.errors import InputError

__all__ = ["read_table", "TABLE_SUFFIXES"]

log = logging.getLogger(__name__)

TABLE_SUFFIXES = (".csv", ".tsv", ".tab", ".txt", ".parquet", ".pq", ".json", ".jsonl")


def read_table(source: "str | os.PathLike[str] | pd.DataFrame", *, what: str = "table") -> pd.DataFrame:
    """Read a CSV, TSV, Parquet or JSON table (or copy a DataFrame) with a fresh 0..n-1 index.

    Parameters
    ----------
    source
        A path ending in ``.csv``, ``.tsv``/``.tab``/``.txt`` (tab separated), ``.parquet``/``.pq``,
        ``.json`` (a list of records) or ``.jsonl`` (one record per line), or a DataFrame.
    what
        What the table is, for error messages (e.g. ``"--metadata"``).

    Returns
    -------
    pandas.DataFrame
        ``(n_rows, n_columns)``; text files are read with every column as ``str`` and no NA parsing.

    Raises
    ------
    InputError
        If the file is missing, its suffix is unknown, it cannot be parsed, or a column name is there
        twice (pandas would silently rename the second one).
    """
    if isinstance(source, pd.DataFrame):
        _refuse_duplicates([str(c) for c in source.columns], what)
        return source.reset_index(drop=True).copy()
    path = Path(source)
    if not path.is_file():
        raise InputError(f"The {what} file {str(path)!r} does not exist (or is not a file).")
    suffix = path.suffix.lower()
    where = what if str(path) in what else f"{what} file {str(path)!r}"
    try:
        if suffix == ".csv":
            _refuse_duplicates(_header(path, ","), where)
            frame = pd.read_csv(path, dtype=str, keep_default_na=False, na_filter=False)
        elif suffix in (".tsv", ".tab", ".txt"):
            _refuse_duplicates(_header(path, "\t"), where)
            frame = pd.read_csv(path, sep="\t", dtype=str, keep_default_na=False, na_filter=False)
        elif suffix in (".parquet", ".pq"):
            frame = pd.read_parquet(path)
        elif suffix == ".json":
            with open(path, encoding="utf-8") as handle:
                records = json.load(handle)
            if not isinstance(records, list) or not all(isinstance(r, dict) for r in records):
                raise InputError(
                    f"The {what} file {str(path)!r} must hold a JSON list of records "
                    f"([{{\"column\": value, ...}}, ...]); got a {type(records).__name__}."
                )
            frame = pd.DataFrame.from_records(records)
        elif suffix == ".jsonl":
            frame = pd.read_json(path, lines=True, dtype=False)
        else:
            raise InputError(
                f"The {what} file {str(path)!r} has an unknown suffix {suffix!r}; "
                f"use one of {', '.join(TABLE_SUFFIXES)}."
            )
    except InputError:
        raise
    except Exception as exc:  # parser errors of pandas/pyarrow/json
        raise InputError(f"Could not read the {what} file {str(path)!r}: {exc}") from exc
    if suffix not in (".csv", ".tsv", ".tab", ".txt"):
        _refuse_duplicates([str(c) for c in frame.columns], where)
    log.debug("read %s %s: %d rows, columns %s", what, path, len(frame), list(frame.columns))
    return frame.reset_index(drop=True)


def _header(path: Path, sep: str) -> list[str]:
    """The column names of a text table's first line, as written (pandas renames repeated ones)."""
    try:
        with open(path, newline="", encoding="utf-8-sig", errors="replace") as handle:
            return next(csv.reader(handle, delimiter=sep), [])
    except csv.Error:
        return []  # pandas reports what is wrong with the file


def _refuse_duplicates(columns: list[str], what: str) -> None:
    """InputError naming a column that appears twice (an empty header, pandas' "Unnamed", is allowed)."""
    seen: dict[str, int] = {}
    for i, name in enumerate(columns):
        key = name.strip()
        if not key:
            continue
        if key in seen:
            raise InputError(f"The {what} has the column {key!r} twice (columns {seen[key] + 1} and {i + 1}): "
                             f"rename or drop one, so that it is clear which one to read.")
        seen[key] = i
