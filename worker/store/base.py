"""What every part of the store shares: the client, the key prefix, key names, script calls, staging."""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterable
from typing import Any, Self

import redis
from pydantic import ValidationError

from worker.errors import ExportWorkerError, UnknownExport
from worker.models import ExportRecord, FileRecord, FileStatus
from worker.store.connection import RedisTarget, connect

EVENTS_MAXLEN = 100_000

STORE_UNAVAILABLE: tuple[type[Exception], ...] = (redis.exceptions.ConnectionError, redis.exceptions.TimeoutError)
"""What a store call raises while Redis is away: callers retry or report these, never lose state."""


class CorruptRecord(ExportWorkerError):
    pass


def now() -> float:
    """The store's wall clock (``updated_at``, event times, the rate limiter); one place for tests to move it."""
    return time.time()


def text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


class StoreBase:
    def __init__(self, client: redis.Redis, prefix: str = "aew") -> None:
        self.redis = client
        self.prefix = prefix
        self._shas: dict[str, str] = {}
        self.retry_seconds = 30.0
        """How long a transaction is retried while Redis is away (a failover)."""
        self.wait_replicas = 0
        """Replicas a write callers rely on waits for (WAIT); 0: none."""
        self.wait_timeout_ms = 1000

    @classmethod
    def from_url(cls, url: str, prefix: str) -> Self:
        return cls.connect(RedisTarget(url=url), prefix)

    @classmethod
    def connect(cls, target: RedisTarget, prefix: str) -> Self:
        """The store every process uses: through Sentinel when ``target`` names sentinels (see :mod:`worker.store.connection`)."""
        store = cls(connect(target), prefix)
        store.retry_seconds = target.retry_seconds
        store.wait_replicas = target.wait_replicas
        store.wait_timeout_ms = target.wait_timeout_ms
        return store

    def _batch(self, fill: Callable[[Any], object]) -> list[Any]:
        """Commands sent together without a transaction, retried as one while Redis is away (as every
        single command is): for reads, and writes that are safe to repeat or checked later."""

        def once() -> list[Any]:
            with self.redis.pipeline(transaction=False) as pipe:
                fill(pipe)
                return pipe.execute()

        ride_out = getattr(self.redis, "ride_out", None)
        return ride_out(once) if ride_out else once()

    def _eval(self, script: str, keys: list[str], args: list[Any]) -> Any:
        """EVALSHA, loading the script first rather than after a NOSCRIPT error.

        Loading first matters for the embedded fake server, which drops the connection on any
        error reply; a real Redis that lost its scripts (restart) still gets one reload and retry.
        """
        sha = self._shas.get(script)
        if sha is None:
            sha = self._shas[script] = self.redis.script_load(script)
        try:
            return self.redis.evalsha(sha, len(keys), *keys, *args)
        except redis.exceptions.NoScriptError:
            self._shas[script] = self.redis.script_load(script)
            return self.redis.evalsha(self._shas[script], len(keys), *keys, *args)

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

    @property
    def events_key(self) -> str:
        return self.key("events")

    # -- shared by the export and file transactions ------------------------------------------------

    @staticmethod
    def _load_export(raw: bytes | str | None, export_id: str) -> ExportRecord:
        if raw is None:
            raise UnknownExport(export_id)
        try:
            return ExportRecord.model_validate_json(raw)
        except ValidationError as exc:
            raise CorruptRecord(f"export {export_id} in Redis does not validate: {exc}") from exc

    def _stage_events(self, pipe: Any, export_id: str, events: Iterable[dict[str, Any]]) -> None:
        for event in events:
            fields = {"export_id": export_id, "at": f"{now():.3f}", "data": json.dumps(event)}
            pipe.xadd(self.events_key, fields, maxlen=EVENTS_MAXLEN, approximate=True)

    def _stage_file(self, pipe: Any, export_id: str, record: FileRecord) -> None:
        """Write a file record and keep the finished set in step with its status."""
        pipe.set(self._file_key(export_id, record.key), record.model_dump_json())
        pipe.sadd(self._files_index(export_id), record.key)
        if record.status is FileStatus.PENDING:
            pipe.srem(self._finished_set(export_id), record.key)
        else:
            pipe.sadd(self._finished_set(export_id), record.key)
