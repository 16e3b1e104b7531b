"""Gallery items and the filtered, sorted lists the gallery pages through.

An item is a face crop (key ``f<faces.id>``) or a photo in which no face was found (key ``i<images.id>``).
The client first asks for the ordered keys of a filter (small: 10,000 keys are ~80 kB), then for the
details of the few it shows; selection, range select and "select all" work on keys without loading items.
Keys are parsed strictly and looked up in the catalog, so no client string ever becomes a path.
"""

from __future__ import annotations

import json
import re
from collections import Counter
from dataclasses import dataclass, field
from pathlib import PurePosixPath
from typing import Any
from urllib.parse import urlsplit

from facecurate.catalog import Catalog
from facecurate.review.scoring import NAME_RE, json_path

KEY_RE = re.compile(r"^([fi])([1-9][0-9]{0,17})$")
STATUSES = ("reject", "duplicate", "keep", "no_face")
DECISION_FILTERS = ("any", "none", "kept", "rejected")
NO_VALUE = "(none)"  # filter value for "no label" / "no reason" / "no query"
MAX_FILTER_VALUE = 500

# Faces, plus photos without a face (face_index -1: they never carry a decision), each with the decision in
# force: a correlated lookup on the review_log_item index (a join on a GROUP BY of the log took seconds once
# the log held 20,000 rows).
ITEMS_CTE = """
WITH items AS (
    SELECT 'f' || f.id AS key, f.id AS face_id, f.image_id, f.face_index, f.status, f.reasons, f.scores,
           f.det_score, i.label,
           (SELECT r.decision_after FROM review_log r WHERE r.image_id = f.image_id
            AND r.face_index = f.face_index ORDER BY r.id DESC LIMIT 1) AS decision
    FROM faces f JOIN images i ON i.id = f.image_id
    UNION ALL
    SELECT 'i' || i.id, NULL, i.id, -1, 'no_face', '["no_face"]', '{}', NULL, i.label, NULL
    FROM images i WHERE i.crop_state = 'no_face'
)
"""
_FROM = "FROM items it"
_FIRST_SOURCE = ("LEFT JOIN sources s ON s.id = (SELECT MIN(id) FROM sources WHERE image_id = i.id "
                 "AND status = 'ok')")


@dataclass(frozen=True)
class ItemKey:
    kind: str  # "f" a face crop | "i" a photo (shown when no face was found)
    id: int

    @classmethod
    def parse(cls, text: str) -> ItemKey | None:
        m = KEY_RE.match(text or "")
        return cls(m.group(1), int(m.group(2))) if m else None

    def __str__(self) -> str:
        return f"{self.kind}{self.id}"


