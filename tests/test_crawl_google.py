"""The google engine in real headless Chromium (Debian chromium + chromium-driver) against a loopback page
with Google's structure: a grid that lazy-loads on scroll, thumbnails that open a side panel on click, and a
/sorry/ CAPTCHA redirect. Skipped on a developer machine without Chromium; in CI (CI=true) a missing
browser fails the test, because .ci/run installs it."""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

from facecurate.catalog import Catalog
from facecurate.crawl import run_crawl
from facecurate.crawl.queries import add_terms
from facecurate.workspace import Workspace
from tests.fakeweb import BLOCKED_TERM, FakeEngines, ImageHost, items_for, write_config

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
CHROMEDRIVER = shutil.which("chromedriver") or "/usr/bin/chromedriver"


@pytest.fixture(scope="module", autouse=True)
def _browser_present() -> None:
    missing = [p for p in (CHROMIUM, CHROMEDRIVER) if not Path(p).is_file()]
    if not missing:
        return
    message = f"{', '.join(missing)} missing: apt-get install chromium chromium-driver"
    if os.environ.get("CI", "").lower() == "true":
        pytest.fail(f"CI must run the google engine in real Chromium: {message}")
    pytest.skip(message)


@pytest.fixture
def web() -> Iterator[tuple[ImageHost, FakeEngines]]:
    host = ImageHost()
    with host.server:
        engines = FakeEngines({"smiling face": items_for(host, list(range(1, 46))),
                               "two faces": items_for(host, [7, 500])})
        with engines.server:
            yield host, engines


def test_google_scrolls_clicks_and_takes_full_size_images(ws: Workspace, catalog: Catalog, web):
    _, engines = web
    write_config(ws.root, engines.server.base, chromium=CHROMIUM, chromedriver=CHROMEDRIVER)
    add_terms(ws, catalog, "faces", ["smiling face", "two faces", BLOCKED_TERM])
    reports = {r.term: r for r in run_crawl(ws, catalog, ["google-browser"], limit=30).searches}
    main = reports["smiling face"]
    assert main.state == "done", main.stopped
    # 30 results need more than the 20 thumbnails of the first screen: lazy loading on scroll worked
    assert main.counts.found == 30 and main.counts.new == 30
    rows = catalog.conn.execute("SELECT location, page_url, title, rank FROM sources WHERE query='smiling face' "
                                "ORDER BY rank").fetchall()
    assert [r["rank"] for r in rows] == list(range(1, 31))
    for r in rows:  # the full-size image, never the gstatic-like thumbnail
        assert "/img/" in r["location"] and "tbn:" not in r["location"]
        seed = r["location"].rsplit("/", 1)[1].split(".")[0]
        assert r["page_url"] == f"http://example.org/page/{seed}" and r["title"] == f"photo {seed}"
    second = reports["two faces"]
    assert second.state == "done" and second.counts.found == 2
    assert second.counts.duplicate == 1 and second.counts.new == 1  # image 7 was already stored
    blocked = reports[BLOCKED_TERM]
    assert blocked.state == "blocked" and blocked.stopped is not None and blocked.stopped.kind == "captcha"
    assert Path(blocked.stopped.saved_page or "").is_file()


def test_google_browser_reads_the_2026_grid_of_encrypted_tbn_thumbnails(ws: Workspace, catalog: Catalog, web):
    _, engines = web
    engines.google_layout = "2026"  # no div[jsname="dTDiAc"]: only img[src^="https://encrypted-tbn"]
    write_config(ws.root, engines.server.base, chromium=CHROMIUM, chromedriver=CHROMEDRIVER)
    add_terms(ws, catalog, "faces", ["smiling face"])
    (report,) = run_crawl(ws, catalog, ["google-browser"], limit=25).searches
    assert report.state == "done", report.stopped
    assert report.counts.found == 25 and report.counts.new == 25
    rows = catalog.conn.execute("SELECT location FROM sources ORDER BY rank").fetchall()
    assert all("/img/" in r["location"] and "tbn:" not in r["location"] for r in rows)
