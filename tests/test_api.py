"""The in-memory Python API: `latent.evaluate` / `latent.run_probes` / `latent.verdicts` / `latent.pl`.

Numbers equal the cache path's to the byte; `import latent` stays torch-free; results of another cache,
other data or another command are refused (nothing overwritten); a train/test leak is said; the README's
Python block runs as written.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

import latent
from latent.errors import CacheError, InputError, TaxonomyError
from latent.evaluate import Evaluation, evaluate_cache
from latent.probes.run import Probes, probe_cache
from latent.results import read_results
from latent.synthetic import make_hierarchical, write_synthetic

REPO = Path(__file__).resolve().parents[1]
ENV = dict(os.environ, PYTHONPATH=str(REPO), OMP_NUM_THREADS="1")
HEAVY = ("torch", "sklearn", "h5py", "matplotlib", "scipy", "open_clip")
#: Fast probe settings: two probes with arrays and null tables, few permutations and resamples.
PROBES = "alignment,dendrogram"
FAST = {"permutations": 9, "settings": {"alignment": {"n_boot": 20, "n_boot_rank": 20}, "dendrogram": {"n_boot": 20}}}


@pytest.fixture(scope="module")
def caches(tmp_path_factory):
    """Two small synthetic caches (different data, same ids) and their arrays as read back."""
    tmp = tmp_path_factory.mktemp("api")
    a = write_synthetic(tmp / "a.h5", make_hierarchical(per_species=6, dim=16, signal=1.0, seed=0))
    b = write_synthetic(tmp / "b.h5", make_hierarchical(per_species=6, dim=16, signal=0.5, seed=1))
    return a, b


def _arrays(path: Path):
    from latent.cache import open_cache

    with open_cache(path) as cache:
        return cache.read(), cache.taxonomy(), np.asarray(cache.ids), cache.provenance.model


def _snapshot(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir()) if p.is_file()}


# ----------------------------------------------------------------------------- the package face
def test_import_latent_loads_nothing_heavy_until_called():
    code = f"""
