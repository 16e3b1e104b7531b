"""Worker processes that finish downloads (decode to validate, hash, write the content-addressed file).

Why processes: a crawl costs ~2.4 ms of CPU per image in Python, so one process is held to about one core by
the GIL (~400 images/s), while img2dataset spreads the same work over processes. Only finishing moves here:
the requests stay in the crawl's process, so every politeness rule (per-host caps, spacing, Retry-After), the
address guard and the per-URL deadline hold exactly as with one process, however many hosts a crawl has.

Why not :class:`concurrent.futures.ProcessPoolExecutor`: its jobs reach a worker through a manager thread
of the crawl's process, which waits for the GIL like every other thread there, so under load the fetched
bodies queued up at the bound on bodies in flight (30 of 32 on average in the 10,000-URL benchmark, against
11-15 with a pipe per worker); and a worker that dies breaks the whole pool without saying on which file.
Here each worker has its own pipe and finishes its jobs in the order sent, so
a receiving thread per worker settles each job as its answer arrives, and when a worker dies the job it was
on is known: that one is recorded as ``worker_crashed`` (a hostile file that crashes a native decoder costs
one worker, not the crawl) and the jobs queued behind it go to the other workers.

The workers are forked, so they inherit the crawl's settings and its ``finish`` function instead of
importing anything; where ``fork`` is missing the downloader finishes on threads instead.
"""

from __future__ import annotations

import multiprocessing
import os
import pickle
import signal
import threading
import time
import warnings
from collections import deque
from collections.abc import Callable
from concurrent.futures import Future
from contextlib import suppress
from multiprocessing.connection import Connection
from typing import Any, Generic, TypeVar

from facecurate.catalog import DownloadRow
from facecurate.crawl.http import Fetched

R = TypeVar("R")  # a finished download (the downloader's ``Downloaded``)
WORKER_NICENESS = 5  # added to the crawl's own: see _serve


class _Worker(Generic[R]):
    def __init__(self, process: Any, conn: Connection) -> None:
        self.process, self.conn = process, conn
        # sent and not answered, in the order the worker takes them
        self.jobs: deque[tuple[DownloadRow, Fetched, Future[R]]] = deque()
        self.send_lock = threading.Lock()
        self.alive = True
        self.receiver: threading.Thread | None = None


