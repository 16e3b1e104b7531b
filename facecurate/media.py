"""Safe image decoding, hashing and atomic writes: every stage reads and writes images through here.

Crawled and imported files are hostile input: HTML saved as .jpg, truncated downloads, 16-bit scans,
CMYK prints, palette GIFs, decompression bombs. Each one becomes an :class:`ImageError` with a short
reason code (stored in the catalog) and a message that names the file, never a crash.
"""

from __future__ import annotations

import hashlib
import io
import os
import shutil
import tempfile
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from facecurate.errors import ImageError

# We apply our own pixel limit before decoding; Pillow's global guard would otherwise raise or warn
# on its own threshold and hide which limit the user should change.
Image.MAX_IMAGE_PIXELS = None

PART_PREFIX = ".part-"
EXTENSIONS = frozenset({".jpg", ".jpeg", ".png", ".webp", ".bmp", ".tif", ".tiff", ".gif"})
MAGIC = (b"\xff\xd8", b"\x89PNG", b"GIF8", b"RIFF", b"BM", b"II*\0", b"MM\0*")
FORMAT_EXT = {"JPEG": "jpg", "PNG": "png", "WEBP": "webp", "BMP": "bmp", "TIFF": "tif", "GIF": "gif",
              "MPO": "jpg"}


@dataclass(frozen=True)
class Decoded:
    """A decoded image: RGB pixels after EXIF orientation, and the format it was stored in."""

    pixels: np.ndarray  # (H, W, 3) uint8 RGB
    format: str         # Pillow's format name, e.g. JPEG

    @property
    def width(self) -> int:
        return int(self.pixels.shape[1])

    @property
    def height(self) -> int:
        return int(self.pixels.shape[0])

    @property
    def extension(self) -> str:
        return FORMAT_EXT.get(self.format, self.format.lower())


def sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def jpeg_segments(data: bytes, limit: int | None = None) -> Iterator[tuple[int, int, int]]:
    """(marker, payload start, payload length) of each header segment of a JPEG, up to the first scan, read
    without decoding; stops quietly at anything malformed (the decoder is the judge of that)."""
    if not data.startswith(b"\xff\xd8"):
        return
    i, end = 2, len(data) if limit is None else min(len(data), limit)
    while i + 4 <= end:
        if data[i] != 0xFF:
            return
        marker = data[i + 1]
        if marker == 0xFF:  # fill byte
            i += 1
            continue
        if marker in (0xD9, 0xDA):  # end of image, start of scan
            return
        length = int.from_bytes(data[i + 2:i + 4], "big")
        yield marker, i + 4, length - 2
        i += 2 + length


def read_limited(path: Path, max_bytes: int) -> bytes:
    """Read a whole file, refusing files past ``max_bytes`` before loading them."""
    try:
        size = path.stat().st_size
        if size > max_bytes:
            raise ImageError(f"{path} is {size:,} bytes, over the {max_bytes:,}-byte limit "
                             f"([media] max_bytes in facecurate.toml).", "too_large")
        return path.read_bytes()
    except OSError as exc:
        raise ImageError(f"{path} cannot be read: {exc.strerror or exc}. Check that it exists and is readable.",
                         "unreadable") from exc


