"""LRRNet encoder/decoder: the official reference outputs, the plain transcription, gradients, errors."""

from __future__ import annotations


import numpy as np
import pytest
import torch
from PIL import Image
from torch.nn import functional as F

from causalfuse.errors import CausalFuseError
from causalfuse.models.lrr import (
    LRRDecoder,
    LRREncoder,
    LRRNet,
    load_lrrnet_state,
    lrrnet_fuse_gray,
    lrrnet_postprocess,
    lrrnet_preprocess,
    soft_threshold,
)

from .conftest import benchmark_module, shared_path


def _plain_module():
    """benchmarks/lrr_plain.py: the literal transcription of the specification."""
    return benchmark_module("lrr_plain")


@pytest.fixture(scope="module")
def official_state():
    return load_lrrnet_state(shared_path("weights", "lrrnet", "lrrnet_official.model"))


@pytest.fixture(scope="module")
def official_net(official_state, device):
    # The path users run: fused encoder, compiled kernels when available.
    net = LRRNet()
    net.load_official(official_state)
    return net.eval().to(device)


@pytest.fixture(scope="module")
def plain_net(official_state, device):
    net = _plain_module().PlainLRRNet()
    net.load_state_dict(official_state)
    return net.eval().to(device)


def _fused_eager_net(state, device="cpu") -> LRRNet:
    net = LRRNet(compile=False)
    net.load_official(state)
    return net.eval().to(device)


# -- the official reference outputs ------------------------------------------------------------
@pytest.mark.parametrize(
    "stem, compiled",
    [("8", False), ("11", False), pytest.param("11", True, marks=pytest.mark.slow, id="11-compiled")],
)
def test_reproduces_official_reference(stem, compiled, official_net, monkeypatch, device):
    # The suite runs the eager kernels (conftest); the compiled ones are what users run.
    monkeypatch.setenv("CAUSALFUSE_COMPILE", "1" if compiled else "0")
    ref = np.load(shared_path("specs", "lrrnet_reference", f"tno21_{stem}.npz"))
    ir = torch.from_numpy(ref["ir"])[None, None].to(device)
    vi = torch.from_numpy(ref["vi"])[None, None].to(device)
    with torch.inference_mode():
        raw = official_net(ir, vi)[0, 0].cpu().numpy()
        l_ir, s_ir = official_net.encoder_ir(ir)
        l_vi, s_vi = official_net.encoder_vi(vi)
    assert raw.shape == ref["fuse"].shape
    np.testing.assert_allclose(raw, ref["fuse"], rtol=0, atol=1e-4)
    for name, part in (("L_ir", l_ir), ("S_ir", s_ir), ("L_vi", l_vi), ("S_vi", s_vi)):
        np.testing.assert_allclose(part.mean(dim=(0, 2, 3)).cpu().numpy(), ref[name], rtol=0, atol=1e-5, err_msg=name)
    out = lrrnet_postprocess(raw)
    assert out.dtype == np.uint8
    assert np.abs(out.astype(int) - ref["fused_uint8"].astype(int)).max() <= 1


def test_fuse_gray_from_files_matches_official(official_net):
    ref = np.load(shared_path("specs", "lrrnet_reference", "tno21_8.npz"))
    data = shared_path("data", "val", "TNO21")
    ir = np.asarray(Image.open(data / "ir" / "8.png").convert("L"))
    vi = np.asarray(Image.open(data / "vi" / "8.png").convert("L"))
    np.testing.assert_allclose(lrrnet_preprocess(ir), ref["ir"], rtol=0, atol=1e-6)
    np.testing.assert_allclose(lrrnet_preprocess(vi), ref["vi"], rtol=0, atol=1e-6)
    fused = lrrnet_fuse_gray(ir, vi, official_net)
    assert fused.shape == ir.shape and fused.dtype == np.uint8
    assert np.abs(fused.astype(int) - ref["fused_uint8"].astype(int)).max() <= 1


