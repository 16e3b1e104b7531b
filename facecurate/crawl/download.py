"""The concurrent, polite downloader: fetch, validate by decoding, hand back bytes ready to store.

Two stages. Download threads (over the pooled sessions of :class:`~facecurate.crawl.http.Http`) only fetch: a
host's slot ([crawl] per_host) is free again as soon as its answer is in, so the next request to it starts
while finishing workers decode and may pre-write the content-addressed file (``prewrite``: temp name, fsync,
rename). Neither touches the catalog. The crawl stage records results from one thread, in batches, through
:func:`facecurate.storage.store` — the same path ``import`` uses, which finds the file already in place — so a
kill -9 loses at most the batch in flight and never leaves a half file.

Finishing runs in forked worker processes ([crawl] processes) when the platform forks. Why: a crawl costs
~2.4 ms of CPU per image in Python (HTTP ~0.9 ms, decode + hash + write ~1 ms, bookkeeping), so one process
is held to one core by the GIL, about 400 images/s, while img2dataset spreads the same work over processes.
Only finishing moves: the requests stay in this process, so every politeness rule (per-host caps, spacing,
Retry-After), the address guard and the per-URL deadline keep working exactly as they do with one process, on
however many hosts a crawl has (one host may keep every worker busy). A worker receives the fetched body and
returns the decoded facts; a hostile file that crashes a decoder kills a worker, not the crawl.
"""

from __future__ import annotations

import multiprocessing
import os
import signal
import threading
import time
import warnings
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, ThreadPoolExecutor, wait
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass

from facecurate import media
from facecurate.catalog import DownloadRow
from facecurate.crawl.http import Fetched, Http
from facecurate.crawl.urls import host_key
from facecurate.errors import ImageError

IMAGE_ACCEPT = "image/avif,image/webp,image/apng,image/*,*/*;q=0.8"
FINISHERS_PER_CPU = 3
# Finishing processes per core when [crawl] processes is 0: a worker finishes one image at a time and waits
# ~2 ms of each on the fsync of its write, so one per core would leave the cores idle half the time.
PROCESSES_PER_CPU = 2
CRASH_RETRIES = 1  # a body whose worker died is finished once more on a fresh pool (it may not be the culprit)


def finishing_processes(setting: int) -> int:
    """Worker processes to finish downloads in, from [crawl] processes (0: automatic); 0 means threads of
    this process, as where ``fork`` is missing (the workers inherit the crawl's state instead of importing)."""
    if setting == 1 or "fork" not in multiprocessing.get_all_start_methods():
        return 0
    return setting if setting > 1 else max(2, PROCESSES_PER_CPU * (os.cpu_count() or 1))


@dataclass
class Downloaded:
    """One URL's outcome: decoded facts and bytes on success, else a reason code and message."""

    row: DownloadRow
    fetched: Fetched
    data: bytes | None = None
    sha256: str | None = None
    format: str | None = None
    ext: str | None = None
    width: int = 0
    height: int = 0
    reason: str | None = None
    message: str = ""

    @property
    def ok(self) -> bool:
        return self.reason is None


def validate(row: DownloadRow, fetched: Fetched, max_pixels: int, min_side: int,
             budget: media.PixelBudget | None = None) -> Downloaded:
    """Decode the body to its last byte (HTML/SVG/truncated/too small/bombs are refused) and hash it."""
    if not fetched.ok or fetched.body is None:
        return Downloaded(row, fetched, reason=fetched.reason or "failed", message=fetched.message)
    try:
        decoded = media.probe(fetched.body, row.url, max_pixels, min_side, budget=budget)
    except ImageError as exc:
        ctype = fetched.headers.get("content-type", "?")
        return Downloaded(row, fetched, reason=exc.reason, message=f"{exc} (served as {ctype}; nothing to fix on "
                          f"your side: the host did not deliver an image).")
    return Downloaded(row, fetched, data=fetched.body, sha256=media.sha256_bytes(fetched.body),
                      format=decoded.format, ext=decoded.extension, width=decoded.width, height=decoded.height)


