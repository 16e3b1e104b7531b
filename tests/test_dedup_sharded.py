"""dedup at cluster scale: the sharded hash search finds exactly the pairs of the one-piece search, each once,
within its memory bound, so the grouping on top of it (keepers, distances, transforms) is the same."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageOps

from facecurate.catalog import Catalog
from facecurate.dedup import DedupOptions, run_dedup
from facecurate.dedup.core import Items, Options, find_groups
from facecurate.dedup.groups import FLIP, WINDOW, WINDOW_FLIP, index_entries
from facecurate.dedup.search import Matches, as_u64, mih_search, plan_search, popcount64
from facecurate.dedup.sharded import (
    merge,
    plan_shards,
    search_shard,
    shard_inputs,
    sharded_search,
)
from facecurate.dedup.stage import process_map
from facecurate.ingest import import_paths
from facecurate.workspace import Config, Workspace, default_config, options_from
from tests.conftest import DEMO_DATA

DEFAULTS = options_from(DedupOptions, Config(default_config()), "dedup")


def _random(rng: np.random.Generator, n: int) -> np.ndarray:
    return rng.integers(0, 2**63, n, dtype=np.int64).view(np.uint64) ^ (
        rng.integers(0, 2, n).astype(np.uint64) << np.uint64(63))


def _flip_bits(rng: np.random.Generator, n: int, bits: int) -> np.ndarray:
    """Masks with exactly ``bits`` distinct bits set."""
    out = np.zeros(n, dtype=np.uint64)
    for row in range(n):
        for b in rng.choice(64, bits, replace=False):
            out[row] |= np.uint64(1) << np.uint64(b)
    return out


def _same(a: Matches, b: Matches) -> bool:
    return (np.array_equal(a.query, b.query) and np.array_equal(a.index, b.index)
            and np.array_equal(a.distance, b.distance))


@pytest.mark.parametrize("threshold", [0, 3, 8, 12])
def test_sharded_search_returns_exactly_the_one_piece_pairs(threshold: int):
    rng = np.random.default_rng(threshold)
    index = _random(rng, 6000)
    # Neighbours at every distance up to one past the threshold, so the edge of the bound is exercised.
    near = index[:1500] ^ np.concatenate([_flip_bits(rng, 100, d) for d in range(15)])
    queries = np.concatenate([near, _random(rng, 500), index[:200]])
    one_piece = mih_search(index, queries, threshold)
    for max_entries in (1000, 50_000):  # many shards per chunk; one shard per chunk
        assert _same(sharded_search(index, queries, threshold, max_entries), one_piece)
    assert len(one_piece) >= 200 + 100 * min(threshold + 1, 15)


def test_every_pair_comes_out_of_one_shard_and_shards_keep_their_bound():
    rng = np.random.default_rng(5)
    hashes = _random(rng, 20_000)
    hashes[10_000:12_000] = hashes[:2000] ^ _flip_bits(rng, 2000, 8)   # exactly at the threshold
    max_entries = 3000
    plan, shards = plan_shards(hashes, hashes, 8, max_entries)
    assert plan == plan_search(hashes.size, hashes.size, 8) and not plan.brute   # the one-piece plan, cut up
    works = list(shard_inputs(hashes, hashes, 8, plan, shards))
    assert len(works) > 3 * len(plan.widths)
    for w in works:
        assert w.entries <= max_entries
    for c in range(len(plan.widths)):   # a chunk's shards hold each index entry once
        rows = np.concatenate([w.index_rows for w in works if w.shard.chunk == c])
        assert np.array_equal(np.sort(rows), np.arange(hashes.size))
    parts = [search_shard(w) for w in works]
    merged = merge(parts)
    assert sum(len(p) for p in parts) == len(merged)                    # no pair found twice
    assert _same(merged, mih_search(hashes, hashes, 8))
    planted = set(zip(range(10_000, 12_000), range(2000), strict=True))
    assert planted <= set(zip(merged.query.tolist(), merged.index.tolist(), strict=True))


def test_a_brute_force_plan_is_one_shard():
    rng = np.random.default_rng(8)
    hashes = _random(rng, 300)
    plan, shards = plan_shards(hashes, hashes, 30, 100)
    assert plan.brute and len(shards) == 1
    assert _same(sharded_search(hashes, hashes, 30, 100), mih_search(hashes, hashes, 30))


def _planted_items(n: int, threshold: int, crop_threshold: int, seed: int = 0
                   ) -> tuple[Items, np.ndarray, np.ndarray]:
    """n items with planted clusters: plain copies, mirrored copies, cropped copies (a frame near one of the
    original's windows), copies exactly at the threshold, and chains (a copy of a copy), plus identical
    pixels. Thumbnails agree within a cluster except for a share of impostors that verification rejects."""
    rng = np.random.default_rng(seed)
    h, hf = _random(rng, n), _random(rng, n)
    w, wf = _random(rng, n * 4).reshape(n, 4), _random(rng, n * 4).reshape(n, 4)
    cluster, mirrored = np.arange(n), np.zeros(n, dtype=bool)
    copies = n // 5
    src = rng.choice(n - copies, size=copies, replace=False)
    dst = np.arange(n - copies, n)
    kind = np.arange(copies) % 5
    for k, s, d in zip(kind.tolist(), src.tolist(), dst.tolist(), strict=True):
        if k == 4 and d > n - copies + 5:     # a chain: a copy of an earlier copy
            s = d - 5
        bits = threshold if k == 3 else int(rng.integers(0, threshold + 1))
        noise = _flip_bits(rng, 1, bits)[0]
        if k == 1:                              # mirrored
            h[d], hf[d] = hf[s] ^ noise, h[s] ^ noise
        elif k == 2:                            # cropped: the frame is one of the original's windows
            h[d] = w[s, rng.integers(0, 4)] ^ _flip_bits(rng, 1, int(rng.integers(0, crop_threshold + 1)))[0]
        else:
            h[d], hf[d] = h[s] ^ noise, hf[s] ^ noise
        cluster[d], mirrored[d] = cluster[s], mirrored[s] ^ (k == 1)
    pixels = np.arange(n, dtype=np.uint64)
    pixels[dst[:50]] = pixels[src[:50]]        # identical pixels: exact twins
    impostor = rng.random(n) < 0.05
    cluster[impostor] = -1 - np.arange(int(impostor.sum()))
    quality = {"resolution": rng.integers(1, 20, n).astype(np.float64), "jpeg_quality": rng.integers(70, 100, n),
               "bytes": rng.integers(1000, 9000, n).astype(np.float64), "sharpness": rng.random(n),
               "first_seen": np.arange(n, dtype=np.float64)}
    items = Items(h, hf, pixels, quality, rng.permutation(n).astype(np.uint64), w, wf)
    return items, cluster, mirrored


def test_sharded_grouping_equals_the_one_machine_grouping_on_50k_items():
    items, cluster, mirrored = _planted_items(50_000, DEFAULTS.threshold, DEFAULTS.crop_threshold)
    base = DEFAULTS.photo_options()
    rng = np.random.default_rng(9)
    looks = rng.integers(0, 256, (50_000, 24, 24)).astype(np.uint8)  # per cluster, so copies verify

    def thumbs(idx: np.ndarray) -> np.ndarray:
        out = looks[np.where(cluster[idx] >= 0, cluster[idx], idx)]
        return np.where(mirrored[idx][:, None, None], out[:, :, ::-1], out)

    one = find_groups(items, dataclasses.replace(base, shard_above=10**9), thumbs)
    with process_map(2) as pmap:
        sharded = find_groups(items, dataclasses.replace(base, shard_above=0, shard_entries=60_000), thumbs, pmap)
    assert one.stats["sharded"] == 0 and sharded.stats["sharded"] == 1
    for field in ("keeper", "distance", "transform", "kind", "rank"):
        assert np.array_equal(getattr(one, field), getattr(sharded, field)), field
    assert {k: v for k, v in one.stats.items() if k != "sharded"} == \
        {k: v for k, v in sharded.stats.items() if k != "sharded"}
    # The planted shapes are all there, so the equality above is about something.
    dup = one.is_duplicate()
    assert set(one.transform[dup].tolist()) >= {0, FLIP, WINDOW}
    assert one.stats["duplicates"] > 5000 and one.stats["rejected_by_verify"] > 100
    assert (one.distance[dup] == base.threshold).any() and (one.kind[dup] == "pixels").any()
    member_hash, keeper_hash = items.hashes[dup], items.hashes[one.keeper[dup]]
    full = (one.transform[dup] == 0) & (one.kind[dup] == "perceptual")   # planted twins have unrelated hashes
    assert (popcount64(member_hash[full] ^ keeper_hash[full]) == one.distance[dup][full]).all()


def test_window_entries_are_searched_the_same_in_shards():
    items, _, _ = _planted_items(5000, 8, 6, seed=3)
    entries, _, _ = index_entries((items.windows, WINDOW), (items.window_flips, WINDOW_FLIP))
    assert _same(sharded_search(entries, items.hashes, 6, 2000), mih_search(entries, items.hashes, 6))


def test_shard_settings_come_from_the_table_and_reach_the_grouping():
    opts = DEFAULTS.photo_options()
    assert (opts.shard_above, opts.shard_entries) == (DEFAULTS.shard_above, DEFAULTS.shard_entries) == \
        (1_000_000, 4_000_000)
    assert isinstance(opts, Options)


def test_stage_past_shard_above_gives_the_same_groups(ws: Workspace, catalog: Catalog, tmp_path: Path):
    folder = tmp_path / "in"
    folder.mkdir()
    names = sorted(p for p in DEMO_DATA.rglob("*.jpg"))[:6]
    assert len(names) >= 3
    for k, p in enumerate(names):
        im = Image.open(p).convert("RGB")
        im.save(folder / f"{k}.jpg", quality=95)
        ImageOps.mirror(im).save(folder / f"{k}_mirror.jpg", quality=70)
        im.resize((im.width // 2, im.height // 2)).save(folder / f"{k}_half.jpg", quality=90)
    import_paths(ws, catalog, [folder])
    plain = run_dedup(ws, catalog, DedupOptions.from_config(ws, faces=False), dry_run=True)
    sharded = run_dedup(ws, catalog, DedupOptions.from_config(ws, faces=False, shard_above=0, shard_entries=1000),
                        dry_run=True)
    assert plain.photo_level.stats["sharded"] == 0 and sharded.photo_level.stats["sharded"] == 1
    assert plain.groups == sharded.groups and plain.photo_level.duplicates >= 2 * len(names) - 2


def test_hashes_from_sqlite_as_signed_ints_shard_the_same():
    rng = np.random.default_rng(2)
    signed = _random(rng, 3000).view(np.int64)
    u = as_u64(signed)
    queries = u ^ _flip_bits(rng, 3000, 2)
    assert _same(sharded_search(signed, queries, 4, 500), mih_search(u, queries, 4))
