"""``import``: bring local folders into the workspace, one source row per file, content stored once.

Files are validated by decoding them (through :mod:`facecurate.media`) and stored through
:mod:`facecurate.storage`, the store the crawler uses too, so imported and downloaded images are deduplicated
and counted the same way.
"""

from __future__ import annotations

import os
from collections import Counter
from collections.abc import Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

from facecurate import media
from facecurate.catalog import Catalog
from facecurate.errors import FacecurateError, ImageError
from facecurate.events import SILENT, Failure, Progress
from facecurate.storage import store
from facecurate.workspace import Workspace

BATCH = 64  # files per transaction: a crash redoes at most this many cheap imports


@dataclass
class ImportSummary:
    """What one ``import`` did; ``failed_by_reason`` counts the failures by their reason code (as stored in
    the catalog's ``sources.error``)."""

    found: int = 0
    new: int = 0
    duplicate: int = 0      # content already in the workspace (exact duplicate, counted not stored)
    unchanged: int = 0      # this path was imported before and has not changed
    failed: list[Failure] = field(default_factory=list)
    failed_by_reason: dict[str, int] = field(default_factory=dict)


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
                 progress: Progress = SILENT, workers: int = 4) -> ImportSummary:
    """Import image files under ``paths``; re-importing the same files adds nothing."""
    cfg = ws.config()
    max_bytes, max_pixels = int(cfg.get("media", "max_bytes")), int(cfg.get("media", "max_pixels"))
    min_side = int(cfg.get("media", "min_side"))
    summary = ImportSummary()
    progress.start("import", None, "files")  # walking big trees takes a while before the total is known
    todo: list[Path] = []
    for f in iter_image_files(paths):
        summary.found += 1
        known = catalog.source_status("file", str(f))
        if known is not None and known.status == "ok":
            st = f.stat()
            if known.file_size == st.st_size and known.file_mtime == st.st_mtime:
                summary.unchanged += 1
                continue
        todo.append(f)
    progress.start("import", len(todo), "files")
    reasons: Counter[str] = Counter()
    with ThreadPoolExecutor(max_workers=workers) as pool:
        for start in range(0, len(todo), BATCH):
            checked = list(pool.map(lambda p: _check(p, max_bytes, max_pixels, min_side),
                                    todo[start:start + BATCH]))
            with catalog.transaction():
                for c in checked:
                    reason = _record(ws, catalog, c, label, summary)
                    if reason is not None:
                        reasons[reason] += 1
            progress.advance(len(checked))
    progress.finish()
    summary.failed_by_reason = dict(reasons.most_common())
    return summary


def _record(ws: Workspace, catalog: Catalog, c: Checked, label: str | None, summary: ImportSummary) -> str | None:
    """Store one checked file and its source row; returns the failure's reason code, or None."""
    location = str(c.path)
    if c.error is not None or c.data is None or c.sha256 is None:
        err = c.error or ImageError(f"{c.path} could not be checked.", "unreadable")
        catalog.record_source(kind="file", location=location, label=label, status="failed", error=err.reason,
                              detail=str(err), file_size=c.size, file_mtime=c.mtime)
        summary.failed.append(Failure(location, str(err)))
        return err.reason
    image_id, is_new = store(ws, catalog, c.data, c.sha256, c.decoded_format or "", c.ext or "bin",
                             c.width, c.height, label)
    catalog.record_source(kind="file", location=location, label=label, status="ok", image_id=image_id,
                          file_size=c.size, file_mtime=c.mtime)
    if is_new:
        summary.new += 1
    else:
        summary.duplicate += 1
    return None
