"""Export records: create (idempotent), read, and change them atomically (WATCH, mutate, MULTI/EXEC).

Every change to a record goes through :meth:`ExportsMixin.transact`: WATCH the key, let a pure
function mutate a fresh copy, then MULTI/EXEC. A concurrent change aborts the EXEC and the function
runs again on the new state, so two workers can never both advance an export. How a transaction
survives a lost connection or a failover, and which ones wait for a replica, is in
:mod:`worker.store.transactions`.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, TypeVar

from worker.models import ExportRecord, ExportStatus, FileRecord, Writes
from worker.store import base
from worker.store.base import text
from worker.store.limits import READ_AND_SPEND_SCRIPT, LimitsMixin, Spend, Spent
from worker.store.retention import RetentionMixin
from worker.store.transactions import AcknowledgingPipeline, Confirm, Decision, TransactionsMixin

T = TypeVar("T")


@dataclass
class WatchedExport:
    """An export read under WATCH, to be changed by :meth:`transact` on the same watch (no second read)."""

    record: ExportRecord
    spent: Spent | None
    """What spending the call's budgets answered; None when the read spent nothing (the task's token was
    not the job's, or there was nothing to spend)."""
    _transact: Callable[[Callable[[ExportRecord, Writes], Any]], Any]

    def transact(self, mutate: Callable[[ExportRecord, Writes], T]) -> T:
        """:meth:`ExportsMixin.transact`, whose first attempt decides on this record: one round trip, the EXEC."""
        result: T = self._transact(mutate)
        return result


