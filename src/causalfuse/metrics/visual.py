"""Visual information fidelity for fusion: VIFF (Han et al., 2013).

Takes one channel on the 0-255 scale. Local statistics are separable
Gaussian-window 'valid' filters (faster here than FFT even at 33 taps); the
sources' own statistics are kept in a small cache, since a benchmark scores
many fused images against the same pair.
"""

from __future__ import annotations

import numpy as np

from ._filters import filter2_valid, filter2_valid_decimated, gaussian_1d, source_cache
from ._registry import register_metric

__all__ = ["viff"]

_SIGMA_N_SQ = 0.005 * 255 * 255
_C = 1e-7
_SCALE_WEIGHTS = np.array([1.0, 0.0, 0.15, 1.0]) / 2.15
_WINDOWS = [gaussian_1d(2 ** (5 - s) + 1, (2 ** (5 - s) + 1) / 5.0) for s in range(1, 5)]  # 33, 17, 9, 5


def _vid_vind_terms(mu1, e11, e12, mu2, sigma2_sq):
    """Sheikh's VIF terms of one source (ref) against the fused image (dist), with his clipping.

    ``sigma2_sq`` is the fused image's local variance, already clipped at 0.
    Returns the arguments of the logarithms, g^2 sigma1^2 / (sv^2 + sigma_n^2)
    (VID) and sigma1^2 / sigma_n^2 (VIND), and the gain g, after the original's
    sequence of clips: flat source (sigma1^2 < 1e-10) -> g = 0, sv^2 = sigma2^2,
    sigma1^2 = 0; flat fused image -> g = 0, sv^2 = 0; g < 0 -> sv^2 = sigma2^2,
    g = 0; finally sv^2 >= 1e-10.
    """
    sigma1_sq = e11 - mu1 * mu1  # a new array: cached inputs are never written
    np.maximum(sigma1_sq, 0.0, out=sigma1_sq)
    sigma12 = e12 - mu1 * mu2
    g = sigma12 / (sigma1_sq + 1e-10)
    sv_sq = sigma2_sq - g * sigma12
    flat1 = sigma1_sq < 1e-10
    flat2 = sigma2_sq < 1e-10
    zero_g = flat1 | flat2 | (g < 0)
    sv_sq = np.where(flat2, 0.0, np.where(zero_g, sigma2_sq, sv_sq))
    np.maximum(sv_sq, 1e-10, out=sv_sq)
    g[zero_g] = 0.0
    sigma1_sq[flat1] = 0.0
    vid_arg = g * g * sigma1_sq / (sv_sq + _SIGMA_N_SQ)
    vind_arg = sigma1_sq / _SIGMA_N_SQ
    return vid_arg, vind_arg, g


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


def _chain(image: np.ndarray) -> tuple[np.ndarray, ...]:
    """One image's own part of VIFF: per scale the (filtered, decimated) image, its local mean and second moment.

    Returns 12 arrays: images of scales 1-4, then means, then second moments
    (empty where a scale's statistics are not needed: weight 0).
    """
    imgs, mus, e2s = [], [], []
    x = np.asarray(image, dtype=np.float64)
    empty = np.zeros((0, 0))
    for s, g in enumerate(_WINDOWS):
        if s > 0:
            x = filter2_valid_decimated(x, g)
        imgs.append(x)
        if _skip(s, x, g):
            mus.append(empty)
            e2s.append(empty)
        else:
            st = filter2_valid(np.stack([x, x * x]), g)
            mus.append(st[0])
            e2s.append(st[1])
    return (*imgs, *mus, *e2s)


def _skip(s: int, x: np.ndarray, g: np.ndarray) -> bool:
    # A scale of weight 0 only feeds the next one (unless it is empty: then the original's 0 * NaN is NaN).
    return _SCALE_WEIGHTS[s] == 0 and min(x.shape) >= g.size


def _viff(fused: np.ndarray, first: np.ndarray, second: np.ndarray) -> float:
    """VIFF with the original's argument order: ``first`` is taken where its gain is strictly smaller."""
    cf = _chain(fused)
    ca = source_cache.get_or_compute("viff", first, _chain)
    cb = source_cache.get_or_compute("viff", second, _chain)
    total = 0.0
    for s, g in enumerate(_WINDOWS):
        f, a, b = cf[s], ca[s], cb[s]
        if _skip(s, f, g):
            continue
        mu2, e22 = cf[4 + s], cf[8 + s]
        if mu2.size == 0:
            return float("nan")  # smaller than the window: sum of nothing, 0 / 0 in the original
        cross = filter2_valid(np.stack([a * f, b * f]), g)
        sigma2_sq = e22 - mu2 * mu2
        np.maximum(sigma2_sq, 0.0, out=sigma2_sq)
        vid_a, vind_a, g_a = _vid_vind_terms(ca[4 + s], ca[8 + s], cross[0], mu2, sigma2_sq)
        vid_b, vind_b, g_b = _vid_vind_terms(cb[4 + s], cb[8 + s], cross[1], mu2, sigma2_sq)
        take_first = g_a < g_b  # the original keeps the second source unless the first has the strictly smaller g
        vid = np.log10(1 + np.where(take_first, vid_a, vid_b))
        vind = np.log10(1 + np.where(take_first, vind_a, vind_b))
        total += _SCALE_WEIGHTS[s] * ((vid + _C).sum() / (vind + _C).sum())
    return float(total)
