"""Compiled inner loops of the slow metrics (Numba, no GIL).

NumPy spends most of SSIM's, VIFF's and MS-SSIM's time in ``ndimage``'s
line buffers and in the dozens of full-size temporaries of their per-pixel
formulas. These kernels do the same arithmetic in single passes:

* :func:`separable_valid`: ``filter2(outer(g, g), x, 'valid')`` for a stack,
  optionally keeping every second row and column (VIFF's decimation), with a
  ring buffer of row-filtered lines; :func:`box_sums_valid`: MS-SSIM's box
  sums as running sums;
* :func:`ssim_sum` and :func:`mef_ssim_sum`: the per-pixel formulas of
  SSIM and MS-SSIM, summed per row and then across rows;
* :func:`viff_arguments`: VIFF's per-pixel gains, Sheikh's clipping and the
  choice of source;
* :func:`mef_ssim_contrast` and :func:`nabf_edges`: the arithmetic halves of
  MS-SSIM's window weights and of Nabf's edge maps (the transcendental
  functions stay in NumPy, whose vectorised ``exp``, ``log``, ``tan`` and
  ``arctan`` are several times faster than scalar calls);
* :func:`stretch_round`, :func:`qcb_contrast_power` and
  :func:`sobel_power_block_sums`: Qcb's and Qcv's rounding, masked contrast
  and block saliency;
* :func:`phase_smallest_power`, :func:`median_nonnegative`,
  :func:`phase_orientation_add` and :func:`phase_congruency_moments`: Qp's
  phase congruency (the noise statistic, each orientation's sums over the
  log-Gabor scales added to the totals, and the moments);
  :func:`zhao_correlation`: Qp's masked local correlations;
* :func:`window_means_octave`: local means at chosen windows summed in
  Octave's ``conv2`` order (the flat windows of Qs, Qw, Qe, Qy and Qc);
  :func:`piella_sums`, :func:`yang_sum` and :func:`cvejic_sum`: their
  per-pixel formulas, operation for operation as the original code.

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

__all__ = [
    "box_sums_valid",
    "cvejic_sum",
    "median_nonnegative",
    "mef_ssim_contrast",
    "mef_ssim_sum",
    "nabf_edges",
    "phase_congruency_moments",
    "phase_orientation_add",
    "phase_smallest_power",
    "piella_sums",
    "qcb_contrast_power",
    "separable_valid",
    "sobel_power_block_sums",
    "ssim_sum",
    "stretch_round",
    "viff_arguments",
    "window_means_octave",
    "yang_sum",
    "zhao_correlation",
]

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


@njit(inline="always", **_JIT)
def _row_pass4(row, g, out, width):
    n = g.size
    g0 = g[0]
    for j in range(width):
        out[j] = g0 * row[j]
    q = 1
    while q + 3 < n:
        ga, gb, gc, gd = g[q], g[q + 1], g[q + 2], g[q + 3]
        for j in range(width):
            out[j] += ((ga * row[j + q] + gb * row[j + q + 1]) + gc * row[j + q + 2]) + gd * row[j + q + 3]
        q += 4
    while q < n:
        gq = g[q]
        for j in range(width):
            out[j] += gq * row[j + q]
        q += 1


@njit(inline="always", **_JIT)
def _column_pass(ring, first, g, o, step, width):
    n = g.size
    t0 = ring[first % n]
    g0 = g[0]
    if step == 1:
        for j in range(width):
            o[j] = g0 * t0[j]
        for q in range(1, n):
            gq = g[q]
            tq = ring[(first + q) % n]
            for j in range(width):
                o[j] += gq * tq[j]
    else:
        for j in range(width):
            o[j] = g0 * t0[2 * j]
        for q in range(1, n):
            gq = g[q]
            tq = ring[(first + q) % n]
            for j in range(width):
                o[j] += gq * tq[2 * j]


@njit(inline="always", **_JIT)
def _column_pass4(ring, first, g, o, step, width):
    n = g.size
    t0 = ring[first % n]
    g0 = g[0]
    for j in range(width):
        o[j] = g0 * t0[j * step]
    q = 1
    while q + 3 < n:
        ga, gb, gc, gd = g[q], g[q + 1], g[q + 2], g[q + 3]
        ta, tb = ring[(first + q) % n], ring[(first + q + 1) % n]
        tc, td = ring[(first + q + 2) % n], ring[(first + q + 3) % n]
        if step == 1:
            for j in range(width):
                o[j] += ((ga * ta[j] + gb * tb[j]) + gc * tc[j]) + gd * td[j]
        else:
            for j in range(width):
                o[j] += ((ga * ta[2 * j] + gb * tb[2 * j]) + gc * tc[2 * j]) + gd * td[2 * j]
        q += 4
    while q < n:
        gq = g[q]
        tq = ring[(first + q) % n]
        for j in range(width):
            o[j] += gq * tq[j * step]
        q += 1


@njit(**_JIT)
def separable_valid(x, g, step, four_taps):
    """``filter2(outer(g, g), x[k], 'valid')[::step, ::step]`` for each image of a stack (K, H, W).

    ``step`` is 1 or 2. Needs H, W >= len(g) (the caller handles smaller
    images). ``four_taps``: add four taps per pass over a line (fewer loads
    and stores of the accumulator), which pays for long windows (VIFF's first
    scale, 17 taps) but not for short ones (11 and fewer).
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
                if four_taps:
                    _row_pass4(x[k, r], g, ring[r % n], full)
                else:
                    _row_pass(x[k, r], g, ring[r % n], full)
            done = first + n - 1
            if four_taps:
                _column_pass4(ring, first, g, out[k, i], step, cols_out)
            else:
                _column_pass(ring, first, g, out[k, i], step, cols_out)
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
    """Sheikh's VIF terms of one source (ref) against the fused image (dist) at one pixel.

    ``sigma2_sq`` is the fused image's local variance, already clipped at 0.
    Returns the arguments of the logarithms, g^2 sigma1^2 / (sv^2 + sigma_n^2)
    (VID) and sigma1^2 / sigma_n^2 (VIND), and the gain g, after the original's
    sequence of clips: flat source (sigma1^2 < 1e-10) -> g = 0, sv^2 = sigma2^2,
    sigma1^2 = 0; flat fused image -> g = 0, sv^2 = 0; g < 0 -> sv^2 = sigma2^2,
    g = 0; finally sv^2 >= 1e-10.
    """
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
def viff_arguments(mu_a, e2_a, cross_a, mu_b, e2_b, cross_b, mu_f, e2_f, sigma_n_sq):
    """One VIFF scale: the arguments of the VID and VIND logarithms (2, H', W').

    At each pixel the terms of source a are taken where its gain is strictly
    smaller than source b's, else those of b. The logarithms are left to
    NumPy (vectorised ``log10``, several times faster than scalar calls).
    """
    rows, cols = mu_f.shape
    out = np.empty((2, rows, cols))
    for i in range(rows):
        for j in range(cols):
            mu2 = mu_f[i, j]
            sigma2_sq = e2_f[i, j] - mu2 * mu2
            if sigma2_sq < 0.0:
                sigma2_sq = 0.0
            vid_a, vind_a, g_a = _vif_terms(mu_a[i, j], e2_a[i, j], cross_a[i, j], mu2, sigma2_sq, sigma_n_sq)
            vid_b, vind_b, g_b = _vif_terms(mu_b[i, j], e2_b[i, j], cross_b[i, j], mu2, sigma2_sq, sigma_n_sq)
            if g_a < g_b:
                out[0, i, j] = vid_a
                out[1, i, j] = vind_a
            else:
                out[0, i, j] = vid_b
                out[1, i, j] = vind_b
    return out


