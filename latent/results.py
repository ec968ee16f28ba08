"""The one long results format every table of latent shares.

Every evaluation, probe and null writes rows of ``rank, metric, value, ci_low, ci_high, n`` (plus
optional descriptive columns such as ``method``, ``model``, ``null_mean``, ``p_value``), so tables from
different analyses and models concatenate and every figure reads the same shape. ``rank`` is a rank
name (``"species"``) or ``"all"`` for whole-hierarchy numbers; ``n`` is the number of samples (images,
pairs, species, ...) behind the value; ``ci_low``/``ci_high`` are NaN where no interval applies.
"""

from __future__ import annotations

import math
import os
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import pandas as pd

__all__ = ["COLUMNS", "metric_row", "results_frame", "write_results", "read_results", "jsonable"]

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
