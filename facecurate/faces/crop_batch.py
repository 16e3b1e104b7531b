"""One batch of the crop stage as self-contained work: the [crop] options, the looks MTCNN takes at a batch,
and :class:`CropWork`, which reads, decodes, detects, aligns and writes a batch of photos and returns plain
outcomes.

It needs nothing of the catalog, so the same work runs in crop's own worker processes
(:mod:`~facecurate.faces.crop_workers`) and on a Ray worker (:mod:`~facecurate.faces.crop_work`); the stage's
drivers (:mod:`~facecurate.faces.crop`) commit what it returns. torch loads on the first batch, not on import.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

import cv2
import numpy as np

from facecurate import media
from facecurate.catalog import ImageRow
from facecurate.device import DeviceChoice
from facecurate.errors import ImageError
from facecurate.faces.align import AlignmentMode, PaddingMode
from facecurate.faces.crop_photo import CropOutcome, CutSettings, Face, Limits, crop_image, decode_copy
from facecurate.filestore import open_at, open_mirrored
from facecurate.workspace import Workspace, check_choice, options_from, setting

if TYPE_CHECKING:  # the detector imports torch (seconds): only a batch to crop imports it
    from facecurate.faces.detect import BatchedDetector, Detection
    from facecurate.work import ArrowResults


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
    workers: int
    pipeline: Literal["auto", "opencv", "torch"]
    device_batch_size: int

    @classmethod
    def from_config(cls, ws: Workspace, **overrides: Any) -> CropOptions:
        """The workspace's settings with command-line values on top (None: not given); a value of a setting
        with choices (``--device``, ``--padding``) is checked against them here, once for every caller."""
        for key, value in overrides.items():
            if value is not None and setting("crop", key).choices:
                check_choice("crop", key, value, "--" + key.replace("_", "-"))
        return options_from(cls, ws.config(), "crop", **overrides)


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
# A look enlarges a photo at most to this long side: a strip (32 x 60000 passes the media gate; its detection copy
# is 1 x 1920) would otherwise be enlarged 256 times and bordered to 150 GB. Ordinary tight crops never reach it.
RETRY_MAX_SIDE = 2048


def retry_tight(detector: BatchedDetector, images: list[np.ndarray], min_side: int = RETRY_MIN_SIDE,
                pad_share: float = RETRY_PAD) -> list[list[Detection]]:
    """Another look at photos with no face: small, tight face crops (imported datasets, thumbnails) defeat
    MTCNN's pyramid, so enlarge them, add a grey border, detect again, and map the results back."""
    from facecurate.faces.detect import Detection  # here, not at the top: detect imports torch

    prepared, frames = [], []
    for img in images:
        h, w = img.shape[:2]
        scale = max(1.0, min(min_side / min(h, w), RETRY_MAX_SIDE / max(h, w)))
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


def _to_source(found: list[Detection], copy: media.Decoded) -> list[Detection]:
    """Detections on a reduced copy, in the stored photo's pixel coordinates."""
    from facecurate.faces.detect import Detection  # here, not at the top: detect imports torch

    if not copy.reduced:
        return found
    sx, sy = copy.source_size[0] / copy.width, copy.source_size[1] / copy.height
    return [Detection(box=(d.box[0] * sx, d.box[1] * sy, d.box[2] * sx, d.box[3] * sy), prob=d.prob,
                      landmarks=np.asarray(d.landmarks, dtype=float) * [sx, sy]) for d in found]


def _cut_settings(opts: CropOptions) -> CutSettings:
    return CutSettings(opts.size, opts.headroom, opts.padding, opts.alignment, opts.image_format, opts.jpeg_quality)


def detections_record(found: list[Detection]) -> list[dict[str, object]]:
    """Every detection of a photo as the catalog keeps it for the rules (box to 0.1 px, probability to 1e-4)."""
    return [{"box": [round(float(v), 1) for v in d.box], "prob": round(float(d.prob), 4)} for d in found]


def detect_with_retries(detector: BatchedDetector, copies: list[media.Decoded], opts: CropOptions
                        ) -> list[list[Detection]]:
    """Every detection copy's faces: one batched look, then the further looks (RETRY_LOOKS) at the photos it
    missed. Shared by the local paths and the executors' crop work (faces/crop_work.py), so all find the same
    faces."""
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


class CropWork:
    """Crop one batch of photos on a worker; the detector is built on the first batch and kept. ``budget``: a
    pixel budget shared with other workers (forked processes); else each holds ``decode_budget`` megapixels.
    ``mirrored``: a worker on the driver's machine (crop's own workers) reads and writes through the workspace's
    mirror of the storage, as the driver's stages do; a Ray worker reads and writes the storage itself."""

    name = "crop"

    @property
    def results(self) -> ArrowResults[CropOutcome]:
        from facecurate.faces.crop_arrow import RESULTS  # pyarrow: only an executor that moves Arrow asks

        return RESULTS

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
            seen = detections_record(found)
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
