"""Tests of latent.cache: format, round trips, indexed reads, overwrite/append rules, crash safety."""

from __future__ import annotations

import importlib.util
import json
import os
import pickle
import signal
import subprocess
import sys
import threading
import time
from datetime import datetime, timedelta
from pathlib import Path

import h5py
import numpy as np
import pytest

from latent import cache as cache_module
from latent.cache import CacheWriter, EmbeddingCache, Provenance, open_cache
from latent.errors import CacheError, InputError, ProvenanceError, TaxonomyError
from latent.ranks import RANK_NAMES

REPO = Path(__file__).resolve().parents[1]
CHILD = Path(__file__).with_name("_cache_writer_child.py")
DIM = 8


def prov(**changes) -> Provenance:
    fields = dict(model="toy-model", pretrained="toy-weights", preprocess={"resize": 224, "crop": "center"},
                  embed_dim=DIM, normalized=False, source="unit test")
    return Provenance(**{**fields, **changes})


def block(start: int, n: int, seed: int = 0, dim: int = DIM):
    """ids (n,), embeddings (n, dim) float32, taxonomy of n rows with a homonym genus 'Morus'."""
    ids = [f"id{i:04d}" for i in range(start, start + n)]
    emb = np.random.default_rng(seed + start).standard_normal((n, dim)).astype(np.float32)
    plant = ["Plantae", "Tracheophyta", "Magnoliopsida", "Rosales", "Moraceae", "Morus", "Morus alba"]
    bird = ["Animalia", "Chordata", "Aves", "Suliformes", "Sulidae", "Morus", "Morus bassanus"]
    auk = ["Animalia", "Chordata", "Aves", "Charadriiformes", "Alcidae", "Alca", ""]
    rows = [(plant, bird, auk)[i % 3] for i in range(start, start + n)]
    return ids, emb, {r: [row[k] for row in rows] for k, r in enumerate(RANK_NAMES)}


def write(path, provenance=None, blocks=((0, 30),), failed=(), **open_kw) -> None:
    with CacheWriter.open(path, provenance or prov(), **open_kw) as w:
        for start, n in blocks:
            w.append(*block(start, n))
        if failed:
            w.add_failed(list(failed), [f"reason {f}" for f in failed])


def partial_of(path: Path) -> Path:
    return path.with_name(path.name + ".partial")


# ----------------------------------------------------------------------------------------- round trips


@pytest.mark.parametrize("store_dtype", ["float32", "float16"])
def test_round_trip(tmp_path, store_dtype):
    path = tmp_path / "c.h5"
    p = prov(store_dtype=store_dtype, extra={"untrained": True, "seed": 0})
    write(path, p, blocks=((0, 20), (20, 13)), failed=["broken.jpg", "empty.png"])
    ids, _, tax = block(0, 33)
    emb = np.concatenate([block(0, 20)[1], block(20, 13)[1]])
    assert not partial_of(path).exists()
    with open_cache(str(path)) as c:
        assert (c.n_rows, c.dim, c.dtype, len(c)) == (33, DIM, np.dtype(store_dtype), 33)
        got = c.read()
        assert got.dtype == np.float32
        np.testing.assert_array_equal(got, emb.astype(store_dtype).astype(np.float32))
        raw = c.read(dtype=None)
        assert raw.dtype == np.dtype(store_dtype)
        np.testing.assert_array_equal(raw, emb.astype(store_dtype))
        assert list(c.ids) == ids
        for rank in RANK_NAMES:
            assert list(c.labels(rank)) == tax[rank]
        frame = c.taxonomy_frame()
        assert list(frame.columns) == ["id", *RANK_NAMES] and list(frame["genus"]) == tax["genus"]
        assert c.failed().to_dict("list") == {"id": ["broken.jpg", "empty.png"],
                                               "reason": ["reason broken.jpg", "reason empty.png"]}
        attrs = c.attrs
        assert attrs["complete"] is True and c.complete
        assert attrs["format_version"] == 1 and attrs["rows_committed"] == 33 and attrs["embed_dim"] == DIM
        assert set(attrs) == {"format_version", "latent_version", "model", "pretrained", "preprocess", "embed_dim",
                              "normalized", "created", "source", "extra", "complete", "rows_committed",
                              "failed_committed"}
        assert json.loads(attrs["preprocess"]) == {"resize": 224, "crop": "center"} and attrs["normalized"] is False
        created = datetime.fromisoformat(attrs["created"])
        assert created.utcoffset() == timedelta(0)
        assert c.provenance == p
        assert c.provenance.extra == {"untrained": True, "seed": 0}
    with h5py.File(path, "r") as f:  # the contract other tools read
        assert f["embeddings"].chunks[1] == DIM and f["embeddings"].maxshape == (None, DIM)
        assert f["embeddings"].compression is None
        assert h5py.check_string_dtype(f["ids"].dtype).encoding == "utf-8"
        assert set(f["taxonomy"]) == set(RANK_NAMES)


