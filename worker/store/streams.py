"""The ``redis_stream`` sink's streams: staged appends, published whole by RENAME, never kept past their export."""

from __future__ import annotations

from worker.store.base import StoreBase

# RENAME each staging stream onto its final key (or DEL the final key when there is no staging one)
# and give it the sink's TTL, or what is left of the export's retention if that is shorter: a file
# committed after its export ended (a download finishing late) is forgotten with the export.
_PUBLISH_SCRIPT = """
local ms = tonumber(ARGV[1])
local left = redis.call('PTTL', KEYS[1])
if left > 0 and left < ms then ms = left end
for i = 2, #KEYS, 2 do
  if ARGV[i / 2 + 1] == '1' then
    redis.call('RENAME', KEYS[i + 1], KEYS[i])
    redis.call('PEXPIRE', KEYS[i], ms)
  else
    redis.call('DEL', KEYS[i])
  end
end
return 1
"""


class StreamsMixin(StoreBase):
    def append_stream(self, key: str, entries: list[bytes], ttl_seconds: int) -> None:
        """XADD ``entries`` (field ``row``) to ``key`` in one round trip and (re)set its expiry.

        The expiry is never longer than the retention, so a staging stream a killed worker left
        behind is gone no later than the export it was written for.
        """
        with self.redis.pipeline(transaction=False) as pipe:
            for entry in entries:
                pipe.xadd(key, {"row": entry})
            pipe.expire(key, min(ttl_seconds, self.retention_seconds))
            pipe.execute()

    def publish_streams(self, export_id: str, moves: list[tuple[str, str | None]], ttl_seconds: int) -> None:
        """Atomically, per ``(final, staging)``: RENAME staging onto final, or DEL final if staging is None.

        A published stream expires after ``ttl_seconds``, or with its export if that ends sooner.
        """
        keys = [self._export_key(export_id)]
        flags = []
        for final, staging in moves:
            keys += [final, staging or final]
            flags.append("1" if staging is not None else "0")
        self._eval(_PUBLISH_SCRIPT, keys, [min(ttl_seconds, self.retention_seconds) * 1000, *flags])

    def delete_keys(self, *keys: str) -> None:
        self.redis.delete(*keys)
