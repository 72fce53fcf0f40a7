"""Binary COPY rows: per-batch encoders give one encoder's stream byte for byte, and both kinds of batch the same bytes."""

from __future__ import annotations

import pyarrow as pa
import pytest
from pgpq import ArrowToPostgresBinaryEncoder

from worker.parsing.arrow_chunks import ArrowBatch
from worker.parsing.columns import ParsedBatch
from worker.parsing.csv_stream import parse_csv
from worker.parsing.row_path import parse_rows
from worker.parsing.schema import ColumnType, RowSchema
from worker.sinks.arrow_tables import typed_columns
from worker.sinks.pg_binary import TRAILER, arrow_schema, stream_encoder, tuples

SCHEMA = RowSchema(types={"id": ColumnType.INT, "amount": ColumnType.FLOAT, "at": ColumnType.DATETIME})


def csv(rows: int) -> bytes:
    body = "".join(
        f"{i if i % 7 else ''},n{i} é\\x,{i / 3 if i % 5 else ''},{f'2026-01-01T00:00:{i % 60:02d}Z' if i % 3 else ''}\n"
        for i in range(rows)
    )
    return ("id,name,amount,at\n" + body).encode()


def joined(parts: list[bytes | memoryview]) -> bytes:
    return b"".join(bytes(part) for part in parts)


def test_per_batch_encoders_give_one_encoders_stream_byte_for_byte() -> None:
    """pgpq's wrapper hands out its buffer only past 1 MiB and the rest with finish(): batches of ~0.4 MiB cross that
    boundary at different places, so any state carried from one batch to the next would show here."""
    batches = list(parse_rows([csv(60_000)], SCHEMA, max_field_bytes=1 << 20, batch_rows=10_000))
    assert len(batches) > 4 and all(isinstance(batch, ArrowBatch) for batch in batches)
    names, types = batches[0].names, batches[0].types
    one = ArrowToPostgresBinaryEncoder(arrow_schema(names, types))
    stream = [one.write_header()]
    for batch in batches:
        table = pa.Table.from_arrays(
            [pa.array(["e"] * len(batch.lines)), pa.array(["k"] * len(batch.lines)), pa.array(batch.lines, pa.int64())]
            + typed_columns(batch),
            schema=arrow_schema(names, types),
        )
        stream.extend(one.write_batch(part) for part in table.to_batches())
    stream.append(one.finish())
    writer = stream_encoder(names, types)
    pieces = [writer.write_header(), *(piece for batch in batches for piece in tuples("e", "k", batch)), writer.finish()]
    assert bytes(pieces[-1]) == TRAILER, "the writer's encoder encoded no row: its finish() is the trailer alone"
    assert joined(pieces) == joined(stream)
    assert sum(len(batch.lines) for batch in batches) == 60_000


def test_an_arrow_batch_and_the_exact_parsers_batch_of_the_same_rows_encode_the_same_bytes() -> None:
    data = (
        "id,name,amount,at\n"
        "1,plain,1.5,2026-01-01T00:00:00Z\n"
        '2,"tab\tand\\backslash ""q""",-0,2026-01-01T05:30:00\n'
        "-9223372036854775808,é ünïcödé 😀,1e300,\n"
        "9223372036854775807,,5e-324,0001-01-01T00:00:00Z\n"
        ",x,,9999-12-31T23:59:59\n"
    ).encode()
    fast = list(parse_rows([data], SCHEMA, max_field_bytes=1 << 20, batch_rows=1000))
    exact = list(parse_csv([data], SCHEMA, max_field_bytes=1 << 20))
    assert [type(batch) for batch in fast] == [ArrowBatch] and [type(batch) for batch in exact] == [ParsedBatch]
    assert joined(tuples("e", "k", fast[0])) == joined(tuples("e", "k", exact[0]))
    assert len(joined(tuples("e", "k", fast[0]))) > 5 * 2


def test_rows_are_tuples_only_and_an_empty_batch_none() -> None:
    [batch] = parse_csv([b"id,name,amount,at\n1,a,2,2026-01-01T00:00:00Z\n"], SCHEMA, max_field_bytes=64)
    rows = joined(tuples("e", "k", batch))
    assert rows[:2] == (7).to_bytes(2, "big")  # the field count opens the row: no header before it
    assert len(rows) == 2 + 5 + 5 + 12 + 12 + 5 + 12 + 12, "count, then length and value of e, k, line, id, a, amount, at"
    assert tuples("e", "k", batch.__class__(batch.names, batch.types, [[]] * 4, [], [], batch.build)) == []


def test_line_numbers_follow_the_batch_whether_a_range_or_a_list() -> None:
    [batch] = parse_csv([b"id,name,amount,at\n1,a,2,\n2,b,3,\n"], SCHEMA, max_field_bytes=64)
    as_range = ParsedBatch(batch.names, batch.types, batch.columns, range(40, 42), [], batch.build)
    as_list = ParsedBatch(batch.names, batch.types, batch.columns, [40, 41], [], batch.build)
    assert joined(tuples("e", "k", as_range)) == joined(tuples("e", "k", as_list))
    other = ParsedBatch(batch.names, batch.types, batch.columns, [40, 43], [], batch.build)
    assert joined(tuples("e", "k", other)) != joined(tuples("e", "k", as_list))


def test_a_batch_whose_columns_are_not_the_schemas_types_is_refused() -> None:
    """from_arrays(schema=...) would cast an int32 column quietly; the check makes such a bug loud instead."""
    types = [ColumnType.INT, ColumnType.STR]
    table = pa.table({"id": pa.array([1], pa.int32()), "name": pa.array(["a"])})
    with pytest.raises(RuntimeError, match="has Arrow schema"):
        tuples("e", "k", ArrowBatch(["id", "name"], types, table, range(2, 3)))
