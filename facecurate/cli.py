"""Typer app: one thin command per verb over :class:`facecurate.api.Project`. This file parses arguments, picks the
view or ``--json`` of the summary the API returns (both from :mod:`facecurate.output`), and turns FacecurateError
into a message and an exit code."""

from __future__ import annotations

import functools
import gc
import os
import signal
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, ParamSpec, TypeVar

import typer

from facecurate import __version__, output
from facecurate.api import Project
from facecurate.errors import FacecurateError, PipelineError
from facecurate.workspace import check_choice, check_value, find_workspace, init_workspace

if TYPE_CHECKING:
    from facecurate.review.report import HtmlReport

app = typer.Typer(help="Turn keyword image searches and local folders into a clean, aligned face dataset.",
                  no_args_is_help=True, pretty_exceptions_enable=False, add_completion=False)
queries_app = typer.Typer(help="Tracked search terms with a label: pending vs used per engine.",
                          no_args_is_help=True)
app.add_typer(queries_app, name="queries")
engines_app = typer.Typer(help="Search engines: check that they answer today, replay a saved page.",
                          no_args_is_help=True)
app.add_typer(engines_app, name="engines")

STATE = {"debug": False}
P = ParamSpec("P")
R = TypeVar("R")
STAGE_NAMES = "crawl, dedup, crop, filter, export"

WorkspaceOpt = Annotated[Path | None, typer.Option(
    "--workspace", "-w", help="Workspace folder (default: $FACECURATE_WORKSPACE, else the current folder).",
    show_default=False)]
JsonOpt = Annotated[bool, typer.Option("--json", help="Print the figures as JSON for scripts.")]
DeviceOpt = Annotated[str | None, typer.Option(help="auto | cpu | cuda (default: crop.device).")]
ExecutorOpt = Annotated[str | None, typer.Option(help="local | ray: where the stage's heavy work runs (default: "
                                                      "run.executor; ray needs `uv sync --extra ray`).")]
LabelOpt = Annotated[str | None, typer.Option("--label", "-l", help="Label (domain) of the terms, e.g. makeup.")]


def reports_errors(fn: Callable[P, R]) -> Callable[P, R]:
    """FacecurateError becomes a one-paragraph message and its exit code (a traceback only with --debug)."""

    @functools.wraps(fn)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
        try:
            return fn(*args, **kwargs)
        except FacecurateError as exc:
            if STATE["debug"] or os.environ.get("FACECURATE_DEBUG"):
                output.err_console.print_exception()
            output.error(f"facecurate {fn.__name__.rstrip('_').replace('_', ' ')}: error", str(exc))
            raise typer.Exit(exc.exit_code) from None
        except KeyboardInterrupt:
            output.interrupted()
            raise typer.Exit(130) from None

    return wrapper


@contextmanager
def project(path: Path | None) -> Iterator[Project]:
    with Project(find_workspace(path)) as opened:
        yield opened


def device_choice(value: str | None) -> str | None:
    """``--device`` checked against the one list of devices (the crop.device setting's choices)."""
    return None if value is None else check_choice("crop", "device", value, "--device")


def _version(value: bool) -> None:
    if value:
        print(f"facecurate {__version__}")
        raise typer.Exit()


@app.callback()
def _root(debug: Annotated[bool, typer.Option("--debug", help="Show tracebacks on errors.")] = False,
          version: Annotated[bool, typer.Option("--version", callback=_version, is_eager=True,
                                                help="Print the version.")] = False) -> None:
    STATE["debug"] = debug


@app.command()
@reports_errors
def init(directory: Annotated[Path, typer.Argument(help="Folder to create the workspace in.")] = Path(".")) -> None:
    """Create a workspace: facecurate.toml (every default documented), queries/ and the catalog."""
    ws = init_workspace(directory)
    output.say(("Workspace ready", "green"), f" at {ws.root}")
    output.say(f"  settings: {ws.config_path.name}  catalog: {ws.catalog_path.name}  queries: queries/")


@app.command("import")
@reports_errors
def import_(paths: Annotated[list[Path], typer.Argument(help="Folders (searched recursively) or image files.")],
            label: Annotated[str | None, typer.Option(help="Label (domain) for these images, e.g. makeup.")] = None,
            workspace: WorkspaceOpt = None, as_json: JsonOpt = False) -> None:
    """Bring local images (photos, generated faces) into the workspace, content-addressed."""
    with project(workspace) as p, output.bars() as bars:
        summary = p.import_paths(paths, label, progress=bars)
    output.print_json(summary) if as_json else output.show(output.import_view(summary))


