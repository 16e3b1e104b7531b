"""The ``crop`` stage: batched detection, FFHQ alignment and atomic crop writes around the catalog.

On a CPU, worker processes (:mod:`facecurate.faces.crop_workers`) crop whole batches — decode, MTCNN, align,
encode, write — side by side, each with its own detector, and this process records each batch's results in
the catalog in the batches' order. Threads in this process did the work around MTCNN before and cost as much
as detection: MTCNN's cascade and the alignment are both many short numpy/torch/OpenCV calls that queue on the
GIL, and torch's OpenMP threads spin against the decoding threads for the same cores. A run of a few photos (or
a single core) still uses threads: starting workers would cost more than they save. On a GPU the torch
pipeline runs instead (faces/crop_device.py). Each batch's results land in one transaction after its files are
on disk: a kill loses at most the batches in flight, and their files are simply rewritten on the next run.
"""

from __future__ import annotations

import itertools
import os
from collections import deque
from collections.abc import Iterator
from concurrent.futures import Future, ProcessPoolExecutor, ThreadPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from facecurate import media
from facecurate.catalog import Catalog, FaceRecord, ImageRow
from facecurate.device import cuda_possible, resolve_device
from facecurate.errors import ImageError
from facecurate.events import SILENT, Failure, Progress
from facecurate.faces import crop_workers
from facecurate.faces.crop_batch import (
    CropOptions,
    _cut_settings,
    _to_source,
    choose_faces,
    detect_with_retries,
    detections_record,
    retry_tight,
)
from facecurate.faces.crop_photo import CutSettings, Face, Limits, crop_image, crop_relpath, decode_copy
from facecurate.faces.crop_workers import Failed
from facecurate.filestore import FileStore, open_store, storage_setting
from facecurate.work import unfinished
from facecurate.workspace import Workspace

if TYPE_CHECKING:  # the detector imports torch (seconds): run_crop imports it only when there is work
    from facecurate.faces.detect import BatchedDetector


__all__ = ["CropOptions", "CropSummary", "choose_faces", "crop_relpath", "retry_tight", "run_crop"]


@dataclass
class CropSummary:
    """What one crop run did, photo by photo."""

    images: int = 0
    with_face: int = 0
    no_face: int = 0
    faces: int = 0
    failed: list[Failure] = field(default_factory=list)   # photos that could not be decoded, aligned or written
    device: str = ""
    workers: int = 0   # worker processes that decoded and cut the crops; 0: threads of this process


@dataclass
class _Batch:
    """One batch between pipeline steps: rows, then detection copies, then each photo's crop job."""

    rows: list[ImageRow]
    decoded: list[Future[Any]]  # media.Decoded, or ImageError
    jobs: dict[int, Future[Any]] = field(default_factory=dict)  # list[FaceRecord], or Failed
    found: dict[int, list[dict[str, object]]] = field(default_factory=dict)  # every detection, for the rules

    def copy(self, j: int) -> media.Decoded | ImageError:
        out: media.Decoded | ImageError = self.decoded[j].result()
        return out


def run_crop(ws: Workspace, catalog: Catalog, opts: CropOptions, *, redo: bool = False,
             progress: Progress = SILENT) -> CropSummary:
    """Detect, align and write crops for every image not cropped yet (all of them with ``redo``).

    Memory stays bounded whatever the photos: a batch holds only detection copies (long side <=
    detect_max_side), and every decode, reduced or full, holds its pixels in the [media] decode_budget shared
    by the workers (threads, or forked processes; spawned processes each hold an equal share of it).
    """
    cfg = ws.config()
    rows = catalog.images_to_crop(redo=redo)
    if not rows:  # nothing to do answers in the time of `status`: no torch, no weights
        progress.start(f"crop ({opts.device})", 0, "img")
        progress.finish()
        return CropSummary(device=opts.device)
    megapixels = cfg.get("media", "decode_budget")
    if uses_torch_pipeline(opts):
        from facecurate.faces import crop_device  # imports torch

        limits = Limits(cfg.get("media", "max_pixels"), cfg.get("media", "max_bytes"), media.PixelBudget(megapixels))
        return crop_device.run_torch_crop(ws, catalog, opts, rows, limits, progress)
    workers, threads = crop_workers.plan(opts.workers, len(rows))
    if workers == 0:
        limits = Limits(cfg.get("media", "max_pixels"), cfg.get("media", "max_bytes"), media.PixelBudget(megapixels))
        return _run_in_threads(ws, catalog, opts, rows, limits, progress)
    setup = crop_workers.Setup(ws, opts, cfg.get("media", "max_pixels"), cfg.get("media", "max_bytes"), threads,
                               storage_setting(ws), os.getpid())
    with crop_workers.pool(setup, workers, megapixels) as pool:  # forked before torch is imported here
        return _run_in_workers(catalog, opts, rows, pool, workers, progress)


