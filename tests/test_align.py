"""Tests for the FFHQ alignment maths: the published quad, sub-pixel mapping, padding and bookkeeping."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from facecurate.faces.align import (
    Alignment,
    PaddingMode,
    align_face,
    ffhq_quad,
    outside_fractions,
    quad_to_crop_matrix,
)

# A symmetric frontal face in units of the eye distance, shifted so that the FFHQ quad centre
# (eye_avg + 0.1 * eye_to_mouth) sits at the origin. Its quad side is 4 eye distances.
_CANONICAL = np.array([[-0.5, 0.0], [0.5, 0.0], [0.0, 0.6], [-0.4, 1.0], [0.4, 1.0]]) - [0.0, 0.1]


def face_landmarks(center: tuple[float, float], eye_dist: float, angle_deg: float = 0.0) -> np.ndarray:
    """MTCNN-ordered landmarks of an upright face rotated by ``angle_deg`` (clockwise on screen, y down)."""
    t = np.radians(angle_deg)
    rot = np.array([[np.cos(t), -np.sin(t)], [np.sin(t), np.cos(t)]])
    return _CANONICAL * eye_dist @ rot.T + np.asarray(center, dtype=np.float64)


def reference_quad(lm: np.ndarray) -> np.ndarray:
    """The quad as the FFHQ script (ffhq-dataset/download_ffhq.py, recreate_aligned_images) computes it."""
    eye_left, eye_right = lm[0], lm[1]
    eye_avg = (eye_left + eye_right) * 0.5
    eye_to_eye = eye_right - eye_left
    mouth_avg = (lm[3] + lm[4]) * 0.5
    eye_to_mouth = mouth_avg - eye_avg
    x = eye_to_eye - np.flipud(eye_to_mouth) * [-1, 1]
    x /= np.hypot(*x)
    x *= max(np.hypot(*eye_to_eye) * 2.0, np.hypot(*eye_to_mouth) * 1.8)
    y = np.flipud(x) * [-1, 1]
    c = eye_avg + eye_to_mouth * 0.1
    return np.stack([c - x - y, c - x + y, c + x + y, c + x - y])


def smooth_texture(height: int, width: int, cell: int, lo: float, hi: float, seed: int = 0) -> np.ndarray:
    """Band-limited random RGB texture (float32): features about ``cell`` px wide, values in [lo, hi]."""
    rng = np.random.default_rng(seed)
    coarse = rng.random((height // cell + 2, width // cell + 2, 3)).astype(np.float32)
    big = cv2.resize(coarse, (coarse.shape[1] * cell, coarse.shape[0] * cell), interpolation=cv2.INTER_CUBIC)
    big = big[cell : cell + height, cell : cell + width]
    big = (big - big.min()) / (big.max() - big.min())
    return lo + big * (hi - lo)


def crop_centres_in_source(quad: np.ndarray, size: int) -> np.ndarray:
    """Source point behind every crop pixel centre, by inverting quad_to_crop_matrix (an independent path)."""
    m = quad_to_crop_matrix(quad, size)
    inv = np.linalg.inv(m[:, :2])
    v, u = np.mgrid[0:size, 0:size] + 0.5
    pts = np.stack([u, v], axis=-1) - m[:, 2]
    return pts @ inv.T


def cv_matrix(quad: np.ndarray, size: int) -> np.ndarray:
    """quad_to_crop_matrix in OpenCV's integer-pixel-centre convention, for whole-image reference warps."""
    m = quad_to_crop_matrix(quad, size)
    return np.column_stack([m[:, :2], m[:, 2] + m[:, :2].sum(axis=1) * 0.5 - 0.5])


# --- 1. the published quad -------------------------------------------------------------------------------

@pytest.mark.parametrize(
    "lm",
    [
        face_landmarks((500.0, 400.0), 120.0, 0.0),
        face_landmarks((300.5, 720.25), 80.0, 30.0),
        face_landmarks((-40.0, 10.0), 300.0, -137.0),
        # asymmetric: head turned, mouth off-centre, eyes at different heights
        np.array([[410.3, 300.7], [478.9, 291.2], [470.0, 350.5], [420.1, 392.8], [466.4, 389.9]]),
        # long face: the eye-to-mouth term (1.8 * |e2m|) wins over 2 * |e2e|
        np.array([[100.0, 100.0], [130.0, 100.0], [115.0, 140.0], [105.0, 190.0], [125.0, 190.0]]),
    ],
)
def test_ffhq_quad_matches_published_formula(lm: np.ndarray) -> None:
    quad = ffhq_quad(lm)
    assert quad.shape == (4, 2)
    assert quad.dtype == np.float64
    np.testing.assert_allclose(quad, reference_quad(lm.copy()), rtol=0, atol=1e-9)


