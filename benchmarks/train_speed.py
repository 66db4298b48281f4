"""Training speed of CausalFusionNet: seconds per optimisation step (wall and CPU).

One full step (forward, fusion loss, backward, Adam) of the real network with
LRRNet's encoders, on random inputs, per (crop, batch). CPU time per step is
reported beside wall time because wall time is meaningless on a shared
machine; with T threads, wall >= CPU / T.

    python benchmarks/train_speed.py --crops 128 256 --batch 6 --threads 2 --steps 4
    python benchmarks/train_speed.py --crops 128 256 --frozen       # encoders frozen
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from causalfuse.losses import fusion_loss
from causalfuse.models.net import CausalFusionNet, NetConfig


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--crops", type=int, nargs="+", default=[128, 256])
    p.add_argument("--batch", type=int, default=6)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--steps", type=int, default=4, help="timed steps after one warm-up step")
    p.add_argument("--no-baffm", action="store_true")
    p.add_argument("--frozen", action="store_true", help="encoders frozen (train --head-only-steps >= --steps): no encoder backward")
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    net = CausalFusionNet(NetConfig(use_baffm=not args.no_baffm))
    opt = torch.optim.Adam(net.parameters(), lr=1e-4)
    for crop in args.crops:
        ir = torch.rand(args.batch, 1, crop, crop)
        vi = torch.rand(args.batch, 1, crop, crop)
        walls, cpus = [], []
        for i in range(args.steps + 1):
            w0, c0 = time.perf_counter(), time.process_time()
            if args.frozen:
                with torch.no_grad():
                    z_ir, z_vi = net.forward_features(ir, vi)
                loss = fusion_loss(net.forward_head(z_ir, z_vi), ir, vi)["loss"]
            else:
                loss = fusion_loss(net(ir, vi), ir, vi)["loss"]
            opt.zero_grad()
            loss.backward()
            opt.step()
            w, c = time.perf_counter() - w0, time.process_time() - c0
            if i:  # the first step compiles kernels
                walls.append(w)
                cpus.append(c)
            print(f"crop {crop} batch {args.batch} step {i}: wall {w:.2f} s, cpu {c:.2f} s", flush=True)
        print(
            f"RESULT crop {crop} batch {args.batch} threads {args.threads}{' frozen encoders' if args.frozen else ''}: median wall {statistics.median(walls):.2f} s/step, "
            f"median cpu {statistics.median(cpus):.2f} s/step, {args.batch / statistics.median(walls):.2f} img/s",
            flush=True,
        )


if __name__ == "__main__":
    main()