@queries_app.command("add")
@reports_errors
def queries_add(terms: Annotated[list[str] | None, typer.Argument(help="Search terms (quote multi-word ones).")] = None,
                label: Annotated[str, typer.Option("--label", "-l", help="Label (domain), e.g. makeup.")] = "default",
                file: Annotated[Path | None, typer.Option("--file", "-f", help="Keyword list: one term a line, "
                                                          "# comments.")] = None,
                workspace: WorkspaceOpt = None) -> None:
    """Add search terms with a label (arguments and/or --file); mirrored in queries/<label>.txt."""
    from facecurate.crawl.queries import read_terms_file

    wanted = [*(read_terms_file(file) if file else []), *(terms or [])]
    if not wanted:
        raise typer.BadParameter("give terms as arguments or --file FILE", param_hint="TERMS")
    with project(workspace) as p:
        added, known = p.add_queries(label, wanted)
        mirror = p.workspace.queries_dir / f"{label}.txt"
    output.say((f"{len(added)} added", "green"), f", {len(known)} already tracked, label ", (label, "bold"),
               f": pending terms in {mirror}")


@queries_app.command("list")
@reports_errors
def queries_list(label: LabelOpt = None,
                 engine: Annotated[list[str] | None, typer.Option("--engine", "-e", help="Engines to show "
                                                                  "(default: crawl.engines + any that ran).")] = None,
                 workspace: WorkspaceOpt = None, as_json: JsonOpt = False) -> None:
    """Pending vs used terms, per engine, with counts and dates (reads only: edits to queries/*.txt show here
    and are taken up by the next add, remove or crawl)."""
    with project(workspace) as p:
        listing = p.queries(label, engine)
    output.print_json(listing) if as_json else output.show(output.queries_view(listing))


@queries_app.command("remove")
@reports_errors
def queries_remove(terms: Annotated[list[str], typer.Argument(help="Terms to stop tracking.")],
                   label: Annotated[str, typer.Option("--label", "-l", help="Their label.")] = "default",
                   workspace: WorkspaceOpt = None) -> None:
    """Stop tracking search terms (images already crawled stay, with their provenance)."""
    with project(workspace) as p:
        removed, unknown = p.remove_queries(label, terms)
    output.say(f"{len(removed)} removed" + (f"; not tracked under {label}: {', '.join(unknown)}" if unknown else ""))


@engines_app.command("check")
@reports_errors
def engines_check(engine: Annotated[list[str] | None, typer.Option("--engine", "-e", help="Engine to check; "
                                                                   "repeatable (default: every engine).")] = None,
                  term: Annotated[str | None, typer.Option(help="Term searched (default: portrait).")] = None,
                  workspace: WorkspaceOpt = None, as_json: JsonOpt = False) -> None:
    """One real search per engine: reached, blocked, parsed N results, first result downloadable.

    Exits 1 if any checked engine fails; the page of a failed check is saved under crawl_pages/."""
    with project(workspace) as p:
        report = p.check_engines([e.strip().lower() for e in engine] if engine else None, term)
    output.print_json(report) if as_json else output.show(output.engines_check_view(report))
    if not report.ok:
        raise typer.Exit(1)


@engines_app.command("replay")
@reports_errors
def engines_replay(page: Annotated[Path, typer.Argument(help="A page saved under crawl_pages/ (or a fixture).")],
                   engine: Annotated[str, typer.Option("--engine", "-e", help="Engine whose parser reads it.")],
                   as_json: JsonOpt = False) -> None:
    """Run an engine's parser on a saved page and print what it finds (no network); see docs/engines.md."""
    found = Project.replay_page(page, engine)
    output.print_json(found) if as_json else output.show(output.replay_view(found))


