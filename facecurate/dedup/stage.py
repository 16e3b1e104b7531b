"""The ``dedup`` stage: fingerprint files once, group photos, then group face crops; all I/O lives here.

Order of work, and why:

1. **Photos.** Every image without a cached fingerprint for the current hash setting is decoded once (a
   JPEG at reduced scale, see :mod:`facecurate.dedup.decode`; the rest through :mod:`facecurate.media`) and
   fingerprinted in worker processes, a batch per transaction, so a kill loses at most one
   batch and a re-run hashes only what is new. Grouping then runs over *all* cached fingerprints — it is
   cheap next to decoding, and a new, better copy must be able to take over as keeper of an old group.
2. **Faces** (after ``crop``). The faces of a duplicate photo are duplicates by derivation (the state in
   force looks at the photo's ``dup_of``, :mod:`facecurate.catalog.state`); they may join a group but never
   lead one, and each points at the matching face of the kept photo (``dup_kind`` ``image``). The crop stage
   still crops duplicate photos on purpose: the crops give that pointer, and a later run that promotes a copy
   to keeper needs no re-crop. Then the aligned crops themselves are hashed and grouped, which catches one
   face cropped from two *different* files — a re-post with a new border or a caption changes the photo's
   hash but not the aligned face.

The stage writes its own facts only: the fingerprint cache and the ``dup_*`` fields. Writes are diffs: only
rows whose duplicate fields change are updated, in one transaction per level, so a second run with nothing new
writes nothing. ``dry_run`` computes everything and writes nothing at all.
"""

from __future__ import annotations

import dataclasses
import functools
import itertools
import multiprocessing
import os
import warnings
from collections import Counter, deque
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future, ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any, Protocol, cast

import numpy as np

from facecurate import media
from facecurate.catalog import Catalog, utc_now
from facecurate.catalog.dedup import NOT_GROUPED, DupFields, DupKind, DupTransform, HashRow
from facecurate.dedup.core import Items, Options, Result, find_groups, twin_candidates
from facecurate.dedup.decode import REDUCED_PREFIX, decode_reduced, full_digest, is_exact
from facecurate.dedup.groups import FLIP, TRANSFORMS, parse_policy
from facecurate.dedup.hashing import (
    ALGORITHMS,
    THUMB_SIZE,
    fingerprint_gray,
    to_signed,
    windows_from_bytes,
    windows_to_bytes,
)
from facecurate.dedup.search import as_u64, popcount64
from facecurate.dedup.sharded import Mapper
from facecurate.dedup.verify import thumbs_from_bytes
from facecurate.errors import ConfigError, ImageError
from facecurate.events import SILENT, Failure, Progress
from facecurate.filestore import FileStore, open_at, open_mirrored, open_store, storage_setting
from facecurate.work import ArrowResults, Executor, unfinished
from facecurate.workspace import Workspace, options_from

BATCH = 128          # files fingerprinted per transaction: a kill re-hashes at most this many
AHEAD = 4            # chunks queued per worker ahead of the one being consumed
CHUNK = 16           # files per task sent to a worker: small enough to balance, big enough to amortise the IPC
WORKERS = max(1, min(8, os.cpu_count() or 1))  # fingerprinting processes
KIND_IMAGE: DupKind = "image"  # a face whose photo is a duplicate photo
FINGERPRINT_VERSION = "v3"  # v2: reduced grayscale JPEG decodes, reduced digests; v3: four crop windows


