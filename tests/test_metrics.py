"""Hierarchical metrics: hand-computed cases, equality with scikit-learn and hiclass, known answers."""

from __future__ import annotations

import math
import warnings
from fractions import Fraction

import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import balanced_accuracy_score, f1_score

from latent.errors import InputError
from latent.metrics import (EvaluationResult, evaluate_predictions, hierarchical_predictions, informative_ranks,
                            paired_lca_height)
from latent.predictions import Predictions, flat_to_ranks, true_codes
from latent.ranks import RANK_NAMES, RANKS, Rank
from latent.stats import bootstrap_indices, cluster_ci, percentile_interval
from latent.synthetic import builtin_taxonomy
from latent.taxonomy import Taxonomy, lca_height

LINEAGES = [
    ["Animalia", "Chordata", "Aves", "Passeriformes", "Paridae", "Parus", "Parus major"],
    ["Animalia", "Chordata", "Aves", "Passeriformes", "Paridae", "Parus", "Parus minor"],
    ["Animalia", "Chordata", "Aves", "Passeriformes", "Paridae", "Cyanistes", "Cyanistes caeruleus"],
    ["Animalia", "Chordata", "Mammalia", "Carnivora", "Canidae", "Canis", "Canis lupus"],
    ["Plantae", "Tracheophyta", "Magnoliopsida", "Rosales", "Moraceae", "Morus", "Morus alba"],
    ["Animalia", "Chordata", "Aves", "Suliformes", "Sulidae", "Morus", "Morus bassanus"],  # genus homonym
]


@pytest.fixture(scope="module")
def tiny() -> Taxonomy:
    return Taxonomy.from_lineages(LINEAGES)


def sp(tax: Taxonomy, name: str) -> int:
    (code,) = np.flatnonzero(tax.node_names[Rank.SPECIES] == name)
    return int(code)


def first_appearance_topk(tax: Taxonomy, species_lists: list[list[int]], k: int = 5) -> np.ndarray:
    """``(n, 7, k)``: species ranked as given; at higher ranks their ancestors in order of first appearance."""
    lineages = tax.species_codes
    out = np.full((len(species_lists), 7, k), -1, dtype=np.int64)
    for i, ranked in enumerate(species_lists):
        for r in RANKS:
            seen: list[int] = []
            for s in ranked:
                node = int(lineages[s, r])
                if node not in seen:
                    seen.append(node)
            out[i, r, : len(seen[:k])] = seen[:k]
    return out


def make_pred(tax: Taxonomy, true: np.ndarray, topk: np.ndarray, mode: str = "flat") -> Predictions:
    n = len(true)
    scores = np.where(topk >= 0, 1.0, np.nan)
    return Predictions(tax, np.arange(n), np.array([f"img{i}" for i in range(n)]), np.asarray(true, dtype=np.int64),
                       np.asarray(topk, dtype=np.int64), scores, "test", mode)


def value(res: EvaluationResult, metric: str, rank: str = "all") -> float:
    return res.value(metric, rank)


def n_of(res: EvaluationResult, metric: str, rank: str = "all") -> int:
    m = res.metrics
    return int(m.loc[(m["rank"] == rank) & (m["metric"] == metric), "n"].iloc[0])


# ---------------------------------------------------------------------- hand-computed
@pytest.fixture(scope="module")
def hand(tiny):
    t = tiny
    P_MAJ, P_MIN, CYA, CAN, M_ALB, M_BAS = (sp(t, n) for n in (
        "Parus major", "Parus minor", "Cyanistes caeruleus", "Canis lupus", "Morus alba", "Morus bassanus"))
    ranked = [
        [P_MAJ, P_MIN, CYA, CAN, M_BAS],   # i0 true P. major: right
        [P_MIN, CYA, P_MAJ, M_BAS, CAN],   # i1 true P. major: same genus (height 1)
        [M_ALB, M_BAS, CAN, P_MAJ, P_MIN],  # i2 true Canis lupus: other kingdom (7)
        [P_MAJ, M_ALB, CYA, CAN, P_MIN],   # i3 true Morus bassanus: same class Aves (4); truth not in top 5
        [CYA, P_MAJ, P_MIN, CAN, M_ALB],   # i4 true known to genus Cyanistes only
    ]
    true = t.species_codes[[P_MAJ, P_MAJ, CAN, M_BAS, CYA]].copy()
    true[4, Rank.SPECIES] = -1
    pred = make_pred(t, true, first_appearance_topk(t, ranked))
    return pred, evaluate_predictions(pred, n_boot=200, seed=0)


