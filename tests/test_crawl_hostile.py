"""Engines and hosts that answer whatever they like: each crawl ends, records every URL with a reason, and
stores the good images, with no traceback. Real loopback servers answering in each engine's shape with the
wrong types, escapes SQLite refuses, numbers no integer holds, nesting past the JSON parser's limit, and pages
whose markup costs a naive reader quadratic time."""

from __future__ import annotations

import hashlib
import html
import json
from collections.abc import Callable, Iterator

import pytest

from facecurate.catalog import Catalog
from facecurate.crawl import run_crawl
from facecurate.crawl.engines import google_browser
from facecurate.crawl.queries import add_terms
from facecurate.workspace import Workspace
from tests.fakeweb import (
    FakeEngines,
    ImageHost,
    Item,
    LoopbackServer,
    Reply,
    Request,
    ScriptedServer,
    items_for,
    make_jpeg,
    write_config,
)

TERM = "faces"
JUNK = "http://[::1/x.jpg"  # does not even split: recorded as bad_url, never requested


def _bing(good: str, junk: str) -> Callable[[Request], Reply]:
    def card(meta: str, size: str) -> str:
        return (f'<li><div class="iuscp"><a class="iusc" m="{html.escape(meta)}"></a>'
                f'<span class="nowrap">{size}</span></div></li>')

    page = ('<div class="dgControl">' + card(json.dumps({"murl": good, "t": 5, "purl": [1], "turl": {}}),
                                              "9" * 5000 + " x 64")
            + card(json.dumps({"murl": junk, "t": "a\\ud800b"}).replace("\\\\ud800", "\\ud800"), "1 x 1")
            + card("[" * 100_000, "1 x 1") + "</div>")
    return lambda req: Reply(200, page.encode(), {"Content-Type": "text/html"}) if req.query.get("first") == "1" \
        else Reply(200, b'<div class="dgControl"></div>', {"Content-Type": "text/html"})


def _duckduckgo(good: str, junk: str) -> Callable[[Request], Reply]:
    body = ('{"results": [{"image": "GOOD", "title": 5, "url": [1, 2], "width": 1e999, "height": BIG, '
            '"thumbnail": {"a": 1}}, {"image": "JUNK", "title": "a\\ud800b", "url": "http://p.example/\\udfff"}, '
            '{"image": 7}, "not an object"], "next": {"s": 10}}').replace("GOOD", good).replace("JUNK", junk) \
        .replace("BIG", "9" * 4000)

    def answer(req: Request) -> Reply:
        if req.path == "/":
            return Reply(200, b'vqd="4-1"', {"Content-Type": "text/html"})
        return Reply(200, body.encode(), {"Content-Type": "application/json"})
    return answer


def _naver(good: str, junk: str) -> Callable[[Request], Reply]:
    body = ("<script>var imageSearchTabData = {content: {items: ["
            f"{{originalUrl: '{good}', title: 5, link: {{a: 1}}, orgWidth: 1e999, orgHeight: [1]}},"
            f"{{originalUrl: '{junk}', title: 'a\\uD800b', link: 'http://p.example/\\uDFFF'}},"
            "{originalUrl: 5}, 'text', null]}};</script>")
    return lambda req: Reply(200, body.encode(), {"Content-Type": "text/html; charset=utf-8"})


def _wikimedia(good: str, junk: str) -> Callable[[Request], Reply]:
    pages = {"1": {"index": 1e999, "title": 5, "imageinfo": [{"url": good, "descriptionurl": [1], "width": "wide",
                                                              "extmetadata": [1], "user": {"a": 1}}]},
             "2": {"index": 2, "imageinfo": [{"url": junk, "extmetadata": {"Artist": {"value": "a\ud800b"}}}]},
             "3": {"imageinfo": {"0": "not a list"}}, "4": {"imageinfo": ["not an object"]},
             "5": {"imageinfo": [{"url": 5}]}, "6": "not an object"}
    body = json.dumps({"query": {"pages": pages}, "continue": [1]})
    return lambda req: Reply(200, body.encode(), {"Content-Type": "application/json"})


ENGINES = {"bing": _bing, "duckduckgo": _duckduckgo, "naver": _naver, "wikimedia": _wikimedia}


