"""The ``crop`` stage: batched detection, FFHQ alignment and atomic crop writes around the catalog.

Decoding the next batch runs in worker threads while MTCNN works on the current one; then the batch's
crops are aligned, encoded and written by the same threads, after detection rather than beside it. Running
alignment beside the detector was measured slower on two cores (3.2-3.6 s against 2.5-2.7 s for the
bench's 177 photos): MTCNN's cascade and the alignment are both many short numpy/torch/OpenCV calls, and
side by side they queue on the GIL and on each other's thread pools (worker processes fared worse still,
and spawning them re-imports the caller's main module). Each batch's results land in one transaction after
its files are on disk: a kill loses at most the batch in flight, and its files are simply rewritten on the
next run.
"""

from __future__ import annotations

from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import cv2
import numpy as np

from facecurate import media
from facecurate.catalog import Catalog, FaceRecord, ImageRow
from facecurate.device import DeviceChoice
from facecurate.errors import ImageError
from facecurate.events import SILENT, Failure, Progress
from facecurate.faces.align import AlignmentMode, PaddingMode, align_face
from facecurate.workspace import Workspace, check_choice, options_from, setting

if TYPE_CHECKING:  # the detector imports torch (seconds): run_crop imports it only when there is work
    from facecurate.faces.detect import BatchedDetector, Detection


@dataclass(frozen=True)
class CropOptions:
    """The ``[crop]`` settings of one run; their defaults live in the settings table only."""

    size: int
    device: DeviceChoice
    batch_size: int
    detect_max_side: int
    min_face_size: int
    min_prob: float
    headroom: float
    padding: PaddingMode
    alignment: AlignmentMode
    all_faces: bool
    image_format: str
    jpeg_quality: int

    @classmethod
    def from_config(cls, ws: Workspace, **overrides: Any) -> CropOptions:
        """The workspace's settings with command-line values on top (None: not given); a value of a setting
        with choices (``--device``, ``--padding``) is checked against them here, once for every caller."""
        for key, value in overrides.items():
            if value is not None and setting("crop", key).choices:
                check_choice("crop", key, value, "--" + key.replace("_", "-"))
        return options_from(cls, ws.config(), "crop", **overrides)


@dataclass
class CropSummary:
    """What one crop run did, photo by photo."""

    images: int = 0
    with_face: int = 0
    no_face: int = 0
    faces: int = 0
    failed: list[Failure] = field(default_factory=list)   # photos that could not be decoded, aligned or written
    device: str = ""


def crop_relpath(sha256: str, index: int, size: int, ext: str) -> str:
    return f"crops/{size}/{sha256[:2]}/{sha256}_{index}.{ext}"


def choose_faces(detections: list[Detection], min_prob: float, all_faces: bool) -> list[Detection]:
    """Confident faces, largest first; only the largest unless every face is wanted."""
    confident = [d for d in detections if d.prob >= min_prob]
    confident.sort(key=lambda d: (d.box[2] - d.box[0]) * (d.box[3] - d.box[1]), reverse=True)
    return confident if all_faces else confident[:1]


RETRY_MIN_SIDE = 256   # tight face crops are enlarged to this short side for the second look
RETRY_PAD = 0.25       # and given this much neutral border: MTCNN needs some context around a face
# Further looks (short side, border share), each only at photos every earlier look missed. MTCNN's answer on a
# tight crop swings with scale and border: on the rules' dev photos the first look left 21 of 650 closed-eye
# and sunglasses photos faceless (tight crops cut at brow and chin, small selfies); these two found 9 of them.
RETRY_LOOKS = ((RETRY_MIN_SIDE, RETRY_PAD), (384, 0.5), (512, 0.5))
RETRY_UP_TO = 1024     # photos whose short side is at least this are not tight crops: no further look


def retry_tight(detector: BatchedDetector, images: list[np.ndarray], min_side: int = RETRY_MIN_SIDE,
                pad_share: float = RETRY_PAD) -> list[list[Detection]]:
    """Another look at photos with no face: small, tight face crops (imported datasets, thumbnails) defeat
    MTCNN's pyramid, so enlarge them, add a grey border, detect again, and map the results back."""
    from facecurate.faces.detect import Detection  # here, not at the top: detect imports torch

    prepared, frames = [], []
    for img in images:
        h, w = img.shape[:2]
        scale = max(1.0, min_side / min(h, w))
        big = cv2.resize(img, (round(w * scale), round(h * scale)), interpolation=cv2.INTER_CUBIC) if scale > 1 else img
        pad = int(pad_share * max(big.shape[:2]))
        prepared.append(cv2.copyMakeBorder(big, pad, pad, pad, pad, cv2.BORDER_CONSTANT, value=(127, 127, 127)))
        frames.append((scale, pad))
    out = []
    for found, (scale, pad) in zip(detector.detect(prepared), frames, strict=True):
        out.append([Detection(box=_unframed(d.box, scale, pad), prob=d.prob,
                              landmarks=(np.asarray(d.landmarks) - pad) / scale) for d in found])
    return out


