"""Bring image bytes into the workspace: content-addressed storage plus one source row per origin.

``import`` uses it for local folders and the crawler (later) for downloads, so both paths share one way
of validating, storing and counting images.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

from facecurate import media
from facecurate.catalog import Catalog
from facecurate.errors import FacecurateError, ImageError
from facecurate.workspace import Workspace

BATCH = 64  # files per transaction: a crash redoes at most this many cheap imports


@dataclass
class Failure:
    location: str
    reason: str
    message: str


@dataclass
class ImportSummary:
    found: int = 0
    new: int = 0
    duplicate: int = 0      # content already in the workspace (exact duplicate, counted not stored)
    unchanged: int = 0      # this path was imported before and has not changed
    failed: list[Failure] = field(default_factory=list)


@dataclass(frozen=True)
class Checked:
    """What a worker learned about one file: its bytes' hash and decoded facts, or why it failed."""

    path: Path
    size: int
    mtime: float
    data: bytes | None = None
    sha256: str | None = None
    decoded_format: str | None = None
    ext: str | None = None
    width: int = 0
    height: int = 0
    error: ImageError | None = None


def raw_relpath(sha256: str, ext: str) -> str:
    return f"raw/{sha256[:2]}/{sha256}.{ext}"


def store(ws: Workspace, catalog: Catalog, data: bytes, sha256: str, fmt: str, ext: str, width: int,
          height: int, label: str | None) -> tuple[int, bool]:
    """Store new content (atomically) or find it; returns (image_id, is_new). Call inside a transaction."""
    existing = catalog.image_by_sha(sha256)
    if existing is not None:
        return existing.id, False
    rel = raw_relpath(sha256, ext)
    target = ws.resolve(rel)
    if not target.exists():
        media.atomic_write(target, data, ws.tmp_dir)
    return catalog.add_image(sha256=sha256, path=rel, format=fmt, width=width, height=height,
                             size=len(data), label=label), True


def iter_image_files(paths: Iterable[Path]) -> Iterator[Path]:
    """Files with an image extension under each path (recursively), in a stable order."""
    for p in paths:
        if p.is_file():
            yield p.resolve()
        elif p.is_dir():
            for root, dirs, files in os.walk(p):
                dirs[:] = sorted(d for d in dirs if not d.startswith("."))
                for f in sorted(files):
                    if Path(f).suffix.lower() in media.EXTENSIONS:
                        yield (Path(root) / f).resolve()
        else:
            raise FacecurateError(f"{p} does not exist. Pass folders or image files to `facecurate import`.")


def _check(path: Path, max_bytes: int, max_pixels: int, min_side: int) -> Checked:
    try:
        st = path.stat()
    except OSError as exc:
        return Checked(path, 0, 0.0, error=ImageError(f"{path} cannot be read: {exc}", "unreadable"))
    try:
        data = media.read_limited(path, max_bytes)
        decoded = media.decode(data, str(path), max_pixels, min_side)
    except ImageError as exc:
        return Checked(path, st.st_size, st.st_mtime, error=exc)
    return Checked(path, st.st_size, st.st_mtime, data=data, sha256=media.sha256_bytes(data),
                   decoded_format=decoded.format, ext=decoded.extension,
                   width=decoded.width, height=decoded.height)


def import_paths(ws: Workspace, catalog: Catalog, paths: list[Path], label: str | None = None,
                 on_found: Callable[[int], None] | None = None,
                 on_progress: Callable[[int], None] | None = None, workers: int = 4) -> ImportSummary:
    """Import image files under ``paths``; re-importing the same files adds nothing."""
    cfg = ws.config()
    max_bytes, max_pixels = cfg.get("media", "max_bytes"), cfg.get("media", "max_pixels")
    min_side = cfg.get("media", "min_side")
    summary = ImportSummary()
    todo: list[Path] = []
    for f in iter_image_files(paths):
        summary.found += 1
        state = catalog.source_state("file", str(f))
        if state is not None and state["status"] == "ok":
            st = f.stat()
            if state["file_size"] == st.st_size and state["file_mtime"] == st.st_mtime:
                summary.unchanged += 1
                continue
        todo.append(f)
    if on_found:
        on_found(len(todo))
    with ThreadPoolExecutor(max_workers=workers) as pool:
        for start in range(0, len(todo), BATCH):
            checked = list(pool.map(lambda p: _check(p, max_bytes, max_pixels, min_side),
                                    todo[start:start + BATCH]))
            with catalog.transaction():
                for c in checked:
                    _record(ws, catalog, c, label, summary)
            if on_progress:
                on_progress(len(checked))
    return summary


def _record(ws: Workspace, catalog: Catalog, c: Checked, label: str | None, summary: ImportSummary) -> None:
    common = {"kind": "file", "location": str(c.path), "label": label, "file_size": c.size,
              "file_mtime": c.mtime}
    if c.error is not None or c.data is None or c.sha256 is None:
        err = c.error or ImageError(f"{c.path} could not be checked.", "unreadable")
        catalog.record_source(status="failed", error=err.reason, detail=str(err), **common)
        summary.failed.append(Failure(str(c.path), err.reason, str(err)))
        return
    image_id, is_new = store(ws, catalog, c.data, c.sha256, c.decoded_format or "", c.ext or "bin",
                             c.width, c.height, label)
    catalog.record_source(status="ok", image_id=image_id, **common)
    if is_new:
        summary.new += 1
    else:
        summary.duplicate += 1
