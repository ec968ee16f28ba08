"""The text side (issue 16): text geometry with a random-token control, and image-text alignment.

Constructed answers with a deterministic bag-of-words hashing encoder (each word a fixed random vector,
a text the sum of its words' vectors), so texts that share words are closer: a lineage text ("K0 P0_0 ...
s1") shares its ancestors' words with its relatives by construction.
"""

from __future__ import annotations

import hashlib

import numpy as np
import pandas as pd
import pytest

from latent.errors import InputError
from latent.probes.base import ProbeData
from latent.probes.text_side import (image_text_alignment, key_distances, node_keys, random_token_names,
                                     text_geometry, texts_by_rank)
from latent.ranks import Rank
from latent.stats import ALPHA
from latent.synthetic import balanced_taxonomy
from latent.text import taxon_texts

SEEDS = (0, 1, 2)
LONG = ["rank", "metric", "value", "ci_low", "ci_high", "n", "null_mean", "p_value", "permutations", "unit"]


def hashing_encoder(salt: int = 0, dim: int = 64):
    """``list[str] -> (n, dim)``: the sum of a fixed random vector per word (salted), deterministic."""

    def encode(texts: list[str]) -> np.ndarray:
        out = np.zeros((len(texts), dim))
        for i, text in enumerate(texts):
            for word in text.split():
                h = hashlib.blake2b(f"{salt}:{word}".encode(), digest_size=8).digest()
                out[i] += np.random.default_rng(int.from_bytes(h, "little")).standard_normal(dim)
        return out

    return encode


@pytest.fixture(scope="module")
def tax():
    return balanced_taxonomy((1, 1, 2, 3, 2, 2, 3))  # 72 species, 3 orders per class, 3 species per genus


# ---------------------------------------------------------------------- helpers
def test_random_tokens_share_exactly_the_ancestors_words():
    lineages = [["K", "P", "C1", "O1", "F", "G", "G a"], ["K", "P", "C1", "O1", "F", "G", "G b"],
                ["K", "P", "C2", "O1", "F", "G", "G a"], ["K", "P", "C2", "", "F2", "G2", "G2 c"]]
    texts = random_token_names(lineages, seed=3)
    words = [t.split() for t in texts]
    assert [len(w) for w in words] == [7, 7, 7, 6]  # the empty order gets no word
    assert words[0][:6] == words[1][:6] and words[0][6] != words[1][6]
    # homonyms under other parents ("O1", "F", "G", "G a" under C2) get other tokens
    assert words[0][:2] == words[2][:2] and not set(words[0][2:]) & set(words[2][2:])
    assert not set(" ".join(lineages[0]).split()) & set(words[0])  # no real name survives
    assert random_token_names(lineages[::-1], seed=3) == texts[::-1]  # tokens follow nodes, not row order
    assert random_token_names(lineages, seed=4) != texts


def test_key_distances_equal_the_taxonomy_distances(tax):
    assert np.array_equal(key_distances(node_keys(tax, Rank.SPECIES)), tax.distances())
    genus = key_distances(node_keys(tax, Rank.GENUS))
    assert genus.shape == (24, 24) and (np.diag(genus) == 0).all()
    assert sorted(np.unique(genus[np.triu_indices(24, 1)]).tolist()) == [2, 3, 4, 5]


# ---------------------------------------------------------------------- text geometry
@pytest.mark.parametrize("seed", SEEDS)
def test_text_geometry_planted_text_and_prefix_control_high_shuffled_not(tax, seed):
    encode = hashing_encoder(salt=seed)
    keys, texts = taxon_texts(tax, Rank.SPECIES, "taxon")
    frame = text_geometry(keys, encode(texts), tax, encode_text=encode, permutations=199, n_boot=200, seed=seed,
                          form="taxon")
    assert list(frame.columns[:6]) == LONG[:6] and set(LONG) <= set(frame.columns)
    frame = frame.set_index("metric")
    text, control = frame.loc["text_mantel_r_spearman"], frame.loc["text_control_mantel_r_spearman"]
    for row in (text, control):  # the words shared with relatives: high, significant, CI above 0
        assert row["value"] > 0.5 and row["p_value"] <= ALPHA and row["ci_low"] > 0.3
        assert row["permutations"] == 199 and abs(row["null_mean"]) < 0.1 and row["unit"] == "species pair"
        assert row["n"] == 72 and row["text_rank"] == "species" and row["form"] == "taxon"
    # prefixes alone explain it: the difference is small, and its paired CI covers 0 or is narrow
    diff = frame.loc["text_minus_control_r"]
    assert diff["value"] == pytest.approx(text["value"] - control["value"])
    assert abs(diff["value"]) < 0.15 and diff["ci_low"] <= diff["value"] <= diff["ci_high"]
    assert np.isnan(diff["p_value"])

    order = np.random.default_rng(seed).permutation(len(texts))  # names shuffled among species: no tree
    shuffled = text_geometry(keys, encode([texts[i] for i in order]), permutations=199, n_boot=200,
                             seed=seed).set_index("metric").loc["text_mantel_r_spearman"]
    assert shuffled["p_value"] > ALPHA and shuffled["ci_low"] < 0 < shuffled["ci_high"]
    assert abs(shuffled["value"]) < 0.1


