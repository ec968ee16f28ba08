"""Figures draw on real (synthetic-data) results tables, save valid files, carry labels and legends, and
stay readable at 10,000 taxa. Where a figure computes something (tree layouts, block means, top-N
buckets, reordering) the test constructs the answer independently (scipy's dendrogram, hand counts,
an already-ordered input)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import matplotlib

matplotlib.use("Agg")

import matplotlib.image as mpimg  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import pytest  # noqa: E402
from matplotlib.collections import LineCollection, PathCollection  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402
from scipy.cluster.hierarchy import dendrogram, linkage  # noqa: E402
from scipy.stats import spearmanr  # noqa: E402

from latent.errors import InputError  # noqa: E402
from latent.plotting import (  # noqa: E402
    OKABE_ITO,
    plot_distance_by_height,
    plot_distance_matrix,
    plot_distortion,
    plot_first_divergence,
    plot_fit_loss,
    plot_mistake_severity,
    plot_null_distributions,
    plot_poincare_disk,
    plot_probe_summary,
    plot_projection,
    plot_rank_accuracy,
    plot_tanglegram,
    save_figure,
)
from latent.plotting.style import rank_keys, top_categories  # noqa: E402
from latent.plotting.trees import dendrogram_segments, taxonomy_segments  # noqa: E402
from latent.probes.base import ProbeData, null_row, pairwise_distances, species_permutations  # noqa: E402
from latent.ranks import RANK_NAMES  # noqa: E402
from latent.synthetic import make_hierarchical, write_synthetic  # noqa: E402
from latent.taxonomy import Taxonomy  # noqa: E402

REPO = Path(__file__).resolve().parents[1]


# ---------------------------------------------------------------------- synthetic results tables
def evaluate_outputs(tmp: Path) -> dict[str, pd.DataFrame]:
    """Real ``latent evaluate`` tables: knn and 2-fold centroid on two synthetic 'models'."""
    from latent.evaluate import evaluate_cache

    tables: dict[str, list[pd.DataFrame]] = {"metrics": [], "severity": [], "divergence": []}
    for model, signal in (("strong", 0.9), ("weak", 0.35)):
        cache = write_synthetic(tmp / f"{model}.h5", make_hierarchical(per_species=8, dim=16, signal=signal, seed=1))
        for method, kwargs in (("knn", {}), ("centroid", {"folds": 2, "shots": 3})):
            out = tmp / f"{model}-{method}"
            evaluate_cache(cache, out, method=method, n_boot=40, seed=0, **kwargs)
            for name in tables:
                frame = pd.read_csv(out / f"{name}.csv", keep_default_na=False, na_values=[""])
                tables[name].append(frame.assign(model=model))
    return {name: pd.concat(frames, ignore_index=True) for name, frames in tables.items()}


def probe_outputs(signal: float = 0.8, seed: int = 0, permutations: int = 60) -> dict[str, object]:
    """Probe-format tables computed on make_hierarchical data (species-permutation nulls)."""
    syn = make_hierarchical(per_species=6, dim=24, signal=signal, seed=seed)
    data = ProbeData.from_arrays(syn.embeddings, syn.taxonomy)
    T = data.species_distances().astype(float)
    C = pairwise_distances(data.centroids, metric="euclidean")
    iu = np.triu_indices(data.n_species, 1)
    rows, nulls = [], []

    def rank_stat(codes: np.ndarray, r: int) -> float:
        # mean centroid distance within clades at rank r minus between clades
        same = codes[:, r][:, None] == codes[:, r][None, :]
        off = ~np.eye(len(codes), dtype=bool)
        return float(C[same & off].mean() - C[~same].mean()) if (same & off).any() and (~same).any() else np.nan

    perms = list(species_permutations(data.n_species, permutations, seed))
    observed_rho = spearmanr(C[iu], T[iu])[0]
    null_rho = np.array([spearmanr(C[iu], T[np.ix_(p, p)][iu])[0] for p in perms])
    rows.append(null_row("all", "spearman", observed_rho, null_rho, len(iu[0])))
    nulls.append(pd.DataFrame({"rank": "all", "metric": "spearman", "permutation": range(permutations),
                               "value": null_rho}))
    for r, rank in enumerate(RANK_NAMES[:-1]):
        obs = rank_stat(data.codes, r)
        null = np.array([rank_stat(data.permuted_codes(p), r) for p in perms])
        rows.append(null_row(rank, "intra_minus_inter", obs, null, data.n_species, alternative="less"))
        nulls.append(pd.DataFrame({"rank": rank, "metric": "intra_minus_inter", "permutation": range(permutations),
                                   "value": null}))
    heights = []
    X = data.X.astype(float)
    D_img = pairwise_distances(X, metric="euclidean")
    H_img = data.taxonomy.row_distances()
    for level, Dm, Hm in (("image", D_img, H_img), ("centroid", C, T)):
        m = np.triu_indices(len(Dm), 1)
        d, h = Dm[m], Hm[m].astype(int)
        for height in np.unique(h):
            v = d[h == height]
            q = np.quantile(v, [0.05, 0.25, 0.5, 0.75, 0.95])
            heights.append({"level": level, "height": int(height), "n": len(v), "mean": v.mean(), "std": v.std(),
                            "q05": q[0], "q25": q[1], "q50": q[2], "q75": q[3], "q95": q[4]})
    Z = linkage(data.centroids, method="average")
    # Poincare-like coordinates: PCA of the centroids squashed into the disk.
    P = data.centroids - data.centroids.mean(axis=0)
    U = np.linalg.svd(P, full_matrices=False)[0][:, :2]
    norms = np.linalg.norm(U, axis=1, keepdims=True)
    disk = U / norms.max() * 0.97
    summary = []
    for geometry, base in (("poincare", 0.08), ("euclidean", 0.2)):
        for dim in (2, 4, 8, 16):
            summary.append({"rank": "all", "metric": f"{geometry}_distortion@{dim}", "value": base + 0.4 / dim,
                            "ci_low": np.nan, "ci_high": np.nan, "n": len(iu[0])})
            summary.append({"rank": "all", "metric": f"{geometry}_map@{dim}", "value": 1 - base - 0.3 / dim,
                            "ci_low": np.nan, "ci_high": np.nan, "n": data.n_species})
    losses = pd.DataFrame([{"geometry": g, "dim": dim, "step": s, "loss": (1.0 + 4 / dim) * np.exp(-s / 60) + 0.05}
                           for g in ("poincare", "euclidean") for dim in (2, 4, 8, 16) for s in range(0, 300, 10)])
    return {
        "rows": pd.DataFrame(rows).assign(probe="toy"),
        "null": pd.concat(nulls, ignore_index=True).assign(probe="toy"),
        "heights": pd.DataFrame(heights),
        "species": data.taxonomy.species_table(),
        "centroid_distances": C,
        "linkage": Z,
        "poincare": disk,
        "summary": pd.DataFrame(summary),
        "losses": losses,
        "X": data.X,
        "image_table": pd.DataFrame({r: data.taxonomy.labels(r) for r in RANK_NAMES}),
    }


def big_taxonomy(n_species: int = 10_000, seed: int = 0) -> Taxonomy:
    """A random taxonomy with ``n_species`` species (about 3 kingdoms .. 3,000 genera)."""
    rng = np.random.default_rng(seed)
    sizes = (3, 12, 40, 200, 800, 3000)
    parent = [np.sort(rng.integers(0, sizes[r - 1], sizes[r])) if r else None for r in range(6)]
    genus = np.sort(rng.integers(0, sizes[-1], n_species))
    codes = [None] * 7
    codes[6] = np.arange(n_species)
    codes[5] = genus
    for r in range(4, -1, -1):
        codes[r] = parent[r + 1][codes[r + 1]]
    letters = "KPCOFG"
    names = np.empty((n_species, 7), dtype=object)
    for r in range(6):
        names[:, r] = [f"{letters[r]}{c}" for c in codes[r]]
    names[:, 6] = [f"G{g} sp{s}" for g, s in zip(genus, range(n_species))]
    return Taxonomy.from_lineages(names)


@pytest.fixture(scope="module")
def evaluated(tmp_path_factory):
    return evaluate_outputs(tmp_path_factory.mktemp("evaluate"))


@pytest.fixture(scope="module")
def probes():
    return probe_outputs()


def legend_texts(fig: Figure) -> list[str]:
    texts = [t.get_text() for leg in fig.legends for t in leg.get_texts()]
    for ax in fig.axes:
        leg = ax.get_legend()
        if leg is not None:
            texts += [t.get_text() for t in leg.get_texts()]
    return texts


def check_saved(fig: Figure, stem: Path) -> None:
    """PDF and PNG are valid files; the PNG has the figure's size at 200 dpi."""
    paths = save_figure(fig, stem)
    assert [p.suffix for p in paths] == [".pdf", ".png"]
    pdf, png = paths
    assert pdf.read_bytes()[:5] == b"%PDF-" and pdf.read_bytes().rstrip().endswith(b"%%EOF")
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    image = mpimg.imread(png)
    w, h = fig.get_size_inches()
    assert abs(image.shape[0] - h * 200) <= 1 and abs(image.shape[1] - w * 200) <= 1
    assert image[..., :3].std() > 0.01  # not a blank page


