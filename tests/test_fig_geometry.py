"""What the distance-matrix and projection figures draw, checked against their input (issue 14).

Distance matrix: taxon names on the clade blocks (species when they fit, the highest drawn rank along the
top), boundary lines that differ by rank (thicker and darker higher up, one style for ranks with one
partition), the colour bar naming the distance, and no blank band under the title.
Projections: ranks with one taxon left out (and said so), ranks with one partition one panel, every taxon
coloured up to 12, names in full, axes named by the method with PCA's variance explained.
"""

from __future__ import annotations

import json

import matplotlib

matplotlib.use("Agg")

import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import pytest  # noqa: E402
from matplotlib.backends.backend_agg import FigureCanvasAgg  # noqa: E402
from matplotlib.colors import to_rgb  # noqa: E402
from matplotlib.collections import LineCollection, PathCollection  # noqa: E402
from matplotlib.transforms import Bbox  # noqa: E402

from latent.errors import InputError  # noqa: E402
from latent.figures import FigureContext, ModelRun  # noqa: E402
from latent.plotting import plot_distance_matrix, plot_projection  # noqa: E402
from latent.plotting.geometry import report_distance_matrix  # noqa: E402
from latent.plotting.projection import report_projections  # noqa: E402
from latent.projection import EXPLAINED_COLUMNS, axis_labels, project  # noqa: E402
from latent.ranks import RANK_NAMES  # noqa: E402
from latent.synthetic import make_hierarchical  # noqa: E402
from latent.taxonomy import Taxonomy  # noqa: E402

from _cub import CUB  # noqa: E402  (cub10's ten species: 4 orders = 4 families, 7 genera)


def cub_species() -> pd.DataFrame:
    lineages = np.array([("Animalia", "Chordata", "Aves", *row) for row in CUB], dtype=object)
    return Taxonomy.from_lineages(lineages).species_table()


def cub_points(per_species: int = 6, seed: int = 0) -> tuple[np.ndarray, pd.DataFrame]:
    """``(60, 8)`` points clustered by species and their ``(60, 7)`` taxonomy rows."""
    species = cub_species()
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((len(species), 8)) * 3
    X = np.repeat(centres, per_species, axis=0) + rng.standard_normal((len(species) * per_species, 8))
    return X, species.loc[species.index.repeat(per_species)].reset_index(drop=True)


def euclidean(X: np.ndarray) -> np.ndarray:
    return np.sqrt(((X[:, None, :] - X[None, :, :]) ** 2).sum(-1))


def luminance(colour) -> float:
    r, g, b = to_rgb(colour)
    return 0.2126 * r + 0.7152 * g + 0.0722 * b


def drawn(fig):
    FigureCanvasAgg(fig)
    fig.canvas.draw()
    return fig.canvas.get_renderer()


# ---------------------------------------------------------------------- distance matrix
def test_distance_matrix_names_the_species_and_the_highest_rank_on_top():
    species = cub_species()
    D = euclidean(np.random.default_rng(0).standard_normal((10, 5)))
    fig, axes = plot_distance_matrix(D, species)
    ax = axes[0]
    # every species fits at 10 species: named on the left, in taxonomy order, in full
    assert [t.get_text() for t in ax.get_yticklabels()] == list(species["species"])
    assert ax.get_ylabel().startswith("species")
    # the highest drawn partition (order = family) along the top
    (top,) = [a for a in ax.child_axes]
    assert [t.get_text() for t in top.get_xticklabels()] == sorted(set(species["order"]))
    assert top.get_xlabel() == "order = family"


def test_distance_matrix_many_species_names_the_largest_clades_that_fit():
    syn = make_hierarchical(per_species=2, dim=8, signal=1.0, seed=0)
    species = syn.taxonomy.species_table()
    S = len(species)
    D = euclidean(np.random.default_rng(1).standard_normal((S, 4)))
    fig, axes = plot_distance_matrix(D, species)
    labels = [t.get_text() for t in axes[0].get_yticklabels()]
    rank = axes[0].get_ylabel().split(" (")[0]
    assert rank in RANK_NAMES and rank != "species" and 2 <= len(labels) <= 40
    assert set(labels) <= set(species[rank])