# -- fast path vs the plain transcription --------------------------------------------------------
@pytest.mark.parametrize("shape", [(2, 1, 13, 17), (1, 1, 2, 2), (1, 1, 3, 2)])
def test_fused_matches_plain_transcription(shape, official_state, plain_net, device):
    net = _fused_eager_net(official_state, device)
    torch.manual_seed(0)
    ir, vi = torch.rand(shape).to(device), torch.rand(shape).to(device)
    with torch.no_grad():
        ours = net(ir, vi)
        ref = plain_net(ir, vi)
    with torch.enable_grad():  # the module-by-module decoder path
        torch.testing.assert_close(net(ir, vi).detach(), ref, rtol=0, atol=1e-4)
    with torch.no_grad():
        l_ours, s_ours = net.encoder_ir(ir)
        l_ref, s_ref = plain_net.get_ls1(ir)
    assert ours.shape == shape
    torch.testing.assert_close(ours, ref, rtol=0, atol=1e-4)
    torch.testing.assert_close(l_ours, l_ref, rtol=0, atol=1e-5)
    torch.testing.assert_close(s_ours, s_ref, rtol=0, atol=1e-5)


def test_unfused_module_path_matches_plain(official_state, plain_net, device):
    enc = LRREncoder(fused=False)
    enc.load_official(official_state, prefix="get_ls2.")
    enc.to(device)
    x = torch.rand(2, 1, 9, 11, generator=torch.Generator().manual_seed(3)).to(device)
    with torch.no_grad():
        for ours, ref in zip(enc(x), plain_net.get_ls2(x)):
            torch.testing.assert_close(ours, ref, rtol=0, atol=1e-5)


def test_plain_operator_path_matches_plain(official_state, plain_net, device):
    """forward_code_plain (what ONNX export traces), on both encoders: the infrared one has a negative threshold."""
    x = torch.rand(2, 1, 9, 11, generator=torch.Generator().manual_seed(4)).to(device)
    for prefix, ref_encoder in (("get_ls1.", plain_net.get_ls1), ("get_ls2.", plain_net.get_ls2)):
        enc = LRREncoder()
        enc.load_official(official_state, prefix=prefix)
        enc.to(device)
        with torch.no_grad():
            torch.testing.assert_close(enc.forward_code_plain(x), torch.cat(ref_encoder(x), dim=1), rtol=0, atol=1e-5)


def _grads(module, x, loss_fn):
    x = x.clone().requires_grad_(True)
    loss = loss_fn(*module(x))
    params = [p for _, p in module.named_parameters()]
    return torch.autograd.grad(loss, [x, *params])


def test_fused_gradients_match_plain(official_state, device):
    """Every parameter's (and the input's) gradient, float64, against ordinary autograd of the transcription."""
    enc = LRREncoder(compile=False)
    enc.load_official(official_state, prefix="get_ls1.")
    enc = enc.double().to(device)
    plain = _plain_module().PlainLRREncoder()
    plain.load_state_dict(enc.state_dict())
    plain = plain.double().to(device)
    gen = torch.Generator().manual_seed(1)
    x = torch.rand(2, 1, 7, 9, generator=gen, dtype=torch.float64).to(device)
    weights = torch.randn(2, 128, 7, 9, generator=gen, dtype=torch.float64).to(device)

    def loss_fn(low, sparse):
        return (low * weights).sum() + (sparse**2).sum()

    names = ["input"] + [n for n, _ in enc.named_parameters()]
    assert names[1:] == [n for n, _ in plain.named_parameters()]
    for name, ours, ref in zip(names, _grads(enc, x, loss_fn), _grads(plain, x, loss_fn)):
        assert ref.abs().max() > 0, name
        torch.testing.assert_close(ours, ref, rtol=1e-9, atol=1e-9 * float(ref.abs().max()), msg=name)


