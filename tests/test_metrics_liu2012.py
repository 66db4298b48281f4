"""Qs, Qw, Qe, Qy, Qc and NCIE: registry, identities, the originals' NaN cases and their flat-window arithmetic.

The values themselves are checked against the original MATLAB code in
``test_metrics_more_reference.py``.
"""

from __future__ import annotations

import math

import numpy as np
import pytest

from causalfuse import CausalFuseError
from causalfuse.metrics import compute, get_metric, list_groups, resolve_metrics
from causalfuse.metrics import structural
from causalfuse.metrics._filters import fspecial_gaussian_octave
from causalfuse.metrics._kernels import window_means_octave
from causalfuse.metrics.information import ncie
from causalfuse.metrics.structural import cvejic_qc, piella_qe, piella_qs, piella_qw, yang_qy

NEW = ["NCIE", "Qc", "Qe", "Qs", "Qw", "Qy"]


def _triplet(h=48, w=52, seed=0):
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:h, 0:w]
    base = 127 + 90 * np.sin(xx / 5.0) * np.cos(yy / 7.0)
    vi = np.clip(base + rng.normal(0, 12, (h, w)), 0, 255).round()
    ir = np.clip(255 - base + rng.normal(0, 9, (h, w)), 0, 255).round()
    return np.floor((vi + ir) / 2), ir, vi


def _with_flat_patches(seed=1, fused_flat=True):
    """A triplet with constant patches at several levels in each image, overlapping two by two (never all three).

    ``fused_flat=False``: only the sources have them (Qc is NaN on most
    windows where F is constant: both covariances are then often exactly 0).
    """
    f, ir, vi = _triplet(60, 64, seed)
    vi[5:25, 4:30] = 203
    ir[12:40, 14:50] = 154
    vi[40:58, 40:62] = 196
    ir[2:10, 50:64] = 247
    if fused_flat:
        f[28:50, 2:30] = 229
        f[50:60, 30:60] = 178
    return f, ir, vi


def test_registered_by_name_in_groups_and_not_in_all():
    groups = list_groups()
    assert groups["piella"] == ["Qe", "Qs", "Qw"]
    assert set(NEW) <= set(groups["liu2012"])
    all_names = [m.name for m in resolve_metrics("all")]
    assert len(all_names) == 18 and not set(NEW) & set(all_names)
    assert [m.name for m in resolve_metrics("qy,NCIE")] == ["Qy", "NCIE"]  # names are case-insensitive
    for name in NEW:
        info = get_metric(name)
        assert info.higher_is_better and "doi:" in info.reference or name == "Qc"
        assert info.min_size == (1 if name == "NCIE" else 11)


def test_a_fused_image_equal_to_both_sources_scores_one():
    _, _, vi = _triplet()
    for fn in (piella_qs, piella_qw, piella_qe, yang_qy, cvejic_qc):
        assert fn(vi, vi, vi) == pytest.approx(1.0, abs=1e-12), fn.__name__


def test_ncie_is_symmetric_and_follows_its_formula_for_identical_images():
    f, ir, vi = _triplet()
    value = ncie(f, ir, vi)
    assert 0 < value < 1
    assert ncie(vi, f, ir) == pytest.approx(value, rel=1e-12) and ncie(ir, vi, f) == pytest.approx(value, rel=1e-12)
    # NCC(x, x) = H(x) in base 256, so R = [1 h h; h 1 h; h h 1]: eigenvalues 1 + 2h, 1 - h, 1 - h
    levels = np.round((vi - vi.min()) / (vi.max() - vi.min()) * 255).astype(int)
    p = np.bincount(levels.ravel()) / levels.size
    h = -(p[p > 0] * np.log2(p[p > 0])).sum() / 8
    r = np.array([1 + 2 * h, 1 - h, 1 - h]) / 3
    assert ncie(vi, vi, vi) == pytest.approx(1 + (r * np.log2(r)).sum() / 8, rel=1e-12)
    # a singular R (here h = 1: three identical images with a flat histogram) takes the limit r log r -> 0
    flat = np.arange(256.0).reshape(16, 16)
    assert ncie(flat, flat, flat) == pytest.approx(1.0, abs=1e-12)


def test_ncie_edge_cases_follow_normalize1():
    f, ir, vi = _triplet()
    assert math.isnan(ncie(np.full_like(f, 80.0), ir, vi)), "a constant non-zero image: 0 / 0 in normalize1"
    assert math.isfinite(ncie(np.zeros_like(f), ir, vi)), "an all-zero image is kept as it is"
    # stretching and shifting change nothing: each image is min-max stretched first
    assert ncie(f / 2 + 10, ir, vi) == pytest.approx(ncie(f, ir, vi), rel=1e-12)


