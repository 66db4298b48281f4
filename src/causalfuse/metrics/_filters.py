"""Filtering helpers shared by the metric families.

They reproduce MATLAB's ``fspecial('gaussian', N, sigma)`` and ``filter2(w,
x, 'valid')`` (correlation, no padding) with separable filters, so that a
metric costs milliseconds instead of seconds, and keep the sources' maps
between calls (:class:`SourceCache`).
"""

from __future__ import annotations

import math
import threading
from collections import OrderedDict
from typing import Callable

import numpy as np

from ._kernels import separable_valid

__all__ = [
    "gaussian_1d",
    "filter2_valid",
    "filter2_valid_decimated",
    "fspecial_gaussian_octave",
    "row_runs",
    "SourceCache",
    "source_cache",
]


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


def _separable(images: np.ndarray, g: np.ndarray, step: int) -> np.ndarray:
    n = g.size
    h, w = images.shape[-2:]
    if h < n or w < n:
        empty = images.shape[:-2] + (max(h - n + 1, 0), max(w - n + 1, 0))
        return np.zeros(empty)[..., ::step, ::step]
    stack = np.ascontiguousarray(images, dtype=np.float64).reshape((-1, h, w))
    # Four taps per pass measured faster from 17 taps on.
    out = separable_valid(stack, np.ascontiguousarray(g, dtype=np.float64), step, n >= 17)
    return out.reshape(images.shape[:-2] + out.shape[-2:])


def filter2_valid(images: np.ndarray, g: np.ndarray) -> np.ndarray:
    """``filter2(outer(g, g), x, 'valid')`` for a stack of images (..., H, W).

    Separable: one 1-D correlation per axis, cropped to the 'valid' part
    (compiled: :func:`causalfuse.metrics._kernels.separable_valid`).
    Returns (..., H - n + 1, W - n + 1) with n = len(g).
    """
    return _separable(images, g, 1)


def filter2_valid_decimated(images: np.ndarray, g: np.ndarray) -> np.ndarray:
    """``filter2_valid(images, g)[..., ::2, ::2]``, filtering only the kept rows and columns."""
    return _separable(images, g, 2)


def fspecial_gaussian_octave(size: int, sigma: float, *, renormalise: bool = False) -> np.ndarray:
    """``fspecial('gaussian', size, sigma)`` as Octave computes it: libm's exp, normalised by a column-major running sum.

    The 2-D kernel, for the windows that must be summed with the original's
    arithmetic (constant windows, where only rounding residue is left).
    ``renormalise``: divide once more by ``sum(sum(w))`` (column sums, then
    their sum), as Wang's ``ssim_index`` and the SSIM helpers of Liu's
    toolbox do (``window = window/sum(sum(window))``).
    """
    half = (size - 1) / 2.0
    two_sigma_sq = 2.0 * sigma * sigma
    kernel = np.array([[math.exp(-((j - half) ** 2 + (i - half) ** 2) / two_sigma_sq) for j in range(size)] for i in range(size)])
    total = 0.0
    for value in kernel.T.ravel():  # sum(f(:)): column by column
        total += value
    kernel = kernel / total
    if renormalise:
        total = 0.0
        for column in kernel.T:
            column_sum = 0.0
            for value in column:
                column_sum += value
            total += column_sum
        kernel = kernel / total
    return kernel


def row_runs(mask: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Runs of True along the rows of a 2-D mask: (row, first column, length) each, in row-major order."""
    padded = np.zeros((mask.shape[0], mask.shape[1] + 2), dtype=np.int8)
    padded[:, 1:-1] = mask
    edges = np.diff(padded, axis=1)
    r0, c0 = np.nonzero(edges == 1)
    _, c1 = np.nonzero(edges == -1)
    return r0.astype(np.int64), c0.astype(np.int64), (c1 - c0).astype(np.int64)


class SourceCache:
    """Small thread-safe LRU of maps that depend on one source image only.

    A benchmark scores many fused images (methods) against the same pair;
    the sources' filtered statistics (SSIM's and VIFF's local means and
    second moments) are the same every time, so they are kept, keyed by the
    image's exact bytes, up to ``max_bytes`` (keys included). A pure
    speed-up: a hit returns exactly what the computation would.
    """

    def __init__(self, max_bytes: int) -> None:
        self.max_bytes = max_bytes
        self._entries: OrderedDict[tuple, tuple[np.ndarray, ...]] = OrderedDict()
        self._bytes = 0
        self._lock = threading.Lock()

    @staticmethod
    def _key(tag: str, image: np.ndarray) -> tuple:
        return (tag, image.shape, image.tobytes())

    def _get(self, key: tuple) -> tuple[np.ndarray, ...] | None:
        with self._lock:
            hit = self._entries.get(key)
            if hit is not None:
                self._entries.move_to_end(key)
            return hit

    def _put(self, key: tuple, value) -> tuple[np.ndarray, ...]:
        value = tuple(value)
        for v in value:
            v.flags.writeable = False  # shared between calls: nobody may change it
        size = len(key[2]) + sum(v.nbytes for v in value)
        if size <= self.max_bytes:
            with self._lock:
                if key not in self._entries:
                    self._entries[key] = value
                    self._bytes += size
                    while self._bytes > self.max_bytes:
                        old_key, old = self._entries.popitem(last=False)
                        self._bytes -= len(old_key[2]) + sum(v.nbytes for v in old)
        return value

    def get(self, tag: str, image: np.ndarray) -> tuple[np.ndarray, ...] | None:
        """The maps kept for ``image`` under ``tag``, or None."""
        return self._get(self._key(tag, np.ascontiguousarray(image, dtype=np.float64)))

    def put(self, tag: str, image: np.ndarray, value: tuple[np.ndarray, ...]) -> tuple[np.ndarray, ...]:
        """Keeps ``value`` (made read-only) as the maps of ``image`` under ``tag``, and returns it."""
        return self._put(self._key(tag, np.ascontiguousarray(image, dtype=np.float64)), value)

    def get_or_compute(
        self, tag: str, image: np.ndarray, compute: Callable[[np.ndarray], tuple[np.ndarray, ...]]
    ) -> tuple[np.ndarray, ...]:
        image = np.ascontiguousarray(image, dtype=np.float64)
        key = self._key(tag, image)
        hit = self._get(key)
        if hit is not None:
            return hit
        return self._put(key, compute(image))

    def clear(self) -> None:
        with self._lock:
            self._entries.clear()
            self._bytes = 0


# One source channel of 630 x 460 takes about 12 MB (SSIM and VIFF maps plus
# the key): a colour pair in both colour modes fits many times over.
source_cache = SourceCache(max_bytes=256 * 2**20)
