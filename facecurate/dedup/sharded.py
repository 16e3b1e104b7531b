"""The hash search split into shards that fit one worker's memory: exact, and equal to the one-piece search.

Why shards, and why these: :func:`facecurate.dedup.search.mih_search` holds the whole index (every item's
hash, mirror hash and eight crop-window hashes) and one dense bucket table per chunk at once; a million photos
take about 0.7 GB and 46 s on one core, which sets where one machine stops. Past that the search is cut into
pieces that share nothing, so an executor (a process pool here, Ray tasks on a cluster) can run them anywhere.

The cut follows the multi-index search itself. Its plan splits the 64 bits into chunks and, by the pigeonhole
principle, every pair within the threshold has at least one chunk whose keys differ by at most that chunk's
radius; the one-piece search probes each query's Hamming ball of keys in each chunk's table. Here chunk ``c``'s
table is partitioned by a *prefix* of its key (the top ``p`` bits): shard ``(c, prefix)`` holds the index
entries with that prefix, and every query whose key prefix is within the radius of it. Inside the shard a query
whose prefix differs in ``w`` bits probes only the keys with the shard's prefix, i.e. its suffix ball of
radius ``radius - w``: across a chunk's shards every probe of the one-piece search happens exactly once, so the
total work stays that of one piece plus the routing. A pair can be found through several chunks; it is kept
only in the first chunk that reaches it (a check on the two hashes alone), so each (query, index) pair comes
out of exactly one shard, and the union is the same set, in the same order, that the one-piece search returns
(the tests and ``benchmarks/bench_dedup_scale.py --sharded`` check exactly that).

Memory per shard is bounded by ``max_entries`` (index entries plus the queries routed to it): the prefix grows
one bit at a time until the fullest shard fits, up to the whole chunk key. The cross-shard pass is cheap: the
matches (pairs within the threshold, a few per duplicate) are merged on the driver and grouped by the same code
as on one machine (:func:`facecurate.dedup.groups.best_per_pair`,
:func:`~facecurate.dedup.groups.group_around_keepers`), so keepers, distances and transforms equal the
one-machine grouping. Connected components are not merged into groups (no union-find): the keeper rule is what
stops chains, and it needs only the edges, which the driver holds.

Nothing here starts a process or imports an executor: a shard is a plain record of arrays, :func:`search_shard`
a pure function, and the caller passes the map that runs them.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from functools import partial
from typing import TypeVar

import numpy as np

from facecurate.dedup.search import Matches, Plan, as_u64, ball_masks, mih_search, plan_search, popcount64, probe_chunk

T = TypeVar("T")
R = TypeVar("R")
Mapper = Callable[[Callable[[T], R], Iterable[T]], Iterable[R]]
"""An ordered map over shards: builtin ``map`` (one shard at a time, here),
:func:`facecurate.dedup.stage.process_map` (forked processes), or an executor's remote map. A lazy map that
consumes its input as it goes keeps only the shards in flight."""


@dataclass(frozen=True)
class Shard:
    """One work item's address: chunk ``chunk`` of the plan, key prefix ``prefix`` of ``prefix_bits`` bits."""

    chunk: int
    prefix_bits: int
    prefix: int


@dataclass(frozen=True)
class ShardWork:
    """What one shard needs: its address, the search plan and threshold, and its rows (global row numbers and
    their hashes). Plain values and arrays, so it pickles to a process or a remote worker."""

    shard: Shard
    plan: Plan
    threshold: int
    index_rows: np.ndarray     # int64
    index_hashes: np.ndarray   # uint64
    query_rows: np.ndarray     # int64
    query_hashes: np.ndarray   # uint64

    @property
    def entries(self) -> int:
        return int(self.index_rows.size + self.query_rows.size)


def _shifts(plan: Plan) -> list[int]:
    return [sum(plan.widths[:c]) for c in range(len(plan.widths))]


def _field(hashes: np.ndarray, shift: int, bits: int) -> np.ndarray:
    """``bits`` bits of each hash from bit ``shift`` up, as int64 (bits < 63)."""
    out: np.ndarray = ((hashes >> np.uint64(shift)) & np.uint64((1 << bits) - 1)).astype(np.int64)
    return out


def _prefixes(hashes: np.ndarray, plan: Plan, chunk: int, prefix_bits: int) -> np.ndarray:
    """The top ``prefix_bits`` bits of each hash's key in ``chunk``."""
    bits = plan.widths[chunk]
    return _field(hashes, _shifts(plan)[chunk] + bits - prefix_bits, prefix_bits)


def _prefix_bits(index_counts: np.ndarray, query_counts: np.ndarray, radius: int, max_entries: int) -> int:
    """The shortest prefix whose fullest shard (index entries plus routed queries) fits ``max_entries``; counts
    are per full chunk key, so every prefix length can be tried without touching the hashes again."""
    bits = int(np.log2(index_counts.size))
    for p in range(bits + 1):
        idx = index_counts.reshape(1 << p, -1).sum(axis=1)
        qry = query_counts.reshape(1 << p, -1).sum(axis=1)
        routed = sum(qry[np.arange(1 << p) ^ int(m)] for m in ball_masks(p, min(radius, p)))
        if int((idx + routed).max()) <= max_entries:
            return p
    return bits


