"""``crawl``: run the pending (query, engine) pairs, download what they find, record provenance.

Each pair is one run row with a cursor. Result pages are recorded (hits + frontier URLs + the next cursor) in
one transaction before their images are fetched, and fetched images are stored in batches, so a kill -9 loses
at most the batch in flight: the re-run finds the same pending URLs and the same cursor and goes on. A pair
is marked used only when its run finishes; a blocked search stays pending, with the page saved.
"""

from __future__ import annotations

import json
import queue
import re
import time
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any, Literal

from facecurate import media
from facecurate.catalog import Catalog, QueryRow, RunRow
from facecurate.catalog.queries import RunCounts
from facecurate.crawl.download import Downloaded, Downloader, finishing_processes
from facecurate.crawl.engines import ENGINES, Engine, EngineContext, Page, Result, SearchStopped
from facecurate.crawl.engines.base import BrowserSettings
from facecurate.crawl.engines.wikimedia import download_limits
from facecurate.crawl.http import TRANSIENT, Http, HttpSettings
from facecurate.crawl.pages_ahead import PagesAhead
from facecurate.crawl.queries import configured_engines, is_pending, query_engines, sync_from_files, write_mirror
from facecurate.crawl.urls import frontier_key, is_fetchable, normalise
from facecurate.errors import ConfigError, FacecurateError, ImageError
from facecurate.events import SILENT, Failure, Progress
from facecurate.filestore import open_store, storage_setting
from facecurate.storage import put_raw, store
from facecurate.work import Executor
from facecurate.workspace import Workspace

COMMIT_EVERY = 32          # downloads per transaction: a kill loses at most this many fetches
COMMIT_SECONDS = 1.0       # …or this much time, so slow hosts do not hold finished work in memory
SAVED_PAGES = "crawl_pages"


class Inflight:
    """The downloads of one run not yet recorded, and the ones that finished, in the order they finished.

    Each future reports itself on a queue when done, so collecting one costs the same however many are in
    flight (waiting on all of them would lock every future each time, thousands per completion)."""

    def __init__(self) -> None:
        self.futures: dict[int, Future[Downloaded]] = {}
        self._done: queue.SimpleQueue[Future[Downloaded]] = queue.SimpleQueue()
        self._ids: dict[Future[Downloaded], int] = {}

    def add(self, url_id: int, future: Future[Downloaded]) -> None:
        self.futures[url_id] = future
        self._ids[future] = url_id
        future.add_done_callback(self._done.put)

    def __contains__(self, url_id: int) -> bool:
        return url_id in self.futures

    def __bool__(self) -> bool:
        return bool(self.futures)

    def finished(self) -> int:
        """How many have finished and wait to be collected."""
        return self._done.qsize()

    def next(self, timeout: float | None) -> Future[Downloaded] | None:
        """A finished (or cancelled) download, no longer in flight; None if none finishes within ``timeout``
        (0: only one that already has)."""
        try:
            future = self._done.get(timeout=timeout) if timeout != 0 else self._done.get_nowait()
        except queue.Empty:
            return None
        url_id = self._ids.pop(future, None)
        if url_id is not None and self.futures.get(url_id) is future:
            del self.futures[url_id]
        return future

    def cancel(self) -> None:
        for f in self.futures.values():
            f.cancel()


@dataclass(frozen=True)
class Pair:
    query: QueryRow
    engine: str
    run: RunRow | None   # the run to resume, or None to start one


PairOutcome = Literal["done", "blocked", "dry-run"]


@dataclass(frozen=True)
class Stopped:
    """Why a search stopped, as plain data: the :class:`SearchStopped` it came from, without the page's text."""

    engine: str
    kind: str            # blocked | captcha | consent | layout_changed | unreachable | browser
    url: str
    saved_page: str | None
    message: str         # what happened, where the page is saved and the fix
    exit_code: int

    @classmethod
    def of(cls, stop: SearchStopped) -> Stopped:
        return cls(stop.engine, stop.kind, stop.url, stop.saved_page, stop.describe(), stop.exit_code)

    def __str__(self) -> str:
        return self.message


@dataclass
class PairReport:
    """The closing line of one (query, engine): counts and failures from the catalog, so a resumed run
    reports all of it. ``stopped`` says why a blocked search stopped (the command exits 3 with it)."""

    label: str
    term: str
    engine: str
    state: PairOutcome
    counts: RunCounts = field(default_factory=RunCounts)
    failed: list[Failure] = field(default_factory=list)
    stopped: Stopped | None = None
    urls: list[Result] = field(default_factory=list)  # --dry-run only


