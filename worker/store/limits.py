"""Download leases (never outliving their export), the provider budgets every worker spends from (GCRA,
holds after a 429), and provider answers kept for a while (a report's parameters)."""

from __future__ import annotations

import math

from worker.store import base
from worker.store.base import StoreBase

# The wait is rounded up to whole ms: Redis truncates a Lua number to an integer reply, and a
# refusal shorter than 1 ms read as 0 would let the request go without being charged.
_RATE_SCRIPT = """
local now = tonumber(ARGV[1])
local interval = tonumber(ARGV[2])
local burst = tonumber(ARGV[3])
local tat = tonumber(redis.call('GET', KEYS[1]) or ARGV[1])
if tat < now then tat = now end
local allow_at = tat - burst
if now < allow_at then return math.ceil(allow_at - now) end
local new_tat = tat + interval
redis.call('SET', KEYS[1], new_tat, 'PX', math.ceil(new_tat - now + 1000))
return 0
"""

# A lease never outlives its export's record: once the export ended, its record expires with the
# retention, and a lease taken or renewed after that (a download still finishing) expires no later.
_BOUND_BY_EXPORT = """
local ms = tonumber(ARGV[2])
local left = redis.call('PTTL', KEYS[2])
if left > 0 and left < ms then ms = left end
"""

_ACQUIRE_SCRIPT = (
    _BOUND_BY_EXPORT
    + """
if redis.call('SET', KEYS[1], ARGV[1], 'NX', 'PX', ms) then return 1 end
return 0
"""
)

_RENEW_SCRIPT = (
    _BOUND_BY_EXPORT
    + """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('PEXPIRE', KEYS[1], ms) end
return 0
"""
)

_RELEASE_SCRIPT = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"""


class LimitsMixin(StoreBase):
    def acquire_lease(self, export_id: str, file_key: str, owner: str, seconds: float) -> bool:
        keys = [self._lease_key(export_id, file_key), self._export_key(export_id)]
        return bool(self._eval(_ACQUIRE_SCRIPT, keys, [owner, int(seconds * 1000)]))

    def renew_lease(self, export_id: str, file_key: str, owner: str, seconds: float) -> bool:
        keys = [self._lease_key(export_id, file_key), self._export_key(export_id)]
        return bool(self._eval(_RENEW_SCRIPT, keys, [owner, int(seconds * 1000)]))

    def release_lease(self, export_id: str, file_key: str, owner: str) -> None:
        self._eval(_RELEASE_SCRIPT, [self._lease_key(export_id, file_key)], [owner])

    def rate_limit_wait(self, bucket: str, requests: int, per_seconds: float) -> float:
        """GCRA shared by every worker: 0 when a request may go now, else seconds to wait."""
        interval_ms = per_seconds * 1000 / requests
        burst_ms = per_seconds * 1000 - interval_ms
        now_ms = base.now() * 1000
        wait_ms = self._eval(_RATE_SCRIPT, [self.key("rate", bucket)], [now_ms, interval_ms, burst_ms])
        return float(wait_ms) / 1000

    def hold(self, bucket: str, seconds: float) -> None:
        """Make every worker wait ``seconds`` before spending from ``bucket`` (a provider answered 429)."""
        self.redis.set(self.key("hold", bucket), "1", px=max(1, math.ceil(seconds * 1000)))

    def held_for(self, bucket: str) -> float:
        """Seconds left on a :meth:`hold` of ``bucket``; 0 when there is none."""
        remaining = int(self.redis.pttl(self.key("hold", bucket)))
        return remaining / 1000 if remaining > 0 else 0.0

    def remember(self, name: str, value: str, seconds: float) -> None:
        """Keep a provider answer for ``seconds`` under ``cache:<name>``, for every process to reuse."""
        self.redis.set(self.key("cache", name), value, px=max(1, math.ceil(seconds * 1000)))

    def recall(self, name: str) -> str | None:
        """What :meth:`remember` kept under ``name``, or None once it expired."""
        value = self.redis.get(self.key("cache", name))
        return None if value is None else base.text(value)
