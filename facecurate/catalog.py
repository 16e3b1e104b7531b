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
    -- One row per hashed file and hash setting: a re-run hashes only files without a row, or whose stamp
    -- changed (crops are rewritten in place by crop --redo; raw files are content-addressed).
    CREATE TABLE dedup_hashes (
        path         TEXT NOT NULL,     -- workspace-relative: raw/... (an image) or crops/... (a face)
        algo         TEXT NOT NULL,     -- hash setting, e.g. phash/w95 (algorithm, crop window)
        stamp        TEXT NOT NULL,     -- the file's identity when hashed: sha256 (raw) or size:mtime_ns (crop)
        hash         INTEGER,           -- 64-bit perceptual hash, two's complement (SQLite integers are signed)
        hash_flip    INTEGER,           -- of the horizontal mirror
        window       INTEGER,           -- of the central crop window (NULL when windows are off)
        window_flip  INTEGER,
        pixels       TEXT,              -- sha256 of the decoded pixels and their shape
        thumb        BLOB,              -- 24x24 grayscale, for verifying candidates
        sharpness    REAL,
        jpeg_quality INTEGER,
        error        TEXT,              -- why the file could not be hashed (the other columns are then NULL)
        hashed_at    TEXT NOT NULL,
        PRIMARY KEY (path, algo)
    );
    -- Duplicates are marked, never deleted. dup_group = id of the group's keeper image (on the keeper too);
    -- dup_of = the keeper (images.id; faces.id for faces), NULL on keepers and on everything not duplicated;
    -- dup_distance = Hamming bits to the keeper; dup_transform = NULL | hflip | crop | hflip+crop;
    -- dup_kind = pixels | perceptual (faces also: image = its photo is a duplicate photo).
    ALTER TABLE images ADD COLUMN dup_group INTEGER;
    ALTER TABLE images ADD COLUMN dup_of INTEGER;
    ALTER TABLE images ADD COLUMN dup_distance INTEGER;
    ALTER TABLE images ADD COLUMN dup_transform TEXT;
    ALTER TABLE images ADD COLUMN dup_kind TEXT;
    ALTER TABLE faces ADD COLUMN dup_group INTEGER;
    ALTER TABLE faces ADD COLUMN dup_of INTEGER;
    ALTER TABLE faces ADD COLUMN dup_distance INTEGER;
    ALTER TABLE faces ADD COLUMN dup_transform TEXT;
    ALTER TABLE faces ADD COLUMN dup_kind TEXT;
    CREATE INDEX images_dup_group ON images(dup_group);
    CREATE INDEX faces_dup_group ON faces(dup_group);
"""
_V3_CRAWL = """
    -- tracked queries, query runs and the URL frontier (crawl stage)
    CREATE TABLE queries (
        id          INTEGER PRIMARY KEY,
        term        TEXT NOT NULL,                  -- NFC, trimmed
        label       TEXT NOT NULL,
        added_at    TEXT NOT NULL,
        removed_at  TEXT,                           -- soft delete: runs and hits keep their history
        UNIQUE (label, term)
    );
    CREATE TABLE query_runs (
        id          INTEGER PRIMARY KEY,
        query_id    INTEGER NOT NULL REFERENCES queries(id),
        engine      TEXT NOT NULL,
        state       TEXT NOT NULL,                  -- running | done | blocked
        cursor      TEXT NOT NULL DEFAULT '{}',     -- engine's JSON resume state (next page)
        target      INTEGER NOT NULL,               -- results wanted (--limit)
        empty_pages INTEGER NOT NULL DEFAULT 0,     -- result pages in a row that brought nothing new
        started_at  TEXT NOT NULL,
        finished_at TEXT,
        error       TEXT,                           -- why it is blocked, with the saved page
        saved_page  TEXT
    );
    CREATE INDEX query_runs_pair ON query_runs(query_id, engine);
    CREATE TABLE frontier (
        id          INTEGER PRIMARY KEY,
        norm_url    TEXT NOT NULL UNIQUE,           -- normalised: one fetch per image URL across runs
        url         TEXT NOT NULL,                  -- as first found (the sources.location it gets)
        state       TEXT NOT NULL DEFAULT 'pending',-- pending | ok | failed
        image_id    INTEGER REFERENCES images(id),
        error       TEXT,
        http_status INTEGER,
        attempts    INTEGER NOT NULL DEFAULT 0,
        fetched_at  TEXT
    );
    CREATE TABLE hits (
        id          INTEGER PRIMARY KEY,
        run_id      INTEGER NOT NULL REFERENCES query_runs(id),
        url_id      INTEGER NOT NULL REFERENCES frontier(id),
        rank        INTEGER NOT NULL,
        page_url    TEXT, title TEXT, license TEXT, author TEXT,
        outcome     TEXT,                           -- NULL pending | new | duplicate | failed
        UNIQUE (run_id, url_id)
    );
    CREATE INDEX hits_url ON hits(url_id);
    CREATE TABLE query_files (
        label       TEXT PRIMARY KEY,
        sha256      TEXT NOT NULL                   -- of queries/<label>.txt as last written: edits show
    );
