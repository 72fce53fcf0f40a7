"""The state machine, without Redis or Celery: fencing, backoff, fan-out, split, completion."""

from __future__ import annotations

import random
from datetime import UTC, datetime

import pytest

from worker.engine import transitions as tr
from worker.engine.backoff import BackoffPolicy
from worker.errors import InvalidRequest, StaleTask
from worker.models import (
    ExportRecord,
    ExportStatus,
    FileRecord,
    FileStatus,
    JobRecord,
    JobSnapshot,
    JobState,
    JobStatus,
    RemoteFile,
    Writes,
)

POLICY = BackoffPolicy(initial=2, cap=300, multiplier=2, jitter=0.2, slow=900)


def record(**jobs: JobRecord) -> ExportRecord:
    return ExportRecord(
        id="e1",
        provider="samsara",
        params={},
        credential="default",
        jobs=jobs
        or {"0": JobRecord(key="0", params={"vehicleIds": [1, 2]}, status=JobStatus.POLLING, provider_job_id="p1", token=5)},
        status=ExportStatus.RUNNING,
        created_at=0,
        updated_at=0,
        deadline_at=10_000,
    )


def snapshot(state: JobState, raw: str, **extra) -> JobSnapshot:
    return JobSnapshot(provider_job_id="p1", state=state, raw_status=raw, **extra)


def apply(rec: ExportRecord, snap: JobSnapshot, token: int = 5, split=lambda p, s: None) -> tuple[tr.PollOutcome, Writes]:
    writes = Writes()
    ctx = tr.PollContext(now=100.0, policy=POLICY, rng=random.Random(1), split=split, safe_name=lambda name, fallback: name)
    outcome = tr.apply_snapshot(
        rec,
        "0",
        token,
        snap,
        ctx,
        writes,
    )
    return outcome, writes


def test_backoff_grows_with_jitter_and_is_capped() -> None:
    rng = random.Random(7)
    delays = [POLICY.delay(attempt, rng) for attempt in range(12)]
    assert 1.6 <= delays[0] <= 2.4 and 3.2 <= delays[1] <= 4.8
    assert max(delays) <= 300 and delays[-1] >= 240
    assert POLICY.after_retry_after(30, rng) >= 30


def test_non_terminal_poll_reschedules_with_a_new_token() -> None:
    rec = record()
    outcome, writes = apply(rec, snapshot(JobState.RUNNING, "Processing"))
    assert outcome.poll_token == 6 and rec.jobs["0"].token == 6
    assert 3.2 <= outcome.poll_delay <= 4.8 and rec.jobs["0"].polls == 1
    assert writes.events[0]["provider_status"] == "Processing"


def test_provider_retrying_state_polls_slowly() -> None:
    outcome, _ = apply(record(), snapshot(JobState.RETRYING, "ERROR", message="retrying in 15 minutes"))
    assert 900 <= outcome.poll_delay <= 1080


def test_stale_token_is_refused_without_changes() -> None:
    rec = record()
    with pytest.raises(StaleTask):
        apply(rec, snapshot(JobState.RUNNING, "Processing"), token=4)
    assert rec.jobs["0"].polls == 0


def test_completed_job_registers_one_file_record_per_file() -> None:
    rec = record()
    files = [
        RemoteFile(name=f"f{i}.csv", url=f"https://x/{i}", record_count=10, expires_at=datetime(2026, 1, 1, tzinfo=UTC))
        for i in range(3)
    ]
    outcome, writes = apply(rec, snapshot(JobState.SUCCEEDED, "Completed", files=files))
    assert [f.key for f in outcome.files] == ["0-0000", "0-0001", "0-0002"]
    assert writes.files == outcome.files and rec.files_total == 3
    assert rec.status is ExportStatus.DOWNLOADING and rec.jobs["0"].status is JobStatus.SUCCEEDED
    assert outcome.files[0].expires_at == datetime(2026, 1, 1, tzinfo=UTC).timestamp()


def test_completed_job_without_files_asks_for_completion_check() -> None:
    outcome, _ = apply(record(), snapshot(JobState.SUCCEEDED, "Completed"))
    assert outcome.check_completion and not outcome.files


def test_failed_job_fails_export_with_provider_reason() -> None:
    rec = record()
    outcome, _ = apply(rec, snapshot(JobState.FAILED, "Failed", message="Internal error"))
    assert outcome.failed and rec.status is ExportStatus.FAILED
    assert rec.error == "provider job p1 failed: Internal error"


def test_cancelled_job_fails_export() -> None:
    rec = record()
    apply(rec, snapshot(JobState.CANCELLED, "CANCELLED", message="cancelled by admin"))
    assert rec.status is ExportStatus.FAILED and "was cancelled: cancelled by admin" in (rec.error or "")


