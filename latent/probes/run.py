"""Probes on in-memory embeddings (``latent.run_probes``) or on a cache (``latent probe``).

embeddings -> :class:`~latent.probes.base.ProbeData` (images labelled at species, L2-normalised) -> each
probe -> a :class:`Probes` result: ``metrics`` (long format with ``probe``, ``features``, ``model``
columns and the null columns), the arrays and tidy tables of each probe (e.g. a linkage, null samples)
and ``species`` (species in taxonomy order with image counts: the row/column order of every species
matrix). :meth:`Probes.save` writes ``DIR/metrics.csv``, ``DIR/<probe>.npz``, ``DIR/<probe>_<table>.csv``,
``DIR/species.csv`` and ``DIR/run.json`` (cache or data, provenance, settings, seeds, per-probe notes and
timings). With baseline features (e.g. the same images through a randomly initialised model) every
probe also runs on them, and their rows say ``features="baseline"``.

:func:`probe_cache` (``latent probe``) reads a cache (a baseline cache aligned on image ids), runs the
same computation and saves it; a folder holding results of another cache is refused unless ``force``
(checked before any computation, :func:`latent.results.check_output`); the same cache re-run replaces
its results.

A probe that cannot run on the data (e.g. a single taxon at every rank) is skipped with its reason
in ``run.json`` and the log; the other probes still run. ``metrics.csv`` is written last and
atomically, so a complete ``metrics.csv`` means a complete run.
"""

from __future__ import annotations

import logging
import os
import time
from dataclasses import asdict, dataclass, field, replace
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from latent._version import __version__
from latent.errors import CacheError, InputError
from latent.probes import PROBES, get_probe, parse_probes, with_units
from latent.probes.common import permutations_used
from latent.probes.base import ProbeData, ProbeOptions, ProbeResult
from latent.ranks import Rank
from latent.results import begin_output, check_output, finish_output, jsonable, results_frame

__all__ = ["Probes", "ProbeReport", "load_probe_data", "probe_cache", "run_probes", "list_probes"]

log = logging.getLogger(__name__)


