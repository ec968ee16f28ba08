"""One benchmark suite: every benchmark, side by side with its reference, in one table of ratios.

    .venv/bin/python benchmarks/run_all.py                       # everything (~15 min on 2 cores)
    .venv/bin/python benchmarks/run_all.py --quick               # smaller sizes, no tol1k report (~3 min)
    .venv/bin/python benchmarks/run_all.py --only mantel,cache --out table.md

Each benchmark is a ``suite_rows(quick, **kwargs) -> list[dict]`` function of a ``benchmarks/bench_*.py``
script (the scripts' own command lines are unchanged). It runs in its own subprocess (this file with
``--child SPEC``, in its own process group), with the thread variables of :data:`BENCHMARKS` set and a
timeout that ends the whole group: a benchmark that fails, times out or cannot run becomes a row that
says so, never the end of the suite. The whole suite keeps to a wall-clock budget (``--budget``; 870 s,
``--quick`` 170 s): each benchmark's timeout is cut to what is left.

A row (:data:`ROW_KEYS`): what latent did and its seconds, what the reference did and its seconds, both
measured in the same child process one after the other; ``ratio`` = reference seconds / latent seconds
(above 1: latent took less time than the reference); ``agreement`` whether the two outputs were equal or
within a stated tolerance ("n/a" where they compute different things, e.g. UMAP against PCA);
``status`` ``ok``, ``failed: WHY`` or ``skipped: WHY``. The machine may be shared: the table records the
1-minute load average before and after each benchmark (``os.getloadavg``); compare ratios, not times.
"""

from __future__ import annotations

import argparse
import datetime as _dt
import importlib.util
import json
import math
import os
import platform
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent

#: The columns of a row, in table order.
ROW_KEYS = ("benchmark", "case", "latent", "latent_s", "reference", "reference_s", "ratio", "agreement",
            "status", "load")

#: Thread variables set for a child (``threads=None``: removed, as a user runs the CLI).
THREAD_VARS = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS", "NUMBA_NUM_THREADS")


@dataclass(frozen=True)
class Benchmark:
    """One entry of the suite.

    Attributes
    ----------
    name : str
        The ``--only`` name.
    script : str
        File under ``benchmarks/`` whose ``function`` returns the rows.
    function : str
        ``function(quick: bool, **kwargs) -> list[dict]``.
    timeout_s, quick_timeout_s : float
        Wall-clock limit of the child (full, ``--quick``).
    threads : int or None
        Thread variables of the child; ``-1``: the number of cores; None: unset (as a user runs it).
    full_only : bool
        Skipped (with that reason) under ``--quick``.
    kwargs : dict
        Passed to ``function``.
    """

    name: str
    script: str
    function: str = "suite_rows"
    timeout_s: float = 300.0
    quick_timeout_s: float = 60.0
    threads: "int | None" = -1
    full_only: bool = False
    kwargs: dict = field(default_factory=dict)


BENCHMARKS: tuple[Benchmark, ...] = (
    Benchmark("embed", "bench_embed.py", timeout_s=180, quick_timeout_s=60),
    Benchmark("linear", "bench_linear.py", timeout_s=300, quick_timeout_s=60),
    Benchmark("mantel", "bench_mantel.py", timeout_s=120, quick_timeout_s=40),
    Benchmark("silhouette", "bench_silhouette.py", timeout_s=120, quick_timeout_s=30),
    Benchmark("delta", "bench_delta.py", timeout_s=120, quick_timeout_s=30),
    Benchmark("kernels", "bench_kernels.py", timeout_s=120, quick_timeout_s=30),
    Benchmark("umap", "bench_umap.py", timeout_s=180, quick_timeout_s=60),
    Benchmark("cache", "bench_cache.py", timeout_s=120, quick_timeout_s=30),
    Benchmark("taxonomy", "bench_taxonomy.py", timeout_s=60, quick_timeout_s=30),
    Benchmark("near-duplicates", "bench_near_duplicates.py", timeout_s=60, quick_timeout_s=30),
    Benchmark("report-cub10", "bench_report.py", threads=None, timeout_s=240, quick_timeout_s=120,
              kwargs={"dataset": "cub10"}),
    Benchmark("report-tol1k", "bench_report.py", threads=None, timeout_s=600, full_only=True,
              kwargs={"dataset": "tol1k"}),
)
NAMES = tuple(b.name for b in BENCHMARKS)
#: Wall-clock budget of the whole suite (seconds), full and ``--quick``; a benchmark's timeout is cut to what
#: is left, and none starts with less than ``MIN_START_S`` left.
FULL_BUDGET_S, QUICK_BUDGET_S, MIN_START_S = 870.0, 170.0, 10.0


