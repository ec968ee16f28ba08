"""Paper figures from results tables (never from models, caches or embeddings).

Every function takes tidy DataFrames or arrays, draws under one style sheet
(:func:`~latent.plotting.style.latent_style`: colour-blind-safe Okabe-Ito colours, the ``cividis``
colormap, embedded TrueType fonts) and returns ``(fig, ax)`` (``ax`` an array when there are several
panels); none saves or shows anything. Save with :func:`save_figure` (vector PDF and 200-dpi PNG).
Figures are :class:`matplotlib.figure.Figure` objects built without pyplot, so they work with any
backend (``Agg`` included) and leak nothing.

Where an input has a ``model`` column (or a ``{model: array}`` mapping is given), models are drawn side
by side. Large taxonomies stay readable: the largest clades get colours and the rest is "other",
labels are written only where they fit.

Importing :mod:`latent` never imports this package (nor matplotlib).
"""

from __future__ import annotations

from latent.plotting.evaluation import plot_first_divergence, plot_mistake_severity, plot_rank_accuracy
from latent.plotting.geometry import plot_distance_by_height, plot_distance_matrix
from latent.plotting.hyperbolic import plot_distortion, plot_fit_loss, plot_poincare_disk
from latent.plotting.nulls import plot_null_distributions, plot_probe_summary
from latent.plotting.projection import plot_projection
from latent.plotting.style import OKABE_ITO, OTHER_COLOR, SEQUENTIAL_CMAP, STYLE, latent_style, save_figure
from latent.plotting.trees import plot_tanglegram

__all__ = [
    "STYLE",
    "OKABE_ITO",
    "OTHER_COLOR",
    "SEQUENTIAL_CMAP",
    "latent_style",
    "save_figure",
    "plot_rank_accuracy",
    "plot_mistake_severity",
    "plot_first_divergence",
    "plot_projection",
    "plot_distance_by_height",
    "plot_distance_matrix",
    "plot_tanglegram",
    "plot_poincare_disk",
    "plot_distortion",
    "plot_fit_loss",
    "plot_null_distributions",
    "plot_probe_summary",
]
