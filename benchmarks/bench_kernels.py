"""Benchmark: the torch kernels of latent.kernels against their numpy paths, on the same data in one run.

On a machine with a GPU the torch path runs on CUDA (what ``device="auto"`` picks there); without one it runs
torch on the CPU, which says only what the torch code costs, not what a GPU gives (the row says which).
Two kernels: the kNN neighbour search (``nearest``: 20 neighbours of every query among the references) and
the pairwise cosine distances (``pairwise_distances``). Agreement: the neighbour lists are equal and the
distances within 1e-4 (float32 on a GPU).

    .venv/bin/python benchmarks/bench_kernels.py [--queries 4000] [--references 40000] [--dim 768]

``suite_rows(quick)`` gives the rows of ``benchmarks/run_all.py``.
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch

from latent.kernels import nearest, pairwise_distances


def _time(fn, repeat: int = 2) -> tuple[float, object]:
    fn()  # warm-up (CUDA context, allocator)
    best, out = float("inf"), None
    for _ in range(repeat):
        start = time.perf_counter()
        out = fn()
        if torch.cuda.is_available():
            torch.cuda.synchronize()
        best = min(best, time.perf_counter() - start)
    return best, out


def measure(queries: int, references: int, dim: int, seed: int = 0) -> list[tuple[str, str, float, float, str]]:
    """``(kernel, case, torch seconds, numpy seconds, agreement)`` per kernel."""
    rng = np.random.default_rng(seed)
    Q = rng.normal(size=(queries, dim)).astype(np.float32)
    R = rng.normal(size=(references, dim)).astype(np.float32)
    Q /= np.linalg.norm(Q, axis=1, keepdims=True)
    R /= np.linalg.norm(R, axis=1, keepdims=True)
    dev = torch.device("cuda") if torch.cuda.is_available() else torch.device("cpu")
    where = f"torch on {torch.cuda.get_device_name(0) if dev.type == 'cuda' else 'the CPU (no GPU here)'}"
    case = f"{queries} x {references} x {dim}, float32 inputs"
    rows = []
    t_torch, (i_t, s_t) = _time(lambda: nearest(Q, R, 20, device=dev))
    t_np, (i_n, s_n) = _time(lambda: nearest(Q, R, 20, device="cpu"))
    same = float(np.mean(i_t == i_n))
    rows.append(("nearest (kNN search, 20 neighbours)", f"{case}; {where}", t_torch, t_np,
                 f"{same:.4%} of neighbour slots equal; max |sim diff| {np.abs(s_t - s_n).max():.1e}"))
    sub = min(queries, 2000)
    t_torch, D_t = _time(lambda: pairwise_distances(Q[:sub], R[:sub * 5], device=dev))
    t_np, D_n = _time(lambda: pairwise_distances(Q[:sub], R[:sub * 5], device="cpu"))
    diff = float(np.abs(D_t - D_n).max())
    rows.append(("pairwise cosine distances", f"{sub} x {sub * 5} x {dim}; {where}", t_torch, t_np,
                 f"{'within' if diff <= 1e-4 else 'NOT within'} 1e-4 (max diff {diff:.1e})"))
    return rows


def suite_rows(quick: bool = False) -> list[dict]:
    """Rows of ``benchmarks/run_all.py`` (ratio = numpy seconds / torch seconds)."""
    from run_all import make_row

    sizes = (500, 5000, 256) if quick else (2000, 40000, 768)
    return [make_row("kernels", case, f"latent.kernels {kernel}, torch", t, "the same kernel, numpy", n, agree)
            for kernel, case, t, n, agree in measure(*sizes)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--queries", type=int, default=4000)
    parser.add_argument("--references", type=int, default=40000)
    parser.add_argument("--dim", type=int, default=768)
    args = parser.parse_args()
    print("| kernel | case | torch (s) | numpy (s) | numpy / torch | agreement |")
    print("|---|---|---:|---:|---:|---|")
    for kernel, case, t, n, agree in measure(args.queries, args.references, args.dim):
        print(f"| {kernel} | {case} | {t:.3f} | {n:.3f} | {n / t:.2f} | {agree} |")


if __name__ == "__main__":
    main()
