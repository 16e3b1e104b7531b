"""How fast the SQLite catalog takes rows, and how many bytes an image costs in it: the figures docs/scale.md
sizes a 100M-photo run with.

Writes N synthetic downloaded images through the catalog API the stages use, in batches of one transaction
each (the crawl and dedup stages commit per batch so a kill loses at most the batch in flight): per image an
``images`` row, its ``sources`` row (a URL) and its ``dedup_hashes`` fingerprint row (hash, mirror hash, eight
window hashes, a 24x24 thumbnail, quality cues). Prints images committed per second, transactions per second
and the file's bytes per image at a few catalog sizes, so any slowdown as the B-tree indexes grow shows.

    uv run python benchmarks/bench_catalog.py                       # 200k images, batches of 128
    uv run python benchmarks/bench_catalog.py --n 1000000 --batch 512 --json
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import print_table

from facecurate.catalog import Catalog, utc_now
from facecurate.catalog.dedup import HashRow
from facecurate.workspace import init_workspace


def _rows(k: int) -> tuple[dict[str, object], str, HashRow]:
    sha = hashlib.sha256(k.to_bytes(8, "little")).hexdigest()
    rnd = hashlib.sha512(sha.encode()).digest()
    image = {"sha256": sha, "path": f"raw/{sha[:2]}/{sha}.jpg", "format": "JPEG", "width": 1200, "height": 900,
             "size": 180_000 + k % 50_000, "label": "portrait"}
    url = f"https://images.example.org/photos/{k // 1000}/{sha[:20]}.jpg?w=1200"
    h = int.from_bytes(rnd[:8], "little", signed=True)
    fp = HashRow(image["path"], "phash/w95/v3", sha, h, ~h, rnd[:64], "r" + sha[:63],  # type: ignore[arg-type]
                 os.urandom(576), 123.4, 87, None, utc_now())
    return image, url, fp


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=200_000)
    ap.add_argument("--batch", type=int, default=128, help="images per transaction (the dedup stage's BATCH)")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    checkpoints = sorted({min(args.n, c) for c in (args.n // 10, args.n // 2, args.n)})
    out = []
    with tempfile.TemporaryDirectory() as tmp:
        ws = init_workspace(Path(tmp) / "ws")
        catalog = Catalog.open(ws.catalog_path)
        t0, c0, done = time.perf_counter(), time.process_time(), 0
        last_t, last_done = t0, 0
        for start in range(0, args.n, args.batch):
            batch = [_rows(k) for k in range(start, min(args.n, start + args.batch))]
            with catalog.transaction():
                for image, url, _ in batch:
                    image_id = catalog.add_image(**image)  # type: ignore[arg-type]
                    catalog.record_source(kind="url", location=url, status="ok", image_id=image_id,
                                          label="portrait")
                catalog.dedup_save_hashes(fp for _, _, fp in batch)
            done += len(batch)
            if checkpoints and done >= checkpoints[0]:
                now = time.perf_counter()
                catalog.conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
                size = sum(p.stat().st_size for p in ws.catalog_path.parent.glob(ws.catalog_path.name + "*"))
                out.append({"images": done, "images_per_s": (done - last_done) / (now - last_t),
                            "transactions_per_s": (done - last_done) / args.batch / (now - last_t),
                            "bytes_per_image": size / done, "db_mb": size / 2**20})
                last_t, last_done = now, done
                checkpoints.pop(0)
        wall, cpu = time.perf_counter() - t0, time.process_time() - c0
        catalog.close()
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    if args.json:
        print(json.dumps({"n": args.n, "batch": args.batch, "wall_s": wall, "cpu_s": cpu, "checkpoints": out,
                          "load": load}, indent=2))
        return
    print_table(f"catalog writes: images + sources + dedup_hashes rows, {args.batch} images per transaction; "
                f"{args.n:,} images in {wall:.1f} s wall, {cpu:.1f} s CPU (load average {load:.1f} on "
                f"{os.cpu_count()} CPUs); rates are over the span since the previous line",
                ["images so far", "images/s", "transactions/s", "bytes/image", "catalog MB"],
                [[f"{r['images']:,}", r["images_per_s"], r["transactions_per_s"], r["bytes_per_image"], r["db_mb"]]
                 for r in out])


if __name__ == "__main__":
    main()
