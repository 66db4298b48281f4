"""``causalfuse bench``: methods x datasets x metrics, with tables, figures and a report.

Run or resume a benchmark::

    causalfuse bench --methods causalfuse,causalfuse-nobaffm,lrrnet,average,max-abs,laplacian-pyramid,dwt,gff \\
        --lrrnet-weights lrrnet_official.model --data ../shared/data/val -o bench-val

Ablations (the paper's Tables 2 and 3) are method specs with a checkpoint::

    causalfuse bench --methods causalfuse,causalfuse-nobaffm,N20=causalfuse@n20.safetensors,N30=causalfuse@n30.safetensors ...

Re-make the tables, figures and HTML report of a run from its CSVs::

    causalfuse bench report OUTDIR
"""

from __future__ import annotations

import argparse
import os
import sys

from ..errors import CausalFuseError
from .ablation import KINDS, AblationPlan, prepare_ablations

EPILOG = """\
method specs (--methods, comma-separated):
  NAME                    a registered method, e.g. causalfuse, gff
  NAME@CHECKPOINT         the method with these weights; its column is NAME@<file stem>
  LABEL=NAME@CHECKPOINT   the same, shown as LABEL (e.g. N20=causalfuse@runs/n20.safetensors)
  all | classical         every registered method | the classical baselines
ablations (the paper's Tables 2 and 3; tables.md/.tex hold that form too):
  --methods causalfuse,causalfuse-nobaffm                          with and without BAFFM
  --methods N20=causalfuse@n20.safetensors,N25=causalfuse@n25.safetensors,N30=causalfuse@n30.safetensors
                                                                   dictionary size N
external methods (--external LABEL=DIR, repeatable): a folder of fused images named
  like the sources; with several datasets, DIR/<dataset>/ per dataset. Images it
  lacks are listed and counted as missing; its means over fewer images than the
  other methods' are marked with a dagger and left out of the ranking.
resuming: an OUTDIR of the same configuration is resumed (fused images and rows
  already there are reused; methods, datasets and metrics may be added). One
  where a shared method or dataset means something else is refused unless --overwrite.
ablations trained on demand (dictionaries built and models trained with the budget given here):
  --ablation dict-size --ablation baffm --train-data DIR [DIR ...] --train-steps S --lrrnet-weights F
      builds dict_nN for N in --dict-sizes, trains N20/N25/N30 and N25-noBAFFM for S steps each
      (128 crops, batch 6; reused or resumed from --ablation-dir) and benches them as columns
other commands:
  causalfuse bench report OUTDIR   re-make tables, figures and report.html from the CSVs
  causalfuse bench list            list the methods and metrics
"""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.formatter_class = argparse.RawDescriptionHelpFormatter
    parser.epilog = EPILOG
    parser.add_argument("bench_command", nargs="*", metavar="report OUTDIR | list", help="optional: a sub-command (see below)")
    parser.add_argument("--methods", "-m", default="", help="comma-separated method specs (see below)")
    parser.add_argument("--data", action="append", default=[], metavar="NAME=DIR",
                        help="a dataset (ir/ + vi/ or another known layout), repeatable; a bare DIR holding several "
                        "datasets (e.g. data/val) gives one dataset per subfolder")
    parser.add_argument("--external", action="append", default=[], metavar="LABEL=DIR",
                        help="fused images of another method, compared as a column (repeatable)")
    parser.add_argument("--lrrnet-weights", metavar="PATH", help="LRRNet's official weights (for the lrrnet method)")
    parser.add_argument("--metrics", default="MI,VIF,Qabf,SSIM", help="comma-separated metric names, or 'all' (default: %(default)s)")
    parser.add_argument("--colour", "--color", dest="colour", choices=["gray", "vifb"], default="gray",
                        help="gray: MATLAB rgb2gray, as the published tables (default); vifb: per-channel average")
    parser.add_argument("--dictionary", metavar="PATH",
                        help="confounder dictionary for the scene-bias report (default: the bundled one)")
    parser.add_argument("--no-scenes", action="store_true", help="skip the scene-bias report")
    parser.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"], help="for learned methods")
    parser.add_argument("-o", "--output", metavar="OUTDIR", help="output folder (required for a run)")
    parser.add_argument("--overwrite", action="store_true", help="delete the results of another configuration in OUTDIR")
    parser.add_argument("--jobs", "-j", type=int, default=1, help="processes for scoring (default: %(default)s)")
    parser.add_argument("--figure-images", type=int, default=4, metavar="K", help="images per dataset in the figure grids")
    parser.add_argument("--zoom", metavar="X,Y,W,H", help="add a zoomed inset of this box (fractions of the image) to the grids")
    parser.add_argument("--no-progress", action="store_true", help="no progress bars")
    g = parser.add_argument_group("ablations trained on demand (see `ablations` below)")
    g.add_argument("--ablation", action="append", default=[], choices=KINDS,
                   help="dict-size: N in --dict-sizes; baffm: with and without BAFFM at N=25 (repeatable)")
    g.add_argument("--train-data", nargs="+", default=[], metavar="DIR", help="training pairs for the ablation dictionaries and models")
    g.add_argument("--train-steps", type=int, metavar="S", help="training budget of every ablation model, in steps of batch 6")
    g.add_argument("--dict-sizes", default="20,25,30", metavar="N,N,...", help="dictionary sizes of the dict-size ablation (default: %(default)s)")
    g.add_argument("--ablation-dir", metavar="DIR", help="where dictionaries and runs go (default: OUTDIR/ablation); reused and resumed")
    g.add_argument("--train-threads", type=int, metavar="T", help="torch threads for ablation training (default: torch's)")


