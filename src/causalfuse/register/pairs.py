"""Registering pairs: one pair, one transform for a rig, and the check image."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np

from ..errors import CausalFuseError
from .estimate import MIN_MI, MIN_OVERLAP, SNAP, SearchRange, estimate_transform, mutual_information_bits, prepare
from .transform import Transform, warp_to_visible

__all__ = ["Registered", "register_arrays", "fit_once", "check_image"]


@dataclass
class Registered:
    """An infrared image on the visible grid.

    Attributes:
        warped: the infrared image resampled on the visible grid (its dtype and
            channels), 0 where ``covered`` is False.
        covered: visible pixels the infrared image covers (bool, H x W).
        transform: the transform used (estimated, or given).
        box: (x0, y0, x1, y1), end-exclusive, when a result was cropped to
            the largest covered rectangle (``uncovered="crop"``); else None.
    """

    warped: np.ndarray
    covered: np.ndarray
    transform: Transform
    box: tuple[int, int, int, int] | None = None

    @property
    def uncovered_fraction(self) -> float:
        return float(1.0 - self.covered.mean())


def _size(a: np.ndarray) -> tuple[int, int]:
    return int(a.shape[1]), int(a.shape[0])


def register_arrays(
    ir: np.ndarray,
    vi: np.ndarray,
    *,
    model: str = "affine",
    transform: Transform | None = None,
    transform_source: str = "the transform",
    search: SearchRange = SearchRange(),
    min_mi: float = MIN_MI,
    min_overlap: float = MIN_OVERLAP,
    snap: float = SNAP,
    name: str = "the pair",
) -> Registered:
    """Warp ``ir`` onto the grid of ``vi``, with a given transform or an estimated one.

    A given ``transform`` must be for these image sizes; its mutual
    information and overlap are re-measured on this pair.

    Raises:
        RegistrationError: the pair cannot be registered (see :func:`estimate_transform`).
        CausalFuseError: a transform for other image sizes.
    """
    if transform is None:
        transform = estimate_transform(ir, vi, model, search=search, min_mi=min_mi, min_overlap=min_overlap, snap=snap, name=name)
    else:
        transform.check_sizes(_size(ir), _size(vi), source=transform_source)
        mi, overlap = mutual_information_bits(prepare(ir), prepare(vi), transform)
        transform = Transform(transform.model, transform.matrix, transform.ir_size, transform.vi_size, mi, overlap, dict(transform.info))
    warped, covered = warp_to_visible(np.asarray(ir), transform)
    return Registered(warped, covered, transform)


def _fit(model: str, vi_pts: np.ndarray, ir_pts: np.ndarray, ir_size, vi_size) -> np.ndarray:
    """The ``model`` matrix (visible px -> infrared px) closest to the point pairs, by least squares."""
    from .transform import _cv2, nominal_matrix

    m = np.eye(3)
    if model == "projective":
        m = _cv2().getPerspectiveTransform(vi_pts.astype(np.float32), ir_pts.astype(np.float32)).astype(np.float64)
    elif model == "affine":
        design = np.c_[vi_pts, np.ones(len(vi_pts))]
        sol, *_ = np.linalg.lstsq(design, ir_pts, rcond=None)
        m[:2] = sol.T
    elif model == "similarity":
        x, y = vi_pts[:, 0], vi_pts[:, 1]
        one, zero = np.ones_like(x), np.zeros_like(x)
        design = np.r_[np.c_[x, -y, one, zero], np.c_[y, x, zero, one]]
        (a, b, tx, ty), *_ = np.linalg.lstsq(design, np.r_[ir_pts[:, 0], ir_pts[:, 1]], rcond=None)
        m[:2] = [[a, -b, tx], [b, a, ty]]
    else:  # translation, at the scale of the image sizes
        s = nominal_matrix(ir_size, vi_size)[0, 0]
        m[0, 0] = m[1, 1] = s
        m[:2, 2] = (ir_pts - s * vi_pts).mean(0)
    return m / m[2, 2]


def fit_once(transforms: Sequence[Transform], model: str | None = None) -> Transform:
    """One transform for a fixed rig, from transforms estimated on several of its pairs.

    Each transform places the infrared image's corners on the visible grid; the
    median position of each corner over the pairs is robust to a pair that
    registered badly, and the model is fitted to the four median corners.
    ``info`` records the pairs used and the largest distance of a pair's
    corner from the median (visible pixels).

    Raises:
        CausalFuseError: no transforms, or transforms for different image sizes.
    """
    if not transforms:
        raise CausalFuseError("fitting one transform needs at least one registered pair")
    first = transforms[0]
    for t in transforms[1:]:
        if (t.ir_size, t.vi_size) != (first.ir_size, first.vi_size):
            raise CausalFuseError(
                f"one transform for all pairs needs pairs of one size: {first.ir_size} -> {first.vi_size} and "
                f"{t.ir_size} -> {t.vi_size} differ"
            )
    model = model or first.model
    corners = np.stack([t.infrared_corners() for t in transforms])  # (n, 4, 2)
    median = np.median(corners, axis=0)
    spread = float(np.sqrt(((corners - median) ** 2).sum(-1)).max())
    w, h = first.ir_size
    ir_corners = np.array([[0, 0], [w - 1, 0], [w - 1, h - 1], [0, h - 1]], np.float64)
    matrix = _fit(model, median, ir_corners, first.ir_size, first.vi_size)
    info = {
        "estimated_by": "causalfuse.register.fit_once",
        "pairs": [t.info.get("pair") for t in transforms],
        "corner_spread_px": round(spread, 3),
    }
    return Transform(model, matrix, first.ir_size, first.vi_size, info=info)


def check_image(vi: np.ndarray, registered: Registered, *, squares: int = 8) -> np.ndarray:
    """A checkerboard of the visible image and the registered infrared image (RGB uint8).

    Squares alternate between the two images (each stretched between its 1st
    and 99th percentile), so a misregistration shows as edges that break at
    the squares' borders. Visible pixels with no infrared coverage are tinted red.
    """
    a = _stretch(prepare(vi))
    b = _stretch(prepare(registered.warped), registered.covered)
    H, W = a.shape
    side = max(8, min(H, W) // squares)
    yy, xx = np.mgrid[0:H, 0:W]
    board = ((yy // side + xx // side) % 2).astype(bool) & registered.covered
    grey = np.where(board, b, a)
    rgb = np.repeat(grey[..., None], 3, axis=2)
    tint = ~registered.covered
    rgb[tint] = rgb[tint] * 0.6 + np.array([0.4, 0.0, 0.0])
    return np.clip(np.rint(rgb * 255), 0, 255).astype(np.uint8)


def _stretch(a: np.ndarray, mask: np.ndarray | None = None) -> np.ndarray:
    values = a[mask] if mask is not None and mask.any() else a
    lo, hi = np.percentile(values, [1, 99])
    return np.clip((a - lo) / max(float(hi - lo), 1e-6), 0, 1)
