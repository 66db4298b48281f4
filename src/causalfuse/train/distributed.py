"""Data-parallel training through ``torchrun`` (torch.distributed), nothing home-made.

Launch the ordinary command under torchrun, e.g.::

    torchrun --standalone --nproc_per_node 2 -m causalfuse.cli train --data ... -o RUN

torchrun sets ``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK`` and the rendezvous
variables; :func:`init` then joins the process group (gloo on CPU, nccl on
GPU). Every rank builds the same global batch from the step number and takes
its own contiguous shard of it; DistributedDataParallel averages the
gradients, so with equal shards the update equals the single-process update on
the whole batch. Rank 0 alone writes logs and checkpoints.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist

from ..errors import CausalFuseError

__all__ = ["DistInfo", "init", "shutdown", "shard", "all_mean", "any_flag", "broadcast_float", "check_in_sync"]


@dataclass(frozen=True)
class DistInfo:
    rank: int = 0
    world: int = 1
    local_rank: int = 0

    @property
    def enabled(self) -> bool:
        return self.world > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def init(device: torch.device) -> DistInfo:
    """Join the process group when launched by torchrun with more than one process."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return DistInfo()
    rank = int(os.environ["RANK"])
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    if not dist.is_available():
        raise CausalFuseError("WORLD_SIZE > 1 but this torch build has no torch.distributed")
    backend = "nccl" if device.type == "cuda" else "gloo"
    if not dist.is_initialized():
        dist.init_process_group(backend=backend)
    return DistInfo(rank=rank, world=world, local_rank=local_rank)


def shutdown(info: DistInfo) -> None:
    if info.enabled and dist.is_initialized():
        dist.destroy_process_group()


def shard(items: list, info: DistInfo) -> list:
    """This rank's contiguous share of a global batch (the batch must divide evenly)."""
    if not info.enabled:
        return items
    if len(items) % info.world:
        raise CausalFuseError(f"batch {len(items)} does not split evenly over {info.world} processes: choose a multiple")
    n = len(items) // info.world
    return items[info.rank * n : (info.rank + 1) * n]


def all_mean(values: torch.Tensor, info: DistInfo) -> torch.Tensor:
    """Mean of a tensor over the ranks (the tensor itself without distribution)."""
    if not info.enabled:
        return values
    out = values.detach().clone()
    dist.all_reduce(out, op=dist.ReduceOp.SUM)
    return out / info.world


def any_flag(flag: bool, info: DistInfo, device: torch.device) -> bool:
    """True on every rank when any rank raised ``flag`` (e.g. a stop request)."""
    if not info.enabled:
        return flag
    t = torch.tensor([1.0 if flag else 0.0], device=device)
    dist.all_reduce(t, op=dist.ReduceOp.MAX)
    return bool(t.item() > 0)


def broadcast_float(value: float, info: DistInfo, device: torch.device) -> float:
    """Rank 0's value on every rank (e.g. the elapsed time, so budgets agree)."""
    if not info.enabled:
        return value
    t = torch.tensor([value], dtype=torch.float64, device=device)
    dist.broadcast(t, src=0)
    return float(t.item())


def parameter_checksum(module: torch.nn.Module) -> torch.Tensor:
    """A float64 checksum of every parameter (sum and weighted sum)."""
    total = torch.zeros(2, dtype=torch.float64)
    for i, p in enumerate(module.parameters()):
        v = p.detach().to("cpu", torch.float64).flatten()
        total[0] += v.sum()
        total[1] += (v * torch.linspace(1, 2, v.numel(), dtype=torch.float64)).sum() * (i + 1)
    return total


def check_in_sync(module: torch.nn.Module, info: DistInfo, device: torch.device) -> None:
    """Raise when the ranks' parameters differ (they must be identical under DDP)."""
    if not info.enabled:
        return
    mine = parameter_checksum(module).to(device)
    gathered = [torch.zeros_like(mine) for _ in range(info.world)]
    dist.all_gather(gathered, mine)
    if any(not torch.equal(g, gathered[0]) for g in gathered):
        raise CausalFuseError(f"data-parallel ranks ended with different parameters: {[g.tolist() for g in gathered]}")
