"""Scoring folders of fused images, on all cores.

The library side of ``causalfuse eval``::

    from causalfuse.metrics.folder import score_folder
    rows = score_folder("ir/", "vi/", {"ours": "fused/ours", "GFF": "fused/GFF"},
                        metrics=["MI", "VIF", "Qabf", "SSIM"], colour="gray", jobs=None)
    # rows: [ScoreRow(image="00001", method="ours", metric="MI", value=2.41), ...]
    means = summarise(rows, images=pair_names("ir/", "vi/"))
    # means: [Summary(method="ours", metric="MI", mean=2.38, std=0.41, n=21, nan=0, missing=0, comparable=True), ...]

Fused images are matched to their sources by file stem; every fused image
needs both sources (the error lists the ones missing), while source pairs
without a fused image are not scored: :func:`summarise` counts them as
missing when given the pairs (:func:`pair_names`), and flags a mean over
fewer images than other methods have as not comparable. Triplets are scored
in a process pool (``jobs`` processes, default all cores); the rows come back
in a fixed order (method, then image in natural order, then metric in the
order asked).

The pool's processes are forked from a fork server (``forkserver``), never
from the caller: forking a process that runs threads (torch's, tqdm's
monitor, a pool's queue feeder) can leave a lock held in the child and hang
it. The server starts once per process, single-threaded, with this module
imported, so each later call starts its workers in milliseconds.
"""

from __future__ import annotations

import contextlib
import multiprocessing
import multiprocessing.context
import multiprocessing.forkserver
import os
import pickle
import sys
import threading
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Hashable, Iterable, Iterator, Mapping, NamedTuple, Sequence, TypeVar

import numpy as np

from .._cores import available_cores
from ..data.paired import _shorten, list_images, natural_key
from ..errors import CausalFuseError
from ..io import load_image
from . import DEFAULT_METRICS, _registry, compute_prepared, prepare, resolve_metrics
from ._checks import Colour
from ._registry import MetricInfo

__all__ = [
    "ScoreRow", "Summary", "Triplet", "comparable_means", "find_triplets", "pair_names", "score_triplets", "score_folder", "summarise",
]  # fmt: skip

K = TypeVar("K", bound=Hashable)


class ScoreRow(NamedTuple):
    """One value of the tidy table: ``image, method, metric, value``."""

    image: str
    method: str
    metric: str
    value: float


@dataclass(frozen=True)
class Triplet:
    """A fused image with its two sources."""

    image: str
    method: str
    fused: Path
    ir: Path
    vi: Path


def _method_dirs(fused: str | os.PathLike | Mapping[str, str | os.PathLike]) -> dict[str, Path]:
    if isinstance(fused, Mapping):
        return {str(k): Path(v) for k, v in fused.items()}
    path = Path(fused)
    return {path.name or "fused": path}


def find_triplets(
    ir_dir: str | os.PathLike,
    vi_dir: str | os.PathLike,
    fused: str | os.PathLike | Mapping[str, str | os.PathLike],
) -> list[Triplet]:
    """Match every fused image (by stem) with its infrared and visible source.

    Args:
        ir_dir, vi_dir: folders of the sources.
        fused: one folder of fused images (the method is named after it), or
            ``{method name: folder}``.

    Raises:
        CausalFuseError: a folder is missing or empty, or fused images lack a
            source (the message lists them per folder).
    """
    ir_files, vi_files = list_images(ir_dir), list_images(vi_dir)
    for folder, files in ((ir_dir, ir_files), (vi_dir, vi_files)):
        if not files:
            raise CausalFuseError(f"{folder}: no images found")
    triplets: list[Triplet] = []
    for method, folder in _method_dirs(fused).items():
        found = list_images(folder)
        if not found:
            raise CausalFuseError(f"{folder}: no fused images found")
        missing = []
        no_ir = sorted((s for s in found if s not in ir_files), key=natural_key)
        no_vi = sorted((s for s in found if s not in vi_files), key=natural_key)
        if no_ir:
            missing.append(f"no infrared image in {ir_dir} for {_shorten(no_ir)}")
        if no_vi:
            missing.append(f"no visible image in {vi_dir} for {_shorten(no_vi)}")
        if missing:
            raise CausalFuseError(f"{folder}: " + "; ".join(missing))
        for stem in sorted(found, key=natural_key):
            triplets.append(Triplet(stem, method, found[stem], ir_files[stem], vi_files[stem]))
    return triplets


def pair_names(ir_dir: str | os.PathLike, vi_dir: str | os.PathLike) -> list[str]:
    """The stems that have both an infrared and a visible image, in natural order."""
    ir_files, vi_files = list_images(ir_dir), list_images(vi_dir)
    return sorted((stem for stem in ir_files if stem in vi_files), key=natural_key)


