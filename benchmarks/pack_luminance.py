"""Pack image pairs as 8-bit luminance PNGs, for carrying training data to a remote GPU machine.

The network trains on one luminance channel (BT.601 Y of the visible image,
the infrared made grey), so the colour is dead weight in transit: this
writes ``<out>/<set>/ir/NAME.png`` and ``<out>/<set>/vi/NAME.png`` as grey
8-bit PNGs (Y rounded to the nearest level: at most half a grey level from
what training on the originals reads), a layout ``causalfuse train`` reads
as it is. With ``--max-pairs`` only K evenly spaced pairs of each set (by
name) are kept, to fit a size limit. Files are written atomically; a pack already
there is completed, not rewritten.

    python benchmarks/pack_luminance.py ../shared/data/train/MSRS ../shared/data/train/LLVIP -o .gpu_pack/train
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

from causalfuse.data.paired import pairs_from_roots
from causalfuse.data.transforms import luminance
from causalfuse.errors import CausalFuseError
from causalfuse.io import load_image, write_image


def pack(roots: list[Path], out: Path, max_pairs: int = 0) -> int:
    total = 0
    for root in roots:
        pairs = sorted(pairs_from_roots([str(root)]), key=lambda p: p.name)
        if max_pairs and len(pairs) > max_pairs:  # evenly spaced, so every part of the set is kept
            pairs = [pairs[i] for i in np.linspace(0, len(pairs) - 1, max_pairs).round().astype(int)]
        for pair in pairs:
            for modality in ("ir", "vi"):
                target = out / root.name / modality / f"{pair.name}.png"
                if not target.exists():
                    target.parent.mkdir(parents=True, exist_ok=True)
                    write_image(target, luminance(load_image(getattr(pair, modality))))
                total += target.stat().st_size
    return total


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("roots", nargs="+", type=Path, help="dataset folders (<set>/ir + <set>/vi, or any layout train reads)")
    p.add_argument("-o", "--output", type=Path, required=True)
    p.add_argument("--max-pairs", type=int, default=0, help="keep K evenly spaced pairs of each set (0: all)")
    args = p.parse_args(argv)
    try:
        size = pack(args.roots, args.output, args.max_pairs)
    except CausalFuseError as exc:
        print(f"pack_luminance: error: {exc}", file=sys.stderr)
        return 2
    print(f"{args.output}: {size / 2**20:.1f} MiB")
    return 0


if __name__ == "__main__":
    sys.exit(main())