def test_chunked_stages_match_plain_across_chunks_and_thresholds_of_every_sign(official_state, monkeypatch):
    """The CPU's chunked stages (scaled soft threshold) on a chunk size that splits the image unevenly.

    Thresholds set negative, zero, tiny and large on some channels (the
    formula's path), float64 forward and gradients against ordinary autograd
    of the transcription, and float32 forward within float rounding.
    """
    from causalfuse.models import lrr_kernels

    monkeypatch.setattr(lrr_kernels, "EAGER_CHUNK", 17)  # 2 x 7 x 9 pixels: chunks of 17, the last one short
    enc = LRREncoder(compile=False)
    enc.load_official(official_state, prefix="get_ls2.")
    with torch.no_grad():
        enc.lamj[0, :5] = torch.tensor([-0.01, 0.0, 1e-9, -0.2, 2.0])
    plain = _plain_module().PlainLRREncoder()
    plain.load_state_dict(enc.state_dict())
    gen = torch.Generator().manual_seed(3)
    x = torch.rand(2, 1, 7, 9, generator=gen, dtype=torch.float64)
    with torch.no_grad():
        f32 = enc.forward_code(x.float())
        torch.testing.assert_close(f32, torch.cat(plain(x.float()), dim=1), rtol=0, atol=1e-5)
    enc, plain = enc.double(), plain.double()
    weights = torch.randn(2, 128, 7, 9, generator=gen, dtype=torch.float64)

    def loss_fn(low, sparse):
        return (low * weights).sum() + (sparse**2).sum()

    with torch.no_grad():
        torch.testing.assert_close(enc.forward_code(x), torch.cat(plain(x), dim=1), rtol=1e-12, atol=1e-12)
    names = ["input"] + [n for n, _ in enc.named_parameters()]
    for name, ours, ref in zip(names, _grads(enc, x, loss_fn), _grads(plain, x, loss_fn)):
        torch.testing.assert_close(ours, ref, rtol=1e-9, atol=1e-9 * float(ref.abs().max()), msg=name)


def test_checkpointed_blocks_give_the_same_gradients(official_state, device):
    enc = LRREncoder(fused=False)
    enc.load_official(official_state, prefix="get_ls1.")
    enc.to(device)
    x = torch.rand(1, 1, 6, 5, generator=torch.Generator().manual_seed(2)).to(device)

    def loss_fn(low, sparse):
        return low.square().sum() + sparse.sum()

    plain = _grads(enc, x, loss_fn)
    enc.checkpoint_blocks = True
    for a, b in zip(plain, _grads(enc, x, loss_fn)):
        torch.testing.assert_close(a, b)


@pytest.mark.parametrize("prefix", ["get_ls1.", "get_ls2."])
def test_fused_encoder_runs_in_bf16_under_autocast(official_state, prefix, device):
    """The fused kernels write into buffers they are given, which autocast cannot retype: they take its type explicitly."""
    enc = LRREncoder(compile=False)
    enc.load_official(official_state, prefix=prefix)
    enc.to(device)
    x = torch.rand(1, 1, 12, 10, generator=torch.Generator().manual_seed(8)).to(device)
    with torch.no_grad():
        ref = enc.forward_code(x)
        with torch.autocast(device.type, dtype=torch.bfloat16):
            low = enc.forward_code(x)
    assert low.dtype == torch.bfloat16 and ref.dtype == torch.float32
    # bfloat16 keeps 8 significant bits (relative rounding 2^-9); four blocks of
    # updates gave 1.2 % (infrared) and 0.7 % (visible) of the code's range on the CPU.
    assert float((low.float() - ref).abs().max()) < 0.03 * float(ref.abs().max())


# -- soft threshold -------------------------------------------------------------------------------
def test_soft_threshold_formula_with_negative_threshold(device):
    r = torch.tensor([[[-2.0, -0.05, 0.0, 0.05, 2.0]], [[-2.0, -0.05, 0.0, 0.05, 2.0]]], device=device).view(1, 2, 1, 5)
    lam = torch.tensor([[0.1, -0.1]], device=device)
    out = soft_threshold(r, lam)
    expected = torch.tensor([[-1.9, 0.0, 0.0, 0.0, 1.9], [-2.1, -0.15, 0.0, 0.15, 2.1]], device=device).view(1, 2, 1, 5)
    torch.testing.assert_close(out, expected)
    # soft shrink (r - clamp(r, -lam, lam)) would be wrong on the negative channel
    assert not torch.allclose(out[:, 1], r[:, 1] - r[:, 1].clamp(0.1, -0.1))


def test_eager_in_place_threshold_gives_the_formula_channel_by_channel():
    """The eager kernels' eta(acc + bias) (per-channel soft shrink, negative thresholds by the formula) equals eta."""
    from causalfuse.models import lrr_kernels

    gen = torch.Generator().manual_seed(0)
    acc = torch.randn(2, 6, 5, 7, generator=gen)
    lam = torch.tensor([0.0, 0.3, -0.2, 1.0, 0.05, -1.5])
    bias = torch.randn(6, generator=gen)
    expected = lrr_kernels._eta(acc + bias.view(1, -1, 1, 1), lam.view(1, -1, 1, 1))
    threads = torch.get_num_threads()
    got = acc.clone()
    lrr_kernels._eta_eager_(got, lam, bias=bias)
    assert torch.equal(got, expected)
    got = acc.clone()
    lrr_kernels._eta_eager_(got, lam)
    assert torch.equal(got, lrr_kernels._eta(acc, lam.view(1, -1, 1, 1)))
    assert torch.get_num_threads() == threads


