"""Manifest writers and dataset layouts.

The manifest has one row for every face and for every image or source that produced no face, whatever
its status, so a person can audit each decision; the layouts (Hugging Face imagefolder) carry only what is
kept. Stages that do not exist yet leave their fields present and empty, so the columns never change shape.

The train/val split is keyed on a photo's *duplicate family* (its photo-level group and every face-level group
that touches it), so a photo, its mirrored or recompressed copies and re-posts of its face always land on one
side: a copy in val of a training photo would make validation figures lie. Layouts are built in a staging
folder and swapped in by rename, so a killed export leaves no half layout, and a re-export replaces it whole.
"""

from __future__ import annotations

import csv
import hashlib
import json
import os
import re
import shutil
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from facecurate import __version__, media
from facecurate.catalog import Catalog, utc_now
from facecurate.workspace import Workspace

FIELDS: tuple[str, ...] = (
    "sample_id", "file_name", "label", "split", "status", "reasons", "scores", "review",
    "source_sha256", "source_path", "source_url", "page_url", "title", "engine", "query", "rank",
    "license", "author", "retrieved_at", "source_width", "source_height", "dup_group", "dup_of",
    "dup_distance", "face_index", "det_score", "bbox", "landmarks", "quad", "oob_fraction",
    "above_fraction", "crop_size",
)
JSON_FIELDS = frozenset({"reasons", "scores", "review", "bbox", "landmarks", "quad"})
REVIEWED_STATUS = {"kept": "keep", "rejected": "reject"}  # review decision -> the status it imposes
LAYOUTS = ("none", "imagefolder", "per-label")
SPLITS = ("train", "val")
UNLABELLED = "unlabelled"  # folder of kept faces whose photo has no label (per-label layout)
FORMATS = ("jsonl", "csv", "parquet")


@dataclass(frozen=True)
class ExportResult:
    manifest: Path
    sidecar: Path
    rows: int
    counts: dict[str, int]
    layout_dir: Path | None
    layout_files: int


def _split(key: str, seed: int, val_fraction: float) -> str:
    """Deterministic split of one duplicate family (see :func:`split_keys`): all its faces on one side."""
    if val_fraction <= 0:
        return "train"
    h = int.from_bytes(hashlib.sha256(f"{seed}:{key}".encode()).digest()[:8], "big") / 2**64
    return "val" if h < val_fraction else "train"


def split_keys(conn: Any) -> dict[int, str]:
    """The split key of every image (by images.id): the smallest sha256 of its duplicate family.

    A family joins photos that dedup grouped (``images.dup_group``) and photos whose faces it grouped
    (``faces.dup_group`` is the kept face's photo), transitively, so a duplicate photo, a duplicate face and
    their keeper share one key. A photo without duplicates keys on its own sha256, as before dedup ran."""
    parent: dict[int, int] = {}

    def root(x: int) -> int:
        parent.setdefault(x, x)
        while parent[x] != x:
            parent[x] = parent[parent[x]]  # path halving keeps the chains short
            x = parent[x]
        return x

    def join(a: int, b: int) -> None:
        ra, rb = root(a), root(b)
        if ra != rb:
            parent[max(ra, rb)] = min(ra, rb)

    sha: dict[int, str] = {}
    for img in conn.execute("SELECT id, sha256, dup_group FROM images"):
        sha[img["id"]] = img["sha256"]
        if img["dup_group"] is not None:
            join(img["id"], img["dup_group"])
    for f in conn.execute("SELECT image_id, dup_group FROM faces WHERE dup_group IS NOT NULL"):
        join(f["image_id"], f["dup_group"])
    smallest: dict[int, str] = {}
    for image_id, digest in sha.items():
        r = root(image_id)
        smallest[r] = min(smallest.get(r, digest), digest)
    return {image_id: smallest[root(image_id)] for image_id in sha}


