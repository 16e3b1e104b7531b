"""Sub-quadratic Hamming search over 64-bit hashes: multi-index hashing (MIH) in numpy.

Why MIH rather than a BK-tree: a BK-tree answers one query at a time in Python and, at the thresholds near
duplicates need (8-10 bits of 64), visits a large share of the tree per query. MIH turns the whole self-join
into a few hundred vectorised passes: split each hash into ``m`` disjoint chunks; by the pigeonhole principle
two hashes within ``t`` bits agree within ``t // m`` bits on at least one chunk, so probing each chunk's
table with every key in that small Hamming ball finds every true pair, and a full popcount drops the rest.
With the generalised form (Norouzi et al., "Fast Exact Search in Hamming Space with Multi-Index Hashing",
2014) only the first ``t % m + 1`` chunks need radius ``t // m``; the others need one less.

Nothing here is N x N: memory is a few arrays of the index size plus one dense table per chunk, and the
work is ``passes x queries`` probes plus the candidates those probes return. For tiny inputs or extreme
thresholds a cost model falls back to a blocked brute force, which is exact as well.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass
from functools import lru_cache

import numpy as np

HASH_BITS = 64
MAX_CHUNK_BITS = 24       # a dense offsets table of 2**24 int32 is 64 MiB: the largest we allow per chunk
WALK_DEPTHS = 3           # bucket depths walked one numpy pass each before the rest is expanded in one go
BRUTE_BLOCK = 1 << 21     # pairs per brute-force block: bounds the temporaries at a few tens of MiB

# Rough per-element costs (ns) of the vectorised kernels on one core, used only to pick a plan.
_COST_PROBE, _COST_CANDIDATE, _COST_BRUTE, _COST_BUILD = 6.0, 12.0, 4.0, 60.0

_POP16 = np.array([bin(i).count("1") for i in range(1 << 16)], dtype=np.uint8)
_POP16.flags.writeable = False


def popcount64(x: np.ndarray) -> np.ndarray:
    """Set bits per element of a uint64 array (numpy 1.x has no bitwise_count): four 16-bit table reads,
    which measured faster than the SWAR bit tricks in numpy."""
    v = np.ascontiguousarray(x, dtype=np.uint64).view(np.uint16).reshape(-1, 4)
    out = np.take(_POP16, v[:, 0])
    out += np.take(_POP16, v[:, 1])
    out += np.take(_POP16, v[:, 2])
    out += np.take(_POP16, v[:, 3])
    return out.reshape(np.shape(x))


def hamming(a: int, b: int) -> int:
    """Hamming distance of two 64-bit hashes held as Python ints (signed or unsigned)."""
    return bin((a ^ b) & 0xFFFFFFFFFFFFFFFF).count("1")


def as_u64(values: np.ndarray | list[int]) -> np.ndarray:
    """Hashes as uint64, whether they come as signed int64 (SQLite) or unsigned."""
    arr = np.asarray(values)
    if arr.dtype == np.uint64:
        return arr
    if arr.dtype == object or arr.dtype.kind == "u":
        return np.array([int(v) & 0xFFFFFFFFFFFFFFFF for v in arr.ravel()], dtype=np.uint64).reshape(arr.shape)
    return arr.astype(np.int64).view(np.uint64)


@dataclass(frozen=True)
class Plan:
    """How a search runs: MIH chunk widths and radii, or brute force (``widths`` empty)."""

    widths: tuple[int, ...]
    radii: tuple[int, ...]
    passes: int
    est_seconds: float

    @property
    def brute(self) -> bool:
        return not self.widths


def split_widths(m: int) -> tuple[int, ...]:
    """64 bits in ``m`` nearly equal disjoint chunks, wider ones first."""
    base, extra = divmod(HASH_BITS, m)
    return tuple(base + (1 if c < extra else 0) for c in range(m))


def chunk_radii(threshold: int, m: int) -> tuple[int, ...]:
    """Generalised pigeonhole: radius t//m on the first t%m+1 chunks, one less on the rest (-1 = skip)."""
    r, a = divmod(threshold, m)
    return tuple(r if c <= a else r - 1 for c in range(m))


@lru_cache(maxsize=64)
def ball_size(bits: int, radius: int) -> int:
    return sum(_comb(bits, k) for k in range(radius + 1)) if radius >= 0 else 0


def _comb(n: int, k: int) -> int:
    from math import comb

    return comb(n, k)


