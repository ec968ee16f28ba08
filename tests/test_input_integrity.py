"""Inputs that used to crash or pass silently (issue 12): file names, taxonomy tables, --out, one-taxon ranks.

* A file name that is not UTF-8 is skipped, recorded among the failures under a printable name, and the
  other images are embedded (``latent embed`` with the untrained ``random-tiny`` model).
* Taxonomy tables: a rank column given twice (same header, or headers that differ only in case) and a
  header without rows are refused with the column named. A species binomial of another genus than its
  row's genus ("Pica pica" under Corvus, often a synonym) is warned in one line naming the rows and kept
  (the lineage columns decide); ``on_genus_mismatch="raise"`` refuses it. The real tables of
  ../shared/data load, the Tree-of-Life sample with its one synonym row warned.
* ``import --out DIR`` is refused before any work.
* A rank with one true taxon among the test rows: the value as computed, no CI, and the note says "not
  testable", the verdicts' word for such a rank.
"""

from __future__ import annotations

import logging
import math
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from latent.cache import open_cache
from latent.errors import InputError, TaxonomyError
from latent.extract import embed_images
from latent.importer import import_embeddings
from latent.metrics import informative_ranks, evaluate_predictions
from latent.predictions import Predictions
from latent.ranks import RANK_NAMES, Rank
from latent.synthetic import builtin_taxonomy, builtin_taxonomy_path
from latent.taxonomy import Taxonomy

REPO = Path(__file__).resolve().parents[1]
ENV = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
HEADER = "kingdom,phylum,class,order,family,genus,species"
CORVUS = "Animalia,Chordata,Aves,Passeriformes,Corvidae,Corvus"


def latent(*args: object) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "latent.cli", *map(str, args)], capture_output=True, text=True,
                          env=ENV, timeout=300)


# ------------------------------------------------------------------------------ 4. non-UTF-8 file names
@pytest.mark.skipif(sys.platform in ("darwin", "win32"), reason="needs a file system that takes any bytes as a name")
def test_non_utf8_file_name_is_skipped_recorded_and_the_rest_embedded(shared, tmp_path):
    photos = sorted(shared("cub10", "birds", "001.Black_footed_Albatross").glob("*.jpg"))[:3]
    src = tmp_path / "src" / "albatross"
    src.mkdir(parents=True)
    for p in photos:
        shutil.copy(p, src / p.name)
    bad = os.fsencode(src) + b"/bad\xff.jpg"
    shutil.copy(photos[0], bad)  # a real photo: only its name is the problem
    out = tmp_path / "c.h5"
    report = embed_images(tmp_path / "src", out, model="random-tiny", workers=0, batch_size=4, progress=False,
                          store_dtype="float32")
    printable = "albatross/bad\\xff.jpg"
    assert report.embedded == 3 and report.failed == 1 and report.failures[0][0] == printable
    with open_cache(out) as c:
        assert c.complete and sorted(c.ids) == sorted(f"albatross/{p.name}" for p in photos)
        failed = c.failed()
    assert list(failed["id"]) == [printable] and "not valid UTF-8" in failed["reason"][0]
    # the same command again: nothing to do (the bad name is already recorded)
    again = embed_images(tmp_path / "src", out, model="random-tiny", workers=0, progress=False, store_dtype="float32")
    assert again.already_complete


# ------------------------------------------------------------------------------ 5. taxonomy tables
def _table(tmp_path: Path, text: str, name: str = "tax.csv") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


@pytest.mark.parametrize("header, message", [
    (f"{HEADER},species", "has the column 'species' twice (columns 7 and 8)"),
    ("kingdom,phylum,class,order,family,genus,Species,species",
     "has 2 columns for rank species ('Species', 'species'; headers are compared ignoring case and spaces)"),
])
def test_a_rank_column_given_twice_is_refused(tmp_path, header, message):
    path = _table(tmp_path, f"{header}\n{CORVUS},Corvus corax,Corvus corone\n")
    with pytest.raises(InputError) as err:
        Taxonomy.from_table(path)
    assert message in str(err.value) and str(path) in str(err.value)
    proc = latent("taxonomy", path)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert proc.stderr.strip().splitlines() == [f"latent taxonomy: error: {err.value}"]