@dataclass(eq=False, repr=False)
class Probes:
    """Results of a set of probes: the tables ``latent probe`` writes, in memory.

    Attributes
    ----------
    metrics : pandas.DataFrame
        The long format (``rank, metric, value, ci_low, ci_high, n, ..., probe, features, model`` and the
        null columns ``null_mean, z, p_value, permutations``).
    species : pandas.DataFrame
        The species in taxonomy order (``label``, kingdom..species, ``images``).
    results : dict of str to ProbeResult
        Each probe's result, keyed by probe name (``"<name>_baseline"`` for the baseline features).
    info : dict
        The run record (``run.json``).
    out : pathlib.Path or None
        Where :meth:`save` last wrote the tables (None until saved).
    files : list of pathlib.Path
        The files written there.
    """

    metrics: pd.DataFrame
    species: pd.DataFrame
    results: dict[str, ProbeResult] = field(default_factory=dict)
    info: dict[str, Any] = field(default_factory=dict)
    out: "Path | None" = None
    files: list[Path] = field(default_factory=list)

    @property
    def tables(self) -> dict[str, pd.DataFrame]:
        """Every probe's tidy tables, by the file stem they are saved under (``"separability_null"``)."""
        return {f"{key}_{name}": table for key, r in self.results.items() for name, table in r.tables.items()}

    @property
    def arrays(self) -> dict[str, dict[str, np.ndarray]]:
        """Every probe's arrays (e.g. a linkage), by the file stem they are saved under (``"dendrogram"``)."""
        return {key: dict(r.arrays) for key, r in self.results.items() if r.arrays}

    def __repr__(self) -> str:
        info = self.info
        return (f"<Probes {', '.join(self.results)} on {info.get('cache') or 'in-memory data'}: "
                f"{info.get('n_images')} images, {info.get('n_species')} species, {len(self.metrics)} metric rows; "
                f".summary(), .to_frame(), .tables, .arrays, .save(dir)>")

    def to_frame(self) -> pd.DataFrame:
        """The metrics in the long results format (a copy; as written to ``metrics.csv``)."""
        return self.metrics.copy()

    def save(self, out: "str | os.PathLike[str]", *, force: bool = False) -> list[Path]:
        """Write ``metrics.csv``, ``<probe>.npz``, ``<probe>_<table>.csv``, ``species.csv`` and ``run.json``
        into ``out`` (created), as ``latent probe`` does.

        Parameters
        ----------
        out
            The results folder. A folder holding results of another cache or other data is refused
            (:func:`latent.results.check_output`); results of the same source are replaced.
        force
            Replace whatever results ``out`` holds.

        Returns
        -------
        list of pathlib.Path
            The files written (``metrics.csv`` first; it is written last, atomically).

        Raises
        ------
        CacheError
            ``out`` holds results of another source, and not ``force``; nothing is written.
        """
        out = Path(out)
        previous = begin_output(out, self.info, force=force)
        files: list[Path] = []
        for key, result in self.results.items():
            files += _save_result(result, out, key[len(result.probe):])
        tmp = out / "species.csv.tmp"
        self.species.to_csv(tmp, index=False)
        os.replace(tmp, out / "species.csv")
        files.append(out / "species.csv")
        self.files = finish_output(out, self.info, self.metrics, files, previous)
        self.out = out
        return list(self.files)

    def summary(self) -> str:
        """A short human-readable table: each statistic with its null mean and p-value."""
        from latent.tables import probe_console_table

        m = self.metrics
        m = m[m["features"] == "model"] if "features" in m.columns else m
        source = self.info.get("cache") or "in-memory data"
        model = self.info.get("model")
        lines = [f"probes on {source}: {self.info.get('n_images')} images, "
                 f"{self.info.get('n_species')} species" + (f" ({model})" if model else "")]
        if self.info.get("sample"):
            lines.append(f"  sampled: {self.info['sample']}")
        lines.extend(probe_console_table(m))  # full metric names, one-taxon ranks marked trivial
        asked = (self.info.get("options") or {}).get("permutations")
        used = permutations_used(self.metrics, asked)
        if used:
            lines.append(f"  permutations used: {used}")
        for name, reason in self.info.get("skipped", {}).items():
            lines.append(f"  skipped {name}: {reason}")
        if self.out is not None:
            lines.append(f"wrote {self.out}")
        return "\n".join(lines)


#: The name :func:`probe_cache` returned before the in-memory API (the same class).
ProbeReport = Probes


def list_probes() -> str:
    """One line per probe: name and what it measures."""
    width = max(len(n) for n in PROBES)
    return "\n".join(f"{name:<{width}}  {spec.description}" for name, spec in PROBES.items())


def species_subset(path: "str | os.PathLike[str]", where: str) -> tuple[str, set[str]]:
    """The species of a table (``species`` column) whose ``COLUMN`` equals ``VALUE`` (``where = "COLUMN=VALUE"``):
    e.g. ``latent audit --trained-on``'s ``overlap.csv`` with ``seen=False`` for the species a model never saw.

    Returns
    -------
    tuple
        ``("<file>:<COLUMN>=<VALUE>", species names)``.
    """
    from latent.tables import read_option_csv

    path = Path(path)
    column, sep, value = where.partition("=")
    if not sep or not column.strip():
        raise InputError(f"--where must look like COLUMN=VALUE (e.g. seen=False). Got {where!r}.")
    column = column.strip()
    table = read_option_csv(path, ["species", column], option="--subset",
                            needs=f"a 'species' column and {column!r}",
                            absent="write one with `latent audit CACHE --trained-on FILE` (overlap.csv) or give a "
                                   "CSV with a 'species' column.")
    chosen = set(table.loc[table[column].str.strip() == value.strip(), "species"])
    if not chosen:
        raise InputError(f"--subset {path}: no species with {column}={value.strip()!r} (values: "
                         f"{', '.join(sorted(set(table[column]))[:10])}).")
    return f"{path.name}:{column}={value.strip()}", chosen


