"""Hyperbolic figures checked against what is drawn (issue 14, item 2).

The Poincare disk names its clades and keeps every other text off the disk; the distortion figure
draws a fit that did not converge hollow and outside its series' line (left out of the comparison),
keeps two equal series apart, and names each model once; the loss figure dashes fits that did not
converge; a fit whose loss stopped falling in its last window is recorded as converged.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from latent.figures import FigureContext, ModelRun
from latent.plotting.hyperbolic import (
    plot_distortion,
    plot_fit_loss,
    plot_poincare_disk,
    report_distortion,
    report_fit_loss,
)
from latent.synthetic import balanced_taxonomy


def legend_texts(fig) -> list[str]:
    return [t.get_text() for legend in fig.legends for t in legend.get_texts()]


# ------------------------------------------------------------------------------------------ disk
def rim_layout(seed: int = 0) -> tuple[np.ndarray, pd.DataFrame]:
    """The demo's 144 species on the rim (radius 0.99), each order on its own arc."""
    table = balanced_taxonomy().species_table()
    orders = pd.factorize(table["order"])[0]
    rng = np.random.default_rng(seed)
    angle = 2 * np.pi * (orders + rng.uniform(0.1, 0.9, len(table))) / (orders.max() + 1)
    return 0.99 * np.column_stack([np.cos(angle), np.sin(angle)]), table


def test_poincare_names_clades_and_keeps_other_text_off_the_disk():
    P, table = rim_layout()
    fig, axes = plot_poincare_disk({"embedding fit": P, "taxonomy fit": P[::-1].copy()}, table, top_n=8)
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    canvas = FigureCanvasAgg(fig)
    canvas.draw()
    renderer = canvas.get_renderer()
    for ax in axes:
        labels = [t for t in ax.texts if t.get_gid() == "clade-label"]
        names = sorted(t.get_text() for t in labels)
        coloured = [c for c in pd.Series(table["order"]).value_counts().index[:8]]
        assert names == sorted(coloured)  # the 8 coloured orders named, "other" not
        for t in labels:  # each name lies near its clade: inside the disk, within 0.35 of its mean
            members = P if ax is axes[0] else P[::-1]
            centre = members[table["order"].to_numpy() == t.get_text()].mean(axis=0)
            assert np.hypot(*t.get_position()) < 1 and np.hypot(*(np.asarray(t.get_position()) - centre)) < 0.35
        others = [t for t in ax.texts if t.get_gid() != "clade-label"]
        assert others and all("d=" not in t.get_text() for t in ax.texts)
        disk = ax.transData.transform([[-1, -1], [1, 1]])
        for t in others:  # the reference circles are named under the disk, not on it
            box = t.get_window_extent(renderer)
            assert box.y1 < disk[0, 1]
        title = ax.title.get_window_extent(renderer)
        points = ax.collections[-1].get_offsets()
        top = ax.transData.transform(points).max(axis=0)[1]
        assert title.y0 > top  # the title sits above the highest rim point
    assert "O0_0_0_0 (12)" in legend_texts(fig)


# ------------------------------------------------------------------------------------ distortion
def fit_rows(converged: dict, model: str = "m", target: str = "embedding") -> list[dict]:
    rows = []
    for geometry, base in (("poincare", 0.1), ("euclidean", 0.3)):
        for dim in (2, 4, 8):
            ok = converged.get((geometry, dim), True)
            for stat, value in (("distortion", base + 0.2 / dim), ("map", 0.5)):  # equal MAP: lines coincide
                rows.append({"rank": "all", "metric": f"{geometry}_{stat}@{dim}", "value": value, "model": model,
                             "target": target, "converged": ok, "steps_run": 1000})
    return rows


