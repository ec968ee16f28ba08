"""What a probe (or an evaluation) declares for the report: its figures and its evidence rows.

A report only renders what is declared: every :class:`~latent.probes.ProbeSpec` carries the figures drawn
from its results tables (:class:`FigureSpec`) and the supporting statistics it contributes to the answer
(:class:`Evidence`); the evaluations declare theirs in :data:`latent.evaluate.FIGURES`, the projections in
:data:`PROJECTION_FIGURES`. A new probe thus brings its figure and its evidence rows without editing
:mod:`latent.report` or :mod:`latent.verdict`.

A figure's ``draw`` (``"module:function"``) receives a :class:`FigureContext` (a read-only view of the
report's models and their results tables), and, for a ``per_model`` figure, the :class:`ModelRun` to draw.
It returns a matplotlib figure, ``(figure, axes)`` as the :mod:`latent.plotting` functions do, ``None``
when its data is absent (the figure is then skipped), a :class:`Drawing` (a figure with the values that
fill ``{placeholders}`` of the key, title and caption), or a list of :class:`Drawing` (several figures,
e.g. one per projection method). The adapters (results tables -> plot call) live in
``latent/plotting/<module>.py`` beside the plot they call.

Importing this module imports neither pandas nor matplotlib.
"""

from __future__ import annotations

import importlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, NamedTuple

if TYPE_CHECKING:  # pragma: no cover
    import numpy as np
    import pandas as pd

#: The report's sections that show figures, in order (:attr:`FigureSpec.section`).
SECTIONS = ("model", "answer", "evaluation", "geometry", "hierarchy", "tree-likeness", "learned", "other")

__all__ = ["SECTIONS", "FigureSpec", "Evidence", "Drawing", "ModelRun", "FigureContext", "PROJECTION_FIGURES",
           "LAYER_FIGURES",
           "registered_figures", "registered_evidence", "slug"]


class Evidence(NamedTuple):
    """A supporting statistic a probe contributes to the report (free null; never decides a verdict).

    The first five fields are the shape of :data:`latent.verdict.SUPPORTING` entries: the probe, the
    metric, an extra filter on the probe's rows (e.g. ``{"split": "species-disjoint"}``), the direction
    the taxonomy predicts (``"less"`` or ``"greater"``) and its plain name. ``order`` places the row
    among every probe's rows (stable; ties keep the registry order).
    """

    probe: str
    metric: str
    extra: dict
    direction: str
    name: str
    order: float = 100.0


@dataclass(frozen=True)
class FigureSpec:
    """A figure of the report, declared beside the probe (or step) that produces its data.

    Attributes
    ----------
    key
        File name stem (``figures/<key>.png``); a ``per_model`` figure gets ``_<model slug>`` appended.
        May hold ``{placeholders}`` filled by the :class:`Drawing` the draw function returns.
    title, caption
        Shown in the report; may hold ``{model}`` (the model's label) and the drawing's placeholders.
    draw
        ``"module:function"``: ``function(context)`` or, ``per_model``, ``function(context, model)``.
    per_model
        One figure per model (else one figure for all models side by side).
    order
        Place in the report (stable sort; consecutive ``per_model`` figures are drawn model by model).
    section
        The report section that shows it (:data:`SECTIONS`): ``answer`` (the key figure, on the first
        screen), ``evaluation``, ``geometry``, ``hierarchy``, ``tree-likeness``; anything else goes to a
        last section, "Other figures".
    """

    key: str
    title: str
    caption: str
    draw: str
    per_model: bool = False
    order: float = 100.0
    section: str = "other"

    def __post_init__(self) -> None:
        from latent.errors import InputError

        if not self.key or self.draw.count(":") != 1 or not all(self.draw.split(":")):
            raise InputError(f"FigureSpec {self.key!r}: 'draw' must be 'module:function' and 'key' non-empty. "
                             f"Got draw={self.draw!r}.")

    def load(self) -> Callable[..., Any]:
        """The draw function (its module imported now)."""
        module, function = self.draw.split(":")
        return getattr(importlib.import_module(module), function)


@dataclass
class Drawing:
    """A drawn figure with the values that fill the ``{placeholders}`` of its spec's key, title, caption."""

    figure: Any
    fields: dict[str, Any] = field(default_factory=dict)


@dataclass
class ModelRun:
    """One model of a report: its label, cache and the results of its steps."""

    label: str
    cache: Path
    provenance: Any
    evaluations: list[Path]
    probe: Path
    projections: list[Path]
    info: dict[str, Any] = field(default_factory=dict)
    emergence: "Path | None" = None  # per-layer verdicts (latent report --layers), when the cache has layers

    @property
    def slug(self) -> str:
        return slug(self.label)


def slug(text: str) -> str:
    """``text`` made safe for a file name."""
    out = "".join(c if c.isalnum() or c in "-_." else "-" for c in text).strip("-")
    return out or "model"


#: The 2-D projections of the images (a pipeline step, not a probe).
PROJECTION_FIGURES: tuple[FigureSpec, ...] = (
    FigureSpec("projection_{method}", "{METHOD} projection of the images ({model})",
               "{METHOD} of the image embeddings ({n} images), coloured by each rank: up to 12 taxa each get a "
               "colour, above that the 8 largest (the rest grey). Ranks with one taxon are left out and ranks with "
               "the same partition of the images are one panel (both named under the panels); PCA axes give the "
               "share of the variance they explain, UMAP axes have no units.",
               "latent.plotting.projection:report_projections", per_model=True, order=44, section="geometry"),
)


