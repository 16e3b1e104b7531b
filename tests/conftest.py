"""Shared fixtures: bundled public-domain photos, generated hostile files, fresh workspaces."""

from __future__ import annotations

import io
import struct
import zlib
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from facecurate.catalog import Catalog
from facecurate.demo import DEMO_DATA
from facecurate.workspace import Workspace, init_workspace

SHARED = Path(__file__).resolve().parents[2] / "shared"
DEV = SHARED / "eval" / "dev"


def needs_dev(sub: str) -> Path:
    """A ../shared/eval/dev folder, or a clean skip in clones that do not have it."""
    path = DEV / sub
    if not path.is_dir():
        pytest.skip(f"{path} is absent (research-only photos live beside the repository, not in it)")
    return path


@pytest.fixture
def demo_dir() -> Path:
    return DEMO_DATA


@pytest.fixture
def ws(tmp_path: Path) -> Workspace:
    return init_workspace(tmp_path / "ws")


@pytest.fixture
def catalog(ws: Workspace):
    cat = Catalog.open(ws.catalog_path)
    yield cat
    cat.close()


def _png_header_only(width: int, height: int) -> bytes:
    """A valid PNG signature + IHDR claiming a huge size, with a tiny IDAT: the classic bomb shape."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    ihdr = struct.pack(">IIBBBBB", width, height, 1, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0" * 64)) + \
        chunk(b"IEND", b"")


def _save(im: Image.Image, fmt: str, **kw: object) -> bytes:
    buf = io.BytesIO()
    im.save(buf, fmt, **kw)
    return buf.getvalue()


@pytest.fixture
def odd_images(tmp_path: Path, demo_dir: Path) -> dict[str, Path]:
    """One file per kind of hostile or unusual input, keyed by what it is."""
    folder = tmp_path / "odd"
    (folder / "nested" / "deeper").mkdir(parents=True)
    rng = np.random.default_rng(0)
    rgb = Image.fromarray(rng.integers(0, 255, (120, 160, 3), dtype=np.uint8))
    good = (demo_dir / "obama.jpg").read_bytes()
    files: dict[str, bytes] = {
        "good.jpg": good,
        "nested/deeper/copy_of_good.jpg": good,                       # exact duplicate content
        "zero.jpg": b"",
        "page.jpg": b"<!DOCTYPE html><html><body>Access denied</body></html>",
        "truncated.jpg": good[: len(good) // 3],
        "corrupt.png": b"\x89PNG\r\n\x1a\n" + bytes(rng.integers(0, 255, 400, dtype=np.uint8)),
        "bomb.png": _png_header_only(30000, 30000),
        "cmyk.jpg": _save(rgb.convert("CMYK"), "JPEG"),
        "sixteen.png": _save(Image.fromarray((rng.integers(0, 65535, (90, 90))).astype(np.uint16)), "PNG"),
        "palette.gif": _save(rgb.convert("P", palette=Image.Palette.ADAPTIVE), "GIF"),
        "rgba.png": _save(Image.fromarray(rng.integers(0, 255, (80, 80, 4), dtype=np.uint8), "RGBA"), "PNG"),
        "lossless.webp": _save(rgb, "WEBP", lossless=True),
        "plain.bmp": _save(rgb, "BMP"),
        "scan.tiff": _save(rgb, "TIFF"),
        "notes.txt": b"not an image extension: ignored",
    }
    out = {}
    for name, data in files.items():
        path = folder / name
        path.write_bytes(data)
        out[name] = path
    return out


class RecordingProgress:
    """A progress sink (facecurate.events.Progress) that keeps every event, to check what a stage reports."""

    def __init__(self) -> None:
        self.events: list[tuple] = []

    def start(self, name: str, total: int | None, unit: str, done: int = 0) -> None:
        self.events.append(("start", name, total, unit))

    def advance(self, n: int = 1) -> None:
        self.events.append(("advance", n))

    def finish(self, total: int | None = None) -> None:
        self.events.append(("finish",))

    def note(self, message: str) -> None:
        self.events.append(("note", message))


@pytest.fixture(scope="session")
def s3_endpoint() -> Iterator[str]:
    """A real S3 API (moto's server) on loopback for the session, with the AWS_* environment pointing at it.
    Session-wide so that a Ray cluster started later in the session hands that environment to its workers."""
    pytest.importorskip("s3fs", reason="s3fs comes with the ray extra (uv sync --extra ray)")
    from tests.s3server import s3_server

    with s3_server() as endpoint:
        yield endpoint


@pytest.fixture
def s3_bucket(s3_endpoint: str) -> str:
    """A new, empty bucket on the loopback S3 server: ``s3://name``."""
    from tests.s3server import new_bucket

    return new_bucket()
