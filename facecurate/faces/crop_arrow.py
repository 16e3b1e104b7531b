"""Crop results as Arrow tables: how a Ray worker's batch of :class:`~facecurate.faces.crop_photo.CropOutcome`
travels back to the driver (typed columns, not pickled objects). Loaded only by an executor that moves results
between processes as Arrow; crop's own workers hand their outcomes back as they are."""

from __future__ import annotations

from dataclasses import fields

import pyarrow as pa

from facecurate import result_arrow
from facecurate.catalog import FaceRecord
from facecurate.faces.crop_photo import CropOutcome
from facecurate.work import ArrowResults

_POINTS = pa.list_(pa.list_(pa.float64()))
FACE_TYPE = pa.struct([
    ("face_index", pa.int64()), ("det_score", pa.float64()), ("bbox", pa.list_(pa.float64())),
    ("landmarks", _POINTS), ("quad", _POINTS), ("oob_fraction", pa.float64()), ("above_fraction", pa.float64()),
    ("side_fraction", pa.float64()), ("eye_angle", pa.float64()), ("crop_path", pa.string()),
    ("crop_size", pa.int64()),
])
DETECTION_TYPE = pa.struct([("box", pa.list_(pa.float64())), ("prob", pa.float64())])
# One row per photo: its faces (null: the photo failed, empty: no face kept), the failure and its reason code,
# and every detection (null when the photo never reached the detector).
RESULT_SCHEMA = pa.schema([
    ("faces", pa.list_(FACE_TYPE)), ("error", pa.string()), ("reason", pa.string()),
    ("found", pa.list_(DETECTION_TYPE)),
])
_FACE_FIELDS = [f.name for f in fields(FaceRecord)]


def results_to_arrow(outcomes: list[CropOutcome]) -> pa.Table:
    """One batch's outcomes as a table of :data:`RESULT_SCHEMA`, one row per photo."""
    return result_arrow.table(RESULT_SCHEMA, {
        "faces": [None if o.faces is None else [{k: getattr(f, k) for k in _FACE_FIELDS} for f in o.faces]
                  for o in outcomes],
        "error": [o.error for o in outcomes], "reason": [o.reason for o in outcomes],
        "found": [o.found for o in outcomes]})


def results_from_arrow(table: pa.Table) -> list[CropOutcome]:
    """The outcomes :func:`results_to_arrow` was given, equal field for field."""
    cols = result_arrow.columns(table, RESULT_SCHEMA)
    return [CropOutcome(None if faces is None else [FaceRecord(**f) for f in faces], error, reason, found)
            for faces, error, reason, found in zip(cols["faces"], cols["error"], cols["reason"], cols["found"],
                                                   strict=True)]


RESULTS: ArrowResults[CropOutcome] = ArrowResults(RESULT_SCHEMA, results_to_arrow, results_from_arrow)
