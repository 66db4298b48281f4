"""The typed training configuration.

:class:`TrainConfig` holds everything that determines a training run; its
defaults are the paper's recipe (LRRNet-initialised encoders, 256 x 256 crops
with flips, batch 6, Adam with learning rate 1e-4). It is read from a JSON or
TOML file, overridden from the command line (``--set key=value``, dotted
keys for nested fields such as ``net.d_k`` or ``loss.gradient``), and the
resolved configuration is written beside every checkpoint (``config.json``)
and inside it (metadata).
"""

from __future__ import annotations

import json
import math
import os
import tomllib
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any, Literal

from ..errors import CausalFuseError
from ..losses import LossWeights
from ..models.net import NetConfig
from .head_init import HEAD_INITS

__all__ = ["TrainConfig", "load_config_file", "apply_overrides", "RESUMABLE_CHANGES", "config_differences", "lr_factor", "schedule_difference"]

#: Fields that may differ between a checkpoint and the run resuming it: they
#: change how long or where a run goes, not what it computes.
#: ``dictionary`` is a path: the resumed run checks the prototypes themselves.
RESUMABLE_CHANGES = frozenset({"dictionary", "steps", "max_minutes", "checkpoint_every", "log_every", "num_workers", "output", "progress", "device", "threads"})


#: The learning-rate schedule's fields: a run may resume under another
#: schedule when every step it has taken had the same rates under both
#: (e.g. a decay added from the checkpoint's step on).
SCHEDULE_KEYS = ("lr_decay_start", "lr_decay_end", "lr_final")


def lr_factor(step: int, start: int | None, end: int | None, final: float) -> float:
    """Learning-rate factor after ``step`` completed steps: 1 until ``start``,
    a half cosine down to ``final`` at ``end``, ``final`` after (constant 1 when
    ``start`` is None)."""
    if start is None or step < start:
        return 1.0
    if step >= end:
        return float(final)
    t = (step - start) / (end - start)
    return final + (1.0 - final) * 0.5 * (1.0 + math.cos(math.pi * t))


def schedule_difference(saved: dict[str, Any], current: dict[str, Any], steps_taken: int) -> str | None:
    """Why a run trained under ``saved``'s schedule cannot go on under ``current``'s, or None.

    It can when the two schedules gave the same rates to every one of the
    ``steps_taken`` steps already taken.
    """
    a = tuple(saved.get(k, TrainConfig.LEGACY_DEFAULTS[k]) for k in SCHEDULE_KEYS)
    b = tuple(current.get(k, TrainConfig.LEGACY_DEFAULTS[k]) for k in SCHEDULE_KEYS)
    if a == b:
        return None
    for step in range(steps_taken):
        if lr_factor(step, *a) != lr_factor(step, *b):
            return (f"learning-rate schedule (decay start, end, final factor): {a} -> {b} changes the rate of step {step + 1}, "
                    f"which was already taken (a new decay may start at step {steps_taken} or later)")
    return None


