"""Taxonomy: parsing real-world tables, identity by lineage, conflicts, empties, distances."""

from __future__ import annotations

import io
import lzma

import numpy as np
import pandas as pd
import pytest

from latent.errors import TaxonomyError
from latent.ranks import RANK_NAMES, Rank, parse_rank
from latent.synthetic import builtin_taxonomy_path
from latent.taxonomy import Taxonomy, lca_height

HEADER = "kingdom,phylum,class,order,family,genus,species\n"


def table(text: str) -> pd.DataFrame:
    return pd.read_csv(io.StringIO(text), dtype=str, keep_default_na=False)


BIRDS = table(
    HEADER
    + "Animalia,Chordata,Aves,Procellariiformes,Diomedeidae,Phoebastria,Phoebastria nigripes\n"
    + "Animalia,Chordata,Aves,Procellariiformes,Diomedeidae,Phoebastria,Phoebastria immutabilis\n"
    + "Animalia,Chordata,Aves,Procellariiformes,Diomedeidae,Phoebetria,Phoebetria fusca\n"
    + "Animalia,Chordata,Aves,Charadriiformes,Alcidae,Aethia,Aethia pusilla\n"
    + "Animalia,Chordata,Mammalia,Carnivora,Canidae,Canis,Canis lupus\n"
    + "Animalia,Arthropoda,Insecta,Hymenoptera,Apidae,Apis,Apis mellifera\n"
    + "Plantae,Tracheophyta,Magnoliopsida,Rosales,Moraceae,Morus,Morus alba\n"
)


def test_rank_enum_and_parse():
    assert [r.value for r in Rank] == list(range(7))
    assert Rank.KINGDOM == 0 and Rank.SPECIES == 6
    assert RANK_NAMES == ("kingdom", "phylum", "class", "order", "family", "genus", "species")
    assert parse_rank("Class") is Rank.CLASS and parse_rank("cls") is Rank.CLASS and parse_rank(5) is Rank.GENUS
    with pytest.raises(ValueError, match="'rank' parameter must be one of kingdom"):
        parse_rank("tribe")


def test_hand_computed_distances():
    tax = Taxonomy.from_table(BIRDS)
    order = list(tax.species_table()["species"])
    D = pd.DataFrame(tax.distances(), index=order, columns=order)
    assert D.loc["Phoebastria nigripes", "Phoebastria nigripes"] == 0
    assert D.loc["Phoebastria nigripes", "Phoebastria immutabilis"] == 1
    assert D.loc["Phoebastria nigripes", "Phoebetria fusca"] == 2
    assert D.loc["Phoebastria nigripes", "Aethia pusilla"] == 4  # same class
    assert D.loc["Phoebastria nigripes", "Canis lupus"] == 5  # same phylum
    assert D.loc["Phoebastria nigripes", "Apis mellifera"] == 6  # same kingdom
    assert D.loc["Phoebastria nigripes", "Morus alba"] == 7  # different kingdoms
    assert D.dtypes.iloc[0] == np.uint8
    assert (D.to_numpy() == D.to_numpy().T).all()


def test_headers_case_insensitive_cls_and_epithets():
    frame = pd.DataFrame({
        "Kingdom": ["Animalia", "Animalia"], "PHYLUM": ["Mollusca"] * 2, "cls": ["Bivalvia", "Gastropoda"],
        "Order": ["Unionida", "Littorinimorpha"], "family": ["Unionidae", "Thiaridae"],
        "genus": ["Cyclonaias", "Melanoides"], "species": ["tuberculata", "tuberculata"],
        "class": ["Cyclonaias tuberculata", "Melanoides tuberculata"],  # the binomial, not the rank
    })
    tax = Taxonomy.from_table(frame)
    assert list(tax.labels("class")) == ["Bivalvia", "Gastropoda"]
    assert list(tax.labels("species")) == ["Cyclonaias tuberculata", "Melanoides tuberculata"]
    assert tax.n_species == 2  # the shared epithet does not collapse
    frame2 = frame.drop(columns=["cls"]).rename(columns={"class": "class_"})
    assert list(Taxonomy.from_table(frame2).labels("class")) == ["Cyclonaias tuberculata", "Melanoides tuberculata"]


