"""The torch alignment (faces/align_torch.py) against align.py's OpenCV crops: grey-level MAD per photo.

    uv run python benchmarks/bench_align_torch.py                 # demo photos, cuts through faces, dev photos
    uv run python benchmarks/bench_align_torch.py --sizes 256 --json

On real photos (facecurate/demo_data; three cuts through demo faces so their crops need padding; and
../shared/eval/dev's wink and full-resolution photos when present, read in place, for measurement only), with
landmarks from facecurate's MTCNN: for each crop side and padding mode, the mean absolute difference between
the torch crop (on the CPU) and align_face's, in grey levels over every pixel and channel (the bar is 1.0),
and its 99.9th percentile. On a CUDA machine also the CUDA crop against the CPU torch crop. Last, the process
time per crop of each, summed over the photos: a ratio, as the machine's load allows.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from _common import DEMO, DEV, images_in, print_wide_table

from facecurate import media
from facecurate.faces.align import align_face, place_face
from facecurate.faces.align_torch import align_faces, image_tensor
from facecurate.faces.detect import BatchedDetector
from tests.test_align_torch import _cut_through


def cases(limit_dev: int) -> list[tuple[str, np.ndarray, np.ndarray]]:
    paths = images_in(DEMO)
    dev = images_in(DEV / "wink")[:limit_dev] + images_in(DEV / "eyes_closed_vs_open_fullres_small")
    images = [media.load_rgb(p, 10**9, 10**9).pixels for p in paths + dev]
    detector = BatchedDetector(device="cpu", batch_size=8, max_side=1024, min_face_size=40)
    out = []
    for path, pixels, found in zip(paths + dev, images, detector.detect(images), strict=True):
        if found:
            out.append((("dev/" if path in dev else "") + path.name, pixels, found[0].landmarks))
    for name, where in (("obama.jpg", "left"), ("biden.jpg", "top"), ("obama2.jpg", "right")):
        pixels, lm = next((p, lm) for n, p, lm in out if n == name)
        cut, moved = _cut_through(pixels, lm, where)
        out.append((f"{name}@{where}", cut, moved))
    return out


def grey_mad(a: np.ndarray, b: np.ndarray) -> tuple[float, float]:
    d = np.abs(a.astype(np.int16) - b.astype(np.int16))
    return float(d.mean()), float(np.percentile(d, 99.9))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sizes", default="128,512,1024")
    ap.add_argument("--dev-limit", type=int, default=8, help="wink photos from ../shared (all full-res ones)")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    sizes = [int(s) for s in args.sizes.split(",")]
    cuda = torch.cuda.is_available()
    rows, results = [], []
    cpu_torch = cpu_cv = 0.0
    for name, pixels, lm in cases(args.dev_limit):
        h, w = pixels.shape[:2]
        row: list[object] = [name, f"{w}x{h}"]
        for size in sizes:
            for padding in ("reflect_blur", "constant"):
                place = place_face(lm, w, h, size)
                c0 = time.process_time()
                ref = align_face(pixels, lm, size=size, padding=padding).crop  # type: ignore[arg-type]
                c1 = time.process_time()
                got = align_faces(image_tensor(pixels), [place], size, padding)[0]  # type: ignore[arg-type]
                c2 = time.process_time()
                cpu_cv, cpu_torch = cpu_cv + c1 - c0, cpu_torch + c2 - c1
                mad, p999 = grey_mad(got.permute(1, 2, 0).numpy(), ref)
                rec = {"photo": name, "size": size, "padding": padding, "oob": round(place.oob_fraction, 3),
                       "mad": round(mad, 3), "p99.9": p999}
                if cuda:
                    on_gpu = align_faces(image_tensor(pixels, "cuda"), [place], size, padding)[0].cpu()  # type: ignore[arg-type]
                    rec["cuda_vs_cpu_mad"] = round(grey_mad(on_gpu.numpy(), got.numpy())[0], 3)
                results.append(rec)
                row.append(f"{mad:.3f}" + (f"/{rec['cuda_vs_cpu_mad']:.3f}" if cuda else ""))
        row.append(f"{place.oob_fraction:.2f}")
        rows.append(row)
    worst = max(r["mad"] for r in results)
    if args.json:
        print(json.dumps({"benchmark": "align_torch", "cases": results, "worst_mad": worst,
                          "cpu_s_torch": cpu_torch, "cpu_s_opencv": cpu_cv}))
        return
    cols = ["photo", "size"] + [f"{s} {'refl' if p == 'reflect_blur' else 'const'}" for s in sizes
                                for p in ("reflect_blur", "constant")] + ["oob"]
    print_wide_table("torch vs OpenCV crop, grey-level MAD" + (" (/ CUDA vs CPU torch)" if cuda else ""), cols,
                     rows)
    print(f"worst MAD {worst:.3f} (bar 1.0); worst 99.9th percentile {max(r['p99.9'] for r in results):.0f}; "
          f"process time: torch on CPU {cpu_torch:.1f} s, OpenCV {cpu_cv:.1f} s "
          f"(torch threads {torch.get_num_threads()})")


if __name__ == "__main__":
    main()
