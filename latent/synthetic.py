"""Known-answer data: embeddings with a planted taxonomic hierarchy.

The generative model is a random walk down the taxonomy tree. Every node (kingdom, phylum, ...,
species) adds a Gaussian offset to its parent's vector; every image adds within-species noise::

    v(kingdom)   = signal * scale[0] * z(kingdom)
    v(node at r) = v(parent) + signal * scale[r] * z(node)          z ~ N(0, I_D / D)
    x(image)     = v(species) + noise * e(image)                    e ~ N(0, I_D / D)

so, in expectation, two images whose species are at LCA height ``h`` are at squared Euclidean distance
``2 * signal**2 * sum(scale[7-h:]**2) + 2 * noise**2`` (``2 * h * signal**2 + 2 * noise**2`` with the
default unit scales): distance rises with taxonomic distance, one step per rank. ``signal = 0`` plants
no taxonomic structure at all (every image is pure noise around the origin). The default (signal 1,
noise 1, 64 dimensions) is a clear hierarchy in which species are separable by a nearest-neighbour
probe. Every later probe is tested against this: strong signal must be found, zero signal must not.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path

import numpy as np

from latent.ranks import RANKS
from latent.taxonomy import Taxonomy

__all__ = ["SyntheticData", "builtin_taxonomy_path", "builtin_taxonomy", "balanced_taxonomy", "make_hierarchical",
           "write_synthetic"]

log = logging.getLogger(__name__)


def builtin_taxonomy_path() -> Path:
    """Path of the built-in taxonomy: 47 real species in 4 kingdoms, with cross-kingdom homonyms."""
    return Path(str(resources.files("latent") / "data" / "builtin_taxonomy.csv"))


def builtin_taxonomy() -> Taxonomy:
    """The built-in taxonomy (see :func:`builtin_taxonomy_path`), one row per species."""
    return Taxonomy.from_table(builtin_taxonomy_path())


def balanced_taxonomy(branching: Sequence[int] = (1, 1, 2, 6, 3, 2, 2)) -> Taxonomy:
    """A balanced tree with ``branching[r]`` rank-``r`` taxa under each rank-``(r-1)`` taxon, one row per species.

    The default (144 species: 2 classes of 6 orders of 3 families of 2 genera of 2 species) has enough
    taxa under each parent for every rank from class down to be tested under a restricted null; the
    built-in taxonomy (47 real species) has too few at several ranks. Names encode the path
    (``F0_0_1_3_2`` is a family), species are ``"<genus> s<k>"``.
    """
    import itertools

    branching = [int(b) for b in branching]
    if len(branching) != len(RANKS) or min(branching) < 1:
        raise ValueError(f"The 'branching' parameter of balanced_taxonomy must be 7 integers >= 1. Got {branching!r}.")
    rows = []
    for path in itertools.product(*[range(b) for b in branching]):
        key = ["_".join(map(str, path[:r + 1])) for r in range(len(RANKS))]
        names = [f"{p}{k}" for p, k in zip("KPCOFG", key[:6])]
        rows.append([*names, f"{names[-1]} s{path[6]}"])
    return Taxonomy(np.asarray(rows, dtype=object), what="balanced taxonomy")


@dataclass(frozen=True)
class SyntheticData:
    """Synthetic embeddings and the taxonomy that generated them.

    Attributes
    ----------
    embeddings : numpy.ndarray
        ``(n_species * per_species, dim)`` float32, images grouped by species in taxonomy order.
    ids : numpy.ndarray
        ``(n_images,)`` str, ``"<species label>/<k>"``.
    taxonomy : Taxonomy
        One row per image (row ``i`` labels ``embeddings[i]``).
    species_means : numpy.ndarray
        ``(n_species, dim)`` the planted species vectors ``v(species)``.
    params : dict
        The generation parameters (recorded in the cache provenance).
    """

    embeddings: np.ndarray
    ids: np.ndarray
    taxonomy: Taxonomy
    species_means: np.ndarray
    params: dict = field(default_factory=dict)


def _check_number(name: str, value: float, *, minimum: float, integer: bool = False) -> None:
    ok = isinstance(value, (int, np.integer)) if integer else isinstance(value, (int, float, np.number))
    if not ok or isinstance(value, bool) or not np.isfinite(value) or value < minimum:
        kind = "an integer" if integer else "a finite number"
        raise ValueError(f"The {name!r} parameter of make_hierarchical must be {kind} >= {minimum}. Got {value!r} instead.")


def make_hierarchical(
    taxonomy: "Taxonomy | str | os.PathLike[str] | None" = None,
    *,
    per_species: int = 20,
    dim: int = 64,
    signal: float = 1.0,
    noise: float = 1.0,
    rank_scales: "Sequence[float] | None" = None,
    seed: int = 0,
) -> SyntheticData:
    """Embeddings with a planted hierarchy (see the module docstring for the model).

    Parameters
    ----------
    taxonomy
        A :class:`Taxonomy`, a taxonomy table path, or None for the built-in taxonomy. Only its species
        matter (rows without a species are ignored; repeated species count once).
    per_species
        Images per species (>= 1).
    dim
        Embedding dimension D (>= 1).
    signal
        Scale of the taxonomic offsets; 0 plants no structure.
    noise
        Scale of the within-species noise (>= 0).
    rank_scales
        Seven non-negative weights, kingdom first, multiplying each rank's offset (default all 1). Use
        it to plant structure at some ranks only.
    seed
        Seed of the generator: the same arguments give the same array, bit for bit.

    Returns
    -------
    SyntheticData
    """
    if taxonomy is None:
        taxonomy = builtin_taxonomy()
    elif not isinstance(taxonomy, Taxonomy):
        taxonomy = Taxonomy.from_table(taxonomy)
    _check_number("per_species", per_species, minimum=1, integer=True)
    _check_number("dim", dim, minimum=1, integer=True)
    _check_number("signal", signal, minimum=0)
    _check_number("noise", noise, minimum=0)
    _check_number("seed", seed, minimum=0, integer=True)
    scales = np.ones(len(RANKS)) if rank_scales is None else np.asarray(rank_scales, dtype=float)
    if scales.shape != (len(RANKS),) or not np.all(np.isfinite(scales)) or (scales < 0).any():
        raise ValueError(
            "The 'rank_scales' parameter of make_hierarchical must be 7 finite non-negative numbers "
            f"(kingdom..species). Got {rank_scales!r} instead."
        )
    if taxonomy.n_species == 0:
        raise ValueError("The taxonomy given to make_hierarchical has no species: nothing to generate.")

    rng = np.random.default_rng(seed)
    vectors = np.zeros((1, dim))  # the root
    for r in RANKS:
        parents = taxonomy.node_parents[r] if r > 0 else np.zeros(taxonomy.n_nodes(r), dtype=np.int64)
        offsets = rng.standard_normal((len(parents), dim)) / np.sqrt(dim)
        vectors = vectors[parents] + signal * scales[r] * offsets
    species_means = vectors  # (n_species, dim), species in lineage order
    n_species = taxonomy.n_species
    eps = rng.standard_normal((n_species, per_species, dim)) / np.sqrt(dim)
    images = (species_means[:, None, :] + noise * eps).reshape(-1, dim).astype(np.float32)

    table = taxonomy.species_table().to_numpy(dtype=object)
    labels = taxonomy.species_labels()
    ids = np.array([f"{labels[s]}/{k:03d}" for s in range(n_species) for k in range(per_species)])
    image_taxonomy = Taxonomy(np.repeat(table, per_species, axis=0), on_conflict="warn", what="synthetic taxonomy")
    params = {
        "per_species": int(per_species), "dim": int(dim), "signal": float(signal), "noise": float(noise),
        "rank_scales": [float(s) for s in scales], "seed": int(seed),
    }
    log.info("synthetic embeddings: %d species x %d images, dim %d, signal %g, noise %g, seed %d",
             n_species, per_species, dim, signal, noise, seed)
    return SyntheticData(images, ids, image_taxonomy, species_means.astype(np.float32), params)


def write_synthetic(
    out: "str | os.PathLike[str]",
    data: SyntheticData,
    *,
    source: str = "builtin",
    force: bool = False,
) -> Path:
    """Write :func:`make_hierarchical` output as an embedding cache (provenance model ``synthetic``).

    The generation parameters are part of the ``pretrained`` field, so caches made with other
    parameters are never mixed by an append.
    """
    from latent.cache import CacheWriter, Provenance

    p = data.params
    pretrained = (
        f"signal={p['signal']:g},noise={p['noise']:g},dim={p['dim']},seed={p['seed']},"
        f"rank_scales={'/'.join(f'{s:g}' for s in p['rank_scales'])}"
    )
    provenance = Provenance(
        model="synthetic",
        pretrained=pretrained,
        preprocess={"name": "none"},
        embed_dim=int(p["dim"]),
        normalized=False,
        source=source,
        store_dtype="float32",
        extra={"untrained": True, "synthetic": p},
    )
    frame = {rank.label: data.taxonomy.labels(rank) for rank in RANKS}
    with CacheWriter.open(out, provenance, force=force) as writer:
        writer.append(list(data.ids), data.embeddings, frame)
    return Path(out)
