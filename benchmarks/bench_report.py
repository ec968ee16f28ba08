"""Benchmark: the CLI paths a user runs first, from scratch, CPU and wall time.

Commands, each in a fresh temporary folder and its own subprocess (so nothing is reused):

* ``demo``: ``latent demo --out DIR``;
* ``cub10``: ``latent run experiments/cub10.yaml --results DIR`` (needs ``../shared/data/cub10``);
* ``tol1k``: ``latent import ../shared/data/tol1k_bioclip2/example_1k.parquet --out DIR/tol1k.h5``
  (timed apart), then ``latent report DIR/tol1k.h5 --out DIR/report`` with the defaults (the default
  probes named with ``--probes``).

Measured per command: wall time (``time.perf_counter`` around the subprocess) and CPU time (user + sys
of the child, from ``resource.getrusage(RUSAGE_CHILDREN)``, which counts every thread), the 1-minute
load average before and after (the machine may be shared: CPU time is the number to compare, wall time
depends on the load), and the per-step seconds the pipeline records (``probe_seconds`` of every
probe ``run.json``). The environment is the caller's (no thread variable is set here), as a user runs it.

    .venv/bin/python benchmarks/bench_report.py                      # all three
    .venv/bin/python benchmarks/bench_report.py --only demo,cub10
    .venv/bin/python benchmarks/bench_report.py --json out.json      # also write the raw numbers

Prints a markdown table (command, wall s, CPU s, load before/after, exit status) and the slowest steps.
Nothing is extrapolated: every number is measured in this run.

``suite_rows(quick, dataset)`` gives the report rows of ``benchmarks/run_all.py`` (see its docstring).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("LATENT_SHARED_DATA", ROOT.parent / "shared" / "data"))
LATENT = [sys.executable, "-m", "latent.cli"]


def timed(argv: list[str], log: Path) -> dict:
    """Run ``argv`` (stdout and stderr to ``log``); wall and child CPU seconds, load, exit status."""
    load0 = os.getloadavg()[0]
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.perf_counter()
    with open(log, "w") as fh:
        rc = subprocess.run(argv, cwd=ROOT, stdout=fh, stderr=subprocess.STDOUT).returncode
    wall = time.perf_counter() - t0
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return {"command": " ".join(["latent", *argv[3:]]), "wall_s": round(wall, 1), "cpu_s": round(cpu, 1),
            "load_before": round(load0, 2), "load_after": round(os.getloadavg()[0], 2), "rc": rc, "log": str(log)}


def step_seconds(folder: Path) -> list[tuple[str, float]]:
    """``(run/probe, seconds)`` from every ``run.json`` under ``folder`` that records ``probe_seconds``."""
    out = []
    for path in folder.rglob("run.json"):
        try:
            record = json.loads(path.read_text())
        except (OSError, ValueError):
            continue
        for probe, seconds in (record.get("probe_seconds") or {}).items():
            out.append((f"{path.parent.parent.name}/{path.parent.name[:24]}: {probe}", float(seconds)))
    return out


def _import_argv(dataset: str, cache: Path) -> "list[str] | None":
    """``latent import`` of cub10 (as ``experiments/cub10.yaml``) or tol1k into ``cache``; None if absent."""
    if dataset == "cub10":
        d = SHARED / "cub10"
        if not d.is_dir():
            return None
        return [*LATENT, "import", str(d / "bird_embeddings.npy"), "--metadata", str(d / "bird_metadata.json"),
                "--id-column", "path", "--taxonomy", str(d / "taxonomy.csv"), "--join-on", "species=cub_class",
                "--model", "clip (imported)", "--out", str(cache)]
    table = SHARED / "tol1k_bioclip2" / "example_1k.parquet"
    return [*LATENT, "import", str(table), "--out", str(cache)] if table.is_file() else None


def _step_records(report: Path) -> dict[str, dict]:
    """``{step folder name: run.json}`` of the report's evaluate and probe steps."""
    out = {}
    for path in sorted(report.glob("runs/*/*/run.json")):
        if path.parent.name.startswith(("evaluate-", "probe-")):
            out[path.parent.name] = json.loads(path.read_text())
    return out


