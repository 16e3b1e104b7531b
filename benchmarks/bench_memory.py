"""Peak memory of each stage (crawl, import, dedup, crop) on decompression bombs and on ordinary photos.

Each stage runs as the command a user types, in its own process, so its peak is its own:

* crawl:  ``facecurate crawl`` from a loopback Bing stand-in serving the files (private addresses allowed);
* import, dedup, crop: ``facecurate import`` of a folder holding the same files, then ``dedup`` and ``crop``
  on that workspace.

The sets: N all-zero 10,000 x 10,000 grayscale PNGs (100 MP each, ~97 KB on disk, each a little different so
none is a byte-duplicate of another; just under the default ``[media] max_pixels``), and ordinary photos
(the rules' dev photos when ../shared is present, else variants of the bundled demo photos).

Peak RSS is the larger of two readings: the stage process's own high-water mark (``VmHWM``, written by the
process itself as it exits; not ``ru_maxrss``, which on Linux also counts the parent's memory at the moment
it forked the stage) and the proportional set size (PSS) of the process and its children summed, sampled
every 20 ms (dedup fingerprints in forked worker processes, whose own memory adds up while the pages they
share with the parent count once). ``--python`` runs another checkout's environment on the same data,
for a before/after comparison:

    uv run python benchmarks/bench_memory.py --bombs 4,32 --ordinary 1000
    uv run python benchmarks/bench_memory.py --bombs 4 --ordinary 1000 --python /tmp/base/.venv/bin/python
"""

from __future__ import annotations

import argparse
import io
import json
import os
import random
import struct
import subprocess
import sys
import tempfile
import threading
import time
import zlib
from pathlib import Path
from typing import Any

from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import DEMO, DEV, images_in, print_table
from bench_download import serve

BOMB_SIDE = 10_000
STAGES = ("crawl", "import", "dedup", "crop")


