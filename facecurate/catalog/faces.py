"""Faces: what crop detected and aligned, and what filter measured and decided, JSON columns parsed."""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Any

from facecurate.catalog.base import CatalogBase, utc_now


@dataclass(frozen=True)
class FaceRecord:
    """One aligned face, as the crop stage hands it to the catalog."""

    face_index: int
    det_score: float
    bbox: list[float]
    landmarks: list[list[float]]
    quad: list[list[float]]
    oob_fraction: float
    above_fraction: float
    side_fraction: float
    eye_angle: float
    crop_path: str
    crop_size: int


@dataclass(frozen=True)
class FaceRow:
    """One stored face with its JSON columns parsed."""

    id: int
    image_id: int
    face_index: int
    det_score: float
    bbox: list[float]
    landmarks: list[list[float]]
    quad: list[list[float]]
    oob_fraction: float
    above_fraction: float
    side_fraction: float
    eye_angle: float
    crop_path: str
    crop_size: int
    reasons: list[str]
    scores: dict[str, float | None]
    filtered_at: str | None
    dup_group: int | None
    dup_of: int | None
    dup_distance: int | None
    dup_transform: str | None
    dup_kind: str | None

    @classmethod
    def from_row(cls, r: sqlite3.Row) -> FaceRow:
        return cls(id=r["id"], image_id=r["image_id"], face_index=r["face_index"], det_score=r["det_score"],
                   bbox=json.loads(r["bbox"]), landmarks=json.loads(r["landmarks"]), quad=json.loads(r["quad"]),
                   oob_fraction=r["oob_fraction"], above_fraction=r["above_fraction"],
                   side_fraction=r["side_fraction"], eye_angle=r["eye_angle"], crop_path=r["crop_path"],
                   crop_size=r["crop_size"], reasons=json.loads(r["reasons"]), scores=json.loads(r["scores"]),
                   filtered_at=r["filtered_at"], dup_group=r["dup_group"], dup_of=r["dup_of"],
                   dup_distance=r["dup_distance"], dup_transform=r["dup_transform"], dup_kind=r["dup_kind"])


class FacesMixin(CatalogBase):
    def save_crop_result(self, image_id: int, state: str, faces: Iterable[FaceRecord],
                         error: str | None = None, detections: list[dict[str, Any]] | None = None) -> None:
        """Replace an image's faces and mark its crop state; call inside a transaction."""
        self.conn.execute("DELETE FROM faces WHERE image_id=?", (image_id,))
        self.conn.executemany(
            "INSERT INTO faces (image_id, face_index, det_score, bbox, landmarks, quad, oob_fraction, "
            "above_fraction, side_fraction, eye_angle, crop_path, crop_size) VALUES (?,?,?,?,?,?,?,?,?,?,?,?)",
            [(image_id, f.face_index, f.det_score, json.dumps(f.bbox), json.dumps(f.landmarks), json.dumps(f.quad),
              f.oob_fraction, f.above_fraction, f.side_fraction, f.eye_angle, f.crop_path, f.crop_size)
             for f in faces])
        self.conn.execute("UPDATE images SET crop_state=?, crop_error=?, cropped_at=?, detections=? WHERE id=?",
                          (state, error, utc_now(), json.dumps(detections or []), image_id))

    def faces(self) -> Iterator[FaceRow]:
        """Every face, by photo and face index, streamed."""
        for r in self.conn.execute("SELECT * FROM faces ORDER BY image_id, face_index"):
            yield FaceRow.from_row(r)

    def face_count(self) -> int:
        return self._scalar("SELECT COUNT(*) FROM faces")

    def face_crop_path(self, face_id: int) -> str | None:
        row = self.conn.execute("SELECT crop_path FROM faces WHERE id=?", (face_id,)).fetchone()
        return str(row[0]) if row else None
