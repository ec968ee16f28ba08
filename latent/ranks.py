"""The seven Linnaean ranks used everywhere in latent."""

from __future__ import annotations

import enum
import numbers

__all__ = ["Rank", "RANKS", "RANK_NAMES", "parse_rank"]


class Rank(enum.IntEnum):
    """Taxonomic rank, from the root of the tree (``KINGDOM = 0``) to the leaves (``SPECIES = 6``).

    The integer value is the column index used by every ``(n, 7)`` code array in latent.
    """

    KINGDOM = 0
    PHYLUM = 1
    CLASS = 2
    ORDER = 3
    FAMILY = 4
    GENUS = 5
    SPECIES = 6

    @property
    def label(self) -> str:
        """Lower-case name used in tables, files and HDF5 paths (``"class"``, not ``"CLASS"``)."""
        return self.name.lower()

    def __str__(self) -> str:  # pragma: no cover - trivial
        return self.label


RANKS: tuple[Rank, ...] = tuple(Rank)
RANK_NAMES: tuple[str, ...] = tuple(r.label for r in Rank)


def parse_rank(value: "Rank | str | int", *, parameter: str = "rank") -> Rank:
    """Return the :class:`Rank` named by ``value`` (a Rank, its name in any case, or its index).

    Raises
    ------
    ValueError
        If ``value`` names no rank; the message lists the valid names.
    """
    if isinstance(value, Rank):
        return value
    if isinstance(value, numbers.Integral) and not isinstance(value, bool):
        if 0 <= int(value) < len(RANKS):
            return Rank(int(value))
    elif isinstance(value, str):
        key = value.strip().lower()
        if key in ("cls", "class_"):
            key = "class"
        for rank in RANKS:
            if rank.label == key:
                return rank
    raise ValueError(
        f"The {parameter!r} parameter must be one of {', '.join(RANK_NAMES)} "
        f"(or an index 0-6). Got {value!r} instead."
    )
