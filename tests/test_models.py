"""Model registry and loading, through open_clip's real code paths (no mocks).

Everything runs on CPU without network: random models, weights files and snapshot folders written
here, a fake Hugging Face cache, and the offline / no-network failures (in subprocesses, so that
huggingface_hub reads the environment at import).
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("open_clip")
from PIL import Image  # noqa: E402

from latent.errors import InputError, LatentError  # noqa: E402
from latent.models import (  # noqa: E402
    PYBIOCLIP_MEAN,
    PYBIOCLIP_STD,
    LoadedModel,
    ModelSpec,
    ModelUnavailableError,
    default_model_name,
    list_models,
    load_model,
    resolve_model,
)

REPO = Path(__file__).resolve().parents[1]
TINY_CFG = json.loads((REPO / "latent" / "data" / "model_configs" / "latent-random-tiny.json").read_text())


def _images(n: int, seed: int = 0, size: tuple[int, int] = (90, 70)) -> list[Image.Image]:
    g = torch.Generator().manual_seed(seed)
    arrays = torch.randint(0, 256, (n, size[1], size[0], 3), generator=g, dtype=torch.uint8).numpy()
    return [Image.fromarray(a) for a in arrays]


def _batch(lm: LoadedModel, n: int = 4, seed: int = 0) -> torch.Tensor:
    return torch.stack([lm.transform(im) for im in _images(n, seed)])


TEXTS = ["a photo of Animalia Chordata Aves Passeriformes Corvidae Corvus corax.", "a photo of a fern.", ""]


@pytest.fixture(scope="module")
def tiny() -> LoadedModel:
    return load_model("random-tiny", device="cpu", seed=0)


def _same_weights(a: torch.nn.Module, b: torch.nn.Module) -> bool:
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


def _run(code: str, env_extra: dict[str, str], timeout: float = 120) -> tuple[dict, float]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("HF_")}
    env.update(env_extra)
    env["PYTHONPATH"] = str(REPO) + os.pathsep + env.get("PYTHONPATH", "")
    start = time.perf_counter()
    proc = subprocess.run([sys.executable, "-c", textwrap.dedent(code)], env=env, capture_output=True, text=True,
                          timeout=timeout, cwd=REPO)
    wall = time.perf_counter() - start
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(proc.stdout.strip().splitlines()[-1]), wall


# ---------------------------------------------------------------------------- registry
def test_registry_is_data_and_cheap_to_read():
    code = """
        import json, sys
        from latent.models import list_models, resolve_model, default_model_name
        specs = list_models()
        spec = resolve_model("bioclip-2")
        print(json.dumps({"torch": "torch" in sys.modules, "open_clip": "open_clip" in sys.modules,
                          "names": [s.name for s in specs], "default": default_model_name(),
                          "bioclip2": spec.to_dict()}))
    """
    out, _ = _run(code, {})
    assert out["torch"] is False and out["open_clip"] is False  # the CLI can list models without torch
    assert out["names"] == ["bioclip-2", "bioclip", "clip-vit-l-14", "clip-vit-l-14-laion2b", "random-tiny",
                            "random-vit-l-14", "dinov2-vit-l-14", "vit-l-16-in21k", "random-dinov2-vit-l-14",
                            "random-timm-tiny"]  # the image-only timm models (issue 16) last
    assert out["default"] == "bioclip-2"
    b2 = out["bioclip2"]
    assert b2["open_clip"] == "hf-hub:imageomics/bioclip-2" and b2["embed_dim"] == 768 and b2["arch"] == "ViT-L-14"
    assert "hf download imageomics/bioclip-2" in b2["download"]
    assert "huggingface-cli download imageomics/bioclip-2" in b2["download"]


def test_registry_entries_match_open_clip():
    import open_clip

    specs = {s.name: s for s in list_models()}
    assert default_model_name() == "bioclip-2" and specs["bioclip-2"].default
    assert sum(s.default for s in specs.values()) == 1
    assert specs["bioclip"].open_clip_name == "hf-hub:imageomics/bioclip" and specs["bioclip"].embed_dim == 512
    assert [s.name for s in specs.values() if s.untrained and s.backend == "open_clip"] == \
        ["random-tiny", "random-vit-l-14"]
    pretrained = set(open_clip.list_pretrained())
    for name in ("clip-vit-l-14", "clip-vit-l-14-laion2b"):
        s = specs[name]
        assert (s.open_clip_name, s.pretrained) in pretrained, name  # the exact tag exists
        assert open_clip.get_model_config(s.open_clip_name)["embed_dim"] == s.embed_dim == 768
        assert s.download and s.download[0].startswith("hf download ")
    # OpenAI weights were trained with QuickGELU: the entry's architecture must have it
    assert open_clip.get_model_config(specs["clip-vit-l-14"].open_clip_name).get("quick_gelu") is True
    assert not open_clip.get_model_config(specs["clip-vit-l-14-laion2b"].open_clip_name).get("quick_gelu", False)


def test_resolve_tags_archs_and_random():
    spec = resolve_model("random-vit-l-14")
    assert (spec.arch, spec.embed_dim, spec.untrained, spec.source, spec.open_clip_name) == \
        ("ViT-L-14", 768, True, "random", "ViT-L-14")
    assert resolve_model("random:ViT-L-14") == spec  # the same model under its registry name
    assert resolve_model("random:RN50").embed_dim == 1024
    # an open_clip architecture + tag; the same weights as a registry entry get its name
    assert resolve_model("ViT-L-14", "openai").name == "clip-vit-l-14"
    assert resolve_model("ViT-L/14", "laion2b_s32b_b82k").name == "clip-vit-l-14-laion2b"
    other = resolve_model("ViT-B-32", "laion2b_s34b_b79k")
    assert (other.source, other.pretrained, other.embed_dim, other.quick_gelu) == \
        ("tag", "laion2b_s34b_b79k", 512, False)
    assert "laion/CLIP-ViT-B-32-laion2B-s34B-b79K" in other.download[0]
    openai_b32 = resolve_model("ViT-B-32", "openai")
    assert openai_b32.quick_gelu is True  # built with the activation the weights were trained with
    hub = resolve_model("hf-hub:someone/some-clip")
    assert hub.source == "hf-hub" and hub.hf_repo == "someone/some-clip" and hub.embed_dim is None
    assert resolve_model("hf-hub:imageomics/bioclip-2").name == "bioclip-2"


# ---------------------------------------------------------------------------- random models
def test_random_tiny_encodes_images_and_texts(tiny):
    assert isinstance(tiny.spec, ModelSpec) and tiny.untrained and tiny.seed == 0
    assert tiny.embed_dim == 32 and tiny.image_size == (64, 64) and tiny.precision == "fp32"
    assert not tiny.model.training
    x = _batch(tiny, 32)
    assert x.shape == (32, 3, 64, 64)
    emb = tiny.encode_images(x)  # speed is measured in benchmarks/bench_embed.py, not asserted here
    assert emb.shape == (32, 32) and emb.dtype == torch.float32 and emb.device.type == "cpu"
    assert torch.isfinite(emb).all()
    assert not torch.allclose(emb.norm(dim=1), torch.ones(32))  # not normalised
    assert not torch.allclose(emb[0], emb[1])  # different images, different embeddings
    txt = tiny.encode_texts(TEXTS)
    assert txt.shape == (3, 32) and txt.dtype == torch.float32 and torch.isfinite(txt).all()
    assert tiny.encode_texts([]).shape == (0, 32) and tiny.encode_images(x[:0]).shape == (0, 32)
    prov = tiny.provenance_fields()
    assert prov["model"] == "random-tiny" and prov["pretrained"] == "random-init seed=0"
    assert prov["embed_dim"] == 32 and prov["untrained"] is True and prov["seed"] == 0
    assert json.loads(json.dumps(prov)) == prov


def test_seed_gives_identical_weights_and_restores_global_rng(tiny):
    torch.manual_seed(123)
    expected = torch.rand(5)
    torch.manual_seed(123)
    again = load_model("random-tiny", device="cpu", seed=0)
    assert torch.equal(torch.rand(5), expected)  # the global RNG stream is untouched
    assert _same_weights(tiny.model, again.model)
    x = _batch(tiny, 4)
    assert torch.equal(tiny.encode_images(x), again.encode_images(x))
    assert torch.equal(tiny.encode_texts(TEXTS), again.encode_texts(TEXTS))
    other = load_model("random-tiny", device="cpu", seed=1)
    assert not _same_weights(tiny.model, other.model)
    assert not torch.allclose(tiny.encode_images(x), other.encode_images(x))
    assert other.provenance_fields()["pretrained"] == "random-init seed=1"


def test_random_arbitrary_open_clip_arch():
    lm = load_model("random:RN50", device="cpu", seed=3)
    assert lm.spec.name == "random:RN50" and lm.untrained and lm.embed_dim == 1024 and lm.image_size == (224, 224)
    emb = lm.encode_images(_batch(lm, 2))
    assert emb.shape == (2, 1024) and torch.isfinite(emb).all()
    assert lm.encode_texts(["a photo of a moss."]).shape == (1, 1024)


def test_amp_and_bf16_precisions_run_on_cpu(tiny):
    x = _batch(tiny, 3)
    ref = tiny.encode_images(x)
    for precision in ("amp", "bf16"):
        lm = load_model("random-tiny", device="cpu", precision=precision, seed=0)
        assert lm.precision == precision
        out = lm.encode_images(x)
        assert out.dtype == torch.float32 and out.shape == ref.shape
        assert torch.allclose(out, ref, atol=0.1, rtol=0.1)  # same model, lower precision


# ---------------------------------------------------------------------------- local weights
def _save_safetensors(model: torch.nn.Module, path: Path) -> None:
    from safetensors.torch import save_file

    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(path))


def test_local_safetensors_file_is_really_loaded(tiny, tmp_path):
    path = tmp_path / "tiny.safetensors"
    _save_safetensors(tiny.model, path)
    lm = load_model("latent-random-tiny", pretrained=path, device="cpu", seed=7)  # a different seed
    assert _same_weights(lm.model, tiny.model)
    x = _batch(tiny, 4, seed=5)
    assert torch.equal(lm.encode_images(x), tiny.encode_images(x))
    assert torch.equal(lm.encode_texts(TEXTS), tiny.encode_texts(TEXTS))
    sha = hashlib.sha256(path.read_bytes()).hexdigest()
    prov = lm.provenance_fields()
    assert prov["pretrained"] == f"{path.resolve()} sha256:{sha}" and prov["weights_sha256"] == sha
    assert prov["untrained"] is False and prov["seed"] is None and prov["model"] == "latent-random-tiny"
    # the random-seed-7 model really differs, so equality above came from the file
    assert not _same_weights(load_model("random-tiny", device="cpu", seed=7).model, tiny.model)
    # a registry random entry with a weights file is its architecture with those weights
    assert resolve_model("random-tiny", pretrained=path) == lm.spec


def test_local_pt_file_loads_with_weights_only(tiny, tmp_path):
    path = tmp_path / "tiny.pt"
    torch.save({"state_dict": tiny.model.state_dict()}, path)
    lm = load_model(resolve_model("latent-random-tiny", pretrained=str(path)), device="cpu", seed=9)
    x = _batch(tiny, 3)
    assert torch.equal(lm.encode_images(x), tiny.encode_images(x))


class _Payload:
    """Unpickling this runs os.mkdir(marker): the code execution weights_only=True must prevent."""

    def __init__(self, marker: Path) -> None:
        self.marker = str(marker)

    def __reduce__(self):
        return (os.mkdir, (self.marker,))


def test_pickled_objects_are_refused_not_executed(tiny, tmp_path):
    marker = tmp_path / "pwned"
    path = tmp_path / "evil.pt"
    state = dict(tiny.model.state_dict())
    state["logit_scale"] = _Payload(marker)
    torch.save(state, path)
    with pytest.raises(InputError, match=r"(?s)Refused to load .*evil\.pt.*weights_only=True"):
        load_model("latent-random-tiny", pretrained=path, device="cpu")
    assert not marker.exists()
    with pytest.raises(InputError, match="Refused"):  # even with the user's environment asking for unsafe loads
        os.environ["TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD"] = "1"
        try:
            load_model("latent-random-tiny", pretrained=path, device="cpu")
        finally:
            del os.environ["TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD"]
    assert not marker.exists()
    torch.load(path, weights_only=False)  # the payload is real: an unsafe load runs it
    assert marker.is_dir()


def test_wrong_architecture_for_file_is_a_clear_error(tiny, tmp_path):
    path = tmp_path / "tiny.safetensors"
    _save_safetensors(tiny.model, path)
    with pytest.raises(InputError, match=r"Could not load the weights .*tiny\.safetensors into ViT-B-32"):
        load_model("ViT-B-32", pretrained=path, device="cpu")
    bad = tmp_path / "weights.txt"
    bad.write_text("x")
    with pytest.raises(InputError, match=r"must end in one of \.safetensors"):
        resolve_model("latent-random-tiny", pretrained=bad)


def _snapshot(tiny: LoadedModel, folder: Path, mean: float = 0.5) -> Path:
    """A folder laid out like open_clip's hf-hub export (push_to_hf_hub): config + safetensors."""
    folder.mkdir(parents=True, exist_ok=True)
    config = {"model_cfg": TINY_CFG,
              "preprocess_cfg": {"mean": [mean] * 3, "std": [0.25] * 3, "interpolation": "bicubic",
                                 "resize_mode": "shortest"}}
    (folder / "open_clip_config.json").write_text(json.dumps(config))
    _save_safetensors(tiny.model, folder / "open_clip_model.safetensors")
    return folder


