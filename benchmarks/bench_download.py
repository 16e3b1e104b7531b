"""facecurate's downloader vs img2dataset on the same N image URLs, same machine, one run each.

A loopback server serves N distinct JPEGs and adds a fixed latency per request (50 ms: a far host). It sets
TCP_NODELAY, as production servers do (nginx's ``tcp_nodelay on``): with Nagle on, its two writes per answer
(head, then body) made a client that keeps the connection alive wait out the client's delayed ACK, about
40 ms per image that no real host adds, while img2dataset, which opens a connection per URL, never paid it.
Both tools run as the command a user types, timed from start to exit:

* facecurate: ``facecurate crawl --engine bing`` in a fresh workspace whose Bing base_url is a loopback
  stand-in listing the N URLs; so the figure includes search pages, decoding every image to validate it,
  content-addressed storage (an fsync per file) and the catalog writes, with the per-host cap lifted to the
  thread count (one host here; img2dataset has no per-host cap). Its settings are the defaults otherwise:
  [crawl] processes = 0, so finishing (decode, hash, write) runs in two worker processes per core while
  the requests, and with them every politeness rule, stay in the crawl's process.
* img2dataset: ``img2dataset --input_format txt --output_format files --resize_mode no`` with the same
  thread count (one process), timed end to end and by its own shard timer (its stats ``duration``, which
  leaves out its start-up), so the ratio is printed against both. It is not a facecurate dependency:
  install it in its own environment and pass its executable with --img2dataset (default: ``img2dataset``
  on PATH); without it only facecurate is timed.

    uv run python benchmarks/bench_download.py --n 10000 --latency 0.05 --threads 32 \
        --img2dataset /tmp/i2d-venv/bin/img2dataset
"""

from __future__ import annotations

import argparse
import compileall
import io
import json
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import print_table

import facecurate
from facecurate.catalog import Catalog
from facecurate.crawl.queries import add_terms
from facecurate.workspace import init_workspace

TERM = "benchmark faces"


def make_images(n: int, size: tuple[int, int]) -> list[bytes]:
    """N distinct photo-like JPEGs (gradients + noise), about 20-30 KB each at 320x240."""
    rng = np.random.default_rng(0)
    w, h = size
    yy, xx = np.mgrid[0:h, 0:w]
    out = []
    for i in range(n):
        base = np.stack([(xx + i) % 256, (yy * 2 + i) % 256, (xx + yy + 3 * i) % 256], axis=2)
        pixels = np.clip(base + rng.integers(-12, 12, (h, w, 3)), 0, 255).astype(np.uint8)
        buf = io.BytesIO()
        Image.fromarray(pixels).save(buf, "JPEG", quality=85)
        out.append(buf.getvalue())
    return out


def serve(images: list[bytes], latency: float) -> ThreadingHTTPServer:
    """/img/<i>.jpg after ``latency`` seconds; /images/async answers like Bing, listing the same URLs."""

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"
        disable_nagle_algorithm = True  # see the module docstring

        def log_message(self, *args: Any) -> None:
            pass

        def do_GET(self) -> None:
            from urllib.parse import parse_qs, urlsplit

            parts = urlsplit(self.path)
            if parts.path.startswith("/img/"):
                time.sleep(latency)
                body, ctype = images[int(Path(parts.path).stem)], "image/jpeg"
            elif parts.path == "/images/async":
                q = parse_qs(parts.query)
                first, count = int(q.get("first", ["1"])[0]), int(q.get("count", ["35"])[0])
                lis = []
                for i in range(first - 1, min(len(images), first - 1 + count)):
                    m = json.dumps({"murl": f"{base}/img/{i}.jpg", "purl": f"http://example.org/{i}", "t": str(i)})
                    lis.append(f'<li><a class="iusc" m="{m.replace(chr(34), "&quot;")}" href="#"></a></li>')
                body = f'<div class="dg_b"><div class="dgControl"><ul>{"".join(lis)}</ul></div></div>'.encode()
                ctype = "text/html; charset=utf-8"
            else:
                body, ctype = b"no", "text/plain"
            self.send_response(200)
            self.send_header("Content-Type", ctype)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    httpd.daemon_threads = True
    httpd.request_queue_size = 256
    base = f"http://127.0.0.1:{httpd.server_address[1]}"
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    return httpd


def run_facecurate(base: str, n: int, threads: int, work: Path) -> dict[str, Any]:
    ws = init_workspace(work / "ws")
    ws.config_path.write_text(
        f'[crawl]\npage_delay = 0.0\nconcurrency = {threads}\nper_host = {threads}\nper_host_rate = 0.0\n'
        f'contact = "bench@example.org"\nlimit = {n}\n[engines.bing]\nbase_url = "{base}"\n', encoding="utf-8")
    with Catalog.open(ws.catalog_path) as catalog:
        add_terms(ws, catalog, "bench", [TERM])
    # Both contenders byte-compiled first, as pip leaves an installed package: a machine that sets
    # PYTHONDONTWRITEBYTECODE (this one does) would otherwise recompile their modules on every run. That holds
    # for facecurate's dependencies as for img2dataset's (uv installs without compiling): numpy, Rich, Typer,
    # requests and Pillow from source cost ~0.6 s of every start here, against 0.4 s for all of it compiled.
    compileall.compile_dir(str(Path(facecurate.__file__).parent), quiet=1)
    compile_environment(Path(sys.executable))
    t0 = time.perf_counter()
    proc = subprocess.run([sys.executable, "-m", "facecurate", "crawl", "--engine", "bing", "--limit", str(n),
                           "--json", "-w", str(ws.root)], capture_output=True, text=True)
    seconds = time.perf_counter() - t0
    if proc.returncode != 0:
        raise SystemExit(f"facecurate crawl failed ({proc.returncode}): {proc.stderr[-2000:]}")
    with Catalog.open(ws.catalog_path) as catalog:  # the figures from the catalog, whatever --json prints
        (run,) = catalog.latest_runs().values()
        counts = catalog.run_counts(run.id)
    return {"tool": "facecurate crawl", "seconds": seconds, "stored": counts.new + counts.duplicate,
            "failed": counts.failed_count}


