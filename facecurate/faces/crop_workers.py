"""Crop's worker processes: decoding, alignment, encoding and writing beside the detector in the main process.

Why processes: on a CPU the per-photo work outside MTCNN (JPEG decode, the FFHQ warp and its Lanczos steps,
JPEG encode) is as large as detection itself, and in threads of the detector's process it queues on the GIL
and fights torch's OpenMP threads for the same cores. Workers run only this torch-free work
(:mod:`facecurate.faces.crop_photo`); the main process keeps the detector and the catalog.

Fork where safe, spawn elsewhere: on Linux the workers are forked before the detector is built (torch not
yet imported by the crop stage, none of its thread pools running), and a forked worker never touches torch.
OpenCV's own thread pool survives the fork as long as the child does not reconfigure it (``cv2.setNumThreads``
in a forked child deadlocks once the parent has used the pool), so workers leave it alone. macOS (fork is
unsafe with its system frameworks) and Windows (no fork) spawn workers, which import this module and not the
caller's torch. Each worker ignores Ctrl-C (the main process stops the pool after the tasks in flight, whose
writes are atomic) and, on Linux, dies with the main process, so a ``kill -9`` leaves no orphan behind.
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

import numpy as np

from facecurate import media
from facecurate.catalog import FaceRecord, ImageRow
from facecurate.errors import ImageError
from facecurate.faces.crop_photo import CutSettings, Face, Limits, crop_image, decode_copy
from facecurate.filestore import FileStore

IN_PROCESS_UP_TO = 8  # photos; a smaller run is cropped in this process (starting workers would cost more)


@dataclass(frozen=True)
class Setup:
    """What every worker needs, handed over once by the pool's initializer rather than with every task."""

    files: FileStore
    max_pixels: int
    max_bytes: int
    detect_max_side: int
    cut: CutSettings
    parent: int  # the main process's pid: a worker whose parent is already gone exits at once


@dataclass(frozen=True)
class Failed:
    """An :class:`ImageError` as plain values: its two-argument constructor does not survive unpickling."""

    message: str
    reason: str

    def error(self) -> ImageError:
        return ImageError(self.message, self.reason)


_setup: Setup | None = None
_limits: Limits | None = None


def usable_cpus() -> int:
    """Cores this process may run on (a container's or ``taskset``'s limit, not the machine's)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # macOS, Windows
        return os.cpu_count() or 1


def plan(setting: int, photos: int, cpus: int | None = None) -> tuple[int, int]:
    """(worker processes, torch threads for the detector) for a run of ``photos`` photos.

    ``setting`` is crop.workers: 0 picks a count, N asks for N. The automatic count gives a quarter of the
    cores to MTCNN's torch threads and the rest to workers, with at least one thread and at least two workers
    (on 2 idle cores, 2 workers + 1 torch thread cropped 38.6 mixed / 11.7 large-face photos/s against 30.3 /
    9.0 with 1 + 1: the workers wait on disk and on the detector in turns); 0 workers (crop in this process)
    for a single core or a handful of photos. With a count asked for, torch gets the cores the workers leave,
    at least one: more threads than free cores make its OpenMP threads spin against the workers."""
    cpus = cpus or usable_cpus()
    if setting > 0:
        return setting, max(1, cpus - setting)
    if cpus < 2 or photos <= IN_PROCESS_UP_TO:
        return 0, cpus
    detector = cpus // 4
    return max(2, cpus - detector), max(1, detector)


def start_method() -> str:
    return "fork" if sys.platform.startswith("linux") else "spawn"


def shared_budget(megapixels: float) -> media.PixelBudget | None:
    """The stage's [media] decode_budget for forked workers to share; None where workers are spawned (each
    then holds an equal share of it, see :func:`pool`)."""
    return media.PixelBudget(megapixels, processes=True) if start_method() == "fork" else None


@contextmanager
def pool(setup: Setup, workers: int, megapixels: float) -> Iterator[ProcessPoolExecutor]:
    """``workers`` started worker processes; on leaving, the tasks in flight finish and the rest are dropped."""
    budget = shared_budget(megapixels)
    with warnings.catch_warnings():
        # Python 3.12 warns when forking a process that runs other threads (a progress bar's refresher):
        # the children never touch the locks those threads hold.
        warnings.simplefilter("ignore", DeprecationWarning)
        executor = ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context(start_method()),
                                       initializer=_init, initargs=(setup, budget, megapixels / workers))
        for future in [executor.submit(int) for _ in range(workers)]:  # start them all here, under the filter
            future.result()
    try:
        yield executor
    finally:
        executor.shutdown(wait=True, cancel_futures=True)


def _init(setup: Setup, budget: media.PixelBudget | None, share: float) -> None:
    global _setup, _limits
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    if sys.platform.startswith("linux"):
        with suppress(OSError, AttributeError):
            ctypes.CDLL(None).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG: die with the main process
        if os.getppid() != setup.parent:  # it died before the line above
            os._exit(1)
    _setup = setup
    _limits = Limits(setup.max_pixels, setup.max_bytes, budget or media.PixelBudget(share))


def decode_task(row: ImageRow) -> media.Decoded | Failed:
    """In a worker: the detector's reduced copy of one photo."""
    assert _setup is not None and _limits is not None
    out = decode_copy(_setup.files, row, _limits, _setup.detect_max_side)
    return Failed(str(out), out.reason) if isinstance(out, ImageError) else out


def crop_task(row: ImageRow, faces: list[tuple[tuple[float, float, float, float], float, np.ndarray]]
              ) -> list[FaceRecord] | Failed:
    """In a worker: decode the photo in full, align, encode and write its chosen faces (see
    :func:`~facecurate.faces.crop_photo.crop_image`); the records, or why the photo failed."""
    assert _setup is not None and _limits is not None
    try:
        return crop_image(_setup.files, row, None, [Face(*f) for f in faces], _setup.cut, _limits)
    except (ValueError, OSError, ImageError) as exc:  # one odd face must not stop the run
        return Failed(crop_failure(row, exc), "crop_failed")


def crop_failure(row: ImageRow, exc: Exception) -> str:
    return f"{row.path}: aligning or writing a crop failed ({exc})."
