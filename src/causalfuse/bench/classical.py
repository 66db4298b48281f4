"""Classical fusion baselines, implemented from their papers.

Every method here fuses one channel: it takes two float32 arrays in [0, 1] of
the same shape (H, W), infrared first, and returns the fused (H, W) float32
array in [0, 1]. They are registered with :mod:`causalfuse.models.registry`
(``kind="classical"``), so the benchmark and ``causalfuse fuse --method``
find them by name:

- ``average``: the pixel mean.
- ``max-abs``: the "maximum absolute value" rule applied to the intensities.
  On non-negative intensities in [0, 1] the larger absolute value is the
  larger value, so this is the pixel-wise maximum (the rule only differs from
  the maximum on signed coefficients, where the pyramid and wavelet methods
  below apply it).
- ``laplacian-pyramid``: Burt & Adelson's Laplacian pyramid; detail levels by
  max-abs selection, the coarsest (base) level averaged.
- ``dwt``: the 2-D discrete wavelet transform (PyWavelets, ``db2``, 3 levels);
  detail coefficients by max-abs selection, the approximation averaged.
- ``gff``: guided-filter fusion (Li, Kang & Hu 2013).

All are vectorised (separable filters, running-sum box filters); a 640 x 480
pair takes milliseconds to a few tens of milliseconds.
"""

from __future__ import annotations

import warnings
from typing import Callable

import numpy as np
from ..errors import CausalFuseError
from ..models.registry import register_method

__all__ = [
    "fuse_average",
    "fuse_max_abs",
    "fuse_laplacian_pyramid",
    "fuse_dwt",
    "fuse_gff",
    "guided_filter",
    "laplacian_pyramid",
    "reconstruct_laplacian_pyramid",
]

Fuser = Callable[[np.ndarray, np.ndarray], np.ndarray]