def _same_metrics(a: Path, b: Path) -> "tuple[bool, int]":
    """Whether two ``metrics.csv`` have the same rows and values (NaN equal to NaN, 1e-12 relative)."""
    import numpy as np
    import pandas as pd

    x, y = pd.read_csv(a), pd.read_csv(b)
    if x.shape != y.shape or list(x.columns) != list(y.columns) or "value" not in x:
        return False, len(x)
    keys = [c for c in ("probe", "metric", "rank", "group") if c in x.columns]
    if keys and not x[keys].astype(str).equals(y[keys].astype(str)):
        return False, len(x)
    return bool(np.allclose(x["value"], y["value"], rtol=1e-12, atol=0, equal_nan=True)), len(x)


def suite_rows(quick: bool = False, dataset: str = "cub10") -> list[dict]:
    """Rows of ``benchmarks/run_all.py``: ``latent report CACHE`` (defaults) end to end in a subprocess.

    The cache is made by ``latent import`` (cub10 as ``experiments/cub10.yaml``; tol1k from
    ``example_1k.parquet``). Two references:

    * always: the report's own evaluate and probe steps, their seconds as their ``run.json`` records them
      in the same run (ratio = the share of the report's wall time spent in those steps; the rest is
      process start, reading, projections, figures and writing);
    * full suite, cub10 only: the same steps run separately as commands (``latent evaluate --method linear
      --split random``, ``latent evaluate --method knn --split species-disjoint``, ``latent probe
      --permutations 199 --set levels.permutations=999``: the report's settings), the sum of their wall
      times; agreement: their ``metrics.csv`` against the report's, value by value.

    Skipped with the reason when ``../shared/data`` (or ``LATENT_SHARED_DATA``) lacks the data set.
    """
    from run_all import make_row

    name = f"report-{dataset}"
    with tempfile.TemporaryDirectory(prefix=f"suite_{dataset}_") as tmp:
        work = Path(tmp)
        cache = work / f"{dataset}.h5"
        argv = _import_argv(dataset, cache)
        if argv is None:
            return [make_row(name, status=f"skipped: the {dataset} data is absent under {SHARED}")]
        imported = timed(argv, work / "import.txt")
        if imported["rc"] != 0:
            raise RuntimeError(f"latent import failed: {(work / 'import.txt').read_text()[-300:]}")
        report = work / "report"
        run = timed([*LATENT, "report", str(cache), "--out", str(report)], work / "report.txt")
        if run["rc"] != 0:
            raise RuntimeError(f"latent report failed (exit {run['rc']}): {(work / 'report.txt').read_text()[-300:]}")
        records = _step_records(report)
        steps = sum(float(r.get("seconds") or 0) for r in records.values())
        case = (f"{dataset} ({cache.stat().st_size / 2**20:.1f} MiB cache, import {imported['wall_s']} s); "
                f"report CPU {run['cpu_s']} s")
        rows = [make_row(name, case, "`latent report CACHE` (defaults, whole command)", run["wall_s"],
                         f"its {len(records)} evaluate/probe steps as recorded (run.json, same run)", steps,
                         "n/a (a part of the same run)")]
        if quick or dataset != "cub10":
            return rows
        commands = {
            "evaluate-linear-random": ["evaluate", str(cache), "--method", "linear", "--split", "random"],
            "evaluate-knn-species-disjoint": ["evaluate", str(cache), "--method", "knn", "--split",
                                              "species-disjoint"],
            "probe-cosine-perm199": ["probe", str(cache), "--permutations", "199", "--set", "levels.permutations=999"],
        }
        total, same, checked = 0.0, True, 0
        for step, command in commands.items():
            out = work / step
            result = timed([*LATENT, *command, "--out", str(out)], work / f"{step}.txt")
            if result["rc"] != 0:
                raise RuntimeError(f"latent {command[0]} failed: {(work / f'{step}.txt').read_text()[-300:]}")
            total += result["wall_s"]
            theirs = next((p for p in report.glob(f"runs/*/{step}*/metrics.csv")), None)
            if theirs is None:
                same = False
                continue
            equal, n = _same_metrics(out / "metrics.csv", theirs)
            same &= equal
            checked += n
        rows.append(make_row(name, case, "`latent report CACHE` (defaults, whole command)", run["wall_s"],
                             "its evaluate x2 + probe steps run separately as commands (sum of walls)", total,
                             f"metrics equal ({checked} rows)" if same else "metrics NOT equal"))
        return rows


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--only", default="demo,cub10,tol1k", help="comma-separated: demo, cub10, tol1k")
    ap.add_argument("--json", type=Path, help="also write the raw numbers here")
    ap.add_argument("--keep", type=Path, help="work in this folder (kept) instead of a temporary one")
    args = ap.parse_args()
    which = [w.strip() for w in args.only.split(",") if w.strip()]
    unknown = sorted(set(which) - {"demo", "cub10", "tol1k"})
    if unknown:
        ap.error(f"--only: unknown {', '.join(unknown)}; choose from demo, cub10, tol1k")
    work = args.keep or Path(tempfile.mkdtemp(prefix="bench_report_"))
    work.mkdir(parents=True, exist_ok=True)
    results, steps = [], []
    for name in which:
        folder = work / name
        if folder.exists():
            print(f"{folder} exists: give an empty --keep folder", file=sys.stderr)
            return 2
        folder.mkdir()
        if name == "demo":
            results.append({"name": name, **timed([*LATENT, "demo", "--out", str(folder)], folder / "log.txt")})
        elif name == "cub10":
            if not (SHARED / "cub10").is_dir():
                print(f"skipping cub10: {SHARED / 'cub10'} is absent", file=sys.stderr)
                continue
            results.append({"name": name, **timed([*LATENT, "run", "experiments/cub10.yaml", "--results", str(folder)],
                                                  folder / "log.txt")})
        else:
            table = SHARED / "tol1k_bioclip2" / "example_1k.parquet"
            if not table.is_file():
                print(f"skipping tol1k: {table} is absent", file=sys.stderr)
                continue
            cache = folder / "tol1k.h5"
            results.append({"name": "tol1k import", **timed([*LATENT, "import", str(table), "--out", str(cache)],
                                                            folder / "import.txt")})
            from latent.probes import PROBES

            # the default probes, named (the same set as no --probes; `latent report` without --probes stopped
            # with an internal error in this tree, a bug of latent/cli.py reported separately)
            probes = ",".join(name for name, spec in PROBES.items() if spec.default)
            results.append({"name": name, **timed([*LATENT, "report", str(cache), "--probes", probes, "--out",
                                                   str(folder / "report")], folder / "log.txt")})
        steps += [(name, step, s) for step, s in step_seconds(folder)]
    print(f"machine: {platform.machine()}, {os.cpu_count()} CPUs, Python {platform.python_version()}, "
          f"{platform.platform()}; work folder {work}")
    print("\n| command | wall (s) | CPU user+sys (s) | load before / after | exit |")
    print("|---|---:|---:|---|---:|")
    for r in results:
        load = f"{r['load_before']} / {r['load_after']}"
        print(f"| `{r['command']}` | {r['wall_s']} | {r['cpu_s']} | {load} | {r['rc']} |")
    if steps:
        print("\nslowest steps (probe_seconds of run.json, wall):")
        for name, step, s in sorted(steps, key=lambda t: -t[2])[:12]:
            print(f"  {name:6s} {s:8.1f}  {step}")
    if args.json:
        args.json.write_text(json.dumps({"results": results, "steps": steps}, indent=1))
    return 0 if all(r["rc"] == 0 for r in results) else 1


if __name__ == "__main__":
    sys.exit(main())