@dataclass(frozen=True)
class DedupOptions:
    """Settings of one run: the [dedup] section of facecurate.toml (the settings table holds every default),
    with command-line overrides."""

    algorithm: str
    threshold: int
    min_similarity: float
    crop_window: float
    crop_threshold: int
    keeper: str
    faces: bool
    face_threshold: int
    face_min_similarity: float
    shard_above: int
    shard_entries: int

    @classmethod
    def from_config(cls, ws: Workspace, **overrides: Any) -> DedupOptions:
        """The one way to build options: the workspace's settings, then overrides (None = not given)."""
        opts = options_from(cls, ws.config(), "dedup", **overrides)
        opts.check(ws.config_path)
        return opts

    def check(self, where: Path | str = "facecurate.toml") -> None:
        if self.algorithm not in ALGORITHMS:
            raise ConfigError(f"{where}: [dedup] algorithm = {self.algorithm!r}: use one of "
                              f"{', '.join(ALGORITHMS)}.")
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

    def photo_options(self) -> Options:
        """What grouping the photos needs of these settings."""
        return Options(self.threshold, self.min_similarity, parse_policy(self.keeper), self.crop_threshold,
                       self.shard_above, self.shard_entries)

    def face_options(self) -> Options:
        """What grouping the face crops needs (they have no crop windows: window_threshold goes unused)."""
        return Options(self.face_threshold, self.face_min_similarity, parse_policy(self.keeper),
                       self.crop_threshold, self.shard_above, self.shard_entries)

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
    transform: DupTransform | None
    kind: DupKind | None


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
    failed: list[Failure] = field(default_factory=list)   # item: the workspace-relative path
    group_count: int = 0
    duplicates: int = 0
    changed: int = 0          # rows whose duplicate fields this run changed (would change, in a dry run)
    by_transform: dict[str, int] = field(default_factory=dict)
    by_kind: dict[str, int] = field(default_factory=dict)
    stats: dict[str, int] = field(default_factory=dict)


@dataclass
class DedupSummary:
    options: DedupOptions
    dry_run: bool
    photo_level: LevelSummary = field(default_factory=LevelSummary)
    face_level: LevelSummary = field(default_factory=LevelSummary)
    groups: list[GroupView] = field(default_factory=list)


@dataclass(frozen=True)
class _Run:
    """What every step of one run shares."""

    ws: Workspace
    catalog: Catalog
    opts: DedupOptions
    dry_run: bool
    redo: bool
    progress: Progress
    executor: Executor | None = None   # None or local: this process's forked workers (see _mapper)


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
    storage: str = ""  # [run] storage
    mirrored: bool = True  # read through the workspace's mirror of the storage (False: a Ray worker's view)


@functools.lru_cache(maxsize=4)
def _files(job: _Job) -> FileStore:
    """Where a job's files are read, made once per process."""
    return open_mirrored(job.root, job.storage) if job.mirrored else open_at(job.root, job.storage)


def _fingerprint_row(job: _Job, rel: str, stamp: str) -> HashRow:
    """Decode one file (reduced where it can be) and fingerprint it; a bad file becomes a row with an error."""
    try:
        data = _files(job).read(rel, job.max_bytes)
        reduced = decode_reduced(data, rel, job.max_pixels, _budget)
        fp = fingerprint_gray(reduced.gray, reduced.digest, job.algorithm, job.window, data)
    except ImageError as exc:
        return HashRow(rel, job.algo, stamp, None, None, None, None, None, None, None, str(exc), utc_now())
    return HashRow(rel, job.algo, stamp, to_signed(fp.hash), to_signed(fp.hash_flip),
                   windows_to_bytes(fp.windows, fp.window_flips), fp.pixels, fp.thumb, fp.sharpness,
                   fp.jpeg_quality, None, utc_now())


def _fingerprint_chunk(job: _Job, chunk: list[tuple[str, str]]) -> list[HashRow]:
    return [_fingerprint_row(job, rel, stamp) for rel, stamp in chunk]


class FingerprintWork:
    """Fingerprinting one chunk of (path, stamp) pairs, as an executor's batch work (``run --executor ray``)."""

    name = "hash"
    gpus = 0.0

    def __init__(self, job: _Job) -> None:
        self.job = job

    @property
    def results(self) -> ArrowResults[HashRow]:
        from facecurate.dedup.fingerprint_arrow import RESULTS  # pyarrow only where results leave the process

        return RESULTS

    def __call__(self, chunk: list[tuple[str, str]]) -> list[HashRow]:
        return _fingerprint_chunk(dataclasses.replace(self.job, mirrored=False), chunk)


# The stage's [media] decode_budget, shared by this process and its forked fingerprinting workers. A global
# because a process-shared lock can only reach a worker by inheritance (the pool's initializer), never
# pickled inside a job.
_budget: media.PixelBudget | None = None


def _use_budget(budget: media.PixelBudget | None) -> None:
    global _budget
    _budget = budget


