"""The steps of ``latent run``, ``latent report`` and ``latent demo``, and the one rule that decides reuse.

Steps: the data step (``data.import`` / ``data.synth`` / ``data.images`` of an experiment, each making one
embedding cache), then per cache the evaluations, the probes and the 2-D projections of a report
(:func:`run_report_steps`), and the report's model-vs-model comparisons (:func:`comparison_step`); the
report then only renders their results (:func:`latent.report.render_report`).

**The reuse rule** (stated here once; :mod:`latent.report` and :mod:`latent.experiment` point here).

A step's *identity* is a JSON document of the step kind, every parameter of the step, the identity of
every input file and the latent version (:func:`step_identity`). The identity of a file
(:func:`file_identity`) is its resolved path and size, plus the sha256 of its contents when it is at most
:data:`HASH_LIMIT` bytes (64 MiB), else its modification time in nanoseconds. That covers the data step's
source files (embeddings, metadata, taxonomy tables, a manifest) and the embedding caches the later steps
read. (A file above 64 MiB edited in place with its size and modification time kept is not seen: pass
``--force``; hashing gigabytes on every run would cost more than the steps it saves.) A folder of images
is identified by its resolved path; new images in it are embedded by the embed step's resume (and the
cache then changes, so every later step re-runs); images removed from it stay in the cache until
``--force``.

Output names derive from the parameters (as before, readable: ``evaluate-knn-random-seed0-boot1000``);
the identity is stored in a *run record* and compared on reuse: ``step.json`` inside a result folder, or
``<file>.step.json`` beside a result file (a cache, a projection table), which also records the file's
size, modification time and inode. A step is reused when its record holds the same identity (and, for a
file, the file is the one recorded) and ``force`` is not given; otherwise it is recomputed and replaces
the old output. Changing ``a.npy`` to ``b.npy`` (or editing ``a.npy``, or any parameter of the import)
thus re-runs the import, which changes the cache, which re-runs every step reading it.

Every output is written atomically: computed into a temporary sibling ``.<name>.tmp-<pid>``, the run
record written last, then renamed into place; the old record of a file output is removed before the
file is replaced. A folder without its record (a crash, a kill) is never reused. The embed step is the
exception that resumes inside the cache (an embedding run can take hours): its record is written with
``"complete": false`` before it starts, so an interrupted run of the same identity resumes and a changed
identity rebuilds the cache (``force``), never mixing the two.

Two writers on one output folder: :func:`folder_lock` (``fcntl.flock`` on ``<out>/.latent.lock``,
non-blocking) is held by ``build_report``, ``run_experiment`` and ``run_demo`` for the whole run; a second
process is refused at once naming the first one's pid. Temporary names carry the pid; leftovers of
crashed runs (``.<name>.tmp-<pid>``, ``.<name>.old-<pid>``) are removed by the next lock holder.
"""

from __future__ import annotations

import contextlib
import errno
import glob
import hashlib
import json
import logging
import os
import re
import shutil
import subprocess
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable, Iterator, Mapping

import numpy as np

from latent._version import __version__
from latent.errors import CacheError, InputError, ResourceError
from latent.ranks import RANK_NAMES
from latent.verdict import PRIMARY, PRIMARY_ALL

__all__ = ["ReportSettings", "PRIMARY_PROBES", "HASH_LIMIT", "RECORD", "LOCK", "file_identity", "step_identity",
           "is_current", "run_folder_step", "run_file_step", "folder_lock", "check_out", "atomic_write_text",
           "make_caches", "evaluate_steps", "probe_step", "projection_steps", "model_folder", "short_hash",
           "run_report_steps", "comparison_step", "emergence_step", "git_commit"]

log = logging.getLogger(__name__)

#: Files up to this size are identified by the sha256 of their contents (larger ones by size and mtime).
HASH_LIMIT = 64 * 2**20
#: The run record of a result folder (beside a result file: ``<file>.step.json``).
RECORD = "step.json"
#: The lock file of an output folder.
LOCK = ".latent.lock"
#: Probes that hold the primary statistics: always run by a report.
PRIMARY_PROBES = (PRIMARY[0], PRIMARY_ALL[0])

_LEFTOVER = re.compile(r"^\..+\.(tmp|old)-\d+(\..+)?$")


