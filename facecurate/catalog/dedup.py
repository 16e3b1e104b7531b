"""Cached fingerprints and the duplicate fields of images and faces (dedup stage)."""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator
from functools import partial
from typing import Any, Literal, NamedTuple, cast

from facecurate.catalog.base import CatalogBase, placeholders

DupKind = Literal["pixels", "perceptual", "image"]   # identical pixels | near copy | a face of a duplicate photo
DupTransform = Literal["hflip", "crop", "hflip+crop"]


class DupFields(NamedTuple):
    """The duplicate fields of one image or face, as stored (all None: not grouped).

    ``group``: the keeper photo's image id (on the keeper too); ``of``: the keeper (images.id, or faces.id for
    a face), None on keepers; ``distance``: Hamming bits to it; ``transform``: how the copy differs."""

    group: int | None
    of: int | None
    distance: int | None
    transform: DupTransform | None
    kind: DupKind | None


NOT_GROUPED = DupFields(None, None, None, None, None)


class HashRow(NamedTuple):
    """One file's fingerprint for one hash setting, field for field a ``dedup_hashes`` row (in column order)."""

    path: str
    algo: str
    stamp: str
    hash: int | None           # signed 64-bit (SQLite integers are signed); None when the file failed
    hash_flip: int | None
    windows: bytes | None      # hashing.windows_to_bytes
    pixels: str | None         # decoded-pixel digest (reduced ones carry decode.REDUCED_PREFIX)
    thumb: bytes | None
    sharpness: float | None
    jpeg_quality: int | None
    error: str | None
    hashed_at: str


class DedupImageRow(NamedTuple):
    """One photo with its cached fingerprint (None columns: not hashed yet)."""

    id: int
    sha256: str
    path: str
    width: int
    height: int
    file_bytes: int
    stamp: str | None
    hash: int | None
    hash_flip: int | None
    windows: bytes | None
    pixels: str | None
    sharpness: float | None
    jpeg_quality: int | None
    error: str | None


class DedupFaceRow(NamedTuple):
    """One face with its crop's cached fingerprint and its photo's quality facts."""

    id: int
    image_id: int
    face_index: int
    crop_path: str
    quad: list[list[float]]
    sha256: str
    image_bytes: int
    image_jpeg_quality: int | None
    stamp: str | None
    hash: int | None
    hash_flip: int | None
    windows: bytes | None
    pixels: str | None
    sharpness: float | None
    error: str | None


DupUpdate = tuple[int | None, int | None, int | None, str | None, str | None, int]  # DupFields, then the row id

# Plain tuples become records through tuple.__new__ bound in C, with no Python frame per row: on a million-photo
# catalog this streams faster than sqlite3.Row looked up by column name.
_image_row = cast(Any, partial(tuple.__new__, DedupImageRow))


class DedupMixin(CatalogBase):
    DEDUP_HASH_COLUMNS = HashRow._fields

    def dedup_image_rows(self, algo: str) -> Iterator[DedupImageRow]:
        """Every image with its cached fingerprint for ``algo``, streamed: a million-image catalog is read row
        by row, never held as rows."""
        cur = self.conn.cursor()
        cur.row_factory = None
        cur.execute(
            "SELECT i.id, i.sha256, i.path, i.width, i.height, i.bytes, h.stamp, h.hash, h.hash_flip, h.windows, "
            "h.pixels, h.sharpness, h.jpeg_quality, h.error FROM images i "
            "LEFT JOIN dedup_hashes h ON h.path = i.path AND h.algo = ? ORDER BY i.id", (algo,))
        return cast(Iterator[DedupImageRow], map(_image_row, cur))

    def dedup_face_rows(self, algo: str, image_algo: str) -> Iterator[DedupFaceRow]:
        """Every face with its crop's cached fingerprint and its photo's facts, streamed."""
        cur = self.conn.cursor()
        cur.row_factory = None
        cur.execute(
            "SELECT f.id, f.image_id, f.face_index, f.crop_path, f.quad, i.sha256, i.bytes AS image_bytes, "
            "hi.jpeg_quality AS image_jpeg_quality, "
            "h.stamp, h.hash, h.hash_flip, h.windows, h.pixels, h.sharpness, h.error FROM faces f "
            "JOIN images i ON i.id = f.image_id "
            "LEFT JOIN dedup_hashes h ON h.path = f.crop_path AND h.algo = ? "
            "LEFT JOIN dedup_hashes hi ON hi.path = i.path AND hi.algo = ? "
            "ORDER BY f.image_id, f.face_index", (algo, image_algo))
        for r in cur:
            yield DedupFaceRow._make((*r[:4], json.loads(r[4]), *r[5:]))

    def dedup_grouped_images(self) -> dict[int, DupFields]:
        """The duplicate fields of every image that has any, by image id (the rest are not grouped)."""
        return self._dup_fields("images")

    def dedup_grouped_faces(self) -> dict[int, DupFields]:
        """The duplicate fields of every face that has any, by face id."""
        return self._dup_fields("faces")

    def _dup_fields(self, table: Literal["images", "faces"]) -> dict[int, DupFields]:
        cur = self.conn.cursor()
        cur.row_factory = None
        cur.execute(f"SELECT id, dup_group, dup_of, dup_distance, dup_transform, dup_kind FROM {table} WHERE "
                    f"dup_group IS NOT NULL OR dup_of IS NOT NULL OR dup_distance IS NOT NULL "
                    f"OR dup_transform IS NOT NULL OR dup_kind IS NOT NULL")
        return {r[0]: DupFields._make(r[1:]) for r in cur}

    def dedup_save_hashes(self, rows: Iterable[HashRow]) -> None:
        """Insert or refresh fingerprint rows; call inside a transaction."""
        cols = self.DEDUP_HASH_COLUMNS
        self.conn.executemany(
            f"INSERT OR REPLACE INTO dedup_hashes ({', '.join(cols)}) VALUES ({placeholders(len(cols))})", rows)

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
                    f"SELECT path, thumb FROM dedup_hashes WHERE algo=? AND path IN ({placeholders(len(chunk))})",
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
                    f"status='ok' AND image_id IN ({placeholders(len(chunk))}) GROUP BY image_id)", chunk):
                out[int(r["image_id"])] = r["location"]
        return out

    def dedup_set_images(self, updates: Iterable[DupUpdate]) -> None:
        """(dup_group, dup_of, dup_distance, dup_transform, dup_kind, id) per changed image; in a transaction."""
        self.conn.executemany("UPDATE images SET dup_group=?, dup_of=?, dup_distance=?, dup_transform=?, "
                              "dup_kind=? WHERE id=?", updates)

    def dedup_set_faces(self, updates: Iterable[DupUpdate]) -> None:
        """(dup_group, dup_of, dup_distance, dup_transform, dup_kind, id) per changed face; in a transaction."""
        self.conn.executemany("UPDATE faces SET dup_group=?, dup_of=?, dup_distance=?, dup_transform=?, "
                              "dup_kind=? WHERE id=?", updates)

    def dedup_set_pixels(self, updates: Iterable[tuple[str, str, str]]) -> None:
        """(full-decode digest, path, algo): a reduced pixel digest replaced by the exact one; in a transaction."""
        self.conn.executemany("UPDATE dedup_hashes SET pixels=? WHERE path=? AND algo=?", updates)

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
