"""The ``redis_stream`` sink's streams: staged appends, published whole by RENAME."""

from __future__ import annotations

from typing import Any

from worker.store.base import StoreBase


class StreamsMixin(StoreBase):
    def append_stream(self, key: str, entries: list[bytes], ttl_seconds: int) -> None:
        """XADD ``entries`` (field ``row``) to ``key`` in one round trip and (re)set its expiry.

        Sent again if Redis went away meanwhile, so entries may repeat (or, after a failover, be
        missing): :meth:`publish_streams` counts them before it publishes.
        """

        def fill(pipe: Any) -> None:
            for entry in entries:
                pipe.xadd(key, {"row": entry})
            pipe.expire(key, ttl_seconds)

        self._batch(fill)

    def publish_streams(self, moves: list[tuple[str, str | None]], ttl_seconds: int) -> None:
        """In one MULTI/EXEC, per ``(final, staging)``: RENAME staging onto final, or DEL final if staging is None."""
        with self.redis.pipeline(transaction=True) as pipe:
            for final, staging in moves:
                if staging is None:
                    pipe.delete(final)
                else:
                    pipe.rename(staging, final)
                    pipe.expire(final, ttl_seconds)
            pipe.execute()

    def delete_keys(self, *keys: str) -> None:
        self.redis.delete(*keys)
