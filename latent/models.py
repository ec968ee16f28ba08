"""Models: a registry of the models latent compares, and one loader for all of them.

The registry is data, not code: ``latent/data/models.json`` maps short names (``bioclip-2``,
``clip-vit-l-14``, ``random-tiny``, ...) to open_clip identifiers, and
``latent/data/model_configs/*.json`` holds latent's own open_clip architecture configs (the tiny
random CLIP used by tests and dry runs). Beyond the registry, any open_clip architecture works:

* ``random:<arch>``                a random initialisation of any open_clip architecture (seeded);
* ``<arch>`` + ``pretrained=tag``  an open_clip pretrained tag (``open_clip.list_pretrained()``);
* ``<name>`` + ``pretrained=file`` a local weights file (``.safetensors``; ``.pt``/``.pth``/``.bin``
  are read with ``torch.load(weights_only=True)`` only, never unpickled freely);
* ``<name>`` + ``pretrained=dir``  a local Hugging Face snapshot folder (``open_clip_config.json`` and
  ``open_clip_model.safetensors`` or ``open_clip_pytorch_model.bin``), also ``local-dir:<dir>``;
* ``hf-hub:<org>/<repo>``          an open_clip model on the Hugging Face Hub.

Image-only models come from timm (installed with open_clip): the registry entries with ``"backend":
"timm"`` (``dinov2-vit-l-14``, ``vit-l-16-in21k``, ``random-dinov2-vit-l-14``, ``random-timm-tiny``)
are built by ``timm.create_model(..., num_classes=0)`` and embed with the pooled (class-token) output.
Their weights follow the same offline rules (the timm repository on the Hugging Face Hub, looked up in
the local cache first; ``--pretrained`` a weights file or a snapshot folder), their preprocessing is
timm's own evaluation transform (``resolve_data_config`` / ``create_transform``), recorded in full. They
have no text tower: :meth:`LoadedModel.encode_texts` (``latent embed-text``, zero-shot) refuses them.

Offline use is first class. Hub weights are looked up in the local Hugging Face cache first and, when
they are there, loaded without any network access (the cached snapshot of ``main`` is used as is).
When they are missing, :class:`ModelUnavailableError` says at once (offline mode) or after one fast
probe (no network) exactly how to fetch them or which local file to pass instead.

Importing this module is cheap: torch, open_clip and huggingface_hub are imported by the functions
that need them. :func:`list_models` and resolving a registry name never import torch.
"""

from __future__ import annotations

import contextlib
import difflib
import functools
import hashlib
import inspect
import json
import logging
import os
import re
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING, Any

from latent.devices import resolve_device
from latent.errors import InputError, LatentError, format_list

if TYPE_CHECKING:  # pragma: no cover - typing only
    import torch

__all__ = [
    "ModelUnavailableError",
    "ModelSpec",
    "LoadedModel",
    "parse_blocks",
    "PRECISIONS",
    "PREPROCESS_MODES",
    "SOURCES",
    "PYBIOCLIP_MEAN",
    "PYBIOCLIP_STD",
    "default_model_name",
    "list_models",
    "resolve_model",
    "load_model",
    "require_text_tower",
]

log = logging.getLogger(__name__)

PRECISIONS = ("auto", "fp32", "fp16", "bf16", "amp")
PREPROCESS_MODES = ("openclip", "squash")
SOURCES = ("hf-hub", "tag", "file", "dir", "random")
#: pybioclip's ``preprocess_img`` normalisation (OpenAI CLIP's dataset statistics).
PYBIOCLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
PYBIOCLIP_STD = (0.26862954, 0.26130258, 0.27577711)

_CONFIG_NAME = "open_clip_config.json"
# open_clip's preferred checkpoint names, in its order (factory._find_checkpoint_in_dir)
_DIR_WEIGHTS = (
    "open_clip_model.safetensors", "open_clip_pytorch_model.safetensors", "open_clip_pytorch_model.bin",
    "open_clip_pytorch_model.pth", "model.safetensors", "pytorch_model.bin", "pytorch_model.pth", "model.pth",
)
# what open_clip fetches from an hf-hub repo: the safetensors alternative first, then the pickle
_HUB_WEIGHTS = ("open_clip_model.safetensors", "open_clip_pytorch_model.bin")
_WEIGHT_SUFFIXES = (".safetensors", ".pt", ".pth", ".bin", ".ckpt")
# what a timm repository on the Hub holds, safetensors first
_TIMM_WEIGHTS = ("model.safetensors", "pytorch_model.bin")
_HUB_PROBE_TIMEOUT_S = 5.0
_RANDOM_INIT_WARNING = "No pretrained weights loaded for model"
_SHA256_RE = re.compile(r"[0-9a-f]{64}")


class ModelUnavailableError(LatentError):
    """A model's weights are not on this machine and cannot be downloaded now.

    The message says how to get them: the ``hf download`` command to run where there is internet,
    where the Hugging Face cache is, and the ``--pretrained`` file or folder alternative.
    """


# ---------------------------------------------------------------------------- specs and registry
@dataclass(frozen=True)
class ModelSpec:
    """What to load: an open_clip architecture and where its weights come from.

    Attributes
    ----------
    name : str
        Registry name (``"bioclip-2"``) or the canonical form of what was asked for
        (``"random:RN50"``, ``"ViT-L-14"``, ``"hf-hub:org/repo"``, ``"local-dir:/abs/folder"``).
        Recorded as ``model`` in every cache made with it.
    open_clip_name : str
        The name open_clip builds the architecture from: a built-in or latent config name
        (``"ViT-L-14"``, ``"latent-random-tiny"``), ``"hf-hub:org/repo"`` or ``"local-dir:/abs/folder"``.
    pretrained : str or None
        An open_clip pretrained tag (source ``"tag"``), the absolute path of a weights file (sources
        ``"file"`` and ``"dir"``), or None (hub models: the repository's own weights; random models).
    arch : str or None
        Architecture, for humans (``"ViT-L-14"``); None when only the hub config knows it.
    embed_dim : int or None
        Embedding dimension, or None when only the hub config knows it.
    untrained : bool
        True for random initialisations: a baseline, not a trained model.
    description : str
        One line for ``latent models``.
    download : tuple of str
        Commands that fetch the weights on a machine with internet access.
    source : str
        One of ``"hf-hub"``, ``"tag"``, ``"file"``, ``"dir"``, ``"random"``.
    tag : str or None
        open_clip pretrained tag whose preprocessing (mean, std, interpolation, resize mode) applies,
        also when the tag's weights come from a local file.
    quick_gelu : bool
        Force QuickGELU activations (weights trained with them, such as OpenAI's, on an architecture
        config without them).
    default : bool
        True for the registry's default model.
    backend : str
        ``"open_clip"`` (CLIP models, image and text towers) or ``"timm"`` (image-only models).
    timm_name : str or None
        timm model name with its pretrained tag (``"vit_large_patch14_dinov2.lvd142m"``); timm only.
        ``open_clip_name`` is then ``"timm:<timm_name>"`` (for display).
    hub_repo : str or None
        Hugging Face repository holding a timm model's weights (``"timm/vit_large_patch14_dinov2.lvd142m"``).
    """

    name: str
    open_clip_name: str
    pretrained: str | None
    arch: str | None
    embed_dim: int | None
    untrained: bool = False
    description: str = ""
    download: tuple[str, ...] = ()
    source: str = "hf-hub"
    tag: str | None = None
    quick_gelu: bool = False
    default: bool = False
    backend: str = "open_clip"
    timm_name: str | None = None
    hub_repo: str | None = None

    @property
    def hf_repo(self) -> str | None:
        """``org/repo`` of an hf-hub model (open_clip or timm), else None."""
        if self.backend == "timm":
            return self.hub_repo if self.source == "hf-hub" else None
        return self.open_clip_name[len("hf-hub:"):] if self.open_clip_name.startswith("hf-hub:") else None

    @property
    def has_text(self) -> bool:
        """True when the model has a text tower (open_clip CLIP models); False for image-only models."""
        return self.backend == "open_clip"

    def to_dict(self) -> dict[str, Any]:
        """Plain-JSON description (for ``latent models``)."""
        return {"name": self.name, "open_clip": self.open_clip_name, "pretrained": self.pretrained,
                "arch": self.arch, "embed_dim": self.embed_dim, "untrained": self.untrained,
                "description": self.description, "download": list(self.download), "source": self.source,
                "default": self.default, "backend": self.backend, "timm": self.timm_name, "text": self.has_text}


