"""Linear probes (CLIP protocol): L2-regularised multinomial logistic regression per taxonomic rank.

The probe of Radford et al. (2021): a logistic regression on frozen embeddings, its inverse
regularisation strength ``C`` chosen on a validation split from a log grid (1e-6 .. 1e6, then refined
around the best value), refit on train + validation, scored on the test rows.

The objective is exactly scikit-learn's ``LogisticRegression(C=C)`` (L2, multinomial, intercept
unpenalised; binary problems use one weight vector, as scikit-learn does)::

    C * sum_i CE(x_i W + b, y_i) + 0.5 * ||W||_F^2

which latent minimises in the equivalent scaled form ``f = mean_i CE_i + ||W||^2 / (2 C n)`` (the
form scikit-learn >= 1.2 uses internally), so the minimiser is the same for the same ``C``.

The solver is full-batch L-BFGS in torch (CUDA when present; own implementation: compact
representation, strong-Wolfe line search; torch.optim.LBFGS recomputes the full gradient at every
line-search trial and keeps no memory between problems) with four things scikit-learn's lbfgs does
not do. None changes the objective, so the minimiser is the same:

- *Preconditioning.* Features are centred (the intercept absorbs the mean) and rotated onto the
  eigenvectors of their covariance. L-BFGS's initial inverse Hessian is, with few rows per class (at
  most 32, the species-rank case: 16 images of each of 1,000 species in 768 dimensions), a per-class
  "diagonal + the class's own rows" approximation of the Hessian inverted by Woodbury's identity,
  rebuilt every 10 iterations; otherwise the Hessian at the uniform prediction,
  ``diag(alpha * var_j + lam)`` (``lam = 1 / (C n)``).
- *Cheap line searches.* The logits of the current point and of the search direction are cached, so
  each trial step costs a few passes over ``(n, n_classes)`` numbers and no matrix product: an
  iteration costs two products with the data whatever the line search does.
- *Memory along the C path.* The penalty is quadratic, so the logits, the gradient and L-BFGS's
  curvature pairs stay exact when C changes (``y += (lam' - lam) s``): the sweep from strong to weak
  regularisation warm-starts all of them. Each new C first tries a secant predictor, the previous
  step along the path scaled to the new step in log C; its logits are known (``L_k - L_{k-1}``), so
  the line search along it is free of products with the data. At large C, where the solution moves
  along a nearly straight line in log C, this replaces most iterations.
- *Few small operations.* On a CPU, element-wise passes and small matrix products run on one thread,
  products of :data:`PARALLEL_PRODUCT` multiply-adds or more on all (see :class:`_Threads`); float32
  by default, with float64 accumulation where sums cancel.

Stopping rule: the largest absolute entry of the gradient of ``f`` (with respect to ``W`` and ``b``,
the quantity scikit-learn's ``tol`` bounds) falls below ``tol`` times its value at ``W = 0, b = 0``. The
relative form matters: with unit-norm 768-d embeddings and 1,000 classes the gradient at zero is
~1e-4, so scikit-learn's absolute default ``tol=1e-4`` stops before the first iteration.

The probe is meant for L2-normalised embeddings (the caller normalises; nothing here standardises or
normalises features implicitly).

Public API: :func:`fit_logistic`, :func:`sweep_C`, :func:`linear_probe`, :func:`linear_probe_ranks`,
:func:`train_val_split`, :class:`FixedCLogistic` (many fits at a given C on row subsets of one frame), and the result types :class:`LogisticModel`, :class:`ProbeResult`,
:class:`RankProbeResults`.
"""

from __future__ import annotations

import logging
import math
import time
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from latent.errors import InputError, format_list
from latent.ranks import RANKS, Rank, parse_rank

if TYPE_CHECKING:  # pragma: no cover
    import torch

__all__ = [
    "DEFAULT_GRID",
    "FixedCLogistic",
    "LogisticModel",
    "ProbeResult",
    "RankProbeResults",
    "fit_logistic",
    "sweep_C",
    "linear_probe",
    "linear_probe_ranks",
    "train_val_split",
]

log = logging.getLogger(__name__)

#: The CLIP sweep's coarse grid: 13 values of C, one per decade from 1e-6 to 1e6.
DEFAULT_GRID: np.ndarray = np.logspace(-6, 6, 13)

_SOLVERS = ("torch", "sklearn")
_DTYPES = ("float32", "float64")
_C1, _C2 = 1e-4, 0.9  # strong-Wolfe constants (sufficient decrease, curvature)
_MAX_LS = 20  # line-search trials per iteration
_RANK_CAP = 32  # at most this many rows per class: the Woodbury preconditioner (else a diagonal)
_H0_EVERY = 10  # rebuild the preconditioner every this many iterations
_REFRESH = 20  # recompute cached logits from scratch every this many iterations (float drift)


# ---------------------------------------------------------------------------------------------- checks
def _bad(parameter: str, function: str, expected: str, got: object) -> InputError:
    return InputError(f"The {parameter!r} parameter of {function} must be {expected}. Got {got} instead.")


def _check_X(X: Any, parameter: str, function: str, *, dim: "int | None" = None) -> np.ndarray:
    """A 2-D finite float array (float32 kept, anything else as float64)."""
    try:
        arr = np.asarray(X)
    except Exception as e:  # pragma: no cover - exotic inputs
        raise _bad(parameter, function, "a 2-D array of numbers", f"an object of type {type(X).__name__}") from e
    if arr.ndim != 2:
        raise _bad(parameter, function, "a 2-D array (n_rows, n_features)", f"an array of shape {arr.shape}")
    if arr.dtype.kind not in "fiub":
        raise _bad(parameter, function, "a 2-D array of numbers", f"dtype {arr.dtype}")
    if arr.shape[0] == 0 or arr.shape[1] == 0:
        raise _bad(parameter, function, "a non-empty 2-D array", f"shape {arr.shape}")
    if dim is not None and arr.shape[1] != dim:
        raise _bad(parameter, function, f"an array with {dim} columns (the features of the training rows)",
                   f"{arr.shape[1]} columns")
    if arr.dtype != np.float32:
        arr = arr.astype(np.float64)
    finite = np.isfinite(arr).all(axis=1)
    if not finite.all():
        rows = np.flatnonzero(~finite)
        raise _bad(parameter, function, "finite (no NaN or infinite values)",
                   f"non-finite values in {len(rows)} row(s): {format_list(rows.tolist(), limit=10)}")
    return arr


def _check_y(y: Any, n: int, parameter: str, function: str, rows_of: str) -> np.ndarray:
    """A 1-D array of integer (or string) labels with one label per row."""
    arr = np.asarray(y)
    if arr.ndim != 1:
        raise _bad(parameter, function, "a 1-D array of class labels", f"an array of shape {arr.shape}")
    if arr.dtype.kind == "f":
        if not np.all(np.isfinite(arr)) or not np.all(arr == np.round(arr)):
            raise _bad(parameter, function, "integer class labels", "non-integer values")
        arr = arr.astype(np.int64)
    elif arr.dtype.kind not in "iuUS":
        raise _bad(parameter, function, "integer (or string) class labels", f"dtype {arr.dtype}")
    if len(arr) != n:
        raise _bad(parameter, function, f"an array with one label per row of {rows_of} ({n} rows)",
                   f"{len(arr)} labels")
    return arr


def _classes_of(y: np.ndarray, parameter: str, function: str) -> tuple[np.ndarray, np.ndarray]:
    """``(classes, y_index)``: sorted distinct labels and each row's index among them (>= 2 classes)."""
    classes, index = np.unique(y, return_inverse=True)
    if len(classes) < 2:
        shown = "no class (no rows)" if len(classes) == 0 else f"1 class (label {classes[0].item()!r})"
        raise _bad(parameter, function, "labels of at least 2 classes", shown)
    return classes, index.astype(np.int64)


def _check_positive(value: Any, parameter: str, function: str) -> float:
    ok = isinstance(value, (int, float, np.integer, np.floating)) and not isinstance(value, bool)
    if not ok or not np.isfinite(value) or value <= 0:
        raise _bad(parameter, function, "a finite number > 0", repr(value))
    return float(value)


def _check_int(value: Any, parameter: str, function: str, minimum: int) -> int:
    if not isinstance(value, (int, np.integer)) or isinstance(value, bool) or value < minimum:
        raise _bad(parameter, function, f"an integer >= {minimum}", repr(value))
    return int(value)


def _check_grid(grid: Any, function: str) -> np.ndarray:
    arr = np.asarray(DEFAULT_GRID if grid is None else grid, dtype=float).ravel()
    if arr.size == 0 or not np.all(np.isfinite(arr)) or np.any(arr <= 0):
        raise _bad("grid", function, "a non-empty sequence of finite values of C > 0", repr(grid))
    return np.unique(arr)


def _check_choice(value: Any, parameter: str, function: str, choices: Sequence[str]) -> str:
    if value not in choices:
        raise _bad(parameter, function, f"one of {', '.join(repr(c) for c in choices)}", repr(value))
    return str(value)


def _resolve_device(device: Any, function: str) -> "torch.device":
    from latent.devices import resolve_device

    return resolve_device(device, function=function)


# ---------------------------------------------------------------------------------------------- model
def _softmax(logits: np.ndarray) -> np.ndarray:
    z = logits - logits.max(axis=1, keepdims=True)
    np.exp(z, out=z)
    z /= z.sum(axis=1, keepdims=True)
    return z