def test_local_snapshot_folder(tiny, tmp_path):
    folder = _snapshot(tiny, tmp_path / "snap")
    for lm in (load_model("latent-random-tiny", pretrained=folder, device="cpu", seed=4),
               load_model(f"local-dir:{folder}", device="cpu", seed=5)):
        assert lm.spec.source == "dir" and lm.spec.arch == "latent-random-tiny" and lm.embed_dim == 32
        assert _same_weights(lm.model, tiny.model)
        assert lm.encode_texts(TEXTS).equal(tiny.encode_texts(TEXTS))
        # the folder's preprocess_cfg was read: its mean/std, not open_clip's defaults
        assert lm.preprocess_info["mean"] == [0.5] * 3 and lm.preprocess_info["std"] == [0.25] * 3
        assert lm.weights_file == str(folder.resolve() / "open_clip_model.safetensors")
    with pytest.raises(InputError, match="holds a 32-d model, but 'bioclip-2' is 768-d"):
        resolve_model("bioclip-2", pretrained=folder)
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(InputError, match="holds no open_clip_config.json"):
        resolve_model("latent-random-tiny", pretrained=empty)


# ---------------------------------------------------------------------------- offline and network
def _fake_hub_cache(tiny: LoadedModel, hub: Path, repo: str) -> str:
    """A Hugging Face cache holding repo's config and weights the way huggingface_hub lays it out."""
    src = _snapshot(tiny, hub.parent / "src", mean=0.4)
    commit = "0123456789abcdef0123456789abcdef01234567"
    root = hub / f"models--{repo.replace('/', '--')}"
    (root / "refs").mkdir(parents=True)
    (root / "refs" / "main").write_text(commit)
    (root / "blobs").mkdir()
    snap = root / "snapshots" / commit
    snap.mkdir(parents=True)
    sha = ""
    for name in ("open_clip_config.json", "open_clip_model.safetensors"):
        data = (src / name).read_bytes()
        sha = hashlib.sha256(data).hexdigest()
        (root / "blobs" / sha).write_bytes(data)
        (snap / name).symlink_to(Path("..") / ".." / "blobs" / sha)
    return sha  # of the weights


