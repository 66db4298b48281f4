"""CausalFusionNet and BAFFM: shapes, gradients, attention, the back-door term."""

from __future__ import annotations

import pytest
import torch

from causalfuse import CausalFuseError
from causalfuse.models.net import CausalFusionNet, NetConfig

N, D = 5, 8


def small_net(use_baffm: bool = True, seed: int = 0, device: torch.device | str = "cpu", **kw) -> CausalFusionNet:
    torch.manual_seed(seed)
    net = CausalFusionNet(NetConfig(dict_size=N, dict_dim=D, use_baffm=use_baffm, **kw))
    g = torch.Generator().manual_seed(seed + 1)
    net.set_dictionaries(torch.randn(N, D, generator=g), torch.randn(N, D, generator=g))
    # BAFFM's weight conv starts at zero (equal weights); perturb it so the
    # fusion weights depend on the input in these tests.
    with torch.no_grad():
        net.baffm.weights.weight.normal_(0, 0.5)
    return net.to(device)


def pair(h: int, w: int, b: int = 1, seed: int = 3, device: torch.device | str = "cpu") -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return torch.rand(b, 1, h, w, generator=g).to(device), torch.rand(b, 1, h, w, generator=g).to(device)


@pytest.mark.parametrize("h,w,b", [(17, 23, 1), (2, 2, 1), (31, 8, 2)])
def test_output_shape_and_range_on_odd_sizes(h, w, b, device):
    net = small_net(device=device)
    ir, vi = pair(h, w, b, device=device)
    out = net(ir, vi)
    assert out.shape == (b, 1, h, w)
    assert out.dtype == ir.dtype
    assert torch.isfinite(out).all() and out.min() >= 0 and out.max() <= 1


def test_gradients_reach_every_trainable_parameter(device):
    net = small_net(device=device)
    ir, vi = pair(12, 14, 2, device=device)
    net(ir, vi).square().mean().backward()
    trainable = [(n, p) for n, p in net.named_parameters() if p.requires_grad]
    assert trainable
    for name, p in trainable:
        assert p.grad is not None, f"{name} got no gradient"
        assert p.grad.abs().sum() > 0, f"{name} got a zero gradient"


def test_without_baffm_freezes_only_the_backdoor_parameters():
    net = small_net(use_baffm=False)
    frozen = sorted(n for n, p in net.named_parameters() if not p.requires_grad)
    assert frozen and all(".key." in n or ".value." in n for n in frozen)
    # Same checkpoint format: the same tensor names as the full network.
    assert net.state_dict().keys() == small_net().state_dict().keys()


def test_attention_sums_to_one_per_pixel_and_prior_is_uniform(device):
    net = small_net(device=device)
    z_ir, _ = net.forward_features(*pair(9, 11, device=device))
    lam = net.baffm.ir.attention(z_ir)
    assert lam.shape == (1, N, 9, 11)
    torch.testing.assert_close(lam.sum(dim=1), torch.ones(1, 9, 11, device=device), atol=1e-5, rtol=0)
    assert (lam >= 0).all()
    for branch in (net.baffm.ir, net.baffm.vi):
        torch.testing.assert_close(branch.prior, torch.full((N,), 1.0 / N, device=device))


def test_empirical_prior_takes_the_cluster_frequencies():
    torch.manual_seed(0)
    net = CausalFusionNet(NetConfig(dict_size=N, dict_dim=D, prior="empirical"))
    freq = torch.tensor([5.0, 1, 1, 2, 1])
    net.set_dictionaries(torch.randn(N, D), torch.randn(N, D), ir_frequencies=freq, vi_frequencies=freq)
    torch.testing.assert_close(net.baffm.ir.prior, freq / freq.sum())
    with pytest.raises(CausalFuseError, match="frequencies"):
        net.set_dictionaries(torch.randn(N, D), torch.randn(N, D))


def test_backdoor_term_changes_the_output_only_with_baffm(device):
    ir, vi = pair(10, 13, device=device)
    other = torch.randn(N, D, generator=torch.Generator().manual_seed(99)).to(device) * 3
    for use_baffm, should_change in ((True, True), (False, False)):
        net = small_net(use_baffm=use_baffm, device=device)
        with torch.no_grad():
            before = net(ir, vi)
            net.set_dictionaries(other, other)
            after = net(ir, vi)
        changed = (before - after).abs().max().item()
        if should_change:
            assert changed > 1e-4, "changing the dictionary must change the fused image with BAFFM"
        else:
            assert changed == 0.0, "without BAFFM the dictionary must not matter"