def test_missing_rank_column_named():
    with pytest.raises(TaxonomyError, match=r"no column for rank\(s\) family, genus.*Columns found: kingdom"):
        Taxonomy.from_table(BIRDS.drop(columns=["family", "genus"]))


def test_conflict_lists_rows_of_each_parent():
    bad = pd.concat([BIRDS, table(HEADER + "Animalia,Chordata,Aves,Charadriiformes,Laridae,Aethia,Aethia cristatella\n")])
    with pytest.raises(TaxonomyError) as info:
        Taxonomy.from_table(bad)
    msg = str(info.value)
    assert "genus 'Aethia' (Animalia)" in msg
    assert "family 'Alcidae' in rows 3" in msg and "family 'Laridae' in rows 7" in msg
    # warn keeps both lineages apart instead of raising
    tax = Taxonomy.from_table(bad, on_conflict="warn")
    assert tax.n_taxa("genus") == 7 and len(tax.conflicts) == 1


def test_conflict_row_list_is_truncated_with_a_count():
    rows = [["Animalia", "Chordata", "Aves", "Charadriiformes", "Alcidae", "Aethia", f"Aethia sp{i}"] for i in range(30)]
    rows.append(["Animalia", "Chordata", "Aves", "Charadriiformes", "Laridae", "Aethia", "Aethia x"])
    with pytest.raises(TaxonomyError, match=r"in rows 0, 1, .*, 9 \(and 20 more, 30 in all\)"):
        Taxonomy.from_lineages(rows)


def test_cross_kingdom_homonyms_stay_apart():
    tax = Taxonomy.from_table(builtin_taxonomy_path())
    genera = tax.node_names[Rank.GENUS]
    assert list(genera).count("Morus") == 2 and list(genera).count("Prunella") == 2
    labels = list(tax.species_table()["species"])
    D = tax.distances()
    i, j = labels.index("Morus bassanus"), labels.index("Morus alba")
    assert D[i, j] == 7
    k = labels.index("Morus nigra")
    assert D[j, k] == 1
    with pytest.raises(TaxonomyError, match="ambiguous.*Animalia;Chordata;Aves;Suliformes;Sulidae;Morus"):
        tax.clade_mask("genus", "Morus")
    birds = tax.subset("genus", "Animalia;Chordata;Aves;Suliformes;Sulidae;Morus")
    assert list(birds.labels("species")) == ["Morus bassanus"]
    assert set(np.bincount(D.ravel(), minlength=8).nonzero()[0]) == set(range(8))


def test_empty_intermediate_rank_inherits_parent_identity():
    rows = [
        ["Animalia", "Chordata", "Aves", "Passeriformes", "", "Gen1", "Gen1 a"],
        ["Animalia", "Chordata", "Aves", "Passeriformes", "", "Gen2", "Gen2 b"],
        ["Animalia", "Chordata", "Aves", "Passeriformes", "Fam", "Gen3", "Gen3 c"],
        ["Animalia", "Chordata", "Aves", "Passeriformes", "NA", "Gen1", "Gen1 d"],
    ]
    tax = Taxonomy.from_lineages(rows)
    labels = list(tax.species_table()["species"])
    D = pd.DataFrame(tax.distances(), index=labels, columns=labels)
    assert D.loc["Gen1 a", "Gen2 b"] == 2  # share the unnamed family of Passeriformes
    assert D.loc["Gen1 a", "Gen3 c"] == 3
    assert D.loc["Gen1 a", "Gen1 d"] == 1  # "NA" is empty too
    assert list(tax.labelled("family")) == [False, False, True, False]
    assert tax.n_taxa("family") == 1 and tax.n_nodes("family") == 2
    assert list(tax.codes("family")) == [-1, -1, tax.row_codes[2, Rank.FAMILY], -1]
    counts = tax.counts().set_index("rank")
    assert counts.loc["family", "placeholders"] == 1 and counts.loc["family", "rows_unlabelled"] == 3