def test_hand_per_rank_accuracy(hand):
    _, res = hand
    # Top-1 species lineages vs truth, rows i0..i4: i0 right everywhere, i1 wrong at species only, i2
    # wrong everywhere, i3 right down to class, i4 right down to genus (unlabelled at species).
    for rank, expected in [("kingdom", 4 / 5), ("phylum", 4 / 5), ("class", 4 / 5), ("order", 3 / 5),
                           ("family", 3 / 5), ("genus", 3 / 5), ("species", 1 / 4)]:
        assert value(res, "top1", rank) == pytest.approx(expected, abs=1e-12), rank
        assert n_of(res, "top1", rank) == (4 if rank == "species" else 5)
    # top5 (changed by issue 11: top-k is not reported at a rank with k or fewer candidates, where it is
    # trivially 1): the lists name 2 kingdoms and 5 genera, so no top5 there; the 6 species remain, and
    # at species i3 misses: 3/4.
    m = res.metrics
    assert not ((m["metric"] == "top5") & m["rank"].isin(["kingdom", "phylum", "class", "genus"])).any()
    assert value(res, "top5", "species") == pytest.approx(3 / 4)
    # one true kingdom and phylum among the rows: the value stays, marked, without a CI
    for rank in ("kingdom", "phylum"):
        row = m[(m["rank"] == rank) & (m["metric"] == "top1")].iloc[0]
        assert row["note"].startswith("one taxon at this rank: not testable") and row["ci_note"] == "no CI: one taxon"
        assert math.isnan(row["ci_low"]) and row["n_taxa"] == 1
    # 5 rows resting on 4 species units (i4 is known to genus only: its own unit) < 10: no CI anywhere
    genus = m[(m["rank"] == "genus") & (m["metric"] == "top1")].iloc[0]
    assert genus["n_species"] == 4 and genus["n_taxa"] == 4 and genus["ci_note"] == "no CI: 4 species (< 10)"


def test_hand_balanced_accuracy_and_macro_f1(hand):
    _, res = hand
    # species, rows i0..i3: recalls P. major 1/2, Canis 0, M. bassanus 0 -> 1/6.
    assert value(res, "balanced_accuracy", "species") == pytest.approx(1 / 6, abs=1e-12)
    # labels = true u pred = {P. major, P. minor, Canis, M. bassanus, M. alba}; only P. major scores:
    # TP 1 (i0), FP 1 (i3), FN 1 (i1) -> F1 = 2/4; macro = 0.5 / 5.
    assert value(res, "macro_f1", "species") == pytest.approx(0.1, abs=1e-12)
    assert value(res, "n_classes", "species") == 3
    # genus, rows i0..i4: true Parus, Parus, Canis, Morus(bird), Cyanistes; pred Parus, Parus, Morus(plant),
    # Parus, Cyanistes. Recalls 1, 0, 0, 1 -> 1/2. F1: Parus 2*2/(2*2+1+0) = 0.8, Cyanistes 1, Canis 0,
    # Morus(bird) 0, Morus(plant) 0 -> 1.8 / 5 (a homonym collapse would give 1.8 / 4).
    assert value(res, "balanced_accuracy", "genus") == pytest.approx(0.5, abs=1e-12)
    assert value(res, "macro_f1", "genus") == pytest.approx(0.36, abs=1e-12)
    assert value(res, "n_classes", "genus") == 4


def test_hand_severity_and_hierarchical_distance(hand):
    _, res = hand
    # rows with a known species: i0..i3. Top-1 heights 0, 1, 7, 4.
    assert value(res, "top1_error") == pytest.approx(3 / 4)
    assert value(res, "mistake_severity") == pytest.approx((1 + 7 + 4) / 3)
    assert n_of(res, "mistake_severity") == 3 and n_of(res, "top1_error") == 4
    assert value(res, "hdist@1") == pytest.approx((0 + 1 + 7 + 4) / 4)
    # top-5 heights: i0 [0,1,2,5,4], i1 [1,2,0,4,5], i2 [7,5,0,5,5], i3 [4,7,4,5,4]
    per_row = [12 / 5, 12 / 5, 22 / 5, 24 / 5]
    assert value(res, "hdist@5") == pytest.approx(np.mean(per_row))
    hist = res.severity_histogram.set_index("height")
    assert hist["count"].tolist() == [1, 0, 0, 1, 0, 0, 1]
    np.testing.assert_allclose(hist["fraction"], [1 / 3, 0, 0, 1 / 3, 0, 0, 1 / 3])
    div = res.divergence.set_index("divergence")
    assert list(div.index) == list(RANK_NAMES) + ["correct"]
    # i2 differs from the kingdom, i3 from the order (same class Aves), i1 at the species, i0 correct
    assert div["count"].tolist() == [1, 0, 0, 1, 0, 0, 1, 1]
    np.testing.assert_allclose(div["fraction"], np.array([1, 0, 0, 1, 0, 0, 1, 1]) / 4)


