"""The LRR encoder's compiled inference loops (Numba) against the formulas, and when they run."""

from __future__ import annotations

import pytest
import torch

from causalfuse.models import lrr, lrr_numba
from causalfuse.models.lrr import LRREncoder, LRRNet, _flush_subnormal
from causalfuse.models.net import CausalFusionNet

#: float32 sums in another order: the codes agree to this, relative to their largest value.
RTOL = 1e-5


def _close(z: torch.Tensor, ref: torch.Tensor) -> bool:
    return (z - ref).abs().max().item() <= RTOL * max(1.0, ref.abs().max().item())


def _encoder(seed: int = 0) -> LRREncoder:
    """An encoder with random weights, positive thresholds, one negative one and some subnormal weights.

    The published infrared encoder has a negative threshold (where eta is not
    soft shrink) and hundreds of subnormal weights; both are reproduced here
    so that the test does not need the published file.
    """
    g = torch.Generator().manual_seed(seed)
    enc = LRREncoder(compile=False)
    with torch.no_grad():
        for p in enc.parameters():
            p.copy_(torch.randn(p.shape, generator=g) * 0.05)
        enc.lamj.copy_(torch.rand(enc.lamj.shape, generator=g) * 0.05)
        enc.lamj[0, 7] = -0.0063
        enc.lamz.fill_(0.9)
        enc.lrrblock1.conv_Wdz.conv2d.weight[0, :5, 0, 0] = 1e-41  # subnormal
    return enc.eval()


def _params(enc: LRREncoder) -> list[torch.Tensor]:
    return [p.detach() for p in enc._fused_params()]


@pytest.mark.parametrize("shape", [(1, 2, 2), (1, 2, 9), (2, 37, 53), (1, 64, 5)])
@pytest.mark.parametrize("threads", [1, 2])
def test_one_encoder_gives_the_formulas_code(shape, threads):
    """Threads=1: the wavefront over rows; threads=2 on one image: stages shared by bands of rows."""
    enc = _encoder()
    b, h, w = shape
    x = torch.rand(b, 1, h, w, generator=torch.Generator().manual_seed(1))
    params = _params(enc)
    z = lrr_numba.encode(x, *params[:4], params[4:], threads=threads)
    with torch.no_grad():
        ref = enc.forward_code_plain(x)
    assert z.shape == ref.shape
    assert _close(z, ref)
    assert z.is_contiguous(memory_format=torch.channels_last) or min(h, w) == 1


def test_encoders_side_by_side_give_each_its_own_code():
    """Two encoders on two threads, each image as a wavefront: each gets the code of its own weights and input."""
    encs = [_encoder(0), _encoder(1)]
    gen = torch.Generator().manual_seed(2)
    xs = [torch.rand(1, 1, 41, 30, generator=gen), torch.rand(1, 1, 41, 30, generator=gen)]
    jobs = [(x, lrr_numba.weights(*_params(e)[:4], _params(e)[4:])) for e, x in zip(encs, xs)]
    codes = lrr_numba.encode_many(jobs, threads=2)
    with torch.no_grad():
        for enc, x, z in zip(encs, xs, codes):
            assert _close(z, enc.forward_code_plain(x))


def test_the_encoder_takes_the_loops_for_inference_only(monkeypatch):
    monkeypatch.setattr(lrr, "NUMBA_MIN_PIXELS", 100)
    monkeypatch.delenv("CAUSALFUSE_NUMBA", raising=False)
    calls = []
    real = lrr_numba.encode_many
    monkeypatch.setattr(lrr_numba, "encode_many", lambda *a, **k: calls.append(1) or real(*a, **k))
    enc = _encoder()
    x = torch.rand(1, 1, 20, 24, generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        z = enc.forward_code(x)
        ref = enc.forward_code_plain(x)
    assert calls == [1] and _close(z, ref)

    # training: PyTorch's kernels (the loops have no backward pass), gradients flow
    z = enc.forward_code(x)
    z.square().sum().backward()
    assert calls == [1] and enc.conv_W00.conv2d.weight.grad is not None

    # too small, switched off, or under autocast: PyTorch's kernels
    with torch.no_grad():
        enc.forward_code(x[..., :8, :8])
        monkeypatch.setenv("CAUSALFUSE_NUMBA", "0")
        enc.forward_code(x)
        monkeypatch.delenv("CAUSALFUSE_NUMBA")
        enc.numba = False
        enc.forward_code(x)
        enc.numba = True
        with torch.autocast("cpu", dtype=torch.bfloat16):
            enc.forward_code(x)
    assert calls == [1]


def test_networks_give_the_same_image_with_and_without_the_loops(monkeypatch):
    """CausalFusionNet and LRRNet, encoders side by side, against PyTorch's kernels (CAUSALFUSE_NUMBA=0).

    The thresholds are made positive here: with a negative one the formula
    jumps by |lam| where its input crosses 0, so a pre-activation that is 0
    in one summation order and 1e-9 in the other moves one code value by
    |lam| (seen on an AMD EPYC: one of 397,056 values, 2.7e-5 in the image).
    Either value is right; the encoder tests above keep the negative one.
    """
    monkeypatch.setattr(lrr, "NUMBA_MIN_PIXELS", 100)
    torch.manual_seed(0)  # the head's initial weights
    gen = torch.Generator().manual_seed(4)
    ir, vi = torch.rand(1, 1, 33, 47, generator=gen), torch.rand(1, 1, 33, 47, generator=gen)
    causal = CausalFusionNet().eval()
    lrrnet = LRRNet(compile=False).eval()
    for net in (causal, lrrnet):
        net.encoder_ir.load_state_dict(_encoder(5).state_dict())
        net.encoder_vi.load_state_dict(_encoder(6).state_dict())
        for e in (net.encoder_ir, net.encoder_vi):
            e.compile = False
            with torch.no_grad():
                e.lamj.abs_()
    with torch.no_grad():
        torch.nn.init.normal_(causal.baffm.weights.weight, std=0.5, generator=gen)
        for net in (causal, lrrnet):
            monkeypatch.setenv("CAUSALFUSE_NUMBA", "0")
            ref = net(ir, vi)
            monkeypatch.delenv("CAUSALFUSE_NUMBA")
            out = net(ir, vi)
            assert out.shape == ref.shape
            assert (out - ref).abs().max().item() < 1e-5, type(net).__name__


def test_subnormal_weights_are_zeroed_and_the_gradient_passes():
    p = torch.tensor([1e-41, -3e-39, 0.5, -2.0, 1e-30], requires_grad=True)
    out = _flush_subnormal(p)
    assert out.tolist()[:2] == [0.0, 0.0] and out[2:].tolist() == p[2:].tolist()
    out.sum().backward()
    assert p.grad.tolist() == [1.0] * 5


def test_a_job_too_small_to_repay_loading_numba_keeps_pytorchs_kernels():
    from causalfuse.models.methods import NetworkMethod

    method = NetworkMethod(CausalFusionNet(), torch.device("cpu"))
    encoders = [method.net.encoder_ir, method.net.encoder_vi]
    method.plan(450 * 620)  # one TNO pair
    assert not any(e.numba for e in encoders)
    method.plan(20 * 480 * 640)  # a folder
    assert all(e.numba for e in encoders)
