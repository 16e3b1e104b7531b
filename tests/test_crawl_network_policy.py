"""Issue 13, must-haves 3 and 4: no server holds a download thread past one deadline, whatever it trickles, and
by default no search result or redirect reaches an address inside a network (loopback, private, link-local,
metadata, multicast, reserved; v4 and v6) or a non-http(s) scheme. Real loopback servers throughout."""

from __future__ import annotations

import base64
import socket
import time
from collections.abc import Iterator
from functools import partial
from typing import Any

import pytest

from facecurate.catalog import Catalog, DownloadRow
from facecurate.crawl import run_crawl
from facecurate.crawl.download import Downloader
from facecurate.crawl.http import TRANSIENT, Http
from facecurate.crawl.http.guard import Attempt, Watchdog, blocked_range
from facecurate.crawl.queries import add_terms
from facecurate.workspace import Workspace
from tests.fakeweb import (
    FakeEngines,
    ImageHost,
    Item,
    LoopbackServer,
    Reply,
    Request,
    TrickleServer,
    http_settings,
    items_for,
    make_jpeg,
    write_config,
)

_settings = partial(http_settings, total_timeout=1.5, retries=3)


def _row(i: int, url: str) -> DownloadRow:
    return DownloadRow(url_id=i, url=url, rank=i, page_url=None, title=None, license=None, author=None,
                       engine="bing", query="q", label="l")


# -- bounded time -------------------------------------------------------------------------------------------

# The trickling answers below take minutes to finish and never trip the per-read timeout, so without the URL's
# deadline these calls would run until the servers ran dry; the timeout marks only turn such a hang into a failure.
@pytest.mark.timeout(60)
@pytest.mark.parametrize("stage", ["status", "headers", "body"])
def test_a_trickle_anywhere_in_the_answer_ends_at_the_deadline_and_is_not_retried(stage: str):
    # one byte every 0.3 s never trips the 5 s read timeout; only the 1.5 s deadline of the attempt can end it
    with TrickleServer(stage, byte_every=0.3) as server:
        http = Http(_settings(allow_private=True))
        result = http.get(server.url("/1.jpg"))
        http.close()
    assert result.reason == "too_slow" and result.reason not in TRANSIENT  # the deadline, not a read timeout
    assert "total_timeout" in result.message and server.url("/1.jpg") in result.message
    assert result.body is None
    assert result.attempts == 1 and server.connections == 1  # a trickle is not retried


def test_the_deadline_is_shared_by_the_attempts_of_one_url():
    """A server that answers 500 slowly cannot multiply the deadline by the number of retries."""
    def slow_500(req: Request) -> Reply:
        time.sleep(0.5)
        return Reply(500, b"oops")

    with LoopbackServer(slow_500) as server:
        http = Http(_settings(allow_private=True, retries=10, total_timeout=1.2))
        result = http.get(server.url("/x.jpg"))
    # 11 attempts were allowed; a 1.2 s budget for the URL holds only a few half-second answers
    assert 2 <= result.attempts <= 4 and len(server.requests) == result.attempts
    assert result.reason in ("http_500", "too_slow")


@pytest.mark.timeout(60)
def test_a_crawl_of_trickling_hosts_ends_with_every_url_recorded(ws: Workspace, catalog: Catalog):
    with TrickleServer("headers", byte_every=0.5) as heads, TrickleServer("body", byte_every=0.5) as bodies:
        items = [Item(s.url(f"/{i}.jpg"), f"http://example.org/{i}", f"t{i}") for s in (heads, bodies)
                 for i in range(6)]
        with FakeEngines({"slow": items}).server as engine:
            write_config(ws.root, engine.base, total_timeout=1.0, read_timeout=5.0, retries=3, concurrency=12,
                         per_host=6)
            add_terms(ws, catalog, "faces", ["slow"])
            (report,) = run_crawl(ws, catalog, ["bing"], limit=50).searches
    assert report.state == "done" and report.counts.failed_by_reason == {"too_slow": 12}
    assert heads.connections == 6 and bodies.connections == 6  # one attempt each


