"""The within-species attribute probe (issue 16) and the planted attribute of latent.synthetic."""

from __future__ import annotations

import hashlib

import numpy as np
import pytest

from latent.errors import InputError
from latent.probes import PROBES, ProbeData, ProbeOptions, ProbeSpec
from latent.probes.intra_species import (MAX_PERMUTATIONS, attribute_statistics, probe_intra_species,
                                         species_subspace, weighted_median)
from latent.synthetic import balanced_taxonomy, make_hierarchical

SPEC = ProbeSpec("intra_species", "latent.probes.intra_species:probe_intra_species",
                 "within-species attribute: angle to the species subspace, outside fraction, separability",
                 default=False,
                 settings=("attribute", "attribute_name", "permutations", "n_boot", "variance", "min_per_value"),
                 units=(("*", "species"),))
SEEDS = (0, 1, 2)


@pytest.fixture(autouse=True)
def registered(monkeypatch):
    """The probe in the registry (ProbeOptions checks setting names against it) until the lead adds it."""
    monkeypatch.setitem(PROBES, "intra_species", SPEC)
    yield


def _tax():
    return balanced_taxonomy((1, 1, 1, 2, 2, 2, 2))  # 16 species


def _run(data, attribute, *, permutations=99, seed=0, **settings):
    pdata = ProbeData.from_arrays(data.embeddings, data.taxonomy, data.ids)
    options = ProbeOptions(permutations=permutations, seed=seed,
                           extra={"intra_species": {"attribute": attribute, "n_boot": 200, **settings}})
    return probe_intra_species(pdata, options)


def _row(result, metric):
    rows = result.rows.set_index("metric")
    return rows.loc[metric]


# ----------------------------------------------------------------------------------- synthetic
# sha256 of embeddings + species_means + ids made by latent/synthetic.py before the attribute existed.
OLD_DIGESTS = {
    0: "1910ca2d6e0f1a6d8ace0ec391f88e7dd853cbe703d846c64e9b62559651c470",
    1: "ed6850c5053e05cb917c7d0482ea28674d024b025595cf9ccfff6d2b0b5ae24b",
    7: "5f4578315fc6e430c41b94065a694d595904a97df6c5f2ce02d6b86f3e0e5cdc",
}


def _old_kwargs(seed):
    return {0: {}, 1: dict(per_species=5, dim=16),
            7: dict(taxonomy=_tax(), per_species=4, dim=32, signal=0.5, noise=2.0)}[seed]


@pytest.mark.parametrize("seed", sorted(OLD_DIGESTS))
def test_default_output_is_bit_identical_to_before(seed):
    d = make_hierarchical(seed=seed, **_old_kwargs(seed))
    digest = hashlib.sha256(d.embeddings.tobytes() + d.species_means.tobytes() + "|".join(d.ids).encode()).hexdigest()
    assert digest == OLD_DIGESTS[seed]
    assert d.attribute is None
    assert sorted(d.params) == ["dim", "noise", "per_species", "rank_scales", "seed", "signal"]


@pytest.mark.parametrize("where", ["orthogonal", "inside"])
def test_planted_attribute_is_the_only_difference(where):
    plain = make_hierarchical(_tax(), per_species=10, dim=32, seed=3)
    d = make_hierarchical(_tax(), per_species=10, dim=32, seed=3, attribute=where, attribute_scale=2.0)
    u = np.asarray(d.params["attribute_direction"])
    assert np.isclose(np.linalg.norm(u), 1.0)
    assert d.attribute.shape == (160,) and set(np.unique(d.attribute)) == {0, 1}
    assert (d.attribute.reshape(16, 10).sum(axis=1) == 5).all()  # balanced within every species
    expected = plain.embeddings.astype(np.float64) + 2.0 * (d.attribute - 0.5)[:, None] * u[None, :]
    np.testing.assert_allclose(d.embeddings, expected, atol=1e-5)
    np.testing.assert_array_equal(d.species_means, plain.species_means)
    offsets = plain.species_means.astype(np.float64) - plain.species_means.mean(axis=0)
    basis = species_subspace(offsets, 1.0)
    inside = np.linalg.norm(basis @ u)
    assert (inside < 1e-5) if where == "orthogonal" else (inside > 1 - 1e-5)