def _check_pair(ir: np.ndarray, vi: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    ir = np.asarray(ir, dtype=np.float32)
    vi = np.asarray(vi, dtype=np.float32)
    if ir.ndim != 2 or vi.ndim != 2:
        raise CausalFuseError(f"classical fusion expects two single-channel (H, W) images, got {ir.shape} and {vi.shape}")
    if ir.shape != vi.shape:
        raise CausalFuseError(f"infrared and visible sizes differ: {ir.shape} vs {vi.shape}")
    return ir, vi


def _select_max_abs(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Choose, per coefficient, the one with the larger magnitude (ties: the first)."""
    return np.where(np.abs(a) >= np.abs(b), a, b)


def _finish(fused: np.ndarray) -> np.ndarray:
    return np.clip(fused, 0.0, 1.0).astype(np.float32, copy=False)


# --------------------------------------------------------------------- pixel rules


def fuse_average(ir: np.ndarray, vi: np.ndarray) -> np.ndarray:
    """Pixel mean of the two sources."""
    ir, vi = _check_pair(ir, vi)
    return _finish(0.5 * (ir + vi))


def fuse_max_abs(ir: np.ndarray, vi: np.ndarray) -> np.ndarray:
    """Max-absolute rule on intensities: on [0, 1] inputs, the pixel maximum."""
    ir, vi = _check_pair(ir, vi)
    return _finish(_select_max_abs(ir, vi))


# --------------------------------------------------------------- Laplacian pyramid

# Burt & Adelson's generating kernel with a = 0.375: [1/16, 1/4, 3/8, 1/4, 1/16].
_BURT_KERNEL = np.array([1.0, 4.0, 6.0, 4.0, 1.0], dtype=np.float32) / 16.0


def _blur(image: np.ndarray) -> np.ndarray:
    from scipy import ndimage  # imported on use: fusing with a network never needs it
    out = ndimage.convolve1d(image, _BURT_KERNEL, axis=0, mode="reflect")
    return ndimage.convolve1d(out, _BURT_KERNEL, axis=1, mode="reflect")


def _reduce(image: np.ndarray) -> np.ndarray:
    return _blur(image)[::2, ::2]


def _expand(image: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """Upsample by 2 to ``shape`` (zeros between samples, blurred, gain 4)."""
    up = np.zeros(shape, dtype=np.float32)
    up[::2, ::2] = image[: (shape[0] + 1) // 2, : (shape[1] + 1) // 2]
    return 4.0 * _blur(up)


def laplacian_pyramid(image: np.ndarray, levels: int) -> list[np.ndarray]:
    """Laplacian pyramid: ``levels`` detail bands, then the coarsest Gaussian level.

    Reconstruction by :func:`reconstruct_laplacian_pyramid` is exact (up to
    float rounding) for any size, odd sizes included: each band is the
    difference between a Gaussian level and the expansion of the next one to
    that level's own shape.
    """
    pyramid = []
    current = np.asarray(image, dtype=np.float32)
    for _ in range(levels):
        if min(current.shape) < 2:
            break
        smaller = _reduce(current)
        pyramid.append(current - _expand(smaller, current.shape))
        current = smaller
    pyramid.append(current)
    return pyramid


def reconstruct_laplacian_pyramid(pyramid: list[np.ndarray]) -> np.ndarray:
    """Invert :func:`laplacian_pyramid`."""
    image = pyramid[-1]
    for band in reversed(pyramid[:-1]):
        image = band + _expand(image, band.shape)
    return image


def fuse_laplacian_pyramid(ir: np.ndarray, vi: np.ndarray, *, levels: int = 4) -> np.ndarray:
    """Laplacian pyramid fusion (Burt & Adelson 1983, doi:10.1109/TCOM.1983.1095851).

    Detail bands: max-abs selection; base (coarsest) level: average.
    """
    ir, vi = _check_pair(ir, vi)
    p_ir, p_vi = laplacian_pyramid(ir, levels), laplacian_pyramid(vi, levels)
    fused = [_select_max_abs(a, b) for a, b in zip(p_ir[:-1], p_vi[:-1])]
    fused.append(0.5 * (p_ir[-1] + p_vi[-1]))
    return _finish(reconstruct_laplacian_pyramid(fused))


# ------------------------------------------------------------------------- DWT


def fuse_dwt(ir: np.ndarray, vi: np.ndarray, *, wavelet: str = "db2", levels: int = 3) -> np.ndarray:
    """Discrete wavelet transform fusion (Li, Manjunath & Mitra 1995, doi:10.1006/gmip.1995.1022).

    Detail coefficients: max-abs selection; approximation: average. The
    transform is PyWavelets' ``wavedec2`` with symmetric extension; the
    reconstruction, which can be one pixel larger on odd sizes, is cropped
    back to the input size. ``levels`` is capped at the largest level the
    image size allows.
    """
    try:
        import pywt
    except ModuleNotFoundError:  # pragma: no cover - optional extra
        raise CausalFuseError("the 'dwt' method needs PyWavelets: pip install 'causalfuse[bench]'") from None
    ir, vi = _check_pair(ir, vi)
    level = max(1, min(levels, pywt.dwt_max_level(min(ir.shape), pywt.Wavelet(wavelet).dec_len)))
    with warnings.catch_warnings():
        # Images smaller than the filter still get one level (with boundary effects).
        warnings.simplefilter("ignore", UserWarning)
        c_ir = pywt.wavedec2(ir, wavelet, mode="symmetric", level=level)
        c_vi = pywt.wavedec2(vi, wavelet, mode="symmetric", level=level)
    fused = [0.5 * (c_ir[0] + c_vi[0])]
    for d_ir, d_vi in zip(c_ir[1:], c_vi[1:]):
        fused.append(tuple(_select_max_abs(a, b) for a, b in zip(d_ir, d_vi)))
    out = pywt.waverec2(fused, wavelet, mode="symmetric")
    return _finish(out[: ir.shape[0], : ir.shape[1]])


# ------------------------------------------------------------------------- GFF


def _box_mean(image: np.ndarray, radius: int, count: np.ndarray | None = None) -> np.ndarray:
    """Mean over the (2r+1)^2 window clipped to the image (He et al.'s box filter / N)."""
    from scipy import ndimage  # imported on use: fusing with a network never needs it
    size = 2 * radius + 1
    image = np.asarray(image, dtype=np.float64)
    total = ndimage.uniform_filter(image, size=size, mode="constant", cval=0.0)
    if count is None:
        count = _window_count(image.shape, radius)
    return total / count


def _window_count(shape: tuple[int, ...], radius: int) -> np.ndarray:
    """N: the number of pixels of each clipped window, as a fraction of (2r+1)^2 (separable)."""
    from scipy import ndimage  # imported on use: fusing with a network never needs it
    size = 2 * radius + 1
    rows = ndimage.uniform_filter1d(np.ones(shape[-2]), size, mode="constant", cval=0.0)
    cols = ndimage.uniform_filter1d(np.ones(shape[-1]), size, mode="constant", cval=0.0)
    return np.outer(rows, cols)


def guided_filter(guide: np.ndarray, src: np.ndarray, radius: int, eps: float) -> np.ndarray:
    """Grey guided filter (He, Sun & Tang 2013, doi:10.1109/TPAMI.2012.213).

    q = mean(a) * I + mean(b) with a = cov(I, p) / (var(I) + eps),
    b = mean(p) - a * mean(I), means over (2r+1)^2 windows clipped at the
    borders. O(1) per pixel (running sums).
    """
    guide = np.asarray(guide, dtype=np.float64)
    src = np.asarray(src, dtype=np.float64)
    count = _window_count(guide.shape, radius)
    mean_i = _box_mean(guide, radius, count)
    mean_p = _box_mean(src, radius, count)
    cov_ip = _box_mean(guide * src, radius, count) - mean_i * mean_p
    var_i = _box_mean(guide * guide, radius, count) - mean_i * mean_i
    a = cov_ip / (var_i + eps)
    b = mean_p - a * mean_i
    return _box_mean(a, radius, count) * guide + _box_mean(b, radius, count)


# 3 x 3 Laplacian and the 11 x 11 Gaussian (r_g = sigma_g = 5) of the GFF paper.
_LAPLACIAN = np.array([[0.0, 1.0, 0.0], [1.0, -4.0, 1.0], [0.0, 1.0, 0.0]])


def _gaussian_kernel(radius: int, sigma: float) -> np.ndarray:
    x = np.arange(-radius, radius + 1, dtype=np.float64)
    k = np.exp(-(x**2) / (2.0 * sigma**2))
    return k / k.sum()


def fuse_gff(
    ir: np.ndarray,
    vi: np.ndarray,
    *,
    base_size: int = 31,
    r1: int = 45,
    eps1: float = 0.3,
    r2: int = 7,
    eps2: float = 1e-6,
    saliency_radius: int = 5,
    saliency_sigma: float = 5.0,
) -> np.ndarray:
    """Guided-filter fusion (Li, Kang & Hu 2013, doi:10.1109/TIP.2013.2244222).

    1. Two-scale decomposition: base B = I * Z (31 x 31 mean filter), detail
       D = I - B.
    2. Saliency S = |I * L| * g (3 x 3 Laplacian, 11 x 11 Gaussian with
       sigma 5); binary weight maps P_n = 1 where source n is the most salient
       (ties: infrared).
    3. Weight maps refined by guided filtering of P_n with I_n as guide:
       W_B with (r1, eps1) = (45, 0.3), W_D with (r2, eps2) = (7, 1e-6), each
       normalised to sum to one per pixel.
    4. F = sum W_B,n B_n + sum W_D,n D_n.
    """
    from scipy import ndimage  # imported on use: fusing with a network never needs it
    ir, vi = _check_pair(ir, vi)
    sources = np.stack([ir, vi]).astype(np.float64)
    base = ndimage.uniform_filter(sources, size=(1, base_size, base_size), mode="reflect")
    detail = sources - base
    high = np.abs(ndimage.convolve(sources, _LAPLACIAN[None], mode="reflect"))
    g = _gaussian_kernel(saliency_radius, saliency_sigma)
    saliency = ndimage.convolve1d(ndimage.convolve1d(high, g, axis=1, mode="reflect"), g, axis=2, mode="reflect")
    winner = np.argmax(saliency, axis=0)
    masks = np.stack([winner == n for n in range(len(sources))]).astype(np.float64)

    def refined(radius: int, eps: float) -> np.ndarray:
        weights = np.stack([guided_filter(sources[n], masks[n], radius, eps) for n in range(len(sources))])
        total = weights.sum(axis=0)
        # The masks sum to one, and a guided filter maps a constant to itself, so
        # the total is 1 up to rounding; the guard only matters for degenerate input.
        total = np.where(np.abs(total) < 1e-12, 1.0, total)
        return weights / total

    fused = (refined(r1, eps1) * base).sum(axis=0) + (refined(r2, eps2) * detail).sum(axis=0)
    return _finish(fused)


# -------------------------------------------------------------------- registry


@register_method(
    "average",
    kind="classical",
    description="pixel mean of infrared and visible",
    reference="baseline",
)
def _average() -> Fuser:
    return fuse_average


@register_method(
    "max-abs",
    kind="classical",
    description="maximum-absolute rule on intensities (the pixel maximum for images in [0, 1])",
    reference="baseline",
)
def _max_abs() -> Fuser:
    return fuse_max_abs


@register_method(
    "laplacian-pyramid",
    kind="classical",
    description="Laplacian pyramid, 4 levels: max-abs details, averaged base",
    reference="Burt & Adelson 1983, The Laplacian pyramid as a compact image code, doi:10.1109/TCOM.1983.1095851",
)
def _laplacian_pyramid(levels: int = 4) -> Fuser:
    return lambda ir, vi: fuse_laplacian_pyramid(ir, vi, levels=levels)


@register_method(
    "dwt",
    kind="classical",
    description="discrete wavelet transform (db2, 3 levels): max-abs details, averaged approximation",
    reference="Li, Manjunath & Mitra 1995, Multisensor image fusion using the wavelet transform, doi:10.1006/gmip.1995.1022",
)
def _dwt(wavelet: str = "db2", levels: int = 3) -> Fuser:
    return lambda ir, vi: fuse_dwt(ir, vi, wavelet=wavelet, levels=levels)


@register_method(
    "gff",
    kind="classical",
    description="guided-filter fusion (two-scale, guided-filtered saliency weights)",
    reference="Li, Kang & Hu 2013, Image fusion with guided filtering, doi:10.1109/TIP.2013.2244222",
)
def _gff() -> Fuser:
    return fuse_gff
