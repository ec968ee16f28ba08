"""Near duplicates by embedding cosine, found without an n^2 matrix, and overlap with a model's training taxa.

Two questions of ``latent audit`` (issue 15) that the probes cannot ask themselves:

* **Near duplicates.** A tight family may be one photographer's burst, and a perfect species score may be
  the same image under two names. :func:`near_duplicates` lists every pair of rows whose embeddings have a
  cosine similarity at or above a threshold, and says whether the pair crosses two species (a label error,
  or one image filed twice) or a train/test split (a leak). It walks the upper triangle block by block:
  the row norms are computed once, each block of rows is normalised and compared with all later rows in
  chunks, and only the pairs above the threshold are kept, so memory is ``O(block x block)`` besides the
  input, never ``n x n``. The block products are float32; every kept pair's cosine is then recomputed in
  float64 from the original rows, so the pairs and their cosines equal a brute-force float64 answer.
  :func:`duplicate_summary` turns the pairs into long-format rows for ``audit.csv``.
* **Overlap with training data.** A species the model saw in training is not a test of generalisation.
  :func:`training_overlap` matches the species of a dataset against a list of training taxa (the
  ``seen_in_training.json`` of the Rare Species benchmark: a JSON object keyed by binomial, or by full
  lineage ``Kingdom-Phylum-Class-Order-Family-Genus-epithet`` as in its ``unseen_in_training.json``; a
  JSON list of names; or a text file with one name a line) and says, per species, whether and how it
  matched. :func:`overlap_summary` gives the seen / unseen counts in the same long format.
"""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Iterable, Sequence
from os import PathLike
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from latent.errors import InputError, format_list

__all__ = [
    "PAIR_COLUMNS",
    "SUMMARY_COLUMNS",
    "OVERLAP_COLUMNS",
    "near_duplicates",
    "duplicate_summary",
    "read_training_taxa",
    "training_overlap",
    "overlap_summary",
]

log = logging.getLogger(__name__)

#: Columns of :func:`near_duplicates` always present (species and split columns are added when given).
PAIR_COLUMNS = ["id_a", "id_b", "cosine", "identical", "row_a", "row_b"]

#: Columns of :func:`duplicate_summary` and :func:`overlap_summary` (the long format of ``audit.csv``).
SUMMARY_COLUMNS = ["rank", "metric", "value", "ci_low", "ci_high", "n", "note"]

#: Columns of :func:`training_overlap`.
OVERLAP_COLUMNS = ["species", "seen", "matched_as", "matched_key", "n_images"]

#: A pair is ``identical`` when ``1 - cosine <= IDENTICAL_TOL`` (cosine in float64): the same vector up to
#: scale and float32 rounding (a relative difference of about 4e-5 or less), not a near copy.
IDENTICAL_TOL = 1e-9

#: Candidates are taken from the float32 block products at ``threshold - _MARGIN`` and then decided in
#: float64, so float32 rounding (about 1e-6 for unit vectors of a few thousand dimensions) loses no pair.
_MARGIN = 1e-4

#: Pairs re-scored in float64 at a time (bounds the memory of the exact recomputation).
_RESCORE_CHUNK = 8192


# --------------------------------------------------------------------------------------------------------
# near duplicates
# --------------------------------------------------------------------------------------------------------


def _objects(values: Iterable[Any]) -> np.ndarray:
    """``values`` as a writable 1-D object array (a tuple stays one element)."""
    items = list(values)
    arr = np.empty(len(items), dtype=object)
    arr[:] = items
    return arr


def _labels(values: Any, n: int, name: str) -> "np.ndarray | None":
    """``values`` as an object array of length ``n`` with missing labels as None, or None when absent."""
    if values is None:
        return None
    arr = _objects(values)
    if arr.shape != (n,):
        raise InputError(f"The {name!r} parameter of near_duplicates must hold one label per row ({n}); "
                         f"got {arr.shape[0]} labels instead: pass the labels of the same rows as X.")
    missing = pd.isna(pd.Series(arr)).to_numpy() | np.array([isinstance(v, str) and not v.strip() for v in arr])
    arr[missing] = None
    return arr


