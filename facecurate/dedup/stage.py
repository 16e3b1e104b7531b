"""The ``dedup`` stage: fingerprint files once, group photos, then group face crops; all I/O lives here.

Order of work, and why:

1. **Photos.** Every image without a cached fingerprint for the current hash setting is decoded once (a
   JPEG at reduced scale, see :mod:`facecurate.dedup.decode`; the rest through :mod:`facecurate.media`) and
   fingerprinted in worker processes, a batch per transaction, so a kill loses at most one
   batch and a re-run hashes only what is new. Grouping then runs over *all* cached fingerprints — it is
   cheap next to decoding, and a new, better copy must be able to take over as keeper of an old group.
2. **Faces** (after ``crop``). Faces of a duplicate photo are duplicates too: they may join a group but never
   lead one, so export and the layouts drop them with their photo. The crop stage still crops duplicate
   photos on purpose: the crops let each such face point at the matching face of the kept photo, and a later
   run that promotes a copy to keeper needs no re-crop. Then the aligned crops themselves are hashed and
   grouped, which catches one face cropped from two *different* files — a re-post with a new border or a
   caption changes the photo's hash but not the aligned face.

Writes are diffs: only rows whose duplicate fields change are updated, in one transaction per level, so a
second run with nothing new writes nothing. ``dry_run`` computes everything and writes nothing at all.
"""

from __future__ import annotations

import itertools
import json
import multiprocessing
import os
import warnings
from collections import Counter, deque
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future, ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from contextlib import contextmanager
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np

from facecurate import media
from facecurate.catalog import Catalog, utc_now
from facecurate.dedup.core import Items, Options, Result, find_groups, twin_candidates
from facecurate.dedup.decode import REDUCED_PREFIX, decode_reduced, full_digest, is_exact
from facecurate.dedup.groups import FLIP, TRANSFORMS, parse_policy
from facecurate.dedup.hashing import THUMB_SIZE, fingerprint_gray, to_signed, windows_from_bytes, windows_to_bytes
from facecurate.dedup.search import as_u64, popcount64
from facecurate.dedup.verify import thumbs_from_bytes
from facecurate.errors import ConfigError, ImageError
from facecurate.workspace import Workspace

BATCH = 128          # files fingerprinted per transaction: a kill re-hashes at most this many
AHEAD = 4            # chunks queued per worker ahead of the one being consumed
CHUNK = 16           # files per task sent to a worker: small enough to balance, big enough to amortise the IPC
WORKERS = max(1, min(8, os.cpu_count() or 1))  # fingerprinting processes
KIND_IMAGE = "image"  # a face whose photo is a duplicate photo
FINGERPRINT_VERSION = "v3"  # v2: reduced grayscale JPEG decodes, reduced digests; v3: four crop windows


@dataclass(frozen=True)
class DedupOptions:
    """Settings of one run: the [dedup] section of facecurate.toml, with command-line overrides."""

    algorithm: str = "phash"
    threshold: int = 8
    min_similarity: float = 0.93
    crop_window: float = 0.95
    crop_threshold: int = 6
    keeper: str = "resolution,jpeg_quality,bytes,sharpness"
    faces: bool = True
    face_threshold: int = 8
    face_min_similarity: float = 0.95

    @classmethod
    def from_config(cls, ws: Workspace, **overrides: Any) -> DedupOptions:
        values = ws.config().section("dedup")
        values.update({k: v for k, v in overrides.items() if v is not None})
        opts = cls(**{k: values[k] for k in cls.__dataclass_fields__ if k in values})
        opts.check(ws.config_path)
        return opts

    def check(self, where: Path | str = "facecurate.toml") -> None:
        try:
            parse_policy(self.keeper)
        except ValueError as exc:
            raise ConfigError(f"{where}: [dedup] keeper: {exc}.") from None
        for name in ("threshold", "crop_threshold", "face_threshold"):
            if not 0 <= getattr(self, name) <= 32:
                raise ConfigError(f"{where}: [dedup] {name} = {getattr(self, name)} is outside 0..32 bits; "
                                  f"half the hash differs between unrelated photos, so use 4-12.")
        if not (self.crop_window == 0 or 0.5 <= self.crop_window < 1):
            raise ConfigError(f"{where}: [dedup] crop_window = {self.crop_window}: use 0 (off) or 0.5-0.99.")

    @property
    def image_algo(self) -> str:
        """Cache key of photo fingerprints: the algorithm, the window and the fingerprint version (a change
        of any re-hashes)."""
        window = f"/w{round(self.crop_window * 100)}" if self.crop_window else ""
        return f"{self.algorithm}{window}/{FINGERPRINT_VERSION}"

    @property
    def face_algo(self) -> str:
        return f"{self.algorithm}/{FINGERPRINT_VERSION}"


