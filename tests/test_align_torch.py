"""The torch alignment (faces/align_torch.py) against align.py's OpenCV crops, on real photos and real MTCNN
landmarks: within 1.0 grey level mean absolute difference, padded faces included; its resampling tables
against the libraries they restate; and, on a CUDA machine, CUDA against the CPU."""

from __future__ import annotations

import cv2
import numpy as np
import pytest
import torch
from PIL import Image

from facecurate import media
from facecurate.faces import align_torch
from facecurate.faces.align import align_face, place_face
from facecurate.faces.align_torch import align_faces, image_tensor
from facecurate.faces.detect import BatchedDetector
from tests.conftest import DEV

MAD_LIMIT = 1.0  # grey levels, mean over every pixel and channel of a crop (issue 16)
DEMO = ("obama.jpg", "biden.jpg", "astronaut.jpg", "obama_partial_face.jpg", "obama2.jpg", "obama3.jpg")


def _cut_through(pixels: np.ndarray, landmarks: np.ndarray, where: str) -> tuple[np.ndarray, np.ndarray]:
    """The photo cut through the face, so its crop needs padding on that side; landmarks moved along."""
    lm = np.asarray(landmarks, dtype=float)
    x = int(lm[2, 0])  # the nose
    if where == "left":
        return np.ascontiguousarray(pixels[:, x - 10:]), lm - [x - 10, 0]
    if where == "top":
        top = int(lm[:2, 1].min()) - 5  # just above the eyes: the forehead and hair are padding
        return np.ascontiguousarray(pixels[top:]), lm - [0, top]
    return np.ascontiguousarray(pixels[:, : x + 10]), lm  # right


@pytest.fixture(scope="module")
def cases() -> list[tuple[str, np.ndarray, np.ndarray]]:
    """(name, photo, landmarks): the demo photos and three cuts through faces, landmarks from our MTCNN."""
    from facecurate.demo import DEMO_DATA

    photos = [media.load_rgb(DEMO_DATA / n, 10**9, 10**9).pixels for n in DEMO]
    detector = BatchedDetector(device="cpu", batch_size=8, max_side=1024, min_face_size=40)
    out = []
    for name, pixels, found in zip(DEMO, photos, detector.detect(photos), strict=True):
        assert found, name
        out.append((name, pixels, found[0].landmarks))
    for name, where in (("obama.jpg", "left"), ("biden.jpg", "top"), ("obama2.jpg", "right")):
        pixels, lm = next((p, lm) for n, p, lm in out if n == name)
        cut, moved = _cut_through(pixels, lm, where)
        out.append((f"{name}@{where}", cut, moved))
    return out


def _mad(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.abs(a.astype(np.int16) - b.astype(np.int16)).mean())


@pytest.mark.parametrize("padding", ["reflect_blur", "constant"])
@pytest.mark.parametrize("size", [128, 512])  # 128: shrunk with Lanczos first; 512: the quad is warped directly
def test_torch_crops_match_opencv_within_a_grey_level(cases, size: int, padding: str):
    padded = 0
    for name, pixels, lm in cases:
        reference = align_face(pixels, lm, size=size, padding=padding)  # type: ignore[arg-type]
        place = place_face(lm, pixels.shape[1], pixels.shape[0], size)
        crop = align_faces(image_tensor(pixels), [place], size, padding)[0].permute(1, 2, 0).numpy()
        assert crop.shape == reference.crop.shape
        assert _mad(crop, reference.crop) <= MAD_LIMIT, name
        # a local error (a seam, a shifted padding band) would hide in the mean: bound the tail too
        assert np.percentile(np.abs(crop.astype(int) - reference.crop.astype(int)), 99.9) <= 4, name
        padded += reference.oob_fraction > 0.05
    assert padded >= 3  # the partial face and the cuts really exercise the padding


def test_several_faces_of_one_photo_in_one_call(cases):
    _, pixels, lm = cases[0]
    places = [place_face(lm, pixels.shape[1], pixels.shape[0], 64, headroom=h) for h in (0.0, 0.3, 0.6)]
    crops = align_faces(image_tensor(pixels), places, 64, "reflect_blur")
    assert crops.shape == (3, 3, 64, 64) and crops.dtype == torch.uint8
    for crop, h in zip(crops, (0.0, 0.3, 0.6), strict=True):
        reference = align_face(pixels, lm, size=64, headroom=h).crop
        assert _mad(crop.permute(1, 2, 0).numpy(), reference) <= MAD_LIMIT


