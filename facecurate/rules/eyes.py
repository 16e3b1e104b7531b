"""Eye measures from MediaPipe FaceMesh on the aligned crop: openness (EAR) and occlusion cues.

RULES-EVIDENCE measured FaceMesh EAR as the only offline method that separates closed from open eyes
well (AUC 0.995); landmark models still place open eyes behind sunglasses, so covered eyes need image
cues read around those landmarks (skin compared with the cheek, darkness, eye-cascade hits). The cascade
counts an eye only where its box is centred on the landmark eye (eye_seen): sharp crops let it find 'eyes'
on lens rims and reflections.
"""

from __future__ import annotations

import contextlib
import os
import sys
import threading
from collections.abc import Iterator
from dataclasses import dataclass

import cv2
import numpy as np

# FaceMesh indices in EAR order p1..p6: corner, upper lid x2, corner, lower lid x2.
RIGHT_EAR = (33, 160, 158, 133, 153, 144)  # the subject's right eye: image left
LEFT_EAR = (362, 385, 387, 263, 373, 380)
RIGHT_CONTOUR = (33, 7, 163, 144, 145, 153, 154, 155, 133, 173, 157, 158, 159, 160, 161, 246)
LEFT_CONTOUR = (263, 249, 390, 373, 374, 380, 381, 382, 362, 398, 384, 385, 386, 387, 388, 466)
RIGHT_CHEEK, LEFT_CHEEK = (50, 118, 101, 36, 205), (280, 347, 330, 266, 425)
MESH_SIDE = 256  # side of the view FaceMesh reads; its landmark model sees the face at 192 px, so more adds only time
# FaceMesh reads the central share of the aligned crop: the FFHQ crop is mostly background and reflect padding
# around a small face; cutting it away lets FaceMesh's own detector frame the real face, not a mirrored ghost.
# On dev this raised closed-vs-open AUC from 0.984 (whole crop) to 0.989 and meshed 5 more closed faces.
MESH_CENTRE = 0.7


def eye_aspect_ratio(points: np.ndarray, idx: tuple[int, ...]) -> float:
    """(|p2-p6| + |p3-p5|) / (2 |p1-p4|): about 0.3 for an open eye, under 0.18 when shut."""
    p = points[list(idx)]
    width = np.linalg.norm(p[0] - p[3])
    if width <= 0:
        return float("nan")
    return float((np.linalg.norm(p[1] - p[5]) + np.linalg.norm(p[2] - p[4])) / (2.0 * width))


def _warm_up_face(side: int = MESH_SIDE) -> np.ndarray:
    """A drawn face (skin oval, eyes, brows, nose, mouth) that FaceMesh meshes: its first meshed face logs more
    set-up, which the muted warm-up then absorbs. Drawn rather than read from the demo photos, so the rules
    depend on no bundled data."""
    img = np.full((side, side, 3), (90, 110, 130), np.uint8)
    c, s = side // 2, side / 256

    def px(v: float) -> int:
        return int(v * s)

    cv2.ellipse(img, (c, c + px(5)), (px(70), px(92)), 0, 0, 360, (224, 172, 140), -1)
    for dx in (-30, 30):
        x = c + px(dx)
        cv2.ellipse(img, (x, c - px(15)), (px(15), px(7)), 0, 0, 360, (250, 250, 250), -1)
        cv2.circle(img, (x, c - px(15)), px(6), (60, 40, 30), -1)
        cv2.ellipse(img, (x, c - px(32)), (px(18), px(5)), 0, 180, 360, (80, 50, 40), 3)
    cv2.line(img, (c, c - px(10)), (c - px(6), c + px(22)), (180, 120, 100), 2)
    cv2.ellipse(img, (c, c + px(45)), (px(25), px(9)), 0, 0, 180, (150, 60, 60), -1)
    return cv2.GaussianBlur(img, (0, 0), 2 * s)


@contextlib.contextmanager
def _native_stderr_muted() -> Iterator[None]:
    """MediaPipe's C++ side (TFLite, absl) writes set-up chatter straight to file descriptor 2, under the
    progress bars and before any Python logging could filter it; mute that descriptor while it sets up."""
    sys.stderr.flush()
    saved = os.dup(2)
    try:
        with open(os.devnull, "wb") as devnull:
            os.dup2(devnull.fileno(), 2)
            yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)