@app.command()
@reports_errors
def crawl(engine: Annotated[list[str] | None, typer.Option("--engine", "-e", help="bing | duckduckgo | google | "
                                                           "google-browser | naver | wikimedia; repeatable "
                                                           "(default: crawl.engines).")]
          = None,
          limit: Annotated[int | None, typer.Option(help="Results per (query, engine) (default: crawl.limit).",
                                                    min=1)] = None,
          label: LabelOpt = None,
          again: Annotated[bool, typer.Option("--again", help="Re-run pairs already used.")] = False,
          dry_run: Annotated[bool, typer.Option("--dry-run", help="Search only and list the URLs.")] = False,
          executor: ExecutorOpt = None, workspace: WorkspaceOpt = None, as_json: JsonOpt = False) -> None:
    """Run pending (query, engine) pairs, download images, record provenance; marks them used."""
    with project(workspace) as p:
        if not p.settings()["crawl"]["contact"]:
            output.warning("[crawl] contact is empty in facecurate.toml: image hosts (and Wikimedia, which asks "
                           "for one) see no way to reach you. Set it to an e-mail or URL.")
        with output.bars() as bars:
            summary = p.crawl(engines=[e.strip().lower() for e in engine] if engine else None, limit=limit,
                              label=label, again=again, dry_run=dry_run, executor=executor, progress=bars)
    output.print_json(summary) if as_json else output.show(output.crawl_view(summary))
    stopped = [s.stopped for s in summary.searches if s.stopped is not None]
    if stopped:  # never "0 images, done": exit 3 with the saved page and the fix
        more = f" ({len(stopped) - 1} more searches stopped; see the table.)" if len(stopped) > 1 else ""
        raise PipelineError(stopped[0].message + more, stopped[0].exit_code)


@app.command()
@reports_errors
def dedup(threshold: Annotated[int | None, typer.Option(
              help="Hash bits (of 64) for a near-duplicate photo (default: dedup.threshold).")] = None,
          faces: Annotated[bool | None, typer.Option(
              "--faces/--no-faces", help="Also group the aligned face crops (default: dedup.faces).")] = None,
          dry_run: Annotated[bool, typer.Option(
              "--dry-run", help="Print the groups; write nothing (not even the hash cache).")] = False,
          redo: Annotated[bool, typer.Option(help="Re-hash every file instead of using the cache.")] = False,
          show: Annotated[int, typer.Option(help="Groups to list (largest first); 0 lists none.")] = 20,
          executor: ExecutorOpt = None, workspace: WorkspaceOpt = None, as_json: JsonOpt = False) -> None:
    """Exact and near-duplicate groups (mirror- and crop-aware), keeper by quality; marks, never deletes."""
    with project(workspace) as p, output.bars() as bars:
        summary = p.dedup(threshold=threshold, faces=faces, dry_run=dry_run, redo=redo, executor=executor,
                          progress=bars)
    output.print_json(summary) if as_json else output.show(output.dedup_view(summary, show))


@app.command()
@reports_errors
def crop(size: Annotated[int | None, typer.Option(help="Side of the aligned crop (default: crop.size).")] = None,
         device: DeviceOpt = None,
         batch_size: Annotated[int | None, typer.Option(help="Images per MTCNN batch.")] = None,
         all_faces: Annotated[bool | None, typer.Option("--all-faces/--largest-face",
                                                           help="Crop every confident face.")] = None,
         redo: Annotated[bool, typer.Option(help="Re-detect and re-crop every image.")] = False,
         workers: Annotated[int | None, typer.Option(
             help="Worker processes that crop batches; 0 = automatic (default: crop.workers).")] = None,
         executor: ExecutorOpt = None, workspace: WorkspaceOpt = None, as_json: JsonOpt = False) -> None:
    """Detect faces (batched MTCNN, GPU when present) and write FFHQ-aligned crops."""
    device = device_choice(device)
    with project(workspace) as p, output.bars() as bars:
        summary = p.crop(size=size, device=device, batch_size=batch_size, all_faces=all_faces, redo=redo,
                         workers=workers, executor=executor, progress=bars)
        size = size or p.settings()["crop"]["size"]
    output.print_json(summary) if as_json else output.show(output.crop_view(summary, int(size or 0)))


@app.command("filter")
@reports_errors
def filter_(rules: Annotated[str | None, typer.Option(help="Comma list of rules to measure now.")] = None,
            explain: Annotated[str | None, typer.Option(help="Show every score of one face (a sample_id).")] = None,
            redo: Annotated[bool, typer.Option(help="Recompute every measure, not only the missing ones.")] = False,
            executor: ExecutorOpt = None, workspace: WorkspaceOpt = None, as_json: JsonOpt = False) -> None:
    """Apply the rejection rules: every score for every face, reasons, keep/reject."""
    with project(workspace) as p:
        if explain:
            from facecurate.rules.stage import explain as explain_face

            rows = explain_face(p.workspace, p.catalog, explain)
            output.print_json(rows) if as_json else output.show(output.explain_view(explain, rows))
            return
        with output.bars() as bars:
            summary = p.filter(rules=rules, redo=redo, executor=executor, progress=bars)
    output.print_json(summary) if as_json else output.show(output.filter_view(summary))


