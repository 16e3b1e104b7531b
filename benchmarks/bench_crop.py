"""facecurate `crop` vs the plain facenet-pytorch loop, on the same photos, in one run.

The anchor is what people write first (benchmarks/plain_mtcnn_loop.py): ``MTCNN().detect(img)`` per PIL image,
then facenet-pytorch's ``extract_face`` per face, saved to disk. facecurate runs its real ``crop`` stage (decode,
batched detection, FFHQ alignment, atomic writes, catalog) over a workspace holding the same photos.

    uv run python benchmarks/bench_crop.py                       # CPU, real photos from ../shared if present
    uv run python benchmarks/bench_crop.py --large-faces         # 100 photos, the face filling a 768 px frame
    uv run python benchmarks/bench_crop.py --workers 1,2,8,16    # images/s per crop.workers value
    uv run python benchmarks/bench_crop.py --device cuda --batch-sizes 32,64,128 --resize 1024 --repeats 0

Two figures for each contender: in-process (the anchor's loop and ``run_crop`` timed inside this process,
models loaded) and whole processes (``python plain_mtcnn_loop.py`` against ``python -m facecurate crop``,
start-up and imports included; the median of ``--repeats`` runs, interleaved). Each prints images/s, the ratio,
and the ratio of the CPU time used (all threads and worker processes: steadier than wall time on a machine
other jobs share); ``--json`` for benchmarks/run_all.py.

With ``--device cuda`` facecurate runs its torch pipeline (``crop.pipeline = "auto"``: faces/crop_device.py)
with ``crop.device_batch_size`` set to each batch size; ``--pipeline opencv|torch`` forces one on any device.
nvjpeg decodes only photos larger than ``--detect-max-side`` (default 1024, as the setting): ``--resize 2048``
(or ``--detect-max-side 640``) puts the GPU decoder in the measured path.
"""

from __future__ import annotations

import argparse
import json
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import DEMO, DEV, ROOT, images_in, print_table, print_wide_table
from plain_mtcnn_loop import run as run_plain_loop

from facecurate.catalog import Catalog
from facecurate.faces.crop import CropOptions, run_crop
from facecurate.ingest import import_paths
from facecurate.workspace import init_workspace

LARGE_SIDE = 768    # --large-faces: the frame's side
FACE_SHARE = 0.7    # and the face box's share of it


def children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def default_photos() -> list[Path]:
    """Real face photos: UTKFace 200x200 plus full-resolution photos; the bundled demo photos otherwise."""
    real = images_in(DEV / "ordinary_faces") + images_in(DEV / "wink", DEV / "eyes_closed_vs_open_fullres_small")
    return real or images_in(DEMO) * 8


def prepare(photos: list[Path], folder: Path, resize: int | None) -> list[Path]:
    """Copy (or resize to a long side of ``resize``) the photos into one folder both contenders read."""
    folder.mkdir(parents=True)
    out = []
    for i, p in enumerate(photos):
        target = folder / f"{i:05d}{p.suffix.lower()}"
        if resize:
            im = Image.open(p).convert("RGB")
            scale = resize / max(im.size)
            im.resize((round(im.width * scale), round(im.height * scale)), Image.LANCZOS).save(
                target.with_suffix(".jpg"), quality=95)
            target = target.with_suffix(".jpg")
        else:
            shutil.copyfile(p, target)
        out.append(target)
    return out


def prepare_large_faces(photos: list[Path], folder: Path, count: int) -> list[Path]:
    """Photos where one face fills a LARGE_SIDE frame: a square around the largest face found (MTCNN's own
    face sizes), FACE_SHARE of its side, resized to LARGE_SIDE. Full-resolution photos first, then the rest."""
    from facecurate.faces.detect import BatchedDetector

    folder.mkdir(parents=True)
    detector = BatchedDetector(device="cpu", batch_size=8, max_side=1024, min_face_size=40)
    out: list[Path] = []
    sizes = {p: Image.open(p).size for p in photos}
    for p in sorted(photos, key=lambda p: -sizes[p][0] * sizes[p][1]):
        im = Image.open(p).convert("RGB")
        found = detector.detect([np.asarray(im)])[0]
        if not found or found[0].prob < 0.95:
            continue
        x1, y1, x2, y2 = found[0].box
        side = min(max(x2 - x1, y2 - y1) / FACE_SHARE, im.width, im.height)
        cx = min(max((x1 + x2) / 2, side / 2), im.width - side / 2)
        cy = min(max((y1 + y2) / 2, side / 2), im.height - side / 2)
        square = im.crop((round(cx - side / 2), round(cy - side / 2), round(cx + side / 2), round(cy + side / 2)))
        target = folder / f"{len(out):05d}.jpg"
        square.resize((LARGE_SIDE, LARGE_SIDE), Image.Resampling.LANCZOS).save(target, quality=95)
        out.append(target)
        if len(out) == count:
            break
    return out