# ---------------------------------------------------------------------- style and saving
def test_importing_latent_imports_no_matplotlib():
    code = ("import sys, latent, latent.projection, latent.evaluate, latent.probes; "
            "bad = [m for m in ('matplotlib', 'umap', 'latent.plotting') if m in sys.modules]; "
            "assert not bad, bad; import latent.plotting; assert 'matplotlib.pyplot' not in sys.modules")
    subprocess.run([sys.executable, "-c", code], check=True, cwd=REPO)


def test_palette_is_okabe_ito_then_tol():
    from latent.plotting.style import TOL_MUTED, palette

    okabe_ito = {"#E69F00", "#56B4E9", "#009E73", "#F0E442", "#0072B2", "#D55E00", "#CC79A7", "#000000"}
    assert set(OKABE_ITO) == okabe_ito and len(OKABE_ITO) == 8
    assert palette(3) == list(OKABE_ITO[:3]) and palette(10)[8:] == list(TOL_MUTED[:2])
    assert len(set(palette(17))) == 17


def test_top_categories_counts_other_bucket_and_homonyms():
    keys = np.array(["a"] * 5 + ["b"] * 3 + ["c"] * 2 + ["d"] + ["e"] + [""] * 2, dtype=object)
    codes, labels, sizes = top_categories(keys, 2)
    assert labels == ["a", "b", "other"] and sizes == [5, 3, 6]
    assert codes.tolist() == [0] * 5 + [1] * 3 + [2] * 6
    # one category left over is shown rather than bucketed (no unlabelled rows)
    codes, labels, sizes = top_categories(np.array(["a", "a", "b", "c"], dtype=object), 2)
    assert labels == ["a", "b", "c"] and sizes == [2, 1, 1]
    # ties by key; homonyms (same name, different lineage) are told apart by their key
    keys = np.array(["Animalia;Morus", "Plantae;Morus", "Animalia;Morus", "Plantae;Morus"], dtype=object)
    _, labels, _ = top_categories(keys, 3, names=np.array(["Morus"] * 4, dtype=object))
    assert labels == ["Animalia;Morus", "Plantae;Morus"]


