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

How it is made fast and lean (the results are those of the formulas above, to
float32 rounding; ``benchmarks/lrr_plain.py`` is the literal transcription
they are checked and timed against): the cost of a literal implementation is
memory traffic on the 256-channel full-resolution code Z, not arithmetic. Here

* the 256 -> 1 conv is a per-pixel projection of Z onto its 9 taps (one
  pass over Z) followed by a shifted sum of the 9 small maps; reflection
  padding commutes with the per-pixel projection, so only one- and
  nine-channel maps are padded, never Z;
* given the 9 shifted copies ("taps") of the one-channel residual, the block
  update ``eta(lamz * Z + conv_Wdtz(r))`` is pointwise: one fused kernel
  reads Z once and writes the new Z *in place* (a fresh 256-channel buffer
  costs more in page faults than the arithmetic);
* the soft threshold is applied inside those kernels, with the threshold
  broadcast, never expanded;
* on the CPU without compilation (what fusion runs there), each stage goes
  through the code 2,048 pixels at a time, doing all of its work on a chunk
  while the cache holds it (the update, the soft threshold as one operation
  on a per-channel scaled code, and the next block's projection): one read
  and one write of Z per stage, faster than the compiled kernels at every
  image size measured here (see "the encoder's stages on the CPU" below);
* otherwise the kernels are compiled with ``torch.compile`` (Inductor) on
  first use, with dynamic shapes (training, and a GPU); when compilation is
  unavailable or fails they fall back, with a warning, to eager kernels
  doing the same arithmetic (``CAUSALFUSE_COMPILE=0`` forces the eager
  kernels);
* for training, the whole encoder is one autograd function that saves only
  the input, the taps of the blocks' one-channel residuals and its output;
  the backward pass recomputes each block's input code from them and uses
  two code-sized buffers in all, so no 256-channel intermediate is kept
  between forward and backward (activation checkpointing is built in).
"""

from __future__ import annotations

import contextlib
import functools
import os
import pickle
import warnings
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F
from torch.utils.checkpoint import checkpoint

from ..errors import CausalFuseError, CausalFuseWarning

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
KERNEL = 3
TAPS = KERNEL * KERNEL
EPS = 1e-4  # the official pre/post-processing epsilon


# ---------------------------------------------------------------------------
# soft threshold
# ---------------------------------------------------------------------------
def _channel_view(lam: torch.Tensor, r: torch.Tensor) -> torch.Tensor:
    """Per-channel thresholds (C,), (1, C) or a scalar, as a view broadcasting along dim 1 of r."""
    if lam.numel() == 1:
        return lam.reshape(())
    if r.dim() < 2 or lam.numel() != r.shape[1]:
        raise ValueError(f"soft_threshold: {lam.numel()} thresholds for input of shape {tuple(r.shape)} (dim 1 is the channel)")
    return lam.reshape((1, -1) + (1,) * (r.dim() - 2))


def _eta(r: torch.Tensor, lam: torch.Tensor) -> torch.Tensor:
    # The formula itself: for a negative threshold it is sign(r)(|r| + |lam|),
    # which ``r - clamp(r, -lam, lam)`` (soft shrink) does not give.
    return torch.sign(r) * torch.relu(torch.abs(r) - lam)


def _eta_(acc: torch.Tensor, lam: torch.Tensor) -> torch.Tensor:
    """eta computed in the storage of ``acc`` (one temporary: the sign)."""
    sign = torch.sign(acc)
    return acc.abs_().sub_(lam).relu_().mul_(sign)


class _SoftThreshold(torch.autograd.Function):
    """eta with a backward that keeps only the output.

    Where the output is non-zero the derivative w.r.t. r is 1 and w.r.t. lam_c
    is -sign(output); where it is zero both are 0 (this holds for negative
    thresholds too: there the output is zero exactly where r is).
    """

    @staticmethod
    def forward(ctx: Any, r: torch.Tensor, lam: torch.Tensor) -> torch.Tensor:
        lam_b = _channel_view(lam, r)
        out = torch.abs(r).sub_(lam_b).relu_().mul_(torch.sign(r))
        ctx.save_for_backward(out)
        ctx.lam_shape = lam.shape
        ctx.lam_b_shape = lam_b.shape
        return out

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[torch.Tensor | None, torch.Tensor | None]:
        (out,) = ctx.saved_tensors
        grad_r = grad_lam = None
        if ctx.needs_input_grad[0]:
            grad_r = torch.where(out != 0, grad, torch.zeros((), dtype=grad.dtype, device=grad.device))
        if ctx.needs_input_grad[1]:
            g = -(grad * torch.sign(out))
            if len(ctx.lam_b_shape) == 0:
                grad_lam = g.sum().reshape(ctx.lam_shape)
            else:
                dims = [d for d in range(g.dim()) if d != 1]
                grad_lam = g.sum(dim=dims).reshape(ctx.lam_shape)
        return grad_r, grad_lam


def soft_threshold(r: torch.Tensor, lam: torch.Tensor) -> torch.Tensor:
    """The soft threshold ``sign(r) * max(|r| - lam_c, 0)`` with one threshold per channel.

    The formula is implemented as written, so it is also right for negative
    thresholds (LRRNet's published infrared encoder has one), where it equals
    ``sign(r) * (|r| + |lam_c|)``. The threshold is broadcast, never expanded
    to the size of ``r``; the backward pass keeps only the output.

    Args:
        r: (B, C, ...) input.
        lam: (C,) or (1, C) per-channel thresholds, or a single value.

    Returns:
        Tensor of the shape, dtype and device of ``r``.
    """
    return _SoftThreshold.apply(r, lam)


# ---------------------------------------------------------------------------
# small-map helpers: taps, shifted sums, projections
# ---------------------------------------------------------------------------
def _tap_kernel(like: torch.Tensor, channels_in: int) -> torch.Tensor:
    """One-hot 3x3 kernels selecting tap t = 3 * dy + dx; (9, 1, 3, 3) or (1, 9, 3, 3)."""
    k = torch.eye(TAPS, dtype=like.dtype, device=like.device).view(TAPS, 1, KERNEL, KERNEL)
    return k if channels_in == 1 else k.transpose(0, 1)


def _taps(x: torch.Tensor) -> torch.Tensor:
    """(B, 1, H, W) -> (B, 9, H, W): the 9 shifted copies a reflection-padded 3x3 conv reads.

    Nine slices of the padded map, concatenated: exact copies, several times
    faster on the CPU than a convolution with one-hot kernels, and written so
    that it compiles into one loop.
    """
    h, w = x.shape[-2:]
    xp = F.pad(x, (1, 1, 1, 1), mode="reflect")
    return torch.cat([xp[:, :, dy : dy + h, dx : dx + w] for dy in range(KERNEL) for dx in range(KERNEL)], dim=1)


def _shift_sum(p: torch.Tensor) -> torch.Tensor:
    """(B, 9, H, W) per-tap maps -> (B, 1, H, W): sum over taps of the reflection-padded, shifted map."""
    return F.conv2d(F.pad(p, (1, 1, 1, 1), mode="reflect"), _tap_kernel(p, TAPS))


def _pad_adjoint(gp: torch.Tensor) -> torch.Tensor:
    """Adjoint of a 1-pixel reflection pad: (..., H+2, W+2) -> (..., H, W), border folded back."""
    h, w = gp.shape[-2] - 2, gp.shape[-1] - 2
    g = gp[..., 1 : w + 1] + F.pad(gp[..., 0:1], (1, w - 2)) + F.pad(gp[..., w + 1 : w + 2], (w - 2, 1))
    return g[..., 1 : h + 1, :] + F.pad(g[..., 0:1, :], (0, 0, 1, h - 2)) + F.pad(g[..., h + 1 : h + 2, :], (0, 0, h - 2, 1))


def _place(t: torch.Tensor, tap: int) -> torch.Tensor:
    """Adjoint of reading tap ``tap`` of a padded map: (..., H, W) -> (..., H+2, W+2)."""
    dy, dx = divmod(tap, KERNEL)
    return F.pad(t, (dx, KERNEL - 1 - dx, dy, KERNEL - 1 - dy))


def _residual_taps_pw(p: torch.Tensor, x: torch.Tensor, bdz: torch.Tensor) -> torch.Tensor:
    """Taps of r = x - (shift_sum(p) + bdz), written with slices so that it compiles into one loop."""
    h, w = x.shape[-2:]
    pp = F.pad(p, (1, 1, 1, 1), mode="reflect")
    y = pp[:, 0:1, 0:h, 0:w]
    for t in range(1, TAPS):
        dy, dx = divmod(t, KERNEL)
        y = y + pp[:, t : t + 1, dy : dy + h, dx : dx + w]
    return _taps(x - (y + bdz.view(1, 1, 1, 1)))


def _residual_taps_eager(p: torch.Tensor, x: torch.Tensor, bdz: torch.Tensor) -> torch.Tensor:
    return _taps(x - (_shift_sum(p) + bdz.view(1, 1, 1, 1)))


def _residual_taps_bwd_pw(d_rt: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Given dL/d(taps of r): dL/dr, and dL/dp for r = x - shift_sum(p) - b."""
    d_r = _place(d_rt[:, 0:1], 0)
    for t in range(1, TAPS):
        d_r = d_r + _place(d_rt[:, t : t + 1], t)
    d_r = _pad_adjoint(d_r)
    d_p = _pad_adjoint(torch.cat([_place(-d_r, t) for t in range(TAPS)], dim=1))
    return d_r, d_p


def _taps_adjoint_eager(d_t: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    return torch.ops.aten.reflection_pad2d_backward(F.conv_transpose2d(d_t, _tap_kernel(d_t, 1)), like, [1, 1, 1, 1])


def _residual_taps_bwd_eager(d_rt: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    b, _, h, w = d_rt.shape
    d_r = _taps_adjoint_eager(d_rt, d_rt[:, :1])
    d_pp = F.conv_transpose2d(-d_r, _tap_kernel(d_r, TAPS))
    return d_r, torch.ops.aten.reflection_pad2d_backward(d_pp, d_rt, [1, 1, 1, 1])


def _project(z: torch.Tensor, w9: torch.Tensor) -> torch.Tensor:
    """(B, C, H, W) x (T, C) -> (B, T, H, W): one GEMM reading z once.

    ``bmm`` with the weights expanded over the batch: ``matmul`` would fold the
    batch into the GEMM by copying z.
    """
    b, c, h, w = z.shape
    return torch.bmm(w9.expand(b, -1, -1), z.reshape(b, c, h * w)).view(b, w9.shape[0], h, w)


def conv_to_one(z: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
    """A reflection-padded 3x3 conv C -> 1 without padding z (differentiable).

    Args:
        z: (B, C, H, W). weight: (1, C, 3, 3). bias: (1,).
    """
    c = weight.shape[1]
    return _shift_sum(_project(z, weight.reshape(c, TAPS).t())) + bias.view(1, 1, 1, 1)


# ---------------------------------------------------------------------------
# fused pointwise kernels (compiled when possible) and their eager fallbacks
#
# Every kernel writes into a buffer it is given: a fresh 256-channel buffer
# costs page faults that take several times longer than the arithmetic, so the
# encoder keeps one code buffer and updates it in place.
# ---------------------------------------------------------------------------
def _first_pw(xt: torch.Tensor, w: torch.Tensor, b: torch.Tensor, lam: torch.Tensor) -> torch.Tensor:
    """eta(conv_W00(x)) from the 9 taps xt (B, 9, H, W); w (C, 9), b (C,), lam (C,)."""
    acc = b.view(1, -1, 1, 1) + w[:, 0].view(1, -1, 1, 1) * xt[:, 0:1]
    for t in range(1, TAPS):
        acc = acc + w[:, t].view(1, -1, 1, 1) * xt[:, t : t + 1]
    return _eta(acc, lam.view(1, -1, 1, 1))


def _update_pw(
    z: torch.Tensor, rt: torch.Tensor, w: torch.Tensor, b: torch.Tensor, lamz: torch.Tensor, lam: torch.Tensor
) -> torch.Tensor:
    """eta(lamz * z + conv_Wdtz(r)) from the 9 taps rt of the residual r."""
    acc = lamz.view(()) * z + b.view(1, -1, 1, 1)
    for t in range(TAPS):
        acc = acc + w[:, t].view(1, -1, 1, 1) * rt[:, t : t + 1]
    return _eta(acc, lam.view(1, -1, 1, 1))


def _project_pw(z: torch.Tensor, w9: torch.Tensor) -> torch.Tensor:
    """(B, C, H, W) x (T, C) -> (B, T, H, W) as per-pixel sums over channels.

    Compiled, this reads z once with all T accumulators in registers and beats
    the GEMM (whose M = T is too small to be efficient).
    """
    return torch.cat([(z * w9[t].view(1, -1, 1, 1)).sum(1, keepdim=True) for t in range(w9.shape[0])], dim=1)


def _first_into(out: torch.Tensor, xt: torch.Tensor, w: torch.Tensor, b: torch.Tensor, lam: torch.Tensor) -> None:
    out.copy_(_first_pw(xt, w, b, lam))


def _update_(z: torch.Tensor, rt: torch.Tensor, w: torch.Tensor, b: torch.Tensor, lamz: torch.Tensor, lam: torch.Tensor) -> None:
    z.copy_(_update_pw(z, rt, w, b, lamz, lam))


def _mask_(g: torch.Tensor, z_out: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Backward through eta in place: g <- g where the output is non-zero, else 0.

    Returns the per-channel gradients of the threshold and of a bias added
    before eta.
    """
    d = torch.where(z_out != 0, g, torch.zeros((), dtype=g.dtype, device=g.device))
    g.copy_(d)
    return -(d * torch.sign(z_out)).sum(dim=(0, 2, 3)), d.sum(dim=(0, 2, 3))


def _first_into_eager(out: torch.Tensor, xt: torch.Tensor, w: torch.Tensor, b: torch.Tensor, lam: torch.Tensor) -> None:
    bsz, c, h, wd = out.shape
    torch.baddbmm(
        b.view(1, c, 1).expand(bsz, c, h * wd), w.expand(bsz, c, TAPS), xt.reshape(bsz, TAPS, h * wd), out=out.view(bsz, c, h * wd)
    )
    _eta_eager_(out, lam)


def _update_eager_(z: torch.Tensor, rt: torch.Tensor, w: torch.Tensor, b: torch.Tensor, lamz: torch.Tensor, lam: torch.Tensor) -> None:
    bsz, c, h, wd = z.shape
    z.view(bsz, c, h * wd).baddbmm_(w.expand(bsz, c, TAPS), rt.reshape(bsz, TAPS, h * wd), beta=float(lamz))
    _eta_eager_(z, lam, bias=b)


def _eta_eager_(acc: torch.Tensor, lam: torch.Tensor, *, bias: torch.Tensor | None = None) -> None:
    """acc <- eta(acc + bias, lam) in place, for the eager kernels; lam and bias (C,).

    On the CPU this goes one channel at a time, as a soft shrink where the
    threshold is not negative: one pass over data the cache holds and no
    temporary, where the whole-code form (:func:`_eta_`) reads and writes the
    code five times and allocates a code-sized sign, whose page faults alone
    cost more than the arithmetic. The values are the formula's (only the sign
    of a zero may differ). Channels with a negative threshold, where soft
    shrink is not eta, use the formula. The per-channel operations run on the
    calling thread: each is too small to share (a fork and join per channel,
    and on a busy machine a wait for a descheduled thread each time). On a
    GPU the whole-code form is used.
    """
    c = acc.shape[1]
    if acc.device.type != "cpu":
        if bias is not None:
            acc.add_(bias.view(1, c, 1, 1))
        _eta_(acc, lam.view(1, c, 1, 1))
        return
    thresholds = lam.reshape(c).tolist()
    biases = bias.reshape(c).tolist() if bias is not None else None
    with _single_threaded():
        for k, threshold in enumerate(thresholds):
            channel = acc[:, k]
            if biases is not None:
                channel.add_(biases[k])
            if threshold >= 0:
                torch.ops.aten.softshrink.out(channel, threshold, out=channel)
            else:
                _eta_(channel, lam.reshape(c)[k])


@functools.lru_cache(maxsize=None)
def _openmp_backend() -> bool:
    # Only OpenMP takes a new thread count at any time; the native backend
    # refuses one once parallel work has started (with a warning each time).
    return "ATen parallel backend: OpenMP" in torch.__config__.parallel_info()


@contextlib.contextmanager
def _single_threaded() -> Iterator[None]:
    """PyTorch's CPU operations on one thread inside the block (the count is restored after it)."""
    threads = torch.get_num_threads()
    if threads == 1 or not _openmp_backend():
        yield
        return
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


def _mask_eager_(g: torch.Tensor, z_out: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    g.masked_fill_(z_out == 0, 0)
    return -(g * torch.sign(z_out)).sum(dim=(0, 2, 3)), g.sum(dim=(0, 2, 3))


def _compile_wanted() -> bool:
    return os.environ.get("CAUSALFUSE_COMPILE", "1").strip().lower() not in ("0", "false", "no", "off")


def compile_available() -> bool:
    """Whether the fused kernels may be compiled (``CAUSALFUSE_COMPILE=0`` turns compilation off)."""
    return _compile_wanted() and hasattr(torch, "compile")


#: Why compilation is off for every kernel (no working C++ compiler, ...); None while it works.
_COMPILE_UNAVAILABLE: str | None = None


class _Kernel:
    """A pointwise kernel: compiled on first use, with a permanent eager fallback if that fails.

    A failure that will hit every kernel (no working C++ compiler) turns
    compilation off for all of them, with one warning; any other failure
    turns it off for this kernel only.
    """

    def __init__(self, fn: Callable[..., Any], eager: Callable[..., Any]) -> None:
        self.fn = fn
        self.eager = eager
        self._compiled: Any = None  # None: not tried yet; False: unavailable

    def compiles(self, use_compile: bool = True) -> bool:
        """Whether a call with ``use_compile`` would run (or try) the compiled kernel."""
        return use_compile and self._compiled is not False and _COMPILE_UNAVAILABLE is None and compile_available()

    def __call__(self, *args: Any, use_compile: bool = True) -> Any:
        global _COMPILE_UNAVAILABLE
        # Detached views (same storage): requires_grad flags must not trigger recompilation.
        args = tuple(a.detach() if isinstance(a, torch.Tensor) else a for a in args)
        if self.compiles(use_compile):
            try:
                if self._compiled is None:
                    self._compiled = torch.compile(self.fn, dynamic=True, fullgraph=True)
                return self._compiled(*args)
            except Exception as exc:  # no C++ compiler, unsupported platform, ...
                self._compiled = False
                text = f"{type(exc).__name__}: {str(exc).strip()}"
                if "CxxCompiler" in text or "C++ compiler" in text:
                    _COMPILE_UNAVAILABLE = text.splitlines()[0]
                    warnings.warn(
                        "no working C++ compiler for torch.compile, so fusion runs in eager PyTorch kernels: "
                        "the same result, more slowly (install g++, or set CAUSALFUSE_COMPILE=0 to skip the attempt)",
                        CausalFuseWarning,
                        stacklevel=2,
                    )
                else:
                    warnings.warn(
                        f"torch.compile of the LRR kernel {self.fn.__name__} failed ({text.splitlines()[0] if text else ''}); "
                        "using the slower eager kernel",
                        CausalFuseWarning,
                        stacklevel=2,
                    )
        return self.eager(*args)


_FIRST = _Kernel(_first_into, _first_into_eager)
_UPDATE = _Kernel(_update_, _update_eager_)
_MASK = _Kernel(_mask_, _mask_eager_)
_PROJECT = _Kernel(_project_pw, _project)
_RESIDUAL_TAPS = _Kernel(_residual_taps_pw, _residual_taps_eager)
_RESIDUAL_TAPS_BWD = _Kernel(_residual_taps_bwd_pw, _residual_taps_bwd_eager)


# ---------------------------------------------------------------------------
# the encoder's stages on the CPU without compiled kernels: chunk by chunk
#
# Each stage computes Z = eta(beta * Z + W t + b) from the 9 taps t of a
# one-channel map (the input for the first stage, a residual for the blocks)
# and, for the next block, the projection of the new Z onto that block's 9
# taps. Done as whole-code operations, that is four or five passes over the
# 256-channel code, each limited by memory bandwidth. Here the code is
# processed 2,048 pixels at a time (2 MB in float32, which the cache holds),
# with every operation of the stage applied to the chunk before the next one:
# one read and one write of the code per stage.
#
# The soft threshold becomes one operation with a per-channel scale: with
# Zs = Z / lam_c for a channel whose threshold lam_c is positive,
# eta(R, lam_c) / lam_c = softshrink(R / lam_c, 1), and the stage's update is
# linear, so the stages carry the scaled code (weights divided, the next
# projection's weights multiplied by lam_c) and the last one scales it back.
# Channels whose threshold is not positive (the published infrared encoder
# has one negative) keep scale 1 and get the formula itself.
# ---------------------------------------------------------------------------
#: Pixels per chunk of the CPU eager stages.
EAGER_CHUNK = 2048

#: Thresholds at or below this are computed by the formula rather than scaled.
_MIN_SCALED_THRESHOLD = 1e-6


class _ChannelScale:
    """The per-channel scale of the stages' scaled code, from the thresholds lam (C,)."""

    def __init__(self, lam: torch.Tensor) -> None:
        regular = lam > _MIN_SCALED_THRESHOLD
        self.scale = torch.where(regular, lam, torch.ones_like(lam))
        self.irregular = torch.nonzero(~regular).flatten()
        self.lam_irregular = lam[self.irregular].view(-1, 1)


def _stage_chunked_(
    z: torch.Tensor,
    taps: torch.Tensor,
    w: torch.Tensor,
    b: torch.Tensor,
    beta: float,
    cs: _ChannelScale,
    *,
    project: torch.Tensor | None = None,
    last: bool = False,
) -> torch.Tensor | None:
    """One stage in place on the scaled code z (B, C, H, W); see the section above.

    ``w`` (C, 9) and ``b`` (C,) are the stage's unscaled conv weights, ``beta``
    0 for the first stage (z is not read) and lamz for a block. ``project``
    (T, C): the next block's tap weights, whose (B, T, H, W) projection of the
    new (unscaled) code is returned. ``last``: leave z unscaled.
    """
    bsz, c, h, wd = z.shape
    hw = h * wd
    zf = z.view(bsz, c, hw)
    scale = cs.scale.to(z.dtype).view(c, 1)
    drive = torch.cat([taps.reshape(bsz, TAPS, hw), taps.new_ones(bsz, 1, hw)], dim=1)
    exact = torch.promote_types(z.dtype, torch.float32)  # the scaled weights are rounded once, to z's type
    scale_w = cs.scale.to(exact)
    weights = (torch.cat([w, b.view(c, 1)], dim=1).to(exact) / scale_w.view(c, 1)).to(z.dtype)
    proj = pf = None
    if project is not None:
        weights_p = project.to(exact) * (1.0 if last else scale_w.view(1, c))
        weights_p = weights_p.to(z.dtype)
        proj = z.new_empty(bsz, project.shape[0], h, wd)
        pf = proj.view(bsz, project.shape[0], hw)
    irregular = cs.irregular if cs.irregular.numel() else None
    lam_irregular = cs.lam_irregular.to(z.dtype)
    for i in range(bsz):
        for s in range(0, hw, EAGER_CHUNK):
            zc = zf[i, :, s : s + EAGER_CHUNK]
            zc.addmm_(weights, drive[i, :, s : s + EAGER_CHUNK], beta=beta)
            if irregular is not None:
                before = zc.index_select(0, irregular)
            torch.ops.aten.softshrink.out(zc, 1.0, out=zc)
            if irregular is not None:
                zc.index_copy_(0, irregular, _eta(before, lam_irregular))
            if last:
                zc.mul_(scale)
            if pf is not None:
                pf[i, :, s : s + EAGER_CHUNK].addmm_(weights_p, zc, beta=0)
    return proj


def _encode_chunked(
    x: torch.Tensor,
    lam: torch.Tensor,
    lamz: torch.Tensor,
    w00: torch.Tensor,
    b00: torch.Tensor,
    blocks: tuple[torch.Tensor, ...],
    *,
    rts: list[torch.Tensor] | None = None,
    out: torch.Tensor | None = None,
) -> tuple[torch.Tensor, list[torch.Tensor]]:
    """The code after the given blocks ((Wdz, bdz, Wdtz, bdtz) each), and their residual taps.

    With ``rts`` (the blocks' residual taps, saved by the forward pass) the
    code is recomputed from them without projecting it. ``out``: the buffer
    to write the code into.
    """
    c = w00.shape[0]
    bsz, _, h, wd = x.shape
    cs = _ChannelScale(lam)
    z = out if out is not None else torch.empty(bsz, c, h, wd, dtype=x.dtype, device=x.device)
    nb = len(blocks) // 4
    lamz_f = float(lamz)

    def next_projection(k: int) -> torch.Tensor | None:
        return blocks[4 * k].reshape(c, TAPS).t() if rts is None and k < nb else None

    p = _stage_chunked_(z, _taps(x), w00.reshape(c, TAPS), b00, 0.0, cs, project=next_projection(0), last=nb == 0)
    taps_used = []
    for k in range(nb):
        wdz, bdz, wdtz, bdtz = blocks[4 * k : 4 * k + 4]
        rt = rts[k] if rts is not None else _residual_taps_pw(p, x, bdz)  # slices: faster than the one-hot convs here
        taps_used.append(rt)
        p = _stage_chunked_(z, rt, wdtz.reshape(c, TAPS), bdtz, lamz_f, cs, project=next_projection(k + 1), last=k == nb - 1)
    return z, taps_used


def project_channels(z: torch.Tensor, weight: torch.Tensor, *, compile: bool = True) -> torch.Tensor:
    """A per-pixel linear map (a 1x1 conv without bias) in one pass over a wide code.

    Much faster on the CPU than ``F.conv2d`` with a (T, C, 1, 1) weight when T
    is small (e.g. the 9 taps of a C -> 1 3x3 conv): at 480 x 640 x 256 the
    compiled kernel reads z at close to memory speed.

    Args:
        z: (B, C, H, W). weight: (T, C).
        compile: use the compiled kernel when no gradient is needed.

    Returns:
        (B, T, H, W); differentiable (a batched GEMM) when grad mode is on.
    """
    weight = weight.to(z.dtype)
    if torch.is_grad_enabled() and (z.requires_grad or weight.requires_grad):
        return _project(z, weight)
    return _PROJECT(z, weight, use_compile=compile)


# ---------------------------------------------------------------------------
# the fused encoder as one autograd function
# ---------------------------------------------------------------------------
def _chunked(x: torch.Tensor, use_compile: bool) -> bool:
    """Whether the encoder runs the chunked stages: on the CPU, where the compiled kernels would not run."""
    return x.device.type == "cpu" and not _UPDATE.compiles(use_compile)


class _FusedEncoder(torch.autograd.Function):
    """Forward of the whole encoder; saves x, the residual taps and the output only.

    Inputs: use_compile, x, lamj, lamz, W00, b00, then each block's
    (Wdz, bdz, Wdtz, bdtz). Returns the code Z (B, 2n, H, W).
    """

    @staticmethod
    def forward(ctx: Any, use_compile: bool, x: torch.Tensor, lamj: torch.Tensor, lamz: torch.Tensor, w00: torch.Tensor, b00: torch.Tensor, *blocks: torch.Tensor) -> torch.Tensor:  # noqa: E501
        c = w00.shape[0]
        bsz, _, h, wd = x.shape
        lam = lamj.reshape(c)
        if _chunked(x, use_compile):
            z, rts = _encode_chunked(x, lam, lamz, w00, b00, blocks)
            ctx.use_compile = use_compile
            ctx.n_blocks = len(rts)
            ctx.save_for_backward(x, lamj, lamz, w00, b00, z, *rts, *blocks)
            return z
        xt = _taps(x)
        z = torch.empty(bsz, c, h, wd, dtype=x.dtype, device=x.device)
        _FIRST(z, xt, w00.reshape(c, TAPS), b00, lam, use_compile=use_compile)
        rts = []
        for i in range(0, len(blocks), 4):
            wdz, bdz, wdtz, bdtz = blocks[i : i + 4]
            p = _PROJECT(z, wdz.reshape(c, TAPS).t(), use_compile=use_compile)
            rt = _RESIDUAL_TAPS(p, x, bdz, use_compile=use_compile)
            rts.append(rt)
            _UPDATE(z, rt, wdtz.reshape(c, TAPS), bdtz, lamz, lam, use_compile=use_compile)
        ctx.use_compile = use_compile
        ctx.n_blocks = len(rts)
        ctx.save_for_backward(x, lamj, lamz, w00, b00, z, *rts, *blocks)
        return z

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx: Any, grad_out: torch.Tensor) -> tuple[torch.Tensor | None, ...]:
        saved = ctx.saved_tensors
        x, lamj, lamz, w00, b00, z_out = saved[:6]
        nb = ctx.n_blocks
        rts = saved[6 : 6 + nb]
        blocks = saved[6 + nb :]
        uc = ctx.use_compile
        c = w00.shape[0]
        bsz, _, h, wd = x.shape
        hw = h * wd
        lam = lamj.reshape(c)
        w0 = w00.reshape(c, TAPS)
        wts = [blocks[4 * k + 2].reshape(c, TAPS) for k in range(nb)]
        bts = [blocks[4 * k + 3] for k in range(nb)]
        lamz_f = float(lamz)
        xt = _taps(x)

        g_lam = torch.zeros(c, dtype=x.dtype, device=x.device)
        g_lamz = torch.zeros((), dtype=x.dtype, device=x.device)
        g_blocks: list[torch.Tensor | None] = [None] * len(blocks)
        g_x = torch.zeros_like(x) if ctx.needs_input_grad[1] else None

        # Two code-sized buffers for the whole backward pass: g (the gradient,
        # updated in place block by block) and z (each block's input code,
        # recomputed from the saved residual taps).
        g = grad_out.clone(memory_format=torch.contiguous_format)
        gf = g.view(bsz, c, hw)
        z_after = z_out
        z = None
        for k in range(nb - 1, -1, -1):
            wdz, bdz, wdtz, bdtz = blocks[4 * k : 4 * k + 4]
            part_lam, g_bdtz = _MASK(g, z_after, use_compile=uc)  # g is now dL/dC_k
            g_lam += part_lam
            if z is None:
                z = torch.empty_like(z_out)  # z_out belongs to the caller
            if _chunked(x, uc):
                _encode_chunked(x, lam, lamz, w00, b00, blocks[: 4 * k], rts=list(rts[:k]), out=z)
            else:
                _FIRST(z, xt, w0, b00, lam, use_compile=uc)
                for j in range(k):
                    _UPDATE(z, rts[j], wts[j], bts[j], lamz, lam, use_compile=uc)
            zf = z.view(bsz, c, hw)
            g_lamz += torch.dot(gf.reshape(-1), zf.reshape(-1))
            rtf = rts[k].reshape(bsz, TAPS, hw)
            g_wdtz = torch.bmm(gf, rtf.transpose(1, 2)).sum(0)  # (C, 9)
            d_rt = _PROJECT(g, wts[k].t(), use_compile=uc)
            # through r = x - conv_Wdz(z): one-channel and 9-channel maps
            d_r, d_p = _RESIDUAL_TAPS_BWD(d_rt, use_compile=uc)
            if g_x is not None:
                g_x += d_r
            d_pf = d_p.reshape(bsz, TAPS, hw)
            wd9 = wdz.reshape(c, TAPS)
            g_wdz = torch.bmm(d_pf, zf.transpose(1, 2)).sum(0).t()  # (C, 9)
            # dL/dZ_k = lamz * dL/dC_k + Wdz^T dP, in place
            gf.baddbmm_(wd9.expand(bsz, c, TAPS), d_pf, beta=lamz_f)
            g_blocks[4 * k : 4 * k + 4] = [
                g_wdz.reshape(wdz.shape),
                (-d_r).sum().reshape(bdz.shape),
                g_wdtz.reshape(wdtz.shape),
                g_bdtz.reshape(bdtz.shape),
            ]
            z_after = z
        # first stage: Z_0 = eta(conv_W00(x))
        part_lam, g_b00 = _MASK(g, z_after, use_compile=uc)
        g_lam += part_lam
        xtf = xt.reshape(bsz, TAPS, hw)
        g_w00 = torch.bmm(gf, xtf.transpose(1, 2)).sum(0)
        if g_x is not None:
            d_xt = _PROJECT(g, w0.t(), use_compile=uc)
            g_x += _taps_adjoint_eager(d_xt, x)
        return (
            None,
            g_x,
            g_lam.reshape(lamj.shape),
            g_lamz.reshape(lamz.shape),
            g_w00.reshape(w00.shape),
            g_b00.reshape(b00.shape),
            *g_blocks,
        )


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


def _autocast_dtype(device_type: str) -> torch.dtype | None:
    """The type autocast computes in on ``device_type``, or None where autocast is off."""
    try:
        return torch.get_autocast_dtype(device_type) if torch.is_autocast_enabled(device_type) else None
    except (TypeError, AttributeError):  # PyTorch before 2.4: no per-device queries
        if device_type == "cuda" and torch.is_autocast_enabled():
            return torch.get_autocast_gpu_dtype()
        if device_type == "cpu" and torch.is_autocast_cpu_enabled():
            return torch.get_autocast_cpu_dtype()
        return None


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

    def lrr_blocks(self) -> list[LRRBlock]:
        return [getattr(self, f"lrrblock{i}") for i in range(self.n_blocks)]

    def forward_code(self, x: torch.Tensor) -> torch.Tensor:
        """The whole code Z = [L, S] (B, 2n, H, W)."""
        _check_image_batch(x, "LRR encoder input")
        x = x.contiguous()  # one channel: cheap, and one compiled kernel for tiles cut from larger images
        autocast_dtype = _autocast_dtype(x.device.type)
        if self.fused and autocast_dtype is not None:
            # The fused kernels write into buffers they are given, which
            # autocast cannot retype: under autocast the whole encoder runs in
            # its lower precision explicitly (the code Z, the largest tensor,
            # then takes half the memory traffic).
            with torch.autocast(x.device.type, enabled=False):
                return self._forward_code_fused(x.to(autocast_dtype))
        if self.fused:
            return self._forward_code_fused(x)
        z = soft_threshold(self.conv_W00(x), self.lamj)
        for block in self.lrr_blocks():
            if self.checkpoint_blocks and torch.is_grad_enabled():
                z = checkpoint(block, x, z, self.lamj, self.lamz, use_reentrant=False)
            else:
                z = block(x, z, self.lamj, self.lamz)
        return z

    def _forward_code_fused(self, x: torch.Tensor) -> torch.Tensor:
        params: list[torch.Tensor] = [self.lamj, self.lamz, self.conv_W00.conv2d.weight, self.conv_W00.conv2d.bias]
        for block in self.lrr_blocks():
            params += [
                block.conv_Wdz.conv2d.weight,
                block.conv_Wdz.conv2d.bias,
                block.conv_Wdtz.conv2d.weight,
                block.conv_Wdtz.conv2d.bias,
            ]
        params = [p.to(dtype=x.dtype) for p in params]
        return _FusedEncoder.apply(bool(self.compile), x, *params)

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
            z_ir = self.encoder_ir.forward_code(ir)
            z_vi = self.encoder_vi.forward_code(vi)
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
