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
from worker.security.filenames import safe_filename

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


def apply(
    rec: ExportRecord, snap: JobSnapshot, token: int = 5, split=lambda p, s: None, safe_name=lambda name, fallback: name
) -> tuple[tr.PollOutcome, Writes]:
    writes = Writes()
    ctx = tr.PollContext(now=100.0, policy=POLICY, rng=random.Random(1), split=split, safe_name=safe_name)
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


def test_backoff_jitter_spreads_over_its_whole_band_and_no_further() -> None:
    """Thousands of exports polled at once must spread: every draw lies within +-jitter of the
    schedule, and the draws reach both edges (a one-sided or narrowed band would regroup them)."""
    rng = random.Random(11)
    for attempt, base in ((0, 2.0), (3, 16.0)):
        draws = [POLICY.delay(attempt, rng) for _ in range(2000)]
        assert base * 0.8 <= min(draws) < base * 0.81 and base * 1.19 < max(draws) <= base * 1.2
    fast = BackoffPolicy(initial=0.1, cap=300, multiplier=2, jitter=0.2, slow=900)
    assert max(fast.delay(0, rng) for _ in range(100)) <= 0.12  # a short first delay is kept, not rounded up
    for retry_after, band in ((30.0, 6.0), (0.5, 0.2)):  # the band is jitter x max(1 s, Retry-After)
        waits = [POLICY.after_retry_after(retry_after, rng) - retry_after for _ in range(2000)]
        assert 0 <= min(waits) < band * 0.01 and band * 0.99 < max(waits) <= band


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
    rec = succeeded(files_total=2)
    files = [file_record("a", FileStatus.DONE, 3), file_record("b", FileStatus.PENDING)]
    assert not tr.complete_if_done(rec, files, Writes(), now=5)
    files[1] = file_record("b", FileStatus.DONE, 4)
    assert tr.complete_if_done(rec, files, Writes(), now=5)
    assert rec.status is ExportStatus.COMPLETED and rec.rows == 7
    assert not tr.complete_if_done(rec, files, Writes(), now=6)


def test_completion_with_a_failed_file_fails_but_keeps_the_rest() -> None:
    rec = succeeded(files_total=2)
    failed = file_record("b", FileStatus.FAILED)
    failed.error = "header lacks required column(s) vehicleId"
    assert tr.complete_if_done(rec, [file_record("a", FileStatus.DONE, 3), failed], Writes(), now=5)
    assert rec.status is ExportStatus.FAILED and "1 of 2 files failed" in (rec.error or "")
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


def test_fail_ends_the_export_once_with_its_reason_time_and_event() -> None:
    rec, writes = record(), Writes()
    assert tr.fail(rec, writes, "provider down", now=42)
    assert (rec.status, rec.error, rec.finished_at) == (ExportStatus.FAILED, "provider down", 42)
    assert writes.events == [{"type": "status", "status": "FAILED", "error": "provider down"}]
    later = Writes()
    assert not tr.fail(rec, later, "too late", now=43), "only the call that ended it reports the end"
    assert (rec.error, rec.finished_at, later.events) == ("provider down", 42, [])


def test_cancel_ends_the_export_once_saying_who_stopped_it() -> None:
    rec, writes = record(), Writes()
    assert tr.cancel(rec, writes, now=42)
    assert (rec.status, rec.error, rec.finished_at) == (ExportStatus.CANCELLED, "cancelled by user", 42)
    assert writes.events == [{"type": "status", "status": "CANCELLED"}]
    assert not tr.cancel(rec, Writes(), now=43) and rec.finished_at == 42


def test_every_claim_counts_a_submit_attempt_and_every_reclaim_an_ambiguous_create() -> None:
    rec = record(**{"0": JobRecord(key="0", params={}, token=1)})
    events: list[list[dict]] = []
    token = 1
    for _ in range(3):
        writes = Writes()
        token = tr.claim_submit(rec, "0", token, now=10, timeout=60, writes=writes)
        events.append(writes.events)
    job = rec.jobs["0"]
    assert (job.submit_attempts, job.ambiguous_creates, token, job.next_action_at) == (3, 2, 4, 70)
    assert events[0] == [] and events[2] == [{"type": "warning", "message": rec.warnings[1]}]


