"""Fusion artefacts (Nabf) and the multi-scale SSIM of the RFN-Nest evaluation code.

Both metrics are reported throughout the infrared-visible fusion literature
from the MATLAB files that ship with RFN-Nest (Li, Wu and Kittler, Information
Fusion 2021): ``analysis_nabf.m`` (B. K. Shreyamsha Kumar's modified fusion
artefact measure) and ``analysis_ms_ssim.m``, which is not Wang's MS-SSIM but
Ma, Zeng and Wang's multi-exposure fusion structural similarity (MEF-SSIM)
over three scales. The functions here compute what those files compute, with
the same inputs the RFN-Nest script gives them:

* Nabf receives ``im2double`` images (0-1), which matters: its edge-strength
  threshold ``Td = 2`` is then never reached and every pixel weighs 0.001;
* MS-SSIM receives the 0-255 values.

Everything is vectorised: the per-pixel block loops of the MATLAB code become
box and Gaussian filters of image products.
"""

from __future__ import annotations

import numpy as np

from ._filters import filter2_valid
from ._kernels import box_sums_valid, mef_ssim_contrast, mef_ssim_sum, nabf_edges
from ._registry import register_metric

__all__ = ["nabf", "ms_ssim"]

_EPS = np.finfo(np.float64).eps

# ------------------------------------------------------------------- Nabf

_TD = 2.0  # edge-strength threshold for the Lg-power weights
_WT_MIN = 0.001
_LG = 1.5
_NRG, _KG, _SIGMAG = 0.9999, 19.0, 0.5
_NRA, _KA, _SIGMAA = 0.9995, 22.0, 0.5


def _angle(gv: np.ndarray, gh: np.ndarray) -> np.ndarray:
    """Kumar's orientation atan(gv / gh): +-pi/2 where gh == 0 (MATLAB's x / 0 = +-Inf), 0 where both are."""
    with np.errstate(divide="ignore", invalid="ignore"):
        angle = np.arctan(gv / gh)
    angle[(gv == 0) & (gh == 0)] = 0.0
    return angle


def _edge_preservation(g_src: np.ndarray, a_src: np.ndarray, g_f: np.ndarray, a_f: np.ndarray) -> np.ndarray:
    """Petrovic's edge preservation Q^{XF} as Kumar computes it (square root of the product)."""
    # gF / gA if gA > gF else gA / gF, and 0 where either is 0.
    hi = np.maximum(g_src, g_f)
    g_rel = np.divide(np.minimum(g_src, g_f), hi, out=np.zeros_like(hi), where=hi > 0)
    a_rel = np.abs(np.abs(a_src - a_f) - np.pi / 2) * 2 / np.pi
    q_g = _NRG / (1 + np.exp(-_KG * (g_rel - _SIGMAG)))
    q_a = _NRA / (1 + np.exp(-_KA * (a_rel - _SIGMAA)))
    return np.sqrt(q_g * q_a)