@dataclass
class Member:
    id: int
    name: str
    distance: int | None
    transform: str | None
    kind: str | None


@dataclass
class GroupView:
    """One group as the CLI shows it: the keeper and its members with their distance to it."""

    level: str           # photo | face
    group: int           # dup_group: the keeper photo's image id
    keeper_id: int
    keeper: str
    members: list[Member] = field(default_factory=list)


@dataclass
class LevelSummary:
    items: int = 0            # photos (or faces) considered
    hashed: int = 0           # fingerprinted in this run
    cached: int = 0           # fingerprint found in the catalog
    failed: list[tuple[str, str]] = field(default_factory=list)
    groups: int = 0
    duplicates: int = 0
    changed: int = 0          # rows whose duplicate fields this run changed (would change, in a dry run)
    by_transform: dict[str, int] = field(default_factory=dict)
    by_kind: dict[str, int] = field(default_factory=dict)
    stats: dict[str, int] = field(default_factory=dict)


@dataclass
class DedupSummary:
    options: DedupOptions
    dry_run: bool
    photos: LevelSummary = field(default_factory=LevelSummary)
    faces: LevelSummary = field(default_factory=LevelSummary)
    groups: list[GroupView] = field(default_factory=list)


Progress = Callable[[int], None]
Start = Callable[[str, int], None]


# -- fingerprinting ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Job:
    """What a worker needs to fingerprint files: plain values, so it pickles to a worker process."""

    root: str
    algo: str
    algorithm: str
    window: float
    max_pixels: int
    max_bytes: int


def _fingerprint_row(job: _Job, rel: str, stamp: str) -> dict[str, Any]:
    """Decode one file (reduced where it can be) and fingerprint it; a bad file becomes a row with an error."""
    row: dict[str, Any] = dict.fromkeys(Catalog.DEDUP_HASH_COLUMNS)
    row.update(path=rel, algo=job.algo, stamp=stamp, hashed_at=utc_now())
    try:
        data = media.read_limited(Path(job.root) / rel, job.max_bytes)
        reduced = decode_reduced(data, rel, job.max_pixels)
        fp = fingerprint_gray(reduced.gray, reduced.digest, job.algorithm, job.window, data)
    except ImageError as exc:
        row["error"] = str(exc)
        return row
    row.update(hash=to_signed(fp.hash), hash_flip=to_signed(fp.hash_flip),
               windows=windows_to_bytes(fp.windows, fp.window_flips), pixels=fp.pixels, thumb=fp.thumb,
               sharpness=fp.sharpness, jpeg_quality=fp.jpeg_quality)
    return row


def _fingerprint_chunk(job: _Job, chunk: list[tuple[str, str]]) -> list[dict[str, Any]]:
    return [_fingerprint_row(job, rel, stamp) for rel, stamp in chunk]


