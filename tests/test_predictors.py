"""Predictors: zero-shot (flat and per-rank, clades), kNN, SimpleShot centroids, linear probes."""

from __future__ import annotations

import math

import numpy as np
import pytest

from latent.errors import InputError
from latent.predictions import Predictions, true_codes
from latent.predictors import predict_centroid, predict_knn, predict_linear, predict_zero_shot
from latent.ranks import RANKS, Rank
from latent.splits import kshot_split, random_split
from latent.synthetic import make_hierarchical
from latent.taxonomy import Taxonomy


def accuracy(pred: Predictions, rank: "Rank | int") -> float:
    r = int(rank)
    labelled = pred.true[:, r] >= 0
    return float((pred.topk[labelled, r, 0] == pred.true[labelled, r]).mean())


def lineage_keys(tax: Taxonomy, rank: "Rank | int") -> list[str]:
    return [";".join(tax.lineage(rank, node)) for node in range(tax.n_nodes(rank))]


def node_texts(data, rank: "Rank | int") -> tuple[list[str], np.ndarray]:
    """Text embeddings for every node at ``rank``: the mean of the planted species vectors below it."""
    tax = data.taxonomy
    codes = tax.species_codes[:, int(rank)]
    means = np.stack([data.species_means[codes == node].mean(axis=0) for node in range(tax.n_nodes(rank))])
    return lineage_keys(tax, rank), means / np.linalg.norm(means, axis=1, keepdims=True)


@pytest.fixture(scope="module")
def strong(planted):
    train, test = random_split(planted.taxonomy, test_fraction=0.3, seed=0)
    return planted, train, test


@pytest.fixture(scope="module")
def texts(strong):
    data = strong[0]
    return {r.label: node_texts(data, r) for r in RANKS}


def softmax(z: np.ndarray) -> np.ndarray:
    e = np.exp(z - z.max(axis=-1, keepdims=True))
    return e / e.sum(axis=-1, keepdims=True)


# ------------------------------------------------------------------------------------------ zero-shot
@pytest.mark.parametrize("mode", ["flat", "per-rank"])
def test_zero_shot_finds_planted_species(strong, texts, mode):
    data, _, test = strong
    pred = predict_zero_shot(data.embeddings[test], test, data.taxonomy, texts, mode=mode)
    assert pred.method == "zero-shot" and pred.mode == mode and pred.k == 5
    for r in RANKS:
        assert accuracy(pred, r) > 0.95, (mode, r)


def test_zero_shot_flat_sums_species_probabilities(strong, texts):
    data, _, test = strong
    tax = data.taxonomy
    keys, emb = texts["species"]
    pred = predict_zero_shot(data.embeddings[test], test, tax, {"species": (keys, emb)}, mode="flat", logit_scale=20.0)
    x = data.embeddings[test[:6]].astype(np.float64)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    probs = softmax(20.0 * x @ emb.T)  # (6, S): species s is column s (keys are in node order)
    for i in range(6):
        order = np.argsort(-probs[i])[:5]
        np.testing.assert_array_equal(pred.topk[i, Rank.SPECIES], order)
        np.testing.assert_allclose(pred.scores[i, Rank.SPECIES], probs[i, order], atol=1e-6)
        for r in (Rank.KINGDOM, Rank.CLASS, Rank.FAMILY, Rank.GENUS):
            for node, score in zip(pred.topk[i, r], pred.scores[i, r]):
                if node < 0:
                    continue
                by_hand = probs[i, tax.species_codes[:, r] == node].sum()
                assert abs(score - by_hand) < 1e-6, (i, r, node)
        kingdom_total = sum(probs[i, tax.species_codes[:, 0] == node].sum() for node in range(tax.n_nodes(0)))
        assert abs(np.nansum(pred.scores[i, Rank.KINGDOM]) - kingdom_total) < 1e-6  # 4 kingdoms, all in the top 5


