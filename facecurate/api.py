"""The Python API: every command of the CLI as a method, for notebooks and scripts.

::

    import facecurate

    with facecurate.init("faces") as project:          # or facecurate.open("faces")
        project.add_queries("makeup", ["red lipstick portrait", "smoky eye makeup"])
        summary = project.run(engines=["bing"], limit=200, progress=True)
        kept = summary.total.kept                      # the figures `run` prints, as a record
        frame = project.manifest_frame()               # pandas, one row per face / photo / failed source

Each method returns the summary record the matching command prints (and prints as ``--json``): the CLI is a
thin layer over this class. Settings come from the workspace's ``facecurate.toml``; keyword arguments override
them for one call, as command-line options do.
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Any

from facecurate import media
from facecurate.catalog import Catalog, Decision, StatusReport
from facecurate.events import SILENT, Progress
from facecurate.workspace import Workspace, find_workspace, init_workspace

if TYPE_CHECKING:
    import pandas
    import pyarrow

    from facecurate.calibrate import Calibration
    from facecurate.crawl import CrawlSummary, QueryListing
    from facecurate.crawl.check import CheckReport, Replayed
    from facecurate.dedup import DedupSummary
    from facecurate.export import ExportSummary
    from facecurate.faces.crop import CropSummary
    from facecurate.ingest import ImportSummary
    from facecurate.pipeline import RunSummary
    from facecurate.review.calibration import CalibrationQueue, DisagreementReport
    from facecurate.review.report import HtmlReport
    from facecurate.rules.stage import FilterSummary


def open(path: str | Path | None = None) -> Project:
    """Open an existing workspace (None: $FACECURATE_WORKSPACE, else the current folder or a parent)."""
    return Project(find_workspace(Path(path) if path is not None else None))


def init(path: str | Path) -> Project:
    """Create a workspace (or complete one; an existing facecurate.toml is kept) and open it."""
    return Project(init_workspace(Path(path)))


@contextmanager
def _progress(progress: Progress | bool) -> Iterator[Progress]:
    """``True``: terminal bars for the length of one call; a sink: itself; nothing: silence."""
    if progress is True:
        from facecurate.output import Bars  # only a caller that asks for bars pays for Rich

        with Bars() as bars:
            yield bars
    else:
        yield progress or SILENT


class Project:
    """A facecurate workspace opened from Python: its settings, its catalog and every stage.

    Use it as a context manager (or call :meth:`close`): it holds the catalog connection. ``progress`` on the
    long methods takes a :class:`facecurate.events.Progress` sink, ``True`` for terminal bars, or nothing."""

    def __init__(self, workspace: Workspace) -> None:
        # Settings and catalog are checked before anything is touched: a bad facecurate.toml or a damaged
        # facecurate.db stops every command here, before a stage starts or a file changes (only init creates).
        workspace.config()
        self.workspace = workspace
        self.catalog = Catalog.open(workspace.catalog_path)
        try:
            workspace.tmp_dir.mkdir(exist_ok=True)
            media.remove_stale_parts(workspace.tmp_dir)
        except BaseException:
            self.catalog.close()
            raise

    @property
    def root(self) -> Path:
        return self.workspace.root

    def close(self) -> None:
        self.catalog.close()

    def __enter__(self) -> Project:
        return self

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"facecurate.Project({str(self.root)!r})"

    def settings(self) -> dict[str, dict[str, Any]]:
        """Every setting in force: the defaults overlaid with facecurate.toml."""
        return self.workspace.config().as_dict()

    # -- queries ------------------------------------------------------------------------------------------

    def add_queries(self, label: str, terms: Sequence[str]) -> tuple[list[str], list[str]]:
        """Track search terms under a label (mirrored in queries/<label>.txt); returns (added, already tracked)."""
        from facecurate.crawl.queries import add_terms

        return add_terms(self.workspace, self.catalog, label, list(terms))

    def remove_queries(self, label: str, terms: Sequence[str]) -> tuple[list[str], list[str]]:
        """Stop tracking terms (what they crawled stays); returns (removed, not tracked)."""
        from facecurate.crawl.queries import remove_terms

        return remove_terms(self.workspace, self.catalog, label, list(terms))

    def queries(self, label: str | None = None, engines: Sequence[str] | None = None) -> QueryListing:
        """Pending vs used, per engine, for every tracked term (a pure read)."""
        from facecurate.crawl.queries import list_queries

        return list_queries(self.workspace, self.catalog, label, list(engines) if engines else None)

    # -- engines ------------------------------------------------------------------------------------------

    def check_engines(self, engines: Sequence[str] | None = None, term: str | None = None) -> CheckReport:
        """One real search and one download per engine (default: all), so a changed engine shows before a run."""
        from facecurate.crawl.check import CHECK_TERM, check_engines

        return check_engines(self.workspace, list(engines) if engines else None, term or CHECK_TERM)

    @staticmethod
    def replay_page(page: str | Path, engine: str) -> Replayed:
        """An engine's parser run on a saved page (no network): what it finds, or why it finds nothing."""
        from facecurate.crawl.check import replay

        return replay(Path(page), engine)

    # -- stages -------------------------------------------------------------------------------------------

    def crawl(self, *, engines: Sequence[str] | None = None, limit: int | None = None, label: str | None = None,
              again: bool = False, dry_run: bool = False, executor: str | None = None,
              progress: Progress | bool = False) -> CrawlSummary:
        """Run the pending (term, engine) searches and download what they find."""
        from facecurate.crawl import run_crawl
        from facecurate.pipeline import stage_executor

        with _progress(progress) as sink, stage_executor(self.workspace, executor, sink) as on:
            return run_crawl(self.workspace, self.catalog, engines=list(engines) if engines else None, limit=limit,
                             label=label, again=again, dry_run=dry_run, progress=sink, executor=on)

    def import_paths(self, paths: Sequence[str | Path], label: str | None = None, *,
                     progress: Progress | bool = False) -> ImportSummary:
        """Bring local images (folders searched recursively, or files) into the workspace."""
        from facecurate.ingest import import_paths

        with _progress(progress) as sink:
            return import_paths(self.workspace, self.catalog, [Path(p) for p in paths], label, progress=sink)

    def dedup(self, *, threshold: int | None = None, faces: bool | None = None, dry_run: bool = False,
              redo: bool = False, executor: str | None = None, progress: Progress | bool = False) -> DedupSummary:
        """Group exact and near-duplicate photos (and aligned faces); marks, never deletes."""
        from facecurate.dedup import DedupOptions, run_dedup
        from facecurate.pipeline import stage_executor

        opts = DedupOptions.from_config(self.workspace, threshold=threshold, faces=faces)
        with _progress(progress) as sink, stage_executor(self.workspace, executor, sink) as on:
            return run_dedup(self.workspace, self.catalog, opts, dry_run=dry_run, redo=redo, progress=sink,
                             executor=on)

    def crop(self, *, size: int | None = None, device: str | None = None, batch_size: int | None = None,
             all_faces: bool | None = None, redo: bool = False, workers: int | None = None,
             executor: str | None = None, progress: Progress | bool = False) -> CropSummary:
        """Detect faces (batched MTCNN) and write FFHQ-aligned crops (``workers``: see the crop.workers setting;
        ``executor``: local or ray, None: [run] executor)."""
        from facecurate.faces.crop import CropOptions
        from facecurate.pipeline import crop_on, stage_executor

        opts = CropOptions.from_config(self.workspace, size=size, device=device, batch_size=batch_size,
                                       all_faces=all_faces, workers=workers)
        with _progress(progress) as sink, stage_executor(self.workspace, executor, sink) as on:
            return crop_on(on, self.workspace, self.catalog, opts, redo=redo, progress=sink)

    def filter(self, *, rules: str | None = None, redo: bool = False, executor: str | None = None,
               progress: Progress | bool = False) -> FilterSummary:
        """Measure what the rules need and decide every face (scores, reasons)."""
        from facecurate.pipeline import filter_on, stage_executor

        with _progress(progress) as sink, stage_executor(self.workspace, executor, sink) as on:
            return filter_on(on, self.workspace, self.catalog, rules=rules, redo=redo, progress=sink)

    def export(self, *, fmt: str | None = None, layout: str | None = None, licenses: str | None = None,
               out_dir: str | Path | None = None) -> ExportSummary:
        """Write the manifest, the dataset card and, with ``layout``, the kept crops as a dataset (in
        exports/LAYOUT/ unless ``out_dir``); ``licenses`` (``"cc0,pd,cc-by"``) keeps other licence families out."""
        from facecurate.export import export

        return export(self.workspace, self.catalog, fmt=fmt, layout=layout, licenses=licenses,
                      out_dir=Path(out_dir) if out_dir is not None else None)

    def run(self, *, stages: Sequence[str] | None = None, engines: Sequence[str] | None = None,
            terms: Sequence[str] | None = None, limit: int | None = None, device: str | None = None,
            fmt: str | None = None, layout: str | None = None, again: bool = False, executor: str | None = None,
            progress: Progress | bool = False) -> RunSummary:
        """The whole pipeline (crawl, dedup, crop, filter, export), each stage resuming where it stopped.

        ``executor``: ``local`` or ``ray`` (None: ``[run] executor``). A stage failure does not raise: see
        ``summary.ok``/``summary.error``, or call ``summary.raise_for_error()``."""
        from facecurate.pipeline import STAGES, RunOptions, parse_stages, run_pipeline

        opts = RunOptions(stages=parse_stages(",".join(stages or STAGES)), engines=tuple(engines or ()),
                          terms=tuple(terms or ()), limit=limit, device=device, fmt=fmt, layout=layout, again=again,
                          executor=executor)
        with _progress(progress) as sink:
            return run_pipeline(self.workspace, self.catalog, opts, sink)

    def review(self, sample_ids: Sequence[str], decision: Decision | str, *, reviewer: str | None = None
               ) -> list[str]:
        """A person's decision (``kept`` or ``rejected``) on faces named by their manifest sample_id, appended to
        the review log as the gallery's key presses are; it overrides the rules in every reader. Returns the
        sample_ids that name no face here (photos without a face, typos)."""
        from facecurate.review.decisions import decide, reviewer_name
        from facecurate.review.items import Target

        targets, unknown = [], []
        for sample_id in dict.fromkeys(sample_ids):
            sha, _, index = sample_id.partition("_")
            face = self.catalog.face_by_sample(sha, int(index)) if sha and index.isdigit() else None
            if face is None:
                unknown.append(sample_id)
            else:
                targets.append(Target(f"f{face.id}", face.image_id, face.face_index))
        who = reviewer or reviewer_name(self.workspace.config())
        decide(self.catalog, targets, decision, who, session=f"api-{os.getpid()}")
        return unknown

    def calibrate(self, *, rules: str | None = None, label: str | None = None,
                  target_precision: float | None = None, apply: bool = False) -> Calibration:
        """The rules against the review decisions: agreement now, the threshold that fits best, and how many
        faces it would change; ``apply`` writes the trusted suggestions to facecurate.toml (dated backup) and
        decides every face again from its stored measures."""
        from facecurate.calibrate import calibrate

        return calibrate(self.workspace, self.catalog, rules=rules, label=label, target_precision=target_precision,
                         apply=apply)

    def calibration_queue(self, n: int) -> CalibrationQueue:
        """The ``n`` undecided faces a decision would teach the most about the thresholds (``review --calibrate``)."""
        from facecurate.review.calibration import calibration_queue

        return calibration_queue(self.catalog, self.workspace.config(), n)

    def disagreements(self) -> DisagreementReport:
        """Faces a person decided against the rules, by rule, each measure beside its threshold."""
        from facecurate.review.calibration import disagreements

        return disagreements(self.catalog, self.workspace.config())

    # -- reading ------------------------------------------------------------------------------------------

    def report(self, out: str | Path | None = None, *, limit: int | None = None) -> HtmlReport:
        """Write the self-contained HTML report (charts of what was rejected and why, a contact sheet per
        reason) to ``out``, default ``[review] report_file`` in the workspace; ``limit`` thumbnails per reason
        (default ``[review] report_limit``, 0 = all)."""
        from facecurate.calibrate import calibrate
        from facecurate.review.report import write_html

        cfg = self.workspace.config()
        path = Path(out) if out is not None else self.root / str(cfg.get("review", "report_file"))
        fits = calibrate(self.workspace, self.catalog).rules  # the calibration table, and its lines on the charts
        return write_html(self.workspace, self.catalog, path,
                          int(cfg.get("review", "report_limit")) if limit is None else limit, fits)

    def status(self) -> StatusReport:
        """Counts per stage, per state in force, per reason and per label."""
        return self.catalog.counts()

    def manifest(self) -> list[dict[str, Any]]:
        """Every manifest row (faces, photos without one, failed sources), as ``export`` would write them now;
        ``file_name`` is relative to the workspace."""
        from facecurate.export import ExportOptions, manifest_rows

        opts = ExportOptions.from_config(self.workspace)
        return manifest_rows(self.workspace, self.catalog, self.root, seed=opts.seed, val_fraction=opts.val_fraction,
                             min_val=opts.min_val)

    def manifest_table(self) -> pyarrow.Table:
        """The manifest as a pyarrow Table with the Parquet manifest's schema."""
        from facecurate.export import arrow_table

        return arrow_table(self.manifest())

    def manifest_frame(self) -> pandas.DataFrame:
        """The manifest as a pandas DataFrame (nullable integer columns stay integers)."""
        import pandas as pd

        frame: pandas.DataFrame = self.manifest_table().to_pandas(types_mapper=pd.ArrowDtype)
        return frame
