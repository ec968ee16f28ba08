"""Issue 11, evaluation numbers a reviewer accepts: species (cluster) bootstrap CIs, the counts every row
rests on, one-taxon and unpredictable ranks left out of the hierarchical metrics, top-k only where it
is not trivial, and zero-shot at the model's own logit scale."""

from __future__ import annotations

import json
import logging
import math

import h5py
import numpy as np
import pandas as pd
import pytest

from latent.metrics import ONE_CLASS_NOTE, evaluate_predictions, informative_ranks, species_units
from latent.predictions import Predictions
from latent.predictors import predict_centroid, predict_knn
from latent.ranks import RANKS, Rank
from latent.stats import MIN_CLUSTERS, bootstrap_ci, bootstrap_indices, cluster_ci, percentile_interval
from latent.taxonomy import Taxonomy

N_BOOT, SEED = 400, 7


def toy_taxonomy(n_species: int, per_species: int = 1) -> Taxonomy:
    """Species ``i`` in genus/family/order ``i % 4`` and kingdom/phylum/class ``i % 2`` (a consistent
    tree); ``per_species`` rows (images) of each species, species after species."""
    rows = []
    for i in range(n_species):
        a, b = i % 2, i % 4
        rows += [[f"K{a}", f"P{a}", f"C{a}", f"O{b}", f"F{b}", f"G{b}", f"G{b} s{i}"]] * per_species
    return Taxonomy.from_lineages(rows)


def species_code(tax: Taxonomy, i: int) -> int:
    (code,) = np.flatnonzero(tax.node_names[Rank.SPECIES] == f"G{i % 4} s{i}")
    return int(code)


def constructed(tax: Taxonomy, accuracy: "list[float]", n_images: "list[int]", *, wrong_shift: int = 2,
                species: "list[int] | None" = None) -> tuple[Predictions, np.ndarray]:
    """Flat top-1 predictions: the first ``round(a * n)`` images of species ``i`` right, the others
    predicted as species ``i + wrong_shift`` (same kingdom, other genus). Returns the predictions and the
    ``(n,)`` per-image correctness at species."""
    species = list(range(len(accuracy))) if species is None else species
    truth, guess, correct = [], [], []
    for i, a, n in zip(species, accuracy, n_images):
        hits = int(round(a * n))
        truth += [species_code(tax, i)] * n
        guess += [species_code(tax, i)] * hits + [species_code(tax, (i + wrong_shift) % tax.n_species)] * (n - hits)
        correct += [1.0] * hits + [0.0] * (n - hits)
    true = tax.species_codes[np.array(truth)]
    topk = tax.species_codes[np.array(guess)][:, :, None]
    n = len(truth)
    pred = Predictions(tax, np.arange(n), np.array([f"i{j}" for j in range(n)]), true, topk,
                       np.ones(topk.shape), "test", "flat")
    return pred, np.array(correct)


def row(res, metric: str, rank: str = "all") -> pd.Series:
    m = res.metrics
    hit = m[(m["rank"] == rank) & (m["metric"] == metric)]
    assert len(hit) == 1, (rank, metric)
    return hit.iloc[0]


# ---------------------------------------------------------------------- species bootstrap
def test_two_species_get_no_ci_and_say_why():
    """Two species with accuracies 0.93 and 0.40: 200 images, but only two independent units. No
    percentile interval can be trusted on two clusters, so there is none, and the row says why."""
    tax = toy_taxonomy(4)
    pred, correct = constructed(tax, [0.93, 0.40], [100, 100], species=[0, 1], wrong_shift=2)
    res = evaluate_predictions(pred, n_boot=N_BOOT, seed=SEED)
    top1 = row(res, "top1", "species")
    assert top1["value"] == pytest.approx(0.665) and top1["n"] == 200
    assert top1["n_species"] == 2 and top1["n_taxa"] == 2
    assert math.isnan(top1["ci_low"]) and math.isnan(top1["ci_high"])
    assert top1["ci_note"] == f"no CI: 2 species (< {MIN_CLUSTERS})"
    with_value = res.metrics[res.metrics["metric"] != "n_classes"]
    assert with_value[["ci_low", "ci_high"]].isna().all().all()
    assert with_value["ci_note"].str.startswith("no CI: ").all()
    # An image bootstrap would have printed a tight interval around 0.665 (about +-0.065), although the
    # two species alone differ by 0.53: it would claim a precision two species cannot give.
    low, high = bootstrap_ci(correct, n_boot=N_BOOT, seed=SEED)
    assert high - low < 0.15