def crop_batches(rows: list[ImageRow], batch_size: int) -> list[list[ImageRow]]:
    """The run's batches, photos in content-hash order: ``batch_size`` photos, or fewer in a run of under eight
    full batches, so that the last batches do not leave all but one worker idle (100 photos in batches of 32 are
    64 photos on one of two workers and 36 on the other; in batches of 13, 52 and 48).

    Hash order, not arrival order: MTCNN's float sums depend on the batch's letterbox canvas (boxes move by
    ~1e-5 px), so a batch must hold the same photos whatever order a crawl delivered them in, for a run to
    give the same faces as the last one, and both executors (which batch a run with this function) the same."""
    ordered = sorted(rows, key=lambda r: r.sha256)
    size = min(batch_size, max(8, -(-len(rows) // 8)))
    return [ordered[i:i + size] for i in range(0, len(ordered), size)]


def uses_torch_pipeline(opts: CropOptions) -> bool:
    """``crop.pipeline`` torch, or auto on a CUDA device (faces/crop_device.py). Where CUDA cannot exist this is
    settled without importing torch, so the OpenCV path's workers are forked before torch loads."""
    if opts.pipeline != "auto":
        return opts.pipeline == "torch"
    if opts.device == "cpu" or (opts.device == "auto" and not cuda_possible()):
        return False
    return resolve_device(opts.device).type == "cuda"


def _detector(opts: CropOptions) -> BatchedDetector:
    from facecurate.faces.detect import BatchedDetector

    return BatchedDetector(device=opts.device, batch_size=opts.batch_size, max_side=opts.detect_max_side,
                           min_face_size=opts.min_face_size)


def _run_in_threads(ws: Workspace, catalog: Catalog, opts: CropOptions, rows: list[ImageRow], limits: Limits,
                    progress: Progress) -> CropSummary:
    """Small runs and single cores: worker threads decode batch i+1 while MTCNN runs on batch i; then they
    align and write batch i's crops, and the batch is committed once its files are on disk."""
    detector = _detector(opts)
    summary = CropSummary(device=str(detector.device))
    progress.start(f"crop ({summary.device})", len(rows), "img")
    cut = _cut_settings(opts)
    files = open_store(ws)
    with ThreadPoolExecutor(max_workers=4) as pool:
        def decode(chunk: list[ImageRow]) -> _Batch:
            return _Batch(chunk, [pool.submit(decode_copy, files, r, limits, opts.detect_max_side) for r in chunk])

        chunks = crop_batches(rows, opts.batch_size)
        upcoming = decode(chunks[0])
        for i in range(len(chunks)):
            batch, upcoming = upcoming, decode(chunks[i + 1]) if i + 1 < len(chunks) else upcoming
            for j, copy, chosen in _detect(detector, batch, opts):
                whole = None if copy.reduced else copy.pixels
                batch.jobs[j] = pool.submit(_crop_or_failure, files, batch.rows[j], whole, chosen, cut, limits)
            _commit(catalog, batch, summary)
            progress.advance(len(batch.rows))
    progress.finish()
    return summary


def _crop_or_failure(files: FileStore, row: ImageRow, pixels: np.ndarray | None, faces: list[Face], cut: CutSettings,
                     limits: Limits) -> list[FaceRecord] | Failed:
    try:
        return crop_image(files, row, pixels, faces, cut, limits)
    except (ValueError, OSError, ImageError) as exc:  # one odd face must not stop the run
        return Failed(crop_workers.crop_failure(row, exc), "crop_failed")


def _run_in_workers(catalog: Catalog, opts: CropOptions, rows: list[ImageRow], pool: ProcessPoolExecutor,
                    workers: int, progress: Progress) -> CropSummary:
    """Every worker crops whole batches; two batches per worker are in flight, so none waits for the next one,
    and each batch is committed in order as soon as it and the batches before it are done. A kill loses at
    most the batches in flight, whose files are simply rewritten on the next run."""
    summary = CropSummary(device="cpu", workers=workers)
    progress.start(f"crop (cpu, {workers} workers)", len(rows), "img")
    batches = iter(crop_batches(rows, opts.batch_size))
    in_flight: deque[tuple[list[ImageRow], Future[Any]]] = deque()
    for chunk in itertools.islice(batches, 2 * workers):
        in_flight.append((chunk, pool.submit(crop_workers.batch_task, chunk)))
    while in_flight:
        chunk, done = in_flight.popleft()
        try:
            outcomes = done.result()
            following = next(batches, None)
            if following is not None:
                in_flight.append((following, pool.submit(crop_workers.batch_task, following)))
        except BrokenProcessPool as exc:
            files = ", ".join(dict.fromkeys(r.path for batch in unfinished(chunk, in_flight) for r in batch))
            raise ImageError(f"A crop worker died (a native crash) on one of: {files}. Photos cropped before it "
                             f"are saved; move the offending file out of raw/ or run `facecurate crop` again to "
                             f"retry.", "worker_crashed") from exc
        found = {j: o.found for j, o in enumerate(outcomes) if o.found is not None}
        record_batch(catalog, chunk, [o.as_outcome() for o in outcomes], found, summary)
        progress.advance(len(chunk))
    progress.finish()
    return summary


def _detect(detector: BatchedDetector, batch: _Batch, opts: CropOptions) -> Iterator[tuple[int, media.Decoded,
                                                                                          list[Face]]]:
    """MTCNN on a batch's decoded copies, closer looks at tight crops with no face, every detection noted in
    ``batch.found``; yields (index in the batch, copy, chosen faces in stored-photo pixels) for each photo with
    a face to crop. Photos that did not decode are left to :func:`_commit`."""
    good: list[tuple[int, media.Decoded]] = []
    for j in range(len(batch.rows)):
        decoded = batch.copy(j)
        if not isinstance(decoded, ImageError):
            good.append((j, decoded))
    detections = detect_with_retries(detector, [copy for _, copy in good], opts)
    for (j, copy), found in zip(good, detections, strict=True):
        found = _to_source(found, copy)
        batch.found[j] = detections_record(found)
        chosen = choose_faces(found, opts.min_prob, opts.all_faces)
        if chosen:
            yield j, copy, [Face(d.box, d.prob, d.landmarks) for d in chosen]


def _commit(catalog: Catalog, batch: _Batch, summary: CropSummary) -> None:
    """Wait for a batch's crop files, then record the whole batch in one transaction."""
    outcomes: list[list[FaceRecord] | ImageError] = []
    for j in range(len(batch.rows)):
        decoded = batch.copy(j)
        if isinstance(decoded, ImageError):
            outcomes.append(decoded)
            continue
        job = batch.jobs.get(j)
        result = job.result() if job is not None else []
        outcomes.append(result.error() if isinstance(result, Failed) else result)
    record_batch(catalog, batch.rows, outcomes, batch.found, summary)


def record_batch(catalog: Catalog, rows: list[ImageRow], outcomes: list[list[FaceRecord] | ImageError],
                 found: dict[int, list[dict[str, object]]], summary: CropSummary) -> None:
    """One batch's outcomes (faces, none, or the error) in one transaction, whichever path or executor computed
    them: the crop states are decided here only."""
    with catalog.transaction():
        for j, (row, outcome) in enumerate(zip(rows, outcomes, strict=True)):
            summary.images += 1
            if isinstance(outcome, ImageError) and row.crop_state == "done":
                # --redo: a face row is replaced only by a new result, never by a failure to compute one
                summary.failed.append(Failure(row.path, f"{outcome} Its earlier faces are kept."))
            elif isinstance(outcome, ImageError):
                catalog.save_crop_result(row.id, "failed", [], error=str(outcome))
                summary.failed.append(Failure(row.path, str(outcome)))
            elif outcome:
                catalog.save_crop_result(row.id, "done", outcome, detections=found.get(j))
                summary.with_face += 1
                summary.faces += len(outcome)
            else:
                catalog.save_crop_result(row.id, "no_face", [], detections=found.get(j))
                summary.no_face += 1
