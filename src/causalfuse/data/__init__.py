"""Paired infrared-visible datasets."""

from .paired import Pair, find_pairs, list_images, pairs_from_roots, resolve_layout

__all__ = ["Pair", "PairedDataset", "find_pairs", "list_images", "pairs_from_roots", "resolve_layout"]


def __getattr__(name: str):
    # The torch dataset is imported on first use, so finding pairs stays light.
    if name == "PairedDataset":
        from .dataset import PairedDataset

        return PairedDataset
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
