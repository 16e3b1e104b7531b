"""The ``dedup`` stage: fingerprint files once, group photos, then group face crops; all I/O lives here.

Order of work, and why:

1. **Photos.** Every image without a cached fingerprint for the current hash setting is decoded once
   (through :mod:`facecurate.media`) and fingerprinted, a batch per transaction, so a kill loses at most one
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

import json
import os
from collections import Counter
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from facecurate import media
from facecurate.catalog import Catalog, utc_now
from facecurate.dedup.core import Items, Options, Result, find_groups
from facecurate.dedup.groups import FLIP, TRANSFORMS, parse_policy
from facecurate.dedup.hashing import THUMB_SIZE, fingerprint, to_signed
from facecurate.dedup.search import as_u64, popcount64
from facecurate.dedup.verify import thumbs_from_bytes
from facecurate.errors import ConfigError, ImageError
from facecurate.workspace import Workspace

BATCH = 128          # files fingerprinted per transaction: a kill re-hashes at most this many
WORKERS = max(1, min(4, os.cpu_count() or 1))  # fingerprinting threads
KIND_IMAGE = "image"  # a face whose photo is a duplicate photo


@dataclass(frozen=True)
class DedupOptions:
    """Settings of one run: the [dedup] section of facecurate.toml, with command-line overrides."""

    algorithm: str = "phash"
    threshold: int = 8
    min_similarity: float = 0.93
    crop_window: float = 0.95
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
        for name in ("threshold", "face_threshold"):
            if not 0 <= getattr(self, name) <= 32:
                raise ConfigError(f"{where}: [dedup] {name} = {getattr(self, name)} is outside 0..32 bits; "
                                  f"half the hash differs between unrelated photos, so use 4-12.")
        if not (self.crop_window == 0 or 0.5 <= self.crop_window < 1):
            raise ConfigError(f"{where}: [dedup] crop_window = {self.crop_window}: use 0 (off) or 0.5-0.99.")

    @property
    def image_algo(self) -> str:
        """Cache key of photo fingerprints: the algorithm and the window (a change re-hashes)."""
        return f"{self.algorithm}/w{round(self.crop_window * 100)}" if self.crop_window else self.algorithm

    @property
    def face_algo(self) -> str:
        return self.algorithm


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


def _fingerprint_row(ws: Workspace, rel: str, stamp: str, algo: str, algorithm: str, window: float,
                     max_pixels: int, max_bytes: int) -> dict[str, Any]:
    """Decode one file through media and fingerprint it; a bad file becomes a row with an error."""
    row: dict[str, Any] = dict.fromkeys(Catalog.DEDUP_HASH_COLUMNS)
    row.update(path=rel, algo=algo, stamp=stamp, hashed_at=utc_now())
    try:
        data = media.read_limited(ws.resolve(rel), max_bytes)
        decoded = media.decode(data, rel, max_pixels)
        fp = fingerprint(decoded.pixels, algorithm, window, data)
    except ImageError as exc:
        row["error"] = str(exc)
        return row
    row.update(hash=to_signed(fp.hash), hash_flip=to_signed(fp.hash_flip),
               window=None if fp.window is None else to_signed(fp.window),
               window_flip=None if fp.window_flip is None else to_signed(fp.window_flip),
               pixels=fp.pixels, thumb=fp.thumb, sharpness=fp.sharpness, jpeg_quality=fp.jpeg_quality)
    return row


def _fingerprint_all(ws: Workspace, catalog: Catalog, todo: list[tuple[str, str]], algo: str, algorithm: str,
                     window: float, dry_run: bool, on_progress: Progress | None) -> Iterator[dict[str, Any]]:
    """Fingerprint (path, stamp) pairs in batches; each batch is one transaction unless this is a dry run."""
    if not todo:
        return
    cfg = ws.config()
    max_pixels, max_bytes = cfg.get("media", "max_pixels"), cfg.get("media", "max_bytes")
    # Threads: decoding and resampling release the GIL. (Worker processes were tried: on a 2-CPU machine their
    # start-up ate the gain, and spawn/forkserver re-import the caller's main module, a trap for scripts.)
    with ThreadPoolExecutor(max_workers=WORKERS) as pool:
        for start in range(0, len(todo), BATCH):
            batch = todo[start:start + BATCH]
            rows = list(pool.map(lambda t: _fingerprint_row(ws, t[0], t[1], algo, algorithm, window, max_pixels,
                                                            max_bytes), batch))
            if not dry_run:
                with catalog.transaction():
                    catalog.dedup_save_hashes(rows)
            yield from rows
            if on_progress:
                on_progress(len(batch))


def _thumb_loader(catalog: Catalog, paths: list[str], algo: str,
                  fresh: dict[str, dict[str, Any]]) -> Callable[[np.ndarray], np.ndarray]:
    def load(idx: np.ndarray) -> np.ndarray:
        wanted = [paths[int(i)] for i in idx]
        stored = catalog.dedup_thumbs([p for p in wanted if p not in fresh], algo)
        blobs = [fresh[p]["thumb"] if p in fresh else stored.get(p, bytes(THUMB_SIZE * THUMB_SIZE))
                 for p in wanted]
        return thumbs_from_bytes(blobs)
    return load


def _merged(row: Any, fresh: dict[str, Any] | None) -> dict[str, Any]:
    """A catalog row with this run's new fingerprint (if any) laid over it."""
    out = dict(row)
    if fresh is not None:
        out.update({k: v for k, v in fresh.items() if k not in ("path",)})
    return out