def _site_packages(python: Path) -> list[str]:
    out = subprocess.run([str(python), "-c", "import site; print(chr(10).join(site.getsitepackages()))"],
                         capture_output=True, text=True)
    return [line for line in out.stdout.splitlines() if line]


def compile_environment(python: Path) -> None:
    """Byte-compile an environment's installed packages (what ``pip install`` does by default)."""
    subprocess.run([str(python), "-m", "compileall", "-q", "-j", "0", *_site_packages(python)], capture_output=True)


def run_img2dataset(exe: str, base: str, n: int, threads: int, work: Path) -> dict[str, Any] | None:
    path = shutil.which(exe) or (exe if Path(exe).is_file() else None)
    if path is None:
        return None
    python = Path(path).parent / "python"
    if python.exists():  # img2dataset's environment byte-compiled too, as for facecurate above
        compile_environment(python)
    urls = work / "urls.txt"
    urls.write_text("".join(f"{base}/img/{i}.jpg\n" for i in range(n)), encoding="utf-8")
    out = work / "i2d"
    env = {**os.environ, "NO_ALBUMENTATIONS_UPDATE": "1"}
    t0 = time.perf_counter()
    proc = subprocess.run([path, "--url_list", str(urls), "--input_format", "txt", "--output_folder", str(out),
                           "--output_format", "files", "--processes_count", "1", "--thread_count", str(threads),
                           "--resize_mode", "no", "--disable_all_reencoding", "True", "--timeout", "10",
                           "--retries", "0", "--number_sample_per_shard", str(max(n, 1)), "--enable_wandb",
                           "False", "--distributor", "multiprocessing"], capture_output=True, text=True, env=env)
    seconds = time.perf_counter() - t0
    if proc.returncode != 0:
        raise SystemExit(f"img2dataset failed ({proc.returncode}): {proc.stderr[-2000:]}")
    stored = sum(1 for p in out.rglob("*.jpg"))
    shard = sum(json.loads(p.read_text())["duration"] for p in out.glob("*_stats.json"))
    return {"tool": "img2dataset", "seconds": seconds, "stored": stored, "failed": n - stored,
            "shard_seconds": shard}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=1000, help="URLs in the list")
    ap.add_argument("--latency", type=float, default=0.05, help="seconds the server waits per image request")
    ap.add_argument("--threads", type=int, default=32, help="download threads for both tools")
    ap.add_argument("--img2dataset", default="img2dataset", help="img2dataset executable")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    images = make_images(args.n, (320, 240))
    httpd = serve(images, args.latency)
    base = f"http://127.0.0.1:{httpd.server_address[1]}"
    rows = []
    with tempfile.TemporaryDirectory(prefix="bench-download-") as tmp:
        work = Path(tmp)
        rows.append(run_facecurate(base, args.n, args.threads, work))
        other = run_img2dataset(args.img2dataset, base, args.n, args.threads, work)
        if other:
            rows.append(other)
    httpd.shutdown()
    if len(rows) == 2:  # img2dataset's own shard timer leaves out its ~20 s of start-up: the stricter anchor
        rows.append({"tool": "img2dataset (shard time only)", "seconds": rows[1]["shard_seconds"],
                     "stored": rows[1]["stored"], "failed": rows[1]["failed"]})
    for r in rows:
        r["images_per_s"] = r["stored"] / r["seconds"]
    ratio = rows[0]["images_per_s"] / rows[1]["images_per_s"] if len(rows) > 1 else None
    strict = rows[0]["images_per_s"] / rows[2]["images_per_s"] if len(rows) > 2 else None
    if args.json:
        print(json.dumps({"n": args.n, "latency": args.latency, "threads": args.threads, "runs": rows,
                          "ratio": ratio, "ratio_vs_shard_time": strict}, indent=2))
        return
    print_table(f"download: {args.n} URLs, {args.latency * 1000:.0f} ms latency, {args.threads} threads, "
                f"{os.cpu_count()} CPUs", ["tool", "seconds", "stored", "failed", "images/s"],
                [[r["tool"], r["seconds"], r["stored"], r["failed"], r["images_per_s"]] for r in rows])
    if ratio is None:
        print("img2dataset not found: pass --img2dataset PATH to compare.")
    else:
        print(f"facecurate / img2dataset = {ratio:.2f}x end to end; {strict:.2f}x against img2dataset's shard "
              f"time alone (facecurate's figure keeps its start-up, search pages and catalog writes)")


if __name__ == "__main__":
    main()
