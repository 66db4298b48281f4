"""The training loop: paper recipe, exact resume, budgets, data-parallel.

Reproducibility: the batch of step ``s`` is a pure function of ``(seed, s)``:
the sample stream is the concatenation of per-epoch permutations of the pairs
(epoch ``e`` permuted by a generator seeded with ``(seed, e)``), batch ``s`` is
its slice ``[s * batch, (s + 1) * batch)``, and each sample's crop and flips
depend on ``(seed, epoch, index)`` only (:class:`~causalfuse.data.dataset.PairedDataset`).
Together with the network, the optimizer state and the random generator
states in the training-state checkpoint, a resumed run computes the same
batches and the same losses as an uninterrupted one.

Files in the run directory:

* ``last.safetensors``: the training state (see :mod:`.state`), every
  ``checkpoint_every`` steps, at the end, on a budget stop and on SIGINT/SIGTERM;
* ``model.safetensors``: the final model-only checkpoint
  (:func:`causalfuse.checkpoint.save_model`) with the training configuration and
  budget as ``info``;
* ``config.json``: the resolved configuration;
* ``log.csv``: one row per ``log_every`` steps (step, loss terms, learning
  rates, seconds).
"""

from __future__ import annotations

import csv
import dataclasses
import functools
import hashlib
import io as _io
import math
import os
import shutil
import signal
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator

import numpy as np
import torch
from torch.utils.data import DataLoader, Sampler

from .._device import resolve_device
from ..checkpoint import read_metadata, save_model
from ..errors import CausalFuseError
from ..integrity import file_sha256
from ..io import check_writable_folder
from ..losses import FusionLoss
from ..models.net import CausalFusionNet
from . import distributed as dist_utils
from .config import SCHEDULE_KEYS, RESUMABLE_CHANGES, TrainConfig, config_differences, schedule_difference
from .state import load_state, save_state

__all__ = ["train", "TrainResult", "batch_indices", "LOG_FIELDS"]

LOG_FIELDS = ["step", "loss", "intensity", "gradient", "ssim", "lr", "head_lr", "seconds"]
STATE_FILE = "last.safetensors"
MODEL_FILE = "model.safetensors"
CONFIG_FILE = "config.json"
LOG_FILE = "log.csv"


@dataclass
class TrainResult:
    step: int
    elapsed: float
    stopped: str  # "done", "budget", "signal"
    losses: list[float] = field(default_factory=list)
    run_dir: Path | None = None


# ---------------------------------------------------------------------------
# batches as a function of the step


@functools.lru_cache(maxsize=8)
def _epoch_permutation(seed: int, epoch: int, n: int) -> np.ndarray:
    return np.random.default_rng([int(seed), int(epoch), 0x5EED]).permutation(n)


def batch_indices(step: int, batch: int, n: int, seed: int) -> list[tuple[int, int]]:
    """The ``(epoch, index)`` items of global batch ``step``."""
    out = []
    for k in range(step * batch, (step + 1) * batch):
        epoch, pos = divmod(k, n)
        out.append((epoch, int(_epoch_permutation(seed, epoch, n)[pos])))
    return out


class _StepBatches(Sampler):
    """This rank's share of the batches of steps ``start .. stop - 1``."""

    def __init__(self, start: int, stop: int, batch: int, n: int, seed: int, info: dist_utils.DistInfo) -> None:
        self.start, self.stop, self.batch, self.n, self.seed, self.info = start, stop, batch, n, seed, info

    def __iter__(self) -> Iterator[list[tuple[int, int]]]:
        for step in range(self.start, self.stop):
            yield dist_utils.shard(batch_indices(step, self.batch, self.n, self.seed), self.info)

    def __len__(self) -> int:
        return max(0, self.stop - self.start)


def _collate(items: list[dict]) -> dict[str, Any]:
    return {
        "ir": torch.stack([it["ir"] for it in items]),
        "vi": torch.stack([it["vi"] for it in items]),
        "index": [it["index"] for it in items],
    }


# ---------------------------------------------------------------------------
# helpers


def data_hash(pairs: list) -> str:
    """SHA-256 over the names and bytes of every training file (identifies the data)."""
    h = hashlib.sha256()
    for p in sorted(pairs, key=lambda p: p.name):
        h.update(p.name.encode() + b"\0")
        for f in (p.ir, p.vi):
            with open(f, "rb") as fh:
                for chunk in iter(lambda: fh.read(1 << 20), b""):
                    h.update(chunk)
    return h.hexdigest()