def test_a_claim_after_the_job_was_created_is_stale() -> None:
    rec = record()
    with pytest.raises(StaleTask):
        tr.claim_submit(rec, "0", 5, now=0, timeout=60, writes=Writes())
    assert rec.jobs["0"].submit_attempts == 0


def test_created_job_starts_polling_with_a_clean_error_count_and_reports_it() -> None:
    rec = record(**{"0": JobRecord(key="0", params={}, status=JobStatus.SUBMITTING, token=3, transient_errors=2)})
    rec.status = ExportStatus.PENDING
    writes = Writes()
    token = tr.record_created(rec, "0", 3, snapshot(JobState.QUEUED, "Requested"), delay=2, now=10, writes=writes)
    job = rec.jobs["0"]
    assert (token, job.status, job.provider_job_id, job.transient_errors) == (4, JobStatus.POLLING, "p1", 0)
    assert (job.next_action_at, job.raw_status, rec.status) == (12, "Requested", ExportStatus.RUNNING)
    assert writes.events == [
        {"type": "status", "status": "RUNNING"},
        {"type": "submitted", "job": "0", "provider_job_id": "p1"},
    ]


def test_refreshed_url_replaces_the_url_and_its_expiry_and_is_counted() -> None:
    rec = record()
    file = file_record("0-0000", FileStatus.PENDING)
    expiry = datetime(2030, 1, 1, tzinfo=UTC)
    writes = Writes()
    tr.refresh_file_url(rec, file, 0, RemoteFile(name="a.csv", url="https://x/new", expires_at=expiry), writes)
    assert (file.url, file.expires_at, file.url_refreshes) == ("https://x/new", expiry.timestamp(), 1)
    assert writes.events == [{"type": "url_refreshed", "file": "0-0000"}]
    tr.refresh_file_url(rec, file, 0, RemoteFile(name="a.csv", url="https://x/newer"), Writes())
    assert (file.url, file.expires_at, file.url_refreshes) == ("https://x/newer", None, 2)


def test_retried_file_waits_under_a_new_token_and_counts_the_attempt() -> None:
    rec = record()
    file = file_record("0-0000", FileStatus.PENDING)
    assert tr.retry_file(rec, file, 0, "HTTP 503", delay=5, now=100, failed=True) == 1
    assert tr.retry_file(rec, file, 1, "HTTP 502", delay=7, now=200, failed=True) == 2
    assert (file.attempts, file.error, file.dispatched_at, file.status) == (2, "HTTP 502", 207, FileStatus.PENDING)
    with pytest.raises(StaleTask):
        tr.retry_file(rec, file, 1, "late duplicate", delay=1, now=300, failed=True)


def test_a_file_told_to_wait_says_why_without_counting_an_attempt() -> None:
    rec = record()
    file = file_record("0-0000", FileStatus.PENDING)
    assert tr.retry_file(rec, file, 0, "HTTP 202: not ready yet", delay=30, now=100, failed=False) == 1
    assert (file.attempts, file.error, file.dispatched_at) == (0, "HTTP 202: not ready yet", 130)


def test_refused_submit_goes_back_to_pending_and_says_why() -> None:
    rec = record(**{"0": JobRecord(key="0", params={}, status=JobStatus.SUBMITTING, token=2)})
    token = tr.retry_job_step(rec, "0", 2, submitting=True, error=None, delay=30, now=10, note="quota spent until 12:00")
    job = rec.jobs["0"]
    assert (token, job.status, job.message, job.transient_errors, job.next_action_at) == (
        3,
        JobStatus.PENDING,
        "quota spent until 12:00",
        0,
        40,
    )
    tr.retry_job_step(rec, "0", 3, submitting=True, error="HTTP 503", delay=1, now=10, note="HTTP 503")
    assert (job.message, job.transient_errors) == ("HTTP 503", 1)


