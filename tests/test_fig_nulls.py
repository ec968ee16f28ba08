"""What the probe-summary figure draws, checked against its input (issue 14).

The null is its central 95% (2.5th-97.5th percentiles of the null samples; without samples mean +- 1.96 sd
clipped to the statistic's range), each panel says which side supports the taxonomy, markers are filled by
the one significance convention (p <= latent.verdict.ALPHA on the predicted side, the legend built from
ALPHA), ranks with one partition of the species are one column ("order = family") and one-taxon ranks are
left out with a note. The report's adapter reads every probe's null samples (the levels probe's too).
"""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")

import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import pytest  # noqa: E402
from matplotlib.collections import LineCollection, PathCollection  # noqa: E402

import latent.verdict  # noqa: E402
from latent.figures import FigureContext, ModelRun  # noqa: E402
from latent.plotting import plot_probe_summary  # noqa: E402
from latent.plotting.nulls import (  # noqa: E402
    null_intervals,
    report_probe_summary,
    statistic_range,
    taxonomy_directions,
)
from latent.taxonomy import Taxonomy  # noqa: E402
from latent.verdict import ALPHA  # noqa: E402

WHITE = np.array([1.0, 1.0, 1.0])
from _cub import CUB  # noqa: E402  (cub10's ten species below Animalia, Chordata, Aves)


def legend_texts(fig) -> list[str]:
    return [t.get_text() for leg in fig.legends for t in leg.get_texts()]


def legend_title(fig) -> str:
    return " ".join(leg.get_title().get_text() for leg in fig.legends)


def null_bars(ax) -> list[tuple[float, float, float]]:
    """``(x, low, high)`` of every null interval drawn (vertical segments of the null colour)."""
    out = []
    for c in ax.collections:
        if isinstance(c, LineCollection) and max(c.get_linewidths()) >= 3:
            for seg in c.get_segments():
                out.append((float(seg[0, 0]), float(min(seg[:, 1])), float(max(seg[:, 1]))))
    return sorted(out)


def markers(ax) -> dict[float, bool]:
    """``{observed value: filled?}`` of the observed markers (one point per scatter call group)."""
    out = {}
    for c in ax.collections:
        if isinstance(c, PathCollection) and len(c.get_offsets()) and c.get_sizes()[0] == 28:
            faces = c.get_facecolors()
            for k, (x, y) in enumerate(c.get_offsets()):
                face = faces[k if len(faces) > 1 else 0][:3]
                out[round(float(y), 6)] = not np.allclose(face, WHITE)
    return out


def row(rank: str, metric: str, value: float, null_mean: float, null_std: float, p: float, **extra) -> dict:
    return {"rank": rank, "metric": metric, "value": value, "ci_low": np.nan, "ci_high": np.nan, "n": 10,
            "null_mean": null_mean, "null_std": null_std, "z": (value - null_mean) / null_std, "p_value": p,
            "permutations": 199, **extra}


# ---------------------------------------------------------------------- the null interval
def test_null_is_the_central_95_percent_of_its_samples():
    rng = np.random.default_rng(0)
    samples = rng.exponential(0.1, 400)  # skewed: mean +- 2 sd would run below 0
    rows = pd.DataFrame([row("genus", "clade_recovery", 0.3, samples.mean(), samples.std(), 0.10, probe="dendrogram")])
    null = pd.DataFrame({"rank": "genus", "metric": "clade_recovery", "permutation": np.arange(400), "value": samples,
                         "probe": "dendrogram"})
    fig, axes = plot_probe_summary(rows, null=null)
    ((x, low, high),) = null_bars(axes[0])
    assert low == pytest.approx(np.quantile(samples, 0.025)) and high == pytest.approx(np.quantile(samples, 0.975))
    assert any("2.5th" in t and "97.5th" in t for t in legend_texts(fig))
    assert not any("sd" in t for t in legend_texts(fig))


def test_null_without_samples_is_clipped_to_the_statistics_range():
    # an accuracy null of mean 0.05, sd 0.1: mean +- 1.96 sd is [-0.146, 0.246], clipped at 0
    rows = pd.DataFrame([row("order", "linear_accuracy", 0.9, 0.05, 0.1, 0.005, probe="separability"),
                         row("genus", "linear_accuracy", 0.6, 0.95, 0.1, 0.9, probe="separability")])
    fig, axes = plot_probe_summary(rows)
    bars = null_bars(axes[0])
    assert bars[0][1] == 0.0 and bars[0][2] == pytest.approx(0.05 + 1.96 * 0.1, abs=1e-3)
    assert bars[1][2] == 1.0  # 0.95 + 1.96 * 0.1 clipped at 1
    assert any("1.96 sd" in t and "no samples" in t for t in legend_texts(fig))
    assert statistic_range("linear_accuracy") == (0.0, 1.0) and statistic_range("mantel_r_spearman") == (-1.0, 1.0)
    assert statistic_range("intra_inter_ratio")[0] == 0.0 and statistic_range("my_stat") == (-np.inf, np.inf)


