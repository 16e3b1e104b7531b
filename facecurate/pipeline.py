"""``run``: the stages in order — crawl → dedup → crop → filter → export — each resuming where it stopped.

Every stage here is the stage function its own command uses (``run_crawl``, ``run_dedup``, ``run_crop``,
``run_filter``, ``export``); they are incremental, so a second ``run`` does only what is new and a killed one
goes on from its last committed batch. This module only orders them, draws a bar per stage, decides what a
failure means for the stages after it, and builds one closing summary.

Failures, and why they are handled differently:

- **crawl** blocked (CAPTCHA, consent wall, changed layout) or failed: the later stages still run, on
  everything the catalog already holds — what this crawl fetched before the block, earlier crawls and imports
  are as worth processing as ever. The summary marks crawl ``blocked``/``failed`` and says the later stages
  ran on the catalog as it was; :attr:`RunSummary.error` carries the engine's message (exit code 3 for a
  block), so the command still exits non-zero and the search resumes on the next ``run``.
- **dedup, crop or filter** failed (no such device, a broken setting): the stages after it are *skipped*
  and listed as such. Exporting photos that were not deduplicated or faces that were never filtered would
  publish a dataset that looks clean and is not.
- **export** failed: nothing after it; the error is reported.

``dedup`` groups photos at its place in the order, and, when ``crop`` wrote new faces in the same run,
once more right after ``crop``: face-level groups need the aligned crops (hashes are cached, so the second
pass only hashes the new crops).

The closing summary counts come from the catalog, through the same rows the manifest is written from
(:func:`facecurate.export.manifest_rows`), so a resumed run or a ``--stages`` subset reports the state of
the whole workspace, not only this run's delta; only "new images" is this run's own figure.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from rich.console import Console, Group
from rich.markup import escape
from rich.progress import Progress, TaskID
from rich.table import Table

from facecurate.catalog import Catalog
from facecurate.errors import ConfigError, FacecurateError, PipelineError
from facecurate.workspace import Workspace

STAGES = ("crawl", "dedup", "crop", "filter", "export")
DEVICES = ("auto", "cpu", "cuda")
HALTING = frozenset({"dedup", "crop", "filter"})  # a failure here skips the stages after it (module docstring)
NO_LABEL = "(none)"


@dataclass(frozen=True)
class RunOptions:
    """One ``run``: which stages, and the options of the stages that take any."""

    stages: tuple[str, ...] = STAGES
    engines: tuple[str, ...] = ()      # empty: the workspace's configured engines
    terms: tuple[str, ...] = ()        # empty: all pending queries
    limit: int | None = None           # results per (query, engine); None: [crawl] limit
    device: str = "auto"               # crop device
    fmt: str = "jsonl"                 # manifest format
    layout: str = "imagefolder"        # export layout: none | imagefolder | per-label
    again: bool = False                # crawl: re-run (query, engine) pairs already used


def parse_stages(text: str) -> tuple[str, ...]:
    """``crop,filter`` → ("crop", "filter"), in pipeline order whatever order they were given in."""
    names = [n.strip().lower() for n in text.split(",") if n.strip()]
    unknown = [n for n in names if n not in STAGES]
    if unknown or not names:
        what = f"Unknown stage {', '.join(repr(n) for n in unknown)}" if unknown else "No stage given"
        raise ConfigError(f"{what} in --stages {text!r}: use a comma-separated list of {', '.join(STAGES)} "
                          f"(e.g. --stages crop,filter).")
    return tuple(s for s in STAGES if s in names)


def check_options(opts: RunOptions) -> None:
    """Refuse a bad option before any stage starts, so a typo costs nothing."""
    from facecurate.export import FORMATS, LAYOUTS

    parse_stages(",".join(opts.stages))
    if opts.device not in DEVICES:
        raise ConfigError(f"Unknown device {opts.device!r}: use {', '.join(DEVICES)} (--device).")
    if opts.fmt not in FORMATS:
        raise ConfigError(f"Unknown manifest format {opts.fmt!r}: use {', '.join(FORMATS)} (--format).")
    if opts.layout not in LAYOUTS:
        raise ConfigError(f"Unknown layout {opts.layout!r}: use {', '.join(LAYOUTS)} (--layout).")
    if opts.limit is not None and opts.limit < 1:
        raise ConfigError(f"--limit {opts.limit}: use 1 or more results per query and engine.")


# -- outcomes and the closing summary ---------------------------------------------------------------------


@dataclass
class StageOutcome:
    """What one stage did in this run. ``state``: done | blocked | failed | skipped | not selected."""

    name: str
    state: str = "not selected"
    detail: str = ""
    figures: dict[str, Any] = field(default_factory=dict)
    error: FacecurateError | None = None


@dataclass
class LabelCounts:
    """One label's line of the summary, in manifest rows: a face, an image without one, or a failed source.

    found, new and images count photos; kept, rejected, duplicates, no_face, failed and pending partition the
    manifest rows, so they add up to the manifest's row count."""

    found: int = 0          # distinct URLs the label's searches found, plus local files imported under it
    new: int = 0            # distinct images this run added
    images: int = 0         # distinct images in the catalog
    kept: int = 0
    rejected: int = 0       # by a rule, or by a person in review
    duplicates: int = 0
    no_face: int = 0
    failed: int = 0         # downloads or decodes that failed
    pending: int = 0        # not cropped, or cropped and not filtered yet
    reasons: Counter[str] = field(default_factory=Counter)   # every reason that fired, incl. duplicate, no_face
    failures: Counter[str] = field(default_factory=Counter)  # failed rows by reason (http_404, not_an_image, ...)

    COLUMNS = ("found", "new", "images", "duplicates", "no_face", "rejected", "kept", "failed", "pending")

    def add(self, other: LabelCounts) -> None:
        for name in self.COLUMNS:
            setattr(self, name, getattr(self, name) + getattr(other, name))
        self.reasons.update(other.reasons)
        self.failures.update(other.failures)

    def as_dict(self) -> dict[str, Any]:
        return {**{name: getattr(self, name) for name in self.COLUMNS}, "rejected_by_reason": dict(self.reasons),
                "failed_by_reason": dict(self.failures)}


