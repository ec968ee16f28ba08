"""latent.pipeline: one reuse rule (identity of every input and parameter), atomic steps, one writer per folder.

Real files throughout: small .npy embeddings imported by a real experiment config, real HDF5 caches, a
real second process holding the lock.
"""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from latent import pipeline
from latent.errors import CacheError, InputError
from latent.experiment import load_config, run_experiment
from latent.pipeline import RECORD, ReportSettings
from latent.ranks import RANK_NAMES
from latent.report import build_report
from latent.synthetic import balanced_taxonomy, make_hierarchical, write_synthetic

#: 16 species (2 orders x 2 families x 2 genera x 2 species), 4 images each, 8 dimensions.
BRANCHING = (1, 1, 1, 2, 2, 2, 2)
STEPS = ReportSettings(evaluations=(("knn", "random"),), probes=("levels",), permutations=19, n_boot=20,
                       projections=("pca",), verdict_permutations=19)


def _data(signal: float, seed: int):
    return make_hierarchical(balanced_taxonomy(BRANCHING), per_species=4, dim=8, signal=signal, seed=seed)


def write_npy(path: Path, signal: float = 2.0, seed: int = 0) -> Path:
    np.save(path, _data(signal, seed).embeddings)
    return path


def write_metadata(path: Path) -> Path:
    data = _data(2.0, 0)
    frame = pd.DataFrame({"id": data.ids})
    for rank, name in enumerate(RANK_NAMES):
        frame[name] = data.taxonomy.row_names[:, rank]
    frame.to_csv(path, index=False)
    return path


def write_config(path: Path, embeddings: str, *, seed: int = 0, n_boot: int = 20) -> Path:
    path.write_text(textwrap.dedent(f"""\
        name: tiny
        seed: {seed}
        data:
          import: {{embeddings: {embeddings}, metadata: meta.csv, id_column: id}}
        evaluate: [{{method: knn, split: random}}]
        probe: {{probes: [levels], permutations: 19}}
        report: {{projections: [pca], n_boot: {n_boot}, verdict_permutations: 19}}
        """))
    return path


def records(out: Path) -> dict[str, dict]:
    """Every run record under ``out`` (relative path -> record)."""
    found = {p.relative_to(out).as_posix(): json.loads(p.read_text()) for p in out.rglob(RECORD)}
    found.update({p.relative_to(out).as_posix(): json.loads(p.read_text()) for p in out.rglob("*.step.json")})
    return found


def stamps(out: Path) -> dict[Path, int]:
    """mtime of every result file under ``out`` (the report's own documents excluded: always re-rendered)."""
    return {p: p.stat().st_mtime_ns for p in [*out.glob("caches/*"), *out.glob("report/runs/**/*")] if p.is_file()}


def leftovers(root: Path) -> list[Path]:
    return [p for p in root.rglob("*") if p.name.endswith(".partial")
            or (p.name.startswith(".") and (".tmp-" in p.name or ".old-" in p.name))]


@pytest.fixture
def study(tmp_path):
    write_npy(tmp_path / "a.npy", 2.0, seed=0)
    write_npy(tmp_path / "b.npy", 0.0, seed=1)
    write_metadata(tmp_path / "meta.csv")
    return tmp_path


