"""The filter stage's measuring as batches for an executor that is not local (``run --executor ray``).

:class:`MeasureWork` measures one batch of faces — geometry from the stored records, pixels and eyes from the
crop (and the photo, for small faces) — and keeps FaceMesh loaded on its worker. Deciding stays in the
driver (:func:`run_filter_with`), with the thresholds in force, and each batch is saved in one transaction, as
:func:`facecurate.rules.stage.run_filter` does on the local path.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from facecurate import media
from facecurate.catalog import Catalog
from facecurate.catalog.faces import FaceToFilter
from facecurate.errors import ImageError
from facecurate.events import SILENT, Progress
from facecurate.rules.eyes import FaceMesh
from facecurate.rules.measure import (
    FAMILY_KEYS,
    FRAME_CHECK_BELOW,
    PHOTO_SIDE,
    FaceFacts,
    eye_family,
    geometry_measures,
    pixel_measures,
)
from facecurate.rules.registry import RULES
from facecurate.rules.stage import BATCH, FilterSummary, LabelThresholds, enabled_rules, settle
from facecurate.work import Executor
from facecurate.workspace import Workspace


@dataclass(frozen=True)
class ToMeasure:
    """One face and the measure families it lacks."""

    face: FaceToFilter
    families: frozenset[str]


@dataclass(frozen=True)
class Measured:
    """One face's scores after measuring (the stored ones, updated), and the error that kept a crop unread."""

    scores: dict[str, float | None]
    error: str | None = None


class MeasureWork:
    """Measure one batch of faces on a worker."""

    name = "filter"
    gpus = 0.0

    def __init__(self, root: str, min_prob: float, max_pixels: int, max_bytes: int) -> None:
        self.root, self.min_prob, self.max_pixels, self.max_bytes = root, min_prob, max_pixels, max_bytes

    def __call__(self, batch: list[ToMeasure]) -> list[Measured]:
        ws = Workspace(Path(self.root))
        return [self._one(ws, item.face, item.families) for item in batch]

    def _load(self, ws: Workspace, face: FaceToFilter, fams: frozenset[str]
              ) -> tuple[np.ndarray | None, np.ndarray | None, str | None]:
        if not fams & {"pixels", "eyes"}:
            return None, None, None
        try:
            crop = media.load_rgb(ws.resolve(face.crop_path), self.max_pixels, self.max_bytes).pixels
            photo = None
            bbox = face.bbox
            share = (bbox[2] - bbox[0]) * (bbox[3] - bbox[1]) / max(face.photo_width * face.photo_height, 1)
            if "pixels" in fams and share < FRAME_CHECK_BELOW:
                data = media.read_limited(ws.resolve(face.photo_path), self.max_bytes)
                photo = media.decode(data, face.photo_path, self.max_pixels, max_side=PHOTO_SIDE).pixels
            return crop, photo, None
        except ImageError as exc:
            return None, None, str(exc)

    def _one(self, ws: Workspace, face: FaceToFilter, fams: frozenset[str]) -> Measured:
        crop, photo, error = self._load(ws, face, fams)
        scores: dict[str, float | None] = dict(face.scores)
        facts = FaceFacts(np.array(face.landmarks), np.array(face.quad), face.bbox, face.oob_fraction,
                          face.above_fraction, face.side_fraction, face.crop_size, face.photo_width,
                          face.photo_height, face.detections, self.min_prob)
        if "geometry" in fams:
            scores.update(geometry_measures(facts))
        if error is None and crop is not None:
            if "pixels" in fams:
                scores.update(pixel_measures(facts, crop, photo))
            if "eyes" in fams:
                scores.update(eye_family(FaceMesh.shared(), crop))
        return Measured(scores, error)


def run_filter_with(executor: Executor, ws: Workspace, catalog: Catalog, *, rules: str | None = None,
                    redo: bool = False, progress: Progress = SILENT) -> FilterSummary:
    """:func:`~facecurate.rules.stage.run_filter` with the measuring run by ``executor``; the faces, batches,
    decisions and saved results are the local path's."""
    chosen = enabled_rules(ws, rules)
    enabled = enabled_rules(ws, None)
    deciding = [r for r in RULES if r in enabled or r in chosen]
    limits = LabelThresholds(ws)
    cfg = ws.config()
    families = {r.family for r in chosen} - {"image"}
    needed_keys = {fam: FAMILY_KEYS[fam] for fam in families}
    faces = catalog.faces_to_filter()
    summary = FilterSummary(faces=len(faces))
    progress.start("filter", len(faces), "faces")

    def todo(face: FaceToFilter) -> frozenset[str]:
        return frozenset(fam for fam, keys in needed_keys.items() if redo or any(k not in face.scores for k in keys))

    work = MeasureWork(str(ws.root), float(cfg.get("crop", "min_prob")), int(cfg.get("media", "max_pixels")),
                       int(cfg.get("media", "max_bytes")))
    batches = [[ToMeasure(f, todo(f)) for f in faces[i:i + BATCH]] for i in range(0, len(faces), BATCH)]
    for batch, measured in zip(batches, executor.map_batches(work, batches), strict=True):
        results = []
        for item, got in zip(batch, measured, strict=True):
            results.append(settle(summary, item.face, got.scores, got.error, bool(item.families), limits, deciding))
        with catalog.transaction():
            catalog.save_filter_results(results)
        progress.advance(len(batch))
    progress.finish()
    return summary
