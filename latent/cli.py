"""The ``latent`` command line. The only place in latent that prints.

Heavy modules (h5py, torch, scikit-learn) are imported inside the commands that need them, so
``latent --help`` starts fast.

Every option is checked before any work starts (:func:`check_args`, with :mod:`latent.validate`),
and :func:`main` turns every failure into one line on stderr and an exit code, never a traceback
(``latent --debug CMD`` prints it):

- 2: a usage error or bad input (argparse, :class:`latent.errors.LatentError`, ``ValueError``, a
  file that does not exist), ``latent CMD: error: ...``;
- 1: a runtime failure (permission denied, read-only or full disk, out of memory, an internal error);
- 130: interrupted (Ctrl-C). A closed output pipe (``latent info X | head -1``) exits 1 quietly.
"""

from __future__ import annotations

import argparse
import errno
import json
import logging
import os
import re
import sys
import traceback
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from latent import validate
from latent._version import __version__
from latent.errors import InputError, LatentError

log = logging.getLogger("latent")


# ---------------------------------------------------------------------------- commands
def cmd_taxonomy(args: argparse.Namespace) -> int:
    import pandas as pd

    from latent.taxonomy import Taxonomy

    tax = Taxonomy.from_table(args.table, on_conflict=args.on_conflict, on_genus_mismatch=args.on_genus_mismatch)
    print(f"taxonomy {args.table}")
    print(tax.summary())
    if args.newick:
        with open(args.newick, "w", encoding="utf-8") as handle:
            handle.write(tax.to_newick() + "\n")
        print(f"wrote Newick tree ({tax.n_species} species) to {args.newick}")
    if args.distances:
        labels = tax.species_labels()
        frame = pd.DataFrame(tax.distances(), index=pd.Index(labels, name="species"), columns=labels)
        frame.to_csv(args.distances)
        print(f"wrote {tax.n_species} x {tax.n_species} taxonomic distances (LCA height, 0-7) to {args.distances}")
    return 0


def _format_summary(s: dict) -> str:
    from latent.ranks import RANK_NAMES

    lines = [
        f"cache       {s['path']}",
        f"rows        {s['rows']}",
        f"dimension   {s['dim']} ({s['dtype']})",
        f"complete    {'yes' if s['complete'] else 'NO (interrupted write: re-run the command to resume)'}",
        f"model       {s['model']}",
        f"pretrained  {s['pretrained']}",
        f"preprocess  {json.dumps(s['preprocess'], sort_keys=True)}",
        f"normalized  {s['normalized']}",
        f"source      {s['source']}",
        f"created     {s['created']} (latent {s['latent_version']}, format {s['format_version']})",
    ]
    extra = s.get("extra") or {}
    if extra.get("untrained"):
        lines.append("WARNING     untrained / synthetic embeddings: a baseline, not a trained model")
    if extra:
        lines.append(f"extra       {json.dumps(extra, sort_keys=True)}")
    lines.append(f"ranks       {len(RANK_NAMES)} ({', '.join(RANK_NAMES)}); taxa per rank:")
    for rank in RANK_NAMES:
        lines.append(f"  {rank:<8} {s['taxa'][rank]:>7}")
    meta = s.get("metadata") or []
    if meta:
        width = max(len(m["column"]) for m in meta)
        lines.append(f"metadata    {len(meta)} columns kept (dtype, distinct values, missing):")
        for m in meta:
            lines.append(f"  {m['column']:<{width}}  {m['dtype']:<14} {m['distinct']:>7} distinct  {m['missing']:>7} missing")
    else:
        lines.append("metadata    none kept")
    lines.append(f"unlabelled  {s['unlabelled']} rows (no species)")
    lines.append(f"failed      {s['failed']} inputs")
    if s.get("text_groups"):
        lines.append(f"text        {', '.join(s['text_groups'])}")
    layers = extra.get("layers")
    if layers:
        from latent.cache import block_ranges

        lines.append(f"layers      blocks {block_ranges(layers['blocks'])} of {layers['n_blocks']} ({layers['width']}-d class "
                     f"and mean patch tokens): latent probe --layer K")
    return "\n".join(lines)


def cmd_info(args: argparse.Namespace) -> int:
    from latent.cache import open_cache

    with open_cache(args.cache, allow_incomplete=args.allow_incomplete) as cache:
        summary = cache.summary()
        failed = cache.failed() if args.failures else None
    if args.json:
        print(json.dumps(summary, indent=2, sort_keys=True, default=str))
    else:
        print(_format_summary(summary))
    if failed is not None and len(failed):
        print(failed.to_string(index=False))
    return 0


def cmd_import(args: argparse.Namespace) -> int:
    from latent.importer import import_embeddings

    report = import_embeddings(
        args.embeddings, args.out, metadata=args.metadata, id_column=args.id_column,
        embedding_column=args.embedding_column, taxonomy=args.taxonomy, join_on=args.join_on, model=args.model,
        pretrained=args.pretrained, force=args.force, on_conflict=args.on_conflict,
        on_genus_mismatch=args.on_genus_mismatch,
    )
    print(
        f"imported {report.rows} embeddings of dimension {report.dim} into {report.path} "
        f"({report.taxonomy.n_species} species, {report.unlabelled} rows unlabelled, "
        f"{'L2-normalised' if report.normalized else 'not normalised'})"
    )
    print(report.describe())
    if report.columns.get("not kept"):
        print(f"not kept (lists or other non-scalar values): {', '.join(report.columns['not kept'])}")
    # (genus/binomial mismatches were logged as one warning line with their count by the taxonomy)
    return 0


def cmd_models(args: argparse.Namespace) -> int:
    from latent.models import list_models

    if args.describe:  # one model's card: architecture and parameters from the built module, offline
        from latent.modelcard import describe_model

        card = describe_model(args.describe, args.pretrained)
        print(json.dumps(card.to_dict(), indent=2) if args.json else card.to_markdown())
        return 0
    if args.pretrained or args.json:
        raise InputError("--pretrained and --json go with --describe NAME (e.g. latent models --describe bioclip-2 --json).")
    print(f"{'name':<22} {'dim':>5}  {'open_clip / timm':<40} {'weights':<20} description")
    for spec in list_models():
        weights = "untrained (random)" if spec.untrained else (spec.pretrained or "hub")
        print(f"{spec.name:<22} {spec.embed_dim or '?':>5}  {spec.open_clip_name:<40} {weights:<20} {spec.description}")
    print("\nAlso: any open_clip architecture with --pretrained TAG|FILE|FOLDER, 'random:<arch>' for a random "
          "initialisation of any architecture, 'hf-hub:org/repo', or a local Hugging Face snapshot folder.")
    return 0