class FinishingProcesses(Generic[R]):
    """``count`` forked workers running ``finish``; :meth:`submit` settles a future with its outcome.

    A worker answers with what ``finish`` returns, and ``outcome`` makes the job's result of it here, from the
    row and fetched body the job was sent with: the answer need not carry them back (unpickling them again
    was a tenth of the crawl's CPU per image, all of it in the process that makes the requests).
    ``settled`` is called once per job whatever becomes of it (the downloader bounds the bodies in flight
    with it). ``crashed`` makes the outcome of a job whose worker died under it."""

    def __init__(self, count: int, finish: Callable[[DownloadRow, Fetched], Any],
                 outcome: Callable[[DownloadRow, Fetched, Any], R], settled: Callable[[], None],
                 crashed: Callable[[DownloadRow, Fetched, str], R]) -> None:
        self._finish, self._outcome, self._settled, self._crashed = finish, outcome, settled, crashed
        self._lock = threading.Lock()
        self._closed = False
        self._ctx = multiprocessing.get_context("fork")
        # every worker is forked before any receiving thread starts: a fork copies only the forking thread
        self._workers = [self._fork() for _ in range(max(1, count))]
        for w in self._workers:
            self._listen(w)

    def _fork(self) -> _Worker[R]:
        ours, theirs = self._ctx.Pipe()
        with warnings.catch_warnings():
            # Python 3.12 warns when forking a process that runs threads (a progress bar's refresher, or the
            # crawl's own when a crashed worker is replaced): the child only decodes, hashes and writes files.
            warnings.simplefilter("ignore", DeprecationWarning)
            process = self._ctx.Process(target=_serve, args=(theirs, self._finish, os.getpid()),
                                        name="facecurate-finish", daemon=True)
            process.start()
        theirs.close()  # only the worker holds its end: its death reads as end-of-file here
        return _Worker[R](process, ours)

    def _listen(self, w: _Worker[R]) -> None:
        w.receiver = threading.Thread(target=self._receive, args=(w,), name="facecurate-finish-recv", daemon=True)
        w.receiver.start()

    def submit(self, row: DownloadRow, fetched: Fetched, future: Future[R]) -> None:
        """Hand one fetched body to the least busy worker (raises RuntimeError once closed).

        The job joins the worker's queue and is sent under one hold of its send lock: answers are matched to
        jobs by order, so a thread that queued first and sent second (another thread's send between) would
        have each job settled with the other's outcome, an image recorded under a URL it did not come from."""
        while True:
            with self._lock:
                if self._closed:
                    raise RuntimeError("the finishing workers are closed")
                alive = [w for w in self._workers if w.alive]
                if not alive:  # every worker died: start one (its receiver after the fork)
                    w = self._fork()
                    self._workers.append(w)
                    self._listen(w)
                    alive = [w]
                w = min(alive, key=lambda x: len(x.jobs))
            with w.send_lock:
                with self._lock:
                    if not w.alive:  # died since it was chosen: its receiver has handed its jobs on
                        continue
                    w.jobs.append((row, fetched, future))
                with suppress(OSError, ValueError):  # the worker is gone: its receiver hands this job on
                    w.conn.send((row, fetched))
                return

    def _receive(self, w: _Worker[R]) -> None:
        while True:
            try:
                out = w.conn.recv()
            except (EOFError, OSError):
                break
            with self._lock:
                row, fetched, future = w.jobs.popleft()
            try:
                if isinstance(out, BaseException):
                    future.set_exception(out)
                else:
                    future.set_result(self._outcome(row, fetched, out))
            except BaseException as exc:
                future.set_exception(exc)
            finally:
                self._settled()
        w.process.join()
        with self._lock:
            w.alive = False
            jobs = list(w.jobs)
            w.jobs.clear()
            if w in self._workers:
                self._workers.remove(w)
        w.conn.close()
        if not jobs:
            return
        (row, fetched, future), rest = jobs[0], jobs[1:]
        future.set_result(self._crashed(row, fetched, f"exit code {w.process.exitcode}"))
        self._settled()
        for row, fetched, future in rest:  # not started yet: another worker finishes them
            try:
                self.submit(row, fetched, future)
            except RuntimeError:  # closing: recorded like the crashed one, and retried by the next crawl
                future.set_result(self._crashed(row, fetched, "while the crawl was closing"))
                self._settled()

    def close(self) -> None:
        """Let every worker finish what it was sent, then stop it."""
        with self._lock:
            self._closed = True
            workers = list(self._workers)
        for w in workers:
            try:
                with w.send_lock:
                    w.conn.send(None)
            except (OSError, ValueError):
                pass
        for w in workers:
            if w.receiver is not None:
                w.receiver.join()

    def pids(self) -> list[int]:
        """The live workers' process ids (tests kill one to check the crash path)."""
        with self._lock:
            return [w.process.pid for w in self._workers if w.alive and w.process.pid]


# -- in the worker ---------------------------------------------------------------------------------------------


def _serve(conn: Connection, finish: Callable[[DownloadRow, Fetched], Any], parent: int) -> None:
    """A worker's life: finish each body it is sent and answer, in order, until told to stop.

    Ctrl-C is the crawl's to handle (it stops the requests, then closes the workers, which finish what they
    hold first); a worker whose crawl is gone (kill -9) exits instead of waiting for a job forever."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    with suppress(OSError):
        # Below the crawl's process, whose one GIL carries every request: when the cores are busy, the
        # thread with an answer in hand runs first, and a worker finishing a body a little later costs nothing.
        os.nice(WORKER_NICENESS)
    threading.Thread(target=_exit_with, args=(parent,), name="facecurate-orphan-check", daemon=True).start()
    while True:
        try:
            job = conn.recv()
        except (EOFError, OSError):
            break
        if job is None:
            break
        row, fetched = job
        try:
            out: Any = finish(row, fetched)
        except Exception as exc:  # a bug or a full disk: the crawl sees it as it would on a thread
            out = exc
        try:
            conn.send(out)
        except (pickle.PicklingError, TypeError, AttributeError):
            conn.send(RuntimeError(f"{row.url}: {out!r}"))
    conn.close()


def _exit_with(parent: int) -> None:
    while os.getppid() == parent:
        time.sleep(0.5)
    os._exit(0)