STATE_STYLE = {"done": "green", "blocked": "bold red", "failed": "bold red", "skipped": "yellow",
               "not selected": "dim"}


@dataclass
class RunSummary:
    """The outcome of every stage and the workspace's counts per label, for the table and for ``--json``."""

    stages: list[StageOutcome]
    labels: dict[str, LabelCounts]
    manifest: Path | None = None
    layout_dir: Path | None = None
    notes: list[str] = field(default_factory=list)

    @property
    def total(self) -> LabelCounts:
        out = LabelCounts()
        for counts in self.labels.values():
            out.add(counts)
        return out

    def stage(self, name: str) -> StageOutcome:
        return next(s for s in self.stages if s.name == name)

    @property
    def error(self) -> PipelineError | None:
        """One error for the run (None when every selected stage finished): the CLI's message and exit code."""
        failed = [s for s in self.stages if s.error is not None]
        if not failed:
            return None
        first = failed[0]
        message = f"{first.name} {first.state}: {first.error}"
        if len(failed) > 1:
            message += " Also " + "; ".join(f"{s.name} {s.state}: {s.error}" for s in failed[1:])
        return PipelineError(" ".join([message, *self.notes]), first.error.exit_code)  # type: ignore[union-attr]

    def as_dict(self) -> dict[str, Any]:
        error = self.error
        return {"ok": error is None, "error": str(error) if error else None, "notes": self.notes,
                "stages": [{"name": s.name, "state": s.state, "detail": s.detail, "figures": s.figures}
                           for s in self.stages],
                "labels": {label: c.as_dict() for label, c in self.labels.items()},
                "total": self.total.as_dict(),
                "manifest": str(self.manifest) if self.manifest else None,
                "layout_dir": str(self.layout_dir) if self.layout_dir else None}

    def table(self) -> Group:
        """The closing summary: what each stage did, counts per label, and rejections by reason per label."""
        return Group(self._stages_table(), self._labels_table(), self._reasons_table())

    def _stages_table(self) -> Table:
        table = Table(title="run: stages")
        table.add_column("stage")
        table.add_column("state")
        table.add_column("what happened", overflow="fold")
        for s in self.stages:
            style = STATE_STYLE.get(s.state, "")
            table.add_row(s.name, f"[{style}]{s.state}[/]" if style else s.state, escape(s.detail) or "-")
        return table

    def _labels_table(self) -> Table:
        table = Table(title="run: per label (whole workspace; new = this run)")
        table.add_column("label")
        heads = {"no_face": "no face"}
        for name in LabelCounts.COLUMNS:
            table.add_column(heads.get(name, name), justify="right")
        for label, counts in self.labels.items():
            table.add_row(escape(label), *(str(getattr(counts, n)) for n in LabelCounts.COLUMNS))
        total = self.total
        table.add_section()
        table.add_row("[bold]total[/]", *(f"[bold]{getattr(total, n)}[/]" for n in LabelCounts.COLUMNS))
        return table

    def _reasons_table(self) -> Table:
        table = Table(title="run: rejected by reason", caption="faces; no_face and failures count photos")
        table.add_column("reason")
        labels = list(self.labels)
        for label in labels:
            table.add_column(escape(label), justify="right")
        table.add_column("total", justify="right")
        total = self.total
        for reason, n in total.reasons.most_common():
            table.add_row(reason, *(str(self.labels[lb].reasons.get(reason, 0)) for lb in labels), f"[bold]{n}[/]")
        if total.failures:
            table.add_section()
            for reason, n in total.failures.most_common():
                table.add_row(f"failed: {reason}", *(str(self.labels[lb].failures.get(reason, 0)) for lb in labels),
                              f"[bold]{n}[/]")
        if not total.reasons and not total.failures:
            table.add_row("(none fired)", *("0" for _ in labels), "0")
        return table


