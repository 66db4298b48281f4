"""Exactly constant images and windows: what the original code gives there, metric by metric.

On a constant window a separable (or exact) filter gives a variance of 0
where the original's 2-D ``filter2`` leaves a rounding residue of about
1e-11 to 3e-10, and thresholds or divisions near zero may then decide
differently (VIFF's ``sigma^2 < 1e-10``: see ``test_metrics_families`` and
``oracle/viff_edge``). Each test below states what the original's formulas
give on constant input and where a residue could act, and pins the value:

* SSIM, MS-SSIM: the residues are dwarfed by the constants C1, C2, C (and
  MS-SSIM's reference patch of two constant sources is a constant block), so
  closed forms hold;
* Qabf, Nabf: Sobel sums of 8-bit data are exact (integers, or powers of two
  times them), so a constant region has a response of exactly 0 there too;
* Qcb, Qcv: ``normalize1`` makes any non-zero constant image NaN; an all-zero
  image stays, and Qcb's contrast of it is 0 / 0;
* CC, SCD: ``corr2`` of a constant image is 0 / 0 (the mean of 8-bit data is
  exact).
"""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import ndimage, signal

from causalfuse.metrics import perceptual
from causalfuse.metrics.artefacts import _downsample, ms_ssim, nabf
from causalfuse.metrics.gradient import qabf
from causalfuse.metrics.perceptual import qcb, qcv
from causalfuse.metrics.statistics import corr2, correlation_coefficient, scd
from causalfuse.metrics.structural import ssim

from .test_metrics_families import _qabf_loops
from .test_metrics_perceptual import _ms_ssim_plain
from .conftest import textured_triplet

LEVELS = [0.0, 37.0, 128.0, 229.0, 255.0]
C1, C2 = (0.01 * 255) ** 2, (0.03 * 255) ** 2


def _triplet(shape=(64, 72), seed=0):
    return textured_triplet(shape, seed)


def _patched(level, where):
    """The triplet with a 40 x 45 patch constant at ``level`` in the images named by ``where`` ('f', 'i', 'v')."""
    images = dict(zip("fiv", _triplet()))
    for key in where:
        images[key][10:50, 15:60] = level
    return images["f"], images["i"], images["v"]


def _const(level, shape=(64, 72)):
    return np.full(shape, float(level))


# ----------------------------------------------------------------------- SSIM


@pytest.mark.parametrize("f, ir, vi", [(0, 0, 0), (128, 128, 128), (255, 37, 200), (229, 0, 255)])
def test_ssim_of_constant_images_is_its_luminance_term(f, ir, vi):
    """Every window constant: the sigma terms are residues (~1e-11) beside C2, so each map value is
    (2ab + C1) / (a^2 + b^2 + C1)."""
    expected = sum((2 * s * f + C1) / (s * s + f * f + C1) for s in (ir, vi))
    assert ssim(_const(f), _const(ir), _const(vi)) == pytest.approx(expected, rel=1e-12)


@pytest.mark.parametrize("where", ["f", "i", "iv", "fiv"])
def test_ssim_on_constant_patches_equals_direct_2d_filtering(where):
    """No threshold in SSIM: the original's 2-D filtering, transcribed, gives the same to 1e-12 on constant patches."""
    x = np.arange(11) - 5.0
    w = np.exp(-(x[:, None] ** 2 + x[None, :] ** 2) / (2 * 1.5**2))
    w /= w.sum()

    def one(a, b):
        ua, ub = (signal.correlate2d(z, w, "valid") for z in (a, b))
        sa = signal.correlate2d(a * a, w, "valid") - ua**2
        sb = signal.correlate2d(b * b, w, "valid") - ub**2
        sab = signal.correlate2d(a * b, w, "valid") - ua * ub
        return (((2 * ua * ub + C1) * (2 * sab + C2)) / ((ua**2 + ub**2 + C1) * (sa + sb + C2))).mean()

    for level in (0.0, 229.0, 255.0):
        f, ir, vi = _patched(level, where)
        assert ssim(f, ir, vi) == pytest.approx(one(vi, f) + one(ir, f), rel=1e-12)


# ----------------------------------------------------------------------- Qabf


