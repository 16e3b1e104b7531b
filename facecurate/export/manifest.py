"""The manifest: one row for every face and for every photo or source that produced no face, whatever its state.

A person audits each decision from it, so nothing is left out; stages that have not run leave their fields
present and empty, so the columns never change shape. The state is the catalog's state in force
(:mod:`facecurate.catalog.state`): the same one ``status``, ``run`` and the gallery report.

The train/val split is keyed on a photo's *duplicate family* (its photo-level group and every face-level group
that touches it), so a photo, its mirrored or recompressed copies and re-posts of its face always land on one
side: a copy in val of a training photo would make validation figures lie. It is *stratified by label*: each
label's families are split on their own, counted in the faces a layout carries, so every label (a StarGAN v2 or
CycleGAN domain) gets its share of validation faces, and at least ``min_val`` of them while one stays in train.
"""

from __future__ import annotations

import csv
import hashlib
import json
import os
from collections import Counter
from collections.abc import Callable, Iterable
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from facecurate import __version__, media
from facecurate.catalog import Catalog, FaceRow, ImageFacts, SourceRow, State
from facecurate.workspace import Workspace

FIELDS: tuple[str, ...] = (
    "sample_id", "file_name", "label", "split", "status", "reasons", "scores", "review",
    "source_sha256", "source_path", "source_url", "page_url", "title", "engine", "query", "rank",
    "license", "author", "retrieved_at", "source_width", "source_height", "dup_group", "dup_of",
    "dup_distance", "face_index", "det_score", "bbox", "landmarks", "quad", "oob_fraction",
    "above_fraction", "crop_size",
)
JSON_FIELDS = frozenset({"reasons", "scores", "review", "bbox", "landmarks", "quad"})
FORMATS = ("jsonl", "csv", "parquet")
NO_REVIEW = {"decision": "none", "by": None, "at": None}

Row = dict[str, Any]


def _rank(key: str, seed: int) -> float:
    """Where a duplicate family falls in [0, 1) for this seed: the split's only source of randomness."""
    return int.from_bytes(hashlib.sha256(f"{seed}:{key}".encode()).digest()[:8], "big") / 2**64


def split_of(key: str, seed: int, val_fraction: float) -> str:
    """Deterministic split of one duplicate family that holds no face a layout carries (see
    :func:`assign_splits`): all its rows on one side."""
    if val_fraction <= 0:
        return "train"
    return "val" if _rank(key, seed) < val_fraction else "train"


def assign_splits(families: dict[str, list[Row]], carried: Callable[[Row], bool], seed: int, val_fraction: float,
                  min_val: int) -> None:
    """Set ``split`` on every row, one side per duplicate family, stratified by label.

    A family holding faces a layout carries (``carried``) belongs to the label most of them have; each label's
    families, in seeded order, go to val until the label's val faces reach ``round(val_fraction * n)``, or
    ``min_val`` if more, as long as one of its n faces stays in train (a label with one face has no val). A
    family carrying nothing is split by its seeded rank alone, as before stratification: it reaches no layout."""
    per_label: dict[str, list[tuple[float, str, int]]] = {}
    for key, rows in families.items():
        counts = Counter(r["label"] or "" for r in rows if carried(r))
        if not counts:
            side = split_of(key, seed, val_fraction)
            for r in rows:
                r["split"] = side
            continue
        label = min(counts, key=lambda lab: (-counts[lab], lab))
        per_label.setdefault(label, []).append((_rank(key, seed), key, sum(counts.values())))
    for fams in per_label.values():
        n = sum(size for _, _, size in fams)
        target = min(max(round(val_fraction * n), min_val), n - 1)
        val = 0
        for _, key, size in sorted(fams):
            side = "val" if val < target and val + size <= n - 1 else "train"
            val += size if side == "val" else 0
            for r in families[key]:
                r["split"] = side


def split_keys(images: Iterable[ImageFacts], faces: Iterable[FaceRow]) -> dict[int, str]:
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
    for img in images:
        sha[img.id] = img.sha256
        if img.dup_group is not None:
            join(img.id, img.dup_group)
    for f in faces:
        if f.dup_group is not None:
            join(f.image_id, f.dup_group)
    smallest: dict[int, str] = {}
    for image_id, digest in sha.items():
        r = root(image_id)
        smallest[r] = min(smallest.get(r, digest), digest)
    return {image_id: smallest[root(image_id)] for image_id in sha}


