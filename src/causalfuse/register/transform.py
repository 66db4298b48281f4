"""The transform from the visible pixel grid to the infrared one, and warping.

A :class:`Transform` is a 3 x 3 matrix that maps a visible pixel ``(x, y, 1)``
to the infrared pixel that shows the same point (homogeneous coordinates,
pixel centres at integer coordinates, x to the right, y down), together with
the two image sizes it was estimated for. Warping the infrared image onto the
visible grid samples the infrared image at the mapped positions.

The models, from fewest to most parameters:

- ``translation``: a shift, at the scale of the two image sizes (the cameras
  are taken to see the same field of view);
- ``similarity``: shift, rotation and one scale;
- ``affine``: any linear map and a shift (6 parameters);
- ``projective``: a homography (8 parameters), for cameras that look at a
  plane from different directions.

Saved as a small JSON file (:meth:`Transform.save`); :meth:`Transform.load`
refuses files of another kind, damaged matrices, and a matrix that its stated
model cannot express.
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import numpy as np

from ..errors import CausalFuseError
from ..io import atomic_path

__all__ = ["MODELS", "Model", "Transform", "nominal_matrix", "warp_to_visible", "coverage_mask", "largest_covered_box"]

Model = Literal["translation", "similarity", "affine", "projective"]
#: Transform models, from fewest to most parameters.
MODELS: tuple[str, ...] = ("translation", "similarity", "affine", "projective")

FORMAT = "causalfuse-transform"
VERSION = 1
_TOL = 1e-6  # how far a saved matrix may be from its model's form (rounding in JSON)


def nominal_matrix(ir_size: tuple[int, int], vi_size: tuple[int, int]) -> np.ndarray:
    """The transform of two cameras with the same field of view, centred on each other.

    One isotropic scale (the ratio of the widths), image centres on each other.
    """
    (w, h), (W, H) = ir_size, vi_size
    s = w / W
    m = np.eye(3)
    m[0, 0] = m[1, 1] = s
    m[0, 2] = (w - 1) / 2 - s * (W - 1) / 2
    m[1, 2] = (h - 1) / 2 - s * (H - 1) / 2
    return m


def _check_model(model: str) -> str:
    if model not in MODELS:
        raise CausalFuseError(f"unknown transform model {model!r}; choose one of {', '.join(MODELS)}")
    return model


def _form_error(model: str, m: np.ndarray, ir_size: tuple[int, int], vi_size: tuple[int, int]) -> str | None:
    """Why ``m`` is not a matrix of ``model`` (None when it is)."""
    if model != "projective" and (abs(m[2, 0]) > _TOL or abs(m[2, 1]) > _TOL or abs(m[2, 2] - 1) > _TOL):
        return f"its last row is {m[2].tolist()}, but a {model} transform has [0, 0, 1]"
    a = m[:2, :2]
    if model == "similarity" and (abs(a[0, 0] - a[1, 1]) > _TOL or abs(a[0, 1] + a[1, 0]) > _TOL):
        return "its linear part is not a rotation with one scale"
    if model == "translation":
        s = nominal_matrix(ir_size, vi_size)[0, 0]
        if np.abs(a - s * np.eye(2)).max() > _TOL:
            return f"its linear part is not {s:.6g} times the identity (the scale of the two image sizes)"
    if model == "projective" and abs(np.linalg.det(m)) < 1e-12:
        return "it is singular"
    if abs(np.linalg.det(a)) < 1e-12:
        return "it is singular"
    return None


@dataclass
class Transform:
    """Visible pixel -> infrared pixel, for one pair of image sizes.

    Attributes:
        model: one of :data:`MODELS`.
        matrix: (3, 3) float64; ``matrix @ (x, y, 1)`` is the infrared pixel
            (homogeneous) that shows visible pixel ``(x, y)``.
        ir_size, vi_size: (width, height) of the images it was estimated for.
        mutual_information: mutual information (bits) of the registered pair
            over the covered pixels, the metric reached.
        overlap: fraction of the visible image that the infrared image covers.
        info: anything else worth keeping (how it was estimated, from which pairs).
    """

    model: str
    matrix: np.ndarray
    ir_size: tuple[int, int]
    vi_size: tuple[int, int]
    mutual_information: float | None = None
    overlap: float | None = None
    info: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        _check_model(self.model)
        m = np.asarray(self.matrix, dtype=np.float64)
        if m.shape != (3, 3) or not np.isfinite(m).all():
            raise CausalFuseError(f"a transform matrix must be 3 x 3 and finite, got {m.shape}")
        self.matrix = m / m[2, 2] if abs(m[2, 2]) > 1e-12 else m
        self.ir_size = (int(self.ir_size[0]), int(self.ir_size[1]))
        self.vi_size = (int(self.vi_size[0]), int(self.vi_size[1]))
        why = _form_error(self.model, self.matrix, self.ir_size, self.vi_size)
        if why:
            raise CausalFuseError(f"not {_a(self.model)} transform: {why}")

    # -- geometry -----------------------------------------------------------
    def map_visible(self, xy: np.ndarray) -> np.ndarray:
        """Infrared pixel positions of visible pixel positions ``xy`` (N, 2)."""
        p = np.c_[np.asarray(xy, np.float64), np.ones(len(xy))] @ self.matrix.T
        return p[:, :2] / p[:, 2:]

    def map_infrared(self, xy: np.ndarray) -> np.ndarray:
        """Visible pixel positions of infrared pixel positions ``xy`` (N, 2)."""
        p = np.c_[np.asarray(xy, np.float64), np.ones(len(xy))] @ np.linalg.inv(self.matrix).T
        return p[:, :2] / p[:, 2:]

    def infrared_corners(self) -> np.ndarray:
        """Where the infrared image's four corner pixels fall on the visible grid (4, 2)."""
        w, h = self.ir_size
        return self.map_infrared(np.array([[0, 0], [w - 1, 0], [w - 1, h - 1], [0, h - 1]], np.float64))

    def corner_error(self, other: "Transform") -> float:
        """Largest distance (visible pixels) between the infrared corners as placed by the two transforms."""
        return float(np.sqrt(((self.infrared_corners() - other.infrared_corners()) ** 2).sum(1)).max())

    def check_sizes(self, ir_size: tuple[int, int], vi_size: tuple[int, int], *, source: str = "the transform") -> None:
        """Refuse a transform estimated for other image sizes."""
        if tuple(ir_size) != self.ir_size or tuple(vi_size) != self.vi_size:
            raise CausalFuseError(
                f"{source} is for an infrared image of {self.ir_size[0]} x {self.ir_size[1]} and a visible image of "
                f"{self.vi_size[0]} x {self.vi_size[1]}, but this pair is {ir_size[0]} x {ir_size[1]} and "
                f"{vi_size[0]} x {vi_size[1]}"
            )

    # -- files --------------------------------------------------------------
    def to_dict(self) -> dict:
        return {
            "format": FORMAT,
            "version": VERSION,
            "model": self.model,
            "matrix": [[float(v) for v in row] for row in self.matrix],
            "maps": "visible pixel (x, y, 1) -> infrared pixel; pixel centres at integers, x right, y down",
            "infrared_size": list(self.ir_size),
            "visible_size": list(self.vi_size),
            "mutual_information_bits": None if self.mutual_information is None else round(float(self.mutual_information), 6),
            "overlap": None if self.overlap is None else round(float(self.overlap), 6),
            "info": self.info,
        }

    def save(self, path: str | os.PathLike) -> Path:
        """Write the transform as JSON, atomically."""
        path = Path(path)
        with atomic_path(path) as tmp:
            tmp.write_text(json.dumps(self.to_dict(), indent=1) + "\n")
        return path

    @classmethod
    def load(cls, path: str | os.PathLike, *, model: str | None = None) -> "Transform":
        """Read a transform written by :meth:`save`.

        Args:
            model: the model the caller expects; a file of another model is refused.

        Raises:
            CausalFuseError: missing or damaged file, not a causalfuse
                transform, a matrix its model cannot express, or another model.
        """
        path = Path(path)
        try:
            data = json.loads(path.read_text())
        except FileNotFoundError:
            raise CausalFuseError(f"{path}: no such transform file") from None
        except (OSError, ValueError) as exc:
            raise CausalFuseError(f"{path}: not a readable transform file ({exc})") from None
        if not isinstance(data, dict) or data.get("format") != FORMAT:
            raise CausalFuseError(f"{path}: not a causalfuse transform file (no \"format\": \"{FORMAT}\")")
        if data.get("version") != VERSION:
            raise CausalFuseError(f"{path}: transform file version {data.get('version')!r}; this causalfuse reads version {VERSION}")
        try:
            t = cls(
                model=str(data["model"]),
                matrix=np.array(data["matrix"], dtype=np.float64),
                ir_size=tuple(data["infrared_size"]),
                vi_size=tuple(data["visible_size"]),
                mutual_information=data.get("mutual_information_bits"),
                overlap=data.get("overlap"),
                info=data.get("info") or {},
            )
        except CausalFuseError as exc:
            raise CausalFuseError(f"{path}: {exc}") from None
        except (KeyError, TypeError, ValueError) as exc:
            raise CausalFuseError(f"{path}: damaged transform file ({type(exc).__name__}: {exc})") from None
        if model is not None and _check_model(model) != t.model:
            raise CausalFuseError(f"{path}: holds {_a(t.model)} transform, but {_a(model)} transform was asked for (--model)")
        return t


