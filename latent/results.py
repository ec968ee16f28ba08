"""The one long results format every table of latent shares.

Every evaluation, probe and null writes rows of ``rank, metric, value, ci_low, ci_high, n`` (plus
optional descriptive columns such as ``method``, ``model``, ``null_mean``, ``p_value``), so tables from
different analyses and models concatenate and every figure reads the same shape. ``rank`` is a rank
name (``"species"``) or ``"all"`` for whole-hierarchy numbers; ``n`` is the number of samples (images,
pairs, species, ...) behind the value; ``ci_low``/``ci_high`` are NaN where no interval applies.

A results folder (``latent evaluate``/``latent probe`` ``--out``, or ``.save(dir)`` of the in-memory
results) holds the results of one source: :func:`check_output` refuses a folder whose ``run.json`` says
it holds results of another cache (another resolved path, or the same path now holding another model's
embeddings), of other in-memory data (another content hash) or of another command, unless ``force``.
The same source re-run replaces its results. :func:`begin_output` / :func:`finish_output` write a folder
so that ``metrics.csv`` exists only when the run is complete: the old ``metrics.csv`` is removed first,
``run.json`` comes next to last and ``metrics.csv`` last (both atomically); files the previous run listed
in its ``run.json`` and this one did not rewrite are removed.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import pandas as pd

from latent.errors import CacheError, InputError

__all__ = ["COLUMNS", "metric_row", "results_frame", "write_results", "read_results", "jsonable",
           "describe_source", "check_output", "begin_output", "finish_output", "write_json"]

COLUMNS = ("rank", "metric", "value", "ci_low", "ci_high", "n")


def metric_row(
    rank: str,
    metric: str,
    value: float,
    ci: "tuple[float, float] | None" = None,
    n: int = 0,
    **extra: Any,
) -> dict[str, Any]:
    """One row of the long format (``ci`` is ``(low, high)`` or None)."""
    low, high = (math.nan, math.nan) if ci is None else (float(ci[0]), float(ci[1]))
    return {"rank": str(rank), "metric": str(metric), "value": float(value), "ci_low": low, "ci_high": high,
            "n": int(n), **extra}


def results_frame(rows: "Iterable[Mapping[str, Any]] | pd.DataFrame", **constant: Any) -> pd.DataFrame:
    """A DataFrame of rows in the long format: the six columns first, extra columns after.

    ``constant`` adds columns with one value for every row (e.g. ``method="linear"``).
    """
    frame = rows.copy() if isinstance(rows, pd.DataFrame) else pd.DataFrame.from_records(list(rows))
    for column in COLUMNS:
        if column not in frame.columns:
            frame[column] = math.nan if column in ("value", "ci_low", "ci_high") else ("" if column in ("rank", "metric") else 0)
    for key, value in constant.items():
        frame[key] = value
    extra = [c for c in frame.columns if c not in COLUMNS]
    frame = frame[list(COLUMNS) + extra]
    return frame.astype({"rank": str, "metric": str, "value": float, "ci_low": float, "ci_high": float, "n": int})


def write_results(frame: pd.DataFrame, path: "str | os.PathLike[str]") -> Path:
    """Write a results table as CSV (written to a temporary name, then renamed: never half-written)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    results_frame(frame).to_csv(tmp, index=False)
    os.replace(tmp, path)
    return path


def read_results(path: "str | os.PathLike[str]") -> pd.DataFrame:
    """Read a results CSV back in the long format."""
    return results_frame(pd.read_csv(path, keep_default_na=False, na_values=[""]))


def jsonable(value: Any) -> Any:
    """``value`` with numpy scalars/arrays, tuples and odd keys made JSON-serialisable (for run.json)."""
    if isinstance(value, dict):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [jsonable(v) for v in value]
    if hasattr(value, "tolist") and callable(value.tolist):  # numpy arrays and scalars
        return value.tolist()
    if isinstance(value, (str, int, float, bool)) or value is None:
        return value
    return str(value)


def describe_source(run: Mapping[str, Any]) -> str:
    """Where a run's results came from, in words: the cache path (and model), or the in-memory data."""
    if run.get("cache"):
        model = run.get("model")
        return f"{run['cache']}" + (f" (model {model})" if model else "")
    data = run.get("data") or {}
    if data:
        return (f"in-memory data ({data.get('n')} x {data.get('dim')}, sha256 "
                f"{str(data.get('sha256', ''))[:12]})")
    return "an unknown source"


def _as_json(value: Any) -> Any:
    """``value`` as it reads back from ``run.json`` (tuples become lists, odd values strings)."""
    return json.loads(json.dumps(value, sort_keys=True, default=str))


