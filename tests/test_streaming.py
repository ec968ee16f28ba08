"""Streaming at scale: block paths give exactly what the whole-array paths give.

Each test uses a tiny block size on small planted data, so the block loops run many times and every
boundary (a block ending inside a species, a last short block) is crossed.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from latent.cache import open_cache
from latent.errors import InputError
from latent.synthetic import balanced_taxonomy, make_hierarchical, synthesize, write_synthetic


def _cache_contents(path):
    """Everything a reader sees in a cache: embeddings as stored, ids, taxonomy, provenance, metadata."""
    with open_cache(path) as cache:
        return {
            "embeddings": cache.read(dtype=None),
            "dtype": cache.dtype,
            "ids": np.asarray(cache.ids).astype(str),
            "taxonomy": cache.taxonomy_frame(),
            "provenance": cache.provenance,
            "metadata": cache.metadata(),
        }


def _assert_same_cache(a, b):
    x, y = _cache_contents(a), _cache_contents(b)
    assert x["dtype"] == y["dtype"]
    np.testing.assert_array_equal(x["embeddings"], y["embeddings"])  # bit for bit
    np.testing.assert_array_equal(x["ids"], y["ids"])
    pd.testing.assert_frame_equal(x["taxonomy"], y["taxonomy"])
    assert x["provenance"] == y["provenance"]
    pd.testing.assert_frame_equal(x["metadata"], y["metadata"])


@pytest.mark.parametrize("block_rows", [1, 5, 7, 10_000])
@pytest.mark.parametrize("attribute", [None, "orthogonal"])
def test_synthesize_in_blocks_equals_the_whole_array_writer(tmp_path, block_rows, attribute):
    # The built-in taxonomy has cross-kingdom homonyms (labels with lineages); 5 images per species, so a
    # block of 7 rows is 1 species and a block of 1 row is still 1 whole species.
    kwargs = dict(per_species=5, dim=64, signal=1.0, noise=0.7, seed=3, attribute=attribute)
    whole = write_synthetic(tmp_path / "whole.h5", make_hierarchical(**kwargs))
    path, n = synthesize(tmp_path / "blocks.h5", block_rows=block_rows, **kwargs)
    assert n == 47 * 5
    _assert_same_cache(whole, path)


def test_synthesize_float16_is_the_float32_cache_rounded(tmp_path):
    tax = balanced_taxonomy((1, 1, 2, 2, 2, 2, 3))
    kwargs = dict(per_species=4, dim=16, seed=5)
    a, _ = synthesize(tmp_path / "a.h5", tax, block_rows=9, **kwargs)
    b, _ = synthesize(tmp_path / "b.h5", tax, block_rows=9, store_dtype="float16", **kwargs)
    x, y = _cache_contents(a), _cache_contents(b)
    assert x["dtype"] == np.float32 and y["dtype"] == np.float16
    np.testing.assert_array_equal(x["embeddings"].astype(np.float16), y["embeddings"])
    assert y["provenance"].store_dtype == "float16"
    data = make_hierarchical(tax, **kwargs)  # and the rows are make_hierarchical's, in its order
    np.testing.assert_array_equal(x["embeddings"], data.embeddings)
    np.testing.assert_array_equal(x["ids"], data.ids)


def test_synthesize_never_holds_more_than_a_block(tmp_path, monkeypatch):
    # Every append gets at most max(block_rows, per_species) rows of whole species.
    from latent.cache import CacheWriter

    sizes = []
    original = CacheWriter.append

    def counting(self, ids, embeddings, *args, **kwargs):
        sizes.append(len(embeddings))
        return original(self, ids, embeddings, *args, **kwargs)

    monkeypatch.setattr(CacheWriter, "append", counting)
    synthesize(tmp_path / "c.h5", per_species=3, dim=8, block_rows=10)
    assert sizes == [9] * 15 + [6]  # 47 species: 15 blocks of 3 (9 rows), then the last 2
    assert sum(sizes) == 47 * 3


def test_synthesize_refuses_bad_settings(tmp_path):
    with pytest.raises(InputError, match="store_dtype"):
        synthesize(tmp_path / "x.h5", per_species=2, dim=4, store_dtype="float64")
    with pytest.raises(InputError, match="block_rows"):
        synthesize(tmp_path / "x.h5", per_species=2, dim=4, block_rows=0)
    assert not (tmp_path / "x.h5").exists()


def test_an_interrupted_synthesize_resumes_to_the_same_cache(tmp_path, monkeypatch):
    from latent.cache import CacheWriter

    kwargs = dict(per_species=4, dim=8, seed=2, attribute="inside")
    whole = write_synthetic(tmp_path / "whole.h5", make_hierarchical(**kwargs))
    original = CacheWriter.append
    calls = []

    def failing(self, *args, **kw):
        calls.append(1)
        if len(calls) == 4:  # interrupted after three blocks (36 rows)
            raise KeyboardInterrupt
        return original(self, *args, **kw)

    monkeypatch.setattr(CacheWriter, "append", failing)
    with pytest.raises(KeyboardInterrupt):
        synthesize(tmp_path / "r.h5", block_rows=12, **kwargs)
    monkeypatch.setattr(CacheWriter, "append", original)
    assert not (tmp_path / "r.h5").exists() and (tmp_path / "r.h5.partial").exists()
    path, _ = synthesize(tmp_path / "r.h5", block_rows=10, **kwargs)  # other blocks: rows 36.. only
    _assert_same_cache(whole, path)


def test_synthesize_too_large_a_block_leaves_no_file(tmp_path):
    # One species of 10**6 x 10**6 values cannot be allocated: refused before the file is made.
    with pytest.raises(MemoryError):
        synthesize(tmp_path / "m.h5", balanced_taxonomy((1,) * 7), per_species=10**6, dim=10**6)
    assert list(tmp_path.iterdir()) == []


# ---------------------------------------------------------------------------- reading caches in blocks
@pytest.fixture(scope="module")
def half_cache(tmp_path_factory):
    """47 species x 6 images, 32-d, stored as float16 (a zero row planted, to check it stays zero)."""
    path, _ = synthesize(tmp_path_factory.mktemp("half") / "h.h5", per_species=6, dim=32, seed=4,
                         store_dtype="float16")
    return path


@pytest.mark.parametrize("normalize", [False, True])
@pytest.mark.parametrize("dtype", [None, np.float32, np.float64])
def test_block_reads_equal_whole_reads(half_cache, monkeypatch, normalize, dtype):
    import latent.cache as cache_module

    rng = np.random.default_rng(0)
    selections = [None, slice(5, 200), np.arange(0, 282, 3), rng.integers(0, 282, 500), np.flatnonzero(rng.random(282) < 0.4)]
    monkeypatch.setattr(cache_module, "_MAX_BLOCK_BYTES", 10**12)  # one block
    with open_cache(half_cache) as cache:
        whole = [cache.read(rows, dtype=dtype, normalize=normalize) for rows in selections]
        stored = cache.read(dtype=None)
    monkeypatch.setattr(cache_module, "_MAX_BLOCK_BYTES", 1)  # one chunk (or one row) per block
    with open_cache(half_cache) as cache:
        blocks = [cache.read(rows, dtype=dtype, normalize=normalize) for rows in selections]
    for rows, a, b in zip(selections, whole, blocks):
        assert a.dtype == b.dtype == (np.float16 if dtype is None else dtype)
        np.testing.assert_array_equal(a, b)
        # and both are the stored values, cast (and normalised) row by row
        expected = stored[slice(None) if rows is None else rows].astype(a.dtype if not normalize else
                                                                         (np.float64 if dtype == np.float64 else np.float32))
        if normalize:
            expected = expected / np.linalg.norm(expected, axis=1, keepdims=True)
        np.testing.assert_allclose(b.astype(np.float64), expected.astype(a.dtype).astype(np.float64),
                                   rtol=1e-6 if a.dtype != np.float16 else 1e-3)


def test_leak_count_in_blocks_equals_isin():
    from latent.evaluate import _duplicates_in_train, _row_keys

    rng = np.random.default_rng(1)
    train = rng.standard_normal((50, 6)).astype(np.float32)
    test = rng.standard_normal((20, 6)).astype(np.float32)
    test[[2, 7, 8]] = train[[4, 4, 30]]  # three leaks (two copies of one training row)
    train[10] = 0.0
    test[11] = -0.0  # -0.0 equals 0.0: a fourth leak
    expected = int(np.isin(_row_keys(test), _row_keys(train)).sum())
    assert expected == 4
    for block in (1, 3, 7, 1000):
        assert _duplicates_in_train(train, test, block_rows=block) == 4


def test_centroid_predictions_in_query_blocks_equal_one_block():
    from latent.predictors import predict_centroid
    from latent.splits import kshot_split

    data = make_hierarchical(per_species=6, dim=16, seed=6)
    tax = data.taxonomy
    support, query = kshot_split(tax, np.arange(tax.n_rows), shots=2, fold=0, seed=0)
    X = data.embeddings
    for mode in ("per-rank", "flat"):
        whole = predict_centroid(X[support], support, X[query], query, tax, mode=mode)
        for chunk in (1, 7):
            part = predict_centroid(X[support], support, X[query], query, tax, mode=mode, chunk_size=chunk)
            np.testing.assert_array_equal(part.topk, whole.topk)
            # BLAS rounds a (1, D) x (D, C) product (gemv) apart from a whole block's (gemm): last bits only
            np.testing.assert_allclose(part.scores, whole.scores, rtol=1e-12, atol=1e-14)


# ---------------------------------------------------------------------------- evaluate: read by split, sampled test
@pytest.mark.parametrize("method", ["knn", "centroid"])
def test_evaluate_cache_reads_split_rows_and_equals_in_memory(half_cache, tmp_path, monkeypatch, method):
    # The cache path reads each split's rows (in blocks of one chunk here); the in-memory path indexes one
    # array of every row. Same split, same predictions, same metrics, bit for bit.
    import latent.cache as cache_module
    from latent.evaluate import evaluate, evaluate_cache

    monkeypatch.setattr(cache_module, "_MAX_BLOCK_BYTES", 1)
    kwargs = dict(method=method, n_boot=20, folds=2, seed=3)
    on_cache = evaluate_cache(half_cache, tmp_path / "e", max_test=0, **kwargs)
    with open_cache(half_cache) as cache:
        X, tax, ids = cache.read(normalize=True), cache.taxonomy(), cache.ids
    in_memory = evaluate(X, tax, ids=ids, **kwargs)
    columns = ["rank", "metric", "value", "ci_low", "ci_high", "n"]
    pd.testing.assert_frame_equal(on_cache.metrics[columns], in_memory.metrics[columns])
    pd.testing.assert_frame_equal(on_cache.predictions, in_memory.predictions)
    assert on_cache.info["test_sample"] == [] and on_cache.info["max_test"] == 0


@pytest.mark.parametrize("method", ["knn", "centroid"])
def test_a_sampled_test_set_says_so_everywhere(half_cache, tmp_path, method):
    from latent.evaluate import evaluate_cache

    from latent.splits import random_split

    with open_cache(half_cache) as cache:
        tax = cache.taxonomy()
    # knn: the random split's test images (2 of 6 per species); centroid: 6 - 5 shots = 1 query per species,
    # so 47 queries: fewer than 60, nothing sampled there; use 2 shots for 4 queries per species.
    full = len(random_split(tax, np.arange(tax.n_rows), test_fraction=0.3, seed=0)[1]) if method == "knn" else 188
    result = evaluate_cache(half_cache, tmp_path / "s", method=method, n_boot=20, folds=2, shots=2, max_test=60)
    # every species gives min(count, k) images for the largest k that fits in 60: k = 1, 47 images
    predictions = result.predictions
    runs = [predictions] if "fold" not in predictions.columns else [g for _, g in predictions.groupby("fold")]
    with open_cache(half_cache) as cache:
        species_of = dict(zip(np.asarray(cache.ids).astype(str), cache.labels("species")))
    for run in runs:
        assert len(run) == 47 and len({species_of[i] for i in run["id"]}) == 47
    note = f"test images: a stratified sample of 47 of {full:,} (max_test 60; --max-test 0 scores all)"
    assert set(result.info["test_sample"]) == {note}
    assert result.metrics["note"].fillna("").str.contains(note, regex=False).all()
    assert f"sampled: {note}" in result.summary()
    assert result.summary().count(note) == 1  # once, not on every rank's line of the console table
    top1 = result.metrics[(result.metrics["metric"] == "top1") & (result.metrics["rank"] == "kingdom")]
    assert set(top1["n"]) == {47}  # the rows' n is the sample's size


# ---------------------------------------------------------------------------- probes: a sample of rows, said so
def test_probe_data_sums_in_blocks_equal_one_block(monkeypatch):
    import latent.probes.base as base
    from latent.probes.base import ProbeData

    data = make_hierarchical(per_species=5, dim=12, seed=8)
    whole = ProbeData.from_arrays(data.embeddings, data.taxonomy)
    monkeypatch.setattr(base, "_SUM_ROWS", 4)
    blocks = ProbeData.from_arrays(data.embeddings, data.taxonomy)
    np.testing.assert_array_equal(blocks.centroids, whole.centroids)
    # and the centroids are the species means, computed independently
    expected = np.stack([data.embeddings[whole.species == s].astype(np.float64).mean(axis=0)
                         for s in range(whole.n_species)])
    np.testing.assert_allclose(whole.centroids, expected, rtol=1e-12, atol=1e-12)


def test_probe_rows_read_in_blocks_equal_the_whole_read(half_cache, monkeypatch):
    import latent.cache as cache_module
    from latent.probes.run import load_probe_data

    whole, _ = load_probe_data(half_cache)
    monkeypatch.setattr(cache_module, "_MAX_BLOCK_BYTES", 1)
    blocks, _ = load_probe_data(half_cache, max_rows=10**6)  # above the row count: nothing sampled
    np.testing.assert_array_equal(blocks.X, whole.X)
    np.testing.assert_array_equal(blocks.raw_norms, whole.raw_norms)
    np.testing.assert_array_equal(blocks.centroids, whole.centroids)


def test_probes_on_a_sample_of_rows_say_so(half_cache, tmp_path):
    import json

    from latent.probes.base import ProbeOptions
    from latent.probes.run import load_probe_data, probe_cache

    # 47 species x 6 images; max_rows 100: k = 2 per species (94 rows) fits, k = 3 (141) does not
    sample, _ = load_probe_data(half_cache, max_rows=100, seed=0)
    assert len(sample.X) == 94 and (sample.counts == 2).all()
    with open_cache(half_cache) as cache:  # the rows are the cache's own rows, read exactly
        position = {i: k for k, i in enumerate(np.asarray(cache.ids).astype(str))}
        rows = np.array([position[i] for i in sample.ids])
        X = cache.read(rows)
    np.testing.assert_array_equal(sample.X, X / np.linalg.norm(X, axis=1, keepdims=True))

    result = probe_cache(half_cache, tmp_path / "p", probes="shape",
                         options=ProbeOptions(permutations=9, max_rows=100))
    note = "images: a stratified sample of 94 of 282 (2 per species at most; max_rows 100; --max-rows 0 reads all)"
    assert result.info["sample"] == note and result.info["n_images"] == 94
    assert json.loads((tmp_path / "p" / "run.json").read_text())["sample"] == note
    assert result.metrics["note"].str.contains(note, regex=False).all()
    assert f"sampled: {note}" in result.summary()
    full = probe_cache(half_cache, tmp_path / "q", probes="shape", options=ProbeOptions(permutations=9))
    assert "sample" not in full.info and full.info["n_images"] == 282
    assert not full.metrics["note"].fillna("").str.contains("stratified sample of", regex=False).any()


def test_levels_on_a_sample_of_species_reaches_the_species_level():
    # Above max_species (3,000 by default; 10,000 species at scale) levels runs on a species sample; its
    # last level is the species level of that sample (it raised IndexError before).
    from latent.probes.base import ProbeData, ProbeOptions
    from latent.probes.levels import probe_levels

    data = make_hierarchical(balanced_taxonomy(), per_species=3, dim=16, seed=9)
    probe_data = ProbeData.from_arrays(data.embeddings, data.taxonomy)
    result = probe_levels(probe_data, ProbeOptions(permutations=9, extra={"levels": {"max_species": 40}}))
    metrics = result.to_frame()
    species_rows = metrics[metrics["rank"] == "species"]
    assert len(species_rows) and (species_rows["n"] <= 40 * 3).all()


def test_separability_above_its_image_cap_runs_on_a_stated_species_sample():
    import latent
    from latent.synthetic import make_hierarchical

    data = make_hierarchical(per_species=6, dim=16, signal=1.0, seed=2)
    n = data.taxonomy.n_rows
    settings = {"separability": {"max_images": 100, "permutations": 0, "n_boot": 0, "splits": "random"}}
    pr = latent.run_probes(data.embeddings, data.taxonomy, probes="separability", permutations=0, settings=settings)
    rows = pr.metrics
    # 5 images of each of 20 species (the cap cannot hold 5 of all 47)
    assert rows["note"].str.contains(f"sample of 100 of {n} images \\(20 of 47 species").all()
    (notes,) = [v for k, v in pr.info["probe_info"].items() if k.startswith("separability")]
    assert notes["sample"] == {"images": 100, "of": n, "species": 20, "max_images": 100, "max_work": 1.5e9}
    full = latent.run_probes(data.embeddings, data.taxonomy, probes="separability", permutations=0,
                             settings={"separability": {**settings["separability"], "max_images": n}})
    notes = full.metrics["note"].fillna("") if "note" in full.metrics.columns else pd.Series([], dtype=str)
    assert not notes.str.contains("sample of").any()


def test_separability_above_its_work_cap_runs_on_the_largest_sample_within_it():
    # One null permutation's fits (images x d x taxa x splits) above separability.max_work: the probe runs on
    # the largest species-stratified sample within it, says so, and still finds a planted hierarchy.
    import latent
    from latent.probes.base import ProbeData
    from latent.probes.separability import _capped_sample, _sample_work, permutation_work
    from latent.synthetic import make_hierarchical

    data = make_hierarchical(per_species=8, dim=16, signal=3.0, seed=4)
    probe_data = ProbeData.from_arrays(data.embeddings, data.taxonomy)
    full = permutation_work(probe_data, 1, 0.3)
    budget = full / 3
    rows, why = _capped_sample(probe_data, 10**6, budget, 1, 0.3, seed=0)
    assert _sample_work(probe_data, rows, 1, 0.3) <= budget < full
    assert "separability.max_work" in why
    # the largest: every larger sample of the same seeded sequence is over the budget
    from latent.probes.common import stratified_sample

    larger = [np.sort(stratified_sample(probe_data.species, probe_data.n_species, m, min_per_species=5, seed=0,
                                       tag=7)[0]) for m in range(len(rows) + 1, len(rows) + 40)]
    larger = [r for r in larger if len(r) > len(rows)]
    assert larger and all(_sample_work(probe_data, r, 1, 0.3) > budget for r in larger)
    assert _capped_sample(probe_data, 10**6, full, 1, 0.3, seed=0) is None  # within both: no sample
    settings = {"separability": {"max_work": budget, "permutations": 19, "n_boot": 0, "splits": "species-disjoint"}}
    pr = latent.run_probes(data.embeddings, data.taxonomy, probes="separability", settings=settings)
    rows_ = pr.metrics
    assert rows_["note"].str.contains(f"sample of {len(rows)} of {len(probe_data.X)} images").all()
    assert rows_["note"].str.contains("separability.max_work").all()
    (info,) = [v for k, v in pr.info["probe_info"].items() if k.startswith("separability")]
    assert info["sample"]["images"] == len(rows) and info["sample"]["max_work"] == budget
    # the planted hierarchy is still found above its null at the ranks scored
    found = rows_[rows_["rank"].isin(["order", "family"])]
    assert len(found) and (found["p_value"] <= 0.05).all()
    # and on the same tree without a hierarchy the sampled probe does not find one (3 seeds)
    hits = []
    for seed in range(3):
        flat = make_hierarchical(per_species=8, dim=16, signal=0.0, seed=seed)
        rows0 = latent.run_probes(flat.embeddings, flat.taxonomy, probes="separability", seed=seed,
                                  settings=settings).metrics
        assert rows0["note"].str.contains("separability.max_work").all()
        hits.append(int((rows0["p_value"] <= 0.05).sum()))
    assert sum(hits) <= 1, hits


# ---------------------------------------------------------------------------- evaluate linear: a training sample
def test_linear_trains_on_the_largest_sample_within_its_work_budget(monkeypatch):
    # Above MAX_TRAIN_WORK the linear probe trains on the largest species-stratified sample within it; in a
    # random split the test images of the species left out are left out too; every row, run info and the
    # summary say so; a planted hierarchy is still read at the upper ranks.
    import latent.evaluate as module
    from latent.evaluate import evaluate, train_work
    from latent.splits import random_split
    from latent.synthetic import make_hierarchical

    data = make_hierarchical(per_species=8, dim=16, signal=3.0, seed=5)
    tax = data.taxonomy
    train, test = random_split(tax, np.arange(tax.n_rows), test_fraction=0.3, seed=0)
    full = train_work(tax, train, 16)
    monkeypatch.setattr(module, "MAX_TRAIN_WORK", full / 4)
    result = evaluate(data.embeddings, tax, method="linear", n_boot=0, seed=0)
    (note,) = result.info["train_sample"]
    assert note.startswith("training images: a stratified sample of ") and "--max-train 0 trains on all" in note
    assert result.metrics["note"].fillna("").str.contains(note, regex=False).all()
    assert f"sampled: {note}" in result.summary() and result.info["max_train"] == "auto"
    assert result.summary().count(note) == 1  # once, not on every rank's line of the console table
    predictions = result.predictions
    tested = set(tax.row_codes[predictions["row"].to_numpy(), 6]) if "row" in predictions.columns else None
    kept = int(note.split("(")[1].split(" of ")[0].replace(",", ""))
    assert kept < tax.n_species
    species_rows = result.metrics[(result.metrics["metric"] == "top1") & (result.metrics["rank"] == "species")]
    assert int(species_rows["n_species"].iloc[0]) == kept  # the test images are the sampled species'
    if tested is not None:
        assert len(tested) == kept
    # the planted hierarchy: well above chance at order
    order = result.metrics[(result.metrics["metric"] == "top1") & (result.metrics["rank"] == "order")]
    assert float(order["value"].iloc[0]) > 0.8
    # 0: every training image; N: at most N
    everything = evaluate(data.embeddings, tax, method="linear", n_boot=0, seed=0, max_train=0)
    assert everything.info["train_sample"] == [] and everything.info["max_train"] == 0
    capped = evaluate(data.embeddings, tax, method="linear", n_boot=0, seed=0, max_train=100)
    (capped_note,) = capped.info["train_sample"]
    assert "max_train 100;" in capped_note and " of {:,} ".format(len(train)) in capped_note
    with pytest.raises(Exception, match="'max_train'.*-3"):
        evaluate(data.embeddings, tax, method="linear", max_train=-3)


def test_cli_max_train_is_checked_in_one_line(tmp_path):
    import subprocess
    import sys

    run = subprocess.run([sys.executable, "-m", "latent.cli", "evaluate", str(tmp_path / "none.h5"), "--out",
                          str(tmp_path / "e"), "--method", "linear", "--max-train", "lots"], capture_output=True, text=True)
    assert run.returncode != 0 and "Traceback" not in run.stderr
    assert "--max-train must be 'auto', 0" in run.stderr and "'lots'" in run.stderr


def test_rows_of_ids_finds_every_row_and_names_the_missing():
    from latent.api import rows_of_ids

    rows, missing = rows_of_ids(np.array(["a", "b", "c", "7"]), ["c", "a", "x", 7, "c"])
    assert rows.tolist() == [2, 0, -1, 3, 2] and missing == ["x"]
    assert rows_of_ids(["a"], [])[0].size == 0