def _a(word: str) -> str:
    return f"an {word}" if word[0] in "aeiou" else f"a {word}"


def coverage_mask(transform: Transform) -> np.ndarray:
    """Visible pixels whose mapped position lies on the infrared image (bool, H x W).

    A pixel is covered when its centre maps within the infrared image's
    pixel footprint, [-0.5, w - 0.5] x [-0.5, h - 0.5].
    """
    (w, h), (W, H) = transform.ir_size, transform.vi_size
    m = transform.matrix
    x = np.arange(W, dtype=np.float64)[None, :]
    y = np.arange(H, dtype=np.float64)[:, None]
    d = m[2, 0] * x + m[2, 1] * y + m[2, 2]
    with np.errstate(divide="ignore", invalid="ignore"):
        u = (m[0, 0] * x + m[0, 1] * y + m[0, 2]) / d
        v = (m[1, 0] * x + m[1, 1] * y + m[1, 2]) / d
    return (d > 0) & (u >= -0.5) & (u <= w - 0.5) & (v >= -0.5) & (v <= h - 0.5)


def warp_to_visible(ir: np.ndarray, transform: Transform, *, fill: float = 0) -> tuple[np.ndarray, np.ndarray]:
    """Resample the infrared image onto the visible pixel grid.

    Bilinear, with the image smoothed first where the visible grid is coarser
    than the infrared one (so a large infrared image is not aliased). Keeps the
    dtype and channels of ``ir``.

    Returns:
        (warped, covered): the image, ``fill`` where uncovered, and the
        :func:`coverage_mask`.
    """
    cv2 = _cv2()
    h, w = ir.shape[:2]
    if (w, h) != transform.ir_size:
        raise CausalFuseError(
            f"the infrared image is {w} x {h}, but the transform is for {transform.ir_size[0]} x {transform.ir_size[1]}"
        )
    src = ir
    step = math.sqrt(abs(np.linalg.det(transform.matrix[:2, :2])))  # infrared pixels per visible pixel
    if step > 1.5:
        src = cv2.GaussianBlur(ir.astype(np.float32), (0, 0), 0.4 * step)
    W, H = transform.vi_size
    warped = cv2.warpPerspective(
        src, transform.matrix, (W, H), flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP, borderMode=cv2.BORDER_REPLICATE
    )
    if warped.dtype != ir.dtype:
        warped = _cast_like(warped, ir.dtype)
    covered = coverage_mask(transform)
    warped[~covered] = fill
    return warped, covered


