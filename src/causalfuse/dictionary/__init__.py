"""Confounder dictionaries: backbone scene features, PCA, K-Means++ (paper, Sec. 3.3).

Heavy dependencies (scikit-learn, the backbones) are imported only when a
dictionary is built, so loading a dictionary file needs just safetensors.
"""

from .io import ConfounderDictionary, load_dictionaries, save_dictionaries

__all__ = [
    "ConfounderDictionary",
    "build_dictionaries",
    "extract_features",
    "file_list_hash",
    "get_backbone",
    "load_dictionaries",
    "save_dictionaries",
]


def __getattr__(name: str):
    if name in ("build_dictionaries", "extract_features", "file_list_hash"):
        from . import build

        return getattr(build, name)
    if name == "get_backbone":
        from .backbones import get_backbone

        return get_backbone
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
