"""Tables in and out: reading the tables users give latent, and the tables it prints on the console.

* :func:`read_table` reads taxonomies, manifests and metadata into pandas. Every value is read as text,
  exactly as written: no column is parsed into numbers or dates and no marker such as ``NA`` is turned
  into a missing value here (the taxonomy decides what is empty).
* :func:`probe_console_table` and :func:`evaluation_console_table` are what ``latent probe`` and
  ``latent evaluate`` print: every column as wide as its widest cell, metric names never cut (long ones
  wrap; :func:`metric_names` appends the qualifiers that tell two rows apart), ranks with one taxon
  marked ``trivial (one taxon)``; :func:`n_test_text` says how many test images a run has (per fold and
  the number of folds for a k-fold run, never their sum).
"""

from __future__ import annotations

import csv
import json
import logging
import os
from collections.abc import Callable
from pathlib import Path

import pandas as pd

from latent.errors import InputError

__all__ = ["format_number", "format_ci", "read_table", "read_option_csv", "TABLE_SUFFIXES", "metric_names", "format_console_table", "probe_console_table",
           "evaluation_console_table", "n_test_text", "fold_counts", "is_trivial", "TRIVIAL_MARK"]

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


def read_option_csv(path: "str | os.PathLike[str]", columns: "list[str]", *, option: str, needs: str,
                    absent: str, choose: str = "") -> pd.DataFrame:
    """A CSV given to a command-line option (``--split-file``, ``--groups``, ``--subset``), as text, with its
    required ``columns``; a one-line :class:`InputError` naming the option otherwise.

    Parameters
    ----------
    path
        The file.
    columns
        Columns it must have.
    option
        The option's name, e.g. ``"--groups"``.
    needs, absent, choose
        Message parts: what it needs (``"a 'species' column and the group column 'seen'"``), how to get one
        when the file is absent, and how to choose another column (``" (choose one with --group-column)"``).
    """
    path = Path(path)
    if not path.is_file():
        raise InputError(f"{option} {path} does not exist; {absent}")
    table = pd.read_csv(path, dtype=str, keep_default_na=False)
    if any(c not in table.columns for c in columns):
        raise InputError(f"{option} {path} needs {needs}; it has {', '.join(map(str, table.columns))}{choose}.")
    return table


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


# ---------------------------------------------------------------------------------------- console tables
#: Columns that say which variant of a metric a row is (appended to its name as ``column=value``), in order.
QUALIFIER_COLUMNS = ("group", "split", "level", "height", "method", "target", "distance", "space", "geometry", "dim", "k",
                     "clusters")
#: Columns that hold results, never used to tell two rows apart.
RESULT_COLUMNS = frozenset({
    "rank", "metric", "probe", "value", "ci_low", "ci_high", "n", "null_mean", "null_std", "z", "p_value", "p_raw",
    "effect", "effect_ci_low", "effect_ci_high", "ci_note", "note", "reason", "seconds", "std", "final_loss",
    "scale", "steps_run", "min_p", "mean_intra", "mean_inter", "n_intra", "n_inter", "chance", "C", "diameter",
    "tries", "n_used", "permutations", "model", "features", "testable", "converged", "n_species", "n_taxa",
    "n_units", "n_parents", "species_sampled", "species_total", "recovered", "clusters_found", "fold",
})
#: How a rank with one taxon (any predictor scores 1; no test possible) is marked in a console table.
TRIVIAL_MARK = "trivial (one taxon)"
#: Names longer than this wrap onto continuation lines (at spaces; a name is never cut).
NAME_WIDTH = 48


def _cell(value: object) -> str:
    """A qualifier value as text: ``""`` for missing, integers without ``.0``."""
    if value is None or (isinstance(value, float) and value != value):
        return ""
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    text = str(value)
    return "" if text.lower() == "nan" else text


def format_number(value: object, digits: int = 3) -> str:
    """A value for a report cell: ``digits`` significant digits, "-" for NaN, the text itself otherwise."""
    try:
        v = float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return str(value)
    return "-" if v != v else f"{v:.{digits}g}"


def format_ci(low: object, high: object) -> str:
    """``[low, high]`` as :func:`format_number` writes them, "-" when either end is missing."""
    return "-" if pd.isna(low) or pd.isna(high) else f"[{format_number(low)}, {format_number(high)}]"


