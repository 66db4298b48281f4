"""Fusion quality metrics, as the field's original MATLAB code defines them.

Each metric is a single-channel function ``metric(fused, ir, vi, *, ...)`` on
float64 arrays on the 0-255 scale, registered by name with its direction
and reference (see :mod:`causalfuse.metrics._registry`). :func:`compute` is
the entry point for whole images: it validates the input, applies the colour
mode once, and returns ``{name: value}``.

Families: :mod:`.information` (MI, EN, CE), :mod:`.gradient` (AG, EI, SF,
Qabf), :mod:`.structural` (SSIM), :mod:`.statistics` (SD, RMSE, PSNR, CC,
SCD), :mod:`.visual` (VIF = VIFF), :mod:`.perceptual` (Qcb, Qcv, MS-SSIM) and
:mod:`.artefacts` (Nabf).
"""

from __future__ import annotations

import importlib
import importlib.util
from typing import Any, Sequence

import numpy as np

from ._checks import Colour, Prepared, prepare
from ._registry import MetricInfo, get_metric, list_metrics, register_metric

# Importing the metric families registers them.
from . import gradient, information, statistics, structural, visual  # noqa: E402,F401

for _family in ("perceptual", "artefacts"):
    # Optional while they are being written; once the file exists it must import.
    if importlib.util.find_spec(f"{__name__}.{_family}") is not None:
        importlib.import_module(f"{__name__}.{_family}")

_load_all = True

DEFAULT_METRICS: tuple[str, ...] = ("MI", "VIF", "Qabf", "SSIM")

__all__ = [
    "DEFAULT_METRICS",
    "MetricInfo",
    "compute",
    "compute_prepared",
    "get_metric",
    "list_metrics",
    "prepare",
    "register_metric",
    "resolve_metrics",
]


def resolve_metrics(metrics: str | Sequence[str] | None) -> list[MetricInfo]:
    """Metric records from names: a sequence, a comma-separated string, or ``"all"``.

    Raises:
        CausalFuseError: an unknown name (the message lists the available ones).
    """
    if metrics is None:
        metrics = DEFAULT_METRICS
    if isinstance(metrics, str):
        metrics = [m.strip() for m in metrics.split(",") if m.strip()]
    if len(metrics) == 1 and metrics[0].lower() == "all":
        return [get_metric(n) for n in list_metrics()]
    out: list[MetricInfo] = []
    for name in metrics:
        info = get_metric(name)
        if info not in out:
            out.append(info)
    return out


def _run(info: MetricInfo, p: Prepared) -> float:
    if info.colour == "side_by_side" and len(p.fused) > 1:
        return float(info.fn(np.concatenate(p.fused, axis=1), np.concatenate(p.ir, axis=1), np.concatenate(p.vi, axis=1)))
    values = [float(info.fn(f, i, v)) for f, i, v in zip(p.fused, p.ir, p.vi)]
    return float(np.mean(values)) if len(values) > 1 else values[0]


def compute_prepared(p: Prepared, metrics: str | Sequence[str] | None = DEFAULT_METRICS) -> dict[str, float]:
    """:func:`compute` on a triplet already passed through :func:`prepare`."""
    return {info.name: _run(info, p) for info in resolve_metrics(metrics)}


def compute(
    fused: Any,
    ir: Any,
    vi: Any,
    metrics: str | Sequence[str] | None = DEFAULT_METRICS,
    *,
    colour: Colour = "gray",
    data_range: float | None = None,
) -> dict[str, float]:
    """Score one fused image against its infrared and visible sources.

    Args:
        fused, ir, vi: images of the same height and width: NumPy arrays (H, W)
            or (H, W, 3), or torch tensors (H, W), (C, H, W), (1, C, H, W).
            uint8 is used as it is; uint16 is scaled by 255 / 65535 (not
            truncated); float is taken in [0, 1], or in [0, ``data_range``].
        metrics: names (case-insensitive), a comma-separated string, or
            ``"all"``; default the paper's four, MI, VIF, Qabf and SSIM.
        colour: ``"gray"`` (MATLAB ``rgb2gray`` on all three, rounded for
            8-bit data: the convention of published tables) or ``"vifb"``
            (VIFB's per-channel average; see :mod:`causalfuse.metrics._checks`).
        data_range: the value of white for float (or non-uint8/16 integer) input.

    Returns:
        ``{metric name: value}`` in the order asked. Constant images or zero
        denominators give what the original code gives (NaN or inf).

    Raises:
        CausalFuseError: sizes differ, bad dtype or range, unknown metric.
    """
    infos = resolve_metrics(metrics)
    p = prepare(fused, ir, vi, colour, data_range)
    return {info.name: _run(info, p) for info in infos}
