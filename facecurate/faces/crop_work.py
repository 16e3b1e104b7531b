"""The crop stage as batches: for crop's own worker processes and for an executor that is not local.

:class:`CropWork` is one batch's work — read and decode the photos, detect (with the same further looks as the
local path), align, and write the crops at their content addresses — and needs nothing of the catalog, so it
runs in crop's worker processes (:mod:`~facecurate.faces.crop_workers`) and on any Ray worker that sees the
workspace's files. :func:`run_crop_with` is the stage's loop around it: it
selects what is not cropped, hands the batches over, and records each batch's outcomes in one transaction with
the same :func:`~facecurate.faces.crop.record_batch` the local path uses, so the state rules are one code.
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from typing import TYPE_CHECKING, Any

import pyarrow as pa

from facecurate import media, result_arrow
from facecurate.catalog import Catalog, FaceRecord, ImageRow
from facecurate.errors import ConfigError, ImageError
from facecurate.events import SILENT, Progress
from facecurate.faces import crop_workers
from facecurate.faces.crop import (
    CropOptions,
    CropSummary,
    _cut_settings,
    _to_source,
    choose_faces,
    crop_batches,
    detect_with_retries,
    record_batch,
)
from facecurate.faces.crop_photo import Face, Limits, crop_image, decode_copy
from facecurate.filestore import forget_mirrored, open_at, open_mirrored, storage_setting
from facecurate.work import ArrowResults, Executor
from facecurate.workspace import Workspace

if TYPE_CHECKING:
    from facecurate.faces.detect import BatchedDetector


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


class CropWork:
    """Crop one batch of photos on a worker; the detector is built on the first batch and kept. ``budget``: a
    pixel budget shared with other workers (forked processes); else each holds ``decode_budget`` megapixels.
    ``mirrored``: a worker on the driver's machine (crop's own workers) reads and writes through the workspace's
    mirror of the storage, as the driver's stages do; a Ray worker reads and writes the storage itself."""

    name = "crop"
    results = RESULTS

    def __init__(self, root: str, opts: CropOptions, max_pixels: int, max_bytes: int, decode_budget: float,
                 gpus: float = 0.0, threads: int = 0, storage: str = "", budget: media.PixelBudget | None = None,
                 mirrored: bool = False) -> None:
        self.root, self.opts, self.gpus, self.threads = root, opts, gpus, threads
        self.storage, self.mirrored = storage, mirrored  # [run] storage: where photos are read, crops written
        self.max_pixels, self.max_bytes, self.decode_budget = max_pixels, max_bytes, decode_budget
        self._detector: BatchedDetector | None = None
        self._limits: Limits | None = Limits(max_pixels, max_bytes, budget) if budget is not None else None

    def __getstate__(self) -> dict[str, Any]:  # the detector and the budget's lock stay on their worker
        return {**self.__dict__, "_detector": None, "_limits": None}

    def __call__(self, rows: list[ImageRow]) -> list[CropOutcome]:
        from facecurate.faces.detect import BatchedDetector

        opts = self.opts
        files = open_mirrored(self.root, self.storage) if self.mirrored else open_at(self.root, self.storage)
        if self._limits is None:
            self._limits = Limits(self.max_pixels, self.max_bytes, media.PixelBudget(self.decode_budget))
        if self.threads:  # before torch runs anything here: see crop_workers on forking after torch
            import torch

            torch.set_num_threads(self.threads)
        if self._detector is None:
            self._detector = BatchedDetector(device=opts.device, batch_size=opts.batch_size,
                                             max_side=opts.detect_max_side, min_face_size=opts.min_face_size)
        limits = self._limits
        decoded = [decode_copy(files, row, limits, opts.detect_max_side) for row in rows]
        good = [(j, d) for j, d in enumerate(decoded) if not isinstance(d, ImageError)]
        detections = detect_with_retries(self._detector, [copy for _, copy in good], opts)
        out: list[CropOutcome] = [CropOutcome(None, str(d), d.reason) if isinstance(d, ImageError)
                                  else CropOutcome([]) for d in decoded]
        for (j, copy), found in zip(good, detections, strict=True):
            found = _to_source(found, copy)
            seen: list[dict[str, object]] = [{"box": [round(float(v), 1) for v in d.box],
                                              "prob": round(float(d.prob), 4)} for d in found]
            chosen = choose_faces(found, opts.min_prob, opts.all_faces)
            if not chosen:
                out[j] = CropOutcome([], found=seen)
                continue
            try:
                faces = [Face(d.box, d.prob, d.landmarks) for d in chosen]
                whole = None if copy.reduced else copy.pixels
                out[j] = CropOutcome(crop_image(files, rows[j], whole, faces, _cut_settings(opts), limits), found=seen)
            except (ValueError, OSError, ImageError) as exc:  # one odd face must not stop the run
                out[j] = CropOutcome(None, f"{rows[j].path}: aligning or writing a crop failed ({exc}).",
                                     found=seen)
        return out


def run_crop_with(executor: Executor, ws: Workspace, catalog: Catalog, opts: CropOptions, *, redo: bool = False,
                  progress: Progress = SILENT) -> CropSummary:
    """:func:`~facecurate.faces.crop.run_crop` with the batches run by ``executor``: the same selection, the
    same batches ([crop] batch_size photos), the same records, each batch committed as its results arrive.

    GPU workers when the device allows one (auto or cuda) and the executor has GPUs to give, else CPU workers;
    ``cuda`` on a cluster without GPUs is refused before anything runs."""
    rows = catalog.images_to_crop(redo=redo)
    if not rows:  # nothing to do: no cluster started, no detector loaded
        progress.start(f"crop ({opts.device} on {executor.name})", 0, "img")
        progress.finish()
        return CropSummary(device=f"{opts.device} on {executor.name}")
    gpus = executor.gpus_per_worker if opts.device != "cpu" else 0.0
    if opts.device == "cuda" and gpus <= 0:
        raise ConfigError(f"--device cuda: the {executor.name} executor's cluster has no GPU; use --device auto "
                          f"or cpu, or add GPU nodes to the cluster.")
    device = "cuda" if gpus > 0 else "cpu"
    summary = CropSummary(device=f"{device} on {executor.name}")
    progress.start(f"crop ({summary.device})", len(rows), "img")
    cfg = ws.config()
    # MTCNN's float32 sums depend on torch's thread count (boxes move by ~1e-5 px, and the rules' scores on the
    # re-cut crops by ~1e-3): a CPU worker detects with the threads the local path would give its detector for
    # this run (crop_workers.plan), so both executors give the same answers on one machine.
    threads = 0 if gpus > 0 else crop_workers.plan(opts.workers, len(rows))[1]
    work = CropWork(str(ws.root), _with_device(opts, device), int(cfg.get("media", "max_pixels")),
                    int(cfg.get("media", "max_bytes")), float(cfg.get("media", "decode_budget")), gpus, threads,
                    storage_setting(ws))
    chunks = crop_batches(rows, opts.batch_size)
    for chunk, outcomes in zip(chunks, executor.map_batches(work, chunks), strict=True):
        found = {j: o.found for j, o in enumerate(outcomes) if o.found is not None}
        record_batch(catalog, chunk, [o.as_outcome() for o in outcomes], found, summary)
        forget_mirrored(ws, [f.crop_path for o in outcomes for f in o.faces or []])  # re-cut under --redo
        progress.advance(len(chunk))
    progress.finish()
    return summary


def _with_device(opts: CropOptions, device: str) -> CropOptions:
    from dataclasses import replace

    return replace(opts, device=device)  # type: ignore[arg-type]