def _row_norms(X: Any, n: int, block: int) -> np.ndarray:
    """Float64 L2 norms of the rows of ``X`` (n,), computed a block at a time; refuses non-finite rows."""
    norms = np.empty(n, dtype=np.float64)
    bad: list[int] = []
    for start in range(0, n, block):
        rows = np.asarray(X[start:start + block], dtype=np.float64)
        finite = np.isfinite(rows).all(axis=1)
        if not finite.all():
            bad.extend((start + np.flatnonzero(~finite)).tolist())
        norms[start:start + len(rows)] = np.sqrt(np.einsum("ij,ij->i", rows, rows))
    if bad:
        raise InputError(f"The 'X' parameter of near_duplicates holds non-finite values (NaN or inf) in rows "
                         f"{format_list(bad)}: drop or re-extract those embeddings first.")
    return norms


def _unit_block(X: Any, start: int, stop: int, inv_norms: np.ndarray) -> np.ndarray:
    """Rows ``start:stop`` of ``X`` scaled to unit length, float32 (stop - start, d)."""
    rows = np.asarray(X[start:stop], dtype=np.float32)
    return rows * inv_norms[start:stop, None].astype(np.float32)


def _exact_cosines(X: Any, a: np.ndarray, b: np.ndarray, norms: np.ndarray) -> np.ndarray:
    """Float64 cosines of the row pairs ``(a[k], b[k])`` (m,), from the original rows."""
    out = np.empty(len(a), dtype=np.float64)
    for start in range(0, len(a), _RESCORE_CHUNK):
        sa, sb = a[start:start + _RESCORE_CHUNK], b[start:start + _RESCORE_CHUNK]
        # Fancy indexing needs sorted unique indices for h5py datasets; plain arrays do not care.
        ua, ia = np.unique(sa, return_inverse=True)
        ub, ib = np.unique(sb, return_inverse=True)
        xa = np.asarray(X[ua], dtype=np.float64)[ia]
        xb = np.asarray(X[ub], dtype=np.float64)[ib]
        out[start:start + len(sa)] = np.einsum("ij,ij->i", xa, xb) / (norms[sa] * norms[sb])
    return np.clip(out, -1.0, 1.0)