def metric_names(metrics: pd.DataFrame, *, qualifiers: "tuple[str, ...]" = QUALIFIER_COLUMNS,
                 within: "tuple[str, ...]" = ("probe", "rank"), family: "tuple[str, ...]" = ("probe",)) -> pd.Series:
    """The name of every row: its metric and just the qualifiers that tell it from its siblings.

    Rows of one metric (and ``family``, e.g. one probe) that share ``within`` (probe and rank) are told
    apart by appending ``column=value`` for those of ``qualifiers`` (tried in order, greedily) that tell
    more of them apart (e.g. ``mean_distance level=image height=3``); one choice per metric and family, so the names of a
    metric read alike at every rank. Rows still alike get the other non-result columns in which they
    differ, and, when they differ in none, ``#1``, ``#2``, ... A name is never cut.

    Parameters
    ----------
    metrics
        ``(n_rows, n_columns)`` long-format results (``metric`` at least).
    qualifiers
        Columns that may be appended to a name, in the order they are tried.
    within
        Columns (those present) within which names must be distinct.
    family
        Columns (those present) over which one choice of qualifiers is made per metric.

    Returns
    -------
    pandas.Series
        ``(n_rows,)`` str, on ``metrics``' index.
    """
    if "metric" not in metrics.columns:
        raise InputError(f"The 'metrics' table of metric_names has no 'metric' column (columns: "
                         f"{', '.join(map(str, metrics.columns))}); pass a long-format results table.")
    names = metrics["metric"].astype(str).copy()
    inside = [c for c in within if c in metrics.columns]
    over = [c for c in family if c in metrics.columns]
    position = metrics[inside].astype(str).agg("\x1f".join, axis=1) if inside else pd.Series("", index=metrics.index)

    def clashes(rows: pd.Index, labels: pd.Series) -> int:
        return int((position[rows] + "\x1f" + labels[rows]).duplicated().sum())

    others = [c for c in metrics.columns if c not in RESULT_COLUMNS and c not in qualifiers and c not in inside]
    for _, group in metrics.groupby([*over, names], sort=False, dropna=False):
        rows = group.index
        labels = names[rows]
        for column in [*qualifiers, *others]:
            if clashes(rows, labels) == 0:
                break
            if column not in metrics.columns:
                continue
            values = group[column].map(_cell)
            candidate = labels.where(values == "", labels + " " + column + "=" + values)
            if clashes(rows, candidate) < clashes(rows, labels):
                labels = candidate
        if clashes(rows, labels):
            key = position[rows] + "\x1f" + labels
            repeated = key.duplicated(keep=False)
            order = key[repeated].groupby(key[repeated]).cumcount() + 1
            labels = labels.copy()
            labels[repeated] = labels[repeated] + " #" + order.astype(str)
        names[rows] = labels
    return names


def format_console_table(rows: "list[list[str]]", headers: "list[str]", *, align: str,
                         wrap: "dict[int, int] | None" = None, indent: str = "  ") -> list[str]:
    """Lines of a plain-text table: every column as wide as its widest cell (nothing is cut).

    Parameters
    ----------
    rows
        ``(n_rows, n_columns)`` cells as text.
    headers
        ``(n_columns,)`` column headers.
    align
        ``n_columns`` characters, ``"<"`` (left) or ``">"`` (right) per column.
    wrap
        ``{column: width}``: cells of that column longer than ``width`` wrap at spaces onto continuation
        lines (the other columns stay on the first line); a word longer than ``width`` widens the column.
    indent
        Put before every line.

    Returns
    -------
    list of str
        The header line, then one or more lines per row.
    """
    import textwrap

    if len(align) != len(headers) or set(align) - {"<", ">"}:
        raise InputError(f"The 'align' parameter of format_console_table must be {len(headers)} characters of "
                         f"'<' or '>', one per column. Got {align!r}.")
    wrap = wrap or {}
    split_rows: list[list[list[str]]] = []
    for row in rows:
        if len(row) != len(headers):
            raise InputError(f"A row of format_console_table has {len(row)} cells for {len(headers)} headers: "
                             f"{row!r}. Give one cell per header.")
        cells = []
        for i, cell in enumerate(row):
            text = str(cell)
            if i in wrap and len(text) > wrap[i]:
                cells.append(textwrap.wrap(text, wrap[i], break_long_words=False, break_on_hyphens=False) or [text])
            else:
                cells.append([text])
        split_rows.append(cells)
    widths = [max([len(h)] + [len(part) for cells in split_rows for part in cells[i]]) for i, h in enumerate(headers)]

    def line(cells: "list[str]") -> str:
        return (indent + " ".join(f"{c:{a}{w}}" for c, a, w in zip(cells, align, widths))).rstrip()

    lines = [line(list(headers))]
    for cells in split_rows:
        depth = max(len(c) for c in cells)
        for k in range(depth):
            lines.append(line([c[k] if k < len(c) else "" for c in cells]))
    return lines


