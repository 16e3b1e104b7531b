"""The hash search split into shards that fit one worker's memory: exact, and equal to the one-piece search.

Why shards, and why these: :func:`facecurate.dedup.search.mih_search` holds the whole index (every item's
hash, mirror hash and eight crop-window hashes) and its bucket tables at once; a million photos take about
0.6 GB and 45 s on one core, which sets where one machine stops. Past that the search is cut into pieces that
need no shared state, so an executor (a process pool here, Ray tasks on a cluster) can run them anywhere.

The cut is the pigeonhole principle: split the 64 bits into ``m = threshold + 1`` disjoint blocks; two hashes
within ``threshold`` bits differ in at most ``threshold`` blocks, so they agree *exactly* on at least one.
Shard family ``c`` routes every hash by the value of its block ``c``, a shard holding a contiguous range of
those values (cut from a histogram so no shard exceeds ``max_entries``), so every pair within the threshold
meets in the shard of the first block on which it agrees. Inside a shard the ordinary multi-index search
runs, and a pair is kept only in the family of its first agreeing block: each (query, index) pair comes out
exactly once, and the union of all shards is the same set, in the same order, that the one-piece search
returns (the tests and ``benchmarks/bench_dedup_scale.py --sharded`` check exactly that).

What it costs: every hash is routed to ``m`` shards (9 at the default threshold of 8), so the total work is
several times the one-piece search, spread over as many workers as there are shards; memory per shard is
bounded by ``max_entries`` (one block value cannot be split: with ``b``-bit blocks the smallest shard is about
``entries / 2**b``, 1/128 of the index at the default threshold). The cross-shard pass is cheap: the matches
(pairs within the threshold, a few per duplicate) are merged on the driver and grouped by the same rules as on
one machine (:func:`facecurate.dedup.groups.best_per_pair`, :func:`~facecurate.dedup.groups.group_around_keepers`),
so keepers, distances and transforms equal the one-machine grouping. Components of the edge graph are not
merged transitively (no union-find into groups): the keeper rule is what stops chains, and it needs only the
edges, which the driver holds.

Nothing here imports an executor: a shard is a plain record of arrays, :func:`search_shard` a pure function.
"""

from __future__ import annotations

import itertools
import multiprocessing
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future, ProcessPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from functools import partial
from typing import Any, TypeVar

import numpy as np

from facecurate.dedup.search import HASH_BITS, Matches, as_u64, mih_search, plan_search, split_widths

T = TypeVar("T")
R = TypeVar("R")
Mapper = Callable[[Callable[[T], R], Iterable[T]], Iterable[R]]
"""An ordered map over shards: builtin ``map`` (one shard at a time, here), :func:`process_map`, or an
executor's remote map. It must yield results in input order (the merge does not depend on it, but a lazy
map bounds memory only when it consumes its input as it goes)."""


@dataclass(frozen=True)
class Blocks:
    """The ``m = threshold + 1`` disjoint bit blocks of the pigeonhole cut (low bits first)."""

    widths: tuple[int, ...]
    shifts: tuple[int, ...]

    @staticmethod
    def for_threshold(threshold: int) -> Blocks:
        if not 0 <= threshold < HASH_BITS:
            raise ValueError(f"a sharded search needs a threshold in 0..{HASH_BITS - 1}, got {threshold}")
        widths = split_widths(threshold + 1)
        shifts = tuple(int(s) for s in np.cumsum((0, *widths[:-1])))
        return Blocks(widths, shifts)

    def key(self, hashes: np.ndarray, block: int) -> np.ndarray:
        """Each hash's value of one block (uint64)."""
        mask = np.uint64((1 << self.widths[block]) - 1) if self.widths[block] < HASH_BITS else np.uint64(2**64 - 1)
        out: np.ndarray = (hashes >> np.uint64(self.shifts[block])) & mask
        return out


@dataclass(frozen=True)
class Shard:
    """One work item's address: block ``block``'s values ``lo..hi`` (inclusive)."""

    block: int
    lo: int
    hi: int


@dataclass(frozen=True)
class ShardWork:
    """What one shard needs: its address, the threshold and its rows (global row numbers and their hashes).
    Plain arrays, so it pickles to a process or a remote worker."""

    shard: Shard
    threshold: int
    index_rows: np.ndarray     # int64
    index_hashes: np.ndarray   # uint64
    query_rows: np.ndarray     # int64
    query_hashes: np.ndarray   # uint64

    @property
    def entries(self) -> int:
        return int(self.index_rows.size + self.query_rows.size)


def plan_shards(index: np.ndarray, queries: np.ndarray, threshold: int, max_entries: int) -> list[Shard]:
    """Shards of every block family, each holding at most ``max_entries`` index and query hashes together
    (unless one block value alone holds more: it cannot be split and becomes a shard of its own)."""
    index, queries = as_u64(index), as_u64(queries)
    blocks = Blocks.for_threshold(threshold)
    shards: list[Shard] = []
    for c in range(len(blocks.widths)):
        keys, counts = np.unique(np.concatenate([blocks.key(index, c), blocks.key(queries, c)]), return_counts=True)
        # Greedy cut over the sorted values: start a new shard when adding a value would overflow.
        start, total = 0, 0
        for k, count in enumerate(counts.tolist()):
            if total and total + count > max_entries:
                shards.append(Shard(c, int(keys[start]), int(keys[k - 1])))
                start, total = k, 0
            total += count
        if keys.size:
            shards.append(Shard(c, int(keys[start]), int(keys[-1])))
    return shards