def _sobel_original(x):
    """conv2(x, hx, 'same') and conv2(x, hy, 'same') of metricsQabf, zero padding (scipy, not the package)."""
    hx = np.array([[-1, 0, 1], [-2, 0, 2], [-1, 0, 1]], float)
    hy = np.array([[1, 2, 1], [0, 0, 0], [-1, -2, -1]], float)
    return signal.convolve2d(x, hx, mode="same"), signal.convolve2d(x, hy, mode="same")


def test_qabf_of_a_black_fused_image_is_its_closed_form():
    """F = 0: gF = 0 everywhere and aF = pi/2 (SFx == 0). Where gA > gF the branch gives G = gF / gA = 0, where
    gA == gF = 0 the quirk gives G = gF = 0: Q_g = 0.9994 / (1 + e^7.5) at every pixel, so
    Qabf = Q_g * sum(Q_a(aS) gS) / sum(gS), Q_a(a) = 0.9879 / (1 + exp(-22 (1 - |a - pi/2| / (pi/2) - 0.8)))."""
    _, ir, vi = _triplet()
    q_g = 0.9994 / (1 + math.exp(7.5))
    num = den = 0.0
    for src in (vi, ir):
        sx, sy = _sobel_original(src)
        g = np.hypot(sx, sy)
        with np.errstate(divide="ignore", invalid="ignore"):
            a = np.where(sx == 0, np.pi / 2, np.arctan(sy / sx))
        q_a = 0.9879 / (1 + np.exp(-22 * (1 - np.abs(a - np.pi / 2) / (np.pi / 2) - 0.8)))
        num += (q_a * g).sum()
        den += g.sum()
    assert qabf(np.zeros_like(ir), ir, vi) == pytest.approx(q_g * num / den, rel=1e-6)  # float32 fast path: ~1e-7


@pytest.mark.parametrize("where", ["f", "i", "iv", "fiv"])
@pytest.mark.parametrize("level", [0.0, 128.0, 255.0])
def test_qabf_on_constant_patches_follows_the_originals_branches(where, level):
    """The loop transcription of metricsQabf (its ==, > branches and the sx == 0 angle) on constant patches."""
    f, ir, vi = _patched(level, where)
    assert qabf(f, ir, vi) == pytest.approx(_qabf_loops(vi, ir, f), rel=1e-6)


def test_qabf_with_all_zero_sources_is_nan_and_with_other_constants_finite():
    """Sources at 0: gA = gB = 0 everywhere, 0 / 0. Any other constant has edges along the border (zero padding)."""
    f, _, _ = _triplet()
    assert math.isnan(qabf(f, _const(0), _const(0)))
    assert qabf(f, _const(200), _const(0)) == pytest.approx(_qabf_loops(_const(0), _const(200), f), rel=1e-6)


# ------------------------------------------------------------------ Qcb, Qcv


@pytest.mark.parametrize("level", [0.0, 1.0, 128.0, 255.0])
def test_qcb_is_nan_for_any_constant_image(level):
    """normalize1: a non-zero constant is (x - x) / (x - x) = NaN; 0 stays 0 and its contrast
    G1 * 0 / G2 * 0 is 0 / 0."""
    f, ir, vi = _triplet()
    c = _const(level)
    for args in ((c, ir, vi), (f, c, vi), (f, ir, c), (c, c, c)):
        assert math.isnan(qcb(*args))


def test_qcb_contrast_preservation_is_nan_where_a_contrast_is_zero():
    """The original's (c ./ cf) .* mask + (cf ./ c) .* (1 - mask), mask = c < cf: where the smaller one is 0 the
    other quotient is Inf and Inf * 0 = NaN (min / max would give 0)."""
    c = np.array([0.0, 0.0, 0.5, 0.5, 0.2, 0.3, np.nan])
    cf = np.array([0.0, 0.4, 0.0, 0.5, 0.3, 0.2, 0.1])
    mask = (c < cf).astype(float)
    with np.errstate(divide="ignore", invalid="ignore"):
        original = (c / cf) * mask + (cf / c) * (1 - mask)
        ours = perceptual._contrast_preservation(c, cf)
    np.testing.assert_array_equal(np.isnan(ours), np.isnan(original))
    np.testing.assert_allclose(ours[~np.isnan(ours)], original[~np.isnan(original)], rtol=1e-15)
    assert np.isnan(ours[1]) and np.isnan(ours[2])


