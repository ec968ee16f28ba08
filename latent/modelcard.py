"""Model cards: what a model is (architecture, parameters, preprocessing) and what it was trained on.

:func:`describe_model` answers "what is this model?" for any name :func:`latent.models.resolve_model`
takes, offline and without its weights:

* the **architecture** is read from the built module. The model is built from its own config (the
  open_clip architecture config, the hub snapshot's ``open_clip_config.json`` when it is in the local
  Hugging Face cache, or the timm model name) on PyTorch's ``meta`` device by default: every module
  and parameter exists with its real shape, but no memory is allocated and no weight is read or
  downloaded (``device="cpu"`` builds the same module with random weights; the counts are equal,
  which the tests check);
* **parameter counts** (vision tower, text tower, the rest, total) are sums of ``numel`` over the
  built module's parameters;
* the **preprocessing** is read from the evaluation transform itself (the torchvision steps: resize
  size and mode, crop, mean/std), built exactly as :func:`latent.models.load_model` builds it;
* **what it was trained on** (data, initialisation, objective, training text) and **published
  evaluations** come from ``latent/data/model_cards.json``: curated facts, each with its source;
  a field without a checked source says "not recorded".

:func:`model_transform` gives the evaluation transform and its geometry without any weights (used by
:mod:`latent.show_inputs`); :func:`transform_steps` reads a transform's steps.
"""

from __future__ import annotations

import contextlib
import functools
import json
import logging
import os
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

from latent.errors import InputError, LatentError
from latent.models import ModelSpec, resolve_model

__all__ = ["ModelCard", "describe_model", "model_transform", "transform_steps", "transform_geometry", "DEVICES"]

log = logging.getLogger(__name__)

#: Where :func:`describe_model` builds the module: ``"meta"`` (shapes only, no memory) or ``"cpu"``
#: (random weights).
DEVICES = ("meta", "cpu")
NOT_RECORDED = "not recorded"
_RANDOM_TRAINING = "random weights: trained on nothing"


# ---------------------------------------------------------------------------- curated facts
@functools.lru_cache(maxsize=1)
def _curated() -> dict[str, Any]:
    path = Path(str(resources.files("latent").joinpath("data", "model_cards.json")))
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        return dict(data["models"])
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise LatentError(f"The model card facts {path} are missing or damaged ({e!r}); reinstall latent.") from e


def _training_facts(spec: ModelSpec) -> tuple[dict[str, Any], list[dict[str, str]]]:
    """The curated training facts and evaluations of ``spec`` (random weights say so)."""
    if spec.untrained:
        facts = {"trained_on": _RANDOM_TRAINING, "initialised_from": "random initialisation (seeded)",
                 "objective": "none", "training_text": "none", "sources": []}
        return facts, []
    entry = _curated().get(spec.name)
    keys = ("trained_on", "initialised_from", "objective", "training_text")
    if not entry or entry.get("random"):
        facts = {k: NOT_RECORDED for k in keys}
        facts["sources"] = []
        return facts, []
    facts = {k: str(entry.get(k) or NOT_RECORDED) for k in keys}
    facts["sources"] = [str(s) for s in entry.get("sources", [])]
    evaluations = [{"benchmark": str(e.get("benchmark", "")), "result": str(e.get("result", NOT_RECORDED)),
                    "source": str(e.get("source", NOT_RECORDED))} for e in entry.get("evaluations", [])]
    return facts, evaluations


# ---------------------------------------------------------------------------- reading a transform
def _interp(value: Any) -> str:
    return str(getattr(value, "value", value)).lower()


def _hw(size: Any) -> list[int]:
    if isinstance(size, int):
        return [size, size]
    size = list(size)
    return [int(size[0]), int(size[-1])] if size else []


def _floats(values: Any) -> list[float]:
    if hasattr(values, "tolist"):
        values = values.tolist()
    return [float(v) for v in values]