def test_too_large_job_is_split_into_child_jobs() -> None:
    rec = record()
    outcome, writes = apply(
        rec, snapshot(JobState.FAILED, "Failed", message="limit"), split=lambda p, s: [{"vehicleIds": [1]}, {"vehicleIds": [2]}]
    )
    assert outcome.submit_jobs == [("0.0", 1), ("0.1", 1)]
    assert rec.jobs["0"].status is JobStatus.SPLIT and rec.jobs["0.1"].parent == "0"
    assert rec.status is ExportStatus.RUNNING
    assert writes.events[-1]["type"] == "split"


def test_claim_submit_twice_records_an_ambiguous_create() -> None:
    rec = record(**{"0": JobRecord(key="0", params={}, token=1)})
    token = tr.claim_submit(rec, "0", 1, now=0, timeout=60, writes=Writes())
    assert rec.jobs["0"].status is JobStatus.SUBMITTING and token == 2
    tr.claim_submit(rec, "0", 2, now=0, timeout=60, writes=Writes())
    assert rec.jobs["0"].ambiguous_creates == 1 and "orphan" in rec.warnings[0]


def file_record(key: str, status: FileStatus, rows: int = 0) -> FileRecord:
    return FileRecord(key=key, job_key="0", name=key, safe_name=key, url="u", status=status, rows=rows)


def test_completion_waits_for_every_job_and_file() -> None:
    rec = record()
    rec.jobs["0"].status = JobStatus.SUCCEEDED
    rec.files_total = 2
    files = [file_record("a", FileStatus.DONE, 3), file_record("b", FileStatus.PENDING)]
    assert not tr.complete_if_done(rec, files, Writes(), now=5)
    files[1] = file_record("b", FileStatus.DONE, 4)
    assert tr.complete_if_done(rec, files, Writes(), now=5)
    assert rec.status is ExportStatus.COMPLETED and rec.rows == 7
    assert not tr.complete_if_done(rec, files, Writes(), now=6)


def test_completion_with_a_failed_file_fails_but_keeps_the_rest() -> None:
    rec = record()
    rec.jobs["0"].status = JobStatus.SUCCEEDED
    rec.files_total = 2
    failed = file_record("b", FileStatus.FAILED)
    failed.error = "header lacks required column(s) vehicleId"
    assert tr.complete_if_done(rec, [file_record("a", FileStatus.DONE, 3), failed], Writes(), now=5)
    assert rec.status is ExportStatus.FAILED and "1 of 2 file(s) failed" in (rec.error or "")
    assert rec.rows == 3


def test_deadline_reason_only_after_deadline() -> None:
    rec = record()
    assert tr.deadline_reason(rec, 10_000) is None
    assert "deadline exceeded" in (tr.deadline_reason(rec, 10_001) or "")


def test_reopen_failed_files_only_for_failed_exports() -> None:
    rec = record()
    with pytest.raises(InvalidRequest, match="only FAILED"):
        tr.reopen_failed_files(rec, [], Writes(), now=1)
    rec.status = ExportStatus.FAILED
    rec.jobs["0"].status = JobStatus.SUCCEEDED
    reopened = tr.reopen_failed_files(rec, [file_record("a", FileStatus.FAILED)], Writes(), now=1)
    assert [f.status for f in reopened] == [FileStatus.PENDING] and reopened[0].token == 1
    assert rec.status is ExportStatus.DOWNLOADING


def test_replaying_the_sole_job_of_a_completed_export_refreshes_it_once() -> None:
    rec = record()
    files = [RemoteFile(name="r.csv", url="https://x/r", authenticated=True)]
    apply(rec, snapshot(JobState.SUCCEEDED, "COMPLETED", files=files))
    assert tr.complete_if_done(rec, [file_record("0-0000", FileStatus.DONE, 3)], Writes(), now=5)
    token = tr.reopen_replayed_job(rec, "0", snapshot(JobState.QUEUED, "QUEUED"), 1.0, 6.0, Writes())
    assert rec.status is ExportStatus.RUNNING and rec.files_total == 0 and rec.jobs["0"].status is JobStatus.POLLING
    outcome, _ = apply(rec, snapshot(JobState.SUCCEEDED, "COMPLETED", files=files), token=token)
    assert [f.key for f in outcome.files] == ["0-0000"] and rec.files_total == 1  # the same file, downloaded again
    with pytest.raises(InvalidRequest, match="replayed meanwhile"):
        tr.reopen_replayed_job(rec, "0", snapshot(JobState.QUEUED, "QUEUED"), 1.0, 7.0, Writes())