def test_header_only_taxonomy_says_it_has_no_rows(tmp_path):
    path = _table(tmp_path, HEADER + "\n")
    with pytest.raises(InputError, match=r"has no rows \(only a header\)"):
        Taxonomy.from_table(path)
    proc = latent("taxonomy", path)
    assert proc.returncode == 2 and "read-only" not in proc.stderr and "has no rows" in proc.stderr
    # an empty DataFrame (e.g. an empty cache's labels) is an empty taxonomy, not an error
    assert Taxonomy.from_table(pd.DataFrame({r: [] for r in RANK_NAMES})).n_rows == 0


def test_species_of_another_genus_is_warned_by_default_and_refused_when_asked(tmp_path, caplog):
    import latent.taxonomy as taxonomy_module

    taxonomy_module._WARNED_MISMATCHES.clear()  # warnings are once per (genus, species) pair and process
    path = _table(tmp_path, f"{HEADER}\n{CORVUS},Corvus corax\n{CORVUS},Pica pica\n{CORVUS},corone\n")
    with caplog.at_level(logging.WARNING, logger="latent"):
        tax = Taxonomy.from_table(path)  # warned and kept as written
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1 and "\n" not in warnings[0]
    assert "1 row(s) have a species binomial of another genus" in warnings[0]
    assert "row 1: 'Pica pica' under genus 'Corvus'" in warnings[0] and "check for synonyms" in warnings[0]
    assert list(tax.labels("species")) == ["Corvus corax", "Pica pica", "Corvus corone"]
    assert tax.genus_mismatches == ((1, "Corvus", "Pica pica"),)
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="latent"):
        Taxonomy.from_table(path)  # the same pair again: not warned twice
    assert not [r for r in caplog.records if r.levelno == logging.WARNING]
    with pytest.raises(TaxonomyError) as err:
        Taxonomy.from_table(path, on_genus_mismatch="raise")
    assert "row 1: genus 'Corvus', species 'Pica pica'" in str(err.value) and "row 0" not in str(err.value)
    with pytest.raises(InputError, match="'on_genus_mismatch' parameter of Taxonomy must be 'warn' or 'raise'"):
        Taxonomy.from_table(path, on_genus_mismatch="ignore")
    # names with two parents keep raising by default
    two = _table(tmp_path, f"{HEADER}\n{CORVUS},corax\nAnimalia,Chordata,Aves,Passeriformes,Paridae,Corvus,major\n",
                 "two.csv")
    with pytest.raises(TaxonomyError, match="genus 'Corvus'"):
        Taxonomy.from_table(two)


@pytest.mark.parametrize("genus, species", [
    ("Corvus", "corax"),  # an epithet alone
    ("Corvus", "Corvus sp."),
    ("Corvus", "Corvus corax varius"),  # a trinomial
    ("Aedes (Stegomyia)", "Aedes aegypti"),  # genus with its subgenus
    ("Aedes", "Aedes (Stegomyia) aegypti"),
    ("×Agropogon", "× Agropogon littoralis"),  # hybrid sign
    ("Candidatus Pelagibacter", "Candidatus Pelagibacter ubique"),
])
def test_species_that_belong_to_their_genus_are_accepted(genus, species):
    frame = pd.DataFrame([["Animalia", "Chordata", "Aves", "Passeriformes", "Corvidae", genus, species]],
                         columns=list(RANK_NAMES))
    assert Taxonomy.from_table(frame).genus_mismatches == ()


def test_real_tables_still_load(shared):
    Taxonomy.from_table(builtin_taxonomy_path())
    Taxonomy.from_table(shared("cub10", "taxonomy.csv"))
    rare = Taxonomy.from_table(shared("rare_species", "rare_species_metadata.csv"))
    assert rare.n_rows > 10_000 and rare.genus_mismatches == ()
    # the Tree-of-Life sample has one GBIF row filed under a synonym's genus: warned and kept; refused if asked
    tol = shared("tol1k_bioclip2", "example_1k.parquet")
    assert Taxonomy.from_table(tol).genus_mismatches == ((849, "Pararge", "Lasiommata megera"),)
    with pytest.raises(TaxonomyError, match="genus 'Pararge', species 'Lasiommata megera'"):
        Taxonomy.from_table(tol, on_genus_mismatch="raise")