def test_chunked_attention_equals_one_chunk(device):
    net = small_net(device=device)
    ir, vi = pair(13, 17, device=device)
    with torch.no_grad():
        whole = net(ir, vi)
        for branch in (net.baffm.ir, net.baffm.vi):
            branch.chunk = 7
        chunked = net(ir, vi)
    torch.testing.assert_close(chunked, whole, atol=1e-6, rtol=0)


def test_tap_decomposed_reconstruction_equals_the_plain_conv(device):
    net = small_net(device=device)
    ir, vi = pair(11, 9, 2, device=device)
    with torch.no_grad():
        z_ir, z_vi = net.forward_features(ir, vi)
        w = net.fusion_weights(z_ir, z_vi)
        fast = net.reconstruction(z_ir, z_vi, w)
        plain = net.reconstruction.forward_reference(z_ir, z_vi, w)
    torch.testing.assert_close(fast, plain, atol=1e-5, rtol=0)


def test_fusion_weights_are_a_softmax_over_modalities(device):
    net = small_net(device=device)
    with torch.no_grad():
        w = net.fusion_weights(*net.forward_features(*pair(6, 7, device=device)))
    ones = torch.ones(1, 6, 7, device=device)
    torch.testing.assert_close(w[:, 0] + w[:, 2], ones)  # L part: ir + vi
    torch.testing.assert_close(w[:, 1] + w[:, 3], ones)  # S part


def test_tiled_inference_is_seamless(device):
    from causalfuse.fuse import run_tiled

    net = small_net(device=device).eval()
    ir, vi = pair(70, 53, device=device)
    with torch.no_grad():
        whole = net(ir, vi)
        tiled = run_tiled(net, ir, vi, tile=24, overlap=net.receptive_radius)
        too_little = run_tiled(net, ir, vi, tile=24, overlap=2)
    torch.testing.assert_close(tiled, whole, atol=1e-5, rtol=0)
    # The overlap is what makes it exact: with too little, seams appear.
    assert (too_little - whole).abs().max() > 1e-4


def test_bf16_autocast_gives_float32_images_close_to_fp32(device):
    net = small_net(device=device).eval()
    ir, vi = pair(21, 18, device=device)
    with torch.inference_mode():
        ref = net(ir, vi)
        with torch.autocast(device.type, dtype=torch.bfloat16):
            z_ir, _ = net.forward_features(ir, vi)
            out = net(ir, vi)
    assert z_ir.dtype == torch.bfloat16 and out.dtype == torch.float32
    # Measured 1.0 grey level at most on the CPU (the image's spread: 20 grey levels).
    assert float((out - ref).abs().max()) * 255 < 3


def test_dictionary_of_wrong_size_is_refused():
    net = small_net()
    with pytest.raises(CausalFuseError, match=r"shape \(6, 8\).*N=5"):
        net.set_dictionaries(torch.randn(6, D), torch.randn(6, D))


def test_bad_input_shapes_are_refused(device):
    net = small_net(device=device)
    with pytest.raises(CausalFuseError, match="same shape"):
        net(torch.rand(1, 1, 8, 8, device=device), torch.rand(1, 1, 8, 9, device=device))
    with pytest.raises(CausalFuseError, match="at least 2 x 2"):
        net(torch.rand(1, 1, 1, 8, device=device), torch.rand(1, 1, 1, 8, device=device))


def test_lrrnet_initialisation_loads_both_encoders(lrrnet_weights):
    from causalfuse.models.lrr import load_lrrnet_state

    net = small_net()
    net.load_lrrnet(str(lrrnet_weights))
    state = load_lrrnet_state(str(lrrnet_weights))
    torch.testing.assert_close(net.encoder_ir.lamj.detach(), state["get_ls1.lamj"])
    torch.testing.assert_close(net.encoder_vi.lamj.detach(), state["get_ls2.lamj"])