def test_soft_threshold_gradient_matches_formula_autograd(device):
    gen = torch.Generator().manual_seed(0)
    r = torch.randn(2, 4, 5, 3, generator=gen, dtype=torch.float64).to(device).requires_grad_()
    lam = torch.tensor([[0.3, -0.2, 0.0, 1.0]], dtype=torch.float64, device=device, requires_grad=True)
    g = torch.randn(2, 4, 5, 3, generator=gen, dtype=torch.float64).to(device)
    ours = torch.autograd.grad((soft_threshold(r, lam) * g).sum(), [r, lam])
    ref = torch.sign(r) * torch.relu(r.abs() - lam.view(1, 4, 1, 1))
    expected = torch.autograd.grad((ref * g).sum(), [r, lam])
    for a, b in zip(ours, expected):
        torch.testing.assert_close(a, b)
    assert torch.autograd.gradcheck(soft_threshold, (r.detach()[:1, :, :2].requires_grad_(), lam))


# -- shapes, dtypes, errors --------------------------------------------------------------------------
def test_keeps_dtype_and_device_and_refuses_tiny_or_wrong_inputs(device):
    enc = LRREncoder(compile=False).double().to(device)
    low, sparse = enc(torch.rand(1, 1, 2, 3, dtype=torch.float64, device=device))
    assert low.dtype == torch.float64 and low.shape == sparse.shape == (1, 128, 2, 3)
    assert low.device == sparse.device == torch.rand(1, device=device).device
    with pytest.raises(CausalFuseError, match="at least 2 x 2"):
        enc(torch.rand(1, 1, 1, 8, dtype=torch.float64, device=device))
    with pytest.raises(CausalFuseError, match=r"expected a \(B, 1, H, W\) tensor"):
        enc(torch.rand(1, 3, 8, 8, dtype=torch.float64, device=device))


def test_decoder_keys_and_official_state_keys(official_state):
    assert set(LRRDecoder().state_dict()) == {k[len("decoder.") :] for k in official_state if k.startswith("decoder.")}
    enc_keys = {k[len("get_ls1.") :] for k in official_state if k.startswith("get_ls1.")}
    assert set(LRREncoder().state_dict()) == enc_keys
    assert sum(v.numel() for v in official_state.values()) == 49204


def test_postprocess_clamps_normalises_and_truncates():
    raw = np.array([[-5.0, 0.0], [127.5, 300.0]], dtype=np.float32)
    np.testing.assert_array_equal(lrrnet_postprocess(raw), np.array([[0, 0], [127, 254]], dtype=np.uint8))
    np.testing.assert_array_equal(lrrnet_postprocess(torch.from_numpy(raw)[None, None]), lrrnet_postprocess(raw))
    pre = lrrnet_preprocess(np.array([[10, 20], [30, 10]], dtype=np.uint8))
    assert pre.dtype == np.float32
    np.testing.assert_allclose(pre, np.array([[0, 10], [20, 0]]) / (20 + 1e-4), rtol=1e-6)


@pytest.fixture
def official_file():
    return shared_path("weights", "lrrnet", "lrrnet_official.model")