@dataclass(frozen=True)
class LogisticModel:
    """A fitted multinomial logistic regression (numpy arrays; no torch inside).

    Attributes
    ----------
    W : numpy.ndarray
        ``(d, K)`` weights. For two classes scikit-learn fits one vector ``w``; it is stored here as
        ``W = [-w/2, w/2]`` (and ``b = [-b0/2, b0/2]``), which gives the same probabilities.
    b : numpy.ndarray
        ``(K,)`` intercepts (centred to sum to 0 in the multinomial case; softmax ignores the shift).
    classes : numpy.ndarray
        ``(K,)`` the labels, sorted; column ``k`` of every output is ``classes[k]``.
    C : float
        Inverse regularisation strength.
    n_iter : int
        L-BFGS iterations used.
    converged : bool
        Whether the stopping rule (gradient below ``tol`` relative to its value at zero) was met.
    objective : float
        Final value of ``mean_i CE_i + ||W||^2 / (2 C n)`` (scikit-learn's objective / (C n)).
    grad_max : float
        Largest absolute gradient entry of that objective at the solution.
    grad_max0 : float
        The same at ``W = 0, b = 0`` (the scale of the stopping rule).
    """

    W: np.ndarray
    b: np.ndarray
    classes: np.ndarray
    C: float
    n_iter: int = 0
    converged: bool = True
    objective: float = math.nan
    grad_max: float = math.nan
    grad_max0: float = math.nan

    @property
    def n_features(self) -> int:
        return int(self.W.shape[0])

    @property
    def n_classes(self) -> int:
        return int(self.W.shape[1])

    def decision_function(self, X: np.ndarray) -> np.ndarray:
        """``(n, K)`` logits ``X W + b`` (float64)."""
        X = _check_X(X, "X", "LogisticModel.decision_function", dim=self.n_features)
        return X.astype(np.float64) @ self.W.astype(np.float64) + self.b.astype(np.float64)

    def predict_proba(self, X: np.ndarray) -> np.ndarray:
        """``(n, K)`` class probabilities (rows sum to 1), columns in the order of :attr:`classes`."""
        return _softmax(self.decision_function(X))

    def predict(self, X: np.ndarray) -> np.ndarray:
        """``(n,)`` the most probable label of each row."""
        return self.classes[np.argmax(self.decision_function(X), axis=1)]

    def score(self, X: np.ndarray, y: np.ndarray) -> float:
        """Accuracy of :meth:`predict` on ``(X, y)`` (labels outside :attr:`classes` count as wrong)."""
        y = _check_y(y, len(X), "y", "LogisticModel.score", "X")
        return float(np.mean(self.predict(X) == y))

    def sklearn_params(self) -> tuple[np.ndarray, np.ndarray]:
        """``(coef_, intercept_)`` laid out as scikit-learn's: ``(1, d), (1,)`` for two classes, else
        ``(K, d), (K,)``."""
        if self.n_classes == 2:
            return (self.W[:, 1] - self.W[:, 0])[None, :], np.array([self.b[1] - self.b[0]])
        return self.W.T.copy(), self.b.copy()


# ---------------------------------------------------------------------------------------------- torch solver
#: Multiply-adds from which a CPU matrix product of the solver uses every thread (below it, one).
#: Small products gain nothing from a second thread and, on a busy machine, stall a scheduler time
#: slice waiting for it: the separability probe of ``latent demo`` on its structureless cache (~500
#: rows x 32 d, up to 144 classes) took 40 s of CPU with every product on 2 threads and 2.6 s on one
#: (2-core machine, load ~3). A 1,000 x 768 x 100 product (7.7e7) still uses every thread.
PARALLEL_PRODUCT = 1 << 23


def _product_size(args: tuple) -> int:
    """Multiply-adds of ``mm``/``addmm``/``bmm`` given their positional tensors (the last two are the factors)."""
    mats = [a for a in args if getattr(a, "ndim", 0) >= 2]
    if len(mats) < 2:
        return 0
    A, B = mats[-2], mats[-1]
    return int(math.prod(A.shape)) * int(B.shape[-1])


class _Threads:
    """CPU thread policy: large matrix products use every thread, everything else runs on one.

    The element-wise passes and reductions of an iteration are memory-bound and short; on a busy
    machine each multi-threaded one can stall for a scheduler time slice waiting for its second
    thread (measured: 30 small operations took 105 ms with 2 threads, 2 ms with 1). Products with
    the data gain from every core when they are large (:data:`PARALLEL_PRODUCT` multiply-adds); small
    ones stall as the element-wise passes do and run on one thread. On CUDA this does nothing.
    """

    def __init__(self, device: "torch.device") -> None:
        import torch

        self.torch = torch
        self.active = device.type == "cpu"
        self.full = torch.get_num_threads()
        self.depth = 0  # nested ``with`` blocks: only the outermost sets and restores the thread count

    def __enter__(self) -> "_Threads":
        if self.active and self.depth == 0:
            self.full = self.torch.get_num_threads()
            self.torch.set_num_threads(1)
        self.depth += 1
        return self

    def __exit__(self, *exc: object) -> None:
        self.depth -= 1
        if self.active and self.depth == 0:
            self.torch.set_num_threads(self.full)

    def mm(self, fn: Callable[..., "torch.Tensor"], *args: Any, **kwargs: Any) -> "torch.Tensor":
        """Run a matrix product with every thread if it is large (:data:`PARALLEL_PRODUCT`), else on one."""
        if (not self.active or self.depth == 0 or self.full <= 1
                or _product_size(args) < PARALLEL_PRODUCT):
            return fn(*args, **kwargs)
        self.torch.set_num_threads(self.full)
        try:
            return fn(*args, **kwargs)
        finally:
            self.torch.set_num_threads(1)


class _Frame:
    """Rows centred and rotated once, shared by every problem on (subsets of) them.

    ``Z = (X - mu) Q`` with ``Q`` the eigenvectors of the covariance of ``X`` (identity without
    preconditioning). Any centring and any rotation give the same minimiser (the intercept absorbs the
    centre, the penalty is rotation-invariant); this one makes the preconditioner work. A sweep's
    training rows, its validation rows and the refit on both are row subsets of one frame, as are the
    seven ranks of :func:`linear_probe_ranks`: the covariance and its eigendecomposition are computed once.
    """

    def __init__(self, X: np.ndarray, *, device: "torch.device", dtype: str, precondition: bool) -> None:
        import torch

        self.torch = torch
        self.device = device
        self.threads = _Threads(device)
        self.dtype = torch.float32 if dtype == "float32" else torch.float64
        self.precondition = precondition
        Xt = torch.as_tensor(X, device=device).to(self.dtype)
        self.n, self.d = Xt.shape
        self.mu = Xt.mean(0)
        Xc = Xt - self.mu
        del Xt
        if precondition:
            cov = (Xc.T @ Xc).double() / self.n
            with self.threads:  # LAPACK's eigensolver takes many short parallel steps: one thread
                evals, Q = torch.linalg.eigh(cov)
            self.Q: "torch.Tensor | None" = Q.to(self.dtype)
            self.Z = Xc @ self.Q
            self.evals = evals.clamp_min(0).to(self.dtype)  # variance along each rotated axis
            self.mu_rot = self.Q.T @ self.mu
        else:
            self.Q = None
            self.Z = Xc
            self.evals = None
            self.mu_rot = self.mu

    def rows(self, index: "np.ndarray | None") -> "torch.Tensor":
        """``Z`` of the rows ``index`` (all rows for None)."""
        if index is None:
            return self.Z
        with self.threads:  # a gather: one thread (see _Threads)
            return self.Z[self.torch.as_tensor(np.asarray(index), device=self.device, dtype=self.torch.long)]


