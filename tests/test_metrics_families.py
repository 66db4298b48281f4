"""The single-channel metric functions: transcriptions of the original loops
on small odd-sized images, identities, constant images, swapped sources."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import ndimage, signal

from causalfuse.metrics import get_metric, list_metrics
from causalfuse.metrics._filters import filter2_valid, filter2_valid_decimated, gaussian_1d
from causalfuse.metrics.gradient import average_gradient, edge_intensity, qabf, spatial_frequency
from causalfuse.metrics.information import cross_entropy, entropy, mutual_information
from causalfuse.metrics.statistics import correlation_coefficient, psnr, rmse, scd, standard_deviation
from causalfuse.metrics.structural import ssim
from causalfuse.metrics.visual import viff
from .conftest import textured_triplet

MY_METRICS = ["AG", "CC", "CE", "EI", "EN", "MI", "PSNR", "Qabf", "RMSE", "SCD", "SD", "SF", "SSIM", "VIF"]


def _triplet(shape=(41, 37), seed=0):
    return textured_triplet(shape, seed)


# ---------------------------------------------------------------- transcriptions


def _qabf_loops(a, b, f):
    """Plain transcription of VIFB's metricsQabf (loops, conv2 'same', the 255 scaling)."""
    h1 = np.array([[1, 2, 1], [0, 0, 0], [-1, -2, -1]], float)
    h3 = np.array([[-1, 0, 1], [-2, 0, 2], [-1, 0, 1]], float)

    def so(x):
        x = 255.0 * x
        sx = signal.convolve2d(x, h3, mode="same")
        sy = signal.convolve2d(x, h1, mode="same")
        g = np.sqrt(sx**2 + sy**2)
        al = np.zeros_like(x)
        for i in range(x.shape[0]):
            for j in range(x.shape[1]):
                al[i, j] = math.pi / 2 if sx[i, j] == 0 else math.atan(sy[i, j] / sx[i, j])
        return g, al

    (ga, aa), (gb, ab), (gf, af) = so(a), so(b), so(f)

    def q(gs, as_):
        out = np.zeros_like(gs)
        for i in range(gs.shape[0]):
            for j in range(gs.shape[1]):
                if gs[i, j] > gf[i, j]:
                    gr = gf[i, j] / gs[i, j]
                elif gs[i, j] == gf[i, j]:
                    gr = gf[i, j]
                else:
                    gr = gs[i, j] / gf[i, j]
                ar = 1 - abs(as_[i, j] - af[i, j]) / (math.pi / 2)
                out[i, j] = 0.9994 / (1 + math.exp(-15 * (gr - 0.5))) * 0.9879 / (1 + math.exp(-22 * (ar - 0.8)))
        return out

    return (q(ga, aa) * ga + q(gb, ab) * gb).sum() / (ga + gb).sum()


def test_qabf_matches_loop_transcription():
    f, ir, vi = _triplet((23, 19))
    f[5:9, 5:9] = vi[5:9, 5:9]  # equal strengths somewhere: the gF quirk must be exercised
    # 8-bit data takes the int16/float32 fast path (about 1e-7 relative), other data float64.
    assert qabf(f, ir, vi) == pytest.approx(_qabf_loops(vi, ir, f), rel=1e-6)
    frac = f + 0.25
    assert qabf(frac, ir, vi) == pytest.approx(_qabf_loops(vi, ir, frac), rel=1e-12)
    assert qabf(f.astype(np.uint8), ir.astype(np.uint8), vi.astype(np.uint8)) == qabf(f, ir, vi)


def _fspecial(n, sigma):
    x = np.arange(n) - (n - 1) / 2
    h = np.exp(-(x[:, None] ** 2 + x[None, :] ** 2) / (2 * sigma**2))
    h[h < np.finfo(float).eps * h.max()] = 0
    return h / h.sum()


def _filter2_valid(w, x):
    return signal.correlate2d(x, w, mode="valid")