def test_stale_import_reruns_every_step_and_same_config_reuses_all(study, caplog):
    """(a) a.npy -> b.npy re-runs the import and everything after it; (b) the same config twice reuses all."""
    config = write_config(study / "exp.yaml", "a.npy")
    results = study / "results"
    first = run_experiment(config, results=results)
    out = results / "tiny"
    before, marks = records(out), stamps(out)
    assert {"caches/imported.h5.step.json", f"report/runs/imported-{_run_hash(out)}/projection-pca-seed0.csv.step.json"} \
        <= set(before)
    assert sum(1 for k in before if k.endswith("/" + RECORD)) == 2  # one evaluation, one probe run
    # (b) unchanged config: nothing recomputed, every step says so
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="latent.pipeline"):
        run_experiment(config, results=results)
    assert stamps(out) == marks and records(out) == before
    reused = [r.getMessage() for r in caplog.records if r.getMessage().startswith("reusing")]
    assert len(reused) == 4, reused  # import, evaluate, probe, projection
    # (a) the config now imports b.npy: the import and every later step ran again, on b's numbers
    write_config(config, "b.npy")
    second = run_experiment(config, results=results)
    after = records(out)
    assert set(after) == set(before)
    for key in before:
        assert after[key]["key"] != before[key]["key"], key  # a new identity for every step
    assert after["caches/imported.h5.step.json"]["identity"]["inputs"]["embeddings"]["path"] == str(study / "b.npy")
    assert all(stamps(out).get(p) != t for p, t in marks.items() if not p.name.endswith(".step.json"))
    old = first.report.answer.set_index("rank")["value"]
    new = second.report.answer.set_index("rank")["value"]
    assert not np.allclose(old.to_numpy(dtype=float), new.to_numpy(dtype=float), equal_nan=True)
    from latent.cache import open_cache

    with open_cache(out / "caches" / "imported.h5") as cache:
        assert np.allclose(cache.read(), np.load(study / "b.npy"))
    assert not leftovers(out)


def _run_hash(out: Path) -> str:
    return pipeline.short_hash(str((out / "caches" / "imported.h5").resolve()))[:6]


def test_data_step_reruns_on_edited_contents_and_parameters(study):
    """(c) the same path with new contents (same size) re-imports; so does any import parameter."""
    config_path = write_config(study / "exp.yaml", "a.npy")
    out = study / "exp"
    config = load_config(config_path)
    [cache], _ = pipeline.make_caches(config, out, force=False)
    record = json.loads((out / "caches" / "imported.h5.step.json").read_text())
    stat = cache.stat()
    pipeline.make_caches(config, out, force=False)
    assert cache.stat().st_mtime_ns == stat.st_mtime_ns and cache.stat().st_ino == stat.st_ino
    size = (study / "a.npy").stat().st_size
    write_npy(study / "a.npy", 2.0, seed=5)  # in place: same path, same size, other numbers
    assert (study / "a.npy").stat().st_size == size
    pipeline.make_caches(config, out, force=False)
    edited = json.loads((out / "caches" / "imported.h5.step.json").read_text())
    assert edited["identity"]["inputs"]["embeddings"]["sha256"] != record["identity"]["inputs"]["embeddings"]["sha256"]
    from latent.cache import open_cache

    with open_cache(cache) as c:
        assert np.allclose(c.read(), np.load(study / "a.npy"))
    # an import parameter (the recorded model name) re-runs the import too
    config["data"]["import"]["model"] = "my-model"
    pipeline.make_caches(config, out, force=False)
    with open_cache(cache) as c:
        assert c.provenance.model == "my-model"
    # a cache replaced by hand behind the record's back is not trusted
    write_synthetic(cache, make_hierarchical(per_species=2, dim=4, seed=0), force=True)
    pipeline.make_caches(config, out, force=False)
    with open_cache(cache) as c:
        assert c.provenance.model == "my-model"


def test_synth_step_keyed_by_its_parameters(tmp_path):
    config_path = tmp_path / "exp.yaml"
    config_path.write_text("name: s\ndata: {synth: {signal: 1.0, per_species: 2, dim: 4, branching: [1,1,1,1,1,2,2]}}\n")
    config = load_config(config_path)
    [cache], _ = pipeline.make_caches(config, tmp_path / "out", force=False)
    ino = cache.stat().st_ino
    pipeline.make_caches(config, tmp_path / "out", force=False)
    assert cache.stat().st_ino == ino  # reused
    config["data"]["synth"]["branching"] = [1, 1, 1, 1, 2, 2, 2]  # same file name, another taxonomy
    pipeline.make_caches(config, tmp_path / "out", force=False)
    assert cache.stat().st_ino != ino
    from latent.cache import open_cache

    with open_cache(cache) as c:
        assert c.taxonomy().n_species == 8