def cmd_show_inputs(args: argparse.Namespace) -> int:
    from latent.show_inputs import show_inputs

    png = show_inputs(args.source, args.out, model=args.model, pretrained=args.pretrained, n=args.n, seed=args.seed,
                      patch_grid=args.patch_grid, path_column=args.path_column, preprocess=args.preprocess)
    print(f"wrote {png} (and .pdf) and {png.with_name('model_inputs.csv')}: what {args.model} receives")
    return 0


def cmd_embed(args: argparse.Namespace) -> int:
    from latent.distributed import embed_with_engine

    if getattr(args, "text", False):  # an image-only model has no text tower: say so before embedding images
        from latent.models import default_model_name, require_text_tower

        require_text_tower(args.model or default_model_name(), args.pretrained)

    report = embed_with_engine(
        args.engine, args.source, args.out, model=args.model, pretrained=args.pretrained, preprocess=args.preprocess,
        taxonomy=args.taxonomy, join_on=args.join_on, path_column=args.path_column, batch_size=args.batch_size,
        workers=args.workers, device=args.device, precision=args.precision, store_dtype=args.store_dtype,
        seed=args.seed, force=args.force, progress=not args.no_progress, commit_every=args.commit_every,
        layers=args.layers, address=args.address, gpus_per_worker=args.gpus_per_worker, merge=args.merge,
        shard_size=args.shard_size,
    )
    print(report.summary())
    if args.text and not report.already_complete:
        return cmd_embed_text(argparse.Namespace(cache=args.out, templates=args.templates, force=False,
                                                 batch_size=256, device=args.device, common_names=None,
                                                 model=None, pretrained=None))
    return 0


def _common_names(table: str) -> dict:
    """``{binomial: common name}`` from a table with a common-name column and species (or all rank) columns."""
    from latent.tables import read_table
    from latent.taxonomy import lineages_from_table, resolve_rank_columns

    frame = read_table(table, what="--common-names")
    lowered = {str(c).lower(): c for c in frame.columns}
    column = next((lowered[c] for c in ("common_name", "common", "vernacular_name", "vernacularname") if c in lowered), None)
    if column is None:
        raise InputError(f"--common-names {table!r} needs a common_name column; columns: {', '.join(map(str, frame.columns))}.")
    try:
        resolve_rank_columns(list(frame.columns))
        species = lineages_from_table(frame, what="--common-names")[:, -1]
    except InputError:
        if "species" not in lowered:
            raise InputError(f"--common-names {table!r} needs a species column (binomials) or all rank columns.") from None
        species = frame[lowered["species"]].astype(str).str.strip().to_numpy()
    names = {}
    for sp, common in zip(species, frame[column].fillna("").astype(str).str.strip()):
        if sp and common:
            names.setdefault(str(sp), common)
    return names


def cmd_embed_text(args: argparse.Namespace) -> int:
    from latent.text import embed_text

    common = _common_names(args.common_names) if args.common_names else None
    report = embed_text(args.cache, template_set=args.templates, force=args.force, device=args.device,
                        batch_size=args.batch_size, common_names=common, model=args.model,
                        pretrained=args.pretrained)
    print(report.summary())
    return 0


def _max_train(value: str) -> "int | None":
    """``--max-train``: ``auto`` -> None (the work rule), else a non-negative integer."""
    if value == "auto":
        return None
    try:
        number = int(value)
    except ValueError:
        number = -1
    if number < 0:
        raise InputError(f"--max-train must be 'auto', 0 (every training image) or a number of images, e.g. 20000. "
                         f"Got {value!r}.")
    return number


def cmd_evaluate(args: argparse.Namespace) -> int:
    from latent.evaluate import evaluate_cache

    report = evaluate_cache(
        args.cache, args.out, method=args.method, mode=args.mode, split=args.split, shots=args.shots,
        folds=args.folds, seed=args.seed, clade=args.clade, test_fraction=args.test_fraction,
        coverage_rank=args.coverage_rank, split_file=args.split_file, split_column=args.split_column,
        groups=args.groups, group_column=args.group_column,
        k_neighbors=args.k, temperature=args.temperature, text_form=args.text_form, n_boot=args.bootstrap,
        device=args.device, layer=args.layer, top_down=args.top_down, max_test=args.max_test,
        max_train=_max_train(args.max_train), force=args.force,
    )
    print(report.summary())
    return 0


def _probe_settings(items: "Sequence[str] | None") -> dict:
    """``["dendrogram.method=ward", "clusters.permutations=99"]`` -> per-probe settings (values as JSON
    where they parse, else strings), every probe and setting name checked (:func:`latent.validate.probe_settings`)."""
    settings: dict = {}
    for item in items or []:
        key, sep, value = item.partition("=")
        probe, dot, name = key.partition(".")
        if not sep or not dot or not probe or not name:
            raise InputError(f"The '--set' option must look like PROBE.SETTING=VALUE (e.g. dendrogram.method=ward). "
                             f"Got {item!r} instead.")
        try:
            parsed = json.loads(value)
        except json.JSONDecodeError:
            parsed = value
        settings.setdefault(probe.strip(), {})[name.strip()] = parsed
    return validate.probe_settings(settings, name="--set")


def cmd_probe(args: argparse.Namespace) -> int:
    from latent.probes.run import list_probes, probe_cache

    if args.list:
        print(list_probes())
        return 0
    if args.cache is None or args.out is None:
        raise InputError("latent probe needs a CACHE and --out DIR (or --list to list the probes).")
    from latent.probes.base import ProbeOptions

    options = ProbeOptions(distance=args.distance, permutations=args.permutations, max_pairs=args.max_pairs,
                           max_images=args.max_images, max_rows=args.max_rows, seed=args.seed, device=args.device,
                           extra=_probe_settings(args.set))
    from latent.probes.run import species_subset

    if (args.subset is None) != (args.where is None):
        raise InputError("--subset CSV and --where COLUMN=VALUE go together (e.g. --subset overlap.csv --where "
                         "seen=False).")
    subset = species_subset(args.subset, args.where) if args.subset else None
    report = probe_cache(args.cache, args.out, probes=args.probes, options=options, baseline=args.baseline,
                         clade=args.clade, subset=subset, attribute=args.attribute, layer=args.layer,
                         force=args.force)
    print(report.summary())
    return 0


