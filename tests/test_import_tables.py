"""Direct import of self-describing embedding tables (issue 13, item 1).

A table that holds its own vectors, ids and rank columns imports with no other flag: the real
Tree-of-Life sample (../shared/data, skipped when absent), emb-explorer's parquet layout (``uuid``,
``emb``, ranks, anything else), pybioclip's ``bioclip embed`` JSON, CSV / JSON / JSON-lines tables.
Every other column is kept as row metadata with its dtype and missing values. Bad tables (no embedding
column, duplicate or missing ids, ragged vectors, some rank columns but not all) are refused in one line
naming the column, with nothing written; an existing cache is replaced only with --force.
"""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from latent.cache import CacheWriter, Provenance, open_cache
from latent.errors import CacheError, InputError, TaxonomyError
from latent.importer import import_embeddings
from latent.ranks import RANK_NAMES

REPO = Path(__file__).resolve().parents[1]
ENV = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
RANKS = {
    "kingdom": ["Animalia", "Animalia", "Plantae", "Animalia"],
    "phylum": ["Chordata", "Chordata", "Tracheophyta", "Chordata"],
    "class": ["Aves", "Aves", "Magnoliopsida", "Mammalia"],
    "order": ["Passeriformes", "Passeriformes", "Rosales", "Carnivora"],
    "family": ["Corvidae", "Corvidae", "Rosaceae", "Felidae"],
    "genus": ["Corvus", "Corvus", "Rosa", "Panthera"],
    "species": ["Corvus corax", "Corvus corone", "Rosa canina", "Panthera leo"],
}


def latent(*args: object, cwd: Path | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "latent.cli", *map(str, args)], capture_output=True, text=True,
                          env=ENV, timeout=300, cwd=cwd)


def _vectors(n: int = 4, d: int = 6, seed: int = 0) -> np.ndarray:
    return (np.random.default_rng(seed).standard_normal((n, d)) * 3).astype(np.float32)


def _emb_explorer(x: np.ndarray) -> pd.DataFrame:
    """emb-explorer's documented parquet layout: uuid, emb (list<float32>), identifier, ranks, anything else."""
    return pd.DataFrame({
        "uuid": [f"u{i}" for i in range(len(x))],
        "emb": list(x),
        "identifier": [f"https://example.org/{i}.jpg" for i in range(len(x))],
        **RANKS,
        "source": ["iNaturalist", "iNaturalist", "GBIF", None],
        "count": np.array([3, 1, 4, 1], dtype=np.int64),
        "latitude": [45.5, np.nan, -3.25, 10.0],
        "captive": [False, True, False, False],
        "year": pd.array([2019, None, 2021, 2020], dtype="Int64"),
        "checked": pd.array([True, None, False, True], dtype="boolean"),
        "img_type": pd.Categorical(["Citizen Science", "Museum Specimen", "Citizen Science", "Camera-trap"]),
        "score": np.array([0.5, 0.25, 1.0, 0.75], dtype=np.float32),
    })


def _nothing_written(out: Path) -> bool:
    return not out.exists() and not Path(str(out) + ".partial").exists()


