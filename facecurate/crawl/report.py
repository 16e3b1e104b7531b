"""Tables and JSON for `queries list` and the closing summary of `crawl`: pure functions of the plain records
the stage returns (their home is the output layer; nothing here reads the catalog or prints)."""

from __future__ import annotations

import json
from typing import Any

from rich.table import Table

from facecurate.catalog.queries import RunCounts
from facecurate.crawl.queries import PairStatus, QueryListing
from facecurate.crawl.stage import CrawlSummary


def counts_dict(counts: RunCounts) -> dict[str, Any]:
    """A run's counts as JSON has them: found, new, duplicate, pending, failed (a count) and failed_by_reason."""
    return {"found": counts.found, "new": counts.new, "duplicate": counts.duplicate, "pending": counts.pending,
            "failed": counts.failed_count, "failed_by_reason": dict(counts.failed_by_reason)}


def _cell(p: PairStatus) -> str:
    if p.state == "pending" or p.counts is None:
        return "[yellow]pending[/]"
    c = p.counts
    figures = f"{c.found} found, {c.new} new"
    date = (p.date or "")[:10]
    if p.state == "used":
        return f"[green]used[/] {date} · {figures}"
    if p.state == "blocked":
        return f"[red]blocked[/] {date} · {figures} (resumes)"
    return f"[cyan]interrupted[/] {date} · {figures} (resumes)"


def queries_table(listing: QueryListing) -> Table:
    table = Table(title="tracked queries (pending vs used per engine)")
    table.add_column("label")
    table.add_column("term", overflow="fold")
    for e in listing.engines:
        table.add_column(e)
    for s in listing.queries:
        table.add_row(s.label, s.term, *(_cell(p) for p in s.pairs))
    return table


def queries_json(listing: QueryListing) -> str:
    return json.dumps({"engines": listing.engines, "queries": [
        {"label": s.label, "term": s.term, "added_at": s.added_at, "pending": s.pending,
         "engines": {p.engine: {"state": p.state, "date": p.date,
                                **(counts_dict(p.counts) if p.counts is not None else {})} for p in s.pairs}}
        for s in listing.queries]}, ensure_ascii=False, indent=2)


def crawl_table(summary: CrawlSummary) -> Table:
    table = Table(title="crawl: per query and engine")
    table.add_column("query", overflow="fold", ratio=2)
    table.add_column("engine", no_wrap=True)
    for col in ("found", "new", "duplicate", "failed"):
        table.add_column(col, justify="right", no_wrap=True)
    table.add_column("failed by reason", overflow="fold", ratio=3)
    for r in summary.searches:
        c = r.counts
        reasons = ", ".join(f"{k} {v}" for k, v in c.failed_by_reason.items())
        if r.state == "blocked" and r.stopped is not None:
            reasons = f"[bold red]BLOCKED ({r.stopped.kind})[/] {reasons}".rstrip()
        elif r.state == "dry-run":
            reasons = "dry run: nothing downloaded"
        reasons = reasons or "-"
        table.add_row(f"{r.label}: {r.term}", r.engine, str(c.found), str(c.new), str(c.duplicate), str(c.failed_count),
                      reasons)
    return table


def crawl_json(summary: CrawlSummary) -> str:
    out: list[dict[str, Any]] = []
    for r in summary.searches:
        counts = {"found": r.counts.found} if r.state == "dry-run" else counts_dict(r.counts)
        item: dict[str, Any] = {"label": r.label, "query": r.term, "engine": r.engine, "state": r.state, **counts}
        if r.stopped is not None:
            item.update(stopped=r.stopped.kind, message=str(r.stopped), saved_page=r.stopped.saved_page)
        if r.urls:
            item["urls"] = [{"url": u.url, "page_url": u.page_url, "title": u.title} for u in r.urls]
        out.append(item)
    return json.dumps(out, ensure_ascii=False, indent=2)
