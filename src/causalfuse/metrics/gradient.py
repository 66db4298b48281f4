"""Gradient-based metrics: AG, EI, SF and Qabf (VIFB definitions).

Every function takes one channel on the 0-255 scale; VIFB's colour rules
(AG and EI on the fused image only, SF on the channels side by side) are
applied by :func:`causalfuse.metrics.compute`.
"""

from __future__ import annotations

import numpy as np

from ._registry import register_metric

__all__ = ["average_gradient", "edge_intensity", "spatial_frequency", "qabf"]


def _f64(x: np.ndarray) -> np.ndarray:
    return np.asarray(x, dtype=np.float64)


def _matlab_gradient(x: np.ndarray, axis: int) -> np.ndarray:
    """MATLAB ``gradient`` along one axis: central differences, one-sided at the ends, 0 for length 1."""
    if x.shape[axis] < 2:
        return np.zeros_like(x)
    return np.gradient(x, axis=axis)


@register_metric(
    "AG",
    higher_is_better=True,
    reference="G. Cui, H. Feng, Z. Xu, Q. Li, Y. Chen, Detail preserved fusion of visible and infrared images using "
    "regional saliency extraction and multi-scale image decomposition, Optics Communications 341:199-209, 2015, "
    "doi:10.1016/j.optcom.2014.12.032",
    colour="fused_only",
    vifb_name="Avg_gradient",
    min_size=2,
)
def average_gradient(fused: np.ndarray, ir: np.ndarray | None = None, vi: np.ndarray | None = None) -> float:
    """Average gradient: sum sqrt((gx^2 + gy^2) / 2) / ((r - 1)(c - 1)), MATLAB ``gradient``.

    The divisor is VIFB's (r - 1)(c - 1) although the sum runs over all r c
    pixels; a single row or column gives a zero divisor (inf or NaN, as MATLAB;
    :func:`~causalfuse.metrics.compute` refuses such images).
    """
    f = _f64(fused)
    r, c = f.shape
    gx = _matlab_gradient(f, 1)
    gy = _matlab_gradient(f, 0)
    total = np.sqrt((gx * gx + gy * gy) / 2.0).sum()
    with np.errstate(divide="ignore", invalid="ignore"):
        return float(np.float64(total) / np.float64((r - 1) * (c - 1)))


