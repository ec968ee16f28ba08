"""Cache integrity against what goes wrong on real machines (issue 12).

* Resume never replaces: a ``.partial`` left by an interrupted ``--force`` run beside a complete cache
  is finished only with ``--force``; without it the command refuses in one line and the complete cache
  keeps its bytes and mtime (API in create and append mode, and ``latent embed`` killed with SIGKILL).
* A truncated cache is called damaged or truncated, a cache held open by a writing process is called
  open for writing (a real child process holds the lock).
* A full disk (RLIMIT_FSIZE in a real child, so that writes fail with EFBIG) is one line naming the
  path, no traceback, no segfault, and never a file that reads as complete; the committed rows resume.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import h5py
import numpy as np
import pytest

from latent.cache import CacheWriter, Provenance, open_cache
from latent.errors import CacheError

REPO = Path(__file__).resolve().parents[1]
ENV = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
DIM = 8
REFUSAL = "is complete; a replacement left by an interrupted --force run is in"


def _prov(**changes) -> Provenance:
    fields = dict(model="integrity", pretrained="none", preprocess={"resize": 8}, embed_dim=DIM, normalized=False)
    return Provenance(**{**fields, **changes})


def _rows(prefix: str, n: int, seed: int = 0) -> tuple[list[str], np.ndarray, dict[str, list[str]]]:
    x = np.random.default_rng(seed).standard_normal((n, DIM)).astype(np.float32)
    return [f"{prefix}{i}" for i in range(n)], x, {"genus": ["Corvus"] * n, "species": ["Corvus corax"] * n}


def _complete_cache(path: Path, prov: Provenance, n: int = 20) -> tuple[bytes, int]:
    with CacheWriter.open(path, prov) as w:
        w.append(*_rows("old", n))
    return path.read_bytes(), path.stat().st_mtime_ns


def _interrupted_force_run(path: Path, prov: Provenance, n: int = 5) -> None:
    """What a ``--force`` run killed after one commit leaves: the complete cache and a marked partial."""
    with pytest.raises(KeyboardInterrupt):
        with CacheWriter.open(path, prov, force=True) as w:
            w.append(*_rows("new", n, seed=1))
            raise KeyboardInterrupt
    assert path.exists() and Path(f"{path}.partial").exists()


def _unchanged(path: Path, before: tuple[bytes, int]) -> None:
    assert (path.read_bytes(), path.stat().st_mtime_ns) == before
    with open_cache(path) as c:
        assert c.complete and c.n_rows == 20 and c.ids[0] == "old0"


# ------------------------------------------------------------------------------ 1. resume never replaces
@pytest.mark.parametrize("mode", ["create", "append"])
@pytest.mark.parametrize("same_provenance", [True, False])
def test_partial_of_a_force_run_is_not_resumed_without_force(tmp_path, mode, same_provenance):
    path = tmp_path / "c.h5"
    before = _complete_cache(path, _prov())
    new = _prov() if same_provenance else _prov(model="other")
    _interrupted_force_run(path, new)
    partial_bytes = Path(f"{path}.partial").read_bytes()
    with pytest.raises(CacheError) as err:
        CacheWriter.open(path, new, mode=mode)
    assert str(err.value) == (f"{path} {REFUSAL} {path}.partial: re-run with --force to finish it, or delete it.")
    _unchanged(path, before)
    assert Path(f"{path}.partial").read_bytes() == partial_bytes  # the leftover is not touched either
    # with force the interrupted replacement is finished (resumed: its committed rows are kept)
    with CacheWriter.open(path, new, mode=mode, force=True) as w:
        assert w.existing_ids == {f"new{i}" for i in range(5)}
        w.append(*_rows("more", 2, seed=2))
    with open_cache(path) as c:
        assert c.n_rows == 7 and "replaces_existing" not in c.attrs
    assert not Path(f"{path}.partial").exists()


def test_an_interrupted_append_still_resumes_without_force(tmp_path):
    path = tmp_path / "c.h5"
    _complete_cache(path, _prov())
    with pytest.raises(KeyboardInterrupt):
        with CacheWriter.open(path, _prov(), mode="append") as w:
            w.append(*_rows("add", 3, seed=3))
            raise KeyboardInterrupt
    before = path.read_bytes(), path.stat().st_mtime_ns
    with pytest.raises(CacheError) as err:  # a new cache (create mode) would replace it: refused
        CacheWriter.open(path, _prov())
    assert str(err.value) == (f"{path} is complete; rows being added to it by an interrupted run are in "
                              f"{path}.partial: re-run that command to finish them, pass --force to replace {path}, "
                              f"or delete {path}.partial.")
    _unchanged(path, before)
    with CacheWriter.open(path, _prov(), mode="append") as w:
        assert w.n_rows == 23
    with open_cache(path) as c:
        assert c.n_rows == 23 and c.complete


def _embed(src: Path, out: Path, *extra: str) -> list[str]:
    return [sys.executable, "-m", "latent.cli", "embed", str(src), "--out", str(out), "--model", "random-tiny",
            "--batch-size", "4", "--workers", "0", "--commit-every", "4", "--store-dtype", "float32",
            "--no-progress", *extra]


def test_embed_killed_during_force_then_rerun_without_force_refuses(shared, tmp_path):
    birds = shared("cub10", "birds")
    src = tmp_path / "src"
    src.mkdir()
    for folder in sorted(birds.iterdir())[:1]:
        (src / folder.name).symlink_to(folder)
    out, partial = tmp_path / "birds.h5", tmp_path / "birds.h5.partial"
    subprocess.run(_embed(src, out), env=ENV, check=True, capture_output=True, timeout=300)
    before = out.read_bytes(), out.stat().st_mtime_ns
    with open_cache(out) as c:
        n = c.n_rows
    proc = subprocess.Popen(_embed(src, out, "--force"), env=ENV, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:  # kill it once its partial holds committed rows
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and proc.poll() is None:
            if partial.exists():
                try:
                    with h5py.File(partial, "r", locking=False) as f:
                        if int(f.attrs.get("rows_committed", 0)) >= 8:
                            break
                except OSError:
                    pass
            time.sleep(0.01)
        else:
            pytest.skip("the --force run finished before it could be killed")
        proc.send_signal(signal.SIGKILL)
    finally:
        proc.communicate(timeout=60)
    assert partial.exists() and (out.read_bytes(), out.stat().st_mtime_ns) == before

    again = subprocess.run(_embed(src, out), env=ENV, capture_output=True, text=True, timeout=300)
    assert again.returncode != 0 and "Traceback" not in again.stderr
    assert again.stderr.strip().splitlines()[-1].endswith(
        f"{out} {REFUSAL} {partial}: re-run with --force to finish it, or delete it.")
    assert (out.read_bytes(), out.stat().st_mtime_ns) == before and partial.exists()

    done = subprocess.run(_embed(src, out, "--force"), env=ENV, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert not partial.exists()
    with open_cache(out) as c:
        assert c.complete and c.n_rows == n


# ------------------------------------------------------------------------------ 2. truncated vs locked
def test_truncated_cache_is_called_damaged_not_locked(tmp_path):
    path = tmp_path / "c.h5"
    _complete_cache(path, _prov(), n=300)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(CacheError) as err:
        open_cache(path)
    message = str(err.value)
    assert message.startswith(f"{path} is damaged or truncated (not a readable HDF5 file): ")
    assert "another process" not in message and "\n" not in message


@pytest.mark.skipif(os.environ.get("HDF5_USE_FILE_LOCKING", "").upper() == "FALSE", reason="HDF5 file locking is off")
def test_cache_held_open_for_writing_by_another_process_is_called_locked(tmp_path):
    path = tmp_path / "c.h5"
    _complete_cache(path, _prov())
    holder = subprocess.Popen([sys.executable, "-c", f"import h5py, time; f = h5py.File({str(path)!r}, 'r+'); "
                               f"print('open', flush=True); time.sleep(60)"],
                              stdout=subprocess.PIPE, text=True, env=ENV)
    try:
        assert holder.stdout.readline().strip() == "open"
        with pytest.raises(CacheError, match=r"is open for writing in another process"):
            open_cache(path)
    finally:
        holder.kill()
        holder.wait()
    with open_cache(path) as c:  # once the writer is gone the cache reads again
        assert c.n_rows == 20


# ------------------------------------------------------------------------------ 3. full disk
_FULL_DISK_CHILD = textwrap.dedent("""
    import resource, signal, sys
    import numpy as np
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # writes past the limit fail with EFBIG
    limit = int(sys.argv[2])
    resource.setrlimit(resource.RLIMIT_FSIZE, (limit, resource.getrlimit(resource.RLIMIT_FSIZE)[1]))
    if sys.argv[1] == "cli":
        from latent.cli import main
        sys.exit(main(sys.argv[3:]))
    from latent.cache import CacheWriter, Provenance
    prov = Provenance(model="integrity", pretrained="none", preprocess={}, embed_dim=64, normalized=False)
    rng = np.random.default_rng(0)
    with CacheWriter.open(sys.argv[3], prov) as w:
        for b in range(w.n_rows // 200, 400):
            w.append([f"r{b}_{i}" for i in range(200)], rng.standard_normal((200, 64)),
                     {"species": ["Corvus corax"] * 200})
    print("done", flush=True)
""")


def _no_space(path: Path) -> str:
    """The full-disk message as a regex (the reason in brackets comes from the OS). RLIMIT_FSIZE makes the
    writes fail with EFBIG, said as "file too large"; a full disk (ENOSPC) as "no space left"."""
    return (rf"(file too large: {re.escape(str(path))} would pass the file size limit \([^)]+\); raise the limit "
            rf"\(ulimit -f\)|no space left on the device holding {re.escape(str(path))} \([^)]+\); free space) or "
            rf"choose another --out; the partial cache is kept and resumes\.")


def _full_disk(*args: str, limit: int) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", _FULL_DISK_CHILD, *args[:1], str(limit), *args[1:]], env=ENV,
                          capture_output=True, text=True, timeout=300)


@pytest.mark.skipif(not hasattr(signal, "SIGXFSZ"), reason="needs RLIMIT_FSIZE and SIGXFSZ")
def test_full_disk_is_one_line_and_the_committed_rows_resume(tmp_path):
    path = tmp_path / "full.h5"
    proc = _full_disk("api", str(path), limit=4_000_000)
    assert proc.returncode == 1, proc.stderr  # an exception, not a signal (a segfault is -11)
    assert re.fullmatch(rf"latent\.errors\.ResourceError: {_no_space(path)}", proc.stderr.strip().splitlines()[-1])
    assert not path.exists()
    with pytest.raises(CacheError, match="interrupted write"):
        open_cache(path)
    with open_cache(path, allow_incomplete=True) as c:
        n = c.n_rows
        assert not c.complete and n > 0 and n % 200 == 0
        assert c.ids[n - 1] == f"r{n // 200 - 1}_199"
    done = _full_disk("api", str(path), limit=2**40)  # space again: the same command resumes
    assert done.returncode == 0 and done.stdout.strip() == "done", done.stderr
    with open_cache(path) as c:
        assert c.complete and c.n_rows == 80_000 and len(set(c.ids)) == 80_000


@pytest.mark.skipif(not hasattr(signal, "SIGXFSZ"), reason="needs RLIMIT_FSIZE and SIGXFSZ")
@pytest.mark.parametrize("limit", [2_000, 1_500_000])
def test_full_disk_on_the_command_line_is_one_line(tmp_path, limit):
    out = tmp_path / "synth.h5"
    proc = _full_disk("cli", "synth", "--out", str(out), "--per-species", "50", "--dim", "256", limit=limit)
    assert proc.returncode == 1, proc.stderr  # a runtime failure (ResourceError), not bad input (2)
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and re.fullmatch(rf"latent synth: error: {_no_space(out)}", lines[0]), proc.stderr
    assert not out.exists()
    if Path(f"{out}.partial").exists():
        with open_cache(out, allow_incomplete=True) as c:
            assert not c.complete and c.n_rows == 0
