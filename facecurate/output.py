"""The output layer: progress bars, tables and ``--json``, for the single commands and for ``run`` alike.

Stages report progress through :class:`facecurate.events.Progress` and return plain summary records; this
module is the one place that turns them into something on a terminal. ``--json`` is :func:`to_json` of the very
record the table is drawn from, so a script sees the figures a person sees, in one shape per record type
(``tests/test_json_shapes.py`` validates every command's output against its record, and checks that a field
name means one JSON type in every record).

Crawled strings (titles, URLs, file names, labels) reach the terminal only as :class:`rich.text.Text` or escaped,
never as markup.
"""

from __future__ import annotations

import dataclasses
import json
import os
import re
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from enum import Enum
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Any

from rich.console import Console, Group, RenderableType
from rich.markup import escape
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TaskID,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)
from rich.table import Table
from rich.text import Text

from facecurate.events import Failure

if TYPE_CHECKING:
    from facecurate.calibrate import Calibration
    from facecurate.catalog import StatusReport
    from facecurate.crawl import CrawlSummary, QueryListing
    from facecurate.crawl.check import CheckReport, Replayed
    from facecurate.crawl.queries import PairStatus
    from facecurate.dedup import DedupSummary, GroupView
    from facecurate.demo import DemoOutcome
    from facecurate.evaluate import Evaluation
    from facecurate.export import ExportSummary
    from facecurate.faces.crop import CropSummary
    from facecurate.ingest import ImportSummary
    from facecurate.pipeline import RunSummary
    from facecurate.review.calibration import CalibrationQueue, DisagreementReport
    from facecurate.review.report import ReasonReport
    from facecurate.rules.fitting import RuleFit
    from facecurate.rules.stage import FilterSummary, RuleExplained

console = Console()
err_console = Console(stderr=True)  # bars and messages: stdout stays parseable under --json

# Control characters (C0 but tab, DEL, C1: ESC starts terminal sequences that can retitle a window, hide text or
# forge links) and the invisible format characters that reorder text (bidi overrides, zero-width), made visible.
# A tab only moves the cursor: `crawl --dry-run` lists "url<TAB>page" for cut(1).
_UNSAFE = re.compile("[\x00-\x08\x0a-\x1f\x7f-\x9f\u200b-\u200f\u202a-\u202e\u2060-\u2064\u2066-\u2069\ufeff]")


def clean(text: object) -> str:
    """A string from outside (a path, term, label, title, URL, message quoting them) as it may reach a terminal:
    every control or bidi character shown as its escape (``\\x1b``), so it can neither drive the terminal nor
    hide; Rich markup is never parsed from it either, as it only ever goes in as Text."""
    return _UNSAFE.sub(lambda m: f"\\x{ord(m.group()):02x}" if ord(m.group()) < 0x100 else
                       f"\\u{ord(m.group()):04x}", str(text))


def _safe(cell: object) -> Text:
    """A table cell: strings become Text (never markup), and Text built from outside strings is cleaned. The
    line breaks of a Text this module built (one name a line, each cleaned first) are its own and stay."""
    if isinstance(cell, Text):
        return cell if not _UNSAFE.search(cell.plain.replace("\n", "")) else Text(clean(cell.plain),
                                                                                   style=cell.style)
    return Text(clean(cell))


class _Table(Table):
    """A Rich table whose cells, headers and title are text, never markup, and never terminal control."""

    def __init__(self, *, title: object = None, caption: object = None, **kw: Any) -> None:
        super().__init__(title=None if title is None else _safe(title),
                         caption=None if caption is None else _safe(caption), **kw)

    def add_column(self, header: object = "", *args: Any, **kw: Any) -> None:
        super().add_column(_safe(header), *args, **kw)

    def add_row(self, *cells: object, **kw: Any) -> None:
        super().add_row(*(_safe(c) for c in cells), **kw)


# -- JSON -------------------------------------------------------------------------------------------------