# ------------------------------------------------------------------------------ the real Tree-of-Life sample
def test_tol1k_imports_with_no_other_flag(shared, tmp_path):
    path = shared("tol1k_bioclip2", "example_1k.parquet")
    table = pd.read_parquet(path)
    out = tmp_path / "tol1k.h5"
    proc = latent("import", path, "--out", out)
    assert proc.returncode == 0, proc.stderr
    assert ("embeddings: emb (768-d); ids: uuid; ranks: kingdom..species; metadata kept: source_dataset, "
            "source_id, scientific_name, common_name, resolution_status, publisher, basisOfRecord, identifier, "
            "img_type") in proc.stdout
    assert "not normalised" in proc.stdout
    # the synonym row is one warning line with its count, not a refusal
    mismatch = [line for line in proc.stderr.splitlines() if "species binomial of another genus" in line]
    assert len(mismatch) == 1 and "1 row(s)" in mismatch[0] and "row 849" in mismatch[0]
    with open_cache(out) as cache:
        assert cache.n_rows == 1030 and cache.dim == 768 and not cache.provenance.normalized
        assert list(cache.ids) == list(table["uuid"])
        np.testing.assert_array_equal(cache.read(), np.stack(table["emb"].to_numpy()).astype(np.float32))
        summary = cache.summary()
        meta = cache.metadata()
        tax = cache.taxonomy()
    assert summary["taxa"] == {"kingdom": 5, "phylum": 14, "class": 38, "order": 134, "family": 350,
                               "genus": 727, "species": 790}
    assert tax.genus_mismatches == ((849, "Pararge", "Lasiommata megera"),)
    kept = ["source_dataset", "source_id", "scientific_name", "common_name", "resolution_status", "publisher",
            "basisOfRecord", "identifier", "img_type"]
    assert list(meta.columns) == kept
    pd.testing.assert_frame_equal(meta, table[kept])  # values, dtypes and missing values as in the parquet
    assert meta["img_type"].value_counts()["Citizen Science"] == 663 and meta["img_type"].isna().sum() == 121
    assert set(meta["source_dataset"].dropna()) == {"gbif"}
    info = latent("info", out)
    assert info.returncode == 0, info.stderr
    assert "ranks       7 (kingdom, phylum, class, order, family, genus, species)" in info.stdout
    assert "metadata    9 columns kept" in info.stdout
    img = next(line for line in info.stdout.splitlines() if line.strip().startswith("img_type"))
    assert img.split()[:3] == ["img_type", "str", "9"] and "121 missing" in img


# ------------------------------------------------------------------------------ emb-explorer and pybioclip layouts
def test_emb_explorer_parquet_imports_with_metadata_dtypes_kept(tmp_path):
    x = _vectors()
    table = _emb_explorer(x)
    table.to_parquet(tmp_path / "emb.parquet")
    report = import_embeddings(tmp_path / "emb.parquet", tmp_path / "c.h5")
    assert report.columns["embeddings"] == "emb" and report.columns["ids"] == "uuid"
    assert report.columns["ranks"] == "kingdom..species" and report.unlabelled == 0 and not report.normalized
    kept = ["identifier", "source", "count", "latitude", "captive", "year", "checked", "img_type", "score"]
    assert report.columns["metadata"] == kept
    assert report.describe().startswith("embeddings: emb (6-d); ids: uuid; ranks: kingdom..species; metadata kept: "
                                        "identifier, source, count")
    with open_cache(tmp_path / "c.h5") as cache:
        np.testing.assert_array_equal(cache.read(), x)
        assert list(cache.ids) == ["u0", "u1", "u2", "u3"]
        assert list(cache.labels("species")) == RANKS["species"]
        meta = cache.metadata()
        assert [c for c, _ in cache.metadata_columns()] == kept
        only = cache.metadata(["year", "source"])
        with pytest.raises(InputError, match=r"keeps no metadata column 'nope'; it keeps: identifier, source"):
            cache.metadata(["nope"])
    pd.testing.assert_frame_equal(meta, table[kept])
    assert str(meta["year"].dtype) == "Int64" and meta["year"].isna().tolist() == [False, True, False, False]
    assert str(meta["checked"].dtype) == "boolean" and meta["score"].dtype == np.float32
    assert meta["source"].isna().tolist() == [False, False, False, True] and np.isnan(meta["latitude"][1])
    assert list(only.columns) == ["year", "source"]