def test_refused_poll_keeps_polling_and_counts_only_errors() -> None:
    rec = record()
    tr.retry_job_step(rec, "0", 5, submitting=False, error="HTTP 500", delay=1, now=0)
    job = rec.jobs["0"]
    assert (job.status, job.message, job.transient_errors) == (JobStatus.POLLING, "HTTP 500", 1)
    job.message = "Processing"
    tr.retry_job_step(rec, "0", 6, submitting=False, error=None, delay=1, now=0)
    assert (job.message, job.transient_errors) == ("Processing", 1), "no note leaves the provider's message"


def failed_at_provider() -> ExportRecord:
    rec = record()
    outcome, _ = apply(rec, snapshot(JobState.FAILED, "Failed", message="Internal error"))
    assert outcome.failed
    rec.jobs["0"].transient_errors = 3
    return rec


def test_replaying_a_failed_job_reopens_the_export_with_a_clean_slate() -> None:
    rec = failed_at_provider()
    writes = Writes()
    token = tr.reopen_replayed_job(rec, "0", snapshot(JobState.QUEUED, "QUEUED"), 2.0, 50.0, writes)
    job = rec.jobs["0"]
    assert (rec.status, rec.error, rec.finished_at) == (ExportStatus.RUNNING, None, None)
    assert (token, job.status, job.transient_errors) == (7, JobStatus.POLLING, 0)
    assert (job.raw_status, job.next_action_at) == ("QUEUED", 52)
    assert writes.events == [{"type": "status", "status": "RUNNING", "replayed_job": "0"}]


def test_replay_is_refused_unless_the_provider_job_is_what_failed() -> None:
    rec = record()
    rec.jobs["0"].status = JobStatus.SUCCEEDED
    assert tr.fail(rec, Writes(), "1 of 2 file(s) failed", now=5)
    with pytest.raises(InvalidRequest, match="replayed meanwhile"):
        tr.reopen_replayed_job(rec, "0", snapshot(JobState.QUEUED, "QUEUED"), 1.0, 6.0, Writes())
    assert rec.status is ExportStatus.FAILED and rec.jobs["0"].status is JobStatus.SUCCEEDED


def test_revived_job_is_due_now_under_a_new_token_and_reported() -> None:
    rec = record()
    writes = Writes()
    assert tr.revive_job(rec, "0", 5, now=77, writes=writes) is JobStatus.POLLING
    assert (rec.jobs["0"].token, rec.jobs["0"].next_action_at) == (6, 77)
    assert writes.events == [{"type": "revived", "job": "0"}]


def test_revived_file_is_dispatched_now_under_a_new_token_and_reported() -> None:
    rec = record()
    file = file_record("0-0000", FileStatus.PENDING)
    writes = Writes()
    assert tr.revive_file(rec, file, 0, now=77, writes=writes) == 1
    assert (file.token, file.dispatched_at) == (1, 77)
    assert writes.events == [{"type": "revived", "file": "0-0000"}]


def test_a_file_revived_twice_leaves_both_earlier_tokens_stale() -> None:
    """The token only ever grows: a second revival must not hand out the first one's token again."""
    rec = record()
    file = file_record("0-0000", FileStatus.PENDING)
    assert [tr.revive_file(rec, file, token, now=77, writes=Writes()) for token in (0, 1)] == [1, 2]
    for old in (0, 1):
        with pytest.raises(StaleTask):
            tr.revive_file(rec, file, old, now=78, writes=Writes())


def test_poll_answer_is_kept_on_the_job_for_progress_views() -> None:
    rec = record()
    rec.jobs["0"].transient_errors = 2
    apply(rec, snapshot(JobState.RUNNING, "Processing", message="40% done", percent_complete=40, records_processed=1200))
    job = rec.jobs["0"]
    assert (job.provider_state, job.raw_status, job.message) == (JobState.RUNNING, "Processing", "40% done")
    assert (job.percent_complete, job.records_processed) == (40, 1200)
    assert job.transient_errors == 0, "an answered poll ends a run of transient errors"


