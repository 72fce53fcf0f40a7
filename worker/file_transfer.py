"""Glue of one file transfer: download chunks → row path (Arrow or exact parser) → writer, counting bytes and rows.

The download and the row path run on their own thread a few batches ahead of the writer
(:mod:`worker.read_ahead`); progress, the writer and every exception stay on the caller's thread.

It never commits: the caller commits after the download finished cleanly and aborts otherwise, so
a truncated or failed download can never become a half file in the output.
"""

from __future__ import annotations

import gc
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass

from worker.parsing.row_path import parse_rows
from worker.parsing.schema import RowSchema
from worker.read_ahead import Mark, ReadAhead
from worker.sinks.base import FileWriter

PROGRESS_BYTES = 1 << 20
"""Progress is reported at least once per this many bytes read, batch or not."""
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

    ``idle`` runs (on the parser's thread) when a chunk arrives and :data:`PROGRESS_BYTES` came in
    since the last report: the row path holds a few MB before its next batch, and the lease must not
    wait for it.
    """

    def __init__(self, chunks: Iterable[bytes]) -> None:
        self._chunks = chunks
        self.idle: Callable[[], None] = lambda: None
        self.bytes = 0
        self.reported = 0

    def __iter__(self) -> Iterator[bytes]:
        for chunk in self._chunks:
            self.bytes += len(chunk)
            if self.bytes - self.reported >= PROGRESS_BYTES:
                self.reported = self.bytes
                self.idle()
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
    raises (e.g. the lease was lost) stops the transfer.
    """
    rows = quarantined = 0

    def report() -> None:
        counter.reported = counter.bytes
        if on_progress is not None:
            on_progress(counter.bytes, rows)

    counter = _ByteCounter(chunks)
    ahead = ReadAhead(parse_rows(counter, schema, max_field_bytes=max_field_bytes, batch_rows=batch_rows))
    counter.idle = ahead.mark
    with _cyclic_gc_paused(), ahead:
        for batch in ahead:
            if isinstance(batch, Mark):
                report()
                continue
            if batch.lines:
                writer.write_batch(batch)
                rows += len(batch.lines)
            if batch.bad:
                writer.write_bad(batch.bad, source_name)
                quarantined += len(batch.bad)
            report()
    return TransferResult(rows=rows, quarantined=quarantined, bytes=counter.bytes)
