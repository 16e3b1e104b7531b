"""The SQLite catalog: schema, migrations and the typed queries every stage uses.

The catalog is the single source of truth; files on disk are content-addressed and only referenced from
here. Schema versions live in ``PRAGMA user_version`` and move forward through MIGRATIONS, one script per
version, so a workspace made by an older release opens (and upgrades) in a newer one.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from facecurate.errors import CatalogError

_V1_CORE = """
    CREATE TABLE images (
        id          INTEGER PRIMARY KEY,
        sha256      TEXT NOT NULL UNIQUE,
        path        TEXT NOT NULL,          -- relative to the workspace: raw/ab/<sha256>.<ext>
        format      TEXT NOT NULL,
        width       INTEGER NOT NULL,       -- after EXIF orientation
        height      INTEGER NOT NULL,
        bytes       INTEGER NOT NULL,
        label       TEXT,                   -- label of the first source that brought it
        added_at    TEXT NOT NULL,
        crop_state  TEXT,                   -- NULL pending | done | no_face | failed
        crop_error  TEXT,
        cropped_at  TEXT
    );
    CREATE TABLE sources (
        id           INTEGER PRIMARY KEY,
        image_id     INTEGER REFERENCES images(id),   -- NULL while status = failed
        kind         TEXT NOT NULL,                   -- file | url
        location     TEXT NOT NULL,                   -- absolute path or URL
        label        TEXT,
        file_size    INTEGER,
        file_mtime   REAL,
        page_url     TEXT, title TEXT, engine TEXT, query TEXT, rank INTEGER,
        license      TEXT, author TEXT, http_status INTEGER,
        retrieved_at TEXT NOT NULL,
        status       TEXT NOT NULL,                   -- ok | failed
        error        TEXT,                            -- reason code when failed
        detail       TEXT,                            -- the human message when failed
        UNIQUE (kind, location)
    );
    CREATE INDEX sources_image ON sources(image_id);
    CREATE TABLE faces (
        id             INTEGER PRIMARY KEY,
        image_id       INTEGER NOT NULL REFERENCES images(id),
        face_index     INTEGER NOT NULL,
        det_score      REAL NOT NULL,
        bbox           TEXT NOT NULL,   -- JSON [x1, y1, x2, y2], source px
        landmarks      TEXT NOT NULL,   -- JSON [[x, y] x 5], source px
        quad           TEXT NOT NULL,   -- JSON [[x, y] x 4]: upper-left, lower-left, lower-right, upper-right
        oob_fraction   REAL NOT NULL,
        above_fraction REAL NOT NULL,
        side_fraction  REAL NOT NULL,
        eye_angle      REAL NOT NULL,
        crop_path      TEXT NOT NULL,
        crop_size      INTEGER NOT NULL,
        status         TEXT NOT NULL DEFAULT 'keep',  -- keep | reject | duplicate
        reasons        TEXT NOT NULL DEFAULT '[]',
        scores         TEXT NOT NULL DEFAULT '{}',
        UNIQUE (image_id, face_index)
    );
    """

# Each later stage owns one step; a step's text may change only until a release ships it.
_V2_DEDUP = """
    -- perceptual hashes, duplicate groups (dedup stage)
"""
_V3_CRAWL = """
    -- tracked queries, query runs and the URL frontier (crawl stage)
"""
_V4_RULES = """
    -- rule results bookkeeping (filter stage)
