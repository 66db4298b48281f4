"""LRRNet: the learnable low-rank representation encoder and its decoder.

Li, Xu, Wu, Lu, Kittler, "LRRNet: A Novel Representation Learning Guided
Fusion Network for Infrared and Visible Images", IEEE TPAMI 2023,
doi:10.1109/TPAMI.2023.3268209. The causal fusion network builds on the
encoder and initialises it from LRRNet's published weights; what the weights
file holds and what it computes is stated in ``shared/specs/lrrnet.md``.

Encoder, for a grey image x of shape (B, 1, H, W)::

    Z = eta(conv_W00(x), lamj)
    for each of the 4 blocks:  Z = eta(lamz * Z + conv_Wdtz(x - conv_Wdz(Z)), lamj)
    L, S = Z[:, :128], Z[:, 128:]

with ``eta(r, lam) = sign(r) * max(|r| - lam_c, 0)`` and every conv a 3x3
convolution of the reflection-padded input.

The fast implementation (``fused=True``, the default) is in
:mod:`causalfuse.models.lrr_kernels`: it computes the formulas above to float32
rounding, several times faster and in a fraction of the memory of a literal
transcription (``benchmarks/lrr_plain.py``, which the tests check it against).
"""

from __future__ import annotations

import os
import pickle
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F
from torch.utils.checkpoint import checkpoint

from .._device import autocast_dtype
from ..errors import CausalFuseError
from .lrr_kernels import (
    _PROJECT,
    KERNEL,
    TAPS,
    _eta,
    _FusedEncoder,
    _project,
    _shift_sum,
    compile_available,
    conv_to_one,
    project_channels,
    soft_threshold,
)

__all__ = [
    "soft_threshold",
    "ConvLayer",
    "LRRBlock",
    "LRREncoder",
    "LRRDecoder",
    "LRRNet",
    "load_lrrnet_state",
    "lrrnet_preprocess",
    "lrrnet_postprocess",
    "lrrnet_fuse_gray",
    "compile_available",
    "project_channels",
]

N_CHANNELS = 128  # n of the published model; the code Z has 2n channels
CODE_CHANNELS = 2 * N_CHANNELS
N_BLOCKS = 4
EPS = 1e-4  # the official pre/post-processing epsilon

#: Pixels (batch times height times width) from which the encoder's inference
#: pass on the CPU runs Numba's compiled loops (:mod:`causalfuse.models.lrr_numba`)
#: rather than PyTorch's chunked stages. Loading Numba and its cached loops
#: costs about 0.4 s once per process; ``NetworkMethod.plan``
#: (:mod:`causalfuse.models.methods`) turns the loops off
#: (``LRREncoder.numba``) for jobs too small to repay that.
#: ``CAUSALFUSE_NUMBA=0`` turns them off everywhere.
NUMBA_MIN_PIXELS = 64 * 1024


def _numba_wanted() -> bool:
    return os.environ.get("CAUSALFUSE_NUMBA", "1").strip().lower() not in ("0", "false", "no", "off")


def _flush_subnormal(p: torch.Tensor) -> torch.Tensor:
    """p with its subnormal values set to zero; the gradient passes through unchanged.

    LRRNet's published weights hold hundreds of subnormal values (down to
    1e-45, left by weight decay). Every multiply-add that touches one takes
    the processor's slow path (the encoder ran 1.2 times slower for it), and
    none changes a sum by a representable amount.
    """
    tiny = torch.finfo(p.dtype).tiny
    flushed = torch.where(p.abs() < tiny, torch.zeros((), dtype=p.dtype, device=p.device), p)
    return p + (flushed - p).detach() if p.requires_grad else flushed


