"""Finding infrared-visible pairs on disk.

Pairs are matched by file stem (``ir/00012.png`` with ``vi/00012.jpg``). The
folder layouts of the public datasets are recognised by
:func:`resolve_layout`: ``ir/`` + ``vi/`` (MSRS, TNO, RoadScene releases),
``infrared/`` + ``visible/`` with optional ``train/`` or ``test/`` below them
(LLVIP), ``IR/`` + ``VI/`` and ``Inf/`` + ``Vis/``.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Literal, Sequence

from ..errors import CausalFuseError
from ..io import IMAGE_EXTENSIONS

__all__ = ["Pair", "find_pairs", "list_images", "resolve_layout", "LAYOUTS"]

# (infrared folder, visible folder) names, tried case-insensitively in this order.
LAYOUTS: tuple[tuple[str, str], ...] = (
    ("ir", "vi"),
    ("infrared", "visible"),
    ("inf", "vis"),
    ("ir", "vis"),
    ("thermal", "visible"),
    ("lwir", "rgb"),
)


@dataclass(frozen=True)
class Pair:
    """One infrared-visible pair, matched by ``name`` (the common file stem)."""

    name: str
    ir: Path
    vi: Path


def list_images(folder: str | os.PathLike) -> dict[str, Path]:
    """Map stem -> path for the image files directly inside ``folder``.

    Raises:
        CausalFuseError: the folder is missing, or two files share a stem.
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise CausalFuseError(f"{folder}: no such folder")
    found: dict[str, Path] = {}
    for path in sorted(folder.iterdir()):
        if path.name.startswith(".") or not path.is_file() or path.suffix.lower() not in IMAGE_EXTENSIONS:
            continue
        if path.stem in found:
            raise CausalFuseError(f"{folder}: two images share the name {path.stem!r} ({found[path.stem].name}, {path.name})")
        found[path.stem] = path
    return found


def _child(folder: Path, name: str) -> Path | None:
    for child in folder.iterdir() if folder.is_dir() else ():
        if child.is_dir() and child.name.lower() == name:
            return child
    return None


def resolve_layout(root: str | os.PathLike, split: Literal["train", "test"] | None = None) -> tuple[Path, Path]:
    """Find the infrared and visible folders of a dataset root.

    Args:
        root: the dataset folder (holding e.g. ``ir/`` and ``vi/``).
        split: for layouts with ``train/`` and ``test/`` below the modality
            folders (LLVIP), which one to take; when None and both exist,
            ``train`` is taken.

    Returns:
        (infrared folder, visible folder).

    Raises:
        CausalFuseError: no known layout was found (the message lists them).
    """
    root = Path(root)
    if not root.is_dir():
        raise CausalFuseError(f"{root}: no such folder")
    for ir_name, vi_name in LAYOUTS:
        ir_dir, vi_dir = _child(root, ir_name), _child(root, vi_name)
        if ir_dir is None or vi_dir is None:
            continue
        for sub in ([split] if split else ["train", "test"]):
            ir_sub, vi_sub = _child(ir_dir, sub), _child(vi_dir, sub)
            if ir_sub is not None and vi_sub is not None:
                return ir_sub, vi_sub
        return ir_dir, vi_dir
    known = ", ".join(f"{a}/ + {b}/" for a, b in LAYOUTS)
    raise CausalFuseError(f"{root}: no infrared/visible folders found; expected one of: {known} (any case)")


def find_pairs(
    ir_dir: str | os.PathLike,
    vi_dir: str | os.PathLike,
    *,
    skip_unmatched: bool = False,
) -> list[Pair]:
    """Match the images of two folders by file stem.

    Args:
        ir_dir, vi_dir: folders of infrared and visible images.
        skip_unmatched: drop stems present in one folder only instead of
            refusing them.

    Returns:
        The pairs, sorted by name (natural order: ``2`` before ``10``).

    Raises:
        CausalFuseError: a folder has no images, no stems match, or (unless
            ``skip_unmatched``) some stems are in one folder only; the message
            lists them.
    """
    ir_files, vi_files = list_images(ir_dir), list_images(vi_dir)
    for folder, files in ((ir_dir, ir_files), (vi_dir, vi_files)):
        if not files:
            raise CausalFuseError(f"{folder}: no images found (looked for {', '.join(IMAGE_EXTENSIONS)})")
    only_ir = sorted(set(ir_files) - set(vi_files), key=natural_key)
    only_vi = sorted(set(vi_files) - set(ir_files), key=natural_key)
    common = sorted(set(ir_files) & set(vi_files), key=natural_key)
    if not common:
        raise CausalFuseError(f"{ir_dir} and {vi_dir}: no image names in common, so no pairs")
    if (only_ir or only_vi) and not skip_unmatched:
        parts = []
        if only_ir:
            parts.append(f"only in {ir_dir}: {_shorten(only_ir)}")
        if only_vi:
            parts.append(f"only in {vi_dir}: {_shorten(only_vi)}")
        raise CausalFuseError("unmatched images (" + "; ".join(parts) + "); pass --skip-unmatched to leave them out")
    return [Pair(name, ir_files[name], vi_files[name]) for name in common]


def pairs_from_roots(roots: Sequence[str | os.PathLike], *, skip_unmatched: bool = False) -> list[Pair]:
    """All pairs of several dataset roots (see :func:`resolve_layout`).

    Pair names are prefixed with the root's folder name when more than one
    root is given, so names stay unique.
    """
    pairs: list[Pair] = []
    for root in roots:
        ir_dir, vi_dir = resolve_layout(root)
        found = find_pairs(ir_dir, vi_dir, skip_unmatched=skip_unmatched)
        if len(roots) > 1:
            found = [Pair(f"{Path(root).name}/{p.name}", p.ir, p.vi) for p in found]
        pairs.extend(found)
    return pairs


def natural_key(name: str) -> tuple:
    """Sort key that orders ``2`` before ``10``."""
    import re

    return tuple(int(tok) if tok.isdigit() else tok.lower() for tok in re.split(r"(\d+)", name))


def _shorten(names: list[str], limit: int = 20) -> str:
    shown = ", ".join(names[:limit])
    return shown + (f", ... ({len(names) - limit} more)" if len(names) > limit else "")