class FaceMesh:
    """One MediaPipe FaceMesh per process (it is not thread-safe and costs ~100 ms to build)."""

    _lock = threading.Lock()
    _shared: FaceMesh | None = None

    @classmethod
    def shared(cls) -> FaceMesh:
        """The process's FaceMesh, built on first use and kept, so repeated filter runs do not pay ~200 ms each."""
        with cls._lock:
            if cls._shared is None:
                cls._shared = cls()
            return cls._shared

    def __init__(self) -> None:
        import mediapipe as mp

        with _native_stderr_muted():
            self._mesh = mp.solutions.face_mesh.FaceMesh(static_image_mode=True, max_num_faces=1,
                                                         refine_landmarks=True, min_detection_confidence=0.3)
            self._mesh.process(_warm_up_face())  # the graph logs more set-up on its first face

    def points(self, crop: np.ndarray) -> np.ndarray | None:
        """478 landmarks in the pixel coordinates of ``crop`` (RGB uint8), or None if no face is meshed."""
        h, w = crop.shape[:2]
        small = cv2.resize(crop, (MESH_SIDE, MESH_SIDE), interpolation=cv2.INTER_AREA) if w > MESH_SIDE else crop
        with self._lock:
            result = self._mesh.process(np.ascontiguousarray(small))
        if not result.multi_face_landmarks:
            return None
        lm = result.multi_face_landmarks[0].landmark
        return np.array([(p.x * w, p.y * h) for p in lm], dtype=np.float64)


@dataclass(frozen=True)
class EyeMeasures:
    ear_right: float
    ear_left: float
    skin_ratio: float      # skin-coloured share around the eyes / the same share on the cheeks
    dark_ratio: float      # eye-region luminance / cheek luminance
    cascade_hits: int      # Haar eye-cascade detections in the two eye regions (0-2)


def mesh_view(crop: np.ndarray, centre: float = MESH_CENTRE, side: int = MESH_SIDE) -> np.ndarray:
    """The central ``centre`` share of a square crop, resized to ``side`` px (the image FaceMesh reads)."""
    n = crop.shape[0]
    cut = round(n * (1.0 - centre) / 2)
    view = crop[cut:n - cut, cut:crop.shape[1] - cut] if cut > 0 else crop
    if view.shape[0] == side:
        return np.ascontiguousarray(view)
    # INTER_AREA only where shrinking by 2x or more: below that, bilinear does not alias and is ~3x cheaper
    n = view.shape[0]
    interp = cv2.INTER_AREA if n >= 2 * side else cv2.INTER_LINEAR if n > side else cv2.INTER_CUBIC
    return cv2.resize(view, (side, side), interpolation=interp)


def _polygon_mask(shape: tuple[int, int], pts: np.ndarray, grow: float = 1.0) -> np.ndarray:
    centre = pts.mean(axis=0)
    poly: np.ndarray = np.rint(centre + (pts - centre) * grow).astype(np.int32)
    mask: np.ndarray = np.zeros(shape, np.uint8)
    cv2.fillPoly(mask, [poly], (1,))
    return mask.astype(bool)


def _cheek_mask(shape: tuple[int, int], points: np.ndarray, iod: float) -> np.ndarray:
    mask: np.ndarray = np.zeros(shape, np.uint8)
    r = max(2, int(iod * 0.12))
    for i in RIGHT_CHEEK + LEFT_CHEEK:
        x, y = np.rint(points[i]).astype(int)
        cv2.circle(mask, (int(x), int(y)), r, (1,), -1)
    return mask.astype(bool)


_CASCADE: cv2.CascadeClassifier | None = None


def _eye_cascade() -> cv2.CascadeClassifier:
    global _CASCADE
    if _CASCADE is None:
        # cv2.data exists at run time (the wheel's bundled cascades); opencv's stubs leave the submodule out
        _CASCADE = cv2.CascadeClassifier(cv2.data.haarcascades + "haarcascade_eye.xml")  # type: ignore[attr-defined]
    return _CASCADE


PATCH_SIDE = 48  # the eye patch (0.9 eye distances square) is read at this side by the cascade
PATCH_HALF_IOD = 0.45
# Why these (and haarcascade_eye, scaleFactor 1.1, minNeighbors 3, minSize 12): re-measured on dev once crops
# became FFHQ-sharp, each against the chosen set with the centring gate below (32/41 sunglasses, 3/153 open
# faces flagged, 9/145 ordinary faces rejected by the eye rules), every alternative lost on one side:
#   haarcascade_eye_tree_eyeglasses instead      32/41, 8 flagged, 14 ordinary
#   either cascade counting (eye or tree)        31/41, 2 flagged,  7 ordinary
#   patch read at 40 px / 60 px                  33/41, 6 flagged / 31/41, 2 flagged
#   half-patch 0.40 / 0.50 eye distances         32/41, 4 flagged / 31/41, 6 flagged
#   minNeighbors 4                               32/41, 4 flagged
#   scaleFactor 1.05                             30/41, 2 flagged
#   Gaussian pre-blur sigma 0.7 on the patch     31/41, 3 flagged, 10 ordinary
#   a floor of 0.4 on the cascade's last-stage weight  33/41, 5 flagged, 10 ordinary
# Each of those moved 9-21 photos each way (the cascade's answer on a small eye is fragile); the centring gate
# moved 3, all for the better (2 sunglasses to covered, 1 shut pair from wink to closed). Resampling the crops
# instead (2x/3x/4x, area, the FFHQ script's own) gave 30-33/41: the crops were not the lever.
# A cascade box counts as the eye only where it is centred on the eye the landmarks place: its centre within
# this share of its width sideways and of its height up or down. On dev (sharp crops, haarcascade_eye) the
# boxes on open eyes lie within -0.15..+0.08 of their width sideways (5th-95th percentile; -0.42..+0.39 at
# 1st-99th) and -0.09..+0.05 of their height up/down (1st-99th), 566 boxes; the boxes it found on sunglasses
# sat on a lens rim or a reflection, 0.32 of a width sideways and 0.39 of a height below. The vertical bound
# is the telling one (open eyes' boxes sit level with the landmark eye); the sideways one is looser because
# open eyes' boxes spread more that way (the 1st-99th range above).
BOX_OFF_X, BOX_OFF_Y = 0.3, 0.2