def _empty_row() -> dict[str, Any]:
    row: dict[str, Any] = dict.fromkeys(FIELDS)
    row.update(reasons=[], scores={}, review={"decision": "none", "by": None, "at": None})
    return row


def _source_fields(src: Any) -> dict[str, Any]:
    if src is None:
        return {}
    is_url = src["kind"] == "url"
    return {"source_path": None if is_url else src["location"], "source_url": src["location"] if is_url else None,
            "page_url": src["page_url"], "title": src["title"], "engine": src["engine"], "query": src["query"],
            "rank": src["rank"], "license": src["license"], "author": src["author"],
            "retrieved_at": src["retrieved_at"]}


def _dup_samples(conn: Any, faces: dict[int, list[Any]]) -> dict[str, dict[int, str]]:
    """sample_id of every face (by faces.id) and of every photo's first row (by images.id), for ``dup_of``."""
    face_ids: dict[int, str] = {}
    image_ids: dict[int, str] = {}
    for img in conn.execute("SELECT id, sha256, crop_state FROM images"):
        own = faces.get(img["id"], []) if img["crop_state"] == "done" else []
        for f in own:
            face_ids[f["id"]] = f"{img['sha256'][:16]}_{f['face_index']}"
        image_ids[img["id"]] = f"{img['sha256'][:16]}_{own[0]['face_index']}" if own else img["sha256"][:16]
    return {"face": face_ids, "image": image_ids}


def _dup_fields(row: Any, dup_of_sample: str | None) -> dict[str, Any]:
    """dup_group (the kept photo's image id), dup_of (the kept row's sample_id), dup_distance (bits).

    A face of a duplicate photo whose kept photo has no matching face points at that photo's first row."""
    distance = row["dup_distance"]
    return {"dup_group": row["dup_group"], "dup_of": dup_of_sample,
            "dup_distance": float(distance) if distance is not None else None}


def manifest_rows(ws: Workspace, catalog: Catalog, out_dir: Path, seed: int = 0,
                  val_fraction: float = 0.0) -> list[dict[str, Any]]:
    """Every face, every image without a face, and every failed source, as manifest rows."""
    conn = catalog.conn
    first_source = {r["image_id"]: r for r in conn.execute(
        "SELECT * FROM sources WHERE id IN (SELECT MIN(id) FROM sources WHERE status='ok' GROUP BY image_id)")}
    reviews = catalog.review_latest()  # a person's latest decision overrides the rules' status
    faces: dict[int, list[Any]] = {}
    for f in conn.execute("SELECT * FROM faces ORDER BY image_id, face_index"):
        faces.setdefault(f["image_id"], []).append(f)
    samples = _dup_samples(conn, faces)
    keys = split_keys(conn)
    rows: list[dict[str, Any]] = []
    for img in conn.execute("SELECT * FROM images ORDER BY id"):
        base = _empty_row()
        base.update(label=img["label"], source_sha256=img["sha256"], source_width=img["width"],
                    source_height=img["height"], split=_split(keys[img["id"]], seed, val_fraction),
                    **_source_fields(first_source.get(img["id"])))
        state = img["crop_state"]
        if state == "done":
            for f in faces.get(img["id"], []):
                row = dict(base)
                review = reviews.get((img["id"], f["face_index"]), row["review"])
                row.update(sample_id=f"{img['sha256'][:16]}_{f['face_index']}",
                           file_name=os.path.relpath(ws.resolve(f["crop_path"]), out_dir), review=review,
                           status=REVIEWED_STATUS.get(review["decision"], f["status"]),
                           reasons=json.loads(f["reasons"]), scores=json.loads(f["scores"]),
                           face_index=f["face_index"], det_score=f["det_score"], bbox=json.loads(f["bbox"]),
                           landmarks=json.loads(f["landmarks"]), quad=json.loads(f["quad"]),
                           oob_fraction=f["oob_fraction"], above_fraction=f["above_fraction"],
                           crop_size=f["crop_size"],
                           **_dup_fields(f, samples["face"].get(f["dup_of"]) if f["dup_of"] is not None else
                                         samples["image"].get(f["dup_group"]) if f["dup_kind"] else None))
                rows.append(row)
        else:
            base.update(sample_id=img["sha256"][:16], status=state or "pending",
                        reasons=["no_face"] if state == "no_face" else
                        ["crop_failed"] if state == "failed" else [],
                        **_dup_fields(img, samples["image"].get(img["dup_of"])))
            if img["dup_of"] is not None:  # a duplicate photo: marked, kept out of the layouts
                base["status"] = "duplicate"
            rows.append(base)
    for src in conn.execute("SELECT * FROM sources WHERE status='failed' ORDER BY id"):
        row = _empty_row()
        row.update(sample_id=f"failed_{src['id']}", label=src["label"], status="failed",
                   reasons=[src["error"] or "failed"], split=None, **_source_fields(src))
        rows.append(row)
    return rows