def near_duplicates(X: Any, ids: Sequence[Any], *, threshold: float = 0.95, block: int = 4096,
                    species: "Sequence[Any] | None" = None, split: "Sequence[Any] | None" = None,
                    max_pairs: "int | None" = 1_000_000) -> pd.DataFrame:
    """Every pair of rows whose embeddings have cosine similarity ``>= threshold``, without an n x n matrix.

    The row norms are computed once (float64). For each block of ``block`` rows, the block is scaled to unit
    length and multiplied (float32) with each later chunk of ``block`` rows, itself included (upper triangle
    only); only the entries above ``threshold`` (less a small float32 margin) are kept. The kept pairs are
    re-scored in float64 from the original rows and filtered at ``threshold`` exactly, so the answer is that
    of a brute-force float64 computation. Memory besides ``X``: about ``block * block * 5`` bytes plus two
    blocks of rows, e.g. 100 MB at the default ``block=4096``; time grows as ``n^2 d``.

    Parameters
    ----------
    X : array-like, shape (n, d)
        Embeddings, one row per image. Anything that slices by rows into numpy arrays works (an ndarray, a
        ``np.memmap``, an ``h5py`` dataset); it is never copied whole.
    ids : sequence, shape (n,)
        The id of each row (image id or file name), reported as ``id_a`` and ``id_b``.
    threshold : float, default 0.95
        Cosine similarity at or above which a pair is reported, in ``(0, 1]``.
    block : int, default 4096
        Rows per block (and per chunk of the later rows). Memory grows as ``block**2``.
    species : sequence, shape (n,), optional
        Species label of each row (None, NaN or "" for unlabelled). Adds ``species_a``, ``species_b``,
        ``same_species`` (both labelled and equal) and ``crosses_species`` (both labelled and different).
    split : sequence, shape (n,), optional
        Split label of each row (e.g. "train" / "test"). Adds ``split_a``, ``split_b`` and ``crosses_split``
        (both labelled and different).
    max_pairs : int or None, default 1_000_000
        Refuse (``InputError``) when more candidate pairs than this are found: a threshold that low lists
        neighbours, not duplicates. None for no limit.

    Returns
    -------
    pandas.DataFrame
        One row per pair, ``row_a < row_b``: ``id_a``, ``id_b``, ``cosine`` (float64), ``identical`` (the
        same vector up to scale: ``1 - cosine <= 1e-9``), ``row_a``, ``row_b`` (row indices into ``X``), then
        the species and split columns when given. Sorted by cosine (highest first), then ``row_a``,
        ``row_b``; the index is 0..m-1. ``attrs["threshold"]`` and ``attrs["n"]`` record the call. Rows of
        zero norm have no direction and pair with nothing (a warning is logged).

    Raises
    ------
    InputError
        A bad ``threshold`` or ``block``, ``X`` not 2-D, labels of the wrong length, non-finite rows, or more
        than ``max_pairs`` candidate pairs.
    """
    shape = getattr(X, "shape", None)
    if shape is None:
        X = np.asarray(X)
        shape = X.shape
    if len(shape) != 2:
        raise InputError(f"The 'X' parameter of near_duplicates must be a 2-D array (n, d); got shape "
                         f"{tuple(shape)} instead: pass one embedding per row.")
    n = int(shape[0])
    if not (isinstance(threshold, (int, float, np.floating)) and 0.0 < float(threshold) <= 1.0):
        raise InputError(f"The 'threshold' parameter of near_duplicates must be a cosine in (0, 1]; got "
                         f"{threshold!r} instead: use e.g. 0.95 (near copies) or 0.99 (almost identical).")
    threshold = float(threshold)
    if not (isinstance(block, (int, np.integer)) and not isinstance(block, bool) and block >= 1):
        raise InputError(f"The 'block' parameter of near_duplicates must be a positive integer; got {block!r} "
                         f"instead: use e.g. 4096 (memory grows as block**2).")
    block = int(block)
    ids_arr = _objects(ids)
    if ids_arr.shape != (n,):
        raise InputError(f"The 'ids' parameter of near_duplicates must hold one id per row of X ({n}); got "
                         f"{ids_arr.shape[0]} ids instead: pass the ids of the same rows.")
    species_arr = _labels(species, n, "species")
    split_arr = _labels(split, n, "split")

    norms = _row_norms(X, n, block) if n else np.empty(0)
    zero = norms == 0.0
    if zero.any():
        log.warning("near_duplicates: %d row(s) have zero norm and no direction; they pair with nothing (rows %s)",
                     int(zero.sum()), format_list(np.flatnonzero(zero).tolist(), limit=10))
    inv = np.zeros_like(norms)
    inv[~zero] = 1.0 / norms[~zero]

    cut = np.float32(threshold - _MARGIN)
    found_a: list[np.ndarray] = []
    found_b: list[np.ndarray] = []
    total = 0
    for i0 in range(0, n, block):
        i1 = min(i0 + block, n)
        left = _unit_block(X, i0, i1, inv)
        for j0 in range(i0, n, block):
            j1 = min(j0 + block, n)
            right = left if j0 == i0 else _unit_block(X, j0, j1, inv)
            sims = left @ right.T
            r, c = np.nonzero(sims >= cut)
            if j0 == i0:
                keep = c > r
                r, c = r[keep], c[keep]
            if len(r):
                found_a.append((r + i0).astype(np.int64))
                found_b.append((c + j0).astype(np.int64))
                total += len(r)
                if max_pairs is not None and total > max_pairs:
                    raise InputError(
                        f"The 'threshold' parameter of near_duplicates ({threshold}) finds more than "
                        f"{max_pairs} candidate pairs: raise it (e.g. 0.95 or 0.98) or pass a larger max_pairs.")
            del sims
        log.debug("near_duplicates: rows %d-%d of %d compared, %d candidate pairs", i0, i1, n, total)

    a = np.concatenate(found_a) if found_a else np.empty(0, dtype=np.int64)
    b = np.concatenate(found_b) if found_b else np.empty(0, dtype=np.int64)
    cos = _exact_cosines(X, a, b, norms) if len(a) else np.empty(0)
    keep = cos >= threshold
    a, b, cos = a[keep], b[keep], cos[keep]
    order = np.lexsort((b, a, -cos))
    a, b, cos = a[order], b[order], cos[order]

    pairs = pd.DataFrame({
        "id_a": pd.Series(ids_arr[a], dtype=object),
        "id_b": pd.Series(ids_arr[b], dtype=object),
        "cosine": cos,
        "identical": (1.0 - cos) <= IDENTICAL_TOL,
        "row_a": a,
        "row_b": b,
    })
    for name, labels, same in (("species", species_arr, "same_species"), ("split", split_arr, None)):
        if labels is None:
            continue
        la, lb = labels[a], labels[b]
        labelled = np.array([x is not None and y is not None for x, y in zip(la, lb)], dtype=bool)
        equal = np.array([x == y for x, y in zip(la, lb)], dtype=bool) if len(a) else np.zeros(0, dtype=bool)
        pairs[f"{name}_a"] = pd.Series(la, dtype=object)
        pairs[f"{name}_b"] = pd.Series(lb, dtype=object)
        if same:
            pairs[same] = labelled & equal
        pairs[f"crosses_{name}"] = labelled & ~equal
    pairs.attrs["threshold"] = threshold
    pairs.attrs["n"] = n
    log.info("near_duplicates: %d pair(s) with cosine >= %g among %d rows", len(pairs), threshold, n)
    return pairs


