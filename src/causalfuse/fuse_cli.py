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
  causalfuse fuse --ir data/ir --vi data/vi -o out/ --backend onnxruntime --onnx causalfuse.onnx
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
        "--backend", choices=("pytorch", "onnxruntime"), default="pytorch",
        help="run the network in PyTorch (default) or its ONNX export in ONNX Runtime (pip install \"causalfuse[onnx]\")",
    )
    p.add_argument(
        "--precision", choices=("fp32", "bf16"), default="fp32",
        help="what the network computes in: fp32 (default), or bf16 (bfloat16 autocast, on CUDA or a CPU with bfloat16; "
        "causalfuse and causalfuse-nobaffm, pytorch backend; 8-bit images within 3 grey levels of fp32's)",
    )
    p.add_argument(
        "--onnx", type=Path, default=None, metavar="FILE",
        help="with --backend onnxruntime: the export to run (causalfuse export), made from --method and --weights; "
        "default: exported once into ~/.cache/causalfuse/onnx",
    )
    p.add_argument(
        "--overwrite", action="store_true",
        help="for folders: replace existing outputs, also those of another method or weights (default: skip this run's own, so an interrupted run resumes)",
    )
    p.add_argument("--skip-unmatched", action="store_true", help="fuse the matching pairs and ignore names present in one folder only")
    p.add_argument("--ext", default=".png", help="output file type for folders (default .png)")
    p.add_argument("--bits", type=int, choices=(8, 16), default=8, help="output bit depth (16 needs PNG or TIFF; default 8)")
    p.add_argument("--keep-going", action="store_true", help="in folders, report a bad pair and go on with the rest")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress bar")
    from .register.cli import add_arguments_for_fuse

    add_arguments_for_fuse(p.add_argument_group("registration (pairs from two cameras)"))


def run(args: argparse.Namespace) -> int:
    from .fuse import fuse, fuse_folder, refuse_inputs_as_outputs
    from .io import check_writable, write_image

    ir, vi, out = args.ir, args.vi, args.output
    if ir.is_dir() != vi.is_dir():
        raise CausalFuseError(f"--ir {ir} and --vi {vi}: give two files or two folders, not one of each")
    registering = args.register or args.transform is not None
    reg_options = {}
    if registering:
        from .register.cli import load_transform_arg, search_range, snap_arg

        reg_options = {"search": search_range(args), "snap": snap_arg(args)}
        if args.min_mi is not None:
            reg_options["min_mi"] = args.min_mi
        transform = load_transform_arg(args)
    elif args.model is not None or args.uncovered != "visible":
        raise CausalFuseError("--model and --uncovered are registration options; add --register (or --transform FILE)")
    if ir.is_dir():
        ext = args.ext if args.ext.startswith(".") else f".{args.ext}"
        res = fuse_folder(
            ir, vi, out, args.method, args.weights, args.device,
            overwrite=args.overwrite, skip_unmatched=args.skip_unmatched, ext=ext, bits=args.bits,
            progress=not args.quiet, keep_going=args.keep_going, backend=args.backend, onnx=args.onnx, precision=args.precision,
            **({"register": args.model or True, "transform": transform, "uncovered": args.uncovered,
                "registration": reg_options} if registering else {}),
        )
        msg = f"{len(res.written)} fused, {len(res.skipped)} already there (skipped; --overwrite replaces them)"
        if res.written:
            msg += f", {res.seconds / len(res.written):.2f} s per pair ({res.images_per_second:.1f} images/s)"
        print(f"{msg} -> {out}")
        if res.uncovered:
            worst = max(res.uncovered, key=lambda u: u[1])
            mean = sum(u for _, u in res.uncovered) / len(res.uncovered)
            print(f"registered: {100 * mean:.1f} % of a visible image had no infrared on average "
                  f"(most: {100 * worst[1]:.1f} % in {worst[0]}); transforms beside the images as .json")
        for name, err in res.failed:
            print(f"failed: {name}: {err}", file=sys.stderr)
        return 1 if res.failed else 0
    if out.is_dir():
        raise CausalFuseError(f"{out}: is a directory, but fusing one pair writes one file; give a file name such as {out / 'fused.png'}")
    # Everything that would fail the write is checked before the work.
    refuse_inputs_as_outputs([out], [ir, vi])
    check_writable(out, bits=args.bits)
    if registering:
        from .fuse import fuse_registered

        fused, reg = fuse_registered(
            ir, vi, args.method, args.weights, args.device, progress=not args.quiet,
            model=args.model, transform=transform, uncovered=args.uncovered, registration=reg_options,
            backend=args.backend, onnx=args.onnx, precision=args.precision,
        )
        write_image(out, fused, bits=args.bits)
        t = reg.transform
        where = (f"cropped to the covered {reg.box[2] - reg.box[0]} x {reg.box[3] - reg.box[1]} at ({reg.box[0]}, {reg.box[1]})"
                 if reg.box else f"{100 * reg.uncovered_fraction:.1f} % of the visible image had no infrared and shows the visible image")
        if transform is None and "snapped_from_px" in t.info:
            from .register.cli import already_aligned

            print(already_aligned(t, reg_options["snap"]))
        print(f"registered ({t.model}, mutual information {t.mutual_information:.3f} bits; {where})")
        print(f"fused -> {out}")
        return 0
    fused = fuse(
        ir, vi, method=args.method, weights=args.weights, device=args.device, progress=not args.quiet,
        backend=args.backend, onnx=args.onnx, precision=args.precision,
    )
    write_image(out, fused, bits=args.bits)
    print(f"fused -> {out}")
    return 0
