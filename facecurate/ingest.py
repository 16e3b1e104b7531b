"""``import``: bring local folders into the workspace, one source row per file, content stored once.

Files are read and validated through :mod:`facecurate.media`, the gate the crawler's downloads pass too (only
regular files, never past ``[media] max_bytes``, only allow-listed formats), and stored through
:mod:`facecurate.storage`, so imported and downloaded images are checked, deduplicated and counted the same way.
A user's folder may hold anything (FIFOs, device links, link loops, folders they cannot read): each such entry
is recorded as a failed source with its reason and the rest of the folder still imports.
"""

from __future__ import annotations

import os
import stat
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
from facecurate.workspace import CATALOG_NAME, EXPORT_MARKER, OWN_IMAGE_DIRS, Workspace

BATCH = 64  # files per transaction: a crash redoes at most this many cheap imports
WALKED = media.EXTENSIONS | media.OTHER_IMAGE_EXTENSIONS  # what a walk hands to the gate (others: not photos)
NOT_WALKED = "not_walked"  # why a folder is skipped (ImportSummary.skipped): a link, or facecurate's own images


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
    skipped: list[Failure] = field(default_factory=list)  # folders not walked: links, facecurate's own images


@dataclass(frozen=True)
class Found:
    """One thing the walk turned up: a file to check, or a folder or link it could not look into (``error``)."""

    path: Path
    error: ImageError | None = None


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


def text(value: str) -> str:
    """A path (or label) as text the catalog, JSON and a terminal accept: a file name's bytes that are not UTF-8
    reach Python as lone surrogates, which SQLite refuses to store, so they are written as ``\\xNN`` escapes.
    The file itself is still read by its real name; only its record is escaped."""
    return value.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")


def _absolute(path: Path) -> Path:
    """An absolute path whose folders are resolved but whose last part is kept: a link in the user's folder is
    recorded (and reported) under its own name, and a link loop cannot raise here."""
    return Path(os.path.realpath(path.parent)) / path.name


def iter_image_files(paths: Iterable[Path]) -> Iterator[Found]:
    """Entries with an image extension under each path (recursively, not into linked folders), in a stable
    order, plus every folder that could not be listed or is facecurate's own output: a user's folder is walked
    to the end whatever is in it, and only :func:`facecurate.media.read_regular` decides what a file is. A file
    reached twice (a folder given twice, or inside another one given) is found once."""
    seen: set[Path] = set()
    for found in _walk(paths):
        if found.path not in seen:
            seen.add(found.path)
            yield found


def _walk(paths: Iterable[Path]) -> Iterator[Found]:
    for p in paths:
        if os.path.isdir(p):  # not Path.is_dir: that raises for a name too long or a folder it may not search
            errors: list[OSError] = []
            for root, dirs, files in os.walk(os.path.realpath(p), onerror=errors.append):
                yield from _unlisted(errors)
                dirs[:] = sorted(d for d in dirs if not d.startswith("."))
                for d, why in [(d, _not_walked(Path(root), d)) for d in dirs]:
                    if why is not None:
                        dirs.remove(d)
                        yield Found(Path(root) / d, why)
                for f in sorted(files):
                    if Path(f).suffix.lower() in WALKED:
                        yield Found(Path(root) / f)
            yield from _unlisted(errors)
        elif _looked_at(p):  # a file, a link that is broken, loops or names a device, a path that cannot be
            yield Found(_absolute(p))  # looked at (too long, no permission): checked, and recorded with its reason
        else:
            raise FacecurateError(f"{p} does not exist. Pass folders or image files to `facecurate import`.")


def _looked_at(path: Path) -> bool:
    """False only for a path that is certainly not there; read_regular says what else is wrong with it."""
    try:
        os.lstat(path)
    except (FileNotFoundError, NotADirectoryError):
        return False
    except OSError:
        pass
    return True


