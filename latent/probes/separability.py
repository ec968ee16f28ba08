"""Linear separability per rank: the separability curve across ranks, with a species-permutation null.

Splits
------
``random``: images split within every species (:func:`latent.splits.random_split`; species seen in
train and test; species with one image stay in training). ``species-disjoint``: whole species held out
with a relative in train (:func:`latent.splits.species_disjoint_split` with ``coverage_rank="kingdom"``:
species are held out within genera of two or more species first, and a species alone in its genus
within its family, order, ... when that has another species), so a rank is scored on species never seen
in training. The coverage rule of :mod:`latent.splits` decides which test images count at a rank: those
whose taxon at that rank has a training image (a held-out species alone in its genus counts at family
and above); the species rank is not scored (its test classes are never trained). On data where most
species have one image (``tol1k``: 739 of 790) this holds out species at every rank, not only the few
with a congener.

The statistic
-------------
Per split and rank, one multinomial logistic regression (L2, the objective of
:func:`latent.linear.fit_logistic`) is trained on the train images labelled at the rank and scored
(top-1 accuracy) on the test images labelled there. Its C is set by the ``C`` setting:

* ``"observed"`` (default): C is chosen once per (split, rank) on the real taxonomy by the CLIP sweep
  of :func:`latent.linear.linear_probe_ranks` (validation split of the train images, log grid, refined),
  and then held fixed. The observed accuracy and every null accuracy are the same fit at that C from
  zero on all train images (the same solver, ``max_iter`` and ``tol``); only the labels (and, for
  ``species-disjoint``, the split they imply) differ. One fit per rank and permutation instead of a
  sweep of ~20: this is what makes the default number of permutations affordable (measured on 2 CPU
  cores: 14 s for 199 permutations of 300 images x 512 d, 10 species; 28 s for 47 species x 20
  images x 64 d). C is chosen on validation images of the training species, never on the scored
  test species; on data without structure the observed value sits at its null
  (tests/test_probes_separability.py).
* ``"sweep"``: the observed and every null accuracy each run the whole CLIP protocol (sweep + refit):
  C is chosen by the identical procedure in each, at 3-5 times the cost (the ``C`` column is then NaN).
* a number: that C for every rank, observed and null.

Null
----
The species are permuted among the leaves of the tree (:func:`latent.probes.base.species_permutations`):
a rank's classes become random groups of species of the same sizes. Under each permutation the whole
statistic is recomputed, split included: the split is one function of (lineage codes, seed),
:func:`_split`, applied to the real codes for the observed value and to the permuted codes for each
null value. For ``species-disjoint`` this redraws the held-out species under the permuted tree with
the same rule, so in the null, as in the observed split, every test species' taxon at every scored rank
is trained (reusing the observed split under permuted labels gives test species labels never trained,
53% of the genus test images on cub10, and a null mean far below chance: 0.10 against 0.20). With a ``random`` split the split
does not depend on the codes and the species rank is unchanged by a permutation (species are only
renamed): its null equals the observed value, answers nothing and is not run.

The number of permutations is the setting ``options.extra["separability"]["permutations"]`` when given
(no cap). Without it, the null is the expensive kind (one logistic fit per rank and permutation) and
uses a stated smaller number, :func:`default_permutations`: ``min(options.permutations,
DEFAULT_PERMUTATIONS)`` (99: p reaches 0.01), and fewer, never below :data:`MIN_PERMUTATIONS` (19: p
reaches 0.05), when one permutation's fits are large (``NULL_WORK`` over the work of one permutation,
``splits x train images x d x`` the taxa of the ranks kingdom..genus). On the 1,030 real BioCLIP 2
embeddings of ``tol1k`` (790 species, 768 d; 1,219 taxa above species) one permutation is ~24 fits with
up to 700 classes, ~15 s of CPU on 2 cores: 199 permutations took more than 45 minutes; with 19 the
whole probe took 289 s (BENCHMARKS.md).
The row's ``permutations`` column and ``info["permutations"]`` say how many were used; the separability
rows are supporting evidence, never a verdict (:mod:`latent.verdict`).

Sample: the null repeats every fit at least 19 times, so the probe runs on at most ``max_images`` images
(:data:`MAX_IMAGES`) and within ``max_work`` (:data:`MAX_WORK`, the work of one permutation): above either,
on the largest species-stratified sample within both (:func:`latent.probes.common.largest_sample`; 10,000
images of 1,000 species: 1,975 images of 395 species), the same sample for the observed value and the null,
said in every row's ``note`` and ``info["sample"]``.

Reading the null: with a random split the test images belong to species seen in training, and random
groups of tight species clusters are often linearly separable as well (Cover's counting argument), so
the random-split null can sit near 1 at fine ranks even on embeddings with no hierarchy; its accuracy
says how well images are separated, not that the separation follows the taxonomy. The species-disjoint
split is the informative test: a random group of species gives nothing that carries over to unseen
species, so its null sits at the no-information level of that split and only a real hierarchy scores
above it (tests/test_probes_separability.py shows both on planted and on structureless data).

CIs
---
Images of one species are not independent, so the CI of each accuracy is a cluster bootstrap over the
test species scored at the rank (:func:`latent.stats.cluster_ci`: a resample draws whole species, the
accuracy is the image-weighted accuracy of the drawn species; seeded). With fewer than
:data:`latent.stats.MIN_CLUSTERS` such species there is no CI and ``ci_note`` says so.

Rows
----
``probe="separability"``, metric ``linear_accuracy``, one row per (split, rank): ``value``, ``ci_low``,
``ci_high``, ``n`` (test images scored; also ``n_units``, with ``unit = "image"``), ``n_test_unscored``
(labelled test images left out by the coverage rule) and ``coverage`` (the same in words), ``split``, ``n_species`` (test species scored at the rank: the
units of the CI; for the random split, the species with test images), ``n_taxa`` (distinct taxa among
them), ``ci_note``, ``chance`` (test share of the most frequent class), ``C`` (the C of the observed
fit), ``C_rule``, and the null columns of :func:`latent.probes.base.null_row` (alternative
``"greater"``). ``tables["null"]``: the null accuracies (``rank, metric, permutation, value, split``).
"""

