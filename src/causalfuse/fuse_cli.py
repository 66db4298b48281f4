"""``causalfuse fuse``: a pair, or two folders of pairs."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from .errors import CausalFuseError

EPILOG = """examples:
  causalfuse fuse --ir ir.png --vi vi.jpg -o fused.png
  causalfuse fuse --ir data/ir --vi data/vi -o out/ --method causalfuse
  causalfuse fuse --ir a.png --vi b.png -o f.png --method lrrnet --weights lrrnet_official.model
"""


def add_arguments(p: argparse.ArgumentParser) -> None:
    from .models.registry import list_methods

    p.formatter_class = argparse.RawDescriptionHelpFormatter
    p.epilog = EPILOG
    p.add_argument("--ir", required=True, type=Path, help="infrared image, or a folder of them")
    p.add_argument("--vi", required=True, type=Path, help="visible image, or a folder of them (matched by file stem)")
    p.add_argument("-o", "--output", required=True, type=Path, help="output file for a pair, output folder for folders")
    p.add_argument("--method", default="causalfuse", help=f"fusion method: {', '.join(list_methods())} (default: causalfuse)")
    p.add_argument("--weights", type=Path, default=None, help="checkpoint of a learned method (default: the bundled one)")
    p.add_argument("--device", default="auto", help="auto (a GPU when there is one), cpu or cuda")
    p.add_argument(
        "--overwrite", action="store_true",
        help="for folders: replace existing outputs, also those of another method or weights (default: skip this run's own, so an interrupted run resumes)",
    )
    p.add_argument("--skip-unmatched", action="store_true", help="fuse the matching pairs and ignore names present in one folder only")
    p.add_argument("--ext", default=".png", help="output file type for folders (default .png)")
    p.add_argument("--bits", type=int, choices=(8, 16), default=8, help="output bit depth (16 needs PNG or TIFF; default 8)")
    p.add_argument("--keep-going", action="store_true", help="in folders, report a bad pair and go on with the rest")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress bar")


def run(args: argparse.Namespace) -> int:
    from .fuse import fuse, fuse_folder, refuse_inputs_as_outputs
    from .io import check_writable, write_image

    ir, vi, out = args.ir, args.vi, args.output
    if ir.is_dir() != vi.is_dir():
        raise CausalFuseError(f"--ir {ir} and --vi {vi}: give two files or two folders, not one of each")
    if ir.is_dir():
        ext = args.ext if args.ext.startswith(".") else f".{args.ext}"
        res = fuse_folder(
            ir, vi, out, args.method, args.weights, args.device,
            overwrite=args.overwrite, skip_unmatched=args.skip_unmatched, ext=ext, bits=args.bits,
            progress=not args.quiet, keep_going=args.keep_going,
        )
        msg = f"{len(res.written)} fused, {len(res.skipped)} already there (skipped; --overwrite replaces them)"
        if res.written:
            msg += f", {res.seconds / len(res.written):.2f} s per pair"
        print(f"{msg} -> {out}")
        for name, err in res.failed:
            print(f"failed: {name}: {err}", file=sys.stderr)
        return 1 if res.failed else 0
    if out.is_dir():
        raise CausalFuseError(f"{out}: is a directory, but fusing one pair writes one file; give a file name such as {out / 'fused.png'}")
    # Everything that would fail the write is checked before the work.
    refuse_inputs_as_outputs([out], [ir, vi])
    check_writable(out, bits=args.bits)
    fused = fuse(ir, vi, method=args.method, weights=args.weights, device=args.device, progress=not args.quiet)
    write_image(out, fused, bits=args.bits)
    print(f"fused -> {out}")
    return 0