def _data_path(*parts: str) -> Path:
    return Path(str(resources.files("latent").joinpath("data", *parts)))


@functools.lru_cache(maxsize=1)
def _registry() -> tuple[dict[str, ModelSpec], str]:
    path = _data_path("models.json")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        default = data["default"]
        specs: dict[str, ModelSpec] = {}
        for name, e in data["models"].items():
            if e.get("backend", "open_clip") == "timm":
                specs[name] = _timm_entry(name, e, default=(name == default))
                continue
            pretrained = e["pretrained"]
            specs[name] = ModelSpec(
                name=name, open_clip_name=e["open_clip"], pretrained=pretrained, arch=e["arch"],
                embed_dim=int(e["embed_dim"]), untrained=bool(e["untrained"]),
                description=e["description"], download=tuple(e.get("download", ())),
                source=("random" if e["untrained"] else "hf-hub" if e["open_clip"].startswith("hf-hub:") else "tag"),
                tag=pretrained if pretrained and not e["untrained"] else None,
                quick_gelu=bool(e.get("quick_gelu", False)), default=(name == default))
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise LatentError(f"The model registry {path} is missing or damaged ({e!r}); reinstall latent.") from e
    if default not in specs:
        raise LatentError(f"The model registry {path} names default {default!r}, which it does not define.")
    return specs, default


def _timm_entry(name: str, e: Mapping[str, Any], *, default: bool) -> ModelSpec:
    """A registry entry of an image-only timm model -> ModelSpec (raises KeyError/TypeError/ValueError)."""
    timm_name, untrained = str(e["timm"]), bool(e["untrained"])
    return ModelSpec(
        name=name, open_clip_name=f"timm:{timm_name}", pretrained=None, arch=e["arch"],
        embed_dim=int(e["embed_dim"]), untrained=untrained, description=e["description"],
        download=tuple(e.get("download", ())), source="random" if untrained else "hf-hub", default=default,
        backend="timm", timm_name=timm_name, hub_repo=None if untrained else str(e["hf_hub"]))


def default_model_name() -> str:
    """Name of the registry's default model (``"bioclip-2"``)."""
    return _registry()[1]


def list_models() -> list[ModelSpec]:
    """The registry's models, in registry order. Cheap: reads one JSON file, imports no torch.

    Returns
    -------
    list of ModelSpec
        ``bioclip-2`` (default), ``bioclip``, ``clip-vit-l-14``, ``clip-vit-l-14-laion2b``,
        ``random-tiny``, ``random-vit-l-14``, and the image-only timm models ``dinov2-vit-l-14``,
        ``vit-l-16-in21k``, ``random-dinov2-vit-l-14``, ``random-timm-tiny``.
    """
    return list(_registry()[0].values())


@functools.lru_cache(maxsize=1)
def _open_clip() -> Any:
    """Import open_clip once and register latent's architecture configs with it."""
    import open_clip

    folder = _data_path("model_configs")
    if folder.is_dir():
        open_clip.add_model_config(folder)
    return open_clip


# ---------------------------------------------------------------------------- resolving names
def _bad(param: str, func: str, expected: str, got: object, hint: str = "") -> InputError:
    return InputError(f"The {param!r} parameter of {func} must be {expected}. Got {got!r} instead." + hint)


def _find_arch(name: str) -> str | None:
    oc = _open_clip()
    names = oc.list_models()
    cleaned = name.replace("/", "-")
    if cleaned in names:
        return cleaned
    lower = {n.lower(): n for n in names}
    return lower.get(cleaned.lower())


def _check_arch(arch: str, func: str) -> str:
    found = _find_arch(arch)
    if found is None:
        oc = _open_clip()
        close = difflib.get_close_matches(arch.replace("/", "-"), oc.list_models(), n=5, cutoff=0.5)
        raise _bad("name", func, "random:<arch> with an open_clip architecture (open_clip.list_models())",
                   f"random:{arch}", f" Close matches: {format_list(close) or 'none'}.")
    return found


def _arch_config(arch: str) -> dict[str, Any]:
    return _open_clip().get_model_config(arch) or {}


def _unknown_name(name: str) -> InputError:
    registry = [s.name for s in list_models()]
    try:
        oc = _open_clip()
        n_arch = len(oc.list_models())
        close = difflib.get_close_matches(name, registry + oc.list_models(), n=5, cutoff=0.5)
    except ImportError:  # pragma: no cover - open_clip is a dependency
        n_arch, close = 0, difflib.get_close_matches(name, registry, n=5, cutoff=0.5)
    return _bad(
        "name", "resolve_model",
        f"a registry model ({format_list(registry)}), random:<arch>, hf-hub:<org>/<repo>, local-dir:<folder>, "
        f"or any open_clip architecture (open_clip.list_models(), {n_arch} of them) with pretrained= a tag, "
        "a weights file or a snapshot folder",
        name, f" Close matches: {format_list(close) or 'none'}.")


def _read_dir_config(folder: Path) -> dict[str, Any]:
    cfg_path = folder / _CONFIG_NAME
    if not cfg_path.is_file():
        raise InputError(
            f"The folder {folder} holds no {_CONFIG_NAME}: a Hugging Face snapshot of an open_clip model holds "
            f"{_CONFIG_NAME} and open_clip_model.safetensors (or open_clip_pytorch_model.bin). Pass a weights "
            "file with the architecture name instead, or download the whole snapshot.")
    try:
        cfg = json.loads(cfg_path.read_text(encoding="utf-8"))
        model_cfg = cfg["model_cfg"]
        int(model_cfg["embed_dim"])
        model_cfg["vision_cfg"], model_cfg["text_cfg"]  # noqa: B018 - presence check
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise InputError(f"{cfg_path} is not an open_clip config with a 'model_cfg' (embed_dim, vision_cfg, "
                         f"text_cfg): {e!r}.") from e
    return cfg


def _find_dir_weights(folder: Path) -> Path:
    for name in _DIR_WEIGHTS:
        if (folder / name).is_file():
            return folder / name
    others = sorted(p.name for p in folder.iterdir() if p.suffix in _WEIGHT_SUFFIXES)
    if len(others) == 1:
        return folder / others[0]
    raise InputError(f"The folder {folder} holds no weights file open_clip_model.safetensors or "
                     f"open_clip_pytorch_model.bin (weight-like files: {format_list(others) or 'none'}).")


def _match_builtin_arch(model_cfg: Mapping[str, Any]) -> str | None:
    oc = _open_clip()
    for name in oc.list_models():
        if oc.get_model_config(name) == model_cfg:
            return name
    return None


def _dir_spec(folder: Path, *, name: str | None, entry: ModelSpec | None) -> ModelSpec:
    folder = folder.expanduser().resolve()
    if not folder.is_dir():
        raise InputError(f"The snapshot folder {folder} does not exist.")
    cfg = _read_dir_config(folder)
    weights = _find_dir_weights(folder)
    dim = int(cfg["model_cfg"]["embed_dim"])
    if entry is not None and entry.embed_dim is not None and entry.embed_dim != dim:
        raise InputError(f"The snapshot folder {folder} holds a {dim}-d model, but {entry.name!r} is "
                         f"{entry.embed_dim}-d: it is not a snapshot of {entry.name}.")
    return ModelSpec(
        name=name or f"local-dir:{folder}", open_clip_name=f"local-dir:{folder}", pretrained=str(weights),
        arch=_match_builtin_arch(cfg["model_cfg"]) or (entry.arch if entry else None), embed_dim=dim,
        description=f"open_clip snapshot folder {folder}", source="dir", default=False)


def _file_spec(path: Path, *, name: str, arch_name: str, arch: str | None, embed_dim: int | None,
               tag: str | None = None, quick_gelu: bool = False) -> ModelSpec:
    path = path.expanduser().resolve()
    if path.suffix.lower() not in _WEIGHT_SUFFIXES:
        raise InputError(f"The weights file {path} must end in one of {', '.join(_WEIGHT_SUFFIXES)} "
                         "(.safetensors preferred; the others are read with torch.load(weights_only=True)).")
    return ModelSpec(name=name, open_clip_name=arch_name, pretrained=str(path), arch=arch, embed_dim=embed_dim,
                     description=f"{arch or arch_name} with weights from {path}", source="file", tag=tag,
                     quick_gelu=quick_gelu)