class _Problem:
    """One training set (rows of a :class:`_Frame`), prepared once and shared by every C of a sweep.

    Parameters live in the frame: ``logits = Z @ Wr + c``; ``W = Q Wr`` and ``b = c - mu W`` in the
    caller's frame. For two classes there is one column (scikit-learn's binary model: the logit of
    class 1 against a fixed 0 for class 0). ``theta = [Wr.ravel(), c]``.
    """

    def __init__(self, frame: _Frame, rows: "np.ndarray | None", y_index: np.ndarray, n_classes: int) -> None:
        with frame.threads:  # short element-wise passes: one thread (see _Threads)
            self._prepare(frame, rows, y_index, n_classes)

    def _prepare(self, frame: _Frame, rows: "np.ndarray | None", y_index: np.ndarray, n_classes: int) -> None:
        torch = frame.torch
        self.torch, self.device, self.threads, self.dtype = torch, frame.device, frame.threads, frame.dtype
        self.precondition = frame.precondition
        self.Q, self.mu, self.mu_rot = frame.Q, frame.mu, frame.mu_rot
        self.Z = frame.rows(rows)
        self.n, self.d = self.Z.shape
        self.K = int(n_classes)
        self.binary = self.K == 2
        self.k = 1 if self.binary else self.K  # parameter columns
        self.nw = self.d * self.k
        self._static_rows: "torch.Tensor | None" = None
        self._static_features: "torch.Tensor | None" = None
        self._static_squares: "torch.Tensor | None" = None
        device = self.device
        self.y = torch.as_tensor(y_index, device=device, dtype=torch.long)
        self.minus_one = torch.full((self.n, 1), -1.0, device=device, dtype=self.dtype)
        if self.binary:
            self.y1 = (self.y == 1).to(self.dtype)[:, None]
        class_counts = torch.bincount(self.y, minlength=self.K)
        sums = torch.zeros(self.K, self.d, device=device, dtype=self.dtype).index_add_(0, self.y, self.Z)
        if self.Q is not None:
            sums = sums @ self.Q.T  # back to the caller's axes (still centred)
        self.grad0 = self._grad_at_zero(sums, class_counts.to(self.dtype))
        if self.precondition:
            self.feature_var = frame.evals
            if int(class_counts.max()) <= _RANK_CAP and not self.binary:  # few rows per class: Woodbury
                self.Zsq = self.Z * self.Z
                self._class_starts = torch.cumsum(class_counts, 0) - class_counts
                self._rank = int(class_counts.max())
                self._static_rows = self._group(torch.argsort(self.y, stable=True))

    def _grad_at_zero(self, sums: "torch.Tensor", counts: "torch.Tensor") -> float:
        """Largest absolute gradient entry of ``f`` at ``W = 0, b = 0`` (caller's frame), from the
        centred class sums."""
        n, K = self.n, self.K
        total = sums.sum(0) + n * self.mu  # uncentred column sums
        sums = sums + counts[:, None] * self.mu[None, :]  # uncentred class sums
        if self.binary:  # p = 1/2: grad_w = X^T (1/2 - y1) / n
            gw = (0.5 * total - sums[1]) / n
            gb = 0.5 - counts[1] / n
            return max(float(gw.abs().max()), float(gb.abs()))
        gW = (total[None, :] / K - sums) / n  # (K, d)
        gb = 1.0 / K - counts / n
        return max(float(gW.abs().max()), float(gb.abs().max()))

    # -- conversions between the caller's frame (W, b) and theta
    def to_theta(self, W: np.ndarray, b: np.ndarray) -> "torch.Tensor":
        torch = self.torch
        Wt = torch.as_tensor(np.asarray(W), device=self.device).to(self.dtype)
        bt = torch.as_tensor(np.asarray(b), device=self.device).to(self.dtype)
        if self.binary:  # (d, 2) stored as [-w/2, w/2] -> w
            Wt = (Wt[:, 1] - Wt[:, 0])[:, None]
            bt = (bt[1] - bt[0]).reshape(1)
        c = bt + self.mu @ Wt
        Wr = Wt if self.Q is None else self.Q.T @ Wt
        return torch.cat([Wr.reshape(-1), c])

    def from_theta(self, theta: "torch.Tensor") -> tuple[np.ndarray, np.ndarray]:
        Wr, c = self.split(theta)
        W = Wr if self.Q is None else self.Q @ Wr
        b = c - self.mu @ W
        W_np = W.detach().cpu().numpy().astype(np.float64)
        b_np = b.detach().cpu().numpy().astype(np.float64)
        if self.binary:
            w, b0 = W_np[:, 0], b_np[0]
            return np.stack([-w / 2, w / 2], axis=1), np.array([-b0 / 2, b0 / 2])
        return W_np, b_np - b_np.mean()

    def split(self, theta: "torch.Tensor") -> tuple["torch.Tensor", "torch.Tensor"]:
        return theta[:self.nw].view(self.d, self.k), theta[self.nw:]

    def zeros(self) -> "torch.Tensor":
        return self.torch.zeros(self.nw + self.k, device=self.device, dtype=self.dtype)

    def logits(self, theta: "torch.Tensor") -> "torch.Tensor":
        Wr, c = self.split(theta)
        return self.threads.mm(self.torch.addmm, c, self.Z, Wr)

    @property
    def adaptive(self) -> bool:
        """Whether the preconditioner depends on the current point (then it is rebuilt as L-BFGS goes)."""
        return self._static_rows is not None

    def preconditioner(self, R: "torch.Tensor", lam: float) -> "_Diagonal | _Woodbury":
        """L-BFGS's initial inverse Hessian at the point whose residual ``P - onehot(y)`` is ``R``.

        Few rows per class (at most ``_RANK_CAP``, the usual case at the species rank): :class:`_Woodbury`.
        Otherwise the Hessian at the uniform prediction, ``diag(alpha * var_j + lam)`` in the rotated
        frame (``alpha = p (1 - p)`` at ``p = 1/K``), which does not depend on the point.
        """
        torch = self.torch
        if not self.precondition:
            return _Diagonal(torch.ones(self.nw + self.k, device=self.device, dtype=self.dtype))
        if self.adaptive:
            P = R.clone().scatter_add_(1, self.y[:, None], -self.minus_one)
            return _Woodbury(self, P.sub_(P * P), lam)  # p (1 - p)
        alpha = 0.25 if self.binary else (self.K - 1) / self.K**2
        hW = (self.feature_var * alpha + lam).reciprocal_()
        return _Diagonal(torch.cat([hW[:, None].expand(self.d, self.k).reshape(-1),
                                    torch.full((self.k,), 1.0 / alpha, device=self.device, dtype=self.dtype)]))

    def _group(self, order: "torch.Tensor") -> "torch.Tensor":
        """Rows ``order`` (grouped by class) as a padded ``(K, r)`` table, the first ``r`` of each class."""
        torch = self.torch
        ys = self.y[order]
        rank = torch.arange(self.n, device=self.device) - self._class_starts[ys]
        keep = rank < self._rank
        idx = torch.full((self.K, self._rank), -1, device=self.device, dtype=torch.long)
        idx[ys[keep], rank[keep]] = order[keep]
        return idx

    def lowrank_squares(self) -> "torch.Tensor":
        """``lowrank_features() ** 2``, built once."""
        if self._static_squares is None:
            Zk = self.lowrank_features()
            self._static_squares = Zk * Zk
        return self._static_squares

    def lowrank_features(self) -> "torch.Tensor":
        """``(K, r, d + 1)`` each class's rows ``[z, 1]`` (zeros for padding), built once."""
        torch = self.torch
        if self._static_features is None:
            idx = self._static_rows
            valid = (idx >= 0).unsqueeze(2).to(self.dtype)
            ones = torch.ones(*idx.shape, 1, device=self.device, dtype=self.dtype)
            self._static_features = torch.cat([self.Z[idx.clamp_min(0)], ones], 2).mul_(valid)
        return self._static_features

    def grad_max(self, g: "torch.Tensor", threshold: float) -> float:
        """Largest absolute gradient entry in the caller's frame (what scikit-learn's ``tol`` bounds).

        Rotations keep column norms, so ``norm / sqrt(d)`` bounds the answer from below: while that
        bound exceeds ``threshold`` it is returned and the rotation back is skipped.
        """
        torch = self.torch
        gWr, gc = self.split(g)
        G = torch.addr(gWr, self.mu_rot, gc)  # caller's frame: Q @ G
        g_c = float(torch.linalg.vector_norm(gc, math.inf))
        if self.Q is not None:
            lower = float(torch.linalg.vector_norm(G, dim=0).max()) / math.sqrt(self.d)
            if max(lower, g_c) > threshold:
                return max(lower, g_c)
            G = self.threads.mm(torch.mm, self.Q, G)
        return max(float(torch.linalg.vector_norm(G, math.inf)), g_c)


class _Diagonal:
    """``H0 = diag(inv)``."""

    def __init__(self, inv: "torch.Tensor") -> None:
        self.inv = inv

    def apply(self, v: "torch.Tensor") -> "torch.Tensor":
        return v * self.inv

    def apply_many(self, V: "torch.Tensor") -> "torch.Tensor":
        return V * self.inv


class _Woodbury:
    """Per-class block preconditioner: a diagonal plus the class's own rows, inverted by Woodbury.

    For class ``k`` (its weights and intercept; rows ``z~ = [z, 1]`` in the rotated frame) the Hessian
    block ``lam I + (1/n) sum_i p_ik (1 - p_ik) z~_i z~_i^T`` is approximated by
    ``D_k + (1/n) Z_k^T A_k Z_k``: ``Z_k`` the class's own rows (at most ``_RANK_CAP``), ``A_k`` their
    curvature ``p (1 - p)``, and ``D_k`` the exact diagonal of the rest (every other row's share, plus
    ``lam``), floored. With a few rows per class in many dimensions, most of a class's curvature lies
    along its own rows, which no diagonal can represent. Cross-class terms are ignored. Building it
    costs one product with the data (for ``D``) and ``K`` small ``r x r`` inversions; applying it
    costs two passes over the ``(K, r, d + 1)`` own-row features.
    """

    def __init__(self, pb: _Problem, curv: "torch.Tensor", lam: float) -> None:
        torch = pb.torch
        n, d, K = pb.n, pb.d, pb.K
        own = curv.gather(1, pb.y[:, None])[:, 0]  # curvature of each row for its own class
        idx = pb._static_rows  # (K, r) each class's rows, -1 = padding
        valid = idx >= 0
        rows = idx.clamp_min(0)
        a = torch.where(valid, own[rows], torch.zeros_like(own[rows]))
        Zk = pb.lowrank_features()  # (K, r, d + 1), zero rows for padding
        # The Hessian's diagonal without the low-rank rows' share (and lam on the weights), floored.
        D = torch.empty(d + 1, K, device=pb.device, dtype=pb.dtype)
        pb.threads.mm(torch.mm, pb.Zsq.T, curv, out=D[:d])
        D[d] = curv.sum(0)
        D.sub_(torch.einsum("krj,kr->jk", pb.lowrank_squares(), a)).div_(n)
        scale = float(D[d].mean())
        D[d].clamp_min_(1e-3 * scale)
        D[:d].add_(lam).clamp_min_(1e-3 * scale * float(pb.feature_var.mean()))
        self.inv = D.reciprocal_()  # (d + 1, K)
        self.Zk = Zk
        ZD = Zk * self.inv.T[:, None, :]
        M = pb.threads.mm(torch.bmm, ZD, Zk.transpose(1, 2)).double()
        diag = torch.where(valid, n / a.clamp_min(1e-8), torch.ones_like(a)).double()
        M.diagonal(dim1=1, dim2=2).add_(diag)
        self.Minv = torch.linalg.inv(M).to(pb.dtype)  # (K, r, r)
        self.d, self.K, self.nw, self.threads = d, K, pb.nw, pb.threads

    def apply(self, v: "torch.Tensor") -> "torch.Tensor":
        """``B v`` for a flat parameter vector ``v``."""
        return self.apply_many(v[None, :])[0]

    def apply_many(self, V: "torch.Tensor") -> "torch.Tensor":
        """``B v`` for each row of ``V`` ``(m, n_params)``, in one batched product."""
        import torch

        d, K, nw, m, mm = self.d, self.K, self.nw, V.shape[0], self.threads.mm
        U = torch.cat([V[:, :nw].reshape(m, d, K), V[:, nw:].reshape(m, 1, K)], 1).mul_(self.inv)  # (m, d + 1, K)
        Ut = U.permute(2, 1, 0)  # (K, d + 1, m)
        c = torch.bmm(self.Minv, mm(torch.bmm, self.Zk, Ut))  # (K, r, m)
        corr = mm(torch.bmm, self.Zk.transpose(1, 2), c).permute(2, 1, 0)  # (m, d + 1, K)
        U.sub_(corr.mul_(self.inv))
        return torch.cat([U[:, :d].reshape(m, -1), U[:, d]], 1)


