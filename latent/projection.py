"""2-D projections of embeddings for figures: PCA (scikit-learn) and UMAP (umap-learn, imported lazily).

A projection is a picture, not a measurement: distances in it are not the embedding's distances (UMAP
in particular keeps neighbourhoods, not global geometry). The probes measure; these coordinates are only
drawn (:func:`latent.plotting.plot_projection`).
"""

from __future__ import annotations

import logging
import time
from typing import Any

import numpy as np

from latent.errors import InputError

__all__ = ["PROJECTIONS", "project", "axis_labels", "EXPLAINED_COLUMNS"]

log = logging.getLogger(__name__)

PROJECTIONS = ("umap", "pca")

#: Columns of a projection table (``x, y`` coordinates) holding the fraction of the variance of ``X`` that
#: PC1 and PC2 explain (PCA only; the same value on every row).
EXPLAINED_COLUMNS = ("explained_x", "explained_y")

_METHOD_NAMES = {"pca": "PC", "umap": "UMAP", "tsne": "t-SNE"}


def axis_labels(method: str, explained: "Any | None" = None) -> tuple[str, str]:
    """Axis labels of a 2-D projection: ``"PC1 (12.3% variance)"``, ``"UMAP 1"``, ``"t-SNE 1"``.

    Parameters
    ----------
    method
        ``"pca"``, ``"umap"`` or ``"tsne"`` (any other name is used as given: ``"<name> 1"``).
    explained
        ``(2,)`` fraction of the variance each PCA axis explains (from :func:`project` with
        ``return_info=True``); None or non-finite: no percentage. Ignored for methods other than PCA
        (their axes have no units and explain no variance).

    Returns
    -------
    tuple of str
        ``(x label, y label)``.
    """
    key = str(method).lower().replace("-", "")
    if key == "pca":
        values = np.full(2, np.nan) if explained is None else np.asarray(explained, dtype=np.float64).ravel()
        labels = []
        for i in range(2):
            share = values[i] if i < values.size else np.nan
            labels.append(f"PC{i + 1}" + (f" ({100 * share:.1f}% variance)" if np.isfinite(share) else ""))
        return labels[0], labels[1]
    name = _METHOD_NAMES.get(key, str(method))
    return (f"{name} 1", f"{name} 2")


def _check(X: Any, method: object, seed: object, n_neighbors: object, min_dist: object, metric: object) -> np.ndarray:
    if method not in PROJECTIONS:
        raise InputError(f"The 'method' parameter of project must be one of {', '.join(PROJECTIONS)}. "
                         f"Got {method!r} instead.")
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise InputError(f"The 'seed' parameter of project must be an integer >= 0. Got {seed!r} instead.")
    if isinstance(n_neighbors, bool) or not isinstance(n_neighbors, (int, np.integer)) or n_neighbors < 2:
        raise InputError(f"The 'n_neighbors' parameter of project must be an integer >= 2. "
                         f"Got {n_neighbors!r} instead.")
    if isinstance(min_dist, bool) or not isinstance(min_dist, (int, float, np.number)) or not 0 <= float(min_dist) <= 1:
        raise InputError(f"The 'min_dist' parameter of project must be a number in [0, 1]. Got {min_dist!r} instead.")
    if metric not in ("cosine", "euclidean"):
        raise InputError(f"The 'metric' parameter of project must be 'cosine' or 'euclidean'. Got {metric!r} instead.")
    try:
        array = np.asarray(X, dtype=np.float64)
    except (TypeError, ValueError) as error:
        raise InputError(f"The 'X' parameter of project must be a numeric (n, d) array: {error}") from error
    if array.ndim != 2:
        raise InputError(f"The 'X' parameter of project must be a 2-D (n, d) array. Got shape {array.shape} instead.")
    if array.shape[0] < 3:
        raise InputError(f"The 'X' parameter of project needs at least 3 rows to project. Got {array.shape[0]}.")
    if array.shape[1] < 1:
        raise InputError("The 'X' parameter of project has no columns (d = 0).")
    bad = ~np.isfinite(array).all(axis=1)
    if bad.any():
        raise InputError(f"The 'X' parameter of project must be finite; {int(bad.sum())} row(s) are not "
                         f"(first: {np.flatnonzero(bad)[:10].tolist()}). Drop or fix them first.")
    if metric == "cosine" and method == "umap" and (np.linalg.norm(array, axis=1) == 0).any():
        raise InputError("Cosine distance is undefined for a zero row of X; pass metric='euclidean'.")
    return array