def _write_jsonl(rows: list[dict[str, Any]], path: Path) -> None:
    data = "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows).encode()
    media.atomic_write(path, data)


def _write_csv(rows: list[dict[str, Any]], path: Path) -> None:
    tmp = path.with_name(f"{media.PART_PREFIX}{os.getpid()}-{path.name}")
    with tmp.open("w", newline="", encoding="utf-8") as fh:
        writer = csv.DictWriter(fh, fieldnames=FIELDS)
        writer.writeheader()
        for r in rows:
            writer.writerow({k: json.dumps(v) if k in JSON_FIELDS else v for k, v in r.items()})
    os.replace(tmp, path)


def _write_parquet(rows: list[dict[str, Any]], path: Path) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    f64, i64, s = pa.float64(), pa.int64(), pa.string()
    types: dict[str, pa.DataType] = {k: s for k in FIELDS}
    types.update(reasons=pa.list_(s), bbox=pa.list_(f64), landmarks=pa.list_(pa.list_(f64)),
                 quad=pa.list_(pa.list_(f64)), rank=i64, source_width=i64, source_height=i64, dup_group=i64,
                 dup_distance=f64, face_index=i64, det_score=f64, oob_fraction=f64, above_fraction=f64,
                 crop_size=i64)
    schema = pa.schema([(k, types[k]) for k in FIELDS])
    # Scores and review are open-ended objects: JSON text keeps the schema fixed as rules are added.
    table = pa.Table.from_pylist([{**r, "scores": json.dumps(r["scores"]), "review": json.dumps(r["review"])}
                                  for r in rows], schema=schema)
    tmp = path.with_name(f"{media.PART_PREFIX}{os.getpid()}-{path.name}")
    pq.write_table(table, tmp)
    os.replace(tmp, path)


WRITERS = {"jsonl": _write_jsonl, "csv": _write_csv, "parquet": _write_parquet}


def _kept(rows: list[dict[str, Any]], split: str) -> list[dict[str, Any]]:
    """Rows a layout carries: kept faces with a crop file, of one split."""
    return [r for r in rows if r["status"] == "keep" and r["split"] == split and r["file_name"]]


def _write_imagefolder(rows: list[dict[str, Any]], out_dir: Path, stage: Path) -> int:
    """Kept crops under <split>/ with metadata.jsonl (``file_name`` relative to it), as HF expects."""
    written = 0
    for split in SPLITS:
        kept = _kept(rows, split)
        if not kept:
            continue
        split_dir = stage / split
        split_dir.mkdir(parents=True)
        lines = []
        for r in kept:
            src = (out_dir / r["file_name"]).resolve()
            name = f"{r['sample_id']}{src.suffix}"
            _link_or_copy(src, split_dir / name)
            meta = {k: r[k] for k in ("label", "sample_id", "source_sha256", "det_score", "oob_fraction",
                                      "above_fraction", "crop_size", "source_path", "source_url", "query")}
            lines.append(json.dumps({"file_name": name, **meta}, ensure_ascii=False) + "\n")
            written += 1
        (split_dir / "metadata.jsonl").write_text("".join(lines), encoding="utf-8")
    return written


