"""From fingerprints to groups, without I/O: pixel twins, hash candidates, verification, keepers.

The stage (:mod:`facecurate.dedup.stage`) loads fingerprints from the catalog and hands them here as
arrays; thumbnails are fetched through a callback only for the few items that have a candidate, so a
million-image run never holds a million thumbnails.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from facecurate.dedup.groups import (
    FLIP,
    WINDOW_FLIP,
    Edges,
    Search,
    candidate_edges,
    group_around_keepers,
    keeper_rank,
)
from facecurate.dedup.search import Matches, mih_search
from facecurate.dedup.sharded import Mapper, ShardWork, searcher
from facecurate.dedup.verify import similarity

KIND_PIXELS, KIND_PERCEPTUAL = "pixels", "perceptual"
TWIN_NEAR_BITS = 4   # a full and a reduced decode of identical pixels hash this close (0-2 bits measured)


@dataclass(frozen=True)
class Items:
    """What grouping needs to know about N items (images or face crops)."""

    hashes: np.ndarray                    # uint64 (N,)
    flips: np.ndarray                     # uint64 (N,)
    pixels: np.ndarray                    # (N,) str: decoded-pixel digests
    quality: dict[str, np.ndarray]        # criterion name -> (N,) values (see groups.KEEPER_CRITERIA)
    tiebreak: np.ndarray                  # (N,) str: stable last criterion (content hash)
    windows: np.ndarray | None = None     # uint64 (N, K): K crop windows per item, or None when they are off
    window_flips: np.ndarray | None = None
    can_lead: np.ndarray | None = None    # bool (N,): False = may be grouped, never a keeper

    def __len__(self) -> int:
        return int(self.hashes.size)


@dataclass(frozen=True)
class Options:
    """Grouping settings of one level; the values come from the [dedup] settings through
    :meth:`facecurate.dedup.stage.DedupOptions.photo_options` (or ``face_options``), never restated here."""

    threshold: int                       # Hamming bits (of 64) for a candidate
    min_similarity: float                # aligned thumbnail correlation that confirms one; 0 = trust the hash
    policy: tuple[str, ...]              # keeper criteria in order (groups.KEEPER_CRITERIA)
    window_threshold: int                # bits for a full frame against another item's crop window
    shard_above: int                     # items above which the hash search runs in shards (sharded.py)
    shard_entries: int                   # hashes (index entries and queries) one shard holds at most


@dataclass
class Result:
    """Per item: keeper index (-1 none, itself for a keeper), distance, transform code, kind."""

    keeper: np.ndarray
    distance: np.ndarray
    transform: np.ndarray
    kind: np.ndarray                     # object: None, "pixels" or "perceptual" (None for keepers/singles)
    rank: np.ndarray
    stats: dict[str, int] = field(default_factory=dict)

    def is_duplicate(self) -> np.ndarray:
        out: np.ndarray = (self.keeper >= 0) & (self.keeper != np.arange(self.keeper.size))
        return out


ThumbLoader = Callable[[np.ndarray], np.ndarray]   # item indices -> (P, S, S) uint8 thumbnails


def pixel_twins(pixels: np.ndarray, order_key: np.ndarray) -> np.ndarray:
    """Representative of each item's identical-pixel set: the member that comes first in ``order_key``."""
    n = pixels.size
    rep = np.arange(n, dtype=np.int64)
    if n == 0:
        return rep
    order = np.lexsort((order_key, pixels))
    p = pixels[order]
    new = np.ones(n, dtype=bool)
    new[1:] = p[1:] != p[:-1]
    heads = order[new]
    group_id = np.cumsum(new) - 1
    rep[order] = heads[group_id]
    return rep


def twin_candidates(keys: np.ndarray, exact: np.ndarray, dims: np.ndarray, hashes: np.ndarray,
                    near: int = TWIN_NEAR_BITS) -> np.ndarray:
    """Items whose full-decode digest is needed before pixel twins can be decided (sorted indices).

    A reduced digest (``exact`` False) is a necessary condition only: identical pixels give identical reduced
    decodes on the same path, so a reduced digest nobody shares proves the item has no twin on that path. Two
    cases need the full pixels: reduced digests shared by several items (identical, or alike only at reduced
    scale), and a reduced item next to an exact one (a JPEG and a PNG of the same pixels decode on different
    paths) of the same size whose hashes nearly agree. Everything else is settled without decoding again.
    """
    need = np.zeros(keys.size, dtype=bool)
    reduced = np.flatnonzero(~exact)
    if reduced.size:
        _, inverse, counts = np.unique(keys[reduced], return_inverse=True, return_counts=True)
        need[reduced[counts[inverse] > 1]] = True
    full = np.flatnonzero(exact)
    if reduced.size and full.size:
        found = mih_search(hashes[full], hashes[reduced], near)
        same_size = dims[reduced[found.query]] == dims[full[found.index]]
        need[reduced[found.query[same_size]]] = True
    return np.flatnonzero(need)