def _row_reasons(row: dict[str, Any]) -> list[str]:
    """Why a manifest row is not kept: its rules' reasons when rejected, else its status as the reason."""
    status = row["status"]
    if status == "reject":
        return list(row["reasons"]) or ["review"]  # rejected by a person, no rule fired
    if status in ("duplicate", "no_face"):
        return [status]
    return []


def _images_per_label(catalog: Catalog) -> Counter[str]:
    return Counter({r[0] or NO_LABEL: int(r[1]) for r in catalog.conn.execute(
        "SELECT label, COUNT(*) FROM images GROUP BY label")})


def _found_per_label(catalog: Catalog) -> Counter[str]:
    """Distinct URLs each label's searches found (whatever became of them) plus local files imported."""
    found: Counter[str] = Counter()
    for label, n in catalog.conn.execute(
            "SELECT q.label, COUNT(DISTINCT h.url_id) FROM hits h JOIN query_runs r ON r.id = h.run_id "
            "JOIN queries q ON q.id = r.query_id GROUP BY q.label"):
        found[label or NO_LABEL] += int(n)
    for label, n in catalog.conn.execute("SELECT label, COUNT(*) FROM sources WHERE kind = 'file' GROUP BY label"):
        found[label or NO_LABEL] += int(n)
    return found


def workspace_counts(ws: Workspace, catalog: Catalog, images_before: Counter[str] | None = None
                     ) -> dict[str, LabelCounts]:
    """Per-label counts of the whole workspace, from the rows the manifest is made of."""
    from facecurate.export import manifest_rows

    unfiltered = {f"{r[0][:16]}_{r[1]}" for r in catalog.conn.execute(
        "SELECT i.sha256, f.face_index FROM faces f JOIN images i ON i.id = f.image_id WHERE f.filtered_at IS NULL")}
    labels: dict[str, LabelCounts] = {}
    for row in manifest_rows(ws, catalog, ws.exports_dir):
        counts = labels.setdefault(row["label"] or NO_LABEL, LabelCounts())
        status = row["status"]
        if status == "keep" and row["sample_id"] in unfiltered and row["review"]["decision"] == "none":
            status = "pending"  # the rules have not seen it yet: not a keep
        bucket = {"keep": "kept", "reject": "rejected", "duplicate": "duplicates", "no_face": "no_face",
                  "failed": "failed"}.get(status, "pending")
        setattr(counts, bucket, getattr(counts, bucket) + 1)
        counts.reasons.update(_row_reasons(row))
        if status == "failed":
            counts.failures.update(row["reasons"] or ["failed"])
    images, found = _images_per_label(catalog), _found_per_label(catalog)
    for label in sorted(set(images) | set(found)):
        counts = labels.setdefault(label, LabelCounts())
        counts.images, counts.found = images[label], found[label]
        if images_before is not None:
            counts.new = images[label] - images_before[label]
    return dict(sorted(labels.items()))


