"""Deterministic CSV bodies of any size, streamed in constant memory with an exact length.

Data rows cycle through a pool of pre-rendered rows (about one chunk's worth) generated from a
seed, so serving a 1 GB file costs little more than yielding the same bytes object over and over,
and the ``Content-Length`` follows arithmetically from the pool. Malformed rows are derived from the
pool row they replace *with the same length*, so injecting them never changes the length either.
"""

from __future__ import annotations

import random
import struct
import zlib
from collections.abc import AsyncIterator, Callable, Iterator, Sequence

from starlette.responses import StreamingResponse

CHUNK_SIZE = 64 * 1024

RowMaker = Callable[[random.Random], Sequence[str]]
"""Produces the fields of one data row from the seeded generator (fields must not need quoting)."""

_NOT_A_NUMBER = bytes.maketrans(b"0123456789.-", b"abcdefghij_x")


class CsvFile:
    """One CSV file: a header plus ``rows`` data rows, some of them malformed on purpose.

    Data row number ``r`` (1-based) is malformed when ``r`` is a multiple of ``bad_rows_every``;
    malformed rows alternate between one column short (the first comma becomes ``;``) and a
    non-numeric value in ``numeric_column``.
    """

    def __init__(
        self,
        header: Sequence[str],
        rows: int,
        seed: str,
        make_row: RowMaker,
        *,
        numeric_column: int,
        bad_rows_every: int | None = None,
    ) -> None:
        self.header = (",".join(header) + "\n").encode()
        self.rows = rows
        self.numeric_column = numeric_column
        self.bad_rows_every = bad_rows_every
        rng = random.Random(seed)
        pool: list[bytes] = []
        offsets = [0]
        while len(pool) < rows and offsets[-1] < CHUNK_SIZE:
            pool.append((",".join(make_row(rng)) + "\n").encode())
            offsets.append(offsets[-1] + len(pool[-1]))
        self._pool = pool
        self._offsets = offsets
        self._cycle = b"".join(pool)

    @property
    def cycle(self) -> bytes:
        """The block that :meth:`chunks` yields again and again (the same object each time)."""
        return self._cycle

    @property
    def content_length(self) -> int:
        if not self._pool:
            return len(self.header)
        cycles, rest = divmod(self.rows, len(self._pool))
        return len(self.header) + cycles * len(self._cycle) + self._offsets[rest]

    def chunks(self) -> Iterator[bytes]:
        """The body, one pool cycle (about ``CHUNK_SIZE`` bytes) at a time."""
        yield self.header
        if not self._pool:
            return
        size = len(self._pool)
        for first in range(0, self.rows, size):
            yield self._block(first, min(size, self.rows - first))

    def _block(self, first: int, count: int) -> bytes:
        """Rows ``first .. first+count-1`` (0-based); ``first`` is always a multiple of the pool size."""
        every = self.bad_rows_every
        if every is None or (first + count) // every == first // every:  # no bad row in this block
            return self._cycle if count == len(self._pool) else self._cycle[: self._offsets[count]]
        rows = self._pool[:count]
        for number in range((first // every + 1) * every, first + count + 1, every):
            rows[number - 1 - first] = self._malformed(rows[number - 1 - first], number // every)
        return b"".join(rows)

    def _malformed(self, row: bytes, nth_bad: int) -> bytes:
        if nth_bad % 2:
            return row.replace(b",", b";", 1)
        fields = row.split(b",")
        fields[self.numeric_column] = fields[self.numeric_column].translate(_NOT_A_NUMBER)
        return b",".join(fields)


def csv_response(file: CsvFile, filename: str) -> StreamingResponse:
    """Stream ``file`` with its exact ``Content-Length``.

    The body is an async generator on purpose: a sync iterator would make Starlette hop to a worker
    thread for every chunk, which costs more than producing the chunk.
    """

    async def body() -> AsyncIterator[bytes]:
        for chunk in file.chunks():
            yield chunk

    return StreamingResponse(
        body(),
        media_type="text/csv",
        headers={
            "Content-Length": str(file.content_length),
            "Content-Disposition": f'attachment; filename="{filename}"',
        },
    )


_GZIP_HEADER = bytes([0x1F, 0x8B, 8, 0, 0, 0, 0, 0, 0, 255])
"""A gzip member's header: deflate, no flags, no mtime (deterministic), unknown OS."""


def gzipped(file: CsvFile) -> Iterator[bytes]:
    """``file`` as one gzip member (level 1: the simulator should cost little CPU), deterministic.

    Each chunk is deflated from a reset state and ends with a full flush, so a chunk that repeats (the
    pool's cycle, most of a big file) deflates to the same bytes every time: it is compressed once and
    reused, and serving a 1 GB gzip costs a CRC pass instead of a compression pass (which took the
    CPU the worker under test needs).
    """
    cycle: bytes | None = None
    crc = size = 0
    yield _GZIP_HEADER
    for chunk in file.chunks():
        if chunk is not file.cycle:
            yield _deflated(chunk)
        else:
            cycle = _deflated(chunk) if cycle is None else cycle
            yield cycle
        crc = zlib.crc32(chunk, crc)
        size += len(chunk)
    yield zlib.compressobj(1, zlib.DEFLATED, -zlib.MAX_WBITS).flush(zlib.Z_FINISH)  # the last, empty block
    yield struct.pack("<II", crc, size & 0xFFFFFFFF)


def _deflated(chunk: bytes) -> bytes:
    """``chunk`` deflated from a reset state, ending on a byte boundary with the state reset again."""
    deflate = zlib.compressobj(1, zlib.DEFLATED, -zlib.MAX_WBITS)
    return deflate.compress(chunk) + deflate.flush(zlib.Z_FULL_FLUSH)


def gzip_response(file: CsvFile, filename: str) -> StreamingResponse:
    """Stream ``file`` gzipped, as signed storage serves a ``.csv.gz``: no ``Content-Encoding``, and
    an exact ``Content-Length`` found by compressing once before streaming (constant memory)."""
    length = sum(len(chunk) for chunk in gzipped(file))

    async def body() -> AsyncIterator[bytes]:
        for chunk in gzipped(file):
            yield chunk

    return StreamingResponse(
        body(),
        media_type="application/octet-stream",
        headers={"Content-Length": str(length), "Content-Disposition": f'attachment; filename="{filename}"'},
    )
