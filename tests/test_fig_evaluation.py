"""Evaluation figures say what their data says: what is drawn (bars, points, segments, texts, legend entries)
is checked against the input tables.

* an empty series (no mistakes, no species predicted) never labels a panel that shows bars, and a panel
  with no data at all says so once;
* ranks with one taxon are not drawn as 1.000 points, top-5 is not drawn at ranks with 5 or fewer
  classes, and every drawn point has its chance level (1 / classes) and, where given, its majority line;
* k-fold (centroid) runs are counted per fold with the number of folds, never as the sum over folds.
"""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")

import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import pytest  # noqa: E402
from matplotlib.collections import LineCollection  # noqa: E402

from latent.plotting import plot_first_divergence, plot_mistake_severity, plot_rank_accuracy  # noqa: E402
from latent.ranks import RANK_NAMES  # noqa: E402


def legend_texts(fig) -> list[str]:
    return [t.get_text() for leg in fig.legends for t in leg.get_texts()]


def legend_title(fig) -> str:
    return " ".join(" ".join(leg.get_title().get_text().split()) for leg in fig.legends)  # unwrapped


def panel_texts(ax) -> list[str]:
    return [t.get_text() for t in ax.texts]


def bar_count(ax) -> int:
    return sum(len(c) for c in ax.containers)


# ---------------------------------------------------------------------- severity and divergence
def severity_table() -> pd.DataFrame:
    """Two models; model "a": linear has mistakes, knn none; model "b": neither has any."""
    rows = []
    for model, linear in (("a", [4, 4, 14, 115, 149, 0, 0]), ("b", [0] * 7)):
        for method, counts in (("linear", linear), ("knn", [0] * 7)):
            for h, c in enumerate(counts, start=1):
                rows.append({"height": h, "count": c, "method": method, "mode": "per-rank", "model": model})
    return pd.DataFrame(rows)


def test_empty_series_never_labels_a_panel_with_bars():
    fig, axes = plot_mistake_severity(severity_table())
    with_bars, without = axes
    assert bar_count(with_bars) == 7 and bar_count(without) == 0  # the empty knn series draws nothing
    assert not any("no" in t for t in panel_texts(with_bars))  # no "no mistakes" over the bars
    assert panel_texts(without) == ["no species mistakes"]  # said once in the empty panel
    heights = [b.get_height() for b in with_bars.containers[0]]
    counts = np.array([4, 4, 14, 115, 149, 0, 0], float)
    assert np.allclose(heights, counts / counts.sum())
    # the series with no data is named once, in the legend, with what it lacks; the other has a swatch
    assert legend_texts(fig) == ["linear", "knn: no species mistakes"]
    assert "286 mistakes" in with_bars.get_title() and "knn" not in with_bars.get_title()


def test_a_series_without_species_predictions_is_not_called_mistake_free():
    """kNN on a species-disjoint split predicts no species: no mistakes, but not because it was right."""
    severity = severity_table()
    severity = severity[severity["model"] == "b"]  # neither series has a mistake
    rows = []
    for method, counts in (("linear", [0, 0, 0, 0, 0, 0, 0, 288]), ("knn", [0] * 8)):
        for d, c in zip(list(RANK_NAMES) + ["correct"], counts):
            rows.append({"divergence": d, "count": c, "method": method, "mode": "per-rank", "model": "b"})
    fig, axes = plot_mistake_severity(severity, divergence=pd.DataFrame(rows))
    assert legend_texts(fig) == ["linear: no species mistakes", "knn: species not predicted"]
    assert panel_texts(axes[0]) == ["no species mistakes"] and bar_count(axes[0]) == 0


def test_empty_series_in_a_single_panel_and_divergence():
    rows = []
    for method, counts in (("linear", [0, 0, 149, 115, 14, 4, 4, 2]), ("knn", [0] * 8)):
        for d, c in zip(list(RANK_NAMES) + ["correct"], counts):
            rows.append({"divergence": d, "count": c, "method": method})
    fig, axes = plot_first_divergence(pd.DataFrame(rows))
    (ax,) = axes
    assert bar_count(ax) == 8 and panel_texts(ax) == []
    assert legend_texts(fig) == ["linear (288 images)", "knn: species not predicted"]
    # every series empty: one panel, one note, no bars
    empty = pd.DataFrame(rows).assign(count=0)
    fig, axes = plot_first_divergence(empty)
    assert bar_count(axes[0]) == 0 and panel_texts(axes[0]) == ["species not predicted"]


