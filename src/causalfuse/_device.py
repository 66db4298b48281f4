"""The one place where a device is chosen."""

from __future__ import annotations

from typing import Literal

import torch

from .errors import CausalFuseError

__all__ = ["DeviceName", "resolve_device", "autocast_dtype", "Precision", "PRECISIONS", "BF16_TOLERANCE"]

DeviceName = Literal["auto", "cpu", "cuda"]

#: What a network computes in: float32, or bfloat16 autocast.
Precision = Literal["fp32", "bf16"]
PRECISIONS = ("fp32", "bf16")

#: Largest difference, in grey levels of 8-bit outputs, between a network's
#: bf16 and fp32 results that :func:`causalfuse.fuse` promises: measured 2 at
#: most (0.24 to 0.42 on average) with causalfuse and causalfuse-nobaffm on the
#: first three val pairs of TNO21 and RoadScene50 and (causalfuse) the first
#: of LLVIP, on the CPU with the eager kernels; plus one for margin.
BF16_TOLERANCE = 3


def resolve_device(device: str | torch.device = "auto") -> torch.device:
    """Turn ``"auto"``, ``"cpu"``, ``"cuda"`` or ``"cuda:N"`` into a device.

    ``"auto"`` takes the first GPU when CUDA is available, the CPU otherwise.
    Asking for CUDA on a machine without it is an error, not a silent fallback.
    """
    if isinstance(device, torch.device):
        return device
    name = str(device).lower()
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cpu":
        return torch.device("cpu")
    if name.startswith("cuda"):
        if not torch.cuda.is_available():
            raise CausalFuseError(f"device {device!r} was asked for, but CUDA is not available here; use --device cpu or auto")
        return torch.device(name)
    raise CausalFuseError(f"unknown device {device!r}: choose auto, cpu or cuda")


def autocast_dtype(device_type: str) -> torch.dtype | None:
    """The type autocast computes in on ``device_type``, or None where autocast is off."""
    try:
        return torch.get_autocast_dtype(device_type) if torch.is_autocast_enabled(device_type) else None
    except (TypeError, AttributeError):  # PyTorch before 2.4: no per-device queries
        if device_type == "cuda" and torch.is_autocast_enabled():
            return torch.get_autocast_gpu_dtype()
        if device_type == "cpu" and torch.is_autocast_cpu_enabled():
            return torch.get_autocast_cpu_dtype()
        return None