def _viff_direct(a, b, f):
    """Han's VIFF_Public with direct 2-D filtering (Im1 = a, Im2 = b)."""
    sq, c = 0.005 * 255 * 255, 1e-7
    p = np.array([1, 0, 0.15, 1]) / 2.15

    def stats(ref, dist):
        out = []
        for s in range(1, 5):
            n = 2 ** (5 - s) + 1
            win = _fspecial(n, n / 5)
            if s > 1:
                ref = _filter2_valid(win, ref)[::2, ::2]
                dist = _filter2_valid(win, dist)[::2, ::2]
            mu1, mu2 = _filter2_valid(win, ref), _filter2_valid(win, dist)
            s1 = _filter2_valid(win, ref * ref) - mu1 * mu1
            s2 = _filter2_valid(win, dist * dist) - mu2 * mu2
            s12 = _filter2_valid(win, ref * dist) - mu1 * mu2
            s1[s1 < 0] = 0
            s2[s2 < 0] = 0
            g = s12 / (s1 + 1e-10)
            sv = s2 - g * s12
            g[s1 < 1e-10] = 0
            sv[s1 < 1e-10] = s2[s1 < 1e-10]
            s1[s1 < 1e-10] = 0
            g[s2 < 1e-10] = 0
            sv[s2 < 1e-10] = 0
            sv[g < 0] = s2[g < 0]
            g[g < 0] = 0
            sv[sv <= 1e-10] = 1e-10
            out.append((np.log10(1 + g**2 * s1 / (sv + sq)), np.log10(1 + s1 / sq), g))
        return out

    t1, t2 = stats(a, f), stats(b, f)
    total = 0.0
    for s in range(4):
        take1 = t1[s][2] < t2[s][2]
        vid = np.where(take1, t1[s][0], t2[s][0])
        vind = np.where(take1, t1[s][1], t2[s][1])
        total += p[s] * (vid + c).sum() / (vind + c).sum()
    return total


def test_viff_matches_direct_2d_filtering():
    f, ir, vi = _triplet((71, 66))
    assert viff(f, ir, vi) == pytest.approx(_viff_direct(vi, ir, f), rel=1e-9)


def test_viff_flat_windows_follow_the_originals_arithmetic():
    """Constant windows: residues of the original's 2-D sums, measured under Octave (oracle/viff_edge/README.md)."""
    from causalfuse.metrics import visual

    decisive = visual._residue_reaches_threshold()
    # Octave: 2.8e-10 (229), 1.6e-10 (230), 2.5e-10 (247), 1.2e-10 (254) reach 1e-10; 2.2e-11 (255) and 0 (0) do not.
    assert decisive[[229, 230, 247, 254]].all() and not decisive[[0, 255]].any()
    assert decisive.sum() == 10

    # A fused image constant at 229 on a patch: the slow sums change the value, a patch at 0 does not take them.
    f, ir, vi = _triplet((60, 70))
    for level, changes in ((229, True), (0, False)):
        patched = f.copy()
        patched[10:50, 15:60] = level
        fast_only = pytest.MonkeyPatch()
        fast_only.setattr(visual, "_flat_windows_as_original", lambda stats, *images: stats)
        try:
            separable = viff(patched, ir, vi)
        finally:
            fast_only.undo()
        assert (viff(patched, ir, vi) != separable) is changes, level


def test_ssim_matches_direct_2d_filtering():
    f, ir, vi = _triplet((30, 27))
    w = _fspecial(11, 1.5)
    c1, c2 = (0.01 * 255) ** 2, (0.03 * 255) ** 2

    def one(a, b):
        ua, ub = _filter2_valid(w, a), _filter2_valid(w, b)
        sa = _filter2_valid(w, a * a) - ua**2
        sb = _filter2_valid(w, b * b) - ub**2
        sab = _filter2_valid(w, a * b) - ua * ub
        return (((2 * ua * ub + c1) * (2 * sab + c2)) / ((ua**2 + ub**2 + c1) * (sa + sb + c2))).mean()

    assert ssim(f, ir, vi) == pytest.approx(one(vi, f) + one(ir, f), rel=1e-12)


def test_gaussian_windows_are_fspecial():
    for n, sigma in [(11, 1.5), (17, 3.4), (9, 1.8), (5, 1.0), (3, 0.6)]:  # SSIM; VIFF's 17, 9, 5, 3 (sigma N / 5)
        g = gaussian_1d(n, sigma)
        np.testing.assert_allclose(np.outer(g, g), _fspecial(n, sigma), rtol=1e-13, atol=1e-18)
        assert _fspecial(n, sigma).min() > 0  # MATLAB's eps cut never applies to these windows


@pytest.mark.parametrize("n, shape", [(11, (30, 27)), (33, (71, 40)), (5, (5, 9)), (9, (8, 20))])
def test_compiled_separable_filter_matches_correlate2d(n, shape):
    rng = np.random.default_rng(n)
    stack = rng.random((3,) + shape) * 255
    w = _fspecial(n, n / 5)
    g = gaussian_1d(n, n / 5)
    want = np.stack([_filter2_valid(w, x) for x in stack]) if min(shape) >= n else np.zeros((3, 0, 0))
    got = filter2_valid(stack, g)
    assert got.shape == (3, max(shape[0] - n + 1, 0), max(shape[1] - n + 1, 0))
    if got.size:
        np.testing.assert_allclose(got, want, rtol=1e-12, atol=1e-10)
        np.testing.assert_allclose(filter2_valid_decimated(stack, g), want[:, ::2, ::2], rtol=1e-12, atol=1e-10)
    # A single image and a Fortran-ordered copy give the same numbers.
    np.testing.assert_allclose(filter2_valid(stack[1], g), got[1], rtol=0, atol=0)
    view = np.asfortranarray(stack[2])
    np.testing.assert_allclose(filter2_valid(view, g), got[2], rtol=0, atol=0)


