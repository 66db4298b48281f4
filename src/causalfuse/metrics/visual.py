"""Visual information fidelity for fusion: VIFF (Han et al., 2013).

Takes one channel on the 0-255 scale. Local statistics are separable
Gaussian-window 'valid' filters (faster here than FFT at these sizes); the
sources' own statistics are kept in a small cache, since a benchmark scores
many fused images against the same pair.
"""

from __future__ import annotations

import numpy as np

from ._filters import filter2_valid, filter2_valid_decimated, gaussian_1d, source_cache
from ._kernels import viff_arguments
from ._registry import register_metric

__all__ = ["viff"]

_SIGMA_N_SQ = 0.005 * 255 * 255
_C = 1e-7
_SCALE_WEIGHTS = np.array([1.0, 0.0, 0.15, 1.0]) / 2.15
_WINDOWS = [gaussian_1d(2 ** (5 - s) + 1, (2 ** (5 - s) + 1) / 5.0) for s in range(1, 5)]  # 17, 9, 5, 3


@register_metric(
    "VIF",
    higher_is_better=True,
    reference="Y. Han, Y. Cai, Y. Cao, X. Xu, A new image fusion performance metric based on visual information "
    "fidelity, Information Fusion 14(2):127-135, 2013, doi:10.1016/j.inffus.2011.08.002",
    vifb_name="VIFF",
    min_size=41,
)
def viff(fused: np.ndarray, ir: np.ndarray, vi: np.ndarray) -> float:
    """VIFF of Han et al.: multi-scale VIF of the fused image against both sources.

    At each of 4 scales (windows 17, 9, 5, 3, Gaussian sigma N/5; for scales
    after the first the images are filtered 'valid' and decimated by 2), the
    VIF statistics of each source against F are computed with noise variance
    0.005 * 255^2 and Sheikh's clipping; at each pixel the source with the
    smaller gain g gives both the VID and VIND terms (the infrared image on
    ties); F_s = sum(VID + C) / sum(VIND + C), C = 1e-7, and
    VIFF = sum_s p_s F_s with p = [1, 0, 0.15, 1] / 2.15.

    Below 41 pixels in height or width the coarsest scale is empty and, as in
    the original (a sum over nothing, 0 / 0), the result is NaN
    (:func:`~causalfuse.metrics.compute` refuses such images).
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
        args = viff_arguments(ca[4 + s], ca[8 + s], cross[0], cb[4 + s], cb[8 + s], cross[1], mu2, e22, _SIGMA_N_SQ)
        args += 1.0
        vid, vind = np.log10(args, out=args)
        total += _SCALE_WEIGHTS[s] * ((vid + _C).sum() / (vind + _C).sum())
    return float(total)