def jsonable(value: Any) -> Any:
    """A summary record as JSON values: records become objects of their fields, enums their values, paths and
    errors strings; field names are the records' own (``tests/test_json_shapes.py`` checks the types)."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: jsonable(getattr(value, f.name)) for f in dataclasses.fields(value) if f.repr}
    if isinstance(value, Enum):
        return jsonable(value.value)
    if isinstance(value, Mapping):
        return {str(jsonable(k)): jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple, set, frozenset)):
        items = [jsonable(v) for v in value]
        return sorted(items, key=str) if isinstance(value, (set, frozenset)) else items
    if isinstance(value, Path):
        return str(value)
    if isinstance(value, BaseException):
        return str(value)
    return value


def to_json(value: Any) -> str:
    return json.dumps(jsonable(value), indent=2, ensure_ascii=False)


def print_json(value: Any) -> None:
    """The record on stdout, unstyled (Rich would wrap long lines and colour it)."""
    print(to_json(value))


# -- progress ---------------------------------------------------------------------------------------------


UPDATE_EVERY = 0.05  # seconds between the counts handed to Rich (it redraws at most 4 times a second)


class Bars:
    """Rich progress bars on stderr as an :class:`~facecurate.events.Progress` sink: one bar per task, each with
    its own rate, and notes printed above them."""

    def __init__(self, target: Console | None = None) -> None:
        console = target or err_console
        # Each redraw renders every column under the GIL that the stage's threads need (~10% of a 500 img/s
        # crawl at Rich's default 10 Hz): four a second on a terminal; none to a pipe or a log file, where
        # Rich cannot redraw in place anyway and shows the final state when the bars stop.
        self._progress = Progress(TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
                                  TextColumn("{task.fields[rate]}"), TimeElapsedColumn(), TimeRemainingColumn(),
                                  console=console, transient=False, auto_refresh=console.is_terminal,
                                  refresh_per_second=4)
        self._task: TaskID | None = None
        self._unit = ""
        self._t0 = self._shown = time.perf_counter()
        self._done = self._pending = 0

    def __enter__(self) -> Bars:
        self._progress.start()
        return self

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self._progress.stop()

    def start(self, name: str, total: int | None, unit: str, done: int = 0) -> None:
        self._task = self._progress.add_task(escape(clean(name)), total=total, completed=done, rate="")
        self._unit, self._t0, self._shown, self._done, self._pending = unit, time.perf_counter(), 0.0, 0, 0

    def advance(self, n: int = 1) -> None:
        """Coalesced: Rich redraws four times a second at most, so passing it every item (a crawl advances ~500 times a
        second) only spends the stage's main thread; it gets the count at most every UPDATE_EVERY seconds."""
        if self._task is None:
            return
        self._done += n
        self._pending += n
        now = time.perf_counter()
        if now - self._shown >= UPDATE_EVERY:
            self._show(now)

    def _show(self, now: float) -> None:
        assert self._task is not None
        rate = self._done / max(now - self._t0, 1e-9)
        self._progress.update(self._task, advance=self._pending, rate=f"{rate:.1f} {self._unit}/s")
        self._shown, self._pending = now, 0

    def finish(self, total: int | None = None) -> None:
        if self._task is None:
            return
        if self._pending:
            self._show(time.perf_counter())
        task = self._progress.tasks[self._progress.task_ids.index(self._task)]
        final = total if total is not None else (task.total if task.total is not None else int(task.completed))
        self._progress.update(self._task, total=final, completed=final)
        self._task = None

    def note(self, message: str) -> None:
        if self._task is not None and self._pending:
            self._show(time.perf_counter())
        self._progress.console.print(Text(clean(message), style="yellow"))


@contextmanager
def bars() -> Iterator[Bars]:
    with Bars() as sink:
        yield sink


# -- messages ---------------------------------------------------------------------------------------------


def error(title: str, message: str) -> None:
    """One paragraph on stderr; soft_wrap keeps paths and URLs on one line, so they can be copied."""
    err_console.print(Text.assemble((title, "bold red"), " ", clean(message)), soft_wrap=True, highlight=False)


def warning(message: str) -> None:
    err_console.print(Text.assemble(("Warning:", "bold yellow"), " ", clean(message)), highlight=False)


