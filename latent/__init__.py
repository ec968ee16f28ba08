"""latent: does a foundation model's embedding space reflect the taxonomy of life?

The Python API works on arrays in memory (see :mod:`latent.api`)::

    import latent
    ev = latent.evaluate(X, taxonomy, method="knn")      # X: (n_images, dim); taxonomy: one row per image
    pr = latent.run_probes(X, taxonomy, permutations=99)
    latent.verdicts(pr)                                   # the answer per rank
    fig, ax = latent.pl.plot_rank_accuracy(ev.to_frame())

Importing ``latent`` is cheap: it never imports torch (nor numpy, pandas, h5py or matplotlib). The
names below are loaded on first use (PEP 562 module ``__getattr__``); heavy dependencies are imported by
the functions that need them.
"""

from __future__ import annotations

import importlib
import logging
from typing import Any

from latent._version import __version__
from latent.ranks import RANK_NAMES, RANKS, Rank

logging.getLogger(__name__).addHandler(logging.NullHandler())

#: Names loaded on first use: name -> (module, attribute or None for the module itself).
_LAZY: dict[str, tuple[str, "str | None"]] = {
    "evaluate": ("latent.evaluate", None),  # the module, callable as latent.evaluate.evaluate
    "run_probes": ("latent.probes.run", "run_probes"),
    "verdicts": ("latent.api", "verdicts"),
    "pl": ("latent.plotting", None),
    "Evaluation": ("latent.evaluate", "Evaluation"),
    "Probes": ("latent.probes.run", "Probes"),
    "ProbeOptions": ("latent.probes.base", "ProbeOptions"),
    "Taxonomy": ("latent.taxonomy", "Taxonomy"),
    "open_cache": ("latent.cache", "open_cache"),
    "evaluate_cache": ("latent.evaluate", "evaluate_cache"),
    "probe_cache": ("latent.probes.run", "probe_cache"),
    "embed_images": ("latent.extract", "embed_images"),
    "emergence": ("latent.layers", "emergence"),
    "emergence_from_cache": ("latent.layers", "emergence_from_cache"),
    "describe_model": ("latent.modelcard", "describe_model"),
    "show_inputs": ("latent.show_inputs", "show_inputs"),
    "predict_topdown": ("latent.topdown", "predict_topdown"),
    "compare_topdown": ("latent.topdown", "compare_topdown"),
    "build_report": ("latent.report", "build_report"),
}

__all__ = ["__version__", "Rank", "RANKS", "RANK_NAMES", *_LAZY]


def __getattr__(name: str) -> Any:
    try:
        module_name, attribute = _LAZY[name]
    except KeyError:
        raise AttributeError(f"module 'latent' has no attribute {name!r}") from None
    module = importlib.import_module(module_name)
    value = module if attribute is None else getattr(module, attribute)
    if name != "evaluate":  # importing the submodule latent.evaluate sets that attribute itself
        globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_LAZY))