def test_offline_missing_weights_fail_fast_with_guidance_and_cached_weights_load(tiny, tmp_path):
    hf_home = tmp_path / "hf"
    hub = hf_home / "hub"
    weights_sha = _fake_hub_cache(tiny, hub, "latent-test/tiny-clip")
    ref = tiny.encode_texts(TEXTS).tolist()
    code = f"""
        import json, time
        from latent.models import load_model, ModelUnavailableError
        out = {{}}
        for name in ("bioclip-2", "clip-vit-l-14"):
            t = time.perf_counter()
            try:
                load_model(name, device="cpu")
                out[name] = None
            except ModelUnavailableError as e:
                out[name] = [str(e), time.perf_counter() - t]
        lm = load_model("hf-hub:latent-test/tiny-clip", device="cpu", seed=11)
        out["cached"] = {{"texts": lm.encode_texts({TEXTS!r}).tolist(), "prov": lm.provenance_fields()}}
        print(json.dumps(out))
    """
    out, wall = _run(code, {"HF_HUB_OFFLINE": "1", "HF_HOME": str(hf_home), "HF_HUB_CACHE": str(hub),
                            "HF_ENDPOINT": "http://127.0.0.1:9"})
    message, seconds = out["bioclip-2"]
    # no wall-clock bound (shared machines): a hang in the Hub's retries is caught by _run's timeout
    assert "hf download imageomics/bioclip-2" in message and "huggingface-cli download imageomics/bioclip-2" in message
    assert "--pretrained" in message and "open_clip_model.safetensors" in message
    assert str(hub) in message and "HF_HUB_OFFLINE=1" in message
    message, seconds = out["clip-vit-l-14"]
    assert "hf download timm/vit_large_patch14_clip_224.openai" in message
    assert "--pretrained" in message
    # weights in the cache load offline, with the snapshot's own config and the blob's sha256
    cached = out["cached"]
    assert torch.allclose(torch.tensor(cached["texts"]), torch.tensor(ref), atol=1e-6)
    prov = cached["prov"]
    assert prov["pretrained"] == f"hf-hub:latent-test/tiny-clip sha256:{weights_sha}"
    assert prov["model"] == "hf-hub:latent-test/tiny-clip" and prov["untrained"] is False and prov["seed"] is None
    assert prov["preprocess"]["mean"] == [0.4] * 3 and prov["embed_dim"] == 32