@pytest.fixture(scope="module")
def twelve():
    tax = toy_taxonomy(12)
    accuracy = [0.15, 0.95, 0.3, 0.9, 0.5, 0.85, 0.2, 0.7, 0.45, 1.0, 0.6, 0.35]
    n_images = [10 + 3 * i for i in range(12)]  # unequal species sizes
    pred, correct = constructed(tax, accuracy, n_images)
    return pred, correct, evaluate_predictions(pred, n_boot=N_BOOT, seed=SEED)


def test_twelve_species_ci_is_a_species_bootstrap_written_out_by_hand(twelve):
    pred, correct, res = twelve
    species = pred.true[:, Rank.SPECIES]
    codes = np.unique(species)
    members = [np.flatnonzero(species == c) for c in codes]
    # height of the top-1 species mistake: 0 right; wrong guesses share class (i+2 has the same parity)
    height = np.where(correct == 1, 0.0, 4.0)
    top1, severity = [], []
    for draw in bootstrap_indices(len(codes), N_BOOT, SEED):  # draw whole species, with replacement
        rows = np.concatenate([members[u] for u in draw])  # every image of a drawn species, as often as drawn
        top1.append(correct[rows].mean())
        wrong = height[rows] > 0
        severity.append(height[rows][wrong].mean() if wrong.any() else np.nan)
    t1 = row(res, "top1", "species")
    assert t1["n_species"] == 12 and t1["n_taxa"] == 12 and t1["ci_note"] == ""
    assert (t1["ci_low"], t1["ci_high"]) == pytest.approx(percentile_interval(np.array(top1)), abs=1e-12)
    sev = row(res, "mistake_severity")
    assert sev["value"] == pytest.approx(4.0)
    assert (sev["ci_low"], sev["ci_high"]) == pytest.approx(percentile_interval(np.array(severity)), abs=1e-12)
    # the shared rule of latent.stats gives the same interval
    _, unit = np.unique(species, return_inverse=True)
    low, high, note = cluster_ci(lambda w: w[:, unit] @ correct / w[:, unit].sum(axis=1), 12, n_boot=N_BOOT, seed=SEED)
    assert note == "" and (low, high) == pytest.approx((t1["ci_low"], t1["ci_high"]), abs=1e-12)
    # top1_error is 1 - top1, resampled alike
    err = row(res, "top1_error")
    assert (err["ci_low"], err["ci_high"]) == pytest.approx((1 - t1["ci_high"], 1 - t1["ci_low"]), abs=1e-12)


def test_an_image_bootstrap_would_be_too_narrow(twelve):
    """Accuracy differs between species (0.15 .. 1.0), so images of one species are correlated: the
    image bootstrap treats ~300 images as independent (width ~ sqrt(p(1-p)/n_images)), while what varies
    from one set of species to the next is the species accuracy (width ~ sd(species)/sqrt(12)). The
    species interval is the honest one; the image interval is less than half as wide."""
    _, correct, res = twelve
    t1 = row(res, "top1", "species")
    species_width = t1["ci_high"] - t1["ci_low"]
    low, high = bootstrap_ci(correct, n_boot=N_BOOT, seed=SEED)
    assert high - low < 0.5 * species_width


def test_species_units_group_rows_by_species_and_deepest_known_taxon():
    tax = toy_taxonomy(4)
    true = tax.species_codes[[0, 0, 1, 2, 2]].copy()
    true[3, Rank.SPECIES] = -1  # known to genus only: the unit of its genus, not of species 2
    true[4, Rank.SPECIES] = -1
    units, n = species_units(true)
    assert n == 3 and units[0] == units[1] and units[3] == units[4] and len({units[0], units[2], units[3]}) == 3


# ---------------------------------------------------------------------- what the numbers rest on
def test_one_class_rank_is_kept_but_marked_and_left_out_of_the_hierarchy():
    """Only kingdom K0 species (even i): kingdom, phylum and class have one true taxon."""
    tax = toy_taxonomy(24)
    evens = list(range(0, 24, 2))
    pred, _ = constructed(tax, [0.9, 0.5, 0.7, 0.2, 0.8, 0.6, 0.4, 0.3, 0.95, 0.55, 0.65, 0.1], [20] * 12,
                          species=evens, wrong_shift=2)
    res = evaluate_predictions(pred, n_boot=100, seed=0)
    for rank in ("kingdom", "phylum", "class"):
        r = row(res, "top1", rank)
        assert r["value"] == 1.0 and r["note"].startswith(ONE_CLASS_NOTE) and r["n_taxa"] == 1
        assert math.isnan(r["ci_low"]) and r["ci_note"] == "no CI: one taxon"
        assert row(res, "n_classes", rank)["value"] == 1
    order = row(res, "top1", "order")
    assert order["note"] == "" and order["n_taxa"] == 2 and order["ci_note"] == "" and order["ci_low"] < order["ci_high"]
    keep, left_out = informative_ranks(pred)
    assert keep.tolist() == [False, False, False, True, True, True, True]
    assert left_out == {"kingdom": "one taxon", "phylum": "one taxon", "class": "one taxon"}
    # hP over order..species: a wrong species (other genus, same class) shares none of those 4 nodes
    acc = (pred.topk[:, Rank.SPECIES, 0] == pred.true[:, Rank.SPECIES]).mean()
    assert row(res, "hP")["value"] == pytest.approx(acc) and row(res, "hca")["value"] == pytest.approx(acc)
    assert row(res, "hP")["note"] == "ranks left out: kingdom, phylum, class (one taxon)"
    assert set(res.metrics.loc[res.metrics["metric"] == "consistency", "rank"]) == {"family", "genus", "species", "all"}


