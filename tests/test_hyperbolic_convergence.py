"""The convergence tolerance of the distance fits (issue 13, item 4): fewer steps when the loss has
stopped falling, recorded per fit; without a tolerance every step runs, as before."""

from __future__ import annotations

import numpy as np
import pytest

from latent.errors import InputError
from latent.hyperbolic import CONVERGENCE_WINDOW, fit_distances
from latent.probes.base import ProbeData, ProbeOptions
import latent.probes.hyperbolic as hp
from latent.probes.hyperbolic import probe_hyperbolic_fit
from latent.synthetic import make_hierarchical

pytest.importorskip("geoopt")


def target(n: int = 12, seed: int = 0) -> np.ndarray:
    X = np.random.default_rng(seed).normal(size=(n, 5))
    return np.linalg.norm(X[:, None] - X[None], axis=-1)


def test_without_tol_every_step_runs():
    fit = fit_distances(target(), "poincare", 2, steps=120, seed=0, device="cpu")
    assert fit.steps_run == 120 and not fit.converged and fit.tol is None and len(fit.loss) == 120


def test_tol_stops_at_a_window_and_is_the_prefix_of_the_full_fit():
    T = target()
    full = fit_distances(T, "euclidean", 2, steps=400, seed=0, device="cpu")
    early = fit_distances(T, "euclidean", 2, steps=400, seed=0, device="cpu", tol=10.0)  # stops at the first check
    assert early.converged and early.tol == 10.0
    assert early.steps_run == CONVERGENCE_WINDOW + 1 and len(early.loss) == early.steps_run
    np.testing.assert_array_equal(early.loss, full.loss[:early.steps_run])  # the same steps, then a stop
    # the returned coordinates are those of the last recorded loss
    assert early.final_loss == pytest.approx(early.loss[-1], rel=1e-9)


def test_a_tiny_tol_never_stops():
    T = target()
    fit = fit_distances(T, "poincare", 2, steps=160, seed=0, device="cpu", tol=1e-300)
    full = fit_distances(T, "poincare", 2, steps=160, seed=0, device="cpu")
    assert not fit.converged and fit.steps_run == 160
    np.testing.assert_array_equal(fit.coords, full.coords)


@pytest.mark.parametrize("bad", [-1.0, 0.0, float("nan"), "x"])
def test_bad_tol_is_refused(bad):
    with pytest.raises(InputError, match="'tol'"):
        fit_distances(target(), "poincare", 2, steps=10, tol=bad)


def probe_data() -> ProbeData:
    syn = make_hierarchical(per_species=4, dim=16, signal=1.0, seed=0)
    return ProbeData.from_arrays(syn.embeddings, syn.taxonomy, syn.ids)


def run(data: ProbeData, **settings):
    extra = {"hyperbolic_fit": {"dims": [2, 8], "steps": 300, "max_species": 40, **settings}}
    return probe_hyperbolic_fit(data, ProbeOptions(seed=0, permutations=0, device="cpu", extra=extra)).to_frame()


def test_probe_records_convergence_and_tol_zero_runs_every_step():
    assert hp.FIT_TOL == 3e-4 == hp.HYPERBOLIC_FIT_DEFAULTS["tol"]
    data = probe_data()
    default = run(data)
    every = run(data, tol=0)
    fits = default.dropna(subset=["steps_run"])
    assert len(fits) and set(fits["tol"]) == {3e-4}
    assert ((fits["steps_run"] < 300) == fits["converged"].astype(bool)).all() and fits["converged"].astype(bool).any()
    every_fits = every.dropna(subset=["steps_run"])
    assert (every_fits["steps_run"] == 300).all() and not every_fits["converged"].astype(bool).any()
    # the stated tolerance: distortions within 2 % of the fits that run every step
    d0 = default.query("metric.str.contains('_distortion@')").set_index(["target", "metric"])["value"]
    d1 = every.query("metric.str.contains('_distortion@')").set_index(["target", "metric"])["value"]
    np.testing.assert_allclose(d0.sort_index(), d1.sort_index(), rtol=0.02)


@pytest.mark.parametrize("bad", [-1, "x", True, float("inf")])
def test_probe_refuses_a_bad_tol(bad):
    with pytest.raises(InputError, match="'tol' setting of probe 'hyperbolic_fit'"):
        run(probe_data(), tol=bad)