def test_save_figure_pdf_png_valid_and_reproducible(tmp_path, probes):
    fig, _ = plot_distance_by_height(probes["heights"])
    check_saved(fig, tmp_path / "a" / "heights")
    first = (tmp_path / "a" / "heights.pdf").read_bytes()
    # the same figure drawn again gives the same bytes (no creation date); a given suffix is dropped
    again, _ = plot_distance_by_height(probes["heights"])
    save_figure(again, tmp_path / "a" / "heights.pdf")
    assert (tmp_path / "a" / "heights.pdf").read_bytes() == first
    assert sorted(p.name for p in (tmp_path / "a").iterdir()) == ["heights.pdf", "heights.png"]
    with pytest.raises(InputError, match="'formats'"):
        save_figure(fig, tmp_path / "x", formats=("jpg",))
    with pytest.raises(InputError, match="'fig'"):
        save_figure("not a figure", tmp_path / "x")


# ---------------------------------------------------------------------- evaluation
def test_rank_accuracy_models_side_by_side_with_cis(evaluated, tmp_path):
    metrics = evaluated["metrics"]
    fig, axes = plot_rank_accuracy(metrics, title="accuracy")
    assert len(axes) == 2 and [ax.get_title() for ax in axes] == ["strong", "weak"]
    assert "top-1" in axes[0].get_ylabel() and fig.get_suptitle() == "accuracy"
    assert set(legend_texts(fig)) == {"knn", "centroid", "chance (1 / classes)"}
    assert [t.get_text() for t in axes[0].get_xticklabels()] == list(RANK_NAMES)
    # one error-bar series per method per panel; the plotted points are the table's (fold means for centroid)
    for ax, model in zip(axes, ["strong", "weak"]):
        assert len(ax.containers) == 2
        lines = [c.lines[0] for c in ax.containers]
        knn = metrics[(metrics["model"] == model) & (metrics["method"] == "knn") & (metrics["metric"] == "top1")]
        expected = knn.set_index("rank").loc[list(RANK_NAMES), "value"].to_numpy()
        assert np.allclose(lines[0].get_ydata(), expected)
        cen = metrics[(metrics["model"] == model) & (metrics["method"] == "centroid") & (metrics["metric"] == "top1")
                      & (metrics["fold"].astype(str) == "mean")]
        assert np.allclose(lines[1].get_ydata(), cen.set_index("rank").loc[list(RANK_NAMES), "value"].to_numpy())
    strong = axes[0].containers[0].lines[0].get_ydata()
    weak = axes[1].containers[0].lines[0].get_ydata()
    assert strong[-1] > weak[-1]  # the planted signal shows in the figure's data
    check_saved(fig, tmp_path / "accuracy")
    with pytest.raises(InputError, match="no rows of metric 'nope'"):
        plot_rank_accuracy(metrics, metric="nope")
    with pytest.raises(InputError, match="several 'top1' rows"):
        plot_rank_accuracy(pd.concat([metrics, metrics]))
    with pytest.raises(InputError, match="lacks column"):
        plot_rank_accuracy(metrics.drop(columns="ci_low"))