def test_missing_ranks_are_empty_and_bad_rank_keys_refused(tmp_path):
    path = tmp_path / "c.h5"
    with CacheWriter.open(path, prov()) as w:
        ids, emb, _ = block(0, 4)
        w.append(ids, emb, {"genus": ["A", None, float("nan"), "B"]})
        with pytest.raises(InputError, match="not ranks: tribe"):
            w.append(*block(4, 2)[:2], {"tribe": ["x", "y"]})
        with pytest.raises(InputError, match=r"taxonomy\['family'\] must hold 2"):
            w.append(*block(4, 2)[:2], {"family": ["x"]})
        assert w.n_rows == 4
    with open_cache(path) as c:
        assert list(c.labels("genus")) == ["A", "", "", "B"]
        assert list(c.labels("species")) == [""] * 4
        assert c.summary()["unlabelled"] == 4


def test_provenance_identity_and_validation():
    a = prov(preprocess={"crop": "center", "mean": (0.5, 0.5, 0.5), "resize": 224})
    b = prov(preprocess={"resize": 224, "mean": [0.5, 0.5, 0.5], "crop": "center"}, source="other")
    assert a.identity() == b.identity()  # key order, tuple vs list and source do not matter
    assert a.identity() != prov(normalized=True).identity()
    assert a.identity() != prov(store_dtype="float16").identity()
    assert "toy-model" in a.describe() and '"resize":224' in a.describe()
    with pytest.raises(InputError, match="store_dtype"):
        prov(store_dtype="int8")
    with pytest.raises(InputError, match="embed_dim"):
        prov(embed_dim=0)
    with pytest.raises(InputError, match="JSON"):
        prov(preprocess={"transform": object()})
    with pytest.raises(InputError, match="'model' field of Provenance must be a str"):
        prov(model=None)
    assert len({a, b, prov(preprocess={"crop": "center", "mean": [0.5] * 3, "resize": 224})}) == 2  # hashable


# ------------------------------------------------------------------------------------------- reading


@pytest.fixture()
def big(tmp_path):
    """A 300-row cache with 16-row chunks (so reads cross many chunks), and its full array."""
    path = tmp_path / "big.h5"
    with CacheWriter.open(path, prov(), chunk_rows=16) as w:
        for start in range(0, 300, 70):
            w.append(*block(start, min(70, 300 - start)))
    with open_cache(path) as c:
        yield c, c.read()


def test_read_indexing_matches_numpy(big, monkeypatch):
    c, full = big
    assert full.shape == (300, DIM)
    rng = np.random.default_rng(3)
    scattered = rng.integers(0, 300, size=120)  # unsorted, with duplicates
    cases = [scattered, [5, 5, 4, -1, 299, 0, 150], [], np.array([7]), slice(None), slice(10, 200, 7),
             slice(250, 10, -3), slice(290, 400), rng.random(300) < 0.3, np.zeros(300, dtype=bool)]
    for rows in cases:
        np.testing.assert_array_equal(c.read(rows), full[rows if not isinstance(rows, list) else np.array(rows, int)])
    monkeypatch.setattr(cache_module, "_MAX_BLOCK_BYTES", 1)  # every contiguous run split at chunk size
    np.testing.assert_array_equal(c.read(scattered), full[scattered])
    np.testing.assert_array_equal(c.read(np.arange(300)[::-1]), full[::-1])