def test_fold_counts_are_per_fold_not_summed():
    """A 5-fold run of 250 test images per fold says "250 ... per fold, 5 folds", never 1,250."""
    rows = []
    for fold in range(5):
        for d, c in zip(list(RANK_NAMES) + ["correct"], [0, 0, 10, 20, 30, 40, 50, 100]):
            rows.append({"divergence": d, "count": c, "method": "centroid", "fold": str(fold)})
    table = pd.DataFrame(rows)
    fig, axes = plot_first_divergence(table)
    (text,) = legend_texts(fig)
    assert text == "centroid (250 images per fold, 5 folds)"
    assert "1,250" not in text
    # fractions pool the folds (equal folds: the mean of the fold fractions)
    assert np.isclose(axes[0].containers[0][-1].get_height(), 100 / 250)
    # several models: the panel title counts per fold too
    fig, axes = plot_first_divergence(pd.concat([table.assign(model="m1"), table.assign(model="m2")]))
    assert "centroid: 250 images per fold, 5 folds" in axes[0].get_title()


def test_fold_counts_match_the_metrics_n_of_a_real_centroid_run(tmp_path):
    from latent.evaluate import evaluate_cache
    from latent.synthetic import make_hierarchical, write_synthetic
    from latent.tables import n_test_text

    cache = write_synthetic(tmp_path / "s.h5", make_hierarchical(per_species=6, dim=16, signal=0.9, seed=1))
    report = evaluate_cache(cache, tmp_path / "out", method="centroid", folds=3, shots=2, n_boot=20, seed=0)
    metrics, divergence = report.metrics, report.divergence
    fold = metrics["fold"].astype(str)
    n_fold = metrics[(fold == "0") & (metrics["metric"] == "top1") & (metrics["rank"] == "species")]["n"].iloc[0]
    fig, _ = plot_first_divergence(divergence)
    assert legend_texts(fig) == [f"centroid ({int(n_fold):,} images per fold, 3 folds)"]
    assert n_test_text(metrics, report.info["n_test"]) == f"{int(n_fold):,} test images per fold, 3 folds"


# ---------------------------------------------------------------------- accuracy
def accuracy_table(*, with_majority: bool = False) -> pd.DataFrame:
    """knn over 7 ranks: kingdom and phylum have one taxon (scored 1.0), class 2, order 4, family 8, ..."""
    classes = {"kingdom": 1, "phylum": 1, "class": 2, "order": 4, "family": 8, "genus": 16, "species": 32}
    rows = []
    for rank, k in classes.items():
        note = "one taxon at this rank: not testable (one candidate taxon: any predictor scores 1)" if k == 1 else ""
        top1 = 1.0 if k == 1 else 0.9 - 0.1 * np.log2(k)
        rows.append(dict(rank=rank, metric="top1", value=top1, ci_low=top1 - 0.05 if k > 1 else np.nan,
                         ci_high=min(1.0, top1 + 0.05) if k > 1 else np.nan, n=100, n_taxa=k, note=note))
        rows.append(dict(rank=rank, metric="n_classes", value=float(k), ci_low=np.nan, ci_high=np.nan, n=100,
                         n_taxa=k, note=""))
        # top-5 rows at every rank, also where 5 or fewer classes make it 1 by construction (an old table)
        rows.append(dict(rank=rank, metric="top5", value=1.0 if k <= 5 else 0.95, ci_low=np.nan, ci_high=np.nan,
                         n=100, n_taxa=k, note=""))
        if with_majority:
            rows.append(dict(rank=rank, metric="majority", value=1.0 / k + 0.05, ci_low=np.nan, ci_high=np.nan,
                             n=100, n_taxa=k, note=""))
    return pd.DataFrame(rows).assign(method="knn", split="random")


def test_one_taxon_ranks_are_not_drawn_and_the_figure_says_so():
    table = accuracy_table()
    fig, axes = plot_rank_accuracy(table)
    (ax,) = axes
    ticks = [t.get_text() for t in ax.get_xticklabels()]
    assert ticks == ["class", "order", "family", "genus", "species"]
    line = ax.containers[0].lines[0]
    assert len(line.get_ydata()) == 5 and not np.any(np.isclose(line.get_ydata(), 1.0))
    assert "kingdom, phylum not drawn: one taxon" in legend_title(fig)
    assert ax.get_ylabel().startswith("top-1 accuracy")
    # detected from n_taxa alone (no note, no n_classes rows) too
    bare = table[table["metric"] == "top1"].assign(note="")
    fig, axes = plot_rank_accuracy(bare)
    assert [t.get_text() for t in axes[0].get_xticklabels()] == ticks