def verify_edges(edges: Edges, thumbs: ThumbLoader, min_similarity: float) -> tuple[Edges, np.ndarray]:
    """Keep the candidates whose aligned thumbnails agree; returns the kept edges and every similarity."""
    if len(edges) == 0 or min_similarity <= 0:
        return edges, np.ones(len(edges), dtype=np.float32)
    ids = np.unique(np.concatenate([edges.a, edges.b]))
    stack = thumbs(ids)
    ta = stack[np.searchsorted(ids, edges.a)]
    tb = stack[np.searchsorted(ids, edges.b)]
    mirrored = (edges.transform == FLIP) | (edges.transform == WINDOW_FLIP)
    tb = np.where(mirrored[:, None, None], tb[:, :, ::-1], tb)
    sim = similarity(ta, tb)
    return edges.select(sim >= min_similarity), sim


def find_groups(items: Items, options: Options, thumbs: ThumbLoader, mapper: Mapper[ShardWork, Matches] = map
                ) -> Result:
    """Group items: identical pixels first (exact), then verified perceptual neighbours around keepers.

    Past ``options.shard_above`` items the hash search runs shard by shard through ``mapper`` (worker processes,
    or a cluster executor's map); it returns the same pairs, so the groups are the same (see
    :mod:`facecurate.dedup.sharded`)."""
    n = len(items)
    search: Search = mih_search
    if n > options.shard_above:
        search = searcher(options.shard_entries, mapper)
    rank = keeper_rank(items.quality, options.policy, items.tiebreak)
    lead = np.ones(n, dtype=bool) if items.can_lead is None else np.asarray(items.can_lead, dtype=bool)
    # 1. Exact: collapse identical pixels onto their best copy (a leader first), group those copies only.
    rep = pixel_twins(items.pixels, np.where(lead, 0, n) + rank)
    reps = np.flatnonzero(rep == np.arange(n))
    sub = np.full(n, -1, dtype=np.int64)
    sub[reps] = np.arange(reps.size)
    # 2. Near: hash candidates among representatives, confirmed on thumbnails.
    win = items.windows[reps] if items.windows is not None else None
    winf = items.window_flips[reps] if items.window_flips is not None else None
    edges = candidate_edges(items.hashes[reps], items.flips[reps], options.threshold, win, winf,
                            options.window_threshold, search)
    kept, _ = verify_edges(edges, lambda idx: thumbs(reps[idx]), options.min_similarity)
    grouping = group_around_keepers(reps.size, kept, rank[reps], lead[reps])
    keeper = np.full(n, -1, dtype=np.int64)
    distance = np.full(n, -1, dtype=np.int16)
    transform = np.zeros(n, dtype=np.int8)
    kind = np.full(n, None, dtype=object)
    has = grouping.keeper >= 0
    keeper[reps[has]] = reps[grouping.keeper[has]]
    distance[reps] = grouping.distance
    transform[reps] = grouping.transform
    members = reps[has & (grouping.keeper != np.arange(reps.size))]
    kind[members] = KIND_PERCEPTUAL
    # 3. Twins follow their representative: into its group when it is a member, else it keeps them.
    twins = np.flatnonzero(rep != np.arange(n))
    for t in twins.tolist():
        r = int(rep[t])
        if keeper[r] >= 0 and keeper[r] != r:
            keeper[t], distance[t], transform[t], kind[t] = keeper[r], distance[r], transform[r], kind[r]
        elif lead[r]:
            keeper[r], distance[r] = r, 0
            keeper[t], distance[t], transform[t], kind[t] = r, 0, 0, KIND_PIXELS
        # else: twins that may not lead and found no leader stay ungrouped (the caller decides about them)
    stats = {"items": n, "pixel_twins": int(twins.size), "candidates": len(edges), "verified": len(kept),
             "rejected_by_verify": len(edges) - len(kept), "sharded": int(search is not mih_search)}
    result = Result(keeper, distance, transform, kind, rank, stats)
    stats["groups"] = int(np.count_nonzero(keeper == np.arange(n)))
    stats["duplicates"] = int(np.count_nonzero(result.is_duplicate()))
    return result