# -- network policy -----------------------------------------------------------------------------------------

@pytest.mark.parametrize(("address", "blocked"), [
    ("127.0.0.1", True), ("127.8.9.10", True), ("10.1.2.3", True), ("172.16.0.1", True), ("192.168.1.1", True),
    ("169.254.169.254", True), ("100.64.0.1", True), ("0.0.0.0", True), ("224.0.0.1", True), ("240.0.0.1", True),
    ("255.255.255.255", True), ("::1", True), ("::", True), ("fe80::1", True), ("fc00::1", True), ("ff02::1", True),
    ("::ffff:127.0.0.1", True), ("::ffff:169.254.169.254", True), ("2002:a00:1::", True), ("64:ff9b::a00:1", True),
    ("8.8.8.8", False), ("93.184.216.34", False), ("2606:4700:4700::1111", False), ("::ffff:8.8.8.8", False),
])
def test_address_ranges(address: str, blocked: bool):
    assert (blocked_range(address) is not None) == blocked, blocked_range(address)


@pytest.fixture
def target() -> Iterator[ImageHost]:
    """The image host an attacker would like the crawler to reach: it must see no request when refused."""
    host = ImageHost()
    with host.server:
        yield host


@pytest.mark.parametrize("where", ["127.0.0.1:{port}", "localhost:{port}", "10.0.0.1:{port}", "169.254.169.254",
                                   "[::1]:{port}", "[::ffff:127.0.0.1]:{port}", "0.0.0.0:{port}"])
def test_a_result_url_inside_the_network_is_refused_by_default(where: str, target: ImageHost):
    url = f"http://{where.format(port=target.server.httpd.server_address[1])}/img/1.jpg"
    http = Http(_settings(connect_timeout=1.0))
    result = Downloader(http, 10**8, 32, workers=1).fetch(_row(1, url))
    assert result.reason == "blocked_address"
    assert url in result.message and "allow_private = true" in result.message
    assert target.server.requests == []


@pytest.mark.parametrize("where", ["127.0.0.1:{port}", "10.0.0.1:{port}", "169.254.169.254", "[::1]:{port}"])
def test_a_redirect_into_the_network_is_refused_at_the_hop(where: str, target: ImageHost):
    inside = f"http://{where.format(port=target.server.httpd.server_address[1])}/img/2.jpg"
    with LoopbackServer(lambda req: Reply(302, b"", {"Location": inside})) as hop:
        http = Http(_settings(connect_timeout=1.0))
        http.trust(hop.base)  # the first hop is allowed (as an engine's host is), the second is checked
        result = http.get(hop.url("/a.jpg"))
        assert result.reason == "blocked_address", result.message
        assert len(hop.requests) == 1
    assert target.server.requests == []


def test_with_allow_private_on_the_same_urls_are_fetched(target: ImageHost):
    port = target.server.httpd.server_address[1]
    hop = LoopbackServer(lambda req: Reply(302, b"", {"Location": f"http://127.0.0.1:{port}/img/3.jpg"}))
    with hop, Downloader(Http(_settings(allow_private=True)), 10**8, 32) as dl:
        direct = dl.fetch(_row(1, f"http://127.0.0.1:{port}/img/1.jpg"))
        named = dl.fetch(_row(2, f"http://localhost:{port}/img/2.jpg"))
        redirected = dl.fetch(_row(3, hop.url("/r.jpg")))
    assert direct.ok and named.ok and redirected.ok
    assert target.server.hits("/img/1.jpg") == target.server.hits("/img/2.jpg") == 1
    assert target.server.hits("/img/3.jpg") == 1


