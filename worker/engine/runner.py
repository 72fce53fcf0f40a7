"""One function per task step: load state, call the provider, save atomically, dispatch what follows.

The order is always *save, then dispatch*: a worker killed between the two leaves a chain that the
watchdog revives, never two live chains. Every step first checks its fencing token, so duplicated or
redelivered tasks exit without side effects.
"""

from __future__ import annotations

import logging
import random
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Protocol

import httpx

from worker import metrics
from worker.download import open_download
from worker.engine import transitions as tr
from worker.engine.backoff import BackoffPolicy
from worker.engine.models import (
    Callback,
    ExportRecord,
    FileRecord,
    FileStatus,
    FileTaskArgs,
    JobRecord,
    JobStatus,
    JobTaskArgs,
)
from worker.errors import (
    DownloadUrlExpired,
    ExportWorkerError,
    PermanentError,
    RetryLater,
    StaleTask,
    TransientError,
)
from worker.gateway import ProviderGateway
from worker.pipeline import TransferResult, transfer_file
from worker.security.filenames import safe_filename
from worker.settings import Settings
from worker.sinks.base import SinkResult
from worker.sinks.jsonl import JsonlSink
from worker.store import ExportStore, Writes

log = logging.getLogger("worker.engine")

URL_EXPIRY_MARGIN_SECONDS = 30.0
MAX_URL_REFRESHES_PER_ATTEMPT = 3


class Dispatcher(Protocol):
    """How the engine schedules its next step; Celery in production, a list in unit tests."""

    def submit(self, args: JobTaskArgs, countdown: float) -> None: ...

    def poll(self, args: JobTaskArgs, countdown: float) -> None: ...

    def download(self, args: FileTaskArgs, countdown: float) -> None: ...

    def callback(self, callback: Callback, record: ExportRecord) -> None: ...


@dataclass
class Runtime:
    settings: Settings
    store: ExportStore
    dispatcher: Dispatcher
    clock: Callable[[], float] = time.time
    rng: random.Random = field(default_factory=random.Random)
    transport: httpx.BaseTransport | None = None
    _gateways: dict[tuple[str, str], ProviderGateway] = field(default_factory=dict)

    @property
    def policy(self) -> BackoffPolicy:
        return BackoffPolicy.from_settings(self.settings)

    @property
    def sink(self) -> JsonlSink:
        return JsonlSink(self.settings.output_dir)

    def gateway(self, provider: str, credential: str) -> ProviderGateway:
        key = (provider, credential)
        if key not in self._gateways:
            self._gateways[key] = ProviderGateway(provider, credential, self.settings, self.store, self.transport)
        return self._gateways[key]


def _log(record: ExportRecord, job: JobRecord | None = None) -> logging.LoggerAdapter[logging.Logger]:
    return logging.LoggerAdapter(
        log,
        {
            "export_id": record.id,
            "provider": record.provider,
            "provider_job_id": job.provider_job_id if job else None,
        },
    )


# -- terminal states -------------------------------------------------------------------------------


def _on_terminal(rt: Runtime, record: ExportRecord) -> None:
    metrics.EXPORTS_FINISHED.labels(record.provider, record.status.value).inc()
    metrics.EXPORT_SECONDS.labels(record.provider, record.status.value).observe(
        (record.finished_at or rt.clock()) - record.created_at
    )
    _log(record).info("export %s: %s", record.status.value, record.error or f"{record.rows} rows")
    if record.callback is not None:
        rt.dispatcher.callback(record.callback, record)


def fail_export(rt: Runtime, export_id: str, reason: str) -> bool:
    def mutate(record: ExportRecord, writes: Writes) -> ExportRecord | None:
        return record if tr.fail(record, writes, reason, rt.clock()) else None

    ended = rt.store.transact(export_id, mutate)
    if ended is not None:
        _on_terminal(rt, ended)
    return ended is not None


def cancel_export(rt: Runtime, export_id: str) -> bool:
    """Stop an export: its chains exit at their next step, downloads at the next file boundary."""

    def mutate(record: ExportRecord, writes: Writes) -> ExportRecord | None:
        return record if tr.cancel(record, writes, rt.clock()) else None

    ended = rt.store.transact(export_id, mutate)
    if ended is not None:
        _on_terminal(rt, ended)
    return ended is not None


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
    files = rt.store.files(export_id)
    finished, _ = rt.store.finished_count(export_id)

    def mutate(record: ExportRecord, writes: Writes) -> ExportRecord | None:
        return record if tr.complete_if_done(record, files, finished, writes, rt.clock()) else None

    ended = rt.store.transact(export_id, mutate, watch_files=True)
    if ended is not None:
        _on_terminal(rt, ended)
    return ended is not None