@pytest.fixture
def host() -> Iterator[ImageHost]:
    host = ImageHost()
    with host.server:
        yield host


@pytest.mark.parametrize("engine", sorted(ENGINES))
def test_answers_of_the_wrong_shape_drop_the_odd_fields_and_crawl_the_rest(
        engine: str, ws: Workspace, catalog: Catalog, host: ImageHost):
    """Numbers where text belongs, lists where a page URL belongs, infinite or 5,000-digit sizes, lone
    surrogates (SQLite refuses them) and a URL that does not split: the good image is stored, the junk URL is
    recorded as bad_url, the odd fields are left empty."""
    good = host.server.url("/img/1.jpg")
    with LoopbackServer(ENGINES[engine](good, JUNK)) as engines:
        write_config(ws.root, engines.base)
        add_terms(ws, catalog, "x", [TERM])
        (report,) = run_crawl(ws, catalog, [engine], limit=10).searches
    assert report.state == "done", report.stopped
    rows = {r["location"]: r for r in catalog.conn.execute("SELECT * FROM sources")}
    assert set(rows) == {good, JUNK}
    assert rows[good]["status"] == "ok" and rows[good]["page_url"] is None
    assert rows[good]["title"] is None and rows[good]["author"] is None
    assert rows[JUNK]["status"] == "failed" and rows[JUNK]["error"] == "bad_url"
    assert "\ufffd" in (rows[JUNK]["title"] or rows[JUNK]["author"] or "")  # stored, the surrogate replaced


@pytest.mark.parametrize("engine, body", [
    ("duckduckgo", '{"results": ' + "[" * 100_000 + "]" * 100_000 + "}"),
    ("wikimedia", '{"continue": {"gsroffset": ' + "1" * 5000 + "}}"),
    ("naver", "<script>var imageSearchTabData = " + "{a: " * 100_000 + "1" + "}" * 100_000 + ";</script>"),
])
def test_json_nested_past_the_parsers_limit_is_a_changed_layout(engine: str, body: str, ws: Workspace,
                                                                catalog: Catalog):
    def answer(req: Request) -> Reply:
        if engine == "duckduckgo" and req.path == "/":
            return Reply(200, b'vqd="4-1"', {"Content-Type": "text/html"})
        return Reply(200, body.encode(), {"Content-Type": "application/json"})

    with LoopbackServer(answer) as engines:
        write_config(ws.root, engines.base)
        add_terms(ws, catalog, "x", [TERM])
        (report,) = run_crawl(ws, catalog, [engine], limit=10).searches
    assert report.state == "blocked" and report.stopped is not None
    assert report.stopped.kind == "layout_changed"


DEEP = 100_000


@pytest.mark.timeout(120)  # the readers took a quarter of an hour and more on these pages, ~1 s now
@pytest.mark.parametrize("engine, page", [
    ("bing", '<div class="dgControl">' + '<span class="nowrap">' * DEEP + "x<i></i>" * DEEP),
    ("bing", '<div class="dgControl">' + "<div>" * DEEP + "</b>" * DEEP),
    ("google", "<div>" * DEEP + "x<i></i>" * DEEP + "did not match any image results"),
    ("duckduckgo", json.dumps({"results": [{"image": "http://127.0.0.1:9/x.jpg", "title": "<" * 1_000_000}]})),
])
def test_pages_built_to_take_quadratic_time_are_read_in_linear_time(engine: str, page: str, ws: Workspace,
                                                                    catalog: Catalog):
    """Nesting tens of thousands of elements around tens of thousands of others (each step of a naive reader,
    and of BeautifulSoup's tree builder, walks the open ones), or a title of a million '<' (a tag pattern scanned
    to the end from each): the search ends as a result or a changed layout, not after hours."""
    def answer(req: Request) -> Reply:
        if req.path == "/":
            return Reply(200, b'vqd="4-1"', {"Content-Type": "text/html"})
        return Reply(200, page.encode(), {"Content-Type": "text/html"})

    with LoopbackServer(answer) as engines:
        write_config(ws.root, engines.base, retries=0, connect_timeout=0.5)
        add_terms(ws, catalog, "x", [TERM])
        (report,) = run_crawl(ws, catalog, [engine], limit=1).searches
    assert report.state == "done" or (report.stopped is not None and report.stopped.kind == "layout_changed")


