"""Linear separability per rank: the separability curve across ranks, with a species-permutation null.

For each split (``random``: images stratified by species; ``species-disjoint``: whole species held
out, so a rank is scored on species never seen in training) one linear probe per rank is trained with
the evaluation protocol of :func:`latent.linear.linear_probe_ranks` (multinomial logistic regression,
L2, C swept on a validation split, refit) and scored on the test images labelled at that rank.
Under ``species-disjoint`` the species rank is not scored (its test classes are never trained).

Null: the same probes with the species permuted among the leaves of the tree
(:mod:`latent.probes.base`): a rank's classes become random groups of species of the same sizes. With a
random split the species rank is unchanged by a permutation (species are only renamed), so its null
equals the observed value: the null at species answers nothing and is not run. Each null fit repeats the
whole protocol (C sweep included), so the null costs ``permutations`` times the observed probe; its
default is therefore ``min(options.permutations, 19)`` (p-values >= 0.05), settable with
``options.extra["separability"]["permutations"]``.

Reading the null: with a random split the test images belong to species seen in training, and random
groups of tight species clusters are often linearly separable as well (Cover's counting argument: a
few dozen well-separated clusters in hundreds of dimensions can be split almost any way), so the
random-split null can sit near 1 at fine ranks even on embeddings with no hierarchy; its accuracy says
how well images are separated, not that the separation follows the taxonomy. The species-disjoint split
is the informative test: a random group of species gives nothing that carries over to unseen species,
so its null is near 0 and only a real hierarchy scores above it (tests/test_probes_separability.py
shows both on planted data).

Rows (``probe="separability"``): per rank ``linear_accuracy`` with a ``split`` column, 95% bootstrap
CI over test images (seeded), ``chance`` (the test share of the most frequent class) as a column, and the
null columns of :func:`latent.probes.base.null_row` (alternative ``"greater"``).
"""

from __future__ import annotations

import logging
from typing import Any

import numpy as np
import pandas as pd

from latent.errors import InputError
from latent.probes.base import ProbeData, ProbeOptions, ProbeResult, null_row, species_permutations
from latent.ranks import RANK_NAMES, RANKS, Rank
from latent.stats import bootstrap_ci

__all__ = ["probe_separability", "SPLITS"]

log = logging.getLogger(__name__)

SPLITS = ("random", "species-disjoint")


def _masked_codes(data: ProbeData, codes: np.ndarray, named: np.ndarray) -> np.ndarray:
    """``(n, 7)`` image codes with -1 where the image's species is not named at the rank."""
    return np.where(named[data.species], codes[data.species], -1)


def _split(data: ProbeData, split: str, seed: int, test_fraction: float) -> tuple[np.ndarray, np.ndarray]:
    from latent.splits import random_split, species_disjoint_split

    if split == "random":
        return random_split(data.taxonomy, test_fraction=test_fraction, seed=seed)
    return species_disjoint_split(data.taxonomy, test_fraction=test_fraction, seed=seed)


def _accuracies(data: ProbeData, train: np.ndarray, test: np.ndarray, Y: np.ndarray, ranks: list[Rank],
                fit: dict[str, Any]) -> dict[str, tuple[float, np.ndarray]]:
    """Per rank: test accuracy and the ``(m,)`` 0/1 correctness of the labelled test images."""
    from latent.linear import linear_probe_ranks

    res = linear_probe_ranks(data.X[train], Y[train], data.X[test], Y[test], ranks=ranks, **fit)
    out = {}
    for rank, r in res.results.items():
        ri = RANK_NAMES.index(rank)
        scored = Y[test, ri] >= 0
        correct = (r.predict()[scored] == Y[test, ri][scored]).astype(np.float64)
        out[rank] = (float(correct.mean()) if correct.size else np.nan, correct)
    return out


