"""``latent audit``: one folder that says what the data is before any probe is trusted.

:func:`audit` reads an embedding cache (or an image folder) and writes into ``out``:

* ``audit.csv``: every number, in the long results format (``section, rank, metric, value, ci_low,
  ci_high, n, ...``), from the parts in :mod:`latent.audit`:
  coverage (taxa per rank, images per taxon, one-child ranks, empty ranks, unlabelled rows, homonyms),
  image properties and exact duplicates (:mod:`latent.audit.images`, when the image files are found),
  near duplicates by embedding cosine (:mod:`latent.audit.duplicates`), overlap with a model's training
  taxa (``trained_on``), and metadata versus taxonomy for each ``by`` column
  (:mod:`latent.audit.metadata`).
* ``images.csv`` (per image), ``duplicates.csv`` (exact and near pairs, with whether they cross two
  species or the split), ``overlap.csv`` (seen / unseen per species), ``splits.csv`` (a stratified and a
  species-disjoint split of the cache's rows by the rules of :mod:`latent.splits`, so later work can use
  the same split), figures (``figures/*.png``: images per taxon, worst images, metadata versus taxonomy)
  and ``audit.md``, which ``latent report`` links when the audit is of one of its caches.

An existing audit in ``out`` is replaced only with ``force``; files are written to a temporary folder and
moved into place with ``audit.json`` last (a half-written audit never reads as complete).
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import pandas as pd

from latent._version import __version__
from latent.errors import InputError
from latent.ranks import RANK_NAMES

__all__ = ["AuditResult", "audit", "coverage_rows", "draw_duplicate_pairs", "find_audits", "AUDIT_COLUMNS"]

log = logging.getLogger(__name__)

#: Leading columns of ``audit.csv``.
AUDIT_COLUMNS = ["section", "rank", "metric", "value", "ci_low", "ci_high", "n", "note"]


@dataclass
class AuditResult:
    """Where the audit is and its tables."""

    out: Path
    rows: pd.DataFrame
    tables: dict[str, pd.DataFrame] = field(default_factory=dict)
    figures: list[Path] = field(default_factory=list)

    def summary(self) -> str:
        lines = [f"audit of {self.rows.attrs.get('source', '')}: {self.out / 'audit.md'}"]
        for line in self.rows.attrs.get("headlines", []):
            lines.append(f"  {line}")
        return "\n".join(lines)


def _row(section: str, metric: str, value: Any, n: Any = np.nan, rank: str = "all", note: str = "",
         **extra: Any) -> dict[str, Any]:
    return {"section": section, "rank": rank, "metric": metric, "value": value, "ci_low": np.nan,
            "ci_high": np.nan, "n": n, "note": note, **extra}


def _split_by_values(values: np.ndarray, rows: np.ndarray, n: int, seed: int,
                     test_fraction: float = 0.3) -> np.ndarray:
    """``(n,)`` ``"train"``/``"test"``/``""``: whole values of a column go to test, in a seeded order, each
    when it keeps the test share at most ``test_fraction`` of ``rows`` (the smallest value when none does; at
    least one value stays in train); rows outside ``rows`` or with an empty value are ``""``."""
    out = np.full(n, "", dtype=object)
    usable = rows[np.array([str(values[r]).strip() not in ("", "nan", "None") for r in rows], dtype=bool)]
    if not len(usable):
        return out
    distinct, counts = np.unique(values[usable], return_counts=True)
    if len(distinct) < 2:
        raise InputError(f"--split-by needs a column with at least 2 values among the labelled rows; it has "
                         f"{len(distinct)}.")
    order = np.random.default_rng(seed).permutation(len(distinct))
    target = test_fraction * len(usable)
    test_values, total = [], 0
    for i in order:  # values in a seeded order, each taken when it keeps the test share within the target
        if total + counts[i] <= target and len(test_values) < len(distinct) - 1:
            test_values.append(distinct[i])
            total += counts[i]
    if not test_values:  # every value alone is above the target: the smallest one
        test_values = [distinct[int(np.argmin(counts))]]
    out[usable] = np.where(np.isin(values[usable], test_values), "test", "train")
    return out


def coverage_rows(taxonomy: Any) -> pd.DataFrame:
    """Coverage of a taxonomy (one row per image): taxa per rank, images per taxon, one-child ranks, empty
    ranks, unlabelled rows and homonyms, in the long format of ``audit.csv`` (``section = "coverage"``).

    Parameters
    ----------
    taxonomy
        A :class:`latent.taxonomy.Taxonomy` (one row per image).
    """
    rows = []
    n = taxonomy.n_rows
    for r, rank in enumerate(RANK_NAMES):
        labelled = taxonomy.labelled(r)
        rows.append(_row("coverage", "unlabelled_rows", int((~labelled).sum()), n, rank))
        if not labelled.any():
            rows.append(_row("coverage", "taxa", 0, n, rank, "empty rank: no row is named here"))
            continue
        codes = taxonomy.codes(r)[labelled]
        _, per_taxon = np.unique(codes, return_counts=True)
        rows += [_row("coverage", "taxa", len(per_taxon), int(labelled.sum()), rank),
                 _row("coverage", "images_per_taxon_min", int(per_taxon.min()), len(per_taxon), rank),
                 _row("coverage", "images_per_taxon_median", float(np.median(per_taxon)), len(per_taxon), rank),
                 _row("coverage", "images_per_taxon_max", int(per_taxon.max()), len(per_taxon), rank),
                 _row("coverage", "taxa_with_one_image", int((per_taxon == 1).sum()), len(per_taxon), rank)]
        names = taxonomy.node_names[r][np.unique(codes)]
        _, name_counts = np.unique(names, return_counts=True)
        rows.append(_row("coverage", "homonym_names", int((name_counts > 1).sum()), len(names), rank,
                         "one name for taxa of different lineages"))
        if r + 1 < len(RANK_NAMES):
            child = taxonomy.codes(r + 1)
            both = labelled & taxonomy.labelled(r + 1)
            if both.any():
                pairs = pd.DataFrame({"p": taxonomy.codes(r)[both], "c": child[both]}).drop_duplicates()
                children = pairs.groupby("p")["c"].nunique()
                rows.append(_row("coverage", "taxa_with_one_child", int((children == 1).sum()), len(children),
                                 rank, f"taxa with a single {RANK_NAMES[r + 1]} (a per-rank metric there is "
                                       f"the parent's)"))
    return pd.DataFrame(rows)


def _image_paths(ids: np.ndarray, roots: Sequence[Path]) -> "list[Path] | None":
    """The image files of the cache's ids under the first root where most of them exist (None: not found)."""
    for root in roots:
        if root is None or not root.is_dir():
            continue
        paths = [root / str(i) for i in ids]
        sample = paths[:: max(1, len(paths) // 50)]
        if sample and sum(p.is_file() for p in sample) >= 0.8 * len(sample):
            return paths
    return None


def _figure_images_per_taxon(taxonomy: Any, path: Path) -> Path:
    import matplotlib.pyplot as plt
    from matplotlib.ticker import FuncFormatter, MaxNLocator, NullFormatter

    from latent.plotting.style import new_figure, save_figure

    ranks = [r for r in range(len(RANK_NAMES)) if taxonomy.labelled(r).any()]
    fig, axes = new_figure(1, len(ranks), panel=(2.2, 2.4))
    axes = np.ravel(axes)
    for ax, r in zip(axes, ranks):
        _, counts = np.unique(taxonomy.codes(r)[taxonomy.labelled(r)], return_counts=True)
        bins = np.unique(np.round(np.geomspace(1, max(2, counts.max()) + 1, 12)))
        ax.hist(counts, bins=bins, color="#4477AA")
        ax.set_xscale("log")
        ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
        ax.xaxis.set_minor_formatter(NullFormatter())
        ax.yaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set_title(f"{RANK_NAMES[r]} ({len(counts)} taxa)", fontsize=9)
        ax.set_xlabel("images per taxon")
    axes[0].set_ylabel("taxa")
    fig.suptitle("Images per taxon, per rank")
    written = save_figure(fig, path)
    plt.close(fig)
    return next(p for p in written if p.suffix == ".png")


def _figure_sizes(props: pd.DataFrame, path: Path, input_size: int) -> "Path | None":
    """Histograms of the shortest side, the aspect ratio and the share a centre crop removes."""
    import matplotlib.pyplot as plt

    from latent.plotting.style import new_figure, save_figure

    ok = props[props["readable"]]
    if ok.empty:
        return None
    fig, axes = new_figure(1, 3, panel=(3.0, 2.4))
    axes = np.ravel(axes)
    axes[0].hist(np.minimum(ok["width"], ok["height"]), bins=30, color="#4477AA")
    axes[0].axvline(input_size, color="black", linestyle="--", linewidth=1)
    axes[0].set_xlabel(f"shortest side (px; dashed: model input {input_size})")
    axes[1].hist(ok["aspect"], bins=30, color="#4477AA")
    axes[1].set_xlabel("aspect ratio (width / height)")
    axes[2].hist(ok["crop_loss"], bins=np.linspace(0, 1, 21), color="#4477AA")
    axes[2].set_xlabel("share cut by the centre crop")
    axes[0].set_ylabel("images")
    fig.suptitle(f"Image sizes ({len(ok)} readable images)")
    written = save_figure(fig, path)
    plt.close(fig)
    return next(p for p in written if p.suffix == ".png")


def draw_duplicate_pairs(pairs: pd.DataFrame, paths: dict[str, str], n: int = 8) -> Any:
    """The ``n`` closest pairs side by side (``pairs``: ``id_a, id_b`` and ``cosine`` or ``kind``), each
    captioned with its ids, its cosine or kind, and "across species" when it crosses two species.

    Returns
    -------
    matplotlib.figure.Figure or None
        None when no pair has both images on disk.
    """
    import matplotlib.pyplot as plt

    from latent.audit.images import _caption_path, _display_thumbnail

    shown = []
    for r in pairs.itertuples(index=False):
        a, b = paths.get(str(r.id_a)), paths.get(str(r.id_b))
        if a is None or b is None:
            continue
        images = (_display_thumbnail(a), _display_thumbnail(b))
        if images[0] is None or images[1] is None:
            continue
        shown.append((r, images))
        if len(shown) == n:
            break
    if not shown:
        return None
    fig, axes = plt.subplots(len(shown), 2, figsize=(5.0, 2.4 * len(shown)), squeeze=False)
    for (r, images), row in zip(shown, axes):
        cosine = getattr(r, "cosine", float("nan"))
        what = f"cosine {cosine:.4f}" if isinstance(cosine, float) and np.isfinite(cosine) else str(getattr(r, "kind", ""))
        if bool(getattr(r, "crosses_species", False)):
            what += ", across species"
        for ax, image, name in zip(row, images, (r.id_a, r.id_b)):
            ax.imshow(image, cmap="gray" if image.ndim == 2 else None)
            ax.set_axis_off()
            ax.set_title(_caption_path(str(name)), fontsize=7)
        row[0].text(1.05, -0.06, what, transform=row[0].transAxes, ha="center", va="top", fontsize=8)
    fig.suptitle(f"Closest duplicate pairs ({len(shown)} of {len(pairs)})", fontsize=10)
    fig.tight_layout()
    return fig


def _figure_metadata(table: pd.DataFrame, path: Path) -> "Path | None":
    import matplotlib.pyplot as plt

    from latent.plotting.style import new_figure, save_figure

    wanted = ["r2_column", "r2_taxonomy", "r2_both", "r2_column_given_taxonomy"]
    sel = table[table["metric"].isin(wanted)]
    if sel.empty:
        return None
    columns = list(dict.fromkeys(sel["column"]))
    fig, axes = new_figure(1, len(columns), panel=(5.2, 3.4))
    axes = np.ravel(axes)
    for ax, column in zip(axes, columns):
        rows = sel[sel["column"] == column].set_index("metric").reindex(wanted)
        x = np.arange(len(wanted))
        ax.bar(x, rows["value"].fillna(0), color=["#EE6677", "#4477AA", "#228833", "#CCBB44"])
        if "null_mean" in rows.columns:
            ax.scatter(x, rows["null_mean"], marker="_", s=300, color="black", zorder=3, label="chance (null mean)")
        ax.set_xticks(x, ["column", "taxonomy", "both", "column | taxonomy"], rotation=20)
        ax.set_ylabel("R² (share of the geometry)")
        rank = rows["rank"].dropna().iloc[0] if rows["rank"].notna().any() else ""
        ax.set_title(f"{column} vs taxonomy at {rank}", fontsize=9)
        ax.legend(fontsize=7, loc="upper left")
    fig.suptitle("Metadata versus taxonomy (R²)")
    written = save_figure(fig, path)
    plt.close(fig)
    return next(p for p in written if p.suffix == ".png")


def audit(source: "str | os.PathLike[str]", out: "str | os.PathLike[str]", *, trained_on: Any = None,
          near_dup: float = 0.95, by: Sequence[str] = (), rank: str = "family", permutations: int = 199,
          seed: int = 0, images: "str | os.PathLike[str] | None" = None, input_size: int = 224,
          taxonomy_table: "str | os.PathLike[str] | None" = None, join_on: "str | None" = None,
          path_column: "str | None" = None, split_by: Sequence[str] = (), force: bool = False) -> AuditResult:
    """Audit an embedding cache (or an image folder) and write the audit folder ``out``.

    Parameters
    ----------
    source
        An embedding cache (``.h5``), a folder of images or a manifest table (as ``latent embed`` takes them).
    out
        The audit folder (created). One that holds an audit is replaced only with ``force``.
    trained_on
        Taxa a model was trained on (a JSON object or list, or a text file, one name per line): which
        species of the cache are seen and unseen (:func:`latent.audit.duplicates.training_overlap`).
    near_dup
        Cosine similarity at or above which two embeddings are near duplicates, in (0, 1].
    by
        Metadata columns of the cache to set against the taxonomy (:func:`metadata_vs_taxonomy`).
    rank
        The taxonomic rank of that comparison (and of the within-taxon contrast).
    permutations, seed
        Permutations of its nulls and the seed of every sample, split and permutation.
    images
        Folder the cache's ids are relative to (default: the folder the cache was made from, or its parent).
    input_size
        The model's input size, for what the preprocessing cuts away.
    split_by
        Metadata columns to split by: whole values go to test (``splits.csv`` column ``by_<column>``), e.g.
        train on some source datasets and test on another.
    taxonomy_table, join_on, path_column
        For a folder or a manifest: the labels, as ``latent embed`` reads them (``--taxonomy``,
        ``--join-on KEY=TAXCOL``, ``--path-column``); coverage is audited when some image is labelled.
    force
        Replace an existing audit in ``out``.

    Returns
    -------
    AuditResult
    """
    from latent.audit.duplicates import duplicate_summary, near_duplicates, overlap_summary, training_overlap
    from latent.audit.images import contact_sheet, exact_duplicates, image_flags_summary, image_properties
    from latent.audit.metadata import metadata_vs_taxonomy
    from latent.validate import number_range

    start = time.perf_counter()
    source, out = Path(source), Path(out)
    number_range("--near-dup", near_dup, 0, 1, low_open=True, hint="Use e.g. 0.95 (cosine similarity).")
    if not source.exists():
        raise InputError(f"The audit source {source} does not exist: give an embedding cache (.h5), an image folder "
                         f"or a manifest table.")
    if (out / "audit.json").exists() and not force:
        raise InputError(f"{out} already holds an audit; pass --force to replace it (nothing was changed).")
    tmp = out.parent / f".{out.name}.tmp-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    (tmp / "figures").mkdir(parents=True)
    parts: list[pd.DataFrame] = []
    tables: dict[str, pd.DataFrame] = {}
    figures: list[Path] = []
    headlines: list[str] = []
    record: dict[str, Any] = {"source": str(source.resolve()), "latent_version": __version__, "seed": seed,
                              "near_dup": near_dup, "by": list(by), "rank": rank, "permutations": permutations,
                              "created": datetime.now(timezone.utc).isoformat(timespec="seconds")}
    try:
        if source.is_dir() or source.suffix.lower() in (".csv", ".tsv", ".parquet", ".json"):
            from latent.extract import collect_inputs
            from latent.taxonomy import Taxonomy

            records, lineages = collect_inputs(source, path_column=path_column, taxonomy=taxonomy_table,
                                               join_on=join_on)
            record["kind"] = "images"
            paths = [Path(r.path) for r in records]
            ids = np.array([str(r.id) for r in records])
            X = None
            labelled = (np.asarray(lineages) != "").any(axis=1)
            if labelled.any():
                taxonomy = Taxonomy.from_lineages(np.asarray(lineages, dtype=object).tolist(), on_conflict="warn")
                cov = coverage_rows(taxonomy)
                parts.append(cov)
                headlines.append(f"{len(ids)} images, {int(labelled.sum())} labelled; " + ", ".join(
                    f"{int(v)} {r}" for r, v in cov[cov["metric"] == "taxa"][["rank", "value"]].itertuples(index=False)))
                figures.append(_figure_images_per_taxon(taxonomy, tmp / "figures" / "images_per_taxon"))
            else:
                headlines.append(f"{len(ids)} images, none labelled (give --taxonomy TABLE --join-on KEY=TAXCOL)")
        else:
            from latent.cache import open_cache

            record["kind"] = "cache"
            with open_cache(source) as cache:
                ids = np.asarray(cache.ids).astype(str)
                taxonomy = cache.taxonomy()
                X = cache.read()
                meta = cache.metadata() if cache.metadata_columns() else pd.DataFrame(index=range(len(ids)))
                provenance = cache.provenance
            missing = [c for c in by if c not in meta.columns]
            if missing:
                raise InputError(f"The --by column(s) {', '.join(missing)} are not in {source}; its metadata columns "
                                 f"are: {', '.join(meta.columns) or 'none'} (see latent info).")
            src = Path(provenance.source) if getattr(provenance, "source", "") else None
            roots = [Path(images)] if images else ([src, src.parent] if src is not None else [])
            found = _image_paths(ids, [r for r in roots if r is not None])
            if images and found is None:
                raise InputError(f"The cache's ids are not image files under --images {images}: give the folder "
                                 f"they are relative to.")
            paths = found
            cov = coverage_rows(taxonomy)
            parts.append(cov)
            headlines.append(f"{len(ids)} rows, {taxonomy.n_species} species; " + ", ".join(
                f"{int(v)} {r}" for r, v in cov[cov["metric"] == "taxa"][["rank", "value"]].itertuples(index=False)))
            figures.append(_figure_images_per_taxon(taxonomy, tmp / "figures" / "images_per_taxon"))
            # near duplicates by embedding, and whether they cross species or the split
            from latent.splits import random_split, species_disjoint_split

            species = np.where(taxonomy.labelled("species"), taxonomy.labels("species"), None)
            split = np.full(len(ids), "", dtype=object)
            labelled_rows = np.flatnonzero(taxonomy.labelled("species"))
            splits = pd.DataFrame({"id": ids})
            try:
                train, test = random_split(taxonomy, labelled_rows, seed=seed)
                split[train], split[test] = "train", "test"
                splits["stratified"] = split
                train_d, test_d = species_disjoint_split(taxonomy, labelled_rows, seed=seed, coverage_rank="kingdom")
                disjoint = np.full(len(ids), "", dtype=object)
                disjoint[train_d], disjoint[test_d] = "train", "test"
                splits["species_disjoint"] = disjoint
            except InputError as e:
                log.warning("audit: no split written: %s", e)
            for column in split_by:  # whole values of a metadata column held out (e.g. one source dataset)
                if column not in meta.columns:
                    raise InputError(f"The --split-by column {column!r} is not in {source}; its metadata columns "
                                     f"are: {', '.join(meta.columns) or 'none'} (see latent info).")
                splits[f"by_{column}"] = _split_by_values(meta[column].astype(str).to_numpy(), labelled_rows,
                                                          len(ids), seed)
            tables["splits"] = splits
            pairs = near_duplicates(X, ids, threshold=near_dup, species=species, split=split)
            parts.append(duplicate_summary(pairs, len(ids)).assign(section="duplicates"))
            tables["near"] = pairs.assign(kind=np.where(pairs["identical"], "identical vector", "near"))
            headlines.append(f"{len(pairs)} near-duplicate pairs (cosine >= {near_dup:g}), "
                             f"{int(pairs.get('crosses_species', pd.Series(dtype=bool)).sum())} across two species"
                             + ("; more pairs than images: at this threshold the space's neighbours, not copies "
                                "(raise --near-dup, and see the shape of the space: anisotropic embeddings have "
                                "high cosines everywhere)" if len(pairs) > len(ids) else ""))
            if trained_on is not None:
                names = [s for s in species if s is not None]
                overlap = training_overlap(names, trained_on)
                tables["overlap"] = overlap
                parts.append(overlap_summary(overlap).assign(section="training overlap"))
                headlines.append(f"{int(overlap['seen'].sum())} of {len(overlap)} species seen in training")
            for column in by:
                table = metadata_vs_taxonomy(X, taxonomy, meta[column].to_numpy(), rank=rank,
                                             permutations=permutations, seed=seed, column=column)
                parts.append(table.assign(section="metadata vs taxonomy"))
                given = table[table["metric"] == "r2_column_given_taxonomy"]
                if len(given):
                    g = given.iloc[0]
                    headlines.append(f"{column}: R^2 {g['value']:.3f} beyond the taxonomy at {rank} "
                                     f"(p = {g['p_value']:.3g})")
            metadata_tables = [p for p in parts if "section" in p and (p["section"] == "metadata vs taxonomy").any()]
            if metadata_tables:
                fig = _figure_metadata(pd.concat(metadata_tables), tmp / "figures" / "metadata_vs_taxonomy")
                if fig is not None:
                    figures.append(fig)
        if paths is not None:
            props = image_properties([str(p) for p in paths], input_size=input_size)
            props.insert(0, "id", ids)
            tables["images"] = props
            parts.append(image_flags_summary(props).assign(section="images"))
            exact = exact_duplicates(props, as_pairs=True)
            tables["exact"] = exact
            figures.append(contact_sheet(props, tmp / "figures" / "worst_images.png"))
            sizes = _figure_sizes(props, tmp / "figures" / "image_sizes", input_size)
            if sizes is not None:
                figures.append(sizes)
            frames = [t for t in (exact.rename(columns={"path_a": "id_a", "path_b": "id_b"}) if len(exact) else None,
                                  tables.get("near")) if t is not None and len(t)]
            if frames:
                by_id = dict(zip(props["id"].astype(str), props["path"].astype(str)))
                by_id.update({p: p for p in props["path"].astype(str)})
                fig = draw_duplicate_pairs(pd.concat(frames, ignore_index=True), by_id)
                if fig is not None:
                    import matplotlib.pyplot as plt

                    fig.savefig(tmp / "figures" / "duplicate_pairs.png", dpi=150)
                    plt.close(fig)
                    figures.append(tmp / "figures" / "duplicate_pairs.png")
            flags = {k: int(props[k].sum()) for k in ("greyscale", "tiny", "blurred") if k in props}
            headlines.append(f"{int((~props['readable']).sum())} unreadable images; " + ", ".join(
                f"{v} {k}" for k, v in flags.items()) + f"; {len(exact)} exact duplicate files")
        else:
            headlines.append("image files not found: image properties not audited (give --images ROOT)")
        rows = pd.concat(parts, ignore_index=True) if parts else pd.DataFrame(columns=AUDIT_COLUMNS)
        for column in AUDIT_COLUMNS:
            if column not in rows.columns:
                rows[column] = np.nan
        rows = rows[AUDIT_COLUMNS + [c for c in rows.columns if c not in AUDIT_COLUMNS]]
        rows.to_csv(tmp / "audit.csv", index=False)
        dup_frames = [t for t in (tables.get("exact"), tables.get("near")) if t is not None and len(t)]
        (pd.concat(dup_frames, ignore_index=True) if dup_frames else pd.DataFrame(
            columns=["id_a", "id_b", "cosine", "kind"])).to_csv(tmp / "duplicates.csv", index=False)
        for name in ("images", "overlap", "splits"):
            if name in tables:
                tables[name].to_csv(tmp / f"{name}.csv", index=False)
        record["headlines"] = headlines
        record["seconds"] = round(time.perf_counter() - start, 2)
        (tmp / "audit.md").write_text(_markdown(record, rows, figures, tmp))
        (tmp / "audit.json").write_text(json.dumps(record, indent=2, default=str))
        if out.exists():
            shutil.rmtree(out)
        os.replace(tmp, out)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    rows.attrs.update(source=str(source), headlines=headlines)
    return AuditResult(out, rows, tables, [out / "figures" / p.name for p in figures])


def _markdown(record: dict, rows: pd.DataFrame, figures: list[Path], folder: Path) -> str:
    lines = [f"# Audit of {Path(record['source']).name}", "", f"Source: `{record['source']}`; latent "
             f"{record['latent_version']}; seed {record['seed']}; {record['created']}.", ""]
    lines += [f"- {h}" for h in record.get("headlines", [])] + [""]
    for section, table in rows.groupby("section", sort=False):
        lines += [f"## {section}", "", "| rank | metric | value | n | note |", "|---|---|---|---|---|"]
        for r in table.itertuples(index=False):
            value = r.value if isinstance(r.value, str) else (f"{r.value:.4g}" if pd.notna(r.value) else "-")
            p = getattr(r, "p_value", np.nan)
            extra = f" (p = {p:.3g})" if isinstance(p, float) and np.isfinite(p) else ""
            note = "" if pd.isna(r.note) else str(r.note)
            lines.append(f"| {r.rank} | {r.metric} | {value}{extra} | {'' if pd.isna(r.n) else int(r.n)} | {note} |")
        lines.append("")
    for f in figures:
        lines += [f"![{f.stem}](figures/{f.name})", ""]
    lines += ["Files: audit.csv (every number), duplicates.csv, images.csv, overlap.csv, splits.csv (where made).", ""]
    return "\n".join(lines)


def find_audits(cache: "str | os.PathLike[str]", folders: Sequence["str | os.PathLike[str]"]) -> list[Path]:
    """Audit folders (``audit.json``) of ``cache`` among the sub-folders of ``folders``."""
    target = str(Path(cache).resolve())
    found = []
    for folder in folders:
        folder = Path(folder)
        if not folder.is_dir():
            continue
        for record in sorted(folder.glob("*/audit.json")):
            try:
                if json.loads(record.read_text()).get("source") == target:
                    found.append(record.parent)
            except (OSError, ValueError):
                continue
    return found