def label_folder(label: str | None) -> str:
    """A label as one folder name: tracked labels already are (letters, digits, - _ .); imported ones may not."""
    name = re.sub(r"[^\w.-]+", "_", label or "").strip("._") or UNLABELLED
    return name


def _write_per_label(rows: list[dict[str, Any]], out_dir: Path, stage: Path) -> int:
    """Kept crops under <split>/<label>/, the domain folders StarGAN v2 (and torchvision ImageFolder) read."""
    written = 0
    for split in SPLITS:
        for r in _kept(rows, split):
            src = (out_dir / r["file_name"]).resolve()
            folder = stage / split / label_folder(r["label"])
            folder.mkdir(parents=True, exist_ok=True)
            _link_or_copy(src, folder / f"{r['sample_id']}{src.suffix}")
            written += 1
    return written


LAYOUT_WRITERS: dict[str, Callable[[list[dict[str, Any]], Path, Path], int]] = {
    "imagefolder": _write_imagefolder, "per-label": _write_per_label}


def _publish_layout(layout: str, rows: list[dict[str, Any]], out_dir: Path) -> int:
    """Build the layout's train/ and val/ in a staging folder beside them, then swap each in by rename.

    A kill while building leaves only the staging folder (named like media's temp files, so the next export
    removes it); the old layout stays whole until the swap, and a split with no kept face is removed."""
    media.remove_stale_parts(out_dir)
    stage = out_dir / f"{media.PART_PREFIX}{os.getpid()}-layout"
    shutil.rmtree(stage, ignore_errors=True)
    stage.mkdir()
    try:
        written = LAYOUT_WRITERS[layout](rows, out_dir, stage)
        for split in SPLITS:
            target, old = out_dir / split, out_dir / f"{media.PART_PREFIX}{os.getpid()}-old-{split}"
            if target.exists():
                os.replace(target, old)
            if (stage / split).exists():
                os.replace(stage / split, target)
            shutil.rmtree(old, ignore_errors=True)
    finally:
        shutil.rmtree(stage, ignore_errors=True)
    return written


def _link_or_copy(src: Path, dst: Path) -> None:
    try:
        os.link(src, dst)
    except OSError:
        shutil.copy2(src, dst)


def export(ws: Workspace, catalog: Catalog, fmt: str = "jsonl", out_dir: Path | None = None,
           layout: str = "none") -> ExportResult:
    cfg = ws.config()
    out = (out_dir or ws.exports_dir).resolve()
    out.mkdir(parents=True, exist_ok=True)
    rows = manifest_rows(ws, catalog, out, seed=cfg.get("export", "seed"),
                         val_fraction=cfg.get("export", "val_fraction"))
    manifest = out / f"manifest.{fmt}"
    WRITERS[fmt](rows, manifest)
    by_status = Counter(r["status"] for r in rows)
    by_reason = Counter(reason for r in rows for reason in r["reasons"])
    layout_dir, layout_files = None, 0
    if layout in LAYOUT_WRITERS:
        layout_files = _publish_layout(layout, rows, out)
        layout_dir = out
    sidecar = out / "manifest.json"
    info = {"tool": "facecurate", "version": __version__, "created_at": utc_now(), "workspace": str(ws.root),
            "manifest": manifest.name, "format": fmt, "rows": len(rows), "layout": layout,
            "counts": {"status": dict(by_status), "reasons": dict(by_reason)}, "config": cfg.as_dict()}
    media.atomic_write(sidecar, (json.dumps(info, indent=2, ensure_ascii=False) + "\n").encode())
    return ExportResult(manifest, sidecar, len(rows), dict(by_status), layout_dir, layout_files)
