"""Wall time of a crawl whose every image host trickles, with the default settings (issue 13, must-have 3).

Four loopback hosts answer one byte every ``--byte-every`` seconds: two from the first header byte on, two
from the first body byte on (the shapes a per-read socket timeout never ends). A loopback Bing stand-in
lists ``--urls`` image URLs spread over them. The crawl runs with every ``[crawl]`` setting at its default
except ``allow_private`` (the hosts are loopback) and ``page_delay`` (one result page here), so the time
printed is what a user waits: each URL's one budget (``total_timeout``, 60 s) times the rounds the per-host
cap (``per_host``, 4) imposes. Every URL must end recorded as ``too_slow``, attempted once.

    uv run python benchmarks/bench_trickle.py                 # 32 URLs on 4 hosts: about 2 minutes
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the tests' loopback servers
from facecurate.catalog import Catalog
from facecurate.crawl.queries import add_terms
from facecurate.crawl.stage import run_crawl
from facecurate.workspace import init_workspace, setting
from tests.fakeweb import FakeEngines, Item, TrickleServer


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--urls", type=int, default=32, help="image URLs, spread over the four hosts")
    ap.add_argument("--byte-every", type=float, default=2.0, help="seconds between two bytes from a host")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    import tempfile

    with tempfile.TemporaryDirectory(prefix="fc-trickle-") as tmp:
        hosts = [TrickleServer(stage, byte_every=args.byte_every) for stage in ("headers", "headers", "body", "body")]
        for h in hosts:
            h.__enter__()
        try:
            items = [Item(hosts[i % 4].url(f"/{i}.jpg"), f"http://example.org/{i}", f"t{i}") for i in range(args.urls)]
            with FakeEngines({"trickle": items}).server as engine:
                ws = init_workspace(Path(tmp) / "ws")
                ws.config_path.write_text(f'[crawl]\nallow_private = true\npage_delay = 0.0\n'
                                          f'[engines.bing]\nbase_url = "{engine.base}"\n', encoding="utf-8")
                with Catalog.open(ws.catalog_path) as catalog:
                    add_terms(ws, catalog, "bench", ["trickle"])
                    t0 = time.perf_counter()
                    (report,) = run_crawl(ws, catalog, ["bing"], limit=args.urls).searches
                    seconds = time.perf_counter() - t0
        finally:
            for h in hosts:
                h.__exit__(None, None, None)
    result = {"urls": args.urls, "hosts": 4, "byte_every": args.byte_every, "seconds": round(seconds, 1),
              "failed_by_reason": report.counts.failed_by_reason,
              "connections": sum(h.connections for h in hosts),
              "total_timeout": setting("crawl", "total_timeout").default,
              "per_host": setting("crawl", "per_host").default}
    if args.json:
        print(json.dumps(result))
    else:
        print(f"{args.urls} URLs on 4 trickling hosts, default settings (total_timeout {result['total_timeout']} s, "
              f"per_host {result['per_host']}): {seconds:.1f} s, {report.counts.failed_by_reason}, "
              f"{result['connections']} connections")


if __name__ == "__main__":
    main()
