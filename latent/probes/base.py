"""What every probe shares: the input (embeddings + species + tree), the result, and the nulls.

A probe is a function ``probe(data: ProbeData, options: ProbeOptions) -> ProbeResult``. It reads
image embeddings (``data.X``, one row per image labelled at species) or species centroids
(``data.centroids``) together with the species' lineages (``data.codes``), and returns rows of the
shared long results format plus the arrays a figure needs.

Nulls
-----
The null for "the geometry follows the taxonomy" keeps the embeddings and the shape of the tree and
permutes which species sits at which leaf: under permutation ``pi`` species ``s`` takes the lineage of
species ``pi[s]`` (:meth:`ProbeData.permuted_codes`). Whole species move, so images of one species stay
together (no pseudo-replication), and the number of taxa per rank and their sizes in species are kept.
Permutations come from :func:`species_permutations` (``numpy.random.default_rng(seed)``), so every
probe sees the same permutations for the same seed. :func:`null_row` turns an observed value and its
null distribution into a long-format row with ``null_mean``, ``null_std``, ``z`` (effect size:
``(observed - null_mean) / null_std``), ``p_value`` (Phipson & Smyth, the observed value counted as
one permutation) and ``permutations``.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any, Callable

import numpy as np
import pandas as pd

from latent import validate
from latent.errors import InputError
from latent.ranks import RANK_NAMES, Rank
from latent.taxonomy import N_RANKS
from latent.results import metric_row, results_frame
from latent.stats import null_summary
from latent.taxonomy import Taxonomy  # noqa: E402

__all__ = [
    "DISTANCES",
    "ProbeData",
    "ProbeOptions",
    "ProbeResult",
    "species_permutations",
    "null_row",
    "pairwise_distances",
]

log = logging.getLogger(__name__)

DISTANCES = ("cosine", "euclidean")


@dataclass(frozen=True)
class ProbeOptions:
    """Settings shared by every probe (``latent probe`` flags).

    Attributes
    ----------
    distance
        ``"cosine"`` (``1 - cos``) or ``"euclidean"``: the embedding distance of every probe.
    permutations
        Number of species permutations of each null (0: no null).
    max_pairs
        Largest number of image pairs an O(n^2) image-level step uses; above it, pairs or images are
        sampled (seeded, stratified by species) and the row's ``n`` says how many were used.
    max_images
        Largest number of images an image-level matrix (e.g. silhouette) is computed on; above it a
        stratified seeded sample of images is used (stated in the row's ``n`` and ``sampled`` column).
    max_rows
        Largest number of images read from a cache (``latent probe``; 0: all): above it every probe runs on
        a seeded sample stratified by species (each species keeps ``min(count, k)`` images, the largest
        ``k`` that fits), said in every row's ``note``, in ``run.json`` (``sample``) and in the summary.
        It bounds memory (a float32 copy of the sample) and time whatever the cache's size.
    seed
        Seed of every sample and permutation.
    device
        ``"auto"``, ``"cpu"``, ``"cuda"``, ``"cuda:N"`` or ``"mps"`` for the probes that use torch;
        one torch does not see raises InputError (:func:`latent.validate.device`).
    extra
        Probe-specific settings by probe name, e.g. ``{"dendrogram": {"method": "ward"}}``. Unknown
        probes and settings (names not in ``latent.probes.PROBES[name].settings``) raise InputError
        listing the valid ones.
    """

    distance: str = "cosine"
    permutations: int = 999
    max_pairs: int = 2_000_000
    max_images: int = 5_000
    max_rows: int = 100_000
    seed: int = 0
    device: str = "auto"
    extra: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.distance not in DISTANCES:
            raise InputError(f"The 'distance' option must be one of {', '.join(DISTANCES)}. Got {self.distance!r}.")
        for name in ("permutations", "max_pairs", "max_images", "max_rows", "seed"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 0:
                raise InputError(f"The {name!r} option must be an integer >= 0. Got {value!r}.")
        validate.int_range("permutations", self.permutations, 0, validate.MAX_PERMUTATIONS, of="ProbeOptions",
                           hint=f"Above {validate.MAX_PERMUTATIONS:,} permutations a null takes days and its "
                                f"p-value resolution gains nothing; use fewer.")
        # A device torch does not see is refused here, not silently unused by probes that never touch it.
        if not hasattr(self.device, "type"):  # a torch.device is the caller's own choice
            object.__setattr__(self, "device", validate.device("device", self.device, of="ProbeOptions"))
        # Unknown probes or settings (a misspelled --set or YAML key) are refused, listing the valid ones.
        object.__setattr__(self, "extra", validate.probe_settings(self.extra, name="extra", of="ProbeOptions"))

    def for_probe(self, name: str) -> dict[str, Any]:
        """The probe-specific settings of probe ``name`` (empty dict if none)."""
        return dict(self.extra.get(name, {}))


#: Rows per block of the float64 species sums of :meth:`ProbeData.from_arrays`.
_SUM_ROWS = 65_536


@dataclass(frozen=True)
class ProbeData:
    """Image embeddings with their species, and the species' place in the taxonomy.

    Build it with :meth:`from_arrays` (or ``latent.probes.load_probe_data`` from a cache). Only images
    labelled at species are kept; species are numbered as in :attr:`taxonomy` (lineage order, so
    species of one clade are adjacent).

    Attributes
    ----------
    X : numpy.ndarray
        ``(n, d)`` float32 image embeddings.
    species : numpy.ndarray
        ``(n,)`` int64 species index of each image, in ``[0, S)``.
    taxonomy : Taxonomy
        The taxonomy of the ``n`` images (``taxonomy.n_species == S``).
    codes : numpy.ndarray
        ``(S, 7)`` int64 node index of each species at each rank (``taxonomy.species_codes``).
    named : numpy.ndarray
        ``(S, 7)`` bool: the species' taxon at that rank has a name (False for placeholders of empty
        intermediate ranks). Per-rank probes use the species named at the rank.
    centroids : numpy.ndarray
        ``(S, d)`` float64 mean embedding of each species.
    counts : numpy.ndarray
        ``(S,)`` int64 images per species.
    ids : numpy.ndarray
        ``(n,)`` image ids (str), to align a baseline on the same images.
    raw_norms : numpy.ndarray or None
        ``(n,)`` float64 L2 norm of each image's vector before normalisation; None when unknown (the
        ``shape`` probe reports norms and the effect of centring on the raw vectors when given).
    """

    X: np.ndarray
    species: np.ndarray
    taxonomy: Taxonomy
    codes: np.ndarray
    named: np.ndarray
    centroids: np.ndarray
    counts: np.ndarray
    ids: np.ndarray
    raw_norms: "np.ndarray | None" = None

    @classmethod
    def from_arrays(cls, X: Any, taxonomy: Taxonomy, ids: Any = None, norms: Any = None) -> "ProbeData":
        """Probe data from ``(n, d)`` embeddings and the taxonomy of their ``n`` rows.

        Rows without a species are dropped (logged); the taxonomy is rebuilt on the kept rows so
        species are numbered ``0..S-1`` with no empty species. ``norms`` (``(n,)``, optional): each
        row's L2 norm before normalisation (kept as :attr:`raw_norms`).
        """
        X = np.asarray(X)
        if X.ndim != 2 or X.shape[0] != taxonomy.n_rows:
            raise InputError(f"ProbeData needs (n, d) embeddings with one row per taxonomy row "
                             f"({taxonomy.n_rows}); got shape {X.shape}.")
        if norms is not None:
            norms = np.asarray(norms, dtype=np.float64).reshape(-1)
            if norms.shape != (taxonomy.n_rows,) or not np.isfinite(norms).all() or (norms < 0).any():
                raise InputError(f"The 'norms' parameter of ProbeData.from_arrays must hold one finite norm >= 0 per "
                                 f"row ({taxonomy.n_rows}); got shape {norms.shape}.")
        if not np.isfinite(X).all():
            bad = np.flatnonzero(~np.isfinite(X).all(axis=1))
            raise InputError(f"Embeddings must be finite; {len(bad)} row(s) are not (first: {bad[:10].tolist()}).")
        ids = np.asarray([str(i) for i in range(len(X))] if ids is None else ids).astype(str)
        keep = taxonomy.labelled(Rank.SPECIES)
        if not keep.all():
            log.info("probes: %d of %d images have no species label and are left out", int((~keep).sum()), len(keep))
        tax = taxonomy if keep.all() else taxonomy.select_rows(keep)
        X = np.ascontiguousarray(X[keep], dtype=np.float32)
        species = tax.row_codes[:, Rank.SPECIES].astype(np.int64)
        S = tax.n_species
        if S < 2:
            raise InputError(f"Probes need images of at least 2 species; got {S}.")
        codes = tax.species_codes
        named = np.stack([tax.node_names[r][codes[:, r]] != "" for r in range(N_RANKS)], axis=1)
        counts = np.bincount(species, minlength=S).astype(np.int64)
        sums = np.zeros((S, X.shape[1]))
        for a in range(0, len(X), _SUM_ROWS):  # float64 sums a block at a time (no float64 copy of X)
            np.add.at(sums, species[a:a + _SUM_ROWS], X[a:a + _SUM_ROWS].astype(np.float64))
        return cls(X=X, species=species, taxonomy=tax, codes=codes, named=named,
                   centroids=sums / counts[:, None], counts=counts, ids=ids[keep],
                   raw_norms=None if norms is None else norms[keep])

    @property
    def n_species(self) -> int:
        return int(self.codes.shape[0])

    def species_distances(self) -> np.ndarray:
        """``(S, S)`` uint8 taxonomic distance (LCA height 0..7) between species."""
        return self.taxonomy.distances()

    def image_codes(self, codes: "np.ndarray | None" = None) -> np.ndarray:
        """``(n, 7)`` lineage codes of each image (from ``codes``, e.g. permuted; default the true ones)."""
        return (self.codes if codes is None else codes)[self.species]

    def permuted_codes(self, perm: np.ndarray) -> np.ndarray:
        """``(S, 7)`` codes under a species permutation: species ``s`` takes the lineage of ``perm[s]``."""
        return self.codes[perm]

    def permuted_named(self, perm: np.ndarray) -> np.ndarray:
        """``(S, 7)`` named mask that goes with :meth:`permuted_codes`."""
        return self.named[perm]

    def rank_labels(self, rank: "Rank | int", codes: "np.ndarray | None" = None,
                    named: "np.ndarray | None" = None) -> tuple[np.ndarray, np.ndarray]:
        """Species labels at ``rank``: ``(species_index, labels)`` of the species named there.

        Returns
        -------
        tuple of numpy.ndarray
            ``(m,)`` indices of the species named at ``rank`` and ``(m,)`` their node codes.
        """
        r = int(rank)
        codes = self.codes if codes is None else codes
        named = self.named if named is None else named
        rows = np.flatnonzero(named[:, r])
        return rows, codes[rows, r]


@dataclass(frozen=True)
class ProbeResult:
    """What a probe returns.

    Attributes
    ----------
    probe
        Probe name (``latent probe --list``).
    rows
        The long results table (``rank, metric, value, ci_low, ci_high, n`` + ``null_mean``,
        ``null_std``, ``z``, ``p_value``, ``permutations`` where a null applies, + probe columns).
    arrays
        Arrays a figure needs (saved to ``DIR/<probe>.npz``), e.g. a linkage matrix, fitted coordinates.
    tables
        Further tidy tables (saved to ``DIR/<probe>_<name>.csv``), e.g. distances by LCA height.
    info
        JSON-able notes (sample sizes, settings) saved into ``DIR/run.json``.
    """

    probe: str
    rows: pd.DataFrame
    arrays: Mapping[str, np.ndarray] = field(default_factory=dict)
    tables: Mapping[str, pd.DataFrame] = field(default_factory=dict)
    info: Mapping[str, Any] = field(default_factory=dict)

    def to_frame(self) -> pd.DataFrame:
        """The rows in the long format with a ``probe`` column."""
        return results_frame(self.rows, probe=self.probe)


def species_permutations(n_species: int, n_perm: int, seed: int = 0) -> Iterator[np.ndarray]:
    """``n_perm`` seeded permutations of ``range(n_species)`` (the same for the same arguments).

    Yields
    ------
    numpy.ndarray
        ``(n_species,)`` int64.
    """
    rng = np.random.default_rng([int(seed), 0x5EC1E5])
    for _ in range(int(n_perm)):
        yield rng.permutation(int(n_species))


def null_distribution(statistic: Callable[[np.ndarray], Any], n_species: int, n_perm: int,
                      seed: int = 0) -> np.ndarray:
    """The statistic under :func:`species_permutations`.

    Parameters
    ----------
    statistic
        Maps a permutation ``(S,)`` to a float or a ``(k,)`` array (several statistics at once, e.g.
        one per rank).

    Returns
    -------
    numpy.ndarray
        ``(n_perm,)`` or ``(n_perm, k)`` float64.
    """
    values = [np.asarray(statistic(p), dtype=np.float64) for p in species_permutations(n_species, n_perm, seed)]
    if not values:
        return np.zeros((0,))
    return np.stack(values)


def null_row(rank: str, metric: str, observed: float, null: "np.ndarray | None", n: int, *,
             alternative: str = "greater", ci: "tuple[float, float] | None" = None, **extra: Any) -> dict[str, Any]:
    """A long-format row with the observed value and where it lies in its null.

    ``null`` is the ``(n_perm,)`` statistic under the null (None or empty: no null columns filled).
    ``alternative`` is the direction in which the taxonomy predicts the statistic moves (``"greater"``
    for correlations, ``"less"`` for ratios such as intra/inter distance).
    """
    row = metric_row(rank, metric, observed, ci, n, **extra)
    if null is None or np.asarray(null).size == 0:
        row.update(null_mean=np.nan, null_std=np.nan, z=np.nan, p_value=np.nan, permutations=0)
        return row
    summary = null_summary(observed, np.asarray(null, dtype=np.float64), alternative)
    row.update(null_mean=summary["null_mean"], null_std=summary["null_std"], z=summary["z"],
               p_value=summary["p_value"], permutations=int(np.count_nonzero(~np.isnan(np.asarray(null, float)))))
    return row


def pairwise_distances(A: np.ndarray, B: "np.ndarray | None" = None, metric: str = "cosine", *,
                       device: Any = None) -> np.ndarray:
    """``(len(A), len(B))`` float64 distances: ``1 - cos`` or Euclidean (``B`` defaults to ``A``).

    Equal to ``scipy.spatial.distance.cdist`` with the same metric to ~1e-12; the diagonal of a
    square self-distance matrix is exactly 0. ``device`` (a probe's ``options.device``): where it names a
    torch device by the rule of :mod:`latent.kernels` (``"auto"`` on a machine with CUDA, ``"cuda"``, a
    ``torch.device``), the product runs there in float64 (:func:`latent.kernels.pairwise_distances` with
    ``exact``); otherwise (None, ``"cpu"``, ``"auto"`` without a GPU) in numpy here.
    """
    if metric not in DISTANCES:
        raise InputError(f"The 'metric' parameter must be one of {', '.join(DISTANCES)}. Got {metric!r}.")
    if device is not None:
        from latent.kernels import kernel_device
        from latent.kernels import pairwise_distances as kernel

        dev = kernel_device(device)
        if dev is not None:
            return kernel(A, B, metric, device=dev, exact=True)
    A = np.asarray(A, dtype=np.float64)
    same = B is None
    B = A if same else np.asarray(B, dtype=np.float64)
    if metric == "cosine":
        na = np.linalg.norm(A, axis=1)
        nb = na if same else np.linalg.norm(B, axis=1)
        if (na == 0).any() or (nb == 0).any():
            raise InputError("Cosine distance is undefined for a zero vector; use --distance euclidean.")
        D = 1.0 - (A / na[:, None]) @ (B / nb[:, None]).T
        np.clip(D, 0.0, 2.0, out=D)
    else:
        sa = np.einsum("ij,ij->i", A, A)
        sb = sa if same else np.einsum("ij,ij->i", B, B)
        D = np.sqrt(np.maximum(sa[:, None] + sb[None, :] - 2.0 * A @ B.T, 0.0))
    if same:
        np.fill_diagonal(D, 0.0)
        D = (D + D.T) / 2
    return D


RANK_LABELS = tuple(RANK_NAMES)