def transform_steps(transform: Callable[[Any], Any]) -> list[dict[str, Any]]:
    """The steps of an evaluation transform, read from the transform objects themselves.

    Parameters
    ----------
    transform : callable
        A torchvision ``Compose`` (open_clip's and timm's evaluation transforms, latent's squash
        transform), possibly wrapped (latent's timm wrapper exposes ``inner``).

    Returns
    -------
    list of dict
        One dict per step, in order, with ``step`` (``"resize"``, ``"resize_keep_ratio"``,
        ``"center_crop"``, ``"center_crop_or_pad"``, ``"to_tensor"``, ``"normalize"``, ``"rgb"``, or
        ``"other"``) and its parameters (``size`` as ``[h, w]`` or ``[s]`` for a shortest-side resize,
        ``interpolation``, ``antialias``, ``longest``, ``fill``, ``mean``, ``std``, ``repr``).
    """
    inner = getattr(transform, "inner", None)
    if inner is not None:
        return [{"step": "rgb", "repr": "ToRGB()"}] + transform_steps(inner)
    parts = getattr(transform, "transforms", None)
    if parts is None:
        parts = [transform]
    steps: list[dict[str, Any]] = []
    for t in parts:
        kind = type(t).__name__
        if kind == "Resize":
            size = t.size
            size = [int(size)] if isinstance(size, int) else [int(s) for s in size]
            steps.append({"step": "resize", "size": size, "interpolation": _interp(t.interpolation),
                          "antialias": bool(getattr(t, "antialias", True)), "max_size": t.max_size})
        elif kind == "ResizeKeepRatio":
            steps.append({"step": "resize_keep_ratio", "size": _hw(t.size), "longest": float(t.longest),
                          "interpolation": _interp(t.interpolation)})
        elif kind == "CenterCrop":
            steps.append({"step": "center_crop", "size": _hw(t.size)})
        elif kind == "CenterCropOrPad":
            steps.append({"step": "center_crop_or_pad", "size": _hw(t.size), "fill": getattr(t, "fill", 0)})
        elif kind in ("ToTensor", "MaybeToTensor"):
            steps.append({"step": "to_tensor"})
        elif kind == "Normalize":
            steps.append({"step": "normalize", "mean": _floats(t.mean), "std": _floats(t.std)})
        elif kind in ("_ToRGB", "MaybeConvertMode") or getattr(t, "__name__", "") == "_convert_to_rgb":
            steps.append({"step": "rgb", "repr": repr(t)})
        else:
            steps.append({"step": "other", "repr": repr(t)})
    return steps


def transform_geometry(transform: Callable[[Any], Any]) -> dict[str, Any]:
    """What an evaluation transform does to an image's geometry and values, read from its steps.

    Returns
    -------
    dict
        ``resize_mode`` (``"shortest"``: the shorter side to ``resize_size[0]``, aspect kept;
        ``"squash"``: to exactly ``resize_size`` ``[h, w]``, aspect changed; ``"longest"`` /
        ``"fit_shortest"``: aspect kept, fit by the longer / shorter side to ``resize_size``),
        ``resize_size``, ``crop_size`` (``[h, w]`` of the centre crop, or None), ``crop_pads``
        (True when the crop pads an image smaller than it), ``image_size`` (``[h, w]`` the model
        receives), ``interpolation``, ``mean``, ``std``, ``steps`` (:func:`transform_steps`).

    Raises
    ------
    LatentError
        The transform has no resize step or a step whose geometry is unknown.
    """
    steps = transform_steps(transform)
    geo: dict[str, Any] = {"resize_mode": None, "resize_size": None, "crop_size": None, "crop_pads": False,
                           "interpolation": None, "mean": None, "std": None, "fill": 0, "steps": steps}
    for s in steps:
        if s["step"] == "resize":
            if geo["resize_mode"] is not None:
                raise LatentError(f"The transform resizes twice; latent cannot describe its geometry: "
                                  f"{transform!r}")
            geo["resize_mode"] = "shortest" if len(s["size"]) == 1 else "squash"
            geo["resize_size"] = list(s["size"])
            geo["interpolation"] = s["interpolation"]
        elif s["step"] == "resize_keep_ratio":
            if 0.0 < s["longest"] < 1.0:
                raise LatentError(f"A partial keep-ratio resize (longest={s['longest']}) is not described: "
                                  f"{transform!r}")
            geo["resize_mode"] = "longest" if s["longest"] >= 1.0 else "fit_shortest"
            geo["resize_size"] = list(s["size"])
            geo["interpolation"] = s["interpolation"]
        elif s["step"] in ("center_crop", "center_crop_or_pad"):
            geo["crop_size"] = list(s["size"])
            geo["crop_pads"] = s["step"] == "center_crop_or_pad"
            geo["fill"] = s.get("fill", 0)
        elif s["step"] == "normalize":
            geo["mean"], geo["std"] = s["mean"], s["std"]
        elif s["step"] == "other":
            raise LatentError(f"The transform has a step latent cannot describe ({s['repr']}): {transform!r}")
    if geo["resize_mode"] is None:
        raise LatentError(f"The transform has no resize step; latent cannot describe its geometry: {transform!r}")
    if geo["crop_size"] is not None:
        geo["image_size"] = list(geo["crop_size"])
    elif geo["resize_mode"] == "squash":
        geo["image_size"] = list(geo["resize_size"])
    else:
        raise LatentError(f"The transform keeps the aspect ratio without a crop: its output size varies: {transform!r}")
    return geo