"""
_V4_RULES = """
    -- every detection of the photo (box, prob), so rules can see faces beside the one that was cropped
    ALTER TABLE images ADD COLUMN detections TEXT NOT NULL DEFAULT '[]';
    -- when the rules last decided this face; scores holds every measure, so a threshold change re-decides
    -- without recomputing anything
    ALTER TABLE faces ADD COLUMN filtered_at TEXT;
"""

_V5_REVIEW = """
    -- the append-only review decision log (review stage): one row per item per key press, undo included.
    -- An item is (image_id, face_index), not faces.id: crop --redo replaces face rows, a decision must survive.
    CREATE TABLE review_log (
        id              INTEGER PRIMARY KEY,
        image_id        INTEGER NOT NULL REFERENCES images(id),
        face_index      INTEGER NOT NULL,
        batch           INTEGER NOT NULL,   -- one key press (one item or a whole selection) is one batch
        action          TEXT NOT NULL,      -- keep | reject | undo
        decision_before TEXT NOT NULL,      -- none | kept | rejected
        decision_after  TEXT NOT NULL,      -- none | kept | rejected
        rule_status     TEXT,               -- what the rules said at that moment: keep | reject | duplicate
        undoes          INTEGER,            -- for action = undo: the batch it takes back
        reviewer        TEXT NOT NULL,
        session         TEXT NOT NULL,      -- one gallery run
        decided_at      TEXT NOT NULL
    );
    CREATE INDEX review_log_item ON review_log(image_id, face_index, id);
    CREATE INDEX review_log_batch ON review_log(batch);
    CREATE TRIGGER review_log_no_update BEFORE UPDATE ON review_log BEGIN SELECT RAISE(ABORT, 'append-only'); END;
    CREATE TRIGGER review_log_no_delete BEFORE DELETE ON review_log BEGIN SELECT RAISE(ABORT, 'append-only'); END;
"""

_V6_DEDUP_WINDOWS = """
    -- dedup hashes four crop windows per photo instead of one central window (off-centre trims). The cached
    -- fingerprints are of the old kind (their algo key names an older fingerprint version): drop them, the next
    -- dedup run hashes again.
    DELETE FROM dedup_hashes;
    ALTER TABLE dedup_hashes DROP COLUMN window;
    ALTER TABLE dedup_hashes DROP COLUMN window_flip;
    ALTER TABLE dedup_hashes ADD COLUMN windows BLOB;   -- each window's hash, then each mirror's: 8 bytes big-endian
"""

MIGRATIONS: tuple[str, ...] = (_V1_CORE, _V2_DEDUP, _V3_CRAWL, _V4_RULES, _V5_REVIEW, _V6_DEDUP_WINDOWS)

IMAGE_COLUMNS = "id, sha256, path, format, width, height, bytes, label, crop_state"
RUN_COLUMNS = "id, query_id, engine, state, cursor, target, empty_pages, started_at, finished_at, error, saved_page"


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


@dataclass(frozen=True)
class QueryRow:
    id: int
    label: str
    term: str
    added_at: str


@dataclass(frozen=True)
class RunRow:
    """One crawl of one (query, engine) pair; ``cursor`` is the engine's JSON resume state."""

    id: int
    query_id: int
    engine: str
    state: str
    cursor: str
    target: int
    empty_pages: int
    started_at: str
    finished_at: str | None
    error: str | None
    saved_page: str | None


