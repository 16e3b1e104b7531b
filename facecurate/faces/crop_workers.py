"""Crop's worker processes: each crops whole batches of photos (decode, detect, align, encode, write).

Why processes, and why whole batches: on a CPU the per-photo work outside MTCNN (JPEG decode, the FFHQ warp and
its padding blend, JPEG encode) is about as large as detection itself, and all of it is many short numpy, torch
and OpenCV calls that queue on the GIL in threads. A worker that runs the whole of a batch
(:class:`~facecurate.faces.crop_batch.CropWork`, the same work the Ray executor runs) needs no pixels from
anyone and sends back only records; the main process keeps the catalog and commits. An earlier design kept
MTCNN in the main process and the rest in workers: detection then ran on one core while the workers waited for
it, and every photo was decoded twice (once for the detector's copy, sent over a pipe, once to cut the crop).

Fork where safe, spawn elsewhere: on Linux the workers are forked before the crop stage imports torch (none of
its thread pools running) and each imports it on its first batch, with its own detector and the torch threads
:func:`plan` gives it. OpenCV's own thread pool survives the fork as long as the child does not reconfigure it
(``cv2.setNumThreads`` in a forked child deadlocks once the parent has used the pool), so workers leave it
alone. macOS (fork is unsafe with its system frameworks) and Windows (no fork) spawn workers. Each worker
ignores Ctrl-C (the main process stops the pool after the batches in flight, whose writes are atomic) and, on
Linux, dies with the main process, so a ``kill -9`` leaves no orphan behind.
"""

from __future__ import annotations

import ctypes
import multiprocessing
import os
import signal
import sys
import warnings
from collections.abc import Iterator
from concurrent.futures import ProcessPoolExecutor
from contextlib import contextmanager, suppress
from dataclasses import dataclass

from facecurate import media
from facecurate.catalog import ImageRow
from facecurate.errors import ImageError
from facecurate.faces.crop_batch import CropOptions, CropWork
from facecurate.faces.crop_photo import CropOutcome
from facecurate.workspace import Workspace

IN_PROCESS_UP_TO = 8  # photos; a smaller run is cropped in this process (starting workers would cost more)


@dataclass(frozen=True)
class Setup:
    """What every worker needs, handed over once by the pool's initializer rather than with every task."""

    ws: Workspace
    opts: CropOptions
    max_pixels: int
    max_bytes: int
    threads: int  # torch threads of each worker's detector
    storage: str  # [run] storage
    parent: int  # the main process's pid: a worker whose parent is already gone exits at once


@dataclass(frozen=True)
class Failed:
    """An :class:`ImageError` as plain values: its two-argument constructor does not survive unpickling."""

    message: str
    reason: str

    def error(self) -> ImageError:
        return ImageError(self.message, self.reason)


_work: CropWork | None = None


def usable_cpus() -> int:
    """Cores this process may run on (a container's or ``taskset``'s limit, not the machine's)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # macOS, Windows
        return os.cpu_count() or 1


def plan(setting: int, photos: int, cpus: int | None = None) -> tuple[int, int]:
    """(worker processes, torch threads of each worker's detector) for a run of ``photos`` photos.

    ``setting`` is crop.workers: 0 picks a count, N asks for N. Automatic: one worker per core up to four
    cores, then one per two cores with two torch threads each (a worker holds torch and a detector, ~0.3 GB,
    and MTCNN's convolutions still gain from a second thread); 0 workers (crop in this process) for a single
    core or a handful of photos. With a count asked for, each worker gets the cores the count leaves it, at
    least one thread: more threads than cores make torch's OpenMP threads spin against each other."""
    cpus = cpus or usable_cpus()
    if setting > 0:
        return setting, max(1, cpus // setting)
    if cpus < 2 or photos <= IN_PROCESS_UP_TO:
        return 0, cpus
    workers = cpus if cpus <= 4 else cpus // 2
    return workers, max(1, cpus // workers)


def start_method(threads: int = 1) -> str:
    """fork on Linux, unless this process has run torch already and the workers would run it on more than one
    thread: OpenMP's thread pool does not survive a fork, and a child that enters a parallel region with more
    than one thread hangs (on one thread torch never enters one). The command line never imports torch before
    the workers start; a program that used torch before calling the stage gets spawned workers."""
    if not sys.platform.startswith("linux") or (threads > 1 and "torch" in sys.modules):
        return "spawn"
    return "fork"


def shared_budget(megapixels: float, threads: int = 1) -> media.PixelBudget | None:
    """The stage's [media] decode_budget for forked workers to share; None where workers are spawned (each
    then holds an equal share of it, see :func:`pool`)."""
    return media.PixelBudget(megapixels, processes=True) if start_method(threads) == "fork" else None


@contextmanager
def pool(setup: Setup, workers: int, megapixels: float) -> Iterator[ProcessPoolExecutor]:
    """``workers`` started worker processes; on leaving, the tasks in flight finish and the rest are dropped."""
    budget = shared_budget(megapixels, setup.threads)
    with warnings.catch_warnings():
        # Python 3.12 warns when forking a process that runs other threads (a progress bar's refresher):
        # the children never touch the locks those threads hold.
        warnings.simplefilter("ignore", DeprecationWarning)
        executor = ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context(start_method(setup.threads)),
                                       initializer=_init, initargs=(setup, budget, megapixels / workers))
        for future in [executor.submit(int) for _ in range(workers)]:  # start them all here, under the filter
            future.result()
    try:
        yield executor
    finally:
        executor.shutdown(wait=True, cancel_futures=True)


def _init(setup: Setup, budget: media.PixelBudget | None, share: float) -> None:
    global _work
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    if sys.platform.startswith("linux"):
        with suppress(OSError, AttributeError):
            ctypes.CDLL(None).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG: die with the main process
        if os.getppid() != setup.parent:  # it died before the line above
            os._exit(1)
    _work = CropWork(str(setup.ws.root), setup.opts, setup.max_pixels, setup.max_bytes, share,
                     threads=setup.threads, storage=setup.storage, budget=budget, mirrored=True)


def batch_task(rows: list[ImageRow]) -> list[CropOutcome]:
    """In a worker: one batch cropped whole (see :class:`~facecurate.faces.crop_batch.CropWork`)."""
    assert _work is not None
    outcomes: list[CropOutcome] = _work(rows)
    return outcomes


def crop_failure(row: ImageRow, exc: Exception) -> str:
    return f"{row.path}: aligning or writing a crop failed ({exc})."