def png_bomb(index: int, side: int = BOMB_SIDE) -> bytes:
    """An all-zero 8-bit grayscale PNG of side x side pixels; pixel (0, 0) holds ``index`` so each is distinct."""
    def chunk(kind: bytes, payload: bytes) -> bytes:
        return struct.pack(">I", len(payload)) + kind + payload + struct.pack(">I", zlib.crc32(kind + payload))

    z = zlib.compressobj(9)
    row = bytes(side + 1)  # filter byte 0, then the row
    first = b"\0" + bytes([index % 256, index // 256 % 256]) + bytes(side - 2)
    parts = [z.compress(first)] + [z.compress(row) for _ in range(side - 1)] + [z.flush()]
    ihdr = struct.pack(">IIBBBBB", side, side, 8, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", b"".join(parts)) + chunk(b"IEND", b"")


def ordinary_photos(n: int) -> list[bytes]:
    """N distinct ordinary photos: the dev photos as they are, then re-cut variants of them (a random
    90-100 % window, JPEG quality 90) until there are N; the demo photos stand in without ../shared."""
    sources = images_in(*(d for d in DEV.iterdir() if d.is_dir())) if DEV.is_dir() else []
    sources = sources or images_in(DEMO)
    rng = random.Random(0)
    out = [p.read_bytes() for p in sources[:n]]
    while len(out) < n:
        with Image.open(sources[len(out) % len(sources)]) as im:
            im = im.convert("RGB")
            w, h = im.size
            f = rng.uniform(0.9, 1.0)
            x, y = rng.randint(0, int(w * (1 - f))), rng.randint(0, int(h * (1 - f)))
            buf = io.BytesIO()
            im.crop((x, y, x + int(w * f), y + int(h * f))).save(buf, "JPEG", quality=90)
            out.append(buf.getvalue())
    return out


def _tree(pid: int) -> list[int]:
    pids, i = [pid], 0
    while i < len(pids):
        try:
            for task in os.listdir(f"/proc/{pids[i]}/task"):
                with open(f"/proc/{pids[i]}/task/{task}/children") as fh:
                    pids += [int(c) for c in fh.read().split()]
        except OSError:
            pass
        i += 1
    return pids


def _pss_kb(pid: int) -> int:
    """Proportional set size: pages a forked worker still shares with its parent count once over the tree."""
    try:
        with open(f"/proc/{pid}/smaps_rollup") as fh:
            return next((int(line.split()[1]) for line in fh if line.startswith("Pss:")), 0)
    except OSError:
        return 0


# Run as ``python -c HIGH_WATER <args>``: facecurate's command line, writing the process's VmHWM (its own peak,
# since exec) to the file $FACECURATE_BENCH_HWM as it exits, however it exits.
HIGH_WATER = """
import atexit, os, runpy, sys
def _peak():
    with open("/proc/self/status") as fh:
        kb = next(line.split()[1] for line in fh if line.startswith("VmHWM:"))
    with open(os.environ["FACECURATE_BENCH_HWM"], "w") as out:
        out.write(kb)
atexit.register(_peak)
sys.argv = ["facecurate", *sys.argv[1:]]
runpy.run_module("facecurate", run_name="__main__", alter_sys=True)
"""


def measure(python: str, args: list[str], env: dict[str, str]) -> dict[str, Any]:
    """Run ``facecurate args`` with ``python``; its wall time and peak memory in MB (see the module docstring)."""
    t0 = time.perf_counter()
    log = tempfile.TemporaryFile()  # noqa: SIM115 -- read back below, closed with the function's frame
    fd, hwm = tempfile.mkstemp(prefix="fc-hwm-")
    os.close(fd)
    # From a neutral folder: ``python -c`` puts the current folder first on sys.path, and a checkout there would
    # shadow the facecurate that ``python`` has installed (another checkout's, for --python).
    proc = subprocess.Popen([python, "-c", HIGH_WATER, *args], stdout=log, stderr=log, cwd=tempfile.gettempdir(),
                            env={**env, "FACECURATE_BENCH_HWM": hwm})
    peak_sum, done = 0, threading.Event()

    def sample() -> None:
        nonlocal peak_sum
        while not done.is_set():
            peak_sum = max(peak_sum, sum(_pss_kb(p) for p in _tree(proc.pid)))
            done.wait(0.02)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    proc.wait()
    seconds = time.perf_counter() - t0
    done.set()
    sampler.join()
    log.seek(0)
    out = log.read().decode(errors="replace")
    if proc.returncode != 0:
        raise SystemExit(f"facecurate {' '.join(args)} failed ({proc.returncode}):\n{out[-3000:]}")
    own = int(Path(hwm).read_text() or 0)
    Path(hwm).unlink()
    return {"seconds": seconds, "peak_mb": max(own, peak_sum) / 1024, "out": out}


def run_set(name: str, files: list[bytes], python: str, work: Path) -> list[dict[str, Any]]:
    folder = work / name / "files"
    folder.mkdir(parents=True)
    ext = "png" if files[0].startswith(b"\x89PNG") else "jpg"
    for i, data in enumerate(files):
        (folder / f"{i}.{ext}").write_bytes(data)
    env = {**os.environ, "FACECURATE_NO_COLOR": "1", "NO_COLOR": "1"}
    server = serve(files, 0.0)
    base = f"http://127.0.0.1:{server.server_address[1]}"
    rows = []
    try:
        crawl_ws, import_ws = work / name / "crawl-ws", work / name / "import-ws"
        for ws in (crawl_ws, import_ws):
            measure(python, ["init", str(ws)], env)
        (crawl_ws / "facecurate.toml").write_text(  # every other setting at its default
            f'[crawl]\npage_delay = 0.0\nallow_private = true\nlimit = {len(files)}\n'
            f'contact = "bench@example.org"\n[engines.bing]\nbase_url = "{base}"\n', encoding="utf-8")
        measure(python, ["queries", "add", "memory bench", "-w", str(crawl_ws)], env)
        steps = {"crawl": (crawl_ws, ["crawl", "--engine", "bing", "--limit", str(len(files))]),
                 "import": (import_ws, ["import", str(folder)]), "dedup": (import_ws, ["dedup"]),
                 "crop": (import_ws, ["crop"])}
        for stage in STAGES:
            ws, args = steps[stage]
            got = measure(python, [*args, "-w", str(ws)], env)
            rows.append({"set": name, "stage": stage, "files": len(files), "peak_mb": round(got["peak_mb"], 1),
                         "seconds": round(got["seconds"], 2)})
            print(f"  {name:>14} {stage:>6}: peak {got['peak_mb']:8.1f} MB  {got['seconds']:7.2f} s",
                  file=sys.stderr, flush=True)
    finally:
        server.shutdown()
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--bombs", default="4,32", help="comma list of bomb-set sizes (0: none)")
    ap.add_argument("--ordinary", type=int, default=1000, help="ordinary photos in the third set (0: none)")
    ap.add_argument("--python", default=sys.executable, help="interpreter of the facecurate checkout to measure")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    rows: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="fc-mem-") as tmp:
        work = Path(tmp)
        counts = [int(c) for c in args.bombs.split(",") if c.strip() and int(c)]
        bombs = [png_bomb(i) for i in range(max(counts, default=0))]
        for count in counts:
            rows += run_set(f"{count} x 100 MP", bombs[:count], args.python, work)
        if args.ordinary:
            rows += run_set(f"{args.ordinary} photos", ordinary_photos(args.ordinary), args.python, work)
    if args.json:
        print(json.dumps({"python": args.python, "rows": rows}, indent=1))
        return
    print_table(f"peak RSS per stage ({args.python})", ["set", "stage", "files", "peak MB", "seconds"],
                [[r["set"], r["stage"], r["files"], r["peak_mb"], r["seconds"]] for r in rows])


if __name__ == "__main__":
    main()