def _transform_name(code: int) -> str | None:
    return TRANSFORMS.get(int(code))


# -- photos -----------------------------------------------------------------------------------------------


def _dedup_photos(ws: Workspace, catalog: Catalog, opts: DedupOptions, dry_run: bool, redo: bool,
                  on_start: Start | None, on_progress: Progress | None,
                  summary: DedupSummary) -> dict[int, tuple[Any, ...]]:
    """Fingerprint and group the photos; returns image id -> (group, of, distance, transform, kind)."""
    algo, level = opts.image_algo, summary.photos
    if redo and not dry_run:
        with catalog.transaction():
            catalog.dedup_forget(algo, "raw/")
    rows = catalog.dedup_image_rows(algo)
    level.items = len(rows)
    todo = [(r["path"], r["sha256"]) for r in rows
            if redo or r["stamp"] != r["sha256"] or r["error"] is not None or r["hash"] is None]
    level.hashed, level.cached = len(todo), len(rows) - len(todo)
    if on_start:
        on_start("hash photos", len(todo))
    fresh = {f["path"]: f for f in _fingerprint_all(ws, catalog, todo, algo, opts.algorithm, opts.crop_window,
                                                     dry_run, on_progress)}
    merged = [_merged(r, fresh.get(r["path"])) for r in rows]
    level.failed = [(m["path"], m["error"]) for m in merged if m.get("error")]
    ok = [m for m in merged if m.get("hash") is not None and not m.get("error")]
    result: dict[int, tuple[Any, ...]] = {int(m["id"]): (None,) * 5 for m in merged}
    if ok:
        windows = opts.crop_window > 0 and all(m.get("window") is not None for m in ok)
        items = Items(
            hashes=as_u64([m["hash"] for m in ok]), flips=as_u64([m["hash_flip"] for m in ok]),
            pixels=np.array([m["pixels"] for m in ok]),
            quality={"resolution": np.array([m["width"] * m["height"] for m in ok], dtype=np.float64),
                     "jpeg_quality": np.array([m["jpeg_quality"] or 0 for m in ok], dtype=np.float64),
                     "bytes": np.array([m["bytes"] for m in ok], dtype=np.float64),
                     "sharpness": np.array([m["sharpness"] or 0.0 for m in ok], dtype=np.float64),
                     "first_seen": np.array([m["id"] for m in ok], dtype=np.float64)},
            tiebreak=np.array([m["sha256"] for m in ok]),
            windows=as_u64([m["window"] for m in ok]) if windows else None,
            window_flips=as_u64([m["window_flip"] for m in ok]) if windows else None)
        found = find_groups(items, Options(opts.threshold, opts.min_similarity, parse_policy(opts.keeper)),
                            _thumb_loader(catalog, [m["path"] for m in ok], algo, fresh))
        level.stats = found.stats
        ids = np.array([m["id"] for m in ok], dtype=np.int64)
        result.update(_assignments(found, ids, ids))
    _summarise(level, result)
    by_id = {int(m["id"]): m for m in merged}
    updates = [(*new, image_id) for image_id, new in result.items() if new != _current(by_id[image_id])]
    level.changed = len(updates)
    if updates and not dry_run:
        with catalog.transaction():
            catalog.dedup_set_images(updates)
    summary.groups += _views("photo", result, catalog.dedup_source_names(
        sorted({i for i, r in result.items() if r[0] is not None})))
    return result


