import math

import pytest
import torch

from causalfuse.errors import CausalFuseError
from causalfuse.losses import (
    FusionLoss,
    LossWeights,
    fusion_loss,
    gaussian_blur,
    gradient_loss,
    intensity_loss,
    intensity_target,
    sobel_magnitude,
    ssim,
    ssim_loss,
)


def _rand(*shape, seed=0, dtype=torch.float32, device="cpu"):
    g = torch.Generator().manual_seed(seed)
    return torch.rand(*shape, generator=g, dtype=dtype).to(device)


def test_identity_cases_are_zero(device):
    x = _rand(2, 1, 24, 24, device=device)
    # fusing an image with itself, the image is the perfect result
    terms = fusion_loss(x, x, x)
    for name in ("loss", "intensity", "gradient", "ssim"):
        assert float(terms[name]) == pytest.approx(0.0, abs=1e-6), name
    assert float(ssim(x, x).min()) == pytest.approx(1.0, abs=1e-6)


def test_max_of_sources_has_zero_intensity_loss(device):
    ir, vi = _rand(1, 1, 16, 16, seed=1, device=device), _rand(1, 1, 16, 16, seed=2, device=device)
    assert float(intensity_loss(torch.maximum(ir, vi), ir, vi)) == 0.0
    assert float(intensity_loss(torch.zeros_like(ir), ir, vi)) == pytest.approx(float(torch.maximum(ir, vi).mean()))


def test_sobel_by_hand(device):
    # a vertical step edge: x = 0 for columns < 3, 1 from column 3 on
    x = torch.zeros(1, 1, 5, 6, device=device)
    x[..., 3:] = 1.0
    g = sobel_magnitude(x)[0, 0]
    # |Sobel_x| = 1 + 2 + 1 = 4 on the columns either side of the edge, 0 elsewhere
    assert torch.equal(g[:, 2], torch.full((5,), 4.0, device=device))
    assert torch.equal(g[:, 3], torch.full((5,), 4.0, device=device))
    assert float(g[:, [0, 1, 4, 5]].abs().sum()) == 0.0
    # constant images have no gradient
    assert float(sobel_magnitude(torch.full((1, 1, 7, 7), 0.3, device=device)).abs().max()) == 0.0


def test_gradient_loss_by_hand(device):
    ir = torch.zeros(1, 1, 5, 6, device=device)
    ir[..., 3:] = 1.0
    vi = torch.zeros_like(ir)
    flat = torch.full_like(ir, 0.5)
    # target = |grad IR| (4 on 2 of 6 columns); a flat fusion misses all of it
    assert float(gradient_loss(flat, ir, vi)) == pytest.approx(4.0 * 2 / 6)
    assert float(gradient_loss(ir, ir, vi)) == 0.0


def test_ssim_by_hand_constant_images(device):
    # constant images a, b: variances and covariance are 0, so
    # SSIM = (2ab + C1) / (a^2 + b^2 + C1)
    a, b = 0.2, 0.7
    c1 = 0.01**2
    x = torch.full((1, 1, 11, 11), a, dtype=torch.float64, device=device)
    y = torch.full((1, 1, 11, 11), b, dtype=torch.float64, device=device)
    expected = (2 * a * b + c1) / (a * a + b * b + c1)
    assert float(ssim(x, y)) == pytest.approx(expected, rel=1e-10)
    assert float(ssim_loss(x, x, y)) == pytest.approx(1 - (1 + expected) / 2, rel=1e-10)


def test_weights_combine_terms(device):
    f, ir, vi = (_rand(2, 1, 16, 16, seed=seed, device=device) for seed in (3, 4, 5))
    w = LossWeights(intensity=0.5, gradient=3.0, ssim=2.0)
    t = FusionLoss(w)(f, ir, vi)
    expected = 0.5 * t["intensity"] + 3.0 * t["gradient"] + 2.0 * t["ssim"]
    assert math.isclose(float(t["loss"]), float(expected), rel_tol=1e-6)


def test_gradcheck(device):
    # a small SSIM window keeps the numerical Jacobian cheap; the code path is the same
    ir = _rand(1, 1, 8, 8, seed=6, dtype=torch.float64, device=device)
    vi = _rand(1, 1, 8, 8, seed=7, dtype=torch.float64, device=device)
    f = _rand(1, 1, 8, 8, seed=8, dtype=torch.float64, device=device).requires_grad_(True)
    assert torch.autograd.gradcheck(lambda x: fusion_loss(x, ir, vi, window=5)["loss"], (f,), eps=1e-6, atol=1e-5, fast_mode=True)


def test_bad_shapes_refused(device):
    x = _rand(1, 1, 16, 16, device=device)
    with pytest.raises(CausalFuseError, match="differ in shape"):
        fusion_loss(x, x, _rand(1, 1, 16, 17, device=device))
    with pytest.raises(CausalFuseError, match=r"\(B, 1, H, W\)"):
        fusion_loss(*(_rand(1, 3, 16, 16, device=device) for _ in range(3)))
    with pytest.raises(CausalFuseError, match="at least 11 x 11"):
        fusion_loss(*(_rand(1, 1, 8, 8, device=device) for _ in range(3)))