@contextmanager
def _mapper(jobs: int) -> Iterator[Callable[[Callable[[Any], Any], Iterable[Any]], Iterator[Any]]]:
    """An ordered, lazy map over worker processes (forked: no re-import, ~10 ms to start) when there is work
    for more than one, else in this process.

    Why processes: the per-file work is a few hundred microseconds, much of it Python (Pillow's JPEG header
    parsing, the small numpy steps), so threads queue on the GIL; imagededup forks a pool over every core
    for the same reason. Where fork is missing (Windows, macOS defaults) the map stays in-process.
    A worker killed by a native crash (a decoder segfault on a hostile file) breaks the pool: that is
    reported with the files of the chunk in flight, never waited on forever."""
    workers = min(WORKERS, jobs)
    if workers < 2 or "fork" not in multiprocessing.get_all_start_methods():
        yield map
        return
    with warnings.catch_warnings():
        # Python 3.12 warns when forking a process that runs other threads (a progress bar's refresher):
        # the children only decode and hash, never touching the locks those threads hold.
        warnings.simplefilter("ignore", DeprecationWarning)
        pool = ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("fork"))
        pool.submit(int).result()  # start the workers here, under the filter

    def ordered(fn: Callable[[Any], Any], items: Iterable[Any]) -> Iterator[Any]:
        ahead: deque[tuple[Any, Future[Any]]] = deque()
        todo = iter(items)
        for item in itertools.islice(todo, AHEAD * workers):  # bounded: results never pile up in memory
            ahead.append((item, pool.submit(fn, item)))
        while ahead:
            item, future = ahead.popleft()
            try:
                result = future.result()
            except BrokenProcessPool as exc:
                files = ", ".join(rel for rel, _ in item) if isinstance(item, list) else str(item)
                raise ImageError(f"A fingerprinting worker died (a native crash) on one of: {files}. Files "
                                 f"hashed before it are saved; move the offending file out of raw/ or run "
                                 f"`facecurate dedup` again to retry.", "worker_crashed") from exc
            nxt = next(todo, None)
            if nxt is not None:
                ahead.append((nxt, pool.submit(fn, nxt)))
            yield result

    try:
        yield ordered
    finally:
        pool.shutdown(wait=True, cancel_futures=True)