def test_severity_and_divergence_from_evaluate_tables(evaluated, tmp_path):
    severity, divergence = evaluated["severity"], evaluated["divergence"]
    fig, axes = plot_mistake_severity(severity)
    assert len(axes) == 2 and axes[0].get_ylabel() == "fraction of mistakes"
    assert "LCA height" in axes[0].get_xlabel() and len(axes[0].get_xticklabels()) == 7
    # bars are fractions of the summed counts (centroid folds added up)
    sub = severity[(severity["model"] == "weak") & (severity["method"] == "centroid")]
    counts = sub.groupby("height")["count"].sum().reindex(range(1, 8)).to_numpy(float)
    centroid_bars = axes[1].containers[1]
    assert np.allclose([b.get_height() for b in centroid_bars], counts / counts.sum())
    assert set(legend_texts(fig)) == {"knn", "centroid"}
    check_saved(fig, tmp_path / "severity")

    fig, axes = plot_first_divergence(divergence)
    assert [t.get_text() for t in axes[0].get_xticklabels()] == list(RANK_NAMES) + ["correct"]
    sub = divergence[(divergence["model"] == "strong") & (divergence["method"] == "knn")]
    expected = sub.set_index("divergence").loc[list(RANK_NAMES) + ["correct"], "fraction"].to_numpy()
    assert np.allclose([b.get_height() for b in axes[0].containers[0]], expected)
    assert axes[0].containers[0][-1].get_hatch() == "//"  # "correct" is marked
    check_saved(fig, tmp_path / "divergence")


# ---------------------------------------------------------------------- projection
def test_projection_panels_per_rank_top_n_and_other(probes, tmp_path):
    from latent.projection import project

    coords = project(probes["X"], method="pca")
    table = probes["image_table"]
    fig, axes = plot_projection(coords, table, top_n=5, title="PCA")
    assert len(axes) == 7 and sum(ax.get_visible() for ax in fig.axes) == 7
    for ax, rank in zip(axes, RANK_NAMES):
        assert ax.get_title().startswith(rank)
        texts = [t.get_text() for t in ax.get_legend().get_texts()]
        n_taxa = len(set(rank_keys(table, rank)[0]) - {""})
        assert len(texts) == (n_taxa if n_taxa <= 6 else 6)
        assert (texts[-1].startswith("other") or n_taxa <= 6)
        assert sum(int(t.rsplit("(", 1)[1].rstrip(")").replace(",", "")) for t in texts) == len(table)
        (points,) = [c for c in ax.collections if isinstance(c, PathCollection)]
        assert points.get_offsets().shape == (len(table), 2)
    fig2, axes2 = plot_projection({"PCA": coords, "shifted": coords + 1}, table, ranks=["class", "genus"])
    assert len(axes2) == 4 and axes2[0].get_ylabel() == "PCA"
    check_saved(fig, tmp_path / "projection")
    with pytest.raises(InputError, match="rows for"):
        plot_projection(coords, table.iloc[:-1])
    with pytest.raises(InputError, match=r"\(n, 2\)"):
        plot_projection(probes["X"], table)


