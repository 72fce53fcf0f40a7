"""The ``redis_stream`` sink's streams: staged appends, published whole by RENAME, never kept past their export."""

from __future__ import annotations

from typing import Any

from worker.errors import TransientError
from worker.store.base import StoreBase

# RENAME each staging stream onto its final key (or DEL the final key when there is no staging one)
# and give it the sink's TTL, or the export's own expiry time if that comes sooner: a file committed
# after its export ended (a download finishing late) is forgotten with the export. Absolute times
# (PEXPIRETIME, PEXPIREAT) so a stream can never outlive the record by the time the script takes.
# First, every staging stream must hold exactly the entries its attempt appended: across a failover
# appends can be lost with the old primary, or sent twice after a lost reply. Otherwise nothing is
# published and the entries held are returned (-1: published). A staging stream already gone whose
# final stream holds the count was moved by this very call, sent again after its reply was lost.
# KEYS: the export, then (final, staging) per move; ARGV: the TTL, then (moved?, entries) per move.
_PUBLISH_SCRIPT = """
local clock = redis.call('TIME')
local at = clock[1] * 1000 + math.floor(clock[2] / 1000) + tonumber(ARGV[1])
local export_at = redis.call('PEXPIRETIME', KEYS[1])
if export_at > 0 and export_at < at then at = export_at end
local moves = (#KEYS - 1) / 2
for m = 1, moves do
  local final, staging, wanted = KEYS[2 * m], KEYS[2 * m + 1], tonumber(ARGV[2 * m + 1])
  if ARGV[2 * m] == '1' then
    local held = redis.call('XLEN', staging)
    local moved = held == 0 and redis.call('EXISTS', staging) == 0 and redis.call('XLEN', final) == wanted
    if held ~= wanted and not moved then return held end
  end
end
for m = 1, moves do
  local final, staging = KEYS[2 * m], KEYS[2 * m + 1]
  if ARGV[2 * m] == '1' then
    if redis.call('EXISTS', staging) == 1 then redis.call('RENAME', staging, final) end
    redis.call('PEXPIREAT', final, at)
  else
    redis.call('DEL', final)
  end
end
return -1
"""


class StreamsMixin(StoreBase):
    def append_stream(self, key: str, entries: list[bytes], ttl_seconds: int) -> None:
        """XADD ``entries`` (field ``row``) to ``key`` in one round trip and (re)set its expiry.

        The expiry is never longer than the retention, so a staging stream a killed worker left
        behind is gone no later than the export it was written for. Sent again if Redis went away
        meanwhile, so entries may repeat (or, after a failover, be missing): :meth:`publish_streams`
        counts them before it publishes.
        """

        def fill(pipe: Any) -> None:
            for entry in entries:
                pipe.xadd(key, {"row": entry})
            pipe.expire(key, min(ttl_seconds, self.retention_seconds))

        self._batch(fill)

    def publish_streams(self, export_id: str, moves: list[tuple[str, str | None, int]], ttl_seconds: int) -> None:
        """Atomically, per ``(final, staging, entries)``: RENAME staging onto final, or DEL final if staging is None.

        A published stream expires after ``ttl_seconds``, or with its export if that ends sooner. A
        staging stream that does not hold the ``entries`` its attempt appended (some were lost with a
        failed primary, or sent twice) publishes nothing: :class:`TransientError`, the file loads again.
        """
        keys = [self._export_key(export_id)]
        args: list[Any] = [min(ttl_seconds, self.retention_seconds) * 1000]
        for final, staging, entries in moves:
            keys += [final, staging or final]
            args += ["1" if staging is not None else "0", entries]
        held = int(self._eval(_PUBLISH_SCRIPT, keys, args))
        if held != -1:
            raise TransientError(
                f"the file's staging stream holds {held} entries, not the ones this attempt wrote: Redis lost or "
                "repeated some while it was away (a failover); the file is loaded again"
            )

    def delete_keys(self, *keys: str) -> None:
        self.redis.delete(*keys)