class _Memory:
    """L-BFGS curvature pairs ``(s, y)`` in ring buffers, used through the compact representation.

    The inverse Hessian is ``H = H0 + [S, H0 Y] M [S^T; Y^T H0]`` (Byrd, Nocedal & Schnabel 1994) with
    ``H0 = gamma * B`` (``B``: the preconditioner, ``gamma = s.y / y.B y`` of the newest pair): a
    direction costs one application of ``B`` and a few matrix-vector products, instead of the
    two-loop recursion's 4m vector operations.
    """

    def __init__(self, size: int, n_params: int, like: "torch.Tensor") -> None:
        import torch

        self.size = size
        # one spare slot: a new pair is written there first and committed only if its curvature is positive
        self.S = torch.zeros(size + 1, n_params, device=like.device, dtype=like.dtype)
        self.Y = torch.zeros_like(self.S)
        self.BY = torch.zeros_like(self.S)  # B y_i
        self.SY = np.zeros((size + 1, size + 1))  # SY[i, j] = s_i . y_j
        self.YBY = np.zeros((size + 1, size + 1))  # y_i . B y_j
        self.order: list[int] = []  # committed slots, oldest pair first
        self.B: "_Diagonal | _Woodbury | None" = None

    def set_preconditioner(self, B: "_Diagonal | _Woodbury") -> None:
        self.B = B
        if self.order:
            self.BY.copy_(B.apply_many(self.Y))
            self.YBY = _np(self.Y @ self.BY.T)

    def free_slot(self) -> int:
        return next(k for k in range(self.size + 1) if k not in self.order)

    def push(self, k: int, by: "torch.Tensor | None" = None) -> None:
        """Commit the pair written in slot ``k`` unless its curvature ``s . y`` is not positive
        (``by``: ``B y`` if known)."""
        s, y = self.S[k], self.Y[k]
        sy = float(s @ y)
        if not sy > 0:
            return
        if len(self.order) == self.size:
            self.order.pop(0)
        self.order.append(k)
        self.BY[k] = self.B.apply(y) if by is None else by
        self.SY[k, :] = _np(self.Y @ s)
        self.SY[:, k] = _np(self.S @ y)
        self.SY[k, k] = sy
        row = _np(self.Y @ self.BY[k])
        self.YBY[k, :] = row
        self.YBY[:, k] = row

    def shift_penalty(self, delta_lam: float, n_weights: int) -> None:
        """Make the pairs exact for penalty ``lam + delta_lam`` (the penalty is quadratic: y += dlam s).

        ``BY`` and ``YBY`` are stale afterwards: call :meth:`set_preconditioner`.
        """
        if not self.order:
            return
        Sw = self.S[:, :n_weights]
        self.Y[:, :n_weights].add_(Sw, alpha=delta_lam)
        self.SY += delta_lam * _np(Sw @ Sw.T)
        self.order = [k for k in self.order if self.SY[k, k] > 0]

    def direction(self, g: "torch.Tensor", bg: "torch.Tensor") -> "torch.Tensor":
        """``-H g`` (``bg``: ``B g``)."""
        import torch

        if not self.order:
            return bg.neg()
        idx = self.order
        gamma = self.SY[idx[-1], idx[-1]] / self.YBY[idx[-1], idx[-1]]
        a = _np(self.S @ g)[idx]
        b = gamma * _np(self.BY @ g)[idx]
        SY = self.SY[np.ix_(idx, idx)]
        R = np.triu(SY)
        DYBY = np.diag(np.diag(SY)) + gamma * self.YBY[np.ix_(idx, idx)]
        v = -np.linalg.solve(R, a)
        u = np.linalg.solve(R.T, -DYBY @ v - b)
        u_full, v_full = np.zeros(self.size + 1), np.zeros(self.size + 1)
        u_full[idx], v_full[idx] = u, v
        # H g = gamma (B g + (B Y)^T v) + S^T u
        Hg = torch.addmv(bg, self.BY.T, self.S.new_tensor(v_full)).mul_(gamma)
        Hg = torch.addmv(Hg, self.S.T, self.S.new_tensor(u_full))
        return Hg.neg_()

    def copy(self) -> "_Memory":
        m = _Memory.__new__(_Memory)
        m.size, m.S, m.Y, m.BY = self.size, self.S.clone(), self.Y.clone(), self.BY.clone()
        m.SY, m.YBY, m.order, m.B = self.SY.copy(), self.YBY.copy(), list(self.order), self.B
        return m


def _np(t: "torch.Tensor") -> np.ndarray:
    return t.detach().double().cpu().numpy()


@dataclass
class _State:
    """A solution in the solver's frame, with what the next value of C can reuse."""

    theta: "torch.Tensor"
    lam: float
    memory: "_Memory | None" = None
    n_iter: int = 0
    converged: bool = False
    objective: float = math.nan
    grad_max: float = math.nan
    reason: str = ""
    L: "torch.Tensor | None" = None  # logits at theta
    g: "torch.Tensor | None" = None  # gradient at theta for penalty lam
    sq: float = math.nan  # ||Wr||^2
    since_refresh: int = 0
    prev: "tuple[torch.Tensor, torch.Tensor, float] | None" = None  # (theta, logits, lam) of the previous C


class _Line:
    """The objective along ``theta + t p`` from cached logits ``L0`` (at theta) and ``LP`` (of p).

    A trial step costs a few passes over ``(n, k)`` numbers and no product with the data. The penalty
    is the exact quadratic in ``t`` from ``sq = ||Wr||^2`` (carried from step to step in float64, so
    that consecutive lines agree at their junction to rounding). The derivative is computed from the
    residual ``R = P - onehot(y)`` (row sums in float32, their total in float64): near the optimum it
    is a small difference of large sums, which one float32 accumulation over ``n k`` terms would drown.
    """

    def __init__(self, problem: _Problem, L0: "torch.Tensor", LP: "torch.Tensor", theta: "torch.Tensor",
                 p: "torch.Tensor", lam: float, work: "torch.Tensor", work2: "torch.Tensor", sq: float) -> None:
        import torch

        self.pb, self.L0, self.LP, self.work, self.work2, self.lam = problem, L0, LP, work, work2, lam
        nw = problem.nw
        self.sq = sq
        self.wp = float(torch.sum(theta[:nw] * p[:nw], dtype=torch.float64))
        self.pp = float(torch.sum(p[:nw] * p[:nw], dtype=torch.float64))
        self.t_eval: "float | None" = None

    def __call__(self, t: float) -> tuple[float, float]:
        """``(f(t), f'(t))``; leaves :attr:`R` holding the residual ``P - onehot(y)`` at ``t``."""
        import torch

        pb, n, f64, mm = self.pb, self.pb.n, torch.float64, self.pb.threads.mm
        B = torch.add(self.L0, self.LP, alpha=t, out=self.work)
        if pb.binary:
            # CE_i = softplus(z_i) - y_i z_i
            loss = float(torch.sum(torch.nn.functional.softplus(B) - pb.y1 * B, dtype=f64)) / n
            R = torch.sigmoid(B, out=B).sub_(pb.y1)
        else:
            # CE_i = -log P[i, y_i]; rows where that probability underflows get the exact log-sum-exp.
            R = mm(torch.softmax, B, 1)
            py = R.gather(1, pb.y[:, None])
            loss = -float(torch.sum(torch.log(py), dtype=f64))
            if not math.isfinite(loss):  # P[i, y_i] underflowed to 0 somewhere: log-sum-exp for those rows
                tiny = py[:, 0] < 1e-30
                rows = tiny.nonzero()[:, 0]
                exact = torch.logsumexp(B[rows], 1) - B[rows].gather(1, pb.y[rows, None])[:, 0]
                loss = float(torch.sum(exact, dtype=f64)) - float(torch.sum(torch.log(py[~tiny]), dtype=f64))
            loss /= n
            R.scatter_add_(1, pb.y[:, None], pb.minus_one)
        rows = mm(torch.sum, torch.mul(R, self.LP, out=self.work2), 1)  # per-row float32 sums, then float64
        dphi = float(torch.sum(rows, dtype=f64)) / n
        loss += 0.5 * self.lam * self.penalty_sq(t)
        dphi += self.lam * (self.wp + t * self.pp)
        self.t_eval, self.R = t, R
        return loss, dphi

    def penalty_sq(self, t: float) -> float:
        """``||Wr + t Pw||^2``."""
        return self.sq + 2 * t * self.wp + t * t * self.pp


def _line_search(phi: Callable[[float], tuple[float, float]], f0: float, g0: float, t: float
                 ) -> tuple[float, float, float, bool]:
    """A step ``t`` meeting the strong Wolfe conditions along a descent direction of a convex function.

    Bracketing by the sign of the derivative, then safeguarded secant steps on the derivative.
    Returns ``(t, f(t), f'(t), ok)``; ``ok`` is False if no decrease was found.
    """
    lo_t, lo_g = 0.0, g0
    hi_t: "float | None" = None
    hi_g = math.nan
    best = (0.0, f0, g0)
    for _ in range(_MAX_LS):
        f, g = phi(t)
        if f < best[1]:
            best = (t, f, g)
        armijo = f <= f0 + _C1 * t * g0
        if armijo and abs(g) <= -_C2 * g0:
            return t, f, g, True
        if not armijo and g < 0:  # impossible for a convex function: rounding noise, stop here
            break
        if not armijo or g >= 0:
            hi_t, hi_g = t, g
        else:
            lo_t, lo_g = t, g
        if hi_t is None:  # still descending: extrapolate (secant on the derivative, 2x to 10x)
            t = min(max(2.0 * t, _secant(0.0, g0, t, g)), 10.0 * t)
        else:
            width = hi_t - lo_t
            if width <= 1e-12 * max(1.0, hi_t):
                break
            t_new = _secant(lo_t, lo_g, hi_t, hi_g) if hi_g > 0 > lo_g else lo_t + 0.5 * width
            t = min(max(t_new, lo_t + 0.05 * width), hi_t - 0.05 * width)
    t, f, g = best
    return (t, f, g, True) if t > 0.0 else (0.0, f0, g0, False)


def _secant(t0: float, g0: float, t1: float, g1: float) -> float:
    """Zero of the line through ``(t0, g0)`` and ``(t1, g1)`` (the derivative's root estimate)."""
    if g1 == g0:
        return 2.0 * t1
    return t1 - g1 * (t1 - t0) / (g1 - g0)


