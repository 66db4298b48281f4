"""``causalfuse export``: a network with its weights as an ONNX file."""

from __future__ import annotations

import argparse
from pathlib import Path

EPILOG = """examples:
  causalfuse export --format onnx -o causalfuse.onnx
  causalfuse export --method lrrnet --weights lrrnet_official.model -o lrrnet.onnx
  causalfuse fuse --ir ir.png --vi vi.png -o fused.png --backend onnxruntime --onnx causalfuse.onnx

The file's inputs are "infrared" and "visible", (B, 1, H, W) float32 in [0, 1]
(any B, H, W >= 2), its output "fused"; its metadata records the method, the
SHA-256 of the weights, the package version and the opset. Needs the extra:
pip install "causalfuse[onnx]".
"""


def add_arguments(p: argparse.ArgumentParser) -> None:
    from .models.methods import NETWORK_METHODS

    p.formatter_class = argparse.RawDescriptionHelpFormatter
    p.epilog = EPILOG
    p.add_argument("--method", default="causalfuse", choices=tuple(NETWORK_METHODS), help="the network (default: causalfuse)")
    p.add_argument("--weights", type=Path, default=None, help="its weights (default: the bundled ones; lrrnet needs the official file)")
    p.add_argument("--format", default="onnx", choices=("onnx",), help="file format (default: onnx)")
    p.add_argument("-o", "--output", required=True, type=Path, help="the file to write, e.g. model.onnx")


def run(args: argparse.Namespace) -> int:
    from .export import export_onnx

    meta = export_onnx(args.method, args.weights, args.output)
    weights = f" (weights {meta['weights_file']}, sha256 {meta['weights_sha256'][:12]}...)" if meta["weights_sha256"] else ""
    print(
        f"exported {meta['method']}{weights} -> {args.output}: ONNX opset {meta['opset']}, "
        f"equal to PyTorch within {meta['check_max_abs_diff']} on a test pair"
    )
    return 0
