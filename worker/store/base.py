"""What every part of the store shares: the client, the key prefix, key names, script calls, staging."""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterable
from typing import Any, Self, TypeVar

import redis
from pydantic import ValidationError

from worker.errors import ExportWorkerError, UnknownExport
from worker.models import ExportRecord, FileRecord, FileStatus
from worker.store.connection import RedisTarget
from worker.store.server import EvictionGuard, connect, location, server_memory

T = TypeVar("T")

EVENTS_MAXLEN = 100_000
EXPORT_EVENTS_MAXLEN = 2_000
"""Per-export events kept (approximately): a whole timeline of polls, files and retries fits."""

DEFAULT_RETENTION_SECONDS = 30 * 86400
"""A store built without settings keeps ended exports as long as the settings' default."""

STORE_UNAVAILABLE: tuple[type[Exception], ...] = (redis.exceptions.ConnectionError, redis.exceptions.TimeoutError)
"""What a store call raises while Redis is away: callers retry or report these, never lose state."""


class CorruptRecord(ExportWorkerError):
    pass


def now() -> float:
    """The store's wall clock (``updated_at``, event times, the rate limiter); one place for tests to move it."""
    return time.time()


def text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


def decode_event(entry_id: bytes | str, fields: dict[Any, Any]) -> tuple[str, dict[str, Any]]:
    """One stream entry as (entry id, event): the envelope fields with the event's own JSON merged in."""
    decoded = {text(k): text(v) for k, v in fields.items()}
    detail = json.loads(decoded.pop("data"))
    return text(entry_id), {**decoded, **detail}