@dataclass
class CrawlSummary:
    """One ``crawl``: a report per (query, engine) search in the order they ran, and their totals."""

    searches: list[PairReport]
    found: int
    new: int
    duplicate: int
    failed: list[Failure]

    @classmethod
    def of(cls, searches: list[PairReport]) -> CrawlSummary:
        return cls(searches, sum(s.counts.found for s in searches), sum(s.counts.new for s in searches),
                   sum(s.counts.duplicate for s in searches), [f for s in searches for f in s.failed])

    @property
    def failed_count(self) -> int:
        return sum(s.counts.failed_count for s in self.searches)

    @property
    def stopped(self) -> list[PairReport]:
        """The searches a block, CAPTCHA or changed layout stopped (they stay pending and resume)."""
        return [s for s in self.searches if s.stopped is not None]


def task_name(term: str, engine: str) -> str:
    return f"crawl {term} · {engine}"


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
        own = q.settings.get("engines")  # --engine picks among a query's own engines; else they replace names
        for e in ([e for e in names if not own or e in own] if engines else query_engines(q.settings, names)):
            run = runs.get((q.id, e))
            if is_pending(run):
                pairs.append(Pair(q, e, run))
            elif again:
                pairs.append(Pair(q, e, None))
    require_contact(ws, sorted({p.engine for p in pairs}))
    return pairs


def require_contact(ws: Workspace, names: list[str]) -> None:
    """Wikimedia's robot policy (2025) refuses agents without a contact (HTTP 403): stop before any search."""
    if "wikimedia" in names and not str(ws.config().get("crawl", "contact")).strip():
        raise ConfigError(f"The wikimedia engine needs [crawl] contact in {ws.root / 'facecurate.toml'}: "
                          f"Wikimedia refuses agents without a contact (HTTP 403, robot policy). Set it to your "
                          f"e-mail or a URL, e.g. contact = \"you@example.org\", or leave wikimedia out of the "
                          f"engines.")


# A query's own settings that are engine filters (applied to the engines whose section has them).
QUERY_FILTERS = ("face_only", "size", "license")


def make_engine(ws: Workspace, name: str, http: Http, overrides: dict[str, Any] | None = None) -> Engine:
    """``name`` as the workspace configures it, with a query's own filters on top (only the ones the engine's
    [engines.<name>] section has: a query's face_only reaches bing and google, its license only bing)."""
    cfg = ws.config()
    options = cfg.engine(name)
    options.update({k: v for k, v in (overrides or {}).items() if k in options and k in QUERY_FILTERS})
    base_url = str(options["base_url"])
    http.trust(base_url)  # the user chose this host; its pages may sit on loopback (a mirror, a test server)
    require_contact(ws, [name])
    if name == "wikimedia":  # its file hosts get the policy's caps before any download starts
        for host, (per_host, rate) in download_limits(options).items():
            http.gate.limit(host, per_host, rate)
    ctx = EngineContext(http=http, base_url=base_url,
                        search_user_agent=str(cfg.get("crawl", "search_user_agent")),
                        identifiable_user_agent=http.settings.user_agent,
                        browser=BrowserSettings.from_config(ws), options=options)
    return ENGINES[name](ctx)


