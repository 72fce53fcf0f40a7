"""Parquet sink: ``<root>/<export_id>/<safe_name>.parquet`` per provider file, zstd, typed columns.

Columns are typed from the provider's row schema (int64, float64, timestamp UTC, string). Batches
are buffered up to :data:`ROW_GROUP_ROWS` rows and written as one row group, so memory stays
bounded while the file streams. Temp name and rename as for JSONL (:mod:`worker.sinks.files`), so
the file is exactly once per provider file; bad rows go to ``<safe_name>.quarantine.jsonl``.

pyarrow is an optional extra (``pip install 'async-export-worker[parquet]'``); only this module
imports it.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from worker.parsing.columns import BadRow, ParsedBatch
from worker.parsing.schema import ColumnType
from worker.sinks.base import SinkResult
from worker.sinks.files import Quarantine, discard_attempts, fsync_directory, new_token, target_directory

ROW_GROUP_ROWS = 128 * 1024
"""Rows per row group: large enough for good compression and scans, small enough for ~10 MB of buffer."""
TIMESTAMP = pa.timestamp("us", tz="UTC")
ARROW_TYPES = {
    ColumnType.INT: pa.int64(),
    ColumnType.FLOAT: pa.float64(),
    ColumnType.DATETIME: TIMESTAMP,
    ColumnType.STR: pa.string(),
}


class ParquetSink:
    def __init__(self, root: Path) -> None:
        self.root = Path(root)

    def open_file(self, export_id: str, file_key: str, safe_name: str) -> ParquetFileWriter:
        return ParquetFileWriter(target_directory(self.root, export_id, file_key, safe_name, ".parquet"), safe_name)

    def discard_attempts(self, export_id: str) -> int:
        return discard_attempts(self.root, export_id)


class ParquetFileWriter:
    """One attempt at one file; the Parquet writer opens with the first batch (which brings the header)."""

    def __init__(self, directory: Path, safe_name: str) -> None:
        token = new_token()
        self.path = directory / f"{safe_name}.parquet"
        self._tmp = directory / f".{safe_name}.{token}.tmp"
        self._quarantine = Quarantine(directory, safe_name, token)
        self._schema: pa.Schema | None = None
        self._writer: pq.ParquetWriter | None = None
        self._pending: list[pa.RecordBatch] = []
        self._pending_rows = 0
        self._rows = 0
        self._result: SinkResult | None = None
        self._closed = False

    def write_batch(self, batch: ParsedBatch) -> None:
        if not batch.lines:
            return
        self._require_open()
        if self._schema is None:
            self._schema = pa.schema(
                [pa.field(name, ARROW_TYPES[kind]) for name, kind in zip(batch.names, batch.types, strict=True)]
            )
        arrays = [_array(column, kind) for column, kind in zip(batch.columns, batch.types, strict=True)]
        self._pending.append(pa.RecordBatch.from_arrays(arrays, schema=self._schema))
        self._pending_rows += len(batch.lines)
        self._rows += len(batch.lines)
        if self._pending_rows >= ROW_GROUP_ROWS:
            self._flush()

    def write_bad(self, bad: list[BadRow], source_name: str) -> None:
        if bad:
            self._require_open()
            self._quarantine.write(bad, source_name)

    def commit(self) -> SinkResult:
        if self._result is not None:
            return self._result
        self._require_open()
        if self._schema is None:
            self._schema = pa.schema([])  # no good row: an empty file still replaces an earlier attempt
        self._flush()
        assert self._writer is not None
        self._writer.close()
        self._writer = None
        with open(self._tmp, "rb+") as handle:
            os.fsync(handle.fileno())
        quarantine = self._quarantine.commit()
        os.replace(self._tmp, self.path)
        fsync_directory(self.path.parent)
        self._closed = True
        self._result = SinkResult(
            rows=self._rows, quarantined=self._quarantine.count, path=str(self.path), quarantine_path=quarantine
        )
        return self._result

    def abort(self) -> None:
        if self._result is not None or self._closed:
            return
        self._closed = True
        self._pending = []
        if self._writer is not None:
            with contextlib.suppress(Exception):
                self._writer.close()
            self._writer = None
        self._tmp.unlink(missing_ok=True)
        self._quarantine.abort()

    def _flush(self) -> None:
        """Write the buffered batches as one row group."""
        assert self._schema is not None
        if self._writer is None:
            self._writer = pq.ParquetWriter(self._tmp, self._schema, compression="zstd")
        if self._pending:
            self._writer.write_table(pa.Table.from_batches(self._pending, schema=self._schema), row_group_size=self._pending_rows)
        self._pending = []
        self._pending_rows = 0

    def _require_open(self) -> None:
        if self._closed:
            state = "committed" if self._result is not None else "aborted"
            raise RuntimeError(f"writer for {self.path.name} is already {state}")


def _array(values: Sequence[Any], kind: ColumnType) -> pa.Array:
    if kind is not ColumnType.DATETIME:
        return pa.array(values, type=ARROW_TYPES[kind])
    strings = pa.array(values, type=pa.string())
    with contextlib.suppress(pa.ArrowInvalid):
        return strings.cast(TIMESTAMP)  # every value with an offset or Z: parsed in C
    with contextlib.suppress(pa.ArrowInvalid):
        return strings.cast(pa.timestamp("us")).cast(TIMESTAMP)  # every value without offset: UTC
    return pa.array([_utc(value) for value in values], type=TIMESTAMP)


def _utc(value: str | None) -> datetime | None:
    """A mix of naive and offset values: naive ones are UTC, as in the other sinks."""
    if value is None:
        return None
    parsed = datetime.fromisoformat(value)
    return parsed if parsed.tzinfo is not None else parsed.replace(tzinfo=UTC)