def test_hand_hierarchical_precision_recall(hand):
    _, res = hand
    # Every true row is Animalia / Chordata: kingdom and phylum have one taxon and are left out (issue 11:
    # root-like ranks match trivially). A = the 5 nodes class..species of the top-1 species lineage;
    # B = the labelled true nodes there (i4: 4). |A n B| = 5, 4, 0, 1, 4; |A| = 5 each; |B| = 5, 5, 5, 5, 4.
    assert value(res, "hP") == pytest.approx(14 / 25, abs=1e-12)
    assert value(res, "hR") == pytest.approx(14 / 24, abs=1e-12)
    assert value(res, "hF") == pytest.approx(28 / 49, abs=1e-12)  # 2 * 14 / (25 + 24)
    assert value(res, "hP_macro") == pytest.approx(float(sum(Fraction(i, 5) for i in (5, 4, 0, 1, 4)) / 5), abs=1e-12)
    hr_macro = (Fraction(5, 5) + Fraction(4, 5) + 0 + Fraction(1, 5) + Fraction(4, 4)) / 5
    hf_macro = (1 + Fraction(8, 10) + 0 + Fraction(2, 10) + Fraction(8, 9)) / 5  # 2|A n B| / (|A| + |B|)
    assert value(res, "hR_macro") == pytest.approx(float(hr_macro), abs=1e-12)
    assert value(res, "hF_macro") == pytest.approx(float(hf_macro), abs=1e-12)
    m = res.metrics
    assert (m.loc[m["metric"].isin(["hP", "hR", "hF", "hca"]), "note"] == "ranks left out: kingdom, phylum (one taxon)").all()
    assert set(m.loc[m["metric"] == "consistency", "rank"]) == {"order", "family", "genus", "species", "all"}
    assert res.info["left_out_ranks"] == {"kingdom": "one taxon", "phylum": "one taxon"}
    # HCA on rows with a known species (i0..i3): only i0 right at every rank
    assert value(res, "hca") == pytest.approx(1 / 4) and n_of(res, "hca") == 4
    assert value(res, "consistency") == 1.0 and n_of(res, "consistency") == 5


def test_hand_confusions(hand, tiny):
    _, res = hand
    conf = res.confusions
    species = conf[conf["rank"] == "species"]
    assert set(zip(species["true"], species["pred"], species["count"])) == {
        ("Parus major", "Parus minor", 1), ("Canis lupus", "Morus alba", 1), ("Morus bassanus", "Parus major", 1)}
    genus = conf[conf["rank"] == "genus"].set_index("true")
    # the two genera called Morus are told apart by their lineages
    assert genus.loc["Canis", "pred_lineage"] == "Plantae;Tracheophyta;Magnoliopsida;Rosales;Moraceae;Morus"
    assert genus.loc["Morus", "true_lineage"] == "Animalia;Chordata;Aves;Suliformes;Sulidae;Morus"
    assert genus.loc["Morus", "pred"] == "Parus"
    assert genus.loc["Canis", "n_true"] == 1
    kingdom = conf[conf["rank"] == "kingdom"]
    assert kingdom[["true", "pred", "count"]].values.tolist() == [["Animalia", "Plantae", 1]]
    assert set(conf.columns) >= {"rank", "true", "pred", "true_lineage", "pred_lineage", "count"}


def test_confusions_are_the_most_frequent_pairs(tiny):
    t = tiny
    a, b, c = sp(t, "Parus major"), sp(t, "Parus minor"), sp(t, "Canis lupus")
    # (a -> b) x3, (c -> a) x2, (b -> c) x1, and one right
    truth = [a, a, a, c, c, b, a]
    top1 = [b, b, b, a, a, c, a]
    true = t.species_codes[truth]
    topk = first_appearance_topk(t, [[s] for s in top1], k=1)
    res = evaluate_predictions(make_pred(t, true, topk), n_boot=0, top_confusions=2)
    species = res.confusions[res.confusions["rank"] == "species"]
    assert species[["true", "pred", "count"]].values.tolist() == [
        ["Parus major", "Parus minor", 3], ["Canis lupus", "Parus major", 2]]
    assert species["n_true"].tolist() == [4, 2]
    # k = 1: no top5 and no hdist@5
    assert "top5" not in set(res.metrics["metric"]) and "hdist@5" not in set(res.metrics["metric"])


