"""The LRR encoder's training pass on the CPU in Numba's loops: a forward that keeps what the backward needs, and the backward.

:class:`NumbaEncoder` is an autograd function with the inputs and the result
of :class:`causalfuse.models.lrr_kernels._FusedEncoder` (the image, then the
thresholds, ``lamz``, W00, b00 and each block's (Wdz, bdz, Wdtz, bdtz)), to
float32 rounding. :class:`causalfuse.models.lrr.LRREncoder` uses it for
training on the CPU in float32 (``LRREncoder._numba_trains``;
``CAUSALFUSE_NUMBA=0`` turns it off).

The forward pass is the inference wavefront of
:mod:`causalfuse.models.lrr_numba`, which also keeps each block's input
code and padded residual. Keeping the codes (four per encoder, 0.4 GB each for the paper's batch of
six 256 x 256 crops) spares the backward pass the recomputation that those
kernels do instead, for memory: the training step's peak RSS at that
setting is 5.8 GB against their 3.9 GB.

The backward pass goes through the stages from the last to the first. For
stage s, with output Z_s = eta(beta Z_{s-1} + U_s t_s + b_s) from the 9 taps
t_s of its drive map (the input for s = 0, block s - 1's residual after), one
loop over each pixel's 256 channels (:func:`_grad_row`) does:

* dL/dZ_s from the stage above: ``beta * D_{s+1} + Q_s^T dp_s`` (dp_s: the
  gradient of block s's 9 projections of Z_s, a small map);
* D_s = dL/dZ_s where Z_s is not zero (the soft threshold's derivative), and
  the gradients of the threshold, of b_s and of beta (D_s times Z_{s-1});
* the gradient of the 9 taps, ``U_s^T D_s``, a small map from which the
  one-channel residual's gradient and the next dp follow (:func:`_taps_adjoint`,
  :func:`_shift_sum_adjoint`).

So each stage reads the code once (D, Z_s and Z_{s-1}) and writes it once;
the images of the batch are tasks on the threads of
:mod:`causalfuse.models.lrr_numba`. The gradients of U_s (the taps times
D_s) and Q_s (dp_s times Z_s) are one matrix product each per stage over the
whole batch. Per-pixel sums are float32; the parameters' gradients are
summed row by row, then over rows and images, in float64.
"""

from __future__ import annotations

import threading
from typing import Any

import numba
import numpy as np
import torch

from .lrr_numba import _JIT, _F0, _pool, _reflect, _wavefront_image, weights

__all__ = ["NumbaEncoder"]


