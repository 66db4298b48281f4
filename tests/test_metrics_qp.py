"""Qp (Zhao et al.) and its phase congruency: properties and the compiled kernel against NumPy."""

from __future__ import annotations

import numpy as np
import pytest

from causalfuse.metrics import compute, list_groups, list_metrics
from causalfuse.metrics._kernels import (
    median_nonnegative,
    phase_congruency_moments,
    phase_orientation_add,
    phase_smallest_power,
    zhao_correlation,
)
from causalfuse.metrics.phase import _filter_bank, phase_congruency, zhao_qp


def _scene(seed: int, shape=(40, 52)) -> np.ndarray:
    rng = np.random.default_rng(seed)
    x = np.zeros(shape)
    x[:, shape[1] // 2 :] = 150.0
    x[shape[0] // 3 : 2 * shape[0] // 3, 5:15] = 60.0
    return x + rng.normal(0, 4, shape)


def test_registered_in_liu2012_only():
    assert "Qp" in list_metrics()
    assert "Qp" in list_groups()["liu2012"]
    assert "Qp" not in list_groups()["all"]


@pytest.mark.parametrize("dtype", [np.complex128, np.complex64])
def test_kernels_equal_numpy(dtype):
    rng = np.random.default_rng(0)
    eo = (rng.normal(size=(4, 9, 11)) + 1j * rng.normal(size=(4, 9, 11))).astype(dtype)
    start = rng.random((5, 9, 11))
    threshold, cos_a, sin_a = 1.5, 0.5, 0.75**0.5
    totals = start.copy()
    phase_orientation_add(eo, threshold, 0.5, 10.0, cos_a, sin_a, totals)
    eo = eo.astype(np.complex128)
    even, odd, amp = eo.real, eo.imag, np.abs(eo)
    x = np.sqrt(even.sum(0) ** 2 + odd.sum(0) ** 2) + 1e-4
    me, mo = even.sum(0) / x, odd.sum(0) / x
    energy = np.maximum((even * me + odd * mo - np.abs(even * mo - odd * me)).sum(0) - threshold, 0.0)
    assert 0 < np.count_nonzero(energy) < energy.size  # both branches of the threshold
    weight = 1.0 / (1.0 + np.exp((0.5 - amp.sum(0) / (amp.max(0) + 1e-4) / 4) * 10.0))
    pc = weight * energy / amp.sum(0)
    want = start + [weight * energy, amp.sum(0), (pc * cos_a) ** 2, (pc * sin_a) ** 2, pc * cos_a * pc * sin_a]
    np.testing.assert_allclose(totals, want, rtol=1e-12)
    np.testing.assert_allclose(phase_smallest_power(eo.astype(dtype)), amp[0] ** 2, rtol=1e-13)

    part = rng.random(want.shape)
    pc, big, small = phase_congruency_moments(part, want - part, 6)
    cx2, cy2, cxy = want[2] / 3, want[3] / 3, want[4] / 6
    denom = np.sqrt(cxy**2 + (cx2 - cy2) ** 2) + 1e-4
    np.testing.assert_allclose(pc, want[0] / (want[1] + 1e-4), rtol=1e-14)
    np.testing.assert_allclose(big, (cy2 + cx2 + denom) / 2, rtol=1e-13)
    np.testing.assert_allclose(small, (cy2 + cx2 - denom) / 2, rtol=1e-12)


@pytest.mark.parametrize("shape", [(7, 8), (30, 26), (3, 40)])
def test_correlation_kernel_equals_numpy(shape):
    from scipy.ndimage import correlate1d

    from causalfuse.metrics._filters import gaussian_1d

    rng = np.random.default_rng(shape[0])
    a, b, best, f = rng.random((4,) + shape)
    masks = rng.random((3,) + shape) < 0.6
    g = gaussian_1d(11, 1.5)
    total, count = zhao_correlation(a, b, best, f, masks, g, 1e-4)

    def filter2(x):  # filter2(outer(g, g), x, 'same')
        return correlate1d(correlate1d(x, g, axis=1, mode="constant"), g, axis=0, mode="constant")

    mu_f = filter2(f)
    var_f = filter2(f * f) - mu_f**2
    result = None
    for x, mask in zip((a, b, best), masks):
        x = x * mask
        mu = filter2(x)
        r = np.where(mask, (filter2(x * f) - mu * mu_f + 1e-4) / (np.sqrt(np.abs((filter2(x * x) - mu**2) * var_f)) + 1e-4), 0)
        result = r if result is None else np.fmax(result, r)
    assert count == masks[2].sum()
    assert total == pytest.approx(result.sum(), rel=1e-12)


@pytest.mark.parametrize("shape", [(16, 20), (15, 21)])
def test_filter_bank_zero_at_dc_and_low_pass_symmetric(shape):
    filters, noise, energies = _filter_bank(*shape)
    assert filters.shape == (6, 4) + shape
    assert np.all(filters[:, :, 0, 0] == 0)
    assert np.all(filters >= 0) and np.all(np.isfinite(noise)) and np.all(noise > 0)


@pytest.mark.parametrize("shape", [(16, 20), (15, 21), (2, 3)])
def test_noise_sums_equal_those_of_the_spatial_filters(shape):
    from scipy import fft as sfft

    filters, noise, _ = _filter_bank(*shape)
    for o in range(6):
        # myphasecong3's way, on the float32 filters (hence the tolerance)
        spatial = sfft.ifft2(filters[o].astype(np.float64)).real * np.sqrt(np.prod(shape))
        pairs = sum((spatial[i] * spatial[j]).sum() for i in range(4) for j in range(i + 1, 4))
        assert noise[o] == pytest.approx(2 * (spatial**2).sum() + 4 * pairs, rel=1e-6)


def test_median_equals_numpy():
    rng = np.random.default_rng(2)
    for n in list(range(1, 40)) + [460 * 63]:
        for x in (rng.random(n), rng.integers(0, 3, n).astype(float), rng.exponential(size=n) ** 4 * 1e6):
            assert median_nonnegative(x) == np.median(x)


def test_phase_congruency_marks_the_step_edge():
    x = np.zeros((32, 40))
    x[:, 20:] = 100.0
    pc, big, small = phase_congruency(x)
    assert np.all((pc >= 0) & (pc <= 1))
    assert np.all(big >= small)
    assert pc[:, 19:21].min() > 0.5  # the edge
    assert pc[:, 8:12].max() < 0.1  # flat, away from the edge and from its periodic copy


def test_qp_in_unit_range_and_symmetric_in_the_sources():
    ir, vi = _scene(1), _scene(2)
    fused = (ir + vi) / 2
    q = zhao_qp(fused, ir, vi)
    assert 0 < q <= 1
    assert zhao_qp(fused, vi, ir) == pytest.approx(q, rel=1e-12)  # ties of PC between sources only


def test_qp_prefers_the_better_fusion():
    ir, vi = _scene(1), _scene(2)
    good = zhao_qp((ir + vi) / 2, ir, vi)
    blurred = zhao_qp(np.full_like(ir, ir.mean()) + np.random.default_rng(3).normal(0, 4, ir.shape), ir, vi)
    assert good > blurred


def test_compute_refuses_below_two_pixels():
    with pytest.raises(Exception, match="Qp"):
        compute(np.zeros((1, 5)), np.zeros((1, 5)), np.zeros((1, 5)), metrics=["Qp"])


def test_same_value_on_any_number_of_threads_and_from_the_cache():
    from causalfuse.metrics import _filters, set_default_threads

    ir, vi = _scene(4), _scene(5)
    fused = (ir + vi) / 2
    values = []
    try:
        for threads in (1, 2, 3):
            set_default_threads(threads)
            _filters.source_cache.clear()
            values += [zhao_qp(fused, ir, vi), zhao_qp(fused, ir, vi)]  # the second with the sources' maps kept
    finally:
        set_default_threads(None)
    assert len(set(values)) == 1
