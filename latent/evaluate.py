"""Predictions at every rank, then per-rank and hierarchical metrics: in memory, or from a cache.

``latent.evaluate(X, taxonomy, ...)`` (this module is also callable: ``latent.evaluate`` is the module
and :func:`evaluate` at once) evaluates in-memory embeddings and returns an :class:`Evaluation`;
:func:`evaluate_cache` (``latent evaluate``) reads a cache, runs the same computation and saves it.

embeddings -> (split) -> predictor -> :class:`~latent.predictions.Predictions` -> metrics with
species-bootstrap CIs -> ``DIR/metrics.csv`` (the shared long format, with ``n_species``, ``n_taxa``,
``ci_note`` and ``note``: every rule is stated once in :mod:`latent.metrics`), ``DIR/predictions.parquet``,
the mistake-severity histogram, the first-divergence distribution, the most confused pairs, and
``DIR/run.json`` (what was run, on which cache or data, with which seeds); with ``top_down`` also
``DIR/topdown.csv``, the same predictor flat and top-down on the same split (:mod:`latent.topdown`). ``metrics.csv`` is written
last (atomically), so a complete ``metrics.csv`` means a complete run; a folder holding results of
another cache is refused unless ``force`` (:func:`latent.results.check_output`); the same cache re-run
replaces its results.

A test image whose embedding is identical to a training image's (after the float32 cast and L2
normalisation: what the predictor sees) is a leak: it is counted (``n_test_duplicates_in_train`` in
``run.json``), logged as a warning, noted on every metrics row and shown first in :meth:`Evaluation.summary`.

Zero-shot multiplies cosine similarities by the model's own learned logit scale, recorded with the text
embeddings by ``latent embed-text`` (:func:`latent.text.text_logit_scale`); text embedded by an older
latent falls back to CLIP's 100, logged and written to ``run.json`` (``logit_scale_source``).
"""

from __future__ import annotations

import logging
import os
import re
import sys
import time
import types
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from latent._version import __version__
from latent.errors import InputError
from latent.figures import FigureSpec
from latent.ranks import RANKS, RANK_NAMES, Rank, parse_rank
from latent.results import begin_output, check_output, finish_output, jsonable, results_frame, write_results
from latent.tables import read_option_csv

__all__ = ["METHODS", "SPLITS", "FIGURES", "Evaluation", "EvaluateReport", "evaluate", "evaluate_cache", "parse_clade"]

log = logging.getLogger(__name__)

METHODS = ("zero-shot", "linear", "knn", "centroid")
SPLITS = ("random", "species-disjoint")
MODES = ("flat", "per-rank")

#: The report's figures of the evaluations (see :mod:`latent.figures`), drawn from their results tables.
FIGURES: tuple[FigureSpec, ...] = (
    FigureSpec("accuracy", "Accuracy per rank",
               "Top-1 accuracy per rank with species-bootstrap 95% CIs, per method, split and model; dashed: chance "
               "(1 / classes); ranks with one taxon are not drawn (any predictor scores 1 there). On a "
               "species-disjoint split each rank is scored on the test images whose taxon there has a training "
               "image (the n of each point).",
               "latent.plotting.evaluation:report_accuracy", order=20, section="evaluation"),
    FigureSpec("mistake_severity", "How wrong are the mistakes?",
               "LCA height of wrong top-1 species predictions (1 = right genus, 7 = wrong kingdom).",
               "latent.plotting.evaluation:report_mistake_severity", order=21,
               section="evaluation"),
    FigureSpec("first_divergence", "First wrong rank",
               "The highest rank at which the top-1 prediction leaves the true lineage.",
               "latent.plotting.evaluation:report_first_divergence", order=22,
               section="evaluation"),
)

#: The note on every metrics row of a run where test images have an identical vector in training.
LEAK_NOTE = "{k} test images have an identical vector in training: a leak; accuracy is inflated"
_LEAK_PATTERN = re.compile(r"(; )?\d+ test images have an identical vector in training: a leak; accuracy is inflated")


