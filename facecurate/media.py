"""Safe image decoding, hashing and atomic writes: every stage reads and writes images through here.

Crawled and imported files are hostile input: HTML saved as .jpg, truncated downloads, 16-bit scans,
CMYK prints, palette GIFs, decompression bombs, other formats under an image name, FIFOs and device links in
a user's folder. This module is the one gate they all pass (issue 13): the format is sniffed from the bytes
and must be on an explicit allow-list, every Pillow plugin outside that list is unregistered so none can run
(EPS would start Ghostscript, DDS/SPIDER/PSD/... parse attacker-chosen headers with little checking), only
regular files are read and never past ``[media] max_bytes``, and *any* decoder exception becomes an
:class:`ImageError` with a short reason code (stored in the catalog) and a message naming the file.
"""

from __future__ import annotations

import ctypes
import errno
import hashlib
import io
import math
import multiprocessing
import os
import shutil
import stat
import sys
import tempfile
import threading
import warnings
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager, suppress
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol, TypeVar

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from facecurate.errors import ImageError

# We apply our own pixel limit before decoding; Pillow's global guard would otherwise raise or warn
# on its own threshold and hide which limit the user should change.
Image.MAX_IMAGE_PIXELS = None
_T = TypeVar("_T")

PART_PREFIX = ".part-"
EXTENSIONS = frozenset({".jpg", ".jpeg", ".jpe", ".jfif", ".png", ".apng", ".webp", ".bmp", ".tif", ".tiff", ".gif"})
# Photos in formats facecurate does not read (a phone's HEIC, a Photoshop file): import walks them too, so each is
# recorded as unsupported_format with a "convert it" message instead of a folder of them importing nothing, silently.
OTHER_IMAGE_EXTENSIONS = frozenset({".heic", ".heif", ".avif", ".jxl", ".psd", ".jp2", ".j2k", ".ico", ".tga",
                                    ".exr", ".hdr", ".dds", ".qoi", ".pcx", ".ppm", ".pgm", ".pbm", ".xcf"})
# The formats facecurate reads (README: jpg, png, webp, bmp, tiff, gif): Pillow's names, and the leading bytes
# that identify each. The order matters only for reading; no two signatures overlap.
ALLOWED_FORMATS = ("JPEG", "PNG", "WEBP", "GIF", "BMP", "TIFF")
_SIGNATURES: tuple[tuple[bytes, str], ...] = (
    (b"\xff\xd8\xff", "JPEG"), (b"\x89PNG\r\n\x1a\n", "PNG"), (b"GIF87a", "GIF"), (b"GIF89a", "GIF"),
    (b"BM", "BMP"), (b"II*\0", "TIFF"), (b"MM\0*", "TIFF"), (b"II+\0", "TIFF"), (b"MM\0+", "TIFF"),
)
# Formats recognised only to say what a refused file is ("a PSD file", not "not an image"); never decoded.
_FOREIGN: tuple[tuple[bytes, str], ...] = (
    (b"%!PS", "EPS"), (b"\xc5\xd0\xd3\xc6", "EPS"), (b"DDS ", "DDS"), (b"8BPS", "PSD"), (b"\0\0\1\0", "ICO"),
    (b"\0\0\2\0", "CUR"), (b"\x01\xda", "SGI"), (b"icns", "ICNS"), (b"qoif", "QOI"), (b"\xffO\xffQ", "JPEG 2000"),
    (b"\0\0\0\x0cjP  ", "JPEG 2000"), (b"FORM", "IFF"), (b"\x59\xa6\x6a\x95", "Sun raster"),
    (b"gimp xcf", "XCF"), (b"#?RADIANCE", "HDR"), (b"\x76\x2f\x31\x01", "OpenEXR"), (b"%PDF", "PDF"),
    (b"Image type:", "IM"), (b"BLP", "BLP"),
)
FORMAT_EXT = {"JPEG": "jpg", "PNG": "png", "WEBP": "webp", "BMP": "bmp", "TIFF": "tif", "GIF": "gif",
              "MPO": "jpg"}  # MPO: a camera's multi-picture JPEG, which Pillow's JPEG reader hands back as such