def decode(data: bytes, name: str, max_pixels: int, min_side: int = 1) -> Decoded:
    """Decode bytes to RGB uint8 with EXIF orientation applied, or raise ImageError with a reason."""
    if not data:
        raise ImageError(f"{name} is empty (0 bytes): the download or copy did not complete.", "empty")
    head = data[:512].lstrip().lower()
    if head.startswith((b"<!doctype", b"<html", b"<?xml", b"<svg", b"<head", b"<body", b"{", b"<")):
        raise ImageError(f"{name} is text or HTML, not an image (a web page saved under an image name).",
                         "not_an_image")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            im = Image.open(io.BytesIO(data))
            fmt = im.format or "UNKNOWN"
            width, height = im.size
            if width * height > max_pixels:
                raise ImageError(f"{name} is {width}x{height} = {width * height:,} pixels, over the "
                                 f"{max_pixels:,}-pixel limit ([media] max_pixels): refused as a possible "
                                 f"decompression bomb.", "too_large")
            im.seek(0)  # animated GIF/WebP: the first frame
            im.load()
            pixels = _to_rgb(ImageOps.exif_transpose(im) or im)
    except ImageError:
        raise
    except UnidentifiedImageError as exc:
        if data.startswith(MAGIC):
            raise ImageError(f"{name} starts like an image but is corrupt and cannot be decoded.", "corrupt") from exc
        raise ImageError(f"{name} is not an image format facecurate reads (jpg, png, webp, bmp, tiff, gif).",
                         "not_an_image") from exc
    except (OSError, SyntaxError, ValueError, EOFError, Image.DecompressionBombError) as exc:
        reason = "truncated" if "truncated" in str(exc).lower() else "corrupt"
        raise ImageError(f"{name} is {reason} and cannot be decoded ({exc}).", reason) from exc
    if min(pixels.shape[:2]) < min_side:
        raise ImageError(f"{name} is {pixels.shape[1]}x{pixels.shape[0]}, below the {min_side}-px minimum "
                         f"side ([media] min_side).", "too_small")
    return Decoded(pixels=pixels, format=fmt)


def _to_rgb(im: Image.Image) -> np.ndarray:
    """Any Pillow mode to RGB uint8: 16-bit and float scaled, alpha composited on white, CMYK converted."""
    if im.mode in ("I;16", "I;16B", "I;16L", "I", "F"):
        arr = np.asarray(im, dtype=np.float64)
        hi = 65535.0 if im.mode.startswith("I;16") or arr.max() > 255 else 255.0
        gray = np.clip(arr / hi * 255.0 + 0.5, 0, 255).astype(np.uint8)
        return np.repeat(gray[:, :, None], 3, axis=2)
    if im.mode == "P":
        im = im.convert("RGBA" if "transparency" in im.info else "RGB")
    if im.mode in ("RGBA", "LA", "PA", "RGBa", "La"):
        rgba = im.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        im = Image.alpha_composite(background, rgba)
    return np.ascontiguousarray(np.asarray(im.convert("RGB"), dtype=np.uint8))


def load_rgb(path: Path, max_pixels: int, max_bytes: int) -> Decoded:
    return decode(read_limited(path, max_bytes), str(path), max_pixels)


def atomic_write(path: Path, data: bytes, tmp_dir: Path | None = None) -> None:
    """Write to a temp file in the same filesystem, fsync, then rename: never a half-written file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp_parent = tmp_dir or path.parent
    tmp_parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=tmp_parent, prefix=f"{PART_PREFIX}{os.getpid()}-", suffix=path.suffix)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def remove_stale_parts(folder: Path) -> int:
    """Delete temp files (and staging folders, e.g. an export layout being built) left by a killed process
    (their pid is gone); returns how many were removed."""
    removed = 0
    for tmp in folder.glob(f"{PART_PREFIX}*"):
        try:
            pid = int(tmp.name[len(PART_PREFIX):].split("-", 1)[0])
            os.kill(pid, 0)
            continue  # the writer is still alive
        except (ValueError, ProcessLookupError):
            pass
        except PermissionError:
            continue
        if tmp.is_dir() and not tmp.is_symlink():
            shutil.rmtree(tmp, ignore_errors=True)
        else:
            tmp.unlink(missing_ok=True)
        removed += 1
    return removed


def encode(pixels: np.ndarray, image_format: str, jpeg_quality: int = 95) -> bytes:
    """RGB uint8 to JPEG or PNG bytes (OpenCV: several times faster than Pillow for large crops)."""
    import cv2

    bgr = cv2.cvtColor(pixels, cv2.COLOR_RGB2BGR)
    if image_format == "png":
        ok, buf = cv2.imencode(".png", bgr, [cv2.IMWRITE_PNG_COMPRESSION, 3])
    else:
        ok, buf = cv2.imencode(".jpg", bgr, [cv2.IMWRITE_JPEG_QUALITY, int(jpeg_quality)])
    if not ok:
        raise ImageError(f"OpenCV could not encode a {pixels.shape} image as {image_format}.", "encode")
    return buf.tobytes()
