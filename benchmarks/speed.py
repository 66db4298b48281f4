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
:class:`causalfuse.models.net.CausalFusionNet` when it is installed (its
speed-up is against the plain LRRNet: the same two encoders).
<impl> is ``plain`` (benchmarks/lrr_plain.py), ``fast`` (causalfuse.models.lrr,
kernels compiled, as training runs them), ``eager`` (uncompiled: on the CPU
Numba's loops, what ``causalfuse fuse`` runs there for jobs of a megapixel
or more; in the ``lrrnet`` and ``causal`` rows the two encoders side by
side, one thread each), ``eagertorch`` (the same with
``CAUSALFUSE_NUMBA=0``: PyTorch's chunked stages, what ``fuse`` runs for
smaller jobs), ``eagerbf16`` (the same under bfloat16 autocast: ``fuse --precision bf16``) or
``onnx`` (the network exported
by :mod:`causalfuse.export` and run in ONNX Runtime with the onnxruntime
backend's session options, as many threads as PyTorch; the export is not
timed). ``ifcnn:arch:...`` and ``densefuse:arch:...`` time two published
networks' layers beside ours (``benchmarks/peer_nets.py``: their
architectures with random weights, run as their code runs them, IFCNN on
three-channel inputs). ``--backends`` runs the inference rows of ``fast``, ``eager`` and
``onnx`` at 480 x 640 and prints ONNX Runtime's time against PyTorch's.

