"""The ``ray`` executor: a stage's batches run on Ray Data actors, results stream back as Arrow batches.

How one stage's work maps onto Ray, and why:

- **One dataset row per stage batch.** The stage already sized its batches for a transaction (crop: [crop]
  batch_size photos, i.e. a GPU batch); each becomes one row (its items pickled in a binary column: inputs are
  the driver's own objects) so a worker sees exactly the batch the local path would see, and the driver commits
  exactly that batch.
- **Typed results.** A worker returns a batch's results as the Arrow table its work declares
  (:class:`facecurate.work.ArrowResults`: a row per item, typed columns, a crop's faces as a list of structs),
  plus the batch's index and the node. The driver checks each table against the declared schema and turns it
  back into result objects only when it commits that batch; no result object is pickled on the way (Ray
  moves a Data block's Arrow buffers with its own serializer; download tasks yield Arrow IPC streams).
- **Actors, not tasks** (``map_batches`` with a callable class and ``concurrency``): a worker builds the stage's
  work once — MTCNN's weights, FaceMesh — and keeps it for every batch it gets. ``num_gpus`` per actor when the
  work wants a GPU and the cluster has one, else one CPU per actor.
- **Order preserved**: results come back in the batches' order, so catalog rows get the ids the local path
  gives them (dedup's keeper tie-break is the row id) and both executors write the same manifest.
- **The driver commits**: workers write only content-addressed files (atomically, temp name then rename), never
  the catalog. A batch is committed once, when its result arrives; a worker or node lost before that is
  retried by Ray, and a result is never yielded twice. A driver killed mid-stage loses the batches in flight;
  the next run selects what is not committed and does only that.

Workers must see the workspace at the same path (a shared filesystem on a real cluster); on this machine that
holds by construction. Workers are started with this interpreter, not through ``uv run`` (Ray's uv hook would
re-create the environment in a temp folder per worker, without the extra).
"""

from __future__ import annotations

import itertools
import logging
import os
import time
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import numpy as np
import pyarrow as pa

from facecurate import media
from facecurate.errors import FacecurateError
from facecurate.events import SILENT, Progress
from facecurate.work import BatchWork, NodeThroughput

ItemT = TypeVar("ItemT")
ResultT = TypeVar("ResultT")


# The executor's own columns beside a work type's declared result columns: which stage batch a result row
# belongs to (map_batches), and the node that computed it. A result schema must not use these names.
BATCH, NODE = "_batch", "_node"


def _dumps(obj: object) -> bytes:
    """Inputs (the work object, a batch's items) travel pickled: they are the driver's own objects."""
    from ray import cloudpickle

    return cloudpickle.dumps(obj)  # type: ignore[no-untyped-call,no-any-return,unused-ignore]


def _results_table(work: BatchWork[Any, Any], batch: list[Any], node: str, k: int | None = None) -> pa.Table:
    """One batch's results as their declared Arrow table, with the executor's columns appended."""
    results = work(batch)
    if len(results) != len(batch):
        raise FacecurateError(f"{work.name} returned {len(results)} results for a batch of {len(batch)} items.")
    table = work.results.to_arrow(results)
    if k is not None:
        table = table.append_column(BATCH, pa.array([k] * table.num_rows, pa.int64()))
    return table.append_column(NODE, pa.array([node] * table.num_rows, pa.string()))


def _ipc(table: pa.Table) -> bytes:
    """A table as an Arrow IPC stream: what a download task yields (typed, columnar, and never unpickled)."""
    sink = pa.BufferOutputStream()
    with pa.ipc.new_stream(sink, table.schema) as writer:
        writer.write_table(table)
    return sink.getvalue().to_pybytes()  # type: ignore[no-any-return,unused-ignore]


def _run_group(work_blob: bytes, group_blob: bytes) -> Iterator[bytes]:
    """A Ray task: one group's batches in order, each batch's results yielded (an Arrow IPC stream) as soon as
    it is done."""
    import ray
    from ray import cloudpickle

    work = cloudpickle.loads(work_blob)
    node = ray.get_runtime_context().get_node_id()
    try:
        for batch in cloudpickle.loads(group_blob):
            yield _ipc(_results_table(work, batch, node))
    finally:
        close = getattr(work, "close", None)  # a group's clients (HTTP sessions, threads) end with it
        if close is not None:
            close()


class _Worker:
    """One Ray actor: unpickles the stage's work once, then runs it on every batch row it is given and returns
    the results as one Arrow table, a row per item (the block Ray Data streams back to the driver)."""

    def __init__(self, work: bytes) -> None:
        import ray
        from ray import cloudpickle

        self.work = cloudpickle.loads(work)
        self.node = ray.get_runtime_context().get_node_id()

    def __call__(self, rows: dict[str, np.ndarray]) -> pa.Table:
        from ray import cloudpickle

        return pa.concat_tables([_results_table(self.work, cloudpickle.loads(blob), self.node, int(k))
                                 for k, blob in zip(rows["k"], rows["batch"], strict=True)])


