"""Issue 13, must-have 9: finishing (decode, hash, write) in worker processes keeps every crawl guarantee.

Requests stay in the crawl's process, so the per-host caps hold across workers; a worker that dies costs the
one download it was finishing (recorded with its URL), never the crawl or the downloads queued behind it."""

from __future__ import annotations

import os
import signal
from functools import partial
from pathlib import Path

import pytest

from facecurate.catalog import Catalog, DownloadRow
from facecurate.crawl import run_crawl
from facecurate.crawl.download import Downloaded, Downloader, finishing_processes
from facecurate.crawl.http import TRANSIENT, Http
from facecurate.crawl.queries import add_terms
from facecurate.errors import ImageError
from facecurate.workspace import Workspace
from tests.fakeweb import FakeEngines, ImageHost, Item, http_settings, write_config

pytestmark = pytest.mark.skipif(not hasattr(os, "fork"), reason="worker processes are forked")


_settings = partial(http_settings, total_timeout=10.0, retries=1, allow_private=True)


def _row(i: int, url: str) -> DownloadRow:
    return DownloadRow(url_id=i, url=url, rank=i, page_url=None, title=None, license=None, author=None,
                       engine="bing", query="q", label="l")


def test_the_processes_setting():
    assert finishing_processes(1) == 0  # 1: no worker process, threads of the crawl's own
    assert finishing_processes(3) == 3
    assert finishing_processes(0) >= 2  # automatic: from the cores, never fewer than two


@pytest.mark.timeout(120)  # a hang guard only
def test_a_worker_that_dies_costs_only_the_download_it_was_finishing(tmp_path: Path):
    """A native decoder crash on a hostile file kills the worker process (SIGKILL stands in for the segfault):
    that URL is recorded as worker_crashed, named in the message; every other download is finished, in worker
    processes, not in the crawl's own."""
    log = tmp_path / "finished-by.txt"

    def prewrite(d: Downloaded) -> None:  # runs where the finishing runs
        with log.open("a", encoding="utf-8") as fh:
            fh.write(f"{os.getpid()} {d.row.url_id}\n")
        if d.row.url_id == 5:
            os.kill(os.getpid(), signal.SIGKILL)

    host = ImageHost()
    with host.server, Downloader(Http(_settings(concurrency=4, per_host=4)), 10**8, 32, prewrite=prewrite,
                    processes=2) as dl:
        assert dl.processes is not None
        workers = set(dl.processes.pids())
        assert len(workers) == 2 and os.getpid() not in workers
        results = {r.row.url_id: r for r in dl.run([_row(i, host.server.url(f"/img/{i}.jpg"))
                                                    for i in range(1, 13)])}
        crashed = results.pop(5)
        survivors = set(dl.processes.pids())
        # the crawl goes on after the crash: more downloads, finished by the workers left
        more = list(dl.run([_row(i, host.server.url(f"/img/{i}.jpg")) for i in range(13, 17)]))
    assert crashed.reason == "worker_crashed" and crashed.row.url in crashed.message and crashed.data is None
    assert "worker_crashed" in TRANSIENT  # a killed worker may not be the file's fault: the next crawl retries
    assert len(results) == 11 and all(r.ok and r.sha256 for r in results.values())
    assert all(r.ok for r in more) and len(more) == 4
    finished_by = {int(url_id): int(pid) for pid, url_id in (line.split() for line in log.read_text().split("\n")
                                                               if line)}
    assert set(finished_by) == set(range(1, 17))
    assert set(finished_by.values()) <= workers and os.getpid() not in finished_by.values()
    assert finished_by[5] not in survivors and survivors  # the dead worker is gone, the other one stays


@pytest.mark.timeout(180)  # a hang guard only
def test_per_host_caps_hold_across_worker_processes(ws: Workspace, catalog: Catalog):
    """Two hosts, three workers, eight download threads: each host sees at most per_host requests at once and
    request starts spaced by 1 / per_host_rate, as with one process (the requests never leave the crawl's
    process; only the bodies do)."""
    hosts = [ImageHost(delay=0.05), ImageHost(delay=0.05)]
    rate, per_host, n = 25.0, 2, 20
    with hosts[0].server, hosts[1].server:
        items = [Item(h.server.url(f"/img/{100 * k + i}.jpg"), f"http://example.org/{k}/{i}", f"{k}-{i}")
                 for i in range(n) for k, h in enumerate(hosts)]
        with FakeEngines({"two hosts": items}).server as engine:
            write_config(ws.root, engine.base, concurrency=8, per_host=per_host, per_host_rate=rate, processes=3)
            add_terms(ws, catalog, "faces", ["two hosts"])
            (report,) = run_crawl(ws, catalog, ["bing"], limit=2 * n).searches
    assert report.state == "done" and report.counts.new == 2 * n and report.counts.failed_count == 0
    for h in hosts:
        assert len(h.starts) == n  # each URL asked once
        assert h.max_inflight <= per_host
        # the gate schedules the k-th start at least k / rate after the first (one late start may come closer to
        # the next one, so the span is what is checked; 10% slack for the server's view of the arrivals)
        assert max(h.starts) - min(h.starts) >= 0.9 * (n - 1) / rate


