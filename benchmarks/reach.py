"""How far a fusion network reads: its effective receptive field on val images.

For an output pixel c, ``|dF(c) / dIR(p)|`` and ``|dF(c) / dVI(p)|`` say how
much the source pixel p moves it. Summed over the pixels at each Chebyshev
distance from c (the largest of the row and column offsets), over several
pixels c of several val pairs, they give the share of the gradient held
within each radius. The network's theoretical radius
(``CausalFusionNet.receptive_radius``: 10 pixels for the 3x3 reconstruction)
bounds it; the radius holding 90 % is the reach that matters. It is set
beside the loss's ``detail-sum`` target, whose details span a Gaussian of
``detail_sigma`` pixels (``benchmarks/loss_targets.py --sigmas``).

    python benchmarks/reach.py --val ../shared/data/val
    python benchmarks/reach.py --val ../shared/data/val --model causalfuse --model wide=runs/k7/model.safetensors
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import torch

from causalfuse.errors import CausalFuseError

SHARES = (0.5, 0.9, 0.99)


def gradient_by_radius(net: torch.nn.Module, ir: np.ndarray, vi: np.ndarray, centres: list[tuple[int, int]], window: int) -> np.ndarray:
    """(2, window + 1): |gradient| of the output at each centre, summed by Chebyshev radius (row 0 infrared, row 1 visible).

    ``ir``, ``vi``: (H, W) in [0, 1]; each centre at least ``window`` pixels from every border.
    """
    out = np.zeros((2, window + 1))
    yy, xx = np.mgrid[-window : window + 1, -window : window + 1]
    radius = np.maximum(np.abs(yy), np.abs(xx))
    for y, x in centres:
        crops = [torch.tensor(a[y - window : y + window + 1, x - window : x + window + 1], dtype=torch.float32)[None, None].requires_grad_(True) for a in (ir, vi)]
        net(*crops)[0, 0, window, window].backward()
        for m, crop in enumerate(crops):
            g = crop.grad[0, 0].abs().numpy()
            out[m] += np.bincount(radius.ravel(), weights=g.ravel(), minlength=window + 1)
    return out


def reach(mass: np.ndarray) -> dict[str, object]:
    """The radii holding :data:`SHARES` of each source's mass (``gradient_by_radius``'s rows)."""
    cum = np.cumsum(mass, axis=1) / mass.sum(axis=1, keepdims=True)
    return {name: [int(np.searchsorted(cum[m], s - 1e-12)) for s in SHARES] for m, name in enumerate(("infrared", "visible"))}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--val", required=True, type=Path, help="folder of val sets (<set>/ir, <set>/vi)")
    parser.add_argument("--model", action="append", help="NAME or NAME=FILE (bundled: causalfuse, causalfuse-nobaffm; default both)")
    parser.add_argument("--pairs", type=int, default=4, help="the first K pairs of each set")
    parser.add_argument("--centres", type=int, default=3, help="output pixels per pair (drawn at random, seed 0)")
    parser.add_argument("--window", type=int, default=20, help="half-width of the crop around each centre (pixels)")
    args = parser.parse_args(argv)
    try:
        sys.path.insert(0, str(Path(__file__).resolve().parent))
        import recipe_study  # the study's val sets

        from causalfuse import load_model
        from causalfuse.data.transforms import luminance
        from causalfuse.io import load_image
        from causalfuse.models.methods import BUNDLED, bundled_weights

        models = []
        for spec in args.model or ["causalfuse", "causalfuse-nobaffm"]:
            name, _, file = spec.partition("=")
            if not file and name not in BUNDLED:
                raise CausalFuseError(f"--model {spec}: give NAME=FILE, or one of the bundled models {', '.join(BUNDLED)}")
            models.append((name, Path(file) if file else bundled_weights(BUNDLED[name])))
        sets = recipe_study.val_sets(args.val, args.pairs)
        rng = np.random.default_rng(0)
        images = []
        for pairs in sets.values():
            for pair in pairs:
                ir, vi = luminance(load_image(pair.ir)), luminance(load_image(pair.vi))
                h, w = ir.shape
                if min(h, w) <= 2 * args.window:
                    raise CausalFuseError(f"{pair.ir}: {w} x {h} is too small for a window of {args.window} pixels")
                centres = [(int(rng.integers(args.window, h - args.window)), int(rng.integers(args.window, w - args.window))) for _ in range(args.centres)]
                images.append((ir, vi, centres))
        print(f"| model | theoretical radius | infrared: radius holding {' / '.join(f'{100 * s:g} %' for s in SHARES)} | visible | pixels |")
        print("|---|---:|---|---|---:|")
        for name, file in models:
            net = load_model(file).eval()
            for p in net.parameters():
                p.requires_grad_(False)
            mass = sum(gradient_by_radius(net, ir, vi, centres, args.window) for ir, vi, centres in images)
            r = reach(mass)
            cells = " | ".join(" / ".join(str(v) for v in r[s]) for s in ("infrared", "visible"))
            print(f"| {name} | {net.receptive_radius} | {cells} | {sum(len(c) for *_, c in images)} |", flush=True)
    except CausalFuseError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
