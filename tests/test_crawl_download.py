"""The downloader against a loopback image host that injects faults: every recoverable image stored once,
every unrecoverable one recorded with its reason, no crash; politeness limits hold."""

from __future__ import annotations

import time
from functools import partial
from pathlib import Path

import pytest

from facecurate.catalog import Catalog, DownloadRow
from facecurate.crawl import run_crawl
from facecurate.crawl.download import Downloaded, Downloader
from facecurate.crawl.http import HostGate, Http
from facecurate.crawl.queries import add_terms
from facecurate.workspace import Workspace
from tests.fakeweb import FakeEngines, ImageHost, Item, http_settings, write_config

# fault -> (stored?, reason when not)
FAULTS: dict[str, tuple[bool, str | None]] = {
    "429-once": (True, None),         # Retry-After: 1, then the image
    "503-date": (True, None),         # Retry-After as an HTTP date
    "500-then-ok": (True, None),
    "redirect": (True, None),
    "hotlink": (True, None),          # 403 unless the Referer is the result page
    "500-always": (False, "http_500"),
    "slow": (False, "too_slow"),      # a trickling body: ended by the deadline, not retried
    "cut": (False, "truncated"),      # Content-Length promised, connection closed halfway
    "truncated-jpeg": (False, "truncated"),
    "html": (False, "not_an_image"),  # HTML served as image/jpeg
    "svg": (False, "not_an_image"),
    "huge": (False, "too_large"),     # announced over the byte cap
    "huge-chunked": (False, "too_large"),  # no length: cut off while streaming
    "small": (False, "too_small"),
    "loop": (False, "redirect_loop"),
    "404": (False, "http_404"),
    "noai": (False, "robots"),
    "noimageai": (False, "robots"),
}


_settings = partial(http_settings, read_timeout=2.0, total_timeout=5.0, retries=2, allow_private=True)


def _row(i: int, url: str, page: str | None = None) -> DownloadRow:
    return DownloadRow(url_id=i, url=url, rank=i, page_url=page, title=None, license=None, author=None,
                       engine="bing", query="q", label="l")


@pytest.mark.parametrize("processes", [1, 3], ids=["threads", "3-processes"])
def test_fault_matrix_through_a_whole_crawl(ws: Workspace, catalog: Catalog, processes: int):
    """Every hostile answer fails its own URL the same way whether finishing runs on threads or in worker
    processes ([crawl] processes)."""
    host = ImageHost()
    with host.server:
        items = [Item(host.server.url(f"/fault/{kind}/{100 + i}.jpg"), f"http://example.org/page/{i}", kind)
                 for i, kind in enumerate(FAULTS)]
        # the same content under two URLs, and a plain image found again under a cosmetic URL variant
        items += [Item(host.server.url("/img/7.jpg"), "http://example.org/a", "a"),
                  Item(host.server.url("/mirror/7.jpg"), "http://example.org/b", "b"),
                  Item(host.server.url("/img/7.jpg#again"), "http://example.org/c", "c")]
        engines = FakeEngines({"faults": items})
        with engines.server:
            # generous read timeout (a loaded CI machine), short total_timeout (the trickling body)
            write_config(ws.root, engines.server.base, max_bytes=200_000, total_timeout=1.5, read_timeout=5.0,
                         retries=2, processes=processes)
            add_terms(ws, catalog, "test", ["faults"])
            (report,) = run_crawl(ws, catalog, ["bing"], limit=100).searches
    assert report.state == "done"
    stored = {r["title"]: r for r in catalog.conn.execute("SELECT * FROM sources WHERE status='ok'")}
    failed = {r["title"]: r for r in catalog.conn.execute("SELECT * FROM sources WHERE status='failed'")}
    matrix = []
    for kind, (ok, reason) in FAULTS.items():
        got = "stored" if kind in stored else failed[kind]["error"] if kind in failed else "missing"
        matrix.append((kind, "stored" if ok else reason, got))
    assert [m for m in matrix if m[1] != m[2]] == [], matrix
    for kind in failed:  # every failure names its URL in the message, with the code in the catalog
        assert failed[kind]["location"] in failed[kind]["detail"]
    # recoverable faults: each stored exactly once; a redirect stores the content once under the asked URL
    recoverable = sum(ok for ok, _ in FAULTS.values())
    assert catalog.conn.execute("SELECT COUNT(*) FROM images").fetchone()[0] == recoverable + 1
    assert set(stored) == {k for k, (ok, _) in FAULTS.items() if ok} | {"a", "b"}
    assert stored["a"]["image_id"] == stored["b"]["image_id"]  # identical bytes, one image, two sources
    assert report.counts.found == len(FAULTS) + 2  # the #again variant is the same URL
    assert report.counts.new + report.counts.duplicate == recoverable + 2
    assert report.counts.failed_count == len(FAULTS) - recoverable
    assert len(report.failed) == report.counts.failed_count  # each failed URL listed, its message naming it
    assert all(f.item.startswith(host.server.base) and f.item in f.error for f in report.failed)
    # politeness: the 429 host was asked twice, a 404 once (never retried), the image URL once
    assert host.server.hits("/fault/429-once/100.jpg") == 2
    assert host.server.hits(f"/fault/404/{100 + list(FAULTS).index('404')}.jpg") == 1
    assert host.server.hits("/img/7.jpg") == 1
    # provenance of a stored source
    src = stored["redirect"]
    assert src["engine"] == "bing" and src["query"] == "faults" and src["page_url"].startswith("http://example.org/")
    assert src["http_status"] == 200 and src["rank"] >= 1 and src["retrieved_at"]
    for row in catalog.conn.execute("SELECT path FROM images"):
        assert ws.resolve(row["path"]).is_file()