def test_text_geometry_without_encoder_says_there_is_no_control(tax):
    keys, texts = taxon_texts(tax, Rank.SPECIES, "sci")
    frame = text_geometry(keys, hashing_encoder()(texts), permutations=9, n_boot=0).set_index("metric")
    control = frame.loc["text_control_mantel_r_spearman"]
    assert np.isnan(control["value"]) and "no text encoder" in control["note"]
    assert frame.loc["text_mantel_r_spearman", "ci_note"] == "no CI: 0 bootstrap resamples"


def test_text_geometry_taxonomy_sources_agree(tax):
    keys, texts = taxon_texts(tax, Rank.GENUS, "taxon")
    T = hashing_encoder()(texts)
    by_keys = text_geometry(keys, T, permutations=19, n_boot=0)
    by_tax = text_geometry(keys, T, tax, permutations=19, n_boot=0)
    by_fn = text_geometry(keys, T, key_distances, permutations=19, n_boot=0)
    for other in (by_tax, by_fn):
        pd.testing.assert_frame_equal(by_keys, other)
    assert by_keys.loc[0, "text_rank"] == "genus" and by_keys.loc[0, "n"] == 24


def test_text_geometry_refuses_bad_input(tax):
    keys, texts = taxon_texts(tax, Rank.SPECIES, "taxon")
    T = hashing_encoder()(texts)
    with pytest.raises(InputError, match="'T' parameter of text_geometry"):
        text_geometry(keys, T[:-1])
    with pytest.raises(InputError, match="not in the taxonomy"):
        text_geometry(["X;Y;Z;O;F;G;G s"] + keys[1:], T, tax)
    with pytest.raises(InputError, match="distinct lineage keys"):
        text_geometry([keys[0]] + keys[:-1], T)
    with pytest.raises(InputError, match="encode_text output"):
        text_geometry(keys, T, encode_text=lambda texts: np.zeros((len(texts) - 1, 4)), permutations=0)


# ---------------------------------------------------------------------- image-text alignment
def _texts(tax, ranks=("order", "family", "genus", "species"), salt=0):
    encode = hashing_encoder(salt=salt)
    out = {}
    for rank in ranks:
        keys, texts = taxon_texts(tax, rank, "taxon")
        out[rank] = (np.array(keys), encode(texts))
    return out


def _images_near_texts(tax, texts, source, seed, per_species=4, noise=0.1):
    """Images of species ``s`` placed near the species text of ``source[s]`` (unit text + noise)."""
    T = texts["species"][1] / np.linalg.norm(texts["species"][1], axis=1, keepdims=True)
    rng = np.random.default_rng(seed)
    species = np.repeat(np.arange(tax.n_species), per_species)
    return T[np.asarray(source)[species]] + noise * rng.standard_normal((species.size, T.shape[1])), species