def _number(value: object, spec: str) -> str:
    try:
        number = float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return ""
    return "" if number != number else format(number, spec)


def is_trivial(frame: pd.DataFrame) -> pd.Series:
    """``(n_rows,)`` bool: the row is at a rank with one taxon (``n_taxa`` or ``n_classes`` 1, or a note
    saying "one taxon at this rank" / "one candidate taxon" / "one <rank> taxon")."""
    from latent.ranks import RANK_NAMES

    at_rank = frame["rank"].astype(str).isin(RANK_NAMES) if "rank" in frame.columns else pd.Series(
        True, index=frame.index)
    one = pd.Series(False, index=frame.index)
    if "n_taxa" in frame.columns:
        one |= pd.to_numeric(frame["n_taxa"], errors="coerce").eq(1)
    texts = pd.Series("", index=frame.index)
    for column in ("note", "reason"):
        if column in frame.columns:
            texts = texts + " " + frame[column].map(lambda v: v if isinstance(v, str) else "")
    pattern = r"one taxon at this rank|one candidate taxon|\bone [a-z=]+ taxon\b"
    one |= texts.str.contains(pattern, regex=True)
    return one & at_rank


def probe_console_table(metrics: pd.DataFrame, *, indent: str = "  ", name_width: int = NAME_WIDTH) -> list[str]:
    """The console table of ``latent probe``: each statistic with its null mean and p-value.

    One line per row (a long metric name wraps onto a continuation line, never cut): probe, rank,
    the full metric name (:func:`metric_names`: no two rows alike), value, null mean, p, n, and a note
    ``trivial (one taxon)`` at ranks with one taxon.

    Parameters
    ----------
    metrics
        ``(n_rows, n_columns)`` probe results (``metrics.csv`` of ``latent probe``: ``probe, rank, metric,
        value, n`` and optionally ``null_mean, p_value, n_taxa, note, reason`` and qualifier columns).
    indent, name_width
        Put before every line; the width at which names wrap.

    Returns
    -------
    list of str
        Header line, then the rows.
    """
    missing = [c for c in ("rank", "metric", "value") if c not in metrics.columns]
    if missing:
        raise InputError(f"The 'metrics' table of probe_console_table lacks {', '.join(missing)}; pass the "
                         f"metrics.csv of latent probe.")
    m = metrics.reset_index(drop=True)
    names = metric_names(m)
    trivial = is_trivial(m)
    probe = m["probe"].map(_cell) if "probe" in m.columns else pd.Series("", index=m.index)
    rows = []
    for i in range(len(m)):
        row = m.iloc[i]
        n = row.get("n")
        rows.append([probe[i], _cell(row["rank"]), names[i], _number(row["value"], ".4g"),
                     _number(row.get("null_mean"), ".4g"), _number(row.get("p_value"), ".3g"),
                     _number(n, ",.0f"), TRIVIAL_MARK if trivial[i] else ""])
    headers = ["probe", "rank", "metric", "value", "null", "p", "n", "note"]
    if not trivial.any():
        headers, rows = headers[:-1], [r[:-1] for r in rows]
    return format_console_table(rows, headers, align="<<<>>>>" + ("<" if trivial.any() else ""),
                                wrap={2: name_width}, indent=indent)


def fold_counts(metrics: pd.DataFrame) -> "tuple[int, int, int] | None":
    """``(folds, smallest, largest)`` test images per fold of a k-fold run (``fold`` 0.. rows), else None.

    The images of a fold are the largest ``n`` of its ``top1`` rows (every labelled test image counts
    at the highest rank it is labelled at).
    """
    if "fold" not in metrics.columns:
        return None
    fold = metrics["fold"].map(_cell)
    rows = metrics[(fold != "") & (fold != "mean") & (metrics["metric"].astype(str) == "top1")]
    if rows.empty:
        return None
    per_fold = pd.to_numeric(rows["n"], errors="coerce").groupby(fold[rows.index]).max()
    return int(per_fold.size), int(per_fold.min()), int(per_fold.max())


