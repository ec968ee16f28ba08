"""Benchmark: reading scattered rows from an embedding cache.

Compares ``EmbeddingCache.read(rows)`` (sorted, grouped block reads) with h5py fancy indexing of the
same rows (the reference: ``dataset[sorted_rows]``), in the same run, on a freshly written cache of
``--rows`` x ``--dim`` float16 rows. Checks equality and reports best-of-3 times and the ratio.

    .venv/bin/python benchmarks/bench_cache.py [--rows 200000] [--dim 768] [--fraction 0.1]

``suite_rows(quick)`` gives the rows of ``benchmarks/run_all.py`` (smaller sizes).
"""

from __future__ import annotations

import argparse
import platform
import tempfile
import time
from pathlib import Path

import h5py
import numpy as np

from latent.cache import CacheWriter, Provenance, open_cache


def write_cache(path: Path, prov: Provenance, n_rows: int, dim: int, rng: np.random.Generator) -> None:
    """Write ``n_rows`` x ``dim`` standard-normal float16 rows, committed every 8,192 rows."""
    with CacheWriter.open(path, prov) as writer:
        for s in range(0, n_rows, 8192):
            n = min(8192, n_rows - s)
            writer.append([f"img{i}" for i in range(s, s + n)], rng.standard_normal((n, dim)).astype(np.float16))


def time_reads(path: Path, rows: np.ndarray, repeat: int = 3) -> tuple[float, float, bool]:
    """Best-of-``repeat`` seconds of ``cache.read(rows)`` and of h5py fancy indexing; whether equal."""
    t_ours, t_ref = np.inf, np.inf
    for _ in range(repeat):  # best of 3: the first large read of a process pays for page faults
        with open_cache(path) as cache:
            start = time.perf_counter()
            ours = cache.read(rows, dtype=None)
            t_ours = min(t_ours, time.perf_counter() - start)
        with h5py.File(path, "r") as f:
            start = time.perf_counter()
            ref = f["embeddings"][rows]
            t_ref = min(t_ref, time.perf_counter() - start)
    return t_ours, t_ref, bool(np.array_equal(ours, ref))


def suite_rows(quick: bool = False) -> list[dict]:
    """Rows of ``benchmarks/run_all.py``: scattered reads at two fractions, latent vs h5py fancy indexing.

    Full: a 100,000 x 768 float16 cache, 1% and 10% of its rows; quick: 20,000 x 256, 10%.
    """
    from run_all import make_row

    n_rows, dim, fractions = (20_000, 256, [0.1]) if quick else (100_000, 768, [0.01, 0.1])
    rng = np.random.default_rng(0)
    out = []
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "bench.h5"
        prov = Provenance(model="bench", pretrained="none", preprocess={}, embed_dim=dim, normalized=False,
                          store_dtype="float16")
        write_cache(path, prov, n_rows, dim, rng)
        for fraction in fractions:
            k = max(1, int(n_rows * fraction))
            rows = np.sort(rng.choice(n_rows, size=k, replace=False))
            t_ours, t_ref, equal = time_reads(path, rows)
            out.append(make_row("cache", f"{k:,} of {n_rows:,} x {dim} float16 rows, sorted, best of 3",
                                "EmbeddingCache.read(rows)", t_ours, "h5py dataset[rows]", t_ref,
                                "equal" if equal else "NOT equal"))
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=200_000)
    parser.add_argument("--dim", type=int, default=768)
    parser.add_argument("--fraction", type=float, nargs="+", default=[0.001, 0.01, 0.1, 0.5])
    args = parser.parse_args()
    rng = np.random.default_rng(0)
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "bench.h5"
        prov = Provenance(model="bench", pretrained="none", preprocess={}, embed_dim=args.dim, normalized=False,
                          store_dtype="float16")
        start = time.perf_counter()
        write_cache(path, prov, args.rows, args.dim, rng)
        write = time.perf_counter() - start
        size = path.stat().st_size / 2**20
        print(f"machine: {platform.machine()}, python {platform.python_version()}, h5py {h5py.__version__}")
        print(f"wrote {args.rows} x {args.dim} float16 rows ({size:.0f} MiB) in {write:.1f} s "
              f"({args.rows / write:,.0f} rows/s, committed every 8192 rows)")
        print("| rows read | fraction | latent read (s) | h5py fancy index (s) | ratio ref/latent | equal |")
        print("|---:|---:|---:|---:|---:|:---:|")
        for fraction in args.fraction:
            k = max(1, int(args.rows * fraction))
            rows = np.sort(rng.choice(args.rows, size=k, replace=False))
            t_ours, t_ref, equal = time_reads(path, rows)
            print(f"| {k} | {fraction:g} | {t_ours:.3f} | {t_ref:.3f} | {t_ref / t_ours:.1f} | {equal} |")


if __name__ == "__main__":
    main()
