"""`facecurate engines check` and `engines replay` through the CLI, against loopback servers only: a table and
--json, a non-zero exit when an engine fails, the failed page saved, and the parser replayed on that page."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
from typer.testing import CliRunner

from facecurate.cli import app
from facecurate.workspace import Workspace
from tests.fakeweb import BLOCKED_TERM, CHANGED_TERM, FakeEngines, ImageHost, items_for, write_config

runner = CliRunner()
HTTP_ENGINES = ("bing", "duckduckgo", "google", "naver", "wikimedia")
FIXTURES = Path(__file__).parent / "fixtures" / "engines"


@pytest.fixture
def web() -> Iterator[tuple[ImageHost, FakeEngines]]:
    host = ImageHost()
    with host.server:
        engines = FakeEngines({"portrait": items_for(host, list(range(1, 12)))})
        with engines.server:
            yield host, engines


def _check(ws: Workspace, *args: str):
    return runner.invoke(app, ["engines", "check", "-w", str(ws.root), *args])


def test_check_passes_for_every_http_engine(ws: Workspace, web):
    _, engines = web
    write_config(ws.root, engines.server.base)
    args = [a for e in HTTP_ENGINES for a in ("--engine", e)]
    result = _check(ws, *args, "--json")
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    assert data["term"] == "portrait" and [c["engine"] for c in data["checks"]] == list(HTTP_ENGINES)
    for c in data["checks"]:
        assert c["reached"] and c["blocked"] is None and c["parsed"] > 0 and c["downloadable"], c
    table = _check(ws, *args)
    assert table.exit_code == 0 and "Every checked engine answers." in table.stdout
    print(table.stdout)


def test_check_fails_on_a_block_and_saves_the_page(ws: Workspace, web):
    _, engines = web
    write_config(ws.root, engines.server.base)
    result = _check(ws, "--engine", "bing", "--engine", "google", "--term", BLOCKED_TERM, "--json")
    assert result.exit_code == 1
    checks = {c["engine"]: c for c in json.loads(result.stdout)["checks"]}
    assert checks["bing"]["blocked"] == "captcha" and checks["google"]["blocked"] == "captcha"
    assert checks["bing"]["reached"] and not checks["bing"]["downloadable"]
    saved = Path(checks["bing"]["saved_page"])
    assert saved.is_file() and saved.parent.name == "crawl_pages"
    # the saved page replays to the same verdict
    replay = runner.invoke(app, ["engines", "replay", str(saved), "--engine", "bing", "--json"])
    assert replay.exit_code == 0, replay.output
    assert json.loads(replay.stdout)["verdict"] == "captcha"


def test_check_reports_a_changed_layout_and_no_contact(ws: Workspace, web):
    _, engines = web
    write_config(ws.root, engines.server.base, contact="")
    result = _check(ws, "--engine", "naver", "--engine", "wikimedia", "--term", CHANGED_TERM)
    assert result.exit_code == 1
    assert "layout_changed" in result.stdout and "FAILED" in result.stdout and "contact" in result.stdout


def test_replay_prints_what_the_parser_finds():
    result = runner.invoke(app, ["engines", "replay", str(FIXTURES / "naver_2026.html"), "--engine", "naver"])
    assert result.exit_code == 0, result.output
    text = " ".join(result.stdout.split())
    assert "results, 2 results" in text and "shopping" not in text
    data = json.loads(runner.invoke(app, ["engines", "replay", str(FIXTURES / "google_wml_2026.html"),
                                          "--engine", "google", "--json"]).stdout)
    assert data["verdict"] == "results" and [r["url"] for r in data["results"]] == \
        ["https://img.example/ada.jpg", "https://img.example/bo.webp"]
    assert data["results"][0]["thumbnail"] == "https://encrypted-tbn0.gstatic.com/images?q=tbn:ANd9GcQa1"


def test_a_stopped_crawl_offers_the_check(ws: Workspace, web):
    _, engines = web
    write_config(ws.root, engines.server.base)
    runner.invoke(app, ["queries", "add", "--label", "x", CHANGED_TERM, "-w", str(ws.root)])
    result = runner.invoke(app, ["crawl", "--engine", "bing", "-w", str(ws.root)])
    assert result.exit_code == 3
    assert "facecurate engines check --engine bing" in " ".join(result.output.split())