def _hub_candidates(hf_hub: str) -> tuple[str, tuple[str, ...]]:
    """open_clip's ``'org/repo/[file]'`` pretrained field -> (repo, weight files in open_clip's order)."""
    repo, filename = os.path.split(hf_hub)
    if not filename:
        return repo, _HUB_WEIGHTS
    if filename.endswith((".bin", ".pth")) and filename != _HUB_WEIGHTS[1]:
        return repo, (filename[:-4] + ".safetensors", filename)
    return repo, (filename,)


def _download_hints(repo: str, files: Sequence[str] = ()) -> tuple[str, ...]:
    tail = f" {files[0]}" if files else ""
    return (f"hf download {repo}{tail}", f"huggingface-cli download {repo}{tail}")


def _tag_spec(arch: str, tag: str, *, name: str) -> ModelSpec:
    oc = _open_clip()
    cfg = oc.get_pretrained_cfg(arch, tag)
    quick = bool(cfg.get("quick_gelu", False)) and not _arch_config(arch).get("quick_gelu", False)
    if quick:
        log.info("pretrained tag %r of %s was trained with QuickGELU: building %s with QuickGELU", tag, arch, arch)
    repo, files = _hub_candidates(cfg.get("hf_hub", ""))
    canonical = next(t for t in oc.list_pretrained_tags_by_model(arch) if oc.get_pretrained_cfg(arch, t) == cfg)
    for entry in list_models():  # the same weights under a registry name get the registry name
        if entry.source == "tag" and entry.tag == canonical and entry.arch == arch.removesuffix("-quickgelu") and \
                (entry.quick_gelu or bool(_arch_config(entry.open_clip_name).get("quick_gelu"))) == \
                (quick or bool(_arch_config(arch).get("quick_gelu"))):
            return entry
    return ModelSpec(name=name, open_clip_name=arch, pretrained=canonical, arch=arch,
                     embed_dim=_arch_config(arch).get("embed_dim"), description=f"open_clip {arch} {canonical}",
                     download=_download_hints(repo, files), source="tag", tag=canonical, quick_gelu=quick)


def _arch_with_pretrained(arch: str, pretrained: str, *, name: str) -> ModelSpec:
    path = Path(pretrained).expanduser()
    if path.is_dir():
        return _dir_spec(path, name=None, entry=None)
    if path.is_file():
        return _file_spec(path, name=name, arch_name=arch, arch=arch, embed_dim=_arch_config(arch).get("embed_dim"))
    oc = _open_clip()
    tags = oc.list_pretrained_tags_by_model(arch)
    if oc.is_pretrained_cfg(arch, pretrained):
        return _tag_spec(arch, pretrained, name=name)
    raise _bad("pretrained", "resolve_model",
               f"an open_clip pretrained tag of {arch} ({format_list(tags) or 'it has none'}), an existing "
               "weights file or a snapshot folder", pretrained,
               " (No such file or folder exists.)" if os.sep in pretrained or "." in pretrained else "")


def _entry_with_pretrained(entry: ModelSpec, pretrained: str) -> ModelSpec:
    if entry.source == "random":  # weights for a random entry's architecture: just that architecture
        return _arch_with_pretrained(entry.open_clip_name, pretrained, name=entry.open_clip_name)
    path = Path(pretrained).expanduser()
    if path.is_dir():
        return _dir_spec(path, name=entry.name, entry=entry)
    if path.is_file():
        if entry.source == "hf-hub":
            if (path.parent / _CONFIG_NAME).is_file():  # a file inside a snapshot: that snapshot's config
                cfg = _read_dir_config(path.parent.resolve())
                spec = _file_spec(path, name=entry.name, arch_name=f"local-dir:{path.parent.resolve()}",
                                  arch=entry.arch, embed_dim=int(cfg["model_cfg"]["embed_dim"]))
            else:
                log.warning("%s has no %s beside it: assuming %s's architecture is open_clip's %s config. Pass the "
                            "snapshot folder instead to use the model's own config.", path, _CONFIG_NAME,
                            entry.name, entry.arch)
                spec = _file_spec(path, name=entry.name, arch_name=entry.arch or "", arch=entry.arch,
                                  embed_dim=entry.embed_dim)
        else:  # a tag entry: same architecture, activation and preprocessing, weights from the file
            spec = _file_spec(path, name=entry.name, arch_name=entry.open_clip_name, arch=entry.arch,
                              embed_dim=entry.embed_dim, tag=entry.tag, quick_gelu=entry.quick_gelu)
        if entry.embed_dim is not None and spec.embed_dim is not None and spec.embed_dim != entry.embed_dim:
            raise InputError(f"{path} belongs to a {spec.embed_dim}-d model, but {entry.name!r} is "
                             f"{entry.embed_dim}-d.")
        return spec
    if entry.source == "tag":
        return _arch_with_pretrained(entry.open_clip_name, pretrained, name=entry.open_clip_name)
    raise _bad("pretrained", "resolve_model", f"an existing weights file or snapshot folder for {entry.name}",
               pretrained, " (No such file or folder exists.)")


def resolve_model(name: str, pretrained: str | os.PathLike[str] | None = None) -> ModelSpec:
    """Turn a model name (and optional ``pretrained``) into a :class:`ModelSpec`; load nothing.

    Parameters
    ----------
    name : str
        A registry name (:func:`list_models`), ``random:<arch>``, ``hf-hub:<org>/<repo>``,
        ``local-dir:<folder>`` (or a folder path), or an open_clip architecture
        (``open_clip.list_models()``, ``/`` accepted for ``-``).
    pretrained : str or path-like, optional
        For an architecture: an open_clip tag (``open_clip.list_pretrained()``), a weights file or a
        Hugging Face snapshot folder. For a registry model: a local file or folder holding its weights
        (the offline alternative to the hub); a tag entry also takes another tag of its architecture.

    Returns
    -------
    ModelSpec

    Raises
    ------
    InputError
        Unknown name (the message lists the registry and close matches), a tag that the architecture
        does not have (the message lists its tags), a missing file or folder, a malformed snapshot.
    """
    if not isinstance(name, str) or not name.strip():
        raise _bad("name", "resolve_model", "a non-empty model name", name)
    name = name.strip()
    if pretrained is not None:
        if not isinstance(pretrained, (str, os.PathLike)) or not os.fspath(pretrained).strip():
            raise _bad("pretrained", "resolve_model", "None, a tag, a file or a folder", pretrained)
        pretrained = os.fspath(pretrained).strip()
    registry = _registry()[0]
    if name in registry:
        if pretrained is None:
            return registry[name]
        if registry[name].backend == "timm":
            return _timm_with_pretrained(registry[name], pretrained)
        return _entry_with_pretrained(registry[name], pretrained)
    if name.startswith("timm:"):  # a registry timm model by its timm name (the hub entry before the random one)
        entries = sorted((e for e in registry.values() if e.open_clip_name == name), key=lambda e: e.untrained)
        if not entries:
            known = sorted({e.open_clip_name for e in registry.values() if e.backend == "timm"})
            raise _bad("name", "resolve_model", f"timm:<name> of a registry timm model ({format_list(known)})", name)
        return entries[0] if pretrained is None else _timm_with_pretrained(entries[0], pretrained)
    if name.startswith("random:"):
        if pretrained is not None:
            raise _bad("pretrained", "resolve_model", f"None for the random initialisation {name}", pretrained,
                       f" To load weights into this architecture pass name={name[7:]!r}.")
        arch = _check_arch(name[len("random:"):], "resolve_model")
        for entry in registry.values():
            if entry.source == "random" and entry.open_clip_name == arch:
                return entry
        return ModelSpec(name=f"random:{arch}", open_clip_name=arch, pretrained=None, arch=arch,
                         embed_dim=_arch_config(arch).get("embed_dim"), untrained=True,
                         description=f"randomly initialised open_clip {arch}", source="random")
    if name.startswith("hf-hub:"):
        if pretrained is not None:
            raise _bad("pretrained", "resolve_model", f"None for {name} (the repository holds its own weights)",
                       pretrained, " For local weights pass the snapshot folder as pretrained with its registry "
                       "name or architecture.")
        repo = name[len("hf-hub:"):]
        if not re.fullmatch(r"[\w.-]+/[\w.-]+", repo):
            raise _bad("name", "resolve_model", "hf-hub:<org>/<repo>", name)
        for entry in registry.values():
            if entry.open_clip_name == name:
                return entry
        return ModelSpec(name=name, open_clip_name=name, pretrained=None, arch=None, embed_dim=None,
                         description=f"open_clip model {repo} on the Hugging Face Hub",
                         download=_download_hints(repo), source="hf-hub")
    is_dir = name.startswith("local-dir:") or (Path(name).expanduser().is_dir() and _find_arch(name) is None)
    if is_dir:
        if pretrained is not None:
            raise _bad("pretrained", "resolve_model", f"None for the snapshot folder {name}", pretrained)
        return _dir_spec(Path(name.removeprefix("local-dir:")), name=None, entry=None)
    arch = _find_arch(name)
    if arch is None:
        if Path(name).expanduser().is_file():
            raise _bad("name", "resolve_model", "a model name (a weights file goes in pretrained=)", name,
                       " Pass the architecture as name and the file as pretrained, e.g. "
                       f"resolve_model('ViT-L-14', pretrained={name!r}).")
        raise _unknown_name(name)
    if pretrained is None:
        tags = _open_clip().list_pretrained_tags_by_model(arch)
        raise _bad("pretrained", "resolve_model",
                   f"a tag ({format_list(tags) or f'{arch} has none'}), a weights file or a snapshot folder "
                   f"for the architecture {arch}", None, f" For random weights use name='random:{arch}'.")
    return _arch_with_pretrained(arch, pretrained, name=arch)


