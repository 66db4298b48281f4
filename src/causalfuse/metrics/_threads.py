"""How many threads the metrics use: one policy for the thread pool of
:func:`causalfuse.metrics.compute` and the FFTs of Qcb and Qcv."""

from __future__ import annotations

import multiprocessing
import os

__all__ = ["set_default_threads", "thread_count"]

_threads_default: int | None = None


def thread_count(threads: int | None) -> int:
    """Threads for one call: ``threads``, else the default of :func:`set_default_threads`."""
    if threads is None:
        threads = _threads_default
    if threads is None and multiprocessing.parent_process() is not None:
        threads = 1  # a worker of some process pool: the processes already share the cores
    if threads is None:
        try:
            threads = len(os.sched_getaffinity(0))
        except AttributeError:  # pragma: no cover - not Linux
            threads = os.cpu_count() or 1
        threads = min(threads, 4)
    return max(1, int(threads))


def set_default_threads(threads: int | None) -> None:
    """Threads :func:`causalfuse.metrics.compute` (and Qcb's and Qcv's FFTs) use by default.

    None (the default): one per core, at most 4, and 1 inside a worker
    process of a pool (``multiprocessing.parent_process()`` is set), where
    the processes already use every core.
    """
    global _threads_default
    _threads_default = threads
