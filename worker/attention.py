"""What needs an operator: failed exports and the stuck ones, each with why, where it broke and how often
it was tried. Pure functions of records, so the dashboard and the scrape-time gauges agree.

Stuck means one of: a job's next step was due longer ago than the stale margin (the watchdog should
have revived it and did not), a pending download is overdue with no worker holding its lease, the
deadline is near (or passed without the export being failed), or the provider put a hold (429) on the
export's credential.
"""

from __future__ import annotations

from collections import Counter
from typing import Literal

from pydantic import BaseModel

from worker.models import ExportRecord, ExportStatus, FailureStage, FileRecord, FileStatus, JobStatus

DEADLINE_NEAR_FRACTION = 0.2
"""An active export is flagged once less than this share of its deadline is left."""

_LIVE_JOB = (JobStatus.PENDING, JobStatus.SUBMITTING, JobStatus.POLLING)

Kind = Literal["failed", "stuck", "deadline", "hold"]


class Concern(BaseModel):
    """One export on the Needs-attention list."""

    export_id: str
    provider: str
    schedule: str | None
    status: ExportStatus
    kinds: list[Kind]
    reasons: list[str]
    stage: FailureStage | None
    attempts: int
    created_at: float
    updated_at: float
    age_seconds: float
    idle_seconds: float
    """Since the record last changed."""


def hold_bucket(record: ExportRecord) -> str:
    """The key a provider hold is kept under (``<provider>:<credential>``), as the gateway writes it."""
    return f"{record.provider}:{record.credential}"


def failure_stage(record: ExportRecord, files: list[FileRecord]) -> FailureStage | None:
    """Where a FAILED export broke: at the provider while any job failed or had not finished, else where
    most of its failed files broke (``download`` for files recorded before stages were kept)."""
    if record.status is not ExportStatus.FAILED:
        return None
    jobs = record.jobs.values()
    if any(job.status is JobStatus.FAILED or job.status in _LIVE_JOB for job in jobs):
        return "provider"
    stages = Counter(file.error_stage or "download" for file in files if file.status is not FileStatus.DONE)
    return stages.most_common(1)[0][0] if stages else "download"


def attempts(record: ExportRecord, files: list[FileRecord]) -> int:
    """Tries of the step that is failing: downloads of the worst file, else submits or polls of the worst job."""
    unfinished = [file for file in files if file.status is not FileStatus.DONE]
    if unfinished:
        return max(file.attempts + (file.status is FileStatus.FAILED) for file in unfinished)
    return max(
        (max(job.submit_attempts, job.transient_errors + (job.status is JobStatus.FAILED)) for job in record.jobs.values()),
        default=0,
    )


def _ago(seconds: float) -> str:
    seconds = max(0.0, seconds)
    if seconds < 120:
        return f"{seconds:.0f}s"
    if seconds < 7200:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"


def stuck_reasons(
    record: ExportRecord, files: list[FileRecord], *, now: float, stale_after: float, leased: set[str], hold_left: float
) -> list[tuple[Kind, str]]:
    """Why an active export looks stuck; empty when it is making progress (or has ended)."""
    if record.status.terminal:
        return []
    found: list[tuple[Kind, str]] = []
    for job in record.jobs.values():
        due = job.next_action_at if job.next_action_at is not None else record.created_at
        if job.status in _LIVE_JOB and now > due + stale_after:
            late = _ago(now - due)
            found.append(("stuck", f"job {job.key} ({job.status.value}): its next step was due {late} ago and has not run"))
    for file in files:
        if file.status is FileStatus.PENDING and file.key not in leased and now > file.dispatched_at + stale_after:
            late = _ago(now - file.dispatched_at)
            found.append(("stuck", f"download of {file.name} was due {late} ago and no worker holds it"))
    left = record.deadline_at - now
    if left < 0:
        found.append(("stuck", f"deadline passed {_ago(-left)} ago and the export was not failed (is beat running?)"))
    elif left < DEADLINE_NEAR_FRACTION * (record.deadline_at - record.created_at):
        found.append(("deadline", f"deadline in {_ago(left)}, still {record.status.value}"))
    if hold_left > 0:
        who = f"{record.provider} answered 429 for credential {record.credential!r}"
        found.append(("hold", f"{who}: every worker waits {_ago(hold_left)} more"))
    return found


def concern(
    record: ExportRecord,
    files: list[FileRecord],
    *,
    now: float,
    stale_after: float,
    leased: set[str] | None = None,
    hold_left: float = 0.0,
) -> Concern | None:
    """The export's entry on the Needs-attention list, or None when it needs nobody."""
    if record.status is ExportStatus.FAILED:
        found: list[tuple[Kind, str]] = [("failed", record.error or "failed without a reason")]
    else:
        found = stuck_reasons(record, files, now=now, stale_after=stale_after, leased=leased or set(), hold_left=hold_left)
    if not found:
        return None
    kinds: list[Kind] = list(dict.fromkeys(kind for kind, _ in found))
    return Concern(
        export_id=record.id,
        provider=record.provider,
        schedule=record.schedule,
        status=record.status,
        kinds=kinds,
        reasons=[reason for _, reason in found],
        stage=failure_stage(record, files),
        attempts=attempts(record, files),
        created_at=record.created_at,
        updated_at=record.updated_at,
        age_seconds=now - record.created_at,
        idle_seconds=now - record.updated_at,
    )
