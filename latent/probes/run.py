"""``latent probe``: run probes on a cache and write the shared long table plus what figures need.

cache -> :class:`~latent.probes.base.ProbeData` (images labelled at species, L2-normalised) -> each
probe -> ``DIR/metrics.csv`` (long format with ``probe``, ``features``, ``model`` columns and the null
columns), ``DIR/<probe>.npz`` (arrays, e.g. a linkage), ``DIR/<probe>_<table>.csv`` (tidy tables, e.g.
null samples), ``DIR/species.csv`` (species in taxonomy order with image counts: the row/column order
of every species matrix), and ``DIR/run.json`` (cache, provenance, settings, seeds, per-probe notes and
timings). With a baseline cache (e.g. the same images through a randomly initialised model) every
probe also runs on it, aligned on image ids, and its rows say ``features="baseline"``.

A probe that cannot run on the data (e.g. a single taxon at every rank) is skipped with its reason
in ``run.json`` and the log; the other probes still run. ``metrics.csv`` is written last and
atomically, so a complete ``metrics.csv`` means a complete run.
"""

from __future__ import annotations

import json
import logging
import os
import time
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from latent._version import __version__
from latent.errors import InputError
from latent.probes import PROBES, get_probe, parse_probes
from latent.probes.base import ProbeData, ProbeOptions, ProbeResult
from latent.ranks import Rank
from latent.results import jsonable, results_frame, write_results

__all__ = ["ProbeReport", "load_probe_data", "probe_cache", "list_probes"]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ProbeReport:
    """What :func:`probe_cache` wrote (``metrics`` in the long format)."""

    out: Path
    metrics: pd.DataFrame
    files: list[Path] = field(default_factory=list)
    info: dict[str, Any] = field(default_factory=dict)

    def summary(self) -> str:
        """A short human-readable table: each statistic with its null mean and p-value."""
        m = self.metrics
        m = m[m["features"] == "model"] if "features" in m.columns else m
        lines = [f"probes on {self.info.get('cache')}: {self.info.get('n_images')} images, "
                 f"{self.info.get('n_species')} species ({self.info.get('model')})"]
        lines.append(f"  {'probe':<14} {'rank':<8} {'metric':<28} {'value':>9} {'null':>9} {'p':>7} {'n':>8}")
        for row in m.itertuples(index=False):
            null = getattr(row, "null_mean", np.nan)
            p = getattr(row, "p_value", np.nan)
            extra = "".join(f" {k}={getattr(row, k)}" for k in ("split", "height", "level", "method", "target")
                            if k in m.columns and isinstance(getattr(row, k), str) and getattr(row, k))
            lines.append(f"  {row.probe:<14} {row.rank:<8} {(row.metric + extra)[:28]:<28} {row.value:>9.4g} "
                         f"{'' if pd.isna(null) else f'{null:.4g}':>9} {'' if pd.isna(p) else f'{p:.3g}':>7} {row.n:>8}")
        for name, reason in self.info.get("skipped", {}).items():
            lines.append(f"  skipped {name}: {reason}")
        lines.append(f"wrote {self.out}")
        return "\n".join(lines)


def list_probes() -> str:
    """One line per probe: name and what it measures."""
    width = max(len(n) for n in PROBES)
    return "\n".join(f"{name:<{width}}  {spec.description}" for name, spec in PROBES.items())


def load_probe_data(cache_path: "str | os.PathLike[str]", *, clade: "tuple[Rank, str] | None" = None
                    ) -> tuple[ProbeData, Any]:
    """Probe data from a cache: L2-normalised embeddings of the rows labelled at species.

    Returns
    -------
    tuple
        ``(ProbeData, Provenance)``.
    """
    from latent.cache import open_cache

    with open_cache(cache_path) as cache:
        taxonomy = cache.taxonomy()
        keep = taxonomy.labelled(Rank.SPECIES)
        if clade is not None:
            keep &= taxonomy.clade_mask(*clade)
        rows = np.flatnonzero(keep)
        if not len(rows):
            where = "" if clade is None else f" in the clade {clade[0].label}={clade[1]}"
            raise InputError(f"{cache_path} has no images labelled at species{where}: nothing to probe "
                             f"(see `latent info {cache_path}`).")
        X = cache.read(rows, normalize=True)
        ids = np.asarray(cache.ids)[rows]
        provenance = cache.provenance
    return ProbeData.from_arrays(X, taxonomy.select_rows(rows), ids), provenance