@dataclass(frozen=True)
class ReportSettings:
    """What the report computes (every field is part of a step's identity, see :mod:`latent.pipeline`).

    Attributes
    ----------
    evaluations
        ``(method, split)`` pairs for ``latent evaluate``.
    probes
        Probe names (None: all).
    permutations, distance, seed, max_images, max_pairs, probe_settings
        ``latent probe`` options (see :class:`latent.probes.base.ProbeOptions`).
    n_boot
        Bootstrap resamples of the evaluation CIs.
    projections
        2-D projection methods (``"pca"``, ``"umap"``).
    max_projection_points
        Images drawn in a projection (a seeded sample above it).
    device
        Device for torch steps.
    verdict_permutations
        Restricted permutations of the primary statistic per rank (``levels`` probe; its own
        ``probe_settings["levels"]["permutations"]`` wins when given).
    common_dim
        Compare models at a common dimension (PCA to the smallest), see :mod:`latent.compare`.
    layers
        Also run :func:`latent.layers.emergence_from_cache` on every cache that holds per-layer embeddings
        (``latent embed --layers``), with ``permutations`` restricted permutations per layer, and draw where
        in the network each rank appears (every such model on the same axes).
    slides
        Also write ``figures/slides.pdf`` (16:9, a title page with the data and the answer, then one figure
        per page; :mod:`latent.slides`). Rendering only: not part of any step's identity.
    """

    evaluations: tuple[tuple[str, str], ...] = (("linear", "random"), ("knn", "species-disjoint"))
    probes: "tuple[str, ...] | None" = None
    permutations: int = 199
    distance: str = "cosine"
    seed: int = 0
    max_images: int = 5_000
    max_pairs: int = 2_000_000
    probe_settings: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)
    n_boot: int = 1000
    projections: tuple[str, ...] = ("pca", "umap")
    max_projection_points: int = 20_000
    device: str = "auto"
    verdict_permutations: int = 999
    common_dim: bool = True
    layers: bool = False
    slides: bool = False

    def __post_init__(self) -> None:
        # Checked before any step runs (a YAML ``latent run`` config or Python call gets the same one-line
        # errors as the command line, not a refusal halfway through after evaluations were written).
        from latent import validate
        from latent.evaluate import METHODS, SPLITS
        from latent.probes import parse_probes
        from latent.projection import PROJECTIONS

        of = "report"
        for method, split in self.evaluations:
            validate.choice("evaluations method", method, METHODS, of=of)
            validate.choice("evaluations split", split, SPLITS, of=of)
        if self.probes is not None:
            parse_probes(list(self.probes))
        validate.int_range("permutations", self.permutations, 0, validate.MAX_PERMUTATIONS, of=of)
        validate.int_range("verdict_permutations", self.verdict_permutations, 1, validate.MAX_PERMUTATIONS, of=of)
        validate.int_range("n_boot", self.n_boot, 0, validate.MAX_BOOTSTRAP, of=of)
        validate.int_range("seed", self.seed, 0, validate.MAX_SEED, of=of)
        validate.int_range("max_images", self.max_images, 2, None, of=of)
        validate.int_range("max_pairs", self.max_pairs, 1, None, of=of)
        validate.int_range("max_projection_points", self.max_projection_points, 2, None, of=of)
        validate.choice("distance", self.distance, ("cosine", "euclidean"), of=of)
        for method in self.projections:
            validate.choice("projections", method, PROJECTIONS, of=of)
        validate.device("device", self.device, of=of)
        validate.probe_settings(dict(self.probe_settings), name="probe_settings", of=of)
        if not isinstance(self.layers, bool):
            raise InputError(f"The report's 'layers' setting must be true or false. Got {self.layers!r}.")
        if not isinstance(self.common_dim, bool):
            raise InputError(f"The report's 'common_dim' setting must be true or false. Got {self.common_dim!r}.")


# ------------------------------------------------------------------------------ identities
def _json(value: Any) -> Any:
    """``value`` as it reads back from JSON (tuples -> lists, paths -> strings): what records compare."""
    return json.loads(json.dumps(value, sort_keys=True, default=str))


def short_hash(value: Any) -> str:
    """The first 8 hex digits of the sha256 of ``value``'s stable JSON."""
    return hashlib.sha256(json.dumps(value, sort_keys=True, default=str).encode()).hexdigest()[:8]


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def file_identity(path: "str | os.PathLike[str]", *, what: str = "input") -> dict[str, Any]:
    """The identity of an input file (see the module docstring).

    Parameters
    ----------
    path
        A file, or a folder (identified by its resolved path only).
    what
        What the file is, for the error message (``"data.import.embeddings"``).

    Returns
    -------
    dict
        ``path`` and ``size``, and ``sha256`` (files up to :data:`HASH_LIMIT` bytes) or ``mtime_ns``.

    Raises
    ------
    InputError
        The file does not exist.
    """
    resolved = Path(path).resolve()
    try:
        stat = resolved.stat()
    except FileNotFoundError:
        raise InputError(f"The {what} {str(path)!r} does not exist; check the path.") from None
    if resolved.is_dir():
        return {"path": str(resolved), "kind": "folder"}
    identity: dict[str, Any] = {"path": str(resolved), "size": stat.st_size}
    if stat.st_size <= HASH_LIMIT:
        identity["sha256"] = _sha256(resolved)
    else:
        identity["mtime_ns"] = stat.st_mtime_ns
    return identity


def step_identity(kind: str, params: Mapping[str, Any], inputs: Mapping[str, Any]) -> dict[str, Any]:
    """A step's identity: its kind, every parameter, its inputs' identities and the latent version.

    ``inputs`` maps names to :func:`file_identity` results (or None for an absent optional input).
    """
    return _json({"step": kind, "params": dict(params), "inputs": dict(inputs), "latent_version": __version__})


def _output_stat(path: Path) -> dict[str, int]:
    stat = path.stat()
    return {"size": stat.st_size, "mtime_ns": stat.st_mtime_ns, "ino": stat.st_ino}


