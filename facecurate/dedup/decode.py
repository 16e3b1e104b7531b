"""Decode a file just far enough for its fingerprint: JPEGs at a reduced scale, straight to grayscale.

Why: every dedup fact about a photo is taken at 64 px (hashes, thumbnail) or at most 128 px (sharpness), yet a full
decode of a 12-megapixel JPEG to RGB costs tens of milliseconds. libjpeg can run its inverse DCT at 1/2, 1/4
or 1/8 scale and emit only the luma channel (Pillow's ``Image.draft``), so a reduced grayscale decode costs a
fraction of that and every hash reads the same few pixels.

The one fact that needs the full picture is "identical pixels" (issue 4, must-have 1). A reduced decode
cannot prove it, so its digest is marked *reduced* (prefix ``r``): two files whose reduced digests differ
cannot hold identical pixels, and the few whose reduced digests (or near hashes) collide are decoded in full
by :func:`full_digest` before they are called pixel twins (see :func:`facecurate.dedup.core.twin_candidates`).
Everything else — PNG, WebP, GIF, CMYK or odd JPEGs, and any file the fast path chokes on — goes through
:func:`facecurate.media.decode`, so its safety checks and error messages stay the single source of truth.
"""

from __future__ import annotations

import hashlib
import io
import warnings
from dataclasses import dataclass

from PIL import Image, ImageOps

from facecurate import media
from facecurate.dedup.hashing import gray_image, pixel_digest

REDUCED_SIDE = 64           # the draft keeps at least this many pixels per side (the hashes work at 64 px)
REDUCED_PREFIX = "r"        # a digest of a reduced decode: equal pixels imply equal digests, not the reverse
_ORIENTATION = 0x0112


@dataclass(frozen=True)
class Reduced:
    """A grayscale view of a file (at least REDUCED_SIDE per side when the file is that big) and its digest."""

    gray: Image.Image
    digest: str            # pixel_digest of the full RGB decode, or REDUCED_PREFIX + digest of the reduced one


def is_exact(digest: str) -> bool:
    """True for a digest of the full decoded pixels (the only kind that proves identical pixels)."""
    return not digest.startswith(REDUCED_PREFIX)


def decode_reduced(data: bytes, name: str, max_pixels: int) -> Reduced:
    """The fingerprint's view of a file: a JPEG drafted to grayscale at reduced scale, else a full decode."""
    fast = _jpeg_draft(data, max_pixels)
    if fast is not None:
        return fast
    decoded = media.decode(data, name, max_pixels)
    return Reduced(gray=gray_image(decoded.pixels), digest=pixel_digest(decoded.pixels))


def full_digest(data: bytes, name: str, max_pixels: int) -> str:
    """pixel_digest of the full RGB decode (media's), for files whose reduced digests collide."""
    return pixel_digest(media.decode(data, name, max_pixels).pixels)


def _jpeg_draft(data: bytes, max_pixels: int) -> Reduced | None:
    """Baseline/progressive YCbCr or grayscale JPEGs only; None sends the file down the full, checked path
    (anything unusual, over the pixel limit, or failing here is media.decode's to judge and report)."""
    if not data.startswith(b"\xff\xd8"):
        return None
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            im = Image.open(io.BytesIO(data))
            if im.format != "JPEG" or im.mode not in ("RGB", "L") or im.width * im.height > max_pixels:
                return None
            full = im.size
            im.draft("L", (min(REDUCED_SIDE, im.width), min(REDUCED_SIDE, im.height)))
            im.load()
            if im.mode != "L":
                return None
            orientation = im.getexif().get(_ORIENTATION, 1)
            if orientation in range(2, 9):
                im = ImageOps.exif_transpose(im)
                if orientation >= 5:  # a quarter turn: the displayed width is the stored height
                    full = (full[1], full[0])
    except Exception:
        return None
    h = hashlib.sha256(f"{full}|{im.size}|".encode())
    h.update(im.tobytes())
    return Reduced(gray=im, digest=REDUCED_PREFIX + h.hexdigest())