@pytest.mark.parametrize("mode", ["flat", "per-rank"])
def test_zero_shot_clade_restriction_predicts_inside_the_clade(strong, texts, mode):
    data, _, test = strong
    tax = data.taxonomy
    aves = tax.find("class", "Aves")[0]
    pred = predict_zero_shot(data.embeddings[test], test, tax, texts, mode=mode, clade=("class", "Aves"))
    assert pred.info["clade"] == "class:Aves"
    lineage = tax.species_codes
    for r in RANKS:
        predicted = pred.topk[:, r][pred.topk[:, r] >= 0]
        assert len(predicted)
        if r <= Rank.CLASS:  # the clade and the ranks above: its own lineage only
            expected = lineage[lineage[:, Rank.CLASS] == aves][0, r]
            assert set(predicted.tolist()) == {expected}
        else:
            inside = set(lineage[lineage[:, Rank.CLASS] == aves, r].tolist())
            assert set(predicted.tolist()) <= inside, r
    # n_candidates (issue 11): the clade's own lineage is one candidate per rank in per-rank mode; below it
    # (and at every rank in flat mode, summed up from the bird species) the taxa inside the clade
    birds_lineage = lineage[lineage[:, Rank.CLASS] == aves]
    inside_counts = [len(np.unique(birds_lineage[:, r])) for r in RANKS]
    assert pred.n_candidates.tolist() == inside_counts  # the clade lineage is 1 node at kingdom..class either way
    # images of birds are still recognised inside the clade
    birds = tax.codes("class")[test] == aves
    assert (pred.topk[birds, Rank.SPECIES, 0] == pred.true[birds, Rank.SPECIES]).mean() > 0.95


def test_zero_shot_errors_and_ignored_keys(strong, texts):
    data, _, test = strong
    tax = data.taxonomy
    X = data.embeddings[test]
    with pytest.raises(InputError, match="needs text embeddings for rank.*genus.*Run latent embed-text first"):
        predict_zero_shot(X, test, tax, {r: texts[r] for r in texts if r != "genus"}, mode="per-rank")
    with pytest.raises(InputError, match="rank\\(s\\) species.*Run latent embed-text first"):
        predict_zero_shot(X, test, tax, {"genus": texts["genus"]}, mode="flat")
    with pytest.raises(InputError, match="clade class 'Reptilia' cannot restrict the predictions: No class named 'Reptilia'"):
        predict_zero_shot(X, test, tax, texts, clade=("class", "Reptilia"))
    # a clade whose taxa have no text is empty
    keys, emb = texts["species"]
    not_insects = [i for i, key in enumerate(keys) if ";Insecta;" not in key]
    with pytest.raises(InputError, match="clade class 'Insecta' holds no species with a text embedding"):
        predict_zero_shot(X, test, tax, {"species": ([keys[i] for i in not_insects], emb[not_insects])},
                          clade=("class", "Insecta"))
    with pytest.raises(InputError, match="None of the 1 species texts names a taxon"):
        predict_zero_shot(X, test, tax, {"species": (["Animalia;Nope"], emb[:1])})
    with pytest.raises(InputError, match="mode='flat' needs the species"):
        predict_zero_shot(X, test, tax, texts, predict_species=False)
    # keys not in the taxonomy are ignored; taxa without text are not candidates
    extra = (keys + ["Animalia;Chordata;Aves;X;Y;Z;Z z"], np.vstack([emb, np.ones((1, emb.shape[1]))]))
    a = predict_zero_shot(X, test, tax, {"species": (keys, emb)})
    b = predict_zero_shot(X, test, tax, {"species": extra})
    np.testing.assert_array_equal(a.topk, b.topk)
    half = (keys[::2], emb[::2])
    c = predict_zero_shot(X, test, tax, {"species": half})
    assert set(c.topk[:, Rank.SPECIES].ravel().tolist()) <= set(range(0, tax.n_species, 2))


def test_zero_shot_chunks_give_the_same_answer(strong, texts):
    data, _, test = strong
    one = predict_zero_shot(data.embeddings[test], test, data.taxonomy, texts, mode="per-rank")
    many = predict_zero_shot(data.embeddings[test], test, data.taxonomy, texts, mode="per-rank", chunk_size=7)
    np.testing.assert_array_equal(one.topk, many.topk)
    np.testing.assert_allclose(one.scores, many.scores, atol=1e-12)


# ------------------------------------------------------------------------------------------ kNN
@pytest.mark.parametrize("mode", ["per-rank", "flat"])
def test_knn_strong_signal_and_no_signal(mode, planted, unplanted):
    for data, signal, low, high in ((planted, 1.0, 0.9, 1.01), (unplanted, 0.0, 0.0, 0.1)):
        train, test = random_split(data.taxonomy, seed=0)
        pred = predict_knn(data.embeddings[train], train, data.embeddings[test], test, data.taxonomy, mode=mode)
        assert low < accuracy(pred, Rank.SPECIES) < high, (mode, signal)  # chance is 1/47
        if signal:
            assert accuracy(pred, Rank.FAMILY) > 0.9


