"""The executor seam: a stage describes its heavy work as batches in and results out; an executor runs them.

Why a seam at all: ``crop`` and ``filter`` are per-photo and per-face work (decode, detect, align, measure) that
needs no catalog, so it can run on any machine that sees the workspace's files, while the catalog stays one
SQLite file written by one process. A stage therefore splits itself in two: a **work** object that turns one
batch of plain records into plain results (and writes content-addressed files, atomically), and the stage's own
loop that reads the catalog, hands batches to an executor and commits each batch's results in one transaction,
as it always has. The state rules live in the stage loop only, so they hold whichever executor ran the work.

This module is core (layer 1) so stages can name the protocols without importing any executor: the executors
themselves (:mod:`facecurate.executors`, ``local`` and ``ray``) are orchestration and import the stages' work.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Generic, Protocol, TypeVar

if TYPE_CHECKING:
    import pyarrow as pa

ItemT = TypeVar("ItemT")
ResultT = TypeVar("ResultT")


@dataclass(frozen=True)
class ArrowResults(Generic[ResultT]):
    """How one work type's results cross from a worker to the driver: an Arrow table of ``schema``, one row per
    item, in the batch's order, with typed columns (ids int64, scores float64, reasons as strings, a crop's
    faces as a list of structs).

    Why typed and not pickled result objects: the driver can check what came back against a declared schema
    before it commits anything, the table is columnar end to end (Ray Data's blocks, Parquet, DuckDB read it as
    is), and a result carries only typed values, never a Python object of the worker's making (how Ray frames an
    Arrow block between processes is Ray's business: its serializer ships the Arrow buffers out of band; the
    download tasks send Arrow IPC streams). The round trip is exact (float64 keeps every float bit), so a
    result read back equals the one the work returned and both executors commit the same rows.

    The local executor never builds these tables: its results stay Python objects, its speed unchanged."""

    schema: pa.Schema
    to_arrow: Callable[[list[ResultT]], pa.Table]
    from_arrow: Callable[[pa.Table], list[ResultT]]


class BatchWork(Protocol[ItemT, ResultT]):
    """One stage's work on one batch. Built in the driver from plain values, so it pickles to any worker; it
    loads what is heavy (a detector, FaceMesh) on its first call, once per worker, and keeps it.

    A result per item, in the batch's order; an item that fails is a result that says so (never an exception:
    one bad photo must not cost its batch). ``gpus`` is what one worker holds (0: a CPU worker). ``results``
    declares how a batch's results travel back from a worker that is not this process (an executor that is not
    local); a work type keeps it next to its result type, in a module only that path imports or behind a lazy
    property (dedup's), so the local path never loads pyarrow."""

    @property
    def name(self) -> str: ...

    @property
    def gpus(self) -> float: ...

    @property
    def results(self) -> ArrowResults[ResultT]: ...

    def __call__(self, batch: list[ItemT], /) -> list[ResultT]: ...


@dataclass
class NodeThroughput:
    """Items one node (worker machine) finished for one stage, and the wall time the stage's map took."""

    stage: str
    node: str
    items: int
    seconds: float

    @property
    def per_second(self) -> float:
        return self.items / self.seconds if self.seconds > 0 else 0.0


class Executor(Protocol):
    """Runs a stage's batches. ``local`` means "the stage's own in-process path": stages keep their tuned
    threads and processes there and only hand batches to an executor that is not local."""

    name: str

    @property
    def gpus_per_worker(self) -> float:
        """What a worker that wants a GPU is given; 0: no GPU to give (a CPU worker then)."""
        ...

    @property
    def is_local(self) -> bool: ...

    def map_batches(self, work: BatchWork[ItemT, ResultT], batches: Iterable[list[ItemT]]
                    ) -> Iterator[list[ResultT]]:
        """Each batch's results, in the batches' order, lazily: the caller commits batch i while later batches
        are still being worked on, so a kill loses only what was not committed yet."""
        ...

    def map_groups(self, work: BatchWork[ItemT, ResultT], groups: Iterable[list[list[ItemT]]]
                   ) -> Iterator[list[ResultT]]:
        """Each group's batches one after the other on one worker, groups side by side; every batch's results as
        it finishes (groups interleave, so each result must say which item it is). For work that must not run
        twice at once per group: one web host's downloads, so its per-host caps hold across a cluster."""
        ...

    def throughput(self) -> list[NodeThroughput]:
        """Items per node per stage so far (one line for a local run)."""
        ...

    def close(self) -> None: ...


def unfinished(waited: ItemT, behind: Iterable[tuple[ItemT, Future[Any]]]) -> list[ItemT]:
    """After a worker process died (``BrokenProcessPool``), the tasks it may have died on: the one waited for
    and every one behind it that did not finish cleanly. A process pool cannot say which worker held which
    task, and it fails every pending future at once, so the task at the head of the queue is not necessarily
    the one that crashed."""
    return [waited] + [item for item, future in behind if not (future.done() and future.exception() is None)]