def test_per_rank_mode_inconsistency_hca_and_hp(tiny):
    t = tiny
    P_MAJ, CAN = sp(t, "Parus major"), sp(t, "Canis lupus")
    cyanistes = int(t.species_codes[sp(t, "Cyanistes caeruleus"), Rank.GENUS])
    true = t.species_codes[[P_MAJ, CAN]]
    topk = true[:, :, None].copy()
    topk[0, Rank.GENUS, 0] = cyanistes  # j0: genus Cyanistes but species Parus major: inconsistent
    res = evaluate_predictions(make_pred(t, true, topk, mode="per-rank"), n_boot=100)
    assert value(res, "top1", "species") == 1.0 and value(res, "top1", "genus") == 0.5
    assert value(res, "consistency", "species") == 0.5  # P. major is not a child of Cyanistes
    assert value(res, "consistency", "genus") == 1.0  # Cyanistes is a child of Paridae
    assert value(res, "consistency") == 0.5 and value(res, "hca") == 0.5
    # kingdom and phylum (one taxon) are left out: A and B hold class..species, 5 nodes per row
    assert value(res, "hP") == pytest.approx(9 / 10) and value(res, "hR") == pytest.approx(9 / 10)
    # species right for both: no mistakes, severity undefined with n = 0
    assert math.isnan(value(res, "mistake_severity")) and n_of(res, "mistake_severity") == 0
    assert value(res, "top1_error") == 0.0


def test_flat_mode_is_consistent_even_when_rank_sums_disagree(tiny):
    t = tiny
    # Cyanistes 0.4 is the top species, but Parus (0.35 + 0.25) is the top genus of summed probabilities.
    probs = np.zeros((1, t.n_species))
    probs[0, [sp(t, "Cyanistes caeruleus"), sp(t, "Parus major"), sp(t, "Parus minor")]] = [0.4, 0.35, 0.25]
    topk, scores = flat_to_ranks(probs, t, k=5)
    parus = t.species_codes[sp(t, "Parus major"), Rank.GENUS]
    assert topk[0, Rank.GENUS, 0] == parus  # the construction really disagrees with the species lineage
    # A second row, a plant predicted right, so that every rank has two true taxa (one-taxon ranks are
    # left out of hP and consistency since issue 11).
    plant = np.zeros((1, t.n_species))
    plant[0, sp(t, "Morus alba")] = 1.0
    topk2, scores2 = flat_to_ranks(plant, t, k=5)
    topk, scores = np.concatenate([topk, topk2]), np.concatenate([scores, scores2])
    true = t.species_codes[[sp(t, "Parus major"), sp(t, "Morus alba")]]
    pred = Predictions(t, np.arange(2), np.array(["a", "b"]), true, topk, scores, "test", "flat")
    res = evaluate_predictions(pred, n_boot=50)
    assert value(res, "top1", "genus") == 1.0  # per-rank accuracy reads the rank's own top-1
    assert value(res, "top1", "species") == 0.5
    assert value(res, "consistency") == 1.0  # H is the species lineage
    for r in RANK_NAMES[1:]:
        assert value(res, "consistency", r) == 1.0
    # H = Cyanistes lineage: shares 5 nodes with P. major; the plant row shares all 7
    assert value(res, "hP") == pytest.approx(12 / 14)
    np.testing.assert_array_equal(hierarchical_predictions(pred)[0], t.species_codes[sp(t, "Cyanistes caeruleus")])
    # the same arrays read as per-rank predictions are inconsistent at species
    per_rank = Predictions(t, np.arange(2), np.array(["a", "b"]), true, topk, scores, "t", "per-rank")
    res_pr = evaluate_predictions(per_rank, n_boot=0)
    assert value(res_pr, "consistency", "species") == 0.5


# ---------------------------------------------------------------------- perfect predictions
def _placeholder_taxonomy() -> Taxonomy:
    rows = [list(r) for r in LINEAGES] + [
        ["Animalia", "Chordata", "Aves", "Passeriformes", "", "Xus", "Xus yus"],  # empty family (placeholder)
    ]
    return Taxonomy.from_lineages(rows)


