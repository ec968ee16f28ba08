"""Ranked predictions at every rank: the object every predictor returns and every metric reads.

Taxa are node codes of one :class:`~latent.taxonomy.Taxonomy` (the cache's), so a prediction is a full
lineage, never a bare name: homonyms cannot be confused.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from latent.ranks import RANK_NAMES, RANKS, Rank
from latent.taxonomy import Taxonomy

__all__ = ["Predictions", "topk_from_scores", "flat_to_ranks", "rank_indicator"]


@dataclass(frozen=True)
class Predictions:
    """Top-k predictions at each of the seven ranks for ``n`` test rows.

    Attributes
    ----------
    taxonomy : Taxonomy
        The label space; codes below are its node indices (``taxonomy.node_names[r][code]``).
    rows : numpy.ndarray
        ``(n,)`` int, the test rows (row indices of ``taxonomy`` / of the cache).
    ids : numpy.ndarray
        ``(n,)`` str, the ids of those rows.
    true : numpy.ndarray
        ``(n, 7)`` int, the true node at each rank, ``-1`` where the row is unlabelled at that rank.
    topk : numpy.ndarray
        ``(n, 7, k)`` int, the predicted nodes at each rank, best first; ``-1`` pads ranks with fewer
        than ``k`` candidates and ranks the predictor does not predict.
    scores : numpy.ndarray
        ``(n, 7, k)`` float, the score of each ``topk`` entry (a probability where the predictor has
        one; NaN for padding).
    method : str
        Which predictor made them (``zero-shot``, ``linear``, ``knn``, ``centroid``).
    mode : str
        ``flat`` (species scores mapped up the lineage: probabilities summed, or for the centroid
        predictor the nearest species), ``per-rank`` (each rank predicted directly) or ``top-down``
        (each rank chosen among the children of the rank above's top-1, :mod:`latent.topdown`).
    info : dict
        Anything else worth recording (split, seed, chosen C, ...).
    n_candidates : numpy.ndarray or None
        ``(7,)`` int, how many taxa the predictor chose among at each rank (its candidate set: the
        classes a probe learned, the taxa with a text, the taxa of the train rows; ``0`` where the rank
        is not predicted). ``None`` when unknown; the metrics then count the distinct taxa named
        anywhere in ``topk`` at that rank. Top-k at a rank with ``k`` or fewer candidates is trivially
        1 and is not reported (:mod:`latent.metrics`).
    """

    taxonomy: Taxonomy
    rows: np.ndarray
    ids: np.ndarray
    true: np.ndarray
    topk: np.ndarray
    scores: np.ndarray
    method: str
    mode: str
    info: dict[str, Any] = field(default_factory=dict)
    n_candidates: "np.ndarray | None" = None

    def __post_init__(self) -> None:
        n = len(self.rows)
        if self.true.shape != (n, 7) or self.topk.ndim != 3 or self.topk.shape[:2] != (n, 7) or self.scores.shape != self.topk.shape:
            raise ValueError(
                f"Predictions arrays disagree: rows {n}, true {self.true.shape}, topk {self.topk.shape}, scores {self.scores.shape}"
            )
        if self.n_candidates is not None:
            counts = np.asarray(self.n_candidates)
            if counts.shape != (7,) or not np.issubdtype(counts.dtype, np.integer) or (counts < 0).any():
                raise ValueError(f"Predictions.n_candidates must be 7 non-negative integers (one per rank). Got {counts!r}.")
            object.__setattr__(self, "n_candidates", counts.astype(np.int64))

    def candidates(self, rank: "Rank | int") -> int:
        """How many taxa were ranked at ``rank``: :attr:`n_candidates` where known, else the number of
        distinct taxa named anywhere in ``topk[:, rank, :]`` (a lower bound)."""
        if self.n_candidates is not None:
            return int(self.n_candidates[int(rank)])
        col = self.topk[:, int(rank), :]
        return int(np.unique(col[col >= 0]).size)

    @property
    def n(self) -> int:
        return len(self.rows)

    @property
    def k(self) -> int:
        return int(self.topk.shape[2])

    def top1(self, rank: "Rank | int") -> np.ndarray:
        """``(n,)`` predicted node at ``rank`` (``-1`` where not predicted)."""
        return self.topk[:, int(rank), 0]

    def to_frame(self, k_species: int = 5) -> pd.DataFrame:
        """One row per test image: ``id``, ``true_<rank>``, ``pred_<rank>`` (top-1 names; species are
        binomials; ``""`` = unlabelled / not predicted), ``true_lineage_<rank>``, ``pred_lineage_<rank>``
        (full lineages joined by ``";"``), and the top-``k_species`` species with scores
        (``top{i}_species``, ``top{i}_score``)."""
        tax = self.taxonomy
        names = [np.append(np.asarray(tax.node_names[r], dtype=object).astype(str), "") for r in RANKS]  # -1 -> ""
        out: dict[str, Any] = {"id": self.ids}
        for r in RANKS:
            out[f"true_{r.label}"] = names[r][self.true[:, r]]
        for r in RANKS:
            out[f"pred_{r.label}"] = names[r][self.topk[:, r, 0]]
        for r in RANKS:  # full lineages ("Animalia;Chordata;...") tell homonyms apart
            lineages = np.array([";".join(tax.lineage(r, node)) for node in range(tax.n_nodes(r))] + [""], dtype=object)
            out[f"true_lineage_{r.label}"] = lineages[self.true[:, r]]
            out[f"pred_lineage_{r.label}"] = lineages[self.topk[:, r, 0]]
        for i in range(min(k_species, self.k)):
            out[f"top{i + 1}_species"] = names[Rank.SPECIES][self.topk[:, Rank.SPECIES, i]]
            out[f"top{i + 1}_score"] = self.scores[:, Rank.SPECIES, i]
        return pd.DataFrame(out)


def topk_from_scores(scores: np.ndarray, classes: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Best ``k`` classes per row.

    Parameters
    ----------
    scores
        ``(n, C)`` higher is better.
    classes
        ``(C,)`` node code of each column.
    k
        How many to keep; columns beyond ``C`` are padded with ``-1`` / NaN.

    Returns
    -------
    codes, values : numpy.ndarray
        ``(n, k)`` int and ``(n, k)`` float, best first (ties inside the k kept are broken by column
        order; which of several tied classes enters at the k-th place is not specified).
    """
    n, c = scores.shape
    kk = min(k, c)
    if kk < c:  # partial selection first (O(n c)), then a stable sort of the k kept
        part = np.sort(np.argpartition(-scores, kk - 1, axis=1)[:, :kk], axis=1)
        inner = np.argsort(-np.take_along_axis(scores, part, axis=1), axis=1, kind="stable")
        order = np.take_along_axis(part, inner, axis=1)
    else:
        order = np.argsort(-scores, axis=1, kind="stable")
    codes = np.full((n, k), -1, dtype=np.int64)
    values = np.full((n, k), np.nan)
    codes[:, :kk] = np.asarray(classes)[order]
    values[:, :kk] = np.take_along_axis(scores, order, axis=1)
    return codes, values


def rank_indicator(taxonomy: Taxonomy, rank: "Rank | int", species: "np.ndarray | None" = None):
    """Sparse ``(S, n_nodes[rank])`` 0/1 matrix: species ``s`` lies under node ``j`` at ``rank``.

    ``species`` restricts (and orders) the rows to those species codes.
    """
    from scipy import sparse

    codes = taxonomy.species_codes if species is None else taxonomy.species_codes[np.asarray(species)]
    r = int(rank)
    return sparse.csr_matrix(
        (np.ones(len(codes)), (np.arange(len(codes)), codes[:, r])), shape=(len(codes), taxonomy.n_nodes(r))
    )


def flat_to_ranks(
    species_probs: np.ndarray, taxonomy: Taxonomy, k: int = 5, species: "np.ndarray | None" = None
) -> tuple[np.ndarray, np.ndarray]:
    """Map species probabilities up the tree: a node's probability is the sum over its species.

    Parameters
    ----------
    species_probs
        ``(n, S')`` probabilities over the species ``species`` (default: all species of ``taxonomy``).
    taxonomy
        The tree.
    k
        Top-k kept per rank.
    species
        ``(S',)`` species codes of the columns (e.g. the species of a clade).

    Returns
    -------
    topk, scores : numpy.ndarray
        ``(n, 7, k)`` codes and summed probabilities at every rank (pybioclip's flat classifier).
    """
    n = species_probs.shape[0]
    topk = np.full((n, len(RANKS), k), -1, dtype=np.int64)
    scores = np.full((n, len(RANKS), k), np.nan)
    for r in RANKS:
        indicator = rank_indicator(taxonomy, r, species)
        node_probs = np.asarray(indicator.T.dot(species_probs.T).T)  # (n, n_nodes[r])
        present = np.flatnonzero(np.asarray(indicator.sum(axis=0)).ravel() > 0)
        topk[:, r], scores[:, r] = topk_from_scores(node_probs[:, present], present, k)
    return topk, scores


def lineage_counts(taxonomy: Taxonomy, species: np.ndarray) -> np.ndarray:
    """``(7,)`` number of distinct nodes at each rank above the species codes ``species`` (``(S',)``):
    the candidates at every rank of a flat (species-level) predictor over those species."""
    codes = taxonomy.species_codes[np.asarray(species, dtype=np.int64)]
    return np.array([np.unique(codes[:, r]).size for r in RANKS], dtype=np.int64)


def true_codes(taxonomy: Taxonomy, rows: np.ndarray) -> np.ndarray:
    """``(len(rows), 7)`` true node codes, ``-1`` where unlabelled at that rank."""
    return np.stack([taxonomy.codes(r)[rows] for r in RANKS], axis=1)


__all__ += ["true_codes", "lineage_counts"]
RANK_COLUMNS = tuple(f"pred_{name}" for name in RANK_NAMES)