def test_unknown_species_rows_are_kept_unlabelled():
    rows = [
        ["Animalia", "Chordata", "Aves", "Passeriformes", "Passeridae", "Passer", "Passer domesticus"],
        ["Animalia", "Chordata", "Aves", "Passeriformes", "Passeridae", "Passer", ""],
        ["", "", "", "", "", "", ""],
    ]
    tax = Taxonomy.from_lineages(rows)
    assert tax.n_rows == 3 and tax.n_species == 1
    assert list(tax.labelled("species")) == [True, False, False]
    assert list(tax.labelled("genus")) == [True, True, False]
    assert list(tax.codes("species")) == [0, -1, -1]
    newick = tax.to_newick()
    assert newick.count("'Passer domesticus'") == 1 and "(:1" not in newick and ",:1" not in newick


def test_distances_match_tree_path_lengths_from_newick():
    skbio = pytest.importorskip("skbio")
    tax = Taxonomy.from_table(builtin_taxonomy_path())
    tree = skbio.TreeNode.read(io.StringIO(tax.to_newick()))
    tips = tree.tip_tip_distances()
    labels = list(tax.species_table()["species"])
    order = [tips.ids.index(name) for name in labels]
    paths = tips.data[np.ix_(order, order)]
    np.testing.assert_array_equal(paths, 2 * tax.distances().astype(float))


def test_lca_height_matches_bruteforce_on_random_trees():
    for seed in range(5):
        rng = np.random.default_rng(seed)
        rows = []
        for i in range(60):
            path = rng.integers(0, 2, size=6)
            names = [f"{'KPCOFG'[r]}{''.join(map(str, path[: r + 1]))}" for r in range(6)]
            rows.append(names + [f"{names[-1]} s{i % 7}"])
        tax = Taxonomy.from_lineages(rows)
        sp = tax.species_table().to_numpy()
        D = tax.distances()
        brute = np.array([[7 - next((r for r in range(7) if a[r] != b[r]), 7) for b in sp] for a in sp])
        np.testing.assert_array_equal(D, brute)
        # ultrametric: d(i,k) <= max(d(i,j), d(j,k))
        assert (D[:, None, :] <= np.maximum(D[:, :, None], D[None, :, :])).all()
        rd = tax.row_distances()
        np.testing.assert_array_equal(rd, lca_height(tax.row_codes, tax.row_codes))


def test_rare_species_real_file(shared):
    path = shared("rare_species", "rare_species_metadata.csv")
    tax = Taxonomy.from_table(path)
    assert tax.n_rows == 11983
    assert [tax.n_taxa(r) for r in ("species", "genus", "family", "order", "class", "phylum")] == [400, 316, 202, 85, 15, 5]
    species = tax.species_table()
    # real epithets repeat across genera, identities do not
    assert species["species"].str.split().str[1].duplicated().any()
    assert species["species"].is_unique
    assert (species["species"].str.split().str[0] == species["genus"]).all()
    assert "Pipile pipile" in set(species["species"])  # a tautonym given as the epithet alone


