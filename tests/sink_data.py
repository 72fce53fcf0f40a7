"""A CSV with every column type, nulls, quotes, odd text and bad rows, and its rows as the JSONL sink writes them."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from worker.file_transfer import transfer_file
from worker.parsing.schema import ColumnType, RowSchema
from worker.sinks.base import FileWriter, SinkResult

SCHEMA = RowSchema(
    types={"id": ColumnType.INT, "amount": ColumnType.FLOAT, "at": ColumnType.DATETIME},
    required=frozenset({"id"}),
)

CSV = (
    "id,name,amount,at\n"
    "1,plain,1.5,2026-01-01T00:00:00Z\n"
    '2,"quoted, with comma",-2,2026-01-01T05:30:00+05:30\n'
    '3,"tab\tand\\backslash ""q""",,\n'
    "4,é ünïcödé,1e3,2026-01-01T12:00:00\n"
    "oops,bad int,1,2026-01-01T00:00:00Z\n"
    '5,"multi\nline",0.25,2026-02-28T23:59:59.5Z\n'
    "6,short\n"
).encode()

EXPECTED = [
    {"id": 1, "name": "plain", "amount": 1.5, "at": "2026-01-01T00:00:00Z"},
    {"id": 2, "name": "quoted, with comma", "amount": -2.0, "at": "2026-01-01T05:30:00+05:30"},
    {"id": 3, "name": 'tab\tand\\backslash "q"', "amount": None, "at": None},
    {"id": 4, "name": "é ünïcödé", "amount": 1000.0, "at": "2026-01-01T12:00:00"},
    {"id": 5, "name": "multi\nline", "amount": 0.25, "at": "2026-02-28T23:59:59.500000Z"},
]
BAD_LINES = [6, 9]


def load(writer: FileWriter, data: bytes = CSV, schema: RowSchema = SCHEMA, batch_rows: int = 2) -> SinkResult:
    """Parse ``data`` into ``writer`` as the download step does, and commit."""
    chunks = [data[i : i + 7] for i in range(0, len(data), 7)]
    try:
        transfer_file(
            iter(chunks), schema=schema, writer=writer, source_name="f.csv", max_field_bytes=1024, batch_rows=batch_rows
        )
    except BaseException:
        writer.abort()
        raise
    return writer.commit()


def csv_of(rows: int, start: int = 0, extra: str | None = None) -> bytes:
    header = "id,name,amount,at" + (f",{extra}" if extra else "")
    tail = ",x" if extra else ""
    body = "".join(f"{i},n{i},{i / 4},2026-01-01T00:00:{i % 60:02d}Z{tail}\n" for i in range(start, start + rows))
    return (header + "\n" + body).encode()


def files(root: Path) -> list[str]:
    return sorted(str(p.relative_to(root)) for p in root.rglob("*") if p.is_file())


def as_instants(rows: list[dict[str, Any]], column: str = "at") -> list[dict[str, Any]]:
    """Rows with ``column`` as aware datetimes (naive text is UTC): what Parquet and timestamptz hold."""
    out = []
    for row in rows:
        value = row[column]
        if value is not None:
            value = datetime.fromisoformat(value)
            value = value if value.tzinfo is not None else value.replace(tzinfo=UTC)
        out.append({**row, column: value})
    return out
