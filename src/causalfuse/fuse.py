"""Fusing pairs and folders with any registered method.

Every method fuses one luminance channel; this module does the rest once for
all of them (DESIGN.md, "Colour, sizes, value ranges"):

- a colour visible image is converted to YCbCr (BT.601), its Y is fused and
  the result is recombined with the visible Cb and Cr; a grey visible image
  gives a grey result; a 3-channel infrared image is made grey (its Y);
- 8-bit and 16-bit files are scaled to [0, 1];
- any size works; learned methods run in overlapping tiles whose overlap is at
  least the network's receptive radius, so the tiled result equals the whole-
  image result (no seams) while peak memory stays bounded;
- an alpha channel is dropped (the colour is fused as stored, whatever its
  transparency), for files and arrays alike, as :mod:`causalfuse.metrics` does;
- inputs are never overwritten: an output that is an input, by real path, is
  refused, and an output folder records what produced it
  (:data:`PRODUCER_FILE`: method, SHA-256 of the weights, bit depth), so a
  re-run with another method or other weights does not take the old images
  for its own.
"""

from __future__ import annotations

import contextlib
import functools
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Callable, Literal, Union

import numpy as np
import torch

from ._device import BF16_TOLERANCE, PRECISIONS, Precision
from ._pipeline import InOrderWriter, prefetch
from .data.paired import Pair, find_pairs
from .errors import CausalFuseError
from .io import atomic_path, check_writable, load_image, rgb_to_ycbcr, to_float01, write_image, ycbcr_to_rgb
from .models.registry import FusionMethod, create_method, get_method

if TYPE_CHECKING:
    from .register import Registered, Transform

__all__ = [
    "fuse", "fuse_registered", "fuse_folder", "create_backend_method", "FolderResult", "luminance_pair", "run_tiled",
    "refuse_inputs_as_outputs", "PRODUCER_FILE", "BF16_TOLERANCE", "check_precision",
]

#: The record, in an output folder, of what produced the images in it.
PRODUCER_FILE = ".causalfuse-fuse.json"

ImageLike = Union[str, os.PathLike, np.ndarray]


def _as_image(x: ImageLike, what: str) -> tuple[np.ndarray, str]:
    if isinstance(x, (str, os.PathLike)):
        arr, name = load_image(x), str(x)
    else:
        arr, name = np.asarray(x), f"the {what} array"
        if arr.ndim == 3 and arr.shape[2] == 1:
            arr = arr[:, :, 0]
        if arr.ndim not in (2, 3) or (arr.ndim == 3 and arr.shape[2] not in (3, 4)):
            raise CausalFuseError(f"{what} image must be (H, W), (H, W, 3) or (H, W, 4), got shape {arr.shape}")
        if arr.ndim == 3:
            arr = arr[:, :, :3]  # alpha dropped, as load_image does for files
    try:
        return to_float01(arr), name
    except CausalFuseError as exc:
        raise CausalFuseError(f"{name}: {exc}") from None


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


Backend = Literal["pytorch", "onnxruntime"]
BACKENDS = ("pytorch", "onnxruntime")


def check_precision(method: str | FusionMethod, backend: str, precision: str) -> None:
    """Refuse, before any work, a precision that ``method`` on ``backend`` cannot run in."""
    from .models.methods import BF16_METHODS, NETWORK_METHODS

    if precision not in PRECISIONS:
        raise CausalFuseError(f"unknown precision {precision!r}: choose {' or '.join(PRECISIONS)}")
    if precision == "fp32":
        return
    if backend != "pytorch":
        raise CausalFuseError(f"precision {precision} runs with the pytorch backend only (the ONNX export runs in fp32)")
    if not isinstance(method, str):
        raise CausalFuseError("precision chooses how a method is built: pass the method's name, not a created method")
    if method not in BF16_METHODS:
        why = "its whole-image min-max normalisation magnifies bfloat16 rounding" if method in NETWORK_METHODS else "it is not a network"
        raise CausalFuseError(f"{method} has no {precision} mode ({why}); precision {precision} applies to {', '.join(BF16_METHODS)}")


