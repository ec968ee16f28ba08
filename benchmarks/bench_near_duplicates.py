"""Near duplicates by embedding cosine (`latent.audit.duplicates.near_duplicates`) against the n x n matrix.

Reference, in the same run: brute force on 10,000 rows (the full similarity matrix, thresholded), which
must give the same pairs; then 100,000 x 768 rows, where the n x n matrix (40 GB in float32) cannot be
held, with 50 planted near copies: time and the process's peak resident memory.

    OMP_NUM_THREADS=2 .venv/bin/python benchmarks/bench_near_duplicates.py

``suite_rows(quick)`` gives the rows of ``benchmarks/run_all.py`` (the 10,000-row comparison only).
"""

from __future__ import annotations

import resource
import time

import numpy as np

from latent.audit.duplicates import near_duplicates


def planted(n: int, d: int, k: int, seed: int = 0) -> tuple[np.ndarray, set]:
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((n, d), dtype=np.float32)
    rows = rng.choice(n, size=2 * k, replace=False).reshape(k, 2)
    for a, b in rows:
        X[b] = X[a] + np.float32(1e-2) * rng.standard_normal(d, dtype=np.float32)
    return X, set(map(tuple, np.sort(rows, 1).tolist()))


def suite_rows(quick: bool = False) -> list[dict]:
    """Rows of ``benchmarks/run_all.py``: ``near_duplicates`` (blocks) against the n x n similarity matrix,
    10,000 x 768 with 20 planted near copies (quick: 4,000 x 256, 10); agreement: the same pairs as brute
    force and as planted."""
    from run_all import make_row

    n, d, k = (4000, 256, 10) if quick else (10_000, 768, 20)
    X, truth = planted(n, d, k)
    t = time.perf_counter()
    U = X / np.linalg.norm(X, axis=1, keepdims=True)
    S = U @ U.T
    i, j = np.nonzero(np.triu(S >= 0.95, 1))
    brute = time.perf_counter() - t
    del S
    t = time.perf_counter()
    pairs = near_duplicates(X, np.arange(len(X)), threshold=0.95)
    blocked = time.perf_counter() - t
    same = set(zip(i.tolist(), j.tolist())) == set(zip(pairs.row_a, pairs.row_b)) == truth
    return [make_row("near-duplicates", f"{n:,} x {d}, {k} planted near copies, cosine >= 0.95",
                     "near_duplicates (row blocks)", blocked, "n x n similarity matrix, thresholded", brute,
                     f"{'same' if same else 'NOT the same'} pairs as brute force and as planted ({len(pairs)})")]


def main() -> None:
    X, truth = planted(10_000, 768, 20)
    t = time.perf_counter()
    U = X / np.linalg.norm(X, axis=1, keepdims=True)
    S = U @ U.T
    i, j = np.nonzero(np.triu(S >= 0.95, 1))
    brute = time.perf_counter() - t
    del S
    t = time.perf_counter()
    pairs = near_duplicates(X, np.arange(len(X)), threshold=0.95)
    blocked = time.perf_counter() - t
    same = set(zip(i.tolist(), j.tolist())) == set(zip(pairs.row_a, pairs.row_b)) == truth
    print(f"10,000 x 768: n x n matrix {brute:.2f} s, blockwise {blocked:.2f} s (ratio {blocked / brute:.2f}); "
          f"same pairs as brute force and as planted: {same}")
    X, truth = planted(100_000, 768, 50)
    t = time.perf_counter()
    pairs = near_duplicates(X, np.arange(len(X)), threshold=0.95)
    seconds = time.perf_counter() - t
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"100,000 x 768: blockwise {seconds:.1f} s, {len(pairs)} pairs, planted found: "
          f"{set(zip(pairs.row_a, pairs.row_b)) == truth}; peak RSS {peak:.0f} MB (input {X.nbytes / 2**20:.0f} MB; "
          f"an n x n float32 matrix would be {100_000 ** 2 * 4 / 2**30:.0f} GB)")


if __name__ == "__main__":
    main()
