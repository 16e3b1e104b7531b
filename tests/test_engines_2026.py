"""The engines as they answer in 2026 (docs/engines.md), end to end against loopback servers in those shapes:
DuckDuckGo's new parameters and headers, Google's feature-phone /imgres page, Naver's typed items, Bing's
empty-page retry and filters, Wikimedia's contact requirement, thumbnails and two-connection cap."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from facecurate.catalog import Catalog
from facecurate.crawl import run_crawl
from facecurate.crawl.engines import bing, duckduckgo, google, naver, wikimedia
from facecurate.crawl.http import HostGate
from facecurate.crawl.queries import add_terms
from facecurate.errors import ConfigError
from facecurate.workspace import Workspace
from tests.fakeweb import (
    BLOCKED_TERM,
    CONSENT_TERM,
    FLAKY_TERM,
    FakeEngines,
    ImageHost,
    items_for,
    write_config,
)

FIXTURES = Path(__file__).parent / "fixtures" / "engines"


@pytest.fixture
def web() -> Iterator[tuple[ImageHost, FakeEngines]]:
    host = ImageHost(delay=0.05)
    with host.server:
        engines = FakeEngines({"many faces": items_for(host, list(range(1, 41))),
                               FLAKY_TERM: items_for(host, [60, 61, 62])})
        with engines.server:
            yield host, engines


def _reqs(engines: FakeEngines, path: str):
    return [r for r in engines.server.requests if r.path == path]


def test_vqd_token_keeps_every_character():
    assert duckduckgo.parse_vqd('vqd="4-98765_abc"') == "4-98765_abc"
    assert duckduckgo.parse_vqd("vqd='4-98765_abc'") == "4-98765_abc"
    assert duckduckgo.parse_vqd("/d.js?q=x&vqd=4-98765_abc&p=1") == "4-98765_abc"
    assert duckduckgo.parse_vqd("no token here") is None


def test_duckduckgo_sends_the_2026_request(ws: Workspace, catalog: Catalog, web):
    _, engines = web
    write_config(ws.root, engines.server.base)
    add_terms(ws, catalog, "faces", ["many faces"])
    (report,) = run_crawl(ws, catalog, ["duckduckgo"], limit=25).searches
    assert report.state == "done", report.stopped
    assert report.counts.found == 25
    home = _reqs(engines, "/")[0]
    assert home.query["t"] == "h_" and home.query["iar"] == "images"
    pages = _reqs(engines, "/i.js")
    for r in pages:
        assert {k: r.query[k] for k in ("u", "bpia", "a", "ct", "l", "o")} == \
            {"u": "bing", "bpia": "1", "a": "h_", "ct": "US", "l": "us-en", "o": "json"}
        assert "f" not in r.query and "accept-language" not in r.headers
        assert r.headers["accept"] == "*/*" and "ah=us-en" in r.headers["cookie"]
        assert r.query["vqd"] == engines.vqd  # with letters and '_', whole
    assert [r.query.get("s") for r in pages] == [None, "10", "20"]


def test_google_plain_http_reads_imgres_links(ws: Workspace, catalog: Catalog, web):
    _, engines = web
    write_config(ws.root, engines.server.base)
    add_terms(ws, catalog, "faces", ["many faces", BLOCKED_TERM, CONSENT_TERM])
    reports = {r.term: r for r in run_crawl(ws, catalog, ["google"], limit=25).searches}
    main = reports["many faces"]
    assert main.state == "done", main.stopped
    assert main.counts.found == 25 and main.counts.new == 25
    reqs = _reqs(engines, "/wml/search")
    assert [r.query["start"] for r in reqs if r.query["q"] == "many faces"] == ["0", "10", "20"]
    assert all("Nokia" in r.headers["user-agent"] and r.query["tbm"] == "isch" for r in reqs)
    rows = catalog.conn.execute("SELECT location, page_url, title FROM sources ORDER BY rank").fetchall()
    assert rows[0]["location"].endswith("/img/1.jpg") and rows[0]["page_url"] == "http://example.org/page/1"
    assert rows[0]["title"] == "photo 1"
    assert reports[BLOCKED_TERM].stopped is not None and reports[BLOCKED_TERM].stopped.kind == "captcha"
    assert reports[CONSENT_TERM].stopped is not None and reports[CONSENT_TERM].stopped.kind == "consent"


def test_google_face_filter_is_a_setting(ws: Workspace, catalog: Catalog, web):
    _, engines = web
    write_config(ws.root, engines.server.base)
    text = (ws.root / "facecurate.toml").read_text()
    text = text.replace("[engines.google]\nbase_url", "[engines.google]\nface_only = true\nbase_url")
    (ws.root / "facecurate.toml").write_text(text)
    add_terms(ws, catalog, "faces", ["many faces"])
    run_crawl(ws, catalog, ["google"], limit=5)
    assert all(r.query.get("tbs") == "itp:face" for r in _reqs(engines, "/wml/search"))


def test_naver_keeps_image_items_only(ws: Workspace, catalog: Catalog, web):
    _, engines = web
    write_config(ws.root, engines.server.base)
    add_terms(ws, catalog, "faces", ["many faces"])
    (report,) = run_crawl(ws, catalog, ["naver"], limit=10).searches
    assert report.state == "done", report.stopped
    locations = [r[0] for r in catalog.conn.execute("SELECT location FROM sources")]
    assert len(locations) == 10 and not any("shopping.example" in u for u in locations)


def test_bing_asks_an_empty_page_again_and_filters_faces(ws: Workspace, catalog: Catalog, web):
    _, engines = web
    write_config(ws.root, engines.server.base)
    add_terms(ws, catalog, "faces", [FLAKY_TERM])
    (report,) = run_crawl(ws, catalog, ["bing"], limit=10).searches
    assert report.state == "done", report.stopped
    assert report.counts.found == 3
    first = [r for r in _reqs(engines, "/images/async") if r.query["first"] == "1"]
    assert len(first) == 2  # the empty answer, then the page
    assert all(r.query["qft"] == "+filterui:face-face" for r in first)  # on by default


def test_bing_filter_codes():
    assert bing.filters(True, "large", "share_commercially") == \
        "+filterui:face-face+filterui:imagesize-large+filterui:license-L2_L3_L4"
    assert bing.filters(False) == ""


def test_wikimedia_needs_a_contact(ws: Workspace, catalog: Catalog, web):
    _, engines = web
    write_config(ws.root, engines.server.base, contact="")
    add_terms(ws, catalog, "faces", ["many faces"])
    with pytest.raises(ConfigError, match=r"\[crawl\] contact"):
        run_crawl(ws, catalog, ["wikimedia"], limit=5)
    assert not _reqs(engines, "/w/api.php")  # refused before any request


def test_wikimedia_thumbnails_and_two_connections(ws: Workspace, catalog: Catalog, web):
    host, engines = web
    host.delay = 0.3  # downloads overlap: only the cap keeps them at two
    write_config(ws.root, engines.server.base, per_host=8, concurrency=8)
    text = (ws.root / "facecurate.toml").read_text()
    upload = host.server.base.split("//", 1)[1]
    text = text.replace("[engines.wikimedia]\n", f'[engines.wikimedia]\ndownload_hosts = "{upload}"\n')
    (ws.root / "facecurate.toml").write_text(text)
    add_terms(ws, catalog, "faces", ["many faces"])
    (report,) = run_crawl(ws, catalog, ["wikimedia"], limit=20).searches
    assert report.state == "done", report.stopped
    assert report.counts.new == 20
    api = _reqs(engines, "/w/api.php")[0]
    assert api.query["iiurlwidth"] == "2048"
    locations = [r[0] for r in catalog.conn.execute("SELECT location FROM sources")]
    assert all(u.endswith("?width=2048") for u in locations)
    assert host.max_inflight == 2  # Wikimedia's robot policy, though [crawl] per_host allows 8
    span = host.starts[-1] - host.starts[0]
    print(f"wikimedia download host: {len(host.starts)} requests, at most {host.max_inflight} at once, "
          f"{(len(host.starts) - 1) / span:.2f} req/s")


def test_host_gate_limit_only_tightens():
    gate = HostGate(4, 8.0)
    gate.limit("up.example", 8, 100.0)  # looser than [crawl]: the [crawl] caps stay
    assert gate._caps["up.example"] == (4, 1 / 8.0)
    gate.limit("up.example", 2, 4.0)
    assert gate._caps["up.example"] == (2, 0.25)


@pytest.mark.parametrize(("engine", "name", "expected"), [
    ("bing", "bing_async_2026.html", 2),
    ("duckduckgo", "duckduckgo_ijs_2026.json", 2),
    ("google", "google_wml_2026.html", 2),
    ("naver", "naver_2026.html", 2),
    ("wikimedia", "wikimedia_api_2026.json", 2),
])
def test_fixtures_of_2026_answers_parse(engine: str, name: str, expected: int):
    from facecurate.crawl.check import parse_page

    found = parse_page(engine, (FIXTURES / name).read_text(encoding="utf-8"))
    assert found.error is None and len(found.results) == expected
    assert all(r.url.startswith("https://") for r in found.results)


@pytest.mark.parametrize("name", ["google_sorry_2026.html", "google_consent_2026.html", "bing_empty_2026.html",
                                  "duckduckgo_challenge_2026.html"])
def test_failure_fixtures_are_recognised(name: str):
    from facecurate.crawl.check import parse_page

    engine = name.split("_", 1)[0]
    found = parse_page(engine, (FIXTURES / name).read_text(encoding="utf-8"))
    assert not found.results and found.verdict in ("captcha", "consent", "empty", "layout_changed")
    assert found.verdict == {"google_sorry_2026.html": "captcha", "google_consent_2026.html": "consent",
                             "bing_empty_2026.html": "empty", "duckduckgo_challenge_2026.html": "captcha"}[name]


def test_parsers_module_names():  # the modules the replay command dispatches to
    assert {m.__name__.rsplit(".", 1)[1] for m in (bing, duckduckgo, google, naver, wikimedia)} == \
        {"bing", "duckduckgo", "google", "naver", "wikimedia"}
