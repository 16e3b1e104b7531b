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
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from enum import Enum
from functools import singledispatch
from pathlib import Path
from types import TracebackType
from typing import Any

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

console = Console()
err_console = Console(stderr=True)  # bars and messages: stdout stays parseable under --json


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


class Bars:
    """Rich progress bars on stderr as an :class:`~facecurate.events.Progress` sink: one bar per task, each with
    its own rate, and notes printed above them."""

    def __init__(self, target: Console | None = None) -> None:
        self._progress = Progress(TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
                                  TextColumn("{task.fields[rate]}"), TimeElapsedColumn(), TimeRemainingColumn(),
                                  console=target or err_console, transient=False)
        self._task: TaskID | None = None
        self._unit = ""
        self._t0 = time.perf_counter()
        self._done = 0

    def __enter__(self) -> Bars:
        self._progress.start()
        return self

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self._progress.stop()

    def start(self, name: str, total: int | None, unit: str, done: int = 0) -> None:
        self._task = self._progress.add_task(escape(name), total=total, completed=done, rate="")
        self._unit, self._t0, self._done = unit, time.perf_counter(), 0

    def advance(self, n: int = 1) -> None:
        if self._task is None:
            return
        self._done += n
        rate = self._done / max(time.perf_counter() - self._t0, 1e-9)
        self._progress.update(self._task, advance=n, rate=f"{rate:.1f} {self._unit}/s")

    def finish(self, total: int | None = None) -> None:
        if self._task is None:
            return
        task = self._progress.tasks[self._progress.task_ids.index(self._task)]
        final = total if total is not None else (task.total if task.total is not None else int(task.completed))
        self._progress.update(self._task, total=final, completed=final)
        self._task = None

    def note(self, message: str) -> None:
        self._progress.console.print(Text(message, style="yellow"))


@contextmanager
def bars() -> Iterator[Bars]:
    with Bars() as sink:
        yield sink


# -- messages ---------------------------------------------------------------------------------------------


def error(title: str, message: str) -> None:
    """One paragraph on stderr; soft_wrap keeps paths and URLs on one line, so they can be copied."""
    err_console.print(Text.assemble((title, "bold red"), " ", message), soft_wrap=True, highlight=False)


def warning(message: str) -> None:
    err_console.print(Text.assemble(("Warning:", "bold yellow"), " ", message), highlight=False)


def say(*parts: str | tuple[str, str]) -> None:
    """A line of plain text; (text, style) pairs are styled, never parsed as markup."""
    console.print(Text.assemble(*parts), highlight=False, soft_wrap=True)


def interrupted() -> None:
    err_console.print(Text.assemble(("Interrupted.", "yellow"), " Finished batches are saved; run the same "
                                    "command again to continue where it stopped."))


def show(value: Any) -> None:
    """Draw a summary record with its table (see :func:`render`)."""
    console.print(render(value))


# -- tables -----------------------------------------------------------------------------------------------


@singledispatch
def render(value: Any) -> RenderableType:
    """The terminal form of a summary record; each record type registers its own below."""
    raise TypeError(f"no terminal form for {type(value).__name__}")


def _counts(mapping: Mapping[str, int]) -> str:
    return ", ".join(f"{k} {v}" for k, v in mapping.items())


def _failures(title: str, failed: list[Any], limit: int) -> list[RenderableType]:
    out: list[RenderableType] = [Text.assemble((title, "red"), " ", f.item, ": ", f.error) for f in failed[:limit]]
    if len(failed) > limit:
        out.append(Text(f"... and {len(failed) - limit} more (`--json` lists every one; the manifest keeps them)."))
    return out


def register_renderers() -> None:
    """Tables for every summary record. Registered on first use, so a command imports only its own stage."""
    from facecurate.crawl import CrawlSummary, QueryListing
    from facecurate.dedup import DedupSummary
    from facecurate.evaluate import EvaluateResult
    from facecurate.export import ExportSummary
    from facecurate.faces.crop import CropSummary
    from facecurate.ingest import ImportSummary
    from facecurate.pipeline import LabelCounts, RunSummary
    from facecurate.review.report import ReasonReport
    from facecurate.rules.stage import Explanation, FilterSummary
    from facecurate.status import StatusReport

    render.register(ImportSummary, _import)
    render.register(CrawlSummary, _crawl)
    render.register(QueryListing, _queries)
    render.register(DedupSummary, _dedup)
    render.register(CropSummary, _crop)
    render.register(FilterSummary, _filter)
    render.register(Explanation, _explain)
    render.register(ExportSummary, _export)
    render.register(StatusReport, _status)
    render.register(RunSummary, _run)
    render.register(EvaluateResult, _evaluate)
    render.register(ReasonReport, _reasons)
    _LABEL_COLUMNS.extend(LabelCounts.COLUMNS)