@pytest.fixture
def cache(tmp_path):
    return write_synthetic(tmp_path / "model.h5", _data(2.0, 0))


def _steps(cache: Path, folder: Path, settings: ReportSettings, force: bool = False):
    evaluations = pipeline.evaluate_steps(cache, folder, settings, force)
    probe = pipeline.probe_step(cache, folder, settings, force, None)
    projections = pipeline.projection_steps(cache, folder, settings, force)
    return [*evaluations, probe, *projections]


def _record_of(path: Path) -> Path:
    return path / RECORD if path.is_dir() else path.with_name(path.name + ".step.json")


def _times(paths) -> list[int]:
    return [_record_of(p).stat().st_mtime_ns for p in paths]


@pytest.mark.parametrize("change, reruns", [
    ({"n_boot": 30}, {"evaluate"}),
    ({"permutations": 29}, {"probe"}),
    ({"verdict_permutations": 29}, {"probe"}),
    ({"max_projection_points": 10}, {"projection"}),
    ({"seed": 1}, {"evaluate", "probe", "projection"}),
])
def test_a_changed_parameter_reruns_exactly_its_steps(cache, tmp_path, change, reruns):
    """(c) one parameter changed: the steps that depend on it run (a new or replaced output), no other."""
    folder = tmp_path / "runs"
    first = _steps(cache, folder, STEPS)
    times = dict(zip([p.name.split("-")[0] for p in first], _times(first)))
    second = _steps(cache, folder, ReportSettings(**{**STEPS.__dict__, **change}))
    for path in second:
        kind = path.name.split("-")[0]
        ran = path not in first or _record_of(path).stat().st_mtime_ns != times[kind]
        assert ran == (kind in reruns), (kind, change)
    assert not leftovers(tmp_path)


def test_a_changed_cache_reruns_every_step(cache, tmp_path):
    folder = tmp_path / "runs"
    first = _steps(cache, folder, STEPS)
    times = _times(first)
    assert _times(_steps(cache, folder, STEPS)) == times  # reused
    write_synthetic(cache, _data(2.0, 3), force=True)
    second = _steps(cache, folder, STEPS)
    rerun = _times(second)
    assert second == first and all(a != b for a, b in zip(rerun, times))
    assert all(a != b for a, b in zip(_times(_steps(cache, folder, STEPS, force=True)), rerun))  # force


def test_half_written_step_is_recomputed(cache, tmp_path):
    """(d) a result folder without its run record (a crash before the end) is never reused."""
    folder = tmp_path / "runs"
    evaluation, probe, projection = _steps(cache, folder, STEPS)
    metrics = pd.read_csv(evaluation / "metrics.csv")
    (evaluation / RECORD).unlink()
    (evaluation / "metrics.csv").write_text("rank,metric,value\nspecies,top1,-1\n")  # junk a crash left
    projection.with_name(projection.name + ".step.json").unlink()
    projection.write_text("junk\n")
    probe_record = (probe / RECORD).stat().st_mtime_ns
    _steps(cache, folder, STEPS)
    assert (evaluation / RECORD).exists() and (projection.with_name(projection.name + ".step.json")).exists()
    pd.testing.assert_frame_equal(pd.read_csv(evaluation / "metrics.csv"), metrics)
    assert {"x", "y", "explained_x", "explained_y"} <= set(pd.read_csv(projection).columns)
    assert (probe / RECORD).stat().st_mtime_ns == probe_record  # the complete one was reused
    # a record listing a file that is gone: recomputed too
    (probe / "species.csv").unlink()
    _steps(cache, folder, STEPS)
    assert (probe / "species.csv").exists()


