"""Batched MTCNN detection (letterboxed size buckets) and the device choice."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from facenet_pytorch import MTCNN

from facecurate.device import DeviceChoice, resolve_device
from facecurate.errors import DeviceError
from facecurate.faces.detect import BUCKET, BatchedDetector, Detection

# Public-domain photos: the bundled demo set first, then the files it was made from.
PHOTO_DIRS = [
    Path(__file__).resolve().parents[1] / "facecurate" / "demo_data",
    Path("/tmp/probe/face_recognition-1.3.0/tests/test_images"),
    Path("/tmp/probe/skimage/data"),
]
MAX_SIDE = 1024


def photo(stem: str) -> np.ndarray:
    """The first PHOTO_DIRS photo named ``stem``.* as RGB, or a skip."""
    for folder in PHOTO_DIRS:
        for path in sorted(folder.glob(f"{stem}.*")):
            bgr = cv2.imread(str(path), cv2.IMREAD_COLOR)
            if bgr is not None:
                return cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)
    pytest.skip(f"no {stem}.* photo in {[str(d) for d in PHOTO_DIRS]}")


def resized(img: np.ndarray, width: int, height: int) -> np.ndarray:
    return cv2.resize(img, (width, height), interpolation=cv2.INTER_AREA)


def downscaled(img: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """What the detector looks at: long side <= MAX_SIDE (INTER_AREA, never upscaled), and the x, y scales."""
    h, w = img.shape[:2]
    factor = MAX_SIDE / max(h, w)
    if factor >= 1:
        return img, np.ones(2)
    small = resized(img, round(w * factor), round(h * factor))
    return small, np.array([small.shape[1] / w, small.shape[0] / h])


def make_detector(device: DeviceChoice = "cpu", batch_size: int = 32, max_side: int = MAX_SIDE) -> BatchedDetector:
    """min_face_size 20: facenet-pytorch MTCNN's own default, so the reference below searches the same faces."""
    return BatchedDetector(device=device, batch_size=batch_size, max_side=max_side, min_face_size=20)


def confident(faces: list[Detection], min_prob: float = 0.9) -> list[Detection]:
    return [f for f in faces if f.prob >= min_prob]


@pytest.fixture(scope="module")
def detector() -> BatchedDetector:
    return make_detector()


@pytest.fixture(scope="module")
def reference() -> MTCNN:
    return MTCNN(keep_all=True, device=torch.device("cpu"))


def test_obama_landmarks_are_plausible(detector: BatchedDetector) -> None:
    img = photo("obama")
    faces = confident(detector.detect([img])[0])
    assert len(faces) == 1
    face = faces[0]
    assert face.landmarks.shape == (5, 2) and face.landmarks.dtype == np.float64
    assert not face.landmarks.flags.writeable
    (lx, ly), (rx, ry), (nx, ny), (mlx, mly), (mrx, mry) = face.landmarks
    assert lx < nx < rx and mlx < mrx  # image-left eye and mouth corner first, nose between the eyes
    assert max(ly, ry) < ny < min(mly, mry)  # eyes above nose above mouth
    x1, y1, x2, y2 = face.box
    assert 0 <= x1 < x2 <= img.shape[1] and 0 <= y1 < y2 <= img.shape[0]
    assert all(x1 <= x <= x2 and y1 <= y <= y2 for x, y in face.landmarks)


