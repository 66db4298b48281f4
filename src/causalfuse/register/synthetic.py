"""Known misalignments of an aligned pair, for testing and benchmarking registration.

:func:`misalign` turns an aligned infrared-visible pair into what two cameras
side by side would give: the visible image is a central crop of the frame,
and the infrared camera has the crop's field of view moved by a shift, a
rotation and a scale (optionally also different scales along x and y and a
shear: an affine move), at its own resolution. It returns the true transform,
so an estimate can be scored by its corner error (:func:`corner_error`).
"""

from __future__ import annotations

import math

import numpy as np

__all__ = ["misalign", "corner_error"]


def misalign(ir: np.ndarray, vi: np.ndarray, rng: np.random.Generator, *, crop: float = 0.7, cam_width: int = 640,
              shift: float = 40.0, rotation: float = 5.0, scales=(0.8, 1.25), anisotropy: float = 0.0, shear: float = 0.0,
              still: bool = False):
    """Make a pair from two cameras out of an aligned pair.

    Args:
        ir, vi: the aligned pair (same size; any dtype and channels).
        rng: draws the shift (uniform, +-``shift`` visible pixels per axis),
            the rotation (uniform, +-``rotation`` degrees) and the scale
            (log-uniform in ``scales``).
        anisotropy: the scales along x and y are further multiplied by
            exp(uniform(+-``anisotropy``)) each (0: a similarity move).
        shear: ... and x moves by uniform(+-``shear``) times y (drawn
            only when ``anisotropy`` or ``shear`` is not 0, so that the
            draws of similarity moves stay the same).
        crop: the visible image is this central fraction of each side.
        cam_width: the infrared camera's width at most (the frame's size otherwise).
        still: no shift, rotation or scale (the nominal rig).

    Returns:
        (infrared camera image, visible crop, true visible px -> infrared px matrix).
    """
    from .transform import _cv2

    cv2 = _cv2()

    H0, W0 = vi.shape[:2]
    W, H = int(round(W0 * crop)), int(round(H0 * crop))
    x0, y0 = (W0 - W) // 2, (H0 - H) // 2
    vic = vi[y0:y0 + H, x0:x0 + W]
    k = min(1.0, cam_width / W0)
    w2, h2 = int(round(W0 * k)), int(round(H0 * k))
    if still:
        th, s, t = 0.0, 1.0, np.zeros(2)
    else:
        th = math.radians(rng.uniform(-rotation, rotation))
        s = math.exp(rng.uniform(math.log(scales[0]), math.log(scales[1])))
        t = rng.uniform(-shift, shift, 2)
    c = np.array([(W - 1) / 2, (H - 1) / 2])
    rot = s * np.array([[math.cos(th), -math.sin(th)], [math.sin(th), math.cos(th)]])
    if not still and (anisotropy or shear):
        sx, sy = np.exp(rng.uniform(-anisotropy, anisotropy, 2))
        rot = rot @ np.array([[sx, rng.uniform(-shear, shear)], [0.0, sy]])
    move = np.eye(3)
    move[:2, :2], move[:2, 2] = rot, c - rot @ c + t  # on the crop's grid
    kx, ky = w2 / W, h2 / H
    to_cam = np.array([[kx, 0, 0.5 * kx - 0.5], [0, ky, 0.5 * ky - 0.5], [0, 0, 1.0]])
    truth = to_cam @ move  # visible crop px -> infrared camera px
    from_original = truth @ np.array([[1, 0, -x0], [0, 1, -y0], [0, 0, 1.0]])
    scale = math.sqrt(abs(np.linalg.det(from_original[:2, :2])))
    src = ir.astype(np.float32)
    if scale < 1:
        src = cv2.GaussianBlur(src, (0, 0), 0.5 / scale)
    cam = cv2.warpPerspective(src, from_original, (w2, h2), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
    if np.issubdtype(ir.dtype, np.integer):
        info = np.iinfo(ir.dtype)
        cam = np.clip(np.rint(cam), info.min, info.max).astype(ir.dtype)
    return cam, np.ascontiguousarray(vic), truth


def corner_error(truth: np.ndarray, estimate: np.ndarray, ir_shape: tuple[int, ...]) -> float:
    """Largest distance (visible pixels) between where two visible px -> infrared px matrices put the infrared corners."""
    h, w = ir_shape[:2]
    corners = np.array([[0, 0, 1], [w - 1, 0, 1], [w - 1, h - 1, 1], [0, h - 1, 1]], float).T
    a = np.linalg.inv(truth) @ corners
    b = np.linalg.inv(estimate) @ corners
    a, b = a[:2] / a[2], b[:2] / b[2]
    return float(np.sqrt(((a - b) ** 2).sum(0)).max())