def _solve(problem: _Problem, lam: float, start: _State, *, max_iter: int, tol: float, history: int,
           consume: bool = False) -> _State:
    """Minimise ``f`` for penalty ``lam`` from ``start``.

    The start's L-BFGS memory, logits and gradient are reused (shifted to ``lam``: the penalty is
    quadratic, so they stay exact), which saves two products with the data per value of C. With
    ``consume`` the start's buffers may be overwritten (the caller will not use ``start`` again).
    """
    import torch

    with problem.threads as threads:
        n, nw = problem.n, problem.nw
        Z = problem.Z
        theta = start.theta.clone()
        warm = start.L is not None
        dlam = lam - start.lam if warm else 0.0
        if start.memory is not None:
            memory = start.memory if consume else start.memory.copy()
            if dlam:
                memory.shift_penalty(dlam, nw)
        else:
            memory = _Memory(history, theta.numel(), theta)
        L = (start.L if consume else start.L.clone()) if warm else problem.logits(theta)
        since_refresh = start.since_refresh if warm else 0
        sq = start.sq if warm else float(torch.sum(theta[:nw] * theta[:nw], dtype=torch.float64))
        work = torch.empty_like(L)
        work2 = torch.empty_like(L)
        threshold = tol * problem.grad0

        def gradient(R: "torch.Tensor", out: "torch.Tensor") -> "torch.Tensor":
            """Flat gradient at ``theta`` from the residual ``R = P - onehot(y)``, written into ``out``."""
            gW, gc = problem.split(out)
            Wr, _ = problem.split(theta)
            threads.mm(torch.addmm, Wr, Z.T, R, beta=lam, alpha=1.0 / n, out=gW)
            torch.sum(R, 0, out=gc)
            gc.div_(n)
            return out

        # Objective and gradient at the start (a line at t = 0: no product with the data when warm).
        line = _Line(problem, L, L, theta, theta, lam, work, work2, sq)
        f, _ = line(0.0)
        if warm and start.g is not None:
            g = start.g.clone()
            g[:nw].add_(theta[:nw], alpha=dlam)
        else:
            g = gradient(line.R, torch.empty_like(theta))
        gmax = problem.grad_max(g, threshold)
        n_iter, reason = 0, "max_iter"
        converged = gmax <= threshold
        # the solution at start.lam, for the next C's predictor
        here = (theta.clone(), L.clone(), start.lam) if warm and math.isfinite(start.lam) else None

        def step(p: "torch.Tensor", LP: "torch.Tensor") -> bool:
            """Line search along ``p`` (logits ``LP``); on success move there and update the memory."""
            nonlocal L, sq, since_refresh, n_iter, g, bg, f, gmax, converged, line
            line = _Line(problem, L, LP, theta, p, lam, work, work2, sq)
            t, f_new, _, ok = _line_search(line, f, float(torch.dot(g, p)), 1.0)
            if not ok:
                return False
            if line.t_eval != t:
                line(t)
            sq = line.penalty_sq(t)
            theta.add_(p, alpha=t)
            n_iter += 1
            since_refresh += 1
            if since_refresh >= _REFRESH:  # recompute the cached logits, ||Wr||^2 and f from scratch
                L = problem.logits(theta)
                sq = float(torch.sum(theta[:nw] * theta[:nw], dtype=torch.float64))
                line = _Line(problem, L, L, theta, theta, lam, work, work2, sq)
                f_new, _ = line(0.0)
                since_refresh = 0
            else:
                L.add_(LP, alpha=t)
            fresh = problem.adaptive and n_iter % _H0_EVERY == 0
            if fresh:
                memory.set_preconditioner(problem.preconditioner(line.R, lam))
            k = memory.free_slot()
            torch.mul(p, t, out=memory.S[k])
            gradient(line.R, memory.Y[k])  # the new gradient, for now
            g_new = memory.Y[k].clone()
            memory.Y[k].sub_(g)
            bg_new = memory.B.apply(g_new)
            memory.push(k, None if fresh else bg_new - bg)  # B y = B g_new - B g while B is unchanged
            g, bg, f = g_new, bg_new, f_new
            gmax = problem.grad_max(g, threshold)
            converged = gmax <= threshold
            return True

        if not converged:
            memory.set_preconditioner(problem.preconditioner(line.R, lam))
            bg = memory.B.apply(g)
            if warm and start.prev is not None and dlam and max_iter > 0 and start.prev[2] != start.lam:
                # Secant predictor along the C path: the last step, scaled to this step in log C. Its
                # logits are known, so the line search along it costs no product with the data.
                theta_prev, L_prev, lam_prev = start.prev
                ratio = math.log(start.lam / lam) / math.log(lam_prev / start.lam)
                p = (theta - theta_prev).mul_(ratio)
                if float(torch.dot(g, p)) < 0:
                    step(p, (L - L_prev).mul_(ratio))
        while not converged and n_iter < max_iter:
            p = memory.direction(g, bg)
            if not float(torch.dot(g, p)) < 0:  # no descent direction: restart from the preconditioned gradient
                B = memory.B
                memory = _Memory(history, theta.numel(), theta)
                memory.set_preconditioner(B)
                p = memory.direction(g, bg)
            Pw, pc = problem.split(p)
            if not step(p, threads.mm(torch.addmm, pc, Z, Pw)):
                reason = "no decrease (precision limit)"
                break
        if converged:
            reason = "tol"
        return _State(theta, lam, memory, n_iter, converged, f, gmax, reason, L, g, sq, since_refresh, here)


# ---------------------------------------------------------------------------------------------- sklearn reference
def _fit_sklearn(X: np.ndarray, y_index: np.ndarray, n_classes: int, C: float, start: "tuple | None", *,
                 tol_abs: float, max_iter: int) -> tuple[np.ndarray, np.ndarray, int, bool]:
    """scikit-learn's lbfgs on the same objective, warm-started from ``start = (W, b)``."""
    from sklearn.exceptions import ConvergenceWarning
    from sklearn.linear_model import LogisticRegression

    est = LogisticRegression(C=C, tol=tol_abs, max_iter=max_iter, warm_start=start is not None)
    if start is not None:
        W, b = start
        model = LogisticModel(np.asarray(W), np.asarray(b), np.arange(n_classes), C)
        coef, intercept = model.sklearn_params()
        est.coef_, est.intercept_ = coef.astype(X.dtype), intercept.astype(X.dtype)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        est.fit(X, y_index)
    n_iter = int(np.max(est.n_iter_))
    coef, intercept = est.coef_.astype(np.float64), est.intercept_.astype(np.float64)
    if n_classes == 2:
        w, b0 = coef[0], intercept[0]
        return np.stack([-w / 2, w / 2], axis=1), np.array([-b0 / 2, b0 / 2]), n_iter, n_iter < max_iter
    return coef.T.copy(), intercept, n_iter, n_iter < max_iter


def _grad0_numpy(X: np.ndarray, y_index: np.ndarray, n_classes: int) -> float:
    """Largest gradient entry of ``f`` at zero (numpy twin of ``_Problem._grad_at_zero``)."""
    n = len(X)
    Xd = X.astype(np.float64)
    order = np.argsort(y_index, kind="stable")
    counts = np.bincount(y_index, minlength=n_classes)
    sums = np.add.reduceat(Xd[order], np.concatenate([[0], np.cumsum(counts)[:-1]]), axis=0)  # every class has rows
    total = Xd.sum(0)
    if n_classes == 2:
        return max(np.abs((0.5 * total - sums[1]) / n).max(), abs(0.5 - counts[1] / n))
    return max(np.abs((total[None, :] / n_classes - sums) / n).max(), np.abs(1 / n_classes - counts / n).max())


# ---------------------------------------------------------------------------------------------- public: fit
def fit_logistic(
    X: np.ndarray,
    y: np.ndarray,
    *,
    C: float,
    max_iter: int = 500,
    tol: float = 1e-3,
    device: Any = "auto",
    warm_start: "LogisticModel | tuple[np.ndarray, np.ndarray] | None" = None,
    dtype: str = "float32",
    precondition: bool = True,
    history: int = 10,
) -> LogisticModel:
    """Fit L2-regularised multinomial logistic regression with scikit-learn's objective.

    Minimises ``C * sum_i CE(x_i W + b, y_i) + 0.5 * ||W||^2`` (intercept unpenalised), the objective of
    ``sklearn.linear_model.LogisticRegression(C=C)``, by full-batch L-BFGS in torch (see the module
    docstring for the solver).

    Parameters
    ----------
    X
        ``(n, d)`` features (float32 is used as is; the caller L2-normalises embeddings if wanted).
    y
        ``(n,)`` integer (or string) labels; the classes are its distinct values, sorted (``0 .. K-1``
        in the usual case). At least two classes.
    C
        Inverse regularisation strength (> 0).
    max_iter
        Maximum L-BFGS iterations.
    tol
        Stop when the largest absolute gradient entry of ``mean CE + ||W||^2 / (2 C n)`` is below
        ``tol`` times its value at ``W = 0, b = 0`` (``converged``). In float32 the solver may stop
        earlier when rounding leaves no decrease to find (``converged`` False; use float64 to go further).
    device
        ``"auto"`` (CUDA when available, else CPU), ``"cpu"``, ``"cuda"``, ``"cuda:1"`` or a torch.device.
    warm_start
        A :class:`LogisticModel` with the same classes, or ``(W (d, K), b (K,))``, to start from.
    dtype
        ``"float32"`` (fast; gradients good to ~1e-6 relative) or ``"float64"`` (for tight tolerances).
    precondition
        Rotate onto the covariance's eigenvectors and precondition L-BFGS (see the module docstring):
        same minimiser, usually fewer iterations. False: plain L-BFGS on centred features.
    history
        Number of L-BFGS curvature pairs kept.

    Returns
    -------
    LogisticModel
        ``W (d, K)``, ``b (K,)``, ``classes (K,)`` and convergence information.

    Raises
    ------
    InputError
        Fewer than two classes, lengths that disagree, non-finite features, bad options.
    """
    function = "fit_logistic"
    X = _check_X(X, "X", function)
    y = _check_y(y, len(X), "y", function, "X")
    classes, y_index = _classes_of(y, "y", function)
    C = _check_positive(C, "C", function)
    max_iter = _check_int(max_iter, "max_iter", function, 0)
    tol = _check_positive(tol, "tol", function)
    history = _check_int(history, "history", function, 1)
    dtype = _check_choice(dtype, "dtype", function, _DTYPES)
    dev = _resolve_device(device, function)
    start_W = None
    if warm_start is not None:
        if isinstance(warm_start, LogisticModel):
            if not np.array_equal(warm_start.classes, classes):
                raise _bad("warm_start", function, f"a model of the same {len(classes)} classes as 'y'",
                           f"a model of {len(warm_start.classes)} classes")
            start_W = (warm_start.W, warm_start.b)
        else:
            try:
                W0, b0 = (np.asarray(a, dtype=np.float64) for a in warm_start)
            except (TypeError, ValueError) as e:
                raise _bad("warm_start", function, "a LogisticModel or a pair (W, b)", repr(type(warm_start))) from e
            if W0.shape != (X.shape[1], len(classes)) or b0.shape != (len(classes),):
                raise _bad("warm_start", function, f"(W, b) of shapes ({X.shape[1]}, {len(classes)}) and "
                           f"({len(classes)},)", f"shapes {W0.shape} and {b0.shape}")
            start_W = (W0, b0)
    start = time.perf_counter()
    problem = _Problem(_Frame(X, device=dev, dtype=dtype, precondition=precondition), None, y_index, len(classes))
    lam = 1.0 / (C * problem.n)
    theta0 = problem.zeros() if start_W is None else problem.to_theta(*start_W)
    state = _solve(problem, lam, _State(theta0, lam, None), max_iter=max_iter, tol=tol, history=history)
    W, b = problem.from_theta(state.theta)
    log.debug("fit_logistic: n=%d d=%d K=%d C=%g: %d iterations, %s, %.2fs", problem.n, problem.d,
              problem.K, C, state.n_iter, state.reason, time.perf_counter() - start)
    return LogisticModel(W, b, classes, C, state.n_iter, state.converged, state.objective, state.grad_max,
                         problem.grad0)


