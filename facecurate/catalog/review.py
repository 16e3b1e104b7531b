"""The append-only review log: one row per item per key press, undo included."""

from __future__ import annotations

import sqlite3
from collections.abc import Iterable
from typing import Any

from facecurate.catalog.base import CatalogBase, utc_now


class ReviewMixin(CatalogBase):
    def review_next_batch(self) -> int:
        return self._scalar("SELECT COALESCE(MAX(batch), 0) + 1 FROM review_log")

    def review_append(self, batch: int, action: str, changes: Iterable[tuple[int, int, str, str, str | None]],
                      reviewer: str, session: str, undoes: int | None = None) -> int:
        """Append one batch of (image_id, face_index, before, after, rule_status); call inside a transaction."""
        at = utc_now()
        cur = self.conn.executemany(
            "INSERT INTO review_log (image_id, face_index, batch, action, decision_before, decision_after, "
            "rule_status, undoes, reviewer, session, decided_at) VALUES (?,?,?,?,?,?,?,?,?,?,?)",
            [(image_id, face_index, batch, action, before, after, rule_status, undoes, reviewer, session, at)
             for image_id, face_index, before, after, rule_status in changes])
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
            done = r["decision_after"] != "none"
            out[(r["image_id"], r["face_index"])] = {"decision": r["decision_after"],
                                                     "by": r["reviewer"] if done else None,
                                                     "at": r["decided_at"] if done else None}
        return out

    def review_history(self, image_id: int, face_index: int) -> list[sqlite3.Row]:
        return self.conn.execute(
            "SELECT id, batch, action, decision_before, decision_after, rule_status, undoes, reviewer, session, "
            "decided_at FROM review_log WHERE image_id=? AND face_index=? ORDER BY id",
            (image_id, face_index)).fetchall()

    def review_open_batch(self) -> list[sqlite3.Row]:
        """Rows of the newest keep/reject batch that no undo has taken back yet (what `u` undoes next)."""
        batch = self.conn.execute(
            "SELECT MAX(batch) FROM review_log WHERE action != 'undo' AND batch NOT IN "
            "(SELECT undoes FROM review_log WHERE undoes IS NOT NULL)").fetchone()[0]
        if batch is None:
            return []
        return self.conn.execute("SELECT batch, image_id, face_index, decision_before, decision_after, rule_status "
                                 "FROM review_log WHERE batch=? ORDER BY id", (batch,)).fetchall()
