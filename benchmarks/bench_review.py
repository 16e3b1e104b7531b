"""The review gallery with 10,000 items in headless Chromium: time to first paint, to interactive, and to apply
a filter, sort or scroll; how much is sent.

The workspace holds the demo photos, cropped for real, and then N fabricated face rows (rule verdicts,
duplicates, scores, provenance spread like a crawl's) that point at those few crop files: it is the gallery's
speed being measured, not thumbnail making, which is timed separately (ms per thumbnail, made once and cached).

    uv run python benchmarks/bench_review.py                  # 10,000 items, 3 runs, median
    uv run python benchmarks/bench_review.py --items 50000 --runs 5 --json

Needs Debian's chromium + chromium-driver (/usr/bin/chromium, /usr/bin/chromedriver).
"""

from __future__ import annotations

import argparse
import json
import logging
import random
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import DEMO, print_table
from werkzeug.serving import make_server

from facecurate.catalog import Catalog, utc_now
from facecurate.faces.crop import CropOptions, run_crop
from facecurate.ingest import import_paths
from facecurate.review import thumbs
from facecurate.review.server import KeepAliveHandler, create_app
from facecurate.workspace import Workspace, init_workspace

REASONS = ("closed_eyes", "wink", "occluded_eyes", "mirroring", "no_headroom", "small_face", "blurry",
           "extreme_pose", "grayscale", "product_shot", "multiple_faces")
MEASURES = ("ear_mean", "ear_min", "occlusion", "mirroring", "headroom_iod", "upscale", "sharpness",
            "extreme_pose", "chroma", "face_share", "other_face")


def build(root: Path, n: int, seed: int = 0) -> Workspace:
    """Demo photos cropped for real, then ``n`` fabricated faces pointing at those crops."""
    ws = init_workspace(root)
    rng = random.Random(seed)
    with Catalog.open(ws.catalog_path) as cat:
        import_paths(ws, cat, [DEMO], label="demo")
        run_crop(ws, cat, CropOptions.from_config(ws, size=256, device="cpu"))
        real = [dict(r) for r in cat.conn.execute("SELECT f.*, i.path, i.width, i.height, i.format, i.bytes "
                                                  "FROM faces f JOIN images i ON i.id=f.image_id")]
        queries = [f"query {q}" for q in range(40)]
        with cat.transaction():
            for k in range(n):
                src = real[k % len(real)]
                cur = cat.conn.execute(
                    "INSERT INTO images (sha256, path, format, width, height, bytes, label, added_at, crop_state) "
                    "VALUES (?,?,?,?,?,?,?,?, 'done')",
                    (f"{k:064x}", src["path"], src["format"], src["width"], src["height"], src["bytes"],
                     rng.choice(("makeup", "portrait", "street")), utc_now()))
                image_id = cur.lastrowid
                roll = rng.random()  # 60% rejected by the rules, 10% face duplicates of a real face, 30% kept
                status = "reject" if roll < 0.6 else "duplicate" if roll < 0.7 else "keep"
                reasons = rng.sample(REASONS, rng.choice((1, 1, 1, 2, 3))) if status == "reject" else []
                scores = {m: round(rng.random() * 2, 4) for m in MEASURES}
                keeper = real[k % len(real)]
                dup = (keeper["image_id"], keeper["id"], rng.randint(0, 8), "perceptual") \
                    if status == "duplicate" else (None, None, None, None)
                cat.conn.execute(  # the stages' own facts: crop's fields, filter's verdict, dedup's pointers
                    "INSERT INTO faces (image_id, face_index, det_score, bbox, landmarks, quad, oob_fraction, "
                    "above_fraction, side_fraction, eye_angle, crop_path, crop_size, reasons, scores, filtered_at, "
                    "dup_group, dup_of, dup_distance, dup_kind) VALUES (?,0,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)",
                    (image_id, rng.uniform(0.9, 1.0), src["bbox"], src["landmarks"], src["quad"],
                     src["oob_fraction"], src["above_fraction"], src["side_fraction"], src["eye_angle"],
                     src["crop_path"], src["crop_size"], json.dumps(reasons), json.dumps(scores), utc_now(), *dup))
                cat.conn.execute(
                    "INSERT INTO sources (image_id, kind, location, label, page_url, title, engine, query, rank, "
                    "license, retrieved_at, status) VALUES (?, 'url', ?, NULL, ?, ?, 'bing', ?, ?, NULL, ?, 'ok')",
                    (image_id, f"https://img.example/{k}.jpg", f"https://example.org/p/{k}",
                     f"Photo {k} <b>title</b>", rng.choice(queries), k % 300, utc_now()))
    return ws