# ---------------------------------------------------------------------------- Hugging Face hub / cache
def _env_true(name: str) -> bool:
    return os.environ.get(name, "").strip().lower() in ("1", "true", "yes", "on")


def _hf_offline() -> bool:
    from huggingface_hub import constants

    return bool(constants.HF_HUB_OFFLINE) or _env_true("HF_HUB_OFFLINE")


def _hf_cache_dir() -> str:
    from huggingface_hub import constants

    return str(constants.HF_HUB_CACHE)


def _cached(repo: str, filename: str) -> Path | None:
    from huggingface_hub import try_to_load_from_cache

    found = try_to_load_from_cache(repo, filename)
    return Path(found) if isinstance(found, str) and os.path.isfile(found) else None


def _unavailable(spec: ModelSpec, repo: str, files: Sequence[str], reason: str) -> ModelUnavailableError:
    cache = _hf_cache_dir()
    files = [f for f in files if f.endswith(_WEIGHT_SUFFIXES)] or list(_HUB_WEIGHTS)
    hints = spec.download or _download_hints(repo, files if spec.source == "tag" else ())
    what = spec.open_clip_name + (f" pretrained={spec.tag!r}" if spec.tag else "")
    folder_files = (f"{_CONFIG_NAME} and {_HUB_WEIGHTS[0]}" if spec.backend != "timm" else
                    f"{_TIMM_WEIGHTS[0]} or {_TIMM_WEIGHTS[1]}, as in the repository")
    env = ", ".join(f"{k}={os.environ[k]}" for k in ("HF_HOME", "HF_HUB_CACHE", "HF_HUB_OFFLINE") if k in os.environ)
    return ModelUnavailableError(
        f"The weights of model {spec.name!r} ({what}, from the Hugging Face repository {repo}) are not available: "
        f"{reason}.\n"
        f"To get them, run on a machine with internet access:\n    {hints[0]}\n"
        f"(with an older huggingface_hub: {hints[1]})\n"
        f"then make that Hugging Face cache visible here: this machine looks in {cache} (HF_HUB_CACHE, else "
        f"HF_HOME/hub; {env or 'neither is set'}), which must hold models--{repo.replace('/', '--')}.\n"
        f"Or use weights you already have: --pretrained /path/to/{files[0]} "
        f"(a weights file; pretrained= in Python), or --pretrained /path/to/snapshot-folder (holding "
        f"{folder_files}).")


def _hub_fetch(spec: ModelSpec, repo: str, candidates: Sequence[str], *, required: bool = True) -> Path | None:
    """Download the first of ``candidates`` the repository has, after one fast probe per file."""
    import huggingface_hub
    from huggingface_hub.errors import (EntryNotFoundError, GatedRepoError, LocalEntryNotFoundError,
                                        RepositoryNotFoundError)

    timeout = float(os.environ.get("HF_HUB_ETAG_TIMEOUT") or _HUB_PROBE_TIMEOUT_S)
    probe_kwargs: dict[str, Any] = {"timeout": timeout}
    if "retry_on_errors" in inspect.signature(huggingface_hub.get_hf_file_metadata).parameters:
        probe_kwargs["retry_on_errors"] = False  # fail fast without network (huggingface_hub >= 1.0)
    for filename in candidates:
        try:  # a HEAD request without retries: no network fails in milliseconds, not after 5 retries
            huggingface_hub.get_hf_file_metadata(huggingface_hub.hf_hub_url(repo, filename), **probe_kwargs)
        except (GatedRepoError, RepositoryNotFoundError) as e:
            raise _unavailable(spec, repo, candidates, f"the Hub refused access to {repo} ({type(e).__name__}; "
                               "for a gated or private repository log in with `hf auth login`)") from e
        except EntryNotFoundError as e:
            if isinstance(e, LocalEntryNotFoundError):
                raise _unavailable(spec, repo, candidates, f"they are not in the local cache and the Hub cannot be "
                                   f"reached ({e})") from e
            continue  # the repository has no such file: try the next name
        except Exception as e:  # no network, DNS, proxy, timeout, offline mode (an OSError)...
            raise _unavailable(spec, repo, candidates, "they are not in the local cache and the Hub cannot be "
                               f"reached ({type(e).__name__}: {e})") from e
        try:
            log.info("downloading %s from the Hugging Face repository %s", filename, repo)
            return Path(huggingface_hub.hf_hub_download(repo, filename, etag_timeout=timeout))
        except Exception as e:
            raise _unavailable(spec, repo, candidates,
                               f"downloading {filename} failed ({type(e).__name__}: {e})") from e
    if required:
        raise _unavailable(spec, repo, candidates, f"the repository has none of {', '.join(candidates)}")
    return None


def _hub_weights(spec: ModelSpec, repo: str, candidates: Sequence[str]) -> Path:
    for filename in candidates:
        found = _cached(repo, filename)
        if found is not None:
            log.info("using %s of %s from the Hugging Face cache", filename, repo)
            return found
    if _hf_offline():
        raise _unavailable(spec, repo, candidates, "they are not in the local Hugging Face cache and offline mode "
                           "is on (HF_HUB_OFFLINE=1)")
    fetched = _hub_fetch(spec, repo, candidates)
    assert fetched is not None
    return fetched


def _hub_snapshot(spec: ModelSpec) -> tuple[Path, Path]:
    """(snapshot folder, weights file) of an hf-hub model, from the cache or downloaded."""
    repo = spec.hf_repo
    assert repo is not None
    config = _cached(repo, _CONFIG_NAME)
    weights = next((w for w in (_cached(repo, f) for f in _HUB_WEIGHTS) if w is not None), None)
    if config is not None and weights is not None and config.parent == weights.parent:
        log.info("using %s from the Hugging Face cache (snapshot %s)", repo, config.parent.name)
        return config.parent, weights
    if _hf_offline():
        raise _unavailable(spec, repo, _HUB_WEIGHTS, "they are not in the local Hugging Face cache and offline mode "
                           "is on (HF_HUB_OFFLINE=1)")
    config = _hub_fetch(spec, repo, (_CONFIG_NAME,))
    weights = _hub_fetch(spec, repo, _HUB_WEIGHTS)
    assert config is not None and weights is not None
    if config.parent != weights.parent:
        raise ModelUnavailableError(f"The Hub returned {_CONFIG_NAME} and {weights.name} of {repo} from different "
                                    f"revisions ({config.parent.name}, {weights.parent.name}); retry.")
    return config.parent, weights


# ---------------------------------------------------------------------------- loading helpers
_SHA_MEMO: dict[tuple[str, int, int], str] = {}


def _sha256(path: Path) -> str:
    """sha256 of a weights file, computed once per file version (free for Hugging Face cache blobs)."""
    real = Path(os.path.realpath(path))
    if real.parent.name == "blobs" and _SHA256_RE.fullmatch(real.name):
        return real.name  # a Git LFS blob in the Hugging Face cache is named by its content's sha256
    st = real.stat()
    key = (str(real), st.st_size, st.st_mtime_ns)
    if key not in _SHA_MEMO:
        digest = hashlib.sha256()
        with open(real, "rb") as handle:
            for block in iter(lambda: handle.read(1 << 22), b""):
                digest.update(block)
        _SHA_MEMO[key] = digest.hexdigest()
    return _SHA_MEMO[key]