@app.command()
@reports_errors
def export(fmt: Annotated[str | None, typer.Option("--format", help="jsonl | csv | parquet "
                                                   "(default: export.format).")] = None,
           out: Annotated[Path | None, typer.Option(help="Output folder (default: WORKSPACE/exports/LAYOUT, or "
                                                         "WORKSPACE/exports for --layout none).")] = None,
           layout: Annotated[str | None, typer.Option(help="imagefolder (HF: train/ val/ + metadata.parquet) | "
                                                           "per-label (train/LABEL/ and val/LABEL/, StarGAN v2 "
                                                           "domains) | cyclegan (trainA/ trainB/ testA/ testB/, "
                                                           "two labels) | none (default: export.layout).")] = None,
           license_: Annotated[str | None, typer.Option("--license", help="Licence families the dataset carries, "
                                                        "e.g. cc0,pd,cc-by,cc-by-sa (unknown: none recorded) "
                                                        "(default: export.licenses, all).")] = None,
           workspace: WorkspaceOpt = None, as_json: JsonOpt = False) -> None:
    """Write the manifest (every face and image, whatever its status), a dataset card and the dataset layout."""
    with project(workspace) as p:
        summary = p.export(fmt=fmt, layout=layout, licenses=license_, out_dir=out)
    output.print_json(summary) if as_json else output.show(output.export_view(summary))


@app.command()
@reports_errors
def status(workspace: WorkspaceOpt = None, as_json: JsonOpt = False) -> None:
    """Counts per stage, per state in force (review decisions included), per reason and per label."""
    with project(workspace) as p:
        report = p.status()
    output.print_json(report) if as_json else output.show(output.status_view(p.root, report))


@app.command()
@reports_errors
def demo(out: Annotated[Path | None, typer.Option(help="Demo workspace (default: a temp folder).")] = None,
         device: DeviceOpt = None,
         executor: Annotated[str | None, typer.Option(help="local | ray (see `run --help`).")] = None) -> None:
    """The whole pipeline offline: a loopback search engine over the bundled public-domain photos and edits of
    them, crawled, deduplicated, cropped, filtered and exported (every rejection reason fires once or more)."""
    from facecurate.demo import run_demo

    with output.bars() as bars:
        result = run_demo(out, device=device_choice(device), progress=bars, executor=executor)
    output.show(output.run_view(result.run))
    output.show(output.demo_view(result.outcomes))
    result.run.raise_for_error()
    export = result.run.stage("export").result
    output.say(("manifest", "green"), f" {result.run.manifest}")
    output.say((getattr(export, "layout", "layout"), "green"),
               f" {result.run.layout_dir} ({getattr(export, 'layout_files', 0)} kept crops)")