def _current(row: dict[str, Any]) -> tuple[Any, ...]:
    return (row["dup_group"], row["dup_of"], row["dup_distance"], row["dup_transform"], row["dup_kind"])


def _assignments(found: Result, ids: np.ndarray, group_ids: np.ndarray) -> dict[int, tuple[Any, ...]]:
    """Result arrays to catalog values. ``ids`` name the items (dup_of); ``group_ids`` their photos (dup_group)."""
    out: dict[int, tuple[Any, ...]] = {}
    for k in range(ids.size):
        kp = int(found.keeper[k])
        if kp < 0:
            out[int(ids[k])] = (None,) * 5
        elif kp == k:
            out[int(ids[k])] = (int(group_ids[k]), None, None, None, None)
        else:
            out[int(ids[k])] = (int(group_ids[kp]), int(ids[kp]), int(found.distance[k]),
                                _transform_name(found.transform[k]), found.kind[k])
    return out


def _summarise(level: LevelSummary, result: dict[int, tuple[Any, ...]]) -> None:
    dups = [r for r in result.values() if r[1] is not None or r[4] is not None]
    level.duplicates = len(dups)
    level.groups = len({r[0] for r in result.values() if r[0] is not None})
    level.by_transform = dict(Counter(r[3] or "none" for r in dups))
    level.by_kind = dict(Counter(r[4] for r in dups))


