"""Visual information fidelity for fusion: VIFF (Han et al., 2013).

Takes one channel on the 0-255 scale. Local statistics are Gaussian-window
'valid' filters; the wide windows of the first scales are applied by FFT on a
stack of all images at once.
"""

from __future__ import annotations

import numpy as np

from ._filters import fft_filter2_valid, filter2_valid, gaussian_1d
from ._registry import register_metric

__all__ = ["viff"]

_SIGMA_N_SQ = 0.005 * 255 * 255
_C = 1e-7
_SCALE_WEIGHTS = np.array([1.0, 0.0, 0.15, 1.0]) / 2.15
_WINDOWS = [gaussian_1d(2 ** (5 - s) + 1, (2 ** (5 - s) + 1) / 5.0) for s in range(1, 5)]  # 33, 17, 9, 5
_FFT_FROM = 10**9  # never: separable ndimage filters measured faster than FFT here, even at 33 taps


def _filt(stack: np.ndarray, g: np.ndarray) -> np.ndarray:
    return fft_filter2_valid(stack, g) if g.size >= _FFT_FROM else filter2_valid(stack, g)


def _vid_vind(mu1, e11, e12, mu2, sigma2_sq_raw):
    """Sheikh's VIF statistics of one source (ref) against the fused image (dist), with his clipping."""
    mu1_sq = mu1 * mu1
    sigma1_sq = e11 - mu1_sq
    sigma12 = e12 - mu1 * mu2
    sigma2_sq = sigma2_sq_raw.copy()
    sigma1_sq[sigma1_sq < 0] = 0
    sigma2_sq[sigma2_sq < 0] = 0
    g = sigma12 / (sigma1_sq + 1e-10)
    sv_sq = sigma2_sq - g * sigma12
    flat1 = sigma1_sq < 1e-10
    g[flat1] = 0
    sv_sq[flat1] = sigma2_sq[flat1]
    sigma1_sq[flat1] = 0
    flat2 = sigma2_sq < 1e-10
    g[flat2] = 0
    sv_sq[flat2] = 0
    neg = g < 0
    sv_sq[neg] = sigma2_sq[neg]
    g[neg] = 0
    sv_sq[sv_sq <= 1e-10] = 1e-10
    vid = np.log10(1 + g * g * sigma1_sq / (sv_sq + _SIGMA_N_SQ))
    vind = np.log10(1 + sigma1_sq / _SIGMA_N_SQ)
    return vid, vind, g


@register_metric(
    "VIF",
    higher_is_better=True,
    reference="Y. Han, Y. Cai, Y. Cao, X. Xu, A new image fusion performance metric based on visual information "
    "fidelity, Information Fusion 14(2):127-135, 2013, doi:10.1016/j.inffus.2011.08.002",
    vifb_name="VIFF",
)
def viff(fused: np.ndarray, ir: np.ndarray, vi: np.ndarray) -> float:
    """VIFF of Han et al.: multi-scale VIF of the fused image against both sources.

    At each of 4 scales (windows 33, 17, 9, 5, Gaussian sigma N/5; for scales
    after the first the images are filtered 'valid' and decimated by 2), the
    VIF statistics of each source against F are computed with noise variance
    0.005 * 255^2 and Sheikh's clipping; at each pixel the source with the
    smaller gain g gives both the VID and VIND terms (the infrared image on
    ties); F_s = sum(VID + C) / sum(VIND + C), C = 1e-7, and
    VIFF = sum_s p_s F_s with p = [1, 0, 0.15, 1] / 2.15.
    """
    return _viff(fused, vi, ir)  # Han's VIFF_Public(Im1, Im2, ImF) called with Im1 = visible, as the references were


def _viff(fused: np.ndarray, first: np.ndarray, second: np.ndarray) -> float:
    """VIFF with the original's argument order: ``first`` is taken where its gain is strictly smaller."""
    imgs = np.stack([np.asarray(x, dtype=np.float64) for x in (fused, first, second)])
    total = 0.0
    for s, g in enumerate(_WINDOWS):
        if s > 0:
            imgs = _filt(imgs, g)[:, ::2, ::2]
        f, a, b = imgs  # fused, first, second
        if _SCALE_WEIGHTS[s] == 0 and min(f.shape) >= g.size:
            continue  # weight 0: the scale only feeds the next one
        stats = _filt(np.stack([f, f * f, a, a * a, a * f, b, b * b, b * f]), g)
        if stats.shape[-1] == 0 or stats.shape[-2] == 0:
            return float("nan")
        mu2 = stats[0]
        sigma2_sq = stats[1] - mu2 * mu2
        vid_a, vind_a, g_a = _vid_vind(stats[2], stats[3], stats[4], mu2, sigma2_sq)
        vid_b, vind_b, g_b = _vid_vind(stats[5], stats[6], stats[7], mu2, sigma2_sq)
        take_first = g_a < g_b  # the original keeps the second source unless the first has the strictly smaller g
        vid = np.where(take_first, vid_a, vid_b)
        vind = np.where(take_first, vind_a, vind_b)
        ratio = (vid + _C).sum() / (vind + _C).sum()
        total += _SCALE_WEIGHTS[s] * ratio
    return float(total)