@pytest.mark.parametrize("level", [1.0, 128.0, 255.0])
def test_qcv_is_nan_for_a_non_zero_constant_image(level):
    f, ir, vi = _triplet()
    c = _const(level)
    for args in ((c, ir, vi), (f, c, vi), (f, ir, c)):
        assert math.isnan(qcv(*args))


def test_qcv_with_all_zero_images():
    """normalize1 keeps an all-zero image. As a source it has no gradient, so no saliency: the other source's term
    alone, sum(r2 D2) / sum(r2), which is also qcv(F, VI, VI). Two such sources: 0 / 0. As F: finite."""
    f, ir, vi = _triplet()
    black = _const(0)
    assert qcv(f, black, vi) == pytest.approx(qcv(f, vi, vi), rel=1e-12)
    assert qcv(f, ir, black) == pytest.approx(qcv(f, ir, ir), rel=1e-12)
    assert math.isnan(qcv(f, black, black))
    assert math.isfinite(qcv(black, ir, vi))


# ----------------------------------------------------------------------- Nabf


@pytest.mark.parametrize("level", LEVELS)
def test_nabf_of_a_constant_fused_image_is_zero(level):
    """A constant region's Sobel sums are exactly 0 (mirror extension keeps it constant): gF = 0 is never above a
    source's strength, so no pixel is an artefact; the denominator is at least 0.002 per pixel."""
    _, ir, vi = _triplet()
    assert nabf(_const(level), ir, vi) == 0.0
    assert nabf(_const(level), _const(level), _const(level)) == 0.0


_KUMAR_SOBEL = np.array([[-1, 0, 1], [-2, 0, 2], [-1, 0, 1]]) / 8  # gv; gh uses its transpose


def _kumar_sobel(x):
    """Kumar's sobel_fn: sum(sum(block .* k)) over the mirror-extended image, in MATLAB's order (column sums, top
    to bottom, then across). On x / 255 a neighbourhood whose Sobel sum is 0 in exact arithmetic but which is
    not constant can leave a residue of ~1e-17 in that order: the original sees an edge there."""
    vt = _KUMAR_SOBEL
    e = np.pad(x, 1, mode="reflect")  # per_extn_im_fn: mirrored without repeating the border pixel
    h, w = x.shape

    def response(k):
        shifted = [[e[r : r + h, c : c + w] * k[r, c] for r in range(3)] for c in range(3)]
        cols = [(top + middle) + bottom for top, middle, bottom in shifted]
        return (cols[0] + cols[1]) + cols[2]

    return response(vt), response(vt.T)


def test_nabf_with_constant_sources_is_its_closed_form():
    """gA = gB = 0: every pixel with gF > 0 is an artefact, with gAF = 0 (the gA == 0 branch) and aA = 0 (both
    responses 0), so Q = sqrt(0.9999 / (1 + e^9.5) * 0.9995 / (1 + exp(-22 (||aF| - pi/2| 2/pi - 0.5)))) for both
    sources, every weight is 0.001, and Nabf = sum over those pixels of (1 - Q) / (number of pixels)."""
    f, _, _ = _triplet()
    gv, gh = _kumar_sobel(f / 255)
    g = np.hypot(gv, gh)
    with np.errstate(divide="ignore", invalid="ignore"):
        a = np.where((gv == 0) & (gh == 0), 0.0, np.arctan(gv / gh))
    a_rel = np.abs(np.abs(a) - np.pi / 2) * 2 / np.pi
    q = np.sqrt(0.9999 / (1 + math.exp(9.5)) * 0.9995 / (1 + np.exp(-22 * (a_rel - 0.5))))
    expected = ((1 - q) * (g > 0)).sum() / f.size
    for a_level, b_level in ((0, 0), (200, 37), (255, 255)):
        assert nabf(f, _const(a_level), _const(b_level)) == pytest.approx(expected, rel=1e-12)
    # Three pixels of this image have a Sobel sum of exactly 0 in integers but a residue in the original's order:
    # they count as artefacts, as in the original; without them the value would differ.
    exact = np.hypot(*(ndimage.correlate(f, 8 * k, mode="mirror") for k in (_KUMAR_SOBEL, _KUMAR_SOBEL.T)))
    assert (g > 0).sum() - (exact > 0).sum() == 3
    assert ((1 - q) * (exact > 0)).sum() / f.size != pytest.approx(expected, rel=1e-4)


# -------------------------------------------------------------------- MS-SSIM