@dataclass
class TrainConfig:
    """Everything that determines a training run.

    Attributes:
        data: dataset roots (any layout :mod:`causalfuse.data.paired` knows).
        dictionary: confounder dictionary file (``causalfuse dictionary build``).
        lrrnet_weights: LRRNet's published weights, to initialise the encoders
            (None: random encoders, e.g. for tests).
        init: a model checkpoint whose weights start the run instead (a path,
            or ``causalfuse`` / ``causalfuse-nobaffm`` for the bundled ones):
            fine-tuning a trained network, e.g. on one's own cameras' pairs.
            Its network must be the configured one; its dictionaries are kept
            unless ``dictionary`` is given. The optimizer and the step count
            start afresh.
        output: run directory (checkpoints, log, configuration).
        crop: side of the random square crops.
        batch: global batch size (split across processes with torchrun).
        lr: Adam learning rate (the paper: 1e-4).
        head_lr: learning rate of BAFFM and the reconstruction conv; None
            uses ``lr`` for every parameter (the paper's single rate).
        head_only_steps: a warm start: the first steps train BAFFM and the
            reconstruction only (encoders frozen, no encoder backward pass, about
            a third of the cost of a full step). 0 (the default) follows the paper.
        lr_decay_start: step at which both learning rates start to fall
            (None: constant rates, the recipe of the weights bundled before).
        lr_decay_end: step at which the fall ends; the rates fall from their
            values to ``lr_final`` times them along a half cosine between the
            two steps, and stay there after. Both are counted from the start
            of the run, not from a resume, so a snapshot's rates do not
            depend on ``steps``.
        lr_final: the rates' factor at ``lr_decay_end`` (0 to 1).
        betas: Adam betas.
        steps: optimisation steps.
        max_minutes: wall-time budget; the run stops cleanly with its final
            checkpoints when it is spent (None: no budget).
        seed: seed of the initialisation, batch order and augmentation.
        flips: random horizontal and vertical flips.
        gamma_aug: brightness augmentation strength: each crop's infrared
            and visible luminance raised to independent powers, log-uniform
            in ``[exp(-g), exp(g)]`` (0: none, the first recipe;
            :class:`causalfuse.data.dataset.PairedDataset`).
        loss: weights of the loss terms and the intensity target
            (:class:`causalfuse.losses.LossWeights`).
        head_init: start of the reconstruction conv: ``random`` (PyTorch's
            default initialisation, the first recipe) or ``lstsq``, the
            least-squares fit of the intensity target on the starting codes
            (:mod:`causalfuse.train.head_init`).
        head_init_crops: training crops the ``lstsq`` fit samples pixels from.
        head_init_pixels: pixels it draws from each crop.
        head_init_ridge: its Tikhonov weight, relative to a feature's mean energy.
        checkpoint_every: steps between training-state checkpoints.
        log_every: steps between CSV log rows.
        device: ``auto``, ``cpu`` or ``cuda[:N]``.
        amp: mixed precision: ``auto`` (bf16 autocast on CUDA, off on CPU),
            ``bf16`` (also on CPU) or ``off``.
        num_workers: DataLoader worker processes.
        threads: torch intra-op threads (None: torch's default).
        progress: show a progress bar.
        net: network hyper-parameters.
    """

    data: list[str] = field(default_factory=list)
    dictionary: str | None = None
    lrrnet_weights: str | None = None
    init: str | None = None
    output: str = "run"
    crop: int = 256
    batch: int = 6
    lr: float = 1e-4
    head_lr: float | None = None
    head_only_steps: int = 0
    lr_decay_start: int | None = None
    lr_decay_end: int | None = None
    lr_final: float = 0.0
    betas: tuple[float, float] = (0.9, 0.999)
    steps: int = 10000
    max_minutes: float | None = None
    seed: int = 0
    flips: bool = True
    gamma_aug: float = 0.0
    loss: LossWeights = field(default_factory=LossWeights)
    head_init: Literal["random", "lstsq"] = "random"
    head_init_crops: int = 192
    head_init_pixels: int = 4096
    head_init_ridge: float = 1e-3
    checkpoint_every: int = 50
    log_every: int = 1
    device: str = "auto"
    amp: Literal["auto", "bf16", "off"] = "auto"
    num_workers: int = 0
    threads: int | None = None
    progress: bool = True
    net: NetConfig = field(default_factory=NetConfig)

    def validate(self) -> "TrainConfig":
        if not self.data:
            raise CausalFuseError("no training data: give --data DIR [DIR ...]")
        for name in ("crop", "batch", "steps", "checkpoint_every", "log_every"):
            if int(getattr(self, name)) < 1:
                raise CausalFuseError(f"{name} must be a positive integer, got {getattr(self, name)!r}")
        if self.lr <= 0 or (self.head_lr is not None and self.head_lr <= 0):
            raise CausalFuseError(f"learning rates must be positive, got lr={self.lr}, head_lr={self.head_lr}")
        if self.init is not None and self.lrrnet_weights is not None:
            raise CausalFuseError("give --init (a trained model to start from) or --lrrnet-weights (LRRNet's encoders), not both")
        if (self.lr_decay_start is None) != (self.lr_decay_end is None):
            raise CausalFuseError("lr_decay_start and lr_decay_end go together: give both steps, or neither for constant rates")
        if self.lr_decay_start is not None and not 0 <= self.lr_decay_start < self.lr_decay_end:
            raise CausalFuseError(f"the learning-rate decay must start before it ends, at a step >= 0; got {self.lr_decay_start} to {self.lr_decay_end}")
        if not 0.0 <= self.lr_final <= 1.0:
            raise CausalFuseError(f"lr_final is a factor from 0 to 1, got {self.lr_final}")
        if self.amp not in ("auto", "bf16", "off"):
            raise CausalFuseError(f"amp must be auto, bf16 or off, got {self.amp!r}")
        if self.max_minutes is not None and self.max_minutes <= 0:
            raise CausalFuseError(f"max_minutes must be positive, got {self.max_minutes}")
        if self.gamma_aug < 0:
            raise CausalFuseError(f"gamma_aug must be >= 0, got {self.gamma_aug}")
        if self.head_init not in HEAD_INITS:
            raise CausalFuseError(f"head_init must be {' or '.join(HEAD_INITS)}, got {self.head_init!r}")
        if self.head_init_crops < 1 or self.head_init_pixels < 1 or self.head_init_ridge < 0:
            raise CausalFuseError(
                f"head_init_crops and head_init_pixels must be >= 1 and head_init_ridge >= 0, "
                f"got {self.head_init_crops}, {self.head_init_pixels}, {self.head_init_ridge}"
            )
        if self.head_only_steps < 0:
            raise CausalFuseError(f"head_only_steps must be >= 0, got {self.head_only_steps}")
        if self.num_workers < 0:
            raise CausalFuseError(f"num_workers must be >= 0, got {self.num_workers}")
        return self

    def lr_factor(self, step: int) -> float:
        """The factor of both learning rates for the step after ``step`` completed ones."""
        return lr_factor(step, self.lr_decay_start, self.lr_decay_end, self.lr_final)

    # -- (de)serialisation ----------------------------------------------------
    #: Values of fields added after the first release, for configurations
    #: saved before them (they have no such key).
    LEGACY_DEFAULTS = {"init": None, "lr_decay_start": None, "lr_decay_end": None, "lr_final": 0.0, "gamma_aug": 0.0, "head_init": "random", "head_init_crops": 192, "head_init_pixels": 4096, "head_init_ridge": 1e-3}

    @classmethod
    def with_legacy_defaults(cls, data: dict[str, Any]) -> dict[str, Any]:
        """A saved configuration dict with the values older runs were trained with filled in."""
        out = {**cls.LEGACY_DEFAULTS, **data}
        if isinstance(out.get("net"), dict):  # runs from before net.reconstruction_kernel had the 3x3 conv
            out["net"] = {"reconstruction_kernel": 3, **out["net"]}
        if isinstance(out.get("loss"), dict):
            out["loss"] = {**LossWeights.LEGACY_DEFAULTS, **out["loss"]}
        return out

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["betas"] = list(self.betas)
        return d

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), sort_keys=True, indent=2)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "TrainConfig":
        data = dict(data)
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise CausalFuseError(f"unknown training configuration keys: {', '.join(unknown)}")
        if "net" in data and isinstance(data["net"], dict):
            data["net"] = NetConfig.from_dict(data["net"])
        if "loss" in data and isinstance(data["loss"], dict):
            data["loss"] = LossWeights.from_dict(data["loss"])
        if "betas" in data:
            data["betas"] = tuple(float(b) for b in data["betas"])
        if "data" in data and isinstance(data["data"], (str, os.PathLike)):
            data["data"] = [str(data["data"])]
        return cls(**data)

    def save(self, path: str | os.PathLike) -> Path:
        from ..io import atomic_path

        path = Path(path)
        with atomic_path(path) as tmp:
            tmp.write_text(self.to_json() + "\n")
        return path


