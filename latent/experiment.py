"""``latent run CONFIG`` and ``latent demo``: one experiment end to end, from data to report.

An experiment is a YAML file (see ``experiments/``)::

    name: cub10                          # results go to <results>/<name>/
    description: ...
    seed: 0
    data:                                # exactly one of:
      import: {embeddings: PATH, metadata: PATH, id_column: path, taxonomy: PATH, join_on: species=cub_class}
      images: {source: DIR_OR_MANIFEST, taxonomy: PATH, join_on: folder=cub_class}   # embedded per model
      synth: {signal: [0, 0.5, 2], per_species: 20, dim: 64, noise: 1.0, taxonomy: PATH (optional)}
    models: [bioclip-2, bioclip, clip-vit-l-14]   # with data.images (names of `latent models`)
    baseline: random-vit-l-14            # optional: a random-features model, probed next to every model
    evaluate: [{method: linear, split: random}, {method: knn, split: species-disjoint}]
    probe: {probes: [distances, clusters], permutations: 199, distance: cosine, settings: {dendrogram: {method: ward}}}
    report: {projections: [pca, umap], n_boot: 1000}

Paths are relative to the config file's folder; ``${LATENT_SHARED_DATA}`` expands to that environment
variable, or to ``../shared/data`` beside the repository when it is unset. Steps run in the order
data -> caches -> evaluate -> probe -> figures -> report, into ``<results>/<name>/``: ``config.yaml``
(the config as run), ``versions.json`` (latent version, git commit, Python and package versions),
``caches/``, and the report folder (``report.html``, ``report.md``, ``figures/``, ``runs/``). Every step
(the data step included) is reused or re-run by the one rule of :mod:`latent.pipeline`: reused when its
run record holds the same identity (every parameter, the identity of every input file, the latent
version), unless ``force``. Changing ``a.npy`` to ``b.npy``, editing it, or changing any parameter of
the data step re-runs the data step and every step after it. ``<results>/<name>/`` is locked for the
whole run (a second ``latent run`` of the same experiment is refused).
"""

from __future__ import annotations

import json
import logging
import os
import platform
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping

from latent._version import __version__
from latent.errors import InputError
from latent.pipeline import atomic_write_text, check_out, folder_lock, git_commit, make_caches

__all__ = ["load_config", "run_experiment", "run_demo", "ExperimentResult"]

log = logging.getLogger(__name__)

_TOP_KEYS = {"name", "description", "seed", "data", "models", "baseline", "evaluate", "probe", "report"}
_DATA_KINDS = ("import", "images", "synth")
#: The keys of each data step (all part of its identity, see :mod:`latent.pipeline`) and the required ones.
_DATA_KEYS = {"import": ({"embeddings", "metadata", "id_column", "taxonomy", "join_on", "model", "pretrained",
                          "embedding_column", "on_conflict", "on_genus_mismatch"},
                         {"embeddings"}),
              "images": ({"source", "taxonomy", "join_on", "path_column", "batch_size", "layers"}, {"source"}),
              "synth": ({"signal", "per_species", "dim", "noise", "taxonomy", "branching"}, set())}


@dataclass(frozen=True)
class ExperimentResult:
    """Where an experiment's outputs are."""

    name: str
    out: Path
    caches: list[Path]
    report: Any

    def summary(self) -> str:
        return f"experiment {self.name}: {len(self.caches)} cache(s) in {self.out / 'caches'}\n{self.report.summary()}"


def load_config(path: "str | os.PathLike[str]") -> dict[str, Any]:
    """Read and check an experiment config (clear errors naming the bad key)."""
    import yaml

    path = Path(path)
    if not path.exists():
        raise InputError(f"Experiment config {path} not found (see experiments/ for examples).")
    try:
        config = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as e:
        raise InputError(f"{path} is not valid YAML: {e}") from None
    if not isinstance(config, dict):
        raise InputError(f"{path} must hold a mapping with at least 'name' and 'data'.")
    unknown = sorted(set(config) - _TOP_KEYS)
    if unknown:
        raise InputError(f"{path}: unknown key(s) {', '.join(unknown)}; allowed: {', '.join(sorted(_TOP_KEYS))}.")
    name = config.get("name")
    if not isinstance(name, str) or not re.fullmatch(r"[A-Za-z0-9._-]+", name or ""):
        raise InputError(f"{path}: 'name' must be a non-empty string of letters, digits, '.', '_' or '-'; "
                         f"got {name!r}.")
    data = config.get("data")
    if not isinstance(data, dict) or len(data) != 1 or next(iter(data)) not in _DATA_KINDS:
        raise InputError(f"{path}: 'data' must have exactly one of {', '.join(_DATA_KINDS)}; got "
                         f"{list(data) if isinstance(data, dict) else data!r}.")
    if "images" in data and not config.get("models"):
        raise InputError(f"{path}: data.images needs a 'models' list (e.g. [bioclip-2, bioclip, clip-vit-l-14]).")
    kind, spec = next(iter(data.items()))
    if spec is not None and not isinstance(spec, dict):
        raise InputError(f"{path}: data.{kind} must be a mapping of settings; got {spec!r}.")
    allowed, required = _DATA_KEYS[kind]
    unknown = sorted(set(spec or {}) - allowed)
    if unknown:
        raise InputError(f"{path}: unknown data.{kind} setting(s) {', '.join(map(str, unknown))}; allowed: "
                         f"{', '.join(sorted(allowed))}.")
    absent = sorted(required - set(spec or {}))
    if absent:
        raise InputError(f"{path}: data.{kind} needs {', '.join(absent)}.")
    for i, ev in enumerate(config.get("evaluate") or []):
        if not isinstance(ev, dict) or "method" not in ev:
            raise InputError(f"{path}: evaluate[{i}] must be a mapping with 'method' (and optionally 'split').")
    config["_base"] = str(path.resolve().parent)
    config["_path"] = str(path.resolve())
    return config


