"""``causalfuse eval``: score folders of fused images with the field's metrics.

Example::

    causalfuse eval --ir data/ir --vi data/vi --fused ours=out/ours --fused GFF=out/gff \\
        --metrics MI,VIF,Qabf,SSIM --color gray -o results.csv --markdown summary.md

Writes a tidy CSV (``image,method,metric,value``, atomically) and prints the
mean and standard deviation per method and metric (optionally also as a
Markdown file).
"""

from __future__ import annotations

import argparse
import csv
import math
import sys
from pathlib import Path

from ..errors import CausalFuseError
from ..io import atomic_path


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--ir", required=True, metavar="DIR", help="folder of infrared source images")
    parser.add_argument("--vi", required=True, metavar="DIR", help="folder of visible source images")
    parser.add_argument(
        "--fused",
        required=True,
        action="append",
        metavar="[NAME=]DIR",
        help="folder of fused images (repeatable; NAME=DIR names the method, else the folder name is used)",
    )
    parser.add_argument(
        "--metrics",
        default="MI,VIF,Qabf,SSIM",
        help="comma-separated metric names, or 'all' (default: %(default)s)",
    )
    parser.add_argument(
        "--color",
        "--colour",
        dest="colour",
        choices=("gray", "vifb"),
        default="gray",
        help="gray: MATLAB rgb2gray on all three images (published tables); "
        "vifb: VIFB's per-channel average (default: %(default)s)",
    )
    parser.add_argument("-o", "--output", required=True, metavar="CSV", help="tidy CSV to write (image,method,metric,value)")
    parser.add_argument("--markdown", metavar="MD", help="also write the summary table as Markdown")
    parser.add_argument("--jobs", type=int, default=0, help="processes (default: all cores)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")


def _parse_fused(values: list[str]) -> dict[str, Path]:
    out: dict[str, Path] = {}
    for value in values:
        name, sep, folder = value.partition("=")
        if sep and name and not Path(value).exists():
            path = Path(folder)
        else:
            path = Path(value)
            name = path.resolve().name
        if name in out:
            raise CausalFuseError(f"--fused: the method name {name!r} is given twice; name them with NAME=DIR")
        out[name] = path
    return out


def _fmt(x: float) -> str:
    return "nan" if math.isnan(x) else f"{x:.4f}"


def summary_markdown(summary: list[tuple[str, str, float, float, int]], arrows: dict[str, str]) -> str:
    """A Markdown table: one row per method, one column per metric, ``mean ± std``."""
    methods: list[str] = []
    metrics: list[str] = []
    cells: dict[tuple[str, str], str] = {}
    for method, metric, mean, std, _n in summary:
        if method not in methods:
            methods.append(method)
        if metric not in metrics:
            metrics.append(metric)
        cells[(method, metric)] = f"{_fmt(mean)} ± {_fmt(std)}"
    lines = [
        "| method | " + " | ".join(f"{m} {arrows.get(m, '')}".strip() for m in metrics) + " |",
        "|---|" + "---:|" * len(metrics),
    ]
    for method in methods:
        lines.append(f"| {method} | " + " | ".join(cells.get((method, m), "") for m in metrics) + " |")
    return "\n".join(lines) + "\n"


def run(args: argparse.Namespace) -> int:
    from . import get_metric, resolve_metrics
    from .folder import find_triplets, iter_rows_csv, score_triplets, summarise

    infos = resolve_metrics(args.metrics)
    fused = _parse_fused(args.fused)
    triplets = find_triplets(args.ir, args.vi, fused)
    rows = score_triplets(
        triplets, [i.name for i in infos], colour=args.colour, jobs=args.jobs, progress=not args.no_progress
    )
    out = Path(args.output)
    with atomic_path(out) as tmp:
        with open(tmp, "w", newline="") as fh:
            csv.writer(fh).writerows(iter_rows_csv(rows))
    summary = summarise(rows)
    arrows = {i.name: ("↑" if get_metric(i.name).higher_is_better else "↓") for i in infos}
    table = summary_markdown(summary, arrows)
    n_images = len({t.image for t in triplets})
    print(f"scored {len(triplets)} fused images ({n_images} pairs, {len(fused)} methods), colour={args.colour}; mean ± std:")
    print(table, end="")
    if args.markdown:
        with atomic_path(args.markdown) as tmp:
            Path(tmp).write_text(
                f"Mean ± std over {n_images} image pairs (colour mode: {args.colour}).\n\n" + table, encoding="utf-8"
            )
    print(f"wrote {out}" + (f" and {args.markdown}" if args.markdown else ""), file=sys.stderr)
    return 0
