"""Distributed extraction on Ray: ``latent embed --engine ray``, sharded, resumable, stitched into one cache.

:func:`embed_images_ray` takes the parameters of :func:`latent.extract.embed_images` and returns the same
:class:`~latent.extract.EmbedReport`; the cache it leaves at ``out`` reads with
:func:`latent.cache.open_cache` like any other. How it works:

* **Shards.** The inputs (:func:`latent.extract.collect_inputs`) are sorted by id and cut into
  consecutive runs of ``shard_size`` (:func:`plan_shards`). Shard ``k`` is written by one worker to
  ``<out>.shards/shard-<k>.h5`` (five digits) through a :class:`~latent.cache.CacheWriter` with the run's
  provenance, so each shard is crash-safe by itself: an interrupted shard's ``.partial`` resumes from its
  committed rows, a complete shard is never recomputed. ``<out>.shards/plan.json`` records the plan (shard
  size, a hash of the ids, the provenance identity); a re-run with other inputs or another model is
  refused (``force`` moves the old shards aside, never deletes them).
* **Engine.** Plain Ray tasks feeding Ray actors (no Ray Data): one model actor per worker
  (``gpus_per_worker`` GPUs each; 1 CPU each when it has no GPU), spread over the cluster's nodes. An
  actor works through one shard at a time; it decodes the shard's images in Ray CPU tasks (one task per
  batch, at most ``prefetch`` batches in flight, so decoded batches stream through the object store and
  memory stays bounded), runs the model on each batch as it arrives and commits rows to its shard.
  Every actor loads the model itself and reports the provenance fields; the driver loads no model.
* **Failures.** Bad images are recorded under the shard's ``/failed`` as by the local engine (same
  reasons); undecodable file names likewise. A worker that dies (killed, node lost) costs only its
  unfinished shards: the others finish, the call raises :class:`~latent.errors.ResourceError` naming what
  is left, and the same call again does only those shards.
* **Stitch.** Only when every shard is complete is ``out`` written (``out.tmp`` renamed onto it, so
  nothing half-written ever sits at ``out``): by default an HDF5 virtual-dataset file mapping
  ``/embeddings``, ``/ids``, ``/taxonomy/<rank>``, ``/failed/*`` and ``/layers/<k>/*`` of the shards
  into one file (a few KB; it names the shards by paths relative to itself, so move ``out`` and
  ``<out>.shards`` together); with ``merge`` the rows are copied into one ordinary cache instead (written
  through a CacheWriter, so the merge itself resumes), after which the shards may be deleted.

Every node must see the images and ``out``'s folder at the same paths (a shared file system) and have
latent installed.
"""

from __future__ import annotations

import functools
import hashlib
import json
import logging
import os
import socket
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from latent.errors import CacheError, InputError, LatentError, ProvenanceError, ResourceError

if TYPE_CHECKING:  # pragma: no cover
    from latent.cache import Provenance
    from latent.extract import EmbedReport

__all__ = ["ENGINES", "DEFAULT_SHARD_SIZE", "ShardResult", "embed_images_ray", "embed_with_engine", "plan_shards",
           "shard_dir", "shard_path", "stitch_shards"]

log = logging.getLogger(__name__)

#: The extraction engines of ``latent embed --engine``.
ENGINES = ("local", "ray")
#: Inputs per shard (the unit of work, of resume and of the virtual dataset's mappings).
DEFAULT_SHARD_SIZE = 4096
_PLAN = "plan.json"
_ROW_NAMES = ("embeddings", "ids")  # + taxonomy/<rank> and layers/<k>/<token>
_FAILED_NAMES = ("failed/ids", "failed/reasons")


@dataclass(frozen=True)
class ShardResult:
    """What one worker did with one shard.

    ``embedded`` rows were added now, ``skipped`` inputs were already in the shard (a resumed partial),
    ``failures`` lists ``(id, reason)`` recorded now; ``rows`` is the shard's final row count; ``pid`` and
    ``node`` say which worker process wrote it.
    """

    shard: int
    path: Path
    embedded: int
    skipped: int
    rows: int
    loop_seconds: float
    pid: int
    node: str
    failures: list[tuple[str, str]] = field(default_factory=list)


def shard_dir(out: "str | os.PathLike[str]") -> Path:
    """The folder of the shards of the cache ``out``: ``<out>.shards``."""
    out = Path(out)
    return out.with_name(out.name + ".shards")


