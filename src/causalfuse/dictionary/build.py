"""Building the confounder dictionaries (paper, Sec. 3.3 and Fig. 3).

For each modality separately: one backbone descriptor per training image
(:mod:`.backbones`), PCA to ``d`` dimensions, K-Means++ into ``N`` clusters,
and z_i = the mean of the reduced features of cluster i, with the empirical
frequency P(z_i) = |cluster i| / n_images kept beside it.

Everything is deterministic: the images are read in the order of ``pairs``,
the backbone runs in eval mode, PCA uses the exact (LAPACK) SVD and K-Means++
a fixed ``random_state``, so the same data and seed give the same file.
Clusters are renumbered largest first (ties keep K-Means' order).
"""

from __future__ import annotations

import hashlib
import os
import warnings
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import torch

from .. import __version__
from ..data.paired import Pair
from ..errors import CausalFuseError
from ..io import load_image, to_float01
from .backbones import FeatureExtractor, get_backbone, image_to_tensor
from .io import ConfounderDictionary

__all__ = ["build_dictionaries", "count_distinct", "extract_features", "file_list_hash", "fit_dictionary"]


def file_list_hash(pairs: Sequence[Pair]) -> str:
    """SHA-256 of the pair list (name, infrared file name, visible file name per line).

    It identifies the training set independently of where it is stored; a
    checkpoint can compare it with its dictionary's to refuse other data.
    """
    h = hashlib.sha256()
    for p in pairs:
        h.update(f"{p.name}\t{Path(p.ir).name}\t{Path(p.vi).name}\n".encode())
    return h.hexdigest()


def extract_features(
    pairs: Sequence[Pair],
    backbone: FeatureExtractor,
    *,
    batch_size: int = 16,
    progress: bool = True,
) -> tuple[np.ndarray, np.ndarray, str]:
    """Backbone descriptors of every pair.

    Returns:
        (infrared features (n, D), visible features (n, D), SHA-256 of the
        bytes of all files read, in order).
    """
    from tqdm.auto import tqdm

    device = backbone.mean.device
    content = hashlib.sha256()
    feats: dict[str, list[np.ndarray]] = {"ir": [], "vi": []}
    bar = tqdm(total=2 * len(pairs), desc="backbone features", unit="img", disable=not progress, dynamic_ncols=True)
    try:
        for start in range(0, len(pairs), batch_size):
            chunk = pairs[start : start + batch_size]
            for modality in ("ir", "vi"):
                batch = []
                for pair in chunk:
                    path = Path(getattr(pair, modality))
                    content.update(path.read_bytes() if path.is_file() else b"")
                    image = to_float01(load_image(path))
                    batch.append(image_to_tensor(image, grey=(modality == "ir"), size=backbone.input_size))
                with torch.inference_mode():
                    out = backbone(torch.stack(batch).to(device))
                feats[modality].append(out.float().cpu().numpy())
                bar.update(len(chunk))
    finally:
        bar.close()
    return np.concatenate(feats["ir"]), np.concatenate(feats["vi"]), content.hexdigest()


#: Two feature vectors (or prototypes) closer than this fraction of the
#: root-mean-square norm of the reduced features count as one scene.
DUPLICATE_TOLERANCE = 1e-6


def count_distinct(points: np.ndarray, tol: float) -> int:
    """Number of points of (n, d) that are not within ``tol`` (Euclidean) of an earlier one."""
    points = np.asarray(points, dtype=np.float64)
    kept = np.empty_like(points)
    n_kept = 0
    for p in points:  # differences, not |a|^2 + |b|^2 - 2ab, which cancels to noise
        if n_kept and float(np.sqrt(((kept[:n_kept] - p) ** 2).sum(axis=1)).min()) <= tol:
            continue
        kept[n_kept] = p
        n_kept += 1
    return n_kept


def _too_few_scenes(modality: str, n: int, n_clusters: int, found: str) -> CausalFuseError:
    return CausalFuseError(
        f"the {modality} features of these {n} images hold fewer than {n_clusters} distinct scenes "
        f"({found}): use more varied images or a smaller -N"
    )