def test_no_network_fails_fast_with_guidance(tmp_path):
    # not offline, but the Hub endpoint refuses connections: must not hang in huggingface_hub's retries
    code = """
        import json, time
        from latent.models import load_model, ModelUnavailableError
        t = time.perf_counter()
        try:
            load_model("bioclip-2", device="cpu")
            print(json.dumps(None))
        except ModelUnavailableError as e:
            print(json.dumps([str(e), time.perf_counter() - t, repr(e.__cause__)]))
    """
    out, wall = _run(code, {"HF_HOME": str(tmp_path / "hf"), "HF_ENDPOINT": "http://127.0.0.1:9"}, timeout=90)
    assert out is not None
    message, seconds, cause = out
    # no wall-clock bound (shared machines); _run's timeout catches a hang in huggingface_hub's retries
    assert "cannot be reached" in message and "hf download imageomics/bioclip-2" in message
    assert "--pretrained /path/to/open_clip_model.safetensors" in message and str(tmp_path / "hf" / "hub") in message
    assert cause != "None"  # chained from the network error


# ---------------------------------------------------------------------------- preprocessing
def _stripe_image() -> Image.Image:
    """100 x 50 white image with a red stripe along the left edge (columns 0-9)."""
    img = Image.new("RGB", (100, 50), (255, 255, 255))
    img.paste((255, 0, 0), (0, 0, 10, 50))
    return img


