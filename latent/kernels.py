"""The inner loops that a GPU speeds up, in numpy and in torch, with one rule for which runs.

**The rule** (stated here once): ``device="auto"`` runs the torch kernel on CUDA when torch sees a GPU and
the numpy one otherwise; a device name (``"cuda"``, ``"cuda:1"``, ``"mps"``) runs torch there; ``"cpu"``
runs numpy. A ``torch.device`` object always runs torch on that device (``torch.device("cpu")`` is how
the tests and benchmarks compare the two paths on a machine without a GPU). Both paths compute in float64
on CPU and in float32 on a GPU (float64 is slow there); results are returned as numpy arrays and agree
within float32 rounding (tested).

Kernels:

- :func:`pairwise_distances`: ``1 - cos`` or Euclidean distances between the rows of two matrices, in row
  blocks (equal to :func:`latent.probes.base.pairwise_distances` / ``scipy.spatial.distance.cdist``). The
  probes reach it through :func:`latent.probes.base.pairwise_distances` with their ``device`` option, in
  float64 on every device (``exact``), so their tie rules hold on a GPU too.
- :func:`nearest`: the ``m`` most cosine-similar reference rows of every query row, most similar first
  (the kNN predictor's neighbour search), in query blocks so memory stays ``block x n_reference``.
"""

from __future__ import annotations

import logging
from typing import Any

import numpy as np

from latent.errors import InputError

__all__ = ["kernel_device", "pairwise_distances", "nearest"]

log = logging.getLogger(__name__)

#: Elements of one block of a distance or similarity matrix (float64: 256 MiB on CPU).
BLOCK_ELEMENTS = 1 << 25


def kernel_device(device: Any = "auto") -> Any:
    """The torch device a kernel runs on under the rule above, or None for the numpy path."""
    if device is None or (isinstance(device, str) and device == "cpu"):
        return None
    import torch

    if isinstance(device, torch.device):
        return device
    from latent.devices import resolve_device

    dev = resolve_device(device, function="latent.kernels")
    return None if dev.type == "cpu" else dev