def project(
    X: Any,
    method: str = "umap",
    seed: int = 0,
    *,
    n_neighbors: int = 15,
    min_dist: float = 0.1,
    metric: str = "cosine",
    return_info: bool = False,
) -> "np.ndarray | tuple[np.ndarray, dict[str, Any]]":
    """Project embeddings to two dimensions.

    Parameters
    ----------
    X
        ``(n, d)`` embeddings (n >= 3), e.g. images or species centroids.
    method
        ``"pca"``: the first two principal components (``sklearn.decomposition.PCA`` on the centred
        ``X``; columns are PC1, PC2, signs fixed by scikit-learn's ``svd_flip``). ``"umap"``:
        ``umap.UMAP(n_components=2, n_neighbors, min_dist, metric, random_state=seed)``; with a seed
        UMAP runs single-threaded and is reproducible. ``n_neighbors`` is lowered to ``n - 1`` for
        tiny inputs.
    seed
        Seed (PCA's randomised solver, used on large inputs; UMAP's initialisation and optimisation).
    n_neighbors, min_dist, metric
        UMAP settings (``metric`` ``"cosine"`` or ``"euclidean"``; not used by PCA, which is
        Euclidean; for cosine geometry pass L2-normalised rows).
    return_info
        Also return what the axes are (below).

    Returns
    -------
    numpy.ndarray or (numpy.ndarray, dict)
        ``(n, 2)`` float64 coordinates, row ``i`` for ``X[i]``. With ``return_info``, also
        ``{"method", "explained_variance_ratio", "axis_labels"}``: ``explained_variance_ratio`` ``(2,)``
        is the fraction of the total variance of ``X`` along PC1 and PC2 (PCA; NaN for UMAP, whose axes
        explain no variance), ``axis_labels`` from :func:`axis_labels`.

    Raises
    ------
    InputError
        Unknown method, bad settings, or ``X`` not a finite ``(n, d)`` array with n >= 3.
    """
    array = _check(X, method, seed, n_neighbors, min_dist, metric)
    n, d = array.shape
    start = time.perf_counter()
    if method == "pca":
        from sklearn.decomposition import PCA

        k = min(2, d, n)
        pca = PCA(n_components=k, random_state=int(seed))
        coords = pca.fit_transform(array)
        explained = np.zeros(2)
        explained[:k] = pca.explained_variance_ratio_[:k]
        if k < 2:
            coords = np.column_stack([coords, np.zeros((n, 2 - k))])
            log.info("project: X has %d column(s); the second coordinate is 0", d)
    else:
        try:
            import umap
        except ImportError as error:  # pragma: no cover - umap-learn is a dependency
            raise InputError("method='umap' needs umap-learn (pip install umap-learn); or use method='pca'.") from error
        explained = np.full(2, np.nan)
        k = min(int(n_neighbors), n - 1)
        if k < n_neighbors:
            log.info("project: %d rows, n_neighbors lowered from %d to %d", n, n_neighbors, k)
        reducer = umap.UMAP(n_components=2, n_neighbors=k, min_dist=float(min_dist), metric=metric,
                            random_state=int(seed), n_jobs=1, init="spectral" if n > k + 2 else "random")
        coords = reducer.fit_transform(array)
    coords = np.asarray(coords, dtype=np.float64)
    log.info("project: %s of %d x %d in %.1f s", method, n, d, time.perf_counter() - start)
    if return_info:
        return coords, {"method": method, "explained_variance_ratio": explained,
                        "axis_labels": axis_labels(method, explained)}
    return coords
