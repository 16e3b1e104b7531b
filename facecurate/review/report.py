"""``review --list`` and ``review --html``: the rejects by reason, without a server.

The terminal table answers "what did the rules throw out, and why" at a glance; the HTML file is something to
mail or archive: one file, thumbnails embedded as data URIs, crawled strings escaped by Jinja's autoescape and a
Content-Security-Policy that runs no script at all.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from jinja2 import Environment, FileSystemLoader, select_autoescape
from rich.table import Table
from rich.text import Text

from facecurate import __version__, media
from facecurate.catalog import Catalog, utc_now
from facecurate.errors import ImageError
from facecurate.review import thumbs
from facecurate.review.items import display_name
from facecurate.workspace import Workspace

TEMPLATES = Path(__file__).parent / "static"
REPORT_THUMB = 128
NONE = {"decision": "none", "by": None, "at": None}


@dataclass
class Entry:
    key: str
    file: str          # relative path of the crop (or the photo, when no face was found)
    kind: str          # crop | photo
    name: str          # what the photo is called at its source
    title: str | None
    query: str | None
    scores: dict[str, Any]
    review: dict[str, Any]


@dataclass
class ReasonGroup:
    reason: str
    status: str
    count: int = 0
    kept: int = 0
    rejected: int = 0
    entries: list[Entry] = field(default_factory=list)

    @property
    def undecided(self) -> int:
        return self.count - self.kept - self.rejected


def _rows(catalog: Catalog) -> Iterator[tuple[str, list[str], Entry]]:
    """(status, reasons, entry) for every reject, duplicate and photo without a face."""
    latest = catalog.review_latest()
    for r in catalog.conn.execute(
            "SELECT f.id, f.image_id, f.face_index, f.status, f.reasons, f.scores, f.crop_path, s.location, "
            "s.title, s.query FROM faces f LEFT JOIN sources s ON s.id = (SELECT MIN(id) FROM sources "
            "WHERE image_id = f.image_id AND status = 'ok') WHERE f.status IN ('reject', 'duplicate') "
            "ORDER BY f.image_id, f.face_index"):
        entry = Entry(f"f{r['id']}", r["crop_path"], "crop", display_name(r["location"]), r["title"], r["query"],
                      json.loads(r["scores"]), latest.get((r["image_id"], r["face_index"]), NONE))
        yield r["status"], json.loads(r["reasons"]), entry
    for r in catalog.conn.execute(
            "SELECT i.id, i.path, s.location, s.title, s.query FROM images i LEFT JOIN sources s ON s.id = "
            "(SELECT MIN(id) FROM sources WHERE image_id = i.id AND status = 'ok') WHERE i.crop_state = 'no_face' "
            "ORDER BY i.id"):
        yield "no_face", ["no_face"], Entry(f"i{r['id']}", r["path"], "photo", display_name(r["location"]), r["title"],
                                            r["query"], {}, NONE)


def reason_groups(catalog: Catalog, examples: int = 3) -> list[ReasonGroup]:
    """Rejects grouped by reason (a face with two reasons is in both), then duplicates and photos without a face;
    each with counts of what a person kept or rejected and the first ``examples`` entries (0 = all)."""
    groups: dict[tuple[str, str], ReasonGroup] = {}
    for status, reasons, entry in _rows(catalog):
        names = reasons if status == "reject" and reasons else [status if status != "reject" else "(no reason)"]
        for reason in names:
            g = groups.setdefault((status, reason), ReasonGroup(reason, status))
            g.count += 1
            g.kept += entry.review["decision"] == "kept"
            g.rejected += entry.review["decision"] == "rejected"
            if examples <= 0 or len(g.entries) < examples:
                g.entries.append(entry)
    order = {"reject": 0, "duplicate": 1, "no_face": 2}
    return sorted(groups.values(), key=lambda g: (order[g.status], -g.count, g.reason))


def face_count(catalog: Catalog) -> int:
    return int(catalog.conn.execute("SELECT COUNT(*) FROM faces").fetchone()[0])


def table(groups: list[ReasonGroup], faces_total: int) -> Table:
    """The Rich table for --list. Crawled names go in as Text, so brackets in them are not Rich markup."""
    out = Table(title=f"rejects by reason ({faces_total:,} faces in the catalog)",
                caption="kept / rejected: decided by a person in `facecurate review`; they override the rules")
    out.add_column("reason", no_wrap=True, min_width=max([len(g.reason) for g in groups] + [6]))
    for col in ("count", "kept", "rejected", "open"):
        out.add_column(col, justify="right", no_wrap=True, min_width=len(col))
    out.add_column("examples", overflow="ellipsis")  # one name a line; long names are cut, the counts never
    for g in groups:
        decided = (str(g.kept), str(g.rejected), str(g.undecided)) if g.status != "no_face" else ("-", "-", "-")
        out.add_row(Text(g.reason), str(g.count), *decided, Text("\n".join(e.name or e.file for e in g.entries)))
    if not groups:
        out.add_row(Text("nothing rejected yet"), "0", "0", "0", "0", Text("run `facecurate filter` after crop"))
    return out


def as_json(groups: list[ReasonGroup]) -> list[dict[str, Any]]:
    return [{"reason": g.reason, "status": g.status, "count": g.count, "kept": g.kept, "rejected": g.rejected,
             "undecided": g.undecided, "examples": [e.name or e.file for e in g.entries]} for g in groups]


def _data_uri(ws: Workspace, entry: Entry, limits: tuple[int, int]) -> str | None:
    try:
        path = thumbs.cached(ws, entry.file, entry.kind, REPORT_THUMB, *limits)
    except ImageError:
        return None
    return "data:image/jpeg;base64," + base64.b64encode(path.read_bytes()).decode("ascii")


def write_html(ws: Workspace, catalog: Catalog, out: Path, limit: int) -> tuple[int, int]:
    """Write the static report; returns (groups, thumbnails embedded)."""
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
        faces=face_count(catalog), limit=limit)
    media.atomic_write(out, html.encode("utf-8"))
    return len(groups), sum(v is not None for v in images.values())