import sys
import latent
assert "numpy" not in sys.modules and "pandas" not in sys.modules, "import latent pulled numpy/pandas"
latent.evaluate, latent.run_probes, latent.verdicts, latent.Evaluation, latent.Probes
loaded = [m for m in {HEAVY!r} if m in sys.modules]
assert not loaded, loaded
assert {{"evaluate", "run_probes", "verdicts", "pl"}} <= set(dir(latent))
from latent.synthetic import make_hierarchical
d = make_hierarchical(per_species=4, dim=8, seed=0)
ev = latent.evaluate(d.embeddings, d.taxonomy, method="knn", n_boot=20)
assert isinstance(ev, latent.Evaluation) and len(ev.to_frame())
print("ok", "h5py" in sys.modules)
"""
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=ENV, timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.split() == ["ok", "False"]  # evaluating arrays never touches HDF5


def test_evaluate_is_callable_whichever_way_it_was_imported():
    import inspect

    import latent.evaluate as module
    from latent.evaluate import evaluate

    assert latent.evaluate is module and callable(latent.evaluate)
    assert inspect.signature(latent.evaluate) == inspect.signature(evaluate)
    assert latent.pl.plot_rank_accuracy is __import__("latent.plotting").plotting.plot_rank_accuracy
    with pytest.raises(AttributeError, match="no attribute 'nope'"):
        latent.nope  # noqa: B018


def test_readme_python_block_runs_as_written(tmp_path):
    text = (REPO / "README.md").read_text(encoding="utf-8")
    blocks = re.findall(r"<!-- test:python-api[^\n]*-->\n```python\n(.*?)```", text, re.S)
    assert len(blocks) == 1, "README.md must hold exactly one block marked <!-- test:python-api -->"
    (tmp_path / "example.py").write_text(blocks[0], encoding="utf-8")
    proc = subprocess.run([sys.executable, "example.py"], cwd=tmp_path, capture_output=True, text=True, env=ENV,
                          timeout=600)
    assert proc.returncode == 0, proc.stderr
    assert "top1" in proc.stdout and "verdict" in proc.stdout
    for name in ("rank-accuracy.pdf", "rank-accuracy.png", "results/synth-knn/metrics.csv",
                 "results/synth-knn/run.json", "results/synth-knn/predictions.parquet"):
        assert (tmp_path / name).is_file(), name


# ----------------------------------------------------------------------------- same numbers as the cache path
@pytest.mark.parametrize("kwargs", [{"method": "knn"}, {"method": "linear"},
                                    {"method": "centroid", "shots": 2, "folds": 2},
                                    {"method": "knn", "split": "species-disjoint", "clade": "kingdom=Animalia"}])
def test_in_memory_evaluation_equals_the_cache_path_to_the_byte(caches, tmp_path, kwargs):
    a, _ = caches
    from_cache = evaluate_cache(a, tmp_path / "cache", n_boot=50, device="cpu", **kwargs)
    X, taxonomy, ids, model = _arrays(a)
    ev = latent.evaluate(X.astype(np.float64), taxonomy, ids=ids, model=model, n_boot=50, device="cpu", **kwargs)
    pd.testing.assert_frame_equal(ev.to_frame(), from_cache.metrics, check_exact=True)
    ev.save(tmp_path / "memory")
    for name in ("metrics.csv", "severity.csv", "divergence.csv", "confusions.csv"):
        assert (tmp_path / "memory" / name).read_bytes() == (tmp_path / "cache" / name).read_bytes(), name
    pd.testing.assert_frame_equal(pd.read_parquet(tmp_path / "memory" / "predictions.parquet"),
                                  pd.read_parquet(tmp_path / "cache" / "predictions.parquet"))
    run = json.loads((tmp_path / "memory" / "run.json").read_text())
    assert run["cache"] is None and run["data"]["n"] == len(X) and len(run["data"]["sha256"]) == 64
    assert sorted(run["files"]) == sorted(p.name for p in (tmp_path / "memory").iterdir())


def test_in_memory_probes_equal_the_cache_path_to_the_byte(caches, tmp_path):
    a, b = caches
    from latent.probes.base import ProbeOptions

    options = ProbeOptions(permutations=FAST["permutations"], device="cpu", extra=FAST["settings"])
    from_cache = probe_cache(a, tmp_path / "cache", probes=PROBES, options=options, baseline=b)
    X, taxonomy, ids, model = _arrays(a)
    Xb = _arrays(b)[0]
    pr = latent.run_probes(X, taxonomy, probes=PROBES, baseline=Xb, ids=ids, model=model, device="cpu", **FAST)
    assert isinstance(pr, Probes) and isinstance(from_cache, Probes)
    pd.testing.assert_frame_equal(pr.to_frame(), from_cache.metrics, check_exact=True)
    files = pr.save(tmp_path / "memory")
    assert files[0].name == "metrics.csv" and files[-1].name == "run.json"
    cache_files = sorted(p.name for p in (tmp_path / "cache").iterdir())
    assert sorted(p.name for p in (tmp_path / "memory").iterdir()) == cache_files
    assert {"alignment.npz", "dendrogram_baseline.npz", "alignment_null.csv", "species.csv"} <= set(cache_files)
    for name in cache_files:
        if name.endswith(".csv"):
            assert (tmp_path / "memory" / name).read_bytes() == (tmp_path / "cache" / name).read_bytes(), name
    with np.load(tmp_path / "memory" / "dendrogram.npz") as m, np.load(tmp_path / "cache" / "dendrogram.npz") as c:
        assert sorted(m.files) == sorted(c.files) and all(np.array_equal(m[k], c[k]) for k in m.files)
    assert set(pr.tables) >= {"alignment_null", "dendrogram_baseline_null"} and "dendrogram" in pr.arrays
    # the options given as an object or as keywords are the same run
    again = latent.run_probes(X, taxonomy, probes=PROBES, baseline=Xb, ids=ids, model=model, options=options)
    pd.testing.assert_frame_equal(again.to_frame(), pr.to_frame(), check_exact=True)


def test_in_memory_zero_shot_equals_the_cache_path(tmp_path):
    import shutil

    from latent.cache import CacheWriter, open_cache

    data = make_hierarchical(per_species=4, dim=16, noise=2.0, seed=4)
    cache = write_synthetic(tmp_path / "z.h5", data)
    tax = data.taxonomy
    keys = [";".join(tax.lineage("species", s)) for s in range(tax.n_species)]
    text = data.species_means + np.random.default_rng(0).normal(0, 0.3, data.species_means.shape)
    with open_cache(cache) as c:
        provenance = c.provenance
    with CacheWriter.open(cache, provenance, mode="append") as writer:
        writer.write_text_group("species/taxon", keys, text, attrs={"logit_scale": 50.0})
    shutil.copy(cache, tmp_path / "copy.h5")
    from_cache = evaluate_cache(cache, tmp_path / "zs", method="zero-shot", n_boot=20)
    X, taxonomy, ids, model = _arrays(cache)
    ev = latent.evaluate(X, taxonomy, method="zero-shot", text={"species": (keys, text.astype(np.float32))},
                         logit_scale=50.0, ids=ids, model=model, n_boot=20)
    pd.testing.assert_frame_equal(ev.to_frame(), from_cache.metrics, check_exact=True)
    assert ev.info["logit_scale_source"] == "given" and from_cache.info["logit_scale_source"] == "model"
    species_top1 = ev.to_frame().query("rank == 'species' and metric == 'top1'")["value"].iloc[0]
    assert species_top1 > 0.5  # the texts are near the species means: zero-shot works
    # the same file content under another path is another cache
    with pytest.raises(CacheError, match=re.escape(f"holds results of {cache.resolve()}")):
        evaluate_cache(tmp_path / "copy.h5", tmp_path / "zs", method="zero-shot", n_boot=20)


def test_taxonomy_as_a_dataframe_gives_the_same_result(caches):
    a, _ = caches
    X, taxonomy, ids, _ = _arrays(a)
    frame = pd.DataFrame({r: taxonomy.labels(r) for r in latent.RANK_NAMES})
    one = latent.evaluate(X, taxonomy, method="knn", n_boot=20)
    two = latent.evaluate(X, frame, method="knn", n_boot=20)
    pd.testing.assert_frame_equal(one.to_frame(), two.to_frame(), check_exact=True)


def test_verdicts_from_results_frames_and_folders(caches, tmp_path):
    a, _ = caches
    X, taxonomy, _, _ = _arrays(a)
    pr = latent.run_probes(X, taxonomy, probes="levels,alignment", permutations=19, model="m",
                           settings={"alignment": {"n_boot": 20, "n_boot_rank": 20}, "levels": {"n_boot": 20}})
    table = latent.verdicts(pr)
    assert list(table["rank"]) == [*latent.RANK_NAMES, "all"] and set(table["model"]) == {"m"}
    assert set(table["verdict"]) <= {"yes", "no", "not testable"}
    pr.save(tmp_path / "p")
    for source in (pr.to_frame(), tmp_path / "p", tmp_path / "p" / "metrics.csv"):
        pd.testing.assert_frame_equal(latent.verdicts(source, model="m"), table)
    with pytest.raises(InputError, match="'probes' parameter of verdicts names .*nowhere"):
        latent.verdicts(tmp_path / "nowhere")


# ----------------------------------------------------------------------------- bad input, one line each
def test_bad_arrays_and_taxonomies_are_refused_with_the_parameter_named(caches):
    a, _ = caches
    X, taxonomy, _, _ = _arrays(a)
    with pytest.raises(InputError, match=r"'X' parameter of evaluate must be an \(n_images, dim\) array .*Got shape \(282,\)"):
        latent.evaluate(X[:, 0], taxonomy)
    bad = X.copy()
    bad[[3, 7], 1] = np.nan
    with pytest.raises(InputError, match=r"must be finite in float32; 2 row\(s\) are not \(first: \[3, 7\]\)"):
        latent.evaluate(bad, taxonomy)
    with pytest.raises(InputError, match=r"must hold real numbers .*Got dtype complex128"):
        latent.run_probes(X.astype(complex), taxonomy)
    with pytest.raises(InputError, match=r"'taxonomy' parameter of evaluate must have one row per image \(281\)\. Got 282"):
        latent.evaluate(X[:-1], taxonomy)
    with pytest.raises(InputError, match="must be a latent.taxonomy.Taxonomy, a DataFrame or a table path with kingdom..species columns. Got list"):
        latent.evaluate(X, list(taxonomy.labels("species")))
    with pytest.raises(TaxonomyError):
        latent.evaluate(X, pd.DataFrame({"species": taxonomy.labels("species")}))
    with pytest.raises(InputError, match=r"'ids' parameter of run_probes must have one id per image \(282\)\. Got 3"):
        latent.run_probes(X, taxonomy, ids=["a", "b", "c"])
    with pytest.raises(InputError, match="'text' parameter of evaluate is needed for method='zero-shot'"):
        latent.evaluate(X, taxonomy, method="zero-shot")
    with pytest.raises(InputError, match="'method' parameter of evaluate must be one of"):
        latent.evaluate(X, taxonomy, method="svm")
    with pytest.raises(InputError, match=r"'baseline' parameter of run_probes must have one row per image \(282\)"):
        latent.run_probes(X, taxonomy, baseline=X[:10])


# ----------------------------------------------------------------------------- one folder, one source
def test_results_of_another_cache_are_refused_and_kept(caches, tmp_path):
    a, b = caches
    out = tmp_path / "out"
    evaluate_cache(a, out, method="knn", n_boot=20)
    before = _snapshot(out)
    expected = f"{out} holds results of {a.resolve()} (model synthetic); use another --out or --force to replace them."
    with pytest.raises(CacheError) as refused:
        evaluate_cache(b, out, method="knn", n_boot=20)
    assert str(refused.value) == expected
    assert _snapshot(out) == before  # nothing written
    X, taxonomy, _, _ = _arrays(b)
    ev = latent.evaluate(X, taxonomy, method="knn", n_boot=20)
    with pytest.raises(CacheError, match=re.escape(expected)):
        ev.save(out)
    assert _snapshot(out) == before
    # the same cache re-runs into its own folder (another method replaces the results)
    evaluate_cache(a, out, method="centroid", shots=2, folds=2, n_boot=20)
    assert json.loads((out / "run.json").read_text())["method"] == "centroid"
    # force replaces another cache's results
    evaluate_cache(b, out, method="knn", n_boot=20, force=True)
    assert json.loads((out / "run.json").read_text())["cache"] == str(b.resolve())
    # in memory: the folder now holds b's results; other data is refused, force replaces
    with pytest.raises(CacheError, match=re.escape(f"holds results of {b.resolve()}")):
        ev.save(out)
    ev.save(out, force=True)
    other = latent.evaluate(X * 2.0 + 1.0, taxonomy, method="knn", n_boot=20)
    with pytest.raises(CacheError, match=r"holds results of in-memory data \(282 x 16, sha256 [0-9a-f]{12}\)"):
        other.save(out)
    ev.save(out)  # the same data again: replaced


def test_probe_refuses_another_cache_and_another_command(caches, tmp_path):
    a, b = caches
    from latent.probes.base import ProbeOptions

    options = ProbeOptions(permutations=3, device="cpu", extra={"alignment": {"n_boot": 20, "n_boot_rank": 20}})
    out = tmp_path / "p"
    probe_cache(a, out, probes="alignment", options=options)
    before = _snapshot(out)
    with pytest.raises(CacheError, match=re.escape(f"{out} holds results of {a.resolve()} (model synthetic); use "
                                                   "another --out or --force to replace them.")):
        probe_cache(b, out, probes="alignment", options=options)
    with pytest.raises(CacheError, match=re.escape(f"{out} holds `latent probe` results of {a.resolve()}")):
        evaluate_cache(a, out, method="knn", n_boot=20)
    assert _snapshot(out) == before
    probe_cache(b, out, probes="alignment", options=options, force=True)
    assert json.loads((out / "run.json").read_text())["cache"] == str(b.resolve())


def test_the_same_path_holding_another_models_embeddings_is_another_cache(tmp_path):
    cache = write_synthetic(tmp_path / "c.h5", make_hierarchical(per_species=4, dim=8, seed=0))
    out = tmp_path / "e"
    evaluate_cache(cache, out, method="knn", n_boot=20)
    write_synthetic(cache, make_hierarchical(per_species=4, dim=8, seed=3), force=True)  # other data, one path
    with pytest.raises(CacheError, match=re.escape(f"{out} holds results of {cache.resolve()} (model synthetic)")):
        evaluate_cache(cache, out, method="knn", n_boot=20)


def test_an_out_that_is_a_file_or_an_unreadable_record_is_refused(caches, tmp_path):
    a, _ = caches
    (tmp_path / "file").write_text("x")
    with pytest.raises(InputError, match=re.escape(f"The output folder {tmp_path / 'file'} is a file; give a folder")):
        evaluate_cache(a, tmp_path / "file", method="knn", n_boot=20)
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "run.json").write_text("{not json")
    with pytest.raises(CacheError, match="cannot tell whose results .* use another --out or --force"):
        evaluate_cache(a, broken, method="knn", n_boot=20)
    assert (broken / "run.json").read_text() == "{not json"
    evaluate_cache(a, broken, method="knn", n_boot=20, force=True)
    assert (broken / "metrics.csv").is_file()


def test_a_failed_save_leaves_no_metrics_and_a_rerun_drops_stale_files(caches, tmp_path):
    a, _ = caches
    from latent.probes.base import ProbeOptions

    out = tmp_path / "p"
    options = ProbeOptions(permutations=3, device="cpu", extra=FAST["settings"])
    probe_cache(a, out, probes=PROBES, options=options)
    assert (out / "dendrogram.npz").is_file()
    probe_cache(a, out, probes="alignment", options=options)  # same cache, fewer probes
    assert not (out / "dendrogram.npz").exists() and not (out / "dendrogram_null.csv").exists()
    assert sorted(json.loads((out / "run.json").read_text())["files"]) == sorted(p.name for p in out.iterdir())
    # a save that fails midway (a table pyarrow cannot write) leaves no metrics.csv: never a complete-looking folder
    X, taxonomy, _, _ = _arrays(a)
    ev = latent.evaluate(X, taxonomy, method="knn", n_boot=20)
    ev.save(tmp_path / "e")
    ev.predictions = ev.predictions.assign(bad=[object()] * len(ev.predictions))
    with pytest.raises((TypeError, ValueError)):  # pyarrow's ArrowTypeError / ArrowInvalid
        ev.save(tmp_path / "e")
    assert not (tmp_path / "e" / "metrics.csv").exists()


# ----------------------------------------------------------------------------- train/test leaks
def test_test_vectors_copied_from_training_are_a_leak_said_everywhere(tmp_path, caplog):
    data = make_hierarchical(per_species=6, dim=16, signal=0.3, seed=0)
    X = data.embeddings.copy()
    species = data.taxonomy.row_codes[:, 6]
    first = {s: np.flatnonzero(species == s)[0] for s in np.unique(species)}
    X = X[[first[s] for s in species]]  # every image of a species is one vector: each test image is in training
    clean = latent.evaluate(data.embeddings, data.taxonomy, method="knn", n_boot=20)
    assert clean.info["n_test_duplicates_in_train"] == 0
    assert not clean.to_frame()["note"].fillna("").str.contains("leak").any() and "WARNING" not in clean.summary()
    leaky = latent.evaluate(X, data.taxonomy, method="knn", n_boot=20)
    k = leaky.info["n_test"]
    assert leaky.info["n_test_duplicates_in_train"] == k > 0
    note = f"{k} test images have an identical vector in training: a leak; accuracy is inflated"
    assert leaky.to_frame()["note"].str.contains(note, regex=False).all()
    summary = leaky.summary().splitlines()
    assert summary[1].startswith(f"  WARNING: {k} of {k} test images have an identical vector in training")
    assert "a leak" in summary[-1]
    assert not any("inflated" in line for line in summary[2:-1])  # said twice, not once per rank
    assert f"LEAK: {k} test images identical to training" in repr(leaky) and "LEAK" not in repr(clean)
    # through a cache and the command line's writer: run.json and metrics.csv say it
    from latent.cache import CacheWriter, Provenance

    provenance = Provenance(model="copies", pretrained="", preprocess={"name": "none"}, embed_dim=16,
                            normalized=False, source="test", store_dtype="float32")
    frame = {r: data.taxonomy.labels(r) for r in latent.RANK_NAMES}
    with CacheWriter.open(tmp_path / "copies.h5", provenance) as writer:
        writer.append(list(data.ids), X, frame)
    with caplog.at_level("WARNING", logger="latent.evaluate"):
        evaluate_cache(tmp_path / "copies.h5", tmp_path / "out", method="linear", n_boot=20, device="cpu")
    assert "identical vector in training" in caplog.text
    run = json.loads((tmp_path / "out" / "run.json").read_text())
    assert run["n_test_duplicates_in_train"] == run["n_test"] > 0
    assert read_results(tmp_path / "out" / "metrics.csv")["note"].str.contains("a leak").all()
    # k-shot: queries identical to the support are counted over folds
    shots = latent.evaluate(X, data.taxonomy, method="centroid", shots=2, folds=2, n_boot=20)
    assert shots.info["n_test_duplicates_in_train"] == shots.info["n_test"]
    assert isinstance(shots, Evaluation) and "WARNING" in shots.summary()
    assert not any("inflated" in line for line in shots.summary().splitlines()[2:-1])