@register_metric(
    "Nabf",
    higher_is_better=False,
    reference="B. K. Shreyamsha Kumar, Multifocus and multispectral image fusion based on pixel significance "
    "using discrete cosine harmonic wavelet transform, Signal, Image and Video Processing 7:1125-1143, 2013, "
    "doi:10.1007/s11760-012-0361-x (modified N_abf of V. Petrovic and C. Xydeas, 2005)",
    colour="per_channel",
    vifb_name=None,
)
def nabf(fused: np.ndarray, ir: np.ndarray, vi: np.ndarray, *, data_range: float = 255.0) -> float:
    """Kumar's modified fusion-artefact measure N_abf (lower is better).

    The share of the sources' (weighted) edge information that is *added* by
    the fusion: at pixels where the fused edge strength exceeds both sources',
    ``(1 - Q^{AF}) w_A + (1 - Q^{BF}) w_B`` is summed and divided by the total
    weight ``sum(w_A + w_B)``. Edge strength and orientation come from a Sobel
    operator scaled by 1/8 with mirror extension; ``Q^{XF}`` is the square root
    of Petrovic's strength and orientation preservation sigmoids.

    As in RFN-Nest's evaluation (``analysis_nabf`` called on ``im2double``
    images), the images are first divided by ``data_range`` so they lie in
    [0, 1]; then no pixel reaches the threshold ``Td = 2`` and every weight is
    ``0.001``.

    Args:
        fused, ir, vi: 2-D arrays of one channel, same shape, on the scale
            0..``data_range``.
        data_range: the value of white (255 for 8-bit data).

    Returns:
        Nabf in [0, 1]; 0 for a fused image equal to a source. Constant
        regions need no special case: their Sobel responses are exactly 0
        here and in the original (weights are powers of two), so a constant
        fused image scores 0, and the denominator is at least 0.002 per pixel.
        (A neighbourhood that is not constant but sums to 0 can leave a
        ~1e-17 residue on the 0-1 scale; the sums follow the original's
        order, so such pixels count as edges as they do there.)

    Reference: B. K. Shreyamsha Kumar, SIViP 7 (2013),
    doi:10.1007/s11760-012-0361-x.
    """
    # Divide (as im2double does), not multiply by 1/range: the artefact mask
    # compares edge strengths that are equal in exact arithmetic wherever the
    # fused image is a source plus an offset, so the rounding must match.
    scale = float(data_range)
    images = np.stack([np.asarray(a, dtype=np.float64) for a in (ir, vi, fused)]) / scale
    # Kumar's "periodic extension" mirrors without repeating the edge pixel.
    padded = np.pad(images, [(0, 0), (1, 1), (1, 1)], mode="reflect")
    weight, count, picked = nabf_edges(padded, _TD, _LG, _WT_MIN)
    # Only pixels where the fused edge is stronger than both sources' add to the
    # loss: the orientations and preservation sigmoids are computed there alone.
    gv_a, gh_a, gv_b, gh_b, gv_f, gh_f, g_a, g_b, g_f, w_a, w_b = picked[:, :count]
    ang_f = _angle(gv_f, gh_f)
    q_af = _edge_preservation(g_a, _angle(gv_a, gh_a), g_f, ang_f)
    q_bf = _edge_preservation(g_b, _angle(gv_b, gh_b), g_f, ang_f)
    loss = float(((1 - q_af) * w_a + (1 - q_bf) * w_b).sum())
    return loss / weight


# ---------------------------------------------------------------- MS-SSIM

_MEF_K = 0.03
_MEF_WINDOW = 11
_MEF_SIGMA = 1.5
_MEF_WEIGHTS = np.array([0.0448, 0.2856, 0.3001])
_MEF_WEIGHTS = _MEF_WEIGHTS / _MEF_WEIGHTS.sum()
_MEF_P_MAX = 10.0
_MEF_ED_FLOOR = 0.001
_MEF_STRIP = 64  # output rows per strip


def _downsample(x: np.ndarray) -> np.ndarray:
    """``imfilter(x, ones(2) / 4, 'symmetric', 'same')`` sampled at odd (1-based) rows and columns.

    That is the mean of each 2 x 2 block, a last odd row or column being
    averaged with its own mirror copy.
    """
    h, w = x.shape[-2:]
    if h % 2:
        x = np.concatenate([x, x[..., -1:, :]], axis=-2)
    if w % 2:
        x = np.concatenate([x, x[..., :, -1:]], axis=-1)
    return (x[..., 0::2, 0::2] + x[..., 1::2, 0::2] + x[..., 0::2, 1::2] + x[..., 1::2, 1::2]) * 0.25


def _mef_ssim_scale(sources: np.ndarray, fused: np.ndarray, g: np.ndarray) -> float:
    """One scale of Ma et al.'s MEF-SSIM: mean of the quality map over the valid windows.

    For each 11 x 11 window the original builds a reference patch
    ``r = sum_k a_k (x_k - mean_k)`` from the sources' mean-removed patches
    (box means), with ``a_k = w_k / ed_k`` (``ed_k`` the patch contrast,
    ``w_k`` normalised weights ``(ed_k / 11)^p``, ``p = tan(pi/2 R)`` capped at
    10, R the structure consistency), rescales it to norm ``max_k ed_k``, and
    scores ``(2 cov(r, f) + C) / (var(r) + var(f) + C)`` under the Gaussian
    window. Since var and cov ignore constant offsets, they are sums of the
    sources' Gaussian-window covariances weighted by the per-window
    coefficients: nine filtered image products and five box sums replace the
    per-window loop (the per-window formula is :func:`._kernels.mef_ssim_sum`).
    The box sums are exact for the integer (and, after 2 x 2 averaging,
    dyadic) values this metric sees: every partial sum is representable.
    """
    n = _MEF_WINDOW
    rows_out = fused.shape[0] - n + 1
    total = 0.0
    # Strips keep the 30 maps of a step small, so the allocator reuses their memory
    # instead of faulting in fresh pages (measured: 48 -> 27 ms per 630 x 460 channel).
    for start in range(0, rows_out, _MEF_STRIP):
        stop = min(start + _MEF_STRIP, rows_out)
        total += _mef_ssim_quality_sum(sources[:, start : stop + n - 1], fused[start : stop + n - 1], g)
    return total / (rows_out * (fused.shape[1] - n + 1))