"""

MIGRATIONS: tuple[str, ...] = (_V1_CORE, _V2_DEDUP, _V3_CRAWL, _V4_RULES)

IMAGE_COLUMNS = "id, sha256, path, format, width, height, bytes, label, crop_state"


def utc_now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


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
class FaceRecord:
    """One aligned face, as the crop stage hands it to the catalog."""

    face_index: int
    det_score: float
    bbox: list[float]
    landmarks: list[list[float]]
    quad: list[list[float]]
    oob_fraction: float
    above_fraction: float
    side_fraction: float
    eye_angle: float
    crop_path: str
    crop_size: int


class Catalog:
    """A connection to one workspace's catalog. Writes happen inside :meth:`transaction` batches."""

    def __init__(self, conn: sqlite3.Connection, path: Path) -> None:
        self.conn = conn
        self.path = path

    @classmethod
    def open(cls, path: Path) -> Catalog:
        try:
            conn = sqlite3.connect(path, timeout=30, isolation_level=None, check_same_thread=False)
            conn.row_factory = sqlite3.Row
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute("PRAGMA synchronous=NORMAL")
            conn.execute("PRAGMA foreign_keys=ON")
        except sqlite3.Error as exc:
            raise CatalogError(f"Cannot open the catalog {path}: {exc}. Check that the folder is writable "
                               f"and the file is a facecurate catalog.") from exc
        catalog = cls(conn, path)
        catalog.migrate()
        return catalog

    def close(self) -> None:
        self.conn.close()

    def __enter__(self) -> Catalog:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @property
    def schema_version(self) -> int:
        return int(self.conn.execute("PRAGMA user_version").fetchone()[0])

    def migrate(self) -> None:
        version = self.schema_version
        if version > len(MIGRATIONS):
            raise CatalogError(f"{self.path} has schema v{version}, newer than this facecurate understands "
                               f"(v{len(MIGRATIONS)}). Upgrade facecurate.")
        for target in range(version + 1, len(MIGRATIONS) + 1):
            with self.transaction():
                for statement in _statements(MIGRATIONS[target - 1]):
                    self.conn.execute(statement)
                self.conn.execute(f"PRAGMA user_version = {target}")

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

    # -- sources and images -------------------------------------------------------------------------

    def source_state(self, kind: str, location: str) -> sqlite3.Row | None:
        return self.conn.execute(
            "SELECT id, status, file_size, file_mtime, image_id FROM sources WHERE kind=? AND location=?",
            (kind, location)).fetchone()

    def image_by_sha(self, sha256: str) -> ImageRow | None:
        row = self.conn.execute(f"SELECT {IMAGE_COLUMNS} FROM images WHERE sha256=?", (sha256,)).fetchone()
        return ImageRow(**row) if row else None

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
        names = ", ".join(fields)
        updates = ", ".join(f"{k}=excluded.{k}" for k in fields if k not in ("kind", "location"))
        self.conn.execute(
            f"INSERT INTO sources ({names}) VALUES ({', '.join('?' * len(fields))}) "
            f"ON CONFLICT(kind, location) DO UPDATE SET {updates}", tuple(fields.values()))

    # -- crop stage -----------------------------------------------------------------------------------

    def images_to_crop(self, redo: bool = False) -> list[ImageRow]:
        where = "" if redo else "WHERE crop_state IS NULL"
        rows = self.conn.execute(f"SELECT {IMAGE_COLUMNS} FROM images {where} ORDER BY id").fetchall()
        return [ImageRow(**r) for r in rows]

    def save_crop_result(self, image_id: int, state: str, faces: Iterable[FaceRecord],
                         error: str | None = None) -> None:
        """Replace an image's faces and mark its crop state; call inside a transaction."""
        self.conn.execute("DELETE FROM faces WHERE image_id=?", (image_id,))
        for f in faces:
            self.conn.execute(
                "INSERT INTO faces (image_id, face_index, det_score, bbox, landmarks, quad, oob_fraction, "
                "above_fraction, side_fraction, eye_angle, crop_path, crop_size) "
                "VALUES (?,?,?,?,?,?,?,?,?,?,?,?)",
                (image_id, f.face_index, f.det_score, json.dumps(f.bbox), json.dumps(f.landmarks),
                 json.dumps(f.quad), f.oob_fraction, f.above_fraction, f.side_fraction, f.eye_angle,
                 f.crop_path, f.crop_size))
        self.conn.execute("UPDATE images SET crop_state=?, crop_error=?, cropped_at=? WHERE id=?",
                          (state, error, utc_now(), image_id))

    # -- reporting ----------------------------------------------------------------------------------

    def counts(self) -> dict[str, Any]:
        """Counts per stage and per label, for `status` (and `--json`)."""
        one = self._scalar
        by_label: dict[str, dict[str, int]] = {}
        for row in self.conn.execute(
                "SELECT COALESCE(label, '') AS label, COUNT(*) AS images, "
                "SUM(crop_state IS NULL) AS pending, SUM(crop_state='done') AS with_face, "
                "SUM(crop_state='no_face') AS no_face, SUM(crop_state='failed') AS failed "
                "FROM images GROUP BY 1 ORDER BY 1"):
            by_label[row["label"]] = {k: int(row[k] or 0) for k in
                                      ("images", "pending", "with_face", "no_face", "failed")}
        for row in self.conn.execute(
                "SELECT COALESCE(i.label, '') AS label, f.status, COUNT(*) AS n FROM faces f "
                "JOIN images i ON i.id=f.image_id GROUP BY 1, 2"):
            by_label.setdefault(row["label"], {})[f"faces_{row['status']}"] = int(row["n"])
        return {
            "sources": {"ok": one("SELECT COUNT(*) FROM sources WHERE status='ok'"),
                        "failed": one("SELECT COUNT(*) FROM sources WHERE status='failed'")},
            "images": one("SELECT COUNT(*) FROM images"),
            "crop": {"pending": one("SELECT COUNT(*) FROM images WHERE crop_state IS NULL"),
                     "done": one("SELECT COUNT(*) FROM images WHERE crop_state='done'"),
                     "no_face": one("SELECT COUNT(*) FROM images WHERE crop_state='no_face'"),
                     "failed": one("SELECT COUNT(*) FROM images WHERE crop_state='failed'")},
            "faces": {row["status"]: int(row["n"]) for row in
                      self.conn.execute("SELECT status, COUNT(*) AS n FROM faces GROUP BY status")},
            "by_label": by_label,
        }

    def _scalar(self, sql: str, params: tuple[Any, ...] = ()) -> int:
        return int(self.conn.execute(sql, params).fetchone()[0] or 0)


def _statements(script: str) -> list[str]:
    """Split a migration script into statements (sqlite3.executescript would commit on its own)."""
    out, buf = [], []
    for line in script.splitlines():
        buf.append(line.split("--", 1)[0])
        if line.split("--", 1)[0].rstrip().endswith(";"):
            stmt = "\n".join(buf).strip()
            if stmt.strip(";").strip():
                out.append(stmt)
            buf = []
    rest = "\n".join(buf).strip()
    if rest:
        out.append(rest)
    return out
