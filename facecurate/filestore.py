"""Where the content-addressed files (``raw/…`` originals, ``crops/…``) live: the workspace, a shared path, or
an fsspec URL (``s3://bucket/prefix``) that every node of a cluster sees.

Why a module of its own: the stages' per-item work (download, dedup hashing, crop, filter) runs in this process
or on a Ray worker on another node; both must read and write the same files by the same workspace-relative
names (``raw/ab/<sha256>.jpg``), and neither should know which kind of storage holds them. Three kinds:

- :class:`LocalStore` — a folder: the workspace itself (``[run] storage = ""``, today's layout and speed: plain
  files, ``media.read_limited`` and ``media.atomic_write``; fsspec is never imported) or a shared mount.
- :class:`FsspecStore` — a URL. On an object store one PUT is atomic (the object appears whole or not at all),
  so a file is written with one ``pipe_file``; elsewhere (``file://``, ``sftp://``…) a temp key is written and
  renamed, as for local files.
- :class:`MirrorStore` — what the driver uses when storage is not the workspace: the workspace's folders are a
  local mirror, filled on demand (a file a worker wrote is fetched on first read, atomically), and every write
  goes to storage too (so a stage run locally leaves its files where a later Ray stage's workers find them).
  Review, export and the local stages therefore keep reading ordinary files under the workspace.

A name under ``raw/`` is the sha256 of its bytes, so writes there are *once*: an existing object is never
rewritten. A crop's name is its photo's hash and face index, and ``crop --redo`` may cut it again with other
settings, so crops are overwritten (atomically).
"""

from __future__ import annotations

import contextlib
import os
import re
import uuid
from pathlib import Path
from typing import Any, Protocol

from facecurate import media
from facecurate.errors import ConfigError, ImageError
from facecurate.workspace import Workspace

# fsspec protocols whose single PUT is atomic (an object appears whole or not at all); others get temp + rename
OBJECT_STORES = frozenset({"s3", "s3a", "gs", "gcs", "az", "abfs", "abfss", "adl", "oss", "r2", "memory"})
URL = re.compile(r"[A-Za-z][A-Za-z0-9+.-]*://.+")
TMP_PREFIX = ".tmp/"  # temp keys of non-object URL stores, beside the files


class FileStore(Protocol):
    """Content-addressed files by workspace-relative name (``raw/ab/….jpg``)."""

    @property
    def where(self) -> str:
        """The storage in words (a path or URL), for messages."""
        ...

    def read(self, rel: str, max_bytes: int) -> bytes:
        """The whole file, never more than ``max_bytes``; ImageError (reason ``missing``/``too_large``) if not."""
        ...

    def write(self, rel: str, data: bytes, *, once: bool = False) -> None:
        """Atomically: a reader sees the old file, nothing, or the whole new one. ``once``: keep an existing
        file (content-addressed names: same name, same bytes)."""
        ...

    def exists(self, rel: str) -> bool: ...

    def stamp(self, rel: str) -> str | None:
        """Size and version of the file (changes when it is rewritten), or None when it is missing."""
        ...


class LocalStore:
    """Files under a folder: the workspace (the default) or a mount every node shares."""

    def __init__(self, root: Path, tmp_dir: Path | None = None) -> None:
        self.root, self.tmp_dir = root, tmp_dir

    @property
    def where(self) -> str:
        return str(self.root)

    def path(self, rel: str) -> Path:
        return self.root / rel

    def read(self, rel: str, max_bytes: int) -> bytes:
        return media.read_limited(self.root / rel, max_bytes)

    def write(self, rel: str, data: bytes, *, once: bool = False) -> None:
        target = self.root / rel
        if once and target.exists():
            return
        media.atomic_write(target, data, self.tmp_dir)

    def exists(self, rel: str) -> bool:
        return (self.root / rel).is_file()

    def stamp(self, rel: str) -> str | None:
        try:
            st = (self.root / rel).stat()
        except OSError:
            return None
        return f"{st.st_size}:{st.st_mtime_ns}"