# -- progress ---------------------------------------------------------------------------------------------


class _Bars:
    """Bars on the shared Progress, one per stage (one per search for crawl), each with its own rate."""

    def __init__(self, progress: Progress) -> None:
        self.progress = progress
        self.task: TaskID | None = None
        self.unit = ""
        self.t0 = time.perf_counter()
        self.done = 0

    def start(self, description: str, total: int | None, unit: str, completed: int = 0) -> None:
        self.task = self.progress.add_task(description, total=total, completed=completed, rate="")
        self.unit, self.t0, self.done = unit, time.perf_counter(), 0

    def advance(self, n: int) -> None:
        if self.task is None:
            return
        self.done += n
        rate = self.done / max(time.perf_counter() - self.t0, 1e-9)
        self.progress.update(self.task, advance=n, rate=f"{rate:.1f} {self.unit}")

    def complete(self, total: int) -> None:
        """Fill the current bar (a search can end below its limit; export has no steps to count)."""
        if self.task is not None:
            self.progress.update(self.task, total=total, completed=total)


@dataclass
class _Context:
    ws: Workspace
    catalog: Catalog
    opts: RunOptions
    bars: _Bars


# -- the stages -------------------------------------------------------------------------------------------


def _check_terms(ws: Workspace, catalog: Catalog, terms: tuple[str, ...]) -> tuple[str, ...]:
    """``--query`` terms, spelled as tracked; one that is not tracked is an error before anything runs."""
    from facecurate.queries import clean_term, configured_engines, sync_from_files

    if not terms:
        return ()
    wanted = tuple(dict.fromkeys(clean_term(t) for t in terms))
    sync_from_files(ws, catalog, configured_engines(ws.config()))
    tracked = {q.term for q in catalog.tracked_queries()}
    unknown = [t for t in wanted if t not in tracked]
    if unknown:
        raise ConfigError(f"Not a tracked query: {', '.join(repr(t) for t in unknown)} (in {ws.root}). Add it with "
                          f"`facecurate queries add --label LABEL TERM`, or check `facecurate queries list`.")
    return wanted


def _crawl(ctx: _Context) -> StageOutcome:
    from facecurate.crawl import Callbacks, run_crawl

    bars = ctx.bars

    def start(term: str, engine: str, total: int, done: int) -> None:
        bars.start(f"crawl {term[:30]} · {engine}", total, "URLs/s", done)

    reports = run_crawl(ctx.ws, ctx.catalog, [e.strip().lower() for e in ctx.opts.engines] or None,
                        ctx.opts.limit, again=ctx.opts.again, terms=list(ctx.opts.terms) or None,
                        callbacks=Callbacks(start=start, advance=bars.advance,
                                            finish=lambda r: bars.complete(r.counts.get("found", 0))))
    figures = {k: sum(int(r.counts.get(k, 0)) for r in reports) for k in ("found", "new", "duplicate", "failed")}
    figures["searches"] = len(reports)
    if not reports:
        return StageOutcome("crawl", "done", "nothing pending (add terms with `facecurate queries add`, or "
                            "re-run used ones with --again)", figures)
    detail = (f"{len(reports)} searches: {figures['found']} URLs found, {figures['new']} new images, "
              f"{figures['duplicate']} already known, {figures['failed']} failed")
    stopped = [r for r in reports if r.stopped is not None]
    if not stopped:
        return StageOutcome("crawl", "done", detail, figures)
    figures["blocked"] = [f"{r.label}: {r.term} · {r.engine}" for r in stopped]
    error = stopped[0].stopped
    assert error is not None
    more = f" ({len(stopped) - 1} more searches stopped: {', '.join(figures['blocked'][1:])}.)" if len(stopped) > 1 \
        else ""
    return StageOutcome("crawl", "blocked", f"{detail}; {len(stopped)} stopped ({error.kind})", figures,
                        PipelineError(f"{error.describe()}{more}", error.exit_code))


