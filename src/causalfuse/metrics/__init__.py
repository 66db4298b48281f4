"""Fusion quality metrics, as the field's original MATLAB code defines them."""

from __future__ import annotations

from ._registry import MetricInfo, get_metric, list_metrics, register_metric

# Importing the metric families registers them. (Filled in as they land.)
_load_all = True

__all__ = ["MetricInfo", "get_metric", "list_metrics", "register_metric"]