@numba.njit(**_JIT)
def _grad_row(g, zo, zi, dp, q, beta, u, tpad, dt, ab, alam, y):  # pragma: no cover - compiled
    """Row y of one stage's backward; returns the row's share of dL/dbeta.

    g (H, W, C): on entry the gradient D of the stage above's pre-threshold
    sum (or dL/dZ_s itself, with beta = 1 and dp = 0); on exit D_s. zo (H, W,
    C): Z_s; zi: Z_{s-1}. dp (9, H, W), q (9, C): the gradient of the stage
    above's projections of Z_s, and their weights. u (9, C): the stage's tap
    weights, tpad (H + 2, W + 2) its padded drive map; dt (9, H, W) gets
    U_s^T D_s. ab, alam (C,): the row's sums for the gradients of b_s and the
    threshold (added to). The gradients of U_s and Q_s are matrix products
    done afterwards (sums into nine per-channel arrays here would make the
    loop store-bound: seven times slower).
    """
    h, w, c = g.shape
    q0, q1, q2, q3, q4, q5, q6, q7, q8 = q[0], q[1], q[2], q[3], q[4], q[5], q[6], q[7], q[8]
    u0, u1, u2, u3, u4, u5, u6, u7, u8 = u[0], u[1], u[2], u[3], u[4], u[5], u[6], u[7], u[8]
    sbeta = _F0
    for x in range(w):
        d0, d1, d2 = dp[0, y, x], dp[1, y, x], dp[2, y, x]
        d3, d4, d5 = dp[3, y, x], dp[4, y, x], dp[5, y, x]
        d6, d7, d8 = dp[6, y, x], dp[7, y, x], dp[8, y, x]
        gc, zoc, zic = g[y, x], zo[y, x], zi[y, x]
        s0 = s1 = s2 = s3 = s4 = s5 = s6 = s7 = s8 = sb = _F0
        for k in range(c):
            z = zoc[k]
            v = (beta * gc[k] + q0[k] * d0 + q1[k] * d1 + q2[k] * d2 + q3[k] * d3 + q4[k] * d4
                 + q5[k] * d5 + q6[k] * d6 + q7[k] * d7 + q8[k] * d8)
            v = v if z != _F0 else _F0  # eta passes the gradient where its output is not zero
            gc[k] = v
            alam[k] -= v if z > _F0 else -v  # d eta / d lam = -sign(output)
            ab[k] += v
            sb += v * zic[k]
            s0 += u0[k] * v
            s1 += u1[k] * v
            s2 += u2[k] * v
            s3 += u3[k] * v
            s4 += u4[k] * v
            s5 += u5[k] * v
            s6 += u6[k] * v
            s7 += u7[k] * v
            s8 += u8[k] * v
        dt[0, y, x], dt[1, y, x], dt[2, y, x] = s0, s1, s2
        dt[3, y, x], dt[4, y, x], dt[5, y, x] = s3, s4, s5
        dt[6, y, x], dt[7, y, x], dt[8, y, x] = s6, s7, s8
        sbeta += sb
    return sbeta


@numba.njit(**_JIT)
def _add_into(total, part):  # pragma: no cover - compiled
    """total (float64) += part (float32), both (C,); part set to zero."""
    for i in range(total.size):
        total[i] += part[i]
        part[i] = _F0


@numba.njit(**_JIT)
def _taps_adjoint(dt, dpad, out):  # pragma: no cover - compiled
    """out (H, W) += the adjoint of taking the 9 taps of a reflection-padded map, applied to dt (9, H, W)."""
    _, h, w = dt.shape
    dpad[:] = _F0
    for t in range(9):
        dy, dx = t // 3, t % 3
        for y in range(h):
            for x in range(w):
                dpad[y + dy, x + dx] += dt[t, y, x]
    for i in range(h + 2):
        yi = _reflect(i - 1, h)
        for j in range(w + 2):
            out[yi, _reflect(j - 1, w)] += dpad[i, j]


@numba.njit(**_JIT)
def _shift_sum_adjoint(dr, dp):  # pragma: no cover - compiled
    """dp (9, H, W): the gradient of the tap maps p for r = x - (shifted sum of the reflection-padded p + b), from dr = dL/dr."""
    h, w = dr.shape
    dp[:] = _F0
    for t in range(9):
        dy, dx = t // 3 - 1, t % 3 - 1
        for y in range(h):
            yy = _reflect(y + dy, h)
            for x in range(w):
                dp[t, yy, _reflect(x + dx, w)] -= dr[y, x]


@numba.njit(**_JIT)
def _taps_of(tpad, out):  # pragma: no cover - compiled
    """out (9, H, W): the 9 taps of the padded map tpad (H + 2, W + 2)."""
    _, h, w = out.shape
    for t in range(9):
        dy, dx = t // 3, t % 3
        for y in range(h):
            for x in range(w):
                out[t, y, x] = tpad[y + dy, x + dx]


