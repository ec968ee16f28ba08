"""Shape probe: constructed answers for norms, anisotropy, effective dimensionality, hubness and centring."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pandas as pd
import pytest

from latent.errors import InputError
from latent.probes.base import ProbeData, ProbeOptions
from latent.probes.shape import k_occurrence, mean_pair_cosine, probe_shape
from latent.synthetic import make_hierarchical

N_SPECIES = 47  # the built-in taxonomy


def _data(X: np.ndarray, per_species: int) -> ProbeData:
    """ProbeData of ``X`` (``47 * per_species`` rows) on the built-in taxonomy, species in blocks."""
    syn = make_hierarchical(per_species=per_species, dim=2, signal=0.0, seed=0)
    assert len(X) == syn.taxonomy.n_rows
    return ProbeData.from_arrays(X, syn.taxonomy, syn.ids)


def _value(result, metric: str) -> float:
    rows = result.rows[result.rows["metric"] == metric]
    assert len(rows) == 1, metric
    return float(rows["value"].iloc[0])


def _get(result, metric: str) -> pd.Series:
    return result.rows[result.rows["metric"] == metric].iloc[0]


def _opts(**kw) -> ProbeOptions:
    kw.setdefault("permutations", 0)
    return ProbeOptions(**kw)


def test_isotropic_gaussian_has_no_anisotropy_and_full_dimension():
    rng = np.random.default_rng(0)
    d, per = 16, 20
    X = rng.standard_normal((N_SPECIES * per, d))
    result = probe_shape(_data(X, per), _opts())
    assert abs(_value(result, "mean_cosine")) < 0.02
    assert abs(_value(result, "mean_cosine_centred")) < 0.02
    for suffix in ("", "_centred"):
        assert 0.85 * d < _value(result, "participation_ratio" + suffix) <= d
        assert _value(result, "components_99" + suffix) >= d - 1
    row = _get(result, "mean_cosine")
    assert row["ci_low"] <= row["value"] <= row["ci_high"]
    assert row["unit"] == "image pair" and row["n"] == len(X) * (len(X) - 1) // 2
    assert set(result.rows["rank"]) == {"all"}
    assert set(result.rows["unit"]) == {"image", "image pair", "species"}


def test_common_offset_is_anisotropic_until_centred():
    rng = np.random.default_rng(1)
    d, per = 24, 10
    offset = rng.standard_normal(d)
    offset *= 10 / np.linalg.norm(offset)
    X = offset + 0.1 * rng.standard_normal((N_SPECIES * per, d))
    result = probe_shape(_data(X, per), _opts())
    assert _value(result, "mean_cosine") > 0.95
    assert abs(_value(result, "mean_cosine_centred")) < 0.05
    # One direction dominates before centring, none after.
    assert _value(result, "participation_ratio") < 1.1
    assert _value(result, "participation_ratio_centred") > 0.7 * d
    assert _value(result, "components_50") == 1
    row = _get(result, "mean_cosine_centred")
    assert bool(row["centred"]) and row["ci_low"] <= row["value"] <= row["ci_high"]


def test_rank_k_data_has_at_most_k_dimensions():
    rng = np.random.default_rng(2)
    k, d, per = 3, 20, 6
    X = rng.standard_normal((N_SPECIES * per, k)) @ rng.standard_normal((k, d))
    result = probe_shape(_data(X, per), _opts())
    for suffix in ("", "_centred"):
        assert _value(result, "participation_ratio" + suffix) <= k + 1e-9
        assert _value(result, "components_99" + suffix) <= k
        assert _value(result, "components_90" + suffix) <= k
    spectrum = result.tables["spectrum"]
    assert set(spectrum.columns) >= {"centred", "component", "explained_variance_ratio", "cumulative"}
    for _, part in spectrum.groupby("centred"):
        assert part["explained_variance_ratio"].sum() == pytest.approx(1.0)
        assert part["explained_variance_ratio"].iloc[k:].max() == 0.0
    assert result.arrays["spectrum"].shape == (2, d)


def test_a_point_at_the_centre_of_a_cloud_is_a_hub():
    rng = np.random.default_rng(3)
    d, per = 20, 8
    X = rng.standard_normal((N_SPECIES * per, d))
    X /= np.linalg.norm(X, axis=1, keepdims=True)  # a shell: no point is nearer the others than any other
    hub = 5
    X[hub] = 1e-3 * rng.standard_normal(d)        # ... except this one, at the centre
    result = probe_shape(_data(X, per), _opts(distance="euclidean"))
    occurrence = result.arrays["k_occurrence"]
    assert occurrence.sum() == len(X) * 10
    assert int(np.argmax(occurrence)) == hub and occurrence[hub] > 0.5 * len(X)
    assert _value(result, "k_occurrence_skew") > 3
    # Euclidean neighbours do not move with centring.
    assert _value(result, "k_occurrence_skew_centred") == _value(result, "k_occurrence_skew")
    assert "do not change with centring" in _get(result, "k_occurrence_skew_centred")["note"]


def test_k_occurrence_equals_brute_force():
    rng = np.random.default_rng(4)
    X = rng.standard_normal((700, 5))  # more rows than one block
    got = k_occurrence(X, 4, "euclidean")
    D = np.sqrt(((X[:, None, :] - X[None, :, :]) ** 2).sum(-1))
    np.fill_diagonal(D, np.inf)
    expected = np.bincount(np.argsort(D, axis=1, kind="stable")[:, :4].ravel(), minlength=len(X))
    np.testing.assert_array_equal(got, expected)
    U = X / np.linalg.norm(X, axis=1, keepdims=True)
    G = U @ U.T
    assert mean_pair_cosine(U) == pytest.approx(G[np.triu_indices(len(X), 1)].mean(), abs=1e-12)


def test_norms_equal_the_planted_scale_and_norms_argument_restores_raw_vectors():
    rng = np.random.default_rng(5)
    per, d = 5, 12
    U = rng.standard_normal((N_SPECIES * per, d)) + 2.0
    U /= np.linalg.norm(U, axis=1, keepdims=True)
    scale = rng.uniform(45, 57, size=len(U))
    raw = probe_shape(_data(U * scale[:, None], per), _opts())
    assert _value(raw, "norm_mean") == pytest.approx(scale.mean(), rel=1e-6)
    assert _value(raw, "norm_min") == pytest.approx(scale.min(), rel=1e-6)
    assert _value(raw, "norm_max") == pytest.approx(scale.max(), rel=1e-6)
    assert _value(raw, "norm_median") == pytest.approx(np.median(scale), rel=1e-6)
    assert _value(raw, "norm_sd") == pytest.approx(scale.std(ddof=1), rel=1e-4)
    assert (raw.rows["space"] == "raw").all()
    # Unit vectors without norms: stated, and the raw-only statistics are those of the unit vectors.
    unit = probe_shape(_data(U, per), _opts())
    assert (unit.rows["space"] == "normalised").all()
    assert "raw norms are not available" in _get(unit, "norm_mean")["note"]
    assert _value(unit, "norm_mean") == pytest.approx(1.0)
    assert _value(unit, "mean_cosine") == pytest.approx(_value(raw, "mean_cosine"), abs=1e-6)
    # Unit vectors with their raw norms: the same rows as the raw vectors.
    restored = probe_shape(_data(U, per), _opts(), norms=scale)
    a = raw.rows.set_index("metric")["value"]
    b = restored.rows.set_index("metric")["value"]
    np.testing.assert_allclose(b.to_numpy(), a.to_numpy(), rtol=1e-5, atol=1e-6, equal_nan=True)


def test_bad_norms_and_zero_vectors_are_refused():
    rng = np.random.default_rng(6)
    per = 2
    X = rng.standard_normal((N_SPECIES * per, 4))
    data = _data(X, per)
    with pytest.raises(InputError, match=r"'norms' parameter of probe_shape must be 94 finite positive"):
        probe_shape(data, _opts(), norms=np.ones(3))
    with pytest.raises(InputError, match="non-finite or non-positive"):
        probe_shape(data, _opts(), norms=np.r_[0.0, np.ones(len(X) - 1)])
    X[7] = 0.0
    with pytest.raises(InputError, match=r"1 image\(s\) are all-zero"):
        probe_shape(_data(X, per), _opts())


def test_identical_vectors_give_nan_rows_with_notes():
    X = np.tile(np.arange(1.0, 6.0), (N_SPECIES * 3, 1))
    result = probe_shape(_data(X, 3), _opts())
    assert _value(result, "mean_cosine") == pytest.approx(1.0)
    assert _value(result, "participation_ratio") == pytest.approx(1.0)
    for metric in ("mean_cosine_centred", "participation_ratio_centred", "k_occurrence_skew",
                   "k_occurrence_skew_centred", "antihub_share", "mantel_spearman", "mantel_spearman_centred"):
        row = _get(result, metric)
        assert np.isnan(row["value"]), metric
        assert "same vector" in row["note"], metric
    assert result.info["identical"] is True


def test_tiny_data_and_one_species_give_nan_rows_no_crash():
    rng = np.random.default_rng(7)
    syn = make_hierarchical(per_species=1, dim=2, signal=0.0, seed=0)
    tax = syn.taxonomy.select_rows(np.arange(2))
    data = ProbeData.from_arrays(rng.standard_normal((2, 6)), tax, ["a", "b"])
    result = probe_shape(data, _opts())
    assert "more than k=10" in _get(result, "k_occurrence_skew")["note"]
    assert "needs at least 3" in _get(result, "mantel_spearman")["note"]
    assert "no CI: 2 species" in _get(result, "norm_mean")["ci_note"]
    assert _value(result, "mean_cosine") == pytest.approx(mean_pair_cosine(
        data.X / np.linalg.norm(data.X, axis=1, keepdims=True)))
    # One species (ProbeData.from_arrays refuses it; a hand-built one still gives rows, not a crash).
    one = replace(data, species=np.zeros(2, dtype=np.int64), codes=data.codes[:1], named=data.named[:1],
                  centroids=data.X.mean(axis=0, keepdims=True), counts=np.array([2]))
    single = probe_shape(one, _opts())
    assert "1 species" in _get(single, "mantel_spearman")["note"]
    with pytest.raises(InputError, match="at least 2 images"):
        probe_shape(replace(data, X=data.X[:1], species=data.species[:1]), _opts())


def test_deterministic_with_the_seed_and_sampled_above_max_images():
    syn = make_hierarchical(per_species=6, dim=16, signal=1.0, seed=8)
    data = ProbeData.from_arrays(syn.embeddings, syn.taxonomy, syn.ids)
    a = probe_shape(data, _opts(max_images=100, seed=3))
    b = probe_shape(data, _opts(max_images=100, seed=3))
    pd.testing.assert_frame_equal(a.rows, b.rows)
    row = _get(a, "k_occurrence_skew")
    assert bool(row["sampled"]) and row["n"] == 100
    c = probe_shape(data, _opts(max_images=100, seed=4))
    assert not np.array_equal(a.arrays["k_occurrence"], c.arrays["k_occurrence"])
    # The planted hierarchy shows in the supporting Mantel row.
    assert _value(a, "mantel_spearman") > 0.3
    assert _get(a, "mantel_spearman")["n"] == N_SPECIES


def test_k_setting_when_registered():
    from latent.probes import PROBES

    if "shape" not in PROBES:
        pytest.skip("the shape probe is not in the registry yet (latent/probes/__init__.py)")
    syn = make_hierarchical(per_species=3, dim=8, seed=9)
    data = ProbeData.from_arrays(syn.embeddings, syn.taxonomy, syn.ids)
    result = probe_shape(data, _opts(extra={"shape": {"k": 3}}))
    assert result.arrays["k_occurrence"].sum() == 3 * len(data.X)
    with pytest.raises(InputError, match="'k' setting of the shape probe"):
        probe_shape(data, _opts(extra={"shape": {"k": 0}}))


def test_real_bioclip2_tol1k(shared):
    from latent.taxonomy import Taxonomy

    table = pd.read_parquet(shared("tol1k_bioclip2", "example_1k.parquet"))
    X = np.stack(table["emb"].to_numpy()).astype(np.float32)
    ranks = ["kingdom", "phylum", "class", "order", "family", "genus", "species"]
    data = ProbeData.from_arrays(X, Taxonomy.from_table(table[ranks].fillna("")), table["uuid"].to_numpy())
    result = probe_shape(data, _opts())
    assert 45 < _value(result, "norm_median") < 57
    # BioCLIP 2's vectors share a direction: anisotropic until centred.
    assert _value(result, "mean_cosine") > 0.4
    assert abs(_value(result, "mean_cosine_centred")) < 0.05
    assert _value(result, "participation_ratio_centred") > _value(result, "participation_ratio")


def test_zero_vector_with_norms_is_refused():
    rng = np.random.default_rng(10)
    X = rng.standard_normal((N_SPECIES * 2, 4))
    X[3] = 0.0
    with pytest.raises(InputError, match=r"1 image\(s\) are all-zero"):
        probe_shape(_data(X, 2), _opts(), norms=np.ones(len(X)))