def test_projection_10000_taxa_is_readable_and_fast(tmp_path):
    tax = big_taxonomy()
    table = tax.species_table()
    rng = np.random.default_rng(0)
    coords = rng.standard_normal((len(table), 2)) + tax.species_codes[:, [1, 2]] * 0.05
    fig, axes = plot_projection(coords, table, top_n=8)
    check_saved(fig, tmp_path / "projection_10k")
    for ax in axes:
        texts = [t.get_text() for t in ax.get_legend().get_texts()]
        assert len(texts) <= 9
    assert [t.get_text() for t in axes[-1].get_legend().get_texts()][-1].startswith("other (9,992)")
    assert axes[-1].get_title() == "species (10,000 taxa)"


# ---------------------------------------------------------------------- geometry
def test_distance_by_height_boxes_from_quantiles(probes, tmp_path):
    heights = probes["heights"]
    two = pd.concat([heights.assign(model="A"), heights.assign(model="B", mean=heights["mean"] * 1.1)])
    fig, axes = plot_distance_by_height(two)
    assert [ax.get_title() for ax in axes] == ["image pairs", "centroid pairs"]
    assert axes[0].get_ylabel() == "embedding distance"
    image = heights[heights["level"] == "image"].sort_values("height")
    # bxp draws 2 whiskers per box: their far ends are q05 and q95 of the table, per model
    whisker_ends = sorted(y for line in axes[0].lines if len(line.get_ydata()) == 2
                          for y in [line.get_ydata()[1]] if line.get_linestyle() == "-")
    for q in ("q05", "q95"):
        for value in image[q]:
            assert np.isclose(whisker_ends, value).sum() >= 4  # whisker and cap, both models
    assert {"A", "B"} <= set(legend_texts(fig))
    check_saved(fig, tmp_path / "heights")
    with pytest.raises(InputError, match="lacks column"):
        plot_distance_by_height(heights.drop(columns="q05"))


def test_distance_matrix_reorders_blocks_and_draws_boundaries(probes, tmp_path):
    C, species = probes["centroid_distances"], probes["species"]
    fig, axes = plot_distance_matrix(C, species)
    image = axes[0].get_images()[0].get_array()
    assert np.allclose(image, C)
    n_kingdoms = species["kingdom"].nunique()
    lines = [c for c in axes[0].collections if isinstance(c, LineCollection)]
    assert len(lines) >= 2 and len(lines[0].get_segments()) == n_kingdoms - 1  # kingdom cuts (rows)
    labels = [t.get_text() for t in axes[0].get_yticklabels()]
    assert 0 < len(labels) <= 40 and "species" in axes[0].get_xlabel()
    check_saved(fig, tmp_path / "matrix")
    # a shuffled input is put back in taxonomy order: the same picture
    perm = np.random.default_rng(1).permutation(len(C))
    fig2, axes2 = plot_distance_matrix(C[np.ix_(perm, perm)], species.iloc[perm])
    assert np.allclose(axes2[0].get_images()[0].get_array(), C)
    with pytest.raises(InputError, match="rows but the matrix"):
        plot_distance_matrix(C, species.iloc[:-1])


def test_distance_matrix_10000_species_block_means(tmp_path):
    tax = big_taxonomy()
    D = tax.distances()  # (10000, 10000) uint8
    fig, axes = plot_distance_matrix({"A": D}, tax.species_table(), max_pixels=500)
    check_saved(fig, tmp_path / "matrix_10k")
    shown = axes[0].get_images()[0].get_array()
    assert shown.shape == (500, 500)
    assert np.isclose(shown[3, 7], D[60:80, 140:160].mean())  # blocks of 20 species
    assert len(axes[0].get_yticklabels()) <= 40
    assert "blocks of 20" in axes[0].get_xlabel()