def test_retry_after_is_honoured_without_waiting_for_real():
    host = ImageHost()
    waits: list[float] = []
    with host.server:
        http = Http(_settings(), sleep=waits.append)
        result = Downloader(http, 10**8, 32, workers=1).fetch(_row(1, host.server.url("/fault/429-once/5.jpg")))
    assert result.ok and result.fetched.attempts == 2
    assert 1.0 in waits  # Retry-After: 1 honoured exactly, not replaced by the backoff


def test_a_retry_after_beyond_the_cap_gives_up_as_rate_limited():
    host = ImageHost()
    waits: list[float] = []
    with host.server:
        http = Http(_settings(retry_after_max=0.5), sleep=waits.append)
        result = Downloader(http, 10**8, 32, workers=1).fetch(_row(1, host.server.url("/fault/429-once/5.jpg")))
    assert result.reason == "rate_limited" and "retry_after_max" in result.message and not waits


def test_backoff_grows_between_attempts():
    host = ImageHost()
    waits: list[float] = []
    with host.server:
        http = Http(_settings(retries=3, backoff=1.0, backoff_max=100.0), sleep=waits.append, rng=lambda: 0.0)
        result = http.get(host.server.url("/fault/500-always/1.jpg"))
    assert result.reason == "http_500" and result.attempts == 4
    assert waits == [0.5, 1.0, 2.0]  # base * 2^n, jitter at its floor


def test_identifiable_user_agent_and_referer_are_sent():
    host = ImageHost()
    with host.server:
        http = Http(_settings(contact="me@example.org"))
        Downloader(http, 10**8, 32, workers=1).fetch(_row(1, host.server.url("/img/3.jpg"), "http://example.org/p"))
    (req,) = host.server.requests
    assert "me@example.org" in req.headers["user-agent"]
    assert req.headers["referer"] == "http://example.org/p"


@pytest.mark.parametrize("per_host", [2, 6])
def test_per_host_cap_holds(per_host: int):
    host = ImageHost(delay=0.15)
    with host.server:
        http = Http(_settings(concurrency=8, per_host=per_host))
        with Downloader(http, 10**8, 32) as dl:
            results = list(dl.run([_row(i, host.server.url(f"/img/{i}.jpg")) for i in range(12)]))
    assert all(r.ok for r in results) and len(results) == 12
    assert host.max_inflight <= per_host
    if per_host > 2:
        assert host.max_inflight > 2  # the cap is a cap, not a serialiser