def test_emb_explorer_minimal_layout_imports_unlabelled(tmp_path, caplog):
    pd.DataFrame({"uuid": ["a1", "a2", "a3"], "emb": list(_vectors(3, 5))}).to_parquet(tmp_path / "m.parquet")
    with caplog.at_level(logging.WARNING, logger="latent"):
        report = import_embeddings(tmp_path / "m.parquet", tmp_path / "c.h5")
    assert report.unlabelled == 3 and report.columns["ranks"] == "none (every row unlabelled)"
    assert "m.parquet has no rank columns (kingdom..species)" in caplog.text
    with open_cache(tmp_path / "c.h5") as cache:
        assert list(cache.ids) == ["a1", "a2", "a3"] and cache.metadata_columns() == []
        assert cache.metadata().shape == (3, 0)


def test_pybioclip_embed_json_imports_alone(tmp_path):
    x = _vectors(3, 4)
    payload = {"model": "hf-hub:imageomics/bioclip-2",
               "embeddings": {f"img/{n}.jpg": v.tolist() for n, v in zip(["b", "a", "c"], x)}}
    (tmp_path / "emb.json").write_text(json.dumps(payload))
    proc = latent("import", tmp_path / "emb.json", "--out", tmp_path / "c.h5")
    assert proc.returncode == 0, proc.stderr
    assert 'ids: the keys of "embeddings" (pybioclip embed JSON)' in proc.stdout
    with open_cache(tmp_path / "c.h5") as cache:
        assert list(cache.ids) == ["img/b.jpg", "img/a.jpg", "img/c.jpg"]
        assert cache.provenance.model == "hf-hub:imageomics/bioclip-2"
        np.testing.assert_allclose(cache.read(), x, rtol=1e-6)


# ------------------------------------------------------------------------------ CSV and JSON tables, overrides
@pytest.mark.parametrize("fmt", ["csv", "json", "jsonl"])
def test_csv_and_json_tables_with_an_embedding_column(tmp_path, fmt):
    x = _vectors().astype(np.float64).round(4)
    frame = pd.DataFrame({"id": ["r0", "r1", "r2", "r3"], **RANKS, "site": ["A", "B", "", "A"],
                          "embedding": [list(v) for v in x]})
    path = tmp_path / f"t.{fmt}"
    if fmt == "csv":
        frame.assign(embedding=[json.dumps(list(v)) for v in x]).to_csv(path, index=False)
    elif fmt == "json":
        path.write_text(json.dumps(frame.to_dict(orient="records")))
    else:
        frame.to_json(path, orient="records", lines=True)
    report = import_embeddings(path, tmp_path / "c.h5")
    assert (report.columns["embeddings"], report.columns["ids"]) == ("embedding", "id")
    assert report.columns["metadata"] == ["site"]
    with open_cache(tmp_path / "c.h5") as cache:
        np.testing.assert_allclose(cache.read(), x, rtol=1e-6)
        assert list(cache.ids) == ["r0", "r1", "r2", "r3"]
        assert list(cache.labels("genus")) == RANKS["genus"]
        assert cache.metadata()["site"].tolist() == ["A", "B", "", "A"]  # CSV/JSON text as written


def test_embedding_and_id_column_overrides(tmp_path, caplog):
    x, y = _vectors(seed=1), _vectors(d=3, seed=2)
    table = pd.DataFrame({"uuid": ["u0", "u1", "u2", "u3"], "name": ["n0", "n1", "n2", "n3"], "emb": list(x),
                          "clip": list(y), **RANKS})
    table.to_parquet(tmp_path / "t.parquet")
    with caplog.at_level(logging.WARNING, logger="latent"):
        report = import_embeddings(tmp_path / "t.parquet", tmp_path / "c.h5", embedding_column="clip",
                                   id_column="name")
    assert (report.columns["embeddings"], report.columns["ids"]) == ("clip", "name")
    assert report.columns["metadata"] == ["uuid"] and report.columns["not kept"] == ["emb"]
    assert "columns 'emb' hold lists or other non-scalar values: not kept as metadata" in caplog.text
    with open_cache(tmp_path / "c.h5") as cache:
        np.testing.assert_array_equal(cache.read(), y)
        assert list(cache.ids) == ["n0", "n1", "n2", "n3"] and list(cache.metadata()["uuid"]) == list(table["uuid"])
    proc = latent("import", tmp_path / "t.parquet", "--embedding-column", "nope", "--out", tmp_path / "d.h5")
    assert proc.returncode == 2 and len(proc.stderr.strip().splitlines()) == 1
    assert "There is no column 'nope'" in proc.stderr and _nothing_written(tmp_path / "d.h5")


