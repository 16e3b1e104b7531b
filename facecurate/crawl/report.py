"""Rich tables for `queries list` and the closing summary of `crawl` (kept out of cli.py, which stays thin)."""

from __future__ import annotations

import json
from typing import Any

from rich.table import Table

from facecurate.crawl.stage import PairReport
from facecurate.queries import PairStatus, QueryStatus


def _cell(p: PairStatus) -> str:
    if p.state == "pending":
        return "[yellow]pending[/]"
    c = p.counts
    figures = f"{c.get('found', 0)} found, {c.get('new', 0)} new"
    date = (p.date or "")[:10]
    if p.state == "used":
        return f"[green]used[/] {date} · {figures}"
    if p.state == "blocked":
        return f"[red]blocked[/] {date} · {figures} (resumes)"
    return f"[cyan]interrupted[/] {date} · {figures} (resumes)"


def queries_table(engines: list[str], statuses: list[QueryStatus]) -> Table:
    table = Table(title="tracked queries (pending vs used per engine)")
    table.add_column("label")
    table.add_column("term", overflow="fold")
    for e in engines:
        table.add_column(e)
    for s in statuses:
        table.add_row(s.label, s.term, *(_cell(p) for p in s.pairs))
    return table


def crawl_table(reports: list[PairReport]) -> Table:
    table = Table(title="crawl: per query and engine")
    table.add_column("query", overflow="fold", ratio=2)
    table.add_column("engine", no_wrap=True)
    for col in ("found", "new", "duplicate", "failed"):
        table.add_column(col, justify="right", no_wrap=True)
    table.add_column("failed by reason", overflow="fold", ratio=3)
    for r in reports:
        c = r.counts
        reasons = ", ".join(f"{k} {v}" for k, v in c.get("failed_by_reason", {}).items())
        if r.state == "blocked" and r.stopped is not None:
            reasons = f"[bold red]BLOCKED ({r.stopped.kind})[/] {reasons}".rstrip()
        elif r.state == "dry-run":
            reasons = "dry run: nothing downloaded"
        reasons = reasons or "-"
        table.add_row(f"{r.label}: {r.term}", r.engine, str(c.get("found", 0)), str(c.get("new", 0)),
                      str(c.get("duplicate", 0)), str(c.get("failed", 0)), reasons)
    return table


def crawl_json(reports: list[PairReport]) -> str:
    out: list[dict[str, Any]] = []
    for r in reports:
        item: dict[str, Any] = {"label": r.label, "query": r.term, "engine": r.engine, "state": r.state, **r.counts}
        if r.stopped is not None:
            item.update(stopped=r.stopped.kind, message=str(r.stopped), saved_page=r.stopped.saved_page)
        if r.urls:
            item["urls"] = [{"url": u.url, "page_url": u.page_url, "title": u.title} for u in r.urls]
        out.append(item)
    return json.dumps(out, ensure_ascii=False, indent=2)