def test_unpredictable_species_rank_is_left_out_of_recall():
    """A species-disjoint split predicts no species: the true species must not count against hR."""
    tax = toy_taxonomy(12)
    pred, _ = constructed(tax, [1.0] * 12, [5] * 12)
    topk = pred.topk.copy()
    topk[:, Rank.SPECIES] = -1  # not predictable: test species never trained
    disjoint = Predictions(tax, pred.rows, pred.ids, pred.true, topk, np.where(topk >= 0, 1.0, np.nan), "test",
                           "per-rank")
    res = evaluate_predictions(disjoint, n_boot=50)
    # every predicted rank is right: hP = hR = hF = hca = 1 (counting the species in B gave hR = 6/7)
    for name in ("hP", "hR", "hF", "hR_macro", "hca"):
        assert row(res, name)["value"] == pytest.approx(1.0), name
    assert row(res, "hR")["note"] == "ranks left out: species (not predicted)"
    assert res.info["left_out_ranks"] == {"species": "not predicted"}
    assert not ((res.metrics["rank"] == "species") & (res.metrics["metric"] == "top1")).any()


# ---------------------------------------------------------------------- top-k
def test_top5_is_not_reported_where_a_rank_has_five_or_fewer_candidates():
    tax = toy_taxonomy(12)
    rng = np.random.default_rng(0)
    true = tax.species_codes[np.repeat(np.arange(12), 4)]
    topk = np.full((48, 7, 5), -1, dtype=np.int64)
    for r in RANKS:  # a random full ranking of every rank's candidates
        n_nodes = tax.n_nodes(r)
        topk[:, r, :min(5, n_nodes)] = np.argsort(rng.random((48, n_nodes)), axis=1)[:, :5]
    for counts in (None, np.array([2, 2, 2, 4, 4, 4, 12])):
        pred = Predictions(tax, np.arange(48), np.arange(48).astype(str), true, topk, np.ones(topk.shape), "t",
                           "per-rank", n_candidates=counts)
        res = evaluate_predictions(pred, n_boot=0)
        top5 = set(res.metrics.loc[res.metrics["metric"] == "top5", "rank"])
        assert top5 == {"species"}  # 2 kingdoms or 4 genera: top5 would be trivially 1
        assert row(res, "top5", "species")["note"] == ""
        assert "hdist@5" in set(res.metrics["metric"])


def test_short_knn_lists_are_said_not_padded():
    """With 3 neighbours a kNN list names at most 3 species; top5 over 12 candidates is still reported,
    and the row says how many lists were shorter than 5 (the truth beyond them counts as missed)."""
    tax = toy_taxonomy(12, per_species=4)
    rng = np.random.default_rng(1)
    rows = np.arange(tax.n_rows)
    train, test = rows[rows % 2 == 0], rows[rows % 2 == 1]
    X = rng.standard_normal((tax.n_rows, 8))
    pred = predict_knn(X[train], train, X[test], test, tax, k_neighbors=3, mode="per-rank")
    assert pred.n_candidates.tolist() == [2, 2, 2, 4, 4, 4, 12]
    lengths = (pred.topk[:, Rank.SPECIES] >= 0).sum(axis=1)
    assert lengths.max() <= 3
    assert pred.info["rows_with_short_lists"]["species"] == len(test)
    res = evaluate_predictions(pred, n_boot=0)
    note = row(res, "top5", "species")["note"]
    assert note.startswith(f"top5: {len(test)} of {len(test)} rows rank fewer than 5 taxa")
    assert row(res, "hdist@5")["note"].startswith("hdist@5 (mean over the listed species)")
    # centroid: every candidate is ranked, no short lists
    cpred = predict_centroid(X[train], train, X[test], test, tax, mode="flat")
    assert cpred.n_candidates.tolist() == [2, 2, 2, 4, 4, 4, 12]
    assert row(evaluate_predictions(cpred, n_boot=0), "top5", "species")["note"] == ""


