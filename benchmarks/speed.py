"""Speed and memory of the LRR encoder: fast implementation vs the plain transcription.

Each configuration runs in its own subprocess, so that peak resident memory
(``ru_maxrss``) and allocator state of one run do not pollute another. Prints
one table: milliseconds per pair (median of the timed repetitions, after a
warm-up call that includes ``torch.compile``), peak RSS, and the ratio against
the plain transcription of the same configuration.

Usage (from the repository root, the official weights beside it in ../shared)::

    python benchmarks/speed.py                      # everything except plain 1280x1024
    python benchmarks/speed.py --only infer         # inference rows only
    python benchmarks/speed.py --plain-large        # also the plain encoders at 1280x1024 (~12 GB)
    python benchmarks/speed.py --one infer:fast:480x640   # one configuration, JSON out
    python benchmarks/speed.py --backends           # PyTorch and ONNX Runtime side by side (480 x 640)

Configurations: ``infer:<impl>:<H>x<W>`` runs the two encoders (infrared and
visible) on one pair; ``lrrnet:<impl>:<H>x<W>`` the whole LRRNet (encoders and
decoder); ``train:<impl>:<B>x<S>`` one training step (forward, backward, Adam)
of LRRNet (both encoders and the decoder, L1 loss to the pixel-wise maximum of
the inputs) on a batch of B crops of S x S; ``causal:fast:...`` the same for
:class:`causalfuse.models.net.CausalFusionNet` when it is installed.
<impl> is ``plain`` (benchmarks/lrr_plain.py), ``fast`` (causalfuse.models.lrr,
kernels compiled), ``eager`` (the same kernels uncompiled, as ``causalfuse
fuse`` runs one pair under 0.5 megapixels) or ``onnx`` (the network exported
by :mod:`causalfuse.export` and run in ONNX Runtime with the onnxruntime
backend's session options, as many threads as PyTorch; the export is not
timed). ``--backends`` runs the inference rows of ``fast``, ``eager`` and
``onnx`` at 480 x 640 and prints ONNX Runtime's time against PyTorch's.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
DEFAULT_WEIGHTS = HERE.parent.parent / "shared" / "weights" / "lrrnet" / "lrrnet_official.model"

CONFIGS = [
    "infer:plain:480x640",
    "infer:fast:480x640",
    "infer:fast:1280x1024",
    "lrrnet:plain:480x640",
    "lrrnet:fast:480x640",
    "lrrnet:eager:480x640",
    "lrrnet:onnx:480x640",
    "causal:fast:480x640",
    "causal:eager:480x640",
    "causal:onnx:480x640",
    "train:plain:6x128",
    "train:fast:6x128",
    "train:fast:6x256",
    "traincausal:fast:6x256",
]

#: PyTorch (compiled, eager) and ONNX Runtime side by side.
BACKEND_CONFIGS = [c for c in CONFIGS if c.startswith(("lrrnet:", "causal:")) and c.split(":")[1] != "plain"]


def _peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0  # Linux: KiB


def _build(kind: str, impl: str, weights: Path):
    import torch

    if impl == "plain":
        sys.path.insert(0, str(HERE))
        from lrr_plain import PlainLRRNet

        net = PlainLRRNet()
        net.load_state_dict(torch.load(weights, map_location="cpu", weights_only=True))
        return net, (net.get_ls1, net.get_ls2)
    if kind.startswith("causal") or kind == "traincausal":
        from causalfuse.models.net import CausalFusionNet

        net = CausalFusionNet()
        net.load_lrrnet(str(weights))
        for encoder in (net.encoder_ir, net.encoder_vi):
            encoder.compile = impl != "eager"
        return net, (net.encoder_ir, net.encoder_vi)
    from causalfuse.models.lrr import LRRNet

    net = LRRNet.from_official(weights, compile=impl != "eager")
    return net, (net.encoder_ir, net.encoder_vi)


def run_one(config: str, weights: Path, repeats: int) -> dict:
    import torch

    torch.set_num_threads(int(os.environ.get("BENCH_THREADS", "2")))
    kind, impl, size = config.split(":")
    a, b = (int(v) for v in size.split("x"))
    net, (enc_ir, enc_vi) = _build(kind, impl, weights)
    gen = torch.Generator().manual_seed(0)
    times = []

    extra = {}
    if impl == "onnx":
        import tempfile

        import onnxruntime

        from causalfuse.export import export_network, onnxruntime_session

        ir = torch.rand(1, 1, a, b, generator=gen).numpy()
        vi = torch.rand(1, 1, a, b, generator=gen).numpy()
        with tempfile.TemporaryDirectory() as tmp:
            t0 = time.perf_counter()
            export_network(net, Path(tmp) / "net.onnx")
            extra["export_s"] = time.perf_counter() - t0
            session = onnxruntime_session(onnxruntime, str(Path(tmp) / "net.onnx"), "cpu")

        def step() -> None:
            session.run(["fused"], {"infrared": ir, "visible": vi})

    elif kind in ("infer", "lrrnet", "causal"):
        net.eval()
        ir = torch.rand(1, 1, a, b, generator=gen)
        vi = torch.rand(1, 1, a, b, generator=gen)

        def step() -> None:
            with torch.inference_mode():
                if kind == "infer":
                    out_ir = enc_ir(ir)
                    out_vi = enc_vi(vi)
                    del out_ir, out_vi
                else:
                    net(ir, vi)

    else:
        net.train()
        bsz, side = a, b
        ir = torch.rand(bsz, 1, side, side, generator=gen)
        vi = torch.rand(bsz, 1, side, side, generator=gen)
        target = torch.maximum(ir, vi)
        opt = torch.optim.Adam([p for p in net.parameters() if p.requires_grad], lr=1e-4)

        def step() -> None:
            opt.zero_grad(set_to_none=True)
            fused = net(ir, vi)
            loss = (fused - target).abs().mean()
            loss.backward()
            opt.step()

    t0 = time.perf_counter()
    step()
    first = time.perf_counter() - t0
    for _ in range(repeats):
        t0 = time.perf_counter()
        step()
        times.append(time.perf_counter() - t0)
    return {
        "config": config,
        "first_s": first,
        "ms": 1000.0 * statistics.median(times) if times else 1000.0 * first,
        "runs": len(times),
        "peak_rss_mb": _peak_rss_mb(),
        **extra,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--weights", type=Path, default=DEFAULT_WEIGHTS)
    parser.add_argument("--one", help="run one configuration in this process and print JSON")
    parser.add_argument("--only", help="run the configurations whose name contains this text")
    parser.add_argument("--plain-large", action="store_true", help="also the plain encoders at 1280x1024 (slow, ~12 GB)")
    parser.add_argument("--repeats", type=int, default=None, help="timed repetitions (default: 3 fast, 1 plain)")
    parser.add_argument("--backends", action="store_true", help="only PyTorch (compiled, eager) and ONNX Runtime at 480 x 640, side by side")
    args = parser.parse_args(argv)

    if args.one:
        impl = args.one.split(":")[1]
        repeats = args.repeats if args.repeats is not None else (1 if impl == "plain" else 3)
        print(json.dumps(run_one(args.one, args.weights, repeats)))
        return 0

    configs = list(BACKEND_CONFIGS if args.backends else CONFIGS)
    if args.plain_large:
        configs.insert(1, "infer:plain:1280x1024")
    if args.only:
        configs = [c for c in configs if args.only in c]
    results: dict[str, dict] = {}
    for config in configs:
        cmd = [sys.executable, str(Path(__file__).resolve()), "--one", config, "--weights", str(args.weights)]
        if args.repeats is not None:
            cmd += ["--repeats", str(args.repeats)]
        proc = subprocess.run(cmd, capture_output=True, text=True)
        if proc.returncode != 0:
            tail = (proc.stderr.strip().splitlines() or ["?"])[-1]
            print(f"{config:26s} FAILED: {tail}", flush=True)
            continue
        res = json.loads(proc.stdout.strip().splitlines()[-1])
        results[config] = res
        kind, impl, size = config.split(":")
        base = results.get(f"{kind}:plain:{size}")
        ratio = f"{base['ms'] / res['ms']:6.1f}x" if base and impl != "plain" else "      -"
        rss_ratio = f"{base['peak_rss_mb'] / res['peak_rss_mb']:5.1f}x" if base and impl != "plain" else "     -"
        print(
            f"{config:26s} {res['ms']:10.0f} ms  (first call {res['first_s']:6.1f} s, {res['runs']} timed)  "
            f"peak RSS {res['peak_rss_mb']:7.0f} MB   speed-up {ratio}  RSS ratio {rss_ratio}",
            flush=True,
        )
    _print_backends(results)
    return 0


def _print_backends(results: dict[str, dict]) -> None:
    """ONNX Runtime's time per pair against PyTorch's, for each network measured with both."""
    for config, res in results.items():
        kind, impl, size = config.split(":")
        if impl != "onnx":
            continue
        parts = [f"onnxruntime {res['ms']:.0f} ms"]
        for other, label in (("eager", "PyTorch eager"), ("fast", "PyTorch compiled")):
            base = results.get(f"{kind}:{other}:{size}")
            if base:
                parts.append(f"{label} {base['ms']:.0f} ms (onnxruntime takes {res['ms'] / base['ms']:.2f}x)")
        print(f"{kind} {size}: " + ", ".join(parts) + f"; export {res['export_s']:.1f} s", flush=True)


if __name__ == "__main__":
    sys.exit(main())
