"""The executor seam on one machine: ``local`` vs ``ray`` with 1 and 2 workers, on the same photos, in one run.

Each contender gets a fresh copy of one workspace (same photos, same catalog ids) and runs the heavy stages
through the seam: dedup's fingerprinting, crop, filter's measuring. What Ray costs by itself is measured with
a no-op work function through each executor: per batch (many one-item batches) and per item (a few big
batches), after a warm-up map that starts the workers (reported as ``startup``).

    uv run --extra ray python benchmarks/bench_scale.py                 # 60 real photos from ../shared, else demo
    uv run --extra ray python benchmarks/bench_scale.py --limit 200 --json
    uv run --extra ray python benchmarks/bench_scale.py --device cuda   # GPU actors vs the local CUDA path

Wall-clock figures: Ray's workers are other processes, so this process's CPU time would miss their work. On a
machine other jobs share, compare the ratios of one run, not figures of two runs; the load average at the start
is printed with them.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import pyarrow as pa

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import DEMO, DEV, images_in, print_wide_table

from facecurate.catalog import Catalog
from facecurate.dedup import DedupOptions, run_dedup
from facecurate.executors.local import LocalExecutor
from facecurate.faces.crop import CropOptions, run_crop
from facecurate.ingest import import_paths
from facecurate.result_arrow import value_results
from facecurate.rules.stage import run_filter
from facecurate.work import Executor
from facecurate.workspace import Workspace, init_workspace


def default_photos(limit: int) -> list[Path]:
    real = images_in(DEV / "ordinary_faces") + images_in(DEV / "wink", DEV / "eyes_closed_vs_open_fullres_small")
    return (real or images_in(DEMO) * 12)[:limit]


def template(photos: list[Path], root: Path, device: str) -> Workspace:
    """One workspace with the photos imported (duplicated bundled photos get distinct bytes)."""
    folder = root / "photos"
    folder.mkdir(parents=True)
    for i, p in enumerate(photos):
        data = p.read_bytes()
        target = folder / f"{i:05d}{p.suffix.lower()}"
        target.write_bytes(data + (b"" if p.suffix.lower() not in (".jpg", ".jpeg") else i.to_bytes(4, "big")))
    ws = init_workspace(root / "template")
    text = ws.config_path.read_text().replace('device = "auto"', f'device = "{device}"', 1)
    ws.config_path.write_text(text)
    with Catalog.open(ws.catalog_path) as catalog:
        import_paths(ws, catalog, [folder])
    return ws


def run_stages(ws: Workspace, executor: Executor, device: str) -> dict[str, float]:
    """Seconds per heavy stage through ``executor`` (local: each stage's own path, as `run` does)."""
    out: dict[str, float] = {}
    with Catalog.open(ws.catalog_path) as catalog:
        dedup = DedupOptions.from_config(ws)
        start = time.perf_counter()
        run_dedup(ws, catalog, replace(dedup, faces=False), executor=executor)
        out["hash"] = time.perf_counter() - start
        opts = CropOptions.from_config(ws, device=device)
        start = time.perf_counter()
        if executor.is_local:
            crop = run_crop(ws, catalog, opts)
        else:
            from facecurate.faces.crop_work import run_crop_with

            crop = run_crop_with(executor, ws, catalog, opts)
        out["crop"] = time.perf_counter() - start
        out["faces"] = crop.faces
        start = time.perf_counter()
        if executor.is_local:
            run_filter(ws, catalog)
        else:
            from facecurate.rules.filter_work import run_filter_with

            run_filter_with(executor, ws, catalog)
        out["filter"] = time.perf_counter() - start
    return out


class NoOp:
    """A work function that does nothing: what is left is the executor's own cost."""

    name, gpus = "noop", 0.0
    results = value_results(pa.int64())

    def __call__(self, batch: list[int], /) -> list[int]:
        return batch


def overhead(executor: Executor, batches: int, big: int) -> dict[str, float]:
    """Seconds per batch (``batches`` one-item batches) and per item (4 batches of ``big`` items), after a
    warm-up map whose time (workers starting) is ``startup``."""
    start = time.perf_counter()
    list(executor.map_batches(NoOp(), [[0]]))
    startup = time.perf_counter() - start
    start = time.perf_counter()
    list(executor.map_batches(NoOp(), [[i] for i in range(batches)]))
    per_batch = (time.perf_counter() - start) / batches
    start = time.perf_counter()
    list(executor.map_batches(NoOp(), [list(range(big)) for _ in range(4)]))
    per_item = max(0.0, (time.perf_counter() - start) - 4 * per_batch) / (4 * big)
    return {"startup_s": startup, "per_batch_ms": per_batch * 1e3, "per_item_us": per_item * 1e6}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--limit", type=int, default=60, help="photos (default 60)")
    ap.add_argument("--device", default="cpu", choices=("cpu", "cuda"))
    ap.add_argument("--workers", default="1,2", help="Ray worker counts to compare (default 1,2)")
    ap.add_argument("--noop-batches", type=int, default=200)
    ap.add_argument("--noop-items", type=int, default=20000)
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()

    os.environ.setdefault("RAY_ENABLE_UV_RUN_RUNTIME_ENV", "0")
    import ray

    from facecurate.executors.ray import RayExecutor

    gpus = 1 if args.device == "cuda" else 0
    ray.init(num_cpus=os.cpu_count() or 2, num_gpus=gpus, include_dashboard=False, log_to_driver=False)
    load = os.getloadavg()[0]
    photos = default_photos(args.limit)
    results: dict[str, Any] = {"photos": len(photos), "device": args.device, "cpus": os.cpu_count(),
                               "load_at_start": load, "contenders": {}}
    with tempfile.TemporaryDirectory(prefix="bench-scale-") as tmp:
        base = template(photos, Path(tmp), args.device)
        contenders: list[tuple[str, Executor]] = [("local", LocalExecutor())]
        contenders += [(f"ray x{n}", RayExecutor(workers=int(n), gpus_per_worker=1.0))
                       for n in args.workers.split(",")]
        for name, executor in contenders:
            ws_root = Path(tmp) / name.replace(" ", "_")
            shutil.copytree(base.root, ws_root)
            stages = run_stages(Workspace(ws_root), executor, args.device)
            cost = overhead(executor, args.noop_batches, args.noop_items)
            results["contenders"][name] = {**stages, **cost,
                                           "throughput": [t.__dict__ for t in executor.throughput()]}
            executor.close()
    ray.shutdown()
    if args.json:
        print(json.dumps(results, indent=2, default=float))
        return
    n = results["photos"]
    rows = []
    for name, r in results["contenders"].items():
        total = r["hash"] + r["crop"] + r["filter"]
        rows.append([name, n / r["hash"], n / r["crop"], r["faces"] / max(r["filter"], 1e-9), n / total,
                     r["startup_s"], r["per_batch_ms"], r["per_item_us"]])
    print_wide_table(f"local vs ray on {n} photos ({args.device}, {results['cpus']} CPUs, load {load:.1f} at start)",
                ["executor", "hash img/s", "crop img/s", "filter faces/s", "all img/s", "startup s",
                 "ms/batch", "µs/item"], rows)


if __name__ == "__main__":
    main()