def say(*parts: str | tuple[str, str]) -> None:
    """One line of plain text (a line break inside a part is shown escaped, like any control character: call
    say once per line); (text, style) pairs are styled, never parsed as markup."""
    console.print(Text.assemble(*((clean(p[0]), p[1]) if isinstance(p, tuple) else clean(p) for p in parts)),
                  highlight=False, soft_wrap=True)


def interrupted() -> None:
    err_console.print(Text.assemble(("Interrupted.", "yellow"), " Finished batches are saved; run the same "
                                    "command again to continue where it stopped."))


def show(view: RenderableType) -> None:
    console.print(view)


def _counts(mapping: Mapping[str, int]) -> str:
    return ", ".join(f"{k} {v}" for k, v in mapping.items())


# -- tables -----------------------------------------------------------------------------------------------
#
# One function per summary record. Anything that came from outside (terms, labels, titles, URLs, file names,
# messages quoting them) goes in as Text, never as markup.


def _failures(title: str, failed: list[Failure], limit: int) -> list[RenderableType]:
    out: list[RenderableType] = [Text.assemble((title, "red"), " ", clean(f.item), ": ", clean(f.error))
                                 for f in failed[:limit]]
    if len(failed) > limit:
        out.append(Text(f"... and {len(failed) - limit} more (`--json` lists every one; so does the manifest)."))
    return out


def _table(title: str, columns: list[str], rows: list[list[str | Text]], right: bool = True) -> Table:
    table = _Table(title=title)
    for n, col in enumerate(columns):
        table.add_column(col, justify="right" if right and n else "left")
    for row in rows:
        table.add_row(*row)
    return table


def import_view(s: ImportSummary) -> RenderableType:
    parts: list[RenderableType] = [_table("import", ["found", "new", "exact duplicates", "unchanged", "failed"],
                                          [[str(v) for v in (s.found, s.new, s.duplicate, s.unchanged,
                                                             len(s.failed))]], right=False)]
    if s.failed:
        bad = _Table(title="not imported")
        bad.add_column("file", overflow="fold")
        bad.add_column("reason")
        for f in s.failed[:50]:
            bad.add_row(Text(f.item), Text(f.error))
        parts.append(bad)
        if len(s.failed) > 50:
            parts.append(Text(f"... and {len(s.failed) - 50} more (`facecurate export` lists every one)."))
    for f in s.skipped:
        parts.append(Text(clean(f"Skipped {f.error}"), style="dim"))
    return Group(*parts)


def _pair_cell(p: PairStatus) -> Text:
    if p.state == "skipped":
        return Text("- (not this query's)", style="dim")
    if p.state == "pending" or p.counts is None:
        return Text("pending", style="yellow")
    figures = f"{p.counts.found} found, {p.counts.new} new"
    date = (p.date or "")[:10]
    style, tail = {"used": ("green", ""), "blocked": ("red", " (resumes)")}.get(p.state, ("cyan", " (resumes)"))
    word = {"used": "used", "blocked": "blocked"}.get(p.state, "interrupted")
    return Text.assemble((word, style), f" {date} · {figures}{tail}")


def queries_view(listing: QueryListing) -> RenderableType:
    if not listing.queries:
        return Text("No tracked queries yet: `facecurate queries add --label LABEL TERM…` (or --file).")
    table = _Table(title="tracked queries (pending vs used per engine)")
    table.add_column("label")
    table.add_column("term", overflow="fold")
    for e in listing.engines:
        table.add_column(e)
    for q in listing.queries:
        own = " | ".join(f"{k}={','.join(v) if isinstance(v, list) else str(v).lower() if isinstance(v, bool) else v}"
                         for k, v in q.settings.items())
        term = Text.assemble(clean(q.term), (f"  [{clean(own)}]", "dim")) if own else Text(q.term)
        table.add_row(Text(q.label), term, *(_pair_cell(p) for p in q.pairs))
    pending = sum(q.pending for q in listing.queries)
    return Group(table, Text(f"{pending} of {len(listing.queries)} terms pending for at least one engine."))