def test_dev_photos_match_opencv():
    folder = DEV / "eyes_closed_vs_open_fullres_small"
    if not folder.is_dir():
        pytest.skip(f"{folder} is absent (research-only photos live beside the repository, not in it)")
    photos = sorted(p for p in (DEV / "wink").rglob("*") if p.suffix.lower() in (".jpg", ".jpeg", ".png"))[:8]
    photos += sorted(p for p in folder.rglob("*") if p.suffix.lower() in (".jpg", ".jpeg", ".png"))
    images = [media.load_rgb(p, 10**9, 10**9).pixels for p in photos]
    detector = BatchedDetector(device="cpu", batch_size=8, max_side=1024, min_face_size=40)
    compared = 0
    for path, pixels, found in zip(photos, images, detector.detect(images), strict=True):
        for det in found[:1]:
            place = place_face(det.landmarks, pixels.shape[1], pixels.shape[0], 256)
            crop = align_faces(image_tensor(pixels), [place], 256)[0].permute(1, 2, 0).numpy()
            assert _mad(crop, align_face(pixels, det.landmarks, size=256).crop) <= MAD_LIMIT, path.name
            compared += 1
    assert compared >= 10


def test_a_quad_outside_the_photo_is_refused_like_opencv():
    pixels = np.zeros((100, 100, 3), np.uint8)
    lm = np.array([[300.0, 300], [340, 300], [320, 320], [305, 340], [335, 340]])
    with pytest.raises(ValueError, match="entirely outside"):
        align_face(pixels, lm, size=64)
    with pytest.raises(ValueError, match="entirely outside"):
        align_faces(image_tensor(pixels), [place_face(lm, 100, 100, 64)], 64)


def test_image_must_be_a_chw_uint8_tensor():
    with pytest.raises(ValueError, match=r"\(3, H, W\) uint8"):
        align_faces(torch.zeros((10, 10, 3), dtype=torch.uint8), [], 64)


# The tables restate Pillow's and OpenCV's filters; each is checked against its library on random pixels.
@pytest.mark.parametrize("n_in,n_out", [(300, 128), (97, 40), (64, 64), (50, 120)])
def test_lanczos_table_is_pillows_resize(n_in: int, n_out: int):
    rng = np.random.default_rng(n_in)
    img = rng.integers(0, 256, (31, n_in, 3), dtype=np.uint8)
    ref = np.asarray(Image.fromarray(img).resize((n_out, 31), Image.Resampling.LANCZOS)).astype(int)
    got = align_torch._resize(image_tensor(img).float(), align_torch._lanczos_table, n_out, 31)
    assert np.abs(got.permute(1, 2, 0).numpy().astype(int) - ref).max() <= 1  # Pillow's fixed-point rounding


@pytest.mark.parametrize("n_in,n_out", [(300, 128), (97, 40), (100, 25)])
def test_area_table_is_cv2_inter_area(n_in: int, n_out: int):
    img = np.random.default_rng(n_in).random((n_in, n_in), dtype=np.float32) * 255
    ref = cv2.resize(img, (n_out, n_out), interpolation=cv2.INTER_AREA)
    got = align_torch._resize(torch.from_numpy(img), align_torch._area_table, n_out, n_out, rounded=False)
    assert np.abs(got.numpy() - ref).max() < 1e-3


def test_linear_table_is_cv2_inter_linear():
    img = np.random.default_rng(1).random((23, 37), dtype=np.float32) * 255
    ref = cv2.resize(img, (111, 70), interpolation=cv2.INTER_LINEAR)
    got = align_torch._resize(torch.from_numpy(img), align_torch._linear_table, 111, 70, rounded=False)
    assert np.abs(got.numpy() - ref).max() < 1e-3


@pytest.mark.parametrize("sigma", [0.8, 3.3, 9.0])
def test_gaussian_table_is_cv2_gaussian_blur(sigma: float):
    img = np.random.default_rng(2).random((40, 57), dtype=np.float32) * 255
    ref = cv2.GaussianBlur(img, (0, 0), sigmaX=sigma)
    got = align_torch._blur(torch.from_numpy(img), sigma)
    assert np.abs(got.numpy() - ref).max() < 1e-2


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device (torch.cuda.is_available() is "
                    "False): run on a GPU machine")
@pytest.mark.parametrize("padding", ["reflect_blur", "constant"])
def test_cuda_crops_match_cpu_crops(cases, padding: str):
    for name, pixels, lm in cases:
        place = place_face(lm, pixels.shape[1], pixels.shape[0], 256)
        on_cpu = align_faces(image_tensor(pixels), [place], 256, padding)[0]
        on_gpu = align_faces(image_tensor(pixels, "cuda"), [place], 256, padding)[0]
        assert on_gpu.device.type == "cuda"
        assert _mad(on_gpu.cpu().numpy(), on_cpu.numpy()) <= MAD_LIMIT, name
        reference = align_face(pixels, lm, size=256, padding=padding).crop  # type: ignore[arg-type]
        assert _mad(on_gpu.permute(1, 2, 0).cpu().numpy(), reference) <= MAD_LIMIT, name
