"""The default alignment of faces/align.py as tensor operations, so the crop stage can cut crops on a GPU.

Why a restatement and not something simpler (one ``grid_sample`` from the photo): crops must not depend on
which device cut them. ``align_face`` shrinks the photo's pixels with Pillow's Lanczos, mirrors them outwards,
blurs and fades the padding with OpenCV and rotates with OpenCV's bicubic warp (a face smaller than the crop:
bilinear at twice the side, then cv2's bicubic resize); a single sample from a large photo aliases, and an
antialiased bicubic shrink is a different picture. So this module runs the same chain,
from the same geometry (``place_face``, ``plan_region``, ``padding_masks`` and ``outside_crop_mask`` are
align.py's, not copies), and rounds to uint8 at the same steps OpenCV and Pillow do: that is what keeps the
two within a grey level (tests/test_align_torch.py measures it on real photos, padded faces included).

Every resampling but the rotation is separable and given by an (index, weight) table built in numpy once per
size pair: Pillow's Lanczos coefficients (its support widens with the shrink factor: the antialiasing), cv2's
INTER_AREA, INTER_LINEAR and INTER_CUBIC, cv2's Gaussian kernel with its mirrored (reflect-101) border. The rotation is
``grid_sample``'s bicubic (or bilinear), whose a = -0.75 kernel and clamped taps are cv2's INTER_CUBIC with
BORDER_REPLICATE. A table is applied
as K shifted multiply-adds (``index_select``), which runs unchanged on CPU and CUDA and costs K reads per
output pixel, unlike a dense resampling matrix. Coordinates follow align.py's module docstring: a pixel's
centre is at index + 0.5, which is ``grid_sample``'s ``align_corners=False``.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from functools import lru_cache
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from facecurate.faces.align import (
    PaddingMode,
    Placement,
    RegionPlan,
    outside_crop_mask,
    padding_blur_sigma,
    padding_masks,
    plan_region,
)

Table = tuple[np.ndarray, np.ndarray]  # (out, K) source indices, (out, K) float64 weights
# Faces cut and converted to uint8 together: bounds the float copies (a 1024 crop is 12 MB of floats).
FACES_PER_PASS = 8


def image_tensor(pixels: np.ndarray, device: torch.device | str = "cpu") -> torch.Tensor:
    """An (H, W, 3) uint8 RGB array as the (3, H, W) uint8 tensor this module and torchvision's decoders use.
    A read-only array (media's decodes can be) is copied: torch has no read-only tensors."""
    array = np.ascontiguousarray(pixels)
    return torch.from_numpy(array if array.flags.writeable else array.copy()).to(device).permute(2, 0, 1)


def align_faces(image: torch.Tensor, places: Sequence[Placement], size: int,
                padding: PaddingMode = "reflect_blur") -> torch.Tensor:
    """Crops of ``places`` (from ``align.place_face`` on this image's size) as (N, 3, size, size) uint8 on the
    image's device: ``align_face``'s default mode, within a grey level of its pixels.

    ``image`` is (3, H, W) uint8 RGB (``image_tensor``, or ``torchvision.io.decode_jpeg`` on any device)."""
    if image.ndim != 3 or image.shape[0] != 3 or image.dtype != torch.uint8:
        raise ValueError(f"image must be a (3, H, W) uint8 tensor; got {tuple(image.shape)} {image.dtype}")
    if padding not in ("reflect_blur", "constant"):
        raise ValueError(f"padding must be 'reflect_blur' or 'constant'; got {padding!r}")
    height, width = int(image.shape[1]), int(image.shape[2])
    out = torch.empty((len(places), 3, size, size), dtype=torch.uint8, device=image.device)
    for start in range(0, len(places), FACES_PER_PASS):
        chunk = places[start:start + FACES_PER_PASS]
        plans = [plan_region(p.quad, size, width, height, p.qsize) for p in chunk]
        crops = torch.stack([_warped(image, p, plan, size, padding) for p, plan in zip(chunk, plans, strict=True)])
        for k, (place, plan) in enumerate(zip(chunk, plans, strict=True)):
            if padding == "constant" and plan.leaves_image:
                mask = torch.from_numpy(outside_crop_mask(place.quad, size, width, height)).to(image.device)
                crops[k].masked_fill_(mask, 0)
        out[start:start + len(chunk)] = crops.to(torch.uint8)
    return out


def _warped(image: torch.Tensor, place: Placement, plan: RegionPlan, size: int,
            padding: PaddingMode) -> torch.Tensor:
    """One face at ``size`` px, rounded like cv2's uint8 outputs: (3, size, size) float."""
    height, width = int(image.shape[1]), int(image.shape[2])
    region = _region(image, plan, padding)
    if padding == "reflect_blur" and plan.leaves_image:
        region = _blend_padding(region, plan, place, width, height)
    theta = torch.tensor(_theta(place.quad, plan), dtype=torch.float64, device=image.device)
    # affine_grid's equivalent, written out: it multiplies in a matmul, which TF32 (when a program enables it)
    # would round to ~1e-3, a pixel at a 1024 px crop; elementwise float64 cannot be switched to TF32
    side = size if plan.shrunk else 2 * size
    steps = (torch.arange(side, dtype=torch.float64, device=image.device) * 2 + 1) / side - 1
    xs, ys = steps[None, :], steps[:, None]
    grid = torch.stack([theta[0, 0] * xs + theta[0, 1] * ys + theta[0, 2],
                        theta[1, 0] * xs + theta[1, 1] * ys + theta[1, 2]], dim=-1).float()[None]
    # padding_mode="border" clamps each tap: cv2.BORDER_REPLICATE
    mode = "bicubic" if plan.shrunk else "bilinear"
    warped = _round8(F.grid_sample(region[None], grid, mode=mode, padding_mode="border", align_corners=False)[0])
    if plan.shrunk:
        return warped
    return _round8(_resize(warped, _cubic_table, size, size, rounded=False))  # cv2 rounds once, at the end


def _theta(quad: np.ndarray, plan: RegionPlan) -> np.ndarray:
    """affine_grid's matrix: crop normalised coordinates (-1..1 across the crop) to region normalised ones.

    Crop point (u, v) in [0, 1]^2 lies at ul + u (ur - ul) + v (ll - ul) in source px, i.e. at
    (that - origin) / scale in region px; both normalisations are 2 p / extent - 1 (``align_corners=False``)."""
    ul, ll, _, ur = quad
    extent = np.array(plan.shape, dtype=np.float64) * plan.scale  # the region's size in source px
    # source point of normalised crop (x, y): ul + (x + 1)/2 (ur - ul) + (y + 1)/2 (ll - ul)
    centre = ul + 0.5 * (ur - ul) + 0.5 * (ll - ul)
    linear = np.column_stack([0.5 * (ur - ul), 0.5 * (ll - ul)])  # columns: d source / dx, d source / dy
    to_norm = 2.0 / extent  # source px offsets to region normalised offsets
    return np.column_stack([linear * to_norm[:, None], (centre - plan.origin) * to_norm - 1.0])


def _region(image: torch.Tensor, plan: RegionPlan, padding: PaddingMode) -> torch.Tensor:
    """The plan's region as (3, h, w) float: the photo's pixels inside the box, shrunk as Pillow's Lanczos
    does when the plan says so, and beyond the photo's edges the same border as cv2.copyMakeBorder (mirrored
    without repeating the edge, or the edge repeated)."""
    x0, y0, x1, y1 = plan.inner
    inner = image[:, y0:y1, x0:x1].float()
    inner_w, inner_h = plan.inner_shape
    if plan.shrunk:
        inner = _resize(inner, _lanczos_table, inner_w, inner_h)
    left, top, right, bottom = plan.pads
    ys = _border_index(-top, inner_h + bottom, 0, inner_h, padding)
    xs = _border_index(-left, inner_w + right, 0, inner_w, padding)
    rows = inner.index_select(1, torch.from_numpy(ys).to(image.device))
    return rows.index_select(2, torch.from_numpy(xs).to(image.device))


def _border_index(start: int, stop: int, lo: int, hi: int, padding: PaddingMode) -> np.ndarray:
    """Source indices of positions start..stop-1 when only lo..hi-1 exist."""
    j = np.arange(start, stop) - lo
    n = hi - lo
    if padding == "constant":
        return np.clip(j, 0, n - 1) + lo
    return _reflect101(j, n) + lo


def _reflect101(j: np.ndarray, n: int) -> np.ndarray:
    """cv2.BORDER_REFLECT_101 (numpy's "reflect"), repeated for offsets past a whole width."""
    if n == 1:
        return np.zeros_like(j)
    period = 2 * (n - 1)
    j = np.abs(j) % period
    out: np.ndarray = np.where(j >= n, period - j, j)
    return out


def _blend_padding(region: torch.Tensor, plan: RegionPlan, place: Placement, width: int,
                   height: int) -> torch.Tensor:
    """align.py's ``_blend_padding``: blur the mirrored area (and pad/3 into the photo), fade it to the median
    colour further out; cv2.blendLinear's ``/ (w1 + w2 + 1e-5)`` included."""
    dev = region.device
    mask_x, mask_y = padding_masks(plan, place.quad, place.qsize, width, height)
    mask = torch.maximum(torch.from_numpy(mask_x).to(dev)[None, :], torch.from_numpy(mask_y).to(dev)[:, None])
    blur_w = (mask * 3.0 + 1.0).clamp(0.0, 1.0)
    blurred = _gaussian_blur(region, padding_blur_sigma(plan, place.qsize))
    img = (blurred * blur_w + region * (1.0 - blur_w)) / (1.0 + 1e-5)
    h, w = img.shape[1:]
    step = max(1, int(np.sqrt(h * w / 4096)))
    median = torch.quantile(img[:, ::step, ::step].reshape(3, -1), 0.5, dim=1)  # interpolated, as np.median
    fade_w = mask.clamp(0.0, 1.0)
    return _round8((median[:, None, None] * fade_w + img * (1.0 - fade_w)) / (1.0 + 1e-5))


def _gaussian_blur(img: torch.Tensor, sigma: float) -> torch.Tensor:
    """align.py's ``_gaussian_blur``: the same reduced-resolution shortcut (area down by k = sigma/2, blur,
    bilinear back up), so the two agree where the blur shows."""
    k = max(1, int(sigma / 2))
    if k == 1:
        return _blur(img, sigma)
    h, w = img.shape[-2:]
    small = _resize(img, _area_table, max(1, round(w / k)), max(1, round(h / k)), rounded=False)
    small = _blur(small, sigma / k)
    return _resize(small, _linear_table, w, h, rounded=False)


def _blur(img: torch.Tensor, sigma: float) -> torch.Tensor:
    h, w = img.shape[-2:]
    img = _apply(img, _gaussian_table, w, sigma, -1)
    return _apply(img, _gaussian_table, h, sigma, -2)


def _resize(img: torch.Tensor, make: Callable[[int, int], Table], out_w: int, out_h: int,
            rounded: bool = True) -> torch.Tensor:
    """Separable resize of (..., h, w) floats, horizontal pass first as Pillow does; ``rounded``: to uint8
    levels after each pass, as Pillow's 8-bit resampler stores its intermediate image."""
    h, w = img.shape[-2:]
    if out_w != w:
        img = _apply(img, make, w, out_w, -1)
        img = _round8(img) if rounded else img
    if out_h != h:
        img = _apply(img, make, h, out_h, -2)
        img = _round8(img) if rounded else img
    return img


def _apply(img: torch.Tensor, make: Callable[[int, Any], Table], n: int, arg: float, dim: int) -> torch.Tensor:
    """One separable pass with the table ``make(n, arg)``: out[..., i, ...] = sum_k w[i, k] img[..., idx[i, k],
    ...] along ``dim`` (-1 or -2).

    Always gathered along rows: ``index_select`` on dim -2 copies whole contiguous rows, on dim -1 it gathers
    single elements (~10x slower on a CPU), so a horizontal pass runs on the transposed image."""
    if dim == -1:
        return _apply(img.transpose(-1, -2).contiguous(), make, n, arg, -2).transpose(-1, -2)
    img = img.contiguous()
    idx, weights = _table_on(make, n, arg, img.device)
    out = img.index_select(-2, idx[:, 0]).mul_(weights[:, 0])
    for k in range(1, idx.shape[1]):
        out.addcmul_(img.index_select(-2, idx[:, k]), weights[:, k])
    return out


@lru_cache(maxsize=512)
def _table_on(make: Callable[[int, Any], Table], n: int, arg: float,
              device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """A table as device tensors, kept: a GPU would otherwise wait on two small copies per pass and face."""
    idx, w = make(n, arg)
    return torch.from_numpy(idx).to(device), torch.from_numpy(w.astype(np.float32)).to(device)[:, :, None]


def _round8(x: torch.Tensor) -> torch.Tensor:
    """Round half up and saturate, as Pillow's and OpenCV's uint8 stores do; kept in float for the next step."""
    return torch.floor(x + 0.5).clamp_(0.0, 255.0)


@lru_cache(maxsize=512)
def _lanczos_table(n_in: int, n_out: int) -> Table:
    """Pillow's Lanczos coefficients (``precompute_coeffs`` in its Resample.c): support 3 x the shrink factor."""
    scale = n_in / n_out
    filterscale = max(scale, 1.0)
    support = 3.0 * filterscale
    centre = (np.arange(n_out) + 0.5) * scale
    xmin = np.maximum(np.trunc(centre - support + 0.5).astype(np.int64), 0)
    xmax = np.minimum(np.trunc(centre + support + 0.5).astype(np.int64), n_in)
    taps = int((xmax - xmin).max())
    j = xmin[:, None] + np.arange(taps)[None, :]
    x = (j - centre[:, None] + 0.5) / filterscale
    w = np.where((np.abs(x) < 3.0) & (j < xmax[:, None]), np.sinc(x) * np.sinc(x / 3.0), 0.0)
    total = w.sum(axis=1, keepdims=True)
    w = np.divide(w, total, out=np.zeros_like(w), where=total != 0)
    return np.minimum(j, n_in - 1), w


@lru_cache(maxsize=512)
def _area_table(n_in: int, n_out: int) -> Table:
    """cv2.INTER_AREA when shrinking: each output pixel averages the source pixels its cell covers, the
    partly covered ones by the share covered (``computeResizeAreaTab``)."""
    scale = n_in / n_out
    rows: list[list[tuple[int, float]]] = []
    for dx in range(n_out):
        fsx1 = dx * scale
        fsx2 = fsx1 + scale
        cell = min(scale, n_in - fsx1)
        sx1, sx2 = min(math.ceil(fsx1), n_in), min(math.floor(fsx2), n_in)
        taps: list[tuple[int, float]] = []
        if sx1 - fsx1 > 1e-3:
            taps.append((sx1 - 1, (sx1 - fsx1) / cell))
        taps += [(sx, 1.0 / cell) for sx in range(sx1, sx2)]
        if fsx2 - sx2 > 1e-3 and sx2 < n_in:
            taps.append((sx2, min(min(fsx2 - sx2, 1.0), cell) / cell))
        rows.append(taps)
    return _pack(rows)


@lru_cache(maxsize=512)
def _linear_table(n_in: int, n_out: int) -> Table:
    """cv2.INTER_LINEAR: sample at (i + 0.5) scale - 0.5, clamped to the first and last pixel."""
    scale = n_in / n_out
    rows = []
    for dx in range(n_out):
        fx = (dx + 0.5) * scale - 0.5
        sx = math.floor(fx)
        fx -= sx
        if sx < 0:
            fx, sx = 0.0, 0
        if sx >= n_in - 1:
            fx, sx = 0.0, n_in - 1
        rows.append([(sx, 1.0 - fx), (min(sx + 1, n_in - 1), fx)])
    return _pack(rows)


@lru_cache(maxsize=512)
def _cubic_table(n_in: int, n_out: int) -> Table:
    """cv2.INTER_CUBIC resize: sample at (i + 0.5) scale - 0.5 with the a = -0.75 kernel over four taps,
    indices clamped to the first and last pixel."""
    a = -0.75
    rows = []
    for dx in range(n_out):
        fx = (dx + 0.5) * n_in / n_out - 0.5
        sx = math.floor(fx)
        t = fx - sx
        w0 = ((a * (t + 1) - 5 * a) * (t + 1) + 8 * a) * (t + 1) - 4 * a
        w1 = ((a + 2) * t - (a + 3)) * t * t + 1
        w2 = ((a + 2) * (1 - t) - (a + 3)) * (1 - t) * (1 - t) + 1
        weights = (w0, w1, w2, 1.0 - w0 - w1 - w2)
        rows.append([(min(max(sx + k - 1, 0), n_in - 1), weights[k]) for k in range(4)])
    return _pack(rows)


@lru_cache(maxsize=512)
def _gaussian_table(n: int, sigma: float) -> Table:
    """cv2.GaussianBlur on float images: ksize = round(8 sigma + 1) | 1, mirrored (reflect-101) border."""
    ksize = int(np.floor(sigma * 8 + 1 + 0.5)) | 1
    r = (ksize - 1) // 2
    x = np.arange(-r, r + 1, dtype=np.float64)
    kernel = np.exp(-(x * x) / (2.0 * sigma * sigma))
    kernel /= kernel.sum()
    idx = _reflect101(np.arange(n)[:, None] + np.arange(-r, r + 1)[None, :], n)
    return idx, np.broadcast_to(kernel, idx.shape).copy()


def _pack(rows: list[list[tuple[int, float]]]) -> Table:
    taps = max(len(r) for r in rows)
    idx = np.zeros((len(rows), taps), dtype=np.int64)
    w = np.zeros((len(rows), taps), dtype=np.float64)
    for i, r in enumerate(rows):
        for k, (j, v) in enumerate(r):
            idx[i, k], w[i, k] = j, v
    return idx, w
