"""ONNX export of the networks, and fusing with the export in ONNX Runtime.

:func:`export_onnx` writes ``causalfuse``, ``causalfuse-nobaffm`` or
``lrrnet`` as one ONNX graph of two (B, 1, H, W) float32 inputs
(``infrared``, ``visible``) and the output ``fused``, with batch, height and
width dynamic. The graph is the network alone: ``causalfuse`` gives its [0, 1]
image, ``lrrnet`` its raw output before the official post-processing. The
graph is traced from the plain-operator form of the LRR encoders
(:meth:`~causalfuse.models.lrr.LRREncoder.forward_code_plain`, no compiled
kernels) and checked against eager PyTorch when it is written.

The file's metadata (``metadata_props``) records what it was exported from:
the method, the SHA-256 of the weights file, the package version, the opset
and a format marker (:data:`FORMAT`). :func:`onnxruntime_method` runs such a
file as a fusion method and refuses one exported from another method or
other weights than those asked for, and any ONNX file that is not a
causalfuse export. Pre- and post-processing of whole images, tiling and colour
are the same as with PyTorch (:class:`~causalfuse.models.methods.TiledMethod`,
:mod:`causalfuse.fuse`), so both backends give the same image within one grey
level.

ONNX and ONNX Runtime are the optional extra ``causalfuse[onnx]``.
"""

from __future__ import annotations

import copy
import importlib
import os
import sys
import warnings
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np
import torch
from torch import nn

from .errors import CausalFuseError
from .models.methods import NETWORK_METHODS, TiledMethod

__all__ = [
    "FORMAT",
    "OPSET",
    "export_onnx",
    "export_network",
    "onnxruntime_method",
    "cached_export",
    "onnxruntime_session",
    "OnnxRuntimeMethod",
]

#: The format marker of a causalfuse ONNX export, in its metadata.
FORMAT = "causalfuse-onnx/1"
#: ONNX opset of the exports (ONNX Runtime >= 1.14 runs it).
OPSET = 17
INPUTS = ("infrared", "visible")
OUTPUT = "fused"
EXTRA = 'pip install "causalfuse[onnx]"'
_KEY = "causalfuse."  # prefix of the metadata keys

#: Relative tolerance of the check at export: |ONNX - PyTorch| <= CHECK_TOLERANCE * max(1, max |PyTorch|).
CHECK_TOLERANCE = 1e-4


def _require(module: str, what: str) -> ModuleType:
    try:
        return importlib.import_module(module)
    except ImportError:
        raise CausalFuseError(f"{what} needs {module}, which is not installed: {EXTRA}") from None


def _check_network_method(method: str, what: str) -> None:
    from .models.registry import get_method

    get_method(method)  # unknown names fail here, listing the known ones
    if method not in NETWORK_METHODS:
        raise CausalFuseError(f"{what} is for the networks ({', '.join(NETWORK_METHODS)}); {method!r} is not one")


def _weights_sha256(method: str, weights: str | os.PathLike | None) -> tuple[Path | None, str | None]:
    from .integrity import file_sha256
    from .models.methods import weights_file

    path = weights_file(method, weights)
    if path is None:
        return None, None
    if not path.is_file():
        raise CausalFuseError(f"{path}: no such weights file for {method}")
    return path, file_sha256(path)


# ---------------------------------------------------------------------------
# export
# ---------------------------------------------------------------------------
class _Traceable(nn.Module):
    """The network in the form the exporter traces: plain operators, attention in one chunk."""

    def __init__(self, net: nn.Module) -> None:
        super().__init__()
        self.net = net

    def forward(self, ir: torch.Tensor, vi: torch.Tensor) -> torch.Tensor:
        from .models.lrr import LRRNet

        net = self.net
        z_ir = net.encoder_ir.forward_code_plain(ir)
        z_vi = net.encoder_vi.forward_code_plain(vi)
        if isinstance(net, LRRNet):
            n = net.encoder_ir.n
            return net.decoder(z_ir[:, :n], z_ir[:, n:], z_vi[:, :n], z_vi[:, n:])
        return net.forward_head(z_ir, z_vi)