class _DropRandomInitWarning(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.msg).startswith(_RANDOM_INIT_WARNING)


@contextlib.contextmanager
def _quiet_random_init() -> Iterator[None]:
    """Hide open_clip's root-logger warning that the model is random: latent loads the weights itself."""
    root, flt = logging.getLogger(), _DropRandomInitWarning()
    root.addFilter(flt)
    try:
        yield
    finally:
        root.removeFilter(flt)


@contextlib.contextmanager
def _weights_only_loads() -> Iterator[None]:
    """Make every torch.load inside weights_only=True, even open_clip's fallback call without the flag."""
    keys = ("TORCH_FORCE_WEIGHTS_ONLY_LOAD", "TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD")
    saved = {k: os.environ.get(k) for k in keys}
    os.environ[keys[0]] = "1"
    os.environ.pop(keys[1], None)
    try:
        yield
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def _load_weights(model: Any, path: Path, spec: ModelSpec) -> None:
    import pickle

    oc = _open_clip()
    if not path.is_file():
        raise InputError(f"The weights file {path} of model {spec.name!r} does not exist (any more).")
    try:
        with _weights_only_loads():
            oc.load_checkpoint(model, str(path), strict=True, weights_only=True, device="cpu")
    except pickle.UnpicklingError as e:
        raise InputError(
            f"Refused to load {path}: it is a pickle holding more than tensors (classes or code), and latent reads "
            "pickled checkpoints only with torch.load(weights_only=True), which never runs code from the file. "
            "Convert it to .safetensors where you trust it, or use the model's open_clip_model.safetensors. "
            f"({e})") from e
    except Exception as e:  # TorchScript archive, wrong architecture (missing/unexpected keys), corrupt file...
        raise InputError(f"Could not load the weights {path} into {spec.open_clip_name} (model {spec.name!r}): "
                         f"{type(e).__name__}: {e}") from e


class _ToRGB:
    """``PIL.Image.convert('RGB')`` (pybioclip's ``ensure_rgb_image``); tensors and arrays pass through."""

    def __call__(self, img: Any) -> Any:
        return img.convert("RGB") if hasattr(img, "convert") else img

    def __repr__(self) -> str:
        return "ToRGB()"


def _squash_transform(size: tuple[int, int]) -> Callable[[Any], torch.Tensor]:
    """pybioclip's ``preprocess_img`` at ``size``: RGB, ToTensor, tensor Resize (bilinear, antialias), Normalize."""
    from torchvision import transforms as T

    return T.Compose([
        _ToRGB(),
        T.ToTensor(),
        T.Resize(size, interpolation=T.InterpolationMode.BILINEAR, antialias=True),
        T.Normalize(mean=PYBIOCLIP_MEAN, std=PYBIOCLIP_STD),
    ])


def _size2(size: Any) -> tuple[int, int]:
    if isinstance(size, int):
        return (size, size)
    h, w = size
    return (int(h), int(w))


def _preprocess_info(mode: str, cfg: Mapping[str, Any]) -> dict[str, Any]:
    size = list(_size2(cfg["size"]))
    if mode == "squash":
        return {"name": "squash", "image_size": size, "resize_mode": "squash", "resize_on": "tensor",
                "interpolation": "bilinear", "antialias": True, "crop": "none",
                "mean": [float(v) for v in PYBIOCLIP_MEAN], "std": [float(v) for v in PYBIOCLIP_STD],
                "reference": "pybioclip preprocess_img: RGB, ToTensor, Resize(size, antialias=True), Normalize"}
    resize_mode = cfg.get("resize_mode", "shortest")
    crop = {"shortest": "center", "longest": "center-pad", "squash": "none"}.get(resize_mode, resize_mode)
    info: dict[str, Any] = {
        "name": "openclip", "image_size": size, "resize_mode": resize_mode, "resize_on": "PIL",
        "interpolation": "bilinear" if cfg.get("interpolation") == "bilinear" else "bicubic", "antialias": True,
        "crop": crop, "mean": [float(v) for v in cfg["mean"]], "std": [float(v) for v in cfg["std"]],
        "reference": "open_clip image_transform_v2(is_train=False)",
    }
    if resize_mode == "longest":
        info["fill_color"] = int(cfg.get("fill_color", 0))
    return info


