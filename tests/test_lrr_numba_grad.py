"""The LRR encoder's training pass in Numba's loops against autograd through the formulas, and when it runs."""

from __future__ import annotations

import pytest
import torch

from causalfuse.models import lrr_numba_grad
from causalfuse.models.lrr import LRREncoder

from .test_lrr_numba import _encoder  # random weights, a negative threshold and subnormal weights

#: float32 sums in another order (and subnormal weights zeroed): the gradients
#: agree to this, relative to the largest value of each.
RTOL = 1e-4


def _grads(enc: LRREncoder, x: torch.Tensor, weight: torch.Tensor, plain: bool) -> tuple[torch.Tensor, list[torch.Tensor], torch.Tensor]:
    """The code, the parameters' gradients and the input's for L = sum(weight * code)."""
    enc.zero_grad()
    x = x.detach().clone().requires_grad_(True)
    z = enc.forward_code_plain(x) if plain else enc.forward_code(x)
    (z * weight).sum().backward()
    return z.detach(), [p.grad.clone() for p in enc._fused_params()], x.grad


def _close(a: torch.Tensor, b: torch.Tensor, rtol: float = RTOL) -> bool:
    return (a - b).abs().max().item() <= rtol * max(1e-12, b.abs().max().item())


@pytest.mark.parametrize("shape", [(2, 1, 13, 17), (1, 1, 2, 2), (3, 1, 9, 4)])
@pytest.mark.parametrize("threads", [1, 2])
def test_gradients_equal_autograd_through_the_formulas(shape: tuple[int, ...], threads: int) -> None:
    enc = _encoder()
    g = torch.Generator().manual_seed(1)
    x = torch.rand(shape, generator=g)
    weight = torch.randn(shape[0], 256, *shape[2:], generator=g)
    old = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        assert enc._numba_trains(x.requires_grad_(True))
        z, grads, gx = _grads(enc, x, weight, plain=False)
    finally:
        torch.set_num_threads(old)
    z_ref, grads_ref, gx_ref = _grads(enc, x, weight, plain=True)
    assert z.is_contiguous(memory_format=torch.channels_last) or shape[0] == 1
    assert _close(z, z_ref, 1e-5)
    names = [n for n, _ in enc.named_parameters()]
    for name, got, ref in zip(names, grads, grads_ref):
        assert got.shape == ref.shape, name
        assert _close(got, ref), f"{name}: {(got - ref).abs().max().item():.3g} against {ref.abs().max().item():.3g}"
    assert _close(gx, gx_ref)


def test_a_second_loss_through_the_same_code_adds_up() -> None:
    """Two uses of the code (as BAFFM and the reconstruction make): one backward with the summed gradient."""
    enc = _encoder(3)
    x = torch.rand(2, 1, 11, 12)
    z = enc.forward_code(x)
    (z.square().sum() + z[:, :5].sum()).backward()
    got = [p.grad.clone() for p in enc._fused_params()]
    enc.zero_grad()
    z = enc.forward_code_plain(x)
    (z.square().sum() + z[:, :5].sum()).backward()
    for (name, _), a, b in zip(enc.named_parameters(), got, [p.grad for p in enc._fused_params()]):
        assert _close(a, b), name


def test_when_the_loops_train() -> None:
    enc = _encoder()
    x = torch.rand(1, 1, 8, 8)
    assert enc._numba_trains(x)  # parameters require grad
    with torch.no_grad():
        assert not enc._numba_trains(x)
    enc.requires_grad_(False)
    assert not enc._numba_trains(x)
    assert enc._numba_trains(x.requires_grad_(True))
    enc.requires_grad_(True)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert not enc._numba_trains(x)
    assert not enc._numba_trains(x.double())
    enc.numba = False
    assert not enc._numba_trains(x)


def test_the_switch_turns_them_off(monkeypatch: pytest.MonkeyPatch) -> None:
    enc = _encoder()
    x = torch.rand(1, 1, 8, 8)
    calls = []
    real = lrr_numba_grad.NumbaEncoder.apply
    monkeypatch.setattr(lrr_numba_grad.NumbaEncoder, "apply", lambda *a: calls.append(1) or real(*a))
    enc.forward_code(x).sum().backward()
    assert calls == [1]
    monkeypatch.setenv("CAUSALFUSE_NUMBA", "0")
    enc.forward_code(x).sum().backward()
    assert calls == [1]


def test_a_second_backward_through_the_same_graph_says_how_to_get_one() -> None:
    enc = _encoder()
    z = enc.forward_code(torch.rand(1, 1, 8, 8))
    loss = z.sum()
    loss.backward(retain_graph=True)
    with pytest.raises(RuntimeError, match="CAUSALFUSE_NUMBA=0"):
        loss.backward()
