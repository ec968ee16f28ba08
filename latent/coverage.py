"""What could be tested, per rank: the units behind every answer and what was left out.

A statistic at rank ``r`` needs its unit to repeat inside a rank-``r`` taxon: the primary test
(:mod:`latent.probes.levels`) compares *species* inside a taxon with species outside it, so a taxon with
one species gives it nothing (at the species rank the units are images, so a species with one image gives
nothing); the image-level statistics (:mod:`latent.probes.clusters`) need taxa with at least two *images*;
a trained predictor is scored at ``r`` only on test images whose rank-``r`` taxon has a training image
(:func:`latent.splits.predictable_truth`). On a random sample of a collection most species have one image
(``tol1k``: 739 of 790) and most genera one species, so the answer at species and genus rests on few
units; this table says how few, next to the verdicts.

:func:`rank_coverage` builds the table from the results tables only (a probe run's ``species.csv`` and
``metrics.csv``, and evaluation ``metrics.csv`` files), so the report can show it without the cache.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
import pandas as pd

from latent.ranks import RANK_NAMES

__all__ = ["COVERAGE_COLUMNS", "rank_coverage", "COVERAGE_NOTE"]

#: Columns of :func:`rank_coverage`.
COVERAGE_COLUMNS = ["rank", "taxa", "species", "images", "primary test on", "image statistics on", "not testable",
                    "evaluation scored on"]

COVERAGE_NOTE = (
    "Units per rank. The primary test compares species inside a taxon with species of the other taxa of the same "
    "parent (images of a species with images of its congeners at the species rank): a taxon with one species, "
    "or alone in its parent, gives it nothing (a species with one image, or alone in its genus). Image "
    "statistics (silhouette, Calinski-Harabasz, NC1, CDNV) use taxa with at least two images. A trained "
    "predictor is scored at a rank only on test images whose taxon at that rank has a training image.")


def _named(column: pd.Series) -> np.ndarray:
    values = column.astype(object)
    return np.array([isinstance(v, str) and v.strip() != "" for v in values], dtype=bool)


def _plural(n: int, word: str) -> str:
    return f"{n} {word}" if n == 1 else f"{n} {'species' if word == 'species' else word + 's'}"


def _row(metrics: "pd.DataFrame | None", probe: str, metric: str, rank: str) -> "pd.Series | None":
    if metrics is None or not len(metrics) or "probe" not in metrics.columns:
        return None
    sel = metrics[(metrics["probe"] == probe) & (metrics["metric"] == metric) & (metrics["rank"] == rank)]
    if "features" in sel.columns:
        sel = sel[sel["features"].fillna("model") == "model"]
    return sel.iloc[0] if len(sel) else None


def _count(value: Any) -> "int | None":
    try:
        v = float(value)
    except (TypeError, ValueError):
        return None
    return None if not np.isfinite(v) else int(round(v))


def _lineages(species: pd.DataFrame, rank: str) -> np.ndarray:
    """``(S,)`` the lineage string of every species down to ``rank`` (``"Animalia;Chordata;..."``)."""
    upto = [c for c in RANK_NAMES[:RANK_NAMES.index(rank) + 1] if c in species.columns]
    return species[upto].astype(str).agg(";".join, axis=1).to_numpy()


def _child_units(species: pd.DataFrame, rank: str, named: np.ndarray) -> np.ndarray:
    """The primary test's units of ``rank`` for the ``named`` species: their taxa at the first finer rank
    whose partition of those species differs (ranks with the same partition are one level)."""
    here = pd.factorize(_lineages(species, rank)[named])[0]
    for finer in RANK_NAMES[RANK_NAMES.index(rank) + 1:]:
        if finer not in species.columns:
            continue
        units = pd.factorize(_lineages(species, finer)[named])[0]
        if len(np.unique(units)) != len(np.unique(here)):
            return units
    return np.arange(int(named.sum()))


def rank_coverage(species: pd.DataFrame, metrics: "pd.DataFrame | None" = None,
                  evaluations: "Mapping[str, pd.DataFrame] | None" = None) -> pd.DataFrame:
    """Per rank: taxa, species and images, and on how many units each kind of answer rests.

    Parameters
    ----------
    species
        A probe run's ``species.csv``: one row per species with the rank columns (``kingdom`` ..
        ``species``; empty where unnamed) and ``images``.
    metrics
        The same run's ``metrics.csv`` (the ``levels`` and ``clusters`` rows are read), or None.
    evaluations
        ``{name: metrics.csv of an evaluation}`` (their ``top1`` rows are read), or None.

    Returns
    -------
    pandas.DataFrame
        :data:`COVERAGE_COLUMNS`, one row per rank (kingdom .. species), as text for the report, and
        ``taxa_tested``, ``species_tested``: the taxa whose species the primary test can use (two or more
        units inside, another taxon in the parent) and their species, counted from ``species`` alone (NaN at
        the species rank and where the levels probe did not run); with the ``levels`` rows,
        ``species_tested`` equals their ``n_species``.
    """
    images = pd.to_numeric(species["images"], errors="coerce").fillna(0).to_numpy(dtype=np.int64)
    rows = []
    for rank in RANK_NAMES:
        if rank not in species.columns:
            continue
        named = _named(species[rank]) & (images > 0)
        lineage = _lineages(species, rank)  # a taxon is its lineage (homonyms are two taxa)
        labels = lineage[named]
        n_img = images[named]
        taxa, inverse = np.unique(labels, return_inverse=True)
        per_taxon_species = np.bincount(inverse, minlength=len(taxa))
        per_taxon_images = np.bincount(inverse, weights=n_img, minlength=len(taxa))
        record: dict[str, Any] = {"rank": rank, "taxa": len(taxa), "species": int(named.sum()),
                                  "images": int(n_img.sum())}
        # the primary test's units
        level = _row(metrics, "levels", "rank_distance_ratio", rank)
        if rank == "species":
            one = int((per_taxon_images < 2).sum())
            genus = np.array([p.rsplit(";", 1)[0] for p in labels])
            congeners = pd.Series(labels).groupby(genus).nunique().reindex(genus).to_numpy()
            alone = int(((per_taxon_images[inverse] >= 2) & (congeners < 2)).sum())
            missing = "; ".join(x for x in (f"{_plural(one, 'species')} with one image" if one else "",
                                            f"{_plural(alone, 'species')} of several images alone in their genus"
                                            if alone else "") if x)
        else:
            one = int((per_taxon_species < 2).sum())
            missing = f"{one} of {len(taxa)} taxa with one species" if one else ""
        if level is None:
            record["primary test on"] = "-"
        elif str(level.get("testable", "")).lower() in ("false", "0") or not np.isfinite(
                pd.to_numeric(level.get("p_value"), errors="coerce")):
            reason = level.get("reason", "")
            record["primary test on"] = f"not testable{': ' + str(reason) if isinstance(reason, str) and reason else ''}"
        else:
            n = _count(level.get("n_species", level.get("n")))
            if rank == "species":
                record["primary test on"] = (f"images of {_plural(n or 0, 'species')} (2 or more images, and "
                                             f"another species in the genus)")
            else:
                # taxa whose species took part: 2 or more units (taxa of the next finer partition) inside, and
                # another taxon in the parent (the contrast)
                parent = np.array([p.rsplit(";", 1)[0] if ";" in p else "" for p in lineage[named]])
                units = _child_units(species, rank, named)
                per_taxon_units = pd.Series(units).groupby(inverse).nunique().reindex(range(len(taxa))).to_numpy()
                taxa_of_parent = pd.Series(taxa[inverse]).groupby(parent).nunique()
                has_sibling = taxa_of_parent.reindex(parent).to_numpy() >= 2
                tested = np.unique(inverse[(per_taxon_units[inverse] >= 2) & has_sibling])
                if rows and rows[-1].get("taxa") == len(taxa) and "taxa_tested" in rows[-1]:
                    # the same partition as the coarser rank (e.g. one family per order): one level, tested
                    # once at its top rank, where the contrast between its taxa lives
                    tested = np.arange(int(rows[-1]["taxa_tested"]))
                    record["species_tested"] = rows[-1]["species_tested"]
                else:
                    record["species_tested"] = int(np.isin(inverse, tested).sum())
                record["primary test on"] = f"{n} species in {len(tested)} taxa"
                record["taxa_tested"] = len(tested)
        # image-level statistics
        cl = _row(metrics, "clusters", "calinski_harabasz", rank) if metrics is not None else None
        if cl is None:
            cl = _row(metrics, "clusters", "silhouette", rank)
        single_image = int((per_taxon_images < 2).sum())
        if cl is not None:
            record["image statistics on"] = f"{_count(cl.get('n'))} images in {_count(cl.get('n_taxa'))} taxa"
        else:
            record["image statistics on"] = "-" if metrics is None or not (
                "probe" in metrics.columns and (metrics["probe"] == "clusters").any()) else (
                "not testable: fewer than 2 taxa with 2 or more images")
        gaps = [missing] if missing else []
        if single_image and rank != "species":
            gaps.append(f"{single_image} taxa with one image")
        record["not testable"] = "; ".join(gaps) if gaps else "-"
        scored = []
        for name, frame in (evaluations or {}).items():
            if frame is None or not len(frame):
                continue
            sel = frame[(frame["rank"] == rank) & (frame["metric"] == "top1")]
            if "fold" in sel.columns and (sel["fold"].astype(str) == "mean").any():
                sel = sel[sel["fold"].astype(str) == "mean"]
            if len(sel):
                scored.append(f"{name}: {_count(sel['n'].iloc[0])} test images")
            else:
                scored.append(f"{name}: not predicted")
        record["evaluation scored on"] = "; ".join(scored) if scored else "-"
        rows.append(record)
    return pd.DataFrame(rows, columns=[*COVERAGE_COLUMNS, "taxa_tested", "species_tested"])
