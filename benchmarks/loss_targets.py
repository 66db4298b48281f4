"""What each intensity target of the training loss scores as a fused image, on the val sets.

The intensity term pulls the network's output towards a target image made
from the two sources (``causalfuse.losses.intensity_target``: ``max``,
``mean``, ``detail-sum``). This script fuses every val pair with each target
itself, computed on the same luminance the network sees and with the same
colour handling as the bench, and scores it with the paper's four metrics
(grey, as published tables) plus the mean grey level. It shows what each
target rewards before any network is trained: the Laplacian pyramid is
scored beside them as a reference.

    python benchmarks/loss_targets.py --val ../shared/data/val --max-images 12
    python benchmarks/loss_targets.py --val ../shared/data/val --sigmas 2 5 10   # detail-sum's base blur
    python benchmarks/loss_targets.py --val ../shared/data/val --sigmas 10 20 --detail-max 10 20
    python benchmarks/loss_targets.py --val ../shared/data/val --sigmas 3 4 6 8 10 20 \
        --method causalfuse --plot docs/reach.png     # detail-sum's metrics against its blur, the network beside them

``--detail-max`` adds a rule that is not a loss target of the package, scored
as an image beside them: the sources' mean brightness plus, at each pixel,
the detail of the one source whose local detail energy (Gaussian of sigma
2 pixels over |X - B_X|) is the larger, as choose-max fusion rules do.
"""

from __future__ import annotations

import argparse
import statistics
import sys
from collections import defaultdict
from pathlib import Path

import numpy as np

from causalfuse.errors import CausalFuseError

sys.path.insert(0, str(Path(__file__).resolve().parent))
import recipe_study  # noqa: E402  (the study's scoring, shared: benchmarks/recipe_study.py)

METRICS = ("MI", "VIF", "Qabf", "SSIM", "mean_grey")


def target_method(name: str, sigma: float):
    """A luminance fusion function (ir, vi in [0, 1], (H, W)) -> (H, W) that returns the loss target."""
    import torch

    from causalfuse.losses import intensity_target

    def fuse(ir: np.ndarray, vi: np.ndarray) -> np.ndarray:
        a, b = (torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32))[None, None] for x in (ir, vi))
        return intensity_target(a, b, name, detail_sigma=sigma)[0, 0].numpy()

    return fuse


def detail_max(sigma: float, energy_sigma: float = 2.0):
    """The ``--detail-max`` rule (see the module text) as a luminance fusion function."""
    import torch

    from causalfuse.losses import gaussian_blur

    def fuse(ir: np.ndarray, vi: np.ndarray) -> np.ndarray:
        a, b = (torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32))[None, None] for x in (ir, vi))
        base_a, base_b = gaussian_blur(a, sigma), gaussian_blur(b, sigma)
        da, db = a - base_a, b - base_b
        pick_a = gaussian_blur(da.abs(), energy_sigma) > gaussian_blur(db.abs(), energy_sigma)
        return (0.5 * (base_a + base_b) + torch.where(pick_a, da, db)).clamp(0.0, 1.0)[0, 0].numpy()

    return fuse


def score(fn, pairs: list) -> dict[str, list[float]]:
    """Per-image values of ``METRICS`` for ``fn`` on ``pairs``, scored as ``recipe_study.py`` scores its variants."""
    rows = recipe_study.score_method(fn, {"set": pairs}, {"variant": "target", "seed": 0, "steps": 0}, progress=False)
    values = defaultdict(list)
    for row in rows:
        values[row["metric"]].append(float(row["value"]))
    return values


def plot(means: dict, datasets: list[str], sigmas: list[float], methods: list[str], path: Path) -> None:
    """Each metric of ``detail-sum`` against its blur (one panel per set and metric), each method a horizontal line."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    metrics = METRICS[:4]
    fig, axes = plt.subplots(len(datasets), len(metrics), figsize=(3.2 * len(metrics), 2.4 * len(datasets)), squeeze=False)
    for i, dataset in enumerate(datasets):
        for j, metric in enumerate(metrics):
            ax = axes[i][j]
            ys = [means[dataset, f"detail-sum (sigma {s:g})"][metric] for s in sigmas]
            ax.plot(sigmas, ys, marker="o", ms=3, color="black", label="detail-sum target, as an image")
            for k, name in enumerate(methods):
                ax.axhline(means[dataset, name][metric], ls="--", lw=1, color=f"C{k}", label=name)
            ax.set_title(f"{dataset}: {metric}", fontsize=9)
            ax.tick_params(labelsize=7)
            if i == len(datasets) - 1:
                ax.set_xlabel("detail-sum's base blur sigma (pixels)", fontsize=8)
    handles, labels = axes[0][0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="lower center", ncol=len(labels), fontsize=8)
    fig.tight_layout(rect=(0, 0.05, 1, 1))
    tmp = path.with_suffix(".tmp.png")
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(tmp, dpi=110)
    plt.close(fig)
    tmp.replace(path)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--val", required=True, help="folder of val sets (<set>/ir, <set>/vi)")
    parser.add_argument("--max-images", type=int, default=12, help="the first K pairs of each set (0: all)")
    parser.add_argument("--sigmas", type=float, nargs="+", default=[5.0], help="base blur of detail-sum (pixels)")
    parser.add_argument("--detail-max", type=float, nargs="*", default=[], metavar="SIGMA",
                        help="also score the choose-max rule at these base blurs (pixels; not a loss target)")
    parser.add_argument("--no-reference", action="store_true", help="skip the Laplacian pyramid")
    parser.add_argument("--method", action="append", default=[], metavar="NAME[=FILE]",
                        help="also score this fusion method on the same pairs (a method name, or NAME=FILE for a causalfuse checkpoint)")
    parser.add_argument("--plot", type=Path, help="PNG: each metric of detail-sum against its blur per set, the methods as lines")
    args = parser.parse_args(argv)
    try:
        from causalfuse.models.registry import create_method
        from tqdm.auto import tqdm

        sets = recipe_study.val_sets(Path(args.val), args.max_images)
        rules = [("max", target_method("max", 5.0)), ("mean", target_method("mean", 5.0))]
        rules += [(f"detail-sum (sigma {s:g})", target_method("detail-sum", s)) for s in args.sigmas]
        rules += [(f"detail-max (sigma {s:g}; not a loss target)", detail_max(s)) for s in args.detail_max]
        methods = [] if args.no_reference else [("laplacian-pyramid", create_method("laplacian-pyramid"))]
        for spec in args.method:
            name, _, file = spec.partition("=")
            methods.append((name, create_method("causalfuse", weights=file) if file else create_method(name)))
        rules += methods
        print("| set | target | n | " + " | ".join(METRICS) + " |")
        print("|---|---|---:|" + "---:|" * len(METRICS))
        means: dict[tuple[str, str], dict[str, float]] = {}
        with tqdm(total=len(sets) * len(rules), desc="targets", file=sys.stderr) as bar:
            for dataset, pairs in sets.items():
                for name, fn in rules:
                    values = score(fn, pairs)
                    means[dataset, name] = {m: statistics.fmean(values[m]) for m in METRICS}
                    cells = " | ".join(f"{means[dataset, name][m]:.3f}" for m in METRICS)
                    print(f"| {dataset} | {name} | {len(pairs)} | {cells} |", flush=True)
                    bar.update(1)
        if args.plot:
            plot(means, list(sets), args.sigmas, [n for n, _ in methods], args.plot)
            print(f"figure: {args.plot}", file=sys.stderr)
    except CausalFuseError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
