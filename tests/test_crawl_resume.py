"""kill -9 in the middle of a crawl, then a re-run: no image lost, duplicated or half-written."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from PIL import Image

from facecurate import media
from facecurate.catalog import Catalog
from facecurate.crawl import run_crawl
from facecurate.crawl.queries import add_terms, list_queries
from facecurate.workspace import Workspace
from tests.fakeweb import FakeEngines, ImageHost, Item, TrickleServer, items_for, write_config

N = 60


def _children(pid: int) -> set[int]:
    """Processes whose parent is ``pid`` (Linux /proc; empty elsewhere)."""
    out = set()
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == pid:
            out.add(int(stat.parent.name))
    return out


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


@pytest.mark.parametrize("processes", [1, 3], ids=["threads", "3-processes"])
def test_kill_minus_9_mid_crawl_then_rerun(ws: Workspace, catalog: Catalog, processes: int):
    """With finishing in worker processes too: the kill loses at most the batch in flight, the workers do not
    outlive the crawl, and a re-run fetches only what is left."""
    host = ImageHost(delay=0.2)  # slow enough for the kill to land while images arrive
    with host.server:
        engines = FakeEngines({"slow faces": items_for(host, list(range(1, N + 1)))})
        with engines.server:
            write_config(ws.root, engines.server.base, concurrency=4, per_host=4, processes=processes)
            add_terms(ws, catalog, "faces", ["slow faces"])
            env = {**os.environ, "PYTHONUNBUFFERED": "1"}
            proc = subprocess.Popen([sys.executable, "-m", "facecurate", "crawl", "--engine", "bing", "--limit",
                                     str(N), "-w", str(ws.root)], env=env,
                                    stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            deadline = time.monotonic() + 120
            while time.monotonic() < deadline:
                stored = catalog.conn.execute("SELECT COUNT(*) FROM sources WHERE status='ok'").fetchone()[0]
                if stored >= 5 or proc.poll() is not None:
                    break
                time.sleep(0.02)
            workers = _children(proc.pid)
            proc.send_signal(signal.SIGKILL)
            proc.wait()
            if Path("/proc/self/stat").exists():
                assert len(workers) == (processes if processes > 1 else 0)
                give_up = time.monotonic() + 30  # a hang guard: orphaned workers notice within a second
                while any(_alive(p) for p in workers) and time.monotonic() < give_up:
                    time.sleep(0.05)
                assert not any(_alive(p) for p in workers), "worker processes outlived the killed crawl"
            stored_before = {r[0] for r in catalog.conn.execute("SELECT location FROM sources WHERE status='ok'")}
            assert 0 < len(stored_before) < N, "the kill should land mid-crawl"
            for row in catalog.conn.execute("SELECT path FROM images"):  # what is recorded is whole
                with Image.open(ws.resolve(row[0])) as im:
                    im.load()
            (status,) = list_queries(ws, catalog, engines=["bing"]).queries
            assert status.pending  # killed: still pending, resumable

            (report,) = run_crawl(ws, catalog, ["bing"], limit=N).searches
    assert report.state == "done" and report.counts.found == N
    assert report.counts.new == N and report.counts.failed_count == 0
    images = catalog.conn.execute("SELECT sha256, path FROM images").fetchall()
    assert len(images) == N == len({r["sha256"] for r in images})
    assert catalog.conn.execute("SELECT COUNT(*) FROM sources WHERE status='ok'").fetchone()[0] == N
    for url in stored_before:  # stored before the kill: not downloaded again
        assert host.server.hits(url.removeprefix(host.server.base)) == 1
    media.remove_stale_parts(ws.tmp_dir)
    assert not list(ws.root.rglob(f"{media.PART_PREFIX}*"))
    on_disk = {str(p.relative_to(ws.root)) for p in Path(ws.raw_dir).rglob("*") if p.is_file()}
    assert on_disk == {r["path"] for r in images}  # no orphan, no missing file
    for r in images:
        assert media.sha256_bytes(ws.resolve(r["path"]).read_bytes()) == r["sha256"]
    (status,) = list_queries(ws, catalog, engines=["bing"]).queries
    assert not status.pending


def test_ctrl_c_stops_a_crawl_of_trickling_hosts_within_seconds(ws: Workspace, catalog: Catalog):
    """Every host trickles (status line, headers or body) under the default 60 s budget per URL: Ctrl-C must
    not wait for any of them, and what was in flight is given up whole (pending, no file, no part file)."""
    servers = [TrickleServer(stage, byte_every=0.5) for stage in ("status", "headers", "body")]
    for s in servers:
        s.__enter__()
    try:
        items = [Item(s.url(f"/{i}.jpg"), f"http://example.org/{i}", f"t{i}") for s in servers for i in range(4)]
        with FakeEngines({"slow": items}).server as engine:
            write_config(ws.root, engine.base, total_timeout=60.0, read_timeout=15.0, retries=3)
            add_terms(ws, catalog, "faces", ["slow"])
            proc = subprocess.Popen([sys.executable, "-m", "facecurate", "crawl", "--engine", "bing", "-w",
                                     str(ws.root)], env={**os.environ, "PYTHONUNBUFFERED": "1"},
                                    stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            deadline = time.monotonic() + 60
            while time.monotonic() < deadline and sum(s.connections for s in servers) < len(items):
                time.sleep(0.05)
            time.sleep(1.0)  # every download is now stuck in a trickle
            assert proc.poll() is None
            proc.send_signal(signal.SIGINT)
            # Every download left would take its whole 60 s budget: a crawl that waited for them fails here.
            code = proc.wait(timeout=30)
    finally:
        if "proc" in locals() and proc.poll() is None:
            proc.kill()
        for s in servers:
            s.__exit__()
    assert code == 130  # stopped by the interrupt, with every download still trickling
    assert catalog.conn.execute("SELECT COUNT(*) FROM images").fetchone()[0] == 0
    assert catalog.conn.execute("SELECT COUNT(*) FROM sources").fetchone()[0] == 0  # given up, not failed
    assert catalog.conn.execute("SELECT COUNT(*) FROM frontier WHERE state='pending'").fetchone()[0] == len(items)
    assert not [p for p in ws.root.rglob("*") if p.is_file() and (p.name.startswith(media.PART_PREFIX)
                                                                   or ws.raw_dir in p.parents)]