def test_bad_weight_files_are_refused(tmp_path, official_file, official_state):
    missing = tmp_path / "nope.model"
    with pytest.raises(CausalFuseError, match=r"nope\.model.*does not exist"):
        load_lrrnet_state(missing)
    with pytest.raises(CausalFuseError, match="is a directory"):
        LRRNet.from_official(tmp_path)

    garbage = tmp_path / "garbage.model"
    garbage.write_bytes(b"this is not a torch file")
    with pytest.raises(CausalFuseError, match=r"garbage\.model.*could not be read"):
        load_lrrnet_state(garbage)

    pickled = tmp_path / "pickled.model"
    torch.save({"get_ls1.lamj": np.zeros((1, 256), dtype=np.float32)}, pickled)  # a NumPy array: a Python object, not a tensor
    with pytest.raises(CausalFuseError, match=r"pickled\.model.*holds Python objects other than tensors") as info:
        load_lrrnet_state(pickled)
    assert "weights_only" not in str(info.value), "PyTorch's advice to run the file's code must not be passed on"

    truncated = tmp_path / "truncated.model"
    truncated.write_bytes(official_file.read_bytes()[:50_000])
    with pytest.raises(CausalFuseError, match=r"truncated\.model.*could not be read"):
        load_lrrnet_state(truncated)

    not_a_dict = tmp_path / "list.model"
    torch.save([torch.zeros(3)], not_a_dict)
    with pytest.raises(CausalFuseError, match=r"list\.model.*does not hold a state dict.*list"):
        load_lrrnet_state(not_a_dict)

    partial = tmp_path / "partial.model"
    torch.save({k: v for k, v in official_state.items() if not k.startswith("decoder.")}, partial)
    with pytest.raises(CausalFuseError, match=r"partial\.model.*12 missing keys \(decoder\.conv_ReH"):
        load_lrrnet_state(partial)

    reshaped = tmp_path / "reshaped.model"
    state = dict(official_state)
    state["get_ls2.lamj"] = torch.zeros(1, 64)
    torch.save(state, reshaped)
    with pytest.raises(CausalFuseError, match=r"wrong shapes: get_ls2\.lamj \(1, 64\) \(expected \(1, 256\)\)"):
        load_lrrnet_state(reshaped)

    nonfinite = tmp_path / "nan.model"
    state = dict(official_state)
    state["get_ls1.lamz"] = torch.full((1, 1), float("nan"))
    torch.save(state, nonfinite)
    with pytest.raises(CausalFuseError, match=r"get_ls1\.lamz holds non-finite"):
        load_lrrnet_state(nonfinite)


def test_load_official_refuses_mismatching_state(official_state):
    enc = LRREncoder()
    with pytest.raises(CausalFuseError, match=r"'get_ls3'.*20 missing \(conv_W00"):
        enc.load_official(official_state, prefix="get_ls3.")


@pytest.mark.parametrize("size", [(2, 2), (3, 5), (7, 4)])
def test_small_map_kernels_and_their_adjoints(size, device):
    """The one- and nine-channel helpers (both the compilable and the eager form) against autograd."""
    from causalfuse.models import lrr_kernels

    gen = torch.Generator().manual_seed(4)
    p = torch.randn(2, 9, *size, generator=gen, dtype=torch.float64).to(device).requires_grad_()
    x = torch.randn(2, 1, *size, generator=gen, dtype=torch.float64).to(device).requires_grad_()
    bias = torch.randn(1, generator=gen, dtype=torch.float64).to(device)
    taps = lrr_kernels._residual_taps_eager(p, x, bias)
    torch.testing.assert_close(lrr_kernels._residual_taps_pw(p, x, bias), taps, rtol=0, atol=0)
    grad = torch.randn(taps.shape, generator=gen, dtype=torch.float64).to(device)
    d_x, d_p = torch.autograd.grad(taps, [x, p], grad)
    for backward in (lrr_kernels._residual_taps_bwd_pw, lrr_kernels._residual_taps_bwd_eager):
        d_r, d_pp = backward(grad)
        torch.testing.assert_close(d_r, d_x)
        torch.testing.assert_close(d_pp, d_p)


@pytest.mark.slow
def test_compiled_training_path_matches_eager(official_state, monkeypatch, device):
    """The compiled kernels of the backward pass (what training runs) against the eager kernels."""
    monkeypatch.setenv("CAUSALFUSE_COMPILE", "1")
    gen = torch.Generator().manual_seed(5)
    x = torch.rand(1, 1, 10, 7, generator=gen).to(device)
    weights = torch.randn(1, 256, 10, 7, generator=gen).to(device)
    grads = []
    for compiled in (True, False):
        enc = LRREncoder(compile=compiled)
        enc.load_official(official_state, prefix="get_ls1.")
        enc.to(device)
        xi = x.clone().requires_grad_(True)
        loss = (enc.forward_code(xi) * weights).sum()
        grads.append(torch.autograd.grad(loss, [xi, *enc.parameters()]))
    for name, a, b in zip(["input"] + [n for n, _ in enc.named_parameters()], *grads):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-4 * float(b.abs().max()), msg=name)


