"""The one place where a device is chosen."""

from __future__ import annotations

from typing import Literal

import torch

from .errors import CausalFuseError

__all__ = ["DeviceName", "resolve_device"]

DeviceName = Literal["auto", "cpu", "cuda"]


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
