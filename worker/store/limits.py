"""Download leases (never outliving their export), the provider budgets every worker spends from (GCRA,
holds after a 429), and provider answers kept for a while (a report's parameters)."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from worker.store import base
from worker.store.base import StoreBase

# GCRA: ``spend(key, now, interval, burst)`` charges one request and gives 0, or charges nothing and
# gives the ms to wait. The wait is rounded up to whole ms: Redis truncates a Lua number to an integer
# reply, and a refusal shorter than 1 ms read as 0 would let the request go without being charged.
_SPEND = """
local function spend(key, now, interval, burst)
  local tat = tonumber(redis.call('GET', key) or now)
  if tat < now then tat = now end
  local allow_at = tat - burst
  if now < allow_at then return math.ceil(allow_at - now) end
  local new_tat = tat + interval
  redis.call('SET', key, new_tat, 'PX', math.ceil(new_tat - now + 1000))
  return 0
end
"""

# ``throttle(first, now)``: KEYS[first] is the hold, the keys after it one rate key per budget, and
# ARGV[2], ARGV[3]... the interval and burst of each (ARGV[1] is now). Gives 0 when the request may
# go (every budget charged), else {which, ms}: which is 0 for the hold, else the refusing budget's
# number; budgets before it stay charged, as one call per budget would.
_THROTTLE = """
local function throttle(first, now)
  local held = redis.call('PTTL', KEYS[first])
  if held > 0 then return {0, held} end
  for i = first + 1, #KEYS do
    local arg = 2 * (i - first)
    local wait = spend(KEYS[i], now, tonumber(ARGV[arg]), tonumber(ARGV[arg + 1]))
    if wait > 0 then return {i - first, wait} end
  end
  return 0
end
"""

_SPEND_SCRIPT = _SPEND + _THROTTLE + "return throttle(1, tonumber(ARGV[1]))"

# The poll's read: the export record, and its budgets spent only when the task's fencing token is the
# job's (a stale task calls no provider). KEYS: the export, the hold, the rate keys; ARGV: now,
# interval and burst per budget, then the job key and the token. Gives {record, throttle's answer};
# {record} when nothing was spent; {} when there is no record. The engine checks the token again,
# on the same record: this check only decides whether to spend.
READ_AND_SPEND_SCRIPT = (
    _SPEND
    + _THROTTLE
    + """
local raw = redis.call('GET', KEYS[1])
if not raw then return {} end
local job = cjson.decode(raw).jobs[ARGV[#ARGV - 1]]
if not job or job.token ~= tonumber(ARGV[#ARGV]) then return {raw} end
return {raw, throttle(2, tonumber(ARGV[1]))}
"""
)


@dataclass(frozen=True)
class Spend:
    """What one provider call spends from: its credential's hold, then each budget ``(bucket, requests,
    per_seconds)``, scarcest first."""

    hold: str
    budgets: tuple[tuple[str, int, float], ...]


@dataclass(frozen=True)
class Refusal:
    """Why a call may not go now: the hold (``budget`` None) or the budget of that index is spent for ``seconds``."""

    budget: int | None
    seconds: float


@dataclass(frozen=True)
class Spent:
    """Budgets spent already, and what that answered: a call that goes with this spends nothing more."""

    refusal: Refusal | None


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
if redis.call('GET', KEYS[1]) == ARGV[1] then return 1 end
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
        """Take the lease unless someone else holds it. A lease already ours counts as taken: the call sent
        again after its reply was lost finds our own earlier one (a task retried keeps its owner id too)."""
        keys = [self._lease_key(export_id, file_key), self._export_key(export_id)]
        return bool(self._eval(_ACQUIRE_SCRIPT, keys, [owner, int(seconds * 1000)]))

    def renew_lease(self, export_id: str, file_key: str, owner: str, seconds: float) -> bool:
        keys = [self._lease_key(export_id, file_key), self._export_key(export_id)]
        return bool(self._eval(_RENEW_SCRIPT, keys, [owner, int(seconds * 1000)]))

    def release_lease(self, export_id: str, file_key: str, owner: str) -> None:
        self._eval(_RELEASE_SCRIPT, [self._lease_key(export_id, file_key)], [owner])

    def spend(self, spend: Spend) -> Refusal | None:
        """Spend one request from every budget of ``spend`` in one round trip; None when the call may go."""
        return self.refusal(self._eval(_SPEND_SCRIPT, self._spend_keys(spend), self._spend_args(spend.budgets)))

    def _spend_keys(self, spend: Spend) -> list[str]:
        return [self.key("hold", spend.hold), *(self.key("rate", bucket) for bucket, _, _ in spend.budgets)]

    @staticmethod
    def _spend_args(budgets: tuple[tuple[str, int, float], ...]) -> list[float]:
        args = [base.now() * 1000]
        for _bucket, requests, per_seconds in budgets:
            interval_ms = per_seconds * 1000 / requests
            args += [interval_ms, per_seconds * 1000 - interval_ms]
        return args

    @staticmethod
    def refusal(answer: Any) -> Refusal | None:
        """The throttle script's answer as a :class:`Refusal`, None when the call may go."""
        if not answer:
            return None
        which, ms = int(answer[0]), int(answer[1])
        return Refusal(None if which == 0 else which - 1, ms / 1000)

    def hold(self, bucket: str, seconds: float) -> None:
        """Make every worker wait ``seconds`` before spending from ``bucket`` (a provider answered 429)."""
        self.redis.set(self.key("hold", bucket), "1", px=max(1, math.ceil(seconds * 1000)))

    def remember(self, name: str, value: str, seconds: float) -> None:
        """Keep a provider answer for ``seconds`` under ``cache:<name>``, for every process to reuse."""
        self.redis.set(self.key("cache", name), value, px=max(1, math.ceil(seconds * 1000)))

    def recall(self, name: str) -> str | None:
        """What :meth:`remember` kept under ``name``, or None once it expired."""
        value = self.redis.get(self.key("cache", name))
        return None if value is None else base.text(value)