def test_polls_are_counted_and_back_off_further_each_time() -> None:
    rec = record()
    delays = []
    for token in (5, 6, 7):
        outcome, _ = apply(rec, snapshot(JobState.RUNNING, "Processing"), token=token)
        delays.append(outcome.poll_delay)
    assert rec.jobs["0"].polls == 3
    assert 12.8 <= delays[2] <= 19.2, "the third poll waits 2 * 2**3 s, give or take the jitter"


def test_job_status_event_only_when_the_provider_status_changes() -> None:
    rec = record()
    _, first = apply(rec, snapshot(JobState.RUNNING, "Processing", message="started"))
    _, same = apply(rec, snapshot(JobState.RUNNING, "Processing"), token=6)
    assert first.events == [{"type": "job_status", "job": "0", "provider_status": "Processing", "message": "started"}]
    assert same.events == []


def test_a_finished_job_refuses_every_earlier_task() -> None:
    rec = record()
    outcome, writes = apply(rec, snapshot(JobState.SUCCEEDED, "Completed", files=[RemoteFile(name="a.csv", url="https://x/a")]))
    assert outcome.poll_token is None and rec.jobs["0"].next_action_at is None
    for token in range(1, 6):
        with pytest.raises(StaleTask):
            tr.current_job(rec, "0", token)
    assert writes.events[-1] == {"type": "status", "status": "DOWNLOADING", "files": 1}


def test_a_file_whose_name_cleans_to_nothing_is_named_after_its_key() -> None:
    outcome, _ = apply(
        record(),
        snapshot(JobState.SUCCEEDED, "Completed", files=[RemoteFile(name="reports/", url="https://x/a")]),
        safe_name=lambda name, fallback: safe_filename(name, fallback=fallback),
    )
    assert [f.safe_name for f in outcome.files] == ["0-0000"]


def test_split_children_are_due_now_and_the_split_is_reported() -> None:
    rec = record()
    halves = [{"vehicleIds": [1]}, {"vehicleIds": [2]}]
    _, writes = apply(rec, snapshot(JobState.FAILED, "Failed", message="limit is 1"), split=lambda p, s: halves)
    assert [rec.jobs[key].next_action_at for key in ("0.0", "0.1")] == [100.0, 100.0]
    assert writes.events[-1] == {"type": "split", "job": "0", "children": ["0.0", "0.1"], "reason": "limit is 1"}


@pytest.mark.parametrize("state", [JobState.FAILED, JobState.CANCELLED])
def test_a_job_the_provider_ended_fails_itself_and_the_export_at_that_time(state: JobState) -> None:
    rec = record()
    apply(rec, snapshot(state, state.value))
    assert rec.jobs["0"].status is JobStatus.FAILED and rec.finished_at == 100.0


def new_request(planned: list[dict]) -> NewExport:
    params = {"vehicleIds": [1, 2]}
    return NewExport(id="e2", provider="samsara", params=params, credential="default", deadline_seconds=60, planned=planned)


@pytest.mark.parametrize(
    ("planned", "params"),
    [([], {"vehicleIds": [1, 2]}), ([{"vehicleIds": ["1", "2"]}], {"vehicleIds": ["1", "2"]})],
    ids=["unplanned", "one planned job"],
)
def test_a_request_of_one_provider_job_is_job_0_with_the_planned_params(planned: list[dict], params: dict) -> None:
    rec = tr.new_export(new_request(planned), now=10)
    assert list(rec.jobs) == ["0"] and rec.jobs["0"].params == params
    assert (rec.status, rec.deadline_at, rec.jobs["0"].status) == (ExportStatus.PENDING, 70, JobStatus.PENDING)


def test_a_request_planned_into_several_jobs_holds_them_under_a_split_job_0() -> None:
    rec = tr.new_export(new_request([{"vehicleIds": [1]}, {"vehicleIds": [2]}]), now=10)
    assert {key: (job.key, job.status, job.parent) for key, job in rec.jobs.items()} == {
        "0": ("0", JobStatus.SPLIT, None),
        "0.0": ("0.0", JobStatus.PENDING, "0"),
        "0.1": ("0.1", JobStatus.PENDING, "0"),
    }
    assert rec.jobs["0"].params == {"vehicleIds": [1, 2]} and rec.jobs["0.1"].params == {"vehicleIds": [2]}


