"""Per-query settings: `term | engines=bing,naver | limit=300` in queries/<label>.txt (or on the command line),
checked like the settings table, kept in the catalog, shown by `queries list`, and obeyed by the crawl."""

from __future__ import annotations

import json
from collections.abc import Iterator

import pytest
from typer.testing import CliRunner

from facecurate.catalog import Catalog
from facecurate.cli import app
from facecurate.crawl import run_crawl
from facecurate.crawl.queries import add_terms, format_entry, list_queries, mirror_path, split_entry, sync_from_files
from facecurate.errors import ConfigError
from facecurate.workspace import Workspace
from tests.fakeweb import FakeEngines, ImageHost, items_for, write_config

runner = CliRunner()


@pytest.fixture
def web() -> Iterator[FakeEngines]:
    host = ImageHost()
    with host.server:
        engines = FakeEngines({"many faces": items_for(host, list(range(1, 41))),
                               "plain": items_for(host, list(range(100, 130)))})
        with engines.server:
            yield engines


def test_entry_round_trip_and_checks():
    term, settings = split_entry("  smiling  face | engines=naver,bing | limit=7 | face_only=no | license=share")
    assert term == "smiling face"
    assert settings == {"engines": ["naver", "bing"], "limit": 7, "face_only": False, "license": "share"}
    assert split_entry(format_entry(term, settings)) == (term, settings)
    for bad in ("x | engines=bingo", "x | limit=0", "x | limit=many", "x | size=huge", "x | colour=red",
                "x | limit"):
        with pytest.raises(ConfigError):
            split_entry(bad, "queries/x.txt, line 1")


def test_file_settings_are_tracked_listed_and_crawled(ws: Workspace, catalog: Catalog, web: FakeEngines):
    write_config(ws.root, web.server.base, engines="bing,duckduckgo")
    add_terms(ws, catalog, "faces", ["plain"])
    path = mirror_path(ws, "faces")
    path.write_text(path.read_text() + "many faces | engines=naver,bing | limit=12 | face_only=false\n")
    listing = list_queries(ws, catalog, "faces")  # a preview: nothing written yet
    assert listing.engines == ["bing", "duckduckgo", "naver"]
    mine = next(q for q in listing.queries if q.term == "many faces")
    assert mine.settings == {"engines": ["naver", "bing"], "limit": 12, "face_only": False}
    assert [p.state for p in mine.pairs] == ["pending", "skipped", "pending"]
    reports = run_crawl(ws, catalog, limit=None).searches
    pairs = {(r.term, r.engine): r for r in reports}
    assert set(pairs) == {("plain", "bing"), ("plain", "duckduckgo"), ("many faces", "naver"),
                          ("many faces", "bing")}
    assert pairs["many faces", "naver"].counts.found == 12 and pairs["many faces", "bing"].counts.found == 12
    assert pairs["plain", "bing"].counts.found == 30  # the workspace's limit (300) and engines
    bing = [r.query for r in web.server.requests if r.path == "/images/async"]
    assert [q.get("qft") for q in bing if q["q"] == "many faces"] == [None]  # the query's face_only=false
    assert {q.get("qft") for q in bing if q["q"] == "plain"} == {"+filterui:face-face"}
    listing = list_queries(ws, catalog, "faces")
    assert listing.pending == 0  # a query is done once its own engines ran
    assert "many faces" not in path.read_text()


def test_command_line_entry_and_list_json(ws: Workspace, catalog: Catalog, web: FakeEngines):
    write_config(ws.root, web.server.base)
    result = runner.invoke(app, ["queries", "add", "--label", "x", "many faces | engines=wikimedia | limit=3",
                                 "-w", str(ws.root)])
    assert result.exit_code == 0, result.output
    assert "many faces | engines=wikimedia | limit=3" in mirror_path(ws, "x").read_text()
    data = json.loads(runner.invoke(app, ["queries", "list", "-w", str(ws.root), "--json"]).stdout)
    assert data["queries"][0]["settings"] == {"engines": ["wikimedia"], "limit": 3}
    table = runner.invoke(app, ["queries", "list", "-w", str(ws.root)])
    assert "engines=wikimedia" in " ".join(table.stdout.split())
    bad = runner.invoke(app, ["queries", "add", "--label", "x", "y | engines=altavista", "-w", str(ws.root)])
    assert bad.exit_code != 0 and "altavista" in bad.output


def test_editing_settings_of_a_tracked_term(ws: Workspace, catalog: Catalog, web: FakeEngines):
    write_config(ws.root, web.server.base)
    add_terms(ws, catalog, "faces", ["plain"])
    path = mirror_path(ws, "faces")
    path.write_text(path.read_text().replace("plain\n", "plain | limit=5\n"))
    sync_from_files(ws, catalog, ["bing"])
    (q,) = catalog.tracked_queries("faces")
    assert q.settings == {"limit": 5}
    (report,) = run_crawl(ws, catalog, ["bing"]).searches
    assert report.counts.found == 5
