"""Revive chains that died with their worker, end exports past their deadline, report ends nobody reported,
and forget what the retention is over: a bounded amount of work per run, in small Redis replies.

A chain is silent when its next step is overdue by ``stale_after_seconds`` (a multiple of the poll
cap). A run does not read every active export: the store's ``watch`` index says which exports may
hold a silent chain (see :mod:`worker.store.watch`), and ``deadlines`` which are past their
deadline. Each pass reads them a page at a time (ids, then records in one MGET, then their files)
and looks at no more than ``watchdog_max_exports``; the next run goes on from there.

Reviving bumps the fencing token in the same transaction that checks staleness, so two watchdogs
racing (two beat processes) still produce one live chain, and the old task, should it ever run,
exits as stale. A file is revived only while its download lease is free, under the same WATCH.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass

from worker import metrics
from worker.engine import transitions as tr
from worker.engine.context import Runtime
from worker.engine.lifecycle import enforce_deadline, finish_if_complete, on_terminal
from worker.errors import StaleTask
from worker.models import ExportRecord, FileRecord, FileStatus, FileTaskArgs, JobStatus, JobTaskArgs, Writes

log = logging.getLogger("worker.watchdog")

REVIVABLE = (JobStatus.PENDING, JobStatus.SUBMITTING, JobStatus.POLLING)


@dataclass
class WatchdogReport:
    scanned: int = 0
    """Live exports looked at (past their deadline, or with a chain that may be silent)."""
    jobs_revived: int = 0
    files_revived: int = 0
    expired: int = 0
    completed: int = 0
    announced: int = 0
    forgotten: int = 0
    """Ids dropped from the indexes because the retention removed their export."""
    swept: int = 0
    """Ended exports without a TTL (from before retention existed) that got one."""


def _revive_jobs(rt: Runtime, record: ExportRecord, report: WatchdogReport) -> list[float]:
    """Revive the export's silent job chains; returns when each live job is next due (revived: now)."""
    now = rt.clock()
    stale_after = rt.settings.stale_after_seconds
    dues: list[float] = []
    for job in record.jobs.values():
        if job.status not in REVIVABLE:
            continue
        due = job.next_action_at if job.next_action_at is not None else record.created_at
        if now < due + stale_after:
            dues.append(due)
            continue

        def mutate(state: ExportRecord, writes: Writes, key: str = job.key, token: int = job.token) -> JobStatus:
            return tr.revive_job(state, key, token, now, writes)

        try:
            status = rt.store.transact(record.id, mutate)
        except StaleTask:  # its chain moved on meanwhile: look again next run
            dues.append(due)
            continue
        args = JobTaskArgs.of(record, job.key, job.token + 1)
        if status is JobStatus.POLLING:
            rt.dispatcher.poll(args, 0)
        else:
            rt.dispatcher.submit(args, 0)
        metrics.CHAINS_REVIVED.labels("job").inc()
        report.jobs_revived += 1
        dues.append(now)
        log.warning("revived %s chain of export %s job %s", status.value, record.id, job.key)
    return dues


def _revive_files(rt: Runtime, record: ExportRecord, files: list[FileRecord], report: WatchdogReport) -> list[float]:
    """Revive the export's silent downloads; returns when each pending file is next due (revived: now)."""
    now = rt.clock()
    dues: list[float] = []
    for file in files:
        if file.status is not FileStatus.PENDING:
            continue
        if now < file.dispatched_at + rt.settings.stale_after_seconds:
            dues.append(file.dispatched_at)
            continue

        def mutate(state: ExportRecord, current: FileRecord, writes: Writes, token: int = file.token) -> int:
            return tr.revive_file(state, current, token, now, writes)

        try:
            token = rt.store.transact_file(record.id, file.key, mutate, unleased=True)
        except StaleTask:  # a live worker holds its lease, or its chain moved on: look again next run
            dues.append(file.dispatched_at)
            continue
        rt.dispatcher.download(FileTaskArgs(export_id=record.id, file_key=file.key, token=token), 0)
        metrics.CHAINS_REVIVED.labels("file").inc()
        report.files_revived += 1
        dues.append(now)
        log.warning("revived download of export %s file %s", record.id, file.key)
    return dues


