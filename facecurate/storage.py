"""The content-addressed store of originals: one file per distinct content, ``raw/ab/abcdef….ext`` by sha256.

``import`` and the crawler's downloader both bring bytes in; keeping the address and the write-then-record order
here (below both stages) means they store, deduplicate and count content the same way without importing each
other.
"""

from __future__ import annotations

from facecurate import media
from facecurate.catalog import Catalog
from facecurate.errors import ImageError
from facecurate.filestore import FileStore, open_store
from facecurate.workspace import Workspace


def raw_relpath(sha256: str, ext: str) -> str:
    """Where content lives, relative to the workspace: the first two hex digits fan the files out."""
    return f"raw/{sha256[:2]}/{sha256}.{ext}"


def put_raw(files: FileStore, data: bytes, sha256: str, ext: str) -> str:
    """Write the bytes at their address unless a whole file is already there; returns the relative path.

    Safe from any thread or worker and before the catalog knows the file: the write is atomic (a temp name and
    a rename, or one object PUT), so a kill leaves either nothing or a whole file that a later :func:`store`
    finds and records."""
    rel = raw_relpath(sha256, ext)
    files.write(rel, data, once=True)
    return rel


def store(ws: Workspace, catalog: Catalog, data: bytes | None, sha256: str, fmt: str, ext: str, width: int,
          height: int, label: str | None, size: int | None = None,
          files: FileStore | None = None) -> tuple[int, bool]:
    """Record new content (writing its file if absent) or find it; returns (image_id, is_new).

    Call inside a transaction: the image row and the file appear together for every reader. ``fmt`` must be
    what :func:`facecurate.media.decode` reported: the store holds only formats that passed the gate.
    ``data`` None: a worker (a crawl's worker process, a Ray task) has written the ``size`` bytes with
    :func:`put_raw` already, to [run] storage, and did not send them back; if that file has gone since,
    ImageError ``missing`` and nothing is recorded. ``files``: the workspace's store (:func:`open_store`),
    for a caller that records many files and has it open already."""
    if fmt not in media.FORMAT_EXT or ext != media.FORMAT_EXT[fmt]:
        raise ImageError(f"refusing to store {sha256[:12]}… as {fmt!r}/.{ext}: only bytes that passed "
                         f"media.decode (formats {', '.join(media.ALLOWED_FORMATS)}) enter the store.",
                         "unsupported_format")
    existing = catalog.image_by_sha(sha256)
    if existing is not None:
        return existing.id, False
    files = files or open_store(ws)
    if data is None:
        rel = raw_relpath(sha256, ext)
        if not files.exists(rel):
            raise ImageError(f"{rel} was written by a download worker but is gone before its record; the URL "
                             f"is recorded as failed (missing), and a later crawl fetches it again.", "missing")
    else:
        rel, size = put_raw(files, data, sha256, ext), len(data)
    return catalog.add_image(sha256=sha256, path=rel, format=fmt, width=width, height=height,
                             size=size or 0, label=label), True
