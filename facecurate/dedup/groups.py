"""Candidate edges from the hash index, keeper order by quality, and grouping around keepers.

Why groups form around keepers: clustering the "near" relation transitively chains — A~B and B~C put A and
C together even when A and C are 20 bits apart, and on faces a chain can walk from one person to another.
Here items are visited best-first; an item that nobody has claimed becomes a keeper and claims the unclaimed
items directly within the threshold of it. Every member is therefore within the threshold of its keeper,
and the recorded distance is to the keeper, never along a chain.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from facecurate.dedup.search import Matches, mih_search

# How the matching hash of the other item was taken (also the transform recorded on a duplicate).
FULL, FLIP, WINDOW, WINDOW_FLIP = 0, 1, 2, 3
TRANSFORMS: dict[int, str | None] = {FULL: None, FLIP: "hflip", WINDOW: "crop", WINDOW_FLIP: "hflip+crop"}

KEEPER_CRITERIA: dict[str, str] = {
    "resolution": "more source pixels (for faces: the face's native size in the photo)",
    "jpeg_quality": "higher estimated JPEG quality (lossless formats count as 100)",
    "bytes": "larger file (less compression, fewer pixels thrown away)",
    "sharpness": "higher variance of the Laplacian at a common size (less blur)",
    "first_seen": "imported earlier (lower id)",
}


@dataclass(frozen=True)
class Edges:
    """Undirected near-duplicate candidates ``a < b`` with their best distance and how it matched."""

    a: np.ndarray          # int64
    b: np.ndarray          # int64
    distance: np.ndarray   # int16
    transform: np.ndarray  # int8, one of FULL..WINDOW_FLIP

    def __len__(self) -> int:
        return int(self.a.size)

    def select(self, keep: np.ndarray) -> Edges:
        return Edges(self.a[keep], self.b[keep], self.distance[keep], self.transform[keep])

    @staticmethod
    def empty() -> Edges:
        z = np.zeros(0, np.int64)
        return Edges(z, z, np.zeros(0, np.int16), np.zeros(0, np.int8))


def index_entries(*parts: tuple[np.ndarray, int]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """One search index over hash columns: ``parts`` are ((N,) or (N, K) hashes, entry kind). Returns every
    entry's (hash, owner item, kind)."""
    hashes, owners, kinds = [], [], []
    for values, kind in parts:
        cols = values.reshape(values.shape[0], -1)
        hashes.append(cols.T.ravel())
        owners.append(np.tile(np.arange(cols.shape[0], dtype=np.int64), cols.shape[1]))
        kinds.append(np.full(cols.size, kind, dtype=np.int8))
    return np.concatenate(hashes).astype(np.uint64), np.concatenate(owners), np.concatenate(kinds)


Search = Callable[[np.ndarray, np.ndarray, int], Matches]   # (index, queries, threshold) -> every pair within it


def candidate_edges(hashes: np.ndarray, flips: np.ndarray, threshold: int, windows: np.ndarray | None = None,
                    window_flips: np.ndarray | None = None, window_threshold: int | None = None,
                    search: Search = mih_search) -> Edges:
    """All item pairs within reach by any of the four matchings, best matching per pair.

    Queries are the full-frame hashes only: a mirrored copy's hash meets the original's mirror entry, and a
    trimmed copy's frame meets one of the original's (N, K) crop windows or their mirrors. The windows are
    searched in a second pass at ``window_threshold`` (never looser than ``threshold``; default: the same): an
    item has 2K window entries against one full-frame entry, so a loose bound there mostly adds strangers (and
    search time).

    ``search`` is the one-piece :func:`~facecurate.dedup.search.mih_search` or, past ``[dedup] shard_above``,
    :func:`facecurate.dedup.sharded.sharded_search`, which returns the same pairs; everything after it (best
    matching per pair, grouping) is the same code either way, so both give the same groups.
    """
    n = hashes.size
    if n < 2:
        return Edges.empty()
    searches = [(index_entries((hashes, FULL), (flips, FLIP)), threshold)]
    if windows is not None and window_flips is not None:
        bound = threshold if window_threshold is None else min(threshold, window_threshold)
        searches.append((index_entries((windows, WINDOW), (window_flips, WINDOW_FLIP)), bound))
    found_i, found_j, found_k, found_d = [], [], [], []
    for (entries, owner, kind), bound in searches:
        found: Matches = search(entries, hashes, bound)
        keep = found.query != owner[found.index]
        found_i.append(found.query[keep])
        found_j.append(owner[found.index[keep]])
        found_k.append(kind[found.index[keep]])
        found_d.append(found.distance[keep].astype(np.int16))
    i, j = np.concatenate(found_i), np.concatenate(found_j)
    return best_per_pair(np.minimum(i, j), np.maximum(i, j), np.concatenate(found_d), np.concatenate(found_k), n)


