"""Benchmark: the clusters probe's silhouette at every rank against ``sklearn.metrics.silhouette_score``.

latent (``latent.probes.clusters.ClusterSums``) computes the distances of every image to every species
once (the sums ``Dl``), then the silhouette of any rank, and of any permuted labelling of the species, from
those sums. The reference computes ``silhouette_score(X, labels, metric="cosine")`` for each rank and
labelling from the embeddings. Two cases, both timed in the same run:

* observed: the six ranks kingdom..genus of the true labelling (latent: building the sums + the six values);
* null: ``P`` permuted labellings of the species x six ranks (latent: the sums already built, as in the
  probe's permutation null).

Every value must equal scikit-learn's to 1e-9.

    .venv/bin/python benchmarks/bench_silhouette.py [--species 300] [--per-species 10] [--dim 128]
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import time
from pathlib import Path

import numpy as np
from sklearn.metrics import silhouette_score

from latent.probes.base import ProbeData
from latent.probes.clusters import ClusterSums
from latent.synthetic import make_hierarchical

RANKS = list(range(6))  # kingdom .. genus (the species rank has no null)
TOLERANCE = 1e-9
sys.path.insert(0, str(Path(__file__).resolve().parent))  # bench_linear's generated taxonomy


def make_data(species: int, per_species: int, dim: int, seed: int = 0) -> ProbeData:
    """Probe data of ``species x per_species`` planted embeddings on the generated 7-rank taxonomy."""
    from bench_linear import generated_taxonomy

    synth = make_hierarchical(generated_taxonomy(species, seed), per_species=per_species, dim=dim, signal=0.5,
                              seed=seed)
    return ProbeData.from_arrays(synth.embeddings, synth.taxonomy)


def latent_silhouettes(data: ProbeData, perms: list) -> tuple[float, float, dict]:
    """Seconds to build the sums and the observed six values, seconds of the permuted labellings; values."""
    t0 = time.perf_counter()
    sums = ClusterSums(data, "cosine", np.argsort(data.species, kind="stable"))
    values = {("observed", r): v for (r, k), v in sums.silhouettes(None, RANKS).items() if k == "silhouette"}
    observed = time.perf_counter() - t0
    t0 = time.perf_counter()
    for i, perm in enumerate(perms):
        values.update({(i, r): v for (r, k), v in sums.silhouettes(perm, RANKS).items() if k == "silhouette"})
    return observed, time.perf_counter() - t0, values


def sklearn_silhouettes(data: ProbeData, perms: list) -> tuple[float, float, dict]:
    """The same values from ``sklearn.metrics.silhouette_score`` (cosine), timed the same way."""
    X = data.X.astype(np.float64)
    values = {}

    def labelling(key, codes, named) -> None:
        for r in RANKS:
            rows = named[data.species, r]
            values[(key, r)] = silhouette_score(X[rows], codes[data.species, r][rows], metric="cosine")

    t0 = time.perf_counter()
    labelling("observed", data.codes, data.named)
    observed = time.perf_counter() - t0
    t0 = time.perf_counter()
    for i, perm in enumerate(perms):
        labelling(i, data.permuted_codes(perm), data.permuted_named(perm))
    return observed, time.perf_counter() - t0, values


def compare(ours: dict, ref: dict) -> float:
    """Largest absolute difference over the keys of ``ref`` (inf if a key is missing)."""
    return max(abs(ours[k] - v) if k in ours else np.inf for k, v in ref.items())


def run(species: int, per_species: int, dim: int, permutations: int, seed: int = 0) -> dict:
    """Both implementations on the same data and labellings; times, values and their largest difference."""
    data = make_data(species, per_species, dim, seed)
    rng = np.random.default_rng(seed)
    perms = [rng.permutation(data.n_species) for _ in range(permutations)]
    l_obs, l_null, ours = latent_silhouettes(data, perms)
    s_obs, s_null, ref = sklearn_silhouettes(data, perms)
    return {"images": len(data.X), "species": data.n_species, "dim": dim, "permutations": permutations,
            "latent_observed": l_obs, "latent_null": l_null, "sklearn_observed": s_obs, "sklearn_null": s_null,
            "max_diff": compare(ours, ref), "genus": ref[("observed", 5)]}


def suite_rows(quick: bool = False) -> list[dict]:
    """Rows of ``benchmarks/run_all.py``: observed (6 ranks) and the null (permutations x 6 ranks).

    Full: 300 species x 10 images, 128-d, 10 permutations; quick: 100 x 6, 64-d, 5 permutations.
    """
    from run_all import make_row

    r = run(100, 6, 64, 5) if quick else run(300, 10, 128, 10)
    agree = (f"{'equal' if r['max_diff'] <= TOLERANCE else 'NOT equal'} to 1e-9 (max diff {r['max_diff']:.0e})")
    case = f"{r['images']} images, {r['species']} species, {r['dim']}-d, cosine"
    return [make_row("silhouette", f"{case}; observed, 6 ranks", "ClusterSums + silhouettes (from sums)",
                     r["latent_observed"], "sklearn silhouette_score x 6", r["sklearn_observed"], agree),
            make_row("silhouette", f"{case}; null, {r['permutations']} permutations x 6 ranks",
                     "silhouettes(perm) from the same sums", r["latent_null"],
                     f"sklearn silhouette_score x {6 * r['permutations']}", r["sklearn_null"], agree)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--species", type=int, default=300)
    parser.add_argument("--per-species", type=int, default=10)
    parser.add_argument("--dim", type=int, default=128)
    parser.add_argument("--permutations", type=int, default=10)
    args = parser.parse_args()
    print(f"machine: {platform.machine()}, {os.cpu_count()} cores, python {platform.python_version()}")
    r = run(args.species, args.per_species, args.dim, args.permutations)
    print(f"{r['images']} images, {r['species']} species, {r['dim']}-d; genus silhouette {r['genus']:.4f}; "
          f"max abs difference from scikit-learn {r['max_diff']:.1e}")
    print("| case | latent (s) | scikit-learn (s) | ratio ref/latent |")
    print("|---|---:|---:|---:|")
    for key, label in (("observed", "observed, 6 ranks"), ("null", f"{args.permutations} permutations x 6 ranks")):
        print(f"| {label} | {r['latent_' + key]:.3f} | {r['sklearn_' + key]:.3f} | "
              f"{r['sklearn_' + key] / r['latent_' + key]:.1f} |")


if __name__ == "__main__":
    main()