def test_levels_null_samples_in_a_null_column_are_matched_by_level():
    samples = np.linspace(0.8, 1.2, 101)
    rows = pd.DataFrame([row("order", "rank_distance_ratio", 0.5, 1.0, 0.1, 0.01, probe="levels", level="order")])
    null = pd.DataFrame({"level": "order", "rank": "order", "metric": "rank_distance_ratio", "null": samples,
                         "probe": "levels"})
    out = null_intervals(rows, null)
    assert out["null_source"].tolist() == ["samples"]
    assert out["null_low"].iloc[0] == pytest.approx(np.quantile(samples, 0.025))


# ---------------------------------------------------------------------- direction and significance
def test_each_panel_says_which_side_supports_the_taxonomy():
    rows = pd.DataFrame([row("genus", "intra_inter_ratio", 0.5, 0.9, 0.05, 0.005, probe="distances"),
                         row("genus", "silhouette", 0.3, 0.0, 0.05, 0.005, probe="clusters"),
                         row("genus", "rank_distance_ratio", 0.5, 1.0, 0.05, 0.005, probe="levels"),
                         row("all", "mantel_r_spearman", 0.5, 0.0, 0.05, 0.005, probe="alignment"),
                         row("genus", "nc1", 0.5, 2.0, 0.3, 0.005, probe="clusters")])
    fig, axes = plot_probe_summary(rows)
    titles = {ax.get_title().split("\n")[0]: ax.get_title() for ax in axes}
    assert titles["distances: intra_inter_ratio"].endswith("lower = taxonomy")
    assert titles["levels: rank_distance_ratio"].endswith("lower = taxonomy")
    assert titles["clusters: nc1"].endswith("lower = taxonomy")
    assert titles["clusters: silhouette"].endswith("higher = taxonomy")
    assert titles["alignment: mantel_r_spearman"].endswith("higher = taxonomy")
    # the registry's directions are the ones drawn
    directions = taxonomy_directions()
    assert directions[("levels", "rank_distance_ratio")] == latent.verdict.PRIMARY[2] == "less"
    assert directions[("distances", "intra_inter_ratio")] == "less"


def test_filled_means_p_at_most_alpha_on_the_predicted_side():
    rows = pd.DataFrame([
        row("class", "intra_inter_ratio", 0.50, 0.9, 0.05, ALPHA, probe="distances"),       # p = ALPHA: filled
        row("order", "intra_inter_ratio", 0.51, 0.9, 0.05, 0.2, probe="distances"),         # p large: hollow
        row("family", "intra_inter_ratio", 1.30, 0.9, 0.05, 0.001, probe="distances"),      # wrong side: hollow
    ])
    fig, axes = plot_probe_summary(rows)
    assert markers(axes[0]) == {0.5: True, 0.51: False, 1.3: False}
    texts = legend_texts(fig)
    assert f"filled: p \u2264 {ALPHA:g}, taxonomy side" in texts
    assert f"hollow: p > {ALPHA:g} or other side" in texts
    assert not any("\u2265" in t for t in texts)


def test_the_legend_follows_the_verdicts_alpha(monkeypatch):
    monkeypatch.setattr(latent.verdict, "ALPHA", 0.1)
    rows = pd.DataFrame([row("class", "silhouette", 0.5, 0.0, 0.1, 0.08, probe="clusters")])
    fig, axes = plot_probe_summary(rows)
    assert markers(axes[0]) == {0.5: True}
    assert "filled: p \u2264 0.1, taxonomy side" in legend_texts(fig)


def test_adjusted_p_decides_where_the_rows_carry_it():
    rows = pd.DataFrame([row("class", "silhouette", 0.5, 0.0, 0.1, 0.01, probe="clusters", p_adjusted=0.2),
                         row("order", "silhouette", 0.6, 0.0, 0.1, 0.01, probe="clusters", p_adjusted=0.02)])
    fig, axes = plot_probe_summary(rows)
    assert markers(axes[0]) == {0.5: False, 0.6: True}
    assert f"filled: adjusted p \u2264 {ALPHA:g}, taxonomy side" in legend_texts(fig)
    assert all(t.get_text().count("adj p=") == 1 for t in axes[0].texts)