def test_ffhq_quad_accepts_lists_and_does_not_modify_input() -> None:
    lm = face_landmarks((200.0, 200.0), 50.0, 12.0)
    before = lm.copy()
    np.testing.assert_allclose(ffhq_quad(lm.tolist()), reference_quad(before), atol=1e-9)
    np.testing.assert_array_equal(lm, before)


# --- 2. sub-pixel accuracy of the crop ------------------------------------------------------------------

def test_quad_to_crop_matrix_maps_corners_to_pixel_grid_corners() -> None:
    quad = ffhq_quad(face_landmarks((812.3, 655.9), 287.5, 23.0))
    m = quad_to_crop_matrix(quad, 1024)
    assert m.shape == (2, 3)
    mapped = quad @ m[:, :2].T + m[:, 2]
    np.testing.assert_allclose(mapped, [[0, 0], [0, 1024], [1024, 1024], [1024, 0]], rtol=0, atol=1e-6)


@pytest.mark.parametrize(
    ("size", "eye_dist", "angle", "sigma"),
    [
        (1024, 250.0, -30.0, 4.0),  # quad side 1000 < 1024: upsampling path
        (1024, 287.5, 10.0, 4.0),  # quad side 1150 > 1024: area pre-shrink path
        (256, 287.5, 10.0, 8.0),  # 4.5x pre-shrink
    ],
)
def test_blobs_land_where_the_quad_mapping_predicts(size: int, eye_dist: float, angle: float, sigma: float) -> None:
    height, width = 1400, 1600
    lm = face_landmarks((800.0, 700.0), eye_dist, angle)
    quad = ffhq_quad(lm)
    m = quad_to_crop_matrix(quad, size)
    background = smooth_texture(height, width, 100, 20.0, 80.0)
    yy, xx = np.mgrid[0:height, 0:width] + 0.5  # pixel centres, continuous coordinates
    blobs = np.zeros((height, width), np.float32)
    targets = []
    for u in (0.1, 0.5, 0.9):
        for v in (0.1, 0.5, 0.9):
            p = quad[0] + u * (quad[3] - quad[0]) + v * (quad[1] - quad[0])
            blobs += 150.0 * np.exp(-((xx - p[0]) ** 2 + (yy - p[1]) ** 2) / (2 * sigma**2))
            targets.append(p @ m[:, :2].T + m[:, 2])
    plain = align_face(np.rint(background).astype(np.uint8), lm, size=size)
    dotted = align_face(np.rint(background + blobs[..., None]).astype(np.uint8), lm, size=size)
    assert plain.oob_fraction == 0.0  # the whole quad is real image: no padding in play
    diff = dotted.crop.astype(np.float64).mean(axis=2) - plain.crop.astype(np.float64).mean(axis=2)
    radius = int(6 * sigma * size / (4 * eye_dist)) + 3
    for target in targets:
        cx, cy = (int(t) for t in target)
        win = diff[cy - radius : cy + radius + 1, cx - radius : cx + radius + 1]
        vv, uu = np.mgrid[cy - radius : cy + radius + 1, cx - radius : cx + radius + 1] + 0.5
        centroid = np.array([(win * uu).sum(), (win * vv).sum()]) / win.sum()
        # The brief's bound is 0.5 px; a half-pixel convention slip costs ~0.7 px, the maths here ~0.02 px.
        assert np.hypot(*(centroid - target)) < 0.1, (target, centroid)


# --- 3. de-rotation -------------------------------------------------------------------------------------

@pytest.mark.parametrize("angle", [-60.0, -30.0, -7.5, 0.0, 15.0, 45.0, 90.0, 170.0])
def test_eye_line_is_horizontal_in_the_crop(angle: float) -> None:
    lm = face_landmarks((400.0, 300.0), 60.0, angle)
    image = np.full((600, 800, 3), 128, np.uint8)
    result = align_face(image, lm, size=128)
    assert abs(result.eye_angle_deg) < 0.5
    # the left eye must stay on the left: a 180-degree slip would also read as a level eye line
    m = quad_to_crop_matrix(result.quad, 128)
    eyes = lm[:2] @ m[:, :2].T + m[:, 2]
    assert eyes[0, 0] < eyes[1, 0]