def _backdoor_by_hand(branch, x, normalise: bool) -> torch.Tensor:
    """D_m = W_h X + W_g sum_i w_i z_i, written out per pixel."""
    import math

    qh = branch.proj(x)
    q, out = qh[:, : branch.d_k], qh[:, branch.d_k :]
    k = branch.key(branch.dictionary)
    lam = torch.einsum("bchw,nc->bnhw", q, k).div(math.sqrt(branch.d_k)).softmax(dim=1)
    w = lam * branch.prior[None, :, None, None]
    if normalise:
        w = w / w.sum(dim=1, keepdim=True)
    expectation = torch.einsum("bnhw,nd->bdhw", w, branch.dictionary)  # sum_i w_i z_i
    return out + torch.einsum("bdhw,fd->bfhw", expectation, branch.value.weight)


@pytest.mark.parametrize("normalise", [True, False])
@pytest.mark.parametrize("prior", ["uniform", "empirical"])
def test_backdoor_expectation_matches_its_definition(normalise, prior, device):
    torch.manual_seed(0)
    net = CausalFusionNet(NetConfig(dict_size=5, dict_dim=8, normalise_expectation=normalise, prior=prior))
    freq = torch.tensor([5.0, 1.0, 2.0, 7.0, 3.0])
    net.set_dictionaries(torch.randn(5, 8) * 3, torch.randn(5, 8) * 3, ir_frequencies=freq, vi_frequencies=freq)
    net.to(device)
    x = torch.randn(2, 256, 6, 7).to(device)
    got = net.baffm.ir(x)
    assert torch.allclose(got, _backdoor_by_hand(net.baffm.ir, x, normalise), atol=1e-5)
    # The literal product is the normalised expectation scaled by sum_i lambda_i P(z_i) (1/N when uniform).
    if normalise and prior == "uniform":
        net.baffm.ir.normalise = False
        literal = net.baffm.ir(x)
        out = net.baffm.ir.proj(x)[:, net.baffm.ir.d_k :]
        assert torch.allclose(literal - out, (got - out) / 5, atol=1e-6)


def test_old_checkpoints_keep_the_literal_product(tmp_path):
    import json

    from safetensors.torch import load_file, save_file

    from causalfuse.checkpoint import load_model, save_model

    net = CausalFusionNet(NetConfig(dict_size=4, dict_dim=6))
    path = save_model(tmp_path / "new.safetensors", net)
    assert load_model(path).baffm.ir.normalise is True
    # A file written before the option existed has no such key in its configuration.
    from safetensors import safe_open

    with safe_open(str(path), "pt") as f:
        meta = dict(f.metadata())
    config = json.loads(meta["config"])
    del config["normalise_expectation"]
    meta["config"] = json.dumps(config)
    save_file(load_file(str(path)), str(tmp_path / "old.safetensors"), metadata=meta)
    assert load_model(tmp_path / "old.safetensors").baffm.ir.normalise is False


@pytest.mark.parametrize("use_baffm, normalise", [(True, True), (True, False), (False, True)])
def test_fusion_weights_equal_the_conv_on_the_materialised_branches(use_baffm, normalise):
    """BAFFM folds the fusion conv into each branch; the weights are those of the conv on [D_ir, D_vi]."""
    torch.manual_seed(0)
    net = CausalFusionNet(NetConfig(use_baffm=use_baffm, normalise_expectation=normalise))
    with torch.no_grad():
        for p in net.baffm.parameters():
            p.copy_(torch.randn_like(p) * 0.3)
        net.set_dictionaries(torch.randn(net.config.dict_size, net.config.dict_dim), torch.randn(net.config.dict_size, net.config.dict_dim))
    z_ir, z_vi = torch.randn(2, 256, 5, 7), torch.randn(2, 256, 5, 7)
    with torch.no_grad():
        want = net.baffm.forward_reference(z_ir, z_vi)
        for chunk in (65536, 8):  # one chunk of pixels, and several with a short last one
            net.baffm.ir.chunk = net.baffm.vi.chunk = chunk
            torch.testing.assert_close(net.baffm(z_ir, z_vi), want, rtol=0, atol=1e-5)
    assert want.std() > 0.05, "the weights must vary for the comparison to mean something"