def face_sample_id(sha256: str, face_index: int) -> str:
    return f"{sha256[:16]}_{face_index}"


def _empty_row() -> Row:
    row: Row = dict.fromkeys(FIELDS)
    row.update(reasons=[], scores={}, review=dict(NO_REVIEW))
    return row


def _source_fields(src: SourceRow | None) -> Row:
    if src is None:
        return {}
    is_url = src.kind == "url"
    return {"source_path": None if is_url else src.location, "source_url": src.location if is_url else None,
            "page_url": src.page_url, "title": src.title, "engine": src.engine, "query": src.query,
            "rank": src.rank, "license": src.license, "author": src.author, "retrieved_at": src.retrieved_at}


def manifest_rows(ws: Workspace, catalog: Catalog, out_dir: Path, seed: int = 0, val_fraction: float = 0.0,
                  min_val: int = 0, carried: Callable[[Row], bool] | None = None) -> list[Row]:
    """Every face, every image without a face, and every failed source, as manifest rows, split by
    :func:`assign_splits` (``carried``: the rows the layout takes; default, every kept face with a crop)."""
    first_source = catalog.first_sources()
    reviews = catalog.review_latest()
    states = catalog.item_states()
    images = list(catalog.images())
    faces: dict[int, list[FaceRow]] = {}
    for f in catalog.faces():
        faces.setdefault(f.image_id, []).append(f)
    keys = split_keys(images, (f for fs in faces.values() for f in fs))
    own_faces = {img.id: faces.get(img.id, []) if img.crop_state == "done" else [] for img in images}
    face_samples = {f.id: face_sample_id(img.sha256, f.face_index) for img in images for f in own_faces[img.id]}
    # A duplicate points at its keeper's row: a face at the kept face, a photo at the kept photo's first row.
    photo_samples = {img.id: face_sample_id(img.sha256, own_faces[img.id][0].face_index) if own_faces[img.id]
                     else img.sha256[:16] for img in images}
    by_id = {img.id: img for img in images}
    rows: list[Row] = []
    families: dict[str, list[Row]] = {}
    for img in images:
        base = _empty_row()
        base.update(label=img.label, source_sha256=img.sha256, source_width=img.width, source_height=img.height,
                    **_source_fields(first_source.get(img.id)))
        for f in own_faces[img.id]:
            row = dict(base)
            if f.dup_of is not None:
                dup = {"dup_group": f.dup_group, "dup_of": face_samples.get(f.dup_of), "dup_distance": f.dup_distance}
            elif f.dup_kind is not None and f.dup_group is not None:
                dup = {"dup_group": f.dup_group, "dup_of": photo_samples.get(f.dup_group),
                       "dup_distance": f.dup_distance}
            elif img.dup_of is not None:  # a copy's face that dedup's face pass has not seen yet
                dup = {"dup_group": img.dup_group, "dup_of": photo_samples.get(img.dup_of), "dup_distance": None}
            else:
                dup = {"dup_group": f.dup_group, "dup_of": None, "dup_distance": f.dup_distance}
            families.setdefault(keys[img.id], []).append(row)
            row.update(sample_id=face_samples[f.id], file_name=os.path.relpath(ws.resolve(f.crop_path), out_dir),
                       review=reviews.get((img.id, f.face_index), dict(NO_REVIEW)),
                       status=states[(img.id, f.face_index)].state.value, reasons=f.reasons, scores=f.scores,
                       face_index=f.face_index, det_score=f.det_score, bbox=f.bbox, landmarks=f.landmarks,
                       quad=f.quad, oob_fraction=f.oob_fraction, above_fraction=f.above_fraction,
                       crop_size=f.crop_size, **dup)
            row["dup_distance"] = float(row["dup_distance"]) if row["dup_distance"] is not None else None
            rows.append(row)
        if not own_faces[img.id]:
            state = states[(img.id, -1)].state if (img.id, -1) in states else State.PENDING
            keeper = by_id.get(img.dup_of) if img.dup_of is not None else None
            base.update(sample_id=img.sha256[:16], status=state.value,
                        reasons={"no_face": ["no_face"], "failed": ["crop_failed"]}.get(img.crop_state or "", []),
                        dup_group=img.dup_group, dup_of=photo_samples.get(keeper.id) if keeper else None,
                        dup_distance=float(img.dup_distance) if img.dup_distance is not None else None)
            families.setdefault(keys[img.id], []).append(base)
            rows.append(base)
    for src in catalog.failed_sources():
        row = _empty_row()
        row.update(sample_id=f"failed_{src.id}", label=src.label, status=State.FAILED.value,
                   reasons=[src.error or "failed"], split=None, **_source_fields(src))
        rows.append(row)
    assign_splits(families, carried or is_carried, seed, val_fraction, min_val)
    return rows


