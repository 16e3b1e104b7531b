"""Each HTTP engine end to end against a loopback server that answers in its shape: pagination by results
returned, stop after empty pages, block pages reported (exit 3, page saved), --again, --dry-run, resume."""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from pathlib import Path

import pytest
from typer.testing import CliRunner

from facecurate.catalog import Catalog
from facecurate.cli import app
from facecurate.crawl import run_crawl
from facecurate.crawl.queries import add_terms, list_queries
from facecurate.crawl.stage import Crawl
from facecurate.events import Silent
from facecurate.workspace import Workspace
from tests.fakeweb import BLOCKED_TERM, CHANGED_TERM, STUCK_TERM, FakeEngines, ImageHost, items_for, write_config

runner = CliRunner()
HTTP_ENGINES = ("bing", "duckduckgo", "naver", "wikimedia")


@pytest.fixture
def web() -> Iterator[tuple[ImageHost, FakeEngines]]:
    host = ImageHost()
    with host.server:
        engines = FakeEngines({"many faces": items_for(host, list(range(1, 121))),
                               "few faces": items_for(host, [200, 201, 202]),
                               "overlap": items_for(host, [1, 2, 300]),
                               "nothing": [],
                               STUCK_TERM: items_for(host, list(range(400, 450)))})
        with engines.server:
            yield host, engines


def _requests(engines: FakeEngines, path: str) -> list[dict[str, str]]:
    return [r.query for r in engines.server.requests if r.path == path]


@pytest.mark.parametrize("engine", HTTP_ENGINES)
def test_engine_pages_until_the_limit(engine: str, ws: Workspace, catalog: Catalog, web):
    _, engines = web
    write_config(ws.root, engines.server.base)
    add_terms(ws, catalog, "faces", ["many faces"])
    (report,) = run_crawl(ws, catalog, [engine], limit=60).searches
    assert report.state == "done", report.stopped
    assert report.counts.found == 60 and report.counts.new == 60 and report.counts.failed_count == 0
    ranks = [r[0] for r in catalog.conn.execute("SELECT rank FROM sources ORDER BY rank")]
    assert ranks == list(range(1, 61))
    for row in catalog.conn.execute("SELECT * FROM sources"):
        assert row["engine"] == engine and row["query"] == "many faces" and row["label"] == "faces"
        assert row["page_url"].startswith("http://example.org/page/") and row["status"] == "ok"
    if engine == "wikimedia":
        row = catalog.conn.execute("SELECT license, author FROM sources LIMIT 1").fetchone()
        assert row["license"] == "CC BY-SA 4.0" and row["author"].startswith("Author ")
    if engine == "bing":  # the next page starts after the results actually returned
        assert [q["first"] for q in _requests(engines, "/images/async")] == ["1", "36"]
    if engine == "duckduckgo":
        pages = _requests(engines, "/i.js")
        assert [q.get("s", "0") for q in pages] == ["0", "10", "20", "30", "40", "50"]


@pytest.mark.parametrize("engine", HTTP_ENGINES)
def test_engine_stops_at_the_end_of_results(engine: str, ws: Workspace, catalog: Catalog, web):
    _, engines = web
    write_config(ws.root, engines.server.base)
    add_terms(ws, catalog, "faces", ["few faces", "nothing"])
    reports = run_crawl(ws, catalog, [engine], limit=50).searches
    assert [(r.term, r.state, r.counts.found) for r in reports] == [("few faces", "done", 3),
                                                                      ("nothing", "done", 0)]


@pytest.mark.parametrize("engine", HTTP_ENGINES)
def test_block_and_changed_pages_are_reported_not_done(engine: str, ws: Workspace, catalog: Catalog, web):
    _, engines = web
    write_config(ws.root, engines.server.base)
    add_terms(ws, catalog, "faces", [BLOCKED_TERM, CHANGED_TERM, "few faces"])
    reports = {r.term: r for r in run_crawl(ws, catalog, [engine], limit=10).searches}
    blocked, changed = reports[BLOCKED_TERM], reports[CHANGED_TERM]
    assert blocked.state == "blocked" and blocked.stopped is not None and blocked.stopped.kind == "captcha"
    assert changed.state == "blocked" and changed.stopped is not None
    assert changed.stopped.kind == "layout_changed" or (engine == "wikimedia" and changed.stopped.kind)
    for r in (blocked, changed):
        saved = Path(r.stopped.saved_page)
        assert saved.is_file() and saved.is_relative_to(ws.root)
        assert str(saved) in str(r.stopped) and r.stopped.url in str(r.stopped)
    assert reports["few faces"].state == "done"  # one blocked query does not stop the others
    statuses = list_queries(ws, catalog, engines=[engine]).queries
    state = {s.term: s.pairs[0].state for s in statuses}
    assert state == {BLOCKED_TERM: "blocked", CHANGED_TERM: "blocked", "few faces": "used"}


def test_cli_crawl_blocked_exits_3_with_the_saved_page(ws: Workspace, catalog: Catalog, web):
    _, engines = web
    write_config(ws.root, engines.server.base)
    add_terms(ws, catalog, "faces", [BLOCKED_TERM, "few faces"])
    result = runner.invoke(app, ["crawl", "--engine", "bing", "-w", str(ws.root)])
    assert result.exit_code == 3
    assert "captcha" in result.output and "crawl_pages" in result.output and "BLOCKED" in result.output
    assert "Traceback" not in result.output


