"""The ``local`` executor: today's behaviour. Stages run their own tuned threads and processes when the executor
is local (``is_local``), so their figures are unchanged; :meth:`LocalExecutor.map_batches` runs work in this
process, one batch after the other, for callers with no path of their own (the scale benchmark's baseline)."""

from __future__ import annotations

import time
from collections.abc import Iterable, Iterator
from typing import TypeVar

from facecurate.work import BatchWork, NodeThroughput

ItemT = TypeVar("ItemT")
ResultT = TypeVar("ResultT")


class LocalExecutor:
    name = "local"
    gpus_per_worker = 0.0  # stages on the local path choose their device themselves ([crop] device)

    def __init__(self) -> None:
        self._counts: dict[str, NodeThroughput] = {}

    @property
    def is_local(self) -> bool:
        return True

    def map_batches(self, work: BatchWork[ItemT, ResultT], batches: Iterable[list[ItemT]]
                    ) -> Iterator[list[ResultT]]:
        line = self._counts.setdefault(work.name, NodeThroughput(work.name, "local", 0, 0.0))
        for batch in batches:
            start = time.perf_counter()
            results = work(batch)
            line.items += len(batch)
            line.seconds += time.perf_counter() - start
            yield results

    def map_groups(self, work: BatchWork[ItemT, ResultT], groups: Iterable[list[list[ItemT]]]
                   ) -> Iterator[list[ResultT]]:
        for group in groups:
            try:
                yield from self.map_batches(work, group)
            finally:
                close = getattr(work, "close", None)
                if close is not None:
                    close()

    def throughput(self) -> list[NodeThroughput]:
        return list(self._counts.values())

    def close(self) -> None:
        pass
