"""Everything that touches Redis, behind :class:`ExportStore`.

Keys (all under ``<prefix>:``, default prefix ``aew``):

=====================================  ======  ================================================
key                                    type    content
=====================================  ======  ================================================
``export:<id>``                        string  :class:`ExportRecord` JSON (jobs included)
``export:<id>:files``                  set     file keys of the export
``export:<id>:file:<file_key>``        string  :class:`FileRecord` JSON
``export:<id>:finished``               set     file keys that reached DONE or FAILED
``export:<id>:lease:<file_key>``       string  owner of the download lease (expires)
``idem:<idempotency_key>``             string  export id created for that key
``exports``                            zset    every export id, scored by creation time
``active``                             set     export ids not yet terminal (watchdog scans it)
``unannounced``                        zset    ended exports whose end was not yet reported, by end time
``events``                             stream  one entry per state change
``rate:<provider>:<credential>:<op>``  string  GCRA theoretical arrival time (ms); ``<op>`` is the budget name
``hold:<provider>:<credential>``       string  set after a provider 429, expires when it asked us to wait
``stats:status``                       hash    number of exports in each status (metrics)
``export:<id>:records:<file_key>``     stream  rows of one file (``redis_stream`` sink), expires
``export:<id>:quarantine:<file_key>``  stream  bad rows of one file (``redis_stream`` sink)
``staging:<attempt>:records|quarantine``  stream  an uncommitted redis_stream attempt
=====================================  ======  ================================================

Every change to a record goes through :meth:`ExportStore.transact`: WATCH the key, let a pure
function mutate a fresh copy, then MULTI/EXEC. A concurrent change aborts the EXEC and the function
runs again on the new state, so two workers can never both advance an export.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Callable, Iterable
from typing import Any, TypeVar

import redis
from pydantic import ValidationError

from worker.errors import ExportWorkerError, StaleTask, UnknownExport
from worker.models import ExportRecord, FileRecord, FileStatus, Writes

T = TypeVar("T")

EVENTS_MAXLEN = 100_000

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

_RENEW_SCRIPT = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('PEXPIRE', KEYS[1], ARGV[2]) end
return 0
"""