def shard_path(out: "str | os.PathLike[str]", k: int) -> Path:
    """The file of shard ``k`` of the cache ``out``: ``<out>.shards/shard-<k:05d>.h5``."""
    return shard_dir(out) / f"shard-{int(k):05d}.h5"


def plan_shards(ids: Sequence[str], shard_size: int) -> list[np.ndarray]:
    """Cut the inputs into shards: sorted by id, then consecutive runs of ``shard_size``.

    Parameters
    ----------
    ids : sequence of str, (N,)
        Unique input ids.
    shard_size : int
        Inputs per shard (the last shard holds the rest).

    Returns
    -------
    list of numpy.ndarray
        ``ceil(N / shard_size)`` int64 arrays of positions into ``ids``; shard ``k`` holds the ids of
        sorted positions ``k * shard_size`` to ``(k + 1) * shard_size - 1``.
    """
    _check_int("shard_size", shard_size, 1)
    order = np.array(sorted(range(len(ids)), key=ids.__getitem__), dtype=np.int64)
    return [order[a:a + shard_size] for a in range(0, len(order), shard_size)]


def _check_int(name: str, value: Any, minimum: int) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < minimum:
        raise InputError(f"The {name!r} parameter (--{name.replace('_', '-')}) of embed_images_ray must be an int "
                         f">= {minimum}. Got {value!r} instead.")


def _ids_hash(ids: Sequence[str]) -> str:
    digest = hashlib.sha256()
    for image_id in sorted(ids):
        digest.update(image_id.encode("utf-8", "surrogateescape") + b"\n")
    return digest.hexdigest()


def embed_with_engine(engine: str, source: "str | os.PathLike[str]", out: "str | os.PathLike[str]", *,
                      address: "str | None" = None, gpus_per_worker: float = 0, merge: bool = False,
                      shard_size: "int | None" = None, **kwargs: Any) -> Any:
    """Run ``latent embed`` on ``engine`` (``"local"``: :func:`latent.extract.embed_images`; ``"ray"``:
    :func:`embed_images_ray`) with the keyword arguments of :func:`latent.extract.embed_images`.

    The Ray-only options (``address``, ``gpus_per_worker``, ``merge``, ``shard_size``; None: the default
    :data:`DEFAULT_SHARD_SIZE`) are refused with the local engine rather than ignored. Returns the
    :class:`~latent.extract.EmbedReport`.
    """
    if engine not in ENGINES:
        raise InputError(f"The '--engine' option must be one of {', '.join(ENGINES)}. Got {engine!r} instead.")
    if engine == "ray":
        return embed_images_ray(source, out, address=address, gpus_per_worker=gpus_per_worker, merge=merge,
                                shard_size=DEFAULT_SHARD_SIZE if shard_size is None else shard_size, **kwargs)
    given = [name for name, value, default in (("--address", address, None), ("--gpus-per-worker", gpus_per_worker, 0),
                                               ("--merge", merge, False), ("--shard-size", shard_size, None))
             if value != default]
    if given:
        raise InputError(f"{', '.join(given)}: only with --engine ray (got --engine local); drop "
                         f"{'it' if len(given) == 1 else 'them'} or add --engine ray.")
    from latent.extract import embed_images

    return embed_images(source, out, **kwargs)


# ---------------------------------------------------------------------------- the work done on the cluster
def _decode_batch(transform: Any, records: list) -> dict[str, Any]:
    """Decode and transform ``records`` (a Ray CPU task): the good images as one array, and the failures.

    Returns ``images`` float32 ``(k, 3, H, W)``, ``indices`` (positions in ``records`` of the k good
    images), ``failed_indices`` and ``failed_reasons`` (as :func:`latent.images.collate_skip_failed`).
    """
    from latent.images import ImageDataset, collate_skip_failed

    dataset = ImageDataset(records, transform)
    batch = collate_skip_failed([dataset[i] for i in range(len(dataset))])
    images = batch["images"].numpy() if len(batch["indices"]) else np.empty((0,), dtype=np.float32)
    return {"images": images, "indices": batch["indices"].tolist(),
            "failed_indices": batch["failed_indices"], "failed_reasons": batch["failed_reasons"]}


@functools.lru_cache(maxsize=1)
def _decode_task() -> Any:
    import ray

    return ray.remote(num_cpus=1, max_retries=2)(_decode_batch)


