"""File records of an export: read them, count the finished ones, change one atomically."""

from __future__ import annotations

from collections.abc import Callable
from typing import TypeVar

import redis

from worker.errors import StaleTask
from worker.models import ExportRecord, FileRecord, Writes
from worker.store.base import StoreBase, text

T = TypeVar("T")


class FilesMixin(StoreBase):
    def get_file(self, export_id: str, file_key: str) -> FileRecord:
        raw = self.redis.get(self._file_key(export_id, file_key))
        if raw is None:
            raise self._missing(export_id, file_key)
        return FileRecord.model_validate_json(raw)

    def files(self, export_id: str) -> list[FileRecord]:
        keys = sorted(text(raw) for raw in self.redis.smembers(self._files_index(export_id)))
        if not keys:
            return []
        raws = self.redis.mget([self._file_key(export_id, key) for key in keys])
        return [FileRecord.model_validate_json(raw) for raw in raws if raw is not None]

    def finished_count(self, export_id: str) -> tuple[int, int]:
        """(files finished, files known) in one round trip."""
        with self.redis.pipeline(transaction=False) as pipe:
            pipe.scard(self._finished_set(export_id))
            pipe.scard(self._files_index(export_id))
            finished, total = pipe.execute()
        return int(finished), int(total)

    def transact_file(
        self,
        export_id: str,
        file_key: str,
        mutate: Callable[[ExportRecord, FileRecord, Writes], T],
        *,
        unleased: bool = False,
    ) -> T:
        """Atomic change of one file, decided on a view of its export too.

        The export record is WATCHed (and handed to ``mutate`` read-only) so a file can't change
        after its export ended; the file is marked finished in the same EXEC when it reaches
        DONE/FAILED. With ``unleased`` the download lease is WATCHed as well and a held lease aborts
        with :class:`StaleTask`: the watchdog must never revive a file a live worker is streaming.
        """
        export_key = self._export_key(export_id)
        key = self._file_key(export_id, file_key)
        lease_key = self._lease_key(export_id, file_key)
        watched = [export_key, key, lease_key] if unleased else [export_key, key]
        with self.redis.pipeline() as pipe:
            while True:
                try:
                    pipe.watch(*watched)
                    record = self._load_export(pipe.get(export_key), export_id)
                    raw = pipe.get(key)
                    if raw is None:
                        raise self._missing(export_id, file_key)
                    if unleased and pipe.exists(lease_key):
                        raise StaleTask(f"file {file_key} of export {export_id} is being downloaded")
                    current = FileRecord.model_validate_json(raw)
                    writes = Writes()
                    result = mutate(record, current, writes)
                    pipe.multi()
                    self._stage_file(pipe, export_id, current)
                    self._stage_events(pipe, export_id, writes.events)
                    pipe.execute()
                    return result
                except redis.WatchError:
                    continue