JPEG_BODY = make_jpeg(7)
HOST_ANSWERS = {  # path -> the raw answer, and the outcome it must be recorded with
    # "²" is a digit to str.isdigit() and no number to int() or float()
    "/length-superscript.jpg": (b"HTTP/1.1 200 OK\r\nContent-Type: image/jpeg\r\nContent-Length: \xb2\r\n\r\n"
                                + JPEG_BODY, "ok"),
    "/retry-superscript.jpg": (b"HTTP/1.1 429 Slow\r\nRetry-After: \xb2\r\nContent-Length: 0\r\n\r\n", "http_429"),
    "/location-unsplittable.jpg": (b"HTTP/1.1 302 Found\r\nLocation: http://[::1\r\nContent-Length: 0\r\n\r\n",
                                   "bad_url"),
}


def test_image_hosts_answers_no_parser_expects_are_recorded(ws: Workspace, catalog: Catalog):
    def answer(line: str) -> bytes:
        return HOST_ANSWERS[line.split()[1]][0]

    with ScriptedServer(answer, keep=False) as host:
        items = [Item(host.url(path), f"http://example.org/{i}", "t") for i, path in enumerate(HOST_ANSWERS)]
        engines = FakeEngines({TERM: items})
        with engines.server:
            write_config(ws.root, engines.server.base, retries=1)
            add_terms(ws, catalog, "x", [TERM])
            (report,) = run_crawl(ws, catalog, ["bing"], limit=10).searches
    assert report.state == "done", report.stopped
    got = {r["location"]: r["error"] or r["status"] for r in catalog.conn.execute("SELECT * FROM sources")}
    assert got == {host.url(path): outcome for path, (_, outcome) in HOST_ANSWERS.items()}


@pytest.mark.parametrize("engine, charset", [("bing", "idna"), ("duckduckgo", "idna"), ("duckduckgo", "hex"),
                                             ("duckduckgo", "unicode_escape")])
def test_a_result_page_with_a_charset_no_text_decodes_with_is_read_as_utf8(engine: str, charset: str, ws: Workspace,
                                                                            catalog: Catalog, host: ImageHost):
    """``charset=idna`` names a codec that refuses errors="replace", ``hex`` one that is not text at all, and
    ``unicode_escape`` one that makes a lone surrogate of ``\\ud800`` (here in DuckDuckGo's token, which is
    then sent in a URL that nothing can encode it in)."""
    engines = FakeEngines({TERM: items_for(host, [1, 2])})
    engines.vqd = "4-\\ud800x" if charset == "unicode_escape" else engines.vqd
    plain = engines.handle

    def answer(req: Request) -> Reply:
        if charset == "unicode_escape" and req.path == "/i.js":
            req.query["vqd"] = engines.vqd  # the token as sent (the surrogate replaced) is the one it gave
        reply = plain(req)
        reply.headers["Content-Type"] = f"text/html; charset={charset}"
        return reply

    engines.server.handler = answer
    with engines.server:
        write_config(ws.root, engines.server.base)
        add_terms(ws, catalog, "x", [TERM])
        (report,) = run_crawl(ws, catalog, [engine], limit=10).searches
    assert report.state == "done", report.stopped
    assert report.counts.new == 2


def test_an_engine_refusing_with_a_retry_after_no_number_is_rate_limited(ws: Workspace, catalog: Catalog):
    with LoopbackServer(lambda req: Reply(429, b"", {"Retry-After": "\xb2"})) as engines:
        write_config(ws.root, engines.base, retries=1)
        add_terms(ws, catalog, "x", [TERM])
        (report,) = run_crawl(ws, catalog, ["bing"], limit=10).searches
    assert report.state == "blocked" and report.stopped is not None
    assert report.stopped.kind == "rate_limited"