def make_row(benchmark: str, case: str = "", latent: str = "", latent_s: float = math.nan, reference: str = "",
             reference_s: float = math.nan, agreement: str = "n/a", status: str = "ok") -> dict[str, Any]:
    """A row of the table; ``ratio`` is ``reference_s / latent_s`` (NaN when either is missing)."""
    ratio = reference_s / latent_s if latent_s and latent_s > 0 and math.isfinite(reference_s) else math.nan
    return {"benchmark": benchmark, "case": case, "latent": latent, "latent_s": float(latent_s),
            "reference": reference, "reference_s": float(reference_s), "ratio": float(ratio),
            "agreement": agreement, "status": status}


def child_env(bench: Benchmark) -> dict[str, str]:
    """The child's environment: the caller's, with the benchmark's thread variables."""
    env = dict(os.environ)
    for var in THREAD_VARS:
        env.pop(var, None)
    if bench.threads is not None:
        n = (os.cpu_count() or 1) if bench.threads < 0 else bench.threads
        env.update({var: str(n) for var in THREAD_VARS})
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(ROOT), str(HERE), env.get("PYTHONPATH", "")) if p)
    return env


def _last_line(text: str) -> str:
    lines = [line.strip() for line in (text or "").splitlines() if line.strip()]
    return lines[-1][:300] if lines else "no output"


def run_benchmark(bench: Benchmark, quick: bool, timeout_s: "float | None" = None) -> list[dict[str, Any]]:
    """Run one benchmark in a child process; its rows, or one row saying why it failed.

    Parameters
    ----------
    bench
        The entry; ``bench.script`` relative to ``benchmarks/`` or absolute.
    quick
        Smaller sizes.
    timeout_s
        Wall-clock limit; default the entry's.

    Returns
    -------
    list of dict
        Rows with :data:`ROW_KEYS`; ``load`` is ``"before/after"`` (1-minute load average).
    """
    limit = timeout_s if timeout_s is not None else (bench.quick_timeout_s if quick else bench.timeout_s)
    load0 = os.getloadavg()[0]
    with tempfile.TemporaryDirectory(prefix=f"bench_{bench.name}_") as tmp:
        out = Path(tmp) / "rows.json"
        spec = {"script": str(HERE / bench.script), "function": bench.function, "quick": quick,
                "kwargs": bench.kwargs, "name": bench.name}
        argv = [sys.executable, str(Path(__file__).resolve()), "--child", json.dumps(spec), "--child-out", str(out)]
        t0 = time.perf_counter()
        # its own process group: a timeout ends the child and every process it started (e.g. `latent report`)
        proc = subprocess.Popen(argv, cwd=ROOT, env=child_env(bench), stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True, start_new_session=True)
        try:
            _, stderr = proc.communicate(timeout=limit)
            failure = None if proc.returncode == 0 else f"exit {proc.returncode}: {_last_line(stderr)}"
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.communicate()
            failure = f"timed out after {limit:.0f} s"
        except BaseException:  # e.g. Ctrl-C, which the child's own session does not receive
            os.killpg(proc.pid, signal.SIGKILL)
            raise
        wall = time.perf_counter() - t0
        rows = json.loads(out.read_text()) if failure is None and out.exists() else None
        if failure is None and rows is None:
            failure = "wrote no rows"
    load = f"{load0:.2f}/{os.getloadavg()[0]:.2f}"
    if failure is not None:
        rows = [make_row(bench.name, status=f"failed ({wall:.0f} s): {failure}")]
    for row in rows:
        row["load"] = load
    return rows


def child_main(spec_json: str, out: str) -> None:
    """In the child: import the script, call its function, write its rows as JSON."""
    spec = json.loads(spec_json)
    module_spec = importlib.util.spec_from_file_location(f"bench_{spec['name'].replace('-', '_')}", spec["script"])
    module = importlib.util.module_from_spec(module_spec)
    sys.modules[module_spec.name] = module
    module_spec.loader.exec_module(module)
    rows = getattr(module, spec["function"])(spec["quick"], **spec["kwargs"])
    clean = []
    for row in rows:
        missing = [k for k in ROW_KEYS if k not in row and k != "load"]
        if missing:
            raise ValueError(f"row of {spec['name']} lacks {missing}")
        clean.append({k: row[k] for k in ROW_KEYS if k in row})
    Path(out).write_text(json.dumps(clean, default=float))


def _num(x: float, digits: int = 2) -> str:
    if x is None or not math.isfinite(x):
        return ""
    if x != 0 and abs(x) < 10 ** -digits:
        return f"{x:.1e}"
    return f"{x:.{digits}f}"


def machine_line() -> str:
    """Machine, Python and the main libraries' versions (from their metadata: nothing is imported)."""
    from importlib.metadata import PackageNotFoundError, version

    parts = [f"{platform.machine()}, {os.cpu_count()} cores", f"Python {platform.python_version()}"]
    for dist in ("numpy", "torch", "scikit-learn", "h5py", "umap-learn", "scikit-bio"):
        try:
            parts.append(f"{dist} {version(dist)}")
        except PackageNotFoundError:
            parts.append(f"{dist} not installed")
    gpu = Path("/proc/driver/nvidia/gpus")
    count = len(list(gpu.iterdir())) if gpu.is_dir() else 0
    parts.append(f"{count} NVIDIA GPU(s) present; every benchmark runs on the CPU")
    return ", ".join(parts)


