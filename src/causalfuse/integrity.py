"""Content checks: checksums of files and of tensors, finite values.

A checkpoint stores the SHA-256 of its tensors' bytes in its metadata when it
is written and is refused when they no longer match (flipped bytes on a disk,
a truncated copy, a hand-edited tensor); every floating tensor must also be
finite. Files are identified by the SHA-256 of their content, so a checkpoint
replaced at the same path is a different method, and a checkpoint copied
elsewhere is the same one.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Mapping
from pathlib import Path

import numpy as np
import torch

from .errors import CausalFuseError

__all__ = ["CHECKSUM_KEY", "file_sha256", "tensors_sha256", "check_tensors"]

#: Metadata key of the tensors' checksum in the package's safetensors files.
CHECKSUM_KEY = "tensors_sha256"

_CHUNK = 1 << 20


def file_sha256(path: str | os.PathLike) -> str:
    """The SHA-256 of a file's bytes, as 64 hex digits."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(_CHUNK):
            h.update(block)
    return h.hexdigest()


def _raw_bytes(t: torch.Tensor | np.ndarray) -> memoryview:
    if isinstance(t, np.ndarray):
        return memoryview(np.ascontiguousarray(t)).cast("B")
    flat = t.detach().to("cpu").contiguous().reshape(-1)
    return memoryview(flat.view(torch.uint8).numpy())


def tensors_sha256(tensors: Mapping[str, torch.Tensor | np.ndarray]) -> str:
    """The SHA-256 of named tensors: names, dtypes, shapes and bytes, in name order.

    The same tensors give the same digest whatever the order of the mapping
    and whether they are torch tensors or NumPy arrays of the same dtype.
    """
    h = hashlib.sha256()
    for name in sorted(tensors):
        t = tensors[name]
        dtype = str(t.dtype).removeprefix("torch.")
        h.update(f"{name}\0{dtype}\0{tuple(t.shape)}\0".encode())
        h.update(_raw_bytes(t))
    return h.hexdigest()


def check_tensors(tensors: Mapping[str, torch.Tensor | np.ndarray], path: str | os.PathLike, expected_sha256: str | None) -> None:
    """Refuse tensors read from ``path`` that are not what was written, or not finite.

    Args:
        tensors: every tensor of the file, by name.
        path: the file, for messages.
        expected_sha256: the checksum stored when the file was written; None
            for files written before checksums were stored (only the finite
            check applies to them).

    Raises:
        CausalFuseError: naming the file and, for non-finite values, the tensor.
    """
    if expected_sha256 is not None and tensors_sha256(tensors) != expected_sha256:
        raise CausalFuseError(
            f"{Path(path)}: the tensors do not match the checksum stored when the file was written "
            "(the file is damaged: a bad copy, a disk error or an edit); use another copy"
        )
    for name in sorted(tensors):
        t = tensors[name]
        floating = t.dtype.is_floating_point if isinstance(t, torch.Tensor) else np.issubdtype(t.dtype, np.floating)
        if not floating:
            continue
        finite = bool(torch.isfinite(t).all()) if isinstance(t, torch.Tensor) else bool(np.isfinite(t).all())
        if not finite:
            raise CausalFuseError(f"{Path(path)}: tensor {name!r} holds NaN or infinite values; the file cannot be used")
