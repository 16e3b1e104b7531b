"""Opening a catalog at any schema version and moving it forward to the current one."""

from __future__ import annotations

import sqlite3
from pathlib import Path

from facecurate.catalog.schema import MIGRATIONS
from facecurate.errors import CatalogError


def statements(script: str) -> list[str]:
    """A migration script as statements, cut where SQLite itself says one is complete.

    ``executescript`` would commit on its own, outside the version bump's transaction; SQLite's own test
    keeps semicolons inside comments, strings and trigger bodies where they belong."""
    out: list[str] = []
    buf = ""
    for line in script.splitlines(keepends=True):
        buf += line
        if sqlite3.complete_statement(buf):
            out.append(buf.strip())
            buf = ""
    if buf.strip() and not sqlite3.complete_statement(buf + ";"):
        raise CatalogError(f"Unfinished statement in a migration: {buf.strip()[:80]!r}")
    if buf.strip() and _has_code(buf):
        out.append(buf.strip())
    return out


def _has_code(text: str) -> bool:
    return any(line.split("--", 1)[0].strip() for line in text.splitlines())


def schema_version(conn: sqlite3.Connection) -> int:
    return int(conn.execute("PRAGMA user_version").fetchone()[0])


def migrate(conn: sqlite3.Connection, path: Path) -> None:
    """Apply every missing version in order; each version and its ``user_version`` bump is one transaction."""
    version = schema_version(conn)
    if version > len(MIGRATIONS):
        raise CatalogError(f"{path} has schema v{version}, newer than this facecurate understands "
                           f"(v{len(MIGRATIONS)}). Upgrade facecurate.")
    for target in range(version + 1, len(MIGRATIONS) + 1):
        conn.execute("BEGIN IMMEDIATE")
        try:
            for statement in statements(MIGRATIONS[target - 1]):
                conn.execute(statement)
            conn.execute(f"PRAGMA user_version = {target}")
        except BaseException:
            conn.execute("ROLLBACK")
            raise
        conn.execute("COMMIT")