def test_planted_attribute_bad_arguments():
    with pytest.raises(ValueError, match="attribute"):
        make_hierarchical(_tax(), dim=32, attribute="sideways")
    with pytest.raises(ValueError, match="orthogonal"):
        make_hierarchical(_tax(), dim=8, attribute="orthogonal")  # 15 species offsets span all 8 dimensions
    with pytest.raises(ValueError, match="attribute_scale"):
        make_hierarchical(_tax(), dim=32, attribute="inside", attribute_scale=-1.0)


def test_write_synthetic_keeps_the_attribute(tmp_path):
    from latent.cache import open_cache
    from latent.synthetic import write_synthetic

    d = make_hierarchical(_tax(), per_species=4, dim=32, seed=0, attribute="orthogonal")
    path = write_synthetic(tmp_path / "a.h5", d)
    cache = open_cache(path)
    meta = cache.metadata()
    np.testing.assert_array_equal(np.asarray(meta["attribute"]), d.attribute)
    assert "attribute=orthogonal" in cache.provenance.pretrained


# ------------------------------------------------------------------------------------ statistics
def test_weighted_median_matches_numpy():
    rng = np.random.default_rng(0)
    for n in (1, 2, 5, 8):
        v = rng.normal(size=n)
        assert weighted_median(v, np.ones((1, n)))[0] == pytest.approx(np.median(v))
        w = rng.integers(0, 4, size=(3, n))
        w[:, 0] += 1
        for row, got in zip(w, weighted_median(v, w)):
            assert got == pytest.approx(np.median(np.repeat(v, row)))


@pytest.mark.parametrize("distance", ["cosine", "euclidean"])
def test_leave_one_out_separability_matches_brute_force(distance):
    rng = np.random.default_rng(1)
    X = rng.normal(size=(9, 5))
    X /= np.linalg.norm(X, axis=1, keepdims=True)
    y = np.array([1, 1, 1, 1, 0, 0, 0, 1, 0], dtype=float)
    got = attribute_statistics(X, y[None], np.zeros((0, 5)), distance)["separability"][0]

    def dist(a, c):
        return 1 - a @ c / np.linalg.norm(c) if distance == "cosine" else np.linalg.norm(a - c)

    correct = 0
    for i in range(len(X)):
        others = np.arange(len(X)) != i
        own = X[others & (y == y[i])].mean(axis=0)
        other = X[y != y[i]].mean(axis=0)
        correct += dist(X[i], own) < dist(X[i], other)
    assert got == pytest.approx(correct / len(X))


def test_angle_and_outside_fraction_of_known_directions():
    basis = np.eye(4)[:2]  # the subspace: the first two axes
    X = np.array([[1, 0, 0, 0], [1, 0, 0, 0], [0, 0, 1, 0], [0, 0, 1, 0]], dtype=float)
    out = attribute_statistics(X, np.array([[1, 1, 0, 0.]]), basis)  # delta = e1 - e3: 45 degrees
    assert out["angle"][0] == pytest.approx(45.0)
    assert out["outside"][0] == pytest.approx(np.sqrt(0.5))
    out = attribute_statistics(X[:, [2, 3, 0, 1]], np.array([[1, 1, 0, 0.]]), basis)  # delta = e3 - e1 again
    assert out["angle"][0] == pytest.approx(45.0)


# -------------------------------------------------------------------------------- known answers
@pytest.mark.parametrize("seed", SEEDS)
def test_orthogonal_attribute_is_found_orthogonal(seed):
    d = make_hierarchical(_tax(), per_species=20, dim=64, seed=seed, attribute="orthogonal", attribute_scale=2.0)
    result = _run(d, d.attribute, seed=seed)
    angle, outside, sep = (_row(result, m) for m in
                           ("attribute_angle_deg", "attribute_outside_fraction", "attribute_separability"))
    assert angle["value"] > 75 and angle["value"] > angle["null_mean"] and angle["p_value"] <= 0.01
    assert outside["value"] > 0.95
    assert sep["value"] > 0.95 and sep["p_value"] <= 0.01
    assert angle["ci_low"] <= angle["value"] <= angle["ci_high"]


