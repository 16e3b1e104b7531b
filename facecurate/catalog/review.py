"""The append-only review log: one row per item per key press, undo included.

An item is (image_id, face_index), not faces.id: crop --redo replaces face rows, a decision must survive it.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any, Literal

from facecurate.catalog.base import utc_now
from facecurate.catalog.gallery import GalleryMixin
from facecurate.catalog.state import Decision, State

Action = Literal["keep", "reject", "undo"]
_LOG_COLUMNS = ("id, image_id, face_index, batch, action, decision_before, decision_after, rule_status, undoes, "
                "reviewer, session, decided_at, reason")


@dataclass(frozen=True)
class LogEntry:
    """One item's change in a batch about to be appended."""

    image_id: int
    face_index: int
    before: Decision
    after: Decision
    rule_state: State | None   # what the rules said at that moment (the item_state view's rule_state)
    reason: str | None = None  # what the person said with it (a rule's name, other, rule_wrong); None: nothing


@dataclass(frozen=True)
class LogRow:
    """One stored row of the log."""

    id: int
    image_id: int
    face_index: int
    batch: int
    action: Action
    decision_before: Decision
    decision_after: Decision
    rule_status: State | None
    undoes: int | None
    reviewer: str
    session: str
    decided_at: str
    reason: str | None = None

    @classmethod
    def from_row(cls, r: sqlite3.Row) -> LogRow:
        return cls(id=r["id"], image_id=r["image_id"], face_index=r["face_index"], batch=r["batch"],
                   action=r["action"], decision_before=Decision(r["decision_before"]),
                   decision_after=Decision(r["decision_after"]),
                   rule_status=None if r["rule_status"] is None else State(r["rule_status"]), undoes=r["undoes"],
                   reviewer=r["reviewer"], session=r["session"], decided_at=r["decided_at"],
                   reason=r["reason"])


@dataclass(frozen=True)
class DecidedFace:
    """A face with a person's decision in force, beside what the rules say about it."""

    face_id: int
    image_id: int
    face_index: int
    decision: Decision
    rule_state: State
    reasons: list[str]
    scores: dict[str, Any]
    label: str | None
    reason: str | None         # given with the decision in force
    crop_path: str


@dataclass(frozen=True)
class RuledFace:
    """A face the rules decided, with its decision in force."""

    face_id: int
    image_id: int
    face_index: int
    rule_state: State
    decision: Decision
    reasons: list[str]
    scores: dict[str, Any]
    label: str | None