@pytest.mark.parametrize("seed", SEEDS)
def test_images_near_their_own_text_have_positive_margins(tax, seed):
    texts = _texts(tax, salt=seed)
    X, species = _images_near_texts(tax, texts, np.arange(tax.n_species), seed)
    frame = image_text_alignment(X, species, tax.species_codes, texts, taxonomy=tax, permutations=99, n_boot=200,
                                 seed=seed)
    assert set(LONG) <= set(frame.columns)
    assert list(frame["rank"].unique()) == ["order", "family", "genus", "species"]
    rows = frame.set_index(["rank", "metric"])
    for rank in ("order", "family", "genus", "species"):
        margin, score = rows.loc[(rank, "text_margin")], rows.loc[(rank, "text_rank_score")]
        assert margin["value"] > 0.05 and margin["p_value"] <= ALPHA and margin["n"] == 72
        assert score["value"] > 0.9 and score["p_value"] <= ALPHA
        assert abs(score["null_mean"] - 0.5) < 0.05 and margin["unit"] == "species"
        if rank == "order":  # 6 orders: the CI, over the rank's taxa, needs 10
            assert np.isnan(margin["ci_low"]) and margin["ci_note"] == "no CI: 6 order taxa (< 10)"
        else:
            assert margin["ci_low"] > 0.02 and score["ci_low"] > 0.8
        mantel = rows.loc[(rank, "image_text_mantel_r_spearman")]
        assert mantel["value"] > 0.8 and mantel["p_value"] <= ALPHA
    assert rows.loc[("genus", "text_margin"), "ci_unit"] == "genus taxa"
    assert rows.loc[("genus", "text_margin"), "n_ci_units"] == 24
    assert rows.loc[("species", "text_margin"), "ci_unit"] == "species"
    species_mantel = rows.loc[("species", "image_text_mantel_r_spearman")]
    assert species_mantel["unit"] == "species pair" and species_mantel["n"] == 72 and species_mantel["ci_low"] > 0.5
    order_mantel = rows.loc[("order", "image_text_mantel_r_spearman")]
    assert order_mantel["n"] == 6 and order_mantel["ci_note"] == "no CI: 6 order taxa (< 10)"
    assert order_mantel["unit"] == "taxon pair"


@pytest.fixture(scope="module")
def shuffled_frames():
    """Per seed: images of each species placed near the text of a random other species (a permutation)."""
    # every family, genus and species has one sibling: the margin expected by chance is 0; 12 families
    tax = balanced_taxonomy((1, 1, 2, 3, 2, 2, 2))
    frames = {}
    for seed in SEEDS:
        texts = _texts(tax, ranks=("family", "genus", "species"), salt=seed)
        source = np.random.default_rng(100 + seed).permutation(tax.n_species)
        X, species = _images_near_texts(tax, texts, source, seed)
        frames[seed] = image_text_alignment(X, species, tax.species_codes, texts, taxonomy=tax, permutations=99,
                                            n_boot=200, seed=seed).set_index(["rank", "metric"])
    return frames


@pytest.mark.parametrize("seed", SEEDS)
def test_images_of_shuffled_species_have_margins_near_zero(shuffled_frames, seed):
    rows = shuffled_frames[seed]
    for rank in ("family", "genus", "species"):
        margin, score = rows.loc[(rank, "text_margin")], rows.loc[(rank, "text_rank_score")]
        assert abs(margin["value"]) < 0.04 and abs(margin["null_mean"]) < 0.01  # planted: > 0.09
        assert abs(score["value"] - 0.5) < 0.15 and margin["chance"] == 0.0 and score["chance"] == 0.5
        assert margin["ci_low"] < 0.01 and score["ci_low"] < 0.55  # never the planted answer's CIs


def test_shuffled_species_are_rarely_significant_and_cis_cover_chance(shuffled_frames):
    """Each of the 27 p-values (3 seeds x 3 ranks x 3 statistics) is one draw under the null, so a few
    fall below ALPHA by chance; pooled, the rejections and the CIs that miss chance stay rare."""
    pooled = pd.concat(shuffled_frames.values())
    assert (pooled["p_value"] <= ALPHA).mean() <= 0.15
    covered = (pooled["ci_low"] <= pooled["chance"]) & (pooled["chance"] <= pooled["ci_high"])
    has_ci = pooled["ci_low"].notna()
    assert has_ci.all() and covered[has_ci].mean() >= 0.85


def test_margin_chance_level_is_below_zero_with_several_siblings(tax):
    """Three species per genus: the best of two sibling texts beats a random own text; the null says so."""
    texts = _texts(tax, ranks=("species",))
    source = np.random.default_rng(5).permutation(tax.n_species)
    X, species = _images_near_texts(tax, texts, source, 0)
    row = image_text_alignment(X, species, tax.species_codes, texts, taxonomy=tax, permutations=99,
                               n_boot=100).set_index("metric").loc["text_margin"]
    assert row["null_mean"] < -0.01 and row["p_value"] > ALPHA


def test_margin_and_rank_score_by_hand():
    tax = balanced_taxonomy((1, 1, 1, 1, 1, 1, 3))  # one genus, three species
    T = np.eye(3)
    X = np.array([[1.0, 0.5, 0.0], [0.2, 0.0, 1.0]])  # image 0 of species 0, image 1 of species 2
    frame = image_text_alignment(X, np.array([0, 2]), tax.species_codes, {"species": (np.arange(3), T)},
                                 permutations=0, n_boot=0).set_index("metric")
    cos = X / np.linalg.norm(X, axis=1, keepdims=True)
    margins = [cos[0, 0] - cos[0, 1], cos[1, 2] - cos[1, 0]]
    assert frame.loc["text_margin", "value"] == pytest.approx(np.mean(margins))
    assert frame.loc["text_rank_score", "value"] == 1.0
    assert frame.loc["text_margin", "n"] == 2 and frame.loc["text_margin", "permutations"] == 0
    assert "fewer than 3" in frame.loc["image_text_mantel_r_spearman", "note"]  # 2 species with images