def _redness(x: torch.Tensor, mean, std) -> torch.Tensor:
    """Per-column red - green of a normalised (3, H, W) image, in [0, 1] pixel units."""
    rgb = x * torch.tensor(std).view(3, 1, 1) + torch.tensor(mean).view(3, 1, 1)
    return (rgb[0] - rgb[1]).mean(dim=0)


def test_squash_keeps_the_whole_image_openclip_crops(tiny):
    squash = load_model("random-tiny", device="cpu", preprocess="squash")
    img = _stripe_image()
    a, b = tiny.transform(img), squash.transform(img)
    assert a.shape == b.shape == (3, 64, 64)
    assert _redness(b, PYBIOCLIP_MEAN, PYBIOCLIP_STD)[:4].min() > 0.9  # the stripe survives at the left edge
    info = tiny.preprocess_info
    assert _redness(a, info["mean"], info["std"]).max() < 0.05  # centre crop cut it away
    assert (info["name"], info["crop"], info["resize_mode"], info["interpolation"]) == \
        ("openclip", "center", "shortest", "bicubic")
    sq = squash.preprocess_info
    assert (sq["name"], sq["crop"], sq["resize_mode"], sq["interpolation"], sq["image_size"]) == \
        ("squash", "none", "squash", "bilinear", [64, 64])
    assert sq["mean"] == list(PYBIOCLIP_MEAN) and sq["std"] == list(PYBIOCLIP_STD)
    assert squash.provenance_fields()["preprocess"] != tiny.provenance_fields()["preprocess"]
    # weights do not depend on the preprocessing
    x = torch.stack([a, a])
    assert torch.equal(squash.encode_images(x), tiny.encode_images(x))