@dataclass(eq=False, repr=False)
class Evaluation:
    """Results of one evaluation: the tables ``latent evaluate`` writes, in memory.

    Attributes
    ----------
    metrics : pandas.DataFrame
        The long format (``rank, metric, value, ci_low, ci_high, n, n_species, n_taxa, ci_note, note,
        method, mode, split, model``; ``fold`` for ``centroid``, with ``"mean"`` rows).
    predictions : pandas.DataFrame
        One row per test image (true and predicted taxa per rank).
    severity, divergence, confusions : pandas.DataFrame
        The mistake-severity histogram, the first-divergence distribution, the most confused pairs.
    info : dict
        The run record (``run.json``): settings, seeds, source, ``n_test_duplicates_in_train``.
    topdown : pandas.DataFrame or None
        With ``top_down``: flat against top-down prediction per rank
        (:func:`latent.topdown.compare_topdown`; ``fold`` for ``centroid``), written to ``topdown.csv``.
    out : pathlib.Path or None
        Where :meth:`save` last wrote the tables (None until saved).
    files : list of pathlib.Path
        The files written there.
    """

    metrics: pd.DataFrame
    predictions: pd.DataFrame
    severity: pd.DataFrame
    divergence: pd.DataFrame
    confusions: pd.DataFrame
    info: dict[str, Any] = field(default_factory=dict)
    topdown: "pd.DataFrame | None" = None
    out: "Path | None" = None
    files: list[Path] = field(default_factory=list)

    def __repr__(self) -> str:
        info = self.info
        leaks = int(info.get("n_test_duplicates_in_train") or 0)
        return (f"<Evaluation {info.get('method')} ({info.get('mode')}, split {info.get('split')}) on "
                f"{info.get('cache') or 'in-memory data'}: {info.get('n_test')} test images, {len(self.metrics)} "
                f"metric rows{f', LEAK: {leaks} test images identical to training' if leaks else ''}; "
                f".summary(), .to_frame(), .save(dir)>")

    def to_frame(self) -> pd.DataFrame:
        """The metrics in the long results format (a copy; as written to ``metrics.csv``)."""
        return self.metrics.copy()

    def save(self, out: "str | os.PathLike[str]", *, force: bool = False) -> list[Path]:
        """Write ``metrics.csv``, ``predictions.parquet``, ``severity.csv``, ``divergence.csv``,
        ``confusions.csv`` and ``run.json`` into ``out`` (created), as ``latent evaluate`` does.

        Parameters
        ----------
        out
            The results folder. A folder holding results of another cache or other data is refused
            (:func:`latent.results.check_output`); results of the same source are replaced.
        force
            Replace whatever results ``out`` holds.

        Returns
        -------
        list of pathlib.Path
            The files written (``metrics.csv`` first; it is written last, atomically).

        Raises
        ------
        CacheError
            ``out`` holds results of another source, and not ``force``; nothing is written.
        """
        out = Path(out)
        previous = begin_output(out, self.info, force=force)
        files = []
        tmp = out / "predictions.parquet.tmp"
        self.predictions.to_parquet(tmp, index=False)
        os.replace(tmp, out / "predictions.parquet")
        files.append(out / "predictions.parquet")
        for name in ("severity", "divergence", "confusions"):
            path = out / f"{name}.csv"
            tmp = path.with_name(path.name + ".tmp")
            getattr(self, name).to_csv(tmp, index=False)
            os.replace(tmp, path)
            files.append(path)
        if self.topdown is not None:
            files.append(write_results(self.topdown, out / "topdown.csv"))
        self.files = finish_output(out, self.info, self.metrics, files, previous)
        self.out = out
        return list(self.files)

    def summary(self) -> str:
        """A short table per rank (top-1 with its CI, top-5, balanced accuracy, macro F1), the hierarchy
        metrics, and first of all a warning when test images have a copy in training."""
        from latent.tables import evaluation_console_table, n_test_text

        m = self.metrics
        grouped = m[m["group"].notna()] if "group" in m.columns else m.iloc[0:0]
        if "group" in m.columns:
            m = m[m["group"].isna()]
        if "fold" in m.columns:
            m = m[m["fold"].astype(str) == "mean"]
        info = self.info
        source = info.get("cache") or "in-memory data"
        lines = [f"{info.get('method')} ({info.get('mode')}, split {info.get('split')}) on "
                 f"{source}: {n_test_text(self.metrics, info.get('n_test'))}"]
        for note in dict.fromkeys(info.get("test_sample") or []):
            lines.append(f"  sampled: {note}")
        leaks = int(info.get("n_test_duplicates_in_train") or 0)
        leak_note = LEAK_NOTE.format(k=leaks) if leaks else ""
        if leaks:
            lines.append(f"  WARNING: {leaks} of {info.get('n_test')} test images have an identical vector in "
                         "training: a leak; accuracy is inflated (n_test_duplicates_in_train in run.json)")
        lines.extend(evaluation_console_table(m, clean_note=_without_leak))  # one-class ranks: trivial
        hier = m[m["rank"] == "all"].set_index("metric")
        parts = []
        for name in ("mistake_severity", "hdist@1", "hdist@5", "hF", "hca"):
            if name not in hier.index:
                continue
            r = hier.loc[name]
            if np.isfinite(r["value"]):
                parts.append(f"{name} {_with_ci(r)}")
            elif name == "mistake_severity":
                parts.append("mistake_severity - (no species mistakes)")
        if parts:
            lines.append("  hierarchy: " + "; ".join(parts))
        if "hF" in hier.index and _text(hier.loc["hF"].get("note")):
            hf_note = _without_leak(hier.loc["hF", "note"])
            if hf_note:
                lines.append(f"  hierarchy over informative ranks only: {hf_note}")
        ci_notes = m["ci_note"] if "ci_note" in m.columns else []
        notes = sorted({_text(n) for n in ci_notes if _text(n).startswith("no CI: ") and "species (<" in _text(n)})
        if notes:
            lines.append(f"  {'; '.join(notes)}: images of a species are not independent, CIs resample species")
        excluded = info.get("unlabelled_species")
        if excluded:
            lines.append(f"  {excluded} test rows without a species label are excluded from species metrics")
        if self.topdown is not None:
            from latent.topdown import summary_line

            lines.append(f"  {summary_line(self.topdown)} (topdown.csv)")
        if self.out is not None:
            lines.append(f"  wrote {', '.join(str(p.name) for p in self.files)} to {self.out}")
        if leaks:
            lines.append(f"  WARNING: {leak_note} (see above)")
        for group, table in (grouped.groupby("group", sort=False) if len(grouped) else []):
            top1 = table[table["metric"] == "top1"].set_index("rank")
            cells = [f"{rank} {top1.loc[rank, 'value']:.3f} (n {int(top1.loc[rank, 'n'])})" for rank in RANK_NAMES
                     if rank in top1.index and top1.loc[rank, "n"] > 0]
            lines.append(f"  {group}: top1 " + ", ".join(cells))
        return "\n".join(lines)


#: The name :func:`evaluate_cache` returned before the in-memory API (the same class).
EvaluateReport = Evaluation


def _without_leak(note: Any) -> str:
    """A note cell without the leak note and the test-sample note (the summary states each once, at the top)."""
    return _SAMPLE_PATTERN.sub("", _LEAK_PATTERN.sub("", _text(note))).strip("; ")


def _text(value: Any) -> str:
    """A note cell as text (NaN and None read back from CSV as ``""``)."""
    return value if isinstance(value, str) else ""


def _with_ci(row: pd.Series) -> str:
    """``"0.812 [0.790, 0.833]"``, or ``"0.812 (no CI)"`` where the row has none."""
    if np.isfinite(row["ci_low"]) and np.isfinite(row["ci_high"]):
        return f"{row['value']:.3f} [{row['ci_low']:.3f}, {row['ci_high']:.3f}]"
    return f"{row['value']:.3f} (no CI)"


def parse_clade(text: "str | None") -> "tuple[Rank, str] | None":
    """``"class=Insecta"`` -> ``(Rank.CLASS, "Insecta")`` (a lineage ``A;B;C`` is allowed as the name)."""
    if text is None:
        return None
    rank, sep, name = text.partition("=")
    if not sep or not name.strip():
        raise InputError(f"The 'clade' parameter must look like RANK=NAME (e.g. class=Insecta). Got {text!r} instead.")
    return parse_rank(rank.strip(), parameter="clade"), name.strip()


def _check(name: str, value: Any, allowed: tuple[str, ...]) -> None:
    if value not in allowed:
        raise InputError(f"The {name!r} parameter of evaluate must be one of {', '.join(allowed)}. Got {value!r} instead.")


