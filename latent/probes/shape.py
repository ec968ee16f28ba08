"""Shape probe: the shape of the embedding space itself, before any taxonomy.

Every statistic is about the space, not about a rank, so every row has ``rank="all"``; each row says
its unit in ``unit`` (``image``, ``image pair`` or ``species``), how many units are behind it in
``n``, whether it was computed after centring in ``centred`` (subtracting the mean image vector) and
on which vectors in ``space`` (``"raw"``: the model's own vectors; ``"normalised"``: only unit
vectors were available, see "Raw vectors" below). Why a value or a CI is missing is in ``note`` /
``ci_note``. Metric names of the centred statistics end in ``_centred``: each statistic is given before
and after centring, which is "the effect of centring".

Rows
----
``norm_mean``, ``norm_sd``, ``norm_min``, ``norm_median``, ``norm_max`` (unit: image)
    The L2 norms of the raw vectors (BioCLIP 2's are about 45-57). ``norm_mean`` has a species
    bootstrap CI. When the vectors are unit vectors (every norm 1 within 1e-3) the note says that the
    raw norms are not available here.
``mean_cosine`` / ``mean_cosine_centred`` (unit: image pair)
    Anisotropy: the mean cosine similarity over image pairs (0 for an isotropic distribution, near 1
    when every vector points the same way). It is the exact mean over *all* ``n (n - 1) / 2`` pairs,
    computed in O(n d) from the sum of the unit vectors (``(|sum u|^2 - n) / (n (n - 1))``), so no pair
    sample is needed whatever ``max_pairs``; ``n`` is the number of pairs. CI: a cluster bootstrap over
    species (:func:`latent.stats.cluster_ci`): a species drawn ``k`` times enters as ``k`` species, and
    pairs of copies of one species are not pairs (as pairs of an image with itself are not). After
    centring, images at the mean (a zero vector, cosine undefined) are left out (noted); the centre is
    the observed mean, kept fixed in the resamples.
``participation_ratio``, ``components_50``, ``components_90``, ``components_99`` (and ``_centred``) (unit: image)
    Effective dimensionality from the PCA spectrum ``l`` (eigenvalues of the second-moment matrix
    ``X^T X / n`` before centring, of the covariance after): ``(sum l)^2 / sum l^2`` (``d`` for an
    isotropic distribution, at most ``k`` for rank-``k`` data) and the fewest components that explain
    50 / 90 / 99 % of the variance. Eigenvalues below ``d * eps * largest`` count as 0. The spectrum
    (explained variance ratio per component, before and after centring) is the table ``spectrum``
    (``shape_spectrum.csv``) and the array ``spectrum`` (``(2, K)``, uncentred first).
``k_occurrence_skew``, ``antihub_share`` (and ``_centred``) (unit: image)
    Hubness (Radovanovic et al. 2010): ``N_k(x)``, how often image ``x`` is among the ``k`` nearest
    neighbours (``options.distance``) of the others; the skewness of ``N_k`` (positive: a few hubs are
    everyone's neighbours) and the share of images that are nobody's neighbour (anti-hubs). ``k`` is
    the ``k`` setting (default 10). Above ``options.max_images`` images, a seeded uniform sample of
    ``max_images`` images is used (``sampled``); the k-occurrences are arrays ``k_occurrence`` and
    ``k_occurrence_centred``. Ties are broken by image order (stable sort), so the result is a
    function of the data and the seed. With ``distance="euclidean"`` centring moves no distance, so
    the centred rows equal the uncentred ones (noted).
``mantel_spearman`` / ``mantel_spearman_centred`` (unit: species; a supporting row)
    Spearman correlation of the species-centroid distances (``options.distance``, centroids of the raw
    vectors) with the taxonomic distances (LCA height), before and after centring: how much centring
    changes the taxonomy statistics that use cosine geometry (Euclidean ones are unchanged by it). The
    species are those of the alignment probe (all, or a stratified sample within ``max_pairs``,
    :func:`latent.probes.alignment.centroid_species`). No null here: the alignment probe's Mantel has it.

Raw vectors
-----------
:class:`~latent.probes.base.ProbeData` holds L2-normalised rows when it comes from a cache
(``load_probe_data``). Norms, centring and the PCA spectrum depend on the raw vectors, so
:func:`probe_shape` takes the raw row norms as ``norms`` (or ``data.raw_norms`` when ProbeData carries
them) and works on ``data.X * norms``. Without norms it uses ``data.X`` as given: raw vectors when the
caller built ProbeData from them, unit vectors otherwise (``space="normalised"`` and a note). The mean
cosine before centring is the same either way.

Degenerate input
----------------
Fewer than 2 images, a zero vector or non-finite norms raise :class:`~latent.errors.InputError`. When
every image is the same vector the centred statistics, the hubness and the Mantel rows are NaN with a
note (no crash); fewer than ``k + 1`` images make the hubness rows NaN, fewer than 3 species the Mantel
rows, fewer than 10 species the CIs (``ci_note``).
"""

