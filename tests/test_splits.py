"""Splits: disjointness, stratification, species-disjoint coverage, k-shot folds, determinism, errors."""

from __future__ import annotations

import numpy as np
import pytest

from latent.errors import InputError
from latent.ranks import Rank
from latent.splits import kshot_split, random_split, species_disjoint_mask, species_disjoint_split
from latent.taxonomy import Taxonomy


def make_taxonomy(genera: "list[list[int]]", *, families: "list[int] | None" = None, unlabelled: int = 0) -> Taxonomy:
    """One row per image. ``genera[g]`` lists the image count of each species of genus ``g``;
    ``families[g]`` is the family of genus ``g`` (default: one family per genus). ``unlabelled`` rows
    known only to the genus of genus 0 are appended at the end."""
    families = families if families is not None else list(range(len(genera)))
    rows = []
    for g, species in enumerate(genera):
        for s, n in enumerate(species):
            lineage = ["Animalia", "Chordata", "Aves", "Ord", f"Fam{families[g]}", f"Gen{g}", f"Gen{g} sp{s}"]
            rows.extend([lineage] * n)
    for _ in range(unlabelled):
        rows.append(["Animalia", "Chordata", "Aves", "Ord", f"Fam{families[0]}", "Gen0", ""])
    return Taxonomy.from_lineages(rows)


def species_of(tax: Taxonomy, rows: np.ndarray) -> np.ndarray:
    return tax.codes("species")[rows]


# ------------------------------------------------------------------------------------------ random
def test_random_split_is_disjoint_and_stratified_by_species():
    counts = [1, 2, 5, 10, 20]
    tax = make_taxonomy([counts], unlabelled=3)
    train, test = random_split(tax, test_fraction=0.3, seed=0)
    assert len(np.intersect1d(train, test)) == 0
    labelled = np.flatnonzero(tax.labelled("species"))
    np.testing.assert_array_equal(np.union1d(train, test), labelled)  # unlabelled rows take no part
    assert np.all(np.diff(train) > 0) and np.all(np.diff(test) > 0)
    # per species: round(0.3 n), at least 1 and at most n - 1; the single image goes to train
    expected_test = {1: 0, 2: 1, 5: 2, 10: 3, 20: 6}
    all_species = species_of(tax, labelled)
    for code in np.unique(all_species):
        n = int((all_species == code).sum())
        assert int((species_of(tax, test) == code).sum()) == expected_test[n], n
        assert int((species_of(tax, train) == code).sum()) == n - expected_test[n]


def test_random_split_is_seeded_and_respects_rows():
    tax = make_taxonomy([[20, 20], [20]])
    a = random_split(tax, seed=3)
    b = random_split(tax, seed=3)
    c = random_split(tax, seed=4)
    np.testing.assert_array_equal(a[0], b[0])
    np.testing.assert_array_equal(a[1], b[1])
    assert not np.array_equal(a[1], c[1])
    subset = np.arange(0, 60, 2)
    train, test = random_split(tax, subset, test_fraction=0.5, seed=0)
    np.testing.assert_array_equal(np.union1d(train, test), subset)
    mask = np.zeros(tax.n_rows, dtype=bool)
    mask[subset] = True
    np.testing.assert_array_equal(random_split(tax, mask, test_fraction=0.5, seed=0)[1], test)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"rows": np.array([0, 99])}, r"outside 0\.\.59: 99"),
        ({"rows": np.array([1, 1, 2])}, "repeats rows: 1"),
        ({"rows": np.array([0.5, 1.0])}, "1-d array of row indices"),
        ({"test_fraction": 1.0}, r"'test_fraction' parameter of random_split must be a number in \(0, 1\)"),
        ({"test_fraction": 0}, "'test_fraction'"),
        ({"seed": -1}, "'seed' parameter of random_split must be an integer >= 0"),
    ],
)
def test_random_split_rejects_bad_input(kwargs, match):
    tax = make_taxonomy([[20, 20], [20]])
    with pytest.raises(InputError, match=match):
        random_split(tax, **kwargs)


# ------------------------------------------------------------------------------------------ species-disjoint
def test_species_disjoint_split_holds_out_whole_species_with_their_genus_in_train():
    genera = [[4] * n for n in (1, 1, 2, 3, 4, 5, 6, 10)]  # two single-species genera, 30 species in larger ones
    tax = make_taxonomy(genera)
    train, test = species_disjoint_split(tax, test_fraction=0.3, seed=0)
    assert len(np.intersect1d(train, test)) == 0
    np.testing.assert_array_equal(np.union1d(train, test), np.arange(tax.n_rows))
    train_species, test_species = set(species_of(tax, train)), set(species_of(tax, test))
    assert not train_species & test_species  # no test species was seen in training
    genus = tax.codes("genus")
    assert set(genus[test]) <= set(genus[train])  # every test species' genus is in train
    # single-species genera go to train
    assert {0, 1} <= set(genus[train]) and not {0, 1} & set(genus[test])
    # round(0.3 * 30) = 9 test species, and each genus keeps at least one species in train
    assert len(test_species) == 9
    for g in np.unique(genus):
        in_genus = np.unique(tax.codes("species")[genus == g])
        assert len(set(in_genus) & train_species) >= 1
    # the split is of species; all of a species' images go together
    for s in test_species:
        assert np.all(np.isin(np.flatnonzero(tax.codes("species") == s), test))


