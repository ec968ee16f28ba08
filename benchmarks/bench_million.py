"""Streaming analysis at scale: `latent synth`, `latent probe` and `latent evaluate` on 10k, 100k and 1M
768-d float16 embeddings, each command's wall time and peak resident memory (`/usr/bin/time -v`).

    OMP_NUM_THREADS=2 .venv/bin/python benchmarks/bench_million.py --sizes 10k 100k 1m --workdir /tmp/million

Sizes: 10k = 1,000 species x 10 images, 100k = 10,000 species x 10, 1m = 10,000 species x 100 (taxonomies
from benchmarks/make_taxonomy.py). Every command runs with its default settings (probe: the default
probes; evaluate: --method knn, centroid, linear), so what a default samples is what is measured: the
rows' notes and run.json say what was sampled, and this script prints each run's sample note. A run over
--timeout seconds is stopped and its row says so. Prints one Markdown table (rows, command, seconds, peak
RSS in GB, exit status, the sample note) and writes it to WORKDIR/bench_million.md. The cache of 1m rows
is 1.5 GB on disk: put --workdir where there is room.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SIZES = {"10k": (1_000, 10), "100k": (10_000, 10), "1m": (10_000, 100)}
COMMANDS = ("synth", "probe", "knn", "centroid", "linear")


def latent_exe() -> list[str]:
    """The latent entry point of this interpreter's environment (the module, when no script is there)."""
    script = Path(sys.executable).with_name("latent")
    return [str(script)] if script.exists() else [sys.executable, "-c", "import sys; from latent.cli import main; sys.exit(main())"]


def timed(argv: list[str], log: Path, timeout: float) -> dict:
    """Run ``argv`` under /usr/bin/time -v: wall seconds, peak RSS (GB) and exit status (124 on timeout)."""
    start = time.perf_counter()
    with open(log, "w") as out:
        try:
            proc = subprocess.run(["/usr/bin/time", "-v", *argv], stdout=out, stderr=subprocess.STDOUT,
                                  timeout=timeout)
            status = proc.returncode
        except subprocess.TimeoutExpired:
            status = 124
    seconds = time.perf_counter() - start
    text = log.read_text(errors="replace")
    rss = re.search(r"Maximum resident set size \(kbytes\): (\d+)", text)
    return {"seconds": round(seconds, 1), "peak_gb": round(int(rss.group(1)) / 2**20, 2) if rss else float("nan"),
            "status": status}


def sample_note(folder: Path) -> str:
    """What the run sampled, from its run.json (probe: ``sample``; evaluate: ``test_sample``, which holds the
    linear probe's ``train_sample`` too)."""
    path = folder / "run.json"
    if not path.exists():
        return ""
    info = json.loads(path.read_text())
    notes = [info.get("sample")] + list(dict.fromkeys(info.get("test_sample") or []))
    return "; ".join(n for n in notes if n)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", nargs="+", default=["10k", "100k"], choices=list(SIZES))
    parser.add_argument("--commands", nargs="+", default=list(COMMANDS), choices=COMMANDS)
    parser.add_argument("--workdir", default="/tmp/latent-million", help="caches and results (1.5 GB at 1m)")
    parser.add_argument("--timeout", type=float, default=3600, help="seconds per command before it is stopped")
    args = parser.parse_args()
    work = Path(args.workdir)
    work.mkdir(parents=True, exist_ok=True)
    exe = latent_exe()
    rows = []
    for size in args.sizes:
        n_species, per_species = SIZES[size]
        taxonomy = work / f"tax{n_species}.csv"
        if not taxonomy.exists():
            subprocess.run([sys.executable, str(REPO / "benchmarks" / "make_taxonomy.py"), str(n_species),
                            str(taxonomy)], check=True)
        cache = work / f"synth{size}.h5"
        for command in args.commands:
            if command == "synth":
                argv = [*exe, "synth", "--taxonomy", str(taxonomy), "--out", str(cache), "--per-species",
                        str(per_species), "--dim", "768", "--store-dtype", "float16", "--force"]
                out = None
            elif command == "probe":
                out = work / f"probe{size}"
                argv = [*exe, "probe", str(cache), "--out", str(out), "--force"]
            else:
                out = work / f"{command}{size}"
                argv = [*exe, "evaluate", str(cache), "--method", command, "--out", str(out), "--force"]
            if out is not None and out.exists():
                shutil.rmtree(out)
            result = timed(argv, work / f"{command}{size}.log", args.timeout)
            note = sample_note(out) if out is not None else ""
            shown = " ".join(Path(a).name if a.startswith(str(work)) else a for a in argv[len(exe):])
            rows.append((size, f"latent {shown}", result, note))
            print(f"{size:>5} {command:<9} {result['seconds']:>8.1f} s  {result['peak_gb']:>5.2f} GB  "
                  f"exit {result['status']}  {note}", flush=True)
    lines = [f"Machine: {os.cpu_count()} cores, OMP_NUM_THREADS={os.environ.get('OMP_NUM_THREADS', 'unset')}.", "",
             "| rows | command | seconds | peak RSS (GB) | exit | sampled |", "|---|---|---:|---:|---:|---|"]
    for size, shown, result, note in rows:
        lines.append(f"| {size} | `{shown}` | {result['seconds']} | {result['peak_gb']} | {result['status']} | {note} |")
    table = "\n".join(lines)
    print(table)
    (work / "bench_million.md").write_text(table + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
