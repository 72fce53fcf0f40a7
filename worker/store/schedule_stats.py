"""When each beat schedule last delivered: the gauge operators alert on when a nightly export stops landing."""

from __future__ import annotations

from worker.store.base import StoreBase

# Keep the latest time: a late report of an older export (the watchdog announcing an end its worker
# did not live to report) must not make a schedule look older than it is.
_LATEST_SCRIPT = """
local current = tonumber(redis.call('HGET', KEYS[1], ARGV[1]) or '0')
if tonumber(ARGV[2]) > current then redis.call('HSET', KEYS[1], ARGV[1], ARGV[2]) end
return 0
"""


class ScheduleStatsMixin(StoreBase):
    def record_schedule_success(self, schedule: str, finished_at: float) -> None:
        self._eval(_LATEST_SCRIPT, [self.key("stats", "schedule_success")], [schedule, f"{finished_at:.3f}"])