def run_anchor(files: list[Path], out: Path, size: int, device: str) -> tuple[float, float, int]:
    from facenet_pytorch import MTCNN

    MTCNN(device=device)  # the imports and first model load are not part of the in-process figure
    t0, c0 = time.perf_counter(), time.process_time()
    faces = run_plain_loop(files, out, size, device)
    return time.perf_counter() - t0, time.process_time() - c0, faces


def workspace_with(files: list[Path], root: Path) -> Path:
    ws = init_workspace(root)
    with Catalog.open(ws.catalog_path) as catalog:
        import_paths(ws, catalog, files)  # import is its own stage; the timings are `crop` alone
    return root


def run_facecurate(root: Path, size: int, device: str, batch_size: int, workers: int | None = None,
                   pipeline: str | None = None, detect_max_side: int | None = None) -> tuple[float, float, int, int]:
    """In-process ``run_crop`` over every photo of the workspace (``--redo``): seconds, CPU seconds (this
    process and its workers), faces, worker processes used. On CUDA the torch pipeline
    (faces/crop_device.py) runs with ``crop.device_batch_size`` = ``batch_size``."""
    ws = init_workspace(root)
    with Catalog.open(ws.catalog_path) as catalog:
        opts = CropOptions.from_config(ws, size=size, device=device, batch_size=batch_size, workers=workers,
                                       pipeline=pipeline, device_batch_size=batch_size,
                                       detect_max_side=detect_max_side)
        t0, c0, k0 = time.perf_counter(), time.process_time(), children_cpu()
        summary = run_crop(ws, catalog, opts, redo=True)
        if device == "cuda":
            torch.cuda.synchronize()
        cpu = time.process_time() - c0 + children_cpu() - k0
        return time.perf_counter() - t0, cpu, summary.faces, summary.workers


def timed_process(cmd: list[str]) -> tuple[float, float]:
    """Wall and CPU seconds (the process, its threads and its own children) of one command."""
    t0, k0 = time.perf_counter(), children_cpu()
    done = subprocess.run(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)  # no progress bars
    if done.returncode:
        raise SystemExit(f"{' '.join(cmd)} failed:\n{done.stderr}")
    return time.perf_counter() - t0, children_cpu() - k0