@dataclass(frozen=True)
class DownloadRow:
    """A URL to fetch with the provenance of the hit that asked for it."""

    url_id: int
    url: str
    rank: int
    page_url: str | None
    title: str | None
    license: str | None
    author: str | None
    engine: str
    query: str
    label: str


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
                         error: str | None = None, detections: list[dict[str, Any]] | None = None) -> None:
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
        # Faces of a photo dedup already marked as a copy leave with it, whatever order the stages ran in;
        # dedup's face pass later points each at the matching face of the kept photo.
        self.conn.execute("UPDATE faces SET status='duplicate', dup_kind='image', "
                          "dup_group=(SELECT dup_group FROM images WHERE id=?) "
                          "WHERE image_id=? AND (SELECT dup_of FROM images WHERE id=?) IS NOT NULL",
                          (image_id, image_id, image_id))
        self.conn.execute("UPDATE images SET crop_state=?, crop_error=?, cropped_at=?, detections=? WHERE id=?",
                          (state, error, utc_now(), json.dumps(detections or []), image_id))

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
            "reasons": {r[0]: int(r[1]) for r in self.conn.execute(
                "SELECT j.value, COUNT(*) FROM faces f, json_each(f.reasons) j GROUP BY 1 ORDER BY 2 DESC, 1")},
            "dedup": self.dedup_counts(),
        }

    def _scalar(self, sql: str, params: tuple[Any, ...] = ()) -> int:
        return int(self.conn.execute(sql, params).fetchone()[0] or 0)

    # -- crawl stage --------------------------------------------------------------------------------

    def add_query(self, label: str, term: str) -> bool:
        """Track a term under a label (or bring back a removed one); False when it was already tracked."""
        row = self.conn.execute("SELECT id, removed_at FROM queries WHERE label=? AND term=?",
                                (label, term)).fetchone()
        if row is None:
            self.conn.execute("INSERT INTO queries (label, term, added_at) VALUES (?,?,?)", (label, term, utc_now()))
            return True
        if row["removed_at"] is not None:
            self.conn.execute("UPDATE queries SET removed_at=NULL WHERE id=?", (row["id"],))
            return True
        return False

    def remove_query(self, label: str, term: str) -> bool:
        cur = self.conn.execute("UPDATE queries SET removed_at=? WHERE label=? AND term=? AND removed_at IS NULL",
                                (utc_now(), label, term))
        return cur.rowcount > 0

    def tracked_queries(self, label: str | None = None) -> list[QueryRow]:
        where, params = ("AND label=?", (label,)) if label else ("", ())
        rows = self.conn.execute(f"SELECT id, label, term, added_at FROM queries WHERE removed_at IS NULL {where} "
                                 f"ORDER BY label, id", params).fetchall()
        return [QueryRow(**r) for r in rows]

    def query_labels(self) -> list[str]:
        return [r[0] for r in self.conn.execute("SELECT DISTINCT label FROM queries ORDER BY label")]

    def query_file_hash(self, label: str) -> str | None:
        row = self.conn.execute("SELECT sha256 FROM query_files WHERE label=?", (label,)).fetchone()
        return row[0] if row else None

    def set_query_file_hash(self, label: str, sha256: str) -> None:
        self.conn.execute("INSERT INTO query_files (label, sha256) VALUES (?,?) "
                          "ON CONFLICT(label) DO UPDATE SET sha256=excluded.sha256", (label, sha256))

    def latest_runs(self, query_ids: Iterable[int] | None = None) -> dict[tuple[int, str], RunRow]:
        """The newest run of each (query, engine): its state says pending, running, blocked or used."""
        rows = self.conn.execute(
            f"SELECT {RUN_COLUMNS} FROM query_runs WHERE id IN "
            "(SELECT MAX(id) FROM query_runs GROUP BY query_id, engine)").fetchall()
        wanted = set(query_ids) if query_ids is not None else None
        return {(r["query_id"], r["engine"]): RunRow(**r) for r in rows
                if wanted is None or r["query_id"] in wanted}

    def start_run(self, query_id: int, engine: str, target: int) -> RunRow:
        cur = self.conn.execute(
            "INSERT INTO query_runs (query_id, engine, state, target, started_at) VALUES (?,?,'running',?,?)",
            (query_id, engine, target, utc_now()))
        return self.run(int(cur.lastrowid or 0))

    def run(self, run_id: int) -> RunRow:
        return RunRow(**self.conn.execute(f"SELECT {RUN_COLUMNS} FROM query_runs WHERE id=?", (run_id,)).fetchone())

    def resume_run(self, run_id: int, target: int) -> RunRow:
        """An interrupted or blocked run continues from its cursor, with the current --limit."""
        self.conn.execute("UPDATE query_runs SET state='running', target=?, error=NULL, saved_page=NULL "
                          "WHERE id=?", (target, run_id))
        return self.run(run_id)

    def save_cursor(self, run_id: int, cursor: dict[str, Any], empty_pages: int) -> None:
        self.conn.execute("UPDATE query_runs SET cursor=?, empty_pages=? WHERE id=?",
                          (json.dumps(cursor, ensure_ascii=False), empty_pages, run_id))

    def finish_run(self, run_id: int, state: str, error: str | None = None, saved_page: str | None = None) -> None:
        self.conn.execute("UPDATE query_runs SET state=?, error=?, saved_page=?, finished_at=? WHERE id=?",
                          (state, error, saved_page, utc_now(), run_id))

    def add_hit(self, run_id: int, norm_url: str, url: str, rank: int, page_url: str | None, title: str | None,
                license: str | None, author: str | None, retry_reasons: frozenset[str]) -> str | None:
        """Record one search result; returns the URL's state for this run (None when the run already had it).

        A URL fetched before is not fetched again: its hit is settled at once as a duplicate (or as the old
        failure). A failure that may pass (timeout, 5xx, 429) is put back to pending instead.
        """
        self.conn.execute("INSERT INTO frontier (norm_url, url) VALUES (?,?) ON CONFLICT(norm_url) DO NOTHING",
                          (norm_url, url))
        front = self.conn.execute("SELECT id, state, error FROM frontier WHERE norm_url=?", (norm_url,)).fetchone()
        state = front["state"]
        if state == "failed" and front["error"] in retry_reasons:
            self.conn.execute("UPDATE frontier SET state='pending' WHERE id=?", (front["id"],))
            state = "pending"
        outcome = {"ok": "duplicate", "failed": "failed"}.get(state)
        cur = self.conn.execute(
            "INSERT INTO hits (run_id, url_id, rank, page_url, title, license, author, outcome) "
            "VALUES (?,?,?,?,?,?,?,?) ON CONFLICT(run_id, url_id) DO NOTHING",
            (run_id, front["id"], rank, page_url, title, license, author, outcome))
        return state if cur.rowcount else None

    def run_hit_count(self, run_id: int) -> int:
        return self._scalar("SELECT COUNT(*) FROM hits WHERE run_id=?", (run_id,))

    def pending_downloads(self, run_id: int) -> list[DownloadRow]:
        """Hits of this run whose URL is still to fetch (after a kill, exactly the ones in flight)."""
        rows = self.conn.execute(
            "SELECT f.id AS url_id, f.url, h.rank, h.page_url, h.title, h.license, h.author, r.engine, "
            "q.term AS query, q.label FROM hits h JOIN frontier f ON f.id=h.url_id "
            "JOIN query_runs r ON r.id=h.run_id JOIN queries q ON q.id=r.query_id "
            "WHERE h.run_id=? AND h.outcome IS NULL AND f.state='pending' ORDER BY h.rank", (run_id,)).fetchall()
        return [DownloadRow(**r) for r in rows]

    def settle_url(self, url_id: int, *, state: str, image_id: int | None, is_new: bool, error: str | None,
                   http_status: int | None) -> None:
        """Mark a fetched URL ok or failed and settle every hit still waiting on it; call inside a transaction."""
        self.conn.execute("UPDATE frontier SET state=?, image_id=?, error=?, http_status=?, attempts=attempts+1, "
                          "fetched_at=? WHERE id=?", (state, image_id, error, http_status, utc_now(), url_id))
        first = self.conn.execute("SELECT MIN(id) FROM hits WHERE url_id=? AND outcome IS NULL",
                                  (url_id,)).fetchone()[0]
        if state == "ok":
            self.conn.execute("UPDATE hits SET outcome=CASE WHEN id=? AND ? THEN 'new' ELSE 'duplicate' END "
                              "WHERE url_id=? AND outcome IS NULL", (first, is_new, url_id))
        else:
            self.conn.execute("UPDATE hits SET outcome='failed' WHERE url_id=? AND outcome IS NULL", (url_id,))

    def run_counts(self, run_id: int) -> dict[str, Any]:
        """found / new / duplicate / pending and failures by reason, from the hits (right after a resume too)."""
        row = self.conn.execute(
            "SELECT COUNT(*) AS found, SUM(outcome='new') AS new, SUM(outcome='duplicate') AS duplicate, "
            "SUM(outcome IS NULL) AS pending FROM hits WHERE run_id=?", (run_id,)).fetchone()
        reasons = {r["error"] or "failed": int(r["n"]) for r in self.conn.execute(
            "SELECT f.error, COUNT(*) AS n FROM hits h JOIN frontier f ON f.id=h.url_id "
            "WHERE h.run_id=? AND h.outcome='failed' GROUP BY f.error ORDER BY n DESC", (run_id,))}
        return {"found": int(row["found"] or 0), "new": int(row["new"] or 0),
                "duplicate": int(row["duplicate"] or 0), "pending": int(row["pending"] or 0),
                "failed": sum(reasons.values()), "failed_by_reason": reasons}

    # -- review stage -------------------------------------------------------------------------------

    def table_columns(self, table: str) -> frozenset[str]:
        """Columns of a table as this catalog has them: later stages' columns may not exist yet."""
        return frozenset(r["name"] for r in self.conn.execute("SELECT name FROM pragma_table_info(?)", (table,)))

    def review_next_batch(self) -> int:
        return self._scalar("SELECT COALESCE(MAX(batch), 0) + 1 FROM review_log")

    def review_append(self, batch: int, action: str, changes: Iterable[tuple[int, int, str, str, str | None]],
                      reviewer: str, session: str, undoes: int | None = None) -> int:
        """Append one batch of (image_id, face_index, before, after, rule_status); call inside a transaction."""
        at = utc_now()
        cur = self.conn.executemany(
            "INSERT INTO review_log (image_id, face_index, batch, action, decision_before, decision_after, "
            "rule_status, undoes, reviewer, session, decided_at) VALUES (?,?,?,?,?,?,?,?,?,?,?)",
            [(image_id, face_index, batch, action, before, after, rule_status, undoes, reviewer, session, at)
             for image_id, face_index, before, after, rule_status in changes])
        return cur.rowcount

    def review_latest(self, items: Iterable[tuple[int, int]] | None = None) -> dict[tuple[int, int], dict[str, Any]]:
        """The decision in force per (image_id, face_index), shaped as the manifest's ``review`` field.

        An undone decision reads ``none`` with no reviewer: the rules speak again for that item.
        """
        cols = "image_id, face_index, decision_after, reviewer, decided_at"
        wanted = None if items is None else set(items)
        if wanted is None or len(wanted) > 200:  # many items: one pass over the log
            rows = self.conn.execute(
                f"SELECT {cols} FROM review_log WHERE id IN "
                "(SELECT MAX(id) FROM review_log GROUP BY image_id, face_index)").fetchall()
        else:  # a page of items: one index seek each
            rows = [r for pair in wanted for r in self.conn.execute(
                f"SELECT {cols} FROM review_log WHERE image_id=? AND face_index=? ORDER BY id DESC LIMIT 1", pair)]
        out: dict[tuple[int, int], dict[str, Any]] = {}
        for r in rows:
            if wanted is not None and (r["image_id"], r["face_index"]) not in wanted:
                continue
            done = r["decision_after"] != "none"
            out[(r["image_id"], r["face_index"])] = {"decision": r["decision_after"],
                                                     "by": r["reviewer"] if done else None,
                                                     "at": r["decided_at"] if done else None}
        return out

    def review_history(self, image_id: int, face_index: int) -> list[sqlite3.Row]:
        return self.conn.execute(
            "SELECT id, batch, action, decision_before, decision_after, rule_status, undoes, reviewer, session, "
            "decided_at FROM review_log WHERE image_id=? AND face_index=? ORDER BY id",
            (image_id, face_index)).fetchall()

    def review_open_batch(self) -> list[sqlite3.Row]:
        """Rows of the newest keep/reject batch that no undo has taken back yet (what `u` undoes next)."""
        batch = self.conn.execute(
            "SELECT MAX(batch) FROM review_log WHERE action != 'undo' AND batch NOT IN "
            "(SELECT undoes FROM review_log WHERE undoes IS NOT NULL)").fetchone()[0]
        if batch is None:
            return []
        return self.conn.execute("SELECT batch, image_id, face_index, decision_before, decision_after, rule_status "
                                 "FROM review_log WHERE batch=? ORDER BY id", (batch,)).fetchall()

    # -- dedup stage --------------------------------------------------------------------------------

    DEDUP_HASH_COLUMNS = ("path", "algo", "stamp", "hash", "hash_flip", "windows", "pixels",
                           "thumb", "sharpness", "jpeg_quality", "error", "hashed_at")

    def dedup_image_rows(self, algo: str) -> Iterator[sqlite3.Row]:
        """Every image with its cached fingerprint for ``algo`` (NULL columns when not hashed yet), streamed:
        a million-image catalog is read row by row, never held as rows."""
        return self.conn.execute(
            "SELECT i.id, i.sha256, i.path, i.width, i.height, i.bytes, i.dup_group, i.dup_of, i.dup_distance, "
            "i.dup_transform, i.dup_kind, h.stamp, h.hash, h.hash_flip, h.windows, h.pixels, "
            "h.sharpness, h.jpeg_quality, h.error FROM images i "
            "LEFT JOIN dedup_hashes h ON h.path = i.path AND h.algo = ? ORDER BY i.id", (algo,))

    def dedup_face_rows(self, algo: str, image_algo: str) -> Iterator[sqlite3.Row]:
        """Every face with its crop's cached fingerprint and its photo's facts, streamed."""
        return self.conn.execute(
            "SELECT f.id, f.image_id, f.face_index, f.crop_path, f.quad, f.status, f.reasons, f.dup_group, "
            "f.dup_of, f.dup_distance, f.dup_transform, f.dup_kind, i.sha256, i.bytes AS image_bytes, "
            "hi.jpeg_quality AS image_jpeg_quality, "
            "h.stamp, h.hash, h.hash_flip, h.windows, h.pixels, h.sharpness, h.error FROM faces f "
            "JOIN images i ON i.id = f.image_id "
            "LEFT JOIN dedup_hashes h ON h.path = f.crop_path AND h.algo = ? "
            "LEFT JOIN dedup_hashes hi ON hi.path = i.path AND hi.algo = ? "
            "ORDER BY f.image_id, f.face_index", (algo, image_algo))

    def dedup_save_hashes(self, rows: Iterable[dict[str, Any]]) -> None:
        """Insert or refresh fingerprint rows (keys as in dedup_hashes); call inside a transaction."""
        cols = self.DEDUP_HASH_COLUMNS
        self.conn.executemany(
            f"INSERT OR REPLACE INTO dedup_hashes ({', '.join(cols)}) VALUES ({', '.join('?' * len(cols))})",
            [tuple(r.get(c) for c in cols) for r in rows])

    def dedup_forget(self, algo: str, prefix: str) -> int:
        """Drop cached fingerprints of one setting under ``raw/`` or ``crops/`` (``--redo``)."""
        return self.conn.execute("DELETE FROM dedup_hashes WHERE algo=? AND substr(path, 1, ?) = ?",
                                 (algo, len(prefix), prefix)).rowcount

    def dedup_thumbs(self, paths: list[str], algo: str) -> dict[str, bytes]:
        """Verification thumbnails of some files (only the few with a candidate are ever loaded)."""
        out: dict[str, bytes] = {}
        for start in range(0, len(paths), 500):
            chunk = paths[start:start + 500]
            for r in self.conn.execute(
                    f"SELECT path, thumb FROM dedup_hashes WHERE algo=? AND path IN ({', '.join('?' * len(chunk))})",
                    (algo, *chunk)):
                out[r["path"]] = bytes(r["thumb"])
        return out

    def dedup_source_names(self, image_ids: list[int]) -> dict[int, str]:
        """The first source (path or URL) of some images, to show groups in words rather than sha256s."""
        out: dict[int, str] = {}
        for start in range(0, len(image_ids), 500):
            chunk = image_ids[start:start + 500]
            for r in self.conn.execute(
                    f"SELECT image_id, location FROM sources WHERE id IN (SELECT MIN(id) FROM sources WHERE "
                    f"status='ok' AND image_id IN ({', '.join('?' * len(chunk))}) GROUP BY image_id)", chunk):
                out[int(r["image_id"])] = r["location"]
        return out

    def dedup_set_images(self, updates: Iterable[tuple[Any, ...]]) -> None:
        """(dup_group, dup_of, dup_distance, dup_transform, dup_kind, id) per changed image; in a transaction."""
        self.conn.executemany("UPDATE images SET dup_group=?, dup_of=?, dup_distance=?, dup_transform=?, "
                              "dup_kind=? WHERE id=?", updates)

    def dedup_set_faces(self, updates: Iterable[tuple[Any, ...]]) -> None:
        """(dup_group, dup_of, dup_distance, dup_transform, dup_kind, status, id) per changed face."""
        self.conn.executemany("UPDATE faces SET dup_group=?, dup_of=?, dup_distance=?, dup_transform=?, "
                              "dup_kind=?, status=? WHERE id=?", updates)

    def dedup_counts(self) -> dict[str, Any]:
        """Groups and duplicates for `status`: photos and faces, by kind and transform, and per query."""
        one = self._scalar
        by_query = {r["query"]: {"images": int(r["images"]), "duplicates": int(r["dups"] or 0)}
                    for r in self.conn.execute(
                        "SELECT COALESCE(s.query, '') AS query, COUNT(DISTINCT i.id) AS images, "
                        "COUNT(DISTINCT CASE WHEN i.dup_of IS NOT NULL THEN i.id END) AS dups FROM images i "
                        "JOIN sources s ON s.image_id = i.id AND s.status = 'ok' GROUP BY 1 ORDER BY 1")}
        return {
            "hashed": one("SELECT COUNT(DISTINCT path) FROM dedup_hashes WHERE path LIKE 'raw/%' AND error IS NULL"),
            "image_groups": one("SELECT COUNT(DISTINCT dup_group) FROM images WHERE dup_of IS NOT NULL"),
            "image_duplicates": one("SELECT COUNT(*) FROM images WHERE dup_of IS NOT NULL"),
            "image_by_kind": {r[0]: int(r[1]) for r in self.conn.execute(
                "SELECT dup_kind, COUNT(*) FROM images WHERE dup_of IS NOT NULL GROUP BY 1")},
            "image_by_transform": {r[0] or "none": int(r[1]) for r in self.conn.execute(
                "SELECT dup_transform, COUNT(*) FROM images WHERE dup_of IS NOT NULL GROUP BY 1")},
            "face_duplicates": one("SELECT COUNT(*) FROM faces WHERE dup_kind IS NOT NULL"),
            "face_by_kind": {r[0]: int(r[1]) for r in self.conn.execute(
                "SELECT dup_kind, COUNT(*) FROM faces WHERE dup_kind IS NOT NULL GROUP BY 1")},
            "largest_groups": [{"group": int(r["g"]), "size": int(r["n"])} for r in self.conn.execute(
                "SELECT dup_group AS g, COUNT(*) AS n FROM images WHERE dup_group IS NOT NULL GROUP BY 1 "
                "HAVING n > 1 ORDER BY n DESC, g LIMIT 10")],
            "by_query": by_query,
        }


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
