"""Revive chains that died with their worker: exactly one new task per silent job or file.

A chain is silent when its next step is overdue by ``stale_after_seconds`` (a multiple of the poll
cap). Reviving bumps the fencing token in the same transaction that checks staleness, so two
watchdogs racing (two beat processes) still produce one live chain, and the old task, should it
ever run, exits as stale.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from worker import metrics
from worker.engine import transitions as tr
from worker.engine.context import Runtime
from worker.engine.lifecycle import enforce_deadline, finish_if_complete, on_terminal
from worker.errors import StaleTask, UnknownExport
from worker.models import ExportRecord, FileRecord, FileStatus, FileTaskArgs, JobStatus, JobTaskArgs, Writes

log = logging.getLogger("worker.watchdog")

REVIVABLE = (JobStatus.PENDING, JobStatus.SUBMITTING, JobStatus.POLLING)


@dataclass
class WatchdogReport:
    scanned: int = 0
    jobs_revived: int = 0
    files_revived: int = 0
    expired: int = 0
    completed: int = 0
    announced: int = 0


def _revive_jobs(rt: Runtime, record: ExportRecord, report: WatchdogReport) -> None:
    now = rt.clock()
    stale_after = rt.settings.stale_after_seconds
    for job in record.jobs.values():
        due = job.next_action_at if job.next_action_at is not None else record.created_at
        if job.status not in REVIVABLE or now < due + stale_after:
            continue

        def mutate(state: ExportRecord, writes: Writes, key: str = job.key, token: int = job.token) -> JobStatus:
            return tr.revive_job(state, key, token, now, writes)

        try:
            status = rt.store.transact(record.id, mutate)
        except StaleTask:
            continue
        args = JobTaskArgs(export_id=record.id, job_key=job.key, token=job.token + 1)
        if status is JobStatus.POLLING:
            rt.dispatcher.poll(args, 0)
        else:
            rt.dispatcher.submit(args, 0)
        metrics.CHAINS_REVIVED.labels("job").inc()
        report.jobs_revived += 1
        log.warning("revived %s chain of export %s job %s", status.value, record.id, job.key)


def _revive_files(rt: Runtime, record: ExportRecord, files: list[FileRecord], report: WatchdogReport) -> None:
    now = rt.clock()
    for file in files:
        if file.status is not FileStatus.PENDING or now < file.dispatched_at + rt.settings.stale_after_seconds:
            continue

        def mutate(state: ExportRecord, current: FileRecord, writes: Writes, token: int = file.token) -> int:
            return tr.revive_file(state, current, token, now, writes)

        try:
            token = rt.store.transact_file(record.id, file.key, mutate, unleased=True)
        except StaleTask:
            continue
        rt.dispatcher.download(FileTaskArgs(export_id=record.id, file_key=file.key, token=token), 0)
        metrics.CHAINS_REVIVED.labels("file").inc()
        report.files_revived += 1
        log.warning("revived download of export %s file %s", record.id, file.key)


def _announce_unreported_ends(rt: Runtime, report: WatchdogReport) -> None:
    """Report ends whose worker died between the EXEC and the callback (see ``on_terminal``)."""
    for export_id in rt.store.unannounced_ids(ended_before=rt.clock() - rt.settings.stale_after_seconds):
        try:
            record = rt.store.get(export_id)
        except UnknownExport:
            rt.store.mark_announced(export_id)
            continue
        if not record.status.terminal:
            rt.store.mark_announced(export_id)
            continue
        on_terminal(rt, record)
        report.announced += 1
        log.warning("reported the end of export %s, which its worker did not live to report", export_id)


def run_watchdog(rt: Runtime) -> WatchdogReport:
    report = WatchdogReport()
    _announce_unreported_ends(rt, report)
    for export_id in rt.store.active_ids():
        try:
            record = rt.store.get(export_id)
        except UnknownExport:
            continue
        report.scanned += 1
        if enforce_deadline(rt, record):
            report.expired += 1
            continue
        _revive_jobs(rt, record, report)
        files = rt.store.files(export_id)
        _revive_files(rt, record, files, report)
        if finish_if_complete(rt, export_id):
            report.completed += 1
    return report
