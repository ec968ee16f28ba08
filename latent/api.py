"""The in-memory Python API: arrays and a taxonomy in, result objects out (for notebooks and scripts).

The entry points are reachable from the package (``import latent`` stays cheap and torch-free: they are
loaded on first use):

* ``latent.evaluate(X, taxonomy, ...)`` -> :class:`latent.evaluate.Evaluation` (predictions at every
  rank, per-rank and hierarchical metrics with species-bootstrap CIs);
* ``latent.run_probes(X, taxonomy, ...)`` -> :class:`latent.probes.run.Probes` (the geometry probes with
  their permutation nulls);
* ``latent.verdicts(probes)`` -> the answer per rank (:func:`latent.verdict.verdict_table`);
* ``latent.pl``: the figures (:mod:`latent.plotting`).

Both result objects have ``.to_frame()`` (the long results format of :mod:`latent.results`),
``.summary()`` and ``.save(dir, force=False)``, which writes exactly what ``latent evaluate`` /
``latent probe`` write. The command line is a thin layer over these: ``evaluate_cache`` and
``probe_cache`` read a cache, call the same computation and save.

``X`` is ``(n_images, dim)`` of any real dtype; it is cast to float32 and every row L2-normalised, as
the cache path reads it (:meth:`latent.cache.EmbeddingCache.read` with ``normalize=True``), so the same
vectors give the same numbers either way. ``taxonomy`` is a :class:`~latent.taxonomy.Taxonomy` with one
row per image, or a table (DataFrame or CSV/TSV/Parquet path) with kingdom..species columns, one row per
image (read with :meth:`~latent.taxonomy.Taxonomy.from_table`).
"""

from __future__ import annotations

import hashlib
import os
from typing import TYPE_CHECKING, Any

import numpy as np

from latent.errors import InputError

if TYPE_CHECKING:  # pragma: no cover
    import pandas as pd

    from latent.taxonomy import Taxonomy

__all__ = ["as_embeddings", "as_taxonomy", "as_ids", "rows_of_ids", "data_identity", "verdicts"]


def as_embeddings(X: Any, *, parameter: str = "X", function: str = "evaluate", return_norms: bool = False
                  ) -> "np.ndarray | tuple[np.ndarray, np.ndarray]":
    """``X`` as float32 with unit rows (all-zero rows stay zero), exactly as the cache path reads it
    (with ``return_norms``, also each row's norm before normalisation, ``(n_images,)`` float64).

    Parameters
    ----------
    X
        ``(n_images, dim)`` real array (any float or integer dtype).

    Returns
    -------
    numpy.ndarray
        ``(n_images, dim)`` float32, C-contiguous, a new array (``X`` is never modified).

    Raises
    ------
    InputError
        Not 2-D, empty, not real numbers, or a non-finite value (the rows are named).
    """
    try:
        array = np.asarray(X)
    except (TypeError, ValueError) as e:
        raise InputError(f"The {parameter!r} parameter of {function} must be an (n_images, dim) array. "
                         f"Got {type(X).__name__} instead ({e}).") from e
    if array.ndim != 2 or array.shape[0] == 0 or array.shape[1] == 0:
        raise InputError(f"The {parameter!r} parameter of {function} must be an (n_images, dim) array with at "
                         f"least one row and column. Got shape {array.shape} instead.")
    if array.dtype.kind not in "fiu":
        raise InputError(f"The {parameter!r} parameter of {function} must hold real numbers (a float array). "
                         f"Got dtype {array.dtype} instead.")
    data = array.astype(np.float32)  # always a copy: the caller's array is never touched
    finite = np.isfinite(data).all(axis=1)
    if not finite.all():
        bad = np.flatnonzero(~finite)
        raise InputError(f"The {parameter!r} parameter of {function} must be finite in float32; {len(bad)} row(s) "
                         f"are not (first: {bad[:10].tolist()}). Drop or fix those rows.")
    norms = np.linalg.norm(data, axis=1, keepdims=True)
    np.divide(data, norms, out=data, where=norms > 0)
    if return_norms:
        return np.ascontiguousarray(data), norms[:, 0].astype(np.float64)
    return np.ascontiguousarray(data)


def as_taxonomy(taxonomy: Any, n_rows: int, *, function: str = "evaluate") -> "Taxonomy":
    """A :class:`~latent.taxonomy.Taxonomy` with ``n_rows`` rows from a Taxonomy, a DataFrame or a table path.

    Raises
    ------
    InputError
        Another type, or not one row per image.
    TaxonomyError
        A table without the rank columns, or with conflicting lineages.
    """
    import pandas as pd

    from latent.taxonomy import Taxonomy

    if isinstance(taxonomy, Taxonomy):
        tax = taxonomy
    elif isinstance(taxonomy, (pd.DataFrame, str, os.PathLike)):
        tax = Taxonomy.from_table(taxonomy)
    else:
        raise InputError(f"The 'taxonomy' parameter of {function} must be a latent.taxonomy.Taxonomy, a DataFrame "
                         f"or a table path with kingdom..species columns. Got {type(taxonomy).__name__} instead.")
    if tax.n_rows != n_rows:
        raise InputError(f"The 'taxonomy' parameter of {function} must have one row per image ({n_rows}). "
                         f"Got {tax.n_rows} rows instead.")
    return tax