# ---------------------------------------------------------------------------
# modules
# ---------------------------------------------------------------------------
class ConvLayer(nn.Module):
    """LRRNet's conv layer: reflection padding of k // 2, then ``Conv2d(in, out, k)`` with bias."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int = KERNEL) -> None:
        super().__init__()
        self.conv2d = nn.Conv2d(in_channels, out_channels, kernel_size, stride=1)
        self.padding = kernel_size // 2

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        p = self.padding
        return self.conv2d(F.pad(x, (p, p, p, p), mode="reflect"))


class LRRBlock(nn.Module):
    """One learnable low-rank representation block: Z <- eta(lamz Z + W_dtz(x - W_dz Z), lamj)."""

    def __init__(self, code_channels: int = CODE_CHANNELS) -> None:
        super().__init__()
        self.conv_Wdz = ConvLayer(code_channels, 1)
        self.conv_Wdtz = ConvLayer(1, code_channels)

    def forward(self, x: torch.Tensor, z: torch.Tensor, lamj: torch.Tensor, lamz: torch.Tensor) -> torch.Tensor:
        r = x - conv_to_one(z, self.conv_Wdz.conv2d.weight, self.conv_Wdz.conv2d.bias)
        return soft_threshold(lamz.reshape(()) * z + self.conv_Wdtz(r), lamj)


def _check_image_batch(x: torch.Tensor, what: str) -> None:
    if not isinstance(x, torch.Tensor) or x.dim() != 4 or x.shape[1] != 1:
        shape = tuple(x.shape) if isinstance(x, torch.Tensor) else type(x).__name__
        raise CausalFuseError(f"{what}: expected a (B, 1, H, W) tensor, got {shape}")
    if min(x.shape[-2:]) < 2:
        raise CausalFuseError(f"{what}: images must be at least 2 x 2 pixels (reflection padding), got {tuple(x.shape[-2:])}")


class LRREncoder(nn.Module):
    """LRRNet's encoder: a grey image -> low-rank part L and sparse part S.

    Parameter names equal the official file's keys without the ``get_ls1.`` /
    ``get_ls2.`` prefix, so :meth:`load_official` loads it directly.

    Args:
        n: channels of each part (the code Z has 2n channels; published: 128).
        blocks: number of LRR blocks (published: 4).
        fused: use the fast fused implementation (see the module docstring).
            ``False`` gives the straightforward module-by-module computation
            with ordinary autograd (kept for checking and for comparison).
        compile: compile the fused pointwise kernels with ``torch.compile``
            (falls back to eager kernels with a warning when compilation is
            unavailable; the environment variable ``CAUSALFUSE_COMPILE=0``
            turns it off everywhere).
        checkpoint_blocks: with ``fused=False``, recompute each block in the
            backward pass instead of storing its activations. The fused
            implementation always recomputes, so it needs no checkpointing.

    Shapes:
        ``forward(x)``: x (B, 1, H, W), H, W >= 2 -> (L, S), each (B, n, H, W),
        views of the code returned by :meth:`forward_code` (B, 2n, H, W).
    """

    def __init__(
        self,
        n: int = N_CHANNELS,
        blocks: int = N_BLOCKS,
        *,
        fused: bool = True,
        compile: bool = True,
        checkpoint_blocks: bool = False,
    ) -> None:
        super().__init__()
        self.n = n
        self.lamj = nn.Parameter(torch.zeros(1, 2 * n))
        self.lamz = nn.Parameter(torch.ones(1, 1))
        self.conv_W00 = ConvLayer(1, 2 * n)
        self.n_blocks = blocks
        for i in range(blocks):
            self.add_module(f"lrrblock{i}", LRRBlock(2 * n))
        self.fused = fused
        self.compile = compile
        self.checkpoint_blocks = checkpoint_blocks
        #: Run inference on the CPU in Numba's loops where they apply (see NUMBA_MIN_PIXELS).
        self.numba = True

    def lrr_blocks(self) -> list[LRRBlock]:
        return [getattr(self, f"lrrblock{i}") for i in range(self.n_blocks)]

    def forward_code(self, x: torch.Tensor) -> torch.Tensor:
        """The whole code Z = [L, S] (B, 2n, H, W)."""
        _check_image_batch(x, "LRR encoder input")
        x = x.contiguous()  # one channel: cheap, and one compiled kernel for tiles cut from larger images
        low = autocast_dtype(x.device.type)
        if self.fused and low is not None:
            # The fused kernels write into buffers they are given, which
            # autocast cannot retype: under autocast the whole encoder runs in
            # its lower precision explicitly (the code Z, the largest tensor,
            # then takes half the memory traffic).
            with torch.autocast(x.device.type, enabled=False):
                return self._forward_code_fused(x.to(low))
        if self.fused:
            return self._forward_code_fused(x)
        z = soft_threshold(self.conv_W00(x), self.lamj)
        for block in self.lrr_blocks():
            if self.checkpoint_blocks and torch.is_grad_enabled():
                z = checkpoint(block, x, z, self.lamj, self.lamz, use_reentrant=False)
            else:
                z = block(x, z, self.lamj, self.lamz)
        return z

    def _fused_params(self) -> list[torch.Tensor]:
        params: list[torch.Tensor] = [self.lamj, self.lamz, self.conv_W00.conv2d.weight, self.conv_W00.conv2d.bias]
        for block in self.lrr_blocks():
            params += [
                block.conv_Wdz.conv2d.weight,
                block.conv_Wdz.conv2d.bias,
                block.conv_Wdtz.conv2d.weight,
                block.conv_Wdtz.conv2d.bias,
            ]
        return params

    def _forward_code_fused(self, x: torch.Tensor) -> torch.Tensor:
        if self._numba_trains(x):
            from .lrr_numba_grad import NumbaEncoder  # converts the weights itself, subnormal values zeroed

            return NumbaEncoder.apply(x, *self._fused_params())
        if self._numba_pays(x):
            from .lrr_numba import encode  # converts the weights itself, subnormal values zeroed

            params = [p.detach() for p in self._fused_params()]
            return encode(x, *params[:4], params[4:])
        params = [_flush_subnormal(p.to(dtype=x.dtype)) for p in self._fused_params()]
        return _FusedEncoder.apply(bool(self.compile), x, *params)

    def _numba_fits(self, x: torch.Tensor) -> bool:
        """Whether Numba's loops can compute this code: a float32 image batch on the CPU, outside autocast, the loops on."""
        return (
            self.numba
            and self.n_blocks >= 1
            and x.dim() == 4
            and x.shape[1] == 1
            and min(x.shape[-2:]) >= 2
            and x.device.type == "cpu"
            and x.dtype == torch.float32
            and autocast_dtype(x.device.type) is None
            and _numba_wanted()
        )

    def _needs_grad(self, x: torch.Tensor) -> bool:
        return torch.is_grad_enabled() and (x.requires_grad or any(p.requires_grad for p in self.parameters()))

    def _numba_pays(self, x: torch.Tensor) -> bool:
        """Inference on a large enough image (faster there than PyTorch's kernels, compiled or not)."""
        return self._numba_fits(x) and not self._needs_grad(x) and x.shape[0] * x.shape[-2] * x.shape[-1] >= NUMBA_MIN_PIXELS

    def _numba_trains(self, x: torch.Tensor) -> bool:
        """Training with float32 parameters on the CPU: the forward and backward passes in Numba's loops (:mod:`.lrr_numba_grad`)."""
        return (
            self._numba_fits(x)
            and self._needs_grad(x)
            and all(p.device.type == "cpu" and p.dtype == torch.float32 for p in self.parameters())
        )

    def forward_code_plain(self, x: torch.Tensor) -> torch.Tensor:
        """The code Z = [L, S] by the formulas, in standard operators only.

        No compiled or custom kernels, autograd functions, in-place updates or
        checks on the input: the form a tracer can record, for ONNX export
        (:mod:`causalfuse.export`). Same result as :meth:`forward_code` to
        float32 rounding.
        """
        lam = self.lamj.reshape(1, -1, 1, 1)
        z = _eta(self.conv_W00(x), lam)
        for block in self.lrr_blocks():
            r = x - conv_to_one(z, block.conv_Wdz.conv2d.weight, block.conv_Wdz.conv2d.bias)
            z = _eta(self.lamz.reshape(()) * z + block.conv_Wdtz(r), lam)
        return z

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        z = self.forward_code(x)
        return z[:, : self.n], z[:, self.n :]

    def load_official(self, state: Mapping[str, torch.Tensor], prefix: str = "get_ls1.") -> None:
        """Load one encoder of LRRNet's published state dict (``get_ls1.``: infrared, ``get_ls2.``: visible)."""
        sub = {k[len(prefix) :]: v for k, v in state.items() if k.startswith(prefix)}
        _load_strict(self, sub, f"LRRNet encoder {prefix.rstrip('.')!r}")


