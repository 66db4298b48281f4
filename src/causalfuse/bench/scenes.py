"""Scene-bias report: is fusion quality even across scenes the training set rarely shows?

Every test image (its visible image) is embedded with the backbone of the
confounder dictionary, projected with the visible dictionary's PCA and
assigned to the nearest scene prototype z_i. The training frequency of each
prototype, P(z_i), comes from the dictionary file. For every method and
metric the report gives:

- the mean per scene cluster, and the spread between the best and the worst
  cluster (clusters with at least ``min_images`` test images);
- the mean over images in *rare* clusters (training frequency below
  1 / (2N), half the uniform share) or *absent* ones (no training image)
  against the mean over the others, and the gap between them;
- the same gap for the method's *relative* score (its value minus the mean of
  all methods on the same image), which removes how hard each image is and
  leaves only how the method itself fares on rare scenes;
- a graded view that does not depend on the rare threshold (few test images
  may fall in rare clusters): the Spearman correlation, over test images,
  between the training frequency of the image's cluster and the method's
  relative score, oriented so that positive means "does better on scenes the
  training set shows often", i.e. scene bias.

The assignments are computed once per run (``scenes.csv``,
``scene_clusters.csv``); the analysis reads only those CSVs and
``results.csv``.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np

from ..data.paired import Pair
from ..errors import CausalFuseError
from .files import CLUSTER_FIELDS, SCENE_FIELDS, read_csv, write_csv

__all__ = [
    "SCENE_FIELDS",
    "CLUSTER_FIELDS",
    "default_dictionary",
    "assign_scenes",
    "cluster_status",
    "SceneBias",
    "scene_bias",
]



def default_dictionary() -> Path | None:
    """The dictionary file shipped with the package, if any.

    A model checkpoint keeps only the prototypes (not the PCA that maps an
    image to them), so the scene report needs the dictionary file itself:
    ``causalfuse/weights/dictionary.safetensors`` (or the first
    ``*dictionary*.safetensors`` there) when the package bundles one.
    """
    folder = Path(str(resources.files("causalfuse") / "weights"))
    if not folder.is_dir():
        return None
    preferred = folder / "dictionary.safetensors"
    if preferred.is_file():
        return preferred
    found = sorted(folder.glob("*dictionary*.safetensors"))
    return found[0] if found else None


def cluster_status(counts: np.ndarray) -> list[str]:
    """``absent`` (no training image), ``rare`` (frequency < 1/(2N)) or ``common``."""
    counts = np.asarray(counts, dtype=np.float64)
    total = counts.sum()
    n = len(counts)
    out = []
    for c in counts:
        freq = c / total if total > 0 else 0.0
        out.append("absent" if c == 0 else "rare" if freq < 1.0 / (2 * n) else "common")
    return out


def assign_scenes(
    datasets: dict[str, Sequence[Pair]],
    dictionary: str | os.PathLike,
    outdir: str | os.PathLike,
    *,
    device: str = "auto",
    batch_size: int = 8,
    progress: bool = True,
    backbone: Any = None,
) -> None:
    """Assign every pair's visible image to its nearest visible scene prototype.

    Writes ``scenes.csv`` (dataset, image, cluster, distance in the PCA space)
    and ``scene_clusters.csv`` (cluster, training count and frequency,
    status). Images already in ``scenes.csv`` are not embedded again.

    Args:
        datasets: dataset name -> pairs.
        dictionary: a file written by ``causalfuse dictionary build``.
        outdir: the bench output folder.
        device: for the backbone.
        backbone: a feature extractor to use instead of the dictionary's
            (tests); it maps (B, 3, H, W) in [0, 1] to (B, D) and has an
            ``input_size``.
    """
    import torch
    from tqdm.auto import tqdm

    from .._device import resolve_device
    from ..dictionary.io import load_dictionaries
    from ..io import read_image

    outdir = Path(outdir)
    _, vi_dict = load_dictionaries(dictionary)
    rows = read_csv(outdir / "scenes.csv", SCENE_FIELDS)
    have = {(r["dataset"], r["image"]) for r in rows}
    todo = [(name, pair) for name, pairs in datasets.items() for pair in pairs if (name, pair.name) not in have]
    if todo:
        if backbone is None:
            from ..dictionary.backbones import get_backbone

            backbone = get_backbone(str(vi_dict.provenance.get("backbone", "efficientnet-lite0")), resolve_device(device))
        from ..dictionary.backbones import image_to_tensor

        size = getattr(backbone, "input_size", 224)
        bar = tqdm(total=len(todo), desc="scene assignment", unit="img", disable=not progress, dynamic_ncols=True)
        try:
            for start in range(0, len(todo), batch_size):
                chunk = todo[start : start + batch_size]
                batch = torch.stack([image_to_tensor(read_image(p.vi), grey=False, size=size) for _, p in chunk])
                with torch.inference_mode():
                    feats = backbone(batch).float().cpu().numpy()
                z = vi_dict.project(feats).astype(np.float64)
                d2 = ((z[:, None, :] - vi_dict.prototypes[None].astype(np.float64)) ** 2).sum(-1)
                nearest = d2.argmin(axis=1)
                for (name, pair), k, dist in zip(chunk, nearest, np.sqrt(d2[np.arange(len(chunk)), nearest])):
                    rows.append({"dataset": name, "image": pair.name, "cluster": int(k), "distance": f"{dist:.4f}"})
                bar.update(len(chunk))
        finally:
            bar.close()
            write_csv(outdir / "scenes.csv", SCENE_FIELDS, rows)
    counts = vi_dict.counts
    status = cluster_status(counts)
    total = max(int(counts.sum()), 1)
    write_csv(
        outdir / "scene_clusters.csv",
        CLUSTER_FIELDS,
        (
            {"cluster": i, "train_count": int(c), "train_frequency": f"{c / total:.6f}", "status": s}
            for i, (c, s) in enumerate(zip(counts, status))
        ),
    )


# ------------------------------------------------------------------ analysis


@dataclass
class MethodSceneStats:
    """Scene statistics of one method and metric."""

    method: str
    metric: str
    per_cluster: dict[int, tuple[float, int]]  # cluster -> (mean, images)
    best: tuple[int, float] | None
    worst: tuple[int, float] | None
    spread: float
    rare_mean: float
    common_mean: float
    rare_images: int
    relative_gap: float  # (rare - common) of the value minus the all-methods mean per image
    frequency_trend: float = math.nan  # Spearman rho(training frequency, oriented relative score)

    @property
    def gap(self) -> float:
        return self.rare_mean - self.common_mean


@dataclass
class SceneBias:
    """The scene-bias analysis of one bench run."""

    clusters: list[dict[str, Any]]  # cluster, train_count, train_frequency, status, test_images
    stats: list[MethodSceneStats] = field(default_factory=list)
    min_images: int = 2
    higher_is_better: dict[str, bool] = field(default_factory=dict)

    def get(self, method: str, metric: str) -> MethodSceneStats | None:
        return next((s for s in self.stats if s.method == method and s.metric == metric), None)


def _nanmean(values: Sequence[float]) -> float:
    finite = [v for v in values if not math.isnan(v)]
    return float(np.mean(finite)) if finite else math.nan


def scene_bias(
    results: Sequence[dict[str, str]],
    scenes: Sequence[dict[str, str]],
    clusters: Sequence[dict[str, str]],
    *,
    methods: Sequence[str],
    metrics: Sequence[str],
    higher_is_better: dict[str, bool],
    min_images: int = 2,
) -> SceneBias:
    """Per-cluster statistics from the rows of results.csv, scenes.csv and scene_clusters.csv.

    Best and worst cluster follow each metric's direction; the spread is
    |best - worst| over clusters with at least ``min_images`` test images.
    """
    cluster_of = {(r["dataset"], r["image"]): int(r["cluster"]) for r in scenes}
    status = {int(r["cluster"]): r["status"] for r in clusters}
    frequency = {int(r["cluster"]): float(r["train_frequency"]) for r in clusters}
    test_images: dict[int, int] = {}
    for k in cluster_of.values():
        test_images[k] = test_images.get(k, 0) + 1
    cluster_rows = [
        {
            "cluster": int(r["cluster"]),
            "train_count": int(r["train_count"]),
            "train_frequency": float(r["train_frequency"]),
            "status": r["status"],
            "test_images": test_images.get(int(r["cluster"]), 0),
        }
        for r in clusters
    ]
    # value[(metric, dataset, image)][method]
    table: dict[tuple[str, str, str], dict[str, float]] = {}
    for r in results:
        table.setdefault((r["metric"], r["dataset"], r["image"]), {})[r["method"]] = float(r["value"])
    out = SceneBias(cluster_rows, min_images=min_images, higher_is_better=dict(higher_is_better))
    for metric in metrics:
        hib = higher_is_better.get(metric, True)
        for method in methods:
            per: dict[int, list[float]] = {}
            rare, common, rare_rel, common_rel = [], [], [], []
            trend_x, trend_y = [], []
            for (m, dataset, image), by_method in table.items():
                if m != metric or method not in by_method or (dataset, image) not in cluster_of:
                    continue
                value = by_method[method]
                k = cluster_of[(dataset, image)]
                per.setdefault(k, []).append(value)
                others = [v for v in by_method.values() if not math.isnan(v)]
                relative = value - float(np.mean(others)) if others else math.nan
                if math.isfinite(relative) and k in frequency:
                    trend_x.append(frequency[k])
                    trend_y.append(relative if hib else -relative)
                if status.get(k, "common") in ("rare", "absent"):
                    rare.append(value)
                    rare_rel.append(relative)
                else:
                    common.append(value)
                    common_rel.append(relative)
            per_cluster = {k: (_nanmean(v), len(v)) for k, v in sorted(per.items())}
            eligible = [(k, m) for k, (m, n) in per_cluster.items() if n >= min_images and not math.isnan(m)]
            best = worst = None
            spread = math.nan
            if eligible:
                ordered = sorted(eligible, key=lambda km: km[1], reverse=hib)
                best, worst = ordered[0], ordered[-1]
                spread = abs(best[1] - worst[1])
            out.stats.append(
                MethodSceneStats(
                    method,
                    metric,
                    per_cluster,
                    best,
                    worst,
                    spread,
                    _nanmean(rare),
                    _nanmean(common),
                    len(rare),
                    _nanmean(rare_rel) - _nanmean(common_rel),
                    _spearman(trend_x, trend_y),
                )
            )
    return out


def _spearman(x: Sequence[float], y: Sequence[float]) -> float:
    """Spearman's rho (average ranks for ties); NaN for fewer than 3 points or a constant input."""
    if len(x) < 3 or len(set(x)) < 2 or len(set(y)) < 2:
        return math.nan
    from scipy.stats import rankdata

    rx, ry = rankdata(x), rankdata(y)
    return float(np.corrcoef(rx, ry)[0, 1])