@lru_cache(maxsize=64)
def ball_masks(bits: int, radius: int) -> np.ndarray:
    """Every ``bits``-bit XOR mask with at most ``radius`` bits set, lightest first."""
    masks = [0]
    for k in range(1, radius + 1):
        masks += [sum(1 << b for b in combo) for combo in itertools.combinations(range(bits), k)]
    out = np.array(masks, dtype=np.uint32)
    out.flags.writeable = False
    return out


def mih_plan(m: int, threshold: int) -> Plan:
    """A fixed MIH plan with ``m`` chunks (tests use it to exercise MIH where brute force would be picked)."""
    widths = split_widths(m)
    if max(widths) > MAX_CHUNK_BITS:
        raise ValueError(f"{m} chunks give {max(widths)}-bit tables; use at least {-(-HASH_BITS // MAX_CHUNK_BITS)}")
    radii = chunk_radii(threshold, m)
    return Plan(widths, radii, sum(ball_size(b, r) for b, r in zip(widths, radii, strict=True)), 0.0)


def plan_search(n_index: int, n_queries: int, threshold: int) -> Plan:
    """The cheapest exact plan for this size and threshold, by a simple cost model."""
    if not 0 <= threshold <= HASH_BITS:
        raise ValueError(f"threshold must be in 0..{HASH_BITS}, got {threshold}")
    brute = Plan((), (), 0, n_index * n_queries * _COST_BRUTE * 1e-9)
    best = brute
    for m in range(3, 9):
        widths = split_widths(m)
        if max(widths) > MAX_CHUNK_BITS:
            continue
        radii = chunk_radii(threshold, m)
        passes = sum(ball_size(b, r) for b, r in zip(widths, radii, strict=True))
        candidates = sum(ball_size(b, r) * n_index / (1 << b) for b, r in zip(widths, radii, strict=True))
        est = (passes * n_queries * _COST_PROBE + candidates * n_queries * _COST_CANDIDATE
               + sum(1 << b for b in widths) * 2 + m * n_index * _COST_BUILD) * 1e-9
        if est < best.est_seconds:
            best = Plan(widths, radii, passes, est)
    return best


@dataclass(frozen=True)
class Matches:
    """Pairs (query row, index row, distance) with distance <= threshold; each pair appears once."""

    query: np.ndarray   # int64
    index: np.ndarray   # int64
    distance: np.ndarray  # uint8

    def __len__(self) -> int:
        return int(self.query.size)

    @staticmethod
    def empty() -> Matches:
        return Matches(np.zeros(0, np.int64), np.zeros(0, np.int64), np.zeros(0, np.uint8))


