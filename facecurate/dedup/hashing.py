"""Fingerprints of one decoded image: perceptual hashes (imagehash), a pixel hash, and quality cues.

Everything here is a pure function of pixels (and, for the JPEG quality, of the file's header): the stage
decodes each file once (a JPEG at reduced scale, see :mod:`facecurate.dedup.decode`) and hands the grayscale
view here, and the catalog caches the result so a re-run hashes only new files.

Why each part exists:

- ``hash``: a 64-bit perceptual hash (pHash by default) of the whole frame, taken from one 64x64 area
  reduction of the grayscale image (every hash and the thumbnail reuse it, so the pixels are swept once).
  pHash is imagehash's rule computed as matrix products (:func:`phash_blocks`); the other algorithms call
  imagehash. It survives resizing, recompression, brightness changes and small overlays.
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
  crawled copies often lose a caption strip or a border on one side.
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

import cv2
import imagehash
import numpy as np
from PIL import Image

from facecurate.media import jpeg_segments

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
    h.update(arr.data.cast("B"))
    return h.hexdigest()


def _jpeg_luma_table(data: bytes) -> list[int] | None:
    """The first quantisation table (luminance) of a JPEG, read from its DQT segment without decoding."""
    for marker, at, length in jpeg_segments(data, limit=1 << 18):
        if marker != 0xDB:
            continue
        j, seg_end = at, at + length
        while j < seg_end:
            precision, table = data[j] >> 4, data[j] & 0x0F
            size = 128 if precision else 64
            values = data[j + 1:j + 1 + size]
            if table == 0 and len(values) == size:
                return list(values) if not precision else [int.from_bytes(values[k:k + 2], "big")
                                                             for k in range(0, size, 2)]
            j += 1 + size
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


def sharpness(gray: np.ndarray) -> float:
    """Variance of the Laplacian at a fixed long side: higher is crisper (blurred or upscaled copies lose)."""
    scale = SHARPNESS_SIDE / max(gray.shape)
    if scale < 1:
        gray = cv2.resize(gray, (max(1, round(gray.shape[1] * scale)), max(1, round(gray.shape[0] * scale))),
                          interpolation=cv2.INTER_AREA)
    _, std = cv2.meanStdDev(cv2.Laplacian(gray, cv2.CV_32F))
    return float(std[0, 0]) ** 2


def _dct_rows(n: int = HASH_SIZE * 4, k: int = HASH_SIZE) -> np.ndarray:
    """The first ``k`` rows of the unnormalised DCT-II matrix of size ``n`` (scipy.fftpack.dct's convention)."""
    x = np.arange(n)
    rows: np.ndarray = 2.0 * np.cos(np.pi * np.arange(k)[:, None] * (2 * x[None, :] + 1) / (2 * n))
    return rows


_DCT = _dct_rows()
_MIRROR_SIGN = (-1.0) ** np.arange(HASH_SIZE)   # DCT of a mirrored row: coefficient k changes sign when k is odd


def window_box(side: int, fraction: float, place: tuple[float, float]) -> tuple[float, float, float, float]:
    """(left, top, right, bottom) of a window covering ``fraction`` of each side of a ``side``-px square, with
    ``place`` = the share of the slack left of and above it (0.5, 0.5 is centred)."""
    slack = side * (1 - fraction)
    left, top = slack * place[0], slack * place[1]
    return left, top, left + side * fraction, top + side * fraction


def lanczos_matrix(size: int, start: float, stop: float, out: int) -> np.ndarray:
    """(out, size) weights of Pillow's LANCZOS resampling of [start, stop) to ``out`` px, kept in float
    (Pillow rounds to 8 bits after each pass; the hashes barely notice, see the tests)."""
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
def phash_operators(fraction: float) -> tuple[np.ndarray, np.ndarray]:
    """(rows, cols), each (1 + K, 8, 64): for the full frame and then each crop window (none when
    ``fraction`` is 0), pHash's 32 px Lanczos reduction followed by the first 8 DCT-II rows, so that block k's
    low frequencies are ``rows[k] @ base @ cols[k].T``: every hash of a photo in two batched products."""
    side, small = BASE_SIDE, HASH_SIZE * 4
    boxes = [(0.0, 0.0, float(side), float(side))]
    if 0 < fraction < 1:
        boxes += [window_box(side, fraction, place) for place in WINDOW_PLACES]
    rows = np.stack([_DCT @ lanczos_matrix(side, top, bottom, small) for _, top, _, bottom in boxes])
    cols = np.stack([_DCT @ lanczos_matrix(side, left, right, small) for left, _, right, _ in boxes])
    for a in (rows, cols):
        a.flags.writeable = False
    return rows, cols


def phash_blocks(base: np.ndarray, fraction: float) -> tuple[list[int], list[int]]:
    """pHash (imagehash's rule: low-frequency DCT block > its median) of the full frame and of each crop
    window, and of their mirrors, as two lists (full frame first).

    Why not imagehash itself: it runs two scipy DCTs per call and one resampling pass per window, which cost
    more than the rest of the fingerprint; only the 8x8 corner is used, and mirroring a row only flips the sign
    of its odd coefficients, so two batched matrix products give all ten hashes (same bits; tested)."""
    rows, cols = phash_operators(fraction)
    low = (rows @ base.astype(np.float64) @ cols.transpose(0, 2, 1)).reshape(rows.shape[0], -1)
    both = np.concatenate([low, (low.reshape(-1, HASH_SIZE, HASH_SIZE) * _MIRROR_SIGN).reshape(low.shape)])
    ordered = np.sort(both, axis=1)
    half = both.shape[1] // 2
    median = (ordered[:, half - 1] + ordered[:, half]) * 0.5
    words = np.packbits(both > median[:, None], axis=1).view(">u8").ravel().tolist()
    return words[:rows.shape[0]], words[rows.shape[0]:]


def _imagehash_blocks(base: np.ndarray, fraction: float, algorithm: str) -> tuple[list[int], list[int]]:
    """dHash, aHash or wHash of the full frame and each crop window, through imagehash and Pillow."""
    image = Image.fromarray(np.clip(np.rint(base), 0, 255).astype(np.uint8))
    frames = [image]
    if 0 < fraction < 1:
        frames += [image.resize(image.size, _LANCZOS, box=window_box(image.width, fraction, place))
                   for place in WINDOW_PLACES]
    fn = ALGORITHMS[algorithm]
    plain = [hash_to_int(fn(f, hash_size=HASH_SIZE)) for f in frames]
    mirror = [hash_to_int(fn(f.transpose(Image.Transpose.FLIP_LEFT_RIGHT), hash_size=HASH_SIZE)) for f in frames]
    return plain, mirror


def gray_image(pixels: np.ndarray) -> Image.Image:
    """RGB pixels to Pillow grayscale (ITU-R 601, as imagehash converts). Big photos are first box-reduced
    by an integer factor to about PREREDUCE_SIDE: the 64-px hashes and the 128-px sharpness cannot tell, and
    every later pass then touches a fraction of the pixels."""
    im = Image.fromarray(pixels)
    factor = max(im.size) // PREREDUCE_SIDE
    if factor >= 2:
        im = im.reduce(factor)
    return im.convert("L")


def base_array(gray: np.ndarray) -> np.ndarray:
    """The 64x64 float reduction every hash and the thumbnail are taken from (area averaging: each base pixel
    is the mean of the source pixels under it, which is all a 32 px hash needs and ten times cheaper than a
    Lanczos pass)."""
    return cv2.resize(gray.astype(np.float32), (BASE_SIDE, BASE_SIDE), interpolation=cv2.INTER_AREA)


@lru_cache(maxsize=1)
def _thumb_operator() -> np.ndarray:
    return lanczos_matrix(BASE_SIDE, 0.0, float(BASE_SIDE), THUMB_SIZE)


def thumbnail(base: np.ndarray) -> bytes:
    r = _thumb_operator()
    thumb: np.ndarray = np.clip(np.rint(r @ base @ r.T), 0, 255)
    return thumb.astype(np.uint8).tobytes()


def fingerprint(pixels: np.ndarray, algorithm: str, window: float, data: bytes | None = None) -> Fingerprint:
    """Every dedup fact about one decoded image; ``data`` (the file bytes) only feeds the JPEG quality cue."""
    return fingerprint_gray(np.asarray(gray_image(pixels)), pixel_digest(pixels), algorithm, window, data)


def fingerprint_gray(gray: np.ndarray, digest: str, algorithm: str, window: float,
                     data: bytes | None = None) -> Fingerprint:
    """The fingerprint from a grayscale view (a full or a reduced decode, see :mod:`facecurate.dedup.decode`)
    and the digest that goes with it."""
    if algorithm not in ALGORITHMS:
        raise ValueError(f"unknown hash algorithm {algorithm!r}; use one of {', '.join(ALGORITHMS)}")
    base = base_array(gray)
    if algorithm == "phash":
        plain, mirror = phash_blocks(base, window)
    else:
        plain, mirror = _imagehash_blocks(base, window, algorithm)
    return Fingerprint(hash=plain[0], hash_flip=mirror[0], windows=tuple(plain[1:]), window_flips=tuple(mirror[1:]),
                       pixels=digest, thumb=thumbnail(base), sharpness=sharpness(gray),
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