@pytest.mark.parametrize("seed", SEEDS)
def test_inside_attribute_is_found_inside(seed):
    d = make_hierarchical(_tax(), per_species=20, dim=64, seed=seed, attribute="inside", attribute_scale=2.0)
    result = _run(d, d.attribute, seed=seed)
    angle, outside = _row(result, "attribute_angle_deg"), _row(result, "attribute_outside_fraction")
    assert angle["value"] < 25 and angle["value"] < angle["null_mean"] and angle["p_value"] <= 0.01
    assert outside["value"] < 0.45
    assert _row(result, "attribute_separability")["value"] > 0.95


@pytest.mark.parametrize("seed", SEEDS)
def test_no_attribute_offset_separability_sits_at_its_null(seed):
    d = make_hierarchical(_tax(), per_species=20, dim=64, seed=seed, attribute="orthogonal", attribute_scale=0.0)
    result = _run(d, d.attribute, seed=seed)
    sep = _row(result, "attribute_separability")
    assert sep["p_value"] > 0.01 and abs(sep["z"]) < 3
    assert sep["value"] < 0.7
    assert abs(_row(result, "attribute_angle_deg")["z"]) < 3


# ------------------------------------------------------------------------------ rows and tables
def test_rows_tables_and_skipped_species():
    d = make_hierarchical(_tax(), per_species=10, dim=32, seed=0, attribute="orthogonal", attribute_scale=2.0)
    attribute = np.where(d.attribute == 1, "adult", "juvenile").astype(object)
    attribute[0:10] = "adult"  # species 0: one value
    attribute[10:20] = ["adult"] * 9 + ["juvenile"]  # species 1: one juvenile image
    attribute[20:25] = None  # species 2: 5 unknown, 2 adults and 3 juveniles known
    attribute[25:30] = ["adult", "adult", "juvenile", "juvenile", "juvenile"]
    attribute[30:40] = ""  # species 3: nothing known
    attribute[40] = "larva"  # species 4: a third value (fewer images) is left out
    result = _run(d, list(attribute), permutations=49, attribute_name="life_stage")
    rows = result.rows
    assert list(rows["metric"]) == ["attribute_angle_deg", "attribute_outside_fraction", "attribute_separability",
                                    "attribute_separability_chance"]
    assert set(rows["rank"]) == {"species"} and set(rows["unit"]) == {"species"}
    assert set(rows["n"]) == {13} and set(rows["attribute"]) == {"life_stage"}
    assert list(rows["permutations"]) == [49, 49, 49, 0]
    skipped = result.tables["skipped"]
    assert len(skipped) == 3
    reasons = dict(zip(skipped["species"], skipped["reason"]))
    labels = list(d.taxonomy.species_labels())
    assert "fewer than 2 attribute values" in reasons[labels[0]]
    assert "second value" in reasons[labels[1]]
    assert "no image" in reasons[labels[3]]
    table = result.tables["species"].set_index("species")
    assert len(table) == 13
    assert table.loc[labels[2], "n_a"] + table.loc[labels[2], "n_b"] == 5
    assert {table.loc[labels[4], "value_a"], table.loc[labels[4], "value_b"]} == {"adult", "juvenile"}
    assert table.loc[labels[4], "n_a"] + table.loc[labels[4], "n_b"] == 9
    assert result.arrays["directions"].shape == (13, 32)
    assert result.arrays["basis"].shape[0] == rows["subspace_dim"].iloc[0]


def test_same_seed_same_rows_and_permutations_capped():
    d = make_hierarchical(_tax(), per_species=6, dim=32, seed=0, attribute="orthogonal")
    a = _run(d, d.attribute, permutations=MAX_PERMUTATIONS + 200, seed=4)
    b = _run(d, d.attribute, permutations=MAX_PERMUTATIONS + 200, seed=4)
    assert a.rows.equals(b.rows)
    assert a.rows["permutations"].iloc[0] == MAX_PERMUTATIONS
    c = _run(d, d.attribute, seed=4, permutations=10)
    assert c.rows["permutations"].iloc[0] == 10


