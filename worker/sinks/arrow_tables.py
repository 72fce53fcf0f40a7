"""Batches as typed Arrow columns, for the sinks that store types (Parquet, PostgreSQL's binary COPY).

Both kinds of batch must come out with the same Arrow types, since one file interleaves them and a
sink writes one schema per file: int64, float64, string, and ``timestamp[us, UTC]`` for datetimes.
An Arrow batch is already typed except its datetimes (checked text, :func:`datetimes` converts
them); the exact parser's columns are Python values, converted here column by column.
"""

from __future__ import annotations

import contextlib
from collections.abc import Sequence
from datetime import datetime
from typing import Any

import pyarrow as pa

from worker.parsing.arrow_chunks import ArrowBatch, datetimes
from worker.parsing.schema import ColumnType
from worker.sinks.base import Batch

TIMESTAMP = pa.timestamp("us", tz="UTC")
ARROW_TYPES = {
    ColumnType.INT: pa.int64(),
    ColumnType.FLOAT: pa.float64(),
    ColumnType.DATETIME: TIMESTAMP,
    ColumnType.STR: pa.string(),
}


def typed_fields(names: Sequence[str], types: Sequence[ColumnType]) -> list[pa.Field]:
    """One Arrow field per header name, typed by :data:`ARROW_TYPES`: what :func:`typed_columns` gives, as a schema."""
    return [pa.field(name, ARROW_TYPES[kind]) for name, kind in zip(names, types, strict=True)]


def typed_columns(batch: Batch) -> list[pa.Array | pa.ChunkedArray]:
    """The batch's good rows as one Arrow column per header name, typed by :data:`ARROW_TYPES`."""
    if isinstance(batch, ArrowBatch):  # already typed by Arrow; datetimes are checked text
        return [
            datetimes(column) if kind is ColumnType.DATETIME else column
            for column, kind in zip(batch.table.columns, batch.types, strict=True)
        ]
    return [_array(column, kind) for column, kind in zip(batch.columns, batch.types, strict=True)]


def _array(values: Sequence[Any], kind: ColumnType) -> pa.Array:
    if kind is not ColumnType.DATETIME:
        return pa.array(values, type=ARROW_TYPES[kind])
    strings = pa.array(values, type=pa.string())
    with contextlib.suppress(pa.ArrowInvalid):
        return strings.cast(TIMESTAMP)  # every value with an offset or Z: parsed in C
    with contextlib.suppress(pa.ArrowInvalid):
        return strings.cast(pa.timestamp("us")).cast(TIMESTAMP)  # every value without offset: UTC
    # A mix of naive and offset values: pyarrow takes a naive datetime as UTC for a UTC type, as the other sinks do.
    return pa.array([None if value is None else datetime.fromisoformat(value) for value in values], type=TIMESTAMP)