@contextmanager
def _mapper(jobs: int, budget: media.PixelBudget | None = None
            ) -> Iterator[Callable[[Callable[[Any], Any], Iterable[Any]], Iterator[Any]]]:
    """An ordered, lazy map over worker processes (forked: no re-import, ~10 ms to start) when there is work
    for more than one, else in this process.

    Why processes: the per-file work is a few hundred microseconds, much of it Python (Pillow's JPEG header
    parsing, the small numpy steps), so threads queue on the GIL; imagededup forks a pool over every core
    for the same reason. Where fork is missing (Windows, macOS defaults) the map stays in-process.
    A worker killed by a native crash (a decoder segfault on a hostile file) breaks the pool: that is
    reported with the files of the chunk in flight, never waited on forever."""
    workers = min(WORKERS, jobs)
    if workers < 2 or "fork" not in multiprocessing.get_all_start_methods():
        _use_budget(budget)
        try:
            yield map
        finally:
            _use_budget(None)
        return
    with warnings.catch_warnings():
        # Python 3.12 warns when forking a process that runs other threads (a progress bar's refresher):
        # the children only decode and hash, never touching the locks those threads hold.
        warnings.simplefilter("ignore", DeprecationWarning)
        pool = ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("fork"),
                                   initializer=_use_budget, initargs=(budget,))
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
                nxt = next(todo, None)
                if nxt is not None:
                    ahead.append((nxt, pool.submit(fn, nxt)))
            except BrokenProcessPool as exc:
                files = ", ".join(dict.fromkeys(rel for chunk in unfinished(item, ahead) for rel, _ in chunk))
                raise ImageError(f"A fingerprinting worker died (a native crash) on one of: {files}. Files "
                                 f"hashed before it are saved; move the offending file out of raw/ or run "
                                 f"`facecurate dedup` again to retry.", "worker_crashed") from exc
            yield result

    try:
        yield ordered
    finally:
        pool.shutdown(wait=True, cancel_futures=True)