def _sobel_replicate(f: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """imfilter(f, fspecial('sobel'), 'replicate') and the same with the transposed kernel."""
    p = np.pad(f, 1, mode="edge")
    rows, cols = f.shape
    # fspecial('sobel') = [1 2 1; 0 0 0; -1 -2 -1]; imfilter correlates.
    smooth_h = p[:, :-2] + 2.0 * p[:, 1:-1] + p[:, 2:]  # (rows + 2, cols)
    gx = smooth_h[:rows] - smooth_h[2:]
    smooth_v = p[:-2] + 2.0 * p[1:-1] + p[2:]  # (rows, cols + 2)
    gy = smooth_v[:, :cols] - smooth_v[:, 2:]
    return gx, gy


@register_metric(
    "EI",
    higher_is_better=True,
    reference="B. Rajalingam, R. Priya, Hybrid multimodality medical image fusion technique for feature enhancement "
    "in medical diagnosis, International Journal of Engineering Science Invention, 2018 (no DOI)",
    colour="fused_only",
    vifb_name="Edge_intensity",
)
def edge_intensity(fused: np.ndarray, ir: np.ndarray | None = None, vi: np.ndarray | None = None) -> float:
    """Edge intensity: mean Sobel magnitude sqrt(gx^2 + gy^2) with replicated borders."""
    gx, gy = _sobel_replicate(_f64(fused))
    return float(np.sqrt(gx * gx + gy * gy).mean())


@register_metric(
    "SF",
    higher_is_better=True,
    reference="A. M. Eskicioglu, P. S. Fisher, Image quality measures and their performance, IEEE Transactions on "
    "Communications 43(12):2959-2965, 1995, doi:10.1109/26.477498",
    colour="side_by_side",
    vifb_name="Spatial_frequency",
)
def spatial_frequency(fused: np.ndarray, ir: np.ndarray | None = None, vi: np.ndarray | None = None) -> float:
    """Spatial frequency sqrt(RF + CF), RF and CF the summed squared row / column differences over m n."""
    f = _f64(fused)
    m, n = f.shape
    dr = np.diff(f, axis=1)
    dc = np.diff(f, axis=0)
    return float(np.sqrt((np.einsum("ij,ij->", dr, dr) + np.einsum("ij,ij->", dc, dc)) / (m * n)))


# Sobel kernels of the original code, hx = [-1 0 1; -2 0 2; -1 0 1] and
# hy = [1 2 1; 0 0 0; -1 -2 -1], applied by true convolution (conv2 'same',
# zero padding); computed below as separable sums and differences.
_TG, _KG, _DG = 0.9994, -15.0, 0.5
_TA, _KA, _DA = 0.9879, -22.0, 0.8


def _sobel_conv_same(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """conv2(x, hx, 'same') and conv2(x, hy, 'same') for a stack (..., H, W), zero padding.

    Keeps the dtype of ``x`` (integer input gives exact integer responses).
    """
    pad = [(0, 0)] * (x.ndim - 2) + [(1, 1), (1, 1)]
    p = np.pad(x, pad)
    v = p[..., :-2, :] + p[..., 2:, :]  # vertical [1 2 1] smoothing, (.., H, W + 2)
    v += p[..., 1:-1, :]
    v += p[..., 1:-1, :]
    sx = v[..., :, :-2] - v[..., :, 2:]  # convolution flips hx: left column minus right column
    h = p[..., :, :-2] + p[..., :, 2:]  # horizontal [1 2 1] smoothing, (.., H + 2, W)
    h += p[..., :, 1:-1]
    h += p[..., :, 1:-1]
    sy = h[..., 2:, :] - h[..., :-2, :]  # convolution flips hy: lower row minus upper row
    return sx, sy


def _strength_orientation(stack: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Edge strength sqrt(sx^2 + sy^2) and orientation atan(sy / sx) (pi/2 where sx == 0).

    8-bit stacks take an exact fast path: int16 Sobel responses (|s| <= 1020),
    then float32, in which sx^2 + sy^2 <= 2,080,800 is exact and whose
    correctly rounded square roots of distinct integers stay distinct (their
    gap, at least 3.4e-4, exceeds float32's spacing, 1.2e-4, there), so the
    original's ``gA == gF`` tests see the same pixels as in float64. The
    remaining float32 rounding moves Qabf by about 1e-7 relative.
    """
    if _is_8bit(stack):
        sx, sy = (r.astype(np.float32) for r in _sobel_conv_same(stack.astype(np.int16)))
    else:
        sx, sy = _sobel_conv_same(np.asarray(stack, dtype=np.float64))
    g = np.sqrt(sx * sx + sy * sy)
    zero = sx == 0
    sx[zero] = 1
    a = np.arctan(sy / sx)
    a[zero] = np.pi / 2
    return g, a


def _is_8bit(x: np.ndarray) -> bool:
    """All values are integers in 0..255 (8-bit data, as the original reads it)."""
    if x.dtype == np.uint8:
        return True
    return bool(x.min() >= 0 and x.max() <= 255 and np.array_equal(x, np.floor(x)))


def _edge_preservation(gs: np.ndarray, as_: np.ndarray, gf: np.ndarray, af: np.ndarray) -> np.ndarray:
    """Q^{SF} per pixel, the strength and orientation preservation of the sources (stacked) in F."""
    equal = gs == gf
    lo = np.minimum(gs, gf)
    hi = np.maximum(gs, gf)
    hi[equal] = 1.0
    rel = np.divide(lo, hi, out=lo)
    # The original's quirk: where g_S == g_F the "relative strength" is g_F itself (not 1),
    # on its image scaled by 255 (im2double of a double is a no-op there, then * 255).
    rel[equal] = 255.0 * np.broadcast_to(gf, gs.shape)[equal]
    qg = np.exp(_KG * (rel - _DG), out=rel)
    qg += 1.0
    np.divide(_TG, qg, out=qg)
    ang = np.abs(as_ - af)
    qa = np.exp(ang * (-_KA / (np.pi / 2)) + _KA * (1.0 - _DA), out=ang)  # exp(ka (1 - |da| / (pi/2) - Da))
    # (Python-float constants keep float32 arrays in float32.)
    qa += 1.0
    np.divide(_TA, qa, out=qa)
    qg *= qa
    return qg


@register_metric(
    "Qabf",
    higher_is_better=True,
    reference="C. S. Xydeas, V. Petrovic, Objective image fusion performance measure, Electronics Letters "
    "36(4):308-309, 2000, doi:10.1049/el:20000267",
    vifb_name="Qabf",
)
def qabf(fused: np.ndarray, ir: np.ndarray, vi: np.ndarray) -> float:
    """Edge-information preservation Q^{AB/F} (Xydeas & Petrovic), as VIFB's ``metricsQabf``.

    Sobel strength g and orientation atan(gy / gx) (pi/2 where gx = 0) of each
    image; per pixel Q^{AF} = Q_g Q_a with sigmoids of the relative strength
    and of the orientation agreement; the result is the source-strength
    weighted mean sum(Q^{AF} g_A + Q^{BF} g_B) / sum(g_A + g_B) (NaN when no
    source has any edge, as the original's 0/0).

    Constant regions of 8-bit images have Sobel responses of exactly 0 here
    and in the original (integer sums), hence g = 0 and orientation pi/2; a
    fused image constant at 0 scores Q_g = 0.9994 / (1 + e^7.5) times the
    sources' weighted orientation term, and two all-zero sources give NaN.
    """
    stack = np.stack([np.asarray(x) for x in (fused, vi, ir)])
    g, a = _strength_orientation(stack)
    gs = g[1:]
    q = _edge_preservation(gs, a[1:], g[0], a[0])
    q *= gs
    num = np.sum(q, dtype=np.float64)  # pairwise sums in float64, also for the float32 fast path
    den = np.sum(gs, dtype=np.float64)
    with np.errstate(divide="ignore", invalid="ignore"):
        return float(np.float64(num) / np.float64(den))
