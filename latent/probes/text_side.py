"""The text side (issue 16): does the text encoder's space of taxon names reflect the taxonomy, and how
close is each image to its own taxon's text?

BioCLIP 2 was trained with full taxonomic names in its captions, so the hierarchy in its image space may
come from the text. These pure functions measure the text side with the statistics of the image probes
(Spearman Mantel r, species-permutation nulls from :func:`latent.probes.base.species_permutations`,
species-bootstrap CIs from :func:`latent.stats.cluster_ci`) and return rows of the long results format
(``rank, metric, value, ci_low, ci_high, n, null_mean, null_std, z, p_value, permutations, unit, ...``).
The text embeddings come from a cache's ``/text/<rank>/<form>`` groups (``latent embed-text``;
:meth:`latent.cache.EmbeddingCache.read_text_group` gives ``(keys, embeddings, attrs)``, keys are the
taxa's lineages joined by ``";"``, see :func:`latent.text.taxon_texts`); :func:`texts_by_rank` collects
one form of them.

Text geometry (:func:`text_geometry`)
-------------------------------------
The Spearman Mantel r between the cosine distances of the species' text embeddings and their taxonomic
distances (LCA height 0..7), with the null that permutes which species sits at which leaf (whole
species) and a species-bootstrap CI. A lineage text (``taxon`` form: ``"Animalia Chordata Aves ..."``)
shares words with its relatives by construction, so a text encoder that only counts words already
reflects the tree. The **control** replaces every taxon name by a random token with the same tree
(:func:`random_token_names`: each node gets a random "word", a species' text is the concatenation of
its lineage's words), embeds those strings with the same encoder (``encode_text``) and reports the same
statistic: the part of the structure that shared prefixes alone explain. The difference (text minus
control) has a paired species-bootstrap CI (the same resamples for both).

Image-text alignment (:func:`image_text_alignment`)
---------------------------------------------------
Per rank, for each image: the cosine to its own taxon's text minus the largest cosine to the texts of
its taxon's siblings (taxa of the same parent; all other kingdoms at kingdom) is the **margin**; the
fraction of siblings whose text is less similar than the own taxon's (ties count one half) is the **rank
score** (0.5 expected by chance). The margin's chance level is 0 only where every taxon has one
sibling; with more siblings the largest of them beats the own taxon's text by chance, and the margin
expected by chance is below 0: read it against ``null_mean``. Both are averaged over a species'
images, then over species (every species weighs the same); species whose taxon has no sibling with a
text are left out (``n`` says how many species remain). Their CI resamples the rank's taxa (whole taxa
with their species: species of one taxon share its text and its siblings' texts, so their margins are
not independent; at species rank the species), none below 10 taxa. Null: species permuted among the
leaves (species ``s`` takes the lineage of ``pi[s]``, so its images are scored against another taxon
and that taxon's siblings). Also per rank, the Spearman Mantel r between the distances of the image
centroids of the rank's taxa and the distances of their texts, whole taxa permuted (at species rank:
species permuted), with a CI over taxa.

Probe adapters
--------------
:func:`probe_text_geometry` and :func:`probe_image_text_alignment` run the two on a
:class:`~latent.probes.base.ProbeData` and a ``{rank: (keys, embeddings)}`` mapping of the cache's texts
(:func:`texts_by_rank`), with the shared :class:`~latent.probes.base.ProbeOptions`; ``ProbeData`` holds
no texts, so they come as a third argument or as the probe's ``texts`` setting (then the adapters run
from the registry as ``probe(data, options)``).
"""

from __future__ import annotations

import logging
import string
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd
from scipy.stats import rankdata

from latent.errors import InputError
from latent.probes.alignment import TIE_TOL, PairRanks, centroid_distances, condensed, mantel, species_cis
from latent.probes.base import ProbeData, ProbeOptions, ProbeResult, null_row, species_permutations
from latent.probes.common import DEFAULT_N_BOOT, DEFAULT_N_BOOT_EXPENSIVE, int_setting, tie_null
from latent.ranks import RANK_NAMES, Rank, parse_rank
from latent.results import results_frame
from latent.stats import cluster_ci
from latent.taxonomy import MAX_DISTANCE, N_RANKS, Taxonomy, lca_height

__all__ = [
    "random_token_names",
    "embed_texts",
    "key_distances",
    "node_keys",
    "texts_by_rank",
    "text_geometry",
    "image_text_alignment",
    "probe_text_geometry",
    "probe_image_text_alignment",
]

log = logging.getLogger(__name__)

#: Letters of the random tokens (lower case: a word a tokenizer splits like any unknown name).
_LETTERS = np.array(list(string.ascii_lowercase))