class FsspecStore:
    """Files under an fsspec URL. The filesystem object is made on first use in each process (it holds an event
    loop and connections, which neither pickle to a Ray worker nor survive a fork)."""

    def __init__(self, url: str, options: dict[str, Any] | None = None) -> None:
        self.url = url.rstrip("/")
        self.options = dict(options or {})
        self.protocol = url.split("://", 1)[0].lower()
        self._fs: Any = None
        self._base = ""
        self._pid = 0

    def __getstate__(self) -> dict[str, Any]:
        return {**self.__dict__, "_fs": None, "_pid": 0}

    @property
    def where(self) -> str:
        return self.url

    def _filesystem(self) -> tuple[Any, str]:
        if self._fs is None or self._pid != os.getpid():
            try:
                import fsspec
            except ImportError as exc:  # a core install without the ray extra
                raise ConfigError(f"[run] storage = {self.url!r} needs fsspec and its driver for "
                                  f"{self.protocol}:// (for s3: s3fs): install the extra with `uv sync --extra ray` "
                                  f"or `pip install 'facecurate[ray]'`.") from exc
            try:
                self._fs, self._base = fsspec.core.url_to_fs(self.url, **self.options)
            except (ImportError, ValueError) as exc:
                raise ConfigError(f"[run] storage = {self.url!r} cannot be opened ({exc}). Install the fsspec "
                                  f"driver it names, or fix the URL.") from exc
            self._base = self._base.rstrip("/")
            self._pid = os.getpid()
        return self._fs, self._base

    def key(self, rel: str) -> str:
        return f"{self._filesystem()[1]}/{rel}"

    def read(self, rel: str, max_bytes: int) -> bytes:
        fs, _ = self._filesystem()
        key = self.key(rel)
        try:  # one ranged GET, never more than max_bytes + 1 bytes
            data: bytes = fs.cat_file(key, start=0, end=max_bytes + 1)
        except FileNotFoundError as exc:
            raise ImageError(f"{self.url}/{rel} does not exist in storage (a file the catalog records was "
                             f"removed or never uploaded): run the stage that writes it again.", "missing") from exc
        except OSError as exc:
            raise ImageError(f"{self.url}/{rel} cannot be read from storage ({exc}).", "unreadable") from exc
        if len(data) > max_bytes:
            raise ImageError(f"{self.url}/{rel} is larger than [media] max_bytes ({max_bytes} bytes).", "too_large")
        return data

    def write(self, rel: str, data: bytes, *, once: bool = False) -> None:
        fs, _ = self._filesystem()
        key = self.key(rel)
        if once and fs.exists(key):
            return
        if self.protocol in OBJECT_STORES:
            fs.pipe_file(key, data)  # one PUT (multipart above s3fs's chunk size): whole or nothing
            return
        tmp = self.key(f"{TMP_PREFIX}{os.getpid()}-{uuid.uuid4().hex}")
        try:
            for folder in {tmp.rsplit("/", 1)[0], key.rsplit("/", 1)[0]}:
                fs.makedirs(folder, exist_ok=True)
            fs.pipe_file(tmp, data)
            fs.mv(tmp, key)
        except BaseException:
            with contextlib.suppress(OSError):
                fs.rm_file(tmp)
            raise

    def exists(self, rel: str) -> bool:
        fs, _ = self._filesystem()
        return bool(fs.exists(self.key(rel)))

    def stamp(self, rel: str) -> str | None:
        fs, _ = self._filesystem()
        try:
            info = fs.info(self.key(rel))
        except FileNotFoundError:
            return None
        version = info.get("ETag") or info.get("LastModified") or info.get("mtime") or info.get("created") or ""
        return f"{info.get('size')}:{str(version).strip(chr(34))}"