# ---------------------------------------------------------------------------- building without weights
@contextlib.contextmanager
def _build_context(device: str) -> Iterator[None]:
    import torch

    from latent.models import _quiet_random_init

    devices = list(range(torch.cuda.device_count())) if torch.cuda.is_available() else []
    with torch.random.fork_rng(devices=devices), _quiet_random_init():
        torch.manual_seed(0)
        if device == "meta":
            with torch.device("meta"):
                yield
        else:
            yield


def _hub_config_folder(spec: ModelSpec) -> Path | None:
    """The local snapshot folder holding a hub model's ``open_clip_config.json``, if cached (no network)."""
    from latent.models import _CONFIG_NAME, _cached

    repo = spec.hf_repo
    if repo is None:
        return None
    try:
        found = _cached(repo, _CONFIG_NAME)
    except Exception as e:  # noqa: BLE001 - a broken cache is reported, not fatal: the card says where it read from
        log.info("could not look up %s in the Hugging Face cache: %s", repo, e)
        return None
    return found.parent if found is not None else None


def _open_clip_build(spec: ModelSpec, device: str) -> tuple[Any, Callable[[Any], Any], dict[str, str]]:
    from open_clip.transform import PreprocessCfg, image_transform_v2, merge_preprocess_kwargs

    from latent.models import _open_clip

    oc = _open_clip()
    how: dict[str, str] = {}
    config_name = spec.open_clip_name
    if spec.source == "hf-hub":
        folder = _hub_config_folder(spec)
        if folder is not None:
            config_name = f"local-dir:{folder}"
            how["config"] = (f"{folder / 'open_clip_config.json'} (the model's own config, from the local Hugging "
                             "Face cache)")
        elif spec.arch:
            config_name = spec.arch
            how["config"] = (f"open_clip's {spec.arch} config: the hub's open_clip_config.json ({spec.hf_repo}) is "
                             "not in the local Hugging Face cache, so the preprocessing shown is open_clip's default "
                             "for the architecture; the loaded model follows the hub file")
        else:
            raise InputError(f"The model {spec.name!r} is only described by its hub config, which is not in the local "
                             f"Hugging Face cache: download it first (hf download {spec.hf_repo} "
                             "open_clip_config.json).")
    elif config_name.startswith("local-dir:"):
        how["config"] = f"{config_name[len('local-dir:'):]}/open_clip_config.json (the model's own config)"
    else:
        how["config"] = f"open_clip architecture config {config_name}"
    kwargs: dict[str, Any] = {}
    if spec.tag:
        tag_cfg = oc.get_pretrained_cfg(spec.open_clip_name, spec.tag)
        kwargs = merge_preprocess_kwargs({}, mean=tag_cfg.get("mean"), std=tag_cfg.get("std"),
                                         interpolation=tag_cfg.get("interpolation"),
                                         resize_mode=tag_cfg.get("resize_mode"))
        how["preprocess"] = f"open_clip pretrained tag {spec.tag!r} of {spec.open_clip_name}"
    with _build_context(device):
        model = oc.create_model(config_name, pretrained=None, load_weights=False, device=device,
                                force_quick_gelu=spec.quick_gelu, force_preprocess_cfg=kwargs or None,
                                pretrained_image=False, pretrained_text=False)
    transform = image_transform_v2(PreprocessCfg(**model.visual.preprocess_cfg), is_train=False)
    how["built"] = f"open_clip create_model({config_name!r}, pretrained=None) on {device}"
    return model, transform, how


