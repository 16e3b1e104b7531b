"""Measures from the alignment geometry alone: padding shares, headroom, size, pose, other faces.

All pure functions of the face record (landmarks, quad, fractions, boxes); no pixels are read.
"""

from __future__ import annotations

import numpy as np

# Skull top above the eye line, in eye-to-mouth distances (adult head proportions, hair not counted).
HEAD_TOP_E2M = 1.8


def padding_measures(oob: float, above: float, side: float) -> dict[str, float]:
    """Mirroring is padding not explained by a missing top: beside and below the face, where reflected hair
    and skin smear into the cheeks. Padding above the head is the headroom rule's business."""
    return {"mirroring": max(0.0, oob - above), "mirroring_side": side, "above_fraction": above}


def headroom_iod(landmarks: np.ndarray) -> float:
    """Distance from the estimated top of the skull to the photo's top edge, in inter-ocular distances.

    Negative when the head is cut by the top edge. The 'up' direction is the face's own (perpendicular to
    the eye line), so a tilted head is measured along its axis and then projected on the image's y.
    """
    lm = np.asarray(landmarks, dtype=float)
    eye_avg = (lm[0] + lm[1]) / 2
    e2e = lm[1] - lm[0]
    e2m = (lm[3] + lm[4]) / 2 - eye_avg
    iod = float(np.hypot(*e2e)) or 1.0
    up = -e2m / (np.hypot(*e2m) or 1.0)
    top = eye_avg + up * HEAD_TOP_E2M * float(np.hypot(*e2m))
    return float(top[1] / iod)


def upscale_factor(quad: np.ndarray, crop_size: int) -> float:
    """How much the crop enlarges the photo: crop side / quad side in source pixels (>1 invents detail)."""
    q = np.asarray(quad, dtype=float)
    side = float(np.hypot(*(q[3] - q[0])))
    return crop_size / side if side > 0 else float("inf")


def pose_measures(landmarks: np.ndarray) -> dict[str, float]:
    """Yaw, pitch and roll proxies from the 5 MTCNN points, each scaled so 1.0 is 'extreme'.

    yaw: the nose's sideways offset from the eye midpoint over half the eye distance (0 frontal, ~1 when
    the nose reaches an eye: ~60° turn). pitch: where the nose sits between the eye line and the mouth
    (about 0.5 frontal). roll: the eye line's angle in the photo (alignment removes it, but a face lying
    sideways is still unusual)."""
    lm = np.asarray(landmarks, dtype=float)
    eye_avg = (lm[0] + lm[1]) / 2
    e2e = lm[1] - lm[0]
    iod = float(np.hypot(*e2e)) or 1.0
    x_axis = e2e / iod
    y_axis = np.array([-x_axis[1], x_axis[0]])
    nose = lm[2] - eye_avg
    mouth = (lm[3] + lm[4]) / 2 - eye_avg
    yaw = abs(float(nose @ x_axis)) / (iod / 2)
    mouth_y = float(mouth @ y_axis) or 1.0
    pitch_pos = float(nose @ y_axis) / mouth_y
    roll = float(np.degrees(np.arctan2(e2e[1], e2e[0])))
    return {"pose_yaw": yaw, "pose_pitch": pitch_pos, "pose_roll": roll,
            "extreme_pose": max(yaw / 0.8, abs(pitch_pos - 0.55) / 0.35, abs(roll) / 45.0)}


def other_face_measure(main_box: list[float], detections: list[dict], min_prob: float) -> float:
    """Largest width ratio of another confident face whose centre lies within 1.5 main-face widths.

    0 when the face is alone; 1 when an equally large face stands right beside it (a pair photo, a
    mirror selfie, a poster behind the person)."""
    x1, y1, x2, y2 = main_box
    w = max(x2 - x1, 1e-6)
    cx, cy = (x1 + x2) / 2, (y1 + y2) / 2
    best = 0.0
    for d in detections:
        bx1, by1, bx2, by2 = d["box"]
        if d["prob"] < min_prob or [round(v, 1) for v in main_box] == [round(v, 1) for v in d["box"]]:
            continue
        ox, oy = (bx1 + bx2) / 2, (by1 + by2) / 2
        if np.hypot(ox - cx, oy - cy) <= 1.5 * w + (bx2 - bx1) / 2:
            best = max(best, (bx2 - bx1) / w)
    return float(best)


def face_share(box: list[float], width: int, height: int) -> float:
    """Share of the photo's area that the face box covers (clipped to the photo)."""
    x1, y1, x2, y2 = box
    area = max(0.0, min(x2, width) - max(x1, 0)) * max(0.0, min(y2, height) - max(y1, 0))
    return float(area / max(width * height, 1))
