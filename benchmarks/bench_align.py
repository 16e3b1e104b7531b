"""Sharpness and fidelity of align_face against a transcription of FFHQ's published script (tests/ffhq_reference).

    uv run python benchmarks/bench_align.py

On real photos (facecurate/demo_data, and ../shared/eval/dev's larger photos when present, read in place, for
measurement only): the five points come from facecurate's MTCNN, then for every crop side where the face's
quad is larger than the crop, the mean |Laplacian| of each mode's crop divided by the script's (>= 0.95 is
the issue's bar: the old area-shrink + bilinear-at-1:1 path gave 0.72-0.76), the grey-level MAD between each
mode's crop and the script's, and the time per crop. Ratios only; no timings in tests.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import cv2
import numpy as np
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from _common import DEMO, DEV, images_in, print_wide_table

from facecurate.faces.align import align_face, ffhq_quad
from facecurate.faces.detect import BatchedDetector
from tests.ffhq_reference import reference_align

SIZES = (128, 256, 512, 1024)


def sharpness(crop: np.ndarray) -> float:
    grey = cv2.cvtColor(crop, cv2.COLOR_RGB2GRAY).astype(np.float32)
    return float(np.abs(cv2.Laplacian(grey, cv2.CV_32F)).mean())


def grey_mad(a: np.ndarray, b: np.ndarray) -> float:
    ga, gb = (cv2.cvtColor(x, cv2.COLOR_RGB2GRAY).astype(np.float32) for x in (a, b))
    return float(np.abs(ga - gb).mean())


def photos() -> list[tuple[str, np.ndarray, np.ndarray]]:
    paths = images_in(DEMO) + [p for p in images_in(DEV / "wink", DEV / "eyes_closed_vs_open_fullres_small",
                                                     DEV / "eyes_occluded")]
    imgs = [np.asarray(Image.open(p).convert("RGB")) for p in paths]
    det = BatchedDetector(device="cpu", batch_size=8, max_side=1024, min_face_size=40)
    return [(p.name, img, d[0].landmarks) for p, img, d in zip(paths, imgs, det.detect(imgs), strict=True) if d]


def main() -> None:
    faces = photos()
    rows = []
    for size in SIZES:
        ratios: dict[str, list[float]] = {"default": [], "ffhq": []}
        mads: dict[str, list[float]] = {"default": [], "ffhq": []}
        secs = {"default": 0.0, "ffhq": 0.0, "script": 0.0}
        for _, img, lm in faces:
            quad = ffhq_quad(lm)
            if np.hypot(*(quad[3] - quad[0])) <= size:
                continue
            t = time.perf_counter()
            ref = reference_align(img, lm, size)
            secs["script"] += time.perf_counter() - t
            for mode in ("default", "ffhq"):
                t = time.perf_counter()
                crop = align_face(img, lm, size, alignment=mode).crop  # type: ignore[arg-type]
                secs[mode] += time.perf_counter() - t
                ratios[mode].append(sharpness(crop) / sharpness(ref))
                mads[mode].append(grey_mad(crop, ref))
        n = len(ratios["default"])
        if not n:
            continue
        rows.append([size, n, float(np.mean(ratios["default"])), float(np.min(ratios["default"])),
                     float(np.mean(ratios["ffhq"])), float(np.min(ratios["ffhq"])),
                     float(np.mean(mads["default"])), float(np.mean(mads["ffhq"])), float(np.max(mads["ffhq"])),
                     secs["default"] / secs["script"], secs["ffhq"] / secs["script"]])
    print_wide_table(f"align_face vs the FFHQ script transcription ({len(faces)} faces; face larger than the crop)",
                ["size", "n", "sharp default", "min", "sharp ffhq", "min", "MAD default", "MAD ffhq",
                 "max MAD ffhq", "time default/script", "time ffhq/script"], rows)


if __name__ == "__main__":
    main()