# ---------------------------------------------------------------------------------------------- sweep
class _TorchBackend:
    """Fits at successive C on one training set (rows of a frame); validation scores on the device."""

    def __init__(self, frame: _Frame, train_rows: np.ndarray, y_index: np.ndarray, K: int, val_rows: np.ndarray,
                 y_val_index: np.ndarray, *, max_iter: int, tol: float, history: int) -> None:
        torch = frame.torch
        self.problem = _Problem(frame, train_rows, y_index, K)
        self.Zval = frame.rows(val_rows)
        self.yval = torch.as_tensor(y_val_index, device=frame.device, dtype=torch.long)
        self.max_iter, self.tol, self.history = max_iter, tol, history

    def initial(self) -> _State:
        return _State(self.problem.zeros(), math.nan, None)

    def fit(self, C: float, start: _State, consume: bool) -> _State:
        lam = 1.0 / (C * self.problem.n)
        return _solve(self.problem, lam, start, max_iter=self.max_iter, tol=self.tol, history=self.history,
                      consume=consume)

    def validate(self, state: _State) -> tuple[int, float]:
        with self.problem.threads:  # short passes over the validation logits: one thread (see _Threads)
            return self._validate(state)

    def _validate(self, state: _State) -> tuple[int, float]:
        pb, torch = self.problem, self.problem.torch
        Wr, c = pb.split(state.theta)
        L = torch.addmm(c, self.Zval, Wr)
        if pb.binary:
            L = torch.cat([torch.zeros_like(L), L], dim=1)
        known = self.yval >= 0
        correct = int((L.argmax(1) == self.yval).sum())
        lp = torch.log_softmax(L[known].double(), dim=1)
        if not bool(known.any()):
            return correct, math.nan
        nll = float(-lp[torch.arange(int(known.sum()), device=lp.device), self.yval[known]].mean())
        return correct, nll

    def weights(self, state: _State) -> tuple[np.ndarray, np.ndarray]:
        return self.problem.from_theta(state.theta)

    @property
    def grad0(self) -> float:
        return self.problem.grad0


@dataclass
class _SkState:
    W: "np.ndarray | None"
    b: "np.ndarray | None"
    n_iter: int = 0
    converged: bool = False
    reason: str = ""


class _SklearnBackend:
    """The same sweep with scikit-learn's lbfgs (reference implementation, same stopping rule)."""

    def __init__(self, X: np.ndarray, y_index: np.ndarray, K: int, X_val: np.ndarray, y_val_index: np.ndarray,
                 *, max_iter: int, tol: float) -> None:
        self.X, self.y, self.K, self.Xv, self.yv = X, y_index, K, X_val, y_val_index
        self.max_iter = max_iter
        self.grad0 = _grad0_numpy(X, y_index, K)
        self.tol_abs = tol * self.grad0

    def initial(self) -> _SkState:
        return _SkState(None, None)

    def fit(self, C: float, start: _SkState, consume: bool) -> _SkState:
        warm = None if start.W is None else (start.W, start.b)
        W, b, n_iter, conv = _fit_sklearn(self.X, self.y, self.K, C, warm, tol_abs=self.tol_abs, max_iter=self.max_iter)
        return _SkState(W, b, n_iter, conv, "tol" if conv else "max_iter")

    def validate(self, state: _SkState) -> tuple[int, float]:
        L = self.Xv.astype(np.float64) @ state.W + state.b
        correct = int(np.sum(L.argmax(1) == self.yv))
        known = self.yv >= 0
        if not known.any():
            return correct, math.nan
        Lk = L[known]
        m = Lk.max(1, keepdims=True)
        lse = (m[:, 0] + np.log(np.exp(Lk - m).sum(1)))
        return correct, float(np.mean(lse - Lk[np.arange(len(Lk)), self.yv[known]]))

    def weights(self, state: _SkState) -> tuple[np.ndarray, np.ndarray]:
        return state.W, state.b


def _run_sweep(backend: Any, grid: np.ndarray, *, refine: bool, refine_steps: int, n_val: int
               ) -> tuple[float, pd.DataFrame, Any]:
    """Coarse grid from strong to weak regularisation (warm starts), then halving search around the best."""
    rows: list[dict[str, Any]] = []
    states: dict[float, Any] = {}
    best: "tuple[int, float, float] | None" = None  # (correct, -nll, C) maximised

    def evaluate(C: float, start: Any, stage: str) -> Any:
        nonlocal best
        t0 = time.perf_counter()
        state = backend.fit(C, start, all(kept is not start for kept in states.values()))
        correct, nll = backend.validate(state)
        seconds = time.perf_counter() - t0
        rows.append({"C": C, "val_accuracy": correct / n_val, "val_log_loss": nll, "n_iter": state.n_iter,
                     "converged": state.converged, "stop": state.reason, "stage": stage, "seconds": seconds})
        log.debug("C=%g: val accuracy %.4f, log loss %.4f, %d iterations, %.2fs", C, correct / n_val, nll,
                  state.n_iter, seconds)
        key = (correct, -nll if np.isfinite(nll) else -math.inf, -C)
        if best is None or key > best:
            best = key
            states.clear()
            states[C] = state
        return state

    state = backend.initial()
    for C in grid:  # sorted ascending: strong -> weak regularisation
        state = evaluate(float(C), state, "grid")
    if refine and len(grid) > 1:
        logs = np.log10(grid)
        i = int(np.searchsorted(grid, -best[2]))
        gaps = [logs[i] - logs[i - 1]] if i > 0 else []
        gaps += [logs[i + 1] - logs[i]] if i + 1 < len(grid) else []
        h = min(gaps) / 2
        lo, hi = logs[0], logs[-1]
        done = set(np.round(logs, 9))
        for _ in range(refine_steps):
            centre = math.log10(-best[2])
            for x in (centre - h, centre + h):
                if lo - 1e-9 <= x <= hi + 1e-9 and round(x, 9) not in done:
                    done.add(round(x, 9))
                    start = states[-best[2]]
                    evaluate(float(10.0**x), start, "refine")
            h /= 2
    best_C = -best[2]
    table = pd.DataFrame(rows).sort_values("C", kind="stable").reset_index(drop=True)
    return best_C, table, states[best_C]


def _make_backend(solver: str, X_train: np.ndarray, y_index: np.ndarray, K: int, X_val: np.ndarray,
                  y_val_index: np.ndarray, *, frame: "_Frame | None", train_rows: "np.ndarray | None",
                  val_rows: "np.ndarray | None", device: Any, dtype: str, precondition: bool, max_iter: int,
                  tol: float, function: str) -> Any:
    if solver == "sklearn":
        return _SklearnBackend(X_train, y_index, K, X_val, y_val_index, max_iter=max_iter, tol=tol)
    if frame is None:  # one frame for the training and validation rows
        frame = _Frame(np.concatenate([X_train, X_val]), device=_resolve_device(device, function), dtype=dtype,
                       precondition=precondition)
        train_rows = np.arange(len(X_train))
        val_rows = np.arange(len(X_train), len(X_train) + len(X_val))
    return _TorchBackend(frame, train_rows, y_index, K, val_rows, y_val_index, max_iter=max_iter, tol=tol,
                         history=10)