def _not_walked(parent: Path, name: str) -> ImageError | None:
    """Why a folder met in a walk is not walked, if it is not: a link to a folder (links may loop; os.walk does
    not follow them, and a skip the user is not told of loses their photos), or a folder of images facecurate
    made: a workspace's stored originals, crops and exports (``import .`` in a workspace, or a folder holding
    one, would add its own crops as new photos and crop faces of faces), or an export folder anywhere."""
    folder = parent / name  # os.path.isfile, not Path.is_file: a path past PATH_MAX is "no", not an OSError
    if os.path.islink(folder):
        return ImageError(f"{folder} is a link to a folder ({os.readlink(folder)}), not followed: import it by "
                          f"its own path (facecurate import {folder}).", NOT_WALKED)
    if name in OWN_IMAGE_DIRS and os.path.isfile(parent / CATALOG_NAME):
        return ImageError(f"{folder} is the {name}/ folder of the facecurate workspace {parent}: its images are "
                          f"that workspace's own, not imported again. Import the photos themselves.", NOT_WALKED)
    if os.path.isfile(folder / EXPORT_MARKER):
        return ImageError(f"{folder} is a facecurate export (it holds {EXPORT_MARKER}): its crops are not "
                          f"imported as new photos. Import the photos themselves.", NOT_WALKED)
    return None


def _unlisted(errors: list[OSError]) -> Iterator[Found]:
    """The folders os.walk could not list since the last call, as failures naming each folder."""
    for exc in errors:
        folder = Path(exc.filename) if exc.filename else Path("?")
        err = media.path_error(folder, exc)
        yield Found(folder, ImageError(f"{err} Nothing inside it was imported.", err.reason))
    errors.clear()


def _check(found: Found, max_bytes: int, max_pixels: int, min_side: int, budget: media.PixelBudget) -> Checked:
    path = found.path
    if found.error is not None:
        return Checked(path, 0, 0.0, error=found.error)
    try:
        data, st = media.read_regular(path, max_bytes)
    except ImageError as exc:
        return Checked(path, 0, 0.0, error=exc)
    try:
        decoded = media.probe(data, str(path), max_pixels, min_side, budget=budget)
    except ImageError as exc:
        return Checked(path, st.st_size, st.st_mtime, error=exc)
    return Checked(path, st.st_size, st.st_mtime, data=data, sha256=media.sha256_bytes(data),
                   decoded_format=decoded.format, ext=decoded.extension,
                   width=decoded.width, height=decoded.height)


def _unchanged(catalog: Catalog, path: Path) -> bool:
    """True when this path was imported before and its size and mtime still match (a path that can no longer
    be looked at is not unchanged: it is checked again, and its failure recorded)."""
    known = catalog.source_status("file", text(str(path)))
    if known is None or known.status != "ok":
        return False
    try:
        st = os.stat(path)
    except OSError:
        return False
    return stat.S_ISREG(st.st_mode) and known.file_size == st.st_size and known.file_mtime == st.st_mtime


def import_paths(ws: Workspace, catalog: Catalog, paths: list[Path], label: str | None = None,
                 progress: Progress = SILENT, workers: int = 4) -> ImportSummary:
    """Import image files under ``paths``; re-importing the same files adds nothing."""
    cfg = ws.config()
    max_bytes, max_pixels = int(cfg.get("media", "max_bytes")), int(cfg.get("media", "max_pixels"))
    min_side = int(cfg.get("media", "min_side"))
    budget = media.PixelBudget(cfg.get("media", "decode_budget"))
    summary = ImportSummary()
    progress.start("import", None, "files")  # walking big trees takes a while before the total is known
    todo: list[Found] = []
    for found in iter_image_files(paths):
        if found.error is not None and found.error.reason == NOT_WALKED:  # not a source: nothing to record
            summary.skipped.append(Failure(text(str(found.path)), text(str(found.error))))
            continue
        summary.found += 1
        if found.error is None and _unchanged(catalog, found.path):
            summary.unchanged += 1
            continue
        todo.append(found)
    progress.start("import", len(todo), "files")
    reasons: Counter[str] = Counter()
    with ThreadPoolExecutor(max_workers=workers) as pool:
        for start in range(0, len(todo), BATCH):
            checked = list(pool.map(lambda f: _check(f, max_bytes, max_pixels, min_side, budget),
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
    location, label = text(str(c.path)), label if label is None else text(label)
    if c.error is not None or c.data is None or c.sha256 is None:
        err = c.error or ImageError(f"{c.path} could not be checked.", "unreadable")
        catalog.record_source(kind="file", location=location, label=label, status="failed", error=err.reason,
                              detail=text(str(err)), file_size=c.size, file_mtime=c.mtime)
        summary.failed.append(Failure(location, text(str(err))))
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
