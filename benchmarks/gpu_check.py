"""The Python half of ``benchmarks/gpu_check.sh``: device facts, fusion timings, device agreement.

Each stage is its own command (and, in the shell script, its own process), so
that one failing leaves the others' results; each writes one JSON file into
``--out`` as it goes, and ``report`` gathers them into ``gpu_check.json`` and
``gpu_check.md``.

Stages::

    python benchmarks/gpu_check.py info  --device cuda --out OUT
    python benchmarks/gpu_check.py time  --device cuda --out OUT [--sizes 480x640 1920x1080] [--repeats 5]
    python benchmarks/gpu_check.py agree --device cuda --out OUT [--val .gpu_pack/val] [--max-pairs 3]
    python benchmarks/gpu_check.py report --out OUT

``time`` fuses a synthetic pair of each size with ``causalfuse`` and
``causalfuse-nobaffm`` (bundled weights) in fp32 and bf16, with the eager and
the compiled LRR kernels (``causalfuse fuse`` runs one pair under half a
megapixel eagerly, larger ones and folders compiled): one warm-up call
(which compiles), then the median of ``--repeats`` calls of the method, each a
whole luminance pair from NumPy to NumPy (tiles, transfers, a synchronised
device); a compiled row also gives its largest difference, in grey levels,
from the eager row's image. ``agree`` fuses pairs (the first ``--max-pairs``
of every set under ``--val``, or synthetic pairs without one) through
:func:`causalfuse.fuse` on the device and on the CPU, with the eager kernels
(the same arithmetic as the compiled ones, without compile waits), and checks
that the 8-bit images agree within one grey level in fp32, and bf16 on the
device within :data:`causalfuse.fuse.BF16_TOLERANCE` grey levels of fp32 on
the device.

Tested on a CPU with a tiny size (see the header of gpu_check.sh).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time
from pathlib import Path

import numpy as np

METHODS = ("causalfuse", "causalfuse-nobaffm")
PRECISIONS = ("fp32", "bf16")
KERNELS = ("eager", "compiled")
#: CUDA and CPU fp32 images may differ by this many grey levels.
CROSS_DEVICE_TOLERANCE = 1


def _write(out: Path, name: str, data: dict) -> None:
    tmp = out / f"{name}.tmp"
    tmp.write_text(json.dumps(data, indent=1) + "\n")
    tmp.replace(out / name)


def _sync(device) -> None:
    import torch

    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _size(text: str) -> tuple[int, int]:
    try:
        h, w = (int(v) for v in text.lower().split("x"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r}: give a size as HxW, e.g. 480x640") from None
    if h < 2 or w < 2:
        raise argparse.ArgumentTypeError(f"{text!r}: at least 2x2")
    return h, w


def info(args: argparse.Namespace) -> int:
    import torch

    import causalfuse
    from causalfuse._device import resolve_device
    from causalfuse.models.lrr import compile_available

    device = resolve_device(args.device)
    facts = {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "causalfuse": getattr(causalfuse, "__version__", "?"),
        "device": str(device),
        "cuda_available": torch.cuda.is_available(),
        "cuda_version": torch.version.cuda,
        "cpu_threads": torch.get_num_threads(),
        "compile_available": compile_available(),
    }
    if device.type == "cuda":
        props = torch.cuda.get_device_properties(device)
        facts.update({
            "gpu": props.name,
            "gpu_memory_gib": round(props.total_memory / 2**30, 1),
            "compute_capability": f"{props.major}.{props.minor}",
            "bf16_supported": torch.cuda.is_bf16_supported(),
            "cudnn": torch.backends.cudnn.version(),
            "cudnn_allow_tf32": torch.backends.cudnn.allow_tf32,
            "matmul_allow_tf32": torch.backends.cuda.matmul.allow_tf32,
        })
    else:
        facts["gpu"] = None
        facts["bf16_supported"] = True  # PyTorch's CPU autocast; fast only with bfloat16 instructions
    for key, value in facts.items():
        print(f"{key}: {value}")
    _write(args.out, "info.json", facts)
    return 0


def _pair(h: int, w: int) -> tuple[np.ndarray, np.ndarray]:
    from causalfuse.fuse import luminance_pair
    from causalfuse.synthetic import synthetic_pair

    ir, vi = synthetic_pair(h, w, seed=1)
    ir_y, vi_y, _ = luminance_pair(ir, vi)
    return ir_y, vi_y


def timing(args: argparse.Namespace) -> int:
    import torch

    from causalfuse._device import resolve_device
    from causalfuse.fuse import create_backend_method
    from causalfuse.models import lrr

    device = resolve_device(args.device)
    rows: list[dict] = []
    eager_images: dict[tuple[str, str, str], np.ndarray] = {}
    failed = 0
    pairs = {size: _pair(*size) for size in args.sizes}
    # Eager rows first: if compiling is slow or fails, they are already written.
    for kernels in args.kernels:
        os.environ["CAUSALFUSE_COMPILE"] = "1" if kernels == "compiled" else "0"
        for precision in args.precisions:
            for method in args.methods:
                try:
                    fn = create_backend_method(method, None, str(device), precision=precision)
                except Exception as exc:  # noqa: BLE001 - recorded, the other rows still run
                    rows.append({"method": method, "precision": precision, "kernels": kernels, "error": f"{type(exc).__name__}: {exc}"})
                    failed += 1
                    continue
                for module in fn.net.modules():
                    if isinstance(module, lrr.LRREncoder):
                        module.compile = kernels == "compiled"
                for (h, w), (ir, vi) in pairs.items():
                    row = {"method": method, "precision": precision, "kernels": kernels, "size": f"{h}x{w}"}
                    try:
                        if device.type == "cuda":
                            torch.cuda.reset_peak_memory_stats(device)
                        _sync(device)
                        t0 = time.perf_counter()
                        out = fn(ir, vi)
                        _sync(device)
                        row["first_call_s"] = round(time.perf_counter() - t0, 3)
                        times = []
                        for _ in range(args.repeats):
                            _sync(device)
                            t0 = time.perf_counter()
                            out = fn(ir, vi)
                            _sync(device)
                            times.append(time.perf_counter() - t0)
                        row["median_ms"] = round(1000 * statistics.median(times), 2)
                        row["min_ms"] = round(1000 * min(times), 2)
                        row["megapixels_per_s"] = round(h * w / 1e6 / statistics.median(times), 2)
                        if device.type == "cuda":
                            row["peak_gpu_mib"] = round(torch.cuda.max_memory_allocated(device) / 2**20)
                        if not np.isfinite(out).all():
                            raise RuntimeError("non-finite output")
                        image = np.rint(np.clip(out, 0, 1) * 255)
                        key = (method, precision, row["size"])
                        if kernels == "eager":
                            eager_images[key] = image
                        else:
                            if lrr._COMPILE_UNAVAILABLE is not None or any(
                                k._compiled is False for k in (lrr._FIRST, lrr._UPDATE, lrr._PROJECT, lrr._RESIDUAL_TAPS)
                            ):
                                row["note"] = "compilation failed: these are the eager kernels"
                            if key in eager_images:
                                row["max_diff_vs_eager"] = float(np.abs(image - eager_images[key]).max())
                    except Exception as exc:  # noqa: BLE001 - out of memory, a compile failure, ...
                        row["error"] = f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"
                        failed += 1
                    rows.append(row)
                    print(json.dumps(row), flush=True)
                    _write(args.out, "timing.json", {"device": str(device), "repeats": args.repeats, "rows": rows})
                del fn
                if device.type == "cuda":
                    torch.cuda.empty_cache()
    return 1 if failed else 0


def _val_pairs(val: Path | None, max_pairs: int, synthetic_size: tuple[int, int]) -> list[tuple[str, object, object]]:
    if val is not None and val.is_dir():
        pairs = []
        for subset in sorted(p for p in val.iterdir() if (p / "ir").is_dir() and (p / "vi").is_dir()):
            irs = sorted(p for p in (subset / "ir").iterdir() if p.is_file())
            for ir in irs[:max_pairs]:
                vi = next((p for p in (subset / "vi").iterdir() if p.stem == ir.stem), None)
                if vi is not None:
                    pairs.append((f"{subset.name}/{ir.name}", ir, vi))
        if pairs:
            return pairs
    from causalfuse.synthetic import synthetic_pair

    h, w = synthetic_size
    return [(f"synthetic-{seed} {h}x{w}", *synthetic_pair(h, w, seed=seed)) for seed in range(max_pairs)]


def agreement(args: argparse.Namespace) -> int:
    import causalfuse
    from causalfuse._device import resolve_device
    from causalfuse.fuse import BF16_TOLERANCE

    device = resolve_device(args.device)
    pairs = _val_pairs(args.val, args.max_pairs, args.synthetic_size)
    rows: list[dict] = []
    failed = 0

    os.environ["CAUSALFUSE_COMPILE"] = "0"

    def eight_bit(ir, vi, method, where, precision):
        return np.rint(causalfuse.fuse(ir, vi, method=method, device=where, precision=precision) * 255)

    for method in args.methods:
        for name, ir, vi in pairs:
            row = {"method": method, "pair": name}
            try:
                on_device = eight_bit(ir, vi, method, str(device), "fp32")
                on_cpu = eight_bit(ir, vi, method, "cpu", "fp32")
                bf16 = eight_bit(ir, vi, method, str(device), "bf16")
                cross, low = np.abs(on_device - on_cpu), np.abs(bf16 - on_device)
                row.update({
                    "shape": list(on_device.shape),
                    "fp32_vs_cpu_max": float(cross.max()), "fp32_vs_cpu_mean": round(float(cross.mean()), 4),
                    "bf16_vs_fp32_max": float(low.max()), "bf16_vs_fp32_mean": round(float(low.mean()), 4),
                })
                row["ok"] = row["fp32_vs_cpu_max"] <= CROSS_DEVICE_TOLERANCE and row["bf16_vs_fp32_max"] <= BF16_TOLERANCE
            except Exception as exc:  # noqa: BLE001 - recorded, the other pairs still run
                row.update({"ok": False, "error": f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"})
            failed += not row["ok"]
            rows.append(row)
            print(json.dumps(row), flush=True)
            _write(args.out, "agreement.json", {
                "device": str(device), "cross_device_tolerance": CROSS_DEVICE_TOLERANCE, "bf16_tolerance": BF16_TOLERANCE,
                "source": str(args.val) if args.val is not None and args.val.is_dir() else "synthetic", "rows": rows,
            })
    worst = max((r.get("fp32_vs_cpu_max", float("nan")) for r in rows), default=float("nan"))
    print(f"largest fp32 difference {device} vs cpu: {worst:.0f} grey levels over {len(rows)} fusions; {failed} outside the tolerances")
    return 1 if failed else 0


def _table(header: list[str], rows: list[list[object]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(str(v) for v in row) + " |" for row in rows]
    return "\n".join(lines)


def report(args: argparse.Namespace) -> int:
    out: Path = args.out
    merged: dict = {}
    for name in ("info", "timing", "agreement", "tests"):
        path = out / f"{name}.json"
        try:
            merged[name] = json.loads(path.read_text()) if path.is_file() else None
        except ValueError as exc:
            merged[name] = {"error": f"{path.name}: {exc}"}
    stages = out / "stages.txt"
    merged["stages"] = stages.read_text().splitlines() if stages.is_file() else []
    _write(out, "gpu_check.json", merged)

    md = ["# GPU check", ""]
    facts = merged.get("info") or {}
    if facts:
        md.append(", ".join(f"{k} {facts[k]}" for k in ("gpu", "torch", "cuda_version", "bf16_supported", "cudnn_allow_tf32") if k in facts))
        md.append("")
    if merged["stages"]:
        md += ["Stages: " + "; ".join(merged["stages"]), ""]
    tests = merged.get("tests") or {}
    if tests:
        md += [f"Tests on the device: {tests.get('summary', tests)}", ""]
    timing_rows = (merged.get("timing") or {}).get("rows", [])
    if timing_rows:
        md += ["## Fusion time (median of the repeats after one warm-up call; a whole luminance pair, NumPy to NumPy)", ""]
        md.append(_table(
            ["method", "size", "precision", "kernels", "median ms", "MP/s", "first call s", "peak GPU MiB", "vs eager (grey levels)"],
            [[r["method"], r.get("size", ""), r["precision"], r["kernels"] + (f" ({r['note']})" if "note" in r else ""),
              r.get("median_ms", r.get("error", "")), r.get("megapixels_per_s", ""), r.get("first_call_s", ""),
              r.get("peak_gpu_mib", ""), r.get("max_diff_vs_eager", "")] for r in timing_rows],
        ))
        md.append("")
    agree = merged.get("agreement") or {}
    if agree.get("rows"):
        md += [f"## Agreement in grey levels ({agree['device']} fp32 vs cpu fp32: at most {agree['cross_device_tolerance']}; "
               f"{agree['device']} bf16 vs fp32: at most {agree['bf16_tolerance']}), pairs: {agree['source']}", ""]
        md.append(_table(
            ["method", "pair", "fp32 vs cpu max", "mean", "bf16 vs fp32 max", "mean", "ok"],
            [[r["method"], r["pair"], r.get("fp32_vs_cpu_max", r.get("error", "")), r.get("fp32_vs_cpu_mean", ""),
              r.get("bf16_vs_fp32_max", ""), r.get("bf16_vs_fp32_mean", ""), r["ok"]] for r in agree["rows"]],
        ))
        md.append("")
    (out / "gpu_check.md").write_text("\n".join(md))
    print("\n".join(md))
    return 0


def junit_summary(args: argparse.Namespace) -> int:
    """Counts of a pytest JUnit XML file into tests.json (the failures' names too)."""
    import xml.etree.ElementTree as ET

    path = args.out / "tests.xml"
    if not path.is_file():
        _write(args.out, "tests.json", {"summary": "no JUnit XML (pytest did not finish)"})
        return 1
    root = ET.parse(path).getroot()
    suites = [root] if root.tag == "testsuite" else list(root)
    counts = {k: sum(int(s.get(k, 0)) for s in suites) for k in ("tests", "failures", "errors", "skipped")}
    failing = [f"{c.get('classname')}::{c.get('name')}" for s in suites for c in s if c.find("failure") is not None or c.find("error") is not None]
    summary = f"{counts['tests']} tests, {counts['failures']} failed, {counts['errors']} errors, {counts['skipped']} skipped"
    _write(args.out, "tests.json", {"summary": summary, **counts, "failing": failing})
    print(summary)
    return 0


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("stage", choices=("info", "time", "agree", "report", "junit"))
    p.add_argument("--out", type=Path, required=True, help="folder for the JSON and Markdown results")
    p.add_argument("--device", default="cuda", help="cuda (default) or cpu (to test this script)")
    p.add_argument("--sizes", type=_size, nargs="+", default=[(480, 640), (1080, 1920)], metavar="HxW")
    p.add_argument("--methods", nargs="+", default=list(METHODS), choices=METHODS)
    p.add_argument("--precisions", nargs="+", default=list(PRECISIONS), choices=PRECISIONS)
    p.add_argument("--kernels", nargs="+", default=list(KERNELS), choices=KERNELS)
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--val", type=Path, default=None, help="a folder of sets, each with ir/ and vi/ (default: synthetic pairs)")
    p.add_argument("--max-pairs", type=int, default=3, help="pairs of each set (or synthetic pairs) to compare")
    p.add_argument("--synthetic-size", type=_size, default=(480, 640), metavar="HxW", help="size of the synthetic pairs")
    args = p.parse_args(argv)
    if args.repeats < 1 or args.max_pairs < 1:
        p.error("--repeats and --max-pairs must be at least 1")
    args.out.mkdir(parents=True, exist_ok=True)
    stage = {"info": info, "time": timing, "agree": agreement, "report": report, "junit": junit_summary}[args.stage]
    try:
        return stage(args)
    except Exception as exc:  # noqa: BLE001 - one line in the log; the shell script goes on with the next stage
        print(f"gpu_check {args.stage}: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