@njit(**_JIT)
def mef_ssim_contrast(box, area, floor, eps):
    """First half of Ma et al.'s MEF-SSIM window formula, from the box sums of one scale.

    ``box``: box-window sums of x1, x2, x1^2, x2^2, x1 x2 (5, H', W').
    Returns (6, H', W'): the centred sums c11, c22, c12, the contrasts
    ed1, ed2 (with the floor) and the structure consistency R mapped to
    ``pi/2 R`` (the argument of the tangent). The transcendental functions
    are left to NumPy, whose vectorised ``tan``, ``log`` and ``exp`` are
    several times faster than scalar calls.
    """
    _, rows, cols = box.shape
    out = np.empty((6, rows, cols))
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
    Where the reference patch is zero, the window scores C / (var_f + C).
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
            gx1 = gauss[0, i, j]
            gx2 = gauss[1, i, j]
            gf = gauss[5, i, j]
            var_f = gauss[8, i, j] - gf * gf
            if ref_norm > 0:
                scale = max(ed1, ed2) / ref_norm
                a1 *= scale
                a2 *= scale
                var_r = (
                    a1 * a1 * (gauss[2, i, j] - gx1 * gx1)
                    + 2.0 * a1 * a2 * (gauss[4, i, j] - gx1 * gx2)
                    + a2 * a2 * (gauss[3, i, j] - gx2 * gx2)
                )
                cov_rf = a1 * (gauss[6, i, j] - gx1 * gf) + a2 * (gauss[7, i, j] - gx2 * gf)
            else:
                # Both sources constant over the window (the box sums are exact): the
                # original's reference patch is a constant block (v_k - mu_k residues,
                # rescaled), with no variance and no covariance with f. The Gaussian
                # moments' rounding residues times a_k = 500 would give ~1e-8 instead.
                var_r = 0.0
                cov_rf = 0.0
            acc += (2.0 * cov_rf + c) / (var_r + var_f + c)
        total += acc
    return total


