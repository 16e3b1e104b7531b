"""Edits of the bundled public-domain photos that each trip one facecurate reason, for the demo (and tests).

Every function is pure: an RGB uint8 array (and, where an edit needs to know where the face is, the five
MTCNN landmarks of that photo: eye image-left, eye image-right, nose, mouth image-left, mouth image-right)
in, a new RGB uint8 array out. Each docstring names the reason the result must raise, so a newcomer can
read the demo's closing table beside this file. Nothing here reads files or draws random numbers without a
fixed seed: the same photo always gives the same edit, so the demo's outcome is reproducible.
"""

from __future__ import annotations

import io

import cv2
import numpy as np
from PIL import Image, ImageFilter

Landmarks = np.ndarray  # (5, 2) float, source pixels


def _iod(lm: Landmarks) -> float:
    """Inter-ocular distance: every edit is scaled by it, so it fits any photo size."""
    return float(np.linalg.norm(np.asarray(lm[1], float) - np.asarray(lm[0], float)))


def _pil(img: np.ndarray) -> Image.Image:
    return Image.fromarray(np.ascontiguousarray(img))


def _jpeg_round_trip(img: np.ndarray, quality: int) -> np.ndarray:
    buf = io.BytesIO()
    _pil(img).save(buf, "JPEG", quality=quality)
    return np.asarray(Image.open(io.BytesIO(buf.getvalue())).convert("RGB"))


def recompressed(img: np.ndarray) -> np.ndarray:
    """``duplicate``: the same photo re-saved at JPEG quality 30 and 90% size, as re-posts usually are.
    The dedup keeper prefers the original (higher resolution and quality)."""
    h, w = img.shape[:2]
    small = np.asarray(_pil(img).resize((round(w * 0.9), round(h * 0.9)), Image.Resampling.LANCZOS))
    return _jpeg_round_trip(small, 30)


def mirrored(img: np.ndarray) -> np.ndarray:
    """``duplicate`` (mirror-aware): the photo flipped left-right and shrunk to 80%, as aggregators do to
    dodge exact-match filters. Smaller, so the original stays the keeper."""
    h, w = img.shape[:2]
    return np.asarray(_pil(np.ascontiguousarray(img[:, ::-1])).resize((round(w * 0.8), round(h * 0.8)),
                                                                       Image.Resampling.LANCZOS))


def _lid(img: np.ndarray, eye: np.ndarray, iod: float) -> None:
    """Paint a closed lid over one eye, in place: cheek-coloured skin with a dark lash line."""
    x, y = float(eye[0]), float(eye[1])
    cheek = img[int(y + iod * 0.6):int(y + iod * 0.7), int(x - 5):int(x + 5)].reshape(-1, 3)
    colour = tuple(int(c) for c in cheek.mean(0))
    cv2.ellipse(img, (int(x), int(y)), (int(iod * 0.28), int(iod * 0.12)), 0, 0, 360, colour, -1)
    cv2.line(img, (int(x - iod * 0.25), int(y + iod * 0.03)), (int(x + iod * 0.25), int(y + iod * 0.03)),
             (60, 40, 35), max(2, round(iod * 0.03)))


def closed_eyes(img: np.ndarray, lm: Landmarks) -> np.ndarray:
    """``closed_eyes``: both eyes painted shut (skin-coloured lids, lash lines)."""
    out = img.copy()
    for eye in lm[:2]:
        _lid(out, np.asarray(eye), _iod(lm))
    return out


def wink(img: np.ndarray, lm: Landmarks) -> np.ndarray:
    """``wink``: only the image-left eye painted shut; the other stays open and visible."""
    out = img.copy()
    _lid(out, np.asarray(lm[0]), _iod(lm))
    return out


def covered_eyes(img: np.ndarray, lm: Landmarks) -> np.ndarray:
    """``occluded_eyes``: dark sunglass lenses over both eyes (the landmarks still call them open)."""
    out = img.copy()
    iod = _iod(lm)
    for eye in lm[:2]:
        cv2.ellipse(out, (int(eye[0]), int(eye[1])), (int(iod * 0.38), int(iod * 0.25)), 0, 0, 360,
                    (15, 15, 20), -1)
    cv2.line(out, (int(lm[0][0] + iod * 0.38), int(lm[0][1])), (int(lm[1][0] - iod * 0.38), int(lm[1][1])),
             (15, 15, 20), max(2, round(iod * 0.05)))
    return out


def no_headroom(img: np.ndarray, lm: Landmarks) -> np.ndarray:
    """``no_headroom``: the photo cut just above the eyebrows, so the top of the head is missing."""
    top = max(0, int(min(lm[0][1], lm[1][1]) - _iod(lm) * 0.45))
    return img[top:].copy()


def off_edge(img: np.ndarray, lm: Landmarks) -> np.ndarray:
    """``mirroring``: the photo cut just left of the face, so the FFHQ crop runs off the edge and the
    alignment fills it with reflected pixels."""
    left = max(0, int(min(lm[0][0], lm[3][0]) - _iod(lm) * 0.3))
    return img[:, left:].copy()


def grayscale(img: np.ndarray) -> np.ndarray:
    """``grayscale``: a black-and-white print of the photo (three equal channels)."""
    return np.repeat(np.asarray(_pil(img).convert("L"))[:, :, None], 3, axis=2)