from __future__ import annotations

import logging
import math
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from latent.errors import InputError
from latent.probes.base import ProbeData, ProbeOptions, ProbeResult, null_row, species_permutations
from latent.probes.common import DEFAULT_N_BOOT, MIN_PERMUTATIONS, int_setting, progress
from latent.probes.common import default_permutations as common_default_permutations
from latent.ranks import RANKS, Rank
from latent.stats import cluster_ci

if TYPE_CHECKING:  # pragma: no cover
    from latent.linear import FixedCLogistic

__all__ = ["probe_separability", "SPLITS", "C_RULES", "DEFAULT_PERMUTATIONS", "MIN_PERMUTATIONS", "NULL_WORK",
           "default_permutations", "permutation_work", "MAX_IMAGES", "MAX_WORK"]

log = logging.getLogger(__name__)

SPLITS = ("random", "species-disjoint")

#: How C is set (the ``C`` setting also takes a positive number).
C_RULES = ("observed", "sweep")

#: Default permutations of the null when the ``permutations`` setting is absent (at most ``options.permutations``).
DEFAULT_PERMUTATIONS = 99
#: Budget of the default null, in units of :func:`permutation_work` (multiply-adds of one pass of every
#: fit of a permutation over its training images): ~1e10 is a few minutes of CPU on 2 cores.
NULL_WORK = 1e10