def sweep_C(
    X_train: np.ndarray,
    y_train: np.ndarray,
    X_val: np.ndarray,
    y_val: np.ndarray,
    *,
    grid: "Sequence[float] | np.ndarray | None" = None,
    refine: bool = True,
    refine_steps: int = 3,
    device: Any = "auto",
    max_iter: int = 500,
    tol: float = 1e-3,
    dtype: str = "float32",
    precondition: bool = True,
    solver: str = "torch",
) -> tuple[float, pd.DataFrame]:
    """Choose C by validation accuracy over a log grid (CLIP protocol).

    The grid is fitted from the smallest C (strongest regularisation) to the largest, each fit
    warm-started from the previous one (weights and L-BFGS memory). With ``refine``, a halving search
    follows: the two points half-way (in log10 C) between the best C and its grid neighbours, then half
    that distance around the new best, ``refine_steps`` times (one decade becomes 8 steps per decade in
    3 steps, CLIP's resolution), staying inside the grid's range. Ties in validation accuracy go to the
    lower validation log loss, then to the smaller C.

    Parameters
    ----------
    X_train, y_train
        ``(n, d)`` features and ``(n,)`` labels (>= 2 classes).
    X_val, y_val
        ``(m, d)`` features and ``(m,)`` labels; labels absent from ``y_train`` count as errors.
    grid
        Values of C (default :data:`DEFAULT_GRID`, 1e-6 .. 1e6, one per decade).
    refine, refine_steps
        Halving search around the best grid value, and its number of steps.
    device, max_iter, tol, dtype, precondition
        As in :func:`fit_logistic`.
    solver
        ``"torch"`` or ``"sklearn"`` (scikit-learn's lbfgs with the same stopping rule: the reference).

    Returns
    -------
    best_C : float
    table : pandas.DataFrame
        One row per fitted C, sorted by C: ``C, val_accuracy, val_log_loss, n_iter, converged``, ``stop``
        (why the solver stopped: ``tol``, ``max_iter``, or ``no decrease (precision limit)`` when float32
        rounding, not the tolerance, ended it), ``stage`` (``grid`` or ``refine``), ``seconds``.
    """
    function = "sweep_C"
    best_C, table, _, _ = _sweep_checked(function, X_train, y_train, X_val, y_val, grid=grid, refine=refine,
                                         refine_steps=refine_steps, device=device, max_iter=max_iter, tol=tol,
                                         dtype=dtype, precondition=precondition, solver=solver)
    return best_C, table


def _sweep_checked(function: str, X_train: Any, y_train: Any, X_val: Any, y_val: Any, **options: Any
                   ) -> tuple[float, pd.DataFrame, Any, np.ndarray]:
    X_train = _check_X(X_train, "X_train", function)
    y_train = _check_y(y_train, len(X_train), "y_train", function, "X_train")
    X_val = _check_X(X_val, "X_val", function, dim=X_train.shape[1])
    y_val = _check_y(y_val, len(X_val), "y_val", function, "X_val")
    classes, y_index = _classes_of(y_train, "y_train", function)
    return _sweep(function, X_train, y_index, classes, X_val, y_val, **options)


def _val_index(classes: np.ndarray, y_val: np.ndarray) -> np.ndarray:
    pos = np.searchsorted(classes, y_val).clip(0, len(classes) - 1)
    return np.where(classes[pos] == y_val, pos, -1).astype(np.int64)


def _sweep(function: str, X_train: np.ndarray, y_index: np.ndarray, classes: np.ndarray, X_val: np.ndarray,
           y_val: np.ndarray, *, grid: Any, refine: bool, refine_steps: int, device: Any, max_iter: int, tol: float,
           dtype: str, precondition: bool, solver: str, frame: "_Frame | None" = None,
           train_rows: "np.ndarray | None" = None, val_rows: "np.ndarray | None" = None
           ) -> tuple[float, pd.DataFrame, Any, Any]:
    """Validate the options, run the sweep; returns ``(best_C, table, best state, backend)``."""
    grid = _check_grid(grid, function)
    refine_steps = _check_int(refine_steps, "refine_steps", function, 0)
    max_iter = _check_int(max_iter, "max_iter", function, 0)
    tol = _check_positive(tol, "tol", function)
    dtype = _check_choice(dtype, "dtype", function, _DTYPES)
    solver = _check_choice(solver, "solver", function, _SOLVERS)
    if len(y_val) == 0:
        raise _bad("X_val", function, "at least one validation row", "none")
    backend = _make_backend(solver, X_train, y_index, len(classes), X_val, _val_index(classes, y_val), frame=frame,
                            train_rows=train_rows, val_rows=val_rows, device=device, dtype=dtype,
                            precondition=precondition, max_iter=max_iter, tol=tol, function=function)
    best_C, table, state = _run_sweep(backend, grid, refine=refine, refine_steps=refine_steps, n_val=len(y_val))
    return best_C, table, state, backend


# ---------------------------------------------------------------------------------------------- split
def train_val_split(y: np.ndarray, *, val_fraction: float = 0.2, seed: int = 0, stratify: bool = True
                    ) -> tuple[np.ndarray, np.ndarray]:
    """Split row indices into train and validation.

    Stratified: each class sends ``round(val_fraction * n_class)`` of its rows to validation, at most
    ``n_class - 1`` (a class with a single row stays in train). Unstratified: ``round(val_fraction * n)``
    random rows (at least one, at most ``n - 1``).

    Returns
    -------
    train, val : numpy.ndarray
        Sorted ``int64`` row indices.
    """
    function = "train_val_split"
    y = np.asarray(y)
    if not (isinstance(val_fraction, (int, float, np.floating)) and 0 < float(val_fraction) < 1):
        raise _bad("val_fraction", function, "a number strictly between 0 and 1", repr(val_fraction))
    rng = np.random.default_rng(seed)
    n = len(y)
    if stratify:
        _, index = np.unique(y, return_inverse=True)
        order = rng.permutation(n)
        order = order[np.argsort(index[order], kind="stable")]  # random order within each class
        counts = np.bincount(index)
        starts = np.concatenate([[0], np.cumsum(counts)[:-1]])
        n_val = np.minimum(np.round(val_fraction * counts).astype(int), counts - 1)
        val_mask = np.zeros(n, dtype=bool)
        for s, k in zip(starts, n_val):
            val_mask[order[s:s + k]] = True
        val = np.flatnonzero(val_mask)
    else:
        k = int(min(max(round(val_fraction * n), 1), n - 1))
        val = np.sort(rng.permutation(n)[:k])
    train = np.setdiff1d(np.arange(n), val)
    return train.astype(np.int64), val.astype(np.int64)


# ---------------------------------------------------------------------------------------------- probe
@dataclass(frozen=True)
class ProbeResult:
    """One linear probe: the chosen C, the validation curve, the refit model and its test probabilities.

    Attributes
    ----------
    best_C : float
    val_curve : pandas.DataFrame
        The sweep (see :func:`sweep_C`).
    model : LogisticModel
        Refit on train + validation with ``best_C``.
    test_proba : numpy.ndarray
        ``(n_test, K)`` probabilities, columns in the order of ``classes``.
    classes : numpy.ndarray
        ``(K,)`` labels seen in training, sorted.
    n_train, n_val : int
        Rows used to fit during the sweep and to validate.
    seconds : float
        Wall time of sweep + refit + prediction.
    solver : str
    """

    best_C: float
    val_curve: pd.DataFrame
    model: LogisticModel
    test_proba: np.ndarray
    classes: np.ndarray
    n_train: int = 0
    n_val: int = 0
    seconds: float = math.nan
    solver: str = "torch"

    def predict(self) -> np.ndarray:
        """``(n_test,)`` the most probable label of each test row."""
        return self.classes[np.argmax(self.test_proba, axis=1)]

    def accuracy(self, y_test: np.ndarray) -> float:
        """Top-1 accuracy on the test rows (labels absent from training count as errors)."""
        y_test = _check_y(y_test, len(self.test_proba), "y_test", "ProbeResult.accuracy", "the test rows")
        return float(np.mean(self.predict() == y_test))


def linear_probe(
    X_train: np.ndarray,
    y_train: np.ndarray,
    X_test: np.ndarray,
    *,
    val_fraction: float = 0.2,
    seed: int = 0,
    grid: "Sequence[float] | np.ndarray | None" = None,
    refine: bool = True,
    refine_steps: int = 3,
    device: Any = "auto",
    stratify: bool = True,
    max_iter: int = 500,
    tol: float = 1e-3,
    dtype: str = "float32",
    precondition: bool = True,
    solver: str = "torch",
) -> ProbeResult:
    """The CLIP linear probe: split, sweep C on validation, refit on train + validation, predict test.

    Parameters
    ----------
    X_train, y_train
        ``(n, d)`` embeddings (L2-normalised by the caller) and ``(n,)`` labels: any integers (e.g.
        taxonomy node codes) or strings; mapped to ``0 .. K-1`` internally and back.
    X_test
        ``(m, d)`` embeddings to predict.
    val_fraction, seed, stratify
        Validation split (see :func:`train_val_split`).
    grid, refine, refine_steps, device, max_iter, tol, dtype, precondition, solver
        As in :func:`sweep_C` and :func:`fit_logistic`.

    Returns
    -------
    ProbeResult
    """
    return _probe("linear_probe", X_train, y_train, X_test, val_fraction=val_fraction, seed=seed, grid=grid,
                  refine=refine, refine_steps=refine_steps, device=device, stratify=stratify, max_iter=max_iter,
                  tol=tol, dtype=dtype, precondition=precondition, solver=solver)


