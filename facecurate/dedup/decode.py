"""Decode a file just far enough for its fingerprint: JPEGs at a reduced scale, straight to grayscale.

Why: every dedup fact about a photo is taken at 64 px (hashes, thumbnail) or at most 128 px (sharpness), yet a full
decode of a 12-megapixel JPEG to RGB costs tens of milliseconds. libjpeg can run its inverse DCT at 1/2, 1/4
or 1/8 scale and emit only the luma channel (OpenCV's ``IMREAD_REDUCED_GRAYSCALE_*``, one C call that also applies
the EXIF orientation), so a reduced grayscale decode costs a fraction of that and every hash reads the same few
pixels.

The one fact that needs the full picture is "identical pixels" (issue 4, must-have 1). A reduced decode
cannot prove it, so its digest is marked *reduced* (prefix ``r``): two files whose reduced digests differ
cannot hold identical pixels, and the few whose reduced digests (or near hashes) collide are decoded in full
by :func:`full_digest` before they are called pixel twins (see :func:`facecurate.dedup.core.twin_candidates`).
Everything else — PNG, WebP, GIF, CMYK or odd JPEGs, and any file the fast path chokes on — goes through
:func:`facecurate.media.decode`, so its safety checks and error messages stay the single source of truth.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

import cv2
import numpy as np

from facecurate import media
from facecurate.dedup.hashing import gray_image, pixel_digest

REDUCED_SIDE = 64           # a reduced decode keeps at least this many pixels per side (the hashes work at 64 px)
REDUCED_PREFIX = "r"        # a digest of a reduced decode: equal pixels imply equal digests, not the reverse


@dataclass(frozen=True)
class Reduced:
    """A grayscale view of a file (at least REDUCED_SIDE per side when the file is that big) and its digest."""

    gray: np.ndarray       # (H, W) uint8
    digest: str            # pixel_digest of the full RGB decode, or REDUCED_PREFIX + digest of the reduced one


def is_exact(digest: str) -> bool:
    """True for a digest of the full decoded pixels (the only kind that proves identical pixels)."""
    return not digest.startswith(REDUCED_PREFIX)


def decode_reduced(data: bytes, name: str, max_pixels: int, budget: media.PixelBudget | None = None) -> Reduced:
    """The fingerprint's view of a file: a JPEG decoded to grayscale at reduced scale, else a full decode
    whose pixels stay counted in ``budget`` until the digest and the grayscale copy are taken."""
    fast = _jpeg_reduced(data, max_pixels)
    if fast is not None:
        return fast
    with media.decoded(data, name, max_pixels, budget) as decoded:
        return Reduced(gray=np.asarray(gray_image(decoded.pixels)), digest=pixel_digest(decoded.pixels))


def full_digest(data: bytes, name: str, max_pixels: int) -> str:
    """pixel_digest of the full RGB decode (media's), for files whose reduced digests collide."""
    return pixel_digest(media.decode(data, name, max_pixels).pixels)


_SOF = frozenset({0xC0, 0xC1, 0xC2, 0xC3, 0xC5, 0xC6, 0xC7, 0xC9, 0xCA, 0xCB, 0xCD, 0xCE, 0xCF})
_REDUCED_FLAGS = ((8, cv2.IMREAD_REDUCED_GRAYSCALE_8), (4, cv2.IMREAD_REDUCED_GRAYSCALE_4),
                  (2, cv2.IMREAD_REDUCED_GRAYSCALE_2))


def jpeg_header(data: bytes) -> tuple[int, int, int] | None:
    """(width, height, components) from a JPEG's frame header, read without decoding; None if not found."""
    for marker, at, length in media.jpeg_segments(data):
        if marker in _SOF and length >= 6 and at + 6 <= len(data):
            return int.from_bytes(data[at + 3:at + 5], "big"), int.from_bytes(data[at + 1:at + 3], "big"), data[at + 5]
    return None


def _jpeg_reduced(data: bytes, max_pixels: int) -> Reduced | None:
    """Baseline/progressive YCbCr or grayscale JPEGs within the pixel limit, decoded by libjpeg-turbo (OpenCV)
    straight to luma at 1/2, 1/4 or 1/8 scale with the EXIF orientation applied; None sends the file down the
    full, checked path (CMYK, anything odd, and anything OpenCV refuses: it returns nothing for a truncated
    or corrupt stream, so media.decode judges and reports those)."""
    header = jpeg_header(data)
    if header is None:
        return None
    width, height, components = header
    if components not in (1, 3) or not 0 < width * height <= max_pixels:
        return None
    short = min(width, height, REDUCED_SIDE)
    flag = next((f for k, f in _REDUCED_FLAGS if -(-width // k) >= short and -(-height // k) >= short),
                cv2.IMREAD_GRAYSCALE)
    try:
        gray = cv2.imdecode(np.frombuffer(data, np.uint8), flag)
    except Exception:  # any surprise from the fast path sends the file to media.decode, the gate
        return None
    if gray is None or gray.ndim != 2 or gray.size == 0:
        return None
    # A quarter-turn EXIF orientation shows the stored height as the width.
    turned = (gray.shape[0] > gray.shape[1]) != (height > width) and width != height
    full = (height, width) if turned else (width, height)
    h = hashlib.sha256(f"{full}|{gray.shape[::-1]}|".encode())
    h.update(gray.tobytes())
    return Reduced(gray=gray, digest=REDUCED_PREFIX + h.hexdigest())
