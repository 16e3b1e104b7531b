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
from facecurate.review.calibration import check_reason
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
           session: str, reason: str | None = None) -> tuple[int | None, list[Change]]:
    """Record one decision for every target that does not already have it, or has it with another reason
    (pressing ``1`` on a face rejected with ``r`` adds the reason); returns (batch, changes). ``reason``: a
    rule's name or ``other`` with a reject, ``rule_wrong`` with a keep (ValueError otherwise)."""
    wanted = _decision(decision)
    said = check_reason(wanted, reason)
    unique = list({(t.image_id, t.face_index): t for t in targets}.values())
    with catalog.transaction():  # read and append in one transaction: two tabs deciding at once stay in order
        states = catalog.item_states_of(t.image_id for t in unique)
        given = catalog.review_reasons([(t.image_id, t.face_index) for t in unique]) if said else {}
        entries = []
        for t in unique:
            st = states.get((t.image_id, t.face_index))
            if st is None:  # crop --redo took the face away meanwhile
                continue
            if st.decision != wanted or (said is not None and given.get((t.image_id, t.face_index)) != said):
                entries.append(LogEntry(t.image_id, t.face_index, st.decision, wanted, st.rule_state, said))
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
        states = catalog.item_states_of(r.image_id for r in rows)
        # A face crop --redo did not find again has no state; the log still knows its decision.
        gone = catalog.review_latest([(r.image_id, r.face_index) for r in rows
                                      if (r.image_id, r.face_index) not in states])
        entries = []
        for r in rows:
            pair = (r.image_id, r.face_index)
            st = states.get(pair)
            before = st.decision if st else Decision(gone.get(pair, {}).get("decision", Decision.NONE.value))
            entries.append(LogEntry(r.image_id, r.face_index, before, r.decision_before,
                                    st.rule_state if st else r.rule_status))
        catalog.review_append(catalog.review_next_batch(), "undo", entries, reviewer, session, undoes=undone)
    return undone, [Change(e.image_id, e.face_index, e.before, e.after) for e in entries]
