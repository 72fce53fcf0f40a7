"""Glue of one file transfer: download chunks → row path (Arrow or exact parser) → writer, counting bytes and rows.

The download and the row path run on their own thread a few batches ahead of the writer
(:mod:`worker.read_ahead`), and a writer that encodes its batches (JSON Lines, binary COPY rows) has them
encoded on a small pool meanwhile; the writes and every exception stay on the caller's thread, in
batch order. Progress is reported from both threads, one call at a time: per batch written, and per
MiB downloaded.

It never commits: the caller commits after the download finished cleanly and aborts otherwise, so
a truncated or failed download can never become a half file in the output.
"""

from __future__ import annotations

import gc
import threading
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass

from worker.parsing.columns import ParsedBatch
from worker.parsing.row_path import parse_rows
from worker.parsing.schema import RowSchema
from worker.read_ahead import ReadAhead
from worker.sinks.base import Batch, Encoded, EncodingWriter, FileWriter

PROGRESS_BYTES = 1 << 20
"""Progress is reported at least once per this many bytes read, batch or not."""
ENCODERS = 2
"""Batches encoded at once (JSON Lines, binary COPY rows), each on its own thread: Arrow's kernels
release the GIL, so two batches use both cores while the parser waits for the writer (pgpq's
binary encoding holds it, see :mod:`worker.sinks.pg_binary`)."""
BATCH_ROWS = 1 << 16
"""Most rows a sink gets at once: an Arrow chunk (a few MB) is one batch; the exact parser's stay per segment."""


@dataclass(frozen=True, slots=True)
class TransferResult:
    rows: int
    quarantined: int
    bytes: int
    """Content bytes the parser read (decompressed)."""
    wire_bytes: int = 0
    """Bytes downloaded (compressed for a gzip file); set by the caller, which owns the download."""


class _ByteCounter:
    """Counts bytes as the parser pulls them, so progress reflects what was actually read.

    ``idle`` runs when a chunk arrives and :data:`PROGRESS_BYTES` came in since the last report, on
    the parser's thread before it takes the next chunk: the lease is renewed as the download goes,
    however far behind the writer is.
    """

    def __init__(self, chunks: Iterable[bytes], idle: Callable[[], None]) -> None:
        self._chunks = chunks
        self._idle = idle
        self.bytes = 0
        self.reported = 0

    def __iter__(self) -> Iterator[bytes]:
        for chunk in self._chunks:
            self.bytes += len(chunk)
            if self.bytes - self.reported >= PROGRESS_BYTES:
                self._idle()
            yield chunk


@contextmanager
def _cyclic_gc_paused() -> Iterator[None]:
    """Millions of short-lived, acyclic row dicts trigger the cyclic collector for nothing.

    Reference counting still frees every row at once; only the cycle detector waits until the
    transfer ends, so memory stays flat while ~10% of the time goes back to parsing.
    """
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was_enabled:
            gc.enable()


def transfer_file(
    chunks: Iterable[bytes],
    *,
    schema: RowSchema,
    writer: FileWriter,
    source_name: str,
    max_field_bytes: int,
    on_progress: Callable[[int, int], None] | None = None,
    batch_rows: int = BATCH_ROWS,
) -> TransferResult:
    """Parse ``chunks`` into ``writer``; ``on_progress(bytes_so_far, rows_so_far)`` runs once per batch (and per MiB read).

    The progress callback is where the caller renews its lease and emits metrics; an exception it
    raises (e.g. the lease was lost) stops the transfer. It runs on this thread or the download's,
    never on both at once.
    """
    rows = quarantined = 0
    reporting = threading.Lock()

    def report() -> None:
        with reporting:
            counter.reported = counter.bytes
            if on_progress is not None:
                on_progress(counter.bytes, rows)

    counter = _ByteCounter(chunks, report)
    parsed = ReadAhead(parse_rows(counter, schema, max_field_bytes=max_field_bytes, batch_rows=batch_rows))
    encoding = writer if isinstance(writer, EncodingWriter) else None  # a Protocol's isinstance is slow: once
    with _cyclic_gc_paused(), parsed:
        for batch, encoded in _encoded(parsed, encoding):
            if batch.lines:
                if encoding is None or encoded is None:
                    writer.write_batch(batch)
                else:
                    encoding.write_encoded(batch, encoded)
                rows += len(batch.lines)
            if batch.bad:
                writer.write_bad(batch.bad, source_name)
                quarantined += len(batch.bad)
            report()
    return TransferResult(rows=rows, quarantined=quarantined, bytes=counter.bytes)


def _encoded(batches: Iterable[Batch], writer: EncodingWriter | None) -> Iterator[tuple[Batch, Encoded | None]]:
    """The batches in order, each with what ``writer.encode`` gave for it, encoded up to :data:`ENCODERS` ahead.

    Only Arrow batches are encoded ahead: the exact parser's are encoded in Python, which holds the
    GIL, so another thread would only contend with the parser's. None means the writer writes the
    batch itself (``writer`` is None: it does not encode; or the batch is the exact parser's). An encoding's exception is
    raised here, in batch order; on the way out, encodings not started are cancelled and running
    ones waited for.
    """
    if writer is None:
        for batch in batches:
            yield batch, None
        return
    pool = ThreadPoolExecutor(ENCODERS, thread_name_prefix="encode")
    pending: deque[tuple[Batch, Future[Encoded] | None]] = deque()
    try:
        for batch in batches:
            offload = batch.lines and not isinstance(batch, ParsedBatch)
            pending.append((batch, pool.submit(writer.encode, batch) if offload else None))
            while pending and (len(pending) >= ENCODERS or pending[0][1] is None):
                head, future = pending.popleft()
                yield head, None if future is None else future.result()
        while pending:
            head, future = pending.popleft()
            yield head, None if future is None else future.result()
    finally:
        pool.shutdown(wait=True, cancel_futures=True)