@pytest.mark.parametrize("use_baffm", [True, False])
def test_channels_last_codes_go_through_one_product_each_with_the_same_image_and_gradients(use_baffm, monkeypatch):
    """The head on channels-last codes (the LRR encoders' on the CPU) reads each code once; values and gradients are the general path's."""
    net = small_net(use_baffm=use_baffm)
    g = torch.Generator().manual_seed(5)
    codes = [torch.randn(2, 256, 6, 9, generator=g) * 0.3 for _ in range(2)]

    def head(z_ir, z_vi):
        z_ir, z_vi = z_ir.clone().requires_grad_(True), z_vi.clone().requires_grad_(True)
        net.zero_grad()
        out = net.forward_head(z_ir, z_vi)
        (out * torch.linspace(-1, 1, out.numel()).view_as(out)).sum().backward()
        return out.detach(), z_ir.grad, z_vi.grad, [p.grad.clone() for p in net.parameters() if p.grad is not None]

    rows = []
    real = net._forward_head_rows
    monkeypatch.setattr(net, "_forward_head_rows", lambda *a: rows.append(1) or real(*a))
    want = head(*codes)
    assert rows == []
    got = head(*(z.contiguous(memory_format=torch.channels_last) for z in codes))
    assert rows == [1]
    torch.testing.assert_close(got[0], want[0], rtol=0, atol=1e-6)
    for a, b in zip(got[1:3], want[1:3]):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-7)
    assert len(got[3]) == len(want[3]) > 0
    for a, b in zip(got[3], want[3]):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize("kernel", [1, 5, 7])
def test_a_wider_reconstruction_conv_is_the_plain_conv(kernel, device):
    """``reconstruction_kernel``: the tap-decomposed path, the training rows and tiling follow the kernel."""
    net = small_net(device=device, reconstruction_kernel=kernel)
    assert net.reconstruction.conv.weight.shape[-2:] == (kernel, kernel)
    assert net.receptive_radius == 9 + kernel // 2
    ir, vi = pair(13, 10, 2, device=device)
    with torch.no_grad():
        z_ir, z_vi = net.forward_features(ir, vi)
        w = net.fusion_weights(z_ir, z_vi)
        plain = net.reconstruction.forward_reference(z_ir, z_vi, w)
        torch.testing.assert_close(net.reconstruction(z_ir, z_vi, w), plain, atol=1e-5, rtol=0)
        cl = [z.contiguous(memory_format=torch.channels_last) for z in (z_ir, z_vi)]
        torch.testing.assert_close(net.forward_head(*cl), plain, atol=1e-5, rtol=0)  # inference on the encoders' codes
    with torch.enable_grad():
        torch.testing.assert_close(net._forward_head_rows(*cl), plain, atol=1e-5, rtol=0)  # the training path


def test_a_narrower_kernel_widened_gives_the_same_image(device):
    """A 3x3 reconstruction placed at the centre of a 7x7 one (zeros around) fuses the same image, borders included."""
    narrow = small_net(device=device)
    wide = small_net(device=device, reconstruction_kernel=7)
    state = narrow.state_dict()
    state["reconstruction.conv.weight"] = wide.reconstruction.widened(state["reconstruction.conv.weight"])
    wide.load_state_dict(state)
    ir, vi = pair(19, 12, device=device)
    with torch.no_grad():
        torch.testing.assert_close(wide(ir, vi), narrow(ir, vi), atol=1e-6, rtol=0)
    with pytest.raises(CausalFuseError, match=r"cannot place a reconstruction kernel of shape \(1, 512, 7, 7\)"):
        narrow.reconstruction.widened(wide.reconstruction.conv.weight)


@pytest.mark.parametrize("kernel", [0, 2, 17, 3.0, True])
def test_reconstruction_kernel_must_be_odd_and_small(kernel):
    with pytest.raises(CausalFuseError, match=r"reconstruction_kernel must be an odd integer from 1 to 15"):
        NetConfig.from_dict({"reconstruction_kernel": kernel})


def test_a_wider_kernel_needs_images_wider_than_its_padding():
    net = small_net(reconstruction_kernel=7)
    with pytest.raises(CausalFuseError, match="at least 4 x 4"):
        net(*pair(3, 8))
    assert net(*pair(4, 4)).shape == (1, 1, 4, 4)
