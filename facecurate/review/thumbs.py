"""Small cached JPEGs for the gallery: grid thumbnails of crops and photos, and previews of the originals.

A 512 px crop is ~100 kB and an original can be 25 MB; the grid needs ~8 kB per cell. Each thumbnail is made
once, on first request, under ``.cache/review/`` in the workspace (written to a temp name and renamed, so a
killed server never leaves half a file), and remade when its source file is newer. Sources are paths the
catalog recorded, never anything a client sent, and must lie inside the workspace.
"""

from __future__ import annotations

import io
from pathlib import Path

from PIL import Image

from facecurate import media
from facecurate.errors import ImageError
from facecurate.filestore import local_file
from facecurate.workspace import Workspace

CACHE = Path(".cache") / "review"
PREVIEW_SIDE = 1600  # long side of the original shown under the face box: sharp on a laptop, light to send


def inside(root: Path, relative: str) -> Path | None:
    """``root/relative`` if it stays inside root (catalog paths are relative; this guards odd rows)."""
    base = root.resolve()
    path = (base / relative).resolve()
    return path if path.is_relative_to(base) and path != base else None


def _encode(im: Image.Image, side: int) -> bytes:
    im = im.convert("RGB")
    im.thumbnail((side, side), Image.Resampling.LANCZOS if side >= 512 else Image.Resampling.BILINEAR,
                 reducing_gap=2.0)
    buf = io.BytesIO()
    im.save(buf, "JPEG", quality=82, optimize=False, progressive=False)
    return buf.getvalue()


def _render_crop(path: Path, side: int, max_bytes: int) -> bytes:
    """Our own crop files: JPEG draft mode decodes straight at a reduced scale."""
    data = media.read_limited(path, max_bytes)
    try:
        im = Image.open(io.BytesIO(data), formats=["JPEG", "PNG"])  # the crop formats: nothing else may run
        im.draft("RGB", (side, side))
        return _encode(im, side)
    except Exception as exc:  # any decoder failure on a damaged crop is "cannot be shown", never a 500
        raise ImageError(f"{path} cannot be decoded for a thumbnail ({exc}).", "corrupt") from exc


def _render_photo(path: Path, side: int, max_pixels: int, max_bytes: int) -> bytes:
    """Crawled originals are hostile input: decoded through media (bomb guard, EXIF orientation, any mode),
    already reduced to the thumbnail's side (a JPEG by libjpeg's scaled decode)."""
    decoded = media.decode(media.read_limited(path, max_bytes), str(path), max_pixels, max_side=side)
    return _encode(Image.fromarray(decoded.pixels), side)


def cached(ws: Workspace, relative: str, kind: str, side: int, max_pixels: int, max_bytes: int) -> Path:
    """The cached JPEG for a catalog file (``kind``: crop | photo), made now if missing or stale."""
    src = inside(ws.root, relative)
    if src is not None and not src.is_file():  # written by a worker to [run] storage: fetch it into the mirror
        local_file(ws, relative, max_bytes)
    if src is None or not src.is_file():
        raise ImageError(f"{relative} is not a file inside the workspace {ws.root}.", "missing")
    dst = inside(ws.root, str(CACHE / f"{kind}{side}" / f"{relative}.jpg"))
    if dst is None:
        raise ImageError(f"{relative} maps outside the thumbnail cache.", "missing")
    try:
        if dst.stat().st_mtime_ns >= src.stat().st_mtime_ns:
            return dst
    except FileNotFoundError:
        pass
    data = _render_crop(src, side, max_bytes) if kind == "crop" else _render_photo(src, side, max_pixels, max_bytes)
    ws.tmp_dir.mkdir(exist_ok=True)
    media.atomic_write(dst, data, ws.tmp_dir)
    return dst
