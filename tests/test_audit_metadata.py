"""Metadata versus taxonomy in the geometry (latent.audit.metadata, issue 15)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from latent.audit.metadata import COLUMNS, METRICS, _cosine_distances, _euclidean_distances, _Gram, metadata_vs_taxonomy
from latent.errors import InputError
from latent.stats import ALPHA
from latent.synthetic import balanced_taxonomy, make_hierarchical

SEEDS = (0, 1, 2)


def _data(seed: int, offset: float = 0.0, *, per_species: int = 5, dim: int = 24):
    """Planted hierarchy (144 species, 36 families) and a random 'img_type' with a constant offset on specimens."""
    d = make_hierarchical(balanced_taxonomy(), per_species=per_species, dim=dim, seed=seed)
    rng = np.random.default_rng(100 + seed)
    img_type = np.where(rng.random(len(d.embeddings)) < 0.3, "specimen", "photo").astype(object)
    direction = rng.standard_normal(dim)
    x = d.embeddings.astype(np.float64)
    x[img_type == "specimen"] += offset * direction / np.linalg.norm(direction)
    return x, d.taxonomy, img_type


def _row(table: pd.DataFrame, metric: str) -> pd.Series:
    return table.set_index("metric").loc[metric]


def _full_design_ss(gram: _Gram, *codes: np.ndarray) -> float:
    """Reference: trace(H G) with H the hat matrix of [1, one-hot factors...] by QR (the slow, obvious route)."""
    n = len(codes[0])
    cols = [np.ones((n, 1))] + [np.eye(int(c.max()) + 1)[c] for c in codes]
    u, s, _ = np.linalg.svd(np.hstack(cols), full_matrices=False)
    q = u[:, s > 1e-9 * s[0] * n]
    g = gram.dense if gram.dense is not None else gram.factor @ gram.factor.T
    return float(np.sum((g @ q) * q))


# ----------------------------------------------------------------------------- the table
def test_table_layout_and_ranges():
    x, tax, col = _data(0, 0.5)
    out = metadata_vs_taxonomy(x, tax, col, permutations=19, n_boot=50, column="img_type")
    assert tuple(out.columns) == COLUMNS
    assert tuple(out["metric"]) == METRICS
    assert set(out["rank"]) == {"family"} and set(out["column"]) == {"img_type"}
    assert set(out["n"]) == {len(x)}
    r2 = out[out["metric"].str.startswith("r2_")].set_index("metric")["value"]
    assert ((r2 >= 0) & (r2 <= 1)).all()
    assert r2["r2_both"] == pytest.approx(r2["r2_taxonomy"] + r2["r2_column_given_taxonomy"])
    assert r2["r2_both"] >= max(r2["r2_taxonomy"], r2["r2_column"]) - 1e-12
    # p-values: smallest possible is 1 / (1 + perms); rows without a test have none
    p = out.set_index("metric")["p_value"]
    assert p[["r2_both", "pseudo_f_both"]].isna().all()
    assert (p.dropna() >= 1 / 20).all()
    c = _row(out, "within_taxon_contrast")
    assert c["ci_low"] <= c["value"] <= c["ci_high"]
    assert c["value"] == pytest.approx(_row(out, "within_taxon_distance_different")["value"]
                                       - _row(out, "within_taxon_distance_same")["value"])


def test_same_seed_same_table_and_seed_changes_nulls():
    x, tax, col = _data(1, 0.2)
    a = metadata_vs_taxonomy(x, tax, col, permutations=19, n_boot=50, seed=3)
    b = metadata_vs_taxonomy(x, tax, col, permutations=19, n_boot=50, seed=3)
    pd.testing.assert_frame_equal(a, b)
    c = metadata_vs_taxonomy(x, tax, col, permutations=19, n_boot=50, seed=4)
    assert np.allclose(a["value"], c["value"], equal_nan=True)
    assert not np.allclose(a["null_mean"], c["null_mean"], equal_nan=True)


# ----------------------------------------------------------------------------- exactness
@pytest.mark.parametrize("distance", ["cosine", "euclidean"])
def test_pseudo_f_equals_skbio_permanova(distance):
    from skbio import DistanceMatrix
    from skbio.stats.distance import permanova

    x, tax, col = _data(2, 0.3, per_species=2)
    out = metadata_vs_taxonomy(x, tax, col, distance=distance, permutations=0, n_boot=0)
    d = _cosine_distances(x) if distance == "cosine" else _euclidean_distances(x)
    dm = DistanceMatrix((d + d.T) / 2, ids=[str(i) for i in range(len(x))], validate=False)
    f_col = permanova(dm, list(col), permutations=0)["test statistic"]
    f_tax = permanova(dm, list(tax.labels("family")), permutations=0)["test statistic"]
    assert _row(out, "pseudo_f_column")["value"] == pytest.approx(f_col, rel=1e-9)
    assert _row(out, "pseudo_f_taxonomy")["value"] == pytest.approx(f_tax, rel=1e-9)


def test_euclidean_feature_route_equals_gower_route():
    x, tax, col = _data(0, 0.3, per_species=2)
    fam = np.unique(tax.codes("family"), return_inverse=True)[1]
    lev = np.unique(col.astype(str), return_inverse=True)[1]
    dense = _Gram.from_distances(_euclidean_distances(x))
    factor = _Gram.from_features(x)
    assert dense.total() == pytest.approx(factor.total(), rel=1e-9)
    for codes, k in ((fam, fam.max() + 1), (lev, 2)):
        assert dense.between(codes, k) == pytest.approx(factor.between(codes, k), rel=1e-9)
    # the sequential sum of squares (Frisch-Waugh) equals the joint hat matrix's, by either route
    for g in (dense, factor):
        assert _full_design_ss(g, fam, lev) == pytest.approx(_full_design_ss(g, fam) + _seq(g, fam, lev), rel=1e-9)
    # and the public function gives the same R^2 when the Gower route is forced on Euclidean data
    out = metadata_vs_taxonomy(x, tax, col, distance="euclidean", permutations=0, n_boot=0)
    ss_t = dense.total()
    assert _row(out, "r2_both")["value"] == pytest.approx(_full_design_ss(dense, fam, lev) / ss_t, rel=1e-9)
    assert _row(out, "r2_taxonomy")["value"] == pytest.approx(_full_design_ss(dense, fam) / ss_t, rel=1e-9)


def _seq(g: _Gram, fam: np.ndarray, lev: np.ndarray) -> float:
    from latent.audit.metadata import _basis, _one_hot, _within_group_residuals

    return g.quad(_basis(_within_group_residuals(_one_hot(lev, lev.max() + 1), fam, fam.max() + 1)))


def test_cosine_r2_both_equals_full_design():
    x, tax, col = _data(1, 0.3, per_species=2)
    fam = np.unique(tax.codes("family"), return_inverse=True)[1]
    lev = np.unique(col.astype(str), return_inverse=True)[1]
    g = _Gram.from_distances(_cosine_distances(x))
    out = metadata_vs_taxonomy(x, tax, col, permutations=0, n_boot=0)
    assert _row(out, "r2_both")["value"] == pytest.approx(_full_design_ss(g, fam, lev) / g.total(), rel=1e-9)
    assert _row(out, "r2_column")["value"] == pytest.approx(_full_design_ss(g, lev) / g.total(), rel=1e-9)


# ----------------------------------------------------------------------------- the known answers
@pytest.mark.parametrize("distance", ["cosine", "euclidean"])
@pytest.mark.parametrize("seed", SEEDS)
def test_planted_metadata_effect_is_found(seed, distance):
    x, tax, col = _data(seed, 0.5)
    out = metadata_vs_taxonomy(x, tax, col, distance=distance, permutations=99, n_boot=200, seed=seed)
    for metric in ("r2_column_given_taxonomy", "pseudo_f_column_given_taxonomy", "r2_taxonomy"):
        assert _row(out, metric)["p_value"] <= ALPHA, metric
    assert _row(out, "r2_column_given_taxonomy")["value"] > 0.005
    if distance == "euclidean":
        # an offset adds |v|^2 to every different-type pair's squared distance, nothing to same-type pairs;
        # under cosine a shared offset also pulls specimen pairs together, so the sign is not guaranteed there
        contrast = _row(out, "within_taxon_contrast")
        assert contrast["p_value"] <= ALPHA and contrast["ci_low"] > 0


@pytest.mark.parametrize("seed", SEEDS)
def test_no_metadata_effect_is_not_found(seed):
    x, tax, col = _data(seed, 0.0)
    out = metadata_vs_taxonomy(x, tax, col, permutations=99, n_boot=200, seed=seed)
    for metric in ("r2_column_given_taxonomy", "within_taxon_contrast", "r2_column"):
        assert _row(out, metric)["p_value"] > ALPHA, metric
    assert _row(out, "r2_taxonomy")["p_value"] <= ALPHA
    # the chance level of R^2 is about df / (n - 1): the null mean says so next to each R^2
    assert _row(out, "r2_column")["null_mean"] == pytest.approx(1 / (len(x) - 1), rel=0.5)
    # species are the units of the taxonomy's null: random groups of whole species explain more than
    # random groups of images (the species differ), less than the real families
    tax_row = _row(out, "r2_taxonomy")
    assert 35 / (len(x) - 1) < tax_row["null_mean"] < tax_row["value"]


@pytest.mark.parametrize("seed", SEEDS)
def test_column_confounded_with_taxonomy_has_no_effect_beyond_it(seed):
    """Mostly one image type per family (90%), no offset: the column 'explains' the space marginally only."""
    x, tax, _ = _data(seed, 0.0)
    rng = np.random.default_rng(seed)
    fam = np.unique(tax.codes("family"), return_inverse=True)[1]
    family_type = rng.random(fam.max() + 1) < 0.5
    flip = rng.random(len(x)) < 0.1
    col = np.where(family_type[fam] ^ flip, "specimen", "photo")
    out = metadata_vs_taxonomy(x, tax, col, permutations=99, n_boot=200, seed=seed)
    assert _row(out, "r2_column")["p_value"] <= ALPHA  # the free permutation is fooled by the confounding
    assert _row(out, "r2_column_given_taxonomy")["p_value"] > ALPHA
    assert _row(out, "within_taxon_contrast")["p_value"] > ALPHA


def test_column_that_is_a_function_of_the_taxon_cannot_be_tested():
    x, tax, _ = _data(0, 0.0, per_species=2)
    col = np.array([o[-1] for o in tax.labels("order")], dtype=object)  # constant within each family
    out = metadata_vs_taxonomy(x, tax, col, permutations=19, n_boot=50)
    row = _row(out, "r2_column_given_taxonomy")
    assert row["value"] == pytest.approx(0.0, abs=1e-12)
    assert np.isnan(row["p_value"]) and "constant within every family" in row["note"]
    assert np.isnan(_row(out, "within_taxon_contrast")["value"])


def test_species_permutation_respects_units_at_species_rank():
    x, tax, col = _data(0, 0.0, per_species=3)
    out = metadata_vs_taxonomy(x, tax, col, rank="species", permutations=19, n_boot=0)
    assert "images permuted among the 144 species" in _row(out, "r2_taxonomy")["note"]
    assert _row(out, "r2_taxonomy")["p_value"] == pytest.approx(1 / 20)


# ----------------------------------------------------------------------------- rows used
def test_missing_values_unlabelled_rows_and_sampling():
    x, tax, col = _data(0, 0.5, per_species=3)
    col = col.copy()
    col[:10] = None
    col[10:15] = np.nan
    col[15:20] = "  "
    out = metadata_vs_taxonomy(x, tax, col, permutations=0, n_boot=0)
    assert set(out["n"]) == {len(x) - 20}
    small = metadata_vs_taxonomy(x, tax, col, permutations=0, n_boot=0, max_images=200, seed=5)
    assert set(small["n"]) == {200}
    assert small["note"].str.contains(f"seeded sample of 200 of {len(x) - 20} usable images").all()


def test_one_valued_column_gives_nan_rows_with_a_reason():
    x, tax, _ = _data(0, per_species=2)
    out = metadata_vs_taxonomy(x, tax, ["photo"] * len(x), permutations=5)
    assert out["value"].isna().all()
    assert out["note"].str.contains("the column has one value").all()


def test_taxonomy_table_is_accepted():
    x, tax, col = _data(0, 0.3, per_species=2)
    frame = pd.DataFrame(tax.row_names, columns=["kingdom", "phylum", "class", "order", "family", "genus", "species"])
    a = metadata_vs_taxonomy(x, tax, col, permutations=0, n_boot=0)
    b = metadata_vs_taxonomy(x, frame, pd.Series(col), permutations=0, n_boot=0)
    assert np.allclose(a["value"], b["value"], equal_nan=True)


@pytest.mark.parametrize(("kwargs", "message"), [
    ({"rank": "tribe"}, "'rank'"),
    ({"distance": "manhattan"}, "'distance'"),
    ({"permutations": -1}, "'permutations'"),
    ({"max_images": 1}, "'max_images'"),
    ({"column_values": ["a"] * 3}, "'column_values'"),
    ({"X": np.full((288, 4), np.nan)}, "'X'"),
])
def test_bad_input_is_one_line_naming_the_parameter(kwargs, message):
    x, tax, col = _data(0, per_species=2)
    args = {"X": x, "column_values": col, **kwargs}
    with pytest.raises(InputError, match=message) as e:
        metadata_vs_taxonomy(args.pop("X"), tax, args.pop("column_values"), **args)
    assert "\n" not in str(e.value)


# ----------------------------------------------------------------------------- real data
def test_tol1k_img_type_against_family(shared, tmp_path):
    from latent.cache import open_cache
    from latent.importer import import_embeddings

    source = shared("tol1k_bioclip2", "example_1k.parquet")
    cache_path = tmp_path / "tol1k.h5"
    import_embeddings(source, out=cache_path)
    with open_cache(cache_path) as cache:
        x = cache.read()
        tax = cache.taxonomy()
        img_type = cache.metadata(["img_type"])["img_type"]
    out = metadata_vs_taxonomy(x, tax, img_type, rank="family", permutations=99, n_boot=200, column="img_type")
    r = out.set_index("metric")
    assert set(out["n"]) == {int((tax.labelled("family") & img_type.notna().to_numpy()).sum())}
    assert r.loc["r2_taxonomy", "value"] > r.loc["r2_column", "value"] > 0
    assert r.loc["r2_column_given_taxonomy", "p_value"] <= ALPHA