def test_string_keys_and_node_codes_agree_and_probe_data_feeds_it(tax):
    texts = _texts(tax, ranks=("genus", "species"))
    X, species = _images_near_texts(tax, texts, np.arange(tax.n_species), 0)
    data = ProbeData.from_arrays(X, _row_taxonomy(tax, species))
    by_str = image_text_alignment(data.X, data.species, data.codes, texts, taxonomy=data.taxonomy,
                                  permutations=19, n_boot=50)
    as_codes = {r: (np.arange(len(k)), T) for r, (k, T) in texts.items()}  # node order = taxon_texts order
    by_int = image_text_alignment(data.X, data.species, data.codes, as_codes, permutations=19, n_boot=50)
    pd.testing.assert_frame_equal(by_str, by_int, rtol=1e-5)
    with pytest.raises(InputError, match="'taxonomy' parameter of image_text_alignment"):
        image_text_alignment(data.X, data.species, data.codes, texts, permutations=0)
    with pytest.raises(InputError, match="dimension"):
        image_text_alignment(data.X[:, :10], data.species, data.codes, texts, taxonomy=tax, permutations=0)


def _row_taxonomy(tax, species):
    from latent.taxonomy import Taxonomy

    return Taxonomy.from_lineages(tax.species_table().to_numpy()[species])


def test_texts_by_rank_reads_one_form():
    class FakeCache:
        groups = {"species/taxon": (np.array(["a;b"]), np.ones((1, 2))), "species/sci": ((), ()),
                  "genus/taxon": (np.array(["a"]), np.ones((1, 2)))}

        def text_groups(self):
            return sorted(self.groups)

        def read_text_group(self, name):
            keys, emb = self.groups[name]
            return keys, emb, {}

    out = texts_by_rank(FakeCache(), "taxon")
    assert sorted(out) == ["genus", "species"] and out["species"][0].tolist() == ["a;b"]


def test_text_geometry_statistic_and_null_are_the_mantel_of_the_alignment_probe(tax):
    """r is scipy's Spearman of the condensed matrices; the null permutes whole species with the shared
    species_permutations, so r and p equal latent's mantel on those permutations."""
    from scipy.spatial.distance import pdist
    from scipy.stats import spearmanr

    from latent.probes.alignment import condensed, mantel
    from latent.probes.base import species_permutations

    keys, texts = taxon_texts(tax, Rank.SPECIES, "taxon")
    T = hashing_encoder(salt=7)(texts)
    row = text_geometry(keys, T, permutations=49, n_boot=0, seed=3).iloc[0]
    D_text = pdist(T, "cosine")
    assert row["value"] == pytest.approx(spearmanr(condensed(tax.distances()), D_text)[0], abs=1e-9)
    perms = np.array(list(species_permutations(72, 49, 3)))
    from scipy.spatial.distance import squareform

    ref = mantel(tax.distances().astype(float), squareform(D_text), method="spearman", perms=perms)
    assert row["p_value"] == pytest.approx(ref.p_value) and row["null_mean"] == pytest.approx(ref.null.mean(), abs=1e-9)


@pytest.fixture
def text_probe_specs(monkeypatch):
    """The two probes in the registry (as the lead will add them), so ProbeOptions accepts their settings."""
    from latent import probes

    specs = dict(probes.PROBES)
    for name in ("text_geometry", "image_text_alignment"):
        specs[name] = probes.ProbeSpec(name, f"latent.probes.text_side:probe_{name}", name, default=False,
                                       settings=("texts", "encode_text", "n_boot", "n_boot_rank", "form"))
    monkeypatch.setattr(probes, "PROBES", specs)
    return specs