def _restrict_pillow() -> None:
    """Load every plugin once, then unregister the openers of all formats but ours.

    ``Image.init`` runs at most once per process, so a plugin removed here is never registered again, and
    ``Image.open`` anywhere in the process (thumbnails, the demo, a library) can only reach these readers."""
    Image.init()
    for name in list(Image.OPEN):
        if name not in ALLOWED_FORMATS:
            del Image.OPEN[name]
    Image.ID[:] = [name for name in Image.ID if name in Image.OPEN]


_restrict_pillow()

# Pillow warns about the files it reads (corrupt EXIF, a malformed MPO, palette transparency): facts about
# hostile input, reported through ImageError or not at all, never printed over the progress bars. One filter
# set here rather than catch_warnings around each decode, which swaps process-wide state and is not thread-safe.
warnings.filterwarnings("ignore", module=r"PIL(\.|$)")
warnings.filterwarnings("ignore", module=r"facecurate\.media$")

M_ARENA_MAX = -8  # glibc's mallopt parameter number
MALLOC_ARENAS = 2


def _few_malloc_arenas() -> None:
    """Cap glibc's malloc arenas for the process (unless MALLOC_ARENA_MAX says otherwise).

    glibc gives each thread that allocates its own arena (up to 8 per core) and seldom hands a freed image's
    blocks back from one: 16 download threads validating 100 MP PNGs strictly one at a time under the pixel
    budget still grew to 1.5 GB, about one image per thread. With two arenas the same run peaks near 0.2 GB;
    the buffers here are large, so threads sharing arenas do not queue on their locks."""
    if not sys.platform.startswith("linux") or "MALLOC_ARENA_MAX" in os.environ:
        return
    with suppress(OSError, AttributeError):  # not glibc (musl has no mallopt): nothing to tune
        ctypes.CDLL(None).mallopt(M_ARENA_MAX, MALLOC_ARENAS)


_few_malloc_arenas()


def sniff(data: bytes) -> str | None:
    """The allow-listed format these bytes are in, judged from their first bytes alone; None for any other."""
    for magic, name in _SIGNATURES:
        if data.startswith(magic):
            return name
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "WEBP"
    return None


def _foreign(data: bytes) -> str | None:
    """The name of a recognisable format facecurate does not read, for the error message."""
    if data[4:8] == b"ftyp":
        return "HEIF/AVIF/MP4 (ISO media)"
    if data[:1] == b"P" and data[1:2] in b"1234567fF" and len(data) > 2 and data[2:3].isspace():
        return "PPM/PGM/PBM"
    if data[:1] == b"\x0a" and data[1:2] in (b"\0", b"\2", b"\3", b"\4", b"\5"):
        return "PCX"
    return next((name for magic, name in _FOREIGN if data.startswith(magic)), None)


class _Counter(Protocol):
    value: int


class PixelBudget:
    """How many decoded pixels a stage may hold at once, across its threads (or forked worker processes).

    Why pixels and not files: one 97 KB PNG can decode to 10,000 x 10,000 pixels, so a pool of threads each
    decoding "one file" has no memory bound at all. A decode holds its pixel count from the moment the header
    is read until its pixels are released; anyone who would go over the budget waits. A single image larger
    than the whole budget is let through alone (capped at the budget), so nothing ever waits forever.
    """

    def __init__(self, megapixels: float, *, processes: bool = False) -> None:
        """``processes``: share the count with worker processes forked after this call (dedup's pool)."""
        self.capacity = max(1, int(megapixels * 1_000_000))
        self._used: _Counter
        if processes:
            ctx = multiprocessing.get_context("fork")
            self._cond: threading.Condition = ctx.Condition()  # type: ignore[assignment]
            self._used = ctx.RawValue("q", 0)
        else:
            self._cond = threading.Condition()
            self._used = _Count()

    @property
    def held(self) -> int:
        return self._used.value

    @contextmanager
    def hold(self, pixels: int) -> Iterator[None]:
        """Wait until ``pixels`` fit beside what others hold, hold them for the block, then give them back."""
        n = min(max(0, int(pixels)), self.capacity)
        with self._cond:
            while self._used.value + n > self.capacity:
                self._cond.wait(1.0)  # re-checked each second: a waiter never depends on one notify alone
            self._used.value += n
        try:
            yield
        finally:
            with self._cond:
                self._used.value -= n
                self._cond.notify_all()


class _Count:
    value = 0