def whole_processes(folder: Path, root: Path, out: Path, args: argparse.Namespace) -> dict[str, float]:
    """Median wall and CPU seconds of ``--repeats`` interleaved runs of each contender as its own process."""
    anchor = [sys.executable, str(ROOT / "benchmarks" / "plain_mtcnn_loop.py"), str(folder), str(out),
              "--size", str(args.size), "--device", args.device]
    ours = [sys.executable, "-m", "facecurate", "crop", "-w", str(root), "--redo", "--size", str(args.size),
            "--device", args.device, "--batch-size", args.batch_sizes.split(",")[0]]
    runs: dict[str, list[tuple[float, float]]] = {"anchor": [], "facecurate": []}
    for _ in range(args.repeats):
        runs["anchor"].append(timed_process(anchor))
        runs["facecurate"].append(timed_process(ours))
    return {f"{name}_{what}": statistics.median(r[k] for r in got)
            for name, got in runs.items() for k, what in ((0, "s"), (1, "cpu_s"))}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--photos", type=Path, nargs="*", help="folders of photos (default: ../shared/eval/dev)")
    ap.add_argument("--limit", type=int, default=200)
    ap.add_argument("--size", type=int, default=512)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--batch-sizes", default="32")
    ap.add_argument("--resize", type=int, default=None, help="resize every photo to this long side first")
    ap.add_argument("--large-faces", action="store_true",
                    help=f"100 photos (at most --limit) where one face fills a {LARGE_SIDE} px frame")
    ap.add_argument("--repeats", type=int, default=3, help="whole-process runs of each contender (0: none)")
    ap.add_argument("--workers", default="", help="crop.workers values to time in-process, e.g. 1,2,8,16")
    ap.add_argument("--pipeline", default=None, choices=("auto", "opencv", "torch"),
                    help="crop.pipeline (default: the setting; auto is torch on CUDA, opencv on a CPU)")
    ap.add_argument("--detect-max-side", type=int, default=None, help="crop.detect_max_side (default: the setting)")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()

    photos = images_in(*args.photos) if args.photos else default_photos()
    rng = np.random.default_rng(0)
    photos = [photos[i] for i in rng.permutation(len(photos))]
    kind = "large-face" if args.large_faces else "mixed"
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp) / "photos"
        files = (prepare_large_faces(photos, folder, min(args.limit, 100)) if args.large_faces
                 else prepare(photos[: args.limit], folder, args.resize))
        root = workspace_with(files, Path(tmp) / "ws")
        anchor_s, anchor_cpu, anchor_faces = run_anchor(files, Path(tmp) / "anchor", args.size, args.device)
        rows, results = [], []
        for bs in (int(b) for b in args.batch_sizes.split(",")):
            fc_s, fc_cpu, fc_faces, used = run_facecurate(root, args.size, args.device, bs, None, args.pipeline,
                                                          args.detect_max_side)
            ratio = anchor_s / fc_s
            rows.append([f"in-process, batch {bs}", len(files) / anchor_s, len(files) / fc_s, ratio,
                         anchor_cpu / fc_cpu, anchor_faces, fc_faces])
            results.append({"batch_size": bs, "workers": used, "anchor_img_s": len(files) / anchor_s,
                            "facecurate_img_s": len(files) / fc_s, "ratio": ratio, "anchor_cpu_s": anchor_cpu,
                            "facecurate_cpu_s": fc_cpu, "cpu_ratio": anchor_cpu / fc_cpu})
        whole = whole_processes(folder, root, Path(tmp) / "anchor_proc", args) if args.repeats else {}
        if whole:
            whole["ratio"] = whole["anchor_s"] / whole["facecurate_s"]
            whole["cpu_ratio"] = whole["anchor_cpu_s"] / whole["facecurate_cpu_s"]
            rows.append([f"processes, median of {args.repeats}", len(files) / whole["anchor_s"],
                         len(files) / whole["facecurate_s"], whole["ratio"], whole["cpu_ratio"], "", ""])
        scaling = []
        for w in (int(v) for v in args.workers.split(",")) if args.workers else ():
            fc_s, fc_cpu, _, used = run_facecurate(root, args.size, args.device, int(args.batch_sizes.split(",")[0]),
                                                   workers=w)
            scaling.append({"workers": used, "img_s": len(files) / fc_s, "cpu_s": fc_cpu})
    title = (f"crop: {len(files)} {kind} photos, {args.device}, {usable()} usable cores, torch threads "
             f"{torch.get_num_threads()}, size {args.size}" + (f", resized to {args.resize}px" if args.resize else ""))
    if args.json:
        print(json.dumps({"benchmark": "crop", "anchor": "facenet-pytorch MTCNN.detect loop + extract_face",
                          "photos": kind, "images": len(files), "device": args.device, "results": results,
                          "whole_process": whole, "scaling": scaling}))
        return
    print_wide_table(title, ["run", "anchor img/s", "facecurate img/s", "ratio", "CPU-time ratio", "anchor faces",
                        "fc faces"], rows, width=120)
    print("anchor faces counts every detection (any probability); facecurate keeps the largest face "
          f"with prob >= crop.min_prob per photo. In-process facecurate used {results[0]['workers']} worker "
          "processes (crop.workers = 0, automatic).")
    if scaling:
        print_table("facecurate in-process, by crop.workers (0: threads of one process)",
                    ["workers", "img/s", "CPU s"], [[s["workers"], s["img_s"], s["cpu_s"]] for s in scaling])


def usable() -> int:
    from facecurate.faces.crop_workers import usable_cpus

    return usable_cpus()


if __name__ == "__main__":
    main()