def test_running_box_sums_are_exact_on_dyadic_values():
    """MS-SSIM's box sums by running sums equal the direct sums bit for bit on its inputs
    (8-bit levels minus 128, their 2 x 2 averages, and products of those)."""
    from causalfuse.metrics._kernels import box_sums_valid

    rng = np.random.default_rng(3)
    for step in (1.0, 0.25, 1.0 / 16):  # scales 1, 2, 3
        x = rng.integers(0, int(255 / step) + 1, (2, 40, 35)) * step - 128.0
        stack = np.stack([x[0], x[1], x[0] * x[0], x[1] * x[1], x[0] * x[1]])
        want = np.stack([_filter2_valid(np.ones((11, 11)), m) for m in stack])
        assert np.array_equal(box_sums_valid(stack, 11), want)


def test_gradient_family_matches_plain_formulas():
    f, _, _ = _triplet((13, 17))
    m, n = f.shape
    rf = sum((f[i, j] - f[i, j - 1]) ** 2 for i in range(m) for j in range(1, n)) / (m * n)
    cf = sum((f[i, j] - f[i - 1, j]) ** 2 for j in range(n) for i in range(1, m)) / (m * n)
    assert spatial_frequency(f) == pytest.approx(math.sqrt(rf + cf), rel=1e-12)
    w = np.array([[1, 2, 1], [0, 0, 0], [-1, -2, -1]], float)
    gx = ndimage.correlate(f, w, mode="nearest")
    gy = ndimage.correlate(f, w.T, mode="nearest")
    assert edge_intensity(f) == pytest.approx(np.sqrt(gx**2 + gy**2).mean(), rel=1e-12)
    dy, dx = np.gradient(f)
    assert average_gradient(f) == pytest.approx(np.sqrt((dx**2 + dy**2) / 2).sum() / ((m - 1) * (n - 1)), rel=1e-12)


def test_information_family_matches_plain_formulas():
    f, ir, vi = _triplet((25, 31))

    def h(*xs):
        _, counts = np.unique(np.stack([x.ravel() for x in xs]), axis=1, return_counts=True)
        p = counts / counts.sum()
        return -(p * np.log(p)).sum()

    # uint8 levels spanning 0..255 are not changed by the stretch, so MI is the plug-in MI.
    for x in (f, ir, vi):
        x[0, 0], x[0, 1] = 0, 255
    mi = h(vi) + h(f) - h(vi, f) + h(ir) + h(f) - h(ir, f)
    assert mutual_information(f, ir, vi) == pytest.approx(mi, rel=1e-12)
    assert entropy(f) == pytest.approx(h(f) / math.log(2), rel=1e-12)


def test_mi_stretches_each_image_first():
    f, ir, vi = _triplet((20, 20))
    f = f / 4  # a narrower range: the original stretches it back to 0..255
    assert mutual_information(f + 7, ir, vi) == mutual_information(f, ir, vi)
    assert mutual_information(f * 0.5, ir, vi) == mutual_information(f, ir, vi)


def test_scd_and_cc_definitions():
    f, ir, vi = _triplet()
    r = lambda a, b: np.corrcoef(a.ravel(), b.ravel())[0, 1]  # noqa: E731
    assert scd(f, ir, vi) == pytest.approx(r(f - ir, vi) + r(f - vi, ir), rel=1e-12)
    assert correlation_coefficient(f, ir, vi) == pytest.approx((r(f, ir) + r(f, vi)) / 2, rel=1e-12)


def test_rmse_psnr_sd_definitions():
    f, ir, vi = _triplet()
    d = lambda a: math.sqrt(((a - f) ** 2).sum()) / f.size  # noqa: E731
    assert rmse(f, ir, vi) == pytest.approx((d(vi) + d(ir)) / 2, rel=1e-12)
    assert psnr(f, ir, vi) == pytest.approx(20 * math.log10(255 / math.sqrt((d(vi) + d(ir)) / 2)), rel=1e-12)
    assert standard_deviation(f) == pytest.approx(f.std(), rel=1e-12)


# ---------------------------------------------------------------- identities


