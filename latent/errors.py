"""Exceptions raised by latent, and the one message shape they share.

Every error about user input names the parameter or file, the bad values, and what to do.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

__all__ = [
    "LatentError",
    "TaxonomyError",
    "CacheError",
    "ProvenanceError",
    "InputError",
    "ResourceError",
    "format_list",
]


class LatentError(Exception):
    """Base class of the errors latent raises on bad input or bad state (the CLI prints them)."""

    #: The CLI's exit code for this error: 2, the command as given cannot run (see :class:`ResourceError`).
    exit_code = 2


class TaxonomyError(LatentError, ValueError):
    """A taxonomy table is malformed: missing rank columns or conflicting lineages."""


class CacheError(LatentError):
    """An embedding cache is missing, damaged, incomplete or would be overwritten."""


class ProvenanceError(CacheError):
    """Rows from another model, weights or preprocessing were about to be mixed into a cache."""


class InputError(LatentError, ValueError):
    """Input files (embeddings, metadata) are inconsistent or hold invalid values."""


class ResourceError(CacheError):
    """The command was right but the machine or another process stopped it: disk full, a file too large,
    a damaged or truncated file, a cache or output folder in use by another process.

    The CLI exits 1 (a runtime failure) for these, and 2 for every other :class:`LatentError` (the command
    as given cannot run: bad input, or a refusal to replace results without ``--force``).
    """

    exit_code = 1


def format_list(values: Iterable[object], *, limit: int = 20) -> str:
    """Join ``values`` for an error message: all of them, or the first ``limit`` and a count.

    >>> format_list(range(25), limit=3)
    '0, 1, 2 (and 22 more, 25 in all)'
    """
    items: Sequence[object] = list(values)
    shown = ", ".join(str(v) for v in items[:limit])
    if len(items) > limit:
        shown += f" (and {len(items) - limit} more, {len(items)} in all)"
    return shown
