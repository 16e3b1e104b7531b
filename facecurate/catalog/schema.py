"""The catalog's schema, one script per version, in the order they shipped.

A script's text may change only until a release ships it; later changes are new versions. Each script is split
into statements with :func:`sqlite3.complete_statement` and applied, with its ``user_version`` bump, in one
transaction (:mod:`facecurate.catalog.migrations`).
"""

from __future__ import annotations

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


_V7_DERIVED_STATE = """
    -- A face's state in force is derived from the stages' own facts (catalog.state), never stored: crop, dedup
    -- and filter each used to write faces.status, and the readers disagreed about it.
    ALTER TABLE faces DROP COLUMN status;
"""

_V8_REVIEW_REASON = """
    -- the reason a person gave with a decision (review hotkeys 1-5, 0): a reject names the rule it agrees with
    -- (closed_eyes, wink, ...) or 'other'; a keep may say 'rule_wrong'. NULL: no reason given. calibrate reads it.
    ALTER TABLE review_log ADD COLUMN reason TEXT;
"""

_V9_HITS_BY_RANK = """
    -- crawl reads each result page's pending hits by rank as it records the page: without this index every
    -- page scanned all the run's hits (a 10,000-result query read ~1.4 million rows).
    CREATE INDEX hits_run_rank ON hits(run_id, rank);
"""

_V10_QUERY_SETTINGS = """
    -- a query's own settings (engines, limit, filters) written after its term in queries/<label>.txt
    -- (`term | engines=bing,naver | limit=300`), as a JSON object; '{}': the workspace's settings.
    ALTER TABLE queries ADD COLUMN settings TEXT NOT NULL DEFAULT '{}';
"""

MIGRATIONS: tuple[str, ...] = (_V1_CORE, _V2_DEDUP, _V3_CRAWL, _V4_RULES, _V5_REVIEW, _V6_DEDUP_WINDOWS,
                               _V7_DERIVED_STATE, _V8_REVIEW_REASON, _V9_HITS_BY_RANK, _V10_QUERY_SETTINGS)
SCHEMA_VERSION = len(MIGRATIONS)
