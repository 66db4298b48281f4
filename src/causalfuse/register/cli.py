"""``causalfuse register``: warp infrared images onto the visible pixel grid."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

from ..errors import CausalFuseError

EPILOG = """examples:
  causalfuse register --ir ir.png --vi vi.jpg -o ir_on_vi.png            # also writes ir_on_vi.json
  causalfuse register --ir rig/ir --vi rig/vi -o registered/ --check checks/
  causalfuse register --ir rig/ir --vi rig/vi -o registered/ --fit-once   # one transform for a fixed rig
  causalfuse register --ir rig/ir --vi rig/vi -o registered/ --transform rig.json
"""


def add_arguments(p: argparse.ArgumentParser) -> None:
    from .transform import MODELS

    p.formatter_class = argparse.RawDescriptionHelpFormatter
    p.epilog = EPILOG
    p.add_argument("--ir", required=True, type=Path, help="infrared image, or a folder of them")
    p.add_argument("--vi", required=True, type=Path, help="visible image, or a folder of them (matched by file stem)")
    p.add_argument("-o", "--output", required=True, type=Path,
                   help="the warped infrared image for a pair (its transform goes beside it as .json); a folder for folders")
    add_registration_arguments(p, models=MODELS)
    p.add_argument("--fit-once", action="store_true",
                   help="folders: estimate one transform from several pairs (--fit-pairs) and apply it to all")
    p.add_argument("--fit-pairs", type=int, default=8, help="pairs --fit-once estimates from, spread over the folder (default 8)")
    p.add_argument("--check", type=Path, default=None, help="folder for a checkerboard of each registered pair")
    p.add_argument("--ext", default=".png", help="output file type for folders (default .png)")
    p.add_argument("--skip-unmatched", action="store_true", help="register the matching pairs and ignore names present in one folder only")
    p.add_argument("--keep-going", action="store_true", help="in folders, report a pair that cannot be registered and go on")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress bar")


def add_arguments_for_fuse(p: argparse.ArgumentParser) -> None:
    """The registration options of ``causalfuse fuse``."""
    from .transform import MODELS

    p.add_argument("--register", action="store_true",
                   help="register the infrared image to the visible one first (pairs from two cameras)")
    add_registration_arguments(p, models=MODELS)
    p.add_argument("--uncovered", choices=("visible", "crop"), default="visible",
                   help="visible pixels the infrared image does not cover: show the visible image there (default), "
                        "or crop the result to the largest covered rectangle")


def add_registration_arguments(p: argparse.ArgumentParser, *, models) -> None:
    p.add_argument("--model", choices=models, default=None, help="transform model (default: affine, or the --transform file's)")
    p.add_argument("--transform", type=Path, default=None, help="apply this saved transform instead of estimating one")
    p.add_argument("--scales", default="0.8,1.25",
                   help="smallest,largest infrared field of view relative to the visible one that the search tries (default 0.8,1.25)")
    p.add_argument("--max-rotation", type=float, default=5.0, help="largest rotation (degrees) the search tries (default 5)")
    p.add_argument("--max-shift", type=float, default=0.15,
                   help="largest shift of the image centres the search tries, as a fraction of the visible image's size (default 0.15)")
    p.add_argument("--min-mi", type=float, default=None, help="refuse a registration below this mutual information, in bits")
    p.add_argument("--snap", type=float, default=None, metavar="PX",
                   help="an estimate within PX visible pixels of the nominal rig (same field of view; for one image size the identity) "
                        "is taken as aligned and returned as the nominal rig (default 1; 0: never)")


def search_range(args: argparse.Namespace):
    from .estimate import SearchRange

    try:
        lo, hi = (float(v) for v in str(args.scales).split(","))
    except ValueError:
        raise CausalFuseError(f"--scales {args.scales}: give two numbers, smallest,largest (e.g. 0.8,1.25)") from None
    if not (0 < lo <= hi) or args.max_rotation < 0 or not (0 <= args.max_shift <= 0.5):
        raise CausalFuseError(
            f"--scales {args.scales} --max-rotation {args.max_rotation} --max-shift {args.max_shift}: "
            "need 0 < smallest <= largest, a rotation >= 0 and a shift in [0, 0.5]"
        )
    return SearchRange(scales=(lo, hi), max_rotation=float(args.max_rotation), max_shift=float(args.max_shift))


def snap_arg(args: argparse.Namespace) -> float:
    from .estimate import SNAP

    if args.snap is None:
        return SNAP
    if not args.snap >= 0:
        raise CausalFuseError(f"--snap {args.snap}: give a distance in visible pixels, 0 or more")
    return float(args.snap)


def already_aligned(transform, snap: float) -> str:
    """What to tell of an estimate returned as the nominal rig."""
    return (f"already aligned: the estimate was within {transform.info['snapped_from_px']:.2f} px of the nominal rig "
            f"(--snap {snap:g}), which is kept")


def load_transform_arg(args: argparse.Namespace):
    from .transform import Transform

    if args.transform is None:
        return None
    return Transform.load(args.transform, model=args.model)


def _sidecar(path: Path) -> Path:
    return path.with_suffix(".json")


def run(args: argparse.Namespace) -> int:
    from ..data.paired import find_pairs
    from ..fuse import refuse_inputs_as_outputs
    from ..io import check_writable, check_writable_folder, load_image, to_float01, write_image
    from .estimate import MIN_MI
    from .pairs import check_image, fit_once, register_arrays

    ir, vi, out = args.ir, args.vi, args.output
    if ir.is_dir() != vi.is_dir():
        raise CausalFuseError(f"--ir {ir} and --vi {vi}: give two files or two folders, not one of each")
    search = search_range(args)
    given = load_transform_arg(args)
    model = args.model or (given.model if given else "affine")
    min_mi = MIN_MI if args.min_mi is None else args.min_mi
    snap = snap_arg(args)
    if given is not None and args.fit_once:
        raise CausalFuseError("--transform and --fit-once: give one (a saved transform, or one to estimate from the folder)")

    if ir.is_dir():
        pairs = find_pairs(ir, vi, skip_unmatched=args.skip_unmatched)
        ext = args.ext if args.ext.startswith(".") else f".{args.ext}"
        targets = [(pair, out / f"{pair.name}{ext}") for pair in pairs]
        inputs = [p for pair in pairs for p in (Path(pair.ir), Path(pair.vi))]
        refuse_inputs_as_outputs([t for _, t in targets] + [_sidecar(t) for _, t in targets], inputs)
    else:
        if out.is_dir():
            raise CausalFuseError(f"{out}: is a directory, but registering one pair writes one image; give a file name such as {out / 'ir_registered.png'}")
        pairs, targets = None, [(None, out)]
        refuse_inputs_as_outputs([out, _sidecar(out)], [ir, vi])
    check_writable(targets[0][1], bits=None)
    if args.check is not None:
        check_writable_folder(args.check)

    if args.fit_once:
        if pairs is None:
            raise CausalFuseError("--fit-once fits one transform to the pairs of two folders; give folders")
        if args.fit_pairs < 1:
            raise CausalFuseError(f"--fit-pairs {args.fit_pairs}: give at least 1")
        picks = [pairs[i] for i in sorted({int(round(v)) for v in np.linspace(0, len(pairs) - 1, min(args.fit_pairs, len(pairs)))})]
        estimated = []
        for pair in picks:
            try:
                reg = register_arrays(load_image(pair.ir), load_image(pair.vi), model=model, search=search, min_mi=min_mi, snap=snap,
                                      name=pair.name)
            except CausalFuseError as exc:
                print(f"fit-once: {exc}", file=sys.stderr)
                continue
            reg.transform.info["pair"] = pair.name
            estimated.append(reg.transform)
        if not estimated:
            raise CausalFuseError(f"--fit-once: none of the {len(picks)} pairs tried could be registered")
        given = fit_once(estimated, model)
        print(f"one {model} transform from {len(estimated)} of {len(picks)} pairs tried "
              f"(corners within {given.info['corner_spread_px']:.2f} px of the median)")

    from tqdm import tqdm

    failed, written = [], 0
    bar = tqdm(targets, desc="registering", unit="pair", disable=args.quiet or pairs is None)
    for pair, target in bar:
        ir_path, vi_path = (pair.ir, pair.vi) if pair is not None else (ir, vi)
        name = pair.name if pair is not None else f"{ir_path.name} + {vi_path.name}"
        try:
            ir_img, vi_img = load_image(ir_path), load_image(vi_path)
            reg = register_arrays(ir_img, vi_img, model=model, transform=given, transform_source=str(args.transform or "the fitted transform"),
                                  search=search, min_mi=min_mi, snap=snap, name=name)
            bits = 16 if ir_img.dtype == np.uint16 else 8
            target.parent.mkdir(parents=True, exist_ok=True)
            write_image(target, to_float01(reg.warped), bits=bits)
            reg.transform.info["pair"] = name
            reg.transform.save(_sidecar(target))
            if args.check is not None:
                args.check.mkdir(parents=True, exist_ok=True)
                write_image(args.check / f"{Path(target).stem}.png", check_image(vi_img, reg))
        except CausalFuseError as exc:
            if pairs is None or not args.keep_going:
                raise
            failed.append((pair.name, str(exc)))
            continue
        written += 1
        t = reg.transform
        if pairs is None:
            if given is None and "snapped_from_px" in t.info:
                print(already_aligned(t, snap))
            print(f"registered ({t.model}, mutual information {t.mutual_information:.3f} bits, the infrared image covers "
                  f"{100 * t.overlap:.1f} % of the visible one) -> {target} and {_sidecar(target).name}")
    if pairs is not None:
        print(f"{written} registered -> {out}")
        for name, err in failed:
            print(f"failed: {err}", file=sys.stderr)
    return 1 if failed else 0
