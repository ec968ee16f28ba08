"""Latent-space probes: does the geometry of the embeddings follow the taxonomy?

Each probe is ``function(data: ProbeData, options: ProbeOptions) -> ProbeResult`` in a module named
for its family; :data:`PROBES` names them (``latent probe --list``). Modules are imported only when a
probe runs, so importing :mod:`latent.probes` stays cheap. Each entry also declares what the report
shows of it (:mod:`latent.figures`): its figures and its supporting (evidence) rows, so a new probe brings
both without editing :mod:`latent.report` or :mod:`latent.verdict`.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from typing import Callable

from latent.errors import InputError
from latent.figures import Evidence, FigureSpec
from latent.probes.base import ProbeData, ProbeOptions, ProbeResult
from latent.verdict import ALPHA

__all__ = ["PROBES", "ProbeSpec", "ProbeData", "ProbeOptions", "ProbeResult", "get_probe", "parse_probes",
           "with_units"]


@dataclass(frozen=True)
class ProbeSpec:
    """A probe's name, where it lives (``module:function``), what it measures, and its settings.

    ``settings`` names every probe-specific setting the probe reads from ``options.for_probe(name)``
    (``--set NAME.SETTING=VALUE``, YAML ``probe.settings``, ``ProbeOptions(extra=...)``); any other
    key is refused by :class:`ProbeOptions` with this list. Add a name here when a probe reads a new one.

    ``units`` says what each row's value is computed over (its *unit*: ``image``, ``image pair``,
    ``species``, ``species pair``): ``(level, unit)`` pairs, matched on the row's ``level`` column, ``"*"``
    for any row. A probe that writes its own ``unit`` column keeps it; :func:`with_units` fills the others
    and ``n_units`` (the units behind the value, ``n`` where the probe does not say).

    ``figures`` are the report's figures drawn from this probe's results tables and ``evidence`` the
    supporting statistics it adds to the report's answer (:class:`latent.figures.Evidence`, the shape of
    :data:`latent.verdict.SUPPORTING` entries); see :mod:`latent.figures`.
    """

    name: str
    target: str
    description: str
    default: bool = True
    settings: tuple[str, ...] = ()
    figures: tuple[FigureSpec, ...] = ()
    evidence: tuple[Evidence, ...] = ()
    units: tuple[tuple[str, str], ...] = (("*", "species"),)

    def load(self) -> Callable[[ProbeData, ProbeOptions], ProbeResult]:
        module, function = self.target.split(":")
        return getattr(importlib.import_module(module), function)


PROBES: dict[str, ProbeSpec] = {spec.name: spec for spec in (
    ProbeSpec("levels", "latent.probes.levels:probe_levels",
              "the primary statistic per rank: distance to relatives inside the taxon over distance to relatives "
              "outside it within the parent, under a restricted (within-parent) permutation null",
              settings=("permutations", "alpha", "n_boot", "max_images_per_species", "max_species"),
              figures=(FigureSpec(
                  "probe_summary", "Evidence per rank: observed statistic against its null",
                  "Each statistic (marker, with its bootstrap 95% CI) against the central 95% of its permutation "
                  "null (grey bar: 2.5th-97.5th percentile of the null samples; tick: null mean). Each panel says "
                  "which side supports the taxonomy. Filled: adjusted p <= " + f"{ALPHA:g}" + " (Holm over the "
                  "primary tests, Benjamini-Yekutieli over the supporting rows) on that side; hollow otherwise. "
                  "Ranks with one partition of the species are one column (e.g. 'order = family'); ranks with one "
                  "taxon are left out (named under the legend).",
                  "latent.plotting.nulls:report_probe_summary", order=10, section="answer"),)),
    ProbeSpec("distances", "latent.probes.distances:probe_distances",
              "embedding distance of image and centroid pairs by LCA height; intra/inter-clade ratio per rank; "
              "Spearman of distance with height",
              settings=("n_boot", "n_boot_spearman"), units=(("image", "image pair"), ("centroid", "species pair")),
              figures=(FigureSpec(
                  "distance_by_height", "Embedding distance by taxonomic distance",
                  "Distance between images and between species centroids, grouped by the height of their lowest "
                  "common ancestor (0 = same species ... 7 = different kingdoms).",
                  "latent.plotting.geometry:report_distance_by_height", order=30,
                  section="geometry"),),
              evidence=(Evidence("distances", "intra_inter_ratio", {}, "less", "intra/inter-clade distance ratio",
                                 1),)),
    ProbeSpec("clusters", "latent.probes.clusters:probe_clusters",
              "cluster quality per rank: silhouette, Calinski-Harabasz, NC1, mean CDNV",
              settings=("permutations", "n_boot", "n_boot_expensive"), units=(("*", "image"),),
              evidence=(Evidence("clusters", "silhouette", {}, "greater", "silhouette", 2),
                        Evidence("clusters", "calinski_harabasz", {}, "greater", "Calinski-Harabasz", 3))),
    ProbeSpec("separability", "latent.probes.separability:probe_separability",
              "linear probe accuracy per rank, random and species-disjoint splits",
              settings=("splits", "test_fraction", "permutations", "C", "n_boot", "max_iter", "tol", "grid",
                        "refine", "max_images", "max_work"), units=(("*", "image"),),
              evidence=(Evidence("separability", "linear_accuracy", {"split": "species-disjoint"}, "greater",
                                 "linear probe on unseen species", 6),)),
    ProbeSpec("alignment", "latent.probes.alignment:probe_alignment",
              "Mantel (Pearson, Spearman) of centroid vs taxonomic distances, CKA with the taxonomy kernel, RSA",
              settings=("n_boot", "n_boot_rank", "tau_max_pairs"),
              figures=(
                  FigureSpec("distance_matrix", "Centroid distances in taxonomic order ({model})",
                             "Species-centroid distances (the probes' distance, named on the colour bar), species in "
                             "taxonomy order; boundary lines are thicker and darker for higher ranks (legend; ranks "
                             "with one partition share a line); clades are named where their names fit.",
                             "latent.plotting.geometry:report_distance_matrix", per_model=True,
                             order=40, section="hierarchy"),
                  FigureSpec("nulls", "Whole-hierarchy statistics against their nulls ({model})",
                             "Histogram: the statistic with species permuted among the leaves of the tree; line: "
                             "observed.", "latent.plotting.nulls:report_nulls", per_model=True, order=43,
                             section="geometry")),
              evidence=(Evidence("alignment", "cka_taxonomy", {}, "greater", "CKA with the taxonomy kernel", 7),)),
    ProbeSpec("dendrogram", "latent.probes.dendrogram:probe_dendrogram",
              "hierarchical clustering of centroids vs the taxonomy: cophenetic correlation, FMI, ARI, "
              "clade recovery, Baker's gamma",
              settings=("method", "n_boot"),
              figures=(FigureSpec(
                  "tanglegram", "Dendrogram of centroids against the taxonomy ({model})",
                  "Left: the taxonomy; right: average-linkage clustering of species centroids; lines join the same "
                  "species. Both trees are rotated (never restructured) to cross as few lines as possible; the number "
                  "of crossings is written under the lines.", "latent.plotting.trees:report_tanglegram", per_model=True, order=41,
                  section="hierarchy"),),
              evidence=(Evidence("dendrogram", "fmi", {}, "greater", "dendrogram cut vs taxa (Fowlkes-Mallows)", 4),
                        Evidence("dendrogram", "clade_recovery", {}, "greater", "taxa recovered as dendrogram clades",
                                 5),
                        Evidence("dendrogram", "cophenetic_taxonomy_corr", {}, "greater",
                                 "dendrogram vs taxonomic distances", 8))),
    ProbeSpec("hyperbolicity", "latent.probes.hyperbolic:probe_hyperbolicity",
              "Gromov delta-hyperbolicity of centroid distances (and of the taxonomy as a reference)",
              settings=("methods", "exact_max", "max_species", "base_point", "sample_size", "tries", "dtype")),
    ProbeSpec("hyperbolic_fit", "latent.probes.hyperbolic:probe_hyperbolic_fit",
              "Poincare-ball vs Euclidean fits of the centroid distances at dimensions 2, 4, 8, 16",
              settings=("dims", "steps", "lr", "init_radius", "max_species", "targets", "tol"),
              figures=(
                  FigureSpec("poincare", "Species in the Poincare disk ({model})",
                             "Two-dimensional Poincare-ball fits of the species-centroid distances (left) and of the "
                             "taxonomic distances (right), coloured and named by order; dotted circles mark hyperbolic distances "
                             "from the centre. A panel says when its fit did not converge.",
                             "latent.plotting.hyperbolic:report_poincare", per_model=True, order=42,
                             section="tree-likeness"),
                  FigureSpec("distortion", "Poincare vs Euclidean fits at equal dimension",
                             "Average distortion and MAP of fits of the species-centroid distances in the Poincare "
                             "ball and in Euclidean space of the same dimension; the taxonomy's own distances as the "
                             "reference (a tree: the Poincare ball should win). Hollow markers: fits that did not converge (loss "
                             "still falling at the last step), left out of the lines and of the comparison.",
                             "latent.plotting.hyperbolic:report_distortion", order=60,
                             section="tree-likeness"),
                  FigureSpec("fit_loss", "Convergence of the fits",
                             "Loss of the Poincare and Euclidean fits of the centroid distances against the "
                             "optimisation step. Dashed: the fit did not converge.", "latent.plotting.hyperbolic:report_fit_loss", order=61,
                             section="tree-likeness"))),
    ProbeSpec("intra_species", "latent.probes.intra_species:probe_intra_species",
              "within-species attribute (--attribute COL): angle between its direction and the species-centroid "
              "subspace, share of its norm outside it, leave-one-out separability within species; null: the "
              "attribute permuted within species",
              default=False,
              settings=("attribute", "attribute_name", "permutations", "n_boot", "variance", "min_per_value"),
              units=(("*", "species"),),
              figures=(FigureSpec(
                  "intra_species", "Within-species attribute against the species structure ({model})",
                  "Left: images of up to 8 species on the species axis (inside the span of the species centroids) "
                  "and the attribute axis (the mean attribute direction outside it); colour: species, marker: "
                  "attribute value. Right: each species' angle between its attribute direction and the species "
                  "subspace (filled: its within-species permutation p <= " + f"{ALPHA:g}" + ", two-sided) beside "
                  "its null mean (grey); the median over species is written in the panel.",
                  "latent.plotting.intra_species:report_intra_species", per_model=True, order=70,
                  section="geometry"),)),
    ProbeSpec("text_geometry", "latent.probes.text_side:probe_text_geometry",
              "does the text encoder's space of species names follow the taxonomy: Spearman Mantel r of text cosine "
              "distances vs LCA heights, beside a control of random tokens with the same tree (shared prefixes alone)",
              default=False, settings=("texts", "encode_text", "n_boot", "form"), units=(("*", "species pair"),)),
    ProbeSpec("image_text_alignment", "latent.probes.text_side:probe_image_text_alignment",
              "per rank: each image's cosine to its own taxon's text minus the best sibling's (margin), its rank "
              "among siblings, and the Mantel r of image-centroid vs text distances",
              default=False, settings=("texts", "n_boot", "n_boot_rank", "form"), units=(("*", "species"),)),
    ProbeSpec("seen_unseen", "latent.probes.seen_unseen:probe_seen_unseen",
              "the primary statistic per rank (levels) on the species a model saw in training and on the others "
              "(setting seen: a training list such as seen_in_training.json), and unseen minus seen",
              default=False, settings=("seen",), units=(("*", "species"),)),
    ProbeSpec("shape", "latent.probes.shape:probe_shape",
              "the shape of the space: norms, anisotropy (mean cosine of image pairs), effective dimensionality "
              "(participation ratio, PCA spectrum), hubness (k-occurrence skew), each before and after centring",
              settings=("k", "n_boot")),
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


def with_units(frame: "pd.DataFrame", spec: ProbeSpec) -> "pd.DataFrame":
    """``frame`` (one probe's rows) with ``unit`` and ``n_units`` filled from ``spec.units`` where the probe
    left them empty (a copy; the probe's own values are kept)."""
    import numpy as np
    import pandas as pd

    out = frame.copy()
    units = dict(spec.units)
    level = out["level"].astype(object) if "level" in out.columns else pd.Series([None] * len(out), index=out.index)
    declared = [units.get(str(v), units.get("*", "")) for v in level]
    own = out["unit"].astype(object) if "unit" in out.columns else pd.Series([None] * len(out), index=out.index)
    out["unit"] = [u if isinstance(u, str) and u else d for u, d in zip(own, declared)]
    n = out["n"] if "n" in out.columns else pd.Series(np.nan, index=out.index)
    out["n_units"] = out["n_units"].where(out["n_units"].notna(), n) if "n_units" in out.columns else n
    return out