def _score_one(job: tuple[Triplet, tuple[str, ...], str]) -> list[ScoreRow]:
    t, names, colour = job
    for info in _extra_metrics:  # metrics the caller registered, unknown to a fresh process
        _registry._METRICS.setdefault(info.name.lower(), info)
    fused, ir, vi = load_image(t.fused), load_image(t.ir), load_image(t.vi)
    try:
        p = prepare(fused, ir, vi, colour)  # type: ignore[arg-type]
        values = compute_prepared(p, names, threads=_threads)
    except CausalFuseError as exc:
        raise CausalFuseError(f"{t.fused}: {exc}") from None
    return [ScoreRow(t.image, t.method, name, values[name]) for name in names]


# Threads per triplet: 1 in pool workers (the processes already fill the cores).
_threads: int | None = None
# In a pool worker: the caller's own metrics (see _init_worker).
_extra_metrics: tuple[MetricInfo, ...] = ()


def score_triplets(
    triplets: Sequence[Triplet],
    metrics: str | Sequence[str] | None = DEFAULT_METRICS,
    *,
    colour: Colour = "gray",
    jobs: int | None = None,
    progress: bool | Callable[[Iterable], Iterable] = False,
) -> list[ScoreRow]:
    """Score triplets in a process pool; rows in the order of ``triplets``.

    Args:
        triplets: from :func:`find_triplets`.
        metrics: names, a comma-separated string or ``"all"``.
        colour: ``"gray"`` or ``"vifb"`` (see :func:`causalfuse.metrics.compute`).
        jobs: processes (default: all cores; 1 scores in this process).
        progress: True for a tqdm bar, or a wrapper ``f(iterable) -> iterable``.

    Raises:
        CausalFuseError: unknown metric, unreadable image, sizes differ (the
            message names the file).
    """
    names = tuple(info.name for info in resolve_metrics(metrics))
    if colour not in ("gray", "vifb"):
        raise CausalFuseError(f"colour must be 'gray' or 'vifb', got {colour!r}")
    work = [(t, names, colour) for t in triplets]
    jobs = available_cores() if jobs is None or jobs <= 0 else int(jobs)
    jobs = min(jobs, max(1, len(work)))
    wrap: Callable[[Iterable], Iterable]
    if progress is True:
        from tqdm import tqdm

        wrap = lambda it: tqdm(it, total=len(work), unit="image", desc="scoring", leave=False)  # noqa: E731
    elif callable(progress):
        wrap = progress
    else:
        wrap = lambda it: it  # noqa: E731
    rows: list[ScoreRow] = []
    if jobs == 1:
        for chunk in wrap(map(_score_one, work)):
            rows.extend(chunk)
        return rows
    _check_main_importable()
    extra = _caller_metrics(names)
    chunksize = max(1, min(8, len(work) // (4 * jobs)))
    try:
        with ProcessPoolExecutor(max_workers=jobs, mp_context=_context(), initializer=_init_worker, initargs=(extra,)) as pool:
            for chunk in wrap(pool.map(_score_one, work, chunksize=chunksize)):
                rows.extend(chunk)
    except BrokenProcessPool:
        raise CausalFuseError(
            "a scoring process died before it finished (out of memory, or killed); when calling from a script, "
            "the script must start its work under `if __name__ == \"__main__\":` (the processes import it); "
            "jobs=1 scores in this process"
        ) from None
    return rows


def _check_main_importable() -> None:
    """The pool's processes import the caller's main script: refuse one that is not a file (``python - < x.py``)."""
    path = getattr(sys.modules["__main__"], "__file__", None)
    spec = getattr(sys.modules["__main__"], "__spec__", None)
    if spec is None and path is not None and not os.path.isfile(path):
        raise CausalFuseError(
            f"scoring in several processes needs the calling script as a file (they import it), not {path!r}; "
            "score with jobs=1, or run the script from a file"
        )


def _caller_metrics(names: Sequence[str]) -> tuple[MetricInfo, ...]:
    """The metrics among ``names`` registered outside causalfuse, checked to travel to the pool's processes."""
    extra = tuple(info for info in resolve_metrics(list(names)) if not info.fn.__module__.startswith("causalfuse."))
    interactive = getattr(sys.modules["__main__"], "__file__", None) is None  # a notebook or the REPL
    for info in extra:
        why = "it is defined in an interactive session, which the processes cannot import" if (
            interactive and info.fn.__module__ == "__main__") else None
        try:
            pickle.dumps(info)
        except Exception as exc:  # pickling raises many types (PicklingError, AttributeError, TypeError)
            why = str(exc)
        if why:
            raise CausalFuseError(
                f"metric {info.name!r} cannot be sent to the scoring processes ({why}); define it at the top level "
                "of an importable module, or score with jobs=1"
            )
    return extra


_SINGLE_THREADED = {"OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
_server_lock = threading.Lock()


def _context() -> multiprocessing.context.BaseContext:
    """The fork server where there is one (Linux, macOS), else spawn.

    The server is started here, once, with this module preloaded and the
    BLAS and OpenMP libraries told to use one thread: it has no threads when
    it forks a worker, and the workers (one per core) do not oversubscribe.
    A fork server someone else started already is used as it is.
    """
    if "forkserver" not in multiprocessing.get_all_start_methods():
        return multiprocessing.get_context("spawn")  # pragma: no cover - Windows
    ctx = multiprocessing.get_context("forkserver")
    with _server_lock:
        ctx.set_forkserver_preload([__name__])
        with _environment(_SINGLE_THREADED):
            multiprocessing.forkserver.ensure_running()
    return ctx


@contextlib.contextmanager
def _environment(values: Mapping[str, str]) -> Iterator[None]:
    """Environment variables set (where unset) for the block, as the fork server's process starts."""
    added = [k for k in values if k not in os.environ]
    for k in added:
        os.environ[k] = values[k]
    try:
        yield
    finally:
        for k in added:
            os.environ.pop(k, None)


def _init_worker(extra: tuple[MetricInfo, ...] = ()) -> None:
    # One process per core: keep each single-threaded so they do not fight.
    global _threads, _extra_metrics
    _threads = 1
    _extra_metrics = extra
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    try:
        import threadpoolctl  # type: ignore[import-not-found]

        threadpoolctl.threadpool_limits(1)
    except ImportError:
        pass


def score_folder(
    ir_dir: str | os.PathLike,
    vi_dir: str | os.PathLike,
    fused: str | os.PathLike | Mapping[str, str | os.PathLike],
    metrics: str | Sequence[str] | None = DEFAULT_METRICS,
    *,
    colour: Colour = "gray",
    jobs: int | None = None,
    progress: bool | Callable[[Iterable], Iterable] = False,
) -> list[ScoreRow]:
    """Score every fused image of one or more folders against its sources.

    Args:
        ir_dir, vi_dir: source folders (images matched by file stem).
        fused: a folder (method named after it) or ``{method: folder}``.
        metrics, colour, jobs, progress: as :func:`score_triplets`.

    Returns:
        Tidy rows ``ScoreRow(image, method, metric, value)``.
    """
    resolve_metrics(metrics)  # unknown names fail before any folder is read
    return score_triplets(find_triplets(ir_dir, vi_dir, fused), metrics, colour=colour, jobs=jobs, progress=progress)


class Summary(NamedTuple):
    """The mean of one metric for one method, and which images it averages.

    Attributes:
        mean, std: mean and population standard deviation of the finite values.
        n: the finite values, i.e. the images behind the mean.
        nan: images whose value is NaN (or inf), left out of the mean.
        missing: images the method should have (see :func:`summarise`) and has
            no score for.
        comparable: the mean covers every image that any method has a finite
            value for, so comparable means average the same images. False
            when the method lacks an image, or has NaN on one, that another
            method scored.
    """

    method: str
    metric: str
    mean: float
    std: float
    n: int
    nan: int
    missing: int
    comparable: bool


def summarise(rows: Iterable[ScoreRow], images: Iterable[str] | None = None) -> list[Summary]:
    """Mean and population std per (method, metric), NaN (and inf) values left out.

    The original MATLAB code averages with ``mean``, where one NaN makes the
    mean NaN; here NaN values are skipped and counted instead (``nan``), and
    every mean says how many images it covers (``n``).

    Args:
        rows: scores, e.g. from :func:`score_folder`.
        images: the images every method should have (e.g. the source pairs);
            default: every image that occurs in ``rows``.

    Returns:
        One :class:`Summary` per (method, metric), in the order the pairs first occur.
    """
    rows = list(rows)
    expected = set(images) if images is not None else {r.image for r in rows}
    groups: dict[tuple[str, str], dict[str, float]] = {}
    for r in rows:
        groups.setdefault((r.method, r.metric), {})[r.image] = r.value
    finite_images = {key: {image for image, v in values.items() if np.isfinite(v)} for key, values in groups.items()}
    comparable_of = comparable_means(finite_images, lambda key: key[1])
    out = []
    for (method, metric), values in groups.items():
        found = finite_images[(method, metric)]
        arr = np.array([v for v in values.values() if np.isfinite(v)], dtype=np.float64)
        mean = float(arr.mean()) if arr.size else float("nan")
        std = float(arr.std()) if arr.size else float("nan")
        missing = len(expected - set(values))
        out.append(Summary(method, metric, mean, std, len(found), len(values) - len(found), missing, comparable_of[(method, metric)]))
    return out


def comparable_means(finite: Mapping[K, set[str]], group: Callable[[K], Hashable]) -> dict[K, bool]:
    """Which means can be compared: each key's finite images against all its group's.

    Args:
        finite: per key (e.g. method and metric), the images with a finite value.
        group: the keys compared with one another (e.g. the metric, or the
            dataset and metric).

    Returns:
        For each key: True when its images are not empty and are every image
        that any key of its group has a finite value for (so comparable means
        average the same images and none can rank higher by leaving a hard
        image out).
    """
    scored_by_any: dict[Hashable, set[str]] = {}
    for key, images in finite.items():
        scored_by_any.setdefault(group(key), set()).update(images)
    return {key: bool(images) and images == scored_by_any[group(key)] for key, images in finite.items()}


def iter_rows_csv(rows: Iterable[ScoreRow]) -> Iterator[list[str]]:
    """CSV records of the tidy table (header first); values with 10 significant digits."""
    yield ["image", "method", "metric", "value"]
    for r in rows:
        yield [r.image, r.method, r.metric, f"{r.value:.10g}"]
