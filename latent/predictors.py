"""Predictors: rank every taxon of every rank for each test image, from embeddings.

Each function returns a :class:`~latent.predictions.Predictions` (top-``k`` node codes and scores at
the seven ranks; ``true`` is :func:`~latent.predictions.true_codes` of the test rows; ``n_candidates``
the number of taxa it chose among at each rank, which decides whether top-k is reported).

Modes
-----
``flat``
    One species-level classifier; a node at a higher rank scores the sum of its species'
    probabilities (pybioclip's ``TreeOfLifeClassifier``; :func:`~latent.predictions.flat_to_ranks`).
    The nearest-centroid predictor has distances, not probabilities: it maps up by the maximum (a
    node scores as its best species), see :func:`predict_centroid`.
``per-rank``
    Each rank predicted directly, from the rows labelled at that rank.

Species-disjoint splits
-----------------------
When the test species were never seen in training, the species rank cannot be predicted: pass
``predict_species=False`` and the species column of ``topk`` is ``-1`` (scores NaN); the metrics skip
that rank, and leave it out of hP/hR/hF and HCA. Flat mode needs the species and is refused then.

All embeddings are L2-normalised first (cosine geometry).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

import numpy as np

from latent.errors import InputError, TaxonomyError, format_list
from latent.predictions import Predictions, flat_to_ranks, lineage_counts, topk_from_scores, true_codes
from latent.ranks import RANKS, Rank, parse_rank
from latent.splits import check_rows
from latent.taxonomy import Taxonomy

__all__ = ["predict_zero_shot", "predict_knn", "predict_centroid", "predict_linear", "MODES"]

log = logging.getLogger(__name__)

MODES = ("flat", "per-rank")
_N_RANKS = len(RANKS)
_CHUNK_ELEMENTS = 1 << 25  # bound on a (chunk, n_candidates) block: 128 MB in float32


# ---------------------------------------------------------------------------------------- helpers
def _normalize(x: np.ndarray) -> np.ndarray:
    """Rows scaled to unit L2 norm (all-zero rows stay zero); float32 or float64 kept, else float64."""
    x = np.asarray(x)
    if x.dtype not in (np.float32, np.float64):
        x = x.astype(np.float64)
    norms = np.linalg.norm(x, axis=1, keepdims=True)
    return x / np.where(norms > 0, norms, 1)


def _check_embeddings(x: np.ndarray, rows: np.ndarray, name: str, rows_name: str, function: str,
                      dim: "int | None" = None) -> np.ndarray:
    array = np.asarray(x)
    if array.ndim != 2 or array.shape[0] != len(rows) or not np.issubdtype(array.dtype, np.number):
        raise InputError(
            f"The {name!r} parameter of {function} must be a numeric array of shape (len({rows_name}), D) = "
            f"({len(rows)}, D). Got shape {array.shape} and dtype {array.dtype} instead."
        )
    if dim is not None and array.shape[1] != dim:
        raise InputError(
            f"The {name!r} parameter of {function} has {array.shape[1]}-d embeddings, but the others are {dim}-d."
        )
    if not np.isfinite(array).all():
        raise InputError(f"The {name!r} parameter of {function} holds NaN or infinite values.")
    return array


def _check_common(function: str, mode: str, k: int, predict_species: bool) -> None:
    if mode not in MODES:
        raise InputError(f"The 'mode' parameter of {function} must be one of {', '.join(MODES)}. Got {mode!r} instead.")
    if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k < 1:
        raise InputError(f"The 'k' parameter of {function} must be an integer >= 1. Got {k!r} instead.")
    if mode == "flat" and not predict_species:
        raise InputError(
            f"{function}: mode='flat' needs the species (higher ranks are sums of species scores), but "
            "predict_species=False (the test species were not seen in training). Use mode='per-rank'."
        )


def _ids(ids: "np.ndarray | None", taxonomy: Taxonomy, rows: np.ndarray, function: str) -> np.ndarray:
    if ids is None:
        return rows.astype(str)
    array = np.asarray(ids).astype(str)
    if array.shape != (taxonomy.n_rows,):
        raise InputError(
            f"The 'ids' parameter of {function} must hold one id per taxonomy row, shape ({taxonomy.n_rows},). "
            f"Got shape {array.shape} instead."
        )
    return array[rows]


def _empty(n: int, k: int) -> tuple[np.ndarray, np.ndarray]:
    return np.full((n, _N_RANKS, k), -1, dtype=np.int64), np.full((n, _N_RANKS, k), np.nan)


def _finish(taxonomy: Taxonomy, rows: np.ndarray, ids: "np.ndarray | None", topk: np.ndarray, scores: np.ndarray,
            method: str, mode: str, predict_species: bool, info: dict[str, Any], function: str,
            n_candidates: np.ndarray) -> Predictions:
    """The Predictions; ``n_candidates`` ``(7,)`` is the number of taxa chosen among at each rank."""
    n_candidates = np.asarray(n_candidates, dtype=np.int64).copy()
    if not predict_species:
        topk[:, Rank.SPECIES] = -1
        scores[:, Rank.SPECIES] = np.nan
        n_candidates[Rank.SPECIES] = 0
    info = {"predict_species": bool(predict_species), **info}
    return Predictions(
        taxonomy=taxonomy, rows=rows, ids=_ids(ids, taxonomy, rows, function), true=true_codes(taxonomy, rows),
        topk=topk, scores=scores, method=method, mode=mode, info=info, n_candidates=n_candidates,
    )


def _softmax(logits: np.ndarray) -> np.ndarray:
    z = logits - logits.max(axis=1, keepdims=True)
    np.exp(z, out=z)
    z /= z.sum(axis=1, keepdims=True)
    return z


def _blocks(n: int, width: int, chunk_size: "int | None") -> list[slice]:
    """Slices of at most ``chunk_size`` rows (default: about ``_CHUNK_ELEMENTS / width`` rows)."""
    size = max(1, int(chunk_size) if chunk_size else _CHUNK_ELEMENTS // max(width, 1))
    return [slice(start, start + size) for start in range(0, n, size)]


def _ranks_to_predict(predict_species: bool) -> tuple[Rank, ...]:
    return RANKS if predict_species else RANKS[:-1]


# ---------------------------------------------------------------------------------------- zero-shot
def _node_keys(taxonomy: Taxonomy, rank: int) -> dict[str, int]:
    """``{lineage joined by ';': node}`` for every node at ``rank`` (the keys text embeddings carry)."""
    full: list[str] = [str(n) for n in taxonomy.node_names[0]]
    for r in range(1, rank + 1):
        parents = taxonomy.node_parents[r]
        full = [f"{full[p]};{n}" for p, n in zip(parents.tolist(), taxonomy.node_names[r].tolist())]
    return {key: node for node, key in enumerate(full)}


def _ancestors(taxonomy: Taxonomy, rank: int, nodes: np.ndarray, up_to: int) -> np.ndarray:
    """Node at rank ``up_to`` (<= ``rank``) above each of ``nodes`` at ``rank``."""
    out = np.asarray(nodes, dtype=np.int64)
    for r in range(rank, up_to, -1):
        out = taxonomy.node_parents[r][out]
    return out


def _resolve_clade(taxonomy: Taxonomy, clade: "tuple[Rank | str | int, str] | None") -> "tuple[Rank, int, str] | None":
    if clade is None:
        return None
    try:
        rank_value, name = clade
        rank = parse_rank(rank_value, parameter="clade")
    except (TypeError, ValueError) as e:
        raise InputError(
            f"The 'clade' parameter of predict_zero_shot must be a (rank, name) pair such as ('class', 'Insecta'). "
            f"Got {clade!r} instead."
        ) from e
    try:
        node = taxonomy.clade_node(rank, name)
    except TaxonomyError as e:
        raise InputError(f"The clade {rank.label} {name!r} cannot restrict the predictions: {e}") from e
    return rank, int(node), str(name)


def _text_candidates(taxonomy: Taxonomy, text: Mapping[Any, Any], rank: Rank, dim: int,
                     clade: "tuple[Rank, int, str] | None") -> tuple[np.ndarray, np.ndarray]:
    """Node codes ``(T',)`` and unit text embeddings ``(T', D)`` of the candidate taxa at ``rank``."""
    keys, emb = text[rank]
    keys = [str(k) for k in np.asarray(keys, dtype=object).tolist()]
    emb = np.asarray(emb)
    if emb.ndim != 2 or emb.shape[0] != len(keys):
        raise InputError(
            f"The {rank.label} texts given to predict_zero_shot must be (keys (T,), embeddings (T, D)); got "
            f"{len(keys)} keys and embeddings of shape {emb.shape}."
        )
    if emb.shape[1] != dim:
        raise InputError(
            f"The {rank.label} text embeddings are {emb.shape[1]}-d but the image embeddings are {dim}-d: "
            "text and images must come from the same model (run latent embed-text on this cache)."
        )
    lookup = _node_keys(taxonomy, rank)
    nodes = np.array([lookup.get(key, -1) for key in keys], dtype=np.int64)
    unknown = nodes < 0
    if unknown.any():
        log.info("zero-shot: %d of %d %s texts name taxa not in the taxonomy and are ignored (e.g. %s)",
                 int(unknown.sum()), len(keys), rank.label, format_list([keys[i] for i in np.flatnonzero(unknown)], limit=3))
    _, first = np.unique(nodes, return_index=True)
    keep = np.zeros(len(nodes), dtype=bool)
    keep[first] = True
    if (~keep & ~unknown).any():
        log.warning("zero-shot: %d %s texts repeat a taxon; the first of each is used", int((~keep & ~unknown).sum()), rank.label)
    keep &= ~unknown
    if clade is not None:
        c_rank, c_node, _ = clade
        keep &= _ancestors(taxonomy, rank, np.where(nodes >= 0, nodes, 0), c_rank) == c_node
    if not keep.any():
        if clade is not None:
            raise InputError(
                f"The clade {clade[0].label} {clade[2]!r} holds no {rank.label} with a text embedding: nothing to predict "
                "inside it. Check the clade name, or run latent embed-text for this cache."
            )
        raise InputError(
            f"None of the {len(keys)} {rank.label} texts names a taxon of this taxonomy: were they made for another "
            "cache? Run latent embed-text on this cache."
        )
    missing = taxonomy.n_taxa(rank) - int(keep.sum()) if clade is None else 0
    if missing > 0:
        log.info("zero-shot: %d %s taxa of the taxonomy have no text and are not candidates", missing, rank.label)
    return nodes[keep], _normalize(emb[keep].astype(np.float64))


def predict_zero_shot(
    X_test: np.ndarray,
    test_rows: np.ndarray,
    taxonomy: Taxonomy,
    text: "Mapping[str | Rank, tuple[np.ndarray, np.ndarray]]",
    *,
    mode: str = "flat",
    clade: "tuple[Rank | str | int, str] | None" = None,
    logit_scale: float = 100.0,
    k: int = 5,
    predict_species: bool = True,
    ids: "np.ndarray | None" = None,
    chunk_size: "int | None" = None,
) -> Predictions:
    """CLIP zero-shot classification against taxon-name text embeddings.

    Parameters
    ----------
    X_test
        ``(n, D)`` image embeddings of the test rows (L2-normalised here).
    test_rows
        ``(n,)`` their rows in ``taxonomy``.
    taxonomy
        The label space.
    text
        Per rank (a rank name such as ``"species"`` or a :class:`Rank`), ``(keys (T,), embeddings (T, D))``:
        keys are lineages joined by ``";"`` (``"Animalia;Chordata;...;Passer domesticus"``), as
        ``latent embed-text`` stores them. Keys not in the taxonomy are ignored (logged); taxa without a
        text are not candidates. Flat mode needs the species texts, per-rank mode every predicted rank's.
    mode
        ``"flat"``: ``softmax(logit_scale * cos)`` over the species, higher ranks summed up the lineage
        (pybioclip's ``TreeOfLifeClassifier``). ``"per-rank"``: a softmax over each rank's own texts.
    clade
        ``(rank, name)``, e.g. ``("class", "Insecta")``: only taxa inside this clade are candidates. In
        per-rank mode the clade's own lineage (the clade and the ranks above it) is then known and
        predicted with probability 1, without texts.
    logit_scale
        Multiplier of the cosine similarities before the softmax: the model's own learned scale
        ``exp(model.logit_scale)``, which ``latent embed-text`` stores with the text embeddings
        (``latent evaluate`` passes it); the default 100 is CLIP's (and BioCLIP's) trained value.
    k
        Top-``k`` kept per rank.
    predict_species
        False leaves the species column unpredicted (``-1``); refused in flat mode.
    ids
        ``(n_rows,)`` ids of every taxonomy row (the cache's); default the row numbers as strings.
    chunk_size
        Test rows per block (default: a block of about 32M similarities).

    Returns
    -------
    Predictions
        ``method="zero-shot"``; scores are probabilities.

    Raises
    ------
    InputError
        Rank texts missing ("run latent embed-text first"), no text matching the taxonomy, an unknown,
        ambiguous or empty clade, or inconsistent shapes.
    """
    function = "predict_zero_shot"
    _check_common(function, mode, k, predict_species)
    rows = check_rows(taxonomy, test_rows, parameter="test_rows", function=function)
    X = _check_embeddings(X_test, rows, "X_test", "test_rows", function)
    if not isinstance(logit_scale, (int, float, np.number)) or isinstance(logit_scale, bool) or not logit_scale > 0:
        raise InputError(f"The 'logit_scale' parameter of {function} must be a positive number. Got {logit_scale!r} instead.")
    by_rank: dict[Rank, Any] = {}
    for key, value in dict(text).items():
        try:
            by_rank[parse_rank(key, parameter="text")] = value
        except ValueError as e:
            raise InputError(f"The 'text' parameter of {function} has a key that is not a rank: {key!r}.") from e
    resolved = _resolve_clade(taxonomy, clade)
    fixed_through = int(resolved[0]) if resolved is not None else -1  # per-rank: ranks <= this are the clade lineage
    if mode == "flat":
        needed = [Rank.SPECIES]
    else:
        needed = [r for r in _ranks_to_predict(predict_species) if r > fixed_through]
    missing = [r.label for r in needed if r not in by_rank]
    if missing:
        raise InputError(
            f"{function} (mode {mode!r}) needs text embeddings for rank(s) {', '.join(missing)}, but the texts given "
            f"cover only {', '.join(r.label for r in sorted(by_rank)) or 'none'}. Run latent embed-text first "
            "(it stores /text/<rank>/<form> in the cache)."
        )
    n = len(rows)
    topk, scores = _empty(n, k)
    counts = np.zeros(_N_RANKS, dtype=np.int64)
    info: dict[str, Any] = {"logit_scale": float(logit_scale), "clade": None if resolved is None else f"{resolved[0].label}:{resolved[2]}"}
    if mode == "flat":
        nodes, emb = _text_candidates(taxonomy, by_rank, Rank.SPECIES, X.shape[1], resolved)
        for block in _blocks(n, len(nodes), chunk_size):
            probs = _softmax(logit_scale * (_normalize(X[block].astype(np.float64)) @ emb.T))
            topk[block], scores[block] = flat_to_ranks(probs, taxonomy, k=k, species=nodes)
        info["n_candidates"] = {"species": len(nodes)}
        counts = lineage_counts(taxonomy, nodes)
    else:
        info["n_candidates"] = {}
        for r in _ranks_to_predict(predict_species):
            if r <= fixed_through:
                topk[:, r, 0] = _ancestors(taxonomy, int(resolved[0]), np.array([resolved[1]]), int(r))[0]
                scores[:, r, 0] = 1.0
                counts[r] = 1
                continue
            nodes, emb = _text_candidates(taxonomy, by_rank, r, X.shape[1], resolved)
            for block in _blocks(n, len(nodes), chunk_size):
                probs = _softmax(logit_scale * (_normalize(X[block].astype(np.float64)) @ emb.T))
                topk[block, r], scores[block, r] = topk_from_scores(probs, nodes, k)
            info["n_candidates"][r.label] = len(nodes)
            counts[r] = len(nodes)
    log.info("zero-shot (%s): %d test images, candidates %s, logit scale %g", mode, n, info["n_candidates"], logit_scale)
    return _finish(taxonomy, rows, ids, topk, scores, "zero-shot", mode, predict_species, info, function, counts)


# ---------------------------------------------------------------------------------------- kNN
def _vote(labels: np.ndarray, weights: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Weighted votes of neighbours, summed per class.

    Parameters
    ----------
    labels
        ``(c, m)`` class of each neighbour, ``-1`` for neighbours that do not vote.
    weights
        ``(c, m)`` non-negative weight of each neighbour.
    k
        Classes kept per row.

    Returns
    -------
    codes, scores : numpy.ndarray
        ``(c, k)`` the best classes and their share of the votes (shares of all voting neighbours sum
        to 1; ``-1`` / NaN padding, and for rows without any voting neighbour).
    """
    voting = labels >= 0
    w = np.where(voting, weights, 0.0)
    same = labels[:, :, None] == labels[:, None, :]  # (c, m, m)
    totals = np.einsum("cij,cj->ci", same, w)
    m = labels.shape[1]
    earlier = np.tril(np.ones((m, m), dtype=bool), -1)  # earlier[i, j]: j < i
    first = ~(same & earlier[None]).any(axis=2) & voting
    norm = w.sum(axis=1, keepdims=True)
    with np.errstate(invalid="ignore", divide="ignore"):
        share = np.where(first, totals / norm, -np.inf)
    codes, values = topk_from_scores(share, np.arange(m), k)  # column indices first
    valid = (codes >= 0) & np.isfinite(values)
    out = np.full(codes.shape, -1, dtype=np.int64)
    rows_idx = np.nonzero(valid)
    out[rows_idx] = labels[rows_idx[0], codes[rows_idx]]
    return out, np.where(valid, values, np.nan)


def predict_knn(
    X_train: np.ndarray,
    train_rows: np.ndarray,
    X_test: np.ndarray,
    test_rows: np.ndarray,
    taxonomy: Taxonomy,
    *,
    k_neighbors: int = 20,
    temperature: float = 0.07,
    mode: str = "per-rank",
    k: int = 5,
    predict_species: bool = True,
    ids: "np.ndarray | None" = None,
    chunk_size: "int | None" = None,
    device: Any = "cpu",
) -> Predictions:
    """Weighted k-nearest-neighbour classifier (the DINO kNN probe) at every rank.

    Cosine similarity between L2-normalised embeddings; the ``k_neighbors`` most similar train rows
    vote with weight ``exp(sim / temperature)``; votes are summed per class and divided by the total
    weight of the voting neighbours, so scores are shares summing to 1.

    Parameters
    ----------
    X_train, train_rows
        ``(N, D)`` train embeddings and their ``(N,)`` taxonomy rows.
    X_test, test_rows
        ``(n, D)`` test embeddings and their ``(n,)`` rows.
    taxonomy
        The label space.
    k_neighbors
        Neighbours per test row (fewer if there are fewer train rows).
    temperature
        Softness of the weights (0.07 as in DINO).
    mode
        ``"per-rank"``: the same neighbours vote at every rank, neighbours unlabelled at a rank do not
        vote there (a row with no voting neighbour gets no prediction at that rank). ``"flat"``: only
        train rows labelled at species are neighbours; each votes for its species and, summed up the
        lineage, for the nodes above it (species shares summed, as in flat_to_ranks).
    k
        Top-``k`` kept per rank.
    predict_species
        False leaves the species column unpredicted (``-1``); refused in flat mode.
    ids
        ``(n_rows,)`` ids of every taxonomy row; default the row numbers as strings.
    chunk_size
        Test rows per block of similarities (default: about 32M similarities per block, e.g. 335 rows
        against 100k train rows); the result does not depend on it.
    device
        Where the neighbour search runs (:mod:`latent.kernels`: ``"auto"`` is torch on a GPU when there is
        one, numpy otherwise; default ``"cpu"``, numpy).

    Returns
    -------
    Predictions
        ``method="knn"``. A row's list at a rank names only the taxa its neighbours vote for, so it
        may be shorter than ``k`` (``-1`` padding; ``info["rows_with_short_lists"]`` counts them per
        rank). It is not padded with unvoted taxa (their order would be arbitrary): the metrics count
        the truth beyond the list as missed and say in the top-k row's ``note`` how many rows were
        short. ``n_candidates`` is the number of taxa among the train rows at each rank.
    """
    function = "predict_knn"
    _check_common(function, mode, k, predict_species)
    if isinstance(k_neighbors, bool) or not isinstance(k_neighbors, (int, np.integer)) or k_neighbors < 1:
        raise InputError(f"The 'k_neighbors' parameter of {function} must be an integer >= 1. Got {k_neighbors!r} instead.")
    if isinstance(temperature, bool) or not isinstance(temperature, (int, float, np.number)) or not temperature > 0:
        raise InputError(f"The 'temperature' parameter of {function} must be a positive number. Got {temperature!r} instead.")
    train = check_rows(taxonomy, train_rows, parameter="train_rows", function=function)
    test = check_rows(taxonomy, test_rows, parameter="test_rows", function=function)
    Xtr = _check_embeddings(X_train, train, "X_train", "train_rows", function)
    Xte = _check_embeddings(X_test, test, "X_test", "test_rows", function, dim=Xtr.shape[1])
    if mode == "flat":
        keep = taxonomy.labelled(Rank.SPECIES)[train]
        train, Xtr = train[keep], Xtr[keep]
        # each neighbour's lineage (placeholders included), as flat_to_ranks sums species up the tree
        train_labels = taxonomy.species_codes[taxonomy.codes(Rank.SPECIES)[train]]
    else:
        train_labels = np.stack([taxonomy.codes(r)[train] for r in RANKS], axis=1)
    if not len(train):
        raise InputError(f"{function} has no train rows{' labelled at species' if mode == 'flat' else ''} to vote.")
    dtype = np.result_type(Xtr.dtype, Xte.dtype, np.float32)
    Xtr_n = _normalize(Xtr.astype(dtype, copy=False))  # one normalised copy of the train matrix, not two
    Xte_n = _normalize(Xte.astype(dtype, copy=False))
    m = min(int(k_neighbors), len(train))
    n = len(test)
    topk, scores = _empty(n, k)
    from latent.kernels import nearest as nearest_rows

    for block in _blocks(n, len(train), chunk_size):
        # most similar first (ties of votes go to them; equal similarities: the lower train row first);
        # torch on a GPU, numpy on CPU (latent.kernels)
        nearest, near_sims = nearest_rows(Xte_n[block], Xtr_n, m, device=device)
        # exp((s - max) / T): the common factor cancels in the shares and nothing overflows
        weights = np.exp((near_sims - near_sims[:, :1]) / temperature)
        for r in _ranks_to_predict(predict_species):
            topk[block, r], scores[block, r] = _vote(train_labels[nearest, r], weights, k)
    # Candidates: the taxa of the train rows (a test row's list names only the taxa its neighbours vote
    # for, so it may hold fewer than k; the metrics say how many rows are short).
    counts = np.array([np.unique(col[col >= 0]).size for col in train_labels.T], dtype=np.int64)
    short = {r.label: int(np.count_nonzero((topk[:, r, :] >= 0).sum(axis=1) < min(k, counts[r])))
             for r in _ranks_to_predict(predict_species)}
    info = {"k_neighbors": int(k_neighbors), "temperature": float(temperature), "n_train": int(len(train)),
            "rows_with_short_lists": short}
    log.info("kNN (%s): %d test images, %d train rows, %d neighbours, T=%g", mode, n, len(train), m, temperature)
    return _finish(taxonomy, test, ids, topk, scores, "knn", mode, predict_species, info, function, counts)


# ---------------------------------------------------------------------------------------- nearest centroid
def _max_to_ranks(species_scores: np.ndarray, taxonomy: Taxonomy, species: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Map species scores up the tree by the maximum: a node scores as its best species.

    ``species_scores`` is ``(n, S')`` over the species codes ``species`` (``(S',)``, sorted).
    Returns ``(n, 7, k)`` codes and scores.
    """
    n = species_scores.shape[0]
    topk, scores = _empty(n, k)
    lineage = taxonomy.species_codes[species]  # lineage order: nodes are non-decreasing at every rank
    for r in RANKS:
        nodes = lineage[:, r]
        starts = np.flatnonzero(np.r_[True, nodes[1:] != nodes[:-1]])
        node_scores = np.maximum.reduceat(species_scores, starts, axis=1)
        topk[:, r], scores[:, r] = topk_from_scores(node_scores, nodes[starts], k)
    return topk, scores


def _simpleshot(X_support: np.ndarray, X_query: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """SimpleShot's CL2N: L2-normalise, subtract the support mean, L2-normalise again."""
    s = _normalize(X_support.astype(np.float64))
    q = _normalize(X_query.astype(np.float64))
    mean = s.mean(axis=0, keepdims=True)
    return _normalize(s - mean), _normalize(q - mean)


def _centroids(Xs: np.ndarray, labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Classes ``(C,)`` (sorted) and their ``(C, D)`` mean rows of ``Xs``."""
    classes, inverse = np.unique(labels, return_inverse=True)
    sums = np.zeros((len(classes), Xs.shape[1]))
    np.add.at(sums, inverse, Xs)
    return classes, sums / np.bincount(inverse, minlength=len(classes))[:, None]


def _neg_distances(Xq: np.ndarray, centroids: np.ndarray) -> np.ndarray:
    """``(n, C)`` negative Euclidean distances of the query rows ``(n, D)`` to the centroids ``(C, D)``."""
    sq = (Xq ** 2).sum(axis=1)[:, None] + (centroids ** 2).sum(axis=1)[None, :] - 2 * Xq @ centroids.T
    return -np.sqrt(np.maximum(sq, 0.0))


def predict_centroid(
    X_support: np.ndarray,
    support_rows: np.ndarray,
    X_query: np.ndarray,
    query_rows: np.ndarray,
    taxonomy: Taxonomy,
    *,
    mode: str = "per-rank",
    k: int = 5,
    predict_species: bool = True,
    ids: "np.ndarray | None" = None,
    chunk_size: "int | None" = None,
) -> Predictions:
    """SimpleShot nearest-centroid classifier (the BioCLIP papers' few-shot protocol).

    Support and query embeddings are L2-normalised, the mean of the (normalised) support set is
    subtracted from both, and both are L2-normalised again. A class centroid is the mean of its support
    rows (not renormalised); each query goes to the nearest centroid in Euclidean distance.

    Scores are **negative Euclidean distances** (higher is better; they are not probabilities).

    Parameters
    ----------
    X_support, support_rows
        ``(N, D)`` support embeddings and their ``(N,)`` taxonomy rows.
    X_query, query_rows
        ``(n, D)`` query embeddings and their ``(n,)`` rows.
    taxonomy
        The label space.
    mode
        ``"per-rank"``: centroids at each rank from the support rows labelled at that rank.
        ``"flat"``: species centroids only; a node at a higher rank scores as its nearest species
        centroid (maximum of the species scores, not a sum: distances do not add up), so the top-1 at
        every rank is the lineage of the nearest species centroid.
    k
        Top-``k`` kept per rank.
    predict_species
        False leaves the species column unpredicted (``-1``); refused in flat mode.
    ids
        ``(n_rows,)`` ids of every taxonomy row; default the row numbers as strings.
    chunk_size
        Query rows per block of distances (default: about 32M distances per block); the predictions do
        not depend on it (the distances, in their last bits: BLAS rounds blocks of other shapes apart).

    Returns
    -------
    Predictions
        ``method="centroid"``.
    """
    function = "predict_centroid"
    _check_common(function, mode, k, predict_species)
    support = check_rows(taxonomy, support_rows, parameter="support_rows", function=function)
    query = check_rows(taxonomy, query_rows, parameter="query_rows", function=function)
    Xs = _check_embeddings(X_support, support, "X_support", "support_rows", function)
    Xq = _check_embeddings(X_query, query, "X_query", "query_rows", function, dim=Xs.shape[1])
    if not len(support):
        raise InputError(f"{function} needs at least one support row.")
    Xs_t, Xq_t = _simpleshot(Xs, Xq)
    n = len(query)
    topk, scores = _empty(n, k)
    counts = np.zeros(_N_RANKS, dtype=np.int64)
    n_classes: dict[str, int] = {}
    if mode == "flat":
        species = taxonomy.codes(Rank.SPECIES)[support]
        labelled = species >= 0
        if not labelled.any():
            raise InputError(f"{function}: mode='flat' needs support rows labelled at species; none are.")
        classes, centroids = _centroids(Xs_t[labelled], species[labelled])
        for block in _blocks(n, len(classes), chunk_size):  # (block, C) distances at a time, never (n, C)
            topk[block], scores[block] = _max_to_ranks(_neg_distances(Xq_t[block], centroids), taxonomy, classes, k)
        n_classes["species"] = len(classes)
        counts = lineage_counts(taxonomy, classes)
    else:
        for r in _ranks_to_predict(predict_species):
            labels = taxonomy.codes(r)[support]
            labelled = labels >= 0
            if not labelled.any():
                log.info("centroid: no support row is labelled at %s; that rank is not predicted", r.label)
                continue
            classes, centroids = _centroids(Xs_t[labelled], labels[labelled])
            for block in _blocks(n, len(classes), chunk_size):  # (block, C) distances at a time, never (n, C)
                topk[block, r], scores[block, r] = topk_from_scores(_neg_distances(Xq_t[block], centroids),
                                                                    classes, k)
            n_classes[r.label] = len(classes)
            counts[r] = len(classes)
    info = {"n_support": int(len(support)), "n_classes": n_classes, "scores": "negative Euclidean distance"}
    log.info("centroid (%s): %d queries, %d support rows, classes %s", mode, n, len(support), n_classes)
    return _finish(taxonomy, query, ids, topk, scores, "centroid", mode, predict_species, info, function, counts)


# ---------------------------------------------------------------------------------------- linear probe
def predict_linear(
    X_train: np.ndarray,
    train_rows: np.ndarray,
    X_test: np.ndarray,
    test_rows: np.ndarray,
    taxonomy: Taxonomy,
    *,
    mode: str = "per-rank",
    seed: int = 0,
    device: str = "auto",
    k: int = 5,
    predict_species: bool = True,
    ids: "np.ndarray | None" = None,
    val_fraction: float = 0.2,
    grid: "np.ndarray | None" = None,
    **probe_options: Any,
) -> Predictions:
    """Linear probe (L2-regularised multinomial logistic regression, C chosen on a validation split).

    Parameters
    ----------
    X_train, train_rows
        ``(N, D)`` train embeddings and their ``(N,)`` taxonomy rows.
    X_test, test_rows
        ``(n, D)`` test embeddings and their ``(n,)`` rows.
    taxonomy
        The label space.
    mode
        ``"per-rank"``: one probe per rank on the train rows labelled at that rank, all ranks in one
        call of :func:`latent.linear.linear_probe_ranks` (the sweep BENCHMARKS.md measures: one
        centring and rotation of the train embeddings shared by every rank); a rank with a single
        class is predicted trivially, one with none is not predicted (logged). ``"flat"``: one
        species probe (:func:`latent.linear.linear_probe`); its probabilities are summed up the tree.
    seed, device, val_fraction, grid
        Passed to the probe (validation split seed, torch device, share of train rows held out to
        choose C, grid of C values).
    **probe_options
        Any other option of :func:`latent.linear.linear_probe` (e.g. ``refine``, ``solver``,
        ``max_iter``), passed through.
    k
        Top-``k`` kept per rank.
    predict_species
        False leaves the species column unpredicted (``-1``); refused in flat mode.
    ids
        ``(n_rows,)`` ids of every taxonomy row; default the row numbers as strings.

    Returns
    -------
    Predictions
        ``method="linear"``; scores are probabilities; ``info["best_C"]`` holds the chosen C per rank
        (``{"species": C}`` in flat mode) and ``info["n_classes"]`` the classes per rank.
    """
    from latent.linear import linear_probe, linear_probe_ranks

    function = "predict_linear"
    _check_common(function, mode, k, predict_species)
    train = check_rows(taxonomy, train_rows, parameter="train_rows", function=function)
    test = check_rows(taxonomy, test_rows, parameter="test_rows", function=function)
    Xtr = _check_embeddings(X_train, train, "X_train", "train_rows", function)
    Xte = _check_embeddings(X_test, test, "X_test", "test_rows", function, dim=Xtr.shape[1])
    dtype = np.result_type(Xtr.dtype, Xte.dtype, np.float32)
    Xtr_n = _normalize(Xtr.astype(dtype, copy=False))  # one normalised copy of the train matrix, not two
    Xte_n = _normalize(Xte.astype(dtype, copy=False))
    n = len(test)
    topk, scores = _empty(n, k)
    best_c: dict[str, float] = {}
    n_classes: dict[str, int] = {}
    counts = np.zeros(_N_RANKS, dtype=np.int64)
    ranks = [Rank.SPECIES] if mode == "flat" else list(_ranks_to_predict(predict_species))
    Y_train = np.stack([taxonomy.codes(r)[train] for r in RANKS], axis=1)  # (N, 7), -1 = unlabelled
    fitted: list[Rank] = []
    for r in ranks:
        labels = Y_train[:, r]
        classes = np.unique(labels[labels >= 0])
        if len(classes) >= 2:
            fitted.append(r)
        elif mode == "flat":
            raise InputError(f"{function}: mode='flat' needs train rows of at least two species; found {len(classes)}.")
        elif len(classes) == 1:
            # One class to learn: the only possible answer, predicted with probability 1 (as the
            # other predictors do), so every method covers the same ranks; n_classes = 1 says so.
            topk[:, r, 0], scores[:, r, 0] = classes[0], 1.0
            n_classes[r.label] = 1
            counts[r] = 1
            log.info("linear: a single class at %s among the train rows; predicted trivially", r.label)
        else:
            log.info("linear: no labelled train rows at %s; that rank is not predicted", r.label)
    options = dict(val_fraction=val_fraction, seed=seed, grid=grid, device=device, **probe_options)
    if mode == "flat":  # one species probe
        labelled = Y_train[:, Rank.SPECIES] >= 0
        results = {Rank.SPECIES.label: linear_probe(Xtr_n[labelled], Y_train[labelled, Rank.SPECIES], Xte_n,
                                                    **options)}
    elif fitted:  # the per-rank sweep that latent.linear measures: one centring and rotation for every rank
        results = linear_probe_ranks(Xtr_n, Y_train, Xte_n, ranks=fitted, **options).results
    else:
        results = {}
    for r in fitted:
        result = results[r.label]
        proba = np.asarray(result.test_proba, dtype=np.float64)
        probe_classes = np.asarray(result.classes, dtype=np.int64)
        if mode == "flat":
            order = np.argsort(probe_classes)
            topk, scores = flat_to_ranks(proba[:, order], taxonomy, k=k, species=probe_classes[order])
            counts = lineage_counts(taxonomy, probe_classes)
        else:
            topk[:, r], scores[:, r] = topk_from_scores(proba, probe_classes, k)
            counts[r] = len(probe_classes)
        best_c[r.label] = float(result.best_C)
        n_classes[r.label] = int(len(probe_classes))
        log.info("linear: %s probe on %d rows, %d classes, C=%g", r.label, result.n_train + result.n_val,
                 len(probe_classes), result.best_C)
    info = {"best_C": best_c, "n_classes": n_classes, "seed": int(seed), "val_fraction": float(val_fraction)}
    return _finish(taxonomy, test, ids, topk, scores, "linear", mode, predict_species, info, function, counts)