from __future__ import annotations

import logging
from typing import Any

import numpy as np
import pandas as pd

from latent.errors import InputError
from latent.probes.base import ProbeData, ProbeOptions, ProbeResult, pairwise_distances
from latent.probes.common import DEFAULT_N_BOOT, int_setting
from latent.results import metric_row
from latent.stats import cluster_ci

__all__ = ["probe_shape", "pca_spectrum", "spectrum_summary", "k_occurrence", "mean_pair_cosine"]

log = logging.getLogger(__name__)

PROBE = "shape"
#: Default number of neighbours of the hubness statistics.
DEFAULT_K = 10
#: Coverages of the ``components_*`` rows.
COVERAGES = (0.5, 0.9, 0.99)
#: Unit vectors: every norm within this of 1.
UNIT_TOL = 1e-3
_SAMPLE_TAG = 0x5A9E
#: Rows of a distance block in the k-nearest-neighbour search.
_BLOCK = 512


# ------------------------------------------------------------------------------- statistics
def mean_pair_cosine(U: np.ndarray) -> float:
    """Mean cosine similarity over all pairs of rows of the unit vectors ``U`` (``(n, d)``, ``n >= 2``)."""
    U = np.asarray(U, dtype=np.float64)
    n = U.shape[0]
    total = U.sum(axis=0)
    return float((total @ total - n) / (n * (n - 1)))


def _weighted_pair_cosine(sums: np.ndarray, sq: np.ndarray, counts: np.ndarray) -> "Any":
    """The species-bootstrap statistic of the mean pair cosine.

    ``sums`` ``(S, d)`` sum of each species' unit vectors, ``sq`` ``(S,)`` their squared norms, ``counts``
    ``(S,)`` vectors per species. For weights ``w`` (a species drawn ``w_s`` times): pairs within one copy
    of a species and between different species count, pairs of two copies of one species do not.
    """
    counts = counts.astype(np.float64)

    def statistic(w: np.ndarray) -> np.ndarray:
        V = w @ sums
        total = np.einsum("ij,ij->i", V, V) - (w ** 2) @ sq + w @ (sq - counts)
        N = w @ counts
        pairs = N ** 2 - (w ** 2) @ (counts ** 2) + w @ (counts * (counts - 1))
        with np.errstate(divide="ignore", invalid="ignore"):
            return np.where(pairs > 0, total / pairs, np.nan)

    return statistic