def _declared(work: BatchWork[Any, Any], table: pa.Table) -> pa.Table:
    """The table without the executor's columns, checked against the work's declared schema."""
    got = table.drop_columns([c for c in (BATCH, NODE) if c in table.column_names])
    if not got.schema.equals(work.results.schema):
        raise FacecurateError(f"{work.name}'s results came back as {got.schema}, not their declared schema "
                              f"{work.results.schema}.")
    return got


class RayExecutor:
    name = "ray"

    def __init__(self, address: str = "", workers: int = 0, gpus_per_worker: float = 1.0,
                 progress: Progress = SILENT, threads: int = 0, parts: Path | None = None) -> None:
        """Nothing starts here: the cluster is started or joined by the first stage that has work for it, so a
        run with nothing new to do costs no Ray start-up. ``parts``: the folder the workers' temp files go to
        (the workspace's ``.tmp``), swept on :meth:`close`."""
        self.address, self.workers, self.progress, self.parts = address, workers, progress, parts
        self._wanted_gpus = gpus_per_worker
        # Ray gives a one-CPU worker OMP_NUM_THREADS=1, and MTCNN's float32 sums then add up in another order:
        # boxes move by ~1e-5 px and FaceMesh's eye ratios on the re-cut crop by up to 1e-2. Workers get the
        # thread count this process runs with instead, so both executors give the same answers on one machine.
        self.threads = threads or int(os.environ.get("OMP_NUM_THREADS") or os.cpu_count() or 1)
        self._started = False
        self._ready = False
        self.cpus, self.gpus = 1, 0.0
        self._counts: dict[tuple[str, str], NodeThroughput] = {}

    def _ensure(self) -> None:
        if self._ready:
            return
        os.environ.setdefault("RAY_ENABLE_UV_RUN_RUNTIME_ENV", "0")  # workers run this interpreter, not `uv run`
        import ray

        if not ray.is_initialized():
            try:
                ray.init(address=self.address or None, include_dashboard=False, log_to_driver=False,
                         logging_level=logging.WARNING)
            except (ConnectionError, RuntimeError, ValueError) as exc:
                raise FacecurateError(f"Could not start or join a Ray cluster at [run] ray_address = "
                                      f"{self.address!r} ({exc}). Leave it empty to start one on this machine, "
                                      f"or start one with `ray start --head` and use \"auto\".") from exc
            self._started = True
        resources: dict[str, float] = ray.cluster_resources()  # type: ignore[no-untyped-call,unused-ignore]
        self.cpus = max(1, int(resources.get("CPU", 1)))
        self.gpus = float(resources.get("GPU", 0))
        logging.getLogger("ray.data").setLevel(logging.WARNING)
        self._ready = True

    @property
    def gpus_per_worker(self) -> float:
        """What a crop worker is given: ``[run] ray_gpus_per_worker``, 0 when the cluster has no GPU."""
        self._ensure()
        return min(self._wanted_gpus, self.gpus) if self.gpus > 0 else 0.0

    @property
    def is_local(self) -> bool:
        return False

    def _concurrency(self, gpus: float) -> int:
        if self.workers:
            return self.workers
        if gpus > 0:
            return max(1, int(self.gpus / gpus))
        return self.cpus

    def map_batches(self, work: BatchWork[ItemT, ResultT], batches: Iterable[list[ItemT]]
                    ) -> Iterator[list[ResultT]]:
        """Each batch's results, read back from its Arrow table (:meth:`arrow_batches`) only when the caller
        is about to commit it."""
        for table in self.arrow_batches(work, batches):
            yield work.results.from_arrow(table)

    def arrow_batches(self, work: BatchWork[ItemT, ResultT], batches: Iterable[list[ItemT]]
                      ) -> Iterator[pa.Table]:
        """Each batch's results as the Arrow table its work declares (``work.results.schema``), a row per item,
        in the batches' order. Ray Data may cut or join its blocks as it likes: rows carry their batch's index,
        and a batch is handed on once all its rows have come."""
        import ray.data

        todo = list(batches)
        expected, have = 0, 0
        pieces: list[pa.Table] = []

        def empties() -> Iterator[pa.Table]:  # an empty batch is not sent: it has no rows to come back
            nonlocal expected
            while expected < len(todo) and not todo[expected]:
                expected += 1
                yield work.results.schema.empty_table()

        if not any(todo):
            yield from empties()
            return
        self._ensure()
        ctx = ray.data.DataContext.get_current()
        ctx.execution_options.preserve_order = True
        ctx.enable_progress_bars = False
        ctx.print_on_execution_start = False
        rows = [{"k": k, "batch": _dumps(b)} for k, b in enumerate(todo) if b]
        concurrency = min(self._concurrency(work.gpus), len(rows))
        resources: dict[str, Any] = {"num_gpus": work.gpus} if work.gpus > 0 else {"num_cpus": 1}
        ds = ray.data.from_items(rows, override_num_blocks=len(rows)).map_batches(
            _Worker, fn_constructor_args=(_dumps(work),), batch_size=1,
            compute=ray.data.ActorPoolStrategy(size=concurrency),
            runtime_env={"env_vars": {"OMP_NUM_THREADS": str(self.threads)}}, **resources)
        start = time.perf_counter()
        try:
            for block in ds.iter_batches(batch_size=None, batch_format="pyarrow"):
                assert isinstance(block, pa.Table)
                ks = block.column(BATCH).to_numpy()
                cuts = [0, *(np.flatnonzero(ks[1:] != ks[:-1]) + 1).tolist(), len(ks)]
                for lo, hi in itertools.pairwise(cuts):
                    if lo == hi:
                        continue
                    k = int(ks[lo])
                    if not pieces:
                        yield from empties()
                    if k != expected:  # preserve_order holds this; a gap would commit a batch out of place
                        raise FacecurateError(f"Ray returned batch {k} of {work.name} where {expected} was due.")
                    pieces.append(block.slice(lo, hi - lo))
                    have += hi - lo
                    if have < len(todo[k]):
                        continue
                    if have > len(todo[k]):
                        raise FacecurateError(f"Ray returned {have} results for batch {k} of {work.name}, which "
                                              f"has {len(todo[k])} items.")
                    whole = pa.concat_tables(pieces)
                    node = str(whole.column(NODE)[0].as_py())
                    line = self._counts.setdefault((work.name, node), NodeThroughput(work.name, node, 0, 0.0))
                    line.items += have
                    self._elapse(work.name, time.perf_counter() - start)
                    expected, pieces, have = expected + 1, [], 0
                    yield _declared(work, whole)
            yield from empties()
            if expected != len(todo):
                raise FacecurateError(f"Ray returned {expected} of the {len(todo)} batches of {work.name}.")
        except FacecurateError:
            raise
        except Exception as exc:  # a worker's unexpected error, surfaced by Ray after its retries
            raise FacecurateError(f"The ray executor failed in {work.name} after Ray's retries: "
                                  f"{type(exc).__name__}: {str(exc)[:2000]} Batches committed before are kept; "
                                  f"run again to resume, or use --executor local.") from exc
        self._note(work.name)

    def map_groups(self, work: BatchWork[ItemT, ResultT], groups: Iterable[list[list[ItemT]]]
                   ) -> Iterator[list[ResultT]]:
        """Each batch's results, read back from its Arrow table (:meth:`arrow_groups`) as it arrives."""
        for table in self.arrow_groups(work, groups):
            yield work.results.from_arrow(table)

    def arrow_groups(self, work: BatchWork[ItemT, ResultT], groups: Iterable[list[list[ItemT]]]
                     ) -> Iterator[pa.Table]:
        """One Ray task per group (a streaming generator: it yields each batch's results, an Arrow IPC stream,
        as they are done), at most ``workers`` (default: 4 per CPU; the work waits on the network) in flight.
        Ray Data fits badly here: it would spread one group's batches over several actors at once."""
        import ray

        todo = [g for g in groups if g]
        if not todo:
            return
        self._ensure()
        task = ray.remote(num_cpus=0, num_returns="streaming")(_run_group)
        blob = ray.put(_dumps(work))
        cap = self.workers or 4 * self.cpus
        waiting = list(reversed(todo))
        running: list[Any] = []
        start = time.perf_counter()
        try:
            while waiting or running:
                while waiting and len(running) < cap:
                    running.append(task.options(runtime_env={"env_vars": {"OMP_NUM_THREADS": str(self.threads)}})
                                   .remote(blob, _dumps(waiting.pop())))
                ready, _ = ray.wait(running, num_returns=1)
                for gen in ready:
                    try:
                        ref = next(gen)  # type: ignore[arg-type,unused-ignore]
                    except StopIteration:
                        running.remove(gen)
                        continue
                    table = pa.ipc.open_stream(ray.get(ref)).read_all()
                    node = str(table.column(NODE)[0].as_py()) if table.num_rows else "?"
                    line = self._counts.setdefault((work.name, node), NodeThroughput(work.name, node, 0, 0.0))
                    line.items += table.num_rows
                    self._elapse(work.name, time.perf_counter() - start)
                    yield _declared(work, table)
        except FacecurateError:
            raise
        except Exception as exc:
            raise FacecurateError(f"The ray executor failed in {work.name}: {type(exc).__name__}: "
                                  f"{str(exc)[:2000]} Results recorded before are kept; run again to resume.") from exc
        finally:
            for gen in running:
                ray.cancel(gen)
        self._note(work.name)

    def _note(self, stage: str) -> None:
        for line in self._counts.values():
            if line.stage == stage:
                self.progress.note(f"ray · {stage}: node {line.node[:12]} did {line.items} items "
                                   f"({line.per_second:.1f}/s)")

    def _elapse(self, stage: str, seconds: float) -> None:
        for line in self._counts.values():
            if line.stage == stage:
                line.seconds = seconds

    def throughput(self) -> list[NodeThroughput]:
        return list(self._counts.values())

    def close(self) -> None:
        if self._started:
            import ray

            ray.shutdown()
            self._started = self._ready = False
        # When a driver is killed, Ray kills its job's workers outright, some while they write a file; the
        # workspace sweeps their temp files when it opens, but a worker of the killed job may still be alive
        # then. By now it is gone, so a sweep here leaves no half-written file behind.
        if self.parts is not None:
            media.remove_stale_parts(self.parts)