@numba.njit(**_JIT)
def _stage_image(g, zo, zi, dp, q, beta, u, tpad, first, taps, dt, dr, dpad, gx, gb, glam, gbdz, row_b, row_lam):  # pragma: no cover - compiled
    """One image's backward through one stage (see :func:`_grad_row` for the arrays); returns its dL/dbeta.

    Also writes the stage's taps to taps (9, H, W) for the gradient of U_s,
    adds dL/dx to gx and, for a block (not first), its bias gradient to
    gbdz (1,) and the gradient of its projections to dp (for the stage below).
    gb, glam (C,) float64 totals.
    """
    sbeta = 0.0
    for y in range(g.shape[0]):
        sbeta += _grad_row(g, zo, zi, dp, q, beta, u, tpad, dt, row_b, row_lam, y)
        _add_into(gb, row_b)
        _add_into(glam, row_lam)
    _taps_of(tpad, taps)
    dr[:] = _F0
    _taps_adjoint(dt, dpad, dr)
    for y in range(dr.shape[0]):
        for x in range(dr.shape[1]):
            gx[y, x] += dr[y, x]
    if not first:
        gbdz[0] -= dr.astype(np.float64).sum()
        _shift_sum_adjoint(dr, dp)
    return sbeta


_SPARE_LOCK = threading.Lock()
_SPARE: dict[tuple[int, ...], list[torch.Tensor]] = {}
_SPARES_PER_SHAPE = 4  # a network's two encoders, each a saved-code and a gradient buffer


def _buffer(*shape: int) -> torch.Tensor:
    """A float32 buffer of this shape, from the spares when one is there.

    The saved codes and the gradient are five code-sized buffers per encoder
    (2 GB at the paper's batch of six 256 x 256 crops); taken fresh each step,
    the page faults of their first writes cost about a tenth of the step.
    """
    with _SPARE_LOCK:
        spares = _SPARE.get(shape)
        if spares:
            return spares.pop()
    return torch.empty(shape, dtype=torch.float32)


def _give_back(t: torch.Tensor) -> None:
    with _SPARE_LOCK:
        spares = _SPARE.setdefault(tuple(t.shape), [])
        if len(spares) < _SPARES_PER_SHAPE:
            spares.append(t)


def _forward(x: torch.Tensor, params: tuple[torch.Tensor, ...]) -> tuple[torch.Tensor, dict[str, Any]]:
    wt = weights(params[0], params[1], params[2], params[3], params[4:])
    bsz, _, h, w = x.shape
    nb, c = len(wt.q), wt.channels
    out = torch.empty(bsz, h, w, c, dtype=torch.float32)
    saved = _buffer(nb, bsz, h, w, c)  # stage by stage: one matrix per stage for the backward
    xpad = np.empty((bsz, h + 2, w + 2), np.float32)
    rpad = np.empty((bsz, nb, h + 2, w + 2), np.float32)
    xs = x.detach().to(torch.float32).contiguous().numpy()
    on, sn = out.numpy(), saved.numpy()
    pool = _pool(max(1, torch.get_num_threads()))
    tasks = [pool.submit(_wavefront_image, on[i], xs[i, 0], wt, xpad=xpad[i], rpad=rpad[i], saved=sn[:, i]) for i in range(bsz)]
    for f in tasks:
        f.result()
    return out, dict(wt=wt, saved=saved, xpad=xpad, rpad=rpad)