def pca_spectrum(X: np.ndarray, *, centre: "np.ndarray | None" = None) -> np.ndarray:
    """Eigenvalues (descending, ``(min(n, d),)``) of ``(X - centre)^T (X - centre) / n``.

    ``centre=None`` gives the uncentred second-moment spectrum. Eigenvalues below ``d * eps * largest``
    (and negative rounding) are set to 0. Accumulated in float64 row blocks.
    """
    X = np.asarray(X)
    n, d = X.shape
    G = np.zeros((d, d))
    step = max(1, (1 << 22) // max(d, 1))
    for start in range(0, n, step):
        B = np.asarray(X[start:start + step], dtype=np.float64)
        if centre is not None:
            B = B - centre
        G += B.T @ B
    values = np.linalg.eigvalsh(G / n)[::-1][:min(n, d)].copy()
    top = float(values[0]) if values.size else 0.0
    values[values <= d * np.finfo(np.float64).eps * max(top, 0.0)] = 0.0
    return values


def spectrum_summary(values: np.ndarray) -> dict[str, float]:
    """Participation ratio ``(sum l)^2 / sum l^2`` and ``components_50/90/99`` of a spectrum (NaN if all 0)."""
    values = np.asarray(values, dtype=np.float64)
    total = float(values.sum())
    out = {"participation_ratio": float("nan")} | {f"components_{round(q * 100)}": float("nan") for q in COVERAGES}
    if total <= 0:
        return out
    out["participation_ratio"] = total ** 2 / float((values ** 2).sum())
    cumulative = np.cumsum(values) / total
    for q in COVERAGES:
        out[f"components_{round(q * 100)}"] = float(np.searchsorted(cumulative, q - 1e-9) + 1)
    return out


def k_occurrence(X: np.ndarray, k: int, metric: str, device: Any = None) -> np.ndarray:
    """``(n,)`` int64 ``N_k``: how often each row is among the ``k`` nearest neighbours of the other rows.

    Distances are :func:`latent.probes.base.pairwise_distances` (``metric``); a row is never its own
    neighbour; ties are broken by row order (stable sort). Needs ``n > k``.
    """
    X = np.asarray(X, dtype=np.float64)
    n = X.shape[0]
    if not 1 <= k < n:
        raise InputError(f"k_occurrence needs 1 <= k < n; got k={k} for n={n} rows.")
    counts = np.zeros(n, dtype=np.int64)
    for start in range(0, n, _BLOCK):
        D = pairwise_distances(X[start:start + _BLOCK], X, metric=metric, device=device)
        rows = np.arange(D.shape[0])
        D[rows, start + rows] = np.inf
        nearest = np.argsort(D, axis=1, kind="stable")[:, :k]
        counts += np.bincount(nearest.ravel(), minlength=n)
    return counts


def _species_sums(species: np.ndarray, V: np.ndarray, S: int) -> np.ndarray:
    """``(S, d)`` float64 sum of the rows of ``V`` per species (a sparse one-hot product, not ``np.add.at``)."""
    from scipy.sparse import csr_matrix

    n = len(species)
    onehot = csr_matrix((np.ones(n), (species, np.arange(n))), shape=(S, n))
    return np.asarray(onehot @ np.asarray(V, dtype=np.float64))


def _skewness(values: np.ndarray) -> float:
    """Sample skewness (the biased moment estimator, ``scipy.stats.skew``); NaN for constant values."""
    v = np.asarray(values, dtype=np.float64)
    centred = v - v.mean()
    m2 = float(np.mean(centred ** 2))
    if m2 <= 0:
        return float("nan")
    return float(np.mean(centred ** 3) / m2 ** 1.5)


# ------------------------------------------------------------------------------------- probe
def _raw_vectors(data: ProbeData, norms: "np.ndarray | None") -> tuple[np.ndarray, str, str]:
    """``(X, space, note)``: the raw vectors (``data.X * norms``) or ``data.X`` as given."""
    X = np.asarray(data.X, dtype=np.float64)
    if X.ndim != 2 or X.shape[0] < 2:
        raise InputError(f"The shape probe needs at least 2 images; got embeddings of shape {X.shape}.")
    if norms is None:
        norms = getattr(data, "raw_norms", None)
    if norms is not None:
        norms = np.asarray(norms, dtype=np.float64)
        if norms.shape != (X.shape[0],) or not np.isfinite(norms).all() or (norms <= 0).any():
            raise InputError(f"The 'norms' parameter of probe_shape must be {X.shape[0]} finite positive raw row "
                             f"norms (one per image of data.X); got shape {norms.shape}"
                             f"{'' if norms.shape != (X.shape[0],) else ' with non-finite or non-positive values'}.")
        unit = np.linalg.norm(X, axis=1)
        if (unit == 0).any():
            raise InputError(f"The shape probe needs non-zero vectors; {int((unit == 0).sum())} image(s) are all-zero "
                             f"(first: {data.ids[np.flatnonzero(unit == 0)[0]]}); drop them or fix the cache.")
        X = X / unit[:, None] * norms[:, None]
        return X, "raw", ""
    own = np.linalg.norm(X, axis=1)
    if (own == 0).any():
        raise InputError(f"The shape probe needs non-zero vectors; {int((own == 0).sum())} image(s) are all-zero "
                         f"(first: {data.ids[np.flatnonzero(own == 0)[0]]}); drop them or fix the cache.")
    if np.all(np.abs(own - 1.0) <= UNIT_TOL):
        return X, "normalised", ("the vectors are L2-normalised (every norm 1): raw norms are not available here; "
                                 "pass probe_shape(..., norms=raw row norms) for the model's own norms, centring "
                                 "and spectrum")
    return X, "raw", ""


def _row(metric: str, value: float, n: int, unit: str, *, centred: bool, space: str, ci: Any = None,
         ci_note: str = "", note: str = "", **extra: Any) -> dict[str, Any]:
    return metric_row("all", metric, value, ci, n, unit=unit, centred=centred, space=space, ci_note=ci_note,
                      note=note, sampled=extra.pop("sampled", False), **extra)


def probe_shape(data: ProbeData, options: ProbeOptions, norms: "np.ndarray | None" = None) -> ProbeResult:
    """Norms, anisotropy, effective dimensionality and hubness of the space, before and after centring.

    Parameters
    ----------
    data
        The images (see the module docstring for which vectors are used).
    options
        ``distance`` (hubness, Mantel), ``max_images`` (hubness sample), ``max_pairs`` (Mantel species),
        ``seed``; settings ``options.extra["shape"]``: ``k`` (neighbours, default 10) and ``n_boot``
        (species-bootstrap resamples, default 1000).
    norms
        ``(n,)`` raw L2 norms of the rows of ``data.X`` when ``data.X`` holds unit vectors (default
        ``data.raw_norms`` if ProbeData carries it, else none).

    Returns
    -------
    ProbeResult
        Rows with ``rank="all"`` and the columns ``unit``, ``centred``, ``space``, ``note``, ``ci_note``,
        ``sampled``; table ``spectrum``; arrays ``spectrum``, ``norms``, ``k_occurrence``,
        ``k_occurrence_centred``.
    """
    from latent.probes.alignment import centroid_distances, centroid_species, mantel, species_distances

    cfg = options.for_probe(PROBE)
    k = int_setting(cfg, "k", DEFAULT_K, PROBE, minimum=1)
    n_boot = int_setting(cfg, "n_boot", DEFAULT_N_BOOT, PROBE)
    X, space, space_note = _raw_vectors(data, norms)
    n, d = X.shape
    species = np.asarray(data.species, dtype=np.int64)
    S = int(species.max()) + 1 if species.size else 0
    counts = np.bincount(species, minlength=S)
    rows: list[dict[str, Any]] = []
    info: dict[str, Any] = {"space": space, "k": k, "n_boot": n_boot, "images": n, "dim": d, "species": S}
    if space_note:
        info["note"] = space_note
        log.info("shape: %s", space_note)

    # Norms -----------------------------------------------------------------------------------------
    row_norms = np.linalg.norm(X, axis=1)
    if not np.isfinite(row_norms).all() or (row_norms == 0).any():
        raise InputError("The shape probe needs finite non-zero vectors; some rows have a zero or non-finite norm.")
    norm_sums = np.bincount(species, weights=row_norms, minlength=S)
    low, high, ci_note = cluster_ci(lambda w: (w @ norm_sums) / (w @ counts), S, n_boot=n_boot, seed=options.seed)
    stats = {"norm_mean": float(row_norms.mean()), "norm_sd": float(row_norms.std(ddof=1)),
             "norm_min": float(row_norms.min()), "norm_median": float(np.median(row_norms)),
             "norm_max": float(row_norms.max())}
    for metric, value in stats.items():
        ci = (low, high) if metric == "norm_mean" else None
        rows.append(_row(metric, value, n, "image", centred=False, space=space, ci=ci,
                         ci_note=ci_note if metric == "norm_mean" else "no CI: an order statistic or spread",
                         note=space_note))

    # Centring --------------------------------------------------------------------------------------
    centre = X.mean(axis=0)
    Xc = X - centre
    c_norms = np.linalg.norm(Xc, axis=1)
    scale = float(row_norms.max())
    at_centre = c_norms <= 1e-9 * scale
    identical = bool(at_centre.all())
    identical_note = "every image is the same vector: centring leaves only zero vectors" if identical else ""
    if identical:
        info["identical"] = True
        log.warning("shape: every image is the same vector; the centred statistics and the hubness are undefined")

    # Anisotropy ------------------------------------------------------------------------------------
    pairs = n * (n - 1) // 2
    for centred in (False, True):
        metric = "mean_cosine_centred" if centred else "mean_cosine"
        V, norm_v = (Xc, c_norms) if centred else (X, row_norms)
        keep = ~at_centre if centred else np.ones(n, dtype=bool)
        m = int(keep.sum())
        note = ""
        if centred and identical:
            rows.append(_row(metric, np.nan, 0, "image pair", centred=True, space=space, ci_note="no CI: no value",
                             note=identical_note))
            continue
        if centred and m < n:
            note = f"{n - m} image(s) at the mean (a zero vector after centring) left out"
        if m < 2:
            rows.append(_row(metric, np.nan, 0, "image pair", centred=centred, space=space,
                             ci_note="no CI: no value", note=note or "fewer than 2 images"))
            continue
        U = V[keep] / norm_v[keep, None]
        sp = species[keep]
        sums = _species_sums(sp, U, S)
        sq = np.einsum("ij,ij->i", sums, sums)
        kc = np.bincount(sp, minlength=S)
        value = mean_pair_cosine(U)
        present = int(np.count_nonzero(kc))
        statistic = _weighted_pair_cosine(sums, sq, kc)
        low, high, ci_note = cluster_ci(statistic, S, n_boot=n_boot, seed=options.seed) if present == S else \
            (np.nan, np.nan, "no CI: a species has only images at the mean")
        rows.append(_row(metric, value, m * (m - 1) // 2, "image pair", centred=centred, space=space,
                         ci=(low, high), ci_note=ci_note, note=note, n_species=present))
    info["pairs"] = pairs

    # Effective dimensionality ----------------------------------------------------------------------
    spectra = []
    for centred in (False, True):
        values = pca_spectrum(X, centre=centre if centred else None)
        spectra.append(values)
        summary = spectrum_summary(values)
        note = identical_note if centred and identical else ""
        suffix = "_centred" if centred else ""
        for metric, value in summary.items():
            rows.append(_row(metric + suffix, value, n, "image", centred=centred, space=space,
                             ci_note="no CI: a PCA per resample", note=note, dim=d))
    K = max(len(s) for s in spectra)
    ratios = np.zeros((2, K))
    for i, values in enumerate(spectra):
        total = values.sum()
        if total > 0:
            ratios[i, :len(values)] = values / total
    spectrum_table = pd.concat([
        pd.DataFrame({"centred": centred, "component": np.arange(1, K + 1, dtype=np.int64),
                      "eigenvalue": np.pad(spectra[i], (0, K - len(spectra[i]))),
                      "explained_variance_ratio": ratios[i], "cumulative": np.cumsum(ratios[i])})
        for i, centred in enumerate((False, True))], ignore_index=True)

    # Hubness ---------------------------------------------------------------------------------------
    sampled = n > options.max_images
    if sampled:
        rng = np.random.default_rng([int(options.seed), _SAMPLE_TAG])
        sample = np.sort(rng.choice(n, size=options.max_images, replace=False))
        log.info("shape: hubness on a seeded sample of %d of %d images", options.max_images, n)
    else:
        sample = np.arange(n)
    m = len(sample)
    arrays: dict[str, np.ndarray] = {"spectrum": ratios, "norms": row_norms.astype(np.float32)}
    for centred in (False, True):
        suffix = "_centred" if centred else ""
        note = ""
        occurrence = None
        if identical:
            note = "every image is the same vector: every distance ties, no neighbours"
        elif m <= k:
            note = f"{m} images: the hubness needs more than k={k}"
        elif centred and (at_centre[sample].any()) and options.distance == "cosine":
            note = "an image at the mean (a zero vector after centring): cosine undefined"
        else:
            V = (Xc if centred else X)[sample]
            occurrence = k_occurrence(V, k, options.distance, options.device)
            if centred and options.distance == "euclidean":
                note = "Euclidean distances do not change with centring: equal to the uncentred row"
        arrays["k_occurrence" + suffix] = occurrence if occurrence is not None else np.zeros(0, dtype=np.int64)
        skew = _skewness(occurrence) if occurrence is not None else float("nan")
        if occurrence is not None and not np.isfinite(skew):
            note = "every image is a neighbour equally often: skewness undefined"
        anti = float(np.mean(occurrence == 0)) if occurrence is not None else float("nan")
        for metric, value in (("k_occurrence_skew", skew), ("antihub_share", anti)):
            rows.append(_row(metric + suffix, value, m if occurrence is not None else 0, "image", centred=centred,
                             space=space, ci_note="no CI: neighbours of the sample", note=note, sampled=sampled,
                             k=k, distance=options.distance))

    # The effect of centring on a taxonomy statistic ------------------------------------------------
    centroids = _species_sums(species, X, S) / np.maximum(counts, 1)[:, None]
    for centred in (False, True):
        metric = "mantel_spearman" + ("_centred" if centred else "")
        note, value, n_sp = "", float("nan"), 0
        if S < 3:
            note = f"{S} species: the Mantel correlation needs at least 3"
        elif identical:
            note = "every image is the same vector: every centroid distance ties"
        else:
            chosen = centroid_species(data, options, PROBE)
            C = centroids[chosen] - (centre if centred else 0.0)
            if options.distance == "cosine" and (np.linalg.norm(C, axis=1) <= 1e-9 * scale).any():
                note = "a species centroid sits at the mean: cosine undefined after centring"
            else:
                D, _ = centroid_distances(C, options.distance)
                T = species_distances(data, chosen).astype(np.float64)
                value = mantel(D, T, method="spearman", permutations=0).r
                n_sp = int(chosen.size)
                if not np.isfinite(value):
                    note = "a distance matrix is constant: correlation undefined"
                elif centred and options.distance == "euclidean":
                    note = "Euclidean distances do not change with centring: equal to the uncentred row"
        rows.append(_row(metric, value, n_sp, "species", centred=centred, space=space,
                         ci_note="no CI: a supporting row (the alignment probe has the CI and null)",
                         note=note or "supporting: null and CI in the alignment probe", distance=options.distance))

    frame = pd.DataFrame.from_records(rows)
    info["sampled_images"] = int(m)
    return ProbeResult(PROBE, frame, arrays=arrays, tables={"spectrum": spectrum_table}, info=info)
