"""Metrics by name, each describing itself.

A metric is a function ``metric(fused, ir, vi, *, ...) -> float`` on one
channel: 2-D float64 arrays on the 0-255 scale of the original code (uint8
inputs as they are). Colour handling (VIFB's per-channel average, or MATLAB
``rgb2gray``) is applied once, by :func:`causalfuse.metrics.compute`, from the
``colour`` field of the record.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Literal

from ..errors import CausalFuseError

__all__ = ["MetricInfo", "register_metric", "list_metrics", "list_groups", "get_metric"]

ColourRule = Literal["per_channel", "fused_only", "side_by_side"]


@dataclass(frozen=True)
class MetricInfo:
    """What the benchmark needs to know about a metric.

    Attributes:
        name: the short name used on the command line and in tables (e.g. ``MI``).
        fn: the single-channel function.
        higher_is_better: direction of "better".
        reference: the paper that defines it, with its DOI.
        colour: how VIFB's colour convention applies: each channel separately
            and averaged (``per_channel``), on the fused image only, per channel
            (``fused_only``), or on the channels laid side by side
            (``side_by_side``, VIFB's spatial frequency).
        vifb_name: the metric's name in the VIFB code and reference files.
        min_size: the smallest height and width the metric is defined for
            (its windows or differences must fit). :func:`compute` refuses
            smaller images, naming the metric and this size; the function
            itself returns what the original code returns there (the
            metric's docstring says what).
        groups: names of the selections the metric belongs to besides its
            own name (e.g. ``fmi``, ``liu2012``); a metric with groups is not
            part of ``all``, which keeps the meaning it has in published
            tables (VIFB's 13 and the five the fusion papers added).
    """

    name: str
    fn: Callable[..., float]
    higher_is_better: bool
    reference: str
    colour: ColourRule = "per_channel"
    vifb_name: str | None = None
    min_size: int = 1
    groups: tuple[str, ...] = ()


_METRICS: dict[str, MetricInfo] = {}


def register_metric(
    name: str,
    *,
    higher_is_better: bool,
    reference: str,
    colour: ColourRule = "per_channel",
    vifb_name: str | None = None,
    min_size: int = 1,
    groups: tuple[str, ...] = (),
) -> Callable[[Callable[..., float]], Callable[..., float]]:
    """Decorator registering a single-channel metric function under ``name``."""

    def deco(fn: Callable[..., float]) -> Callable[..., float]:
        key = name.lower()
        if key in _METRICS and _METRICS[key].fn is not fn:
            raise ValueError(f"metric {name!r} is registered twice")
        _METRICS[key] = MetricInfo(name, fn, higher_is_better, reference, colour, vifb_name, min_size, tuple(g.lower() for g in groups))
        fn.higher_is_better = higher_is_better  # type: ignore[attr-defined]
        return fn

    return deco


def list_metrics() -> list[str]:
    """Names of all registered metrics."""
    from . import _load_all  # noqa: F401  (registers the built-in metrics)

    return sorted((m.name for m in _METRICS.values()), key=str.lower)


def list_groups() -> dict[str, list[str]]:
    """Selections by name: ``all`` (the metrics of published tables) and every metric group."""
    from . import _load_all  # noqa: F401

    groups: dict[str, list[str]] = {"all": [m.name for m in _METRICS.values() if not m.groups]}
    for m in _METRICS.values():
        for g in m.groups:
            groups.setdefault(g, []).append(m.name)
    return {g: sorted(names, key=str.lower) for g, names in groups.items()}


def get_metric(name: str) -> MetricInfo:
    """The record of ``name`` (case-insensitive); unknown names list the known ones."""
    from . import _load_all  # noqa: F401

    try:
        return _METRICS[name.lower()]
    except KeyError:
        groups = ", ".join(g for g in list_groups())
        raise CausalFuseError(f"unknown metric {name!r}; available: {', '.join(list_metrics())}; groups: {groups}") from None