def _mef_ssim_quality_sum(sources: np.ndarray, fused: np.ndarray, g: np.ndarray) -> float:
    """Sum of the MEF-SSIM quality map over the valid windows of a strip."""
    x1, x2 = sources
    f = fused
    products = np.stack([x1, x2, x1 * x1, x2 * x2, x1 * x2, f, x1 * f, x2 * f, f * f])
    box = box_sums_valid(products[:5], _MEF_WINDOW)  # exact: see the docstring of _mef_ssim_scale
    gauss = filter2_valid(products, g)
    contrast = mef_ssim_contrast(box, float(_MEF_WINDOW * _MEF_WINDOW), _MEF_ED_FLOOR, _EPS)
    ed1, ed2, tan_arg = contrast[3:]
    power = np.minimum(np.tan(tan_arg), _MEF_P_MAX)
    # (ed / n) ^ p, as exp(p log(ed / n)): the same to ~1e-14, ten times faster.
    w1 = np.exp(power * np.log(ed1 / _MEF_WINDOW)) + _EPS
    w2 = np.exp(power * np.log(ed2 / _MEF_WINDOW)) + _EPS
    return mef_ssim_sum(contrast, w1, w2, gauss, (_MEF_K * 255.0) ** 2)


@register_metric(
    "MS-SSIM",
    higher_is_better=True,
    reference="K. Ma, K. Zeng and Z. Wang, Perceptual quality assessment for multi-exposure image fusion, "
    "IEEE Transactions on Image Processing 24(11):3345-3356, 2015, doi:10.1109/TIP.2015.2442920 "
    "(as RFN-Nest's analysis_ms_ssim.m)",
    colour="per_channel",
    vifb_name=None,
    min_size=_MEF_WINDOW * 2 ** (_MEF_WEIGHTS.size - 1),
)
def ms_ssim(fused: np.ndarray, ir: np.ndarray, vi: np.ndarray) -> float:
    """Multi-scale SSIM of the fusion literature (RFN-Nest's ``analysis_ms_ssim``).

    This is Ma et al.'s MEF-SSIM over three scales: at each scale, every
    11 x 11 window of the fused image is compared (SSIM without the luminance
    term, Gaussian window sigma 1.5, C = (0.03 * 255)^2) with a reference
    patch built from the two sources' mean-removed patches, weighted by their
    contrast to a power set by how consistent their structures are, and given
    the larger source contrast. Scales are 2 x 2 block averages; the result
    is prod(Q_s ^ w_s) with w = [0.0448, 0.2856, 0.3001] / sum.

    Args:
        fused, ir, vi: 2-D arrays of one channel, same shape, 0-255 scale
            (the window constant assumes 255 is white).

    Returns:
        The score (at most 1, higher is better); -inf, as the original, when
        the image is too small for three scales (min side / 4 < 11, i.e.
        below 44 pixels; :func:`~causalfuse.metrics.compute` refuses such
        images); NaN when
        a scale's mean quality is negative (the original gives a complex
        number). Where both sources are constant over a window the
        original's reference patch is a constant block, so the window
        scores C / (var_f + C) (1 if the fused image is constant too); that
        is computed exactly, not from the moments' rounding residues.

    Reference: K. Ma, K. Zeng and Z. Wang, IEEE TIP 24 (2015),
    doi:10.1109/TIP.2015.2442920.
    """
    levels = _MEF_WEIGHTS.size
    f = np.asarray(fused, dtype=np.float64)
    h, w = f.shape
    if min(h, w) / 2 ** (levels - 1) < _MEF_WINDOW:
        return float("-inf")
    # Every term is invariant to a common offset; centring on 128 keeps the
    # products small, so the moment differences lose less precision.
    sources = np.stack([np.asarray(ir, dtype=np.float64), np.asarray(vi, dtype=np.float64)]) - 128.0
    f = f - 128.0
    x = np.arange(_MEF_WINDOW, dtype=np.float64) - (_MEF_WINDOW - 1) / 2
    g = np.exp(-(x * x) / (2 * _MEF_SIGMA**2))
    g = g / g.sum()
    scores = []
    for level in range(levels):
        if level:
            sources = _downsample(sources)
            f = _downsample(f)
        scores.append(_mef_ssim_scale(sources, f, g))
    scores_arr = np.array(scores)
    with np.errstate(invalid="ignore"):
        return float(np.prod(scores_arr**_MEF_WEIGHTS))
