"""Redis-stream sink for small exports: rows land on a stream other applications XREAD directly.

Each attempt writes to its own staging stream and, on commit, RENAMEs it onto the file's stream in
one MULTI/EXEC, so a retried file replaces its rows instead of appending them (exactly once per
file, as with the JSONL sink). A row cap keeps large exports out of Redis memory.
"""

from __future__ import annotations

import uuid
from typing import Any

import orjson

from worker.errors import PermanentError
from worker.parsing.columns import BadRow
from worker.sinks.base import Batch, SinkResult
from worker.store import ExportStore


class RedisStreamSink:
    def __init__(self, store: ExportStore, *, max_rows: int, ttl_seconds: int) -> None:
        self.store = store
        self.max_rows = max_rows
        self.ttl_seconds = ttl_seconds

    def open_file(self, export_id: str, file_key: str, safe_name: str) -> RedisStreamFileWriter:
        return RedisStreamFileWriter(self, export_id, file_key)

    def discard_attempts(self, export_id: str) -> int:
        """Nothing to sweep: each attempt's staging stream carries the sink's TTL and expires by itself."""
        return 0


class RedisStreamFileWriter:
    def __init__(self, sink: RedisStreamSink, export_id: str, file_key: str) -> None:
        self.sink = sink
        self.export_id = export_id
        store = sink.store
        self.records_key = store.records_key(export_id, file_key)
        self.quarantine_key = store.quarantine_key(export_id, file_key)
        attempt = uuid.uuid4().hex
        self._staging = store.key("staging", attempt, "records")
        self._staging_quarantine = store.key("staging", attempt, "quarantine")
        self._rows = 0
        self._bad = 0
        self._result: SinkResult | None = None

    def _append(self, key: str, entries: list[bytes]) -> None:
        self.sink.store.append_stream(key, entries, self.sink.ttl_seconds)

    def write_batch(self, batch: Batch) -> None:
        self.write_rows(batch.rows)

    def write_rows(self, rows: list[dict[str, Any]]) -> None:
        if self._rows + len(rows) > self.sink.max_rows:
            raise PermanentError(
                f"file has more than {self.sink.max_rows} rows, too many for the redis_stream sink; "
                "submit it with sink='jsonl' or raise EXPORT_WORKER_REDIS_SINK_MAX_ROWS"
            )
        self._append(self._staging, [orjson.dumps(row) for row in rows])
        self._rows += len(rows)

    def write_bad(self, bad: list[BadRow], source_name: str) -> None:
        entries = [orjson.dumps({"file": source_name, "line": row.line, "reason": row.reason, "raw": row.raw}) for row in bad]
        self._append(self._staging_quarantine, entries)
        self._bad += len(bad)

    def commit(self) -> SinkResult:
        if self._result is not None:
            return self._result
        self.sink.store.publish_streams(
            self.export_id,
            [
                (self.records_key, self._staging if self._rows else None, self._rows),
                (self.quarantine_key, self._staging_quarantine if self._bad else None, self._bad),
            ],
            self.sink.ttl_seconds,
        )
        self._result = SinkResult(
            rows=self._rows,
            quarantined=self._bad,
            path=f"redis://{self.records_key}",
            quarantine_path=f"redis://{self.quarantine_key}" if self._bad else None,
        )
        return self._result

    def abort(self) -> None:
        if self._result is None:
            self.sink.store.delete_keys(self._staging, self._staging_quarantine)
