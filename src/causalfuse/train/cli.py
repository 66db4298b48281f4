"""``causalfuse train``: train CausalFusionNet (the paper's recipe by default).

Configuration precedence: defaults (the paper's recipe) < ``--config FILE``
(JSON or TOML) < ``--set key=value`` < explicit flags.
"""

from __future__ import annotations

import argparse
import signal

from ..errors import CausalFuseError

__all__ = ["add_arguments", "run", "build_config"]


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--data", nargs="+", metavar="DIR", help="dataset roots (ir/ + vi/, infrared/ + visible/, ...)")
    p.add_argument("--dictionary", metavar="FILE", help="confounder dictionaries (causalfuse dictionary build)")
    p.add_argument("--lrrnet-weights", metavar="PATH", help="LRRNet's published weights, to initialise the encoders")
    p.add_argument("--init", metavar="MODEL", help="start from a trained model (a checkpoint, or causalfuse / causalfuse-nobaffm: "
                   "the bundled weights) to fine-tune it, e.g. on your own pairs")
    p.add_argument("-o", "--output", metavar="RUNDIR", help="run directory (checkpoints, log.csv, config.json)")
    p.add_argument("--config", metavar="FILE", help="configuration file (JSON, or TOML)")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override a configuration field, e.g. --set net.d_k=64 --set loss.gradient=5 (repeatable)")
    p.add_argument("--steps", type=int, help="optimisation steps (default 10000)")
    p.add_argument("--max-minutes", type=float, help="wall-time budget: stop cleanly with final checkpoints when spent")
    p.add_argument("--batch", type=int, help="global batch size (paper: 6)")
    p.add_argument("--crop", type=int, help="random square crop side (paper: 256)")
    p.add_argument("--lr", type=float, help="Adam learning rate (paper: 1e-4)")
    p.add_argument("--head-lr", type=float, help="learning rate of BAFFM + reconstruction (default: --lr)")
    p.add_argument("--lr-decay", type=int, nargs=2, metavar=("START", "END"),
                   help="learning rates fall along a half cosine from step START to step END (default: constant)")
    p.add_argument("--lr-final", type=float, help="the rates' factor at the end of --lr-decay (default 0)")
    p.add_argument("--head-only-steps", type=int, help="warm start: train BAFFM + reconstruction alone for the first N steps (default 0)")
    p.add_argument("--seed", type=int, help="seed of initialisation, batch order and augmentation (default 0)")
    p.add_argument("--gamma-aug", type=float, help="brightness augmentation: crops raised to powers log-uniform in [e^-g, e^g] (default 0: none)")
    p.add_argument("--no-baffm", action="store_true", help="train the 'without BAFFM' ablation")
    p.add_argument("--device", help="auto (default), cpu or cuda[:N]")
    p.add_argument("--amp", choices=["auto", "bf16", "off"], help="mixed precision (auto: bf16 on CUDA, off on CPU)")
    p.add_argument("--threads", type=int, help="torch intra-op threads per process")
    p.add_argument("--num-workers", type=int, help="DataLoader worker processes (default 0)")
    p.add_argument("--checkpoint-every", type=int, help="steps between training-state checkpoints (default 50)")
    p.add_argument("--log-every", type=int, help="steps between CSV log rows (default 1)")
    p.add_argument("--resume", action="store_true", help="continue exactly from RUNDIR/last.safetensors")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")


_FLAGS = {
    "data": "data", "dictionary": "dictionary", "lrrnet_weights": "lrrnet_weights", "init": "init", "output": "output",
    "steps": "steps", "max_minutes": "max_minutes", "batch": "batch", "crop": "crop", "lr": "lr",
    "head_lr": "head_lr", "lr_final": "lr_final", "head_only_steps": "head_only_steps", "seed": "seed", "gamma_aug": "gamma_aug", "device": "device", "amp": "amp", "threads": "threads",
    "num_workers": "num_workers", "checkpoint_every": "checkpoint_every", "log_every": "log_every",
}


def build_config(args: argparse.Namespace):  # -> TrainConfig
    """The resolved configuration from defaults, file, ``--set`` and flags."""
    from .config import TrainConfig, apply_overrides, load_config_file

    data = load_config_file(args.config) if args.config else {}
    data = apply_overrides(data, list(args.overrides or []))
    for attr, key in _FLAGS.items():
        value = getattr(args, attr, None)
        if value is not None:
            data[key] = value
    if getattr(args, "lr_decay", None) is not None:
        data["lr_decay_start"], data["lr_decay_end"] = args.lr_decay
    if args.no_baffm:
        data.setdefault("net", {})["use_baffm"] = False
    if args.no_progress:
        data["progress"] = False
    if "output" not in data:
        raise CausalFuseError("no run directory: give -o RUNDIR")
    return TrainConfig.from_dict(data).validate()


def run(args: argparse.Namespace) -> int:
    from .loop import train

    cfg = build_config(args)
    result = train(cfg, resume=args.resume)
    if result.stopped == "signal":
        print(f"stopped at step {result.step}; state saved in {result.run_dir}/last.safetensors (continue with --resume)")
        return 128 + int(signal.SIGINT)
    how = "wall-time budget spent" if result.stopped == "budget" else "done"
    print(f"{how}: {result.step} steps in {result.elapsed / 60:.1f} min; model in {result.run_dir}/model.safetensors")
    return 0