def _summary_row(metric: str, value: float, n: int, note: str, rank: str = "all") -> dict[str, Any]:
    return {"rank": rank, "metric": metric, "value": float(value), "ci_low": np.nan, "ci_high": np.nan,
            "n": int(n), "note": note}


def duplicate_summary(pairs: pd.DataFrame, n: int) -> pd.DataFrame:
    """Counts of the near-duplicate pairs in the long format of ``audit.csv``.

    Parameters
    ----------
    pairs : pandas.DataFrame
        The output of :func:`near_duplicates` (m rows).
    n : int
        Number of images searched (rows of the embedding matrix).

    Returns
    -------
    pandas.DataFrame
        Columns :data:`SUMMARY_COLUMNS`, ``rank="all"``, one row per metric: ``near_duplicate_pairs``,
        ``identical_pairs``, ``pairs_crossing_species`` (only when the pairs carry ``crosses_species``),
        ``pairs_crossing_split`` (only when they carry ``crosses_split``), ``images_in_pairs`` (distinct rows
        in at least one pair). ``n`` is the number of images; ``ci_low`` / ``ci_high`` are NaN (counts);
        ``note`` states the threshold when ``pairs.attrs`` records it.
    """
    missing = [c for c in ("cosine", "identical") if c not in pairs.columns]
    if missing:
        raise InputError(f"The 'pairs' parameter of duplicate_summary lacks the column(s) {format_list(missing)}: "
                         f"pass the table near_duplicates returns.")
    threshold = pairs.attrs.get("threshold")
    note = f"cosine >= {threshold:g}" if threshold is not None else ""
    rows = [_summary_row("near_duplicate_pairs", len(pairs), n, note),
            _summary_row("identical_pairs", int(pairs["identical"].sum()), n, "same vector up to scale")]
    if "crosses_species" in pairs.columns:
        rows.append(_summary_row("pairs_crossing_species", int(pairs["crosses_species"].sum()), n,
                                 "two species: a label error or one image filed twice"))
    if "crosses_split" in pairs.columns:
        rows.append(_summary_row("pairs_crossing_split", int(pairs["crosses_split"].sum()), n,
                                 "one image on each side of the split: a leak"))
    if {"row_a", "row_b"} <= set(pairs.columns):
        images = len(np.union1d(pairs["row_a"].to_numpy(), pairs["row_b"].to_numpy()))
    else:
        images = len(set(pairs["id_a"]) | set(pairs["id_b"]))
    rows.append(_summary_row("images_in_pairs", images, n, note))
    return pd.DataFrame(rows, columns=SUMMARY_COLUMNS)