def eye_seen(gray: np.ndarray, centre: np.ndarray, iod: float) -> bool:
    """Whether the Haar eye cascade finds an eye on the landmark eye at ``centre`` (grey view px).

    The patch around the eye is read at PATCH_SIDE px whatever the crop size, so the cascade sees the eye at one
    scale. Only a box centred on the landmark eye counts (BOX_OFF_X/Y): since crops are resampled as sharply as
    FFHQ's (Lanczos), the cascade finds 'eyes' on lens rims and reflections beside or below a covered eye more
    often; on dev that gate turned 2 of 41 sunglasses faces from 'an eye seen' to covered and moved no open face."""
    half = int(iod * PATCH_HALF_IOD)
    x0, y0 = max(0, int(centre[0]) - half), max(0, int(centre[1]) - half)
    patch = gray[y0:int(centre[1]) + half, x0:int(centre[0]) + half]
    if not patch.size or min(patch.shape) < 12:
        return False
    sx, sy = PATCH_SIDE / patch.shape[1], PATCH_SIDE / patch.shape[0]
    ex, ey = (centre[0] - x0) * sx, (centre[1] - y0) * sy
    patch = cv2.resize(patch, (PATCH_SIDE, PATCH_SIDE), interpolation=cv2.INTER_AREA)
    found = _eye_cascade().detectMultiScale(patch, scaleFactor=1.1, minNeighbors=3, minSize=(12, 12))
    return any(abs(x + w / 2 - ex) <= BOX_OFF_X * w and abs(y + h / 2 - ey) <= BOX_OFF_Y * h for x, y, w, h in found)


def _eye_region(crop: np.ndarray, points: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The part of the crop that eye_measures reads (eyes, cheeks, cascade patches, with margin), and the
    landmarks moved into it: colour conversion and masks then cover a third of the view, not all of it."""
    idx = list(RIGHT_CONTOUR + LEFT_CONTOUR + RIGHT_CHEEK + LEFT_CHEEK)
    iod = float(np.linalg.norm(points[list(RIGHT_CONTOUR)].mean(0) - points[list(LEFT_CONTOUR)].mean(0)))
    lo = np.floor(points[idx].min(0) - 0.6 * iod - 2).astype(int).clip(0)
    hi = np.ceil(points[idx].max(0) + 0.6 * iod + 2).astype(int)
    return crop[lo[1]:hi[1], lo[0]:hi[0]], points - lo


def eye_measures(crop: np.ndarray, points: np.ndarray) -> EyeMeasures:
    """Openness and occlusion cues for one meshed face; pure function of the crop and its landmarks."""
    crop, points = _eye_region(crop, points)
    h, w = crop.shape[:2]
    ycc = cv2.cvtColor(crop, cv2.COLOR_RGB2YCrCb).astype(np.float32)
    iod = float(np.linalg.norm(points[list(RIGHT_CONTOUR)].mean(0) - points[list(LEFT_CONTOUR)].mean(0)))
    cheeks = _cheek_mask((h, w), points, iod)
    eyes = (_polygon_mask((h, w), points[list(RIGHT_CONTOUR)], 1.8)
            | _polygon_mask((h, w), points[list(LEFT_CONTOUR)], 1.8))
    eyes &= ~cheeks
    if cheeks.sum() < 10 or eyes.sum() < 10:
        skin_ratio, dark_ratio = float("nan"), float("nan")
    else:
        ref = ycc[cheeks]
        mean, std = ref.mean(0), ref.std(0) + np.array([12.0, 4.0, 4.0], np.float32)

        def skin_share(px: np.ndarray) -> float:
            z = np.abs(px - mean) / std
            return float(((z[:, 1] < 2.5) & (z[:, 2] < 2.5) & (px[:, 0] > 0.45 * mean[0])).mean())

        skin_ratio = skin_share(ycc[eyes]) / max(skin_share(ref), 1e-6)
        dark_ratio = float(ycc[eyes][:, 0].mean() / max(mean[0], 1.0))
    gray = cv2.cvtColor(crop, cv2.COLOR_RGB2GRAY)
    hits = sum(eye_seen(gray, points[list(contour)].mean(0), iod) for contour in (RIGHT_CONTOUR, LEFT_CONTOUR))
    return EyeMeasures(eye_aspect_ratio(points, RIGHT_EAR), eye_aspect_ratio(points, LEFT_EAR),
                       skin_ratio, dark_ratio, hits)
