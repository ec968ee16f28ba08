"""Benchmark: the species x species taxonomic distance matrix.

Compares ``Taxonomy.distances()`` with an independent reference computed in the same run: SciPy's
``cdist(codes, codes, "hamming") * 7`` on the lineage codes (the number of ranks at which two lineages
differ equals the LCA height, because identity is by lineage). Checks equality, reports times and ratios.

    .venv/bin/python benchmarks/bench_taxonomy.py [--sizes 1000 5000 10000]

``suite_rows(quick)`` gives the rows of ``benchmarks/run_all.py``.
"""

from __future__ import annotations

import argparse
import platform
import time

import numpy as np
from scipy.spatial.distance import cdist

from latent.taxonomy import Taxonomy


def random_tree(n_species: int, seed: int = 0) -> Taxonomy:
    """A taxonomy of ``n_species`` species with realistic branching (about 3.5 species per genus)."""
    rng = np.random.default_rng(seed)
    genus = rng.integers(0, max(1, int(n_species / 3.5)), n_species)
    family, order = genus // 6, genus // 30
    cls, phylum, kingdom = order // 6, order // 24, order // 48
    rows = [
        [f"K{k}", f"P{p}", f"C{c}", f"O{o}", f"F{f}", f"G{g}", f"G{g} s{i}"]
        for i, (k, p, c, o, f, g) in enumerate(zip(kingdom, phylum, cls, order, family, genus))
    ]
    return Taxonomy.from_lineages(rows)


def best_of(fn, repeat: int = 3) -> float:
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times)


def suite_rows(quick: bool = False) -> list[dict]:
    """Rows of ``benchmarks/run_all.py``: ``Taxonomy.distances()`` (best of 3) against SciPy's ``cdist``
    (best of 3) at 10,000 species (quick: 2,000); agreement: every entry equal."""
    from run_all import make_row

    n = 2000 if quick else 10000
    tax = random_tree(n)
    codes = tax.species_codes
    equal = bool(np.array_equal(tax.distances(), np.rint(cdist(codes, codes, "hamming") * 7).astype(np.uint8)))
    t_ours = best_of(tax.distances)
    t_ref = best_of(lambda: cdist(codes, codes, "hamming"))
    return [make_row("taxonomy", f"{tax.n_species} species x {tax.n_species} LCA heights", "Taxonomy.distances()",
                     t_ours, "scipy cdist(codes, codes, 'hamming') * 7", t_ref,
                     "equal (every entry)" if equal else "NOT equal")]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[1000, 5000, 10000])
    args = parser.parse_args()
    print(f"machine: {platform.processor() or platform.machine()}, python {platform.python_version()}")
    print("| species | build taxonomy (s) | latent distances (s) | scipy cdist reference (s) | ratio ref/latent | equal |")
    print("|---:|---:|---:|---:|---:|:---:|")
    for n in args.sizes:
        start = time.perf_counter()
        tax = random_tree(n)
        build = time.perf_counter() - start
        codes = tax.species_codes
        ours = tax.distances()
        ref = np.rint(cdist(codes, codes, "hamming") * 7).astype(np.uint8)
        equal = bool(np.array_equal(ours, ref))
        t_ours = best_of(tax.distances)
        t_ref = best_of(lambda: cdist(codes, codes, "hamming"), repeat=1 if n > 5000 else 3)
        print(f"| {tax.n_species} | {build:.2f} | {t_ours:.2f} | {t_ref:.2f} | {t_ref / t_ours:.1f} | {equal} |")


if __name__ == "__main__":
    main()
