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
- ``windows`` / ``window_flips``: hashes of four windows covering the ``crop_window`` share of each side (and
  their mirrors). A copy with a few percent trimmed off its edges is a zoom of the original, which moves pHash
  bits; its full frame lines up with one of the original's windows instead. Crawled copies are trimmed
  unevenly (a caption strip off the bottom, a border off one side), so one central window is not enough: a
  5% trim all on one side sits 9-12 bits from it. Four windows in a 2x2 grid (slack split 15/85 and 85/15 on
  each axis) leave any split within 1.75% of a side of one of them. On 290 dev copies (ordinary_faces, half of
  them mirrored) trimmed 5% with the split at random, 97.9% match (frame within 8 bits or a window within 6);
  with the whole trim in one corner, 98.6%. Placements at 20/80 gave 98.3% and 92.4%: corners matter, as
  crawled copies often lose a caption strip or a border on one side. For pHash the windows are matrix
  products on the 64x64 base, no resampling pass.
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
from functools import lru_cache

import imagehash
import numpy as np
from PIL import Image

HASH_SIZE = 8                 # 8x8 = 64 bits: what the search index is built for
THUMB_SIZE = 24               # verification thumbnail side: big enough to tell aligned faces apart, 576 bytes
SHARPNESS_SIDE = 128          # sharpness is measured at this long side so copies of any size compare fairly
                              # (a reduced JPEG decode has 64-127 px per side or more, see dedup.decode)
PREREDUCE_SIDE = 512          # big photos are box-reduced to about this side first (hashes barely move)
BASE_SIDE = 64                # hashes and thumbnail all come from one 64x64 reduction: one pass over the pixels
WINDOW_PLACES = ((0.15, 0.15), (0.85, 0.15), (0.15, 0.85), (0.85, 0.85))  # share of the slack left/above each window
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
    windows: tuple[int, ...]        # one per WINDOW_PLACES position; empty when crop windows are off
    window_flips: tuple[int, ...]
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


def window_box(side: int, fraction: float, place: tuple[float, float]) -> tuple[float, float, float, float]:
    """(left, top, right, bottom) of a window covering ``fraction`` of each side of a ``side``-px square, with
    ``place`` = the share of the slack left of and above it (0.5, 0.5 is centred)."""
    slack = side * (1 - fraction)
    left, top = slack * place[0], slack * place[1]
    return left, top, left + side * fraction, top + side * fraction


def _lanczos_matrix(size: int, start: float, stop: float, out: int) -> np.ndarray:
    """(out, size) weights of Pillow's LANCZOS resampling of [start, stop) to ``out`` px, in float (Pillow's
    own pass rounds to 8 bits in between; a gray level off moves no hash bit in practice, and is tested)."""
    scale = (stop - start) / out
    support_scale = max(scale, 1.0)
    support = 3.0 * support_scale
    m = np.zeros((out, size))
    for i in range(out):
        centre = start + (i + 0.5) * scale
        lo, hi = max(int(centre - support + 0.5), 0), min(int(centre + support + 0.5), size)
        x = (np.arange(lo, hi) - centre + 0.5) / support_scale
        w = np.sinc(x) * np.sinc(x / 3.0) * (np.abs(x) < 3.0)
        m[i, lo:hi] = w / w.sum()
    return m


@lru_cache(maxsize=8)
def _window_operators(fraction: float) -> tuple[np.ndarray, np.ndarray]:
    """Per window, (8, 64) row and column operators: the 32 px Lanczos reduction of the window followed by the
    first 8 DCT rows, so a window's low-frequency block is ``rows @ base @ cols.T``."""
    side, small = BASE_SIDE, HASH_SIZE * 4
    rows, cols = [], []
    for place in WINDOW_PLACES:
        left, top, right, bottom = window_box(side, fraction, place)
        cols.append(_DCT @ _lanczos_matrix(side, left, right, small))
        rows.append(_DCT @ _lanczos_matrix(side, top, bottom, small))
    out = np.stack(rows), np.stack(cols)
    for a in out:
        a.flags.writeable = False
    return out


def window_hashes(base: Image.Image, fraction: float, algorithm: str) -> tuple[tuple[int, ...], tuple[int, ...]]:
    """(hashes, mirror hashes) of the WINDOW_PLACES windows covering ``fraction`` of each side of the base.

    For pHash all four come from two batched matrix products on the base (see ``_window_operators``); the
    mirror of a window flips the sign of its odd horizontal coefficients, as in :func:`phash_pair`."""
    if algorithm == "phash":
        rows, cols = _window_operators(fraction)
        low = (rows @ np.asarray(base, dtype=np.float64) @ cols.transpose(0, 2, 1)).reshape(len(WINDOW_PLACES), -1)
        mirror = (low.reshape(-1, HASH_SIZE, HASH_SIZE) * _MIRROR_SIGN).reshape(low.shape)
        both = np.concatenate([low, mirror])
        bits = both > np.median(both, axis=1, keepdims=True)
        words = np.packbits(bits, axis=1).view(">u8").ravel().tolist()
        k = len(WINDOW_PLACES)
        return tuple(words[:k]), tuple(words[k:])
    pairs = [frame_hashes(base.resize(base.size, _LANCZOS, box=window_box(base.width, fraction, place)), algorithm)
             for place in WINDOW_PLACES]
    return tuple(h for h, _ in pairs), tuple(f for _, f in pairs)


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
    w: tuple[int, ...] = ()
    wf: tuple[int, ...] = ()
    if 0 < window < 1:
        w, wf = window_hashes(base, window, algorithm)
    return Fingerprint(hash=h, hash_flip=hf, windows=w, window_flips=wf, pixels=digest,
                       thumb=thumbnail(base), sharpness=sharpness(gray),
                       jpeg_quality=jpeg_quality(data) if data is not None else UNKNOWN_QUALITY)


def windows_to_bytes(windows: tuple[int, ...], flips: tuple[int, ...]) -> bytes | None:
    """The catalog's ``windows`` blob: each window hash, then each mirror, 8 bytes big-endian (None when off)."""
    if not windows:
        return None
    return b"".join(v.to_bytes(8, "big") for v in (*windows, *flips))


def windows_from_bytes(blobs: list[bytes]) -> tuple[np.ndarray, np.ndarray]:
    """(N, K) window hashes and (N, K) mirror hashes, uint64, from N catalog blobs of equal length."""
    if not blobs:
        return np.zeros((0, 0), np.uint64), np.zeros((0, 0), np.uint64)
    words = np.frombuffer(b"".join(blobs), dtype=">u8").astype(np.uint64).reshape(len(blobs), -1)
    k = words.shape[1] // 2
    return words[:, :k], words[:, k:]
