"""The learned methods: ``causalfuse``, ``causalfuse-nobaffm`` and ``lrrnet``."""

from __future__ import annotations

import contextlib
import os
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .._device import PRECISIONS, Precision, resolve_device
from ..errors import CausalFuseError
from .registry import register_method

__all__ = ["bundled_weights", "weights_file", "TiledMethod", "NetworkMethod", "NETWORK_METHODS", "BF16_METHODS"]

PAPER = "Causality-Driven Infrared and Visible Image Fusion (BAFFM over LRRNet features)"
LRRNET = "Li et al., LRRNet, IEEE TPAMI 2023, doi:10.1109/TPAMI.2023.3268209"


def bundled_weights(name: str) -> Path:
    """Path of a checkpoint shipped inside the package, e.g. ``causalfuse``."""
    path = Path(str(resources.files("causalfuse") / "weights" / f"{name}.safetensors"))
    if not path.is_file():
        raise CausalFuseError(f"no bundled weights for {name!r} in this installation ({path}); pass --weights FILE")
    return path


#: Methods whose default weights ship with the package, and the file's name.
BUNDLED = {"causalfuse": "causalfuse", "causalfuse-nobaffm": "causalfuse-nobaffm"}


def weights_file(method: str, weights: str | os.PathLike | None) -> Path | None:
    """The weights file ``method`` runs with: ``weights``, else its bundled one, else None (no weights)."""
    if weights is not None:
        return Path(weights)
    return bundled_weights(BUNDLED[method]) if method in BUNDLED else None