def _fingerprint_all(ws: Workspace, catalog: Catalog, todo: list[tuple[str, str]], algo: str, algorithm: str,
                     window: float, dry_run: bool, on_progress: Progress | None) -> Iterator[dict[str, Any]]:
    """Fingerprint (path, stamp) pairs in batches; each batch is one transaction unless this is a dry run."""
    if not todo:
        return
    cfg = ws.config()
    job = _Job(str(ws.root), algo, algorithm, window, cfg.get("media", "max_pixels"), cfg.get("media", "max_bytes"))
    size = min(CHUNK, BATCH)
    chunks = [todo[i:i + size] for i in range(0, len(todo), size)]
    per_batch = max(1, BATCH // size)
    with _mapper(len(chunks)) as pmap:
        results = pmap(partial(_fingerprint_chunk, job), chunks)
        for start in range(0, len(chunks), per_batch):
            rows = [row for _ in chunks[start:start + per_batch] for row in next(results)]
            if not dry_run:
                with catalog.transaction():
                    catalog.dedup_save_hashes(rows)
            yield from rows
            if on_progress:
                on_progress(len(rows))


def _thumb_loader(catalog: Catalog, paths: list[str], algo: str,
                  fresh: dict[str, dict[str, Any]]) -> Callable[[np.ndarray], np.ndarray]:
    def load(idx: np.ndarray) -> np.ndarray:
        wanted = [paths[int(i)] for i in idx]
        stored = catalog.dedup_thumbs([p for p in wanted if p not in fresh], algo)
        blobs = [fresh[p]["thumb"] if p in fresh else stored.get(p, bytes(THUMB_SIZE * THUMB_SIZE))
                 for p in wanted]
        return thumbs_from_bytes(blobs)
    return load


def _transform_name(code: int) -> str | None:
    return TRANSFORMS.get(int(code))


def _digest64(hexdigest: str) -> int:
    """The first 64 bits of a hex digest (a reduced digest's prefix skipped): an 8-byte key for equality and
    order (collisions: ~1e-8 at 1M)."""
    return int(hexdigest.removeprefix(REDUCED_PREFIX)[:16], 16)


Values = tuple[Any, ...]     # (dup_group, dup_of, dup_distance, dup_transform, dup_kind)
NONE: Values = (None,) * 5


@dataclass
class _Columns:
    """The fingerprinted items of one level, column by column (a million rows stay a few arrays)."""

    ids: list[int] = field(default_factory=list)
    paths: list[str] = field(default_factory=list)
    hashes: list[int] = field(default_factory=list)
    flips: list[int] = field(default_factory=list)
    windows: list[bytes | None] = field(default_factory=list)   # catalog blobs (hashing.windows_to_bytes)
    pixels: list[int] = field(default_factory=list)
    exact: list[bool] = field(default_factory=list)     # pixels is a full-decode digest (else a reduced one)
    dims: list[int] = field(default_factory=list)       # width << 32 | height where known (0 for crops)
    tiebreak: list[int] = field(default_factory=list)
    quality: dict[str, list[float]] = field(default_factory=lambda: {
        "resolution": [], "jpeg_quality": [], "bytes": [], "sharpness": [], "first_seen": []})
    current: dict[int, Values] = field(default_factory=dict)   # rows whose duplicate fields are set now

    def add(self, item_id: int, path: str, fp: Any, quality: dict[str, float], tiebreak: int,
            dims: int = 0) -> None:
        self.ids.append(item_id)
        self.paths.append(path)
        self.hashes.append(fp["hash"])
        self.flips.append(fp["hash_flip"])
        self.windows.append(fp["windows"])
        self.pixels.append(_digest64(fp["pixels"]))
        self.exact.append(is_exact(fp["pixels"]))
        self.dims.append(dims)
        self.tiebreak.append(tiebreak)
        for k, v in quality.items():
            self.quality[k].append(v)

    def items(self, use_windows: bool, can_lead: np.ndarray | None = None) -> Items:
        windows = flips = None
        if use_windows and self.ids and all(w is not None for w in self.windows):
            windows, flips = windows_from_bytes(self.windows)  # type: ignore[arg-type]
        return Items(hashes=as_u64(self.hashes), flips=as_u64(self.flips),
                     pixels=np.array(self.pixels, dtype=np.uint64),
                     quality={k: np.asarray(v, dtype=np.float64) for k, v in self.quality.items()},
                     tiebreak=np.array(self.tiebreak, dtype=np.uint64),
                     windows=windows, window_flips=flips, can_lead=can_lead)


def _overlay(row: Any, fresh: dict[str, dict[str, Any]], path: str) -> Any:
    """This run's new fingerprint for ``path`` (dry runs keep them in memory only), else the catalog row."""
    return fresh.get(path, row)


def _hash_todo(ws: Workspace, catalog: Catalog, todo: list[tuple[str, str]], algo: str, opts: DedupOptions,
               window: float, dry_run: bool, on_progress: Progress | None) -> dict[str, dict[str, Any]]:
    """Fingerprint what is missing. Rows go to the catalog as they come; a dry run keeps them in memory."""
    fresh: dict[str, dict[str, Any]] = {}
    for row in _fingerprint_all(ws, catalog, todo, algo, opts.algorithm, window, dry_run, on_progress):
        if dry_run:
            fresh[row["path"]] = row
    return fresh


def _resolve_twins(ws: Workspace, catalog: Catalog, cols: _Columns, algo: str, fresh: dict[str, dict[str, Any]],
                   dry_run: bool) -> int:
    """Full-decode digests for the few items whose reduced digests cannot rule out identical pixels; they
    replace the reduced ones in ``cols`` and in the catalog (in ``fresh`` on a dry run). Returns how many."""
    need = twin_candidates(np.array(cols.pixels, dtype=np.uint64), np.array(cols.exact, dtype=bool),
                           np.array(cols.dims, dtype=np.int64), as_u64(cols.hashes))
    if need.size == 0:
        return 0
    cfg = ws.config()
    max_pixels, max_bytes = cfg.get("media", "max_pixels"), cfg.get("media", "max_bytes")
    updates = []
    for k in need.tolist():
        path = cols.paths[k]
        try:
            digest = full_digest(media.read_limited(ws.resolve(path), max_bytes), path, max_pixels)
        except ImageError:
            continue  # decoded once already, so this is a file changed under us: it stays reduced, never a twin
        cols.pixels[k], cols.exact[k] = _digest64(digest), True
        if path in fresh:
            fresh[path]["pixels"] = digest
        updates.append((digest, path, algo))
    if updates and not dry_run:
        with catalog.transaction():
            catalog.conn.executemany("UPDATE dedup_hashes SET pixels=? WHERE path=? AND algo=?", updates)
    return len(updates)


# -- photos -----------------------------------------------------------------------------------------------


def _dedup_photos(ws: Workspace, catalog: Catalog, opts: DedupOptions, dry_run: bool, redo: bool,
                  on_start: Start | None, on_progress: Progress | None, summary: DedupSummary) -> dict[int, Values]:
    """Fingerprint and group the photos; returns {image id: values} for the photos in a group."""
    algo, level = opts.image_algo, summary.photos
    if redo and not dry_run:
        with catalog.transaction():
            catalog.dedup_forget(algo, "raw/")
    todo = []
    for r in catalog.dedup_image_rows(algo):
        level.items += 1
        if redo or r["stamp"] != r["sha256"] or r["error"] is not None or r["hash"] is None:
            todo.append((r["path"], r["sha256"]))
    level.hashed, level.cached = len(todo), level.items - len(todo)
    if on_start:
        on_start("hash photos", len(todo))
    fresh = _hash_todo(ws, catalog, todo, algo, opts, opts.crop_window, dry_run, on_progress)
    cols = _Columns()
    for r in catalog.dedup_image_rows(algo):
        state = (r["dup_group"], r["dup_of"], r["dup_distance"], r["dup_transform"], r["dup_kind"])
        if state != NONE:
            cols.current[int(r["id"])] = state
        fp = _overlay(r, fresh, r["path"])
        if fp["error"] or fp["hash"] is None:
            level.failed.append((r["path"], fp["error"] or "not hashed"))
            continue
        cols.add(int(r["id"]), r["path"], fp, {
            "resolution": r["width"] * r["height"], "jpeg_quality": fp["jpeg_quality"] or 0, "bytes": r["bytes"],
            "sharpness": fp["sharpness"] or 0.0, "first_seen": r["id"]}, _digest64(r["sha256"]),
            (int(r["width"]) << 32) | int(r["height"]))
    result: dict[int, Values] = {}
    if cols.ids:
        full_decodes = _resolve_twins(ws, catalog, cols, algo, fresh, dry_run)
        found = find_groups(cols.items(opts.crop_window > 0),
                            Options(opts.threshold, opts.min_similarity, parse_policy(opts.keeper),
                                    opts.crop_threshold),
                            _thumb_loader(catalog, cols.paths, algo, fresh))
        level.stats = {**found.stats, "full_decodes": full_decodes}
        ids = np.array(cols.ids, dtype=np.int64)
        result = _assignments(found, ids, ids)
    _summarise(level, result)
    updates = _diff(result, cols.current)
    level.changed = len(updates)
    if updates and not dry_run:
        with catalog.transaction():
            catalog.dedup_set_images([(*values, item) for item, values in updates])
    summary.groups += _views("photo", result, catalog.dedup_source_names(sorted(result)))
    return result


def _diff(result: dict[int, Values], current: dict[int, Values]) -> list[tuple[int, Values]]:
    """Rows whose duplicate fields change: newly grouped or regrouped, and released ones (set to NULL)."""
    changed = [(i, v) for i, v in result.items() if current.get(i, NONE) != v]
    changed += [(i, NONE) for i in current if i not in result]
    return sorted(changed)


def _assignments(found: Result, ids: np.ndarray, group_ids: np.ndarray) -> dict[int, Values]:
    """Grouped items as catalog values. ``ids`` name the items (dup_of); ``group_ids`` their photos (dup_group)."""
    out: dict[int, Values] = {}
    for k in np.flatnonzero(found.keeper >= 0).tolist():
        kp = int(found.keeper[k])
        if kp == k:
            out[int(ids[k])] = (int(group_ids[k]), None, None, None, None)
        else:
            out[int(ids[k])] = (int(group_ids[kp]), int(ids[kp]), int(found.distance[k]),
                                _transform_name(found.transform[k]), found.kind[k])
    return out


def _summarise(level: LevelSummary, result: dict[int, Values]) -> None:
    dups = [r for r in result.values() if r[1] is not None or r[4] is not None]
    level.duplicates = len(dups)
    level.groups = len({r[0] for r in result.values() if r[0] is not None})
    level.by_transform = dict(Counter(r[3] or "none" for r in dups))
    level.by_kind = dict(Counter(r[4] for r in dups))


def _views(level: str, result: dict[int, Values], names: dict[int, str],
           name_of: Callable[[int], str] | None = None) -> list[GroupView]:
    by_keeper: dict[int, GroupView] = {}
    label = name_of or (lambda i: names.get(i, f"image {i}"))
    for item, (group, of, distance, transform, kind) in result.items():
        if group is None:
            continue
        keeper = item if of is None and kind is None else of
        if keeper is None:  # a face of a duplicate photo whose kept photo has no matching face
            keeper = -int(group)
        view = by_keeper.setdefault(keeper, GroupView(level, int(group), keeper,
                                                      label(keeper) if keeper >= 0 else f"photo {group}"))
        if item != keeper:
            view.members.append(Member(item, label(item), distance, transform, kind))
    views = [v for v in by_keeper.values() if v.members]
    for v in views:
        v.members.sort(key=lambda m: (m.distance if m.distance is not None else 99, m.id))
    views.sort(key=lambda v: (-len(v.members), v.group, v.keeper_id))
    return views


# -- faces ------------------------------------------------------------------------------------------------


def _crop_stamp(ws: Workspace, rel: str) -> str | None:
    try:
        st = ws.resolve(rel).stat()
    except OSError:
        return None
    return f"{st.st_size}:{st.st_mtime_ns}"


def _quad_side(quad_json: str) -> float:
    q = json.loads(quad_json)
    return float(np.hypot(q[3][0] - q[0][0], q[3][1] - q[0][1]))


@dataclass(frozen=True)
class _Face:
    """What inheriting a photo's duplicate status needs about one face."""

    id: int
    image_id: int
    face_index: int
    hash: int | None
    hash_flip: int | None


def _dedup_faces(ws: Workspace, catalog: Catalog, opts: DedupOptions, photos: dict[int, Values],
                 dry_run: bool, redo: bool, on_start: Start | None, on_progress: Progress | None,
                 summary: DedupSummary) -> None:
    algo, level = opts.face_algo, summary.faces
    if redo and not dry_run:
        with catalog.transaction():
            catalog.dedup_forget(algo, "crops/")
    todo = []
    for r in catalog.dedup_face_rows(algo, opts.image_algo):
        level.items += 1
        stamp = _crop_stamp(ws, r["crop_path"])
        if stamp is None:
            continue
        level.cached += 1
        if redo or r["stamp"] != stamp or r["error"] is not None or r["hash"] is None:
            todo.append((r["crop_path"], stamp))
    if not level.items:
        return
    level.hashed = len(todo)
    level.cached -= len(todo)
    if on_start:
        on_start("hash faces", len(todo))
    fresh = _hash_todo(ws, catalog, todo, algo, opts, 0.0, dry_run, on_progress)
    photo_dup = {image_id: v[1] for image_id, v in photos.items() if v[1] is not None}
    involved = set(photo_dup) | set(photo_dup.values())
    cols, image_of, face_index = _Columns(), [], []
    status: dict[int, tuple[str, str]] = {}   # faces marked duplicate now: their status and rule reasons
    faces_of: dict[int, list[_Face]] = {}    # faces of duplicate photos and of their kept photos
    for r in catalog.dedup_face_rows(algo, opts.image_algo):
        face_id, image_id = int(r["id"]), int(r["image_id"])
        state = (r["dup_group"], r["dup_of"], r["dup_distance"], r["dup_transform"], r["dup_kind"])
        if state != NONE or r["status"] == "duplicate":
            cols.current[face_id] = state
            status[face_id] = (r["status"], r["reasons"])
        fp = _overlay(r, fresh, r["crop_path"])
        ok = not fp["error"] and fp["hash"] is not None and _crop_stamp(ws, r["crop_path"]) is not None
        if image_id in involved:
            faces_of.setdefault(image_id, []).append(
                _Face(face_id, image_id, int(r["face_index"]), fp["hash"] if ok else None,
                      fp["hash_flip"] if ok else None))
        if not ok:
            missing = _crop_stamp(ws, r["crop_path"]) is None
            level.failed.append((r["crop_path"], f"{r['crop_path']} is missing: run `facecurate crop` again."
                                 if missing else (fp["error"] or "not hashed")))
            continue
        cols.add(face_id, r["crop_path"], fp, {
            "resolution": _quad_side(r["quad"]), "jpeg_quality": r["image_jpeg_quality"] or 0,
            "bytes": r["image_bytes"], "sharpness": fp["sharpness"] or 0.0, "first_seen": face_id},
            (_digest64(r["sha256"]) & ~0xFFFF) | int(r["face_index"]) & 0xFFFF)
        image_of.append(image_id)
        face_index.append(int(r["face_index"]))
    result: dict[int, Values] = {}
    if cols.ids:
        full_decodes = _resolve_twins(ws, catalog, cols, algo, fresh, dry_run)
        can_lead = np.array([i not in photo_dup for i in image_of])
        found = find_groups(cols.items(False, can_lead),
                            Options(opts.face_threshold, opts.face_min_similarity, parse_policy(opts.keeper)),
                            _thumb_loader(catalog, cols.paths, algo, fresh))
        level.stats = {**found.stats, "full_decodes": full_decodes}
        result = _assignments(found, np.array(cols.ids, dtype=np.int64), np.array(image_of, dtype=np.int64))
    _inherit_photo_duplicates(faces_of, result, photo_dup, photos)
    _summarise(level, result)
    updates = []
    for face_id, values in _diff(result, cols.current):
        before, reasons = status.get(face_id, ("keep", "[]"))
        after = _face_status(before, reasons, values[4] is not None)
        updates.append((*values, after, face_id))
    for face_id, values in result.items():  # same fields, but the status was changed by someone else
        if face_id in cols.current and cols.current[face_id] == values and values[4] is not None \
                and status[face_id][0] != "duplicate":
            updates.append((*values, "duplicate", face_id))
    level.changed = len(updates)
    if updates and not dry_run:
        with catalog.transaction():
            catalog.dedup_set_faces(updates)
    shown = set(result) | {v[1] for v in result.values() if v[1] is not None}
    where = {fid: (image_of[k], face_index[k], cols.paths[k]) for k, fid in enumerate(cols.ids) if fid in shown}
    names = catalog.dedup_source_names(sorted({v[0] for v in where.values()}))
    summary.groups += _views("face", result, {}, lambda i: (
        f"{names.get(where[i][0], where[i][2])} (face {where[i][1]})" if i in where else f"face {i}"))


def _inherit_photo_duplicates(faces_of: dict[int, list[_Face]], result: dict[int, Values],
                              photo_dup: dict[int, int], photos: dict[int, Values]) -> None:
    """Faces of a duplicate photo are duplicates (kind ``image``); each points at the closest face of the
    kept photo (mirror-aware hash distance) when hashing did not already place it in a group."""
    for image_id, keeper_photo in photo_dup.items():
        for face in faces_of.get(image_id, []):
            group, of, distance, transform, _ = result.get(face.id, NONE)
            if of is None:
                group = photos[image_id][0]
                best = _closest_face(face, faces_of.get(keeper_photo, []))
                if best is not None:
                    of, distance, transform = best
            result[face.id] = (group, of, distance, transform, KIND_IMAGE)


def _closest_face(face: _Face, candidates: list[_Face]) -> tuple[int, int | None, str | None] | None:
    """(face id, distance, transform) of the candidate nearest by hash; by face index when unhashed."""
    if not candidates:
        return None
    hashed = [c for c in candidates if c.hash is not None]
    if face.hash is not None and hashed:
        h = as_u64([face.hash])
        plain = popcount64(as_u64([c.hash for c in hashed]) ^ h).astype(int)
        flipped = popcount64(as_u64([c.hash_flip for c in hashed]) ^ h).astype(int)
        best = int(np.argmin(np.minimum(plain, flipped)))
        mirror = flipped[best] < plain[best]
        return hashed[best].id, int(min(plain[best], flipped[best])), _transform_name(FLIP) if mirror else None
    same = [c for c in candidates if c.face_index == face.face_index] or candidates
    return same[0].id, None, None


def _face_status(status: str, reasons: str, duplicate: bool) -> str:
    """``duplicate`` while grouped; when released, what the rules said (reject if any reason, else keep)."""
    if duplicate:
        return "duplicate"
    if status == "duplicate":
        return "reject" if json.loads(reasons or "[]") else "keep"
    return status


# -- entry point ------------------------------------------------------------------------------------------


def run_dedup(ws: Workspace, catalog: Catalog, opts: DedupOptions, *, dry_run: bool = False, redo: bool = False,
              on_start: Start | None = None, on_progress: Progress | None = None) -> DedupSummary:
    """Fingerprint what is new, group photos, then (if enabled and cropped) faces; see the module docstring."""
    opts.check()
    summary = DedupSummary(options=opts, dry_run=dry_run)
    photos = _dedup_photos(ws, catalog, opts, dry_run, redo, on_start, on_progress, summary)
    if opts.faces:
        _dedup_faces(ws, catalog, opts, photos, dry_run, redo, on_start, on_progress, summary)
    return summary