# ------------------------------------------------------------------------------ 6. import --out DIR
def test_import_out_that_is_a_directory_is_refused_before_any_work(tmp_path):
    out = tmp_path / "results"
    out.mkdir()
    (out / "keep.txt").write_text("mine")
    with pytest.raises(InputError) as err:  # the embeddings do not even exist: nothing was read
        import_embeddings(tmp_path / "missing.npy", out)
    assert str(err.value).startswith(f"--out {out} is a directory; give the path of the cache file")
    x = tmp_path / "x.npy"
    np.save(x, np.ones((3, 4), np.float32))
    meta = tmp_path / "meta.csv"
    meta.write_text("id\na\nb\nc\n")
    proc = latent("import", x, "--metadata", meta, "--id-column", "id", "--out", out)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr and len(proc.stderr.strip().splitlines()) == 1
    assert str(out) in proc.stderr
    assert sorted(p.name for p in out.iterdir()) == ["keep.txt"] and (out / "keep.txt").read_text() == "mine"


def test_cache_writers_refuse_a_directory_or_a_missing_folder(tmp_path):
    from latent.cache import CacheWriter, Provenance

    prov = Provenance(model="m", pretrained="p", preprocess={}, embed_dim=2, normalized=False)
    with pytest.raises(InputError, match="is a directory"):
        CacheWriter.open(tmp_path, prov)
    with pytest.raises(InputError, match="does not exist; create it"):
        CacheWriter.open(tmp_path / "no" / "such" / "c.h5", prov)
    assert list(tmp_path.iterdir()) == []


# ------------------------------------------------------------------------------ 7. one-taxon ranks
def _one_kingdom_predictions(wrong_kingdom: int) -> Predictions:
    """Test rows of the 24 animal species (3 each), predicted right at every rank; ``wrong_kingdom``
    rows get Plantae at kingdom."""
    tax = builtin_taxonomy()
    animals = np.flatnonzero(tax.species_codes[:, 0] == list(tax.node_names[0]).index("Animalia"))
    true = np.repeat(tax.species_codes[animals], 3, axis=0)
    topk = true[:, :, None].copy()
    topk[:wrong_kingdom, Rank.KINGDOM, 0] = list(tax.node_names[0]).index("Plantae")
    n = len(true)
    return Predictions(tax, np.arange(n), np.array([f"i{i}" for i in range(n)]), true, topk,
                       np.ones(topk.shape), "test", "per-rank")


@pytest.mark.parametrize("wrong", [0, 6])
def test_one_taxon_rank_is_marked_not_testable_without_a_ci(wrong):
    pred = _one_kingdom_predictions(wrong)
    keep, left_out = informative_ranks(pred)
    assert left_out == {"kingdom": "one taxon"} and keep[Rank.PHYLUM]
    res = evaluate_predictions(pred, n_boot=200, seed=0)
    m = res.metrics.set_index(["rank", "metric"])
    for metric in ("top1", "balanced_accuracy", "macro_f1"):
        row = m.loc[("kingdom", metric)]
        assert math.isnan(row["ci_low"]) and math.isnan(row["ci_high"]) and row["ci_note"] == "no CI: one taxon"
        assert row["note"].startswith("one taxon at this rank: not testable")
    kingdom = m.loc[("kingdom", "top1")]
    assert kingdom["value"] == pytest.approx(1 - wrong / len(pred.true))  # the value as computed
    # "any predictor scores 1" only where the predictor had no other taxon to choose
    assert kingdom["note"].endswith("any predictor scores 1)") == (wrong == 0)
    # ranks with several taxa keep their CI
    for rank in ("phylum", "class"):
        row = m.loc[(rank, "top1")]
        assert row["ci_note"] == "" and row["note"] == "" and row["ci_low"] <= row["value"] <= row["ci_high"]
    assert res.info["left_out_ranks"] == left_out
