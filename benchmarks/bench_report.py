"""`facecurate report` on a synthetic catalog of N faces: build time (cold and warm thumbnail cache) and HTML size.

The workspace is made through the catalog API as the stages would fill it: N faces, each in its own photo and
with a distinct 256 px crop cut from the bundled demo photos at a random place and scale (so every thumbnail is
really made), plus 3% more photos in which no face was found; sources over 40 queries and three labels;
filter's measures drawn around the thresholds with the reasons the rule registry decides from them; 5% face
duplicates; 300 review decisions. The photos' arrival is spread over 14 days (one UPDATE: the catalog stamps
`added_at` now), as a crawl over two weeks would, so the over-time chart has days to draw.

    uv run python benchmarks/bench_report.py                  # 10,000 faces
    uv run python benchmarks/bench_report.py --faces 2000 --keep /tmp/ws --json

Each timed run is the CLI command in a fresh process (`facecurate report -w WS --out OUT`), as a person runs it.
"""

from __future__ import annotations

import argparse
import hashlib
import io
import json
import random
import subprocess
import sys
import tempfile
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import DEMO, print_table
from PIL import Image

from facecurate.catalog import Catalog, FaceRecord
from facecurate.catalog.faces import FilterResult
from facecurate.review.decisions import decide
from facecurate.review.items import Target
from facecurate.rules.registry import RULES
from facecurate.rules.registry import decide as rules_decide
from facecurate.workspace import Workspace, init_workspace

LABELS = ("makeup", "no_makeup", "portrait")
# Measure → (mean, spread) of a normal draw, clipped at 0: each puts a few % to a third of faces past the default.
MEASURES: dict[str, tuple[float, float]] = {
    "ear_mean": (0.27, 0.06), "ear_min": (0.25, 0.07), "ear_max": (0.29, 0.05), "occlusion": (0.4, 0.35),
    "mirroring": (0.02, 0.04), "headroom_iod": (0.6, 0.45), "upscale": (1.2, 0.5), "extreme_pose": (0.45, 0.3),
    "other_face": (0.1, 0.2), "face_share": (0.2, 0.12), "frame_saturated": (0.15, 0.15),
    "sharpness": (25.0, 15.0), "chroma": (9.0, 5.0),
}
DEFAULTS = {r.name: r.default for r in RULES}


