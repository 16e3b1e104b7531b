"""Everything the detail view shows about one item: geometry to draw on the photo, every score beside its
threshold, provenance from every source, the duplicate group and the decision history.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict
from typing import Any

from facecurate.catalog import Catalog, State
from facecurate.catalog.gallery import DupMember
from facecurate.review.items import NO_REVIEW, ItemKey, display_name
from facecurate.review.scoring import NAME_RE, ScoreInfo

_SOURCE_FIELDS = ("kind", "location", "page_url", "title", "engine", "query", "rank", "license", "author",
                  "retrieved_at", "label")
_MEASURES = ("det_score", "oob_fraction", "above_fraction", "side_fraction", "eye_angle", "crop_size")


def item_detail(catalog: Catalog, key: ItemKey, info: Callable[[str], ScoreInfo]) -> dict[str, Any] | None:
    """The detail of one gallery item, or None when the key names no item (a photo that has faces is shown
    through them, not as an item of its own)."""
    item = catalog.gallery_items([key.id] if key.kind == "f" else [], [key.id] if key.kind == "i" else []).get(
        str(key))
    face = catalog.face_row(key.id) if key.kind == "f" else None
    image = None if item is None else catalog.image_row(item.image_id)
    if item is None or image is None or (key.kind == "f" and face is None):
        return None
    pair = (item.image_id, item.face_index)
    sources = [{k: getattr(s, k) for k in _SOURCE_FIELDS} for s in catalog.sources_of(image.id)]
    out: dict[str, Any] = {
        "key": str(key), "image_id": image.id, "sha256": image.sha256, "width": image.width,
        "height": image.height, "label": image.label, "crop_state": image.crop_state,
        "name": display_name(sources[0]["location"]) if sources else "", "sources": sources,
        "status": item.state.value, "rule_status": item.rule_state.value, "reasons": item.reasons,
        "scores": [], "measures": {}, "history": [], "duplicates": None, "decidable": face is not None,
        "review": dict(NO_REVIEW), "face": None,
    }
    if face is not None:
        out["face"] = {"bbox": face.bbox, "landmarks": face.landmarks, "quad": face.quad}
        out["measures"] = {k: getattr(face, k) for k in _MEASURES}
        out["scores"] = _scores(face.scores, face.reasons, info)
        out["review"] = catalog.review_latest([pair]).get(pair, out["review"])
        out["history"] = [{k: v for k, v in asdict(r).items() if k not in ("image_id", "face_index")}
                          for r in catalog.review_history(*pair)]
    out["duplicates"] = duplicate_group(catalog, key, face.dup_group if face is not None else None,
                                        catalog.image_dup_group(image.id), image.id)
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


def duplicate_group(catalog: Catalog, key: ItemKey, face_group: int | None, photo_group: int | None,
                    image_id: int) -> dict[str, Any] | None:
    """Keeper and members side by side with their distances: face-level groups first, then photo-level."""
    if face_group is not None:
        return _group("face", face_group, catalog.face_dup_members(face_group), str(key))
    if photo_group is not None:
        return _group("photo", photo_group, catalog.photo_dup_members(photo_group), f"i{image_id}")
    return None


def _group(level: str, group: int, rows: list[DupMember], current: str) -> dict[str, Any]:
    members = []
    for r in rows:
        # A face of a duplicate photo is a copy even where no face points it elsewhere.
        keeper = r.dup_of is None and (level == "photo" or r.rule_state != State.DUPLICATE)
        members.append({"key": r.key, "thumb": r.thumb, "status": None if r.state is None else r.state.value,
                        "keeper": keeper, "dup_of": r.dup_of, "distance": r.dup_distance,
                        "transform": r.dup_transform, "current": current in (r.key, r.thumb)})
    members.sort(key=lambda m: (not m["keeper"], m["distance"] if m["distance"] is not None else 1e9))
    return {"level": level, "group": group, "members": members}
