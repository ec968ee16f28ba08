"""latent: does a foundation model's embedding space reflect the taxonomy of life?

Importing ``latent`` is cheap: it never imports torch. Heavy dependencies are imported by the
functions and commands that need them.
"""

from __future__ import annotations

import logging

from latent._version import __version__
from latent.ranks import RANK_NAMES, RANKS, Rank

logging.getLogger(__name__).addHandler(logging.NullHandler())

__all__ = ["__version__", "Rank", "RANKS", "RANK_NAMES"]
