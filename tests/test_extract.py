"""``latent embed`` (latent.extract) on real photos: the README command, messy files, kill -9 and resume,
no-op re-runs, provenance refusals, offline models, manifests, bad input and determinism.

What users see is checked on the command line as they run it (a subprocess of ``python -m
latent.cli``); set-up steps and reports run through ``embed_images``. The model is the tiny random
open_clip ``random-tiny`` (fast on a CPU); the photos are the 306 real CUB bird JPEGs of
``../shared/data/cub10`` (tests skip when that folder is absent).
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from latent.cache import open_cache
from latent.errors import CacheError, InputError, ProvenanceError
from latent.extract import collect_inputs, embed_images

from _kill import _kill_after_writes, _partial_inode, _wait_for_new_partial

REPO = Path(__file__).resolve().parents[1]
ALBATROSS = "001.Black_footed_Albatross"  # Phoebastria nigripes
AUKLET = "005.Crested_Auklet"  # Aethia cristatella
BLACKBIRD = "009.Brewer_Blackbird"  # Euphagus cyanocephalus
UNLABELLED_FOLDERS = ("eagle", "parrot", "sparrow")  # no row in taxonomy.csv
FAST = ("--model", "random-tiny", "--no-progress")


def latent(*args, env: dict | None = None, check: bool = True, timeout: float = 120) -> subprocess.CompletedProcess:
    """Run ``python -m latent.cli ARGS`` as a user would; raise with its output when it fails and ``check``."""
    full_env = dict(os.environ, PYTHONPATH=str(REPO), **(env or {}))
    proc = subprocess.run([sys.executable, "-m", "latent.cli", *map(str, args)], capture_output=True, text=True,
                          env=full_env, timeout=timeout)
    if check and proc.returncode != 0:
        raise AssertionError(f"latent {' '.join(map(str, args))} failed ({proc.returncode}):\n{proc.stdout}\n{proc.stderr}")
    return proc


def _cub10(shared) -> tuple[Path, Path]:
    root = shared("cub10")
    return root / "birds", root / "taxonomy.csv"


def _species_by_folder(taxonomy_csv: Path) -> dict[str, str]:
    table = pd.read_csv(taxonomy_csv)
    return dict(zip(table["cub_class"], table["species"]))


def _copy_folders(birds: Path, dst: Path, folders) -> Path:
    for name in folders:
        shutil.copytree(birds / name, dst / name)
    return dst


def _by_id(cache) -> dict[str, tuple[np.ndarray, tuple[str, ...]]]:
    """id -> (embedding float32 (D,), labels kingdom..species)."""
    x = cache.read(dtype=np.float32)
    labels = list(zip(*(cache.labels(r) for r in ("kingdom", "phylum", "class", "order", "family", "genus", "species"))))
    return {i: (x[k], labels[k]) for k, i in enumerate(cache.ids.tolist())}


def _no_traceback(proc: subprocess.CompletedProcess) -> None:
    assert "Traceback" not in proc.stderr and "Traceback" not in proc.stdout, proc.stderr


# -------------------------------------------------------------------------------------------- 1. README
def test_readme_embed_command_on_real_birds(shared, tmp_path):
    birds, taxonomy = _cub10(shared)
    out = tmp_path / "birds.h5"
    # the README command as written (default workers: a DataLoader worker process here)
    proc = latent("embed", birds, "--taxonomy", taxonomy, "--join-on", "folder=cub_class", "--model", "random-tiny",
                  "--out", out, "--no-progress")
    assert "embedded 306" in proc.stdout and "failed 0" in proc.stdout
    assert "6 rows have no row in the --taxonomy table" in proc.stderr
    assert not Path(str(out) + ".partial").exists()
    species = _species_by_folder(taxonomy)
    with open_cache(out) as cache:
        s = cache.summary()
        ids = cache.ids.tolist()
        x = cache.read()
        prov = cache.provenance
        sp = cache.labels("species")
        assert cache.complete is True
    assert s["rows"] == 306 and len(set(ids)) == 306 and s["failed"] == 0
    assert {r: s["taxa"][r] for r in ("species", "genus", "family", "order")} == \
        {"species": 10, "genus": 7, "family": 4, "order": 4}
    assert s["unlabelled"] == 6
    expected_unlabelled = {f"{d}/{p.name}" for d in UNLABELLED_FOLDERS for p in (birds / d).iterdir()}
    assert {i for i, label in zip(ids, sp) if label == ""} == expected_unlabelled
    for image_id, label in zip(ids, sp):  # every labelled row has its folder's species
        folder = image_id.split("/")[0]
        assert label == species.get(folder, ""), image_id
    assert ids == sorted(ids)
    assert x.shape == (306, 32) and np.isfinite(x).all()
    assert len(np.unique(x.round(3), axis=0)) == 306  # distinct photos, distinct embeddings
    assert prov.model == "random-tiny" and prov.extra["untrained"] is True and prov.normalized is False
    assert prov.extra["seed"] == 0 and prov.pretrained == "random-init seed=0"
    assert prov.source == str(birds.resolve())
    info = latent("info", out).stdout
    assert "untrained / synthetic embeddings" in info and "rows        306" in info


# -------------------------------------------------------------------------------------------- 2. messy files
def test_messy_files_are_recorded_as_failures_and_the_rest_embedded(shared, tmp_path):
    birds, taxonomy = _cub10(shared)
    root = tmp_path / "birds"
    shutil.copytree(birds, root)
    folder = root / ALBATROSS
    photo = sorted(folder.glob("*.jpg"))[0]
    (folder / "zz_empty.jpg").write_bytes(b"")
    data = photo.read_bytes()
    (folder / "zz_truncated.jpg").write_bytes(data[: len(data) // 2])
    (folder / "zz_text.jpg").write_text("this is a text file, not a photo\n")
    with Image.open(photo) as im:
        rgb = im.convert("RGB")
    rgb.convert("CMYK").save(folder / "zz_cmyk.jpg", quality=90)
    rgb.convert("L").save(folder / "zz_grey.png")
    rgba = rgb.convert("RGBA")
    alpha = np.zeros(rgba.size[::-1], np.uint8)
    alpha[:, : rgba.size[0] // 2] = 255  # left half opaque, right half transparent
    rgba.putalpha(Image.fromarray(alpha))
    rgba.save(folder / "zz_rgba.png")
    with Image.open(folder / "zz_cmyk.jpg") as im, Image.open(folder / "zz_rgba.png") as im2:
        assert im.mode == "CMYK" and im2.mode == "RGBA"  # the test files are what they claim

    out = tmp_path / "messy.h5"
    proc = latent("embed", root, "--taxonomy", taxonomy, "--join-on", "folder=cub_class", *FAST,
                  "--workers", "1", "--batch-size", "32", "--out", out)
    bad = {f"{ALBATROSS}/zz_empty.jpg": "empty file", f"{ALBATROSS}/zz_truncated.jpg": "truncated",
           f"{ALBATROSS}/zz_text.jpg": "not an image"}
    good = [f"{ALBATROSS}/zz_cmyk.jpg", f"{ALBATROSS}/zz_grey.png", f"{ALBATROSS}/zz_rgba.png"]
    assert "embedded 309" in proc.stdout and "failed 3" in proc.stdout
    for image_id in bad:
        assert image_id in proc.stdout + proc.stderr
    with open_cache(out) as cache:
        assert cache.complete and cache.n_rows == 309
        rows = _by_id(cache)
        failed = cache.failed()
    assert len(rows) == 309
    assert sorted(failed["id"]) == sorted(bad)
    for image_id, reason in zip(failed["id"], failed["reason"]):
        assert reason.startswith(bad[image_id]), (image_id, reason)
    for image_id in good:
        emb, labels = rows[image_id]
        assert labels[-1] == "Phoebastria nigripes" and labels[4] == "Diomedeidae"
        assert np.isfinite(emb).all()
    # the greyscale and the transparent copies are not the photo itself
    assert not np.allclose(rows[good[1]][0], rows[good[2]][0], atol=1e-3)
    assert not set(bad) & set(rows)


# -------------------------------------------------------------------------------------------- 3. kill -9
def _partial_state(path: Path) -> tuple[int, bool]:
    """(committed rows, complete) of an interrupted write, read once its writer is dead."""
    with open_cache(path, allow_incomplete=True) as cache:
        return cache.n_rows, cache.complete


def _start_embed(src: Path, out: Path) -> subprocess.Popen:
    args = ["embed", str(src), "--out", str(out), "--model", "random-tiny", "--batch-size", "4", "--workers", "0",
            "--commit-every", "4", "--store-dtype", "float32", "--no-progress"]
    return subprocess.Popen([sys.executable, "-m", "latent.cli", *args], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=dict(os.environ, PYTHONPATH=str(REPO)))


def test_kill_9_at_several_points_then_resume_equals_one_uninterrupted_run(shared, tmp_path):
    birds, _ = _cub10(shared)
    src = _copy_folders(birds, tmp_path / "src", [ALBATROSS, BLACKBIRD, "eagle"])
    total = sum(1 for _ in src.rglob("*.jpg"))
    assert total == 62

    out = tmp_path / "killed.h5"
    partial = Path(str(out) + ".partial")
    rng = np.random.default_rng(20240611)
    committed: list[int] = []
    inode = None
    # Kill points: after a few commits; while resuming (copying the committed rows) or just after; after
    # a few more commits. 4-6 changes of the file seen is about one to six commits of 4 rows, so the 62
    # rows are never all done; a kill that came before its run's first commit is one more kill point,
    # and the cycle goes on (at most 6 kills) until two kills have left committed rows behind.
    while len(committed) < 3 or (sum(0 < c < total for c in committed) < 2 and len(committed) < 6):
        during_resume = len(committed) == 1
        proc = _start_embed(src, out)
        _wait_for_new_partial(proc, partial, inode, or_copy=during_resume)
        inode = _partial_inode(partial)
        _kill_after_writes(proc, partial, 0 if during_resume else int(rng.integers(4, 7)))
        assert not out.exists()  # an interrupted run never leaves a file that reads as complete
        with pytest.raises(CacheError, match="interrupted write"):
            open_cache(out)
        rows, complete = _partial_state(out)
        assert not complete
        committed.append(rows)
    # every resumed run kept the rows already committed
    assert committed == sorted(committed) and committed[-1] < total, committed
    assert sum(0 < c < total for c in committed) >= 2, f"no kill landed mid-way: {committed} of {total} rows"

    ref = tmp_path / "ref.h5"  # one uninterrupted run
    latent("embed", src, "--out", ref, "--model", "random-tiny", "--batch-size", "4", "--workers", "0",
           "--commit-every", "4", "--store-dtype", "float32", "--no-progress")
    proc = latent("embed", src, "--out", out, "--model", "random-tiny", "--batch-size", "4", "--workers", "0",
                  "--commit-every", "4", "--store-dtype", "float32", "--no-progress")
    assert f"skipped {committed[-1]}" in proc.stdout and f"{total} rows in all" in proc.stdout
    assert out.exists() and not partial.exists()
    with open_cache(ref) as a, open_cache(out) as b:
        assert a.complete and b.complete and a.n_rows == b.n_rows == total
        ids_b = b.ids.tolist()
        assert len(set(ids_b)) == len(ids_b) == total
        assert set(a.ids.tolist()) == set(ids_b)
        ra, rb = _by_id(a), _by_id(b)
        assert a.provenance.identity() == b.provenance.identity()
    for image_id, (emb, labels) in ra.items():
        assert rb[image_id][1] == labels
        np.testing.assert_allclose(rb[image_id][0], emb, atol=1e-5, rtol=0, err_msg=image_id)


# -------------------------------------------------------------------------------------------- 4. re-runs
def test_rerun_is_a_no_op_and_a_new_image_is_embedded_alone(shared, tmp_path):
    birds, taxonomy = _cub10(shared)
    src = _copy_folders(birds, tmp_path / "src", [ALBATROSS, "eagle"])
    (src / ALBATROSS / "zz_broken.jpg").write_bytes(b"")  # a recorded failure counts as done
    out = tmp_path / "c.h5"
    kwargs = dict(model="random-tiny", taxonomy=taxonomy, join_on="folder=cub_class", workers=0, batch_size=16,
                  progress=False)
    first = embed_images(src, out, **kwargs)
    assert (first.embedded, first.failed, first.rows, first.already_complete) == (32, 1, 32, False)
    before, mtime = out.read_bytes(), out.stat().st_mtime_ns
    with open_cache(out) as cache:
        old = _by_id(cache)

    again = latent("embed", src, "--taxonomy", taxonomy, "--join-on", "folder=cub_class", *FAST, "--workers", "0",
                   "--batch-size", "16", "--out", out)
    assert "nothing to do" in again.stdout and not re.search(r"embedded \d", again.stdout)
    assert out.read_bytes() == before and out.stat().st_mtime_ns == mtime
    assert not Path(str(out) + ".partial").exists()
    report = embed_images(src, out, **kwargs)
    assert report.already_complete and (report.embedded, report.skipped, report.rows) == (0, 33, 32)
    assert out.stat().st_mtime_ns == mtime

    shutil.copy(sorted((birds / AUKLET).glob("*.jpg"))[0], src / ALBATROSS / "new.jpg")
    third = embed_images(src, out, **kwargs)
    assert (third.embedded, third.skipped, third.failed, third.rows) == (1, 33, 0, 33)
    assert "embedded 1, skipped 33" in third.summary()
    with open_cache(out) as cache:
        assert cache.complete and cache.n_rows == 33 and len(cache.failed()) == 1
        new = _by_id(cache)
    assert set(new) == set(old) | {f"{ALBATROSS}/new.jpg"}
    assert new[f"{ALBATROSS}/new.jpg"][1][-1] == "Phoebastria nigripes"  # labelled by its folder
    for image_id, (emb, labels) in old.items():  # old rows untouched
        assert np.array_equal(new[image_id][0], emb) and new[image_id][1] == labels


# -------------------------------------------------------------------------------------------- 5. provenance
def test_other_provenance_is_refused_and_force_replaces(shared, tmp_path):
    birds, _ = _cub10(shared)
    src = _copy_folders(birds, tmp_path / "src", UNLABELLED_FOLDERS)
    out = tmp_path / "p.h5"
    embed_images(src, out, model="random-tiny", workers=0, progress=False)
    before = out.read_bytes()

    squash = latent("embed", src, *FAST, "--workers", "0", "--preprocess", "squash", "--out", out, check=False)
    assert squash.returncode == 2, squash.stderr
    _no_traceback(squash)
    assert '"name":"squash"' in squash.stderr and '"name":"openclip"' in squash.stderr
    assert "--force" in squash.stderr and "preprocess" in squash.stderr
    with pytest.raises(ProvenanceError, match="(?s)random-init seed=0.*random-init seed=1"):
        embed_images(src, out, model="random-tiny", seed=1, workers=0, progress=False)
    assert out.read_bytes() == before and not Path(str(out) + ".partial").exists()

    forced = latent("embed", src, *FAST, "--workers", "0", "--preprocess", "squash", "--force", "--out", out)
    assert "embedded 6" in forced.stdout
    assert not Path(str(out) + ".partial").exists()
    with open_cache(out) as cache:
        assert cache.complete and cache.n_rows == 6
        assert cache.provenance.preprocess["name"] == "squash"
        assert "squash" in latent("info", out).stdout


# -------------------------------------------------------------------------------------------- 6. offline
def test_offline_missing_weights_say_how_to_get_them(shared, tmp_path):
    birds, _ = _cub10(shared)
    hf_home = tmp_path / "hf"
    hf_home.mkdir()
    out = tmp_path / "work" / "b.h5"
    out.parent.mkdir()
    proc = latent("embed", birds / "eagle", "--model", "bioclip-2", "--no-progress", "--out", out,
                  env={"HF_HUB_OFFLINE": "1", "HF_HOME": str(hf_home)}, check=False, timeout=120)
    assert proc.returncode == 2, proc.stderr
    _no_traceback(proc)
    assert "hf download imageomics/bioclip-2" in proc.stderr and "--pretrained" in proc.stderr
    assert list(out.parent.iterdir()) == []  # no cache, no partial


# -------------------------------------------------------------------------------------------- 7. manifests
def test_manifest_with_a_key_column_joined_to_the_taxonomy(shared, tmp_path):
    birds, taxonomy = _cub10(shared)
    photos = tmp_path / "m" / "photos"
    photos.mkdir(parents=True)
    rows = []
    for k, folder in enumerate([ALBATROSS, BLACKBIRD, AUKLET, ALBATROSS, "eagle", BLACKBIRD]):
        src = sorted((birds / folder).glob("*.jpg"))[k % 2]
        shutil.copy(src, photos / f"p{k}.jpg")  # flat names: only the key column knows the class
        rows.append({"path": f"photos/p{k}.jpg", "cub_class": folder})
    manifest = tmp_path / "m" / "manifest.csv"
    pd.DataFrame(rows).to_csv(manifest, index=False)
    out = tmp_path / "m.h5"
    proc = latent("embed", manifest, "--taxonomy", taxonomy, "--join-on", "cub_class=cub_class", *FAST,
                  "--workers", "0", "--out", out)
    assert "embedded 6" in proc.stdout
    species = _species_by_folder(taxonomy)
    with open_cache(out) as cache:
        assert cache.ids.tolist() == [r["path"] for r in rows]  # manifest order, ids as written
        assert cache.labels("species").tolist() == [species.get(r["cub_class"], "") for r in rows]
        assert cache.labels("genus").tolist()[:3] == ["Phoebastria", "Euphagus", "Aethia"]
        assert cache.summary()["unlabelled"] == 1


def test_manifest_with_rank_columns_needs_no_taxonomy(shared, tmp_path):
    birds, _ = _cub10(shared)
    photo = sorted((birds / ALBATROSS).glob("*.jpg"))[0]
    other = sorted((birds / AUKLET).glob("*.jpg"))[0]
    sparrow = sorted((birds / "sparrow").glob("*.jpg"))[0]
    lineage = ["Animalia", "Chordata", "Aves"]
    manifest = pd.DataFrame({
        "filepath": [str(photo), str(other), str(sparrow)],  # absolute paths
        "kingdom": ["Animalia"] * 3, "phylum": ["Chordata"] * 3, "class": ["Aves"] * 3,
        "order": ["Procellariiformes", "Charadriiformes", "Passeriformes"],
        "family": ["Diomedeidae", "Alcidae", "Passeridae"],
        "genus": ["Phoebastria", "Aethia", ""],
        "species": ["nigripes", "Aethia cristatella", ""],  # an epithet alone is joined with the genus
    })
    path = tmp_path / "manifest.csv"
    manifest.to_csv(path, index=False)
    records, lineages = collect_inputs(path)
    assert [r.path for r in records] == [photo, other, sparrow]
    assert lineages[:, -1].tolist() == ["Phoebastria nigripes", "Aethia cristatella", ""]
    out = tmp_path / "r.h5"
    report = embed_images(path, out, model="random-tiny", workers=0, progress=False)
    assert (report.embedded, report.failed, report.rows) == (3, 0, 3)
    with open_cache(out) as cache:
        assert cache.labels("species").tolist() == ["Phoebastria nigripes", "Aethia cristatella", ""]
        assert cache.labels("family").tolist() == ["Diomedeidae", "Alcidae", "Passeridae"]
        assert cache.labels("class").tolist() == [lineage[2]] * 3
        assert cache.summary()["taxa"]["order"] == 3


# -------------------------------------------------------------------------------------------- 8. bad input
@pytest.mark.parametrize("case", ["missing", "empty", "join-malformed", "join-column", "join-alone", "batch-size"])
def test_bad_input_is_a_clear_error_and_writes_nothing(shared, tmp_path, case):
    birds, taxonomy = _cub10(shared)
    work = tmp_path / "work"
    work.mkdir()
    out = work / "x.h5"
    source, extra, expected = birds / "eagle", [], []
    if case == "missing":
        source, expected = tmp_path / "no_such_folder", ["no_such_folder", "does not exist"]
    elif case == "empty":
        source = tmp_path / "empty"
        source.mkdir()
        (source / "notes.txt").write_text("no images here")
        expected = ["No images found", "empty"]
    elif case == "join-malformed":
        extra, expected = ["--taxonomy", taxonomy, "--join-on", "folder"], ["KEY=TAXCOL", "'folder'"]
    elif case == "join-column":
        extra, expected = ["--taxonomy", taxonomy, "--join-on", "folder=no_such_col"], ["no_such_col", "cub_class"]
    elif case == "join-alone":
        extra, expected = ["--join-on", "folder=cub_class"], ["--join-on", "--taxonomy"]
    elif case == "batch-size":
        extra, expected = ["--batch-size", "0"], ["batch", "Got 0"]  # (the CLI's or the API's wording)
    proc = latent("embed", source, *FAST, "--workers", "0", "--out", out, *extra, check=False)
    assert proc.returncode == 2, (proc.stdout, proc.stderr)
    _no_traceback(proc)
    assert proc.stderr.startswith("latent embed: error:") or "\nlatent embed: error:" in proc.stderr
    for text in expected:
        assert text in proc.stderr, (text, proc.stderr)
    assert list(work.iterdir()) == []


def test_bad_parameters_of_embed_images_raise_input_error(tmp_path):
    for kwargs, match in (({"batch_size": 0}, "'batch_size'"), ({"commit_every": True}, "'commit_every'"),
                          ({"workers": -1}, "'workers'"), ({"store_dtype": "int8"}, "'store_dtype'")):
        with pytest.raises(InputError, match=match):
            embed_images(tmp_path, tmp_path / "x.h5", model="random-tiny", **kwargs)
    assert list(tmp_path.iterdir()) == []


# -------------------------------------------------------------------------------------------- 9. determinism
def test_same_seed_same_images_same_embeddings_across_runs(shared, tmp_path):
    birds, _ = _cub10(shared)
    src = _copy_folders(birds, tmp_path / "src", [AUKLET, *UNLABELLED_FOLDERS])
    a, b = tmp_path / "a.h5", tmp_path / "b.h5"
    common = (*FAST, "--store-dtype", "float32", "--batch-size", "8")
    latent("embed", src, *common, "--workers", "0", "--out", a)  # one process ...
    embed_images(src, b, model="random-tiny", batch_size=8, store_dtype="float32", workers=1, progress=False)  # another
    embed_images(src, tmp_path / "s1.h5", model="random-tiny", seed=1, batch_size=8, store_dtype="float32",
                 workers=0, progress=False)
    with open_cache(a) as ca, open_cache(b) as cb, open_cache(tmp_path / "s1.h5") as c1:
        assert ca.ids.tolist() == cb.ids.tolist() == c1.ids.tolist() and ca.n_rows == 36
        xa, xb, x1 = ca.read(), cb.read(), c1.read()
    assert np.array_equal(xa, xb)  # bit-identical
    assert not np.allclose(xa, x1, atol=1e-2)  # another seed is another model
