"""Everything the detail view shows about one item: geometry to draw on the photo, every score beside its
threshold, provenance from every source, the duplicate group and the decision history.

Duplicate columns belong to the dedup stage and may be absent from an older catalog; the group is then
simply not shown.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

from facecurate.catalog import Catalog
from facecurate.review.items import ItemKey, display_name
from facecurate.review.scoring import NAME_RE, ScoreInfo

_SOURCE_FIELDS = ("kind", "location", "page_url", "title", "engine", "query", "rank", "license", "author",
                  "retrieved_at", "label")
_MEASURES = ("det_score", "oob_fraction", "above_fraction", "side_fraction", "eye_angle", "crop_size")


def item_detail(catalog: Catalog, key: ItemKey, info: Callable[[str], ScoreInfo]) -> dict[str, Any] | None:
    if key.kind == "f":
        face = catalog.conn.execute("SELECT * FROM faces WHERE id=?", (key.id,)).fetchone()
        if face is None:
            return None
        image = catalog.conn.execute("SELECT * FROM images WHERE id=?", (face["image_id"],)).fetchone()
    else:
        face = None
        image = catalog.conn.execute("SELECT * FROM images WHERE id=?", (key.id,)).fetchone()
        if image is None:
            return None
    sources = [{k: s[k] for k in _SOURCE_FIELDS} for s in catalog.conn.execute(
        "SELECT * FROM sources WHERE image_id=? AND status='ok' ORDER BY id", (image["id"],))]
    out: dict[str, Any] = {
        "key": str(key), "image_id": image["id"], "sha256": image["sha256"], "width": image["width"],
        "height": image["height"], "label": image["label"], "crop_state": image["crop_state"],
        "name": display_name(sources[0]["location"]) if sources else "", "sources": sources,
        "status": "no_face" if face is None else face["status"],
        "reasons": ["no_face"] if face is None else json.loads(face["reasons"]),
        "scores": [], "measures": {}, "history": [], "duplicates": None, "decidable": face is not None,
        "review": {"decision": "none", "by": None, "at": None}, "face": None,
    }
    if face is not None:
        out["face"] = {k: json.loads(face[k]) for k in ("bbox", "landmarks", "quad")}
        out["measures"] = {k: face[k] for k in _MEASURES}
        out["scores"] = _scores(json.loads(face["scores"]), out["reasons"], info)
        pair = (face["image_id"], face["face_index"])
        out["review"] = catalog.review_latest([pair]).get(pair, out["review"])
        out["history"] = [dict(r) for r in catalog.review_history(*pair)]
    out["duplicates"] = duplicate_group(catalog, face, image)
    return out


def _scores(scores: dict[str, Any], reasons: list[str], lookup: Callable[[str], ScoreInfo]) -> list[dict[str, Any]]:
    rows = []
    for name, value in sorted(scores.items()):
        info = lookup(name) if NAME_RE.match(name) else None
        number = value if isinstance(value, int | float) and not isinstance(value, bool) else None
        rows.append({"name": name, "value": value, "threshold": info.threshold if info else None,
                     "worse": info.worse if info else None, "rule": info.rule if info else None,
                     "fails": (info.fails(number) if info else None) if number is not None else None,
                     "reason": name in reasons or (info is not None and info.rule in reasons)})
    return rows


def duplicate_group(catalog: Catalog, face: Any, image: Any) -> dict[str, Any] | None:
    """Keeper and members side by side with their distances: face-level groups first, then photo-level."""
    face_cols, image_cols = catalog.table_columns("faces"), catalog.table_columns("images")
    if face is not None and "dup_group" in face_cols and face["dup_group"] is not None:
        rows = catalog.conn.execute(
            f"SELECT 'f' || f.id AS key, 'f' || f.id AS thumb, f.status, {_dup_select(face_cols, 'f')} "
            "FROM faces f WHERE f.dup_group=? ORDER BY f.id", (face["dup_group"],)).fetchall()
        return _group("face", face["dup_group"], rows, f"f{face['id']}")
    if "dup_group" in image_cols and image["dup_group"] is not None:
        rows = catalog.conn.execute(
            "SELECT (SELECT 'f' || id FROM faces WHERE image_id=i.id ORDER BY face_index LIMIT 1) AS key, "
            f"'i' || i.id AS thumb, COALESCE(i.crop_state, 'pending') AS status, {_dup_select(image_cols, 'i')} "
            "FROM images i WHERE i.dup_group=? ORDER BY i.id", (image["dup_group"],)).fetchall()
        return _group("photo", image["dup_group"], rows, f"i{image['id']}")
    return None


def _dup_select(cols: frozenset[str], alias: str) -> str:
    picks = [f"{alias}.{c} AS {c}" if c in cols else f"NULL AS {c}"
             for c in ("dup_of", "dup_distance", "dup_transform")]
    return ", ".join(picks)


def _group(level: str, group: Any, rows: list[Any], current: str) -> dict[str, Any]:
    members = []
    for r in rows:
        keeper = r["dup_of"] is None and r["status"] != "duplicate"
        members.append({"key": r["key"], "thumb": r["thumb"], "status": r["status"], "keeper": keeper,
                        "dup_of": r["dup_of"], "distance": r["dup_distance"], "transform": r["dup_transform"],
                        "current": current in (r["key"], r["thumb"])})
    members.sort(key=lambda m: (not m["keeper"], m["distance"] if m["distance"] is not None else 1e9))
    return {"level": level, "group": group, "members": members}
