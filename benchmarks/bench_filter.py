"""Cost of the rules beyond crop: milliseconds per face for `filter` (every rule, every measure).

    uv run python benchmarks/bench_filter.py [--limit 300] [--repeat 3] [--json]

Crops real photos (../shared/eval/dev if present, else the bundled demo photos) once, untimed, then times
a full `filter --redo` over them and, for reference, the FaceMesh pass alone (the anchor the rules build
on: MediaPipe's face mesh on each crop). Target: <= 15 ms per face on a 2-core CPU.
The timed run is repeated (--repeat) and the median reported, with the process CPU time per face beside the
wall time: on a shared machine the wall time carries other people's load, the CPU time much less of it.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import DEMO, DEV, images_in, print_table

from facecurate import media
from facecurate.catalog import Catalog
from facecurate.faces.crop import CropOptions, run_crop
from facecurate.ingest import import_paths
from facecurate.rules.eyes import FaceMesh
from facecurate.rules.stage import run_filter
from facecurate.workspace import init_workspace


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--limit", type=int, default=300)
    ap.add_argument("--size", type=int, default=512)
    ap.add_argument("--repeat", type=int, default=3, help="timed filter runs; the median is reported")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    photos = (images_in(DEV / "ordinary_faces", DEV / "wink", DEV / "eyes_occluded") or images_in(DEMO))[: args.limit]
    with tempfile.TemporaryDirectory() as tmp:
        ws = init_workspace(Path(tmp) / "ws")
        with Catalog.open(ws.catalog_path) as catalog:
            import_paths(ws, catalog, photos)
            run_crop(ws, catalog, CropOptions.from_config(ws, size=args.size, device="cpu"))
            run_filter(ws, catalog)  # warm-up: model loads (FaceMesh, cascade), imports, first measures
            walls, cpus = [], []
            for _ in range(max(args.repeat, 1)):
                t0, c0 = time.perf_counter(), time.process_time()
                summary = run_filter(ws, catalog, redo=True)
                walls.append(time.perf_counter() - t0)
                cpus.append(time.process_time() - c0)
            crops = [ws.resolve(f.crop_path) for f in catalog.faces()]
        mesh = FaceMesh()
        pixels = [media.load_rgb(p, 10**9, 10**9).pixels for p in crops]
        t0 = time.perf_counter()
        for px in pixels:
            mesh.points(px)
        mesh_ms = (time.perf_counter() - t0) / max(len(pixels), 1) * 1000
    faces = max(summary.faces, 1)
    per_face = statistics.median(walls) / faces * 1000
    cpu_per_face = statistics.median(cpus) / faces * 1000
    if args.json:
        print(json.dumps({"benchmark": "filter", "faces": summary.faces, "ms_per_face": per_face,
                          "cpu_ms_per_face": cpu_per_face, "runs_ms_per_face": [w / faces * 1000 for w in walls],
                          "facemesh_only_ms": mesh_ms, "target_ms": 15.0}))
        return
    print_table(f"filter: {summary.faces} faces cropped at {args.size}px (median of {len(walls)} runs)",
                ["measure", "ms per face"],
                [["all rules (filter --redo), wall", per_face], ["all rules, process CPU time", cpu_per_face],
                 ["FaceMesh alone on the same crops", mesh_ms]])


if __name__ == "__main__":
    main()