def test_intensity_target_mean_and_max(device):
    g = torch.Generator().manual_seed(3)
    ir, vi, f = (torch.rand(2, 1, 16, 16, generator=g).to(device) for _ in range(3))
    assert math.isclose(float(intensity_loss(f, ir, vi)), float((f - torch.maximum(ir, vi)).abs().mean()), rel_tol=1e-6)
    assert math.isclose(float(intensity_loss(f, ir, vi, target="mean")), float((f - (ir + vi) / 2).abs().mean()), rel_tol=1e-6)
    w = LossWeights(intensity=1.0, gradient=0.0, ssim=0.0, intensity_target="mean")
    assert math.isclose(float(fusion_loss(f, ir, vi, weights=w)["loss"]), float((f - (ir + vi) / 2).abs().mean()), rel_tol=1e-6)
    with pytest.raises(CausalFuseError, match="intensity target must be one of max, mean"):
        intensity_loss(f, ir, vi, target="min")


def test_gaussian_blur_matches_scipy_and_keeps_constants(device):
    ndimage = pytest.importorskip("scipy.ndimage")
    x = _rand(1, 1, 40, 48, seed=5, dtype=torch.float64, device=device)
    # torch's "reflect" padding is scipy's "mirror"; radius ceil(3 sigma) is scipy's truncate=3 for these sigmas
    for sigma in (1.0, 2.5, 5.0):
        ref = ndimage.gaussian_filter(x[0, 0].cpu().numpy(), sigma, mode="mirror", truncate=3.0)
        assert torch.allclose(gaussian_blur(x, sigma)[0, 0].cpu(), torch.from_numpy(ref), atol=1e-12)
    c = torch.full((2, 1, 33, 33), 0.3, device=device)
    assert torch.allclose(gaussian_blur(c, 5.0), c, atol=1e-6)
    with pytest.raises(CausalFuseError, match="sigma 5.0 needs images larger than 15 pixels"):
        gaussian_blur(torch.zeros(1, 1, 15, 40, device=device), 5.0)


def test_detail_sum_target_keeps_both_sources_details(device):
    ir = _rand(2, 1, 40, 40, seed=1, dtype=torch.float64, device=device) * 0.1 + 0.3
    vi = _rand(2, 1, 40, 40, seed=2, dtype=torch.float64, device=device) * 0.1 + 0.4
    t = intensity_target(ir, vi, "detail-sum", detail_sigma=2.0)
    base_ir, base_vi = gaussian_blur(ir, 2.0), gaussian_blur(vi, 2.0)
    assert 0 < float(t.min()) and float(t.max()) < 1  # no clipping happens here
    # mean brightness of the two bases, each source's detail at full contrast
    assert torch.allclose(t, (base_ir + base_vi) / 2 + (ir - base_ir) + (vi - base_vi), atol=1e-12)
    # constant sources: no detail, so the target is their mean
    a, b = torch.full((1, 1, 20, 20), 0.2, device=device), torch.full((1, 1, 20, 20), 0.6, device=device)
    assert torch.allclose(intensity_target(a, b, "detail-sum"), torch.full_like(a, 0.4), atol=1e-6)
    # clipped to [0, 1] where details add up beyond the range
    hi = torch.zeros(1, 1, 32, 32, device=device)
    hi[..., 16, 16] = 1.0
    clipped = intensity_target(hi, hi, "detail-sum", detail_sigma=2.0)
    assert float(clipped.max()) == 1.0 and float(clipped.min()) == 0.0
    w = LossWeights(intensity=1.0, gradient=0.0, ssim=0.0, intensity_target="detail-sum", detail_sigma=2.0)
    assert float(fusion_loss(t.float(), ir.float(), vi.float(), weights=w)["loss"]) < 1e-6


def _ssim_2d_window(x, y, window=11, sigma=1.5):
    """SSIM written out with one 11 x 11 window convolution and PyTorch's own autograd (the reference)."""
    r = torch.arange(window, dtype=x.dtype, device=x.device) - (window - 1) / 2
    g = torch.exp(-(r**2) / (2 * sigma**2))
    g = g / g.sum()
    w = (g[:, None] * g[None, :])[None, None]
    stack = torch.cat([x, y, x * x, y * y, x * y], dim=1)
    m = torch.nn.functional.conv2d(stack.flatten(0, 1)[:, None], w).view(x.shape[0], 5, *(s - window + 1 for s in x.shape[-2:]))
    mx, my = m[:, 0], m[:, 1]
    vx, vy, cxy = m[:, 2] - mx * mx, m[:, 3] - my * my, m[:, 4] - mx * my
    c1, c2 = 0.01**2, 0.03**2
    return (((2 * mx * my + c1) * (2 * cxy + c2)) / ((mx * mx + my * my + c1) * (vx + vy + c2))).flatten(1).mean(1)