# ---------------------------------------------------------------------------- the loaded model
@dataclass
class LoadedModel:
    """A model ready to embed: eval mode, on its device, with its transform and tokenizer.

    Attributes
    ----------
    spec : ModelSpec
    model : torch.nn.Module
        The open_clip model (``encode_image`` / ``encode_text``), or for ``backend == "timm"`` the timm
        model built with ``num_classes=0`` (``model(x)`` is the pooled embedding; ``forward_features``,
        ``forward_intermediates`` as timm defines them); eval mode, gradients off.
    transform : callable
        PIL image -> ``(3, H, W)`` float tensor, as recorded in ``preprocess_info``. Picklable (for
        DataLoader workers).
    tokenizer : callable
        list of str -> ``(T, context_length)`` int64 tensor (open_clip's tokenizer for the model); for
        an image-only model, a callable that raises :class:`~latent.errors.InputError`.
    device : torch.device
    precision : str
        Resolved precision: ``"fp32"``, ``"fp16"``, ``"bf16"`` or ``"amp"`` (bf16 autocast).
    embed_dim : int
        Embedding dimension, checked by a forward pass at load time.
    image_size : tuple of int
        ``(H, W)`` the image tower expects.
    preprocess_info : dict
        Exact description of ``transform`` (JSON-serialisable), stored in cache provenance.
    untrained : bool
        True for random initialisations.
    pretrained : str
        Provenance of the weights: ``"<source> sha256:<hex>"`` with source the hub id, the open_clip
        tag or the absolute file path; ``"random-init seed=<seed>"`` for random models.
    weights_file : str or None
        Absolute path of the weights file read (None for random models).
    weights_sha256 : str or None
        sha256 of that file.
    seed : int or None
        Seed of a random initialisation (None for trained weights).
    backend : str
        ``"open_clip"`` or ``"timm"`` (image-only: :meth:`encode_texts` refuses).
    """

    spec: ModelSpec
    model: Any = field(repr=False)
    transform: Callable[[Any], Any] = field(repr=False)
    tokenizer: Callable[..., Any] = field(repr=False)
    device: Any
    precision: str
    embed_dim: int
    image_size: tuple[int, int]
    preprocess_info: dict[str, Any]
    untrained: bool
    pretrained: str
    weights_file: str | None = None
    weights_sha256: str | None = None
    seed: int | None = None
    backend: str = "open_clip"

    @property
    def has_text(self) -> bool:
        """True when the model can embed text (open_clip CLIP models); False for image-only timm models."""
        return self.backend == "open_clip"

    @property
    def input_dtype(self) -> torch.dtype:
        """dtype the image tower takes: float16/bfloat16 for fp16/bf16 weights, else float32."""
        import torch

        return {"fp16": torch.float16, "bf16": torch.bfloat16}.get(self.precision, torch.float32)

    def _autocast(self) -> contextlib.AbstractContextManager[Any]:
        import torch

        if self.precision == "amp":
            return torch.autocast(device_type=self.device.type, dtype=torch.bfloat16)
        return contextlib.nullcontext()

    def _check_batch(self, batch: Any, function: str) -> None:
        import torch

        if not isinstance(batch, torch.Tensor) or batch.ndim != 4 or batch.shape[1] != 3 or \
                tuple(batch.shape[-2:]) != self.image_size:
            got = tuple(batch.shape) if isinstance(batch, torch.Tensor) else type(batch).__name__
            raise _bad("batch", function, f"a (B, 3, {self.image_size[0]}, {self.image_size[1]}) tensor "
                       "made by the model's transform", got)

    def encode_images(self, batch: torch.Tensor) -> torch.Tensor:
        """Image embeddings of a preprocessed batch.

        Parameters
        ----------
        batch : torch.Tensor, shape (B, 3, H, W)
            Images through :attr:`transform` (``(H, W) == image_size``), on any device.

        Returns
        -------
        torch.Tensor, shape (B, D), float32, on CPU
            Not L2-normalised. ``D == embed_dim``.
        """
        import torch

        self._check_batch(batch, "encode_images")
        if batch.shape[0] == 0:
            return torch.empty((0, self.embed_dim), dtype=torch.float32)
        with torch.inference_mode(), self._autocast():
            x = batch.to(self.device, dtype=self.input_dtype, non_blocking=True)
            # timm (num_classes=0): the pooled output, the class token after the final norm
            out = self.model(x) if self.backend == "timm" else self.model.encode_image(x)
        return out.float().cpu()

    def _image_tower(self) -> Any:
        """The module whose ``forward_intermediates`` walks the transformer blocks (None: it has none)."""
        tower = self.model if self.backend == "timm" else getattr(self.model, "visual", None)
        if tower is None or not hasattr(tower, "forward_intermediates"):
            return None
        if self.backend == "timm" and getattr(tower, "cls_token", None) is None:
            return None  # a class token is what each layer stores
        return tower

    @property
    def n_blocks(self) -> int | None:
        """Transformer blocks of the image tower whose outputs :meth:`encode_layers` reads (None: not a ViT)."""
        tower = self._image_tower()
        if tower is None:
            return None
        blocks = getattr(tower, "blocks", None) if self.backend == "timm" else \
            getattr(getattr(tower, "transformer", None), "resblocks", None)
        return None if blocks is None else len(blocks)

    @property
    def layer_width(self) -> int | None:
        """Width of the tokens between blocks (e.g. 1024 for ViT-L), None when :attr:`n_blocks` is None."""
        tower = self._image_tower()
        if tower is None:
            return None
        if self.backend == "timm":
            return int(tower.embed_dim)
        return int(tower.transformer.width)

    def encode_layers(self, batch: torch.Tensor, blocks: Sequence[int]) -> tuple[torch.Tensor, dict[int, dict[str, torch.Tensor]]]:
        """The final embeddings and, after each block in ``blocks``, the class token and the mean patch token.

        One forward pass gives both (open_clip's ``visual.forward_intermediates``, timm's
        ``forward_intermediates``). Each block's tokens go through the tower's final LayerNorm (``ln_post``
        in open_clip, ``norm`` in timm) before they are read, so every layer is on the scale the final
        embedding is read from (after the last block the class token is the final embedding before the
        projection) and fits float16.

        Parameters
        ----------
        batch : torch.Tensor, shape (B, 3, H, W)
            As for :meth:`encode_images`.
        blocks : sequence of int
            1-based block numbers (1 = after the first transformer block, :attr:`n_blocks` = after the last).

        Returns
        -------
        final : torch.Tensor, shape (B, D), float32, CPU
            Equal to :meth:`encode_images` of the batch.
        layers : dict
            ``layers[k]["class"]`` and ``layers[k]["patch_mean"]``, each ``(B, W)`` float32 on CPU, with
            ``W`` = :attr:`layer_width`.
        """
        import torch

        n = self.n_blocks
        if n is None:
            raise InputError(f"Model {self.spec.name!r} has no transformer blocks with a class token to read "
                             f"layers from; --layers works with ViT models (open_clip ViTs, timm ViTs).")
        blocks = [int(k) for k in blocks]
        bad = [k for k in blocks if not 1 <= k <= n]
        if bad or not blocks:
            raise _bad("blocks", "encode_layers", f"block numbers from 1 to {n}", bad or blocks)
        self._check_batch(batch, "encode_layers")
        indices = [k - 1 for k in blocks]
        tower = self._image_tower()
        with torch.inference_mode(), self._autocast():
            x = batch.to(self.device, dtype=self.input_dtype, non_blocking=True)
            if self.backend == "timm":
                out = tower.forward_intermediates(x, indices=indices, return_prefix_tokens=True, norm=True,
                                                  output_fmt="NLC", output_dict=True)
                final = tower.forward_head(out["image_features"])
            else:
                out = tower.forward_intermediates(x, indices=indices, normalize_intermediates=True,
                                                  output_fmt="NLC", output_extra_tokens=True)
                final = out["image_features"]
            layers = {k: {"class": prefix[:, 0].float().cpu(), "patch_mean": patches.float().mean(dim=1).cpu()}
                      for k, prefix, patches in zip(blocks, out["image_intermediates_prefix"],
                                                    out["image_intermediates"])}
        return final.float().cpu(), layers

    def encode_texts(self, texts: Sequence[str]) -> torch.Tensor:
        """Text embeddings.

        Parameters
        ----------
        texts : sequence of str, length T
            Prompts (tokenised and truncated to the model's context length by its tokenizer).

        Returns
        -------
        torch.Tensor, shape (T, D), float32, on CPU
            Not L2-normalised.

        Raises
        ------
        InputError
            The model is image-only (no text tower).
        """
        import torch

        if not self.has_text:
            raise _no_text(self.spec.name)
        if isinstance(texts, str) or not all(isinstance(t, str) for t in texts):
            raise _bad("texts", "encode_texts", "a list of strings (wrap a single prompt in a list)",
                       texts if isinstance(texts, str) else [type(t).__name__ for t in texts])
        texts = list(texts)
        if not texts:
            return torch.empty((0, self.embed_dim), dtype=torch.float32)
        with torch.inference_mode(), self._autocast():
            tokens = self.tokenizer(texts).to(self.device, non_blocking=True)
            out = self.model.encode_text(tokens)
        return out.float().cpu()

    @property
    def logit_scale(self) -> float | None:
        """The model's learned zero-shot temperature ``exp(model.logit_scale)``.

        CLIP and BioCLIP train it up to its clamp of 100; a random initialisation has ``1 / 0.07``
        (about 14.3). ``None`` when the model has no ``logit_scale`` parameter.
        """
        import torch

        scale = getattr(self.model, "logit_scale", None)
        if scale is None:
            return None
        with torch.no_grad():
            return float(torch.as_tensor(scale).detach().float().exp().reshape(-1)[0].cpu())

    def provenance_fields(self) -> dict[str, Any]:
        """How embeddings made by this model are identified (JSON-serialisable).

        Returns
        -------
        dict
            ``model`` (registry name or open_clip id), ``pretrained`` (see the attribute),
            ``preprocess`` (``preprocess_info``), ``embed_dim``, ``untrained``, ``seed`` (random
            models, else None), and, informative only, ``weights_sha256`` and ``precision``.
        """
        return {"model": self.spec.name, "pretrained": self.pretrained, "preprocess": dict(self.preprocess_info),
                "embed_dim": self.embed_dim, "untrained": self.untrained, "seed": self.seed,
                "weights_sha256": self.weights_sha256, "precision": self.precision}


def parse_blocks(value: "str | Sequence[int]", n_blocks: int, *, param: str = "--layers") -> list[int]:
    """The block numbers named by ``value``: ``"all"``, or 1-based numbers and ranges (``"4,8,12"``, ``"1-6,12"``).

    Returns the sorted distinct block numbers, each in ``1..n_blocks``; anything else is an
    :class:`~latent.errors.InputError` naming ``param``.
    """
    what = (f"The {param!r} parameter must be 'all' or block numbers from 1 to {n_blocks} (e.g. '1-{n_blocks}' or "
            f"'{max(1, n_blocks // 2)},{n_blocks}')")
    if isinstance(value, str):
        text = value.strip().lower()
        if text == "all":
            return list(range(1, n_blocks + 1))
        out: list[int] = []
        for part in filter(None, (p.strip() for p in text.split(","))):
            match = re.fullmatch(r"(-?\d+)(?:\s*-\s*(\d+))?", part)
            if match is None:
                raise InputError(f"{what}. Got {value!r} instead.")
            lo, hi = int(match.group(1)), int(match.group(2) or match.group(1))
            out.extend(range(lo, hi + 1) if lo <= hi else [lo, hi])
    else:
        try:
            out = [int(v) for v in value if not isinstance(v, bool) and float(v) == int(v)]
        except (TypeError, ValueError):
            raise InputError(f"{what}. Got {value!r} instead.") from None
        if len(out) != len(list(value)):
            raise InputError(f"{what}. Got {value!r} instead.")
    bad = sorted({k for k in out if not 1 <= k <= n_blocks})
    if bad or not out:
        raise InputError(f"{what}. Got {value!r} instead" + (f" ({', '.join(map(str, bad))} out of range)." if bad else "."))
    return sorted(set(out))


# ---------------------------------------------------------------------------- image-only models (timm)
def _no_text(name: str) -> InputError:
    return InputError(
        f"Model {name!r} is image-only (timm, no text tower): text embeddings (latent embed-text, embed --text) and "
        "zero-shot evaluation need a CLIP model with a text encoder (bioclip-2, clip-vit-l-14, ...); use the other "
        "evaluation methods and probes on its image embeddings.")


