"""FFHQ-style face alignment from MTCNN's five landmarks: the quad, the resampling, the padding bookkeeping.

Coordinates are continuous and follow PIL, which the published FFHQ script feeds its landmarks to:
pixel (row i, column j) covers [j, j+1) x [i, i+1), so its centre is (j + 0.5, i + 0.5), in the source image
and in the crop alike. OpenCV puts pixel centres on integers instead, so every matrix handed to cv2 gets a
half-pixel shift on both sides (``_cv_matrix``); without it crops drift by up to a pixel against the quad.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import cv2
import numpy as np
from PIL import Image

PaddingMode = Literal["reflect_blur", "constant"]
_PADDING_MODES: tuple[str, ...] = ("reflect_blur", "constant")
AlignmentMode = Literal["default", "ffhq"]
_ALIGNMENT_MODES: tuple[str, ...] = ("default", "ffhq")


@dataclass(frozen=True, eq=False)  # eq=False: element-wise array comparison has no single truth value
class Alignment:
    """One aligned face plus the numbers that let later stages judge how much of it was invented.

    ``above_fraction`` and ``side_fraction`` are kept apart because padding above the head (cropped hair) is
    usually harmless while padding beside the face smears into cheeks and ears and spoils the sample.
    """

    quad: np.ndarray  # (4, 2) float64 source px: upper-left, lower-left, lower-right, upper-right
    crop: np.ndarray  # (size, size, 3) uint8 RGB aligned crop
    oob_fraction: float  # share of crop pixels whose source point lies outside the image
    above_fraction: float  # share whose source point lies above the top edge (y < 0)
    side_fraction: float  # share left of x < 0 or right of x >= width, and not above
    eye_angle_deg: float  # eye line in the crop, degrees, 0 = horizontal (y down, so positive = clockwise)


def _check_landmarks(landmarks: np.ndarray) -> np.ndarray:
    lm = np.asarray(landmarks, dtype=np.float64)
    if lm.shape != (5, 2):
        raise ValueError(f"landmarks must have shape (5, 2) (eyes, nose, mouth corners as x, y); got {lm.shape}")
    if not np.isfinite(lm).all():
        raise ValueError("landmarks contain NaN or infinite values")
    return lm


def ffhq_quad(landmarks: np.ndarray, headroom: float = 0.0) -> np.ndarray:
    """The FFHQ crop square, to the letter of the published script so crops are comparable with FFHQ.

    ``headroom`` h grows the square upwards while its bottom edge stays on the same line (centred as before):
    c' = c - h*y, x' = (1+h)*x, y' = (1+h)*y. The chin margin is unchanged, the top edge moves up by 2*h*|y|
    and the sides spread by h*|x| each so the crop stays square; FFHQ (h = 0) often clips the hair.
    """
    lm = _check_landmarks(landmarks)
    if not (np.isfinite(headroom) and headroom >= 0):
        raise ValueError(f"headroom must be a finite number >= 0; got {headroom}")
    eye_left, eye_right = lm[0], lm[1]
    eye_avg = (eye_left + eye_right) * 0.5
    eye_to_eye = eye_right - eye_left
    mouth_avg = (lm[3] + lm[4]) * 0.5
    eye_to_mouth = mouth_avg - eye_avg
    x = eye_to_eye - np.flipud(eye_to_mouth) * [-1, 1]
    norm = np.hypot(*x)
    if norm <= 0:
        raise ValueError("landmarks are degenerate: eye and mouth positions give no face orientation")
    x = x / norm * max(np.hypot(*eye_to_eye) * 2.0, np.hypot(*eye_to_mouth) * 1.8)
    y: np.ndarray = np.flipud(x) * [-1, 1]
    c = eye_avg + eye_to_mouth * 0.1 - headroom * y
    x, y = x * (1.0 + headroom), y * (1.0 + headroom)
    return np.stack([c - x - y, c - x + y, c + x + y, c + x - y])


def _check_quad(quad: np.ndarray) -> np.ndarray:
    q = np.asarray(quad, dtype=np.float64)
    if q.shape != (4, 2) or not np.isfinite(q).all():
        raise ValueError(f"quad must be a finite (4, 2) array; got shape {q.shape}")
    ul, ll, lr, ur = q
    (ax, ay), (bx, by) = ur - ul, ll - ul
    side = max(np.hypot(ax, ay), np.hypot(bx, by))
    if side <= 0 or abs(ax * by - ay * bx) <= 1e-12 * side * side:
        raise ValueError("quad is degenerate (zero area)")
    if np.hypot(*(lr - (ur + ll - ul))) > 1e-6 * side:
        raise ValueError("quad must be a parallelogram (upper-left, lower-left, lower-right, upper-right)")
    return q


def quad_to_crop_matrix(quad: np.ndarray, size: int) -> np.ndarray:
    """2x3 affine taking continuous source px to continuous crop px (quad corners to the crop's corners).

    Solved in float64 from three corners; cv2.getAffineTransform would round through float32, which is
    already 1e-4 px off for coordinates in the thousands. The 2x2 inverse is written out: ``np.linalg.inv``
    goes through OpenBLAS, whose 0.3.2x builds hand even a 2x2 solve to a second thread that then spins on
    sched_yield, and took a third of a crop worker's CPU time.
    """
    ul, ll, _, ur = _check_quad(quad)
    (a, b), (c, d) = np.column_stack([ur - ul, ll - ul]) / float(size)  # crop unit steps, in source px
    inverse = np.array([[d, -b], [-c, a]]) / (a * d - b * c)  # _check_quad refused a zero determinant
    return np.column_stack([inverse, -(inverse[:, 0] * ul[0] + inverse[:, 1] * ul[1])])


def _cv_matrix(crop_matrix: np.ndarray, origin: np.ndarray, scale: np.ndarray) -> np.ndarray:
    """Re-express ``crop_matrix`` for cv2.warpAffine on a region whose pixel (0, 0) starts at ``origin`` and
    whose pixels are ``scale`` source px wide: continuous = index + 0.5 on both sides, hence the offsets."""
    linear = crop_matrix[:, :2] * scale  # region continuous -> crop continuous
    offset = crop_matrix[:, :2] @ origin + crop_matrix[:, 2]
    return np.column_stack([linear, linear.sum(axis=1) * 0.5 + offset - 0.5])


def _crop_centres_in_source(quad: np.ndarray, samples: int) -> np.ndarray:
    ul, ll, _, ur = quad
    t = (np.arange(samples) + 0.5) / samples
    centres: np.ndarray = ul + t[None, :, None] * (ur - ul) + t[:, None, None] * (ll - ul)  # (samples, samples, 2)
    return centres


def _outside_mask(points: np.ndarray, width: int, height: int) -> np.ndarray:
    px, py = points[..., 0], points[..., 1]
    return (px < 0) | (px >= width) | (py < 0) | (py >= height)


def outside_fractions(quad: np.ndarray, width: int, height: int) -> tuple[float, float, float]:
    """(oob, above, side) shares of the crop with no real source pixel behind them.

    Geometric rather than read from pixel values, so it is exact whatever the padding mode and cannot be
    fooled by genuinely black or mirrored-looking image content: areas of the quad clipped to the image, to
    the half-plane above it, and to the two bands beside it (convex intersections, a few microseconds each).
    """
    q = _check_quad(quad)
    if width < 1 or height < 1:
        raise ValueError(f"width and height must be >= 1; got {width}, {height}")
    if ((q >= 0) & (q <= [width, height])).all():  # convex: all corners inside means nothing outside
        return 0.0, 0.0, 0.0
    far = float(np.abs(q).max()) + width + height  # "infinitely" far for these rectangles, finite in float32
    poly = q.astype(np.float32)
    total = abs(float(cv2.contourArea(poly)))

    def share(x0: float, y0: float, x1: float, y1: float) -> float:
        rect = np.array([[x0, y0], [x0, y1], [x1, y1], [x1, y0]], np.float32)
        return float(cv2.intersectConvexConvex(poly, rect)[0]) / total

    def clean(v: float) -> float:  # float32 clipping leaves ~1e-8 where the answer is 0 or 1
        return 0.0 if v < 1e-6 else 1.0 if v > 1 - 1e-6 else v

    inside = share(0, 0, width, height)
    return (clean(1.0 - inside), clean(share(-far, -far, far, 0)),
            clean(share(-far, 0, 0, far) + share(width, 0, far, far)))


def _gaussian_blur(img: np.ndarray, sigma: float) -> np.ndarray:
    """Wide Gaussian blur done at reduced resolution: the result is so smooth that bilinear upsampling loses
    nothing, and a 1024 crop would otherwise need a ~160-tap kernel."""
    k = max(1, int(sigma / 2))
    if k == 1:
        return cv2.GaussianBlur(img, (0, 0), sigmaX=sigma)
    h, w = img.shape[:2]
    small = cv2.resize(img, (max(1, round(w / k)), max(1, round(h / k))), interpolation=cv2.INTER_AREA)
    small = cv2.GaussianBlur(small, (0, 0), sigmaX=sigma / k)
    return cv2.resize(small, (w, h), interpolation=cv2.INTER_LINEAR)


def padding_masks(plan: RegionPlan, quad: np.ndarray, qsize: float, width: int,
                  height: int) -> tuple[np.ndarray, np.ndarray]:
    """FFHQ's padding mask along the region's columns and rows (float32; the mask is their maximum): (distance
    past the image edge) / (that side's pad width), negative inside, at region pixel centres in source px.
    Shared by the OpenCV and torch paths so both pad the same pixels the same way."""
    w, h = plan.shape
    border = max(int(np.rint(qsize * 0.1)), 3)
    least = max(int(np.rint(qsize * 0.3)), 1)
    lo, hi = np.floor(quad.min(axis=0)), np.ceil(quad.max(axis=0))
    pad_left, pad_top = np.maximum(border - lo, least)
    pad_right, pad_bottom = np.maximum(hi - [width, height] + border, least)
    xs = plan.origin[0] + (np.arange(w, dtype=np.float32) + 0.5) * plan.scale[0]
    ys = plan.origin[1] + (np.arange(h, dtype=np.float32) + 0.5) * plan.scale[1]
    mask_x = np.maximum((0.5 - xs) / pad_left, (xs - (width - 0.5)) / pad_right).astype(np.float32)
    mask_y = np.maximum((0.5 - ys) / pad_top, (ys - (height - 0.5)) / pad_bottom).astype(np.float32)
    return mask_x, mask_y


def padding_blur_sigma(plan: RegionPlan, qsize: float) -> float:
    """FFHQ's blur (sigma 0.02 qsize source px), in region px."""
    return qsize * 0.02 / float(plan.scale.mean())


def _blend_padding(region: np.ndarray, plan: RegionPlan, quad: np.ndarray, qsize: float, width: int,
                   height: int) -> np.ndarray:
    """FFHQ's padding: a plain mirror reads as a second face beside the first, so the mirrored area is blurred
    and, further out, faded to the median colour. The blur weight clip(3*mask + 1) also reaches pad/3 *into*
    the image so the seam itself disappears (``padding_masks``). Each step is one native OpenCV pass (numpy's
    equivalents made this the costliest part of a crop)."""
    h, w = region.shape[:2]
    mask_x, mask_y = padding_masks(plan, quad, qsize, width, height)
    mask = np.maximum(mask_x[None, :], mask_y[:, None])
    blur_w = np.clip(mask * 3.0 + 1.0, 0.0, 1.0)
    img: np.ndarray = region.astype(np.float32)
    img = cv2.blendLinear(_gaussian_blur(img, padding_blur_sigma(plan, qsize)), img, blur_w, 1.0 - blur_w)
    step = max(1, int(np.sqrt(h * w / 4096)))  # a subsampled median is as good and much cheaper
    median = np.median(img[::step, ::step].reshape(-1, 3), axis=0)
    fill = cv2.merge([np.full((h, w), float(m), np.float32) for m in median])  # 40x faster than np.full_like
    fade_w = np.clip(mask, 0.0, 1.0)
    return cv2.convertScaleAbs(cv2.blendLinear(fill, img, fade_w, 1.0 - fade_w))  # rounds and saturates


def _lanczos(region: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """Pillow's Lanczos resize: antialiased when shrinking (its kernel widens with the factor), unlike
    cv2.INTER_LANCZOS4, whose fixed 8x8 window aliases below half size; cv2.INTER_AREA does not alias but is a box
    filter, 20-40% softer than FFHQ's crops by mean |Laplacian|."""
    return np.asarray(Image.fromarray(np.ascontiguousarray(region)).resize(shape, Image.Resampling.LANCZOS))


def _ffhq_align(image: np.ndarray, quad: np.ndarray, size: int, padding: PaddingMode) -> np.ndarray:
    """``alignment="ffhq"``: the published recreate_aligned_images steps, to the letter, for crops that must be
    comparable pixel for pixel with FFHQ's. Whole-image Lanczos shrink by floor(qsize / size / 2) when above 1;
    cut to the quad's box plus max(rint(qsize/10), 3); pad (reflect) once the quad is within 4 px of an edge,
    by at least rint(0.3 qsize), blur and fade to the median of the whole padded image; Pillow's bilinear QUAD
    transform at 4x the output side (4096 for 1024) with the quad shifted by half a pixel (the script's
    ``quad + 0.5``), then Lanczos to the output side. ``padding="constant"`` is the script's
    ``enable_padding=False`` (Pillow fills black). ~5x the default mode's time, mostly the 4x transform."""
    q = quad.copy()
    qsize = float(np.hypot(*(q[3] - q[0])))
    img = Image.fromarray(image)
    shrink = int(np.floor(qsize / size * 0.5))
    if shrink > 1:
        img = img.resize((int(np.rint(img.size[0] / shrink)), int(np.rint(img.size[1] / shrink))),
                         Image.Resampling.LANCZOS)
        q, qsize = q / shrink, qsize / shrink
    border = max(int(np.rint(qsize * 0.1)), 3)
    lo, hi = np.floor(q.min(axis=0)).astype(int), np.ceil(q.max(axis=0)).astype(int)
    left, top = max(int(lo[0]) - border, 0), max(int(lo[1]) - border, 0)
    right, bottom = min(int(hi[0]) + border, img.size[0]), min(int(hi[1]) + border, img.size[1])
    if right - left < img.size[0] or bottom - top < img.size[1]:
        img = img.crop((left, top, right, bottom))
        q = q - [left, top]
    lo, hi = np.floor(q.min(axis=0)).astype(int), np.ceil(q.max(axis=0)).astype(int)
    pads = [max(border - int(lo[0]), 0), max(border - int(lo[1]), 0),
            max(int(hi[0]) - img.size[0] + border, 0), max(int(hi[1]) - img.size[1] + border, 0)]
    if padding == "reflect_blur" and max(pads) > border - 4:
        pl, pt, pr, pb = np.maximum(pads, int(np.rint(qsize * 0.3))).tolist()
        arr = np.pad(np.asarray(img, np.float32), ((pt, pb), (pl, pr), (0, 0)), mode="reflect")
        h, w = arr.shape[:2]
        xs, ys = np.arange(w, dtype=np.float32), np.arange(h, dtype=np.float32)
        mx = 1.0 - np.minimum(xs / pl, (w - 1 - xs) / pr)
        my = 1.0 - np.minimum(ys / pt, (h - 1 - ys) / pb)
        mask = np.maximum(mx[None, :], my[:, None])[..., None]
        sigma = qsize * 0.02  # scipy.ndimage.gaussian_filter's kernel: radius int(4 sigma + 0.5), 'reflect' edges
        radius = int(4.0 * sigma + 0.5)
        blurred = cv2.GaussianBlur(arr, (2 * radius + 1, 2 * radius + 1), sigmaX=sigma, sigmaY=sigma,
                                   borderType=cv2.BORDER_REFLECT)
        arr += (blurred - arr) * np.clip(mask * 3.0 + 1.0, 0.0, 1.0)
        arr += (np.median(arr, axis=(0, 1)) - arr) * np.clip(mask, 0.0, 1.0)
        img = Image.fromarray(np.clip(np.rint(arr), 0, 255).astype(np.uint8))
        q = q + np.array([pl, pt], dtype=np.float64)
    big = 4 * size
    img = img.transform((big, big), Image.Transform.QUAD, tuple((q + 0.5).flatten().tolist()),
                        Image.Resampling.BILINEAR)
    return np.asarray(img.resize((size, size), Image.Resampling.LANCZOS))


def align_face(image: np.ndarray, landmarks: np.ndarray, size: int = 512, headroom: float = 0.0,
               padding: PaddingMode = "reflect_blur", alignment: AlignmentMode = "default") -> Alignment:
    """Cut the FFHQ square out of ``image`` (H, W, 3 uint8 RGB) as a ``size`` x ``size`` crop.

    ``alignment="ffhq"`` reproduces the published script's pixels (``_ffhq_align``). The default mode keeps
    FFHQ's antialiasing but not its cost: only the photo's pixels inside the quad's box (plus a margin) are
    touched. A face larger than the crop is shrunk with Lanczos to one pixel per crop pixel (the antialiasing: a
    single interpolating warp from a larger source aliases), mirrored outwards and rotated straight to ``size``
    with OpenCV's bicubic warp, whose a = -0.75 kernel keeps the detail FFHQ's 4x bilinear transform plus
    Lanczos keeps (a bilinear warp at 1:1 was 20-40% softer). A face smaller than the crop is rotated bilinearly
    at twice the crop side and brought down with OpenCV's bicubic resize: on the eye rules' dev photos, most of
    them enlarged, bicubic at 1:1 read a few more closed and covered eyes as open (benchmarks/eval_dev.py).
    Measured differences from the script (benchmarks/bench_align.py): as sharp or a little sharper (mean
    |Laplacian| ratio 1.04-1.14 at 128-1024), no
    ``+ 0.5`` shift (MTCNN landmarks are continuous coordinates, see the module docstring), padding only when a
    corner leaves the photo, faded to the median of the crop region rather than of the whole padded image.
    """
    if not isinstance(image, np.ndarray) or image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
        desc = f"{image.shape} {image.dtype}" if isinstance(image, np.ndarray) else type(image).__name__
        raise ValueError(f"image must be an (H, W, 3) uint8 RGB array (convert grayscale first); got {desc}")
    if not isinstance(size, (int, np.integer)) or isinstance(size, bool) or size < 1:
        raise ValueError(f"size must be a positive integer; got {size!r}")
    if padding not in _PADDING_MODES:
        raise ValueError(f"padding must be one of {_PADDING_MODES}; got {padding!r}")
    if alignment not in _ALIGNMENT_MODES:
        raise ValueError(f"alignment must be one of {_ALIGNMENT_MODES}; got {alignment!r}")
    height, width = image.shape[:2]
    place = place_face(landmarks, width, height, int(size), headroom)
    if alignment == "ffhq":
        crop = _ffhq_align(image, place.quad, int(size), padding)
    else:
        crop = _default_align(image, place, int(size), padding)
    return Alignment(quad=place.quad, crop=crop, oob_fraction=place.oob_fraction,
                     above_fraction=place.above_fraction, side_fraction=place.side_fraction,
                     eye_angle_deg=place.eye_angle_deg)


@dataclass(frozen=True, eq=False)
class Placement:
    """Everything about one alignment but its pixels: the quad and how much of the crop has no source pixel
    behind it. Computed once here for both the OpenCV path and the torch path (faces/align_torch.py), so the
    catalog's numbers cannot depend on which one cut the crop."""

    quad: np.ndarray
    qsize: float  # the quad's side in source px
    oob_fraction: float
    above_fraction: float
    side_fraction: float
    eye_angle_deg: float


def place_face(landmarks: np.ndarray, width: int, height: int, size: int, headroom: float = 0.0) -> Placement:
    """The FFHQ quad of ``landmarks`` in a ``width`` x ``height`` photo, and the padding bookkeeping of its
    ``size`` crop (see :class:`Alignment`)."""
    lm = _check_landmarks(landmarks)
    quad = ffhq_quad(lm, headroom)
    crop_matrix = quad_to_crop_matrix(quad, size)
    oob, above, side = outside_fractions(quad, width, height)
    eyes = lm[:2] @ crop_matrix[:, :2].T + crop_matrix[:, 2]
    dx, dy = eyes[1] - eyes[0]
    return Placement(quad=quad, qsize=float(np.hypot(*(quad[3] - quad[0]))), oob_fraction=oob,
                     above_fraction=above, side_fraction=side, eye_angle_deg=float(np.degrees(np.arctan2(dy, dx))))


@dataclass(frozen=True, eq=False)
class RegionPlan:
    """The default mode's working region: the quad's box plus a margin, at one region px per crop px at most.

    Only the part of the box inside the photo (``inner``) is ever resampled: it is shrunk with Lanczos to
    ``inner_shape`` when the face is larger than the crop, then mirrored outwards by ``pads`` region px. Shrinking
    before padding touches only real pixels, which for a face that fills its photo is a third of the box."""

    inner: tuple[int, int, int, int]  # the box clipped to the photo, source px: x0, y0, x1, y1
    inner_shape: tuple[int, int]  # (width, height) of ``inner`` after the shrink
    pads: tuple[int, int, int, int]  # region px mirrored beyond ``inner``: left, top, right, bottom
    shape: tuple[int, int]  # (width, height) of the whole region
    shrunk: bool
    origin: np.ndarray  # source px of the region's top-left corner
    scale: np.ndarray  # source px per region px, (x, y)
    leaves_image: bool  # a corner of the quad is outside the photo: padding is visible in the crop


def plan_region(quad: np.ndarray, size: int, width: int, height: int, qsize: float) -> RegionPlan:
    """The default mode's region for ``quad`` (see :func:`align_face`); ValueError when the quad lies wholly
    outside the photo."""
    border = max(int(np.rint(qsize * 0.1)), 3)
    x0, y0 = (np.floor(quad.min(axis=0)).astype(int) - border).tolist()
    x1, y1 = (np.ceil(quad.max(axis=0)).astype(int) + border).tolist()
    ix0, iy0, ix1, iy1 = max(x0, 0), max(y0, 0), min(x1, width), min(y1, height)
    if iy1 <= iy0 or ix1 <= ix0:
        raise ValueError(f"the face quad {quad.round(1).tolist()} lies entirely outside the {width}x{height} image")
    factor = min(1.0, size / qsize)
    inner_w, inner_h = max(1, round((ix1 - ix0) * factor)), max(1, round((iy1 - iy0) * factor))
    sx, sy = (ix1 - ix0) / inner_w, (iy1 - iy0) / inner_h
    pads = (round((ix0 - x0) / sx), round((iy0 - y0) / sy), round((x1 - ix1) / sx), round((y1 - iy1) / sy))
    return RegionPlan(inner=(ix0, iy0, ix1, iy1), inner_shape=(inner_w, inner_h),
                      pads=pads, shape=(pads[0] + inner_w + pads[2], pads[1] + inner_h + pads[3]),
                      shrunk=factor < 1.0, origin=np.array([ix0 - pads[0] * sx, iy0 - pads[1] * sy]),
                      scale=np.array([sx, sy]),
                      leaves_image=bool(((quad < 0) | (quad > [width, height])).any()))  # convex: a corner is out


def outside_crop_mask(quad: np.ndarray, size: int, width: int, height: int) -> np.ndarray:
    """(size, size) bool: crop pixels whose centre's source point is outside the photo (blacked out by
    ``padding="constant"``)."""
    return _outside_mask(_crop_centres_in_source(quad, size), width, height)


def _default_align(image: np.ndarray, place: Placement, size: int, padding: PaddingMode) -> np.ndarray:
    height, width = image.shape[:2]
    quad, qsize = place.quad, place.qsize
    plan = plan_region(quad, size, width, height, qsize)
    ix0, iy0, ix1, iy1 = plan.inner
    inner = image[iy0:iy1, ix0:ix1]
    if plan.shrunk:
        inner = _lanczos(inner, plan.inner_shape)
    # Mirror for reflect_blur; for constant, repeat the edge so that pixels just inside don't bleed black.
    mode = cv2.BORDER_REFLECT_101 if padding == "reflect_blur" else cv2.BORDER_REPLICATE
    left, top, right, bottom = plan.pads
    region = cv2.copyMakeBorder(np.ascontiguousarray(inner), top, bottom, left, right, mode)
    if padding == "reflect_blur" and plan.leaves_image:
        region = _blend_padding(region, plan, quad, qsize, width, height)
    if plan.shrunk:
        crop = cv2.warpAffine(region, _cv_matrix(quad_to_crop_matrix(quad, size), plan.origin, plan.scale),
                              (size, size), flags=cv2.INTER_CUBIC, borderMode=cv2.BORDER_REPLICATE)
    else:  # the photo is coarser than the crop: see align_face on why this face is rotated at 2x
        big = 2 * size
        crop = cv2.warpAffine(region, _cv_matrix(quad_to_crop_matrix(quad, big), plan.origin, plan.scale),
                              (big, big), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
        crop = cv2.resize(crop, (size, size), interpolation=cv2.INTER_CUBIC)
    if padding == "constant" and plan.leaves_image:
        crop[outside_crop_mask(quad, size, width, height)] = 0
    return crop