def test_failed_step_leaves_the_old_result_and_no_temporary(tmp_path):
    target = tmp_path / "result"
    identity = pipeline.step_identity("demo", {"a": 1}, {})
    pipeline.run_folder_step(target, identity, lambda tmp: (tmp.mkdir(), (tmp / "x.csv").write_text("1")),
                             force=False, what="demo")

    def crash(tmp: Path) -> None:
        tmp.mkdir()
        (tmp / "x.csv").write_text("2")
        raise RuntimeError("killed half-way")

    with pytest.raises(RuntimeError, match="half-way"):
        pipeline.run_folder_step(target, pipeline.step_identity("demo", {"a": 2}, {}), crash, force=False, what="demo")
    assert (target / "x.csv").read_text() == "1" and not leftovers(tmp_path)
    # the old result is still the current one for its identity, not for the new one
    assert pipeline.is_current(target, identity, folder=True)
    assert not pipeline.is_current(target, pipeline.step_identity("demo", {"a": 2}, {}), folder=True)


_HOLDER = """
import sys
from latent.pipeline import folder_lock
with folder_lock(sys.argv[1], sys.argv[2]):
    print("locked", flush=True)
    sys.stdin.read()
"""


def test_second_writer_is_refused_with_one_line(cache, tmp_path):
    """(e) a real second process holds the folder: build_report is refused at once, nothing written."""
    out = tmp_path / "rep"
    holder = subprocess.Popen([sys.executable, "-c", _HOLDER, str(out), "report"], stdin=subprocess.PIPE,
                              stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "locked"
        with pytest.raises(CacheError) as refused:
            build_report([cache], out, settings=STEPS)
        message = str(refused.value)
        assert message == (f"{out} is in use by another latent process (pid {holder.pid}); wait for it or use "
                           "another --out.")
        assert "\n" not in message
        assert sorted(p.name for p in out.iterdir()) == [".latent.lock"]  # nothing else written
    finally:
        holder.stdin.close()
        holder.wait(timeout=60)
    # the lock goes with its process
    with pipeline.folder_lock(out, "report"):
        assert json.loads((out / ".latent.lock").read_text())["pid"] == os.getpid()


def test_lock_is_reentrant_in_one_process_and_released(tmp_path):
    with pipeline.folder_lock(tmp_path / "o", "report") as out:
        with pipeline.folder_lock(out, "report"):
            pass
        holder = subprocess.run([sys.executable, "-c", _HOLDER, str(out), "report"], input="", capture_output=True,
                                text=True, timeout=60)
        assert "in use by another latent process (pid %d)" % os.getpid() in holder.stderr
    holder = subprocess.run([sys.executable, "-c", _HOLDER, str(out), "report"], input="", capture_output=True,
                            text=True, timeout=60)
    assert holder.returncode == 0 and holder.stdout.strip() == "locked"


def test_out_of_another_kind_is_refused_before_any_work(cache, tmp_path):
    a_file = tmp_path / "report.txt"
    a_file.write_text("mine")
    with pytest.raises(InputError, match=r"^--out .*report.txt is a file, not a folder"):
        build_report([cache], a_file, settings=STEPS)
    assert a_file.read_text() == "mine"
    with pytest.raises(InputError, match="report.txt is a file, not a folder"):
        build_report([cache], a_file / "inside", settings=STEPS)
    # an experiment folder is not a report folder
    with pipeline.folder_lock(tmp_path / "exp", "experiment"):
        pass
    with pytest.raises(InputError, match="holds a latent experiment, not a report"):
        build_report([cache], tmp_path / "exp", settings=STEPS)
    # the results of latent evaluate are not a report folder either
    evaluated = tmp_path / "evaluated"
    evaluated.mkdir()
    (evaluated / "run.json").write_text("{}")
    (evaluated / "metrics.csv").write_text("rank\n")
    with pytest.raises(InputError, match="holds the results of `latent evaluate`"):
        build_report([cache], evaluated, settings=STEPS)
    assert sorted(p.name for p in evaluated.iterdir()) == ["metrics.csv", "run.json"]
    # run: --results/<name> that is a file
    config = tmp_path / "exp.yaml"
    config.write_text("name: x\ndata: {synth: {}}\n")
    (tmp_path / "results").mkdir()
    (tmp_path / "results" / "x").write_text("mine")
    with pytest.raises(InputError, match=r"^--results .*x is a file"):
        run_experiment(config, results=tmp_path / "results")


def test_leftovers_of_crashed_runs_are_removed(cache, tmp_path):
    """(f) temporaries of another (dead) run are removed by the next holder of the folder; none are left."""
    out = tmp_path / "rep"
    folder = pipeline.model_folder(out, cache)
    crashed = folder / ".evaluate-knn-random-seed0-boot20.tmp-99999999"
    crashed.mkdir(parents=True)
    (crashed / "metrics.csv").write_text("half")
    (folder / ".projection-pca-seed0.csv.tmp-99999999").write_text("half")
    (out / ".report.html.tmp-99999999").write_text("half")
    (folder / "mine.tmp-1").write_text("not a leftover of latent")
    build_report([cache], out, settings=STEPS)
    assert not leftovers(out) and (folder / "mine.tmp-1").exists()
    assert not list(out.rglob(".*.tmp-*"))


def test_embed_step_reuses_resumes_or_rebuilds_by_identity(tmp_path):
    """data.images: same inputs reuse the cache; a changed taxonomy rebuilds it (never mixes labels); a
    leftover interrupted run of other inputs is discarded, not resumed."""
    from PIL import Image

    from latent.cache import open_cache

    rng = np.random.default_rng(0)
    for folder in ("a", "b"):
        (tmp_path / "imgs" / folder).mkdir(parents=True)
        for k in range(2):
            Image.fromarray(rng.integers(0, 255, (16, 16, 3), dtype=np.uint8)).save(tmp_path / "imgs" / folder / f"{k}.png")
    lineage = "Animalia,Chordata,Aves,Passeriformes,Corvidae,Corvus"

    def taxonomy(epithet: str) -> None:
        (tmp_path / "tax.csv").write_text("key,kingdom,phylum,class,order,family,genus,species\n"
                                          f"a,{lineage},Corvus corax\nb,{lineage},Corvus {epithet}\n")

    taxonomy("corone")
    (tmp_path / "exp.yaml").write_text("name: e\ndata: {images: {source: imgs, taxonomy: tax.csv, join_on: folder=key, "
                                       "batch_size: 2}}\nmodels: [random-tiny]\n")
    config = load_config(tmp_path / "exp.yaml")
    out = tmp_path / "out"
    [cache], baseline = pipeline.make_caches(config, out, force=False)
    assert baseline is None
    record = json.loads(cache.with_name(cache.name + ".step.json").read_text())
    assert record["complete"] is True and record["identity"]["params"]["model"] == "random-tiny"
    ino = cache.stat().st_ino
    pipeline.make_caches(config, out, force=False)
    assert cache.stat().st_ino == ino  # same inputs: reused
    taxonomy("frugilegus")  # the labels change, not the images or the model
    partial = cache.with_name(cache.name + ".partial")
    partial.write_bytes(b"an interrupted run of the old inputs")
    pipeline.make_caches(config, out, force=False)
    with open_cache(cache) as c:
        assert sorted(set(c.labels("species"))) == ["Corvus corax", "Corvus frugilegus"]
    assert not list(cache.parent.glob(cache.name + ".partial*"))


def test_data_step_settings_are_checked_before_any_work(tmp_path):
    config = tmp_path / "exp.yaml"
    config.write_text("name: x\ndata: {import: {embedding: a.npy}}\n")
    with pytest.raises(InputError, match=r"unknown data.import setting\(s\) embedding; allowed: embedding_column, embeddings, "):
        run_experiment(config, results=tmp_path / "results")
    config.write_text("name: x\ndata: {images: {taxonomy: t.csv}}\nmodels: [random-tiny]\n")
    with pytest.raises(InputError, match="data.images needs source"):
        run_experiment(config, results=tmp_path / "results")
    config.write_text("name: x\ndata: {synth: {signal: 1, dims: 4}}\n")
    with pytest.raises(InputError, match="unknown data.synth setting.*dims"):
        run_experiment(config, results=tmp_path / "results")
    assert not (tmp_path / "results").exists()
