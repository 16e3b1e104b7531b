"""``crawl``: run the pending (query, engine) pairs, download what they find, record provenance.

Each pair is one run row with a cursor. Result pages are recorded (hits + frontier URLs + the next cursor) in
one transaction before their images are fetched, and fetched images are stored in batches, so a kill -9 loses
at most the batch in flight: the re-run finds the same pending URLs and the same cursor and goes on. A pair
is marked used only when its run finishes; a blocked search stays pending, with the page saved.
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import Callable
from concurrent.futures import FIRST_COMPLETED, Future, wait
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any

from facecurate import media
from facecurate.catalog import Catalog, QueryRow, RunRow
from facecurate.crawl.download import Downloaded, Downloader
from facecurate.crawl.engines import ENGINES, Engine, EngineContext, Result, SearchStopped
from facecurate.crawl.http import TRANSIENT, Http, HttpSettings
from facecurate.crawl.urls import is_fetchable, normalise
from facecurate.errors import FacecurateError
from facecurate.ingest import raw_relpath, store
from facecurate.queries import configured_engines, is_pending, sync_from_files, write_mirror
from facecurate.workspace import Workspace

COMMIT_EVERY = 32          # downloads per transaction: a kill loses at most this many fetches
COMMIT_SECONDS = 1.0       # …or this much time, so slow hosts do not hold finished work in memory
SAVED_PAGES = "crawl_pages"


@dataclass(frozen=True)
class Pair:
    query: QueryRow
    engine: str
    run: RunRow | None   # the run to resume, or None to start one


@dataclass
class PairReport:
    """The closing line of one (query, engine): counts from the catalog, so a resumed run reports it all."""

    label: str
    term: str
    engine: str
    state: str                                  # done | blocked | dry-run
    counts: dict[str, Any] = field(default_factory=dict)
    stopped: SearchStopped | None = None
    urls: list[Result] = field(default_factory=list)  # --dry-run only


@dataclass
class Callbacks:
    """How the CLI follows along: a bar per pair, advanced as URLs are settled."""

    start: Callable[[str, str, int, int], None] = lambda term, engine, total, done: None
    advance: Callable[[int], None] = lambda n: None
    found: Callable[[Result], None] = lambda r: None
    finish: Callable[[PairReport], None] = lambda report: None


def plan(ws: Workspace, catalog: Catalog, engines: list[str] | None, label: str | None = None,
         again: bool = False, terms: list[str] | None = None) -> list[Pair]:
    """The pairs to run, in query order: pending ones (resuming unfinished runs); every one with ``again``."""
    names = engines or configured_engines(ws.config())
    unknown = [e for e in names if e not in ENGINES]
    if unknown:
        raise FacecurateError(f"Unknown engine {', '.join(unknown)}: use {', '.join(ENGINES)} (--engine, repeatable).")
    sync_from_files(ws, catalog, configured_engines(ws.config()))
    queries = catalog.tracked_queries(label)
    if terms:
        queries = [q for q in queries if q.term in set(terms)]
    runs = catalog.latest_runs(q.id for q in queries)
    pairs = []
    for q in queries:
        for e in names:
            run = runs.get((q.id, e))
            if is_pending(run):
                pairs.append(Pair(q, e, run))
            elif again:
                pairs.append(Pair(q, e, None))
    return pairs


def make_engine(ws: Workspace, name: str, http: Http) -> Engine:
    cfg = ws.config()
    crawl = cfg.section("crawl")
    ctx = EngineContext(http=http, base_url=str(cfg.engine(name)["base_url"]),
                        search_user_agent=crawl["search_user_agent"],
                        identifiable_user_agent=http.settings.user_agent, settings=crawl)
    return ENGINES[name](ctx)


class Crawl:
    """One `facecurate crawl` invocation: shared HTTP client, downloader and engines, over many pairs."""

    def __init__(self, ws: Workspace, catalog: Catalog, callbacks: Callbacks | None = None,
                 http: Http | None = None) -> None:
        self.ws, self.catalog = ws, catalog
        cfg = ws.config()
        self.cfg = cfg.section("crawl")
        self.http = http or Http(HttpSettings.from_config(cfg))
        self.downloader = Downloader(self.http, cfg.get("media", "max_pixels"), cfg.get("media", "min_side"),
                                     prewrite=self._prewrite)
        self.cb = callbacks or Callbacks()
        self.engines: dict[str, Engine] = {}
        self._last_page: dict[str, float] = {}

    def close(self) -> None:
        for engine in self.engines.values():
            engine.close()
        self.downloader.close()

    def __enter__(self) -> Crawl:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _prewrite(self, d: Downloaded) -> None:
        """In a worker: put the bytes at their content address (atomically) before the batch is recorded.
        A kill before the record leaves a whole file that the re-run's store() finds and records."""
        if d.data is None or not d.sha256:
            return
        target = self.ws.resolve(raw_relpath(d.sha256, d.ext or "bin"))
        if not target.exists():
            media.atomic_write(target, d.data, self.ws.tmp_dir)

    def engine(self, name: str) -> Engine:
        if name not in self.engines:
            self.engines[name] = make_engine(self.ws, name, self.http)
        return self.engines[name]

    def _search(self, engine: Engine, term: str, cursor: dict[str, Any]) -> Any:
        """One result page, spaced from the engine's previous one by [crawl] page_delay."""
        delay = float(self.cfg["page_delay"])
        last = self._last_page.get(engine.name)
        if last is not None and delay > 0:
            time.sleep(max(0.0, last + delay - time.monotonic()))
        try:
            return engine.search(term, {k: v for k, v in cursor.items() if not k.startswith("_")})
        finally:
            self._last_page[engine.name] = time.monotonic()

    # -- dry run ---------------------------------------------------------------------------------------

    def dry_run(self, pair: Pair, limit: int) -> PairReport:
        """Search only: list the URLs a crawl would fetch; nothing is downloaded or recorded."""
        engine, cursor = self.engine(pair.engine), {}
        report = PairReport(pair.query.label, pair.query.term, pair.engine, "dry-run")
        self.cb.start(pair.query.term, pair.engine, limit, 0)
        seen: set[str] = set()
        empty = 0
        try:
            while len(report.urls) < limit and empty < int(self.cfg["empty_pages"]):
                page = self._search(engine, pair.query.term, cursor)
                fresh = [r for r in page.results if is_fetchable(r.url) and normalise(r.url) not in seen]
                for r in fresh[:limit - len(report.urls)]:
                    seen.add(normalise(r.url))
                    report.urls.append(r)
                    self.cb.found(r)
                    self.cb.advance(1)
                empty = 0 if fresh else empty + 1
                cursor = page.cursor
                if page.end:
                    break
        except SearchStopped as stop:
            report.state, report.stopped = "blocked", stop
            self._save_page(stop, pair, None)
        report.counts = {"found": len(report.urls)}
        return report

    # -- a real run ------------------------------------------------------------------------------------

    def run_pair(self, pair: Pair, limit: int) -> PairReport:
        catalog = self.catalog
        with catalog.transaction():
            run = catalog.resume_run(pair.run.id, limit) if pair.run else \
                catalog.start_run(pair.query.id, pair.engine, limit)
        report = PairReport(pair.query.label, pair.query.term, pair.engine, "done")
        counts = catalog.run_counts(run.id)
        self.cb.start(pair.query.term, pair.engine, max(limit, counts["found"]), counts["found"] - counts["pending"])
        inflight: dict[int, Future[Downloaded]] = {}
        try:
            self._submit_pending(run.id, inflight)
            self._search_loop(pair, run, limit, inflight)
            self._drain(inflight, block=True)
            with catalog.transaction():
                catalog.finish_run(run.id, "done")
        except SearchStopped as stop:
            self._drain(inflight, block=True)  # what was found before the block is kept
            saved = self._save_page(stop, pair, run.id)
            with catalog.transaction():
                catalog.finish_run(run.id, "blocked", error=stop.describe(), saved_page=saved)
            report.state, report.stopped = "blocked", stop
        except KeyboardInterrupt:
            self._drain(inflight, block=False)  # keep what already arrived; the rest is refetched next time
            raise
        finally:
            for f in inflight.values():
                f.cancel()
        report.counts = catalog.run_counts(run.id)
        return report

    def _search_loop(self, pair: Pair, run: RunRow, limit: int, inflight: dict[int, Future[Downloaded]]) -> None:
        catalog, engine = self.catalog, self.engine(pair.engine)
        cursor: dict[str, Any] = json.loads(run.cursor or "{}")
        if cursor.get("_end"):
            return
        empty = run.empty_pages
        hits = catalog.run_hit_count(run.id)
        while hits < limit and empty < int(self.cfg["empty_pages"]):
            page = self._search(engine, pair.query.term, cursor)
            seen = int(cursor.get("_seen", 0))
            added = 0
            with catalog.transaction():
                for i, r in enumerate(page.results):
                    if hits >= limit:
                        break
                    if not is_fetchable(r.url):
                        continue
                    state = catalog.add_hit(run.id, normalise(r.url), r.url, seen + i + 1, r.page_url, r.title,
                                            r.license, r.author, TRANSIENT)
                    if state is None:
                        continue  # this run already had the URL: an all-seen page counts as empty
                    hits += 1
                    added += 1
                    if state != "pending":
                        self.cb.advance(1)
                empty = 0 if added else empty + 1
                cursor = {**page.cursor, "_seen": seen + len(page.results), "_end": page.end}
                catalog.save_cursor(run.id, cursor, empty)
            self._submit_pending(run.id, inflight)
            self._drain(inflight, block=False)
            if page.end:
                break

    def _submit_pending(self, run_id: int, inflight: dict[int, Future[Downloaded]]) -> None:
        for row in self.catalog.pending_downloads(run_id):
            if row.url_id not in inflight:
                inflight[row.url_id] = self.downloader.submit(row)

    def _drain(self, inflight: dict[int, Future[Downloaded]], block: bool) -> None:
        """Store finished downloads in batches; with ``block``, until none is left in flight."""
        batch: list[Downloaded] = []
        last_commit = time.monotonic()
        while inflight:
            done, _ = wait(list(inflight.values()), timeout=None if block else 0, return_when=FIRST_COMPLETED)
            if not done:
                break
            for f in done:
                d = f.result()
                inflight.pop(d.row.url_id, None)
                batch.append(d)
            if len(batch) >= COMMIT_EVERY or time.monotonic() - last_commit > COMMIT_SECONDS:
                self._commit(batch)
                batch, last_commit = [], time.monotonic()
        self._commit(batch)

    def _commit(self, batch: list[Downloaded]) -> None:
        if not batch:
            return
        catalog = self.catalog
        with catalog.transaction():
            for d in batch:
                row = d.row
                provenance = {"kind": "url", "location": row.url, "label": row.label, "page_url": row.page_url,
                              "title": row.title, "engine": row.engine, "query": row.query, "rank": row.rank,
                              "license": row.license, "author": row.author, "http_status": d.fetched.status}
                if d.ok and d.data is not None and d.sha256:
                    image_id, is_new = store(self.ws, catalog, d.data, d.sha256, d.format or "", d.ext or "bin",
                                             d.width, d.height, row.label)
                    catalog.record_source(status="ok", image_id=image_id, **provenance)
                    catalog.settle_url(row.url_id, state="ok", image_id=image_id, is_new=is_new, error=None,
                                       http_status=d.fetched.status)
                else:
                    catalog.record_source(status="failed", error=d.reason, detail=d.message, **provenance)
                    catalog.settle_url(row.url_id, state="failed", image_id=None, is_new=False, error=d.reason,
                                       http_status=d.fetched.status)
        self.cb.advance(len(batch))

    def _save_page(self, stop: SearchStopped, pair: Pair, run_id: int | None) -> str | None:
        """Keep the page that stopped the search under the workspace, for a person (or a bug report)."""
        if not stop.page_text:
            return None
        stamp = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%SZ")
        slug = re.sub(r"[^\w-]+", "_", pair.query.term)[:40].strip("_") or "query"
        rel = f"{SAVED_PAGES}/{pair.engine}-{slug}-{stamp}-{run_id or 'dry'}.html"
        media.atomic_write(self.ws.resolve(rel), stop.page_text.encode("utf-8", errors="replace"), self.ws.tmp_dir)
        stop.saved_page = str(self.ws.resolve(rel))
        stop.args = (stop.describe(),)
        return rel


def run_crawl(ws: Workspace, catalog: Catalog, engines: list[str] | None = None, limit: int | None = None,
              label: str | None = None, again: bool = False, dry_run: bool = False,
              callbacks: Callbacks | None = None, terms: list[str] | None = None) -> list[PairReport]:
    """Run every pending pair (or every pair with ``again``); returns one report per pair, blocked ones too."""
    limit = limit or int(ws.config().get("crawl", "limit"))
    pairs = plan(ws, catalog, engines, label, again, terms)
    reports = []
    with Crawl(ws, catalog, callbacks) as crawl:
        for pair in pairs:
            reports.append(crawl.dry_run(pair, limit) if dry_run else crawl.run_pair(pair, limit))
            crawl.cb.finish(reports[-1])
    if not dry_run:
        configured = configured_engines(ws.config())
        for lab in sorted({p.query.label for p in pairs}):
            with catalog.transaction():
                write_mirror(ws, catalog, lab, configured)
    return reports
