"""Fusion quality metrics, as the field's original MATLAB code defines them.

Each metric is a single-channel function ``metric(fused, ir, vi, *, ...)`` on
float64 arrays on the 0-255 scale, registered by name with its direction
and reference (see :mod:`causalfuse.metrics._registry`). :func:`compute` is
the entry point for whole images: it validates the input, applies the colour
mode once, and returns ``{name: value}``.

Families: :mod:`.information` (MI, EN, CE), :mod:`.gradient` (AG, EI, SF,
Qabf), :mod:`.structural` (SSIM), :mod:`.statistics` (SD, RMSE, PSNR, CC,
SCD), :mod:`.visual` (VIF = VIFF), :mod:`.perceptual` (Qcb, Qcv, MS-SSIM) and
:mod:`.artefacts` (Nabf). Besides ``all`` (the 18 metrics of published
tables) there are metrics addressed by name or by group only: Qs, Qw, Qe
(``piella``) and Qy, Qc in :mod:`.structural`, NCIE in :mod:`.information`,
Qp in :mod:`.phase` (all seven in ``liu2012``), and FMI_pixel, FMI_dct,
FMI_edge, FMI_gradient in :mod:`.fmi` (``fmi``); see :func:`list_groups`.
"""

from __future__ import annotations

import importlib
import importlib.util
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Callable, Sequence

import numpy as np

from ..errors import CausalFuseError
from ._checks import Colour, Prepared, prepare
from ._registry import MetricInfo, get_metric, list_groups, list_metrics, register_metric
from ._threads import running_with as _running_with, set_default_threads, thread_count as _thread_count

# Importing the metric families registers them.
from . import fmi, gradient, information, phase, statistics, structural, visual  # noqa: E402,F401

for _family in ("perceptual", "artefacts"):
    # Optional while they are being written; once the file exists it must import.
    if importlib.util.find_spec(f"{__name__}.{_family}") is not None:
        importlib.import_module(f"{__name__}.{_family}")

_load_all = True

DEFAULT_METRICS: tuple[str, ...] = ("MI", "VIF", "Qabf", "SSIM")

__all__ = [
    "DEFAULT_METRICS",
    "MetricInfo",
    "compute",
    "compute_prepared",
    "get_metric",
    "list_groups",
    "list_metrics",
    "prepare",
    "register_metric",
    "resolve_metrics",
    "set_default_threads",
]


def resolve_metrics(metrics: str | Sequence[str] | None) -> list[MetricInfo]:
    """Metric records from names and groups: a sequence or a comma-separated string.

    A group name (``all``: the metrics of published tables; see
    :func:`list_groups`) stands for its metrics; names and groups mix, and
    each metric comes once, in the order given.

    Raises:
        CausalFuseError: an unknown name (the message lists the available ones).
    """
    if metrics is None:
        metrics = DEFAULT_METRICS
    if isinstance(metrics, str):
        metrics = [m.strip() for m in metrics.split(",") if m.strip()]
    groups = list_groups()
    out: list[MetricInfo] = []
    for name in metrics:
        for member in groups.get(name.lower(), [name]):
            info = get_metric(member)
            if info not in out:
                out.append(info)
    return out


def _check_sizes(infos: Sequence[MetricInfo], p: Prepared) -> None:
    """Refuse images smaller than a metric's ``min_size``, before any metric runs.

    The original code gives NaN or -inf there (a window that does not fit);
    an error names the metric instead of a number that would be dropped from
    a mean, or spoil it, without a word.
    """
    height, width = p.fused[0].shape
    too_small = [info for info in infos if min(height, width) < info.min_size]
    if too_small:
        names = " and ".join(f"{info.name} (at least {info.min_size} x {info.min_size})" for info in too_small)
        raise CausalFuseError(
            f"images of {height} x {width} pixels (height x width) are too small for {names}: "
            "the windows do not fit and the original code returns NaN or -inf; "
            f"leave {'it' if len(too_small) == 1 else 'them'} out or use larger images"
        )


def _tasks(info: MetricInfo, p: Prepared) -> list[Callable[[], float]]:
    """The single-channel calls one metric needs on a prepared triplet."""
    if info.colour == "side_by_side" and len(p.fused) > 1:
        cat = [np.concatenate(x, axis=1) for x in (p.fused, p.ir, p.vi)]
        return [lambda: float(info.fn(*cat))]
    return [lambda f=f, i=i, v=v: float(info.fn(f, i, v)) for f, i, v in zip(p.fused, p.ir, p.vi)]