def load_probe_data(cache_path: "str | os.PathLike[str]", *, clade: "tuple[Rank, str] | None" = None,
                    species: "set[str] | None" = None, layer: "int | None" = None, max_rows: int = 0,
                    seed: int = 0) -> tuple[ProbeData, Any]:
    """Probe data from a cache: L2-normalised embeddings of the rows labelled at species (of the clade and of
    the ``species`` given, when given); with ``layer``, the class tokens after that block
    (:func:`latent.cache.open_cache`). ``max_rows`` > 0: at most that many rows, a seeded sample stratified
    by species (:attr:`ProbeOptions.max_rows`); the cache is read in blocks and only the rows kept are held.

    Returns
    -------
    tuple
        ``(ProbeData, Provenance)``.
    """
    data, provenance, _ = _load_probe_data(cache_path, clade=clade, species=species, layer=layer,
                                           max_rows=max_rows, seed=seed)
    return data, provenance


#: Seed tag of the row sample of :func:`load_probe_data`.
_ROWS_TAG = 0x40E5


def _load_probe_data(cache_path: Any, *, clade: Any, species: Any, layer: Any, max_rows: int,
                     seed: int) -> tuple[ProbeData, Any, str]:
    """:func:`load_probe_data`, and the note of its row sample ("" when every row was kept)."""
    from latent.cache import open_cache
    from latent.probes.common import stratified_sample

    with open_cache(cache_path, layer=layer) as cache:
        taxonomy = cache.taxonomy()
        keep = taxonomy.labelled(Rank.SPECIES)
        if clade is not None:
            keep &= taxonomy.clade_mask(*clade)
        if species is not None:
            keep &= np.isin(taxonomy.labels(Rank.SPECIES), sorted(species))
        rows = np.flatnonzero(keep)
        if not len(rows):
            where = "" if clade is None else f" in the clade {clade[0].label}={clade[1]}"
            where += "" if species is None else " among the species of the subset"
            raise InputError(f"{cache_path} has no images labelled at species{where}: nothing to probe "
                             f"(see `latent info {cache_path}`).")
        note = ""
        if max_rows and len(rows) > max_rows:
            codes = taxonomy.row_codes[rows, Rank.SPECIES]
            _, codes = np.unique(codes, return_inverse=True)
            keep, k, _ = stratified_sample(codes.reshape(-1), int(codes.max()) + 1, int(max_rows), min_per_species=1,
                                           seed=seed, tag=_ROWS_TAG)
            per = f"{k} per species at most" if k > 0 else "one image of some species"
            note = (f"images: a stratified sample of {len(keep):,} of {len(rows):,} ({per}; max_rows "
                    f"{max_rows:,}; --max-rows 0 reads all)")
            log.info("probes: %s", note)
            rows = np.sort(rows[keep])
        X, norms = _read_normalised(cache, rows)
        ids = np.asarray(cache.ids)[rows]
        provenance = cache.provenance
    return ProbeData.from_arrays(X, taxonomy.select_rows(rows), ids, norms=norms), provenance, note


def _control_encoder(cache_path: Any, form: str, device: str) -> Any:
    """The cache's own text encoder for text_geometry's random-token control, or None (logged) when the model
    cannot be reloaded here (an imported cache, weights not available offline): the control rows then say so."""
    from latent.models import ModelUnavailableError
    from latent.text import text_encoder_of

    try:
        return text_encoder_of(cache_path, group=f"species/{form}", device=device)
    except (CacheError, ModelUnavailableError, InputError) as e:
        log.warning("text_geometry: no random-token control for %s: its text encoder cannot be reloaded (%s)",
                    cache_path, str(e).splitlines()[0])
        return None


