"""The LRR encoder's fast kernels: soft threshold, fused stages, and the encoder as one autograd function.

:class:`causalfuse.models.lrr.LRREncoder` (``fused=True``, the default)
computes its code with :class:`_FusedEncoder`; the modules, the official
weights and LRRNet's pre- and post-processing are in
:mod:`causalfuse.models.lrr`.

The results are those of the formulas of :mod:`causalfuse.models.lrr`, to
float32 rounding (``benchmarks/lrr_plain.py`` is the literal transcription
they are checked and timed against). The cost of a literal implementation is
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
  image size measured here (see "the encoder's stages on the CPU" below).
  Going further, all five stages as a wavefront over bands of rows (each
  stage two rows behind the one before, the code read from the cache
  between stages) gives the same code bit for bit but is slower on the
  2-core machine measured (0.49-0.63 s against 0.43-0.48 s per encoder at
  480 x 640, blocks of 4,096 to 32,768 pixels): there the last-level
  cache (480 MB) holds most of a code, and the bands cost more calls;
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
import warnings
from collections.abc import Iterator
from typing import Any, Callable

import torch
from torch.nn import functional as F

from ..errors import CausalFuseWarning

__all__ = ["soft_threshold", "conv_to_one", "project_channels", "compile_available"]

KERNEL = 3
TAPS = KERNEL * KERNEL


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
