"""Typer app: one thin command per verb. Logic lives in the stage modules; this file parses arguments,
draws progress and summaries, and turns FacecurateError into a message and an exit code."""

from __future__ import annotations

import functools
import json
import os
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated, Any, TypeVar

import typer
from rich.console import Console
from rich.markup import escape
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)
from rich.table import Table

from facecurate import __version__, media
from facecurate.catalog import Catalog
from facecurate.errors import FacecurateError, NotAvailableError
from facecurate.workspace import Workspace, find_workspace, init_workspace

app = typer.Typer(help="Turn keyword image searches and local folders into a clean, aligned face dataset.",
                  no_args_is_help=True, pretty_exceptions_enable=False, add_completion=False)
queries_app = typer.Typer(help="Tracked search terms with a label: pending vs used per engine.",
                          no_args_is_help=True)
app.add_typer(queries_app, name="queries")

console = Console()
err_console = Console(stderr=True)
STATE = {"debug": False}
F = TypeVar("F", bound=Callable[..., Any])

WorkspaceOpt = Annotated[Path | None, typer.Option(
    "--workspace", "-w", help="Workspace folder (default: $FACECURATE_WORKSPACE, else the current folder).",
    show_default=False)]
JsonOpt = Annotated[bool, typer.Option("--json", help="Print the figures as JSON for scripts.")]