def engines_check_view(r: CheckReport) -> RenderableType:
    """One row per engine; what the engine answered (URLs, messages) is untrusted, so only ever plain Text."""
    table = _Table(title=Text(f"engines check: one search for {clean(repr(r.term))}"))
    table.add_column("engine", no_wrap=True)
    for col in ("reached", "blocked", "parsed", "downloadable"):
        table.add_column(col, no_wrap=True)
    table.add_column("result", ratio=3, overflow="fold")
    for c in r.checks:
        table.add_row(Text(c.engine), "yes" if c.reached else "no", Text(c.blocked or "-"), str(c.parsed),
                      "yes" if c.downloadable else ("no" if c.first_url else "-"),
                      Text.assemble(("OK " if c.ok else "FAILED ", "green" if c.ok else "bold red"), clean(c.message)))
    failed = [c.engine for c in r.checks if not c.ok]
    return Group(table, Text(f"Failed: {', '.join(failed)}." if failed else "Every checked engine answers."))


def replay_view(r: Replayed) -> RenderableType:
    table = _Table(title=Text(f"{r.engine} parser on {clean(r.page)}: {r.verdict}, {len(r.results)} results"))
    for col in ("rank", "image", "page", "title", "size"):
        table.add_column(col, overflow="fold")
    for i, x in enumerate(r.results, 1):
        size = f"{x.width}x{x.height}" if x.width and x.height else ""
        table.add_row(str(i), Text(clean(x.url)), Text(clean(x.page_url or "")), Text(clean(x.title or "")), size)
    note = Text(f"Parser: {clean(r.error)}") if r.error else Text("")
    return Group(table, note)


def crawl_view(s: CrawlSummary) -> RenderableType:
    if not s.searches:
        return Text("Nothing pending: add terms with `facecurate queries add`, or re-run used ones with --again.")
    table = _Table(title="crawl: per query and engine")
    table.add_column("query", overflow="fold", ratio=2)
    table.add_column("engine", no_wrap=True)
    for col in ("found", "new", "duplicate", "failed"):
        table.add_column(col, justify="right", no_wrap=True)
    table.add_column("failed by reason", overflow="fold", ratio=3)
    for r in s.searches:
        c = r.counts
        reasons = Text(", ".join(f"{k} {v}" for k, v in c.failed_by_reason.items()))
        if r.state == "blocked" and r.stopped is not None:
            reasons = Text.assemble((f"BLOCKED ({r.stopped.kind})", "bold red"), " ", reasons)
        elif r.state == "dry-run":
            reasons = Text("dry run: nothing downloaded")
        table.add_row(Text(f"{r.label}: {r.term}"), r.engine, str(c.found), str(c.new), str(c.duplicate),
                      str(c.failed_count), reasons if reasons.plain else Text("-"))
    return table


def dedup_view(s: DedupSummary, show: int = 20) -> RenderableType:
    o = s.options
    title = "dedup (dry run: nothing written)" if s.dry_run else "dedup"
    table = _Table(title=f"{title}: threshold {o.threshold} bits, {o.algorithm}, keeper by {o.keeper}")
    for col in ("level", "items", "hashed", "groups", "dups", "mirror", "crop", "pixels", "changed", "failed"):
        table.add_column(col, justify="right")
    levels = {"photos": s.photo_level, **({"faces": s.face_level} if o.faces else {})}
    for name, lv in levels.items():
        mirrored = sum(v for k, v in lv.by_transform.items() if "hflip" in k)
        cropped = sum(v for k, v in lv.by_transform.items() if "crop" in k)
        table.add_row(name, str(lv.items), str(lv.hashed), str(lv.group_count), str(lv.duplicates), str(mirrored),
                      str(cropped), str(lv.by_kind.get("pixels", 0)), str(lv.changed), str(len(lv.failed)))
    parts: list[RenderableType] = [table]
    if show > 0 and s.groups:
        parts.append(_groups_table(s.groups[:show], len(s.groups)))
    for lv in levels.values():
        parts += _failures("not hashed", lv.failed, 10)
    return Group(*parts)


