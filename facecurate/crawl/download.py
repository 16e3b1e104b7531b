"""The concurrent, polite downloader: fetch, validate by decoding, hand back bytes ready to store.

Two stages. Download threads (over the pooled sessions of :class:`~facecurate.crawl.http.Http`) only fetch: a
host's slot ([crawl] per_host) is free again as soon as its answer is in, so the next request to it starts
while finishing workers decode and may pre-write the content-addressed file (``prewrite``: temp name, fsync,
rename). Neither touches the catalog. The crawl stage records results from one thread, in batches, through
:func:`facecurate.storage.store` — the same path ``import`` uses, which finds the file already in place — so a
kill -9 loses at most the batch in flight and never leaves a half file.

Finishing runs in forked worker processes ([crawl] processes, :mod:`facecurate.crawl.finishing`) where the
platform forks: the requests, and with them every politeness and network rule, stay in this process.
"""

from __future__ import annotations

import multiprocessing
import os
import threading
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, fields, replace
from typing import Any

from facecurate import media
from facecurate.catalog import DownloadRow
from facecurate.crawl.finishing import FinishingProcesses
from facecurate.crawl.http import Fetched, Http
from facecurate.crawl.urls import host_key, normalise
from facecurate.errors import ImageError

IMAGE_ACCEPT = "image/avif,image/webp,image/apng,image/*,*/*;q=0.8"
FINISHERS_PER_CPU = 3
# Finishing processes per core when [crawl] processes is 0: a worker finishes one image at a time and waits
# ~2 ms of each on the fsync of its write, so one per core would leave the cores idle half the time.
PROCESSES_PER_CPU = 2


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
    size: int = 0  # bytes of the file; ``data`` is None once a worker has written them to their content address

    @property
    def ok(self) -> bool:
        return self.reason is None


def as_header(page_url: str | None) -> str | None:
    """A result's page URL as a Referer can carry it. Header values are Latin-1 and end at a line break, so a
    page URL with an IDN host, a Korean path or a CR/LF (as engines return them) made the image's request fail
    as ``bad_url``; such a URL goes in its escaped, normalised form, and one that has none (not http(s)) is
    not sent. An ordinary URL goes as it is. Pure."""
    if not page_url:
        return None
    if page_url.isascii() and page_url.isprintable():
        return page_url
    try:
        escaped = normalise(page_url)
    except ValueError:
        return None
    return escaped if escaped.isascii() and escaped.isprintable() else None


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
                      format=decoded.format, ext=decoded.extension, width=decoded.width, height=decoded.height,
                      size=len(fetched.body))


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
        # only fight over the GIL (32 finishers on 2 cores were ~10% slower end to end than 6).
        finishers = min(workers, FINISHERS_PER_CPU * (os.cpu_count() or 1))
        self._finishers = ThreadPoolExecutor(max_workers=finishers, thread_name_prefix="facecurate-finish")
        self._finishing = threading.BoundedSemaphore(workers)  # bodies fetched and not yet finished
        # forked here, before any download thread runs (a fork copies only the forking thread)
        self.processes: FinishingProcesses[Downloaded] | None = FinishingProcesses(
            processes, self._finish_apart, _outcome, self._finishing.release, _crashed) if processes else None
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
        referer = as_header(row.page_url)
        if referer:
            headers["Referer"] = referer
        return self.http.get(row.url, headers=headers)

    def _finish(self, row: DownloadRow, fetched: Fetched) -> Downloaded:
        result = validate(row, fetched, self.max_pixels, self.min_side, self.budget)
        if result.ok and self.prewrite is not None:
            self.prewrite(result)
        return result

    def _finish_apart(self, row: DownloadRow, fetched: Fetched) -> tuple[Any, ...]:
        """:meth:`_finish` in a worker process, answered as :func:`_outcome` reads it: the facts alone, no
        bytes (a stored image's are in its file when ``prewrite`` put them there)."""
        result = self._finish(row, fetched)
        written = result.ok and self.prewrite is not None
        return _answer(replace(result, data=None) if written else result)

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
        except Exception as exc:  # an answer the client did not foresee: this URL fails, the crawl goes on
            fetched = Fetched(row.url, reason="worker_crashed", message=(
                f"{row.url}: fetching it failed ({type(exc).__name__}: {str(exc)[:200]}); not stored, and the "
                f"crawl went on. The next crawl tries it again; if it fails the same way, please report it."))
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
            if self.processes is not None:
                self.processes.submit(row, fetched, future)
            else:
                self._finishers.submit(self._complete, row, fetched, future)
        except BaseException as exc:  # the finishers are shutting down (Ctrl-C)
            self._finishing.release()
            future.set_exception(exc)

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
        if self.processes is not None:
            self.processes.close()
        self.http.close()

    def __enter__(self) -> Downloader:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


# What a worker process sends back for one download: every field but the row and the fetched answer, which
# the crawl's process still holds (see :class:`~facecurate.crawl.finishing.FinishingProcesses`).
_ANSWERED = tuple(f.name for f in fields(Downloaded) if f.name not in ("row", "fetched"))


def _answer(result: Downloaded) -> tuple[Any, ...]:
    return tuple(getattr(result, name) for name in _ANSWERED)


def _outcome(row: DownloadRow, fetched: Fetched, answer: tuple[Any, ...]) -> Downloaded:
    """A worker's answer as the download it finished; the body is dropped here, as the worker did its copy."""
    return Downloaded(row, replace(fetched, body=None), **dict(zip(_ANSWERED, answer, strict=True)))


def _crashed(row: DownloadRow, fetched: Fetched, how: str) -> Downloaded:
    return Downloaded(row, fetched, reason="worker_crashed", message=(
        f"{row.url}: the worker process finishing this download died ({how}: a native crash in an image decoder "
        f"on this file, or killed); not stored, and the crawl went on. The next crawl tries it again."))
