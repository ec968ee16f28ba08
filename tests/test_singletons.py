"""Data where most species have one image and most genera one species (a random sample of a collection,
like the 1,030 real BioCLIP 2 embeddings of tol1k): what can be tested is tested on the right units, a
planted hierarchy is found at genus and above, a null is not, and every answer says on how many units.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import silhouette_score

import latent
from latent.coverage import COVERAGE_COLUMNS, rank_coverage
from latent.errors import InputError
from latent.probes.base import ProbeData, ProbeOptions
from latent.probes.clusters import probe_clusters
from latent.ranks import RANK_NAMES, Rank
from latent.splits import coverage, predictable_truth, species_disjoint_split
from latent.synthetic import make_hierarchical
from latent.taxonomy import Taxonomy


def lineages() -> list[list[str]]:
    """2 kingdoms x 3 phyla x 3 classes x 3 orders x 2 families x 3 genera; one genus in three has 3 species,
    the others 1 (540 species in 324 genera)."""
    rows = []
    for k in range(2):
        for p in range(3):
            for c in range(3):
                for o in range(3):
                    for f in range(2):
                        for g in range(3):
                            genus = f"G{k}{p}{c}{o}{f}{g}"
                            n_species = 3 if g == 0 else 1
                            rows += [[f"K{k}", f"P{k}{p}", f"C{k}{p}{c}", f"O{k}{p}{c}{o}", f"F{k}{p}{c}{o}{f}",
                                      genus, f"{genus} s{s}"] for s in range(n_species)]
    return rows


def singleton_heavy(signal: float, seed: int) -> tuple[np.ndarray, Taxonomy]:
    """Images of :func:`lineages`: every fifth species has 3 images, the others one (~86% of species)."""
    data = make_hierarchical(Taxonomy.from_lineages(lineages()), per_species=3, dim=32, signal=signal, seed=seed)
    tax = data.taxonomy
    species = tax.codes(Rank.SPECIES)
    first_of_species = np.r_[True, species[1:] != species[:-1]]
    keep = first_of_species | (species % 5 == 0)
    return data.embeddings[keep], tax.select_rows(np.flatnonzero(keep))


def test_the_data_is_singleton_heavy():
    X, tax = singleton_heavy(1.0, 0)
    counts = np.bincount(tax.codes(Rank.SPECIES))
    assert tax.n_species == 540 and (counts == 1).mean() > 0.75
    genera = pd.Series(tax.species_table()["genus"]).value_counts()
    assert (genera == 1).sum() == 216 and (genera == 3).sum() == 108


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_planted_hierarchy_found_at_every_rank_with_units(seed):
    X, tax = singleton_heavy(2.0, seed)
    probes = latent.run_probes(X, tax, probes="levels,alignment", permutations=199, seed=seed)
    answer = latent.verdicts(probes.metrics).set_index("rank")
    for rank in ("phylum", "class", "order", "family", "genus", "species", "all"):
        assert answer.loc[rank, "verdict"] == "yes", (seed, rank, answer.loc[rank].to_dict())
    # 2 kingdoms of 3 phyla: 10 distinct restricted permutations cannot reach p <= 0.05, whatever the signal
    assert answer.loc["kingdom", "verdict"] == "not testable"
    assert "10 distinct restricted permutations" in answer.loc["kingdom", "reason"]
    # genus is tested on the species of the 108 genera of 3 species (324), species on the species with 3 images
    assert answer.loc["genus", "n_species"] == 324
    counts = np.bincount(tax.codes(Rank.SPECIES))
    assert answer.loc["species", "n_species"] == int((counts >= 2).sum())


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_no_hierarchy_is_never_a_yes(seed):
    X, tax = singleton_heavy(0.0, seed)
    probes = latent.run_probes(X, tax, probes="levels,alignment", permutations=199, seed=seed)
    answer = latent.verdicts(probes.metrics)
    assert not (answer["verdict"] == "yes").any(), answer[["rank", "verdict", "p_adjusted"]]
    # and not for want of a test: the ranks the planted data answers 'yes' at are testable here too
    tested = answer.set_index("rank").loc[["phylum", "class", "order", "family", "genus", "species", "all"], "verdict"]
    assert (tested == "no").all(), tested


def test_coverage_table_counts_the_units_of_the_primary_test():
    X, tax = singleton_heavy(1.0, 0)
    probes = latent.run_probes(X, tax, probes="levels,clusters", permutations=19, seed=0,
                               settings={"clusters": {"n_boot": 0}, "levels": {"n_boot": 0}})
    table = rank_coverage(probes.species, probes.metrics).set_index("rank")
    assert list(table.columns[:len(COVERAGE_COLUMNS) - 1]) == COVERAGE_COLUMNS[1:]
    levels = probes.metrics[probes.metrics["probe"] == "levels"].set_index("rank")
    for rank in RANK_NAMES[1:-1]:
        # counted from the species table alone, it agrees with what the levels probe used
        assert table.loc[rank, "species_tested"] == levels.loc[rank, "n_species"], rank
    assert table.loc["kingdom", "primary test on"].startswith("not testable: only 10 distinct")
    assert table.loc["genus", "taxa_tested"] == 108
    assert table.loc["genus", "primary test on"] == "324 species in 108 taxa"
    assert "216 of 324 taxa with one species" in table.loc["genus", "not testable"]
    counts = np.bincount(tax.codes(Rank.SPECIES))
    n_multi = int((counts >= 2).sum())
    # at species the units are images: species of 2 or more images with a congener (the contrast)
    genus_of = np.array([tax.lineage(Rank.SPECIES, s)[Rank.GENUS] for s in range(len(counts))])
    genus_size = pd.Series(genus_of).value_counts()
    tested = int(((counts >= 2) & (genus_size.reindex(genus_of).to_numpy() >= 2)).sum())
    assert levels.loc["species", "n_species"] == tested
    assert table.loc["species", "primary test on"] == (f"images of {tested} species (2 or more images, and another "
                                                       "species in the genus)")
    alone = n_multi - tested
    assert table.loc["species", "not testable"] == (f"{540 - n_multi} species with one image" + (
        f"; {alone} species of several images alone in their genus" if alone else ""))


def test_coverage_table_hand_case():
    # genus Aa: two species (3 and 1 images); genus Bb: one species of 2 images, alone in its genus
    lineage = ["Animalia", "Chordata", "Aves", "Passeriformes", "Paridae"]
    species = pd.DataFrame([lineage + ["Aa", "Aa x"], lineage + ["Aa", "Aa y"], lineage + ["Bb", "Bb z"]],
                           columns=list(RANK_NAMES))
    species["images"] = [3, 1, 2]
    table = rank_coverage(species).set_index("rank")
    assert table.loc["genus", ["taxa", "species", "images"]].tolist() == [2, 3, 6]
    assert table.loc["genus", "not testable"] == "1 of 2 taxa with one species"
    assert table.loc["species", "not testable"] == ("1 species with one image; 1 species of several images alone "
                                                    "in their genus")
    assert table.loc["family", "primary test on"] == "-" and table.loc["family", "evaluation scored on"] == "-"


def test_coverage_of_a_rank_with_its_parents_partition_is_the_parents():
    """One family per order: order and family are one level, tested once; the family row must not say
    "0 taxa" (no family has a sibling family in its order) but what the shared test used."""
    rows = []
    for o in range(4):
        for g in range(2):
            for sp in range(2):
                rows.append(["Animalia", "Chordata", "Aves", f"O{o}", f"F{o}", f"G{o}{g}", f"G{o}{g} s{sp}"])
    species = pd.DataFrame(rows, columns=list(RANK_NAMES))
    species["images"] = 3
    X = np.random.default_rng(0).normal(size=(len(species) * 3, 8))
    tax = Taxonomy(np.repeat(species[list(RANK_NAMES)].to_numpy(), 3, axis=0))
    probes = latent.run_probes(X, tax, probes="levels", permutations=19, seed=0, settings={"levels": {"n_boot": 0}})
    table = rank_coverage(probes.species, probes.metrics).set_index("rank")
    assert table.loc["order", "taxa_tested"] == 4
    assert table.loc["family", "primary test on"] == table.loc["order", "primary test on"]
    assert table.loc["family", "taxa_tested"] == 4 and table.loc["family", "species_tested"] == 16


def test_clusters_leave_one_image_taxa_out():
    """At genus, the silhouette and Calinski-Harabasz are those of the genera with 2 or more images; adding
    one-image genera changes neither (sklearn would score each one 0 and dilute the mean)."""
    X, tax = singleton_heavy(1.0, 0)
    data = ProbeData.from_arrays(X, tax)
    res = probe_clusters(data, ProbeOptions(permutations=0, extra={"clusters": {"n_boot": 0}}))
    rows = res.to_frame().set_index(["rank", "metric"])
    genus_codes = data.codes[data.species, Rank.GENUS]
    sizes = np.bincount(genus_codes)
    keep = sizes[genus_codes] >= 2
    Xn = np.asarray(data.X, dtype=np.float64)
    Xn /= np.linalg.norm(Xn, axis=1, keepdims=True)
    expected = silhouette_score(Xn[keep], genus_codes[keep], metric="cosine")
    sil = rows.loc[("genus", "silhouette")]
    assert sil["value"] == pytest.approx(expected, rel=1e-9)
    assert sil["n"] == keep.sum() and sil["unit"] == "image" and sil["n_taxa_single"] == int((sizes == 1).sum())
    assert sil["n_taxa"] == int((sizes >= 2).sum())
    # species: only the species with 2 or more images are classes
    counts = np.bincount(tax.codes(Rank.SPECIES))
    assert rows.loc[("species", "silhouette"), "n_taxa"] == int((counts >= 2).sum())


def test_predictable_truth_hand_case():
    # test rows: genus 5 never trained, family 2 trained; species never trained (species-disjoint)
    true = np.array([[0, 0, 0, 0, 2, 5, 9], [0, 0, 0, 0, 2, 4, 8], [0, 0, 0, 1, 3, 6, -1]])
    train = np.array([[0, 0, 0, 0, 2, 4, 7], [0, 0, 0, 1, 3, 6, 1]])
    masked = predictable_truth(true, train, ranks=range(6))
    assert masked.tolist() == [[0, 0, 0, 0, 2, -1, 9], [0, 0, 0, 0, 2, 4, 8], [0, 0, 0, 1, 3, 6, -1]]
    notes, left_out = coverage(true, train, ranks=range(6))
    assert left_out == {"kingdom": 0, "phylum": 0, "class": 0, "order": 0, "family": 0, "genus": 1}
    assert notes == {"genus": "scored on 2 of 3 test images (1 of 2 species) whose genus has a training image"}


def test_species_disjoint_evaluation_scores_each_rank_on_predictable_images():
    X, tax = singleton_heavy(2.0, 0)
    ev = latent.evaluate(X, tax, method="knn", split="species-disjoint", n_boot=0)
    top1 = ev.metrics[ev.metrics["metric"] == "top1"].set_index("rank")
    # species are held out at every rank: genus is scored only on held-out species with a congener in training
    train, test = species_disjoint_split(tax, test_fraction=0.3, seed=0, coverage_rank="kingdom")
    genus_codes = tax.codes(Rank.GENUS)
    predictable = np.isin(genus_codes[test], genus_codes[train])
    assert top1.loc["genus", "n"] == predictable.sum() < len(test) == top1.loc["family", "n"]
    assert "whose genus has a training image" in top1.loc["genus", "note"]
    assert ev.info["n_test_unpredictable"]["genus"] == len(test) - predictable.sum()
    assert "species" not in top1.index  # never predictable in a species-disjoint split
    # planted: far above chance at every scored rank
    for rank in ("kingdom", "phylum", "class", "order", "family", "genus"):
        assert top1.loc[rank, "value"] > 0.8, rank
    # the strict split (a congener in training for every test species) is still available
    strict = latent.evaluate(X, tax, method="knn", split="species-disjoint", coverage_rank="genus", n_boot=0)
    strict_top1 = strict.metrics[strict.metrics["metric"] == "top1"].set_index("rank")
    assert strict_top1.loc["genus", "n"] == strict_top1.loc["kingdom", "n"] < len(test)


def test_species_disjoint_no_hierarchy_is_at_chance():
    X, tax = singleton_heavy(0.0, 1)
    ev = latent.evaluate(X, tax, method="knn", split="species-disjoint", n_boot=200)
    top1 = ev.metrics[ev.metrics["metric"] == "top1"].set_index("rank")
    for rank in ("order", "family", "genus"):
        assert top1.loc[rank, "ci_low"] < 2.5 / top1.loc[rank, "n_taxa"] or top1.loc[rank, "value"] < 0.2, rank


def test_bad_coverage_rank_is_refused_before_work():
    X, tax = singleton_heavy(1.0, 0)
    with pytest.raises(InputError, match="coverage_rank.*genus or a higher rank.*'species'"):
        latent.evaluate(X, tax, method="knn", split="species-disjoint", coverage_rank="species")
    with pytest.raises(InputError, match="coverage_rank"):
        latent.evaluate(X, tax, method="knn", coverage_rank="tribe")


def test_cli_coverage_rank(planted_cache, tmp_path, capsys):
    import json

    from latent.cli import main

    out = tmp_path / "ev"
    assert main(["evaluate", str(planted_cache), "--method", "knn", "--split", "species-disjoint", "--coverage-rank",
                 "family", "--out", str(out), "--bootstrap", "0"]) == 0
    assert json.loads((out / "run.json").read_text())["coverage_rank"] == "family"
    with pytest.raises(SystemExit) as exc:
        main(["evaluate", str(planted_cache), "--method", "knn", "--coverage-rank", "species", "--out", str(out)])
    assert exc.value.code == 2 and "--coverage-rank" in capsys.readouterr().err
