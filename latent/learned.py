"""Learned from images or from names? What each model read in training, and the tables that set them side by side.

BioCLIP 2 was trained with full taxonomic names in its captions, so a hierarchy in its image space could be
imposed by the text. Three comparisons can tell, each with the statistics the rest of the report uses:

- **Image-only models** (DINOv2, an ImageNet-supervised ViT: no text, never a taxonomic name) and random
  weights, probed on the same images: the same primary statistic and verdict per rank
  (:mod:`latent.verdict`). A rank that is "yes" in a model that never read a name is visible from what the
  organisms look like.
- **The text space** of the names themselves (probe ``text_geometry``): the Mantel r between text distances
  and taxonomic distances, beside a control of random tokens with the same tree (what shared words alone
  give); and how close each image sits to its own taxon's text against the siblings' (probe
  ``image_text_alignment``).
- **Where in the network** each rank appears (``latent report --layers``, :mod:`latent.layers`).

:func:`training_text` says what text a model saw in training, from the model registry (never guessed from a
name that is not in it: "not recorded"). :func:`learned_tables` builds the section's tables from the
results tables only.
"""

from __future__ import annotations

import logging
from typing import Any, Sequence

import pandas as pd

from latent.ranks import RANK_NAMES
from latent.tables import format_ci, format_number

__all__ = ["TRAINING_TEXT", "training_text", "learned_tables", "learned_sentence", "LEARNED_NOTE"]

log = logging.getLogger(__name__)

#: What a model saw as text in training, by registry name (models not listed: see :func:`training_text`).
TRAINING_TEXT = {
    "bioclip-2": "taxonomic names (full lineage, scientific and common names in captions)",
    "bioclip": "taxonomic names (full lineage, scientific and common names in captions)",
    "clip-vit-l-14": "web alt-text (no taxonomic captions by design)",
    "clip-vit-l-14-laion2b": "web alt-text (no taxonomic captions by design)",
    "dinov2-vit-l-14": "none: image-only, self-supervised (no labels, no text)",
    "vit-l-16-in21k": "none: image-only, ImageNet-21k class labels (no text encoder)",
}

NAMES_KIND, NO_TEXT_KIND, RANDOM_KIND, OTHER_KIND = "names", "no text", "random", "not recorded"

LEARNED_NOTE = ("How to read this. A rank that is 'yes' in a model that never read a taxonomic name (image-only "
                "or random weights) is visible from the images themselves; a rank that is 'yes' only in models "
                "trained with names may come from the text. The text space's Mantel r is compared with random "
                "tokens on the same tree: a lineage text shares words with its relatives, so an encoder that only "
                "counts words already follows the tree; only the difference is what the names' meaning adds. "
                "Every verdict uses the rule stated under the answer (restricted null, Holm per model).")


def training_text(provenance: Any) -> tuple[str, str]:
    """``(kind, description)`` of the text a model saw in training.

    ``kind`` is ``"names"`` (taxonomic names in captions), ``"no text"`` (image-only), ``"random"`` (random
    weights or synthetic embeddings: trained on nothing), ``"web text"`` (other captions) or
    ``"not recorded"``. Read from the cache's provenance (``untrained``) and the model registry.
    """
    extra = getattr(provenance, "extra", None) or {}
    name = str(getattr(provenance, "model", "") or "")
    if extra.get("untrained"):
        return RANDOM_KIND, "none: random weights (or synthetic embeddings)"
    if name in TRAINING_TEXT:
        text = TRAINING_TEXT[name]
        kind = NAMES_KIND if text.startswith("taxonomic") else NO_TEXT_KIND if text.startswith("none") else "web text"
        return kind, text
    try:
        from latent.models import resolve_model

        spec = resolve_model(name)
    except Exception:  # not a registry or open_clip name (an imported cache): say so, never guess
        return OTHER_KIND, "not recorded"
    if getattr(spec, "backend", "open_clip") == "timm":
        return NO_TEXT_KIND, "none: image-only (timm)"
    return OTHER_KIND, "not recorded"


_fmt = format_number


_ci = format_ci


