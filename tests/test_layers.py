"""Where in the network each rank appears: latent.layers and latent.plotting.layers (issue 16)."""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")

import numpy as np
import pandas as pd
import pytest

from latent.errors import InputError
from latent.layers import EMERGENCE_COLUMNS, emergence, emergence_layers, layer_stack_taxonomy, make_layer_stack
from latent.plotting.layers import X_LABEL, Y_LABEL, plot_emergence
from latent.ranks import RANK_NAMES
from latent.synthetic import balanced_taxonomy
from latent.verdict import ALPHA

PLANTED = {"family": 1, "genus": 3}
N_LAYERS = 5
SMALL = dict(per_species=3, dim=16)


def _run(seed: int, signal: float = 1.0, emerge=PLANTED) -> pd.DataFrame:
    tax = balanced_taxonomy()
    stack = make_layer_stack(tax, n_layers=N_LAYERS, emerge=emerge, signal=signal, seed=seed, **SMALL)
    return emergence(stack, layer_stack_taxonomy(tax, per_species=SMALL["per_species"]), permutations=199, seed=seed)


@pytest.fixture(scope="module")
def planted() -> pd.DataFrame:
    return _run(0)


# ------------------------------------------------------------------------------ known answer
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_planted_emergence_is_found(seed):
    found = emergence_layers(_run(seed)).set_index("rank")
    testable = found[found["status"] != "not testable"]
    assert {"family", "genus"} <= set(testable.index)
    assert found.loc["family", "emergence_layer"] == 1.0
    assert found.loc["genus", "emergence_layer"] == 3.0
    others = testable.drop(index=["family", "genus"])
    assert len(others) >= 2  # class, order, species are testable here and never planted
    assert (others["status"] == "never").all(), others


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_no_signal_never_emerges(seed):
    found = emergence_layers(_run(seed, signal=0.0))
    assert set(found["status"]) <= {"never", "not testable"}
    assert found["emergence_layer"].isna().all()


def test_emergence_table_shape_and_values(planted):
    assert list(planted.columns) == EMERGENCE_COLUMNS
    assert len(planted) == N_LAYERS * len(RANK_NAMES)
    assert sorted(planted["layer"].unique()) == list(range(N_LAYERS))
    assert (planted["metric"] == "rank_distance_ratio").all()
    fam = planted[planted["rank"] == "family"].set_index("layer")
    assert fam.loc[0, "verdict"] == "no" and fam.loc[0, "value"] > 0.9
    assert (fam.loc[1:, "verdict"] == "yes").all() and (fam.loc[1:, "value"] < 0.8).all()
    assert (fam.loc[1:, "p_adjusted"] <= ALPHA).all()
    # kingdom and phylum hold one taxon here: one level, never testable
    top = planted[planted["rank"].isin(["kingdom", "phylum"])]
    assert (top["verdict"] == "not testable").all() and (top["level"] == "kingdom=phylum").all()


def test_emergence_ranks_filter():
    tax = balanced_taxonomy()
    stack = make_layer_stack(tax, n_layers=2, emerge={"genus": 1}, seed=0, **SMALL)
    table = emergence(stack, layer_stack_taxonomy(tax, per_species=3), permutations=19, ranks=["genus"])
    assert list(table["rank"]) == ["genus", "genus"]


# ------------------------------------------------------------------------------ emergence_layers rule
def _table(rank_verdicts: dict[str, list[str]]) -> pd.DataFrame:
    rows = [{"layer": k, "rank": rank, "verdict": v, "level": rank}
            for rank, verdicts in rank_verdicts.items() for k, v in enumerate(verdicts)]
    return pd.DataFrame(rows)


def test_emergence_layer_needs_yes_at_every_later_layer():
    found = emergence_layers(_table({
        "order": ["yes", "no", "yes", "yes"],        # lost at 1: emerges at 2
        "family": ["no", "yes", "yes", "no"],        # lost at the end: never
        "genus": ["not testable"] * 4,
        "species": ["no", "no", "no", "yes"],
    })).set_index("rank")
    assert found.loc["order", "emergence_layer"] == 2.0 and found.loc["order", "status"] == "emerges"
    assert np.isnan(found.loc["family", "emergence_layer"]) and found.loc["family", "status"] == "never"
    assert found.loc["genus", "status"] == "not testable"
    assert found.loc["species", "emergence_layer"] == 3.0
    assert list(found.index) == ["order", "family", "genus", "species"]


def test_emergence_layers_refuses_other_tables():
    with pytest.raises(InputError, match="'table'.*verdict"):
        emergence_layers(pd.DataFrame({"layer": [0], "rank": ["genus"]}))