def test_no_usable_species_gives_nan_rows_not_a_crash():
    d = make_hierarchical(_tax(), per_species=4, dim=32, seed=0)
    result = _run(d, ["x"] * 64)
    assert result.rows["value"].isna().all() and set(result.rows["n"]) == {0}
    assert len(result.tables["skipped"]) == 16 and len(result.tables["species"]) == 0


def test_bad_attribute_input_is_one_line_input_error():
    d = make_hierarchical(_tax(), per_species=4, dim=32, seed=0)
    for bad, word in ((None, "needs an attribute"), ([0, 1] * 3, "one value per image"), ("life_stage", "text")):
        with pytest.raises(InputError, match=word) as info:
            _run(d, bad)
        assert "\n" not in str(info.value)
    with pytest.raises(InputError, match="variance"):
        _run(d, [0, 1] * 32, variance=1.5)


def test_attribute_from_cache_aligns_by_id_and_runs(tmp_path):
    from latent.probes.intra_species import attribute_from_cache
    from latent.probes.run import load_probe_data
    from latent.synthetic import write_synthetic

    d = make_hierarchical(_tax(), per_species=20, dim=64, seed=0, attribute="orthogonal", attribute_scale=2.0)
    path = write_synthetic(tmp_path / "a.h5", d)
    data, _ = load_probe_data(path)
    values = attribute_from_cache(path, data, "attribute")
    expected = dict(zip(d.ids, d.attribute))
    assert [expected[i] for i in data.ids] == list(values)
    options = ProbeOptions(permutations=19, extra={"intra_species": {"attribute": values, "n_boot": 50}})
    assert probe_intra_species(data, options).rows.set_index("metric").loc["attribute_angle_deg", "value"] > 75
    with pytest.raises(InputError, match="life_stage"):
        attribute_from_cache(path, data, "life_stage")


# ----------------------------------------------------------------------------------------- figure
def _figure_inputs(where="orthogonal", scale=2.0, per_species=10):
    d = make_hierarchical(_tax(), per_species=per_species, dim=32, seed=0, attribute=where, attribute_scale=scale)
    attribute = np.where(d.attribute == 1, "adult", "juvenile")
    return _run(d, attribute, permutations=19, attribute_name="life_stage")


def test_figure_arrays_hold_the_drawn_species():
    from latent.probes.intra_species import FIGURE_SPECIES

    result = _figure_inputs()
    coords, sp, value = (result.arrays[k] for k in ("coords", "coord_species", "coord_value"))
    assert len(np.unique(sp)) == FIGURE_SPECIES and coords.shape == (FIGURE_SPECIES * 10, 2)
    assert sorted(np.bincount(value)) == [FIGURE_SPECIES * 5] * 2
    # orthogonal attribute: the two values are far apart on the attribute axis, every image on its side
    assert coords[value == 1, 1].mean() - coords[value == 0, 1].mean() > 0.3
    assert coords[value == 1, 1].min() > coords[value == 0, 1].max()
    flat = _figure_inputs(scale=0.0).arrays  # no attribute: no such gap
    y, v = flat["coords"][:, 1], flat["coord_value"]
    assert abs(y[v == 1].mean() - y[v == 0].mean()) < 0.1


def test_figure_draws_species_values_and_angles():
    from latent.plotting.intra_species import plot_intra_species
    from latent.verdict import ALPHA

    result = _figure_inputs()
    table = result.tables["species"]
    fig, axes = plot_intra_species(table, result.arrays["coords"], result.arrays["coord_species"],
                                   result.arrays["coord_value"], rows=result.rows, max_species=5)
    left, right = axes[0]
    assert len(left.collections) == 5 * 2  # one per species and value
    assert sum(len(c.get_offsets()) for c in left.collections) == 5 * 10
    assert len(right.collections) == 3  # null means, p <= ALPHA, p > ALPHA
    assert sum(len(c.get_offsets()) for c in right.collections[1:]) == len(table) == 16
    assert "life_stage" in left.get_ylabel() and "species axis" in left.get_xlabel()
    assert right.get_xticks().size == 0  # 16 species: no names
    legend = [t.get_text() for t in fig.legends[0].get_texts()]
    assert "life_stage = adult" in legend and "life_stage = juvenile" in legend
    assert f"p <= {ALPHA:g}" in legend and f"p > {ALPHA:g}" in legend and "null mean" in legend
    assert sum(label.startswith("G") for label in legend) == 5
    texts = [t.get_text() for t in right.texts]
    assert any(t.startswith("median") and "null" in t for t in texts)


