"""Fingerprints of one decoded image: perceptual hashes (imagehash), a pixel hash, and quality cues.

Everything here is a pure function of pixels (and, for the JPEG quality, of the file's header): the stage
decodes each file once (a JPEG at reduced scale, see :mod:`facecurate.dedup.decode`) and hands the grayscale
view here, and the catalog caches the result so a re-run hashes only new files.

Why each part exists:

- ``hash``: a 64-bit perceptual hash (pHash by default) of the whole frame, computed by ``imagehash`` on
  one 64x64 LANCZOS reduction of the grayscale image (every hash and the thumbnail reuse that reduction, so
  the pixels are swept once). It survives resizing, recompression, brightness changes and small overlays.
- ``hash_flip``: the same hash of the horizontal mirror. Faces are re-posted mirrored all the time and a
  plain pHash of a mirrored copy sits about 30 bits away; matching against the flip catches them.
- ``window`` / ``window_flip``: the hash of the central ``crop_window`` share of the frame (and its mirror).
  A copy with a few percent trimmed off its edges is a zoom of the original, which moves pHash bits; its
  full frame lines up with the original's central window instead, so indexing that window catches crops.
- ``pixels``: sha256 over the decoded RGB pixels and their shape: the same picture saved as PNG and as
  lossless WebP, or with different EXIF, has different file bytes but identical pixels. (For a JPEG read at
  reduced scale it is a digest of that reduced decode, marked ``r``: the stage decodes in full only where
  such digests collide.)
- ``thumb``: a 24x24 grayscale thumbnail. Hash distances alone cannot separate a cropped copy (10-20 bits)
  from two different faces that are aligned the same way (8-12 bits); an aligned correlation of thumbnails
  can (see :mod:`facecurate.dedup.verify`).
- ``sharpness`` and ``jpeg_quality``: cues for choosing which copy to keep.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from dataclasses import dataclass

import imagehash
import numpy as np
from PIL import Image

HASH_SIZE = 8                 # 8x8 = 64 bits: what the search index is built for
THUMB_SIZE = 24               # verification thumbnail side: big enough to tell aligned faces apart, 576 bytes
SHARPNESS_SIDE = 128          # sharpness is measured at this long side so copies of any size compare fairly
                              # (a reduced JPEG decode has 64-127 px per side or more, see dedup.decode)
PREREDUCE_SIDE = 512          # big photos are box-reduced to about this side first (hashes barely move)
BASE_SIDE = 64                # hashes and thumbnail all come from one 64x64 reduction: one pass over the pixels
LOSSLESS_QUALITY = 100        # PNG, BMP, TIFF, lossless WebP: nothing was thrown away
UNKNOWN_QUALITY = 75          # lossy formats whose encoder quality cannot be read (the usual default)

_LANCZOS = Image.Resampling.LANCZOS

# imagehash algorithms that give 64 bits at hash_size 8 (colorhash and crop_resistant_hash do not).
ALGORITHMS: dict[str, Callable[..., imagehash.ImageHash]] = {
    "phash": imagehash.phash,
    "dhash": imagehash.dhash,
    "ahash": imagehash.average_hash,
    "whash": imagehash.whash,
}

# The IJG (libjpeg) standard luminance table: encoders scale it by quality, so its sum recovers the quality.
_IJG_LUMA_SUM = sum((16, 11, 10, 16, 24, 40, 51, 61, 12, 12, 14, 19, 26, 58, 60, 55, 14, 13, 16, 24, 40, 57, 69,
                     56, 14, 17, 22, 29, 51, 87, 80, 62, 18, 22, 37, 56, 68, 109, 103, 77, 24, 35, 55, 64, 81,
                     104, 113, 92, 49, 64, 78, 87, 103, 121, 120, 101, 72, 92, 95, 98, 112, 100, 103, 99))


@dataclass(frozen=True)
class Fingerprint:
    """What dedup keeps about one image or crop (hashes are unsigned 64-bit ints)."""

    hash: int
    hash_flip: int
    window: int | None
    window_flip: int | None
    pixels: str
    thumb: bytes
    sharpness: float
    jpeg_quality: int


def hash_to_int(h: imagehash.ImageHash) -> int:
    """An 8x8 ImageHash as an unsigned int, row-major, first bit most significant (as str(h) reads)."""
    bits = np.asarray(h.hash, dtype=bool).ravel()
    if bits.size != 64:
        raise ValueError(f"expected a 64-bit hash, got {bits.size} bits")
    return int.from_bytes(np.packbits(bits).tobytes(), "big")


def to_signed(v: int) -> int:
    """Unsigned 64-bit to SQLite's signed INTEGER (two's complement), and back with :func:`to_unsigned`."""
    return v - (1 << 64) if v >= 1 << 63 else v


def to_unsigned(v: int) -> int:
    return v & 0xFFFFFFFFFFFFFFFF


def pixel_digest(pixels: np.ndarray) -> str:
    """sha256 of the shape and the raw bytes of a decoded image: equal only for identical pixels."""
    arr = np.ascontiguousarray(pixels)
    h = hashlib.sha256(f"{arr.shape}|{arr.dtype}|".encode())
    h.update(memoryview(arr).cast("B"))
    return h.hexdigest()


def _jpeg_luma_table(data: bytes) -> list[int] | None:
    """The first quantisation table (luminance) of a JPEG, read from its DQT segment without decoding."""
    if not data.startswith(b"\xff\xd8"):
        return None
    i, end = 2, min(len(data), 1 << 18)
    while i + 4 <= end:
        if data[i] != 0xFF:
            return None
        marker = data[i + 1]
        if marker == 0xFF:  # fill byte
            i += 1
            continue
        if marker in (0xD9, 0xDA):  # end of image, start of scan: no table before it
            return None
        length = int.from_bytes(data[i + 2:i + 4], "big")
        if marker == 0xDB:
            j, seg_end = i + 4, i + 2 + length
            while j < seg_end:
                precision, table = data[j] >> 4, data[j] & 0x0F
                size = 128 if precision else 64
                values = data[j + 1:j + 1 + size]
                if table == 0 and len(values) == size:
                    return list(values) if not precision else [int.from_bytes(values[k:k + 2], "big")
                                                                 for k in range(0, size, 2)]
                j += 1 + size
        i += 2 + length
    return None


def jpeg_quality(data: bytes) -> int:
    """Estimated encoder quality of a JPEG from its luminance table (IJG scaling); lossless formats = 100."""
    luma = _jpeg_luma_table(data)
    if luma is None:
        fmt = _format(data)
        if fmt in ("PNG", "BMP", "TIFF") or (fmt == "WEBP" and b"VP8L" in data[:64]):
            return LOSSLESS_QUALITY
        return UNKNOWN_QUALITY
    scale = 100.0 * float(sum(luma)) / _IJG_LUMA_SUM
    quality = (200.0 - scale) / 2.0 if scale <= 100.0 else 5000.0 / scale
    return int(min(100, max(1, round(quality))))


def _format(data: bytes) -> str | None:
    """Container format from the magic bytes (enough to tell lossless files from lossy ones)."""
    if data.startswith(b"\x89PNG"):
        return "PNG"
    if data.startswith(b"BM"):
        return "BMP"
    if data.startswith((b"II*\0", b"MM\0*")):
        return "TIFF"
    if data.startswith(b"RIFF") and data[8:12] == b"WEBP":
        return "WEBP"
    return None


def sharpness(gray: Image.Image) -> float:
    """Variance of the Laplacian at a fixed long side: higher is crisper (blurred or upscaled copies lose)."""
    import cv2

    arr = np.asarray(gray)
    scale = SHARPNESS_SIDE / max(arr.shape)
    if scale < 1:
        arr = cv2.resize(arr, (max(1, round(arr.shape[1] * scale)), max(1, round(arr.shape[0] * scale))),
                         interpolation=cv2.INTER_AREA)
    _, std = cv2.meanStdDev(cv2.Laplacian(arr, cv2.CV_32F))
    return float(std[0, 0]) ** 2


def _dct_rows(n: int = HASH_SIZE * 4, k: int = HASH_SIZE) -> np.ndarray:
    """The first ``k`` rows of the unnormalised DCT-II matrix of size ``n`` (scipy.fftpack.dct's convention)."""
    x = np.arange(n)
    return 2.0 * np.cos(np.pi * np.arange(k)[:, None] * (2 * x[None, :] + 1) / (2 * n))


_DCT = _dct_rows()
_MIRROR_SIGN = (-1.0) ** np.arange(HASH_SIZE)   # DCT of a mirrored row: coefficient k changes sign when k is odd


def _bits_to_int(bits: np.ndarray) -> int:
    return int.from_bytes(np.packbits(bits.ravel()).tobytes(), "big")


def phash_pair(small: Image.Image) -> tuple[int, int]:
    """imagehash.phash of a 32x32 grayscale image and of its mirror, from one DCT.

    Why not call imagehash twice: it runs two scipy DCTs per call, which cost more than the rest of the
    fingerprint; only the 8x8 low-frequency corner is used, and mirroring a row flips the sign of its odd
    coefficients, so one 8x32 @ 32x32 @ 32x8 product gives both hashes (the same bits as imagehash; tested).
    """
    pixels = np.asarray(small, dtype=np.float64)
    low = _DCT @ pixels @ _DCT.T
    mirror = low * _MIRROR_SIGN[None, :]
    return _bits_to_int(low > np.median(low)), _bits_to_int(mirror > np.median(mirror))


def frame_hashes(gray: Image.Image, algorithm: str) -> tuple[int, int]:
    """(hash, hash of the horizontal mirror) of a grayscale image (the 64x64 base, or a window of it)."""
    if algorithm == "phash":
        side = HASH_SIZE * 4   # imagehash.phash reduces to 32x32 itself: the same reduction, done once here
        return phash_pair(gray.resize((side, side), _LANCZOS))
    fn = ALGORITHMS[algorithm]
    mirror = gray.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
    return hash_to_int(fn(gray, hash_size=HASH_SIZE)), hash_to_int(fn(mirror, hash_size=HASH_SIZE))


def window_hashes(base: Image.Image, fraction: float, algorithm: str) -> tuple[int, int]:
    """(hash, mirror hash) of the centred window covering ``fraction`` of each side of the base.

    For pHash the window is resampled straight to 32x32 (one resize instead of two)."""
    if algorithm == "phash":
        w, h = base.size
        dx, dy = w * (1 - fraction) / 2, h * (1 - fraction) / 2
        side = HASH_SIZE * 4
        return phash_pair(base.resize((side, side), _LANCZOS, box=(dx, dy, w - dx, h - dy)))
    return frame_hashes(central_window(base, fraction), algorithm)


def central_window(base: Image.Image, fraction: float) -> Image.Image:
    """The centred window covering ``fraction`` of each side, resampled (sub-pixel box) to the base size."""
    w, h = base.size
    dx, dy = w * (1 - fraction) / 2, h * (1 - fraction) / 2
    return base.resize((w, h), _LANCZOS, box=(dx, dy, w - dx, h - dy))


def gray_image(pixels: np.ndarray) -> Image.Image:
    """RGB pixels to Pillow grayscale (ITU-R 601, as imagehash converts). Big photos are first box-reduced
    by an integer factor to about PREREDUCE_SIDE: the 64-px hashes and the 256-px sharpness cannot tell, and
    every later pass then touches a fraction of the pixels."""
    im = Image.fromarray(pixels)
    factor = max(im.size) // PREREDUCE_SIDE
    if factor >= 2:
        im = im.reduce(factor)
    return im.convert("L")


def base_image(gray: Image.Image) -> Image.Image:
    """The 64x64 reduction every hash is taken from (pHash then reduces it to its own 32x32)."""
    return gray.resize((BASE_SIDE, BASE_SIDE), _LANCZOS)


def thumbnail(base: Image.Image) -> bytes:
    return np.asarray(base.resize((THUMB_SIZE, THUMB_SIZE), _LANCZOS), dtype=np.uint8).tobytes()


def fingerprint(pixels: np.ndarray, algorithm: str = "phash", window: float = 0.95,
                data: bytes | None = None) -> Fingerprint:
    """Every dedup fact about one decoded image; ``data`` (the file bytes) only feeds the JPEG quality cue."""
    return fingerprint_gray(gray_image(pixels), pixel_digest(pixels), algorithm, window, data)


def fingerprint_gray(gray: Image.Image, digest: str, algorithm: str = "phash", window: float = 0.95,
                     data: bytes | None = None) -> Fingerprint:
    """The fingerprint from a grayscale view (a full or a reduced decode, see :mod:`facecurate.dedup.decode`)
    and the digest that goes with it."""
    if algorithm not in ALGORITHMS:
        raise ValueError(f"unknown hash algorithm {algorithm!r}; use one of {', '.join(ALGORITHMS)}")
    base = base_image(gray)
    h, hf = frame_hashes(base, algorithm)
    w = wf = None
    if 0 < window < 1:
        w, wf = window_hashes(base, window, algorithm)
    return Fingerprint(hash=h, hash_flip=hf, window=w, window_flip=wf, pixels=digest,
                       thumb=thumbnail(base), sharpness=sharpness(gray),
                       jpeg_quality=jpeg_quality(data) if data is not None else UNKNOWN_QUALITY)
