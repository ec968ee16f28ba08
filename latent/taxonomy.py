"""The taxonomy: labelled rows, the tree they define, and taxonomic distances.

Conventions (documented once, used everywhere in latent)
-------------------------------------------------------
* **Identity is the full lineage.** A taxon at rank ``r`` is the tuple of names from kingdom down to
  ``r``. Two genera both called *Morus* (a bird and a plant) are two taxa; epithets shared across
  genera never collapse. The species label is the binomial ``"Genus epithet"``.
* **Empty values.** A cell is empty when it is blank or one of ``na, n/a, nan, none, null`` (any case).
  - An empty *intermediate* rank (a named rank exists below it) inherits its parent's identity: it
    is an unnamed placeholder child of the parent, shared by every row with the same parent and the
    same empty rank (as BioCLIP's lineage strings do). Distances count it like a named taxon: two
    species under one order, both with an empty family and different genera, are at distance 2.
    The row is *unlabelled at that rank* (``labels(rank)`` is ``""``, ``labelled(rank)`` is False),
    so metrics at that rank exclude it.
  - Empty *trailing* ranks (nothing named below) mean the row is only known down to its deepest
    named rank. A row with an empty species is kept, unlabelled at species, and excluded from every
    metric that needs the species; it is not a leaf of the tree.
* **Conflicts.** A name must have a single parent within a kingdom (the zoological and botanical
  codes forbid homonyms inside one code). The same name under two different parents in one kingdom
  (e.g. a genus in two families) is a conflict, reported with its rows; across kingdoms it is a
  homonym and the two taxa stay apart.
* **Genus/binomial mismatches.** A species binomial whose genus differs from the row's genus column
  ("Pica pica" under genus Corvus) is usually a synonym the data source resolved at one rank and not
  the other (GBIF files "Lasiommata megera" under genus Pararge). It is a warning by default, logged
  once per pair as one line naming the rows, and kept in :attr:`Taxonomy.genus_mismatches`: the
  lineage columns decide the tree. ``on_genus_mismatch="raise"`` refuses it.
* **Taxonomic distance** between two species is the LCA height of Making Better Mistakes: the number
  of ranks to climb to the lowest common ancestor, 0 (same species) .. 6 (same kingdom) .. 7
  (different kingdoms). The tree path length is twice that. The matrix is ultrametric.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd

from latent.errors import InputError, TaxonomyError, format_list
from latent.ranks import RANK_NAMES, RANKS, Rank, parse_rank
from latent.tables import read_table

__all__ = [
    "Taxonomy",
    "EMPTY_MARKERS",
    "lca_height",
    "resolve_rank_columns",
    "lineages_from_table",
    "GENUS_MISMATCH_POLICIES",
]

log = logging.getLogger(__name__)

N_RANKS = len(RANKS)
MAX_DISTANCE = N_RANKS  # 7: different kingdoms
EMPTY_MARKERS = frozenset({"", "na", "n/a", "nan", "none", "null"})

# Accepted header spellings per rank (compared after strip + lower-case). Order matters: for class,
# ``cls`` and ``class_`` win over ``class``, because files that use them (e.g. BioCLIP's Rare Species
# metadata) keep a column called ``class`` for something else (the binomial).
_ALIASES: dict[Rank, tuple[str, ...]] = {
    Rank.KINGDOM: ("kingdom",),
    Rank.PHYLUM: ("phylum",),
    Rank.CLASS: ("cls", "class_", "class"),
    Rank.ORDER: ("order",),
    Rank.FAMILY: ("family",),
    Rank.GENUS: ("genus",),
    Rank.SPECIES: ("species",),
}


def resolve_rank_columns(columns: Sequence[object], *, what: str = "taxonomy table") -> dict[Rank, object]:
    """Map each rank to the column of ``columns`` holding it (headers are case-insensitive).

    Returns
    -------
    dict
        ``{Rank: column}`` for all seven ranks.

    Raises
    ------
    TaxonomyError
        If a rank has no column; the message lists the missing ranks, the accepted spellings and the
        columns found.
    InputError
        If the column chosen for a rank is there twice (headers that differ only in case or spaces).
    """
    by_key: dict[str, object] = {}
    same_key: dict[str, list[object]] = {}
    for column in columns:
        key = str(column).strip().lower()
        by_key.setdefault(key, column)
        same_key.setdefault(key, []).append(column)
    found: dict[Rank, object] = {}
    missing = []
    for rank in RANKS:
        for alias in _ALIASES[rank]:
            if alias in by_key:
                found[rank] = by_key[alias]
                break
        else:
            missing.append(rank)
    for rank, column in found.items():
        twins = same_key[str(column).strip().lower()]
        if len(twins) > 1:
            raise InputError(
                f"The {what} has {len(twins)} columns for rank {rank.label} ({', '.join(repr(str(c)) for c in twins)}; "
                f"headers are compared ignoring case and spaces): keep one of them."
            )
    if missing:
        spell = "; ".join(f"{r.label}: {' or '.join(_ALIASES[r])}" for r in missing)
        raise TaxonomyError(
            f"The {what} has no column for rank(s) {', '.join(r.label for r in missing)} "
            f"(accepted headers, any case: {spell}). Columns found: {format_list(map(str, columns))}."
        )
    if found[Rank.CLASS] != by_key.get("class") and "class" in by_key:
        log.info(
            "%s: using column %r for rank class; the column 'class' is not read as a rank",
            what, found[Rank.CLASS],
        )
    return found


def _clean(values: pd.Series) -> np.ndarray:
    """Strip, collapse inner whitespace and blank out empty markers; returns ``(n,)`` object array."""
    text = values.astype(object).where(values.notna(), "")
    text = text.map(lambda v: " ".join(str(v).split()))
    out = np.array(text.to_numpy(dtype=object), dtype=object)  # a writable copy (pandas may hand out a read-only view)
    empty = np.fromiter((v.lower() in EMPTY_MARKERS for v in out), dtype=bool, count=len(out))
    out[empty] = ""
    return out


def _distinct(codes: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The distinct rows of ``(n, k)`` integer codes: ``(first row of each, (n,) index of each row's)``."""
    _, first, inverse = np.unique(codes, axis=0, return_index=True, return_inverse=True)
    return first, np.asarray(inverse).reshape(-1)