def encode_side_by_side(encoders: list[LRREncoder], inputs: list[torch.Tensor]) -> list[torch.Tensor] | None:
    """The codes of several encoders' inputs, computed side by side; None where that does not apply.

    Where every encoder would run Numba's loops on its input (inference on
    the CPU, large enough images), each image goes through all its stages on
    one thread, the images in parallel (:func:`causalfuse.models.lrr_numba.encode_many`):
    faster than sharing each stage among the threads, because an image's code
    then stays in the cache from one stage to the next. The codes are those of
    :meth:`LRREncoder.forward_code`, channels-last in memory.
    """
    if not all(isinstance(e, LRREncoder) and e.fused and e._numba_pays(x) for e, x in zip(encoders, inputs)):
        return None
    from .lrr_numba import encode_many, weights

    jobs = []
    for encoder, x in zip(encoders, inputs):
        params = [p.detach() for p in encoder._fused_params()]  # weights() zeroes subnormal values
        jobs.append((x.contiguous(), weights(*params[:4], params[4:])))
    return encode_many(jobs)


class LRRDecoder(nn.Module):
    """LRRNet's decoder (fusion type "cat"): fused = conv_ReL([ReZx(L_ir), ReZy(L_vi)]) + conv_ReH([ReUx(S_ir), ReUy(S_vi)])."""

    def __init__(self, n: int = N_CHANNELS) -> None:
        super().__init__()
        self.conv_ReZx = ConvLayer(n, 1)
        self.conv_ReUx = ConvLayer(n, 1)
        self.conv_ReZy = ConvLayer(n, 1)
        self.conv_ReUy = ConvLayer(n, 1)
        self.conv_ReL = ConvLayer(2, 1)
        self.conv_ReH = ConvLayer(2, 1)

    @staticmethod
    def _to_one(layer: ConvLayer, z: torch.Tensor) -> torch.Tensor:
        # n -> 1 conv without a padded copy of the n-channel part
        return conv_to_one(z, layer.conv2d.weight, layer.conv2d.bias)

    @staticmethod
    def _part_taps(z: torch.Tensor, low: ConvLayer, high: ConvLayer, use_compile: bool) -> torch.Tensor:
        # Both n -> 1 convs of one code [L, S] as one projection of the 2n
        # channels onto 18 taps (block-diagonal weights): one pass over z,
        # and in training one code-sized gradient instead of two slices'.
        n = low.conv2d.weight.shape[1]
        w_low = low.conv2d.weight.reshape(n, TAPS).t()
        w_high = high.conv2d.weight.reshape(n, TAPS).t()
        zeros = w_low.new_zeros(TAPS, n)
        w = torch.cat([torch.cat([w_low, zeros], dim=1), torch.cat([zeros, w_high], dim=1)], dim=0).to(z.dtype)
        if torch.is_grad_enabled() and (z.requires_grad or w.requires_grad):
            return _project(z, w)
        return _PROJECT(z, w, use_compile=use_compile)

    def forward_codes(self, z_ir: torch.Tensor, z_vi: torch.Tensor, *, use_compile: bool = True) -> torch.Tensor:
        """The fused output from the whole codes [L, S] (B, 2n, H, W) of both encoders."""
        t_ir = self._part_taps(z_ir, self.conv_ReZx, self.conv_ReUx, use_compile)
        t_vi = self._part_taps(z_vi, self.conv_ReZy, self.conv_ReUy, use_compile)

        def one(taps: torch.Tensor, layer: ConvLayer) -> torch.Tensor:
            return _shift_sum(taps) + layer.conv2d.bias.view(1, 1, 1, 1)

        low = self.conv_ReL(torch.cat([one(t_ir[:, :TAPS], self.conv_ReZx), one(t_vi[:, :TAPS], self.conv_ReZy)], dim=1))
        high = self.conv_ReH(torch.cat([one(t_ir[:, TAPS:], self.conv_ReUx), one(t_vi[:, TAPS:], self.conv_ReUy)], dim=1))
        return low + high

    def forward(self, l_ir: torch.Tensor, s_ir: torch.Tensor, l_vi: torch.Tensor, s_vi: torch.Tensor) -> torch.Tensor:
        low = self.conv_ReL(torch.cat([self._to_one(self.conv_ReZx, l_ir), self._to_one(self.conv_ReZy, l_vi)], dim=1))
        high = self.conv_ReH(torch.cat([self._to_one(self.conv_ReUx, s_ir), self._to_one(self.conv_ReUy, s_vi)], dim=1))
        return low + high


