"""The decision log: keep, reject and undo, each appended at once, never edited.

A person's decision is the last row for an item (image_id, face_index); ``export`` lets it override the rules.
Every key press is one *batch* (one item, or a whole selection), so undo takes back exactly what one key
press did, newest first, by appending the opposite rows: the history of who changed what, and back, stays.
"""

from __future__ import annotations

import getpass
from dataclasses import dataclass

from facecurate.catalog import Catalog
from facecurate.review.items import Target
from facecurate.workspace import Config

DECISIONS = ("kept", "rejected")
ACTION = {"kept": "keep", "rejected": "reject"}
STATUS_FOR = {"kept": "keep", "rejected": "reject"}  # the status a decision gives an item in the export


@dataclass(frozen=True)
class Change:
    image_id: int
    face_index: int
    before: str  # none | kept | rejected
    after: str


def reviewer_name(cfg: Config) -> str:
    """[review] reviewer, else the login name: the log says who decided."""
    name = str(cfg.get("review", "reviewer") or "").strip()
    if name:
        return name
    try:
        return getpass.getuser()
    except (KeyError, OSError):  # no passwd entry in some containers
        return "unknown"


def decide(catalog: Catalog, targets: list[Target], decision: str, reviewer: str,
           session: str) -> tuple[int | None, list[Change]]:
    """Record one decision for every target that does not already have it; returns (batch, changes)."""
    if decision not in DECISIONS:
        raise ValueError(f"decision must be one of {', '.join(DECISIONS)}, not {decision!r}")
    unique = list({(t.image_id, t.face_index): t for t in targets}.values())
    with catalog.transaction():
        current = catalog.review_latest([(t.image_id, t.face_index) for t in unique])
        rows = []
        for t in unique:
            before = current.get((t.image_id, t.face_index), {}).get("decision", "none")
            if before != decision:
                rows.append((t.image_id, t.face_index, before, decision, t.rule_status))
        if not rows:
            return None, []
        batch = catalog.review_next_batch()
        catalog.review_append(batch, ACTION[decision], rows, reviewer, session)
    return batch, [Change(r[0], r[1], r[2], r[3]) for r in rows]


def undo(catalog: Catalog, reviewer: str, session: str) -> tuple[int | None, list[Change]]:
    """Take back the newest keep/reject batch not yet undone; returns (that batch, changes)."""
    with catalog.transaction():
        rows = catalog.review_open_batch()
        if not rows:
            return None, []
        undone = int(rows[0]["batch"])
        pairs = [(r["image_id"], r["face_index"]) for r in rows]
        current = catalog.review_latest(pairs)
        changes = [(r["image_id"], r["face_index"], current.get((r["image_id"], r["face_index"]), {}).get(
            "decision", "none"), r["decision_before"], r["rule_status"]) for r in rows]
        catalog.review_append(catalog.review_next_batch(), "undo", changes, reviewer, session, undoes=undone)
    return undone, [Change(c[0], c[1], c[2], c[3]) for c in changes]