def _distinct_names(names: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """:func:`_distinct` of an ``(n, 7)`` object array of names (compared by value, hashed per column)."""
    if not len(names):
        return np.arange(0), np.arange(0)
    return _distinct(np.stack([pd.factorize(names[:, r], use_na_sentinel=False)[0] for r in range(names.shape[1])],
                              axis=1))


def lineages_from_table(table: "pd.DataFrame | str | os.PathLike[str]", *, what: str = "taxonomy table") -> np.ndarray:
    """Read the seven rank columns of a table into cleaned names, species as binomials.

    A species cell holding one word is the epithet alone and is joined with the genus:
    ``genus="Cyclonaias", species="tuberculata"`` gives ``"Cyclonaias tuberculata"`` (and
    ``"Pipile", "pipile"`` gives the tautonym ``"Pipile pipile"``). A cell of two or more words is
    already a full name and is kept as it is.

    Returns
    -------
    numpy.ndarray
        ``(n_rows, 7)`` object array of ``str``, ``""`` where empty.
    """
    frame = read_table(table, what=what)
    if len(frame) == 0 and not isinstance(table, pd.DataFrame):
        raise InputError(f"The {what} has no rows (only a header): give one row per taxon or image.")
    columns = resolve_rank_columns(list(frame.columns), what=what)
    # Cleaning is row by row, so it runs on the distinct rows only (a million images of 10,000 species are
    # 10,000 lineages) and the result is expanded: rows with the same cells share the same str objects.
    first, inverse = _distinct(np.stack([pd.factorize(frame[columns[rank]], use_na_sentinel=True)[0]
                                         for rank in RANKS], axis=1)) if len(frame) else (np.arange(0), np.arange(0))
    times = np.bincount(inverse, minlength=len(first))
    distinct = frame.iloc[first]
    names = np.empty((len(distinct), N_RANKS), dtype=object)
    for rank in RANKS:
        names[:, rank] = _clean(distinct[columns[rank]])
    genus, species = names[:, Rank.GENUS], names[:, Rank.SPECIES]
    no_genus = 0
    for i in np.flatnonzero(species != ""):
        if " " in species[i]:
            continue  # already a full name ("Genus epithet", possibly with more words)
        if genus[i]:
            species[i] = f"{genus[i]} {species[i]}"  # an epithet alone (tautonyms included: "Pipile pipile")
        else:
            no_genus += int(times[i])
    names = names[inverse]
    if no_genus:
        log.warning(
            "%s: %d rows give a species epithet without a genus; kept as the bare epithet "
            "(its identity is still its full lineage)", what, no_genus,
        )
    return names


def lca_height(codes_a: np.ndarray, codes_b: np.ndarray) -> np.ndarray:
    """LCA height between every row of ``codes_a`` and every row of ``codes_b``.

    Parameters
    ----------
    codes_a, codes_b
        ``(n, 7)`` and ``(m, 7)`` integer lineage codes (``Taxonomy.row_codes`` or
        ``Taxonomy.species_codes``); ``-1`` (unknown) never counts as shared.

    Returns
    -------
    numpy.ndarray
        ``(n, m)`` ``uint8``: 7 minus the number of ranks the two lineages share.
    """
    a = np.asarray(codes_a)
    b = np.asarray(codes_b)
    out = np.full((a.shape[0], b.shape[0]), MAX_DISTANCE, dtype=np.uint8)
    for r in range(N_RANKS):
        # Identity is by lineage, so sharing rank r implies sharing every rank above it.
        shared = (a[:, r, None] == b[None, :, r]) & (a[:, r, None] >= 0)
        out -= shared.view(np.uint8)
    return out


_NAME_MARKS = str.maketrans({c: " " for c in "×[]()'\"\u2020"})  # hybrid sign, brackets, quotes, dagger
_NAME_PREFIXES = frozenset({"x", "candidatus", "ca."})  # "x Agropogon", "Candidatus Pelagibacter"


def _first_name(name: str) -> str:
    """The genus part of a name (casefolded), past hybrid signs, brackets and "Candidatus"."""
    words = [w for w in name.translate(_NAME_MARKS).split() if w.casefold() not in _NAME_PREFIXES]
    return words[0].casefold() if words else ""


def _genus_mismatches(names: np.ndarray) -> list[tuple[int, str, str]]:
    """Rows ``(row, genus, species)`` whose species of two or more words starts with another genus.

    "Pica pica" under genus Corvus is a mismatch; an epithet alone (joined with the genus when the
    table is read), "Corvus sp.", trinomials and a genus written with its subgenus ("Aedes
    (Stegomyia)") are not.
    """
    genus, species = names[:, Rank.GENUS].astype(str), names[:, Rank.SPECIES].astype(str)
    pairs = pd.DataFrame({"g": genus, "s": species})
    pairs = pairs[(pairs["g"] != "") & pairs["s"].str.contains(" ", regex=False)].drop_duplicates()
    bad = {(g, sp) for g, sp in zip(pairs["g"], pairs["s"])
           if _first_name(sp) and _first_name(g) and _first_name(sp) != _first_name(g)}
    if not bad:
        return []
    return [(int(i), str(genus[i]), str(species[i])) for i in range(len(genus)) if (genus[i], species[i]) in bad]


#: Accepted values of ``on_genus_mismatch``: log a warning (default) or raise TaxonomyError.
GENUS_MISMATCH_POLICIES = ("warn", "raise")
_WARNED_MISMATCHES: set[tuple[str, str]] = set()  # (genus, species) pairs already warned in this process


def _warn_mismatches(mismatches: list[tuple[int, str, str]], what: str) -> None:
    """One warning line for genus/binomial mismatches: the count, the rows, and what decides.

    Each (genus, species) pair is warned once per process (the same cache is read many times in a
    report); later sightings are logged at debug level.
    """
    pairs = {(g, s) for _, g, s in mismatches}
    new = pairs - _WARNED_MISMATCHES
    shown = format_list((f"row {row}: {species!r} under genus {genus!r}" for row, genus, species in mismatches), limit=5)
    text = (f"{what}: {len(mismatches)} row(s) have a species binomial of another genus than their genus column "
            f"({shown}); kept as written: the lineage columns decide the tree (check for synonyms; "
            f"on_genus_mismatch='raise', --on-genus-mismatch raise, refuses them)")
    if new:
        _WARNED_MISMATCHES.update(new)
        log.warning("%s", text)
    else:
        log.debug("%s", text)


@dataclass(frozen=True)
class _Conflict:
    rank: Rank
    name: str
    kingdom: str
    parents: tuple[tuple[str, tuple[int, ...]], ...]  # (parent description, rows)


class Taxonomy:
    """Labelled rows and the taxonomic tree they define.

    Build it with :meth:`from_table` (a CSV/TSV/Parquet file or a DataFrame) or
    :meth:`from_lineages`. Nodes at each rank are numbered in lineage order, so species that are
    close in the tree are adjacent in :attr:`species_codes`.

    Attributes
    ----------
    row_names : numpy.ndarray
        ``(n_rows, 7)`` cleaned names per row (``""`` = empty), species as binomials.
    row_codes : numpy.ndarray
        ``(n_rows, 7)`` ``int64`` node index of each row at each rank; ``-1`` below the row's deepest
        named rank. Empty intermediate ranks get the code of a placeholder node (see module notes).
    node_names : tuple of numpy.ndarray
        Per rank, ``(n_nodes[r],)`` names (``""`` for placeholders).
    node_parents : tuple of numpy.ndarray
        Per rank, ``(n_nodes[r],)`` index of the parent node at rank ``r - 1`` (``-1`` for kingdoms).
    conflicts : tuple
        Names with two parents in one kingdom, kept (``on_conflict="warn"``).
    genus_mismatches : tuple of (int, str, str)
        ``(row, genus, species)`` of rows whose species binomial names another genus than their genus
        column (warned by default, refused with ``on_genus_mismatch="raise"``).
    """

    def __init__(self, row_names: np.ndarray, *, on_conflict: str = "raise", what: str = "taxonomy",
                 on_genus_mismatch: str = "warn") -> None:
        if on_conflict not in ("raise", "warn"):
            raise ValueError(
                f"The 'on_conflict' parameter of Taxonomy must be 'raise' or 'warn'. Got {on_conflict!r} instead."
            )
        if on_genus_mismatch not in GENUS_MISMATCH_POLICIES:
            raise InputError(
                f"The 'on_genus_mismatch' parameter of Taxonomy must be 'warn' or 'raise'. "
                f"Got {on_genus_mismatch!r} instead."
            )
        names = np.asarray(row_names, dtype=object)
        if names.ndim != 2 or names.shape[1] != N_RANKS:
            raise TaxonomyError(f"Lineages must have shape (n_rows, 7); got {names.shape}.")
        names = names.copy()
        self.row_names = names
        # The tree is built from the distinct lineages (the grouping below is by value) and every row takes
        # its lineage's codes: the same numbers, at the cost of the lineages, not of the rows.
        first, inverse = _distinct_names(names)
        all_names, names = names, names[first]
        filled = names != ""
        depth = np.where(filled.any(axis=1), N_RANKS - 1 - np.argmax(filled[:, ::-1], axis=1), -1)
        self.row_depth = depth[inverse]
        codes = np.full(names.shape, -1, dtype=np.int64)
        node_names: list[np.ndarray] = []
        node_parents: list[np.ndarray] = []
        for r in range(N_RANKS):
            rows = np.flatnonzero(depth >= r)
            parent = codes[rows, r - 1] if r else np.zeros(len(rows), dtype=np.int64)
            frame = pd.DataFrame({"p": parent, "n": names[rows, r].astype(str)})
            grouped = frame.groupby(["p", "n"], sort=True)
            codes[rows, r] = grouped.ngroup().to_numpy()
            keys = grouped.size().index
            node_parents.append(
                np.asarray(keys.get_level_values(0), dtype=np.int64) if r else np.full(len(keys), -1, dtype=np.int64)
            )
            node_names.append(np.asarray(keys.get_level_values(1), dtype=object))
        self.row_codes = codes[inverse]
        self.node_names = tuple(node_names)
        self.node_parents = tuple(node_parents)
        self._what = what
        conflicts = self._find_conflicts()
        if conflicts:
            message = self._conflict_message(conflicts)
            if on_conflict == "raise":
                raise TaxonomyError(message)
            log.warning("%s", message)
        self.conflicts: tuple[_Conflict, ...] = tuple(conflicts)
        mismatches = _genus_mismatches(names)
        if mismatches:  # lineages -> the rows that hold them, in row order
            rows = np.flatnonzero(np.isin(inverse, [i for i, _, _ in mismatches]))
            mismatches = [(int(i), str(all_names[i, Rank.GENUS]), str(all_names[i, Rank.SPECIES])) for i in rows]
        if mismatches:
            if on_genus_mismatch == "raise":
                raise TaxonomyError(self._mismatch_message(mismatches))
            _warn_mismatches(mismatches, what)
        self.genus_mismatches: tuple[tuple[int, str, str], ...] = tuple(mismatches)

    # ------------------------------------------------------------------ construction
    @classmethod
    def from_table(
        cls,
        table: "pd.DataFrame | str | os.PathLike[str]",
        *,
        on_conflict: str = "raise",
        on_genus_mismatch: str = "warn",
    ) -> "Taxonomy":
        """Build a taxonomy from a table with one column per rank (CSV, TSV, Parquet or DataFrame).

        Headers are case-insensitive; class may be ``class``, ``cls`` or ``class_``; species may be the
        binomial or the epithet alone. Other columns are ignored. Row ``i`` of the taxonomy is row ``i``
        of the table (0-based, header not counted): error messages use these numbers.

        Raises
        ------
        TaxonomyError
            A rank column is missing, or (with ``on_conflict="raise"``) a name has two parents in one
            kingdom; the message lists the rows of every parent. With ``on_genus_mismatch="raise"``
            also a species binomial of another genus than its row's genus column (by default a
            warning, see the module notes).
        """
        what = "taxonomy table" if isinstance(table, pd.DataFrame) else f"taxonomy table {os.fspath(table)!r}"
        return cls(lineages_from_table(table, what=what), on_conflict=on_conflict, what=what,
                   on_genus_mismatch=on_genus_mismatch)

    @classmethod
    def from_lineages(cls, lineages: "Sequence[Sequence[str]] | np.ndarray", *, on_conflict: str = "raise",
                      on_genus_mismatch: str = "warn") -> "Taxonomy":
        """Build from ``(n_rows, 7)`` names, kingdom first, species as binomials, ``""`` for empty."""
        array = np.asarray(lineages, dtype=object)
        if array.ndim != 2 or array.shape[1] != N_RANKS:
            raise TaxonomyError(f"Lineages must have shape (n_rows, 7); got {array.shape}.")
        frame = pd.DataFrame(array, columns=list(RANK_NAMES))
        return cls.from_table(frame, on_conflict=on_conflict, on_genus_mismatch=on_genus_mismatch)

    # ------------------------------------------------------------------ conflicts
    def _node_kingdom(self, rank: int) -> np.ndarray:
        """``(n_nodes[rank],)`` kingdom node of every node at ``rank``."""
        node = np.arange(len(self.node_names[rank]))
        for r in range(rank, 0, -1):
            node = self.node_parents[r][node]
        return node

    def _describe_node(self, rank: int, node: int) -> str:
        name = self.node_names[rank][node]
        if name:
            return f"{RANK_NAMES[rank]} {name!r}"
        if rank == 0:
            return "kingdom (empty)"
        return f"{RANK_NAMES[rank]} (empty, under {self._describe_node(rank - 1, self.node_parents[rank][node])})"

    def _find_conflicts(self) -> list[_Conflict]:
        conflicts = []
        for r in range(1, N_RANKS):
            names = self.node_names[r].astype(str)
            if not len(names):
                continue
            parents = self.node_parents[r]
            parent_names = self.node_names[r - 1][parents].astype(str)
            frame = pd.DataFrame({
                "kingdom": self._node_kingdom(r), "name": names, "parent_name": parent_names,
                "node": np.arange(len(names)), "parent": parents,
            })
            frame = frame[frame["name"] != ""]
            # Same name, same kingdom, parents with different names: a conflict at this rank.
            # (Different parents with the same name are reported at the parent's rank.)
            n_parent_names = frame.groupby(["kingdom", "name"])["parent_name"].transform("nunique")
            for (kingdom, name), group in frame[n_parent_names > 1].groupby(["kingdom", "name"], sort=True):
                described = []
                for parent, sub in group.groupby("parent", sort=True):
                    rows = np.flatnonzero(np.isin(self.row_codes[:, r], sub["node"].to_numpy()))
                    described.append((self._describe_node(r - 1, int(parent)), tuple(int(i) for i in rows)))
                conflicts.append(_Conflict(Rank(r), str(name), str(self.node_names[0][kingdom]), tuple(described)))
        return conflicts

    def _conflict_message(self, conflicts: list[_Conflict]) -> str:
        lines = [
            f"The {self._what} has {len(conflicts)} name(s) with more than one parent. Within a kingdom a "
            "name must have a single parent (homonyms across kingdoms are allowed). Rows are 0-based data "
            "rows (header not counted). Fix the table, or pass on_conflict='warn' (--on-conflict warn) to keep the lineages apart:"
        ]
        for c in conflicts[:20]:
            parts = "; ".join(f"{p} in rows {format_list(rows, limit=10)}" for p, rows in c.parents[:5])
            if len(c.parents) > 5:
                parts += f"; ... ({len(c.parents)} parents in all)"
            lines.append(f"  {c.rank.label} {c.name!r} ({c.kingdom or 'empty kingdom'}): {parts}")
        if len(conflicts) > 20:
            lines.append(f"  ... and {len(conflicts) - 20} more conflicts ({len(conflicts)} in all)")
        return "\n".join(lines)

    def _mismatch_message(self, mismatches: list[tuple[int, str, str]]) -> str:
        lines = [
            f"The {self._what} has {len(mismatches)} row(s) whose species is a binomial of another genus than the "
            "row's genus column (often a synonym). Rows are 0-based data rows (header not counted). Fix the "
            "genus or the species, or pass on_genus_mismatch='warn' (--on-genus-mismatch warn) to keep them as "
            "written:"
        ]
        for row, genus, species in mismatches[:20]:
            lines.append(f"  row {row}: genus {genus!r}, species {species!r}")
        if len(mismatches) > 20:
            lines.append(f"  ... and {len(mismatches) - 20} more rows ({len(mismatches)} in all)")
        return "\n".join(lines)

    # ------------------------------------------------------------------ basic views
    @property
    def n_rows(self) -> int:
        """Number of labelled (or unlabelled) rows the taxonomy was built from."""
        return int(self.row_names.shape[0])

    @property
    def n_species(self) -> int:
        """Number of species (leaves of the tree)."""
        return len(self.node_names[Rank.SPECIES])

    def n_nodes(self, rank: "Rank | str | int") -> int:
        """Number of nodes at ``rank``, placeholders for empty intermediate ranks included."""
        return len(self.node_names[parse_rank(rank)])

    def n_taxa(self, rank: "Rank | str | int") -> int:
        """Number of named taxa at ``rank`` (distinct full lineages; placeholders not counted)."""
        return int(np.count_nonzero(self.node_names[parse_rank(rank)] != ""))

    @property
    def species_codes(self) -> np.ndarray:
        """``(n_species, 7)`` lineage codes of every species node (row ``s`` is species ``s``)."""
        codes = np.empty((self.n_species, N_RANKS), dtype=np.int64)
        codes[:, -1] = np.arange(self.n_species)
        for r in range(N_RANKS - 1, 0, -1):
            codes[:, r - 1] = self.node_parents[r][codes[:, r]]
        return codes

    def labelled(self, rank: "Rank | str | int") -> np.ndarray:
        """``(n_rows,)`` bool: the row has a named taxon at ``rank`` (metrics at ``rank`` use these rows)."""
        r = parse_rank(rank)
        return self.row_names[:, r] != ""

    def labels(self, rank: "Rank | str | int") -> np.ndarray:
        """``(n_rows,)`` str: the row's taxon name at ``rank``, ``""`` where unlabelled.

        Names are not identities (homonyms share a name); use :meth:`codes` to compare taxa.
        """
        return self.row_names[:, parse_rank(rank)].astype(str)

    def codes(self, rank: "Rank | str | int") -> np.ndarray:
        """``(n_rows,)`` int: node of each row at ``rank``, ``-1`` where the row is unlabelled there."""
        r = parse_rank(rank)
        return np.where(self.labelled(r), self.row_codes[:, r], -1)

    def lineage(self, rank: "Rank | str | int", node: int) -> tuple[str, ...]:
        """Names from kingdom down to ``rank`` of node ``node`` (``""`` for placeholders)."""
        r = parse_rank(rank)
        out = []
        for rr in range(r, -1, -1):
            out.append(str(self.node_names[rr][node]))
            node = self.node_parents[rr][node]
        return tuple(reversed(out))

    def species_table(self) -> pd.DataFrame:
        """One row per species, in lineage order: the seven rank names (``""`` for placeholders)."""
        codes = self.species_codes
        return pd.DataFrame({name: self.node_names[r][codes[:, r]].astype(str) for r, name in enumerate(RANK_NAMES)})

    def species_labels(self) -> list[str]:
        """Unique display label per species: the binomial, followed by the lineage where two share it."""
        names = self.node_names[Rank.SPECIES].astype(str)
        counts = pd.Series(names).value_counts()
        labels = []
        for s, name in enumerate(names):
            if counts[name] > 1:
                name = f"{name} [{';'.join(self.lineage(Rank.GENUS, self.node_parents[Rank.SPECIES][s]))}]"
            labels.append(name)
        return labels

    # ------------------------------------------------------------------ distances
    def distances(self) -> np.ndarray:
        """Taxonomic distance (LCA height, 0..7) between every pair of species.

        Returns
        -------
        numpy.ndarray
            ``(n_species, n_species)`` ``uint8``, symmetric with a zero diagonal, ultrametric; row and
            column ``s`` are species ``s`` (:meth:`species_table` row ``s``).
        """
        # Species are numbered in lineage order, so the species under any node form one contiguous
        # range and the matrix is nested blocks: fill each node's block with its height, root down.
        codes = self.species_codes
        n = self.n_species
        out = np.full((n, n), MAX_DISTANCE, dtype=np.uint8)
        for r in range(N_RANKS):
            c = codes[:, r]
            if (c[1:] < c[:-1]).any():  # pragma: no cover - guards the invariant the blocks rely on
                raise AssertionError("species are not in lineage order")
            starts = np.flatnonzero(np.r_[True, c[1:] != c[:-1]])
            ends = np.r_[starts[1:], n]
            height = N_RANKS - 1 - r
            for s, e in zip(starts.tolist(), ends.tolist()):
                out[s:e, s:e] = height
        return out

    def row_distances(self, rows_a: "np.ndarray | None" = None, rows_b: "np.ndarray | None" = None) -> np.ndarray:
        """LCA height between rows (e.g. images), ``(len(rows_a), len(rows_b))`` ``uint8``.

        Unknown ranks never count as shared, so a row with an unknown species is at distance >= 1 even
        from itself; select rows with ``labelled("species")`` first when that matters.
        """
        a = self.row_codes if rows_a is None else self.row_codes[np.asarray(rows_a)]
        b = a if rows_b is None and rows_a is None else self.row_codes if rows_b is None else self.row_codes[np.asarray(rows_b)]
        return lca_height(a, b)

    # ------------------------------------------------------------------ clades
    def find(self, rank: "Rank | str | int", name: "str | Sequence[str]") -> list[int]:
        """Nodes at ``rank`` named ``name`` (a name, or a lineage ``"Animalia;Chordata;Aves"`` / sequence)."""
        r = parse_rank(rank)
        if isinstance(name, str):
            parts = [p.strip() for p in name.split(";")]
        else:
            parts = [str(p).strip() for p in name]
        matches = np.flatnonzero(self.node_names[r] == parts[-1])
        if len(parts) > 1:
            if len(parts) != r + 1:
                raise TaxonomyError(
                    f"A lineage for rank {r.label} must name {r + 1} ranks (kingdom..{r.label}); got {len(parts)}: {name!r}."
                )
            matches = [m for m in matches if self.lineage(r, int(m)) == tuple(parts)]
        return [int(m) for m in matches]

    def clade_node(self, rank: "Rank | str | int", name: "str | Sequence[str]") -> int:
        """The one node at ``rank`` named ``name`` (a name, or a lineage ``"Animalia;Chordata;Aves"``).

        Raises
        ------
        TaxonomyError
            If no taxon has that name, or several do (homonyms): the message lists their lineages so
            one can be given as ``"Kingdom;Phylum;...;Name"``.
        """
        r = parse_rank(rank)
        nodes = self.find(r, name)
        if not nodes:
            known = sorted({str(n) for n in self.node_names[r] if n})
            raise TaxonomyError(
                f"No {r.label} named {name!r} in the taxonomy. Known {r.label} names: {format_list(known)}."
            )
        if len(nodes) > 1:
            lineages = [";".join(self.lineage(r, n)) for n in nodes]
            raise TaxonomyError(
                f"The {r.label} name {name!r} is ambiguous (homonyms): {format_list(lineages)}. "
                "Give the full lineage, separated by ';'."
            )
        return nodes[0]

    def clade_mask(self, rank: "Rank | str | int", name: "str | Sequence[str]") -> np.ndarray:
        """``(n_rows,)`` bool: rows inside the clade ``name`` at ``rank`` (see :meth:`clade_node`)."""
        r = parse_rank(rank)
        return self.row_codes[:, r] == self.clade_node(r, name)

    def subset(self, rank: "Rank | str | int", name: "str | Sequence[str]") -> "Taxonomy":
        """The taxonomy of the rows inside one clade (rows renumbered from 0)."""
        mask = self.clade_mask(rank, name)
        return Taxonomy(self.row_names[mask], on_conflict="warn", what=f"{self._what} (clade {name})")

    def select_rows(self, rows: np.ndarray) -> "Taxonomy":
        """The taxonomy of ``rows`` (indices or a ``(n_rows,)`` bool mask), renumbered from 0."""
        return Taxonomy(self.row_names[np.asarray(rows)], on_conflict="warn", what=self._what)

    # ------------------------------------------------------------------ summaries and export
    def counts(self) -> pd.DataFrame:
        """Per rank: named ``taxa``, ``placeholders`` (empty intermediate ranks), rows labelled / unlabelled."""
        records = []
        for rank in RANKS:
            labelled = int(self.labelled(rank).sum())
            records.append({
                "rank": rank.label,
                "taxa": self.n_taxa(rank),
                "placeholders": int(np.count_nonzero(self.node_names[rank] == "")),
                "rows_labelled": labelled,
                "rows_unlabelled": self.n_rows - labelled,
            })
        return pd.DataFrame.from_records(records)

    def summary(self) -> str:
        """A few human-readable lines: taxa per rank, empty cells, conflicts."""
        counts = self.counts()
        lines = [f"{self.n_rows} rows, {self.n_species} species"]
        for rec in counts.itertuples():
            extra = f", {rec.placeholders} unnamed (empty intermediate rank)" if rec.placeholders else ""
            lines.append(f"  {rec.rank:<8} {rec.taxa:>7} taxa, {rec.rows_unlabelled} rows unlabelled{extra}")
        lines.append(f"  conflicts: {len(self.conflicts)}")
        return "\n".join(lines)

    def to_newick(self) -> str:
        """The tree over species in Newick format, every edge of length 1.

        Internal nodes carry their names (placeholders are unnamed); leaves are binomials; labels are
        single-quoted when needed. The tree path length between two species is twice their distance.
        Nodes with no species below them (rows known only to a higher rank) are left out.
        """
        # Bottom-up: ``below[node]`` is the Newick text of each node at the current rank that has
        # species below it.
        below: dict[int, str] = {s: _newick_label(str(n)) + ":1" for s, n in enumerate(self.node_names[Rank.SPECIES])}
        for r in range(N_RANKS - 2, -1, -1):
            children: dict[int, list[str]] = {}
            for child in sorted(below):
                children.setdefault(int(self.node_parents[r + 1][child]), []).append(below[child])
            below = {
                node: "(" + ",".join(texts) + ")" + _newick_label(str(self.node_names[r][node])) + ":1"
                for node, texts in children.items()
            }
        strings = [below[k] for k in sorted(below)]
        return "(" + ",".join(strings) + ");"

    def __repr__(self) -> str:
        return f"Taxonomy({self.n_rows} rows, {self.n_species} species, " + ", ".join(
            f"{self.n_taxa(r)} {r.label}" for r in RANKS[:-1]
        ) + ")"


def _newick_label(name: str) -> str:
    if not name:
        return ""
    if any(ch in name for ch in " ()[]':;,\t") or name != name.strip():
        return "'" + name.replace("'", "''") + "'"
    return name