@dataclass(frozen=True)
class Filter:
    """What the gallery shows: every field is checked here, so the SQL below only ever binds values."""

    status: str = "any"
    reason: str = ""
    label: str = ""
    query: str = ""
    decision: str = "any"
    sort: str = "reasons"       # reasons | det_score | order | score:<name>
    worst_first: bool = True
    score_worse: dict[str, str] = field(default_factory=dict)  # score name -> "high" | "low"

    @classmethod
    def from_args(cls, args: dict[str, str], score_worse: dict[str, str]) -> Filter:
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
        if sort not in ("reasons", "det_score", "order") and not (
                sort.startswith("score:") and NAME_RE.match(sort[6:])):
            raise ValueError(f"unknown sort {sort!r}")
        return cls(status=status, reason=text("reason"), label=text("label"), query=text("query"),
                   decision=decision, sort=sort, worst_first=args.get("dir", "worst") != "best",
                   score_worse=score_worse)

    def where(self) -> tuple[str, list[Any]]:
        clauses, params = ["1"], []
        if self.status != "any":
            clauses.append("it.status = ?")
            params.append(self.status)
        if self.reason == NO_VALUE:
            clauses.append("json_array_length(it.reasons) = 0")
        elif self.reason:
            clauses.append("EXISTS (SELECT 1 FROM json_each(it.reasons) WHERE value = ?)")
            params.append(self.reason)
        if self.label == NO_VALUE:
            clauses.append("(it.label IS NULL OR it.label = '')")
        elif self.label:
            clauses.append("it.label = ?")
            params.append(self.label)
        if self.query == NO_VALUE:
            clauses.append("NOT EXISTS (SELECT 1 FROM sources s WHERE s.image_id = it.image_id "
                           "AND s.query IS NOT NULL)")
        elif self.query:
            clauses.append("EXISTS (SELECT 1 FROM sources s WHERE s.image_id = it.image_id AND s.query = ?)")
            params.append(self.query)
        if self.decision == "none":
            clauses.append("(it.decision IS NULL OR it.decision = 'none')")
        elif self.decision != "any":
            clauses.append("it.decision = ?")
            params.append(self.decision)
        return " AND ".join(clauses), params

    def order(self) -> tuple[str, list[Any]]:
        """ORDER BY: worst first means most reasons, lowest detection score, or the bad end of a score."""
        tie = "it.image_id, it.face_index"
        if self.sort == "order":
            return (tie if self.worst_first else "it.image_id DESC, it.face_index DESC"), []
        if self.sort == "reasons":
            way = "DESC" if self.worst_first else "ASC"
            return f"json_array_length(it.reasons) {way}, {tie}", []
        if self.sort == "det_score":
            way = "ASC" if self.worst_first else "DESC"
            return f"it.det_score IS NULL, it.det_score {way}, {tie}", []
        name = self.sort[6:]
        high_first = (self.score_worse.get(name, "high") == "high") == self.worst_first
        way = "DESC" if high_first else "ASC"
        path = json_path(name)
        return f"json_extract(it.scores, ?) IS NULL, json_extract(it.scores, ?) {way}, {tie}", [path, path]


def query_keys(catalog: Catalog, flt: Filter) -> list[str]:
    where, params = flt.where()
    order, order_params = flt.order()
    sql = f"{ITEMS_CTE} SELECT it.key {_FROM} WHERE {where} ORDER BY {order}"
    return [r[0] for r in catalog.conn.execute(sql, [*params, *order_params])]


def total_items(catalog: Catalog) -> int:
    return int(catalog.conn.execute("SELECT (SELECT COUNT(*) FROM faces) + "
                                    "(SELECT COUNT(*) FROM images WHERE crop_state = 'no_face')").fetchone()[0])


def facets(catalog: Catalog) -> dict[str, Any]:
    """Counts per status, reason, label, query and decision: what the filter menus offer."""
    def pairs(sql: str) -> dict[str, int]:
        return {str(r[0]): int(r[1]) for r in catalog.conn.execute(ITEMS_CTE + sql)}

    statuses: Counter[str] = Counter()
    labels: Counter[str] = Counter()
    decisions: Counter[str] = Counter()
    for status, label, decision, n in catalog.conn.execute(  # one pass for the three small facets
            f"{ITEMS_CTE} SELECT it.status, COALESCE(NULLIF(it.label, ''), '{NO_VALUE}'), "
            f"COALESCE(it.decision, 'none'), COUNT(*) {_FROM} GROUP BY 1, 2, 3"):
        statuses[status] += n
        labels[label] += n
        decisions[decision] += n
    return {
        "total": sum(statuses.values()),
        "statuses": dict(statuses.most_common()),
        "reasons": pairs("SELECT j.value, COUNT(*) FROM items it, json_each(it.reasons) j "
                         "GROUP BY j.value ORDER BY COUNT(*) DESC, j.value"),
        "labels": dict(sorted(labels.items())),
        "queries": pairs("SELECT s.query, COUNT(DISTINCT it.key) FROM items it JOIN sources s "
                         "ON s.image_id = it.image_id WHERE s.query IS NOT NULL GROUP BY s.query ORDER BY s.query"),
        "decisions": dict(decisions),
    }


def display_name(location: str | None) -> str:
    """The last path or URL segment: what a person recognises a photo by."""
    if not location:
        return ""
    path = urlsplit(location).path if "://" in location else location
    return PurePosixPath(path.replace("\\", "/")).name or location


