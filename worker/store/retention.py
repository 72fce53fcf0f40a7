"""How long an ended export is kept, and the indexes that follow an export from creation to being forgotten.

The EXEC that ends an export (COMPLETED, FAILED, CANCELLED) gives every key of it a TTL of the
retention and lists it in ``ended`` by end time; the EXEC that reopens it (a retry or a replay)
makes them persistent again and strikes it off ``ended``, so a live export never expires. Keys with
a bound of their own (a download lease, the ``redis_stream`` sink's streams) only ever get a shorter
TTL (``EXPIRE … LT``), never a longer one, and are never made persistent.

Indexes outlive the keys they list, so the watchdog drops the ids of forgotten exports from them
(:meth:`RetentionMixin.forget_expired`), trims the events stream to the retention, and sweeps
``exports`` a page per run for records that ended without a TTL (written before retention existed,
or by a worker of an older version during an upgrade).
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import redis

from worker.models import ExportRecord, ExportStatus
from worker.store.base import StoreBase, text

# Strike forgotten exports off the indexes and out of the status counts, each once: an id still in
# ``ended_status`` whose record is gone is uncounted and removed in the same script, so two
# watchdogs forgetting the same export (two beats) decrement its status once.
# KEYS: ended_status, stats:status, exports, unannounced, ended, then the record key per id; ARGV: the ids.
_FORGET_SCRIPT = """
for i, export_id in ipairs(ARGV) do
  if redis.call('EXISTS', KEYS[5 + i]) == 0 then
    local status = redis.call('HGET', KEYS[1], export_id)
    if status then
      redis.call('HDEL', KEYS[1], export_id)
      redis.call('HINCRBY', KEYS[2], status, -1)
    end
    for index = 3, 5 do redis.call('ZREM', KEYS[index], export_id) end
  end
end
return 1
"""


@dataclass
class SweepReport:
    """What one page of the sweep did."""

    bounded: int = 0
    """Ended exports without a TTL that got one."""
    watched: int = 0
    """Live exports the watchdog's indexes did not list yet."""


