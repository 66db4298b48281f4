"""How many threads the metrics use: one policy for the thread pool of
:func:`causalfuse.metrics.compute` and the threads of one metric's own
work (the FFTs of Qcb and Qcv, Qp's and FMI's tasks)."""

from __future__ import annotations

import multiprocessing
import os
import threading

__all__ = ["metric_threads", "set_default_threads", "thread_count"]

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


def metric_threads() -> int:
    """Threads for one metric's own work: :func:`thread_count` on the main thread, else 1.

    :func:`causalfuse.metrics.compute` runs metrics in worker threads and
    folder scoring in worker processes; those already keep every core busy,
    and nested threads only add contention (measured: 2-thread ``compute``
    of all metrics 141 ms with nested FFT threads, 116 ms without).
    """
    if threading.current_thread() is threading.main_thread():
        return thread_count(None)  # 1 in a worker process of a pool
    return 1


def set_default_threads(threads: int | None) -> None:
    """Threads :func:`causalfuse.metrics.compute` (and Qcb's and Qcv's FFTs) use by default.

    None (the default): one per core, at most 4, and 1 inside a worker
    process of a pool (``multiprocessing.parent_process()`` is set), where
    the processes already use every core.
    """
    global _threads_default
    _threads_default = threads