Start-up and memory of ``causalfuse fuse`` itself, each run a fresh process
(``--baseline REV`` runs that commit's ``src`` too, interleaved with this
checkout's, and compares the two outputs byte for byte)::

    python benchmarks/speed.py --startup [--pair IR VI] [--repeats 3] [--baseline REV]
    python benchmarks/speed.py --memory [--sizes 1280x1024 3840x2160] [--baseline REV]

Everything the README's speed section reports, in one run of about ten
minutes (the network rows above at 480 x 640 and the encoders at
1280 x 1024, start-up, memory, and ``folder_speed.py`` for ``causalfuse`` on
RoadScene50)::

    python benchmarks/speed.py --all [--baseline REV]

``--startup`` times the whole command (wall, and the CPU time of the process:
user + system) on one pair (default: TNO pair 12 of ../shared, 620 x 450),
and in another process the phases the command goes through (imports, model,
fusion, writing). ``--memory`` gives the peak resident memory of the command
on synthetic grey and colour pairs of each size.
"""

from __future__ import annotations

import argparse
import contextlib
import filecmp
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
SHARED = Path(os.environ.get("CAUSALFUSE_SHARED", REPO.parent / "shared"))
DEFAULT_WEIGHTS = SHARED / "weights" / "lrrnet" / "lrrnet_official.model"
DEFAULT_PAIR = (SHARED / "data" / "val" / "TNO21" / "ir" / "12.png", SHARED / "data" / "val" / "TNO21" / "vi" / "12.png")

CONFIGS = [
    "infer:plain:480x640",
    "infer:fast:480x640",
    "infer:eager:480x640",
    "infer:eagertorch:480x640",
    "infer:fast:1280x1024",
    "infer:eager:1280x1024",
    "lrrnet:plain:480x640",
    "lrrnet:fast:480x640",
    "lrrnet:eager:480x640",
    "lrrnet:eagertorch:480x640",
    "lrrnet:onnx:480x640",
    "causal:fast:480x640",
    "causal:eager:480x640",
    "causal:eagertorch:480x640",
    "causal:eagerbf16:480x640",
    "causal:onnx:480x640",
    "ifcnn:arch:480x640",
    "densefuse:arch:480x640",
    "train:plain:6x128",
    "train:fast:6x128",
    "train:fast:6x256",
    "traincausal:fast:6x256",
]

#: PyTorch (compiled, eager) and ONNX Runtime side by side.
BACKEND_CONFIGS = [c for c in CONFIGS if c.startswith(("lrrnet:", "causal:")) and c.split(":")[1] in ("fast", "eager", "onnx")]


def _peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0  # Linux: KiB


def _build(kind: str, impl: str, weights: Path):
    import torch

    if impl == "arch":  # a published network's layers, built in run_one
        return None, (None, None)
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
            encoder.compile = not impl.startswith("eager")
        return net, (net.encoder_ir, net.encoder_vi)
    from causalfuse.models.lrr import LRRNet

    net = LRRNet.from_official(weights, compile=not impl.startswith("eager"))
    return net, (net.encoder_ir, net.encoder_vi)


def run_one(config: str, weights: Path, repeats: int) -> dict:
    import torch

    torch.set_num_threads(int(os.environ.get("BENCH_THREADS", "2")))
    kind, impl, size = config.split(":")
    if impl == "eagertorch":  # eager, in PyTorch's chunked kernels rather than Numba's loops
        os.environ["CAUSALFUSE_NUMBA"] = "0"
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

    elif impl == "arch":
        sys.path.insert(0, str(HERE))
        from peer_nets import build

        peer, channels = build(kind)
        ir = torch.rand(1, channels, a, b, generator=gen)
        vi = torch.rand(1, channels, a, b, generator=gen)

        def step() -> None:
            with torch.inference_mode():
                peer(ir, vi)

    elif kind in ("infer", "lrrnet", "causal"):
        net.eval()
        ir = torch.rand(1, 1, a, b, generator=gen)
        vi = torch.rand(1, 1, a, b, generator=gen)

        precision = torch.autocast("cpu", dtype=torch.bfloat16) if impl == "eagerbf16" else contextlib.nullcontext()

        def step() -> None:
            with torch.inference_mode(), precision:
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
    parser.add_argument("--startup", action="store_true", help="time `causalfuse fuse` on one pair in fresh processes, by phase")
    parser.add_argument("--memory", action="store_true", help="peak RSS of `causalfuse fuse` on synthetic pairs of --sizes")
    parser.add_argument("--pair", nargs=2, type=Path, metavar=("IR", "VI"), default=DEFAULT_PAIR, help="the pair for --startup")
    parser.add_argument("--sizes", nargs="+", default=["1280x1024", "3840x2160"], help="WxH sizes for --memory")
    parser.add_argument("--baseline", help="with --startup, --memory or --all: also run this commit's src, interleaved")
    parser.add_argument("--all", action="store_true", help="the README's speed figures in one run: network rows, start-up, memory, a folder")
    args = parser.parse_args(argv)

    if args.startup or args.memory:
        return command_runs(args)
    if args.one:
        impl = args.one.split(":")[1]
        repeats = args.repeats if args.repeats is not None else (1 if impl == "plain" else 3)
        print(json.dumps(run_one(args.one, args.weights, repeats)))
        return 0

    if args.all:
        return all_figures(args)
    configs = list(BACKEND_CONFIGS if args.backends else CONFIGS)
    if args.plain_large:
        configs.insert(1, "infer:plain:1280x1024")
    if args.only:
        configs = [c for c in configs if args.only in c]
    network_rows(configs, args)
    return 0


#: The network rows of the README's speed section (``--all``): every inference row.
README_CONFIGS = [c for c in CONFIGS if not c.startswith("train")]


def all_figures(args: argparse.Namespace) -> int:
    """The README's speed figures in one run: the network, start-up, memory and folders (about 10 minutes)."""
    print("== the network: one process per row ==", flush=True)
    network_rows(README_CONFIGS, args)
    print("\n== `causalfuse fuse` in fresh processes: start-up and peak memory ==", flush=True)
    args.startup = args.memory = True
    command_runs(args)
    print("\n== a folder: images/s of `causalfuse fuse` ==", flush=True)
    sys.path.insert(0, str(HERE))
    import folder_speed

    return folder_speed.main(["--methods", "causalfuse", *(["--baseline", args.baseline] if args.baseline else [])])


def network_rows(configs: list[str], args: argparse.Namespace) -> None:
    """One subprocess per configuration; prints a row each, then ONNX Runtime against PyTorch."""
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
        # the causal network against the plain LRRNet: the same two encoders, its own head
        base = results.get(f"{kind}:plain:{size}") or (results.get(f"lrrnet:plain:{size}") if kind == "causal" else None)
        ratio = f"{base['ms'] / res['ms']:6.1f}x" if base and impl != "plain" else "      -"
        rss_ratio = f"{base['peak_rss_mb'] / res['peak_rss_mb']:5.1f}x" if base and impl != "plain" else "     -"
        print(
            f"{config:26s} {res['ms']:10.0f} ms  (first call {res['first_s']:6.1f} s, {res['runs']} timed)  "
            f"peak RSS {res['peak_rss_mb']:7.0f} MB   speed-up {ratio}  RSS ratio {rss_ratio}",
            flush=True,
        )
    _print_backends(results)
    _print_peers(results)


def _print_peers(results: dict[str, dict]) -> None:
    """``causalfuse`` (eager: what ``fuse`` runs) against the published networks' layers of the same size."""
    for config, res in results.items():
        kind, impl, size = config.split(":")
        ours = results.get(f"causal:eager:{size}")
        if impl == "arch" and ours:
            print(f"causalfuse {size}: {ours['ms']:.0f} ms against {kind} {res['ms']:.0f} ms ({res['ms'] / ours['ms']:.2f}x as fast)", flush=True)


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


# ---------------------------------------------------------------------------
# `causalfuse fuse` in fresh processes: start-up phases and peak memory
# ---------------------------------------------------------------------------
# The phases of one `causalfuse fuse` call, run with PYTHONPATH set to one version's src folder.
PHASES_CHILD = """
import json, sys, time
marks = [(time.perf_counter(), time.process_time())]
def mark():
    marks.append((time.perf_counter(), time.process_time()))
import torch
mark()
import causalfuse
from causalfuse.fuse import fuse
from causalfuse.io import write_image
from causalfuse.models.registry import create_method
from PIL import Image
mark()
ir, vi, out = sys.argv[1:4]
method = create_method("causalfuse", device="auto")
with Image.open(ir) as im:
    method.plan(im.width * im.height)  # as `causalfuse fuse` plans one pair
mark()
fused = fuse(ir, vi, method=method)
mark()
write_image(out, fused)
mark()
names = ["import torch", "import causalfuse", "model", "fuse", "write"]
print(json.dumps({"module": causalfuse.__file__, "phases": {
    n: [b[0] - a[0], b[1] - a[1]] for n, a, b in zip(names, marks, marks[1:])}}))
"""


def _load() -> str:
    return " ".join(f"{v:.2f}" for v in os.getloadavg())


def _measured(cmd: list[str], src: Path) -> dict:
    """Run ``cmd`` with ``src`` first on the path; its wall time, CPU time (user + system), peak RSS and output."""
    env = {**os.environ, "PYTHONPATH": str(src)}
    with tempfile.TemporaryFile("w+") as log:
        t0 = time.perf_counter()
        proc = subprocess.Popen(cmd, env=env, stdout=log, stderr=subprocess.STDOUT, text=True)
        _, status, usage = os.wait4(proc.pid, 0)
        wall = time.perf_counter() - t0
        proc.returncode = os.waitstatus_to_exitcode(status)
        log.seek(0)
        text = log.read()
    if proc.returncode != 0:
        sys.exit(f"{' '.join(cmd)} with {src} failed:\n{text[-2000:]}")
    return {"wall": wall, "user": usage.ru_utime, "sys": usage.ru_stime, "rss_mb": usage.ru_maxrss / 1024.0, "out": text}


def _fuse_cmd(ir: Path, vi: Path, out: Path) -> list[str]:
    return [sys.executable, "-m", "causalfuse", "fuse", "-q", "--ir", str(ir), "--vi", str(vi), "-o", str(out)]


def _versions(baseline: str | None, tmp: Path) -> dict[str, Path]:
    """``src`` folders by name: the baseline commit's (extracted with ``git archive``) and this checkout's."""
    versions = {}
    if baseline:
        archive = subprocess.run(["git", "archive", baseline, "src"], cwd=REPO, capture_output=True, check=True).stdout
        (tmp / "old").mkdir()
        subprocess.run(["tar", "-x", "-C", str(tmp / "old")], input=archive, check=True)
        versions["old"] = tmp / "old" / "src"
    versions["new"] = REPO / "src"
    return versions


def _synthetic_pair(folder: Path, width: int, height: int, colour: bool) -> tuple[Path, Path]:
    """A textured infrared-visible pair of one size (grey or colour visible image), written once."""
    import numpy as np
    from PIL import Image

    kind = "colour" if colour else "grey"
    ir, vi = folder / f"ir-{width}x{height}.png", folder / f"vi-{kind}-{width}x{height}.png"
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float32)
    base = 128 + 60 * np.sin(xx / 37) * np.cos(yy / 53)
    if not ir.exists():
        Image.fromarray(np.clip(base + rng.normal(0, 20, base.shape), 0, 255).astype(np.uint8)).save(ir)
    shape = (height, width, 3) if colour else (height, width)
    scene = base[..., None] if colour else base
    Image.fromarray(np.clip(255 - scene + rng.normal(0, 20, shape), 0, 255).astype(np.uint8)).save(vi)
    return ir, vi