def create_backend_method(
    method: str, weights: str | os.PathLike | None, device: str, backend: Backend = "pytorch", onnx: str | os.PathLike | None = None,
    precision: Precision = "fp32",
) -> FusionMethod:
    """Build ``method`` to run on ``backend``: PyTorch, or its ONNX export in ONNX Runtime (:mod:`causalfuse.export`).

    ``onnx`` is the export to run (``backend="onnxruntime"`` only; None
    exports the network once into a cache). ``precision`` is that of
    :func:`fuse`.
    """
    check_precision(method, backend, precision)
    if backend == "pytorch":
        if onnx is not None:
            raise CausalFuseError(f"an ONNX file ({onnx}) runs with the onnxruntime backend; add --backend onnxruntime")
        fn = create_method(method, weights=weights, device=device)
        if precision != "fp32":
            fn.set_precision(precision)
        return fn
    if backend == "onnxruntime":
        from .export import onnxruntime_method

        return onnxruntime_method(method, weights, device, onnx=onnx)
    raise CausalFuseError(f"unknown backend {backend!r}: choose {' or '.join(BACKENDS)}")


def fuse(
    ir: ImageLike,
    vi: ImageLike,
    method: str | FusionMethod = "causalfuse",
    weights: str | os.PathLike | None = None,
    device: str = "auto",
    *,
    progress: bool = False,
    backend: Backend = "pytorch",
    onnx: str | os.PathLike | None = None,
    register: bool | str = False,
    transform: "str | os.PathLike | Transform | None" = None,
    uncovered: Literal["visible", "crop"] = "visible",
    precision: Precision = "fp32",
) -> np.ndarray:
    """Fuse one infrared-visible pair.

    Args:
        ir, vi: file paths or arrays (uint8, uint16, or float in [0, 1];
            (H, W) or (H, W, 3)).
        method: a registered method name (see :func:`causalfuse.list_methods`)
            or an already created method.
        weights: checkpoint for learned methods (None: the bundled one).
        device: ``auto``, ``cpu`` or ``cuda``.
        progress: show a progress bar over the tiles of a large image.
        backend: ``pytorch``, or ``onnxruntime`` for the networks'
            ONNX export in ONNX Runtime (the extra ``causalfuse[onnx]``; the
            same image within one grey level).
        onnx: with ``backend="onnxruntime"``, the file of ``causalfuse
            export``; it must have been exported from ``method`` and
            ``weights``. None exports them once into a cache
            (:func:`causalfuse.export.cache_dir`).
        register: register the infrared image to the visible one first
            (pairs from two cameras): True for an affine transform, or a model
            name (``translation``, ``similarity``, ``affine``, ``projective``).
            The result is on the visible image's grid.
        transform: a saved transform (file or
            :class:`~causalfuse.register.Transform`) to apply instead of
            estimating one; implies ``register``.
        uncovered: visible pixels the registered infrared image does not
            cover show the visible image (``visible``), or the result is
            cropped to the largest covered rectangle (``crop``).
        precision: ``fp32``, or ``bf16`` to run the network of
            ``causalfuse`` or ``causalfuse-nobaffm`` (PyTorch backend) under
            bfloat16 autocast, on CUDA or the CPU
            (:meth:`~causalfuse.models.methods.NetworkMethod.set_precision`
            says which parts run in bfloat16). 8-bit outputs are within
            :data:`BF16_TOLERANCE` grey levels of fp32's.

    Returns:
        The fused image, float32 in [0, 1]: (H, W, 3) when the visible image is
        colour, (H, W) otherwise.

    Raises:
        CausalFuseError: unreadable inputs, NaN or out-of-range values, sizes
            that differ, a method whose output is not finite, or ``bf16`` for
            another method or with ONNX Runtime.
    """
    if register or transform is not None:
        return fuse_registered(
            ir, vi, method, weights, device, progress=progress,
            model=register if isinstance(register, str) else None, transform=transform, uncovered=uncovered,
            backend=backend, onnx=onnx, precision=precision,
        )[0]
    check_precision(method, backend, precision)
    ir_y, vi_y, cbcr = luminance_pair(ir, vi)
    fn = _method(method, weights, device, ir_y.size, backend, onnx, precision)
    return _recombine(_call(fn, ir_y, vi_y, progress=progress), cbcr)