def _text_for_zero_shot(cache, mode: str, form: str) -> tuple[dict[str, tuple[np.ndarray, np.ndarray]], float, str]:
    """Text embeddings per rank, and the logit scale recorded with them (and where it came from)."""
    from latent.models import require_text_tower
    from latent.text import text_logit_scale

    require_text_tower(cache.provenance.model)
    groups = set(cache.text_groups())
    ranks = ["species"] if mode == "flat" else list(RANK_NAMES)
    missing = [f"{r}/{form}" for r in ranks if f"{r}/{form}" not in groups]
    if missing:
        raise InputError(
            f"Zero-shot needs text embeddings {', '.join(missing)} in {cache.path}, which has "
            f"{', '.join(sorted(groups)) or 'none'}. Run `latent embed-text {cache.path}` first."
        )
    out = {}
    attrs = []
    for r in ranks:
        keys, emb, group_attrs = cache.read_text_group(f"{r}/{form}")
        out[r] = (keys, emb)
        attrs.append(group_attrs)
    scale, source = text_logit_scale(attrs, where=str(cache.path))
    return out, scale, source


def _settings(method: str, mode: "str | None", split: str, clade: Any,
              coverage_rank: Any = "kingdom", top_down: bool = False) -> tuple[str, "tuple[Rank, str] | None"]:
    """Validate the settings shared by :func:`evaluate` and :func:`evaluate_cache`: ``(mode, clade)``."""
    _check("method", method, METHODS)
    _check("split", split, SPLITS)
    try:
        top = parse_rank(coverage_rank, parameter="coverage_rank")
    except ValueError as e:
        raise InputError(str(e)) from None
    if top > Rank.GENUS:
        raise InputError(f"The 'coverage_rank' parameter of evaluate must be genus or a higher rank (family, ..., "
                         f"kingdom). Got {coverage_rank!r} instead.")
    mode = mode or ("flat" if method == "zero-shot" else "per-rank")
    _check("mode", mode, MODES)
    if split == "species-disjoint" and mode == "flat" and method != "zero-shot":
        raise InputError("A species-disjoint split cannot use --mode flat: the test species were never seen, so "
                         "a species classifier cannot be mapped up the tree. Use --mode per-rank.")
    if top_down and split == "species-disjoint" and method != "zero-shot":
        raise InputError("--top-down compares with the flat predictor, which needs the test species in training; a "
                         "species-disjoint split has none. Use --split random.")
    return mode, (parse_clade(clade) if isinstance(clade, str) else clade)


def _groups(groups: Any, column: str, method: str) -> "tuple[str, dict[str, str]] | None":
    """``(column, {species name: group})`` from a table with ``species`` and ``column`` (``latent audit``'s
    ``overlap.csv``: ``seen`` True/False) or a mapping; None without one."""
    if groups is None:
        return None
    if method == "centroid":
        raise InputError("--groups scores one test set per group; the centroid method averages folds: use linear, "
                         "knn or zero-shot.")
    if isinstance(groups, Mapping):
        return column, {str(k): str(v) for k, v in groups.items()}
    table = read_option_csv(groups, ["species", column], option="--groups",
                            needs=f"a 'species' column and the group column {column!r}",
                            absent="write one with `latent audit CACHE --trained-on FILE` (overlap.csv) or give a "
                                   "CSV with 'species' and the group column.",
                            choose=" (choose one with --group-column)")
    return column, dict(zip(table["species"], table[column]))


def _split_from_file(split: str, split_file: Any, split_column: str, method: str, ids: np.ndarray,
                     rows: np.ndarray) -> "tuple[str, tuple[np.ndarray, np.ndarray] | None]":
    """``(split label, (train, test) rows)`` from ``split_file``, or ``(split, None)`` without one."""
    if split_file is None:
        return split, None
    if method not in ("linear", "knn"):
        raise InputError(f"--split-file is for the trained predictors (linear, knn); method {method!r} does not "
                         f"use a train/test split.")
    if split != "random":
        raise InputError(f"Give either --split {split} or --split-file, not both: the file decides the split.")
    return f"file:{Path(split_file).name}:{split_column}", read_split_file(split_file, split_column, ids, rows)