def permutation_work(data: ProbeData, n_splits: int, test_fraction: float) -> float:
    """Work of one null permutation: ``n_splits x train images x d x`` the named taxa of kingdom..genus.

    The cost of a logistic fit grows with rows x dimensions x classes; species are not refit in the null
    (random split: invariant; species-disjoint: not scored).
    """
    taxa = sum(len(np.unique(data.codes[data.named[:, r], r])) for r in range(len(RANKS) - 1))
    return float(n_splits) * (1.0 - test_fraction) * data.X.shape[0] * data.X.shape[1] * taxa


def default_permutations(requested: int, work: float) -> int:
    """The null's permutations when the setting is absent: ``min(requested, 99)``, fewer on large data
    (``NULL_WORK / work``) but never fewer than ``min(requested, 19)``."""
    return common_default_permutations(requested, work, cap=DEFAULT_PERMUTATIONS, budget=NULL_WORK)


def _masked_codes(data: ProbeData, codes: np.ndarray, named: np.ndarray) -> np.ndarray:
    """``(n, 7)`` image codes with -1 where the image's species is not named at the rank."""
    return np.where(named[data.species], codes[data.species], -1)


def _split(data: ProbeData, split: str, codes: np.ndarray, seed: int, test_fraction: float, *,
           level: int = logging.INFO) -> tuple[np.ndarray, np.ndarray]:
    """Train and test image indices: the one split rule, for the real codes and for permuted ones.

    Parameters
    ----------
    codes
        ``(S, 7)`` species lineage codes (``data.codes`` or ``data.permuted_codes(perm)``).

    Returns
    -------
    train, test : numpy.ndarray
        Sorted ``int64`` indices into ``data.X``. ``random``: :func:`latent.splits.random_split` (does
        not depend on ``codes``); ``species-disjoint``: the rule of
        :func:`latent.splits.species_disjoint_split` (kingdom coverage) on ``codes``, so that with
        ``codes = data.codes`` it is exactly ``species_disjoint_split(data.taxonomy, ...,
        coverage_rank="kingdom")``.
    """
    from latent.splits import random_split, species_disjoint_mask

    if split == "random":
        return random_split(data.taxonomy, test_fraction=test_fraction, seed=seed)
    in_test = species_disjoint_mask(codes, test_fraction, seed, Rank.KINGDOM, level=level)
    test = in_test[data.species]
    return np.flatnonzero(~test).astype(np.int64), np.flatnonzero(test).astype(np.int64)


@dataclass(frozen=True)
class _Scored:
    """One rank's score: the scored test images' correctness, species and labels."""

    correct: np.ndarray  # (m,) 0/1
    species: np.ndarray  # (m,) species index
    labels: np.ndarray  # (m,) taxon code at the rank

    @property
    def accuracy(self) -> float:
        return float(self.correct.mean()) if self.correct.size else math.nan


def _trainable(Y: np.ndarray, train: np.ndarray, test: np.ndarray, r: Rank) -> bool:
    """At least two classes among the labelled train images and one test image of a trained class."""
    labels = np.unique(Y[train, r][Y[train, r] >= 0])
    return len(labels) >= 2 and bool(np.isin(Y[test, r], labels).any())


def _score(data: ProbeData, Y: np.ndarray, train: np.ndarray, test: np.ndarray, ranks: list[Rank],
           C: "dict[str, float] | None", fitter: "FixedCLogistic | None", fit: dict[str, Any]) -> dict[str, _Scored]:
    """Per rank: the probe trained on ``train`` and scored on the labelled ``test`` images.

    ``C`` None: the CLIP protocol (:func:`latent.linear.linear_probe_ranks`, sweep + refit) for every
    rank; otherwise one fit per rank at ``C[rank]`` with ``fitter``.
    """
    out: dict[str, _Scored] = {}
    if not ranks:
        return out
    if C is None:
        from latent.linear import linear_probe_ranks

        res = linear_probe_ranks(data.X[train], Y[train], data.X[test], Y[test], ranks=ranks, **fit)
        predictions = {rank: r.predict() for rank, r in res.results.items()}
    else:
        predictions = {}
        for r in ranks:
            keep = Y[train, r] >= 0
            predictions[r.label] = fitter.predict(train[keep], Y[train[keep], r], C[r.label], test)
    for r in ranks:
        if r.label not in predictions:
            continue
        # the coverage rule (latent.splits.predictable_truth): a test image counts at rank r only when
        # its rank-r taxon has a training image
        trained = Y[train, r]
        scored = (Y[test, r] >= 0) & np.isin(Y[test, r], trained[trained >= 0])
        labels = Y[test[scored], r]
        correct = (predictions[r.label][scored] == labels).astype(np.float64)
        out[r.label] = _Scored(correct, data.species[test[scored]], labels)
    return out