def shard_inputs(index: np.ndarray, queries: np.ndarray, threshold: int, shards: Iterable[Shard]
                 ) -> Iterator[ShardWork]:
    """Each shard's rows, built as the map asks for them (a lazy map keeps only the shards in flight)."""
    index, queries = as_u64(index), as_u64(queries)
    blocks = Blocks.for_threshold(threshold)
    for shard in shards:
        ik, qk = blocks.key(index, shard.block), blocks.key(queries, shard.block)
        irows = np.flatnonzero((ik >= np.uint64(shard.lo)) & (ik <= np.uint64(shard.hi)))
        qrows = np.flatnonzero((qk >= np.uint64(shard.lo)) & (qk <= np.uint64(shard.hi)))
        yield ShardWork(shard, threshold, irows.astype(np.int64), index[irows], qrows.astype(np.int64),
                        queries[qrows])


def search_shard(work: ShardWork) -> Matches:
    """The pairs within the threshold whose *first* exactly agreeing block is this shard's block, in global
    row numbers: every pair of the whole search comes out of exactly one shard."""
    blocks = Blocks.for_threshold(work.threshold)
    c = work.shard.block
    # The wanted pairs agree on block c, so only the other 64 - b bits need chunk tables: rotating block c to
    # the top (Hamming distances do not change) and planning over the low bits keeps every table selective,
    # where a chunk that took in the shard's (nearly) constant block would return a crowd per probe.
    spin = (HASH_BITS - blocks.shifts[c] - blocks.widths[c]) % HASH_BITS
    index, queries = _rotate(work.index_hashes, spin), _rotate(work.query_hashes, spin)
    bits = HASH_BITS - blocks.widths[c]
    plan = plan_search(index.size, queries.size, work.threshold, bits) if bits > 0 else None
    found = mih_search(index, queries, work.threshold, plan)
    if len(found) == 0:
        return found
    x = work.query_hashes[found.query] ^ work.index_hashes[found.index]
    keep = blocks.key(x, c) == 0
    for earlier in range(c):
        keep &= blocks.key(x, earlier) != 0
    return Matches(work.query_rows[found.query[keep]], work.index_rows[found.index[keep]], found.distance[keep])


def _rotate(hashes: np.ndarray, k: int) -> np.ndarray:
    """Rotate 64-bit words left by ``k``: the same pairwise Hamming distances, block c moved to the top."""
    if k == 0:
        return hashes
    out: np.ndarray = (hashes << np.uint64(k)) | (hashes >> np.uint64(HASH_BITS - k))
    return out


def merge(parts: Iterable[Matches]) -> Matches:
    """The shards' matches as one result, in the one-piece search's order (query, then index row)."""
    parts = [p for p in parts if len(p)]
    if not parts:
        return Matches.empty()
    q = np.concatenate([p.query for p in parts])
    i = np.concatenate([p.index for p in parts])
    d = np.concatenate([p.distance for p in parts])
    order = np.lexsort((i, q))
    return Matches(q[order], i[order], d[order])


def sharded_search(index: np.ndarray, queries: np.ndarray, threshold: int, max_entries: int,
                   mapper: Mapper[ShardWork, Matches] = map) -> Matches:
    """Every (query, index) pair within ``threshold`` bits, shard by shard; equal to :func:`mih_search`."""
    index, queries = as_u64(index), as_u64(queries)
    if index.size == 0 or queries.size == 0:
        return Matches.empty()
    shards = plan_shards(index, queries, threshold, max_entries)
    return merge(mapper(search_shard, shard_inputs(index, queries, threshold, shards)))


def searcher(max_entries: int, mapper: Mapper[ShardWork, Matches] = map) -> Callable[..., Matches]:
    """:func:`sharded_search` with the shard size and map fixed: what ``candidate_edges`` takes as ``search``."""
    return partial(_search_with, max_entries=max_entries, mapper=mapper)


def _search_with(index: np.ndarray, queries: np.ndarray, threshold: int, *, max_entries: int,
                 mapper: Mapper[ShardWork, Matches]) -> Matches:
    return sharded_search(index, queries, threshold, max_entries, mapper)


@contextmanager
def process_map(workers: int, ahead: int = 2) -> Iterator[Mapper[Any, Any]]:
    """An ordered, lazy map over forked worker processes, at most ``ahead`` shards per worker in flight (so the
    driver never holds every shard's rows); in this process where fork is missing or one worker is asked.

    This is the local stand-in for a cluster executor: shards share nothing, so any map that runs a function
    over pickled records will do."""
    if workers < 2 or "fork" not in multiprocessing.get_all_start_methods():
        yield map
        return
    pool = ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("fork"))

    def ordered(fn: Callable[[Any], Any], items: Iterable[Any]) -> Iterator[Any]:
        todo = iter(items)
        queue: deque[Future[Any]] = deque(pool.submit(fn, x) for x in itertools.islice(todo, ahead * workers))
        while queue:
            result = queue.popleft().result()
            nxt = next(todo, None)
            if nxt is not None:
                queue.append(pool.submit(fn, nxt))
            yield result

    try:
        yield ordered
    finally:
        pool.shutdown(wait=True, cancel_futures=True)
