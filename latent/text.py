"""Text embeddings of taxon names, in the text forms BioCLIP was trained with.

For every named taxon of every rank present in a cache, and each text form:

* ``taxon``: the lineage, ``"Animalia Chordata Aves Passeriformes Passeridae Passer domesticus"``
  (kingdom down to the taxon; for a species the genus followed by the epithet, as BioCLIP writes it);
* ``sci``: the scientific name alone, ``"Passer domesticus"`` (``"Passeridae"`` for a family);
* ``com``: the common name, ``"house sparrow"`` (species with a common name only);
* ``taxon_com``: ``"<taxon> with common name <com>"``.

Each text is put in the template ``"a photo of {}."`` (``templates="single"``) or in each of the 80
OpenAI ImageNet templates (``templates="openai"``); every prompt embedding is L2-normalised, the
template embeddings are averaged and the mean is normalised again (the CLIP zero-shot recipe). The
result is stored under ``/text/<rank>/<form>``: ``labels`` are the taxa's lineages joined by ``";"``
(a taxon's identity: homonyms stay apart), ``embeddings`` are unit rows; attributes record the rank,
form, template set and number of templates, and ``logit_scale``: the model's learned zero-shot scale
``exp(model.logit_scale)`` (:attr:`latent.models.LoadedModel.logit_scale`), which zero-shot evaluation
multiplies the cosine similarities by (see :func:`text_logit_scale`).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from latent.errors import CacheError, InputError, format_list
from latent.ranks import RANKS, Rank, parse_rank
from latent.taxonomy import Taxonomy

__all__ = ["TEXT_FORMS", "TEMPLATE_SETS", "DEFAULT_LOGIT_SCALE", "templates", "taxon_texts", "embed_taxon_texts",
           "embed_text", "text_logit_scale", "text_encoder_of", "TextReport"]

log = logging.getLogger(__name__)

TEXT_FORMS = ("taxon", "sci", "com", "taxon_com")
TEMPLATE_SETS = ("single", "openai")
#: CLIP's trained logit scale (its clamp), used for text embeddings stored before the scale was recorded.
DEFAULT_LOGIT_SCALE = 100.0


def text_logit_scale(attrs: "Sequence[Mapping[str, object]] | Mapping[str, object]", *, where: str = "the cache"
                     ) -> tuple[float, str]:
    """The zero-shot logit scale recorded with text embeddings.

    Parameters
    ----------
    attrs
        The attributes of one ``/text`` group, or of several (all used for one prediction).
    where
        Named in the log message.

    Returns
    -------
    scale : float
        The recorded ``logit_scale`` (the groups must agree); :data:`DEFAULT_LOGIT_SCALE` when none of
        them records one (text embedded before latent recorded it), with a logged warning.
    source : str
        ``"model"`` or ``"default (not recorded)"``.

    Raises
    ------
    CacheError
        If the groups record different scales (made by different models).
    """
    groups = [attrs] if isinstance(attrs, Mapping) else list(attrs)
    found = sorted({float(a["logit_scale"]) for a in groups if a.get("logit_scale") is not None})
    if len(found) > 1:
        raise CacheError(f"The text embeddings in {where} record different logit scales {found}: they were made by "
                         "different models. Re-run latent embed-text --force.")
    if not found:
        log.warning("The text embeddings in %s do not record the model's logit scale (made by an older latent): "
                    "zero-shot uses CLIP's %g. Re-run latent embed-text --force to record it.", where, DEFAULT_LOGIT_SCALE)
        return DEFAULT_LOGIT_SCALE, "default (not recorded)"
    return found[0], "model"


def templates(name: str) -> tuple[str, ...]:
    """The prompt templates of a template set (``"single"`` or ``"openai"``), each with one ``{}``."""
    if name == "single":
        return ("a photo of {}.",)
    if name == "openai":
        from open_clip.zero_shot_metadata import OPENAI_IMAGENET_TEMPLATES

        return tuple(t("{}") for t in OPENAI_IMAGENET_TEMPLATES)
    raise InputError(f"The 'templates' parameter must be one of {', '.join(TEMPLATE_SETS)}. Got {name!r} instead.")


def _epithet(binomial: str, genus: str) -> str:
    return binomial[len(genus) + 1:] if genus and binomial.startswith(genus + " ") else binomial


def taxon_texts(
    taxonomy: Taxonomy,
    rank: "Rank | str | int",
    form: str,
    common_names: "Mapping[str, str] | None" = None,
) -> tuple[list[str], list[str]]:
    """The text of every named taxon at ``rank`` in one text form.

    Parameters
    ----------
    taxonomy
        The taxa (placeholders for empty ranks are skipped in lineages and never get a text).
    rank
        Which rank's taxa.
    form
        One of :data:`TEXT_FORMS`.
    common_names
        ``{binomial: common name}`` for the ``com`` and ``taxon_com`` forms (species only).

    Returns
    -------
    keys : list of str
        ``(T,)`` the taxa's lineages joined by ``";"`` (their identity), in node order.
    texts : list of str
        ``(T,)`` the texts, before templating.
    """
    r = parse_rank(rank)
    if form not in TEXT_FORMS:
        raise InputError(f"The 'form' parameter must be one of {', '.join(TEXT_FORMS)}. Got {form!r} instead.")
    keys, texts = [], []
    for node, name in enumerate(taxonomy.node_names[r]):
        if not name:
            continue
        lineage = taxonomy.lineage(r, node)
        key = ";".join(lineage)
        named = [n for n in lineage if n]
        if r == Rank.SPECIES:
            genus = lineage[Rank.GENUS]
            taxon = " ".join([n for n in lineage[: Rank.GENUS] if n] + ([genus] if genus else []) + [_epithet(name, genus)])
        else:
            taxon = " ".join(named)
        common = (common_names or {}).get(str(name), "") if r == Rank.SPECIES else ""
        if form == "taxon":
            text = taxon
        elif form == "sci":
            text = str(name)
        elif not common:
            continue
        elif form == "com":
            text = common
        else:
            text = f"{taxon} with common name {common}"
        keys.append(key)
        texts.append(text)
    return keys, texts


def embed_taxon_texts(loaded, texts: Sequence[str], template_set: str = "openai", *, batch_size: int = 256) -> np.ndarray:
    """Template-averaged, L2-normalised text embeddings.

    Parameters
    ----------
    loaded : latent.models.LoadedModel
        The model (its ``encode_texts``).
    texts
        ``(T,)`` texts before templating.
    template_set
        ``"single"`` or ``"openai"``.

    Returns
    -------
    numpy.ndarray
        ``(T, D)`` float32, unit rows: normalise(mean over templates of normalise(embed(template(text)))).
    """
    prompts_per_template = templates(template_set)
    total = None
    for template in prompts_per_template:
        prompts = [template.format(t) for t in texts]
        parts = [loaded.encode_texts(prompts[i:i + batch_size]).numpy().astype(np.float64) for i in range(0, len(prompts), batch_size)]
        emb = np.concatenate(parts) if parts else np.zeros((0, loaded.embed_dim))
        emb /= np.linalg.norm(emb, axis=1, keepdims=True)
        total = emb if total is None else total + emb
    mean = total / len(prompts_per_template)
    return (mean / np.linalg.norm(mean, axis=1, keepdims=True)).astype(np.float32)


@dataclass(frozen=True)
class TextReport:
    """Which ``/text`` groups were written (``written``) or already there (``kept``)."""

    path: Path
    written: list[str]
    kept: list[str]

    def summary(self) -> str:
        text = f"{self.path}: wrote text embeddings {format_list(self.written) or '(none)'}"
        if self.kept:
            text += f"; kept existing {format_list(self.kept)} (pass --force to recompute)"
        return text


def _load_cache_model(cache, *, device: str, model: "str | None", pretrained: "str | None"):
    """Reload the model that made ``cache`` and check it is the same weights."""
    from latent.models import load_model, require_text_tower

    load = (cache.provenance.extra or {}).get("load")
    if model is not None:
        load = {"model": model, "pretrained": pretrained, "preprocess": "openclip", "seed": 0}
    if not load:
        raise CacheError(
            f"{cache.path} does not record how to reload its model (it was imported or synthesised); "
            "pass --model (and --pretrained) naming the model that made its embeddings."
        )
    require_text_tower(load["model"], load.get("pretrained"))
    loaded = load_model(load["model"], pretrained=load.get("pretrained"), device=device,
                        preprocess=load.get("preprocess", "openclip"), seed=int(load.get("seed") or 0))
    if model is None and loaded.pretrained != cache.provenance.pretrained:
        raise CacheError(
            f"The model reloaded for {cache.path} has weights {loaded.pretrained!r}, but the cache's image "
            f"embeddings were made with {cache.provenance.pretrained!r}: text and image embeddings must come "
            "from the same weights. Pass --model/--pretrained with the original weights."
        )
    if loaded.embed_dim != cache.dim:
        raise CacheError(f"The model gives {loaded.embed_dim}-d embeddings but {cache.path} holds {cache.dim}-d ones.")
    return loaded


def text_encoder_of(cache_path: "str | os.PathLike[str]", *, group: str = "species/taxon",
                    device: str = "auto") -> "Callable[[list[str]], np.ndarray]":
    """The text encoder that made the cache's ``/text/<group>`` embeddings, as ``list of str -> (n, D)``.

    The model is reloaded from the cache's record (the same weights, checked as ``latent embed-text`` does)
    and applied with the group's template set (``templates`` attribute), so new texts (e.g. the
    random-token control of :func:`latent.probes.text_side.text_geometry`) are embedded exactly as the
    stored ones were.

    Raises
    ------
    CacheError
        The cache does not record how to reload its model (imported or synthesised), or the weights differ.
    latent.models.ModelUnavailableError
        The weights are not available offline.
    """
    from latent.cache import open_cache

    with open_cache(cache_path) as cache:
        if group not in cache.text_groups():
            raise CacheError(f"{cache_path} holds no /text/{group} group; run latent embed-text {cache_path} first.")
        template_set = str(cache.read_text_group(group)[2].get("templates", "openai"))
        loaded = _load_cache_model(cache, device=device, model=None, pretrained=None)

    def encode(texts: "list[str]") -> np.ndarray:
        return embed_taxon_texts(loaded, list(texts), template_set)

    return encode


def embed_text(
    cache_path: "str | os.PathLike[str]",
    *,
    template_set: str = "openai",
    forms: Sequence[str] = TEXT_FORMS,
    ranks: "Sequence[Rank | str | int] | None" = None,
    common_names: "Mapping[str, str] | None" = None,
    force: bool = False,
    device: str = "auto",
    batch_size: int = 256,
    model: "str | None" = None,
    pretrained: "str | None" = None,
) -> TextReport:
    """Add text embeddings of the cache's taxa under ``/text/<rank>/<form>`` (once; reused later).

    Groups already present with the same template set are kept unless ``force``. Forms without any
    text (``com`` when no common names are known) are skipped. Each group records the model's
    ``logit_scale`` (``exp`` of its learned parameter) as an attribute.
    """
    from latent.cache import CacheWriter, open_cache

    templates(template_set)  # validate early
    bad = [f for f in forms if f not in TEXT_FORMS]
    if bad:
        raise InputError(f"The 'forms' parameter must name forms among {', '.join(TEXT_FORMS)}. Got {format_list(bad)} instead.")
    rank_list = [parse_rank(r) for r in (ranks if ranks is not None else RANKS)]
    with open_cache(cache_path) as cache:
        taxonomy = cache.taxonomy()
        existing = set(cache.text_groups())
        existing_sets = {}
        for name in existing:
            existing_sets[name] = cache.read_text_group(name)[2].get("templates")
        jobs = []
        kept = []
        for rank in rank_list:
            for form in forms:
                name = f"{rank.label}/{form}"
                if name in existing and not force:
                    if existing_sets[name] != template_set:
                        raise CacheError(
                            f"{cache_path} already holds /text/{name} made with the {existing_sets[name]!r} templates; "
                            f"pass --force to replace it with {template_set!r}."
                        )
                    kept.append(name)
                    continue
                keys, texts = taxon_texts(taxonomy, rank, form, common_names)
                if keys:
                    jobs.append((name, rank, form, keys, texts))
        if not jobs:
            return TextReport(Path(cache_path), [], kept)
        loaded = _load_cache_model(cache, device=device, model=model, pretrained=pretrained)
        provenance = cache.provenance
    scale = loaded.logit_scale
    if scale is None:
        log.warning("%s has no logit_scale: zero-shot will use CLIP's %g", loaded.spec.name, DEFAULT_LOGIT_SCALE)
    results = []
    for name, rank, form, keys, texts in jobs:
        log.info("text embeddings: %s (%d taxa x %d templates)", name, len(texts), len(templates(template_set)))
        results.append((name, rank, form, keys, embed_taxon_texts(loaded, texts, template_set, batch_size=batch_size)))
    with CacheWriter.open(cache_path, provenance, mode="append") as writer:
        for name, rank, form, keys, emb in results:
            writer.write_text_group(name, keys, emb, {
                "rank": rank.label, "form": form, "templates": template_set,
                "n_templates": len(templates(template_set)), "normalized": True,
                "label_format": "lineage kingdom..rank joined by ';'",
                **({"logit_scale": float(scale)} if scale is not None else {}),
            })
    return TextReport(Path(cache_path), [r[0] for r in results], kept)