def test_with_finishing_processes_every_outcome_is_recorded_under_its_own_url(ws: Workspace, catalog: Catalog,
                                                                             host: ImageHost):
    """Many downloads ending at once (URLs refused before any request, images between them) reach the
    finishing workers from many threads: each image is stored under the URL it came from, and each failure's
    message names its own URL (answers are matched to jobs by order: a job queued first and sent second took
    another's outcome)."""
    terms = [f"{TERM} {n}" for n in range(3)]  # the race is a matter of chance: three searches of 400 give it room
    results = {term: [Item(f"ftp://files.example/{n}/{i}.jpg", f"http://example.org/{i}", "t") if i % 5 else
                      Item(host.server.url(f"/img/{n * 1000 + i}.jpg"), f"http://example.org/{i}", "t")
                      for i in range(1, 401)] for n, term in enumerate(terms)}
    engines = FakeEngines(results)
    with engines.server:
        write_config(ws.root, engines.server.base, processes=3, concurrency=16, per_host=16)
        add_terms(ws, catalog, "x", terms)
        reports = run_crawl(ws, catalog, ["bing"], limit=400).searches
    assert [(r.state, r.counts.found) for r in reports] == [("done", 400)] * 3
    rows = catalog.conn.execute("SELECT s.location, s.status, s.detail, i.sha256 FROM sources s "
                                "LEFT JOIN images i ON i.id = s.image_id").fetchall()
    assert len(rows) == 1200
    for r in rows:
        if r["status"] == "ok":
            assert r["sha256"] == hashlib.sha256(make_jpeg(int(r["location"].rsplit("/", 1)[1][:-4]))).hexdigest()
        else:
            assert r["detail"].startswith(r["location"] + ":"), (r["location"], r["detail"])
    assert sum(r["status"] == "ok" for r in rows) == 240


def test_a_page_url_no_header_can_carry_is_sent_escaped_as_the_referer(ws: Workspace, catalog: Catalog,
                                                                      host: ImageHost):
    """Engines return page URLs with IDN hosts and Korean paths, or worse: the image behind hot-link
    protection (which wants the page as Referer) is still fetched, not failed as bad_url."""
    pages = ["http://example.org/블로그/사진?q=한국", "http://example.org/a\r\nX-Injected: 1", "http://例え.jp/x",
             "javascript:alert(1)\u2028"]
    items = [Item(host.server.url(f"/fault/hotlink/{i}.jpg"), page, "t") for i, page in enumerate(pages, 1)]
    engines = FakeEngines({TERM: items})
    with engines.server:
        write_config(ws.root, engines.server.base)
        add_terms(ws, catalog, "x", [TERM])
        (report,) = run_crawl(ws, catalog, ["bing"], limit=10).searches
    assert report.state == "done", report.stopped
    got = {r["location"]: r["error"] or r["status"] for r in catalog.conn.execute("SELECT * FROM sources")}
    assert got == {items[0].url: "ok", items[1].url: "ok", items[2].url: "http_403", items[3].url: "http_403"}
    referers = [r.headers.get("referer") for r in host.server.requests]
    assert "http://example.org/%EB%B8%94%EB%A1%9C%EA%B7%B8/%EC%82%AC%EC%A7%84?q=%ED%95%9C%EA%B5%AD" in referers
    assert "http://xn--r8jz45g.jp/x" in referers and not any("\n" in (r or "") for r in referers)


def test_a_result_page_past_the_byte_cap_stops_the_search_saying_so(ws: Workspace, catalog: Catalog):
    page = b'<div class="dgControl">' + b"<li>" * 100_000
    with LoopbackServer(lambda req: Reply(200, page, {"Content-Type": "text/html"}, chunked=True)) as engines:
        write_config(ws.root, engines.base, max_bytes=100_000)
        add_terms(ws, catalog, "x", [TERM])
        (report,) = run_crawl(ws, catalog, ["bing"], limit=10).searches
    assert report.state == "blocked" and report.stopped is not None and report.stopped.kind == "unreachable"
    assert "100,000-byte cap ([crawl] max_bytes)" in report.stopped.message