def test_not_converged_fits_are_hollow_and_left_out_of_the_lines():
    summary = pd.DataFrame(fit_rows({("poincare", 4): False, ("poincare", 8): False}))
    fig, axes = plot_distortion(summary)
    ax = axes[0]
    lines = {c.lines[0].get_gid(): c.lines[0] for c in ax.containers}
    line = lines["converged:m:poincare"]
    assert np.round(np.log2(line.get_xdata())).tolist() == [1.0]  # only dim 2 joined
    hollow = lines["not-converged:m:poincare"]
    assert np.round(np.log2(hollow.get_xdata())).tolist() == [2.0, 3.0]
    assert hollow.get_markerfacecolor() == "white" and hollow.get_linestyle() == "None"
    assert np.allclose(hollow.get_ydata(), [0.1 + 0.2 / 4, 0.1 + 0.2 / 8])
    assert len(lines["converged:m:euclidean"].get_xdata()) == 3
    assert "not converged" in legend_texts(fig)
    assert "did not converge" in fig.legends[0].get_title().get_text()
    # every fit converged: nothing hollow, no such legend entry
    fig, axes = plot_distortion(pd.DataFrame(fit_rows({})))
    assert "not converged" not in legend_texts(fig)
    assert all(not g.startswith("not-converged") for g in (c.lines[0].get_gid() for c in axes[0].containers))


def test_converged_read_from_csv_strings():
    summary = pd.DataFrame(fit_rows({("euclidean", 2): False}))
    summary["converged"] = summary["converged"].map({True: "True", False: "False"})
    fig, axes = plot_distortion(summary)
    gids = {c.lines[0].get_gid() for c in axes[0].containers}
    assert "not-converged:m:euclidean" in gids


def test_equal_series_are_drawn_apart():
    fig, axes = plot_distortion(pd.DataFrame(fit_rows({})), statistics=["map"])
    ax = axes[0]
    x = {c.lines[0].get_gid(): c.lines[0].get_xdata() for c in ax.containers}
    y = {c.lines[0].get_gid(): c.lines[0].get_ydata() for c in ax.containers}
    assert np.allclose(y["converged:m:poincare"], y["converged:m:euclidean"])  # equal MAP ...
    assert (np.abs(np.log2(x["converged:m:poincare"] / x["converged:m:euclidean"])) > 0.02).all()  # ... apart
    markers = {c.lines[0].get_marker() for c in ax.containers}
    assert markers == {"o", "s"}
    # series far apart are not moved
    fig, axes = plot_distortion(pd.DataFrame(fit_rows({})), statistics=["distortion"])
    assert all(np.allclose(np.log2(c.lines[0].get_xdata()), [1, 2, 3]) for c in axes[0].containers)


def test_legend_names_the_model_once():
    rows = fit_rows({}, model="clip (imported)") + fit_rows({}, model="", target="taxonomy")
    fig, _ = plot_distortion(pd.DataFrame(rows))
    labels = legend_texts(fig)
    assert "clip (imported)" in labels and "taxonomy (reference)" in labels
    assert not any("(embedding)" in label or label.count("clip") > 1 for label in labels)


# ------------------------------------------------------------------------------------------- loss
def loss_rows(converged: dict) -> pd.DataFrame:
    frames = []
    for geometry in ("poincare", "euclidean"):
        for dim in (2, 8):
            steps = np.arange(0, 300, 10)
            frames.append(pd.DataFrame({"geometry": geometry, "dim": dim, "step": steps,
                                        "loss": 0.05 + np.exp(-steps / 80),
                                        "converged": converged.get((geometry, dim), True)}))
    return pd.concat(frames, ignore_index=True)


def test_loss_dashes_the_fits_that_did_not_converge():
    fig, axes = plot_fit_loss(loss_rows({("poincare", 8): False}))
    styles = {line.get_gid(): line.get_linestyle() for line in axes[0, 0].lines}
    assert styles == {"converged:dim2": "-", "not-converged:dim8": "--"}
    assert all(line.get_linestyle() == "-" for line in axes[0, 1].lines)
    assert "dashed: not converged" in legend_texts(fig)
    fig, _ = plot_fit_loss(loss_rows({}).drop(columns="converged"))
    assert "dashed: not converged" not in legend_texts(fig)


# ----------------------------------------------------------------------------------- adapters
def probe_folder(root: Path, converged: dict) -> Path:
    root.mkdir(parents=True)
    rows = pd.DataFrame(fit_rows(converged, model="")).drop(columns="model")
    rows = rows.assign(probe="hyperbolic_fit", features="model",
                       geometry=rows["metric"].str.split("_").str[0],
                       dim=rows["metric"].str.split("@").str[1].astype(int))
    rows.to_csv(root / "metrics.csv", index=False)
    loss_rows({}).drop(columns="converged").assign(target="embedding").to_csv(root / "hyperbolic_fit_loss.csv",
                                                                               index=False)
    return root


