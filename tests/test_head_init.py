"""The least-squares start of the reconstruction conv (``train.head_init = "lstsq"``).

Tiny synthetic pairs and randomly initialised (real, 256-channel) encoders:
the features must be exactly the conv's inputs, the solve must recover a
known linear map, and the fit must bring the network's output closer to its
intensity target than the default start, deterministically for a seed.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from causalfuse.data.dataset import PairedDataset
from causalfuse.errors import CausalFuseError
from causalfuse.losses import LossWeights, intensity_target
from causalfuse.models.net import CausalFusionNet, NetConfig
from causalfuse.train import TrainConfig, train
from causalfuse.train.head_init import FIT_EPOCH, NormalEquations, _tap_features, fit_reconstruction

from .test_train import SMALL_NET, _cfg, tiny  # noqa: F401  (the module fixture of tiny pairs)


def _net(seed: int = 0, kernel: int = 3) -> CausalFusionNet:
    torch.manual_seed(seed)
    return CausalFusionNet(NetConfig(**SMALL_NET, use_baffm=False, reconstruction_kernel=kernel)).eval()


@pytest.mark.parametrize("kernel", [3, 5])
def test_features_are_the_conv_inputs(kernel):
    """features @ conv weights + bias equals the reconstruction's pre-tanh output, pixel by pixel (any kernel width)."""
    net = _net(kernel=kernel)
    g = torch.Generator().manual_seed(1)
    ir, vi = torch.rand(1, 1, 12, 15, generator=g), torch.rand(1, 1, 12, 15, generator=g)
    with torch.no_grad():
        torch.nn.init.normal_(net.reconstruction.conv.weight, std=0.05, generator=g)
        z_ir, z_vi = net.forward_features(ir, vi)
        weights = torch.rand(1, 4, 12, 15, generator=g)  # any per-pixel weights, not only the start's
        fused = net.reconstruction.forward_reference(z_ir, z_vi, weights)
        ys, xs = torch.meshgrid(torch.arange(12), torch.arange(15), indexing="ij")
        x = _tap_features(net.reconstruction.weighted_codes(z_ir, z_vi, weights), ys.flatten(), xs.flatten(), kernel)
        conv = net.reconstruction.conv
        pre = x @ torch.cat([conv.weight.flatten(), conv.bias])
    # the image is (tanh(pre) + 1) / 2; borders included (reflection padding)
    assert torch.allclose((torch.tanh(pre) + 1) / 2, fused.flatten(), rtol=0, atol=1e-5)


def test_solve_recovers_a_linear_map_and_reports_the_residual():
    rng = np.random.default_rng(0)
    x = torch.from_numpy(np.c_[rng.standard_normal((500, 6)), np.ones(500)])
    w_true = torch.tensor([0.5, -1.0, 2.0, 0.0, 0.25, 3.0, -0.7], dtype=torch.float64)
    noise = torch.from_numpy(0.1 * rng.standard_normal(500))
    y = x @ w_true + noise
    eq = NormalEquations(x.T @ x, x.T @ y, float(y @ y), 500)
    w, rmse = eq.solve(0.0)
    w_ls = torch.linalg.lstsq(x, y).solution
    assert torch.allclose(w, w_ls, atol=1e-10)
    assert rmse == pytest.approx(float((x @ w_ls - y).pow(2).mean().sqrt()), rel=1e-9)
    assert torch.allclose(w, w_true, atol=0.05)
    # the ridge shrinks the weights, never the bias
    w_r, rmse_r = eq.solve(10.0)
    assert w_r[:-1].norm() < w[:-1].norm() and rmse_r > rmse
    assert abs(float(w_r[-1]) - float(y.mean())) < abs(float(w[-1]) - float(y.mean())) + 0.5


@pytest.mark.parametrize("target", ["detail-sum", "max"])
def test_fit_brings_the_output_to_the_target(tiny, target):  # noqa: F811
    loss = LossWeights.from_dict({"intensity_target": target, "detail_sigma": 2.0})
    data = PairedDataset(tiny["data"], crop=16, seed=0, cache=True)
    # the crops the fit samples (every pair once, in another order)
    items = [data[(FIT_EPOCH, i)] for i in range(len(data))]
    ir, vi = torch.stack([it["ir"] for it in items]), torch.stack([it["vi"] for it in items])
    t = intensity_target(ir, vi, target, detail_sigma=2.0)
    net = _net()
    with torch.no_grad():
        before = float((net(ir, vi) - t).abs().mean())
    fit = fit_reconstruction(net, data, loss, crops=len(data), pixels=256, ridge=1e-4, seed=3)
    with torch.no_grad():
        after = float((net(ir, vi) - t).abs().mean())
    assert fit.samples == len(data) * 256 and fit.rmse > 0
    assert after < 0.7 * before, (before, after)
    assert not net.training

    # the same seed gives the same weights, another seed other pixels
    again = _net()
    fit_reconstruction(again, data, loss, crops=len(data), pixels=256, ridge=1e-4, seed=3)
    assert torch.equal(again.reconstruction.conv.weight, net.reconstruction.conv.weight)
    other = _net()
    fit_reconstruction(other, data, loss, crops=len(data), pixels=128, ridge=1e-4, seed=4)
    assert not torch.equal(other.reconstruction.conv.weight, net.reconstruction.conv.weight)


def test_training_with_the_fitted_start_resumes_exactly(tiny, tmp_path):  # noqa: F811
    kw = dict(head_init="lstsq", head_init_crops=6, steps=3)
    straight = train(_cfg(tiny, tmp_path / "a", **kw))
    first = train(_cfg(tiny, tmp_path / "b", **kw), stop_after=1)
    second = train(_cfg(tiny, tmp_path / "b", **kw), resume=True)  # loads its state, does not fit again
    assert np.allclose(first.losses + second.losses, straight.losses, rtol=0, atol=1e-6)
    # it starts closer to the target than the default start
    plain = train(_cfg(tiny, tmp_path / "c", steps=1))
    assert straight.losses[0] < plain.losses[0]


def test_bad_head_init_settings_are_refused(tiny, tmp_path):  # noqa: F811
    with pytest.raises(CausalFuseError, match="head_init must be random or lstsq"):
        _cfg(tiny, tmp_path / "x", head_init="pca").validate()
    with pytest.raises(CausalFuseError, match="head_init_crops and head_init_pixels"):
        _cfg(tiny, tmp_path / "x", head_init_crops=0).validate()
    with pytest.raises(CausalFuseError, match="head_init_ridge >= 0"):
        _cfg(tiny, tmp_path / "x", head_init_ridge=-1.0).validate()
    assert TrainConfig().head_init == "random"  # the first recipe stays the default
