"""Confounder dictionaries in memory and on disk.

A dictionary file is one safetensors file holding both modalities:

========================  ===========  =========================================
tensor                    shape/dtype  meaning
========================  ===========  =========================================
``{m}.prototypes``        (N, d) f32   z_i, mean of the PCA-reduced features
                                       of the training images in cluster i
``{m}.frequencies``       (N,) f32     P(z_i): cluster size / image count
``{m}.counts``            (N,) i64     cluster sizes
``{m}.pca_mean``          (D,) f32     mean of the backbone features
``{m}.pca_components``    (d, D) f32   PCA axes (rows), so new images can be
                                       projected and assigned to a cluster
========================  ===========  =========================================

for ``m`` in ``ir`` and ``vi``, and the metadata key ``causalfuse.dictionary``
holding the JSON ``{"format": 1, "ir": {provenance}, "vi": {provenance},
"tensors_sha256": checksum}`` (the checksum is verified on loading). Clusters are stored largest first. No pickle is involved anywhere.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np

from ..errors import CausalFuseError
from ..integrity import CHECKSUM_KEY, check_tensors, tensors_sha256
from ..io import atomic_path

__all__ = ["ConfounderDictionary", "FORMAT_VERSION", "METADATA_KEY", "load_dictionaries", "save_dictionaries"]

METADATA_KEY = "causalfuse.dictionary"
FORMAT_VERSION = 1
_FIELDS = ("prototypes", "frequencies", "counts", "pca_mean", "pca_components")


@dataclass
class ConfounderDictionary:
    """The confounder dictionary Z = [z_1, ..., z_N] of one modality.

    Attributes:
        prototypes: (N, d) float32, z_i.
        frequencies: (N,) float32, empirical P(z_i), summing to 1.
        counts: (N,) int64, training images per cluster.
        pca_mean: (D,) float32, mean backbone feature of the training images.
        pca_components: (d, D) float32, the PCA projection (orthonormal rows).
        modality: ``"ir"`` or ``"vi"``.
        provenance: how it was built (backbone, N, d, seed, n_images,
            file_list_sha256, data roots, cluster sizes, causalfuse version...).
    """

    prototypes: np.ndarray
    frequencies: np.ndarray
    counts: np.ndarray
    pca_mean: np.ndarray
    pca_components: np.ndarray
    modality: Literal["ir", "vi"]
    provenance: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.prototypes = np.ascontiguousarray(self.prototypes, dtype=np.float32)
        self.frequencies = np.ascontiguousarray(self.frequencies, dtype=np.float32)
        self.counts = np.ascontiguousarray(self.counts, dtype=np.int64)
        self.pca_mean = np.ascontiguousarray(self.pca_mean, dtype=np.float32)
        self.pca_components = np.ascontiguousarray(self.pca_components, dtype=np.float32)
        self._check()

    def _check(self, where: str = "confounder dictionary") -> None:
        if self.modality not in ("ir", "vi"):
            raise CausalFuseError(f"{where}: modality must be 'ir' or 'vi', got {self.modality!r}")
        p, f, c, m, a = self.prototypes, self.frequencies, self.counts, self.pca_mean, self.pca_components
        problems = []
        if p.ndim != 2 or p.shape[0] < 1:
            problems.append(f"prototypes must be (N, d), got {p.shape}")
        else:
            n, d = p.shape
            if f.shape != (n,):
                problems.append(f"frequencies must be ({n},), got {f.shape}")
            if c.shape != (n,):
                problems.append(f"counts must be ({n},), got {c.shape}")
            if m.ndim != 1:
                problems.append(f"pca_mean must be (D,), got {m.shape}")
            elif a.shape != (d, m.shape[0]):
                problems.append(f"pca_components must be ({d}, {m.shape[0]}), got {a.shape}")
        if not problems and not all(np.isfinite(x).all() for x in (p, f, m, a)):
            problems.append("non-finite values")
        if problems:
            raise CausalFuseError(f"{where} ({self.modality}): " + "; ".join(problems))

    @property
    def n_clusters(self) -> int:
        """N, the number of prototypes."""
        return int(self.prototypes.shape[0])

    @property
    def dim(self) -> int:
        """d, the length of a prototype (the PCA dimension)."""
        return int(self.prototypes.shape[1])

    @property
    def feature_dim(self) -> int:
        """D, the length of a backbone feature vector."""
        return int(self.pca_mean.shape[0])

    def project(self, features: np.ndarray) -> np.ndarray:
        """Backbone features (B, D) or (D,) -> PCA-reduced features (B, d) or (d,)."""
        x = np.asarray(features, dtype=np.float64)
        if x.shape[-1] != self.feature_dim or x.ndim not in (1, 2):
            raise CausalFuseError(
                f"{self.modality} dictionary expects backbone features of length {self.feature_dim} "
                f"({self.provenance.get('backbone', 'unknown backbone')}), got shape {x.shape}"
            )
        return ((x - self.pca_mean) @ self.pca_components.T.astype(np.float64)).astype(np.float32)

    def assign(self, features: np.ndarray) -> np.ndarray:
        """Backbone features (B, D) -> index (B,) int64 of the nearest prototype."""
        z = self.project(np.atleast_2d(features)).astype(np.float64)
        d2 = ((z[:, None, :] - self.prototypes[None].astype(np.float64)) ** 2).sum(-1)
        return d2.argmin(axis=1).astype(np.int64)

    def check_matches(self, *, n_clusters: int | None = None, dim: int | None = None,
                      file_list_sha256: str | None = None, source: str = "the dictionary") -> None:
        """Refuse a dictionary of another size, or built on other data, than expected.

        Raises:
            CausalFuseError: naming ``source`` and what differs.
        """
        diffs = []
        if n_clusters is not None and n_clusters != self.n_clusters:
            diffs.append(f"N = {self.n_clusters} prototypes, expected {n_clusters}")
        if dim is not None and dim != self.dim:
            diffs.append(f"d = {self.dim}, expected {dim}")
        have = self.provenance.get("file_list_sha256")
        if file_list_sha256 is not None and have != file_list_sha256:
            diffs.append(f"built on other images (file list hash {str(have)[:12]}..., expected {file_list_sha256[:12]}...)")
        if diffs:
            raise CausalFuseError(f"{source} ({self.modality}) does not match: " + "; ".join(diffs))


def save_dictionaries(path: str | os.PathLike, ir: ConfounderDictionary, vi: ConfounderDictionary) -> Path:
    """Write the infrared and visible dictionaries to one safetensors file, atomically."""
    from safetensors.numpy import save_file

    path = Path(path)
    for expected, d in (("ir", ir), ("vi", vi)):
        if not isinstance(d, ConfounderDictionary) or d.modality != expected:
            raise CausalFuseError(f"save_dictionaries: the {expected} argument must be the {expected} ConfounderDictionary")
        d._check()
    tensors = {f"{d.modality}.{name}": getattr(d, name) for d in (ir, vi) for name in _FIELDS}
    # One metadata key (safetensors stores several in no fixed order): the same dictionaries, the same bytes.
    meta = {"format": FORMAT_VERSION, "ir": ir.provenance, "vi": vi.provenance, CHECKSUM_KEY: tensors_sha256(tensors)}
    metadata = {METADATA_KEY: json.dumps(meta, sort_keys=True, default=_json_default)}
    with atomic_path(path) as tmp:
        save_file(tensors, str(tmp), metadata=metadata)
    return path


def load_dictionaries(path: str | os.PathLike) -> tuple[ConfounderDictionary, ConfounderDictionary]:
    """Read a file written by :func:`save_dictionaries`.

    Returns:
        (infrared dictionary, visible dictionary).

    Raises:
        CausalFuseError: the file is missing, not safetensors, truncated, or
            not a causalfuse dictionary file.
    """
    from safetensors import safe_open

    path = Path(path)
    if not path.is_file():
        raise CausalFuseError(f"{path}: no such dictionary file")
    try:
        with safe_open(str(path), framework="numpy") as f:
            metadata = f.metadata() or {}
            names = set(f.keys())
            if METADATA_KEY not in metadata:
                raise CausalFuseError(
                    f"{path}: not a causalfuse dictionary file (safetensors without the {METADATA_KEY!r} metadata); "
                    "build one with: causalfuse dictionary build"
                )
            tensors = {name: f.get_tensor(name) for name in names}
    except CausalFuseError:
        raise
    except Exception as exc:  # noqa: BLE001 - safetensors raises several types for bad files
        raise CausalFuseError(f"{path}: not a readable safetensors file ({type(exc).__name__}: {exc})") from None
    try:
        meta = json.loads(metadata[METADATA_KEY])
    except json.JSONDecodeError as exc:
        raise CausalFuseError(f"{path}: corrupt dictionary metadata ({exc})") from None
    if not isinstance(meta, dict) or meta.get("format") != FORMAT_VERSION:
        raise CausalFuseError(
            f"{path}: dictionary format {meta.get('format') if isinstance(meta, dict) else meta!r} "
            f"is not the supported format {FORMAT_VERSION}"
        )
    check_tensors(tensors, path, meta.get(CHECKSUM_KEY))
    out = []
    for modality in ("ir", "vi"):
        missing = [f"{modality}.{n}" for n in _FIELDS if f"{modality}.{n}" not in tensors]
        if missing:
            raise CausalFuseError(f"{path}: dictionary file lacks the tensors {', '.join(missing)}")
        d = ConfounderDictionary.__new__(ConfounderDictionary)
        for name in _FIELDS:
            setattr(d, name, tensors[f"{modality}.{name}"])
        d.modality = modality  # type: ignore[assignment]
        d.provenance = dict(meta.get(modality) or {})
        try:
            d.__post_init__()
        except CausalFuseError as exc:
            raise CausalFuseError(f"{path}: {exc}") from None
        out.append(d)
    return out[0], out[1]


def _json_default(value: Any) -> Any:
    if isinstance(value, (np.integer,)):
        return int(value)
    if isinstance(value, (np.floating,)):
        return float(value)
    if isinstance(value, (np.ndarray,)):
        return value.tolist()
    if isinstance(value, Path):
        return str(value)
    raise TypeError(f"cannot store {type(value).__name__} in dictionary provenance")