def test_knn_hand_computed_weighted_votes():
    tax = Taxonomy.from_lineages([
        ["K", "P", "C", "O", "F", "G1", "G1 a"],
        ["K", "P", "C", "O", "F", "G1", "G1 b"],
        ["K", "P", "C", "O", "F", "G1", ""],  # known to the genus only: no vote at species
        ["K", "P", "C", "O", "F", "G2", "G2 c"],
        ["K", "P", "C", "O", "F", "G1", "G1 a"],  # the test row
    ])
    angles = np.array([0.0, 0.1, 0.2, np.pi])
    X_train = 3.0 * np.stack([np.cos(angles), np.sin(angles)], axis=1)  # norms are irrelevant (cosine)
    X_test = np.array([[math.cos(0.03), math.sin(0.03)]])
    T = 1.0
    w = [math.exp(math.cos(0.03 - a) / T) for a in angles]
    pred = predict_knn(X_train, np.arange(4), X_test, np.array([4]), tax, k_neighbors=4, temperature=T, k=3)
    a, b, c = (int(tax.codes("species")[i]) for i in (0, 1, 3))
    g1, g2 = int(tax.codes("genus")[0]), int(tax.codes("genus")[3])
    np.testing.assert_array_equal(pred.topk[0, Rank.SPECIES], [a, b, c])
    species_total = w[0] + w[1] + w[3]
    np.testing.assert_allclose(pred.scores[0, Rank.SPECIES], [w[0] / species_total, w[1] / species_total, w[3] / species_total], atol=1e-12)
    np.testing.assert_array_equal(pred.topk[0, Rank.GENUS], [g1, g2, -1])
    np.testing.assert_allclose(pred.scores[0, Rank.GENUS, :2], [(w[0] + w[1] + w[2]) / sum(w), w[3] / sum(w)], atol=1e-12)
    assert np.isnan(pred.scores[0, Rank.GENUS, 2])
    np.testing.assert_allclose(pred.scores[0, Rank.FAMILY, 0], 1.0)
    # with 2 neighbours only rows 0 and 1 vote
    two = predict_knn(X_train, np.arange(4), X_test, np.array([4]), tax, k_neighbors=2, temperature=T, k=3)
    np.testing.assert_allclose(two.scores[0, Rank.SPECIES, :2], [w[0] / (w[0] + w[1]), w[1] / (w[0] + w[1])], atol=1e-12)
    np.testing.assert_array_equal(two.topk[0, Rank.SPECIES], [a, b, -1])


def test_knn_chunking_gives_the_same_result(strong):
    data, train, test = strong
    args = (data.embeddings[train], train, data.embeddings[test], test, data.taxonomy)
    one = predict_knn(*args, chunk_size=len(test))
    many = predict_knn(*args, chunk_size=5)
    default = predict_knn(*args)
    np.testing.assert_array_equal(one.topk, many.topk)
    np.testing.assert_array_equal(one.topk, default.topk)
    np.testing.assert_allclose(one.scores, many.scores, atol=1e-6)


# ------------------------------------------------------------------------------------------ centroid
def test_simpleshot_hand_computed():
    tax = Taxonomy.from_lineages([
        ["K", "P", "C", "O", "F", "GA", "GA a"],
        ["K", "P", "C", "O", "F", "GA", "GA a"],
        ["K", "P", "C", "O", "F", "GB", "GB b"],
        ["K", "P", "C", "O", "F", "GA", "GA a"],  # the query
    ])
    support = np.array([[2.0, 0.0], [1.0, 0.0], [0.0, 5.0]])  # normalised: (1,0), (1,0), (0,1)
    angle = math.radians(40)
    query = np.array([[math.cos(angle), math.sin(angle)]])
    # by hand: support mean m = (2/3, 1/3); centred and renormalised support: A -> (1, -1)/sqrt2 (twice),
    # B -> (-2, 2)/sqrt8 = (-1, 1)/sqrt2; centroids cA = (1, -1)/sqrt2, cB = (-1, 1)/sqrt2.
    qx, qy = math.cos(angle) - 2 / 3, math.sin(angle) - 1 / 3
    norm = math.hypot(qx, qy)
    qx, qy = qx / norm, qy / norm
    s = 1 / math.sqrt(2)
    d_a = math.hypot(qx - s, qy + s)
    d_b = math.hypot(qx + s, qy - s)
    assert d_b < d_a  # centring flips the answer: by plain cosine the query (40 degrees) is nearer A (0 degrees)
    pred = predict_centroid(support, np.arange(3), query, np.array([3]), tax, k=2)
    a, b = int(tax.codes("species")[0]), int(tax.codes("species")[2])
    np.testing.assert_array_equal(pred.topk[0, Rank.SPECIES], [b, a])
    np.testing.assert_allclose(pred.scores[0, Rank.SPECIES], [-d_b, -d_a], atol=1e-12)
    np.testing.assert_array_equal(pred.topk[0, Rank.GENUS], [tax.codes("genus")[2], tax.codes("genus")[0]])
    # one family: its centroid is the mean of the three centred support rows, (s, -s) * (1 + 1 - 1) / 3
    np.testing.assert_allclose(pred.scores[0, Rank.FAMILY], [-math.hypot(qx - s / 3, qy + s / 3), np.nan], atol=1e-12)


