"""The tables ``latent probe`` and ``latent evaluate`` print: names never cut, no two rows alike, one-taxon
ranks marked trivial, k-fold runs counted per fold.

The old console table cut ``metric + qualifiers`` at 28 characters and left numeric qualifiers (``height``)
out, so the distance probe printed five identical ``mean_distance level=image`` rows.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from latent.errors import InputError
from latent.tables import (
    TRIVIAL_MARK,
    evaluation_console_table,
    format_console_table,
    metric_names,
    n_test_text,
    probe_console_table,
)

LONG = "cophenetic_taxonomy_spearman_against_the_full_lineage_tree"  # 58 characters, no space


def probe_rows() -> pd.DataFrame:
    rows = [dict(probe="levels", rank="kingdom", metric="rank_distance_ratio", value=np.nan, n=0, n_taxa=1,
                 reason="one kingdom=phylum taxon", level="kingdom=phylum"),
            dict(probe="levels", rank="class", metric="rank_distance_ratio", value=0.84, n=144, n_taxa=2,
                 null_mean=1.004, p_value=0.002, level="class")]
    # the distances probe: one mean distance per (level, height); height is a number in metrics.csv
    for level in ("image", "centroid"):
        for height in range(5):
            rows.append(dict(probe="distances", rank="all", metric="mean_distance", value=0.1 * height + 0.05,
                             n=100 * (height + 1), level=level, height=float(height)))
    rows.append(dict(probe="dendrogram", rank="all", metric=LONG, value=0.95, n=144, null_mean=0.0, p_value=0.01,
                     method="average", distance="cosine"))
    for target in ("embedding", "taxonomy"):
        for method in ("sampled", "exact"):
            rows.append(dict(probe="hyperbolicity", rank="all", metric="delta_rel", value=0.7, n=144,
                             method=method, target=target, distance="cosine" if target == "embedding" else "taxonomic"))
    return pd.DataFrame(rows)


def test_probe_table_prints_every_full_name_and_no_two_rows_alike():
    table = probe_rows()
    lines = probe_console_table(table)
    header, body = lines[0], lines[1:]
    assert header.split()[:3] == ["probe", "rank", "metric"]
    assert len(body) == len(table)  # one line per row: nothing wrapped here, nothing dropped
    assert len(set(body)) == len(body)
    for height in range(5):
        for level in ("image", "centroid"):
            name = f"mean_distance level={level} height={height}"
            assert sum(name in line for line in body) == 1, name
    assert sum(LONG in line for line in body) == 1  # a 58-character name, whole
    # only the qualifiers that tell rows apart (not distance=..., the same within each target)
    delta = [line for line in body if "delta_rel" in line]
    assert len(delta) == 4 and len(set(delta)) == 4
    assert any("delta_rel target=taxonomy method=exact" in line or "delta_rel method=exact target=taxonomy" in line
               for line in delta)
    # the columns line up: every value sits under the header's "value"
    right = header.index("value") + len("value")
    assert body[1][:right].rstrip().endswith("0.84")


def test_probe_table_marks_one_taxon_ranks_trivial():
    lines = probe_console_table(probe_rows())
    kingdom = [line for line in lines if " kingdom " in line]
    assert len(kingdom) == 1 and kingdom[0].rstrip().endswith(TRIVIAL_MARK)
    assert sum(TRIVIAL_MARK in line for line in lines) == 1
    assert lines[0].split()[-1] == "note"
    # no trivial rank: no note column
    lines = probe_console_table(probe_rows().iloc[1:])
    assert lines[0].split()[-1] == "n" and not any(TRIVIAL_MARK in line for line in lines)


def test_long_names_wrap_at_spaces_and_are_never_cut():
    name = "a_rather_long_metric level=image height=3 space=l2_normalized target=embedding"
    lines = format_console_table([["x", name, "1"], ["y", "short", "2"]], ["id", "metric", "value"],
                                 align="<<>", wrap={1: 30}, indent="")
    start, stop = lines[0].index("metric"), lines[0].index("value")
    cells = [line[start:stop].strip() for line in lines[1:]]
    assert all(len(c) <= 30 for c in cells) and len(cells) == 5  # the long name on 4 lines, then "short"
    assert " ".join(cells[:4]) == name and cells[4] == "short"  # every word, in order: nothing cut
    assert lines[1].endswith("1") and lines[5].endswith("2")  # the other cells on the row's first line
    # a word longer than the wrap width widens the column instead of being cut
    lines = format_console_table([["x", LONG, "1"]], ["id", "metric", "value"], align="<<>", wrap={1: 20}, indent="")
    assert len(lines) == 2 and LONG in lines[1]
    with pytest.raises(InputError, match="'align'"):
        format_console_table([["x"]], ["id"], align="^")


def test_metric_names_number_rows_that_nothing_tells_apart():
    table = pd.DataFrame({"probe": ["p", "p", "p"], "rank": ["all"] * 3, "metric": ["m", "m", "other"],
                          "value": [1.0, 2.0, 3.0]})
    assert metric_names(table).tolist() == ["m #1", "m #2", "other"]
    # a non-result column that differs tells them apart first
    table["seed"] = [0, 1, 0]
    assert metric_names(table).tolist() == ["m seed=0", "m seed=1", "other"]
    with pytest.raises(InputError, match="'metric'"):
        metric_names(table.drop(columns="metric"))


def test_probe_table_of_a_real_run_has_no_identical_rows():
    import latent
    from latent.synthetic import make_hierarchical

    data = make_hierarchical(per_species=4, dim=12, signal=1.0, seed=0)
    probes = latent.run_probes(data.embeddings, data.taxonomy, probes="distances,levels", permutations=9,
                               settings={"levels": {"n_boot": 10}})
    m = probes.to_frame()
    m = m[m["features"] == "model"] if "features" in m.columns else m
    lines = probe_console_table(m)
    assert len(lines) == len(m) + 1 and len(set(lines[1:])) == len(m)
    heights = sorted(set(m.loc[m["metric"] == "mean_distance", "height"].dropna().astype(int)))
    assert len(heights) > 1
    for h in heights:
        assert any(f"mean_distance level=image height={h}" in line for line in lines)


# ---------------------------------------------------------------------- evaluation
def evaluation_rows(*, folds: int = 0) -> pd.DataFrame:
    classes = {"kingdom": 1, "phylum": 1, "class": 3, "order": 8, "family": 20, "genus": 40, "species": 80}
    rows = []
    for rank, k in classes.items():
        trivial = "one taxon at this rank: not testable (one candidate taxon: any predictor scores 1)"
        for metric, value in (("top1", 1.0 if k == 1 else 0.5), ("top5", 0.9), ("balanced_accuracy", 0.45),
                              ("macro_f1", 0.4), ("n_classes", float(k))):
            if metric == "top5" and k <= 5:
                continue  # latent evaluate omits top-5 where it would be 1
            rows.append(dict(rank=rank, metric=metric, value=value, ci_low=value - 0.05 if k > 1 else np.nan,
                             ci_high=value + 0.05 if k > 1 else np.nan, n=250, n_taxa=k,
                             note=trivial if k == 1 and metric != "n_classes" else ""))
    table = pd.DataFrame(rows)
    if not folds:
        return table
    parts = [table.assign(fold=str(f)) for f in range(folds)] + [table.assign(fold="mean")]
    return pd.concat(parts, ignore_index=True)


def test_evaluation_table_marks_one_class_ranks_trivial_not_1000():
    lines = evaluation_console_table(evaluation_rows())
    by_rank = {line.split()[0]: line for line in lines[1:8]}
    assert list(by_rank) == ["kingdom", "phylum", "class", "order", "family", "genus", "species"]
    for rank in ("kingdom", "phylum"):
        assert TRIVIAL_MARK in by_rank[rank] and "1.000" not in by_rank[rank]
    assert "0.500 [0.450, 0.550]" in by_rank["class"] and TRIVIAL_MARK not in by_rank["class"]
    assert by_rank["class"].split()[4] == "-"  # top-5 not reported at a rank with 3 classes
    assert by_rank["order"].split()[4] == "0.900"
    assert len(set(lines)) == len(lines)


def test_k_fold_runs_say_the_per_fold_count_and_the_folds():
    table = evaluation_rows(folds=5)
    assert n_test_text(table, n_test=1250) == "250 test images per fold, 5 folds"
    lines = evaluation_console_table(table)  # the fold means: one line per rank, n per fold
    assert len([line for line in lines if line.split()[0] == "order"]) == 1
    assert "1,250" not in "\n".join(lines) and " 250 " in [line for line in lines if " order " in line][0]
    assert n_test_text(evaluation_rows(), n_test=250) == "250 test images"
    uneven = table.copy()
    uneven.loc[uneven["fold"] == "0", "n"] = 248
    assert n_test_text(uneven, n_test=1248) == "248-250 test images per fold, 5 folds"


def test_evaluation_table_of_a_real_centroid_run(tmp_path):
    from latent.evaluate import evaluate_cache
    from latent.synthetic import make_hierarchical, write_synthetic

    cache = write_synthetic(tmp_path / "s.h5", make_hierarchical(per_species=6, dim=16, signal=0.9, seed=1))
    report = evaluate_cache(cache, tmp_path / "out", method="centroid", folds=3, shots=2, n_boot=20, seed=0)
    text = n_test_text(report.metrics, report.info["n_test"])
    per_fold = report.info["n_test"] // 3
    assert text == f"{per_fold:,} test images per fold, 3 folds"
    lines = evaluation_console_table(report.metrics)
    assert len(set(lines)) == len(lines) and all(str(report.info["n_test"]) not in line.split() for line in lines)