def cmd_audit(args: argparse.Namespace) -> int:
    from latent.audit.run import audit

    by = [c.strip() for item in (args.by or []) for c in item.split(",") if c.strip()]
    result = audit(args.source, args.out, trained_on=args.trained_on, near_dup=args.near_dup, by=by, rank=args.rank,
                   permutations=args.permutations, seed=args.seed, images=args.images, input_size=args.input_size,
                   taxonomy_table=args.taxonomy, join_on=args.join_on, path_column=args.path_column,
                   split_by=[c.strip() for item in (args.split_by or []) for c in item.split(",") if c.strip()],
                   force=args.force)
    print(result.summary())
    return 0


def cmd_report(args: argparse.Namespace) -> int:
    from latent.report import ReportSettings, build_report

    items = [e.strip() for e in args.evaluate.split(",")]
    evaluations = tuple(tuple(e.split(":", 1)) if ":" in e else (e, "random") for e in items)
    settings = ReportSettings(
        evaluations=evaluations, probes=tuple(p.strip() for p in (args.probes or "").split(",") if p.strip()) or None,
        permutations=args.permutations, distance=args.distance, seed=args.seed, n_boot=args.bootstrap,
        projections=tuple(p for p in args.projections.split(",") if p), probe_settings=_probe_settings(args.set),
        device=args.device, verdict_permutations=args.verdict_permutations, common_dim=not args.no_common_dim,
        layers=args.layers, slides=args.slides)
    result = build_report(args.caches, args.out, settings=settings, baseline=args.baseline, force=args.force)
    print(result.summary())
    return 0


def cmd_run(args: argparse.Namespace) -> int:
    from latent.experiment import run_experiment

    print(run_experiment(args.config, results=args.results, force=args.force).summary())
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    from latent.experiment import run_demo

    result = run_demo(args.out, force=args.force)
    print(result.summary())
    print(f"open {result.report.html} in a browser")
    return 0


def cmd_synth(args: argparse.Namespace) -> int:
    from latent.synthetic import builtin_taxonomy, synthesize
    from latent.taxonomy import Taxonomy

    taxonomy = builtin_taxonomy() if args.taxonomy is None else Taxonomy.from_table(args.taxonomy)
    n_species = taxonomy.n_species
    values = n_species * args.per_species * args.dim
    if values > validate.MAX_SYNTH_VALUES:
        raise InputError(f"latent synth would make {n_species} species x {args.per_species} images x "
                         f"{args.dim} dimensions = {values:,} values, above the limit of "
                         f"{validate.MAX_SYNTH_VALUES:,} (a cache of {validate.MAX_SYNTH_VALUES * 2 / 1e9:.0f} GB "
                         f"in float16); use a smaller --per-species or --dim.")
    try:
        _, n = synthesize(
            args.out, taxonomy, per_species=args.per_species, dim=args.dim, signal=args.signal, noise=args.noise,
            seed=args.seed, source=str(args.taxonomy or "builtin"), store_dtype=args.store_dtype, force=args.force,
            **({"attribute": args.attribute, "attribute_scale": args.attribute_scale} if args.attribute else {}),
        )
    except ValueError as e:  # e.g. no direction orthogonal to the species offsets at this dimension
        raise InputError(f"--attribute {args.attribute}: {e}") from None
    print(
        f"wrote {n} synthetic embeddings ({n // args.per_species} species x {args.per_species}, "
        f"dim {args.dim}, signal {args.signal:g}, seed {args.seed}, {args.store_dtype}) to {args.out}"
    )
    return 0


# ---------------------------------------------------------------------------- parser
DEBUG_HELP = "print the traceback of an error (for reporting bugs)"


class _HelpFormatter(argparse.HelpFormatter):
    """Help that states every option's default (unless it is None, False, or already in the text)."""

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        default = action.default
        if "%(default)" in text or default is None or default is False or default is argparse.SUPPRESS:
            return text
        return f"{text} (default: %(default)s)".strip()


