"""Importing embeddings made elsewhere: every format, every bad input refused with nothing written."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from latent.cache import open_cache
from latent.errors import CacheError, InputError, TaxonomyError
from latent.importer import import_embeddings, load_embeddings

TAXONOMY = pd.DataFrame({
    "key": ["a", "b", "c"],
    "Kingdom": ["Animalia"] * 3, "phylum": ["Chordata"] * 3, "class": ["Aves"] * 3,
    "order": ["Passeriformes"] * 3, "family": ["Passeridae", "Passeridae", "Paridae"],
    "genus": ["Passer", "Passer", "Parus"], "species": ["domesticus", "montanus", "major"],
})


@pytest.fixture
def data(tmp_path):
    rng = np.random.default_rng(0)
    x = rng.standard_normal((7, 5)).astype(np.float32)
    meta = pd.DataFrame({"path": [f"img/{i}.jpg" for i in range(7)], "label": ["a", "a", "b", "c", "c", "zzz", "b"]})
    np.save(tmp_path / "x.npy", x)
    meta.to_csv(tmp_path / "meta.csv", index=False)
    TAXONOMY.to_csv(tmp_path / "tax.csv", index=False)
    return tmp_path, x, meta


def _check(out, x, meta, *, dtype=np.float32):
    with open_cache(out) as cache:
        assert cache.n_rows == len(x) and cache.dim == x.shape[1] and cache.complete
        np.testing.assert_array_equal(cache.read(dtype=None), x.astype(dtype))
        assert list(cache.ids) == list(meta["path"])
        species = list(cache.labels("species"))
    assert species == ["Passer domesticus", "Passer domesticus", "Passer montanus", "Parus major", "Parus major", "", "Passer montanus"]


def test_npy_csv_with_joined_taxonomy(data, caplog):
    tmp, x, meta = data
    report = import_embeddings(tmp / "x.npy", tmp / "out.h5", metadata=tmp / "meta.csv", id_column="path",
                               taxonomy=tmp / "tax.csv", join_on="label=key", model="toy")
    assert report.rows == 7 and report.unlabelled == 1 and not report.normalized
    assert "1 rows have no row in the --taxonomy table (keys zzz)" in caplog.text
    _check(tmp / "out.h5", x, meta)
    with open_cache(tmp / "out.h5") as cache:
        assert cache.provenance.model == "toy" and cache.provenance.source.endswith("x.npy")


@pytest.mark.parametrize("fmt", ["npz", "parquet", "json-meta", "parquet-meta", "float16"])
def test_other_formats(data, fmt):
    tmp, x, meta = data
    emb, meta_path, dtype = tmp / "x.npy", tmp / "meta.csv", np.float32
    if fmt == "npz":
        emb = tmp / "x.npz"
        np.savez(emb, embeddings=x, other=np.zeros(3))
    elif fmt == "parquet":
        emb = tmp / "x.parquet"
        pd.DataFrame({"name": meta["path"], "embedding": list(x)}).to_parquet(emb)
    elif fmt == "json-meta":
        meta_path = tmp / "meta.json"
        meta_path.write_text(json.dumps(meta.to_dict(orient="records")))
    elif fmt == "parquet-meta":
        meta_path = tmp / "meta.parquet"
        meta.to_parquet(meta_path)
    elif fmt == "float16":
        np.save(emb, x.astype(np.float16))
        dtype = np.float16
    import_embeddings(emb, tmp / "out.h5", metadata=meta_path, id_column="path", taxonomy=tmp / "tax.csv", join_on="label=key")
    _check(tmp / "out.h5", x, meta, dtype=dtype)


def test_pybioclip_json_ids_from_keys_and_metadata_matched_by_id(data):
    tmp, x, meta = data
    order = [3, 0, 6, 1, 5, 2, 4]  # JSON keys in another order than the metadata
    payload = {"model": "hf-hub:imageomics/bioclip", "embeddings": {meta["path"][i]: x[i].tolist() for i in order}}
    (tmp / "emb.json").write_text(json.dumps(payload))
    import_embeddings(tmp / "emb.json", tmp / "out.h5", metadata=tmp / "meta.csv", id_column="path",
                      taxonomy=tmp / "tax.csv", join_on="label=key")
    with open_cache(tmp / "out.h5") as cache:
        assert list(cache.ids) == [meta["path"][i] for i in order]
        np.testing.assert_allclose(cache.read(), x[order], rtol=1e-6)
        assert cache.provenance.model == "hf-hub:imageomics/bioclip"
        assert cache.labels("species")[0] == "Parus major"


def test_rank_columns_in_metadata_itself(tmp_path):
    x = np.eye(3, dtype=np.float32)
    meta = TAXONOMY.rename(columns={"key": "id"})
    np.save(tmp_path / "x.npy", x)
    report = import_embeddings(tmp_path / "x.npy", tmp_path / "o.h5", metadata=meta, id_column="id")
    assert report.normalized and report.unlabelled == 0
    with open_cache(tmp_path / "o.h5") as cache:
        assert list(cache.labels("species")) == ["Passer domesticus", "Passer montanus", "Parus major"]


@pytest.mark.parametrize(
    "case, match",
    [
        ("rows", r"Row-count mismatch: x.npy has 7 embedding rows but the metadata has 6 rows"),
        ("nan", r"2 embedding rows hold NaN or inf: rows 1, 4 \(ids img/1.jpg, img/4.jpg\)"),
        ("dup", r"ids must be unique; 1 are repeated: 'img/0.jpg' \(rows 0, 3\)"),
        ("dim", r"must hold a 2-D array \(rows, dimension\).*got shape \(7, 5, 1\)"),
        ("ragged", r"most have 5 values but rows 2 have 4"),
        ("column", r"There is no column 'file' in --metadata; columns: path, label"),
        ("join", r"'join_on' parameter must look like META_COL=TAX_COL"),
        ("taxdup", r"join column 'key' of the --taxonomy table must be unique; repeated values: a"),
    ],
)
def test_bad_input_is_refused_and_nothing_is_written(data, case, match):
    tmp, x, meta = data
    emb, meta_path, id_col, join, tax = tmp / "x.npy", tmp / "meta.csv", "path", "label=key", tmp / "tax.csv"
    if case == "rows":
        meta.iloc[:6].to_csv(meta_path, index=False)
    elif case == "nan":
        x[1, 2], x[4, 0] = np.nan, np.inf
        np.save(emb, x)
    elif case == "dup":
        meta.loc[3, "path"] = "img/0.jpg"
        meta.to_csv(meta_path, index=False)
    elif case == "dim":
        np.save(emb, x[:, :, None])
    elif case == "ragged":
        emb = tmp / "x.parquet"
        rows = list(x)
        rows[2] = rows[2][:4]
        pd.DataFrame({"embedding": rows}).to_parquet(emb)
    elif case == "column":
        id_col = "file"
    elif case == "join":
        join = "label"
    elif case == "taxdup":
        pd.concat([TAXONOMY, TAXONOMY.iloc[:1]]).to_csv(tax, index=False)
    with pytest.raises(InputError, match=match):
        import_embeddings(emb, tmp / "out.h5", metadata=meta_path, id_column=id_col, taxonomy=tax, join_on=join)
    assert not (tmp / "out.h5").exists() and not (tmp / "out.h5.partial").exists()


def test_conflicting_taxonomy_refused(data):
    tmp, x, meta = data
    bad = TAXONOMY.copy()
    bad.loc[2, "genus"], bad.loc[2, "species"] = "Passer", "major"  # Passer under two families
    with pytest.raises(TaxonomyError, match="genus 'Passer'"):
        import_embeddings(tmp / "x.npy", tmp / "out.h5", metadata=tmp / "meta.csv", id_column="path", taxonomy=bad, join_on="label=key")
    assert not (tmp / "out.h5").exists()


def test_existing_cache_needs_force(data):
    tmp, x, meta = data
    kwargs = dict(metadata=tmp / "meta.csv", id_column="path", taxonomy=tmp / "tax.csv", join_on="label=key")
    import_embeddings(tmp / "x.npy", tmp / "out.h5", **kwargs)
    np.save(tmp / "x.npy", x * 2)
    with pytest.raises(CacheError, match="--force"):
        import_embeddings(tmp / "x.npy", tmp / "out.h5", **kwargs)
    with open_cache(tmp / "out.h5") as cache:
        np.testing.assert_array_equal(cache.read(), x)
    import_embeddings(tmp / "x.npy", tmp / "out.h5", force=True, **kwargs)
    with open_cache(tmp / "out.h5") as cache:
        np.testing.assert_array_equal(cache.read(), 2 * x)


def test_load_embeddings_errors(tmp_path):
    with pytest.raises(InputError, match="does not exist"):
        load_embeddings(tmp_path / "nope.npy")
    (tmp_path / "x.txt").write_text("1,2\n")
    with pytest.raises(InputError, match="unknown suffix '.txt'"):
        load_embeddings(tmp_path / "x.txt")
    (tmp_path / "x.csv").write_text("a,b\n1,2\n")  # a table, but without an embedding column
    with pytest.raises(InputError, match="has no embedding column: name the column of vectors one of emb"):
        load_embeddings(tmp_path / "x.csv")
    (tmp_path / "x.json").write_text(json.dumps({"embeddings": [1, 2]}))
    with pytest.raises(InputError, match="pybioclip"):
        load_embeddings(tmp_path / "x.json")


def test_cub10_real_embeddings(shared, tmp_path):
    root = shared("cub10")
    report = import_embeddings(root / "bird_embeddings.npy", tmp_path / "cub10.h5", metadata=root / "bird_metadata.json",
                               id_column="path", taxonomy=root / "taxonomy.csv", join_on="species=cub_class")
    assert report.rows == 306 and report.dim == 512 and report.normalized and report.unlabelled == 6
    with open_cache(tmp_path / "cub10.h5") as cache:
        summary = cache.summary()
        x = cache.read()
    assert summary["taxa"] == {"kingdom": 1, "phylum": 1, "class": 1, "order": 4, "family": 4, "genus": 7, "species": 10}
    assert summary["unlabelled"] == 6
    np.testing.assert_array_equal(x, np.load(root / "bird_embeddings.npy"))


def test_cub10_similarity_falls_with_taxonomic_distance_as_published(shared, tmp_path):
    """End to end on real data: import -> cache -> taxonomy -> distances reproduce the data's README
    (mean cosine similarity 0.815 same species, 0.790 same genus, 0.767 same family, 0.713 other order)."""
    from latent.taxonomy import Taxonomy

    root = shared("cub10")
    import_embeddings(root / "bird_embeddings.npy", tmp_path / "cub10.h5", metadata=root / "bird_metadata.json",
                      id_column="path", taxonomy=root / "taxonomy.csv", join_on="species=cub_class")
    with open_cache(tmp_path / "cub10.h5") as cache:
        tax = Taxonomy.from_table(cache.taxonomy_frame())
        rows = np.flatnonzero(tax.labelled("species"))
        x = cache.read(rows, normalize=True)
    sim = x @ x.T
    height = tax.row_distances(rows, rows)
    off = ~np.eye(len(rows), dtype=bool)
    means = {h: sim[(height == h) & off].mean() for h in (0, 1, 2, 4)}
    np.testing.assert_allclose([means[h] for h in (0, 1, 2, 4)], [0.815, 0.790, 0.767, 0.713], atol=5e-4)
    assert set(np.unique(height[off])) == {0, 1, 2, 4}  # one class, four orders: no heights 3, 5-7