@pytest.mark.parametrize("mode", ["flat", "per-rank"])
def test_perfect_predictions(mode, caplog):
    t = _placeholder_taxonomy()
    rows = np.repeat(np.arange(t.n_rows), 3)
    true = true_codes(t, rows)
    assert (true[:, Rank.FAMILY] == -1).any()  # the placeholder row is unlabelled at family
    species = true[:, Rank.SPECIES]
    others = [[s] + [o for o in range(t.n_species) if o != s] for s in species]
    topk = first_appearance_topk(t, others)
    res = evaluate_predictions(make_pred(t, true, topk, mode), n_boot=100)
    m = res.metrics
    for metric in ("top1", "top5", "balanced_accuracy", "macro_f1"):
        assert (m.loc[m["metric"] == metric, "value"] == 1.0).all(), metric
    for metric in ("hP", "hR", "hF", "hP_macro", "hR_macro", "hF_macro", "hca", "consistency"):
        assert value(res, metric) == pytest.approx(1.0), metric
    assert value(res, "top1_error") == 0.0 and value(res, "hdist@1") == 0.0
    sev = m[m["metric"] == "mistake_severity"].iloc[0]
    assert math.isnan(sev["value"]) and sev["n"] == 0 and math.isnan(sev["ci_low"]) and math.isnan(sev["ci_high"])
    assert res.severity_histogram["count"].sum() == 0 and res.severity_histogram["fraction"].isna().all()
    assert res.divergence.set_index("divergence").loc["correct", "fraction"] == 1.0
    assert res.confusions.empty
    assert n_of(res, "top1", "family") == len(rows) - 3  # the placeholder rows are left out at family


# ---------------------------------------------------------------------- equality with sklearn and hiclass
def _taxonomy_with_placeholder() -> Taxonomy:
    """The built-in taxonomy with one family blanked (an unnamed placeholder node)."""
    table = builtin_taxonomy().species_table()
    family = table["family"].iloc[0]
    table.loc[table["family"] == family, "family"] = ""
    return Taxonomy.from_table(table)


def _random_predictions(tax: Taxonomy, n: int, mode: str, seed: int, k: int = 5) -> Predictions:
    rng = np.random.default_rng(seed)
    species = rng.integers(0, tax.n_species, n)
    true = tax.species_codes[species].copy()
    placeholder = np.stack([np.asarray(tax.node_names[r], dtype=object)[true[:, r]] == "" for r in RANKS], axis=1)
    true[placeholder] = -1  # unnamed intermediate ranks are unlabelled
    depth = rng.choice([1, 4, 5, 6, 7], size=n, p=[0.05, 0.1, 0.1, 0.15, 0.6])  # ranks known: kingdom..depth-1
    true[np.arange(7)[None, :] >= depth[:, None]] = -1
    topk = np.full((n, 7, k), -1, dtype=np.int64)
    if mode == "flat":
        # biased towards the truth so that every metric is far from 0 and 1
        ranked = np.argsort(rng.random((n, tax.n_species)), axis=1)
        hit = rng.random(n) < 0.4
        ranked[hit, 0] = species[hit]
        lists = [list(dict.fromkeys(row.tolist()))[:k] for row in ranked]
        topk = first_appearance_topk(tax, lists, k)
    else:
        for r in RANKS:
            n_nodes = tax.n_nodes(r)
            kk = min(k, n_nodes)
            perm = np.argsort(rng.random((n, n_nodes)), axis=1)[:, :kk]
            truth_r = tax.species_codes[species, r]
            hit = rng.random(n) < 0.5
            perm[hit, 0] = truth_r[hit]
            topk[:, r, :kk] = perm
    return make_pred(tax, true, topk, mode)


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("mode", ["flat", "per-rank"])
def test_balanced_accuracy_and_macro_f1_equal_sklearn(seed, mode):
    tax = _taxonomy_with_placeholder()
    pred = _random_predictions(tax, 400, mode, seed)
    res = evaluate_predictions(pred, n_boot=0)
    for r in RANKS:
        rows = pred.true[:, r] >= 0
        t, p = pred.true[rows, r], pred.topk[rows, r, 0]
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            ba = balanced_accuracy_score(t, p)
            f1 = f1_score(t, p, average="macro")
        assert value(res, "balanced_accuracy", r.label) == pytest.approx(ba, abs=1e-12)
        assert value(res, "macro_f1", r.label) == pytest.approx(f1, abs=1e-12)
        assert value(res, "top1", r.label) == pytest.approx(np.mean(t == p), abs=1e-12)
        assert n_of(res, "top1", r.label) == rows.sum()
        assert value(res, "n_classes", r.label) == len(np.unique(t))


