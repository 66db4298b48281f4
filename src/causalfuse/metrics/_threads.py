"""How many threads the metrics use: one policy for the thread pool of
:func:`causalfuse.metrics.compute` and the threads of one metric's own
work (the FFTs of Qcb and Qcv, Qp's and FMI's tasks)."""

from __future__ import annotations

import contextlib
import contextvars
import multiprocessing
import threading
from collections.abc import Iterator

from .._cores import available_cores

__all__ = ["metric_threads", "set_default_threads", "thread_count"]

_threads_default: int | None = None
#: Set by :func:`causalfuse.metrics.compute` while it runs metrics on the calling thread.
_call_threads: contextvars.ContextVar[int | None] = contextvars.ContextVar("causalfuse_call_threads", default=None)


def thread_count(threads: int | None) -> int:
    """Threads for one call: ``threads``, else the default of :func:`set_default_threads`."""
    if threads is None:
        threads = _threads_default
    if threads is None and multiprocessing.parent_process() is not None:
        threads = 1  # a worker of some process pool: the processes already share the cores
    if threads is None:
        threads = min(available_cores(), 4)
    return max(1, int(threads))


def metric_threads() -> int:
    """Threads for one metric's own work: 1 off the main thread, else those of the ``compute`` call running it.

    :func:`causalfuse.metrics.compute` runs metrics in worker threads and
    folder scoring in worker processes; those already keep every core busy,
    and nested threads only add contention (measured: 2-thread ``compute``
    of all metrics 141 ms with nested FFT threads, 116 ms without). When
    ``compute`` runs its metrics on the calling thread (one thread, or a
    single metric) they get its ``threads``; a metric function called
    directly on the main thread gets :func:`thread_count`'s default.
    """
    if threading.current_thread() is not threading.main_thread():
        return 1
    threads = _call_threads.get()
    return thread_count(None) if threads is None else threads  # 1 in a worker process of a pool


@contextlib.contextmanager
def running_with(threads: int) -> Iterator[None]:
    """Within the block, :func:`metric_threads` on this thread gives ``threads``."""
    token = _call_threads.set(threads)
    try:
        yield
    finally:
        _call_threads.reset(token)


def set_default_threads(threads: int | None) -> None:
    """Threads :func:`causalfuse.metrics.compute` (and Qcb's and Qcv's FFTs) use by default.

    None (the default): one per core, at most 4, and 1 inside a worker
    process of a pool (``multiprocessing.parent_process()`` is set), where
    the processes already use every core.
    """
    global _threads_default
    _threads_default = threads