def probe_separability(data: ProbeData, options: ProbeOptions) -> ProbeResult:
    """Linear probe accuracy per rank on random and species-disjoint splits, with a permutation null.

    Parameters
    ----------
    data
        Image embeddings ``(n, d)`` and their species.
    options
        ``seed`` (splits, probes, bootstrap, permutations), ``device``; probe settings
        (``options.extra["separability"]``): ``splits`` (default both), ``test_fraction`` (0.3),
        ``permutations`` (default ``min(options.permutations, 19)``), ``n_boot`` (1000), and
        ``max_iter``/``tol``/``grid``/``refine`` passed to the linear probe.

    Returns
    -------
    ProbeResult
        Rows per (split, rank); ``tables["null"]`` the null accuracies (with a ``split`` column).
    """
    opts = options.for_probe("separability")
    splits = opts.get("splits", list(SPLITS))
    splits = [splits] if isinstance(splits, str) else list(splits)
    bad = [s for s in splits if s not in SPLITS]
    if bad or not splits:
        raise InputError(f"The 'splits' setting of the separability probe must name splits from "
                         f"{', '.join(SPLITS)}. Got {splits!r}.")
    n_perm = int(opts.get("permutations", min(options.permutations, 19)))
    n_boot = int(opts.get("n_boot", 1000))
    test_fraction = float(opts.get("test_fraction", 0.3))
    fit = {"seed": options.seed, "device": options.device}
    fit.update({k: opts[k] for k in ("max_iter", "tol", "grid", "refine") if k in opts})

    rows: list[dict[str, Any]] = []
    nulls: list[dict[str, Any]] = []
    skipped: dict[str, str] = {}
    Y = _masked_codes(data, data.codes, data.named)
    for split in splits:
        try:
            train, test = _split(data, split, options.seed, test_fraction)
        except InputError as e:
            skipped[split] = str(e)
            log.warning("separability: split %s skipped: %s", split, e)
            continue
        ranks = []
        for r in RANKS:
            if split == "species-disjoint" and r == Rank.SPECIES:
                continue
            if len(np.unique(Y[train, r][Y[train, r] >= 0])) < 2 or not (Y[test, r] >= 0).any():
                skipped[f"{split}/{r.label}"] = "fewer than 2 classes in training or no labelled test image"
                continue
            ranks.append(r)
        if not ranks:
            continue
        observed = _accuracies(data, train, test, Y, ranks, fit)
        null_ranks = [r for r in ranks if not (split == "random" and r == Rank.SPECIES)]
        null_values: dict[str, list[float]] = {r.label: [] for r in null_ranks}
        if n_perm and null_ranks:
            for p, perm in enumerate(species_permutations(data.n_species, n_perm, options.seed)):
                Yp = _masked_codes(data, data.permuted_codes(perm), data.permuted_named(perm))
                ok = [r for r in null_ranks if len(np.unique(Yp[train, r][Yp[train, r] >= 0])) >= 2]
                accs = _accuracies(data, train, test, Yp, ok, fit) if ok else {}
                for r in null_ranks:
                    value = accs.get(r.label, (np.nan, None))[0]
                    null_values[r.label].append(value)
                    nulls.append({"rank": r.label, "metric": "linear_accuracy", "permutation": p, "value": value,
                                  "split": split})
        for r in ranks:
            acc, correct = observed[r.label]
            labels = Y[test, r][Y[test, r] >= 0]
            chance = float(np.bincount(labels).max() / len(labels)) if len(labels) else np.nan
            ci = bootstrap_ci(correct, n_boot=n_boot, seed=options.seed)
            null = np.asarray(null_values.get(r.label, []), dtype=np.float64)
            rows.append(null_row(r.label, "linear_accuracy", acc, null if null.size else None, len(correct),
                                 ci=ci, split=split, chance=chance))
    if not rows:
        raise InputError("The separability probe found no rank with 2 or more classes to learn on any split: "
                         + "; ".join(f"{k}: {v}" for k, v in skipped.items()))
    null_table = pd.DataFrame(nulls, columns=["rank", "metric", "permutation", "value", "split"])
    return ProbeResult("separability", pd.DataFrame(rows), tables={"null": null_table},
                       info={"skipped": skipped, "permutations": n_perm, "splits": splits})