def brute_force(index: np.ndarray, queries: np.ndarray, threshold: int) -> Matches:
    """Exact reference search by blocks (no N x N array); the test oracle and the tiny-input plan."""
    index, queries = as_u64(index), as_u64(queries)
    out_q: list[np.ndarray] = []
    out_i: list[np.ndarray] = []
    out_d: list[np.ndarray] = []
    step = max(1, BRUTE_BLOCK // max(1, index.size))
    for start in range(0, queries.size, step):
        block = queries[start:start + step]
        d = popcount64(block[:, None] ^ index[None, :])
        qi, ii = np.nonzero(d <= threshold)
        out_q.append(qi.astype(np.int64) + start)
        out_i.append(ii.astype(np.int64))
        out_d.append(d[qi, ii])
    if not out_q:
        return Matches.empty()
    return _sorted(Matches(np.concatenate(out_q), np.concatenate(out_i), np.concatenate(out_d)))


def mih_search(index: np.ndarray, queries: np.ndarray, threshold: int, plan: Plan | None = None) -> Matches:
    """Every (query, index) pair within ``threshold`` bits, by multi-index hashing (exact)."""
    index, queries = as_u64(index), as_u64(queries)
    if index.size == 0 or queries.size == 0:
        return Matches.empty()
    plan = plan or plan_search(index.size, queries.size, threshold)
    if plan.brute:
        return brute_force(index, queries, threshold)
    t = np.uint8(threshold)
    found_q: list[np.ndarray] = []
    found_i: list[np.ndarray] = []
    found_d: list[np.ndarray] = []
    shift = 0
    for bits, radius in zip(plan.widths, plan.radii, strict=True):
        if radius >= 0:
            q, i, d = probe_chunk(index, queries, shift, bits, radius, t)
            found_q += q
            found_i += i
            found_d += d
        shift += bits
    if not found_q:
        return Matches.empty()
    # A pair close on several chunks is found once per chunk: keep one copy.
    qa, ia, da = np.concatenate(found_q), np.concatenate(found_i), np.concatenate(found_d)
    qa, ia = qa.astype(np.int64), ia.astype(np.int64)
    key = qa * np.int64(index.size) + ia
    _, first = np.unique(key, return_index=True)
    return _sorted(Matches(qa[first], ia[first], da[first]))


def probe_chunk(index: np.ndarray, queries: np.ndarray, shift: int, bits: int, radius: int,
                 t: np.uint8) -> tuple[list[np.ndarray], list[np.ndarray], list[np.ndarray]]:
    """One chunk: a dense bucket table over the index, probed with each query's Hamming ball.

    Public because a shard of :mod:`facecurate.dedup.sharded` runs the same probes on its part of one chunk."""
    cm, sh = np.uint64((1 << bits) - 1), np.uint64(shift)
    ikey = ((index >> sh) & cm).astype(np.int64)
    order = np.argsort(ikey, kind="stable").astype(np.int32)
    sorted_hash = np.take(index, order)
    counts = np.bincount(ikey, minlength=1 << bits).astype(np.int32)
    del ikey
    starts = np.zeros(1 << bits, dtype=np.int32)
    np.cumsum(counts[:-1], out=starts[1:])
    occupied = (counts > 0).view(np.uint8)   # 1 byte per key: the full-size probe read stays in cache
    # Queries sorted by key: each XOR-shifted probe sweep then reads the tables almost sequentially.
    qkey_all = ((queries >> sh) & cm).astype(np.uint32)
    qorder = np.argsort(qkey_all, kind="stable").astype(np.int32)
    qkey = np.take(qkey_all, qorder)
    qhash = np.take(queries, qorder)
    del qkey_all
    out_q: list[np.ndarray] = []
    out_i: list[np.ndarray] = []
    out_d: list[np.ndarray] = []
    w1, w2 = [w for w in range(4) if w * 16 + 16 <= shift or w * 16 >= shift + bits][:2]
    for mask in ball_masks(bits, radius):
        probe = qkey ^ mask
        hit = np.flatnonzero(np.take(occupied, probe))
        if hit.size == 0:
            continue
        pkey = np.take(probe, hit)
        pos = np.take(starts, pkey)
        left = np.take(counts, pkey)
        qh = np.take(qhash, hit)
        # Buckets of random hashes hold one or two entries: walk them a depth per numpy pass. Real photo sets
        # crowd a few buckets with a copy's whole family, where each further depth would cost a dozen numpy
        # calls for a handful of entries: after WALK_DEPTHS, the rest of every bucket is expanded at once.
        for depth in range(WALK_DEPTHS + 1):
            if depth == WALK_DEPTHS:
                ends = np.cumsum(left)
                owner = np.repeat(np.arange(hit.size, dtype=np.int32), left)
                pos = np.arange(int(ends[-1]), dtype=np.int32) - np.repeat(ends - left, left) + np.repeat(pos, left)
                hit, qh = np.take(hit, owner), np.take(qh, owner)
            x = np.take(sorted_hash, pos) ^ qh
            # Nearly every candidate is a random stranger ~32 bits away: two 16-bit words outside this chunk
            # already exceed the threshold for >99% of them, so only the rest get a full popcount.
            words = x.view(np.uint16).reshape(-1, 4)
            maybe = np.flatnonzero(np.take(_POP16, words[:, w1]) + np.take(_POP16, words[:, w2]) <= t)
            if maybe.size:
                d = popcount64(np.take(x, maybe))
                good = np.flatnonzero(d <= t)
                if good.size:
                    ok = np.take(maybe, good)
                    out_q.append(np.take(qorder, np.take(hit, ok)))
                    out_i.append(np.take(order, np.take(pos, ok)))
                    out_d.append(np.take(d, good))
            if depth == WALK_DEPTHS:
                break
            left -= 1
            more = np.flatnonzero(left)
            if more.size == 0:
                break
            hit, pos, left, qh = (np.take(hit, more), np.take(pos, more) + 1, np.take(left, more),
                                  np.take(qh, more))
    return out_q, out_i, out_d


def _sorted(m: Matches) -> Matches:
    """Deterministic order (query, index) whatever plan ran, so results compare and group stably."""
    o = np.lexsort((m.index, m.query))
    return Matches(m.query[o], m.index[o], m.distance[o])