@njit(inline="always", **_JIT)
def _kumar_edge(p, i, j):
    """gv, gh and strength of Kumar's Sobel at output pixel (i, j) of a padded image."""
    left = (p[i, j] + 2.0 * p[i + 1, j]) + p[i + 2, j]
    right = (p[i, j + 2] + 2.0 * p[i + 1, j + 2]) + p[i + 2, j + 2]
    gv = (right - left) * 0.125
    d0 = p[i + 2, j] - p[i, j]
    d1 = p[i + 2, j + 1] - p[i, j + 1]
    d2 = p[i + 2, j + 2] - p[i, j + 2]
    gh = ((d0 + 2.0 * d1) + d2) * 0.125
    return gv, gh, math.sqrt(gh * gh + gv * gv)


@njit(**_JIT)
def nabf_edges(padded, td, lg, wt_min):
    """Kumar's Sobel edges of three mirror-padded images (3, H + 2, W + 2): IR, VI, fused.

    Returns the total weight ``sum(w_A + w_B)`` (``w = g^lg`` where ``g >= td``,
    else ``wt_min``), the number ``k`` of artefact pixels (fused edge stronger
    than both sources'), and their values (11, >= k): gv and gh of the three
    images, the three strengths and the two source weights.

    Kumar's ``sobel_fn`` is the correlation with [-1 0 1; -2 0 2; -1 0 1] / 8
    (gv) and its transpose (gh). The original adds the nine products in
    MATLAB's ``sum(sum(.))`` order (column sums, then across); since the
    weights are powers of two, that equals the grouping below bit for bit, so
    edge strengths that are equal in exact arithmetic (at the mirrored
    borders, say) compare equal as in the original.
    """
    _, hp, wp = padded.shape
    h = hp - 2
    w = wp - 2
    picked = np.empty((11, h * w))
    count = 0
    weight = 0.0
    pa, pb, pf = padded[0], padded[1], padded[2]
    for i in range(h):
        row_weight = 0.0
        for j in range(w):
            gv_a, gh_a, g_a = _kumar_edge(pa, i, j)
            gv_b, gh_b, g_b = _kumar_edge(pb, i, j)
            gv_f, gh_f, g_f = _kumar_edge(pf, i, j)
            w_a = g_a**lg if g_a >= td else wt_min
            w_b = g_b**lg if g_b >= td else wt_min
            row_weight += w_a + w_b
            if g_f > g_a and g_f > g_b:
                picked[0, count] = gv_a
                picked[1, count] = gh_a
                picked[2, count] = gv_b
                picked[3, count] = gh_b
                picked[4, count] = gv_f
                picked[5, count] = gh_f
                picked[6, count] = g_a
                picked[7, count] = g_b
                picked[8, count] = g_f
                picked[9, count] = w_a
                picked[10, count] = w_b
                count += 1
        weight += row_weight
    return weight, count, picked


