"""Speed measures that must not change what is computed (issue 13, item 4).

- The linear solver's thread policy: small products run on one thread, large ones on every thread,
  and the thread count is restored (nested blocks included).
- The separability null's default number of permutations: stated, at most 99, fewer (never below 19)
  on large data; an explicit setting is honoured.
- The clusters probe's resample statistics: taxon sums by one sparse product and SVDs on the drawn rows
  equal the dense computations (to 1e-12 relative: the same products, another summation order).
- Progress bars: only on a terminal's stderr, never in tests.
"""

from __future__ import annotations

import os
import subprocess
import sys

import numpy as np
import pytest

import latent.probes.separability as sep
from latent.probes.base import ProbeData, ProbeOptions
from latent.probes.clusters import _svd_drawn_rows, _taxon_sums
from latent.probes.common import progress, show_progress
from latent.taxonomy import Taxonomy
from latent.synthetic import make_hierarchical


def pairs_data(signal: float, seed: int, genera: int = 4) -> ProbeData:
    rows = [["Animalia", "Chordata", "Aves", "Ord", f"Fam{g % 2}", f"Gen{g}", f"Gen{g} sp{s}"]
            for g in range(genera) for s in range(2)]
    d = make_hierarchical(Taxonomy.from_lineages(rows), per_species=10, dim=8, signal=signal, seed=seed)
    return ProbeData.from_arrays(d.embeddings, d.taxonomy, d.ids)


# ------------------------------------------------------------------------------ thread policy
def test_small_products_use_one_thread_large_ones_every_thread():
    torch = pytest.importorskip("torch")
    from latent.linear import PARALLEL_PRODUCT, _product_size, _Threads

    saved = torch.get_num_threads()
    try:
        torch.set_num_threads(2)
        threads = _Threads(torch.device("cpu"))
        seen = []

        def product(a, b):
            seen.append(torch.get_num_threads())
            return a @ b

        small = (torch.ones(10, 8), torch.ones(8, 4))
        large = (torch.ones(256, 256), torch.ones(256, 128))  # 256 * 256 * 128 = 2**23 multiply-adds
        assert _product_size(small) == 320 < PARALLEL_PRODUCT <= _product_size(large)
        with threads:
            with threads:  # nested: the inner block leaves the outer one's single thread in place
                assert torch.get_num_threads() == 1
            assert torch.get_num_threads() == 1
            threads.mm(product, *small)
            threads.mm(product, *large)
            assert torch.get_num_threads() == 1
        assert seen == [1, 2]
        assert torch.get_num_threads() == 2  # restored
        threads.mm(product, *small)  # outside a block: the caller's threads, untouched
        assert seen[-1] == 2 and torch.get_num_threads() == 2
    finally:
        torch.set_num_threads(saved)


# ------------------------------------------------------------------------ separability permutations
def test_default_permutations_rule():
    assert sep.default_permutations(999, 1.0) == sep.DEFAULT_PERMUTATIONS == 99
    assert sep.default_permutations(7, 1.0) == 7  # never more than asked
    assert sep.default_permutations(999, sep.NULL_WORK / 50) == 50
    assert sep.default_permutations(999, sep.NULL_WORK * 10) == sep.MIN_PERMUTATIONS == 19
    assert sep.default_permutations(5, sep.NULL_WORK * 10) == 5


def test_separability_null_uses_the_stated_default_and_honours_the_setting(monkeypatch):
    d = pairs_data(1.0, 0)
    fast = {"splits": ["species-disjoint"], "n_boot": 0, "grid": [1.0]}
    # data "large" for the budget: the default falls to 19 permutations (not the 150 of the options)
    monkeypatch.setattr(sep, "NULL_WORK", sep.permutation_work(d, 1, 0.3) * 3)
    res = sep.probe_separability(d, ProbeOptions(seed=0, permutations=150, device="cpu",
                                                 extra={"separability": fast}))
    rows = res.to_frame()
    assert res.info["permutations"] == 19 and (rows["permutations"] == 19).all()
    assert len(res.tables["null"]) == 19 * len(rows)
    # an explicit setting is used as given, above the default
    res = sep.probe_separability(d, ProbeOptions(seed=0, permutations=150, device="cpu",
                                                 extra={"separability": {**fast, "permutations": 23}}))
    assert res.info["permutations"] == 23 and (res.to_frame()["permutations"] == 23).all()


