"""Seen versus unseen: the primary statistic per rank on the species a model saw in training and on the others.

A model trained on a species' images (and, for BioCLIP 2, its name) may place it by memory; species it never
saw show what generalises. This probe splits the probed species by a training list (setting ``seen``: a JSON
object keyed by taxon such as the Rare Species benchmark's ``seen_in_training.json``, a JSON list, a text
file with one name a line, or the names; matched as :func:`latent.audit.duplicates.training_overlap` does:
exact, case-insensitive, or by binomial) and runs the ``levels`` probe (:mod:`latent.probes.levels`: the
primary statistic under its restricted null, species as the unit) on each group separately. The verdict rule
applies within each group as in the report. Rows carry ``group`` (``seen`` / ``unseen``); a rank testable
in both groups also gets ``unseen_minus_seen`` (the difference of the two ratios; above 0: the rank is less
visible among unseen species), with no null and no CI of its own: read it with the two groups' CIs.
"""

from __future__ import annotations

import logging

import numpy as np
import pandas as pd

from latent.errors import InputError
from latent.probes.base import ProbeData, ProbeOptions, ProbeResult
from latent.ranks import RANK_NAMES, Rank

__all__ = ["probe_seen_unseen", "GROUPS"]

log = logging.getLogger(__name__)

GROUPS = ("seen", "unseen")


def _group_data(data: ProbeData, keep_species: np.ndarray) -> "ProbeData | None":
    """The images of the species in ``keep_species`` ((S,) bool); None below 2 species."""
    if int(keep_species.sum()) < 2:
        return None
    rows = np.flatnonzero(keep_species[data.species])
    return ProbeData.from_arrays(np.asarray(data.X)[rows], data.taxonomy.select_rows(rows), np.asarray(data.ids)[rows])


def probe_seen_unseen(data: ProbeData, options: ProbeOptions) -> ProbeResult:
    """The ``levels`` probe on the seen species and on the unseen ones (see the module docstring).

    Settings (``options.for_probe("seen_unseen")``): ``seen`` (required: the training list, see the module
    docstring), and the ``levels`` probe's own settings (``options.for_probe("levels")``) apply to both groups.
    """
    from latent.audit.duplicates import training_overlap
    from latent.probes.levels import METRIC, probe_levels

    cfg = options.for_probe("seen_unseen")
    if cfg.get("seen") is None:
        raise InputError("The seen_unseen probe needs its 'seen' setting: the species a model saw in training "
                         "(e.g. --set seen_unseen.seen=seen_in_training.json, or latent audit's overlap.csv "
                         "with latent probe --subset).")
    names = np.asarray(data.taxonomy.node_names[Rank.SPECIES])[data.codes[:, Rank.SPECIES]].astype(str)  # (S,)
    overlap = training_overlap(list(names), cfg["seen"]).set_index("species")
    is_seen = np.array([bool(overlap.loc[n, "seen"]) for n in names])
    frames, info = [], {"seen_species": int(is_seen.sum()), "unseen_species": int((~is_seen).sum()),
                        "matched_as": overlap["matched_as"].value_counts().to_dict()}
    log.info("seen_unseen: %d seen and %d unseen species", is_seen.sum(), (~is_seen).sum())
    for group, keep in zip(GROUPS, (is_seen, ~is_seen)):
        sub = _group_data(data, keep)
        if sub is None:
            note = f"{int(keep.sum())} {group} species: nothing to test"
            frames.append(pd.DataFrame([{"rank": r, "metric": METRIC, "value": np.nan, "n": 0, "group": group,
                                         "testable": False, "reason": note, "note": note} for r in RANK_NAMES]))
            continue
        rows = probe_levels(sub, options).rows.copy()
        rows["group"] = group
        frames.append(rows)
    table = pd.concat(frames, ignore_index=True)
    diffs = []
    for rank in RANK_NAMES:
        a = table[(table["rank"] == rank) & (table["group"] == "seen") & (table["metric"] == METRIC)]
        b = table[(table["rank"] == rank) & (table["group"] == "unseen") & (table["metric"] == METRIC)]
        both = len(a) and len(b) and all(bool(t["testable"].iloc[0]) if "testable" in t.columns else True
                                          for t in (a, b))
        if both and np.isfinite(a["value"].iloc[0]) and np.isfinite(b["value"].iloc[0]):
            diffs.append({"rank": rank, "metric": "unseen_minus_seen", "value": float(b["value"].iloc[0] - a["value"].iloc[0]),
                          "n": int(b["n"].iloc[0]) + int(a["n"].iloc[0]), "group": "unseen - seen",
                          "note": "unseen ratio minus seen ratio (above 0: less visible among unseen species); no "
                                  "null or CI of its own: read the two groups' CIs"})
    if diffs:
        table = pd.concat([table, pd.DataFrame(diffs)], ignore_index=True)
    return ProbeResult("seen_unseen", table, info=info)