def _eager_copy(net: nn.Module) -> nn.Module:
    """A CPU copy of ``net`` that runs its eager kernels and its attention in one chunk of pixels.

    The chunks only bound memory (the attention is per pixel); the runner's
    tiles bound it for the export.
    """
    from .models.baffm import ConfounderAttention
    from .models.lrr import LRREncoder

    net = copy.deepcopy(net).to("cpu").eval()
    for module in net.modules():
        if isinstance(module, LRREncoder):
            module.compile = False
        elif isinstance(module, ConfounderAttention):
            module.chunk = sys.maxsize
    return net


def export_network(net: nn.Module, path: str | os.PathLike, *, metadata: dict[str, str] | None = None) -> float:
    """Write a CausalFusionNet or LRRNet as an ONNX graph, atomically, and check it.

    Args:
        net: the network (its weights are copied; ``net`` is left as it was).
        path: the ``.onnx`` file to write.
        metadata: extra ``metadata_props`` (keys are written as given).

    Returns:
        The largest absolute difference between ONNX Runtime and eager
        PyTorch on a random 37 x 53 pair (the graph is traced at another
        size, so this checks the dynamic axes too).

    Raises:
        CausalFuseError: ``onnx`` or ``onnxruntime`` is not installed, the
            path cannot be written, or the graph does not give PyTorch's
            result.
    """
    from .io import atomic_path, check_writable

    onnx = _require("onnx", "ONNX export")
    ort = _require("onnxruntime", "ONNX export (its check)")
    path = Path(path)
    check_writable(path, bits=None)
    eager = _eager_copy(net)
    traceable = _Traceable(eager).eval()
    gen = torch.Generator().manual_seed(0)
    example = (torch.rand(1, 1, 64, 80, generator=gen), torch.rand(1, 1, 64, 80, generator=gen))
    check = (torch.rand(1, 1, 37, 53, generator=gen), torch.rand(1, 1, 37, 53, generator=gen))
    axes = {0: "batch", 2: "height", 3: "width"}
    with atomic_path(path) as tmp:
        with warnings.catch_warnings(), torch.no_grad():
            # The TorchScript exporter (dynamo=False): it traces this network
            # in a second or two and needs no onnxscript; torch 2.13 marks it
            # deprecated, hence the filter.
            warnings.simplefilter("ignore")
            torch.onnx.export(
                traceable, example, str(tmp), input_names=list(INPUTS), output_names=[OUTPUT],
                dynamic_axes={name: axes for name in (*INPUTS, OUTPUT)}, opset_version=OPSET, dynamo=False,
            )
        model = onnx.load(str(tmp))
        # The output has one channel; the exporter's shape inference leaves it symbolic.
        model.graph.output[0].type.tensor_type.shape.dim[1].dim_value = 1
        with torch.inference_mode():
            ref = eager(*check).numpy()
        got = onnxruntime_session(ort, model.SerializeToString(), "cpu").run([OUTPUT], {INPUTS[0]: check[0].numpy(), INPUTS[1]: check[1].numpy()})[0]
        diff = float(np.abs(got - ref).max())
        tolerance = CHECK_TOLERANCE * max(1.0, float(np.abs(ref).max()))
        if not diff <= tolerance:
            raise CausalFuseError(f"{path}: the exported graph differs from PyTorch by {diff:.3g} (more than {tolerance:.3g}); not written")
        props = {**(metadata or {}), f"{_KEY}check_max_abs_diff": f"{diff:.3g}"}
        onnx.helper.set_model_props(model, {**{p.key: p.value for p in model.metadata_props}, **props})
        model.doc_string = "causalfuse export: " + ", ".join(f"{k.removeprefix(_KEY)}={v}" for k, v in sorted(props.items()))
        onnx.save(model, str(tmp))
    return diff