def scene_figure(bias: SceneBias, methods: Sequence[str], metrics: Sequence[str], path: str | os.PathLike) -> Path | None:
    """Metric mean per scene cluster (clusters ordered by training frequency), rare ones shaded."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    present = [c for c in sorted(bias.clusters, key=lambda c: -c["train_frequency"]) if c["test_images"] > 0]
    if not present or not bias.stats:
        return None
    order = [c["cluster"] for c in present]
    fig, axes = plt.subplots(len(metrics), 1, figsize=(max(6.0, 0.5 * len(order) + 3), 2.6 * len(metrics)), squeeze=False)
    xs = np.arange(len(order))
    width = 0.8 / max(1, len(methods))
    for ax, metric in zip(axes[:, 0], metrics):
        for i, c in enumerate(present):
            if c["status"] != "common":
                ax.axvspan(i - 0.5, i + 0.5, color="#f3d9a4", alpha=0.6, lw=0)
        for j, method in enumerate(methods):
            stats = bias.get(method, metric)
            if stats is None:
                continue
            ys = [stats.per_cluster.get(k, (math.nan, 0))[0] for k in order]
            ax.bar(xs - 0.4 + width * (j + 0.5), ys, width, label=method)
        arrow = "higher is better" if bias.higher_is_better.get(metric, True) else "lower is better"
        ax.set_ylabel(f"{metric}\n({arrow})", fontsize=8)
        ax.set_xticks(xs)
        ax.set_xticklabels([f"z{c['cluster']}\n{100 * c['train_frequency']:.1f}%\nn={c['test_images']}" for c in present], fontsize=7)
        ax.grid(axis="y", alpha=0.3)
    axes[0, 0].set_title("mean per scene cluster (shaded: rare or absent in training; % = training frequency, n = test images)", fontsize=9)
    axes[0, 0].legend(fontsize=7, ncol=min(len(methods), 6), loc="lower left", bbox_to_anchor=(0, 1.12), frameon=False)
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    from ..io import atomic_path

    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=110, format="png")
    plt.close(fig)
    return path


def dictionary_for_run(explicit: str | None, no_scenes: bool, log: Callable[[str], None]) -> str | None:
    """The dictionary file for a run: the one given, else the bundled one; None with ``no_scenes``."""
    if no_scenes:
        return None
    if explicit is not None:
        path = Path(explicit)
        if not path.is_file():
            raise CausalFuseError(f"--dictionary {explicit}: no such file")
        return str(path.resolve())
    bundled = default_dictionary()
    if bundled is None:
        raise CausalFuseError(
            "the scene-bias report needs a confounder dictionary and this installation bundles none: "
            "pass --dictionary FILE (from `causalfuse dictionary build`) or --no-scenes"
        )
    log(f"scene-bias report: using the bundled dictionary {bundled}")
    return str(bundled)