def _unframed(box: tuple[float, float, float, float], scale: float,
              pad: int) -> tuple[float, float, float, float]:
    x1, y1, x2, y2 = box
    return (x1 - pad) / scale, (y1 - pad) / scale, (x2 - pad) / scale, (y2 - pad) / scale


@dataclass(frozen=True)
class _Limits:
    """What reading one photo may cost: the [media] limits and the stage's pixel budget."""

    max_pixels: int
    max_bytes: int
    budget: media.PixelBudget


def _decode(ws: Workspace, row: ImageRow, limits: _Limits, max_side: int) -> media.Decoded | ImageError:
    """The detector's copy of a photo: long side at most ``max_side`` (JPEGs decoded reduced by libjpeg), so
    a batch in memory costs batch_size x max_side² pixels whatever the photos' sizes."""
    try:
        data = media.read_limited(ws.resolve(row.path), limits.max_bytes)
        return media.decode(data, row.path, limits.max_pixels, max_side=max_side, budget=limits.budget)
    except ImageError as exc:
        return exc


def _to_source(found: list[Detection], copy: media.Decoded) -> list[Detection]:
    """Detections on a reduced copy, in the stored photo's pixel coordinates."""
    from facecurate.faces.detect import Detection  # here, not at the top: detect imports torch

    if not copy.reduced:
        return found
    sx, sy = copy.source_size[0] / copy.width, copy.source_size[1] / copy.height
    return [Detection(box=(d.box[0] * sx, d.box[1] * sy, d.box[2] * sx, d.box[3] * sy), prob=d.prob,
                      landmarks=np.asarray(d.landmarks, dtype=float) * [sx, sy]) for d in found]


def _crop_image(ws: Workspace, row: ImageRow, copy: media.Decoded, chosen: list[Detection], opts: CropOptions,
                limits: _Limits) -> list[FaceRecord]:
    """Align and write one photo's chosen faces. A reduced detection copy is not what a crop is cut from: the
    original is decoded again here, one photo at a time under the pixel budget, and dropped when done.

    Every face is cut and encoded before any file is written, so a face that fails (under ``--redo``, whose
    earlier rows are then kept) leaves the files those rows point to untouched."""
    if copy.reduced:
        data = media.read_limited(ws.resolve(row.path), limits.max_bytes)
        with media.decoded(data, row.path, limits.max_pixels, limits.budget) as full:
            cuts = [_cut(row, full.pixels, k, d, opts) for k, d in enumerate(chosen)]
    else:
        cuts = [_cut(row, copy.pixels, k, d, opts) for k, d in enumerate(chosen)]
    for record, encoded in cuts:
        media.atomic_write(ws.resolve(record.crop_path), encoded, ws.tmp_dir)
    return [record for record, _ in cuts]


def _cut(row: ImageRow, pixels: np.ndarray, index: int, det: Detection, opts: CropOptions) -> tuple[FaceRecord, bytes]:
    aligned = align_face(pixels, det.landmarks, size=opts.size, headroom=opts.headroom, padding=opts.padding,
                         alignment=opts.alignment)
    encoded = media.encode(aligned.crop, opts.image_format, opts.jpeg_quality)
    return FaceRecord(face_index=index, det_score=float(det.prob), bbox=[float(v) for v in det.box],
                      landmarks=np.asarray(det.landmarks, dtype=float).round(2).tolist(),
                      quad=np.asarray(aligned.quad, dtype=float).round(3).tolist(),
                      oob_fraction=float(aligned.oob_fraction), above_fraction=float(aligned.above_fraction),
                      side_fraction=float(aligned.side_fraction), eye_angle=float(aligned.eye_angle_deg),
                      crop_path=crop_relpath(row.sha256, index, opts.size, opts.image_format),
                      crop_size=opts.size), encoded


def detect_with_retries(detector: BatchedDetector, copies: list[media.Decoded], opts: CropOptions
                        ) -> list[list[Detection]]:
    """Every detection copy's faces: one batched look, then the further looks (RETRY_LOOKS) at the photos it
    missed. Shared by the local path and the executors' crop work, so both find the same faces."""
    detections = detector.detect([copy.pixels for copy in copies])
    missed = [k for k, found in enumerate(detections) if not choose_faces(found, opts.min_prob, False)
              and min(copies[k].source_size) < RETRY_UP_TO]
    for min_side, pad_share in RETRY_LOOKS:
        if not missed:
            break
        looked = retry_tight(detector, [copies[k].pixels for k in missed], min_side, pad_share)
        for k, found in zip(missed, looked, strict=True):
            detections[k] = found
        missed = [k for k in missed if not choose_faces(detections[k], opts.min_prob, False)]
    return detections