def export_onnx(method: str = "causalfuse", weights: str | os.PathLike | None = None, path: str | os.PathLike = "model.onnx") -> dict[str, str]:
    """Export a network method with its weights to an ONNX file.

    Args:
        method: ``causalfuse``, ``causalfuse-nobaffm`` or ``lrrnet``.
        weights: its weights file (None: the bundled one; ``lrrnet`` needs
            the official file).
        path: the ``.onnx`` file, written atomically.

    Returns:
        The metadata recorded in the file (keys without the ``causalfuse.``
        prefix): format, method, weights_sha256, weights_file, version, opset,
        torch, check_max_abs_diff.
    """
    from . import __version__
    from .models.registry import create_method

    _check_network_method(method, "ONNX export")
    weights_path, sha = _weights_sha256(method, weights)
    fn = create_method(method, weights=weights, device="cpu")
    meta = {
        "format": FORMAT,
        "method": method,
        "weights_sha256": sha or "",
        "weights_file": weights_path.name if weights_path is not None else "",
        "version": __version__,
        "opset": str(OPSET),
        "torch": torch.__version__,
    }
    diff = export_network(fn.net, path, metadata={_KEY + k: v for k, v in meta.items()})
    return {**meta, "check_max_abs_diff": f"{diff:.3g}"}


# ---------------------------------------------------------------------------
# running an export
# ---------------------------------------------------------------------------
#: ONNX Runtime's graph optimisations for the sessions. Its extended and
#: layout (NCHWc) rewrites make these graphs slower on the CPU (causalfuse at
#: 480 x 640 on 2 cores, interleaved runs: 9.7 s basic, 14.4 s all): the time
#: goes into passes over the 256-channel codes, which the reorders add to.
GRAPH_OPTIMIZATION = "ORT_ENABLE_BASIC"


def _providers(ort: ModuleType, device: str) -> list[Any]:
    name = str(device).lower()
    available = ort.get_available_providers()
    has_cuda = "CUDAExecutionProvider" in available
    if name == "auto":
        return ["CUDAExecutionProvider", "CPUExecutionProvider"] if has_cuda else ["CPUExecutionProvider"]
    if name == "cpu":
        return ["CPUExecutionProvider"]
    if name == "cuda" or name.startswith("cuda:"):
        if not has_cuda:
            raise CausalFuseError(
                f"device {device!r} was asked for, but this ONNX Runtime has no CUDA support (the onnxruntime-gpu "
                "package has it, on a machine with a GPU); use --device cpu or auto"
            )
        index = name.partition(":")[2] or "0"
        if not index.isdigit():
            raise CausalFuseError(f"unknown device {device!r}: choose auto, cpu or cuda")
        return [("CUDAExecutionProvider", {"device_id": int(index)})]
    raise CausalFuseError(f"unknown device {device!r}: choose auto, cpu or cuda")


def onnxruntime_session(ort: ModuleType, model: str | bytes, device: str = "cpu") -> Any:
    """An ONNX Runtime session with the options the onnxruntime backend uses.

    Args:
        ort: the ``onnxruntime`` module.
        model: an ONNX file's path, or the model's bytes.
        device: ``auto``, ``cpu`` or ``cuda[:N]``.
    """
    options = ort.SessionOptions()
    options.intra_op_num_threads = torch.get_num_threads()  # as many threads as PyTorch would use
    options.graph_optimization_level = getattr(ort.GraphOptimizationLevel, GRAPH_OPTIMIZATION)
    options.log_severity_level = 3  # errors only: ORT's warnings are not the user's concern
    return ort.InferenceSession(model, options, providers=_providers(ort, device))


def _describe(method: str | None, sha: str | None) -> str:
    return f"{method} with weights sha256 {sha[:12]}..." if sha else f"{method}"


class OnnxRuntimeMethod(TiledMethod):
    """A causalfuse ONNX export run with ONNX Runtime as a fusion method.

    Attributes:
        path: the ONNX file.
        metadata: what it was exported from (keys without the ``causalfuse.`` prefix).
        weights_sha256: the SHA-256 of the weights it was exported from.
    """

    def __init__(self, session: Any, path: Path, metadata: dict[str, str], *, prepare=None, finish=None) -> None:
        super().__init__(torch.device("cpu"), prepare=prepare, finish=finish)
        self.session = session
        self.path = path
        self.metadata = metadata
        self.weights_sha256 = metadata.get("weights_sha256") or None

    def forward(self, ir: torch.Tensor, vi: torch.Tensor) -> torch.Tensor:
        feeds = {INPUTS[0]: np.ascontiguousarray(ir.numpy()), INPUTS[1]: np.ascontiguousarray(vi.numpy())}
        return torch.from_numpy(self.session.run([OUTPUT], feeds)[0])