# ------------------------------------------------------------------------------ the synthetic stack
def test_layer_stack_switches_offsets_on_at_their_layer():
    tax = balanced_taxonomy()
    stack = make_layer_stack(tax, n_layers=4, emerge={"family": 1, "genus": 3}, seed=5, **SMALL)
    assert len(stack) == 4 and all(X.shape == (tax.n_species * 3, 16) for X in stack)
    assert np.array_equal(stack[1], stack[2])           # nothing emerges at 2: same draws, same layer
    assert not np.array_equal(stack[0], stack[1]) and not np.array_equal(stack[2], stack[3])
    none = make_layer_stack(tax, n_layers=3, seed=5, **SMALL)
    assert all(np.array_equal(none[0], X) for X in none)
    # the noise is the same at every layer: layer 0 of a stack with emergence equals the empty stack
    assert np.array_equal(stack[0], none[0])


@pytest.mark.parametrize("emerge", [{"genus": 4}, {"genus": -1}, {"tribe": 1}, {"genus": 1.5}])
def test_layer_stack_bad_emerge(emerge):
    with pytest.raises(InputError, match="'emerge'"):
        make_layer_stack(balanced_taxonomy(), n_layers=4, emerge=emerge, **SMALL)


def test_emergence_refuses_misaligned_layers():
    tax = balanced_taxonomy()
    stack = make_layer_stack(tax, n_layers=2, seed=0, **SMALL)
    with pytest.raises(InputError, match="layer 1 has shape"):
        emergence([stack[0], stack[1][:-1]], layer_stack_taxonomy(tax, per_species=3))
    with pytest.raises(InputError, match="'layers'"):
        emergence([], layer_stack_taxonomy(tax, per_species=3))


# ------------------------------------------------------------------------------ the figure
def _gid(ax, gid):
    return [a for a in ax.get_children() if a.get_gid() == gid]


def test_figure_draws_the_table(planted):
    fig, ax = plot_emergence(planted)
    found = emergence_layers(planted)
    testable_levels = planted[planted["verdict"] != "not testable"]["level"].unique()
    lines = _gid(ax, "emergence-line")
    assert len(lines) == len(testable_levels) == 5  # class, order, family, genus, species
    for line in lines:  # dodged sideways by under half a layer
        assert np.array_equal(np.round(line.get_xdata()), np.arange(N_LAYERS))
        assert np.abs(line.get_xdata() - np.arange(N_LAYERS)).max() < 0.25
    family_line = lines[list(testable_levels).index("family")]
    fam = planted[planted["rank"] == "family"].sort_values("layer")["value"].to_numpy()
    assert np.allclose(family_line.get_ydata(), fam)
    # filled markers exactly where the verdict is yes, open ones elsewhere
    drawn = planted[planted["level"].isin(testable_levels)].drop_duplicates(["layer", "level"])
    yes = sum(len(a.get_xdata()) for a in _gid(ax, "emergence-yes"))
    no = sum(len(a.get_xdata()) for a in _gid(ax, "emergence-no"))
    assert yes == int((drawn["verdict"] == "yes").sum()) == 4 + 2
    assert no == len(drawn) - yes
    assert all(a.get_markerfacecolor() == "white" for a in _gid(ax, "emergence-no"))
    # one tick per emerging rank, at its emergence layer (nudged by under half a layer)
    ticks = _gid(ax, "emergence-tick")
    expected = sorted(found["emergence_layer"].dropna())
    assert len(ticks) == len(expected) == 2
    assert np.allclose(sorted(round(t.get_xdata()[0]) for t in ticks), expected)
    assert all(abs(t.get_xdata()[0] - round(t.get_xdata()[0])) < 0.5 for t in ticks)
    # CI bars for the levels with a parent bootstrap (family, genus, species here; class and order have none)
    cis = _gid(ax, "emergence-ci")
    with_ci = planted[np.isfinite(planted["ci_low"])]["level"].nunique()
    assert len(cis) == with_ci
    assert len(_gid(ax, "no-structure")) == 1
    assert ax.get_xlabel() == X_LABEL == "layer"
    assert ax.get_ylabel() == Y_LABEL
    assert [t.get_text() for t in ax.get_xticklabels()] == [str(k) for k in range(N_LAYERS)]
    legend = [t.get_text() for t in fig.legends[0].get_texts()]
    assert "family (emerges at 1)" in legend and "genus (emerges at 3)" in legend and "class" in legend
    assert f"yes (Holm p <= {ALPHA:g})" in legend
    assert not any("kingdom" in t for t in legend)


def test_figure_on_given_axes_and_no_signal(tmp_path):
    from latent.plotting.style import new_figure, save_figure

    table = _run(0, signal=0.0)
    fig, axes = new_figure(1, 1)
    out_fig, ax = plot_emergence(table, ax=axes[0, 0])
    assert out_fig is fig and ax is axes[0, 0]
    assert _gid(ax, "emergence-tick") == [] and _gid(ax, "emergence-yes") == []
    assert ax.get_legend() is not None and not fig.legends
    assert save_figure(fig, tmp_path / "e")[1].stat().st_size > 0


def test_figure_refuses_bad_tables(planted):
    with pytest.raises(InputError, match="'table'.*verdict"):
        plot_emergence(planted.drop(columns="verdict"))
    two = pd.concat([planted.assign(model="a"), planted.assign(model="b")])
    with pytest.raises(InputError, match="one model per call"):
        plot_emergence(two)