def test_eye_angle_reports_residual_tilt_of_an_asymmetric_face() -> None:
    # Mouth shifted sideways: FFHQ's x axis mixes the eye line with the eye-to-mouth normal, so the eyes end
    # up tilted in the crop; the reported angle must match that tilt measured independently.
    lm = face_landmarks((400.0, 300.0), 60.0, 0.0)
    lm[3:] += [25.0, 0.0]
    result = align_face(np.full((600, 800, 3), 128, np.uint8), lm, size=128)
    m = quad_to_crop_matrix(result.quad, 128)
    eyes = lm[:2] @ m[:, :2].T + m[:, 2]
    expected = np.degrees(np.arctan2(eyes[1, 1] - eyes[0, 1], eyes[1, 0] - eyes[0, 0]))
    assert abs(expected) > 5.0
    assert result.eye_angle_deg == pytest.approx(expected, abs=1e-9)


# --- 4. headroom ----------------------------------------------------------------------------------------

@pytest.mark.parametrize("angle", [0.0, 25.0, -70.0])
def test_headroom_grows_the_square_upwards_from_a_fixed_bottom_edge(angle: float) -> None:
    h = 0.3
    lm = face_landmarks((500.0, 500.0), 100.0, angle)
    base, tall = ffhq_quad(lm), ffhq_quad(lm, headroom=h)
    ul, ll, lr, ur = base
    half_x, half_y = (ur - ul) / 2, (ll - ul) / 2  # the published x and y vectors
    # bottom edge: same midpoint, same line, spread by h*|x| on each side so the square stays square
    np.testing.assert_allclose((tall[1] + tall[2]) / 2, (ll + lr) / 2, atol=1e-9)
    np.testing.assert_allclose(tall[1], ll - h * half_x, atol=1e-9)
    np.testing.assert_allclose(tall[2], lr + h * half_x, atol=1e-9)
    # top edge moved up (against y) by 2*h*|y|
    np.testing.assert_allclose((tall[0] + tall[3]) / 2, (ul + ur) / 2 - 2 * h * half_y, atol=1e-9)
    up = np.dot((ul + ur) / 2 - (tall[0] + tall[3]) / 2, half_y / np.hypot(*half_y))
    assert up == pytest.approx(2 * h * np.hypot(*half_y), abs=1e-9)
    # still a square, same orientation
    sides = [np.hypot(*(tall[(i + 1) % 4] - tall[i])) for i in range(4)]
    np.testing.assert_allclose(sides, (1 + h) * 2 * np.hypot(*half_x), rtol=1e-12)
    assert np.dot(tall[3] - tall[0], tall[1] - tall[0]) == pytest.approx(0.0, abs=1e-6)
    np.testing.assert_allclose(ffhq_quad(lm, headroom=0.0), base, atol=0)


def test_align_face_uses_the_headroom_quad() -> None:
    lm = face_landmarks((300.0, 300.0), 50.0, 5.0)
    result = align_face(np.full((600, 600, 3), 90, np.uint8), lm, size=64, headroom=0.25)
    np.testing.assert_allclose(result.quad, ffhq_quad(lm, headroom=0.25), atol=0)
    assert abs(result.eye_angle_deg) < 0.5


# --- 5. out-of-image fractions --------------------------------------------------------------------------

def _square(x0: float, y0: float, side: float) -> np.ndarray:
    return np.array([[x0, y0], [x0, y0 + side], [x0 + side, y0 + side], [x0 + side, y0]], dtype=np.float64)


