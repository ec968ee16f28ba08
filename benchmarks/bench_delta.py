"""Benchmark: Gromov delta with one base point (``latent.hyperbolic.gromov_delta(method="base_point")``).

Data: ``n`` Gaussian points in 64 dimensions (seeded), Euclidean distances (the time of the (max,min)
product does not depend on the values). Each size runs in a fresh subprocess so that its memory peak
is its own: the table gives the process's peak resident memory (``ru_maxrss``), the part of it added
by the delta computation (peak minus the resident memory just before the call, with the ``(n, n)``
float64 distance matrix already built) and, on a GPU, ``torch.cuda.max_memory_allocated``.

Reference: Khrulkov et al.'s formula with the whole ``(n, n, n)`` tensor in numpy (float32,
``4 n^3`` bytes: 0.5 GB at n = 500, 4 GB at 1,000), run at the sizes up to ``--reference-max``; the
table gives its time, the ratio and whether the two values agree (to 1e-6 of the diameter).

    .venv/bin/python benchmarks/bench_delta.py                          # n = 500 1000 2000 4000, CPU
    .venv/bin/python benchmarks/bench_delta.py --sizes 500 1000 --device cuda

``suite_rows(quick)`` gives the rows of ``benchmarks/run_all.py`` (n = 500, the reference's size).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import time

import numpy as np


def rss_bytes() -> int:
    with open("/proc/self/statm") as fh:
        return int(fh.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def child(n: int, device: str, dtype: str, reference: bool, seed: int) -> dict:
    import torch

    from latent.hyperbolic import gromov_delta, gromov_products

    X = np.random.default_rng(seed).normal(size=(n, 64))
    sq = (X * X).sum(1)
    D = np.sqrt(np.maximum(sq[:, None] + sq[None, :] - 2 * X @ X.T, 0))
    np.fill_diagonal(D, 0)
    D = (D + D.T) / 2
    gromov_delta(D[:50, :50], "base_point", device=device, dtype=dtype)  # warm-up (imports, kernels)
    if device.startswith("cuda"):
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    before = rss_bytes()
    t0 = time.perf_counter()
    res = gromov_delta(D, "base_point", base_point=0, device=device, dtype=dtype)
    if device.startswith("cuda"):
        torch.cuda.synchronize()
    seconds = time.perf_counter() - t0
    out = {"n": n, "seconds": seconds, "delta": res.delta, "delta_rel": res.delta_rel, "diameter": res.diameter,
           "rss_before": before, "peak_rss": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024,
           "gpu_peak": torch.cuda.max_memory_allocated() if device.startswith("cuda") else 0,
           "threads": torch.get_num_threads()}
    if reference:
        t0 = time.perf_counter()
        G = gromov_products(D, 0).astype(np.float32)
        ref = float(np.max(np.max(np.minimum(G[:, :, None], G[None, :, :]), axis=1) - G))
        out["ref_seconds"] = time.perf_counter() - t0
        out["ref_delta"] = ref
    return out


def suite_rows(quick: bool = False) -> list[dict]:
    """Rows of ``benchmarks/run_all.py``: ``gromov_delta(D, "base_point")`` (best of 3, after a warm-up) against
    the ``(n, n, n)`` numpy reference (one run) at n = 500, CPU, float32; agreement to 1e-6 of the diameter.

    n = 500 also under ``quick`` (the reference holds 0.5 GB, ~1 s).
    """
    from latent.hyperbolic import gromov_delta, gromov_products
    from run_all import make_row

    n = 500
    X = np.random.default_rng(0).normal(size=(n, 64))
    sq = (X * X).sum(1)
    D = np.sqrt(np.maximum(sq[:, None] + sq[None, :] - 2 * X @ X.T, 0))
    np.fill_diagonal(D, 0)
    D = (D + D.T) / 2
    gromov_delta(D[:50, :50], "base_point", device="cpu")  # warm-up (imports, kernels)
    seconds = np.inf
    for _ in range(3):
        t0 = time.perf_counter()
        res = gromov_delta(D, "base_point", base_point=0, device="cpu", dtype="float32")
        seconds = min(seconds, time.perf_counter() - t0)
    t0 = time.perf_counter()
    G = gromov_products(D, 0).astype(np.float32)
    ref = float(np.max(np.max(np.minimum(G[:, :, None], G[None, :, :]), axis=1) - G))
    ref_seconds = time.perf_counter() - t0
    diff = abs(ref - res.delta)
    ok = diff <= 1e-6 * res.diameter
    return [make_row("delta", f"n = {n} Gaussian points in 64-d, base point 0, float32, best of 3",
                     "gromov_delta base_point ((max,min) product in blocks)", seconds,
                     "(n, n, n) tensor in numpy (Khrulkov et al.), one run", ref_seconds,
                     f"{'within' if ok else 'NOT within'} 1e-6 of the diameter (diff {diff:.1e}, "
                     f"delta {res.delta:.4g})")]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", nargs="+", type=int, default=[500, 1000, 2000, 4000])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--dtype", default="float32", choices=["float32", "float64"])
    parser.add_argument("--reference-max", type=int, default=500, help="largest n for the n^3 numpy reference")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", default=None, help="write the raw results here")
    parser.add_argument("--child", type=int, default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child is not None:
        print(json.dumps(child(args.child, args.device, args.dtype, args.child <= args.reference_max, args.seed)))
        return

    import torch

    print(f"machine: {platform.machine()} {os.cpu_count()} cores, python {platform.python_version()}, "
          f"torch {torch.__version__}, device {args.device}"
          + (f" ({torch.cuda.get_device_name(0)})" if args.device.startswith("cuda") else "")
          + f", dtype {args.dtype}; load average at start {os.getloadavg()[0]:.2f}")
    results = []
    for n in args.sizes:
        load = os.getloadavg()[0]
        cmd = [sys.executable, __file__, "--child", str(n), "--device", args.device, "--dtype", args.dtype,
               "--reference-max", str(args.reference_max), "--seed", str(args.seed)]
        proc = subprocess.run(cmd, capture_output=True, text=True, check=True)
        r = json.loads(proc.stdout.strip().splitlines()[-1])
        r["load"] = load
        results.append(r)
        print(f"  n={n}: {r['seconds']:.2f}s, delta {r['delta']:.6g} (load average {load:.2f} before)", flush=True)
    print()
    mib = 1 / 2**20
    gpu = args.device.startswith("cuda")
    print("| n | base_point (s) | peak RSS (MiB) | added by delta (MiB) | "
          + ("GPU peak (MiB) | " if gpu else "") + "n^3 reference (s) | ratio ref/latent | equal | delta_rel |")
    print("|---:|---:|---:|---:|" + ("---:|" if gpu else "") + "---:|---:|:---:|---:|")
    for r in results:
        has_ref = "ref_seconds" in r
        ref_t = f"{r['ref_seconds']:.2f}" if has_ref else f"not run ({4 * r['n'] ** 3 / 2**30:.1f} GiB)"
        ratio = f"{r['ref_seconds'] / r['seconds']:.1f}" if has_ref else ""
        equal = str(abs(r["ref_delta"] - r["delta"]) <= 1e-6 * r["diameter"]) if has_ref else ""
        print(f"| {r['n']} | {r['seconds']:.2f} | {r['peak_rss'] * mib:.0f} | "
              f"{max(0, r['peak_rss'] - r['rss_before']) * mib:.0f} | "
              + (f"{r['gpu_peak'] * mib:.0f} | " if gpu else "")
              + f"{ref_t} | {ratio} | {equal} | {r['delta_rel']:.4f} |")
    if len(results) >= 2:
        n = np.log([r["n"] for r in results])
        t = np.log([r["seconds"] for r in results])
        print(f"\ngrowth: time ~ n^{np.polyfit(n, t, 1)[0]:.2f} over n = {results[0]['n']}..{results[-1]['n']} "
              f"(O(n^3) expected); torch threads {results[0]['threads']}")
    if args.json:
        with open(args.json, "w") as fh:
            json.dump(results, fh, indent=1)


if __name__ == "__main__":
    main()