def test_simpleshot_five_shots_beat_one_shot():
    data = make_hierarchical(per_species=12, signal=1.0, noise=2.5, seed=3)
    tax, X = data.taxonomy, data.embeddings
    acc = {}
    for shots in (1, 5):
        values = []
        for fold in range(5):
            support, query = kshot_split(tax, shots=shots, fold=fold)
            values.append(accuracy(predict_centroid(X[support], support, X[query], query, tax), Rank.SPECIES))
        acc[shots] = np.mean(values)
    assert acc[5] >= acc[1] + 0.02, acc
    assert acc[1] > 0.3


def test_centroid_flat_maps_the_nearest_species_up():
    data = make_hierarchical(per_species=8, signal=1.0, noise=1.5, seed=4)
    tax, X = data.taxonomy, data.embeddings
    support, query = kshot_split(tax, shots=3, fold=0)
    pred = predict_centroid(X[support], support, X[query], query, tax, mode="flat")
    top_species = pred.topk[:, Rank.SPECIES, 0]
    for r in RANKS:  # the top-1 at every rank is the lineage of the nearest species centroid
        np.testing.assert_array_equal(pred.topk[:, r, 0], tax.species_codes[top_species, r])
        np.testing.assert_allclose(pred.scores[:, r, 0], pred.scores[:, Rank.SPECIES, 0])


# ------------------------------------------------------------------------------------------ linear
# One C, no refinement, few iterations: fast; the C sweep itself is tested in test_linear.
LINEAR_OPTIONS = {"grid": [1.0], "refine": False, "max_iter": 100}


def test_linear_probe_per_rank_and_flat(strong):
    data, train, test = strong
    args = (data.embeddings[train], train, data.embeddings[test], test, data.taxonomy)
    pred = predict_linear(*args, mode="per-rank", device="cpu", **LINEAR_OPTIONS)
    assert pred.method == "linear"
    for r in RANKS:
        assert accuracy(pred, r) > 0.9, r
    assert set(pred.info["best_C"]) == {r.label for r in RANKS}
    assert all(c > 0 for c in pred.info["best_C"].values())
    # probabilities at each rank
    assert np.all(np.nansum(pred.scores, axis=2) <= 1 + 1e-6)
    flat = predict_linear(*args, mode="flat", device="cpu", **LINEAR_OPTIONS)
    assert set(flat.info["best_C"]) == {"species"}
    assert accuracy(flat, Rank.GENUS) > 0.9
    top = flat.topk[:, Rank.SPECIES, 0]
    np.testing.assert_array_equal(flat.topk[:, Rank.GENUS, 0], data.taxonomy.species_codes[top, Rank.GENUS])


