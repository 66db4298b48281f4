"""Paired infrared-visible datasets."""

from .paired import Pair, find_pairs, list_images, resolve_layout

__all__ = ["Pair", "find_pairs", "list_images", "resolve_layout"]