@dataclass(frozen=True)
class Decoded:
    """A decoded image: RGB pixels after EXIF orientation, and the format it was stored in.

    With ``max_side`` the pixels may be a reduced copy: ``source_size`` is always the stored image's (width,
    height) after orientation, so coordinates found on the copy map back to the file."""

    pixels: np.ndarray               # (H, W, 3) uint8 RGB
    format: str                      # Pillow's format name, e.g. JPEG
    source_size: tuple[int, int]     # (width, height) of the full image, after EXIF orientation

    @property
    def width(self) -> int:
        return int(self.pixels.shape[1])

    @property
    def height(self) -> int:
        return int(self.pixels.shape[0])

    @property
    def reduced(self) -> bool:
        return (self.width, self.height) != self.source_size

    @property
    def extension(self) -> str:
        return FORMAT_EXT[self.format]


@dataclass(frozen=True)
class Probe:
    """What validating a file established: it decodes in full, in this format, at this oriented size."""

    format: str
    width: int
    height: int

    @property
    def extension(self) -> str:
        return FORMAT_EXT[self.format]


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
        if length < 2 or i + 2 + length > len(data):  # a segment running past the bytes: callers index into it
            return
        yield marker, i + 4, length - 2
        i += 2 + length


def _special_kind(mode: int) -> str:
    for test, kind in ((stat.S_ISDIR, "folder"), (stat.S_ISFIFO, "FIFO (named pipe)"),
                       (stat.S_ISCHR, "character device"), (stat.S_ISBLK, "block device"), (stat.S_ISSOCK, "socket")):
        if test(mode):
            return kind
    return "special file"


def path_error(path: Path, exc: OSError) -> ImageError:
    """An OSError met while looking at a path, as the recorded reason a user can act on."""
    if exc.errno == errno.ELOOP:
        return ImageError(f"{path} is a symbolic link loop (it points back at itself): fix or remove the link.",
                          "symlink_loop")
    if exc.errno in (errno.ENOENT, errno.ENOTDIR):
        if os.path.islink(path):
            return ImageError(f"{path} is a symbolic link to {os.readlink(path)!r}, which does not exist: fix or "
                              f"remove the link.", "broken_link")
        return ImageError(f"{path} no longer exists (moved or deleted while facecurate ran).", "missing")
    if exc.errno in (errno.EACCES, errno.EPERM):
        return ImageError(f"{path} cannot be read: permission denied. Give your user read access "
                          f"(chmod u+r, or u+rx for a folder) and import again.", "unreadable")
    return ImageError(f"{path} cannot be read: {exc.strerror or exc}. Check that it exists and is readable.",
                      "unreadable")


def read_regular(path: Path, max_bytes: int) -> tuple[bytes, os.stat_result]:
    """A regular file's bytes (symbolic links followed) and its stat, or ImageError with a reason.

    FIFOs, devices and sockets are refused from ``stat`` without ever being opened (opening a FIFO blocks until
    a writer appears; /dev/zero never ends), the open is non-blocking and re-checked on the descriptor (the
    path may have been swapped in between), and reading stops one byte past ``max_bytes`` whatever ``stat``
    claimed, so neither a growing file nor a lying size can exhaust memory."""
    try:
        st = os.stat(path)
    except OSError as exc:
        raise path_error(path, exc) from exc
    if not stat.S_ISREG(st.st_mode):
        raise ImageError(f"{path} is a {_special_kind(st.st_mode)}, not a regular file: skipped without opening "
                         f"it. Import the image file itself.", "not_a_file")
    too_large = ImageError(f"{path} is over the {max_bytes:,}-byte limit ([media] max_bytes in facecurate.toml).",
                           "too_large")
    if st.st_size > max_bytes:
        raise too_large
    flags = os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_NOCTTY", 0) | getattr(os, "O_CLOEXEC", 0)
    try:
        fd = os.open(path, flags)
    except OSError as exc:
        raise path_error(path, exc) from exc
    try:
        opened = os.fstat(fd)
        if not stat.S_ISREG(opened.st_mode) or (opened.st_dev, opened.st_ino) != (st.st_dev, st.st_ino):
            raise ImageError(f"{path} was replaced while being read: import again.", "unreadable")
        chunks, total = [], 0
        want = min(st.st_size, max_bytes) + 1  # one read for an ordinary file; one byte more reveals growth
        while total <= max_bytes:
            chunk = os.read(fd, min(want, max_bytes + 1 - total))
            if not chunk:
                break
            chunks.append(chunk)
            total += len(chunk)
            want = 1 << 20
    except OSError as exc:
        raise path_error(path, exc) from exc
    finally:
        os.close(fd)
    if total > max_bytes:
        raise too_large
    return (chunks[0] if len(chunks) == 1 else b"".join(chunks)), st


