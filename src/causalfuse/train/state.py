"""Training-state checkpoints: everything needed to resume exactly, in one safetensors file.

Tensors:

* ``model.<name>``: the network's state dict (weights and both confounder
  dictionaries, which are buffers);
* ``optim.<index>.<key>``: the optimizer's per-parameter state (Adam's
  ``step``, ``exp_avg``, ``exp_avg_sq``), by the optimizer's parameter index;
* ``rng.torch`` (and ``rng.cuda.<i>``): random generator states as uint8 tensors.

Metadata (strings): ``format``, ``config`` (the resolved training
configuration, JSON), ``step``, ``elapsed`` (training seconds so far),
``param_groups`` (the optimizer's hyper-parameters, JSON), ``dictionary``
(provenance), ``tensors_sha256`` (checked on loading, with the tensors'
finiteness). Never a pickle. Written atomically (temporary file, then
rename): an interrupted or failed write leaves the previous file intact.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from ..errors import CausalFuseError
from ..integrity import CHECKSUM_KEY, check_tensors, tensors_sha256
from ..io import atomic_path
from ..models.net import NetConfig

__all__ = ["STATE_FORMAT", "TrainState", "save_state", "load_state", "read_state_metadata", "export_model"]

STATE_FORMAT = "causalfuse-train-state/1"


@dataclass
class TrainState:
    """What :func:`load_state` returns."""

    step: int
    elapsed: float
    config: dict[str, Any]
    model: dict[str, torch.Tensor]
    optimizer: dict[str, Any]
    rng: dict[str, torch.Tensor]
    dictionary: dict[str, Any] = field(default_factory=dict)


def save_state(
    path: str | os.PathLike,
    *,
    net: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    step: int,
    elapsed: float,
    config: dict[str, Any],
) -> Path:
    """Write a training-state checkpoint of ``net`` and ``optimizer`` after ``step`` steps."""
    tensors: dict[str, torch.Tensor] = {}
    for k, v in net.state_dict().items():
        tensors[f"model.{k}"] = v.detach().to("cpu").contiguous().clone()
    opt = optimizer.state_dict()
    for index, st in opt["state"].items():
        for key, value in st.items():
            if not torch.is_tensor(value):
                value = torch.tensor(value, dtype=torch.float64)
            tensors[f"optim.{index}.{key}"] = value.detach().to("cpu").contiguous().clone()
    tensors["rng.torch"] = torch.get_rng_state().clone()
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        for i, s in enumerate(torch.cuda.get_rng_state_all()):
            tensors[f"rng.cuda.{i}"] = s.clone()
    metadata = {
        "format": STATE_FORMAT,
        "config": json.dumps(config, sort_keys=True),
        "step": str(int(step)),
        "elapsed": repr(float(elapsed)),
        "param_groups": json.dumps(opt["param_groups"], sort_keys=True),
        "dictionary": json.dumps(getattr(net, "dictionary_provenance", {}), sort_keys=True, default=str),
        CHECKSUM_KEY: tensors_sha256(tensors),
    }
    path = Path(path)
    with atomic_path(path) as tmp:
        save_file(tensors, str(tmp), metadata=metadata)
    return path


def read_state_metadata(path: str | os.PathLike) -> dict[str, str]:
    from ..checkpoint import read_safetensors_metadata

    meta = read_safetensors_metadata(
        path, expect_format=STATE_FORMAT, what="causalfuse training-state checkpoint", missing="no training-state checkpoint to resume from"
    )
    return meta


def load_state(path: str | os.PathLike) -> TrainState:
    """Read a checkpoint written by :func:`save_state`.

    Raises:
        CausalFuseError: missing, unreadable or foreign file, damaged metadata,
            tensors that do not match their checksum or are not finite.
    """
    meta = read_state_metadata(path)
    try:
        tensors = load_file(str(path))
    except (SafetensorError, OSError, ValueError) as exc:
        raise CausalFuseError(f"{path}: checkpoint tensors cannot be read (corrupted file: {exc})") from None
    check_tensors(tensors, path, meta.get(CHECKSUM_KEY))
    try:
        config = json.loads(meta["config"])
        if isinstance(config.get("net"), dict):
            config["net"] = NetConfig.with_legacy_defaults(config["net"])
        step = int(meta["step"])
        elapsed = float(meta["elapsed"])
        groups = json.loads(meta["param_groups"])
        dictionary = json.loads(meta.get("dictionary", "{}"))
    except (KeyError, ValueError) as exc:
        raise CausalFuseError(f"{path}: checkpoint metadata is damaged ({exc})") from None
    model = {k[len("model.") :]: v for k, v in tensors.items() if k.startswith("model.")}
    state: dict[int, dict[str, torch.Tensor]] = {}
    for k, v in tensors.items():
        if k.startswith("optim."):
            _, index, key = k.split(".", 2)
            state.setdefault(int(index), {})[key] = v
    for group in groups:  # JSON turns tuples into lists
        if isinstance(group.get("betas"), list):
            group["betas"] = tuple(group["betas"])
    rng = {k[len("rng.") :]: v for k, v in tensors.items() if k.startswith("rng.")}
    return TrainState(
        step=step,
        elapsed=elapsed,
        config=config,
        model=model,
        optimizer={"state": state, "param_groups": groups},
        rng=rng,
        dictionary=dictionary,
    )


def export_model(state_path: str | os.PathLike, model_path: str | os.PathLike) -> Path:
    """Write the network of a training-state checkpoint as a model checkpoint.

    For evaluating a run midway, or shipping one that was stopped before its
    final ``model.safetensors``. ``info`` records the configuration and the step.
    """
    from ..checkpoint import save_model
    from ..models.net import CausalFusionNet, NetConfig

    state = load_state(state_path)
    net = CausalFusionNet(NetConfig.from_dict(state.config.get("net", {})))
    try:
        net.load_state_dict(state.model)
    except RuntimeError as exc:
        raise CausalFuseError(f"{state_path}: the network tensors do not fit its configuration ({exc})") from None
    net.dictionary_provenance = state.dictionary
    info = {
        "train_config": state.config,
        "budget": {"steps": state.step, "wall_seconds": round(state.elapsed, 1), "stopped": "exported from a training state",
                   "crop": state.config.get("crop"), "batch": state.config.get("batch")},
    }
    return save_model(model_path, net, info=info)
