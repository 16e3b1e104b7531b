"""Images (one row per distinct content) and their sources (one row per path or URL that gave it)."""

from __future__ import annotations

import functools
import sqlite3
from dataclasses import dataclass
from typing import Any

from facecurate.catalog.base import CatalogBase, placeholders, utc_now

IMAGE_COLUMNS = "id, sha256, path, format, width, height, bytes, label, crop_state"


@dataclass(frozen=True)
class ImageRow:
    id: int
    sha256: str
    path: str
    format: str
    width: int
    height: int
    bytes: int
    label: str | None
    crop_state: str | None


@dataclass(frozen=True)
class SourceRow:
    """One path or URL and the provenance it came with."""

    id: int
    image_id: int | None
    kind: str                   # file | url
    location: str
    label: str | None
    page_url: str | None
    title: str | None
    engine: str | None
    query: str | None
    rank: int | None
    license: str | None
    author: str | None
    retrieved_at: str
    status: str                 # ok | failed
    error: str | None           # reason code when failed

    @classmethod
    def from_row(cls, r: sqlite3.Row) -> SourceRow:
        return cls(**{f: r[f] for f in cls.__dataclass_fields__})


@dataclass(frozen=True)
class SourceStatus:
    """What the catalog knows of one path or URL: enough for import to skip a file that has not changed."""

    id: int
    status: str                 # ok | failed
    file_size: int | None
    file_mtime: float | None
    image_id: int | None


@functools.lru_cache(maxsize=16)
def _upsert_source(names: tuple[str, ...]) -> str:
    """The statement for one set of source columns, built once (a crawl records hundreds a second)."""
    updates = ", ".join(f"{k}=excluded.{k}" for k in names if k not in ("kind", "location"))
    return (f"INSERT INTO sources ({', '.join(names)}) VALUES ({placeholders(len(names))}) "
            f"ON CONFLICT(kind, location) DO UPDATE SET {updates}")


class ImagesMixin(CatalogBase):
    def source_state(self, kind: str, location: str) -> sqlite3.Row | None:
        row: sqlite3.Row | None = self.conn.execute(
            "SELECT id, status, file_size, file_mtime, image_id FROM sources WHERE kind=? AND location=?",
            (kind, location)).fetchone()
        return row

    def source_status(self, kind: str, location: str) -> SourceStatus | None:
        row = self.conn.execute(
            "SELECT id, status, file_size, file_mtime, image_id FROM sources WHERE kind=? AND location=?",
            (kind, location)).fetchone()
        return SourceStatus(**row) if row else None

    def image_by_sha(self, sha256: str) -> ImageRow | None:
        row = self.conn.execute(f"SELECT {IMAGE_COLUMNS} FROM images WHERE sha256=?", (sha256,)).fetchone()
        return ImageRow(**row) if row else None

    def image_path(self, image_id: int) -> str | None:
        row = self.conn.execute("SELECT path FROM images WHERE id=?", (image_id,)).fetchone()
        return str(row[0]) if row else None

    def add_image(self, *, sha256: str, path: str, format: str, width: int, height: int, size: int,
                  label: str | None) -> int:
        cur = self.conn.execute(
            "INSERT INTO images (sha256, path, format, width, height, bytes, label, added_at) "
            "VALUES (?,?,?,?,?,?,?,?)", (sha256, path, format, width, height, size, label, utc_now()))
        return int(cur.lastrowid or 0)

    def record_source(self, *, kind: str, location: str, status: str, image_id: int | None = None,
                      label: str | None = None, error: str | None = None, detail: str | None = None,
                      **extra: Any) -> None:
        """Insert or refresh the row for one path or URL (a retried failure overwrites itself)."""
        fields = {"image_id": image_id, "kind": kind, "location": location, "label": label,
                  "status": status, "error": error, "detail": detail, "retrieved_at": utc_now(), **extra}
        self.conn.execute(_upsert_source(tuple(fields)), tuple(fields.values()))

    def images_to_crop(self, redo: bool = False) -> list[ImageRow]:
        where = "" if redo else "WHERE crop_state IS NULL"
        rows = self.conn.execute(f"SELECT {IMAGE_COLUMNS} FROM images {where} ORDER BY id").fetchall()
        return [ImageRow(**r) for r in rows]

    def image_count(self) -> int:
        return self._scalar("SELECT COUNT(*) FROM images")

    def first_sources(self, image_ids: list[int] | None = None) -> dict[int, SourceRow]:
        """The first source that brought each image (its provenance in the manifest and the gallery)."""
        sql = ("SELECT * FROM sources WHERE id IN "
               "(SELECT MIN(id) FROM sources WHERE status='ok' {where} GROUP BY image_id)")
        if image_ids is None:
            return {r["image_id"]: SourceRow.from_row(r) for r in self.conn.execute(sql.format(where=""))}
        out: dict[int, SourceRow] = {}
        for start in range(0, len(image_ids), 500):
            chunk = image_ids[start:start + 500]
            for r in self.conn.execute(sql.format(where=f"AND image_id IN ({placeholders(len(chunk))})"), chunk):
                out[r["image_id"]] = SourceRow.from_row(r)
        return out

    def failed_sources(self) -> list[SourceRow]:
        """Paths and URLs that never became an image (download or decode failures), oldest first."""
        return [SourceRow.from_row(r) for r in self.conn.execute("SELECT * FROM sources WHERE status='failed' "
                                                                 "ORDER BY id")]