# ---------------------------------------------------------------------- inputs
def _check_keys(keys: Any, where: str) -> list[str]:
    out = [str(k) for k in np.asarray(keys, dtype=object).reshape(-1)]
    if len(set(out)) != len(out):
        dup = pd.Series(out).value_counts()
        raise InputError(f"The 'keys' parameter of {where} must hold distinct lineage keys; "
                         f"{dup.index[0]!r} appears {int(dup.iloc[0])} times.")
    return out


def _check_matrix(name: str, value: Any, rows: "int | None", where: str) -> np.ndarray:
    M = np.asarray(value, dtype=np.float64)
    if M.ndim != 2 or (rows is not None and M.shape[0] != rows) or M.shape[1] < 1:
        want = f"({rows}, d)" if rows is not None else "(n, d)"
        raise InputError(f"The {name!r} parameter of {where} must be a {want} array; got shape {M.shape}.")
    if not np.isfinite(M).all():
        raise InputError(f"The {name!r} parameter of {where} must be finite; "
                         f"{int((~np.isfinite(M).all(axis=1)).sum())} row(s) are not.")
    if (np.linalg.norm(M, axis=1) == 0).any():
        raise InputError(f"The {name!r} parameter of {where} has zero rows; cosine is undefined for a zero vector.")
    return M


def _check_count(name: str, value: Any, where: str) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 0:
        raise InputError(f"The {name!r} parameter of {where} must be an integer >= 0. Got {value!r}.")
    return int(value)


def _unit(M: np.ndarray) -> np.ndarray:
    return M / np.linalg.norm(M, axis=1, keepdims=True)


# ---------------------------------------------------------------------- the random-token control
def random_token_names(lineages: "Sequence[Sequence[str]]", seed: int = 0, *,
                       length: tuple[int, int] = (5, 9)) -> list[str]:
    """Texts with the same tree as ``lineages`` but every taxon name replaced by a random token.

    Each node of the tree (a lineage prefix, so homonyms under different parents get different
    tokens) gets one random lower-case word; a lineage's text is the words of its named nodes from the
    top down, joined by spaces (empty names, placeholders of empty ranks, get no word, as in the
    ``taxon`` text form). Two lineages share exactly the words of their shared ancestors, so any
    structure a text encoder finds in these texts comes from the shared prefixes alone.

    Parameters
    ----------
    lineages
        ``(S, k)`` names per lineage, top rank first (e.g. the keys of a ``/text/<rank>/<form>`` group
        split on ``";"``).
    seed
        Seed of the tokens; tokens depend on the set of nodes, not on the order of ``lineages``.
    length
        ``(low, high)`` inclusive range of a token's number of letters.

    Returns
    -------
    list of str
        ``(S,)`` texts, e.g. ``"qhwzp ujrnbxa kdoe..."``.
    """
    rows = [tuple(str(n) for n in lineage) for lineage in lineages]
    low, high = (int(v) for v in length)
    if not 1 <= low <= high:
        raise InputError(f"The 'length' parameter of random_token_names must be (low, high) with 1 <= low <= high; "
                         f"got {length!r}.")
    nodes = sorted({row[: r + 1] for row in rows for r in range(len(row)) if row[r]})
    rng = np.random.default_rng([int(seed), 0x7E47])
    words: dict[tuple[str, ...], str] = {}
    used: set[str] = set()
    for node in nodes:
        while True:
            word = "".join(rng.choice(_LETTERS, size=int(rng.integers(low, high + 1))))
            if word not in used:
                break
        used.add(word)
        words[node] = word
    return [" ".join(words[row[: r + 1]] for r in range(len(row)) if row[r]) for row in rows]


def embed_texts(encode_text: Callable[[list[str]], Any], texts: Sequence[str]) -> np.ndarray:
    """``(n, d)`` float64 embeddings of ``texts`` by ``encode_text`` (checked: one finite non-zero row per text).

    ``encode_text`` maps a list of ``n`` strings to an ``(n, d)`` array (for a real model: its text
    tower with the templates of :mod:`latent.text`).
    """
    texts = [str(t) for t in texts]
    return _check_matrix("encode_text output", encode_text(texts), len(texts), "embed_texts")


# ---------------------------------------------------------------------- keys and distances
def key_distances(keys: Sequence[str]) -> np.ndarray:
    """``(S, S)`` uint8 taxonomic distance between lineage keys: 7 minus the ranks their lineages share.

    A key is a lineage joined by ``";"`` (top rank first, ``""`` for an empty rank); two lineages share
    rank ``r`` when their first ``r + 1`` names are equal (as :func:`latent.taxonomy.lca_height` on
    lineage codes, placeholders included). Keys must all have the same number of names.
    """
    parts = [str(k).split(";") for k in keys]
    depth = {len(p) for p in parts}
    if len(depth) > 1 or (depth and not 1 <= depth.pop() <= N_RANKS):
        raise InputError("The 'keys' parameter of key_distances must be lineage keys of one rank (the same number "
                         f"of ';'-separated names, 1 to {N_RANKS}); got lengths {sorted({len(p) for p in parts})}.")
    S = len(parts)
    out = np.full((S, S), MAX_DISTANCE, dtype=np.uint8)
    if S == 0:
        return out
    k = len(parts[0])
    codes = np.empty((S, k), dtype=np.int64)
    for r in range(k):
        _, codes[:, r] = np.unique(np.array([";".join(p[: r + 1]) for p in parts], dtype=object).astype(str),
                                   return_inverse=True)
    for r in range(k):
        out -= (codes[:, r, None] == codes[None, :, r]).view(np.uint8)
    np.fill_diagonal(out, 0)  # a taxon above species shares only k ranks with itself: still distance 0
    return out