def _crops(n: int, rng: random.Random) -> list[bytes]:
    """n distinct 256 px JPEGs cut from the demo photos (face-photo entropy, not noise)."""
    photos = [Image.open(p).convert("RGB") for p in sorted(DEMO.glob("*.jpg"))]
    out = []
    for _ in range(n):
        im = rng.choice(photos)
        side = rng.randint(min(im.size) // 4, min(im.size))
        x, y = rng.randint(0, im.width - side), rng.randint(0, im.height - side)
        buf = io.BytesIO()
        im.crop((x, y, x + side, y + side)).resize((256, 256), Image.Resampling.BILINEAR).save(buf, "JPEG",
                                                                                               quality=90)
        out.append(buf.getvalue())
    return out


def build(root: Path, n: int, seed: int = 0) -> Workspace:
    ws = init_workspace(root)
    rng = random.Random(seed)
    queries = [(f"query {q} {LABELS[q % 3]}", LABELS[q % 3]) for q in range(40)]
    raw = ws.root / "raw" / "demo.jpg"  # every photo row points at one real photo (no-face rows draw it)
    raw.parent.mkdir(parents=True, exist_ok=True)
    raw.write_bytes((DEMO / "obama.jpg").read_bytes())
    crops = _crops(n, rng)
    start = datetime.now(timezone.utc) - timedelta(days=14)
    with Catalog.open(ws.catalog_path) as cat:
        with cat.transaction():
            made, k = 0, -1
            while made < n:  # n faces, plus the photos in which none was found
                k += 1
                term, label = rng.choice(queries)
                sha = hashlib.sha256(b"photo%d" % k).hexdigest()
                image_id = cat.add_image(sha256=sha, path="raw/demo.jpg", format="jpeg", width=1024, height=768,
                                         size=100_000, label=label)
                cat.record_source(kind="url", location=f"https://img.example/{k}.jpg", status="ok",
                                  image_id=image_id, label=label, query=term, engine="bing", rank=k % 300,
                                  page_url=f"https://example.org/p/{k}", title=f"Photo {k}")
                if rng.random() < 0.03:
                    cat.save_crop_result(image_id, "no_face", [])
                    continue
                crop = f"crops/{sha[:2]}/{sha}_0.jpg"
                (ws.root / crop).parent.mkdir(parents=True, exist_ok=True)
                (ws.root / crop).write_bytes(crops[made])
                made += 1
                cat.save_crop_result(image_id, "done", [FaceRecord(0, 0.99, [0, 0, 100, 100], [[0, 0]] * 5,
                                                                   [[0, 0]] * 4, 0.0, 0.1, 0.0, 0.0, crop, 256)])
        faces = list(cat.faces())
        results = []
        for f in faces:
            scores: dict[str, float | None] = {m: round(max(0.0, rng.gauss(mu, sd)), 4)
                                               for m, (mu, sd) in MEASURES.items()}
            results.append(FilterResult(f.id, scores, rules_decide(scores, DEFAULTS, list(RULES))))
        with cat.transaction():
            cat.save_filter_results(results)
            dups = rng.sample(faces[1:], len(faces) // 20)
            cat.dedup_set_faces((faces[0].id, faces[0].id, rng.randint(0, 8), None, "perceptual", f.id)
                                for f in dups)
            photos = k + 1
            for image_id in range(1, photos + 1):  # arrival spread over two weeks, in crawl order
                at = start + timedelta(seconds=14 * 86400 * (image_id - 1) / photos)
                cat.conn.execute("UPDATE images SET added_at = ? WHERE id = ?",
                                 (at.isoformat(timespec="seconds"), image_id))
        picked = rng.sample(faces, min(300, len(faces)))
        for decision in ("kept", "rejected"):
            part = picked[: len(picked) // 2] if decision == "kept" else picked[len(picked) // 2:]
            decide(cat, [Target(f"f{f.id}", f.image_id, f.face_index) for f in part], decision, "bench", "bench")
    return ws


def timed_report(ws: Workspace, out: Path) -> tuple[float, dict[str, Any]]:
    t0 = time.perf_counter()
    done = subprocess.run([sys.executable, "-m", "facecurate", "report", "-w", str(ws.root), "--out", str(out),
                           "--json"], capture_output=True, text=True, check=True)
    return time.perf_counter() - t0, json.loads(done.stdout)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--faces", type=int, default=10_000)
    ap.add_argument("--keep", type=Path, help="build the workspace here and leave it")
    ap.add_argument("--out", type=Path, help="write the report here (default: in the workspace)")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    root = args.keep or Path(tempfile.mkdtemp(prefix="bench-report-")) / "ws"
    t0 = time.perf_counter()
    ws = build(root, args.faces)
    built = time.perf_counter() - t0
    out = args.out or ws.root / "report.html"
    cold, record = timed_report(ws, out)
    warm, record = timed_report(ws, out)
    with Catalog.open(ws.catalog_path) as cat:
        faces = cat.face_count()
    result = {"faces": faces, "workspace": str(ws.root), "report": str(out), "build_catalog_s": round(built, 2),
              "report_cold_s": round(cold, 2), "report_warm_s": round(warm, 2),
              "html_bytes": out.stat().st_size, "html_mib": round(out.stat().st_size / 2**20, 2),
              "charts": record["charts"], "sheets": record["sheets"], "thumbnails": record["thumbnails"]}
    if args.json:
        print(json.dumps(result))
        return
    print_table(f"facecurate report, {faces} faces (synthetic catalog built in {built:.1f} s)",
                ["measure", "value"],
                [["build, cold thumbnail cache (s)", cold], ["build, warm cache (s)", warm],
                 ["HTML size (MiB)", result["html_mib"]], ["charts", record["charts"]],
                 ["contact sheets", record["sheets"]], ["thumbnails embedded", record["thumbnails"]]])
    print(f"report: {out}")


if __name__ == "__main__":
    main()