class Downloader:
    """Fetch and validate many URLs at once; results come back as they finish.

    A row reaches a worker only when its host has a free slot ([crawl] per_host): a worker handed a row of a
    busy host would sit waiting for that host, and a slow host's backlog would hold every worker while other
    hosts' rows wait behind it. The slot is held for the request only; decoding and writing happen on a
    finishing thread, and at most ``workers`` fetched bodies are queued for or on one (a download thread with
    a body in hand waits past that: memory stays bounded when finishing falls behind)."""

    def __init__(self, http: Http, max_pixels: int, min_side: int, workers: int | None = None,
                 prewrite: Callable[[Downloaded], None] | None = None,
                 budget: media.PixelBudget | None = None, processes: int = 0) -> None:
        """``budget``: decoded pixels all workers may hold at once (the stage's [media] decode_budget; made
        with ``processes=True`` when ``processes`` is set, so the worker processes share it).
        ``processes``: finish in that many forked worker processes (see :func:`finishing_processes`); 0 keeps
        finishing on threads of this process. ``prewrite`` then runs in the workers."""
        self.http = http
        self.max_pixels, self.min_side, self.budget = max_pixels, min_side, budget
        self.prewrite = prewrite
        workers = workers or http.settings.concurrency
        self._pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="facecurate-dl")
        # Finishing is CPU work (decode, hash) plus an fsync: a few threads per core keep the cores busy; more
        # only fight over the GIL (32 finishers on 2 cores were ~10% slower end to end than 6). With worker
        # processes one thread is enough: it only hands a crashed worker's bodies to a fresh pool.
        finishers = 1 if processes else min(workers, FINISHERS_PER_CPU * (os.cpu_count() or 1))
        self._finishers = ThreadPoolExecutor(max_workers=finishers, thread_name_prefix="facecurate-finish")
        self._processes = processes
        self._procs_lock = threading.Lock()
        self._procs: ProcessPoolExecutor | None = self._fork() if processes else None
        self._closing = False
        self._finishing = threading.BoundedSemaphore(workers)  # bodies fetched and not yet finished
        self._per_host = max(1, http.settings.per_host)
        self._lock = threading.Lock()
        self._waiting: dict[str, deque[tuple[DownloadRow, Future[Downloaded]]]] = {}
        self._busy: dict[str, int] = {}

    def fetch(self, row: DownloadRow) -> Downloaded:
        """One URL, start to finish, on the calling thread."""
        return self._finish(row, self._get(row))

    def _get(self, row: DownloadRow) -> Fetched:
        """The request alone: Referer is the page the engine found it on (hot-link protection wants it)."""
        headers = {"Accept": IMAGE_ACCEPT}
        if row.page_url:
            headers["Referer"] = row.page_url
        return self.http.get(row.url, headers=headers)

    def _finish(self, row: DownloadRow, fetched: Fetched) -> Downloaded:
        result = validate(row, fetched, self.max_pixels, self.min_side, self.budget)
        if result.ok and self.prewrite is not None:
            self.prewrite(result)
        return result

    def submit(self, row: DownloadRow) -> Future[Downloaded]:
        future: Future[Downloaded] = Future()
        host = host_key(row.url)
        with self._lock:
            self._waiting.setdefault(host, deque()).append((row, future))
            self._dispatch(host)
        return future

    def _dispatch(self, host: str) -> None:
        """Hand the host's next rows to the pool while it has free slots; call with the lock held."""
        queue = self._waiting.get(host)
        while queue and self._busy.get(host, 0) < self._per_host:
            row, future = queue.popleft()
            if not future.set_running_or_notify_cancel():
                continue  # cancelled while it waited
            try:
                self._pool.submit(self._work, host, row, future)
            except RuntimeError as exc:  # the pool is shutting down (Ctrl-C): nothing more starts
                future.set_exception(exc)
                continue
            self._busy[host] = self._busy.get(host, 0) + 1
        if not queue:
            self._waiting.pop(host, None)

    def _work(self, host: str, row: DownloadRow, future: Future[Downloaded]) -> None:
        fetched: Fetched | None = None
        try:
            fetched = self._get(row)
        except BaseException as exc:  # handed to whoever waits on the future, as the pool would
            future.set_exception(exc)
        finally:
            with self._lock:  # the request is over: the host's next row may start now
                self._busy[host] -= 1
                if not self._busy[host]:
                    del self._busy[host]
                self._dispatch(host)
        if fetched is None:
            return
        self._finishing.acquire()
        try:
            if self._processes:
                self._hand_over(row, fetched, future, 0)
            else:
                self._finishers.submit(self._complete, row, fetched, future)
        except BaseException as exc:  # the finishers are shutting down (Ctrl-C)
            self._finishing.release()
            future.set_exception(exc)

    # -- finishing in worker processes ------------------------------------------------------------------

    def _fork(self) -> ProcessPoolExecutor:
        """Start the worker processes now, before this process runs download threads (a fork copies only the
        forking thread, and any lock another thread holds stays locked in the child)."""
        with warnings.catch_warnings():
            # Python 3.12 warns when forking a process that runs threads (a progress bar's refresher, or the
            # crawl's own when a crashed pool is replaced): the children only decode, hash and write files.
            warnings.simplefilter("ignore", DeprecationWarning)
            pool = ProcessPoolExecutor(self._processes, mp_context=multiprocessing.get_context("fork"),
                                       initializer=_become_worker, initargs=(self, os.getpid()))
            pool.submit(int).result()
        return pool

    def _hand_over(self, row: DownloadRow, fetched: Fetched, future: Future[Downloaded], crashes: int) -> None:
        """Send a fetched body to a worker; its outcome settles ``future`` from the pool's result thread."""
        with self._procs_lock:
            if self._procs is None:
                if self._closing:
                    raise RuntimeError("the downloader is closed")
                self._procs = self._fork()  # the last pool was broken by a crashed worker
            pool = self._procs
        try:
            remote = pool.submit(_finish_forked, row, fetched)
        except BrokenProcessPool:
            self._replace(pool)
            self._finishers.submit(self._retry, row, fetched, future, crashes)
            return
        remote.add_done_callback(lambda r: self._settle(r, pool, row, fetched, future, crashes))

    def _settle(self, remote: Future[Downloaded], pool: ProcessPoolExecutor, row: DownloadRow, fetched: Fetched,
                future: Future[Downloaded], crashes: int) -> None:
        exc = None if remote.cancelled() else remote.exception()
        if remote.cancelled() or isinstance(exc, BrokenProcessPool):
            self._replace(pool)
            try:
                self._finishers.submit(self._retry, row, fetched, future, crashes)
                return
            except RuntimeError as closed:  # shutting down
                exc = closed
        try:
            if exc is not None:
                future.set_exception(exc)
            else:
                future.set_result(remote.result())
        finally:
            self._finishing.release()

    def _replace(self, broken: ProcessPoolExecutor) -> None:
        with self._procs_lock:
            if self._procs is broken:
                self._procs = None
        broken.shutdown(wait=False, cancel_futures=True)

    def _retry(self, row: DownloadRow, fetched: Fetched, future: Future[Downloaded], crashes: int) -> None:
        """A worker died (a decoder crash on some body, or killed) while this body was with the pool: every
        body in flight there is finished once more on a fresh pool; one that breaks it again is recorded."""
        if crashes >= CRASH_RETRIES:
            future.set_result(Downloaded(row, fetched, reason="worker_crashed", message=(
                f"{row.url}: the worker process decoding this download died (a native crash in an image "
                f"decoder, or killed), twice; not stored. The next crawl tries it again.")))
            self._finishing.release()
            return
        try:
            self._hand_over(row, fetched, future, crashes + 1)
        except BaseException as exc:  # closing
            future.set_exception(exc)
            self._finishing.release()

    def _complete(self, row: DownloadRow, fetched: Fetched, future: Future[Downloaded]) -> None:
        try:
            future.set_result(self._finish(row, fetched))
        except BaseException as exc:
            future.set_exception(exc)
        finally:
            self._finishing.release()

    def run(self, rows: Iterable[DownloadRow]) -> Iterator[Downloaded]:
        """Every row's outcome, in completion order."""
        futures = {self.submit(r) for r in rows}
        while futures:
            done, futures = wait(futures, return_when=FIRST_COMPLETED)
            for f in done:
                yield f.result()

    def close(self) -> None:
        self._pool.shutdown(wait=True, cancel_futures=True)
        # after the downloads: every fetched body is finished (a crashed pool's bodies are handed on first)
        self._finishers.shutdown(wait=True)
        with self._procs_lock:
            self._closing = True
            procs, self._procs = self._procs, None
        if procs is not None:
            procs.shutdown(wait=True)
        self.http.close()

    def __enter__(self) -> Downloader:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


# -- the worker process side ---------------------------------------------------------------------------------

_FORKED: Downloader | None = None  # in a worker: the downloader it was forked from (its limits and prewrite)


def _become_worker(downloader: Downloader, parent: int) -> None:
    """A new worker: Ctrl-C is the crawl's to handle (it stops the requests, then closes the pool, and the
    worker finishes what it holds); a worker whose crawl is gone (kill -9) exits instead of waiting forever."""
    global _FORKED
    _FORKED = downloader
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    threading.Thread(target=_exit_with, args=(parent,), name="facecurate-orphan-check", daemon=True).start()


def _exit_with(parent: int) -> None:
    while os.getppid() == parent:
        time.sleep(0.5)
    os._exit(0)


def _finish_forked(row: DownloadRow, fetched: Fetched) -> Downloaded:
    """In a worker: validate, hash and pre-write one body; the result travels back without a second copy of
    the bytes (``data`` and ``fetched.body`` are one object, which pickle sends once)."""
    assert _FORKED is not None, "called outside a crawl's worker process"
    return _FORKED._finish(row, fetched)
