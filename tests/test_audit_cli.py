"""`latent audit`: one folder per dataset, found by the report; on real cub10 photos with planted defects,
every planted problem is found (exact copy and resized copy across two species, grey, tiny, blurred)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image, ImageFilter

from latent.audit.run import audit, coverage_rows
from latent.cli import main
from latent.errors import InputError
from latent.synthetic import make_hierarchical, write_synthetic


def test_cli_audit_of_a_cache_and_refusals(planted_cache, tmp_path, capsys):
    out = tmp_path / "audit"
    assert main(["audit", str(planted_cache), "--out", str(out), "--near-dup", "0.99"]) == 0
    printed = capsys.readouterr().out
    assert "near-duplicate pairs (cosine >= 0.99)" in printed and "image files not found" in printed
    rows = pd.read_csv(out / "audit.csv")
    assert list(rows.columns[:8]) == ["section", "rank", "metric", "value", "ci_low", "ci_high", "n", "note"]
    assert {"coverage", "duplicates"} <= set(rows["section"])
    record = json.loads((out / "audit.json").read_text())
    assert record["source"] == str(Path(planted_cache).resolve())
    splits = pd.read_csv(out / "splits.csv", keep_default_na=False)
    assert set(splits["stratified"]) <= {"train", "test", ""} and (splits["species_disjoint"] == "test").any()
    before = (out / "audit.csv").read_bytes()
    # an existing audit is not replaced without --force; a bad option names itself
    assert main(["audit", str(planted_cache), "--out", str(out)]) == 2
    assert "pass --force" in capsys.readouterr().err and (out / "audit.csv").read_bytes() == before
    assert main(["audit", str(planted_cache), "--out", str(tmp_path / "b"), "--near-dup", "1.5"]) == 2
    assert "--near-dup" in capsys.readouterr().err and not (tmp_path / "b").exists()
    assert main(["audit", str(planted_cache), "--out", str(tmp_path / "c"), "--by", "colour"]) == 2
    assert "colour" in capsys.readouterr().err


def test_coverage_rows_hand_case():
    from latent.taxonomy import Taxonomy

    lineage = ["Animalia", "Chordata", "Aves", "Passeriformes"]
    rows = [lineage + ["Paridae", "Parus", "Parus major"]] * 3 + [lineage + ["Paridae", "Parus", "Parus ater"]] + \
           [lineage + ["Corvidae", "Corvus", "Corvus corax"]]
    cov = coverage_rows(Taxonomy.from_lineages(rows)).set_index(["rank", "metric"])["value"]
    assert cov[("family", "taxa")] == 2 and cov[("species", "taxa")] == 3
    assert cov[("species", "taxa_with_one_image")] == 2 and cov[("species", "images_per_taxon_max")] == 3
    assert cov[("order", "taxa_with_one_child")] == 0 and cov[("family", "taxa_with_one_child")] == 2  # one genus each
    assert cov[("kingdom", "taxa_with_one_child")] == 1  # one phylum: per-rank metrics there are trivial


def test_report_links_the_audit_of_its_cache(tmp_path):
    from latent.report import ReportSettings, build_report

    cache = write_synthetic(tmp_path / "s.h5", make_hierarchical(per_species=4, dim=8, signal=2.0, seed=0))
    audit(cache, tmp_path / "s-audit")
    settings = ReportSettings(evaluations=(), probes=("alignment",), permutations=19, n_boot=20, projections=(),
                              verdict_permutations=99)
    md = build_report([cache], tmp_path / "rep", settings=settings).markdown.read_text()
    assert f"Audit of the data (synthetic): {tmp_path / 's-audit' / 'audit.md'}" in md


def _plant(shared, tmp_path: Path) -> tuple[Path, Path]:
    """Two cub10 species (5 photos each) and planted problems; returns (image folder, taxonomy csv)."""
    root = shared("cub10")
    birds = tmp_path / "birds"
    folders = sorted(p for p in (root / "birds").iterdir() if p.is_dir())[:2]
    for folder in folders:
        (birds / folder.name).mkdir(parents=True)
        for photo in sorted(folder.iterdir())[:5]:
            shutil.copy(photo, birds / folder.name / photo.name)
    a, b = (birds / f.name for f in folders)
    source = sorted(a.iterdir())[0]
    shutil.copy(source, b / "exact_copy.jpg")  # the same bytes in another species
    with Image.open(source) as img:
        img.convert("RGB").resize((img.width // 2, img.height // 2)).save(b / "resized_copy.jpg", quality=95)
        img.convert("L").convert("RGB").save(a / "grey.jpg", quality=95)
        img.convert("RGB").resize((40, 30)).save(a / "tiny.jpg", quality=95)
        img.convert("RGB").filter(ImageFilter.GaussianBlur(6)).save(a / "blurred.jpg", quality=95)
    return birds, root / "taxonomy.csv"


def test_planted_problems_in_real_cub10_photos_are_found(shared, tmp_path):
    birds, taxonomy = _plant(shared, tmp_path)
    cache = tmp_path / "birds.h5"
    assert main(["embed", str(birds), "--taxonomy", str(taxonomy), "--join-on", "folder=cub_class", "--model",
                 "random-tiny", "--out", str(cache), "--no-progress", "--workers", "0"]) == 0
    result = audit(cache, tmp_path / "audit", near_dup=0.98)
    images = result.tables["images"].set_index("id")
    assert len(images) == 15 and images["readable"].all()
    flagged = {flag: set(images.index[images[flag]]) for flag in ("greyscale", "tiny", "blurred")}
    a = sorted(p.name for p in birds.iterdir())[0]
    assert flagged["greyscale"] == {f"{a}/grey.jpg"} and flagged["tiny"] == {f"{a}/tiny.jpg"}
    assert f"{a}/blurred.jpg" in flagged["blurred"]
    exact = result.tables["exact"]
    assert len(exact) == 1 and {Path(exact["path_a"][0]).name, Path(exact["path_b"][0]).name} >= {"exact_copy.jpg"}
    near = result.tables["near"]
    resized = near[(near["id_a"].str.endswith("resized_copy.jpg")) | (near["id_b"].str.endswith("resized_copy.jpg"))]
    assert len(resized) and resized["crosses_species"].any()
    dup = pd.read_csv(result.out / "duplicates.csv")
    assert {"exact", "near", "identical vector"} & set(dup["kind"])
    rows = result.rows.set_index(["section", "metric"])["value"]
    assert rows[("images", "greyscale")] == 1 and rows[("images", "tiny")] == 1
    assert rows[("coverage", "taxa")].max() == 2  # two species


def test_audit_of_an_image_folder(tmp_path):
    folder = tmp_path / "imgs"
    folder.mkdir()
    rng = np.random.default_rng(0)
    for i in range(3):
        Image.fromarray(rng.integers(0, 255, (80, 120, 3), dtype=np.uint8)).save(folder / f"{i}.png")
    shutil.copy(folder / "0.png", folder / "copy.png")
    result = audit(folder, tmp_path / "audit")
    assert len(result.tables["images"]) == 4 and len(result.tables["exact"]) == 1
    assert (result.out / "figures" / "worst_images.png").exists()
    with pytest.raises(InputError, match="No images found in"):
        audit(_empty(tmp_path), tmp_path / "x")


def _empty(tmp_path: Path) -> Path:
    empty = tmp_path / "empty"
    empty.mkdir()
    return empty


def test_evaluate_uses_the_audit_split_file(planted_cache, tmp_path, capsys):
    from latent.evaluate import evaluate_cache

    audit(planted_cache, tmp_path / "audit")
    split_file = tmp_path / "audit" / "splits.csv"
    drawn = evaluate_cache(planted_cache, tmp_path / "drawn", method="knn", split="species-disjoint", n_boot=0)
    filed = evaluate_cache(planted_cache, tmp_path / "filed", method="knn", split_file=split_file,
                           split_column="species_disjoint", n_boot=0)
    # the audit wrote the split by the same rule and seed: the same numbers, and the file is named
    pd.testing.assert_series_equal(drawn.metrics["value"], filed.metrics["value"])
    assert filed.info["split"] == "file:splits.csv:species_disjoint"
    stratified = evaluate_cache(planted_cache, tmp_path / "strat", method="knn", split_file=split_file, n_boot=0)
    assert (stratified.metrics["rank"] == "species").any()  # every test species has training images
    # refusals: one line, naming the option
    bad = pd.read_csv(split_file, dtype=str, keep_default_na=False)
    bad.loc[0, "id"] = "nope.jpg"
    bad.to_csv(tmp_path / "bad.csv", index=False)
    for args, message in (
            (["--split-file", str(tmp_path / "bad.csv")], "ids are not in the cache"),
            (["--split-file", str(split_file), "--split-column", "colour"], "split column 'colour'"),
            (["--split-file", str(split_file), "--split", "species-disjoint"], "not both"),
            (["--split-file", str(tmp_path / "missing.csv")], "does not exist")):
        assert main(["evaluate", str(planted_cache), "--method", "knn", "--out", str(tmp_path / "x"), *args]) == 2
        err = capsys.readouterr().err
        assert message in err and len(err.strip().splitlines()) == 1, err


def test_tol1k_audit_with_image_type_against_taxonomy(shared, tmp_path, capsys):
    cache = tmp_path / "tol1k.h5"
    assert main(["import", str(shared("tol1k_bioclip2", "example_1k.parquet")), "--out", str(cache)]) == 0
    assert main(["audit", str(cache), "--out", str(tmp_path / "audit"), "--by", "img_type", "--permutations",
                 "99"]) == 0
    printed = capsys.readouterr().out
    assert "img_type: R^2" in printed and "beyond the taxonomy at family" in printed
    rows = pd.read_csv(tmp_path / "audit" / "audit.csv")
    meta = rows[rows["section"] == "metadata vs taxonomy"].set_index("metric")
    assert {"r2_column", "r2_taxonomy", "r2_both", "r2_column_given_taxonomy"} <= set(meta.index)
    # the taxonomy explains more of the geometry than image type; image type adds a little beyond it
    assert meta.loc["r2_taxonomy", "value"] > meta.loc["r2_column", "value"] > meta.loc["r2_column_given_taxonomy",
                                                                                         "value"] > 0
    assert (tmp_path / "audit" / "figures" / "metadata_vs_taxonomy.png").exists()


def test_evaluation_scored_per_group_of_species(planted, tmp_path, capsys, planted_cache):
    import latent

    names = sorted(set(planted.taxonomy.labels("species")))
    groups = {name: ("seen" if i % 2 else "unseen") for i, name in enumerate(names)}
    ev = latent.evaluate(planted.embeddings, planted.taxonomy, method="knn", n_boot=0, groups=groups)
    top1 = ev.metrics[(ev.metrics["metric"] == "top1") & (ev.metrics["rank"] == "genus")]
    main_row = top1[top1["group"].isna()].iloc[0]
    parts = top1[top1["group"].notna()].set_index("group")
    assert set(parts.index) == {"seen=seen", "seen=unseen"}
    # the groups split the same test images: counts add up, and the accuracy is their weighted mean
    assert parts["n"].sum() == main_row["n"]
    assert (parts["value"] * parts["n"]).sum() / parts["n"].sum() == pytest.approx(main_row["value"])
    assert "seen=unseen: top1" in ev.summary()
    table = pd.DataFrame({"species": names, "seen": [groups[n] for n in names]})
    table.to_csv(tmp_path / "overlap.csv", index=False)
    assert main(["evaluate", str(planted_cache), "--method", "centroid", "--groups", str(tmp_path / "overlap.csv"),
                 "--out", str(tmp_path / "c")]) == 2
    assert "centroid" in capsys.readouterr().err
    assert main(["evaluate", str(planted_cache), "--method", "knn", "--groups", str(tmp_path / "overlap.csv"),
                 "--group-column", "kind", "--out", str(tmp_path / "k")]) == 2
    assert "group column 'kind'" in capsys.readouterr().err


def test_audit_of_the_cub10_photo_folder_with_its_taxonomy(shared, tmp_path):
    root = shared("cub10")
    result = audit(root / "birds", tmp_path / "audit", taxonomy_table=root / "taxonomy.csv", join_on="folder=cub_class")
    cov = result.rows[result.rows["section"] == "coverage"].set_index(["rank", "metric"])["value"]
    assert cov[("species", "taxa")] == 10 and cov[("genus", "taxa")] == 7 and cov[("family", "taxa")] == 4
    assert cov[("species", "unlabelled_rows")] == 6  # eagle, parrot, sparrow: no row in the taxonomy table
    images = result.tables["images"]
    assert len(images) == 306 and images["readable"].all() and not images["blurred"].any()
    with pytest.raises(InputError, match="--taxonomy needs --join-on"):
        audit(root / "birds", tmp_path / "b", taxonomy_table=root / "taxonomy.csv")


def test_probe_a_subset_of_species(planted, planted_cache, tmp_path, capsys):
    names = sorted(set(planted.taxonomy.labels("species")))
    unseen = set(names[::2])
    pd.DataFrame({"species": names, "seen": [n not in unseen for n in names]}).to_csv(tmp_path / "o.csv", index=False)
    out = tmp_path / "p"
    assert main(["probe", str(planted_cache), "--probes", "levels", "--subset", str(tmp_path / "o.csv"), "--where",
                 "seen=False", "--out", str(out)]) == 0
    record = json.loads((out / "run.json").read_text())
    assert record["n_species"] == len(unseen) and record["subset"] == "o.csv:seen=False"
    species = pd.read_csv(out / "species.csv")
    assert set(species["species"]) == unseen
    capsys.readouterr()
    for args, message in ((["--subset", str(tmp_path / "o.csv")], "go together"),
                          (["--subset", str(tmp_path / "o.csv"), "--where", "seen=maybe"], "no species with seen='maybe'"),
                          (["--subset", str(tmp_path / "none.csv"), "--where", "seen=False"], "does not exist")):
        assert main(["probe", str(planted_cache), "--out", str(tmp_path / "q"), *args]) == 2
        assert message in capsys.readouterr().err


def test_split_by_a_metadata_column_holds_out_whole_values():
    from latent.audit.run import _split_by_values

    values = np.array(["a"] * 50 + ["b"] * 20 + ["c"] * 20 + ["d"] * 10 + [""] * 5, dtype=object)
    rows = np.arange(100)  # the last 5 rows are not evaluated
    split = _split_by_values(values, rows, 105, seed=0)
    assert (split[100:] == "").all()
    for v in "abcd":  # each value entirely on one side
        assert len(set(split[values == v][:50 if v == "a" else None])) == 1
    test_share = (split == "test").sum() / 100
    assert 0 < test_share <= 0.3 and (split == "train").sum() >= 50
    with pytest.raises(InputError, match="at least 2 values"):
        _split_by_values(np.array(["a"] * 10, dtype=object), np.arange(10), 10, seed=0)
