"""Back-door Adjustment based Feature Fusion Module (BAFFM).

The paper (Causality-Driven Infrared and Visible Image Fusion) removes the
scene confounder Z from the fusion weights with the back-door adjustment
P(Y | do(X)) = sum_z P(Y | X, W = f(X, z)) P(z), approximated by the NWGM as
one forward pass with ``W = W_h X + W_g E_z[g(z)]``, where
``E_z[g(z)] = sum_i lambda_i z_i P(z_i)`` and
``lambda = softmax((W_q X)^T (W_k z_i) / sqrt(d_k))``. The z_i form a fixed
per-modality confounder dictionary (scene prototypes, see
:mod:`causalfuse.dictionary`).

Here the attention is computed at every pixel (regions such as sky and bush
may attend to different scenes), in chunks of pixels so memory stays bounded
on large images. Because W_g is linear, ``W_g sum_i lambda_i z_i P(z_i)``
equals ``sum_i lambda_i P(z_i) (W_g z_i)``: the d-dimensional expectation is
never materialised at full resolution.

The weights ``lambda_i P(z_i)`` sum to 1/N under the uniform prior, so read
literally the back-door term is N times smaller than a mean of prototypes,
and because the prototypes are cluster means of PCA-centred features, their
plain mean is near zero too. Trained that way the term stays about 1/500 of
``W_h X`` and the module degenerates to the network without it. By default
(``normalise=True``) the weights are normalised to a distribution,
``w_i = lambda_i P(z_i) / sum_j lambda_j P(z_j)`` (computed as
``softmax(logits + log P(z))``), which makes ``E_z[g(z)]`` an expectation in
the prototypes' own scale; ``normalise=False`` is the literal product.
"""

from __future__ import annotations

import math
from typing import Literal

import torch
from torch import nn

__all__ = ["ConfounderAttention", "BAFFM", "pointwise_conv", "is_channels_last"]


def is_channels_last(x: torch.Tensor) -> bool:
    """Whether a (B, C, H, W) tensor is channels-last in memory and not also contiguous (C > 1, H W > 1)."""
    return x.dim() == 4 and x.is_contiguous(memory_format=torch.channels_last) and not x.is_contiguous()


def pointwise_conv(x: torch.Tensor, conv: nn.Conv2d) -> torch.Tensor:
    """The 1x1 convolution ``conv(x)`` as one batched matrix product (differentiable).

    On the CPU this reads a wide input such as a 256-channel code about twice
    as fast as the convolution kernel (at 480 x 640, 256 -> 64 channels: 60
    against 134 ms on 2 cores), with the same values to float rounding.

    Args:
        x: (B, C, H, W). conv: a 1x1 ``nn.Conv2d`` with C input channels.

    Returns:
        (B, conv.out_channels, H, W).
    """
    return _pointwise(x, conv.weight.reshape(conv.out_channels, x.shape[1]), conv.bias)


