"""Batched MTCNN face detection for the crop stage.

Images of any size are downscaled (long side <= ``max_side``, never upscaled, ``cv2.INTER_AREA``),
grouped into buckets by their sides rounded up to a multiple of ``BUCKET`` px and letterboxed top-left
onto a zero canvas the size of the bucket's largest member, so MTCNN runs on whole batches. Canvas
coordinates are scaled source coordinates: mapping back is a division by the scale.

The cascade is facenet-pytorch's ``detect_face`` with its P/R/O-Nets, restated for batches: every resize
(pyramid levels, the 24/48 px crops) is read off one integral image instead of one ``interpolate`` call
per candidate box, and each image keeps its own pyramid sizes and crop clipping, so padding never reaches
a network and an image's faces do not depend on the rest of its batch.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass

import cv2
import numpy as np
import torch

from facecurate.device import DeviceChoice, resolve_device
from facecurate.faces.mtcnn_nets import batched_nms, generate_boxes, load_nets, regress_boxes, square_boxes

BUCKET = 64  # images whose scaled sides round up to the same multiple of BUCKET share a canvas
# Canvas pixels per CPU forward pass: 32 letterboxed 1024 px photos took ~1.3 GB in the cascade (integral
# image, pyramid levels). On a CPU smaller batches cost no throughput, and 2 MP (three 768 px photos) cropped
# large faces ~5% faster than 8 MP: the first pyramid levels' activations stay small enough to be reused
# from the heap and caches instead of being mapped in afresh for every layer.
CPU_BATCH_PIXELS = 2_000_000


@dataclass(frozen=True, eq=False)
class Detection:
    """One face. ``eq=False``: identity equality (fields holding an array compare ambiguously)."""

    box: tuple[float, float, float, float]  # x1, y1, x2, y2 in source image pixels (may overhang the border)
    prob: float
    landmarks: np.ndarray  # (5, 2) float64 source px, read-only: eye image-left, eye image-right, nose,
    #                        mouth corner image-left, mouth corner image-right


class BatchedDetector:
    """MTCNN (facenet-pytorch's weights) over batches of letterboxed images, on one device."""

    def __init__(
        self,
        *,
        device: DeviceChoice,
        batch_size: int,
        max_side: int,
        min_face_size: int,
        thresholds: tuple[float, float, float] = (0.6, 0.7, 0.7),
    ) -> None:
        """``device``, ``batch_size``, ``max_side`` and ``min_face_size`` are the crop settings of the same names
        (``detect_max_side`` for ``max_side``), passed by the caller: their defaults live in the settings table.
        ``thresholds`` are MTCNN's own per-network probabilities, not a setting."""
        if min(batch_size, max_side, min_face_size) < 1:
            raise ValueError("batch_size, max_side and min_face_size must be positive")
        self.device = resolve_device(device)
        self.batch_size = batch_size
        self.max_side = max_side
        self.min_face_size = min_face_size
        self.thresholds = thresholds
        # NHWC runs MTCNN's small convolutions and poolings ~2x faster on CPU.
        self.memory_format = torch.channels_last if self.device.type == "cpu" else torch.contiguous_format
        # facenet-pytorch's weights in our own copies of its nets (faces/mtcnn_nets.py: no torchvision.models)
        self.mtcnn = load_nets(self.device)
        self.mtcnn.to(memory_format=self.memory_format)

    def detect(self, images: Sequence[np.ndarray]) -> list[list[Detection]]:
        """Faces per input image (same order), each list sorted by box area, largest first.

        ``images`` are HxWx3 uint8 RGB arrays of any sizes; an image with no face gives ``[]``.
        """
        for i, img in enumerate(images):
            rgb = isinstance(img, np.ndarray) and img.dtype == np.uint8 and img.ndim == 3 and img.shape[2] == 3
            if not rgb or img.size == 0:
                raise ValueError(f"image {i}: expected an HxWx3 uint8 RGB array, got {_describe(img)}")
        scaled = [self._downscale(img) for img in images]
        buckets: dict[tuple[int, int], list[int]] = defaultdict(list)
        for i, (small, _) in enumerate(scaled):
            h, w = small.shape[:2]
            if min(h, w) >= self.min_face_size:  # smaller images cannot hold a face MTCNN looks for
                buckets[(-(-h // BUCKET), -(-w // BUCKET))].append(i)
        results: list[list[Detection]] = [[] for _ in images]
        for (rows, cols), members in buckets.items():
            step = self.batch_size
            if self.device.type == "cpu":  # host memory: the cascade needs ~40 bytes per canvas pixel
                step = max(1, min(step, CPU_BATCH_PIXELS // (rows * cols * BUCKET * BUCKET)))
            for start in range(0, len(members), step):
                chunk = members[start : start + step]
                for i, dets in zip(chunk, self._detect_batch([scaled[i] for i in chunk]), strict=True):
                    results[i] = dets
        return results

    def _downscale(self, img: np.ndarray) -> tuple[np.ndarray, tuple[float, float]]:
        """The image with long side <= max_side, and its (x, y) scale factors from source pixels."""
        h, w = img.shape[:2]
        factor = self.max_side / max(h, w)
        if factor >= 1:
            return img, (1.0, 1.0)
        size = (max(1, round(w * factor)), max(1, round(h * factor)))
        small = cv2.resize(np.ascontiguousarray(img), size, interpolation=cv2.INTER_AREA)
        return small, (size[0] / w, size[1] / h)

    @torch.inference_mode()
    def _detect_batch(self, batch: list[tuple[np.ndarray, tuple[float, float]]]) -> list[list[Detection]]:
        boxes, points, inds = self._cascade(_integral([small for small, _ in batch], self.device),
                                            [(small.shape[0], small.shape[1]) for small, _ in batch])
        out = []
        for k, (_, (sx, sy)) in enumerate(batch):
            b, pts = boxes[inds == k] / [sx, sy, sx, sy, 1], points[inds == k] / [sx, sy]
            order = np.argsort(-(b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1]), kind="stable")
            out.append([_detection(b[j], pts[j]) for j in order])
        return out

    def _cascade(
        self, integral: torch.Tensor, shapes: list[tuple[int, int]]
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """facenet-pytorch's ``detect_face`` on a letterboxed batch (see the module docstring), given the
        batch's integral image (``_integral``).

        Returns boxes (N, 5: x1, y1, x2, y2, prob), landmarks (N, 5, 2) in canvas px, image index (N,).
        """
        mt, (t1, t2, t3), dev = self.mtcnn, self.thresholds, integral.device
        batch, height, width = integral.shape[0], integral.shape[1] - 1, integral.shape[2] - 1
        sizes = torch.tensor(shapes, device=dev)
        every, zero = torch.arange(batch, device=dev), torch.zeros_like(sizes[:, 0])
        # Stage 1: P-Net over each image's pyramid; NMS per scale and image, then per image.
        level_boxes: list[torch.Tensor] = []
        level_inds: list[torch.Tensor] = []
        scale = 12.0 / self.min_face_size
        min_sides = [min(hw) * scale for hw in shapes]  # an image's pyramid ends when this drops below 12
        while max(min_sides) >= 12:
            level = (sizes.double() * scale + 1).long()  # per-image level (h, w), as facenet-pytorch sizes it
            rows = _bins(zero, sizes[:, 0], level[:, 0], int(height * scale + 1))
            cols = _bins(zero, sizes[:, 1], level[:, 1], int(width * scale + 1))
            reg, prob = self._pnet(self._prepare(_area_means(integral, every, rows, cols)), level)
            # Keep only the P-Net outputs that the image on its own would have had.
            live = torch.tensor([m >= 12 for m in min_sides], device=dev)
            out_h = torch.where(live, (level[:, 0] - 1) // 2 - 4, 0)
            valid = _within(out_h, level[:, 1] // 2 - 4, *prob.shape[2:])
            b, i = generate_boxes(reg, torch.where(valid, prob[:, 1], 0), scale, t1)
            keep = batched_nms(b[:, :4], b[:, 4], i, 0.5)
            level_boxes.append(b[keep])
            level_inds.append(i[keep])
            scale, min_sides = scale * mt.factor, [m * mt.factor for m in min_sides]
        boxes, inds = torch.cat(level_boxes), torch.cat(level_inds)
        keep = batched_nms(_nonneg(boxes[:, :4]), boxes[:, 4], inds, 0.7)
        boxes, inds = boxes[keep], inds[keep]
        wh = (boxes[:, 2:4] - boxes[:, 0:2]).repeat(1, 2)
        boxes = square_boxes(torch.cat([boxes[:, :4] + boxes[:, 5:9] * wh, boxes[:, 4:5]], dim=1))
        # Stage 2: R-Net refines the candidates.
        if len(boxes):
            reg, prob = _chunked(mt.rnet, self._crops(integral, boxes, inds, sizes, 24))
            ok = prob[:, 1] > t2
            boxes, inds, reg = torch.cat([boxes[ok, :4], prob[ok, 1:]], dim=1), inds[ok], reg[ok]
            keep = batched_nms(_nonneg(boxes[:, :4]), boxes[:, 4], inds, 0.7)
            boxes, inds = square_boxes(regress_boxes(boxes[keep], reg[keep])), inds[keep]
        # Stage 3: O-Net gives the final score, box and landmarks; NMS by overlap of the smaller box.
        points = boxes.new_zeros((0, 5, 2))
        if len(boxes):
            reg, pts, prob = _chunked(mt.onet, self._crops(integral, boxes, inds, sizes, 48))
            ok = prob[:, 1] > t3
            boxes, inds, reg, pts = torch.cat([boxes[ok, :4], prob[ok, 1:]], dim=1), inds[ok], reg[ok], pts[ok]
            wh = boxes[:, 2:4] - boxes[:, 0:2] + 1
            points = pts.view(-1, 2, 5).transpose(1, 2) * wh[:, None] + boxes[:, None, 0:2] - 1
            boxes = regress_boxes(boxes, reg)
        found, marks, owner = boxes.double().cpu().numpy(), points.double().cpu().numpy(), inds.cpu().numpy()
        final = _min_nms(found, owner, 0.7)
        return found[final], marks[final], owner[final]

    def _pnet(self, x: torch.Tensor, level: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """P-Net on letterboxed levels, equal to P-Net on each image's level alone: conv1 outputs that
        read padding are hidden from the ceil-mode max-pool, which alone would pool a partial window."""
        net = self.mtcnn.pnet
        x = net.prelu1(net.conv1(x))
        inside = _within(level[:, 0] - 2, level[:, 1] - 2, *x.shape[2:])
        if not bool(inside.all()):  # some image of the batch is smaller than the canvas
            x = x.masked_fill(~inside[:, None], float("-inf"))
        on_cpu = self.device.type == "cpu"
        x = _max_pool_2x2(x).contiguous(memory_format=self.memory_format) if on_cpu else net.pool1(x)
        x = net.prelu3(net.conv3(net.prelu2(net.conv2(x))))
        return net.conv4_2(x), net.softmax4_1(net.conv4_1(x))

    def _crops(
        self, integral: torch.Tensor, boxes: torch.Tensor, inds: torch.Tensor, sizes: torch.Tensor, side: int
    ) -> torch.Tensor:
        """Square network inputs resized from each box clipped to its image, as facenet-pytorch does."""
        b = boxes[:, :4].trunc().long()
        h, w = sizes[inds, 0], sizes[inds, 1]
        x0 = torch.minimum(b[:, 0].clamp(min=1) - 1, w - 1)
        y0 = torch.minimum(b[:, 1].clamp(min=1) - 1, h - 1)
        x1 = torch.maximum(torch.minimum(b[:, 2], w), x0 + 1)
        y1 = torch.maximum(torch.minimum(b[:, 3], h), y0 + 1)
        n = torch.full_like(inds, side)
        return self._prepare(_area_means(integral, inds, _bins(y0, y1, n, side), _bins(x0, x1, n, side)))

    def _prepare(self, x: torch.Tensor) -> torch.Tensor:
        return ((x - 127.5) * 0.0078125).contiguous(memory_format=self.memory_format)


def _max_pool_2x2(x: torch.Tensor) -> torch.Tensor:
    """P-Net's ``MaxPool2d(2, 2, ceil_mode=True)`` as the maximum of four strided views: the same values (a
    ceil-mode window past an odd edge pools what it holds; the -inf column added here changes no maximum), at
    less than half the CPU time of torch's channels-last pooling kernel on a pyramid level."""
    h, w = x.shape[2:]
    if h % 2 or w % 2:
        x = torch.nn.functional.pad(x, (0, w % 2, 0, h % 2), value=float("-inf"))
    rows = torch.maximum(x[:, :, 0::2], x[:, :, 1::2])
    return torch.maximum(rows[:, :, :, 0::2], rows[:, :, :, 1::2])


def _integral(images: list[np.ndarray], device: torch.device) -> torch.Tensor:
    """(B, H+1, W+1, 3) sums above-left of every pixel of the images letterboxed top-left onto one zero canvas
    (H, W: the largest sides). On a CPU each image's table is OpenCV's (``_integral_cv``: one vectorised pass,
    several times faster than two torch cumsums over the canvas); on a GPU the canvas is summed where it is.
    Integers either way, so both give the same table."""
    height, width = max(i.shape[0] for i in images), max(i.shape[1] for i in images)
    wide = 255 * height * width >= 2**31
    if device.type == "cpu" and not wide:
        return _integral_cv(images, height, width)
    return _integral_torch(images, height, width, device, torch.int64 if wide else torch.int32)


def _integral_cv(images: list[np.ndarray], height: int, width: int) -> torch.Tensor:
    """Each image's cv2.integral, the letterbox's rows and columns repeating its last sums (padding adds 0)."""
    out = np.empty((len(images), height + 1, width + 1, 3), np.int32)
    for k, img in enumerate(images):
        h, w = img.shape[:2]
        out[k, : h + 1, : w + 1] = cv2.integral(np.ascontiguousarray(img), sdepth=cv2.CV_32S)
        out[k, h + 1:, : w + 1] = out[k, h, : w + 1]
        out[k, :, w + 1:] = out[k, :, w : w + 1]
    return torch.from_numpy(out)


def _integral_torch(images: list[np.ndarray], height: int, width: int, device: torch.device,
                    dtype: torch.dtype) -> torch.Tensor:
    canvas = np.zeros((len(images), height, width, 3), np.uint8)
    for k, img in enumerate(images):
        canvas[k, : img.shape[0], : img.shape[1]] = img
    on = torch.from_numpy(canvas).to(device)
    integral = on.new_zeros((len(images), height + 1, width + 1, 3), dtype=dtype)
    integral[:, 1:, 1:] = on
    return integral.cumsum_(1).cumsum_(2)  # in place: no second full-size temporary


def _bins(start: torch.Tensor, stop: torch.Tensor, n: torch.Tensor, total: int) -> tuple[torch.Tensor, ...]:
    """Pixel ranges [lo, hi), each (N, total), that area resizing [start, stop) to n pixels averages
    (the bins of ``adaptive_avg_pool2d``); bins from n on are empty (they read as 0: letterbox padding)."""
    i = torch.arange(total, device=start.device)
    length, start, n = (stop - start)[:, None], start[:, None], n[:, None]
    lo, hi = start + i * length // n, start + ((i + 1) * length + n - 1) // n
    return torch.where(i < n, lo, start), torch.where(i < n, hi, start)


def _within(h: torch.Tensor, w: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """(B, height, width) mask of the top-left h x w of each map."""
    ys, xs = torch.arange(height, device=h.device), torch.arange(width, device=h.device)
    return (ys[None, :, None] < h[:, None, None]) & (xs[None, None, :] < w[:, None, None])


def _area_means(
    integral: torch.Tensor, inds: torch.Tensor, rows: tuple[torch.Tensor, ...], cols: tuple[torch.Tensor, ...]
) -> torch.Tensor:
    """(N, 3, h, w) float means of the rectangles rows x cols of images ``inds``, from a (B, H+1, W+1, 3)
    integral image: equal to ``interpolate(..., mode="area")`` of each crop, at the cost of 4 reads."""
    height, width = integral.shape[1:3]
    pixels = integral.reshape(-1, 3)
    (y0, y1), (x0, x1) = (r[:, :, None] for r in rows), (c[:, None, :] for c in cols)
    r0, r1 = (inds[:, None, None] * height + y0) * width, (inds[:, None, None] * height + y1) * width

    def at(index: torch.Tensor) -> torch.Tensor:
        return pixels.index_select(0, index.flatten()).view(*index.shape, 3)

    sums = at(r1 + x1) - at(r0 + x1) - at(r1 + x0) + at(r0 + x0)
    return (sums.float() / ((y1 - y0) * (x1 - x0)).clamp(min=1)[..., None]).permute(0, 3, 1, 2)


def _chunked(net: torch.nn.Module, crops: torch.Tensor, size: int = 4096) -> list[torch.Tensor]:
    """``net(crops)`` in slices, to bound activation memory when a batch yields many candidates."""
    return [torch.cat(parts) for parts in zip(*(net(part) for part in torch.split(crops, size)), strict=True)]


def _nonneg(boxes: torch.Tensor) -> torch.Tensor:
    """Boxes shifted to non-negative coordinates: batched NMS offsets each image's boxes by
    ``index * (max + 1)``, which lets a box overhanging the top-left suppress another image's faces."""
    return boxes - boxes.min() if len(boxes) else boxes


def _min_nms(boxes: np.ndarray, inds: np.ndarray, threshold: float) -> np.ndarray:
    """facenet-pytorch's last NMS (overlap / smaller area, per image) with a stable sort: its quicksort
    broke ties between equal scores (often exactly 1.0) differently depending on the other images."""
    x1, y1, x2, y2, score = boxes.T
    area = (x2 - x1 + 1) * (y2 - y1 + 1)
    order, keep = np.argsort(score, kind="stable"), []
    while order.size:
        i, rest = order[-1], order[:-1]
        keep.append(i)
        w = np.maximum(0.0, np.minimum(x2[i], x2[rest]) - np.maximum(x1[i], x1[rest]) + 1)
        h = np.maximum(0.0, np.minimum(y2[i], y2[rest]) - np.maximum(y1[i], y1[rest]) + 1)
        order = rest[(w * h / np.minimum(area[i], area[rest]) <= threshold) | (inds[rest] != inds[i])]
    return np.array(keep, dtype=np.int64)


def _detection(box: np.ndarray, points: np.ndarray) -> Detection:
    points.setflags(write=False)
    return Detection(box=(float(box[0]), float(box[1]), float(box[2]), float(box[3])), prob=float(box[4]),
                     landmarks=points)


def _describe(img: object) -> str:
    if isinstance(img, np.ndarray):
        return f"{img.dtype} array of shape {img.shape}"
    return type(img).__name__