def _base_rates(cfg: TrainConfig) -> dict[str, float]:
    """Each parameter group's learning rate before the schedule's factor."""
    return {"encoders": cfg.lr, "head": cfg.head_lr if cfg.head_lr is not None else cfg.lr}


def _set_rates(optimizer: torch.optim.Optimizer, cfg: TrainConfig, step: int) -> None:
    """Both groups' learning rates for the step after ``step`` completed ones (the schedule's factor)."""
    factor, base = cfg.lr_factor(step), _base_rates(cfg)
    for group in optimizer.param_groups:
        group["lr"] = base[group["name"]] * factor


def _param_groups(net: CausalFusionNet, cfg: TrainConfig) -> list[dict[str, Any]]:
    enc = [p for m in (net.encoder_ir, net.encoder_vi) for p in m.parameters() if p.requires_grad]
    head = [p for m in (net.baffm, net.reconstruction) for p in m.parameters() if p.requires_grad]
    base = _base_rates(cfg)
    return [
        {"params": enc, "lr": base["encoders"], "name": "encoders"},
        {"params": head, "lr": base["head"], "name": "head"},
    ]


def _load_init(net: CausalFusionNet, cfg: TrainConfig) -> Path:
    """Start ``net`` from the model checkpoint ``cfg.init`` (a path or a bundled name); returns its file."""
    from ..checkpoint import load_model
    from ..models.methods import BUNDLED, bundled_weights

    path = bundled_weights(BUNDLED[cfg.init]) if cfg.init in BUNDLED and not Path(cfg.init).exists() else Path(cfg.init)
    if not path.is_file():
        raise CausalFuseError(f"--init {cfg.init}: no such model checkpoint (a file, or one of {', '.join(BUNDLED)})")
    start = load_model(path)
    ours, theirs = dataclasses.asdict(cfg.net), dataclasses.asdict(start.config)
    # a narrower reconstruction conv starts a wider one: placed at its centre, the same image at the start
    widen = theirs["reconstruction_kernel"] < ours["reconstruction_kernel"]
    differ = [
        f"net.{k}={theirs[k]} (configured: {ours[k]})"
        for k in sorted(ours)
        if k != "attention_chunk" and ours[k] != theirs[k] and not (k == "reconstruction_kernel" and widen)
    ]
    if differ:
        hint = " (train it with --no-baffm)" if not start.config.use_baffm and cfg.net.use_baffm else ""
        raise CausalFuseError(f"{path}: the checkpoint's network is not the configured one: {'; '.join(differ)}{hint}")
    state = start.state_dict()
    if widen:
        state["reconstruction.conv.weight"] = net.reconstruction.widened(state["reconstruction.conv.weight"])
    net.load_state_dict(state)
    return path


def _install_dictionary(net: CausalFusionNet, cfg: TrainConfig) -> None:
    if cfg.dictionary is None:
        if cfg.init:  # the starting checkpoint's dictionaries
            return
        if cfg.net.use_baffm:
            raise CausalFuseError("training with BAFFM needs a confounder dictionary: give --dictionary FILE")
        return
    from ..dictionary.io import load_dictionaries

    ir, vi = load_dictionaries(cfg.dictionary)
    n, d = cfg.net.dict_size, cfg.net.dict_dim
    for name, dic in (("infrared", ir), ("visible", vi)):
        if (dic.n_clusters, dic.dim) != (n, d):
            raise CausalFuseError(
                f"{cfg.dictionary}: the {name} dictionary has N={dic.n_clusters} prototypes of dimension d={dic.dim}, "
                f"but the configuration asks for N={n}, d={d} (build a matching dictionary, or set "
                f"net.dict_size={dic.n_clusters} net.dict_dim={dic.dim})"
            )
    net.load_dictionary_file(cfg.dictionary)


