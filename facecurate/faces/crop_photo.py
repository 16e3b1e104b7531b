"""One photo's share of the crop stage, the same in this process and in a worker: the detector's reduced copy,
then each chosen face aligned, encoded and written atomically.

Kept free of torch and of the catalog so a worker process that runs it never loads either (a spawned worker
imports this module, not the detector), and so both of crop's drivers cut byte-identical crops."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from facecurate import media
from facecurate.catalog import FaceRecord, ImageRow
from facecurate.errors import ImageError
from facecurate.faces.align import Alignment, AlignmentMode, PaddingMode, align_face
from facecurate.filestore import FileStore


@dataclass(frozen=True)
class Limits:
    """What reading one photo may cost: the [media] limits and the stage's pixel budget."""

    max_pixels: int
    max_bytes: int
    budget: media.PixelBudget | None


@dataclass(frozen=True)
class CutSettings:
    """The [crop] settings that shape a written crop (a worker needs these and nothing else)."""

    size: int
    headroom: float
    padding: PaddingMode
    alignment: AlignmentMode
    image_format: str
    jpeg_quality: int


@dataclass(frozen=True, eq=False)
class Face:
    """A chosen detection as plain values: what crosses to a worker without the detector's module (torch)."""

    box: tuple[float, float, float, float]
    prob: float
    landmarks: np.ndarray  # (5, 2) source px


@dataclass(frozen=True)
class CropOutcome:
    """One photo's result as plain data: its faces (written already), or an error and its reason code."""

    faces: list[FaceRecord] | None
    error: str | None = None
    reason: str = "crop_failed"
    found: list[dict[str, object]] | None = None   # every detection, for the rules

    def as_outcome(self) -> list[FaceRecord] | ImageError:
        if self.faces is None:
            return ImageError(self.error or "crop failed", self.reason)
        return self.faces


def crop_relpath(sha256: str, index: int, size: int, ext: str) -> str:
    return f"crops/{size}/{sha256[:2]}/{sha256}_{index}.{ext}"


def decode_copy(files: FileStore, row: ImageRow, limits: Limits, max_side: int) -> media.Decoded | ImageError:
    """The detector's copy of a photo: long side at most ``max_side`` (JPEGs decoded reduced by libjpeg), so
    a batch in memory costs batch_size x max_side² pixels whatever the photos' sizes."""
    try:
        data = files.read(row.path, limits.max_bytes)
        return media.decode(data, row.path, limits.max_pixels, max_side=max_side, budget=limits.budget)
    except ImageError as exc:
        return exc


def crop_image(files: FileStore, row: ImageRow, pixels: np.ndarray | None, faces: list[Face], cut: CutSettings,
               limits: Limits) -> list[FaceRecord]:
    """Align and write one photo's chosen faces, from ``pixels`` when they are the whole photo, else from the
    original decoded again here, under the pixel budget, and dropped when done (a reduced detection copy is not
    what a crop is cut from).

    Every face is cut and encoded before any file is written, so a face that fails (under ``--redo``, whose
    earlier rows are then kept) leaves the files those rows point to untouched."""
    if pixels is None:
        data = files.read(row.path, limits.max_bytes)
        with media.decoded(data, row.path, limits.max_pixels, limits.budget) as full:
            cuts = [_cut(row, full.pixels, k, face, cut) for k, face in enumerate(faces)]
    else:
        cuts = [_cut(row, pixels, k, face, cut) for k, face in enumerate(faces)]
    for record, encoded in cuts:
        files.write(record.crop_path, encoded)
    return [record for record, _ in cuts]


def _cut(row: ImageRow, pixels: np.ndarray, index: int, face: Face, cut: CutSettings) -> tuple[FaceRecord, bytes]:
    aligned = align_face(pixels, face.landmarks, size=cut.size, headroom=cut.headroom, padding=cut.padding,
                         alignment=cut.alignment)
    encoded = media.encode(aligned.crop, cut.image_format, cut.jpeg_quality)
    return face_record(row, index, face, aligned, cut), encoded


def face_record(row: ImageRow, index: int, face: Face, aligned: Alignment, cut: CutSettings) -> FaceRecord:
    """The catalog row of one cut face, whichever pipeline cut it (the torch one is faces/crop_device.py)."""
    return FaceRecord(face_index=index, det_score=float(face.prob), bbox=[float(v) for v in face.box],
                      landmarks=np.asarray(face.landmarks, dtype=float).round(2).tolist(),
                      quad=np.asarray(aligned.quad, dtype=float).round(3).tolist(),
                      oob_fraction=float(aligned.oob_fraction), above_fraction=float(aligned.above_fraction),
                      side_fraction=float(aligned.side_fraction), eye_angle=float(aligned.eye_angle_deg),
                      crop_path=crop_relpath(row.sha256, index, cut.size, cut.image_format),
                      crop_size=cut.size)