def _subparser(sub: Any, name: str, help: str) -> argparse.ArgumentParser:
    p = sub.add_parser(name, help=help, description=help, formatter_class=_HelpFormatter)
    # also after the command (`latent info X --debug`); SUPPRESS keeps a global --debug from being reset
    p.add_argument("--debug", action="store_true", default=argparse.SUPPRESS, help=DEBUG_HELP)
    return p


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="latent",
        description="Does a foundation model's embedding space reflect the taxonomy of life?",
        epilog="Run `latent COMMAND --help` for a command's options. Exit codes: 0 done, 1 runtime failure "
               "(permissions, disk, memory), 2 bad input or usage, 130 interrupted.",
        formatter_class=_HelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"latent {__version__}")
    parser.add_argument("-v", "--verbose", action="count", default=0, help="more log output (-vv for debug)")
    parser.add_argument("-q", "--quiet", action="store_true", help="only errors")
    parser.add_argument("--debug", action="store_true", help=DEBUG_HELP)
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", title="commands")

    p = _subparser(sub, "taxonomy", "summarise a taxonomy table; export Newick and distances")
    p.add_argument("table", help="CSV, TSV or Parquet with kingdom..species columns")
    p.add_argument("--newick", metavar="OUT", help="write the species tree in Newick format")
    p.add_argument("--distances", metavar="OUT.csv", help="write the species x species LCA-height matrix")
    p.add_argument("--on-conflict", choices=["raise", "warn"], default="raise",
                   help="a name with two parents in one kingdom: stop (raise) or warn and keep both")
    p.add_argument("--on-genus-mismatch", choices=["warn", "raise"], default="warn",
                   help="a species binomial of another genus than its genus column: warn and keep it, or stop")
    p.set_defaults(func=cmd_taxonomy)

    p = _subparser(sub, "info", "describe an embedding cache")
    p.add_argument("cache", help="HDF5 embedding cache")
    p.add_argument("--allow-incomplete", action="store_true", help="read an interrupted write's committed rows")
    p.add_argument("--failures", action="store_true", help="list the inputs that could not be embedded")
    p.add_argument("--json", action="store_true", help="print the summary as JSON")
    p.set_defaults(func=cmd_info)

    p = _subparser(sub, "import", "import embeddings made elsewhere into a cache")
    p.add_argument("embeddings", help="a table with an embedding column (Parquet, CSV, TSV, JSON records or "
                   "lines: its ids, rank columns and other columns come along), .npy, .npz or pybioclip embed JSON")
    p.add_argument("--metadata", metavar="META", help="CSV, JSON or Parquet, one row per embedding, same order "
                   "(not needed for a table that holds its own ids and ranks)")
    p.add_argument("--id-column", metavar="COL", help="column holding unique row ids (of --metadata, else of the "
                   "table; a table's default: uuid, id or image_id)")
    p.add_argument("--embedding-column", metavar="COL", help="the table's column of vectors (default: emb, "
                   "embedding, embeddings, vector or features)")
    p.add_argument("--taxonomy", metavar="TABLE", help="taxonomy table to join labels from")
    p.add_argument("--join-on", metavar="META_COL=TAX_COL", help="how metadata rows find their taxonomy row")
    p.add_argument("--model", help="which model made these embeddings (recorded as provenance)")
    p.add_argument("--pretrained", default="unknown", help="which weights (recorded as provenance)")
    p.add_argument("--on-conflict", choices=["raise", "warn"], default="raise",
                   help="a name with two parents in one kingdom: stop, or warn and keep the lineages apart")
    p.add_argument("--on-genus-mismatch", choices=["warn", "raise"], default="warn",
                   help="a species binomial of another genus than its genus column (often a synonym): warn and keep "
                        "it as written (the lineage columns decide), or stop")
    p.add_argument("--out", required=True, metavar="CACHE", help="HDF5 cache to write")
    p.add_argument("--force", action="store_true", help="replace an existing cache")
    p.set_defaults(func=cmd_import)

    p = _subparser(sub, "models", "list the named models, or describe one (--describe NAME)")
    p.add_argument("--describe", metavar="NAME", help="print NAME's model card: architecture, parameter counts, "
                   "preprocessing (read from the model built without weights, offline), training data and sources")
    p.add_argument("--pretrained", help="with --describe: the weights NAME would load (tag, file or snapshot "
                   "folder; only the architecture and preprocessing they imply are read)")
    p.add_argument("--json", action="store_true", help="with --describe: print the card as JSON")
    p.set_defaults(func=cmd_models)

    p = _subparser(sub, "show-inputs", "draw images as the model receives them (resize, crop, de-normalised) "
                                       "beside the originals, the unseen area shaded")
    p.add_argument("source", help="folder of images (recursive) or manifest table with a path column")
    p.add_argument("--out", required=True, metavar="DIR", help="folder for model_inputs.png/.pdf/.csv")
    p.add_argument("--model", default="bioclip-2", help="registry name (latent models), random:<arch>, ... "
                   "(only its transform is built: no weights needed)")
    p.add_argument("--pretrained", help="open_clip pretrained tag, checkpoint file or snapshot folder (not read)")
    p.add_argument("--preprocess", choices=["openclip", "squash"], default="openclip",
                   help="openclip: the model's validation transform; squash: pybioclip's 224x224 resize")
    p.add_argument("--n", type=int, default=16, metavar="N", help="images drawn (a seeded sample, 1 to 64)")
    p.add_argument("--seed", type=int, default=0, help="seed of the sample")
    p.add_argument("--patch-grid", action="store_true", help="overlay the vision tower's patch grid")
    p.add_argument("--path-column", help="manifest column holding image paths")
    p.set_defaults(func=cmd_show_inputs)

    p = _subparser(sub, "embed", "embed a folder of images (or a manifest) with an open_clip model")
    p.add_argument("source", help="folder of images (recursive) or manifest table (CSV/Parquet) with a path column")
    p.add_argument("--out", required=True, metavar="CACHE", help="HDF5 cache to write (resumed if interrupted)")
    p.add_argument("--model", default="bioclip-2", help="registry name (latent models), open_clip arch, "
                   "random:<arch>, hf-hub:org/repo or a snapshot folder")
    p.add_argument("--pretrained", help="open_clip pretrained tag, local checkpoint file or snapshot folder")
    p.add_argument("--preprocess", choices=["openclip", "squash"], default="openclip",
                   help="openclip: the model's validation transform; squash: pybioclip's 224x224 resize")
    p.add_argument("--taxonomy", metavar="TABLE", help="taxonomy table to join labels from")
    p.add_argument("--join-on", metavar="KEY=TAXCOL", help="KEY is 'folder' (parent folder name) or a manifest column")
    p.add_argument("--path-column", help="manifest column holding image paths")
    p.add_argument("--batch-size", type=int, default=64, metavar="N", help="images per forward pass")
    p.add_argument("--workers", type=int, default=None, metavar="N",
                   help="decoding processes (default: cores - 1, at most 8; 0: in the main process); with "
                   "--engine ray: model workers (default: one per --gpus-per-worker GPUs, or one per node)")
    p.add_argument("--engine", default="local", metavar="{local,ray}",
                   help="local: this process; ray: a Ray cluster (sharded, resumable shard by shard, stitched "
                   "into one cache; see the README)")
    p.add_argument("--address", metavar="ADDR", help="with --engine ray: the Ray cluster (auto, head:6379, "
                   "ray://head:10001; default: RAY_ADDRESS, a local 'ray start' cluster, or a new local Ray)")
    p.add_argument("--gpus-per-worker", type=float, default=0, metavar="G",
                   help="with --engine ray: GPUs per model worker (0: the model runs on CPU)")
    p.add_argument("--merge", action="store_true", help="with --engine ray: copy the shards into one ordinary "
                   "cache instead of a virtual HDF5 file over them")
    p.add_argument("--shard-size", type=int, default=None, metavar="N",
                   help="with --engine ray: images per shard, the unit of work and of resume (default 4096)")
    p.add_argument("--device", default="auto", help="auto (CUDA, then CPU), cpu, cuda, cuda:1, mps")
    p.add_argument("--precision", default="auto", choices=["auto", "fp32", "fp16", "bf16", "amp"],
                   help="numeric precision of the forward pass")
    p.add_argument("--store-dtype", default="float16", choices=["float16", "float32"],
                   help="dtype of the stored embeddings")
    p.add_argument("--seed", type=int, default=0, help="seed of random initialisations")
    p.add_argument("--force", action="store_true", help="replace an existing cache (once the new one is complete)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.add_argument("--commit-every", type=int, default=1024, metavar="ROWS", help="rows between commits")
    p.add_argument("--layers", metavar="all|LIST", help="also store the class token and mean patch token after "
                   "these transformer blocks (1-based: 'all', '12,24', '1-6'), as /layers/<k> in the cache")
    p.add_argument("--text", action="store_true", help="also embed the taxon names (see latent embed-text)")
    p.add_argument("--templates", choices=["single", "openai"], default="openai",
                   help="with --text: 'a photo of {}.' (single) or the 80 OpenAI ImageNet templates averaged")
    p.set_defaults(func=cmd_embed)

    p = _subparser(sub, "embed-text", "embed the names of every taxon in a cache (for zero-shot)")
    p.add_argument("cache", help="HDF5 embedding cache (made by latent embed)")
    p.add_argument("--templates", choices=["single", "openai"], default="openai",
                   help="'a photo of {}.' (single) or the 80 OpenAI ImageNet templates averaged")
    p.add_argument("--common-names", metavar="TABLE", help="table with species and common_name columns (com forms)")
    p.add_argument("--model", help="model that made the cache's image embeddings (default: the one the cache "
                                   "records; needed for imported or synthetic caches)")
    p.add_argument("--pretrained", help="with --model: its weights (tag, checkpoint file or snapshot folder)")
    p.add_argument("--batch-size", type=int, default=256, metavar="N", help="texts per forward pass")
    p.add_argument("--device", default="auto", help="auto (CUDA, then CPU), cpu, cuda, cuda:1, mps")
    p.add_argument("--force", action="store_true", help="recompute text groups that exist")
    p.set_defaults(func=cmd_embed_text)

    p = _subparser(sub, "evaluate", "per-rank and hierarchical evaluation of a predictor on a cache")
    p.add_argument("cache", help="HDF5 embedding cache")
    p.add_argument("--layer", type=int, metavar="K", help="evaluate the class tokens after transformer block K "
                   "(a cache made with latent embed --layers) instead of the final embeddings")
    p.add_argument("--method", required=True, choices=["zero-shot", "linear", "knn", "centroid"],
                   help="predictor (zero-shot needs latent embed-text)")
    p.add_argument("--out", required=True, metavar="DIR", help="results folder")
    p.add_argument("--mode", choices=["flat", "per-rank"], help="flat: species scores summed up the tree "
                   "(zero-shot default); per-rank: each rank predicted directly (default otherwise)")
    p.add_argument("--split", choices=["random", "species-disjoint"], default="random",
                   help="train/test split (linear, knn)")
    p.add_argument("--shots", type=int, default=5, metavar="K", help="support images per species (centroid)")
    p.add_argument("--folds", type=int, default=5, metavar="N", help="seeded folds (centroid)")
    p.add_argument("--seed", type=int, default=0, help="seed of splits and bootstrap")
    p.add_argument("--clade", metavar="RANK=NAME", help="only this clade's images and taxa (e.g. class=Insecta)")
    p.add_argument("--test-fraction", type=float, default=0.3, metavar="F",
                   help="share of images (or species) held out for testing, in (0, 1)")
    p.add_argument("--split-file", metavar="CSV", help="use the split in this file (latent audit's splits.csv: "
                                                       "id and train/test columns) instead of drawing one")
    p.add_argument("--split-column", default="stratified", metavar="COLUMN",
                   help="the column of --split-file to use (stratified, species_disjoint, ...)")
    p.add_argument("--groups", metavar="CSV", help="also score per group of species: a CSV with 'species' and a "
                                                   "group column (latent audit --trained-on writes overlap.csv)")
    p.add_argument("--group-column", default="seen", metavar="COLUMN", help="the group column of --groups")
    p.add_argument("--coverage-rank", default="kingdom",
                   choices=["genus", "family", "order", "class", "phylum", "kingdom"],
                   help="species-disjoint: hold out species sharing a taxon with training species at this rank "
                        "or below; each rank is scored on test images whose taxon there has a training image")
    p.add_argument("--k", type=int, default=20, help="neighbours (knn)")
    p.add_argument("--temperature", type=float, default=0.07, help="vote temperature (knn)")
    p.add_argument("--text-form", default="taxon", choices=["taxon", "sci", "com", "taxon_com"],
                   help="which text embeddings zero-shot uses")
    p.add_argument("--top-down", action="store_true", help="also predict top-down (kingdom first, then each rank "
                   "among the children of the rank above) and compare it with flat per rank: topdown.csv")
    p.add_argument("--bootstrap", type=int, default=1000, metavar="N", help="bootstrap resamples for the CIs")
    p.add_argument("--max-test", type=int, default=10_000, metavar="N",
                   help="score at most N test images (per fold for centroid): above it a stratified seeded sample, "
                        "said in every row's note; 0 = all")
    p.add_argument("--max-train", default="auto", metavar="N|auto",
                   help="linear: train on at most N images (a stratified seeded sample); auto (default): the largest "
                        "sample whose probe fits a work budget (images x dims x classes); 0 = all; said in every "
                        "row's note")
    p.add_argument("--device", default="auto", help="auto (CUDA, then CPU), cpu, cuda, cuda:1, mps")
    p.add_argument("--force", action="store_true", help="replace results of another cache in --out")
    p.set_defaults(func=cmd_evaluate)

    p = _subparser(sub, "audit", "know the data: coverage, image quality, duplicates, training overlap, metadata "
                                 "versus taxonomy")
    p.add_argument("source", help="embedding cache (.h5), a folder of images, or a manifest table")
    p.add_argument("--out", required=True, metavar="DIR", help="audit folder (audit.md, audit.csv, duplicates.csv, ...)")
    p.add_argument("--trained-on", metavar="FILE", help="taxa a model was trained on (JSON object/list or text, one "
                                                        "per line): which species are seen and unseen")
    p.add_argument("--near-dup", type=float, default=0.95, metavar="T",
                   help="cosine similarity at or above which two embeddings are near duplicates")
    p.add_argument("--by", action="append", metavar="COLUMN[,COLUMN]",
                   help="metadata column(s) to set against the taxonomy (e.g. img_type)")
    p.add_argument("--rank", default="family", choices=["kingdom", "phylum", "class", "order", "family", "genus", "species"],
                   help="rank of the metadata comparison")
    p.add_argument("--permutations", type=int, default=199, metavar="N", help="permutations of the metadata nulls")
    p.add_argument("--seed", type=int, default=0, help="seed of splits, samples and permutations")
    p.add_argument("--images", metavar="DIR", help="folder the cache's ids are relative to (default: where the cache "
                                                   "was made from)")
    p.add_argument("--input-size", type=int, default=224, metavar="PX", help="model input size (what cropping removes)")
    p.add_argument("--taxonomy", metavar="TABLE", help="folder or manifest source: the taxonomy table (as latent embed)")
    p.add_argument("--join-on", metavar="KEY=TAXCOL", help="folder or manifest source: how images join the taxonomy "
                                                            "(e.g. folder=cub_class)")
    p.add_argument("--path-column", metavar="COLUMN", help="manifest source: the column of image paths")
    p.add_argument("--split-by", action="append", metavar="COLUMN", help="also write a split holding out whole "
                                                                         "values of this metadata column (by_COLUMN)")
    p.add_argument("--force", action="store_true", help="replace an existing audit in --out")
    p.set_defaults(func=cmd_audit)

    p = _subparser(sub, "probe", "latent-space probes with permutation nulls: does the geometry follow the taxonomy?")
    p.add_argument("cache", nargs="?", help="HDF5 embedding cache")
    p.add_argument("--layer", type=int, metavar="K", help="probe the class tokens after transformer block K "
                   "(a cache made with latent embed --layers) instead of the final embeddings")
    p.add_argument("--out", metavar="DIR", help="results folder")
    p.add_argument("--list", action="store_true", help="list the probes and exit")
    p.add_argument("--probes", metavar="NAME,...", help="probes to run (default: all; see --list)")
    p.add_argument("--distance", choices=["cosine", "euclidean"], default="cosine", help="embedding distance")
    p.add_argument("--permutations", type=int, default=999, metavar="N",
                   help=f"species permutations per null (at most {validate.MAX_PERMUTATIONS:,})")
    p.add_argument("--max-pairs", type=int, default=2_000_000, metavar="N",
                   help="image pairs used by pair-level statistics before sampling")
    p.add_argument("--max-images", type=int, default=5_000, metavar="N",
                   help="images used by image-level matrices (e.g. silhouette) before stratified sampling")
    p.add_argument("--max-rows", type=int, default=100_000, metavar="N",
                   help="images read from the cache: above it every probe runs on a stratified seeded sample, said "
                        "in every row's note; 0 = all")
    p.add_argument("--seed", type=int, default=0, help="seed of samples and permutations")
    p.add_argument("--baseline", metavar="CACHE", help="random-features baseline cache with the same image ids")
    p.add_argument("--clade", metavar="RANK=NAME", help="only this clade's images (e.g. class=Aves)")
    p.add_argument("--subset", metavar="CSV", help="probe only some species: a CSV with 'species' (latent audit "
                                                   "--trained-on writes overlap.csv); with --where")
    p.add_argument("--where", metavar="COLUMN=VALUE", help="which species of --subset (e.g. seen=False)")
    p.add_argument("--attribute", metavar="COLUMN", help="metadata column of the intra_species probe (life stage, "
                                                         "sex, image type, ...)")
    p.add_argument("--set", action="append", metavar="PROBE.SETTING=VALUE",
                   help="probe-specific setting, repeatable (e.g. dendrogram.method=ward; see --list)")
    p.add_argument("--device", default="auto", help="auto (CUDA, then CPU), cpu, cuda, cuda:1, mps")
    p.add_argument("--force", action="store_true", help="replace results of another cache in --out")
    p.set_defaults(func=cmd_probe)

    p = _subparser(sub, "report", "evaluations, probes, figures and one report (HTML + Markdown) for one or "
                                  "more caches side by side")
    p.add_argument("caches", nargs="+", metavar="CACHE", help="HDF5 embedding caches, one per model")
    p.add_argument("--out", required=True, metavar="DIR", help="report folder")
    p.add_argument("--evaluate", default="linear:random,knn:species-disjoint", metavar="METHOD:SPLIT,...",
                   help="evaluations to run")
    p.add_argument("--probes", metavar="NAME,...", help="probes (default: all; see latent probe --list)")
    p.add_argument("--permutations", type=int, default=199, metavar="N",
                   help="permutations of the supporting statistics' free nulls")
    p.add_argument("--verdict-permutations", type=int, default=999, metavar="N",
                   help="restricted permutations of each rank's primary statistic")
    p.add_argument("--slides", action="store_true",
                   help="also write figures/slides.pdf: a 16:9 deck, the data and the answer, then one figure per page")
    p.add_argument("--layers", action="store_true",
                   help="also draw where in the network each rank appears, from caches made with latent embed --layers")
    p.add_argument("--no-common-dim", action="store_true",
                   help="compare models at their own dimensions (default: PCA to the smallest, stated)")
    p.add_argument("--distance", choices=["cosine", "euclidean"], default="cosine", help="embedding distance")
    p.add_argument("--projections", default="pca,umap", metavar="METHOD,...", help="2-D projections drawn")
    p.add_argument("--bootstrap", type=int, default=1000, metavar="N", help="bootstrap resamples for the CIs")
    p.add_argument("--seed", type=int, default=0, help="seed of every split, sample and permutation")
    p.add_argument("--baseline", metavar="CACHE", help="random-features cache of the same images")
    p.add_argument("--set", action="append", metavar="PROBE.SETTING=VALUE", help="probe-specific setting")
    p.add_argument("--force", action="store_true", help="recompute results that exist")
    p.add_argument("--device", default="auto", help="auto (CUDA, then CPU), cpu, cuda, cuda:1, mps")
    p.set_defaults(func=cmd_report)

    p = _subparser(sub, "run", "run an experiment config end to end (data -> evaluate -> probe -> report)")
    p.add_argument("config", metavar="CONFIG.yaml", help="experiment config (see experiments/)")
    p.add_argument("--results", default="results", metavar="DIR", help="results root")
    p.add_argument("--force", action="store_true", help="recompute steps whose outputs exist")
    p.set_defaults(func=cmd_run)

    p = _subparser(sub, "demo", "offline demo: synthetic data on a balanced taxonomy through the whole "
                                "pipeline to a report (about a minute)")
    p.add_argument("--out", default="latent-demo", metavar="DIR", help="demo folder")
    p.add_argument("--force", action="store_true", help="recompute every step")
    p.set_defaults(func=cmd_demo)

    p = _subparser(sub, "synth", "synthetic embeddings with a planted taxonomic hierarchy")
    p.add_argument("--taxonomy", metavar="TABLE", help="taxonomy table (default: the built-in one)")
    p.add_argument("--out", required=True, metavar="CACHE", help="HDF5 cache to write")
    p.add_argument("--per-species", type=int, default=20, metavar="N", help="images per species")
    p.add_argument("--dim", type=int, default=64, metavar="D", help="embedding dimension")
    p.add_argument("--signal", type=float, default=1.0, metavar="S", help="hierarchy strength; 0 = none")
    p.add_argument("--noise", type=float, default=1.0, help="within-species noise scale")
    p.add_argument("--seed", type=int, default=0, metavar="K", help="seed of the generator")
    p.add_argument("--attribute", choices=["orthogonal", "inside"], help="plant a within-species binary attribute "
                   "(metadata column 'attribute') orthogonal to or inside the species subspace")
    p.add_argument("--attribute-scale", type=float, default=1.0, metavar="A", help="size of the attribute offset")
    p.add_argument("--store-dtype", choices=["float32", "float16"], default="float32",
                   help="stored dtype of the embeddings (float16 halves the file)")
    p.add_argument("--force", action="store_true", help="replace an existing cache")
    p.set_defaults(func=cmd_synth)
    return parser


# ---------------------------------------------------------------------------- checks before any work
_PERMUTATION_HINT = (f"Use 0 for no null or e.g. 999 (p-values down to 0.001); above {validate.MAX_PERMUTATIONS:,} "
                     "a null takes days and its p-value resolution gains nothing a report can show.")

#: Integer options (by argparse dest, the option is ``--dest``): (lowest, highest, what to do).
INT_OPTIONS: dict[str, tuple["int | None", "int | None", str]] = {
    "batch_size": (1, validate.MAX_BATCH_SIZE, "Use e.g. 64 (images per forward pass)."),
    "workers": (0, validate.MAX_WORKERS, "Use 0 to decode in the main process, or leave it out for cores - 1."),
    "commit_every": (1, None, "Use e.g. 1024 (rows written between commits)."),
    "seed": (0, validate.MAX_SEED, "Seeds are non-negative integers, e.g. 0."),
    "shots": (1, None, "Use at least 1 support image per species, e.g. 5."),
    "folds": (1, validate.MAX_FOLDS, "Use e.g. 5 seeded folds."),
    "k": (1, None, "Use at least 1 neighbour, e.g. 20."),
    "bootstrap": (0, validate.MAX_BOOTSTRAP, "Use 0 for no CIs or e.g. 1000; more changes no digit a report shows."),
    "permutations": (0, validate.MAX_PERMUTATIONS, _PERMUTATION_HINT),
    "verdict_permutations": (0, validate.MAX_PERMUTATIONS, _PERMUTATION_HINT),
    "max_pairs": (1, None, "Use e.g. 2000000 (pairs above it are sampled)."),
    "max_images": (2, None, "Use e.g. 5000 (images above it are sampled; the silhouette needs pairs)."),
    "max_rows": (0, None, "Use e.g. 100000 (images above it are sampled), or 0 to read every image."),
    "max_test": (0, None, "Use e.g. 10000 (test images above it are sampled), or 0 to score every test image."),
    "per_species": (1, validate.MAX_PER_SPECIES, "Use e.g. 20 images per species."),
    "dim": (1, validate.MAX_DIM, "Use e.g. 64."),
}

#: Number options: keyword arguments of :func:`latent.validate.number_range`.
NUMBER_OPTIONS: dict[str, dict[str, Any]] = {
    "test_fraction": dict(low=0, high=1, low_open=True, high_open=True, hint="Use e.g. 0.3."),
    "temperature": dict(low=0, low_open=True, hint="Use e.g. 0.07."),
    "signal": dict(low=0, hint="Use 0 for no hierarchy or e.g. 1.0."),
    "noise": dict(low=0, hint="Use e.g. 1.0."),
}

#: Path options that must not be empty (an empty --out would silently mean the current folder).
PATH_OPTIONS = ("table", "cache", "embeddings", "source", "config", "out", "results", "metadata", "taxonomy",
                "baseline", "newick", "distances", "common_names", "pretrained", "model")

#: Positional arguments among them (named in messages as ``CACHE``, ``TABLE``, ...).
POSITIONALS = ("table", "cache", "embeddings", "source", "config")

#: Commands whose output (``--out``, or ``--results`` for run) is a folder; the others write files.
FOLDER_OUTPUTS = {"evaluate": "out", "probe": "out", "report": "out", "demo": "out", "run": "results"}
FILE_OUTPUTS = {"import": ("out",), "embed": ("out",), "synth": ("out",), "taxonomy": ("newick", "distances")}


def _option(dest: str) -> str:
    return "--" + dest.replace("_", "-")


def check_args(args: argparse.Namespace) -> None:
    """Check every option of ``args`` before any work: ranges, choices, devices, probe settings, paths.

    Raises
    ------
    InputError
        One line naming the option, the value, what it must be and what to do.
    """
    given = vars(args)
    for dest, (low, high, hint) in INT_OPTIONS.items():
        if given.get(dest) is not None:
            validate.int_range(_option(dest), given[dest], low, high, hint=hint)
    for dest, bounds in NUMBER_OPTIONS.items():
        if given.get(dest) is not None:
            validate.number_range(_option(dest), given[dest], **bounds)
    for dest in PATH_OPTIONS:
        if isinstance(given.get(dest), str):
            name = dest.upper() if dest in POSITIONALS else _option(dest)
            validate.nonempty(name, given[dest], what="a path" if dest not in ("model", "pretrained") else "a name")
    for path in given.get("caches") or ():
        validate.nonempty("CACHE", path)
    if given.get("device") is not None:
        validate.device("--device", given["device"])
    for dest in (FOLDER_OUTPUTS.get(args.command), *FILE_OUTPUTS.get(args.command, ())):
        if dest and given.get(dest):
            _check_parents(_option(dest), Path(given[dest]))
    dest = FOLDER_OUTPUTS.get(args.command)
    if dest and given.get(dest) is not None and Path(given[dest]).exists() and not Path(given[dest]).is_dir():
        raise InputError(f"The {_option(dest)!r} option must be a folder, but {given[dest]} is an existing file; "
                         f"choose another {_option(dest)} or remove the file.")
    for dest in FILE_OUTPUTS.get(args.command, ()):
        if given.get(dest) is not None and Path(given[dest]).is_dir():
            raise InputError(f"The {_option(dest)!r} option must be a file path, but {given[dest]} is a folder; "
                             f"give a file name (e.g. {Path(given[dest]) / 'out.h5'}).")
    if given.get("probes") is not None:
        from latent.probes import parse_probes

        parse_probes(given["probes"])
    if given.get("set"):
        _probe_settings(given["set"])
    if given.get("clade") is not None:
        from latent.evaluate import parse_clade

        parse_clade(given["clade"])
    if args.command == "report":
        _check_report(args)


def _check_parents(option: str, path: Path) -> None:
    """Refuse an output path below an existing file (``--out notes.txt/results``) before any work."""
    for parent in path.parents:
        if parent.exists():
            if not parent.is_dir():
                raise InputError(f"The {option!r} option must be a path below a folder, but {parent} is a file; "
                                 f"choose another {option}.")
            return


def _check_report(args: argparse.Namespace) -> None:
    from latent.evaluate import METHODS, SPLITS
    from latent.projection import PROJECTIONS

    for item in args.evaluate.split(","):
        method, _, split = item.strip().partition(":")
        validate.choice("--evaluate", method, METHODS,
                        hint="Give METHOD:SPLIT pairs, e.g. linear:random,knn:species-disjoint.")
        validate.choice("--evaluate", split or "random", SPLITS,
                        hint="Give METHOD:SPLIT pairs, e.g. linear:random,knn:species-disjoint.")
    for item in args.projections.split(","):
        if item.strip():
            validate.choice("--projections", item.strip(), PROJECTIONS, hint="e.g. --projections pca,umap")


# ---------------------------------------------------------------------------- failures -> one line
def _one_line(text: object) -> str:
    return " ".join(str(text).split())


def _os_error_line(exc: BaseException) -> "tuple[str, int] | None":
    """One line (and exit code) for an operating-system failure, or None if ``exc`` is not one.

    Reads ``errno``/``filename`` of an OSError, or the ``errno = N`` and ``name = '...'`` that HDF5 writes
    into the messages h5py raises (as OSError or RuntimeError).
    """
    code = getattr(exc, "errno", None) if isinstance(exc, OSError) else None
    path = getattr(exc, "filename", None) if isinstance(exc, OSError) else None
    text = str(exc)
    if code is None:
        found = re.search(r"errno = (\d+)", text)
        if found:
            code = int(found.group(1))
        elif "No space left on device" in text:
            code = errno.ENOSPC
    if path is None:
        found = re.search(r"name = '([^']*)'", text)
        path = found.group(1) if found else None
    if code is None and not isinstance(exc, OSError):
        return None
    where = f" {os.fsdecode(path)}" if path is not None else ""
    if isinstance(exc, OSError) and getattr(exc, "filename2", None):
        where += f" -> {os.fsdecode(exc.filename2)}"
    if code in (errno.ENOSPC, getattr(errno, "EDQUOT", -1)):
        return f"disk full (or over quota) while writing{where or ' the output'}: free some space, or write to " \
               f"another disk", 1
    if code == errno.EFBIG:
        return f"file too large while writing{where or ' the output'} (the file system's or `ulimit -f`'s size " \
               f"limit): write to another file system, or raise the limit", 1
    if code == errno.EROFS:
        return f"read-only file system:{where}; write to a folder on a writable disk", 1
    if code in (errno.EACCES, errno.EPERM):
        return f"permission denied:{where}; choose a path you can write to (e.g. under your home folder) " \
               f"or change its permissions", 1
    if code == errno.EISDIR:
        return f"{where.strip() or 'the path'} is a folder where a file was expected; give a file path", 1
    if code == errno.ENOTDIR:
        return f"{where.strip() or 'the path'}: a part of this path is a file, not a folder; choose another path", 1
    if code == errno.EEXIST:
        return f"{where.strip() or 'the path'} already exists; remove it or choose another path", 1
    if code == errno.ENOENT:
        return f"no such file or folder:{where or ' (unnamed)'}; check the path", 2
    if code in (errno.EMFILE, errno.ENFILE):
        return "too many open files; raise the limit (ulimit -n) or use fewer --workers", 1
    reason = getattr(exc, "strerror", None) or _one_line(text)
    return f"{reason}:{where}" if where else f"{reason}", 1


#: What to lower when a command runs out of memory.
MEMORY_ADVICE = {
    "embed": "a smaller --batch-size or fewer --workers", "embed-text": "a smaller --batch-size",
    "probe": "a smaller --max-images or --max-pairs", "synth": "a smaller --per-species or --dim",
    "evaluate": "a --clade, or fewer --bootstrap resamples", "report": "fewer caches or --bootstrap resamples",
}


def _report(command: str, message: str, debug: bool) -> None:
    if debug:
        traceback.print_exc()
    print(f"latent {command}: error: {message}", file=sys.stderr)


def _quiet_stdout() -> None:
    """After a broken pipe: point stdout at devnull so the exit flush cannot fail again (Python docs,
    "Note on SIGPIPE")."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
    except (OSError, ValueError, AttributeError):  # stdout without a file descriptor (e.g. captured)
        pass


def run_command(func: Callable[[argparse.Namespace], "int | None"], args: argparse.Namespace) -> int:
    """Run ``func(args)`` and turn every failure into one line on stderr and an exit code (see the module)."""
    command, debug = args.command, bool(getattr(args, "debug", False))
    try:
        check_args(args)
        code = int(func(args) or 0)
        sys.stdout.flush()  # a closed pipe fails here, inside the handler, not at interpreter exit
        return code
    except BrokenPipeError:
        _quiet_stdout()
        return 1
    except KeyboardInterrupt:
        if debug:
            traceback.print_exc()
        print(f"latent {command}: interrupted", file=sys.stderr)
        return 130
    except LatentError as exc:
        # Library messages are one line; a few add indented instructions (e.g. how to get weights).
        _report(command, str(exc).strip(), debug)
        return int(getattr(exc, "exit_code", 2))
    except MemoryError as exc:
        fewer = MEMORY_ADVICE.get(command, "a smaller input")
        _report(command, f"out of memory{': ' + _one_line(exc) if str(exc) else ''}; use {fewer}, or a machine "
                         f"with more memory", debug)
        return 1
    except (OSError, RuntimeError) as exc:
        described = _os_error_line(exc)
        if described is None:
            _report(command, _internal(exc), debug)
            return 1
        _report(command, described[0], debug)
        return described[1]
    except ValueError as exc:  # the library's plain ValueErrors are messages about user input
        _report(command, _one_line(exc), debug)
        return 2
    except Exception as exc:  # noqa: BLE001 - the last line of defence: one line, never a traceback
        _report(command, _internal(exc), debug)
        return 1


def _internal(exc: BaseException) -> str:
    return (f"internal error: {type(exc).__name__}: {_one_line(exc)} (run with --debug for the traceback; "
            f"please report it)")


def _configure_logging(verbose: int, quiet: bool) -> None:
    level = logging.ERROR if quiet else logging.DEBUG if verbose > 1 else logging.INFO if verbose else logging.WARNING
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(levelname)s: %(message)s"))
    root = logging.getLogger("latent")
    root.handlers[:] = [handler]
    root.setLevel(level)
    root.propagate = False


def main(argv: "Sequence[str] | None" = None) -> int:
    """Run the ``latent`` command line; returns the exit code (argparse usage errors exit 2 themselves)."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return 2
    _configure_logging(args.verbose, args.quiet)
    return run_command(args.func, args)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