def is_carried(row: Row) -> bool:
    """A row a dataset layout takes: a kept face with its crop file."""
    return bool(row["status"] == State.KEEP.value and row["file_name"])


def _write_jsonl(rows: list[Row], path: Path) -> None:
    data = "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows).encode()
    media.atomic_write(path, data)


def _write_csv(rows: list[Row], path: Path) -> None:
    tmp = path.with_name(f"{media.PART_PREFIX}{os.getpid()}-{path.name}")
    with tmp.open("w", newline="", encoding="utf-8") as fh:
        writer = csv.DictWriter(fh, fieldnames=FIELDS)
        writer.writeheader()
        for r in rows:
            writer.writerow({k: json.dumps(v) if k in JSON_FIELDS else v for k, v in r.items()})
    os.replace(tmp, path)


INT_FIELDS = ("rank", "source_width", "source_height", "dup_group", "face_index", "crop_size")


def score_names(rows: Iterable[Row]) -> list[str]:
    """The ``scores`` struct's fields: every rule's measure (so the schema is the same before filter has run),
    then any other measure the rows hold, sorted."""
    from facecurate.rules.registry import RULES

    base = list(dict.fromkeys(rule.measure for rule in RULES))
    return base + sorted({k for r in rows for k in r["scores"]} - set(base))


def timestamp(text: str | None) -> datetime | None:
    """An ISO time the catalog stored, as an aware datetime (a naive one is UTC, as utc_now writes them)."""
    if not text:
        return None
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        return None
    return moment if moment.tzinfo else moment.replace(tzinfo=timezone.utc)


def arrow_table(rows: list[Row]) -> Any:
    """The manifest as a pyarrow Table with a fixed, typed schema (whatever rows are empty), for Parquet and
    notebooks: integers stay integers where a value is missing, times are timestamps, ``scores`` and ``review``
    are structs. The schema carries pandas metadata naming the nullable ``Int64`` dtype for the integer columns,
    so ``pd.read_parquet`` does not turn them into float64 when one is missing."""
    import pyarrow as pa

    f64, i64, s = pa.float64(), pa.int64(), pa.string()
    utc = pa.timestamp("us", tz="UTC")
    names = score_names(rows)
    types: dict[str, Any] = {k: s for k in FIELDS}
    types.update(reasons=pa.list_(s), bbox=pa.list_(f64), landmarks=pa.list_(pa.list_(f64)),
                 quad=pa.list_(pa.list_(f64)), dup_distance=f64, det_score=f64, oob_fraction=f64, above_fraction=f64,
                 retrieved_at=utc, scores=pa.struct([(n, f64) for n in names]),
                 review=pa.struct([("decision", s), ("by", s), ("at", utc)]))
    types.update(dict.fromkeys(INT_FIELDS, i64))
    pandas_meta = {"index_columns": [], "column_indexes": [], "pandas_version": "2.0.0",
                   "creator": {"library": "facecurate", "version": __version__},
                   "columns": [{"name": k, "field_name": k, "pandas_type": "int64", "numpy_type": "Int64",
                                "metadata": None} for k in INT_FIELDS]}
    schema = pa.schema([(k, types[k]) for k in FIELDS], metadata={"pandas": json.dumps(pandas_meta)})

    def typed(r: Row) -> Row:
        scores = {n: _number(r["scores"].get(n)) for n in names}
        review = {**r["review"], "at": timestamp(r["review"].get("at"))}
        return {**r, "scores": scores, "review": review, "retrieved_at": timestamp(r["retrieved_at"])}

    return pa.Table.from_pylist([typed(r) for r in rows], schema=schema)


def _number(value: Any) -> float | None:
    return float(value) if isinstance(value, (int, float)) else None


def _write_parquet(rows: list[Row], path: Path) -> None:
    import pyarrow.parquet as pq

    tmp = path.with_name(f"{media.PART_PREFIX}{os.getpid()}-{path.name}")
    pq.write_table(arrow_table(rows), tmp)
    os.replace(tmp, path)


WRITERS: dict[str, Callable[[list[Row], Path], None]] = {
    "jsonl": _write_jsonl, "csv": _write_csv, "parquet": _write_parquet}