def _open_export(ort: ModuleType, path: Path, device: str) -> tuple[Any, dict[str, str]]:
    if not path.is_file():
        raise CausalFuseError(f"{path}: no such ONNX file" + (" (it is a directory)" if path.is_dir() else ""))
    # The device is settled first: its error is not the file's.
    _providers(ort, device)
    try:
        session = onnxruntime_session(ort, str(path), device)
    except Exception as exc:  # noqa: BLE001 - ONNX Runtime's own exception types
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        raise CausalFuseError(f"{path}: not a readable ONNX model ({first})") from None
    raw = session.get_modelmeta().custom_metadata_map
    meta = {k.removeprefix(_KEY): v for k, v in raw.items() if k.startswith(_KEY)}
    if meta.get("format") != FORMAT:
        found = f" (format {meta['format']!r}, expected {FORMAT!r})" if "format" in meta else ""
        raise CausalFuseError(f"{path}: not an ONNX file exported by causalfuse{found}; make one with: causalfuse export -o FILE")
    if "CUDA" in str(device).upper() and "CUDAExecutionProvider" not in session.get_providers():
        raise CausalFuseError(f"device {device!r} was asked for, but ONNX Runtime found no usable GPU; use --device cpu or auto")
    return session, meta


def cache_dir() -> Path:
    """Where exports made on demand are kept: ``$XDG_CACHE_HOME/causalfuse/onnx`` (default ``~/.cache/causalfuse/onnx``)."""
    root = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(root) / "causalfuse" / "onnx"


def cached_export(method: str, weights: str | os.PathLike | None = None) -> Path:
    """The ONNX export of ``method`` with ``weights`` in :func:`cache_dir`, exported there first if it is not.

    The file's name holds the method, the weights' SHA-256, the opset and the
    package version, so other weights or another release never reuse it.
    """
    from . import __version__

    _check_network_method(method, "the onnxruntime backend")
    _, sha = _weights_sha256(method, weights)
    if sha is None:
        raise CausalFuseError(f"{method} needs its weights file to be exported: pass --weights PATH, or --onnx FILE")
    path = cache_dir() / f"{method}-{sha[:16]}-opset{OPSET}-v{__version__}.onnx"
    if not path.is_file():
        export_onnx(method, weights, path)
    return path


def onnxruntime_method(
    method: str = "causalfuse",
    weights: str | os.PathLike | None = None,
    device: str = "auto",
    *,
    onnx: str | os.PathLike | None = None,
) -> OnnxRuntimeMethod:
    """A network method run from its ONNX export with ONNX Runtime.

    Args:
        method: ``causalfuse``, ``causalfuse-nobaffm`` or ``lrrnet``.
        weights: the weights the export must have been made from (None: the
            bundled ones; for ``lrrnet``, whatever the file was exported from).
        device: ``auto`` (CUDA when this ONNX Runtime has it), ``cpu`` or ``cuda``.
        onnx: the ONNX file (``causalfuse export``). None exports ``method``
            with ``weights`` once into :func:`cache_dir` and uses that.

    Raises:
        CausalFuseError: ONNX Runtime is not installed; the file is missing,
            not ONNX, not a causalfuse export, or exported from another method
            or other weights; the device is not available.
    """
    _check_network_method(method, "--backend onnxruntime")
    ort = _require("onnxruntime", "--backend onnxruntime")
    path = cached_export(method, weights) if onnx is None else Path(onnx)
    expected = _weights_sha256(method, weights)[1]  # None: no weights asked for (lrrnet without --weights)
    session, meta = _open_export(ort, path, device)
    if meta.get("method") != method or (expected is not None and meta.get("weights_sha256") != expected):
        raise CausalFuseError(
            f"{path}: exported from {_describe(meta.get('method'), meta.get('weights_sha256'))}, but this run asks for "
            f"{_describe(method, expected)}; export that one (causalfuse export --method {method} ...) or pass its file"
        )
    prepare, finish = NETWORK_METHODS[method]
    return OnnxRuntimeMethod(session, path, meta, prepare=prepare, finish=finish)