_RELEASE_SCRIPT = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"""


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


class CorruptRecord(ExportWorkerError):
    pass


STORE_UNAVAILABLE: tuple[type[Exception], ...] = (redis.exceptions.ConnectionError, redis.exceptions.TimeoutError)
"""What a store call raises while Redis is away: callers retry or report these, never lose state."""


class ExportStore:
    def __init__(self, client: redis.Redis, prefix: str = "aew") -> None:
        self.redis = client
        self.prefix = prefix
        self._shas: dict[str, str] = {}

    @classmethod
    def from_url(cls, url: str, prefix: str) -> ExportStore:
        return cls(redis.Redis.from_url(url, health_check_interval=30), prefix)

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
            fields = {"export_id": export_id, "at": f"{time.time():.3f}", "data": json.dumps(event)}
            pipe.xadd(self.events_key, fields, maxlen=EVENTS_MAXLEN, approximate=True)

    # -- exports ---------------------------------------------------------------------------------

    def create(self, record: ExportRecord) -> tuple[ExportRecord, bool]:
        """Store a new export; with an idempotency key already used, return that export instead."""
        idem = self.key("idem", record.idempotency_key) if record.idempotency_key else None
        export_key = self._export_key(record.id)
        with self.redis.pipeline() as pipe:
            while True:
                try:
                    if idem:
                        pipe.watch(idem)
                        existing = pipe.get(idem)
                        if existing is not None:
                            pipe.reset()
                            return self.get(_text(existing)), False
                    pipe.multi()
                    if idem:
                        pipe.set(idem, record.id)
                    pipe.set(export_key, record.model_dump_json())
                    pipe.zadd(self.key("exports"), {record.id: record.created_at})
                    pipe.sadd(self.key("active"), record.id)
                    pipe.hincrby(self.key("stats", "status"), record.status.value, 1)
                    self._stage_events(pipe, record.id, [{"type": "created", "status": record.status}])
                    pipe.execute()
                    return record, True
                except redis.WatchError:
                    continue

    def get(self, export_id: str) -> ExportRecord:
        return self._load_export(self.redis.get(self._export_key(export_id)), export_id)

    def transact(self, export_id: str, mutate: Callable[[ExportRecord, Writes], T]) -> T:
        """Apply ``mutate`` atomically. It may raise to abort; its record changes are saved otherwise."""
        return self._transact(export_id, lambda record, _files, writes: mutate(record, writes), with_files=False)

    def transact_with_files(self, export_id: str, mutate: Callable[[ExportRecord, list[FileRecord], Writes], T]) -> T:
        """Like :meth:`transact`, with every file record read under the same WATCH.

        A decision over the whole export (complete it, reopen its failed files) must see the record
        and every file in one atomic view: a poll that adds files, or a download that finishes or
        reopens one, between the read and the EXEC aborts the EXEC and the decision runs again.
        """
        return self._transact(export_id, mutate, with_files=True)

    def _transact(self, export_id: str, mutate: Callable[[ExportRecord, list[FileRecord], Writes], T], *, with_files: bool) -> T:
        export_key = self._export_key(export_id)
        with self.redis.pipeline() as pipe:
            while True:
                try:
                    pipe.watch(export_key)
                    record = self._load_export(pipe.get(export_key), export_id)
                    files = self._watch_files(pipe, export_id) if with_files else []
                    before = record.model_dump_json()
                    status_before = record.status
                    writes = Writes()
                    result = mutate(record, files, writes)
                    after = record.model_dump_json()
                    if after == before and not writes.files and not writes.events:
                        pipe.reset()
                        return result
                    record.updated_at = time.time()
                    pipe.multi()
                    pipe.set(export_key, record.model_dump_json())
                    for file_record in writes.files:
                        self._stage_file(pipe, export_id, file_record)
                    if record.status != status_before:
                        if record.status.terminal:
                            pipe.srem(self.key("active"), export_id)
                            pipe.zadd(self.key("unannounced"), {export_id: record.finished_at or record.updated_at})
                        elif status_before.terminal:
                            pipe.sadd(self.key("active"), export_id)
                        pipe.hincrby(self.key("stats", "status"), status_before.value, -1)
                        pipe.hincrby(self.key("stats", "status"), record.status.value, 1)
                    self._stage_events(pipe, export_id, writes.events)
                    pipe.execute()
                    return result
                except redis.WatchError:
                    continue

    def _watch_files(self, pipe: Any, export_id: str) -> list[FileRecord]:
        """Every file of the export, read while WATCHing the index, the finished set and each record."""
        pipe.watch(self._files_index(export_id), self._finished_set(export_id))
        keys = sorted(_text(raw) for raw in pipe.smembers(self._files_index(export_id)))
        if not keys:
            return []
        record_keys = [self._file_key(export_id, key) for key in keys]
        pipe.watch(*record_keys)
        return [FileRecord.model_validate_json(raw) for raw in pipe.mget(record_keys) if raw is not None]

    def status_counts(self) -> dict[str, int]:
        return {_text(k): int(v) for k, v in self.redis.hgetall(self.key("stats", "status")).items()}

    def list_ids(self, limit: int = 50) -> list[str]:
        ids: list[bytes] = self.redis.zrevrange(self.key("exports"), 0, limit - 1)  # type: ignore[assignment]
        return [_text(raw) for raw in ids]

    def active_ids(self) -> list[str]:
        return sorted(_text(raw) for raw in self.redis.smembers(self.key("active")))

    def mark_announced(self, export_id: str) -> None:
        self.redis.zrem(self.key("unannounced"), export_id)

    def unannounced_ids(self, ended_before: float) -> list[str]:
        """Exports that ended before ``ended_before`` and whose end nobody reported (its worker died)."""
        ids: list[bytes] = self.redis.zrangebyscore(self.key("unannounced"), "-inf", ended_before)  # type: ignore[assignment]
        return [_text(raw) for raw in ids]

    # -- files -----------------------------------------------------------------------------------

    def get_file(self, export_id: str, file_key: str) -> FileRecord:
        raw = self.redis.get(self._file_key(export_id, file_key))
        if raw is None:
            raise UnknownExport(f"{export_id} file {file_key}")
        return FileRecord.model_validate_json(raw)

    def files(self, export_id: str) -> list[FileRecord]:
        keys = sorted(_text(raw) for raw in self.redis.smembers(self._files_index(export_id)))
        if not keys:
            return []
        raws = self.redis.mget([self._file_key(export_id, key) for key in keys])
        return [FileRecord.model_validate_json(raw) for raw in raws if raw is not None]

    def finished_count(self, export_id: str) -> tuple[int, int]:
        """(files finished, files known) in one round trip."""
        with self.redis.pipeline(transaction=False) as pipe:
            pipe.scard(self._finished_set(export_id))
            pipe.scard(self._files_index(export_id))
            finished, total = pipe.execute()
        return int(finished), int(total)

    def _stage_file(self, pipe: Any, export_id: str, record: FileRecord) -> None:
        """Write a file record and keep the finished set in step with its status."""
        pipe.set(self._file_key(export_id, record.key), record.model_dump_json())
        pipe.sadd(self._files_index(export_id), record.key)
        if record.status is FileStatus.PENDING:
            pipe.srem(self._finished_set(export_id), record.key)
        else:
            pipe.sadd(self._finished_set(export_id), record.key)

    def transact_file(
        self,
        export_id: str,
        file_key: str,
        mutate: Callable[[ExportRecord, FileRecord, Writes], T],
        *,
        unleased: bool = False,
    ) -> T:
        """Atomic change of one file, decided on a view of its export too.

        The export record is WATCHed (and handed to ``mutate`` read-only) so a file can't change
        after its export ended; the file is marked finished in the same EXEC when it reaches
        DONE/FAILED. With ``unleased`` the download lease is WATCHed as well and a held lease aborts
        with :class:`StaleTask`: the watchdog must never revive a file a live worker is streaming.
        """
        export_key = self._export_key(export_id)
        key = self._file_key(export_id, file_key)
        lease_key = self._lease_key(export_id, file_key)
        watched = [export_key, key, lease_key] if unleased else [export_key, key]
        with self.redis.pipeline() as pipe:
            while True:
                try:
                    pipe.watch(*watched)
                    record = self._load_export(pipe.get(export_key), export_id)
                    raw = pipe.get(key)
                    if raw is None:
                        raise UnknownExport(f"{export_id} file {file_key}")
                    if unleased and pipe.exists(lease_key):
                        raise StaleTask(f"file {file_key} of export {export_id} is being downloaded")
                    current = FileRecord.model_validate_json(raw)
                    writes = Writes()
                    result = mutate(record, current, writes)
                    pipe.multi()
                    self._stage_file(pipe, export_id, current)
                    self._stage_events(pipe, export_id, writes.events)
                    pipe.execute()
                    return result
                except redis.WatchError:
                    continue

    # -- leases and rate limits ------------------------------------------------------------------

    def acquire_lease(self, export_id: str, file_key: str, owner: str, seconds: float) -> bool:
        return bool(self.redis.set(self._lease_key(export_id, file_key), owner, nx=True, px=int(seconds * 1000)))

    def renew_lease(self, export_id: str, file_key: str, owner: str, seconds: float) -> bool:
        return bool(self._eval(_RENEW_SCRIPT, [self._lease_key(export_id, file_key)], [owner, int(seconds * 1000)]))

    def release_lease(self, export_id: str, file_key: str, owner: str) -> None:
        self._eval(_RELEASE_SCRIPT, [self._lease_key(export_id, file_key)], [owner])

    def rate_limit_wait(self, bucket: str, requests: int, per_seconds: float) -> float:
        """GCRA shared by every worker: 0 when a request may go now, else seconds to wait."""
        interval_ms = per_seconds * 1000 / requests
        burst_ms = per_seconds * 1000 - interval_ms
        now_ms = time.time() * 1000
        wait_ms = self._eval(_RATE_SCRIPT, [self.key("rate", bucket)], [now_ms, interval_ms, burst_ms])
        return float(wait_ms) / 1000

    def hold(self, bucket: str, seconds: float) -> None:
        """Make every worker wait ``seconds`` before spending from ``bucket`` (a provider answered 429)."""
        self.redis.set(self.key("hold", bucket), "1", px=max(1, math.ceil(seconds * 1000)))

    def held_for(self, bucket: str) -> float:
        """Seconds left on a :meth:`hold` of ``bucket``; 0 when there is none."""
        remaining = int(self.redis.pttl(self.key("hold", bucket)))
        return remaining / 1000 if remaining > 0 else 0.0

    # -- events ----------------------------------------------------------------------------------

    def read_events(self, last_id: str, block_ms: int | None = None, count: int = 100) -> list[tuple[str, dict[str, Any]]]:
        """Events after ``last_id``; with ``block_ms``, wait up to that long for the first one."""
        answer: Any = self.redis.xread({self.events_key: last_id}, count=count, block=block_ms)
        events: list[tuple[str, dict[str, Any]]] = []
        for _stream, entries in answer or []:
            for entry_id, fields in entries:
                decoded = {_text(k): _text(v) for k, v in fields.items()}
                detail = json.loads(decoded.pop("data"))
                events.append((_text(entry_id), {**decoded, **detail}))
        return events

    # -- redis_stream sink: staged streams, published by rename ------------------------------------

    def append_stream(self, key: str, entries: list[bytes], ttl_seconds: int) -> None:
        """XADD ``entries`` (field ``row``) to ``key`` in one round trip and (re)set its expiry."""
        with self.redis.pipeline(transaction=False) as pipe:
            for entry in entries:
                pipe.xadd(key, {"row": entry})
            pipe.expire(key, ttl_seconds)
            pipe.execute()

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
