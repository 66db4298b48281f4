"""Filtering helpers shared by the metric families.

They reproduce MATLAB's ``fspecial('gaussian', N, sigma)``, ``filter2(w, x,
'valid')`` (correlation, no padding) and ``conv2(x, h, 'same')`` (true
convolution, zero padding) with separable or FFT implementations, so that a
metric costs milliseconds instead of seconds.
"""

from __future__ import annotations

import numpy as np
from scipy import fft as sfft
from scipy import ndimage

__all__ = ["gaussian_1d", "filter2_valid", "conv3x3_same", "fft_filter2_valid"]


def gaussian_1d(size: int, sigma: float) -> np.ndarray:
    """The 1-D factor of MATLAB's ``fspecial('gaussian', size, sigma)``.

    ``fspecial`` normalises the 2-D kernel ``exp(-(x^2 + y^2) / (2 sigma^2))``
    to sum 1; that kernel is the outer product of this normalised 1-D one (up
    to rounding). MATLAB's cut of values below ``eps * max`` never applies to
    the windows used here (checked in the tests).
    """
    x = np.arange(size, dtype=np.float64) - (size - 1) / 2.0
    g = np.exp(-(x * x) / (2.0 * sigma * sigma))
    return g / g.sum()


def filter2_valid(images: np.ndarray, g: np.ndarray) -> np.ndarray:
    """``filter2(outer(g, g), x, 'valid')`` for a stack of images (..., H, W).

    Separable: one 1-D correlation per axis, cropped to the 'valid' part.
    Returns (..., H - n + 1, W - n + 1) with n = len(g).
    """
    n = g.size
    h, w = images.shape[-2:]
    if h < n or w < n:
        return np.zeros(images.shape[:-2] + (max(h - n + 1, 0), max(w - n + 1, 0)))
    lo = n // 2
    # ndimage centres the kernel at n // 2; for even n it would shift, but all windows here are odd.
    out = ndimage.correlate1d(images, g, axis=-1, mode="constant")[..., lo : lo + w - n + 1]
    out = ndimage.correlate1d(out, g, axis=-2, mode="constant")[..., lo : lo + h - n + 1, :]
    return out


def fft_filter2_valid(images: np.ndarray, g: np.ndarray) -> np.ndarray:
    """Same as :func:`filter2_valid`, computed by FFT (faster for wide windows)."""
    n = g.size
    h, w = images.shape[-2:]
    if h < n or w < n:
        return np.zeros(images.shape[:-2] + (max(h - n + 1, 0), max(w - n + 1, 0)))
    fh, fw = sfft.next_fast_len(h, real=True), sfft.next_fast_len(w, real=True)
    kern = np.zeros((fh, fw))
    kern[:n, :n] = np.outer(g[::-1], g[::-1])  # correlation = convolution with the flipped kernel
    spec = sfft.rfft2(images, s=(fh, fw), workers=-1) * sfft.rfft2(kern)
    full = sfft.irfft2(spec, s=(fh, fw), workers=-1)
    return full[..., n - 1 : h, n - 1 : w]


def conv3x3_same(x: np.ndarray, h: np.ndarray) -> np.ndarray:
    """MATLAB ``conv2(x, h, 'same')`` for a 3 x 3 kernel: true convolution, zero padding."""
    hf = h[::-1, ::-1]
    xp = np.pad(x, 1)
    rows, cols = x.shape
    out = np.zeros_like(x, dtype=np.float64)
    for u in range(3):
        for v in range(3):
            c = hf[u, v]
            if c != 0:
                out += c * xp[u : u + rows, v : v + cols]
    return out