def _method(
    method: str | FusionMethod, weights, device: str, pixels: int, backend: "Backend" = "pytorch", onnx=None,
    precision: Precision = "fp32",
) -> FusionMethod:
    if isinstance(method, str):
        fn = create_backend_method(method, weights, device, backend, onnx, precision)
        _plan(fn, pixels)  # one pair: on a GPU, compile the kernels only if it is large
        return fn
    if backend != "pytorch" or onnx is not None:
        raise CausalFuseError("backend and onnx choose how a method is built: pass the method's name, not a created method")
    return method


def fuse_registered(
    ir: ImageLike,
    vi: ImageLike,
    method: str | FusionMethod = "causalfuse",
    weights: str | os.PathLike | None = None,
    device: str = "auto",
    *,
    progress: bool = False,
    model: str | None = None,
    transform: "str | os.PathLike | Transform | None" = None,
    uncovered: Literal["visible", "crop"] = "visible",
    registration: dict | None = None,
    backend: Backend = "pytorch",
    onnx: str | os.PathLike | None = None,
    precision: Precision = "fp32",
) -> "tuple[np.ndarray, Registered]":
    """Register the infrared image to the visible one, then fuse on the visible grid.

    Returns the fused image and the registration (transform, coverage). See
    :func:`fuse` for the arguments; ``registration`` passes options on to
    :func:`causalfuse.register.register_arrays` (``search``, ``min_mi``, ``snap``).

    Raises:
        CausalFuseError: as :func:`fuse`; a pair that cannot be registered
            (:class:`~causalfuse.register.RegistrationError`), or a transform
            of another model or for other image sizes.
    """
    from .register import Transform, largest_covered_box, register_arrays

    if uncovered not in ("visible", "crop"):
        raise CausalFuseError(f"uncovered={uncovered!r}: choose 'visible' or 'crop'")
    check_precision(method, backend, precision)
    ir_img, ir_name = _as_image(ir, "infrared")
    vi_img, vi_name = _as_image(vi, "visible")
    source = "the transform"
    if transform is not None and not isinstance(transform, Transform):
        source = str(transform)
        transform = Transform.load(transform, model=model)
    elif isinstance(transform, Transform) and model is not None and transform.model != model:
        raise CausalFuseError(f"the transform is {transform.model}, but {model} was asked for")
    reg = register_arrays(
        ir_img, vi_img, model=model or "affine", transform=transform, transform_source=source,
        name=f"{ir_name} + {vi_name}", **(registration or {}),
    )
    warped, covered = reg.warped, reg.covered
    if uncovered == "crop":
        x0, y0, x1, y1 = largest_covered_box(covered)
        warped, vi_img, covered = warped[y0:y1, x0:x1], vi_img[y0:y1, x0:x1], covered[y0:y1, x0:x1]
        reg.box = (x0, y0, x1, y1)
    ir_y, vi_y, cbcr = luminance_pair(warped, vi_img)
    # Uncovered pixels: the network sees the visible image twice there, and
    # the result shows the visible image.
    ir_y = np.where(covered, ir_y, vi_y)
    fn = _method(method, weights, device, ir_y.size, backend, onnx, precision)
    fused_y = np.where(covered, _call(fn, ir_y, vi_y, progress=progress), vi_y)
    return _recombine(fused_y, cbcr), reg


def _plan(fn: FusionMethod, pixels: int) -> None:
    plan = getattr(fn, "plan", None)
    if callable(plan):
        plan(pixels)


def _call(fn: FusionMethod, ir_y: np.ndarray, vi_y: np.ndarray, *, progress: bool = False) -> np.ndarray:
    if progress and hasattr(fn, "progress"):
        fn.progress = True
    out = np.asarray(fn(ir_y, vi_y), dtype=np.float32)
    if out.shape != ir_y.shape:
        raise CausalFuseError(f"the fusion method returned shape {out.shape} for inputs of shape {ir_y.shape}")
    bad = int(np.count_nonzero(~np.isfinite(out)))
    if bad:
        raise CausalFuseError(f"the fusion method returned {bad} NaN or infinite values of {out.size} (damaged weights?)")
    return np.clip(out, 0.0, 1.0)


