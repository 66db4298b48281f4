"""``causalfuse demo``: fuse the built-in synthetic pair with the bundled weights.

Writes ``infrared.png``, ``visible.png``, ``fused.png`` and a side-by-side
figure ``demo.png`` (infrared | visible | fused) into the output folder.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("-o", "--output", type=Path, default=Path("demo"), help="output folder (default: ./demo)")
    p.add_argument("--method", default="causalfuse", help="fusion method (default: causalfuse, with the bundled weights)")
    p.add_argument("--weights", type=Path, default=None, help="checkpoint instead of the bundled one")
    p.add_argument("--device", default="auto", help="auto, cpu or cuda")


def side_by_side(panels: list[tuple[str, np.ndarray]], gap: int = 8) -> np.ndarray:
    """Panels (float [0, 1], grey or RGB) laid out left to right with captions."""
    from PIL import Image, ImageDraw

    h = max(p.shape[0] for _, p in panels)
    caption = 22
    width = sum(p.shape[1] for _, p in panels) + gap * (len(panels) + 1)
    canvas = Image.new("RGB", (width, h + caption + 2 * gap), "white")
    draw = ImageDraw.Draw(canvas)
    x = gap
    for title, img in panels:
        arr = np.rint(np.clip(img, 0, 1) * 255).astype(np.uint8)
        if arr.ndim == 2:
            arr = np.stack([arr] * 3, axis=-1)
        canvas.paste(Image.fromarray(arr), (x, gap + caption))
        draw.text((x + 4, gap + 4), title, fill="black")
        x += arr.shape[1] + gap
    return np.asarray(canvas)


def run(args: argparse.Namespace) -> int:
    import time

    from .fuse import fuse
    from .io import to_float01, write_image
    from .synthetic import synthetic_pair

    out = args.output
    if out.exists() and not out.is_dir():
        from .errors import CausalFuseError

        raise CausalFuseError(f"{out}: exists and is not a folder")
    ir, vi = synthetic_pair()
    start = time.perf_counter()
    fused = fuse(ir, vi, method=args.method, weights=args.weights, device=args.device)
    seconds = time.perf_counter() - start
    write_image(out / "infrared.png", ir)
    write_image(out / "visible.png", vi)
    write_image(out / "fused.png", fused)
    figure = side_by_side([("infrared", to_float01(ir)), ("visible", to_float01(vi)), (f"fused ({args.method})", fused)])
    write_image(out / "demo.png", figure)
    print(f"fused the synthetic {ir.shape[1]} x {ir.shape[0]} pair with {args.method} in {seconds:.2f} s")
    print(f"wrote {out / 'fused.png'} and the side-by-side figure {out / 'demo.png'}")
    return 0