def test_the_address_checked_is_the_address_connected_to(monkeypatch: pytest.MonkeyPatch, target: ImageHost):
    """A name is resolved once: the check and the connection use the same answer, so a DNS server that
    answers differently the second time (rebinding) has no second time. 'photos.invalid' exists only in this
    resolver, so a fetch that works proves the connection used the checked address, not a new lookup."""
    real = socket.getaddrinfo
    lookups: list[str] = []

    def resolver(host: Any, port: Any, *args: Any, **kw: Any) -> Any:
        if host == "photos.invalid":
            lookups.append(host)
            return real("127.0.0.1", port, *args, **kw)
        return real(host, port, *args, **kw)

    monkeypatch.setattr(socket, "getaddrinfo", resolver)
    url = f"http://photos.invalid:{target.server.httpd.server_address[1]}/img/4.jpg"
    refused = Http(_settings()).get(url)
    assert refused.reason == "blocked_address" and "127.0.0.1" in refused.message
    assert target.server.requests == [] and lookups == ["photos.invalid"]
    fetched = Http(_settings(allow_private=True)).get(url)
    assert fetched.ok and target.server.hits("/img/4.jpg") == 1 and len(lookups) == 2


def test_a_crawl_with_the_default_policy_trusts_the_engine_and_refuses_inside_results(ws: Workspace,
                                                                                        catalog: Catalog,
                                                                                        target: ImageHost):
    # the engine itself is on loopback: its configured base_url is trusted even with allow_private off
    with FakeEngines({"inside": items_for(target, [1, 2, 3])}).server as engine:
        write_config(ws.root, engine.base, allow_private=False)
        add_terms(ws, catalog, "faces", ["inside"])
        (report,) = run_crawl(ws, catalog, ["bing"], limit=10).searches
        assert report.state == "done" and report.counts.found == 3
        assert report.counts.failed_by_reason == {"blocked_address": 3}
        assert target.server.requests == []
        assert all(r["error"] == "blocked_address" for r in catalog.conn.execute("SELECT error FROM sources"))
        # an intranet mirror: once allowed, the next crawl checks the refused URLs again and fetches them
        write_config(ws.root, engine.base, allow_private=True)
        (again,) = run_crawl(ws, catalog, ["bing"], limit=10, again=True).searches
    assert again.counts.new == 3 and again.counts.failed_count == 0
    assert sum(target.server.hits(f"/img/{i}.jpg") for i in (1, 2, 3)) == 3


# -- schemes ------------------------------------------------------------------------------------------------

def test_non_http_results_are_recorded_as_bad_scheme_and_counted(ws: Workspace, catalog: Catalog, target: ImageHost):
    png = "data:image/png;base64," + base64.b64encode(make_jpeg(3)).decode() * 40  # long: kept cut, with a hash
    odd = ["file:///etc/passwd", "javascript:alert(1)", png, "ftp://example.org/a.jpg"]
    items = [Item(u, f"http://example.org/{i}", f"odd {i}") for i, u in enumerate(odd)]
    items += items_for(target, [5])
    with FakeEngines({"odd": items}).server as engine:
        write_config(ws.root, engine.base)
        add_terms(ws, catalog, "faces", ["odd"])
        summary = run_crawl(ws, catalog, ["bing"], limit=10)
    (report,) = summary.searches
    assert report.counts.found == 5 and report.counts.new == 1
    assert report.counts.failed_by_reason == {"bad_scheme": 4} and summary.failed_count == 4
    messages = {f.item: f.error for f in summary.failed}
    assert "file:///etc/passwd" in messages and "javascript:alert(1)" in messages
    assert all("http(s)" in m for m in messages.values())
    kept = max(messages, key=len)
    assert kept.startswith("data:image/png;base64,") and len(kept) < 300 and "sha256" in kept
    assert target.server.hits("/img/5.jpg") == 1


def test_a_redirect_to_a_file_url_is_bad_scheme():
    with LoopbackServer(lambda req: Reply(302, b"", {"Location": "file:///etc/passwd"})) as hop:
        result = Http(_settings(allow_private=True)).get(hop.url("/a.jpg"))
    assert result.reason == "bad_scheme" and result.body is None


def test_a_retry_after_longer_than_the_urls_budget_is_not_waited_for():
    """Retry-After waits count against the URL's budget too: a host cannot park a thread with 429s."""
    with LoopbackServer(lambda req: Reply(429, b"later", {"Retry-After": "30"})) as server:
        waits: list[float] = []
        result = Http(_settings(allow_private=True, total_timeout=5.0), sleep=waits.append).get(server.url("/a.jpg"))
    assert result.reason == "rate_limited" and "total_timeout" in result.message and result.reason in TRANSIENT
    assert waits == [] and len(server.requests) == 1