class LRRNet(nn.Module):
    """The whole LRRNet: infrared and visible encoders and the decoder.

    ``forward(ir, vi)``: (B, 1, H, W) each, min-max normalised to [0, 1] as the
    official test does -> raw fused (B, 1, H, W) (see :func:`lrrnet_postprocess`).
    """

    def __init__(self, *, fused: bool = True, compile: bool = True) -> None:
        super().__init__()
        self.encoder_ir = LRREncoder(fused=fused, compile=compile)
        self.encoder_vi = LRREncoder(fused=fused, compile=compile)
        self.decoder = LRRDecoder()

    def forward(self, ir: torch.Tensor, vi: torch.Tensor) -> torch.Tensor:
        if ir.shape != vi.shape:
            raise CausalFuseError(f"infrared and visible inputs differ in shape: {tuple(ir.shape)} vs {tuple(vi.shape)}")
        if self.encoder_ir.fused:
            codes = encode_side_by_side([self.encoder_ir, self.encoder_vi], [ir, vi])
            z_ir, z_vi = codes if codes is not None else (self.encoder_ir.forward_code(ir), self.encoder_vi.forward_code(vi))
            return self.decoder.forward_codes(z_ir, z_vi, use_compile=self.encoder_ir.compile)
        l_ir, s_ir = self.encoder_ir(ir)
        l_vi, s_vi = self.encoder_vi(vi)
        return self.decoder(l_ir, s_ir, l_vi, s_vi)

    def load_official(self, state: Mapping[str, torch.Tensor]) -> None:
        self.encoder_ir.load_official(state, prefix="get_ls1.")
        self.encoder_vi.load_official(state, prefix="get_ls2.")
        sub = {k[len("decoder.") :]: v for k, v in state.items() if k.startswith("decoder.")}
        _load_strict(self.decoder, sub, "LRRNet decoder")

    @classmethod
    def from_official(cls, path: str | Path, **options: Any) -> "LRRNet":
        """The network with LRRNet's published weights file at ``path``, in eval mode."""
        net = cls(**options)
        net.load_official(load_lrrnet_state(path))
        return net.eval()