class _ShardWorker:
    """One model on one worker (a Ray actor): writes whole shards, decoding through Ray CPU tasks."""

    def __init__(self, load: dict[str, Any]) -> None:
        from latent.models import load_model

        self.loaded = load_model(load["model"], pretrained=load["pretrained"], device=load["device"],
                                 precision=load["precision"], preprocess=load["preprocess"], seed=load["seed"])
        self._transform_ref = None

    def pid(self) -> int:
        return os.getpid()

    def describe(self, layers: Any) -> tuple[dict[str, Any], dict[str, Any] | None]:
        """The model's provenance fields and the layer spec of ``layers`` (as the local engine records them)."""
        from latent.extract import _layer_spec

        return self.loaded.provenance_fields(), (None if layers is None else _layer_spec(self.loaded, layers))

    def run_shard(self, k: int, path: str, provenance: "Provenance", records: list, ids: list[str],
                  labels: dict[str, np.ndarray], bad_names: list[int], *, batch_size: int, commit_every: int,
                  prefetch: int, layer_spec: "dict[str, Any] | None") -> ShardResult:
        """Embed the inputs of shard ``k`` (``records``, ``ids``, ``labels`` aligned) into the shard file ``path``."""
        import ray
        import torch

        from latent.cache import CacheWriter
        from latent.images import BAD_NAME_REASON

        if self._transform_ref is None:
            self._transform_ref = ray.put(self.loaded.transform)
        decode = _decode_task()
        blocks = [] if not layer_spec else [int(b) for b in layer_spec["blocks"]]
        store = np.float16 if provenance.store_dtype == "float16" else np.float32
        failures: list[tuple[str, str]] = []
        with CacheWriter.open(path, provenance, mode="create") as writer:
            done = writer.existing_ids | writer.failed_ids
            todo = [i for i, image_id in enumerate(ids) if image_id not in done]
            skipped = len(ids) - len(todo)
            bad = set(bad_names)
            named_badly = [i for i in todo if i in bad]
            if named_badly:
                writer.add_failed([ids[i] for i in named_badly], BAD_NAME_REASON)
                failures += [(ids[i], BAD_NAME_REASON) for i in named_badly]
                todo = [i for i in todo if i not in bad]
            loop_start = time.perf_counter()
            batches = deque(todo[a:a + batch_size] for a in range(0, len(todo), batch_size))
            pending: deque = deque()

            def submit() -> None:
                if batches:
                    rows = batches.popleft()
                    pending.append((rows, decode.remote(self._transform_ref, [records[i] for i in rows])))

            for _ in range(prefetch):
                submit()
            buffer_rows: list[int] = []
            buffer_emb: list[np.ndarray] = []
            buffer_layers: dict[int, dict[str, list[np.ndarray]]] = {b: {"class": [], "patch_mean": []} for b in blocks}
            embedded = 0

            def commit() -> None:
                nonlocal embedded
                if not buffer_rows:
                    return
                rows = np.asarray(buffer_rows)
                layers = ({b: {t: np.concatenate(v).astype(store, copy=False) for t, v in tokens.items()}
                           for b, tokens in buffer_layers.items()} if blocks else None)
                writer.append([ids[i] for i in rows], np.concatenate(buffer_emb).astype(store, copy=False),
                              {name: values[rows] for name, values in labels.items()}, layers=layers)
                embedded += len(rows)
                buffer_rows.clear()
                buffer_emb.clear()
                for tokens in buffer_layers.values():
                    for values in tokens.values():
                        values.clear()

            while pending:
                rows, ref = pending.popleft()
                batch = ray.get(ref)
                submit()  # keep `prefetch` batches decoding while this one runs through the model
                if batch["failed_indices"]:
                    bad = [rows[i] for i in batch["failed_indices"]]
                    reasons = list(batch["failed_reasons"])
                    writer.add_failed([ids[i] for i in bad], reasons)
                    failures += [(ids[i], reason) for i, reason in zip(bad, reasons)]
                    for i, reason in zip(bad, reasons):
                        log.warning("skipped %s: %s", ids[i], reason)
                if batch["indices"]:
                    images = torch.from_numpy(batch["images"].copy())  # Ray's zero-copy arrays are read-only
                    if blocks:
                        emb, layers = self.loaded.encode_layers(images, blocks)
                        for b, tokens in layers.items():
                            for t, value in tokens.items():
                                if not torch.isfinite(value).all():
                                    raise RuntimeError(f"the model produced NaN or inf values after block {b}; "
                                                       f"try --precision fp32")
                                buffer_layers[b][t].append(value.numpy())
                    else:
                        emb = self.loaded.encode_images(images)
                    if not torch.isfinite(emb).all():
                        raise RuntimeError("the model produced NaN or inf embeddings; try --precision fp32")
                    buffer_rows.extend(rows[i] for i in batch["indices"])
                    buffer_emb.append(emb.numpy())
                if len(buffer_rows) >= commit_every:
                    commit()
            commit()
            loop_seconds = time.perf_counter() - loop_start
            n_rows = writer.n_rows
        return ShardResult(k, Path(path), embedded, skipped, n_rows, loop_seconds, os.getpid(),
                           ray.get_runtime_context().get_node_id(), failures)


