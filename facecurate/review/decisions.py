"""The decision log: keep, reject and undo, each appended at once, never edited.

A person's decision is the last row for an item (image_id, face_index); the ``item_state`` view puts it on top
of what the rules say, for every reader. Every key press is one *batch* (one item, or a whole selection), so
undo takes back exactly what one key press did, newest first, by appending the opposite rows: the history of
who changed what, and back, stays.
"""

from __future__ import annotations

import getpass
from dataclasses import dataclass

from facecurate.catalog import Catalog, Decision
from facecurate.catalog.review import Action, LogEntry
from facecurate.review.items import Target
from facecurate.workspace import Config

DECISIONS = (Decision.KEPT, Decision.REJECTED)  # what a person can decide (none comes back only by undo)
ACTION: dict[Decision, Action] = {Decision.KEPT: "keep", Decision.REJECTED: "reject"}


@dataclass(frozen=True)
class Change:
    image_id: int
    face_index: int
    before: Decision
    after: Decision


def reviewer_name(cfg: Config) -> str:
    """[review] reviewer, else the login name: the log says who decided."""
    name = str(cfg.get("review", "reviewer") or "").strip()
    if name:
        return name
    try:
        return getpass.getuser()
    except (KeyError, OSError):  # no passwd entry in some containers
        return "unknown"


def _decision(value: Decision | str) -> Decision:
    """A decidable decision, from the enum or its value (the gallery sends the value)."""
    try:
        decision = Decision(value)
    except ValueError:
        decision = Decision.NONE
    if decision not in DECISIONS:
        raise ValueError(f"decision must be one of {', '.join(d.value for d in DECISIONS)}, not {value!r}")
    return decision


def decide(catalog: Catalog, targets: list[Target], decision: Decision | str, reviewer: str,
           session: str) -> tuple[int | None, list[Change]]:
    """Record one decision for every target that does not already have it; returns (batch, changes)."""
    wanted = _decision(decision)
    unique = list({(t.image_id, t.face_index): t for t in targets}.values())
    with catalog.transaction():
        current = catalog.review_latest([(t.image_id, t.face_index) for t in unique])
        entries = []
        for t in unique:
            before = Decision(current.get((t.image_id, t.face_index), {}).get("decision", Decision.NONE.value))
            if before != wanted:
                entries.append(LogEntry(t.image_id, t.face_index, before, wanted, t.rule_status))
        if not entries:
            return None, []
        batch = catalog.review_next_batch()
        catalog.review_append(batch, ACTION[wanted], entries, reviewer, session)
    return batch, [Change(e.image_id, e.face_index, e.before, e.after) for e in entries]


def undo(catalog: Catalog, reviewer: str, session: str) -> tuple[int | None, list[Change]]:
    """Take back the newest keep/reject batch not yet undone; returns (that batch, changes)."""
    with catalog.transaction():
        rows = catalog.review_open_batch()
        if not rows:
            return None, []
        undone = rows[0].batch
        pairs = [(r.image_id, r.face_index) for r in rows]
        current = catalog.review_latest(pairs)
        states = catalog.item_states_of(r.image_id for r in rows)
        entries = []
        for r, pair in zip(rows, pairs, strict=True):
            st = states.get(pair)  # None: the face is gone (crop --redo found fewer), the log still names it
            before = Decision(current.get(pair, {}).get("decision", Decision.NONE.value))
            entries.append(LogEntry(r.image_id, r.face_index, before, r.decision_before,
                                    st.rule_state if st else r.rule_status))
        catalog.review_append(catalog.review_next_batch(), "undo", entries, reviewer, session, undoes=undone)
    return undone, [Change(e.image_id, e.face_index, e.before, e.after) for e in entries]