def read_limited(path: Path, max_bytes: int) -> bytes:
    """Read a whole regular file, never past ``max_bytes`` (see :func:`read_regular`)."""
    return read_regular(path, max_bytes)[0]


def _refuse_unknown(data: bytes, name: str) -> str:
    """The allow-listed format of these bytes, or ImageError saying what they are instead."""
    if not data:
        raise ImageError(f"{name} is empty (0 bytes): the download or copy did not complete.", "empty")
    fmt = sniff(data)
    if fmt is None:
        head = data[:512].lstrip().lower()
        if head.startswith((b"<!doctype", b"<html", b"<?xml", b"<svg", b"<head", b"<body", b"{", b"<")):
            raise ImageError(f"{name} is text or HTML, not an image (a web page saved under an image name).",
                             "not_an_image")
        other = _foreign(data)
        if other is not None:
            raise ImageError(f"{name} is a {other} file, a format facecurate does not read (jpg, png, webp, bmp, "
                             f"tiff, gif): convert it to one of those.", "unsupported_format")
        raise ImageError(f"{name} is not an image format facecurate reads (jpg, png, webp, bmp, tiff, gif).",
                         "not_an_image")
    if fmt not in Image.OPEN:
        raise ImageError(f"{name} is a {fmt} image, but this Pillow build has no {fmt} reader: reinstall Pillow "
                         f"with {fmt} support (python -m PIL.features) or convert the file.", "unsupported_format")
    return fmt


_TURNED = (5, 6, 7, 8)  # EXIF orientations that swap width and height


def _gated(data: bytes, name: str, max_pixels: int, min_side: int, work: Callable[[Image.Image], _T]) -> _T:
    """Open allow-listed bytes, refuse bombs from the header, and run ``work`` on the image: the one place a
    decoder runs, so every exception it raises becomes an ImageError with a reason."""
    fmt = _refuse_unknown(data, name)
    try:
        im = Image.open(io.BytesIO(data), formats=[fmt])
        fmt = im.format or fmt
        width, height = im.size
        if width * height > max_pixels:
            raise ImageError(f"{name} is {width}x{height} = {width * height:,} pixels, over the "
                             f"{max_pixels:,}-pixel limit ([media] max_pixels): refused as a possible "
                             f"decompression bomb.", "too_large")
        if fmt not in FORMAT_EXT:  # defensive: the opener is restricted, so this is a Pillow surprise
            raise ImageError(f"{name} decoded as {fmt}, a format facecurate does not store.",
                             "unsupported_format")
        if min(width, height) < min_side:
            raise ImageError(f"{name} is {width}x{height}, below the {min_side}-px minimum side "
                             f"([media] min_side).", "too_small")
        try:
            im.seek(0)  # animated GIF/WebP, multi-page TIFF: the first frame
            return work(im)
        finally:
            im.close()  # the decoded pixels are freed here, not whenever the last reference goes
    except ImageError:
        raise
    except (MemoryError, Image.DecompressionBombError) as exc:
        raise ImageError(f"{name} needs more memory to decode than is available ({type(exc).__name__}): refused "
                         f"as a possible decompression bomb; lower [media] max_pixels.", "too_large") from exc
    except UnidentifiedImageError as exc:  # its message names a BytesIO object's address, nothing of the file
        raise ImageError(f"{name} starts like a {fmt} image but Pillow's {fmt} reader cannot read its header: it is "
                         f"corrupt, or a variant Pillow does not read (a 3-channel float TIFF, an unusual "
                         f"compression). Convert it to an 8- or 16-bit image.", "corrupt") from exc
    except Exception as exc:  # any decoder failure on hostile bytes is the file's, never ours
        reason = "truncated" if "truncated" in str(exc).lower() else "corrupt"
        raise ImageError(f"{name} starts like a {fmt} image but is {reason} and cannot be decoded "
                         f"({type(exc).__name__}: {exc}).", reason) from exc


