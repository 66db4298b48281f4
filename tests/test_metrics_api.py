"""causalfuse.metrics.compute: input types and ranges, colour modes, errors."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from causalfuse.errors import CausalFuseError
from causalfuse.io import rgb2gray_matlab
from causalfuse.metrics import DEFAULT_METRICS, compute, get_metric, list_metrics
from causalfuse.metrics._checks import as_image255
from causalfuse.metrics.gradient import spatial_frequency

ALL_NAMES = {"AG", "CE", "EI", "EN", "MI", "PSNR", "Qabf", "Qcb", "Qcv", "RMSE", "SF", "SSIM", "SD", "VIF", "SCD", "CC", "Nabf", "MS-SSIM"}


def _colour_triplet(h=90, w=84, seed=0):
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:h, 0:w]
    base = 127 + 100 * np.sin(xx / 7.0) * np.cos(yy / 9.0)
    vi = np.clip(base[..., None] + rng.normal(0, 15, (h, w, 3)) + [0, 20, -20], 0, 255).astype(np.uint8)
    ir = np.clip(255 - base + rng.normal(0, 10, (h, w)), 0, 255).astype(np.uint8)
    fused = ((vi.astype(int) + ir[..., None]) // 2).astype(np.uint8)
    return fused, ir, vi


def test_default_metrics_are_the_papers_four():
    f, ir, vi = _colour_triplet()
    out = compute(f, ir, vi)
    assert list(out) == list(DEFAULT_METRICS) == ["MI", "VIF", "Qabf", "SSIM"]
    assert all(math.isfinite(v) for v in out.values())


def test_all_names_are_registered():
    present = set(list_metrics())
    mine = ALL_NAMES - {"Qcb", "Qcv", "Nabf", "MS-SSIM"}
    assert mine <= present
    f, ir, vi = _colour_triplet()
    out = compute(f, ir, vi, "all")
    in_groups = {name for name in present if get_metric(name).groups}  # addressed by name or group, not by "all"
    assert set(out) == present - in_groups and len(out) == 18


def test_gray_mode_is_rgb2gray_of_all_three():
    f, ir, vi = _colour_triplet()
    names = ["MI", "VIF", "Qabf", "SSIM", "EN", "SF"]
    direct = {n: get_metric(n).fn(*(rgb2gray_matlab(x).astype(float) for x in (f, ir, vi))) for n in names}
    assert compute(f, ir, vi, names, colour="gray") == pytest.approx(direct, rel=1e-12)


def test_vifb_mode_averages_channels_and_reuses_grey_ir():
    f, ir, vi = _colour_triplet()
    for name in ["MI", "Qabf", "SSIM", "CE"]:
        fn = get_metric(name).fn
        want = np.mean([fn(f[..., k].astype(float), ir.astype(float), vi[..., k].astype(float)) for k in range(3)])
        assert compute(f, ir, vi, [name], colour="vifb")[name] == pytest.approx(want, rel=1e-12)
    # Spatial frequency: the three channels side by side, once (seams included).
    side = np.concatenate([f[..., k] for k in range(3)], axis=1).astype(float)
    assert compute(f, ir, vi, ["SF"], colour="vifb")["SF"] == pytest.approx(spatial_frequency(side), rel=1e-12)


def test_grey_fused_in_vifb_mode_uses_grey_sources():
    f, ir, vi = _colour_triplet()
    fg = rgb2gray_matlab(f)
    assert compute(fg, ir, vi, colour="vifb") == pytest.approx(compute(fg, ir, vi, colour="gray"), rel=1e-12)


def test_float_and_tensor_inputs_equal_uint8():
    f, ir, vi = _colour_triplet()
    want = compute(f, ir, vi, ["MI", "EN", "CE", "VIF", "SSIM"], colour="vifb")
    as_float = [x.astype(np.float32) / 255 for x in (f, ir, vi)]
    assert compute(*as_float, ["MI", "EN", "CE", "VIF", "SSIM"], colour="vifb") == want
    as_tensor = [torch.from_numpy(x).permute(2, 0, 1) if x.ndim == 3 else torch.from_numpy(x) for x in as_float]
    as_tensor[0] = as_tensor[0][None]  # (1, 3, H, W)
    assert compute(*as_tensor, ["MI", "EN", "CE", "VIF", "SSIM"], colour="vifb") == want
    as_255 = [x.astype(np.float64) for x in (f, ir, vi)]
    assert compute(*as_255, ["MI", "EN", "CE", "VIF", "SSIM"], colour="vifb", data_range=255) == want


def test_uint16_is_scaled_not_truncated():
    x = np.array([[0, 257, 32768, 65535]], dtype=np.uint16)
    img, integral = as_image255(x, "x")
    np.testing.assert_allclose(img, [[0, 1, 32768 * 255 / 65535, 255]], rtol=1e-12)
    assert not integral and img[0, 2] % 1 > 0.4  # 127.5..., kept fractional
    f, ir, vi = _colour_triplet()
    wide = [x.astype(np.uint16) * 257 for x in (f, ir, vi)]  # exact 8-bit levels in 16 bits
    assert compute(*wide, colour="vifb") == pytest.approx(compute(f, ir, vi, colour="vifb"), rel=1e-12)
    # a 12-bit-like image in a uint16 container is dark, not saturated: values scale by 255/65535
    dark, _ = as_image255(np.full((4, 4), 4095, np.uint16), "x")
    assert dark.max() == pytest.approx(4095 * 255 / 65535)


def test_size_mismatch_names_the_shapes():
    f, ir, vi = _colour_triplet()
    with pytest.raises(CausalFuseError, match=r"sizes differ: fused \(90, 84\), ir \(90, 83\)"):
        compute(f, ir[:, :83], vi)


@pytest.mark.parametrize(
    "bad, match",
    [
        (np.full((8, 8), 2.0), r"fused: float values must lie in \[0, 1\]"),
        (np.full((8, 8), np.nan), "NaN"),
        (np.zeros((3, 8, 8), np.uint8), "channels first"),
        (np.zeros((8, 8), np.int32), "data_range"),
        ("not an image", "expected a NumPy array"),
        (np.zeros((8, 8, 5), np.uint8), r"shape \(H, W\)"),
    ],
)
def test_bad_inputs_are_refused(bad, match):
    ok = np.zeros((8, 8), np.uint8)
    with pytest.raises(CausalFuseError, match=match):
        compute(bad, ok, ok, ["EN"])


def test_unknown_metric_lists_the_available_ones():
    f, ir, vi = _colour_triplet()
    with pytest.raises(CausalFuseError, match=r"unknown metric 'MIX'; available: .*MI.*SSIM"):
        compute(f, ir, vi, ["MI", "MIX"])
    with pytest.raises(CausalFuseError, match="colour must be"):
        compute(f, ir, vi, colour="rgb")  # type: ignore[arg-type]


def test_constant_images_give_nan_not_exceptions():
    c = np.full((90, 84), 77, np.uint8)
    out = compute(c, c, c, "all")
    assert math.isnan(out["CC"]) and math.isnan(out["SCD"])
    assert out["EN"] == 0.0 and out["SD"] == 0.0 and out["MI"] == 0.0
    assert out["SSIM"] == pytest.approx(2.0) and out["VIF"] == pytest.approx(1.0)


def test_threads_give_the_same_values():
    f, ir, vi = _colour_triplet()
    one = compute(f, ir, vi, "all", colour="vifb", threads=1)
    two = compute(f, ir, vi, "all", colour="vifb", threads=3)
    assert list(one) == list(two)
    assert all(one[k] == two[k] or (math.isnan(one[k]) and math.isnan(two[k])) for k in one)


def test_a_metric_run_by_compute_on_the_calling_thread_gets_its_threads(monkeypatch):
    import dataclasses
    import threading

    from causalfuse.metrics import _registry, _threads

    seen = []
    info = _registry.get_metric("CC")

    def spy(f, ir, vi):
        seen.append((threading.current_thread() is threading.main_thread(), _threads.metric_threads()))
        return info.fn(f, ir, vi)

    monkeypatch.setitem(_registry._METRICS, "cc", dataclasses.replace(info, fn=spy))
    f, ir, vi = _colour_triplet()
    for threads in (1, 3):
        compute(f, ir, vi, ["CC"], threads=threads)  # one task: run on this thread
    compute(f, ir, vi, ["CC", "EN"], threads=2)  # in worker threads
    assert seen == [(True, 1), (True, 3), (False, 1)]


def test_source_cache_is_a_pure_speed_up():
    from causalfuse.metrics._filters import source_cache

    f, ir, vi = _colour_triplet()
    source_cache.clear()
    cold = compute(f, ir, vi, ["SSIM", "VIF"], colour="vifb", threads=1)
    warm = compute(f, ir, vi, ["SSIM", "VIF"], colour="vifb", threads=1)
    assert cold == warm
    other = compute(f[::-1].copy(), ir, vi, ["SSIM", "VIF"], colour="vifb", threads=1)  # same sources, other fused
    source_cache.clear()
    assert other == compute(f[::-1].copy(), ir, vi, ["SSIM", "VIF"], colour="vifb", threads=1)


# Smallest height and width at which each windowed metric has a value, found by
# running the functions (which return the original's NaN or -inf below it) on
# every size from 1 to 70 pixels; every other metric is defined from 1 pixel on.
MIN_SIZES = {
    "AG": 2, "SSIM": 11, "VIF": 41, "MS-SSIM": 44,
    "FMI_pixel": 3, "FMI_dct": 3, "FMI_edge": 3, "FMI_gradient": 3,
    "Qs": 11, "Qw": 11, "Qe": 11, "Qy": 11, "Qc": 11, "Qp": 2,
}  # fmt: skip  (Qp: below 2 pixels its frequency grid divides 0 by 0)


def test_registry_states_each_metrics_minimum_size():
    assert {name: get_metric(name).min_size for name in list_metrics() if get_metric(name).min_size > 1} == MIN_SIZES


def test_an_image_smaller_than_the_ssim_window_is_refused_by_name():
    f = np.full((9, 9), 100, np.uint8)
    assert math.isnan(get_metric("SSIM").fn(f, f, f))  # what the original gives: the mean of an empty map
    with pytest.raises(CausalFuseError, match=r"9 x 9 pixels .* too small for SSIM \(at least 11 x 11\)"):
        compute(f, f, f, ["MI", "SSIM"])
    assert compute(f, f, f, ["MI", "EN"]) == {"MI": 0.0, "EN": 0.0}  # metrics without windows still score it


@pytest.mark.parametrize("name", sorted(MIN_SIZES))
def test_each_metric_is_refused_just_below_its_minimum_and_finite_at_it(name):
    size = MIN_SIZES[name]
    for shape in [(size, 60), (60, size)]:
        f, ir, vi = _colour_triplet(*shape)
        assert math.isfinite(compute(f, ir, vi, [name])[name])
    for shape in [(size - 1, 60), (60, size - 1)]:
        f, ir, vi = _colour_triplet(*shape)
        with pytest.raises(CausalFuseError, match=rf"too small for {name} \(at least {size} x {size}\)"):
            compute(f, ir, vi, [name], colour="vifb")
        # the function alone keeps the original's answer for such sizes
        assert not math.isfinite(get_metric(name).fn(*(x if x.ndim == 2 else x[..., 0] for x in (f, ir, vi))))


def test_groups_select_metrics_and_all_keeps_its_meaning(monkeypatch):
    from causalfuse.metrics import _registry, list_groups, register_metric, resolve_metrics

    before = [m.name for m in resolve_metrics("all")]
    assert len(before) == 18
    monkeypatch.setattr(_registry, "_METRICS", dict(_registry._METRICS))

    @register_metric("Zz1", higher_is_better=True, reference="test", groups=("extra",))
    def zz1(fused, ir, vi):
        return 1.0

    assert [m.name for m in resolve_metrics("all")] == before, "a metric with a group is not part of all"
    assert list_groups()["extra"] == ["Zz1"]
    assert [m.name for m in resolve_metrics("MI,EXTRA,mi")] == ["MI", "Zz1"]
