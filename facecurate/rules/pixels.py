"""Measures read from pixels: sharpness and colour of the aligned crop, colourfulness of the photo."""

from __future__ import annotations

import cv2
import numpy as np

SHARPNESS_SIDE = 256  # the Laplacian is read at one fixed size so crops of any --size compare


def sharpness(crop: np.ndarray, upscale: float = 1.0) -> float:
    """Variance of the Laplacian of the central face region, read at the photo's own resolution.

    The centre (the face, not the padding or background) is what must be sharp. Reading it at the source's
    pixel density (capped at SHARPNESS_SIDE) normalises for resolution: a small photo enlarged into a big
    crop is judged on its own focus, not punished again for the enlargement that `small_face` measures."""
    n = crop.shape[0]
    centre = crop[n // 5: n - n // 5, n // 5: n - n // 5]
    side = int(max(16, min(SHARPNESS_SIDE, centre.shape[0] / max(upscale, 1e-6))))
    interp = cv2.INTER_AREA if side <= centre.shape[0] else cv2.INTER_CUBIC
    gray = cv2.cvtColor(cv2.resize(centre, (side, side), interpolation=interp), cv2.COLOR_RGB2GRAY)
    return float(cv2.Laplacian(gray, cv2.CV_64F).var())


def chroma(crop: np.ndarray) -> float:
    """Mean colour spread per pixel (max channel minus min channel); under ~3 levels the photo is grey.

    Read on a 128 px thumbnail: an average over the face needs no more, and it is 16x cheaper at 512."""
    small = cv2.resize(crop, (128, 128), interpolation=cv2.INTER_AREA) if crop.shape[0] > 128 else crop
    c = small.astype(np.int16)
    return float((c.max(axis=2) - c.min(axis=2)).mean())


def saturated_share(image: np.ndarray, face_box: list[float]) -> float:
    """Share of strongly coloured pixels outside the face box: product shots and ads are saturated."""
    small_side = 256
    h, w = image.shape[:2]
    scale = small_side / max(h, w)
    small = cv2.resize(image, (max(1, round(w * scale)), max(1, round(h * scale))), interpolation=cv2.INTER_AREA)
    hsv = cv2.cvtColor(small, cv2.COLOR_RGB2HSV)
    mask = (hsv[..., 1] > 128) & (hsv[..., 2] > 80)
    x1, y1, x2, y2 = (round(v * scale) for v in face_box)
    outside = np.ones(mask.shape, bool)
    outside[max(y1, 0):max(y2, 0), max(x1, 0):max(x2, 0)] = False
    return float(mask[outside].mean()) if outside.any() else 0.0
