"""Where in the network each rank appears: the levels probe and the verdict rule, layer by layer.

Given the embeddings of the same images after each block of a network (``layers[k]``, ``(n, d_k)``, all
in the same row order), :func:`emergence` runs the ``levels`` probe (:mod:`latent.probes.levels`: the
primary statistic ``rank_distance_ratio`` per rank under its restricted null, species as the unit) on
each layer and applies the verdict rule (:func:`latent.verdict.verdict_table`: Holm over the testable
levels *of that layer*, "yes" when the adjusted p <= :data:`latent.verdict.ALPHA` and the ratio is below
its null). Every layer uses the same permutation seed, so the layers differ only by their embeddings.

:func:`emergence_layers` reads that table: a rank *emerges* at the first layer from which its verdict is
"yes" at that layer and at every later one (a rank that is visible at layer 2, lost at 3 and back from 4
on emerges at 4). A rank never "yes" at the last layer never emerges; a rank testable at no layer is
"not testable".

:func:`make_layer_stack` is the known answer: synthetic layers in which each rank's planted offset is
switched on at a chosen layer (:func:`latent.synthetic.make_hierarchical` with ``rank_scales``).

:func:`emergence_from_cache` runs the same on the per-block embeddings of a cache (``latent embed --layers``;
``layer`` is then the 1-based block number, with ``n_blocks`` and ``depth = block / n_blocks`` beside it, so
models of different depths share an axis), and :func:`write_layer_cache` writes a synthetic stack as such a
cache (the known answer of the whole path: cache -> ``latent report --layers`` -> figure).

Multiplicity across layers is not adjusted (each layer is one model's verdict, as in the report); the
emergence layer is a description of those per-layer verdicts, not a test of its own.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd

from latent.errors import InputError
from latent.probes.base import ProbeData, ProbeOptions
from latent.probes.levels import METRIC, probe_levels
from latent.ranks import RANK_NAMES
from latent.taxonomy import Taxonomy

__all__ = ["EMERGENCE_COLUMNS", "emergence", "emergence_layers", "emergence_from_cache", "make_layer_stack",
           "layer_stack_taxonomy", "write_layer_cache"]

log = logging.getLogger(__name__)

#: Columns of :func:`emergence` (long format: one row per layer and rank).
EMERGENCE_COLUMNS = ["layer", "rank", "metric", "value", "ci_low", "ci_high", "n", "null_mean", "p_value",
                     "p_adjusted", "verdict", "n_species", "n_taxa", "level", "reason"]


def _check_ranks(ranks: "Sequence[str] | None", function: str) -> list[str]:
    if ranks is None:
        return list(RANK_NAMES)
    values = [ranks] if isinstance(ranks, str) else list(ranks)
    bad = [r for r in values if r not in RANK_NAMES]
    if bad or not values:
        raise InputError(f"The 'ranks' parameter of {function} must name ranks from {', '.join(RANK_NAMES)}; "
                         f"got {bad or values!r}.")
    return values


def emergence(layers: Sequence[np.ndarray], taxonomy: Taxonomy, *, permutations: int = 199, seed: int = 0,
              ranks: "Sequence[str] | None" = None, distance: str = "cosine") -> pd.DataFrame:
    """The per-rank verdict of every layer.

    Parameters
    ----------
    layers
        ``L`` arrays, ``layers[k]`` of shape ``(n, d_k)``: the embeddings of the same ``n`` images after
        block ``k`` (first to last), rows in the order of ``taxonomy``'s rows.
    taxonomy
        The taxonomy of the ``n`` images (one row per image).
    permutations
        Restricted permutations per level and layer (fewer when a level has fewer distinct partitions:
        then the null is enumerated exactly).
    seed
        Seed of the permutations and bootstraps, the same at every layer.
    ranks
        Rank names to keep (default every rank, kingdom..species).
    distance
        ``"cosine"`` or ``"euclidean"``.

    Returns
    -------
    pandas.DataFrame
        :data:`EMERGENCE_COLUMNS`, one row per layer and rank (``L * len(ranks)`` rows): ``layer`` (0..L-1),
        ``metric`` ``"rank_distance_ratio"`` (below 1: the rank is visible beyond its parent), its CI
        (cluster bootstrap over parent taxa), ``n`` (species behind the value), ``null_mean``, ``p_value``,
        ``p_adjusted`` (Holm within the layer), ``verdict`` ("yes" / "no" / "not testable"), ``level``
        (ranks with one partition share it) and ``reason`` (why not testable).
    """
    from latent.verdict import verdict_table  # the lead's module; imported here to keep import order loose

    keep = _check_ranks(ranks, "emergence")
    if not isinstance(taxonomy, Taxonomy):
        raise InputError(f"The 'taxonomy' parameter of emergence must be a latent Taxonomy; got {type(taxonomy).__name__}.")
    if isinstance(layers, np.ndarray) and layers.ndim == 3:
        layers = list(layers)
    if len(layers) == 0:
        raise InputError("The 'layers' parameter of emergence is empty; give one (n, d) array per layer.")
    for k, X in enumerate(layers):
        shape = np.shape(X)
        if len(shape) != 2 or shape[0] != taxonomy.n_rows:
            raise InputError(f"The 'layers' parameter of emergence: layer {k} has shape {shape}; every layer must "
                             f"be (n, d) with n = {taxonomy.n_rows} rows, one per taxonomy row.")
    options = ProbeOptions(distance=distance, permutations=int(permutations), seed=int(seed))
    frames = []
    for k, X in enumerate(layers):
        result = probe_levels(ProbeData.from_arrays(X, taxonomy), options)
        rows = result.to_frame()
        verdicts = verdict_table(rows)
        verdicts = verdicts[verdicts["rank"].isin(keep)].set_index("rank").reindex(keep).reset_index()
        n = rows.drop_duplicates("rank").set_index("rank")["n"].reindex(keep).to_numpy()
        frame = verdicts.assign(layer=k, metric=METRIC, n=n)
        frames.append(frame)
        log.info("emergence: layer %d of %d, yes at %s", k + 1, len(layers),
                 ", ".join(frame.loc[frame["verdict"] == "yes", "rank"]) or "no rank")
    table = pd.concat(frames, ignore_index=True)
    table["layer"] = table["layer"].astype(np.int64)
    return table[EMERGENCE_COLUMNS]


def emergence_layers(table: pd.DataFrame) -> pd.DataFrame:
    """Per rank, the first layer from which its verdict is "yes" at that layer and every later one.

    Parameters
    ----------
    table
        :func:`emergence`'s table (columns ``layer``, ``rank``, ``verdict``; ``level`` optional).

    Returns
    -------
    pandas.DataFrame
        One row per rank of ``table`` (rank order): ``rank``, ``level``, ``emergence_layer`` (float: the layer,
        NaN when none), ``status`` (``"emerges"``, ``"never"`` or ``"not testable"``: testable at no layer),
        ``layers_yes`` (layers with verdict "yes"), ``layers_testable`` and ``n_layers``.
    """
    missing = [c for c in ("layer", "rank", "verdict") if c not in getattr(table, "columns", [])]
    if not isinstance(table, pd.DataFrame) or missing:
        raise InputError(f"The 'table' parameter of emergence_layers must be emergence()'s DataFrame; it lacks "
                         f"{', '.join(missing) or 'nothing'} (got {type(table).__name__}).")
    records: list[dict[str, Any]] = []
    order = [r for r in RANK_NAMES if r in set(table["rank"])]
    for rank in order:
        sel = table[table["rank"] == rank].sort_values("layer")
        layers = sel["layer"].to_numpy(dtype=np.int64)
        yes = (sel["verdict"] == "yes").to_numpy()
        testable = int((sel["verdict"] != "not testable").sum())
        first = math.nan
        if len(yes) and yes[-1]:
            k = len(yes) - 1
            while k > 0 and yes[k - 1]:
                k -= 1
            first = float(layers[k])
        status = "emerges" if np.isfinite(first) else ("never" if testable else "not testable")
        level = str(sel["level"].iloc[0]) if "level" in sel.columns and len(sel) else rank
        records.append({"rank": rank, "level": level, "emergence_layer": first, "status": status,
                        "layers_yes": int(yes.sum()), "layers_testable": testable, "n_layers": len(layers)})
    return pd.DataFrame.from_records(records, columns=["rank", "level", "emergence_layer", "status", "layers_yes",
                                                      "layers_testable", "n_layers"])


def make_layer_stack(taxonomy: "Taxonomy | None" = None, *, n_layers: int = 6,
                     emerge: "Mapping[str, int] | None" = None, per_species: int = 5, dim: int = 32,
                     signal: float = 1.0, noise: float = 1.0, seed: int = 0) -> list[np.ndarray]:
    """Synthetic layer embeddings with a planted layer of emergence per rank.

    Layer ``k`` is :func:`latent.synthetic.make_hierarchical` with ``rank_scales[r] = 1`` if
    ``emerge[r] <= k`` else ``0``, and the same ``seed`` at every layer: the random offsets of every node and
    the within-species noise are the same draws in every layer, so layer ``k + 1`` differs from layer ``k``
    only by the offsets of the ranks that emerge at ``k + 1``. Ranks not in ``emerge`` are never planted
    (their scale is 0 at every layer); ``signal = 0`` plants nothing anywhere.

    Parameters
    ----------
    taxonomy
        A :class:`Taxonomy` (default :func:`latent.synthetic.balanced_taxonomy`, 144 species).
    n_layers
        Number of layers ``L`` (>= 1).
    emerge
        Rank name -> first layer (0..L-1) at which its offset is present. Default: nothing emerges.
    per_species, dim, signal, noise
        As in :func:`latent.synthetic.make_hierarchical`.
    seed
        Seed of every layer's draws (the same at every layer).

    Returns
    -------
    list of numpy.ndarray
        ``L`` float32 arrays of shape ``(n_species * per_species, dim)``, rows in the order of
        :func:`layer_stack_taxonomy` (images grouped by species, taxonomy order).
    """
    from latent.synthetic import balanced_taxonomy, make_hierarchical

    taxonomy = balanced_taxonomy() if taxonomy is None else taxonomy
    if isinstance(n_layers, bool) or not isinstance(n_layers, (int, np.integer)) or n_layers < 1:
        raise InputError(f"The 'n_layers' parameter of make_layer_stack must be an integer >= 1; got {n_layers!r}.")
    emerge = dict(emerge or {})
    for rank, k in emerge.items():
        if rank not in RANK_NAMES:
            raise InputError(f"The 'emerge' parameter of make_layer_stack names rank {rank!r}; use ranks from "
                             f"{', '.join(RANK_NAMES)}.")
        if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or not 0 <= k < n_layers:
            raise InputError(f"The 'emerge' parameter of make_layer_stack gives {rank!r} layer {k!r}; it must be an "
                             f"integer layer in 0..{n_layers - 1}.")
    stack = []
    for k in range(int(n_layers)):
        scales = [1.0 if (r in emerge and emerge[r] <= k) else 0.0 for r in RANK_NAMES]
        data = make_hierarchical(taxonomy, per_species=per_species, dim=dim, signal=signal, noise=noise,
                                 rank_scales=scales, seed=seed)
        stack.append(data.embeddings)
    return stack


def layer_stack_taxonomy(taxonomy: "Taxonomy | None" = None, *, per_species: int = 5) -> Taxonomy:
    """The per-image taxonomy of :func:`make_layer_stack`'s rows (one row per image)."""
    from latent.synthetic import balanced_taxonomy, make_hierarchical

    taxonomy = balanced_taxonomy() if taxonomy is None else taxonomy
    return make_hierarchical(taxonomy, per_species=per_species, dim=1, signal=0.0, seed=0).taxonomy