def _recombine(y: np.ndarray, cbcr: np.ndarray | None) -> np.ndarray:
    if cbcr is None:
        return y
    return ycbcr_to_rgb(np.concatenate([y[..., None], cbcr], axis=-1))


#: Images of this many tiles or more show a progress bar over them (``progress=True``).
PROGRESS_TILES = 8


def run_tiled(
    forward: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
    ir: torch.Tensor,
    vi: torch.Tensor,
    *,
    tile: int = 512,
    overlap: int = 16,
    progress: bool = False,
) -> torch.Tensor:
    """Apply ``forward`` to (1, 1, H, W) tensors in overlapping tiles.

    Each tile is extended by ``overlap`` pixels on every side that lies inside
    the image and only its core is kept. With ``overlap`` at least the
    receptive radius of ``forward`` the result equals ``forward(ir, vi)``.
    With ``progress``, images of :data:`PROGRESS_TILES` tiles or more show a
    progress bar over their tiles.
    """
    from tqdm.auto import tqdm

    h, w = ir.shape[-2:]
    if h <= tile + 2 * overlap and w <= tile + 2 * overlap:
        return forward(ir, vi)
    out = torch.empty_like(ir)
    corners = [(y0, x0) for y0 in range(0, h, tile) for x0 in range(0, w, tile)]
    bar = tqdm(corners, desc=f"tiles of {w} x {h}", unit="tile", leave=False, disable=not progress or len(corners) < PROGRESS_TILES)
    for y0, x0 in bar:
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
    #: From the first read to the last write (the method's creation not included).
    seconds: float = 0.0
    uncovered: list[tuple[str, float]] = field(default_factory=list)

    @property
    def images_per_second(self) -> float:
        """Pairs written per second of :attr:`seconds` (0.0 when none was written)."""
        return len(self.written) / self.seconds if self.written and self.seconds > 0 else 0.0


def output_path_for(out_dir: Path, name: str, ext: str) -> Path:
    return out_dir / f"{name}{ext}"


def _pixels(path: str | os.PathLike) -> int:
    """Pixels of an image file, from its header (0 if it cannot be read: the fusion will say why)."""
    from PIL import Image

    try:
        with Image.open(path) as im:
            return im.width * im.height
    except Exception:  # noqa: BLE001 - only an estimate
        return 0


def _real(path: Path) -> str:
    return os.path.realpath(path)


def refuse_inputs_as_outputs(outputs: list[Path], inputs: list[Path]) -> None:
    """Refuse any output that is, by real path, one of the inputs.

    Symbolic links and relative spellings are resolved, and hard links to an
    input count as the input.

    Raises:
        CausalFuseError: naming the output and the input it would overwrite.
    """
    real_inputs = {_real(p): p for p in inputs}
    for out in outputs:
        source = real_inputs.get(_real(out))
        if source is None and out.exists():
            source = next((p for p in inputs if p.exists() and os.path.samefile(p, out)), None)
        if source is not None:
            raise CausalFuseError(f"{out}: this output would overwrite the input {source}; choose another output path")


def producer_record(method: str, weights: str | os.PathLike | None, bits: int) -> dict:
    """What makes an output folder's images: method, SHA-256 of its weights (None without weights), bit depth."""
    from .integrity import file_sha256
    from .models.methods import weights_file

    get_method(method)  # unknown names fail here, listing the known ones
    path = weights_file(method, weights)
    if path is not None and not path.is_file():
        raise CausalFuseError(f"{path}: no such weights file for {method}")
    return {"method": method, "weights_sha256": file_sha256(path) if path is not None else None, "bits": int(bits)}


def _describe(record: dict) -> str:
    digest = record.get("weights_sha256")
    weights = f" with weights sha256 {digest[:12]}..." if digest else ""
    precision = f", {record['precision']}" if record.get("precision", "fp32") != "fp32" else ""
    return f"{record.get('method')}{weights}, {record.get('bits')}-bit{precision}"


def _read_producer(out_dir: Path) -> dict | None:
    path = out_dir / PRODUCER_FILE
    if not path.is_file():
        return None
    try:
        record = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise CausalFuseError(f"{path}: damaged record of what produced this folder ({exc}); remove it, or use --overwrite") from None
    if not isinstance(record, dict):
        raise CausalFuseError(f"{path}: damaged record of what produced this folder; remove it, or use --overwrite")
    return record


