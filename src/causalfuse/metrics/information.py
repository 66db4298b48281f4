"""Information-theoretic metrics: MI, EN, CE (VIFB definitions).

Every function takes one channel on the 0-255 scale (float64 or uint8).
Histograms are ``np.bincount`` calls, never loops over pixels.
"""

from __future__ import annotations

import numpy as np

from ._registry import register_metric

__all__ = ["mutual_information", "entropy", "cross_entropy", "levels256"]

# Float images carrying 8-bit levels (k / 255 in float32, times 255) sit within
# ~1e-5 of an integer; this slack puts them in bin k, as their uint8 original.
_LEVEL_SLACK = 1e-4


def levels256(x: np.ndarray) -> np.ndarray:
    """Integer grey levels 0..255 as VIFB's histograms index them (floor).

    MATLAB indexes ``X(h(i,j) + 1)`` with the pixel value, which only works
    for integers; fractional values (16-bit or float input) are floored, and
    anything outside 0..255 is clipped.
    """
    x = np.asarray(x)
    if x.dtype == np.uint8:
        return x.astype(np.intp)
    return np.clip(np.floor(x + _LEVEL_SLACK), 0, 255).astype(np.intp)


def _hist_prob(levels: np.ndarray) -> np.ndarray:
    return np.bincount(levels.ravel(), minlength=256) / levels.size


def _plogp_sum(p: np.ndarray, log=np.log) -> float:
    nz = p[p > 0]
    return float(-(nz * log(nz)).sum()) + 0.0  # + 0.0: a single bin gives 0.0, not -0.0


def _mi_levels(x: np.ndarray) -> np.ndarray:
    """VIFB's MI quantisation: min-max stretch to [0, 1], then int16(x * 255) (half away from zero)."""
    x = np.asarray(x, dtype=np.float64)
    lo, hi = x.min(), x.max()
    if hi != lo:
        x = (x - lo) / (hi - lo)
    else:
        x = np.zeros_like(x)
    return np.floor(x * 255 + 0.5).astype(np.intp)  # x >= 0, so half-up is half-away-from-zero


def _mi(a_levels: np.ndarray, b_levels: np.ndarray) -> float:
    """Plug-in MI in nats from two level images: H(a) + H(b) - H(a, b)."""
    n = a_levels.size
    joint = np.bincount((a_levels * 256 + b_levels).ravel(), minlength=65536) / n
    ha = _plogp_sum(np.bincount(a_levels.ravel(), minlength=256) / n)
    hb = _plogp_sum(np.bincount(b_levels.ravel(), minlength=256) / n)
    return ha + hb - _plogp_sum(joint)


@register_metric(
    "MI",
    higher_is_better=True,
    reference="G. Qu, D. Zhang, P. Yan, Information measure for performance of image fusion, "
    "Electronics Letters 38(7):313-315, 2002, doi:10.1049/el:20020212",
    vifb_name="Mutinf",
)
def mutual_information(fused: np.ndarray, ir: np.ndarray, vi: np.ndarray) -> float:
    """MI(VI, F) + MI(IR, F) in nats, as VIFB's ``metricsMutinf``.

    Each image is min-max stretched to [0, 1] (a constant image becomes 0) and
    rounded to 256 levels; the MI is the plug-in estimate from the 256 x 256
    joint histogram with natural logarithms. For 8-bit images this equals the
    plug-in MI of the grey values.
    """
    f = _mi_levels(fused)
    return _mi(_mi_levels(vi), f) + _mi(_mi_levels(ir), f)


@register_metric(
    "EN",
    higher_is_better=True,
    reference="J. W. Roberts, J. A. van Aardt, F. B. Ahmed, Assessment of image fusion procedures using entropy, "
    "image quality, and multispectral classification, J. Appl. Remote Sens. 2(1):023522, 2008, doi:10.1117/1.2945910",
    colour="fused_only",
    vifb_name="Entropy",
)
def entropy(fused: np.ndarray, ir: np.ndarray | None = None, vi: np.ndarray | None = None) -> float:
    """Shannon entropy (bits) of the fused image's 256-bin histogram (``metricsEntropy``)."""
    return _plogp_sum(_hist_prob(levels256(fused)), np.log2)


def _ce_single(src: np.ndarray, fused_p: np.ndarray) -> float:
    p1 = _hist_prob(levels256(src))
    both = (p1 != 0) & (fused_p != 0)
    return float((p1[both] * np.log2(p1[both] / fused_p[both])).sum())


@register_metric(
    "CE",
    higher_is_better=False,
    reference="D. M. Bulanon, T. F. Burks, V. Alchanatis, Image fusion of visible and thermal images for fruit "
    "detection, Biosystems Engineering 103(1):12-22, 2009, doi:10.1016/j.biosystemseng.2009.02.009",
    vifb_name="Cross_entropy",
)
def cross_entropy(fused: np.ndarray, ir: np.ndarray, vi: np.ndarray) -> float:
    """(CE(VI, F) + CE(IR, F)) / 2 with CE = sum p1 log2(p1 / pF) over bins where both are non-zero.

    (A relative entropy between the grey-level histograms, as ``metricsCross_entropy``
    computes it; bins where only one histogram is non-zero are skipped.)
    """
    pf = _hist_prob(levels256(fused))
    return (_ce_single(vi, pf) + _ce_single(ir, pf)) / 2.0
