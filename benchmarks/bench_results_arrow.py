"""What typed results cost: each work type's Arrow round trip (to_arrow, an Arrow IPC stream, read back,
from_arrow) against the cloudpickle round trip the ray executor used before, per item, in one run.

The results are shaped like real ones: fingerprints computed here from the bundled photos; a crop outcome with
one face and two detections as face_record() rounds them; a filter result with every rule's score (24); a
download with a 223 KB body (docs/scale.md M9) and the headers a host sends. CPU time of this process (no
workers involved), so a shared machine's load changes it less than wall time; compare the ratios of one run.

    uv run --extra ray python benchmarks/bench_results_arrow.py [--items 4096] [--json]

Each work type in batches of its stage's own size (dedup 16, crop 32, filter 64, download 32).
"""

from __future__ import annotations

import argparse
import json
import pickle
import random
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pyarrow as pa

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import DEMO, images_in, print_wide_table

from facecurate.catalog import DownloadRow, FaceRecord
from facecurate.catalog.dedup import HashRow
from facecurate.crawl import download_work
from facecurate.crawl.download import Downloaded
from facecurate.crawl.http import Fetched
from facecurate.dedup import fingerprint_arrow
from facecurate.faces import crop_work
from facecurate.faces.crop_work import CropOutcome
from facecurate.rules import filter_work
from facecurate.rules.filter_work import Measured
from facecurate.rules.measure import FAMILY_KEYS
from facecurate.work import ArrowResults


def fingerprints(n: int) -> list[HashRow]:
    """Real fingerprints of the demo photos (decode, pHash, windows, thumbnail), repeated to ``n``."""
    import shutil
    import tempfile

    from facecurate.dedup.stage import _fingerprint_chunk, _Job

    with tempfile.TemporaryDirectory() as tmp:
        for p in images_in(DEMO):
            shutil.copy(p, Path(tmp) / p.name)
        job = _Job(tmp, "phash/w80/v3", "phash", 0.8, 40_000_000, 50_000_000)
        real = _fingerprint_chunk(job, [(p.name, "stamp") for p in sorted(Path(tmp).iterdir())])
    # distinct objects, as a worker's rows are (pickle would store a repeated object once)
    return [real[i % len(real)]._replace(path=f"raw/{i:08d}.jpg", windows=_copy(real[i % len(real)].windows),
                                         thumb=_copy(real[i % len(real)].thumb)) for i in range(n)]


def _copy(b: bytes | None) -> bytes | None:
    return None if b is None else bytes(bytearray(b))


def crops(n: int, r: random.Random) -> list[CropOutcome]:
    def face(i: int) -> FaceRecord:
        return FaceRecord(0, round(r.random(), 6), [round(r.uniform(0, 900), 1) for _ in range(4)],
                          [[round(r.uniform(0, 900), 2) for _ in range(2)] for _ in range(5)],
                          [[round(r.uniform(0, 900), 3) for _ in range(2)] for _ in range(4)],
                          r.random(), r.random(), r.random(), r.uniform(-30, 30),
                          f"crops/{i % 256:02x}/{'ab' * 32}_0_512.jpg", 512)

    return [CropOutcome([face(i)], found=[{"box": [round(r.uniform(0, 900), 1) for _ in range(4)],
                                          "prob": round(r.random(), 4)} for _ in range(2)]) for i in range(n)]


def measures(n: int, r: random.Random) -> list[Measured]:
    keys = [k for ks in FAMILY_KEYS.values() for k in ks]
    return [Measured({k: r.random() for k in keys}) for _ in range(n)]


def downloads(n: int, r: random.Random) -> list[Downloaded]:
    body = bytes(r.getrandbits(8) for _ in range(223_000))
    headers = {"content-type": "image/jpeg", "content-length": "223000", "etag": '"5f2a-1b"',
               "last-modified": "Sun, 06 Dec 2026 10:00:00 GMT", "cache-control": "max-age=86400"}
    out = []
    for i in range(n):
        url = f"https://images.example.org/photos/{i}/portrait.jpg"
        row = DownloadRow(i, url, i % 300, f"https://example.org/page/{i}", f"A portrait {i}", "CC BY 4.0",
                          "A. Photographer", "bing", "smiling faces", "faces")
        data = body[:-8] + i.to_bytes(8, "little")  # each photo its own bytes
        out.append(Downloaded(row, Fetched(url, 200, None, url, dict(headers), attempts=1), data=data,
                              sha256="ab" * 32,
                              format="JPEG", ext="jpg", width=1024, height=768))
    return out


def timed(fn: Callable[[], Any], repeat: int) -> float:
    best = float("inf")
    for _ in range(repeat):
        start = time.process_time()
        fn()
        best = min(best, time.process_time() - start)
    return best


def arrow_trip(codec: ArrowResults[Any], batches: list[list[Any]]) -> int:
    size = 0
    for batch in batches:
        table = codec.to_arrow(batch)
        sink = pa.BufferOutputStream()
        with pa.ipc.new_stream(sink, table.schema) as writer:
            writer.write_table(table)
        wire = sink.getvalue()
        size += wire.size
        codec.from_arrow(pa.ipc.open_stream(wire).read_all())
    return size


def pickle_trip(batches: list[list[Any]]) -> int:
    from ray import cloudpickle

    size = 0
    for batch in batches:
        blob = cloudpickle.dumps(batch)
        size += len(blob)
        pickle.loads(blob)
    return size


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--items", type=int, default=4096)
    ap.add_argument("--repeat", type=int, default=3, help="best of")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    r = random.Random(7)
    n = args.items
    # each stage's own batch: dedup CHUNK, [crop] batch_size, filter BATCH, crawl COMMIT_EVERY
    cases: list[tuple[str, int, ArrowResults[Any], list[Any]]] = [
        ("fingerprint (dedup)", 16, fingerprint_arrow.RESULTS, fingerprints(n)),
        ("crop (1 face)", 32, crop_work.RESULTS, crops(n, r)),
        ("filter (24 scores)", 64, filter_work.RESULTS, measures(n, r)),
        ("download (223 KB body)", 32, download_work.RESULTS, downloads(max(64, n // 16), r)),
    ]
    out = []
    for name, size, codec, results in cases:
        batches = [results[i:i + size] for i in range(0, len(results), size)]
        arrow_s = timed(lambda b=batches, c=codec: arrow_trip(c, b), args.repeat)  # type: ignore[misc]
        pickle_s = timed(lambda b=batches: pickle_trip(b), args.repeat)  # type: ignore[misc]
        items = len(results)
        out.append({"work": name, "batch": size, "items": items, "arrow_us_per_item": arrow_s / items * 1e6,
                    "pickle_us_per_item": pickle_s / items * 1e6, "arrow_over_pickle": arrow_s / pickle_s,
                    "arrow_bytes_per_item": arrow_trip(codec, batches) / items,
                    "pickle_bytes_per_item": pickle_trip(batches) / items})
    if args.json:
        print(json.dumps(out, indent=2))
        return
    print_wide_table(f"Result round trip per item (CPU time, best of {args.repeat})",
                     ["work", "batch", "items", "arrow µs", "pickle µs", "arrow/pickle", "arrow B", "pickle B"],
                     [[o["work"], o["batch"], o["items"], f"{o['arrow_us_per_item']:.1f}",
                       f"{o['pickle_us_per_item']:.1f}",
                       f"{o['arrow_over_pickle']:.2f}×", f"{o['arrow_bytes_per_item']:.0f}",
                       f"{o['pickle_bytes_per_item']:.0f}"] for o in out])


if __name__ == "__main__":
    main()
