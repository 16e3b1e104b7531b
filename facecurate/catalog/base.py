"""One open catalog: the connection, its transactions and its schema version."""

from __future__ import annotations

import os
import sqlite3
import stat
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, TypeVar

from facecurate.catalog.migrations import migrate, schema_version
from facecurate.catalog.state import ITEM_STATE_VIEW
from facecurate.errors import CatalogError

CatalogT = TypeVar("CatalogT", bound="CatalogBase")


def utc_now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def placeholders(n: int) -> str:
    return ", ".join("?" * n)


_SQLITE_MAGIC = b"SQLite format 3\x00"
_HEADER = 100


def _restore_hint(path: Path) -> str:
    return (f"Restore {path.name} from a backup; to start over with an empty catalog instead, move it away and "
            f"run `facecurate init {path.parent}` (photos under raw/ stay, re-import them from there).")


def check_catalog_file(path: Path) -> None:
    """Refuse a catalog file SQLite would open only to turn into a new, empty one: missing, empty, not SQLite,
    or shorter than its own header says (truncated). Reads 100 bytes and stats two files; writes nothing.

    The length check is skipped while a write-ahead log is beside the file: then the newest pages may live only
    in the log, and the main file may lag behind its header (a checkpoint writes page 1 first). A checkpoint
    finishing between the read and the look for the log is met by reading once more."""
    if not os.path.lexists(path):
        raise CatalogError(f"No catalog at {path}: the workspace's facecurate.db is missing. Only "
                           f"`facecurate init` creates one; if you moved it, put it back. {_restore_hint(path)}")
    for attempt in range(2):
        size, header = _read_header(path)
        if size == 0:
            raise CatalogError(f"The catalog {path} is empty (0 bytes): its data is gone, and facecurate will "
                               f"not silently start a new one. {_restore_hint(path)}")
        if not header.startswith(_SQLITE_MAGIC[:len(header)]):
            raise CatalogError(f"The catalog {path} is not an SQLite database (it does not start with SQLite's "
                               f"header), so it is not a facecurate catalog. {_restore_hint(path)}")
        if len(header) < _HEADER:
            raise CatalogError(f"The catalog {path} is truncated ({size} bytes, shorter than SQLite's "
                               f"100-byte header). {_restore_hint(path)}")
        page_size = int.from_bytes(header[16:18], "big")
        page_size = 65536 if page_size == 1 else page_size
        pages = int.from_bytes(header[28:32], "big")
        counted = header[24:28] == header[92:96] and pages > 0  # SQLite's rule for trusting the page count
        if not counted or size >= pages * page_size or _has_wal(path):
            return
        if attempt:
            raise CatalogError(f"The catalog {path} is truncated: its header counts {pages} pages of "
                               f"{page_size} bytes ({pages * page_size} bytes) but the file has {size}. "
                               f"{_restore_hint(path)}")


def _read_header(path: Path) -> tuple[int, bytes]:
    """The file's size (taken after the read) and its first 100 bytes; a regular file only (opened without
    blocking, so a FIFO in its place is refused rather than waited on)."""
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0))
    except OSError as exc:
        raise CatalogError(f"Cannot read the catalog {path}: {exc.strerror or exc}. Check its permissions.") from exc
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise CatalogError(f"The catalog {path} is not a regular file. Put the workspace's facecurate.db "
                               f"back in its place.")
        header = os.read(fd, _HEADER)
        return os.fstat(fd).st_size, header
    except OSError as exc:
        raise CatalogError(f"Cannot read the catalog {path}: {exc.strerror or exc}. Check its permissions.") from exc
    finally:
        os.close(fd)


def _has_wal(path: Path) -> bool:
    try:
        return os.stat(f"{path}-wal").st_size > 0
    except OSError:
        return False


def _refuse_foreign(conn: sqlite3.Connection, path: Path, *, blank_ok: bool) -> None:
    """An SQLite file with tables but no schema version is some other program's database: never migrate it.
    A blank one (no tables) is what an interrupted ``init`` leaves: only ``init`` may complete it."""
    if schema_version(conn) == 0:
        tables = conn.execute("SELECT COUNT(*) FROM sqlite_master").fetchone()[0]
        if blank_ok and not tables:
            return
        what = "another program's SQLite database" if tables else "an SQLite file facecurate never initialised"
        raise CatalogError(f"{path} is {what} (no facecurate schema version), not a facecurate catalog; "
                           f"facecurate leaves it untouched. {_restore_hint(path)}")


class CatalogBase:
    """The connection every concern's queries share. Writes happen inside :meth:`transaction` batches."""

    def __init__(self, conn: sqlite3.Connection, path: Path) -> None:
        self.conn = conn
        self.path = path

    @classmethod
    def open(cls: type[CatalogT], path: Path, *, create: bool = False) -> CatalogT:
        """Open a workspace's catalog, moving an older schema forward.

        Only ``create=True`` (``init``, and tests building a catalog from nothing) may make a new file. Without
        it a missing, empty, truncated or non-SQLite file is refused before SQLite touches it: an empty file
        would otherwise become a fresh, empty catalog, and the next export would faithfully mirror nothing."""
        if not (create and not os.path.lexists(path)):
            check_catalog_file(path)
        try:
            target = path if create else f"{path.resolve().as_uri()}?mode=rw"
            conn = sqlite3.connect(target, timeout=30, isolation_level=None, check_same_thread=False,
                                   uri=not create)
        except sqlite3.Error as exc:
            raise CatalogError(f"Cannot open the catalog {path}: {exc}. Check that the folder is writable "
                               f"and the file is a facecurate catalog.") from exc
        try:
            conn.row_factory = sqlite3.Row
            _refuse_foreign(conn, path, blank_ok=create)
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute("PRAGMA synchronous=NORMAL")
            conn.execute("PRAGMA foreign_keys=ON")
            migrate(conn, path)
            conn.execute(ITEM_STATE_VIEW)  # temp: lives with this connection, never written to the file
        except sqlite3.Error as exc:
            conn.close()
            raise CatalogError(f"Cannot open the catalog {path}: {exc}. Check that the folder is writable "
                               f"and the file is a facecurate catalog.") from exc
        except BaseException:
            conn.close()
            raise
        return cls(conn, path)

    @classmethod
    def create(cls: type[CatalogT], path: Path) -> CatalogT:
        """A new catalog at ``path`` (or the one already there, checked and migrated)."""
        return cls.open(path, create=True)

    def close(self) -> None:
        self.conn.close()

    def __enter__(self: CatalogT) -> CatalogT:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @property
    def schema_version(self) -> int:
        return schema_version(self.conn)

    @contextmanager
    def transaction(self) -> Iterator[sqlite3.Connection]:
        """One batch = one transaction: a crash loses at most the batch in flight."""
        self.conn.execute("BEGIN IMMEDIATE")
        try:
            yield self.conn
        except BaseException:
            self.conn.execute("ROLLBACK")
            raise
        self.conn.execute("COMMIT")

    def _scalar(self, sql: str, params: tuple[Any, ...] | list[Any] = ()) -> int:
        return int(self.conn.execute(sql, params).fetchone()[0] or 0)

    def table_columns(self, table: str) -> frozenset[str]:
        """Columns of a table as this catalog has them."""
        return frozenset(r["name"] for r in self.conn.execute("SELECT name FROM pragma_table_info(?)", (table,)))