def _same_source(old: Mapping[str, Any], new: Mapping[str, Any]) -> bool:
    if old.get("command") != new.get("command"):
        return False
    if old.get("cache") or new.get("cache"):
        if not (old.get("cache") and new.get("cache")):
            return False
        if os.path.realpath(str(old["cache"])) != os.path.realpath(str(new["cache"])):
            return False
        # the same path now holding another model's embeddings is another cache
        return all(_as_json(old.get(k)) == _as_json(new.get(k)) for k in ("model", "pretrained", "preprocess")
                   if k in old)
    return (old.get("data") or {}).get("sha256") == (new.get("data") or {}).get("sha256")


def _read_run(out: Path) -> "dict[str, Any] | None":
    path = out / "run.json"
    if not path.exists():
        return None
    try:
        run = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise CacheError(f"Cannot read {path} ({e}): cannot tell whose results {out} holds; "
                         f"use another --out or --force to replace them.") from e
    if not isinstance(run, dict):
        raise CacheError(f"{path} is not a latent run record: cannot tell whose results {out} holds; "
                         f"use another --out or --force to replace them.")
    return run


def check_output(out: "str | os.PathLike[str]", run: Mapping[str, Any], *, force: bool = False) -> Path:
    """Refuse to write the results ``run`` describes into a folder holding another source's results.

    Parameters
    ----------
    out
        The results folder (need not exist).
    run
        The new ``run.json`` record (at least ``command`` and ``cache``, or ``data`` for in-memory data).
    force
        Replace whatever the folder holds.

    Returns
    -------
    pathlib.Path
        ``out``.

    Raises
    ------
    InputError
        ``out`` exists and is not a folder.
    CacheError
        ``out/run.json`` records results of another cache, other in-memory data or another command (or
        cannot be read), and not ``force``. Nothing is written.
    """
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise InputError(f"The output folder {out} is a file; give a folder path with --out.")
    if force or not out.is_dir():
        return out
    old = _read_run(out)
    if old is not None and not _same_source(old, run):
        what = describe_source(old)
        if old.get("command") and old.get("command") != run.get("command"):
            what = f"`latent {old['command']}` results of {what}"
            raise CacheError(f"{out} holds {what}; use another --out or --force to replace them.")
        raise CacheError(f"{out} holds results of {what}; use another --out or --force to replace them.")
    return out


def begin_output(out: "str | os.PathLike[str]", run: Mapping[str, Any], *, force: bool = False) -> list[str]:
    """Check ``out`` (:func:`check_output`), create it and remove its ``metrics.csv``.

    Returns
    -------
    list of str
        The file names the previous run listed in its ``run.json`` (``files``), for :func:`finish_output`.
    """
    out = check_output(out, run, force=force)
    out.mkdir(parents=True, exist_ok=True)
    try:
        old = _read_run(out) or {}
    except CacheError:  # only reached with force
        old = {}
    listed = old.get("files", [])
    previous = [f for f in (listed if isinstance(listed, list) else [])
                if isinstance(f, str) and f not in ("", ".", "..") and f == Path(f).name]
    (out / "metrics.csv").unlink(missing_ok=True)
    return previous


def write_json(value: Any, path: "str | os.PathLike[str]") -> Path:
    """Write JSON to a temporary name, then rename (never half-written)."""
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "w", encoding="utf-8") as handle:
        json.dump(value, handle, indent=2, sort_keys=True, default=str)
    os.replace(tmp, path)
    return path


def finish_output(out: "str | os.PathLike[str]", run: Mapping[str, Any], metrics: pd.DataFrame,
                  files: list[Path], previous: "Iterable[str]" = ()) -> list[Path]:
    """Write ``run.json`` then ``metrics.csv`` (last: it marks a complete run); remove stale files.

    Parameters
    ----------
    out
        The folder, prepared by :func:`begin_output`.
    run
        The run record (``files`` is added: the names of every file of the run).
    metrics
        The long results table.
    files
        Files already written into ``out`` by this run.
    previous
        Files of the previous run (from :func:`begin_output`): those not rewritten are removed.

    Returns
    -------
    list of pathlib.Path
        ``metrics.csv``, ``files``, ``run.json``.
    """
    out = Path(out)
    names = ["metrics.csv", *[Path(f).name for f in files], "run.json"]
    write_json({**run, "files": names}, out / "run.json")
    written = [write_results(metrics, out / "metrics.csv"), *files, out / "run.json"]
    for name in previous:
        stale = out / name
        if name not in names and stale.is_file() and not stale.is_symlink():
            stale.unlink()
    return written
