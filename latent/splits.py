"""Seeded train/test splits of the rows of a taxonomy (the rows of an embedding cache).

Every split takes ``rows`` (row indices into the taxonomy / cache; default all rows), keeps only the
rows labelled at species (the others are dropped, with a log line), and returns sorted ``int64`` row
indices. The same arguments always give the same split.

* :func:`random_split`: images split within every species in the same proportion (species seen in
  train and test: the usual closed-set evaluation).
* :func:`species_disjoint_split`: whole species go to train or to test, chosen so that every test
  species has relatives in train (does the space generalise to species never seen, at higher ranks?);
  :func:`species_disjoint_mask` is its rule on species lineages alone (for permuted lineages).
* :func:`kshot_split`: ``shots`` images per species as the support set, the rest as queries (the
  SimpleShot protocol of the BioCLIP papers, one seed per fold).

What a split can test (the coverage rule, :func:`predictable_truth`): a test image is scored at rank ``r``
only when its rank-``r`` taxon has an image in training. A trained predictor cannot name a taxon it never
saw, so such an image would count as a mistake no predictor could avoid. In a species-disjoint split the
species rank is never predictable; with ``coverage_rank`` above genus, a held-out species alone in its
genus is scored at family and above only. A random split keeps every test species in training (species
with one image stay in training), so nothing is left out there. Each metric row says how many test
images were scored at its rank and how many were not (:func:`coverage`).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

import numpy as np

from latent.errors import InputError, format_list
from latent.ranks import Rank, parse_rank
from latent.taxonomy import Taxonomy

__all__ = ["random_split", "species_disjoint_split", "species_disjoint_mask", "kshot_split", "check_rows",
           "predictable_truth", "coverage"]

log = logging.getLogger(__name__)


def check_rows(taxonomy: Taxonomy, rows: "np.ndarray | None", *, parameter: str = "rows", function: str = "split") -> np.ndarray:
    """Validate ``rows`` against ``taxonomy`` and return them as ``(n,)`` ``int64`` indices.

    Parameters
    ----------
    taxonomy
        The taxonomy the rows index.
    rows
        ``(n,)`` integer row indices, a ``(n_rows,)`` bool mask, or None for every row.
    parameter, function
        Names used in error messages.

    Raises
    ------
    InputError
        If indices are out of range, repeated, or not integers.
    """
    n_rows = taxonomy.n_rows
    if rows is None:
        return np.arange(n_rows, dtype=np.int64)
    array = np.asarray(rows)
    if array.dtype == bool:
        if array.shape != (n_rows,):
            raise InputError(
                f"The {parameter!r} parameter of {function} as a bool mask must have shape ({n_rows},). "
                f"Got {array.shape} instead."
            )
        return np.flatnonzero(array).astype(np.int64)
    if array.ndim != 1 or (array.size and not np.issubdtype(array.dtype, np.integer)):
        raise InputError(
            f"The {parameter!r} parameter of {function} must be a 1-d array of row indices. "
            f"Got an array of shape {array.shape} and dtype {array.dtype} instead."
        )
    array = array.astype(np.int64)
    bad = array[(array < 0) | (array >= n_rows)]
    if bad.size:
        raise InputError(
            f"The {parameter!r} parameter of {function} holds row indices outside 0..{n_rows - 1}: "
            f"{format_list(bad.tolist())}."
        )
    unique, counts = np.unique(array, return_counts=True)
    if (counts > 1).any():
        raise InputError(
            f"The {parameter!r} parameter of {function} repeats rows: {format_list(unique[counts > 1].tolist())}."
        )
    return array


def _check_fraction(value: float, function: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float, np.floating)) or not 0 < value < 1:
        raise InputError(f"The 'test_fraction' parameter of {function} must be a number in (0, 1). Got {value!r} instead.")
    return float(value)


def _check_int(value: int, name: str, function: str, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < minimum:
        raise InputError(f"The {name!r} parameter of {function} must be an integer >= {minimum}. Got {value!r} instead.")
    return int(value)


def _species_rows(taxonomy: Taxonomy, rows: "np.ndarray | None", function: str) -> tuple[np.ndarray, np.ndarray]:
    """The rows labelled at species and their species codes, ``(n,)`` each."""
    rows = check_rows(taxonomy, rows, function=function)
    species = taxonomy.codes(Rank.SPECIES)[rows]
    keep = species >= 0
    if not keep.all():
        log.info("%s: %d of %d rows are not labelled at species and take no part", function, int((~keep).sum()), len(rows))
    return rows[keep], species[keep]


def _rank_within_groups(groups: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """A random order inside each group.

    Returns
    -------
    position : numpy.ndarray
        ``(n,)`` 0-based position of each element in a random permutation of its group.
    size : numpy.ndarray
        ``(n,)`` size of each element's group.
    """
    n = len(groups)
    order = np.lexsort((rng.random(n), groups))
    sorted_groups = groups[order]
    starts = np.flatnonzero(np.r_[True, sorted_groups[1:] != sorted_groups[:-1]]) if n else np.zeros(0, dtype=np.int64)
    sizes = np.diff(np.r_[starts, n])
    position = np.empty(n, dtype=np.int64)
    position[order] = np.arange(n) - np.repeat(starts, sizes)
    size = np.empty(n, dtype=np.int64)
    size[order] = np.repeat(sizes, sizes)
    return position, size


def random_split(
    taxonomy: Taxonomy,
    rows: "np.ndarray | None" = None,
    *,
    test_fraction: float = 0.3,
    seed: int = 0,
) -> tuple[np.ndarray, np.ndarray]:
    """Split images at random, stratified by species.

    A species with ``n >= 2`` images puts ``round(test_fraction * n)`` of them in test, but at least
    one and at most ``n - 1`` (so every species appears in both sets); a species with a single image
    goes to train (their number is logged).

    Parameters
    ----------
    taxonomy
        The labels (one row per image / cache row).
    rows
        ``(n,)`` rows taking part (default all); rows unlabelled at species are dropped.
    test_fraction
        Share of each species' images in test, in (0, 1).
    seed
        Seed of the generator.

    Returns
    -------
    train_rows, test_rows : numpy.ndarray
        Sorted ``int64`` row indices, disjoint.
    """
    fraction = _check_fraction(test_fraction, "random_split")
    seed = _check_int(seed, "seed", "random_split", 0)
    rows, species = _species_rows(taxonomy, rows, "random_split")
    rng = np.random.default_rng(seed)
    position, size = _rank_within_groups(species, rng)
    n_test = np.clip(np.floor(fraction * size + 0.5).astype(np.int64), 1, np.maximum(size - 1, 0))
    test = position < n_test
    singles = np.unique(species[size == 1])
    if len(singles):
        log.info("random_split: %d species have a single image; it goes to train", len(singles))
    log.info("random_split: %d train and %d test images of %d species (test fraction %g, seed %d)",
             int((~test).sum()), int(test.sum()), len(np.unique(species)), fraction, seed)
    return np.sort(rows[~test]), np.sort(rows[test])


def species_disjoint_split(
    taxonomy: Taxonomy,
    rows: "np.ndarray | None" = None,
    *,
    test_fraction: float = 0.3,
    seed: int = 0,
    coverage_rank: "Rank | str | int" = "genus",
) -> tuple[np.ndarray, np.ndarray]:
    """Split whole species into train and test, keeping relatives of every test species in train.

    The rule, rank by rank from genus up to ``coverage_rank``:

    1. Group the species not yet assigned by their node at this rank (genus first). In every group of
       at least two species, about ``test_fraction`` of them go to test and the rest (at least one)
       to train: each group gets ``floor(test_fraction * size)`` test species, capped at ``size - 1``,
       and the remaining quota (``round(test_fraction * eligible)`` minus those) is given one species
       at a time to the groups with the largest fractional remainders, ties broken at random
       (largest-remainder rounding, so the test share of eligible species is ``test_fraction`` as
       closely as the caps allow). Which species of a group go to test is random.
    2. Species alone in their group stay unassigned and are grouped again at the next rank up
       (family, ...), until ``coverage_rank``; those still alone then go to train.

    With the default ``coverage_rank="genus"`` only genera with two or more species contribute test
    species, and species of single-species genera go to train. Every test species therefore shares
    its genus (or, with a higher ``coverage_rank``, its node at some rank no higher than that) with at
    least one train species: higher ranks of a test species are seen in training, the species is not.
    The fraction is a share of species, not of images.

    Parameters
    ----------
    taxonomy
        The labels (one row per image / cache row).
    rows
        ``(n,)`` rows taking part (default all); rows unlabelled at species are dropped.
    test_fraction
        Share of the eligible species put in test, in (0, 1).
    seed
        Seed of the generator.
    coverage_rank
        Highest rank at which a test species may be the only relative of train species (``genus``
        .. ``kingdom``).

    Returns
    -------
    train_rows, test_rows : numpy.ndarray
        Sorted ``int64`` row indices; no species has rows in both.

    Raises
    ------
    InputError
        If no species can go to test (no group of two or more species).
    """
    fraction = _check_fraction(test_fraction, "species_disjoint_split")
    seed = _check_int(seed, "seed", "species_disjoint_split", 0)
    top = parse_rank(coverage_rank, parameter="coverage_rank")
    if top > Rank.GENUS:
        raise InputError(
            f"The 'coverage_rank' parameter of species_disjoint_split must be genus or a higher rank. Got {coverage_rank!r} instead."
        )
    rows, species = _species_rows(taxonomy, rows, "species_disjoint_split")
    present = np.unique(species)
    in_test = species_disjoint_mask(taxonomy.species_codes[present], fraction, seed, top)
    test = np.isin(species, present[in_test])
    log.info("species_disjoint_split: %d train species (%d images), %d test species (%d images), seed %d",
             int((~in_test).sum()), int((~test).sum()), int(in_test.sum()), int(test.sum()), seed)
    return np.sort(rows[~test]), np.sort(rows[test])


def species_disjoint_mask(
    lineage: np.ndarray, fraction: float, seed: int, top: Rank = Rank.GENUS, *, level: int = logging.INFO
) -> np.ndarray:
    """The rule of :func:`species_disjoint_split` on species lineages: which species go to test.

    A function of the lineage codes and the seed only, so the same rule can be applied to permuted
    lineages (``lineage[perm]``: the tree keeps its shape, the species move), as a permutation null
    must (:mod:`latent.probes.separability` does). Arguments are not checked (the caller has:
    :func:`species_disjoint_split` is the checked entry point).

    Parameters
    ----------
    lineage
        ``(S, 7)`` node codes of the species (placeholders included), kingdom first.
    fraction, seed, top
        ``test_fraction``, ``seed`` and ``coverage_rank`` of :func:`species_disjoint_split`.
    level
        Logging level of the per-rank messages (``logging.DEBUG`` when called once per permutation).

    Returns
    -------
    numpy.ndarray
        ``(S,)`` bool, True for the test species.

    Raises
    ------
    InputError
        If no species can go to test (no group of two or more species).
    """
    rng = np.random.default_rng(seed)
    in_test = np.zeros(len(lineage), dtype=bool)
    pending = np.ones(len(lineage), dtype=bool)
    for r in range(Rank.GENUS, int(top) - 1, -1):
        idx = np.flatnonzero(pending)
        if not len(idx):
            break
        groups = lineage[idx, r]
        position, size = _rank_within_groups(groups, rng)
        eligible = size >= 2
        if not eligible.any():
            continue
        g_codes, g_size = np.unique(groups[eligible], return_counts=True)
        quota = fraction * g_size
        base = np.minimum(np.floor(quota).astype(np.int64), g_size - 1)
        extra = int(np.floor(fraction * eligible.sum() + 0.5)) - int(base.sum())
        if extra > 0:
            room = np.flatnonzero(base < g_size - 1)
            remainder = quota[room] - np.floor(quota[room])
            order = np.lexsort((rng.random(len(room)), -remainder))
            base[room[order[:extra]]] += 1
        n_test = np.zeros(len(idx), dtype=np.int64)
        n_test[eligible] = base[np.searchsorted(g_codes, groups[eligible])]
        chosen = eligible & (position < n_test)
        in_test[idx[chosen]] = True
        pending[idx[eligible]] = False
        log.log(level, "species_disjoint_split: at %s, %d groups of >= 2 species put %d of %d species in test",
                Rank(r).label, len(g_codes), int(chosen.sum()), int(eligible.sum()))
    if pending.any():
        log.log(level, "species_disjoint_split: %d species have no other species in their %s and go to train",
                int(pending.sum()), top.label)
    if not in_test.any():
        raise InputError(
            f"species_disjoint_split found no {top.label} with two or more species among the {len(lineage)} "
            "species given, so no species can be held out while keeping a relative in train. "
            "Pass a higher coverage_rank (e.g. family or order), or use a random split."
        )
    return in_test


def kshot_split(
    taxonomy: Taxonomy,
    rows: "np.ndarray | None" = None,
    *,
    shots: int,
    fold: int,
    seed: int = 0,
) -> tuple[np.ndarray, np.ndarray]:
    """Few-shot split: ``shots`` random images per species as support, the rest as queries.

    Folds follow the BioCLIP papers' SimpleShot protocol: fold ``f`` draws its support set with the
    generator seeded by ``seed + fold``, so folds differ and each is reproducible.

    Parameters
    ----------
    taxonomy
        The labels (one row per image / cache row).
    rows
        ``(n,)`` rows taking part (default all); rows unlabelled at species are dropped.
    shots
        Support images per species (>= 1).
    fold
        Fold index (>= 0).
    seed
        Base seed.

    Returns
    -------
    support_rows, query_rows : numpy.ndarray
        Sorted ``int64`` row indices; every species has exactly ``shots`` support rows and at least one
        query.

    Raises
    ------
    InputError
        If some species have fewer than ``shots + 1`` images (listed, first 20 and a count).
    """
    shots = _check_int(shots, "shots", "kshot_split", 1)
    fold = _check_int(fold, "fold", "kshot_split", 0)
    seed = _check_int(seed, "seed", "kshot_split", 0)
    rows, species = _species_rows(taxonomy, rows, "kshot_split")
    codes, counts = np.unique(species, return_counts=True)
    few = counts < shots + 1
    if few.any():
        labels = taxonomy.species_labels()
        listed = [f"{labels[c]} ({n} image{'s' if n != 1 else ''})" for c, n in zip(codes[few], counts[few])]
        raise InputError(
            f"{int(few.sum())} of {len(codes)} species have fewer than shots + 1 = {shots + 1} images, so "
            f"{shots}-shot leaves them no query: {format_list(listed)}. Lower --shots, or filter these species out."
        )
    rng = np.random.default_rng(seed + fold)
    position, _ = _rank_within_groups(species, rng)
    support = position < shots
    log.info("kshot_split: %d-shot fold %d: %d support and %d query images of %d species",
             shots, fold, int(support.sum()), int((~support).sum()), len(codes))
    return np.sort(rows[support]), np.sort(rows[~support])


def predictable_truth(true: np.ndarray, train_codes: np.ndarray, ranks: "Sequence[int] | None" = None) -> np.ndarray:
    """The true codes of test rows with the ranks a trained predictor cannot predict set to ``-1``.

    Parameters
    ----------
    true
        ``(n, 7)`` true node codes of the test rows (``-1`` unlabelled).
    train_codes
        ``(m, 7)`` node codes of the training rows.
    ranks
        The ranks the rule applies to (default all): the ranks the predictor predicts. A rank it does not
        predict (the species of a species-disjoint split) keeps its truth, which the hierarchical metrics
        use to know which rows have a species.

    Returns
    -------
    numpy.ndarray
        ``(n, 7)`` copy of ``true`` where a rank-``r`` taxon with no training row is ``-1`` (not scored at
        ``r``, like an unlabelled rank).
    """
    true = np.asarray(true)
    out = true.copy()
    train_codes = np.asarray(train_codes)
    for r in (range(true.shape[1]) if ranks is None else ranks):
        seen = np.unique(train_codes[:, r][train_codes[:, r] >= 0])
        out[(true[:, r] >= 0) & ~np.isin(true[:, r], seen), r] = -1
    return out


def coverage(true: np.ndarray, train_codes: np.ndarray,
             ranks: "Sequence[int] | None" = None) -> tuple[dict[str, str], dict[str, int]]:
    """What the coverage rule left out, per rank: a note for the metric rows and the count.

    Parameters
    ----------
    true
        ``(n, 7)`` true node codes of the test rows (``-1`` unlabelled; the species rank identifies species).
    train_codes
        ``(m, 7)`` node codes of the training rows.
    ranks
        As :func:`predictable_truth`.

    Returns
    -------
    notes : dict
        ``{rank: "scored on N of M test images (K of L species) whose <rank> has a training image"}`` for the
        ranks where some labelled test images were left out.
    unpredictable : dict
        ``{rank: number of labelled test images left out}`` for every rank (0 where none).
    """
    true = np.asarray(true)
    kept = predictable_truth(true, train_codes, ranks)
    species = true[:, Rank.SPECIES]
    notes: dict[str, str] = {}
    unpredictable: dict[str, int] = {}
    for r in (range(true.shape[1]) if ranks is None else ranks):
        label = Rank(r).label
        labelled = true[:, r] >= 0
        scored = kept[:, r] >= 0
        unpredictable[label] = int((labelled & ~scored).sum())
        if not unpredictable[label]:
            continue
        n_species = np.unique(species[labelled & (species >= 0)]).size
        s_species = np.unique(species[scored & (species >= 0)]).size
        notes[label] = (f"scored on {int(scored.sum())} of {int(labelled.sum())} test images ({s_species} of "
                        f"{n_species} species) whose {label} has a training image")
    return notes, unpredictable