def test_a_crawl_records_what_workers_finished_and_nothing_else(ws: Workspace, catalog: Catalog):
    """Hostile bodies fail in the workers with the same reasons and URL-naming messages as on threads, and the
    raw store holds exactly the recorded files (the workers write them, the crawl's process records them)."""
    host = ImageHost()
    kinds = ["html", "svg", "truncated-jpeg", "small", "huge"]
    with host.server:
        items = [Item(host.server.url(f"/fault/{k}/{i}.jpg"), f"http://example.org/f{i}", k)
                 for i, k in enumerate(kinds, 1)]
        items += [Item(host.server.url(f"/img/{i}.jpg"), f"http://example.org/{i}", f"ok{i}") for i in range(20, 30)]
        with FakeEngines({"mixed": items}).server as engine:
            write_config(ws.root, engine.base, processes=2, max_bytes=200_000)
            add_terms(ws, catalog, "faces", ["mixed"])
            (report,) = run_crawl(ws, catalog, ["bing"], limit=50).searches
    failed = {r["title"]: r for r in catalog.conn.execute("SELECT * FROM sources WHERE status='failed'")}
    assert {k: failed[k]["error"] for k in kinds} == {"html": "not_an_image", "svg": "not_an_image",
                                                      "truncated-jpeg": "truncated", "small": "too_small",
                                                      "huge": "too_large"}
    assert all(r["location"] in r["detail"] for r in failed.values())
    assert report.counts.new == 10
    paths = {r["path"] for r in catalog.conn.execute("SELECT path FROM images")}
    on_disk = {str(p.relative_to(ws.root)) for p in Path(ws.raw_dir).rglob("*") if p.is_file()}
    assert on_disk == paths and len(paths) == 10


@pytest.mark.timeout(60)  # a hang guard: without the watchdog on the reused socket this reads for minutes
def test_a_trickle_on_a_kept_alive_connection_is_cut_at_the_deadline():
    """Image GETs reuse kept-alive connections: a host that answers once quickly and then trickles on the same
    connection is cut at the URL's deadline (too_slow) like one that trickles on a new connection."""
    import threading
    import time
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    from tests.fakeweb import make_jpeg

    ports: list[int] = []

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, *args: object) -> None:
            pass

        def do_GET(self) -> None:
            ports.append(self.client_address[1])
            body = make_jpeg(1) if self.path == "/fast.jpg" else b"\xff" * 200_000
            self.send_response(200)
            self.send_header("Content-Type", "image/jpeg")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            try:
                if self.path == "/fast.jpg":
                    self.wfile.write(body)
                    return
                for i in range(0, len(body), 100):  # 100 bytes every 0.2 s: ~7 minutes in all
                    self.wfile.write(body[i:i + 100])
                    self.wfile.flush()
                    time.sleep(0.2)
            except OSError:
                self.close_connection = True

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, daemon=True).start()
    base = f"http://127.0.0.1:{server.server_address[1]}"
    try:
        http = Http(_settings(total_timeout=1.5, read_timeout=5.0, retries=2, concurrency=1, per_host=1))
        first = http.get(f"{base}/fast.jpg")
        slow = http.get(f"{base}/slow.jpg")
    finally:
        server.shutdown()
        server.server_close()
    assert first.ok
    assert len(ports) == 2 and ports[0] == ports[1]  # the second GET came on the kept-alive connection
    assert slow.reason == "too_slow" and slow.attempts == 1 and slow.url in slow.message