# ---------------------------------------------------------------------------- the driver
def _connect(address: "str | None") -> bool:
    """Connect to Ray (``address``, else ``RAY_ADDRESS``, else a running local cluster, else a new local one);
    True when this call started it (and so shuts it down)."""
    import ray

    if ray.is_initialized():
        return False
    _check_reachable(address if address is not None else os.environ.get("RAY_ADDRESS"))
    try:
        ray.init(address=address, log_to_driver=True, logging_level=logging.WARNING)
    except ConnectionError as e:
        raise ResourceError(f"Cannot connect to the Ray cluster at --address {address!r} ({e}); start it with "
                            f"'ray start' on the head node (see the README) or check the address.") from e
    return True


def _host_port(address: "str | None", what: str = "The 'address' parameter (--address)") -> "tuple[str, int] | None":
    """``(host, port)`` of a cluster address; None for ``auto``/``local``/none; InputError when malformed."""
    if address is None or address in ("auto", "local"):
        return None
    host, _, port = address.strip().split("://", 1)[-1].rpartition(":")
    if not host or not port.isdigit():
        raise InputError(f"{what} must be 'auto', HOST:PORT or ray://HOST:PORT. Got {address!r} instead.")
    return host.strip("[]"), int(port)


def _check_reachable(address: "str | None") -> None:
    """Refuse at once a cluster address that nothing answers at (Ray itself retries for minutes)."""
    target = _host_port(address, "The Ray address (--address or RAY_ADDRESS)")
    if target is None:
        return
    host, port = target
    try:
        socket.create_connection((host, port), timeout=10).close()
    except OSError as e:
        raise ResourceError(f"Nothing answers at the Ray address {address} ({e.strerror or e}); start the cluster with "
                            f"'ray start' on the head node (see the README) or check --address / RAY_ADDRESS.") from e


def _cause(e: BaseException) -> BaseException:
    """A worker's LatentError (bad --layers, provenance, full disk) as itself rather than Ray's wrapper."""
    cause = getattr(e, "cause", None)
    return cause if isinstance(cause, LatentError) else e