class _TrainModule(torch.nn.Module):
    """The network as trained: optional head-only warm start and mixed precision.

    Head-only steps run the encoders without autograd (no encoder backward
    pass: about a third of the cost of a full step); wrapping instead of
    toggling ``requires_grad`` keeps the parameter set fixed for
    DistributedDataParallel. Mixed precision (bf16 autocast) covers BAFFM and
    the reconstruction; the fused LRR encoders keep float32 (their kernels
    write into float32 buffers).
    """

    def __init__(self, net: CausalFusionNet, amp_dtype: torch.dtype | None = None) -> None:
        super().__init__()
        self.net = net
        self.amp_dtype = amp_dtype

    def forward(self, ir: torch.Tensor, vi: torch.Tensor, head_only: bool = False) -> torch.Tensor:
        with torch.autocast(ir.device.type, enabled=False), torch.set_grad_enabled(torch.is_grad_enabled() and not head_only):
            z_ir, z_vi = self.net.forward_features(ir, vi)
        if self.amp_dtype is None:
            return self.net.forward_head(z_ir, z_vi)
        with torch.autocast(ir.device.type, dtype=self.amp_dtype):
            return self.net.forward_head(z_ir, z_vi).float()


def _amp_dtype(cfg: TrainConfig, device: torch.device) -> torch.dtype | None:
    use = cfg.amp == "bf16" or (cfg.amp == "auto" and device.type == "cuda")
    return torch.bfloat16 if use else None


class _Log:
    """The CSV log: append + flush per row; on resume, rows past the resumed step are dropped."""

    def __init__(self, path: Path, resume_step: int | None) -> None:
        self.path = path
        if resume_step is None or not path.exists():
            with open(path, "w", newline="") as f:
                csv.writer(f).writerow(LOG_FIELDS)
        else:
            with open(path, newline="") as f:
                rows = list(csv.reader(f))
            keep = [LOG_FIELDS] + [r for r in rows[1:] if r and r[0].isdigit() and int(r[0]) <= resume_step]
            buf = _io.StringIO()
            csv.writer(buf).writerows(keep)
            from ..io import atomic_path

            with atomic_path(path) as tmp:
                tmp.write_text(buf.getvalue())
        self.file = open(path, "a", newline="")
        self.writer = csv.writer(self.file)

    def write(self, row: list[Any]) -> None:
        self.writer.writerow(row)
        self.file.flush()

    def close(self) -> None:
        self.file.close()


class _StopRequest:
    """SIGINT/SIGTERM set a flag; the loop checkpoints and leaves after the current step."""

    def __init__(self) -> None:
        self.signal: int | None = None
        self._old: dict[int, Any] = {}

    def __enter__(self) -> "_StopRequest":
        for sig in (signal.SIGINT, signal.SIGTERM):
            try:
                self._old[sig] = signal.signal(sig, self._handle)
            except ValueError:  # not the main thread
                pass
        return self

    def _handle(self, signum: int, frame: Any) -> None:
        if self.signal is not None:  # a second signal: give up at once
            raise KeyboardInterrupt
        self.signal = signum

    def __exit__(self, *exc: Any) -> None:
        for sig, old in self._old.items():
            signal.signal(sig, old)


def _fmt(x: float) -> str:
    return repr(float(x))


# ---------------------------------------------------------------------------


def train(cfg: TrainConfig, *, resume: bool = False, stop_after: int | None = None) -> TrainResult:
    """Train CausalFusionNet with ``cfg`` (see :class:`TrainConfig`).

    Args:
        cfg: the configuration.
        resume: continue from ``<output>/last.safetensors``.
        stop_after: leave after this many steps of this session, as an
            interruption would (checkpoint written, no final model); for tests.

    Returns:
        a :class:`TrainResult` (rank 0's view; other ranks the same step).

    Raises:
        CausalFuseError: bad data, dictionary of another size, LRRNet file
            not matching the spec, resume from a checkpoint of another
            configuration (the differences listed), existing run without
            ``resume``.
    """
    cfg.validate()
    if cfg.threads:
        torch.set_num_threads(int(cfg.threads))
    device = resolve_device(cfg.device)
    info = dist_utils.init(device)
    if info.enabled and device.type == "cuda":
        device = torch.device("cuda", info.local_rank)
        torch.cuda.set_device(device)
    run = Path(cfg.output)
    created = info.is_main and not run.exists()
    try:
        return _train(cfg, device, info, resume=resume, stop_after=stop_after)
    except BaseException:
        # A run that failed before its first checkpoint leaves no folder behind
        # (only one this call created: a user's existing folder is left alone).
        if created and run.is_dir() and not (run / STATE_FILE).exists():
            shutil.rmtree(run, ignore_errors=True)
        raise
    finally:
        dist_utils.shutdown(info)


