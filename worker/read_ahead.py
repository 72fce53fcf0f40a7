"""Run an iterator on its own thread, a bounded number of items ahead of the loop that consumes it.

The row path's heavy steps (socket reads, inflating, Arrow's CSV reader) and the sinks' (Arrow's
text kernels, file writes, ``COPY``) release the GIL, so on two cores the download and parse of
the next chunk overlap the writing of the last one. The queue is bounded (:data:`DEPTH` items of a
few MB each), so memory stays flat when the writer is the slower side.

Everything the consumer sees happens on the consumer's thread: an exception the producer raises is
raised there, after the items produced before it, and when the consumer leaves early (an error, a
lost lease) the producer is stopped and joined before the ``with`` block ends.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Iterable, Iterator
from types import TracebackType
from typing import Generic, TypeVar

T = TypeVar("T")

DEPTH = 2
"""Items the producer may be ahead: each is one batch (a chunk of a few MB)."""
_POLL_SECONDS = 0.1
"""How often a producer blocked on a full queue looks whether the consumer has left."""


class _End:
    """The producer finished: with the exception it raised, if any."""

    __slots__ = ("error",)

    def __init__(self, error: BaseException | None) -> None:
        self.error = error


class ReadAhead(Generic[T]):
    """``with ReadAhead(source) as items: for item in items: ...`` with ``source`` iterated on another thread."""

    def __init__(self, source: Iterable[T], depth: int = DEPTH) -> None:
        self._source = source
        self._queue: queue.Queue[T | _End] = queue.Queue(maxsize=depth)
        self._stopped = threading.Event()
        self._thread = threading.Thread(target=self._produce, name="read-ahead", daemon=True)

    def __enter__(self) -> ReadAhead[T]:
        self._thread.start()
        return self

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None, trace: TracebackType | None) -> None:
        self._stopped.set()
        self._thread.join()

    def __iter__(self) -> Iterator[T]:
        while True:
            item = self._queue.get()
            if isinstance(item, _End):
                if item.error is not None:
                    raise item.error
                return
            yield item

    def _produce(self) -> None:
        iterator = iter(self._source)
        try:
            for item in iterator:
                if not self._put(item):
                    return
        except BaseException as exc:  # handed to the consumer, which raises it on its own thread
            self._put(_End(exc))
            return
        finally:
            close = getattr(iterator, "close", None)
            if close is not None:
                close()
        self._put(_End(None))

    def _put(self, item: T | _End) -> bool:
        while not self._stopped.is_set():
            try:
                self._queue.put(item, timeout=_POLL_SECONDS)
            except queue.Full:
                continue
            return True
        return False