def emergence_from_cache(cache_path: "str | Any", *, blocks: "Sequence[int] | None" = None, token: str = "class",
                         permutations: int = 199, seed: int = 0, ranks: "Sequence[str] | None" = None,
                         distance: str = "cosine") -> pd.DataFrame:
    """:func:`emergence` on the per-block embeddings a cache holds (``latent embed --layers``).

    Parameters
    ----------
    cache_path
        A cache with per-layer embeddings.
    blocks
        Blocks to use (default every block the cache holds).
    token
        ``"class"`` (default) or ``"patch_mean"``.
    permutations, seed, ranks, distance
        As in :func:`emergence`.

    Returns
    -------
    pandas.DataFrame
        :func:`emergence`'s columns with ``layer`` the 1-based block number, plus ``n_blocks`` (blocks of
        the image tower) and ``depth`` (``layer / n_blocks``). The images are those labelled at species,
        as for ``latent probe``.
    """
    from latent.cache import open_cache
    from latent.probes.run import load_probe_data

    with open_cache(cache_path) as cache:
        spec = cache.provenance.layers
        stored = cache.layers
    if not stored:
        raise InputError(f"{cache_path} holds no per-layer embeddings; make a cache with them: latent embed ... "
                         f"--layers all.")
    chosen = stored if blocks is None else [int(b) for b in blocks]
    missing = [b for b in chosen if b not in stored]
    if missing or not chosen:
        raise InputError(f"The 'blocks' parameter of emergence_from_cache must name blocks {cache_path} holds "
                         f"({stored[0]}..{stored[-1]}); got {missing or chosen!r}.")
    stack, taxonomy = [], None
    for block in chosen:
        data, _ = load_probe_data(cache_path, layer=block) if token == "class" else _token_data(cache_path, block, token)
        stack.append(data.X)
        taxonomy = data.taxonomy
    assert taxonomy is not None
    table = emergence(stack, taxonomy, permutations=permutations, seed=seed, ranks=ranks, distance=distance)
    table["layer"] = np.asarray(chosen, dtype=np.int64)[table["layer"].to_numpy()]
    table["n_blocks"] = int(spec["n_blocks"])
    table["depth"] = table["layer"] / float(spec["n_blocks"])
    return table