def _groups_table(shown: list[GroupView], total: int) -> Table:
    local = [n for g in shown for n in (g.keeper, *(m.name for m in g.members)) if n.startswith("/")]
    base = os.path.commonpath(local) if local else ""
    base = base if os.path.isdir(base) and base != "/" else ""

    def short(name: str) -> str:  # local paths relative to the folder they share, URLs as they are
        return os.path.relpath(name, base) if base and name.startswith(base + os.sep) else name

    groups = _Table(title=f"largest groups ({len(shown)} of {total})", show_lines=True,
                   caption=f"paths under {base}" if base else None)
    groups.add_column("level")
    groups.add_column("kept", overflow="fold")
    groups.add_column("duplicates (bits to the kept one, transform)", overflow="fold")
    for g in shown:
        members = Text()
        for n, m in enumerate(g.members):
            bits = f"{m.distance if m.distance is not None else '-'} bits"
            extra = (f", {m.transform}" if m.transform else "") + (
                f", {m.kind}" if m.kind not in (None, "perceptual") else "")
            members.append_text(Text.assemble(("\n" if n else ""), clean(short(m.name)), (f"  {bits}{extra}", "dim")))
        groups.add_row(g.level, Text(short(g.keeper)), members)
    return groups


def crop_view(s: CropSummary, size: int) -> RenderableType:
    table = _table(f"crop ({s.device}, {size}px)", ["images", "with a face", "crops written", "no face", "failed"],
                   [[str(v) for v in (s.images, s.with_face, s.faces, s.no_face, len(s.failed))]], right=False)
    return Group(table, *_failures("failed", s.failed, 20))


def filter_view(s: FilterSummary) -> RenderableType:
    table = _Table(title=f"filter: {s.faces} faces ({s.measured} measured now)")
    table.add_column("reason")
    table.add_column("faces", justify="right")
    for reason, n in s.by_reason.most_common():
        table.add_row(reason, str(n))
    table.add_row(Text("rejected", style="bold"), str(s.rejected))
    table.add_row(Text("passed the rules", style="bold"), str(s.passed))
    return Group(table, *_failures("not measured", s.failed, 20))


def explain_view(sample_id: str, rules: list[RuleExplained]) -> RenderableType:
    table = _Table(title=Text(f"rules for {sample_id}"))
    for col in ("rule", "measure", "value", "threshold", "fires", "fired", "what it catches"):
        table.add_column(col, overflow="fold")
    for r in rules:
        value = "n/a" if r.value is None else f"{r.value:.3f}"
        table.add_row(r.rule, r.measure, value, f"{r.threshold:g}", "below" if r.fires_when == "below" else ">=",
                      Text("yes", style="red") if r.fired else "no", r.doc)
    return table


def export_view(s: ExportSummary) -> RenderableType:
    counts = ", ".join(f"{k} {v}" for k, v in sorted(s.counts.items()))
    lines = [Text.assemble(("Manifest", "green"), f" {clean(s.manifest)} ({s.rows} rows: {counts})")]
    if s.layout_dir:
        per_label = "; ".join(f"{label} {n['train']} train, {n['val']} val" for label, n in sorted(s.splits.items()))
        lines.append(Text.assemble((s.layout, "green"), f" {clean(s.layout_dir)} ({s.layout_files} kept crops"
                                   + (f": {clean(per_label)}" if per_label else "") + ")"))
    if s.card:
        lines.append(Text.assemble(("Card", "green"), f" {clean(s.card)}"))
    if s.left_out:
        lines.append(Text.assemble(("Left out", "yellow"), " by licence: " + ", ".join(
            f"{family} {n}" for family, n in sorted(s.left_out.items()))))
    lines += [Text.assemble(("Note", "yellow"), f" {clean(note)}") for note in s.notes]
    return Group(*lines)


