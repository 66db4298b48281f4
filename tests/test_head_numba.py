"""The fusion head's inference pass in Numba's loops (causalfuse.models.head_numba) against the modules."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from causalfuse.models import head_numba
from causalfuse.models.net import CausalFusionNet, NetConfig


def head_net(use_baffm: bool = True, normalise: bool = True, prior: str = "uniform", seed: int = 0) -> CausalFusionNet:
    """The full-size head (256-channel codes, 25 prototypes) with every parameter perturbed so the weights vary."""
    torch.manual_seed(seed)
    net = CausalFusionNet(NetConfig(use_baffm=use_baffm, normalise_expectation=normalise, prior=prior)).eval()
    n, d = net.config.dict_size, net.config.dict_dim
    freq = {"ir_frequencies": torch.rand(n) + 0.1, "vi_frequencies": torch.rand(n) + 0.1}
    net.set_dictionaries(torch.randn(n, d), torch.randn(n, d), **freq)
    with torch.no_grad():
        for p in (*net.baffm.parameters(), *net.reconstruction.parameters()):
            p.add_(torch.randn_like(p) * 0.3)
    return net


def codes(b: int, h: int, w: int, seed: int = 1, scale: float = 0.5) -> list[torch.Tensor]:
    """Two channels-last (B, 256, H, W) codes, as the LRR encoders' loops return them."""
    g = torch.Generator().manual_seed(seed)
    return [(torch.randn(b, h, w, 256, generator=g) * scale).permute(0, 3, 1, 2) for _ in range(2)]


@pytest.mark.parametrize(
    "use_baffm, normalise, prior",
    [(True, True, "uniform"), (True, False, "uniform"), (True, True, "empirical"), (False, True, "uniform")],
)
@pytest.mark.parametrize("b, h, w", [(1, 2, 2), (2, 7, 5), (1, 33, 300)])
@pytest.mark.parametrize("threads", [1, 2])
def test_the_compiled_head_gives_the_modules_image(use_baffm, normalise, prior, b, h, w, threads, monkeypatch):
    net = head_net(use_baffm, normalise, prior)
    z_ir, z_vi = codes(b, h, w)
    monkeypatch.setattr(torch, "get_num_threads", lambda: threads)
    with torch.no_grad():
        weights = net.fusion_weights(z_ir, z_vi)
        want = net.reconstruction(z_ir, z_vi, weights)
        got = net._forward_head_numba(z_ir, z_vi)
    assert got.shape == want.shape == (b, 1, h, w) and got.dtype == torch.float32
    # float32 rounding of pre-tanh sums of tens (these weights are far larger than trained ones)
    torch.testing.assert_close(got, want, rtol=0, atol=1e-5)
    # the comparison means something: weights far from uniform, an image far from constant
    assert weights.std() > 0.05 and want.std() > 0.02


def test_large_logits_and_saturated_output_stay_finite():
    """Logits of hundreds (a softmax that overflows without its maximum taken out) and a tanh in saturation."""
    net = head_net()
    z_ir, z_vi = codes(1, 9, 11, scale=40.0)
    with torch.no_grad():
        want = net.reconstruction(z_ir, z_vi, net.fusion_weights(z_ir, z_vi))
        got = net._forward_head_numba(z_ir, z_vi)
    assert torch.isfinite(got).all()
    assert ((want < 1e-3) | (want > 1 - 1e-3)).float().mean() > 0.5  # mostly saturated
    torch.testing.assert_close(got, want, rtol=0, atol=1e-5)


def test_the_exponential_against_numpy_over_its_range():
    x = np.concatenate([np.linspace(-87.0, 88.0, 200_001), np.linspace(-1.0, 1.0, 20_001), [0.0, -0.0]]).astype(np.float32)
    got = x.copy()
    head_numba._exp(got, len(got), np.empty(len(got), np.int32))
    want = np.exp(x.astype(np.float64))
    rel = np.abs(got.astype(np.float64) - want) / want
    assert rel.max() < 4e-7  # two float32 ulps
    # beyond the range: clamped, finite, monotone
    out = np.array([-200.0, -88.0, 89.0, 200.0], np.float32)
    head_numba._exp(out, 4, np.empty(4, np.int32))
    assert np.isfinite(out).all() and out[0] <= out[1] < 1e-37 and 1e38 < out[2] <= out[3]


def test_forward_head_takes_the_compiled_head_for_inference_on_channels_last_codes_only(monkeypatch):
    net = head_net()
    calls = []
    real = net._forward_head_numba
    monkeypatch.setattr(net, "_forward_head_numba", lambda *a: calls.append(1) or real(*a))
    cl = codes(1, 6, 8)
    contiguous = [z.contiguous() for z in cl]
    with torch.no_grad():
        want = net.forward_head(*contiguous)
        assert calls == []
        torch.testing.assert_close(net.forward_head(*cl), want, rtol=0, atol=1e-6)
        assert calls == [1]
        net.numba_head = False
        net.forward_head(*cl)
        net.numba_head = True
        monkeypatch.setenv("CAUSALFUSE_NUMBA", "0")
        net.forward_head(*cl)
        monkeypatch.delenv("CAUSALFUSE_NUMBA")
        with torch.autocast("cpu", dtype=torch.bfloat16):
            net.forward_head(*cl)
        assert calls == [1]
    net.forward_head(*cl)  # a gradient is wanted: the rows path
    assert calls == [1]


def test_the_network_in_inference_equals_itself_without_the_compiled_head():
    """End to end, on an image large enough for the encoders' loops (so the codes are channels-last)."""
    net = head_net()
    g = torch.Generator().manual_seed(7)
    ir, vi = torch.rand(1, 1, 256, 272, generator=g), torch.rand(1, 1, 256, 272, generator=g)
    calls = []
    real = net._forward_head_numba
    net._forward_head_numba = lambda *a: calls.append(1) or real(*a)
    with torch.inference_mode():
        got = net(ir, vi)
        net.numba_head = False
        want = net(ir, vi)
    assert calls == [1]
    torch.testing.assert_close(got, want, rtol=0, atol=1e-5)