def test_read_refuses_bad_rows(big):
    c, _ = big
    with pytest.raises(InputError, match="out of range.*300, -301"):
        c.read([1, 300, -301])
    with pytest.raises(InputError, match=r"shape \(300,\)"):
        c.read(np.ones(10, dtype=bool))
    with pytest.raises(InputError, match="integer"):
        c.read([0.5, 1.5])


def test_iter_blocks_and_normalize(big):
    c, full = big
    parts = list(c.iter_blocks(64))
    assert [s.start for s, _ in parts] == [0, 64, 128, 192, 256] and parts[-1][0].stop == 300
    np.testing.assert_array_equal(np.concatenate([a for _, a in parts]), full)
    unit = c.read(normalize=True)
    np.testing.assert_allclose(np.linalg.norm(unit, axis=1), 1.0, atol=1e-6)
    np.testing.assert_allclose(unit, full / np.linalg.norm(full, axis=1, keepdims=True), rtol=1e-6)
    blocks = np.concatenate([a for _, a in c.iter_blocks(100, normalize=True, dtype=np.float64)])
    assert blocks.dtype == np.float64
    np.testing.assert_allclose(np.linalg.norm(blocks, axis=1), 1.0, atol=1e-12)


def test_select_and_summary_count_homonyms_apart(big):
    c, _ = big
    rows = np.arange(300)
    np.testing.assert_array_equal(c.select(family="Alcidae"), rows[rows % 3 == 2])
    with pytest.raises(TaxonomyError, match="ambiguous"):  # two genera Morus: a bird and a plant
        c.select(rank="genus", name="Morus")
    np.testing.assert_array_equal(c.select(rank="genus", name="Plantae;Tracheophyta;Magnoliopsida;Rosales;Moraceae;Morus"),
                                  rows[rows % 3 == 0])
    np.testing.assert_array_equal(c.select(rank="family", name="Alcidae"), rows[rows % 3 == 2])
    np.testing.assert_array_equal(c.select(lineage=["Animalia", "Chordata", "Aves", "Suliformes", "Sulidae", "Morus"]),
                                  rows[rows % 3 == 1])
    np.testing.assert_array_equal(c.select(kingdom="Animalia", genus="Morus"), rows[rows % 3 == 1])
    assert c.select(**{"class": "Insecta"}).size == 0
    with pytest.raises(InputError, match="unknown keywords tribe"):
        c.select(tribe="X")
    with pytest.raises(InputError, match="rank= and name= together"):
        c.select(rank="genus")
    s = c.summary()
    assert s["taxa"] == {"kingdom": 2, "phylum": 2, "class": 2, "order": 3, "family": 3, "genus": 3, "species": 2}
    assert (s["rows"], s["dim"], s["dtype"], s["unlabelled"], s["failed"]) == (300, DIM, "float32", 100, 0)
    assert s["model"] == "toy-model" and s["complete"] is True and s["text_groups"] == []


def test_text_groups_round_trip(tmp_path):
    path = tmp_path / "c.h5"
    labels = ["Aves", "Mammalia", "Insecta"]
    text = np.random.default_rng(1).standard_normal((3, DIM))
    with CacheWriter.open(path, prov()) as w:
        w.append(*block(0, 5))
        w.write_text_group("class", ["x"], np.zeros((1, DIM)))
        w.write_text_group("class", labels, text, {"template": "a photo of {}.", "n_templates": 80,
                                                    "ranks": ["class"]})  # replaces the first
        got_labels, _, _ = w.read_text_group("class")
        assert list(got_labels) == labels
    with open_cache(path) as c:
        assert c.text_groups() == ["class"]
        got_labels, got, attrs = c.read_text_group("class")
        assert list(got_labels) == labels
        np.testing.assert_array_equal(got, text.astype(np.float32))
        assert attrs == {"template": "a photo of {}.", "n_templates": 80, "ranks": ["class"]}
        assert c.n_rows == 5 and c.summary()["text_groups"] == ["class"]
        with pytest.raises(CacheError, match="no text group 'order'"):
            c.read_text_group("order")


