"""Fusion methods by name.

A method fuses one luminance channel: it is called with two float32 arrays in
[0, 1] of the same shape (H, W), infrared first, and returns the fused (H, W)
float32 array in [0, 1]. Colour handling, file I/O and folders are done once,
in :mod:`causalfuse.fuse`, for every method.

Register a method with :func:`register_method` on a factory that takes
keyword options (``weights``, ``device``, ...) and returns the callable.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Protocol

import numpy as np

from ..errors import CausalFuseError

__all__ = ["FusionMethod", "MethodInfo", "register_method", "list_methods", "get_method", "create_method"]


class FusionMethod(Protocol):
    def __call__(self, ir: np.ndarray, vi: np.ndarray) -> np.ndarray: ...


@dataclass(frozen=True)
class MethodInfo:
    name: str
    factory: Callable[..., FusionMethod]
    description: str
    needs_weights: bool = False
    reference: str = ""
    kind: str = "learned"  # "learned" or "classical"
    options: dict[str, Any] = field(default_factory=dict)


_METHODS: dict[str, MethodInfo] = {}
_BUILTIN_MODULES = ("causalfuse.models.methods", "causalfuse.bench.classical")


def register_method(
    name: str, *, description: str, needs_weights: bool = False, reference: str = "", kind: str = "learned"
) -> Callable[[Callable[..., FusionMethod]], Callable[..., FusionMethod]]:
    """Decorator registering a method factory under ``name``."""

    def deco(factory: Callable[..., FusionMethod]) -> Callable[..., FusionMethod]:
        if name in _METHODS and _METHODS[name].factory is not factory:
            raise ValueError(f"fusion method {name!r} is registered twice")
        _METHODS[name] = MethodInfo(name, factory, description, needs_weights, reference, kind)
        return factory

    return deco


def _load_builtins() -> None:
    import importlib

    for module in _BUILTIN_MODULES:
        try:
            importlib.import_module(module)
        except ModuleNotFoundError as exc:
            # A module of the package not written yet, or an optional extra not installed.
            if not (exc.name or "").startswith(module) and exc.name not in ("pywt",):
                raise


def list_methods() -> list[str]:
    """Names of all registered methods."""
    _load_builtins()
    return sorted(_METHODS)


def get_method(name: str) -> MethodInfo:
    """The registration record of ``name``; unknown names list the known ones."""
    _load_builtins()
    if name not in _METHODS:
        raise CausalFuseError(f"unknown fusion method {name!r}; known methods: {', '.join(sorted(_METHODS))}")
    return _METHODS[name]


def create_method(name: str, **options: Any) -> FusionMethod:
    """Build the method ``name`` with the given options (e.g. ``weights``, ``device``).

    Options a method does not take are dropped when they are None or
    ``device``, so callers can pass the same options to every method; any
    other option it does not take is an error.
    """
    import inspect

    info = get_method(name)
    params = inspect.signature(info.factory).parameters
    if not any(p.kind is p.VAR_KEYWORD for p in params.values()):
        extra = {k: v for k, v in options.items() if k not in params}
        refused = sorted(k for k, v in extra.items() if v is not None and k != "device")
        if refused:
            raise CausalFuseError(f"fusion method {name!r} takes no {', '.join(refused)} option")
        options = {k: v for k, v in options.items() if k in params}
    return info.factory(**options)
