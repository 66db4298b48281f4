"""Compiled inner loops of the slow metrics (Numba, no GIL).

NumPy spends most of SSIM's, VIFF's and MS-SSIM's time in ``ndimage``'s
line buffers and in the dozens of full-size temporaries of their per-pixel
formulas. These kernels do the same arithmetic in single passes:

* :func:`separable_valid`: ``filter2(outer(g, g), x, 'valid')`` for a stack,
  optionally keeping every second row and column (VIFF's decimation), with a
  ring buffer of row-filtered lines;
* :func:`ssim_sum`, :func:`viff_sums`, :func:`mef_ssim_sum`: the per-pixel
  formulas of SSIM, VIFF and MS-SSIM, summed per row and then across rows.

They release the GIL, so the metrics of one triplet run in parallel in
threads. They are compiled on first use and cached on disk (``cache=True``:
next to this file, or in Numba's user cache directory when the package is
read-only). The results equal the NumPy formulas up to the order of
floating-point sums (about 1e-15 relative; the tests check them against
the reference values and against plain NumPy transcriptions).
"""

from __future__ import annotations

import math

import numpy as np
from numba import njit

__all__ = ["separable_valid", "ssim_sum", "viff_sums", "mef_ssim_contrast", "mef_ssim_sum"]

_JIT = dict(nogil=True, cache=True, error_model="numpy")


@njit(inline="always", **_JIT)
def _row_pass(row, g, out, width):
    g0 = g[0]
    for j in range(width):
        out[j] = g0 * row[j]
    for q in range(1, g.size):
        gq = g[q]
        for j in range(width):
            out[j] += gq * row[j + q]


@njit(**_JIT)
def separable_valid(x, g, step):
    """``filter2(outer(g, g), x[k], 'valid')[::step, ::step]`` for each image of a stack (K, H, W).

    ``step`` is 1 or 2. Needs H, W >= len(g) (the caller handles smaller images).
    """
    depth, h, w = x.shape
    n = g.size
    rows_out = (h - n) // step + 1
    cols_out = (w - n) // step + 1
    full = w - n + 1
    out = np.empty((depth, rows_out, cols_out))
    ring = np.empty((n, full))  # the n row-filtered lines under the current output row
    for k in range(depth):
        done = -1
        for i in range(rows_out):
            first = i * step
            for r in range(max(done + 1, first), first + n):
                _row_pass(x[k, r], g, ring[r % n], full)
            done = first + n - 1
            o = out[k, i]
            t0 = ring[first % n]
            g0 = g[0]
            if step == 1:
                for j in range(cols_out):
                    o[j] = g0 * t0[j]
                for q in range(1, n):
                    gq = g[q]
                    tq = ring[(first + q) % n]
                    for j in range(cols_out):
                        o[j] += gq * tq[j]
            else:
                for j in range(cols_out):
                    o[j] = g0 * t0[2 * j]
                for q in range(1, n):
                    gq = g[q]
                    tq = ring[(first + q) % n]
                    for j in range(cols_out):
                        o[j] += gq * tq[2 * j]
    return out


@njit(**_JIT)
def ssim_sum(ua, ea2, ub, eb2, eab, c1, c2):
    """Sum of Wang's SSIM map from local means ``ua, ub``, second moments and cross moment."""
    rows, cols = ub.shape
    total = 0.0
    for i in range(rows):
        acc = 0.0
        for j in range(cols):
            a = ua[i, j]
            b = ub[i, j]
            a_sq = a * a
            b_sq = b * b
            ab = a * b
            num = (2 * ab + c1) * (2 * (eab[i, j] - ab) + c2)
            den = (a_sq + b_sq + c1) * ((ea2[i, j] - a_sq) + (eb2[i, j] - b_sq) + c2)
            acc += num / den
        total += acc
    return total


@njit(inline="always", **_JIT)
def _vif_terms(mu1, e11, e12, mu2, sigma2_sq, sigma_n_sq):
    """Sheikh's VIF terms with his clipping, for one pixel (see visual._vid_vind_terms)."""
    sigma1_sq = e11 - mu1 * mu1
    if sigma1_sq < 0.0:
        sigma1_sq = 0.0
    sigma12 = e12 - mu1 * mu2
    g = sigma12 / (sigma1_sq + 1e-10)
    sv_sq = sigma2_sq - g * sigma12
    flat1 = sigma1_sq < 1e-10
    flat2 = sigma2_sq < 1e-10
    zero_g = flat1 or flat2 or g < 0
    if flat2:
        sv_sq = 0.0
    elif zero_g:
        sv_sq = sigma2_sq
    if sv_sq < 1e-10:
        sv_sq = 1e-10
    if zero_g:
        g = 0.0
    if flat1:
        sigma1_sq = 0.0
    return g * g * sigma1_sq / (sv_sq + sigma_n_sq), sigma1_sq / sigma_n_sq, g


