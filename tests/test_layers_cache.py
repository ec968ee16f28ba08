"""Per-layer embeddings: ``latent embed --layers`` (a random open_clip and a random timm ViT), stored in the cache,
resumed after kill -9, and read back by ``latent probe --layer`` / ``latent evaluate --layer``.

The images are small synthetic JPEGs written by the test (4 species of 2 genera, 8 images each), so nothing
here needs ../shared/data. Which block a stored layer is, is checked against the blocks run one by one.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import h5py
import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image

from latent.cache import open_cache
from latent.errors import CacheError, InputError, ProvenanceError
from latent.extract import embed_images
from latent.models import load_model, parse_blocks

from _kill import _kill_after_writes, _partial_inode, _wait_for_new_partial

REPO = Path(__file__).resolve().parents[1]
SPECIES = {"sp_a": ("Genus1", "Genus1 alpha"), "sp_b": ("Genus1", "Genus1 beta"),
           "sp_c": ("Genus2", "Genus2 gamma"), "sp_d": ("Genus2", "Genus2 delta")}



def _images(root: Path, per_species: int = 8) -> tuple[Path, Path]:
    """Folders of JPEGs (one per species, each a colour plus noise) and their taxonomy table."""
    rng = np.random.default_rng(7)
    src = root / "src"
    for k, folder in enumerate(SPECIES):
        (src / folder).mkdir(parents=True)
        base = np.array([60 * k, 255 - 50 * k, 40 + 30 * k], dtype=np.float64)
        for i in range(per_species):
            pixels = np.clip(base + rng.normal(0, 40, (48, 64, 3)), 0, 255).astype(np.uint8)
            Image.fromarray(pixels).save(src / folder / f"{folder}_{i:02d}.jpg", quality=90)
    rows = [{"folder": f, "kingdom": "Animalia", "phylum": "Chordata", "class": "Aves", "order": "O1",
             "family": "F1", "genus": g, "species": s} for f, (g, s) in SPECIES.items()]
    table = root / "taxonomy.csv"
    pd.DataFrame(rows).to_csv(table, index=False)
    return src, table


def _cli(*args, check: bool = True) -> subprocess.CompletedProcess:
    proc = subprocess.run([sys.executable, "-m", "latent.cli", *map(str, args)], capture_output=True, text=True,
                          env=dict(os.environ, PYTHONPATH=str(REPO), OMP_NUM_THREADS="1"), timeout=300)
    if check and proc.returncode != 0:
        raise AssertionError(f"latent {' '.join(map(str, args))} failed:\n{proc.stdout}\n{proc.stderr}")
    return proc


def _blocks_one_by_one(loaded, x: torch.Tensor) -> list[torch.Tensor]:
    """The class token after each block, through the final LayerNorm, computed block by block (the reference)."""
    outs = []
    with torch.inference_mode():
        if loaded.backend == "timm":
            m = loaded.model
            h = m.norm_pre(m.patch_drop(m._pos_embed(m.patch_embed(x))))
            for block in m.blocks:
                h = block(h)
                outs.append(m.norm(h)[:, 0])
        else:
            v = loaded.model.visual
            h = v._embeds(x)
            for block in v.transformer.resblocks:
                h = block(h)
                outs.append(v.ln_post(h)[:, 0])
    return outs


@pytest.mark.parametrize("name", ["random-tiny", "random-timm-tiny"])
def test_each_stored_layer_is_that_block_and_the_last_is_the_final_embedding(name):
    loaded = load_model(name, device="cpu", seed=3)
    x = torch.randn(5, 3, *loaded.image_size, generator=torch.Generator().manual_seed(0))
    blocks = list(range(1, loaded.n_blocks + 1))
    final, layers = loaded.encode_layers(x, blocks)
    np.testing.assert_allclose(final.numpy(), loaded.encode_images(x).numpy(), atol=1e-5)
    reference = _blocks_one_by_one(loaded, x)
    assert sorted(layers) == blocks and len(reference) == loaded.n_blocks
    for k in blocks:
        np.testing.assert_allclose(layers[k]["class"].numpy(), reference[k - 1].numpy(), atol=1e-5, err_msg=f"block {k}")
        assert layers[k]["patch_mean"].shape == (5, loaded.layer_width)
    # consecutive blocks differ (an off-by-one would repeat or shift them)
    assert not np.allclose(layers[1]["class"].numpy(), layers[2]["class"].numpy())
    last = layers[loaded.n_blocks]["class"]
    proj = getattr(getattr(loaded.model, "visual", None), "proj", None)
    np.testing.assert_allclose((last @ proj if proj is not None else last).numpy(), final.numpy(), atol=1e-5)


def test_parse_blocks():
    assert parse_blocks("all", 4) == [1, 2, 3, 4]
    assert parse_blocks("1-2, 4", 4) == [1, 2, 4]
    assert parse_blocks("4,2,2", 4) == [2, 4]
    assert parse_blocks([3, 1], 4) == [1, 3]
    for bad in ("0", "5", "x", "", "2-9", [0], [1.5]):
        with pytest.raises(InputError, match="'--layers'"):
            parse_blocks(bad, 4)


@pytest.mark.parametrize("name", ["random-tiny", "random-timm-tiny"])
def test_embed_layers_stores_every_block_in_float16_in_row_order(tmp_path, name):
    src, table = _images(tmp_path, per_species=3)
    out = tmp_path / "c.h5"
    _cli("embed", src, "--out", out, "--model", name, "--taxonomy", table, "--join-on", "folder=folder",
         "--layers", "all", "--workers", "0", "--batch-size", "5", "--no-progress")
    loaded = load_model(name, device="cpu")
    with open_cache(out) as cache:
        assert cache.layers == list(range(1, loaded.n_blocks + 1))
        spec = cache.provenance.layers
        assert spec["width"] == loaded.layer_width and spec["n_blocks"] == loaded.n_blocks
        ids = cache.ids.tolist()
        final = cache.read()
    with h5py.File(out, "r") as f:
        for k in range(1, loaded.n_blocks + 1):
            for token in ("class", "patch_mean"):
                ds = f[f"layers/{k}/{token}"]
                assert ds.dtype == np.float16 and ds.shape == (12, loaded.layer_width)
    # the stored rows are the model's layers of those very images, in the cache's row order
    images = torch.stack([loaded.transform(Image.open(src / i.split("/")[0] / Path(i).name)) for i in ids])
    ref_final, ref_layers = loaded.encode_layers(images, [1, loaded.n_blocks])
    np.testing.assert_allclose(final, ref_final.numpy(), atol=2e-2, rtol=1e-2)
    for k in (1, loaded.n_blocks):
        for token in ("class", "patch_mean"):
            with open_cache(out, layer=k, token=token) as view:
                assert view.dim == loaded.layer_width and view.ids.tolist() == ids
                np.testing.assert_allclose(view.read(), ref_layers[k][token].numpy(), atol=2e-2, rtol=1e-2)


def test_kill_9_then_resume_keeps_the_layers_of_every_row(tmp_path):
    src, table = _images(tmp_path)
    total = 32
    args = ["embed", str(src), "--out", None, "--model", "random-tiny", "--taxonomy", str(table), "--join-on",
            "folder=folder", "--layers", "all", "--batch-size", "2", "--workers", "0", "--commit-every", "2",
            "--store-dtype", "float32", "--no-progress"]
    out = tmp_path / "killed.h5"
    partial = Path(str(out) + ".partial")
    env = dict(os.environ, PYTHONPATH=str(REPO), OMP_NUM_THREADS="1")
    committed: list[int] = []
    inode = None
    for writes in (4, 6, 6):
        proc = subprocess.Popen([sys.executable, "-m", "latent.cli", *[str(out) if a is None else a for a in args]],
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
        _wait_for_new_partial(proc, partial, inode)
        inode = _partial_inode(partial)
        _kill_after_writes(proc, partial, writes)
        if out.exists():  # finished before the kill (a very fast machine): nothing more to interrupt
            break
        with open_cache(out, allow_incomplete=True) as cache:
            committed.append(cache.n_rows)
            with h5py.File(partial, "r") as f:  # every committed row has its layers
                for k in (1, 2):
                    assert f[f"layers/{k}/class"].shape[0] >= cache.n_rows
    assert committed and committed == sorted(committed) and committed[-1] < total, committed
    assert any(0 < c for c in committed), committed
    ref = tmp_path / "ref.h5"
    _cli(*[str(ref) if a is None else a for a in args])
    proc = _cli(*[str(out) if a is None else a for a in args])
    assert f"{total} rows in all" in proc.stdout
    with open_cache(ref) as a, open_cache(out) as b:
        assert a.provenance.identity() == b.provenance.identity()
        order = {i: k for k, i in enumerate(b.ids.tolist())}
        rows = np.array([order[i] for i in a.ids.tolist()])
        np.testing.assert_allclose(b.read()[rows], a.read(), atol=1e-5)
    for k in (1, 2):
        for token in ("class", "patch_mean"):
            with open_cache(ref, layer=k, token=token) as a, open_cache(out, layer=k, token=token) as b:
                np.testing.assert_allclose(b.read()[rows], a.read(), atol=1e-5, err_msg=f"block {k} {token}")


def test_layers_are_part_of_the_provenance(tmp_path):
    src, table = _images(tmp_path, per_species=2)
    out = tmp_path / "c.h5"
    kwargs = dict(model="random-tiny", taxonomy=table, join_on="folder=folder", workers=0, progress=False)
    embed_images(src, out, **kwargs)
    with pytest.raises(ProvenanceError, match="layers"):
        embed_images(src, out, layers="all", **kwargs)
    report = embed_images(src, out, layers="all", force=True, **kwargs)
    assert report.rows == 8
    assert embed_images(src, out, layers="all", **kwargs).already_complete
    with pytest.raises(ProvenanceError):
        embed_images(src, out, layers="2", **kwargs)
    proc = _cli("embed", src, "--out", tmp_path / "d.h5", "--model", "random-tiny", "--layers", "7", "--taxonomy",
                table, "--join-on", "folder=folder", "--no-progress", check=False)
    assert proc.returncode != 0 and "Traceback" not in proc.stderr
    assert "'--layers'" in proc.stderr and "from 1 to 2" in proc.stderr and len(proc.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "d.h5").exists()


def test_probe_and_evaluate_on_a_layer(tmp_path):
    src, table = _images(tmp_path)
    out = tmp_path / "c.h5"
    embed_images(src, out, model="random-tiny", taxonomy=table, join_on="folder=folder", workers=0, progress=False,
                 layers="all")
    _cli("probe", out, "--out", tmp_path / "p1", "--layer", "1", "--probes", "levels", "--permutations", "19")
    source = json.loads((tmp_path / "p1" / "run.json").read_text())
    assert source["layer"] == 1 and source["dim"] == 64
    rows = pd.read_csv(tmp_path / "p1" / "metrics.csv")
    assert set(rows["rank"]) >= {"genus", "species"}
    # the probe saw the layer's vectors: the same command on the final embeddings gives other values
    _cli("probe", out, "--out", tmp_path / "p0", "--probes", "levels", "--permutations", "19")
    assert "layer" not in json.loads((tmp_path / "p0" / "run.json").read_text())
    final = pd.read_csv(tmp_path / "p0" / "metrics.csv")
    assert not np.allclose(rows["value"].dropna().to_numpy(), final["value"].dropna().to_numpy())
    _cli("evaluate", out, "--out", tmp_path / "e2", "--layer", "2", "--method", "centroid", "--shots", "2",
         "--bootstrap", "50")
    assert (tmp_path / "e2" / "metrics.csv").exists()
    for args, message in (
            (("probe", out, "--out", tmp_path / "x", "--layer", "3"), "holds (1-2)"),
            (("evaluate", out, "--out", tmp_path / "x", "--layer", "1", "--method", "zero-shot"), "zero-shot"),
            (("probe", out, "--out", tmp_path / "x", "--layer", "1", "--probes", "text_geometry"), "text_geometry")):
        proc = _cli(*args, check=False)
        assert proc.returncode != 0 and message in proc.stderr and "Traceback" not in proc.stderr, proc.stderr
        assert not (tmp_path / "x").exists()


def test_layer_of_a_cache_without_layers_is_refused(tmp_path):
    src, table = _images(tmp_path, per_species=2)
    out = tmp_path / "c.h5"
    embed_images(src, out, model="random-tiny", taxonomy=table, join_on="folder=folder", workers=0, progress=False)
    with pytest.raises(InputError, match="--layers all"):
        open_cache(out, layer=1)
    with open_cache(out) as cache:
        assert cache.layers == []
    with pytest.raises(CacheError):
        open_cache(tmp_path / "missing.h5", layer=1)


def test_an_image_only_timm_cache_goes_through_evaluate_probe_and_report(tmp_path):
    from latent.evaluate import evaluate_cache
    from latent.probes.run import probe_cache
    from latent.report import ReportSettings, build_report

    src, table = _images(tmp_path, per_species=4)
    out = tmp_path / "timm.h5"
    embed_images(src, out, model="random-timm-tiny", taxonomy=table, join_on="folder=folder", workers=0,
                 progress=False, layers="6,12")
    ev = evaluate_cache(out, tmp_path / "ev", method="knn", n_boot=20)
    assert set(ev.to_frame()["rank"]) >= {"genus", "species"}
    pr = probe_cache(out, tmp_path / "pr", probes="levels", layer=6)
    assert pr.to_frame()["value"].notna().any()
    settings = ReportSettings(evaluations=(("knn", "random"),), probes=("alignment",), permutations=19,
                              verdict_permutations=99, n_boot=20, projections=(), layers=True)
    result = build_report([out], tmp_path / "rep", settings=settings)
    md = result.markdown.read_text()
    model = md.split("## The model\n")[1].split("\n## ")[0]
    assert "random-timm-tiny" in model and "12 blocks (width 192)" in model and "no text tower" in model
    learned = md.split("## Learned from images or from names?")[1].split("\n## ")[0]
    assert "### Where in the network each rank appears" in learned
    emergence = pd.read_csv(next((tmp_path / "rep" / "runs").rglob("emergence-*.csv")))
    assert sorted(emergence["layer"].unique()) == [6, 12] and set(emergence["n_blocks"]) == {12}