def _fingerprint_all(run: _Run, job: _Job, todo: list[tuple[str, str]]) -> Iterator[HashRow]:
    """Fingerprint (path, stamp) pairs in batches; each batch is one transaction unless this is a dry run."""
    size = min(CHUNK, BATCH)
    chunks = [todo[i:i + size] for i in range(0, len(todo), size)]
    per_batch = max(1, BATCH // size)
    budget = media.PixelBudget(run.ws.config().get("media", "decode_budget"),
                               processes="fork" in multiprocessing.get_all_start_methods())
    remote = run.executor if run.executor is not None and not run.executor.is_local else None
    with _mapper(0 if remote else len(chunks), budget) as pmap:
        results = remote.map_batches(FingerprintWork(job), chunks) if remote else \
            pmap(partial(_fingerprint_chunk, job), chunks)
        for start in range(0, len(chunks), per_batch):
            rows = [row for _ in chunks[start:start + per_batch] for row in next(results)]
            if not run.dry_run:
                with run.catalog.transaction():
                    run.catalog.dedup_save_hashes(rows)
            yield from rows
            run.progress.advance(len(rows))


class _Print(Protocol):
    """A fingerprint as grouping reads it: this run's :class:`HashRow`, or the cached columns of a catalog row."""

    @property
    def hash(self) -> int | None: ...
    @property
    def hash_flip(self) -> int | None: ...
    @property
    def windows(self) -> bytes | None: ...
    @property
    def pixels(self) -> str | None: ...
    @property
    def sharpness(self) -> float | None: ...
    @property
    def error(self) -> str | None: ...


class _PhotoPrint(_Print, Protocol):
    @property
    def jpeg_quality(self) -> int | None: ...


Fresh = dict[str, HashRow]   # path -> fingerprint made in this run (kept only on a dry run, which saves nothing)


def _thumb_loader(catalog: Catalog, paths: list[str], algo: str, fresh: Fresh) -> Callable[[np.ndarray], np.ndarray]:
    def load(idx: np.ndarray) -> np.ndarray:
        wanted = [paths[int(i)] for i in idx]
        stored = catalog.dedup_thumbs([p for p in wanted if p not in fresh], algo)
        blank = bytes(THUMB_SIZE * THUMB_SIZE)
        blobs = [(fresh[p].thumb or blank) if p in fresh else stored.get(p, blank) for p in wanted]
        return thumbs_from_bytes(blobs)
    return load


def _transform_name(code: int) -> DupTransform | None:
    return cast("DupTransform | None", TRANSFORMS.get(int(code)))


def _digest64(hexdigest: str) -> int:
    """The first 64 bits of a hex digest (a reduced digest's prefix skipped): an 8-byte key for equality and
    order (collisions: ~1e-8 at 1M)."""
    return int(hexdigest.removeprefix(REDUCED_PREFIX)[:16], 16)


# One item's keeper criteria (groups.KEEPER_CRITERIA), in this order. A plain tuple: a record per row would cost
# a second per million photos (its __new__ is Python) and numpy reads plain tuples far faster.
QUALITY_KEYS = ("resolution", "jpeg_quality", "bytes", "sharpness", "first_seen")
_Quality = tuple[float, float, float, float, float]


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
    quality: list[_Quality] = field(default_factory=list)
    current: dict[int, DupFields] = field(default_factory=dict)   # rows whose duplicate fields are set now

    def add(self, item_id: int, path: str, fp: _Print, quality: _Quality, tiebreak: int, dims: int = 0) -> None:
        """One item with a fingerprint (callers pass only those whose hash, flip and pixels are set)."""
        pixels = cast(str, fp.pixels)
        self.ids.append(item_id)
        self.paths.append(path)
        self.hashes.append(cast(int, fp.hash))
        self.flips.append(cast(int, fp.hash_flip))
        self.windows.append(fp.windows)
        self.pixels.append(_digest64(pixels))
        self.exact.append(is_exact(pixels))
        self.dims.append(dims)
        self.tiebreak.append(tiebreak)
        self.quality.append(quality)

    def items(self, use_windows: bool, can_lead: np.ndarray | None = None) -> Items:
        windows = flips = None
        if use_windows and self.ids and all(w is not None for w in self.windows):
            windows, flips = windows_from_bytes(cast(list[bytes], self.windows))
        table = np.array(self.quality, dtype=np.float64).reshape(-1, len(QUALITY_KEYS))
        return Items(hashes=as_u64(self.hashes), flips=as_u64(self.flips),
                     pixels=np.array(self.pixels, dtype=np.uint64),
                     quality={k: table[:, j] for j, k in enumerate(QUALITY_KEYS)},
                     tiebreak=np.array(self.tiebreak, dtype=np.uint64),
                     windows=windows, window_flips=flips, can_lead=can_lead)


def _hash_todo(run: _Run, todo: list[tuple[str, str]], algo: str, window: float, task: str) -> Fresh:
    """Fingerprint what is missing. Rows go to the catalog as they come; a dry run keeps them in memory."""
    fresh: Fresh = {}
    if not todo:
        return fresh
    cfg = run.ws.config()
    job = _Job(str(run.ws.root), algo, run.opts.algorithm, window, cfg.get("media", "max_pixels"),
               cfg.get("media", "max_bytes"), storage_setting(run.ws))
    run.progress.start(task, len(todo), "files")
    for row in _fingerprint_all(run, job, todo):
        if run.dry_run:
            fresh[row.path] = row
    run.progress.finish()
    return fresh


def _resolve_twins(run: _Run, cols: _Columns, algo: str, fresh: Fresh) -> int:
    """Full-decode digests for the few items whose reduced digests cannot rule out identical pixels; they
    replace the reduced ones in ``cols`` and in the catalog (in ``fresh`` on a dry run). Returns how many."""
    need = twin_candidates(np.array(cols.pixels, dtype=np.uint64), np.array(cols.exact, dtype=bool),
                           np.array(cols.dims, dtype=np.int64), as_u64(cols.hashes))
    if need.size == 0:
        return 0
    cfg = run.ws.config()
    max_pixels, max_bytes = cfg.get("media", "max_pixels"), cfg.get("media", "max_bytes")
    updates = []
    files = open_store(run.ws)
    for k in need.tolist():
        path = cols.paths[k]
        try:
            digest = full_digest(files.read(path, max_bytes), path, max_pixels)
        except ImageError:
            continue  # decoded once already, so this is a file changed under us: it stays reduced, never a twin
        cols.pixels[k], cols.exact[k] = _digest64(digest), True
        if path in fresh:
            fresh[path] = fresh[path]._replace(pixels=digest)
        updates.append((digest, path, algo))
    if updates and not run.dry_run:
        with run.catalog.transaction():
            run.catalog.dedup_set_pixels(updates)
    return len(updates)


@contextmanager
def process_map(workers: int, ahead: int = 2) -> Iterator[Mapper[Any, Any]]:
    """An ordered, lazy map over forked worker processes for the search shards, at most ``ahead`` shards per
    worker in flight (so the driver never holds every shard's rows); builtin ``map`` where fork is missing or
    one worker is asked. The local stand-in for a cluster executor: shards share nothing, so any map that runs
    a function over pickled records will do."""
    if workers < 2 or "fork" not in multiprocessing.get_all_start_methods():
        yield map
        return
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)   # forking beside a progress thread, as in _mapper
        pool = ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("fork"))
        pool.submit(int).result()

    def ordered(fn: Callable[[Any], Any], items: Iterable[Any]) -> Iterator[Any]:
        todo = iter(items)
        queue: deque[Future[Any]] = deque(pool.submit(fn, x) for x in itertools.islice(todo, ahead * workers))
        while queue:
            result = queue.popleft().result()
            for nxt in itertools.islice(todo, 1):
                queue.append(pool.submit(fn, nxt))
            yield result

    try:
        yield ordered
    finally:
        pool.shutdown(wait=True, cancel_futures=True)


