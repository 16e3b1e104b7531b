"""The manifest's items: every photo with its duplicate facts, and the state in force of every face and photo."""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass

from facecurate.catalog.base import CatalogBase
from facecurate.catalog.state import Decision, State


@dataclass(frozen=True)
class ImageFacts:
    """One photo with everything export and the run summary read about it."""

    id: int
    sha256: str
    path: str
    width: int
    height: int
    label: str | None
    crop_state: str | None
    detections: list[dict[str, object]]
    dup_group: int | None
    dup_of: int | None
    dup_distance: int | None
    dup_transform: str | None
    dup_kind: str | None


@dataclass(frozen=True)
class ItemState:
    """The state in force of one face (face_index >= 0) or faceless photo (face_index -1)."""

    image_id: int
    face_index: int
    rule_state: State
    decision: Decision
    state: State


class ItemsMixin(CatalogBase):
    def images(self) -> Iterator[ImageFacts]:
        """Every photo in the order it was added, streamed."""
        for r in self.conn.execute(
                "SELECT id, sha256, path, width, height, label, crop_state, detections, dup_group, dup_of, "
                "dup_distance, dup_transform, dup_kind FROM images ORDER BY id"):
            yield ImageFacts(r["id"], r["sha256"], r["path"], r["width"], r["height"], r["label"], r["crop_state"],
                             json.loads(r["detections"]), r["dup_group"], r["dup_of"], r["dup_distance"],
                             r["dup_transform"], r["dup_kind"])

    def item_states(self) -> dict[tuple[int, int], ItemState]:
        """(image_id, face_index) → state in force, from the one ``item_state`` view."""
        return {(r[0], r[1]): ItemState(r[0], r[1], State(r[2]), Decision(r[3]), State(r[4])) for r in
                self.conn.execute("SELECT image_id, face_index, rule_state, decision, state FROM item_state")}

    def images_per_label(self) -> dict[str | None, int]:
        return {r[0]: int(r[1]) for r in self.conn.execute("SELECT label, COUNT(*) FROM images GROUP BY label")}

    def found_per_label(self) -> dict[str | None, int]:
        """Distinct URLs each label's searches found (whatever became of them) plus local files imported."""
        found: dict[str | None, int] = {}
        for label, n in self.conn.execute(
                "SELECT q.label, COUNT(DISTINCT h.url_id) FROM hits h JOIN query_runs r ON r.id = h.run_id "
                "JOIN queries q ON q.id = r.query_id GROUP BY q.label"):
            found[label] = found.get(label, 0) + int(n)
        for label, n in self.conn.execute("SELECT label, COUNT(*) FROM sources WHERE kind = 'file' GROUP BY label"):
            found[label] = found.get(label, 0) + int(n)
        return found
