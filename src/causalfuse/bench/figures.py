"""The figures of a bench run: image grids (with an optional zoomed inset) and metric bars."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Sequence

import numpy as np

from ..errors import CausalFuseError
from ..io import atomic_path
from .files import external_folder, fused_path
from .results import RunData, arrow

__all__ = ["grid_figure", "bar_figure"]


def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _save(fig, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=100, format="png")
    _plt().close(fig)
    return path


def _pick(names: Sequence[str], k: int) -> list[str]:
    if k <= 0 or not names:
        return []
    idx = sorted({int(round(i)) for i in np.linspace(0, len(names) - 1, min(k, len(names)))})
    return [names[i] for i in idx]


def grid_figure(
    run: RunData,
    dataset: str,
    path: Path,
    *,
    images: int = 4,
    zoom: Sequence[float] | None = None,
    max_side: int = 320,
) -> Path | None:
    """A few images of ``dataset`` x (IR, VI, every method), with an optional zoomed inset.

    Args:
        zoom: (x, y, w, h) of the inset region as fractions of the image.
        max_side: images are shown downsampled to at most this many pixels.
    """
    from PIL import Image

    from ..io import read_image

    pairs = {r["image"]: r for r in run.pairs if r["dataset"] == dataset}
    chosen = _pick(list(pairs), images)
    if not chosen:
        return None
    plt = _plt()
    columns = ["infrared", "visible", *run.method_labels]
    first = read_image(pairs[chosen[0]]["vi"])
    aspect = first.shape[0] / first.shape[1]
    cell = 1.7
    fig, axes = plt.subplots(
        len(chosen), len(columns), figsize=(cell * len(columns), cell * aspect * len(chosen) + 0.5), squeeze=False
    )
    for i, name in enumerate(chosen):
        sources = {"infrared": Path(pairs[name]["ir"]), "visible": Path(pairs[name]["vi"])}
        for j, col in enumerate(columns):
            ax = axes[i, j]
            ax.set_xticks([])
            ax.set_yticks([])
            path_ = sources.get(col) or _fused_file(run, dataset, col, name)
            if i == 0:
                ax.set_title(col, fontsize=8)
            if j == 0:
                ax.set_ylabel(name, fontsize=7)
            if path_ is None or not path_.is_file():
                ax.text(0.5, 0.5, "missing", ha="center", va="center", fontsize=8, color="#a00", transform=ax.transAxes)
                continue
            try:
                img = read_image(path_)
            except CausalFuseError:
                ax.text(0.5, 0.5, "unreadable", ha="center", va="center", fontsize=8, color="#a00", transform=ax.transAxes)
                continue
            h, w = img.shape[:2]
            scale = min(1.0, max_side / max(h, w))
            if scale < 1.0:
                pil = Image.fromarray(np.rint(img * 255).astype(np.uint8))
                img = np.asarray(pil.resize((max(1, int(w * scale)), max(1, int(h * scale))), Image.BILINEAR)) / 255.0
            kwargs = {"cmap": "gray", "vmin": 0, "vmax": 1} if img.ndim == 2 else {}
            ax.imshow(img, interpolation="nearest", **kwargs)
            if zoom is not None:
                _inset(ax, img, zoom, kwargs)
    fig.suptitle(f"{dataset}: sources and fused images", fontsize=9)
    fig.tight_layout(rect=(0, 0, 1, 0.97))
    return _save(fig, path)


def _fused_file(run: RunData, dataset: str, label: str, image: str) -> Path | None:
    spec = next((m for m in run.config.get("methods", []) if m["label"] == label), None)
    if spec is None:
        return None
    if spec.get("external"):
        from ..data.paired import list_images

        root = Path(spec["external"])
        if not root.is_dir():
            return None
        folder = external_folder(root, dataset, len(run.datasets))
        return list_images(folder).get(image) if folder is not None else None
    return fused_path(run.outdir, dataset, label, image)


def _inset(ax, img: np.ndarray, zoom: Sequence[float], kwargs: dict) -> None:
    from matplotlib.patches import Rectangle

    h, w = img.shape[:2]
    x, y, zw, zh = zoom
    x0, y0 = int(x * w), int(y * h)
    x1, y1 = max(x0 + 2, int((x + zw) * w)), max(y0 + 2, int((y + zh) * h))
    crop = img[y0:y1, x0:x1]
    ax.add_patch(Rectangle((x0 - 0.5, y0 - 0.5), x1 - x0, y1 - y0, fill=False, edgecolor="#ff3030", lw=0.8))
    inset = ax.inset_axes([0.56, 0.0, 0.44, 0.44])
    inset.imshow(crop, interpolation="nearest", **kwargs)
    inset.set_xticks([])
    inset.set_yticks([])
    for spine in inset.spines.values():
        spine.set_edgecolor("#ff3030")


def bar_figure(run: RunData, cells: dict, dataset: str, path: Path) -> Path | None:
    """Mean of every metric per method, with standard-deviation error bars."""
    if not run.metrics or not run.method_labels:
        return None
    plt = _plt()
    fig, axes = plt.subplots(1, len(run.metrics), figsize=(max(3.0, 0.45 * len(run.method_labels) + 1.2) * len(run.metrics), 3.2), squeeze=False)
    colours = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    xs = np.arange(len(run.method_labels))
    for ax, metric in zip(axes[0], run.metrics):
        cs = [cells.get((dataset, metric, m)) for m in run.method_labels]
        means = [c.mean if c else math.nan for c in cs]
        stds = [c.std if c else 0.0 for c in cs]
        ax.bar(xs, means, yerr=stds, capsize=2, color=[colours[i % len(colours)] for i in range(len(xs))], error_kw={"lw": 0.8})
        ax.set_xticks(xs)
        ax.set_xticklabels(run.method_labels, rotation=60, ha="right", fontsize=7)
        ax.set_title(f"{metric} {arrow(run, metric)}", fontsize=9)
        ax.grid(axis="y", alpha=0.3)
    fig.suptitle(f"{dataset}: mean ± standard deviation over images", fontsize=9)
    fig.tight_layout()
    return _save(fig, path)