def _differences(old: Any, new: Any, prefix: str = "") -> list[str]:
    """Dotted keys where two identities differ (for the log line that says why a step re-runs)."""
    if isinstance(old, dict) and isinstance(new, dict):
        out = []
        for key in sorted(set(old) | set(new)):
            out += _differences(old.get(key), new.get(key), f"{prefix}{key}.")
        return out
    return [] if old == new else [prefix.rstrip(".") or "identity"]


def _read_record(path: Path) -> "dict[str, Any] | None":
    try:
        record = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return record if isinstance(record, dict) and "identity" in record else None


def _sidecar(path: Path) -> Path:
    return path.with_name(path.name + ".step.json")


def _tmp_sibling(path: Path, tag: str = "tmp") -> Path:
    return path.with_name(f".{path.name}.{tag}-{os.getpid()}")


def is_current(target: Path, identity: Mapping[str, Any], *, folder: bool) -> bool:
    """Whether ``target`` (a result folder, or a file) holds a complete result of this identity.

    A folder is current when its ``step.json`` holds ``identity`` and every file it lists exists; a file
    when ``<file>.step.json`` holds ``identity`` and the file's size, mtime and inode are the recorded ones.
    """
    return _stale_reason(target, identity, folder=folder) is None


def _stale_reason(target: Path, identity: Mapping[str, Any], *, folder: bool) -> "str | None":
    """None when ``target`` is current, else why not (for the log)."""
    if not target.exists():
        return "missing"
    if folder:
        record = _read_record(target / RECORD) if target.is_dir() else None
        if record is None:
            return f"no {RECORD}: never finished"
    else:
        record = _read_record(_sidecar(target))
        if record is None:
            return "no run record"
        if record.get("output") != _output_stat(target):
            return "the file is not the one recorded"
    changed = _differences(record["identity"], _json(identity))
    if changed:
        return "changed: " + ", ".join(changed[:6]) + (" ..." if len(changed) > 6 else "")
    if folder and not all((target / name).exists() for name in record.get("files", [])):
        return "files missing"
    return None


def _write_json(path: Path, value: Mapping[str, Any]) -> None:
    atomic_write_text(path, json.dumps(value, indent=2, sort_keys=True, default=str))


def atomic_write_text(path: "str | os.PathLike[str]", text: str) -> Path:
    """Write ``text`` to ``path`` through ``.<name>.tmp-<pid>`` and a rename (never half-written)."""
    path = Path(path)
    tmp = _tmp_sibling(path)
    try:
        tmp.write_text(text, encoding="utf-8")
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return path


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        with contextlib.suppress(FileNotFoundError):
            path.unlink()


def _remove_tmp(tmp: Path) -> None:
    """Remove ``tmp`` and what a writer left beside it (``<tmp>.partial``, ...)."""
    for path in [tmp, *tmp.parent.glob(glob.escape(tmp.name) + ".*")]:
        _remove(path)


def _record(identity: Mapping[str, Any], **extra: Any) -> dict[str, Any]:
    return {"identity": _json(identity), "key": short_hash(identity), "pid": os.getpid(),
            "created": datetime.now(timezone.utc).isoformat(timespec="seconds"), **extra}


def _must_run(target: Path, identity: Mapping[str, Any], *, force: bool, folder: bool, what: str) -> bool:
    """The reuse rule for one step: False (logged "reusing") when ``target``'s record matches ``identity``."""
    why = "force" if force else _stale_reason(target, identity, folder=folder)
    if why is None:
        log.info("reusing %s (%s: same inputs and settings)", target, what)
        return False
    log.info("running %s into %s (%s)", what, target, why)
    return True


def run_folder_step(target: Path, identity: Mapping[str, Any], compute: Callable[[Path], Any], *, force: bool,
                    what: str) -> bool:
    """Reuse ``target`` (a result folder) if current, else compute it atomically.

    ``compute(tmp)`` writes the results into the folder ``tmp`` (a fresh ``.<name>.tmp-<pid>`` sibling);
    then ``step.json`` is written into it, and it is renamed onto ``target`` (an old ``target`` is
    renamed aside first and removed after).

    Returns
    -------
    bool
        True when the step ran, False when it was reused.
    """
    if not _must_run(target, identity, force=force, folder=True, what=what):
        return False
    tmp = _tmp_sibling(target)
    _remove(tmp)
    try:
        compute(tmp)
        tmp.mkdir(parents=True, exist_ok=True)
        files = sorted(p.relative_to(tmp).as_posix() for p in tmp.rglob("*") if p.is_file())
        _write_json(tmp / RECORD, _record(identity, files=files))
        if target.exists() or target.is_symlink():
            old = _tmp_sibling(target, "old")
            os.replace(target, old)
            os.replace(tmp, target)
            _remove(old)
        else:
            os.replace(tmp, target)
    finally:
        _remove_tmp(tmp)
    return True


