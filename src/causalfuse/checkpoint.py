"""Model checkpoints: one safetensors file, never a pickle.

A checkpoint holds every tensor of :class:`CausalFusionNet` (weights and both
confounder dictionaries, which are buffers) and, as string metadata, the
network configuration, the dictionaries' provenance and free-form
information (e.g. the training configuration and budget), and the SHA-256
of the tensors, checked with their finiteness whenever it is loaded.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from .errors import CausalFuseError
from .integrity import CHECKSUM_KEY, check_tensors, tensors_sha256
from .io import atomic_path

__all__ = ["FORMAT", "save_model", "load_model", "read_metadata"]

FORMAT = "causalfuse-model/1"


def save_model(path: str | os.PathLike, net: "torch.nn.Module", *, info: dict[str, Any] | None = None) -> Path:
    """Write ``net`` (a CausalFusionNet) to ``path`` atomically.

    Args:
        path: the ``.safetensors`` file to write.
        net: the network.
        info: JSON-serialisable extra metadata (training configuration, ...).
    """
    tensors = {k: v.detach().to("cpu").contiguous().clone() for k, v in net.state_dict().items()}
    metadata = {
        "format": FORMAT,
        "config": net.config.to_json(),
        "dictionary": json.dumps(net.dictionary_provenance, sort_keys=True, default=str),
        "info": json.dumps(info or {}, sort_keys=True, default=str),
        CHECKSUM_KEY: tensors_sha256(tensors),
    }
    path = Path(path)
    with atomic_path(path) as tmp:
        save_file(tensors, str(tmp), metadata=metadata)
    return path


def read_safetensors_metadata(path: str | os.PathLike, *, expect_format: str, what: str, missing: str) -> dict[str, str]:
    """The raw string metadata of a safetensors file whose ``format`` must be ``expect_format``.

    Args:
        what: what the file should be, for messages ("causalfuse model checkpoint").
        missing: the message for a missing file ("no such checkpoint file").
    """
    from safetensors import safe_open

    path = Path(path)
    if not path.is_file():
        raise CausalFuseError(f"{path}: {missing}")
    try:
        with safe_open(str(path), framework="pt") as f:
            raw = f.metadata() or {}
    except (SafetensorError, OSError, ValueError) as exc:
        raise CausalFuseError(f"{path}: not a readable safetensors checkpoint (corrupted or another format: {exc})") from None
    if raw.get("format") != expect_format:
        raise CausalFuseError(f"{path}: not a {what} (format {raw.get('format')!r}, expected {expect_format!r})")
    return raw


def read_metadata(path: str | os.PathLike) -> dict[str, Any]:
    """The decoded metadata of a checkpoint: format, config, dictionary, info, and the tensors' checksum (None in older files)."""
    raw = read_safetensors_metadata(path, expect_format=FORMAT, what="causalfuse model checkpoint", missing="no such checkpoint file")
    try:
        return {
            "format": raw["format"],
            "config": json.loads(raw["config"]),
            "dictionary": json.loads(raw.get("dictionary", "{}")),
            "info": json.loads(raw.get("info", "{}")),
            "checksum": raw.get(CHECKSUM_KEY),
        }
    except (KeyError, json.JSONDecodeError) as exc:
        raise CausalFuseError(f"{path}: checkpoint metadata is damaged ({exc})") from None


def load_model(path: str | os.PathLike, *, device: str | torch.device = "cpu", use_baffm: bool | None = None) -> "torch.nn.Module":
    """Rebuild a CausalFusionNet from a checkpoint written by :func:`save_model`.

    Args:
        path: the checkpoint.
        device: where to put the network.
        use_baffm: override the checkpoint's flag (False runs the "without
            BAFFM" variant of a network trained with it).

    Raises:
        CausalFuseError: missing, corrupted or foreign file; tensors that do not
            match their stored checksum, are not finite, or do not fit the
            configuration stored with them.
    """
    from .models.lrr import state_mismatch
    from .models.net import CausalFusionNet, NetConfig

    meta = read_metadata(path)
    config = NetConfig.from_dict(NetConfig.with_legacy_defaults(meta["config"]))
    if use_baffm is not None:
        config.use_baffm = use_baffm
    net = CausalFusionNet(config)
    try:
        tensors = load_file(str(path))
    except (SafetensorError, OSError, ValueError) as exc:
        raise CausalFuseError(f"{path}: checkpoint tensors cannot be read (corrupted file: {exc})") from None
    check_tensors(tensors, path, meta["checksum"])
    missing, unexpected, wrong = state_mismatch(tensors, {k: tuple(v.shape) for k, v in net.state_dict().items()})
    if missing or unexpected or wrong:
        parts = []
        if missing:
            parts.append(f"missing {', '.join(missing[:5])}")
        if unexpected:
            parts.append(f"unexpected {', '.join(unexpected[:5])}")
        if wrong:
            parts.append("shape mismatch " + ", ".join(wrong[:5]))
        raise CausalFuseError(f"{path}: tensors do not match the configuration stored with them ({'; '.join(parts)})")
    net.load_state_dict(tensors)
    net.dictionary_provenance = meta["dictionary"]
    net.checkpoint_info = meta["info"]
    return net.to(device).eval()