def test_distance_matrix_boundaries_thicker_and_darker_for_higher_ranks():
    species = cub_species()
    D = euclidean(np.random.default_rng(0).standard_normal((10, 5)))
    fig, axes = plot_distance_matrix(D, species)
    lines = [c for c in axes[0].collections if isinstance(c, LineCollection)]
    by_label: dict[str, list[LineCollection]] = {}
    for c in lines:
        by_label.setdefault(c.get_label(), []).append(c)
    # orders and families are one partition: one style, named once; genera below it
    assert list(by_label) == ["order = family", "genus"]
    (order_w,), (genus_w,) = ({float(w) for c in by_label[k] for w in c.get_linewidths()} for k in by_label)
    assert order_w > genus_w
    order_c = luminance(by_label["order = family"][0].get_colors()[0])
    genus_c = luminance(by_label["genus"][0].get_colors()[0])
    assert order_c < genus_c  # darker higher up
    # 3 cuts between the 4 orders, 6 between the 7 genera (rows)
    assert len(by_label["order = family"][0].get_segments()) == 3
    assert len(by_label["genus"][0].get_segments()) == 6
    legend = [t.get_text() for leg in fig.legends for t in leg.get_texts()]
    assert legend == ["order = family boundaries", "genus boundaries"]
    assert "white lines" not in axes[0].get_xlabel()


def test_distance_matrix_colour_bar_names_the_distance(tmp_path):
    species = cub_species()
    D = euclidean(np.random.default_rng(0).standard_normal((10, 5)))
    fig, axes = plot_distance_matrix(D, species, distance="cosine")
    bars = [a for a in fig.axes if a is not axes[0] and a not in axes[0].child_axes]
    assert [b.get_ylabel() for b in bars] == ["cosine distance between species centroids"]
    with pytest.raises(InputError, match="'distance'"):
        plot_distance_matrix(D, species, distance="")
    # the report's adapter reads the distance the probes used (run.json)
    probe = tmp_path / "probe"
    probe.mkdir()
    species.to_csv(probe / "species.csv", index=False)
    np.savez(probe / "alignment.npz", centroid_distances=D.astype(np.float32))
    (probe / "run.json").write_text(json.dumps({"options": {"distance": "euclidean"}}))
    model = ModelRun("m", tmp_path / "m.h5", None, [], probe, [])
    fig, axes = report_distance_matrix(FigureContext([model]), model)
    bars = [a for a in fig.axes if a is not axes[0] and a not in axes[0].child_axes]
    assert bars[0].get_ylabel() == "euclidean distance between species centroids"


def test_distance_matrix_no_blank_band_under_the_title():
    species = cub_species()
    D = euclidean(np.random.default_rng(0).standard_normal((10, 5)))
    fig, axes = plot_distance_matrix(D, species)
    renderer = drawn(fig)
    title = fig._suptitle.get_window_extent(renderer)
    below = Bbox.union([a.get_tightbbox(renderer) for a in fig.axes])
    gap_inches = (title.y0 - below.y1) / fig.dpi
    assert -0.01 <= gap_inches < 0.15


# ---------------------------------------------------------------------- projections
def test_projection_drops_one_taxon_ranks_and_merges_one_partition():
    X, table = cub_points()
    fig, axes = plot_projection(project(X, method="pca"), table)
    titles = [ax.get_title() for ax in axes]
    assert titles == ["order = family (4 taxa)", "genus (7 taxa)", "species (10 taxa)"]
    notes = [t.get_text() for t in fig.texts if "Not drawn" in t.get_text()]
    assert len(notes) == 1 and "kingdom = phylum = class" in notes[0]
    # every point is drawn once per panel
    for ax in axes:
        (points,) = [c for c in ax.collections if isinstance(c, PathCollection)]
        assert points.get_offsets().shape == (len(table), 2)


