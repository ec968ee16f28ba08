"""The benchmark suite (``benchmarks/run_all.py``): its table, and failures that become rows.

Runs two cheap benchmarks for real (``--quick --only silhouette,cache``) in a subprocess; the failure
paths run real child processes on planted scripts (one raises, one exits, one writes a malformed row, one
outlives its timeout).
"""

from __future__ import annotations

import importlib.util
import json
import math
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
RUN_ALL = ROOT / "benchmarks" / "run_all.py"


def _run_all_module():
    spec = importlib.util.spec_from_file_location("run_all_under_test", RUN_ALL)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up
    spec.loader.exec_module(module)
    return module


run_all = _run_all_module()


def _table_rows(text: str) -> list[list[str]]:
    """The cells of the markdown table's data rows (escaped pipes kept inside their cell)."""
    lines = [line for line in text.splitlines() if line.startswith("| ")]
    cells = [[c.strip() for c in line.replace("\\|", "\0").strip("|").split("|")] for line in lines]
    return [[c.replace("\0", "|") for c in row] for row in cells[1:]]  # drop the header (the rule has no "| ")


def test_quick_suite_of_two_benchmarks_gives_a_table_of_ratios(tmp_path):
    out_md, out_json = tmp_path / "table.md", tmp_path / "rows.json"
    proc = subprocess.run([sys.executable, str(RUN_ALL), "--quick", "--only", "silhouette,cache", "--out", str(out_md),
                           "--json", str(out_json)], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    record = json.loads(out_json.read_text())
    rows = record["rows"]
    # silhouette: observed and null; cache: one fraction under --quick
    assert [r["benchmark"] for r in rows] == ["silhouette", "silhouette", "cache"]
    for r in rows:
        assert r["status"] == "ok", r
        assert r["latent_s"] > 0 and r["reference_s"] > 0
        assert r["ratio"] == pytest.approx(r["reference_s"] / r["latent_s"], rel=1e-12)
        assert r["agreement"].startswith("equal"), r  # both check equality with their reference
        before, after = (float(x) for x in r["load"].split("/"))
        assert before >= 0 and after >= 0
    assert len(record["load_start"]) == 3 and record["command"].endswith("--quick --only silhouette,cache")
    # the printed table and the --out file: same table, one line per row, ten cells, numeric ratio column
    assert out_md.read_text() in proc.stdout
    cells = _table_rows(out_md.read_text())
    assert len(cells) == 3 and all(len(c) == len(run_all.ROW_KEYS) for c in cells)
    header_line = next(line for line in out_md.read_text().splitlines() if line.startswith("| benchmark |"))
    header = [c.strip() for c in header_line.strip("|").split("|")]
    ratio_col = header.index("ratio ref/latent")
    for c, r in zip(cells, rows):
        assert float(c[ratio_col]) == pytest.approx(r["ratio"], rel=0.01, abs=0.006)
    assert "Load average (1, 5, 15 min)" in proc.stdout and "Machine:" in proc.stdout


def _planted(tmp_path: Path, body: str) -> "run_all.Benchmark":
    script = tmp_path / "bench_planted.py"
    script.write_text("import os, time\n\ndef suite_rows(quick):\n" + body)
    return run_all.Benchmark("planted", str(script), quick_timeout_s=30)


@pytest.mark.parametrize("body, reason", [
    ("    raise RuntimeError('planted failure')\n", "exit 1: RuntimeError: planted failure"),
    ("    os._exit(3)\n", "exit 3: no output"),
    ("    return [{'benchmark': 'planted'}]\n", "exit 1: ValueError: row of planted lacks"),
])
def test_a_failing_benchmark_becomes_a_row(tmp_path, body, reason):
    rows = run_all.run_benchmark(_planted(tmp_path, body), quick=True)
    assert len(rows) == 1
    row = rows[0]
    assert row["benchmark"] == "planted" and row["status"].startswith("failed")
    assert reason in row["status"], row["status"]
    assert math.isnan(row["ratio"]) and set(run_all.ROW_KEYS) <= set(row)
    line = run_all.format_table(rows).splitlines()[-1]
    assert "failed" in line and len(_table_rows(run_all.format_table(rows))[0]) == len(run_all.ROW_KEYS)


def test_a_benchmark_past_its_timeout_becomes_a_row(tmp_path):
    rows = run_all.run_benchmark(_planted(tmp_path, "    time.sleep(60)\n"), quick=True, timeout_s=2)
    assert len(rows) == 1 and rows[0]["status"].startswith("failed") and "timed out after 2 s" in rows[0]["status"]


def test_a_timeout_ends_the_processes_the_benchmark_started(tmp_path):
    pid_file = tmp_path / "grandchild.pid"
    body = ("    import subprocess\n"
            "    p = subprocess.Popen(['sleep', '60'])\n"
            f"    open({str(pid_file)!r}, 'w').write(str(p.pid))\n"
            "    time.sleep(60)\n")
    rows = run_all.run_benchmark(_planted(tmp_path, body), quick=True, timeout_s=3)
    assert "timed out" in rows[0]["status"]
    pid = int(pid_file.read_text())
    for _ in range(50):  # the kill is sent; the kernel may take a moment to reap
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            break
        if Path(f"/proc/{pid}/stat").exists() and Path(f"/proc/{pid}/stat").read_text().split()[2] == "Z":
            break  # a zombie: dead, waiting for its (re-)parent
        time.sleep(0.1)
    else:
        pytest.fail(f"the benchmark's own subprocess {pid} outlived its timeout")


def test_the_suite_budget_skips_what_cannot_start(tmp_path):
    out = tmp_path / "rows.json"
    proc = subprocess.run([sys.executable, str(RUN_ALL), "--quick", "--only", "cache", "--budget", "1", "--json",
                           str(out)], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    (row,) = json.loads(out.read_text())["rows"]
    assert row["benchmark"] == "cache" and row["status"].startswith("skipped: ")
    assert "of the suite's 1 s budget left" in row["status"]


def test_a_planted_benchmark_row_passes_through_with_its_ratio(tmp_path):
    body = ("    from run_all import make_row\n"
            "    return [make_row('planted', 'case', 'ours', 2.0, 'ref', 5.0, 'equal')]\n")
    rows = run_all.run_benchmark(_planted(tmp_path, body), quick=True)
    assert len(rows) == 1 and rows[0]["status"] == "ok" and rows[0]["ratio"] == 2.5


def test_thread_variables_of_the_child(monkeypatch):
    monkeypatch.setenv("OMP_NUM_THREADS", "7")
    env = run_all.child_env(run_all.Benchmark("x", "x.py", threads=-1))
    assert env["OMP_NUM_THREADS"] == env["NUMBA_NUM_THREADS"] == str(os.cpu_count() or 1)
    assert "OMP_NUM_THREADS" not in run_all.child_env(run_all.Benchmark("x", "x.py", threads=None))
    assert run_all.child_env(run_all.Benchmark("x", "x.py", threads=3))["MKL_NUM_THREADS"] == "3"


def test_make_row_and_table_cells():
    row = run_all.make_row("b", "a|b", "ours", 0.5, "ref", 1.5, "equal")
    assert row["ratio"] == 3.0
    assert math.isnan(run_all.make_row("b", latent_s=0.0, reference_s=1.0)["ratio"])
    assert math.isnan(run_all.make_row("b", latent_s=1.0)["ratio"])
    row["load"] = "0.10/0.20"
    cells = _table_rows(run_all.format_table([row]))[0]
    assert cells[1] == "a|b" and cells[6] == "3.00" and cells[3] == "0.500"


def test_full_only_benchmark_is_skipped_under_quick_and_unknown_names_refused(tmp_path):
    out = tmp_path / "rows.json"
    proc = subprocess.run([sys.executable, str(RUN_ALL), "--quick", "--only", "report-tol1k", "--json", str(out)],
                          cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    (row,) = json.loads(out.read_text())["rows"]
    assert row["benchmark"] == "report-tol1k" and row["status"].startswith("skipped: full suite only")
    bad = subprocess.run([sys.executable, str(RUN_ALL), "--only", "nope"], cwd=ROOT, capture_output=True, text=True,
                         timeout=60)
    assert bad.returncode == 2 and "--only 'nope'" in bad.stderr and "report-cub10" in bad.stderr


def test_report_row_is_skipped_with_its_reason_without_the_shared_data(tmp_path, monkeypatch):
    monkeypatch.setenv("LATENT_SHARED_DATA", str(tmp_path / "absent"))
    (row,) = run_all.run_benchmark(next(b for b in run_all.BENCHMARKS if b.name == "report-cub10"), quick=True)
    assert row["status"] == f"skipped: the cub10 data is absent under {tmp_path / 'absent'}"
