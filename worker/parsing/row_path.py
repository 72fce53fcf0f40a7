"""The row path: each chunk of whole records goes through Arrow when that is provably exact, else the exact parser.

One :class:`~worker.parsing.csv_stream.ExactStream` reads the header and every stretch Arrow may not
take; it is fed the download's own pieces, in order, so its answer (rows, bad rows, their lines,
raw text and reasons) is what :func:`~worker.parsing.csv_stream.parse_csv` gives for the whole file.
Whenever it stands at the start of a record, the pieces that follow are collected into a chunk
ending at a line feed, at the end of each download chunk or after :data:`CHUNK_BYTES`, and
:class:`~worker.parsing.arrow_chunks.ChunkReader` either converts the chunk (the exact parser then
only counts its lines) or declines it, and the exact parser parses it. A piece is only ever split
just after its last line break when that is a ``\\n``, which leaves the exact parser's segments as
they were.

Without pyarrow the whole file goes the exact way.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from typing import TYPE_CHECKING

from worker.parsing.columns import ParsedBatch, Plan
from worker.parsing.csv_stream import ExactStream, parse_csv, pieces
from worker.parsing.schema import RowSchema

if TYPE_CHECKING:
    from worker.parsing.arrow_chunks import ArrowBatch, ChunkReader

RETRY_AFTER_MAX = 64
"""After a chunk Arrow declined, the next 1, 2, 4, ... (at most this many) chunks go straight to the exact
parser: a file dense with bad records costs no wasted Arrow reads, a lone bad record only a chunk or two."""
CHUNK_BYTES = 4 << 20
"""Most bytes per Arrow chunk; a download chunk (1 MiB) that ends sooner ends the chunk too. Arrow
parses a chunk as one block on the row path's thread, at the same CPU per row for 1 or 4 MiB; a
bigger chunk only holds more memory while the writer is behind."""


def parse_rows(
    chunks: Iterable[bytes], schema: RowSchema, *, max_field_bytes: int, batch_rows: int, chunk_bytes: int = CHUNK_BYTES
) -> Iterator[ParsedBatch | ArrowBatch]:
    """What :func:`parse_csv` yields, with clean stretches as :class:`ArrowBatch` of at most ``batch_rows`` rows."""
    try:
        from worker.parsing.arrow_chunks import ChunkReader
    except ImportError:  # pyarrow missing: the exact parser alone gives the same answer, slower
        yield from parse_csv(chunks, schema, max_field_bytes=max_field_bytes, batch_rows=batch_rows)
        return
    exact = ExactStream(schema, max_field_bytes=max_field_bytes, batch_rows=batch_rows)
    path = _RowPath(exact, lambda plan: ChunkReader(plan, max_field_bytes), batch_rows, chunk_bytes)
    yield from path.run(chunks)


def _split(piece: bytes) -> int:
    """Just after the piece's last line break when that is a ``\\n`` (so the segments do not change), else 0."""
    end = piece.rfind(b"\n") + 1
    return end if end and piece.find(b"\r", end, len(piece) - 1) < 0 else 0


class _RowPath:
    def __init__(self, exact: ExactStream, make_reader: Callable[[Plan], ChunkReader], batch_rows: int, chunk_bytes: int) -> None:
        self.exact = exact
        self.make_reader = make_reader
        self.batch_rows = batch_rows
        self.chunk_bytes = chunk_bytes
        self.reader: ChunkReader | None = None
        self.held: list[bytes] = []
        """Pieces collected for the next chunk; non-empty only while the exact parser stands at a record start."""
        self.held_bytes = 0
        self.exact_chunks_left = 0
        self.backoff = 1

    def run(self, chunks: Iterable[bytes]) -> Iterator[ParsedBatch | ArrowBatch]:
        for chunk in chunks:
            for piece in pieces((chunk,)):
                yield from self._take(piece)
                if self.held_bytes >= self.chunk_bytes:
                    yield from self._chunk(final=False)
            if self.held:  # what came so far goes on now: a writer sees rows as the download arrives
                yield from self._chunk(final=False)
        if self.held:
            yield from self._chunk(final=True)
        yield from self.exact.finish()

    def _fast(self) -> bool:
        return self.exact.plan is not None and self.exact.at_record_start

    def _take(self, piece: bytes) -> Iterator[ParsedBatch]:
        """Hold the piece for a chunk, or give it to the exact parser (up to a record start, if one comes)."""
        while self.exact.plan is None and (end := piece.find(b"\n") + 1):
            # Line by line up to the header, so the records after it can start a chunk. The extra splits
            # only ever cut a header that is still open, which fails the file the same way at any split.
            yield from self.exact.push(piece[:end])
            piece = piece[end:]
        if not piece:
            return
        if self.held or self._fast():
            self._hold(piece)
            return
        end = _split(piece)
        if end:
            yield from self.exact.push(piece[:end])
            if self._fast():
                if end < len(piece):
                    self._hold(piece[end:])
                return
            piece = piece[end:]
        if piece:
            yield from self.exact.push(piece)

    def _hold(self, piece: bytes) -> None:
        self.held.append(piece)
        self.held_bytes += len(piece)

    def _chunk(self, *, final: bool) -> Iterator[ParsedBatch | ArrowBatch]:
        held, self.held, self.held_bytes = self.held, [], 0
        last = next((index for index in range(len(held) - 1, -1, -1) if _split(held[index])), None)
        if last is None:  # no record ends in a line feed here: a very long line, or "\r" line ends
            for piece in held:
                yield from self.exact.push(piece)
            return
        end = _split(held[last])
        data = b"".join([*held[:last], held[last][:end]])
        rest = [held[last][end:], *held[last + 1 :]] if end < len(held[last]) else held[last + 1 :]
        if self.reader is None:
            assert self.exact.plan is not None
            self.reader = self.make_reader(self.exact.plan)
        batch = None if self.exact_chunks_left else self.reader.read(data, self.exact.next_line)
        if self.exact_chunks_left:
            self.exact_chunks_left -= 1
        elif batch is None:
            self.exact_chunks_left, self.backoff = self.backoff, min(2 * self.backoff, RETRY_AFTER_MAX)
        else:
            self.backoff = 1
        if batch is not None:
            self.exact.skip_lines(len(batch.lines))
            for start in range(0, len(batch.lines), self.batch_rows):
                yield batch.slice(start, min(start + self.batch_rows, len(batch.lines)))
        else:
            for piece in held[:last]:
                yield from self.exact.push(piece)
            yield from self.exact.push(held[last][:end])
        for piece in rest:
            yield from self._take(piece)
        if final and self.held:
            yield from self._chunk(final=True)
