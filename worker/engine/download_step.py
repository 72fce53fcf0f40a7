"""The download step: stream one file through the parser into the sink, exactly once.

A lease keeps two live workers off the same file; the fencing token retires duplicated tasks;
an expired signed URL is refreshed by polling the job again, without touching finished files.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace

from worker import metrics
from worker.engine import transitions as tr
from worker.engine.context import Runtime, export_log
from worker.engine.lifecycle import enforce_deadline, finish_if_complete
from worker.engine.stages import failure_stage
from worker.errors import DownloadUrlExpired, PermanentError, RetryLater, StaleTask, TransientError, UnknownExport
from worker.file_transfer import TransferResult, transfer_file
from worker.http_download import open_download
from worker.models import ExportRecord, FailureStage, FileOutput, FileRecord, FileStatus, FileTaskArgs, Writes
from worker.providers.gateway import ProviderGateway
from worker.sinks.base import SinkResult

URL_EXPIRY_MARGIN_SECONDS = 30.0
MAX_URL_REFRESHES_PER_ATTEMPT = 3


def _refresh_url(rt: Runtime, gateway: ProviderGateway, record: ExportRecord, file: FileRecord) -> FileRecord:
    """Re-poll the job: the provider hands out a fresh signed URL for the same file."""
    job = record.jobs[file.job_key]
    assert job.provider_job_id is not None
    snapshot = gateway.get(job.provider_job_id, job.params)
    fresh = next((remote for remote in snapshot.files if remote.name == file.name), None)
    if fresh is None:
        raise PermanentError(f"{record.provider} job {job.provider_job_id} no longer lists file {file.name!r}")

    def mutate(state: ExportRecord, current: FileRecord, writes: Writes) -> FileRecord:
        return tr.refresh_file_url(state, current, file.token, fresh, writes).model_copy()

    return rt.store.transact_file(record.id, file.key, mutate)


def _stream_to_sink(
    rt: Runtime, gateway: ProviderGateway, record: ExportRecord, file: FileRecord, renew: Callable[[int, int], None]
) -> tuple[SinkResult, TransferResult, FileRecord]:
    for refresh in range(MAX_URL_REFRESHES_PER_ATTEMPT + 1):
        if file.expires_at is not None and file.expires_at < rt.clock() + URL_EXPIRY_MARGIN_SECONDS:
            file = _refresh_url(rt, gateway, record, file)
        writer = rt.sink(record).open_file(record.id, file.key, file.safe_name)
        try:
            with open_download(
                gateway.download_client(file.authenticated),
                file.url,
                guard=gateway.url_guard,
                max_bytes=rt.settings.max_download_bytes,
                provider=record.provider,
                credential_name=record.credential,
                signed_url=not file.authenticated,
            ) as body:
                transfer = transfer_file(
                    body,
                    schema=gateway.row_schema,
                    writer=writer,
                    source_name=file.name,
                    max_field_bytes=rt.settings.max_field_bytes,
                    on_progress=renew,
                )
            return writer.commit(), replace(transfer, wire_bytes=body.wire_bytes), file
        except DownloadUrlExpired:
            writer.abort()
            if refresh == MAX_URL_REFRESHES_PER_ATTEMPT:
                raise TransientError(f"download URL of {file.name!r} was refused after {refresh} refreshes") from None
            file = _refresh_url(rt, gateway, record, file)
        except BaseException:
            writer.abort()
            raise
    raise AssertionError("unreachable")


def _finish_file(
    rt: Runtime,
    record: ExportRecord,
    file: FileRecord,
    *,
    output: FileOutput | None,
    error: str | None,
    stage: FailureStage | None = None,
) -> None:
    now = rt.clock()
    try:
        done = rt.store.transact_file(
            record.id,
            file.key,
            lambda state, current, w: tr.finish_file(state, current, file.token, output, error, now, w, stage),
        )
    except StaleTask:
        metrics.STALE_TASKS.labels("download").inc()
        return
    if done.status is FileStatus.DONE:
        metrics.BYTES_DOWNLOADED.labels(record.provider).inc(done.bytes_downloaded)
        metrics.ROWS_WRITTEN.labels(record.provider).inc(done.rows)
        metrics.ROWS_QUARANTINED.labels(record.provider).inc(done.quarantined)
    finish_if_complete(rt, record.id)


def _retry_file(
    rt: Runtime, record: ExportRecord, file: FileRecord, exc: RetryLater | TransientError, stage: FailureStage
) -> None:
    """Reschedule the download; as for submits and polls, only a failure counts towards giving up, not the
    provider asking us to wait (429, or 202 while the file is being prepared), which the deadline bounds."""
    if isinstance(exc, RetryLater):
        failed, delay = False, rt.policy.after_retry_after(exc.retry_after, rt.rng)
    elif file.attempts + 1 > rt.settings.max_transient_retries:
        _finish_file(rt, record, file, output=None, error=f"gave up after {file.attempts + 1} attempts: {exc}", stage=stage)
        return
    else:
        failed, delay = True, rt.policy.delay(file.attempts, rt.rng)
    now = rt.clock()
    try:
        token = rt.store.transact_file(
            record.id,
            file.key,
            lambda state, current, writes: tr.retry_file(
                state, current, file.token, str(exc), delay, now, failed=failed, stage=stage, writes=writes
            ),
        )
    except StaleTask:
        metrics.STALE_TASKS.labels("download").inc()
        return
    metrics.RETRIES.labels(record.provider, "download", "transient" if failed else "rate_limited").inc()
    export_log(record).warning("download of %s rescheduled in %.1fs: %s", file.name, delay, exc)
    rt.dispatcher.download(FileTaskArgs(export_id=record.id, file_key=file.key, token=token), delay)


def run_download(rt: Runtime, args: FileTaskArgs, owner: str) -> None:
    record = rt.store.get(args.export_id)
    if enforce_deadline(rt, record):
        return
    try:
        file = rt.store.get_file(args.export_id, args.file_key)
        tr.current_file(record, file, args.token)
    except (StaleTask, UnknownExport):  # UnknownExport: a failover took back the poll that found the file
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
        output = FileOutput(
            rows=result.rows,
            quarantined=result.quarantined,
            bytes=transfer.bytes,
            bytes_downloaded=transfer.wire_bytes,
            path=str(result.path),
            quarantine_path=str(result.quarantine_path) if result.quarantine_path else None,
        )
        _finish_file(rt, record, file, output=output, error=None)
    except StaleTask:
        metrics.STALE_TASKS.labels("download").inc()
    except (RetryLater, TransientError) as exc:
        _retry_file(rt, record, file, exc, failure_stage(exc))
    except PermanentError as exc:
        _finish_file(rt, record, file, output=None, error=str(exc), stage=failure_stage(exc))
    except OSError as exc:
        problem = f"writing {file.name!r} to the {record.sink} sink failed ({exc}); free disk space or fix permissions there"
        _retry_file(rt, record, file, TransientError(problem), "sink")
    finally:
        rt.store.release_lease(args.export_id, args.file_key, owner)