# The gallery's reads are this concern's too; chaining the mixins keeps Catalog's own list of bases unchanged.
class ReviewMixin(GalleryMixin):
    def review_next_batch(self) -> int:
        return self._scalar("SELECT COALESCE(MAX(batch), 0) + 1 FROM review_log")

    def review_append(self, batch: int, action: Action, changes: Iterable[LogEntry], reviewer: str, session: str,
                      undoes: int | None = None) -> int:
        """Append one batch; call inside a transaction. Returns the rows written."""
        at = utc_now()
        cur = self.conn.executemany(
            "INSERT INTO review_log (image_id, face_index, batch, action, decision_before, decision_after, "
            "rule_status, undoes, reviewer, session, decided_at, reason) VALUES (?,?,?,?,?,?,?,?,?,?,?,?)",
            [(c.image_id, c.face_index, batch, action, c.before.value, c.after.value,
              None if c.rule_state is None else c.rule_state.value, undoes, reviewer, session, at, c.reason)
             for c in changes])
        return cur.rowcount

    def review_latest(self, items: Iterable[tuple[int, int]] | None = None) -> dict[tuple[int, int], dict[str, Any]]:
        """The decision in force per (image_id, face_index), shaped as the manifest's ``review`` field.

        An undone decision reads ``none`` with no reviewer: the rules speak again for that item.
        """
        cols = "image_id, face_index, decision_after, reviewer, decided_at"
        wanted = None if items is None else set(items)
        if wanted is None or len(wanted) > 200:  # many items: one pass over the log
            rows = self.conn.execute(
                f"SELECT {cols} FROM review_log WHERE id IN "
                "(SELECT MAX(id) FROM review_log GROUP BY image_id, face_index)").fetchall()
        else:  # a page of items: one index seek each
            rows = [r for pair in wanted for r in self.conn.execute(
                f"SELECT {cols} FROM review_log WHERE image_id=? AND face_index=? ORDER BY id DESC LIMIT 1", pair)]
        out: dict[tuple[int, int], dict[str, Any]] = {}
        for r in rows:
            if wanted is not None and (r["image_id"], r["face_index"]) not in wanted:
                continue
            done = r["decision_after"] != Decision.NONE.value
            out[(r["image_id"], r["face_index"])] = {"decision": r["decision_after"],
                                                     "by": r["reviewer"] if done else None,
                                                     "at": r["decided_at"] if done else None}
        return out

    def decided_faces(self) -> list[DecidedFace]:
        """Every face a person decided (decision in force kept or rejected) that the rules have decided too, with
        its stored measures, label and the reason given with that decision: what ``calibrate`` fits to."""
        rows = self.conn.execute(
            "SELECT st.face_id, st.image_id, st.face_index, st.decision, st.rule_state, st.reasons, st.scores, "
            "st.label, f.crop_path, (SELECT r.reason FROM review_log r WHERE r.image_id = st.image_id AND "
            "r.face_index = st.face_index ORDER BY r.id DESC LIMIT 1) AS reason FROM item_state st "
            "JOIN faces f ON f.id = st.face_id WHERE st.decision != 'none' AND st.rule_state IN ('keep', 'reject') "
            "ORDER BY st.image_id, st.face_index").fetchall()
        return [DecidedFace(r["face_id"], r["image_id"], r["face_index"], Decision(r["decision"]),
                            State(r["rule_state"]), json.loads(r["reasons"]), json.loads(r["scores"]), r["label"],
                            r["reason"], r["crop_path"]) for r in rows]

    def ruled_faces(self) -> list[RuledFace]:
        """Every face the rules have decided (rule state keep or reject), with its measures, label and decision:
        what ``calibrate`` re-decides to count changes and what ``review --calibrate`` orders."""
        return [RuledFace(r[0], r[1], r[2], State(r[3]), Decision(r[4]), json.loads(r[5]), json.loads(r[6]), r[7])
                for r in self.conn.execute(
                    "SELECT face_id, image_id, face_index, rule_state, decision, reasons, scores, label "
                    "FROM item_state WHERE face_id IS NOT NULL AND rule_state IN ('keep', 'reject') "
                    "ORDER BY image_id, face_index")]

    def crop_paths(self, face_ids: Iterable[int]) -> dict[int, str]:
        ids = list(face_ids)
        return {int(r[0]): str(r[1]) for r in self.conn.execute(
            f"SELECT id, crop_path FROM faces WHERE id IN ({','.join('?' * len(ids))})", ids)} if ids else {}

    def review_reasons(self, items: Iterable[tuple[int, int]]) -> dict[tuple[int, int], str | None]:
        """The reason given with each item's latest log row (None: none given, or never decided)."""
        out: dict[tuple[int, int], str | None] = {}
        for pair in set(items):
            row = self.conn.execute("SELECT reason FROM review_log WHERE image_id=? AND face_index=? "
                                    "ORDER BY id DESC LIMIT 1", pair).fetchone()
            out[pair] = None if row is None else row[0]
        return out

    def review_history(self, image_id: int, face_index: int) -> list[LogRow]:
        return [LogRow.from_row(r) for r in self.conn.execute(
            f"SELECT {_LOG_COLUMNS} FROM review_log WHERE image_id=? AND face_index=? ORDER BY id",
            (image_id, face_index))]

    def review_open_batch(self) -> list[LogRow]:
        """Rows of the newest keep/reject batch that no undo has taken back yet (what `u` undoes next)."""
        batch = self.conn.execute(
            "SELECT MAX(batch) FROM review_log WHERE action != 'undo' AND batch NOT IN "
            "(SELECT undoes FROM review_log WHERE undoes IS NOT NULL)").fetchone()[0]
        if batch is None:
            return []
        return [LogRow.from_row(r) for r in self.conn.execute(
            f"SELECT {_LOG_COLUMNS} FROM review_log WHERE batch=? ORDER BY id", (batch,))]
