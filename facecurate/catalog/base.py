"""One open catalog: the connection, its transactions and its schema version."""

from __future__ import annotations

import sqlite3
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


class CatalogBase:
    """The connection every concern's queries share. Writes happen inside :meth:`transaction` batches."""

    def __init__(self, conn: sqlite3.Connection, path: Path) -> None:
        self.conn = conn
        self.path = path

    @classmethod
    def open(cls: type[CatalogT], path: Path) -> CatalogT:
        try:
            conn = sqlite3.connect(path, timeout=30, isolation_level=None, check_same_thread=False)
            conn.row_factory = sqlite3.Row
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute("PRAGMA synchronous=NORMAL")
            conn.execute("PRAGMA foreign_keys=ON")
            migrate(conn, path)
            conn.execute(ITEM_STATE_VIEW)  # temp: lives with this connection, never written to the file
        except sqlite3.Error as exc:
            raise CatalogError(f"Cannot open the catalog {path}: {exc}. Check that the folder is writable "
                               f"and the file is a facecurate catalog.") from exc
        return cls(conn, path)

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
