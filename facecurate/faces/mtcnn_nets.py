"""MTCNN's P-, R- and O-Nets (Zhang et al. 2016) as facenet-pytorch ships their weights, without its package.

``import facenet_pytorch`` imports its InceptionResnetV1, which pulls in all of ``torchvision.models`` (~4 s of
a cold start, most of a `crop` with nothing to do). These modules restate the published architecture with the
layer names of facenet-pytorch's state dicts, and ``load_nets`` reads those dicts from the package's data
folder, found with ``importlib.util.find_spec`` (which reads the package's location, not its ``__init__``).
tests/test_detect.py holds the result against facenet-pytorch's own MTCNN. The helpers ``generate_boxes``,
``regress_boxes``, ``square_boxes`` and ``batched_nms`` are the cascade's box arithmetic, to the same
floating-point operations as facenet-pytorch's ``generateBoundingBox``/``bbreg``/``rerec`` and torchvision's
``batched_nms`` (``torchvision.ops`` cannot be imported without ``torchvision.models`` either).
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import torch
from torch import nn


class PNet(nn.Module):
    """Proposal net: fully convolutional, 12 px receptive field, stride 2."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1, self.prelu1 = nn.Conv2d(3, 10, kernel_size=3), nn.PReLU(10)
        self.pool1 = nn.MaxPool2d(2, 2, ceil_mode=True)
        self.conv2, self.prelu2 = nn.Conv2d(10, 16, kernel_size=3), nn.PReLU(16)
        self.conv3, self.prelu3 = nn.Conv2d(16, 32, kernel_size=3), nn.PReLU(32)
        self.conv4_1, self.softmax4_1 = nn.Conv2d(32, 2, kernel_size=1), nn.Softmax(dim=1)
        self.conv4_2 = nn.Conv2d(32, 4, kernel_size=1)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        x = self.pool1(self.prelu1(self.conv1(x)))
        x = self.prelu3(self.conv3(self.prelu2(self.conv2(x))))
        return self.conv4_2(x), self.softmax4_1(self.conv4_1(x))


class RNet(nn.Module):
    """Refinement net on 24 px crops."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1, self.prelu1 = nn.Conv2d(3, 28, kernel_size=3), nn.PReLU(28)
        self.pool1 = nn.MaxPool2d(3, 2, ceil_mode=True)
        self.conv2, self.prelu2 = nn.Conv2d(28, 48, kernel_size=3), nn.PReLU(48)
        self.pool2 = nn.MaxPool2d(3, 2, ceil_mode=True)
        self.conv3, self.prelu3 = nn.Conv2d(48, 64, kernel_size=2), nn.PReLU(64)
        self.dense4, self.prelu4 = nn.Linear(576, 128), nn.PReLU(128)
        self.dense5_1, self.softmax5_1 = nn.Linear(128, 2), nn.Softmax(dim=1)
        self.dense5_2 = nn.Linear(128, 4)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        x = self.pool1(self.prelu1(self.conv1(x)))
        x = self.pool2(self.prelu2(self.conv2(x)))
        x = self.prelu3(self.conv3(x))
        x = x.permute(0, 3, 2, 1).contiguous()  # the weights were converted from Caffe's (W, H) flattening
        x = self.prelu4(self.dense4(x.view(x.shape[0], -1)))
        return self.dense5_2(x), self.softmax5_1(self.dense5_1(x))


class ONet(nn.Module):
    """Output net on 48 px crops: score, box regression and the five landmarks."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1, self.prelu1 = nn.Conv2d(3, 32, kernel_size=3), nn.PReLU(32)
        self.pool1 = nn.MaxPool2d(3, 2, ceil_mode=True)
        self.conv2, self.prelu2 = nn.Conv2d(32, 64, kernel_size=3), nn.PReLU(64)
        self.pool2 = nn.MaxPool2d(3, 2, ceil_mode=True)
        self.conv3, self.prelu3 = nn.Conv2d(64, 64, kernel_size=3), nn.PReLU(64)
        self.pool3 = nn.MaxPool2d(2, 2, ceil_mode=True)
        self.conv4, self.prelu4 = nn.Conv2d(64, 128, kernel_size=2), nn.PReLU(128)
        self.dense5, self.prelu5 = nn.Linear(1152, 256), nn.PReLU(256)
        self.dense6_1, self.softmax6_1 = nn.Linear(256, 2), nn.Softmax(dim=1)
        self.dense6_2 = nn.Linear(256, 4)
        self.dense6_3 = nn.Linear(256, 10)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        x = self.pool1(self.prelu1(self.conv1(x)))
        x = self.pool2(self.prelu2(self.conv2(x)))
        x = self.pool3(self.prelu3(self.conv3(x)))
        x = self.prelu4(self.conv4(x))
        x = x.permute(0, 3, 2, 1).contiguous()
        x = self.prelu5(self.dense5(x.view(x.shape[0], -1)))
        return self.dense6_2(x), self.dense6_3(x), self.softmax6_1(self.dense6_1(x))


class Nets(nn.Module):
    """The three nets, with the pyramid factor facenet-pytorch's MTCNN uses by default."""

    factor = 0.709

    def __init__(self) -> None:
        super().__init__()
        self.pnet, self.rnet, self.onet = PNet(), RNet(), ONet()