# --------------------------------------------------------------------------------------------------------
# overlap with training taxa
# --------------------------------------------------------------------------------------------------------

#: How a species matched a training key, best first (``matched_as``; "" when unseen).
MATCH_FORMS = ("exact", "case-insensitive", "binomial")

_SPACES = re.compile(r"[\s_]+")


def _normalise(name: str) -> str:
    """Case-folded, underscores as spaces, runs of white space collapsed, stripped."""
    return _SPACES.sub(" ", name).strip().casefold()


def _binomial(key: str) -> "str | None":
    """The normalised ``genus epithet`` of a key: a full lineage ``K-P-C-O-F-Genus-epithet`` (an epithet may
    itself hold hyphens), or a name of two or more words (a trinomial or a name with its author). None when
    the key has no binomial (one word)."""
    key = key.strip()
    if " " not in key and "_" not in key and key.count("-") >= 6:
        parts = key.split("-")
        return _normalise(f"{parts[5]} {'-'.join(parts[6:])}")
    words = _normalise(key).split(" ")
    if len(words) < 2:
        return None
    return f"{words[0]} {words[1]}"


def read_training_taxa(trained_on: "str | PathLike[str] | Iterable[str]") -> list[str]:
    """The training keys of ``trained_on``, in file order.

    Parameters
    ----------
    trained_on : path or iterable of str
        A JSON file holding an object (its keys are the taxa: ``{"Mobula birostris": [image paths, ...]}``
        or ``{"Animalia-Chordata-...-Genus-epithet": [...]}``) or a list of names; a text file with one name
        a line (blank lines and lines starting with ``#`` are skipped); or the names themselves.

    Returns
    -------
    list of str
        The keys, stripped, empty ones dropped.
    """
    if isinstance(trained_on, (str, PathLike)):
        path = Path(trained_on)
        if not path.is_file():
            raise InputError(f"The 'trained_on' parameter names {str(path)!r}, which is not a file: pass a JSON "
                             f"file (object keyed by taxon, or a list of names) or a text file with one name a line.")
        text = path.read_text(encoding="utf-8-sig")
        if path.suffix.lower() == ".json" or text.lstrip()[:1] in ("{", "["):
            try:
                data = json.loads(text)
            except json.JSONDecodeError as exc:
                raise InputError(f"The 'trained_on' file {str(path)!r} is not valid JSON ({exc.msg}, line "
                                 f"{exc.lineno}): fix it, or give a text file with one name a line.") from exc
            if isinstance(data, dict):
                keys = list(data)
            elif isinstance(data, list) and all(isinstance(v, str) for v in data):
                keys = data
            else:
                raise InputError(f"The 'trained_on' file {str(path)!r} holds JSON of type {type(data).__name__} "
                                 f"(or a list of non-strings): give an object keyed by taxon or a list of names.")
        else:
            keys = [line for line in text.splitlines() if not line.strip().startswith("#")]
    else:
        keys = list(trained_on)
        bad = [k for k in keys if not isinstance(k, str)]
        if bad:
            raise InputError(f"The 'trained_on' parameter must hold taxon names (str); got {format_list(bad, limit=5)} "
                             f"instead: pass names, or a path to a JSON or text file.")
    return [k.strip() for k in keys if k.strip()]


