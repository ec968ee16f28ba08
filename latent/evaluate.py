"""``latent evaluate``: predictions at every rank from a cache, then per-rank and hierarchical metrics.

cache -> (split) -> predictor -> :class:`~latent.predictions.Predictions` -> metrics with species-bootstrap
CIs -> ``DIR/metrics.csv`` (the shared long format, with ``n_species``, ``n_taxa``, ``ci_note`` and
``note``: every rule is stated once in :mod:`latent.metrics`), ``DIR/predictions.parquet``, the
mistake-severity histogram, the first-divergence distribution, the most confused pairs, and
``DIR/run.json`` (what was run, on which cache, with which seeds).

Zero-shot multiplies cosine similarities by the model's own learned logit scale, recorded with the text
embeddings by ``latent embed-text`` (:func:`latent.text.text_logit_scale`); text embedded by an older
latent falls back to CLIP's 100, logged and written to ``run.json`` (``logit_scale_source``).
"""

from __future__ import annotations

import json
import logging
import os
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from latent._version import __version__
from latent.errors import InputError
from latent.ranks import RANK_NAMES, Rank, parse_rank
from latent.results import jsonable, results_frame, write_results

__all__ = ["METHODS", "SPLITS", "EvaluateReport", "evaluate_cache", "parse_clade"]

log = logging.getLogger(__name__)

METHODS = ("zero-shot", "linear", "knn", "centroid")
SPLITS = ("random", "species-disjoint")
MODES = ("flat", "per-rank")


@dataclass(frozen=True)
class EvaluateReport:
    """What ``evaluate_cache`` wrote and the headline numbers (``metrics`` in the long format)."""

    out: Path
    metrics: pd.DataFrame
    files: list[Path] = field(default_factory=list)
    info: dict[str, Any] = field(default_factory=dict)

    def summary(self) -> str:
        m = self.metrics
        if "fold" in m.columns:
            m = m[m["fold"].astype(str) == "mean"]
        lines = [f"{self.info.get('method')} ({self.info.get('mode')}, split {self.info.get('split')}) on "
                 f"{self.info.get('cache')}: {self.info.get('n_test')} test images"]
        lines.append(f"  {'rank':<8} {'top1':>22} {'top5':>8} {'bal.acc':>8} {'macroF1':>8} {'n':>7} {'classes':>7}")
        short_lists: list[str] = []
        for rank in RANK_NAMES:
            rows = m[m["rank"] == rank].set_index("metric")
            if "top1" not in rows.index:
                lines.append(f"  {rank:<8} not predicted (fewer than 2 classes to learn, or not predictable on this split)")
                continue

            def v(name: str) -> str:
                if name not in rows.index:
                    return "-"
                flagged = name == "top5" and "fewer than" in _text(rows.loc[name].get("note"))
                short_lists.extend([rank] if flagged else [])
                return f"{rows.loc[name, 'value']:.3f}" + ("*" if flagged else "")

            t1 = rows.loc["top1"]
            lines.append(
                f"  {rank:<8} {_with_ci(t1):>22} {v('top5'):>8} "
                f"{v('balanced_accuracy'):>8} {v('macro_f1'):>8} {int(t1['n']):>7} "
                f"{int(rows.loc['n_classes', 'value']) if 'n_classes' in rows.index else '-':>7}"
                + (f"  ({t1['note']})" if _text(t1.get("note")) else "")
            )
        if short_lists:
            lines.append(f"  * top5 where some rows rank fewer than 5 taxa ({', '.join(short_lists)}): "
                         "see 'note' in metrics.csv")
        lines.append("  top5 '-': not reported (k < 5, or 5 or fewer candidate taxa: it would be trivially 1)")
        hier = m[m["rank"] == "all"].set_index("metric")
        parts = []
        for name in ("mistake_severity", "hdist@1", "hdist@5", "hF", "hca"):
            if name not in hier.index:
                continue
            r = hier.loc[name]
            if np.isfinite(r["value"]):
                parts.append(f"{name} {_with_ci(r)}")
            elif name == "mistake_severity":
                parts.append("mistake_severity - (no species mistakes)")
        if parts:
            lines.append("  hierarchy: " + "; ".join(parts))
        if "hF" in hier.index and _text(hier.loc["hF"].get("note")):
            lines.append(f"  hierarchy over informative ranks only: {hier.loc['hF', 'note']}")
        ci_notes = m["ci_note"] if "ci_note" in m.columns else []
        notes = sorted({_text(n) for n in ci_notes if _text(n).startswith("no CI: ") and "species (<" in _text(n)})
        if notes:
            lines.append(f"  {'; '.join(notes)}: images of a species are not independent, CIs resample species")
        excluded = self.info.get("unlabelled_species")
        if excluded:
            lines.append(f"  {excluded} test rows without a species label are excluded from species metrics")
        lines.append(f"  wrote {', '.join(str(p.name) for p in self.files)} to {self.out}")
        return "\n".join(lines)


