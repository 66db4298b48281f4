"""The unsupervised fusion loss used to train :class:`CausalFusionNet`.

The paper gives no loss; ``shared/DESIGN.md`` fixes the field's usual
unsupervised one (as in SeAFusion, Tang et al., Information Fusion 2022,
doi:10.1016/j.inffus.2021.12.004, plus an SSIM term as in many successors):

* intensity:  ``L1(F, T)`` with the target T chosen by ``intensity_target``:
  ``max`` = ``max(IR, VI)``, the pixel-wise maximum (SeAFusion's, and the
  first default: it pulls every pixel to the brighter source and washes the
  image out), ``mean`` = ``(IR + VI) / 2``, or ``detail-sum`` =
  ``(B_IR + B_VI) / 2 + (IR - B_IR) + (VI - B_VI)`` clipped to [0, 1], with
  ``B_X`` the Gaussian blur of X (sigma ``detail_sigma`` pixels): the
  sources' mean brightness with *both* sources' details at full contrast
  (``mean`` halves each source's details, ``max`` drops the darker one's);
* gradient:   ``L1(|grad F|, max(|grad IR|, |grad VI|))`` with the Sobel
  magnitude ``|grad X| = |Sobel_x X| + |Sobel_y X|`` (SeAFusion's form;
  replicate-padded so the map keeps its size); with
  ``gradient_reference="target"``, ``L1(|grad F|, |grad T|)`` against the
  intensity target T instead (the sources' larger gradient is smaller than
  ``detail-sum``'s where both sources have detail, so it pulls against it);
* SSIM:       ``1 - (SSIM(F, IR) + SSIM(F, VI)) / 2`` with the usual Gaussian
  11 x 11 window (sigma 1.5), K1 = 0.01, K2 = 0.03, data range 1, valid
  positions only (Wang et al., IEEE TIP 2004, doi:10.1109/TIP.2003.819861);
  with ``ssim_reference="target"``, ``1 - SSIM(F, T)`` against the intensity
  target T instead (each source's SSIM penalises the other source's
  details, which ``detail-sum`` asks for).

``total = w_intensity * intensity + w_gradient * gradient + w_ssim * ssim``.

Default weights (intensity 1, gradient 2, SSIM 0.5): measured on MSRS
images, the unweighted terms of a plain average fusion are about 0.06
(intensity), 0.09 (gradient) and 0.24 (SSIM), and of a constant grey image
0.33, 0.19 and 0.70; with these weights each term contributes a similar share
of the total in both cases, so none of them is traded away for the others.
(SeAFusion's gradient weight of 10 belongs to a loss without an SSIM term.)

All inputs are (B, 1, H, W) tensors in [0, 1] with H, W >= the SSIM window.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, fields
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from ._device import autocast_dtype
from .errors import CausalFuseError

__all__ = [
    "LossWeights",
    "INTENSITY_TARGETS",
    "SSIM_REFERENCES",
    "GRADIENT_REFERENCES",
    "gaussian_blur",
    "intensity_target",
    "sobel_magnitude",
    "ssim",
    "intensity_loss",
    "gradient_loss",
    "ssim_loss",
    "fusion_loss",
    "FusionLoss",
]


INTENSITY_TARGETS = ("max", "mean", "detail-sum")
SSIM_REFERENCES = ("sources", "target")
GRADIENT_REFERENCES = SSIM_REFERENCES


@dataclass
class LossWeights:
    """Weights of the three terms and the intensity target (recorded in every checkpoint)."""

    intensity: float = 1.0
    gradient: float = 2.0
    ssim: float = 0.5
    intensity_target: str = "max"
    #: Gaussian sigma (pixels) of the base layer of the ``detail-sum`` target.
    detail_sigma: float = 5.0
    #: What the SSIM term compares F with: ``sources`` (IR and VI) or the intensity ``target``.
    ssim_reference: str = "sources"
    #: What the gradient term compares F's gradient with: ``sources`` (the larger of IR's and VI's) or the ``target``'s.
    gradient_reference: str = "sources"

    #: Values of options added after the first release, for configurations
    #: written before them (they have no such key).
    LEGACY_DEFAULTS = {"intensity_target": "max"}

    @classmethod
    def from_dict(cls, data: dict) -> "LossWeights":
        """From a saved or user-written mapping; unknown keys and targets are refused."""
        known = {f.name for f in fields(cls)}
        bad = sorted(set(data) - known)
        if bad:
            raise CausalFuseError(f"unknown loss weight keys: {', '.join(bad)} (known: {', '.join(sorted(known))})")
        values = {**cls.LEGACY_DEFAULTS, **data}
        target = str(values.pop("intensity_target"))
        if target not in INTENSITY_TARGETS:
            raise CausalFuseError(f"loss.intensity_target must be one of {', '.join(INTENSITY_TARGETS)}, got {target!r}")
        references = {}
        for key, allowed in (("ssim_reference", SSIM_REFERENCES), ("gradient_reference", GRADIENT_REFERENCES)):
            references[key] = str(values.pop(key, "sources"))
            if references[key] not in allowed:
                raise CausalFuseError(f"loss.{key} must be one of {', '.join(allowed)}, got {references[key]!r}")
        try:
            weights = {k: float(v) for k, v in values.items()}
        except (TypeError, ValueError):
            raise CausalFuseError(f"loss weights must be numbers, got {values}") from None
        return cls(**weights, intensity_target=target, **references)


def _check(*tensors: torch.Tensor, min_size: int = 1) -> None:
    shape = tensors[0].shape
    for t in tensors:
        if t.dim() != 4 or t.shape[1] != 1:
            raise CausalFuseError(f"fusion loss expects (B, 1, H, W) tensors, got {tuple(t.shape)}")
        if t.shape != shape:
            raise CausalFuseError(f"fusion loss inputs differ in shape: {tuple(shape)} vs {tuple(t.shape)}")
    if min(shape[-2:]) < min_size:
        raise CausalFuseError(f"fusion loss needs images of at least {min_size} x {min_size} pixels, got {tuple(shape[-2:])}")


def sobel_magnitude(x: torch.Tensor) -> torch.Tensor:
    """``|Sobel_x x| + |Sobel_y x|`` of (B, 1, H, W), replicate-padded: (B, 1, H, W)."""
    kx = torch.tensor([[-1.0, 0.0, 1.0], [-2.0, 0.0, 2.0], [-1.0, 0.0, 1.0]], dtype=x.dtype, device=x.device)
    kernel = torch.stack([kx, kx.t()])[:, None]  # (2, 1, 3, 3)
    g = F.conv2d(F.pad(x, (1, 1, 1, 1), mode="replicate"), kernel)
    return g.abs().sum(dim=1, keepdim=True)


def _gaussian_1d(size: int, sigma: float, dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    r = torch.arange(size, dtype=dtype, device=device) - (size - 1) / 2
    g = torch.exp(-(r**2) / (2 * sigma**2))
    return g / g.sum()


def _separable_valid(x: torch.Tensor, g: torch.Tensor) -> torch.Tensor:
    """(N, 1, H, W) correlated with the window ``g g^T`` at valid positions, as two 1-D passes."""
    return F.conv2d(F.conv2d(x, g.view(1, 1, 1, -1)), g.view(1, 1, -1, 1))


class _GaussianValid(torch.autograd.Function):
    """The Gaussian window at valid positions, with its adjoint as the backward pass.

    The window is symmetric, so the adjoint is the same two 1-D passes over
    the zero-padded gradient. PyTorch's own backward of an 11 x 11
    convolution of one channel takes 3 to 7 times the forward on the CPU
    (430 to 680 ms for thirty 256 x 256 maps); this one costs what the
    forward costs.
    """

    @staticmethod
    def forward(ctx: Any, x: torch.Tensor, g: torch.Tensor) -> torch.Tensor:
        ctx.save_for_backward(g)
        return _separable_valid(x, g)

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[torch.Tensor, None]:
        (g,) = ctx.saved_tensors
        r = g.numel() - 1
        return _separable_valid(F.pad(grad, (r, r, r, r)), g), None


def _window_means(maps: torch.Tensor, g: torch.Tensor) -> torch.Tensor:
    """Gaussian-weighted local means of (B, K, H, W) maps at valid positions: (B, K, H - s + 1, W - s + 1)."""
    b, k = maps.shape[:2]
    flat = maps.flatten(0, 1)[:, None]
    custom = flat.requires_grad and autocast_dtype(flat.device.type) is None  # autocast retypes inside autograd's own ops only
    m = _GaussianValid.apply(flat, g) if custom else _separable_valid(flat, g)
    return m.view(b, k, *m.shape[-2:])


def ssim(x: torch.Tensor, y: torch.Tensor, *, window: int = 11, sigma: float = 1.5, data_range: float = 1.0) -> torch.Tensor:
    """Mean SSIM per image of two (B, 1, H, W) tensors: (B,).

    Gaussian window, valid positions only, K1 = 0.01, K2 = 0.03. The window
    is applied as two 1-D passes (equal to the 2-D window to float rounding),
    once to the maps that depend on ``x`` and once to those of ``y`` alone,
    so a loss whose ``y`` is a fixed image differentiates only the first.
    """
    _check(x, y, min_size=window)
    g = _gaussian_1d(window, sigma, x.dtype, x.device)
    c1, c2 = (0.01 * data_range) ** 2, (0.03 * data_range) ** 2
    m_x = _window_means(torch.cat([x, x * x, x * y], dim=1), g)
    m_y = _window_means(torch.cat([y, y * y], dim=1), g)
    mx, my = m_x[:, 0], m_y[:, 0]
    vx = m_x[:, 1] - mx * mx
    vy = m_y[:, 1] - my * my
    cxy = m_x[:, 2] - mx * my
    s = ((2 * mx * my + c1) * (2 * cxy + c2)) / ((mx * mx + my * my + c1) * (vx + vy + c2))
    return s.flatten(1).mean(dim=1)


def gaussian_blur(x: torch.Tensor, sigma: float) -> torch.Tensor:
    """Separable Gaussian blur of (B, 1, H, W), radius ``ceil(3 sigma)``, reflect-padded: (B, 1, H, W)."""
    radius = max(1, math.ceil(3 * sigma))
    if radius >= min(x.shape[-2:]):
        raise CausalFuseError(f"blur of sigma {sigma} needs images larger than {radius} pixels, got {tuple(x.shape[-2:])}")
    g = _gaussian_1d(2 * radius + 1, sigma, x.dtype, x.device)
    x = F.conv2d(F.pad(x, (radius, radius, 0, 0), mode="reflect"), g.view(1, 1, 1, -1))
    return F.conv2d(F.pad(x, (0, 0, radius, radius), mode="reflect"), g.view(1, 1, -1, 1))


def intensity_target(ir: torch.Tensor, vi: torch.Tensor, target: str = "max", *, detail_sigma: float = 5.0) -> torch.Tensor:
    """The target T of the intensity term (see the module text): (B, 1, H, W) in [0, 1]."""
    if target == "max":
        return torch.maximum(ir, vi)
    if target == "mean":
        return 0.5 * (ir + vi)
    if target == "detail-sum":
        base = 0.5 * (gaussian_blur(ir, detail_sigma) + gaussian_blur(vi, detail_sigma))
        return (ir + vi - base).clamp(0.0, 1.0)
    raise CausalFuseError(f"intensity target must be one of {', '.join(INTENSITY_TARGETS)}, got {target!r}")


def intensity_loss(
    fused: torch.Tensor, ir: torch.Tensor, vi: torch.Tensor, *, target: str = "max", detail_sigma: float = 5.0
) -> torch.Tensor:
    """``mean |F - T|`` with T from :func:`intensity_target`."""
    _check(fused, ir, vi)
    return (fused - intensity_target(ir, vi, target, detail_sigma=detail_sigma)).abs().mean()


def gradient_loss(fused: torch.Tensor, ir: torch.Tensor, vi: torch.Tensor, *, target: torch.Tensor | None = None) -> torch.Tensor:
    """``mean | |grad F| - max(|grad IR|, |grad VI|) |`` (Sobel magnitudes), or ``- |grad target|`` if given."""
    _check(fused, ir, vi)
    reference = sobel_magnitude(target) if target is not None else torch.maximum(sobel_magnitude(ir), sobel_magnitude(vi))
    return (sobel_magnitude(fused) - reference).abs().mean()


def ssim_loss(fused: torch.Tensor, ir: torch.Tensor, vi: torch.Tensor, *, window: int = 11) -> torch.Tensor:
    """``1 - (SSIM(F, IR) + SSIM(F, VI)) / 2``, averaged over the batch."""
    return 1.0 - 0.5 * (ssim(fused, ir, window=window) + ssim(fused, vi, window=window)).mean()


def fusion_loss(
    fused: torch.Tensor,
    ir: torch.Tensor,
    vi: torch.Tensor,
    *,
    weights: LossWeights | None = None,
    window: int = 11,
) -> dict[str, torch.Tensor]:
    """The weighted fusion loss and its terms.

    Args:
        fused, ir, vi: (B, 1, H, W) in [0, 1].
        weights: term weights (default :class:`LossWeights`).
        window: SSIM window size.

    Returns:
        ``{"loss": total, "intensity": ..., "gradient": ..., "ssim": ...}``
        (unweighted terms, scalar tensors).
    """
    weights = weights or LossWeights()
    _check(fused, ir, vi, min_size=window)
    target = intensity_target(ir, vi, weights.intensity_target, detail_sigma=weights.detail_sigma)
    if weights.ssim_reference == "target":
        ssim_term = 1.0 - ssim(fused, target, window=window).mean()
    elif weights.ssim_reference == "sources":
        ssim_term = ssim_loss(fused, ir, vi, window=window)
    else:
        raise CausalFuseError(f"ssim reference must be one of {', '.join(SSIM_REFERENCES)}, got {weights.ssim_reference!r}")
    if weights.gradient_reference not in GRADIENT_REFERENCES:
        raise CausalFuseError(
            f"gradient reference must be one of {', '.join(GRADIENT_REFERENCES)}, got {weights.gradient_reference!r}"
        )
    gradient_term = gradient_loss(fused, ir, vi, target=target if weights.gradient_reference == "target" else None)
    terms = {
        "intensity": (fused - target).abs().mean(),
        "gradient": gradient_term,
        "ssim": ssim_term,
    }
    total = weights.intensity * terms["intensity"] + weights.gradient * terms["gradient"] + weights.ssim * terms["ssim"]
    return {"loss": total, **terms}


class FusionLoss(nn.Module):
    """:func:`fusion_loss` as a module; ``forward`` returns the dict of terms."""

    def __init__(self, weights: LossWeights | None = None, *, window: int = 11) -> None:
        super().__init__()
        self.weights = weights or LossWeights()
        self.window = window

    def forward(self, fused: torch.Tensor, ir: torch.Tensor, vi: torch.Tensor) -> dict[str, torch.Tensor]:
        return fusion_loss(fused, ir, vi, weights=self.weights, window=self.window)