@app.command()
@reports_errors
def review(port: Annotated[int | None, typer.Option(
               help="Port (default: review.port in facecurate.toml, 8377; 0 = any free one).")] = None,
           host: Annotated[str | None, typer.Option(
               help="Interface to listen on (default: review.host, 127.0.0.1); a non-loopback one needs "
                    "--allow-remote.")] = None,
           allow_remote: Annotated[bool, typer.Option(
               "--allow-remote", help="Let --host be a non-loopback address: the gallery then asks for a "
                                      "secret key, shown once here in its URL.")] = False,
           allow_host: Annotated[list[str] | None, typer.Option(
               help="With --allow-remote: a Host name the gallery answers to (besides the bound address); "
                    "repeat for more.", metavar="NAME")] = None,
           no_browser: Annotated[bool, typer.Option("--no-browser", help="Print the URL, do not open it.")] = False,
           list_: Annotated[bool, typer.Option("--list", help="Rejects by reason in the terminal, then exit.")] = False,
           html: Annotated[Path | None, typer.Option(
               help="Write the self-contained HTML report (as `report` does) here, then exit.", metavar="OUT")] = None,
           disagree: Annotated[bool, typer.Option(
               "--disagree", help="With --list: only faces a person decided against the rules, by rule, each "
                                  "measure beside its threshold.")] = False,
           calibrate: Annotated[int | None, typer.Option(
               help="List the N undecided faces whose decision would teach the thresholds the most (nearest a "
                    "threshold, across rules and labels, plus a random share), then exit.", metavar="N",
               min=1)] = None,
           workspace: WorkspaceOpt = None, as_json: JsonOpt = False) -> None:
    """Local web gallery of rejects and keeps, keyboard-driven (k keep, r reject, 1-5/0 reject with a reason,
    w keep: the rule was wrong, u undo, ? help)."""
    from facecurate.review import report, server

    if port is not None:
        check_value("review", "port", port, "--port")
    with project(workspace) as p:
        cfg = p.settings()["review"]
        if calibrate is not None:
            queue = p.calibration_queue(calibrate)
            output.print_json(queue) if as_json else output.show(output.queue_view(queue))
            return
        if list_ or html:
            if html:
                _report_written(p.report(html))
            if list_ and disagree:
                found = p.disagreements()
                output.print_json(found) if as_json else output.show(output.disagreements_view(found))
            elif list_:
                reasons = report.reason_report(p.catalog)
                output.print_json(reasons) if as_json else output.show(output.reasons_view(reasons))
            return
        ws = p.workspace
    bind = host or cfg["host"]
    names = allow_host or []
    server.access_for(bind, allow_remote=allow_remote, names=names)  # refused before anything is bound
    remote = not server.is_loopback(bind)

    def ready(url: str) -> None:
        output.say(("Review gallery", "green"), f" at {url}  (Ctrl-C stops it; decisions are saved as you go)")
        if remote:
            output.warning(f"listening on {bind} for other machines: anyone holding this URL (its key) can see "
                           "the photos and provenance and record decisions. It is shown only here; restart the "
                           "gallery to change the key.")
        if not no_browser:
            import webbrowser

            if not webbrowser.open(url):
                output.say("No browser could be opened here: open the URL yourself.")

    try:
        server.serve(ws, bind, cfg["port"] if port is None else port, fallback=port is None, on_ready=ready,
                     allow_remote=allow_remote, names=names)
    except KeyboardInterrupt:
        output.say("Review gallery stopped.")


def _report_written(written: HtmlReport) -> None:
    output.say(("Report", "green"), f" {written.path} ({written.charts} charts, {written.sheets} contact sheets, "
               f"{written.thumbnails} thumbnails, {written.size_bytes / 2**20:.1f} MiB)")


@app.command()
@reports_errors
def report(out: Annotated[Path | None, typer.Option(
               help="HTML file to write (default: review.report_file in the workspace, report.html).",
               metavar="OUT")] = None,
           limit: Annotated[int | None, typer.Option(
               help="Thumbnails per reason (default: review.report_limit, 200; 0 = all).")] = None,
           workspace: WorkspaceOpt = None, as_json: JsonOpt = False) -> None:
    """Self-contained HTML with charts of what was rejected and why, and a contact sheet per reason; it opens
    offline and fetches nothing."""
    if limit is not None:
        check_value("review", "report_limit", limit, "--limit")
    with project(workspace) as p:
        written = p.report(out, limit=limit)
    output.print_json(written) if as_json else _report_written(written)


@app.command()
@reports_errors
def evaluate(directory: Annotated[Path, typer.Argument(help="Folders named after reasons (closed_eyes/, wink/, ...) "
                                                            "and keep/.")],
             target_precision: Annotated[float | None, typer.Option(
                 help="Suggest thresholds reaching this (default: evaluate.target_precision, 0.95).")] = None,
             device: DeviceOpt = None,
             size: Annotated[int | None, typer.Option(
                 help="Crop size used for the evaluation (default: evaluate.crop_size, 256).")] = None,
             keep_workspace: Annotated[Path | None, typer.Option(help="Build the evaluation workspace here.")] = None,
             as_json: JsonOpt = False) -> None:
    """Per-rule precision/recall on a folder tree labelled by reason; suggested thresholds."""
    from facecurate.evaluate import evaluate_dir

    with output.bars() as bars:
        result = evaluate_dir(directory, keep_workspace, device=device_choice(device),
                              target_precision=target_precision, crop_size=size, progress=bars)
    output.print_json(result) if as_json else output.show(output.evaluate_view(result))