def test_reader_is_picklable(big):
    c, full = big
    clone = pickle.loads(pickle.dumps(c))
    np.testing.assert_array_equal(clone.read([3, 1]), full[[3, 1]])
    clone.close()


# ----------------------------------------------------------------------------- overwrite and append


def test_existing_cache_refused_without_force(tmp_path):
    path = tmp_path / "c.h5"
    write(path)
    with pytest.raises(CacheError, match="already exists; pass --force") as info:
        CacheWriter.open(path, prov())
    assert not isinstance(info.value, ProvenanceError)
    assert not partial_of(path).exists()


def test_force_replaces_only_at_finalize(tmp_path):
    path = tmp_path / "c.h5"
    write(path, blocks=((0, 30),))
    old = open_cache(path).read()
    w = CacheWriter.open(path, prov(model="other-model"), force=True)
    w.append(*block(100, 7))
    with open_cache(path) as c:  # still the old, complete cache
        assert c.n_rows == 30 and c.provenance.model == "toy-model"
        np.testing.assert_array_equal(c.read(), old)
    w.close()
    with open_cache(path) as c:
        assert c.n_rows == 7 and c.provenance.model == "other-model" and c.ids[0] == "id0100"


def test_append_same_provenance(tmp_path):
    path = tmp_path / "c.h5"
    write(path, blocks=((0, 10),), failed=["a"])
    with CacheWriter.open(path, prov(source="another run"), mode="append") as w:
        assert w.n_rows == 10 and w.existing_ids == {f"id{i:04d}" for i in range(10)} and w.failed_ids == {"a"}
        with pytest.raises(InputError, match="already in"):
            w.append(*block(5, 10))
        w.append(*block(10, 10))
        w.add_failed(["b"], "unreadable")
        with open_cache(path) as c:
            assert c.n_rows == 10
    with open_cache(path) as c:
        assert c.n_rows == 20 and c.complete
        np.testing.assert_array_equal(c.read(), np.concatenate([block(0, 10)[1], block(10, 10)[1]]))
        assert list(c.failed()["id"]) == ["a", "b"]


@pytest.mark.parametrize("changes", [{"model": "other-model"}, {"preprocess": {"resize": 256}},
                                     {"normalized": True}, {"store_dtype": "float16"}])
def test_append_other_provenance_refused(tmp_path, changes):
    path = tmp_path / "c.h5"
    write(path)
    other = prov(**changes)
    with pytest.raises(ProvenanceError) as info:
        CacheWriter.open(path, other, mode="append")
    message = str(info.value)
    assert prov().describe() in message and other.describe() in message and "--force" in message
    assert not partial_of(path).exists() and open_cache(path).n_rows == 30
    with CacheWriter.open(path, other, mode="append", force=True) as w:
        assert w.n_rows == 0
        w.append(*block(0, 3))
    assert open_cache(path).provenance == other


# ---------------------------------------------------------------------------------------- bad input


def test_nonfinite_rows_named_and_nothing_written(tmp_path):
    with CacheWriter.open(tmp_path / "c.h5", prov(store_dtype="float16")) as w:
        ids, emb, tax = block(0, 8)
        emb[2, 3], emb[5, 0] = np.nan, -np.inf
        with pytest.raises(InputError, match=r"in 2 rows: 2 \(id 'id0002'\), 5 \(id 'id0005'\); nothing"):
            w.append(ids, emb, tax)
        emb = block(0, 8)[1]
        emb[6, 1] = 1e6  # finite, but not in float16
        with pytest.raises(InputError, match=r"too large for float16\) in 1 rows: 6 \(id 'id0006'\)"):
            w.append(ids, emb, tax)
        assert w.n_rows == 0 and w.existing_ids == set()
        w.append(*block(0, 8))
        assert w.n_rows == 8