@njit(**_JIT)
def stretch_round(x, lo, hi):
    """floor(((x - lo) / (hi - lo)) * 255 + 0.5): Z. Liu's ``normalize1`` with MATLAB's round, for x >= lo."""
    out = np.empty(x.shape)  # C order: its ravel() is a view
    flat_in = x.ravel()
    flat_out = out.ravel()
    span = hi - lo
    for k in range(flat_in.size):
        flat_out[k] = np.floor(((flat_in[k] - lo) / span) * 255.0 + 0.5)
    return out


@njit(**_JIT)
def qcb_contrast_power(g1, g2, k, h, z):
    """Chen-Blum's masked contrast: C = |g1 / g2 - 1|, then k C^3 / (h C^2 + z), elementwise."""
    out = np.empty(g1.shape)  # C order: its ravel() is a view
    a = g1.ravel()
    b = g2.ravel()
    flat = out.ravel()
    for i in range(a.size):
        c = abs(a[i] / b[i] - 1.0)
        squared = c * c
        flat[i] = (k * (squared * c)) / (h * squared + z)
    return out


@njit(**_JIT)
def box_sums_valid(x, n):
    """Sums over every n x n window inside each image of a stack (K, H, W), by running sums.

    Adding the entering value and subtracting the leaving one is exact only
    when every partial sum is representable: integers, or values on a
    coarse dyadic grid (MS-SSIM's 8-bit levels and their 2 x 2 averages).
    """
    depth, h, w = x.shape
    rows_out = h - n + 1
    cols_out = w - n + 1
    rows = np.empty((h, cols_out))
    out = np.empty((depth, rows_out, cols_out))
    for k in range(depth):
        for i in range(h):
            line = x[k, i]
            s = 0.0
            for j in range(n):
                s += line[j]
            r = rows[i]
            r[0] = s
            for j in range(1, cols_out):
                s += line[j + n - 1] - line[j - 1]
                r[j] = s
        o = out[k]
        o0 = o[0]
        for j in range(cols_out):
            o0[j] = rows[0, j]
        for i in range(1, n):
            ri = rows[i]
            for j in range(cols_out):
                o0[j] += ri[j]
        for i in range(1, rows_out):
            prev = o[i - 1]
            cur = o[i]
            enter = rows[i + n - 1]
            leave = rows[i - 1]
            for j in range(cols_out):
                cur[j] = prev[j] + (enter[j] - leave[j])
    return out


