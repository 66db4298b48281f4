"""The LRR encoder's inference pass on the CPU, as one compiled loop per stage (Numba).

What :func:`encode` computes is the code of
:class:`causalfuse.models.lrr.LRREncoder` (the formulas of
:mod:`causalfuse.models.lrr`), to float32 rounding. It is used for inference
only (no gradient) on the CPU, in float32, for images large enough to repay
loading the compiled code (``LRREncoder`` decides, see
:data:`causalfuse.models.lrr.NUMBA_MIN_PIXELS`); everything else goes through
:mod:`causalfuse.models.lrr_kernels`. The loops are compiled on first use and
cached on disk, as the metrics' are.

Why a loop of our own: each of the encoder's five stages is, per pixel,
``Z = eta(beta * Z + W t + b)`` from the 9 taps t of a one-channel map (the
input, then each block's residual), followed by the next block's projection
of the new Z onto its 9 taps. That is 18 multiply-adds per code value and
stage, and PyTorch can only do it as separate operations (a GEMM with 10
columns, a soft threshold, a GEMM with 9 rows) that each go through the code.
Here one loop over a pixel's 256 channels does the whole stage while the
pixel's code is in the registers and the first-level cache, so the code is
read and written once per stage and the arithmetic runs at the vector units'
speed. The code is kept pixel-major (channels last); the encoder returns it as
a (B, C, H, W) tensor with channels-last strides.

Threads: each stage is split into bands of rows, one per thread (PyTorch's
thread count), run by plain Python threads while the compiled loops hold no
GIL; the stages run one after the other, because a stage's residual needs the
previous stage's projection on the neighbouring rows.
"""

from __future__ import annotations

import os
import threading
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import numba
import numpy as np
import torch

__all__ = ["encode", "encode_many", "weights"]

_JIT = dict(nogil=True, cache=True, fastmath=True, boundscheck=False, error_model="numpy")
_F0 = np.float32(0.0)
_HALF = np.float32(0.5)


@numba.njit(**_JIT)
def _row(z, rpad, u, b, beta, read_z, lam, q, p_out, project, y):  # pragma: no cover - compiled
    """One stage on row y of the pixel-major code z (H, W, C), in place.

    rpad (H + 2, W + 2): the padded drive map (input or residual); u (9, C)
    the stage's tap weights, b (C,), lam (C,) the thresholds; beta: the
    weight of the old code (read only when read_z). With project, the new
    code's projection onto q (9, C) goes to p_out (9, H, W).
    """
    h, w, c = z.shape
    u0, u1, u2, u3, u4, u5, u6, u7, u8 = u[0], u[1], u[2], u[3], u[4], u[5], u[6], u[7], u[8]
    q0, q1, q2, q3, q4, q5, q6, q7, q8 = q[0], q[1], q[2], q[3], q[4], q[5], q[6], q[7], q[8]
    for x in range(w):
        t0, t1, t2 = rpad[y, x], rpad[y, x + 1], rpad[y, x + 2]
        t3, t4, t5 = rpad[y + 1, x], rpad[y + 1, x + 1], rpad[y + 1, x + 2]
        t6, t7, t8 = rpad[y + 2, x], rpad[y + 2, x + 1], rpad[y + 2, x + 2]
        zc = z[y, x]
        if read_z:
            for k in range(c):
                s = (beta * zc[k] + b[k] + u0[k] * t0 + u1[k] * t1 + u2[k] * t2 + u3[k] * t3 + u4[k] * t4
                     + u5[k] * t5 + u6[k] * t6 + u7[k] * t7 + u8[k] * t8)
                a = abs(s) - lam[k]
                a = (a + abs(a)) * _HALF  # max(a, 0), exactly, without a branch
                zc[k] = np.copysign(a, s) if s != _F0 else _F0  # sign(s) * a, also for lam < 0
        else:
            for k in range(c):
                s = (b[k] + u0[k] * t0 + u1[k] * t1 + u2[k] * t2 + u3[k] * t3 + u4[k] * t4
                     + u5[k] * t5 + u6[k] * t6 + u7[k] * t7 + u8[k] * t8)
                a = abs(s) - lam[k]
                a = (a + abs(a)) * _HALF
                zc[k] = np.copysign(a, s) if s != _F0 else _F0
        if project:
            a0 = a1 = a2 = a3 = a4 = a5 = a6 = a7 = a8 = _F0
            for k in range(c):
                v = zc[k]
                a0 += q0[k] * v
                a1 += q1[k] * v
                a2 += q2[k] * v
                a3 += q3[k] * v
                a4 += q4[k] * v
                a5 += q5[k] * v
                a6 += q6[k] * v
                a7 += q7[k] * v
                a8 += q8[k] * v
            p_out[0, y, x], p_out[1, y, x], p_out[2, y, x] = a0, a1, a2
            p_out[3, y, x], p_out[4, y, x], p_out[5, y, x] = a3, a4, a5
            p_out[6, y, x], p_out[7, y, x], p_out[8, y, x] = a6, a7, a8


