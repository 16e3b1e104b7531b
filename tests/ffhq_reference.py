"""The published FFHQ alignment (NVlabs/ffhq-dataset, ``recreate_aligned_images``), transcribed from its formulas
so tests and benchmarks can hold facecurate's crops against the reference pixels, not against themselves.

Written from the published steps, not copied: quad from the eye and mouth points; whole-image Lanczos shrink by
floor(qsize / output * 0.5) when that is > 1; crop to the quad's box plus a border of max(rint(0.1 qsize), 3);
reflect padding when the quad comes within 4 px of an edge (max(pad) > border - 4), widened to rint(0.3 qsize),
then Gaussian blur (sigma 0.02 qsize) weighted by clip(3 mask + 1) and a fade to the median of the whole padded
image weighted by clip(mask); Pillow's QUAD transform (bilinear) at ``transform_size`` with ``quad + 0.5``, then
a Lanczos resize to the output size. ``transform_size`` is 4096 for FFHQ's 1024 output: 4x the output side.
Only test and benchmark code uses it; the library's own ``align_face(..., alignment="ffhq")`` is separate.
"""

from __future__ import annotations

import numpy as np
import scipy.ndimage
from PIL import Image


def reference_align(image: np.ndarray, landmarks: np.ndarray, output_size: int,
                    transform_size: int | None = None) -> np.ndarray:
    """(output_size, output_size, 3) uint8 crop of ``image`` (H, W, 3 uint8 RGB) from MTCNN's five points
    (eyes, nose, mouth corners; the script averages dlib's eye and mouth contours into the same points)."""
    transform_size = transform_size or 4 * output_size
    lm = np.asarray(landmarks, dtype=np.float64)
    eye_left, eye_right, mouth_left, mouth_right = lm[0], lm[1], lm[3], lm[4]
    eye_avg = (eye_left + eye_right) * 0.5
    eye_to_eye = eye_right - eye_left
    mouth_avg = (mouth_left + mouth_right) * 0.5
    eye_to_mouth = mouth_avg - eye_avg

    x = eye_to_eye - np.flipud(eye_to_mouth) * [-1, 1]
    x /= np.hypot(*x)
    x *= max(np.hypot(*eye_to_eye) * 2.0, np.hypot(*eye_to_mouth) * 1.8)
    y = np.flipud(x) * [-1, 1]
    c = eye_avg + eye_to_mouth * 0.1
    quad = np.stack([c - x - y, c - x + y, c + x + y, c + x - y])
    qsize = np.hypot(*x) * 2

    img = Image.fromarray(image)
    shrink = int(np.floor(qsize / output_size * 0.5))
    if shrink > 1:
        rsize = (int(np.rint(float(img.size[0]) / shrink)), int(np.rint(float(img.size[1]) / shrink)))
        img = img.resize(rsize, Image.Resampling.LANCZOS)
        quad /= shrink
        qsize /= shrink

    border = max(int(np.rint(qsize * 0.1)), 3)
    box = (int(np.floor(min(quad[:, 0]))), int(np.floor(min(quad[:, 1]))),
           int(np.ceil(max(quad[:, 0]))), int(np.ceil(max(quad[:, 1]))))
    box = (max(box[0] - border, 0), max(box[1] - border, 0),
           min(box[2] + border, img.size[0]), min(box[3] + border, img.size[1]))
    if box[2] - box[0] < img.size[0] or box[3] - box[1] < img.size[1]:
        img = img.crop(box)
        quad -= box[0:2]

    pad = (int(np.floor(min(quad[:, 0]))), int(np.floor(min(quad[:, 1]))),
           int(np.ceil(max(quad[:, 0]))), int(np.ceil(max(quad[:, 1]))))
    pad = (max(-pad[0] + border, 0), max(-pad[1] + border, 0),
           max(pad[2] - img.size[0] + border, 0), max(pad[3] - img.size[1] + border, 0))
    if max(pad) > border - 4:
        pad = np.maximum(pad, int(np.rint(qsize * 0.3)))
        arr = np.pad(np.float32(img), ((pad[1], pad[3]), (pad[0], pad[2]), (0, 0)), "reflect")
        h, w, _ = arr.shape
        yy, xx, _ = np.ogrid[:h, :w, :1]
        mask = np.maximum(1.0 - np.minimum(np.float32(xx) / pad[0], np.float32(w - 1 - xx) / pad[2]),
                          1.0 - np.minimum(np.float32(yy) / pad[1], np.float32(h - 1 - yy) / pad[3]))
        blur = qsize * 0.02
        arr += (scipy.ndimage.gaussian_filter(arr, [blur, blur, 0]) - arr) * np.clip(mask * 3.0 + 1.0, 0.0, 1.0)
        arr += (np.median(arr, axis=(0, 1)) - arr) * np.clip(mask, 0.0, 1.0)
        img = Image.fromarray(np.uint8(np.clip(np.rint(arr), 0, 255)), "RGB")
        quad += pad[:2]

    img = img.transform((transform_size, transform_size), Image.Transform.QUAD, (quad + 0.5).flatten(),
                        Image.Resampling.BILINEAR)
    if output_size < transform_size:
        img = img.resize((output_size, output_size), Image.Resampling.LANCZOS)
    return np.asarray(img)