def test_projection_colours_every_taxon_up_to_12_with_full_names():
    X, table = cub_points()
    fig, axes = plot_projection(project(X, method="pca"), table, ranks=["genus", "species"])
    texts = [t.get_text().replace("\n", " ") for t in axes[-1].get_legend().get_texts()]
    assert len(texts) == 10 and not any(t.startswith("other") for t in texts)
    assert [t.rsplit(" (", 1)[0] for t in texts] == sorted(set(table["species"]), key=list(table["species"]).index)
    assert "Phoebastria immutabilis (6)" in texts and not any("\u2026" in t for t in texts)
    (points,) = [c for c in axes[-1].collections if isinstance(c, PathCollection)]
    assert len({tuple(np.round(c, 4)) for c in points.get_facecolors()}) == 10  # ten colours, no grey
    # above 12 taxa the largest get colours and the rest is "other"
    syn = make_hierarchical(per_species=2, dim=8, signal=1.0, seed=0)
    table13 = pd.DataFrame({r: syn.taxonomy.labels(r) for r in RANK_NAMES})
    fig, axes = plot_projection(project(syn.embeddings, method="pca"), table13, ranks=["species"])
    texts = [t.get_text() for t in axes[0].get_legend().get_texts()]
    assert texts[-1].startswith("other") and len(texts) == 9


def test_projection_pca_axes_give_the_variance_explained():
    X, table = cub_points()
    coords, info = project(X, method="pca", return_info=True)
    Xc = X - X.mean(axis=0)
    s = np.linalg.svd(Xc, compute_uv=False)
    expected = s[:2] ** 2 / (s ** 2).sum()
    assert np.allclose(info["explained_variance_ratio"], expected)
    assert info["axis_labels"] == (f"PC1 ({100 * expected[0]:.1f}% variance)",
                                   f"PC2 ({100 * expected[1]:.1f}% variance)")
    fig, axes = plot_projection(coords, table, axis_labels=info["axis_labels"])
    assert all(ax.get_xlabel() == info["axis_labels"][0] and ax.get_ylabel() == info["axis_labels"][1]
               for ax in axes)
    # UMAP / t-SNE: named, no units, no variance
    assert axis_labels("umap") == ("UMAP 1", "UMAP 2") and axis_labels("tsne") == ("t-SNE 1", "t-SNE 2")
    assert axis_labels("umap", [0.5, 0.2]) == ("UMAP 1", "UMAP 2")
    assert axis_labels("pca") == ("PC1", "PC2")
    with pytest.raises(InputError, match="'axis_labels'"):
        plot_projection(coords, table, axis_labels=("only x",))


def test_report_projections_label_axes_from_the_projection_table(tmp_path):
    X, table = cub_points()
    coords, info = project(X, method="pca", return_info=True)
    frame = table.assign(id=np.arange(len(table)), x=coords[:, 0], y=coords[:, 1])
    frame[EXPLAINED_COLUMNS[0]], frame[EXPLAINED_COLUMNS[1]] = info["explained_variance_ratio"]
    pca = tmp_path / "projection-pca-seed0.csv"
    frame.to_csv(pca, index=False)
    umap = tmp_path / "projection-umap-seed0.csv"
    frame.drop(columns=list(EXPLAINED_COLUMNS)).to_csv(umap, index=False)
    model = ModelRun("m", tmp_path / "m.h5", None, [], tmp_path / "probe", [pca, umap])
    drawings = report_projections(FigureContext([model]), model)
    assert [d.fields["method"] for d in drawings] == ["pca", "umap"]
    pca_axes = [a for a in drawings[0].figure.axes if a.get_visible()]
    umap_axes = [a for a in drawings[1].figure.axes if a.get_visible()]
    assert pca_axes[0].get_xlabel() == info["axis_labels"][0] and "% variance" in pca_axes[0].get_ylabel()
    assert umap_axes[0].get_xlabel() == "UMAP 1" and umap_axes[0].get_ylabel() == "UMAP 2"
    assert len(pca_axes) == 3  # kingdom, phylum, class (one taxon) left out; order = family once


def test_projection_only_one_taxon_ranks_is_an_error():
    X, table = cub_points()
    with pytest.raises(InputError, match="one taxon"):
        plot_projection(project(X, method="pca"), table, ranks=["kingdom", "class"])