# ---------------------------------------------------------------------- trees
def test_dendrogram_layout_equals_scipy(probes):
    Z = probes["linkage"]
    y, segments = dendrogram_segments(Z)
    ref = dendrogram(Z, no_plot=True)
    assert np.array_equal(np.argsort(y), ref["leaves"])
    # scipy draws each merge as a U: (icoord, dcoord) 4 points; ours as 3 segments in (height, position)
    ours = set()
    for (h0, p0), (h1, p1) in segments:
        ours.add((round(h0, 9), round(p0 * 10 + 5, 6), round(h1, 9), round(p1 * 10 + 5, 6)))
    theirs = set()
    for ic, dc in zip(ref["icoord"], ref["dcoord"]):
        theirs.add((round(dc[0], 9), round(ic[0], 6), round(dc[1], 9), round(ic[1], 6)))
        theirs.add((round(dc[1], 9), round(ic[1], 6), round(dc[2], 9), round(ic[2], 6)))
        theirs.add((round(dc[3], 9), round(ic[3], 6), round(dc[2], 9), round(ic[2], 6)))
    flipped = {(a, b, c, d) if (a, b) <= (c, d) else (c, d, a, b) for a, b, c, d in ours}
    flipped_theirs = {(a, b, c, d) if (a, b) <= (c, d) else (c, d, a, b) for a, b, c, d in theirs}
    assert flipped == flipped_theirs


