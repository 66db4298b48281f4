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

import sys
import types
from typing import TYPE_CHECKING

from .errors import CausalFuseError

if TYPE_CHECKING:
    from . import metrics
    from .checkpoint import load_model, save_model
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

# Where each public name lives. They are imported on first use, so that
# ``import causalfuse.metrics`` does not import torch (about 1 s) and
# ``causalfuse fuse`` does not import the metrics (Numba, SciPy).
_LAZY = {
    "load_model": "checkpoint", "save_model": "checkpoint",
    "fuse": "fuse", "fuse_folder": "fuse", "fuse_registered": "fuse",
    "CausalFusionNet": "models.net", "NetConfig": "models.net",
    "create_method": "models.registry", "get_method": "models.registry",
    "list_methods": "models.registry", "register_method": "models.registry",
}  # fmt: skip


def __getattr__(name: str):
    import importlib

    if name == "metrics":
        return importlib.import_module(f"{__name__}.metrics")
    if name in _LAZY:
        value = getattr(importlib.import_module(f"{__name__}.{_LAZY[name]}"), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))


class _Package(types.ModuleType):
    """``causalfuse.fuse`` stays the function when the submodule of that name is imported.

    Importing a submodule binds it on its package under its name, which would
    shadow the function ``fuse`` with the module ``causalfuse.fuse``.
    """

    def __setattr__(self, name: str, value: object) -> None:
        if name == "fuse" and isinstance(value, types.ModuleType):
            value = value.fuse
        super().__setattr__(name, value)


sys.modules[__name__].__class__ = _Package