def require_text_tower(model: ModelSpec | str | None, pretrained: str | os.PathLike[str] | None = None) -> None:
    """Refuse, before any work, a text task (embed-text, ``embed --text``, zero-shot) on an image-only model.

    Cheap: reads the registry only, imports no torch or timm.

    Parameters
    ----------
    model : ModelSpec, str or None
        The model (a spec, or a name as :func:`resolve_model` takes it; the cache's recorded model name).
        None, or a name that does not resolve (an imported cache's ``"unknown"``), passes: only a model
        known to be image-only is refused.
    pretrained : str or path-like, optional
        As for :func:`resolve_model`.

    Raises
    ------
    InputError
        One line: the model is image-only (timm, no text tower), and what to use instead.
    """
    spec = model
    if isinstance(model, str):
        registry = _registry()[0]
        if model in registry:
            spec = registry[model]
        elif model.startswith("timm:"):
            try:
                spec = resolve_model(model, pretrained)
            except InputError:
                return
        else:
            return
    if isinstance(spec, ModelSpec) and not spec.has_text:
        raise _no_text(spec.name)


class _NoTokenizer:
    """The tokenizer of an image-only model: refuses every call with a one-line InputError (picklable)."""

    def __init__(self, name: str) -> None:
        self.name = name

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        raise _no_text(self.name)

    def __repr__(self) -> str:
        return f"NoTokenizer({self.name!r})"


def _timm_with_pretrained(entry: ModelSpec, pretrained: str) -> ModelSpec:
    """A timm registry entry with local weights: a weights file, or a snapshot folder of its Hub repository."""
    path = Path(pretrained).expanduser()
    if path.is_dir():
        folder = path.resolve()
        found = next((folder / f for f in _TIMM_WEIGHTS if (folder / f).is_file()), None)
        if found is None:
            others = sorted(p.name for p in folder.iterdir() if p.suffix in _WEIGHT_SUFFIXES)
            if len(others) != 1:
                raise InputError(f"The folder {folder} holds no timm weights file {' or '.join(_TIMM_WEIGHTS)} "
                                 f"(weight-like files: {format_list(others) or 'none'}); pass the file itself.")
            found = folder / others[0]
        path = found
    elif not path.is_file():
        raise _bad("pretrained", "resolve_model", f"an existing weights file or snapshot folder for the timm model "
                   f"{entry.name} ({entry.timm_name})", pretrained, " (No such file or folder exists.)")
    path = path.resolve()
    if path.suffix.lower() not in _WEIGHT_SUFFIXES:
        raise InputError(f"The weights file {path} must end in one of {', '.join(_WEIGHT_SUFFIXES)} "
                         "(.safetensors preferred; the others are read with torch.load(weights_only=True)).")
    return ModelSpec(name=entry.name if not entry.untrained else f"timm:{entry.timm_name}",
                     open_clip_name=entry.open_clip_name, pretrained=str(path), arch=entry.arch,
                     embed_dim=entry.embed_dim, description=f"timm {entry.timm_name} with weights from {path}",
                     source="file", backend="timm", timm_name=entry.timm_name)


def _timm_preprocess_info(cfg: Mapping[str, Any]) -> dict[str, Any]:
    """timm's resolved data config -> the JSON record of its evaluation transform."""
    _, h, w = (int(v) for v in cfg["input_size"])
    crop_pct = float(cfg.get("crop_pct") or 0.875)
    crop_mode = str(cfg.get("crop_mode") or "center")
    return {"name": "timm", "image_size": [h, w], "resize_mode": "shortest", "resize_on": "PIL",
            "interpolation": str(cfg.get("interpolation") or "bilinear"), "antialias": True,
            "crop_pct": crop_pct, "crop_mode": crop_mode, "crop": crop_mode,
            "mean": [float(v) for v in cfg["mean"]], "std": [float(v) for v in cfg["std"]],
            "reference": "timm resolve_data_config(model=...) + create_transform(is_training=False), RGB first"}


def _load_timm(spec: ModelSpec, dev: Any, *, precision: str, preprocess: str, seed: int) -> LoadedModel:
    """Build an image-only timm model (``num_classes=0``) with its weights and evaluation transform."""
    import pickle

    import torch

    try:
        import timm
        from timm.data import create_transform, resolve_data_config
    except ImportError as e:  # pragma: no cover - timm comes with open_clip
        raise LatentError(f"Model {spec.name!r} needs timm (pip install timm): {e}") from e
    assert spec.timm_name is not None
    weights: Path | None = None
    if spec.source == "hf-hub":
        assert spec.hub_repo is not None
        weights = _hub_weights(spec, spec.hub_repo, _TIMM_WEIGHTS)
    elif spec.source == "file":
        weights = Path(spec.pretrained or "")
        if not weights.is_file():
            raise InputError(f"The weights file {weights} of model {spec.name!r} does not exist (any more).")
    elif spec.source != "random":
        raise _bad("spec_or_name", "load_model", "a timm ModelSpec with source 'hf-hub', 'file' or 'random'",
                   spec.source)
    kwargs: dict[str, Any] = {"num_classes": 0}
    if weights is not None:  # timm loads the file itself: its filters (position embeddings, classifier) apply
        kwargs.update(pretrained=True, pretrained_cfg_overlay={"file": str(weights), "custom_load": False,
                                                               "hf_hub_id": None, "url": None, "source": ""})
    devices = list(range(torch.cuda.device_count())) if torch.cuda.is_available() else []
    log.info("building %s (timm %s) on CPU, seed %d", spec.name, spec.timm_name, seed)
    try:
        with torch.random.fork_rng(devices=devices), _weights_only_loads():
            torch.manual_seed(seed)
            model = timm.create_model(spec.timm_name, **kwargs)
    except pickle.UnpicklingError as e:
        raise InputError(f"Refused to load {weights}: it is a pickle holding more than tensors, and latent reads "
                         "pickled checkpoints only with torch.load(weights_only=True). Use model.safetensors. "
                         f"({e})") from e
    except Exception as e:  # unknown timm name, wrong architecture (missing/unexpected keys), corrupt file...
        if weights is not None and "weights_only" in str(e):  # timm's wording of an unsafe pickle
            raise InputError(f"Refused to load {weights}: it is a pickle holding more than tensors, and latent reads "
                             "pickled checkpoints only with torch.load(weights_only=True), never unpickling code. "
                             f"Use model.safetensors. ({type(e).__name__}: {str(e).splitlines()[0]})") from e
        what = f" with weights {weights}" if weights is not None else ""
        raise (InputError if weights is not None else LatentError)(
            f"timm could not build {spec.timm_name} for model {spec.name!r}{what}: {type(e).__name__}: {e}") from e
    sha = _sha256(weights) if weights is not None else None
    model.requires_grad_(False)
    if precision in ("fp16", "bf16"):
        model = model.to(torch.float16 if precision == "fp16" else torch.bfloat16)
    model = model.to(dev).eval()
    data_cfg = resolve_data_config({}, model=model)
    transform = _TimmTransform(create_transform(**data_cfg, is_training=False))
    info = _timm_preprocess_info(data_cfg)
    if spec.source == "random":
        provenance = f"random-init seed={seed}"
    else:
        provenance = f"{spec.hub_repo if spec.source == 'hf-hub' else weights} sha256:{sha}"
    dim = int(getattr(model, "num_features", 0) or 0)
    if spec.embed_dim is not None and dim != spec.embed_dim:
        raise LatentError(f"Model {spec.name!r} produces {dim}-d embeddings, but its spec says {spec.embed_dim}-d.")
    loaded = LoadedModel(
        spec=spec, model=model, transform=transform, tokenizer=_NoTokenizer(spec.name), device=dev,
        precision=precision, embed_dim=dim, image_size=(info["image_size"][0], info["image_size"][1]),
        preprocess_info=info, untrained=spec.untrained, pretrained=provenance,
        weights_file=str(weights) if weights else None, weights_sha256=sha,
        seed=seed if spec.source == "random" else None, backend="timm")
    log.info("loaded %s: %d-d, %s, %s, preprocess %s, weights %s", spec.name, dim, dev, precision, preprocess,
             provenance)
    return loaded