def test_permutation_work_counts_taxa_above_species():
    d = pairs_data(1.0, 0)  # 1 kingdom, phylum, class, order; 2 families; 4 genera: 10 taxa
    assert sep.permutation_work(d, 2, 0.5) == 2 * 0.5 * d.X.shape[0] * d.X.shape[1] * 10


# ------------------------------------------------------------------------------ clusters resamples
def test_taxon_sums_equal_reduceat():
    rng = np.random.default_rng(0)
    n, d, c = 60, 7, 5
    sums = rng.normal(size=(n, d))
    w = rng.poisson(1.0, size=(c, n)).astype(float)
    starts = np.array([0, 1, 2, 5, 9, 20, 21, 40, 59])
    expected = np.add.reduceat(w[:, :, None] * sums[None], starts, axis=1)
    np.testing.assert_allclose(_taxon_sums(w, sums, starts), expected, rtol=1e-12, atol=1e-12)


def test_svd_on_drawn_rows_equals_the_full_svd():
    rng = np.random.default_rng(1)
    c, T, d = 4, 12, 9
    M = rng.normal(size=(c, T, d))
    drawn = rng.random((c, T)) < 0.6
    drawn[0] = True
    drawn[1] = False  # nothing drawn: all singular values 0
    M[~drawn] = 0.0
    s, Vt = _svd_drawn_rows(M, drawn)
    _, s_full, Vt_full = np.linalg.svd(M, full_matrices=False)
    assert s.shape == s_full.shape and Vt.shape == Vt_full.shape
    np.testing.assert_allclose(s, s_full, rtol=1e-12, atol=1e-12)
    for b in range(c):  # the same subspaces: projectors onto the vectors of non-zero singular values
        k = int((s_full[b] > 1e-12).sum())
        P, P_full = Vt[b, :k].T @ Vt[b, :k], Vt_full[b, :k].T @ Vt_full[b, :k]
        np.testing.assert_allclose(P, P_full, atol=1e-12)
    assert not s[1].any() and not Vt[1].any()


# --------------------------------------------------------------------------------- progress bars
def test_no_progress_bar_in_tests():
    items = range(100)
    assert not show_progress()
    assert progress(items, total=100, desc="x") is items


def test_progress_bar_only_on_a_terminal():
    pty = pytest.importorskip("pty")
    code = ("import sys; from latent.probes.common import progress\n"
            "print(sum(progress(range(50), total=50, desc='nullbar')))\n")
    env = {k: v for k, v in os.environ.items() if k != "PYTEST_CURRENT_TEST"}
    import threading

    import fcntl
    import struct
    import termios

    master, slave = pty.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 24, 80, 0, 0))  # a new pty is 0 columns wide
    chunks: list[bytes] = []

    def read() -> None:
        while True:
            try:
                chunk = os.read(master, 65536)
            except OSError:  # the terminal closed
                return
            if not chunk:
                return
            chunks.append(chunk)

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    try:
        proc = subprocess.run([sys.executable, "-c", code], stdout=subprocess.PIPE, stderr=slave, env=env,
                              timeout=120)
    finally:
        os.close(slave)
        reader.join(timeout=10)
        os.close(master)
    assert proc.returncode == 0 and proc.stdout.decode().strip() == "1225"  # stdout clean
    assert b"nullbar" in b"".join(chunks)  # the bar went to the terminal (stderr)
    # stderr not a terminal: no bar
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, env=env, timeout=120)
    assert proc.returncode == 0 and b"nullbar" not in proc.stderr
