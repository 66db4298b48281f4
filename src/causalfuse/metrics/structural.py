"""Structural similarity: VIFB's SSIM = SSIM(VI, F) + SSIM(IR, F).

Every function takes one channel on the 0-255 scale.
"""

from __future__ import annotations

import numpy as np

from ._filters import filter2_valid, gaussian_1d, source_cache
from ._kernels import ssim_sum
from ._registry import register_metric

__all__ = ["ssim", "ssim_single"]

_WINDOW = gaussian_1d(11, 1.5)
_C1 = (0.01 * 255) ** 2
_C2 = (0.03 * 255) ** 2


def _moments(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Local mean and second moment of one image (cached for sources)."""
    m = filter2_valid(np.stack([x, x * x]), _WINDOW)
    return m[0], m[1]


def _ssim_pair_maps(fused: np.ndarray, sources: list[np.ndarray]) -> list[float]:
    """Mean SSIM of each source against ``fused``, sharing the fused image's statistics."""
    f = np.asarray(fused, dtype=np.float64)
    srcs = [np.asarray(s, dtype=np.float64) for s in sources]
    filt = filter2_valid(np.stack([f, f * f] + [s * f for s in srcs]), _WINDOW)
    if filt.shape[-1] == 0 or filt.shape[-2] == 0:
        return [float("nan")] * len(srcs)  # image smaller than the window: MATLAB's mean2 of empty is NaN
    ub, eb2 = filt[0], filt[1]
    out = []
    for i, s in enumerate(srcs):
        ua, ea2 = source_cache.get_or_compute("ssim", s, _moments)
        out.append(ssim_sum(ua, ea2, ub, eb2, filt[2 + i], _C1, _C2) / ub.size)
    return out


def ssim_single(a: np.ndarray, b: np.ndarray) -> float:
    """Wang et al.'s SSIM of two images: 11 x 11 Gaussian (sigma 1.5), 'valid', K = (0.01, 0.03), L = 255."""
    return _ssim_pair_maps(b, [a])[0]


@register_metric(
    "SSIM",
    higher_is_better=True,
    reference="Z. Wang, A. C. Bovik, H. R. Sheikh, E. P. Simoncelli, Image quality assessment: from error visibility "
    "to structural similarity, IEEE Transactions on Image Processing 13(4):600-612, 2004, doi:10.1109/TIP.2003.819861",
    vifb_name="Ssim",
    min_size=11,
)
def ssim(fused: np.ndarray, ir: np.ndarray, vi: np.ndarray) -> float:
    """VIFB's SSIM: SSIM(VI, F) + SSIM(IR, F), so the maximum is 2 (``metricsSsim``).

    Each term is the mean of the SSIM map with an 11 x 11 Gaussian window
    (sigma 1.5), 'valid' filtering (no padding), K1 = 0.01, K2 = 0.03, L = 255.
    Below 11 x 11 pixels no window fits: the map is empty and, as the
    original's ``mean2`` of an empty map, the result is NaN
    (:func:`~causalfuse.metrics.compute` refuses such images).
    """
    s_vi, s_ir = _ssim_pair_maps(fused, [vi, ir])
    return s_vi + s_ir
