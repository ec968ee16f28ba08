"""Model cards: every number against the built module or a hand-computed parameter count."""

from __future__ import annotations

import json
import math
import os
import socket
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from latent.errors import InputError
from latent.modelcard import ModelCard, describe_model, model_transform, transform_geometry
from latent.models import list_models

REGISTRY = [s.name for s in list_models()]


def _block(w: int, mlp: int = 4) -> int:
    """Parameters of one pre-norm ViT block of width w: qkv + out projection, 2 LayerNorms, MLP."""
    return (3 * w * w + 3 * w) + (w * w + w) + 2 * (2 * w) + (w * mlp * w + mlp * w) + (mlp * w * w + w)


def _clip_vision(w: int, layers: int, patch: int, grid: int, embed: int) -> int:
    """open_clip VisionTransformer: conv (no bias), class token, positions, ln_pre, blocks, ln_post, proj."""
    return 3 * patch * patch * w + w + (grid * grid + 1) * w + 2 * w + layers * _block(w) + 2 * w + w * embed


def _clip_text(w: int, layers: int, ctx: int, vocab: int, embed: int) -> int:
    """open_clip text tower: token and position embeddings, blocks, ln_final, text_projection."""
    return vocab * w + ctx * w + layers * _block(w) + 2 * w + w * embed


def _timm_vit(w: int, layers: int, patch: int, grid: int, layer_scale: bool = False) -> int:
    """timm VisionTransformer with num_classes=0: conv with bias, class token, positions, blocks, final norm.

    DINOv2 adds LayerScale: two learned (w,) gammas per block.
    """
    per_block = _block(w) + (2 * w if layer_scale else 0)
    return 3 * patch * patch * w + w + w + (grid * grid + 1) * w + layers * per_block + 2 * w


@pytest.fixture
def no_network(monkeypatch):
    """Any socket connection fails: describing a model must never reach the network."""
    def refuse(*args, **kwargs):
        raise AssertionError("describe_model tried to open a network connection")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")