def _load_strict(module: nn.Module, state: Mapping[str, torch.Tensor], what: str) -> None:
    missing, unexpected, wrong = state_mismatch(state, {k: tuple(v.shape) for k, v in module.state_dict().items()})
    if missing or unexpected or wrong:
        parts = []
        if missing:
            parts.append(f"{len(missing)} missing ({_listing(missing)})")
        if unexpected:
            parts.append(f"{len(unexpected)} unexpected ({_listing(unexpected)})")
        if wrong:
            parts.append(f"wrong shapes: {_listing(wrong, 4)}")
        raise CausalFuseError(f"{what}: the weights do not match: {' / '.join(parts)}")
    module.load_state_dict(dict(state), strict=True)


# ---------------------------------------------------------------------------
# the official weights file
# ---------------------------------------------------------------------------
def _official_shapes(n: int = N_CHANNELS, blocks: int = N_BLOCKS) -> dict[str, tuple[int, ...]]:
    c = 2 * n
    shapes: dict[str, tuple[int, ...]] = {}
    for enc in ("get_ls1", "get_ls2"):
        shapes[f"{enc}.lamj"] = (1, c)
        shapes[f"{enc}.lamz"] = (1, 1)
        shapes[f"{enc}.conv_W00.conv2d.weight"] = (c, 1, KERNEL, KERNEL)
        shapes[f"{enc}.conv_W00.conv2d.bias"] = (c,)
        for i in range(blocks):
            shapes[f"{enc}.lrrblock{i}.conv_Wdz.conv2d.weight"] = (1, c, KERNEL, KERNEL)
            shapes[f"{enc}.lrrblock{i}.conv_Wdz.conv2d.bias"] = (1,)
            shapes[f"{enc}.lrrblock{i}.conv_Wdtz.conv2d.weight"] = (c, 1, KERNEL, KERNEL)
            shapes[f"{enc}.lrrblock{i}.conv_Wdtz.conv2d.bias"] = (c,)
    for name in ("conv_ReZx", "conv_ReUx", "conv_ReZy", "conv_ReUy"):
        shapes[f"decoder.{name}.conv2d.weight"] = (1, n, KERNEL, KERNEL)
        shapes[f"decoder.{name}.conv2d.bias"] = (1,)
    for name in ("conv_ReL", "conv_ReH"):
        shapes[f"decoder.{name}.conv2d.weight"] = (1, 2, KERNEL, KERNEL)
        shapes[f"decoder.{name}.conv2d.bias"] = (1,)
    return shapes


