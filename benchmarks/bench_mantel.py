"""Benchmark: the Mantel permutation test on 2,000 species against scikit-bio's.

Both tests run on the same matrices: taxonomic distances (LCA height) of a generated 2,000-species
taxonomy and noisy embedding distances (cosine distances of species vectors planted on that taxonomy
by ``make_hierarchical``, signal 0.3 plus unit noise; and signal 0, no structure, where the p-value is
not at its floor). ``skbio.stats.distance.mantel`` and
``latent.probes.alignment.mantel`` get the same seed, so they draw the same permutations: their r must
agree to ~1e-12 and their p-values exactly. Both are run once to compile their numba kernels, then
timed (best of ``--repeat``).

    .venv/bin/python benchmarks/bench_mantel.py [--species 2000] [--permutations 999] [--numpy]

``suite_rows(quick)`` gives the rows of ``benchmarks/run_all.py``.
"""

from __future__ import annotations

import argparse
import os
import platform
import time

import numpy as np

from latent.probes.alignment import mantel
from latent.probes.base import pairwise_distances
from latent.synthetic import make_hierarchical
from latent.taxonomy import Taxonomy


def generated_taxonomy(n_species: int, seed: int = 0) -> Taxonomy:
    """``n_species`` species in about 3.5 species per genus, 6 genera per family, 5 families per order..."""
    rng = np.random.default_rng(seed)
    genus = np.sort(rng.integers(0, max(1, int(n_species / 3.5)), n_species))
    family, order = genus // 6, genus // 30
    cls, phylum, kingdom = order // 6, order // 12, order // 24
    rows = [[f"K{k}", f"P{p}", f"C{c}", f"O{o}", f"F{f}", f"G{g}", f"G{g} s{i}"]
            for i, (k, p, c, o, f, g) in enumerate(zip(kingdom, phylum, cls, order, family, genus))]
    return Taxonomy.from_lineages(rows)


def best_of(fn, repeat: int) -> tuple[float, object]:
    times, out = [], None
    for _ in range(repeat):
        start = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - start)
    return min(times), out


def suite_rows(quick: bool = False) -> list[dict]:
    """Rows of ``benchmarks/run_all.py``: latent's Mantel against scikit-bio's, same seed and permutations.

    Full: 2,000 species, 999 permutations, signal 0.3, Pearson and Spearman, best of 2; quick: 500
    species, 199 permutations, Pearson, one timed run. Agreement: r within 1e-12 and p equal.
    """
    from skbio.stats.distance import mantel as skbio_mantel

    from run_all import make_row

    species, permutations, methods, repeat = (500, 199, ("pearson",), 1) if quick else (
        2000, 999, ("pearson", "spearman"), 2)
    tax = generated_taxonomy(species, 0)
    T = tax.distances().astype(np.float64)
    synth = make_hierarchical(tax, per_species=1, dim=64, signal=0.3, noise=1.0, seed=0)
    D = pairwise_distances(synth.embeddings.astype(np.float64), metric="cosine")
    rows = []
    for method in methods:
        mantel(T[:50, :50], D[:50, :50], method=method, permutations=3)  # compile both numba kernels
        skbio_mantel(T[:50, :50], D[:50, :50], method=method, permutations=3)
        t_ref, (r_ref, p_ref, _) = best_of(lambda: skbio_mantel(T, D, method=method, permutations=permutations,
                                                                alternative="greater",
                                                                seed=np.random.default_rng(0)), repeat)
        t_ours, res = best_of(lambda: mantel(T, D, method=method, permutations=permutations, seed=0,
                                             alternative="greater"), repeat)
        same = abs(r_ref - res.r) <= 1e-12 and p_ref == res.p_value
        rows.append(make_row("mantel", f"{species} species, {method}, {permutations} permutations",
                             "latent mantel (numba)", t_ours, "skbio.stats.distance.mantel", t_ref,
                             (f"equal (r differs by {abs(r_ref - res.r):.0e}, p {res.p_value:.4f})" if same else
                              f"NOT equal (r {res.r:.6f} vs {r_ref:.6f}, p {res.p_value} vs {p_ref})")))
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--species", type=int, default=2000)
    parser.add_argument("--permutations", type=int, default=999)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--signals", type=float, nargs="+", default=[0.3, 0.0],
                        help="planted signal of the embedding (0: no taxonomic structure, p not extreme)")
    parser.add_argument("--numpy", action="store_true", help="also time latent's NumPy fallback (slow)")
    args = parser.parse_args()

    import numba
    import skbio
    from skbio.stats.distance import mantel as skbio_mantel

    tax = generated_taxonomy(args.species, args.seed)
    T = tax.distances().astype(np.float64)
    S = T.shape[0]
    print(f"machine: {platform.machine()}, {os.cpu_count()} cores, python {platform.python_version()}, "
          f"numpy {np.__version__}, numba {numba.__version__}, scikit-bio {skbio.__version__}")
    print(f"species: {S} ({S * (S - 1) // 2} pairs), taxonomic distance levels: "
          f"{sorted(set(np.unique(T[np.triu_indices(S, 1)]).astype(int).tolist()))}, permutations: {args.permutations}")
    rows = []
    for signal in args.signals:
        synth = make_hierarchical(tax, per_species=1, dim=64, signal=signal, noise=1.0, seed=args.seed)
        D = pairwise_distances(synth.embeddings.astype(np.float64), metric="cosine")
        for method in ("pearson", "spearman"):
            def ours(engine: str = "auto"):
                return mantel(T, D, method=method, permutations=args.permutations, seed=args.seed,
                              alternative="greater", engine=engine)

            def ref():
                return skbio_mantel(T, D, method=method, permutations=args.permutations, alternative="greater",
                                    seed=np.random.default_rng(args.seed))

            # compile both numba kernels before timing
            mantel(T[:50, :50], D[:50, :50], method=method, permutations=3)
            skbio_mantel(T[:50, :50], D[:50, :50], method=method, permutations=3)
            t_ref, (r_ref, p_ref, _) = best_of(ref, args.repeat)
            t_ours, res = best_of(ours, args.repeat)
            rows.append((signal, method, "numba", t_ref, t_ours, r_ref, res.r, p_ref, res.p_value))
            if args.numpy:
                t_np, res_np = best_of(lambda: ours("numpy"), 1)
                rows.append((signal, method, "numpy", t_ref, t_np, r_ref, res_np.r, p_ref, res_np.p_value))
    print("| signal | method | latent engine | scikit-bio (s) | latent (s) | ratio skbio/latent | r skbio | r latent "
          "| abs diff r | p skbio | p latent |")
    print("|---:|---|---|---:|---:|---:|---:|---:|---:|---:|---:|")
    for signal, method, engine, t_ref, t_ours, r_ref, r_ours, p_ref, p_ours in rows:
        print(f"| {signal:g} | {method} | {engine} | {t_ref:.2f} | {t_ours:.2f} | {t_ref / t_ours:.1f} | {r_ref:.6f} | "
              f"{r_ours:.6f} | {abs(r_ref - r_ours):.1e} | {p_ref:.4f} | {p_ours:.4f} |")


if __name__ == "__main__":
    main()