@njit(**_JIT)
def viff_sums(mu_a, e2_a, cross_a, mu_b, e2_b, cross_b, mu_f, e2_f, sigma_n_sq, c):
    """One VIFF scale: sum(VID + C) and sum(VIND + C), taking source a where its gain is strictly smaller."""
    rows, cols = mu_f.shape
    vid_total = 0.0
    vind_total = 0.0
    for i in range(rows):
        vid_acc = 0.0
        vind_acc = 0.0
        for j in range(cols):
            mu2 = mu_f[i, j]
            sigma2_sq = e2_f[i, j] - mu2 * mu2
            if sigma2_sq < 0.0:
                sigma2_sq = 0.0
            vid_a, vind_a, g_a = _vif_terms(mu_a[i, j], e2_a[i, j], cross_a[i, j], mu2, sigma2_sq, sigma_n_sq)
            vid_b, vind_b, g_b = _vif_terms(mu_b[i, j], e2_b[i, j], cross_b[i, j], mu2, sigma2_sq, sigma_n_sq)
            if g_a < g_b:
                vid_acc += math.log10(1.0 + vid_a) + c
                vind_acc += math.log10(1.0 + vind_a) + c
            else:
                vid_acc += math.log10(1.0 + vid_b) + c
                vind_acc += math.log10(1.0 + vind_b) + c
        vid_total += vid_acc
        vind_total += vind_acc
    return vid_total, vind_total


@njit(**_JIT)
def mef_ssim_contrast(box, area, floor, eps):
    """First half of Ma et al.'s MEF-SSIM window formula, from the box sums of one scale.

    ``box``: box-window sums of x1, x2, x1^2, x2^2, x1 x2 (5, H', W').
    Returns (7, H', W'): the centred sums c11, c22, c12, the contrasts
    ed1, ed2 (with the floor), the structure consistency R mapped to
    ``pi/2 R`` (the argument of the tangent), and nothing in the last slot
    (room for the caller). The transcendental functions are left to NumPy,
    whose vectorised ``tan``, ``log`` and ``exp`` are several times faster
    than scalar calls.
    """
    _, rows, cols = box.shape
    out = np.empty((7, rows, cols))
    half_pi = math.pi / 2
    for i in range(rows):
        for j in range(cols):
            s1 = box[0, i, j]
            s2 = box[1, i, j]
            c11 = max(box[2, i, j] - s1 * s1 / area, 0.0)
            c22 = max(box[3, i, j] - s2 * s2 / area, 0.0)
            c12 = box[4, i, j] - s1 * s2 / area
            norm1 = math.sqrt(c11)
            norm2 = math.sqrt(c22)
            numerator = math.sqrt(max(c11 + 2.0 * c12 + c22, 0.0))
            consistency = (numerator + eps) / (norm1 + norm2 + eps)
            if consistency > 1:
                consistency = 1 - eps
            out[0, i, j] = c11
            out[1, i, j] = c22
            out[2, i, j] = c12
            out[3, i, j] = norm1 + floor
            out[4, i, j] = norm2 + floor
            out[5, i, j] = half_pi * consistency
    return out


@njit(**_JIT)
def mef_ssim_sum(contrast, w1, w2, gauss, c):
    """Sum of Ma et al.'s MEF-SSIM quality map (see artefacts._mef_ssim_scale for the derivation).

    ``contrast``: the output of :func:`mef_ssim_contrast`; ``w1``, ``w2``:
    the sources' weights ``(ed_k / n)^p + eps``; ``gauss``: Gaussian-window
    means of x1, x2, x1^2, x2^2, x1 x2, f, x1 f, x2 f, f^2 (9, H', W').
    """
    _, rows, cols = gauss.shape
    total = 0.0
    for i in range(rows):
        acc = 0.0
        for j in range(cols):
            c11 = contrast[0, i, j]
            c22 = contrast[1, i, j]
            c12 = contrast[2, i, j]
            ed1 = contrast[3, i, j]
            ed2 = contrast[4, i, j]
            wsum = w1[i, j] + w2[i, j]
            a1 = (w1[i, j] / wsum) / ed1
            a2 = (w2[i, j] / wsum) / ed2
            ref_norm = math.sqrt(max(a1 * a1 * c11 + 2.0 * a1 * a2 * c12 + a2 * a2 * c22, 0.0))
            if ref_norm > 0:
                scale = max(ed1, ed2) / ref_norm
                a1 *= scale
                a2 *= scale
            gx1 = gauss[0, i, j]
            gx2 = gauss[1, i, j]
            gf = gauss[5, i, j]
            var_r = (
                a1 * a1 * (gauss[2, i, j] - gx1 * gx1)
                + 2.0 * a1 * a2 * (gauss[4, i, j] - gx1 * gx2)
                + a2 * a2 * (gauss[3, i, j] - gx2 * gx2)
            )
            var_f = gauss[8, i, j] - gf * gf
            cov_rf = a1 * (gauss[6, i, j] - gx1 * gf) + a2 * (gauss[7, i, j] - gx2 * gf)
            acc += (2.0 * cov_rf + c) / (var_r + var_f + c)
        total += acc
    return total