def test_host_gate_spaces_request_starts():
    now = [0.0]
    slept: list[float] = []

    def sleep(s: float) -> None:
        slept.append(s)
        now[0] += s

    gate = HostGate(per_host=4, rate=4.0, clock=lambda: now[0], sleep=sleep)
    for _ in range(3):
        with gate.slot("h:1"):
            pass
    with gate.slot("other:2"):
        pass  # another host is not delayed
    assert slept == [0.25, 0.25]
    gate.defer("h:1", 5.0)
    with gate.slot("h:1"):
        pass
    assert slept[-1] == pytest.approx(5.0)


def test_downloads_are_validated_by_decoding(tmp_path: Path):
    host = ImageHost()
    with host.server:
        http = Http(_settings())
        with Downloader(http, 10**8, 32) as dl:
            good = dl.fetch(_row(1, host.server.url("/img/11.jpg")))
            html = dl.fetch(_row(2, host.server.url("/fault/html/11.jpg")))
    assert good.ok and good.format == "JPEG" and (good.width, good.height) == (72, 64) and good.sha256
    assert html.reason == "not_an_image" and "image/jpeg" in html.message



@pytest.mark.timeout(90)  # a hang guard only
def test_a_hosts_slot_is_free_once_its_answer_is_in():
    """Decoding and writing happen after the request: with per_host = 1, the host's next URL is requested
    while the first one's body is still being finished (held here until that request has arrived)."""
    host = ImageHost()
    seen_while_finishing: list[bool] = []

    def prewrite(d: Downloaded) -> None:
        if d.row.url_id == 1:
            give_up = time.monotonic() + 30
            while len(host.server.requests) < 2 and time.monotonic() < give_up:
                time.sleep(0.01)
            seen_while_finishing.append(len(host.server.requests) == 2)

    with host.server:
        http = Http(_settings(concurrency=2, per_host=1))
        with Downloader(http, 10**8, 32, prewrite=prewrite) as dl:
            results = list(dl.run([_row(1, host.server.url("/img/1.jpg")), _row(2, host.server.url("/img/2.jpg"))]))
    assert all(r.ok for r in results) and len(results) == 2
    assert seen_while_finishing == [True]
    assert host.max_inflight == 1  # the cap on requests holds


def test_netrc_credentials_never_reach_an_image_host(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    """Search results name third-party hosts: a ~/.netrc entry for one is not sent (requests would add it as
    Basic auth when a session trusts the environment)."""
    (tmp_path / ".netrc").write_text("machine 127.0.0.1 login alice password secret\n", encoding="utf-8")
    (tmp_path / ".netrc").chmod(0o600)
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.setenv("NETRC", str(tmp_path / ".netrc"))
    for key in ("http_proxy", "https_proxy", "all_proxy", "no_proxy", "HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY",
                "NO_PROXY", "REQUESTS_CA_BUNDLE", "CURL_CA_BUNDLE"):
        monkeypatch.delenv(key, raising=False)
    host = ImageHost()
    with host.server:
        result = Downloader(Http(_settings()), 10**8, 32, workers=1).fetch(_row(1, host.server.url("/img/4.jpg")))
    assert result.ok
    (req,) = host.server.requests
    assert "authorization" not in req.headers


def test_pending_downloads_read_the_page_by_rank(ws: Workspace, catalog: Catalog):
    """Recording a result page reads that page's hits through the (run_id, rank) index, not the whole run."""
    plan = " ".join(r[3] for r in catalog.conn.execute(
        "EXPLAIN QUERY PLAN SELECT h.id FROM hits h WHERE h.run_id=? AND h.rank>? AND h.outcome IS NULL", (1, 35)))
    assert "hits_run_rank" in plan and "rank>?" in plan