def _look(rt: Runtime, record: ExportRecord, files: list[FileRecord], report: WatchdogReport) -> float:
    """Do what one live export needs; returns when its earliest live chain is due, for the next look."""
    if enforce_deadline(rt, record):
        report.expired += 1
        return math.inf
    dues = _revive_jobs(rt, record, report) + _revive_files(rt, record, files, report)
    if dues:
        return min(dues)
    # No chain left to wait for: the completion check is due, and its worker may have died before it.
    if finish_if_complete(rt, record.id):
        report.completed += 1
        return math.inf
    return rt.clock()


def _announce_unreported_ends(rt: Runtime, report: WatchdogReport) -> None:
    """Report ends whose worker died between the EXEC and the callback (see ``on_terminal``)."""
    ended_before = rt.clock() - rt.settings.stale_after_seconds
    budget = rt.settings.watchdog_max_exports
    while budget > 0:
        export_ids = rt.store.unannounced_ids(ended_before, limit=min(rt.settings.watchdog_page_size, budget))
        if not export_ids:
            return
        budget -= len(export_ids)
        for export_id, record in rt.store.records(export_ids).items():
            if record is None or not record.status.terminal:
                rt.store.mark_announced(export_id)
                continue
            on_terminal(rt, record)
            report.announced += 1
            log.warning("reported the end of export %s, which its worker did not live to report", export_id)


def _enforce_deadlines(rt: Runtime, report: WatchdogReport) -> None:
    now = rt.clock()
    budget = rt.settings.watchdog_max_exports
    while budget > 0:
        export_ids = rt.store.past_deadline(now, limit=min(rt.settings.watchdog_page_size, budget))
        if not export_ids:
            return
        budget -= len(export_ids)
        for export_id, record in rt.store.records(export_ids).items():
            if record is None or record.status.terminal:
                rt.store.stop_watching(export_id)
                continue
            report.scanned += 1
            if enforce_deadline(rt, record):
                report.expired += 1


def _look_at_due_exports(rt: Runtime, report: WatchdogReport) -> None:
    page = rt.settings.watchdog_page_size
    stale_before = rt.clock() - rt.settings.stale_after_seconds
    later = math.nextafter(stale_before, math.inf)  # a looked-at export leaves this run's range: no page brings it back
    budget = rt.settings.watchdog_max_exports
    while budget > 0:
        export_ids = rt.store.due_for_look(stale_before, limit=min(page, budget))
        if not export_ids:
            return
        budget -= len(export_ids)
        records = rt.store.records(export_ids)
        live = {export_id: record for export_id, record in records.items() if record is not None and not record.status.terminal}
        files = rt.store.files_of((export_id for export_id, record in live.items() if record.files_total), chunk=page)
        looks: dict[str, float] = {}
        for export_id in export_ids:
            record = live.get(export_id)
            if record is None:
                rt.store.stop_watching(export_id)
                continue
            report.scanned += 1
            looks[export_id] = max(_look(rt, record, files.get(export_id, []), report), later)
        rt.store.look_again({export_id: due for export_id, due in looks.items() if due != math.inf})


def _forget_what_the_retention_is_over(rt: Runtime, report: WatchdogReport) -> None:
    settings = rt.settings
    report.forgotten = rt.store.forget_expired(
        rt.clock() - rt.store.retention_seconds, page=settings.watchdog_page_size, limit=settings.watchdog_max_exports
    )
    rt.store.trim_events()
    swept = rt.store.sweep(rt.clock(), count=settings.watchdog_page_size)
    report.swept = swept.bounded
    if report.forgotten or swept.bounded or swept.watched:
        log.info(
            "retention: %d forgotten export(s) dropped from the indexes, %d ended export(s) without a TTL given one, "
            "%d live export(s) of an older version now watched",
            report.forgotten,
            swept.bounded,
            swept.watched,
        )


def run_watchdog(rt: Runtime) -> WatchdogReport:
    report = WatchdogReport()
    _announce_unreported_ends(rt, report)
    _enforce_deadlines(rt, report)
    _look_at_due_exports(rt, report)
    _forget_what_the_retention_is_over(rt, report)
    return report
