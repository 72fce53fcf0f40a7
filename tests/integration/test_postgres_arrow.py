"""PostgreSQL loads Arrow batches exactly as it loads the exact parser's batches, alone or interleaved in one binary COPY."""

from __future__ import annotations

import math
from collections.abc import Iterator
from datetime import UTC, datetime

import pytest

from tests.pg import TEST_DATABASE_URL, query, scratch_schema, table_rows
from worker.parsing.arrow_chunks import ArrowBatch
from worker.parsing.csv_stream import parse_csv
from worker.parsing.row_path import parse_rows
from worker.parsing.schema import ColumnType, RowSchema
from worker.sinks.postgres import PostgresSink

pytestmark = pytest.mark.integration

SCHEMA = RowSchema(types={"id": ColumnType.INT, "amount": ColumnType.FLOAT, "at": ColumnType.DATETIME})
CLEAN = (
    "id,name,amount,at\n"
    "1,plain,1.5,2026-01-01T00:00:00Z\n"
    '2,"quoted, with comma",-0,2026-01-01T05:30:00\n'
    '3,"tab\tand\\backslash ""q""",,\n'
    "4,é ünïcödé,1e300,\n"
    ",,1e-7,2026-02-28T23:59:59Z\n"
    "9223372036854775807,x,12345678901234.5,0001-01-01T00:00:00Z\n"
).encode()


@pytest.fixture
def schema() -> Iterator[str]:
    with scratch_schema() as name:
        yield name


def test_arrow_batches_load_the_same_rows_lines_and_types(schema: str) -> None:
    sink = PostgresSink(TEST_DATABASE_URL, "test", schema, "t")
    fast = list(parse_rows([CLEAN], SCHEMA, max_field_bytes=1 << 20, batch_rows=1000))
    assert fast and all(isinstance(batch, ArrowBatch) for batch in fast)
    for file_key, batches in (("0-fast", fast), ("0-exact", list(parse_csv([CLEAN], SCHEMA, max_field_bytes=1 << 20)))):
        writer = sink.open_file("e", file_key, "f.csv")
        for batch in batches:
            writer.write_batch(batch)
        assert writer.commit().rows == 6
    columns = "_line, id, name, amount, at"
    rows = table_rows(schema, "t", columns, _file_key="0-fast")
    assert rows == table_rows(schema, "t", columns, _file_key="0-exact")
    assert [row["_line"] for row in rows] == [2, 3, 4, 5, 6, 7]
    assert str(rows[1]["amount"]) == "-0.0" and rows[2]["name"] == 'tab\tand\\backslash "q"'


CLEAN_ROWS = (
    "1,plain,1.5,2026-01-01T00:00:00Z\n"
    '2,"tab\tand\\backslash ""q""",-0,2026-01-01T05:30:00\n'
    "-9223372036854775808,é ünïcödé 😀 \\N,1e300,\n"
    "9223372036854775807,,5e-324,0001-01-01T00:00:00Z\n"
    ",\\t literal,,9999-12-31T23:59:59\n"
    "0,x,-1.7976931348623157e308,2026-02-28T23:59:59Z\n"
)
DIRTY_ROWS = (
    '10,"multi\nline, ""quoted""",0.1,2026-01-01T05:30:00+05:30\n'
    "oops,bad int,1,2026-01-01T00:00:00Z\n"
    "11,\\,-0.0,2026-01-01T00:00:00.123456\n"
    ",,,\n"
    "12,short\n"
    "13,\ttab first,2.2250738585072014e-308,2026-06-30T12:00:00-07:00\n"
)


def test_a_file_mixing_arrow_and_exact_batches_reads_back_as_the_exact_parsers_values(schema: str) -> None:
    """One binary COPY takes both kinds of batch in turn; what PostgreSQL holds afterwards is what the exact parser
    gives for the whole file (the oracle), value for value, null for null, including the sign of zero."""
    from worker.file_transfer import transfer_file

    pieces = [
        b"id,name,amount,at\n" + CLEAN_ROWS.encode(),
        DIRTY_ROWS.encode(),  # Arrow declines it (quoted line break, bad rows): exact
        CLEAN_ROWS.encode(),  # straight to the exact parser after a declined chunk
        CLEAN_ROWS.encode(),
        CLEAN_ROWS.encode(),  # Arrow again
    ]
    data = b"".join(pieces)
    kinds = {type(batch).__name__ for batch in parse_rows(pieces, SCHEMA, max_field_bytes=1 << 20, batch_rows=4)}
    assert kinds == {"ArrowBatch", "ParsedBatch"}
    writer = PostgresSink(TEST_DATABASE_URL, "test", schema, "t").open_file("e", "0-mixed", "f.csv")
    transfer_file(pieces, schema=SCHEMA, writer=writer, source_name="f.csv", max_field_bytes=1 << 20, batch_rows=4)
    result = writer.commit()

    oracle = list(parse_csv([data], SCHEMA, max_field_bytes=1 << 20))
    expected = [
        {"_line": line, **{name: _instant(value) if name == "at" else value for name, value in row.items()}}
        for batch in oracle
        for line, row in zip(batch.lines, batch.rows, strict=True)
    ]
    bad = [(row.line, row.reason, row.raw) for batch in oracle for row in batch.bad]
    assert (result.rows, result.quarantined) == (len(expected), len(bad)) == (28, 2)
    rows = table_rows(schema, "t", "_line, id, name, amount, at")
    assert rows == expected
    signs = [math.copysign(1, row["amount"]) for row in rows if row["amount"] is not None]
    assert signs == [math.copysign(1, row["amount"]) for row in expected if row["amount"] is not None]
    assert query(f'SELECT _line, reason, raw FROM "{schema}".t_quarantine ORDER BY _line') == bad
    assert {row["id"] for row in rows} >= {-(2**63), 2**63 - 1, None}


def _instant(value: str | None) -> datetime | None:
    """The exact parser's datetime text as timestamptz reads back: naive text is UTC."""
    if value is None:
        return None
    moment = datetime.fromisoformat(value)
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)