def _species_ci(correct: np.ndarray, species: np.ndarray, *, n_boot: int, seed: int) -> tuple[float, float, str]:
    """Cluster-bootstrap CI of an accuracy over the species of the scored images.

    A resample draws the distinct species of ``species`` with replacement (:func:`latent.stats.cluster_ci`)
    and its accuracy is ``sum of correct / number of images`` over the drawn species (each counted as
    often as drawn). Returns ``(low, high, note)``: NaN bounds and a note below
    :data:`latent.stats.MIN_CLUSTERS` species.
    """
    _, unit = np.unique(species, return_inverse=True)
    hits = np.bincount(unit, weights=np.asarray(correct, dtype=np.float64)).astype(np.float64)
    images = np.bincount(unit).astype(np.float64)
    return cluster_ci(lambda w: (w @ hits) / (w @ images), len(images), n_boot=n_boot, seed=seed, unit="species")


def _C_rule(value: Any) -> "str | float":
    if isinstance(value, str) and value in C_RULES:
        return value
    if not isinstance(value, bool) and isinstance(value, (int, float, np.number)) and 0 < float(value) < math.inf:
        return float(value)
    raise InputError(f"The 'C' setting of the separability probe must be one of {', '.join(C_RULES)} or a positive "
                     f"number. Got {value!r}.")


#: Images the separability probe fits on at most (a species-stratified sample above it, stated in its rows):
#: its linear fits grow with images x classes, and the permutation null repeats them.
MAX_IMAGES = 20_000
#: Largest work of one null permutation (:func:`permutation_work`, both splits) the probe runs on by default
#: (setting ``max_work``): above it, the largest species-stratified sample within it. The null repeats every
#: fit at least :data:`MIN_PERMUTATIONS` times, so this bounds the probe's time: 1.5e9 is the size of the 1,030
#: real embeddings of ``tol1k`` (1.35e9, the whole probe ~5 minutes on 2 cores; BENCHMARKS.md); 10,000 images of
#: 1,000 species are 1.3e10 (measured: 19 permutations would take ~50 minutes).
MAX_WORK = 1.5e9


def _sample_work(data: ProbeData, rows: np.ndarray, n_splits: int, test_fraction: float) -> float:
    """:func:`permutation_work` of the images ``rows`` (their species' named taxa of kingdom..genus)."""
    species = np.unique(data.species[rows])
    taxa = sum(len(np.unique(data.codes[species[data.named[species, r]], r])) for r in range(len(RANKS) - 1))
    return float(n_splits) * (1.0 - test_fraction) * len(rows) * data.X.shape[1] * taxa


def _capped_sample(data: ProbeData, cap: int, max_work: float, n_splits: int, test_fraction: float,
                   seed: int) -> "tuple[np.ndarray, str] | None":
    """The largest species-stratified sample (:func:`latent.probes.common.largest_sample`, 5 images per
    species at least) within ``cap`` images and ``max_work``, and why it was drawn; None when every image
    fits both."""
    from latent.probes.common import largest_sample

    rows, whole = largest_sample(data.species, data.n_species,
                                 lambda rows: _sample_work(data, rows, n_splits, test_fraction) <= max_work,
                                 max_rows=cap, min_per_species=5, seed=seed, tag=7)
    if whole:
        return None if len(rows) == len(data.X) else (rows, f"separability.max_images={cap}")
    return rows, f"separability.max_work={max_work:.3g}: one null permutation's fits, images x d x taxa x splits"


