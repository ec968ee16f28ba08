"""``latent embed --engine ray`` (latent.distributed) on a real local Ray instance started here.

The model is the tiny random open_clip ``random-tiny`` on CPU; the images are small synthetic JPEGs
written here (three labelled species folders) plus one corrupt file. Checked: the Ray cache (virtual
dataset over shards, and ``merge``) equals the local engine's row for row, layers included; a worker
killed with SIGKILL mid-run loses nothing after a re-run, which does only the unfinished shards; bad
options are one-line InputErrors.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import time
from pathlib import Path

import h5py
import numpy as np
import pytest
from PIL import Image

import ray  # an install dependency: CI runs these tests for real

from latent.cache import open_cache
from latent.distributed import (
    _check_reachable, embed_images_ray, embed_with_engine, plan_shards, shard_dir, shard_path, stitch_shards,
)
from latent.errors import CacheError, InputError, ResourceError
from latent.extract import embed_images
from latent.ranks import RANK_NAMES

FAST = dict(model="random-tiny", progress=False, batch_size=3, commit_every=2)
SPECIES = {"albatross": "Phoebastria nigripes", "auklet": "Aethia cristatella", "blackbird": "Euphagus cyanocephalus"}
CORRUPT = "albatross/zz_corrupt.jpg"


@pytest.fixture(scope="module")
def photos(tmp_path_factory) -> tuple[Path, Path]:
    """Three species folders of 6 random JPEGs each, one corrupt file, and a taxonomy table."""
    root = tmp_path_factory.mktemp("photos")
    rng = np.random.default_rng(17)
    for folder in SPECIES:
        (root / "birds" / folder).mkdir(parents=True)
        for i in range(6):
            size = (int(rng.integers(40, 90)), int(rng.integers(40, 90)), 3)
            Image.fromarray(rng.integers(0, 256, size, dtype=np.uint8)).save(root / "birds" / folder / f"{i}.jpg")
    (root / "birds" / CORRUPT).write_bytes(b"\xff\xd8\xff\xe0 this is not the rest of a JPEG")
    table = root / "taxonomy.csv"
    rows = ["folder,kingdom,phylum,class,order,family,genus,species",
            "albatross,Animalia,Chordata,Aves,Procellariiformes,Diomedeidae,Phoebastria,Phoebastria nigripes",
            "auklet,Animalia,Chordata,Aves,Charadriiformes,Alcidae,Aethia,Aethia cristatella",
            "blackbird,Animalia,Chordata,Aves,Passeriformes,Icteridae,Euphagus,Euphagus cyanocephalus"]
    table.write_text("\n".join(rows) + "\n")
    return root / "birds", table


@pytest.fixture(scope="module")
def local_cache(photos, tmp_path_factory) -> Path:
    """The local engine's cache of the photos (the reference), with every block's layer embeddings."""
    birds, table = photos
    out = tmp_path_factory.mktemp("local") / "local.h5"
    embed_images(birds, out, taxonomy=table, join_on="folder=folder", workers=0, layers="all", **FAST)
    return out


@pytest.fixture(scope="module")
def ray_cluster():
    """A real local Ray instance: 3 logical CPUs, one torch thread per worker process."""
    if ray.is_initialized():
        ray.shutdown()
    ray.init(num_cpus=3, include_dashboard=False, logging_level="WARNING", log_to_driver=False,
             runtime_env={"env_vars": {"OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}})
    yield
    ray.shutdown()


def _by_id(path: Path) -> dict:
    """{id: (embedding float32, lineage tuple, {block: (class, patch_mean)})}, failures, provenance, attrs."""
    with open_cache(path) as cache:
        emb, ids = cache.read(), cache.ids.tolist()
        lineages = list(zip(*(cache.labels(r).tolist() for r in RANK_NAMES)))
        layers = {b: (open_cache(path, layer=b).read(), open_cache(path, layer=b, token="patch_mean").read())
                  for b in cache.layers}
        rows = {i: (emb[k], lineages[k], {b: (c[k], p[k]) for b, (c, p) in layers.items()}) for k, i in enumerate(ids)}
        failed = dict(zip(cache.failed()["id"], cache.failed()["reason"]))
        assert len(set(ids)) == len(ids)
        return {"rows": rows, "failed": failed, "provenance": cache.provenance, "n": cache.n_rows,
                "complete": cache.complete, "attrs": cache.attrs, "blocks": cache.layers}


def _assert_same(ray_path: Path, local_path: Path) -> None:
    got, want = _by_id(ray_path), _by_id(local_path)
    assert got["provenance"] == want["provenance"]  # identity, source and extra (how to load the model again)
    assert got["provenance"].identity() == want["provenance"].identity()
    assert got["complete"] and got["n"] == want["n"] == 18
    assert set(got["rows"]) == set(want["rows"])
    assert got["failed"] == want["failed"] and set(got["failed"]) == {CORRUPT}
    assert got["blocks"] == want["blocks"] and len(want["blocks"]) >= 2
    for image_id, (emb, lineage, layers) in want["rows"].items():
        g_emb, g_lineage, g_layers = got["rows"][image_id]
        np.testing.assert_allclose(g_emb, emb, rtol=2e-3, atol=2e-3)  # float16 storage of the same fp32 forward
        assert g_lineage == lineage and lineage[-1] == SPECIES[image_id.split("/")[0]]
        for b, (cls, patch) in layers.items():
            np.testing.assert_allclose(g_layers[b][0], cls, rtol=2e-3, atol=2e-3)
            np.testing.assert_allclose(g_layers[b][1], patch, rtol=2e-3, atol=2e-3)


def test_plan_shards_sorted_ids_in_runs_of_shard_size():
    ids = ["b/2", "a/1", "c/0", "a/0", "b/1"]
    shards = plan_shards(ids, 2)
    assert [[ids[i] for i in s] for s in shards] == [["a/0", "a/1"], ["b/1", "b/2"], ["c/0"]]
    assert shard_path("/x/out.h5", 3) == Path("/x/out.h5.shards/shard-00003.h5")


def test_ray_cache_equals_local_engine_virtual_and_merged(photos, local_cache, ray_cluster, tmp_path):
    birds, table = photos
    out = tmp_path / "run" / "ray.h5"
    out.parent.mkdir()
    common = dict(taxonomy=table, join_on="folder=folder", layers="all", shard_size=5, **FAST)
    report = embed_images_ray(birds, out, workers=2, **common)
    assert (report.total, report.embedded, report.skipped, report.failed, report.rows) == (19, 18, 0, 1, 18)
    assert report.failures == [(CORRUPT, _by_id(local_cache)["failed"][CORRUPT])]
    assert sorted(p.name for p in shard_dir(out).glob("shard-*")) == [f"shard-0000{k}.h5" for k in range(4)]
    with h5py.File(out, "r") as f:  # a virtual file over the shards, nothing copied
        assert f["embeddings"].is_virtual and f["ids"].is_virtual and f["failed/ids"].is_virtual
        assert f["layers/1/class"].is_virtual and f["taxonomy/species"].is_virtual
        sources = {s.file_name for s in f["embeddings"].virtual_sources()}
    assert sources == {f"ray.h5.shards/shard-0000{k}.h5" for k in range(4)}  # relative: they move together
    assert out.stat().st_size < 200_000
    _assert_same(out, local_cache)
    assert _by_id(out)["attrs"]["rows_committed"] == 18 and _by_id(out)["attrs"]["failed_committed"] == 1

    moved = tmp_path / "moved"  # the cache and its shards, moved together, read from another folder
    shutil.move(out.parent, moved)
    cwd = os.getcwd()
    try:
        os.chdir("/")
        _assert_same(moved / "ray.h5", local_cache)
    finally:
        os.chdir(cwd)

    alone = tmp_path / "alone.h5"  # the virtual file without its shards: refused, not read as zeros
    shutil.copy(moved / "ray.h5", alone)
    with pytest.raises(CacheError, match="virtual cache over shard files, and 4 of them are missing") as info:
        open_cache(alone)
    assert "\n" not in str(info.value)

    again = embed_images_ray(birds, moved / "ray.h5", workers=1, **common)
    assert again.already_complete and again.embedded == 0 and again.skipped == 19

    more = tmp_path / "more"  # the local engine adds images to a Ray cache: it becomes an ordinary cache
    shutil.copytree(birds, more)
    Image.fromarray(np.full((50, 60, 3), 90, dtype=np.uint8)).save(more / "auklet" / "new.jpg")
    before = _by_id(moved / "ray.h5")
    added = embed_images(more, moved / "ray.h5", taxonomy=table, join_on="folder=folder", workers=0, layers="all",
                         **FAST)
    assert (added.embedded, added.skipped, added.rows) == (1, 19, 19)
    with h5py.File(moved / "ray.h5", "r") as f:
        assert not f["embeddings"].is_virtual
    grown = _by_id(moved / "ray.h5")
    assert set(grown["rows"]) == set(before["rows"]) | {"auklet/new.jpg"} and grown["failed"] == before["failed"]
    assert grown["rows"]["auklet/new.jpg"][1][-1] == "Aethia cristatella"
    for image_id, (emb, lineage, layers) in before["rows"].items():  # the Ray rows, copied as they were
        np.testing.assert_array_equal(grown["rows"][image_id][0], emb)
        assert grown["rows"][image_id][1] == lineage
        for b, (cls, patch) in layers.items():
            np.testing.assert_array_equal(grown["rows"][image_id][2][b][0], cls)
            np.testing.assert_array_equal(grown["rows"][image_id][2][b][1], patch)

    merged = tmp_path / "merged.h5"
    report = embed_images_ray(birds, merged, workers=1, merge=True, **common)
    assert (report.embedded, report.failed, report.rows) == (18, 1, 18)
    with h5py.File(merged, "r") as f:
        assert not f["embeddings"].is_virtual and f["embeddings"].chunks is not None
    _assert_same(merged, local_cache)


def test_killed_worker_loses_nothing_and_rerun_does_only_missing_shards(photos, local_cache, ray_cluster, tmp_path):
    birds, table = photos
    out = tmp_path / "killed.h5"
    common = dict(taxonomy=table, join_on="folder=folder", layers="all", shard_size=3, workers=1, **FAST)
    killed: list[int] = []

    def kill_mid_shard(result) -> None:
        """After shard 0, SIGKILL the worker once it has started shard 1 (its .partial exists)."""
        if killed:
            return
        partial = shard_path(out, 1).with_name(shard_path(out, 1).name + ".partial")
        deadline = time.monotonic() + 60
        while not partial.exists() and not shard_path(out, 1).exists() and time.monotonic() < deadline:
            time.sleep(0.001)
        os.kill(result.pid, signal.SIGKILL)
        killed.append(result.pid)

    with pytest.raises(ResourceError, match="run the same command again"):
        embed_images_ray(birds, out, on_shard=kill_mid_shard, **common)
    assert killed
    assert not out.exists()  # nothing half-written reads as complete
    with pytest.raises(CacheError):
        open_cache(out)
    with open_cache(shard_path(out, 0)) as first:
        provenance = first.provenance
    with pytest.raises(CacheError):  # the stitch refuses unfinished shards
        stitch_shards(out, 7, provenance)
    assert not out.exists()
    complete = sorted(p for p in shard_dir(out).glob("shard-*.h5"))
    partials = sorted(p for p in shard_dir(out).glob("shard-*.h5.partial"))
    assert shard_path(out, 0) in complete and shard_path(out, 1) not in complete
    assert shard_path(out, 1).with_name("shard-00001.h5.partial") in partials  # killed mid-shard
    before = {p: (p.stat().st_ino, p.stat().st_mtime_ns) for p in complete}
    done_inputs = 3 * len(complete)
    for p in partials:  # rows (and failures) the killed worker had committed
        with open_cache(p.with_name(p.name[:-len(".partial")]), allow_incomplete=True) as part:
            done_inputs += part.n_rows + len(part.failed())

    report = embed_images_ray(birds, out, **common)
    assert report.skipped == done_inputs < 19
    assert report.embedded + report.skipped + report.failed == 19 and report.rows == 18
    assert {p: (p.stat().st_ino, p.stat().st_mtime_ns) for p in complete} == before  # complete shards untouched
    assert not list(shard_dir(out).glob("*.partial"))
    _assert_same(out, local_cache)


def test_bad_options_are_one_line_input_errors(photos, tmp_path):
    birds, _ = photos
    out = tmp_path / "x.h5"
    cases = [
        (dict(workers=0), "'workers'.*>= 1.*Got 0"),
        (dict(gpus_per_worker=-1), "gpus-per-worker.*Got -1"),
        (dict(shard_size=0), "'shard_size'.*Got 0"),
        (dict(address=""), "--address.*Got ''"),
        (dict(address="headnode"), r"--address\) must be 'auto', HOST:PORT or ray://HOST:PORT. Got 'headnode'"),
        (dict(store_dtype="int8"), "store_dtype.*int8"),
        (dict(device="cuda"), "--gpus-per-worker"),
    ]
    for kwargs, pattern in cases:
        with pytest.raises(InputError, match=pattern) as info:
            embed_images_ray(birds, out, model="random-tiny", **kwargs)
        assert "\n" not in str(info.value)
    with pytest.raises(InputError, match="--engine.*local, ray.*'spark'") as info:
        embed_with_engine("spark", birds, out, model="random-tiny")
    with pytest.raises(InputError, match="--address, --merge: only with --engine ray"):
        embed_with_engine("local", birds, out, address="auto", merge=True, model="random-tiny")
    assert not out.exists() and not shard_dir(out).exists()


def test_an_address_nothing_answers_at_is_refused_at_once():
    with socket.socket() as probe:  # a port that was free a moment ago: nothing listens there
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    with pytest.raises(ResourceError, match=f"Nothing answers at the Ray address 127.0.0.1:{port}") as info:
        _check_reachable(f"127.0.0.1:{port}")
    assert "\n" not in str(info.value)
    with pytest.raises(ResourceError, match="Nothing answers"):
        _check_reachable(f"ray://127.0.0.1:{port}")
    assert _check_reachable("auto") is None and _check_reachable(None) is None


def test_too_many_cpu_workers_and_other_inputs_refused(photos, ray_cluster, tmp_path):
    birds, table = photos
    with pytest.raises(InputError, match="--workers 3 .*all 3 CPUs") as info:
        embed_images_ray(birds, tmp_path / "y.h5", workers=3, **FAST)
    assert "\n" not in str(info.value)
    # shards planned for other inputs are refused, not mixed
    out = tmp_path / "z.h5"
    shard_dir(out).mkdir()
    (shard_dir(out) / "plan.json").write_text('{"format": 1, "shard_size": 4096, "n_inputs": 3, '
                                              '"ids_sha256": "0", "identity": {}}')
    with pytest.raises(CacheError, match="holds shards of another run") as info:
        embed_images_ray(birds, out, workers=1, **FAST)
    assert "\n" not in str(info.value) and not out.exists()


def test_cli_engine_options_one_line(photos, tmp_path, capsys):
    from latent.cli import main

    birds, _ = photos
    out = tmp_path / "c.h5"
    for argv, message in (
        (["--engine", "spark"], "latent embed: error: The '--engine' option must be one of local, ray. Got 'spark'"),
        (["--merge", "--shard-size", "8"], "latent embed: error: --merge, --shard-size: only with --engine ray"),
        (["--engine", "ray", "--workers", "0"], "latent embed: error: The 'workers' parameter (--workers)"),
    ):
        assert main(["embed", str(birds), "--out", str(out), "--model", "random-tiny", "--no-progress", *argv]) == 2
        err = capsys.readouterr().err.strip()
        assert err.startswith(message) and "\n" not in err and "Traceback" not in err
    assert not out.exists()
