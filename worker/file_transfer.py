"""Glue of one file transfer: download chunks → parser → writer, counting bytes and rows on the way.

It never commits: the caller commits after the download finished cleanly and aborts otherwise, so
a truncated or failed download can never become a half file in the output.
"""

from __future__ import annotations

import gc
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass

from worker.parsing.csv_stream import parse_csv
from worker.parsing.schema import RowSchema
from worker.sinks.base import FileWriter


@dataclass(frozen=True, slots=True)
class TransferResult:
    rows: int
    quarantined: int
    bytes: int
    """Content bytes the parser read (decompressed)."""
    wire_bytes: int = 0
    """Bytes downloaded (compressed for a gzip file); set by the caller, which owns the download."""


class _ByteCounter:
    """Counts bytes as the parser pulls them, so progress reflects what was actually read."""

    def __init__(self, chunks: Iterable[bytes]) -> None:
        self._chunks = chunks
        self.bytes = 0

    def __iter__(self) -> Iterator[bytes]:
        for chunk in self._chunks:
            self.bytes += len(chunk)
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
    batch_rows: int = 1000,
) -> TransferResult:
    """Parse ``chunks`` into ``writer``; ``on_progress(bytes_so_far, rows_so_far)`` runs once per batch.

    The progress callback is where the caller renews its lease and emits metrics; an exception it
    raises (e.g. the lease was lost) stops the transfer.
    """
    counter = _ByteCounter(chunks)
    rows = quarantined = 0
    with _cyclic_gc_paused():
        for batch in parse_csv(counter, schema, max_field_bytes=max_field_bytes, batch_rows=batch_rows):
            if batch.lines:
                writer.write_batch(batch)
                rows += len(batch.lines)
            if batch.bad:
                writer.write_bad(batch.bad, source_name)
                quarantined += len(batch.bad)
            if on_progress is not None:
                on_progress(counter.bytes, rows)
    return TransferResult(rows=rows, quarantined=quarantined, bytes=counter.bytes)