def _aligned_baseline(data: ProbeData, path: "str | os.PathLike[str]") -> ProbeData:
    """The baseline cache's embeddings of the same images (by id), in the same order."""
    from latent.cache import open_cache

    with open_cache(path) as cache:
        ids = np.asarray(cache.ids).astype(str)
        position = {i: k for k, i in enumerate(ids)}
        missing = [i for i in data.ids if i not in position]
        if missing:
            raise InputError(f"The baseline cache {path} lacks {len(missing)} of the {len(data.ids)} probed images "
                             f"(first: {', '.join(missing[:5])}); it must hold the same images (same ids).")
        rows = np.asarray([position[i] for i in data.ids])
        order = np.argsort(rows)
        X = np.empty((len(rows), cache.dim), dtype=np.float32)
        X[order] = cache.read(rows[order], normalize=True)
    return ProbeData.from_arrays(X, data.taxonomy, data.ids)


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


def probe_cache(
    cache_path: "str | os.PathLike[str]",
    out: "str | os.PathLike[str]",
    *,
    probes: "str | list[str] | None" = None,
    options: "ProbeOptions | None" = None,
    baseline: "str | os.PathLike[str] | None" = None,
    clade: "str | tuple[Rank, str] | None" = None,
) -> ProbeReport:
    """Run probes on a cache and write the tables (see the module docstring).

    Parameters
    ----------
    cache_path
        An embedding cache.
    out
        Output folder (created).
    probes
        Probe names (``"a,b"`` or a list; default every probe, see :data:`latent.probes.PROBES`).
    options
        Shared settings (distance, permutations, sample limits, seed, device, per-probe settings).
    baseline
        Optional cache of baseline features (same image ids), probed the same way.
    clade
        ``"RANK=NAME"`` or ``(Rank, name)``: probe only this clade's images.

    Returns
    -------
    ProbeReport
    """
    from latent.evaluate import parse_clade

    names = parse_probes(probes)
    options = options or ProbeOptions()
    unknown = [k for k in options.extra if k not in PROBES]
    if unknown:
        raise InputError(f"Settings were given for unknown probe(s) {', '.join(unknown)}; probes: {', '.join(PROBES)}.")
    clade_spec = parse_clade(clade) if isinstance(clade, str) else clade
    start = time.perf_counter()
    out = Path(out)
    data, provenance = load_probe_data(cache_path, clade=clade_spec)
    feature_sets = [("model", data, "")]
    if baseline is not None:
        feature_sets.append(("baseline", _aligned_baseline(data, baseline), "_baseline"))
    out.mkdir(parents=True, exist_ok=True)
    log.info("probing %s: %d images, %d species, probes %s", cache_path, len(data.X), data.n_species, ", ".join(names))

    frames: list[pd.DataFrame] = []
    files: list[Path] = []
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
            frames.append(results_frame(result.to_frame(), features=features))
            files += _save_result(result, out, suffix)
            notes[key] = jsonable(dict(result.info))
    if not frames:
        raise InputError("No probe could run on this data: " + "; ".join(f"{k}: {v}" for k, v in skipped.items()))

    species = data.taxonomy.species_table()
    species.insert(0, "label", data.taxonomy.species_labels())
    species["images"] = data.counts
    species.to_csv(out / "species.csv", index=False)
    files.append(out / "species.csv")
    info = {
        "command": "probe", "cache": str(Path(cache_path).resolve()),
        "baseline": None if baseline is None else str(Path(baseline).resolve()),
        "clade": None if clade_spec is None else f"{clade_spec[0].label}={clade_spec[1]}",
        "probes": names, "options": jsonable(asdict(options)), "n_images": int(len(data.X)),
        "n_species": data.n_species, "dim": int(data.X.shape[1]),
        "model": provenance.model, "pretrained": provenance.pretrained, "preprocess": provenance.preprocess,
        "latent_version": __version__, "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "seconds": round(time.perf_counter() - start, 2), "probe_seconds": timings, "skipped": skipped,
        "probe_info": notes,
    }
    with open(out / "run.json", "w", encoding="utf-8") as handle:
        json.dump(info, handle, indent=2, sort_keys=True, default=str)
    files.append(out / "run.json")
    metrics = results_frame(pd.concat(frames, ignore_index=True), model=provenance.model)
    files.insert(0, write_results(metrics, out / "metrics.csv"))
    report = ProbeReport(out, metrics, files, info)
    log.info("%s", report.summary())
    return report