# -- submit and poll ---------------------------------------------------------------------------------


def _retry_job_step(
    rt: Runtime, record: ExportRecord, args: JobTaskArgs, exc: RetryLater | TransientError, *, submitting: bool
) -> None:
    """Reschedule a submit/poll step after a provider refusal, or fail once retries are exhausted."""
    job = record.jobs[args.job_key]
    step = "submit" if submitting else "poll"
    if isinstance(exc, RetryLater):
        delay = rt.policy.after_retry_after(exc.retry_after, rt.rng)
        reason = "rate_limited"
    else:
        if job.transient_errors + 1 > rt.settings.max_transient_retries:
            fail_export(
                rt, record.id, f"{step} of job {args.job_key} failed {job.transient_errors + 1} times; last error: {exc}"
            )
            return
        delay = rt.policy.delay(job.transient_errors, rt.rng)
        reason = "transient"
    metrics.RETRIES.labels(record.provider, step, reason).inc()
    _log(record, job).warning("%s of job %s rescheduled in %.1fs: %s", step, args.job_key, delay, exc)
    now = rt.clock()

    def mutate(state: ExportRecord, writes: Writes) -> int:
        current = tr.current_job(state, args.job_key, args.token)
        if submitting:
            current.status = JobStatus.PENDING
        if reason == "transient":
            current.transient_errors += 1
            current.message = str(exc)
        return tr.reschedule(current, delay, now)

    try:
        token = rt.store.transact(record.id, mutate)
    except StaleTask:
        metrics.STALE_TASKS.labels(step).inc()
        return
    next_args = JobTaskArgs(export_id=record.id, job_key=args.job_key, token=token)
    (rt.dispatcher.submit if submitting else rt.dispatcher.poll)(next_args, delay)


def run_submit(rt: Runtime, args: JobTaskArgs) -> None:
    record = rt.store.get(args.export_id)
    if enforce_deadline(rt, record):
        return
    now = rt.clock()
    claim_timeout = 2 * rt.settings.http_timeout_seconds + 5
    try:
        token = rt.store.transact(
            args.export_id, lambda r, w: tr.claim_submit(r, args.job_key, args.token, now, claim_timeout, w)
        )
    except StaleTask:
        metrics.STALE_TASKS.labels("submit").inc()
        return
    claimed = JobTaskArgs(export_id=args.export_id, job_key=args.job_key, token=token)
    job = record.jobs[args.job_key]
    gateway = rt.gateway(record.provider, record.credential)
    try:
        snapshot = gateway.create(job.params)
    except (RetryLater, TransientError) as exc:
        metrics.API_CALLS.labels(record.provider, "create", type(exc).__name__).inc()
        _retry_job_step(rt, rt.store.get(args.export_id), claimed, exc, submitting=True)
        return
    except PermanentError as exc:
        metrics.API_CALLS.labels(record.provider, "create", type(exc).__name__).inc()
        fail_export(rt, args.export_id, f"could not create the {record.provider} job: {exc}")
        return
    metrics.API_CALLS.labels(record.provider, "create", "ok").inc()
    delay = rt.policy.delay(0, rt.rng)
    try:
        poll_token = rt.store.transact(
            args.export_id, lambda r, w: tr.record_created(r, args.job_key, token, snapshot, delay, rt.clock(), w)
        )
    except StaleTask:
        _log(record).error(
            "provider job %s was created but job %s moved on meanwhile; it will not be tracked",
            snapshot.provider_job_id,
            args.job_key,
        )
        return
    _log(record, job).info("created provider job %s", snapshot.provider_job_id)
    rt.dispatcher.poll(JobTaskArgs(export_id=args.export_id, job_key=args.job_key, token=poll_token), delay)


