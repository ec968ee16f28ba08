"""Benchmark: the UMAP projection of the report's figures against PCA, the cheap reference.

``latent.projection.project(X, "umap")`` (umap-learn, single-threaded with a seed, as the report runs it)
and ``project(X, "pca")`` (best of 3, after a first call that imports scikit-learn) on the same
L2-normalised planted embeddings. UMAP's first call in a process
also compiles its numba kernels: timed apart ("first call") from a second call on the same data. Both
projections are pictures, not measurements, so there is no agreement to check; the second UMAP call must
give the same coordinates as the first (seeded), which is checked.

    .venv/bin/python benchmarks/bench_umap.py [--images 2000] [--dim 128]
"""

from __future__ import annotations

import argparse
import os
import platform
import time

import numpy as np

from latent.projection import project
from latent.synthetic import make_hierarchical


def make_points(images: int, dim: int, seed: int = 0) -> np.ndarray:
    """``(images, dim)`` unit rows: planted embeddings on the built-in taxonomy (47 species)."""
    per_species = max(1, images // 47)
    X = make_hierarchical(None, per_species=per_species, dim=dim, signal=0.3, seed=seed).embeddings[:images]
    return (X / np.linalg.norm(X, axis=1, keepdims=True)).astype(np.float64)


def run(images: int, dim: int) -> dict:
    """Seconds of PCA, UMAP's first call and UMAP's second call; whether the two UMAP calls agree."""
    X = make_points(images, dim)
    out = {"images": len(X), "dim": dim}
    project(X[:50], "pca")  # imports scikit-learn's PCA: not part of the time
    out["pca"] = np.inf
    for _ in range(3):  # best of 3
        t0 = time.perf_counter()
        project(X, "pca")
        out["pca"] = min(out["pca"], time.perf_counter() - t0)
    coords = []
    for key in ("umap_first", "umap_second"):
        t0 = time.perf_counter()
        coords.append(project(X, "umap", seed=0))
        out[key] = time.perf_counter() - t0
    out["same"] = bool(np.allclose(coords[0], coords[1], rtol=0, atol=1e-9))
    return out


def suite_rows(quick: bool = False) -> list[dict]:
    """Rows of ``benchmarks/run_all.py``: UMAP's first and second call against PCA (ratio PCA / UMAP).

    Full: 2,000 x 128; quick: 500 x 64.
    """
    import umap

    from run_all import make_row

    r = run(500, 64) if quick else run(2000, 128)
    case = f"{r['images']} x {r['dim']} unit rows, umap-learn {umap.__version__}"
    same = "n/a (a picture); second call equal to the first" if r["same"] else "n/a; second call DIFFERS from the first"
    return [make_row("umap", f"{case}; first call (numba compilation included)", "project(X, 'umap')",
                     r["umap_first"], "project(X, 'pca')", r["pca"], "n/a (a picture, not a measurement)"),
            make_row("umap", f"{case}; second call", "project(X, 'umap')", r["umap_second"], "project(X, 'pca')",
                     r["pca"], same)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=2000)
    parser.add_argument("--dim", type=int, default=128)
    args = parser.parse_args()
    print(f"machine: {platform.machine()}, {os.cpu_count()} cores, python {platform.python_version()}")
    r = run(args.images, args.dim)
    print(f"{r['images']} x {r['dim']}: PCA {r['pca']:.3f} s; UMAP first call {r['umap_first']:.1f} s, "
          f"second {r['umap_second']:.1f} s (same coordinates: {r['same']})")


if __name__ == "__main__":
    main()