def _shard_map(items: int, opts: DedupOptions) -> AbstractContextManager[Mapper[Any, Any]]:
    """Worker processes for the search shards when this level is past ``shard_above`` (else nothing starts).
    Shards share nothing, so a cluster executor can take this place with its own map."""
    return process_map(WORKERS if items > opts.shard_above else 1)


# -- photos -----------------------------------------------------------------------------------------------


def _dedup_photos(run: _Run, summary: DedupSummary) -> dict[int, DupFields]:
    """Fingerprint and group the photos; returns {image id: fields} for the photos in a group."""
    catalog, opts, level = run.catalog, run.opts, summary.photo_level
    algo = opts.image_algo
    if run.redo and not run.dry_run:
        with catalog.transaction():
            catalog.dedup_forget(algo, "raw/")
    todo = []
    for r in catalog.dedup_image_rows(algo):
        level.items += 1
        if run.redo or r.stamp != r.sha256 or r.error is not None or r.hash is None:
            todo.append((r.path, r.sha256))
    level.hashed, level.cached = len(todo), level.items - len(todo)
    fresh = _hash_todo(run, todo, algo, opts.crop_window, "hash photos")
    cols = _photo_columns(catalog, algo, fresh, level)
    result: dict[int, DupFields] = {}
    if cols.ids:
        full_decodes = _resolve_twins(run, cols, algo, fresh)
        with _shard_map(len(cols.ids), opts) as shard_map:
            found = find_groups(cols.items(opts.crop_window > 0), opts.photo_options(),
                                _thumb_loader(catalog, cols.paths, algo, fresh), shard_map)
        level.stats = {**found.stats, "full_decodes": full_decodes}
        ids = np.array(cols.ids, dtype=np.int64)
        result = _assignments(found, ids, ids)
    _summarise(level, result)
    updates = _diff(result, cols.current)
    level.changed = len(updates)
    if updates and not run.dry_run:
        with catalog.transaction():
            catalog.dedup_set_images([(*fields, item) for item, fields in updates])
    summary.groups += _views("photo", result, catalog.dedup_source_names(sorted(result)))
    return result


def _photo_columns(catalog: Catalog, algo: str, fresh: Fresh, level: LevelSummary) -> _Columns:
    """Every photo's fingerprint (this run's, else the cached one) and keeper criteria, and the duplicate
    fields in force; photos without a fingerprint go to ``level.failed``. One pass over the catalog: this is
    the stage's per-row loop on a million-photo catalog."""
    cols = _Columns(current=catalog.dedup_grouped_images())
    for r in catalog.dedup_image_rows(algo):
        fp: _PhotoPrint = fresh.get(r.path, r)
        if fp.error or fp.hash is None:
            level.failed.append(Failure(r.path, fp.error or "not hashed"))
            continue
        cols.add(r.id, r.path, fp, (r.width * r.height, fp.jpeg_quality or 0, r.file_bytes, fp.sharpness or 0.0, r.id),
                 _digest64(r.sha256), (r.width << 32) | r.height)
    return cols