def run_file_step(target: Path, identity: Mapping[str, Any], compute: Callable[[Path], Any], *, force: bool,
                  what: str) -> bool:
    """Reuse ``target`` (a result file) if current, else compute it atomically.

    ``compute(tmp)`` writes the file ``tmp`` (``.<name>.tmp-<pid>`` beside ``target``). The old run record
    is removed, ``tmp`` renamed onto ``target``, then ``<target>.step.json`` written (with the file's stat).

    Returns
    -------
    bool
        True when the step ran, False when it was reused.
    """
    if not _must_run(target, identity, force=force, folder=False, what=what):
        return False
    tmp = _tmp_sibling(target)
    _remove(tmp)
    try:
        compute(tmp)
        if not tmp.is_file():
            raise CacheError(f"The {what} step wrote no {tmp}; this is a bug in latent (please report it).")
        _sidecar(target).unlink(missing_ok=True)
        os.replace(tmp, target)
    finally:
        _remove_tmp(tmp)
    _write_json(_sidecar(target), _record(identity, output=_output_stat(target)))
    return True


# ------------------------------------------------------------------------------ output folders
def _lock_holder(lock: Path) -> dict[str, Any]:
    try:
        value = json.loads(lock.read_text(encoding="utf-8") or "{}")
    except (OSError, ValueError):
        return {}
    return value if isinstance(value, dict) else {}


def check_out(out: "str | os.PathLike[str]", kind: str, *, param: str = "--out") -> Path:
    """Refuse, before any work, an output folder that holds a different kind of thing.

    Parameters
    ----------
    out
        The folder (created later when missing).
    kind
        ``"report"``, ``"experiment"`` or ``"demo"``: what is written there.
    param
        The option that named it, for the message.

    Raises
    ------
    InputError
        ``out`` (or a folder above it) is a file; ``out`` holds another kind of latent output (its
        ``.latent.lock`` says so) or the results of ``latent evaluate`` / ``latent probe``.
    """
    out = Path(out)
    if out.exists() or out.is_symlink():
        if not out.is_dir():
            raise InputError(f"{param} {out} is a file, not a folder; give a folder for the {kind} "
                             "(it is created when missing).")
        held = _lock_holder(out / LOCK).get("kind")
        if held and held != kind:
            raise InputError(f"{param} {out} holds a latent {held}, not a {kind}; use another {param}.")
        if not held and (out / "run.json").exists() and (out / "metrics.csv").exists():
            raise InputError(f"{param} {out} holds the results of `latent evaluate` or `latent probe` "
                             f"(run.json, metrics.csv); use another {param} for the {kind}.")
        return out
    for parent in out.parents:
        if parent.exists():
            if not parent.is_dir():
                raise InputError(f"{param} {out}: {parent} is a file, not a folder; give another {param}.")
            break
    return out


_HELD: dict[str, list[Any]] = {}


@contextlib.contextmanager
def folder_lock(out: "str | os.PathLike[str]", kind: str, *, param: str = "--out") -> Iterator[Path]:
    """Hold ``<out>/.latent.lock`` (``fcntl.flock``, non-blocking) for a whole run; re-entrant in a process.

    The folder is checked with :func:`check_out` and created. Leftovers of crashed runs are removed by
    the steps themselves (see :func:`sweep_leftovers`).

    Raises
    ------
    CacheError
        Another process holds the lock: "<out> is in use by another latent process (pid N); wait for it
        or use another --out"; or the folder cannot be written.
    """
    out = check_out(out, kind, param=param)
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise ResourceError(f"{param} {out} cannot be created ({e.strerror}); give a writable folder.") from None
    import fcntl

    key = str(out.resolve())
    if key in _HELD:
        _HELD[key][1] += 1
        try:
            yield out
        finally:
            _HELD[key][1] -= 1
        return
    lock = out / LOCK
    try:
        fd = os.open(lock, os.O_RDWR | os.O_CREAT, 0o644)
    except OSError as e:
        raise ResourceError(f"{param} {out} is not writable ({e.strerror}); give a writable folder.") from None
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError as e:
        os.close(fd)
        if e.errno not in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
            raise ResourceError(f"{param} {out}: cannot lock {lock} ({e.strerror}).") from None
        pid = _lock_holder(lock).get("pid", "unknown")
        raise ResourceError(f"{out} is in use by another latent process (pid {pid}); wait for it or use another "
                         f"{param}.") from None
    try:
        os.ftruncate(fd, 0)
        os.pwrite(fd, json.dumps({"pid": os.getpid(), "kind": kind,
                                  "started": datetime.now(timezone.utc).isoformat(timespec="seconds")}).encode(), 0)
        _HELD[key] = [fd, 1]
        sweep_leftovers(out)
        yield out
    finally:
        _HELD.pop(key, None)
        with contextlib.suppress(OSError):
            fcntl.flock(fd, fcntl.LOCK_UN)
        os.close(fd)


