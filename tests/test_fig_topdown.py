"""The flat vs top-down figure draws its table: points, CI bars, the paired difference, the ranks left out."""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")

import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import pytest  # noqa: E402

from latent.errors import InputError  # noqa: E402
from latent.plotting.topdown import DODGE, plot_topdown  # noqa: E402
from latent.predictors import predict_centroid  # noqa: E402
from latent.splits import random_split  # noqa: E402
from latent.synthetic import balanced_taxonomy, make_hierarchical  # noqa: E402
from latent.topdown import compare_topdown, predict_topdown  # noqa: E402


def hand_table() -> pd.DataFrame:
    """kingdom: one taxon; class, genus, species: flat 0.9/0.8/0.7, top-down 0.8/0.6/0.5."""
    rows = []
    values = {"kingdom": (1.0, 1.0), "class": (0.9, 0.8), "genus": (0.8, 0.6), "species": (0.7, 0.5)}
    for rank, (flat, td) in values.items():
        note = "one taxon at this rank: not testable" if rank == "kingdom" else ""
        n_taxa = 1 if rank == "kingdom" else 12
        for mode, method, v in (("flat", "knn", flat), ("top-down", "knn-topdown", td)):
            rows.append(dict(rank=rank, metric="top1", mode=mode, method=method, value=v, ci_low=v - 0.05,
                             ci_high=min(1.0, v + 0.04), n=100, n_taxa=n_taxa, note=note))
        rows.append(dict(rank=rank, metric="top1_difference", mode="top-down - flat", method="knn-topdown - knn",
                         value=td - flat, ci_low=td - flat - 0.03, ci_high=td - flat + 0.02, n=100, n_taxa=n_taxa,
                         note=note))
        rows.append(dict(rank=rank, metric="consistency", mode="flat", method="knn", value=0.5, ci_low=0.4,
                         ci_high=0.6, n=100, n_taxa=n_taxa, note=""))
    return pd.DataFrame(rows)


def line(ax, gid: str):
    found = [a for a in ax.get_lines() if a.get_gid() == gid]
    assert len(found) == 1, [a.get_gid() for a in ax.get_lines()]
    return found[0]


def ci_segments(ax, gid: str) -> np.ndarray:
    """``(k, 2)`` lower and upper end of every CI bar with this gid."""
    found = [c for c in ax.collections if c.get_gid() == gid]
    assert len(found) == 1
    return np.array([[seg[:, 1].min(), seg[:, 1].max()] for seg in found[0].get_segments()])


def test_points_bars_and_difference_are_the_table():
    table = hand_table()
    fig, (acc, diff) = plot_topdown(table)
    shown = ["class", "genus", "species"]
    for ax in (acc, diff):
        assert [t.get_text() for t in ax.get_xticklabels()] == shown
    flat, td = line(acc, "topdown-accuracy-0"), line(acc, "topdown-accuracy-1")
    np.testing.assert_allclose(flat.get_ydata(), [0.9, 0.8, 0.7])
    np.testing.assert_allclose(td.get_ydata(), [0.8, 0.6, 0.5])
    np.testing.assert_allclose(flat.get_xdata(), np.arange(3) - DODGE)
    np.testing.assert_allclose(td.get_xdata(), np.arange(3) + DODGE)
    np.testing.assert_allclose(ci_segments(acc, "topdown-accuracy-1-ci"), [[0.75, 0.84], [0.55, 0.64], [0.45, 0.54]])
    d = line(diff, "topdown-difference")
    np.testing.assert_allclose(d.get_ydata(), [-0.1, -0.2, -0.2])
    np.testing.assert_allclose(ci_segments(diff, "topdown-difference-ci"), [[-0.13, -0.08], [-0.23, -0.18],
                                                                            [-0.23, -0.18]])
    zero = line(diff, "no-difference")
    assert set(zero.get_ydata()) == {0.0}
    texts = [t.get_text() for leg in fig.legends for t in leg.get_texts()]
    assert texts == ["flat (knn)", "top-down (knn-topdown)", "top-down \u2212 flat"]
    title = " ".join(fig.legends[0].get_title().get_text().split())
    assert title == "not drawn: kingdom (one true taxon: not testable)"
    assert fig.get_suptitle() == "Flat and top-down prediction per rank"
    assert acc.get_ylabel() == "top-1 accuracy (95% CI)" and "paired" in diff.get_ylabel()


def test_a_real_comparison_is_drawn_and_saved(tmp_path):
    data = make_hierarchical(balanced_taxonomy((1, 1, 2, 3, 2, 2, 2)), per_species=8, dim=32, seed=0,
                             rank_scales=[1, 0.1, 0.1, 0.1, 0.1, 1.5, 3], noise=1.0)
    train, test = random_split(data.taxonomy, np.arange(data.taxonomy.n_rows), test_fraction=0.5, seed=0)
    X = data.embeddings
    flat = predict_centroid(X[train], train, X[test], test, data.taxonomy, mode="flat")
    td = predict_topdown("centroid", X[train], train, X[test], test, data.taxonomy)
    table = compare_topdown(flat, td, data.taxonomy, n_boot=200)
    fig, (acc, diff) = plot_topdown(table, tmp_path / "topdown")
    assert (tmp_path / "topdown.png").stat().st_size > 0 and (tmp_path / "topdown.pdf").stat().st_size > 0
    shown = ["class", "order", "family", "genus", "species"]  # kingdom and phylum: one taxon each
    assert [t.get_text() for t in acc.get_xticklabels()] == shown
    expected = table[table["metric"] == "top1_difference"].set_index("rank").loc[shown]
    np.testing.assert_allclose(line(diff, "topdown-difference").get_ydata(), expected["value"])
    np.testing.assert_allclose(ci_segments(diff, "topdown-difference-ci"), expected[["ci_low", "ci_high"]])
    assert (expected["ci_high"] < 0).all()  # the planted loss, drawn below the zero line


def test_bad_tables_are_refused():
    table = hand_table()
    with pytest.raises(InputError, match="'table' parameter of plot_topdown"):
        plot_topdown(table.drop(columns=["mode"]))
    with pytest.raises(InputError, match="two modes"):
        plot_topdown(table[table["mode"] != "flat"])
    two = pd.concat([table.assign(model="a"), table.assign(model="b")])
    with pytest.raises(InputError, match="'model'"):
        plot_topdown(two)