def _split(text: str) -> list[str]:
    return [t.strip() for t in text.split(",") if t.strip()]


def _expand_methods(text: str, lrrnet_weights: str | None) -> list[str]:
    from ..models.registry import get_method, list_methods

    out: list[str] = []
    for token in _split(text):
        if token == "all":
            out += [m for m in list_methods() if m != "lrrnet" or lrrnet_weights]
        elif token == "classical":
            out += [m for m in list_methods() if get_method(m).kind == "classical"]
        else:
            out.append(token)
    return list(dict.fromkeys(out))


def _zoom(text: str | None):
    if not text:
        return None
    try:
        box = tuple(float(v) for v in text.split(","))
    except ValueError:
        box = ()
    if len(box) != 4 or not all(0 <= v <= 1 for v in box) or box[0] + box[2] > 1 or box[1] + box[3] > 1 or min(box[2:]) <= 0:
        raise CausalFuseError(f"--zoom {text!r}: expected X,Y,W,H as fractions in [0, 1] with the box inside the image")
    return box


def run(args: argparse.Namespace) -> int:
    log = lambda msg: print(msg, file=sys.stderr)  # noqa: E731
    if args.bench_command:
        sub, rest = args.bench_command[0], args.bench_command[1:]
        if sub == "report":
            if len(rest) != 1:
                raise CausalFuseError("usage: causalfuse bench report OUTDIR")
            from .report import write_report

            print(write_report(rest[0], log=log))
            return 0
        if sub == "list":
            from ..metrics import get_metric, list_metrics
            from ..models.registry import get_method, list_methods

            print("methods:")
            for name in list_methods():
                info = get_method(name)
                print(f"  {name:20s} {info.kind:10s} {info.description}")
            print("metrics:")
            for name in list_metrics():
                info = get_metric(name)
                groups = f" (groups: {', '.join(info.groups)})" if info.groups else ""
                print(f"  {name:14s} {'higher' if info.higher_is_better else 'lower'} is better{groups}")
            return 0
        raise CausalFuseError(f"unknown bench command {' '.join(args.bench_command)!r}; use `causalfuse bench report OUTDIR` or `causalfuse bench list`")

    from .runner import BenchConfig, MethodSpec, parse_method_spec, parse_named_folder, run_bench
    from .scenes import dictionary_for_run

    if not args.output:
        raise CausalFuseError("give an output folder with -o OUTDIR")
    if not args.data:
        raise CausalFuseError("give at least one dataset with --data NAME=DIR")
    if args.jobs < 1:
        raise CausalFuseError(f"--jobs must be at least 1, got {args.jobs}")
    if args.lrrnet_weights is not None:
        from pathlib import Path

        if not Path(args.lrrnet_weights).is_file():
            raise CausalFuseError(f"--lrrnet-weights {args.lrrnet_weights}: no such file")
    method_text = args.methods
    if args.ablation:
        if args.train_steps is None:
            raise CausalFuseError("--ablation needs a training budget: --train-steps S")
        try:
            sizes = [int(v) for v in _split(args.dict_sizes)]
        except ValueError:
            raise CausalFuseError(f"--dict-sizes {args.dict_sizes!r}: expected comma-separated integers, e.g. 20,25,30") from None
        plan = AblationPlan(
            kinds=list(dict.fromkeys(args.ablation)), train_data=args.train_data, lrrnet_weights=args.lrrnet_weights,
            steps=args.train_steps, workdir=args.ablation_dir or os.path.join(args.output, "ablation"), dict_sizes=sizes,
            threads=args.train_threads, device=args.device, progress=not args.no_progress,
        )
        method_text = ",".join(t for t in [method_text, *prepare_ablations(plan, log)] if t)
    methods = [parse_method_spec(t, lrrnet_weights=args.lrrnet_weights) for t in _expand_methods(method_text, args.lrrnet_weights)]
    for text in args.external:
        label, folder = parse_named_folder(text, "--external")
        if label is None:
            raise CausalFuseError(f"--external {text}: expected LABEL=DIR")
        if not folder.is_dir():
            raise CausalFuseError(f"--external {text}: {folder} is not a folder")
        methods.append(MethodSpec(label=label, external=str(folder.resolve())))
    if not methods:
        raise CausalFuseError("no methods: pass --methods (e.g. --methods all) and/or --external LABEL=DIR")
    from .runner import dataset_roots

    datasets = {name: str(root) for name, root in dataset_roots(args.data).items()}
    from ..metrics import resolve_metrics

    metrics = [info.name for info in resolve_metrics(_split(args.metrics))]  # groups such as "all" expanded
    config = BenchConfig(
        methods=methods,
        datasets=datasets,
        metrics=metrics,
        colour=args.colour,
        dictionary=dictionary_for_run(args.dictionary, args.no_scenes, log),
        device=args.device,
        jobs=args.jobs,
        figure_images=args.figure_images,
        zoom=_zoom(args.zoom),
    )
    summary = run_bench(config, args.output, overwrite=args.overwrite, progress=not args.no_progress, log=log)
    return 1 if summary.errors else 0