def read_split_file(path: "str | os.PathLike[str]", column: str, ids: np.ndarray,
                    rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Train and test rows from a split file (``latent audit``'s ``splits.csv``: ``id`` and one column per
    split, values ``train``, ``test`` or empty).

    Parameters
    ----------
    path, column
        The file and the split column to use.
    ids
        ``(n,)`` ids of the cache rows.
    rows
        The rows being evaluated; rows of the file outside them are left out.

    Returns
    -------
    train, test : numpy.ndarray
        Sorted row indices.

    Raises
    ------
    InputError
        A missing file or column, values other than train/test/empty, or ids the cache does not have.
    """
    path = Path(path)
    table = read_option_csv(path, ["id", column], option="--split-file",
                            needs=f"an 'id' column and the split column {column!r}",
                            absent="write one with `latent audit CACHE --out DIR` (DIR/splits.csv).",
                            choose=" (choose one with --split-column)")
    values = table[column].str.strip().str.lower()
    bad = sorted(set(values) - {"train", "test", ""})
    if bad:
        raise InputError(f"--split-file {path}: column {column!r} holds {', '.join(map(repr, bad[:5]))}; only "
                         f"'train', 'test' or empty are allowed.")
    from latent.api import rows_of_ids

    index, unknown = rows_of_ids(ids, table["id"].to_numpy())
    if unknown:
        raise InputError(f"--split-file {path}: {len(unknown)} ids are not in the cache (e.g. {unknown[0]!r}); the "
                         f"file must be written for this cache.")
    keep = np.isin(index, rows)
    train = np.sort(index[keep & (values == "train").to_numpy()])
    test = np.sort(index[keep & (values == "test").to_numpy()])
    if not len(train) or not len(test):
        raise InputError(f"--split-file {path}: column {column!r} gives {len(train)} training and {len(test)} test "
                         f"rows among the rows evaluated; both must be non-empty.")
    return train, test


def _evaluated_rows(taxonomy: Any, clade_spec: "tuple[Rank, str] | None", where: str) -> np.ndarray:
    """Rows labelled at kingdom or species (and inside the clade): the rows evaluated."""
    rows = np.flatnonzero(taxonomy.labelled(Rank.KINGDOM) | taxonomy.labelled(Rank.SPECIES))
    if clade_spec is not None:
        rows = np.intersect1d(rows, np.flatnonzero(taxonomy.clade_mask(*clade_spec)))
        if not len(rows):
            raise InputError(f"The clade {clade_spec[0].label}={clade_spec[1]} has no labelled images in {where}.")
    if not len(rows):
        raise InputError(f"{where} has no labelled rows: nothing to evaluate (see latent info).")
    return rows


def _row_keys(X: np.ndarray) -> np.ndarray:
    """One opaque key per row: equal keys <=> bitwise-equal float32 rows (``-0.0`` read as ``0.0``)."""
    data = np.ascontiguousarray(X, dtype=np.float32) + np.float32(0.0)
    return data.view(np.dtype((np.void, data.shape[1] * data.itemsize))).reshape(-1)


def _duplicates_in_train(X_train: np.ndarray, X_test: np.ndarray, block_rows: int = 65_536) -> int:
    """Number of test rows whose vector is identical to a training row's (the training rows are compared
    block by block, so no copy of the whole training matrix is made)."""
    if not len(X_train) or not len(X_test):
        return 0
    test_keys = _row_keys(X_test)
    wanted = set(test_keys.tolist())
    found: set = set()
    for a in range(0, len(X_train), block_rows):
        found.update(wanted.intersection(_row_keys(X_train[a:a + block_rows]).tolist()))
    return int(sum(key in found for key in test_keys.tolist()))


_SAMPLE_PREFIX = "test images: a stratified sample of "
_SAMPLE_PATTERN = re.compile(r"(; )?(test images: a stratified sample of [\d,]+ of [\d,]+ \(max_test [\d,]+; "
                             r"--max-test 0 scores all\)|training images: a stratified sample of [^()]*\([^()]*"
                             r"--max-train 0 trains on all\))")
#: Largest number of test images ``latent evaluate`` scores by default (per fold for centroid); above it a
#: stratified seeded sample is scored, said in run.json (``test_sample``), every row's note and the summary.
MAX_TEST = 10_000


def _species_strata(taxonomy: Any, rows: np.ndarray) -> tuple[np.ndarray, int]:
    """``(len(rows),)`` stratum of each row for :func:`latent.probes.common.stratified_sample` (its species
    renumbered from 0; the rows without a species one extra stratum) and the number of strata."""
    species = taxonomy.row_codes[rows, Rank.SPECIES]
    _, codes = np.unique(np.where(species >= 0, species, species.max(initial=-1) + 1), return_inverse=True)
    codes = codes.reshape(-1)
    return codes, int(codes.max()) + 1 if len(codes) else 0


def _sample_test(test: np.ndarray, taxonomy: Any, max_test: int, seed: int, tag: int) -> tuple[np.ndarray, str]:
    """At most ``max_test`` of the ``test`` rows, a seeded sample stratified by species (sorted), and the note
    that says so ("" when all are kept)."""
    from latent.probes.common import stratified_sample

    if not max_test or len(test) <= max_test:
        return test, ""
    codes, n_codes = _species_strata(taxonomy, test)
    keep, _, _ = stratified_sample(codes, n_codes, int(max_test), min_per_species=1, seed=seed, tag=tag)
    sample = np.sort(test[keep])
    note = f"{_SAMPLE_PREFIX}{len(sample):,} of {len(test):,} (max_test {max_test:,}; --max-test 0 scores all)"
    log.info("evaluate: %s", note)
    return sample, note


#: Work budget of the linear probe's training set when ``max_train`` is the default (None): training images x
#: dimensions x the classes of every fitted rank, in multiply-adds of one pass over the training set (the sweep
#: runs a few hundred passes). 10,000 images of 1,000 species (7,000 training images, 768 d) are 1.2e10 and took
#: 330 s on 2 cores (BENCHMARKS.md); 100,000 images of 10,000 species would be 1.2e12 (about 9 hours).
MAX_TRAIN_WORK = 5e9
_TRAIN_PREFIX = "training images: a stratified sample of "


def train_work(taxonomy: Any, train: np.ndarray, dim: int, predict_species: bool = True) -> float:
    """One pass of the linear probes over ``train``: ``images x dim x`` the distinct labels at every fitted rank
    (species only when ``predict_species``)."""
    ranks = [r for r in RANKS if predict_species or r != Rank.SPECIES]
    codes = taxonomy.row_codes[train]
    classes = sum(len(np.unique(codes[codes[:, r] >= 0, r])) for r in ranks)
    return float(len(train)) * float(dim) * float(classes)


def _sample_train(train: np.ndarray, test: np.ndarray, taxonomy: Any, max_train: "int | None", dim: int, split: str,
                  predict_species: bool, seed: int) -> tuple[np.ndarray, np.ndarray, str]:
    """The linear probe's training rows: all of them, or a seeded sample stratified by species (at least 5 images
    of a species while they fit, else 5 images of a random subset of species), and the note that says so.

    ``max_train`` None: the largest sample within :data:`MAX_TRAIN_WORK` (:func:`train_work`); 0: every
    training image; N: at most N images. When whole species are left out of a random split, their test
    images are left out too (the species rank could not be predicted for them, and the upper ranks are then
    scored on the species the probe was trained on): said in the note.
    """
    from latent.probes.common import largest_sample, stratified_sample

    if max_train == 0 or (max_train is not None and len(train) <= max_train):
        return train, test, ""
    codes, n_codes = _species_strata(taxonomy, train)
    if max_train is None:
        keep, whole = largest_sample(
            codes, n_codes, lambda rows: train_work(taxonomy, train[rows], dim, predict_species) <= MAX_TRAIN_WORK,
            max_rows=len(train), min_per_species=5, seed=seed, tag=0x7A1)
        if whole:
            return train, test, ""
        rule = f"max_train auto: one pass of the probes within {MAX_TRAIN_WORK:.3g} multiply-adds"
    else:
        keep = np.sort(stratified_sample(codes, n_codes, int(max_train), min_per_species=5, seed=seed,
                                         tag=0x7A1)[0])
        rule = f"max_train {max_train:,}"
    sample = np.sort(train[keep])
    species = taxonomy.row_codes[train, Rank.SPECIES]
    all_species = np.unique(species[species >= 0])
    kept_species = np.unique(taxonomy.row_codes[sample, Rank.SPECIES])
    kept_species = kept_species[kept_species >= 0]
    dropped = ""
    if split == "random" and len(kept_species) < len(all_species):
        in_test = np.isin(taxonomy.row_codes[test, Rank.SPECIES], kept_species)
        dropped = (f"; the {int((~in_test).sum()):,} test images of the other species left out" if (~in_test).any()
                   else "")
        test = test[in_test]
    note = (f"{_TRAIN_PREFIX}{len(sample):,} of {len(train):,} ({len(kept_species):,} of {len(all_species):,} "
            f"species{dropped}; {rule}; --max-train 0 trains on all)")
    log.info("evaluate: %s", note)
    return sample, test, note


def _checked_max_train(max_train: Any) -> "int | None":
    if max_train is None or (isinstance(max_train, str) and max_train == "auto"):
        return None
    if isinstance(max_train, bool) or not isinstance(max_train, (int, np.integer)) or max_train < 0:
        raise InputError(f"The 'max_train' parameter must be 'auto' (None), 0 (every training image) or a positive "
                         f"number of images. Got {max_train!r}.")
    return int(max_train)


def _compute(
    X_all: np.ndarray, rows: np.ndarray, taxonomy: Any, ids: np.ndarray, *, method: str, mode: str, split: str,
    shots: int, folds: int, seed: int, clade_spec: "tuple[Rank, str] | None", test_fraction: float,
    coverage_rank: str = "kingdom",
    k_neighbors: int, temperature: float, n_boot: int, device: str, text: Any, logit_scale: "float | None",
    model: str, text_form: "str | None", source: Mapping[str, Any], start: float,
    split_rows: "tuple[np.ndarray, np.ndarray] | None" = None,
    groups: "tuple[str, Mapping[str, str]] | None" = None,
    top_down: bool = False,
    max_test: int = 0,
    max_train: "int | None" = None,
) -> Evaluation:
    """The evaluation itself, on ``X_all`` (unit rows of ``rows`` of ``taxonomy``, in that order), or on an
    open cache (``X_all`` an :class:`~latent.cache.EmbeddingCache`: the rows of each split are read from it
    when needed, never all at once). ``max_test`` > 0: score at most that many test images (per fold)."""
    from functools import partial

    from latent.metrics import evaluate_predictions
    from latent.predictors import predict_centroid, predict_knn, predict_linear, predict_zero_shot
    from latent.splits import coverage, kshot_split, predictable_truth, random_split, species_disjoint_split

    # an open cache (only possible when latent.cache is loaded: in-memory arrays never import HDF5)
    cache_module = sys.modules.get("latent.cache")
    reader = X_all if cache_module is not None and isinstance(X_all, cache_module.EmbeddingCache) else None
    position = {int(r): i for i, r in enumerate(rows)} if reader is None else {}

    def features(subset: np.ndarray) -> np.ndarray:
        if reader is not None:  # the cache rows themselves, read in blocks (bit for bit X_all's rows)
            return reader.read(subset, normalize=True)
        return X_all[[position[int(r)] for r in subset]]

    sample_notes: list[str] = []  # per run: what was sampled (training and test images), said on every row
    train_notes: list[str] = []

    predict_species = split != "species-disjoint"
    if split_rows is not None:  # species can be predicted when every test species has training images
        sp = taxonomy.row_codes[:, Rank.SPECIES]
        predict_species = bool(np.isin(sp[split_rows[1]], sp[split_rows[0]]).all())
    seen_codes: "np.ndarray | None" = None  # (n_train, 7) lineage codes of the training rows
    runs: list[tuple[str, Any, int]] = []  # (fold, predictions, test images identical to a training image)
    predictors: list[Any] = []  # per run, the predictor on its split, called with mode= and k= (--top-down)
    if method == "zero-shot":
        predictors.append(partial(predict_zero_shot, X_all, rows, taxonomy, text, clade=clade_spec, ids=ids,
                                  logit_scale=logit_scale))
        runs.append(("", predictors[-1](mode=mode), 0))
    elif method == "centroid":
        for fold in range(folds):
            support, query = kshot_split(taxonomy, rows, shots=shots, fold=fold, seed=seed)
            query, note = _sample_test(query, taxonomy, max_test, seed, 0x7E57 + fold)
            sample_notes.append(note)
            X_support, X_query = features(support), features(query)
            predictors.append(partial(predict_centroid, X_support, support, X_query, query, taxonomy, ids=ids))
            runs.append((str(fold), predictors[-1](mode=mode), _duplicates_in_train(X_support, X_query)))
    else:
        if split_rows is not None:  # a split written by `latent audit` (or by hand): the same for every command
            train, test = split_rows
        else:
            splitter = random_split if split == "random" else species_disjoint_split
            split_args = {"coverage_rank": coverage_rank} if split == "species-disjoint" else {}
            train, test = splitter(taxonomy, rows, test_fraction=test_fraction, seed=seed, **split_args)
        train_note = ""
        if method == "linear":  # its fits grow with images x classes: a training sample sized to them
            dim = X_all.dim if reader is not None else X_all.shape[1]
            train, test, train_note = _sample_train(train, test, taxonomy, max_train, int(dim), split,
                                                    predict_species, seed)
        test, note = _sample_test(test, taxonomy, max_test, seed, 0x7E57)
        sample_notes.append("; ".join(n for n in (train_note, note) if n))
        train_notes.append(train_note)
        X_train, X_test = features(train), features(test)
        if method == "linear":
            predictors.append(partial(predict_linear, X_train, train, X_test, test, taxonomy, seed=seed,
                                      device=device, predict_species=predict_species, ids=ids))
        else:
            predictors.append(partial(predict_knn, X_train, train, X_test, test, taxonomy, k_neighbors=k_neighbors,
                                      temperature=temperature, predict_species=predict_species, ids=ids,
                                      device=device))
        runs.append(("", predictors[-1](mode=mode), _duplicates_in_train(X_train, X_test)))
        seen_codes = taxonomy.row_codes[train]

    # Species with one image cannot be both learnt and tested: a random split keeps them in training, so the
    # species rank is tested on the other species only (said in run.json and on the species rows).
    single_note = ""
    n_single = 0
    if method in ("linear", "knn") and split == "random":
        species = taxonomy.row_codes[rows, Rank.SPECIES]
        _, counts = np.unique(species[species >= 0], return_counts=True)
        n_single = int((counts == 1).sum())
        if n_single:
            test_species = runs[0][1].true[:, Rank.SPECIES]
            tested = int(np.unique(test_species[test_species >= 0]).size)
            single_note = (f"{n_single} of {len(counts)} species have one image: in training only, so species is "
                           f"tested on {tested} species with several images")
            log.info("evaluate: %s", single_note)

    tables: dict[str, list[pd.DataFrame]] = {"metrics": [], "severity": [], "divergence": [], "confusions": [], "predictions": []}
    # the coverage rule (latent.splits): a test image is scored at a rank only where its taxon was trained
    scored_ranks = [int(r) for r in Rank if predict_species or r != Rank.SPECIES]
    coverage_notes, unpredictable = (({}, {}) if seen_codes is None
                                     else coverage(runs[0][1].true, seen_codes, scored_ranks))
    for fold, pred, leaks in runs:
        scored = (pred if seen_codes is None
                  else replace(pred, true=predictable_truth(pred.true, seen_codes, scored_ranks)))
        result = evaluate_predictions(scored, n_boot=n_boot, seed=seed)
        extra = {"fold": fold} if fold else {}
        fold_metrics = result.metrics
        if leaks:
            log.warning("%s%s", "" if not fold else f"fold {fold}: ", LEAK_NOTE.format(k=leaks))
            note = LEAK_NOTE.format(k=leaks)
            fold_metrics = fold_metrics.assign(note=[f"{_text(n)}; {note}" if _text(n) else note
                                                     for n in fold_metrics["note"]])
        if coverage_notes:
            fold_metrics = fold_metrics.assign(note=[
                (f"{_text(n)}; {coverage_notes[r]}" if _text(n) else coverage_notes[r]) if r in coverage_notes else n
                for n, r in zip(fold_metrics["note"], fold_metrics["rank"])])
        if single_note:
            at_species = fold_metrics["rank"] == "species"
            fold_metrics = fold_metrics.assign(note=[
                (f"{_text(n)}; {single_note}" if _text(n) else single_note) if sp else n
                for n, sp in zip(fold_metrics["note"], at_species)])
        sample_note = sample_notes[int(fold or 0)] if sample_notes else ""
        if sample_note:  # a sampled test set: said on every row
            fold_metrics = fold_metrics.assign(note=[f"{_text(n)}; {sample_note}" if _text(n) else sample_note
                                                     for n in fold_metrics["note"]])
        tables["metrics"].append(fold_metrics.assign(**extra))
        tables["severity"].append(result.severity_histogram.assign(**extra))
        tables["divergence"].append(result.divergence.assign(**extra))
        tables["confusions"].append(result.confusions.assign(**extra))
        tables["predictions"].append(pred.to_frame().assign(**extra))
    if groups is not None:  # the same predictions scored per group of species (e.g. seen / unseen in training)
        name, group_of = groups
        pred = runs[0][1]
        scored = (pred if seen_codes is None
                  else replace(pred, true=predictable_truth(pred.true, seen_codes, scored_ranks)))
        labels = np.array([group_of.get(str(n), "") for n in taxonomy.labels(Rank.SPECIES)[pred.rows]])
        for value in sorted(set(labels) - {""}):
            keep = labels == value
            part = replace(scored, rows=scored.rows[keep], ids=scored.ids[keep], true=scored.true[keep],
                           topk=scored.topk[keep], scores=scored.scores[keep])
            tables["metrics"].append(evaluate_predictions(part, n_boot=n_boot, seed=seed).metrics
                                     .assign(group=f"{name}={value}"))
        log.info("evaluate: %d of %d test images in a group of %r", int((labels != "").sum()), len(labels), name)
    topdown = None
    if top_down:  # the same predictor flat and top-down on each run's split, scored as the main rows
        from latent.topdown import topdown_comparison

        def score(p: Any) -> Any:
            return p if seen_codes is None else replace(p, true=predictable_truth(p.true, seen_codes, scored_ranks))

        parts = [topdown_comparison(lambda m, k, f=f: f(mode=m, k=k), n_boot=n_boot, seed=seed, score=score)[2]
                 .assign(**({"fold": fold} if fold else {})) for (fold, _, _), f in zip(runs, predictors)]
        topdown = pd.concat(parts, ignore_index=True)
    metrics = pd.concat(tables["metrics"], ignore_index=True)
    if method == "centroid":
        # Mean over folds (each fold has its own bootstrap CI; the mean row averages values and bounds,
        # and counts; a bound missing in any fold is missing in the mean; notes of the folds are joined).
        grouped = metrics.groupby(["rank", "metric"], sort=False)
        numeric = grouped[["value", "ci_low", "ci_high", "n", "n_species", "n_taxa"]].mean()
        missing = grouped[["ci_low", "ci_high"]].agg(lambda x: x.isna().any())
        numeric[["ci_low", "ci_high"]] = numeric[["ci_low", "ci_high"]].mask(missing)
        for column in ("ci_note", "note"):
            numeric[column] = grouped[column].agg(lambda x: "; ".join(dict.fromkeys(v for v in x if _text(v))))
        numeric = numeric.reset_index()
        numeric["fold"] = "mean"
        metrics = pd.concat([metrics, numeric], ignore_index=True)
    first = runs[0][1]
    n_test = int(sum(p.n for _, p, _ in runs))
    info = {
        "command": "evaluate", **source, "method": method, "mode": mode,
        "split": split if method != "zero-shot" else "none", "shots": shots if method == "centroid" else None,
        "folds": folds if method == "centroid" else None, "seed": seed, "n_boot": n_boot,
        "clade": None if clade_spec is None else f"{clade_spec[0].label}={clade_spec[1]}",
        "test_fraction": test_fraction,
        "coverage_rank": coverage_rank if (split == "species-disjoint" and method in ("linear", "knn")) else None,
        "n_test_unpredictable": unpredictable, "k_neighbors": k_neighbors, "temperature": temperature,
        "text_form": text_form if method == "zero-shot" else None, "n_test": n_test,
        "n_test_duplicates_in_train": int(sum(k for _, _, k in runs)),
        "n_single_image_species_train_only": n_single,
        "logit_scale": logit_scale if method == "zero-shot" else None,
        "n_species": int(np.unique(first.true[first.true[:, Rank.SPECIES] >= 0, Rank.SPECIES]).size),
        "bootstrap_unit": "species",
        "unlabelled_species": int(sum(int((p.true[:, Rank.SPECIES] < 0).sum()) for _, p, _ in runs)),
        "latent_version": __version__, "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "seconds": round(time.perf_counter() - start, 2), "predictor_info": jsonable(first.info),
        "top_down": bool(top_down),
        "max_test": int(max_test),
        "test_sample": [note for note in sample_notes if note],
        "max_train": ("auto" if max_train is None else int(max_train)) if method == "linear" else None,
        "train_sample": [note for note in train_notes if note],
    }
    info.setdefault("logit_scale_source", None)
    metrics = results_frame(metrics, method=method, mode=mode, split=info["split"], model=model)
    frames = {name: pd.concat(tables[name], ignore_index=True) for name in ("predictions", "severity", "divergence",
                                                                            "confusions")}
    if topdown is not None:
        topdown = results_frame(topdown, split=info["split"], model=model)
    evaluation = Evaluation(metrics=metrics, info=info, topdown=topdown, **frames)
    log.info("%s", evaluation.summary())
    return evaluation


def evaluate(
    X: Any,
    taxonomy: Any,
    *,
    method: str = "linear",
    mode: "str | None" = None,
    split: str = "random",
    shots: int = 5,
    folds: int = 5,
    seed: int = 0,
    clade: "str | tuple[Rank, str] | None" = None,
    test_fraction: float = 0.3,
    coverage_rank: str = "kingdom",
    split_file: "str | os.PathLike[str] | None" = None,
    split_column: str = "stratified",
    groups: "str | os.PathLike[str] | Mapping[str, Any] | None" = None,
    group_column: str = "seen",
    k_neighbors: int = 20,
    temperature: float = 0.07,
    n_boot: int = 1000,
    device: str = "auto",
    ids: Any = None,
    text: "Mapping[str, tuple[Any, np.ndarray]] | None" = None,
    logit_scale: "float | None" = None,
    model: str = "",
    top_down: bool = False,
    max_train: "int | None" = None,
) -> Evaluation:
    """Evaluate one predictor on in-memory embeddings (``latent.evaluate``; nothing is written).

    Parameters
    ----------
    X
        ``(n_images, dim)`` embeddings, any real dtype: cast to float32 and L2-normalised per row, as
        :func:`evaluate_cache` reads a cache, so the same vectors give the same numbers.
    taxonomy
        A :class:`~latent.taxonomy.Taxonomy` with one row per image, or a table (DataFrame or path) with
        kingdom..species columns, one row per image. Rows labelled neither at kingdom nor at species
        are left out.
    method, mode, split, shots, folds, seed, clade, test_fraction, coverage_rank, k_neighbors, temperature, n_boot,
    device
        As :func:`evaluate_cache` (and ``latent evaluate``).
    ids
        ``(n_images,)`` unique image ids for ``predictions`` (default ``"0".."n-1"``).
    text
        Zero-shot only: per rank name, ``(keys (T,), embeddings (T, dim))`` of the taxon-name texts, keys
        the lineages joined by ``";"`` (as :meth:`latent.cache.EmbeddingCache.read_text_group` returns).
    logit_scale
        Zero-shot only: the model's logit scale (default :data:`latent.text.DEFAULT_LOGIT_SCALE`, CLIP's).
    model
        Label of the ``model`` column.
    top_down
        Also predict top-down and compare with flat (:attr:`Evaluation.topdown`); as :func:`evaluate_cache`.
    max_train
        Linear only: the training sample, as :func:`evaluate_cache` (None: sized to :data:`MAX_TRAIN_WORK`).

    Returns
    -------
    Evaluation
        ``.to_frame()``, ``.summary()``, ``.save(dir)`` and the tables as attributes.

    Raises
    ------
    InputError
        A bad setting, ``X`` not a finite 2-D array, a taxonomy of another length, no labelled rows,
        zero-shot without ``text``.
    """
    from latent.api import as_embeddings, as_ids, as_taxonomy, data_identity

    start = time.perf_counter()
    mode, clade_spec = _settings(method, mode, split, clade, coverage_rank, top_down)
    data = as_embeddings(X, function="evaluate")
    tax = as_taxonomy(taxonomy, len(data), function="evaluate")
    image_ids = as_ids(ids, len(data), function="evaluate")
    scale_source = None
    if method == "zero-shot":
        from latent.text import DEFAULT_LOGIT_SCALE

        if text is None:
            raise InputError("The 'text' parameter of evaluate is needed for method='zero-shot': per rank, "
                             "(lineage keys, text embeddings), e.g. from EmbeddingCache.read_text_group.")
        scale_source = "given" if logit_scale is not None else "default (CLIP's)"
        logit_scale = float(DEFAULT_LOGIT_SCALE if logit_scale is None else logit_scale)
        text = dict(text)
    rows = _evaluated_rows(tax, clade_spec, "the taxonomy")
    split, split_rows = _split_from_file(split, split_file, split_column, method, image_ids, rows)
    identity = {"cache": None, "data": data_identity(data), "model": model or None, "pretrained": None,
                "preprocess": None, "logit_scale_source": scale_source}
    return _compute(data[rows], rows, tax, image_ids, method=method, mode=mode, split=split, shots=shots,
                    folds=folds, seed=seed, clade_spec=clade_spec, test_fraction=test_fraction,
                    coverage_rank=coverage_rank, split_rows=split_rows,
                    groups=_groups(groups, group_column, method),
                    k_neighbors=k_neighbors, temperature=temperature, n_boot=n_boot, device=device, text=text,
                    logit_scale=logit_scale, model=model, text_form="given" if method == "zero-shot" else None,
                    source=identity, start=start, top_down=top_down,
                    max_train=_checked_max_train(max_train))


def evaluate_cache(
    cache_path: "str | os.PathLike[str]",
    out: "str | os.PathLike[str]",
    *,
    method: str = "linear",
    mode: "str | None" = None,
    split: str = "random",
    shots: int = 5,
    folds: int = 5,
    seed: int = 0,
    clade: "str | tuple[Rank, str] | None" = None,
    test_fraction: float = 0.3,
    coverage_rank: str = "kingdom",
    split_file: "str | os.PathLike[str] | None" = None,
    split_column: str = "stratified",
    groups: "str | os.PathLike[str] | Mapping[str, Any] | None" = None,
    group_column: str = "seen",
    k_neighbors: int = 20,
    temperature: float = 0.07,
    text_form: str = "taxon",
    n_boot: int = 1000,
    device: str = "auto",
    layer: "int | None" = None,
    top_down: bool = False,
    max_test: int = MAX_TEST,
    max_train: "int | None" = None,
    force: bool = False,
) -> Evaluation:
    """Evaluate one predictor on a cache and write the tables (read, :func:`evaluate`'s computation, save).

    Parameters
    ----------
    cache_path
        An embedding cache (``latent embed``/``import``/``synth``).
    out
        Output folder (created). One holding results of another cache is refused unless ``force``
        (checked before any computation); results of the same cache are replaced.
    method
        ``zero-shot`` (needs ``latent embed-text``), ``linear``, ``knn`` or ``centroid`` (k-shot).
    mode
        ``flat`` (species scores summed up the tree; the zero-shot default, as pybioclip does) or
        ``per-rank`` (each rank predicted directly; the default of the trained predictors).
    split
        ``random`` (stratified by species) or ``species-disjoint`` (test species never seen in
        training: the species rank is not predicted, higher ranks are). Not used by zero-shot.
    groups, group_column
        Score the same predictions again per group of species: a table (path) with ``species`` and
        ``group_column`` (``latent audit --trained-on``'s ``overlap.csv``: ``seen``), or a mapping species ->
        group. Extra rows with ``group = "<column>=<value>"``; the main rows have none.
    split_file, split_column
        A split written to a file (``latent audit``'s ``splits.csv``: ``id`` and columns ``stratified``,
        ``species_disjoint`` of ``train``/``test``/empty): the rows marked ``train`` and ``test`` in
        ``split_column`` are the split (linear, knn), so every command uses the same one. The species rank
        is predicted only when every test species has training images.
    coverage_rank
        Species-disjoint split: the highest rank at which a held-out species may share its taxon with the
        training species only there (:func:`latent.splits.species_disjoint_split`). The default,
        ``kingdom``, holds out species at every rank (a species alone in its genus can be held out when
        its family has another species), and each rank is scored only on the test images whose taxon at
        that rank has a training image (:func:`latent.splits.predictable_truth`; the rows' ``note`` says
        how many). ``genus`` holds out only species with a congener in training.
    shots, folds
        Support images per species and number of seeded folds for ``centroid``.
    seed
        Seed of the split, the probes and the bootstrap.
    clade
        ``"RANK=NAME"``: only images of that clade, and only its taxa as candidates.
    n_boot
        Bootstrap resamples for the 95% confidence intervals. Each resample draws whole species (a
        cluster bootstrap); below :data:`latent.stats.MIN_CLUSTERS` test species no CI is given.
    layer
        Evaluate the class tokens after this transformer block (``latent embed --layers``) instead of the
        final embeddings (linear, knn, centroid; zero-shot is refused: the text is in the final space).
    top_down
        Also run the same predictor flat and top-down (kingdom first, each rank among the children of
        the rank above's choice; zero-shot needs the texts of every rank) on the same split, and write
        their comparison per rank to ``topdown.csv`` (:func:`latent.topdown.compare_topdown`). Refused
        with a species-disjoint split (the flat predictor needs the species).
    max_test
        Score at most this many test images (per fold for centroid): above it a seeded sample stratified
        by species (every species keeps at least one image while they fit), said in every row's ``note``,
        in ``run.json`` (``test_sample``) and in the summary. 0 scores every test image. The cache is read
        in blocks and only the rows of the split are held (zero-shot reads every evaluated row).
    max_train
        Linear only: train on at most this many images (a seeded sample stratified by species, 5 or more per
        species while they fit); None (default) the largest such sample within :data:`MAX_TRAIN_WORK` (one pass
        of the probes: images x dimensions x classes of every rank); 0 every training image. When whole species
        are left out of a random split their test images are left out too. Said in every row's ``note``, in
        ``run.json`` (``train_sample``) and in the summary.
    force
        Replace the results of another cache in ``out``.

    Returns
    -------
    Evaluation
        With ``out`` and ``files`` set.

    Raises
    ------
    CacheError
        ``out`` holds results of another cache (and not ``force``): nothing is computed or written.
    """
    from latent.cache import open_cache

    if isinstance(max_test, bool) or not isinstance(max_test, (int, np.integer)) or max_test < 0:
        raise InputError(f"The 'max_test' parameter must be an integer >= 0 (0: every test image). Got {max_test!r}.")
    max_train = _checked_max_train(max_train)

    mode, clade_spec = _settings(method, mode, split, clade, coverage_rank, top_down)
    if layer is not None and method == "zero-shot":
        raise InputError(f"zero-shot compares images with taxon names in the final embedding space; it cannot run "
                         f"on --layer {layer}. Use --method linear, knn or centroid, or drop --layer.")
    start = time.perf_counter()
    out = Path(out)
    with open_cache(cache_path, layer=layer) as cache:
        provenance = cache.provenance
        source = {"cache": str(Path(cache_path).resolve()), "model": provenance.model,
                  "pretrained": provenance.pretrained, "preprocess": provenance.preprocess}
        if layer is not None:
            source["layer"] = int(layer)
        check_output(out, {"command": "evaluate", **source}, force=force)
        taxonomy = cache.taxonomy()
        rows = _evaluated_rows(taxonomy, clade_spec, str(cache_path))
        ids = cache.ids
        split, split_rows = _split_from_file(split, split_file, split_column, method, np.asarray(ids).astype(str),
                                             rows)
        # zero-shot scores every row; the trained predictors read each split's rows from the open cache
        X_all = cache.read(rows, normalize=True) if method == "zero-shot" else cache
        text, logit_scale, scale_source = (_text_for_zero_shot(cache, "per-rank" if top_down else mode, text_form) if method == "zero-shot"
                                           else (None, None, None))
        evaluation = _compute(X_all, rows, taxonomy, ids, method=method, mode=mode, split=split, shots=shots,
                              folds=folds, seed=seed, clade_spec=clade_spec, test_fraction=test_fraction,
                              coverage_rank=coverage_rank, split_rows=split_rows,
                              groups=_groups(groups, group_column, method),
                              k_neighbors=k_neighbors, temperature=temperature, n_boot=n_boot, device=device,
                              text=text, logit_scale=logit_scale, model=provenance.model, text_form=text_form,
                              top_down=top_down, max_test=0 if method == "zero-shot" else max_test,
                              max_train=max_train,
                              source={**source, "logit_scale_source": scale_source}, start=start)
    evaluation.save(out, force=force)
    return evaluation


class _CallableModule(types.ModuleType):
    """This module, callable as :func:`evaluate`: ``latent.evaluate(X, taxonomy)`` works whether
    ``latent.evaluate`` was first reached as the package attribute or imported as the submodule."""

    def __call__(self, *args: Any, **kwargs: Any) -> Evaluation:
        return evaluate(*args, **kwargs)

    @property
    def __signature__(self) -> Any:
        import inspect

        return inspect.signature(evaluate)


sys.modules[__name__].__class__ = _CallableModule