def test_links_that_do_not_split_are_skipped_not_raised(ws: Workspace, catalog: Catalog, host: ImageHost):
    """Google's /imgres link, DuckDuckGo's next link and the browser panel's page link as ``http://[::1…``."""
    good = host.server.url("/img/3.jpg")
    imgres = html.escape(f"/imgres?imgurl={good}&imgrefurl=http://example.org/p&w=72&h=64")
    google_page = (f'<a href="http://[::1/imgres?imgurl=http://a.example/x.jpg">junk</a>'
                   f'<a href="{imgres}"><img src="http://[::1/thumb" alt="t"></a>')
    ddg = json.dumps({"results": [{"image": good, "url": "http://example.org/p"}], "next": "http://[::1/i.js?s=10"})

    def answer(req: Request) -> Reply:
        if req.path == "/wml/search":
            body = google_page if req.query.get("start") == "0" else "did not match any image results"
            return Reply(200, body.encode(), {"Content-Type": "text/html"})
        if req.path == "/":
            return Reply(200, b'vqd="4-1"', {"Content-Type": "text/html"})
        return Reply(200, ddg.encode(), {"Content-Type": "application/json"})

    with LoopbackServer(answer) as engines:
        write_config(ws.root, engines.base)
        add_terms(ws, catalog, "x", [TERM])
        reports = run_crawl(ws, catalog, ["google", "duckduckgo"], limit=10).searches
    assert [(r.engine, r.state, r.counts.found) for r in reports] == [("google", "done", 1), ("duckduckgo", "done", 1)]
    assert [r["location"] for r in catalog.conn.execute("SELECT location FROM sources")] == [good]
    panel = google_browser.parse_panel(f'<a href="http://[::1/page"><img src="{good}" alt="t"></a>',
                                       "https://www.google.com")
    assert panel is not None and panel.url == good and panel.page_url is None


def test_an_answer_no_parser_foresaw_stops_that_search_only(ws: Workspace, catalog: Catalog, host: ImageHost,
                                                            monkeypatch: pytest.MonkeyPatch):
    """The last line of defence against live engines: a parser that raises on an answer (here made to, on the
    second term's page) stops that search as a changed layout; the other searches and their images stand."""
    from facecurate.crawl.engines import bing

    read = bing.parse_results

    def parse(text: str) -> list[bing.Result]:
        if "broken" in text:
            raise RuntimeError("an answer nobody foresaw")
        return read(text)

    monkeypatch.setattr(bing, "parse_results", parse)
    engines = FakeEngines({"first": items_for(host, [1, 2]),
                           "second": [Item(host.server.url("/img/3.jpg"), "http://example.org/", "broken")]})
    with engines.server:
        write_config(ws.root, engines.server.base)
        add_terms(ws, catalog, "x", ["first", "second"])
        reports = run_crawl(ws, catalog, ["bing"], limit=10).searches
    assert [(r.term, r.state) for r in reports] == [("first", "done"), ("second", "blocked")]
    stopped = reports[1].stopped
    assert stopped is not None and stopped.kind == "layout_changed" and "RuntimeError" in stopped.message
    assert reports[0].counts.new == 2


def test_a_download_the_client_did_not_foresee_fails_that_url_only(ws: Workspace, catalog: Catalog,
                                                                   host: ImageHost, monkeypatch: pytest.MonkeyPatch):
    """The same last line of defence for image hosts: the HTTP client made to raise on one URL records that
    URL as worker_crashed (retried by the next crawl); the other images are stored."""
    from facecurate.crawl.http import Http

    get = Http.get

    def fetch(self: Http, url: str, *args: object, **kwargs: object) -> object:
        if url.endswith("/2.jpg"):
            raise RuntimeError("an answer nobody foresaw")
        return get(self, url, *args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(Http, "get", fetch)
    engines = FakeEngines({TERM: items_for(host, [1, 2, 3])})
    with engines.server:
        write_config(ws.root, engines.server.base, processes=1)
        add_terms(ws, catalog, "x", [TERM])
        (report,) = run_crawl(ws, catalog, ["bing"], limit=10).searches
    assert report.state == "done" and report.counts.new == 2
    failed = catalog.conn.execute("SELECT location, error, detail FROM sources WHERE status='failed'").fetchall()
    assert [(r["location"], r["error"]) for r in failed] == [(host.server.url("/img/2.jpg"), "worker_crashed")]
    assert "RuntimeError" in failed[0]["detail"]
