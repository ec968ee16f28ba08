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

Planted attribute (within-species variation)
--------------------------------------------
``make_hierarchical(..., attribute="orthogonal" | "inside", attribute_scale=a)`` also gives every image a
binary attribute (a life stage, a sex) and moves it along one unit direction ``u``::

    x(image) = v(species) + noise * e(image) + a * (attribute(image) - 1/2) * u

Within each species the attribute is 1 for ``per_species // 2`` images chosen at random (0 for the
others), so with an even ``per_species`` a species' mean is unchanged. ``u`` is orthogonal to the span
of the species offsets (the centred planted species vectors, ``species_means - their mean``) for
``"orthogonal"`` (it needs ``dim`` greater than that span's dimension), or a random Gaussian combination
of those offsets (normalised) for ``"inside"``. The attribute draws come from a generator of their own
(seeded by ``[seed, 0xA77B]``), after every other draw: with ``attribute=None`` (the default) the output
is bit for bit what it was before the attribute existed, and with an attribute the embeddings minus the
attribute offset are those without it (up to float32 rounding). The labels are
:attr:`SyntheticData.attribute`, ``u`` is ``params["attribute_direction"]``; the cache written by
:func:`write_synthetic` keeps the labels as the row metadata column ``attribute``.
:mod:`latent.probes.intra_species` is tested against them.

Streaming
---------
:func:`synthesize` (``latent synth``) writes the same cache as ``write_synthetic(make_hierarchical(...))``,
bit for bit, while holding only one block of whole species at a time (:data:`BLOCK_ROWS` images): the
images are drawn species block by species block from the one generator stream, so a million 768-d images
need about as much memory as ten thousand. ``store_dtype="float16"`` halves the file.
"""

from __future__ import annotations

import itertools
import logging
import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np

from latent.errors import InputError
from latent.ranks import RANKS
from latent.taxonomy import Taxonomy

__all__ = ["ATTRIBUTES", "BLOCK_ROWS", "SyntheticData", "builtin_taxonomy_path", "builtin_taxonomy",
           "balanced_taxonomy", "make_hierarchical", "write_synthetic", "synthesize"]

log = logging.getLogger(__name__)

#: Where a planted attribute direction lies relative to the span of the species offsets.
ATTRIBUTES = ("orthogonal", "inside")
_ATTRIBUTE_TAG = 0xA77B
#: Images generated and written at a time by :func:`synthesize` (whole species; about 50 MB of float64 at 768-d).
BLOCK_ROWS = 8192


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
    attribute : numpy.ndarray or None
        ``(n_images,)`` int64 planted binary attribute of each image (0 or 1), None when none was planted.
    """

    embeddings: np.ndarray
    ids: np.ndarray
    taxonomy: Taxonomy
    species_means: np.ndarray
    params: dict = field(default_factory=dict)
    attribute: "np.ndarray | None" = None


def _check_number(name: str, value: float, *, minimum: float, integer: bool = False) -> None:
    ok = isinstance(value, (int, np.integer)) if integer else isinstance(value, (int, float, np.number))
    if not ok or isinstance(value, bool) or not np.isfinite(value) or value < minimum:
        kind = "an integer" if integer else "a finite number"
        raise ValueError(f"The {name!r} parameter of make_hierarchical must be {kind} >= {minimum}. Got {value!r} instead.")


def _checked(taxonomy: "Taxonomy | str | os.PathLike[str] | None", per_species: int, dim: int, signal: float,
             noise: float, seed: int, rank_scales: "Sequence[float] | None", attribute: "str | None",
             attribute_scale: float) -> tuple[np.ndarray, Taxonomy]:
    """The checked arguments of :func:`make_hierarchical`: ``(rank scales (7,) float64, Taxonomy)``."""
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
    if attribute is not None and attribute not in ATTRIBUTES:
        raise ValueError(f"The 'attribute' parameter of make_hierarchical must be None or one of "
                         f"{', '.join(ATTRIBUTES)}. Got {attribute!r} instead.")
    if attribute is not None:
        _check_number("attribute_scale", attribute_scale, minimum=0)
    return scales, taxonomy


class _Plan:
    """The generator of :func:`make_hierarchical` split in two: the species vectors (drawn at once, ``(S, D)``)
    and the images, drawn species block by species block from the same stream, so any block size gives
    the same numbers bit for bit (``Generator.standard_normal`` draws in C order with no carry-over)."""

    def __init__(self, taxonomy: Taxonomy, per_species: int, dim: int, signal: float, noise: float,
                 scales: np.ndarray, seed: int, attribute: "str | None", attribute_scale: float) -> None:
        self.taxonomy, self.per_species, self.dim, self.noise = taxonomy, int(per_species), int(dim), noise
        self.n_species = taxonomy.n_species
        self.rng = np.random.default_rng(seed)
        vectors = np.zeros((1, dim))  # the root
        for r in RANKS:
            parents = taxonomy.node_parents[r] if r > 0 else np.zeros(taxonomy.n_nodes(r), dtype=np.int64)
            offsets = self.rng.standard_normal((len(parents), dim)) / np.sqrt(dim)
            vectors = vectors[parents] + signal * scales[r] * offsets
        self.species_means = vectors  # (n_species, dim), species in lineage order
        self.params = {
            "per_species": int(per_species), "dim": int(dim), "signal": float(signal), "noise": float(noise),
            "rank_scales": [float(s) for s in scales], "seed": int(seed),
        }
        self.attribute, self.attribute_scale = attribute, attribute_scale
        self.attribute_labels: "np.ndarray | None" = None
        self.direction: "np.ndarray | None" = None
        if attribute is not None:  # its own generator: drawing it first changes no image draw
            self.attribute_labels, self.direction = _plant_attribute(self.species_means, self.n_species,
                                                                     self.per_species, attribute, seed)
            self.params.update(attribute=attribute, attribute_scale=float(attribute_scale),
                               attribute_direction=[float(v) for v in self.direction])

    def blocks(self, species_per_block: int) -> Iterator[tuple[slice, np.ndarray]]:
        """``(species slice, (b * per_species, D) float32 images)`` for consecutive blocks of species."""
        P, D = self.per_species, self.dim
        for a in range(0, self.n_species, max(1, int(species_per_block))):
            sl = slice(a, min(self.n_species, a + max(1, int(species_per_block))))
            eps = self.rng.standard_normal((sl.stop - sl.start, P, D)) / np.sqrt(D)
            images = (self.species_means[sl, None, :] + self.noise * eps).reshape(-1, D)
            if self.attribute_labels is not None:
                labels = self.attribute_labels[sl.start * P:sl.stop * P]
                images = images + float(self.attribute_scale) * (labels - 0.5)[:, None] * self.direction[None, :]
            yield sl, images.astype(np.float32)

    def log(self) -> None:
        if self.attribute is not None:
            log.info("synthetic attribute: %s, scale %g", self.attribute, self.attribute_scale)
        p = self.params
        log.info("synthetic embeddings: %d species x %d images, dim %d, signal %g, noise %g, seed %d",
                 self.n_species, p["per_species"], p["dim"], p["signal"], p["noise"], p["seed"])


def make_hierarchical(
    taxonomy: "Taxonomy | str | os.PathLike[str] | None" = None,
    *,
    per_species: int = 20,
    dim: int = 64,
    signal: float = 1.0,
    noise: float = 1.0,
    rank_scales: "Sequence[float] | None" = None,
    seed: int = 0,
    attribute: "str | None" = None,
    attribute_scale: float = 1.0,
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
    attribute
        None (default: no attribute, output unchanged), ``"orthogonal"`` or ``"inside"``: plant a binary
        per-image attribute along a direction orthogonal to, or inside, the span of the species offsets
        (module docstring, "Planted attribute").
    attribute_scale
        Length ``a`` of the attribute offset (the distance between the two attribute means), >= 0.

    Returns
    -------
    SyntheticData
    """
    scales, taxonomy = _checked(taxonomy, per_species, dim, signal, noise, seed, rank_scales, attribute,
                                attribute_scale)
    plan = _Plan(taxonomy, per_species, dim, signal, noise, scales, seed, attribute, attribute_scale)
    images = np.concatenate([block for _, block in plan.blocks(plan.n_species)], axis=0)
    n_species = plan.n_species
    labels = taxonomy.species_labels()
    table = taxonomy.species_table().to_numpy(dtype=object)
    ids = np.array([f"{labels[s]}/{k:03d}" for s in range(n_species) for k in range(per_species)])
    image_taxonomy = Taxonomy(np.repeat(table, per_species, axis=0), on_conflict="warn", what="synthetic taxonomy")
    plan.log()
    return SyntheticData(images, ids, image_taxonomy, plan.species_means.astype(np.float32), plan.params,
                         plan.attribute_labels)


def _plant_attribute(species_means: np.ndarray, n_species: int, per_species: int, where: str,
                     seed: int) -> tuple[np.ndarray, np.ndarray]:
    """``(labels, u)``: ``(n_species * per_species,)`` int64 0/1 labels (``per_species // 2`` ones per species,
    at random) and the ``(dim,)`` unit direction, orthogonal to or inside the span of the centred species
    vectors (:func:`make_hierarchical`, ``attribute``; ``"inside"``: a random Gaussian combination of the
    species offsets, so it leans on their large directions as species differences do)."""
    rng = np.random.default_rng([int(seed), _ATTRIBUTE_TAG])
    dim = species_means.shape[1]
    offsets = species_means - species_means.mean(axis=0)
    _, s, vt = np.linalg.svd(offsets, full_matrices=False)
    basis = vt[s > max(offsets.shape) * np.finfo(np.float64).eps * (s[0] if s.size else 0.0)]
    if where == "orthogonal":
        if basis.shape[0] >= dim:
            raise ValueError(f"The species offsets span all {dim} dimensions: no direction is orthogonal to them. "
                             f"Use make_hierarchical(dim > {basis.shape[0]}) or attribute='inside'.")
        z = rng.standard_normal(dim)
        u = z - basis.T @ (basis @ z)
    else:
        if basis.shape[0] == 0:
            raise ValueError("The species offsets are all zero (one species or signal=0): nothing to lie inside; "
                             "use make_hierarchical(signal > 0) with at least 2 species.")
        u = offsets.T @ rng.standard_normal(n_species)  # a random combination of species offsets
    u = u / np.linalg.norm(u)
    ones = per_species // 2
    labels = np.zeros((n_species, per_species), dtype=np.int64)
    for s_ in range(n_species):
        labels[s_, rng.permutation(per_species)[:ones]] = 1
    return labels.reshape(-1), u


def write_synthetic(
    out: "str | os.PathLike[str]",
    data: SyntheticData,
    *,
    source: str = "builtin",
    store_dtype: str = "float32",
    force: bool = False,
) -> Path:
    """Write :func:`make_hierarchical` output as an embedding cache (provenance model ``synthetic``).

    The generation parameters are part of the ``pretrained`` field, so caches made with other
    parameters are never mixed by an append. ``store_dtype``: ``"float32"`` (default) or ``"float16"``.
    For a large cache use :func:`synthesize`, which never holds all the embeddings.
    """
    from latent.cache import CacheWriter

    provenance = _provenance(data.params, data.attribute is not None, source, store_dtype)
    frame = {rank.label: data.taxonomy.labels(rank) for rank in RANKS}
    with CacheWriter.open(out, provenance, force=force) as writer:
        writer.append(list(data.ids), data.embeddings, frame)
        if data.attribute is not None:  # row metadata column "attribute" (0/1), for --attribute attribute
            import pandas as pd

            writer.write_metadata(pd.DataFrame({"attribute": np.asarray(data.attribute, dtype=np.int64)}))
    return Path(out)


def _provenance(p: dict, has_attribute: bool, source: str, store_dtype: str) -> "Any":
    """The cache provenance of synthetic embeddings made with parameters ``p``."""
    from latent.cache import Provenance

    if store_dtype not in ("float32", "float16"):
        raise InputError(f"The 'store_dtype' parameter must be 'float32' or 'float16'. Got {store_dtype!r}; "
                         f"pick one of those two.")
    pretrained = (
        f"signal={p['signal']:g},noise={p['noise']:g},dim={p['dim']},seed={p['seed']},"
        f"rank_scales={'/'.join(f'{s:g}' for s in p['rank_scales'])}"
    )
    if has_attribute:  # other embeddings: never mixed with attribute-free ones by an append
        pretrained += f",attribute={p['attribute']}/{p['attribute_scale']:g}"
    return Provenance(
        model="synthetic",
        pretrained=pretrained,
        preprocess={"name": "none"},
        embed_dim=int(p["dim"]),
        normalized=False,
        source=source,
        store_dtype=store_dtype,
        extra={"untrained": True, "synthetic": p},
    )


def synthesize(
    out: "str | os.PathLike[str]",
    taxonomy: "Taxonomy | str | os.PathLike[str] | None" = None,
    *,
    per_species: int = 20,
    dim: int = 64,
    signal: float = 1.0,
    noise: float = 1.0,
    rank_scales: "Sequence[float] | None" = None,
    seed: int = 0,
    attribute: "str | None" = None,
    attribute_scale: float = 1.0,
    source: str = "builtin",
    store_dtype: str = "float32",
    block_rows: int = BLOCK_ROWS,
    force: bool = False,
) -> tuple[Path, int]:
    """Write :func:`make_hierarchical`'s embeddings to a cache block by block (``latent synth``).

    The cache is the one ``write_synthetic(out, make_hierarchical(...))`` writes, bit for bit (same
    rows, ids, taxonomy, provenance and attribute column), but at most about ``block_rows`` images (whole
    species) are held at a time: memory is ``O(block_rows * dim + n_species * dim)``, not ``O(n_images *
    dim)``. Arguments are those of :func:`make_hierarchical` and :func:`write_synthetic`. An interrupted
    run leaves ``<out>.partial``; running it again with the same settings adds only the missing rows.

    Returns
    -------
    tuple
        ``(path, number of images written)``.
    """
    from latent.cache import CacheWriter

    if isinstance(block_rows, bool) or not isinstance(block_rows, (int, np.integer)) or block_rows < 1:
        raise InputError(f"The 'block_rows' parameter of synthesize must be an integer >= 1. Got {block_rows!r}; "
                         f"use e.g. {BLOCK_ROWS}.")
    scales, taxonomy = _checked(taxonomy, per_species, dim, signal, noise, seed, rank_scales, attribute,
                                attribute_scale)
    plan = _Plan(taxonomy, per_species, dim, signal, noise, scales, seed, attribute, attribute_scale)
    provenance = _provenance(plan.params, attribute is not None, source, store_dtype)
    labels = taxonomy.species_labels()
    names = {rank.label: taxonomy.species_table()[rank.label].to_numpy(dtype=object) for rank in RANKS}
    P = plan.per_species
    blocks = plan.blocks(max(1, int(block_rows) // P))
    first = next(blocks)  # made before the file: a block too large for memory leaves nothing behind
    with CacheWriter.open(out, provenance, force=force) as writer:
        done = writer.n_rows  # rows of an interrupted run of the same settings (resumed): the same rows
        for sl, images in itertools.chain([first], blocks):
            skip = min(max(done - sl.start * P, 0), len(images))
            if skip == len(images):
                continue
            ids = [f"{labels[s]}/{k:03d}" for s in range(sl.start, sl.stop) for k in range(P)][skip:]
            frame = {rank: np.repeat(values[sl], P)[skip:] for rank, values in names.items()}
            writer.append(ids, images[skip:], frame)
            log.debug("synth: %d of %d species written", sl.stop, plan.n_species)
        if plan.attribute_labels is not None:  # row metadata column "attribute" (0/1), for --attribute attribute
            import pandas as pd

            writer.write_metadata(pd.DataFrame({"attribute": np.asarray(plan.attribute_labels, dtype=np.int64)}))
    plan.log()
    return Path(out), plan.n_species * P
