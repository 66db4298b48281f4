"""Training transforms for infrared-visible pairs.

The network sees grey infrared and the visible luminance, both in [0, 1]:
a colour infrared file (LLVIP stores its thermal frames as 3-channel JPEGs) is
made grey by its BT.601 luminance, and the visible image is reduced to the Y
channel of BT.601 YCbCr (:func:`causalfuse.io.rgb_to_ycbcr`), the convention of
the field's fusion code.

Augmentation follows the paper (Sec. 4.1: random crops and flips, 256 x 256):
one random crop window and one pair of flips, drawn once, applied to both
images so they stay aligned. The randomness comes from a generator seeded by
``(seed, epoch, index)`` (:func:`sample_generator`), so a sample does not depend
on which worker draws it or on what was drawn before it: a resumed run sees
the same batches as an uninterrupted one.

Images smaller than the crop are reflect-padded up to it (the mirror image
without repeating the border pixel, repeated as often as needed), on the
bottom and right, so the pair stays aligned.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..errors import CausalFuseError
from ..io import rgb_to_ycbcr, to_float01

__all__ = ["CropFlip", "apply_crop_flip", "draw_crop_flip", "luminance", "pad_to", "sample_generator"]


def luminance(image: np.ndarray) -> np.ndarray:
    """(H, W) or (H, W, 3) image -> (H, W) float32 in [0, 1].

    Integer images are scaled by their type (:func:`causalfuse.io.to_float01`);
    colour images become their BT.601 luminance Y; grey images are returned
    (as float32) unchanged.
    """
    image = to_float01(np.asarray(image))
    if image.ndim == 3 and image.shape[2] == 3:
        return np.clip(rgb_to_ycbcr(image)[..., 0], 0.0, 1.0)
    if image.ndim == 3 and image.shape[2] == 1:
        return image[..., 0]
    if image.ndim != 2:
        raise CausalFuseError(f"expected an image of shape (H, W) or (H, W, 3), got {image.shape}")
    return image


def sample_generator(seed: int, epoch: int, index: int) -> np.random.Generator:
    """The random generator of one sample: a function of (seed, epoch, index) only."""
    if min(seed, epoch, index) < 0:
        raise CausalFuseError(f"seed, epoch and index must be non-negative, got {seed}, {epoch}, {index}")
    return np.random.default_rng([int(seed), int(epoch), int(index)])


@dataclass(frozen=True)
class CropFlip:
    """One drawn augmentation: crop window (top, left, size) and flips."""

    top: int
    left: int
    size: int
    hflip: bool
    vflip: bool


def draw_crop_flip(height: int, width: int, size: int, rng: np.random.Generator, *, flips: bool = True) -> CropFlip:
    """Draw a crop window inside an image of at least ``size`` x ``size`` and, with ``flips``,
    a horizontal and a vertical flip with probability 1/2 each."""
    if height < size or width < size:
        raise CausalFuseError(f"a {size} x {size} crop does not fit in a {height} x {width} image")
    top = int(rng.integers(0, height - size + 1))
    left = int(rng.integers(0, width - size + 1))
    hflip, vflip = (bool(rng.random() < 0.5), bool(rng.random() < 0.5)) if flips else (False, False)
    return CropFlip(top, left, size, hflip, vflip)


def draw_gamma(rng: np.random.Generator, strength: float) -> tuple[float, float]:
    """Two independent exponents (infrared, visible), log-uniform in ``[exp(-strength), exp(strength)]``
    (``strength`` >= 0, checked where it is configured)."""
    g = np.exp(rng.uniform(-strength, strength, size=2))
    return float(g[0]), float(g[1])


def apply_gamma(y: np.ndarray, gamma: float) -> np.ndarray:
    """``y ** gamma`` of a luminance array in [0, 1] (float32 kept)."""
    return np.power(y, np.float32(gamma), dtype=np.float32)


def pad_to(image: np.ndarray, size: int) -> np.ndarray:
    """Reflect-pad the bottom and right of an image to at least ``size`` x ``size``.

    A side of one pixel cannot be mirrored and is repeated instead.
    """
    h, w = image.shape[:2]
    ph, pw = max(0, size - h), max(0, size - w)
    if not ph and not pw:
        return image
    widths = [(0, ph), (0, pw)] + [(0, 0)] * (image.ndim - 2)
    mode = "reflect" if min(h, w) > 1 else "edge"
    return np.pad(image, widths, mode=mode)


def apply_crop_flip(image: np.ndarray, aug: CropFlip) -> np.ndarray:
    """Cut the window of ``aug`` out of an (H, W[, C]) array and flip it."""
    out = image[aug.top : aug.top + aug.size, aug.left : aug.left + aug.size]
    if aug.hflip:
        out = out[:, ::-1]
    if aug.vflip:
        out = out[::-1]
    return out