def n_test_text(metrics: pd.DataFrame, n_test: "int | None" = None) -> str:
    """``"250 test images per fold, 5 folds"`` for a k-fold (centroid) run, ``"288 test images"`` otherwise.

    Parameters
    ----------
    metrics
        The run's ``metrics.csv`` (with ``fold`` rows for k-fold runs).
    n_test
        The run's test images (``n_test`` of ``run.json``; for a k-fold run the sum over folds, so not
        used then).
    """
    folds = fold_counts(metrics)
    if folds is not None:
        k, low, high = folds
        each = f"{low:,}" if low == high else f"{low:,}-{high:,}"
        return f"{each} test images per fold, {k} fold{'s' if k != 1 else ''}"
    return f"{int(n_test):,} test images" if n_test is not None else "test images unknown"


def evaluation_console_table(metrics: pd.DataFrame, *, indent: str = "  ",
                             clean_note: "Callable[[object], str] | None" = None) -> list[str]:
    """The per-rank console table of ``latent evaluate``: top-1 with its CI, top-5, balanced accuracy, macro
    F1, n and classes; ranks with one class say ``trivial (one taxon)`` instead of their (1.000) scores.

    Parameters
    ----------
    metrics
        ``(n_rows, n_columns)`` one run's ``metrics.csv`` (k-fold runs: the ``"mean"`` rows are used).
    indent
        Put before every line.
    clean_note
        Turns a top-1 row's ``note`` into the text shown in the last column (default: the note as is;
        ``latent evaluate`` drops the leak note it states once at the top). Not shown for trivial ranks.

    Returns
    -------
    list of str
        Header line, one line per rank (``not predicted`` where there is no top-1; a ``note`` column when
        any rank has one), and footnotes on top-5.
    """
    from latent.ranks import RANK_NAMES

    m = metrics
    if "fold" in m.columns:
        fold = m["fold"].map(_cell)
        m = m[(fold == "") | (fold == "mean")]
    def clean(note: object) -> str:
        if clean_note is not None:
            return clean_note(note)
        return note if isinstance(note, str) else ""

    rows, short_lists = [], []
    for rank in RANK_NAMES:
        at = m[m["rank"] == rank].drop_duplicates("metric").set_index("metric")
        classes = _number(at.loc["n_classes", "value"], ".0f") if "n_classes" in at.index else ""
        if "top1" not in at.index:
            rows.append([rank, "not predicted", "", "", "", "", classes,
                         "fewer than 2 classes to learn, or not predictable on this split"])
            continue
        top1 = at.loc["top1"]
        n = _number(top1.get("n"), ",.0f")
        if bool(is_trivial(at.loc[["top1"]].assign(rank=rank)).iloc[0]) or classes == "1":
            rows.append([rank, TRIVIAL_MARK, "-", "-", "-", n, classes or "1", ""])
            continue

        def value(name: str) -> str:
            if name not in at.index:
                return "-"
            note = at.loc[name].get("note")
            flagged = name == "top5" and isinstance(note, str) and "fewer than" in note
            if flagged:
                short_lists.append(rank)
            return _number(at.loc[name, "value"], ".3f") + ("*" if flagged else "")

        low, high = _number(top1.get("ci_low"), ".3f"), _number(top1.get("ci_high"), ".3f")
        ci = f" [{low}, {high}]" if low and high else " (no CI)"
        rows.append([rank, _number(top1["value"], ".3f") + ci, value("top5"), value("balanced_accuracy"),
                     value("macro_f1"), n, classes, clean(top1.get("note"))])
    headers = ["rank", "top1", "top5", "bal.acc", "macroF1", "n", "classes", "note"]
    if not any(r[-1] for r in rows):
        headers, rows = headers[:-1], [r[:-1] for r in rows]
    lines = format_console_table(rows, headers, align="<>>>>>><"[: len(headers)], indent=indent)
    if short_lists:
        lines.append(f"{indent}* top5 where some rows rank fewer than 5 taxa ({', '.join(short_lists)}): "
                     "see 'note' in metrics.csv")
    lines.append(f"{indent}top5 '-': not reported (k < 5, or 5 or fewer candidate taxa: it would be trivially 1)")
    return lines