def test_species_disjoint_split_is_seeded():
    tax = make_taxonomy([[3] * 4 for _ in range(6)])
    a = species_disjoint_split(tax, seed=1)
    b = species_disjoint_split(tax, seed=1)
    c = species_disjoint_split(tax, seed=2)
    np.testing.assert_array_equal(a[1], b[1])
    assert not np.array_equal(a[1], c[1])


def test_species_disjoint_split_can_climb_to_family():
    # family 0: genera 0..3 with one species each; family 1: genus 4 with 4 species; family 2: one species
    tax = make_taxonomy([[3], [3], [3], [3], [3, 3, 3, 3], [3]], families=[0, 0, 0, 0, 1, 2])
    _, test_genus = species_disjoint_split(tax, seed=0)
    genus = tax.codes("genus")
    assert set(genus[test_genus]) == {4}  # only the genus with several species contributes
    train, test = species_disjoint_split(tax, seed=0, coverage_rank="family")
    family = tax.codes("family")
    test_species = set(species_of(tax, test))
    assert len(test_species) > len(set(species_of(tax, test_genus)))
    assert set(family[test]) <= set(family[train])  # every test species' family is in train
    assert 2 not in set(family[test])  # the lone species of family 2 stays in train
    assert set(family[test]) == {0, 1}


def test_species_disjoint_rule_is_a_function_of_lineage_codes_and_seed():
    # The rule of species_disjoint_split on the species' lineage codes alone: a permutation null applies
    # it to permuted codes (same tree shape, species moved) and gets the same kind of split.
    genera = [[4] * n for n in (1, 1, 2, 3, 4, 5, 6, 10)]
    tax = make_taxonomy(genera, families=[0, 0, 1, 1, 2, 2, 3, 3])
    species = tax.codes("species")
    for seed in range(3):
        for cover in (Rank.GENUS, Rank.FAMILY):
            in_test = species_disjoint_mask(tax.species_codes, 0.3, seed, cover)
            _, test = species_disjoint_split(tax, test_fraction=0.3, seed=seed, coverage_rank=cover)
            np.testing.assert_array_equal(np.flatnonzero(in_test), np.unique(species[test]))
    rng = np.random.default_rng(0)
    observed = species_disjoint_mask(tax.species_codes, 0.3, 0)
    for _ in range(5):
        codes = tax.species_codes[rng.permutation(tax.n_species)]
        in_test = species_disjoint_mask(codes, 0.3, 0)
        assert in_test.sum() == observed.sum()  # same tree shape, same number of test species
        for r in (Rank.GENUS, Rank.FAMILY):  # every test species' taxon is trained under the permuted tree
            assert set(codes[in_test, r]) <= set(codes[~in_test, r])


def test_species_disjoint_split_errors():
    tax = make_taxonomy([[3], [3], [3]])  # only single-species genera
    with pytest.raises(InputError, match="no genus with two or more species.*higher coverage_rank"):
        species_disjoint_split(tax)
    with pytest.raises(InputError, match="'coverage_rank' parameter of species_disjoint_split must be genus or a higher rank"):
        species_disjoint_split(make_taxonomy([[3, 3]]), coverage_rank="species")


# ------------------------------------------------------------------------------------------ k-shot
def test_kshot_split_counts_and_folds():
    tax = make_taxonomy([[6, 8], [10, 7, 9]], unlabelled=2)
    labelled = np.flatnonzero(tax.labelled("species"))
    for shots in (1, 5):
        support, query = kshot_split(tax, shots=shots, fold=0)
        assert len(np.intersect1d(support, query)) == 0
        np.testing.assert_array_equal(np.union1d(support, query), labelled)
        _, per_species = np.unique(species_of(tax, support), return_counts=True)
        assert len(per_species) == 5 and np.all(per_species == shots)
    same = kshot_split(tax, shots=1, fold=2)
    np.testing.assert_array_equal(same[0], kshot_split(tax, shots=1, fold=2)[0])
    folds = [kshot_split(tax, shots=1, fold=f)[0] for f in range(5)]
    assert len({tuple(f) for f in folds}) > 1  # folds differ
    # fold f draws with seed + fold (the BioCLIP papers' protocol)
    np.testing.assert_array_equal(kshot_split(tax, shots=2, fold=3, seed=0)[0], kshot_split(tax, shots=2, fold=0, seed=3)[0])


def test_kshot_split_lists_species_with_too_few_images():
    tax = make_taxonomy([[5, 2], [6, 1]])
    with pytest.raises(InputError, match=r"2 of 4 species have fewer than shots \+ 1 = 3 images.*Gen0 sp1 \(2 images\), "
                                          r"Gen1 sp1 \(1 image\).*Lower --shots, or filter"):
        kshot_split(tax, shots=2, fold=0)
    many = make_taxonomy([[1] * 25])
    with pytest.raises(InputError, match=r"\(and 5 more, 25 in all\)"):
        kshot_split(many, shots=1, fold=0)
    with pytest.raises(InputError, match="'shots' parameter of kshot_split must be an integer >= 1"):
        kshot_split(tax, shots=0, fold=0)
    with pytest.raises(InputError, match="'fold' parameter"):
        kshot_split(tax, shots=1, fold=-1)