def reports_errors(fn: F) -> F:
    """FacecurateError becomes a one-paragraph message and its exit code (a traceback only with --debug)."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except FacecurateError as exc:
            if STATE["debug"] or os.environ.get("FACECURATE_DEBUG"):
                err_console.print_exception()
            # soft_wrap: paths and URLs in the message stay on one line, so they can be copied.
            err_console.print(f"[bold red]facecurate {fn.__name__.rstrip('_')}: error[/] {escape(str(exc))}", soft_wrap=True,
                              markup=True, highlight=False)
            raise typer.Exit(exc.exit_code) from None
        except KeyboardInterrupt:
            err_console.print("[yellow]Interrupted.[/] Finished batches are saved; run the same command "
                              "again to continue where it stopped.")
            raise typer.Exit(130) from None

    return wrapper  # type: ignore[return-value]


@contextmanager
def open_workspace(path: Path | None) -> Iterator[tuple[Workspace, Catalog]]:
    ws = find_workspace(path)
    ws.tmp_dir.mkdir(exist_ok=True)
    media.remove_stale_parts(ws.tmp_dir)
    catalog = Catalog.open(ws.catalog_path)
    try:
        yield ws, catalog
    finally:
        catalog.close()


def progress() -> Progress:
    return Progress(TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
                    TextColumn("{task.fields[rate]}"), TimeElapsedColumn(), TimeRemainingColumn(),
                    console=err_console, transient=False)  # stderr: keeps --json stdout parseable


def _version(value: bool) -> None:
    if value:
        console.print(f"facecurate {__version__}")
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
    console.print(f"[green]Workspace ready[/] at {ws.root}\n  settings: {ws.config_path.name}  "
                  f"catalog: {ws.catalog_path.name}  queries: queries/")


@app.command("import")
@reports_errors
def import_(paths: Annotated[list[Path], typer.Argument(help="Folders (searched recursively) or image files.")],
            label: Annotated[str | None, typer.Option(help="Label (domain) for these images, e.g. makeup.")] = None,
            workspace: WorkspaceOpt = None, as_json: JsonOpt = False) -> None:
    """Bring local images (photos, generated faces) into the workspace, content-addressed."""
    from facecurate.ingest import import_paths

    with open_workspace(workspace) as (ws, catalog), progress() as bar:
        task = bar.add_task("import", total=None, rate="")
        summary = import_paths(ws, catalog, paths, label, on_found=lambda n: bar.update(task, total=n),
                               on_progress=lambda n: bar.advance(task, n))
    if as_json:
        print(json.dumps({"found": summary.found, "new": summary.new, "duplicate": summary.duplicate,
                          "unchanged": summary.unchanged,
                          "failed": [vars(f) for f in summary.failed]}, indent=2))
        return
    table = Table(title="import", show_header=True)
    for col in ("found", "new", "exact duplicates", "unchanged", "failed"):
        table.add_column(col, justify="right")
    table.add_row(*(str(v) for v in (summary.found, summary.new, summary.duplicate, summary.unchanged,
                                     len(summary.failed))))
    console.print(table)
    if summary.failed:
        bad = Table(title="not imported", show_lines=False)
        bad.add_column("file", overflow="fold")
        bad.add_column("reason")
        for f in summary.failed[:50]:
            bad.add_row(f.location, f.reason)
        console.print(bad)
        if len(summary.failed) > 50:
            console.print(f"... and {len(summary.failed) - 50} more (`facecurate export` lists every one).")


@app.command()
@reports_errors
def crop(size: Annotated[int | None, typer.Option(help="Side of the aligned crop [default: crop.size].")] = None,
         device: Annotated[str | None, typer.Option(help="auto | cpu | cuda [default: crop.device].")] = None,
         batch_size: Annotated[int | None, typer.Option(help="Images per MTCNN batch.")] = None,
         all_faces: Annotated[bool | None, typer.Option("--all-faces/--largest-face",
                                                           help="Crop every confident face.")] = None,
         redo: Annotated[bool, typer.Option(help="Re-detect and re-crop every image.")] = False,
         workspace: WorkspaceOpt = None, as_json: JsonOpt = False) -> None:
    """Detect faces (batched MTCNN, GPU when present) and write FFHQ-aligned crops."""
    from facecurate.faces.crop import CropOptions, run_crop

    if device is not None and device not in ("auto", "cpu", "cuda"):
        raise typer.BadParameter("use auto, cpu or cuda", param_hint="--device")
    with open_workspace(workspace) as (ws, catalog), progress() as bar:
        opts = CropOptions.from_config(ws, size=size, device=device, batch_size=batch_size, all_faces=all_faces)
        task = bar.add_task("crop", total=None, rate="")
        import time

        t0 = time.perf_counter()
        done = [0]

        def advance(n: int) -> None:
            done[0] += n
            bar.update(task, advance=n, rate=f"{done[0] / max(time.perf_counter() - t0, 1e-9):.1f} img/s")

        summary = run_crop(ws, catalog, opts, redo=redo,
                           on_start=lambda n, dev: bar.update(task, total=n, description=f"crop ({dev})"),
                           on_progress=advance)
    if as_json:
        print(json.dumps({"images": summary.images, "with_face": summary.with_face, "no_face": summary.no_face,
                          "faces": summary.faces, "failed": summary.failed, "device": summary.device}, indent=2))
        return
    table = Table(title=f"crop ({summary.device}, {opts.size}px)")
    for col in ("images", "with a face", "crops written", "no face", "failed"):
        table.add_column(col, justify="right")
    table.add_row(*(str(v) for v in (summary.images, summary.with_face, summary.faces, summary.no_face,
                                     len(summary.failed))))
    console.print(table)
    for path, message in summary.failed[:20]:
        console.print(f"[red]failed[/] {path}: {message}")


@app.command()
@reports_errors
def export(fmt: Annotated[str | None, typer.Option("--format", help="jsonl | csv | parquet.")] = None,
           out: Annotated[Path | None, typer.Option(help="Output folder [default: WORKSPACE/exports].")] = None,
           layout: Annotated[str, typer.Option(help="none | imagefolder (HF: train/ + metadata.jsonl).")] = "none",
           workspace: WorkspaceOpt = None, as_json: JsonOpt = False) -> None:
    """Write the manifest (every face and image, whatever its status) and optional dataset layout."""
    from facecurate.export import FORMATS, LAYOUTS
    from facecurate.export import export as run_export

    with open_workspace(workspace) as (ws, catalog):
        fmt = fmt or ws.config().get("export", "format")
        if fmt not in FORMATS:
            raise typer.BadParameter(f"use one of {', '.join(FORMATS)}", param_hint="--format")
        if layout not in LAYOUTS:
            raise typer.BadParameter(f"use one of {', '.join(LAYOUTS)}", param_hint="--layout")
        result = run_export(ws, catalog, fmt=fmt, out_dir=out, layout=layout)
    if as_json:
        print(json.dumps({"manifest": str(result.manifest), "rows": result.rows, "counts": result.counts,
                          "layout_dir": str(result.layout_dir) if result.layout_dir else None,
                          "layout_files": result.layout_files}, indent=2))
        return
    counts = ", ".join(f"{k} {v}" for k, v in sorted(result.counts.items()))
    console.print(f"[green]Manifest[/] {result.manifest} ({result.rows} rows: {counts})")
    if result.layout_dir:
        console.print(f"[green]imagefolder[/] {result.layout_dir} ({result.layout_files} kept crops)")


@app.command()
@reports_errors
def status(workspace: WorkspaceOpt = None, as_json: JsonOpt = False) -> None:
    """Counts per stage and per label."""
    with open_workspace(workspace) as (ws, catalog):
        counts = catalog.counts()
    if as_json:
        print(json.dumps(counts, indent=2))
        return
    stages = Table(title=f"workspace {ws.root}")
    stages.add_column("stage")
    stages.add_column("counts")
    stages.add_row("sources", f"{counts['sources']['ok']} imported, {counts['sources']['failed']} failed")
    stages.add_row("images", f"{counts['images']} distinct")
    stages.add_row("crop", ", ".join(f"{k} {v}" for k, v in counts["crop"].items()))
    stages.add_row("faces", ", ".join(f"{k} {v}" for k, v in sorted(counts["faces"].items())) or "none yet")
    console.print(stages)
    if counts["by_label"]:
        labels = Table(title="per label")
        cols = sorted({k for v in counts["by_label"].values() for k in v})
        labels.add_column("label")
        for c in cols:
            labels.add_column(c, justify="right")
        for label, v in counts["by_label"].items():
            labels.add_row(label or "(none)", *(str(v.get(c, 0)) for c in cols))
        console.print(labels)


@app.command()
@reports_errors
def demo(out: Annotated[Path | None, typer.Option(help="Demo workspace [default: a temp folder].")] = None,
         device: Annotated[str, typer.Option(help="auto | cpu | cuda")] = "auto") -> None:
    """Run import → crop → export offline on the bundled public-domain photos."""
    from facecurate.demo import run_demo

    run_demo(console, out, device=device, progress_factory=progress)


def _not_yet(command: str, issue: str) -> None:
    raise NotAvailableError(f"`facecurate {command}` is not available yet in facecurate {__version__}: "
                            f"it arrives with {issue}. Nothing was done.")


_LATER = {"context_settings": {"allow_extra_args": True, "ignore_unknown_options": True}}


@queries_app.command("add", **_LATER)
@reports_errors
def queries_add() -> None:
    """Add search terms with a label (from arguments or --file). [not available yet]"""
    _not_yet("queries add", "the crawl release")


@queries_app.command("list", **_LATER)
@reports_errors
def queries_list() -> None:
    """Pending vs used terms, per engine, with counts and dates. [not available yet]"""
    _not_yet("queries list", "the crawl release")


@queries_app.command("remove", **_LATER)
@reports_errors
def queries_remove() -> None:
    """Remove search terms. [not available yet]"""
    _not_yet("queries remove", "the crawl release")


@app.command(**_LATER)
@reports_errors
def crawl() -> None:
    """Run pending (query, engine) pairs, download images, record provenance. [not available yet]"""
    _not_yet("crawl", "the crawl release")


@app.command(**_LATER)
@reports_errors
def dedup() -> None:
    """Exact and near-duplicate groups (mirror-aware), keeper by quality. [not available yet]"""
    _not_yet("dedup", "the dedup release")


@app.command("filter", **_LATER)
@reports_errors
def filter_() -> None:
    """Apply the rejection rules; store scores and reasons. [not available yet]"""
    _not_yet("filter", "the rules release")


@app.command(**_LATER)
@reports_errors
def review() -> None:
    """Local web gallery of rejects and keeps, keyboard-driven. [not available yet]"""
    _not_yet("review", "the review release")


@app.command(**_LATER)
@reports_errors
def evaluate() -> None:
    """Per-rule precision/recall on a folder tree labelled by reason. [not available yet]"""
    _not_yet("evaluate", "the rules release")


@app.command(**_LATER)
@reports_errors
def run() -> None:
    """The whole pipeline for the pending queries. [not available yet]"""
    _not_yet("run", "the pipeline release")


def main() -> None:
    app(prog_name="facecurate")


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