def test_finished_file_keeps_its_output_and_reports_it() -> None:
    rec = record()
    file = file_record("0-0000", FileStatus.PENDING)
    output = FileOutput(rows=5, quarantined=2, bytes=300, bytes_downloaded=120, path="/out/a.jsonl", quarantine_path="/out/q")
    writes = Writes()
    tr.finish_file(rec, file, 0, output, None, now=9, writes=writes)
    assert (file.status, file.rows, file.quarantined, file.bytes, file.bytes_downloaded) == (FileStatus.DONE, 5, 2, 300, 120)
    assert (file.path, file.quarantine_path, file.finished_at) == ("/out/a.jsonl", "/out/q", 9)
    assert writes.events == [{"type": "file_done", "file": "0-0000", "rows": 5, "quarantined": 2}]


def test_failed_file_keeps_its_error_and_reports_it() -> None:
    rec = record()
    file = file_record("0-0000", FileStatus.PENDING)
    writes = Writes()
    tr.finish_file(rec, file, 0, None, "header lacks vehicleId", now=9, writes=writes)
    assert (file.status, file.error, file.finished_at) == (FileStatus.FAILED, "header lacks vehicleId", 9)
    assert writes.events == [{"type": "file_failed", "file": "0-0000", "error": "header lacks vehicleId"}]
    with pytest.raises(StaleTask):
        tr.finish_file(rec, file, 0, None, "twice", now=10, writes=Writes())


def failed_export_with_files(*files: FileRecord) -> ExportRecord:
    rec = record()
    rec.jobs["0"].status = JobStatus.SUCCEEDED
    rec.files_total = len(files)
    assert tr.complete_if_done(rec, list(files), Writes(), now=5) and rec.status is ExportStatus.FAILED
    return rec


def test_reopened_files_start_afresh_under_a_new_token() -> None:
    failed = file_record("0-0001", FileStatus.FAILED).model_copy(update={"token": 3, "attempts": 4, "error": "HTTP 503"})
    rec = failed_export_with_files(file_record("0-0000", FileStatus.DONE, 2), failed)
    writes = Writes()
    [reopened] = tr.reopen_failed_files(rec, [file_record("0-0000", FileStatus.DONE, 2), failed], writes, now=8)
    assert (reopened.key, reopened.token, reopened.attempts, reopened.error, reopened.dispatched_at) == ("0-0001", 4, 0, None, 8)
    assert (rec.status, rec.error, rec.finished_at) == (ExportStatus.DOWNLOADING, None, None)
    assert writes.events == [{"type": "status", "status": "DOWNLOADING", "retried_files": 1}]
    assert writes.files == [reopened]


def test_retry_of_a_failed_export_says_what_to_do_instead() -> None:
    rec = record()
    rec.jobs["0"].status = JobStatus.SUCCEEDED
    assert tr.fail(rec, Writes(), "deadline exceeded", now=5)
    with pytest.raises(InvalidRequest, match=r"^export e1 has no failed files to retry \(deadline exceeded\)$"):
        tr.reopen_failed_files(rec, [file_record("0-0000", FileStatus.DONE, 2)], Writes(), now=8)
    at_provider = failed_at_provider()
    with pytest.raises(InvalidRequest, match="use replay where the provider allows it, or submit a new export$"):
        tr.reopen_failed_files(at_provider, [], Writes(), now=8)


def test_deadline_reason_says_how_long_it_waited_and_what_to_raise() -> None:
    rec = record()
    rec.created_at, rec.deadline_at = 1000, 1060
    assert tr.deadline_reason(rec, 1061.2) == (
        "deadline exceeded: export was still RUNNING after 61s; "
        "submit again with a longer deadline_seconds or raise EXPORT_WORKER_DEADLINE_SECONDS"
    )


def test_completion_waits_while_a_job_is_still_polling() -> None:
    rec = record()
    assert not tr.complete_if_done(rec, [], Writes(), now=5)
    assert rec.status is ExportStatus.RUNNING and rec.finished_at is None