@app.command()
@reports_errors
def calibrate(rules: Annotated[str | None, typer.Option(
                  help="Comma list of rules to fit (default: the enabled ones).")] = None,
              label: Annotated[str | None, typer.Option(help="Fit only this label's decisions.")] = None,
              target_precision: Annotated[float | None, typer.Option(
                  help="Suggest the best-recall threshold reaching this precision (default: "
                       "calibrate.target_precision; 0 = most agreement).", min=0.0, max=1.0)] = None,
              apply: Annotated[bool, typer.Option(
                  "--apply", help="Write the trusted suggestions to facecurate.toml (the old file kept as a dated "
                                  "backup) and decide every face again, without measuring anything.")] = False,
              workspace: WorkspaceOpt = None, as_json: JsonOpt = False) -> None:
    """The rules' thresholds fitted to the review decisions: agreement now, the best threshold, faces it changes."""
    with project(workspace) as p:
        result = p.calibrate(rules=rules, label=label, target_precision=target_precision, apply=apply)
    output.print_json(result) if as_json else output.show(output.calibrate_view(result))


@app.command()
@reports_errors
def run(query: Annotated[list[str] | None, typer.Option("--query", "-q", help="Crawl only this tracked term; "
                                                       "repeatable (default: every pending query).")] = None,
        engine: Annotated[list[str] | None, typer.Option("--engine", "-e", help="bing | duckduckgo | google | "
                                                         "google-browser | naver | wikimedia; repeatable "
                                                         "(default: crawl.engines).")]
        = None,
        stages: Annotated[str, typer.Option(help=f"Comma list of stages to run, in pipeline order: {STAGE_NAMES}.")]
        = STAGE_NAMES.replace(" ", ""),
        limit: Annotated[int | None, typer.Option(help="Results per (query, engine) (default: crawl.limit).",
                                                  min=1)] = None,
        device: DeviceOpt = None,
        fmt: Annotated[str | None, typer.Option("--format", help="jsonl | csv | parquet "
                                                "(default: export.format).")] = None,
        layout: Annotated[str | None, typer.Option(help="imagefolder | per-label | cyclegan | none (default: "
                                                        "export.layout; see `export --help`).")] = None,
        again: Annotated[bool, typer.Option("--again", help="Crawl: re-run pairs already used.")] = False,
        executor: Annotated[str | None, typer.Option(help="local | ray: where dedup's hashing, crop and filter "
                                                     "run (default: run.executor; ray needs `uv sync --extra "
                                                     "ray`).")] = None,
        workspace: WorkspaceOpt = None, as_json: JsonOpt = False) -> None:
    """The whole pipeline for the pending queries: crawl, dedup, crop, filter, export, each resuming where it stopped.

    A blocked search still lets the other stages run; a failed dedup, crop or filter skips the ones after it."""
    with project(workspace) as p, output.bars() as bars:
        summary = p.run(stages=stages.split(","), engines=engine, terms=query, limit=limit,
                        device=device_choice(device), fmt=fmt, layout=layout, again=again, executor=executor,
                        progress=bars)
    output.print_json(summary) if as_json else output.show(output.run_view(summary))
    summary.raise_for_error()


# Seconds a command may spend winding down after Ctrl-C before the process ends regardless.
INTERRUPT_GRACE = 10.0


def interrupt(signum: int, frame: object) -> None:
    """Ctrl-C: the command gives up its work and keeps what is finished (KeyboardInterrupt, as by default), and
    the process ends within INTERRUPT_GRACE seconds whatever it still waits on. Python's exit joins every worker
    thread, so one blocked where nothing could reach it would otherwise hold the exit for as long as it blocks.
    Ending there is safe: every catalog write is a transaction and every file is written whole, then renamed,
    exactly as a kill -9 must find them. A second Ctrl-C interrupts the winding down itself."""
    signal.signal(signal.SIGINT, signal.default_int_handler)
    threading.Thread(target=_end_after, args=(INTERRUPT_GRACE,), name="facecurate-interrupted", daemon=True).start()
    raise KeyboardInterrupt


def _end_after(seconds: float) -> None:
    time.sleep(seconds)
    for stream in (sys.stdout, sys.stderr):
        with suppress(OSError, ValueError):
            stream.flush()
    os._exit(130)


def main() -> None:
    # What is alive once the CLI is imported (modules, classes, functions) lives as long as the command: frozen,
    # the full collections a long command triggers leave it out (each stopped a 10,000-URL crawl's download
    # threads for ~50 ms, scanning it; ~20 ms frozen).
    gc.freeze()
    signal.signal(signal.SIGINT, interrupt)
    app(prog_name="facecurate")


if __name__ == "__main__":  # pragma: no cover
    main()