class TiledMethod:
    """Runs a network's forward pass on (H, W) luminance arrays, tiled so memory stays bounded.

    Subclasses give :meth:`forward`, from two (1, 1, H, W) float32 tensors to
    the (1, 1, H, W) output; this class does the rest, the same for every
    backend: the method's pre- and post-processing of whole images
    (``prepare``, ``finish``), and :func:`causalfuse.fuse.run_tiled`'s tiles.
    """

    def __init__(self, device: torch.device, *, tile: int = 512, overlap: int | None = None, prepare=None, finish=None) -> None:
        self.device = device
        self.tile = tile
        self.overlap = overlap if overlap is not None else 16
        self.progress = False  # a progress bar over the tiles of large images
        self._prepare = prepare
        self._finish = finish

    def forward(self, ir: torch.Tensor, vi: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def _precision_context(self) -> contextlib.AbstractContextManager:
        return contextlib.nullcontext()

    def __call__(self, ir: np.ndarray, vi: np.ndarray) -> np.ndarray:
        from ..fuse import run_tiled

        if self._prepare is not None:
            ir, vi = self._prepare(ir), self._prepare(vi)
        ir_t = torch.from_numpy(np.ascontiguousarray(ir, dtype=np.float32))[None, None].to(self.device)
        vi_t = torch.from_numpy(np.ascontiguousarray(vi, dtype=np.float32))[None, None].to(self.device)
        with torch.inference_mode(), self._precision_context():
            out = run_tiled(self.forward, ir_t, vi_t, tile=self.tile, overlap=self.overlap, progress=self.progress)
        out = out[0, 0].float().cpu().numpy()
        return self._finish(out) if self._finish is not None else out


class NetworkMethod(TiledMethod):
    """A torch network run as a fusion method (see :class:`TiledMethod`).

    Attributes:
        net: the torch module (for parameter counts and inspection).
        n_parameters: its number of parameters.
    """

    def __init__(self, net: torch.nn.Module, device: torch.device, *, tile: int = 512, overlap: int | None = None,
                 prepare=None, finish=None) -> None:
        super().__init__(device, tile=tile, overlap=overlap, prepare=prepare, finish=finish)
        self.net = net.to(device).eval()
        self.n_parameters = sum(p.numel() for p in net.parameters())
        self.precision: Precision = "fp32"
        self._compile_lrr(self.device.type != "cpu")

    def set_precision(self, precision: Precision) -> None:
        """Run the network in ``fp32`` (default) or ``bf16``.

        ``bf16`` runs the forward pass under ``torch.autocast`` with bfloat16,
        on CUDA where the GPU supports bfloat16, and on the CPU (PyTorch's CPU
        autocast; on a CPU with AVX512-BF16 about 1.2x faster than fp32 with a
        third less memory, see the README). The LRR encoders
        then run wholly in bfloat16 (their fused kernels take the autocast
        type explicitly), BAFFM and the reconstruction conv under autocast's
        own rules (convolutions and matrix products in bfloat16); the
        whole-image pre- and post-processing and the tiles' assembly stay
        float32. 8-bit outputs are
        within :data:`causalfuse._device.BF16_TOLERANCE` grey levels of fp32's.

        Raises:
            CausalFuseError: an unknown precision, or bf16 on a GPU without it.
        """
        if precision not in PRECISIONS:
            raise CausalFuseError(f"unknown precision {precision!r}: choose {' or '.join(PRECISIONS)}")
        if precision == "bf16" and self.device.type == "cuda" and not torch.cuda.is_bf16_supported():
            raise CausalFuseError(f"bf16 was asked for, but {torch.cuda.get_device_name(self.device)} does not support bfloat16; use fp32")
        self.precision = precision

    def _precision_context(self) -> contextlib.AbstractContextManager:
        if self.precision == "fp32":
            return contextlib.nullcontext()
        return torch.autocast(self.device.type, dtype=torch.bfloat16)

    #: On a GPU, below this many pixels in one job the eager LRR kernels
    #: finish before compiled ones would have paid for compiling. On the CPU
    #: the encoders never compile: their chunked eager stages
    #: (:mod:`causalfuse.models.lrr`) are faster than the compiled kernels at
    #: every size measured (2 cores: 0.35 against 0.50 s per encoder at
    #: 480 x 640, 1.6 against 2.6 s at 1280 x 1024).
    COMPILE_MIN_PIXELS = 500_000

    #: On the CPU, from this many pixels in one job the encoders run Numba's
    #: compiled loops (:mod:`causalfuse.models.lrr_numba`): loading them costs
    #: about 0.4 s once per process, and they save about 0.2 s per 480 x 640
    #: pair (2 cores).
    NUMBA_MIN_JOB_PIXELS = 1_000_000

    def plan(self, pixels: int) -> None:
        """Say how many pixels this job will fuse, so the LRR kernels are compiled only when that pays.

        Without a plan the kernels are compiled on a GPU (the right choice for
        long runs such as a benchmark) and never on the CPU, where Numba's
        loops run instead. With a plan, a CPU job under
        :attr:`NUMBA_MIN_JOB_PIXELS` keeps PyTorch's eager kernels.
        ``CAUSALFUSE_COMPILE=0`` keeps them eager whatever the plan.
        """
        self._compile_lrr(self.device.type != "cpu" and pixels >= self.COMPILE_MIN_PIXELS)
        self._numba_lrr(pixels >= self.NUMBA_MIN_JOB_PIXELS)

    def _encoders(self) -> list[Any]:
        from .lrr import LRREncoder

        return [m for m in self.net.modules() if isinstance(m, LRREncoder)]

    def _compile_lrr(self, worth: bool) -> None:
        for module in self._encoders():
            module.compile = worth

    def _numba_lrr(self, worth: bool) -> None:
        for module in self._encoders():
            module.numba = worth

    def forward(self, ir: torch.Tensor, vi: torch.Tensor) -> torch.Tensor:
        return self.net(ir, vi)


def lrrnet_prepare(x: np.ndarray) -> np.ndarray:
    """LRRNet's input normalisation of a whole [0, 1] image (the official test reads 8-bit grey images as floats in [0, 255])."""
    from .lrr import lrrnet_preprocess

    return lrrnet_preprocess(x * 255.0)


def lrrnet_finish(raw: np.ndarray) -> np.ndarray:
    """LRRNet's output conversion of the whole raw output, as [0, 1] float32."""
    from .lrr import lrrnet_postprocess

    return lrrnet_postprocess(raw).astype(np.float32) / 255.0


#: The methods that run a network, with the (prepare, finish) each applies to
#: whole images around it (None: nothing). Only the network itself, which is
#: local, runs in tiles; the min-max normalisations act on the whole image.
NETWORK_METHODS = {
    "causalfuse": (None, None),
    "causalfuse-nobaffm": (None, None),
    "lrrnet": (lrrnet_prepare, lrrnet_finish),
}


#: The methods with a bf16 mode (:meth:`NetworkMethod.set_precision`). Not
#: lrrnet: the min-max normalisation of its whole output magnifies bfloat16
#: rounding (up to 7 grey levels from fp32 on three TNO21 pairs, 0.8 to 1.8 on
#: average, against 2 and 0.3 for these two).
BF16_METHODS = ("causalfuse", "causalfuse-nobaffm")


def _load_causal(weights: str | os.PathLike | None, default: str, device: str, use_baffm: bool | None) -> NetworkMethod:
    from ..checkpoint import load_model

    dev = resolve_device(device)
    path = Path(weights) if weights is not None else bundled_weights(BUNDLED[default])
    net = load_model(path, device=dev, use_baffm=use_baffm)
    return NetworkMethod(net, dev)


@register_method("causalfuse", description="CausalFusionNet with BAFFM (the paper's method)", reference=PAPER)
def causalfuse_method(weights: str | os.PathLike | None = None, device: str = "auto", **_: object) -> NetworkMethod:
    return _load_causal(weights, "causalfuse", device, None)


@register_method(
    "causalfuse-nobaffm",
    description="CausalFusionNet without the back-door term (the paper's ablation)",
    reference=PAPER,
)
def causalfuse_nobaffm_method(weights: str | os.PathLike | None = None, device: str = "auto", **_: object) -> NetworkMethod:
    # A checkpoint trained with BAFFM runs here with the back-door term removed.
    return _load_causal(weights, "causalfuse-nobaffm", device, False)


@register_method("lrrnet", description="LRRNet with its official weights and pre/post-processing", needs_weights=True, reference=LRRNET)
def lrrnet_method(weights: str | os.PathLike | None = None, device: str = "auto", **_: object) -> NetworkMethod:
    from .lrr import LRRNet

    if weights is None:
        raise CausalFuseError(
            "lrrnet needs its official weights file (lrrnet_official.model from the authors' release): pass --weights PATH"
        )
    dev = resolve_device(device)
    net = LRRNet.from_official(weights)
    prepare, finish = NETWORK_METHODS["lrrnet"]
    return NetworkMethod(net, dev, prepare=prepare, finish=finish)
