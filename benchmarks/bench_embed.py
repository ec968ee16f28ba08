"""Benchmark: throughput of `latent embed` against its two parts, on the same images and model.

Three numbers, in images per second, measured in one run:

1. decode + preprocess only: the DataLoader (same workers, batch size, transform) with no model;
2. model only: ``encode_images`` on batches that are already tensors;
3. the whole pipeline: ``embed_images`` (decode -> model -> HDF5 cache), model loading excluded.

The pipeline cannot beat the slower of its parts; the ratio pipeline / min(1, 2) says how much the
plumbing (collation, transfers, cache writes) costs. Images: the 306 real CUB photos of
../shared/data/cub10 (replicated with ``--copies``) or, when absent, generated 500x375 JPEGs.

    .venv/bin/python benchmarks/bench_embed.py [--models random-tiny random:ViT-B-16] [--copies 3]

``suite_rows(quick)`` gives the rows of ``benchmarks/run_all.py`` (random-tiny only).
"""

from __future__ import annotations

import argparse
import os
import platform
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from latent.extract import embed_images
from latent.images import ImageDataset, collate_skip_failed, find_images
from latent.models import load_model

CUB = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "cub10" / "birds"


def make_images(root: Path, copies: int) -> str:
    if CUB.is_dir():
        for k in range(copies):
            shutil.copytree(CUB, root / f"copy{k}")
        return f"{306 * copies} real CUB photos (cub10 x {copies})"
    rng = np.random.default_rng(0)
    for k in range(306 * copies):
        folder = root / f"g{k % 10}"
        folder.mkdir(exist_ok=True)
        Image.fromarray(rng.integers(0, 255, (375, 500, 3), dtype=np.uint8)).save(folder / f"{k}.jpg", quality=90)
    return f"{306 * copies} generated 500x375 JPEGs"


def decode_only(records, transform, batch_size: int, workers: int) -> float:
    from torch.utils.data import DataLoader

    loader = DataLoader(ImageDataset(records, transform), batch_size=batch_size, num_workers=workers,
                        collate_fn=collate_skip_failed, prefetch_factor=4 if workers else None)
    start = time.perf_counter()
    n = sum(len(batch["indices"]) for batch in loader)
    return n / (time.perf_counter() - start)


def model_only(loaded, records, batch_size: int, n_images: int) -> float:
    batch = torch.stack([loaded.transform(Image.open(r.path).convert("RGB")) for r in records[:batch_size]])
    loaded.encode_images(batch)  # warm-up
    start = time.perf_counter()
    done = 0
    while done < n_images:
        loaded.encode_images(batch)
        done += len(batch)
    return done / (time.perf_counter() - start)


def suite_rows(quick: bool = False) -> list[dict]:
    """Rows of ``benchmarks/run_all.py``: ``random-tiny`` on the cub10 photos (quick: once, full: 3 copies).

    Two rows on the same images, in seconds for all of them: the pipeline (``embed_images``, model
    loading excluded) against decode + preprocess only, and against model only (ratio = the pipeline's
    rate as a fraction of that part's). Agreement: the cache's rows of the first batch against
    ``encode_images`` of the same preprocessed images, both L2-normalised.
    """
    from latent.cache import open_cache
    from run_all import make_row

    copies, batch_size = (1 if quick else 3), 32
    workers = max(1, (os.cpu_count() or 2) - 1)
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp) / "images"
        root.mkdir()
        what = make_images(root, copies)
        records = find_images(root)
        loaded = load_model("random-tiny", device="cpu")
        decode = decode_only(records, loaded.transform, batch_size, workers)
        model = model_only(loaded, records, batch_size, len(records))
        report = embed_images(root, Path(tmp) / "bench.h5", model="random-tiny", device="cpu", batch_size=batch_size,
                              workers=workers, progress=False, force=True)
        first = records[:batch_size]
        direct = loaded.encode_images(torch.stack([loaded.transform(Image.open(r.path).convert("RGB"))
                                                   for r in first])).numpy().astype(np.float64)
        direct /= np.linalg.norm(direct, axis=1, keepdims=True)
        with open_cache(Path(tmp) / "bench.h5") as cache:
            where = {str(i): k for k, i in enumerate(cache.ids)}
            cached = cache.read(np.array([where[r.id] for r in first]), normalize=True).astype(np.float64)
    n = report.embedded
    diff = float(np.abs(cached - direct).max())
    agree = f"{'within' if diff <= 2e-3 else 'NOT within'} 2e-3 (max diff {diff:.1e}; cache vs encode_images)"
    case = f"random-tiny fp32, {what}, batch {batch_size}, {workers} decoding worker(s)"
    pipe = report.loop_seconds
    return [make_row("embed", case, "embed_images pipeline", pipe, "decode + preprocess only (DataLoader)",
                     n / decode, agree),
            make_row("embed", case, "embed_images pipeline", pipe, "model only (encode_images on ready batches)",
                     n / model, agree)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", default=["random-tiny", "random:ViT-B-16"])
    parser.add_argument("--copies", type=int, default=3)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--workers", type=int, default=max(1, (os.cpu_count() or 2) - 1))
    parser.add_argument("--device", default="auto")
    parser.add_argument("--precision", default="auto")
    args = parser.parse_args()
    device = "cuda" if args.device == "auto" and torch.cuda.is_available() else ("cpu" if args.device == "auto" else args.device)
    gpu = torch.cuda.get_device_name(0) if device.startswith("cuda") else "none"
    print(f"machine: {platform.machine()}, {os.cpu_count()} cores, GPU {gpu}, torch {torch.__version__}, "
          f"batch {args.batch_size}, workers {args.workers}")
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp) / "images"
        root.mkdir()
        what = make_images(root, args.copies)
        records = find_images(root)
        print(f"images: {what}")
        print("| model | precision | decode+preprocess (img/s) | model only (img/s) | pipeline (img/s) | pipeline / min |")
        print("|---|---|---:|---:|---:|---:|")
        for name in args.models:
            loaded = load_model(name, device=device, precision=args.precision)
            decode = decode_only(records, loaded.transform, args.batch_size, args.workers)
            model = model_only(loaded, records, args.batch_size, min(len(records), 20 * args.batch_size))
            report = embed_images(root, Path(tmp) / "bench.h5", model=name, device=device, precision=args.precision,
                                  batch_size=args.batch_size, workers=args.workers, progress=False, force=True)
            pipe = report.images_per_second
            print(f"| {name} | {loaded.precision} | {decode:.0f} | {model:.0f} | {pipe:.0f} | {pipe / min(decode, model):.2f} |")


if __name__ == "__main__":
    main()