def _lineage_labels(tax: Taxonomy, codes: np.ndarray) -> np.ndarray:
    """``(n, 7)`` full-lineage strings, ``""`` where the code is -1 or an unnamed placeholder."""
    out = np.full(codes.shape, "", dtype=object)
    for i, j in zip(*np.nonzero(codes >= 0)):
        if tax.node_names[j][codes[i, j]] != "":
            out[i, j] = ";".join(tax.lineage(int(j), int(codes[i, j])))
    return out


@pytest.mark.parametrize("seed", [0, 1, 2, 3])
@pytest.mark.parametrize("mode", ["flat", "per-rank"])
def test_hierarchical_prf_equal_hiclass(seed, mode):
    hiclass_metrics = pytest.importorskip("hiclass.metrics")
    tax = _taxonomy_with_placeholder()
    pred = _random_predictions(tax, 300, mode, seed)
    assert (pred.true[:, Rank.SPECIES] == -1).any() and (pred.true[:, Rank.FAMILY] == -1).any()
    res = evaluate_predictions(pred, n_boot=0)
    if mode == "flat":
        predicted = tax.species_codes[pred.topk[:, Rank.SPECIES, 0]]
    else:
        predicted = pred.topk[:, :, 0]
    keep, left_out = informative_ranks(pred)
    assert keep.all() and not left_out  # every rank has several taxa here; hiclass sees all seven
    y_true = _lineage_labels(tax, pred.true)
    y_pred = _lineage_labels(tax, predicted)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for average, suffix in (("micro", ""), ("macro", "_macro")):
            expected = {
                "hP": hiclass_metrics.precision(y_true, y_pred, average=average),
                "hR": hiclass_metrics.recall(y_true, y_pred, average=average),
                "hF": hiclass_metrics.f1(y_true, y_pred, average=average),
            }
            for name, v in expected.items():
                assert value(res, name + suffix) == pytest.approx(v, abs=1e-12), name + suffix
    assert 0.1 < value(res, "hP") < 0.9


def test_homonyms_do_not_collapse_in_hierarchical_metrics(tiny):
    # Truth: the bird Morus bassanus; prediction (per rank): right down to class, then the plant's Moraceae /
    # Morus and the right species name space. Genus "Morus" matches by name but not by lineage.
    # A second row, the plant Morus alba predicted right, gives every rank two true taxa (one-taxon ranks
    # are left out of hP since issue 11).
    t = tiny
    true = t.species_codes[[sp(t, "Morus bassanus"), sp(t, "Morus alba")]]
    plant = t.species_codes[sp(t, "Morus alba")]
    topk = true[:, :, None].copy()
    topk[0, Rank.GENUS, 0] = plant[Rank.GENUS]
    res = evaluate_predictions(make_pred(t, true, topk, "per-rank"), n_boot=0)
    assert value(res, "top1", "genus") == 0.5
    assert value(res, "hP") == pytest.approx(13 / 14)


# ---------------------------------------------------------------------- known answer: random guessing
def test_random_guessing_severity_and_accuracy():
    tax = builtin_taxonomy()
    n_species = tax.n_species
    assert n_species == 47
    rng = np.random.default_rng(7)
    n = 20_000
    weights = rng.dirichlet(np.full(n_species, 0.5))  # unequal species frequencies
    truth = rng.choice(n_species, size=n, p=weights)
    guess = rng.integers(0, n_species, size=n)
    true = tax.species_codes[truth]
    topk = tax.species_codes[guess][:, :, None]  # the guessed species' lineage at every rank
    res = evaluate_predictions(make_pred(tax, true, topk), n_boot=200)

    d = tax.distances().astype(float)
    # a mistake predicts one of the 46 other species uniformly: mean height to the others, per true species,
    # weighted by how often each true species occurs
    mean_to_others = d.sum(axis=1) / (n_species - 1)
    freq = np.bincount(truth, minlength=n_species) / n
    expected_severity = float(freq @ mean_to_others)
    assert value(res, "mistake_severity") == pytest.approx(expected_severity, abs=0.05)
    assert value(res, "top1", "species") == pytest.approx(1 / n_species, abs=0.005)
    assert value(res, "top1_error") == pytest.approx(1 - 1 / n_species, abs=0.005)
    assert value(res, "hdist@1") == pytest.approx(expected_severity * (n_species - 1) / n_species, abs=0.05)
    # per-kingdom accuracy of a uniform species guess: P(same kingdom) = sum_t freq_t * |kingdom(t)| / 47
    kingdom = tax.species_codes[:, Rank.KINGDOM]
    size = np.bincount(kingdom)[kingdom]
    assert value(res, "top1", "kingdom") == pytest.approx(float(freq @ size) / n_species, abs=0.015)


