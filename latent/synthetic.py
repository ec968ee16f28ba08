"""Known-answer data: embeddings with a planted hierarchy (filled in below)."""

from __future__ import annotations

from importlib import resources
from pathlib import Path


def builtin_taxonomy_path() -> Path:
    """Path of the built-in taxonomy (47 real species in 4 kingdoms, with cross-kingdom homonyms)."""
    return Path(str(resources.files("latent") / "data" / "builtin_taxonomy.csv"))