def _oriented(im: Image.Image, size: tuple[int, int]) -> tuple[int, int]:
    """``size`` as displayed. Call after ``load``: a PNG's EXIF may follow its pixels, and Pillow decodes the
    whole image to look for it (outside any budget, if asked before)."""
    return (size[1], size[0]) if im.getexif().get(0x0112) in _TURNED else size


def _draft(im: Image.Image, side: int) -> None:
    """Let libjpeg decode a JPEG at 1/2, 1/4 or 1/8 scale (its DCT does the reduction, so the full image is
    never built) while keeping the long side at least ``side``; other formats ignore it."""
    if im.format in ("JPEG", "MPO") and max(im.size) > side:
        f = side / max(im.size)
        im.draft(None, (max(1, math.ceil(im.size[0] * f)), max(1, math.ceil(im.size[1] * f))))


def _hold(budget: PixelBudget | None, im: Image.Image, stack: ExitStack) -> None:
    if budget is not None:  # im.size is the size it will decode at: a JPEG draft has already shrunk it
        stack.enter_context(budget.hold(im.size[0] * im.size[1]))


def probe(data: bytes, name: str, max_pixels: int, min_side: int = 1, *,
          budget: PixelBudget | None = None) -> Probe:
    """Validate bytes by decoding them to the last byte, cheaply: what download and import need to accept a
    file. A JPEG's whole entropy stream is decoded at 1/8 scale (a truncated or corrupt stream still fails),
    other formats are decoded in their own mode without the RGB copy; the pixels are dropped at once."""
    def work(im: Image.Image) -> Probe:
        full = im.size
        _draft(im, 1)
        fmt = str(im.format)
        with ExitStack() as stack:
            _hold(budget, im, stack)
            im.load()
            _to_rgb(im.crop((0, 0, 1, 1)))  # the mode converts: a later full decode will not fail on it
            size = _oriented(im, full)
            im.close()  # the pixels go before the budget is given back
        return Probe(format=fmt, width=size[0], height=size[1])

    return _gated(data, name, max_pixels, min_side, work)


@dataclass(frozen=True)
class Header:
    """What an image's header says, no pixel decoded: for decoders outside Pillow (nvjpeg on a GPU), which
    run only on bytes that passed this gate (allow-list, pixel limit, minimum side) first."""

    format: str
    mode: str                        # Pillow's mode: RGB, L, CMYK, ...
    stored_size: tuple[int, int]     # (width, height) as stored, before EXIF orientation
    orientation: int                 # EXIF orientation tag, 1 (none) to 8


def header(data: bytes, name: str, max_pixels: int, min_side: int = 1) -> Header:
    """Gate bytes from their header alone: the refusals of :func:`decode` that need no pixels (format, size,
    bombs), and what another decoder needs to reproduce its result (mode, EXIF orientation). A JPEG's EXIF
    precedes its scan, so nothing is decoded; a body that is truncated or corrupt is the other decoder's to
    find (or the caller's, by falling back to :func:`decode`)."""
    def work(im: Image.Image) -> Header:
        orientation = im.getexif().get(0x0112, 1)
        return Header(format=str(im.format), mode=im.mode, stored_size=im.size,
                      orientation=orientation if orientation in range(1, 9) else 1)

    return _gated(data, name, max_pixels, min_side, work)


def decode(data: bytes, name: str, max_pixels: int, min_side: int = 1, *, max_side: int | None = None,
           budget: PixelBudget | None = None) -> Decoded:
    """Decode bytes to RGB uint8 with EXIF orientation applied, or raise ImageError with a reason.

    Only an allow-listed format sniffed from the bytes reaches a decoder, and only that format's; any exception
    from the decoder (Pillow's plugins raise OSError, SyntaxError, ValueError, struct.error, IndexError,
    NotImplementedError, ... on crafted input) is a recorded failure, never a crash of the stage.

    ``max_side``: return a copy whose long side is at most this (JPEGs are decoded reduced by libjpeg; other
    formats are box-reduced before the RGB conversion). ``budget``: hold the decode's pixels in it while
    decoding; the returned pixels are the caller's (see :func:`decoded` to keep holding them)."""
    with ExitStack() as stack:
        return _decode(data, name, max_pixels, min_side, max_side, budget, stack)


