"""Tree-likeness with an answer (issue 14, item 3): the relative Gromov delta next to random Gaussian
features of the same size, and one sentence that reads it.

Known answer: points at the leaves of a planted tree (every node its own axis, so Euclidean distances
are an ultrametric) with small noise are more tree-like than random data of their size; isotropic
Gaussian points are not.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

import latent.probes.hyperbolic as hp
from latent.errors import InputError
from latent.probes.base import ProbeData, ProbeOptions
from latent.probes.hyperbolic import (
    prediction_interval,
    probe_hyperbolicity,
    random_delta,
    random_draws,
    treelike_sentence,
)
from latent.ranks import RANK_NAMES
from latent.synthetic import balanced_taxonomy
from latent.taxonomy import Taxonomy

BRANCHING = (1, 1, 2, 3, 2, 2, 2)  # 48 species


def tree_points(taxonomy: Taxonomy, noise: float, seed: int) -> np.ndarray:
    """``(S, n_nodes)`` leaves of the taxonomy tree: one axis per node (length 1), plus Gaussian noise."""
    table = taxonomy.species_table()
    columns = {}
    for r, rank in enumerate(RANK_NAMES):
        lineage = table[list(RANK_NAMES[: r + 1])].astype(str).agg("|".join, axis=1)
        for key in pd.unique(lineage):
            columns[(rank, key)] = (lineage == key).to_numpy(float)
    X = np.column_stack(list(columns.values()))
    return X + noise * np.random.default_rng(seed).standard_normal(X.shape)


def probe(X: np.ndarray, taxonomy: Taxonomy, seed: int, distance: str = "euclidean") -> pd.DataFrame:
    data = ProbeData.from_arrays(X, taxonomy)
    options = ProbeOptions(seed=seed, permutations=0, device="cpu", distance=distance,
                           extra={"hyperbolicity": {"methods": "sampled,exact"}})
    return probe_hyperbolicity(data, options).to_frame()


def delta_row(frame: pd.DataFrame, method: str, target: str = "embedding") -> pd.Series:
    sel = frame[(frame.metric == "delta_rel") & (frame.method == method) & (frame.target == target)]
    assert len(sel) == 1
    return sel.iloc[0]


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_planted_tree_below_the_random_interval_gaussian_inside(seed):
    taxonomy = balanced_taxonomy(BRANCHING)
    tree = probe(tree_points(taxonomy, noise=0.02, seed=seed), taxonomy, seed)
    n_dim = tree_points(taxonomy, 0.0, 0).shape
    gauss = probe(np.random.default_rng(100 + seed).standard_normal(n_dim), taxonomy, seed)
    for method in ("sampled", "exact"):
        t, g = delta_row(tree, method), delta_row(gauss, method)
        assert t.random_draws >= hp.RANDOM_MIN_DRAWS and t.random_low < t.random_mean < t.random_high
        assert t.value < t.random_low and t.random_position == "below"
        assert g.random_low <= g.value <= g.random_high and g.random_position == "inside"
        # the same baseline for both: it depends on n, d, the distance, the method and the seed only
        assert (t.random_low, t.random_high) == (g.random_low, g.random_high)
        assert delta_row(tree, method, "taxonomy").value == 0.0
    assert "more tree-like than random data of its size" in treelike_sentence(tree)
    assert "no more tree-like than random data of its size" in treelike_sentence(gauss)


def test_sentence_names_value_method_interval_and_taxonomy():
    taxonomy = balanced_taxonomy(BRANCHING)
    frame = probe(tree_points(taxonomy, noise=0.02, seed=0), taxonomy, 0)
    row = delta_row(frame, "sampled")
    sentence = treelike_sentence(frame.assign(probe="hyperbolicity", features="model"))
    assert sentence.startswith(f"Relative Gromov delta of the species-centroid distances is {row.value:.3f} "
                               f"(sampled, 48 species), below random Gaussian features of the same size")
    assert f"{row.random_low:.3f}-{row.random_high:.3f} from {int(row.random_draws)} draws" in sentence
    assert sentence.endswith("(the taxonomy itself, a tree: 0).") and sentence.count(".") <= 8
    # another probe's rows and the baseline features' rows are ignored
    other = frame.assign(probe="hyperbolicity", features="baseline", value=0.99, random_position="above")
    mixed = pd.concat([frame.assign(probe="hyperbolicity", features="model"), other,
                       pd.DataFrame([{"probe": "shape", "metric": "delta_rel", "value": 5.0}])], ignore_index=True)
    assert treelike_sentence(mixed) == sentence


def test_sentence_without_a_baseline_says_so():
    frame = pd.DataFrame([{"rank": "all", "metric": "delta_rel", "value": 0.4, "n": 30, "target": "embedding",
                           "method": "exact"}])
    sentence = treelike_sentence(frame)
    assert "0.400 (exact, 30 species)" in sentence and "not tested" in sentence
    assert treelike_sentence(frame.assign(metric="delta")) == ""
    above = frame.assign(random_mean=0.2, random_low=0.1, random_high=0.3, random_draws=5)
    assert "above random Gaussian features" in treelike_sentence(above)
    assert "less tree-like than random data of its size" in treelike_sentence(above)
    assert "not compared" in treelike_sentence(above.assign(value=np.nan))
    with pytest.raises(InputError, match="'rows'"):
        treelike_sentence([1, 2])  # type: ignore[arg-type]


def test_random_draws_follow_the_cost_not_the_clock():
    assert random_draws("base_point", 144, 1500, 10) == hp.RANDOM_DRAWS
    assert random_draws("exact", 144, 1500, 10) == 0  # too costly: no exact baseline
    assert random_draws("exact", 40, 1500, 10) == hp.RANDOM_DRAWS
    assert random_draws("sampled", 5000, 1500, 10) == 0  # too costly: the cheap base-point delta gets one
    assert random_draws("base_point", 5000, 1500, 10) == hp.RANDOM_MIN_DRAWS
    a = random_delta(30, 8, "sampled", 3, distance="cosine", seed=4, tries=2, device="cpu")
    b = random_delta(30, 8, "sampled", 3, distance="cosine", seed=4, tries=2, device="cpu")
    pd.testing.assert_frame_equal(a, b)
    assert list(a.columns) == ["method", "draw", "seed", "delta", "delta_rel"] and a["delta_rel"].nunique() == 3


def test_prediction_interval_known_values():
    mean, low, high = prediction_interval([1.0, 2.0, 3.0])
    # t(0.975, 2) = 4.3027; sd = 1; sqrt(1 + 1/3)
    assert mean == 2.0 and high - mean == pytest.approx(4.302653 * np.sqrt(4 / 3), rel=1e-5)
    assert np.isnan(prediction_interval([1.0])[1])


def test_probe_tables_and_info_describe_the_baseline():
    taxonomy = balanced_taxonomy(BRANCHING)
    data = ProbeData.from_arrays(tree_points(taxonomy, 0.02, 0), taxonomy)
    result = probe_hyperbolicity(data, ProbeOptions(seed=0, permutations=0, device="cpu",
                                                    extra={"hyperbolicity": {"methods": "base_point"}}))
    drawn = result.tables["random"]
    assert len(drawn) == hp.RANDOM_DRAWS and set(drawn["method"]) == {"base_point"}
    assert "isotropic Gaussian" in result.info["random"]["features"]
    frame = result.to_frame()
    assert set(frame["target"]) == {"embedding", "taxonomy"}
    with_baseline = frame[frame["random_low"].notna()]
    assert with_baseline[["metric", "target"]].values.tolist() == [["delta_rel", "embedding"]]
    mean, low, high = prediction_interval(drawn["delta_rel"])
    row = with_baseline.iloc[0]
    assert (row.random_mean, row.random_low, row.random_high) == (mean, low, high)