def _views(level: str, result: dict[int, tuple[Any, ...]], names: dict[int, str],
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


def _dedup_faces(ws: Workspace, catalog: Catalog, opts: DedupOptions, photos: dict[int, tuple[Any, ...]],
                 dry_run: bool, redo: bool, on_start: Start | None, on_progress: Progress | None,
                 summary: DedupSummary) -> None:
    algo, level = opts.face_algo, summary.faces
    if redo and not dry_run:
        with catalog.transaction():
            catalog.dedup_forget(algo, "crops/")
    rows = catalog.dedup_face_rows(algo, opts.image_algo)
    level.items = len(rows)
    if not rows:
        return
    stamps = {r["crop_path"]: _crop_stamp(ws, r["crop_path"]) for r in rows}
    todo = [(r["crop_path"], stamps[r["crop_path"]]) for r in rows if stamps[r["crop_path"]] is not None and
            (redo or r["stamp"] != stamps[r["crop_path"]] or r["error"] is not None or r["hash"] is None)]
    level.hashed = len(todo)
    level.cached = sum(1 for r in rows if stamps[r["crop_path"]] is not None) - len(todo)
    if on_start:
        on_start("hash faces", len(todo))
    fresh = {f["path"]: f for f in _fingerprint_all(ws, catalog, todo, algo, opts.algorithm, 0.0, dry_run,
                                                     on_progress)}
    merged = []
    for r in rows:
        m = _merged(r, fresh.get(r["crop_path"]))
        if stamps[r["crop_path"]] is None:
            m.update(hash=None, error=f"{r['crop_path']} is missing: run `facecurate crop` again.")
        merged.append(m)
    level.failed = [(m["crop_path"], m["error"]) for m in merged if m.get("error")]
    photo_dup = {image_id: v[1] for image_id, v in photos.items() if v[1] is not None}
    ok = [m for m in merged if m.get("hash") is not None and not m.get("error")]
    result: dict[int, tuple[Any, ...]] = {int(m["id"]): (None,) * 5 for m in merged}
    if ok:
        items = Items(
            hashes=as_u64([m["hash"] for m in ok]), flips=as_u64([m["hash_flip"] for m in ok]),
            pixels=np.array([m["pixels"] for m in ok]),
            quality={"resolution": np.array([_quad_side(m["quad"]) for m in ok]),
                     "jpeg_quality": np.array([m["image_jpeg_quality"] or 0 for m in ok], dtype=np.float64),
                     "bytes": np.array([m["image_bytes"] for m in ok], dtype=np.float64),
                     "sharpness": np.array([m["sharpness"] or 0.0 for m in ok], dtype=np.float64),
                     "first_seen": np.array([m["id"] for m in ok], dtype=np.float64)},
            tiebreak=np.array([f"{m['sha256']}_{m['face_index']:04d}" for m in ok]),
            can_lead=np.array([m["image_id"] not in photo_dup for m in ok]))
        found = find_groups(items, Options(opts.face_threshold, opts.face_min_similarity,
                                           parse_policy(opts.keeper)),
                            _thumb_loader(catalog, [m["crop_path"] for m in ok], algo, fresh))
        level.stats = found.stats
        image_of = {int(m["id"]): int(m["image_id"]) for m in merged}
        ids = np.array([m["id"] for m in ok], dtype=np.int64)
        result.update(_assignments(found, ids, np.array([image_of[int(i)] for i in ids], dtype=np.int64)))
    _inherit_photo_duplicates(merged, result, photo_dup, photos)
    _summarise(level, result)
    updates = []
    for m in merged:
        new = result[int(m["id"])]
        status = _face_status(m["status"], m["reasons"], new[4] is not None)
        if new != _current(m) or status != m["status"]:
            updates.append((*new, status, int(m["id"])))
    level.changed = len(updates)
    if updates and not dry_run:
        with catalog.transaction():
            catalog.dedup_set_faces(updates)
    names = catalog.dedup_source_names(sorted({int(m["image_id"]) for m in merged}))
    face_name = {int(m["id"]): f"{names.get(int(m['image_id']), m['crop_path'])} (face {m['face_index']})"
                 for m in merged}
    summary.groups += _views("face", result, {}, lambda i: face_name.get(i, f"photo {-i}"))


def _inherit_photo_duplicates(merged: list[dict[str, Any]], result: dict[int, tuple[Any, ...]],
                              photo_dup: dict[int, int], photos: dict[int, tuple[Any, ...]]) -> None:
    """Faces of a duplicate photo are duplicates (kind ``image``); each points at the closest face of the
    kept photo (mirror-aware hash distance) when hashing did not already place it in a group."""
    faces_of: dict[int, list[dict[str, Any]]] = {}
    for m in merged:
        faces_of.setdefault(int(m["image_id"]), []).append(m)
    for m in merged:
        image_id = int(m["image_id"])
        if image_id not in photo_dup:
            continue
        face_id = int(m["id"])
        group, of, distance, transform, _ = result[face_id]
        if of is None:
            keeper_photo = photo_dup[image_id]
            best = _closest_face(m, faces_of.get(keeper_photo, []))
            group = photos[image_id][0]
            if best is not None:
                of, distance, transform = best
        result[face_id] = (group, of, distance, transform, KIND_IMAGE)


def _closest_face(face: dict[str, Any], candidates: list[dict[str, Any]]) -> tuple[int, int | None, str | None] | None:
    """(face id, distance, transform) of the candidate nearest by hash; by face index when unhashed."""
    if not candidates:
        return None
    if face.get("hash") is not None:
        hashed = [c for c in candidates if c.get("hash") is not None and not c.get("error")]
        if hashed:
            h = as_u64([face["hash"]])
            plain = popcount64(as_u64([c["hash"] for c in hashed]) ^ h).astype(int)
            flipped = popcount64(as_u64([c["hash_flip"] for c in hashed]) ^ h).astype(int)
            best = int(np.argmin(np.minimum(plain, flipped)))
            mirror = flipped[best] < plain[best]
            return (int(hashed[best]["id"]), int(min(plain[best], flipped[best])),
                    _transform_name(FLIP) if mirror else None)
    same = [c for c in candidates if c["face_index"] == face["face_index"]] or candidates
    return int(same[0]["id"]), None, None


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