def _read_normalised(cache: Any, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Rows of a cache L2-normalised exactly as ``cache.read(rows, normalize=True)`` does (float32), and their
    norms before normalisation ``(n,)`` float64 (for the ``shape`` probe)."""
    X = cache.read(rows)
    norms = np.linalg.norm(X, axis=1, keepdims=True)
    np.divide(X, norms, out=X, where=norms > 0)
    return X, norms[:, 0].astype(np.float64)


def _aligned_baseline(data: ProbeData, path: "str | os.PathLike[str]") -> ProbeData:
    """The baseline cache's embeddings of the same images (by id), in the same order."""
    from latent.cache import open_cache

    with open_cache(path) as cache:
        from latent.api import rows_of_ids

        rows, missing = rows_of_ids(cache.ids, data.ids)
        if missing:
            raise InputError(f"The baseline cache {path} lacks {len(missing)} of the {len(data.ids)} probed images "
                             f"(first: {', '.join(missing[:5])}); it must hold the same images (same ids).")
        order = np.argsort(rows)
        X = np.empty((len(rows), cache.dim), dtype=np.float32)
        norms = np.empty(len(rows), dtype=np.float64)
        X[order], norms[order] = _read_normalised(cache, rows[order])
    return ProbeData.from_arrays(X, data.taxonomy, data.ids, norms=norms)


def _save_result(result: ProbeResult, out: Path, suffix: str) -> list[Path]:
    files = []
    if result.arrays:
        path = out / f"{result.probe}{suffix}.npz"
        tmp = out / f"{result.probe}{suffix}.tmp.npz"
        np.savez_compressed(tmp, **{k: np.asarray(v) for k, v in result.arrays.items()})
        os.replace(tmp, path)
        files.append(path)
    for name, table in result.tables.items():
        path = out / f"{result.probe}{suffix}_{name}.csv"
        tmp = path.with_name(path.name + ".tmp")
        table.to_csv(tmp, index=False)
        os.replace(tmp, path)
        files.append(path)
    return files


def _checked_options(options: "ProbeOptions | None") -> ProbeOptions:
    options = options or ProbeOptions()
    if not isinstance(options, ProbeOptions):
        raise InputError(f"The 'options' parameter must be a latent.probes.ProbeOptions. Got {type(options).__name__} "
                         f"instead.")
    unknown = [k for k in options.extra if k not in PROBES]
    if unknown:
        raise InputError(f"Settings were given for unknown probe(s) {', '.join(unknown)}; probes: {', '.join(PROBES)}.")
    return options


def _compute(names: list[str], feature_sets: list[tuple[str, ProbeData, str]], options: ProbeOptions,
             source: dict[str, Any], *, model: str, start: float) -> Probes:
    """Run the probes on each feature set (``(features, data, file suffix)``, the model's first)."""
    data = feature_sets[0][1]
    log.info("probing %s: %d images, %d species, probes %s", source.get("cache") or "in-memory data", len(data.X),
             data.n_species, ", ".join(names))
    frames: list[pd.DataFrame] = []
    results: dict[str, ProbeResult] = {}
    skipped: dict[str, str] = {}
    notes: dict[str, Any] = {}
    timings: dict[str, float] = {}
    for name in names:
        function = get_probe(name).load()
        for features, fdata, suffix in feature_sets:
            key = name + suffix
            t0 = time.perf_counter()
            try:
                result = function(fdata, options)
            except InputError as e:
                skipped[key] = str(e)
                log.warning("probe %s (%s features) skipped: %s", name, features, e)
                continue
            timings[key] = round(time.perf_counter() - t0, 3)
            log.info("probe %s (%s features): %.1fs", name, features, timings[key])
            frames.append(results_frame(with_units(result.to_frame(), get_probe(name)), features=features))
            results[key] = result
            notes[key] = jsonable(dict(result.info))
    if not frames:
        raise InputError("No probe could run on this data: " + "; ".join(f"{k}: {v}" for k, v in skipped.items()))

    species = data.taxonomy.species_table()
    species.insert(0, "label", data.taxonomy.species_labels())
    species["images"] = data.counts
    info = {
        "command": "probe", **source, "probes": names, "options": jsonable(_recorded_options(options)),
        "n_images": int(len(data.X)), "n_species": data.n_species, "dim": int(data.X.shape[1]),
        "latent_version": __version__, "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "seconds": round(time.perf_counter() - start, 2), "probe_seconds": timings, "skipped": skipped,
        "probe_info": notes,
    }
    metrics = results_frame(pd.concat(frames, ignore_index=True), model=model)
    if source.get("sample"):
        sample = str(source["sample"])
        notes = metrics["note"] if "note" in metrics.columns else [None] * len(metrics)
        metrics["note"] = [f"{n}; {sample}" if isinstance(n, str) and n else sample for n in notes]
    probes = Probes(metrics=metrics, species=species, results=results, info=info)
    log.info("%s", probes.summary())
    return probes


def _recorded_options(options: ProbeOptions) -> dict[str, Any]:
    """The options as ``run.json`` records them: a per-image array setting (``intra_species.attribute``) is
    recorded by its name, not its values."""
    recorded = asdict(options)
    extra = dict(recorded.get("extra") or {})
    for probe, cfg in extra.items():
        if isinstance(cfg, dict) and "attribute" in cfg and not isinstance(cfg["attribute"], str):
            extra[probe] = {**cfg, "attribute": str(cfg.get("attribute_name", "given per image"))}
        cfg = extra[probe]
        if isinstance(cfg, dict) and "texts" in cfg and not isinstance(cfg["texts"], str):
            extra[probe] = {**cfg, "texts": f"/text/<rank>/{cfg.get('form', 'taxon')}: "
                                            + ", ".join(map(str, cfg["texts"]))}
        if isinstance(cfg, dict) and cfg.get("encode_text") is not None and not isinstance(cfg["encode_text"], str):
            extra[probe] = {**extra[probe], "encode_text": getattr(cfg["encode_text"], "__name__", "given")}
    recorded["extra"] = extra
    return recorded


def run_probes(
    X: Any,
    taxonomy: Any,
    *,
    probes: "str | list[str] | None" = None,
    options: "ProbeOptions | None" = None,
    baseline: Any = None,
    ids: Any = None,
    clade: "str | tuple[Rank, str] | None" = None,
    model: str = "",
    distance: "str | None" = None,
    permutations: "int | None" = None,
    max_pairs: "int | None" = None,
    max_images: "int | None" = None,
    seed: "int | None" = None,
    device: "str | None" = None,
    settings: "dict[str, dict[str, Any]] | None" = None,
) -> Probes:
    """Run probes on in-memory embeddings (``latent.run_probes``; nothing is written).

    Parameters
    ----------
    X
        ``(n_images, dim)`` embeddings, any real dtype: cast to float32 and L2-normalised per row, as
        :func:`probe_cache` reads a cache, so the same vectors give the same numbers.
    taxonomy
        A :class:`~latent.taxonomy.Taxonomy` with one row per image, or a table (DataFrame or path) with
        kingdom..species columns, one row per image. Images without a species are left out.
    probes
        Probe names (``"a,b"`` or a list; default every probe, see :data:`latent.probes.PROBES`).
    options
        Shared settings (:class:`~latent.probes.base.ProbeOptions`); the keyword settings below
        replace its fields.
    baseline
        Optional ``(n_images, dim')`` baseline features of the same images, row for row (e.g. a random
        model), probed the same way (rows ``features="baseline"``).
    ids
        ``(n_images,)`` unique image ids (default ``"0".."n-1"``).
    clade
        ``"RANK=NAME"`` or ``(Rank, name)``: probe only this clade's images.
    model
        Label of the ``model`` column.
    distance, permutations, max_pairs, max_images, seed, device
        :class:`~latent.probes.base.ProbeOptions` fields (None: from ``options``, else the default).
    settings
        Probe-specific settings by probe name, e.g. ``{"dendrogram": {"method": "ward"}}``
        (``ProbeOptions.extra``; ``latent probe --set``).

    Returns
    -------
    Probes
        ``.to_frame()``, ``.summary()``, ``.save(dir)``, the tables and arrays as attributes.
    """
    from latent.api import as_embeddings, as_ids, as_taxonomy, data_identity
    from latent.evaluate import parse_clade

    start = time.perf_counter()
    names = parse_probes(probes)
    options = _checked_options(options)
    given = {"distance": distance, "permutations": permutations, "max_pairs": max_pairs, "max_images": max_images,
             "seed": seed, "device": device, "extra": settings}
    options = _checked_options(replace(options, **{k: v for k, v in given.items() if v is not None}))
    clade_spec = parse_clade(clade) if isinstance(clade, str) else clade
    data, norms = as_embeddings(X, function="run_probes", return_norms=True)
    tax = as_taxonomy(taxonomy, len(data), function="run_probes")
    image_ids = as_ids(ids, len(data), function="run_probes")
    keep = tax.labelled(Rank.SPECIES)
    if clade_spec is not None:
        keep &= tax.clade_mask(*clade_spec)
    rows = np.flatnonzero(keep)
    if not len(rows):
        where = "" if clade_spec is None else f" in the clade {clade_spec[0].label}={clade_spec[1]}"
        raise InputError(f"The taxonomy has no images labelled at species{where}: nothing to probe.")
    model_data = ProbeData.from_arrays(data[rows], tax.select_rows(rows), image_ids[rows], norms=norms[rows])
    feature_sets = [("model", model_data, "")]
    source: dict[str, Any] = {"cache": None, "data": data_identity(data), "model": model or None,
                              "pretrained": None, "preprocess": None, "baseline": None,
                              "clade": None if clade_spec is None else f"{clade_spec[0].label}={clade_spec[1]}"}
    if baseline is not None:
        base, base_norms = as_embeddings(baseline, parameter="baseline", function="run_probes", return_norms=True)
        if len(base) != len(data):
            raise InputError(f"The 'baseline' parameter of run_probes must have one row per image ({len(data)}). "
                             f"Got {len(base)} rows instead.")
        feature_sets.append(("baseline", ProbeData.from_arrays(base[rows], model_data.taxonomy, model_data.ids,
                                                               norms=base_norms[rows]), "_baseline"))
        source["baseline"] = {"data": data_identity(base)}
    return _compute(names, feature_sets, options, source, model=model, start=start)


def probe_cache(
    cache_path: "str | os.PathLike[str]",
    out: "str | os.PathLike[str]",
    *,
    probes: "str | list[str] | None" = None,
    options: "ProbeOptions | None" = None,
    baseline: "str | os.PathLike[str] | None" = None,
    clade: "str | tuple[Rank, str] | None" = None,
    subset: "tuple[str, set[str]] | None" = None,
    attribute: "str | None" = None,
    layer: "int | None" = None,
    force: bool = False,
) -> Probes:
    """Run probes on a cache and write the tables (read, :func:`run_probes`' computation, save).

    Parameters
    ----------
    cache_path
        An embedding cache.
    out
        Output folder (created). One holding results of another cache is refused unless ``force``
        (checked before any computation); results of the same cache are replaced.
    probes
        Probe names (``"a,b"`` or a list; default every probe, see :data:`latent.probes.PROBES`).
    options
        Shared settings (distance, permutations, sample limits, seed, device, per-probe settings).
    baseline
        Optional cache of baseline features (same image ids), probed the same way.
    clade
        ``"RANK=NAME"`` or ``(Rank, name)``: probe only this clade's images.
    subset
        ``(label, species names)`` (:func:`species_subset`): probe only these species' images, e.g. the
        species a model never saw in training.
    attribute
        A metadata column of the cache: the per-image attribute of the ``intra_species`` probe.
    layer
        Probe the class tokens after this transformer block (a block the cache holds: ``latent embed
        --layers``) instead of the final embeddings. The text probes are refused: text lives in the final
        space. Recorded as ``layer`` in the results' source.
    force
        Replace the results of another cache in ``out``.

    Returns
    -------
    Probes
        With ``out`` and ``files`` set.

    Raises
    ------
    CacheError
        ``out`` holds results of another cache (and not ``force``): nothing is computed or written.
    """
    from latent.cache import open_cache
    from latent.evaluate import parse_clade

    names = parse_probes(probes)
    options = _checked_options(options)
    clade_spec = parse_clade(clade) if isinstance(clade, str) else clade
    start = time.perf_counter()
    out = Path(out)
    with open_cache(cache_path, layer=layer) as cache:
        provenance = cache.provenance
    text_probes = [n for n in names if n in ("text_geometry", "image_text_alignment")]
    if layer is not None and text_probes:
        raise InputError(f"The probes {', '.join(text_probes)} compare images with text in the final embedding "
                         f"space; they cannot run with --layer {layer}. Leave them out of --probes, or drop --layer.")
    source: dict[str, Any] = {
        "cache": str(Path(cache_path).resolve()), "model": provenance.model, "pretrained": provenance.pretrained,
        "preprocess": provenance.preprocess, "baseline": None if baseline is None else str(Path(baseline).resolve()),
        "clade": None if clade_spec is None else f"{clade_spec[0].label}={clade_spec[1]}",
        "subset": None if subset is None else subset[0]}
    if layer is not None:  # (absent otherwise: results of the final embeddings keep their identity)
        source["layer"] = int(layer)
    check_output(out, {"command": "probe", **source}, force=force)
    data, provenance, sample_note = _load_probe_data(cache_path, clade=clade_spec,
                                                     species=None if subset is None else subset[1], layer=layer,
                                                     max_rows=options.max_rows, seed=options.seed)
    if sample_note:  # every probe ran on a sample of the cache's images: said in run.json, the rows and the summary
        source["sample"] = sample_note
    if text_probes:  # the text embeddings of the taxon names stored in the cache (latent embed-text)
        from dataclasses import replace as _replace

        from latent.probes.text_side import texts_by_rank

        extra = dict(options.extra or {})
        for name in text_probes:
            cfg = dict(extra.get(name) or {})
            if "texts" not in cfg:
                with open_cache(cache_path) as cache:
                    cfg["texts"] = texts_by_rank(cache, str(cfg.get("form", "taxon")))
            if name == "text_geometry" and cfg.get("encode_text") is None:
                cfg["encode_text"] = _control_encoder(cache_path, str(cfg.get("form", "taxon")), options.device)
            extra[name] = cfg
        options = _replace(options, extra=extra)
    if attribute is not None:
        from dataclasses import replace as _replace

        from latent.probes.intra_species import attribute_from_cache

        values = attribute_from_cache(cache_path, data, attribute)
        extra = dict(options.extra or {})
        extra["intra_species"] = {**dict(extra.get("intra_species") or {}), "attribute": values,
                                  "attribute_name": attribute}
        options = _replace(options, extra=extra)
        source["attribute"] = attribute
    feature_sets = [("model", data, "")]
    if baseline is not None:
        feature_sets.append(("baseline", _aligned_baseline(data, baseline), "_baseline"))
    result = _compute(names, feature_sets, options, source, model=provenance.model, start=start)
    result.save(out, force=force)
    return result