def test_linear_predicts_single_class_ranks_trivially(planted):
    data = planted
    tax = data.taxonomy.subset("class", "Mammalia")  # one kingdom, one phylum, one class
    X = data.embeddings[data.taxonomy.clade_mask("class", "Mammalia")]
    train, test = random_split(tax, seed=0)
    pred = predict_linear(X[train], train, X[test], test, tax, device="cpu", **LINEAR_OPTIONS)
    for r in (Rank.KINGDOM, Rank.PHYLUM, Rank.CLASS):  # the only class, probability 1, no probe fitted
        assert np.all(pred.topk[:, r, 0] == tax.codes(r)[test]) and np.all(pred.scores[:, r, 0] == 1.0)
        assert np.all(pred.topk[:, r, 1:] == -1) and pred.info["n_classes"][r.label] == 1
    assert accuracy(pred, Rank.SPECIES) > 0.9
    assert set(pred.info["best_C"]) == {"order", "family", "genus", "species"}
    # the classes each probe chose among (issue 11: top-k is reported only above k candidates)
    assert pred.n_candidates.tolist() == [1, 1, 1] + [pred.info["n_classes"][r.label] for r in RANKS[3:]]
    no_species = predict_linear(X[train], train, X[test], test, tax, device="cpu", predict_species=False, **LINEAR_OPTIONS)
    assert no_species.n_candidates[Rank.SPECIES] == 0
    assert np.all(no_species.topk[:, Rank.SPECIES] == -1) and np.all(np.isnan(no_species.scores[:, Rank.SPECIES]))
    assert set(no_species.info["best_C"]) == {"order", "family", "genus"}
    assert accuracy(no_species, Rank.GENUS) > 0.9


# ------------------------------------------------------------------------------------------ consistency
def test_predictions_carry_true_codes_and_unlabelled_rows(strong):
    data = strong[0]
    names = data.taxonomy.row_names.copy()
    names[::5, 6] = ""  # every fifth image known only to its genus
    tax = Taxonomy(names)
    train, test = random_split(tax, seed=0)
    extra = np.flatnonzero(~tax.labelled("species"))[:10]
    test = np.concatenate([test, extra])  # unlabelled rows may be predicted, they are just not scored
    ids = np.array([f"img{i}" for i in range(tax.n_rows)])
    X = data.embeddings
    centroid_support, centroid_query = kshot_split(tax, shots=2, fold=0)
    centroid_query = np.concatenate([centroid_query, extra])
    preds = [
        predict_knn(X[train], train, X[test], test, tax, ids=ids),
        predict_knn(X[train], train, X[test], test, tax, mode="flat"),
        predict_centroid(X[centroid_support], centroid_support, X[centroid_query], centroid_query, tax, ids=ids),
        predict_zero_shot(X[test], test, tax, {"species": (lineage_keys(tax, 6), data.species_means)}, ids=ids),
    ]
    for pred in preds:
        np.testing.assert_array_equal(pred.true, true_codes(tax, pred.rows))
        for r in RANKS:
            np.testing.assert_array_equal(pred.true[:, r], tax.codes(r)[pred.rows])
        unlabelled = ~tax.labelled("species")[pred.rows]
        assert unlabelled.sum() >= 10
        assert np.all(pred.true[unlabelled, Rank.SPECIES] == -1)
        assert np.all(pred.true[unlabelled, Rank.GENUS] >= 0)
        assert pred.topk.shape == (len(pred.rows), 7, 5)
    np.testing.assert_array_equal(preds[0].ids, ids[test])
    np.testing.assert_array_equal(preds[1].ids, test.astype(str))


def test_species_disjoint_flag_and_common_errors(strong):
    data, train, test = strong
    args = (data.embeddings[train], train, data.embeddings[test], test, data.taxonomy)
    knn = predict_knn(*args, predict_species=False)
    assert np.all(knn.topk[:, Rank.SPECIES] == -1) and knn.info["predict_species"] is False
    assert accuracy(knn, Rank.GENUS) > 0.9
    cen = predict_centroid(*args, predict_species=False)
    assert np.all(cen.topk[:, Rank.SPECIES] == -1)
    for f in (predict_knn, predict_centroid):
        with pytest.raises(InputError, match="mode='flat' needs the species"):
            f(*args, mode="flat", predict_species=False)
        with pytest.raises(InputError, match="'mode' parameter of predict_.* must be one of flat, per-rank"):
            f(*args, mode="tree")
    with pytest.raises(InputError, match=r"'X_test' parameter of predict_knn must be a numeric array of shape \(len\(test_rows\), D\)"):
        predict_knn(args[0], train, args[2][:-1], test, data.taxonomy)
    with pytest.raises(InputError, match="'X_test' parameter of predict_knn has 3-d embeddings, but the others are 64-d"):
        predict_knn(args[0], train, np.ones((len(test), 3)), test, data.taxonomy)
    with pytest.raises(InputError, match="'k_neighbors' parameter"):
        predict_knn(*args, k_neighbors=0)