def test_squash_matches_pybioclip_transform_exactly(tiny):
    from torchvision import transforms

    squash = load_model("random-tiny", device="cpu", preprocess="squash")
    reference = transforms.Compose([  # pybioclip's preprocess_img, at the model's 64 px
        transforms.ToTensor(),
        transforms.Resize((64, 64), antialias=True),
        transforms.Normalize(mean=(0.48145466, 0.4578275, 0.40821073), std=(0.26862954, 0.26130258, 0.27577711)),
    ])
    for img in [_stripe_image(), *_images(2, seed=3, size=(123, 77))]:
        assert torch.equal(squash.transform(img), reference(img.convert("RGB")))
    rgba = _images(1, seed=4)[0].convert("RGBA")
    assert squash.transform(rgba).shape == (3, 64, 64)  # converted to RGB first, as pybioclip does
    import pickle  # DataLoader workers receive the transforms pickled

    img = _stripe_image()
    for lm in (squash, tiny):
        assert torch.equal(pickle.loads(pickle.dumps(lm.transform))(img), lm.transform(img))


# ---------------------------------------------------------------------------- bad parameters
def test_bad_parameters_have_clear_messages(tiny):
    with pytest.raises(InputError, match=r"The 'name' parameter of resolve_model must be a registry model "
                                         r"\(bioclip-2, bioclip, .*random-vit-l-14, .*random-timm-tiny\).*any open_clip architecture.*"
                                         r"Got 'bioclip-3000' instead"):
        load_model("bioclip-3000")
    with pytest.raises(InputError, match=r"The 'precision' parameter of load_model must be one of 'auto', 'fp32', "
                                         r"'fp16', 'bf16', 'amp'\. Got 'fp8' instead\."):
        load_model("random-tiny", precision="fp8")
    with pytest.raises(InputError, match=r"The 'preprocess' parameter of load_model must be one of 'openclip', "
                                         r"'squash'\. Got 'crop' instead\."):
        load_model("random-tiny", preprocess="crop")
    with pytest.raises(InputError, match=r"The 'device' parameter of load_model .* Got 'gpu0' instead"):
        load_model("random-tiny", device="gpu0")
    if not torch.cuda.is_available():
        with pytest.raises(InputError, match="torch sees no CUDA GPU"):
            load_model("random-tiny", device="cuda")
    with pytest.raises(InputError, match=r"The 'seed' parameter of load_model must be a non-negative integer"):
        load_model("random-tiny", seed=-1)
    with pytest.raises(InputError, match=r"pretrained tag of ViT-L-14 \(openai, .*laion2b_s32b_b82k.*Got 'laion5b'"):
        resolve_model("ViT-L-14", "laion5b")
    with pytest.raises(InputError, match=r"For random weights use name='random:ViT-L-14'"):
        resolve_model("ViT-L-14")
    with pytest.raises(InputError, match=r"random:<arch>.*Got 'random:ViT-Q-99'"):
        resolve_model("random:ViT-Q-99")
    with pytest.raises(InputError, match="None for the random initialisation"):
        resolve_model("random:RN50", pretrained="openai")
    with pytest.raises(InputError, match="existing weights file or snapshot folder for bioclip-2"):
        resolve_model("bioclip-2", pretrained="/no/such/file.safetensors")
    with pytest.raises(InputError, match=r"The 'texts' parameter of encode_texts must be a list of strings"):
        tiny.encode_texts("a single prompt")
    with pytest.raises(InputError, match=r"The 'batch' parameter of encode_images must be a \(B, 3, 64, 64\) tensor"):
        tiny.encode_images(torch.zeros(2, 3, 32, 32))
    assert issubclass(ModelUnavailableError, LatentError)
