"""The events stream: one entry per state change, read by ``watch`` and other applications."""

from __future__ import annotations

from typing import Any

from worker.store.base import StoreBase, decode_event


class EventsMixin(StoreBase):
    def read_events(self, last_id: str, block_ms: int | None = None, count: int = 100) -> list[tuple[str, dict[str, Any]]]:
        """Events after ``last_id``; with ``block_ms``, wait up to that long for the first one."""
        answer: Any = self.redis.xread({self.events_key: last_id}, count=count, block=block_ms)
        events: list[tuple[str, dict[str, Any]]] = []
        for _stream, entries in answer or []:
            events.extend(decode_event(entry_id, fields) for entry_id, fields in entries)
        return events