def test_outside_fractions_axis_aligned_cases() -> None:
    assert outside_fractions(_square(100, 100, 300), 1000, 800) == (0.0, 0.0, 0.0)
    oob, above, side = outside_fractions(_square(100, -100, 300), 1000, 800)
    assert above == pytest.approx(1 / 3, abs=0.01)
    assert oob == pytest.approx(1 / 3, abs=0.01)
    assert side == 0.0
    oob, above, side = outside_fractions(_square(850, 200, 300), 1000, 800)
    assert (oob, above) == (pytest.approx(0.5, abs=0.01), 0.0)
    assert side == pytest.approx(0.5, abs=0.01)
    oob, above, side = outside_fractions(_square(-150, 200, 300), 1000, 800)  # left edge counts as side too
    assert side == pytest.approx(0.5, abs=0.01)
    oob, above, side = outside_fractions(_square(300, 650, 300), 1000, 800)  # below: oob but neither share
    assert (oob, above, side) == (pytest.approx(0.5, abs=0.01), 0.0, 0.0)


def test_outside_fractions_corner_is_above_not_side() -> None:
    # Upper-left quarter of the quad is both above and left of the image: it must count once, as above.
    oob, above, side = outside_fractions(_square(-150, -150, 300), 1000, 800)
    assert oob == pytest.approx(0.75, abs=0.01)
    assert above == pytest.approx(0.5, abs=0.01)
    assert side == pytest.approx(0.25, abs=0.01)
    assert oob >= above + side - 1e-12


def _area_share(quad: np.ndarray, box: tuple[float, float, float, float]) -> float:
    x0, y0, x1, y1 = box
    rect = np.array([[x0, y0], [x0, y1], [x1, y1], [x1, y0]], np.float32)
    area, _ = cv2.intersectConvexConvex(quad.astype(np.float32), rect)
    return area / abs(cv2.contourArea(quad.astype(np.float32)))


@pytest.mark.parametrize(("center", "angle"), [((60.0, 40.0), 30.0), ((950.0, 500.0), -50.0), ((500, 780), 15.0)])
def test_outside_fractions_match_polygon_areas_for_rotated_quads(center: tuple[float, float], angle: float) -> None:
    width, height, far = 1000, 800, 1e5
    quad = ffhq_quad(face_landmarks(center, 60.0, angle))
    oob, above, side = outside_fractions(quad, width, height)
    assert oob == pytest.approx(1 - _area_share(quad, (0, 0, width, height)), abs=0.01)
    assert above == pytest.approx(_area_share(quad, (-far, -far, far, 0)), abs=0.01)
    expected_side = _area_share(quad, (-far, 0, 0, far)) + _area_share(quad, (width, 0, far, far))
    assert side == pytest.approx(expected_side, abs=0.01)
    assert oob > 0.05


# --- 6. padding -----------------------------------------------------------------------------------------

def test_padding_modes_beside_the_right_edge() -> None:
    height = width = 800
    size = 256
    fine = np.random.default_rng(1).normal(0.0, 12.0, (height, width, 3)).astype(np.float32)
    image = np.clip(smooth_texture(height, width, 60, 50.0, 210.0) + fine, 40, 230).astype(np.uint8)
    lm = face_landmarks((800.0, 400.0), 150.0, 0.0)  # upright, side 600, right half past the image edge
    const = align_face(image, lm, size=size, padding="constant")
    soft = align_face(image, lm, size=size)  # reflect_blur is the default
    assert isinstance(soft, Alignment)
    assert soft.side_fraction == pytest.approx(0.5, abs=0.01)
    assert (soft.oob_fraction, soft.above_fraction) == (pytest.approx(0.5, abs=0.01), 0.0)

    src = crop_centres_in_source(const.quad, size)
    outside = (src[..., 0] >= width) | (src[..., 0] < 0) | (src[..., 1] < 0) | (src[..., 1] >= height)
    assert outside.mean() == pytest.approx(const.oob_fraction, abs=0.01)
    assert (const.crop[outside] == 0).all()
    assert (const.crop[~outside] > 0).all()  # the image is >= 40 everywhere, and no black bleeds inwards

    assert soft.crop[outside].mean() > 40
    # Far inside, beyond the blend's reach, both modes show the same pixels. FFHQ's pad on that side is the
    # overshoot plus a 0.1 * side border (300 + 60 px), and the blur reaches a third of it into the image.
    qside = 600.0
    deep = src[..., 0] < width - (0.5 + 0.1) * qside / 3 - 8
    np.testing.assert_array_equal(soft.crop[deep], const.crop[deep])
    # ...while just inside the edge the blur already blends in, so that the seam itself does not show.
    seam = ~outside & (src[..., 0] > width - 0.05 * qside)
    assert np.abs(soft.crop[seam].astype(np.float64) - const.crop[seam]).mean() > 3.0

    # Just past the edge the padding is the mirror image (OpenCV/np.pad "reflect": x -> 2W - 1 - x).
    gray = soft.crop.astype(np.float64).mean(axis=2)
    near = outside & (src[..., 0] < width + 0.05 * qside)
    mirror_x = (2 * width - 1 - src[..., 0]).astype(np.float32) - 0.5
    mirror = cv2.remap(image, mirror_x, (src[..., 1] - 0.5).astype(np.float32), cv2.INTER_LINEAR)
    assert np.corrcoef(gray[near], mirror.astype(np.float64).mean(axis=2)[near])[0, 1] > 0.8

    # Far out it is much smoother than a plain mirror. The quad is axis-aligned, so crop columns map to
    # source x and the plain mirror of the far-outside columns is a set of inside columns of the same crop.
    col_x = src[0, :, 0]
    far_cols = np.flatnonzero((col_x > width + 0.2 * qside) & (col_x < width + 0.45 * qside))
    mirror_cols = np.flatnonzero((col_x > width - 0.45 * qside) & (col_x < width - 0.2 * qside))
    laplacian = cv2.Laplacian(gray, cv2.CV_64F)[8:-8]
    assert laplacian[:, far_cols].var() < 0.2 * laplacian[:, mirror_cols].var()

    # Furthest out (about 0.8 of the pad) it has faded most of the way to the median colour.
    median = np.median(image.reshape(-1, 3), axis=0)
    last_cols = np.flatnonzero(col_x > width + 0.42 * qside)
    faded = np.abs(soft.crop[:, last_cols].astype(np.float64) - median).mean()
    mirrored = np.abs(soft.crop[:, mirror_cols].astype(np.float64) - median).mean()
    assert faded < 0.35 * mirrored


