"""What a caller asks of an export: create it, cancel it, retry its failed files, replay its job.

Requests arrive here validated (see :mod:`worker.api`); each command is one atomic transaction on
the export, followed by the tasks it implies (save, then dispatch, as every engine step).
"""

from __future__ import annotations

from worker.engine import lifecycle
from worker.engine import transitions as tr
from worker.engine.context import Runtime
from worker.errors import InvalidRequest
from worker.models import (
    ExportRecord,
    ExportRequest,
    ExportStatus,
    FileRecord,
    FileTaskArgs,
    JobRecord,
    JobStatus,
    JobTaskArgs,
    NewExport,
    Writes,
)

IDEMPOTENT_FIELDS = ("provider", "params", "credential", "sink", "sink_options", "callback")
"""What a request with a used idempotency key must repeat to get that key's export back."""


def create_export(rt: Runtime, request: NewExport) -> str:
    """Store the export and send its first submits; an idempotency key already used returns that export,
    when the request is the same one (as Stripe does, a different request under a used key is refused)."""

    def start(saved: ExportRecord) -> None:
        for job in saved.jobs.values():
            if job.status is JobStatus.PENDING:
                rt.dispatcher.submit(JobTaskArgs.of(saved, job.key, job.token), 0)

    stored, created = rt.store.create(tr.new_export(request, rt.clock()), then=start)
    if created:
        return stored.id
    differing = differences(stored, request)
    if differing:
        raise InvalidRequest(
            f"idempotency key {request.idempotency_key!r} was already used for export {stored.id} with a different "
            f"request ({', '.join(differing)} differ); send the same request to get that export, or use a new key"
        )
    return stored.id


def differences(stored: ExportRequest, request: ExportRequest) -> list[str]:
    """The fields (and parameter names) in which two requests differ."""
    fields: list[str] = []
    for name in IDEMPOTENT_FIELDS:
        before, after = getattr(stored, name), getattr(request, name)
        if before == after:
            continue
        if name == "params":
            fields += [f"params.{key}" for key in sorted(before.keys() | after.keys()) if before.get(key) != after.get(key)]
        else:
            fields.append(name)
    return fields


def cancel(rt: Runtime, export_id: str, actor: str | None = None) -> None:
    if not lifecycle.cancel_export(rt, export_id, actor):
        record = rt.store.get(export_id)
        raise InvalidRequest(f"export {export_id} already ended as {record.status.value}; nothing to cancel")


def retry(rt: Runtime, export_id: str, actor: str | None = None) -> None:
    """Re-download unfinished files, or replay a failed (or, to refresh it, a completed) provider job
    where the provider allows it."""
    record = rt.store.get(export_id)
    failed_jobs = [job for job in record.jobs.values() if job.status is JobStatus.FAILED]
    if record.status is ExportStatus.FAILED and failed_jobs:
        replay(rt, record, failed_jobs[0], actor)
        return
    if record.status is ExportStatus.COMPLETED and len(record.jobs) == 1:
        replay(rt, record, record.jobs["0"], actor)
        return

    def reopen(state: ExportRecord, files: list[FileRecord], writes: Writes) -> list[FileRecord]:
        return tr.reopen_failed_files(state, files, writes, rt.clock(), actor)

    for file in rt.store.transact_with_files(export_id, reopen):
        rt.dispatcher.download(FileTaskArgs(export_id=export_id, file_key=file.key, token=file.token), 0)


def replay(rt: Runtime, record: ExportRecord, job: JobRecord, actor: str | None = None) -> None:
    if job.provider_job_id is None:
        resubmit(rt, record, job, actor)
        return
    gateway = rt.gateway(record.provider, record.credential)
    snapshot = gateway.replay(job.provider_job_id, job.params)
    delay = rt.policy.delay(0, rt.rng)

    def mutate(state: ExportRecord, writes: Writes) -> int:
        return tr.reopen_replayed_job(state, job.key, snapshot, delay, rt.clock(), writes, actor)

    token = rt.store.transact(record.id, mutate)
    rt.dispatcher.poll(JobTaskArgs.of(record, job.key, token), delay)


def resubmit(rt: Runtime, record: ExportRecord, job: JobRecord, actor: str | None = None) -> None:
    """A job refused before the provider created it runs its submit step again (checks included)."""

    def mutate(state: ExportRecord, writes: Writes) -> int:
        return tr.reopen_unsubmitted_job(state, job.key, rt.clock(), writes, actor)

    token = rt.store.transact(record.id, mutate)
    rt.dispatcher.submit(JobTaskArgs.of(record, job.key, token), 0)