def _timm_build(spec: ModelSpec, device: str) -> tuple[Any, Callable[[Any], Any], dict[str, str]]:
    import timm
    from timm.data import create_transform, resolve_data_config

    from latent.models import _TimmTransform

    assert spec.timm_name is not None
    with _build_context(device):
        model = timm.create_model(spec.timm_name, pretrained=False, num_classes=0)
    transform = _TimmTransform(create_transform(**resolve_data_config({}, model=model), is_training=False))
    how = {"config": f"timm model {spec.timm_name} (its pretrained config: input size, mean/std, crop)",
           "built": f"timm create_model({spec.timm_name!r}, pretrained=False, num_classes=0) on {device}"}
    return model, transform, how


def _check_device(device: str, func: str) -> str:
    if not isinstance(device, str) or device.strip().lower() not in DEVICES:
        raise InputError(f"The 'device' parameter of {func} must be one of {', '.join(map(repr, DEVICES))}. "
                         f"Got {device!r} instead.")
    return device.strip().lower()


def _build(spec: ModelSpec, device: str) -> tuple[Any, Callable[[Any], Any], dict[str, str]]:
    try:
        if spec.backend == "timm":
            return _timm_build(spec, device)
        return _open_clip_build(spec, device)
    except (InputError, LatentError):
        raise
    except Exception as e:  # an architecture that does not build: say which, with the library's words
        raise LatentError(f"Could not build the architecture of model {spec.name!r} ({spec.open_clip_name}) without "
                          f"weights: {type(e).__name__}: {e}") from e


def _squash(transform_size: list[int]) -> Callable[[Any], Any]:
    from latent.models import _squash_transform

    return _squash_transform((int(transform_size[0]), int(transform_size[1])))


def model_transform(name: str | ModelSpec, pretrained: str | os.PathLike[str] | None = None, *,
                    preprocess: str = "openclip") -> tuple[Callable[[Any], Any], dict[str, Any], int | None]:
    """A model's evaluation transform and its geometry, without its weights.

    Parameters
    ----------
    name : str or ModelSpec
        Anything :func:`latent.models.resolve_model` takes.
    pretrained : str or path-like, optional
        As for :func:`latent.models.resolve_model` (only the architecture is used; nothing is read).
    preprocess : {"openclip", "squash"}, default "openclip"
        As for :func:`latent.models.load_model` (``"squash"``: pybioclip's resize without crop).

    Returns
    -------
    transform : callable
        PIL image -> ``(3, H, W)`` float tensor, the transform ``load_model`` would use.
    geometry : dict
        :func:`transform_geometry` of it.
    patch_size : int or None
        The vision tower's patch size in input pixels (None for a non-patch model).
    """
    spec = name if isinstance(name, ModelSpec) else resolve_model(name, pretrained)
    mode = preprocess.strip().lower() if isinstance(preprocess, str) else preprocess
    if mode not in ("openclip", "squash"):
        raise InputError(f"The 'preprocess' parameter of model_transform must be 'openclip' or 'squash'. "
                         f"Got {preprocess!r} instead.")
    if spec.backend == "timm" and mode == "squash":
        raise InputError(f"The 'preprocess' parameter of model_transform must be 'openclip' for the image-only timm "
                         f"model {spec.name!r} (its own evaluation transform). Got 'squash' instead.")
    model, transform, _ = _build(spec, "meta")
    vision = _vision_tower(model, spec)
    if mode == "squash":
        transform = _squash(transform_geometry(transform)["image_size"])
    return transform, transform_geometry(transform), vision.get("patch_size_px")


# ---------------------------------------------------------------------------- reading the built module
def _count(module: Any) -> int:
    return int(sum(p.numel() for p in module.parameters()))