def _backward(grad: torch.Tensor, zout: torch.Tensor, keep: dict[str, Any]) -> dict[str, np.ndarray]:
    """The gradients of the code's parameters (float64) and of the input, from dL/dZ (B, C, H, W)."""
    wt, saved = keep["wt"], keep["saved"]
    nb, bsz, h, w, c = saved.shape
    g = _buffer(bsz, h, w, c)
    g.copy_(grad.permute(0, 2, 3, 1))
    gn, zn, sn = g.numpy(), zout.numpy(), saved.numpy()
    xpad, rpad = keep["xpad"], keep["rpad"]
    dp = np.zeros((9, bsz, h, w), np.float32)  # the stage above's projection gradients; none above the last
    taps = np.empty((9, bsz, h, w), np.float32)
    scratch = [
        (np.empty((9, h, w), np.float32), np.empty((h, w), np.float32), np.empty((h + 2, w + 2), np.float32),
         np.zeros(c, np.float32), np.zeros(c, np.float32))
        for _ in range(bsz)
    ]
    gx = np.zeros((bsz, h, w))
    gb = np.zeros((bsz, nb + 1, c))
    glam = np.zeros((bsz, c))
    gbdz = np.zeros((bsz, nb))
    gu = np.zeros((nb + 1, 9, c))
    gq = np.zeros((nb, 9, c))
    gbeta = 0.0
    pool = _pool(max(1, torch.get_num_threads()))
    for s in range(nb, -1, -1):
        above = s < nb  # block s reads Z_s through its projections
        if above:
            gq[s] = torch.from_numpy(dp.reshape(9, -1)).mm(saved[s].view(-1, c)).numpy()

        def one(i: int, s: int = s, above: bool = above) -> float:
            zo = sn[s, i] if above else zn[i]
            dt, dr, dpad, row_b, row_lam = scratch[i]
            return _stage_image(
                gn[i], zo, sn[s - 1, i] if s >= 1 else zo, dp[:, i], wt.q[s] if above else wt.q[0],
                wt.beta if above else np.float32(1.0), wt.u[s], rpad[i, s - 1] if s >= 1 else xpad[i], s == 0,
                taps[:, i], dt, dr, dpad, gx[i], gb[i, s], glam[i], gbdz[i, s - 1 : s] if s >= 1 else gbdz[i, :1],
                row_b, row_lam,
            )

        parts = [f.result() for f in [pool.submit(one, i) for i in range(bsz)]]
        if s >= 1:
            gbeta += sum(parts)
        gu[s] = torch.from_numpy(taps.reshape(9, -1)).mm(g.view(-1, c)).numpy()
    _give_back(g)
    _give_back(saved)
    return dict(gx=gx, gu=gu, gq=gq, gb=gb.sum(0), glam=glam.sum(0), gbdz=gbdz.sum(0), gbeta=np.float64(gbeta))


class NumbaEncoder(torch.autograd.Function):
    """The encoder's code (B, C, H, W), channels-last in memory, with a backward pass in Numba's loops.

    Inputs: x (B, 1, H, W) float32 on the CPU (H, W >= 2), then the
    thresholds lam, lamz, W00, b00 and each block's (Wdz, bdz, Wdtz, bdtz).
    """

    @staticmethod
    def forward(ctx: Any, x: torch.Tensor, *params: torch.Tensor) -> torch.Tensor:
        out, keep = _forward(x, params)
        z = out.permute(0, 3, 1, 2)
        ctx.keep = keep
        ctx.shapes = [p.shape for p in params]
        ctx.x_shape = x.shape
        ctx.save_for_backward(z)
        return z

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[torch.Tensor | None, ...]:
        (z,) = ctx.saved_tensors
        keep = getattr(ctx, "keep", None)
        if keep is None:
            raise RuntimeError(
                "the LRR encoder's training pass in Numba's loops keeps its codes for one backward pass only; "
                "for a second one through the same graph set CAUSALFUSE_NUMBA=0"
            )
        del ctx.keep
        grads = _backward(grad, z.permute(0, 2, 3, 1), keep)
        gu, gq, gb, gbdz = grads["gu"], grads["gq"], grads["gb"], grads["gbdz"]
        raw = [grads["glam"], grads["gbeta"], gu[0].T, gb[0]]
        for k in range(len(gbdz)):
            raw += [gq[k].T, gbdz[k], gu[k + 1].T, gb[k + 1]]
        out = [torch.from_numpy(np.ascontiguousarray(a, dtype=np.float32)).reshape(shape) for a, shape in zip(raw, ctx.shapes)]
        gx = torch.from_numpy(grads["gx"].astype(np.float32)).reshape(ctx.x_shape) if ctx.needs_input_grad[0] else None
        return (gx, *(o if need else None for o, need in zip(out, ctx.needs_input_grad[1:])))