def node_keys(taxonomy: Taxonomy, rank: "Rank | str | int") -> list[str]:
    """``(n_nodes,)`` lineage key of every node at ``rank`` (the keys of :func:`latent.text.taxon_texts`)."""
    r = parse_rank(rank)
    return [";".join(taxonomy.lineage(r, node)) for node in range(taxonomy.n_nodes(r))]


def texts_by_rank(cache: Any, form: str = "taxon") -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """``{rank: (keys, embeddings)}`` of the ``/text/<rank>/<form>`` groups of an open cache (empty if none)."""
    out: dict[str, tuple[np.ndarray, np.ndarray]] = {}
    for name in cache.text_groups():
        rank, _, group_form = name.partition("/")
        if group_form == form and rank in RANK_NAMES:
            keys, emb, _ = cache.read_text_group(name)
            out[rank] = (np.asarray(keys).astype(str), np.asarray(emb))
    return out


def _taxonomic_distances(keys: list[str], taxonomy: Any) -> np.ndarray:
    if taxonomy is None:
        return key_distances(keys)
    if isinstance(taxonomy, Taxonomy):
        rank = len(keys[0].split(";")) - 1 if keys else Rank.SPECIES
        index = {k: i for i, k in enumerate(node_keys(taxonomy, rank))}
        missing = [k for k in keys if k not in index]
        if missing:
            raise InputError(f"The 'keys' parameter of text_geometry holds {len(missing)} lineage(s) not in the "
                             f"taxonomy (first: {missing[0]!r}); give the taxonomy the texts were made from.")
        codes = np.full((len(keys), N_RANKS), -1, dtype=np.int64)  # ranks below the keys' rank never match
        for i, k in enumerate(keys):
            node = index[k]
            for rr in range(rank, -1, -1):
                codes[i, rr] = node
                node = taxonomy.node_parents[rr][node]
        D = lca_height(codes, codes)
        np.fill_diagonal(D, 0)
        return D
    if callable(taxonomy):
        D = np.asarray(taxonomy(keys))
        if D.shape != (len(keys), len(keys)):
            raise InputError(f"The 'taxonomy' callable of text_geometry must return a ({len(keys)}, {len(keys)}) "
                             f"distance matrix; got shape {D.shape}.")
        return D
    raise InputError("The 'taxonomy' parameter of text_geometry must be None, a Taxonomy or a callable "
                     f"keys -> (S, S) distances; got {type(taxonomy).__name__}.")


# ---------------------------------------------------------------------- text geometry
def _mantel_rows(metric: str, D_tax: np.ndarray, D_emb: np.ndarray, perms: np.ndarray, n_boot: int, seed: int,
                 rank: str, unit: str, extra: Mapping[str, Any], ci_unit: str = "species"
                 ) -> tuple[dict[str, Any], "PairRanks | None"]:
    """A Spearman Mantel row (null: ``perms`` of the first matrix; CI: bootstrap over its ``ci_unit``)."""
    S = D_tax.shape[0]
    tc, dc = condensed(D_tax).astype(np.float64), condensed(D_emb)
    res = mantel(D_tax.astype(np.float64), D_emb, method="spearman", perms=perms)
    degenerate = not np.isfinite(res.r)
    if degenerate:
        low, high, note = np.nan, np.nan, "no CI: a distance matrix is constant"
        ranks = None
    else:
        ranks = PairRanks(tc, dc, S)
        low, high, note = (cluster_ci(lambda w: ranks(w)[:, 0], S, n_boot=n_boot, seed=seed, unit=ci_unit)
                           if n_boot >= 0 else (np.nan, np.nan, ""))  # n_boot < 0: the caller's CI
    null = tie_null(res.null, res.r, atol=TIE_TOL) if perms.shape[0] and not degenerate else None
    row = null_row(rank, metric, res.r, null, S, alternative="greater", ci=(low, high),
                   unit=unit, n_units=S, pairs=S * (S - 1) // 2, ci_note=note,
                   degenerate=degenerate, **extra)
    return row, ranks