@pytest.mark.parametrize("name", REGISTRY)
def test_every_registry_entry_describes_offline(name, no_network):
    card = describe_model(name)
    spec = next(s for s in list_models() if s.name == name)
    v, p = card.vision, card.parameters
    assert isinstance(card, ModelCard) and card.name == name
    assert p["total"] == p["vision"] + p["text"] + p["other"] > 0
    h, w = v["image_size"]
    ph, pw = v["patch_size"]
    assert v["patch_tokens"] == (h // ph) * (w // pw)
    assert v["sequence_length"] == v["patch_tokens"] + 1 + v["register_tokens"]  # every registry ViT has a class token
    assert v["class_token"] is True
    assert card.preprocess["image_size"] == v["image_size"]  # the transform feeds the tower its own size
    assert card.embed_dim == spec.embed_dim
    assert (card.text is None) == (spec.backend == "timm")
    if spec.untrained:
        assert card.training["trained_on"] == "random weights: trained on nothing"
        assert card.evaluations == []
    else:
        assert card.training["sources"], f"{name}: curated training facts need a source"
        assert "not recorded" not in card.training["trained_on"]
    json.dumps(card.to_dict())  # plain JSON
    assert all(len(r) == 3 and all(isinstance(x, str) for x in r) for r in card.rows())


def test_vit_l14_counts_against_hand_formula_and_references():
    card = describe_model("bioclip-2")
    # REFERENCES.md: vision 24 layers, width 1024, patch 14, 224 px; text 12 layers, width 768; 768-d; ~428M
    v, t = card.vision, card.text
    assert (v["layers"], v["width"], v["heads"]) == (24, 1024, 16)
    assert (v["patch_size"], v["image_size"]) == ([14, 14], [224, 224])
    assert v["patch_tokens"] == 16 * 16 == 256 and v["sequence_length"] == 257
    assert (t["layers"], t["width"], t["context_length"], t["vocab_size"]) == (12, 768, 77, 49408)
    assert card.parameters["vision"] == _clip_vision(1024, 24, 14, 16, 768) == 303_966_208
    assert card.parameters["text"] == _clip_text(768, 12, 77, 49408, 768)
    assert card.parameters["other"] == 1  # logit_scale
    assert round(card.parameters["total"] / 1e6) == 428
    assert "TreeOfLife-200M" in card.training["trained_on"] and "952,257" in card.training["trained_on"]
    assert "LAION-2B" in card.training["initialised_from"]
    for form in ("(taxon)", "(sci)", "(com)"):
        assert form in card.training["training_text"]


def test_bioclip_v1_and_tiny_counts_against_hand_formula():
    b = describe_model("bioclip")
    assert b.parameters["vision"] == _clip_vision(768, 12, 16, 14, 512)
    assert b.parameters["text"] == _clip_text(512, 12, 77, 49408, 512)
    assert b.vision["patch_tokens"] == 196
    tiny = describe_model("random-tiny")  # latent-random-tiny.json: 64 px, patch 16, width 64, 2 layers, 32-d
    assert tiny.parameters["vision"] == _clip_vision(64, 2, 16, 4, 32) == 152_576
    assert tiny.parameters["text"] == _clip_text(64, 2, 77, 49408, 32)
    assert tiny.vision["patch_tokens"] == 16


def test_timm_entries_counts_and_preprocessing():
    tiny = describe_model("random-timm-tiny")
    assert tiny.text is None and tiny.parameters["text"] == 0
    assert tiny.parameters["total"] == _timm_vit(192, 12, 16, 14) == 5_524_416
    assert tiny.vision["heads"] == 3 and tiny.vision["patch_tokens"] == 196
    # timm's evaluation transform: resize the shorter side to floor(224 / crop_pct=0.9) = 248, centre crop 224
    assert tiny.preprocess["resize_mode"] == "shortest" and tiny.preprocess["resize_size"] == [math.floor(224 / 0.9)]
    assert tiny.preprocess["crop_size"] == [224, 224]
    dino = describe_model("dinov2-vit-l-14")
    assert dino.vision["image_size"] == [518, 518] and dino.vision["patch_tokens"] == 37 * 37 == 1369
    assert dino.parameters["total"] == _timm_vit(1024, 24, 14, 37, layer_scale=True)
    in21k = describe_model("vit-l-16-in21k")
    assert in21k.parameters["total"] == _timm_vit(1024, 24, 16, 14)
    assert dino.preprocess["mean"] == pytest.approx([0.485, 0.456, 0.406])
    assert ("Text tower", "text tower", "none (image-only model)") in dino.rows()


def test_meta_build_equals_random_cpu_build_and_the_loader():
    from latent.models import load_model

    meta = describe_model("random-tiny")
    cpu = describe_model("random-tiny", device="cpu")
    loaded = load_model("random-tiny", device="cpu")
    assert meta.parameters == cpu.parameters
    assert meta.parameters["total"] == sum(p.numel() for p in loaded.model.parameters())
    assert meta.parameters["vision"] == sum(p.numel() for p in loaded.model.visual.parameters())
    assert meta.preprocess["image_size"] == list(loaded.image_size)
    assert meta.preprocess["mean"] == pytest.approx(loaded.preprocess_info["mean"])
    assert meta.preprocess["std"] == pytest.approx(loaded.preprocess_info["std"])
    timm_card = describe_model("random-timm-tiny")
    timm_loaded = load_model("random-timm-tiny", device="cpu")
    assert timm_card.parameters["total"] == sum(p.numel() for p in timm_loaded.model.parameters())
    assert timm_card.preprocess["image_size"] == timm_loaded.preprocess_info["image_size"]
    assert timm_card.preprocess["resize_size"] == [math.floor(224 / timm_loaded.preprocess_info["crop_pct"])]


@pytest.mark.slow
def test_vit_l14_card_equals_the_loaded_random_vit_l14():
    """One full ViT-L/14 build on CPU (random weights, ~1.7 GB): the card's numbers are the module's."""
    from latent.models import load_model

    card = describe_model("random-vit-l-14")
    loaded = load_model("random-vit-l-14", device="cpu")
    assert card.parameters["total"] == sum(p.numel() for p in loaded.model.parameters()) == 427_616_513
    assert card.parameters["vision"] == sum(p.numel() for p in loaded.model.visual.parameters())
    tokens = loaded.model.visual.positional_embedding.shape[0]  # positions = patch tokens + class token
    assert card.vision["sequence_length"] == tokens == 257
    assert card.preprocess["image_size"] == list(loaded.image_size) == [224, 224]
    x = loaded.transform(Image.new("RGB", (400, 200), (10, 200, 30)))
    assert tuple(x.shape) == (3, 224, 224)


def test_input_size_is_the_transform_output_on_a_real_image(shared):
    path = next(iter(sorted(shared("cub10", "birds").rglob("*.jpg"))))
    image = Image.open(path).convert("RGB")
    for name in ("bioclip-2", "dinov2-vit-l-14", "vit-l-16-in21k"):
        card = describe_model(name)
        transform, geo, patch = model_transform(name)
        x = transform(image)
        assert list(x.shape) == [3] + card.preprocess["image_size"] == [3] + card.vision["image_size"]
        assert patch == card.vision["patch_size"][0]


def test_input_size_on_synthetic_images_of_any_shape():
    card = describe_model("random-tiny")
    transform, geo, patch = model_transform("random-tiny")
    assert patch == 16 and geo["image_size"] == card.vision["image_size"] == [64, 64]
    for size in ((400, 200), (31, 97), (64, 64)):
        assert tuple(transform(Image.new("RGB", size)).shape) == (3, 64, 64)
    squash, sgeo, _ = model_transform("random-tiny", preprocess="squash")
    assert sgeo["resize_mode"] == "squash" and sgeo["crop_size"] is None and sgeo["image_size"] == [64, 64]
    assert tuple(squash(Image.new("RGB", (400, 200))).shape) == (3, 64, 64)


def test_tag_preprocessing_follows_the_tag():
    from latent.models import _open_clip

    card = describe_model("clip-vit-l-14")  # open_clip tag 'openai' of ViT-L-14-quickgelu
    tag = _open_clip().get_pretrained_cfg("ViT-L-14-quickgelu", "openai")
    assert card.preprocess["mean"] == pytest.approx(list(tag["mean"]))
    assert "openai" in card.built.get("preprocess", "")


def test_unknown_name_and_bad_device_refused_in_one_line():
    with pytest.raises(InputError, match="no-such-model") as e:
        describe_model("no-such-model")
    assert "\n" not in str(e.value)
    with pytest.raises(InputError, match="'device'") as e:
        describe_model("random-tiny", device="gpu")
    assert "\n" not in str(e.value)
    with pytest.raises(InputError, match="'preprocess'"):
        model_transform("random-timm-tiny", preprocess="squash")


def test_markdown_and_rows():
    card = describe_model("random-vit-l-14")
    rows = card.rows()
    assert ("Parameters", "total", "427,616,513") in rows
    assert ("Vision tower", "patch tokens", "256 (16 x 16 grid; 257 tokens with the class token)") in rows
    assert ("Training", "trained on", "random weights: trained on nothing") in rows
    md = card.to_markdown()
    assert md.startswith("## Model card: random-vit-l-14")
    assert "| total | 427,616,513 |" in md
    assert md.count("### ") == len({r[0] for r in rows})
    d = card.to_dict()
    assert d["parameters"]["total"] == 427_616_513 and d["text"]["layers"] == 12


def _snapshot_config(folder: Path, preprocess: dict) -> None:
    cfg = json.loads((Path(__file__).parents[1] / "latent/data/model_configs/latent-random-tiny.json").read_text())
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "open_clip_config.json").write_text(json.dumps({"model_cfg": cfg, "preprocess_cfg": preprocess}))