def sweep_leftovers(folder: Path, depth: int = 2) -> list[Path]:
    """Remove ``.<name>.tmp-<pid>`` and ``.<name>.old-<pid>`` left in ``folder`` by crashed runs.

    Only called by the holder of ``folder``'s lock (no other latent process writes there). Looks
    ``depth`` folders deep, not into folders that have their own lock (another run's domain).
    """
    removed: list[Path] = []
    try:
        entries = list(folder.iterdir())
    except OSError:
        return removed
    for entry in entries:
        if _LEFTOVER.match(entry.name):
            log.info("removing %s, left by an interrupted run", entry)
            _remove(entry)
            removed.append(entry)
        elif depth > 0 and entry.is_dir() and not entry.is_symlink() and not (entry / LOCK).exists():
            removed += sweep_leftovers(entry, depth - 1)
    return removed


# ------------------------------------------------------------------------------ the data step
_REPO = Path(__file__).resolve().parents[1]


def expand_path(value: Any, base: Path) -> Path:
    """A config path: ``${VAR}`` / ``$VAR`` expanded (``${LATENT_SHARED_DATA}`` defaults to ``../shared/data``
    beside the repository), ``~`` expanded, relative to ``base``."""
    def sub(match: re.Match) -> str:
        name = match.group(1) or match.group(2)
        if name in os.environ:
            return os.environ[name]
        if name == "LATENT_SHARED_DATA":
            return str(_REPO.parent / "shared" / "data")
        raise InputError(f"The config refers to ${{{name}}}, which is not set in the environment.")

    text = re.sub(r"\$\{(\w+)\}|\$(\w+)", sub, str(value))
    path = Path(text).expanduser()
    return path if path.is_absolute() else (base / path).resolve()


_expand = expand_path


def make_caches(config: Mapping[str, Any], out: Path, force: bool) -> tuple[list[Path], "Path | None"]:
    """The data step of an experiment: its embedding caches in ``out/caches/`` (and the baseline's).

    Parameters
    ----------
    config
        A config read by :func:`latent.experiment.load_config`.
    out
        The experiment folder.
    force
        Recompute every cache.

    Returns
    -------
    caches, baseline
        The model caches, and the baseline's cache (None without ``baseline``).
    """
    base = Path(config["_base"])
    seed = int(config.get("seed", 0))
    kind, spec = next(iter(config["data"].items()))
    spec = dict(spec or {})
    cache_dir = out / "caches"
    cache_dir.mkdir(parents=True, exist_ok=True)
    if kind == "import":
        return [_import_step(spec, base, cache_dir, force)], None
    if kind == "synth":
        return _synth_steps(spec, base, seed, cache_dir, force), None
    return _embed_steps(config, spec, base, seed, cache_dir, force)


def _optional(spec: Mapping[str, Any], key: str, base: Path, what: str) -> "dict[str, Any] | None":
    return file_identity(_expand(spec[key], base), what=what) if spec.get(key) else None


def _import_step(spec: Mapping[str, Any], base: Path, cache_dir: Path, force: bool) -> Path:
    from latent.importer import import_embeddings

    if not spec.get("embeddings"):
        raise InputError("data.import needs 'embeddings' (a .npy, .npz, .parquet or pybioclip JSON file, or a "
                         "CSV/JSON/Parquet table with an embedding column).")
    embeddings = _expand(spec["embeddings"], base)
    metadata = _expand(spec["metadata"], base) if spec.get("metadata") else None
    taxonomy = _expand(spec["taxonomy"], base) if spec.get("taxonomy") else None
    params = {"id_column": spec.get("id_column"), "join_on": spec.get("join_on"), "model": spec.get("model"),
              "pretrained": spec.get("pretrained", "unknown"), "embedding_column": spec.get("embedding_column"),
              "on_conflict": spec.get("on_conflict", "raise"), "on_genus_mismatch": spec.get("on_genus_mismatch", "warn")}
    inputs = {"embeddings": file_identity(embeddings, what="data.import.embeddings"),
              "metadata": _optional(spec, "metadata", base, "data.import.metadata"),
              "taxonomy": _optional(spec, "taxonomy", base, "data.import.taxonomy")}
    target = cache_dir / "imported.h5"

    def compute(tmp: Path) -> None:
        import_embeddings(embeddings, tmp, metadata=metadata, id_column=params["id_column"], taxonomy=taxonomy,
                          join_on=params["join_on"], model=params["model"], pretrained=params["pretrained"],
                          embedding_column=params["embedding_column"], on_conflict=params["on_conflict"],
                          on_genus_mismatch=params["on_genus_mismatch"])

    run_file_step(target, step_identity("import", params, inputs), compute, force=force, what="import")
    return target