@pytest.mark.parametrize("padding", ["reflect_blur", "constant"])
@pytest.mark.parametrize(("center", "eye_dist"), [((390.0, 20.0), 60.0), ((10.0, 300.0), 200.0)])
def test_uniform_image_stays_uniform(padding: PaddingMode, center: tuple[float, float], eye_dist: float) -> None:
    # Nothing in the pipeline may darken or tint real pixels at the image edge: replicated (constant) or
    # mirrored, blurred and median-faded (reflect_blur) padding of a flat image is that same flat colour.
    image = np.empty((300, 400, 3), np.uint8)
    image[:] = (200, 120, 40)
    result = align_face(image, face_landmarks(center, eye_dist, 20.0), size=128, padding=padding)
    assert result.oob_fraction > 0.1
    src = crop_centres_in_source(result.quad, 128)
    inside = (src[..., 0] >= 0) & (src[..., 0] < 400) & (src[..., 1] >= 0) & (src[..., 1] < 300)
    assert (result.crop[inside] == (200, 120, 40)).all()
    expected_outside = (0, 0, 0) if padding == "constant" else (200, 120, 40)
    assert (result.crop[~inside] == expected_outside).all()


def test_padding_above_the_head_counts_as_above() -> None:
    image = np.clip(smooth_texture(600, 600, 40, 30.0, 220.0), 0, 255).astype(np.uint8)
    lm = face_landmarks((300.0, 0.0), 50.0, 0.0)  # quad side 200 centred on the top edge
    result = align_face(image, lm, size=128, padding="constant")
    assert result.above_fraction == pytest.approx(0.5, abs=0.01)
    assert result.side_fraction == 0.0
    assert (result.crop[:60] == 0).all()
    assert (result.crop[68:] > 0).all()


# --- 7. large faces -------------------------------------------------------------------------------------

@pytest.mark.parametrize("padding", ["reflect_blur", "constant"])
def test_huge_face_matches_a_direct_whole_image_warp(padding: PaddingMode) -> None:
    size = 256
    image = np.rint(smooth_texture(4000, 4000, 100, 0.0, 255.0, seed=3)).astype(np.uint8)
    lm = face_landmarks((2000.0, 2000.0), 750.0, 15.0)  # quad side 3000, 11.7 source px per crop px
    result = align_face(image, lm, size=size, padding=padding)
    assert result.crop.shape == (size, size, 3)
    assert result.crop.dtype == np.uint8
    assert result.oob_fraction == 0.0
    # Reference: no shrink, no region, one bilinear warp of the whole image (fine for this smooth texture).
    m = cv_matrix(result.quad, size)
    direct = cv2.warpAffine(image, m, (size, size), flags=cv2.INTER_LINEAR).astype(np.float64)
    err = np.abs(result.crop.astype(np.float64) - direct).mean()
    shifted = cv2.warpAffine(image, m + np.array([[0, 0, 1], [0, 0, 0]]), (size, size), flags=cv2.INTER_LINEAR)
    assert err < 1.5
    assert np.abs(shifted.astype(np.float64) - direct).mean() > 4 * err  # a one-pixel slip would show


