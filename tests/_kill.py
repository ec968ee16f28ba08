"""Kill a running ``latent embed`` at a chosen point of its writes (helpers of the kill -9 tests)."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from pathlib import Path


def _partial_inode(partial: Path) -> "int | None":
    try:
        return partial.stat().st_ino
    except FileNotFoundError:
        return None


def _wait_for_new_partial(proc: subprocess.Popen, partial: Path, old_inode: "int | None", *,
                          or_copy: bool = False) -> None:
    """Wait until the writer has (re)created ``partial`` (a resume renames a clean copy onto it), or with
    ``or_copy`` until that copy (``partial.tmp``) is being written."""
    copy = Path(str(partial) + ".tmp")
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        inode = _partial_inode(partial)
        if (inode is not None and inode != old_inode) or (or_copy and copy.exists()):
            return
        if proc.poll() is not None:
            raise AssertionError(f"embed ended before writing {partial}:\n{proc.communicate()}")
        time.sleep(0.002)
    proc.kill()
    raise AssertionError(f"{partial} did not appear within 60 s")


def _kill_after_writes(proc: subprocess.Popen, partial: Path, writes: int) -> None:
    """SIGKILL ``proc`` once the partial file has been written ``writes`` times (seen by its mtime).

    Each commit flushes the file twice (rows, then the counter that makes them count), so the kill
    lands after some commits, at a point set by ``writes`` whatever the machine's load.
    """
    last, seen = partial.stat().st_mtime_ns, 0
    deadline = time.monotonic() + 60
    while seen < writes and time.monotonic() < deadline:
        if proc.poll() is not None:
            raise AssertionError(f"embed ended before it could be killed:\n{proc.communicate()}")
        try:
            mtime = partial.stat().st_mtime_ns
        except FileNotFoundError:  # renamed into place: the run is complete
            break
        if mtime != last:
            last, seen = mtime, seen + 1
        time.sleep(0.001)
    os.kill(proc.pid, signal.SIGKILL)
    proc.communicate(timeout=60)
    assert proc.returncode == -signal.SIGKILL
