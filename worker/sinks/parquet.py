"""Parquet sink: ``<root>/<export_id>/<safe_name>.parquet`` per provider file, zstd, typed columns.

Columns are typed from the provider's row schema (int64, float64, timestamp UTC, string). Batches
are buffered up to :data:`ROW_GROUP_ROWS` rows and written as one row group, so memory stays
bounded while the file streams. Temp name and rename as for JSONL (:mod:`worker.sinks.files`), so
the file is exactly once per provider file; bad rows go to ``<safe_name>.quarantine.jsonl``.

Clean chunks arrive as Arrow tables from the row path and are written as they are.
"""

from __future__ import annotations

import os
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from worker.sinks.arrow_tables import typed_columns, typed_fields
from worker.sinks.base import Batch
from worker.sinks.files import FileAttempt, discard_attempts, target_directory

ROW_GROUP_ROWS = 128 * 1024
"""Rows per row group: large enough for good compression and scans, small enough for ~10 MB of buffer."""


class ParquetSink:
    def __init__(self, root: Path) -> None:
        self.root = Path(root)

    def open_file(self, export_id: str, file_key: str, safe_name: str) -> ParquetFileWriter:
        return ParquetFileWriter(target_directory(self.root, export_id, file_key, safe_name, ".parquet"), safe_name)

    def discard_attempts(self, export_id: str) -> int:
        return discard_attempts(self.root, export_id)


class ParquetFileWriter(FileAttempt):
    """One attempt at one file; the Parquet writer opens with the first batch (which brings the header)."""

    suffix = ".parquet"

    def __init__(self, directory: Path, safe_name: str) -> None:
        super().__init__(directory, safe_name)
        self._schema: pa.Schema | None = None
        self._writer: pq.ParquetWriter | None = None
        self._pending: list[pa.RecordBatch] = []
        self._pending_rows = 0

    def write_batch(self, batch: Batch) -> None:
        if not batch.lines:
            return
        self._check_open()
        if self._schema is None:
            self._schema = pa.schema(typed_fields(batch.names, batch.types))
        self._pending.extend(pa.Table.from_arrays(typed_columns(batch), schema=self._schema).to_batches())
        self._pending_rows += len(batch.lines)
        self._rows += len(batch.lines)
        if self._pending_rows >= ROW_GROUP_ROWS:
            self._flush()

    def _finish(self) -> None:
        if self._schema is None:
            self._schema = pa.schema([])  # no good row: an empty file still replaces an earlier attempt
        self._flush()
        assert self._writer is not None
        self._writer.close()
        with open(self._tmp, "rb+") as handle:
            os.fsync(handle.fileno())

    def _discard(self) -> None:
        self._pending = []
        if self._writer is not None:
            self._writer.close()

    def _flush(self) -> None:
        """Write the buffered batches as one row group."""
        assert self._schema is not None
        if self._writer is None:
            self._writer = pq.ParquetWriter(self._tmp, self._schema, compression="zstd")
        if self._pending:
            self._writer.write_table(pa.Table.from_batches(self._pending, schema=self._schema), row_group_size=self._pending_rows)
        self._pending = []
        self._pending_rows = 0