def _default_workers(gpus_per_worker: float) -> int:
    import ray

    if gpus_per_worker > 0:
        return max(1, int(ray.cluster_resources().get("GPU", 0) // gpus_per_worker))
    return max(1, sum(1 for node in ray.nodes() if node.get("Alive")))


def _shard_status(path: Path, provenance: Any, expected: set[str]) -> str:
    """``"complete"`` (a finished shard of this run), ``"todo"`` (missing or partial) or why it is not usable."""
    from latent.cache import open_cache

    if not path.exists():
        return "todo"
    with open_cache(path) as shard:
        if shard.provenance.identity() != provenance.identity():
            return "made with another provenance"
        done = set(shard.ids.tolist()) | set(shard.failed()["id"].tolist())
    if done == expected:
        return "complete"
    return f"holds other ids than its plan ({len(done - expected)} extra, {len(expected - done)} missing)"


def _check_plan(folder: Path, plan: dict[str, Any], force: bool) -> None:
    """Refuse (or with ``force`` move aside) shards planned for other inputs, shard size or provenance."""
    from latent.cache import _set_aside

    file = folder / _PLAN
    if folder.exists() and file.exists():
        old = json.loads(file.read_text())
        if old == plan:
            return
        differ = [k for k in plan if old.get(k) != plan[k]]
        if not force:
            what = ", ".join({"ids_sha256": "inputs", "n_inputs": "inputs", "shard_size": "shard size",
                              "identity": "provenance"}.get(k, k) for k in differ)
            error = ProvenanceError if "identity" in differ else CacheError
            raise error(f"{folder} holds shards of another run (they differ in {what}); write to another --out, "
                        f"or pass --force to start again (the old shards are moved aside).")
        log.warning("force: moved the shards of another run aside to %s", _set_aside(folder, "discarded"))
    elif folder.exists() and any(folder.iterdir()):
        if not force:
            raise CacheError(f"{folder} exists without {_PLAN}; it is not a shard folder of latent: move it away "
                             f"or pass --force (it is moved aside).")
        log.warning("force: moved %s aside to %s", folder, _set_aside(folder, "discarded"))
    folder.mkdir(exist_ok=True)
    tmp = folder / (_PLAN + ".tmp")
    tmp.write_text(json.dumps(plan, sort_keys=True, indent=1))
    os.replace(tmp, file)


def embed_images_ray(
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
    address: "str | None" = None,
    gpus_per_worker: float = 0,
    merge: bool = False,
    shard_size: int = DEFAULT_SHARD_SIZE,
    prefetch: int = 4,
    on_shard: "Callable[[ShardResult], None] | None" = None,
) -> "EmbedReport":
    """Embed every image of ``source`` into the cache ``out`` on a Ray cluster (see the module notes).

    Parameters
    ----------
    source, out, model, pretrained, preprocess, taxonomy, join_on, path_column, batch_size, device, precision,
    store_dtype, seed, force, progress, commit_every, layers
        As :func:`latent.extract.embed_images` (``device`` and ``precision`` apply on each worker). An
        existing complete ``out`` holding every input is left as it is; the Ray engine does not add rows to
        an existing cache (use the local engine, another ``out``, or ``force``).
    workers
        Model actors (default: one per ``gpus_per_worker`` GPUs of the cluster, or one per node without
        GPUs). Decoding runs in Ray CPU tasks beside them.
    address
        The Ray cluster (``"auto"``, ``"ray://host:10001"``, ``"host:6379"``); None: ``RAY_ADDRESS``, a
        cluster started on this machine with ``ray start``, or else a new local one. A Ray already
        initialised in this process is used as it is.
    gpus_per_worker
        GPUs per model actor (0: the model runs on CPU, and the actor takes one CPU).
    merge
        Copy the shards into one ordinary cache instead of writing a virtual-dataset file over them.
    shard_size
        Inputs per shard (see :func:`plan_shards`); part of the plan, so a re-run must use the same.
    prefetch
        Batches each actor keeps decoding ahead of the model.
    on_shard
        Called on the driver with each finished shard's :class:`ShardResult`.

    Returns
    -------
    latent.extract.EmbedReport
        Totals over the shards; ``skipped`` counts the inputs found done in complete or partial shards.

    Raises
    ------
    ResourceError
        A worker died (or the cluster went away) before its shards were done: the finished shards are
        kept and the same call again does only the rest. ``out`` is not written.
    """
    from latent.cache import check_out_path, open_cache
    from latent.extract import STORE_DTYPES, EmbedReport, collect_inputs
    from latent.images import printable_name
    from latent.ranks import RANK_NAMES
    from latent.taxonomy import Taxonomy

    for name, value, minimum in (("batch_size", batch_size, 1), ("commit_every", commit_every, 1), ("seed", seed, 0),
                                 ("shard_size", shard_size, 1), ("prefetch", prefetch, 1)):
        _check_int(name, value, minimum)
    if workers is not None:
        _check_int("workers", workers, 1)
    if (isinstance(gpus_per_worker, bool) or not isinstance(gpus_per_worker, (int, float))
            or not 0 <= gpus_per_worker < float("inf")):
        raise InputError(f"The 'gpus_per_worker' parameter (--gpus-per-worker) must be a number >= 0. "
                         f"Got {gpus_per_worker!r} instead.")
    if store_dtype not in STORE_DTYPES:
        raise InputError(f"The 'store_dtype' parameter of embed_images_ray must be one of {', '.join(STORE_DTYPES)}. "
                         f"Got {store_dtype!r} instead.")
    if address is not None and (not isinstance(address, str) or not address.strip()):
        raise InputError(f"The 'address' parameter (--address) must be 'auto', HOST:PORT or ray://HOST:PORT. "
                         f"Got {address!r} instead.")
    _host_port(address)
    if device != "auto" and gpus_per_worker == 0 and str(device).startswith("cuda"):
        raise InputError(f"--device {device} needs GPUs on the workers: pass --gpus-per-worker 1 (or more).")
    try:
        import ray
    except ImportError as e:  # pragma: no cover - ray is an install dependency
        raise InputError("--engine ray needs Ray: pip install 'ray[data]'.") from e
    start = time.perf_counter()
    out = check_out_path(out)
    records, lineages = collect_inputs(source, path_column=path_column, taxonomy=taxonomy, join_on=join_on)
    Taxonomy(lineages, what="taxonomy of the images")
    labels = {name: lineages[:, r].astype(str) for r, name in enumerate(RANK_NAMES)}
    printable = [printable_name(r.id) for r in records]
    ids = [r.id if p is None else p for r, p in zip(records, printable)]
    bad_names = {i for i, p in enumerate(printable) if p is not None}

    started = _connect(address)
    actors: list = []
    try:
        n_workers = _default_workers(float(gpus_per_worker)) if workers is None else int(workers)
        if gpus_per_worker == 0 and n_workers >= ray.cluster_resources().get("CPU", 0):
            raise InputError(f"--workers {n_workers} model workers on CPU would take all "
                             f"{ray.cluster_resources().get('CPU', 0):g} CPUs of the Ray cluster, leaving none for "
                             f"decoding; use fewer workers or GPUs (--gpus-per-worker).")
        load = {"model": model, "pretrained": None if pretrained is None else str(pretrained), "device": device,
                "precision": precision, "preprocess": preprocess, "seed": seed}
        actor_class = ray.remote(_ShardWorker).options(
            num_cpus=0 if gpus_per_worker else 1, num_gpus=gpus_per_worker, scheduling_strategy="SPREAD",
            max_concurrency=1)
        actors = [actor_class.remote(load) for _ in range(n_workers)]
        try:
            described = ray.get([a.describe.remote(layers) for a in actors])
        except Exception as e:
            raise _cause(e) from None
        made = [_provenance(d, source=source, store_dtype=store_dtype, load=load) for d in described]
        provenance = made[0]
        for other in made[1:]:
            if other.identity() != provenance.identity():
                raise ProvenanceError(f"The Ray workers loaded {model!r} differently ({provenance.describe()} vs "
                                      f"{other.describe()}); give every node the same weights and library versions.")

        if out.exists() and not force:
            with open_cache(out) as existing:
                same = existing.provenance.identity() == provenance.identity()
                done = set(existing.ids.tolist()) | set(existing.failed()["id"].tolist())
                rows = existing.n_rows
                old = existing.provenance
            if not same:
                raise ProvenanceError(f"The cache {out} holds embeddings made by {old.describe()} but this run "
                                      f"makes {provenance.describe()}; write to another --out, or pass --force to "
                                      f"replace it.")
            if done.issuperset(ids):
                report = EmbedReport(out, len(ids), 0, len(ids), 0, rows, time.perf_counter() - start,
                                     already_complete=True)
                log.info("%s", report.summary())
                return report
            raise CacheError(f"The cache {out} lacks {len(set(ids) - done)} of the inputs; the Ray engine writes whole "
                             f"caches and does not add rows to one: write to another --out, or pass --force to "
                             f"rebuild it.")

        shards = plan_shards(ids, shard_size)
        folder = shard_dir(out)
        _check_plan(folder, {"format": 1, "shard_size": int(shard_size), "n_inputs": len(ids),
                             "ids_sha256": _ids_hash(ids), "identity": provenance.identity()}, force)
        todo, skipped = [], 0
        for k, rows in enumerate(shards):
            status = _shard_status(shard_path(out, k), provenance, {ids[i] for i in rows})
            if status == "complete":
                skipped += len(rows)
            elif status == "todo":
                todo.append(k)
            else:
                raise CacheError(f"{shard_path(out, k)} {status}; pass --force to start again (the shards are moved "
                                 f"aside), or delete it.")
        if skipped:
            log.info("%d of %d shards are complete in %s: embedding the other %d", len(shards) - len(todo),
                     len(shards), folder, len(todo))
        results, lost, loop_seconds = _dispatch(actors, todo, shards, out, provenance, records, ids, labels, bad_names,
                                  batch_size=batch_size, commit_every=commit_every, prefetch=prefetch,
                                  layer_spec=provenance.layers, progress=progress, on_shard=on_shard)
    finally:
        for actor in actors:
            ray.kill(actor)
        if started:
            ray.shutdown()
    if lost:
        raise ResourceError(f"{len(lost)} of {len(shards)} shards are not finished ({lost[0][1]}); the finished ones "
                            f"are kept in {folder}: run the same command again to do only the rest.")
    rows = stitch_shards(out, len(shards), provenance, merge=merge, force=force)
    failures = [f for r in sorted(results, key=lambda r: r.shard) for f in r.failures]
    embedded = sum(r.embedded for r in results)
    skipped += sum(r.skipped for r in results)
    report = EmbedReport(out, len(ids), embedded, skipped, len(failures), rows, time.perf_counter() - start,
                         failures=failures, loop_seconds=loop_seconds)
    log.info("%s", report.summary())
    return report


def _provenance(described: tuple[dict[str, Any], "dict[str, Any] | None"], *, source: Any, store_dtype: str,
                load: dict[str, Any]) -> "Provenance":
    """The cache provenance of a worker's ``(provenance fields, layer spec)``, exactly as
    :func:`latent.extract.embed_images` records it."""
    from latent.cache import Provenance

    fields, layer_spec = described
    return Provenance(
        model=fields["model"], pretrained=fields["pretrained"], preprocess=fields["preprocess"],
        embed_dim=int(fields["embed_dim"]), normalized=False, source=str(Path(source).resolve()),
        store_dtype=store_dtype,
        extra={
            "untrained": bool(fields["untrained"]), "seed": fields["seed"], "precision": fields["precision"],
            "weights_sha256": fields.get("weights_sha256"),
            "load": {k: load[k] for k in ("model", "pretrained", "preprocess", "seed")},
            **({"layers": layer_spec} if layer_spec else {}),
        },
    )


def _dispatch(actors: list, todo: list[int], shards: list[np.ndarray], out: Path, provenance: Any, records: list,
              ids: list[str], labels: dict[str, np.ndarray], bad_names: set[int], *, batch_size: int,
              commit_every: int, prefetch: int, layer_spec: Any, progress: bool,
              on_shard: "Callable[[ShardResult], None] | None",
              ) -> tuple[list[ShardResult], list[tuple[int, str]], float]:
    """Hand the shards ``todo`` to the actors, two queued per actor.

    Returns the shard results, ``[(shard, why it is not done)]`` and the seconds from the first shard handed
    out to the last one back (the models were loaded before).
    """
    import ray
    from ray.exceptions import RayActorError, RayTaskError
    from tqdm.auto import tqdm

    start = time.perf_counter()
    queue = deque(todo)
    running: dict[Any, tuple[Any, int]] = {}
    results: list[ShardResult] = []
    lost: list[tuple[int, str]] = []
    alive = list(actors)
    error: BaseException | None = None

    def submit(actor: Any) -> None:
        k = queue.popleft()
        rows = shards[k]
        shard_bad = [j for j, i in enumerate(rows) if i in bad_names]
        ref = actor.run_shard.remote(
            k, str(shard_path(out, k)), provenance, [records[i] for i in rows], [ids[i] for i in rows],
            {name: values[rows] for name, values in labels.items()}, shard_bad, batch_size=batch_size,
            commit_every=commit_every, prefetch=prefetch, layer_spec=layer_spec)
        running[ref] = (actor, k)

    for _ in range(2):
        for actor in alive:
            if queue:
                submit(actor)
    total = sum(len(shards[k]) for k in todo)
    with tqdm(total=total, unit="img", desc="embed (ray)", disable=not progress, dynamic_ncols=True) as bar:
        while running:
            ready, _ = ray.wait(list(running), num_returns=1)
            actor, k = running.pop(ready[0])
            try:
                result = ray.get(ready[0])
            except RayActorError as e:  # the worker died: its shards stay partial and resume on the next run
                lost.append((k, f"worker died: {str(e).splitlines()[0][:200]}"))
                if actor in alive:
                    alive.remove(actor)
                    log.warning("a Ray worker died while writing shard %d; its shards are left for the next run", k)
                continue
            except RayTaskError as e:
                error = error or _cause(e)
                lost.append((k, str(_cause(e)).splitlines()[0]))
                queue.clear()  # a bad shard (provenance, disk): finish what runs, start nothing new
                continue
            results.append(result)
            bar.update(result.embedded + result.skipped + len(result.failures))
            log.info("shard %d: %d rows embedded, %d failed (pid %d on node %s)", k, result.embedded,
                     len(result.failures), result.pid, result.node[:12])
            if on_shard is not None:
                on_shard(result)
            if queue and actor in alive:
                submit(actor)
    if error is not None:
        raise error
    lost += [(k, "no Ray worker left to do it") for k in queue]
    return results, sorted(lost), time.perf_counter() - start


# ---------------------------------------------------------------------------- stitching the shards into one cache
def stitch_shards(out: "str | os.PathLike[str]", n_shards: int, provenance: Any, *, merge: bool = False,
                  force: bool = False) -> int:
    """Write the cache ``out`` from its ``n_shards`` complete shards; returns its row count.

    Parameters
    ----------
    out : path
        The cache to write; the shards are ``shard_path(out, k)``, ``k < n_shards``.
    provenance : latent.cache.Provenance
        The run's provenance (every shard must have its identity).
    merge : bool
        False: an HDF5 virtual-dataset file over the shards (``out.tmp`` renamed onto ``out``). True:
        one ordinary cache written through a CacheWriter (resumes after a crash, replaces ``out`` only
        when complete).
    force : bool
        With ``merge``, replace an existing ``out`` (the virtual file always replaces it: the caller
        checked it).
    """
    import h5py

    from latent.cache import CacheWriter, open_cache

    out = Path(out)
    paths = [shard_path(out, k) for k in range(n_shards)]
    counts = []
    for path in paths:
        with open_cache(path) as shard:  # complete shards only: open_cache refuses anything else
            if shard.provenance.identity() != provenance.identity():
                raise ProvenanceError(f"{path} was made with {shard.provenance.describe()}, not "
                                      f"{provenance.describe()}; pass --force to start again.")
            counts.append((shard.n_rows, len(shard.failed())))
    if merge:
        with CacheWriter.open(out, provenance, mode="create", force=force) as writer:
            have, failed = writer.existing_ids, writer.failed_ids
            for path in paths:
                _merge_one(writer, path, have, failed)
            return writer.n_rows
    with h5py.File(paths[0], "r") as first:
        attrs = dict(first.attrs)
        specs = {name: (first[name].dtype, first[name].shape[1:]) for name in _dataset_names(first)}
    n, m = sum(c[0] for c in counts), sum(c[1] for c in counts)
    tmp = out.with_name(out.name + ".tmp")
    with h5py.File(tmp, "w") as f:
        for name, (dtype, tail) in specs.items():
            length = m if name in _FAILED_NAMES else n
            use = [(p, c[1] if name in _FAILED_NAMES else c[0]) for p, c in zip(paths, counts)]
            use = [(p, c) for p, c in use if c > 0]
            if not use:
                f.create_dataset(name, shape=(0, *tail), maxshape=(None, *tail), dtype=dtype)
                continue
            layout = h5py.VirtualLayout(shape=(length, *tail), dtype=dtype)
            a = 0
            for path, count in use:
                # relative to the virtual file's folder: out and out.shards move together
                layout[a:a + count] = h5py.VirtualSource(os.path.relpath(path, out.parent), name,
                                                         shape=(count, *tail))
                a += count
            f.create_virtual_dataset(name, layout)
        f.attrs.update({k: v for k, v in attrs.items() if k != "replaces_existing"})
        f.attrs.update({"created": datetime.now(timezone.utc).isoformat(timespec="seconds"), "complete": True,
                        "rows_committed": n, "failed_committed": m})
    os.replace(tmp, out)
    log.info("Wrote %s: a virtual cache over %d shards in %s (%d rows, %d failures).", out, n_shards,
             shard_dir(out), n, m)
    return n


def _dataset_names(f: Any) -> list[str]:
    from latent.ranks import RANK_NAMES

    layers = json.loads(f.attrs.get("extra", "{}")).get("layers") or {}
    return [*_ROW_NAMES, *(f"taxonomy/{r}" for r in RANK_NAMES), *_FAILED_NAMES,
            *(f"layers/{int(b)}/{t}" for b in layers.get("blocks", []) for t in ("class", "patch_mean"))]


def _merge_one(writer: Any, path: Path, have: set[str], failed: set[str], block: int = 8192) -> None:
    """Append the rows and failures of the shard ``path`` that ``writer`` does not hold yet."""
    from latent.cache import open_cache
    from latent.ranks import RANK_NAMES

    with open_cache(path) as shard:
        blocks = shard.layers
        views = {b: {t: open_cache(path, layer=b, token=t) for t in ("class", "patch_mean")} for b in blocks}
        try:
            shard_ids = shard.ids
            for a in range(0, shard.n_rows, block):
                rows = np.arange(a, min(shard.n_rows, a + block))
                keep = rows[[shard_ids[i] not in have for i in rows]]
                if keep.size == 0:
                    continue
                layers = {b: {t: view.read(keep, dtype=None) for t, view in tokens.items()}
                          for b, tokens in views.items()} or None
                writer.append(shard_ids[keep].tolist(), shard.read(keep, dtype=None),
                              {r: shard.labels(r)[keep] for r in RANK_NAMES}, layers=layers)
            bad = shard.failed()
            bad = bad[~bad["id"].isin(failed)]
            if len(bad):
                writer.add_failed(bad["id"].tolist(), bad["reason"].tolist())
        finally:
            for tokens in views.values():
                for view in tokens.values():
                    view.close()
