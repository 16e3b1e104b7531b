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
from facecurate.errors import FacecurateError
from facecurate.pipeline import STAGES
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
            title = f"facecurate {fn.__name__.rstrip('_')}: error"
            err_console.print(f"[bold red]{title}[/] {escape(str(exc))}", soft_wrap=True,
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
def crop(size: Annotated[int | None, typer.Option(help="Side of the aligned crop (default: crop.size).")] = None,
         device: Annotated[str | None, typer.Option(help="auto | cpu | cuda (default: crop.device).")] = None,
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
           out: Annotated[Path | None, typer.Option(help="Output folder (default: WORKSPACE/exports).")] = None,
           layout: Annotated[str, typer.Option(help="none | imagefolder (HF: train/ + metadata.jsonl) | per-label "
                                                    "(train/LABEL/ and val/LABEL/, StarGAN v2 domains).")] = "none",
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
        console.print(f"[green]{layout}[/] {result.layout_dir} ({result.layout_files} kept crops)")


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
    stages.add_row("rejected by", ", ".join(f"{k} {v}" for k, v in counts["reasons"].items()) or "-")
    dup = counts["dedup"]
    transforms = ", ".join(f"{k} {v}" for k, v in sorted(dup["image_by_transform"].items()))
    stages.add_row("dedup", f"{dup['hashed']} photos hashed; {dup['image_duplicates']} duplicate photos in "
                            f"{dup['image_groups']} groups" + (f" ({transforms})" if transforms else "")
                            + f"; {dup['face_duplicates']} duplicate faces")
    if dup["largest_groups"]:
        stages.add_row("largest groups", ", ".join(f"#{g['group']}: {g['size']}" for g in dup["largest_groups"]))
    console.print(stages)
    queries = {q: v for q, v in dup["by_query"].items() if q}
    if queries:
        per_query = Table(title="per query")
        for col in ("query", "images", "duplicates"):
            per_query.add_column(col, justify="left" if col == "query" else "right")
        for q, v in queries.items():
            per_query.add_row(q, str(v["images"]), str(v["duplicates"]))
        console.print(per_query)
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
def demo(out: Annotated[Path | None, typer.Option(help="Demo workspace (default: a temp folder).")] = None,
         device: Annotated[str, typer.Option(help="auto | cpu | cuda")] = "auto") -> None:
    """The whole pipeline offline: a loopback search engine over the bundled public-domain photos and edits of
    them, crawled, deduplicated, cropped, filtered and exported (every rejection reason fires once or more)."""
    from facecurate.demo import run_demo

    run_demo(console, out, device=device, progress_factory=progress)


LabelOpt = Annotated[str | None, typer.Option("--label", "-l", help="Label (domain) of the terms, e.g. makeup.")]


@queries_app.command("add")
@reports_errors
def queries_add(terms: Annotated[list[str] | None, typer.Argument(help="Search terms (quote multi-word ones).")] = None,
                label: Annotated[str, typer.Option("--label", "-l", help="Label (domain), e.g. makeup.")] = "default",
                file: Annotated[Path | None, typer.Option("--file", "-f", help="Keyword list: one term a line, "
                                                          "# comments.")] = None,
                workspace: WorkspaceOpt = None) -> None:
    """Add search terms with a label (arguments and/or --file); mirrored in queries/<label>.txt."""
    from facecurate.queries import add_terms, read_terms_file

    wanted = [*(read_terms_file(file) if file else []), *(terms or [])]
    if not wanted:
        raise typer.BadParameter("give terms as arguments or --file FILE", param_hint="TERMS")
    with open_workspace(workspace) as (ws, catalog):
        added, known = add_terms(ws, catalog, label, wanted)
    console.print(f"[green]{len(added)} added[/], {len(known)} already tracked, label [bold]{escape(label)}[/]: "
                  f"pending terms in {escape(str(ws.queries_dir / (label + '.txt')))}")


@queries_app.command("list")
@reports_errors
def queries_list(label: LabelOpt = None,
                 engine: Annotated[list[str] | None, typer.Option("--engine", "-e", help="Engines to show "
                                                                  "(default: crawl.engines + any that ran).")] = None,
                 workspace: WorkspaceOpt = None, as_json: JsonOpt = False) -> None:
    """Pending vs used terms, per engine, with counts and dates."""
    from facecurate.crawl.report import queries_table
    from facecurate.queries import list_status, status_json

    with open_workspace(workspace) as (ws, catalog):
        engines, statuses = list_status(ws, catalog, label, engine)
    if as_json:
        print(status_json(engines, statuses))
        return
    if not statuses:
        console.print("No tracked queries yet: `facecurate queries add --label LABEL TERM…` (or --file).")
        return
    console.print(queries_table(engines, statuses))
    pending = sum(s.pending for s in statuses)
    console.print(f"{pending} of {len(statuses)} terms pending for at least one engine.")


@queries_app.command("remove")
@reports_errors
def queries_remove(terms: Annotated[list[str], typer.Argument(help="Terms to stop tracking.")],
                   label: Annotated[str, typer.Option("--label", "-l", help="Their label.")] = "default",
                   workspace: WorkspaceOpt = None) -> None:
    """Stop tracking search terms (images already crawled stay, with their provenance)."""
    from facecurate.queries import remove_terms

    with open_workspace(workspace) as (ws, catalog):
        removed, unknown = remove_terms(ws, catalog, label, terms)
    console.print(f"{len(removed)} removed" + (f"; not tracked under {escape(label)}: "
                                                f"{escape(', '.join(unknown))}" if unknown else ""))


@app.command()
@reports_errors
def crawl(engine: Annotated[list[str] | None, typer.Option("--engine", "-e", help="bing | duckduckgo | google | "
                                                           "naver | wikimedia; repeatable (default: crawl.engines).")]
          = None,
          limit: Annotated[int | None, typer.Option(help="Results per (query, engine) (default: crawl.limit).",
                                                    min=1)] = None,
          label: LabelOpt = None,
          again: Annotated[bool, typer.Option("--again", help="Re-run pairs already used.")] = False,
          dry_run: Annotated[bool, typer.Option("--dry-run", help="Search only and list the URLs.")] = False,
          workspace: WorkspaceOpt = None, as_json: JsonOpt = False) -> None:
    """Run pending (query, engine) pairs, download images, record provenance; marks them used."""
    from facecurate.crawl import Callbacks, run_crawl
    from facecurate.crawl.engines import SearchStopped
    from facecurate.crawl.report import crawl_json, crawl_table

    with open_workspace(workspace) as (ws, catalog), progress() as bar:
        task: list[Any] = [None]

        def start(term: str, eng: str, total: int, done: int) -> None:
            task[0] = bar.add_task(f"{term[:30]} · {eng}", total=total, completed=done, rate="")

        def found(r: Any) -> None:
            if not as_json:
                bar.console.print(f"{r.url}\t{r.page_url or ''}", soft_wrap=True, highlight=False, markup=False)

        names = [e.strip().lower() for e in engine] if engine else None
        if not ws.config().get("crawl", "contact"):
            err_console.print("[yellow]Note:[/] \\[crawl] contact is empty in facecurate.toml: image hosts (and "
                              "Wikimedia, which asks for one) see no way to reach you. Set it to an e-mail or URL.")
        def finish(report: Any) -> None:
            found_n = report.counts.get("found", 0)
            bar.update(task[0], total=found_n, completed=found_n)

        reports = run_crawl(ws, catalog, names, limit, label, again, dry_run, Callbacks(
            start=start, advance=lambda n: bar.advance(task[0], n), found=found, finish=finish))
    if as_json:
        print(crawl_json(reports))
    elif not reports:
        console.print("Nothing pending: add terms with `facecurate queries add`, or re-run used ones with --again.")
    else:
        console.print(crawl_table(reports))
    stopped: list[SearchStopped] = [r.stopped for r in reports if r.stopped is not None]
    if stopped:  # never "0 images, done": exit 3 with the saved page and the fix
        if len(stopped) > 1:
            stopped[0].args = (f"{stopped[0].describe()} ({len(stopped) - 1} more searches stopped; see the "
                               f"table.)",)
        raise stopped[0]


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
          workspace: WorkspaceOpt = None, as_json: JsonOpt = False) -> None:
    """Exact and near-duplicate groups (mirror- and crop-aware), keeper by quality; marks, never deletes."""
    import time

    from facecurate.dedup import DedupOptions, run_dedup

    with open_workspace(workspace) as (ws, catalog), progress() as bar:
        opts = DedupOptions.from_config(ws, threshold=threshold, faces=faces)
        tasks: dict[str, Any] = {}
        clock = {"t0": time.perf_counter(), "done": 0}

        def start(phase: str, total: int) -> None:
            if total:  # nothing to hash: no empty bar
                tasks["current"] = bar.add_task(phase, total=total, rate="")
            clock.update(t0=time.perf_counter(), done=0)

        def advance(n: int) -> None:
            clock["done"] += n
            rate = clock["done"] / max(time.perf_counter() - clock["t0"], 1e-9)
            bar.update(tasks["current"], advance=n, rate=f"{rate:.0f} files/s")

        summary = run_dedup(ws, catalog, opts, dry_run=dry_run, redo=redo, on_start=start, on_progress=advance)
    levels = {"photos": summary.photos, "faces": summary.faces}
    if as_json:
        print(json.dumps({
            "dry_run": summary.dry_run,
            "options": {k: getattr(opts, k) for k in opts.__dataclass_fields__},
            **{name: {k: getattr(lv, k) for k in ("items", "hashed", "cached", "groups", "duplicates", "changed",
                                                 "by_transform", "by_kind", "stats")}
               | {"failed": [{"path": p, "error": e} for p, e in lv.failed]} for name, lv in levels.items()},
            "groups": [{"level": g.level, "group": g.group, "keeper": g.keeper, "keeper_id": g.keeper_id,
                        "members": [vars(m) for m in g.members]} for g in summary.groups],
        }, indent=2))
        return
    title = "dedup (dry run: nothing written)" if dry_run else "dedup"
    table = Table(title=f"{title}: threshold {opts.threshold} bits, {opts.algorithm}, keeper by {opts.keeper}")
    for col in ("level", "items", "hashed", "groups", "dups", "mirror", "crop", "pixels", "changed", "failed"):
        table.add_column(col, justify="right")
    for name, lv in levels.items():
        if name == "faces" and not opts.faces:
            continue
        mirrored = sum(v for k, v in lv.by_transform.items() if "hflip" in k)
        cropped = sum(v for k, v in lv.by_transform.items() if "crop" in k)
        table.add_row(name, str(lv.items), str(lv.hashed), str(lv.groups), str(lv.duplicates), str(mirrored),
                      str(cropped), str(lv.by_kind.get("pixels", 0)), str(lv.changed), str(len(lv.failed)))
    console.print(table)
    if show > 0 and summary.groups:
        shown = summary.groups[:show]
        local = [n for g in shown for n in (g.keeper, *(m.name for m in g.members)) if n.startswith("/")]
        base = os.path.commonpath(local) if local else ""
        base = base if os.path.isdir(base) and base != "/" else ""

        def short(name: str) -> str:  # local paths relative to the folder they share, URLs as they are
            return os.path.relpath(name, base) if base and name.startswith(base + os.sep) else name

        groups = Table(title=f"largest groups ({len(shown)} of {len(summary.groups)})", show_lines=True,
                       caption=f"paths under {base}" if base else None)
        groups.add_column("level")
        groups.add_column("kept", overflow="fold")
        groups.add_column("duplicates (bits to the kept one, transform)", overflow="fold")
        for g in shown:
            members = "\n".join(f"{escape(short(m.name))}  [dim]{m.distance if m.distance is not None else '-'} bits"
                                f"{', ' + m.transform if m.transform else ''}"
                                f"{', ' + m.kind if m.kind not in (None, 'perceptual') else ''}[/]"
                                for m in g.members)
            groups.add_row(g.level, escape(short(g.keeper)), members)
        console.print(groups)
    for lv in levels.values():
        for path, message in lv.failed[:10]:
            console.print(f"[red]not hashed[/] {escape(path)}: {escape(message)}")


@app.command("filter")
@reports_errors
def filter_(rules: Annotated[str | None, typer.Option(help="Comma list of rules to measure now.")] = None,
            explain: Annotated[str | None, typer.Option(help="Show every score of one face (a sample_id).")] = None,
            redo: Annotated[bool, typer.Option(help="Recompute every measure, not only the missing ones.")] = False,
            workspace: WorkspaceOpt = None, as_json: JsonOpt = False) -> None:
    """Apply the rejection rules: every score for every face, reasons, keep/reject."""
    from facecurate.rules.stage import explain as explain_face
    from facecurate.rules.stage import run_filter

    with open_workspace(workspace) as (ws, catalog):
        if explain:
            rows = explain_face(ws, catalog, explain)
            if as_json:
                print(json.dumps(rows, indent=2))
                return
            table = Table(title=f"rules for {explain}")
            for col in ("rule", "measure", "value", "threshold", "fires", "fired", "what it catches"):
                table.add_column(col, overflow="fold")
            for r in rows:
                value = "n/a" if r["value"] is None else f"{r['value']:.3f}"
                table.add_row(str(r["rule"]), str(r["measure"]), value, f"{r['threshold']:g}",
                              "below" if r["fires_when"] == "below" else ">=",
                              "[red]yes[/]" if r["fired"] else "no", escape(str(r["doc"])))
            console.print(table)
            return
        with progress() as bar:
            task = bar.add_task("filter", total=None, rate="")
            summary = run_filter(ws, catalog, rules=rules, redo=redo, on_start=lambda n: bar.update(task, total=n),
                                 on_progress=lambda n: bar.advance(task, n))
    if as_json:
        print(json.dumps({"faces": summary.faces, "measured": summary.measured, "kept": summary.kept,
                          "rejected": summary.rejected, "by_reason": dict(summary.by_reason),
                          "failed": summary.failed}, indent=2))
        return
    table = Table(title=f"filter: {summary.faces} faces ({summary.measured} measured now)")
    table.add_column("reason")
    table.add_column("faces", justify="right")
    for reason, n in summary.by_reason.most_common():
        table.add_row(reason, str(n))
    table.add_row("[bold]rejected[/]", str(summary.rejected))
    table.add_row("[bold]kept[/]", str(summary.kept))
    console.print(table)
    for path, message in summary.failed[:20]:
        console.print(f"[red]not measured[/] {escape(path)}: {escape(message)}")


@app.command()
@reports_errors
def review(port: Annotated[int | None, typer.Option(
               help="Port (default: review.port in facecurate.toml, 8377; 0 = any free one).")] = None,
           host: Annotated[str | None, typer.Option(
               help="Interface to listen on (default: 127.0.0.1); any other lets other machines in.")] = None,
           no_browser: Annotated[bool, typer.Option("--no-browser", help="Print the URL, do not open it.")] = False,
           list_: Annotated[bool, typer.Option("--list", help="Rejects by reason in the terminal, then exit.")] = False,
           html: Annotated[Path | None, typer.Option(help="Write a self-contained HTML report here, then exit.",
                                                     metavar="OUT")] = None,
           workspace: WorkspaceOpt = None, as_json: JsonOpt = False) -> None:
    """Local web gallery of rejects and keeps, keyboard-driven (k keep, r reject, u undo, ? help)."""
    from facecurate.review import report, server

    with open_workspace(workspace) as (ws, catalog):
        if list_ or html:
            if html:
                groups, embedded = report.write_html(ws, catalog, html, ws.config().get("review", "report_limit"))
                console.print(f"[green]Report[/] {escape(str(html))} ({groups} groups, {embedded} thumbnails)")
            if list_:
                groups_ = report.reason_groups(catalog)
                if as_json:
                    print(json.dumps(report.as_json(groups_), indent=2, ensure_ascii=False))
                else:
                    console.print(report.table(groups_, report.face_count(catalog)))
            return
    cfg = ws.config()
    bind = host or cfg.get("review", "host")
    if not server.is_loopback(bind):
        err_console.print(f"[bold yellow]Warning:[/] listening on {escape(bind)}: anyone who can reach this "
                          "machine can see the photos and provenance. Writes still need the page's token.")

    def ready(url: str) -> None:
        console.print(f"[green]Review gallery[/] at {url}  (Ctrl-C stops it; decisions are saved as you go)")
        if not no_browser:
            import webbrowser

            if not webbrowser.open(url):
                console.print("No browser could be opened here: open the URL yourself.")

    try:
        server.serve(ws, bind, cfg.get("review", "port") if port is None else port, fallback=port is None,
                     on_ready=ready)
    except KeyboardInterrupt:
        console.print("Review gallery stopped.")


@app.command()
@reports_errors
def evaluate(directory: Annotated[Path, typer.Argument(help="Folders named after reasons (closed_eyes/, wink/, ...) "
                                                            "and keep/.")],
             target_precision: Annotated[float, typer.Option(help="Suggest thresholds reaching this.")] = 0.95,
             device: Annotated[str, typer.Option(help="auto | cpu | cuda")] = "auto",
             size: Annotated[int, typer.Option(help="Crop size used for the evaluation.")] = 256,
             keep_workspace: Annotated[Path | None, typer.Option(help="Build the evaluation workspace here.")] = None,
             as_json: JsonOpt = False) -> None:
    """Per-rule precision/recall on a folder tree labelled by reason; suggested thresholds."""
    from facecurate.rules.evaluate import evaluate_dir

    with err_console.status("evaluate") as spinner:
        result = evaluate_dir(directory, keep_workspace, device=device, target_precision=target_precision,
                              crop_size=size, on_stage=lambda s: spinner.update(f"evaluate: {s}"))
    if as_json:
        print(json.dumps(result, indent=2))
        return
    console.print(f"{result['photos']} photos: " + ", ".join(f"{k} {v}" for k, v in sorted(result["labels"].items())))
    table = Table(title=f"rules vs labels (suggestions reach precision {result['target_precision']:g})")
    for col in ("rule", "support", "fired", "P", "R", "F1", "threshold", "suggested (P, R)"):
        table.add_column(col, justify="left" if col == "rule" else "right", no_wrap=True)

    def pct(v: float | None) -> str:
        return "-" if v is None else f"{v:.2f}"

    for r in result["rules"]:
        if not r["fired"] and not r["support"]:
            continue
        suggested = "-" if r["suggested_threshold"] is None else (
            f"{r['suggested_threshold']:.3g} ({r['suggested_precision']:.2f}, {r['suggested_recall']:.2f})")
        table.add_row(r["rule"], str(r["support"]), str(r["fired"]), pct(r["precision"]), pct(r["recall"]),
                      pct(r["f1"]), f"{r['threshold']:g}", suggested)
    console.print(table)
    console.print("[bold]where each rule fired[/] (folder: photos)")
    for r in result["rules"]:
        if r["fired"]:
            fired_on = ", ".join(f"{k} {v}" for k, v in sorted(r["fired_by_label"].items(), key=lambda kv: -kv[1]))
            console.print(f"  {r['rule']}: {fired_on}")
    if result["keep_rejected"] is not None:
        console.print(f"keep/ photos rejected: {result['keep_rejected']:.1%} "
                      f"(by an eye rule: {result['keep_rejected_by_eye_rules']:.1%}); workspace {result['workspace']}")


@app.command()
@reports_errors
def run(query: Annotated[list[str] | None, typer.Option("--query", "-q", help="Crawl only this tracked term; "
                                                       "repeatable (default: every pending query).")] = None,
        engine: Annotated[list[str] | None, typer.Option("--engine", "-e", help="bing | duckduckgo | google | "
                                                         "naver | wikimedia; repeatable (default: crawl.engines).")]
        = None,
        stages: Annotated[str, typer.Option(help="Comma list of stages to run, in pipeline order: crawl, dedup, "
                                                 "crop, filter, export.")] = ",".join(STAGES),
        limit: Annotated[int | None, typer.Option(help="Results per (query, engine) (default: crawl.limit).",
                                                  min=1)] = None,
        device: Annotated[str | None, typer.Option(help="auto | cpu | cuda (default: crop.device).")] = None,
        fmt: Annotated[str | None, typer.Option("--format", help="jsonl | csv | parquet "
                                                "(default: export.format).")] = None,
        layout: Annotated[str, typer.Option(help="none | imagefolder | per-label (see `export --help`).")]
        = "imagefolder",
        again: Annotated[bool, typer.Option("--again", help="Crawl: re-run pairs already used.")] = False,
        workspace: WorkspaceOpt = None, as_json: JsonOpt = False) -> None:
    """The whole pipeline for the pending queries: crawl, dedup, crop, filter, export, each resuming where it stopped.

    A blocked search still lets the other stages run; a failed dedup, crop or filter skips the ones after it."""
    from facecurate.pipeline import RunOptions, parse_stages, run_pipeline

    with open_workspace(workspace) as (ws, catalog):
        cfg = ws.config()
        opts = RunOptions(stages=parse_stages(stages), engines=tuple(engine or ()), terms=tuple(query or ()),
                          limit=limit, device=device or cfg.get("crop", "device"),
                          fmt=fmt or cfg.get("export", "format"), layout=layout, again=again)
        summary = run_pipeline(ws, catalog, opts, err_console if as_json else console, progress)
    if as_json:
        print(json.dumps(summary.as_dict(), indent=2, ensure_ascii=False))
    else:
        console.print(summary.table())
    if summary.error is not None:
        raise summary.error


def main() -> None:
    app(prog_name="facecurate")


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
