"""Near duplicates without an n^2 matrix, and overlap with training taxa (latent.audit.duplicates, issue 15)."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from latent.audit.duplicates import (
    OVERLAP_COLUMNS,
    SUMMARY_COLUMNS,
    duplicate_summary,
    near_duplicates,
    overlap_summary,
    read_training_taxa,
    training_overlap,
)
from latent.errors import InputError


def _brute_force(X: np.ndarray, threshold: float) -> set[tuple[int, int]]:
    """Every pair (a < b) with float64 cosine >= threshold, from the full n x n matrix."""
    U = X.astype(np.float64)
    U = U / np.linalg.norm(U, axis=1, keepdims=True)
    G = U @ U.T
    a, b = np.triu_indices(len(X), k=1)
    hit = G[a, b] >= threshold
    return set(zip(a[hit].tolist(), b[hit].tolist()))


def _planted(n: int, d: int, pairs: int, *, seed: int, noise: float = 1e-3) -> tuple[np.ndarray, np.ndarray]:
    """Random rows (n, d) float32 where row ``b`` is row ``a`` + tiny noise for ``pairs`` planted pairs (pairs, 2)."""
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((n, d)).astype(np.float32)
    rows = rng.choice(n, size=2 * pairs, replace=False).reshape(pairs, 2)
    for a, b in rows:
        X[b] = X[a] + noise * rng.standard_normal(d).astype(np.float32)
    return X, np.sort(rows, axis=1)


@pytest.mark.parametrize("seed", [0, 1])
@pytest.mark.parametrize("threshold", [0.8, 0.9, 0.97, 0.999])
def test_matches_brute_force_on_low_dim_random_data(seed, threshold):
    # d = 4: many natural pairs at every threshold (tens of thousands at 0.8, a few dozen at 0.999), so the
    # blockwise search is checked beyond the planted ones; block 97 does not divide n, so ragged last blocks
    # and the diagonal blocks are exercised.
    X, planted = _planted(1500, 4, 10, seed=seed)
    pairs = near_duplicates(X, [f"img{i}" for i in range(len(X))], threshold=threshold, block=97)
    found = set(zip(pairs["row_a"].tolist(), pairs["row_b"].tolist()))
    expected = _brute_force(X, threshold)
    assert len(expected) > 20
    assert found == expected
    assert {tuple(p) for p in planted.tolist()} <= found
    assert (pairs["cosine"] >= threshold).all()
    assert (pairs["row_a"] < pairs["row_b"]).all()
    assert pairs["id_a"].tolist() == [f"img{i}" for i in pairs["row_a"]]


def test_planted_pairs_in_5000_rows_and_nothing_else():
    X, planted = _planted(5000, 64, 20, seed=3)
    pairs = near_duplicates(X, np.arange(5000), threshold=0.95, block=1024)
    # Random 64-d rows have cosines far below 0.95: exactly the planted pairs are reported.
    assert sorted(zip(pairs["row_a"], pairs["row_b"])) == sorted(map(tuple, planted.tolist()))
    assert not pairs["identical"].any()
    assert pairs.attrs == {"threshold": 0.95, "n": 5000}


def test_order_is_cosine_descending_then_rows_and_deterministic():
    X, _ = _planted(800, 5, 5, seed=4)
    X[10] = X[3]                 # identical copies tie at cosine 1 with a third ...
    X[20] = 2 * X[3]             # ... scaled copy: ties are ordered by row_a, row_b
    one = near_duplicates(X, np.arange(800), threshold=0.9, block=64)
    two = near_duplicates(X, np.arange(800), threshold=0.9, block=500)
    pd.testing.assert_frame_equal(one, two)
    cos = one["cosine"].to_numpy()
    assert (np.diff(cos) <= 0).all()
    top = one.head(3)
    assert list(zip(top["row_a"], top["row_b"])) == [(3, 10), (3, 20), (10, 20)]
    assert top["identical"].all()
    assert one["identical"].sum() == 3


def test_near_copy_across_two_species_is_flagged():
    X, _ = _planted(300, 32, 0, seed=5)
    X[7] = X[200] + np.float32(1e-3)
    species = ["Picus viridis"] * 150 + ["Picus canus"] * 150
    split = ["train"] * 100 + ["test"] * 200
    pairs = near_duplicates(X, [f"f{i}.jpg" for i in range(300)], threshold=0.95, species=species, split=split)
    assert len(pairs) == 1
    row = pairs.iloc[0]
    assert (row["id_a"], row["id_b"]) == ("f7.jpg", "f200.jpg")
    assert (row["species_a"], row["species_b"]) == ("Picus viridis", "Picus canus")
    assert bool(row["crosses_species"]) and not bool(row["same_species"])
    assert bool(row["crosses_split"]) and (row["split_a"], row["split_b"]) == ("train", "test")
    assert not bool(row["identical"])


def test_unlabelled_rows_cross_nothing():
    X, _ = _planted(50, 16, 0, seed=6)
    X[1] = X[0]
    X[3] = X[2]
    pairs = near_duplicates(X, range(50), threshold=0.99, species=["a", None] + ["b", "a"] + ["c"] * 46,
                            split=[np.nan, "test"] + ["train", "test"] + ["test"] * 46)
    first = pairs.set_index("row_a")
    assert not first.loc[0, "crosses_species"] and not first.loc[0, "same_species"]
    assert not first.loc[0, "crosses_split"]
    assert first.loc[2, "crosses_species"] and first.loc[2, "crosses_split"]


def test_zero_rows_pair_with_nothing_and_empty_result_has_columns():
    X = np.eye(4, dtype=np.float32)
    X[2] = 0
    pairs = near_duplicates(X, list("abcd"), threshold=0.5, species=list("wxyz"), split=list("ttss"))
    assert len(pairs) == 0
    assert {"id_a", "id_b", "cosine", "identical", "crosses_species", "crosses_split"} <= set(pairs.columns)
    summary = duplicate_summary(pairs, 4)
    assert summary.set_index("metric")["value"].to_dict() == {
        "near_duplicate_pairs": 0, "identical_pairs": 0, "pairs_crossing_species": 0,
        "pairs_crossing_split": 0, "images_in_pairs": 0}


def test_summary_counts_long_format():
    X, _ = _planted(400, 32, 0, seed=7)
    X[1] = X[0]                                    # identical, same species, same split
    X[5] = X[4] + np.float32(1e-3)                  # near copy across species and split
    X[6] = X[4] + np.float32(-1e-3)                 # near copy of the same image: 4-5, 4-6, 5-6
    species = ["s0", "s0", "s1", "s1", "s1", "s2", "s1"] + ["s3"] * 393
    split = ["train"] * 5 + ["test"] * 395
    pairs = near_duplicates(X, range(400), threshold=0.95, species=species, split=split)
    summary = duplicate_summary(pairs, 400)
    assert list(summary.columns) == SUMMARY_COLUMNS
    assert (summary["rank"] == "all").all() and (summary["n"] == 400).all()
    values = summary.set_index("metric")["value"].to_dict()
    assert values == {"near_duplicate_pairs": 4, "identical_pairs": 1, "pairs_crossing_species": 2,
                      "pairs_crossing_split": 2, "images_in_pairs": 5}
    assert "0.95" in summary.loc[summary["metric"] == "near_duplicate_pairs", "note"].iloc[0]
    bare = duplicate_summary(near_duplicates(X, range(400), threshold=0.95), 400)
    assert set(bare["metric"]) == {"near_duplicate_pairs", "identical_pairs", "images_in_pairs"}


@pytest.mark.parametrize("kwargs, match", [
    ({"threshold": 0.0}, "'threshold'"),
    ({"threshold": 1.5}, "'threshold'"),
    ({"block": 0}, "'block'"),
    ({"species": ["a"] * 3}, "'species'.*10"),
    ({"split": ["train"] * 11}, "'split'.*10"),
    ({"threshold": 0.1, "max_pairs": 5}, "more than 5 candidate pairs"),
])
def test_bad_parameters_are_named(kwargs, match):
    X = np.random.default_rng(0).standard_normal((10, 3))
    with pytest.raises(InputError, match=match):
        near_duplicates(X, range(10), **kwargs)


def test_non_finite_rows_and_wrong_shapes_refused():
    X = np.ones((5, 3))
    X[3, 1] = np.nan
    with pytest.raises(InputError, match="rows 3"):
        near_duplicates(X, range(5))
    with pytest.raises(InputError, match="2-D"):
        near_duplicates(np.ones(5), range(5))
    with pytest.raises(InputError, match="'ids'"):
        near_duplicates(np.ones((5, 3)), range(4))


# ---------------------------------------------------------------------------------------------------------
# training overlap
# ---------------------------------------------------------------------------------------------------------


def test_overlap_with_planted_json_in_both_key_forms(tmp_path):
    seen = {"Mobula birostris": ["/x/1.jpg"], "naja atra": [],
            "Animalia-Chordata-Aves-Passeriformes-Fringillidae-Geospiza-conirostris": ["/x/2.jpg"],
            "Plantae-Tracheophyta-Magnoliopsida-Asterales-Asteraceae-Symphyotrichum-novae-angliae": [],
            "Anguilla": []}
    path = tmp_path / "seen_in_training.json"
    path.write_text(json.dumps(seen))
    names = ["Mobula birostris", "Naja atra", "Geospiza conirostris", "Mobula birostris", None,
             "Symphyotrichum novae-angliae", "Anguilla anguilla", "Hippocampus kuda", "Naja_atra", ""]
    table = training_overlap(names, path)
    assert list(table.columns) == OVERLAP_COLUMNS
    got = table.set_index("species")
    assert got["matched_as"].to_dict() == {
        "Mobula birostris": "exact", "Naja atra": "case-insensitive", "Geospiza conirostris": "binomial",
        "Symphyotrichum novae-angliae": "binomial", "Anguilla anguilla": "", "Hippocampus kuda": "",
        "Naja_atra": "case-insensitive"}
    assert got.loc["Geospiza conirostris", "matched_key"].endswith("Geospiza-conirostris")
    assert got["seen"].to_dict()["Anguilla anguilla"] is False     # a genus-only key matches no species
    assert got.loc["Mobula birostris", "n_images"] == 2
    summary = overlap_summary(table).set_index("metric")
    assert summary["value"].to_dict() == {"species_seen_in_training": 5, "species_unseen_in_training": 2,
                                          "images_of_seen_species": 6, "images_of_unseen_species": 2}
    assert summary.loc["species_seen_in_training", "n"] == 7 and summary.loc["images_of_seen_species", "n"] == 8
    assert (summary["rank"] == "species").all()


def test_overlap_from_list_text_file_and_names(tmp_path):
    listed = tmp_path / "taxa.json"
    listed.write_text(json.dumps(["Naja atra", "Anguilla anguilla"]))
    text = tmp_path / "taxa.txt"
    text.write_text("# trained on\nNaja atra\n\n  Anguilla anguilla  \n")
    for source in (listed, str(text), ["Naja atra", "Anguilla anguilla"]):
        assert read_training_taxa(source) == ["Naja atra", "Anguilla anguilla"]
        table = training_overlap(["Anguilla anguilla", "Mobula birostris"], source)
        assert table["seen"].tolist() == [True, False]
        assert table["matched_as"].tolist() == ["exact", ""]


def test_overlap_bad_inputs(tmp_path):
    with pytest.raises(InputError, match="'trained_on'.*not a file"):
        training_overlap(["Naja atra"], tmp_path / "missing.json")
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    with pytest.raises(InputError, match="not valid JSON"):
        training_overlap(["Naja atra"], bad)
    with pytest.raises(InputError, match="no taxon names"):
        training_overlap(["Naja atra"], [])


def test_overlap_with_the_real_rare_species_files(shared):
    """Rare Species: its 400 species are the *unseen* ones; seen_in_training.json holds 400 others."""
    root = shared("rare_species")
    meta = pd.read_csv(root / "rare_species_metadata.csv")
    names = meta["class"].tolist()                      # one per image, "Genus epithet"
    seen = training_overlap(names, root / "seen_in_training.json")
    assert len(seen) == 400 and seen["n_images"].sum() == len(meta)
    assert seen["seen"].sum() == 0                      # none of the benchmark's species were in training
    # The unseen file is keyed by full lineage: every species matches it through its binomial.
    unseen = training_overlap(names, root / "unseen_in_training.json")
    assert unseen["seen"].all() and (unseen["matched_as"] == "binomial").all()
    # The seen file's own keys match themselves exactly.
    keys = list(json.loads((root / "seen_in_training.json").read_text()))
    self_match = training_overlap(keys, root / "seen_in_training.json")
    assert self_match["seen"].all() and (self_match["matched_as"] == "exact").all()


def test_reads_an_hdf5_dataset_by_blocks_like_an_array(tmp_path):
    h5py = pytest.importorskip("h5py")
    X, _ = _planted(700, 4, 5, seed=8)
    with h5py.File(tmp_path / "emb.h5", "w") as f:
        f["emb"] = X
    with h5py.File(tmp_path / "emb.h5", "r") as f:
        from_file = near_duplicates(f["emb"], range(700), threshold=0.99, block=128)
    pd.testing.assert_frame_equal(from_file, near_duplicates(X, range(700), threshold=0.99, block=128))
    assert len(from_file) > 5
