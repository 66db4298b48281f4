"""causalfuse: causality-driven infrared-visible image fusion.

Implements "Causality-Driven Infrared and Visible Image Fusion" (BAFFM over
LRRNet features) together with the field's fusion metrics and a benchmark.
"""

from __future__ import annotations

__version__ = "0.1.0"

from .errors import CausalFuseError

__all__ = ["CausalFuseError", "__version__"]