@contextmanager
def decoded(data: bytes, name: str, max_pixels: int, budget: PixelBudget | None, *, min_side: int = 1,
            max_side: int | None = None) -> Iterator[Decoded]:
    """:func:`decode`, holding the pixels in ``budget`` until the block ends (crop's full-size originals)."""
    with ExitStack() as stack:
        yield _decode(data, name, max_pixels, min_side, max_side, budget, stack)


def _decode(data: bytes, name: str, max_pixels: int, min_side: int, max_side: int | None,
            budget: PixelBudget | None, stack: ExitStack) -> Decoded:
    def work(im: Image.Image) -> Decoded:
        fmt, full = str(im.format), im.size
        if max_side is not None:
            _draft(im, max_side)
        _hold(budget, im, stack)
        im.load()
        source = _oriented(im, full)
        if max_side is not None and max(im.size) >= 2 * max_side and im.mode in _REDUCIBLE:
            im = im.reduce(max(im.size) // max_side)  # integer box reduction: cheap, and never below max_side
        pixels = _to_rgb(ImageOps.exif_transpose(im) or im)
        if max_side is not None and max(pixels.shape[:2]) > max_side:
            pixels = _fit(pixels, max_side)
        return Decoded(pixels=pixels, format=fmt, source_size=source)

    return _gated(data, name, max_pixels, min_side, work)


def _fit(pixels: np.ndarray, side: int) -> np.ndarray:
    """Area-averaged resize to long side ``side``: the same reduction the detector applies to large images."""
    import cv2

    h, w = pixels.shape[:2]
    f = side / max(h, w)
    return cv2.resize(pixels, (max(1, round(w * f)), max(1, round(h * f))), interpolation=cv2.INTER_AREA)


_WIDE = ("I;16", "I;16B", "I;16L", "I", "F")
# Modes Image.reduce accepts; the others (palette, 1-bit, 16-bit) go to RGB first and are area-resized after.
_REDUCIBLE = frozenset({"L", "LA", "La", "RGB", "RGBA", "RGBa", "RGBX", "CMYK", "YCbCr", "I", "F"})
STRIP_PIXELS = 1 << 22  # converted at a time: a 100 MP image never exists as a second full-size copy


def _to_rgb(im: Image.Image) -> np.ndarray:
    """Any Pillow mode to RGB uint8: 16-bit and float scaled, alpha composited on white, CMYK converted.

    Large images are converted a strip of rows at a time into one preallocated array, so the peak is the
    decoded image plus its RGB copy, not also Pillow's intermediate modes and a bytes copy of each."""
    top = 255.0
    if im.mode.startswith("I;16"):  # getextrema has no big-endian I;16B (a Mac or scanner 16-bit TIFF)
        top = 65535.0
    elif im.mode in _WIDE:
        high = float(im.getextrema()[1])  # type: ignore[arg-type]
        # A float image is most often 0..1 (HDR and scientific tools write it so): scaled by 255 it would be black.
        top = 65535.0 if high > 255 else 1.0 if im.mode == "F" and high <= 1.0 else 255.0
    rows = max(1, STRIP_PIXELS // max(1, im.width))
    if rows >= im.height:
        return _strip_to_rgb(im, top)
    out = np.empty((im.height, im.width, 3), np.uint8)
    for y in range(0, im.height, rows):
        out[y:y + rows] = _strip_to_rgb(im.crop((0, y, im.width, min(im.height, y + rows))), top)
    return out


def _strip_to_rgb(im: Image.Image, top: float) -> np.ndarray:
    if im.mode in _WIDE:
        gray = np.clip(np.asarray(im, dtype=np.float64) / top * 255.0 + 0.5, 0, 255).astype(np.uint8)
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
    tmp_parent = tmp_dir or path.parent
    prefix = f"{PART_PREFIX}{os.getpid()}-"
    try:  # folders are made on the first miss only (two mkdir calls per file were a tenth of a crop's write)
        fd, tmp = tempfile.mkstemp(dir=tmp_parent, prefix=prefix, suffix=path.suffix)
    except FileNotFoundError:
        tmp_parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=tmp_parent, prefix=prefix, suffix=path.suffix)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        try:
            os.replace(tmp, path)
        except FileNotFoundError:  # the target's folder is missing (a tmp_dir elsewhere was given)
            path.parent.mkdir(parents=True, exist_ok=True)
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