def as_ids(ids: Any, n_rows: int, *, function: str = "evaluate") -> np.ndarray:
    """Image ids as a ``(n_rows,)`` str array (``"0".."n-1"`` when None); they must be unique."""
    if ids is None:
        return np.asarray([str(i) for i in range(n_rows)])
    out = np.asarray(ids).astype(str).reshape(-1)
    if len(out) != n_rows:
        raise InputError(f"The 'ids' parameter of {function} must have one id per image ({n_rows}). "
                         f"Got {len(out)} instead.")
    values, counts = np.unique(out, return_counts=True)
    if (counts > 1).any():
        raise InputError(f"The 'ids' parameter of {function} must hold unique ids. Got repeats: "
                         f"{', '.join(values[counts > 1][:5].tolist())}.")
    return out


def rows_of_ids(ids: Any, wanted: Any) -> tuple[np.ndarray, list[str]]:
    """The rows of ``ids`` that hold each of ``wanted`` (ids compared as strings), and the ids not there.

    Parameters
    ----------
    ids
        ``(n,)`` ids of the rows (a cache's ``ids``), unique.
    wanted
        ``(m,)`` ids to find.

    Returns
    -------
    rows : numpy.ndarray
        ``(m,)`` int64 row of each wanted id, -1 where it is missing.
    missing : list of str
        The wanted ids that are not in ``ids``, in their order (empty when every one is there).
    """
    position = {str(i): k for k, i in enumerate(np.asarray(ids).tolist())}
    wanted = [str(i) for i in np.asarray(wanted).tolist()]
    rows = np.fromiter((position.get(i, -1) for i in wanted), dtype=np.int64, count=len(wanted))
    return rows, [i for i, r in zip(wanted, rows.tolist()) if r < 0]


def data_identity(X: np.ndarray) -> dict[str, Any]:
    """``{"n", "dim", "sha256"}`` of in-memory embeddings (the identity their saved results record)."""
    data = np.ascontiguousarray(X)
    digest = hashlib.sha256(str((data.shape, data.dtype.str)).encode())
    digest.update(memoryview(data).cast("B"))
    return {"n": int(data.shape[0]), "dim": int(data.shape[1]), "sha256": digest.hexdigest()}


def verdicts(probes: Any, model: "str | None" = None, *, features: str = "model") -> "pd.DataFrame":
    """The answer per rank (and ``all``) from probe results: :func:`latent.verdict.verdict_table`.

    Parameters
    ----------
    probes
        A :class:`latent.probes.run.Probes` (from :func:`latent.run_probes`), a probe table in the long
        format (DataFrame), or the path of a ``latent probe`` folder or of its ``metrics.csv``. It must
        hold the ``levels`` and ``alignment`` probes' rows (the primary statistics).
    model
        Label of the ``model`` column (default: the model the probes record, else ``""``).
    features
        ``"model"`` or ``"baseline"`` rows.

    Returns
    -------
    pandas.DataFrame
        :data:`latent.verdict.VERDICT_COLUMNS`, one row per rank (kingdom..species) and ``all``.
    """
    import pandas as pd

    from latent.results import read_results
    from latent.verdict import verdict_table

    if isinstance(probes, pd.DataFrame):
        metrics = probes
    elif isinstance(probes, (str, os.PathLike)):
        path = os.fspath(probes)
        path = os.path.join(path, "metrics.csv") if os.path.isdir(path) else path
        if not os.path.isfile(path):
            raise InputError(f"The 'probes' parameter of verdicts names {path}, which does not exist; give a "
                             f"`latent probe` folder or its metrics.csv.")
        metrics = read_results(path)
    elif hasattr(probes, "to_frame"):
        metrics = probes.to_frame()
        if model is None:
            model = str((getattr(probes, "info", {}) or {}).get("model") or "")
    else:
        raise InputError(f"The 'probes' parameter of verdicts must be latent.run_probes results, a DataFrame or a "
                         f"path. Got {type(probes).__name__} instead.")
    if model is None:
        model = str(metrics["model"].iloc[0]) if "model" in metrics.columns and len(metrics) else ""
    if not {"probe", "metric", "rank"} <= set(metrics.columns):
        raise InputError("The 'probes' parameter of verdicts must be a probe table (columns probe, rank, metric, "
                         f"value, ...). Got columns {', '.join(map(str, metrics.columns))} instead.")
    return verdict_table(metrics, model, features=features)
