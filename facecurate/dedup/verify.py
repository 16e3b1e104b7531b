"""Confirm hash candidates by an aligned correlation of small thumbnails.

Why a second test: on aligned face photos two different people can sit 8-12 pHash bits apart, while a copy
with 5% trimmed off sits 10-20 bits from its original. No single Hamming threshold separates those, but the
pixels do once the crop is undone: after the best small zoom and shift, a copy correlates above ~0.95 with
its original and two different faces stay below ~0.93 (measured on aligned UTKFace faces, the hard case).

The search is cheap and vectorised over all pairs: the zoom/shift is found per axis on the row and column
mean profiles (1-D, a few dozen options each), then applied once in 2-D as two small matrix products, and
the normalised cross-correlation is taken over the interior (warped borders are clamped, not real).
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np

from facecurate.dedup.hashing import THUMB_SIZE

BATCH = 512           # pairs per vectorised block: temporaries of a few MiB stay in cache (faster than 4096)
_CROP_SHARES = (0.05, 0.0375, 0.025, 0.0125)   # trims per axis the search undoes (either image cropped)
_OFFSETS = 5                                    # positions of the trimmed window tried per share
ACCEPT_UNWARPED = 0.97   # an unwarped correlation this high is the best alignment already: skip the search


def _interp_matrix(size: int, scale: float, offset: float) -> np.ndarray:
    """Linear resampling matrix: output pixel u reads input at c + scale*(u - c) + offset*size (clamped)."""
    c = (size - 1) / 2.0
    x = np.clip(c + scale * (np.arange(size) - c) + offset * size, 0.0, size - 1.0)
    i = np.floor(x).astype(int)
    f = (x - i).astype(np.float32)
    j = np.minimum(i + 1, size - 1)
    m = np.zeros((size, size), dtype=np.float32)
    m[np.arange(size), i] += 1.0 - f
    m[np.arange(size), j] += f
    return m


@lru_cache(maxsize=4)
def warp_options(size: int = THUMB_SIZE) -> np.ndarray:
    """Per-axis resampling matrices: identity, and zoom in or out by each trim at each window position."""
    options = [(1.0, 0.0)]
    for share in _CROP_SHARES:
        s = 1.0 - share
        for o in np.linspace(-share / 2, share / 2, _OFFSETS):
            options.append((s, float(o)))           # the second image is the cropped one
            options.append((1.0 / s, float(-o / s)))  # the first image is the cropped one
    out: np.ndarray = np.stack([_interp_matrix(size, s, o) for s, o in options])
    out.flags.writeable = False
    return out


def _ncc(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Normalised cross-correlation over the last axis, broadcasting over the others (einsum: no temporaries
    for the three sums of products)."""
    a = a - a.mean(axis=-1, keepdims=True)
    b = b - b.mean(axis=-1, keepdims=True)
    aa, bb = np.einsum("...i,...i->...", a, a), np.einsum("...i,...i->...", b, b)
    ab = np.einsum("...i,...i->...", a, b)
    # Flat thumbnails (a blank frame) correlate with nothing except another flat one.
    flat_a, flat_b = aa < 1e-6, bb < 1e-6
    out = ab / np.sqrt(np.maximum(aa * bb, 1e-24))
    return np.where(flat_a | flat_b, flat_a & flat_b, out).astype(np.float32)


def similarity(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Aligned normalised cross-correlation in [-1, 1] of thumbnail pairs ``a[k]``, ``b[k]`` (P, S, S).

    Mirror the second thumbnail first when the hashes matched through the flip.
    """
    a = np.asarray(a, dtype=np.float32)
    b = np.asarray(b, dtype=np.float32)
    if a.shape != b.shape or a.ndim != 3:
        raise ValueError(f"expected two (P, S, S) stacks of the same shape, got {a.shape} and {b.shape}")
    out = np.empty(a.shape[0], dtype=np.float32)
    for start in range(0, a.shape[0], BATCH):
        out[start:start + BATCH] = _similarity_block(a[start:start + BATCH], b[start:start + BATCH])
    return out


def _similarity_block(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Aligned NCC of one block. Pairs whose unwarped correlation already passes ACCEPT_UNWARPED (resized,
    recompressed, brightened, mirrored copies: most of them) skip the zoom/shift search."""
    p, size, _ = a.shape
    m = max(1, round(size * 0.06))
    inner = slice(m, size - m)
    out = _ncc(a[:, inner, inner].reshape(p, -1), b[:, inner, inner].reshape(p, -1))
    rest = np.flatnonzero(out < ACCEPT_UNWARPED)
    if rest.size:
        out[rest] = np.maximum(out[rest], _warped_ncc(a[rest], b[rest], inner))
    return out


def _warped_ncc(a: np.ndarray, b: np.ndarray, inner: slice) -> np.ndarray:
    """NCC after the best zoom/shift per axis, found on the 1-D row and column mean profiles."""
    p, size, _ = a.shape
    r = warp_options(size)
    flat = np.ascontiguousarray(r.reshape(-1, size).T)   # (S, K*S): every warp of a profile in one product
    best = []
    for axis in (1, 2):
        pa, pb = a.mean(axis=axis), b.mean(axis=axis)
        warped = (pb @ flat).reshape(p, r.shape[0], size)
        best.append(_ncc(pa[:, None, inner], warped[:, :, inner]).argmax(axis=1))
    kx, ky = best
    w = r[ky] @ b @ r[kx].transpose(0, 2, 1)
    return _ncc(a[:, inner, inner].reshape(p, -1), w[:, inner, inner].reshape(p, -1))


def thumbs_from_bytes(blobs: list[bytes], size: int = THUMB_SIZE) -> np.ndarray:
    """Catalog thumbnails (raw uint8 bytes) as a (P, S, S) array."""
    if not blobs:
        return np.zeros((0, size, size), dtype=np.uint8)
    return np.frombuffer(b"".join(blobs), dtype=np.uint8).reshape(len(blobs), size, size)
