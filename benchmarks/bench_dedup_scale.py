"""Grouping at scale: 100k, 300k and 1M random 64-bit hashes with planted near-duplicates, on one core.

What runs is facecurate's own grouping path without the files: the index of every item's hash and mirror
hash, and (by default) its four crop-window hashes and their mirrors, the exact multi-index-hashing searches
at the default thresholds (full frames at ``threshold``, windows at ``crop_threshold``),
best-matching per pair, keeper order and grouping around keepers. Thumbnail verification is left out (random
hashes have no pixels); in a real run it only touches the few candidate pairs.

Each size runs in a fresh process pinned to one CPU, so the peak resident memory (ru_maxrss) is that size's
own; tracemalloc's peak (numpy's allocations included) is printed beside it.

    uv run python benchmarks/bench_dedup_scale.py                      # 100k, 300k, 1M, windows on
    uv run python benchmarks/bench_dedup_scale.py --no-windows         # full-frame + mirror only
    uv run python benchmarks/bench_dedup_scale.py --sizes 1000000 --threshold 6 --crop-threshold 6
    uv run python benchmarks/bench_dedup_scale.py --sharded --n 2000000   # shards vs one piece: time, memory, equal?

``--sharded`` runs the same grouping twice on the same planted set, each in a fresh process: in one piece (as
above) and with the search cut into shards of ``--shard-entries`` hashes run by ``--workers`` forked processes
(:mod:`facecurate.dedup.sharded`). It prints both times (the sharded CPU counts its workers), the peak
resident memory of each process (VmHWM: the driver and the largest worker), and whether the keepers,
distances and transforms are equal, item by item.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import resource
import subprocess
import sys
import time
import tracemalloc
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import print_wide_table

from facecurate.dedup.groups import candidate_edges, group_around_keepers, keeper_rank
from facecurate.dedup.hashing import WINDOW_PLACES
from facecurate.dedup.sharded import searcher
from facecurate.dedup.stage import process_map
from facecurate.workspace import setting

PLANTED_SHARE = 0.1  # one item in ten is a planted copy of another (a third plain, a third mirrored, a third cropped)


def _noise(rng: np.random.Generator, n: int, max_bits: int) -> np.ndarray:
    """Random masks with 0..max_bits bits set."""
    out = np.zeros(n, dtype=np.uint64)
    bits = rng.integers(0, max_bits + 1, n)
    for k in range(1, max_bits + 1):
        rows = np.flatnonzero(bits >= k)
        out[rows] |= np.uint64(1) << rng.integers(0, 64, rows.size).astype(np.uint64)
    return out  # repeated positions may cancel: at most max_bits bits differ


def planted(n: int, threshold: int, crop_threshold: int, windows: bool, seed: int = 0) -> dict[str, np.ndarray]:
    """Random hashes for n items, a share of them near copies of others: plain, mirrored or cropped (a copy's
    frame within ``crop_threshold`` of one of the original's windows, picked at random)."""
    rng = np.random.default_rng(seed)

    def rand(k: int) -> np.ndarray:
        return rng.integers(0, 2**63, k, dtype=np.int64).view(np.uint64) ^ (
            rng.integers(0, 2, k).astype(np.uint64) << np.uint64(63))

    k = len(WINDOW_PLACES)
    h, hf = rand(n), rand(n)
    w, wf = rand(n * k).reshape(n, k), rand(n * k).reshape(n, k)
    copies = int(n * PLANTED_SHARE)
    src = rng.choice(n - copies, size=copies, replace=False)
    dst = np.arange(n - copies, n)
    kind = np.arange(copies) % (3 if windows else 2)
    noise = _noise(rng, copies, threshold)
    crop_noise = _noise(rng, copies, crop_threshold)
    plain, mirror, crop = kind == 0, kind == 1, kind == 2
    h[dst[plain]] = h[src[plain]] ^ noise[plain]
    hf[dst[plain]] = hf[src[plain]] ^ noise[plain]
    h[dst[mirror]] = hf[src[mirror]] ^ noise[mirror]      # a mirrored copy: its hash is the original's flip
    hf[dst[mirror]] = h[src[mirror]] ^ noise[mirror]
    which = rng.integers(0, k, copies)[crop]               # a cropped copy: its frame is one of the original's windows
    h[dst[crop]] = w[src[crop], which] ^ crop_noise[crop]
    return {"h": h, "hf": hf, "w": w, "wf": wf, "src": src, "dst": dst}


def run_one(n: int, threshold: int, crop_threshold: int, windows: bool) -> dict[str, float]:
    data = planted(n, threshold, crop_threshold, windows)
    rank = keeper_rank({"resolution": np.random.default_rng(1).random(n)}, ("resolution",), np.arange(n))
    tracemalloc.start()
    t0, c0 = time.perf_counter(), time.process_time()
    edges = candidate_edges(data["h"], data["hf"], threshold, data["w"] if windows else None,
                            data["wf"] if windows else None, crop_threshold)
    t_search = time.perf_counter() - t0
    grouping = group_around_keepers(n, edges, rank)
    wall, cpu = time.perf_counter() - t0, time.process_time() - c0
    traced = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    found = set(zip(edges.a.tolist(), edges.b.tolist(), strict=True))
    pairs = {(min(a, b), max(a, b)) for a, b in zip(data["src"].tolist(), data["dst"].tolist(), strict=True)}
    together = grouping.keeper[data["src"]] == grouping.keeper[data["dst"]]
    entries = n * (2 + 2 * len(WINDOW_PLACES) if windows else 2)
    return {"n": n, "index_entries": entries, "wall_s": wall, "cpu_s": cpu, "search_s": t_search,
            "edges": len(edges), "planted": len(pairs), "planted_found": len(pairs & found) / len(pairs),
            "planted_grouped": float(np.mean(together & (grouping.keeper[data["src"]] >= 0))),
            "groups": int(grouping.keepers().size), "traced_peak_mb": traced / 2**20,
            "maxrss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}


def _vmhwm_mb() -> float:
    """This process's peak resident memory from /proc (VmHWM), in MB; ru_maxrss where /proc is missing."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def run_grouping(n: int, threshold: int, crop_threshold: int, sharded: bool, workers: int, shard_entries: int,
                 out: str) -> dict[str, float]:
    """One grouping of the planted set, in one piece or sharded; the arrays go to ``out`` (.npz) for comparing."""
    data = planted(n, threshold, crop_threshold, True)
    rank = keeper_rank({"resolution": np.random.default_rng(1).random(n)}, ("resolution",), np.arange(n))
    before = _vmhwm_mb()
    t0, c0 = time.perf_counter(), time.process_time()
    with process_map(workers if sharded else 1) as pmap:
        search = searcher(shard_entries, pmap) if sharded else None
        edges = candidate_edges(data["h"], data["hf"], threshold, data["w"], data["wf"], crop_threshold,
                                **({"search": search} if search else {}))
    grouping = group_around_keepers(n, edges, rank)
    wall = time.perf_counter() - t0
    kids = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = time.process_time() - c0 + kids.ru_utime + kids.ru_stime
    np.savez(out, keeper=grouping.keeper, distance=grouping.distance, transform=grouping.transform,
             a=edges.a, b=edges.b)
    return {"n": n, "sharded": sharded, "wall_s": wall, "cpu_s": cpu, "edges": len(edges),
            "groups": int(grouping.keepers().size), "members": int(grouping.members().size),
            "data_mb": before, "driver_hwm_mb": _vmhwm_mb(), "worker_maxrss_mb": kids.ru_maxrss / 1024}


def compare_sharded(args: argparse.Namespace) -> None:
    """The one-piece and the sharded grouping of one planted set, each in a fresh process, then item by item."""
    import tempfile

    results = []
    with tempfile.TemporaryDirectory() as tmp:
        for sharded in (False, True):
            out = str(Path(tmp) / f"{'sharded' if sharded else 'one'}.npz")
            cmd = [sys.executable, __file__, "--group-one", str(args.n), "--out", out, "--workers", str(args.workers),
                   "--shard-entries", str(args.shard_entries), "--threshold", str(args.threshold),
                   "--crop-threshold", str(args.crop_threshold)] + (["--as-sharded"] if sharded else [])
            done = subprocess.run(cmd, check=True, capture_output=True, text=True)
            results.append(json.loads(done.stdout.strip().splitlines()[-1]))
            r = results[-1]
            print(f"{'sharded' if sharded else 'one piece'}: {r['wall_s']:.1f} s wall, {r['cpu_s']:.1f} s CPU, "
                  f"driver VmHWM {r['driver_hwm_mb']:.0f} MB, largest worker {r['worker_maxrss_mb']:.0f} MB",
                  file=sys.stderr)
        one, sh = (np.load(str(Path(tmp) / f"{k}.npz")) for k in ("one", "sharded"))
        verdict = {k: bool(np.array_equal(one[k], sh[k])) for k in ("keeper", "distance", "transform", "a", "b")}
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    rows = [["one piece" if not r["sharded"] else f"sharded ({args.workers} workers)", f"{r['n']:,}", r["wall_s"],
             r["cpu_s"], r["data_mb"], r["driver_hwm_mb"], r["worker_maxrss_mb"] if r["sharded"] else 0.0,
             f"{r['edges']:,}", f"{r['groups']:,}", f"{r['members']:,}"] for r in results]
    print_wide_table(f"dedup grouping, one piece vs sharded: threshold {args.threshold}, crop windows at "
                     f"{args.crop_threshold}, shards of <= {args.shard_entries:,} hashes (load average {load:.1f} "
                     f"on {os.cpu_count()} CPUs)",
                     ["run", "items", "wall s", "CPU s", "input MB", "driver VmHWM MB", "worker peak MB", "edges",
                      "groups", "members"], rows)
    same = all(verdict.values())
    print(f"equal to the one-piece grouping (keepers, distances, transforms, edges): {'YES' if same else 'NO'} "
          f"{verdict}")
    if args.json:
        print(json.dumps({"results": results, "equal": same, "verdict": verdict}, indent=2))
    if not same:
        sys.exit(1)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sizes", default="100000,300000,1000000")
    ap.add_argument("--threshold", type=int, default=setting("dedup", "threshold").default)
    ap.add_argument("--crop-threshold", type=int, default=setting("dedup", "crop_threshold").default)
    ap.add_argument("--no-windows", action="store_true", help="index full frame + mirror only (2 hashes/item)")
    ap.add_argument("--one", type=int, help=argparse.SUPPRESS)
    ap.add_argument("--json", action="store_true")
    ap.add_argument("--sharded", action="store_true", help="compare the sharded grouping with the one-piece one")
    ap.add_argument("--n", type=int, default=2_000_000, help="items for --sharded")
    ap.add_argument("--workers", type=int, default=2, help="shard worker processes for --sharded")
    ap.add_argument("--shard-entries", type=int, default=setting("dedup", "shard_entries").default)
    ap.add_argument("--group-one", type=int, help=argparse.SUPPRESS)
    ap.add_argument("--as-sharded", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--out", help=argparse.SUPPRESS)
    args = ap.parse_args()
    windows = not args.no_windows
    if args.sharded:
        compare_sharded(args)
        return
    if args.group_one:
        print(json.dumps(run_grouping(args.group_one, args.threshold, args.crop_threshold, args.as_sharded,
                                      args.workers, args.shard_entries, args.out)))
        return
    if args.one:
        if hasattr(os, "sched_setaffinity"):
            os.sched_setaffinity(0, {sorted(os.sched_getaffinity(0))[0]})
        print(json.dumps(run_one(args.one, args.threshold, args.crop_threshold, windows)))
        return
    results = []
    for n in (int(s) for s in args.sizes.split(",")):
        cmd = [sys.executable, __file__, "--one", str(n), "--threshold", str(args.threshold),
               "--crop-threshold", str(args.crop_threshold)]
        if not windows:
            cmd.append("--no-windows")
        env = {**os.environ, "OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
        out = subprocess.run(cmd, check=True, capture_output=True, text=True, env=env)
        results.append(json.loads(out.stdout.strip().splitlines()[-1]))
        if not args.json:
            r = results[-1]
            print(f"{n:>9,} items: {r['wall_s']:.1f} s wall, {r['cpu_s']:.1f} s CPU, peak RSS {r['maxrss_mb']:.0f} MB",
                  file=sys.stderr)
    if args.json:
        print(json.dumps(results, indent=2))
        return
    rows = []
    for i, r in enumerate(results):
        first = results[0]
        growth = "" if i == 0 else f"{math.log(r['cpu_s'] / first['cpu_s']) / math.log(r['n'] / first['n']):.2f}"
        rows.append([f"{r['n']:,}", f"{r['index_entries']:,}", r["wall_s"], r["cpu_s"], growth, r["maxrss_mb"],
                     r["traced_peak_mb"], f"{r['planted_found']:.4f}", f"{r['planted_grouped']:.4f}", r["edges"]])
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    crops = f"with crop windows at {args.crop_threshold}" if windows else "without crop windows"
    print_wide_table(f"dedup grouping at scale: threshold {args.threshold}, {crops}, one core "
                     f"(load average {load:.1f} on {os.cpu_count()} CPUs)",
                ["items", "index entries", "wall s", "CPU s", "CPU ~ N^x", "peak RSS MB", "traced MB",
                 "planted found", "planted grouped", "edges"], rows)


if __name__ == "__main__":
    main()