def _token_data(cache_path: Any, block: int, token: str) -> tuple[ProbeData, Any]:
    from latent.cache import open_cache
    from latent.ranks import Rank

    with open_cache(cache_path, layer=block, token=token) as cache:
        taxonomy = cache.taxonomy()
        rows = np.flatnonzero(taxonomy.labelled(Rank.SPECIES))
        X = cache.read(rows, normalize=True)
        provenance = cache.provenance
    return ProbeData.from_arrays(X, taxonomy.select_rows(rows)), provenance


def write_layer_cache(path: "str | Any", layers: Sequence[np.ndarray], taxonomy: Taxonomy, *,
                      model: str = "synthetic-layers", force: bool = False) -> Any:
    """Write a layer stack as a cache with per-layer embeddings (the last layer is also the final embedding).

    Parameters
    ----------
    path
        The cache to write.
    layers
        ``L`` arrays ``(n, d)`` (e.g. :func:`make_layer_stack`), one per block, rows in the order of ``taxonomy``.
    taxonomy
        One row per image (e.g. :func:`layer_stack_taxonomy`).
    model
        The model name recorded.
    force
        Replace an existing cache.

    Returns
    -------
    pathlib.Path
        The cache. Block ``k`` (1-based) holds ``layers[k - 1]`` as its class token and as its mean patch
        token.
    """
    from latent.cache import CacheWriter, Provenance

    if len(layers) == 0:
        raise InputError("The 'layers' parameter of write_layer_cache is empty; give one (n, d) array per block.")
    arrays = [np.asarray(X, dtype=np.float32) for X in layers]
    n, d = arrays[0].shape
    if any(X.shape != (n, d) for X in arrays) or n != taxonomy.n_rows:
        raise InputError(f"The 'layers' parameter of write_layer_cache must hold arrays of one shape (n, d) with "
                         f"n = {taxonomy.n_rows} (the taxonomy's rows); got {[X.shape for X in arrays]}.")
    L = len(arrays)
    spec = {"blocks": list(range(1, L + 1)), "n_blocks": L, "width": d, "tokens": ["class", "patch_mean"],
            "rule": "synthetic layer stack (latent.layers.make_layer_stack)"}
    provenance = Provenance(model=model, pretrained="synthetic", preprocess={}, embed_dim=d, normalized=False,
                            source="latent.layers.write_layer_cache", store_dtype="float32",
                            extra={"untrained": True, "layers": spec})
    ids = [f"img{i:06d}" for i in range(n)]
    labels = {r: taxonomy.row_names[:, k].astype(str) for k, r in enumerate(RANK_NAMES)}
    with CacheWriter.open(path, provenance, force=force) as writer:
        writer.append(ids, arrays[-1], labels,
                      layers={k + 1: {"class": X, "patch_mean": X} for k, X in enumerate(arrays)})
    return writer.path