def run_poll(rt: Runtime, args: JobTaskArgs) -> None:
    record = rt.store.get(args.export_id)
    if enforce_deadline(rt, record):
        return
    try:
        job = tr.current_job(record, args.job_key, args.token)
    except StaleTask:
        metrics.STALE_TASKS.labels("poll").inc()
        return
    assert job.provider_job_id is not None, "a polled job always has a provider job id"
    gateway = rt.gateway(record.provider, record.credential)
    try:
        snapshot = gateway.get(job.provider_job_id, job.params)
    except (RetryLater, TransientError) as exc:
        metrics.API_CALLS.labels(record.provider, "poll", type(exc).__name__).inc()
        _retry_job_step(rt, record, args, exc, submitting=False)
        return
    except PermanentError as exc:
        metrics.API_CALLS.labels(record.provider, "poll", type(exc).__name__).inc()
        fail_export(rt, args.export_id, f"polling {record.provider} job {job.provider_job_id} failed: {exc}")
        return
    metrics.API_CALLS.labels(record.provider, "poll", "ok").inc()
    metrics.POLLS.labels(record.provider, snapshot.raw_status).inc()

    def mutate(state: ExportRecord, writes: Writes) -> tr.PollOutcome:
        return tr.apply_snapshot(
            state,
            args.job_key,
            args.token,
            snapshot,
            now=rt.clock(),
            policy=rt.policy,
            rng=rt.rng,
            split=gateway.split,
            safe_name=lambda name, fallback: safe_filename(name, fallback=fallback),
            writes=writes,
        )

    try:
        outcome = rt.store.transact(args.export_id, mutate)
    except StaleTask:
        metrics.STALE_TASKS.labels("poll").inc()
        return
    if outcome.poll_token is not None:
        rt.dispatcher.poll(
            JobTaskArgs(export_id=args.export_id, job_key=args.job_key, token=outcome.poll_token), outcome.poll_delay
        )
    for child_key, child_token in outcome.submit_jobs:
        rt.dispatcher.submit(JobTaskArgs(export_id=args.export_id, job_key=child_key, token=child_token), 0)
    for file_record in outcome.files:
        rt.dispatcher.download(FileTaskArgs(export_id=args.export_id, file_key=file_record.key, token=0), 0)
    if outcome.failed:
        _on_terminal(rt, rt.store.get(args.export_id))
    elif outcome.check_completion:
        finish_if_complete(rt, args.export_id)


# -- download ----------------------------------------------------------------------------------------


def _refresh_url(rt: Runtime, gateway: ProviderGateway, record: ExportRecord, file: FileRecord) -> FileRecord:
    """Re-poll the job: the provider hands out a fresh signed URL for the same file."""
    job = record.jobs[file.job_key]
    assert job.provider_job_id is not None
    snapshot = gateway.get(job.provider_job_id, job.params)
    fresh = next((remote for remote in snapshot.files if remote.name == file.name), None)
    if fresh is None:
        raise PermanentError(f"{record.provider} job {job.provider_job_id} no longer lists file {file.name!r}")

    def mutate(current: FileRecord, writes: Writes) -> FileRecord:
        if current.token != file.token or current.status is not FileStatus.PENDING:
            raise StaleTask(f"file {file.key} moved on during URL refresh")
        current.url = fresh.url
        current.expires_at = fresh.expires_at.timestamp() if fresh.expires_at else None
        current.url_refreshes += 1
        writes.event("url_refreshed", file=file.key)
        return current.model_copy()

    return rt.store.transact_file(record.id, file.key, mutate)


def _stream_to_sink(
    rt: Runtime, gateway: ProviderGateway, record: ExportRecord, file: FileRecord, renew: Callable[[int, int], None]
) -> tuple[SinkResult, TransferResult, FileRecord]:
    for refresh in range(MAX_URL_REFRESHES_PER_ATTEMPT + 1):
        if file.expires_at is not None and file.expires_at < rt.clock() + URL_EXPIRY_MARGIN_SECONDS:
            file = _refresh_url(rt, gateway, record, file)
        writer = rt.sink.open_file(record.id, file.key, file.safe_name)
        try:
            with open_download(
                gateway.download_client(file.authenticated),
                file.url,
                guard=gateway.url_guard,
                max_bytes=rt.settings.max_download_bytes,
                provider=record.provider,
                credential_name=record.credential,
                signed_url=not file.authenticated,
            ) as chunks:
                transfer = transfer_file(
                    chunks,
                    schema=gateway.provider.row_schema,
                    writer=writer,
                    source_name=file.name,
                    max_field_bytes=rt.settings.max_field_bytes,
                    on_progress=renew,
                )
            return writer.commit(), transfer, file
        except DownloadUrlExpired:
            writer.abort()
            if refresh == MAX_URL_REFRESHES_PER_ATTEMPT:
                raise TransientError(
                    f"download URL of {file.name!r} was refused after {refresh} refreshes"
                ) from None
            file = _refresh_url(rt, gateway, record, file)
        except BaseException:
            writer.abort()
            raise
    raise AssertionError("unreachable")


