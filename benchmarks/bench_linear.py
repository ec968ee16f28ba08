"""Benchmark: the 7-rank linear-probe sweep, latent's torch L-BFGS against scikit-learn's lbfgs.

Data: ``latent.synthetic.make_hierarchical`` on a generated taxonomy (default 1,000 species in 2
kingdoms, 5 phyla, 12 classes, 35 orders, 100 families, 300 genera), 20 images per species in 768
dimensions, L2-normalised; per species 16 images train and 4 test (16,000 x 768 train, 4,000 test).

Protocol, identical for both solvers (``latent.linear.linear_probe_ranks(..., solver=...)``): stratified
80/20 train/validation split of the train rows, the C grid 1e-6 .. 1e6 (13 values) fitted from strong
to weak regularisation with warm starts, 3 halving refinement steps around the best C, refit on
train + validation at the best C, test accuracy. Both stop at the same rule: largest absolute
gradient entry of the mean-scaled objective <= ``tol`` x its value at zero (scikit-learn gets the
equivalent absolute ``tol``), same ``max_iter``.

    .venv/bin/python benchmarks/bench_linear.py                 # everything: ~10 min on 2 cores
    .venv/bin/python benchmarks/bench_linear.py --ranks species --solvers torch
    .venv/bin/python benchmarks/bench_linear.py --json out.json  # also write the raw numbers

Runs the whole sweep with torch, then with scikit-learn (~6-7 min of the total), then with torch
again: the two torch runs bracket the reference, so a change of machine load during it shows as a
difference between them (the table uses their mean). Prints a markdown table: per rank, classes,
time and test accuracy of each solver, the time ratio and the accuracy difference, and the whole
sweep's wall time. Nothing is extrapolated: every number is measured in this run. With scikit-learn
in the run it also prints what scikit-learn's default ``tol=1e-4`` does at the species rank.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time

import numpy as np

from latent.linear import linear_probe_ranks
from latent.ranks import RANK_NAMES
from latent.synthetic import make_hierarchical
from latent.taxonomy import Taxonomy

SIZES = (2, 5, 12, 35, 100, 300)  # kingdoms .. genera above the species


def generated_taxonomy(n_species: int, seed: int = 0) -> Taxonomy:
    """A 7-rank taxonomy: every node of each rank gets a random parent, every parent >= 1 child."""
    rng = np.random.default_rng(seed)
    sizes = [min(s, n_species) for s in SIZES] + [n_species]
    parents = [np.zeros(sizes[0], dtype=int)]
    for r in range(1, 7):
        extra = rng.integers(0, sizes[r - 1], sizes[r] - sizes[r - 1])
        parents.append(np.sort(np.concatenate([np.arange(sizes[r - 1]), extra])))
    letters = "KPCOFG"
    rows = []
    for s in range(n_species):
        chain = [s]
        for r in range(6, 0, -1):
            chain.append(int(parents[r][chain[-1]]))
        chain = chain[::-1]
        rows.append([f"{letters[r]}{chain[r]}" for r in range(6)] + [f"G{chain[5]} sp{s}"])
    return Taxonomy.from_lineages(rows)


def make_data(n_species: int, per_species: int, n_test: int, dim: int, signal: float, seed: int):
    tax = generated_taxonomy(n_species, seed)
    data = make_hierarchical(tax, per_species=per_species + n_test, dim=dim, signal=signal, seed=seed)
    X = data.embeddings / np.linalg.norm(data.embeddings, axis=1, keepdims=True)
    Y = data.taxonomy.row_codes
    k = np.arange(len(X)) % (per_species + n_test)
    train = k < per_species
    return X[train], Y[train], X[~train], Y[~train]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--species", type=int, default=1000)
    parser.add_argument("--per-species", type=int, default=16, help="train images per species")
    parser.add_argument("--test-per-species", type=int, default=4)
    parser.add_argument("--dim", type=int, default=768)
    parser.add_argument("--signal", type=float, default=0.15, help="make_hierarchical signal (noise 1)")
    parser.add_argument("--ranks", nargs="+", default=list(RANK_NAMES))
    parser.add_argument("--solvers", nargs="+", default=["torch", "sklearn"], choices=["torch", "sklearn"])
    parser.add_argument("--tol", type=float, default=1e-3)
    parser.add_argument("--max-iter", type=int, default=500)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", default=None, help="write the raw results here")
    args = parser.parse_args()

    import sklearn
    import torch

    Xtr, Ytr, Xte, Yte = make_data(args.species, args.per_species, args.test_per_species, args.dim, args.signal,
                                   args.seed)
    print(f"machine: {platform.machine()} {os.cpu_count()} cores, python {platform.python_version()}, "
          f"torch {torch.__version__} ({torch.get_num_threads()} threads), scikit-learn {sklearn.__version__}; "
          f"load average at start {os.getloadavg()[0]:.2f}")
    print(f"data: train {Xtr.shape}, test {Xte.shape}, signal {args.signal}, tol {args.tol}, max_iter {args.max_iter}")
    if "sklearn" in args.solvers and "species" in args.ranks:
        # Why the reference gets an explicit tol: scikit-learn's default (1e-4, absolute, on the gradient of
        # the mean-scaled objective) versus the gradient at zero of this problem.
        import warnings

        from sklearn.linear_model import LogisticRegression

        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            default = LogisticRegression(C=1.0).fit(Xtr, Ytr[:, 6])
        print(f"scikit-learn defaults (tol=1e-4) at the species rank, C=1: {int(default.n_iter_[0])} iterations, "
              f"test accuracy {np.mean(default.predict(Xte) == Yte[:, 6]):.4f}")
    def run(solver: str):
        load = os.getloadavg()[0]
        t0 = time.perf_counter()
        res = linear_probe_ranks(Xtr, Ytr, Xte, Yte, ranks=args.ranks, seed=args.seed, tol=args.tol,
                                 max_iter=args.max_iter, solver=solver, device="cpu")
        seconds = time.perf_counter() - t0
        print(f"  {solver:8s} whole sweep {seconds:7.1f}s  (load average {load:.2f} before, "
              f"{os.getloadavg()[0]:.2f} after)", flush=True)
        for rank, r in res.results.items():
            iters = int(r.val_curve["n_iter"].sum()) + r.model.n_iter
            print(f"      {rank:8s} {r.seconds:7.1f}s  test accuracy {res.test_accuracy[rank]:.4f}  best C "
                  f"{r.best_C:.4g}  {iters} iterations in {len(r.val_curve) + 1} fits", flush=True)
        return seconds, res

    # torch, then scikit-learn, then torch again: the two torch runs bracket the long reference run, so
    # a change of machine load during it shows up as a difference between them.
    runs: dict[str, list] = {s: [] for s in args.solvers}
    order = ["torch", "sklearn", "torch"] if len(args.solvers) == 2 else args.solvers
    for solver in order:
        runs[solver].append(run(solver))
    print()
    ranks = list(runs[args.solvers[0]][0][1].results)

    def rank_seconds(solver: str, rank: str) -> float:
        return float(np.mean([res.results[rank].seconds for _, res in runs[solver]]))

    def total(solver: str) -> float:
        return float(np.mean([seconds for seconds, _ in runs[solver]]))

    raw = {"args": vars(args), "runs": {
        solver: [{"seconds": sec, "ranks": {rank: {"seconds": r.seconds, "test_accuracy": res.test_accuracy[rank],
                                                   "best_C": r.best_C, "val_curve": r.val_curve.to_dict("list")}
                                            for rank, r in res.results.items()}} for sec, res in runs[solver]]
        for solver in runs}}
    if len(args.solvers) == 2:
        sk, tc = runs["sklearn"][0][1], runs["torch"][0][1]
        print("| rank | classes | sklearn (s) | latent torch (s) | ratio | sklearn acc | torch acc | diff (points) "
              "| best C sklearn / torch |")
        print("|---|---:|---:|---:|---:|---:|---:|---:|---|")
        for rank in ranks:
            t_sk, t_tc = rank_seconds("sklearn", rank), rank_seconds("torch", rank)
            a_sk, a_tc = sk.test_accuracy[rank], tc.test_accuracy[rank]
            print(f"| {rank} | {len(tc.results[rank].classes)} | {t_sk:.1f} | {t_tc:.1f} | {t_sk / t_tc:.1f} | "
                  f"{a_sk:.4f} | {a_tc:.4f} | {100 * (a_tc - a_sk):+.2f} | "
                  f"{sk.results[rank].best_C:.3g} / {tc.results[rank].best_C:.3g} |")
        worst = max(abs(tc.test_accuracy[r] - sk.test_accuracy[r]) for r in ranks)
        print(f"| **whole sweep** (wall) | | **{total('sklearn'):.1f}** | **{total('torch'):.1f}** | "
              f"**{total('sklearn') / total('torch'):.1f}** | | | max abs {100 * worst:.2f} | |")
        t1, t2 = (seconds for seconds, _ in runs["torch"])
        print(f"\ntorch whole sweep: {t1:.1f}s before and {t2:.1f}s after the scikit-learn run (mean above); "
              f"torch per-rank times exclude the shared centring/rotation, the whole-sweep times include it.")
        same = all(runs["torch"][0][1].test_accuracy[r] == runs["torch"][1][1].test_accuracy[r] for r in ranks)
        print(f"torch runs identical in accuracy: {same}")
    else:
        solver = args.solvers[0]
        res = runs[solver][0][1]
        print(f"| rank | classes | {solver} (s) | accuracy | best C |")
        print("|---|---:|---:|---:|---:|")
        for rank in ranks:
            print(f"| {rank} | {len(res.results[rank].classes)} | {rank_seconds(solver, rank):.1f} | "
                  f"{res.test_accuracy[rank]:.4f} | {res.results[rank].best_C:.3g} |")
        print(f"| **whole sweep** (wall) | | {total(solver):.1f} | | |")
    if args.json:
        with open(args.json, "w") as fh:
            json.dump(raw, fh, indent=1, default=float)


if __name__ == "__main__":
    main()
