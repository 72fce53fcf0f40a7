"""Read-only queries for the dashboard and the scrape-time gauges: pages of exports, many records in
one round trip, an export's own events, holds and leases in bulk.

Each method is one round trip (a pipeline counts as one), whatever the number of ids, so the cost of
a page is a small constant number of round trips; what grows with the store is the size of the
replies, which callers bound with ``count``.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any, Literal

import orjson

from worker.models import ExportRecord
from worker.store.base import decode_event, text
from worker.store.watch import WatchMixin

Cursor = tuple[float, str]
"""A position in an index of exports: (score, export id) of the last export already seen."""
Index = Literal["exports", "ended"]
SCAN_BATCH = 500
"""Exports one scan step reads inside Redis: a step blocks Redis about 10-20 ms on a loaded 2-core machine."""

# Walk the index newest first from the cursor (exclusive); keep records containing every needle.
# ARGV: export key prefix, max score, min score, cursor score ('' for none), cursor id, batch,
# the number of exact needles, the exact needles, then the needles to find in the lower-cased record.
_SCAN_SCRIPT = """
local prefix, top, bottom = ARGV[1], ARGV[2], ARGV[3]
local skip_score, skip_id, batch = ARGV[4], ARGV[5], tonumber(ARGV[6])
local exact, folded = {}, {}
local count = tonumber(ARGV[7])
for i = 8, #ARGV do
  if i < 8 + count then exact[#exact + 1] = ARGV[i] else folded[#folded + 1] = ARGV[i] end
end
local out, scanned, offset = {}, 0, 0
local last_score, last_id = '', ''
local exhausted = 0
while scanned < batch do
  local entries = redis.call('ZREVRANGEBYSCORE', KEYS[1], top, bottom, 'WITHSCORES', 'LIMIT', offset, batch - scanned)
  if #entries == 0 then exhausted = 1 break end
  offset = offset + #entries / 2
  for i = 1, #entries, 2 do
    local id, score = entries[i], entries[i + 1]
    local seen = skip_score ~= '' and tonumber(score) == tonumber(skip_score) and id >= skip_id
    if not seen then
      scanned = scanned + 1
      last_score, last_id = score, id
      local raw = redis.call('GET', prefix .. id)
      if raw then
        local keep = true
        for _, needle in ipairs(exact) do
          if not string.find(raw, needle, 1, true) then keep = false break end
        end
        if keep and #folded > 0 then
          local lowered = string.lower(raw)
          for _, needle in ipairs(folded) do
            if not string.find(lowered, needle, 1, true) then keep = false break end
          end
        end
        if keep then out[#out + 1] = id out[#out + 1] = score out[#out + 1] = raw end
      end
    end
  end
end
local reply = {scanned, last_score, last_id, exhausted}
for _, value in ipairs(out) do reply[#reply + 1] = value end
return reply
"""


@dataclass(frozen=True)
class ScanStep:
    """What one step of :meth:`QueriesMixin.scan_exports` saw."""

    scanned: int
    last: Cursor | None
    """Where the next step starts (the last export read, matching or not)."""
    exhausted: bool
    """The index holds nothing more in the range."""
    matches: list[tuple[float, str, bytes]]
    """(created_at, id, record JSON) of the exports whose JSON contains every needle."""


class QueriesMixin(WatchMixin):
    # -- the exports index -------------------------------------------------------------------------

    def scan_exports(
        self,
        *,
        before: Cursor | None = None,
        since: float | None = None,
        until: float | None = None,
        needles: list[str] | None = None,
        folded: list[str] | None = None,
        batch: int = SCAN_BATCH,
        index: Index = "exports",
    ) -> ScanStep:
        """One step of a newest-first walk of an index, filtered inside Redis (one round trip).

        ``index`` is ``exports`` (scored by creation time) or ``ended`` (ended exports, by end time). Reads
        at most ``batch`` exports scored in [since, until] strictly after ``before`` in walk order
        (ties of score in descending id order, as Redis orders equal scores) and returns the
        records whose stored JSON contains every one of ``needles``: a cheap necessary condition the
        caller narrows further after parsing; ``folded`` needles (lower case ASCII) are looked for in the
        lower-cased JSON. Only matches cross the wire, and a step blocks Redis for
        one batch only. The script reads the records by their documented key names, derived from the ids
        in the index (a single-node or Sentinel Redis, as this project uses; not Redis Cluster).
        """
        top = min(before[0], until) if before and until is not None else before[0] if before else until
        args: list[Any] = [
            self.key("export", ""),
            repr(top) if top is not None else "+inf",
            since if since is not None else "-inf",
            repr(before[0]) if before else "",
            before[1] if before else "",
            batch,
            len(needles or []),
            *(needles or []),
            *(folded or []),
        ]
        reply: Any = self._eval(_SCAN_SCRIPT, [self.key(index)], args)
        scanned, last_score, last_id, exhausted, *found = reply
        matches = [(float(found[index + 1]), text(found[index]), found[index + 2]) for index in range(0, len(found), 3)]
        last = (float(last_score), text(last_id)) if int(scanned) else before
        return ScanStep(scanned=int(scanned), last=last, exhausted=bool(int(exhausted)), matches=matches)

    def count_ids(self, *, since: float | None = None, until: float | None = None) -> int:
        return int(self.redis.zcount(self.key("exports"), since if since is not None else "-inf", until or "+inf"))

    def parse_scanned(self, raw: bytes, export_id: str) -> ExportRecord:
        """A record as a scan step returned it; one that does not validate raises :class:`CorruptRecord`."""
        return self._load_export(raw, export_id)

    def active_records(self) -> list[ExportRecord]:
        """Every export not yet terminal (two round trips)."""
        ids = sorted(text(raw) for raw in self.redis.smembers(self.key("active")))
        return [record for record in self.records(ids).values() if record is not None]

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
