"""Fusing pairs and folders with any registered method.

Every method fuses one luminance channel; this module does the rest once for
all of them (DESIGN.md, "Colour, sizes, value ranges"):

- a colour visible image is converted to YCbCr (BT.601), its Y is fused and
  the result is recombined with the visible Cb and Cr; a grey visible image
  gives a grey result; a 3-channel infrared image is made grey (its Y);
- 8-bit and 16-bit files are scaled to [0, 1];
- any size works; learned methods run in overlapping tiles whose overlap is at
  least the network's receptive radius, so the tiled result equals the whole-
  image result (no seams) while peak memory stays bounded.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Literal, Union

import numpy as np
import torch

from .data.paired import find_pairs
from .errors import CausalFuseError
from .io import load_image, rgb_to_ycbcr, to_float01, write_image, ycbcr_to_rgb
from .models.registry import FusionMethod, create_method

__all__ = ["fuse", "fuse_folder", "FolderResult", "luminance_pair", "run_tiled"]

ImageLike = Union[str, os.PathLike, np.ndarray]


def _as_image(x: ImageLike, what: str) -> tuple[np.ndarray, str]:
    if isinstance(x, (str, os.PathLike)):
        return to_float01(load_image(x)), str(x)
    arr = np.asarray(x)
    if arr.ndim == 3 and arr.shape[2] == 1:
        arr = arr[:, :, 0]
    if arr.ndim not in (2, 3) or (arr.ndim == 3 and arr.shape[2] not in (3, 4)):
        raise CausalFuseError(f"{what} image must be (H, W) or (H, W, 3), got shape {arr.shape}")
    if arr.ndim == 3:
        arr = arr[:, :, :3]
    return to_float01(arr), f"the {what} array"


def luminance_pair(ir: ImageLike, vi: ImageLike) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    """Load a pair and return (ir_y, vi_y, vi_cbcr) as float32 in [0, 1].

    ``vi_cbcr`` is (H, W, 2) for a colour visible image and None for a grey one.

    Raises:
        CausalFuseError: unreadable files, or images of different sizes.
    """
    ir_img, ir_name = _as_image(ir, "infrared")
    vi_img, vi_name = _as_image(vi, "visible")
    if ir_img.shape[:2] != vi_img.shape[:2]:
        raise CausalFuseError(
            f"{ir_name} is {ir_img.shape[1]} x {ir_img.shape[0]} but {vi_name} is "
            f"{vi_img.shape[1]} x {vi_img.shape[0]}; infrared and visible must have the same size (register them first)"
        )
    if min(ir_img.shape[:2]) < 2:
        raise CausalFuseError(f"{ir_name}: images must be at least 2 x 2 pixels, got {ir_img.shape[1]} x {ir_img.shape[0]}")
    ir_y = rgb_to_ycbcr(ir_img)[..., 0] if ir_img.ndim == 3 else ir_img
    if vi_img.ndim == 3:
        ycc = rgb_to_ycbcr(vi_img)
        return np.ascontiguousarray(ir_y), np.ascontiguousarray(ycc[..., 0]), ycc[..., 1:]
    return np.ascontiguousarray(ir_y), vi_img, None


def fuse(
    ir: ImageLike,
    vi: ImageLike,
    method: str | FusionMethod = "causalfuse",
    weights: str | os.PathLike | None = None,
    device: str = "auto",
) -> np.ndarray:
    """Fuse one infrared-visible pair.

    Args:
        ir, vi: file paths or arrays (uint8, uint16, or float in [0, 1];
            (H, W) or (H, W, 3)).
        method: a registered method name (see :func:`causalfuse.list_methods`)
            or an already created method.
        weights: checkpoint for learned methods (None: the bundled one).
        device: ``auto``, ``cpu`` or ``cuda``.

    Returns:
        The fused image, float32 in [0, 1]: (H, W, 3) when the visible image is
        colour, (H, W) otherwise.
    """
    fn = create_method(method, weights=weights, device=device) if isinstance(method, str) else method
    ir_y, vi_y, cbcr = luminance_pair(ir, vi)
    return _recombine(_call(fn, ir_y, vi_y), cbcr)


def _call(fn: FusionMethod, ir_y: np.ndarray, vi_y: np.ndarray) -> np.ndarray:
    out = np.asarray(fn(ir_y, vi_y), dtype=np.float32)
    if out.shape != ir_y.shape:
        raise RuntimeError(f"fusion method returned shape {out.shape} for inputs of shape {ir_y.shape}")
    return np.clip(out, 0.0, 1.0)


def _recombine(y: np.ndarray, cbcr: np.ndarray | None) -> np.ndarray:
    if cbcr is None:
        return y
    return ycbcr_to_rgb(np.concatenate([y[..., None], cbcr], axis=-1))


def run_tiled(
    forward: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
    ir: torch.Tensor,
    vi: torch.Tensor,
    *,
    tile: int = 512,
    overlap: int = 16,
) -> torch.Tensor:
    """Apply ``forward`` to (1, 1, H, W) tensors in overlapping tiles.

    Each tile is extended by ``overlap`` pixels on every side that lies inside
    the image and only its core is kept. With ``overlap`` at least the
    receptive radius of ``forward`` the result equals ``forward(ir, vi)``.
    """
    h, w = ir.shape[-2:]
    if h <= tile + 2 * overlap and w <= tile + 2 * overlap:
        return forward(ir, vi)
    out = torch.empty_like(ir)
    for y0 in range(0, h, tile):
        for x0 in range(0, w, tile):
            y1, x1 = min(y0 + tile, h), min(x0 + tile, w)
            ya, xa = max(0, y0 - overlap), max(0, x0 - overlap)
            yb, xb = min(h, y1 + overlap), min(w, x1 + overlap)
            if yb - ya < 2 or xb - xa < 2:  # a sliver: grow it inwards
                ya, xa = max(0, min(ya, yb - 2)), max(0, min(xa, xb - 2))
            part = forward(ir[..., ya:yb, xa:xb], vi[..., ya:yb, xa:xb])
            out[..., y0:y1, x0:x1] = part[..., y0 - ya : y1 - ya, x0 - xa : x1 - xa]
    return out


@dataclass
class FolderResult:
    """What :func:`fuse_folder` did."""

    written: list[Path] = field(default_factory=list)
    skipped: list[Path] = field(default_factory=list)
    failed: list[tuple[str, str]] = field(default_factory=list)
    seconds: float = 0.0


def output_path_for(out_dir: Path, name: str, ext: str) -> Path:
    return out_dir / f"{name}{ext}"


def fuse_folder(
    ir_dir: str | os.PathLike,
    vi_dir: str | os.PathLike,
    out_dir: str | os.PathLike,
    method: str = "causalfuse",
    weights: str | os.PathLike | None = None,
    device: str = "auto",
    *,
    overwrite: bool = False,
    skip_unmatched: bool = False,
    ext: str = ".png",
    bits: Literal[8, 16] = 8,
    progress: bool = True,
    keep_going: bool = False,
) -> FolderResult:
    """Fuse every pair of two folders (matched by file stem) into ``out_dir``.

    Existing outputs are skipped unless ``overwrite``, so an interrupted run
    resumes where it stopped; every output is written atomically.
    """
    import time

    from tqdm import tqdm

    pairs = find_pairs(ir_dir, vi_dir, skip_unmatched=skip_unmatched)
    out_dir = Path(out_dir)
    if out_dir.exists() and not out_dir.is_dir():
        raise CausalFuseError(f"{out_dir}: exists and is not a folder; give a folder for the outputs of two input folders")
    out_dir.mkdir(parents=True, exist_ok=True)
    result = FolderResult()
    todo = []
    for pair in pairs:
        target = output_path_for(out_dir, pair.name, ext)
        if target.exists() and not overwrite:
            result.skipped.append(target)
        else:
            todo.append((pair, target))
    if not todo:
        return result
    fn = create_method(method, weights=weights, device=device)
    start = time.perf_counter()
    bar = tqdm(todo, desc=f"fusing ({method})", unit="pair", disable=not progress)
    for pair, target in bar:
        bar.set_postfix_str(pair.name)
        try:
            ir_y, vi_y, cbcr = luminance_pair(pair.ir, pair.vi)
            write_image(target, _recombine(_call(fn, ir_y, vi_y), cbcr), bits=bits)
        except CausalFuseError as exc:
            if not keep_going:
                raise
            result.failed.append((pair.name, str(exc)))
            continue
        result.written.append(target)
    result.seconds = time.perf_counter() - start
    return result