def text_geometry(
    keys: Sequence[str],
    T: Any,
    taxonomy: "Taxonomy | Callable[[list[str]], np.ndarray] | None" = None,
    *,
    encode_text: "Callable[[list[str]], Any] | None" = None,
    permutations: int = 999,
    n_boot: int = 200,
    seed: int = 0,
    form: str = "",
) -> pd.DataFrame:
    """Does the text encoder's space of taxon names follow the taxonomy? Spearman Mantel with a random-token control.

    Parameters
    ----------
    keys
        ``(S,)`` lineage keys of the texts (``";"``-joined lineages, one rank, e.g. a ``/text/species/taxon``
        group's labels); ``S >= 3``.
    T
        ``(S, d)`` text embeddings, row ``i`` the text of ``keys[i]``.
    taxonomy
        Where the taxonomic distances (LCA height 0..7) come from: None (the keys themselves,
        :func:`key_distances`), a :class:`~latent.taxonomy.Taxonomy` holding every key, or a callable
        ``keys -> (S, S)`` distances.
    encode_text
        The text encoder for the control, ``list[str] -> (n, d')``; None: no control (its rows have NaN
        values and a note).
    permutations
        Species permutations of the null (:func:`latent.probes.base.species_permutations`; 0: no null).
    n_boot
        Species-bootstrap resamples of the CIs (0: none; none below 10 species).
    seed
        Seed of the permutations, the bootstrap and the random tokens.
    form
        The text form (``taxon``, ``sci``, ``com``), copied into a ``form`` column.

    Returns
    -------
    pandas.DataFrame
        Long format, rank ``"all"``: ``text_mantel_r_spearman`` (text cosine distances vs taxonomic
        distances), ``text_control_mantel_r_spearman`` (the same for random tokens with the same tree),
        both with a species-bootstrap CI and null columns (``null_mean``, ``null_std``, ``z``,
        ``p_value``, ``permutations``), and ``text_minus_control_r`` (their difference, paired-bootstrap
        CI, no null). Columns also ``unit`` (``species pair``), ``n_units``, ``pairs``, ``ci_note``,
        ``degenerate``, ``form``, ``text_rank`` (the keys' rank), ``note``.
    """
    where = "text_geometry"
    keys = _check_keys(keys, where)
    S = len(keys)
    if S < 3:
        raise InputError(f"text_geometry needs the texts of at least 3 taxa; got {S}.")
    T = _check_matrix("T", T, S, where)
    permutations = _check_count("permutations", permutations, where)
    n_boot = _check_count("n_boot", n_boot, where)
    D_tax = _taxonomic_distances(keys, taxonomy)
    depth = len(keys[0].split(";"))
    text_rank = RANK_NAMES[depth - 1] if 1 <= depth <= N_RANKS else ""
    perms = np.array(list(species_permutations(S, permutations, seed)), dtype=np.int64).reshape(-1, S)
    D_text, _ = centroid_distances(T, "cosine")
    extra = {"form": str(form), "text_rank": text_rank}
    rows = []
    row, text_ranks = _mantel_rows("text_mantel_r_spearman", D_tax, D_text, perms, -1, seed, "all",
                                   "species pair", {**extra, "note": ""})
    rows.append(row)
    pair = {"unit": "species pair", "n_units": S, "pairs": S * (S - 1) // 2}
    if encode_text is None:
        note = "no text encoder given: no random-token control"
        for metric in ("text_control_mantel_r_spearman", "text_minus_control_r"):
            rows.append(null_row("all", metric, np.nan, None, S, ci_note=note, degenerate=False, note=note,
                                 **pair, **extra))
        ctrl_ranks = None
    else:
        texts = random_token_names([k.split(";") for k in keys], seed)
        D_ctrl, _ = centroid_distances(embed_texts(encode_text, texts), "cosine")
        note = "random tokens with the same tree: structure from shared prefixes alone"
        row, ctrl_ranks = _mantel_rows("text_control_mantel_r_spearman", D_tax, D_ctrl, perms, -1, seed, "all",
                                       "species pair", {**extra, "note": note})
        rows.append(row)
        diff = rows[0]["value"] - rows[1]["value"]
        rows.append(null_row("all", "text_minus_control_r", diff, None, S, degenerate=not np.isfinite(diff),
                             ci_note="", note="text r minus random-token r (paired species bootstrap)",
                             **pair, **extra))
    # species-bootstrap CIs, one pass: the same resamples for text, control and their difference
    parts = [text_ranks] + ([ctrl_ranks] if encode_text is not None else [])

    def statistic(w: np.ndarray) -> np.ndarray:
        cols = [p(w)[:, 0] if p is not None else np.full(w.shape[0], np.nan) for p in parts]
        if len(cols) == 2:
            cols.append(cols[0] - cols[1])
        return np.column_stack(cols)

    cis = species_cis(statistic, S, len(parts) + (len(parts) == 2), n_boot=n_boot, seed=seed)
    for row, (low, high, ci_note) in zip(rows, cis):
        if not row["degenerate"]:
            row.update(ci_low=low, ci_high=high, ci_note=ci_note)
    return results_frame(rows)


# ---------------------------------------------------------------------- image-text alignment
def _resolve_codes(rank: int, keys: Any, taxonomy: "Taxonomy | None") -> tuple[np.ndarray, dict[int, int]]:
    """Node codes at ``rank`` of text keys, and the parents of taxa outside ``taxonomy``.

    Integer keys are node codes as given. String keys (lineages) are looked up in ``taxonomy``; a key not
    there whose parent lineage is gets a new code (from ``n_nodes(rank)`` up) so that its text still counts
    as a sibling; others get -1.

    Returns
    -------
    codes : numpy.ndarray
        ``(K,)`` int64.
    extra_parents : dict
        ``{new code: parent code}`` of the taxa outside ``taxonomy``.
    """
    arr = np.asarray(keys)
    if np.issubdtype(arr.dtype, np.integer):
        return arr.astype(np.int64).reshape(-1), {}
    if taxonomy is None:
        raise InputError("The 'taxonomy' parameter of image_text_alignment is needed when text keys are lineage "
                         "strings (or give the keys as node codes at their rank).")
    index = {k: i for i, k in enumerate(node_keys(taxonomy, rank))}
    parents = {k: i for i, k in enumerate(node_keys(taxonomy, rank - 1))} if rank else {}
    codes = np.full(arr.size, -1, dtype=np.int64)
    extra: dict[int, int] = {}
    new = taxonomy.n_nodes(rank)
    for i, key in enumerate(str(k) for k in arr.reshape(-1)):
        if key in index:
            codes[i] = index[key]
            continue
        parent = parents.get(key.rpartition(";")[0]) if rank else 0
        if parent is not None:
            codes[i], extra[new] = new, int(parent)
            new += 1
    return codes, extra


def _sibling_scores(sims: np.ndarray, parent: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per image and text taxon: margin and rank score if that taxon were the image's own.

    Parameters
    ----------
    sims
        ``(n, K)`` cosine of each image to each text taxon.
    parent
        ``(K,)`` parent code of each text taxon.

    Returns
    -------
    margin, score : numpy.ndarray
        ``(n, K)``: own cosine minus the largest sibling cosine; fraction of siblings less similar (ties
        one half). NaN in columns of taxa without a sibling.
    has_sibling : numpy.ndarray
        ``(K,)`` bool.
    """
    n, K = sims.shape
    margin = np.full((n, K), np.nan)
    score = np.full((n, K), np.nan)
    has = np.zeros(K, dtype=bool)
    for p in np.unique(parent):
        cols = np.flatnonzero(parent == p)
        g = cols.size
        if g < 2:
            continue
        has[cols] = True
        s = sims[:, cols]
        order = np.argsort(-s, axis=1, kind="stable")
        top1 = np.take_along_axis(s, order[:, :1], axis=1)
        top2 = np.take_along_axis(s, order[:, 1:2], axis=1)
        best_other = np.where(np.arange(g)[None, :] == order[:, :1], top2, top1)
        margin[:, cols] = s - best_other
        score[:, cols] = (rankdata(s, axis=1, method="average") - 1.0) / (g - 1.0)
    return margin, score, has


def _species_tables(Xn: np.ndarray, Tn: np.ndarray, species: np.ndarray, S: int,
                    parent: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(S, K)`` species means of :func:`_sibling_scores` (margin, rank score) and ``(K,)`` has-sibling,
    computed over blocks of images (at most ~4M image-taxon similarities in memory at once)."""
    from scipy import sparse

    n, K = Xn.shape[0], Tn.shape[0]
    M = np.zeros((S, K))
    R = np.zeros((S, K))
    has = np.zeros(K, dtype=bool)
    step = max(1, (1 << 22) // max(K, 1))
    for a in range(0, n, step):
        sp = species[a:a + step]
        margin, score, has = _sibling_scores(Xn[a:a + step] @ Tn.T, parent)
        onehot = sparse.csr_matrix((np.ones(sp.size), (sp, np.arange(sp.size))), shape=(S, sp.size))
        M += onehot @ np.nan_to_num(margin)
        R += onehot @ np.nan_to_num(score)
    counts = np.bincount(species, minlength=S).astype(np.float64)
    with np.errstate(invalid="ignore", divide="ignore"):
        return M / counts[:, None], R / counts[:, None], has


def image_text_alignment(
    X: Any,
    species_of_image: Any,
    lineage_codes: Any,
    text_by_rank: "Mapping[str | int | Rank, tuple[Any, Any]]",
    *,
    taxonomy: "Taxonomy | None" = None,
    permutations: int = 999,
    n_boot: int = 1000,
    n_boot_rank: "int | None" = None,
    seed: int = 0,
) -> pd.DataFrame:
    """How close is each image to its own taxon's text, against its taxon's siblings? Per rank.

    Parameters
    ----------
    X
        ``(n, d)`` image embeddings (the model's image space; same ``d`` as the texts).
    species_of_image
        ``(n,)`` int species index of each image, in ``[0, S)`` (``ProbeData.species``).
    lineage_codes
        ``(S, 7)`` int node code of each species at each rank (``ProbeData.codes``).
    text_by_rank
        ``{rank: (keys, T)}``: ``(K,)`` keys of the rank's text taxa (node codes at that rank, or
        ``";"``-joined lineage keys together with ``taxonomy``) and their ``(K, d)`` text embeddings
        (:func:`texts_by_rank`). Taxa without images still count as siblings (with lineage keys: any
        text whose parent lineage is in ``taxonomy``); texts of taxa under no parent of the images' species
        are left out.
    taxonomy
        The taxonomy the codes refer to; needed only for lineage-string keys.
    permutations
        Species permutations of the nulls (0: none).
    n_boot
        Bootstrap resamples of the CIs (species for margin and rank score, the rank's taxa for the
        Mantel r; none below 10 units).
    n_boot_rank
        Resamples of the Mantel r's CI (each ranks every pair of the resample: costly); default
        ``min(n_boot, 200)``, as the alignment probe's ``n_boot_rank``.
    seed
        Seed of permutations and bootstrap.

    Returns
    -------
    pandas.DataFrame
        Long format, one block per rank in ``text_by_rank``: ``text_margin`` (mean over species of the
        mean image margin; unit ``species``), ``text_rank_score`` (same for the rank score; 0.5 by
        chance), ``image_text_mantel_r_spearman`` (image-centroid vs text cosine distances of the rank's
        taxa; unit ``taxon pair``), each with CI and null columns (``null_mean``, ``null_std``, ``z``,
        ``p_value``, ``permutations``), ``n`` (species used, or taxa for the Mantel r), ``n_units``,
        ``ci_unit`` and ``n_ci_units`` (what the margin's and rank score's CI resamples: the rank's taxa),
        ``n_images``, ``n_taxa``, ``chance`` (the value expected by chance, for the margin only where every
        taxon has one sibling: compare with ``null_mean``), ``ci_note``, ``note``.
    """
    where = "image_text_alignment"
    X = _check_matrix("X", X, None, where)
    n = X.shape[0]
    species = np.asarray(species_of_image).reshape(-1)
    codes = np.asarray(lineage_codes)
    if codes.ndim != 2 or codes.shape[1] != N_RANKS or not np.issubdtype(codes.dtype, np.integer):
        raise InputError(f"The 'lineage_codes' parameter of {where} must be an integer (S, {N_RANKS}) array; "
                         f"got {codes.dtype} of shape {codes.shape}.")
    S = codes.shape[0]
    if species.shape != (n,) or not np.issubdtype(species.dtype, np.integer) or (species < 0).any() \
            or (species >= S).any():
        raise InputError(f"The 'species_of_image' parameter of {where} must be ({n},) integers in [0, {S}); "
                         f"got {species.dtype} of shape {species.shape}.")
    permutations = _check_count("permutations", permutations, where)
    n_boot = _check_count("n_boot", n_boot, where)
    n_boot_rank = min(n_boot, DEFAULT_N_BOOT_EXPENSIVE) if n_boot_rank is None else \
        _check_count("n_boot_rank", n_boot_rank, where)
    Xn = _unit(X)
    perms = np.array(list(species_permutations(S, permutations, seed)), dtype=np.int64).reshape(-1, S)
    present = np.bincount(species, minlength=S) > 0
    rows: list[dict[str, Any]] = []
    for rank_key, (keys, T) in text_by_rank.items():
        r = parse_rank(rank_key)
        rank = RANK_NAMES[r]
        T = _check_matrix(f"text_by_rank[{rank!r}] embeddings", T, None, where)
        if T.shape[1] != X.shape[1]:
            raise InputError(f"The text embeddings of rank {rank!r} have dimension {T.shape[1]} but the images "
                             f"{X.shape[1]}; give texts of the same model.")
        tcodes, extra_parents = _resolve_codes(r, keys, taxonomy)
        if tcodes.shape[0] != T.shape[0]:
            raise InputError(f"text_by_rank[{rank!r}] has {tcodes.shape[0]} keys but {T.shape[0]} embeddings.")
        sp_code = codes[:, r]
        parent_of: dict[int, int] = dict(extra_parents)  # taxa without images (or species) stay siblings
        for s in range(S):
            if sp_code[s] >= 0:
                parent_of.setdefault(int(sp_code[s]), int(codes[s, r - 1]) if r else 0)
        keep = np.array([c in parent_of for c in tcodes.tolist()], dtype=bool)
        if (~keep).any():
            log.info("image_text_alignment: %d of %d %s texts are of taxa whose parent has no species here; "
                     "left out", int((~keep).sum()), keep.size, rank)
        tcodes, Tn = tcodes[keep], _unit(T[keep])
        _, first = np.unique(tcodes, return_index=True)
        if first.size < tcodes.size:
            raise InputError(f"text_by_rank[{rank!r}] holds {tcodes.size - first.size} duplicate taxa.")
        K = tcodes.size
        col_of = np.full(int(max(sp_code.max(initial=0), tcodes.max(initial=0))) + 1, -1, dtype=np.int64)
        col_of[tcodes] = np.arange(K)
        base = {"n_taxa": K, "n_images": n}

        # margin and rank score: (S, K) species means "if species s were taxon k", then gathered
        parent = np.array([parent_of[int(c)] for c in tcodes], dtype=np.int64)
        M, R, has = _species_tables(Xn, Tn, species, S, parent)
        usable = np.zeros(K + 1, dtype=bool)
        usable[:K] = has

        def assigned(p: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
            c = np.where(sp_code[p] >= 0, col_of[np.clip(sp_code[p], 0, None)], -1)
            c = np.where(c >= 0, c, K)
            used = present & usable[c]
            return np.flatnonzero(used), c[used]

        idx, cols = assigned(np.arange(S))
        m_used = idx.size
        for metric, table, chance in (("text_margin", M, 0.0), ("text_rank_score", R, 0.5)):
            if m_used == 0:
                note = f"no species whose {rank} has a sibling with a text"
                rows.append(null_row(rank, metric, np.nan, None, 0, unit="species", n_units=0, ci_note=note,
                                     note=note, chance=chance, **base))
                continue
            per_species = table[idx, cols]
            value = float(per_species.mean())
            null = []
            for p in perms:
                pi, pc = assigned(p)
                null.append(float(table[pi, pc].mean()) if pi.size else np.nan)
            null_arr = np.asarray(null, dtype=np.float64)
            # CI over the rank's taxa (species of one taxon share its text and its siblings' texts, so
            # their margins are not independent); at species rank these are the species
            _, unit_of = np.unique(sp_code[idx], return_inverse=True)
            n_ci = int(unit_of.max()) + 1
            ci_unit = "species" if r == Rank.SPECIES else f"{rank} taxa"

            def statistic(w: np.ndarray, v: np.ndarray = per_species, u: np.ndarray = unit_of) -> np.ndarray:
                W = w[:, u]
                return (W @ v) / W.sum(axis=1)

            low, high, ci_note = cluster_ci(statistic, n_ci, n_boot=n_boot, seed=seed, unit=ci_unit)
            rows.append(null_row(rank, metric, value, null_arr if perms.shape[0] else None, m_used,
                                 alternative="greater", ci=(low, high), unit="species", n_units=m_used,
                                 ci_unit=ci_unit, n_ci_units=n_ci,
                                 ci_note=ci_note, note="", chance=chance, **base))

        # Mantel: image centroids of the rank's taxa vs their texts, whole taxa permuted
        img_col = col_of[np.clip(sp_code[species], 0, None)]
        img_col = np.where(sp_code[species] >= 0, img_col, -1)
        with_images = np.bincount(img_col[img_col >= 0], minlength=K) > 0
        taxa = np.flatnonzero(with_images)
        if taxa.size < 3:
            note = f"fewer than 3 {rank} taxa with images and a text"
            rows.append(null_row(rank, "image_text_mantel_r_spearman", np.nan, None, int(taxa.size),
                                 unit="taxon pair", n_units=int(taxa.size), ci_note=note, note=note,
                                 degenerate=True, chance=0.0, **base))
            continue
        sums = np.zeros((K, X.shape[1]))
        np.add.at(sums, img_col[img_col >= 0], Xn[img_col >= 0])
        centroids = sums[taxa] / np.bincount(img_col[img_col >= 0], minlength=K)[taxa, None]
        D_img, _ = centroid_distances(centroids, "cosine")
        D_txt, _ = centroid_distances(Tn[taxa], "cosine")
        tperms = np.array(list(species_permutations(taxa.size, permutations, seed)),
                          dtype=np.int64).reshape(-1, taxa.size)
        species_rank = r == Rank.SPECIES
        row, _ = _mantel_rows("image_text_mantel_r_spearman", D_txt, D_img, tperms, n_boot_rank, seed, rank,
                              "species pair" if species_rank else "taxon pair", {"note": "", "chance": 0.0, **base},
                              ci_unit="species" if species_rank else f"{rank} taxa")
        rows.append(row)
    return results_frame(rows)


# ---------------------------------------------------------------------- probe adapters
def _texts_setting(options: ProbeOptions, probe: str) -> tuple[int, str]:
    settings = options.for_probe(probe)
    n_boot = int_setting(settings, "n_boot", DEFAULT_N_BOOT_EXPENSIVE if probe == "text_geometry" else DEFAULT_N_BOOT,
                         probe)
    return n_boot, str(settings.get("form", "taxon"))


def _texts_from(options: ProbeOptions, probe: str, texts: "Mapping[str, tuple[Any, Any]] | None"
                ) -> "Mapping[str, tuple[Any, Any]]":
    """The texts given, else the probe's ``texts`` setting; an InputError when there are none."""
    texts = options.for_probe(probe).get("texts") if texts is None else texts
    if not texts:
        raise InputError(f"The {probe} probe needs text embeddings of taxon names (/text/<rank>/<form>); run "
                         "latent embed-text on the cache first.")
    if not isinstance(texts, Mapping):
        raise InputError(f"The 'texts' setting of the {probe} probe must map rank -> (keys, embeddings) "
                         f"(latent.probes.text_side.texts_by_rank); got {type(texts).__name__}.")
    return texts


def probe_text_geometry(data: ProbeData, options: ProbeOptions,
                        texts: "Mapping[str, tuple[Any, Any]] | None" = None, *,
                        encode_text: "Callable[[list[str]], Any] | None" = None) -> ProbeResult:
    """:func:`text_geometry` on the species texts of ``texts`` for the species of ``data``.

    ``texts`` (``{rank: (keys, embeddings)}``, :func:`texts_by_rank`) and ``encode_text`` (the control's
    encoder; None: no control) default to the probe's settings of the same names, so the probe also runs
    from the registry as ``probe(data, options)``. Texts of species not in ``data`` are left out (logged).
    Settings (``options.for_probe("text_geometry")``): ``texts``, ``encode_text``, ``n_boot`` (200), ``form``
    (the texts' form, a label; default ``taxon``); ``options.permutations`` and ``options.seed`` as in every
    probe. Raises InputError when there are no species texts (run ``latent embed-text``) or fewer than 3
    of ``data``'s species have one.
    """
    n_boot, form = _texts_setting(options, "text_geometry")
    texts = _texts_from(options, "text_geometry", texts)
    encode_text = options.for_probe("text_geometry").get("encode_text") if encode_text is None else encode_text
    if "species" not in texts:
        raise InputError("The text_geometry probe needs text embeddings of species (/text/species/<form>); "
                         "run latent embed-text on the cache first.")
    keys, T = texts["species"]
    keys = np.asarray(keys).astype(str)
    known = set(node_keys(data.taxonomy, Rank.SPECIES))
    keep = np.array([k in known for k in keys], dtype=bool)
    if (~keep).any():
        log.info("text_geometry: %d of %d species texts are of species not in the probed data; left out",
                 int((~keep).sum()), keep.size)
    rows = text_geometry(keys[keep], np.asarray(T)[keep], data.taxonomy, encode_text=encode_text,
                         permutations=options.permutations, n_boot=n_boot, seed=options.seed, form=form)
    info = {"species_with_text": int(keep.sum()), "species": data.n_species, "n_boot": n_boot, "form": form,
            "control": "random tokens" if encode_text is not None else "none (no text encoder)"}
    return ProbeResult("text_geometry", rows, info=info)


def probe_image_text_alignment(data: ProbeData, options: ProbeOptions,
                               texts: "Mapping[str, tuple[Any, Any]] | None" = None) -> ProbeResult:
    """:func:`image_text_alignment` of ``data``'s images against ``texts`` (:func:`texts_by_rank`), every rank given.

    ``texts`` defaults to the probe's ``texts`` setting (so it runs from the registry as
    ``probe(data, options)``). Settings (``options.for_probe("image_text_alignment")``): ``texts``,
    ``n_boot`` (1000), ``n_boot_rank`` (``min(n_boot, 200)``, the Mantel r's CI), ``form`` (a label);
    ``options.permutations`` and ``options.seed``. Raises InputError when there are no texts.
    """
    n_boot, form = _texts_setting(options, "image_text_alignment")
    texts = _texts_from(options, "image_text_alignment", texts)
    order = sorted(texts, key=lambda rank: int(parse_rank(rank)))
    n_boot_rank = int_setting(options.for_probe("image_text_alignment"), "n_boot_rank",
                              min(n_boot, DEFAULT_N_BOOT_EXPENSIVE), "image_text_alignment")
    rows = image_text_alignment(data.X, data.species, data.codes, {rank: texts[rank] for rank in order},
                                taxonomy=data.taxonomy, permutations=options.permutations, n_boot=n_boot,
                                n_boot_rank=n_boot_rank, seed=options.seed)
    rows["form"] = form
    return ProbeResult("image_text_alignment", rows, info={"ranks": order, "n_boot": n_boot, "form": form})