def test_metadata_path_keeps_working_and_keeps_its_other_columns(tmp_path):
    x = _vectors()
    np.save(tmp_path / "x.npy", x)
    pd.DataFrame({"path": ["p0", "p1", "p2", "p3"], **RANKS, "site": ["A", "B", "C", "D"]}).to_csv(
        tmp_path / "meta.csv", index=False)
    proc = latent("import", tmp_path / "x.npy", "--out", tmp_path / "c.h5")  # no ids of its own: as before
    assert proc.returncode == 2 and "has no ids of its own: give --metadata" in proc.stderr
    report = import_embeddings(tmp_path / "x.npy", tmp_path / "c.h5", metadata=tmp_path / "meta.csv", id_column="path")
    assert report.columns["ids"] == "path (--metadata)" and report.columns["metadata"] == ["site"]
    with open_cache(tmp_path / "c.h5") as cache:
        assert list(cache.ids) == ["p0", "p1", "p2", "p3"] and list(cache.metadata()["site"]) == ["A", "B", "C", "D"]


def test_a_table_with_species_only_joins_a_taxonomy_by_its_own_column(tmp_path):
    x = _vectors()
    pd.DataFrame({"uuid": ["u0", "u1", "u2", "u3"], "emb": list(x), "label": ["c", "p", "c", "zzz"]}).to_parquet(
        tmp_path / "t.parquet")
    pd.DataFrame({"key": ["c", "p"], **{r: v[:2] for r, v in RANKS.items()}}).to_csv(tmp_path / "tax.csv", index=False)
    report = import_embeddings(tmp_path / "t.parquet", tmp_path / "c.h5", taxonomy=tmp_path / "tax.csv",
                               join_on="label=key")
    assert report.columns["ranks"] == "joined from --taxonomy on label=key" and report.unlabelled == 1
    assert report.columns["metadata"] == ["label"]
    with open_cache(tmp_path / "c.h5") as cache:
        assert list(cache.labels("species")) == ["Corvus corax", "Corvus corone", "Corvus corax", ""]