def status_view(root: Path, s: StatusReport) -> RenderableType:
    stages = _Table(title=Text(f"workspace {root}"))
    stages.add_column("stage")
    stages.add_column("counts")
    stages.add_row("sources", f"{s.sources['ok']} imported, {s.sources['failed']} failed")
    stages.add_row("images", f"{s.images} distinct")
    stages.add_row("crop", _counts(s.crop))
    stages.add_row("faces", _counts(s.face_states) or "none yet")
    if s.photo_states:
        stages.add_row("photos without a face", _counts(s.photo_states))
    stages.add_row("rejected by", _counts(s.reasons) or "-")
    parts: list[RenderableType] = [stages]
    dup = s.dedup
    if dup is not None:
        transforms = ", ".join(f"{k} {v}" for k, v in sorted(dup.image_by_transform.items()))
        stages.add_row("dedup", f"{dup.hashed} photos hashed; {dup.image_duplicates} duplicate photos in "
                                f"{dup.image_groups} groups" + (f" ({transforms})" if transforms else "")
                                + f"; {dup.face_duplicates} duplicate faces")
        if dup.largest_groups:
            stages.add_row("largest groups", ", ".join(f"#{g['group']}: {g['size']}" for g in dup.largest_groups))
        queries = {q: v for q, v in dup.by_query.items() if q}
        if queries:
            per_query = _Table(title="per query")
            for col in ("query", "images", "duplicates"):
                per_query.add_column(col, justify="left" if col == "query" else "right")
            for q, v in queries.items():
                per_query.add_row(Text(q), str(v["images"]), str(v["duplicates"]))
            parts.append(per_query)
    if s.by_label:
        labels = _Table(title="per label")
        cols = sorted({k for v in s.by_label.values() for k in v})
        labels.add_column("label")
        for c in cols:
            labels.add_column(c, justify="right")
        for label, v in s.by_label.items():
            labels.add_row(Text(label or "(none)"), *(str(v.get(c, 0)) for c in cols))
        parts.append(labels)
    return Group(*parts)


STATE_STYLE = {"done": "green", "blocked": "bold red", "failed": "bold red", "skipped": "yellow",
               "not selected": "dim"}
LABEL_HEADS = {"no_face": "no face", "failed_count": "failed"}


def run_view(s: RunSummary) -> RenderableType:
    """The closing summary: what each stage did, counts per label, and rejections by reason per label."""
    from facecurate.pipeline import LabelCounts

    stages = _Table(title="run: stages")
    stages.add_column("stage")
    stages.add_column("state")
    stages.add_column("what happened", overflow="fold")
    for o in s.stages:
        stages.add_row(o.name, Text(o.state, style=STATE_STYLE.get(o.state, "")), Text(o.detail or "-"))
    labels = _Table(title="run: per label (whole workspace; new = this run)")
    labels.add_column("label")
    for name in LabelCounts.COLUMNS:
        labels.add_column(LABEL_HEADS.get(name, name), justify="right")
    for label, counts in s.labels.items():
        labels.add_row(Text(label), *(str(getattr(counts, n)) for n in LabelCounts.COLUMNS))
    labels.add_section()
    labels.add_row(Text("total", style="bold"),
                   *(Text(str(getattr(s.total, n)), style="bold") for n in LabelCounts.COLUMNS))
    reasons = _Table(title="run: rejected by reason", caption="faces; no_face and failures count photos")
    reasons.add_column("reason")
    names = list(s.labels)
    for label in names:
        reasons.add_column(Text(label), justify="right")
    reasons.add_column("total", justify="right")
    for reason, n in s.total.rejected_by_reason.items():
        reasons.add_row(reason, *(str(s.labels[lb].rejected_by_reason.get(reason, 0)) for lb in names),
                        Text(str(n), style="bold"))
    if s.total.failed_by_reason:
        reasons.add_section()
        for reason, n in s.total.failed_by_reason.items():
            reasons.add_row(Text(f"failed: {reason}"),
                            *(str(s.labels[lb].failed_by_reason.get(reason, 0)) for lb in names),
                            Text(str(n), style="bold"))
    if not s.total.rejected_by_reason and not s.total.failed_by_reason:
        reasons.add_row("(none fired)", *("0" for _ in names), "0")
    return Group(stages, labels, reasons)


def _pct(v: float | None) -> str:
    return "-" if v is None else f"{v:.2f}"


