"""A torch dataset of aligned infrared-visible training crops.

``PairedDataset(roots)`` finds the pairs of one or more dataset roots (any
layout :func:`causalfuse.data.paired.resolve_layout` knows), or takes explicit
``folders=[(ir_dir, vi_dir), ...]`` or ready ``pairs``. Each item is a dict::

    {"ir": (1, crop, crop) float32 in [0, 1],   # grey infrared
     "vi": (1, crop, crop) float32 in [0, 1],   # visible luminance (BT.601 Y)
     "name": str, "index": int}

with the same random crop and flips on both images (:mod:`.transforms`).
Randomness is a function of ``(seed, epoch, index)`` only: call
:meth:`PairedDataset.set_epoch` at the start of each epoch, or index the dataset
with ``(epoch, index)`` tuples (e.g. from a sampler), which also works with
persistent DataLoader workers. Images smaller than the crop are reflect-padded
up to it (see :func:`.transforms.pad_to`).

Decoded images can be kept in memory (``cache=True``): the raw uint8 arrays,
about 0.7 GB for MSRS + LLVIP train. Call :meth:`PairedDataset.preload` before
creating DataLoader workers so that forked workers share the filled cache
instead of each decoding its own copy.
"""

from __future__ import annotations

import os
from typing import Sequence, Union

import numpy as np
import torch
from torch.utils.data import Dataset

from ..errors import CausalFuseError
from ..io import load_image
from .paired import Pair, find_pairs, pairs_from_roots
from .transforms import apply_crop_flip, apply_gamma, draw_crop_flip, draw_gamma, luminance, pad_to, sample_generator

__all__ = ["PairedDataset"]

PathLike = Union[str, os.PathLike]


class PairedDataset(Dataset):
    """Aligned (infrared, visible-luminance) crops for training.

    Args:
        roots: one dataset root or several (see
            :func:`causalfuse.data.paired.pairs_from_roots`).
        folders: explicit ``(ir_dir, vi_dir)`` folder pairs, besides or
            instead of ``roots``.
        pairs: ready :class:`~causalfuse.data.paired.Pair` objects, besides
            or instead of the above.
        crop: side of the square crop; None returns whole images (then the
            items of one batch must share a size).
        flips: random horizontal and vertical flips (probability 1/2 each).
        gamma: brightness augmentation: each sample's infrared and visible
            luminance are raised to independent powers, log-uniform in
            ``[exp(-gamma), exp(gamma)]`` (0: none). It lets a network
            trained on dark scenes (MSRS and LLVIP average 24-63 grey levels)
            see the bright daytime scenes it will be used on.
        seed: base seed of the augmentation randomness.
        cache: keep the decoded images in memory.
        skip_unmatched: leave out images without a partner instead of
            refusing them.

    Raises:
        CausalFuseError: no pairs, unmatched stems (listed), repeated names.
            Infrared and visible images of different sizes are refused when
            they are read, naming both files.
    """

    def __init__(
        self,
        roots: PathLike | Sequence[PathLike] | None = None,
        *,
        folders: Sequence[tuple[PathLike, PathLike]] = (),
        pairs: Sequence[Pair] = (),
        crop: int | None = 256,
        flips: bool = True,
        gamma: float = 0.0,
        seed: int = 0,
        cache: bool = True,
        skip_unmatched: bool = False,
    ) -> None:
        if isinstance(roots, (str, os.PathLike)):
            roots = [roots]
        found: list[Pair] = []
        if roots:
            found += pairs_from_roots(list(roots), skip_unmatched=skip_unmatched)
        for ir_dir, vi_dir in folders:
            found += find_pairs(ir_dir, vi_dir, skip_unmatched=skip_unmatched)
        found += list(pairs)
        if not found:
            raise CausalFuseError("no image pairs: give dataset roots, (ir_dir, vi_dir) folders or pairs")
        names = [p.name for p in found]
        if len(set(names)) != len(names):
            dup = sorted({n for n in names if names.count(n) > 1})[:5]
            raise CausalFuseError(f"pair names occur twice ({', '.join(dup)}): give each dataset once")
        if crop is not None and crop < 1:
            raise CausalFuseError(f"crop must be a positive size or None, got {crop}")
        self.pairs: list[Pair] = found
        self.crop = crop
        if gamma < 0:
            raise CausalFuseError(f"gamma augmentation strength must be >= 0, got {gamma}")
        self.flips = flips
        self.gamma = float(gamma)
        self.seed = int(seed)
        self.epoch = 0
        self.cache = cache
        self._cache: dict[int, tuple[np.ndarray, np.ndarray]] = {}

    def __len__(self) -> int:
        return len(self.pairs)

    def set_epoch(self, epoch: int) -> None:
        """Choose the epoch whose augmentations ``dataset[i]`` returns."""
        self.epoch = int(epoch)

    def load(self, index: int) -> tuple[np.ndarray, np.ndarray]:
        """The raw decoded (infrared, visible) arrays of pair ``index``, checked to share a size."""
        if index in self._cache:
            return self._cache[index]
        pair = self.pairs[index]
        ir, vi = load_image(pair.ir), load_image(pair.vi)
        if ir.shape[:2] != vi.shape[:2]:
            raise CausalFuseError(
                f"{pair.ir} is {ir.shape[1]} x {ir.shape[0]} but {pair.vi} is {vi.shape[1]} x {vi.shape[0]}: "
                "the infrared and visible images of a pair must be registered to the same size"
            )
        if self.cache:
            self._cache[index] = (ir, vi)
        return ir, vi

    def preload(self, progress: bool = False) -> None:
        """Decode every pair into the cache now (and check all sizes)."""
        from tqdm.auto import tqdm

        if not self.cache:
            raise CausalFuseError("preload needs cache=True")
        for i in tqdm(range(len(self)), desc="decoding pairs", unit="pair", disable=not progress):
            self.load(i)

    @property
    def cache_bytes(self) -> int:
        """Memory held by the cache."""
        return sum(a.nbytes + b.nbytes for a, b in self._cache.values())

    def __getitem__(self, item: int | tuple[int, int]) -> dict:
        if isinstance(item, tuple):
            epoch, index = item
        else:
            epoch, index = self.epoch, item
        index = int(index)
        if index < 0:
            index += len(self)
        if not 0 <= index < len(self):
            raise IndexError(f"index {index} out of range for {len(self)} pairs")
        ir, vi = self.load(index)
        rng = sample_generator(self.seed, epoch, index)
        if self.crop is not None:
            ir, vi = pad_to(ir, self.crop), pad_to(vi, self.crop)
            aug = draw_crop_flip(ir.shape[0], ir.shape[1], self.crop, rng, flips=self.flips)
            ir, vi = apply_crop_flip(ir, aug), apply_crop_flip(vi, aug)
        ir_y, vi_y = luminance(ir), luminance(vi)
        if self.gamma > 0:  # drawn after the crop, so gamma=0 runs see the same crops as before
            g_ir, g_vi = draw_gamma(rng, self.gamma)
            ir_y, vi_y = apply_gamma(ir_y, g_ir), apply_gamma(vi_y, g_vi)
        return {
            "ir": torch.from_numpy(np.ascontiguousarray(ir_y))[None],
            "vi": torch.from_numpy(np.ascontiguousarray(vi_y))[None],
            "name": self.pairs[index].name,
            "index": index,
        }

    def __repr__(self) -> str:
        return f"PairedDataset({len(self)} pairs, crop={self.crop}, flips={self.flips}, gamma={self.gamma}, seed={self.seed}, epoch={self.epoch})"