class StoreBase:
    def __init__(self, client: redis.Redis, prefix: str = "aew", *, retention_seconds: int = DEFAULT_RETENTION_SECONDS) -> None:
        self.redis = client
        self.prefix = prefix
        self.retention_seconds = retention_seconds
        """How long every key of an ended export is kept (EXPORT_WORKER_RETENTION_SECONDS)."""
        self._shas: dict[str, str] = {}
        self._guard: EvictionGuard | None = None
        self.retry_seconds = 30.0
        """How long a transaction is retried while Redis is away (a failover)."""
        self.wait_replicas = 0
        """Replicas a write callers rely on waits for (WAIT); 0: none."""
        self.wait_timeout_ms = 1000

    @classmethod
    def from_url(
        cls, url: str, prefix: str, *, retention_seconds: int = DEFAULT_RETENTION_SECONDS, allow_evicting: bool = False
    ) -> Self:
        return cls.connect(RedisTarget(url=url), prefix, retention_seconds=retention_seconds, allow_evicting=allow_evicting)

    @classmethod
    def connect(
        cls,
        target: RedisTarget,
        prefix: str,
        *,
        retention_seconds: int = DEFAULT_RETENTION_SECONDS,
        allow_evicting: bool = False,
    ) -> Self:
        """The store every process uses, on a URL or on the primary Sentinels name (:mod:`worker.store.connection`);
        the first connection to each primary refuses a Redis that may evict (:mod:`worker.store.server`)."""
        client, guard = connect(target, allow_evicting=allow_evicting)
        store = cls(client, prefix, retention_seconds=retention_seconds)
        store._guard = guard
        store.retry_seconds = target.retry_seconds
        store.wait_replicas = target.wait_replicas
        store.wait_timeout_ms = target.wait_timeout_ms
        return store

    @property
    def where(self) -> str:
        """Where this store looks, for messages: the Redis and the key prefix, never a password."""
        return f"{getattr(self.redis, 'where', None) or 'Redis at ' + location(self.redis)} under key prefix {self.prefix!r}"

    def check_server(self) -> str | None:
        """Connect now, so an evicting Redis is refused at once; returns its maxmemory-policy, None when it would not say."""
        self.redis.ping()
        return self._guard.policy if self._guard else None

    def memory(self) -> tuple[int, int] | None:
        """Redis ``(used_memory, maxmemory)`` in bytes, read now; None when the server has no INFO."""
        return server_memory(self.redis)

    def _batch(self, fill: Callable[[Any], object]) -> list[Any]:
        """Commands sent together without a transaction, retried as one while Redis is away (as every
        single command is): for reads, and writes that are safe to repeat or checked later."""

        def once() -> list[Any]:
            with self.redis.pipeline(transaction=False) as pipe:
                fill(pipe)
                return pipe.execute()

        return self._ride_out(once)

    def _ride_out(self, call: Callable[[], T]) -> T:
        """``call`` (safe to repeat) retried while Redis is away, as the store's client does for single
        commands; called once on a client that does not ride out (fakeredis)."""
        ride_out = getattr(self.redis, "ride_out", None)
        return ride_out(call) if ride_out else call()

    def _eval(self, script: str, keys: list[str], args: list[Any]) -> Any:
        return self._with_script(script, lambda sha: self.redis.evalsha(sha, len(keys), *keys, *args))

    def _with_script(self, script: str, send: Callable[[str], T]) -> T:
        """``send(sha)`` of a script loaded first rather than after a NOSCRIPT error.

        Loading first matters for the embedded fake server, which drops the connection on any
        error reply; a real Redis that lost its scripts (restart) still gets one reload and retry.
        """
        try:
            return send(self._sha(script))
        except redis.exceptions.NoScriptError:
            return send(self._sha(script, reload=True))

    def _sha(self, script: str, *, reload: bool = False) -> str:
        """The script's SHA, loaded into Redis on first use (or again, after a NOSCRIPT error)."""
        if reload or script not in self._shas:
            self._shas[script] = self.redis.script_load(script)
        return self._shas[script]

    # -- key names (the map is in this package's docstring) -----------------------------------------

    def key(self, *parts: str) -> str:
        return ":".join((self.prefix, *parts))

    def _export_key(self, export_id: str) -> str:
        return self.key("export", export_id)

    def _file_key(self, export_id: str, file_key: str) -> str:
        return self.key("export", export_id, "file", file_key)

    def _files_index(self, export_id: str) -> str:
        return self.key("export", export_id, "files")

    def _finished_set(self, export_id: str) -> str:
        return self.key("export", export_id, "finished")

    def _lease_key(self, export_id: str, file_key: str) -> str:
        return self.key("export", export_id, "lease", file_key)

    def records_key(self, export_id: str, file_key: str) -> str:
        return self.key("export", export_id, "records", file_key)

    def quarantine_key(self, export_id: str, file_key: str) -> str:
        return self.key("export", export_id, "quarantine", file_key)

    def export_events_key(self, export_id: str) -> str:
        return self.key("export", export_id, "events")

    def _idem_key(self, idempotency_key: str) -> str:
        return self.key("idem", idempotency_key)

    @property
    def events_key(self) -> str:
        return self.key("events")

    # -- shared by the export and file transactions ------------------------------------------------

    def _missing(self, export_id: str, file_key: str | None = None) -> UnknownExport:
        return UnknownExport.missing(export_id, where=self.where, retention_seconds=self.retention_seconds, file_key=file_key)

    def _load_export(self, raw: bytes | str | None, export_id: str) -> ExportRecord:
        if raw is None:
            raise self._missing(export_id)
        try:
            return ExportRecord.model_validate_json(raw)
        except ValidationError as exc:
            raise CorruptRecord(f"export {export_id} in Redis does not validate: {exc}") from exc

    def _stage_events(self, pipe: Any, export_id: str, events: Iterable[dict[str, Any]]) -> None:
        for event in events:
            fields = {"export_id": export_id, "at": f"{now():.3f}", "data": json.dumps(event)}
            pipe.xadd(self.events_key, fields, maxlen=EVENTS_MAXLEN, approximate=True)
            pipe.xadd(self.export_events_key(export_id), fields, maxlen=EXPORT_EVENTS_MAXLEN, approximate=True)

    def _stage_file(self, pipe: Any, export_id: str, record: FileRecord) -> None:
        """Write a file record and keep the finished set in step with its status.

        KEEPTTL: a record of an ended export keeps its retention. A finished file brings the export's
        next watchdog look forward to the next run: its completion check is due now, and if the worker
        doing it dies, the watchdog does it.
        """
        pipe.set(self._file_key(export_id, record.key), record.model_dump_json(), keepttl=True)
        pipe.sadd(self._files_index(export_id), record.key)
        if record.status is FileStatus.PENDING:
            pipe.srem(self._finished_set(export_id), record.key)
        else:
            pipe.sadd(self._finished_set(export_id), record.key)
            self._stage_look_now(pipe, export_id)

    def _stage_look_now(self, pipe: Any, export_id: str) -> None:
        """Have the watchdog look at a live export on its next run (XX: never lists an ended one again)."""
        pipe.zadd(self.key("watch"), {export_id: 0}, xx=True, lt=True)
