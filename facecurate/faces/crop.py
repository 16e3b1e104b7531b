"""The ``crop`` stage: batched detection, FFHQ alignment and atomic crop writes around the catalog.

Decoding the next batch runs in worker threads while MTCNN works on the current one, and crops are
aligned, encoded and written in threads too (OpenCV and Pillow release the GIL), so the detector is the
only thing the batch waits on. Each batch's results land in one transaction after its files are on disk:
a kill loses at most the batch in flight, and its files are simply rewritten on the next run.
"""

from __future__ import annotations

from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field

import numpy as np

from facecurate import media
from facecurate.catalog import Catalog, FaceRecord, ImageRow
from facecurate.errors import ImageError
from facecurate.faces.align import align_face
from facecurate.faces.detect import BatchedDetector, Detection
from facecurate.workspace import Workspace


@dataclass(frozen=True)
class CropOptions:
    size: int = 512
    device: str = "auto"
    batch_size: int = 32
    detect_max_side: int = 1024
    min_face_size: int = 20
    min_prob: float = 0.9
    headroom: float = 0.0
    padding: str = "reflect_blur"
    all_faces: bool = False
    image_format: str = "jpg"
    jpeg_quality: int = 95

    @classmethod
    def from_config(cls, ws: Workspace, **overrides: object) -> CropOptions:
        values = ws.config().section("crop")
        values.update({k: v for k, v in overrides.items() if v is not None})
        return cls(**{k: values[k] for k in cls.__dataclass_fields__})


@dataclass
class CropSummary:
    images: int = 0
    with_face: int = 0
    no_face: int = 0
    faces: int = 0
    failed: list[tuple[str, str]] = field(default_factory=list)  # (path, message)
    device: str = ""


def crop_relpath(sha256: str, index: int, size: int, ext: str) -> str:
    return f"crops/{size}/{sha256[:2]}/{sha256}_{index}.{ext}"


def choose_faces(detections: list[Detection], min_prob: float, all_faces: bool) -> list[Detection]:
    """Confident faces, largest first; only the largest unless every face is wanted."""
    confident = [d for d in detections if d.prob >= min_prob]
    confident.sort(key=lambda d: (d.box[2] - d.box[0]) * (d.box[3] - d.box[1]), reverse=True)
    return confident if all_faces else confident[:1]


def _decode(ws: Workspace, row: ImageRow, max_pixels: int, max_bytes: int) -> np.ndarray | ImageError:
    try:
        return media.load_rgb(ws.resolve(row.path), max_pixels, max_bytes).pixels
    except ImageError as exc:
        return exc


def _crop_one(ws: Workspace, row: ImageRow, pixels: np.ndarray, index: int, det: Detection,
              opts: CropOptions) -> FaceRecord:
    aligned = align_face(pixels, det.landmarks, size=opts.size, headroom=opts.headroom,
                         padding=opts.padding)  # type: ignore[arg-type]
    rel = crop_relpath(row.sha256, index, opts.size, opts.image_format)
    media.atomic_write(ws.resolve(rel), media.encode(aligned.crop, opts.image_format, opts.jpeg_quality),
                       ws.tmp_dir)
    return FaceRecord(face_index=index, det_score=float(det.prob), bbox=[float(v) for v in det.box],
                      landmarks=np.asarray(det.landmarks, dtype=float).round(2).tolist(),
                      quad=np.asarray(aligned.quad, dtype=float).round(3).tolist(),
                      oob_fraction=float(aligned.oob_fraction), above_fraction=float(aligned.above_fraction),
                      side_fraction=float(aligned.side_fraction), eye_angle=float(aligned.eye_angle_deg),
                      crop_path=rel, crop_size=opts.size)


def run_crop(ws: Workspace, catalog: Catalog, opts: CropOptions, redo: bool = False,
             on_start: Callable[[int, str], None] | None = None,
             on_progress: Callable[[int], None] | None = None) -> CropSummary:
    """Detect, align and write crops for every image not cropped yet (all of them with ``redo``)."""
    cfg = ws.config()
    max_pixels, max_bytes = cfg.get("media", "max_pixels"), cfg.get("media", "max_bytes")
    rows = catalog.images_to_crop(redo=redo)
    detector = BatchedDetector(device=opts.device, batch_size=opts.batch_size,
                               max_side=opts.detect_max_side, min_face_size=opts.min_face_size)
    summary = CropSummary(device=str(detector.device))
    if on_start:
        on_start(len(rows), summary.device)
    batches = [rows[i:i + opts.batch_size] for i in range(0, len(rows), opts.batch_size)]
    with ThreadPoolExecutor(max_workers=4) as pool:
        def submit(batch: list[ImageRow]) -> list[Future[np.ndarray | ImageError]]:
            return [pool.submit(_decode, ws, r, max_pixels, max_bytes) for r in batch]

        pending = submit(batches[0]) if batches else []
        for i, batch in enumerate(batches):
            decoded = [f.result() for f in pending]
            pending = submit(batches[i + 1]) if i + 1 < len(batches) else []
            good = [j for j, d in enumerate(decoded) if isinstance(d, np.ndarray)]
            detections = detector.detect([decoded[j] for j in good])  # type: ignore[misc]
            per_image: dict[int, list[Detection]] = dict(zip(good, detections, strict=True))
            jobs: dict[int, list[Future[FaceRecord]]] = {}
            for j in good:
                chosen = choose_faces(per_image[j], opts.min_prob, opts.all_faces)
                jobs[j] = [pool.submit(_crop_one, ws, batch[j], decoded[j], k, d, opts)  # type: ignore[arg-type]
                           for k, d in enumerate(chosen)]
            results: dict[int, list[FaceRecord] | ImageError] = {}
            for j, futs in jobs.items():
                try:
                    results[j] = [f.result() for f in futs]
                except (ValueError, OSError, ImageError) as exc:  # one odd face must not stop the run
                    results[j] = ImageError(f"{batch[j].path}: aligning or writing a crop failed ({exc}).",
                                            "crop_failed")
            with catalog.transaction():
                for j, row in enumerate(batch):
                    summary.images += 1
                    item = decoded[j] if isinstance(decoded[j], ImageError) else results[j]
                    if isinstance(item, ImageError):
                        catalog.save_crop_result(row.id, "failed", [], error=str(item))
                        summary.failed.append((row.path, str(item)))
                    elif item:
                        catalog.save_crop_result(row.id, "done", item)
                        summary.with_face += 1
                        summary.faces += len(item)
                    else:
                        catalog.save_crop_result(row.id, "no_face", [])
                        summary.no_face += 1
            if on_progress:
                on_progress(len(batch))
    return summary
