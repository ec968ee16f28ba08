"""Latent-space probes: does the geometry of the embeddings follow the taxonomy?

Each probe is ``function(data: ProbeData, options: ProbeOptions) -> ProbeResult`` in a module named
for its family; :data:`PROBES` names them (``latent probe --list``). Modules are imported only when a
probe runs, so importing :mod:`latent.probes` stays cheap.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from typing import Callable

from latent.errors import InputError
from latent.probes.base import ProbeData, ProbeOptions, ProbeResult

__all__ = ["PROBES", "ProbeSpec", "ProbeData", "ProbeOptions", "ProbeResult", "get_probe", "parse_probes"]


@dataclass(frozen=True)
class ProbeSpec:
    """A probe's name, where it lives (``module:function``), what it measures, and its settings.

    ``settings`` names every probe-specific setting the probe reads from ``options.for_probe(name)``
    (``--set NAME.SETTING=VALUE``, YAML ``probe.settings``, ``ProbeOptions(extra=...)``); any other
    key is refused by :class:`ProbeOptions` with this list. Add a name here when a probe reads a new one.
    """

    name: str
    target: str
    description: str
    default: bool = True
    settings: tuple[str, ...] = ()

    def load(self) -> Callable[[ProbeData, ProbeOptions], ProbeResult]:
        module, function = self.target.split(":")
        return getattr(importlib.import_module(module), function)


PROBES: dict[str, ProbeSpec] = {spec.name: spec for spec in (
    ProbeSpec("levels", "latent.probes.levels:probe_levels",
              "the primary statistic per rank: distance to relatives inside the taxon over distance to relatives "
              "outside it within the parent, under a restricted (within-parent) permutation null",
              settings=("permutations", "alpha", "n_boot", "max_images_per_species", "max_species")),
    ProbeSpec("distances", "latent.probes.distances:probe_distances",
              "embedding distance of image and centroid pairs by LCA height; intra/inter-clade ratio per rank; "
              "Spearman of distance with height",
              settings=("n_boot", "n_boot_spearman")),
    ProbeSpec("clusters", "latent.probes.clusters:probe_clusters",
              "cluster quality per rank: silhouette, Calinski-Harabasz, NC1, mean CDNV",
              settings=("permutations", "n_boot", "n_boot_expensive")),
    ProbeSpec("separability", "latent.probes.separability:probe_separability",
              "linear probe accuracy per rank, random and species-disjoint splits",
              settings=("splits", "test_fraction", "permutations", "C", "n_boot", "max_iter", "tol", "grid",
                        "refine")),
    ProbeSpec("alignment", "latent.probes.alignment:probe_alignment",
              "Mantel (Pearson, Spearman) of centroid vs taxonomic distances, CKA with the taxonomy kernel, RSA",
              settings=("n_boot", "n_boot_rank", "tau_max_pairs")),
    ProbeSpec("dendrogram", "latent.probes.dendrogram:probe_dendrogram",
              "hierarchical clustering of centroids vs the taxonomy: cophenetic correlation, FMI, ARI, "
              "clade recovery, Baker's gamma",
              settings=("method", "n_boot")),
    ProbeSpec("hyperbolicity", "latent.probes.hyperbolic:probe_hyperbolicity",
              "Gromov delta-hyperbolicity of centroid distances (and of the taxonomy as a reference)",
              settings=("methods", "exact_max", "max_species", "base_point", "sample_size", "tries", "dtype")),
    ProbeSpec("hyperbolic_fit", "latent.probes.hyperbolic:probe_hyperbolic_fit",
              "Poincare-ball vs Euclidean fits of the centroid distances at dimensions 2, 4, 8, 16",
              settings=("dims", "steps", "lr", "init_radius", "max_species", "targets")),
)}


def get_probe(name: str) -> ProbeSpec:
    """The probe called ``name`` (a clear error listing the probes otherwise)."""
    if name not in PROBES:
        raise InputError(f"Unknown probe {name!r}. Probes: {', '.join(PROBES)} (see `latent probe --list`).")
    return PROBES[name]


def parse_probes(value: "str | list[str] | None") -> list[str]:
    """Probe names from ``"a,b"`` or a list (None: every default probe), validated, in registry order."""
    if value is None:
        return [name for name, spec in PROBES.items() if spec.default]
    names = [v.strip() for v in (value.split(",") if isinstance(value, str) else value) if v.strip()]
    unknown = [n for n in names if n not in PROBES]
    if unknown or not names:
        raise InputError(f"The 'probes' parameter must name probes from: {', '.join(PROBES)}. "
                         f"Got {', '.join(map(repr, unknown)) or 'nothing'}.")
    return [n for n in PROBES if n in names]