def _listing(keys: list[str], limit: int = 6) -> str:
    more = f" and {len(keys) - limit} more" if len(keys) > limit else ""
    return ", ".join(keys[:limit]) + more


def state_mismatch(
    state: Mapping[str, torch.Tensor], expected: Mapping[str, tuple[int, ...]]
) -> tuple[list[str], list[str], list[str]]:
    """Compare a state dict with the expected tensor shapes.

    Returns:
        (missing keys, unexpected keys, ``"key (got) (expected (want))"`` for
        wrong shapes), each sorted; all empty when the state fits.
    """
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    wrong = sorted(
        f"{k} {tuple(state[k].shape)} (expected {tuple(expected[k])})"
        for k in expected
        if k in state and tuple(state[k].shape) != tuple(expected[k])
    )
    return missing, unexpected, wrong


def load_lrrnet_state(path: str | Path) -> dict[str, torch.Tensor]:
    """Read and check LRRNet's published weights file (a PyTorch state dict).

    The file is loaded with ``weights_only=True`` (no arbitrary unpickling). A
    ``module.`` prefix (a model saved from ``DataParallel``) is accepted.

    Returns:
        The state dict, every tensor float32 on the CPU.

    Raises:
        CausalFuseError: the file is missing or unreadable, is not a state
            dict, or its keys or shapes are not those of the published model.
    """
    path = Path(path)
    if not path.is_file():
        raise CausalFuseError(f"LRRNet weights file {str(path)!r} does not exist" + (" (it is a directory)" if path.is_dir() else ""))
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        # PyTorch's message advises loading with weights_only=False, i.e. running
        # whatever code the file holds: not advice to pass on.
        if "Unsupported global" in str(exc):
            raise CausalFuseError(
                f"LRRNet weights file {str(path)!r} holds Python objects other than tensors (a pickled model or other "
                "objects), which causalfuse does not unpickle, as that can run code; give the published state dict"
            ) from None
        raise CausalFuseError(f"LRRNet weights file {str(path)!r} could not be read: not a PyTorch weights file (corrupt, or another format)") from None
    except Exception as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise CausalFuseError(f"LRRNet weights file {str(path)!r} could not be read as a PyTorch state dict (corrupt or not a weights file): {first}") from None
    if isinstance(state, Mapping) and "state_dict" in state and isinstance(state["state_dict"], Mapping):
        state = state["state_dict"]
    if not isinstance(state, Mapping) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise CausalFuseError(f"LRRNet weights file {str(path)!r} does not hold a state dict of tensors (found {type(state).__name__})")
    if state and all(str(k).startswith("module.") for k in state):
        state = {str(k)[len("module.") :]: v for k, v in state.items()}
    expected = _official_shapes()
    missing, unexpected, wrong = state_mismatch(state, expected)
    problems = []
    if missing:
        problems.append(f"{len(missing)} missing keys ({_listing(missing)})")
    if unexpected:
        problems.append(f"{len(unexpected)} unexpected keys ({_listing(unexpected)})")
    if wrong:
        problems.append(f"wrong shapes: {_listing(wrong, 4)}")
    if problems:
        raise CausalFuseError(f"LRRNet weights file {str(path)!r} is not LRRNet's published model (n=128, 4 blocks): {'; '.join(problems)}")
    out: dict[str, torch.Tensor] = {}
    for k in expected:
        v = state[k]
        if not v.is_floating_point():
            raise CausalFuseError(f"LRRNet weights file {str(path)!r}: {k} has dtype {v.dtype}, expected floating point")
        v = v.detach().to(dtype=torch.float32, device="cpu")
        if not torch.isfinite(v).all():
            raise CausalFuseError(f"LRRNet weights file {str(path)!r}: {k} holds non-finite values")
        out[k] = v
    return out