def probe_separability(data: ProbeData, options: ProbeOptions) -> ProbeResult:
    """:func:`_probe_separability` on at most ``max_images`` images (setting; default :data:`MAX_IMAGES`) and
    within ``max_work`` (setting; default :data:`MAX_WORK`, the work of one null permutation,
    :func:`permutation_work`): above either, on the largest seeded sample stratified by species that fits both
    (5 or more images per species; when the cap cannot hold 5 of every species, 5 images of a random subset of
    the species: a linear fit needs rows per class), said in every row's ``note`` and in ``info["sample"]``.
    The null is run on the same sample, so the comparison with it stays exact; the rows' ``n`` and
    ``n_species`` are the sample's."""
    opts = options.for_probe("separability")
    cap = opts.get("max_images", MAX_IMAGES)
    if isinstance(cap, bool) or not isinstance(cap, (int, np.integer)) or cap < 4:
        raise InputError(f"The 'max_images' setting of the separability probe must be an integer >= 4. Got {cap!r}.")
    max_work = opts.get("max_work", MAX_WORK)
    if isinstance(max_work, bool) or not isinstance(max_work, (int, float, np.number)) or not 0 < max_work:
        raise InputError(f"The 'max_work' setting of the separability probe must be a positive number (multiply-adds "
                         f"of one null permutation; default {MAX_WORK:.3g}). Got {max_work!r}.")
    splits = opts.get("splits", list(SPLITS))
    n_splits = 1 if isinstance(splits, str) else max(1, len(list(splits)))
    test_fraction = opts.get("test_fraction", 0.3)
    tf = float(test_fraction) if isinstance(test_fraction, (int, float)) and 0 < test_fraction < 1 else 0.3
    n = len(data.X)
    capped = _capped_sample(data, int(cap), float(max_work), n_splits, tf, options.seed)
    if capped is None:
        return _probe_separability(data, options)
    rows, why = capped
    sample = ProbeData.from_arrays(data.X[rows], data.taxonomy.select_rows(rows), np.asarray(data.ids)[rows])
    log.info("separability: a species-stratified sample of %d of %d images (%d of %d species; %s)",
             len(rows), n, sample.n_species, data.n_species, why)
    result = _probe_separability(sample, options)
    note = (f"on a species-stratified sample of {len(rows)} of {n} images ({sample.n_species} of {data.n_species} "
            f"species; {why})")
    frame = result.rows.copy()
    old = frame["note"].fillna("").astype(str) if "note" in frame.columns else pd.Series("", index=frame.index)
    frame["note"] = [f"{o}; {note}" if o else note for o in old]
    info = {**dict(result.info), "sample": {"images": int(len(rows)), "of": int(n), "species": sample.n_species,
                                             "max_images": int(cap), "max_work": float(max_work)}}
    return ProbeResult(result.probe, frame, result.arrays, result.tables, info)


