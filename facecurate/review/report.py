"""``review --list`` and ``review --html``: the rejects by reason, without a server.

The terminal table answers "what did the rules throw out, and why" at a glance; the HTML file is something to
mail or archive: one file, thumbnails embedded as data URIs, crawled strings escaped by Jinja's autoescape and a
Content-Security-Policy that runs no script at all.
"""

from __future__ import annotations

import base64
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from jinja2 import Environment, FileSystemLoader, select_autoescape
from rich.table import Table
from rich.text import Text

from facecurate import __version__, media
from facecurate.catalog import Catalog, State, utc_now
from facecurate.errors import ImageError
from facecurate.review import thumbs
from facecurate.review.items import NO_REVIEW, display_name
from facecurate.workspace import Workspace

TEMPLATES = Path(__file__).parent / "static"
REPORT_THUMB = 128
# What the report lists, in this order: rule rejects (one group per reason), then copies, photos in which no
# face was found and photos that could not be cropped. A person's decisions are counted, not applied.
LISTED = (State.REJECT, State.DUPLICATE, State.NO_FACE, State.FAILED)


@dataclass
class Entry:
    key: str
    file: str          # relative path of the crop (or the photo, when there is no face)
    kind: Literal["crop", "photo"]
    name: str          # what the photo is called at its source
    title: str | None
    query: str | None
    scores: dict[str, Any]
    review: dict[str, Any]


@dataclass
class ReasonGroup:
    reason: str
    status: State      # the rules' state of its items (item_state's rule_state)
    count: int = 0
    kept: int = 0
    rejected: int = 0
    entries: list[Entry] = field(default_factory=list)

    @property
    def undecided(self) -> int:
        return self.count - self.kept - self.rejected

    @property
    def decidable(self) -> bool:
        """Photo rows (no face, failed) carry no decision."""
        return self.status in (State.REJECT, State.DUPLICATE)


def reason_groups(catalog: Catalog, examples: int = 3) -> list[ReasonGroup]:
    """Rejects grouped by reason (a face with two reasons is in both), then duplicates, photos without a face
    and failed photos; each with counts of what a person kept or rejected and the first ``examples`` entries
    (0 = all)."""
    latest = catalog.review_latest()
    groups: dict[tuple[State, str], ReasonGroup] = {}
    for item in catalog.items_in_rule_states(LISTED):
        review = latest.get((item.image_id, item.face_index), NO_REVIEW) if item.face_index >= 0 else NO_REVIEW
        entry = Entry(item.key, item.file, item.kind, display_name(item.location), item.title, item.query,
                      item.scores, review)
        status = item.rule_state
        names = item.reasons if status == State.REJECT and item.reasons else [
            status.value if status != State.REJECT else "(no reason)"]
        for reason in names:
            g = groups.setdefault((status, reason), ReasonGroup(reason, status))
            g.count += 1
            g.kept += entry.review["decision"] == "kept"
            g.rejected += entry.review["decision"] == "rejected"
            if examples <= 0 or len(g.entries) < examples:
                g.entries.append(entry)
    order = {s: n for n, s in enumerate(LISTED)}
    return sorted(groups.values(), key=lambda g: (order[g.status], -g.count, g.reason))


@dataclass(frozen=True)
class ReasonReport:
    """What ``review --list`` shows: the groups, and how many faces the catalog holds in all."""

    groups: list[ReasonGroup]
    faces: int

    def as_json(self) -> list[dict[str, Any]]:
        return as_json(self.groups)


def reason_report(catalog: Catalog, examples: int = 3) -> ReasonReport:
    return ReasonReport(reason_groups(catalog, examples), catalog.face_count())


def face_count(catalog: Catalog) -> int:
    return catalog.face_count()


def table(groups: list[ReasonGroup], faces_total: int) -> Table:
    """The Rich table for --list. Crawled names go in as Text, so brackets in them are not Rich markup."""
    out = Table(title=f"rejects by reason ({faces_total:,} faces in the catalog)",
                caption="kept / rejected: decided by a person in `facecurate review`; they override the rules")
    out.add_column("reason", no_wrap=True, min_width=max([len(g.reason) for g in groups] + [6]))
    for col in ("count", "kept", "rejected", "open"):
        out.add_column(col, justify="right", no_wrap=True, min_width=len(col))
    out.add_column("examples", overflow="ellipsis")  # one name a line; long names are cut, the counts never
    for g in groups:
        decided = (str(g.kept), str(g.rejected), str(g.undecided)) if g.decidable else ("-", "-", "-")
        out.add_row(Text(g.reason), str(g.count), *decided, Text("\n".join(e.name or e.file for e in g.entries)))
    if not groups:
        out.add_row(Text("nothing rejected yet"), "0", "0", "0", "0", Text("run `facecurate filter` after crop"))
    return out


def as_json(groups: list[ReasonGroup]) -> list[dict[str, Any]]:
    return [{"reason": g.reason, "status": g.status.value, "count": g.count, "kept": g.kept, "rejected": g.rejected,
             "undecided": g.undecided, "examples": [e.name or e.file for e in g.entries]} for g in groups]


def _data_uri(ws: Workspace, entry: Entry, limits: tuple[int, int]) -> str | None:
    try:
        path = thumbs.cached(ws, entry.file, entry.kind, REPORT_THUMB, *limits)
    except ImageError:
        return None
    return "data:image/jpeg;base64," + base64.b64encode(path.read_bytes()).decode("ascii")


@dataclass(frozen=True)
class HtmlReport:
    """What ``review --html`` wrote."""

    path: Path
    groups: int
    thumbnails: int  # embedded; a file that cannot be decoded is shown as "no image"


def write_html(ws: Workspace, catalog: Catalog, out: Path, limit: int) -> HtmlReport:
    """Write the static report (``limit`` entries per group, 0 = all)."""
    cfg = ws.config()
    limits = (int(cfg.get("media", "max_pixels")), int(cfg.get("media", "max_bytes")))
    groups = reason_groups(catalog, examples=limit)
    images: dict[str, str | None] = {}
    for g in groups:
        for e in g.entries:
            if e.key not in images:
                images[e.key] = _data_uri(ws, e, limits)
    env = Environment(loader=FileSystemLoader(str(TEMPLATES)), autoescape=select_autoescape(["html"]))
    html = env.get_template("report.html").render(
        groups=groups, images=images, workspace=str(ws.root), created=utc_now(), version=__version__,
        faces=catalog.face_count(), limit=limit)
    media.atomic_write(out, html.encode("utf-8"))
    return HtmlReport(out, len(groups), sum(v is not None for v in images.values()))