# ---------------------------------------------------------------------- bootstrap intervals
def test_intervals_contain_the_value_and_are_seeded():
    tax = builtin_taxonomy()
    pred = _random_predictions(tax, 500, "per-rank", seed=4)
    a = evaluate_predictions(pred, n_boot=300, seed=1)
    b = evaluate_predictions(pred, n_boot=300, seed=1)
    c = evaluate_predictions(pred, n_boot=300, seed=2)
    pd.testing.assert_frame_equal(a.metrics, b.metrics)
    m = a.metrics
    with_ci = m[m["metric"] != "n_classes"]
    assert with_ci[["ci_low", "ci_high"]].notna().all().all()
    assert (with_ci["ci_low"] <= with_ci["value"] + 1e-12).all()
    assert (with_ci["value"] <= with_ci["ci_high"] + 1e-12).all()
    assert (with_ci["ci_low"] < with_ci["ci_high"]).any()
    assert m.loc[m["metric"] == "n_classes", "ci_low"].isna().all()
    assert not np.allclose(a.metrics["ci_low"].fillna(0), c.metrics["ci_low"].fillna(0))
    assert a.to_frame().equals(a.metrics)


def _hand_species_bootstrap(species: np.ndarray, fn, n_boot: int, seed: int) -> tuple[float, float]:
    """A species bootstrap written out by hand: draw the sorted species with replacement
    (``bootstrap_indices`` over the species), take every row of each drawn species as often as it is
    drawn, apply ``fn`` to those row indices, percentile interval."""
    codes = np.unique(species)
    members = [np.flatnonzero(species == c) for c in codes]
    samples = []
    for draw in bootstrap_indices(len(codes), n_boot, seed):
        samples.append(fn(np.concatenate([members[u] for u in draw])))
    return percentile_interval(np.array(samples, dtype=float), 0.05)


def test_intervals_match_the_stats_module():
    """The vectorised species resampling gives the intervals of a species bootstrap written out by hand
    (and of :func:`latent.stats.cluster_ci`). Changed by issue 11: intervals used to resample images."""
    tax = builtin_taxonomy()
    pred = _random_predictions(tax, 300, "per-rank", seed=5)
    species_all = np.random.default_rng(5).integers(0, tax.n_species, 300)  # the species _random_predictions drew
    full = tax.species_codes[species_all]
    assert ((pred.true == full) | (pred.true == -1)).all()
    true = np.where(pred.true[:, [Rank.SPECIES]] >= 0, full, -1)  # rows known to species only, full lineage
    pred = Predictions(pred.taxonomy, pred.rows, pred.ids, true, pred.topk, pred.scores, "test", "per-rank")
    res = evaluate_predictions(pred, n_boot=200, seed=3)
    m = res.metrics.set_index(["rank", "metric"])
    for r in (Rank.GENUS, Rank.SPECIES):
        rows = pred.true[:, r] >= 0
        t, p, species = pred.true[rows, r], pred.topk[rows, r, 0], pred.true[rows, Rank.SPECIES]
        never_true = np.setdiff1d(p, t)  # predicted but never true: stay in every resample's label set
        assert m.loc[(r.label, "top1"), "n_species"] == len(np.unique(species))
        top1 = _hand_species_bootstrap(species, lambda i: np.mean(t[i] == p[i]), 200, 3)
        assert tuple(m.loc[(r.label, "top1"), ["ci_low", "ci_high"]]) == pytest.approx(top1, abs=1e-12)
        _, unit = np.unique(species, return_inverse=True)
        correct = (t == p).astype(float)
        low, high, note = cluster_ci(lambda w: w[:, unit] @ correct / w[:, unit].sum(axis=1), len(np.unique(species)),
                                     n_boot=200, seed=3)
        assert note == "" and (low, high) == pytest.approx(top1, abs=1e-12)

        def f1(i):
            labels = np.union1d(np.unique(t[i]), np.intersect1d(np.unique(p[i]), never_true))
            return f1_score(t[i], p[i], labels=labels, average="macro")

        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            ba = _hand_species_bootstrap(species, lambda i: balanced_accuracy_score(t[i], p[i]), 200, 3)
            f1_ci = _hand_species_bootstrap(species, f1, 200, 3)
        assert tuple(m.loc[(r.label, "balanced_accuracy"), ["ci_low", "ci_high"]]) == pytest.approx(ba, abs=1e-12)
        assert tuple(m.loc[(r.label, "macro_f1"), ["ci_low", "ci_high"]]) == pytest.approx(f1_ci, abs=1e-12)


