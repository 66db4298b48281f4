"""``causalfuse eval``: score folders of fused images with the field's metrics.

Example::

    causalfuse eval --ir data/ir --vi data/vi --fused ours=out/ours --fused GFF=out/gff \\
        --metrics MI,VIF,Qabf,SSIM --color gray -o results.csv --markdown summary.md

Writes a tidy CSV (``image,method,metric,value``, atomically) and prints the
mean and standard deviation per method and metric (optionally also as a
Markdown file), with how many images each mean covers: a method that lacks
fused images, or has NaN values, where others have scores is marked as not
comparable, and the notes under the table list those images.
"""

from __future__ import annotations

import argparse
import csv
import math
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Iterable, Sequence

from ..data.paired import natural_key
from ..errors import CausalFuseError
from ..io import atomic_path, check_writable

if TYPE_CHECKING:
    from .folder import ScoreRow, Summary


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
        help="comma-separated metric names and groups, e.g. 'all' (the 18 of published tables), 'liu2012', 'piella' (default: %(default)s)",
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


def _names(images: Iterable[str], limit: int = 5) -> str:
    ordered = sorted(images, key=natural_key)
    return ", ".join(ordered[:limit]) + (f", ... ({len(ordered) - limit} more)" if len(ordered) > limit else "")


def summary_markdown(summary: Sequence[Summary], arrows: dict[str, str], n_images: int) -> str:
    """A Markdown table: one row per method, one column per metric, ``mean ± std``.

    The last column, ``images``, gives how many of the ``n_images`` pairs each method
    has a fused image for; a mean over fewer than ``n_images`` images says so,
    ``(n=k)``, and one that is not comparable with the other methods' (it
    averages fewer images than they do; see :class:`~causalfuse.metrics.folder.Summary`)
    is marked †. Explained by :func:`summary_notes`.
    """
    methods: list[str] = []
    metrics: list[str] = []
    cells: dict[tuple[str, str], str] = {}
    present: dict[str, int] = {}
    for s in summary:
        if s.method not in methods:
            methods.append(s.method)
        if s.metric not in metrics:
            metrics.append(s.metric)
        cell = f"{_fmt(s.mean)} ± {_fmt(s.std)}"
        if s.n < n_images:
            cell += f" (n={s.n})"
        cells[(s.method, s.metric)] = cell + ("" if s.comparable else " †")
        present[s.method] = n_images - s.missing
    lines = [
        "| method | " + " | ".join(f"{m} {arrows.get(m, '')}".strip() for m in metrics) + " | images |",
        "|---|" + "---:|" * (len(metrics) + 1),
    ]
    for method in methods:
        count = f"{present[method]}" if present[method] == n_images else f"{present[method]} of {n_images}"
        lines.append(f"| {method} | " + " | ".join(cells.get((method, m), "") for m in metrics) + f" | {count} |")
    return "\n".join(lines) + "\n"


def summary_notes(summary: Sequence[Summary], rows: Sequence[ScoreRow], images: Sequence[str]) -> list[str]:
    """The notes under the table: what the means cover, which images are missing, which are NaN."""
    n_images = len(images)
    notes = [f"Mean ± population std over the {n_images} image pairs; (n=k): over k of them."]
    if not all(s.comparable for s in summary):
        notes.append(
            "†: not comparable with the other methods: averaged over fewer images than they are "
            "(a fused image missing, or a NaN value, where another method has a score)."
        )
    have: dict[str, set[str]] = {}
    nan_images: dict[tuple[str, str], set[str]] = {}
    for r in rows:
        have.setdefault(r.method, set()).add(r.image)
        if not math.isfinite(r.value):
            nan_images.setdefault((r.method, r.metric), set()).add(r.image)
    for method, found in have.items():
        lacking = set(images) - found
        if lacking:
            notes.append(f"{method}: {len(lacking)} of {n_images} fused images missing ({_names(lacking)}).")
    rule = "NaN (or inf) values are left out of the means; the original MATLAB code averages with mean, where one NaN makes the mean NaN"
    if nan_images:
        counts = "; ".join(f"{m} {metric}: NaN in {len(found)} ({_names(found)})" for (m, metric), found in nan_images.items())
        notes.append(f"{rule}. {counts}.")
    else:
        notes.append(f"{rule}. There are none here.")
    return notes


def run(args: argparse.Namespace) -> int:
    from . import get_metric, resolve_metrics
    from .folder import find_triplets, iter_rows_csv, pair_names, score_triplets, summarise

    infos = resolve_metrics(args.metrics)
    for target in (args.output, args.markdown):
        if target:
            check_writable(target, bits=None)  # before the scoring, not after it
    fused = _parse_fused(args.fused)
    triplets = find_triplets(args.ir, args.vi, fused)
    images = pair_names(args.ir, args.vi)
    rows = score_triplets(
        triplets, [i.name for i in infos], colour=args.colour, jobs=args.jobs, progress=not args.no_progress
    )
    out = Path(args.output)
    with atomic_path(out) as tmp:
        with open(tmp, "w", newline="") as fh:
            csv.writer(fh).writerows(iter_rows_csv(rows))
    summary = summarise(rows, images)
    arrows = {i.name: ("↑" if get_metric(i.name).higher_is_better else "↓") for i in infos}
    table = summary_markdown(summary, arrows, len(images))
    notes = summary_notes(summary, rows, images)
    print(
        f"scored {len(triplets)} fused images ({len(images)} source pairs, {len(fused)} methods), colour={args.colour}; "
        "mean ± std:"
    )
    print(table + "\n" + "\n".join(notes))
    if args.markdown:
        with atomic_path(args.markdown) as tmp:
            Path(tmp).write_text(f"Colour mode: {args.colour}.\n\n" + table + "\n" + "\n\n".join(notes) + "\n", encoding="utf-8")
    print(f"wrote {out}" + (f" and {args.markdown}" if args.markdown else ""), file=sys.stderr)
    return 0