class _TimmTransform:
    """RGB conversion, then timm's evaluation transform (picklable, for DataLoader workers)."""

    def __init__(self, inner: Callable[[Any], Any]) -> None:
        self.inner = inner

    def __call__(self, img: Any) -> Any:
        return self.inner(img.convert("RGB") if hasattr(img, "convert") else img)

    def __repr__(self) -> str:
        return f"ToRGB() + {self.inner!r}"


def load_model(
    spec_or_name: ModelSpec | str,
    *,
    pretrained: str | os.PathLike[str] | None = None,
    device: Any = "auto",
    precision: str = "auto",
    preprocess: str = "openclip",
    seed: int = 0,
) -> LoadedModel:
    """Load a model for embedding: weights from the Hugging Face cache, the Hub, a file or a seed.

    Parameters
    ----------
    spec_or_name : ModelSpec or str
        A :class:`ModelSpec` or anything :func:`resolve_model` takes.
    pretrained : str or path-like, optional
        Passed to :func:`resolve_model` with a name (not allowed with a ModelSpec).
    device : str or torch.device, default "auto"
        ``"auto"`` (CUDA if available, else CPU), ``"cpu"``, ``"cuda"``, ``"cuda:1"``, ...
    precision : {"auto", "fp32", "fp16", "bf16", "amp"}, default "auto"
        ``"amp"``: fp32 weights with bf16 autocast; ``"auto"``: amp on CUDA, fp32 on CPU;
        ``"fp16"``/``"bf16"``: low-precision weights (LayerNorms in fp32, as open_clip does).
    preprocess : {"openclip", "squash"}, default "openclip"
        ``"openclip"``: open_clip's validation transform for the model (resize the shorter side,
        centre crop; what the BioCLIP papers evaluate with). ``"squash"``: pybioclip's transform
        (resize to the model's image size without cropping, bilinear with antialias on the tensor,
        OpenAI CLIP normalisation). Embeddings from the two differ: never mix them. Image-only timm
        models take only ``"openclip"``, which for them means timm's own evaluation transform
        (``resolve_data_config`` + ``create_transform``; recorded with ``name: "timm"``).
    seed : int, default 0
        Seed of a random initialisation (the same seed gives bit-identical weights). The global torch
        RNG state is restored afterwards.

    Returns
    -------
    LoadedModel
        For a timm model (``backend == "timm"``): ``encode_images`` gives the pooled ``(B, D)``
        class-token embedding (``num_classes=0``), ``encode_texts`` raises InputError (no text tower).

    Raises
    ------
    InputError
        Bad parameters, unknown model, unreadable or unsafe weights file, ``preprocess="squash"`` with
        a timm model.
    ModelUnavailableError
        Hub weights neither in the local cache nor downloadable now; the message says how to get them.
    """
    if isinstance(precision, str) and precision.strip().lower() in PRECISIONS:
        precision = precision.strip().lower()
    else:
        raise _bad("precision", "load_model", f"one of {', '.join(map(repr, PRECISIONS))}", precision)
    if isinstance(preprocess, str) and preprocess.strip().lower() in PREPROCESS_MODES:
        preprocess = preprocess.strip().lower()
    else:
        raise _bad("preprocess", "load_model", f"one of {', '.join(map(repr, PREPROCESS_MODES))}", preprocess)
    if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
        raise _bad("seed", "load_model", "a non-negative integer", seed)
    if isinstance(spec_or_name, ModelSpec):
        if pretrained is not None:
            raise _bad("pretrained", "load_model", "None when a ModelSpec is given (resolve it with "
                       "resolve_model(name, pretrained) instead)", pretrained)
        spec = spec_or_name
    elif isinstance(spec_or_name, str):
        spec = resolve_model(spec_or_name, pretrained)
    else:
        raise _bad("spec_or_name", "load_model", "a model name or a ModelSpec", spec_or_name)
    if spec.backend == "timm" and preprocess != "openclip":
        raise _bad("preprocess", "load_model", f"'openclip' (the model's own evaluation transform) for the image-only "
                   f"timm model {spec.name!r}: 'squash' is pybioclip's transform for CLIP models", preprocess)
    dev = resolve_device(device, function="load_model")
    if precision == "auto":
        precision = "amp" if dev.type == "cuda" else "fp32"
    if precision == "fp16" and dev.type == "cpu":
        log.warning("fp16 weights on CPU are slow and some ops may be missing: prefer precision='fp32' or 'bf16'")

    if spec.backend == "timm":
        return _load_timm(spec, dev, precision=precision, preprocess=preprocess, seed=seed)

    import torch

    oc = _open_clip()
    config_name, weights, kwargs = spec.open_clip_name, None, {}
    if spec.source == "hf-hub":
        snapshot, weights = _hub_snapshot(spec)
        config_name = f"local-dir:{snapshot}"
    elif spec.source == "tag":
        repo, files = _hub_candidates(oc.get_pretrained_cfg(spec.open_clip_name, spec.tag).get("hf_hub", ""))
        weights = _hub_weights(spec, repo, files)
    elif spec.source in ("file", "dir"):
        weights = Path(spec.pretrained or "")
    elif spec.source != "random":
        raise _bad("spec_or_name", "load_model", f"a ModelSpec with source in {SOURCES}", spec.source)
    if spec.tag:  # the tag's own preprocessing, as open_clip applies it when it loads the tag itself
        tag_cfg = oc.get_pretrained_cfg(spec.open_clip_name, spec.tag)
        kwargs = {"image_mean": tag_cfg.get("mean"), "image_std": tag_cfg.get("std"),
                  "image_interpolation": tag_cfg.get("interpolation"), "image_resize_mode": tag_cfg.get("resize_mode")}

    devices = list(range(torch.cuda.device_count())) if torch.cuda.is_available() else []
    log.info("building %s (%s) on CPU, seed %d", spec.name, config_name, seed)
    try:
        with torch.random.fork_rng(devices=devices), _quiet_random_init():
            torch.manual_seed(seed)
            model, _, val_transform = oc.create_model_and_transforms(
                config_name, pretrained=None, load_weights=False, precision="fp32" if precision == "amp" else precision,
                device="cpu", force_quick_gelu=spec.quick_gelu, pretrained_image=False, pretrained_text=False, **kwargs)
    except (OSError, RuntimeError, ValueError, KeyError, TypeError) as e:
        raise LatentError(f"open_clip could not build {config_name} for model {spec.name!r}: "
                          f"{type(e).__name__}: {e}") from e
    sha = None
    if weights is not None:
        log.info("loading weights %s", weights)
        _load_weights(model, weights, spec)
        sha = _sha256(weights)
    model.requires_grad_(False)
    model = model.to(dev).eval()
    tokenizer = oc.get_tokenizer(config_name)
    pp_cfg = dict(model.visual.preprocess_cfg)
    size = _size2(pp_cfg["size"])
    if preprocess == "squash":
        transform = _squash_transform(size)
        if tuple(pp_cfg["mean"]) != PYBIOCLIP_MEAN or tuple(pp_cfg["std"]) != PYBIOCLIP_STD:
            log.warning("preprocess='squash' normalises with pybioclip's (OpenAI CLIP) mean/std, but %s was trained "
                        "with mean %s, std %s", spec.name, tuple(pp_cfg["mean"]), tuple(pp_cfg["std"]))
    else:
        transform = val_transform
    if spec.source == "random":
        provenance = f"random-init seed={seed}"
    else:
        source = {"hf-hub": spec.open_clip_name, "tag": spec.tag}.get(spec.source, str(weights))
        provenance = f"{source} sha256:{sha}"
    loaded = LoadedModel(
        spec=spec, model=model, transform=transform, tokenizer=tokenizer, device=dev, precision=precision,
        embed_dim=int(spec.embed_dim or 0), image_size=size, preprocess_info=_preprocess_info(preprocess, pp_cfg),
        untrained=spec.untrained, pretrained=provenance, weights_file=str(weights) if weights else None,
        weights_sha256=sha, seed=seed if spec.source == "random" else None)
    dim = int(loaded.encode_texts(["a photo of a bird"]).shape[1])  # the real dimension, by a forward pass
    if spec.embed_dim is not None and dim != spec.embed_dim:
        raise LatentError(f"Model {spec.name!r} produced {dim}-d embeddings, but its spec says {spec.embed_dim}-d.")
    loaded.embed_dim = dim
    log.info("loaded %s: %d-d, %s, %s, preprocess %s, weights %s", spec.name, dim, dev, precision, preprocess,
             provenance)
    return loaded