@dataclass
class _Batch:
    """One batch between pipeline steps: rows, then detection copies, then each photo's crop job."""

    rows: list[ImageRow]
    decoded: list[Future[media.Decoded | ImageError]]
    jobs: dict[int, Future[list[FaceRecord]]] = field(default_factory=dict)
    found: dict[int, list[dict[str, object]]] = field(default_factory=dict)  # every detection, for the rules


def run_crop(ws: Workspace, catalog: Catalog, opts: CropOptions, *, redo: bool = False,
             progress: Progress = SILENT) -> CropSummary:
    """Detect, align and write crops for every image not cropped yet (all of them with ``redo``).

    Worker threads decode batch i+1 while MTCNN runs on batch i; then they align and write batch i's
    crops, and the batch is committed once its files are on disk. Memory stays bounded whatever the photos:
    a batch holds only detection copies (long side <= detect_max_side), and every decode, reduced or full,
    holds its pixels in the [media] decode_budget shared by the workers.
    """
    cfg = ws.config()
    limits = _Limits(cfg.get("media", "max_pixels"), cfg.get("media", "max_bytes"),
                     media.PixelBudget(cfg.get("media", "decode_budget")))
    rows = catalog.images_to_crop(redo=redo)
    if not rows:  # nothing to do answers in the time of `status`: no torch, no weights
        progress.start(f"crop ({opts.device})", 0, "img")
        progress.finish()
        return CropSummary(device=opts.device)
    from facecurate.faces.detect import BatchedDetector

    detector = BatchedDetector(device=opts.device, batch_size=opts.batch_size,
                               max_side=opts.detect_max_side, min_face_size=opts.min_face_size)
    summary = CropSummary(device=str(detector.device))
    progress.start(f"crop ({summary.device})", len(rows), "img")
    chunks = [rows[i:i + opts.batch_size] for i in range(0, len(rows), opts.batch_size)]
    with ThreadPoolExecutor(max_workers=4) as pool:
        def decode(chunk: list[ImageRow]) -> _Batch:
            return _Batch(chunk, [pool.submit(_decode, ws, r, limits, opts.detect_max_side) for r in chunk])

        upcoming = decode(chunks[0]) if chunks else None
        for i in range(len(chunks)):
            batch, upcoming = upcoming, decode(chunks[i + 1]) if i + 1 < len(chunks) else None
            assert batch is not None
            # (index in the batch, detection copy) of the photos that decoded; the others fail in _commit
            good: list[tuple[int, media.Decoded]] = []
            for j, future in enumerate(batch.decoded):
                decoded = future.result()
                if not isinstance(decoded, ImageError):
                    good.append((j, decoded))
            detections = detect_with_retries(detector, [copy for _, copy in good], opts)
            for (j, copy), found in zip(good, detections, strict=True):
                found = _to_source(found, copy)
                batch.found[j] = [{"box": [round(float(v), 1) for v in d.box], "prob": round(float(d.prob), 4)}
                                  for d in found]
                chosen = choose_faces(found, opts.min_prob, opts.all_faces)
                if chosen:
                    batch.jobs[j] = pool.submit(_crop_image, ws, batch.rows[j], copy, chosen, opts, limits)
            _commit(catalog, batch, summary)
            progress.advance(len(batch.rows))
    progress.finish()
    return summary


def _commit(catalog: Catalog, batch: _Batch, summary: CropSummary) -> None:
    """Wait for a batch's crop files, then record the whole batch in one transaction."""
    outcomes: list[list[FaceRecord] | ImageError] = []
    for j, row in enumerate(batch.rows):
        decoded = batch.decoded[j].result()
        if isinstance(decoded, ImageError):
            outcomes.append(decoded)
            continue
        job = batch.jobs.get(j)
        try:
            outcomes.append(job.result() if job is not None else [])
        except (ValueError, OSError, ImageError) as exc:  # one odd face must not stop the run
            outcomes.append(ImageError(f"{row.path}: aligning or writing a crop failed ({exc}).", "crop_failed"))
    record_batch(catalog, batch.rows, outcomes, batch.found, summary)


def record_batch(catalog: Catalog, rows: list[ImageRow], outcomes: list[list[FaceRecord] | ImageError],
                 found: dict[int, list[dict[str, object]]], summary: CropSummary) -> None:
    """One batch's outcomes (faces, none, or the error) in one transaction, whichever executor computed them."""
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