def fit_dictionary(
    features: np.ndarray,
    *,
    modality: str,
    n_clusters: int = 25,
    dim: int = 128,
    seed: int = 0,
    n_init: int = 10,
    provenance: dict | None = None,
) -> ConfounderDictionary:
    """PCA then K-Means++ on (n, D) features -> the dictionary of one modality.

    The PCA keeps ``min(dim, n, D)`` components (recorded as ``dim`` in the
    provenance, the request as ``dim_requested``).

    Raises:
        CausalFuseError: fewer images than clusters, fewer distinct feature
            vectors than clusters, or two prototypes that coincide (within
            :data:`DUPLICATE_TOLERANCE`), whatever scikit-learn's K-Means does
            with duplicate points.
    """
    from sklearn.cluster import KMeans
    from sklearn.decomposition import PCA

    x = np.asarray(features, dtype=np.float64)
    n, feature_dim = x.shape
    if n_clusters < 1 or dim < 1:
        raise CausalFuseError(f"N and d must be at least 1, got N={n_clusters}, d={dim}")
    if n < n_clusters:
        raise CausalFuseError(f"{n} {modality} images cannot make {n_clusters} clusters: use at least N images or a smaller -N")
    d = min(dim, n, feature_dim)
    pca = PCA(n_components=d, svd_solver="full")
    reduced = pca.fit_transform(x)
    tol = DUPLICATE_TOLERANCE * max(float(np.sqrt((reduced**2).sum(axis=1).mean())), np.finfo(np.float64).tiny)
    distinct = count_distinct(reduced, tol)
    if distinct < n_clusters:
        raise _too_few_scenes(modality, n, n_clusters, f"{distinct} distinct feature vectors")
    kmeans = KMeans(n_clusters=n_clusters, init="k-means++", n_init=n_init, random_state=seed, algorithm="lloyd")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # a distinct-points shortfall is detected here, in plain words
        labels = kmeans.fit_predict(reduced)
    counts = np.bincount(labels, minlength=n_clusters).astype(np.int64)
    if (counts == 0).any():
        raise _too_few_scenes(modality, n, n_clusters, f"{int((counts > 0).sum())} non-empty clusters")
    order = np.argsort(-counts, kind="stable")
    prototypes = np.stack([reduced[labels == k].mean(axis=0) for k in order])
    # Some scikit-learn releases (1.9) spread duplicate points over identical
    # centres instead of leaving a cluster empty: check the result itself.
    distinct = count_distinct(prototypes, tol)
    if distinct < n_clusters:
        raise _too_few_scenes(modality, n, n_clusters, f"only {distinct} distinct prototypes")
    counts = counts[order]
    prov = dict(provenance or {})
    prov.update(
        modality=modality,
        n_clusters=int(n_clusters),
        dim=int(d),
        dim_requested=int(dim),
        feature_dim=int(feature_dim),
        seed=int(seed),
        n_init=int(n_init),
        n_images=int(n),
        cluster_sizes=[int(c) for c in counts],
        pca_explained_variance=float(pca.explained_variance_ratio_.sum()),
        kmeans_inertia=float(kmeans.inertia_),
        method="PCA (full SVD) then K-Means++ (scikit-learn); z_i = mean reduced feature of cluster i",
    )
    return ConfounderDictionary(
        prototypes=prototypes,
        frequencies=counts / counts.sum(),
        counts=counts,
        pca_mean=pca.mean_,
        pca_components=pca.components_,
        modality=modality,  # type: ignore[arg-type]
        provenance=prov,
    )


def build_dictionaries(
    pairs: Sequence[Pair],
    n_clusters: int = 25,
    dim: int = 128,
    backbone: str | FeatureExtractor = "efficientnet-lite0",
    seed: int = 0,
    n_init: int = 10,
    batch_size: int = 16,
    device: str | torch.device = "cpu",
    progress: bool = True,
    data_roots: Sequence[str | os.PathLike] | None = None,
    log: Callable[[str], None] | None = None,
) -> tuple[ConfounderDictionary, ConfounderDictionary]:
    """The infrared and visible confounder dictionaries of a set of pairs.

    Args:
        pairs: the training pairs (see :func:`causalfuse.data.paired.pairs_from_roots`).
        n_clusters: N, dictionary size (paper: 25).
        dim: d, PCA dimension (at most the number of images).
        backbone: ``"efficientnet-lite0"``, ``"resnet50"`` or a
            :class:`~.backbones.FeatureExtractor`.
        seed: K-Means++ random state.
        n_init: K-Means++ restarts; the best inertia is kept.
        batch_size: images per backbone call.
        device: where the backbone runs.
        progress: show a tqdm progress bar.
        data_roots: recorded in the provenance; by default the folders of the
            images.

    Returns:
        (infrared dictionary, visible dictionary).
    """
    pairs = list(pairs)
    if not pairs:
        raise CausalFuseError("no image pairs to build dictionaries from")
    if len(pairs) < n_clusters:
        raise CausalFuseError(f"{len(pairs)} image pairs cannot make {n_clusters} clusters: use at least N pairs or a smaller -N")
    extractor = get_backbone(backbone, device) if isinstance(backbone, str) else backbone
    ir_feats, vi_feats, content_sha = extract_features(pairs, extractor, batch_size=batch_size, progress=progress)
    if data_roots is None:
        data_roots = list(dict.fromkeys(str(Path(p).parent) for pair in pairs for p in (pair.ir, pair.vi)))
    common = {
        "backbone": extractor.name,
        "backbone_input": f"whole image resized to {extractor.input_size}x{extractor.input_size} "
        "(antialiased bilinear), ImageNet normalisation, infrared as BT.601 grey replicated to 3 channels",
        "file_list_sha256": file_list_hash(pairs),
        "content_sha256": content_sha,
        "data_roots": [str(r) for r in data_roots],
        "created_by": f"causalfuse {__version__}",
    }
    out = []
    for modality, feats in (("ir", ir_feats), ("vi", vi_feats)):
        if log:
            log(f"clustering {modality}: PCA to {min(dim, *feats.shape)} dims, K-Means++ N={n_clusters}, {n_init} inits")
        out.append(fit_dictionary(feats, modality=modality, n_clusters=n_clusters, dim=dim, seed=seed, n_init=n_init, provenance=common))
    return out[0], out[1]
