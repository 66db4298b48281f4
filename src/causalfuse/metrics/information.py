"""Information-theoretic metrics: MI, EN, CE (VIFB definitions) and NCIE (group ``liu2012``).

Every function takes one channel on the 0-255 scale (float64 or uint8).
Histograms are ``np.bincount`` calls, never loops over pixels.
"""

from __future__ import annotations

import numpy as np

from ._registry import register_metric

__all__ = ["mutual_information", "entropy", "cross_entropy", "levels256", "ncie"]

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


def _stretch_round(x: np.ndarray) -> np.ndarray:
    """``normalize1``: min-max stretch to 0..255, rounded half away from zero; an all-zero image stays as it is.

    A constant non-zero image divides 0 by 0 (NaN levels, which the
    original cannot index its histogram with); None stands for that.
    """
    x = np.asarray(x, dtype=np.float64)
    lo, hi = x.min(), x.max()
    if hi == 0 and lo == 0:
        return x.astype(np.intp)
    if hi == lo:
        return None
    y = (x - lo) / (hi - lo) * 255
    whole = np.floor(y)
    return (whole + (y - whole >= 0.5)).astype(np.intp)  # y >= 0: half up is MATLAB's round


def _ncc(x_levels: np.ndarray, y_levels: np.ndarray) -> float:
    """Wang's nonlinear correlation coefficient ``NCC.m``: H(x) + H(y) - H(x, y), 256 x 256 bins, logarithms base 256."""
    joint = np.bincount((x_levels * 256 + y_levels).ravel(), minlength=65536).reshape(256, 256) / x_levels.size
    return (_plogp_sum(joint.sum(axis=1), np.log2) + _plogp_sum(joint.sum(axis=0), np.log2) - _plogp_sum(joint, np.log2)) / 8.0


@register_metric(
    "NCIE",
    higher_is_better=True,
    reference="Q. Wang, Y. Shen, J. Jin, Performance evaluation of image fusion techniques, in: T. Stathaki (ed.), "
    "Image Fusion: Algorithms and Applications, Academic Press, 2008, pp. 469-492; the measure: Q. Wang, Y. Shen, "
    "J. Q. Zhang, A nonlinear correlation measure for multivariable data set, Physica D 200(3-4):287-295, 2005, "
    "doi:10.1016/j.physd.2004.11.001",
    groups=("liu2012",),
)
def ncie(fused: np.ndarray, ir: np.ndarray, vi: np.ndarray) -> float:
    """Nonlinear correlation information entropy of the three images (``metricWang(VI, IR, F)``).

    Each image is min-max stretched to 0..255 and rounded (``normalize1``);
    the nonlinear correlation coefficients NCC (:func:`_ncc`) of the three
    pairs fill R = [1 N_vi,ir N_vi,f; N_vi,ir 1 N_ir,f; N_vi,f N_ir,f 1];
    with its eigenvalues r, NCIE = 1 + sum_i (r_i / 3) log_256(r_i / 3).
    Symmetric in the three images; 0 for independent images. NCC(x, x) is
    the entropy of x in base 256, so identical images score 1 only when
    their histogram is flat.

    Edge cases: a constant non-zero image gives NaN (the original's
    ``normalize1`` divides 0 by 0 and its histogram cannot be indexed with
    NaN); an all-zero image is kept as it is, as in the original. An
    eigenvalue at or below 0 (R singular up to rounding, e.g. three
    identical images) contributes its limit 0 to the sum, where the
    original's ``r .* log2(r / 3)`` would give NaN (r = 0) or a complex
    number whose real part is of the order of 1e-15.
    """
    levels = [_stretch_round(x) for x in (vi, ir, fused)]
    if any(x is None for x in levels):
        return float("nan")
    a, b, f = levels
    n_ab, n_af, n_bf = _ncc(a, b), _ncc(a, f), _ncc(b, f)
    r = np.linalg.eigvalsh(np.array([[1.0, n_ab, n_af], [n_ab, 1.0, n_bf], [n_af, n_bf, 1.0]])) / 3
    r = r[r > 0]
    return float(1.0 + (r * np.log2(r)).sum() / 8.0)
