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


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--val", required=True, help="folder of val sets (<set>/ir, <set>/vi)")
    parser.add_argument("--max-images", type=int, default=12, help="the first K pairs of each set (0: all)")
    parser.add_argument("--sigmas", type=float, nargs="+", default=[5.0], help="base blur of detail-sum (pixels)")
    parser.add_argument("--detail-max", type=float, nargs="*", default=[], metavar="SIGMA",
                        help="also score the choose-max rule at these base blurs (pixels; not a loss target)")
    parser.add_argument("--no-reference", action="store_true", help="skip the Laplacian pyramid")
    args = parser.parse_args(argv)
    try:
        from causalfuse.models.registry import create_method
        from tqdm.auto import tqdm

        sets = recipe_study.val_sets(Path(args.val), args.max_images)
        rules = [("max", target_method("max", 5.0)), ("mean", target_method("mean", 5.0))]
        rules += [(f"detail-sum (sigma {s:g})", target_method("detail-sum", s)) for s in args.sigmas]
        rules += [(f"detail-max (sigma {s:g}; not a loss target)", detail_max(s)) for s in args.detail_max]
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