def succeeded(files_total: int) -> ExportRecord:
    """An export whose only job succeeded and listed ``files_total`` files."""
    rec = record()
    rec.jobs["0"].status = JobStatus.SUCCEEDED
    rec.files_total = files_total
    return rec


def test_completion_records_the_time_and_warns_of_a_record_count_mismatch_on_the_stream() -> None:
    rec = succeeded(files_total=1)
    short = file_record("a.csv", FileStatus.DONE, 3).model_copy(update={"record_count": 4})
    writes = Writes()
    assert tr.complete_if_done(rec, [short], writes, now=5)
    warning = "file a.csv: provider recordCount is 4 but 3 rows were parsed"
    assert rec.warnings == [warning] and rec.finished_at == 5
    assert writes.events[0] == {"type": "warning", "message": warning}


def test_completion_with_failed_files_names_them_and_their_errors() -> None:
    rec = succeeded(files_total=2)
    failed = file_record("b.csv", FileStatus.FAILED).model_copy(update={"error": "HTTP 404"})
    writes = Writes()
    assert tr.complete_if_done(rec, [file_record("a.csv", FileStatus.DONE, 3), failed], writes, now=5)
    reason = "1 of 2 files failed: HTTP 404 (b.csv); the other file was written"
    assert (rec.error, rec.finished_at) == (reason, 5)
    assert writes.events == [{"type": "status", "status": "FAILED", "error": reason}]


def test_a_finished_file_refuses_even_its_own_token() -> None:
    rec = record()
    with pytest.raises(StaleTask):
        tr.current_file(rec, file_record("a.csv", FileStatus.DONE), 0)


def test_completion_reports_the_rows_on_the_stream_and_names_each_reason_once() -> None:
    rec = succeeded(files_total=1)
    done = file_record("a.csv", FileStatus.DONE, 3).model_copy(update={"quarantined": 1})
    writes = Writes()
    assert tr.complete_if_done(rec, [done], writes, now=5)
    assert writes.events == [{"type": "status", "status": "COMPLETED", "rows": 3, "quarantined": 1}]
    rec = record()
    rec.jobs["0"].status = JobStatus.SUCCEEDED
    failed = [file_record(f"f{i}.csv", FileStatus.FAILED).model_copy(update={"error": "HTTP 404"}) for i in range(6)]
    rec.files_total = len(failed)
    assert tr.complete_if_done(rec, failed, Writes(), now=5)
    assert rec.error == "all 6 files failed: HTTP 404 (f0.csv, f1.csv, f2.csv and 3 more)"


@pytest.mark.parametrize(
    ("errors", "done", "summary"),
    [
        (["HTTP 404"], 0, "the export's only file failed: HTTP 404 (f0.csv)"),
        (["HTTP 404"] * 3, 0, "all 3 files failed: HTTP 404 (f0.csv, f1.csv, f2.csv)"),
        (
            ["HTTP 404", "bad gzip", "HTTP 404"],
            2,
            "3 of 5 files failed: HTTP 404 (f0.csv, f2.csv); bad gzip (f1.csv); the other 2 files were written",
        ),
        (["a", "b", "c", "d", "e"], 0, "all 5 files failed: a (f0.csv); b (f1.csv); c (f2.csv); 2 other reason(s)"),
    ],
)
def test_a_files_failure_says_how_many_failed_why_once_per_reason_and_what_was_written(
    errors: list[str], done: int, summary: str
) -> None:
    rec = succeeded(files_total=len(errors) + done)
    files = [file_record(f"f{i}.csv", FileStatus.FAILED).model_copy(update={"error": e}) for i, e in enumerate(errors)]
    files += [file_record(f"ok{i}.csv", FileStatus.DONE, 1) for i in range(done)]
    assert tr.complete_if_done(rec, files, Writes(), now=5)
    assert rec.error == summary


def test_an_export_failed_with_its_job_shows_the_job_failed_not_submitting() -> None:
    rec = record()
    rec.jobs["0"].status = JobStatus.SUBMITTING
    assert tr.fail(rec, Writes(), "refused before the samsara job was created: no database", now=5, job_key="0")
    assert rec.jobs["0"].status is JobStatus.FAILED and rec.status is ExportStatus.FAILED