def test_a_trickling_host_does_not_hold_the_workers_of_other_hosts(ws: Workspace, catalog: Catalog):
    """Results of a slow host ranked first: the other host's images are fetched while the slow host's first URLs
    are still trickling, not after its backlog has used up every worker."""
    slow_seen: list[int] = []  # connections the slow host had accepted when each fast image was asked for

    def fast(req: Request) -> Reply:
        slow_seen.append(slow.connections)
        return Reply(body=make_jpeg(int(req.path.strip("/").split(".")[0])), headers={"Content-Type": "image/jpeg"})

    with TrickleServer("body", byte_every=0.5) as slow, LoopbackServer(fast) as quick:
        items = [Item(slow.url(f"/{i}.jpg"), f"http://example.org/s{i}", f"s{i}") for i in range(6)]
        items += [Item(quick.url(f"/{i}.jpg"), f"http://example.org/q{i}", f"q{i}") for i in range(6)]
        with FakeEngines({"mixed": items}).server as engine:
            write_config(ws.root, engine.base, total_timeout=2.0, read_timeout=5.0, concurrency=4, per_host=2)
            add_terms(ws, catalog, "faces", ["mixed"])
            (report,) = run_crawl(ws, catalog, ["bing"], limit=20).searches
    assert report.counts.new == 6 and report.counts.failed_by_reason == {"too_slow": 6}
    # per_host = 2: while the fast host was served, only the slow host's first two URLs had been started
    assert len(slow_seen) == 6 and max(slow_seen) <= 2, slow_seen


@pytest.mark.timeout(60)  # a hang guard only
def test_an_attempt_past_its_deadline_is_over_before_the_watchdog_has_acted():
    # a socket timeout set to the time left (connect, TLS handshake) ends at the deadline too: whichever of the
    # two a thread sees first, the URL's outcome is the deadline's (too_slow), not a retried timeout
    assert Attempt(time.monotonic() - 0.001).over()
    assert not Attempt(time.monotonic() + 60).over()


@pytest.mark.timeout(120)  # a hang guard only
def test_a_url_queued_for_its_host_when_the_crawl_aborts_is_not_started():
    """Ctrl-C aborts the attempts in flight; a URL that was waiting for its host's slot gets the slot as they
    end, and must not then open a connection that nothing cuts (it would hold the exit for its whole budget)."""
    import threading

    http = Http(http_settings(per_host=1, total_timeout=30.0, retries=0, allow_private=True))
    results: dict[str, Any] = {}
    with TrickleServer("status", byte_every=0.5) as slow:
        def fetch(name: str) -> None:
            results[name] = http.get(slow.url(f"/{name}.jpg"))

        first = threading.Thread(target=fetch, args=("first",))
        first.start()
        give_up = time.monotonic() + 30
        while slow.connections < 1 and time.monotonic() < give_up:
            time.sleep(0.01)
        queued = threading.Thread(target=fetch, args=("queued",))
        queued.start()
        time.sleep(0.3)  # the second URL now waits for the host's one slot
        http.abort()
        first.join(60)
        queued.join(60)
        opened = slow.connections
    http.close()
    assert results["first"].reason == "interrupted" and results["queued"].reason == "interrupted"
    assert opened == 1  # the queued URL never connected


def test_watchdog_wakes_for_a_deadline_sooner_than_the_one_it_sleeps_until():
    """The watchdog is woken only for a deadline earlier than the one it sleeps until; such a one, watched
    after a later one, is still cut off, and the later one is left alone."""
    dog = Watchdog()
    late, soon = Attempt(time.monotonic() + 3600), Attempt(time.monotonic() + 0.05)
    dog.watch(late)
    dog.watch(soon)
    give_up = time.monotonic() + 30
    while not soon.expired and time.monotonic() < give_up:
        time.sleep(0.01)
    dog.close()
    assert soon.expired and not late.expired