def test_a_worker_sends_back_no_bytes_of_what_it_wrote(ws: Workspace, catalog: Catalog):
    """The bytes of a stored image stay in its file: the answer from the worker carries the facts only, and the
    record made from them names the file the worker wrote, with its size."""
    from facecurate import media
    from facecurate.filestore import open_store
    from facecurate.storage import put_raw, raw_relpath, store

    def prewrite(d: Downloaded) -> None:
        assert d.data is not None and d.sha256
        put_raw(open_store(ws), d.data, d.sha256, d.ext or "bin")

    host = ImageHost()
    rows = [_row(i, host.server.url(f"/img/{i}.jpg")) for i in range(1, 5)]
    with host.server:
        with Downloader(Http(_settings()), 10**8, 32, prewrite=prewrite, processes=2) as dl:
            written = list(dl.run(rows))
        with Downloader(Http(_settings()), 10**8, 32, processes=2) as dl:  # nothing written: the bytes come back
            kept = list(dl.run(rows[:1]))
    assert all(d.ok and d.data is None and d.size > 0 and d.fetched.body is None for d in written)
    assert kept[0].ok and kept[0].data is not None and kept[0].size == len(kept[0].data)
    d = written[0]
    assert d.sha256 is not None and d.format is not None and d.ext is not None
    path = ws.resolve(raw_relpath(d.sha256, d.ext))
    assert media.sha256_bytes(path.read_bytes()) == d.sha256 and path.stat().st_size == d.size
    with catalog.transaction():
        image_id, is_new = store(ws, catalog, None, d.sha256, d.format, d.ext, d.width, d.height, "l", size=d.size)
    row = catalog.conn.execute("SELECT path, bytes FROM images WHERE id=?", (image_id,)).fetchone()
    assert is_new and row["path"] == raw_relpath(d.sha256, d.ext) and row["bytes"] == d.size
    # a file gone before its record is not recorded (the crawl fails the URL as missing, retried later)
    other = written[1]
    assert other.sha256 is not None and other.format is not None and other.ext is not None
    ws.resolve(raw_relpath(other.sha256, other.ext)).unlink()
    with pytest.raises(ImageError) as exc, catalog.transaction():
        store(ws, catalog, None, other.sha256, other.format, other.ext, 1, 1, "l", size=other.size)
    assert exc.value.reason == "missing" and "missing" in TRANSIENT
    assert catalog.image_by_sha(other.sha256) is None


def test_a_download_finished_in_a_worker_is_the_one_finished_on_a_thread():
    """A worker answers with the facts alone and the crawl's process rebuilds the download from the row and
    the answer it sent: every field matches the same download finished on a thread, failures included, with
    no body kept (a stored image's bytes are in its file)."""
    from dataclasses import replace

    written: list[str] = []

    def prewrite(d: Downloaded) -> None:
        written.append(d.row.url)

    host = ImageHost()
    with host.server:
        rows = [_row(i, host.server.url(f"/img/{i}.jpg")) for i in range(1, 6)]
        rows += [_row(10 + i, host.server.url(f"/fault/{k}/{i}.jpg"))
                 for i, k in enumerate(["html", "truncated-jpeg", "small"])]
        with Downloader(Http(_settings()), 10**8, 32, prewrite=prewrite, processes=2) as dl:
            apart = {d.row.url_id: d for d in dl.run(rows)}
        with Downloader(Http(_settings()), 10**8, 32, prewrite=prewrite) as dl:
            here = {d.row.url_id: d for d in dl.run(rows)}
    assert sorted(apart) == sorted(here) == sorted(r.url_id for r in rows)
    assert sum(d.ok for d in apart.values()) == 5 and {d.reason for d in apart.values() if not d.ok} == {
        "not_an_image", "truncated", "too_small"}
    for url_id, d in apart.items():
        assert d.fetched.body is None and d.data is None
        same = here[url_id]
        assert d == replace(same, data=None, fetched=replace(same.fetched, body=None, headers=d.fetched.headers))
        assert {k: v for k, v in d.fetched.headers.items() if k != "date"} == \
            {k: v for k, v in same.fetched.headers.items() if k != "date"}


def test_finishing_workers_run_below_the_crawl():
    """The requests' process comes first when the cores are busy: each worker runs at a higher niceness."""
    from facecurate.crawl.finishing import WORKER_NICENESS

    host = ImageHost()
    with host.server, Downloader(Http(_settings()), 10**8, 32, processes=2) as dl:
        assert dl.processes is not None
        assert all(d.ok for d in dl.run([_row(i, host.server.url(f"/img/{i}.jpg")) for i in range(1, 5)]))
        workers = dl.processes.pids()
        ours = os.getpriority(os.PRIO_PROCESS, 0)
        assert workers and all(os.getpriority(os.PRIO_PROCESS, pid) == min(19, ours + WORKER_NICENESS)
                               for pid in workers)