def _vision_tower(model: Any, spec: ModelSpec) -> dict[str, Any]:
    """Architecture facts of the image tower, read from the built module."""
    v = model if spec.backend == "timm" else model.visual
    out: dict[str, Any] = {"type": type(v).__name__}
    if spec.backend == "timm":
        blocks = getattr(v, "blocks", None)
        out["layers"] = len(blocks) if blocks is not None else None
        out["width"] = int(getattr(v, "embed_dim", 0)) or None
        attn = getattr(blocks[0], "attn", None) if blocks is not None and len(blocks) else None
        out["heads"] = int(attn.num_heads) if attn is not None and hasattr(attn, "num_heads") else None
        pe = getattr(v, "patch_embed", None)
        patch = list(getattr(pe, "patch_size", ()) or ())
        img = list(getattr(pe, "img_size", ()) or ())
        out["class_token"] = getattr(v, "cls_token", None) is not None
        out["register_tokens"] = int(getattr(v, "num_reg_tokens", 0) or 0)
        out["pooling"] = f"timm global_pool={getattr(v, 'global_pool', '?')!r}"
    else:
        tr = getattr(v, "transformer", None)
        out["layers"] = int(getattr(tr, "layers", 0)) or None
        out["width"] = int(getattr(tr, "width", 0)) or None
        blocks = getattr(tr, "resblocks", None)
        attn = getattr(blocks[0], "attn", None) if blocks is not None and len(blocks) else None
        out["heads"] = int(attn.num_heads) if attn is not None and hasattr(attn, "num_heads") else None
        patch = list(getattr(v, "patch_size", ()) or ())
        img = list(getattr(v, "image_size", ()) or ())
        out["class_token"] = getattr(v, "class_embedding", None) is not None
        out["register_tokens"] = 0
        out["pooling"] = "class token" if out["class_token"] and not getattr(v, "attn_pool", None) else "see module"
    out["patch_size"] = [int(p) for p in patch] if patch else None
    out["patch_size_px"] = int(patch[0]) if patch and patch[0] == patch[-1] else None
    out["image_size"] = [int(s) for s in img] if img else None
    if out["patch_size"] and out["image_size"]:
        gh, gw = out["image_size"][0] // out["patch_size"][0], out["image_size"][1] // out["patch_size"][1]
        out["patch_grid"] = [gh, gw]
        out["patch_tokens"] = gh * gw
        out["sequence_length"] = gh * gw + int(out["class_token"]) + out["register_tokens"]
    else:
        out["patch_grid"] = out["patch_tokens"] = out["sequence_length"] = None
    return out


def _text_tower(model: Any, spec: ModelSpec) -> dict[str, Any] | None:
    if spec.backend == "timm":
        return None
    tr = getattr(model, "transformer", None)
    out: dict[str, Any] = {"type": type(tr).__name__ if tr is not None else type(getattr(model, "text", None)).__name__}
    blocks = getattr(tr, "resblocks", None)
    attn = getattr(blocks[0], "attn", None) if blocks is not None and len(blocks) else None
    out["layers"] = int(getattr(tr, "layers", 0)) or None
    out["width"] = int(getattr(tr, "width", 0)) or None
    out["heads"] = int(attn.num_heads) if attn is not None and hasattr(attn, "num_heads") else None
    out["context_length"] = int(getattr(model, "context_length", 0)) or None
    out["vocab_size"] = int(getattr(model, "vocab_size", 0)) or None
    return out


def _parameter_counts(model: Any, spec: ModelSpec) -> dict[str, int]:
    total = _count(model)
    if spec.backend == "timm":
        return {"vision": total, "text": 0, "other": 0, "total": total}
    vision = _count(model.visual)
    other = sum(int(p.numel()) for n, p in model.named_parameters() if n in ("logit_scale", "logit_bias"))
    return {"vision": vision, "text": total - vision - other, "other": other, "total": total}


def _embed_dim(model: Any, spec: ModelSpec) -> int | None:
    if spec.backend == "timm":
        return int(getattr(model, "num_features", 0)) or None
    dim = getattr(model.visual, "output_dim", None)
    return int(dim) if dim else spec.embed_dim


