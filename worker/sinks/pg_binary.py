"""Good rows as PostgreSQL's binary COPY format, encoded column-wise from Arrow by pgpq.

Why binary: the server then parses no text. Loading the benchmark's 1.66 M rows into the sink's table
took 5.0 s of server time as COPY text and 3.6 s as COPY binary, and the client builds the binary
rows from Arrow columns in Rust, where COPY text was built by Arrow's string kernels (Arrow batches)
or in Python (the exact parser's).

One COPY is either text or binary, and a file interleaves Arrow batches with the exact parser's, so
both kinds go binary: :func:`worker.sinks.arrow_tables.typed_columns` gives both the same Arrow
types, and :func:`arrow_schema` (a function of the header's names and types alone) is the schema of
every batch of the file; :func:`tuples` refuses a table that does not have it.

Why one pgpq encoder per batch. ``ArrowToPostgresBinaryEncoder`` encodes a stream: ``write_header()``
(signature, flags, header extension length: 19 bytes), ``write_batch()`` per batch, ``finish()`` (the
trailer, int16 -1). Two things make one encoder per file wrong for :meth:`encode`, which runs for
several batches at once on other threads: the encoder is mutable state, and its Python wrapper
keeps the encoded rows in an internal buffer that ``write_batch`` hands out only once it passes
1 MiB, so the rest of a batch comes out with a later batch or with ``finish()`` (``py/src/lib.rs``).
The rows themselves carry no stream state: per row, ``write_batch`` writes the field count (int16)
and each field's length (int32, -1 for null) and bytes, from that batch's arrays alone
(``core/src/lib.rs``). That is pgpq's source as of January 2026 (its files still say 0.10); the 0.12
wheel behaves the same, which ``tests/unit/test_pg_binary.py`` pins. So each batch gets an encoder
of its own: ``write_header()`` returns the header and empties the buffer (``write_batch`` refuses to
run before it), and what ``write_batch`` returns followed by ``finish()`` without its last two bytes
is exactly the batch's rows. The file's header and trailer come from one more encoder that the
writer holds and that encodes no batch (so its ``finish()`` is the trailer alone). The test checks
that the pieces concatenated are one encoder's stream, byte for byte, across the 1 MiB boundary.

pgpq names ``timestamp[us, UTC]`` PostgreSQL's ``timestamp``; on the wire ``timestamptz`` is the
same int64 of microseconds since 2000-01-01 UTC, so the column's type decides, as with text.

pgpq holds the GIL while it encodes (its ``write_batch`` does not release it), so the transfer's
encoding threads overlap only in Arrow's kernels (datetime parsing) and in the server's COPY.
"""

from __future__ import annotations

from collections.abc import Sequence

import pyarrow as pa
import pyarrow.compute as pc
from pgpq import ArrowToPostgresBinaryEncoder

from worker.parsing.schema import ColumnType
from worker.sinks.arrow_tables import typed_columns, typed_fields
from worker.sinks.base import Batch

META_FIELDS = (pa.field("_export_id", pa.string()), pa.field("_file_key", pa.string()), pa.field("_line", pa.int64()))
"""The sink's own columns ahead of the file's, as the COPY names them (``_loaded_at`` takes its default)."""
TRAILER = b"\xff\xff"
"""The binary COPY trailer: int16 -1 where a row's field count would be."""


def arrow_schema(names: Sequence[str], types: Sequence[ColumnType]) -> pa.Schema:
    """The Arrow schema of every row a file with this header sends, meta columns first."""
    return pa.schema([*META_FIELDS, *typed_fields(names, types)])


def stream_encoder(names: Sequence[str], types: Sequence[ColumnType]) -> ArrowToPostgresBinaryEncoder:
    """The encoder whose ``write_header()`` opens the file's COPY and whose ``finish()`` ends it."""
    return ArrowToPostgresBinaryEncoder(arrow_schema(names, types))


def tuples(export_id: str, file_key: str, batch: Batch) -> list[bytes | memoryview]:
    """The batch's good rows as binary COPY tuples (no header, no trailer); thread-safe."""
    count = len(batch.lines)
    if not count:
        return []
    schema = arrow_schema(batch.names, batch.types)
    meta = [_repeated(export_id, count), _repeated(file_key, count), _numbers(batch.lines)]
    table = pa.Table.from_arrays([*meta, *typed_columns(batch)], names=schema.names)
    if table.schema != schema:  # from_arrays(schema=...) would cast quietly; a wrong type must not reach the server
        raise RuntimeError(f"batch of {file_key} has Arrow schema {table.schema}, expected {schema}")
    encoder = ArrowToPostgresBinaryEncoder(schema)
    encoder.write_header()
    parts: list[bytes | memoryview] = [encoder.write_batch(part) for part in table.to_batches()]
    rest = encoder.finish()
    if rest[-2:] != TRAILER:
        raise RuntimeError("pgpq's finish() did not end with the binary COPY trailer")
    parts.append(memoryview(rest)[:-2])
    return [part for part in parts if len(part)]


def _repeated(text: str, count: int) -> pa.Array:
    """``text`` ``count`` times, as a plain string array (pgpq takes no dictionary); ~3 ns a row."""
    return pa.repeat(pa.scalar(text, pa.string()), count)


_COUNTING: list[pa.Array] = [pa.array([], type=pa.int64())]


def _numbers(lines: Sequence[int]) -> pa.Array:
    """The line numbers as int64: a step-1 range (every Arrow batch, most exact ones) from a cached 0..n-1
    plus its start, in C; anything else through Python ints."""
    if isinstance(lines, range) and lines.step == 1:
        counting = _COUNTING[0]  # read once: another thread may grow it meanwhile
        if len(counting) < len(lines):
            counting = _COUNTING[0] = pa.array(range(max(len(lines), 2 * len(counting))), type=pa.int64())
        return pc.add(counting.slice(0, len(lines)), pa.scalar(lines.start, pa.int64()))
    return pa.array(lines, type=pa.int64())
