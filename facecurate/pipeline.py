"""``run``: the stages in order — crawl → dedup → crop → filter → export — each resuming where it stopped.

Every stage here is the stage function its own command uses; they are incremental, so a second ``run`` does only
what is new and a killed one goes on from its last committed batch. This module only orders them, decides what a
failure means for the stages after it, and builds one closing summary as plain data (the output layer draws it).

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

Where the heavy work runs is the **executor**'s choice (``--executor``, ``[run] executor``; see
:mod:`facecurate.work`): ``local`` is each stage's own path; ``ray`` runs dedup's fingerprinting, crop and
filter's measuring and crawl's downloads (host by host) on Ray workers, while this process searches, selects,
decides and commits every batch, so the catalog and its state rules are the same either way. Export runs here.

The closing counts come from the manifest's rows (:func:`facecurate.export.manifest_rows`), whose states are the
catalog's state in force, so a resumed run or a ``--stages`` subset reports the whole workspace, not only this
run's delta; only "new images" is this run's own figure.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Literal

from facecurate.catalog import Catalog, State
from facecurate.errors import ConfigError, FacecurateError, PipelineError
from facecurate.events import SILENT, Progress
from facecurate.executors import make_executor
from facecurate.export import ExportOptions, ExportSummary, export, manifest_rows
from facecurate.work import Executor
from facecurate.workspace import Workspace, check_choice

if TYPE_CHECKING:  # the stages are imported when they run: `status` need not load torch and MediaPipe
    from facecurate.crawl import CrawlSummary
    from facecurate.dedup import DedupSummary
    from facecurate.faces.crop import CropOptions, CropSummary
    from facecurate.rules.stage import FilterSummary

StageName = Literal["crawl", "dedup", "crop", "filter", "export"]
STAGES: tuple[StageName, ...] = ("crawl", "dedup", "crop", "filter", "export")
HALTING = frozenset({"dedup", "crop", "filter"})  # a failure here skips the stages after it (module docstring)
NO_LABEL = "(none)"

StageState = Literal["done", "blocked", "failed", "skipped", "not selected"]


@dataclass(frozen=True)
class RunOptions:
    """One ``run``: which stages, and the options of the stages that take any (None: the workspace's setting)."""

    stages: tuple[StageName, ...] = STAGES
    engines: tuple[str, ...] = ()      # empty: [crawl] engines
    terms: tuple[str, ...] = ()        # empty: all pending queries
    limit: int | None = None           # results per (query, engine); None: [crawl] limit
    device: str | None = None          # crop device; None: [crop] device
    fmt: str | None = None             # manifest format; None: [export] format
    layout: str | None = None          # export layout; None: [export] layout (export's default too)
    again: bool = False                # crawl: re-run (query, engine) pairs already used
    executor: str | None = None        # where dedup's hashing, crop and filter run; None: [run] executor


def parse_stages(text: str) -> tuple[StageName, ...]:
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
    parse_stages(",".join(opts.stages))
    if opts.device is not None:
        check_choice("crop", "device", opts.device, "--device")
    if opts.fmt is not None:
        check_choice("export", "format", opts.fmt, "--format")
    if opts.layout is not None:
        check_choice("export", "layout", opts.layout, "--layout")
    if opts.executor is not None:
        check_choice("run", "executor", opts.executor, "--executor")
    if opts.limit is not None and opts.limit < 1:
        raise ConfigError(f"--limit {opts.limit}: use 1 or more results per query and engine.")


# -- outcomes and the closing summary ---------------------------------------------------------------------


@dataclass
class StageOutcome:
    """What one stage did in this run; ``result`` is the summary its own command prints."""

    name: StageName
    state: StageState = "not selected"
    detail: str = ""
    result: CrawlSummary | DedupSummary | CropSummary | FilterSummary | ExportSummary | None = None
    error: str | None = None
    exit_code: int = 0


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
    failed_count: int = 0   # downloads or decodes that failed
    pending: int = 0        # not cropped, or cropped and not filtered yet
    rejected_by_reason: dict[str, int] = field(default_factory=dict)  # every reason that fired, incl. duplicate
    failed_by_reason: dict[str, int] = field(default_factory=dict)    # failed rows by reason (http_404, ...)

    COLUMNS = ("found", "new", "images", "duplicates", "no_face", "rejected", "kept", "failed_count", "pending")

    def add(self, other: LabelCounts) -> None:
        for name in self.COLUMNS:
            setattr(self, name, getattr(self, name) + getattr(other, name))
        self.rejected_by_reason = dict((Counter(self.rejected_by_reason) + Counter(other.rejected_by_reason))
                                       .most_common())
        self.failed_by_reason = dict((Counter(self.failed_by_reason) + Counter(other.failed_by_reason)).most_common())


@dataclass
class RunSummary:
    """The outcome of every stage and the workspace's counts per label."""

    stages: list[StageOutcome]
    labels: dict[str, LabelCounts]
    total: LabelCounts
    manifest: Path | None = None
    layout_dir: Path | None = None
    notes: list[str] = field(default_factory=list)
    ok: bool = True
    error: str | None = None
    exit_code: int = 0

    def stage(self, name: StageName) -> StageOutcome:
        return next(s for s in self.stages if s.name == name)

    def raise_for_error(self) -> None:
        """The run's one error (the first failed stage, the others and the notes after it) as an exception."""
        if self.error is not None:
            raise PipelineError(self.error, self.exit_code)


BUCKET = {State.KEEP: "kept", State.REJECT: "rejected", State.DUPLICATE: "duplicates", State.NO_FACE: "no_face",
          State.FAILED: "failed_count", State.PENDING: "pending"}


def _row_reasons(status: State, reasons: list[str]) -> list[str]:
    """Why a manifest row is not kept: its rules' reasons when rejected, else its status as the reason."""
    if status is State.REJECT:
        return list(reasons) or ["review"]  # rejected by a person, no rule fired
    if status in (State.DUPLICATE, State.NO_FACE):
        return [status.value]
    return []


def workspace_counts(ws: Workspace, catalog: Catalog, images_before: dict[str | None, int] | None = None
                     ) -> dict[str, LabelCounts]:
    """Per-label counts of the whole workspace, from the rows the manifest is made of."""
    labels: dict[str, LabelCounts] = {}
    reasons: dict[str, Counter[str]] = {}
    failures: dict[str, Counter[str]] = {}
    for row in manifest_rows(ws, catalog, ws.exports_dir):
        label = row["label"] or NO_LABEL
        counts = labels.setdefault(label, LabelCounts())
        status = State(row["status"])
        bucket = BUCKET[status]
        setattr(counts, bucket, getattr(counts, bucket) + 1)
        reasons.setdefault(label, Counter()).update(_row_reasons(status, row["reasons"]))
        if status is State.FAILED:
            failures.setdefault(label, Counter()).update(row["reasons"] or ["failed"])
    images, found = catalog.images_per_label(), catalog.found_per_label()
    for key in set(images) | set(found):
        counts = labels.setdefault(key or NO_LABEL, LabelCounts())
        counts.images, counts.found = images.get(key, 0), found.get(key, 0)
        if images_before is not None:
            counts.new = images.get(key, 0) - images_before.get(key, 0)
    for label, counts in labels.items():
        counts.rejected_by_reason = dict(reasons.get(label, Counter()).most_common())
        counts.failed_by_reason = dict(failures.get(label, Counter()).most_common())
    return dict(sorted(labels.items()))


# -- the stages -------------------------------------------------------------------------------------------


@dataclass
class _Context:
    ws: Workspace
    catalog: Catalog
    opts: RunOptions
    progress: Progress
    executor: Executor | None = None   # None: every stage on its own local path


def _crawl(ctx: _Context) -> StageOutcome:
    from facecurate.crawl import run_crawl

    summary = run_crawl(ctx.ws, ctx.catalog, engines=list(ctx.opts.engines) or None, limit=ctx.opts.limit,
                        again=ctx.opts.again, terms=list(ctx.opts.terms) or None, progress=ctx.progress,
                        executor=ctx.executor)
    if not summary.searches:
        return StageOutcome("crawl", "done", "nothing pending (add terms with `facecurate queries add`, or "
                            "re-run used ones with --again)", summary)
    detail = (f"{len(summary.searches)} searches: {summary.found} URLs found, {summary.new} new images, "
              f"{summary.duplicate} already known, {summary.failed_count} failed")
    stopped = [s for s in summary.searches if s.stopped is not None]
    if not stopped:
        return StageOutcome("crawl", "done", detail, summary)
    first = stopped[0].stopped
    assert first is not None
    more = f" ({len(stopped) - 1} more searches stopped: " + ", ".join(
        f"{s.label}: {s.term} · {s.engine}" for s in stopped[1:]) + ".)" if len(stopped) > 1 else ""
    return StageOutcome("crawl", "blocked", f"{detail}; {len(stopped)} stopped ({first.kind})", summary,
                        f"{first.message}{more}", first.exit_code)


def _dedup(ctx: _Context) -> StageOutcome:
    from facecurate.dedup import DedupOptions, run_dedup

    opts = DedupOptions.from_config(ctx.ws)
    summary = run_dedup(ctx.ws, ctx.catalog, opts, progress=ctx.progress, executor=ctx.executor)
    photos, faces = summary.photo_level, summary.face_level
    detail = (f"{photos.hashed} photos hashed, {photos.duplicates} duplicate photos in {photos.group_count} groups"
              + (f"; {faces.hashed} faces hashed, {faces.duplicates} duplicate faces" if opts.faces else ""))
    return StageOutcome("dedup", "done", detail, summary)


def _crop(ctx: _Context) -> StageOutcome:
    from facecurate.faces.crop import CropOptions

    opts = CropOptions.from_config(ctx.ws, device=ctx.opts.device)
    summary = crop_on(ctx.executor, ctx.ws, ctx.catalog, opts, progress=ctx.progress)
    detail = (f"{summary.images} images on {summary.device}: {summary.faces} crops written, "
              f"{summary.no_face} without a face, {len(summary.failed)} failed")
    return StageOutcome("crop", "done", detail, summary)


def _filter(ctx: _Context) -> StageOutcome:
    summary = filter_on(ctx.executor, ctx.ws, ctx.catalog, progress=ctx.progress)
    # "passed", not "kept": a duplicate face can pass every rule and still stay out of the dataset.
    detail = (f"{summary.faces} faces decided ({summary.measured} measured now): {summary.passed} passed the rules, "
              f"{summary.rejected} rejected")
    return StageOutcome("filter", "done", detail, summary)


def _export(ctx: _Context) -> StageOutcome:
    opts = ExportOptions.from_config(ctx.ws, format=ctx.opts.fmt, layout=ctx.opts.layout)
    summary = export(ctx.ws, ctx.catalog, opts, progress=ctx.progress)
    detail = f"{summary.rows} rows in {summary.manifest}"
    if summary.layout_dir:
        detail += f"; {summary.layout}: {summary.layout_files} kept crops in {summary.layout_dir}"
    return StageOutcome("export", "done", detail, summary)


RUNNERS: dict[StageName, Callable[[_Context], StageOutcome]] = {
    "crawl": _crawl, "dedup": _dedup, "crop": _crop, "filter": _filter, "export": _export}


def _attempt(name: StageName, runner: Callable[[_Context], StageOutcome], ctx: _Context) -> StageOutcome:
    """Run one stage; a FacecurateError becomes a ``failed`` outcome (KeyboardInterrupt still stops the run)."""
    try:
        return runner(ctx)
    except FacecurateError as exc:
        return StageOutcome(name, "failed", str(exc), error=str(exc), exit_code=exc.exit_code)


@contextmanager
def stage_executor(ws: Workspace, name: str | None, progress: Progress = SILENT) -> Iterator[Executor | None]:
    """The executor one stage command runs on (``--executor``; None: ``[run] executor``), closed afterwards;
    None when it is ``local``, whose stages keep their own threads and processes. Ray missing: ConfigError
    here, before the stage starts; a Ray cluster starts only when the stage has work for it."""
    executor = make_executor(ws, name, progress)
    try:
        yield None if executor.is_local else executor
    finally:
        executor.close()


def crop_on(executor: Executor | None, ws: Workspace, catalog: Catalog, opts: CropOptions, *, redo: bool = False,
            progress: Progress = SILENT) -> CropSummary:
    """The crop stage on ``executor`` (None or local: crop's own workers); ``run`` and ``crop`` both choose here."""
    if executor is not None and not executor.is_local:
        from facecurate.faces.crop_work import run_crop_with

        return run_crop_with(executor, ws, catalog, opts, redo=redo, progress=progress)
    from facecurate.faces.crop import run_crop

    return run_crop(ws, catalog, opts, redo=redo, progress=progress)


def filter_on(executor: Executor | None, ws: Workspace, catalog: Catalog, *, rules: str | None = None,
              redo: bool = False, progress: Progress = SILENT) -> FilterSummary:
    """The filter stage on ``executor``, as :func:`crop_on`."""
    if executor is not None and not executor.is_local:
        from facecurate.rules.filter_work import run_filter_with

        return run_filter_with(executor, ws, catalog, rules=rules, redo=redo, progress=progress)
    from facecurate.rules.stage import run_filter

    return run_filter(ws, catalog, rules=rules, redo=redo, progress=progress)


def run_pipeline(ws: Workspace, catalog: Catalog, opts: RunOptions, progress: Progress = SILENT) -> RunSummary:
    """Run the selected stages in order and return the summary; see the module docstring for failures.

    Bad options, unknown ``terms`` and ``--executor ray`` without Ray installed raise ConfigError before any
    stage starts. A stage failure does not
    raise: it is in the summary (``summary.error`` and ``exit_code``; :meth:`RunSummary.raise_for_error`)."""
    check_options(opts)
    if "crawl" in opts.stages and opts.terms:
        from facecurate.crawl import check_terms

        opts = replace(opts, terms=tuple(check_terms(ws, catalog, list(opts.terms))))
    images_before = catalog.images_per_label()
    heavy = {"crawl", "dedup", "crop", "filter"} & set(opts.stages)
    executor = make_executor(ws, opts.executor, progress) if heavy else None  # Ray missing: refused here
    try:
        return _run_stages(ws, catalog, opts, progress, executor, images_before)
    finally:
        if executor is not None:
            executor.close()


def _run_stages(ws: Workspace, catalog: Catalog, opts: RunOptions, progress: Progress, executor: Executor | None,
                images_before: dict[str | None, int]) -> RunSummary:
    outcomes: list[StageOutcome] = []
    halted: str | None = None
    ctx = _Context(ws, catalog, opts, progress, executor)
    for name in STAGES:
        if name not in opts.stages:
            outcomes.append(StageOutcome(name))
            continue
        if halted is not None:
            outcomes.append(StageOutcome(name, "skipped", f"not run because {halted} failed"))
            continue
        outcome = _attempt(name, RUNNERS[name], ctx)
        outcomes.append(outcome)
        if name == "crop" and outcome.error is None and _wrote_faces(outcome):
            outcome = _dedup_new_faces(ctx, outcomes) or outcome
        if outcome.error is not None:
            halted = outcome.name if outcome.name in HALTING else None
            then = "the stages after it are skipped" if halted else \
                "the later stages go on with what the catalog holds"
            progress.note(f"{outcome.name} {outcome.state}: {then}; the reason follows the summary.")
    return _summary(ws, catalog, outcomes, halted, images_before)


def _wrote_faces(crop: StageOutcome) -> bool:
    from facecurate.faces.crop import CropSummary

    return isinstance(crop.result, CropSummary) and crop.result.faces > 0


def _summary(ws: Workspace, catalog: Catalog, outcomes: list[StageOutcome], halted: str | None,
             images_before: dict[str | None, int]) -> RunSummary:
    notes: list[str] = []
    crawl = outcomes[0]
    if crawl.state in ("blocked", "failed") and any(o.state == "done" for o in outcomes[1:]):
        ran = ", ".join(o.name for o in outcomes[1:] if o.state == "done")
        notes.append(f"The crawl was {crawl.state}, so {ran} ran on what the catalog already holds "
                     f"({catalog.image_count()} images); run `facecurate run` again once the engine answers, and "
                     f"the search resumes where it stopped.")
    if halted is not None:
        skipped = [o.name for o in outcomes if o.state == "skipped"]
        if skipped:
            notes.append(f"Skipped {', '.join(skipped)} after {halted} failed, so no half-processed dataset is "
                         f"exported; fix the cause, then `facecurate run --stages {','.join([halted, *skipped])}`.")
    labels = workspace_counts(ws, catalog, images_before)
    total = LabelCounts()
    for counts in labels.values():
        total.add(counts)
    exported = next(o for o in outcomes if o.name == "export").result
    summary = RunSummary(outcomes, labels, total, notes=notes)
    if isinstance(exported, ExportSummary):
        summary.manifest, summary.layout_dir = exported.manifest, exported.layout_dir
    failed = [o for o in outcomes if o.error is not None]
    if failed:
        first = failed[0]
        message = f"{first.name} {first.state}: {first.error}"
        if len(failed) > 1:
            message += " Also " + "; ".join(f"{o.name} {o.state}: {o.error}" for o in failed[1:])
        summary.ok, summary.error, summary.exit_code = False, " ".join([message, *notes]), first.exit_code
    return summary


def _dedup_new_faces(ctx: _Context, outcomes: list[StageOutcome]) -> StageOutcome | None:
    """Second dedup pass right after crop, for the new face crops, merged into the dedup line; returns the
    dedup outcome when that pass failed (so the stages after it are skipped), else None."""
    first = next((o for o in outcomes if o.name == "dedup" and o.state == "done"), None)
    if first is None:
        return None
    second = _attempt("dedup", _dedup, ctx)
    if second.error is not None:
        first.state, first.error, first.exit_code = "failed", second.error, second.exit_code
        first.detail = f"{first.detail}; after crop: {second.detail}"
        return first
    from facecurate.dedup import DedupSummary

    before, after = first.result, second.result
    assert isinstance(before, DedupSummary) and isinstance(after, DedupSummary)
    first.detail = (f"{first.detail}; after crop: {after.face_level.hashed} new faces hashed, "
                    f"{after.face_level.duplicates} duplicate faces")
    for old, new in ((before.photo_level, after.photo_level), (before.face_level, after.face_level)):  # both passes
        new.hashed += old.hashed
        new.failed = list(dict.fromkeys([*old.failed, *new.failed]))
    first.result = after
    return None