def test_whole_network_gradients_match_plain(official_state, device):
    """LRRNet trained end to end (fused encoders, one-pass decoder taps) against the transcription, float64."""
    net = _fused_eager_net(official_state, device).double()
    plain = _plain_module().PlainLRRNet()
    plain.load_state_dict(official_state)
    plain = plain.double().to(device)
    gen = torch.Generator().manual_seed(6)
    ir = torch.rand(2, 1, 9, 7, generator=gen, dtype=torch.float64).to(device)
    vi = torch.rand(2, 1, 9, 7, generator=gen, dtype=torch.float64).to(device)
    ours = torch.autograd.grad(net(ir, vi).square().sum(), list(net.parameters()))
    ref = torch.autograd.grad(plain(ir, vi).square().sum(), list(plain.parameters()))
    assert len(ours) == len(ref) == 2 * 20 + 12
    for (name, _), a, b in zip(plain.named_parameters(), ours, ref):
        torch.testing.assert_close(a, b, rtol=1e-9, atol=1e-9 * float(b.abs().max()), msg=name)


def test_project_channels_equals_1x1_conv(device):
    from causalfuse.models.lrr import project_channels

    gen = torch.Generator().manual_seed(7)
    z = torch.randn(2, 16, 5, 3, generator=gen, dtype=torch.float64).to(device)
    w = torch.randn(9, 16, generator=gen, dtype=torch.float64).to(device).requires_grad_()
    ref = F.conv2d(z, w.view(9, 16, 1, 1))
    with torch.no_grad():
        torch.testing.assert_close(project_channels(z, w), ref)
    out = project_channels(z, w)
    assert out.requires_grad
    torch.testing.assert_close(torch.autograd.grad(out.sum(), w)[0], torch.autograd.grad(ref.sum(), w)[0])


def test_no_cxx_compiler_gives_one_warning_and_the_same_code(official_state, monkeypatch):
    """Without a working C++ compiler every kernel would fail to compile: one warning says so, once.

    (Fusion on the CPU never compiles; training does, and a GPU's fusion.)
    """
    import warnings

    from causalfuse.errors import CausalFuseWarning
    from causalfuse.models import lrr_kernels

    monkeypatch.setenv("CAUSALFUSE_COMPILE", "1")
    monkeypatch.setattr(lrr_kernels, "_COMPILE_UNAVAILABLE", None)
    for name, fn, eager in [
        ("_FIRST", lrr_kernels._first_into, lrr_kernels._first_into_eager),
        ("_UPDATE", lrr_kernels._update_, lrr_kernels._update_eager_),
        ("_MASK", lrr_kernels._mask_, lrr_kernels._mask_eager_),
        ("_PROJECT", lrr_kernels._project_pw, lrr_kernels._project),
        ("_RESIDUAL_TAPS", lrr_kernels._residual_taps_pw, lrr_kernels._residual_taps_eager),
        ("_RESIDUAL_TAPS_BWD", lrr_kernels._residual_taps_bwd_pw, lrr_kernels._residual_taps_bwd_eager),
    ]:
        monkeypatch.setattr(lrr_kernels, name, lrr_kernels._Kernel(fn, eager))  # never compiled yet

    def no_compiler(*args, **kwargs):
        raise RuntimeError("InvalidCxxCompiler: No working C++ compiler found in torch._inductor.config.cpp.cxx")

    monkeypatch.setattr(torch, "compile", no_compiler)
    enc = LRREncoder(compile=True)
    enc.load_official(official_state, prefix="get_ls1.")
    x = torch.rand(1, 1, 24, 30, generator=torch.Generator().manual_seed(0))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        with torch.no_grad():
            got = enc.forward_code(x)
            enc.forward_code(x)
    messages = [str(w.message) for w in caught if issubclass(w.category, CausalFuseWarning)]
    assert messages == [
        "no working C++ compiler for torch.compile, so fusion runs in eager PyTorch kernels: "
        "the same result, more slowly (install g++, or set CAUSALFUSE_COMPILE=0 to skip the attempt)"
    ]
    with torch.no_grad():
        torch.testing.assert_close(got, enc.forward_code_plain(x), rtol=0, atol=1e-5)