def test_duplicate_ids_and_wrong_shapes_refused(tmp_path):
    with CacheWriter.open(tmp_path / "c.h5", prov()) as w:
        _, emb, _ = block(0, 4)
        with pytest.raises(InputError, match="unique; repeated: a, b"):
            w.append(["a", "b", "a", "b"], emb)
        w.append(["a", "b", "c", "d"], emb)
        with pytest.raises(InputError, match="2 ids are already in .*: b, d"):
            w.append(["b", "x", "d", "y"], emb)
        with pytest.raises(InputError, match=r"shape \(4, 8\).*shape \(4, 5\)"):
            w.append(["e", "f", "g", "h"], emb[:, :5])
        with pytest.raises(InputError, match=r"shape \(3, 8\)"):
            w.append(["e", "f", "g"], emb)
        with pytest.raises(InputError, match="non-empty strings"):
            w.append(["e", "", 3, "h"], emb)
        assert w.n_rows == 4


def test_not_a_cache_and_newer_format_refused(tmp_path):
    with pytest.raises(CacheError, match="No embedding cache"):
        open_cache(tmp_path / "missing.h5")
    (tmp_path / "text.h5").write_text("not hdf5")
    with pytest.raises(CacheError, match="damaged or truncated"):
        open_cache(tmp_path / "text.h5")
    with h5py.File(tmp_path / "other.h5", "w") as f:
        f["x"] = np.zeros(3)
    with pytest.raises(CacheError, match="not a latent embedding cache"):
        open_cache(tmp_path / "other.h5")
    path = tmp_path / "c.h5"
    write(path)
    with h5py.File(path, "r+") as f:
        f.attrs["format_version"] = 2
    with pytest.raises(CacheError, match="format 2, newer"):
        open_cache(path)


# ------------------------------------------------------------------------------ interruption, resume


def test_exception_in_with_leaves_partial_and_resume_equals_clean_write(tmp_path):
    clean, path = tmp_path / "clean.h5", tmp_path / "c.h5"
    write(clean, blocks=((0, 10), (10, 10), (20, 10)), failed=["f1"])
    with pytest.raises(RuntimeError, match="boom"):
        with CacheWriter.open(path, prov()) as w:
            w.append(*block(0, 10))
            w.append(*block(10, 10))
            w.write_text_group("species", ["Morus alba"], np.ones((1, DIM)))
            raise RuntimeError("boom")
    assert not path.exists() and partial_of(path).exists()
    with pytest.raises(CacheError, match="interrupted write exists at .*c.h5.partial"):
        open_cache(path)
    with pytest.raises(CacheError, match="incomplete"):
        open_cache(partial_of(path))
    with open_cache(path, allow_incomplete=True) as c:
        assert c.n_rows == 20 and not c.complete and list(c.ids) == [f"id{i:04d}" for i in range(20)]
    with CacheWriter.open(path, prov()) as w:
        assert w.n_rows == 20 and len(w.existing_ids) == 20
        w.append(*block(20, 10))
        w.add_failed(["f1"], ["reason f1"])
    with open_cache(path) as c, open_cache(clean) as ref:
        np.testing.assert_array_equal(c.read(dtype=None), ref.read(dtype=None))
        assert c.taxonomy_frame().equals(ref.taxonomy_frame()) and c.failed().equals(ref.failed())
        assert c.text_groups() == ["species"] and list(c.read_text_group("species")[0]) == ["Morus alba"]