@numba.njit(**_JIT)
def _stage(z, rpad, u, b, beta, read_z, lam, q, p_out, project, y0, y1):  # pragma: no cover - compiled
    """:func:`_row` for rows y0..y1 (one thread's band)."""
    for y in range(y0, y1):
        _row(z, rpad, u, b, beta, read_z, lam, q, p_out, project, y)


@numba.njit(**_JIT)
def _reflect(i, n):  # pragma: no cover - compiled
    """Index i in -1..n of a 1-pixel reflection pad of a length-n axis."""
    if i < 0:
        return 1
    if i >= n:
        return n - 2
    return i


@numba.njit(**_JIT)
def _residual_row(p, x, bias, rpad, j):  # pragma: no cover - compiled
    """Row j of r = x - (shifted sum of the reflection-padded tap maps p (9, H, W) + bias), into its padded map.

    Writes rpad's row j + 1 and, for j = 1 and j = H - 2, the pad rows that
    reflect it.
    """
    h, w = x.shape
    for xx in range(-1, w + 1):
        xr = _reflect(xx, w)
        acc = _F0
        for k in range(9):
            acc += p[k, _reflect(j + k // 3 - 1, h), _reflect(xr + k % 3 - 1, w)]
        rpad[j + 1, xx + 1] = x[j, xr] - (acc + bias)
    if j == 1:
        rpad[0, :] = rpad[2, :]
    if j == h - 2:
        rpad[h + 1, :] = rpad[h - 1, :]


@numba.njit(**_JIT)
def _residual(p, x, bias, rpad):  # pragma: no cover - compiled
    """The whole padded residual map (see :func:`_residual_row`)."""
    for j in range(x.shape[0]):
        _residual_row(p, x, bias, rpad, j)


@numba.njit(**_JIT)
def _pad(x, rpad):  # pragma: no cover - compiled
    h, w = x.shape
    for y in range(-1, h + 1):
        yr = _reflect(y, h)
        for xx in range(-1, w + 1):
            rpad[y + 1, xx + 1] = x[yr, _reflect(xx, w)]


@numba.njit(**_JIT)
def _wavefront(z, x, xpad, u, b, beta, lam, q, bdz, p, rpad, saved):  # pragma: no cover - compiled
    """All stages of one image on one thread, as a wavefront over rows.

    Stage s (0: the first conv, s >= 1: block s - 1) updates row i - 2s at
    step i: the rows it reads (its residual's, two rows of the previous
    stage's projection ahead) are done by then, and the code rows that
    five stages touch in one step are close enough to stay in the cache
    between them, so the 256-channel code goes to memory about once instead
    of once per stage. Same arithmetic as the stage-by-stage order.

    u (S, 9, C), b (S, C): the stages' tap weights and biases; q (S - 1, 9, C),
    bdz (S - 1,): the blocks' projections and biases; p (S - 1, 9, H, W) and
    rpad (S - 1, H + 2, W + 2): their tap maps and padded residuals.
    saved (S - 1, H, W, C), or empty: where each block's input code is kept
    (for the backward pass, :mod:`causalfuse.models.lrr_numba_grad`); a
    row is copied there just before the block overwrites it.
    """
    h = z.shape[0]
    n = u.shape[0]
    for i in range(h + 2 * (n - 1)):
        for s in range(n):
            if s > 0:
                j = i - 2 * s + 1  # the residual row stage s needs next
                if 0 <= j < h:
                    _residual_row(p[s - 1], x, bdz[s - 1], rpad[s - 1], j)
            y = i - 2 * s
            if 0 <= y < h:
                project = s < n - 1
                qs = q[s] if project else q[0]
                ps = p[s] if project else p[0]
                if s == 0:
                    _row(z, xpad, u[0], b[0], beta, False, lam, qs, ps, project, y)
                else:
                    if saved.shape[0] > 0:
                        saved[s - 1, y] = z[y]
                    _row(z, rpad[s - 1], u[s], b[s], beta, True, lam, qs, ps, project, y)


_POOL_LOCK = threading.Lock()
_POOL: dict[str, Any] = {}


def _pool(threads: int) -> ThreadPoolExecutor:
    """The threads the loops run on, made once per process (a forked child makes its own)."""
    with _POOL_LOCK:
        if _POOL.get("size") != threads or _POOL.get("pid") != os.getpid():
            old = _POOL.get("executor")
            if old is not None and _POOL.get("pid") == os.getpid():
                old.shutdown(wait=False)
            _POOL.update(executor=ThreadPoolExecutor(max_workers=threads, thread_name_prefix="causalfuse-lrr"), size=threads, pid=os.getpid())
        return _POOL["executor"]


def _flat(t: torch.Tensor) -> np.ndarray:
    """A small parameter as a contiguous float32 array, subnormal values set to zero.

    LRRNet's published weights hold hundreds of subnormal values (down to
    1e-45, left by weight decay); every multiply-add that touches one takes a
    slow path in the processor. They change no sum by a representable amount.
    """
    a = np.ascontiguousarray(t.detach().to(torch.float32).cpu().numpy(), dtype=np.float32).copy()
    a[np.abs(a) < np.finfo(np.float32).tiny] = 0.0
    return a


class _Weights:
    """One encoder's parameters as the loops take them (float32, subnormal values zeroed)."""

    def __init__(self, lam: torch.Tensor, lamz: torch.Tensor, w00: torch.Tensor, b00: torch.Tensor, blocks: Any) -> None:
        c = w00.shape[0]
        nb = len(blocks) // 4
        if nb < 1:
            raise ValueError("the compiled LRR loops need at least one LRR block")
        self.lam = _flat(lam.reshape(c))
        self.beta = np.float32(_flat(lamz.reshape(1))[0])
        self.u = np.ascontiguousarray(np.stack([_flat(w00.reshape(c, 9)).T] + [_flat(blocks[4 * k + 2].reshape(c, 9)).T for k in range(nb)]))
        self.b = np.stack([_flat(b00.reshape(c))] + [_flat(blocks[4 * k + 3].reshape(c)) for k in range(nb)])
        self.q = np.ascontiguousarray(np.stack([_flat(blocks[4 * k].reshape(c, 9)).T for k in range(nb)]))
        self.bdz = np.array([_flat(blocks[4 * k + 1].reshape(1))[0] for k in range(nb)], np.float32)
        self.channels = c


_NOTHING_SAVED = np.empty((0, 1, 1, 1), np.float32)


def _wavefront_image(
    z: np.ndarray,
    x: np.ndarray,
    wt: _Weights,
    *,
    xpad: np.ndarray | None = None,
    rpad: np.ndarray | None = None,
    saved: np.ndarray = _NOTHING_SAVED,
) -> None:
    """One image's code into z (H, W, C); xpad, rpad and saved, when given, keep what a backward pass needs."""
    h, w = x.shape
    nb = len(wt.q)
    xpad = np.empty((h + 2, w + 2), np.float32) if xpad is None else xpad
    _pad(x, xpad)
    p = np.empty((nb, 9, h, w), np.float32)
    rpad = np.empty((nb, h + 2, w + 2), np.float32) if rpad is None else rpad
    _wavefront(z, x, xpad, wt.u, wt.b, wt.beta, wt.lam, wt.q, wt.bdz, p, rpad, saved)


def _banded_image(z: np.ndarray, x: np.ndarray, wt: _Weights, threads: int) -> None:
    """Stage after stage, each shared among threads by bands of rows."""
    h, w = x.shape
    nb = len(wt.q)
    bands = [(i * h // threads, (i + 1) * h // threads) for i in range(threads)]
    pool = _pool(threads)

    def run(*args: Any) -> None:
        for f in [pool.submit(_stage, *args, y0, y1) for y0, y1 in bands]:
            f.result()

    rpad = np.empty((h + 2, w + 2), np.float32)
    p = np.empty((9, h, w), np.float32)
    _pad(x, rpad)
    run(z, rpad, wt.u[0], wt.b[0], np.float32(0.0), False, wt.lam, wt.q[0], p, True)
    for k in range(nb):
        _residual(p, x, wt.bdz[k], rpad)
        last = k == nb - 1
        run(z, rpad, wt.u[k + 1], wt.b[k + 1], wt.beta, True, wt.lam, wt.q[0] if last else wt.q[k + 1], p, not last)


def encode_many(jobs: list[tuple[torch.Tensor, _Weights]], *, threads: int | None = None) -> list[torch.Tensor]:
    """The codes (B, C, H, W), channels-last in memory, of several encoders' inputs.

    Args:
        jobs: (x, weights) per encoder: x (B, 1, H, W) float32 on the CPU,
            H, W >= 2; weights from :func:`weights`.
        threads: threads to use (default: PyTorch's count).

    With at least as many images as threads, each image goes through all its
    stages on one thread as a wavefront (:func:`_wavefront`), the images side
    by side; otherwise each stage of each image is shared among the threads
    by bands of rows.
    """
    threads = max(1, threads or torch.get_num_threads())
    codes, tasks = [], []
    for x, wt in jobs:
        bsz, _, h, w = x.shape
        # numpy asks the kernel for huge pages for large arrays (madvise), PyTorch does not: the first
        # writes of a 256-channel code then fault once per 2 MB instead of once per 4 kB
        code = torch.from_numpy(np.empty((bsz, h, w, wt.channels), np.float32))
        xs = x.detach().to(torch.float32).contiguous().numpy()
        codes.append(code)
        tasks += [(code[i].numpy(), xs[i, 0], wt) for i in range(bsz)]
    if len(tasks) >= threads:
        if threads == 1:
            for task in tasks:
                _wavefront_image(*task)
        else:
            for f in [_pool(threads).submit(_wavefront_image, *task) for task in tasks]:
                f.result()
    else:
        for z, x, wt in tasks:
            _banded_image(z, x, wt, min(threads, x.shape[0]))
    return [code.permute(0, 3, 1, 2) for code in codes]


def weights(lam: torch.Tensor, lamz: torch.Tensor, w00: torch.Tensor, b00: torch.Tensor, blocks: Any) -> _Weights:
    """An encoder's parameters (thresholds lam (C,), lamz, W00 (C, 1, 3, 3), b00, then (Wdz, bdz, Wdtz, bdtz) per block) for :func:`encode_many`."""
    return _Weights(lam, lamz, w00, b00, blocks)


def encode(x: torch.Tensor, lam: torch.Tensor, lamz: torch.Tensor, w00: torch.Tensor, b00: torch.Tensor, blocks: Any, *, threads: int | None = None) -> torch.Tensor:
    """One encoder's code (B, C, H, W), channels-last in memory; see :func:`encode_many`."""
    return encode_many([(x, weights(lam, lamz, w00, b00, blocks))], threads=threads)[0]