def test_cli_crawl_table_used_pairs_and_again(ws: Workspace, catalog: Catalog, web):
    host, engines = web
    write_config(ws.root, engines.server.base)
    add_terms(ws, catalog, "faces", ["few faces", "overlap"])
    w = ["-w", str(ws.root)]
    result = runner.invoke(app, ["crawl", "-e", "bing", "-e", "wikimedia", "--limit", "10", *w])
    assert result.exit_code == 0, result.output
    for word in ("found", "new", "duplicate", "failed", "few faces", "overlap", "wikimedia", "faces"):
        assert word in result.output
    assert catalog.conn.execute("SELECT COUNT(*) FROM images").fetchone()[0] == 6
    served = len(host.server.requests)
    # nothing pending any more: no search, no download
    again = runner.invoke(app, ["crawl", "-e", "bing", "--json", *w])
    assert again.exit_code == 0 and json.loads(again.stdout)["searches"] == []
    # --again re-searches, and finds only what it has: no image URL is fetched twice
    result = runner.invoke(app, ["crawl", "-e", "bing", "--again", "--json", *w])
    assert result.exit_code == 0, result.output
    rows = {r["term"]: r["counts"] for r in json.loads(result.stdout)["searches"]}
    assert rows["few faces"]["found"] == 3 and rows["few faces"]["duplicate"] == 3 and rows["few faces"]["new"] == 0
    assert len(host.server.requests) == served
    assert catalog.conn.execute("SELECT COUNT(*) FROM images").fetchone()[0] == 6


def test_same_url_from_two_queries_is_fetched_once(ws: Workspace, catalog: Catalog, web):
    host, engines = web
    write_config(ws.root, engines.server.base)
    add_terms(ws, catalog, "faces", ["many faces", "overlap"])
    reports = {r.term: r for r in run_crawl(ws, catalog, ["bing"], limit=5).searches}
    overlap = reports["overlap"].counts
    assert (overlap.found, overlap.new, overlap.duplicate) == (3, 1, 2)
    assert host.server.hits("/img/1.jpg") == 1
    hits = catalog.conn.execute("SELECT COUNT(*) FROM hits h JOIN frontier f ON f.id=h.url_id "
                                "WHERE f.url LIKE '%/img/1.jpg'").fetchone()[0]
    assert hits == 2  # both queries keep their own record of having found it


def test_dry_run_lists_urls_and_records_nothing(ws: Workspace, catalog: Catalog, web):
    host, engines = web
    write_config(ws.root, engines.server.base)
    add_terms(ws, catalog, "faces", ["few faces"])
    result = runner.invoke(app, ["crawl", "-e", "naver", "--dry-run", "-w", str(ws.root)])
    assert result.exit_code == 0, result.output
    for seed in (200, 201, 202):
        assert f"/img/{seed}.jpg" in result.output
    assert host.server.requests == []
    assert catalog.conn.execute("SELECT COUNT(*) FROM query_runs").fetchone()[0] == 0
    assert catalog.conn.execute("SELECT COUNT(*) FROM sources").fetchone()[0] == 0


@pytest.mark.skipif(not hasattr(os, "fork"), reason="finishing workers are forked only where fork exists")
def test_a_dry_run_forks_no_finishing_worker(ws: Workspace, catalog: Catalog):
    """A dry run only searches: it starts no worker process (a crawl does, [crawl] processes = 0 by default)."""
    with Crawl(ws, catalog, dry_run=True) as dry:
        assert dry.downloader.processes is None
    with Crawl(ws, catalog) as real:
        assert real.downloader.processes is not None and len(real.downloader.processes.pids()) >= 2


def test_an_interrupted_query_stays_pending_and_resumes_where_it_stopped(ws: Workspace, catalog: Catalog, web):
    host, engines = web
    write_config(ws.root, engines.server.base)
    add_terms(ws, catalog, "faces", ["many faces"])

    class InterruptAt40(Silent):
        settled = 0

        def advance(self, n: int = 1) -> None:
            self.settled += n
            if self.settled >= 40:
                raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        run_crawl(ws, catalog, ["bing"], limit=100, progress=InterruptAt40())
    (status,) = list_queries(ws, catalog, engines=["bing"]).queries
    assert status.pending and status.pairs[0].state == "running"
    before = {r[0] for r in catalog.conn.execute("SELECT location FROM sources")}
    assert 0 < len(before) < 100
    pages_before = len(_requests(engines, "/images/async"))
    (report,) = run_crawl(ws, catalog, ["bing"], limit=100).searches
    assert report.state == "done" and report.counts.found == 100 and report.counts.new == 100
    firsts = [q["first"] for q in _requests(engines, "/images/async")][pages_before:]
    assert "1" not in firsts  # it went on from its cursor instead of starting over
    for url in before:  # what was stored before the interruption is not fetched again
        assert host.server.hits(url.removeprefix(host.server.base)) == 1, url
    assert catalog.conn.execute("SELECT COUNT(*) FROM images").fetchone()[0] == 100
    (status,) = list_queries(ws, catalog, engines=["bing"]).queries
    assert not status.pending


def test_repeated_all_seen_pages_end_the_query(ws: Workspace, catalog: Catalog, web):
    _, engines = web
    write_config(ws.root, engines.server.base, empty_pages=2)
    add_terms(ws, catalog, "faces", [STUCK_TERM])
    (report,) = run_crawl(ws, catalog, ["bing"], limit=100).searches
    assert report.state == "done" and report.counts.found == 35  # one real page, then two repeats
    assert len(_requests(engines, "/images/async")) == 3