def plan_shards(index: np.ndarray, queries: np.ndarray, threshold: int, max_entries: int
                ) -> tuple[Plan, list[Shard]]:
    """The one-piece search's plan and its shards: per chunk with a probe radius, the shortest key prefix that
    keeps every shard within ``max_entries`` (unless one full key alone holds more)."""
    index, queries = as_u64(index), as_u64(queries)
    plan = plan_search(index.size, queries.size, threshold)
    shards: list[Shard] = []
    if plan.brute:
        return plan, [Shard(-1, 0, 0)]
    for c, (bits, radius) in enumerate(zip(plan.widths, plan.radii, strict=True)):
        if radius < 0:
            continue
        shift = _shifts(plan)[c]
        ic = np.bincount(_field(index, shift, bits), minlength=1 << bits)
        qc = np.bincount(_field(queries, shift, bits), minlength=1 << bits)
        p = _prefix_bits(ic, qc, radius, max_entries)
        shards += [Shard(c, p, v) for v in range(1 << p)]
    return plan, shards


def shard_inputs(index: np.ndarray, queries: np.ndarray, threshold: int, plan: Plan, shards: Iterable[Shard]
                 ) -> Iterator[ShardWork]:
    """Each shard's rows, built as the map asks for them (a lazy map keeps only the shards in flight)."""
    index, queries = as_u64(index), as_u64(queries)
    cache: dict[tuple[int, int], tuple[np.ndarray, np.ndarray, np.ndarray]] = {}
    for shard in shards:
        if shard.chunk < 0:   # the plan is a brute force: one shard holds everything
            yield ShardWork(shard, plan, threshold, np.arange(index.size), index, np.arange(queries.size), queries)
            continue
        key = (shard.chunk, shard.prefix_bits)
        if key not in cache:
            cache.clear()   # shards come chunk by chunk: one chunk's routing at a time
            ip = _prefixes(index, plan, *key)
            order = np.argsort(ip, kind="stable")
            bounds = np.searchsorted(ip[order], np.arange((1 << shard.prefix_bits) + 1))
            cache[key] = (order, bounds, _prefixes(queries, plan, *key))
        order, bounds, qp = cache[key]
        irows = order[bounds[shard.prefix]:bounds[shard.prefix + 1]]
        near = popcount64((qp ^ shard.prefix).astype(np.uint64)) <= plan.radii[shard.chunk]
        qrows = np.flatnonzero(near)
        yield ShardWork(shard, plan, threshold, irows.astype(np.int64), index[irows], qrows.astype(np.int64),
                        queries[qrows])


def search_shard(work: ShardWork) -> Matches:
    """The one-piece search's probes that land in this shard, in global row numbers, less the pairs an earlier
    chunk reaches: every pair of the whole search comes out of exactly one shard."""
    shard, plan = work.shard, work.plan
    if shard.chunk < 0:
        found = mih_search(work.index_hashes, work.query_hashes, work.threshold, plan)
        return Matches(work.query_rows[found.query], work.index_rows[found.index], found.distance)
    if work.index_rows.size == 0 or work.query_rows.size == 0:
        return Matches.empty()
    shifts = _shifts(plan)
    c, radius = shard.chunk, plan.radii[shard.chunk]
    suffix = plan.widths[c] - shard.prefix_bits
    # A query whose prefix differs from the shard's in w bits probes the keys with the shard's prefix: its
    # suffix ball of radius - w (the index here all shares the prefix, so a suffix table is the chunk table).
    w = popcount64((_prefixes(work.query_hashes, plan, c, shard.prefix_bits) ^ shard.prefix).astype(np.uint64))
    out_q: list[np.ndarray] = []
    out_i: list[np.ndarray] = []
    out_d: list[np.ndarray] = []
    for wv in np.unique(w).tolist():
        rows = np.flatnonzero(w == wv)
        q, i, d = probe_chunk(work.index_hashes, work.query_hashes[rows], shifts[c], suffix, radius - wv,
                              np.uint8(work.threshold))
        out_q += [rows[np.asarray(x)] for x in q]
        out_i += i
        out_d += d
    if not out_q:
        return Matches.empty()
    qa, ia, da = np.concatenate(out_q).astype(np.int64), np.concatenate(out_i).astype(np.int64), np.concatenate(out_d)
    x = work.query_hashes[qa] ^ work.index_hashes[ia]
    keep = np.ones(qa.size, dtype=bool)
    for earlier in range(c):
        if plan.radii[earlier] >= 0:
            keep &= popcount64(x >> np.uint64(shifts[earlier]) & np.uint64((1 << plan.widths[earlier]) - 1)) \
                > plan.radii[earlier]
    return Matches(work.query_rows[qa[keep]], work.index_rows[ia[keep]], da[keep])


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
    plan, shards = plan_shards(index, queries, threshold, max_entries)
    return merge(mapper(search_shard, shard_inputs(index, queries, threshold, plan, shards)))


def searcher(max_entries: int, mapper: Mapper[ShardWork, Matches] = map) -> Callable[..., Matches]:
    """:func:`sharded_search` with the shard size and map fixed: what ``candidate_edges`` takes as ``search``."""
    return partial(_search_with, max_entries=max_entries, mapper=mapper)


def _search_with(index: np.ndarray, queries: np.ndarray, threshold: int, *, max_entries: int,
                 mapper: Mapper[ShardWork, Matches]) -> Matches:
    return sharded_search(index, queries, threshold, max_entries, mapper)