def _synth_steps(spec: Mapping[str, Any], base: Path, seed: int, cache_dir: Path, force: bool) -> list[Path]:
    from latent.synthetic import balanced_taxonomy, make_hierarchical, write_synthetic

    signals = spec.get("signal", 1.0)
    signals = signals if isinstance(signals, list) else [signals]
    if spec.get("taxonomy") and spec.get("branching"):
        raise InputError("data.synth takes 'taxonomy' (a table) or 'branching' (a balanced tree), not both.")
    taxonomy: Any = _expand(spec["taxonomy"], base) if spec.get("taxonomy") else None
    source = str(taxonomy or "builtin")
    inputs = {"taxonomy": _optional(spec, "taxonomy", base, "data.synth.taxonomy")}
    if spec.get("branching"):
        branching = spec["branching"]
        try:
            taxonomy = balanced_taxonomy(branching)
        except (TypeError, ValueError) as e:
            raise InputError(f"data.synth.branching must be 7 integers >= 1 (kingdom..species); got "
                             f"{branching!r}.") from e
        source = "balanced:" + "/".join(str(int(b)) for b in branching)
    caches = []
    for signal in signals:
        params = {"per_species": int(spec.get("per_species", 20)), "dim": int(spec.get("dim", 64)),
                  "signal": float(signal), "noise": float(spec.get("noise", 1.0)), "seed": seed}
        target = cache_dir / (f"synth-signal{params['signal']:g}-noise{params['noise']:g}-dim{params['dim']}"
                              f"-n{params['per_species']}-seed{seed}.h5")

        def compute(tmp: Path, params: dict[str, Any] = params) -> None:
            write_synthetic(tmp, make_hierarchical(taxonomy, **params), source=source)

        run_file_step(target, step_identity("synth", {**params, "source": source}, inputs), compute, force=force,
                      what="synth")
        caches.append(target)
    return caches


def _embed_steps(config: Mapping[str, Any], spec: Mapping[str, Any], base: Path, seed: int, cache_dir: Path,
                 force: bool) -> tuple[list[Path], "Path | None"]:
    from latent.extract import embed_images

    source = _expand(spec["source"], base)
    taxonomy = _expand(spec["taxonomy"], base) if spec.get("taxonomy") else None
    # batch_size is not part of the identity: it changes how, not what (and a smaller one after an
    # out-of-memory error must resume the interrupted run, not restart it)
    params = {"join_on": spec.get("join_on"), "path_column": spec.get("path_column"), "seed": seed}
    if spec.get("layers") is not None:  # (absent otherwise: caches made before keep their identity)
        params["layers"] = str(spec["layers"])
    inputs = {"source": file_identity(source, what="data.images.source"),
              "taxonomy": _optional(spec, "taxonomy", base, "data.images.taxonomy")}
    models = list(config["models"]) + ([config["baseline"]] if config.get("baseline") else [])
    caches: list[Path] = []
    baseline = None
    for model in models:
        target = cache_dir / f"{model}.h5"
        identity = step_identity("embed", {**params, "model": model}, inputs)
        sidecar = _sidecar(target)
        old = _read_record(sidecar)
        same = old is not None and old["identity"] == identity
        if same and not force and old.get("complete") and target.exists() \
                and old.get("output") == _output_stat(target):
            log.info("reusing %s (embed: same inputs and settings; new images are added)", target)
            rebuild = False
        elif same and not force and not old.get("complete"):
            log.info("embed %s: resuming the interrupted run of the same inputs", target)
            rebuild = bool(old.get("force"))
        else:
            why = "force" if force else ("no run record" if old is None else
                                         "changed: " + ", ".join(_differences(old["identity"], identity)))
            if target.exists() or target.with_name(target.name + ".partial").exists():
                log.info("embed %s: rebuilding the cache (%s)", target, why)
            partial = target.with_name(target.name + ".partial")
            if partial.exists() and not same:
                log.warning("embed %s: removing %s, an interrupted run of other inputs", target, partial)
                partial.unlink()
            rebuild = True
        sidecar.unlink(missing_ok=True)
        _write_json(sidecar, _record(identity, complete=False, force=rebuild))
        embed_images(source, target, model=model, taxonomy=taxonomy, join_on=params["join_on"],
                     path_column=params["path_column"], batch_size=int(spec.get("batch_size", 64)), seed=seed,
                     force=rebuild, progress=False, layers=params.get("layers"))
        _write_json(sidecar, _record(identity, complete=True, output=_output_stat(target)))
        if model == config.get("baseline"):
            baseline = target
        else:
            caches.append(target)
    return caches, baseline


# ------------------------------------------------------------------------------ the report's steps
def model_folder(out: Path, cache: Path) -> Path:
    """``out/runs/<cache stem>-<hash of its resolved path>``: one folder per cache file."""
    slug = "".join(c if c.isalnum() or c in "-_." else "-" for c in cache.stem).strip("-") or "model"
    return out / "runs" / f"{slug}-{short_hash(str(cache.resolve()))[:6]}"


def evaluate_steps(cache: Path, folder: Path, settings: ReportSettings, force: bool,
                   cache_id: "Mapping[str, Any] | None" = None) -> list[Path]:
    """``latent evaluate`` per ``settings.evaluations`` into ``folder/evaluate-<method>-<split>-seed<S>-boot<B>``."""
    from latent.evaluate import evaluate_cache

    cache_id = cache_id or file_identity(cache, what="cache")
    dirs = []
    for method, split in settings.evaluations:
        out = folder / f"evaluate-{method}-{split}-seed{settings.seed}-boot{settings.n_boot}"
        params = {"method": method, "split": split, "seed": settings.seed, "n_boot": settings.n_boot,
                  "device": settings.device}

        def compute(tmp: Path, method: str = method, split: str = split) -> None:
            evaluate_cache(cache, tmp, method=method, split=split, seed=settings.seed, n_boot=settings.n_boot,
                           device=settings.device)

        run_folder_step(out, step_identity("evaluate", params, {"cache": cache_id}), compute, force=force,
                        what=f"evaluate {method} ({split}) of {cache.name}")
        dirs.append(out)
    return dirs