def test_image_with_itself():
    x, _, _ = _triplet()
    assert ssim(x, x, x) == pytest.approx(2.0, abs=1e-12)
    big, _, _ = _triplet((96, 90))  # VIFF's four scales need at least 81 x 81 pixels
    assert viff(big, big, big) == pytest.approx(1.0, abs=1e-9)
    assert cross_entropy(x, x, x) == 0.0
    assert rmse(x, x, x) == 0.0
    assert psnr(x, x, x) == math.inf
    assert correlation_coefficient(x, x, x) == pytest.approx(1.0, abs=1e-12)
    assert mutual_information(x, x, x) == pytest.approx(2 * entropy(x) * math.log(2), rel=1e-12)
    # Qabf of an image with itself is not 1: where strengths are equal the original
    # uses G = 255 gF (-> Q_g = 0.9994), and equal orientations give Q_a = 0.9879 / (1 + e^-4.4).
    assert qabf(x, x, x) == pytest.approx(0.9994 * 0.9879 / (1 + math.exp(-4.4)), rel=1e-3)
    assert math.isnan(scd(x, x, x))  # corr2 of a zero difference: 0 / 0, as the original


@pytest.mark.parametrize("value", [0.0, 128.0, 255.0])
def test_constant_images_give_the_original_values(value):
    c = np.full((96, 90), value)
    _, ir, vi = _triplet((96, 90))
    assert mutual_information(c, ir, vi) == 0.0
    assert entropy(c) == 0.0
    assert standard_deviation(c) == 0.0
    assert average_gradient(c) == 0.0 and edge_intensity(c) == 0.0 and spatial_frequency(c) == 0.0
    assert math.isnan(correlation_coefficient(c, ir, vi))
    assert math.isnan(scd(c, c, c))
    if value == 0:
        assert math.isnan(qabf(c, c, c))  # no edge anywhere: 0 / 0
    else:  # zero padding makes edges along the border; equal strengths give the quirk's value
        assert qabf(c, c, c) == pytest.approx(0.9994 * 0.9879 / (1 + math.exp(-4.4)), rel=1e-6)
    assert ssim(c, c, c) == pytest.approx(2.0)
    assert viff(c, c, c) == pytest.approx(1.0)  # sum(0 + C) / sum(0 + C) at every scale
    assert psnr(c, c, c) == math.inf
    for name in MY_METRICS:  # never an exception
        get_metric(name).fn(c, c, c)


@pytest.mark.parametrize("name", ["MI", "CE", "SSIM", "Qabf", "RMSE", "PSNR", "CC", "SCD"])
def test_symmetric_in_the_sources(name):
    f, ir, vi = _triplet(seed=3)
    fn = get_metric(name).fn
    assert fn(f, ir, vi) == pytest.approx(fn(f, vi, ir), rel=1e-12)


def test_tiny_images_do_not_crash():
    f, ir, vi = _triplet((6, 5))
    for name in MY_METRICS:
        v = get_metric(name).fn(f, ir, vi)
        assert isinstance(v, float)
    assert math.isnan(ssim(f, ir, vi))  # smaller than the 11 x 11 window: no valid pixel
    assert math.isnan(viff(f, ir, vi))  # VIFF's coarsest scale is empty below 41 x 41: 0 / 0, as the original


def test_registry_describes_every_metric():
    names = list_metrics()
    for name in MY_METRICS:
        assert name in names
        info = get_metric(name)
        assert "doi:" in info.reference or "no DOI" in info.reference
        assert info.colour in ("per_channel", "fused_only", "side_by_side")
    assert get_metric("ssim").name == "SSIM"
    assert get_metric("CE").higher_is_better is False and get_metric("RMSE").higher_is_better is False
    assert get_metric("SF").colour == "side_by_side" and get_metric("EN").colour == "fused_only"


# ---------------------------------------------------------------- oracle small table

# The oracle README's table (original code under Octave, grey images in oracle/vifb/gray).
SCD_TABLE = {"ADF": 1.3770274670, "CNN": 1.7475009684}


@pytest.mark.parametrize("method", sorted(SCD_TABLE))
def test_scd_matches_oracle_table(method):
    from causalfuse.io import load_image

    from .conftest import shared_path

    gray = shared_path("oracle", "vifb", "gray")
    f, ir, vi = (load_image(gray / f"walking_{s}.png").astype(np.float64) for s in (method, "IR", "VI"))
    assert scd(f, ir, vi) == pytest.approx(SCD_TABLE[method], rel=1e-9)


@pytest.mark.parametrize("name", ["carWhite", "running", "walking"])
def test_grey_conversion_matches_the_oracle_grey_images(name):
    from causalfuse.io import load_image, rgb2gray_matlab

    from .conftest import shared_path

    root = shared_path("oracle", "vifb")
    for src, dst in [(f"vi/{name}.jpg", f"gray/{name}_VI.png"), (f"ir/{name}.jpg", f"gray/{name}_IR.png"),
                     (f"fused/ADF/{name}.jpg", f"gray/{name}_ADF.png")]:  # fmt: skip
        np.testing.assert_array_equal(rgb2gray_matlab(load_image(root / src)), load_image(root / dst))
