"""``review --list``, ``review --html`` and ``report``: what was rejected and why, without a server.

:func:`reason_report` is what the terminal table (drawn by the output layer) and ``--json`` show: "what did the
rules throw out, and why" at a glance. :func:`write_html` is the one HTML builder behind ``review --html`` and
``facecurate report``: a file to mail or archive, opened offline. Its charts (rejects by reason x label, each
rule's score histogram with its threshold, kept vs rejected per query and over time) are matplotlib's SVG inlined
by :mod:`facecurate.review.charts`; its contact sheets (one grid of thumbnails per reason) embed JPEGs as data
URIs. Crawled strings are escaped by Jinja's autoescape (and by matplotlib's XML writer inside the charts), and
a Content-Security-Policy runs no script and fetches nothing.
"""

from __future__ import annotations

import base64
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from jinja2 import Environment, FileSystemLoader, select_autoescape
from markupsafe import Markup

from facecurate import __version__, media
from facecurate.catalog import Catalog, State, utc_now
from facecurate.errors import ImageError
from facecurate.review import thumbs
from facecurate.review.charts import build_charts
from facecurate.review.items import NO_REVIEW, display_name
from facecurate.rules.fitting import RuleFit
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


@dataclass(frozen=True)
class ReasonGroup:
    """One reason's rejects; its fields are the ``--json`` shape, ``entries`` (the examples' files) stays out."""

    reason: str
    status: State      # the rules' state of its items (item_state's rule_state)
    count: int
    kept: int          # by a person
    rejected: int
    undecided: int
    examples: list[str]  # names of the first entries
    entries: list[Entry] = field(default_factory=list, repr=False)  # not printed: --html draws them

    @property
    def decidable(self) -> bool:
        """Photo rows (no face, failed) carry no decision."""
        return self.status in (State.REJECT, State.DUPLICATE)


@dataclass
class _Tally:
    count: int = 0
    kept: int = 0
    rejected: int = 0
    entries: list[Entry] = field(default_factory=list)


def reason_groups(catalog: Catalog, examples: int = 3) -> list[ReasonGroup]:
    """Rejects grouped by reason (a face with two reasons is in both), then duplicates, photos without a face
    and failed photos; each with counts of what a person kept or rejected and the first ``examples`` entries
    (0 = all)."""
    latest = catalog.review_latest()
    tallies: dict[tuple[State, str], _Tally] = {}
    for item in catalog.items_in_rule_states(LISTED):
        review = latest.get((item.image_id, item.face_index), NO_REVIEW) if item.face_index >= 0 else NO_REVIEW
        entry = Entry(item.key, item.file, item.kind, display_name(item.location), item.title, item.query,
                      item.scores, review)
        status = item.rule_state
        names = item.reasons if status == State.REJECT and item.reasons else [
            status.value if status != State.REJECT else "(no reason)"]
        for reason in names:
            t = tallies.setdefault((status, reason), _Tally())
            t.count += 1
            t.kept += entry.review["decision"] == "kept"
            t.rejected += entry.review["decision"] == "rejected"
            if examples <= 0 or len(t.entries) < examples:
                t.entries.append(entry)
    order = {s: n for n, s in enumerate(LISTED)}
    groups = [ReasonGroup(reason, status, t.count, t.kept, t.rejected, t.count - t.kept - t.rejected,
                          [e.name or e.file for e in t.entries], t.entries)
              for (status, reason), t in tallies.items()]
    return sorted(groups, key=lambda g: (order[g.status], -g.count, g.reason))


@dataclass(frozen=True)
class ReasonReport:
    """What ``review --list`` shows: the groups, and how many faces the catalog holds in all."""

    groups: list[ReasonGroup]
    faces: int


def reason_report(catalog: Catalog, examples: int = 3) -> ReasonReport:
    return ReasonReport(reason_groups(catalog, examples), catalog.face_count())


def _data_uri(ws: Workspace, entry: Entry, limits: tuple[int, int]) -> str | None:
    try:
        path = thumbs.cached(ws, entry.file, entry.kind, REPORT_THUMB, *limits)
    except ImageError:
        return None
    return "data:image/jpeg;base64," + base64.b64encode(path.read_bytes()).decode("ascii")


@dataclass(frozen=True)
class HtmlReport:
    """What ``review --html`` and ``report`` wrote (``report --json``)."""

    path: Path
    sheets: int      # contact sheets: one per reason group
    thumbnails: int  # embedded; a file that cannot be decoded is shown as "no image"
    charts: int      # SVG charts drawn
    size_bytes: int  # of the HTML file


def write_html(ws: Workspace, catalog: Catalog, out: Path, limit: int,
               calibration: list[RuleFit] | None = None) -> HtmlReport:
    """Write the static report: the charts, the calibration table (``calibration``: ``calibrate``'s fits to the
    review decisions, whose trusted suggestions the histograms draw beside the thresholds in force), then one
    contact sheet per reason (``limit`` entries each, 0 = all)."""
    cfg = ws.config()
    limits = (int(cfg.get("media", "max_pixels")), int(cfg.get("media", "max_bytes")))
    fits = [f for f in calibration or [] if f.labelled]
    suggested = {f.rule: f.suggested_threshold for f in fits if f.label is None and f.enough
                 and f.suggested_threshold is not None and f.suggested_threshold != f.threshold}
    charts = build_charts(catalog.chart_rows(), cfg, suggested)
    groups = reason_groups(catalog, examples=limit)
    images: dict[str, str | None] = {}
    for g in groups:
        for e in g.entries:
            if e.key not in images:
                images[e.key] = _data_uri(ws, e, limits)
    env = Environment(loader=FileSystemLoader(str(TEMPLATES)), autoescape=select_autoescape(["html"]))
    svg = {c.id: Markup(c.svg) for c in charts.all}  # matplotlib's SVG, its text escaped by its XML writer
    html = env.get_template("report.html").render(
        groups=groups, images=images, workspace=str(ws.root), created=utc_now(), version=__version__,
        faces=catalog.face_count(), limit=limit, charts=charts, svg=svg, fits=fits).encode("utf-8")
    media.atomic_write(out, html)
    return HtmlReport(out, len(groups), sum(v is not None for v in images.values()), len(svg), len(html))