@njit(**_JIT)
def sobel_power_block_sums(padded, size):
    """Chen-Varshney saliency: per distinct size x size block, the sum of |grad|^5.

    ``padded``: a stack (K, H + 2, W + 2) zero-padded by one pixel; |grad| is
    the magnitude of ``filter2`` with the Sobel pair (zero padding, 'same'):
    [1 2 1] smoothing across the derivative, as (2 b + a) + c, then the
    difference. Blocks past the image edge are zero-padded (``blkproc``).
    """
    depth, hp, wp = padded.shape
    h = hp - 2
    w = wp - 2
    bm = (h + size - 1) // size
    bn = (w + size - 1) // size
    out = np.zeros((depth, bm, bn))
    for k in range(depth):
        p = padded[k]
        for i in range(h):
            bi = i // size
            for j in range(w):
                left = (2.0 * p[i + 1, j] + p[i, j]) + p[i + 2, j]
                right = (2.0 * p[i + 1, j + 2] + p[i, j + 2]) + p[i + 2, j + 2]
                top = (2.0 * p[i, j + 1] + p[i, j]) + p[i, j + 2]
                bottom = (2.0 * p[i + 2, j + 1] + p[i + 2, j]) + p[i + 2, j + 2]
                gx = right - left
                gy = bottom - top
                mag = math.sqrt(gx * gx + gy * gy)
                sq = mag * mag
                out[k, bi, j // size] += sq * sq * mag
    return out


@njit(**_JIT)
def window_means_octave(images, win, rows, starts, lengths):
    """Local means at runs of windows, summed term by term as Octave's ``filter2(win, x, 'valid')``.

    Octave's ``conv2`` sums each window in this order: kernel columns from
    last to first, within each the rows from last to first, one
    ``c = c + w * x`` (a BLAS ``axpy``) per term, no fused multiply-add
    (Numba fuses none unless asked). On flat windows the metrics' tests act
    on the rounding residue of these sums, so those windows are summed here
    the same way. ``images`` (K, H, W)
    holds every image whose local mean is wanted, products such as the
    original's ``img1.*img2`` already formed (a product of two doubles is
    the same number however it is computed). The windows come as runs along
    a row (``rows[i]``, columns ``starts[i]`` to ``starts[i] + lengths[i] - 1``).

    Returns (K, total length), windows in row-major order.
    """
    m, n = win.shape
    k_images = images.shape[0]
    total = 0
    for i in range(rows.size):
        total += lengths[i]
    out = np.zeros((k_images, total))
    offset = 0
    for i in range(rows.size):
        r = rows[i]
        c0 = starts[i]
        length = lengths[i]
        for s in range(k_images):
            acc = out[s, offset : offset + length]
            for q in range(n - 1, -1, -1):
                for p in range(m - 1, -1, -1):
                    w = win[p, q]
                    x = images[s, r + p, c0 + q : c0 + q + length]
                    for k in range(length):
                        acc[k] = acc[k] + w * x[k]
        offset += length
    return out


@njit(inline="always", **_JIT)
def _ssim_at(u1, e11, u2, e22, e12, c1, c2):
    """One value of the SSIM map, in the operation order of Wang's ``ssim_index``."""
    u1_sq = u1 * u1
    u2_sq = u2 * u2
    u1_u2 = u1 * u2
    num = (2 * u1_u2 + c1) * (2 * (e12 - u1_u2) + c2)
    den = (u1_sq + u2_sq + c1) * ((e11 - u1_sq) + (e22 - u2_sq) + c2)
    return num / den


@njit(**_JIT)
def piella_sums(ua, eaa, ub, ebb, uf, eff, eaf, ebf, c1, c2):
    """Piella and Heijmans' per-window terms (``metricPeilla``), summed.

    lambda = s_a^2 / (s_a^2 + s_b^2), with 0.5 added to both variances where
    their sum is exactly 0; q = lambda SSIM(f, a) + (1 - lambda) SSIM(f, b);
    c = max(s_a^2, s_b^2) (after the 0.5). Returns (sum q, sum c q, sum c).
    """
    rows, cols = uf.shape
    total_q = 0.0
    total_cq = 0.0
    total_c = 0.0
    for i in range(rows):
        acc_q = 0.0
        acc_cq = 0.0
        acc_c = 0.0
        for j in range(cols):
            sa = eaa[i, j] - ua[i, j] * ua[i, j]
            sb = ebb[i, j] - ub[i, j] * ub[i, j]
            if sa + sb == 0:
                sa = sa + 0.5
                sb = sb + 0.5
            lam = sa / (sa + sb)
            ssim_a = _ssim_at(uf[i, j], eff[i, j], ua[i, j], eaa[i, j], eaf[i, j], c1, c2)
            ssim_b = _ssim_at(uf[i, j], eff[i, j], ub[i, j], ebb[i, j], ebf[i, j], c1, c2)
            q = lam * ssim_a + (1 - lam) * ssim_b
            c = max(sa, sb)
            acc_q += q
            acc_cq += c * q
            acc_c += c
        total_q += acc_q
        total_cq += acc_cq
        total_c += acc_c
    return total_q, total_cq, total_c


@njit(**_JIT)
def yang_sum(ua, eaa, ub, ebb, uf, eff, eab, eaf, ebf, c):
    """Sum of Yang et al.'s per-window terms (``metricYang``) with C1 = C2 = ``c``.

    Where SSIM(a, b) >= 0.75: lambda SSIM(a, f) + (1 - lambda) SSIM(b, f),
    lambda = s_a^2 / (s_a^2 + s_b^2); elsewhere max(SSIM(a, f), SSIM(b, f)),
    a NaN ignored as MATLAB's ``max`` does. As the original's
    ``Q1 .* bin + Q2 .* ~bin``, a NaN lambda (both sources flat at 0) gives
    NaN on either branch.
    """
    rows, cols = uf.shape
    total = 0.0
    for i in range(rows):
        acc = 0.0
        for j in range(cols):
            ssim_ab = _ssim_at(ua[i, j], eaa[i, j], ub[i, j], ebb[i, j], eab[i, j], c, c)
            ssim_af = _ssim_at(ua[i, j], eaa[i, j], uf[i, j], eff[i, j], eaf[i, j], c, c)
            ssim_bf = _ssim_at(ub[i, j], ebb[i, j], uf[i, j], eff[i, j], ebf[i, j], c, c)
            sa = eaa[i, j] - ua[i, j] * ua[i, j]
            sb = ebb[i, j] - ub[i, j] * ub[i, j]
            lam = sa / (sa + sb)
            similar = 1.0 if ssim_ab >= 0.75 else 0.0
            if math.isnan(ssim_af):
                larger = ssim_bf
            elif math.isnan(ssim_bf):
                larger = ssim_af
            else:
                larger = max(ssim_af, ssim_bf)
            acc += (lam * ssim_af + (1 - lam) * ssim_bf) * similar + larger * (1.0 - similar)
        total += acc
    return total


@njit(**_JIT)
def cvejic_sum(ua, eaa, ub, ebb, uf, eff, eaf, ebf, c):
    """Sum of Cvejic et al.'s per-window similarity (``metricCvejic``, metric 2) with C1 = C2 = ``c``.

    w = s_af / (s_af + s_bf) (local covariances with f); sim = w SSIM(a, f)
    + (1 - w) SSIM(b, f), then sim = 0 where w < 0 and 1 where w > 1. A NaN
    w (0 / 0) passes both tests, as in the original, and makes the sum NaN.
    """
    rows, cols = uf.shape
    total = 0.0
    for i in range(rows):
        acc = 0.0
        for j in range(cols):
            ssim_af = _ssim_at(ua[i, j], eaa[i, j], uf[i, j], eff[i, j], eaf[i, j], c, c)
            ssim_bf = _ssim_at(ub[i, j], ebb[i, j], uf[i, j], eff[i, j], ebf[i, j], c, c)
            saf = eaf[i, j] - ua[i, j] * uf[i, j]
            sbf = ebf[i, j] - ub[i, j] * uf[i, j]
            w = saf / (saf + sbf)
            sim = w * ssim_af + (1 - w) * ssim_bf
            if w < 0:
                sim = 0.0
            if w > 1:
                sim = 1.0
            acc += sim
        total += acc
    return total


@njit(**_JIT)
def phase_smallest_power(eo):
    """The squared amplitude |eo[0]|^2 (H, W) of the smallest scale's responses, in float64 (``eo`` may be complex64)."""
    _, rows, cols = eo.shape
    out = np.empty((rows, cols))
    for i in range(rows):
        for j in range(cols):
            e = np.float64(eo[0, i, j].real)
            o = np.float64(eo[0, i, j].imag)
            a = math.sqrt(e * e + o * o)
            out[i, j] = a * a
    return out


@njit(**_JIT)
def _radix_select(bits, rank):
    """The ``rank``-th smallest (from 0) of ``bits``, the uint64 patterns of non-negative float64 values.

    Their order is that of the values: 16 bits at a time, count the keys,
    keep those in the bucket that holds the rank.
    """
    counts = np.empty(1 << 16, np.int64)
    cand = bits
    for shift in (48, 32, 16, 0):
        counts[:] = 0
        for v in cand:
            counts[(v >> shift) & 0xFFFF] += 1
        below = 0
        key = 0
        while below + counts[key] <= rank:
            below += counts[key]
            key += 1
        rank -= below
        if counts[key] == cand.size:
            continue
        kept = np.empty(counts[key], np.uint64)
        k = 0
        for v in cand:
            if (v >> shift) & 0xFFFF == key:
                kept[k] = v
                k += 1
        cand = kept
        if cand.size == 1:
            break
    return cand[0]


@njit(**_JIT)
def median_nonnegative(x):
    """``np.median`` of a flat, contiguous float64 array of non-negative values without NaN (twice as fast)."""
    n = x.size
    bits = x.view(np.uint64)
    lo = _radix_select(bits, (n - 1) // 2)
    pair = np.empty(2, np.uint64)
    pair[0] = lo
    pair[1] = lo
    if n % 2 == 0:
        # The next order statistic: lo again if it is repeated that far, else the smallest value above it.
        at_most = 0
        above = np.uint64(0xFFFFFFFFFFFFFFFF)
        for v in bits:
            if v <= lo:
                at_most += 1
            elif v < above:
                above = v
        if at_most <= n // 2:
            pair[1] = above
    values = pair.view(np.float64)
    if n % 2:
        return values[0]
    return (values[0] + values[1]) / 2


@njit(**_JIT)
def phase_orientation_add(eo, threshold, cut_off, g, cos_a, sin_a, totals):
    """Adds one orientation of ``myphasecong3`` to ``totals`` (5, H, W), in place.

    ``eo`` (nscale, H, W), complex (complex64 too; the arithmetic is
    float64): the even + i odd filter responses. ``totals`` holds the
    running totalEnergy, totalSumAn, covx2, covy2 and covxy. Per pixel: the
    amplitudes |eo| (their sum sumAn and maximum maxAn over the scales),
    Kovesi's PC_2 energy sum_s E_s mE + O_s mO - |E_s mO - O_s mE| ((mE, mO)
    the summed response over its length + 1e-4) less the noise
    ``threshold``, floored at 0, weighted by the frequency spread
    1 / (1 + exp((cut_off - width) g)) with width = sumAn / (maxAn + 1e-4) /
    nscale; and this orientation's PC (weighted energy / sumAn, NaN where
    sumAn is 0, as the original) projected on (cos_a, sin_a). One row at a
    time, so that the loops over a row vectorise.
    """
    nscale, rows, cols = eo.shape
    se = np.empty(cols)
    so = np.empty(cols)
    sa = np.empty(cols)
    ma = np.empty(cols)
    en = np.empty(cols)
    for i in range(rows):
        for s in range(nscale):
            row = eo[s, i]
            if s == 0:
                for j in range(cols):
                    e = np.float64(row[j].real)
                    o = np.float64(row[j].imag)
                    a = math.sqrt(e * e + o * o)
                    se[j] = e
                    so[j] = o
                    sa[j] = a
                    ma[j] = a
            else:
                for j in range(cols):
                    e = np.float64(row[j].real)
                    o = np.float64(row[j].imag)
                    a = math.sqrt(e * e + o * o)
                    se[j] += e
                    so[j] += o
                    sa[j] += a
                    ma[j] = a if a > ma[j] else ma[j]
        for j in range(cols):
            x = math.sqrt(se[j] * se[j] + so[j] * so[j]) + 1e-4
            se[j] = se[j] / x
            so[j] = so[j] / x
            en[j] = 0.0
        for s in range(nscale):
            row = eo[s, i]
            for j in range(cols):
                e = np.float64(row[j].real)
                o = np.float64(row[j].imag)
                me = se[j]
                mo = so[j]
                en[j] += e * me + o * mo - abs(e * mo - o * me)
        for j in range(cols):
            weighted = 0.0
            excess = en[j] - threshold
            if excess > 0.0:  # else the weight does not matter: skip its exp
                width = sa[j] / (ma[j] + 1e-4) / nscale
                weighted = (1.0 / (1.0 + math.exp((cut_off - width) * g))) * excess
            totals[0, i, j] += weighted
            totals[1, i, j] += sa[j]
            pc = weighted / sa[j]
            covx = pc * cos_a
            covy = pc * sin_a
            totals[2, i, j] += covx * covx
            totals[3, i, j] += covy * covy
            totals[4, i, j] += covx * covy


@njit(**_JIT)
def phase_congruency_moments(first, second, norient):
    """``myphasecong3``'s outputs (pc, M, m), each (H, W), from two parts of the totals (5, H, W).

    ``first`` and ``second``: the totals of :func:`phase_orientation_add`
    over two sets of orientations, added here.
    """
    _, rows, cols = first.shape
    pc = np.empty((rows, cols))
    big = np.empty((rows, cols))
    small = np.empty((rows, cols))
    for i in range(rows):
        for j in range(cols):
            pc[i, j] = (first[0, i, j] + second[0, i, j]) / ((first[1, i, j] + second[1, i, j]) + 1e-4)
            covx2 = (first[2, i, j] + second[2, i, j]) / (norient / 2)
            covy2 = (first[3, i, j] + second[3, i, j]) / (norient / 2)
            covxy = (first[4, i, j] + second[4, i, j]) / norient
            d = covx2 - covy2
            denom = math.sqrt(covxy * covxy + d * d) + 1e-4
            big[i, j] = (covy2 + covx2 + denom) / 2
            small[i, j] = (covy2 + covx2 - denom) / 2
    return pc, big, small


@njit(inline="always", **_JIT)
def _zhao_masked_lines(x, masks, k, f, r, line, h):
    """Row ``r`` of x masked by ``masks[k]``, of its square and of its product with f, into lines 2 + 3k.. of ``line``."""
    for j in range(f.shape[1]):
        xm = x[r, j] * (1.0 if masks[k, r, j] else 0.0)  # mask .* x
        line[2 + 3 * k, j + h] = xm
        line[3 + 3 * k, j + h] = xm * xm
        line[4 + 3 * k, j + h] = xm * f[r, j]


@njit(**_JIT)
def zhao_correlation(a, b, best, f, masks, g, c):
    """``metricZhao``'s correlation map of the masked maps a, b, best with f, summed, and the pixel count of masks[2].

    Local means: ``filter2(outer(g, g), ., 'same')`` with zero padding (g of
    odd length; the sums of :func:`separable_valid` on the zero-padded maps)
    of f, f^2 and, for each x of a, b, best masked by its mask (3, H, W), of
    x, x^2 and x f. They are never stored whole: the row-filtered lines of
    the last len(g) rows are kept in a ring. Per pixel, for each x inside its
    mask, (cov + c) / (sqrt|var_x var_f| + c); the largest of the three (0
    outside every mask) is summed, row by row.
    """
    rows, cols = f.shape
    n = g.size
    h = n // 2
    ring = np.empty((11, n, cols))
    line = np.zeros((11, cols + 2 * h))  # one padded row of each map; the ends stay 0
    means = np.empty((11, cols))
    total = 0.0
    count = 0
    for r in range(-h, rows + h):
        slot = (r + h) % n
        if 0 <= r < rows:
            for j in range(cols):
                fv = f[r, j]
                line[0, j + h] = fv
                line[1, j + h] = fv * fv
            _zhao_masked_lines(a, masks, 0, f, r, line, h)
            _zhao_masked_lines(b, masks, 1, f, r, line, h)
            _zhao_masked_lines(best, masks, 2, f, r, line, h)
            for m in range(11):
                _row_pass(line[m], g, ring[m, slot], cols)
        else:
            ring[:, slot] = 0.0  # a row of the zero padding
        i = r - h
        if i < 0:
            continue
        for m in range(11):
            _column_pass(ring[m], i, g, means[m], 1, cols)
        acc = 0.0
        for j in range(cols):
            mu_f = means[0, j]
            var_f = means[1, j] - mu_f * mu_f
            top = 0.0
            for k in range(3):
                v = 0.0
                if masks[k, i, j]:
                    mu = means[2 + 3 * k, j]
                    var = means[3 + 3 * k, j] - mu * mu
                    cov = means[4 + 3 * k, j] - mu * mu_f
                    v = (cov + c) / (math.sqrt(abs(var * var_f)) + c)
                if k == 0 or v > top:
                    top = v
            acc += top
            if masks[2, i, j]:
                count += 1
        total += acc
    return total, count