def test_intervals_shrink_with_images_only_where_species_do_not_matter():
    """Species top-1 hits here do not depend on the species: 16 times the images shrink its interval about
    4 times. Mistake severity depends on *which* species are confused (their distance to the others):
    that between-species part does not shrink with more images of the same 47 species, and the species
    bootstrap keeps it (changed by issue 11: an image bootstrap shrank every interval 4 times)."""
    tax = builtin_taxonomy()
    width = {}
    for n in (400, 6400):
        res = evaluate_predictions(_random_predictions(tax, n, "flat", seed=6), n_boot=300, seed=0)
        m = res.metrics.set_index(["rank", "metric"])
        width[n] = {key: m.loc[key, "ci_high"] - m.loc[key, "ci_low"]
                    for key in [("species", "top1"), ("genus", "top1"), ("all", "hca"), ("all", "mistake_severity")]}
    ratio = {key: width[400][key] / width[6400][key] for key in width[400]}
    for key in [("species", "top1"), ("genus", "top1"), ("all", "hca")]:
        assert 2.5 < ratio[key] < 6.0, (key, ratio[key])  # sqrt(16) = 4
    assert ratio[("all", "mistake_severity")] < 2.5, ratio


# ---------------------------------------------------------------------- helpers and validation
def test_paired_lca_height_is_the_diagonal_of_lca_height():
    tax = _taxonomy_with_placeholder()
    rng = np.random.default_rng(0)
    a = tax.species_codes[rng.integers(0, tax.n_species, 200)]
    b = tax.species_codes[rng.integers(0, tax.n_species, 200)]
    np.testing.assert_array_equal(paired_lca_height(a, b), np.diag(lca_height(a, b)))
    assert paired_lca_height(a, a).max() == 0


def test_result_tables_have_the_long_format(hand):
    _, res = hand
    assert list(res.metrics.columns[:6]) == ["rank", "metric", "value", "ci_low", "ci_high", "n"]
    assert set(res.metrics["rank"]) == set(RANK_NAMES) | {"all"}
    assert (res.metrics["method"] == "test").all() and (res.metrics["mode"] == "flat").all()
    with pytest.raises(KeyError, match="No metric"):
        res.value("nonsense")


def test_bad_input_is_rejected(tiny):
    true = tiny.species_codes[:2]
    pred = make_pred(tiny, true, true[:, :, None])
    with pytest.raises(ValueError, match="'n_boot' parameter of evaluate_predictions"):
        evaluate_predictions(pred, n_boot=-1)
    with pytest.raises(ValueError, match="'alpha' parameter of evaluate_predictions"):
        evaluate_predictions(pred, alpha=0)
    with pytest.raises(InputError, match="mode must be one of flat, per-rank"):
        evaluate_predictions(make_pred(tiny, true, true[:, :, None], mode="hierarchical"))
    bad = true[:, :, None].copy()
    bad[0, Rank.GENUS, 0] = 99
    with pytest.raises(InputError, match="outside -1..* at rank genus: \\[99\\]"):
        evaluate_predictions(make_pred(tiny, true, bad))
    with pytest.raises(TypeError, match="must be a Predictions"):
        evaluate_predictions("predictions")


def test_unpredicted_ranks_are_skipped(tiny):
    true = tiny.species_codes[:3]
    topk = np.full((3, 7, 1), -1, dtype=np.int64)
    topk[:, Rank.SPECIES, 0] = true[:, Rank.SPECIES]
    topk[:, Rank.GENUS, 0] = true[:, Rank.GENUS]
    res = evaluate_predictions(make_pred(tiny, true, topk, "per-rank"), n_boot=0)
    assert set(res.metrics["rank"]) == {"genus", "species", "all"}
    assert value(res, "consistency", "species") == 1.0
    # Issue 11: ranks not predicted are left out of B too (they used to count against hR: 2/7), and so
    # are one-taxon ranks (all three rows are Paridae). A = B = genus and species: hP = hR = 1.
    assert value(res, "hP") == 1.0 and value(res, "hR") == 1.0 and value(res, "hca") == 1.0
    assert res.info["left_out_ranks"] == {"kingdom": "not predicted", "phylum": "not predicted", "class": "not predicted",
                                          "order": "not predicted", "family": "not predicted"}
    assert res.metrics.set_index("metric").loc["hR", "note"] == (
        "ranks left out: kingdom, phylum, class, order, family (not predicted)")
