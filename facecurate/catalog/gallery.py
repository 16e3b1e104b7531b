"""The review gallery's reads: its items, their filters and counts, one item's details and duplicate group.

A gallery item is one row of the ``item_state`` view: a face (key ``f<faces.id>``) or a photo that has no face
row (key ``i<images.id>``: no face found, crop failed or not run yet). Its state, the rules' state and the
decision all come from that view, so the gallery counts exactly what ``status`` and ``export`` count.
Filters arrive as a :class:`GalleryFilter` whose fields were checked by the caller; the SQL below is built
from fixed fragments and binds every value.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any, Literal

from facecurate.catalog.base import CatalogBase, placeholders
from facecurate.catalog.faces import FaceRow
from facecurate.catalog.images import IMAGE_COLUMNS, ImageRow, SourceRow
from facecurate.catalog.items import ItemState
from facecurate.catalog.state import Decision, State

NAME_RE = re.compile(r"^[A-Za-z0-9_.:-]{1,64}$")  # score names accepted from a client: safe inside a JSON path
NO_VALUE = "(none)"  # filter value for "no label" / "no reason" / "no query"
Sort = Literal["reasons", "det_score", "order", "score"]
SORTS: tuple[Sort, ...] = ("reasons", "det_score", "order", "score")

# One row per item_state row, with what the grid filters and sorts on (the view carries it: no second join).
# A photo row's reason is its crop outcome (no_face, failed), so "reason: no_face" finds the photos in which no
# face was found.
_ITEMS_CTE = """
WITH items AS (
    SELECT CASE WHEN st.face_id IS NULL THEN 'i' || st.image_id ELSE 'f' || st.face_id END AS key,
           st.face_id, st.image_id, st.face_index, st.state, st.rule_state, st.decision,
           CASE WHEN st.face_id IS NOT NULL THEN st.reasons
                WHEN st.rule_state IN ('no_face', 'failed') THEN json_array(st.rule_state)
                ELSE '[]' END AS reasons,
           st.scores, st.det_score, st.label
    FROM item_state st
)
"""
_FIRST_SOURCE = ("LEFT JOIN sources s ON s.id = (SELECT MIN(id) FROM sources WHERE image_id = it.image_id "
                 "AND status = 'ok')")
_CHUNK = 500  # ids bound per statement (SQLite's default limit is far above, the plans are not)
_WHOLE = 2_000  # more photos than this: one pass over the view beats a pass over the photos per chunk


def json_path(name: str) -> str:
    """SQLite JSON path of one score; a name that passed NAME_RE cannot break the quoting."""
    if not NAME_RE.match(name):
        raise ValueError(f"not a score name: {name!r}")
    return f'$."{name}"'


def _reasons_of(text: str) -> list[str]:
    return list(json.loads(text))


@dataclass(frozen=True)
class GalleryFilter:
    """What the gallery shows, in what order. ``None`` for status or decision: any."""

    status: State | None
    reason: str                # "" any, NO_VALUE none
    label: str
    query: str
    decision: Decision | None
    sort: Sort
    score: str | None          # the score sorted on when sort == "score" (a NAME_RE name)
    worst_first: bool
    score_worse: Literal["high", "low"]  # the bad end of that score
    disagree: bool = False     # only faces a person decided against the rules (kept a reject, rejected a keep)


@dataclass(frozen=True)
class GalleryKeys:
    """The keys a filter lets through, in its order, and how many items there are in all."""

    keys: list[str]
    total: int


@dataclass(frozen=True)
class GalleryItem:
    """What a grid cell shows (the first source's provenance included)."""

    key: str
    image_id: int
    face_index: int            # -1: a photo row (never decided)
    state: State
    rule_state: State
    decision: Decision
    reasons: list[str]
    scores: dict[str, Any]
    det_score: float | None
    label: str | None
    location: str | None
    title: str | None
    query: str | None


@dataclass(frozen=True)
class GalleryFacets:
    """Counts per state, reason, label, query and decision: what the filter menus offer."""

    total: int
    states: dict[str, int]
    reasons: dict[str, int]
    labels: dict[str, int]
    queries: dict[str, int]
    decisions: dict[str, int]


@dataclass(frozen=True)
class DupMember:
    """One member of a duplicate group as the detail view lists it."""

    key: str                   # the gallery item it opens (a photo's first face, or the photo itself)
    thumb: str                 # the item key its thumbnail is drawn from
    state: State | None        # state in force (of the photo's first item for photo groups)
    rule_state: State | None
    dup_of: int | None
    dup_distance: float | None
    dup_transform: str | None


@dataclass(frozen=True)
class RuledItem:
    """An item as the static reports list it: its file, the rules' state and first provenance."""

    key: str
    image_id: int
    face_index: int
    rule_state: State
    reasons: list[str]
    scores: dict[str, Any]
    file: str                  # workspace-relative: the crop, or the photo for a photo row
    kind: Literal["crop", "photo"]
    location: str | None
    title: str | None
    query: str | None


def _where(flt: GalleryFilter) -> tuple[str, list[Any]]:
    clauses, params = ["1"], []
    if flt.status is not None:
        clauses.append("it.state = ?")
        params.append(flt.status.value)
    if flt.reason == NO_VALUE:
        clauses.append("json_array_length(it.reasons) = 0")
    elif flt.reason:
        clauses.append("EXISTS (SELECT 1 FROM json_each(it.reasons) WHERE value = ?)")
        params.append(flt.reason)
    if flt.label == NO_VALUE:
        clauses.append("(it.label IS NULL OR it.label = '')")
    elif flt.label:
        clauses.append("it.label = ?")
        params.append(flt.label)
    if flt.query == NO_VALUE:
        clauses.append("NOT EXISTS (SELECT 1 FROM sources s WHERE s.image_id = it.image_id AND s.query IS NOT NULL)")
    elif flt.query:
        clauses.append("EXISTS (SELECT 1 FROM sources s WHERE s.image_id = it.image_id AND s.query = ?)")
        params.append(flt.query)
    if flt.decision is not None:
        clauses.append("it.decision = ?")
        params.append(flt.decision.value)
    if flt.disagree:
        clauses.append("((it.decision = 'kept' AND it.rule_state = 'reject') OR "
                       "(it.decision = 'rejected' AND it.rule_state = 'keep'))")
    return " AND ".join(clauses), params


def _order(flt: GalleryFilter) -> tuple[str, list[Any]]:
    """ORDER BY: worst first means most reasons, lowest detection score, or the bad end of a score."""
    tie = "it.image_id, it.face_index"
    if flt.sort == "order":
        return (tie if flt.worst_first else "it.image_id DESC, it.face_index DESC"), []
    if flt.sort == "reasons":
        return f"json_array_length(it.reasons) {'DESC' if flt.worst_first else 'ASC'}, {tie}", []
    if flt.sort == "det_score":
        return f"it.det_score IS NULL, it.det_score {'ASC' if flt.worst_first else 'DESC'}, {tie}", []
    if flt.score is None:
        raise ValueError("a score sort needs a score name")
    path = json_path(flt.score)
    way = "DESC" if (flt.score_worse == "high") == flt.worst_first else "ASC"
    return f"json_extract(it.scores, ?) IS NULL, json_extract(it.scores, ?) {way}, {tie}", [path, path]


def _state(value: str | None) -> State | None:
    return None if value is None else State(value)


class GalleryMixin(CatalogBase):
    def gallery_keys(self, flt: GalleryFilter) -> GalleryKeys:
        """The keys of every item the filter lets through, in its order, counted in the same pass as the
        total (a separate count would compute every item's state again)."""
        where, params = _where(flt)
        order, order_params = _order(flt)
        rows = self.conn.execute(f"{_ITEMS_CTE} SELECT it.key, {where} FROM items it ORDER BY {order}",
                                 [*params, *order_params]).fetchall()
        return GalleryKeys([r[0] for r in rows if r[1]], len(rows))

    def gallery_total(self) -> int:
        return self._scalar("SELECT COUNT(*) FROM item_state")

    def gallery_facets(self) -> GalleryFacets:
        states: dict[str, int] = {}
        labels: dict[str, int] = {}
        decisions: dict[str, int] = {}
        for state, label, decision, n in self.conn.execute(  # one pass for the three small facets
                f"{_ITEMS_CTE} SELECT it.state, COALESCE(NULLIF(it.label, ''), ?), it.decision, COUNT(*) "
                "FROM items it GROUP BY 1, 2, 3", (NO_VALUE,)):
            states[state] = states.get(state, 0) + n
            labels[label] = labels.get(label, 0) + n
            decisions[decision] = decisions.get(decision, 0) + n
        reasons = {str(r[0]): int(r[1]) for r in self.conn.execute(
            f"{_ITEMS_CTE} SELECT j.value, COUNT(*) FROM items it, json_each(it.reasons) j "
            "GROUP BY j.value ORDER BY COUNT(*) DESC, j.value")}
        queries = {str(r[0]): int(r[1]) for r in self.conn.execute(
            f"{_ITEMS_CTE} SELECT s.query, COUNT(DISTINCT it.key) FROM items it JOIN sources s "
            "ON s.image_id = it.image_id WHERE s.query IS NOT NULL GROUP BY s.query ORDER BY s.query")}
        return GalleryFacets(total=sum(states.values()),
                             states=dict(sorted(states.items(), key=lambda kv: (-kv[1], kv[0]))),
                             reasons=reasons, labels=dict(sorted(labels.items())), queries=queries,
                             decisions=decisions)

    def gallery_items(self, face_ids: list[int], image_ids: list[int]) -> dict[str, GalleryItem]:
        """The items of some faces and of some photos without a face row, by key (unknown ids left out)."""
        out: dict[str, GalleryItem] = {}
        for column, ids in (("it.face_id", face_ids), ("it.face_id IS NULL AND it.image_id", image_ids)):
            for start in range(0, len(ids), _CHUNK):
                chunk = ids[start:start + _CHUNK]
                for r in self.conn.execute(
                        f"{_ITEMS_CTE} SELECT it.*, s.location, s.title, s.query FROM items it {_FIRST_SOURCE} "
                        f"WHERE {column} IN ({placeholders(len(chunk))})", chunk):
                    out[r["key"]] = GalleryItem(
                        key=r["key"], image_id=r["image_id"], face_index=r["face_index"], state=State(r["state"]),
                        rule_state=State(r["rule_state"]), decision=Decision(r["decision"]),
                        reasons=_reasons_of(r["reasons"]), scores=json.loads(r["scores"]), det_score=r["det_score"],
                        label=r["label"], location=r["location"], title=r["title"], query=r["query"])
        return out

    def item_states_of(self, image_ids: Iterable[int]) -> dict[tuple[int, int], ItemState]:
        """(image_id, face_index) → state in force, for every item of some photos."""
        ids = sorted(set(image_ids))
        out: dict[tuple[int, int], ItemState] = {}
        if len(ids) > _WHOLE:
            wanted = set(ids)
            for r in self.conn.execute("SELECT image_id, face_index, rule_state, decision, state FROM item_state"):
                if r[0] in wanted:
                    out[(r[0], r[1])] = ItemState(r[0], r[1], State(r[2]), Decision(r[3]), State(r[4]))
            return out
        for start in range(0, len(ids), _CHUNK):
            chunk = ids[start:start + _CHUNK]
            for r in self.conn.execute(
                    "SELECT image_id, face_index, rule_state, decision, state FROM item_state "
                    f"WHERE image_id IN ({placeholders(len(chunk))})", chunk):
                out[(r[0], r[1])] = ItemState(r[0], r[1], State(r[2]), Decision(r[3]), State(r[4]))
        return out

    def face_pairs(self, face_ids: list[int]) -> dict[int, tuple[int, int]]:
        """face id → (image_id, face_index), the item a decision names; unknown ids left out."""
        out: dict[int, tuple[int, int]] = {}
        for start in range(0, len(face_ids), _CHUNK):
            chunk = face_ids[start:start + _CHUNK]
            for r in self.conn.execute(
                    f"SELECT id, image_id, face_index FROM faces WHERE id IN ({placeholders(len(chunk))})", chunk):
                out[int(r[0])] = (int(r[1]), int(r[2]))
        return out

    def face_ids_of(self, pairs: Iterable[tuple[int, int]]) -> dict[tuple[int, int], int]:
        """(image_id, face_index) → the id of the face row that item has now (crop --redo renumbers them)."""
        wanted = set(pairs)
        images = sorted({p[0] for p in wanted})
        out: dict[tuple[int, int], int] = {}
        for start in range(0, len(images), _CHUNK):
            chunk = images[start:start + _CHUNK]
            for r in self.conn.execute(
                    f"SELECT id, image_id, face_index FROM faces WHERE image_id IN ({placeholders(len(chunk))})",
                    chunk):
                if (r[1], r[2]) in wanted:
                    out[(r[1], r[2])] = int(r[0])
        return out

    def face_row(self, face_id: int) -> FaceRow | None:
        row = self.conn.execute("SELECT * FROM faces WHERE id=?", (face_id,)).fetchone()
        return None if row is None else FaceRow.from_row(row)

    def image_row(self, image_id: int) -> ImageRow | None:
        row = self.conn.execute(f"SELECT {IMAGE_COLUMNS} FROM images WHERE id=?", (image_id,)).fetchone()
        return None if row is None else ImageRow(**row)

    def image_dup_group(self, image_id: int) -> int | None:
        row = self.conn.execute("SELECT dup_group FROM images WHERE id=?", (image_id,)).fetchone()
        return None if row is None or row[0] is None else int(row[0])

    def sources_of(self, image_id: int) -> list[SourceRow]:
        """Every path or URL that brought this photo, first first."""
        return [SourceRow.from_row(r) for r in self.conn.execute(
            "SELECT * FROM sources WHERE image_id=? AND status='ok' ORDER BY id", (image_id,))]

    def face_dup_members(self, group: int) -> list[DupMember]:
        """The faces dedup grouped under one keeper, with their states in force."""
        rows = self.conn.execute(
            "SELECT f.id, f.image_id, f.face_index, f.dup_of, f.dup_distance, f.dup_transform, st.state, "
            "st.rule_state FROM faces f LEFT JOIN item_state st ON st.face_id = f.id "
            "WHERE f.dup_group=? ORDER BY f.id", (group,)).fetchall()
        return [DupMember(f"f{r['id']}", f"f{r['id']}", _state(r["state"]), _state(r["rule_state"]), r["dup_of"],
                          r["dup_distance"], r["dup_transform"]) for r in rows]

    def photo_dup_members(self, group: int) -> list[DupMember]:
        """The photos dedup grouped under one keeper; each opens as its first face, with that item's state."""
        rows = self.conn.execute(
            "SELECT i.id, (SELECT id FROM faces WHERE image_id=i.id ORDER BY face_index LIMIT 1) AS face_id, "
            "i.dup_of, i.dup_distance, i.dup_transform FROM images i WHERE i.dup_group=? ORDER BY i.id",
            (group,)).fetchall()
        first: dict[int, ItemState] = {}
        for _pair, item in sorted(self.item_states_of(r["id"] for r in rows).items()):
            first.setdefault(item.image_id, item)
        out = []
        for r in rows:
            st = first.get(r["id"])
            key = f"i{r['id']}" if r["face_id"] is None else f"f{r['face_id']}"
            out.append(DupMember(key, f"i{r['id']}", st.state if st else None, st.rule_state if st else None,
                                 r["dup_of"], r["dup_distance"], r["dup_transform"]))
        return out

    def score_names(self) -> list[str]:
        """Every numeric score key present on faces, sorted."""
        return [r[0] for r in self.conn.execute(
            "SELECT DISTINCT j.key FROM faces f, json_each(f.scores) j WHERE j.type IN ('integer', 'real') "
            "ORDER BY j.key")]

    def score_means(self, name: str) -> tuple[float | None, float | None]:
        """Mean of one score over the faces the rules rejected and over those they kept."""
        path = json_path(name)
        row = self.conn.execute(
            "SELECT AVG(CASE WHEN st.rule_state='reject' THEN json_extract(f.scores, ?) END), "
            "AVG(CASE WHEN st.rule_state='keep' THEN json_extract(f.scores, ?) END) "
            "FROM item_state st JOIN faces f ON f.id = st.face_id", (path, path)).fetchone()
        return row[0], row[1]

    def items_in_rule_states(self, states: Iterable[State]) -> list[RuledItem]:
        """Every item the rules put in one of ``states`` (decisions aside), by photo and face index."""
        wanted = [s.value for s in states]
        return [RuledItem(key=r["key"], image_id=r["image_id"], face_index=r["face_index"],
                          rule_state=State(r["rule_state"]), reasons=_reasons_of(r["reasons"]),
                          scores=json.loads(r["scores"]), file=r["file"],
                          kind="photo" if r["face_id"] is None else "crop", location=r["location"],
                          title=r["title"], query=r["query"])
                for r in self.conn.execute(
                    f"{_ITEMS_CTE} SELECT it.key, it.face_id, it.image_id, it.face_index, it.rule_state, it.reasons, "
                    "it.scores, COALESCE(f.crop_path, i.path) AS file, s.location, s.title, s.query FROM items it "
                    f"JOIN images i ON i.id = it.image_id LEFT JOIN faces f ON f.id = it.face_id {_FIRST_SOURCE} "
                    f"WHERE it.rule_state IN ({placeholders(len(wanted))}) ORDER BY it.image_id, it.face_index",
                    wanted)]