def _dedup(ctx: _Context, *, faces_only: bool = False) -> StageOutcome:
    from facecurate.dedup import DedupOptions, run_dedup

    opts = DedupOptions.from_config(ctx.ws)
    bars = ctx.bars

    def start(phase: str, total: int) -> None:
        if total:  # nothing to hash: no empty bar
            bars.start(f"dedup {phase}", total, "files/s")

    summary = run_dedup(ctx.ws, ctx.catalog, opts, on_start=start, on_progress=bars.advance)
    photos, faces = summary.photos, summary.faces
    figures = {"photos_hashed": photos.hashed, "photo_groups": photos.groups, "photo_duplicates": photos.duplicates,
               "faces_hashed": faces.hashed, "face_groups": faces.groups, "face_duplicates": faces.duplicates,
               "failed": len(photos.failed) + len(faces.failed)}
    detail = (f"{photos.hashed} photos hashed, {photos.duplicates} duplicate photos in {photos.groups} groups"
              + (f"; {faces.hashed} faces hashed, {faces.duplicates} duplicate faces" if opts.faces else ""))
    if faces_only:
        detail = f"after crop: {faces.hashed} new faces hashed, {faces.duplicates} duplicate faces"
    return StageOutcome("dedup", "done", detail, figures)


def _crop(ctx: _Context) -> StageOutcome:
    from facecurate.faces.crop import CropOptions, run_crop

    bars = ctx.bars
    opts = CropOptions.from_config(ctx.ws, device=ctx.opts.device)
    summary = run_crop(ctx.ws, ctx.catalog, opts, on_start=lambda n, dev: bars.start(f"crop ({dev})", n, "img/s"),
                       on_progress=bars.advance)
    figures = {"images": summary.images, "with_face": summary.with_face, "faces": summary.faces,
               "no_face": summary.no_face, "failed": len(summary.failed), "device": summary.device}
    detail = (f"{summary.images} images on {summary.device}: {summary.faces} crops written, "
              f"{summary.no_face} without a face, {len(summary.failed)} failed")
    return StageOutcome("crop", "done", detail, figures)


def _filter(ctx: _Context) -> StageOutcome:
    from facecurate.rules.stage import run_filter

    bars = ctx.bars
    summary = run_filter(ctx.ws, ctx.catalog, on_start=lambda n: bars.start("filter", n, "faces/s"),
                         on_progress=bars.advance)
    figures = {"faces": summary.faces, "measured": summary.measured, "kept": summary.kept,
               "rejected": summary.rejected, "failed": len(summary.failed)}
    # "passed", not "kept": a duplicate face can pass every rule and still stay out of the dataset.
    detail = (f"{summary.faces} faces decided ({summary.measured} measured now): {summary.kept} passed the rules, "
              f"{summary.rejected} rejected")
    return StageOutcome("filter", "done", detail, figures)


def _export(ctx: _Context) -> StageOutcome:
    from facecurate.export import export

    ctx.bars.start("export", None, "")
    result = export(ctx.ws, ctx.catalog, fmt=ctx.opts.fmt, layout=ctx.opts.layout)
    ctx.bars.complete(result.rows)
    figures = {"manifest": str(result.manifest), "rows": result.rows, "layout": ctx.opts.layout,
               "layout_dir": str(result.layout_dir) if result.layout_dir else None,
               "layout_files": result.layout_files}
    detail = f"{result.rows} rows in {result.manifest}"
    if result.layout_dir:
        detail += f"; {ctx.opts.layout}: {result.layout_files} kept crops in {result.layout_dir}"
    return StageOutcome("export", "done", detail, figures)