class MirrorStore:
    """The driver's view when storage is elsewhere: the workspace's folders mirror it, filled on first read."""

    def __init__(self, local: LocalStore, remote: FileStore) -> None:
        self.local, self.remote = local, remote

    @property
    def where(self) -> str:
        return self.remote.where

    def fetch(self, rel: str, max_bytes: int) -> Path:
        """The local copy of ``rel``, fetched from storage first if the mirror lacks it."""
        path = self.local.path(rel)
        if not path.is_file():
            self.local.write(rel, self.remote.read(rel, max_bytes), once=True)
        return path

    def read(self, rel: str, max_bytes: int) -> bytes:
        if self.local.exists(rel):
            return self.local.read(rel, max_bytes)
        data = self.remote.read(rel, max_bytes)
        self.local.write(rel, data, once=True)
        return data

    def write(self, rel: str, data: bytes, *, once: bool = False) -> None:
        self.remote.write(rel, data, once=once)  # storage first: the mirror never holds what storage lacks
        self.local.write(rel, data, once=once)

    def exists(self, rel: str) -> bool:
        return self.local.exists(rel) or self.remote.exists(rel)

    def stamp(self, rel: str) -> str | None:
        return self.remote.stamp(rel)


def storage_setting(ws: Workspace) -> str:
    return str(ws.config().get("run", "storage")).strip()


def open_at(root: str | Path, storage: str) -> FileStore:
    """The store a worker uses: ``storage`` as [run] storage says it, ``root`` the workspace's path."""
    if not storage:
        return LocalStore(Path(root), Path(root) / ".tmp")
    if URL.fullmatch(storage):
        return FsspecStore(storage)
    path = Path(storage)
    return LocalStore(path, path / ".tmp")


def open_mirrored(root: str | Path, storage: str) -> FileStore:
    """The store the driver and its local stages read and write through: the workspace's folders, plainly when
    they are the storage, else as a :class:`MirrorStore` of it."""
    local = LocalStore(Path(root), Path(root) / ".tmp")
    if not storage or Path(storage) == Path(root):
        return local
    return MirrorStore(local, open_at(root, storage))


def open_store(ws: Workspace) -> FileStore:
    """:func:`open_mirrored` for a workspace and its [run] storage."""
    return open_mirrored(ws.root, storage_setting(ws))


def mirror_files(ws: Workspace, rels: list[str], max_bytes: int) -> int:
    """Fetch into the workspace every file of ``rels`` it lacks, when [run] storage is elsewhere (an export's
    manifest and layout point at the workspace's crops); returns how many were fetched. Nothing to do, and no
    look at any file, when the workspace is the storage."""
    store = open_store(ws)
    if not isinstance(store, MirrorStore):
        return 0
    fetched = 0
    for rel in rels:
        if not store.local.exists(rel):
            try:
                store.fetch(rel, max_bytes)
                fetched += 1
            except ImageError:
                pass  # missing in storage too: the manifest row says so as before
    return fetched


def forget_mirrored(ws: Workspace, rels: list[str]) -> None:
    """Drop the workspace's copies of files a worker has just rewritten in [run] storage (crops cut again under
    ``crop --redo``), so the next reader fetches the new ones instead of a stale mirror. Originals never change
    (a name is its content's hash) and need none of this; with the workspace as storage there is no mirror."""
    store = open_store(ws)
    if isinstance(store, MirrorStore):
        for rel in rels:
            store.local.path(rel).unlink(missing_ok=True)


def local_file(ws: Workspace, rel: str, max_bytes: int) -> Path:
    """The workspace path of a stored file, for readers that want a path (review thumbnails, export layouts):
    fetched from [run] storage first when it is elsewhere and the workspace lacks it. A missing file stays
    missing (the caller reports it as before)."""
    store = open_store(ws)
    if isinstance(store, MirrorStore):
        try:
            return store.fetch(rel, max_bytes)
        except ImageError:
            pass
    return ws.resolve(rel)