# ---------------------------------------------------------------------- partitions
def test_one_partition_is_one_column_and_one_taxon_ranks_are_noted():
    rows = pd.DataFrame([
        row("kingdom", "rank_distance_ratio", np.nan, np.nan, np.nan, np.nan, probe="levels",
            level="kingdom=phylum=class", n_taxa=1),
        row("phylum", "rank_distance_ratio", np.nan, np.nan, np.nan, np.nan, probe="levels",
            level="kingdom=phylum=class", n_taxa=1),
        row("class", "rank_distance_ratio", np.nan, np.nan, np.nan, np.nan, probe="levels",
            level="kingdom=phylum=class", n_taxa=1),
        row("order", "rank_distance_ratio", 0.44, 1.04, 0.3, 0.019, probe="levels", level="order=family", n_taxa=4),
        row("family", "rank_distance_ratio", 0.44, 1.04, 0.3, 0.019, probe="levels", level="order=family", n_taxa=4),
        row("genus", "rank_distance_ratio", 0.8, 1.0, 0.2, 0.2, probe="levels", level="genus", n_taxa=7),
        row("order", "silhouette", 0.15, 0.02, 0.03, 0.005, probe="clusters", level="image", n_taxa=4),
        row("family", "silhouette", 0.15, 0.02, 0.03, 0.005, probe="clusters", level="image", n_taxa=4),
        row("genus", "silhouette", 0.12, 0.02, 0.03, 0.005, probe="clusters", level="image", n_taxa=7),
    ])
    fig, axes = plot_probe_summary(rows)
    for ax in axes:
        ticks = [t.get_text().replace("\n", " ") for t in ax.get_xticklabels()]
        assert ticks == ["order = family", "genus"]
        assert len(markers(ax)) == 2 and len(null_bars(ax)) == 2
    assert "kingdom = phylum = class" in legend_title(fig) and "one taxon" in legend_title(fig)


# ---------------------------------------------------------------------- the report's adapter on real probes
@pytest.fixture(scope="module")
def cub_like_probes(tmp_path_factory) -> Path:
    """Real probe tables on cub10's taxonomy (one kingdom..class; order = family), 19 permutations."""
    from latent.probes.base import ProbeOptions
    from latent.probes.run import probe_cache
    from latent.synthetic import make_hierarchical, write_synthetic

    lineages = np.array([("Animalia", "Chordata", "Aves", *r) for r in CUB], dtype=object)
    taxonomy = Taxonomy.from_lineages(lineages)
    tmp = tmp_path_factory.mktemp("cub_like")
    cache = write_synthetic(tmp / "cub.h5", make_hierarchical(taxonomy, per_species=6, dim=16, signal=1.0, seed=0))
    boot = {"n_boot": 20}
    options = ProbeOptions(permutations=19, device="cpu",
                           extra={p: boot for p in ("levels", "alignment", "distances", "clusters", "dendrogram")})
    probe_cache(cache, tmp / "probe", probes="levels,alignment,distances,clusters,dendrogram", options=options)
    return tmp / "probe"


def test_report_summary_reads_every_probes_null_samples(cub_like_probes):
    model = ModelRun("cub", cub_like_probes.parent / "cub.h5", None, [], cub_like_probes, [])
    fig, axes = report_probe_summary(FigureContext([model]))
    metrics = pd.read_csv(cub_like_probes / "metrics.csv")
    # samples, not the normal approximation, for every row (the levels probe's too)
    assert not any("no samples" in t for t in legend_texts(fig))
    titles = [ax.get_title().split("\n")[0] for ax in axes]
    levels_ax = axes[titles.index("levels: rank_distance_ratio")]
    ticks = [t.get_text().replace("\n", " ") for t in levels_ax.get_xticklabels()]
    assert "order = family" in ticks and "order" not in ticks and "family" not in ticks
    assert "kingdom" not in " ".join(ticks) and "kingdom = phylum = class" in legend_title(fig)
    # the drawn interval is the percentiles of the levels probe's samples for that level
    levels_null = pd.read_csv(cub_like_probes / "levels_null.csv")
    species = levels_null[levels_null["level"] == "species"]["null"].to_numpy(float)
    assert species.size and "species" in ticks
    x = ticks.index("species")
    ((_, low, high),) = [b for b in null_bars(levels_ax) if abs(b[0] - x) < 0.3]
    assert low == pytest.approx(np.quantile(species, 0.025)) and high == pytest.approx(np.quantile(species, 0.975))
    # markers are filled by the verdict's adjusted p-values
    assert any("adjusted p" in t for t in legend_texts(fig))
    assert (metrics["probe"] == "levels").any()
