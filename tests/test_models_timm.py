"""Image-only models through timm (issue 16): registry, offline rules, embedding, refusal of text.

No downloads: the random tiny timm ViT is built from its seed, hub weights come from a Hugging Face
cache written here (HF_HUB_OFFLINE=1), and the DINOv2 entry is asked for with an empty cache.
"""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from latent.errors import InputError
from latent.models import ModelSpec, ModelUnavailableError, list_models, load_model, resolve_model

TIMM_ENTRIES = ("dinov2-vit-l-14", "vit-l-16-in21k", "random-dinov2-vit-l-14", "random-timm-tiny")
LINEAGE = {"kingdom": "Animalia", "phylum": "Chordata", "class": "Aves", "order": "Passeriformes",
           "family": "Passeridae"}


@pytest.fixture
def offline(monkeypatch, tmp_path):
    """Offline, with an empty Hugging Face cache in tmp_path (returns HF_HOME)."""
    import huggingface_hub.constants as hc

    home = tmp_path / "hf"
    home.mkdir()
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(home))
    monkeypatch.delenv("HF_HUB_CACHE", raising=False)
    monkeypatch.setattr(hc, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(hc, "HF_HUB_CACHE", str(home / "hub"))
    return home


@pytest.fixture(scope="module")
def tiny():
    return load_model("random-timm-tiny", device="cpu")


def _images(n: int, seed: int = 0):
    from PIL import Image

    rng = np.random.default_rng(seed)
    return [Image.fromarray((rng.random((60 + 7 * i, 90, 3)) * 255).astype("uint8")) for i in range(n)]


def _batch(loaded, images):
    import torch

    return torch.stack([loaded.transform(im) for im in images])


def test_registry_lists_the_image_only_models_without_importing_timm():
    specs = {s.name: s for s in list_models()}
    for name in TIMM_ENTRIES:
        assert specs[name].backend == "timm" and not specs[name].has_text
    dino = specs["dinov2-vit-l-14"]
    assert dino.timm_name == "vit_large_patch14_dinov2.lvd142m"
    assert dino.hf_repo == "timm/vit_large_patch14_dinov2.lvd142m" and dino.embed_dim == 1024
    assert specs["vit-l-16-in21k"].timm_name == "vit_large_patch16_224.augreg_in21k"
    assert specs["random-timm-tiny"].untrained and specs["random-timm-tiny"].source == "random"
    assert specs["bioclip-2"].has_text and specs["bioclip-2"].backend == "open_clip"
    assert resolve_model("timm:vit_large_patch14_dinov2.lvd142m").name == "dinov2-vit-l-14"
    assert json.dumps(dino.to_dict())  # plain JSON


def test_registry_timm_names_exist_in_timm():
    import timm

    pretrained = set(timm.list_pretrained())
    for spec in list_models():
        if spec.backend == "timm" and not spec.untrained:
            assert spec.timm_name in pretrained
            assert spec.hf_repo == f"timm/{spec.timm_name}"


def test_random_tiny_builds_embeds_and_is_deterministic(tiny):
    images = _images(3)
    emb = tiny.encode_images(_batch(tiny, images))
    assert tuple(emb.shape) == (3, 192) and str(emb.dtype) == "torch.float32"
    assert np.isfinite(emb.numpy()).all() and emb.std() > 0
    again = load_model("random-timm-tiny", device="cpu")
    assert np.array_equal(emb.numpy(), again.encode_images(_batch(again, images)).numpy())
    other_seed = load_model("random-timm-tiny", device="cpu", seed=1)
    assert not np.allclose(emb.numpy(), other_seed.encode_images(_batch(other_seed, images)).numpy())
    fields = tiny.provenance_fields()
    assert fields["model"] == "random-timm-tiny" and fields["untrained"] and fields["seed"] == 0
    assert fields["pretrained"] == "random-init seed=0" and fields["embed_dim"] == 192
    pp = fields["preprocess"]
    assert pp["name"] == "timm" and pp["image_size"] == [224, 224] and pp["interpolation"] == "bicubic"
    assert pp["mean"] == [0.5, 0.5, 0.5] and pp["crop_pct"] == 0.9


def test_embedding_is_timms_pooled_class_token(tiny):
    import torch

    x = _batch(tiny, _images(2))
    with torch.no_grad():
        ref = tiny.model.forward_head(tiny.model.forward_features(x), pre_logits=True)
    assert torch.allclose(ref, tiny.encode_images(x))


def test_grey_and_rgba_images_go_through_the_transform(tiny):
    from PIL import Image

    grey = Image.new("L", (50, 40), 128)
    rgba = Image.new("RGBA", (50, 40), (10, 20, 30, 128))
    assert tuple(_batch(tiny, [grey, rgba]).shape) == (2, 3, 224, 224)


def test_text_is_refused_with_one_line(tiny):
    with pytest.raises(InputError) as info:
        tiny.encode_texts(["a photo of a bird"])
    message = str(info.value)
    assert "\n" not in message and "random-timm-tiny" in message and "image-only" in message
    with pytest.raises(InputError):
        tiny.tokenizer(["a"])
    assert tiny.logit_scale is None and not tiny.has_text


def test_squash_preprocessing_is_refused_for_timm():
    with pytest.raises(InputError, match="preprocess"):
        load_model("random-timm-tiny", device="cpu", preprocess="squash")


def test_dinov2_without_weights_says_what_to_download(offline):
    with pytest.raises(ModelUnavailableError) as info:
        load_model("dinov2-vit-l-14", device="cpu")
    message = str(info.value)
    assert "hf download timm/vit_large_patch14_dinov2.lvd142m model.safetensors" in message
    assert "HF_HUB_OFFLINE=1" in message and str(offline / "hub") in message
    assert "models--timm--vit_large_patch14_dinov2.lvd142m" in message and "--pretrained" in message
    assert "open_clip_config.json" not in message  # a timm snapshot has none


def _tiny_in21k_weights(seed: int = 5):
    """A state dict of vit_tiny_patch16_224.augreg_in21k as its Hub repository holds it (with the 21k head)."""
    import timm
    import torch

    with torch.random.fork_rng():
        torch.manual_seed(seed)
        full = timm.create_model("vit_tiny_patch16_224.augreg_in21k", num_classes=21843).eval()
    return full, {k: v.contiguous() for k, v in full.state_dict().items()}


def test_hub_weights_come_from_the_local_cache_offline(offline):
    import torch
    from safetensors.torch import save_file

    full, state = _tiny_in21k_weights()
    repo = "timm/vit_tiny_patch16_224.augreg_in21k"
    root = offline / "hub" / "models--timm--vit_tiny_patch16_224.augreg_in21k"
    (root / "snapshots" / "rev1").mkdir(parents=True)
    (root / "refs").mkdir()
    (root / "refs" / "main").write_text("rev1")
    save_file(state, root / "snapshots" / "rev1" / "model.safetensors")
    spec = ModelSpec(name="tiny-hub", open_clip_name="timm:vit_tiny_patch16_224.augreg_in21k", pretrained=None,
                     arch="vit_tiny_patch16_224", embed_dim=192, source="hf-hub", backend="timm",
                     timm_name="vit_tiny_patch16_224.augreg_in21k", hub_repo=repo)
    loaded = load_model(spec, device="cpu")
    assert loaded.pretrained.startswith(f"{repo} sha256:") and loaded.weights_sha256
    x = _batch(loaded, _images(2))
    with torch.no_grad():
        ref = full.forward_head(full.forward_features(x), pre_logits=True)
    assert torch.allclose(ref, loaded.encode_images(x), atol=1e-5)


@pytest.mark.parametrize("form", ["safetensors", "pth", "folder"])
def test_local_weights_via_pretrained(tmp_path, form):
    import torch
    from safetensors.torch import save_file

    full, state = _tiny_in21k_weights(seed=7)
    if form == "safetensors":
        path = tmp_path / "w.safetensors"
        save_file(state, path)
    elif form == "pth":
        path = tmp_path / "w.pth"
        torch.save(state, path)
    else:
        path = tmp_path / "snap"
        path.mkdir()
        save_file(state, path / "model.safetensors")
    spec = resolve_model("random-timm-tiny", str(path))
    assert spec.source == "file" and spec.backend == "timm" and not spec.untrained
    loaded = load_model(spec, device="cpu")
    assert not loaded.untrained and loaded.weights_sha256 and str(tmp_path) in loaded.pretrained
    x = _batch(loaded, _images(2))
    with torch.no_grad():
        ref = full.forward_head(full.forward_features(x), pre_logits=True)
    assert torch.allclose(ref, loaded.encode_images(x), atol=1e-5)


def test_missing_local_weights_is_an_input_error(tmp_path):
    with pytest.raises(InputError, match="pretrained"):
        resolve_model("dinov2-vit-l-14", str(tmp_path / "nope.safetensors"))
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(InputError, match="model.safetensors"):
        resolve_model("dinov2-vit-l-14", str(empty))


def test_wrong_architecture_weights_are_an_input_error(tmp_path):
    from safetensors.torch import save_file

    _, state = _tiny_in21k_weights()
    path = tmp_path / "tiny.safetensors"
    save_file(state, path)
    with pytest.raises(InputError, match="timm could not build"):
        load_model(resolve_model("random-dinov2-vit-l-14", str(path)), device="cpu")


def _png_manifest(tmp_path):
    from PIL import Image

    folder = tmp_path / "pngs"
    folder.mkdir()
    rows = []
    for i, im in enumerate(_images(4, seed=3)):
        path = folder / f"img{i}.png"
        im.save(path)
        rows.append({"filepath": str(path), **LINEAGE, "genus": "Passer",
                     "species": "Passer domesticus" if i < 2 else "Passer montanus"})
    Image.new("RGBA", (30, 30), (0, 0, 0, 0)).save(folder / "transparent.png")
    rows.append({"filepath": str(folder / "transparent.png"), **LINEAGE, "genus": "Passer",
                 "species": "Passer montanus"})
    manifest = tmp_path / "manifest.csv"
    pd.DataFrame(rows).to_csv(manifest, index=False)
    return manifest


def test_latent_embed_random_timm_tiny_end_to_end(tmp_path, capsys):
    from latent.cache import open_cache
    from latent.cli import main

    manifest = _png_manifest(tmp_path)
    out = tmp_path / "tiny.h5"
    code = main(["embed", str(manifest), "--out", str(out), "--model", "random-timm-tiny", "--workers", "0",
                 "--device", "cpu", "--no-progress", "--batch-size", "2"])
    assert code == 0, capsys.readouterr()
    with open_cache(out) as cache:
        assert (cache.n_rows, cache.dim) == (5, 192)
        assert cache.provenance.model == "random-timm-tiny"
        assert cache.provenance.preprocess["name"] == "timm"
        assert cache.labels("species").tolist().count("Passer montanus") == 3
        emb = cache.read()
    assert emb.shape == (5, 192) and np.isfinite(emb).all()
    # a second run is a no-op (same provenance)
    assert main(["embed", str(manifest), "--out", str(out), "--model", "random-timm-tiny", "--workers", "0",
                 "--device", "cpu", "--no-progress"]) == 0
    # text on this cache is refused in one line
    capsys.readouterr()
    assert main(["embed-text", str(out), "--device", "cpu"]) != 0
    errors = [line for line in capsys.readouterr().err.splitlines() if "error" in line.lower()]
    assert len(errors) == 1 and "image-only" in errors[0] and "random-timm-tiny" in errors[0]
    # zero-shot needs text embeddings, which this cache cannot get
    assert main(["evaluate", str(out), "--method", "zero-shot", "--out", str(tmp_path / "zs")]) != 0
    errors = [line for line in capsys.readouterr().err.splitlines() if "error" in line.lower()]
    assert len(errors) == 1 and "text embeddings" in errors[0]


def test_latent_models_lists_the_new_entries(capsys):
    from latent.cli import main

    assert main(["models"]) == 0
    out = capsys.readouterr().out
    for name in TIMM_ENTRIES:
        assert name in out
    assert "timm:vit_large_patch14_dinov2.lvd142m" in out


def test_a_pickle_with_code_is_refused(tmp_path):
    import pathlib

    import torch

    _, state = _tiny_in21k_weights()
    state["where"] = pathlib.PurePosixPath("/not/a/tensor")  # a class: torch.load(weights_only=True) refuses it
    path = tmp_path / "unsafe.pth"
    torch.save(state, path)
    with pytest.raises(InputError) as info:
        load_model(resolve_model("random-timm-tiny", str(path)), device="cpu")
    assert str(info.value).startswith("Refused to load") and "weights_only=True" in str(info.value)


def test_require_text_tower_refuses_image_only_models_cheaply():
    from latent.models import require_text_tower

    for name in TIMM_ENTRIES + ("timm:vit_tiny_patch16_224",):
        with pytest.raises(InputError, match="image-only") as info:
            require_text_tower(name)
        assert "\n" not in str(info.value)
    with pytest.raises(InputError, match="image-only"):
        require_text_tower(resolve_model("dinov2-vit-l-14"))
    for fine in ("bioclip-2", "random-tiny", "unknown", None, "timm:no_such_model"):
        require_text_tower(fine)  # CLIP models, and names that are not known image-only models, pass