def best_per_pair(a: np.ndarray, b: np.ndarray, distance: np.ndarray, transform: np.ndarray, n: int) -> Edges:
    """One edge per unordered pair: the smallest distance, ties to the plainest matching (full < flip < ...)."""
    if a.size == 0:
        return Edges.empty()
    key = a.astype(np.int64) * np.int64(max(n, 1)) + b
    order = np.lexsort((transform, distance, key))
    key = key[order]
    first = np.ones(key.size, dtype=bool)
    first[1:] = key[1:] != key[:-1]
    sel = order[first]
    return Edges(a[sel].astype(np.int64), b[sel].astype(np.int64), distance[sel].astype(np.int16),
                 transform[sel].astype(np.int8))


def parse_policy(text: str) -> tuple[str, ...]:
    """``"resolution,jpeg_quality,bytes,sharpness"`` to a tuple, refusing unknown or repeated names."""
    names = tuple(p.strip() for p in text.split(",") if p.strip())
    unknown = [p for p in names if p not in KEEPER_CRITERIA]
    if unknown or len(set(names)) != len(names):
        raise ValueError(f"keeper policy {text!r}: use a comma-separated order of distinct names from "
                         f"{', '.join(KEEPER_CRITERIA)}")
    return names


def keeper_rank(quality: dict[str, np.ndarray], policy: tuple[str, ...], tiebreak: np.ndarray) -> np.ndarray:
    """Position of every item in the keeper order (0 = best): the policy's criteria in turn, then ``tiebreak``
    ascending (a content hash, so the choice does not depend on import order unless ``first_seen`` asks)."""
    keys: list[np.ndarray] = [np.asarray(tiebreak)]
    for name in reversed(policy):
        values = np.asarray(quality[name], dtype=np.float64)
        keys.append(values if name == "first_seen" else -values)  # lexsort sorts ascending
    order = np.lexsort(keys)
    rank = np.empty(order.size, dtype=np.int64)
    rank[order] = np.arange(order.size)
    return rank


@dataclass(frozen=True)
class Grouping:
    """Per item: its keeper (-1 when it is in no group; itself for a keeper), distance and transform to it."""

    keeper: np.ndarray
    distance: np.ndarray
    transform: np.ndarray

    def members(self) -> np.ndarray:
        return np.flatnonzero((self.keeper >= 0) & (self.keeper != np.arange(self.keeper.size)))

    def keepers(self) -> np.ndarray:
        return np.flatnonzero(self.keeper == np.arange(self.keeper.size))


def group_around_keepers(n: int, edges: Edges, rank: np.ndarray, can_lead: np.ndarray | None = None) -> Grouping:
    """Visit items best-first; an unclaimed item (allowed to lead) claims its unclaimed direct neighbours.

    ``can_lead`` False marks items that may join a group but never head one (faces of duplicate photos).
    """
    keeper = np.full(n, -1, dtype=np.int64)
    distance = np.full(n, -1, dtype=np.int16)
    transform = np.zeros(n, dtype=np.int8)
    if len(edges) == 0:
        return Grouping(keeper, distance, transform)
    src = np.concatenate([edges.a, edges.b])
    dst = np.concatenate([edges.b, edges.a])
    dist = np.concatenate([edges.distance, edges.distance])
    trans = np.concatenate([edges.transform, edges.transform])
    order = np.lexsort((rank[dst], src))       # neighbours of each item, best-ranked first
    src, dst, dist, trans = src[order], dst[order], dist[order], trans[order]
    start = np.searchsorted(src, np.arange(n + 1))
    nodes = np.unique(src)
    nodes = nodes[np.argsort(rank[nodes], kind="stable")]
    lead = np.ones(n, dtype=bool) if can_lead is None else np.asarray(can_lead, dtype=bool)
    for u in nodes.tolist():
        if keeper[u] >= 0 or not lead[u]:
            continue
        lo, hi = start[u], start[u + 1]
        nb = dst[lo:hi]
        free = keeper[nb] < 0
        if not free.any():
            continue
        claimed = nb[free]
        keeper[u] = u
        distance[u] = 0
        keeper[claimed] = u
        distance[claimed] = dist[lo:hi][free]
        transform[claimed] = trans[lo:hi][free]
    return Grouping(keeper, distance, transform)