class Crawl:
    """One `facecurate crawl` invocation: shared HTTP client, downloader and engines, over many pairs."""

    def __init__(self, ws: Workspace, catalog: Catalog, progress: Progress = SILENT,
                 http: Http | None = None, executor: Executor | None = None, dry_run: bool = False) -> None:
        """``dry_run``: only searches will run, so no finishing worker is forked (it would cost start-up)."""
        self.ws, self.catalog = ws, catalog
        self.files = open_store(ws)  # where downloads are written: the workspace, or a mirror of [run] storage
        # not local: downloads wait until a search has recorded its pages, then go out host by host
        self.remote = executor if executor is not None and not executor.is_local else None
        cfg = ws.config()
        self.page_delay = float(cfg.get("crawl", "page_delay"))
        self.empty_pages = int(cfg.get("crawl", "empty_pages"))
        self.http = http or Http(HttpSettings.from_config(ws))
        processes = 0 if dry_run else finishing_processes(int(cfg.get("crawl", "processes")))
        self.downloader = Downloader(self.http, int(cfg.get("media", "max_pixels")),
                                     int(cfg.get("media", "min_side")), prewrite=self._prewrite,
                                     budget=media.PixelBudget(cfg.get("media", "decode_budget"),
                                                              processes=processes > 0),
                                     processes=processes)
        self.progress = progress
        self.engines: dict[str, Engine] = {}
        self._last_page: dict[str, float] = {}
        self._committed_at = time.monotonic()
        # Every result page of a crawl is fetched on this one thread (one HTTP session: an engine's cookies
        # carry from page to page), the next ones while this thread records the current one.
        self._searcher = ThreadPoolExecutor(max_workers=1, thread_name_prefix="facecurate-search")

    def close(self) -> None:
        self._searcher.shutdown(wait=True, cancel_futures=True)
        for engine in self.engines.values():
            engine.close()
        self.downloader.close()

    def __enter__(self) -> Crawl:
        return self

    def __exit__(self, exc_type: object, *exc: object) -> None:
        if exc_type is not None:
            self.http.abort()  # Ctrl-C or a crash: in-flight downloads are given up, not waited for
        self.close()

    def _prewrite(self, d: Downloaded) -> None:
        """In a worker: put the bytes at their content address (atomically) before the batch is recorded.
        A kill before the record leaves a whole file that the re-run's store() finds and records."""
        if d.data is None or not d.sha256:
            return
        put_raw(self.files, d.data, d.sha256, d.ext or "bin")

    def engine(self, name: str, settings: dict[str, Any] | None = None) -> Engine:
        """The engine for ``name`` with a query's own filters (one instance per distinct set of filters)."""
        overrides = {k: v for k, v in (settings or {}).items() if k in QUERY_FILTERS}
        key = name + (json.dumps(overrides, sort_keys=True) if overrides else "")
        if key not in self.engines:
            self.engines[key] = make_engine(self.ws, name, self.http, overrides)
        return self.engines[key]

    def _search(self, engine: Engine, term: str, cursor: dict[str, Any]) -> Page:
        """One result page, spaced from the engine's previous one by [crawl] page_delay."""
        delay = self.page_delay
        last = self._last_page.get(engine.name)
        if last is not None and delay > 0:
            time.sleep(max(0.0, last + delay - time.monotonic()))
        try:
            return engine.search(term, {k: v for k, v in cursor.items() if not k.startswith("_")})
        except SearchStopped:
            raise
        except Exception as exc:
            # An answer no parser foresaw: this search stops as a changed layout (resumable, reported, exit
            # 3), the crawl's other searches and the work recorded so far stand, and no traceback is shown.
            raise SearchStopped(engine.name, "layout_changed", f"reading its answer failed ({type(exc).__name__}: "
                                f"{str(exc)[:200]})", engine.base_url) from exc
        finally:
            self._last_page[engine.name] = time.monotonic()

    # -- dry run ---------------------------------------------------------------------------------------

    def dry_run(self, pair: Pair, limit: int) -> PairReport:
        """Search only: list the URLs a crawl would fetch; nothing is downloaded or recorded."""
        engine = self.engine(pair.engine, pair.query.settings)
        cursor: dict[str, Any] = {}
        report = PairReport(pair.query.label, pair.query.term, pair.engine, "dry-run")
        self.progress.start(task_name(pair.query.term, pair.engine), limit, "URLs", 0)
        seen: set[str] = set()
        empty = 0
        try:
            while len(report.urls) < limit and empty < self.empty_pages:
                page = self._search(engine, pair.query.term, cursor)
                fresh = [r for r in page.results if is_fetchable(r.url) and normalise(r.url) not in seen]
                for r in fresh[:limit - len(report.urls)]:
                    seen.add(normalise(r.url))
                    report.urls.append(r)
                    self.progress.note(f"{r.url}\t{r.page_url or ''}")
                    self.progress.advance(1)
                empty = 0 if fresh else empty + 1
                cursor = page.cursor
                if page.end:
                    break
        except SearchStopped as stop:
            self._save_page(stop, pair, None)
            report.state, report.stopped = "blocked", Stopped.of(stop)
        report.counts = RunCounts(found=len(report.urls))
        return report

    # -- a real run ------------------------------------------------------------------------------------

    def run_pair(self, pair: Pair, limit: int) -> PairReport:
        catalog = self.catalog
        with catalog.transaction():
            run = catalog.resume_run(pair.run.id, limit) if pair.run else \
                catalog.start_run(pair.query.id, pair.engine, limit)
        report = PairReport(pair.query.label, pair.query.term, pair.engine, "done")
        counts = catalog.run_counts(run.id)
        self.progress.start(task_name(pair.query.term, pair.engine), max(limit, counts.found), "URLs",
                            counts.found - counts.pending)
        inflight = Inflight()
        try:
            self._submit_pending(run.id, inflight)
            self._search_loop(pair, run, limit, inflight)
            self._drain(inflight, block=True)
            self._fetch_remote(run.id)
            with catalog.transaction():
                catalog.finish_run(run.id, "done")
        except SearchStopped as stop:
            self._drain(inflight, block=True)  # what was found before the block is kept
            self._fetch_remote(run.id)
            saved = self._save_page(stop, pair, run.id)
            with catalog.transaction():
                catalog.finish_run(run.id, "blocked", error=stop.describe(), saved_page=saved)
            report.state, report.stopped = "blocked", Stopped.of(stop)
        except KeyboardInterrupt:
            self.http.abort()  # trickling servers cannot delay the stop: their sockets are shut now
            self._drain(inflight, block=False)  # keep what already arrived; the rest is refetched next time
            raise
        finally:
            inflight.cancel()
        report.counts = catalog.run_counts(run.id)
        report.failed = [Failure(f.url, f.message) for f in catalog.run_failures(run.id)]
        return report

    def _search_loop(self, pair: Pair, run: RunRow, limit: int, inflight: Inflight) -> None:
        catalog, engine = self.catalog, self.engine(pair.engine, pair.query.settings)
        cursor = run.cursor
        if cursor.get("_end"):
            return
        empty = run.empty_pages
        hits = catalog.run_hit_count(run.id)
        if hits >= limit or empty >= self.empty_pages:
            return
        # Pages are asked for on the searcher thread as soon as they are certain to be needed (see
        # facecurate.crawl.pages_ahead), while this thread records the ones before them.
        ahead = PagesAhead(self._searcher, lambda c: self._search(engine, pair.query.term, c),
                           dict(cursor), hits, empty, limit, self.empty_pages)
        try:
            while hits < limit and empty < self.empty_pages:
                page = ahead.take()
                if page is None:
                    break
                seen = int(cursor.get("_seen", 0))
                hits, empty, cursor = self._record_page(run, page, cursor, hits, empty, limit)
                ahead.recorded(hits, empty)  # the next page may be asked for while its downloads start
                self._submit_pending(run.id, inflight, after_rank=seen)
                # whole batches only: while pages come in fast, a transaction per page (a few rows each) cost
                # the crawl's process 40% more catalog CPU (1.12 s against 0.80 s for 10,000 URLs)
                if inflight.finished() >= COMMIT_EVERY or time.monotonic() - self._committed_at > COMMIT_SECONDS:
                    self._drain(inflight, block=False)
                if page.end:
                    break
        except BaseException:  # Ctrl-C: not waited for (the crawl aborts its HTTP, then shuts the searcher)
            ahead.close(wait=False)
            raise
        ahead.close()  # nothing more is fetched; the engine is idle for the next search

    def _record_page(self, run: RunRow, page: Page, cursor: dict[str, Any], hits: int, empty: int,
                     limit: int) -> tuple[int, int, dict[str, Any]]:
        """Record one page's hits and the next cursor in one transaction (its downloads start after)."""
        catalog = self.catalog
        seen = int(cursor.get("_seen", 0))
        added = 0
        with catalog.transaction():
            for i, r in enumerate(page.results):
                if hits >= limit:
                    break
                # a file:/javascript:/data: result is recorded too: the downloader fails it as bad_scheme
                key, url = frontier_key(r.url)
                state = catalog.add_hit(run.id, key, url, seen + i + 1, r.page_url, r.title,
                                        r.license, r.author, TRANSIENT)
                if state is None:
                    continue  # this run already had the URL: an all-seen page counts as empty
                hits += 1
                added += 1
                if state != "pending":
                    self.progress.advance(1)
            empty = 0 if added else empty + 1
            cursor = {**page.cursor, "_seen": seen + len(page.results), "_end": page.end}
            catalog.save_cursor(run.id, cursor, empty)
        return hits, empty, cursor

    def _submit_pending(self, run_id: int, inflight: Inflight, after_rank: int = 0) -> None:
        """Start the run's pending downloads ranked after ``after_rank`` (0: all, as on a resume)."""
        if self.remote is not None:
            return  # _fetch_remote takes them once the search is over
        for row in self.catalog.pending_downloads(run_id, after_rank):
            if row.url_id not in inflight:
                inflight.add(row.url_id, self.downloader.submit(row))

    def _drain(self, inflight: Inflight, block: bool) -> None:
        """Store finished downloads in batches; with ``block``, until none is left in flight."""
        batch: list[Downloaded] = []
        last_commit = time.monotonic()
        while inflight:
            # blocking, a partial batch still waits at most COMMIT_SECONDS before it is recorded
            timeout = (max(0.0, last_commit + COMMIT_SECONDS - time.monotonic()) if batch else None) if block else 0
            f = inflight.next(timeout)
            if f is None:
                if not block:
                    break
            elif not f.cancelled():
                d = f.result()
                if d.reason != "interrupted":  # given up on Ctrl-C: stays pending, fetched next time
                    batch.append(d)
            if len(batch) >= COMMIT_EVERY or time.monotonic() - last_commit > COMMIT_SECONDS:
                self._commit(batch)
                batch, last_commit = [], time.monotonic()
        self._commit(batch)

    def _fetch_remote(self, run_id: int) -> None:
        """The run's pending downloads on the executor, one host per worker at a time; each batch is recorded
        as it arrives (see :mod:`facecurate.crawl.download_work`)."""
        if self.remote is None:
            return
        from facecurate.crawl.download_work import DownloadWork, host_groups

        rows = self.catalog.pending_downloads(run_id, 0)
        if not rows:
            return
        cfg = self.ws.config()
        trusted, caps = self.http.policy()
        work = DownloadWork(str(self.ws.root), self.http.settings, trusted, caps, int(cfg.get("media", "max_pixels")),
                            int(cfg.get("media", "min_side")), float(cfg.get("media", "decode_budget")),
                            storage_setting(self.ws))
        for batch in self.remote.map_groups(work, host_groups(rows, COMMIT_EVERY)):
            self._commit(batch)

    def _commit(self, batch: list[Downloaded]) -> None:
        self._committed_at = time.monotonic()
        if not batch:
            return
        catalog = self.catalog
        with catalog.transaction():
            for d in batch:
                row = d.row
                provenance: dict[str, Any] = {
                    "page_url": row.page_url, "title": row.title, "engine": row.engine, "query": row.query,
                    "rank": row.rank, "license": row.license, "author": row.author, "http_status": d.fetched.status}
                reason, message = d.reason, d.message
                image_id: int | None = None
                if d.ok and d.sha256:  # data None: a worker wrote the file and sent back its facts only
                    try:
                        image_id, is_new = store(self.ws, catalog, d.data, d.sha256, d.format or "",
                                                 d.ext or "bin", d.width, d.height, row.label, size=d.size,
                                                 files=self.files)
                    except ImageError as exc:
                        if exc.reason != "missing":
                            raise
                        image_id, reason, message = None, exc.reason, str(exc)  # a later crawl fetches it again
                if image_id is not None:
                    catalog.record_source(kind="url", location=row.url, label=row.label, status="ok",
                                          image_id=image_id, **provenance)
                    catalog.settle_url(row.url_id, state="ok", image_id=image_id, is_new=is_new, error=None,
                                       http_status=d.fetched.status)
                else:
                    catalog.record_source(kind="url", location=row.url, label=row.label, status="failed",
                                          error=reason, detail=message, **provenance)
                    catalog.settle_url(row.url_id, state="failed", image_id=None, is_new=False, error=reason,
                                       http_status=d.fetched.status)
        self.progress.advance(len(batch))

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
              progress: Progress = SILENT, terms: list[str] | None = None,
              executor: Executor | None = None) -> CrawlSummary:
    """Run every pending pair (or every pair with ``again``); returns one report per pair, blocked ones too.

    ``progress`` gets one task per pair (see :func:`task_name`), counted in URLs settled; a dry run also
    notes each URL it would fetch (``url<TAB>page_url``). ``executor`` (not local): downloads run on its
    workers, host by host, after each search has recorded its pages."""
    default_limit = int(ws.config().get("crawl", "limit"))
    pairs = plan(ws, catalog, engines, label, again, terms)
    searches: list[PairReport] = []
    with Crawl(ws, catalog, progress, executor=executor, dry_run=dry_run) as crawl:
        for pair in pairs:  # --limit, else the query's own limit=, else [crawl] limit
            n = limit or int(pair.query.settings.get("limit") or default_limit)
            report = crawl.dry_run(pair, n) if dry_run else crawl.run_pair(pair, n)
            searches.append(report)
            progress.finish(report.counts.found)
    if not dry_run:
        configured = configured_engines(ws.config())
        for lab in sorted({p.query.label for p in pairs}):
            with catalog.transaction():
                write_mirror(ws, catalog, lab, configured)
    return CrawlSummary.of(searches)
