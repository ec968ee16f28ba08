"""Benchmark: `latent evaluate CACHE --method linear` (the path users run) against scikit-learn.

Data: ``latent.synthetic.make_hierarchical`` on a generated taxonomy (default 1,000 species in 2
kingdoms, 5 phyla, 12 classes, 35 orders, 100 families, 300 genera), 20 images per species in 768
dimensions, written as an embedding cache (``latent.synthetic.write_synthetic``).

Measured: the command ``latent evaluate CACHE --method linear --out DIR --device cpu --seed S`` run in a
subprocess (process start, cache read, the 7-rank sweep of ``latent.linear.linear_probe_ranks`` that
``latent.predictors.predict_linear`` calls, every metric with its bootstrap CI, the files written),
wall time from the outside. Reference, in the same run: scikit-learn's ``LogisticRegression`` (lbfgs)
on the same train/test split of the same cache (``latent.splits.random_split`` with the CLI's
``--test-fraction`` and ``--seed``) and the same protocol, ``linear_probe_ranks(..., solver="sklearn")``:
stratified 80/20 train/validation split of the train rows, the C grid 1e-6 .. 1e6 (13 values) fitted
from strong to weak regularisation with warm starts, 3 halving refinement steps around the best C,
refit on train + validation at the best C. Both stop at the same rule (largest absolute gradient
entry of the mean-scaled objective <= 1e-3 x its value at zero; scikit-learn gets the equivalent
absolute ``tol``), ``max_iter`` 500. The reference time is the sweep alone (no process start, no
metrics), so the ratio reference / CLI understates the solver's own speed-up.

    .venv/bin/python benchmarks/bench_linear.py                    # default size (~10 min on 2 cores)
    .venv/bin/python benchmarks/bench_linear.py --species 200 --dim 256
    .venv/bin/python benchmarks/bench_linear.py --json out.json     # also write the raw numbers

Runs the CLI, then scikit-learn, then the CLI again: the two CLI runs bracket the reference, so a
change of machine load during it shows as a difference between them (the table uses their mean).
Then, for the breakdown, the same torch sweep in-process (``linear_probe_ranks`` on the split, as
``predict_linear`` calls it; ``--no-in-process`` skips it).
Prints a markdown table: per rank, classes, the test top-1 accuracy of each (the CLI's from its
``metrics.csv``), the difference and the chosen C; then the wall times and their ratio. Nothing is
extrapolated: every number is measured in this run.

``suite_rows(quick)`` gives the rows of ``benchmarks/run_all.py`` (smaller sizes, one CLI run).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd

from latent.linear import linear_probe_ranks
from latent.ranks import RANK_NAMES, RANKS
from latent.synthetic import make_hierarchical, write_synthetic
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


def make_cache(path: Path, n_species: int, per_species: int, dim: int, signal: float, seed: int) -> Path:
    """The benchmark's embedding cache: ``per_species`` images of each of ``n_species`` species."""
    tax = generated_taxonomy(n_species, seed)
    return write_synthetic(path, make_hierarchical(tax, per_species=per_species, dim=dim, signal=signal, seed=seed))


def split_of(cache_path: Path, test_fraction: float, seed: int):
    """Unit-norm train/test embeddings and ``(n, 7)`` codes: the split ``latent evaluate`` makes."""
    from latent.cache import open_cache
    from latent.splits import random_split

    with open_cache(cache_path) as cache:
        X = cache.read(normalize=True)
        tax = Taxonomy.from_table(cache.taxonomy_frame())
    train, test = random_split(tax, test_fraction=test_fraction, seed=seed)
    Y = np.stack([tax.codes(r) for r in RANKS], axis=1)
    return X[train], Y[train], X[test], Y[test]


def latent_command() -> list[str]:
    """The ``latent`` console script of this interpreter's environment."""
    script = Path(sys.executable).with_name("latent")
    return [str(script)] if script.exists() else [sys.executable, "-m", "latent.cli"]