def fits_table(title: str, fits: list[RuleFit], *, interval: bool, caption: str | None = None) -> _Table:
    """The one table of rule fits: ``evaluate`` (labelled folders) and ``calibrate`` (review decisions) both
    print it, from the shared fitting module's record."""
    table = _Table(title=title, caption=caption)
    cols = ["rule", "label", "labelled", "positive", "fired", "P", "R", "agree", "threshold", "suggested",
            "(P, R, agree)", "changes"]
    for col in cols:
        table.add_column(col, justify="left" if col in ("rule", "label") else "right", no_wrap=True)
    for r in fits:
        if not r.fired_count and not r.positives and not (interval and r.labelled):
            continue
        p, rr = _pct(r.precision), _pct(r.recall)
        if interval and r.precision_low is not None:
            p += f" [{r.precision_low:.2f}-{r.precision_high:.2f}]"
        if interval and r.recall_low is not None:
            rr += f" [{r.recall_low:.2f}-{r.recall_high:.2f}]"
        moved = r.suggested_threshold is not None and r.suggested_threshold != r.threshold
        suggested = Text("-" if r.suggested_threshold is None else f"{r.suggested_threshold:.4g}",
                         style="bold" if moved and r.enough else "dim" if not r.enough else "")
        if r.suggested_threshold is not None and not r.enough:
            suggested.append(" (few)")
        table.add_row(r.rule, Text(r.label if r.label is not None else "all"), str(r.labelled), str(r.positives),
                      str(r.fired_count), p, rr, _pct(r.agreement), f"{r.threshold:.4g}", suggested,
                      "-" if r.suggested_threshold is None else
                      f"{_pct(r.suggested_precision)}, {_pct(r.suggested_recall)}, {_pct(r.suggested_agreement)}",
                      "-" if r.changes is None else str(r.changes))
    return table


def evaluate_view(e: Evaluation) -> RenderableType:
    parts: list[RenderableType] = [Text(f"{e.photos} photos: " + _counts(dict(sorted(e.labels.items()))))]
    parts += [fits_table(f"rules vs labels (suggestions reach precision {e.target_precision:g})", e.rules,
                         interval=False),
              Text("where each rule fired (folder: photos)", style="bold")]
    for r in e.rules:
        if r.fired_count:
            fired_on = ", ".join(f"{k} {v}" for k, v in sorted(r.by_label.items(), key=lambda kv: -kv[1]))
            parts.append(Text(f"  {r.rule}: {fired_on}"))
    if e.keep_rejected is not None:
        parts.append(Text(f"keep/ photos rejected: {e.keep_rejected:.1%} (by an eye rule: "
                          f"{(e.keep_rejected_by_eye_rules or 0):.1%}); workspace {clean(e.workspace)}"))
    return Group(*parts)


def calibrate_view(c: Calibration) -> RenderableType:
    """``calibrate``: the fits table (with bootstrap intervals), then what ``--apply`` changed."""
    how = f"precision >= {c.target_precision:g}, then recall" if c.target_precision else "most agreement"
    labels = ", ".join(f"{Text(k or '(none)').plain} {v}" for k, v in sorted(c.labels.items()))
    parts: list[RenderableType] = [Text(f"{c.decisions} review decisions ({c.reasons_given} with a reason); "
                                        f"by label: {clean(labels) or '-'}")]
    parts.append(fits_table(f"rules vs review decisions (suggestions: {how})", c.rules, interval=True,
                            caption=f"P, R: of the rule firing against the person's rejects [90% bootstrap]; "
                                    f"a suggestion needs {c.min_decisions} decisions (few: not applied); "
                                    f"changes: faces whose rule verdict it flips"))
    if not c.decisions:
        parts.append(Text("No review decisions yet: decide some faces in `facecurate review` (`review --calibrate "
                          "N` lists the most informative first), then run calibrate again."))
    if c.applied is not None:
        a = c.applied
        if not a.thresholds:
            parts.append(Text("--apply: no trusted suggestion differs from the thresholds in force; nothing written."))
        for section, values in a.thresholds.items():
            for rule, (old, new) in values.items():
                parts.append(Text.assemble(("applied ", "green"), f"[rules{'.' + clean(section) if section else ''}] "
                                           f"{rule}: {old:g} -> {new:g}"))
        if a.backup:
            parts.append(Text(f"{clean(a.config_file)} rewritten; the old file is {clean(a.backup)}"))
        r = a.redecided
        parts.append(Text(f"re-decided {r.faces} faces from their stored measures: {r.now_rejected} now rejected, "
                          f"{r.now_kept} now kept, {r.reasons_changed} with other reasons"
                          + (f"; {r.unmeasured} never measured (run filter)" if r.unmeasured else "")))
    return Group(*parts)


