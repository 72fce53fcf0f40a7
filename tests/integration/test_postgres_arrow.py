"""PostgreSQL loads Arrow batches (COPY text built by Arrow) exactly as it loads the exact parser's batches."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.pg import TEST_DATABASE_URL, scratch_schema, table_rows
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