class ExportsMixin(RetentionMixin, LimitsMixin, TransactionsMixin):
    def create(self, record: ExportRecord, then: Callable[[ExportRecord], None] | None = None) -> tuple[ExportRecord, bool]:
        """Store a new export; with an idempotency key already used, return that export instead.

        A key whose export is gone (forgotten after the retention) is free again: the new export takes it.
        The caller is given the export's id, so both answers wait for a replica (:attr:`Confirm.REQUIRED`).
        ``then`` runs once the new export is saved, before that wait: its first steps are sent even if
        the caller is then told to retry (the retry, with the same key, finds it running).
        """
        idem = self._idem_key(record.idempotency_key) if record.idempotency_key else None
        export_key = self._export_key(record.id)

        def body(pipe: Any) -> Decision[tuple[ExportRecord, bool]]:
            pipe.watch(export_key, *([idem] if idem else []))
            if idem:
                existing = pipe.get(idem)
                if existing is not None:
                    kept = pipe.get(self._export_key(text(existing)))
                    if kept is not None:
                        found = self._load_export(kept, text(existing))
                        return Decision((found, False), write=False, confirm=Confirm.REQUIRED)
            pipe.multi()
            if idem:
                pipe.set(idem, record.id)
            pipe.set(export_key, record.model_dump_json())
            pipe.zadd(self.key("exports"), {record.id: record.created_at})
            self._stage_events(pipe, record.id, [{"type": "created", "status": record.status}])
            self._stage_status_change(pipe, record, None, [])
            follow = (lambda: then(record)) if then is not None else None
            return Decision((record, True), confirm=Confirm.REQUIRED, then=follow)

        return self._commit(body)

    def get(self, export_id: str) -> ExportRecord:
        return self._load_export(self.redis.get(self._export_key(export_id)), export_id)

    @contextmanager
    def watch_export(self, export_id: str, job_key: str, token: int, spend: Spend | None) -> Iterator[WatchedExport]:
        """Read the export under WATCH and, when the job's token is ``token``, spend ``spend``: one round trip.

        A poll step reads, calls its provider, then changes the export: this read and the EXEC of
        :meth:`WatchedExport.transact` are its only round trips. A change by anyone in between aborts
        that EXEC and the change is decided again on a fresh read, as in :meth:`transact`. The connection
        stays with the watch until the block ends.
        """
        export_key = self._export_key(export_id)
        pipe = self._pipeline()
        keys = [export_key, *self._spend_keys(spend)] if spend else []
        args = [*self._spend_args(spend.budgets), job_key, token] if spend else []

        def read() -> Any:
            pipe.reset()
            if spend is None:
                return [pipe.watch_then(export_key, "GET", export_key)]
            return self._with_script(
                READ_AND_SPEND_SCRIPT, lambda sha: pipe.watch_then(export_key, "EVALSHA", sha, len(keys), *keys, *args)
            )

        with pipe:
            reply = self._ride_out(read)
            raw = reply[0] if reply else None
            record = self._load_export(raw, export_id)
            spent = Spent(self.refusal(reply[1])) if spend is not None and len(reply) == 2 else None

            unused = [(pipe, raw)]

            def transact(mutate: Callable[[ExportRecord, Writes], Any]) -> Any:
                def change(state: ExportRecord, _files: list[FileRecord], writes: Writes) -> Any:
                    return mutate(state, writes)

                # The watch serves one transaction: its EXEC (or the reset after it) ends the watch.
                return self._transact(export_id, change, with_files=False, watched=unused.pop() if unused else None)

            yield WatchedExport(record, spent, transact)

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

    def _transact(
        self,
        export_id: str,
        mutate: Callable[[ExportRecord, list[FileRecord], Writes], T],
        *,
        with_files: bool,
        watched: tuple[AcknowledgingPipeline, Any] | None = None,
    ) -> T:
        """``watched``: a pipeline already watching the export, and the record it read there (first attempt only)."""
        export_key = self._export_key(export_id)
        first_read = [watched[1]] if watched else []

        def body(pipe: AcknowledgingPipeline) -> Decision[T]:
            if first_read and pipe.watch_holds():
                raw = first_read.pop()
            else:
                first_read.clear()
                pipe.watch(export_key)
                raw = pipe.get(export_key)
            record = self._load_export(raw, export_id)
            file_keys = self._watch_file_keys(pipe, export_id) if with_files else None
            files = self._read_files(pipe, export_id, file_keys) if file_keys else []
            before = record.model_dump_json()
            status_before = record.status
            jobs_ended_before = {key for key, job in record.jobs.items() if job.status.terminal}
            writes = Writes()
            result = mutate(record, files, writes)
            after = record.model_dump_json()
            if after == before and not writes.files and not writes.events:
                return Decision(result, write=False)
            record.updated_at = base.now()
            ends_or_reopens = record.status != status_before and (record.status.terminal or status_before.terminal)
            if ends_or_reopens and file_keys is None:
                file_keys = self._watch_file_keys(pipe, export_id)
            pipe.multi()
            pipe.set(export_key, record.model_dump_json(), keepttl=True)
            for file_record in writes.files:
                self._stage_file(pipe, export_id, file_record)
            jobs_ended = {key for key, job in record.jobs.items() if job.status.terminal} - jobs_ended_before
            if jobs_ended and not writes.files and not record.status.terminal:
                self._stage_look_now(pipe, export_id)  # a job ended with no file: the completion check is due
            self._stage_events(pipe, export_id, writes.events)
            if record.status != status_before:  # last: its TTLs cover every key written before it
                written = [file_record.key for file_record in writes.files]
                self._stage_status_change(pipe, record, status_before, sorted({*(file_keys or []), *written}))
            return Decision(result, confirm=self._confirm_status_change(status_before, record.status))

        return self._commit(body, watched[0] if watched else None)

    @staticmethod
    def _confirm_status_change(before: ExportStatus, after: ExportStatus) -> Confirm:
        """Which export changes wait for a replica: those someone is told about.

        A cancel and a reopening (retry, replay) answer a caller: :attr:`Confirm.REQUIRED`. An end
        (COMPLETED, FAILED) comes before its callback: :attr:`Confirm.BEST_EFFORT`. Anything else
        is recovered if lost (fencing, the watchdog).
        """
        if after is before:
            return Confirm.NONE
        if after is ExportStatus.CANCELLED or before.terminal:
            return Confirm.REQUIRED
        return Confirm.BEST_EFFORT if after.terminal else Confirm.NONE

    def _watch_file_keys(self, pipe: Any, export_id: str) -> list[str]:
        """The file keys of the export, read while WATCHing its files index and finished set."""
        pipe.watch(self._files_index(export_id), self._finished_set(export_id))
        return sorted(text(raw) for raw in pipe.smembers(self._files_index(export_id)))

    def _read_files(self, pipe: Any, export_id: str, keys: list[str]) -> list[FileRecord]:
        """Every file record of ``keys``, read under WATCH of each."""
        record_keys = [self._file_key(export_id, key) for key in keys]
        pipe.watch(*record_keys)
        return [FileRecord.model_validate_json(raw) for raw in pipe.mget(record_keys) if raw is not None]

    def status_counts(self) -> dict[str, int]:
        return {text(k): int(v) for k, v in self.redis.hgetall(self.key("stats", "status")).items()}

    def list_ids(self, limit: int = 50) -> list[str]:
        ids: list[bytes] = self.redis.zrevrange(self.key("exports"), 0, limit - 1)  # type: ignore[assignment]
        return [text(raw) for raw in ids]

    def active_ids(self) -> list[str]:
        return sorted(text(raw) for raw in self.redis.smembers(self.key("active")))

    def mark_announced(self, export_id: str) -> None:
        self.redis.zrem(self.key("unannounced"), export_id)

    def unannounced_ids(self, ended_before: float, limit: int | None = None) -> list[str]:
        """Exports that ended before ``ended_before`` and whose end nobody reported (its worker died); the
        oldest first, at most ``limit``."""
        start, num = (0, limit) if limit is not None else (None, None)
        ids: Any = self.redis.zrangebyscore(self.key("unannounced"), "-inf", ended_before, start=start, num=num)
        return [text(raw) for raw in ids]