class RetentionMixin(StoreBase):
    # -- keys of one export ---------------------------------------------------------------------------

    def _export_keys(self, record: ExportRecord, file_keys: Iterable[str]) -> tuple[list[str], list[str]]:
        """(keys that live exactly as long as the export, keys that carry a shorter bound of their own)."""
        export_id = record.id
        own = [
            self._export_key(export_id),
            self._files_index(export_id),
            self._finished_set(export_id),
            self.export_events_key(export_id),
        ]
        bounded: list[str] = []
        for file_key in file_keys:
            own.append(self._file_key(export_id, file_key))
            bounded += [
                self._lease_key(export_id, file_key),
                self.records_key(export_id, file_key),
                self.quarantine_key(export_id, file_key),
            ]
        if record.idempotency_key is not None:
            own.append(self._idem_key(record.idempotency_key))
        return own, bounded

    def _stage_expire(self, pipe: Any, record: ExportRecord, file_keys: Iterable[str], seconds: int) -> None:
        own, bounded = self._export_keys(record, file_keys)
        for key in own:
            pipe.expire(key, seconds)
        for key in bounded:
            pipe.expire(key, seconds, lt=True)

    def _stage_persist(self, pipe: Any, record: ExportRecord, file_keys: Iterable[str]) -> None:
        own, _bounded = self._export_keys(record, file_keys)
        for key in own:
            pipe.persist(key)

    # -- the indexes, in the EXEC that changes an export's status --------------------------------------

    def _stage_status_change(
        self, pipe: Any, record: ExportRecord, before: ExportStatus | None, file_keys: Iterable[str]
    ) -> None:
        """Indexes, status counts and TTLs for ``record`` whose status was ``before`` (None: just created).

        ``file_keys`` must be every file of the export, read under WATCH of its files index, so the
        EXEC that ends or reopens it covers each file's keys.
        """
        export_id = record.id
        status = record.status
        if status.terminal:
            ended_at = record.finished_at or record.updated_at
            pipe.srem(self.key("active"), export_id)
            pipe.zrem(self.key("watch"), export_id)
            pipe.zrem(self.key("deadlines"), export_id)
            pipe.zadd(self.key("unannounced"), {export_id: ended_at})
            pipe.zadd(self.key("ended"), {export_id: ended_at})
            pipe.hset(self.key("ended_status"), export_id, status.value)
            self._stage_expire(pipe, record, file_keys, self.retention_seconds)
        elif before is None or before.terminal:
            pipe.sadd(self.key("active"), export_id)
            pipe.zadd(self.key("watch"), {export_id: self._first_look(record) if before is None else 0})
            pipe.zadd(self.key("deadlines"), {export_id: record.deadline_at})
            if before is not None:
                pipe.zrem(self.key("ended"), export_id)
                pipe.hdel(self.key("ended_status"), export_id)
                self._stage_persist(pipe, record, file_keys)
        if before is not None:
            pipe.hincrby(self.key("stats", "status"), before.value, -1)
        pipe.hincrby(self.key("stats", "status"), status.value, 1)

    @staticmethod
    def _first_look(record: ExportRecord) -> float:
        """When the earliest chain of a new export is due: the watchdog looks ``stale_after`` past it."""
        dues = [job.next_action_at or record.created_at for job in record.jobs.values() if not job.status.terminal]
        return min(dues, default=record.created_at)

    # -- what the watchdog runs -----------------------------------------------------------------------

    def forget_expired(self, ended_before: float, *, page: int, limit: int) -> int:
        """Drop from the indexes the ids of exports that ended before ``ended_before`` and whose record is gone.

        Only a gone record is struck off: an id whose keys have not expired yet (clocks differ) stays
        for a later run. Looks at most ``limit`` ids, ``page`` per reply; returns how many were dropped.
        """
        ended = self.key("ended")
        dropped = kept = 0
        while dropped + kept < limit:
            raw: Any = self.redis.zrangebyscore(ended, "-inf", ended_before, start=kept, num=min(page, limit - dropped - kept))
            ids = [text(item) for item in raw]
            if not ids:
                break
            with self.redis.pipeline(transaction=False) as pipe:
                for export_id in ids:
                    pipe.exists(self._export_key(export_id))
                gone = [export_id for export_id, exists in zip(ids, pipe.execute(), strict=True) if not exists]
            kept += len(ids) - len(gone)
            if gone:
                counts = [self.key("ended_status"), self.key("stats", "status")]
                indexes = [self.key(index) for index in ("exports", "unannounced", "ended")]
                self._eval(_FORGET_SCRIPT, [*counts, *indexes, *(self._export_key(export_id) for export_id in gone)], gone)
            dropped += len(gone)
        return dropped

    def trim_events(self) -> None:
        """Drop events older than the retention, by Redis' own clock (entry ids are its milliseconds)."""
        seconds, _micro = self.redis.time()
        cutoff_ms = (int(seconds) - self.retention_seconds) * 1000
        if cutoff_ms > 0:
            self.redis.xtrim(self.events_key, minid=f"{cutoff_ms}-0", approximate=False)

    def sweep(self, now: float, count: int) -> SweepReport:
        """One page of a walk over ``exports`` (ZSCAN, cursor kept in Redis): bound what nothing bounded.

        An ended export without a TTL gets the rest of its retention, counted from its end; a live
        one missing from the watchdog's indexes is listed there. A full pass takes about
        ``len(exports) / count`` runs, then the next one starts.
        """
        report = SweepReport()
        cursor_key = self.key("sweep")
        cursor = int(self.redis.get(cursor_key) or 0)
        answer: Any = self.redis.zscan(self.key("exports"), cursor, count=count)
        next_cursor, entries = answer
        ids = [text(member) for member, _score in entries]
        if ids:
            with self.redis.pipeline(transaction=False) as pipe:
                for export_id in ids:
                    pipe.pttl(self._export_key(export_id))
                unbounded = [export_id for export_id, ttl in zip(ids, pipe.execute(), strict=True) if ttl == -1]
            if unbounded:
                with self.redis.pipeline(transaction=False) as pipe:
                    pipe.smismember(self.key("active"), unbounded)
                    pipe.zmscore(self.key("watch"), unbounded)
                    active, watched = pipe.execute()
                live = [export_id for export_id, is_active in zip(unbounded, active, strict=True) if is_active]
                unwatched = [export_id for export_id, score in zip(unbounded, watched, strict=True) if score is None]
                report.watched = self._watch_legacy([export_id for export_id in live if export_id in unwatched])
                report.bounded = sum(self._bound_ended(export_id, now) for export_id in unbounded if export_id not in live)
        self.redis.set(cursor_key, next_cursor)
        return report

    def _watch_legacy(self, export_ids: list[str]) -> int:
        """List live exports of an older version in ``watch`` (looked at next run) and ``deadlines``.

        NX keeps what the engine wrote meanwhile; one that ended meanwhile is listed again and the
        watchdog's look drops it (see :meth:`WatchMixin.stop_watching`).
        """
        if not export_ids:
            return 0
        raws = self.redis.mget([self._export_key(export_id) for export_id in export_ids])
        records = [self._load_export(raw, export_id) for export_id, raw in zip(export_ids, raws, strict=True) if raw]
        if records:
            with self.redis.pipeline(transaction=False) as pipe:
                pipe.zadd(self.key("watch"), {record.id: 0 for record in records}, nx=True)
                pipe.zadd(self.key("deadlines"), {record.id: record.deadline_at for record in records}, nx=True)
                pipe.execute()
        return len(records)

    def _bound_ended(self, export_id: str, now: float) -> bool:
        """Give an ended export without a TTL what is left of its retention, in one EXEC over all its keys."""
        export_key = self._export_key(export_id)
        with self.redis.pipeline() as pipe:
            while True:
                try:
                    pipe.watch(export_key, self._files_index(export_id))
                    raw = pipe.get(export_key)
                    if raw is None or pipe.pttl(export_key) != -1:
                        pipe.reset()
                        return False
                    record = self._load_export(raw, export_id)
                    if not record.status.terminal:
                        pipe.reset()
                        return False
                    file_keys = sorted(text(key) for key in pipe.smembers(self._files_index(export_id)))
                    ended_at = record.finished_at or record.updated_at
                    left = max(1, math.ceil(ended_at + self.retention_seconds - now))
                    pipe.multi()
                    self._stage_expire(pipe, record, file_keys, left)
                    pipe.zadd(self.key("ended"), {export_id: ended_at})
                    pipe.hset(self.key("ended_status"), export_id, record.status.value)
                    pipe.execute()
                    return True
                except redis.WatchError:
                    continue