# ---------------------------------------------------------------------------
# the official pre- and post-processing
# ---------------------------------------------------------------------------
def lrrnet_preprocess(gray: np.ndarray | torch.Tensor) -> np.ndarray | torch.Tensor:
    """LRRNet's input normalisation: (x - min) / (max - min + 1e-4).

    Args:
        gray: one grey image, uint8 or float on the 0..255 scale (any shape).

    Returns:
        float32 in [0, 1), numpy in -> numpy out, tensor in -> tensor out.
    """
    if isinstance(gray, torch.Tensor):
        x = gray.to(torch.float32)
        return (x - x.min()) / (x.max() - x.min() + EPS)
    x = np.asarray(gray, dtype=np.float32)
    return (x - x.min()) / (x.max() - x.min() + np.float32(EPS))


def lrrnet_postprocess(raw: np.ndarray | torch.Tensor) -> np.ndarray:
    """LRRNet's output conversion: clamp to [0, 255], min-max to [0, 1] (eps 1e-4), times 255, truncated to uint8.

    Args:
        raw: the raw network output of one image ((H, W), or with leading
            singleton dimensions).

    Returns:
        (H, W) uint8 numpy array.
    """
    if isinstance(raw, torch.Tensor):
        raw = raw.detach().to("cpu", torch.float32).numpy()
    x = np.asarray(raw, dtype=np.float32)
    while x.ndim > 2 and x.shape[0] == 1:
        x = x[0]
    x = np.clip(x, 0.0, 255.0)
    x = (x - x.min()) / (x.max() - x.min() + np.float32(EPS))
    return (x * np.float32(255.0)).astype(np.uint8)


def lrrnet_fuse_gray(ir_gray: np.ndarray | torch.Tensor, vi_gray: np.ndarray | torch.Tensor, net: LRRNet) -> np.ndarray:
    """Fuse one grey pair exactly as LRRNet's official test does.

    Args:
        ir_gray, vi_gray: (H, W) grey images on the 0..255 scale (uint8 or float).
        net: an :class:`LRRNet` with the published weights.

    Returns:
        (H, W) uint8 fused image.
    """
    ir = torch.as_tensor(lrrnet_preprocess(ir_gray))
    vi = torch.as_tensor(lrrnet_preprocess(vi_gray))
    if ir.shape != vi.shape or ir.dim() != 2:
        raise CausalFuseError(f"LRRNet fuses two grey images of the same (H, W) shape, got {tuple(ir.shape)} and {tuple(vi.shape)}")
    param = next(net.parameters())
    with torch.inference_mode():
        raw = net(ir.to(param.device)[None, None], vi.to(param.device)[None, None])
    return lrrnet_postprocess(raw)