def _text(value: Any) -> str:
    """A note cell as text (NaN and None read back from CSV as ``""``)."""
    return value if isinstance(value, str) else ""


def _with_ci(row: pd.Series) -> str:
    """``"0.812 [0.790, 0.833]"``, or ``"0.812 (no CI)"`` where the row has none."""
    if np.isfinite(row["ci_low"]) and np.isfinite(row["ci_high"]):
        return f"{row['value']:.3f} [{row['ci_low']:.3f}, {row['ci_high']:.3f}]"
    return f"{row['value']:.3f} (no CI)"


def parse_clade(text: "str | None") -> "tuple[Rank, str] | None":
    """``"class=Insecta"`` -> ``(Rank.CLASS, "Insecta")`` (a lineage ``A;B;C`` is allowed as the name)."""
    if text is None:
        return None
    rank, sep, name = text.partition("=")
    if not sep or not name.strip():
        raise InputError(f"The 'clade' parameter must look like RANK=NAME (e.g. class=Insecta). Got {text!r} instead.")
    return parse_rank(rank.strip(), parameter="clade"), name.strip()


def _check(name: str, value: Any, allowed: tuple[str, ...]) -> None:
    if value not in allowed:
        raise InputError(f"The {name!r} parameter of evaluate must be one of {', '.join(allowed)}. Got {value!r} instead.")


def _text_for_zero_shot(cache, mode: str, form: str) -> tuple[dict[str, tuple[np.ndarray, np.ndarray]], float, str]:
    """Text embeddings per rank, and the logit scale recorded with them (and where it came from)."""
    from latent.text import text_logit_scale

    groups = set(cache.text_groups())
    ranks = ["species"] if mode == "flat" else list(RANK_NAMES)
    missing = [f"{r}/{form}" for r in ranks if f"{r}/{form}" not in groups]
    if missing:
        raise InputError(
            f"Zero-shot needs text embeddings {', '.join(missing)} in {cache.path}, which has "
            f"{', '.join(sorted(groups)) or 'none'}. Run `latent embed-text {cache.path}` first."
        )
    out = {}
    attrs = []
    for r in ranks:
        keys, emb, group_attrs = cache.read_text_group(f"{r}/{form}")
        out[r] = (keys, emb)
        attrs.append(group_attrs)
    scale, source = text_logit_scale(attrs, where=str(cache.path))
    return out, scale, source