def test_report_adapters_carry_convergence(tmp_path):
    probe = probe_folder(tmp_path / "probe", {("poincare", 8): False})
    model = ModelRun("clip (imported)", tmp_path / "c.h5", None, [], probe, [])
    context = FigureContext([model])
    fig, axes = report_distortion(context)
    assert "not converged" in legend_texts(fig)
    assert "not-converged:clip (imported):poincare" in {c.lines[0].get_gid() for c in axes[0].containers}
    fig, axes = report_fit_loss(context)
    assert {line.get_gid() for line in axes[0, 0].lines} == {"converged:dim2", "not-converged:dim8"}
    assert axes[0, 0].get_title() == "clip (imported): Poincare ball"


# ------------------------------------------------------------------------------- convergence
def test_a_fit_flat_in_its_last_window_is_converged():
    pytest.importorskip("geoopt")
    from latent.hyperbolic import CONVERGENCE_WINDOW, fit_distances

    X = np.random.default_rng(0).normal(size=(12, 5))
    T = np.linalg.norm(X[:, None] - X[None], axis=-1)
    steps = 3 * CONVERGENCE_WINDOW + 20  # checks at 50, 100, 150 and at the last step, 169
    full = fit_distances(T, "euclidean", 2, steps=steps, seed=0, device="cpu")
    L = full.loss

    def change(t: int) -> float:
        return (L[t - CONVERGENCE_WINDOW] - L[t]) / L[t]

    last = change(steps - 1)
    earlier = min(change(t) for t in range(CONVERGENCE_WINDOW, steps - 1, CONVERGENCE_WINDOW))
    assert 0 < last < earlier  # the loss still falls, less and less
    tol = float(np.sqrt(last * earlier))
    fit = fit_distances(T, "euclidean", 2, steps=steps, seed=0, device="cpu", tol=tol)
    assert fit.converged and fit.steps_run == steps
    np.testing.assert_array_equal(fit.loss, L)


def test_distortion_ratio_is_no_comparison_unless_both_fits_converged():
    pytest.importorskip("geoopt")
    from latent.probes.base import ProbeData, ProbeOptions
    from latent.probes.hyperbolic import probe_hyperbolic_fit
    from latent.synthetic import make_hierarchical

    syn = make_hierarchical(per_species=2, dim=8, signal=1.0, seed=0)
    data = ProbeData.from_arrays(syn.embeddings, syn.taxonomy)
    extra = {"hyperbolic_fit": {"dims": [2], "steps": 60, "max_species": 20, "targets": ["embedding"]}}
    frame = probe_hyperbolic_fit(data, ProbeOptions(seed=0, device="cpu", extra=extra)).to_frame()
    fits = frame[frame["metric"].isin(["poincare_distortion@2", "euclidean_distortion@2"])]
    fits = fits.set_index("geometry")["converged"].astype(bool)
    ratio = frame[frame["metric"] == "distortion_ratio@2"].iloc[0]
    assert bool(ratio["converged"]) == bool(fits.all())
    late = [g for g in ("poincare", "euclidean") if not fits[g]]
    assert late, "60 steps: at least one fit has not converged"
    assert ratio["note"] == f"not a comparison: the {' and '.join(late)} fit did not converge in 60 steps"


def test_disk_panels_say_when_their_fit_did_not_converge(tmp_path):
    from latent.plotting.hyperbolic import report_poincare

    probe = probe_folder(tmp_path / "probe", {("poincare", 2): False})
    rows = pd.read_csv(probe / "metrics.csv")
    taxonomy_rows = rows.assign(target="taxonomy", converged=True)
    pd.concat([rows, taxonomy_rows]).to_csv(probe / "metrics.csv", index=False)
    P, table = rim_layout()
    table.to_csv(probe / "species.csv", index=False)
    np.savez(probe / "hyperbolic_fit.npz", **{"poincare@2": P, "taxonomy_poincare@2": P * 0.9,
                                              "species": np.arange(len(P))})
    model = ModelRun("m", tmp_path / "c.h5", None, [], probe, [])
    fig, axes = report_poincare(FigureContext([model]), model)
    assert [ax.get_title() for ax in axes] == ["embedding fit (not converged)", "taxonomy fit"]
