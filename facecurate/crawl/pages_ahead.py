"""Result pages fetched ahead of the crawl that records them, never one that the run might not need.

Why ahead: the crawl records a page (one transaction) and starts its downloads on its own thread, and a
page's 35 URLs last the download threads about as long as the next page takes to come, so a searcher that
waited for each page to be recorded before asking for the next let the download queue run dry on any
hiccup of the recording thread. Here the searcher asks for the next page as soon as its cursor is known.

Why never more: an engine counts every page it serves (rate limits, CAPTCHAs), so a page is requested only
when the run is certain to read it whatever the pages not yet recorded turn out to hold. Each result adds at
most one hit, and a page counts as empty at worst, so the next page is certain to be needed while the hits
recorded plus every result still unrecorded stay under the limit, the empty pages recorded plus every page
still unrecorded stay under [crawl] empty_pages, and no unrecorded page is the engine's last. With one page
unrecorded this is the rule the crawl always had; ``depth`` bounds how many pages wait to be recorded.
"""

from __future__ import annotations

import threading
from collections import deque
from collections.abc import Callable
from concurrent.futures import Executor, Future
from typing import Any

from facecurate.crawl.engines import Page

DEPTH = 2  # pages fetched and not yet recorded, at most: one in recording, one ready behind it


class PagesAhead:
    """The pages of one run, in order, fetched on the searcher thread while the crawl records earlier ones.

    ``fetch(cursor)`` gets one page (it raises :class:`SearchStopped` on a block: that reaches the crawl
    when it takes the page that failed, after the pages fetched before it). Call :meth:`recorded` after each
    page taken from :meth:`take`, and :meth:`close` when done (it waits until the engine is idle)."""

    def __init__(self, searcher: Executor, fetch: Callable[[dict[str, Any]], Page], cursor: dict[str, Any],
                 hits: int, empty: int, limit: int, empty_pages: int, depth: int = DEPTH) -> None:
        self._fetch = fetch
        self._hits, self._empty = hits, empty
        self._limit, self._empty_pages, self._depth = limit, empty_pages, max(1, depth)
        self._cond = threading.Condition()
        self._ready: deque[Page] = deque()       # fetched, not yet taken
        self._unrecorded: list[Page] = []        # fetched, not yet recorded (taken or not)
        self._error: BaseException | None = None
        self._done = False                       # the searcher fetches nothing more
        self._closed = False
        self._task: Future[None] = searcher.submit(self._run, cursor)

    def _needed(self) -> bool:
        """Whether the run is certain to read one page more (call with the condition held)."""
        pending = self._unrecorded
        return (len(pending) < self._depth and not any(p.end for p in pending)
                and self._hits + sum(len(p.results) for p in pending) < self._limit
                and self._empty + len(pending) < self._empty_pages)

    def _run(self, cursor: dict[str, Any]) -> None:
        try:
            while True:
                with self._cond:
                    while not self._closed and not self._needed():
                        self._cond.wait()
                    if self._closed:
                        return
                page = self._fetch(cursor)
                with self._cond:
                    self._ready.append(page)
                    self._unrecorded.append(page)
                    self._cond.notify_all()
                if page.end:
                    return
                cursor = page.cursor
        except BaseException as exc:  # a block, or the crawl's HTTP aborted under it: the taker raises it
            with self._cond:
                self._error = exc
        finally:
            with self._cond:
                self._done = True
                self._cond.notify_all()

    def take(self) -> Page | None:
        """The next page in order (waits for it); None when the searcher will fetch no more."""
        with self._cond:
            while not self._ready and not self._done:
                self._cond.wait()
            if self._ready:
                return self._ready.popleft()
            if self._error is not None:
                error, self._error = self._error, None
                raise error
            return None

    def recorded(self, hits: int, empty: int) -> None:
        """The oldest page taken is recorded: the run now has ``hits`` hits after ``empty`` empty pages."""
        with self._cond:
            self._unrecorded.pop(0)
            self._hits, self._empty = hits, empty
            self._cond.notify_all()

    def close(self, wait: bool = True) -> None:
        """Fetch nothing more; with ``wait``, until the page in flight (if any) is in, so the engine is idle
        for the next search (without, as on Ctrl-C, the crawl aborts its HTTP and shuts the searcher)."""
        with self._cond:
            self._closed = True
            self._cond.notify_all()
        if not self._task.cancel() and wait:
            self._task.result()
