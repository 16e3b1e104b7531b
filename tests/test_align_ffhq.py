"""align_face against the published FFHQ script (tests/ffhq_reference.py, a transcription of its formulas) on
real photos: ``alignment="ffhq"`` reproduces its pixels, the default mode its sharpness."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest
from PIL import Image

from facecurate.faces.align import align_face, ffhq_quad
from facecurate.faces.detect import BatchedDetector
from tests.ffhq_reference import reference_align

ROOT = Path(__file__).resolve().parents[1]
DEMO = ROOT / "facecurate" / "demo_data"
DEV = ROOT.parent / "shared" / "eval" / "dev"  # research-only, read in place; absent on most checkouts


def _faces(paths: list[Path]) -> list[tuple[str, np.ndarray, np.ndarray]]:
    imgs = [np.asarray(Image.open(p).convert("RGB")) for p in paths]
    det = BatchedDetector(device="cpu", batch_size=8, max_side=1024, min_face_size=40)
    return [(p.name, img, d[0].landmarks) for p, img, d in zip(paths, imgs, det.detect(imgs), strict=True) if d]


@pytest.fixture(scope="module")
def demo_faces() -> list[tuple[str, np.ndarray, np.ndarray]]:
    return _faces(sorted(DEMO.glob("*.jpg")))


def _grey(a: np.ndarray) -> np.ndarray:
    return cv2.cvtColor(a, cv2.COLOR_RGB2GRAY).astype(np.float32)


def _sharpness(a: np.ndarray) -> float:
    return float(np.abs(cv2.Laplacian(_grey(a), cv2.CV_32F)).mean())


def _check_ffhq_mode(faces: list[tuple[str, np.ndarray, np.ndarray]], size: int) -> None:
    for name, img, lm in faces:
        mine = align_face(img, lm, size, alignment="ffhq").crop
        mad = float(np.abs(_grey(mine) - _grey(reference_align(img, lm, size))).mean())
        assert mad <= 1.0, f"{name} at {size}: ffhq mode is {mad:.2f} grey levels from the script"


@pytest.mark.parametrize("size", [128, 512])
def test_ffhq_mode_reproduces_the_script_on_demo_photos(demo_faces, size: int) -> None:
    assert len(demo_faces) >= 5  # including obama_partial_face, whose quad leaves the photo (padding)
    _check_ffhq_mode(demo_faces, size)


def test_ffhq_mode_reproduces_the_script_on_dev_photos() -> None:
    if not DEV.is_dir():
        pytest.skip("../shared/eval/dev is absent")
    paths = sorted((DEV / "wink" / "wink_one_eye_closed").glob("*.jpg"))[:6]
    paths += sorted((DEV / "eyes_occluded" / "sunglasses").glob("*"))
    _check_ffhq_mode(_faces(paths), 256)


@pytest.mark.parametrize("size", [128, 256, 512])
def test_default_mode_is_as_sharp_as_the_script(demo_faces, size: int) -> None:
    ratios = []
    for _, img, lm in demo_faces:
        quad = ffhq_quad(lm)
        if np.hypot(*(quad[3] - quad[0])) > size:  # the bar: faces larger than the crop
            ratios.append(_sharpness(align_face(img, lm, size).crop) / _sharpness(reference_align(img, lm, size)))
    assert ratios and float(np.mean(ratios)) >= 0.95, ratios


def test_alignment_mode_is_checked(demo_faces) -> None:
    _, img, lm = demo_faces[0]
    with pytest.raises(ValueError, match="alignment must be one of"):
        align_face(img, lm, 64, alignment="bicubic")  # type: ignore[arg-type]