def blurry(img: np.ndarray, lm: Landmarks) -> np.ndarray:
    """``blurry``: out of focus (Gaussian blur of 9% of the eye distance)."""
    return np.asarray(_pil(img).filter(ImageFilter.GaussianBlur(radius=_iod(lm) * 0.09)))


def small(img: np.ndarray, factor: int = 5) -> np.ndarray:
    """``small_face``: a thumbnail at 1/``factor`` size; the crop would have to invent the detail."""
    h, w = img.shape[:2]
    return np.asarray(_pil(img).resize((max(1, w // factor), max(1, h // factor)), Image.Resampling.LANCZOS))


def tilted(img: np.ndarray, lm: Landmarks, degrees: float = 60.0) -> np.ndarray:
    """``extreme_pose``: the photo turned by ``degrees`` about the face (a face lying sideways); the
    canvas grows so nothing is cut, and the corners are filled with the border's own pixels."""
    h, w = img.shape[:2]
    centre = tuple(float(v) for v in np.asarray(lm[:2], float).mean(0))
    m = cv2.getRotationMatrix2D(centre, degrees, 1.0)
    cos, sin = abs(m[0, 0]), abs(m[0, 1])
    nw, nh = int(h * sin + w * cos), int(h * cos + w * sin)
    m[0, 2] += nw / 2 - w / 2
    m[1, 2] += nh / 2 - h / 2
    return cv2.warpAffine(img, m, (nw, nh), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)


def face_box(img: np.ndarray, lm: Landmarks, margin: float = 1.0) -> np.ndarray:
    """The head and shoulders around the landmarks (a portrait; ``margin`` < 1 cuts closer), used to compose
    the shots below."""
    iod = _iod(lm) * margin
    h, w = img.shape[:2]
    y0, y1 = max(0, int(lm[0][1] - iod * 2.4)), min(h, int(lm[3][1] + iod * 1.8))
    x0, x1 = max(0, int(lm[0][0] - iod * 1.6)), min(w, int(lm[1][0] + iod * 1.6))
    return img[y0:y1, x0:x1].copy()


def side_by_side(left: np.ndarray, right: np.ndarray) -> np.ndarray:
    """``multiple_faces``: two head-and-shoulder portraits next to each other at the same height."""
    h = min(left.shape[0], right.shape[0])
    scale = [h / left.shape[0], h / right.shape[0]]
    parts = [np.asarray(_pil(p).resize((round(p.shape[1] * s), h), Image.Resampling.LANCZOS)) for p, s in
             zip((left, right), scale, strict=True)]
    return np.concatenate(parts, axis=1)


def product_shot(face: np.ndarray, side: int = 1400, seed: int = 1) -> np.ndarray:
    """``product_shot``: a small head-and-shoulders thumbnail on a busy, colourful packshot background
    (seeded rectangles), the face covering well under 1% of the frame."""
    rng = np.random.default_rng(seed)
    frame = np.zeros((side, side, 3), np.uint8)
    for _ in range(90):
        x, y = rng.integers(0, side - 100, 2)
        colour = tuple(int(c) for c in rng.integers(0, 255, 3))
        cv2.rectangle(frame, (int(x), int(y)), (int(x + side * 0.085), int(y + side * 0.065)), colour, -1)
    size = (max(1, face.shape[1] // 8), max(1, face.shape[0] // 8))
    thumb = np.asarray(_pil(face).resize(size, Image.Resampling.LANCZOS))
    y, x = side // 2 - thumb.shape[0] // 2, side // 2 - thumb.shape[1] // 2
    frame[y:y + thumb.shape[0], x:x + thumb.shape[1]] = thumb
    return frame


def new_backdrop(img: np.ndarray, lm: Landmarks, top: tuple[int, int, int], bottom: tuple[int, int, int]
                 ) -> np.ndarray:
    """The person (head ellipse and shoulders) moved onto a plain studio gradient from ``top`` to ``bottom``.

    Not a rule of its own: it makes a *different photo* of the same sitting, so an edit built on it is not
    grouped with the untouched original by dedup (photo or face level) and its own reason shows plainly."""
    h, w = img.shape[:2]
    iod = _iod(lm)
    eyes = np.asarray(lm[:2], float).mean(0)
    mouth = np.asarray(lm[3:], float).mean(0)
    mask = np.zeros((h, w), np.float32)
    cv2.ellipse(mask, (int(eyes[0]), int(eyes[1] - iod * 0.1)), (int(iod * 1.25), int(iod * 1.9)), 0, 0, 360,
                (1.0,), -1)
    shoulders = np.array([[eyes[0] - iod * 0.7, mouth[1]], [eyes[0] + iod * 0.7, mouth[1]],
                          [eyes[0] + iod * 2.6, mouth[1] + iod * 2.2], [eyes[0] + iod * 2.6, h],
                          [eyes[0] - iod * 2.6, h], [eyes[0] - iod * 2.6, mouth[1] + iod * 2.2]], np.int32)
    cv2.fillPoly(mask, [shoulders], (1.0,))
    soft = np.asarray(cv2.GaussianBlur(mask, (0, 0), iod * 0.08), np.float32)[:, :, None]
    ramp = np.linspace(0.0, 1.0, h, dtype=np.float32)[:, None, None]
    bg = (1 - ramp) * np.array(top, np.float32) + ramp * np.array(bottom, np.float32)
    return np.asarray((soft * img + (1 - soft) * bg).round(), np.uint8)