def _combine(values: list[float]) -> float:
    return float(np.mean(values)) if len(values) > 1 else values[0]


def _run(info: MetricInfo, p: Prepared) -> float:
    """One metric on a prepared triplet, with the colour rule of its record."""
    return _combine([task() for task in _tasks(info, p)])


# Relative cost (ms per 630 x 460 channel, one thread), so that the slow
# metrics start first when threads share the work (longest first).
_COST = {
    "Qp": 500,
    "FMI_dct": 350,
    "FMI_pixel": 330,
    "FMI_gradient": 330,
    "FMI_edge": 50,
    "Qcb": 32,
    "MS-SSIM": 25,
    "Qcv": 22,
    "VIF": 21,
    "SSIM": 11,
    "Qabf": 11,
    "Nabf": 10,
    "MI": 4.6,
    "CE": 2.1,
    "EI": 1.6,
    "AG": 1.4,
    "SCD": 1.4,
    "CC": 1.4,
    # not in "all" (groups liu2012, piella)
    "Qe": 37,
    "Qc": 27,
    "Qy": 17,
    "Qs": 12,
    "Qw": 12,
    "NCIE": 5,
}


def compute_prepared(
    p: Prepared, metrics: str | Sequence[str] | None = DEFAULT_METRICS, *, threads: int | None = None
) -> dict[str, float]:
    """:func:`compute` on a triplet already passed through :func:`prepare`.

    With ``threads`` > 1 the metrics (and the channels of the VIFB colour
    mode) run concurrently in threads; NumPy and SciPy release the GIL in the
    heavy parts. The values are the same as with one thread.

    Raises:
        CausalFuseError: unknown metric, or images smaller than a metric's
            ``min_size``.
    """
    infos = resolve_metrics(metrics)
    _check_sizes(infos, p)
    n = _thread_count(threads)
    per_metric = {info.name: _tasks(info, p) for info in infos}
    if n == 1 or sum(len(t) for t in per_metric.values()) == 1:
        with _running_with(n):  # the metrics' own threads (FFTs, Qp's and FMI's tasks): n
            return {name: _combine([task() for task in tasks]) for name, tasks in per_metric.items()}
    order = sorted(per_metric, key=lambda name: -_COST.get(name, 0))
    with ThreadPoolExecutor(max_workers=n) as pool:
        futures = {name: [pool.submit(task) for task in per_metric[name]] for name in order}
        return {info.name: _combine([f.result() for f in futures[info.name]]) for info in infos}


def compute(
    fused: Any,
    ir: Any,
    vi: Any,
    metrics: str | Sequence[str] | None = DEFAULT_METRICS,
    *,
    colour: Colour = "gray",
    data_range: float | None = None,
    threads: int | None = None,
) -> dict[str, float]:
    """Score one fused image against its infrared and visible sources.

    Args:
        fused, ir, vi: images of the same height and width: NumPy arrays (H, W)
            or (H, W, 3), or torch tensors (H, W), (C, H, W), (1, C, H, W).
            uint8 is used as it is; uint16 is scaled by 255 / 65535 (not
            truncated); float is taken in [0, 1], or in [0, ``data_range``].
        metrics: names (case-insensitive), a comma-separated string, or
            ``"all"``; default the paper's four, MI, VIF, Qabf and SSIM.
        colour: ``"gray"`` (MATLAB ``rgb2gray`` on all three, rounded for
            8-bit data: the convention of published tables) or ``"vifb"``
            (VIFB's per-channel average; see :mod:`causalfuse.metrics._checks`).
        data_range: the value of white for float (or non-uint8/16 integer) input.
        threads: metrics run concurrently in this many threads (default: one
            per core, at most 4, or 1 in a pool's worker process; see
            :func:`set_default_threads`).

    Returns:
        ``{metric name: value}`` in the order asked. Constant images or zero
        denominators give what the original code gives (NaN or inf).

    Raises:
        CausalFuseError: sizes differ, bad dtype or range, unknown metric, or
            images smaller than a metric's ``min_size`` in height or width
            (e.g. SSIM 11, VIF 41 pixels; see :func:`get_metric`).
    """
    resolve_metrics(metrics)  # unknown names fail before any work
    p = prepare(fused, ir, vi, colour, data_range)
    return compute_prepared(p, metrics, threads=threads)