def queue_view(q: CalibrationQueue) -> RenderableType:
    """``review --calibrate N``: the faces to decide first, and why each."""
    table = _Table(title=f"ask first: {len(q.queue)} of {q.undecided} undecided faces, most informative first",
                   caption="near: the measure sits by the rule's threshold (the decisions so far, else the one in "
                           "force); random: an honest sample of the rest. Open `facecurate review` sorted by "
                           "'most informative first' to decide them.")
    for col in ("#", "face", "label", "why", "rule", "measure", "value", "threshold"):
        table.add_column(col, justify="right" if col in ("#", "value", "threshold") else "left", no_wrap=True)
    for i, f in enumerate(q.queue, 1):
        it = f.why
        table.add_row(str(i), Text(clean(f.crop_path)), Text(it.label or ""), "near" if it.rule else "random",
                      it.rule or "", it.measure or "", "" if it.value is None else f"{it.value:.4g}",
                      "" if it.boundary is None else f"{it.boundary:.4g}")
    return table


def disagreements_view(d: DisagreementReport) -> RenderableType:
    """``review --list --disagree``: faces a person decided against the rules, by rule, measure beside threshold."""
    table = _Table(title=f"person vs rules: {d.disagreeing} disagreements among {d.decided} decided faces",
                   caption="kept: a person kept what the rule rejected; rejected: a person rejected what the rules "
                           "kept (grouped by the reason given)")
    for col in ("rule", "face", "person", "reason", "measure", "value", "threshold"):
        table.add_column(col, justify="right" if col in ("value", "threshold") else "left", no_wrap=True)
    for g in d.groups:
        for e in g.entries:
            table.add_row(g.rule, Text(clean(e.crop_path)), e.decision, Text(e.reason or ""), e.measure or "",
                          "-" if e.value is None else f"{e.value:.4g}",
                          "-" if e.threshold is None else f"{e.threshold:.4g}")
        table.add_section()
    if not d.groups:
        table.add_row("-", Text("no disagreements"), "", "", "", "", "")
    return table


def reasons_view(report: ReasonReport) -> RenderableType:
    """``review --list``. Crawled names go in as Text, so brackets in them are not Rich markup."""
    groups = report.groups
    out = _Table(title=f"rejects by reason ({report.faces:,} faces in the catalog)",
                caption="kept / rejected: decided by a person in `facecurate review`; they override the rules")
    out.add_column("reason", no_wrap=True, min_width=max([len(g.reason) for g in groups] + [6]))
    for col in ("count", "kept", "rejected", "open"):
        out.add_column(col, justify="right", no_wrap=True, min_width=len(col))
    out.add_column("examples", overflow="ellipsis")  # one name a line; long names are cut, the counts never
    for g in groups:
        decided = (str(g.kept), str(g.rejected), str(g.undecided)) if g.decidable else ("-", "-", "-")
        out.add_row(Text(g.reason), str(g.count), *decided, Text("\n".join(clean(e.name or e.file) for e in g.entries)))
    if not groups:
        out.add_row(Text("nothing rejected yet"), "0", "0", "0", "0", Text("run `facecurate filter` after crop"))
    return out


def demo_view(rows: list[DemoOutcome]) -> RenderableType:
    table = _Table(title="demo: what each served photo was made to show")
    for col in ("photo", "made to show", "the run found"):
        table.add_column(col, no_wrap=True)
    for r in rows:
        mark = Text("✓", style="green") if r.shown else Text("✗", style="red")
        table.add_row(r.photo, Text.assemble(mark, f" {r.made_to_show}"), r.found)
    return table
