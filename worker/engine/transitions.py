"""The export state machine as pure functions on a record.

Each function mutates an :class:`ExportRecord` inside :meth:`ExportStore.transact` and stages its
side writes (files, events); it never does I/O, so every rule here is unit-tested without Redis or
Celery. Fencing lives here too: a job step only proceeds with the job's current token.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from worker.engine.backoff import BackoffPolicy
from worker.errors import InvalidRequest, StaleTask
from worker.models import (
    ExportRecord,
    ExportStatus,
    FileOutput,
    FileRecord,
    FileStatus,
    JobRecord,
    JobSnapshot,
    JobState,
    JobStatus,
    NewExport,
    RemoteFile,
    Writes,
)


def _set_status(record: ExportRecord, status: ExportStatus, writes: Writes, **detail: object) -> None:
    record.status = status
    writes.event("status", status=status.value, **detail)


def fail(record: ExportRecord, writes: Writes, reason: str, now: float, *, job_key: str | None = None) -> bool:
    """Fail the export unless it already ended; returns whether this call ended it. ``job_key`` names the
    job that failed with it, so the view does not show it still SUBMITTING."""
    if record.status.terminal:
        return False
    if job_key is not None:
        record.jobs[job_key].status = JobStatus.FAILED
    record.error = reason
    record.finished_at = now
    _set_status(record, ExportStatus.FAILED, writes, error=reason)
    return True


def cancel(record: ExportRecord, writes: Writes, now: float) -> bool:
    if record.status.terminal:
        return False
    record.error = "cancelled by user"
    record.finished_at = now
    _set_status(record, ExportStatus.CANCELLED, writes)
    return True


def deadline_reason(record: ExportRecord, now: float) -> str | None:
    if now <= record.deadline_at:
        return None
    waited = now - record.created_at
    return (
        f"deadline exceeded: export was still {record.status.value} after {waited:.0f}s; "
        "submit again with a longer deadline_seconds or raise EXPORT_WORKER_DEADLINE_SECONDS"
    )


def first_jobs(params: dict[str, Any], planned: list[dict[str, Any]], now: float) -> dict[str, JobRecord]:
    """Job ``"0"`` alone, or, when the request was planned into several provider jobs, a ``SPLIT``
    ``"0"`` holding the request and children ``"0.0"``, ``"0.1"``, ... that cover it."""
    if len(planned) <= 1:
        return {"0": JobRecord(key="0", params=planned[0] if planned else params, token=1, next_action_at=now)}
    jobs = {"0": JobRecord(key="0", params=params, status=JobStatus.SPLIT, token=1)}
    for index, child in enumerate(planned):
        key = f"0.{index}"
        jobs[key] = JobRecord(key=key, params=child, parent="0", token=1, next_action_at=now)
    return jobs


def new_export(request: NewExport, now: float) -> ExportRecord:
    """A fresh export with its first jobs, each ready for its first submit task (token 1)."""
    return ExportRecord(
        **request.model_dump(exclude={"deadline_seconds", "planned"}),
        jobs=first_jobs(request.params, request.planned, now),
        created_at=now,
        updated_at=now,
        deadline_at=now + request.deadline_seconds,
    )


def current_job(record: ExportRecord, job_key: str, token: int) -> JobRecord:
    """The job a task may act on, or StaleTask if the export ended or the token moved on."""
    if record.status.terminal:
        raise StaleTask(f"export {record.id} is already {record.status.value}")
    job = record.jobs.get(job_key)
    if job is None or job.token != token:
        raise StaleTask(f"job {job_key} of export {record.id} has moved past token {token}")
    return job


def current_file(record: ExportRecord, file: FileRecord, token: int) -> FileRecord:
    """The file a download task may act on, or StaleTask if the export ended or the file moved on."""
    if record.status.terminal:
        raise StaleTask(f"export {record.id} is already {record.status.value}")
    if file.token != token or file.status is not FileStatus.PENDING:
        raise StaleTask(f"file {file.key} of export {record.id} has moved past token {token}")
    return file


def reschedule(job: JobRecord, delay: float, now: float) -> int:
    """Hand the job to a new task: bump the fencing token so every older task becomes stale."""
    job.token += 1
    job.next_action_at = now + delay
    return job.token


def claim_submit(record: ExportRecord, job_key: str, token: int, now: float, timeout: float, writes: Writes) -> int:
    """Mark a job SUBMITTING before calling create, so a worker dying mid-create is noticed."""
    job = current_job(record, job_key, token)
    if job.status not in (JobStatus.PENDING, JobStatus.SUBMITTING):
        raise StaleTask(f"job {job_key} of export {record.id} is already {job.status.value}")
    if job.status is JobStatus.SUBMITTING:
        job.ambiguous_creates += 1
        warning = (
            f"job {job_key}: a worker died during the provider create call; the provider may hold an orphan job (not downloaded)"
        )
        record.warnings.append(warning)
        writes.event("warning", message=warning)
    job.status = JobStatus.SUBMITTING
    job.submit_attempts += 1
    return reschedule(job, timeout, now)


def record_created(
    record: ExportRecord, job_key: str, token: int, snapshot: JobSnapshot, delay: float, now: float, writes: Writes
) -> int:
    job = current_job(record, job_key, token)
    job.status = JobStatus.POLLING
    job.provider_job_id = snapshot.provider_job_id
    job.transient_errors = 0
    _copy_snapshot(job, snapshot)
    if record.status is ExportStatus.PENDING:
        _set_status(record, ExportStatus.RUNNING, writes)
    writes.event("submitted", job=job_key, provider_job_id=snapshot.provider_job_id)
    return reschedule(job, delay, now)


def _copy_snapshot(job: JobRecord, snapshot: JobSnapshot) -> None:
    job.provider_state = snapshot.state
    job.raw_status = snapshot.raw_status
    job.message = snapshot.message
    job.percent_complete = snapshot.percent_complete
    job.records_processed = snapshot.records_processed


def retry_job_step(
    record: ExportRecord,
    job_key: str,
    token: int,
    *,
    submitting: bool,
    error: str | None,
    delay: float,
    now: float,
    note: str | None = None,
) -> int:
    """Hand a refused submit/poll to a new task after ``delay``; ``error`` counts as a transient failure,
    ``note`` only tells the user why it waits (e.g. a spent quota, until when)."""
    job = current_job(record, job_key, token)
    if submitting:
        job.status = JobStatus.PENDING
    if note is not None:
        job.message = note
    if error is not None:
        job.transient_errors += 1
        job.message = error
    return reschedule(job, delay, now)


def revive_job(record: ExportRecord, job_key: str, token: int, now: float, writes: Writes) -> JobStatus:
    """Give a silent chain a new task now; the old token goes stale."""
    job = current_job(record, job_key, token)
    writes.event("revived", job=job_key)
    reschedule(job, 0, now)
    return job.status


def finish_file(
    record: ExportRecord, file: FileRecord, token: int, output: FileOutput | None, error: str | None, now: float, writes: Writes
) -> FileRecord:
    """Mark the file DONE with what its sink committed, or FAILED with ``error``."""
    current_file(record, file, token)
    file.finished_at = now
    if output is not None:
        file.status = FileStatus.DONE
        file.rows = output.rows
        file.quarantined = output.quarantined
        file.bytes = output.bytes
        file.bytes_downloaded = output.bytes_downloaded
        file.path = output.path
        file.quarantine_path = output.quarantine_path
        writes.event("file_done", file=file.key, rows=output.rows, quarantined=output.quarantined)
    else:
        file.status = FileStatus.FAILED
        file.error = error
        writes.event("file_failed", file=file.key, error=error)
    return file


def retry_file(record: ExportRecord, file: FileRecord, token: int, error: str, delay: float, now: float, *, failed: bool) -> int:
    """Hand the file to a new download task after ``delay``; the old token goes stale. ``error`` tells the
    user why it waits; only a ``failed`` attempt counts towards giving up."""
    current_file(record, file, token)
    if failed:
        file.attempts += 1
    file.error = error
    file.token += 1
    file.dispatched_at = now + delay
    return file.token


def refresh_file_url(record: ExportRecord, file: FileRecord, token: int, fresh: RemoteFile, writes: Writes) -> FileRecord:
    current_file(record, file, token)
    file.url = fresh.url
    file.expires_at = fresh.expires_at.timestamp() if fresh.expires_at else None
    file.url_refreshes += 1
    writes.event("url_refreshed", file=file.key)
    return file


def revive_file(record: ExportRecord, file: FileRecord, token: int, now: float, writes: Writes) -> int:
    """Give a silent download a new task now; the old token goes stale."""
    current_file(record, file, token)
    file.token += 1
    file.dispatched_at = now
    writes.event("revived", file=file.key)
    return file.token


@dataclass(frozen=True)
class PollContext:
    """What applying a poll answer needs besides the record: clock, backoff, and provider rules."""

    now: float
    policy: BackoffPolicy
    rng: random.Random
    split: Callable[[dict, JobSnapshot], list[dict] | None]
    safe_name: Callable[[str, str], str]


@dataclass
class PollOutcome:
    """What the caller must dispatch after the transaction committed."""

    poll_token: int | None = None
    poll_delay: float = 0.0
    submit_jobs: list[tuple[str, int]] = field(default_factory=list)
    files: list[FileRecord] = field(default_factory=list)
    check_completion: bool = False
    failed: bool = False


def apply_snapshot(
    record: ExportRecord, job_key: str, token: int, snapshot: JobSnapshot, ctx: PollContext, writes: Writes
) -> PollOutcome:
    """Advance one job from a poll answer: keep polling, fan out files, split, or fail."""
    now, policy, rng, split, safe_name = ctx.now, ctx.policy, ctx.rng, ctx.split, ctx.safe_name
    job = current_job(record, job_key, token)
    previous = job.raw_status
    job.polls += 1
    job.transient_errors = 0
    _copy_snapshot(job, snapshot)
    if snapshot.raw_status != previous:
        writes.event("job_status", job=job_key, provider_status=snapshot.raw_status, message=snapshot.message)

    if not snapshot.state.terminal:
        if snapshot.state is JobState.RETRYING:
            delay = policy.slow_delay(rng)
        else:
            delay = policy.delay(job.polls, rng)
        return PollOutcome(poll_token=reschedule(job, delay, now), poll_delay=delay)

    job.next_action_at = None
    job.token += 1
    if snapshot.state is JobState.SUCCEEDED:
        job.status = JobStatus.SUCCEEDED
        files = []
        for index, remote in enumerate(snapshot.files):
            key = f"{job_key}-{index:04d}"
            # The key prefix keeps names unique when split sub-jobs return files of the same name.
            files.append(FileRecord.from_remote(key, job_key, remote, safe_name(f"{key}-{remote.name}", key)))
        for file_record in files:
            file_record.dispatched_at = now
            writes.put_file(file_record)
        record.files_total += len(files)
        if all(other.status.terminal for other in record.jobs.values()):
            _set_status(record, ExportStatus.DOWNLOADING, writes, files=record.files_total)
        return PollOutcome(files=files, check_completion=not files)

    if snapshot.state is JobState.FAILED:
        children = split(job.params, snapshot)
        if children:
            job.status = JobStatus.SPLIT
            keys: list[tuple[str, int]] = []
            for index, child_params in enumerate(children):
                child = JobRecord(key=f"{job_key}.{index}", params=child_params, parent=job_key, token=1, next_action_at=now)
                record.jobs[child.key] = child
                keys.append((child.key, child.token))
            writes.event("split", job=job_key, children=[key for key, _ in keys], reason=snapshot.message)
            return PollOutcome(submit_jobs=keys)
        job.status = JobStatus.FAILED
        reason = f"provider job {job.provider_job_id} failed: {snapshot.message or snapshot.raw_status}"
    else:
        job.status = JobStatus.FAILED
        reason = f"provider job {job.provider_job_id} was cancelled: {snapshot.message or snapshot.raw_status}"
    fail(record, writes, reason, now)
    return PollOutcome(failed=True)


def files_failure(failed: list[FileRecord], total: int) -> str:
    """Why an export failed for its files, once per reason: ``all 3 files failed: HTTP 404 (a.csv, b.csv, c.csv)``."""
    by_reason: dict[str, list[str]] = {}
    for file in failed:
        by_reason.setdefault(file.error or "unknown error", []).append(file.name)
    reasons = []
    for reason, names in list(by_reason.items())[:3]:
        shown = ", ".join(names[:3]) + (f" and {len(names) - 3} more" if len(names) > 3 else "")
        reasons.append(f"{reason} ({shown})")
    if len(by_reason) > 3:
        reasons.append(f"{len(by_reason) - 3} other reason(s)")
    if total == 1:
        head = "the export's only file failed"
    elif len(failed) == total:
        head = f"all {total} files failed"
    else:
        head = f"{len(failed)} of {total} files failed"
    others = total - len(failed)
    tail = {0: "", 1: "; the other file was written"}.get(others, f"; the other {others} files were written")
    return f"{head}: {'; '.join(reasons)}{tail}"


def complete_if_done(record: ExportRecord, files: list[FileRecord], writes: Writes, now: float) -> bool:
    """End the export once every job is done and every file finished; True if this call ended it.

    ``files`` must be read in the same atomic view as ``record`` (:meth:`ExportStore.transact_with_files`):
    a job's files are stored in the same EXEC that marks it SUCCEEDED, so that view holds every file
    of every succeeded job, and the sums below are over exactly those files.
    """
    if record.status.terminal:
        return False
    if not all(job.status in (JobStatus.SUCCEEDED, JobStatus.SPLIT) for job in record.jobs.values()):
        return False
    if len(files) != record.files_total or any(f.status is FileStatus.PENDING for f in files):
        return False
    for file in files:
        seen = file.rows + file.quarantined
        if file.status is FileStatus.DONE and file.record_count is not None and seen != file.record_count:
            warning = f"file {file.name}: provider recordCount is {file.record_count} but {seen} rows were parsed"
            record.warnings.append(warning)
            writes.event("warning", message=warning)
    record.rows = sum(f.rows for f in files)
    record.quarantined = sum(f.quarantined for f in files)
    record.bytes = sum(f.bytes for f in files)
    record.finished_at = now
    failed = [f for f in files if f.status is FileStatus.FAILED]
    if failed:
        reason = files_failure(failed, len(files))
        record.error = reason
        _set_status(record, ExportStatus.FAILED, writes, error=reason)
    else:
        _set_status(record, ExportStatus.COMPLETED, writes, rows=record.rows, quarantined=record.quarantined)
    return True


def reopen_failed_files(record: ExportRecord, files: list[FileRecord], writes: Writes, now: float) -> list[FileRecord]:
    """Give every unfinished file of a FAILED export another go; files already written are left alone.

    PENDING files count too: a download in flight when the export failed is refused at its finish,
    so its file stays PENDING and needs a new task like a FAILED one.
    """
    if record.status is not ExportStatus.FAILED:
        raise InvalidRequest(f"export {record.id} is {record.status.value}; only FAILED exports can be retried")
    if any(job.status is JobStatus.FAILED for job in record.jobs.values()):
        raise InvalidRequest(
            f"export {record.id} failed at the provider ({record.error}); use replay where the provider allows it, "
            "or submit a new export"
        )
    failed = [file for file in files if file.status is not FileStatus.DONE]
    if not failed:
        raise InvalidRequest(f"export {record.id} has no failed files to retry ({record.error})")
    for file in failed:
        file.status = FileStatus.PENDING
        file.token += 1
        file.attempts = 0
        file.error = None
        file.dispatched_at = now
        writes.put_file(file)
    _reopen(record, now)
    _set_status(record, ExportStatus.DOWNLOADING, writes, retried_files=len(failed))
    return failed


def reopen_replayed_job(
    record: ExportRecord, job_key: str, snapshot: JobSnapshot, delay: float, now: float, writes: Writes
) -> int:
    """After the provider accepted a replay, poll the same job again (once: a concurrent replay is refused).

    Replaying the sole job of a COMPLETED export refreshes it: the job lists its files again when it
    succeeds, under the same keys, and their downloads replace the old output."""
    job = record.jobs[job_key]
    refresh = record.status is ExportStatus.COMPLETED and job.status is JobStatus.SUCCEEDED and len(record.jobs) == 1
    if not refresh and (record.status is not ExportStatus.FAILED or job.status is not JobStatus.FAILED):
        raise InvalidRequest(f"export {record.id} is {record.status.value} again; it was replayed meanwhile")
    if refresh:
        record.files_total = 0
    job.status = JobStatus.POLLING
    job.transient_errors = 0
    _copy_snapshot(job, snapshot)
    _reopen(record, now)
    _set_status(record, ExportStatus.RUNNING, writes, replayed_job=job_key)
    return reschedule(job, delay, now)


def reopen_unsubmitted_job(record: ExportRecord, job_key: str, now: float, writes: Writes) -> int:
    """Submit again a job that failed before its provider created it (a check refused it, a credential
    was missing): ``retry`` after the setting is fixed. Once: a concurrent retry finds it reopened."""
    job = record.jobs[job_key]
    if record.status is not ExportStatus.FAILED or job.status is not JobStatus.FAILED or job.provider_job_id is not None:
        raise InvalidRequest(f"export {record.id} is {record.status.value} again; it was retried meanwhile")
    job.status = JobStatus.PENDING
    job.transient_errors = 0
    _reopen(record, now)
    _set_status(record, ExportStatus.PENDING, writes, resubmitted_job=job_key)
    return reschedule(job, 0, now)


def _reopen(record: ExportRecord, now: float) -> None:
    """An export asked to go on gets its whole deadline again: the old one may be why it failed."""
    record.deadline_at = now + (record.deadline_at - record.created_at)
    record.error = None
    record.finished_at = None