def test_figure_names_species_when_few_and_generic_values_when_mixed():
    from latent.plotting.intra_species import plot_intra_species

    result = _figure_inputs()
    table = result.tables["species"].head(6).copy()
    table.loc[0, "value_a"] = "male"
    keep = result.arrays["coord_species"] < 6
    fig, axes = plot_intra_species(table, result.arrays["coords"][keep], result.arrays["coord_species"][keep],
                                   result.arrays["coord_value"][keep])
    right = axes[0, 1]
    assert [t.get_text() for t in right.get_xticklabels()][0].startswith("G")
    legend = [t.get_text() for t in fig.legends[0].get_texts()]
    assert "most frequent value" in legend and "second value" in legend


def test_report_adapter_skips_without_results(tmp_path):
    from latent.plotting.intra_species import report_intra_species

    class Context:
        def probe_table(self, model, name):
            return None

        def npz(self, model, name):
            return {}

    assert report_intra_species(Context(), None) is None


def test_report_adapter_draws_from_a_probe_folder(tmp_path):
    from pathlib import Path

    from latent.figures import FigureContext, ModelRun
    from latent.plotting.intra_species import report_intra_species
    from latent.probes.intra_species import attribute_from_cache
    from latent.probes.run import load_probe_data, probe_cache
    from latent.synthetic import write_synthetic

    d = make_hierarchical(_tax(), per_species=6, dim=32, seed=0, attribute="orthogonal", attribute_scale=2.0)
    path = write_synthetic(tmp_path / "a.h5", d)
    data, _ = load_probe_data(path)
    options = ProbeOptions(permutations=19, extra={"intra_species": {
        "attribute": attribute_from_cache(path, data, "attribute"), "attribute_name": "sex", "n_boot": 50}})
    probe_cache(path, tmp_path / "probe", probes=["intra_species"], options=options)
    context = FigureContext([ModelRun("synthetic", Path(path), None, [], tmp_path / "probe", [])])
    fig, axes = report_intra_species(context, context.models[0])
    left, right = axes[0]
    assert len(left.collections) == 2 * 8 and "sex" in left.get_ylabel()
    assert sum(len(c.get_offsets()) for c in right.collections[1:]) == 16
    assert fig._suptitle is None  # the report writes the title


def test_cli_attribute_from_cache_metadata(tmp_path, capsys):
    import json

    from latent.cli import main
    from latent.synthetic import make_hierarchical, write_synthetic

    cache = write_synthetic(tmp_path / "attr.h5", make_hierarchical(per_species=6, dim=64, signal=1.0, seed=0,
                                                                     attribute="orthogonal", attribute_scale=2.0))
    out = tmp_path / "p"
    assert main(["probe", str(cache), "--probes", "intra_species", "--attribute", "attribute", "--permutations", "99",
                 "--out", str(out)]) == 0
    assert "attribute_angle_deg" in capsys.readouterr().out
    record = json.loads((out / "run.json").read_text())
    assert record["attribute"] == "attribute"
    assert record["options"]["extra"]["intra_species"]["attribute"] == "attribute"  # the name, not 288 values
    assert main(["probe", str(cache), "--probes", "intra_species", "--attribute", "colour", "--out",
                 str(tmp_path / "q")]) == 2
    assert "colour" in capsys.readouterr().err


def test_cli_synth_plants_an_attribute(tmp_path, capsys):
    from latent.cache import open_cache
    from latent.cli import main

    out = tmp_path / "a.h5"
    assert main(["synth", "--out", str(out), "--per-species", "4", "--attribute", "inside"]) == 0
    with open_cache(out) as cache:
        values = cache.metadata(["attribute"])["attribute"]
    assert set(map(int, values)) == {0, 1}
    assert main(["synth", "--out", str(tmp_path / "b.h5"), "--dim", "8", "--attribute", "orthogonal"]) == 2
    assert "no direction is orthogonal" in capsys.readouterr().err and not (tmp_path / "b.h5").exists()