# ---------------------------------------------------------------------------- the card
@dataclass(frozen=True)
class ModelCard:
    """What a model is and what it was trained on (see :func:`describe_model`).

    Attributes
    ----------
    name : str
        The model's name as resolved (registry name, ``random:<arch>``, ...).
    spec : dict
        :meth:`latent.models.ModelSpec.to_dict` (weights source, description, download commands).
    built : dict
        How the architecture was read: ``config``, ``built`` (the call), ``device``, and ``preprocess``
        when an open_clip tag sets it.
    vision : dict
        ``type``, ``layers`` (blocks), ``width``, ``heads``, ``patch_size`` ``[h, w]``, ``image_size``
        ``[h, w]``, ``patch_grid`` ``[h, w]``, ``patch_tokens`` (``(H/p) * (W/p)``), ``class_token``,
        ``register_tokens``, ``sequence_length`` (tokens through the blocks), ``pooling``.
    text : dict or None
        ``layers``, ``width``, ``heads``, ``context_length``, ``vocab_size``; None for image-only models.
    embed_dim : int or None
        Dimension of the embedding latent stores.
    parameters : dict
        ``vision``, ``text``, ``other`` (``logit_scale``/``logit_bias``), ``total``: sums of ``numel``.
    preprocess : dict
        :func:`transform_geometry` of the evaluation transform (without ``steps``) plus ``steps``.
    training : dict
        ``trained_on``, ``initialised_from``, ``objective``, ``training_text``, ``sources``.
    evaluations : list of dict
        Published evaluations: ``benchmark``, ``result``, ``source``.
    """

    name: str
    spec: dict[str, Any]
    built: dict[str, Any]
    vision: dict[str, Any]
    text: dict[str, Any] | None
    embed_dim: int | None
    parameters: dict[str, int]
    preprocess: dict[str, Any]
    training: dict[str, Any]
    evaluations: list[dict[str, str]] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON (``latent models --describe NAME --json``)."""
        return {"name": self.name, "spec": dict(self.spec), "built": dict(self.built), "vision": dict(self.vision),
                "text": dict(self.text) if self.text is not None else None, "embed_dim": self.embed_dim,
                "parameters": dict(self.parameters), "preprocess": json.loads(json.dumps(self.preprocess)),
                "training": dict(self.training), "evaluations": [dict(e) for e in self.evaluations]}

    def rows(self) -> list[tuple[str, str, str]]:
        """``(section, field, value)`` rows for a report table, all values as text."""
        v, p, pp = self.vision, self.parameters, self.preprocess
        rows: list[tuple[str, str, str]] = [
            ("Model", "name", self.name),
            ("Model", "description", str(self.spec.get("description") or NOT_RECORDED)),
            ("Model", "weights", "random (untrained)" if self.spec.get("untrained") else str(self.spec.get("source"))),
            ("Model", "backend", str(self.spec.get("backend"))),
            ("Vision tower", "type", str(v.get("type"))),
            ("Vision tower", "layers (blocks)", _text(v.get("layers"))),
            ("Vision tower", "width", _text(v.get("width"))),
            ("Vision tower", "attention heads", _text(v.get("heads"))),
            ("Vision tower", "patch size", _size_text(v.get("patch_size"))),
            ("Vision tower", "input resolution", _size_text(v.get("image_size"))),
            ("Vision tower", "patch tokens", _patch_text(v)),
            ("Vision tower", "class token", "yes" if v.get("class_token") else "no"),
        ]
        if v.get("register_tokens"):
            rows.append(("Vision tower", "register tokens", str(v["register_tokens"])))
        if self.text is None:
            rows.append(("Text tower", "text tower", "none (image-only model)"))
        else:
            t = self.text
            rows += [("Text tower", "layers", _text(t.get("layers"))), ("Text tower", "width", _text(t.get("width"))),
                     ("Text tower", "attention heads", _text(t.get("heads"))),
                     ("Text tower", "context length", _text(t.get("context_length"))),
                     ("Text tower", "vocabulary", _text(t.get("vocab_size")))]
        rows += [
            ("Embedding", "dimension", _text(self.embed_dim)),
            ("Parameters", "vision tower", f"{p['vision']:,}"),
            ("Parameters", "text tower", f"{p['text']:,}" if self.text is not None else "0 (none)"),
            ("Parameters", "total", f"{p['total']:,}"),
            ("Preprocessing", "resize", _resize_text(pp)),
            ("Preprocessing", "crop", _crop_text(pp)),
            ("Preprocessing", "input size", _size_text(pp.get("image_size"))),
            ("Preprocessing", "mean", _vec(pp.get("mean"))),
            ("Preprocessing", "std", _vec(pp.get("std"))),
            ("Preprocessing", "read from", str(self.built.get("config", NOT_RECORDED))),
            ("Training", "trained on", str(self.training.get("trained_on"))),
            ("Training", "initialised from", str(self.training.get("initialised_from"))),
            ("Training", "objective", str(self.training.get("objective"))),
            ("Training", "training text", str(self.training.get("training_text"))),
        ]
        for source in self.training.get("sources", []):
            rows.append(("Training", "source", str(source)))
        if self.evaluations:
            for e in self.evaluations:
                rows.append(("Published evaluations", e["benchmark"], f"{e['result']} ({e['source']})"))
        else:
            none = "none" if self.spec.get("untrained") else NOT_RECORDED
            rows.append(("Published evaluations", "evaluations", none))
        return rows

    def to_markdown(self) -> str:
        """The card as Markdown: a heading and one two-column table per section."""
        lines = [f"## Model card: {self.name}", ""]
        section = None
        for sec, fld, value in self.rows():
            if sec != section:
                if section is not None:
                    lines.append("")
                lines += [f"### {sec}", "", "| field | value |", "| --- | --- |"]
                section = sec
            lines.append(f"| {_md(fld)} | {_md(value)} |")
        lines += ["", f"Architecture and parameter counts read from the built module ({self.built.get('built')}); "
                  "training facts from latent/data/model_cards.json with their sources.", ""]
        return "\n".join(lines)


def _md(text: str) -> str:
    return str(text).replace("|", "\\|").replace("\n", " ")


def _text(value: Any) -> str:
    return NOT_RECORDED if value is None else str(value)


def _size_text(size: Any) -> str:
    if not size:
        return NOT_RECORDED
    return f"{size[0]} x {size[-1]} px"


def _patch_text(v: Mapping[str, Any]) -> str:
    if v.get("patch_tokens") is None:
        return NOT_RECORDED
    gh, gw = v["patch_grid"]
    return f"{v['patch_tokens']} ({gh} x {gw} grid; {v['sequence_length']} tokens with the class token)" \
        if v.get("class_token") else f"{v['patch_tokens']} ({gh} x {gw} grid)"


def _vec(values: Any) -> str:
    return NOT_RECORDED if not values else "(" + ", ".join(f"{float(x):.4g}" for x in values) + ")"


def _resize_text(pp: Mapping[str, Any]) -> str:
    mode, size, interp = pp.get("resize_mode"), pp.get("resize_size"), pp.get("interpolation")
    if mode == "shortest":
        return f"shorter side to {size[0]} px, aspect kept ({interp})"
    if mode == "squash":
        return f"to exactly {size[0]} x {size[-1]} px, aspect NOT kept ({interp})"
    if mode == "longest":
        return f"longer side to fit {size[0]} x {size[-1]} px, aspect kept ({interp})"
    return f"{mode} to {size} ({interp})"


def _crop_text(pp: Mapping[str, Any]) -> str:
    crop = pp.get("crop_size")
    if not crop:
        return "none (the whole image is seen)"
    if pp.get("resize_mode") == "longest":
        return f"centre {crop[0]} x {crop[-1]} px, padded (the whole image is seen)"
    return f"centre {crop[0]} x {crop[-1]} px (the margins beyond it are never seen)"


def describe_model(name: str, pretrained: str | os.PathLike[str] | None = None, *, device: str = "meta") -> ModelCard:
    """The model card of ``name``: architecture, parameters, preprocessing, training, evaluations.

    Offline and without weights: the architecture is built from the model's own config (see the module
    docstring); nothing is downloaded or read from a weights file.

    Parameters
    ----------
    name : str
        Anything :func:`latent.models.resolve_model` takes: a registry name (``latent models``),
        ``random:<arch>``, an open_clip architecture with ``pretrained``, ...
    pretrained : str or path-like, optional
        As for :func:`latent.models.resolve_model`; only the architecture and preprocessing it
        implies are used.
    device : {"meta", "cpu"}, default "meta"
        ``"meta"`` builds every module with its real shapes but no memory (a ViT-L in well under a
        second); ``"cpu"`` builds it with random weights (a few seconds and ~1.7 GB for a ViT-L).

    Returns
    -------
    ModelCard

    Raises
    ------
    InputError
        An unknown name (one line, with the registry and close matches), a bad ``device``.
    LatentError
        The architecture does not build.
    """
    device = _check_device(device, "describe_model")
    spec = resolve_model(name, pretrained)
    model, transform, how = _build(spec, device)
    how["device"] = device
    geometry = transform_geometry(transform)
    vision = _vision_tower(model, spec)
    text = _text_tower(model, spec)
    training, evaluations = _training_facts(spec)
    if vision.get("image_size") and geometry["image_size"] != vision["image_size"]:
        log.warning("model %s: the transform gives %s px but the vision tower was built for %s px", spec.name,
                    geometry["image_size"], vision["image_size"])
    card = ModelCard(name=spec.name, spec=spec.to_dict(), built=how, vision=vision, text=text,
                     embed_dim=_embed_dim(model, spec), parameters=_parameter_counts(model, spec),
                     preprocess=geometry, training=training, evaluations=evaluations)
    log.info("described %s: %s parameters, %s px input", spec.name, f"{card.parameters['total']:,}",
             geometry["image_size"])
    return card