def suite_rows(quick: bool = False) -> list[dict]:
    """Rows of ``benchmarks/run_all.py``: the CLI and the in-process torch sweep against scikit-learn's sweep.

    Full: 60 species x 20 images, 64-d (scikit-learn's sweep ~1 min); quick: 30 species x 8 images, 32-d
    (signal 0.15, the CLI's split). Agreement: the largest test top-1 difference over the 7 ranks, within
    max(0.5 points, two test images) or not.
    """
    from run_all import make_row

    species, per_species, dim = (30, 8, 32) if quick else (60, 20, 64)
    seed, test_fraction = 0, 0.3
    with tempfile.TemporaryDirectory(prefix="suite_linear_") as tmp:
        work = Path(tmp)
        cache = make_cache(work / "bench.h5", species, per_species, dim, 0.15, seed)
        Xtr, Ytr, Xte, Yte = split_of(cache, test_fraction, seed)
        command = [*latent_command(), "evaluate", str(cache), "--method", "linear", "--out", str(work / "cli"),
                   "--device", "cpu", "--seed", str(seed), "--test-fraction", str(test_fraction)]
        t0 = time.perf_counter()
        subprocess.run(command, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        t_cli = time.perf_counter() - t0
        metrics = pd.read_csv(work / "cli" / "metrics.csv")
        cli_top1 = metrics[metrics["metric"] == "top1"].set_index("rank")["value"].to_dict()
        sweeps = {}
        for solver in ("sklearn", "torch"):
            t0 = time.perf_counter()
            res = linear_probe_ranks(Xtr, Ytr, Xte, Yte, seed=seed, solver=solver, device="cpu")
            sweeps[solver] = (time.perf_counter() - t0, dict(res.test_accuracy),
                              {rank: r.best_C for rank, r in res.results.items()})
    t_sk, sk_top1, sk_C = sweeps["sklearn"]

    n_test = len(Yte)
    tolerance = max(0.005, 2 / n_test)  # 0.5 points, or two test images on small test sets

    def agreement(top1: dict) -> str:
        rank = max(sk_top1, key=lambda r: abs(top1[r] - sk_top1[r]))
        worst = abs(top1[rank] - sk_top1[rank])
        return (f"{'within' if worst <= tolerance + 1e-12 else 'NOT within'} {100 * tolerance:.2g} points "
                f"(max top-1 diff {100 * worst:.2f} at {rank}, best C sklearn {sk_C[rank]:.3g} / torch "
                f"{sweeps['torch'][2][rank]:.3g}; one test image = {100 / n_test:.2g})")

    case = f"{species} species x {per_species} images, {dim}-d, 7 ranks, {len(Xtr)} train / {len(Xte)} test"
    return [make_row("linear", case, "`latent evaluate --method linear` (whole command)", t_cli,
                     "scikit-learn LogisticRegression sweep (in-process, sweep only)", t_sk, agreement(cli_top1)),
            make_row("linear", case, "linear_probe_ranks torch sweep (in-process)", sweeps["torch"][0],
                     "scikit-learn LogisticRegression sweep (in-process, sweep only)", t_sk,
                     agreement(sweeps["torch"][1]))]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--species", type=int, default=1000)
    parser.add_argument("--per-species", type=int, default=20, help="images per species (train + test)")
    parser.add_argument("--dim", type=int, default=768)
    parser.add_argument("--signal", type=float, default=0.15, help="make_hierarchical signal (noise 1)")
    parser.add_argument("--test-fraction", type=float, default=0.3, help="the CLI's --test-fraction")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--workdir", default=None, help="where the cache and results go (default: a temp folder)")
    parser.add_argument("--json", default=None, help="write the raw results here")
    parser.add_argument("--no-in-process", action="store_true",
                        help="skip the in-process torch sweep (the CLI's solver alone, for the breakdown)")
    args = parser.parse_args()

    import sklearn
    import torch

    work = Path(args.workdir or tempfile.mkdtemp(prefix="bench_linear_"))
    work.mkdir(parents=True, exist_ok=True)
    cache = make_cache(work / "bench.h5", args.species, args.per_species, args.dim, args.signal, args.seed)
    Xtr, Ytr, Xte, Yte = split_of(cache, args.test_fraction, args.seed)
    print(f"machine: {platform.machine()} {os.cpu_count()} cores, python {platform.python_version()}, "
          f"torch {torch.__version__}, scikit-learn {sklearn.__version__}; OMP_NUM_THREADS="
          f"{os.environ.get('OMP_NUM_THREADS', 'unset')}; load average at start {os.getloadavg()[0]:.2f}")
    print(f"data: {cache} ({args.species} species x {args.per_species} images, {args.dim}-d, signal {args.signal}); "
          f"split: train {Xtr.shape}, test {Xte.shape}")

    def run_cli(i: int) -> dict:
        out = work / f"cli{i}"
        command = [*latent_command(), "evaluate", str(cache), "--method", "linear", "--out", str(out), "--device",
                   "cpu", "--seed", str(args.seed), "--test-fraction", str(args.test_fraction), "--force"]
        load = os.getloadavg()[0]
        t0 = time.perf_counter()
        subprocess.run(command, check=True, stdout=subprocess.DEVNULL)
        seconds = time.perf_counter() - t0
        metrics = pd.read_csv(out / "metrics.csv")
        top1 = metrics[metrics["metric"] == "top1"].set_index("rank")["value"].to_dict()
        record = json.loads((out / "run.json").read_text())
        print(f"  latent evaluate (CLI) {seconds:7.1f}s wall (its run.json: {record.get('seconds', float('nan')):.1f}s)"
              f"  load average {load:.2f} before, {os.getloadavg()[0]:.2f} after", flush=True)
        return {"seconds": seconds, "run_seconds": record.get("seconds"), "top1": top1,
                "best_C": record["predictor_info"]["best_C"], "command": " ".join(command)}

    def run_sweep(solver: str) -> dict:
        load = os.getloadavg()[0]
        t0 = time.perf_counter()
        res = linear_probe_ranks(Xtr, Ytr, Xte, Yte, seed=args.seed, solver=solver, device="cpu")
        seconds = time.perf_counter() - t0
        print(f"  {solver + ' sweep':21s} {seconds:7.1f}s  load average {load:.2f} before, {os.getloadavg()[0]:.2f} after",
              flush=True)
        return {"seconds": seconds, "top1": dict(res.test_accuracy),
                "best_C": {rank: r.best_C for rank, r in res.results.items()},
                "classes": {rank: len(r.classes) for rank, r in res.results.items()},
                "rank_seconds": {rank: r.seconds for rank, r in res.results.items()}}

    cli = [run_cli(0)]
    sk = run_sweep("sklearn")
    cli.append(run_cli(1))
    inproc = None if args.no_in_process else run_sweep("torch")
    print(f"\ncommand: {cli[0]['command']}\n")
    print("| rank | classes | scikit-learn acc | `latent evaluate` acc | diff (points) | best C sklearn / latent |")
    print("|---|---:|---:|---:|---:|---|")
    worst = 0.0
    for rank in RANK_NAMES:
        if rank not in sk["top1"]:
            continue
        a_sk, a_cli = sk["top1"][rank], cli[0]["top1"][rank]
        worst = max(worst, abs(a_cli - a_sk))
        print(f"| {rank} | {sk['classes'][rank]} | {a_sk:.4f} | {a_cli:.4f} | {100 * (a_cli - a_sk):+.2f} | "
              f"{sk['best_C'][rank]:.3g} / {cli[0]['best_C'][rank]:.3g} |")
    cli_mean = float(np.mean([c["seconds"] for c in cli]))
    print(f"\nmax abs accuracy difference: {100 * worst:.2f} points; the two CLI runs identical in accuracy: "
          f"{cli[0]['top1'] == cli[1]['top1']}")
    print(f"wall time: scikit-learn sweep {sk['seconds']:.1f}s; `latent evaluate --method linear` "
          f"{cli[0]['seconds']:.1f}s and {cli[1]['seconds']:.1f}s (mean {cli_mean:.1f}s, whole command); "
          f"ratio scikit-learn / CLI {sk['seconds'] / cli_mean:.1f}")
    if inproc is not None:
        same = all(abs(inproc["top1"][r] - cli[0]["top1"][r]) < 1e-12 for r in inproc["top1"])
        print(f"breakdown: the same torch sweep in-process (linear_probe_ranks, as predict_linear calls it) "
              f"{inproc['seconds']:.1f}s, ratio scikit-learn / in-process {sk['seconds'] / inproc['seconds']:.1f}; "
              f"the rest of the CLI's time is process start, cache read, metrics with bootstrap CIs and files; "
              f"in-process accuracies equal to the CLI's: {same}")
    if args.json:
        with open(args.json, "w") as fh:
            json.dump({"args": vars(args), "cli": cli, "sklearn": sk, "torch_in_process": inproc}, fh, indent=1,
                      default=float)


if __name__ == "__main__":
    main()