def format_table(rows: list[dict[str, Any]]) -> str:
    """The markdown table of ``rows``."""
    lines = ["| benchmark | case | latent | latent (s) | reference | reference (s) | ratio ref/latent | "
             "agreement | load before/after | status |",
             "|---|---|---|---:|---|---:|---:|---|---|---|"]
    for row in rows:
        r = {k: str(v).replace("|", "\\|") if isinstance(v, str) else v for k, v in row.items()}
        lines.append(f"| {r['benchmark']} | {r['case']} | {r['latent']} | {_num(r['latent_s'], 3)} | {r['reference']} "
                     f"| {_num(r['reference_s'], 3)} | {_num(r['ratio'])} | {r['agreement']} | {r.get('load', '')} "
                     f"| {r['status']} |")
    return "\n".join(lines)


def main(argv: "list[str] | None" = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="smaller sizes; the tol1k report is skipped")
    parser.add_argument("--out", default=None, help="also write the table (markdown) here")
    parser.add_argument("--json", default=None, help="also write the rows (JSON) here")
    parser.add_argument("--only", default=None, help=f"comma-separated names among {','.join(NAMES)}")
    parser.add_argument("--timeout", type=float, default=None, help="seconds per benchmark (default: its own)")
    parser.add_argument("--budget", type=float, default=None,
                        help=f"seconds for the whole suite (default: {FULL_BUDGET_S:g}, --quick {QUICK_BUDGET_S:g}): "
                             "each benchmark's timeout is cut to what is left; none starts with under "
                             f"{MIN_START_S:g} s left")
    parser.add_argument("--child", default=None, help=argparse.SUPPRESS)
    parser.add_argument("--child-out", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child is not None:
        child_main(args.child, args.child_out)
        return 0
    names = NAMES if args.only is None else tuple(n.strip() for n in args.only.split(",") if n.strip())
    unknown = [n for n in names if n not in NAMES]
    if unknown or not names:
        parser.error(f"--only {args.only!r}: unknown benchmark(s) {unknown}; use names among {','.join(NAMES)}")
    if args.timeout is not None and not args.timeout > 0:
        parser.error(f"--timeout {args.timeout}: must be > 0 seconds")
    budget = args.budget if args.budget is not None else (QUICK_BUDGET_S if args.quick else FULL_BUDGET_S)
    if not budget > 0:
        parser.error(f"--budget {args.budget}: must be > 0 seconds")
    started = _dt.datetime.now(_dt.timezone.utc)
    load_start = os.getloadavg()
    rows: list[dict[str, Any]] = []
    t0 = time.perf_counter()
    for bench in BENCHMARKS:
        if bench.name not in names:
            continue
        if bench.full_only and args.quick:
            row = make_row(bench.name, status="skipped: full suite only (not --quick)")
            row["load"] = ""
            rows.append(row)
            continue
        left = budget - (time.perf_counter() - t0)
        if left < MIN_START_S:
            row = make_row(bench.name, status=f"skipped: {left:.0f} s of the suite's {budget:g} s budget left")
            row["load"] = ""
            rows.append(row)
            continue
        own = args.timeout if args.timeout is not None else (bench.quick_timeout_s if args.quick else bench.timeout_s)
        print(f"running {bench.name} ...", file=sys.stderr, flush=True)
        new = run_benchmark(bench, args.quick, min(own, left))
        for r in new:
            print(f"  {r['case'] or bench.name}: ratio {_num(r['ratio'])} ({r['status']})", file=sys.stderr, flush=True)
        rows.extend(new)
    total = time.perf_counter() - t0
    load_end = os.getloadavg()
    command = "python benchmarks/run_all.py" + (" --quick" if args.quick else "") + (
        f" --only {args.only}" if args.only else "")
    header = (f"Machine: {machine_line()}.\n"
              f"Command: `{command}`, {started:%Y-%m-%d %H:%M} UTC, {total:.0f} s in all.\n"
              f"Load average (1, 5, 15 min): {load_start[0]:.2f}, {load_start[1]:.2f}, {load_start[2]:.2f} "
              f"at the start; "
              f"{load_end[0]:.2f}, {load_end[1]:.2f}, {load_end[2]:.2f} at the end.\n"
              f"ratio = reference seconds / latent seconds, both measured in the same child process.\n")
    text = header + "\n" + format_table(rows) + "\n"
    print(text)
    if args.out:
        Path(args.out).write_text(text)
    if args.json:
        record = {"command": command, "started": started.isoformat(), "seconds": total, "load_start": load_start,
                  "load_end": load_end, "machine": machine_line(), "rows": rows}
        Path(args.json).write_text(json.dumps(record, indent=1, default=float))
    return 0


if __name__ == "__main__":
    sys.exit(main())
