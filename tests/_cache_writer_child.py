"""Write a deterministic embedding cache, resuming an interrupted one (helper of the crash test).

Usage: ``python _cache_writer_child.py PATH [SLEEP_SECONDS]``. Prints ``open <rows>`` once the writer
is open and ``committed <rows>`` after each block, so that the parent can time its SIGKILLs.
"""

from __future__ import annotations

import sys
import time

import numpy as np

N_BLOCKS, BLOCK, DIM = 40, 50, 32
FAILED_EVERY = 10  # block b with b % FAILED_EVERY == FAILED_EVERY - 1 is followed by one failure


def expected() -> tuple[list[str], np.ndarray, dict[str, list[str]], list[str]]:
    """ids (N,), embeddings (N, DIM) float32, taxonomy rank -> labels (N,), failed ids, in write order."""
    n = N_BLOCKS * BLOCK
    ids = [f"img{i:05d}" for i in range(n)]
    embeddings = np.random.default_rng(20240611).standard_normal((n, DIM)).astype(np.float32)
    taxonomy = {
        "kingdom": ["Animalia"] * n,
        "phylum": ["Chordata" if i % 5 else "Arthropoda" for i in range(n)],
        "class": [f"C{i % 3}" for i in range(n)],
        "order": [f"O{i % 7}" for i in range(n)],
        "family": [f"F{i % 11}" for i in range(n)],
        "genus": [f"G{i % 13}" for i in range(n)],
        "species": ["" if i % 17 == 0 else f"G{i % 13} s{i % 19}" for i in range(n)],
    }
    failed = [f"bad{b}" for b in range(N_BLOCKS) if b % FAILED_EVERY == FAILED_EVERY - 1]
    return ids, embeddings, taxonomy, failed


def provenance():  # noqa: ANN201 - imported lazily so that the module loads without latent
    from latent.cache import Provenance

    return Provenance(model="crash-test", pretrained="none", preprocess={"resize": 224, "crop": "center"},
                      embed_dim=DIM, normalized=False, source="synthetic", extra={"seed": 20240611})


def main(argv: list[str]) -> int:
    from latent.cache import CacheWriter

    path, sleep = argv[1], float(argv[2]) if len(argv) > 2 else 0.0
    ids, embeddings, taxonomy, _ = expected()
    with CacheWriter.open(path, provenance(), resume=True) as writer:
        print("open", writer.n_rows, flush=True)
        done = writer.existing_ids
        for b in range(N_BLOCKS):
            rows = [i for i in range(b * BLOCK, (b + 1) * BLOCK) if ids[i] not in done]
            if rows:
                writer.append([ids[i] for i in rows], embeddings[rows],
                              {rank: [labels[i] for i in rows] for rank, labels in taxonomy.items()})
            if b % FAILED_EVERY == FAILED_EVERY - 1 and f"bad{b}" not in writer.failed_ids:
                writer.add_failed([f"bad{b}"], [f"unreadable image in block {b}"])
            if rows:
                print("committed", writer.n_rows, flush=True)
                time.sleep(sleep)
    print("done", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
