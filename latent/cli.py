"""The ``latent`` command line. The only place in latent that prints.

Heavy modules (h5py, torch, scikit-learn) are imported inside the commands that need them, so
``latent --help`` starts fast.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from collections.abc import Sequence

from latent._version import __version__
from latent.errors import InputError, LatentError

log = logging.getLogger("latent")


# ---------------------------------------------------------------------------- commands
def cmd_taxonomy(args: argparse.Namespace) -> int:
    import pandas as pd

    from latent.taxonomy import Taxonomy

    tax = Taxonomy.from_table(args.table, on_conflict=args.on_conflict)
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
    lines.append("taxa per rank:")
    for rank in RANK_NAMES:
        lines.append(f"  {rank:<8} {s['taxa'][rank]:>7}")
    lines.append(f"unlabelled  {s['unlabelled']} rows (no species)")
    lines.append(f"failed      {s['failed']} inputs")
    if s.get("text_groups"):
        lines.append(f"text        {', '.join(s['text_groups'])}")
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
        taxonomy=args.taxonomy, join_on=args.join_on, model=args.model, pretrained=args.pretrained,
        force=args.force,
    )
    print(
        f"imported {report.rows} embeddings of dimension {report.dim} into {report.path} "
        f"({report.taxonomy.n_species} species, {report.unlabelled} rows unlabelled, "
        f"{'L2-normalised' if report.normalized else 'not normalised'})"
    )
    return 0


def cmd_models(args: argparse.Namespace) -> int:
    from latent.models import list_models

    print(f"{'name':<22} {'dim':>5}  {'open_clip':<32} {'weights':<20} description")
    for spec in list_models():
        weights = "untrained (random)" if spec.untrained else (spec.pretrained or "hub")
        print(f"{spec.name:<22} {spec.embed_dim or '?':>5}  {spec.open_clip_name:<32} {weights:<20} {spec.description}")
    print("\nAlso: any open_clip architecture with --pretrained TAG|FILE|FOLDER, 'random:<arch>' for a random "
          "initialisation of any architecture, 'hf-hub:org/repo', or a local Hugging Face snapshot folder.")
    return 0


def cmd_embed(args: argparse.Namespace) -> int:
    from latent.extract import embed_images

    report = embed_images(
        args.source, args.out, model=args.model, pretrained=args.pretrained, preprocess=args.preprocess,
        taxonomy=args.taxonomy, join_on=args.join_on, path_column=args.path_column, batch_size=args.batch_size,
        workers=args.workers, device=args.device, precision=args.precision, store_dtype=args.store_dtype,
        seed=args.seed, force=args.force, progress=not args.no_progress, commit_every=args.commit_every,
    )
    print(report.summary())
    if args.text and not report.already_complete:
        return cmd_embed_text(argparse.Namespace(cache=args.out, templates=args.templates, force=False,
                                                 batch_size=256, device=args.device, common_names=None))
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
                        batch_size=args.batch_size, common_names=common)
    print(report.summary())
    return 0


def cmd_evaluate(args: argparse.Namespace) -> int:
    from latent.evaluate import evaluate_cache

    report = evaluate_cache(
        args.cache, args.out, method=args.method, mode=args.mode, split=args.split, shots=args.shots,
        folds=args.folds, seed=args.seed, clade=args.clade, test_fraction=args.test_fraction,
        k_neighbors=args.k, temperature=args.temperature, text_form=args.text_form, n_boot=args.bootstrap,
        device=args.device,
    )
    print(report.summary())
    return 0


def _probe_settings(items: "Sequence[str] | None") -> dict:
    """``["dendrogram.method=ward", "clusters.permutations=99"]`` -> per-probe settings (values as JSON
    where they parse, else strings)."""
    import json

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
    return settings


def cmd_probe(args: argparse.Namespace) -> int:
    from latent.probes.run import list_probes, probe_cache

    if args.list:
        print(list_probes())
        return 0
    if args.cache is None or args.out is None:
        raise InputError("latent probe needs a CACHE and --out DIR (or --list to list the probes).")
    from latent.probes.base import ProbeOptions

    options = ProbeOptions(distance=args.distance, permutations=args.permutations, max_pairs=args.max_pairs,
                           max_images=args.max_images, seed=args.seed, device=args.device,
                           extra=_probe_settings(args.set))
    report = probe_cache(args.cache, args.out, probes=args.probes, options=options, baseline=args.baseline,
                         clade=args.clade)
    print(report.summary())
    return 0


def cmd_report(args: argparse.Namespace) -> int:
    from latent.report import ReportSettings, build_report

    evaluations = tuple(tuple(e.split(":", 1)) if ":" in e else (e, "random") for e in args.evaluate.split(","))
    settings = ReportSettings(
        evaluations=evaluations, probes=tuple(args.probes.split(",")) if args.probes else None,
        permutations=args.permutations, distance=args.distance, seed=args.seed, n_boot=args.bootstrap,
        projections=tuple(p for p in args.projections.split(",") if p), probe_settings=_probe_settings(args.set),
        device=args.device, verdict_permutations=args.verdict_permutations, common_dim=not args.no_common_dim)
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
    from latent.synthetic import make_hierarchical, write_synthetic

    data = make_hierarchical(
        args.taxonomy, per_species=args.per_species, dim=args.dim, signal=args.signal, noise=args.noise,
        seed=args.seed,
    )
    write_synthetic(args.out, data, source=str(args.taxonomy or "builtin"), force=args.force)
    print(
        f"wrote {len(data.ids)} synthetic embeddings ({data.taxonomy.n_species} species x {args.per_species}, "
        f"dim {args.dim}, signal {args.signal:g}, seed {args.seed}) to {args.out}"
    )
    return 0


# ---------------------------------------------------------------------------- parser
def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="latent",
        description="Does a foundation model's embedding space reflect the taxonomy of life?",
    )
    parser.add_argument("--version", action="version", version=f"latent {__version__}")
    parser.add_argument("-v", "--verbose", action="count", default=0, help="more log output (-vv for debug)")
    parser.add_argument("-q", "--quiet", action="store_true", help="only errors")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    p = sub.add_parser("taxonomy", help="summarise a taxonomy table; export Newick and distances")
    p.add_argument("table", help="CSV, TSV or Parquet with kingdom..species columns")
    p.add_argument("--newick", metavar="OUT", help="write the species tree in Newick format")
    p.add_argument("--distances", metavar="OUT.csv", help="write the species x species LCA-height matrix")
    p.add_argument("--on-conflict", choices=["raise", "warn"], default="raise",
                   help="a name with two parents in one kingdom: stop (default) or warn and keep both")
    p.set_defaults(func=cmd_taxonomy)

    p = sub.add_parser("info", help="describe an embedding cache")
    p.add_argument("cache")
    p.add_argument("--allow-incomplete", action="store_true", help="read an interrupted write's committed rows")
    p.add_argument("--failures", action="store_true", help="list the inputs that could not be embedded")
    p.add_argument("--json", action="store_true", help="print the summary as JSON")
    p.set_defaults(func=cmd_info)

    p = sub.add_parser("import", help="import embeddings made elsewhere into a cache")
    p.add_argument("embeddings", help=".npy, .npz, .parquet or pybioclip embed JSON")
    p.add_argument("--metadata", metavar="META", help="CSV, JSON or Parquet, one row per embedding, same order")
    p.add_argument("--id-column", metavar="COL", help="metadata column holding unique row ids")
    p.add_argument("--taxonomy", metavar="TABLE", help="taxonomy table to join labels from")
    p.add_argument("--join-on", metavar="META_COL=TAX_COL", help="how metadata rows find their taxonomy row")
    p.add_argument("--model", help="which model made these embeddings (recorded as provenance)")
    p.add_argument("--pretrained", default="unknown", help="which weights (recorded as provenance)")
    p.add_argument("--out", required=True, metavar="CACHE", help="HDF5 cache to write")
    p.add_argument("--force", action="store_true", help="replace an existing cache")
    p.set_defaults(func=cmd_import)

    p = sub.add_parser("models", help="list the named models")
    p.set_defaults(func=cmd_models)

    p = sub.add_parser("embed", help="embed a folder of images (or a manifest) with an open_clip model")
    p.add_argument("source", help="folder of images (recursive) or manifest table (CSV/Parquet) with a path column")
    p.add_argument("--out", required=True, metavar="CACHE", help="HDF5 cache to write (resumed if interrupted)")
    p.add_argument("--model", default="bioclip-2", help="registry name (latent models), open_clip arch, "
                   "random:<arch>, hf-hub:org/repo or a snapshot folder (default: bioclip-2)")
    p.add_argument("--pretrained", help="open_clip pretrained tag, local checkpoint file or snapshot folder")
    p.add_argument("--preprocess", choices=["openclip", "squash"], default="openclip",
                   help="openclip: the model's validation transform (default); squash: pybioclip's 224x224 resize")
    p.add_argument("--taxonomy", metavar="TABLE", help="taxonomy table to join labels from")
    p.add_argument("--join-on", metavar="KEY=TAXCOL", help="KEY is 'folder' (parent folder name) or a manifest column")
    p.add_argument("--path-column", help="manifest column holding image paths")
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--workers", type=int, default=None, help="decoding processes (default: cores - 1, at most 8)")
    p.add_argument("--device", default="auto", help="auto (CUDA, then CPU), cpu, cuda, cuda:1, ...")
    p.add_argument("--precision", default="auto", choices=["auto", "fp32", "fp16", "bf16", "amp"])
    p.add_argument("--store-dtype", default="float16", choices=["float16", "float32"])
    p.add_argument("--seed", type=int, default=0, help="seed of random initialisations")
    p.add_argument("--force", action="store_true", help="replace an existing cache (once the new one is complete)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.add_argument("--commit-every", type=int, default=1024, metavar="ROWS", help="rows between commits")
    p.add_argument("--text", action="store_true", help="also embed the taxon names (see latent embed-text)")
    p.add_argument("--templates", choices=["single", "openai"], default="openai",
                   help="with --text: 'a photo of {}.' or the 80 OpenAI ImageNet templates averaged")
    p.set_defaults(func=cmd_embed)

    p = sub.add_parser("embed-text", help="embed the names of every taxon in a cache (for zero-shot)")
    p.add_argument("cache")
    p.add_argument("--templates", choices=["single", "openai"], default="openai",
                   help="'a photo of {}.' or the 80 OpenAI ImageNet templates averaged (default)")
    p.add_argument("--common-names", metavar="TABLE", help="table with species and common_name columns (com forms)")
    p.add_argument("--batch-size", type=int, default=256)
    p.add_argument("--device", default="auto")
    p.add_argument("--force", action="store_true", help="recompute text groups that exist")
    p.set_defaults(func=cmd_embed_text)

    p = sub.add_parser("evaluate", help="per-rank and hierarchical evaluation of a predictor on a cache")
    p.add_argument("cache")
    p.add_argument("--method", required=True, choices=["zero-shot", "linear", "knn", "centroid"])
    p.add_argument("--out", required=True, metavar="DIR")
    p.add_argument("--mode", choices=["flat", "per-rank"], help="flat: species scores summed up the tree "
                   "(zero-shot default); per-rank: each rank predicted directly (default otherwise)")
    p.add_argument("--split", choices=["random", "species-disjoint"], default="random")
    p.add_argument("--shots", type=int, default=5, metavar="K", help="support images per species (centroid)")
    p.add_argument("--folds", type=int, default=5, help="seeded folds (centroid)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--clade", metavar="RANK=NAME", help="only this clade's images and taxa (e.g. class=Insecta)")
    p.add_argument("--test-fraction", type=float, default=0.3)
    p.add_argument("--k", type=int, default=20, help="neighbours (knn)")
    p.add_argument("--temperature", type=float, default=0.07, help="vote temperature (knn)")
    p.add_argument("--text-form", default="taxon", choices=["taxon", "sci", "com", "taxon_com"],
                   help="which text embeddings zero-shot uses")
    p.add_argument("--bootstrap", type=int, default=1000, metavar="N", help="bootstrap resamples for the CIs")
    p.add_argument("--device", default="auto")
    p.set_defaults(func=cmd_evaluate)

    p = sub.add_parser("probe", help="latent-space probes with permutation nulls: does the geometry follow the taxonomy?")
    p.add_argument("cache", nargs="?")
    p.add_argument("--out", metavar="DIR")
    p.add_argument("--list", action="store_true", help="list the probes and exit")
    p.add_argument("--probes", metavar="NAME,...", help="probes to run (default: all; see --list)")
    p.add_argument("--distance", choices=["cosine", "euclidean"], default="cosine")
    p.add_argument("--permutations", type=int, default=999, metavar="N", help="species permutations per null")
    p.add_argument("--max-pairs", type=int, default=2_000_000, metavar="N",
                   help="image pairs used by pair-level statistics before sampling")
    p.add_argument("--max-images", type=int, default=5_000, metavar="N",
                   help="images used by image-level matrices (e.g. silhouette) before stratified sampling")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--baseline", metavar="CACHE", help="random-features baseline cache with the same image ids")
    p.add_argument("--clade", metavar="RANK=NAME", help="only this clade's images (e.g. class=Aves)")
    p.add_argument("--set", action="append", metavar="PROBE.SETTING=VALUE",
                   help="probe-specific setting, repeatable (e.g. dendrogram.method=ward)")
    p.add_argument("--device", default="auto")
    p.set_defaults(func=cmd_probe)

    p = sub.add_parser("report", help="evaluations, probes, figures and one report (HTML + Markdown) for one or "
                                      "more caches side by side")
    p.add_argument("caches", nargs="+", metavar="CACHE")
    p.add_argument("--out", required=True, metavar="DIR")
    p.add_argument("--evaluate", default="linear:random,knn:species-disjoint", metavar="METHOD:SPLIT,...",
                   help="evaluations to run (default: %(default)s)")
    p.add_argument("--probes", metavar="NAME,...", help="probes (default: all; see latent probe --list)")
    p.add_argument("--permutations", type=int, default=199, metavar="N",
                   help="permutations of the supporting statistics' free nulls (default: %(default)s)")
    p.add_argument("--verdict-permutations", type=int, default=999, metavar="N",
                   help="restricted permutations of each rank's primary statistic (default: %(default)s)")
    p.add_argument("--no-common-dim", action="store_true",
                   help="compare models at their own dimensions (default: PCA to the smallest, stated)")
    p.add_argument("--distance", choices=["cosine", "euclidean"], default="cosine")
    p.add_argument("--projections", default="pca,umap", metavar="METHOD,...")
    p.add_argument("--bootstrap", type=int, default=1000, metavar="N")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--baseline", metavar="CACHE", help="random-features cache of the same images")
    p.add_argument("--set", action="append", metavar="PROBE.SETTING=VALUE", help="probe-specific setting")
    p.add_argument("--force", action="store_true", help="recompute results that exist")
    p.add_argument("--device", default="auto")
    p.set_defaults(func=cmd_report)

    p = sub.add_parser("run", help="run an experiment config end to end (data -> evaluate -> probe -> report)")
    p.add_argument("config", metavar="CONFIG.yaml")
    p.add_argument("--results", default="results", metavar="DIR", help="results root (default: %(default)s)")
    p.add_argument("--force", action="store_true", help="recompute steps whose outputs exist")
    p.set_defaults(func=cmd_run)

    p = sub.add_parser("demo", help="offline demo: synthetic data on a balanced taxonomy through the whole "
                                    "pipeline to a report (about a minute)")
    p.add_argument("--out", default="latent-demo", metavar="DIR")
    p.add_argument("--force", action="store_true")
    p.set_defaults(func=cmd_demo)

    p = sub.add_parser("synth", help="synthetic embeddings with a planted taxonomic hierarchy")
    p.add_argument("--taxonomy", metavar="TABLE", help="taxonomy table (default: the built-in one)")
    p.add_argument("--out", required=True, metavar="CACHE")
    p.add_argument("--per-species", type=int, default=20, metavar="N")
    p.add_argument("--dim", type=int, default=64, metavar="D")
    p.add_argument("--signal", type=float, default=1.0, metavar="S", help="hierarchy strength; 0 = none")
    p.add_argument("--noise", type=float, default=1.0, help="within-species noise scale")
    p.add_argument("--seed", type=int, default=0, metavar="K")
    p.add_argument("--force", action="store_true", help="replace an existing cache")
    p.set_defaults(func=cmd_synth)
    return parser


def _configure_logging(verbose: int, quiet: bool) -> None:
    level = logging.ERROR if quiet else logging.DEBUG if verbose > 1 else logging.INFO if verbose else logging.WARNING
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(levelname)s: %(message)s"))
    root = logging.getLogger("latent")
    root.handlers[:] = [handler]
    root.setLevel(level)
    root.propagate = False


def main(argv: "Sequence[str] | None" = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return 2
    _configure_logging(args.verbose, args.quiet)
    try:
        return int(args.func(args) or 0)
    except (LatentError, ValueError, FileNotFoundError) as exc:
        print(f"latent {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"latent {args.command}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