def weights_dir() -> Path:
    """facenet-pytorch's data folder, located without executing the package's ``__init__``."""
    spec = importlib.util.find_spec("facenet_pytorch")
    if spec is None or not spec.submodule_search_locations:
        raise ImportError("facenet-pytorch is not installed: its MTCNN weights (data/pnet.pt ...) are needed")
    return Path(next(iter(spec.submodule_search_locations))) / "data"


def load_nets(device: torch.device) -> Nets:
    nets = Nets()
    folder = weights_dir()
    for name in ("pnet", "rnet", "onet"):
        state = torch.load(folder / f"{name}.pt", map_location="cpu", weights_only=True)
        getattr(nets, name).load_state_dict(state)
    return nets.to(device).eval()


def generate_boxes(reg: torch.Tensor, probs: torch.Tensor, scale: float,
                   thresh: float) -> tuple[torch.Tensor, torch.Tensor]:
    """P-Net cells scoring >= thresh as (x1, y1, x2, y2, score, 4 regressions) in level-0 px, and their images."""
    reg = reg.permute(1, 0, 2, 3)
    mask = probs >= thresh
    where = mask.nonzero()
    score = probs[mask]
    reg = reg[:, mask].permute(1, 0)
    cell = where[:, 1:].type(reg.dtype).flip(1)
    q1 = ((2 * cell + 1) / scale).floor()
    q2 = ((2 * cell + 12 - 1 + 1) / scale).floor()
    return torch.cat([q1, q2, score.unsqueeze(1), reg], dim=1), where[:, 0]


def regress_boxes(boxes: torch.Tensor, reg: torch.Tensor) -> torch.Tensor:
    """Boxes moved by the nets' regression (in units of the box's +1 width/height); in place, returned."""
    w = boxes[:, 2] - boxes[:, 0] + 1
    h = boxes[:, 3] - boxes[:, 1] + 1
    b1, b2 = boxes[:, 0] + reg[:, 0] * w, boxes[:, 1] + reg[:, 1] * h
    b3, b4 = boxes[:, 2] + reg[:, 2] * w, boxes[:, 3] + reg[:, 3] * h
    boxes[:, :4] = torch.stack([b1, b2, b3, b4]).permute(1, 0)
    return boxes


def square_boxes(boxes: torch.Tensor) -> torch.Tensor:
    """Boxes grown to squares about their centres; in place, returned."""
    h = boxes[:, 3] - boxes[:, 1]
    w = boxes[:, 2] - boxes[:, 0]
    side = torch.max(w, h)
    boxes[:, 0] = boxes[:, 0] + w * 0.5 - side * 0.5
    boxes[:, 1] = boxes[:, 1] + h * 0.5 - side * 0.5
    boxes[:, 2:4] = boxes[:, :2] + side.repeat(2, 1).permute(1, 0)
    return boxes


def _nms(boxes: np.ndarray, scores: np.ndarray, threshold: float) -> np.ndarray:
    """Greedy IoU suppression as torchvision's CPU kernel does it: stable descending score order, areas
    without +1, suppressed when IoU > threshold, all in the boxes' own float type."""
    x1, y1, x2, y2 = boxes.T
    areas = (x2 - x1) * (y2 - y1)
    order = np.argsort(-scores, kind="stable")
    keep = []
    while order.size:
        i, rest = order[0], order[1:]
        keep.append(i)
        w = np.maximum(np.minimum(x2[i], x2[rest]) - np.maximum(x1[i], x1[rest]), boxes.dtype.type(0))
        h = np.maximum(np.minimum(y2[i], y2[rest]) - np.maximum(y1[i], y1[rest]), boxes.dtype.type(0))
        inter = w * h
        order = rest[inter / (areas[i] + areas[rest] - inter) <= threshold]
    return np.array(keep, dtype=np.int64)


def batched_nms(boxes: torch.Tensor, scores: torch.Tensor, idxs: torch.Tensor, threshold: float) -> torch.Tensor:
    """torchvision.ops.batched_nms, same paths: per-class loop above 4000 (CPU) / 20000 (GPU) coordinates,
    else one NMS on boxes offset by ``idx * (max + 1)`` (an offset that rounds the float32 IoUs as it does)."""
    if boxes.numel() == 0:
        return torch.empty((0,), dtype=torch.int64, device=boxes.device)
    scores_np = scores.detach().cpu().numpy()
    if boxes.numel() > (4000 if boxes.device.type == "cpu" else 20_000):
        b, ids = boxes.detach().cpu().numpy(), idxs.cpu().numpy()
        kept = np.zeros(len(b), dtype=bool)
        for k in np.unique(ids):
            members = np.flatnonzero(ids == k)
            kept[members[_nms(b[members], scores_np[members], threshold)]] = True
        chosen = torch.from_numpy(np.flatnonzero(kept)).to(boxes.device)
        return chosen[scores[chosen].sort(descending=True)[1]]  # torch's own sort: equal scores in its order
    else:
        offsets = idxs.to(boxes) * (boxes.max() + torch.tensor(1).to(boxes))
        found = _nms((boxes + offsets[:, None]).detach().cpu().numpy(), scores_np, threshold)
    return torch.from_numpy(found).to(boxes.device)