def test_resume_truncates_uncommitted_rows(tmp_path):
    path = tmp_path / "c.h5"
    w = CacheWriter.open(path, prov())
    w.append(*block(0, 10))
    w.abort()
    with h5py.File(partial_of(path), "r+") as f:  # rows written, but killed before rows_committed moved
        for name in ["embeddings", "ids", *(f"taxonomy/{r}" for r in RANK_NAMES), "failed/ids"]:
            f[name].resize(14, axis=0)
        f["ids"][10:14] = np.array(["id0010", "id0011", "junk", "junk"], dtype=object)
    with CacheWriter.open(path, prov()) as w:
        assert w.n_rows == 10 and "id0010" not in w.existing_ids
        w.append(*block(10, 5))
    with open_cache(path) as c:
        assert list(c.ids) == [f"id{i:04d}" for i in range(15)] and c.failed().empty
        np.testing.assert_array_equal(c.read(), np.concatenate([block(0, 10)[1], block(10, 5)[1]]))


def test_partial_of_other_provenance(tmp_path):
    path = tmp_path / "c.h5"
    w = CacheWriter.open(path, prov())
    w.append(*block(0, 10))
    w.abort()
    with pytest.raises(ProvenanceError, match="interrupted write"):
        CacheWriter.open(path, prov(model="other-model"))
    with CacheWriter.open(path, prov(model="other-model"), force=True) as w:
        assert w.n_rows == 0
        w.append(*block(50, 2))
    discarded = list(tmp_path.glob("c.h5.partial.discarded-*"))
    assert len(discarded) == 1
    assert open_cache(discarded[0], allow_incomplete=True).n_rows == 10  # moved aside, not deleted
    assert open_cache(path).provenance.model == "other-model"


def test_resume_false_moves_partial_aside(tmp_path):
    path = tmp_path / "c.h5"
    w = CacheWriter.open(path, prov())
    w.append(*block(0, 5))
    w.abort()
    with CacheWriter.open(path, prov(), resume=False) as w:
        assert w.n_rows == 0
        w.append(*block(10, 2))
    discarded = list(tmp_path.glob("c.h5.partial.discarded-*"))
    assert len(discarded) == 1 and open_cache(discarded[0], allow_incomplete=True).n_rows == 5
    assert list(open_cache(path).ids) == ["id0010", "id0011"]


def test_damaged_partial_is_moved_aside(tmp_path, caplog):
    path = tmp_path / "c.h5"
    partial_of(path).write_bytes(b"\x89HDF\r\n\x1a\n" + b"\0" * 100)
    with CacheWriter.open(path, prov()) as w:
        w.append(*block(0, 3))
    damaged = list(tmp_path.glob("c.h5.partial.damaged-*"))
    assert len(damaged) == 1 and damaged[0].read_bytes().startswith(b"\x89HDF")
    assert "moved it aside" in caplog.text
    assert open_cache(path).n_rows == 3


# ------------------------------------------------------------------------------------ real crashes


def _load_child():
    spec = importlib.util.spec_from_file_location("_cache_writer_child", CHILD)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _start_child(path: Path, sleep: float) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")])}
    return subprocess.Popen([sys.executable, str(CHILD), str(path), str(sleep)], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=env)


