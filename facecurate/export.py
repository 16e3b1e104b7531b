"""Manifest writers and dataset layouts.

The manifest has one row for every face and for every image or source that produced no face, whatever
its status, so a person can audit each decision; the layouts (Hugging Face imagefolder) carry only what is
kept. Stages that do not exist yet leave their fields present and empty, so the columns never change shape.
"""

from __future__ import annotations

import csv
import hashlib
import json
import os
import shutil
from collections import Counter
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
LAYOUTS = ("none", "imagefolder")
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
    """Deterministic per-photo split: every face of one source photo lands on the same side."""
    if val_fraction <= 0:
        return "train"
    h = int.from_bytes(hashlib.sha256(f"{seed}:{key}".encode()).digest()[:8], "big") / 2**64
    return "val" if h < val_fraction else "train"


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
    rows: list[dict[str, Any]] = []
    for img in conn.execute("SELECT * FROM images ORDER BY id"):
        base = _empty_row()
        base.update(label=img["label"], source_sha256=img["sha256"], source_width=img["width"],
                    source_height=img["height"], split=_split(img["sha256"], seed, val_fraction),
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


def _write_imagefolder(ws: Workspace, rows: list[dict[str, Any]], out_dir: Path) -> int:
    """Kept crops under <split>/ with metadata.jsonl (``file_name`` relative to it), as HF expects."""
    written = 0
    for split in ("train", "val"):
        kept = [r for r in rows if r["status"] == "keep" and r["split"] == split and r["file_name"]]
        split_dir = out_dir / split
        if split_dir.exists():
            shutil.rmtree(split_dir)
        if not kept:
            continue
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
        media.atomic_write(split_dir / "metadata.jsonl", "".join(lines).encode())
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
    if layout == "imagefolder":
        layout_files = _write_imagefolder(ws, rows, out)
        layout_dir = out
    sidecar = out / "manifest.json"
    info = {"tool": "facecurate", "version": __version__, "created_at": utc_now(), "workspace": str(ws.root),
            "manifest": manifest.name, "format": fmt, "rows": len(rows), "layout": layout,
            "counts": {"status": dict(by_status), "reasons": dict(by_reason)}, "config": cfg.as_dict()}
    media.atomic_write(sidecar, (json.dumps(info, indent=2, ensure_ascii=False) + "\n").encode())
    return ExportResult(manifest, sidecar, len(rows), dict(by_status), layout_dir, layout_files)
