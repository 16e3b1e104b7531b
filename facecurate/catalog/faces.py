"""Faces: what crop detected and aligned, and what filter measured and decided, JSON columns parsed."""

from __future__ import annotations

import dataclasses
import json
import sqlite3
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any, Literal

from facecurate.catalog.base import CatalogBase, utc_now

# What crop found in a photo: faces (done), none at crop.min_prob (no_face), or an unreadable file (failed).
CropState = Literal["done", "no_face", "failed"]


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
class FaceRow(FaceRecord):
    """One stored face with its JSON columns parsed: what crop wrote, then what filter and dedup added."""

    id: int
    image_id: int
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


@dataclass(frozen=True)
class FaceToFilter(FaceRow):
    """One face with the facts of its photo that the rules read (filter's input)."""

    photo_path: str
    photo_width: int
    photo_height: int
    detections: list[dict[str, Any]]     # every detection in the photo, as crop stored them
    label: str | None = None             # the photo's label: [rules.<label>] thresholds apply to its faces


@dataclass(frozen=True)
class FilterResult:
    """What filter decided about one face: every measure so far and the reasons of the rules that fired."""

    face_id: int
    scores: dict[str, float | None]
    reasons: Sequence[str]


class FacesMixin(CatalogBase):
    def save_crop_result(self, image_id: int, state: CropState, faces: Iterable[FaceRecord],
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

    def faces_to_filter(self) -> list[FaceToFilter]:
        """Every face with its photo's facts, in face order: filter decides all of them on every run (thresholds
        may have changed) and measures only what a face lacks."""
        rows = self.conn.execute(
            "SELECT f.*, i.path AS photo_path, i.width AS photo_width, i.height AS photo_height, i.detections, "
            "i.label AS photo_label "
            "FROM faces f JOIN images i ON i.id = f.image_id ORDER BY f.id").fetchall()
        out = []
        for r in rows:
            face = FaceRow.from_row(r)
            out.append(FaceToFilter(**{f.name: getattr(face, f.name) for f in dataclasses.fields(FaceRow)},
                                    photo_path=r["photo_path"], photo_width=r["photo_width"],
                                    photo_height=r["photo_height"], detections=json.loads(r["detections"]),
                                    label=r["photo_label"]))
        return out

    def save_filter_results(self, results: Iterable[FilterResult]) -> None:
        """Filter's own facts only (measures, reasons, when); the state in force follows from them
        (catalog.state). Call inside a transaction."""
        now = utc_now()
        self.conn.executemany("UPDATE faces SET scores=?, reasons=?, filtered_at=? WHERE id=?",
                              [(json.dumps(r.scores), json.dumps(list(r.reasons)), now, r.face_id)
                               for r in results])

    def face_by_sample(self, sha256_prefix: str, face_index: int) -> FaceRow | None:
        """The face a manifest sample_id names (a prefix of its photo's sha256, and the face's index)."""
        row = self.conn.execute(
            "SELECT f.* FROM faces f JOIN images i ON i.id = f.image_id "
            "WHERE substr(i.sha256, 1, length(?)) = ? AND f.face_index = ? ORDER BY f.id LIMIT 1",
            (sha256_prefix, sha256_prefix.lower(), face_index)).fetchone()
        return None if row is None else FaceRow.from_row(row)
