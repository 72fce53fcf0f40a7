"""What the watchdog reads: the exports due for a look and those past their deadline, a page at a time.

``watch`` scores each live export by the moment its earliest chain (a job's next step, a pending
download) was due, as last seen; the watchdog looks at it once that moment is ``stale_after`` old,
so a run's work follows the exports that may need it, not every active one. A step runs at or
after its countdown and only ever gives its chain (or the chains it starts) a later due moment, so
a score written from any earlier view of the export stays a lower bound: no silent chain is looked
at late (a task run early, on a host whose clock is ahead, makes it late by as much). The EXECs
that create or reopen an export, or end one of its chains, bring the look forward themselves.
``deadlines`` scores each live export by its deadline. The EXEC that ends an export removes it
from both.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import redis

from worker.models import ExportRecord, FileRecord
from worker.store.base import StoreBase, text


class WatchMixin(StoreBase):
    def due_for_look(self, stale_before: float, limit: int) -> list[str]:
        """Live exports whose earliest chain was due at or before ``stale_before``, the most overdue first."""
        raw: Any = self.redis.zrangebyscore(self.key("watch"), "-inf", stale_before, start=0, num=limit)
        return [text(item) for item in raw]

    def past_deadline(self, now: float, limit: int) -> list[str]:
        """Live exports whose deadline is before ``now``, the earliest first."""
        raw: Any = self.redis.zrangebyscore(self.key("deadlines"), "-inf", f"({now!r}", start=0, num=limit)
        return [text(item) for item in raw]

    def records(self, export_ids: list[str]) -> dict[str, ExportRecord | None]:
        """The records of ``export_ids`` in one MGET; None for one that is gone."""
        if not export_ids:
            return {}
        raws = self.redis.mget([self._export_key(export_id) for export_id in export_ids])
        return {
            export_id: None if raw is None else self._load_export(raw, export_id)
            for export_id, raw in zip(export_ids, raws, strict=True)
        }

    def files_of(self, export_ids: Iterable[str], chunk: int) -> dict[str, list[FileRecord]]:
        """The file records of each export: one pipeline of SMEMBERS, then MGETs of at most ``chunk`` keys."""
        ids = list(export_ids)
        files: dict[str, list[FileRecord]] = {export_id: [] for export_id in ids}
        if not ids:
            return files
        with self.redis.pipeline(transaction=False) as pipe:
            for export_id in ids:
                pipe.smembers(self._files_index(export_id))
            indexes = pipe.execute()
        wanted = [(export_id, text(key)) for export_id, keys in zip(ids, indexes, strict=True) for key in sorted(keys)]
        for start in range(0, len(wanted), chunk):
            part = wanted[start : start + chunk]
            raws = self.redis.mget([self._file_key(export_id, key) for export_id, key in part])
            for (export_id, _key), raw in zip(part, raws, strict=True):
                if raw is not None:
                    files[export_id].append(FileRecord.model_validate_json(raw))
        return files

    def look_again(self, looks: dict[str, float]) -> None:
        """Rescore looked-at exports in one command; XX, so an export that ended meanwhile stays off the index."""
        if looks:
            self.redis.zadd(self.key("watch"), looks, xx=True)  # type: ignore[arg-type]

    def stop_watching(self, export_id: str) -> bool:
        """Drop an export from the live indexes if it ended, from every index if its record is gone (deleted
        by hand, or evicted); False if it is live, and left alone.

        Decided under WATCH of the record, so an export reopened meanwhile keeps its entries.
        """
        export_key = self._export_key(export_id)
        with self.redis.pipeline() as pipe:
            while True:
                try:
                    pipe.watch(export_key)
                    raw = pipe.get(export_key)
                    if raw is not None and not self._load_export(raw, export_id).status.terminal:
                        pipe.reset()
                        return False
                    pipe.multi()
                    indexes = (
                        ["watch", "deadlines"] if raw is not None else ["watch", "deadlines", "exports", "ended", "unannounced"]
                    )
                    for index in indexes:
                        pipe.zrem(self.key(index), export_id)
                    pipe.srem(self.key("active"), export_id)
                    pipe.execute()
                    return True
                except redis.WatchError:
                    continue
