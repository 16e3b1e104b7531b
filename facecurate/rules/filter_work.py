"""The filter stage's measuring as batches for an executor that is not local (``run --executor ray``).

:class:`MeasureWork` measures one batch of faces — geometry from the stored records, pixels and eyes from the
crop (and the photo, for small faces) — and keeps FaceMesh loaded on its worker. Deciding stays in the
driver (:func:`run_filter_with`), with the thresholds in force, and each batch is saved in one transaction, as
:func:`facecurate.rules.stage.run_filter` does on the local path.
"""

from __future__ import annotations

from dataclasses import dataclass

import pyarrow as pa

from facecurate import result_arrow
from facecurate.catalog import Catalog
from facecurate.catalog.faces import FaceToFilter
from facecurate.events import SILENT, Progress
from facecurate.filestore import FileStore, open_at, storage_setting
from facecurate.rules.measure import (
    FAMILY_KEYS,
)
from facecurate.rules.registry import RULES
from facecurate.rules.stage import (
    BATCH,
    FilterSummary,
    LabelThresholds,
    enabled_rules,
    load_pixels,
    measure_face,
    settle,
)
from facecurate.work import ArrowResults, Executor
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


# One row per face: every score by name, in the order measured (null: a measure that had no value), and the
# error that kept its crop unread.
RESULT_SCHEMA = pa.schema([("scores", pa.map_(pa.string(), pa.float64())), ("error", pa.string())])


def results_to_arrow(measured: list[Measured]) -> pa.Table:
    """One batch's measurements as a table of :data:`RESULT_SCHEMA`, one row per face. Scores are float64 (an
    int or bool score becomes its float, as the driver's rounding makes it anyway)."""
    return result_arrow.table(RESULT_SCHEMA, {"scores": [list(m.scores.items()) for m in measured],
                                              "error": [m.error for m in measured]})


def results_from_arrow(table: pa.Table) -> list[Measured]:
    """The measurements :func:`results_to_arrow` was given: the same scores in the same order, bit for bit."""
    cols = result_arrow.columns(table, RESULT_SCHEMA)
    return [Measured(dict(scores), error) for scores, error in zip(cols["scores"], cols["error"], strict=True)]


RESULTS: ArrowResults[Measured] = ArrowResults(RESULT_SCHEMA, results_to_arrow, results_from_arrow)


class MeasureWork:
    """Measure one batch of faces on a worker."""

    name = "filter"
    gpus = 0.0
    results = RESULTS

    def __init__(self, root: str, min_prob: float, max_pixels: int, max_bytes: int, storage: str = "") -> None:
        self.root, self.min_prob, self.max_pixels, self.max_bytes = root, min_prob, max_pixels, max_bytes
        self.storage = storage  # [run] storage: where the worker reads crops and photos

    def __call__(self, batch: list[ToMeasure]) -> list[Measured]:
        files = open_at(self.root, self.storage)
        return [self._one(files, item.face, item.families) for item in batch]

    def _one(self, files: FileStore, face: FaceToFilter, fams: frozenset[str]) -> Measured:
        crop, photo, error = load_pixels(files, face, fams, self.max_pixels, self.max_bytes)
        scores = measure_face(face, fams, crop, photo, error, self.min_prob)
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
                       int(cfg.get("media", "max_bytes")), storage_setting(ws))
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