def discordant_pairs(a: np.ndarray, b: np.ndarray) -> int:
    """Pairs of leaves whose connecting lines cross (orders disagree)."""
    da, db = np.sign(a[:, None] - a[None, :]), np.sign(b[:, None] - b[None, :])
    return int((da * db < 0).sum() // 2)


def test_rotated_dendrogram_of_a_binary_taxonomy_draws_straight_lines():
    """A dendrogram that is the taxonomy (average linkage of the LCA-height matrix of a binary tree) is
    rotated into the taxonomy's order: every connecting line is horizontal. scipy's order is not."""
    from scipy.spatial.distance import squareform

    lineages = []
    for code in range(2 ** 7):
        bits = [(code >> (6 - r)) & 1 for r in range(7)]
        names = ["".join(f"{'KPCOFGS'[i]}{bits[i]}" for i in range(r + 1)) for r in range(7)]
        names[6] = f"{names[5]} s{bits[6]}"
        lineages.append(names)
    tax = Taxonomy.from_lineages(lineages)
    perm = np.random.default_rng(0).permutation(tax.n_species)
    table = tax.species_table().iloc[perm].reset_index(drop=True)
    T = tax.distances().astype(float)[np.ix_(perm, perm)]
    Z = linkage(squareform(T), method="average")
    y_tax, _ = taxonomy_segments(table)
    y_rot, segments = dendrogram_segments(Z, target=y_tax)
    y_plain, plain = dendrogram_segments(Z)
    assert np.array_equal(y_rot, y_tax) and discordant_pairs(y_plain, y_tax) > 0
    # rotation keeps the tree: the same merge heights and vertical extents
    assert np.allclose(np.sort(segments[2::3, 0, 0]), np.sort(plain[2::3, 0, 0]))
    assert np.allclose(np.sort(np.abs(segments[2::3, 1, 1] - segments[2::3, 0, 1])),
                       np.sort(np.abs(plain[2::3, 1, 1] - plain[2::3, 0, 1])))
    fig, axes = plot_tanglegram(Z, table)
    links = axes[1].collections[0].get_segments()
    assert len(links) == len(table) and all(np.isclose(seg[0][1], seg[1][1]) for seg in links)


def test_rotation_reduces_crossings(probes):
    Z, species = probes["linkage"], probes["species"]
    y_tax, _ = taxonomy_segments(species)
    rotated = discordant_pairs(dendrogram_segments(Z, target=y_tax)[0], y_tax)
    assert rotated < discordant_pairs(dendrogram_segments(Z)[0], y_tax)


def test_taxonomy_tree_layout_hand_computed():
    species = pd.DataFrame([["K", "P", "C", "O", "F", "G1", "G1 a"], ["K", "P", "C", "O", "F", "G1", "G1 b"],
                            ["K", "P", "C", "O", "F", "G2", "G2 c"]], columns=list(RANK_NAMES))
    pos, segments = taxonomy_segments(species.iloc[[2, 0, 1]].reset_index(drop=True))
    assert pos.tolist() == [2.0, 0.0, 1.0]  # rows put in lineage order
    verticals = {(x0, y0, y1) for (x0, y0), (x1, y1) in segments.tolist() if x0 == x1}
    # genus G1 joins species 0 and 1 at x = 5; the family joins G1 (0.5) and G2 (2) at x = 4
    assert verticals == {(5.0, 0.0, 1.0), (4.0, 0.5, 2.0)}
    horizontals = [s for s in segments.tolist() if s[0][0] != s[1][0]]
    assert len(horizontals) == 3 + 2 + 1 * 5  # 3 species, 2 genera, one node at each higher rank


def test_tanglegram_small_labelled_and_large_unlabelled(probes, tmp_path):
    Z, species = probes["linkage"], probes["species"]
    fig, axes = plot_tanglegram(Z, species, max_labels=60)
    tree_ax, link_ax, den_ax = axes
    assert tree_ax.get_title() == "taxonomy" and den_ax.get_title() == "centroid dendrogram"
    (links,) = link_ax.collections
    assert len(links.get_segments()) == len(species)
    texts = [t.get_text() for ax in fig.axes for t in ax.texts]
    assert len(texts) == 2 * len(species)
    assert legend_texts(fig)
    check_saved(fig, tmp_path / "tanglegram")

    fig, axes = plot_tanglegram(Z, species, max_labels=10, color_rank="class", top_n=3)
    assert not [t for ax in fig.axes for t in ax.texts]
    assert "names hidden" in fig.legends[0].get_title().get_text()
    assert len(legend_texts(fig)) <= 4
    with pytest.raises(InputError, match="shape"):
        plot_tanglegram(Z[:-1], species)


def test_tanglegram_10000_species_fast(tmp_path):
    tax = big_taxonomy()
    S = tax.n_species
    rng = np.random.default_rng(0)
    # a valid random linkage: merge random pairs of active clusters at increasing heights
    active = list(range(S))
    sizes = {i: 1 for i in range(S)}
    Z = np.empty((S - 1, 4))
    for i in range(S - 1):
        a, b = rng.choice(len(active), 2, replace=False)
        x, y = active[a], active[b]
        for j in sorted((a, b), reverse=True):
            active.pop(j)
        sizes[S + i] = sizes[x] + sizes[y]
        Z[i] = (min(x, y), max(x, y), i + 1.0, sizes[S + i])
        active.append(S + i)
    fig, axes = plot_tanglegram(Z, tax.species_table())
    check_saved(fig, tmp_path / "tanglegram_10k")
    assert not [t for ax in fig.axes for t in ax.texts]
    assert len(legend_texts(fig)) <= 9
    # the 10,000 leaves of the taxonomy are collapsed into bars of a rank with few enough clades
    tree_ax = axes[0]
    assert 0 < len(tree_ax.get_xticklabels()) < 7 and "bars:" in tree_ax.get_xlabel()
    assert len(tree_ax.collections[0].get_segments()) < 2000


# ---------------------------------------------------------------------- hyperbolic
def test_poincare_disk(probes, tmp_path):
    P, species = probes["poincare"], probes["species"]
    fig, axes = plot_poincare_disk({"A": P, "B": P * 0.5}, species, color_rank="class", edges=True, zoom=False)
    assert [ax.get_title() for ax in axes] == ["A", "B"]
    texts = legend_texts(fig)
    assert len(texts) == species["class"].nunique() or texts[-1].startswith("other")
    scatter = [c for c in axes[0].collections if isinstance(c, PathCollection)][0]
    assert np.allclose(np.sort(scatter.get_offsets(), axis=0), np.sort(P, axis=0))
    check_saved(fig, tmp_path / "poincare")
    fig, axes = plot_poincare_disk(P * 0.2, species)  # all points near the centre: zoomed, and said so
    assert "zoomed" in axes[0].get_title() and axes[0].get_xlim()[1] < 0.3
    fig, axes = plot_poincare_disk(P * 0.2, species, zoom=False)
    assert "zoomed" not in axes[0].get_title() and axes[0].get_xlim()[1] > 1
    with pytest.raises(InputError, match="inside the unit disk"):
        plot_poincare_disk(P * 3, species)


def test_distortion_and_loss(probes, tmp_path):
    summary = probes["summary"]
    fig, axes = plot_distortion(summary)
    assert len(axes) == 2 and "distortion" in axes[0].get_ylabel() and "MAP" in axes[1].get_ylabel()
    assert set(legend_texts(fig)) == {"Poincare ball", "Euclidean"}
    poincare_line = axes[0].containers[0].lines[0]
    expected = summary[summary["metric"].str.startswith("poincare_distortion")]["value"].to_numpy()
    assert np.allclose(poincare_line.get_ydata(), expected) and list(poincare_line.get_xdata()) == [2, 4, 8, 16]
    check_saved(fig, tmp_path / "distortion")
    two = pd.concat([summary.assign(model="A"), summary.assign(model="B")])
    fig, axes = plot_distortion(two)
    assert {"A", "B", "Poincare ball", "Euclidean"} == set(legend_texts(fig))
    fig, axes = plot_fit_loss(probes["losses"])
    assert axes.shape == (1, 2) and axes[0, 0].get_yscale() == "log"
    check_saved(fig, tmp_path / "loss")
    with pytest.raises(InputError, match="no metrics named"):
        plot_distortion(summary.assign(metric="top1"))


# ---------------------------------------------------------------------- nulls
def test_null_distributions_mark_observed_and_p(probes, tmp_path):
    rows, null = probes["rows"], probes["null"]
    fig, axes = plot_null_distributions(null, rows)
    assert len(axes) == len(rows)
    for ax, row in zip(axes, rows.sort_values("metric", kind="stable",
                                                   key=lambda s: s.map({"spearman": 0, "intra_minus_inter": 1})
                                                   ).itertuples()):
        assert row.metric in ax.get_title() and "p = " in ax.get_title()
        vline = ax.lines[-1]
        assert np.allclose(vline.get_xdata(), row.value)
        lo, hi = ax.get_xlim()
        assert lo < row.value < hi
    # the planted hierarchy: the rank correlation's observed value is beyond every permutation
    spear = rows[rows["metric"] == "spearman"].iloc[0]
    assert spear["p_value"] == pytest.approx(1 / 61) and "(min)" in axes[0].get_title()
    check_saved(fig, tmp_path / "nulls")
    two_null = pd.concat([null.assign(model="A"), null.assign(model="B")])
    two_rows = pd.concat([rows.assign(model="A"), rows.assign(model="B")])
    fig, axes = plot_null_distributions(two_null, two_rows, metrics="spearman")
    assert len(axes) == 1 and axes[0].get_title().count("p = ") == 2
    # a probe's null CSV has no model column: the observed rows of one model still match
    fig, axes = plot_null_distributions(null.drop(columns="probe"), rows.assign(model="A"), metrics="spearman")
    assert "observed missing" not in axes[0].get_title() and "p = " in axes[0].get_title()


def test_probe_summary(probes, tmp_path):
    rows = probes["rows"]
    fig, axes = plot_probe_summary(rows)
    assert [ax.get_title() for ax in axes] == ["toy: spearman", "toy: intra_minus_inter"]
    assert [t.get_text() for t in axes[1].get_xticklabels()] == list(RANK_NAMES[:-1])
    annotations = [t.get_text() for t in axes[1].texts]
    assert len(annotations) == 6 and all(t.startswith("z=") and "\np=" in t for t in annotations)
    assert any("null mean" in t for t in legend_texts(fig))
    check_saved(fig, tmp_path / "summary")
    with pytest.raises(InputError, match="lacks column"):
        plot_probe_summary(rows.drop(columns="null_mean"))


def test_probe_summary_fills_significant_markers_only():
    rows = pd.DataFrame({"rank": ["genus", "species"], "metric": "m", "value": [1.0, 0.2], "ci_low": np.nan,
                         "ci_high": np.nan, "n": 10, "null_mean": [0.1, 0.1], "null_std": [0.1, 0.1],
                         "z": [9.0, 1.0], "p_value": [0.001, 0.4], "permutations": 999})
    fig, axes = plot_probe_summary(rows, alpha=0.05)
    points = [c for c in axes[0].collections if isinstance(c, PathCollection) and len(c.get_offsets()) == 1
              and c.get_offsets()[0][1] in (1.0, 0.2)]
    by_value = {float(c.get_offsets()[0][1]): c for c in points}
    white = np.array([1.0, 1.0, 1.0])
    assert not np.allclose(by_value[1.0].get_facecolors()[0][:3], white)  # p = 0.001: filled
    assert np.allclose(by_value[0.2].get_facecolors()[0][:3], white)  # p = 0.4: hollow