# ---------------------------------------------------------------------- zero-shot logit scale
@pytest.fixture(scope="module")
def zero_shot_cache(tmp_path_factory):
    """An imported 32-d cache (random-tiny's width) of 12 images of 4 built-in species, with species
    text embedded by the random-tiny model (whose logit scale is its initial 1 / 0.07)."""
    from latent.importer import import_embeddings
    from latent.synthetic import builtin_taxonomy_path
    from latent.text import embed_text

    tmp = tmp_path_factory.mktemp("zs")
    species = ["Passer domesticus", "Passer montanus", "Canis lupus", "Quercus robur"]
    meta = pd.DataFrame({"id": [f"{s}/{k}" for s in species for k in range(3)],
                         "species": [s for s in species for _ in range(3)]})
    meta.to_csv(tmp / "meta.csv", index=False)
    np.save(tmp / "emb.npy", np.random.default_rng(0).standard_normal((12, 32)).astype(np.float32))
    import_embeddings(tmp / "emb.npy", tmp / "c.h5", metadata=tmp / "meta.csv", id_column="id",
                      taxonomy=builtin_taxonomy_path(), join_on="species=species")
    embed_text(tmp / "c.h5", template_set="single", forms=["taxon"], ranks=["species"], model="random-tiny",
               device="cpu")
    return tmp / "c.h5"


def _expected_top1_scores(cache_path, scale: float) -> np.ndarray:
    from latent.cache import open_cache

    with open_cache(cache_path) as cache:
        X = cache.read(None, normalize=True).astype(np.float64)
        _, emb, _ = cache.read_text_group("species/taxon")
    emb = emb.astype(np.float64) / np.linalg.norm(emb, axis=1, keepdims=True)
    logits = scale * (X / np.linalg.norm(X, axis=1, keepdims=True)) @ emb.T
    p = np.exp(logits - logits.max(axis=1, keepdims=True))
    return (p / p.sum(axis=1, keepdims=True)).max(axis=1)


def test_zero_shot_uses_the_models_logit_scale(zero_shot_cache, tmp_path):
    from latent.cache import open_cache
    from latent.evaluate import evaluate_cache
    from latent.models import load_model

    scale = load_model("random-tiny", device="cpu").logit_scale
    assert scale == pytest.approx(1 / 0.07, rel=1e-6)
    with open_cache(zero_shot_cache) as cache:
        assert cache.read_text_group("species/taxon")[2]["logit_scale"] == pytest.approx(scale)
    report = evaluate_cache(zero_shot_cache, tmp_path / "zs", method="zero-shot", n_boot=20)
    run = json.loads((tmp_path / "zs" / "run.json").read_text())
    assert run["logit_scale"] == pytest.approx(scale) and run["logit_scale_source"] == "model"
    assert run["predictor_info"]["logit_scale"] == pytest.approx(scale)
    pred = pd.read_parquet(tmp_path / "zs" / "predictions.parquet").set_index("id")
    with open_cache(zero_shot_cache) as cache:
        ids = cache.ids
    np.testing.assert_allclose(pred.loc[ids, "top1_score"], _expected_top1_scores(zero_shot_cache, scale), rtol=1e-5)
    # 4 species: no CI, and the summary says why
    assert "no CI: 4 species (< 10)" in report.summary()


def test_zero_shot_falls_back_to_clip_scale_for_old_caches(zero_shot_cache, tmp_path, caplog):
    import shutil

    from latent.cache import open_cache
    from latent.evaluate import evaluate_cache

    old = tmp_path / "old.h5"
    shutil.copy(zero_shot_cache, old)
    with h5py.File(old, "r+") as f:  # a cache made before latent recorded the scale
        del f["text/species/taxon"].attrs["logit_scale"]
    with caplog.at_level(logging.WARNING, logger="latent.text"):
        evaluate_cache(old, tmp_path / "zs", method="zero-shot", n_boot=20)
    assert any("do not record the model's logit scale" in r.getMessage() for r in caplog.records)
    run = json.loads((tmp_path / "zs" / "run.json").read_text())
    assert run["logit_scale"] == 100.0 and run["logit_scale_source"] == "default (not recorded)"
    with open_cache(old) as cache:
        ids = cache.ids
    pred = pd.read_parquet(tmp_path / "zs" / "predictions.parquet").set_index("id")
    np.testing.assert_allclose(pred.loc[ids, "top1_score"], _expected_top1_scores(old, 100.0), rtol=1e-5)
