"""Redraw every figure of a report from its results tables (never from models or embeddings).

    .venv/bin/python figures/draw_report_figures.py results/cub10/report --out paper/figures

Reads ``REPORT/report.json`` (written by ``latent report`` / ``latent run``), which lists each model's
evaluation and probe folders, and writes a vector PDF and a PNG of each figure.
"""

from __future__ import annotations

import argparse
import logging

from latent.report import draw_figures


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("report", help="a folder written by latent report / latent run (holds report.json)")
    parser.add_argument("--out", help="figure folder (default: REPORT/figures)")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    for path in draw_figures(args.report, args.out):
        print(path)


if __name__ == "__main__":
    main()