# ------------------------------------------------------------------------------ refusals: one line, nothing written
@pytest.mark.parametrize("case, message", [
    ("no-embedding", "has no embedding column: name the column of vectors one of emb, embedding, embeddings, "
                     "vector, features, or give --embedding-column NAME; columns: uuid, kingdom"),
    ("two-embeddings", "has several embedding columns (emb, vector); choose one with --embedding-column NAME"),
    ("duplicate-ids", "Embedding ids (column uuid): ids must be unique; 1 are repeated: 'u0' (rows 0, 2)"),
    ("missing-id", "Embedding ids (column uuid): rows 1 have an empty id"),
    ("no-id", "has no id column (one named uuid, id, image_id): give --id-column NAME"),
    ("ragged", "column 'emb': every row must be a vector of the same length; most have 6 values but rows 3 have 5"),
    ("text-vector", "column 'emb': rows 1 are not lists of numbers"),
    ("partial-ranks", "has no column for rank(s) phylum, class, order, family, genus"),
    ("species-only", "Give all seven rank columns, or look the lineages up in a taxonomy table with --taxonomy"),
])
def test_bad_tables_are_refused_in_one_line_with_nothing_written(tmp_path, case, message):
    x = _vectors()
    table = pd.DataFrame({"uuid": ["u0", "u1", "u2", "u3"], **RANKS, "emb": list(x)})
    error = InputError
    if case == "no-embedding":
        table = table.drop(columns="emb")
    elif case == "two-embeddings":
        table["vector"] = list(x)
    elif case == "duplicate-ids":
        table.loc[2, "uuid"] = "u0"
    elif case == "missing-id":
        table.loc[1, "uuid"] = None
    elif case == "no-id":
        table = table.rename(columns={"uuid": "name"})
    elif case == "ragged":
        table["emb"] = [*list(x[:3]), x[3, :5]]
    elif case == "text-vector":
        table["emb"] = [json.dumps(list(map(float, v))) for v in x]
        table.loc[1, "emb"] = "[1, 2, a]"
        path = tmp_path / "t.csv"
        table.to_csv(path, index=False)
    elif case in ("partial-ranks", "species-only"):
        drop = ["phylum", "class", "order", "family", "genus"] + (["kingdom"] if case == "species-only" else [])
        table = table.drop(columns=drop)
        error = TaxonomyError
    if case != "text-vector":
        path = tmp_path / "t.parquet"
        table.to_parquet(path)
    out = tmp_path / "c.h5"
    with pytest.raises(error) as err:
        import_embeddings(path, out)
    assert message in str(err.value) and "\n" not in str(err.value)
    proc = latent("import", path, "--out", out)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1 and message in proc.stderr
    assert _nothing_written(out)


def test_reimport_refuses_without_force_and_replaces_with_it(tmp_path):
    x = _vectors()
    table = _emb_explorer(x)
    table.to_parquet(tmp_path / "t.parquet")
    out = tmp_path / "c.h5"
    assert latent("import", tmp_path / "t.parquet", "--out", out).returncode == 0
    table.assign(emb=list(2 * x), source="changed").to_parquet(tmp_path / "t.parquet")
    proc = latent("import", tmp_path / "t.parquet", "--out", out)
    assert proc.returncode != 0 and "already exists; pass --force" in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1
    with open_cache(out) as cache:  # untouched
        np.testing.assert_array_equal(cache.read(), x)
        assert cache.metadata()["source"].iloc[0] == "iNaturalist"
    assert latent("import", tmp_path / "t.parquet", "--out", out, "--force").returncode == 0
    with open_cache(out) as cache:
        np.testing.assert_array_equal(cache.read(), 2 * x)
        assert set(cache.metadata()["source"]) == {"changed"}


# ------------------------------------------------------------------------------ the writer's metadata contract
def test_writer_metadata_must_match_the_rows_and_closes_the_cache_to_appends(tmp_path):
    prov = Provenance(model="m", pretrained="p", preprocess={}, embed_dim=2, normalized=False)
    with CacheWriter.open(tmp_path / "c.h5", prov) as writer:
        writer.append(["a", "b"], np.ones((2, 2)))
        with pytest.raises(InputError, match="row metadata has 3 rows but the cache has 2"):
            writer.write_metadata(pd.DataFrame({"x": [1, 2, 3]}))
        with pytest.raises(InputError, match="column 'v' holds lists or other non-scalar values"):
            writer.write_metadata(pd.DataFrame({"ok": [1, 2], "v": [[1], [2]]}))
        assert "metadata" not in writer._h5()  # nothing written by the refused calls
        writer.write_metadata(pd.DataFrame({"a/b": ["x", "y"], "when": pd.to_datetime(["2020-01-02", None])}))
        with pytest.raises(CacheError, match="keeps row metadata"):
            writer.append(["c"], np.ones((1, 2)))
    with open_cache(tmp_path / "c.h5") as cache:
        meta = cache.metadata()
        assert cache.n_rows == 2 and list(meta.columns) == ["a/b", "when"]
    assert list(meta["a/b"]) == ["x", "y"] and meta["when"].iloc[0] == pd.Timestamp("2020-01-02")
    assert pd.isna(meta["when"].iloc[1]) and str(meta["when"].dtype).startswith("datetime64")
    with CacheWriter.open(tmp_path / "c.h5", prov, mode="append") as writer, pytest.raises(CacheError):
        writer.append(["c"], np.ones((1, 2)))  # appending to a complete cache with metadata: refused too
    with open_cache(tmp_path / "c.h5") as cache:
        assert cache.n_rows == 2