def _cast_like(a: np.ndarray, dtype: np.dtype) -> np.ndarray:
    if np.issubdtype(dtype, np.integer):
        info = np.iinfo(dtype)
        return np.clip(np.rint(a), info.min, info.max).astype(dtype)
    return a.astype(dtype)


def largest_covered_box(covered: np.ndarray) -> tuple[int, int, int, int]:
    """The largest axis-aligned rectangle of covered pixels: (x0, y0, x1, y1), end-exclusive.

    Found on a grid of at most 256 cells a side, then shrunk until every pixel
    of it is covered at full resolution.

    Raises:
        CausalFuseError: nothing is covered.
    """
    H, W = covered.shape
    if not covered.any():
        raise CausalFuseError("the infrared image covers no pixel of the visible image")
    step = max(1, math.ceil(max(H, W) / 256))
    # a coarse cell counts only if all its pixels are covered
    hh, ww = -(-H // step), -(-W // step)
    pad = np.zeros((hh * step, ww * step), bool)
    pad[:H, :W] = covered
    cells = pad.reshape(hh, step, ww, step).all(axis=(1, 3))
    if not cells.any():
        cells = pad.reshape(hh, step, ww, step).any(axis=(1, 3))
    best, box = -1, (0, 0, 1, 1)
    heights = np.zeros(ww, int)
    for r in range(hh):
        heights = np.where(cells[r], heights + 1, 0)
        stack: list[int] = []
        for c in range(ww + 1):
            cur = heights[c] if c < ww else 0
            while stack and heights[stack[-1]] >= cur:
                top = stack.pop()
                left = stack[-1] + 1 if stack else 0
                area = int(heights[top]) * (c - left)
                if area > best:
                    best, box = area, (left, r - int(heights[top]) + 1, c, r + 1)
            stack.append(c)
    x0, y0, x1, y1 = box[0] * step, box[1] * step, min(W, box[2] * step), min(H, box[3] * step)
    while x1 - x0 > 1 and y1 - y0 > 1 and not covered[y0:y1, x0:x1].all():
        sub = covered[y0:y1, x0:x1]
        # drop the edge with the most uncovered pixels
        losses = [(~sub[:, 0]).sum(), (~sub[0, :]).sum(), (~sub[:, -1]).sum(), (~sub[-1, :]).sum()]
        k = int(np.argmax(losses))
        x0, y0, x1, y1 = (x0 + (k == 0), y0 + (k == 1), x1 - (k == 2), y1 - (k == 3))
    return x0, y0, x1, y1


def _cv2():
    try:
        import cv2
    except ImportError:
        raise CausalFuseError('registration needs OpenCV and SimpleITK: pip install "causalfuse[register]"') from None
    return cv2