def _summary(runs: dict[str, list[dict]], key: str) -> str:
    med = {name: statistics.median(r[key] for r in rs) for name, rs in runs.items()}
    text = ", ".join(f"{name} {value:.2f}" for name, value in med.items())
    return text + (f" (new/old {med['new'] / med['old']:.2f})" if len(med) == 2 and med["old"] else "")


def command_runs(args: argparse.Namespace) -> int:
    print(f"{os.cpu_count()} cores; load average at start {_load()}", flush=True)
    with tempfile.TemporaryDirectory(prefix="speed.") as tmp:
        tmp = Path(tmp)
        versions = _versions(args.baseline, tmp)
        if args.startup:
            _startup(args, versions, tmp)
        if args.memory:
            _memory(args, versions, tmp)
    print(f"load average at end {_load()}")
    return 0


def _startup(args: argparse.Namespace, versions: dict[str, Path], tmp: Path) -> None:
    ir, vi = args.pair
    repeats = args.repeats or 3
    runs: dict[str, list[dict]] = {name: [] for name in versions}
    phases: dict[str, list[dict]] = {name: [] for name in versions}
    for i in range(repeats):
        for name, src in versions.items():
            before = _load()
            res = _measured(_fuse_cmd(ir, vi, tmp / f"{name}.png"), src)
            res["cpu"] = res["user"] + res["sys"]
            runs[name].append(res)
            child = _measured([sys.executable, "-c", PHASES_CHILD, str(ir), str(vi), str(tmp / f"{name}-phases.png")], src)
            info = json.loads(child["out"].strip().splitlines()[-1])
            if not info["module"].startswith(str(src)):
                sys.exit(f"the child imported {info['module']}, not the version in {src}")
            phases[name].append(info["phases"])
            detail = ", ".join(f"{n} {w:.2f}/{c:.2f}" for n, (w, c) in info["phases"].items())
            print(
                f"{name} run {i + 1}: causalfuse fuse {res['wall']:6.2f} s wall, CPU {res['cpu']:6.2f} s "
                f"(user {res['user']:.2f}, sys {res['sys']:.2f}), peak RSS {res['rss_mb']:.0f} MB  (load {before} -> {_load()})\n"
                f"    phases, wall/CPU s: {detail}",
                flush=True,
            )
    print(f"median wall s: {_summary(runs, 'wall')}; median CPU s: {_summary(runs, 'cpu')}")
    for phase in next(iter(phases.values()))[0]:
        per = {name: [{"wall": p[phase][0], "cpu": p[phase][1]} for p in ps] for name, ps in phases.items()}
        print(f"  {phase:18s} median wall s: {_summary(per, 'wall')}; CPU s: {_summary(per, 'cpu')}")
    if len(versions) == 2:
        same = filecmp.cmp(tmp / "old.png", tmp / "new.png", shallow=False)
        print(f"outputs {'identical' if same else 'DIFFERENT'}")


def _memory(args: argparse.Namespace, versions: dict[str, Path], tmp: Path) -> None:
    for size in args.sizes:
        width, height = (int(v) for v in size.split("x"))
        for colour in (False, True):
            ir, vi = _synthetic_pair(tmp, width, height, colour)
            outs = {}
            for name, src in versions.items():
                outs[name] = tmp / f"{name}-{vi.stem}.png"
                res = _measured(_fuse_cmd(ir, vi, outs[name]), src)
                print(
                    f"{size:>10s} {'colour' if colour else 'grey':6s} {name}: peak RSS {res['rss_mb']:6.0f} MB, "
                    f"{res['wall']:6.1f} s wall, CPU {res['user'] + res['sys']:6.1f} s  (load {_load()})",
                    flush=True,
                )
            if len(outs) == 2:
                same = filecmp.cmp(outs["old"], outs["new"], shallow=False)
                print(f"{size:>10s} {'colour' if colour else 'grey':6s} outputs {'identical' if same else 'DIFFERENT'}", flush=True)


if __name__ == "__main__":
    sys.exit(main())
