"""latent.probes.common: the one copy of the tie handling, null tables, pair counts and settings that
the probe modules share (issue 12), and the shared test set-up of conftest.py."""

from __future__ import annotations

import ast
import os
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from latent.errors import InputError
from latent.probes.common import (NULL_COLUMNS, average_ranks, empty_null_frame, int_setting, max_items_for_pairs,
                                  null_frame, run_starts, snap_ties, tie_null, zero_ties)

REPO = Path(__file__).resolve().parents[1]


def test_no_module_imports_a_private_name_from_another_latent_module():
    offenders = []
    for path in sorted((REPO / "latent").rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("latent") \
                    and node.module != "latent._version":
                offenders += [f"{path.relative_to(REPO)}: {node.module}.{a.name}" for a in node.names
                              if a.name.startswith("_")]
    probes = [o for o in offenders if o.startswith("latent/probes/")]
    assert not probes, probes


def test_tie_null_absolute_and_relative_tolerances():
    null = np.array([0.5, 0.5 + 1e-13, 0.5 + 1e-11, 0.4, np.nan])
    absolute = tie_null(null, 0.5, atol=1e-12)
    assert absolute[1] == 0.5 and absolute[2] != 0.5 and absolute[3] == 0.4 and np.isnan(absolute[4])
    relative = tie_null(null, 0.5, rtol=1e-9)
    assert relative[1] == 0.5 and relative[2] == 0.5 and relative[3] == 0.4
    assert tie_null(null, np.nan, atol=1.0)[0] == 0.5  # a NaN statistic leaves the null alone
    assert null[1] == 0.5 + 1e-13  # a copy: the input is unchanged
    untouched = tie_null(null, 0.5)  # no tolerance: only exact ties
    assert untouched[1] != 0.5


def test_snap_ties_and_zero_ties():
    np.testing.assert_array_equal(snap_ties(np.array([1.0, 1.0 + 1e-13, 2.0, 1e-14]), 1e-12), [1.0, 1.0, 2.0, 0.0])
    assert snap_ties(np.zeros(0), 1e-12).size == 0
    D = np.array([[0.0, 1e-17, 0.3], [1e-17, 0.0, 0.2]])
    out = zero_ties(D, 1e-15)
    assert out is D and D[0, 1] == 0.0 and D[1, 0] == 0.0 and D[0, 2] == 0.3


def test_average_ranks_share_ties_and_run_starts():
    np.testing.assert_array_equal(average_ranks(np.array([3.0, 1.0, 3.0, 2.0])), [3.5, 1.0, 3.5, 2.0])
    np.testing.assert_array_equal(run_starts(np.array([4, 4, 1, 1, 1, 7])), [0, 2, 5])
    assert run_starts(np.zeros(0)).size == 0


def test_max_items_for_pairs_against_brute_force():
    for max_pairs in list(range(0, 200)) + [2_000_000, 500_000]:
        m = max_items_for_pairs(max_pairs)
        expect = max(k for k in range(1, 3000) if k * (k - 1) // 2 <= max_pairs)
        assert m == expect, max_pairs
    assert max_items_for_pairs(1) == 2 and max_items_for_pairs(2_000_000) == 2000


def test_null_frames_have_the_null_columns():
    frame = null_frame("genus", "silhouette", np.array([0.1, 0.2, 0.3]))
    assert tuple(frame.columns) == NULL_COLUMNS and frame["permutation"].tolist() == [0, 1, 2]
    assert frame["permutation"].dtype == np.int64 and frame["value"].dtype == np.float64
    empty = empty_null_frame()
    assert tuple(empty.columns) == NULL_COLUMNS and len(empty) == 0
    assert len(pd.concat([frame, empty], ignore_index=True)) == 3


def test_int_setting_names_the_setting_value_and_how_to_set_it():
    assert int_setting({}, "n_boot", 1000, "clusters") == 1000
    assert int_setting({"n_boot": 5}, "n_boot", 1000, "clusters") == 5
    for bad in (-1, 1.5, True, "10"):
        with pytest.raises(InputError, match=r"The 'n_boot' setting of the clusters probe must be an integer >= 0\. "
                                             r"Got .*; set it with options.extra=\{'clusters': \{'n_boot': \.\.\.\}\}"):
            int_setting({"n_boot": bad}, "n_boot", 1000, "clusters")


# ------------------------------------------------------------------------- conftest.py set-up
def test_thread_pools_capped_for_tests():
    for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS"):
        assert os.environ.get(var), var
    import torch

    torch.set_num_threads(2)  # a test that changes it ...


def test_torch_threads_capped_again_for_the_next_test():
    import torch  # ... is undone before the next test

    assert torch.get_num_threads() == 1


def test_planted_fixtures_are_shared_and_read_only(planted, unplanted, planted_probe_data):
    assert planted.params["signal"] > 0 and unplanted.params["signal"] == 0
    assert planted.taxonomy.n_species == unplanted.taxonomy.n_species == planted_probe_data.n_species
    with pytest.raises(ValueError):
        planted.embeddings[0, 0] = 1.0
    assert planted_probe_data.X.shape == planted.embeddings.shape