@pytest.mark.parametrize("grad_of", ["x", "both"])
def test_ssim_and_its_gradient_equal_the_2d_window_with_autograd(device, grad_of):
    """The separable window and its hand-written adjoint: float64 values and gradients to 1e-12 of the literal form."""
    x = _rand(2, 1, 23, 30, seed=5, dtype=torch.float64, device=device).requires_grad_()
    y = (_rand(2, 1, 23, 30, seed=6, dtype=torch.float64, device=device) * 0.5 + 0.2).requires_grad_(grad_of == "both")
    weights = torch.tensor([0.3, -1.7], dtype=torch.float64, device=device)
    ours, ref = ssim(x, y), _ssim_2d_window(x, y)
    torch.testing.assert_close(ours, ref, rtol=0, atol=1e-12)
    inputs = [x, y] if grad_of == "both" else [x]
    got = torch.autograd.grad((ours * weights).sum(), inputs)
    want = torch.autograd.grad((ref * weights).sum(), inputs)
    for a, b in zip(got, want):
        assert float(b.abs().max()) > 1e-3
        torch.testing.assert_close(a, b, rtol=0, atol=1e-12)


def test_ssim_against_the_target_instead_of_the_sources(device):
    ir = _rand(2, 1, 32, 32, seed=3, device=device) * 0.2 + 0.3
    vi = _rand(2, 1, 32, 32, seed=4, device=device) * 0.2 + 0.4
    w = LossWeights(intensity=0.0, gradient=0.0, ssim=1.0, intensity_target="detail-sum", detail_sigma=2.0, ssim_reference="target")
    t = intensity_target(ir, vi, "detail-sum", detail_sigma=2.0)
    assert float(fusion_loss(t, ir, vi, weights=w)["loss"]) < 1e-5  # the target itself is a perfect match
    f = 0.5 * (ir + vi)
    assert math.isclose(float(fusion_loss(f, ir, vi, weights=w)["ssim"]), 1 - float(ssim(f, t).mean()), rel_tol=1e-6)
    # the default compares with each source: the sum of both sources' details costs there, not against the target
    sources = LossWeights(intensity=0.0, gradient=0.0, ssim=1.0, intensity_target="detail-sum", detail_sigma=2.0)
    assert float(fusion_loss(t, ir, vi, weights=sources)["loss"]) > 0.1
    with pytest.raises(CausalFuseError, match="ssim_reference must be one of sources, target, got 'fused'"):
        LossWeights.from_dict({"ssim_reference": "fused"})
    assert LossWeights.from_dict({"intensity": 1}).ssim_reference == "sources"  # configurations written before the option


def test_loss_weights_from_dict_fills_legacy_target_and_refuses_bad_values():
    assert LossWeights.from_dict({"intensity": 1, "gradient": 2, "ssim": 0.5}).intensity_target == "max"
    assert LossWeights.from_dict({"intensity_target": "mean", "gradient": "5"}) == LossWeights(gradient=5.0, intensity_target="mean")
    with pytest.raises(CausalFuseError, match="intensity_target must be one of max, mean, detail-sum, got 'median'"):
        LossWeights.from_dict({"intensity_target": "median"})
    with pytest.raises(CausalFuseError, match="unknown loss weight keys: colour"):
        LossWeights.from_dict({"colour": 1})


def test_gradient_against_the_target_instead_of_the_sources(device):
    ir = _rand(2, 1, 32, 32, seed=5, device=device) * 0.2 + 0.3
    vi = _rand(2, 1, 32, 32, seed=6, device=device) * 0.2 + 0.4
    w = LossWeights(intensity=0.0, gradient=1.0, ssim=0.0, intensity_target="detail-sum", detail_sigma=2.0, gradient_reference="target")
    t = intensity_target(ir, vi, "detail-sum", detail_sigma=2.0)
    assert float(fusion_loss(t, ir, vi, weights=w)["loss"]) < 1e-6  # the target's own gradient is a perfect match
    f = 0.5 * (ir + vi)
    expected = (sobel_magnitude(f) - sobel_magnitude(t)).abs().mean()
    assert math.isclose(float(fusion_loss(f, ir, vi, weights=w)["gradient"]), float(expected), rel_tol=1e-6)
    # against the sources' larger gradient, the sum of both sources' details costs
    sources = LossWeights(intensity=0.0, gradient=1.0, ssim=0.0, intensity_target="detail-sum", detail_sigma=2.0)
    assert float(fusion_loss(t, ir, vi, weights=sources)["loss"]) > 0.05
    with pytest.raises(CausalFuseError, match="gradient_reference must be one of sources, target, got 'max'"):
        LossWeights.from_dict({"gradient_reference": "max"})
    assert LossWeights.from_dict({"intensity": 1}).gradient_reference == "sources"  # configurations written before the option