#: Where in the network each rank appears (``latent report --layers``: a pipeline step, not a probe).
LAYER_FIGURES: tuple[FigureSpec, ...] = (
    FigureSpec("emergence", "Where in the network each rank appears",
               "The primary statistic per rank (distance to relatives inside the taxon over distance to relatives "
               "outside it within the parent; below 1: visible) computed on the class token after each transformer "
               "block, with its 95% CI over parent taxa; filled: that block's verdict is yes (the same rule as the "
               "answer, Holm over the ranks of that block). An axis tick marks the block from which a rank stays "
               "yes to the last block. Blocks per model: {blocks}.",
               "latent.plotting.layers:report_emergence", order=90, section="learned"),
)


def registered_figures() -> list[FigureSpec]:
    """Every declared figure in report order: the evaluations', the probes' (registry order), the projections',
    the layers'."""
    from latent.evaluate import FIGURES
    from latent.probes import PROBES

    specs = [*FIGURES, *(f for spec in PROBES.values() for f in spec.figures), *PROJECTION_FIGURES, *LAYER_FIGURES]
    return sorted(specs, key=lambda f: f.order)


def registered_evidence() -> list[Evidence]:
    """Every probe's supporting rows in report order (``order``, then registry order)."""
    from latent.probes import PROBES

    from latent.errors import InputError

    rows = [Evidence(*e) for spec in PROBES.values() for e in spec.evidence]
    for e in rows:
        if e.direction not in ("less", "greater") or not isinstance(e.extra, dict):
            raise InputError(f"Evidence row {e.probe} {e.metric}: 'direction' must be 'less' or 'greater' and "
                             f"'extra' a dict of column filters. Got direction={e.direction!r}, extra={e.extra!r}.")
    return sorted(rows, key=lambda e: e.order)


class FigureContext:
    """Read-only view of a report's models and their results tables, for the figures' draw functions.

    Tables are read once (``keep_default_na=False``: a taxon called "NA" stays a name); a missing file
    reads as ``None``.
    """

    def __init__(self, models: "list[ModelRun] | tuple[ModelRun, ...]") -> None:
        self._models = tuple(models)
        self._csv: dict[Path, Any] = {}

    @property
    def models(self) -> tuple[ModelRun, ...]:
        return self._models

    def read_csv(self, path: Path) -> "pd.DataFrame | None":
        """A CSV file (a copy), or None when it does not exist."""
        import pandas as pd

        if path not in self._csv:
            self._csv[path] = pd.read_csv(path, keep_default_na=False, na_values=[""]) if path.exists() else None
        table = self._csv[path]
        return None if table is None else table.copy()

    @staticmethod
    def concat(frames: "dict[str, pd.DataFrame | None]") -> "pd.DataFrame | None":
        """Tables per model label into one with a ``model`` column (None when all are absent or empty)."""
        import pandas as pd

        parts = [f.assign(model=label) for label, f in frames.items() if f is not None and len(f)]
        return pd.concat(parts, ignore_index=True) if parts else None

    # probes
    def probe_table(self, model: ModelRun, name: str) -> "pd.DataFrame | None":
        """``<probe folder>/<name>`` of one model (``metrics.csv``, ``species.csv``, ``<probe>_<table>.csv``)."""
        return self.read_csv(model.probe / name)

    def probe_tables(self, name: str) -> "pd.DataFrame | None":
        """``<probe folder>/<name>`` of every model, with a ``model`` column."""
        return self.concat({m.label: self.probe_table(m, name) for m in self._models})

    def probe_metrics(self) -> "pd.DataFrame | None":
        """Every model's probe rows (``metrics.csv``; the model's features, not a baseline's), with ``model``."""
        rows = self.probe_tables("metrics.csv")
        if rows is not None and "features" in rows.columns:
            rows = rows[rows["features"] == "model"]
        return rows

    def species(self, model: ModelRun) -> "pd.DataFrame | None":
        """The probed species of one model (``species.csv``: taxonomy order)."""
        return self.probe_table(model, "species.csv")

    def npz(self, model: ModelRun, name: str) -> "dict[str, np.ndarray]":
        """The arrays of ``<probe folder>/<name>`` (``<probe>.npz``); empty when absent."""
        import numpy as np

        path = model.probe / name
        if not path.exists():
            return {}
        with np.load(path, allow_pickle=False) as f:
            return {k: f[k] for k in f.files}

    # evaluations
    def evaluation_metrics(self) -> "pd.DataFrame | None":
        """Every evaluation's ``metrics.csv`` of every model, with a ``model`` column."""
        import pandas as pd

        frames = {}
        for m in self._models:
            parts = [t for t in (self.read_csv(d / "metrics.csv") for d in m.evaluations) if t is not None]
            frames[m.label] = pd.concat(parts, ignore_index=True) if parts else None
        return self.concat(frames)

    def evaluation_table(self, model: ModelRun, name: str) -> "pd.DataFrame | None":
        """One table of every evaluation of a model, with its ``method`` and ``split``."""
        import pandas as pd

        parts = []
        for d in model.evaluations:
            table = self.read_csv(d / name)
            run = json.loads((d / "run.json").read_text()) if (d / "run.json").exists() else {}
            if table is not None and len(table):
                parts.append(table.assign(method=run.get("method", d.name), split=run.get("split", "")))
        return pd.concat(parts, ignore_index=True) if parts else None

    def evaluation_tables(self, name: str) -> "pd.DataFrame | None":
        """:meth:`evaluation_table` of every model, with a ``model`` column."""
        return self.concat({m.label: self.evaluation_table(m, name) for m in self._models})

    # projections
    def projections(self, model: ModelRun) -> "list[tuple[str, pd.DataFrame]]":
        """``(method, table)`` of each 2-D projection of a model (``projection-<method>-seed<S>.csv``)."""
        out = []
        for path in model.projections:
            table = self.read_csv(path)
            if table is not None:
                out.append((path.stem.split("-")[1], table))
        return out