@dataclass(frozen=True)
class Target:
    """What a decision needs to know about an item."""

    key: str
    image_id: int
    face_index: int
    rule_status: str


def resolve_targets(catalog: Catalog, keys: list[str]) -> tuple[list[Target], list[str]]:
    """Face keys the catalog knows → targets; everything else (photos without a face, unknown keys) → skipped."""
    face_ids, skipped = [], []
    for text in dict.fromkeys(keys):
        key = ItemKey.parse(text)
        if key is not None and key.kind == "f":
            face_ids.append(key.id)
        else:
            skipped.append(text)
    found: dict[int, Target] = {}
    for start in range(0, len(face_ids), 500):
        chunk = face_ids[start:start + 500]
        for r in catalog.conn.execute(f"SELECT id, image_id, face_index, status FROM faces WHERE id IN "
                                      f"({','.join('?' * len(chunk))})", chunk):
            found[r["id"]] = Target(f"f{r['id']}", r["image_id"], r["face_index"], r["status"])
    skipped += [f"f{i}" for i in face_ids if i not in found]
    return [found[i] for i in face_ids if i in found], skipped


def keys_for(catalog: Catalog, pairs: list[tuple[int, int]]) -> dict[tuple[int, int], str]:
    """(image_id, face_index) → the face key it has now (an undo names items by that pair)."""
    wanted, images = set(pairs), sorted({p[0] for p in pairs})
    out = {}
    for start in range(0, len(images), 500):  # a bulk undo names thousands of items
        chunk = images[start:start + 500]
        for r in catalog.conn.execute(f"SELECT id, image_id, face_index FROM faces WHERE image_id IN "
                                      f"({','.join('?' * len(chunk))})", chunk):
            if (r["image_id"], r["face_index"]) in wanted:
                out[(r["image_id"], r["face_index"])] = f"f{r['id']}"
    return out


def summaries(catalog: Catalog, keys: list[str]) -> list[dict[str, Any]]:
    """What a grid cell shows, for the keys in view (unknown keys are left out)."""
    parsed = [k for k in (ItemKey.parse(t) for t in keys[:1000]) if k is not None]
    rows: dict[str, Any] = {}
    for kind, sql in (("f", "SELECT 'f' || f.id AS key, f.image_id, f.face_index, f.status, f.reasons, f.scores, "
                            "f.det_score, i.label, s.kind, s.location, s.title, s.query FROM faces f "
                            f"JOIN images i ON i.id = f.image_id {_FIRST_SOURCE} WHERE f.id IN ({{ids}})"),
                      ("i", "SELECT 'i' || i.id AS key, i.id AS image_id, -1 AS face_index, "
                            "COALESCE(i.crop_state, 'pending') AS status, '[]' AS reasons, '{{}}' AS scores, "
                            "NULL AS det_score, i.label, s.kind, s.location, s.title, s.query FROM images i "
                            f"{_FIRST_SOURCE} WHERE i.id IN ({{ids}})")):
        ids = [k.id for k in parsed if k.kind == kind]
        if ids:
            for r in catalog.conn.execute(sql.format(ids=",".join("?" * len(ids))), ids):
                rows[r["key"]] = r
    decisions = catalog.review_latest([(r["image_id"], r["face_index"]) for r in rows.values()
                                       if r["face_index"] >= 0])
    out = []
    for text in keys:
        r = rows.get(text)
        if r is None:
            continue
        reasons = json.loads(r["reasons"])
        if r["status"] == "no_face":
            reasons = ["no_face"]
        out.append({"key": text, "status": r["status"], "reasons": reasons, "scores": json.loads(r["scores"]),
                    "det_score": r["det_score"], "label": r["label"], "name": display_name(r["location"]),
                    "title": r["title"], "query": r["query"], "decidable": r["face_index"] >= 0,
                    "review": decisions.get((r["image_id"], r["face_index"]),
                                            {"decision": "none", "by": None, "at": None})})
    return out