def test_distances_equal_making_better_mistakes_for_every_pair(shared):
    isa = shared("inat19_mbm", "inaturalist19_isa.txt")
    dist = shared("inat19_mbm", "inaturalist19_ilsvrc_distances.txt.xz")
    parent = {}
    for line in open(isa):
        p, c = line.split()
        parent[c] = p
    leaves = sorted(set(parent) - set(parent.values()))
    assert len(leaves) == 1010

    def lineage(node):
        out = []
        while node in parent and node != "root":
            out.append(node)
            node = parent[node]
        return out[::-1]

    rows = [lineage(leaf) for leaf in leaves]
    assert {len(r) for r in rows} == {7}
    tax = Taxonomy.from_lineages(rows)
    # one-word leaf ids are read as epithets and joined with their genus: keep the leaf id
    labels = [name.split()[-1] for name in tax.species_table()["species"]]
    index = {name: i for i, name in enumerate(labels)}
    D = tax.distances()
    reference = pd.read_csv(lzma.open(dist, "rt"), sep=" ", header=None, names=["a", "b", "d"])
    reference = reference[reference["a"].isin(index) & reference["b"].isin(index)]
    assert len(reference) == 1010 * 1011 // 2  # every unordered pair, diagonal included
    ours = D[reference["a"].map(index).to_numpy(), reference["b"].map(index).to_numpy()]
    np.testing.assert_array_equal(ours, reference["d"].to_numpy())


def test_a_taxonomy_of_repeated_lineages_numbers_rows_as_their_lineages():
    # The tree is built from the distinct lineages and expanded to the rows: two rows share a code at a rank
    # exactly when their names agree from kingdom down to it, codes follow (parent, name) order, and the
    # rows named in warnings are the table's rows, duplicates included.
    rng = np.random.default_rng(3)
    base = [["Animalia", "Chordata", "Aves", "Passeriformes", "Corvidae", "Corvus", "Corvus corax"],
            ["Animalia", "Chordata", "Aves", "Passeriformes", "Corvidae", "Pica", "Pica pica"],
            ["Animalia", "Chordata", "Aves", "Passeriformes", "Corvidae", "Corvus", "Pica hudsonia"],  # mismatch
            ["Animalia", "Chordata", "Mammalia", "Carnivora", "Canidae", "", ""],
            ["Plantae", "Tracheophyta", "Magnoliopsida", "Rosales", "Rosaceae", "Rosa", "Rosa canina"]]
    rows = rng.integers(0, len(base), size=200)
    names = np.array([base[i] for i in rows], dtype=object)
    tax = Taxonomy(names, on_conflict="warn")
    assert tax.row_names.shape == (200, 7)
    for r in range(7):
        prefix = ["|".join(n[: r + 1]) if n[r] else None for n in names.tolist()]
        for i in range(0, 200, 7):
            for j in range(200):
                if prefix[i] is not None and prefix[j] is not None:
                    assert (tax.row_codes[i, r] == tax.row_codes[j, r]) == (prefix[i] == prefix[j])
    assert list(tax.node_names[0]) == ["Animalia", "Plantae"]
    assert (tax.row_codes[rows == 3, 5] == -1).all() and (tax.row_depth[rows == 3] == 4).all()
    mismatched = [i for i, _, _ in tax.genus_mismatches]
    assert mismatched == np.flatnonzero(rows == 2).tolist()
    # the same tree as the distinct lineages alone
    alone = Taxonomy(np.array(base, dtype=object), on_conflict="warn")
    for r in range(7):
        assert list(alone.node_names[r]) == list(tax.node_names[r])
        np.testing.assert_array_equal(alone.row_codes[rows, r], tax.row_codes[:, r])


def test_a_table_of_repeated_rows_is_cleaned_as_every_row():
    table = pd.DataFrame({"kingdom": ["Animalia", " Animalia ", "Animalia", None],
                          "phylum": ["Chordata"] * 4, "class": ["Aves"] * 4, "order": ["Passeriformes"] * 4,
                          "family": ["Corvidae"] * 4, "genus": ["Corvus", "Corvus", "Corvus", "Corvus"],
                          "species": ["corax", "Corvus corax", "corax", "corax"]})
    tax = Taxonomy.from_table(table, on_conflict="warn")
    assert tax.row_names[:, 6].tolist() == ["Corvus corax"] * 4
    assert tax.row_names[:, 0].tolist() == ["Animalia", "Animalia", "Animalia", ""]
    assert tax.row_codes[0, 6] == tax.row_codes[1, 6] == tax.row_codes[2, 6] != tax.row_codes[3, 6]