def test_a_snapshot_folders_own_preprocessing_is_read(tmp_path):
    folder = tmp_path / "snap"
    _snapshot_config(folder, {"mean": [0.5, 0.5, 0.5], "std": [0.25, 0.25, 0.25], "resize_mode": "squash",
                              "interpolation": "bilinear"})
    (folder / "open_clip_model.safetensors").write_bytes(b"")  # never read: the card needs no weights
    card = describe_model(f"local-dir:{folder}")
    assert card.preprocess["mean"] == [0.5, 0.5, 0.5] and card.preprocess["std"] == [0.25, 0.25, 0.25]
    assert card.preprocess["resize_mode"] == "squash" and card.preprocess["crop_size"] is None
    assert card.preprocess["interpolation"] == "bilinear"
    assert card.parameters["vision"] == _clip_vision(64, 2, 16, 4, 32)
    assert str(folder) in card.built["config"]


def test_hub_model_reads_its_config_from_the_local_cache(tmp_path):
    """bioclip with its open_clip_config.json in a (fake, local) Hugging Face cache: that file decides."""
    hub = tmp_path / "hub"
    root = hub / "models--imageomics--bioclip"
    commit = "0" * 40
    (root / "refs").mkdir(parents=True)
    (root / "refs" / "main").write_text(commit)
    _snapshot_config(root / "snapshots" / commit, {"mean": [0.5, 0.5, 0.5], "std": [0.5, 0.5, 0.5]})
    code = textwrap.dedent("""
        import json
        from latent.modelcard import describe_model
        c = describe_model("bioclip")
        print(json.dumps({"mean": c.preprocess["mean"], "config": c.built["config"], "vision": c.parameters["vision"]}))
    """)
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_HOME": str(tmp_path), "HF_HUB_CACHE": str(hub),
           "OMP_NUM_THREADS": "1"}
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    got = json.loads(done.stdout.strip().splitlines()[-1])
    assert got["mean"] == [0.5, 0.5, 0.5]
    assert "open_clip_config.json" in got["config"] and str(hub) in got["config"]
    assert got["vision"] == _clip_vision(64, 2, 16, 4, 32)  # the cached config's architecture, not ViT-B-16's


def test_transform_geometry_reads_the_steps():
    transform, geo, _ = model_transform("random-vit-l-14")
    assert geo["resize_mode"] == "shortest" and geo["resize_size"] == [224] and geo["crop_size"] == [224, 224]
    assert geo["interpolation"] == "bicubic"
    assert [s["step"] for s in geo["steps"]][:2] == ["resize", "center_crop"]
    assert transform_geometry(transform) == geo
    x = np.asarray(transform(Image.new("RGB", (300, 500), (255, 255, 255))).numpy())
    # white, normalised: (1 - mean) / std per channel
    assert x[:, 100, 100] == pytest.approx((1 - np.array(geo["mean"])) / np.array(geo["std"]), abs=1e-5)