def _probe_separability(data: ProbeData, options: ProbeOptions) -> ProbeResult:
    """Linear probe accuracy per rank on random and species-disjoint splits, with a permutation null.

    Parameters
    ----------
    data
        Image embeddings ``(n, d)`` and their species.
    options
        ``seed`` (splits, probes, bootstrap, permutations), ``device``, ``permutations`` (the number of
        null permutations); probe settings (``options.extra["separability"]``): ``splits`` (default
        both), ``test_fraction`` (0.3), ``permutations`` (default :func:`default_permutations`), ``C``
        (``"observed"``, ``"sweep"`` or a number; see the module docstring), ``n_boot`` (1000, species
        bootstrap), and ``max_iter``/``tol``/``grid``/``refine`` of the linear probe.

    Returns
    -------
    ProbeResult
        Rows per (split, rank); ``tables["null"]`` the null accuracies (with a ``split`` column);
        ``info``: ``permutations``, ``splits``, ``C_rule``, ``null`` (what a null value is), ``fits``
        and ``fits_not_converged`` (fixed-C fits that stopped at ``max_iter``), ``skipped``.
    """
    t0 = time.perf_counter()
    opts = options.for_probe("separability")
    splits = opts.get("splits", list(SPLITS))
    splits = [splits] if isinstance(splits, str) else list(splits)
    bad = [s for s in splits if s not in SPLITS]
    if bad or not splits:
        raise InputError(f"The 'splits' setting of the separability probe must name splits from "
                         f"{', '.join(SPLITS)}. Got {splits!r}.")
    n_perm = opts.get("permutations", None)
    test_fraction = opts.get("test_fraction", 0.3)
    if isinstance(test_fraction, bool) or not isinstance(test_fraction, (int, float)) or not 0 < test_fraction < 1:
        raise InputError(f"The 'test_fraction' setting of the separability probe must be a number in (0, 1). "
                         f"Got {test_fraction!r}.")
    test_fraction = float(test_fraction)
    if n_perm is None:
        work = permutation_work(data, len(splits), test_fraction)
        n_perm = default_permutations(options.permutations, work)
        if n_perm < options.permutations:
            log.info("separability: %d of %d permutations (fits of one permutation ~%.2g multiply-adds per pass; "
                     "set separability.permutations for more)", n_perm, options.permutations, work)
    if isinstance(n_perm, bool) or not isinstance(n_perm, (int, np.integer)) or n_perm < 0:
        raise InputError(f"The 'permutations' setting of the separability probe must be an integer >= 0. "
                         f"Got {n_perm!r}.")
    n_perm = int(n_perm)
    n_boot = int_setting(opts, "n_boot", DEFAULT_N_BOOT, "separability")
    rule = _C_rule(opts.get("C", "observed"))
    fit = {"seed": options.seed, "device": options.device}
    fit.update({k: opts[k] for k in ("max_iter", "tol", "grid", "refine") if k in opts})
    max_iter, tol = opts.get("max_iter", 500), opts.get("tol", 1e-3)
    if isinstance(max_iter, bool) or not isinstance(max_iter, (int, np.integer)) or max_iter < 1:
        raise InputError(f"The 'max_iter' setting of the separability probe must be an integer >= 1. Got {max_iter!r}.")
    if isinstance(tol, bool) or not isinstance(tol, (int, float)) or not 0 < tol < math.inf:
        raise InputError(f"The 'tol' setting of the separability probe must be a positive number. Got {tol!r}.")
    from latent.linear import FixedCLogistic

    fitter = None if rule == "sweep" else FixedCLogistic(data.X, device=options.device, max_iter=max_iter, tol=tol)

    rows: list[dict[str, Any]] = []
    nulls: list[dict[str, Any]] = []
    skipped: dict[str, str] = {}
    Y = _masked_codes(data, data.codes, data.named)
    for split in splits:
        try:
            train, test = _split(data, split, data.codes, options.seed, test_fraction)
        except InputError as e:
            skipped[split] = str(e)
            log.warning("separability: split %s skipped: %s", split, e)
            continue
        ranks = []
        for r in RANKS:
            if split == "species-disjoint" and r == Rank.SPECIES:
                continue
            if not _trainable(Y, train, test, r):
                skipped[f"{split}/{r.label}"] = "fewer than 2 classes in training or no labelled test image"
                continue
            ranks.append(r)
        if not ranks:
            continue
        if rule == "observed":  # the CLIP sweep on the real taxonomy, once per rank; then C is fixed
            from latent.linear import linear_probe_ranks

            sweep = linear_probe_ranks(data.X[train], Y[train], data.X[test], Y[test], ranks=ranks, **fit)
            C = {rank: float(res.best_C) for rank, res in sweep.results.items()}
        elif rule == "sweep":
            C = None
        else:
            C = {r.label: float(rule) for r in ranks}
        observed = _score(data, Y, train, test, ranks, C, fitter, fit)
        null_ranks = [r for r in ranks if not (split == "random" and r == Rank.SPECIES)]
        null_values: dict[str, list[float]] = {r.label: [] for r in null_ranks}
        if n_perm and null_ranks:
            log.info("separability: %s null, %d permutations x %d ranks", split, n_perm, len(null_ranks))
            perms = progress(enumerate(species_permutations(data.n_species, n_perm, options.seed)), total=n_perm,
                             desc=f"separability null ({split})")
            for p, perm in perms:
                codes_p = data.permuted_codes(perm)
                Yp = _masked_codes(data, codes_p, data.permuted_named(perm))
                try:  # the observed rule on the permuted tree (the random split does not depend on it)
                    train_p, test_p = (train, test) if split == "random" else _split(
                        data, split, codes_p, options.seed, test_fraction, level=logging.DEBUG)
                except InputError:  # pragma: no cover - the permuted tree has the same shape
                    train_p, test_p = train, test[:0]
                ok = [r for r in null_ranks if len(test_p) and _trainable(Yp, train_p, test_p, r)]
                scores = _score(data, Yp, train_p, test_p, ok, C, fitter, fit)
                for r in null_ranks:
                    value = scores[r.label].accuracy if r.label in scores else np.nan
                    null_values[r.label].append(value)
                    nulls.append({"rank": r.label, "metric": "linear_accuracy", "permutation": p, "value": value,
                                  "split": split})
        for r in ranks:
            if r.label not in observed:
                continue
            s = observed[r.label]
            chance = float(np.bincount(s.labels).max() / len(s.labels)) if len(s.labels) else np.nan
            low, high, note = _species_ci(s.correct, s.species, n_boot=n_boot, seed=options.seed)
            null = np.asarray(null_values.get(r.label, []), dtype=np.float64)
            labelled = int((Y[test, r] >= 0).sum())
            left_out = labelled - len(s.correct)
            coverage = (f"scored on {len(s.correct)} of {labelled} test images, whose {r.label} has a training "
                        f"image" if left_out else "")
            rows.append(null_row(r.label, "linear_accuracy", s.accuracy, null if null.size else None, len(s.correct),
                                 ci=(low, high), split=split, n_species=len(np.unique(s.species)),
                                 n_taxa=len(np.unique(s.labels)), ci_note=note, chance=chance,
                                 C=np.nan if C is None else C[r.label], C_rule=str(rule), unit="image",
                                 n_units=len(s.correct), n_test_unscored=left_out, coverage=coverage))
    if not rows:
        raise InputError("The separability probe found no rank with 2 or more classes to learn on any split: "
                         + "; ".join(f"{k}: {v}" for k, v in skipped.items()))
    null_table = pd.DataFrame(nulls, columns=["rank", "metric", "permutation", "value", "split"])
    seconds = time.perf_counter() - t0
    fits = None if fitter is None else fitter.fits
    log.info("separability: %d permutations, C %s, %s fits, %.1fs", n_perm, rule,
             "sweep" if fits is None else fits, seconds)
    info = {
        "skipped": skipped, "permutations": n_perm, "splits": splits, "C_rule": str(rule),
        "null": "species permuted among the leaves; the split redrawn by the same rule on the permuted tree "
                "(species-disjoint); the same fit as the observed value"
                + (" (CLIP sweep + refit each time)" if rule == "sweep" else " at the same C per rank"),
        "fits": fits, "fits_not_converged": None if fitter is None else fitter.not_converged,
    }
    return ProbeResult("separability", pd.DataFrame(rows), tables={"null": null_table}, info=info)
