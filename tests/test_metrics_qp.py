"""Qp (Zhao et al.) and its phase congruency: properties and the compiled kernel against NumPy."""

from __future__ import annotations

import numpy as np
import pytest

from causalfuse.metrics import compute, list_groups, list_metrics
from causalfuse.metrics._kernels import phase_orientation_sums
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


def test_kernel_equals_numpy():
    rng = np.random.default_rng(0)
    eo = rng.normal(size=(4, 9, 11)) + 1j * rng.normal(size=(4, 9, 11))
    sum_an, max_an, energy, an0_sq = phase_orientation_sums(eo)
    even, odd, amp = eo.real, eo.imag, np.abs(eo)
    x = np.sqrt(even.sum(0) ** 2 + odd.sum(0) ** 2) + 1e-4
    me, mo = even.sum(0) / x, odd.sum(0) / x
    np.testing.assert_allclose(sum_an, amp.sum(0), rtol=1e-13)
    np.testing.assert_allclose(max_an, amp.max(0), rtol=1e-13)
    np.testing.assert_allclose(energy, (even * me + odd * mo - np.abs(even * mo - odd * me)).sum(0), rtol=1e-12)
    np.testing.assert_allclose(an0_sq, amp[0] ** 2, rtol=1e-13)


@pytest.mark.parametrize("shape", [(16, 20), (15, 21)])
def test_filter_bank_zero_at_dc_and_low_pass_symmetric(shape):
    filters, noise = _filter_bank(*shape)
    assert filters.shape == (6, 4) + shape
    assert np.all(filters[:, :, 0, 0] == 0)
    assert np.all(filters >= 0) and np.all(np.isfinite(noise)) and np.all(noise > 0)


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
