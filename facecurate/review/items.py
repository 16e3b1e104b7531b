"""Gallery items and the filtered, sorted lists the gallery pages through.

An item is one row of the catalog's ``item_state`` view: a face crop (key ``f<faces.id>``) or a photo without a
face row (key ``i<images.id>``: no face found, crop failed or not run yet), shown with its state in force.
The client first asks for the ordered keys of a filter (small: 10,000 keys are ~80 kB), then for the
details of the few it shows; selection, range select and "select all" work on keys without loading items.
Keys are parsed strictly and looked up in the catalog, so no client string ever becomes a path.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import PurePosixPath
from typing import Any, Literal
from urllib.parse import urlsplit

from facecurate.catalog import Catalog, Decision, State
from facecurate.catalog.gallery import NAME_RE, NO_VALUE, SORTS, GalleryFilter, GalleryItem

KEY_RE = re.compile(r"^([fi])([1-9][0-9]{0,17})$")
STATUSES = tuple(s.value for s in State)
DISAGREE = "disagree"  # the decision filter's "a person overrode the rules" value
DECISION_FILTERS = ("any", *(d.value for d in Decision), DISAGREE)
MAX_FILTER_VALUE = 500
CALIBRATE_SORT = "calibrate"  # the gallery's "most informative first" order (review --calibrate)
NO_REVIEW: dict[str, Any] = {"decision": Decision.NONE.value, "by": None, "at": None}

__all__ = ["CALIBRATE_SORT", "DECISION_FILTERS", "DISAGREE",
           "KEY_RE", "NO_VALUE", "STATUSES", "ItemKey", "Target", "display_name", "facets",
           "keys_for", "parse_filter", "resolve_targets", "summaries"]


@dataclass(frozen=True)
class ItemKey:
    kind: Literal["f", "i"]  # "f" a face crop | "i" a photo without a face row
    id: int

    @classmethod
    def parse(cls, text: str) -> ItemKey | None:
        m = KEY_RE.match(text or "")
        if m is None:
            return None
        return cls("f" if m.group(1) == "f" else "i", int(m.group(2)))

    def __str__(self) -> str:
        return f"{self.kind}{self.id}"


def parse_filter(args: dict[str, str], score_worse: dict[str, str]) -> GalleryFilter:
    """The gallery's query string as a filter; every field is checked here (ValueError names the bad one)."""
    def text(name: str) -> str:
        value = args.get(name, "")
        if len(value) > MAX_FILTER_VALUE:
            raise ValueError(f"{name} is too long")
        return value

    status = args.get("status", "any")
    decision = args.get("decision", "any")
    sort = args.get("sort", "reasons")
    if status not in ("any", *STATUSES):
        raise ValueError(f"unknown status {status!r}")
    if decision not in DECISION_FILTERS:
        raise ValueError(f"unknown decision filter {decision!r}")
    score = sort[6:] if sort.startswith("score:") and NAME_RE.match(sort[6:]) else None
    # "calibrate" lists the filter in catalog order; the server then puts the most informative faces first
    by = next((s for s in SORTS if s == sort), "score" if score is not None else
              "order" if sort == CALIBRATE_SORT else None)
    if by is None or (by == "score" and score is None):
        raise ValueError(f"unknown sort {sort!r}")
    return GalleryFilter(status=None if status == "any" else State(status), reason=text("reason"),
                         label=text("label"), query=text("query"),
                         decision=None if decision in ("any", DISAGREE) else Decision(decision), sort=by,
                         score=score, disagree=decision == DISAGREE,
                         worst_first=args.get("dir", "worst") != "best",
                         score_worse="low" if score is not None and score_worse.get(score) == "low" else "high")


def facets(catalog: Catalog) -> dict[str, Any]:
    """Counts per state in force, reason, label, query and decision: what the filter menus offer."""
    f = catalog.gallery_facets()
    return {"total": f.total, "statuses": f.states, "reasons": f.reasons, "labels": f.labels,
            "queries": f.queries, "decisions": f.decisions}


def display_name(location: str | None) -> str:
    """The last path or URL segment: what a person recognises a photo by."""
    if not location:
        return ""
    path = urlsplit(location).path if "://" in location else location
    return PurePosixPath(path.replace("\\", "/")).name or location


@dataclass(frozen=True)
class Target:
    """An item a decision names: a face, by the (image, face index) pair the log keeps across crop --redo."""

    key: str
    image_id: int
    face_index: int


def resolve_targets(catalog: Catalog, keys: list[str]) -> tuple[list[Target], list[str]]:
    """Face keys the catalog knows → targets; everything else (photos without a face, unknown keys) → skipped."""
    face_ids, skipped = [], []
    for text in dict.fromkeys(keys):
        key = ItemKey.parse(text)
        if key is not None and key.kind == "f":
            face_ids.append(key.id)
        else:
            skipped.append(text)
    found = catalog.face_pairs(face_ids)
    skipped += [f"f{i}" for i in face_ids if i not in found]
    return [Target(f"f{i}", *found[i]) for i in face_ids if i in found], skipped


def keys_for(catalog: Catalog, pairs: list[tuple[int, int]]) -> dict[tuple[int, int], str]:
    """(image_id, face_index) → the face key it has now (an undo names items by that pair)."""
    return {pair: f"f{face_id}" for pair, face_id in catalog.face_ids_of(pairs).items()}


def _summary(item: GalleryItem, review: dict[str, Any]) -> dict[str, Any]:
    return {"key": item.key, "status": item.state.value, "rule_status": item.rule_state.value,
            "reasons": item.reasons, "scores": item.scores, "det_score": item.det_score, "label": item.label,
            "name": display_name(item.location), "title": item.title, "query": item.query,
            "decidable": item.face_index >= 0, "review": review}


def summaries(catalog: Catalog, keys: list[str]) -> list[dict[str, Any]]:
    """What a grid cell shows, for the keys in view (unknown keys are left out)."""
    parsed = [k for k in (ItemKey.parse(t) for t in keys[:1000]) if k is not None]
    found = catalog.gallery_items([k.id for k in parsed if k.kind == "f"], [k.id for k in parsed if k.kind == "i"])
    pairs = [(it.image_id, it.face_index) for it in found.values() if it.face_index >= 0]
    decisions = catalog.review_latest(pairs)
    reasons = catalog.review_reasons(p for p in pairs if p in decisions)  # the gallery shows what was said
    for pair, review in decisions.items():
        review["reason"] = reasons.get(pair) if review["decision"] != Decision.NONE.value else None
    return [_summary(found[text], decisions.get((found[text].image_id, found[text].face_index), dict(NO_REVIEW)))
            for text in keys if text in found]