def thumb_ms(ws: Workspace) -> float:
    """Cold cost of one grid thumbnail (decode a 256 px crop, shrink, encode, write atomically)."""
    with Catalog.open(ws.catalog_path) as cat:
        paths = sorted({r[0] for r in cat.conn.execute("SELECT crop_path FROM faces")})
    cfg = ws.config()
    t0 = time.perf_counter()
    for p in paths:
        thumbs.cached(ws, p, "crop", 96, cfg.get("media", "max_pixels"), cfg.get("media", "max_bytes"))
    return (time.perf_counter() - t0) * 1000 / len(paths)


# In the page: change a control, then wait for the gallery to have queried, fetched the page in view and drawn
# it, plus one animation frame (the paint). Returns milliseconds.
_APPLY = """
const [id, value, done] = [arguments[0], arguments[1], arguments[arguments.length - 1]];
const t0 = performance.now();
const sel = document.getElementById(id);
if (sel.tagName === 'BUTTON') sel.click(); else { sel.value = value; sel.dispatchEvent(new Event('change')); }
(function wait() {
  if (window.fc.filterDone > t0 && !document.querySelector('.cell.loading'))
    requestAnimationFrame(() => done(performance.now() - t0));
  else requestAnimationFrame(wait);
})();
"""
# Press keys (as the page's keydown handler sees them), wait until the queued write has come back and drawn.
_KEYS = """
const [keys, done] = [arguments[0], arguments[arguments.length - 1]];
const t0 = performance.now();
for (const key of keys) document.dispatchEvent(new KeyboardEvent('keydown', {key, bubbles: true}));
(function wait() {
  if (window.fc.lastWrite > t0) requestAnimationFrame(() => done(performance.now() - t0));
  else requestAnimationFrame(wait);
})();
"""
_THUMBS_IN = ("return !document.querySelector('.cell.loading') && "
              "[...document.querySelectorAll('.cell img')].every(i => i.complete)")
_SCROLL = """
const done = arguments[arguments.length - 1];
const grid = document.getElementById('grid');
const t0 = performance.now();
grid.scrollTop = grid.scrollHeight / 2;
(function wait() {
  const cells = document.querySelectorAll('.cell');
  const top = grid.scrollTop;
  const ok = cells.length && !document.querySelector('.cell.loading') &&
    [...cells].some(c => Math.abs(parseFloat(c.style.transform.split(',')[1]) - top) < 500);
  if (ok) requestAnimationFrame(() => done(performance.now() - t0)); else requestAnimationFrame(wait);
})();
"""
LOAD_MEASURES = {  # performance entries, ms since navigation start
    "first contentful paint": "fcp",
    "grid drawn (first page of items)": "grid",
    "interactive (menus filled too)": "ready",
    "thumbnails in view loaded": "thumbs_done",
}
CHANGES = {  # control id, value: applied one after the other
    "filter: reason": ("f-reason", "mirroring"),
    "filter: status keep": ("f-status", "keep"),
    "filter: back to any status": ("f-status", "any"),
    "sort: score worst first": ("f-sort", "score:ear_mean"),
    "sort: flip direction": ("f-dir", ""),
    "filter: decision undecided": ("f-decision", "none"),
}
_LOAD = """
const paint = performance.getEntriesByName('first-contentful-paint')[0];
const ready = performance.getEntriesByName('fc:ready')[0];
const grid = performance.getEntriesByName('fc:grid')[0];
const res = performance.getEntriesByType('resource');
const thumbs = res.filter(r => r.name.includes('/thumb/'));
const query = res.find(r => r.name.includes('/api/query'));
return {fcp: paint ? paint.startTime : null, ready: ready ? ready.startTime : null,
        grid: grid ? grid.startTime : null,
        thumbs_done: thumbs.length ? Math.max(...thumbs.map(t => t.responseEnd)) : null,
        thumb_requests: thumbs.length, imgs_in_dom: document.querySelectorAll('img').length,
        query_bytes: query ? query.encodedBodySize : null, keys: window.fc.state.keys.length,
        count: document.getElementById('count').textContent};
"""


