"""The paper's ablations as bench methods: dictionaries built and models trained on demand.

``causalfuse bench --ablation dict-size --ablation baffm --train-data DIR ...
--train-steps S --lrrnet-weights F`` builds the confounder dictionary of
every size N (``--dict-sizes``, default 20,25,30) on the training pairs,
trains one network per N (and the network without BAFFM at N=25) for S
steps, and adds them to the bench as the columns ``N20``, ``N25``, ``N30``
and ``N25-noBAFFM``. The tables then have the form of the paper's Tables 2
(with / without BAFFM) and 3 (dictionary size).

Everything lives in the ablation folder (``--ablation-dir``, default
``OUTDIR/ablation``): ``dict_nN.safetensors`` and ``runs/<name>/``. A
dictionary already there is reused (after checking its size); a run whose
final model has the requested number of steps is reused; a run that was
interrupted resumes from its last training state, exactly.

The schedule is the bundled weights' (the paper's, scaled to a CPU): 128 x
128 crops, batch 6, Adam 1e-4 for the encoders and 1e-3 for BAFFM and the
reconstruction, 100 head-only warm-up steps, seed 0. The loss is
``causalfuse train``'s default (the paper's), not the bundled weights'
``detail-sum`` target: the columns compare dictionary sizes and BAFFM under
one recipe.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence

from ..errors import CausalFuseError

__all__ = ["AblationPlan", "prepare_ablations", "KINDS"]

KINDS = ("dict-size", "baffm")


@dataclass
class AblationPlan:
    """What to build and train, and with which budget."""

    kinds: Sequence[str]
    train_data: Sequence[str]
    lrrnet_weights: str
    steps: int
    workdir: str
    dict_sizes: Sequence[int] = (20, 25, 30)
    baffm_size: int = 25
    dim: int = 128
    crop: int = 128
    batch: int = 6
    lr: float = 1e-4
    head_lr: float = 1e-3
    head_only_steps: int = 100
    seed: int = 0
    threads: int | None = None
    device: str = "auto"
    progress: bool = True

    def check(self) -> "AblationPlan":
        bad = [k for k in self.kinds if k not in KINDS]
        if bad:
            raise CausalFuseError(f"unknown ablation {', '.join(bad)}; known: {', '.join(KINDS)}")
        if not self.train_data:
            raise CausalFuseError("--ablation needs training data: --train-data DIR [DIR ...]")
        if self.steps < 1:
            raise CausalFuseError(f"--train-steps must be a positive integer, got {self.steps}")
        if not self.lrrnet_weights or not Path(self.lrrnet_weights).is_file():
            raise CausalFuseError(f"--ablation needs LRRNet's weights to initialise the encoders: --lrrnet-weights {self.lrrnet_weights}: no such file")
        if any(n < 2 for n in self.dict_sizes):
            raise CausalFuseError(f"--dict-sizes must be at least 2, got {list(self.dict_sizes)}")
        return self


def _dictionary(plan: AblationPlan, n: int, log: Callable[[str], None]) -> Path:
    from ..data.paired import pairs_from_roots
    from ..dictionary.build import build_dictionaries
    from ..dictionary.io import load_dictionaries, save_dictionaries

    path = Path(plan.workdir) / f"dict_n{n}.safetensors"
    if path.exists():
        ir, vi = load_dictionaries(path)
        if ir.n_clusters != n or vi.n_clusters != n:
            raise CausalFuseError(f"{path}: holds N={ir.n_clusters} prototypes, expected {n}; delete it to rebuild")
        log(f"ablation: reusing dictionary {path}")
        return path
    pairs = pairs_from_roots(list(plan.train_data))
    log(f"ablation: building the N={n} dictionary on {len(pairs)} training pairs")
    ir, vi = build_dictionaries(
        pairs, n_clusters=n, dim=plan.dim, seed=plan.seed, device=plan.device, progress=plan.progress,
        data_roots=[str(Path(r).resolve()) for r in plan.train_data], log=log,
    )
    save_dictionaries(path, ir, vi)
    return path


def _trained(plan: AblationPlan, name: str, dictionary: Path, n: int, use_baffm: bool, log: Callable[[str], None]) -> Path:
    from ..checkpoint import read_metadata
    from ..models.net import NetConfig
    from ..train.config import TrainConfig
    from ..train.loop import train

    run = Path(plan.workdir) / "runs" / name
    model = run / "model.safetensors"
    if model.exists():
        budget = read_metadata(model).get("info", {}).get("budget", {})
        if budget.get("steps") == plan.steps and budget.get("stopped") == "done":
            log(f"ablation: reusing {model} ({plan.steps} steps)")
            return model
    cfg = TrainConfig(
        data=[str(d) for d in plan.train_data], dictionary=str(dictionary), lrrnet_weights=plan.lrrnet_weights,
        output=str(run), crop=plan.crop, batch=plan.batch, lr=plan.lr, head_lr=plan.head_lr,
        head_only_steps=plan.head_only_steps, steps=plan.steps, seed=plan.seed, threads=plan.threads,
        checkpoint_every=25, device=plan.device, progress=plan.progress,
        net=NetConfig(dict_size=n, dict_dim=plan.dim, use_baffm=use_baffm),
    ).validate()
    resume = (run / "last.safetensors").exists()
    log(f"ablation: training {name} for {plan.steps} steps in {run}" + (" (resuming)" if resume else ""))
    result = train(cfg, resume=resume)
    if result.step < plan.steps or not model.exists():
        raise CausalFuseError(f"ablation run {run} stopped at step {result.step} of {plan.steps}; rerun the bench to resume it")
    return model


def prepare_ablations(plan: AblationPlan, log: Callable[[str], None]) -> list[str]:
    """Build and train what ``plan`` asks for; return bench method specs ``LABEL=causalfuse@MODEL``."""
    plan.check()
    os.makedirs(plan.workdir, exist_ok=True)
    sizes: list[int] = []
    if "dict-size" in plan.kinds:
        sizes += list(plan.dict_sizes)
    if "baffm" in plan.kinds and plan.baffm_size not in sizes:
        sizes.append(plan.baffm_size)
    specs: list[str] = []
    for n in sizes:
        path = _dictionary(plan, n, log)
        specs.append(f"N{n}=causalfuse@{_trained(plan, f'baffm_n{n}', path, n, True, log)}")
        if "baffm" in plan.kinds and n == plan.baffm_size:
            nob = _trained(plan, f"nobaffm_n{n}", path, n, False, log)
            specs.append(f"N{n}-noBAFFM=causalfuse@{nob}")
    return specs