def training_overlap(species_names: Sequence[Any],
                     trained_on: "str | PathLike[str] | Iterable[str]") -> pd.DataFrame:
    """Which species of a dataset a model saw in training, and how each matched a training key.

    Each species is matched against the training keys in three forms, the first that matches wins:
    ``exact`` (the same string), ``case-insensitive`` (equal after case folding, underscores read as spaces
    and white space collapsed), ``binomial`` (the species' ``genus epithet`` equals a key's: a full lineage
    key ``Kingdom-Phylum-Class-Order-Family-Genus-epithet``, or a key or species name of three or more words,
    a subspecies or a name with its author). A genus-only name never matches by binomial.

    Parameters
    ----------
    species_names : sequence of str, shape (n,)
        Species of the dataset: one per species, or one per image (repeats are counted in ``n_images``).
        Missing names (None, NaN, "") are skipped.
    trained_on : path or iterable of str
        The training taxa (see :func:`read_training_taxa`): e.g. ``seen_in_training.json`` of the Rare
        Species benchmark, a JSON list, a text file with one name a line, or the names.

    Returns
    -------
    pandas.DataFrame
        Columns :data:`OVERLAP_COLUMNS`, one row per distinct species in order of first appearance:
        ``species``, ``seen`` (bool), ``matched_as`` (one of :data:`MATCH_FORMS`, "" when unseen),
        ``matched_key`` (the training key that matched, "" when unseen), ``n_images`` (times the species
        appears in ``species_names``). ``attrs["training_keys"]`` holds the number of training keys.
    """
    keys = read_training_taxa(trained_on)
    if not keys:
        raise InputError("The 'trained_on' parameter holds no taxon names: pass a non-empty list or file.")
    exact = {}
    folded: dict[str, str] = {}
    binomial: dict[str, str] = {}
    for key in keys:
        exact.setdefault(key, key)
        folded.setdefault(_normalise(key), key)
        bino = _binomial(key)
        if bino is not None:
            binomial.setdefault(bino, key)

    names = pd.Series(list(species_names), dtype=object)
    named = names[names.map(lambda v: isinstance(v, str) and v.strip() != "")]
    skipped = len(names) - len(named)
    if skipped:
        log.info("training_overlap: %d row(s) without a species name skipped", skipped)
    counts = named.map(str.strip).value_counts(sort=False)
    rows = []
    for name in dict.fromkeys(named.map(str.strip)):
        form, key = "", ""
        if name in exact:
            form, key = "exact", exact[name]
        elif _normalise(name) in folded:
            form, key = "case-insensitive", folded[_normalise(name)]
        else:
            bino = _binomial(name)
            if bino is not None and bino in binomial:
                form, key = "binomial", binomial[bino]
        rows.append({"species": name, "seen": bool(form), "matched_as": form, "matched_key": key,
                     "n_images": int(counts[name])})
    table = pd.DataFrame(rows, columns=OVERLAP_COLUMNS).astype({"seen": bool, "n_images": int})
    table.attrs["training_keys"] = len(keys)
    log.info("training_overlap: %d of %d species seen in training (%d training keys)",
             int(table["seen"].sum()), len(table), len(keys))
    return table


def overlap_summary(overlap: pd.DataFrame) -> pd.DataFrame:
    """Seen and unseen counts of :func:`training_overlap` in the long format of ``audit.csv``.

    Parameters
    ----------
    overlap : pandas.DataFrame
        The output of :func:`training_overlap`.

    Returns
    -------
    pandas.DataFrame
        Columns :data:`SUMMARY_COLUMNS`, ``rank="species"``: ``species_seen_in_training`` and
        ``species_unseen_in_training`` (``n`` = species), ``images_of_seen_species`` and
        ``images_of_unseen_species`` (``n`` = images); ``ci_low`` / ``ci_high`` are NaN.
    """
    missing = [c for c in ("seen", "n_images") if c not in overlap.columns]
    if missing:
        raise InputError(f"The 'overlap' parameter of overlap_summary lacks the column(s) {format_list(missing)}: "
                         f"pass the table training_overlap returns.")
    seen = overlap["seen"].astype(bool).to_numpy()
    images = overlap["n_images"].to_numpy()
    n_species, n_images = len(overlap), int(images.sum())
    note = f"{overlap.attrs['training_keys']} training keys" if "training_keys" in overlap.attrs else ""
    rows = [_summary_row("species_seen_in_training", seen.sum(), n_species, note, rank="species"),
            _summary_row("species_unseen_in_training", (~seen).sum(), n_species, note, rank="species"),
            _summary_row("images_of_seen_species", images[seen].sum(), n_images, note, rank="species"),
            _summary_row("images_of_unseen_species", images[~seen].sum(), n_images, note, rank="species")]
    return pd.DataFrame(rows, columns=SUMMARY_COLUMNS)