def _finish_file(
    rt: Runtime, record: ExportRecord, file: FileRecord, *, result: SinkResult | None, transfer: TransferResult | None,
    error: str | None,
) -> None:
    now = rt.clock()

    def mutate(current: FileRecord, writes: Writes) -> FileRecord:
        if current.token != file.token or current.status is not FileStatus.PENDING:
            raise StaleTask(f"file {file.key} already finished")
        current.finished_at = now
        if result is not None and transfer is not None:
            current.status = FileStatus.DONE
            current.rows = result.rows
            current.quarantined = result.quarantined
            current.bytes = transfer.bytes
            current.path = str(result.path)
            current.quarantine_path = str(result.quarantine_path) if result.quarantine_path else None
            writes.event("file_done", file=file.key, rows=result.rows, quarantined=result.quarantined)
        else:
            current.status = FileStatus.FAILED
            current.error = error
            writes.event("file_failed", file=file.key, error=error)
        return current

    try:
        done = rt.store.transact_file(record.id, file.key, mutate)
    except StaleTask:
        metrics.STALE_TASKS.labels("download").inc()
        return
    if done.status is FileStatus.DONE:
        metrics.BYTES_DOWNLOADED.labels(record.provider).inc(done.bytes)
        metrics.ROWS_WRITTEN.labels(record.provider).inc(done.rows)
        metrics.ROWS_QUARANTINED.labels(record.provider).inc(done.quarantined)
        seen = done.rows + done.quarantined
        if done.record_count is not None and seen != done.record_count:
            warning = f"file {done.name}: provider recordCount is {done.record_count} but {seen} rows were parsed"

            def warn(state: ExportRecord, writes: Writes) -> None:
                state.warnings.append(warning)
                writes.event("warning", message=warning)

            rt.store.transact(record.id, warn)
    finish_if_complete(rt, record.id)


def _retry_file(rt: Runtime, record: ExportRecord, file: FileRecord, exc: ExportWorkerError) -> None:
    if file.attempts + 1 > rt.settings.max_transient_retries:
        _finish_file(rt, record, file, result=None, transfer=None, error=f"gave up after {file.attempts + 1} attempts: {exc}")
        return
    delay = (
        rt.policy.after_retry_after(exc.retry_after, rt.rng)
        if isinstance(exc, RetryLater)
        else rt.policy.delay(file.attempts, rt.rng)
    )
    now = rt.clock()

    def mutate(current: FileRecord, writes: Writes) -> int:
        if current.token != file.token or current.status is not FileStatus.PENDING:
            raise StaleTask(f"file {file.key} moved on")
        current.attempts += 1
        current.error = str(exc)
        current.token += 1
        current.dispatched_at = now + delay
        return current.token

    try:
        token = rt.store.transact_file(record.id, file.key, mutate)
    except StaleTask:
        return
    metrics.RETRIES.labels(record.provider, "download", type(exc).__name__).inc()
    _log(record).warning("download of %s rescheduled in %.1fs: %s", file.name, delay, exc)
    rt.dispatcher.download(FileTaskArgs(export_id=record.id, file_key=file.key, token=token), delay)


def run_download(rt: Runtime, args: FileTaskArgs, owner: str) -> None:
    record = rt.store.get(args.export_id)
    if enforce_deadline(rt, record):
        return
    file = rt.store.get_file(args.export_id, args.file_key)
    if file.status is not FileStatus.PENDING or file.token != args.token:
        metrics.STALE_TASKS.labels("download").inc()
        return
    lease = rt.settings.lease_seconds
    if not rt.store.acquire_lease(args.export_id, args.file_key, owner, lease):
        metrics.STALE_TASKS.labels("download").inc()
        return
    last_renewal = rt.clock()

    def renew(_bytes: int, _rows: int) -> None:
        nonlocal last_renewal
        if rt.clock() - last_renewal < lease / 3:
            return
        if not rt.store.renew_lease(args.export_id, args.file_key, owner, lease):
            raise StaleTask(f"lost the download lease of {file.key}")
        last_renewal = rt.clock()

    gateway = rt.gateway(record.provider, record.credential)
    try:
        result, transfer, file = _stream_to_sink(rt, gateway, record, file, renew)
        _finish_file(rt, record, file, result=result, transfer=transfer, error=None)
    except StaleTask:
        metrics.STALE_TASKS.labels("download").inc()
    except (RetryLater, TransientError) as exc:
        _retry_file(rt, record, file, exc)
    except PermanentError as exc:
        _finish_file(rt, record, file, result=None, transfer=None, error=str(exc))
    finally:
        rt.store.release_lease(args.export_id, args.file_key, owner)
