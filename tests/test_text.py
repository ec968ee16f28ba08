"""Text embeddings of taxon names: the BioCLIP text forms, template averaging, storage in the cache."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from latent.cache import open_cache
from latent.errors import CacheError
from latent.extract import embed_images
from latent.importer import import_embeddings
from latent.models import load_model
from latent.synthetic import builtin_taxonomy, builtin_taxonomy_path
from latent.taxonomy import Taxonomy
from latent.text import DEFAULT_LOGIT_SCALE, embed_taxon_texts, embed_text, taxon_texts, templates, text_logit_scale

SPECIES = ["Passer domesticus", "Passer montanus", "Morus alba", "Morus bassanus"]


@pytest.fixture(scope="module")
def tiny():
    return load_model("random-tiny", device="cpu")


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    """A random-tiny cache of 8 generated images of 4 built-in species (two Morus: a homonym)."""
    root = tmp_path_factory.mktemp("imgs")
    rng = np.random.default_rng(0)
    for sp in SPECIES:
        (root / sp).mkdir()
        for k in range(2):
            Image.fromarray(rng.integers(0, 255, (40, 50, 3), dtype=np.uint8)).save(root / sp / f"{k}.png")
    out = root / "c.h5"
    embed_images(root, out, model="random-tiny", taxonomy=builtin_taxonomy_path(), join_on="folder=species",
                 workers=0, progress=False, store_dtype="float32")
    return out


def test_text_forms_follow_bioclip():
    tax = builtin_taxonomy()
    common = dict(pd.read_csv(builtin_taxonomy_path())[["species", "common_name"]].itertuples(index=False))
    keys, texts = taxon_texts(tax, "species", "taxon")
    assert "Animalia Chordata Aves Passeriformes Passeridae Passer domesticus" in texts
    assert "Animalia;Chordata;Aves;Passeriformes;Passeridae;Passer;Passer domesticus" in keys
    assert len(keys) == len(set(keys)) == tax.n_species
    _, sci = taxon_texts(tax, "species", "sci")
    assert "Passer domesticus" in sci
    _, fam = taxon_texts(tax, "family", "taxon")
    assert "Animalia Chordata Aves Passeriformes Passeridae" in fam
    _, com = taxon_texts(tax, "species", "com", common)
    assert common["Passer domesticus"] in com and len(com) == tax.n_species
    _, tc = taxon_texts(tax, "species", "taxon_com", common)
    assert f"Animalia Chordata Aves Passeriformes Passeridae Passer domesticus with common name {common['Passer domesticus']}" in tc
    assert taxon_texts(tax, "genus", "com", common) == ([], [])  # common names are for species
    # homonym genera keep two identities
    gkeys, gtexts = taxon_texts(tax, "genus", "sci")
    assert gtexts.count("Morus") == 2 and len(set(gkeys)) == len(gkeys)


def test_empty_intermediate_rank_is_left_out_of_the_taxon_text():
    tax = Taxonomy.from_lineages([["Animalia", "Chordata", "Aves", "Passeriformes", "", "Gen", "Gen x"]])
    assert taxon_texts(tax, "species", "taxon")[1] == ["Animalia Chordata Aves Passeriformes Gen x"]
    assert taxon_texts(tax, "family", "taxon") == ([], [])  # no named family


def test_template_average_equals_hand_computation(tiny):
    assert len(templates("openai")) == 80 and templates("single") == ("a photo of {}.",)
    texts = ["Passer domesticus", "Morus alba", "Animalia"]
    single = embed_taxon_texts(tiny, texts, "single")
    direct = tiny.encode_texts([f"a photo of {t}." for t in texts]).numpy()
    np.testing.assert_allclose(single, direct / np.linalg.norm(direct, axis=1, keepdims=True), atol=1e-6)
    avg = embed_taxon_texts(tiny, texts, "openai", batch_size=2)
    per = np.stack([tiny.encode_texts([tpl.format(t) for tpl in templates("openai")]).numpy() for t in texts])
    per /= np.linalg.norm(per, axis=2, keepdims=True)
    mean = per.mean(axis=1)
    np.testing.assert_allclose(avg, mean / np.linalg.norm(mean, axis=1, keepdims=True), atol=1e-5)
    assert not np.allclose(avg, single, atol=1e-3)


def test_embed_text_writes_groups_once_and_keeps_images(cache, tiny):
    with open_cache(cache) as c:
        before = c.read()
        tax = c.taxonomy()
    report = embed_text(cache, template_set="single", device="cpu")
    assert "species/taxon" in report.written and "genus/sci" in report.written
    assert not any(name.endswith("com") for name in report.written)  # no common names given
    with open_cache(cache) as c:
        assert c.complete
        np.testing.assert_array_equal(c.read(), before)
        labels, emb, attrs = c.read_text_group("species/taxon")
        assert attrs["templates"] == "single" and attrs["form"] == "taxon" and attrs["rank"] == "species"
        # the model's own zero-shot scale, exp(logit_scale): 1 / 0.07 for a random initialisation (issue 11)
        assert attrs["logit_scale"] == pytest.approx(tiny.logit_scale) and tiny.logit_scale == pytest.approx(1 / 0.07, rel=1e-6)
        assert sorted(labels) == sorted(";".join(tax.lineage("species", s)) for s in range(tax.n_species))
        np.testing.assert_allclose(np.linalg.norm(emb, axis=1), 1.0, atol=1e-5)
        i = list(labels).index("Animalia;Chordata;Aves;Passeriformes;Passeridae;Passer;Passer domesticus")
        expected = tiny.encode_texts(["a photo of Animalia Chordata Aves Passeriformes Passeridae Passer domesticus."]).numpy()[0]
        np.testing.assert_allclose(emb[i], expected / np.linalg.norm(expected), atol=1e-5)
        glabels, _, _ = c.read_text_group("genus/sci")
        assert sum(lab.endswith(";Morus") for lab in glabels) == 2
    again = embed_text(cache, template_set="single", device="cpu")
    assert again.written == [] and "species/taxon" in again.kept
    with pytest.raises(CacheError, match="'single' templates; pass --force"):
        embed_text(cache, template_set="openai", forms=["sci"], ranks=["genus"], device="cpu")
    forced = embed_text(cache, template_set="openai", forms=["sci"], ranks=["genus"], device="cpu", force=True)
    assert forced.written == ["genus/sci"]
    common = {"Passer domesticus": "house sparrow"}
    withcom = embed_text(cache, template_set="single", forms=["com", "taxon_com"], device="cpu", common_names=common)
    assert withcom.written == ["species/com", "species/taxon_com"]
    with open_cache(cache) as c:
        labels, emb, _ = c.read_text_group("species/com")
        assert list(labels) == ["Animalia;Chordata;Aves;Passeriformes;Passeridae;Passer;Passer domesticus"]


def test_imported_cache_needs_the_model_named(tmp_path):
    x = np.random.default_rng(0).standard_normal((2, 32)).astype(np.float32)
    np.save(tmp_path / "x.npy", x)
    meta = pd.DataFrame({"id": ["a", "b"], "kingdom": ["K", "K"], "phylum": ["P", "P"], "class": ["C", "C"],
                         "order": ["O", "O"], "family": ["F", "F"], "genus": ["G", "G"], "species": ["x", "y"]})
    import_embeddings(tmp_path / "x.npy", tmp_path / "i.h5", metadata=meta, id_column="id")
    with pytest.raises(CacheError, match="pass --model"):
        embed_text(tmp_path / "i.h5", device="cpu")
    report = embed_text(tmp_path / "i.h5", template_set="single", forms=["sci"], ranks=["species"], device="cpu", model="random-tiny")
    assert report.written == ["species/sci"]


def test_text_logit_scale_reads_the_recorded_scale_or_falls_back(caplog):
    assert text_logit_scale([{"logit_scale": 14.5}, {"logit_scale": 14.5}]) == (14.5, "model")
    with caplog.at_level("WARNING", logger="latent.text"):
        assert text_logit_scale({"templates": "single"}, where="old.h5") == (DEFAULT_LOGIT_SCALE, "default (not recorded)")
    assert DEFAULT_LOGIT_SCALE == 100.0 and "old.h5" in caplog.text and "embed-text --force" in caplog.text
    with pytest.raises(CacheError, match="different logit scales"):
        text_logit_scale([{"logit_scale": 14.5}, {"logit_scale": 100.0}])