def probe_step(cache: Path, folder: Path, settings: ReportSettings, force: bool, baseline: "Path | None",
               cache_id: "Mapping[str, Any] | None" = None) -> Path:
    """``latent probe`` into ``folder/probe-<distance>-perm<N>-seed<S>-<hash of the other parameters>``."""
    from latent.probes.base import ProbeOptions
    from latent.probes.run import probe_cache

    extra = {k: dict(v) for k, v in settings.probe_settings.items()}
    extra.setdefault("levels", {}).setdefault("permutations", settings.verdict_permutations)
    options = ProbeOptions(distance=settings.distance, permutations=settings.permutations,
                           max_pairs=settings.max_pairs, max_images=settings.max_images, seed=settings.seed,
                           device=settings.device, extra=extra)
    probes = list(settings.probes or [])
    if probes:
        added = [p for p in PRIMARY_PROBES if p not in probes]
        if added:
            log.info("report: the verdicts' primary statistics need the %s probe(s): added", ", ".join(added))
        probes = [*added, *probes]
    params = {"probes": probes or "all", "options": asdict(options)}
    inputs = {"cache": cache_id or file_identity(cache, what="cache"),
              "baseline": None if baseline is None else file_identity(baseline, what="baseline cache")}
    out = folder / f"probe-{settings.distance}-perm{settings.permutations}-seed{settings.seed}-{short_hash(params)}"

    def compute(tmp: Path) -> None:
        probe_cache(cache, tmp, probes=probes or None, options=options, baseline=baseline)

    run_folder_step(out, step_identity("probe", params, inputs), compute, force=force,
                    what=f"probes of {cache.name}")
    return out


def projection_steps(cache: Path, folder: Path, settings: ReportSettings, force: bool,
                     cache_id: "Mapping[str, Any] | None" = None) -> list[Path]:
    """2-D projections per ``settings.projections`` into ``folder/projection-<method>-seed<S>.csv``."""
    import pandas as pd

    from latent.cache import open_cache
    from latent.projection import EXPLAINED_COLUMNS, project

    cache_id = cache_id or file_identity(cache, what="cache")
    paths = []
    for method in settings.projections:
        path = folder / f"projection-{method}-seed{settings.seed}.csv"
        params = {"method": method, "seed": settings.seed, "max_points": settings.max_projection_points,
                  "columns": "explained"}  # the table now carries the variance explained (PCA): recompute old ones

        def compute(tmp: Path, method: str = method) -> None:
            with open_cache(cache) as c:
                taxonomy = c.taxonomy()
                rows = np.flatnonzero(taxonomy.labelled("species"))
                if len(rows) > settings.max_projection_points:
                    rng = np.random.default_rng(settings.seed)
                    rows = np.sort(rng.choice(rows, settings.max_projection_points, replace=False))
                X = c.read(rows, normalize=True)
                ids = np.asarray(c.ids)[rows]
            log.info("report: %s projection of %d images", method, len(rows))
            xy, info = project(X, method=method, seed=settings.seed, return_info=True)
            table = pd.DataFrame({"id": ids})
            for r, name in enumerate(RANK_NAMES):
                table[name] = taxonomy.row_names[rows, r].astype(str)
            table["x"], table["y"] = xy[:, 0], xy[:, 1]
            if method == "pca":  # the share of the variance on each axis, for the axis labels
                for column, share in zip(EXPLAINED_COLUMNS, info["explained_variance_ratio"]):
                    table[column] = float(share)
            table.to_csv(tmp, index=False)

        run_file_step(path, step_identity("projection", params, {"cache": cache_id}), compute, force=force,
                      what=f"{method} projection of {cache.name}")
        paths.append(path)
    return paths


def emergence_step(cache: Path, folder: Path, settings: ReportSettings, force: bool,
                   cache_id: "Mapping[str, Any] | None" = None) -> "Path | None":
    """Per-layer verdicts (:func:`latent.layers.emergence_from_cache`) into ``folder/emergence-perm<N>-seed<S>.csv``;
    None when the cache holds no per-layer embeddings."""
    from latent.cache import open_cache
    from latent.layers import emergence_from_cache

    with open_cache(cache) as c:
        if not c.layers:
            log.info("report: %s holds no per-layer embeddings: no emergence by depth for it", cache.name)
            return None
    path = folder / f"emergence-perm{settings.permutations}-seed{settings.seed}.csv"
    params = {"permutations": settings.permutations, "seed": settings.seed, "distance": settings.distance,
              "token": "class"}

    def compute(tmp: Path) -> None:
        emergence_from_cache(cache, permutations=settings.permutations, seed=settings.seed,
                             distance=settings.distance).to_csv(tmp, index=False)

    run_file_step(path, step_identity("emergence", params, {"cache": cache_id or file_identity(cache, what="cache")}),
                  compute, force=force, what=f"emergence by depth of {cache.name}")
    return path