def test_batch_matches_per_image_mtcnn(detector: BatchedDetector, reference: MTCNN) -> None:
    astronaut, obama = photo("astronaut"), photo("obama")
    right_edge_face = np.ascontiguousarray(photo("obama_partial_face")[:, ::-1])  # face cut by the right edge
    images = [
        photo("biden"), obama, photo("obama2"), photo("obama3"), astronaut,
        astronaut[:-50, :-40],  # shares the astronaut's bucket: letterboxed by 50 x 40 px
        resized(obama, 512, 1000), resized(right_edge_face, 449, 1000),  # 63 px of padding beside a face
    ]
    for pair in (images[4:6], images[6:8]):
        assert len({(-(-img.shape[0] // BUCKET), -(-img.shape[1] // BUCKET)) for img in pair}) == 1
    batched = detector.detect(images)
    for img, faces in zip(images, batched, strict=True):
        small, scale = downscaled(img)
        boxes, probs, points = reference.detect(small, landmarks=True)
        pairs = [] if boxes is None else zip(probs, points, strict=True)
        expected = [(prob, pts) for prob, pts in pairs if prob >= 0.9]
        got = confident(faces)
        assert len(got) == len(expected) >= 1
        for prob, pts in expected:
            mine = min(got, key=lambda f: np.abs(f.landmarks * scale - pts).max())
            assert np.abs(mine.landmarks * scale - pts).max() < 0.1  # detection px: the same cascade
            assert mine.prob == pytest.approx(prob, abs=1e-4)
        # An image's faces do not depend on the rest of its batch.
        alone = detector.detect([img])[0]
        assert len(alone) == len(faces)
        np.testing.assert_allclose([f.box for f in alone], [f.box for f in faces], atol=1e-3)


def test_faces_filling_the_frame_do_not_depend_on_the_batch(detector: BatchedDetector) -> None:
    # Tight 200 x 200 face crops (boxes overhang every border, O-Net scores tie at 1.0): one batch.
    tiles = []
    for stem in ["obama", "biden", "obama2", "obama3", "astronaut"]:
        img = photo(stem)
        (face,) = confident(detector.detect([img])[0])
        x1, y1, x2, y2 = face.box
        cx, cy, side = (x1 + x2) / 2, (y1 + y2) / 2, max(x2 - x1, y2 - y1)
        for zoom, dx, dy in [(0.7, 0, 0.1), (0.8, 0.05, 0), (0.9, -0.05, 0.05), (0.75, 0, -0.05)]:
            left, top = int(cx + (dx - zoom / 2) * side), int(cy + (dy - zoom / 2) * side)
            tile = img[max(top, 0) : top + int(zoom * side), max(left, 0) : left + int(zoom * side)]
            tiles.append(resized(tile, 200, 200))
    batched = detector.detect(tiles)
    assert sum(bool(confident(faces)) for faces in batched) >= 15
    for tile, faces in zip(tiles, batched, strict=True):
        alone = detector.detect([tile])[0]
        assert len(alone) == len(faces)
        np.testing.assert_allclose([f.box for f in alone], [f.box for f in faces], atol=1e-3)


def test_mixed_sizes_keep_input_order() -> None:
    big, big2, no_face = photo("obama3"), photo("biden"), photo("rocket_no_face")
    small = resized(photo("obama"), 228, 284)
    detector = make_detector(batch_size=2)
    results = detector.detect([big, small, no_face, big2, small])
    assert len(results) == 5
    assert confident(results[2]) == []
    for index, img in [(0, big), (1, small), (3, big2), (4, small)]:
        (face,) = confident(results[index])
        (alone,) = confident(detector.detect([img])[0])
        np.testing.assert_allclose(face.box, alone.box, atol=1e-3)
        assert face.box[2] <= img.shape[1] + 2 and face.box[3] <= img.shape[0] + 2
    assert results[0][0].box[2] > 500 and results[1][0].box[2] < 228 + 2  # big and small not swapped


def test_face_in_letterboxed_small_image_maps_inside_source(
    detector: BatchedDetector, reference: MTCNN
) -> None:
    small = resized(photo("obama"), 200, 250)
    large = resized(photo("astronaut"), 256, 256)  # same bucket, so ``small`` is padded to 256 x 256
    assert (-(-250 // BUCKET), -(-200 // BUCKET)) == (-(-256 // BUCKET), -(-256 // BUCKET))
    _, faces = detector.detect([large, small])
    (face,) = confident(faces)
    x1, y1, x2, y2 = face.box
    assert -1 <= x1 < x2 <= 201 and -1 <= y1 < y2 <= 251
    assert ((face.landmarks >= 0) & (face.landmarks <= [200, 250])).all()
    _, _, points = reference.detect(small, landmarks=True)
    assert np.abs(face.landmarks - points[0]).max() < 0.1


def test_no_face_gives_empty_list(detector: BatchedDetector) -> None:
    gradient = np.broadcast_to(np.linspace(0, 255, 320, dtype=np.uint8)[None, :, None], (240, 320, 3))
    flat = np.full((300, 300, 3), 128, np.uint8)
    assert detector.detect([gradient, flat]) == [[], []]


def test_edge_cases_do_not_crash(detector: BatchedDetector) -> None:
    assert detector.detect([]) == []
    assert detector.detect([np.zeros((1, 1, 3), np.uint8)]) == [[]]
    obama = photo("obama")
    gray = np.repeat(cv2.cvtColor(obama, cv2.COLOR_RGB2GRAY)[:, :, None], 3, axis=2)
    assert len(confident(detector.detect([gray])[0])) == 1
    # A huge photo is downscaled for detection; boxes come back in its own pixels.
    (face,) = confident(detector.detect([obama])[0])
    huge = np.zeros((6000, 8000, 3), np.uint8)
    huge[1500 : 1500 + 3 * 1137, 4000 : 4000 + 3 * 910] = resized(obama, 3 * 910, 3 * 1137)
    (big_face,) = confident(detector.detect([huge])[0])
    expected = np.array(face.box) * 3 + [4000, 1500, 4000, 1500]
    assert np.abs(np.array(big_face.box) - expected).max() < 0.05 * (expected[2] - expected[0])


@pytest.mark.parametrize(
    "bad",
    [
        np.zeros((50, 50, 3), np.float32),
        np.zeros((50, 50), np.uint8),
        np.zeros((50, 50, 4), np.uint8),
        np.zeros((0, 50, 3), np.uint8),
        "photo.jpg",
    ],
)
def test_rejects_what_is_not_an_rgb_uint8_array(detector: BatchedDetector, bad: object) -> None:
    with pytest.raises(ValueError, match="image 1"):
        detector.detect([np.zeros((30, 30, 3), np.uint8), bad])  # type: ignore[list-item]


@pytest.mark.skipif(torch.cuda.is_available(), reason="CUDA is available here")
def test_cuda_without_a_gpu_is_a_device_error() -> None:
    with pytest.raises(DeviceError, match="CUDA is not available"):
        resolve_device("cuda")
    with pytest.raises(DeviceError):
        make_detector("cuda")


@pytest.mark.skipif(torch.cuda.is_available(), reason="CUDA is available here")
def test_auto_picks_cpu_without_a_gpu() -> None:
    assert resolve_device("auto") == torch.device("cpu")
    assert resolve_device("cpu") == torch.device("cpu")
    with pytest.raises(ValueError):
        resolve_device("tpu")  # type: ignore[arg-type]


def test_the_cpu_integral_image_equals_the_canvas_cumsum_the_gpu_takes() -> None:
    """The CPU builds the cascade's sums image by image with OpenCV, a GPU sums the letterboxed canvas with
    torch: any difference (an off-by-one in the letterbox's repeated rows) would move boxes on one device only."""
    from facecurate.faces.detect import _integral_cv, _integral_torch

    rng = np.random.default_rng(7)
    images = [rng.integers(0, 256, (h, w, 3), dtype=np.uint8) for h, w in ((37, 64), (64, 21), (1, 1), (50, 50))]
    height, width = 64, 64
    cv_sums = _integral_cv(images, height, width)
    torch_sums = _integral_torch(images, height, width, torch.device("cpu"), torch.int32)
    assert cv_sums.dtype == torch_sums.dtype == torch.int32
    assert torch.equal(cv_sums, torch_sums)
    assert int(cv_sums[0, -1, -1, 0]) == int(images[0][..., 0].astype(np.int64).sum())


@pytest.mark.parametrize("shape", [(3, 10, 228, 228), (2, 10, 37, 64), (1, 10, 1, 5), (2, 10, 9, 10)])
def test_the_cpu_pnet_pooling_equals_torchs_ceil_mode_max_pool(shape: tuple[int, int, int, int]) -> None:
    """The CPU takes P-Net's 2x2 ceil-mode pooling as four strided maxima; letterbox padding arrives as -inf.
    Any difference at an odd edge or a masked pixel would change which windows P-Net proposes."""
    from facecurate.faces.detect import _max_pool_2x2

    g = torch.Generator().manual_seed(3)
    x = torch.randn(shape, generator=g).contiguous(memory_format=torch.channels_last)
    x[0, :, shape[2] // 2 :] = float("-inf")  # the bottom half of one image is letterbox
    expected = torch.nn.MaxPool2d(2, 2, ceil_mode=True)(x)
    assert torch.equal(_max_pool_2x2(x), expected)
