"""A closed-form start for the reconstruction conv: least squares on the frozen codes.

The reconstruction is one 3x3 conv on the weighted codes followed by tanh
(:class:`causalfuse.models.net.Reconstruction`), so before the tanh the
fused image is *linear* in the conv's 4,608 weights and its bias. Given the
encoders and the fusion weights at the start of training, the weights that
bring the pre-tanh output closest to ``atanh(2 T - 1)`` (T the loss's
intensity target) solve a ridge-regularised least-squares problem. Solving
it once on pixels sampled from training crops starts training far closer
to the target than PyTorch's default initialisation does. It is a start,
not a recipe: on this project's CPU study (``docs/training-study.md``,
section 9) the fitted network has a high VIF but a low Qabf and SSIM and
over-bright daytime scenes, and training on from it trades that VIF away.

``train.head_init = "lstsq"`` runs :func:`fit_reconstruction` before the
first step of a new run (a resumed run loads its state instead). The fit is
deterministic for a seed: the crops of a dedicated epoch (:data:`FIT_EPOCH`)
of the run's data, in the order of a dedicated permutation, and pixels
drawn from the same seed.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Iterable

import numpy as np
import torch
import torch.nn.functional as F

from ..errors import CausalFuseError
from ..losses import LossWeights, intensity_target

__all__ = ["HeadFit", "NormalEquations", "accumulate", "fit_reconstruction", "HEAD_INITS"]

HEAD_INITS = ("random", "lstsq")

#: The target is clipped to (2T - 1) in [-CLIP, CLIP] before atanh, so that
#: black and white target pixels ask for a finite pre-activation (atanh(0.96) = 1.95).
CLIP = 0.96

#: The crops of the fit are those of this epoch of the dataset, which no
#: training run reaches: their crops and augmentation are drawn apart from
#: those of the training steps.
FIT_EPOCH = 1_000_003


@dataclass
class NormalEquations:
    """``G = X^T X`` and ``b = X^T y`` (float64) of the sampled pixels, with ``sum y^2`` and their count."""

    gram: torch.Tensor
    xty: torch.Tensor
    yty: float
    count: int

    def solve(self, ridge: float) -> tuple[torch.Tensor, float]:
        """Weights (features + bias) for a ridge of ``ridge`` times the mean feature energy, and their RMS residual."""
        g = self.gram
        p = g.shape[0] - 1  # the last feature is the constant (bias), not regularised
        lam = ridge * float(g.diagonal()[:p].mean())
        reg = torch.zeros_like(g)
        reg.diagonal()[:p] = lam
        w = torch.linalg.solve(g + reg, self.xty)
        sse = self.yty - 2.0 * float(w @ self.xty) + float(w @ g @ w)
        return w, math.sqrt(max(sse, 0.0) / max(self.count, 1))


@dataclass
class HeadFit:
    """What :func:`fit_reconstruction` did: samples used, the ridge, the pre-tanh RMS residual."""

    samples: int
    ridge: float
    rmse: float


def _tap_features(fused: torch.Tensor, ys: torch.Tensor, xs: torch.Tensor, kernel: int = 3) -> torch.Tensor:
    """(n, C k^2 + 1) inputs of the k x k conv on ``fused`` (1, C, H, W) at pixels (ys, xs), in the conv weight's order."""
    r = kernel // 2
    padded = F.pad(fused, (r, r, r, r), mode="reflect")[0]  # (C, H + 2r, W + 2r)
    c, n, taps = padded.shape[0], ys.numel(), kernel * kernel
    x = torch.empty(n, c, taps, dtype=padded.dtype, device=padded.device)
    for k in range(taps):
        dy, dx = divmod(k, kernel)
        x[:, :, k] = padded[:, ys + dy, xs + dx].T
    return torch.cat([x.reshape(n, c * taps), torch.ones(n, 1, dtype=x.dtype, device=x.device)], dim=1)


@torch.no_grad()
def accumulate(net: torch.nn.Module, pairs: Iterable[tuple[torch.Tensor, torch.Tensor]], loss: LossWeights, *, pixels: int, seed: int) -> NormalEquations:
    """Normal equations of the pre-tanh fit over ``pixels`` random pixels of each (1, 1, H, W) pair."""
    gen = np.random.default_rng(seed)
    gram = xty = None
    yty, count = 0.0, 0
    for ir, vi in pairs:
        z_ir, z_vi = net.forward_features(ir, vi)
        weights = net.fusion_weights(z_ir, z_vi)
        h, w = ir.shape[-2:]
        n = min(pixels, h * w)
        ys = torch.from_numpy(gen.integers(0, h, n)).to(ir.device)
        xs = torch.from_numpy(gen.integers(0, w, n)).to(ir.device)
        x = _tap_features(net.reconstruction.weighted_codes(z_ir, z_vi, weights).float(), ys, xs, net.reconstruction.kernel)
        t = intensity_target(ir, vi, loss.intensity_target, detail_sigma=loss.detail_sigma)[0, 0, ys, xs]
        y = torch.atanh((2.0 * t - 1.0).clamp(-CLIP, CLIP))
        g, b = (x.T @ x).double().cpu(), (x.T @ y).double().cpu()
        gram = g if gram is None else gram + g
        xty = b if xty is None else xty + b
        yty += float((y.double() ** 2).sum())
        count += n
    if gram is None:
        raise CausalFuseError("the least-squares start of the reconstruction needs at least one training crop")
    return NormalEquations(gram, xty, yty, count)


def fit_reconstruction(
    net: torch.nn.Module,
    dataset,
    loss: LossWeights,
    *,
    crops: int,
    pixels: int = 4096,
    ridge: float = 1e-3,
    seed: int = 0,
    device: torch.device | str = "cpu",
    progress: bool = False,
) -> HeadFit:
    """Set ``net.reconstruction.conv`` to the least-squares fit of the intensity target.

    Args:
        net: a :class:`~causalfuse.models.net.CausalFusionNet` (encoders and
            fusion weights as they are at the start of training).
        dataset: a :class:`~causalfuse.data.dataset.PairedDataset` (its crops,
            flips and brightness augmentation are used as in training).
        loss: the run's loss weights (their intensity target is fitted).
        crops: how many crops to sample pixels from.
        pixels: pixels drawn per crop.
        ridge: Tikhonov weight, relative to the mean energy of a feature.
        seed: the run's seed.
        device: where the encoders run.
        progress: show a progress bar over the crops.
    """
    if crops < 1 or pixels < 1 or ridge < 0:
        raise CausalFuseError(f"head_init_crops and the pixels per crop must be positive and the ridge >= 0, got {crops}, {pixels}, {ridge}")
    order = np.random.default_rng([seed, 7919]).permutation(len(dataset))
    from tqdm.auto import tqdm

    bar = tqdm(range(crops), desc="least-squares start", unit="crop", disable=not progress, dynamic_ncols=True)
    items = (dataset[(FIT_EPOCH, int(order[i % len(order)]))] for i in bar)
    pairs = ((it["ir"][None].to(device), it["vi"][None].to(device)) for it in items)
    was_training = net.training
    net.eval()
    try:
        eq = accumulate(net, pairs, loss, pixels=pixels, seed=seed)
    finally:
        net.train(was_training)
    w, rmse = eq.solve(ridge)
    conv = net.reconstruction.conv
    with torch.no_grad():
        conv.weight.copy_(w[:-1].to(conv.weight).view_as(conv.weight))
        conv.bias.fill_(float(w[-1]))
    return HeadFit(samples=eq.count, ridge=ridge, rmse=rmse)