def _probe(function: str, X_train: Any, y_train: Any, X_test: Any, *, val_fraction: float = 0.2, seed: int = 0,
           grid: Any = None, refine: bool = True, refine_steps: int = 3, device: Any = "auto", stratify: bool = True,
           max_iter: int = 500, tol: float = 1e-3, dtype: str = "float32", precondition: bool = True,
           solver: str = "torch", frame: "_Frame | None" = None, rows: "np.ndarray | None" = None) -> ProbeResult:
    """:func:`linear_probe`; ``frame`` and ``rows`` (the frame's rows that are ``X_train``) let several
    probes on the same embeddings share one centring and rotation."""
    t0 = time.perf_counter()
    X_train = _check_X(X_train, "X_train", function)
    y_train = _check_y(y_train, len(X_train), "y_train", function, "X_train")
    X_test = _check_X(X_test, "X_test", function, dim=X_train.shape[1])
    classes, y_index = _classes_of(y_train, "y_train", function)
    solver = _check_choice(solver, "solver", function, _SOLVERS)
    dtype = _check_choice(dtype, "dtype", function, _DTYPES)
    train, val = train_val_split(y_index, val_fraction=val_fraction, seed=seed, stratify=stratify)
    if len(val) == 0:
        raise _bad("y_train", function, "enough rows per class to hold some out for validation "
                   "(every class has a single row)", f"{len(classes)} classes in {len(y_index)} rows")
    sub_classes, sub_index = np.unique(y_index[train], return_inverse=True)
    if len(sub_classes) < 2:  # pragma: no cover - single-row classes stay in train, so >= 2 remain
        raise _bad("y_train", function, "labels of at least 2 classes in the training part", "1 class")
    if solver == "torch" and frame is None:
        frame = _Frame(X_train, device=_resolve_device(device, function), dtype=dtype, precondition=precondition)
        rows = None
    frame_rows = np.arange(len(X_train)) if rows is None else np.asarray(rows)
    best_C, table, state, backend = _sweep(
        function, X_train[train], sub_index.astype(np.int64), sub_classes, X_train[val], y_index[val], grid=grid,
        refine=refine, refine_steps=refine_steps, device=device, max_iter=max_iter, tol=tol, dtype=dtype,
        precondition=precondition, solver=solver, frame=frame, train_rows=frame_rows[train],
        val_rows=frame_rows[val])
    K = len(classes)
    max_iter = _check_int(max_iter, "max_iter", function, 0)
    tol = _check_positive(tol, "tol", function)

    def expanded(W: np.ndarray, b: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """The sweep's weights for all classes (those absent from its training part, possible with
        ``stratify=False``: zero weights, a low intercept)."""
        W_full, b_full = np.zeros((X_train.shape[1], K)), np.zeros(K)
        W_full[:, sub_classes], b_full[sub_classes] = W, b
        b_full[np.setdiff1d(np.arange(K), sub_classes)] = b.min() - 5.0
        return W_full, b_full

    # Refit on train + validation at the best C, from the sweep's solution.
    if solver == "sklearn":
        tol_abs = tol * _grad0_numpy(X_train, y_index, K)
        W, b, n_iter, conv = _fit_sklearn(X_train, y_index, K, best_C, expanded(state.W, state.b), tol_abs=tol_abs,
                                          max_iter=max_iter)
        model = LogisticModel(W, b, classes, best_C, n_iter, conv)
    else:
        problem = _Problem(frame, rows, y_index, K)
        if len(sub_classes) == K:  # same frame, same classes: the sweep's parameters as they are
            theta = state.theta
        else:
            theta = problem.to_theta(*expanded(*backend.weights(state)))
        lam = 1.0 / (best_C * problem.n)
        final = _solve(problem, lam, _State(theta, lam), max_iter=max_iter, tol=tol, history=10)
        W, b = problem.from_theta(final.theta)
        model = LogisticModel(W, b, classes, best_C, final.n_iter, final.converged, final.objective, final.grad_max,
                              problem.grad0)
    proba = model.predict_proba(X_test)
    seconds = time.perf_counter() - t0
    log.info("linear probe: %d classes, %d train + %d val rows, best C=%g (val accuracy %.4f), %.1fs",
             K, len(train), len(val), best_C, float(table.loc[table["C"] == best_C, "val_accuracy"].iloc[0]), seconds)
    return ProbeResult(best_C, table, model, proba, classes, len(train), len(val), seconds, solver)


@dataclass(frozen=True)
class RankProbeResults:
    """Linear probes at several ranks.

    Attributes
    ----------
    results : dict
        Rank name -> :class:`ProbeResult` (ranks probed, kingdom first).
    skipped : dict
        Rank name -> why it was not probed (fewer than two classes).
    test_accuracy : dict
        Rank name -> test accuracy over the test rows labelled at that rank (when ``Y_test`` was given).
    n_test : dict
        Rank name -> number of those rows.
    """

    results: dict[str, ProbeResult]
    skipped: dict[str, str] = field(default_factory=dict)
    test_accuracy: dict[str, float] = field(default_factory=dict)
    n_test: dict[str, int] = field(default_factory=dict)

    def to_frame(self) -> pd.DataFrame:
        """Long results format: ``rank, metric, value, ci_low, ci_high, n`` plus ``method="linear"``.

        Metrics: ``test_accuracy`` (n = labelled test rows), ``val_accuracy`` at the chosen C (n =
        validation rows), ``best_C``, ``n_classes``.
        """
        from latent.results import metric_row, results_frame

        rows = []
        for rank, res in self.results.items():
            if rank in self.test_accuracy:
                rows.append(metric_row(rank, "test_accuracy", self.test_accuracy[rank], n=self.n_test[rank]))
            val = float(res.val_curve.loc[res.val_curve["C"] == res.best_C, "val_accuracy"].iloc[0])
            rows.append(metric_row(rank, "val_accuracy", val, n=res.n_val))
            rows.append(metric_row(rank, "best_C", res.best_C, n=res.n_train + res.n_val))
            rows.append(metric_row(rank, "n_classes", len(res.classes), n=res.n_train + res.n_val))
        return results_frame(rows, method="linear")


def linear_probe_ranks(
    X_train: np.ndarray,
    Y_train: np.ndarray,
    X_test: np.ndarray,
    Y_test: "np.ndarray | None" = None,
    *,
    ranks: "Sequence[Rank | str | int] | None" = None,
    **options: Any,
) -> RankProbeResults:
    """One linear probe per taxonomic rank (the whole 7-rank sweep).

    Parameters
    ----------
    X_train
        ``(n, d)`` embeddings (L2-normalised by the caller).
    Y_train
        ``(n, 7)`` integer codes per rank (kingdom first, e.g. ``Taxonomy.row_codes``), ``-1`` where a
        row is unlabelled at that rank; such rows are left out of that rank's probe.
    X_test
        ``(m, d)`` embeddings; every row gets probabilities at every probed rank.
    Y_test
        Optional ``(m, 7)`` codes: test accuracy per rank over the rows labelled there.
    ranks
        Ranks to probe (default all seven).
    **options
        Passed to :func:`linear_probe` (``val_fraction``, ``seed``, ``grid``, ``device``, ...).

    Returns
    -------
    RankProbeResults
        A rank with fewer than two classes among its labelled train rows is skipped (logged as a
        warning and listed in ``skipped``).
    """
    function = "linear_probe_ranks"
    X_train = _check_X(X_train, "X_train", function)
    X_test = _check_X(X_test, "X_test", function, dim=X_train.shape[1])
    Y_train = _check_codes(Y_train, len(X_train), "Y_train", function, "X_train")
    if Y_test is not None:
        Y_test = _check_codes(Y_test, len(X_test), "Y_test", function, "X_test")
    chosen = list(RANKS) if ranks is None else [parse_rank(r, parameter="ranks") for r in ranks]
    frame = None
    if options.get("solver", "torch") == "torch":  # one centring and rotation for every rank
        dtype = _check_choice(options.get("dtype", "float32"), "dtype", function, _DTYPES)
        frame = _Frame(X_train, device=_resolve_device(options.get("device", "auto"), function), dtype=dtype,
                       precondition=bool(options.get("precondition", True)))
    results: dict[str, ProbeResult] = {}
    skipped: dict[str, str] = {}
    accuracy: dict[str, float] = {}
    n_test: dict[str, int] = {}
    for r in chosen:
        labels = Y_train[:, r]
        keep = labels >= 0
        n_classes = len(np.unique(labels[keep]))
        if n_classes < 2:
            reason = f"{n_classes} class(es) among {int(keep.sum())} labelled train rows"
            log.warning("linear probe: rank %s skipped: %s", r.label, reason)
            skipped[r.label] = reason
            continue
        res = _probe(function, X_train[keep], labels[keep], X_test, frame=frame, rows=np.flatnonzero(keep),
                     **options)
        results[r.label] = res
        if Y_test is not None:
            scored = Y_test[:, r] >= 0
            n_test[r.label] = int(scored.sum())
            accuracy[r.label] = float(np.mean(res.predict()[scored] == Y_test[scored, r])) if scored.any() else math.nan
    return RankProbeResults(results, skipped, accuracy, n_test)


class FixedCLogistic:
    """Logistic fits at a given C on row subsets of one centred, rotated frame of the rows of ``X``.

    The solver of :func:`fit_logistic` (its minimiser does not depend on the centring or rotation of
    the features, so one frame of all rows serves every training subset: one eigendecomposition for
    many fits, e.g. one per rank and permutation in :mod:`latent.probes.separability`), the pieces that
    :func:`linear_probe_ranks` shares across ranks.

    Parameters
    ----------
    X
        ``(n, d)`` embeddings (L2-normalised by the caller); fits use subsets of its rows.
    device
        ``"auto"``, ``"cpu"``, ``"cuda"`` or a torch device.
    max_iter, tol
        As in :func:`fit_logistic`.

    Attributes
    ----------
    fits, not_converged : int
        Fits made so far, and those stopped at ``max_iter``.
    """

    def __init__(self, X: np.ndarray, *, device: Any = "auto", max_iter: int = 500, tol: float = 1e-3) -> None:
        function = "FixedCLogistic"
        self.X = _check_X(X, "X", function)
        self.frame = _Frame(self.X, device=_resolve_device(device, function), dtype="float32", precondition=True)
        self.max_iter = _check_int(max_iter, "max_iter", function, 0)
        self.tol = _check_positive(tol, "tol", function)
        self.fits = 0
        self.not_converged = 0

    def predict(self, train: np.ndarray, y: np.ndarray, C: float, test: np.ndarray) -> np.ndarray:
        """Fit on rows ``train`` of ``X`` with labels ``y`` at ``C``; ``(len(test),)`` predicted labels of rows ``test``."""
        classes, y_index = np.unique(y, return_inverse=True)
        problem = _Problem(self.frame, train, y_index.astype(np.int64), len(classes))
        lam = 1.0 / (C * problem.n)
        state = _solve(problem, lam, _State(problem.zeros(), lam, None), max_iter=self.max_iter, tol=self.tol,
                       history=10)
        self.fits += 1
        self.not_converged += int(state.reason == "max_iter")
        W, b = problem.from_theta(state.theta)
        logits = self.X[test].astype(np.float64) @ W + b
        return classes[np.argmax(logits, axis=1)]


def _check_codes(Y: Any, n: int, parameter: str, function: str, rows_of: str) -> np.ndarray:
    arr = np.asarray(Y)
    if arr.ndim != 2 or arr.shape[1] != len(RANKS):
        raise _bad(parameter, function, "an (n, 7) array of rank codes (kingdom first, -1 = unlabelled)",
                   f"an array of shape {arr.shape}")
    if arr.dtype.kind not in "iu":
        raise _bad(parameter, function, "integer rank codes", f"dtype {arr.dtype}")
    if len(arr) != n:
        raise _bad(parameter, function, f"an array with one row per row of {rows_of} ({n} rows)", f"{len(arr)} rows")
    return arr.astype(np.int64)