RUNNERS: dict[str, Callable[[_Context], StageOutcome]] = {
    "crawl": _crawl, "dedup": _dedup, "crop": _crop, "filter": _filter, "export": _export}


def _attempt(name: str, runner: Callable[[_Context], StageOutcome], ctx: _Context) -> StageOutcome:
    """Run one stage; a FacecurateError becomes a ``failed`` outcome (KeyboardInterrupt still stops the run)."""
    try:
        return runner(ctx)
    except FacecurateError as exc:
        return StageOutcome(name, "failed", str(exc), error=exc)


def run_pipeline(ws: Workspace, catalog: Catalog, opts: RunOptions, console: Console,
                 progress_factory: Callable[[], Progress]) -> RunSummary:
    """Run the selected stages in order and return the summary; see the module docstring for failures.

    Bad options and unknown ``terms`` raise ConfigError before any stage starts. A stage failure does not
    raise: it is in the summary (``summary.error`` is the message and exit code for the caller)."""
    check_options(opts)
    if "crawl" in opts.stages:
        opts = replace(opts, terms=_check_terms(ws, catalog, opts.terms))
    images_before = _images_per_label(catalog)
    outcomes: list[StageOutcome] = []
    notes: list[str] = []
    halted: str | None = None
    with progress_factory() as progress:
        ctx = _Context(ws, catalog, opts, _Bars(progress))
        for name in STAGES:
            if name not in opts.stages:
                outcomes.append(StageOutcome(name))
                continue
            if halted is not None:
                outcomes.append(StageOutcome(name, "skipped", f"not run because {halted} failed"))
                continue
            outcome = _attempt(name, RUNNERS[name], ctx)
            outcomes.append(outcome)
            if name == "crop" and outcome.error is None and outcome.figures.get("faces"):
                outcome = _dedup_new_faces(ctx, outcomes) or outcome
            if outcome.error is not None:
                halted = outcome.name if outcome.name in HALTING else None
                then = "the stages after it are skipped" if halted else \
                    "the later stages go on with what the catalog holds"
                console.print(f"[bold red]{outcome.name} {outcome.state}[/]: {then}; the reason follows the summary.",
                              highlight=False)
    crawl = outcomes[0]
    if crawl.state in ("blocked", "failed") and any(o.state == "done" for o in outcomes[1:]):
        held = catalog.conn.execute("SELECT COUNT(*) FROM images").fetchone()[0]
        ran = ", ".join(o.name for o in outcomes[1:] if o.state == "done")
        notes.append(f"The crawl was {crawl.state}, so {ran} ran on what the catalog already holds ({held} images); "
                     f"run `facecurate run` again once the engine answers, and the search resumes where it stopped.")
    if halted is not None:
        skipped = [o.name for o in outcomes if o.state == "skipped"]
        if skipped:
            notes.append(f"Skipped {', '.join(skipped)} after {halted} failed, so no half-processed dataset is "
                         f"exported; fix the cause, then `facecurate run --stages {','.join([halted, *skipped])}`.")
    export = next(o for o in outcomes if o.name == "export")
    manifest = export.figures.get("manifest")
    layout_dir = export.figures.get("layout_dir")
    return RunSummary(outcomes, workspace_counts(ws, catalog, images_before),
                      Path(manifest) if manifest else None, Path(layout_dir) if layout_dir else None, notes)


def _dedup_new_faces(ctx: _Context, outcomes: list[StageOutcome]) -> StageOutcome | None:
    """Second dedup pass right after crop, for the new face crops, merged into the dedup line; returns the
    dedup outcome when that pass failed (so the stages after it are skipped), else None."""
    first = next((o for o in outcomes if o.name == "dedup" and o.state == "done"), None)
    if first is None:
        return None
    second = _attempt("dedup", lambda c: _dedup(c, faces_only=True), ctx)
    if second.error is not None:
        first.state, first.error = "failed", second.error
        first.detail = f"{first.detail}; after crop: {second.detail}"
        return first
    first.detail = f"{first.detail}; {second.detail}"
    for key in ("photos_hashed", "faces_hashed", "failed"):
        second.figures[key] += first.figures.get(key, 0)
    first.figures = second.figures
    return None
