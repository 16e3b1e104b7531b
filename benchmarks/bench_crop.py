"""facecurate `crop` vs the plain facenet-pytorch loop, on the same photos, in one run.

The anchor is what people write first: ``MTCNN().detect(img)`` per PIL image, then facenet-pytorch's
``extract_face`` per face, saved to disk. facecurate runs its real ``crop`` stage (decode, batched
detection, FFHQ alignment, atomic writes, catalog) over a workspace holding the same photos.

    uv run python benchmarks/bench_crop.py                       # CPU, real photos from ../shared if present
    uv run python benchmarks/bench_crop.py --device cuda --batch-sizes 32,64,128 --resize 1024

Prints images/s for both and the ratio, and the ratio of the CPU time each used (process time, all threads:
steadier than wall time on a machine other jobs share); ``--json`` for benchmarks/run_all.py.

With ``--device cuda`` facecurate runs its torch pipeline (``crop.pipeline = "auto"``: faces/crop_device.py)
with ``crop.device_batch_size`` set to each batch size; ``--pipeline opencv|torch`` forces one on any device.
nvjpeg decodes only photos larger than ``--detect-max-side`` (default 1024, as the setting): ``--resize 2048``
(or ``--detect-max-side 640``) puts the GPU decoder in the measured path.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import DEMO, DEV, images_in, print_table

from facecurate.catalog import Catalog
from facecurate.faces.crop import CropOptions, run_crop
from facecurate.ingest import import_paths
from facecurate.workspace import init_workspace


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


def run_anchor(files: list[Path], out: Path, size: int, device: str) -> tuple[float, float, int]:
    from facenet_pytorch import MTCNN
    from facenet_pytorch.models.utils.detect_face import extract_face

    out.mkdir(parents=True)
    mtcnn = MTCNN(device=device)
    faces = 0
    t0, c0 = time.perf_counter(), time.process_time()
    for i, f in enumerate(files):
        img = Image.open(f).convert("RGB")
        boxes, _ = mtcnn.detect(img)
        if boxes is None:
            continue
        for j, box in enumerate(boxes):
            extract_face(img, box, image_size=size, save_path=str(out / f"{i}_{j}.jpg"))
            faces += 1
    return time.perf_counter() - t0, time.process_time() - c0, faces


def run_facecurate(files: list[Path], root: Path, size: int, device: str, batch_size: int, pipeline: str,
                   detect_max_side: int | None) -> tuple[float, float, int, str]:
    ws = init_workspace(root)
    with Catalog.open(ws.catalog_path) as catalog:
        import_paths(ws, catalog, files)  # import is its own stage; the timing below is `crop` alone
        opts = CropOptions.from_config(ws, size=size, device=device, batch_size=batch_size, pipeline=pipeline,
                                       device_batch_size=batch_size, detect_max_side=detect_max_side)
        from facecurate.faces import crop_device

        used = "torch" if crop_device.applies(opts) else "opencv"
        t0, c0 = time.perf_counter(), time.process_time()
        summary = run_crop(ws, catalog, opts)
        if device == "cuda":
            torch.cuda.synchronize()
        return time.perf_counter() - t0, time.process_time() - c0, summary.faces, used


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--photos", type=Path, nargs="*", help="folders of photos (default: ../shared/eval/dev)")
    ap.add_argument("--limit", type=int, default=200)
    ap.add_argument("--size", type=int, default=512)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--batch-sizes", default="32")
    ap.add_argument("--resize", type=int, default=None, help="resize every photo to this long side first")
    ap.add_argument("--pipeline", default="auto", choices=("auto", "opencv", "torch"),
                    help="crop.pipeline (auto: torch on CUDA, opencv on a CPU)")
    ap.add_argument("--detect-max-side", type=int, default=None, help="crop.detect_max_side (default: the setting)")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()

    photos = images_in(*args.photos) if args.photos else default_photos()
    rng = np.random.default_rng(0)
    photos = [photos[i] for i in rng.permutation(len(photos))[: args.limit]]
    with tempfile.TemporaryDirectory() as tmp:
        files = prepare(photos, Path(tmp) / "photos", args.resize)
        anchor_s, anchor_cpu, anchor_faces = run_anchor(files, Path(tmp) / "anchor", args.size, args.device)
        rows, results = [], []
        used = ""
        for bs in (int(b) for b in args.batch_sizes.split(",")):
            fc_s, fc_cpu, fc_faces, used = run_facecurate(files, Path(tmp) / f"ws{bs}", args.size, args.device, bs,
                                                          args.pipeline, args.detect_max_side)
            ratio = anchor_s / fc_s
            rows.append([bs, len(files) / anchor_s, len(files) / fc_s, ratio, anchor_cpu / fc_cpu, anchor_faces,
                         fc_faces])
            results.append({"batch_size": bs, "pipeline": used, "anchor_img_s": len(files) / anchor_s,
                            "facecurate_img_s": len(files) / fc_s, "ratio": ratio,
                            "anchor_cpu_s": anchor_cpu, "facecurate_cpu_s": fc_cpu, "cpu_ratio": anchor_cpu / fc_cpu})
    title = (f"crop: {len(files)} photos, {args.device}, {used} pipeline, torch threads {torch.get_num_threads()}, "
             f"size {args.size}" + (f", resized to {args.resize}px" if args.resize else ""))
    if args.json:
        print(json.dumps({"benchmark": "crop", "anchor": "facenet-pytorch MTCNN.detect loop + extract_face",
                          "images": len(files), "device": args.device, "results": results}))
    else:
        print_table(title, ["batch", "anchor img/s", "facecurate img/s", "ratio", "CPU-time ratio", "anchor faces",
                            "fc faces"], rows)
        print("anchor faces counts every detection (any probability); facecurate keeps the largest face "
              "with prob >= crop.min_prob per photo.")


if __name__ == "__main__":
    main()