def _assert_first_rows(c: EmbeddingCache, child, n: int) -> None:
    """The cache holds exactly the first n rows the child writes, and the failures due by then."""
    ids, emb, tax, failed = child.expected()
    assert c.n_rows == n and n % child.BLOCK == 0
    assert list(c.ids) == ids[:n]
    np.testing.assert_array_equal(c.read(dtype=None), emb[:n])
    for rank in RANK_NAMES:
        assert list(c.labels(rank)) == tax[rank][:n]
    due = [f for f in failed if int(f[3:]) < n // child.BLOCK]
    assert list(c.failed()["id"]) in (due, due[:-1])  # a kill may fall between a block and its failure


@pytest.mark.skipif(not hasattr(signal, "SIGKILL"), reason="needs SIGKILL")
def test_sigkill_mid_write_never_corrupts_and_resumes(tmp_path):
    child = _load_child()
    path, partial = tmp_path / "crash.h5", tmp_path / "crash.h5.partial"
    rng = np.random.default_rng(11)
    sleep, damaged, previous = 0.01, 0, 0
    for kill in range(10):
        proc = _start_child(path, sleep)
        watchdog = threading.Timer(30, proc.kill)
        watchdog.start()
        if kill == 0:  # very early: before or while the writer creates the file
            time.sleep(rng.uniform(0.0, 0.05))
        else:  # after a few committed blocks, at a random point of a write or of the sleep after it
            for _ in range(int(rng.integers(1, 4))):
                assert proc.stdout.readline(), f"child exited early: {proc.stderr.read()}"
            time.sleep(rng.uniform(0.0, 1.2 * sleep))
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        watchdog.cancel()
        if path.exists():  # the child won the race and finished: then its cache must be complete
            break
        assert proc.returncode == -signal.SIGKILL
        if not partial.exists():
            continue
        with pytest.raises(CacheError, match="interrupted write"):
            open_cache(path)
        try:
            c = open_cache(path, allow_incomplete=True)
            n = c.n_rows
            _assert_first_rows(c, child, n)
            c.close()
        except CacheError as e:  # damaged by a kill during a flush: the next run moves it aside
            assert "cannot be read" in str(e)
            damaged += 1
            continue
        assert damaged or n >= previous
        previous = n
    assert previous > 0, "no kill landed after a committed block"
    if not path.exists():
        done = subprocess.run([sys.executable, str(CHILD), str(path)], capture_output=True, text=True, timeout=60,
                              env={**os.environ, "PYTHONPATH": str(REPO)})
        assert done.returncode == 0, done.stderr
    assert path.exists() and not partial.exists()
    with open_cache(path) as c:
        _assert_first_rows(c, child, child.N_BLOCKS * child.BLOCK)
        assert c.complete and c.attrs["rows_committed"] == c.n_rows and len(set(c.ids)) == c.n_rows
        assert list(c.failed()["id"]) == child.expected()[3]
    assert len(list(tmp_path.glob("crash.h5.partial.damaged-*"))) == damaged


@pytest.mark.skipif(os.environ.get("HDF5_USE_FILE_LOCKING", "").upper() == "FALSE", reason="HDF5 file locking is off")
def test_partial_being_written_by_another_process_is_left_alone(tmp_path):
    child = _load_child()
    path = tmp_path / "busy.h5"
    proc = _start_child(path, 30.0)  # writes one block, then sleeps
    try:
        assert proc.stdout.readline().startswith("open")
        assert proc.stdout.readline().startswith("committed"), proc.stderr.read()
        with pytest.raises(CacheError, match="open in another process"):
            CacheWriter.open(path, child.provenance())
        with pytest.raises(CacheError, match="open for writing in another process"):
            open_cache(path, allow_incomplete=True)
        assert partial_of(path).exists() and not list(tmp_path.glob("busy.h5.partial.*-*"))
    finally:
        proc.kill()
        proc.wait()


def test_labels_read_in_blocks_equal_the_stored_strings_and_share_objects(tmp_path, monkeypatch):
    path = tmp_path / "big.h5"
    with CacheWriter.open(path, prov(), chunk_rows=16) as w:
        for start in range(0, 300, 70):
            w.append(*block(start, min(70, 300 - start)))
    with h5py.File(path, "r") as f:
        stored = {r: f[f"taxonomy/{r}"].asstr()[:] for r in RANK_NAMES}
    monkeypatch.setattr(cache_module, "LABEL_BLOCK_ROWS", 7)  # labels met again in later blocks
    with open_cache(path) as c:
        for r in RANK_NAMES:
            labels = c.labels(r)
            assert labels.dtype == object and labels.tolist() == stored[r].tolist()
        species = c.labels("species")
        same = [i for i in range(300) if species[i] == species[0]]
        assert len(same) == 100 and all(species[i] is species[0] for i in same)