def load_config_file(path: str | os.PathLike) -> dict[str, Any]:
    """Read a JSON (``.json``) or TOML (anything else) configuration file as a dict."""
    path = Path(path)
    if not path.is_file():
        raise CausalFuseError(f"{path}: no such configuration file")
    text = path.read_text()
    try:
        if path.suffix.lower() == ".json":
            data = json.loads(text)
        else:
            data = tomllib.loads(text)
    except (json.JSONDecodeError, tomllib.TOMLDecodeError) as exc:
        raise CausalFuseError(f"{path}: cannot parse the configuration ({exc})") from None
    if not isinstance(data, dict):
        raise CausalFuseError(f"{path}: the configuration must be a table/object of keys")
    return data


def _parse_value(text: str, current: Any, where: str) -> Any:
    """Parse a command-line value like the field it replaces (JSON first, then plain string)."""
    if text.lower() in ("none", "null"):
        return None
    try:
        value = json.loads(text)
    except json.JSONDecodeError:
        value = text
    if isinstance(current, bool):
        if isinstance(value, str) and value.lower() in ("true", "yes", "on", "1", "false", "no", "off", "0"):
            return value.lower() in ("true", "yes", "on", "1")
        if not isinstance(value, bool):
            raise CausalFuseError(f"--set {where}: expected true or false, got {text!r}")
    elif isinstance(current, float) and isinstance(value, (int, float)) and not isinstance(value, bool):
        return float(value)
    elif isinstance(current, int) and not isinstance(current, bool) and not isinstance(value, int):
        raise CausalFuseError(f"--set {where}: expected an integer, got {text!r}")
    return value


def apply_overrides(data: dict[str, Any], overrides: list[str]) -> dict[str, Any]:
    """Apply ``key=value`` overrides (dotted keys for nested fields) to a config dict."""
    data = json.loads(json.dumps(data))  # deep copy
    defaults = TrainConfig().to_dict()
    for item in overrides:
        if "=" not in item:
            raise CausalFuseError(f"--set expects key=value, got {item!r}")
        key, text = item.split("=", 1)
        parts = key.strip().split(".")
        target, ref = data, defaults
        for p in parts[:-1]:
            if not isinstance(ref.get(p), dict):
                raise CausalFuseError(f"--set {key}: {p!r} is not a nested section of the configuration")
            target = target.setdefault(p, {})
            ref = ref[p]
        last = parts[-1]
        if last not in ref:
            raise CausalFuseError(f"--set {key}: unknown configuration key (known here: {', '.join(sorted(ref))})")
        target[last] = _parse_value(text.strip(), ref[last], key)
    return data


def config_differences(saved: dict[str, Any], current: dict[str, Any], *, ignore: frozenset[str] = RESUMABLE_CHANGES) -> list[str]:
    """``key: saved -> current`` for every field that differs (dotted keys), except ``ignore``."""
    out: list[str] = []

    def walk(a: Any, b: Any, prefix: str) -> None:
        if isinstance(a, dict) and isinstance(b, dict):
            for k in sorted(set(a) | set(b)):
                if not prefix and k in ignore:
                    continue
                walk(a.get(k), b.get(k), f"{prefix}{k}" if not prefix else f"{prefix}.{k}")
        elif a != b:
            out.append(f"{prefix}: {a!r} -> {b!r}")

    walk(saved, current, "")
    return out