def _ms_ssim_of_constant_sources(f):
    """Two constant sources: in each window the original's reference patch sum_k w_k (x_k - mu_k) / ed_k is a
    constant block (rescaled to norm max ed if not 0), so var_r = cov_rf = 0 and q = C / (var_f + C), var_f the
    Gaussian-window variance of F. MS-SSIM = prod_s mean(q_s)^w_s over the three 2 x 2 averaged scales."""
    x = np.arange(11) - 5.0
    g = np.exp(-(x[:, None] ** 2 + x[None, :] ** 2) / (2 * 1.5**2))
    g /= g.sum()
    weights = np.array([0.0448, 0.2856, 0.3001])
    weights /= weights.sum()
    c = (0.03 * 255) ** 2
    scores = []
    for level in range(3):
        if level:
            f = _downsample(f)
        mu = signal.correlate2d(f, g, "valid")
        var = signal.correlate2d(f * f, g, "valid") - mu * mu
        scores.append(np.mean(c / (var + c)))
    return float(np.prod(np.array(scores) ** weights))


@pytest.mark.parametrize("a, b", [(0, 0), (200, 37), (229, 17), (255, 255)])
def test_ms_ssim_with_constant_sources_is_its_closed_form(a, b):
    """Was off by up to 2e-8: the sources' Gaussian-moment residues times a_k = 0.5 / 0.001."""
    f, _, _ = _triplet()
    assert ms_ssim(f, _const(a), _const(b)) == pytest.approx(_ms_ssim_of_constant_sources(f), rel=1e-12)


@pytest.mark.parametrize("level", LEVELS)
def test_ms_ssim_of_constant_images_is_one(level):
    """Every window flat in all three images: q = C / (0 + 0 + C) = 1 at every scale (F's variance residue: ~3e-14)."""
    assert ms_ssim(_const(level), _const(255 - level), _const(level)) == pytest.approx(1.0, abs=1e-12)


@pytest.mark.parametrize("where", ["f", "i", "iv", "fiv"])
def test_ms_ssim_on_constant_patches_equals_the_loop_transcription(where):
    """Patches constant in F, in one source, in both sources, in all three: the window loop of mef_ssim."""
    f, ir, vi = _patched(229.0, where)
    crop = (slice(8, 56), slice(12, 60))  # the loop is slow; 48 x 48 pixels give three scales
    f, ir, vi = f[crop], ir[crop], vi[crop]
    assert ms_ssim(f, ir, vi) == pytest.approx(_ms_ssim_plain(f, ir, vi), rel=1e-12)


# -------------------------------------------------------------------- CC, SCD


@pytest.mark.parametrize("level", LEVELS)
def test_cc_is_nan_when_an_image_is_constant(level):
    """r = sum(da db) / sqrt(sum(da^2) sum(db^2)) with da = 0 exactly (the mean of 8-bit data is exact): 0 / 0."""
    f, ir, vi = _triplet()
    c = _const(level)
    for args in ((c, ir, vi), (f, c, vi), (f, ir, c)):
        assert math.isnan(correlation_coefficient(*args))


@pytest.mark.parametrize("level", LEVELS)
def test_scd_is_nan_when_a_difference_or_a_source_is_constant(level):
    """corr2(F - IR, VI) + corr2(F - VI, IR): NaN where VI or IR is constant, or F - IR or F - VI is."""
    f, ir, vi = _triplet()
    c = _const(level)
    assert math.isnan(scd(f, c, vi)) and math.isnan(scd(f, ir, c))
    assert math.isnan(scd(ir, ir, vi)) and math.isnan(scd(vi, ir, vi))  # F equal to a source: a zero difference
    offset = np.minimum(ir, 200) + 55  # F = IR' + 55 with IR' = min(IR, 200): F - IR' = 55
    assert math.isnan(scd(offset, np.minimum(ir, 200), vi))


@pytest.mark.parametrize("level", LEVELS)
def test_scd_of_a_constant_fused_image_is_twice_the_negated_source_correlation(level):
    """F = c: corr2(c - IR, VI) + corr2(c - VI, IR) = -2 corr2(IR, VI), finite (corr2 ignores offsets)."""
    _, ir, vi = _triplet()
    assert scd(_const(level), ir, vi) == pytest.approx(-2 * corr2(ir, vi), rel=1e-12)