def _train(cfg: TrainConfig, device: torch.device, info: dist_utils.DistInfo, *, resume: bool, stop_after: int | None) -> TrainResult:
    from ..data.dataset import PairedDataset

    run = Path(cfg.output)
    state_path = run / STATE_FILE
    if info.is_main:
        check_writable_folder(run)  # before the data and the network are loaded
        if not resume and state_path.exists():
            raise CausalFuseError(f"{run} already holds a training run ({state_path}): use --resume to continue it, or another -o")
        run.mkdir(parents=True, exist_ok=True)

    dataset = PairedDataset(cfg.data, crop=cfg.crop, flips=cfg.flips, gamma=cfg.gamma_aug, seed=cfg.seed, cache=True)
    if cfg.batch % info.world:
        raise CausalFuseError(f"batch {cfg.batch} does not split evenly over {info.world} processes: choose a multiple")

    torch.manual_seed(cfg.seed)
    net = CausalFusionNet(cfg.net)
    init_file = None
    if cfg.init:
        init_file = _load_init(net, cfg)
    elif cfg.lrrnet_weights:
        net.load_lrrnet(cfg.lrrnet_weights)
    _install_dictionary(net, cfg)
    net.to(device).train()
    if cfg.head_init == "lstsq" and not resume:
        from .head_init import fit_reconstruction

        fit = fit_reconstruction(
            net, dataset, cfg.loss, crops=cfg.head_init_crops, pixels=cfg.head_init_pixels, ridge=cfg.head_init_ridge, seed=cfg.seed, device=device,
            progress=cfg.progress and info.is_main,
        )
        if info.is_main and cfg.progress:
            print(f"reconstruction fitted by least squares: {fit.samples} pixels of {cfg.head_init_crops} crops, "
                  f"ridge {fit.ridge:g}, pre-tanh RMS residual {fit.rmse:.4f}", flush=True)
    optimizer = torch.optim.Adam(_param_groups(net, cfg), lr=cfg.lr, betas=tuple(cfg.betas))

    config_dict = cfg.to_dict()
    start, elapsed_before = 0, 0.0
    if resume:
        state = load_state(state_path)
        # Data folders compare as real paths: a relative and an absolute
        # spelling of the same folder is the same run.
        saved = TrainConfig.with_legacy_defaults(dict(state.config, data=[os.path.realpath(d) for d in state.config.get("data", [])]))
        diffs = config_differences(saved, dict(config_dict, data=[os.path.realpath(d) for d in config_dict["data"]]),
                                   ignore=RESUMABLE_CHANGES | set(SCHEDULE_KEYS))
        schedule = schedule_difference(saved, config_dict, state.step)
        if schedule:
            diffs.append(schedule)
        if diffs:
            raise CausalFuseError(f"{state_path}: checkpoint of another configuration: " + "; ".join(diffs))
        if cfg.dictionary is not None or cfg.net.use_baffm:
            for key in ("baffm.ir.dictionary", "baffm.vi.dictionary"):
                if key in state.model and not torch.equal(state.model[key], net.state_dict()[key].cpu()):
                    raise CausalFuseError(f"{state_path}: the dictionary {cfg.dictionary} differs from the one this run was trained with")
        try:
            net.load_state_dict(state.model)
            optimizer.load_state_dict(state.optimizer)
        except (RuntimeError, ValueError, KeyError) as exc:
            raise CausalFuseError(f"{state_path}: the checkpoint does not fit the network/optimizer ({exc})") from None
        torch.set_rng_state(state.rng["torch"])
        start, elapsed_before = state.step, state.elapsed
    if info.is_main:
        cfg.save(run / CONFIG_FILE)

    model: torch.nn.Module = _TrainModule(net, _amp_dtype(cfg, device))
    if info.enabled:
        from torch.nn.parallel import DistributedDataParallel

        model = DistributedDataParallel(
            model,
            device_ids=[device.index] if device.type == "cuda" else None,
            find_unused_parameters=cfg.head_only_steps > 0,
        )

    loss_fn = FusionLoss(cfg.loss)
    log = _Log(run / LOG_FILE, start if resume else None) if info.is_main else None
    stop_at = cfg.steps if stop_after is None else min(cfg.steps, start + stop_after)
    if cfg.num_workers == 0:
        dataset.preload(progress=False)
    loader = DataLoader(
        dataset,
        batch_sampler=_StepBatches(start, stop_at, cfg.batch, len(dataset), cfg.seed, info),
        num_workers=cfg.num_workers,
        collate_fn=_collate,
        persistent_workers=False,
    )

    from tqdm.auto import tqdm

    bar = tqdm(total=cfg.steps, initial=start, desc="train", unit="step", disable=not (cfg.progress and info.is_main), dynamic_ncols=True)
    budget = None if cfg.max_minutes is None else cfg.max_minutes * 60.0
    t0 = time.perf_counter()
    step, losses, stopped = start, [], "done"
    last_step_time = 0.0

    def checkpoint() -> None:
        if info.is_main:
            save_state(state_path, net=net, optimizer=optimizer, step=step, elapsed=elapsed_before + time.perf_counter() - t0, config=config_dict)

    with _StopRequest() as stop:
        for batch in loader:
            ts = time.perf_counter()
            ir = batch["ir"].to(device, non_blocking=True)
            vi = batch["vi"].to(device, non_blocking=True)
            _set_rates(optimizer, cfg, step)
            try:
                fused = model(ir, vi, head_only=step < cfg.head_only_steps)
                terms = loss_fn(fused.float(), ir, vi)
                optimizer.zero_grad(set_to_none=True)
                terms["loss"].backward()
                optimizer.step()
            except torch.cuda.OutOfMemoryError:
                raise CausalFuseError(
                    f"out of GPU memory on {device} at step {step + 1} with batch {cfg.batch} of {cfg.crop} x {cfg.crop} "
                    f"crops: lower --batch or --crop (or train on more GPUs with torchrun); the last checkpoint is {state_path}"
                ) from None
            step += 1
            last_step_time = time.perf_counter() - ts
            values = dist_utils.all_mean(torch.stack([terms[k].detach() for k in ("loss", "intensity", "gradient", "ssim")]).float(), info)
            values = values.cpu().tolist()
            losses.append(values[0])
            seconds = elapsed_before + time.perf_counter() - t0
            if not math.isfinite(values[0]):  # keep the last good checkpoint
                raise CausalFuseError(
                    f"the loss became {values[0]} at step {step}; lower the learning rate "
                    f"(the last good state is in {state_path}, if one was written)"
                )
            if log is not None and (step % cfg.log_every == 0 or step == stop_at):
                log.write([step, *map(_fmt, values), _fmt(optimizer.param_groups[0]["lr"]), _fmt(optimizer.param_groups[1]["lr"]), f"{seconds:.3f}"])
            bar.update(1)
            bar.set_postfix(loss=f"{values[0]:.4f}", s_per_step=f"{last_step_time:.2f}", img_s=f"{cfg.batch / max(last_step_time, 1e-9):.2f}")
            if step % cfg.checkpoint_every == 0:
                checkpoint()
            over_budget = budget is not None and seconds + last_step_time > budget
            flag = dist_utils.any_flag(stop.signal is not None or over_budget, info, device)
            if flag and step < stop_at:
                stopped = "signal" if stop.signal is not None else "budget"
                break
    bar.close()
    dist_utils.check_in_sync(net, info, device)
    elapsed = elapsed_before + time.perf_counter() - t0
    checkpoint()
    if log is not None:
        log.close()
    if info.is_main and (stopped in ("done", "budget")) and (stop_after is None or step >= cfg.steps):
        save_model(
            run / MODEL_FILE,
            net,
            info={
                "train_config": config_dict,
                "budget": {
                    "steps": step,
                    "crop": cfg.crop,
                    "batch": cfg.batch,
                    "images_seen": step * cfg.batch,
                    "wall_seconds": round(elapsed, 1),
                    "stopped": stopped,
                    "processes": info.world,
                    "device": str(device),
                    "pairs": len(dataset),
                    "data_hash": data_hash(dataset.pairs),
                },
                "init_sha256": None if init_file is None else file_sha256(init_file),
                # the starting model's own record (its recipe, budget and, in turn, its start)
                "init_info": None if init_file is None else read_metadata(init_file)["info"],
                "loss": cfg.loss.__dict__,
                "final_loss": losses[-1] if losses else None,
            },
        )
    return TrainResult(step=step, elapsed=elapsed, stopped=stopped, losses=losses, run_dir=run)
