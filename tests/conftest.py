"""Shared fixtures: the real public data beside the project (skipped cleanly when absent), the
planted-hierarchy synthetic data every probe is tested against, and capped threads.

Threads: the test suite runs on small, often busy machines. BLAS/OpenMP pools are capped at one
thread before anything imports numpy's or torch's thread pools (``os.environ.setdefault``, so a
caller's own setting wins), and torch's intra-op pool is set to one thread for the session when torch
is already imported (torch is never imported here just for that). No test depends on timing.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

for _var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

import pytest  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = Path(os.environ.get("LATENT_SHARED_DATA", REPO.parent / "shared" / "data"))

#: The planted-hierarchy data of the ``planted`` / ``unplanted`` fixtures (built-in taxonomy: 47
#: species, 4 kingdoms).
PLANTED = {"per_species": 12, "dim": 64, "signal": 1.0, "noise": 0.5, "seed": 1}
UNPLANTED = {"per_species": 12, "dim": 64, "signal": 0.0, "noise": 0.5, "seed": 2}


def shared_path(*parts: str) -> Path:
    """Path inside ../shared/data, or skip the test with the reason when it is absent."""
    path = SHARED_DATA.joinpath(*parts)
    if not path.exists():
        pytest.skip(f"real reference data not available: {path} is absent (see ../shared/data/README.md)")
    return path


@pytest.fixture
def shared():
    return shared_path


def _cap_torch_threads() -> None:
    """One torch intra-op thread, if torch is already imported (torch is never imported here)."""
    torch = sys.modules.get("torch")
    if torch is not None and torch.get_num_threads() != 1:
        torch.set_num_threads(1)


@pytest.fixture(autouse=True, scope="session")
def _one_torch_thread_session():
    """The cap for the whole session (when a test module imported torch at collection)."""
    _cap_torch_threads()
    yield


@pytest.fixture(autouse=True)
def _one_torch_thread():
    """The cap again around every test: torch is imported lazily, often by the test before."""
    _cap_torch_threads()
    yield
    _cap_torch_threads()


@pytest.fixture(scope="session")
def planted():
    """:class:`latent.synthetic.SyntheticData` with a planted hierarchy (:data:`PLANTED`); read-only."""
    from latent.synthetic import make_hierarchical

    return _read_only(make_hierarchical(**PLANTED))


@pytest.fixture(scope="session")
def unplanted():
    """The same taxonomy and sizes with no hierarchy (signal 0, :data:`UNPLANTED`); read-only."""
    from latent.synthetic import make_hierarchical

    return _read_only(make_hierarchical(**UNPLANTED))


@pytest.fixture(scope="session")
def planted_probe_data(planted):
    """:class:`latent.probes.ProbeData` of :func:`planted`."""
    from latent.probes import ProbeData

    return ProbeData.from_arrays(planted.embeddings, planted.taxonomy, planted.ids)


@pytest.fixture(scope="session")
def unplanted_probe_data(unplanted):
    """:class:`latent.probes.ProbeData` of :func:`unplanted`."""
    from latent.probes import ProbeData

    return ProbeData.from_arrays(unplanted.embeddings, unplanted.taxonomy, unplanted.ids)


@pytest.fixture(scope="session")
def planted_cache(planted, tmp_path_factory):
    """An HDF5 embedding cache of :func:`planted` (written once per session; do not modify)."""
    from latent.synthetic import write_synthetic

    return write_synthetic(tmp_path_factory.mktemp("planted") / "planted.h5", planted)


def _read_only(data):
    """Session data shared by many tests: arrays made read-only so no test can change another's input."""
    for name in ("embeddings", "ids", "species_means"):
        getattr(data, name).flags.writeable = False
    return data
