"""How an export ends: failed, cancelled, past its deadline, or completed once every file is done."""

from __future__ import annotations

from collections.abc import Callable

from worker import metrics
from worker.engine import transitions as tr
from worker.engine.context import Runtime, export_log
from worker.models import ExportRecord, FileRecord, Writes


def on_terminal(rt: Runtime, record: ExportRecord) -> None:
    """Report the end: metrics, log, temps of killed attempts removed, the caller's callback.

    The EXEC that ended the export also listed it as unannounced; only after the callback is sent is
    it struck off. A worker killed in between leaves it listed and the watchdog reports it again, so
    the callback is at least once (as every acks-late Celery task), never lost.
    """
    rt.sink(record).discard_attempts(record.id)
    metrics.EXPORTS_FINISHED.labels(record.provider, record.status.value).inc()
    metrics.EXPORT_SECONDS.labels(record.provider, record.status.value).observe(
        (record.finished_at or rt.clock()) - record.created_at
    )
    export_log(record).info("export %s: %s", record.status.value, record.error or f"{record.rows} rows")
    if record.callback is not None:
        rt.dispatcher.callback(record.callback, record)
    rt.store.mark_announced(record.id)


def _end(rt: Runtime, export_id: str, end: Callable[[ExportRecord, list[FileRecord], Writes], bool], *, files: bool) -> bool:
    """Apply one ending transition atomically; only the call that ended the export reports it.

    With ``files`` the transition sees every file record in the same atomic view as the export.
    """

    def mutate(record: ExportRecord, seen: list[FileRecord], writes: Writes) -> ExportRecord | None:
        return record if end(record, seen, writes) else None

    if files:
        ended = rt.store.transact_with_files(export_id, mutate)
    else:
        ended = rt.store.transact(export_id, lambda record, writes: mutate(record, [], writes))
    if ended is not None:
        on_terminal(rt, ended)
    return ended is not None


def fail_export(rt: Runtime, export_id: str, reason: str, *, job_key: str | None = None) -> bool:
    """Fail the export; ``job_key`` names a job that failed with it (one its provider never created)."""
    return _end(
        rt, export_id, lambda record, _files, writes: tr.fail(record, writes, reason, rt.clock(), job_key=job_key), files=False
    )


def cancel_export(rt: Runtime, export_id: str) -> bool:
    """Stop an export: its chains exit at their next step, downloads at the next file boundary."""
    return _end(rt, export_id, lambda record, _files, writes: tr.cancel(record, writes, rt.clock()), files=False)


def enforce_deadline(rt: Runtime, record: ExportRecord) -> bool:
    """True when the export has ended (already, or now because its deadline passed)."""
    if record.status.terminal:
        return True
    reason = tr.deadline_reason(record, rt.clock())
    if reason is None:
        return False
    fail_export(rt, record.id, reason)
    return True


def finish_if_complete(rt: Runtime, export_id: str) -> bool:
    """Complete the export when its atomic view says every file is finished.

    The cheap count first only skips work: a file that finishes later runs this check again.
    """
    finished, known = rt.store.finished_count(export_id)
    if finished < known:
        return False
    return _end(rt, export_id, lambda record, files, writes: tr.complete_if_done(record, files, writes, rt.clock()), files=True)
