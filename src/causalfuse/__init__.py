"""causalfuse: causality-driven infrared-visible image fusion.

Implements "Causality-Driven Infrared and Visible Image Fusion" (BAFFM over
LRRNet features) together with the field's fusion metrics and a benchmark.

Quick start::

    import causalfuse
    fused = causalfuse.fuse("ir.png", "vi.jpg")          # bundled weights
    scores = causalfuse.metrics.compute(fused_u8, ir_u8, vi_u8)
"""

from __future__ import annotations

__version__ = "0.1.0"

from .checkpoint import load_model, save_model
from .errors import CausalFuseError
from .fuse import fuse, fuse_folder, fuse_registered
from .models.net import CausalFusionNet, NetConfig
from .models.registry import create_method, get_method, list_methods, register_method

__all__ = [
    "CausalFuseError",
    "CausalFusionNet",
    "NetConfig",
    "__version__",
    "create_method",
    "fuse",
    "fuse_folder",
    "fuse_registered",
    "get_method",
    "list_methods",
    "load_model",
    "metrics",
    "register_method",
    "save_model",
]


def __getattr__(name: str):
    # ``causalfuse.metrics`` (Numba, SciPy) is imported on first use, so that
    # fusing does not pay for it at start-up.
    if name == "metrics":
        import importlib

        return importlib.import_module(f"{__name__}.metrics")
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