def _blocks(n: int, width: int, block_rows: "int | None") -> list[slice]:
    size = max(1, int(block_rows) if block_rows else BLOCK_ELEMENTS // max(1, width))
    return [slice(a, min(n, a + size)) for a in range(0, n, size)]


def _dtype(dev: Any) -> Any:
    import torch

    return torch.float64 if dev.type == "cpu" else torch.float32


def pairwise_distances(A: np.ndarray, B: "np.ndarray | None" = None, metric: str = "cosine", *,
                       device: Any = "auto", block_rows: "int | None" = None, exact: bool = False) -> np.ndarray:
    """``(len(A), len(B))`` float64 distances, ``1 - cos`` (clipped to [0, 2]) or Euclidean.

    Parameters
    ----------
    A : numpy.ndarray, (n, d)
    B : numpy.ndarray, (m, d), optional
        Default ``A`` (then the diagonal is exactly 0 and the matrix exactly symmetric).
    metric : {"cosine", "euclidean"}
    device
        See the module's rule.
    block_rows
        Rows of ``A`` per block (default: about :data:`BLOCK_ELEMENTS` / ``m``).
    exact
        Compute in float64 on every device (the probes: their tie rules assume float64 rounding), not in
        float32 on a GPU.
    """
    from latent.probes.base import DISTANCES

    if metric not in DISTANCES:
        raise InputError(f"The 'metric' parameter must be one of {', '.join(DISTANCES)}. Got {metric!r}.")
    same = B is None
    A = np.asarray(A, dtype=np.float64)
    B = A if same else np.asarray(B, dtype=np.float64)
    if A.ndim != 2 or B.ndim != 2 or A.shape[1] != B.shape[1]:
        raise InputError(f"pairwise_distances needs two (n, d) matrices of one width; got {A.shape} and {B.shape}.")
    dev = kernel_device(device)
    if metric == "cosine":
        na, nb = np.linalg.norm(A, axis=1), np.linalg.norm(B, axis=1)
        if (na == 0).any() or (nb == 0).any():
            raise InputError("Cosine distance is undefined for a zero vector; use --distance euclidean.")
        A, B = A / na[:, None], B / nb[:, None]
    out = np.empty((len(A), len(B)), dtype=np.float64)
    if dev is None:
        sb = np.einsum("ij,ij->i", B, B)
        for rows in _blocks(len(A), len(B), block_rows):
            if metric == "cosine":
                out[rows] = 1.0 - A[rows] @ B.T
            else:
                sa = np.einsum("ij,ij->i", A[rows], A[rows])
                out[rows] = np.sqrt(np.maximum(sa[:, None] + sb[None, :] - 2.0 * A[rows] @ B.T, 0.0))
    else:
        import torch

        dtype = torch.float64 if exact else _dtype(dev)
        Bt = torch.as_tensor(B, dtype=dtype, device=dev)
        sb = (Bt * Bt).sum(dim=1)
        for rows in _blocks(len(A), len(B), block_rows):
            At = torch.as_tensor(A[rows], dtype=dtype, device=dev)
            if metric == "cosine":
                D = 1.0 - At @ Bt.T
            else:
                D = torch.sqrt(torch.clamp((At * At).sum(dim=1)[:, None] + sb[None, :] - 2.0 * At @ Bt.T, min=0.0))
            out[rows] = D.double().cpu().numpy()
    if metric == "cosine":
        np.clip(out, 0.0, 2.0, out=out)
    if same:
        np.fill_diagonal(out, 0.0)
        out = (out + out.T) / 2
    return out


def _ordered(part: np.ndarray, vals: np.ndarray, S: Any, m: int, N: int) -> tuple[np.ndarray, np.ndarray]:
    """Sort each row's ``m`` picks by similarity, then row; where tied rows straddle the cut (the picks hold
    fewer copies of the m-th value than the row has), redo that row in full so the lower rows are kept."""
    thr = vals.min(axis=1)
    in_picks = (vals == thr[:, None]).sum(axis=1)
    if m < N:
        if isinstance(S, np.ndarray):
            in_row = (S == thr[:, None]).sum(axis=1)
        else:  # a torch tensor: count on its device, move only the rows to redo
            import torch

            in_row = (S == torch.as_tensor(thr, dtype=S.dtype, device=S.device)[:, None]).sum(dim=1).cpu().numpy()
        for i in np.flatnonzero(in_row > in_picks):
            row = S[i] if isinstance(S, np.ndarray) else S[int(i)].cpu().numpy()
            keep = np.lexsort((np.arange(N), -row.astype(np.float64)))[:m]
            part[i], vals[i] = keep, row[keep]
    vals = vals.astype(np.float64)
    order = np.lexsort((part, -vals), axis=1)
    return np.take_along_axis(part, order, axis=1), np.take_along_axis(vals, order, axis=1)


def nearest(Q: np.ndarray, R: np.ndarray, m: int, *, device: Any = "auto",
            block_rows: "int | None" = None) -> tuple[np.ndarray, np.ndarray]:
    """The ``m`` reference rows most cosine-similar to each query row, most similar first.

    Parameters
    ----------
    Q : numpy.ndarray, (n, d)
        Query rows, L2-normalised.
    R : numpy.ndarray, (N, d)
        Reference rows, L2-normalised.
    m : int
        Neighbours per query, ``1 <= m <= N``.
    device, block_rows
        See the module's rule; ``block_rows`` query rows per block.

    Returns
    -------
    indices : numpy.ndarray, (n, m) int64
        Rows of ``R``; equal similarities keep the lower row first.
    similarities : numpy.ndarray, (n, m) float64
    """
    Q, R = np.asarray(Q), np.asarray(R)
    if Q.ndim != 2 or R.ndim != 2 or Q.shape[1] != R.shape[1]:
        raise InputError(f"nearest needs two (n, d) matrices of one width; got {Q.shape} and {R.shape}.")
    if isinstance(m, bool) or not isinstance(m, (int, np.integer)) or not 1 <= m <= len(R):
        raise InputError(f"The 'm' parameter of nearest must be an integer from 1 to {len(R)}. Got {m!r}.")
    m = int(m)
    dev = kernel_device(device)
    idx = np.empty((len(Q), m), dtype=np.int64)
    sims = np.empty((len(Q), m), dtype=np.float64)
    if dev is not None:
        import torch

        dtype = _dtype(dev)
        Rt = torch.as_tensor(R, dtype=dtype, device=dev)
    for rows in _blocks(len(Q), len(R), block_rows):
        if dev is None:
            S = Q[rows] @ R.T  # in the inputs' dtype (float32 embeddings: float32 products, as before)
            if m < len(R):
                part = np.argpartition(-S, m - 1, axis=1)[:, :m]
            else:
                part = np.broadcast_to(np.arange(m), (S.shape[0], m))
            vals = np.take_along_axis(S, part, axis=1)
            full = S
        else:
            St = torch.as_tensor(Q[rows], dtype=dtype, device=dev) @ Rt.T
            top = torch.topk(St, m, dim=1, largest=True, sorted=False).indices
            vals = torch.gather(St, 1, top).cpu().numpy()
            part = top.cpu().numpy().astype(np.int64)
            full = St
        idx[rows], sims[rows] = _ordered(part, vals, full, m, len(R))
    return idx, sims