def _pointwise(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
    """(B, C, H, W) x (T, C) (+ (T,)) -> (B, T, H, W), one ``bmm`` with the weights expanded over the batch.

    x flattened to (B, C, H W) is a view, not a copy, both for a contiguous x
    and for a channels-last one (the LRR encoder's code on the CPU).
    """
    b, c, h, w = x.shape
    expanded = weight.expand(b, -1, -1)
    flat = x.reshape(b, c, h * w)
    if bias is None:
        out = torch.bmm(expanded, flat)
    else:
        out = torch.baddbmm(bias.view(1, -1, 1).expand(b, -1, h * w), expanded, flat)
    return out.view(b, weight.shape[0], h, w)

class ConfounderAttention(nn.Module):
    """One modality's back-door branch: features -> D_m = W_h X + W_g E_z[g(z)].

    Args:
        in_channels: channels C of the encoder features X (256 for LRRNet).
        dict_size: number N of prototypes z_i.
        dict_dim: dimension d of each prototype.
        d_k: width of the query/key space.
        d_f: output channels of D_m.
        use_backdoor: when False, D_m = W_h X (the paper's "without BAFFM");
            the back-door parameters still exist (same checkpoint format) but
            are frozen.
        chunk: pixels per attention chunk.
        normalise: normalise lambda_i P(z_i) to sum to 1 (see the module text).

    Buffers:
        dictionary (N, d): the fixed prototypes z_i.
        prior (N,): P(z_i), 1/N unless empirical frequencies are set.
    """

    def __init__(
        self,
        in_channels: int,
        dict_size: int,
        dict_dim: int,
        d_k: int = 32,
        d_f: int = 32,
        *,
        use_backdoor: bool = True,
        chunk: int = 65536,
        normalise: bool = True,
    ) -> None:
        super().__init__()
        self.d_k, self.d_f, self.chunk = d_k, d_f, chunk
        self.use_backdoor = use_backdoor
        self.normalise = normalise
        # W_q and W_h read the same 256-channel map: one conv reads it once.
        self.proj = nn.Conv2d(in_channels, d_k + d_f, kernel_size=1)
        self.key = nn.Linear(dict_dim, d_k)
        self.value = nn.Linear(dict_dim, d_f, bias=False)  # W_g
        self.register_buffer("dictionary", torch.zeros(dict_size, dict_dim))
        self.register_buffer("prior", torch.full((dict_size,), 1.0 / dict_size))
        if not use_backdoor:
            for p in (*self.key.parameters(), *self.value.parameters()):
                p.requires_grad_(False)

    def attention(self, x: torch.Tensor) -> torch.Tensor:
        """lambda_i(p) for every pixel: (B, N, H, W), summing to 1 over i."""
        q = pointwise_conv(x, self.proj)[:, : self.d_k]
        k = self.key(self.dictionary)
        logits = torch.einsum("bchw,nc->bnhw", q, k) / math.sqrt(self.d_k)
        return logits.softmax(dim=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # D_m itself: the identity map (exact in floating point).
        return self.mapped(x, torch.eye(self.d_f, dtype=x.dtype, device=x.device))

    def mapped(self, x: torch.Tensor, mapping: torch.Tensor) -> torch.Tensor:
        """``mapping @ D_m`` at every pixel, without materialising D_m (differentiable).

        ``mapping`` (M, d_f) is a linear map applied to D_m, such as this
        modality's columns of the fusion-weight conv: because
        ``D_m = W_h X + W_g E_z[g(z)]`` is linear in W_h and W_g, the map is
        folded into both, and the per-pixel work is a projection to N + M
        channels (the attention's logits, see :meth:`projection`) and an
        M-wide read-out of the attention instead of d_k + d_f channels and a
        d_f-wide one. Equal to ``mapping @ self(x)`` to float rounding.

        Returns:
            (B, M, H, W).
        """
        b, c, h, w = x.shape
        weight, bias = self.projection(mapping)
        return self.attend(_pointwise(x, weight, bias).flatten(2), mapping, h, w)

    def projection(self, mapping: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The per-pixel projection :meth:`mapped` applies to x: weights (L + M, C) and bias (L + M,).

        With the back-door term, its first L = N rows give the attention's
        logits: the keys are folded into W_q (``k_i . (W_q x + b_q) / sqrt(d_k)``
        is linear in x), so no d_k-wide query is formed; without it L = 0.
        The last M rows are ``mapping`` folded into W_h.
        """
        w_qh = self.proj.weight.reshape(self.d_k + self.d_f, -1)
        b_qh = self.proj.bias
        weight, bias = mapping @ w_qh[self.d_k :], mapping @ b_qh[self.d_k :]
        if not self.use_backdoor:
            return weight, bias
        k = self.key(self.dictionary) / math.sqrt(self.d_k)  # (N, d_k)
        return torch.cat([k @ w_qh[: self.d_k], weight]), torch.cat([k @ b_qh[: self.d_k], bias])

    def read_out(self, mapping: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """How :meth:`attend` turns the L logits into the back-door term: offsets (L,) and values (L, M).

        The term is ``sum_i softmax(logits + offsets)_i values_i``: with the
        normalised expectation the offsets are log P(z_i) and the values
        ``mapping W_g z_i``; literally, the offsets are zero and the values
        carry the P(z_i) factor. Without the back-door term L = 0.
        """
        m = mapping.shape[0]
        if not self.use_backdoor:
            return mapping.new_zeros(0), mapping.new_zeros(0, m)
        v = self.value(self.dictionary) @ mapping.t()  # (N, M): mapping W_g z_i
        if self.normalise:  # w_i = softmax(logit_i + log P(z_i))
            return self.prior.clamp_min(1e-12).log(), v
        return torch.zeros_like(self.prior), v * self.prior[:, None]  # lambda_i times P(z_i) mapping W_g z_i

    def attend(self, qe: torch.Tensor, mapping: torch.Tensor, h: int, w: int) -> torch.Tensor:
        """``mapping @ D_m`` (B, M, H, W) from x's :meth:`projection` qe (B, L + M, H W)."""
        b = qe.shape[0]
        m = mapping.shape[0]
        if not self.use_backdoor:
            return qe.reshape(b, m, h, w)
        n = self.dictionary.shape[0]
        out = qe[:, n:]
        offsets, v = self.read_out(mapping)
        log_prior = offsets[None, :, None] if self.normalise else None
        parts = []
        for start in range(0, h * w, self.chunk):
            logits = qe[:, :n, start : start + self.chunk]
            if log_prior is not None:
                logits = logits + log_prior
            parts.append(torch.einsum("bnp,nf->bfp", logits.softmax(dim=1), v))
        g = torch.cat(parts, dim=2) if len(parts) > 1 else parts[0]
        return (out + g).view(b, m, h, w)


class BAFFM(nn.Module):
    """Fusion weights from both modalities' back-door branches.

    A 1x1 conv on [D_ir, D_vi] gives, at every pixel, one logit per modality
    for each of LRRNet's two parts (low-rank L, sparse S); a softmax over the
    two modalities turns them into weights. Returns (B, 4, H, W) ordered
    (ir_L, ir_S, vi_L, vi_S), with w_ir,L + w_vi,L = w_ir,S + w_vi,S = 1.
    """

    def __init__(
        self,
        in_channels: int,
        dict_size: int,
        dict_dim: int,
        d_k: int = 32,
        d_f: int = 32,
        *,
        use_backdoor: bool = True,
        chunk: int = 65536,
        normalise: bool = True,
    ) -> None:
        super().__init__()
        kw = dict(use_backdoor=use_backdoor, chunk=chunk, normalise=normalise)
        self.ir = ConfounderAttention(in_channels, dict_size, dict_dim, d_k, d_f, **kw)
        self.vi = ConfounderAttention(in_channels, dict_size, dict_dim, d_k, d_f, **kw)
        self.weights = nn.Conv2d(2 * d_f, 4, kernel_size=1)
        # Start from equal weights for both modalities: the fused code is then
        # the plain average of the two encoders' codes.
        nn.init.zeros_(self.weights.weight)
        nn.init.zeros_(self.weights.bias)

    def forward(self, x_ir: torch.Tensor, x_vi: torch.Tensor) -> torch.Tensor:
        # The 1x1 conv on [D_ir, D_vi] is folded into each branch
        # (ConfounderAttention.mapped): 4 channels per branch instead of d_f.
        ir, vi = self.mappings()
        return self._softmax(self.ir.mapped(x_ir, ir) + self.vi.mapped(x_vi, vi))

    def mappings(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Each branch's columns (4, d_f) of the fusion-weight conv."""
        w = self.weights.weight.reshape(4, 2, -1)
        return w[:, 0], w[:, 1]

    def from_projections(self, qe_ir: torch.Tensor, qe_vi: torch.Tensor, h: int, w: int) -> torch.Tensor:
        """The weights from each branch's projection (:meth:`ConfounderAttention.projection` with :meth:`mappings`), (B, L + 4, H W)."""
        ir, vi = self.mappings()
        return self._softmax(self.ir.attend(qe_ir, ir, h, w) + self.vi.attend(qe_vi, vi, h, w))

    def _softmax(self, logits: torch.Tensor) -> torch.Tensor:
        logits = logits + self.weights.bias.view(1, 4, 1, 1)  # (ir_L, ir_S, vi_L, vi_S)
        b, _, h, wd = logits.shape
        return logits.view(b, 2, 2, h, wd).softmax(dim=1).view(b, 4, h, wd)

    def forward_reference(self, x_ir: torch.Tensor, x_vi: torch.Tensor) -> torch.Tensor:
        """The same weights with D_ir and D_vi materialised and the conv applied to them (for tests)."""
        logits = self.weights(torch.cat([self.ir(x_ir), self.vi(x_vi)], dim=1))
        b, _, h, w = logits.shape
        return logits.view(b, 2, 2, h, w).softmax(dim=1).view(b, 4, h, w)

    def set_prior(self, mode: Literal["uniform", "empirical"], ir_freq: torch.Tensor | None = None, vi_freq: torch.Tensor | None = None) -> None:
        for branch, freq in ((self.ir, ir_freq), (self.vi, vi_freq)):
            n = branch.prior.numel()
            if mode == "uniform":
                branch.prior.fill_(1.0 / n)
            else:
                if freq is None:
                    raise ValueError("empirical prior needs the cluster frequencies")
                branch.prior.copy_(freq / freq.sum())