def learned_tables(models: Sequence[Any], verdict: pd.DataFrame,
                   metrics: "dict[str, pd.DataFrame | None]") -> dict[str, pd.DataFrame]:
    """The section's tables, from the verdicts and each model's probe rows.

    Parameters
    ----------
    models
        The report's :class:`~latent.figures.ModelRun` (label and provenance).
    verdict
        :func:`latent.verdict.verdict_table` rows of every model (``model, rank, level, verdict, value, ...``).
    metrics
        Model label -> its probe ``metrics.csv`` (None when absent).

    Returns
    -------
    dict of pandas.DataFrame
        ``"spaces"``: one row per model's image space: the text it saw in training, then per rank its verdict
        and primary statistic (``"yes 0.42"``); ``"text"``: per model with ``text_geometry`` rows, the text
        space's Mantel r, the random-token control's and their difference, each with its CI (absent when no
        model has them); ``"alignment"``: per model and rank, the image-text margin and rank score against
        their null means, and the image-centroid vs text Mantel r (absent when none).
    """
    out: dict[str, pd.DataFrame] = {}
    ranks = [r for r in RANK_NAMES if r in set(verdict["rank"])]
    rows = []
    for m in models:
        kind, text = training_text(m.provenance)
        row = {"image space of": m.label, "text in training": text}
        sel = verdict[verdict["model"] == m.label].set_index("rank")
        for rank in ranks:
            if rank not in sel.index:
                row[rank] = "-"
                continue
            r = sel.loc[rank]
            row[rank] = "not testable" if r["verdict"] == "not testable" else f"{r['verdict']} {_fmt(r['value'])}"
        rows.append(row)
    out["spaces"] = pd.DataFrame(rows)
    text_rows, align_rows = [], []
    for m in models:
        table = metrics.get(m.label)
        if table is None or "probe" not in table.columns:
            continue
        if "features" in table.columns:
            table = table[table["features"].fillna("model") == "model"]
        geo = table[table["probe"] == "text_geometry"].set_index("metric")
        if len(geo):
            def cell(metric: str) -> str:
                if metric not in geo.index or pd.isna(geo.loc[metric, "value"]):
                    note = geo.loc[metric, "note"] if metric in geo.index and "note" in geo.columns else ""
                    return f"- ({note})" if isinstance(note, str) and note else "-"
                r = geo.loc[metric]
                ci = _ci(r["ci_low"], r["ci_high"])
                return f"{_fmt(r['value'])} {ci}" if ci != "-" else _fmt(r["value"])
            form = geo["form"].dropna().iloc[0] if "form" in geo.columns and geo["form"].notna().any() else "taxon"
            text_rows.append({"model": m.label, "text form": form,
                              "text r (vs taxonomic distance)": cell("text_mantel_r_spearman"),
                              "random-token control r": cell("text_control_mantel_r_spearman"),
                              "text minus control": cell("text_minus_control_r")})
        align = table[table["probe"] == "image_text_alignment"]
        for rank in [r for r in RANK_NAMES if r in set(align["rank"])]:
            at = align[align["rank"] == rank].set_index("metric")

            def value(metric: str, at: pd.DataFrame = at) -> str:
                if metric not in at.index or pd.isna(at.loc[metric, "value"]):
                    return "-"
                r = at.loc[metric]
                null = f" (null {_fmt(r['null_mean'])}, p {_fmt(r['p_value'], 2)})" if not pd.isna(r.get("null_mean")) else ""
                return f"{_fmt(r['value'])}{null}"
            align_rows.append({"model": m.label, "rank": rank, "margin over siblings": value("text_margin"),
                               "rank score (0.5 = chance)": value("text_rank_score"),
                               "image vs text Mantel r": value("image_text_mantel_r_spearman")})
    if text_rows:
        out["text"] = pd.DataFrame(text_rows)
    if align_rows:
        out["alignment"] = pd.DataFrame(align_rows)
    return out


def learned_sentence(models: Sequence[Any], verdict: pd.DataFrame) -> str:
    """One sentence per kind of model: at which ranks its image space says "yes"."""
    parts = []
    for m in models:
        kind, _ = training_text(m.provenance)
        sel = verdict[(verdict["model"] == m.label) & (verdict["verdict"] != "not testable")
                      & (verdict["rank"] != "all")].drop_duplicates("level")
        yes = [lv.replace("=", " = ") for lv in sel.loc[sel["verdict"] == "yes", "level"]]
        what = {NAMES_KIND: "trained with taxonomic names", NO_TEXT_KIND: "never read a name",
                RANDOM_KIND: "random weights", "web text": "trained on web captions"}.get(kind, "training text not recorded")
        parts.append(f"{m.label} ({what}): yes at {len(yes)} of {len(sel)} testable ranks"
                     + (f" ({', '.join(yes)})" if yes else ""))
    return "; ".join(parts) + "."
