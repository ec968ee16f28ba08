"""Embedding extraction: images -> open_clip model -> embedding cache, robust and resumable.

``embed_images`` walks a folder (or reads a manifest), joins taxonomy labels, loads the model (BioCLIP 2
by default) and streams batches through a DataLoader into a :class:`~latent.cache.CacheWriter`. Bad
image files are skipped and recorded under ``/failed``; an interrupted run (even ``kill -9``) resumes
from its committed rows when the same command is run again; a complete cache is left as it is.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from latent.errors import InputError, format_list
from latent.images import BAD_NAME_REASON, ImageRecord, find_images, printable_name, records_from_manifest
from latent.ranks import RANK_NAMES, RANKS
from latent.tables import read_table
from latent.taxonomy import Taxonomy, lineages_from_table, resolve_rank_columns

__all__ = ["EmbedReport", "collect_inputs", "embed_images", "STORE_DTYPES"]

log = logging.getLogger(__name__)

STORE_DTYPES = ("float16", "float32")
_MANIFEST_SUFFIXES = (".csv", ".tsv", ".parquet", ".pq", ".json", ".jsonl")
_PATH_COLUMNS = ("path", "filepath", "file", "image", "filename")


@dataclass(frozen=True)
class EmbedReport:
    """What one ``embed_images`` call did.

    ``embedded`` rows were added now, ``skipped`` inputs were already in the cache (or already recorded
    as failed), ``failed`` inputs failed now (``failures`` lists ``(id, reason)``), ``rows`` is the
    cache's final row count.
    """

    path: Path
    total: int
    embedded: int
    skipped: int
    failed: int
    rows: int
    seconds: float
    already_complete: bool = False
    failures: list[tuple[str, str]] = field(default_factory=list)
    loop_seconds: float = 0.0

    @property
    def images_per_second(self) -> float:
        """Images embedded per second of the decode -> model -> cache loop (model loading excluded)."""
        return self.embedded / self.loop_seconds if self.loop_seconds > 0 else 0.0

    def summary(self) -> str:
        if self.already_complete:
            return (f"{self.path}: complete, all {self.total} inputs already embedded or recorded as failed; "
                    "nothing to do (pass --force to recompute)")
        text = (f"{self.path}: embedded {self.embedded}, skipped {self.skipped} (already in the cache), "
                f"failed {self.failed}; {self.rows} rows in all; {self.seconds:.1f} s in all, "
                f"{self.images_per_second:.1f} images/s while embedding")
        for image_id, reason in self.failures[:20]:
            text += f"\n  failed: {image_id}: {reason}"
        if len(self.failures) > 20:
            text += f"\n  ... and {len(self.failures) - 20} more failures (latent info --failures lists them all)"
        return text


def collect_inputs(
    source: "str | os.PathLike[str]",
    *,
    path_column: "str | None" = None,
    taxonomy: "str | os.PathLike[str] | None" = None,
    join_on: "str | None" = None,
) -> tuple[list[ImageRecord], np.ndarray]:
    """The images to embed and their labels.

    Parameters
    ----------
    source
        A folder of images (searched recursively; ids are paths relative to it; the label key of an
        image is its parent folder's name, ``folder``) or a manifest table (CSV/TSV/Parquet/JSON) with a
        path column (relative paths are relative to the manifest's folder) and either rank columns or a
        key column to join.
    path_column
        The manifest's path column (default: the first of path, filepath, file, image, filename).
    taxonomy, join_on
        A taxonomy table and ``"KEY=TAXCOL"``; ``KEY`` is ``folder`` or a manifest column.

    Returns
    -------
    records : list of ImageRecord
        Sorted by id for a folder, in manifest order for a manifest.
    lineages : numpy.ndarray
        ``(len(records), 7)`` names per rank, ``""`` where unknown.
    """
    from latent.importer import join_taxonomy, parse_join

    source = Path(source)
    manifest = None
    if not source.exists():
        raise InputError(f"The source {str(source)!r} does not exist (give a folder of images or a manifest table).")
    if source.is_dir():
        records = find_images(source)
    elif source.is_file() and source.suffix.lower() in _MANIFEST_SUFFIXES:
        manifest = read_table(source, what="manifest")
        column = path_column or next((c for c in manifest.columns if str(c).lower() in _PATH_COLUMNS), None)
        if column is None:
            raise InputError(f"The manifest {str(source)!r} needs a path column: pass --path-column. "
                             f"Columns: {format_list(map(str, manifest.columns))}.")
        records = records_from_manifest(manifest, column, root=source.parent)
    else:
        raise InputError(f"The source {str(source)!r} must be a folder of images or a manifest table "
                         f"({', '.join(_MANIFEST_SUFFIXES)}); it is neither.")
    if not records:
        raise InputError(f"No images found in {str(source)!r} (looked for .jpg, .jpeg, .png, .webp, .tif, .tiff, .bmp, .gif).")
    if taxonomy is not None:
        if join_on is None:
            raise InputError("--taxonomy needs --join-on KEY=TAXCOL (KEY is 'folder' or a manifest column).")
        key, tax_column = parse_join(join_on, form="KEY=TAXCOL", example="folder=cub_class")
        import pandas as pd

        if key.lower() == "folder":
            keys = pd.Series([r.folder for r in records])
        elif manifest is not None and key in manifest.columns:
            keys = manifest[key].fillna("").astype(str)
        else:
            allowed = ["folder"] + ([str(c) for c in manifest.columns] if manifest is not None else [])
            raise InputError(f"The join key {key!r} of --join-on is not available; use one of {format_list(allowed)}.")
        lineages = join_taxonomy(keys, taxonomy, tax_column)
    elif join_on is not None:
        raise InputError(f"--join-on {join_on!r} needs --taxonomy TABLE (the table to join the labels from).")
    elif manifest is not None and _has_rank_columns(manifest):
        lineages = lineages_from_table(manifest.fillna(""), what="manifest")
    else:
        log.warning("no taxonomy given (--taxonomy/--join-on, or rank columns in a manifest): every image is unlabelled")
        lineages = np.full((len(records), len(RANKS)), "", dtype=object)
    return records, lineages


def _has_rank_columns(frame) -> bool:
    try:
        resolve_rank_columns(list(frame.columns))
    except InputError:
        return False
    except Exception:
        return False
    return True


def _default_workers() -> int:
    return max(0, min(8, (os.cpu_count() or 1) - 1))


def embed_images(
    source: "str | os.PathLike[str]",
    out: "str | os.PathLike[str]",
    *,
    model: str = "bioclip-2",
    pretrained: "str | os.PathLike[str] | None" = None,
    preprocess: str = "openclip",
    taxonomy: "str | os.PathLike[str] | None" = None,
    join_on: "str | None" = None,
    path_column: "str | None" = None,
    batch_size: int = 64,
    workers: "int | None" = None,
    device: str = "auto",
    precision: str = "auto",
    store_dtype: str = "float16",
    seed: int = 0,
    force: bool = False,
    progress: bool = True,
    commit_every: int = 1024,
    layers: "str | Sequence[int] | None" = None,
) -> EmbedReport:
    """Embed every image of ``source`` into the cache ``out``.

    Parameters
    ----------
    source, path_column, taxonomy, join_on
        See :func:`collect_inputs`.
    out
        HDF5 cache. If it exists with the same provenance, only missing images are embedded (a complete
        cache is a no-op); other provenance is refused unless ``force``, which replaces the cache once
        the new one is complete. An interrupted run's ``out.partial`` is resumed.
    model, pretrained, preprocess, device, precision, seed
        See :func:`latent.models.load_model`.
    batch_size, workers
        DataLoader batch size and worker processes (default: CPU count - 1, at most 8; 0 = decode in
        the main process).
    store_dtype
        ``float16`` (half the size; default) or ``float32``.
    progress
        Show a progress bar (images/s and ETA) on stderr.
    commit_every
        Rows buffered between commits to the cache (a crash loses at most this many).
    layers
        Also store, per image, the class token and the mean patch token after these transformer blocks of
        the image tower (``"all"``, or 1-based numbers and ranges such as ``"6,12"`` or ``"1-24"``; see
        :func:`latent.models.parse_blocks` and :meth:`latent.models.LoadedModel.encode_layers`) under
        ``/layers/<k>/class`` and ``/layers/<k>/patch_mean``, in ``store_dtype``, committed with the rows
        (resumable like them). The blocks are part of the provenance: a cache made without them is not
        extended with them (pass ``force`` to rebuild it).

    Returns
    -------
    EmbedReport
    """
    for name, value, minimum in (("batch_size", batch_size, 1), ("commit_every", commit_every, 1), ("seed", seed, 0)):
        if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
            raise InputError(f"The {name!r} parameter of embed_images must be an int >= {minimum}. Got {value!r} instead.")
    if workers is not None and (isinstance(workers, bool) or not isinstance(workers, int) or workers < 0):
        raise InputError(f"The 'workers' parameter of embed_images must be an int >= 0. Got {workers!r} instead.")
    if store_dtype not in STORE_DTYPES:
        raise InputError(f"The 'store_dtype' parameter of embed_images must be one of {', '.join(STORE_DTYPES)}. Got {store_dtype!r} instead.")
    start = time.perf_counter()
    from latent.cache import check_out_path

    out = check_out_path(out)  # before any work
    records, lineages = collect_inputs(source, path_column=path_column, taxonomy=taxonomy, join_on=join_on)
    Taxonomy(lineages, what="taxonomy of the images")  # refuse conflicting lineages before any work
    labels = {name: lineages[:, r].astype(str) for r, name in enumerate(RANK_NAMES)}

    from latent.cache import CacheWriter, Provenance, open_cache
    from latent.models import load_model

    loaded = load_model(model, pretrained=pretrained, device=device, precision=precision, preprocess=preprocess, seed=seed)
    fields = loaded.provenance_fields()
    layer_spec = None if layers is None else _layer_spec(loaded, layers)
    provenance = Provenance(
        model=fields["model"], pretrained=fields["pretrained"], preprocess=fields["preprocess"],
        embed_dim=int(fields["embed_dim"]), normalized=False, source=str(Path(source).resolve()),
        store_dtype=store_dtype,
        extra={
            "untrained": bool(fields["untrained"]), "seed": fields["seed"], "precision": fields["precision"],
            "weights_sha256": fields.get("weights_sha256"),
            # how to load the same model again (used by embed-text)
            "load": {"model": model, "pretrained": None if pretrained is None else str(pretrained),
                     "preprocess": preprocess, "seed": seed},
            **({"layers": layer_spec} if layer_spec else {}),
        },
    )
    mode = "create"
    # file names that are not UTF-8 cannot be cache ids: skipped, and recorded under a printable name
    printable = [printable_name(r.id) for r in records]
    bad_names = {i for i, p in enumerate(printable) if p is not None}
    ids = [r.id if p is None else p for r, p in zip(records, printable)]
    partial = out.with_name(out.name + ".partial")
    if out.exists() and not force:
        mode = "append"  # the writer refuses other provenance, naming both
        if not partial.exists():  # (an interrupted append is resumed by the writer instead)
            with open_cache(out) as existing:
                same = existing.provenance.identity() == provenance.identity()
                done = set(existing.ids.tolist()) | set(existing.failed()["id"].tolist())
                rows = existing.n_rows
            if same and done.issuperset(ids):
                report = EmbedReport(out, len(ids), 0, len(ids), 0, rows, time.perf_counter() - start, already_complete=True)
                log.info("%s", report.summary())
                return report

    with CacheWriter.open(out, provenance, mode=mode, force=force) as writer:
        done = writer.existing_ids | writer.failed_ids
        todo = [i for i, image_id in enumerate(ids) if image_id not in done]
        skipped = len(ids) - len(todo)
        if skipped:
            log.info("%d of %d inputs are already in %s: embedding the other %d", skipped, len(ids), out, len(todo))
        named_badly = [i for i in todo if i in bad_names]
        if named_badly:
            writer.add_failed([ids[i] for i in named_badly], BAD_NAME_REASON)
            for i in named_badly:
                log.warning("skipped %s: %s", ids[i], BAD_NAME_REASON)
            todo = [i for i in todo if i not in bad_names]
        loop_start = time.perf_counter()
        embedded, failures = _run(loaded, records, todo, labels, writer, batch_size=batch_size, layer_spec=layer_spec,
                                  workers=_default_workers() if workers is None else workers,
                                  progress=progress, commit_every=commit_every)
        failures = [(ids[i], BAD_NAME_REASON) for i in named_badly] + failures
        loop_seconds = time.perf_counter() - loop_start
        rows = writer.n_rows
    report = EmbedReport(out, len(ids), embedded, skipped, len(failures), rows, time.perf_counter() - start,
                         failures=failures, loop_seconds=loop_seconds)
    log.info("%s", report.summary())
    return report


def _layer_spec(loaded, layers: "str | Sequence[int]") -> dict:
    """What ``extra["layers"]`` of the cache records: blocks, their count and width, and the token rule."""
    from latent.models import parse_blocks

    n = loaded.n_blocks
    if n is None:
        raise InputError(f"The '--layers' option needs a ViT image tower with a class token; model "
                         f"{loaded.spec.name!r} has none. Embed without --layers.")
    return {"blocks": parse_blocks(layers, n), "n_blocks": n, "width": loaded.layer_width,
            "tokens": ["class", "patch_mean"],
            "rule": "class token and mean patch token after each block, through the tower's final LayerNorm"}


def _run(loaded, records: Sequence[ImageRecord], todo: list[int], labels: dict[str, np.ndarray], writer, *,
         batch_size: int, workers: int, progress: bool, commit_every: int,
         layer_spec: "dict | None" = None) -> tuple[int, list[tuple[str, str]]]:
    """Stream ``records[todo]`` through the model into ``writer``; returns (rows embedded, failures)."""
    import torch
    from torch.utils.data import DataLoader
    from tqdm.auto import tqdm

    from latent.images import ImageDataset, collate_skip_failed

    if not todo:
        return 0, []
    dataset = ImageDataset([records[i] for i in todo], loaded.transform)
    loader = DataLoader(
        dataset, batch_size=batch_size, shuffle=False, num_workers=workers, collate_fn=collate_skip_failed,
        pin_memory=loaded.device.type == "cuda", persistent_workers=False,
        prefetch_factor=4 if workers > 0 else None,
    )
    buffer_rows: list[int] = []
    buffer_emb: list[np.ndarray] = []
    blocks = [] if not layer_spec else list(layer_spec["blocks"])
    buffer_layers: dict[int, dict[str, list[np.ndarray]]] = {k: {"class": [], "patch_mean": []} for k in blocks}
    failures: list[tuple[str, str]] = []
    embedded = 0
    store = np.float16 if writer.provenance.store_dtype == "float16" else np.float32

    def commit() -> None:
        nonlocal embedded
        if not buffer_rows:
            return
        rows = np.asarray(buffer_rows)
        layers = {k: {t: np.concatenate(v).astype(store, copy=False) for t, v in tokens.items()}
                  for k, tokens in buffer_layers.items()} if blocks else None
        writer.append([records[i].id for i in rows], np.concatenate(buffer_emb).astype(store, copy=False),
                      {name: values[rows] for name, values in labels.items()}, layers=layers)
        embedded += len(rows)
        buffer_rows.clear()
        buffer_emb.clear()
        for tokens in buffer_layers.values():
            for values in tokens.values():
                values.clear()

    with tqdm(total=len(todo), unit="img", desc="embed", disable=not progress, dynamic_ncols=True) as bar:
        for batch in loader:
            if batch["failed_indices"]:
                bad = [todo[i] for i in batch["failed_indices"]]
                reasons = list(batch["failed_reasons"])
                writer.add_failed([records[i].id for i in bad], reasons)
                failures.extend((records[i].id, reason) for i, reason in zip(bad, reasons))
                for i, reason in zip(bad, reasons):
                    log.warning("skipped %s: %s", records[i].id, reason)
            good = batch["indices"].tolist()
            if good:
                if blocks:
                    emb, layers = loaded.encode_layers(batch["images"], blocks)
                    for k, tokens in layers.items():
                        for t, value in tokens.items():
                            if not torch.isfinite(value).all():
                                raise RuntimeError(f"the model produced NaN or inf values after block {k}; "
                                                   f"try --precision fp32")
                            buffer_layers[k][t].append(value.numpy())
                else:
                    emb = loaded.encode_images(batch["images"])
                if not torch.isfinite(emb).all():
                    raise RuntimeError("the model produced NaN or inf embeddings; try --precision fp32")
                buffer_rows.extend(todo[i] for i in good)
                buffer_emb.append(emb.numpy())
            bar.update(len(good) + len(batch["failed_indices"]))
            if len(buffer_rows) >= commit_every:
                commit()
        commit()
    return embedded, failures