def _diff(result: dict[int, DupFields], current: dict[int, DupFields]) -> list[tuple[int, DupFields]]:
    """Rows whose duplicate fields change: newly grouped or regrouped, and released ones (set to NULL)."""
    changed = [(i, v) for i, v in result.items() if current.get(i, NOT_GROUPED) != v]
    changed += [(i, NOT_GROUPED) for i in current if i not in result]
    return sorted(changed)


def _assignments(found: Result, ids: np.ndarray, group_ids: np.ndarray) -> dict[int, DupFields]:
    """Grouped items as catalog fields. ``ids`` name the items (dup_of); ``group_ids`` their photos (dup_group)."""
    out: dict[int, DupFields] = {}
    for k in np.flatnonzero(found.keeper >= 0).tolist():
        kp = int(found.keeper[k])
        if kp == k:
            out[int(ids[k])] = DupFields(int(group_ids[k]), None, None, None, None)
        else:
            out[int(ids[k])] = DupFields(int(group_ids[kp]), int(ids[kp]), int(found.distance[k]),
                                         _transform_name(found.transform[k]), found.kind[k])
    return out


def _summarise(level: LevelSummary, result: dict[int, DupFields]) -> None:
    dups = [r for r in result.values() if r.of is not None or r.kind is not None]
    level.duplicates = len(dups)
    level.group_count = len({r.group for r in result.values() if r.group is not None})
    level.by_transform = dict(Counter(r.transform or "none" for r in dups))
    level.by_kind = dict(Counter(r.kind or "none" for r in dups))


