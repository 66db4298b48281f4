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
"""

from __future__ import annotations

import argparse
import statistics
import sys
from collections import defaultdict
from pathlib import Path

import numpy as np

from causalfuse.errors import CausalFuseError

METRICS = ("MI", "VIF", "Qabf", "SSIM", "mean_grey")


def target_method(name: str, sigma: float):
    """A luminance fusion function (ir, vi in [0, 1], (H, W)) -> (H, W) that returns the loss target."""
    import torch

    from causalfuse.losses import intensity_target

    def fuse(ir: np.ndarray, vi: np.ndarray) -> np.ndarray:
        a, b = (torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32))[None, None] for x in (ir, vi))
        return intensity_target(a, b, name, detail_sigma=sigma)[0, 0].numpy()

    return fuse


def score(fn, pairs: list) -> dict[str, list[float]]:
    from causalfuse import metrics
    from causalfuse.bench.runner import _fuse_one
    from causalfuse.io import load_image, rgb2gray_levels

    values = defaultdict(list)
    for pair in pairs:
        fused, _ = _fuse_one(fn, pair)
        fused8 = np.rint(fused * 255.0).astype(np.uint8)
        for metric, value in metrics.compute(fused8, load_image(pair.ir), load_image(pair.vi), metrics=list(METRICS[:4])).items():
            values[metric].append(float(value))
        grey = rgb2gray_levels(fused8.astype(np.float64)) if fused8.ndim == 3 else fused8.astype(np.float64)
        values["mean_grey"].append(float(grey.mean()))
    return values


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--val", required=True, help="folder of val sets (<set>/ir, <set>/vi)")
    parser.add_argument("--max-images", type=int, default=12, help="the first K pairs of each set (0: all)")
    parser.add_argument("--sigmas", type=float, nargs="+", default=[5.0], help="base blur of detail-sum (pixels)")
    parser.add_argument("--no-reference", action="store_true", help="skip the Laplacian pyramid")
    args = parser.parse_args(argv)
    try:
        from causalfuse.bench.runner import dataset_roots, resolve_datasets
        from causalfuse.models.registry import create_method
        from tqdm.auto import tqdm

        sets = resolve_datasets(dataset_roots([args.val]))
        sets = {name: (p[: args.max_images] if args.max_images else p) for name, p in sets.items()}
        rules = [("max", target_method("max", 5.0)), ("mean", target_method("mean", 5.0))]
        rules += [(f"detail-sum (sigma {s:g})", target_method("detail-sum", s)) for s in args.sigmas]
        if not args.no_reference:
            rules.append(("laplacian-pyramid", create_method("laplacian-pyramid")))
        print("| set | target | n | " + " | ".join(METRICS) + " |")
        print("|---|---|---:|" + "---:|" * len(METRICS))
        with tqdm(total=len(sets) * len(rules), desc="targets", file=sys.stderr) as bar:
            for dataset, pairs in sets.items():
                for name, fn in rules:
                    values = score(fn, pairs)
                    cells = " | ".join(f"{statistics.fmean(values[m]):.3f}" for m in METRICS)
                    print(f"| {dataset} | {name} | {len(pairs)} | {cells} |", flush=True)
                    bar.update(1)
    except CausalFuseError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