def test_chance_and_majority_segments_per_drawn_point():
    fig, axes = plot_rank_accuracy(accuracy_table(with_majority=True))
    ax = axes[0]
    chance = [c for c in ax.collections if isinstance(c, LineCollection) and c.get_gid() == "chance"]
    majority = [c for c in ax.collections if isinstance(c, LineCollection) and c.get_gid() == "majority"]
    assert len(chance) == 1 and len(majority) == 1
    levels = [seg[0][1] for seg in chance[0].get_segments()]
    assert np.allclose(levels, [1 / 2, 1 / 4, 1 / 8, 1 / 16, 1 / 32])  # one per drawn rank, 1 / classes
    x_points = ax.containers[0].lines[0].get_xdata()
    assert np.allclose([np.mean([s[0][0], s[1][0]]) for s in chance[0].get_segments()], x_points)
    assert np.allclose([seg[0][1] for seg in majority[0].get_segments()], [1 / k + 0.05 for k in (2, 4, 8, 16, 32)])
    assert {"chance (1 / classes)", "majority class"} <= set(legend_texts(fig))
    # no majority rows: no majority line, no legend entry
    fig, axes = plot_rank_accuracy(accuracy_table())
    assert not [c for c in axes[0].collections if c.get_gid() == "majority"]
    assert "majority class" not in legend_texts(fig)
    # no chance line for a metric without one (macro F1) or when asked not to draw baselines
    fig, axes = plot_rank_accuracy(accuracy_table(), baselines=False)
    assert not [c for c in axes[0].collections if c.get_gid() == "chance"]


def test_top5_is_not_drawn_where_a_rank_has_5_or_fewer_classes():
    fig, axes = plot_rank_accuracy(accuracy_table(), metric="top5")
    ax = axes[0]
    assert [t.get_text() for t in ax.get_xticklabels()] == ["family", "genus", "species"]
    assert np.allclose(ax.containers[0].lines[0].get_ydata(), [0.95, 0.95, 0.95])
    assert "class, order not drawn: 5 or fewer classes" in legend_title(fig)
    assert ax.get_ylabel().startswith("top-5 accuracy")
    chance = [c for c in ax.collections if c.get_gid() == "chance"][0]
    assert np.allclose([s[0][1] for s in chance.get_segments()], [5 / 8, 5 / 16, 5 / 32])
    assert "chance (5 / classes)" in legend_texts(fig)


def test_one_taxon_rank_in_one_model_only_is_named_with_its_model():
    a = accuracy_table().assign(model="a")
    b = accuracy_table().assign(model="b")
    b.loc[b["rank"] == "class", ["n_taxa", "value"]] = [5.0, 0.5]  # class has several taxa in model b
    b.loc[(b["rank"] == "class") & (b["metric"] == "n_classes"), "value"] = 5.0
    fig, axes = plot_rank_accuracy(pd.concat([a, b]))
    assert len(axes[0].containers[0].lines[0].get_ydata()) == 5  # a: class drawn (2 classes)
    assert "kingdom, phylum not drawn" in legend_title(fig)


def test_every_rank_trivial_draws_no_points_and_says_why():
    table = accuracy_table()
    table = table[table["rank"].isin(["kingdom", "phylum"])]
    fig, axes = plot_rank_accuracy(table)
    assert len(axes[0].containers) == 0
    assert panel_texts(axes[0]) == ["no rank with more than one taxon"]


@pytest.mark.parametrize("metric", ["balanced_accuracy", "macro_f1"])
def test_axis_label_names_the_metric(metric):
    table = accuracy_table()
    table = pd.concat([table, table[table["metric"] == "top1"].assign(metric=metric)])
    fig, axes = plot_rank_accuracy(table, metric=metric)
    assert axes[0].get_ylabel().startswith({"balanced_accuracy": "balanced accuracy", "macro_f1": "macro F1"}[metric])
    has_chance = bool([c for c in axes[0].collections if c.get_gid() == "chance"])
    assert has_chance == (metric == "balanced_accuracy")


def test_ranks_latent_evaluate_left_without_top5_are_named_not_invented():
    """metrics.csv has no top-5 rows at ranks with 5 or fewer classes: the plot draws none and says why."""
    table = accuracy_table()
    table = table[~((table["metric"] == "top5") & (table["n_taxa"] <= 5))]
    fig, axes = plot_rank_accuracy(table, metric="top5")
    assert [t.get_text() for t in axes[0].get_xticklabels()] == ["family", "genus", "species"]
    assert len(axes[0].containers[0].lines[0].get_ydata()) == 3
    title = legend_title(fig)
    assert "kingdom, phylum not drawn: one taxon" in title and "class, order not drawn: 5 or fewer classes" in title