def _views(level: str, result: dict[int, DupFields], names: dict[int, str],
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


def _crop_stamp(files: FileStore, rel: str) -> str | None:
    """Size and version of a crop in [run] storage (its mtime in the workspace): a crop cut again is hashed again."""
    return files.stamp(rel)


def _quad_side(quad: list[list[float]]) -> float:
    return float(np.hypot(quad[3][0] - quad[0][0], quad[3][1] - quad[0][1]))


@dataclass(frozen=True)
class _Face:
    """What pointing a duplicate photo's face at the kept photo's face needs about one face."""

    id: int
    image_id: int
    face_index: int
    hash: int | None
    hash_flip: int | None


def _dedup_faces(run: _Run, summary: DedupSummary, photos: dict[int, DupFields]) -> None:
    """Fingerprint and group the face crops; ``photos`` is the photo level's result."""
    ws, catalog, opts, level = run.ws, run.catalog, run.opts, summary.face_level
    algo = opts.face_algo
    if run.redo and not run.dry_run:
        with catalog.transaction():
            catalog.dedup_forget(algo, "crops/")
    todo = []
    files = open_store(ws)
    stamps: dict[str, str | None] = {}  # one look per crop (a HEAD request when storage is object storage)
    for r in catalog.dedup_face_rows(algo, opts.image_algo):
        level.items += 1
        stamp = stamps[r.crop_path] = _crop_stamp(files, r.crop_path)
        if stamp is None:
            continue
        level.cached += 1
        if run.redo or r.stamp != stamp or r.error is not None or r.hash is None:
            todo.append((r.crop_path, stamp))
    if not level.items:
        return
    level.hashed = len(todo)
    level.cached -= len(todo)
    fresh = _hash_todo(run, todo, algo, 0.0, "hash faces")
    photo_dup = {image_id: f.of for image_id, f in photos.items() if f.of is not None}
    involved = set(photo_dup) | set(photo_dup.values())
    cols, image_of, face_index = _Columns(current=catalog.dedup_grouped_faces()), [], []
    faces_of: dict[int, list[_Face]] = {}    # faces of duplicate photos and of their kept photos
    for r in catalog.dedup_face_rows(algo, opts.image_algo):
        fp: _Print = fresh.get(r.crop_path, r)
        ok = not fp.error and fp.hash is not None and stamps.get(r.crop_path) is not None
        if r.image_id in involved:
            faces_of.setdefault(r.image_id, []).append(
                _Face(r.id, r.image_id, r.face_index, fp.hash if ok else None, fp.hash_flip if ok else None))
        if not ok:
            missing = stamps.get(r.crop_path) is None
            level.failed.append(Failure(r.crop_path, f"{r.crop_path} is missing: run `facecurate crop` again."
                                        if missing else (fp.error or "not hashed")))
            continue
        cols.add(r.id, r.crop_path, fp, (_quad_side(r.quad), r.image_jpeg_quality or 0, r.image_bytes,
                                         fp.sharpness or 0.0, r.id),
                 (_digest64(r.sha256) & ~0xFFFF) | r.face_index & 0xFFFF)
        image_of.append(r.image_id)
        face_index.append(r.face_index)
    result: dict[int, DupFields] = {}
    if cols.ids:
        full_decodes = _resolve_twins(run, cols, algo, fresh)
        can_lead = np.array([i not in photo_dup for i in image_of])
        with _shard_map(len(cols.ids), opts) as shard_map:
            found = find_groups(cols.items(False, can_lead), opts.face_options(),
                                _thumb_loader(catalog, cols.paths, algo, fresh), shard_map)
        level.stats = {**found.stats, "full_decodes": full_decodes}
        result = _assignments(found, np.array(cols.ids, dtype=np.int64), np.array(image_of, dtype=np.int64))
    _point_at_kept_faces(faces_of, result, photo_dup, photos)
    _summarise(level, result)
    updates = _diff(result, cols.current)
    level.changed = len(updates)
    if updates and not run.dry_run:
        with catalog.transaction():
            catalog.dedup_set_faces([(*fields, face_id) for face_id, fields in updates])
    shown = set(result) | {f.of for f in result.values() if f.of is not None}
    where = {fid: (image_of[k], face_index[k], cols.paths[k]) for k, fid in enumerate(cols.ids) if fid in shown}
    names = catalog.dedup_source_names(sorted({v[0] for v in where.values()}))
    summary.groups += _views("face", result, {}, lambda i: (
        f"{names.get(where[i][0], where[i][2])} (face {where[i][1]})" if i in where else f"face {i}"))


def _point_at_kept_faces(faces_of: dict[int, list[_Face]], result: dict[int, DupFields],
                         photo_dup: dict[int, int], photos: dict[int, DupFields]) -> None:
    """Each face of a duplicate photo gets kind ``image`` and, when hashing did not already place it in a
    group, points at the closest face of the kept photo (mirror-aware hash distance)."""
    for image_id, keeper_photo in photo_dup.items():
        for face in faces_of.get(image_id, []):
            group, of, distance, transform, _ = result.get(face.id, NOT_GROUPED)
            if of is None:
                group = photos[image_id].group
                best = _closest_face(face, faces_of.get(keeper_photo, []))
                if best is not None:
                    of, distance, transform = best
            result[face.id] = DupFields(group, of, distance, transform, KIND_IMAGE)


def _closest_face(face: _Face, candidates: list[_Face]) -> tuple[int, int | None, DupTransform | None] | None:
    """(face id, distance, transform) of the candidate nearest by hash; by face index when unhashed."""
    if not candidates:
        return None
    hashed = [(c, c.hash, c.hash_flip) for c in candidates if c.hash is not None and c.hash_flip is not None]
    if face.hash is not None and hashed:
        h = as_u64([face.hash])
        plain = popcount64(as_u64([p for _, p, _ in hashed]) ^ h).astype(int)
        flipped = popcount64(as_u64([f for _, _, f in hashed]) ^ h).astype(int)
        best = int(np.argmin(np.minimum(plain, flipped)))
        mirror = flipped[best] < plain[best]
        return hashed[best][0].id, int(min(plain[best], flipped[best])), _transform_name(FLIP) if mirror else None
    same = [c for c in candidates if c.face_index == face.face_index] or candidates
    return same[0].id, None, None


# -- entry point ------------------------------------------------------------------------------------------


def run_dedup(ws: Workspace, catalog: Catalog, opts: DedupOptions, *, dry_run: bool = False, redo: bool = False,
              progress: Progress = SILENT, executor: Executor | None = None) -> DedupSummary:
    """Fingerprint what is new, group photos, then (if enabled and cropped) faces; see the module docstring.

    ``progress`` sees one task per level that has files to hash ("hash photos", "hash faces"), counted in
    files; a level with nothing new to hash starts no task. ``executor`` (not local) fingerprints on its workers;
    grouping and every catalog write stay in this process."""
    opts.check()
    summary = DedupSummary(options=opts, dry_run=dry_run)
    run = _Run(ws, catalog, opts, dry_run, redo, progress, executor)
    photos = _dedup_photos(run, summary)
    if opts.faces:
        _dedup_faces(run, summary, photos)
    return summary