def test_large_face_is_area_averaged_not_point_sampled() -> None:
    # i.i.d. noise, 5.9 source px per crop px: an anti-aliased crop averages ~35 pixels into each output
    # pixel (std ~74 / 6), while interpolating straight from the full-size image keeps almost all of it.
    image = np.random.default_rng(7).integers(0, 256, (2000, 2000, 3), dtype=np.uint8)
    result = align_face(image, face_landmarks((1000.0, 1000.0), 375.0, 20.0), size=256)
    assert result.crop.astype(np.float64).std() < 20.0
    assert abs(result.crop.astype(np.float64).mean() - 127.5) < 3.0


def test_huge_face_over_the_edge_matches_downscaled_input() -> None:
    # The same scene at full and at quarter resolution must give nearly the same crop, padding included:
    # the padding is defined in units of the quad, so it must not depend on the source resolution.
    size = 128
    full = np.rint(smooth_texture(3200, 3200, 160, 20.0, 235.0, seed=5)).astype(np.uint8)
    small = cv2.resize(full, (800, 800), interpolation=cv2.INTER_AREA)
    lm = face_landmarks((2900.0, 600.0), 500.0, -8.0)  # side 2000, runs past the top and right edges
    big_crop = align_face(full, lm, size=size).crop.astype(np.float64)
    small_crop = align_face(small, lm / 4, size=size).crop.astype(np.float64)
    assert np.abs(big_crop - small_crop).mean() < 1.0


# --- 8. validation --------------------------------------------------------------------------------------

@pytest.mark.parametrize(
    ("landmarks", "message"),
    [
        (np.zeros((4, 2)), r"shape \(5, 2\)"),
        (np.zeros((5, 3)), r"shape \(5, 2\)"),
        (np.zeros(10), r"shape \(5, 2\)"),
        (np.array([[1, 2], [3, np.nan], [5, 6], [7, 8], [9, 10]], dtype=float), "NaN or infinite"),
        (np.array([[1, 2], [3, 4], [np.inf, 6], [7, 8], [9, 10]], dtype=float), "NaN or infinite"),
        (np.full((5, 2), 7.0), "degenerate"),
    ],
)
def test_bad_landmarks_are_rejected(landmarks: np.ndarray, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        ffhq_quad(landmarks)
    with pytest.raises(ValueError, match=message):
        align_face(np.zeros((100, 100, 3), np.uint8), landmarks)


@pytest.mark.parametrize(
    "image",
    [np.zeros((100, 100), np.uint8), np.zeros((100, 100, 4), np.uint8), np.zeros((100, 100, 3), np.float32)],
)
def test_non_rgb_uint8_images_are_rejected(image: np.ndarray) -> None:
    with pytest.raises(ValueError, match=r"\(H, W, 3\) uint8 RGB"):
        align_face(image, face_landmarks((50.0, 50.0), 10.0))


def test_bad_options_are_rejected() -> None:
    image, lm = np.zeros((100, 100, 3), np.uint8), face_landmarks((50.0, 50.0), 10.0)
    with pytest.raises(ValueError, match="size"):
        align_face(image, lm, size=0)
    with pytest.raises(ValueError, match="padding"):
        align_face(image, lm, padding="edge")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="headroom"):
        align_face(image, lm, headroom=-0.1)
    with pytest.raises(ValueError, match="outside"):
        align_face(image, face_landmarks((5000.0, 50.0), 10.0))
    with pytest.raises(ValueError, match="parallelogram"):
        quad_to_crop_matrix(np.array([[0, 0], [0, 10], [12, 10], [10, 0]], dtype=float), 64)
    with pytest.raises(ValueError, match="degenerate"):
        outside_fractions(np.zeros((4, 2)), 100, 100)
