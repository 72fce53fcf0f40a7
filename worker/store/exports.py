"""Export records: create (idempotent), read, and change them atomically (WATCH, mutate, MULTI/EXEC).

Every change to a record goes through :meth:`ExportsMixin.transact`: WATCH the key, let a pure
function mutate a fresh copy, then MULTI/EXEC. A concurrent change aborts the EXEC and the function
runs again on the new state, so two workers can never both advance an export.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

import redis

from worker.models import ExportRecord, FileRecord, Writes
from worker.store import base
from worker.store.base import text
from worker.store.retention import RetentionMixin

T = TypeVar("T")


class ExportsMixin(RetentionMixin):
    def create(self, record: ExportRecord) -> tuple[ExportRecord, bool]:
        """Store a new export; with an idempotency key already used, return that export instead.

        A key whose export is gone (forgotten after the retention) is free again: the new export takes it.
        """
        idem = self._idem_key(record.idempotency_key) if record.idempotency_key else None
        export_key = self._export_key(record.id)
        with self.redis.pipeline() as pipe:
            while True:
                try:
                    if idem:
                        pipe.watch(idem)
                        existing = pipe.get(idem)
                        if existing is not None:
                            kept = pipe.get(self._export_key(text(existing)))
                            if kept is not None:
                                pipe.reset()
                                return self._load_export(kept, text(existing)), False
                    pipe.multi()
                    if idem:
                        pipe.set(idem, record.id)
                    pipe.set(export_key, record.model_dump_json())
                    pipe.zadd(self.key("exports"), {record.id: record.created_at})
                    self._stage_events(pipe, record.id, [{"type": "created", "status": record.status}])
                    self._stage_status_change(pipe, record, None, [])
                    pipe.execute()
                    return record, True
                except redis.WatchError:
                    continue

    def get(self, export_id: str) -> ExportRecord:
        return self._load_export(self.redis.get(self._export_key(export_id)), export_id)

    def transact(self, export_id: str, mutate: Callable[[ExportRecord, Writes], T]) -> T:
        """Apply ``mutate`` atomically. It may raise to abort; its record changes are saved otherwise."""
        return self._transact(export_id, lambda record, _files, writes: mutate(record, writes), with_files=False)

    def transact_with_files(self, export_id: str, mutate: Callable[[ExportRecord, list[FileRecord], Writes], T]) -> T:
        """Like :meth:`transact`, with every file record read under the same WATCH.

        A decision over the whole export (complete it, reopen its failed files) must see the record
        and every file in one atomic view: a poll that adds files, or a download that finishes or
        reopens one, between the read and the EXEC aborts the EXEC and the decision runs again.
        """
        return self._transact(export_id, mutate, with_files=True)

    def _transact(self, export_id: str, mutate: Callable[[ExportRecord, list[FileRecord], Writes], T], *, with_files: bool) -> T:
        export_key = self._export_key(export_id)
        with self.redis.pipeline() as pipe:
            while True:
                try:
                    pipe.watch(export_key)
                    record = self._load_export(pipe.get(export_key), export_id)
                    file_keys = self._watch_file_keys(pipe, export_id) if with_files else None
                    files = self._read_files(pipe, export_id, file_keys) if file_keys else []
                    before = record.model_dump_json()
                    status_before = record.status
                    jobs_ended_before = {key for key, job in record.jobs.items() if job.status.terminal}
                    writes = Writes()
                    result = mutate(record, files, writes)
                    after = record.model_dump_json()
                    if after == before and not writes.files and not writes.events:
                        pipe.reset()
                        return result
                    record.updated_at = base.now()
                    ends_or_reopens = record.status != status_before and (record.status.terminal or status_before.terminal)
                    if ends_or_reopens and file_keys is None:
                        file_keys = self._watch_file_keys(pipe, export_id)
                    pipe.multi()
                    pipe.set(export_key, record.model_dump_json(), keepttl=True)
                    for file_record in writes.files:
                        self._stage_file(pipe, export_id, file_record)
                    jobs_ended = {key for key, job in record.jobs.items() if job.status.terminal} - jobs_ended_before
                    if jobs_ended and not writes.files and not record.status.terminal:
                        self._stage_look_now(pipe, export_id)  # a job ended with no file: the completion check is due
                    self._stage_events(pipe, export_id, writes.events)
                    if record.status != status_before:  # last: its TTLs cover every key written before it
                        written = [file_record.key for file_record in writes.files]
                        self._stage_status_change(pipe, record, status_before, sorted({*(file_keys or []), *written}))
                    pipe.execute()
                    return result
                except redis.WatchError:
                    continue

    def _watch_file_keys(self, pipe: Any, export_id: str) -> list[str]:
        """The file keys of the export, read while WATCHing its files index and finished set."""
        pipe.watch(self._files_index(export_id), self._finished_set(export_id))
        return sorted(text(raw) for raw in pipe.smembers(self._files_index(export_id)))

    def _read_files(self, pipe: Any, export_id: str, keys: list[str]) -> list[FileRecord]:
        """Every file record of ``keys``, read under WATCH of each."""
        record_keys = [self._file_key(export_id, key) for key in keys]
        pipe.watch(*record_keys)
        return [FileRecord.model_validate_json(raw) for raw in pipe.mget(record_keys) if raw is not None]

    def status_counts(self) -> dict[str, int]:
        return {text(k): int(v) for k, v in self.redis.hgetall(self.key("stats", "status")).items()}

    def list_ids(self, limit: int = 50) -> list[str]:
        ids: list[bytes] = self.redis.zrevrange(self.key("exports"), 0, limit - 1)  # type: ignore[assignment]
        return [text(raw) for raw in ids]

    def active_ids(self) -> list[str]:
        return sorted(text(raw) for raw in self.redis.smembers(self.key("active")))

    def mark_announced(self, export_id: str) -> None:
        self.redis.zrem(self.key("unannounced"), export_id)

    def unannounced_ids(self, ended_before: float, limit: int | None = None) -> list[str]:
        """Exports that ended before ``ended_before`` and whose end nobody reported (its worker died); the
        oldest first, at most ``limit``."""
        start, num = (0, limit) if limit is not None else (None, None)
        ids: Any = self.redis.zrangebyscore(self.key("unannounced"), "-inf", ended_before, start=start, num=num)
        return [text(raw) for raw in ids]
