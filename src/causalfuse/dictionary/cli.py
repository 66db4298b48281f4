"""``causalfuse dictionary build|show``.

``build`` refuses to replace an existing output file unless ``--overwrite`` is
given (a dictionary is tied to the checkpoints trained with it).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from ..errors import CausalFuseError

__all__ = ["add_arguments", "run", "format_dictionaries"]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="action", metavar="ACTION")
    b = sub.add_parser("build", help="build infrared and visible dictionaries from training pairs",
                       description="Backbone features per image and modality, PCA, K-Means++; "
                       "writes both dictionaries to one safetensors file.")
    b.add_argument("--data", nargs="+", metavar="DIR", default=[],
                   help="dataset roots (ir/ + vi/, infrared/ + visible/ [train|test], IR/ + VI/, Inf/ + Vis/)")
    b.add_argument("--ir", metavar="DIR", help="folder of infrared images (with --vi, instead of or besides --data)")
    b.add_argument("--vi", metavar="DIR", help="folder of visible images")
    b.add_argument("-N", "--n-clusters", type=int, default=25, help="dictionary size N (default 25)")
    b.add_argument("-d", "--dim", type=int, default=128, help="PCA dimension d (default 128)")
    b.add_argument("--backbone", choices=("efficientnet-lite0", "resnet50"), default="efficientnet-lite0")
    b.add_argument("--seed", type=int, default=0, help="K-Means++ random state (default 0)")
    b.add_argument("--n-init", type=int, default=10, help="K-Means++ restarts (default 10)")
    b.add_argument("--batch-size", type=int, default=16)
    b.add_argument("--device", default="auto", help="auto, cpu or cuda (default auto)")
    b.add_argument("--skip-unmatched", action="store_true", help="leave out images without a partner")
    b.add_argument("-o", "--output", required=True, metavar="FILE", help="output .safetensors file")
    b.add_argument("--overwrite", action="store_true", help="replace an existing output file")
    b.add_argument("--no-progress", action="store_true", help="no progress bar")
    s = sub.add_parser("show", help="print a dictionary file's provenance and cluster sizes")
    s.add_argument("file", metavar="FILE")
    parser.set_defaults(_parser=parser)


def run(args: argparse.Namespace) -> int:
    if args.action == "build":
        return _build(args)
    if args.action == "show":
        from .io import load_dictionaries

        print(format_dictionaries(*load_dictionaries(args.file), source=args.file))
        return 0
    args._parser.print_help()
    return 2


def _build(args: argparse.Namespace) -> int:
    from ..data.paired import find_pairs, pairs_from_roots
    from ..io import check_writable
    from .build import build_dictionaries
    from .io import save_dictionaries

    out = Path(args.output)
    if out.exists() and not args.overwrite:
        raise CausalFuseError(f"{out}: already exists; pass --overwrite to replace it")
    check_writable(out, bits=None)  # before the backbone runs over every image
    if (args.ir is None) != (args.vi is None):
        raise CausalFuseError("--ir and --vi go together: give both folders, or use --data")
    if not args.data and args.ir is None:
        raise CausalFuseError("no training data: give --data DIR [DIR ...] or --ir DIR --vi DIR")
    pairs = pairs_from_roots(args.data, skip_unmatched=args.skip_unmatched) if args.data else []
    roots = [str(Path(r).resolve()) for r in args.data]
    if args.ir is not None:
        pairs += find_pairs(args.ir, args.vi, skip_unmatched=args.skip_unmatched)
        roots.append(f"{Path(args.ir).resolve()} + {Path(args.vi).resolve()}")
    names = [p.name for p in pairs]
    if len(set(names)) != len(names):
        raise CausalFuseError("the same pair name comes from two sources; give each dataset once")

    def log(msg: str) -> None:
        print(msg, file=sys.stderr, flush=True)

    log(f"{len(pairs)} pairs from {', '.join(roots)}; backbone {args.backbone}, N={args.n_clusters}, d={args.dim}, seed={args.seed}")
    start = time.perf_counter()
    ir, vi = build_dictionaries(
        pairs, n_clusters=args.n_clusters, dim=args.dim, backbone=args.backbone, seed=args.seed,
        n_init=args.n_init, batch_size=args.batch_size, device=args.device,
        progress=not args.no_progress, data_roots=roots, log=log,
    )
    save_dictionaries(out, ir, vi)
    log(f"wrote {out} in {time.perf_counter() - start:.1f} s")
    print(format_dictionaries(ir, vi, source=str(out)))
    return 0


def format_dictionaries(ir, vi, *, source: str = "", width: int = 30) -> str:
    """A readable summary: shared provenance, then per modality the cluster sizes as bars."""
    lines = [f"confounder dictionaries{': ' + source if source else ''}"]
    shared = ("backbone", "n_images", "seed", "n_init", "file_list_sha256", "content_sha256", "data_roots", "created_by", "backbone_input")
    for key in shared:
        if key in ir.provenance:
            value = ir.provenance[key]
            if isinstance(value, list):
                value = "; ".join(map(str, value))
            lines.append(f"  {key:<18} {value}")
    for d in (ir, vi):
        p = d.provenance
        label = {"ir": "infrared", "vi": "visible"}[d.modality]
        lines.append("")
        lines.append(
            f"{label}: N = {d.n_clusters}, d = {d.dim} (asked {p.get('dim_requested', d.dim)}), D = {d.feature_dim}, "
            f"PCA keeps {100 * p.get('pca_explained_variance', float('nan')):.1f}% of the variance"
        )
        top = int(d.counts.max()) if d.counts.size else 1
        lines.append(f"  {'#':>3} {'images':>6} {'P(z)':>6}")
        for i, (c, f) in enumerate(zip(d.counts, d.frequencies)):
            bar = "#" * max(1, round(width * int(c) / top))
            lines.append(f"  {i:>3} {int(c):>6} {float(f):>6.3f} {bar}")
    return "\n".join(lines)
