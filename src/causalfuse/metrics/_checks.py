"""Input validation and colour handling for :func:`causalfuse.metrics.compute`.

Accepted images: NumPy arrays (H, W), (H, W, 1) or (H, W, 3), or torch
tensors (H, W), (C, H, W) or (1, C, H, W) with C in {1, 3}. Value ranges:

- uint8: used as they are (the original code's scale);
- uint16: scaled to 0-255 by 255 / 65535 and kept fractional (not truncated);
- float: taken to be in [0, 1] (or in [0, data_range] when ``data_range`` is
  given) and scaled to 0-255. A float image whose scaled values all lie
  within 1e-3 of integers is an 8-bit image in disguise (e.g. ``uint8 /
  255`` in float32) and is rounded back to those integers, so it scores
  exactly as its 8-bit original.

Colour modes (``colour=``):

- ``"gray"``: each image is made grey with MATLAB's ``rgb2gray`` (on 8-bit
  data rounded to uint8 as MATLAB does; on fractional data not rounded, as
  MATLAB does for doubles) and every metric runs once.
- ``"vifb"``: VIFB's convention. With a colour fused image each metric runs
  per channel on (F[k], IR[k], VI[k]) and the results are averaged; a grey
  source is reused for every channel. Metrics on the fused image only do the
  same on F; spatial frequency runs once on the channels laid side by side.
  With a grey fused image, colour sources are made grey (``rgb2gray``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

import numpy as np

from ..errors import CausalFuseError
from ..io import MATLAB_GRAY_WEIGHTS, rgb2gray_levels, rgb2gray_matlab

__all__ = ["Colour", "Prepared", "as_image255", "prepare"]

Colour = Literal["gray", "vifb"]

_SNAP_TOL = 1e-3


@dataclass
class Prepared:
    """Channels ready for the single-channel metric functions (float64, 0-255)."""

    fused: list[np.ndarray]
    ir: list[np.ndarray]
    vi: list[np.ndarray]


def _to_numpy(x: Any, name: str) -> np.ndarray:
    """Arrays pass through; tensors become channels-last arrays; a 4th (alpha) channel is dropped.

    Dropping alpha is what :func:`causalfuse.io.load_image` does for files and
    :func:`causalfuse.fuse` for arrays: the colour is scored as stored,
    whatever its transparency.
    """
    if isinstance(x, np.ndarray):
        arr = x
        if arr.ndim == 3 and arr.shape[2] == 4:
            return arr[:, :, :3]
        if arr.ndim == 3 and arr.shape[2] not in (1, 3):
            hint = " (channels first? NumPy images are (H, W, C))" if arr.shape[0] in (1, 3, 4) else ""
            raise CausalFuseError(f"{name}: expected an image of shape (H, W) or (H, W, 1|3|4), got {arr.shape}{hint}")
        return arr
    try:
        import torch
    except ImportError:  # pragma: no cover - torch is a dependency
        torch = None
    if torch is not None and isinstance(x, torch.Tensor):
        t = x.detach().cpu()
        if t.ndim == 4:
            if t.shape[0] != 1:
                raise CausalFuseError(f"{name}: a batch of {t.shape[0]} images was given; score one image at a time")
            t = t[0]
        if t.ndim == 3:
            if t.shape[0] not in (1, 3):
                raise CausalFuseError(f"{name}: expected a tensor of shape (H, W), (C, H, W) or (1, C, H, W), got {tuple(x.shape)}")
            t = t.permute(1, 2, 0)
        return t.numpy()
    if isinstance(x, (list, tuple)):
        return _to_numpy(np.asarray(x), name)
    raise CausalFuseError(f"{name}: expected a NumPy array or a torch tensor, got {type(x).__name__}")


def as_image255(x: Any, name: str, data_range: float | None = None) -> tuple[np.ndarray, bool]:
    """An image as float64 on the 0-255 scale, (H, W) or (H, W, 3).

    Returns:
        (image, integral): ``integral`` is True when the values are 8-bit
        levels (so ``rgb2gray`` rounds, as MATLAB does on uint8).

    Raises:
        CausalFuseError: unsupported shape, dtype or value range, or NaN/inf.
    """
    arr = _to_numpy(x, name)
    if arr.ndim == 3 and arr.shape[2] == 1:
        arr = arr[:, :, 0]
    if arr.ndim not in (2, 3) or arr.shape[0] == 0 or arr.shape[1] == 0:
        raise CausalFuseError(f"{name}: expected an image of shape (H, W) or (H, W, 3), got {arr.shape}")
    if arr.dtype == np.uint8:
        return arr.astype(np.float64), True
    if arr.dtype == np.uint16:
        return arr.astype(np.float64) * (255.0 / 65535.0), False
    if arr.dtype == np.bool_:
        return arr.astype(np.float64) * 255.0, True
    if np.issubdtype(arr.dtype, np.integer):
        if data_range is None:
            raise CausalFuseError(
                f"{name}: {arr.dtype} images need an explicit data_range (the value of white); "
                "uint8 and uint16 are scaled by their type"
            )
        out = arr.astype(np.float64) * (255.0 / float(data_range))
    elif np.issubdtype(arr.dtype, np.floating):
        out = arr.astype(np.float64)
        if not np.isfinite(out).all():
            raise CausalFuseError(f"{name}: the image contains NaN or inf values")
        top = 1.0 if data_range is None else float(data_range)
        if top <= 0:
            raise CausalFuseError(f"data_range must be positive, got {data_range}")
        lo, hi = float(out.min()), float(out.max())
        if lo < -1e-6 * top or hi > top * (1 + 1e-6):
            raise CausalFuseError(
                f"{name}: float values must lie in [0, {top:g}], got [{lo:.4g}, {hi:.4g}]; "
                + ("pass data_range=... for another scale" if data_range is None else "check data_range")
            )
        out *= 255.0 / top
    else:
        raise CausalFuseError(f"{name}: unsupported dtype {arr.dtype}; use uint8, uint16 or float")
    np.clip(out, 0.0, 255.0, out=out)
    snapped = np.rint(out)
    if np.abs(out - snapped).max(initial=0.0) <= _SNAP_TOL:
        return snapped, True
    return out, False


def _gray(img: np.ndarray, integral: bool) -> np.ndarray:
    if img.ndim == 2:
        return img
    if integral:  # 8-bit levels: MATLAB's rounding, on the levels as they are
        return rgb2gray_levels(img)
    return img @ MATLAB_GRAY_WEIGHTS


def _channels(img: np.ndarray) -> list[np.ndarray]:
    return [img] if img.ndim == 2 else [np.ascontiguousarray(img[:, :, k]) for k in range(img.shape[2])]


def prepare(fused: Any, ir: Any, vi: Any, colour: Colour, data_range: float | None = None) -> Prepared:
    """Validate a triplet and split it into the channels the metrics see.

    Raises:
        CausalFuseError: bad image, or the three sizes differ (the message
            names the shapes).
    """
    if colour not in ("gray", "vifb"):
        raise CausalFuseError(f"colour must be 'gray' or 'vifb', got {colour!r}")
    fused, ir, vi = (_to_numpy(x, name) for x, name in ((fused, "fused"), (ir, "ir"), (vi, "vi")))
    if colour == "gray":
        # 8-bit colour is made grey before it is lifted to float64 (a third of the memory traffic).
        fused, ir, vi = (rgb2gray_matlab(x) if x.dtype == np.uint8 and x.ndim == 3 and x.shape[2] == 3 else x for x in (fused, ir, vi))
    f, f_int = as_image255(fused, "fused", data_range)
    i, i_int = as_image255(ir, "ir", data_range)
    v, v_int = as_image255(vi, "vi", data_range)
    if not (f.shape[:2] == i.shape[:2] == v.shape[:2]):
        raise CausalFuseError(
            f"image sizes differ: fused {f.shape[:2]}, ir {i.shape[:2]}, vi {v.shape[:2]} (height, width); "
            "metrics compare pixel by pixel"
        )
    if colour == "gray" or f.ndim == 2:
        return Prepared([_gray(f, f_int)], [_gray(i, i_int)], [_gray(v, v_int)])
    fc = _channels(f)
    n = len(fc)
    ic = _channels(i)
    vc = _channels(v)
    return Prepared(fc, ic * n if len(ic) == 1 else ic, vc * n if len(vc) == 1 else vc)