def _write_producer(out_dir: Path, record: dict) -> None:
    with atomic_path(out_dir / PRODUCER_FILE) as tmp:
        tmp.write_text(json.dumps(record, indent=1, sort_keys=True) + "\n")


def _write_fused(target: Path, y: np.ndarray, cbcr: np.ndarray | None, bits: int) -> None:
    write_image(target, _recombine(y, cbcr), bits=bits)


def _write_registered(target: Path, fused: np.ndarray, reg: "Registered", name: str, bits: int) -> tuple[str, float]:
    """Write a registered pair's image and its transform (``name.json``); return (name, uncovered fraction)."""
    write_image(target, fused, bits=bits)
    reg.transform.info["pair"] = name
    reg.transform.save(target.with_suffix(".json"))
    return name, reg.uncovered_fraction


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
    register: bool | str = False,
    transform: "str | os.PathLike | Transform | None" = None,
    uncovered: Literal["visible", "crop"] = "visible",
    registration: dict | None = None,
    backend: Backend = "pytorch",
    onnx: str | os.PathLike | None = None,
    precision: Precision = "fp32",
) -> FolderResult:
    """Fuse every pair of two folders (matched by file stem) into ``out_dir``.

    Existing outputs are skipped unless ``overwrite``, so an interrupted run
    resumes where it stopped; every output is written atomically. The main
    thread only fuses: a background thread reads and decodes the next pairs
    and another encodes and writes the finished ones, in order (an error or
    Ctrl-C stops the run once the pairs already fused are written). Before any
    fusion the outputs are checked: none may be an input, the folder must
    accept files of type ``ext`` at ``bits``, and images already there must
    have been made by the same method, weights (by content) and bit depth,
    as recorded in the folder's :data:`PRODUCER_FILE` (``overwrite`` replaces
    them and the record). ``backend``, ``onnx`` and ``precision`` are those
    of :func:`fuse`; the backend is not part of the record (both give the
    same images within one grey level), the precision is (folders recorded
    without one were made in fp32).

    With ``register`` (or a ``transform``) each pair is registered first,
    as :func:`fuse_registered` does, and its transform is written beside its
    image (``name.json``); ``FolderResult.uncovered`` lists the fraction of
    each visible image the infrared image did not cover.

    Raises:
        CausalFuseError: before any work for the cases above; during the work
            for a bad pair unless ``keep_going``.
    """
    import time

    from tqdm import tqdm

    check_precision(method, backend, precision)
    pairs = find_pairs(ir_dir, vi_dir, skip_unmatched=skip_unmatched)
    out_dir = Path(out_dir)
    if out_dir.exists() and not out_dir.is_dir():
        raise CausalFuseError(f"{out_dir}: exists and is not a folder; give a folder for the outputs of two input folders")
    for flag, folder in (("--ir", Path(ir_dir)), ("--vi", Path(vi_dir))):
        if _real(out_dir) == _real(folder):
            raise CausalFuseError(f"{out_dir}: the output folder is the input folder {flag} {folder}; choose another output folder")
    targets = [(pair, output_path_for(out_dir, pair.name, ext)) for pair in pairs]
    refuse_inputs_as_outputs([t for _, t in targets], [p for pair in pairs for p in (Path(pair.ir), Path(pair.vi))])
    check_writable(out_dir / f"fused{ext}", bits=bits)
    registering = bool(register) or transform is not None
    model = register if isinstance(register, str) else None
    if transform is not None:
        from .register import Transform

        if not isinstance(transform, Transform):
            transform = Transform.load(transform, model=model)
    fn = None
    if backend != "pytorch" or onnx is not None:
        # Built first: the export checked against the method, and its weights are the ones to record.
        fn = create_backend_method(method, weights, device, backend, onnx)
        producer = {"method": method, "weights_sha256": fn.weights_sha256, "bits": int(bits)}
    else:
        producer = producer_record(method, weights, bits)
    producer["precision"] = precision
    if registering:
        producer["register"] = {
            "model": transform.model if transform is not None else (model or "affine"),
            "transform": transform.to_dict()["matrix"] if transform is not None else "estimated per pair",
            "uncovered": uncovered,
        }
    existing = [t for _, t in targets if t.exists()]
    if existing and not overwrite:
        recorded = _read_producer(out_dir)
        if recorded is not None:
            recorded.setdefault("precision", "fp32")  # written before there was a choice
        if recorded is None:
            raise CausalFuseError(
                f"{out_dir}: already holds {len(existing)} of these outputs ({existing[0].name}, ...) with no record of what "
                f"made them ({PRODUCER_FILE}); choose another folder, or --overwrite to replace them"
            )
        if {k: recorded.get(k) for k in producer} != producer:
            raise CausalFuseError(
                f"{out_dir}: holds outputs of {_describe(recorded)}, but this run is {_describe(producer)}; "
                "choose another folder, or --overwrite to replace them"
            )
        if recorded.get("overwriting"):
            raise CausalFuseError(
                f"{out_dir}: an --overwrite run into this folder was interrupted, so some images may be older ones; "
                "run it again with --overwrite"
            )
    out_dir.mkdir(parents=True, exist_ok=True)
    result = FolderResult()
    todo = []
    for pair, target in targets:
        if target.exists() and not overwrite:
            result.skipped.append(target)
        else:
            todo.append((pair, target))
    if not todo:
        return result
    if fn is None:
        fn = create_backend_method(method, weights, device, precision=precision)
    _plan(fn, _pixels(todo[0][0].ir) * len(todo))  # the first pair's size for all: on a GPU, compile only if the run is large
    # While an overwrite is under way the folder holds old and new images: the
    # record says so until every output has been replaced.
    replacing = overwrite and any(t.exists() for _, t in todo)
    _write_producer(out_dir, {**producer, "overwriting": replacing})

    def read(item: tuple[Pair, Path]) -> tuple[np.ndarray, np.ndarray, np.ndarray | None] | None:
        # On the read-ahead thread, while the pair before is fused; fuse_registered reads its own files.
        pair = item[0]
        return None if registering else luminance_pair(pair.ir, pair.vi)

    start = time.perf_counter()
    failures: dict[int, CausalFuseError] = {}  # pairs that could not be read or fused, by index in todo
    error: BaseException | None = None
    bar = tqdm(total=len(todo), desc=f"fusing ({method})", unit="pair", disable=not progress)
    writer = InOrderWriter(depth=2, stop_on_error=not keep_going)
    with contextlib.closing(prefetch(todo, read, depth=2)) as loaded:
        try:
            for index, ((pair, target), luminance, read_error) in enumerate(loaded):
                if writer.error is not None:
                    break  # a write failed: stop as a serial run would have
                bar.set_postfix_str(pair.name)
                try:
                    if read_error is not None:
                        raise read_error
                    if registering:
                        fused, reg = fuse_registered(
                            pair.ir, pair.vi, fn, progress=progress, model=model, transform=transform, uncovered=uncovered,
                            registration=registration,
                        )
                        job = functools.partial(_write_registered, target, fused, reg, pair.name, bits)
                    else:
                        ir_y, vi_y, cbcr = luminance
                        job = functools.partial(_write_fused, target, _call(fn, ir_y, vi_y, progress=progress), cbcr, bits)
                except CausalFuseError as exc:
                    if not keep_going:
                        error = exc
                        break
                    failures[index] = exc
                    continue
                finally:
                    bar.update()
                writer.submit(index, job)
        finally:
            bar.close()
            writer.close()  # what was fused before a stop (an error, Ctrl-C) is written, each file atomically
    error = writer.error or error  # the writer's failure came from an earlier pair
    if error is not None:
        raise error
    result.seconds = time.perf_counter() - start
    outcomes = {**writer.outcomes, **failures}
    for index, (pair, target) in enumerate(todo):
        outcome = outcomes[index]
        if isinstance(outcome, CausalFuseError):
            result.failed.append((pair.name, str(outcome)))
            continue
        result.written.append(target)
        if outcome is not None:
            result.uncovered.append(outcome)
    if replacing and not result.failed:
        _write_producer(out_dir, {**producer, "overwriting": False})
    return result