def _model_name(provenance: Any, path: Path) -> str:
    """The model's name for labels: the recorded one, or the cache's file name when none was recorded
    (``latent import`` without ``--model`` records "unknown")."""
    name = str(provenance.model or "").strip()
    return path.stem if name in ("", "unknown") else name


def _label(provenance: Any, path: Path, taken: set[str]) -> str:
    base = _model_name(provenance, path)
    label = base if base not in taken else f"{base} ({path.stem})"
    k = 2
    while label in taken:
        label, k = f"{base} ({path.stem} {k})", k + 1
    return label


def _label_by_stem(stem: str, taken: set[str]) -> str:
    label, k = stem, 2
    while label in taken:
        label, k = f"{stem} {k}", k + 1
    return label


def run_report_steps(caches: "list[Path]", out: Path, settings: ReportSettings, *, force: bool = False,
                     baseline: "Path | None" = None) -> list[Any]:
    """The report's steps for each cache (evaluations, probes, projections), reused by the rule above.

    Parameters
    ----------
    caches
        Embedding caches (one model each), checked to exist by the caller.
    out
        The report folder (the caller holds its lock): results go to ``out/runs/<cache>/``.
    settings
        What to compute.
    force
        Recompute every step.
    baseline
        Random-features cache probed next to every model.

    Returns
    -------
    list of latent.figures.ModelRun
        Per cache: its display label (unique among the caches), provenance and the run folders and files.
    """
    from latent.cache import open_cache
    from latent.figures import ModelRun

    provenances = []
    for path in caches:
        with open_cache(path) as cache:
            provenances.append(cache.provenance)
    names = [_model_name(p, path) for p, path in zip(provenances, caches)]
    # shared parts of the file names of one model's caches ("-dim32-seed0") say nothing: drop them
    tokens = {path: path.stem.split("-") for path in caches}
    common = set.intersection(*(set(t) for t in tokens.values())) if len(caches) > 1 else set()
    short = {path: "-".join(t for t in tokens[path] if t not in common) or path.stem for path in caches}
    taken: set[str] = set()
    models = []
    for path, provenance, name in zip(caches, provenances, names):
        # caches of one model (e.g. synthetic data at several signals) are told apart by their file names
        label = _label(provenance, path, taken) if names.count(name) == 1 else _label_by_stem(short[path], taken)
        taken.add(label)
        # one folder per cache file (not per display label, which depends on the other caches of the report)
        folder = model_folder(out, path)
        folder.mkdir(parents=True, exist_ok=True)
        cache_id = file_identity(path, what="cache")
        evaluations = evaluate_steps(path, folder, settings, force, cache_id)
        probe = probe_step(path, folder, settings, force, baseline, cache_id)
        projections = projection_steps(path, folder, settings, force, cache_id)
        emergence = emergence_step(path, folder, settings, force, cache_id) if settings.layers else None
        info = json.loads((probe / "run.json").read_text()) if (probe / "run.json").exists() else {}
        models.append(ModelRun(label, path, provenance, evaluations, probe, projections, info, emergence))
    return models


def comparison_step(models: "list[Any]", settings: ReportSettings, baseline: "Path | None") -> "Any":
    """Paired model-vs-model (and model-vs-baseline) differences of each rank's primary statistic.

    Returns
    -------
    pandas.DataFrame
        :data:`latent.compare.COMPARISON_COLUMNS` (no rows with one model and no baseline).
    """
    import pandas as pd

    from latent.compare import COMPARISON_COLUMNS, compare_models
    from latent.probes.base import ProbeOptions
    from latent.probes.run import load_probe_data

    pairs: list[tuple[str, Path, str, Path]] = []
    for i, a in enumerate(models):
        for b in models[i + 1:]:
            pairs.append((a.label, a.cache, b.label, b.cache))
        if baseline is not None:
            pairs.append((a.label, a.cache, "random-features baseline", baseline))
    if not pairs:
        return pd.DataFrame(columns=COMPARISON_COLUMNS)
    options = ProbeOptions(distance=settings.distance, seed=settings.seed)
    level_settings = {k: v for k, v in settings.probe_settings.get("levels", {}).items()
                      if k in ("max_images_per_species", "max_species")}
    loaded: dict[Path, Any] = {}
    frames = []
    for la, pa, lb, pb in pairs:
        for path in (pa, pb):
            if path not in loaded:
                loaded[path] = load_probe_data(path)[0]
        log.info("report: comparing %s with %s", la, lb)
        frames.append(compare_models(loaded[pa], loaded[pb], labels=(la, lb), options=options,
                                     common_dim=settings.common_dim, n_boot=settings.n_boot,
                                     settings=level_settings))
    return pd.concat(frames, ignore_index=True)


# ------------------------------------------------------------------------------ provenance
def git_commit() -> str:
    """The git commit of the latent checkout, or ``"-"``."""
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], cwd=Path(__file__).resolve().parents[1],
                             capture_output=True, text=True, timeout=10)
        return out.stdout.strip() if out.returncode == 0 else "-"
    except (OSError, subprocess.SubprocessError):
        return "-"