def evaluate_cache(
    cache_path: "str | os.PathLike[str]",
    out: "str | os.PathLike[str]",
    *,
    method: str = "linear",
    mode: "str | None" = None,
    split: str = "random",
    shots: int = 5,
    folds: int = 5,
    seed: int = 0,
    clade: "str | tuple[Rank, str] | None" = None,
    test_fraction: float = 0.3,
    k_neighbors: int = 20,
    temperature: float = 0.07,
    text_form: str = "taxon",
    n_boot: int = 1000,
    device: str = "auto",
) -> EvaluateReport:
    """Evaluate one predictor on a cache and write the tables.

    Parameters
    ----------
    cache_path
        An embedding cache (``latent embed``/``import``/``synth``).
    out
        Output folder (created).
    method
        ``zero-shot`` (needs ``latent embed-text``), ``linear``, ``knn`` or ``centroid`` (k-shot).
    mode
        ``flat`` (species scores summed up the tree; the zero-shot default, as pybioclip does) or
        ``per-rank`` (each rank predicted directly; the default of the trained predictors).
    split
        ``random`` (stratified by species) or ``species-disjoint`` (test species never seen in
        training: the species rank is not predicted, higher ranks are). Not used by zero-shot.
    shots, folds
        Support images per species and number of seeded folds for ``centroid``.
    seed
        Seed of the split, the probes and the bootstrap.
    clade
        ``"RANK=NAME"``: only images of that clade, and only its taxa as candidates.
    n_boot
        Bootstrap resamples for the 95% confidence intervals. Each resample draws whole species (a
        cluster bootstrap); below :data:`latent.stats.MIN_CLUSTERS` test species no CI is given.

    Returns
    -------
    EvaluateReport
    """
    from latent.cache import open_cache
    from latent.metrics import evaluate_predictions
    from latent.predictors import predict_centroid, predict_knn, predict_linear, predict_zero_shot
    from latent.splits import kshot_split, random_split, species_disjoint_split

    _check("method", method, METHODS)
    _check("split", split, SPLITS)
    mode = mode or ("flat" if method == "zero-shot" else "per-rank")
    _check("mode", mode, MODES)
    if split == "species-disjoint" and mode == "flat" and method != "zero-shot":
        raise InputError("A species-disjoint split cannot use --mode flat: the test species were never seen, so "
                         "a species classifier cannot be mapped up the tree. Use --mode per-rank.")
    clade_spec = parse_clade(clade) if isinstance(clade, str) else clade
    start = time.perf_counter()
    out = Path(out)
    with open_cache(cache_path) as cache:
        taxonomy = cache.taxonomy()
        rows = np.flatnonzero(taxonomy.labelled(Rank.KINGDOM) | taxonomy.labelled(Rank.SPECIES))
        if clade_spec is not None:
            rows = np.intersect1d(rows, np.flatnonzero(taxonomy.clade_mask(*clade_spec)))
            if not len(rows):
                raise InputError(f"The clade {clade_spec[0].label}={clade_spec[1]} has no labelled images in {cache_path}.")
        if not len(rows):
            raise InputError(f"{cache_path} has no labelled rows: nothing to evaluate (see latent info).")
        provenance = cache.provenance
        ids = cache.ids
        X_all = cache.read(rows, normalize=True)
        position = {int(r): i for i, r in enumerate(rows)}
        text, logit_scale, scale_source = (_text_for_zero_shot(cache, mode, text_form) if method == "zero-shot"
                                           else (None, None, None))

    def features(subset: np.ndarray) -> np.ndarray:
        return X_all[[position[int(r)] for r in subset]]

    predict_species = split != "species-disjoint"
    runs: list[tuple[str, Any]] = []
    if method == "zero-shot":
        runs.append(("", predict_zero_shot(X_all, rows, taxonomy, text, mode=mode, clade=clade_spec, ids=ids,
                                           logit_scale=logit_scale)))
    elif method == "centroid":
        for fold in range(folds):
            support, query = kshot_split(taxonomy, rows, shots=shots, fold=fold, seed=seed)
            runs.append((str(fold), predict_centroid(features(support), support, features(query), query, taxonomy, mode=mode, ids=ids)))
    else:
        splitter = random_split if split == "random" else species_disjoint_split
        train, test = splitter(taxonomy, rows, test_fraction=test_fraction, seed=seed)
        if method == "linear":
            pred = predict_linear(features(train), train, features(test), test, taxonomy, mode=mode, seed=seed,
                                  device=device, predict_species=predict_species, ids=ids)
        else:
            pred = predict_knn(features(train), train, features(test), test, taxonomy, k_neighbors=k_neighbors,
                               temperature=temperature, mode=mode, predict_species=predict_species, ids=ids)
        runs.append(("", pred))

    tables: dict[str, list[pd.DataFrame]] = {"metrics": [], "severity": [], "divergence": [], "confusions": [], "predictions": []}
    for fold, pred in runs:
        result = evaluate_predictions(pred, n_boot=n_boot, seed=seed)
        extra = {"fold": fold} if fold else {}
        tables["metrics"].append(result.metrics.assign(**extra))
        tables["severity"].append(result.severity_histogram.assign(**extra))
        tables["divergence"].append(result.divergence.assign(**extra))
        tables["confusions"].append(result.confusions.assign(**extra))
        tables["predictions"].append(pred.to_frame().assign(**extra))
    metrics = pd.concat(tables["metrics"], ignore_index=True)
    if method == "centroid":
        # Mean over folds (each fold has its own bootstrap CI; the mean row averages values and bounds,
        # and counts; a bound missing in any fold is missing in the mean; notes of the folds are joined).
        grouped = metrics.groupby(["rank", "metric"], sort=False)
        numeric = grouped[["value", "ci_low", "ci_high", "n", "n_species", "n_taxa"]].mean()
        missing = grouped[["ci_low", "ci_high"]].agg(lambda x: x.isna().any())
        numeric[["ci_low", "ci_high"]] = numeric[["ci_low", "ci_high"]].mask(missing)
        for column in ("ci_note", "note"):
            numeric[column] = grouped[column].agg(lambda x: "; ".join(dict.fromkeys(v for v in x if _text(v))))
        numeric = numeric.reset_index()
        numeric["fold"] = "mean"
        metrics = pd.concat([metrics, numeric], ignore_index=True)
    first = runs[0][1]
    n_test = int(sum(p.n for _, p in runs))
    info = {
        "command": "evaluate", "cache": str(Path(cache_path).resolve()), "method": method, "mode": mode,
        "split": split if method != "zero-shot" else "none", "shots": shots if method == "centroid" else None,
        "folds": folds if method == "centroid" else None, "seed": seed, "n_boot": n_boot,
        "clade": None if clade_spec is None else f"{clade_spec[0].label}={clade_spec[1]}",
        "test_fraction": test_fraction, "k_neighbors": k_neighbors, "temperature": temperature,
        "text_form": text_form if method == "zero-shot" else None, "n_test": n_test,
        "logit_scale": logit_scale, "logit_scale_source": scale_source,
        "n_species": int(np.unique(first.true[first.true[:, Rank.SPECIES] >= 0, Rank.SPECIES]).size),
        "bootstrap_unit": "species",
        "unlabelled_species": int(sum(int((p.true[:, Rank.SPECIES] < 0).sum()) for _, p in runs)),
        "model": provenance.model, "pretrained": provenance.pretrained, "preprocess": provenance.preprocess,
        "latent_version": __version__, "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "seconds": round(time.perf_counter() - start, 2), "predictor_info": jsonable(first.info),
    }
    metrics = results_frame(metrics, method=method, mode=mode, split=info["split"], model=provenance.model)
    out.mkdir(parents=True, exist_ok=True)
    files = [write_results(metrics, out / "metrics.csv")]
    predictions = pd.concat(tables["predictions"], ignore_index=True)
    tmp = out / "predictions.parquet.tmp"
    predictions.to_parquet(tmp, index=False)
    os.replace(tmp, out / "predictions.parquet")
    files.append(out / "predictions.parquet")
    for name in ("severity", "divergence", "confusions"):
        frame = pd.concat(tables[name], ignore_index=True)
        path = out / f"{name}.csv"
        frame.to_csv(path, index=False)
        files.append(path)
    with open(out / "run.json", "w", encoding="utf-8") as handle:
        json.dump(info, handle, indent=2, sort_keys=True, default=str)
    files.append(out / "run.json")
    report = EvaluateReport(out, metrics, files, info)
    log.info("%s", report.summary())
    return report