def _versions() -> dict[str, Any]:
    from importlib import metadata

    packages = {}
    for name in ("numpy", "scipy", "scikit-learn", "pandas", "h5py", "torch", "open_clip_torch", "matplotlib",
                 "umap-learn", "geoopt", "scikit-bio"):
        try:
            packages[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            packages[name] = None
    return {"latent": __version__, "git_commit": git_commit(), "python": platform.python_version(),
            "platform": platform.platform(), "packages": packages}


def _report_settings(config: Mapping[str, Any]) -> Any:
    from latent.pipeline import ReportSettings

    probe = dict(config.get("probe") or {})
    report = dict(config.get("report") or {})
    known_probe = {"probes", "permutations", "distance", "max_images", "max_pairs", "settings"}
    known_report = {"projections", "n_boot", "max_projection_points", "device", "verdict_permutations", "common_dim",
                    "layers", "slides"}
    for key, known, where in ((set(probe) - known_probe, known_probe, "probe"),
                              (set(report) - known_report, known_report, "report")):
        if key:
            raise InputError(f"Unknown {where} setting(s) {', '.join(sorted(key))}; allowed: {', '.join(sorted(known))}.")
    evaluations = tuple((e["method"], e.get("split", "random")) for e in (config.get("evaluate") or []))
    kwargs: dict[str, Any] = {"evaluations": evaluations, "seed": int(config.get("seed", 0))}
    if probe.get("probes"):
        kwargs["probes"] = tuple(probe["probes"])
    for key in ("permutations", "distance", "max_images", "max_pairs"):
        if key in probe:
            kwargs[key] = probe[key]
    if probe.get("settings"):
        kwargs["probe_settings"] = probe["settings"]
    if "projections" in report:
        kwargs["projections"] = tuple(report["projections"])
    for key in ("n_boot", "max_projection_points", "device", "verdict_permutations", "common_dim", "layers", "slides"):
        if key in report:
            kwargs[key] = report[key]
    return ReportSettings(**kwargs)


def run_experiment(config_path: "str | os.PathLike[str]", *, results: "str | os.PathLike[str]" = "results",
                   force: bool = False) -> ExperimentResult:
    """Run one experiment config end to end (see the module docstring).

    Parameters
    ----------
    config_path
        The YAML config.
    results
        Results root; outputs go to ``results/<name>/``.
    force
        Recompute every step (see :mod:`latent.pipeline` for the reuse rule).

    Returns
    -------
    ExperimentResult

    Raises
    ------
    InputError
        A bad config, or ``results/<name>`` holds something else (a file, another kind of latent output).
    CacheError
        Another latent process is running this experiment (``results/<name>/.latent.lock`` is held).
    """
    import yaml

    from latent.report import build_report

    config = load_config(config_path)
    settings = _report_settings(config)  # checked before anything runs
    out = Path(results) / config["name"]
    check_out(out, "experiment", param="--results")
    check_out(out / "report", "report", param="--results")
    with folder_lock(out, "experiment", param="--results"):
        clean = {k: v for k, v in config.items() if not k.startswith("_")}
        atomic_write_text(out / "config.yaml", f"# run from {config['_path']}\n" + yaml.safe_dump(clean, sort_keys=False))
        atomic_write_text(out / "versions.json", json.dumps(_versions(), indent=2, sort_keys=True))
        caches, baseline = make_caches(config, out, force)
        report = build_report(caches, out / "report", settings=settings, baseline=baseline, force=force)
    return ExperimentResult(config["name"], out, caches, report)


#: The demo's experiment: synthetic data with and without a planted hierarchy on a balanced taxonomy with
#: enough taxa under each parent for every rank from class to species to be tested (the built-in one has
#: too few at several ranks: those would be honestly "no" or "not testable" even with a planted hierarchy).
DEMO_CONFIG = {
    "name": "demo",
    "description": "Synthetic embeddings on a balanced taxonomy (144 species: 2 classes x 6 orders x 3 families x "
                   "2 genera x 2 species): a planted hierarchy (signal 1.5) against none (signal 0). Offline, "
                   "no weights.",
    "seed": 0,
    "data": {"synth": {"signal": [1.5, 0.0], "per_species": 6, "dim": 32, "branching": [1, 1, 2, 6, 3, 2, 2]}},
    "evaluate": [{"method": "linear", "split": "random"}, {"method": "knn", "split": "species-disjoint"}],
    "probe": {"permutations": 99, "settings": {"separability": {"permutations": 4},
                                                 "hyperbolic_fit": {"steps": 300, "dims": [2, 8]}}},
    "report": {"projections": ["pca", "umap"], "n_boot": 200},
}


def run_demo(out: "str | os.PathLike[str]", *, force: bool = False) -> ExperimentResult:
    """The newcomer's first command: the demo experiment (:data:`DEMO_CONFIG`) into ``out``."""
    import yaml

    with folder_lock(out, "demo") as out:
        config = atomic_write_text(out / "demo.yaml", yaml.safe_dump(DEMO_CONFIG, sort_keys=False))
        return run_experiment(config, results=out, force=force)
