"""Reading ahead and writing behind on background threads, for folder runs.

While the main thread fuses a pair, one thread decodes the next pairs and
another encodes and writes the previous results. Both threads spend their time
in PIL's decoders and encoders and in NumPy, which release the GIL, so on two
cores they overlap with fusion instead of adding to it. Neither thread touches
PyTorch, whose own thread count is left as it is.
"""

from __future__ import annotations

import queue
import threading
from typing import Any, Callable, Hashable, Iterable, Iterator, TypeVar

from .errors import CausalFuseError

__all__ = ["prefetch", "InOrderWriter"]

T = TypeVar("T")
V = TypeVar("V")

_END = object()


def prefetch(
    items: Iterable[T], load: Callable[[T], V], *, depth: int = 2
) -> Iterator[tuple[T, V | None, Exception | None]]:
    """Yield ``(item, load(item), None)``, or ``(item, None, error)`` where ``load`` raised, in the order of ``items``.

    The loads run on a background thread, at most ``depth`` finished ones
    waiting. An error is handed over rather than raised so that the caller can
    report it under the item's name and go on. Close the generator (or let the
    loop end) to stop the thread; it is joined before ``close`` returns.
    """
    ready: queue.Queue = queue.Queue(maxsize=depth)
    stop = threading.Event()

    def hand_over(entry: object) -> bool:
        while not stop.is_set():
            try:
                ready.put(entry, timeout=0.05)
                return True
            except queue.Full:
                pass
        return False

    def work() -> None:
        for item in items:
            if stop.is_set():
                return
            try:
                entry = (item, load(item), None)
            except Exception as exc:  # noqa: BLE001 - handed to the consumer, which decides
                entry = (item, None, exc)
            if not hand_over(entry):
                return
        hand_over(_END)

    thread = threading.Thread(target=work, name="causalfuse-read-ahead", daemon=True)
    thread.start()
    try:
        while (entry := ready.get()) is not _END:
            yield entry
    finally:
        stop.set()
        thread.join()


class InOrderWriter:
    """Runs write jobs on one background thread, one after another in the order they were submitted.

    Each job is a callable; what it returns, or the :class:`CausalFuseError` it
    raised, is kept in :attr:`outcomes` under the job's key. With
    ``stop_on_error`` the first such error stops the writer, as a serial loop
    stops at its first failure: it is kept in :attr:`error` and the jobs
    submitted after it are dropped, not run. Any other exception always stops
    it the same way. :meth:`submit` blocks while ``depth`` jobs are waiting, so
    results never pile up in memory.
    """

    def __init__(self, *, depth: int = 2, stop_on_error: bool = True) -> None:
        self.outcomes: dict[Hashable, Any] = {}
        self.error: BaseException | None = None
        self._stop_on_error = stop_on_error
        self._jobs: queue.Queue = queue.Queue(maxsize=depth)
        self._thread = threading.Thread(target=self._run, name="causalfuse-writer", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while (entry := self._jobs.get()) is not _END:
            key, job = entry
            if self.error is not None:
                continue  # stopped: what came after the failure is dropped
            try:
                self.outcomes[key] = job()
            except CausalFuseError as exc:
                self.outcomes[key] = exc
                if self._stop_on_error:
                    self.error = exc
            except BaseException as exc:  # noqa: BLE001 - re-raised by the caller
                self.error = exc

    def submit(self, key: Hashable, job: Callable[[], Any]) -> None:
        """Queue ``job`` to run after the jobs submitted before it."""
        self._jobs.put((key, job))

    def close(self) -> None:
        """Wait until every submitted job has run (or been dropped after a failure); then the thread has ended."""
        if self._thread.is_alive():
            self._jobs.put(_END)
            self._thread.join()