def test_probe_adapters_read_their_settings_and_the_probe_data(tax, text_probe_specs):
    from latent.probes.base import ProbeOptions

    texts = _texts(tax, ranks=("species", "genus"))
    X, species = _images_near_texts(tax, texts, np.arange(tax.n_species), 0)
    data = ProbeData.from_arrays(X[8:], _row_taxonomy(tax, species[8:]))  # 2 species without images
    assert data.n_species == 70
    options = ProbeOptions(permutations=19, seed=1, extra={"text_geometry": {"n_boot": 0, "form": "taxon"},
                                                           "image_text_alignment": {"n_boot": 50}})
    from latent.probes.text_side import probe_image_text_alignment, probe_text_geometry

    geometry = probe_text_geometry(data, options, texts, encode_text=hashing_encoder())
    frame = geometry.to_frame()
    assert (frame["probe"] == "text_geometry").all() and (frame["n"] == 70).all()
    assert geometry.info["species_with_text"] == 70 and frame["ci_low"].isna().all()  # n_boot 0
    assert (frame["permutations"].iloc[:2] == 19).all()
    align = probe_image_text_alignment(data, options, texts).to_frame()
    assert list(align["rank"].unique()) == ["genus", "species"]  # top rank first, whatever the dict order
    assert align.set_index(["rank", "metric"]).loc[("species", "text_margin"), "n"] == 70
    with pytest.raises(InputError, match="embed-text"):
        probe_text_geometry(data, options, {"genus": texts["genus"]})


def test_identical_texts_are_degenerate_not_an_error(tax):
    keys, _ = taxon_texts(tax, Rank.SPECIES, "taxon")
    frame = text_geometry(keys, np.ones((72, 8)), encode_text=hashing_encoder(), permutations=19,
                          n_boot=50).set_index("metric")
    text = frame.loc["text_mantel_r_spearman"]
    assert text["degenerate"] and np.isnan(text["value"]) and np.isnan(text["ci_low"])
    assert text["permutations"] == 0 and "constant" in text["ci_note"]
    control = frame.loc["text_control_mantel_r_spearman"]  # the control is still measured
    assert control["value"] > 0.5 and control["ci_low"] > 0.3
    assert frame.loc["text_minus_control_r", "degenerate"]


def test_text_probes_run_from_the_registry_with_texts_as_a_setting(tax, text_probe_specs):
    from latent.probes.base import ProbeOptions

    texts = _texts(tax, ranks=("genus", "species"))
    X, species = _images_near_texts(tax, texts, np.arange(tax.n_species), 0)
    data = ProbeData.from_arrays(X, _row_taxonomy(tax, species))
    options = ProbeOptions(permutations=9, extra={
        "text_geometry": {"texts": texts, "encode_text": hashing_encoder(), "n_boot": 0},
        "image_text_alignment": {"texts": texts, "n_boot": 0}})
    geometry = text_probe_specs["text_geometry"].load()(data, options).to_frame().set_index("metric")
    assert geometry.loc["text_control_mantel_r_spearman", "value"] > 0.5
    align = text_probe_specs["image_text_alignment"].load()(data, options).to_frame()
    assert len(align) == 6 and (align["permutations"] == 9).all()
    with pytest.raises(InputError, match="embed-text"):
        text_probe_specs["image_text_alignment"].load()(data, ProbeOptions(permutations=0))


def test_cli_probes_read_the_caches_text_groups(tmp_path, capsys):
    import json

    import numpy as np

    from latent.cache import open_cache
    from latent.cli import main
    from latent.probes.text_side import node_keys
    from latent.synthetic import make_hierarchical, write_synthetic

    data = make_hierarchical(per_species=5, dim=16, signal=2.0, seed=0)
    cache_path = write_synthetic(tmp_path / "s.h5", data)
    with open_cache(cache_path) as cache:
        tax = cache.taxonomy()
        keys = node_keys(tax, "species")
        # each species' "text" is the mean of its images: images sit near their own text
        species = tax.codes("species")
        X = cache.read(normalize=True)
        index = {k: i for i, k in enumerate(node_keys(tax, "species"))}
        means = np.stack([X[species == s].mean(0) for s in np.unique(species)])
        provenance = cache.provenance
    from latent.cache import CacheWriter

    with CacheWriter.open(cache_path, provenance, mode="append") as writer:
        writer.write_text_group("species/taxon", keys, means[[index[k] for k in keys]])
    out = tmp_path / "p"
    assert main(["probe", str(cache_path), "--probes", "image_text_alignment", "--permutations", "99",
                 "--out", str(out)]) == 0
    assert "text_margin" in capsys.readouterr().out
    record = json.loads((out / "run.json").read_text())
    assert record["options"]["extra"]["image_text_alignment"]["texts"] == "/text/<rank>/taxon: species"
    import pandas as pd

    rows = pd.read_csv(out / "metrics.csv").set_index(["rank", "metric"])
    assert rows.loc[("species", "text_margin"), "value"] > 0 and rows.loc[("species", "text_rank_score"), "value"] > 0.9
