"""Read-only queries for the dashboard and the scrape-time gauges: pages of exports, many records in
one round trip, an export's own events, holds and leases in bulk.

Each method is one round trip (a pipeline counts as one), whatever the number of ids, so the cost of
a page is a small constant number of round trips; what grows with the store is the size of the
replies, which callers bound with ``count``.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any, TypeVar

import orjson
from pydantic import ValidationError

from worker.models import ExportRecord, FileRecord
from worker.store.base import StoreBase, decode_event, text

M = TypeVar("M", ExportRecord, FileRecord)
Cursor = tuple[float, str]
"""A position in the ``exports`` index: (creation time, export id) of the last export already seen."""


class QueriesMixin(StoreBase):
    # -- the exports index -------------------------------------------------------------------------

    def newest_ids(
        self, *, before: Cursor | None = None, since: float | None = None, until: float | None = None, count: int = 100
    ) -> list[Cursor]:
        """Up to ``count`` (created_at, id), newest first, created in [since, until] and strictly after ``before``
        in that order. Ties of creation time are ordered by id, as Redis orders equal scores."""
        top = until if until is not None else "+inf"
        skip_equal: str | None = None
        if before is not None:
            top = before[0] if until is None else min(before[0], until)
            skip_equal = before[1]
        bottom = since if since is not None else "-inf"
        wanted = count
        entries: list[Cursor] = []
        offset = 0
        while True:
            raw: Any = self.redis.zrevrangebyscore(self.key("exports"), top, bottom, start=offset, num=wanted, withscores=True)
            for member, score in raw:
                export_id = text(member)
                # Equal scores come in descending id order: those at or above the cursor's id were already seen.
                if skip_equal is not None and before is not None and score == before[0] and export_id >= skip_equal:
                    continue
                entries.append((float(score), export_id))
            if len(raw) < wanted or len(entries) >= count:
                return entries[:count]
            offset += len(raw)
            wanted = count - len(entries)

    def count_ids(self, *, since: float | None = None, until: float | None = None) -> int:
        return int(self.redis.zcount(self.key("exports"), since if since is not None else "-inf", until or "+inf"))

    def get_many(self, export_ids: list[str]) -> list[ExportRecord | None]:
        """Records in the order asked; None for an id whose record is gone or does not validate."""
        if not export_ids:
            return []
        raws = self.redis.mget([self._export_key(export_id) for export_id in export_ids])
        return [_parse(ExportRecord, raw) for raw in raws]

    def active_records(self) -> list[ExportRecord]:
        """Every export not yet terminal (two round trips)."""
        ids = sorted(text(raw) for raw in self.redis.smembers(self.key("active")))
        return [record for record in self.get_many(ids) if record is not None]

    # -- files, leases, holds, in bulk -------------------------------------------------------------

    def files_of(self, export_ids: list[str]) -> dict[str, list[FileRecord]]:
        """Every file record of each export, in two round trips whatever the number of exports."""
        if not export_ids:
            return {}
        with self.redis.pipeline(transaction=False) as pipe:
            for export_id in export_ids:
                pipe.smembers(self._files_index(export_id))
            indexes = pipe.execute()
        keys = [(export_id, sorted(text(raw) for raw in members)) for export_id, members in zip(export_ids, indexes, strict=True)]
        wanted = [self._file_key(export_id, key) for export_id, file_keys in keys for key in file_keys]
        raws = iter(self.redis.mget(wanted) if wanted else [])
        files: dict[str, list[FileRecord]] = {}
        for export_id, file_keys in keys:
            parsed = (_parse(FileRecord, next(raws)) for _ in file_keys)
            files[export_id] = [file for file in parsed if file is not None]
        return files

    def leases_held(self, pairs: list[tuple[str, str]]) -> set[tuple[str, str]]:
        """Which (export id, file key) have a live download lease."""
        if not pairs:
            return set()
        with self.redis.pipeline(transaction=False) as pipe:
            for export_id, file_key in pairs:
                pipe.exists(self._lease_key(export_id, file_key))
            held = pipe.execute()
        return {pair for pair, exists in zip(pairs, held, strict=True) if exists}

    def holds_left(self, buckets: Iterable[str]) -> dict[str, float]:
        """Seconds left on the provider hold of each bucket (``<provider>:<credential>``); 0 when none."""
        wanted = sorted(set(buckets))
        if not wanted:
            return {}
        with self.redis.pipeline(transaction=False) as pipe:
            for bucket in wanted:
                pipe.pttl(self.key("hold", bucket))
            remaining = pipe.execute()
        return {bucket: max(0, int(ms)) / 1000 for bucket, ms in zip(wanted, remaining, strict=True)}

    # -- one export's events and quarantine --------------------------------------------------------

    def export_events(self, export_id: str, after: str = "-", count: int = 2_000) -> list[tuple[str, dict[str, Any]]]:
        """The export's own events after entry id ``after`` (exclusive), oldest first."""
        start = after if after == "-" else f"({after}"
        entries: Any = self.redis.xrange(self.export_events_key(export_id), start, "+", count=count)
        return [decode_event(entry_id, fields) for entry_id, fields in entries]

    def read_export_events(
        self, export_id: str, last_id: str, block_ms: int | None = None, count: int = 100
    ) -> list[tuple[str, dict[str, Any]]]:
        """The export's events after ``last_id``; with ``block_ms``, wait up to that long for the first one."""
        answer: Any = self.redis.xread({self.export_events_key(export_id): last_id}, count=count, block=block_ms)
        return [decode_event(entry_id, fields) for _stream, entries in answer or [] for entry_id, fields in entries]

    def latest_event_id(self, export_id: str | None = None) -> str:
        """Id of the newest entry of the events stream (or of one export's), "0" when empty: where a live
        page that was just rendered starts following, so nothing between the render and the follow is lost."""
        key = self.export_events_key(export_id) if export_id else self.events_key
        newest: Any = self.redis.xrevrange(key, "+", "-", count=1)
        return text(newest[0][0]) if newest else "0"

    def stream_sample(self, key: str, count: int) -> list[dict[str, Any]]:
        """The first ``count`` rows of a ``redis_stream`` sink stream (its ``row`` fields, decoded)."""
        entries: Any = self.redis.xrange(key, "-", "+", count=count)
        return [orjson.loads(fields[b"row"]) for _entry_id, fields in entries if b"row" in fields]

    def schedule_successes(self) -> dict[str, float]:
        """When each schedule last had an export complete (see ``record_schedule_success``)."""
        return {text(k): float(v) for k, v in self.redis.hgetall(self.key("stats", "schedule_success")).items()}


def _parse(model: type[M], raw: bytes | str | None) -> M | None:
    if raw is None:
        return None
    try:
        return model.model_validate_json(raw)
    except ValidationError:
        return None