def test_rank_names_are_not_kept_as_metadata(tmp_path):
    _emb_explorer(_vectors()).to_parquet(tmp_path / "t.parquet")
    import_embeddings(tmp_path / "t.parquet", tmp_path / "c.h5")
    with open_cache(tmp_path / "c.h5") as cache:
        assert not set(RANK_NAMES) & {c for c, _ in cache.metadata_columns()}
        assert "uuid" not in {c for c, _ in cache.metadata_columns()}


def test_metadata_dtypes_and_missing_values_round_trip(tmp_path):
    frame = pd.DataFrame({
        "text": pd.Series(["a", None, "c"], dtype="str"),
        "string": pd.Series(["a", None, "c"], dtype="string"),
        "small": np.array([1, 2, 250], dtype=np.uint8),
        "int8": pd.array([1, None, -3], dtype="Int8"),
        "float64": [0.5, np.nan, 2.0],
        "nullable_float": pd.array([1.5, None, 0.0], dtype="Float64"),
        "flag": [True, False, True],
        "maybe": pd.array([None, True, False], dtype="boolean"),
        "kind": pd.Categorical(["x", None, "y"]),
        "when": pd.to_datetime(["2020-01-02 00:00:00", None, "2021-03-04 05:06:07"]),
    })
    prov = Provenance(model="m", pretrained="p", preprocess={}, embed_dim=2, normalized=False)
    with CacheWriter.open(tmp_path / "c.h5", prov) as writer:
        writer.append(["a", "b", "c"], np.ones((3, 2)))
        writer.write_metadata(frame)
    with open_cache(tmp_path / "c.h5") as cache:
        back = cache.metadata()
        kinds = dict(cache.metadata_columns())
    pd.testing.assert_frame_equal(back, frame)
    assert kinds["int8"] == "Int8" and kinds["small"] == "uint8" and kinds["kind"] == "category"
    # mixed Python types in an object column are kept as text, missing values still missing
    with CacheWriter.open(tmp_path / "d.h5", prov) as writer:
        writer.append(["a", "b", "c"], np.ones((3, 2)))
        writer.write_metadata(pd.DataFrame({"mixed": pd.Series([1, "x", None], dtype=object)}))
    with open_cache(tmp_path / "d.h5") as cache:
        assert cache.metadata()["mixed"].tolist()[:2] == ["1", "x"] and pd.isna(cache.metadata()["mixed"][2])


def test_an_interrupted_write_resumes_with_its_metadata(tmp_path):
    prov = Provenance(model="m", pretrained="p", preprocess={}, embed_dim=2, normalized=False)
    with pytest.raises(KeyboardInterrupt), CacheWriter.open(tmp_path / "c.h5", prov) as writer:
        writer.append(["a", "b"], np.ones((2, 2)))
        writer.write_metadata(pd.DataFrame({"site": ["x", None]}))
        raise KeyboardInterrupt  # before finalize: the partial file is kept
    assert not (tmp_path / "c.h5").exists() and (tmp_path / "c.h5.partial").exists()
    with CacheWriter.open(tmp_path / "c.h5", prov) as writer:  # resumed: committed rows and metadata copied
        assert writer.n_rows == 2
    with open_cache(tmp_path / "c.h5") as cache:
        assert list(cache.ids) == ["a", "b"] and cache.metadata()["site"].tolist()[0] == "x"
        assert cache.metadata()["site"].isna().tolist() == [False, True]