def _browser() -> Any:
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    opts = webdriver.ChromeOptions()
    opts.binary_location = "/usr/bin/chromium"
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                "--disable-background-networking", "--disable-component-update", "--disable-sync",
                "--no-first-run", "--window-size=1400,900", f"--user-data-dir={tempfile.mkdtemp()}"):
        opts.add_argument(arg)
    driver = webdriver.Chrome(service=Service("/usr/bin/chromedriver"), options=opts)
    driver.set_script_timeout(60)
    return driver


def measure(base: str, runs: int) -> dict[str, Any]:
    """Each run is a fresh browser with an empty profile: a cold load, then the changes in sequence."""
    from selenium.webdriver.support.ui import WebDriverWait

    samples: dict[str, list[float]] = {}
    info: dict[str, Any] = {}
    for _ in range(runs):
        driver = _browser()
        try:
            driver.get(f"{base}/#status=any")
            WebDriverWait(driver, 60).until(lambda d: d.execute_script(
                "return window.fc && window.fc.ready && " + _THUMBS_IN[7:]))
            load = driver.execute_script(_LOAD)
            info = {k: load[k] for k in ("thumb_requests", "imgs_in_dom", "query_bytes", "keys", "count")}
            for name, k in LOAD_MEASURES.items():
                samples.setdefault(name, []).append(load[k])
            for name, (control, value) in CHANGES.items():
                samples.setdefault(name, []).append(driver.execute_async_script(_APPLY, control, value))
                WebDriverWait(driver, 60).until(lambda d: d.execute_script(_THUMBS_IN))  # a person looks first
            samples.setdefault("scroll to the middle", []).append(driver.execute_async_script(_SCROLL))
            driver.execute_async_script(_APPLY, "f-decision", "any")
            driver.execute_async_script(_APPLY, "f-reason", "")  # the whole workspace again
            info["bulk"] = driver.execute_script("return document.getElementById('count').textContent")
            for name, keys in (("keep everything shown (a, k)", ["a", "k"]), ("undo that (u)", ["u"])):
                samples.setdefault(name, []).append(driver.execute_async_script(_KEYS, keys))
            samples.setdefault("filter after it (log grows 20k rows a run)", []).append(
                driver.execute_async_script(_APPLY, "f-decision", "none"))
        finally:
            driver.quit()
    return {"median_ms": {k: round(statistics.median(v), 1) for k, v in samples.items()}, **info}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--items", type=int, default=10_000)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    logging.getLogger("werkzeug").setLevel(logging.WARNING)
    with tempfile.TemporaryDirectory(prefix="bench-review-") as tmp:
        t0 = time.perf_counter()
        ws = build(Path(tmp) / "ws", args.items)
        built = time.perf_counter() - t0
        cold_thumb = thumb_ms(ws)
        server = make_server("127.0.0.1", 0, create_app(ws), threaded=True, request_handler=KeepAliveHandler)
        threading.Thread(target=server.serve_forever, daemon=True).start()
        try:
            result = measure(f"http://127.0.0.1:{server.server_port}", args.runs)
        finally:
            server.shutdown()
    result.update(items=args.items, runs=args.runs, build_s=round(built, 1), thumb_cold_ms=round(cold_thumb, 1))
    if args.json:
        print(json.dumps(result, indent=2))
        return
    rows: list[list[object]] = [[k, v] for k, v in result["median_ms"].items()]
    print_table(f"review gallery, {args.items:,} items, headless Chromium, median of {args.runs} cold loads "
                f"(ms since navigation start / since the change)", ["measure", "ms"], rows)
    print(f"shown: {result['count']}; /api/query body {result['query_bytes']:,} bytes for {result['keys']:,} keys; "
          f"{result['thumb_requests']} thumbnail requests and {result['imgs_in_dom']} <img> in the DOM after load; "
          f"a cold thumbnail costs {cold_thumb:.1f} ms to make (then cached); a and k decided {result['bulk']}.")


if __name__ == "__main__":
    main()
