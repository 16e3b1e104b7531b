"""The anchor of bench_crop.py: what people write first with facenet-pytorch, as its own script.

``MTCNN().detect(img)`` per PIL image, then ``extract_face`` per face, saved to disk. Run as a process
(``python plain_mtcnn_loop.py PHOTOS OUT --size 512``) it is the whole-process contender; bench_crop.py also
calls :func:`run` in its own process for the in-process figure. Imports nothing from facecurate.
"""

from __future__ import annotations

import argparse
from pathlib import Path


def run(files: list[Path], out: Path, size: int, device: str = "cpu") -> int:
    """Detect and save every face of every photo; the number of faces saved."""
    from facenet_pytorch import MTCNN
    from facenet_pytorch.models.utils.detect_face import extract_face
    from PIL import Image

    out.mkdir(parents=True, exist_ok=True)
    mtcnn = MTCNN(device=device)
    faces = 0
    for i, f in enumerate(files):
        img = Image.open(f).convert("RGB")
        boxes, _ = mtcnn.detect(img)
        if boxes is None:
            continue
        for j, box in enumerate(boxes):
            extract_face(img, box, image_size=size, save_path=str(out / f"{i}_{j}.jpg"))
            faces += 1
    return faces


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("photos", type=Path, help="a folder of photos")
    ap.add_argument("out", type=Path)
    ap.add_argument("--size", type=int, default=512)
    ap.add_argument("--device", default="cpu")
    args = ap.parse_args()
    print(run(sorted(p for p in args.photos.iterdir() if p.is_file()), args.out, args.size, args.device))


if __name__ == "__main__":
    main()