def test_qy_is_nan_where_both_sources_are_zero_over_a_window():
    f, ir, vi = _triplet()
    vi[10:20, 10:20] = 0
    ir[10:20, 10:20] = 0
    assert math.isnan(yang_qy(f, ir, vi))  # lambda = 0 / 0, as in metricYang
    assert math.isfinite(piella_qs(f, ir, vi))  # metricPeilla adds 0.5 to both variances there


def test_qc_is_nan_where_the_fused_image_is_zero_over_a_window():
    f, ir, vi = _triplet()
    assert math.isfinite(cvejic_qc(f, ir, vi))
    f[30:37, 5:12] = 0  # one 7 x 7 window: s_af + s_bf = 0 exactly, w = 0 / 0
    assert math.isnan(cvejic_qc(f, ir, vi))


def test_qc_depends_on_the_order_of_the_sources():
    f, ir, vi = _with_flat_patches(fused_flat=False)
    assert abs(cvejic_qc(f, ir, vi) - cvejic_qc(f, vi, ir)) > 1e-3
    for fn in (piella_qs, piella_qw, piella_qe):  # lambda and 1 - lambda swap: the same value
        assert fn(f, vi, ir) == pytest.approx(fn(f, ir, vi), rel=1e-12)


def test_qe_is_qw_times_qw_of_the_edge_images():
    f, ir, vi = _triplet()
    edges = [structural._edge_magnitude(x) for x in (f, ir, vi)]
    assert piella_qe(f, ir, vi) == pytest.approx(piella_qw(f, ir, vi) * piella_qw(*edges), rel=1e-12)
    # the edge filter: 'same' correlation with zero padding
    x = np.arange(20.0).reshape(4, 5) ** 1.5
    padded = np.pad(x, 1)
    kx = np.array([[1, 0, -1]] * 3)
    gx = np.array([[np.sum(padded[i : i + 3, j : j + 3] * kx) for j in range(5)] for i in range(4)])
    gy = np.array([[np.sum(padded[i : i + 3, j : j + 3] * kx.T) for j in range(5)] for i in range(4)])
    np.testing.assert_allclose(structural._edge_magnitude(x), np.hypot(gx, gy), rtol=1e-13)


@pytest.mark.parametrize("size", [7, 11])
def test_octave_order_window_means_equal_a_term_by_term_loop(size):
    rng = np.random.default_rng(size)
    images = rng.integers(0, 256, (2, 16, 19)).astype(np.float64)
    images[1] = images[0] * images[1]
    win = fspecial_gaussian_octave(size, 1.5, renormalise=True)
    rows = np.array([0, 3, 5], dtype=np.int64)
    starts = np.array([0, 2, 7], dtype=np.int64)
    lengths = np.array([4, 1, 2], dtype=np.int64)
    got = window_means_octave(images, win, rows, starts, lengths)
    want = []
    for k in range(2):
        for r, c0, n in zip(rows, starts, lengths):
            for c in range(c0, c0 + n):
                acc = 0.0
                for q in range(size - 1, -1, -1):  # Octave's conv2: columns last to first, rows last to first
                    for p in range(size - 1, -1, -1):
                        acc = acc + win[p, q] * images[k, r + p, c + q]
                want.append(acc)
    np.testing.assert_array_equal(got.ravel(), want)  # bit for bit


@pytest.mark.parametrize("fn", [piella_qs, piella_qw, piella_qe, yang_qy, cvejic_qc])
def test_flat_windows_get_the_originals_arithmetic(fn, monkeypatch):
    """Fast path plus the flagged windows equals the original's arithmetic on every window.

    With the flat threshold at infinity every window is summed term by term
    as Octave does; with it below 0 none is, and Qs, Qy and Qc change by
    0.5 % to 20 % (Qc becomes NaN) on these constant patches; Qw and Qe
    weight those windows by their (residue) variance and hardly change.
    """
    f, ir, vi = _with_flat_patches(fused_flat=fn is not cvejic_qc)
    values = {}
    for flat in (structural._FLAT, np.inf, -1.0):
        monkeypatch.setattr(structural, "_FLAT", flat)
        structural.source_cache.clear()
        values[flat] = fn(f, ir, vi)
    structural.source_cache.clear()
    fast, original, separable = values.values()
    assert math.isfinite(fast) and fast == pytest.approx(original, rel=1e-10)
    if fn in (piella_qs, yang_qy, cvejic_qc):
        assert not abs(separable - original) < 1e-3 * abs(original), "the flat windows decide the value here"


def test_qy_and_qc_are_refused_below_the_originals_11_pixels():
    f, ir, vi = (x[:10, :30] for x in _triplet())
    assert math.isnan(yang_qy(f, ir, vi)) and math.isnan(cvejic_qc(f, ir, vi))
    with pytest.raises(CausalFuseError, match=r"too small for Qy \(at least 11 x 11\)"):
        compute(f.astype(np.uint8), ir.astype(np.uint8), vi.astype(np.uint8), ["Qy"])
