"""What [run] storage costs per file: the default (the workspace's folders) against the direct calls it wraps,
and, with ``--s3``, an fsspec store on a loopback S3 server (moto) for the request count per file.

The default must cost the local executor nothing: ``LocalStore`` is a method call around the same
``media.read_limited`` / ``media.atomic_write`` the stages called before. Rounds interleave the two ways so a
shared machine's load hits both alike; CPU time (process time), not wall time, is compared.

    uv run python benchmarks/bench_filestore.py              # local: 200 kB files, 6 rounds of 2,000
    uv run python benchmarks/bench_filestore.py --s3 --n 200 # also PUT/GET through s3fs to moto on loopback
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from _common import print_table

from facecurate import media
from facecurate.filestore import FsspecStore, LocalStore, open_store
from facecurate.workspace import init_workspace


def _cpu(fn, n: int) -> float:
    start = time.process_time()
    for i in range(n):
        fn(i)
    return (time.process_time() - start) / n * 1e6


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--n", type=int, default=2000, help="files per round")
    ap.add_argument("--rounds", type=int, default=6)
    ap.add_argument("--size", type=int, default=200_000, help="bytes per file (M9: 223 kB per photo)")
    ap.add_argument("--s3", action="store_true", help="also time an fsspec store on a loopback S3 (moto) server")
    args = ap.parse_args()
    data = os.urandom(args.size)
    with tempfile.TemporaryDirectory() as tmp:
        ws = init_workspace(Path(tmp) / "ws")
        store = open_store(ws)
        assert isinstance(store, LocalStore)
        rel = "raw/ab/x.jpg"
        media.atomic_write(ws.resolve(rel), data, ws.tmp_dir)
        totals = {"read direct": 0.0, "read LocalStore": 0.0, "write direct": 0.0, "write LocalStore": 0.0,
                  "open_store(ws)": 0.0}
        for _ in range(args.rounds):
            totals["read direct"] += _cpu(lambda i: media.read_limited(ws.resolve(rel), 10**9), args.n)
            totals["read LocalStore"] += _cpu(lambda i: store.read(rel, 10**9), args.n)
            totals["write direct"] += _cpu(lambda i: media.atomic_write(ws.resolve(f"crops/w/{i}.jpg"), data,
                                                                        ws.tmp_dir), args.n // 10)
            totals["write LocalStore"] += _cpu(lambda i: store.write(f"crops/s/{i}.jpg", data), args.n // 10)
            totals["open_store(ws)"] += _cpu(lambda i: open_store(ws), args.n)
        rows = [[k, f"{v / args.rounds:.1f}"] for k, v in totals.items()]
        if args.s3:
            from tests.s3server import new_bucket, s3_server

            with s3_server():
                s3 = FsspecStore(f"{new_bucket()}/bench")
                n = max(1, args.n // 10)
                for label, fn in (("S3 PUT once (HEAD + PUT)", lambda i: s3.write(f"raw/{i}.jpg", data, once=True)),
                                  ("S3 GET", lambda i: s3.read(f"raw/{i}.jpg", 10**9)),
                                  ("S3 stamp (HEAD)", lambda i: s3.stamp(f"raw/{i}.jpg"))):
                    start = time.perf_counter()
                    cpu = _cpu(fn, n)
                    rows.append([f"{label} (wall {(time.perf_counter() - start) / n * 1e3:.2f} ms)", f"{cpu:.1f}"])
    print(f"{args.size} B per file; load average {os.getloadavg()[0]:.1f}")
    print_table("run.storage: cost per file", ["operation", "µs CPU per file"], rows)


if __name__ == "__main__":
    main()
