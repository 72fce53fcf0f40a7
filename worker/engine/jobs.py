"""Submit and poll steps: create the provider job, then poll it by countdown until it is terminal.

The order is always *save, then dispatch*: a worker killed between the two leaves a chain that the
watchdog revives, never two live chains. Every step first checks its fencing token, so duplicated or
redelivered tasks exit without side effects.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TypeVar

from worker import metrics
from worker.engine import transitions as tr
from worker.engine.context import Runtime, export_log
from worker.engine.lifecycle import enforce_deadline, fail_export, finish_if_complete, on_terminal
from worker.errors import InvalidRequest, PermanentError, RetryLater, StaleTask, TransientError
from worker.models import ExportRecord, FileTaskArgs, JobRecord, JobTaskArgs, Writes
from worker.providers.base import Operation
from worker.providers.gateway import ProviderGateway
from worker.security.filenames import safe_filename
from worker.sinks import SinkContext, check_sink

T = TypeVar("T")


Transact = Callable[[Callable[[ExportRecord, Writes], int]], int]
"""Applies a change to the step's export; a poll step's own, on the watch of its read, saves a round trip."""


def _retry_job_step(
    rt: Runtime,
    record: ExportRecord,
    args: JobTaskArgs,
    exc: RetryLater | TransientError,
    *,
    submitting: bool,
    transact: Transact | None = None,
) -> None:
    """Reschedule a submit/poll step after a provider refusal, or fail once retries are exhausted."""
    job = record.jobs[args.job_key]
    step = "submit" if submitting else "poll"
    if isinstance(exc, RetryLater):
        delay = rt.policy.after_retry_after(exc.retry_after, rt.rng)
        reason = "rate_limited"
    else:
        if job.transient_errors + 1 > rt.settings.max_transient_retries:
            reason = f"{step} of job {args.job_key} failed {job.transient_errors + 1} times; last error: {exc}"
            fail_export(rt, record.id, reason, job_key=args.job_key if submitting else None)
            return
        delay = rt.policy.delay(job.transient_errors, rt.rng)
        reason = "transient"
    metrics.RETRIES.labels(record.provider, step, reason).inc()
    export_log(record, job).warning("%s of job %s rescheduled in %.1fs: %s", step, args.job_key, delay, exc)
    now = rt.clock()

    error = str(exc) if reason == "transient" else None

    def mutate(state: ExportRecord, _writes: Writes) -> int:
        return tr.retry_job_step(
            state, args.job_key, args.token, submitting=submitting, error=error, delay=delay, now=now, note=str(exc)
        )

    try:
        token = transact(mutate) if transact is not None else rt.store.transact(record.id, mutate)
    except StaleTask:
        metrics.STALE_TASKS.labels(step).inc()
        return
    next_args = JobTaskArgs.of(record, args.job_key, token)
    (rt.dispatcher.submit if submitting else rt.dispatcher.poll)(next_args, delay)


def _call_provider(
    rt: Runtime,
    record: ExportRecord,
    args: JobTaskArgs,
    call: Callable[[], T],
    *,
    failure: str,
    submitting: bool = True,
    transact: Transact | None = None,
) -> T | None:
    """One create/poll call; a refusal reschedules the step or fails the export (and a job never
    created with it), and gives None."""
    try:
        return call()
    except (RetryLater, TransientError) as exc:
        _retry_job_step(rt, record, args, exc, submitting=submitting, transact=transact)
    except PermanentError as exc:
        fail_export(rt, record.id, f"{failure}: {exc}", job_key=args.job_key if submitting else None)
    return None


def _checked_gateway(rt: Runtime, record: ExportRecord, job: JobRecord) -> ProviderGateway:
    """What must hold before the provider is asked to create anything (impact.com allows 100 report
    exports a day): the sink can take the rows here, the credential is configured, and the provider's
    own checks of the request pass. The caller may have had none of these settings at enqueue."""
    check_sink(SinkContext(rt.settings, rt.store, record))
    gateway = rt.gateway(record.provider, record.credential)
    try:
        gateway.check(job.params)
    except InvalidRequest as exc:
        raise PermanentError(str(exc)) from None
    return gateway


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
    claimed = JobTaskArgs.of(record, args.job_key, token)
    job = record.jobs[args.job_key]
    gateway = _call_provider(
        rt,
        record,
        claimed,
        lambda: _checked_gateway(rt, record, job),
        failure=f"refused before the {record.provider} job was created",
    )
    if gateway is None:
        return
    snapshot = _call_provider(
        rt, record, claimed, lambda: gateway.create(job.params), failure=f"could not create the {record.provider} job"
    )
    if snapshot is None:
        return
    delay = rt.policy.delay(0, rt.rng)
    try:
        poll_token = rt.store.transact(
            args.export_id, lambda r, w: tr.record_created(r, args.job_key, token, snapshot, delay, rt.clock(), w)
        )
    except StaleTask:
        export_log(record).error(
            "provider job %s was created but job %s moved on meanwhile; it will not be tracked",
            snapshot.provider_job_id,
            args.job_key,
        )
        return
    created = job.model_copy(update={"provider_job_id": snapshot.provider_job_id})
    export_log(record, created).info("created provider job %s", snapshot.provider_job_id)
    rt.dispatcher.poll(JobTaskArgs.of(record, args.job_key, poll_token), delay)


def run_poll(rt: Runtime, args: JobTaskArgs) -> None:
    """Two Redis round trips when the task names its provider and credential: the read, which spends the
    poll's budgets too, and the EXEC of the change on the same WATCH (:meth:`ExportStore.watch_export`)."""
    routed = rt.gateway(args.provider, args.credential) if args.provider is not None and args.credential is not None else None
    spend = routed.spend(Operation.POLL, None) if routed is not None else None
    with rt.store.watch_export(args.export_id, args.job_key, args.token, spend) as watched:
        record = watched.record
        if enforce_deadline(rt, record):
            return
        try:
            job = tr.current_job(record, args.job_key, args.token)
        except StaleTask:
            metrics.STALE_TASKS.labels("poll").inc()
            return
        assert job.provider_job_id is not None, "a polled job always has a provider job id"
        gateway = rt.gateway(record.provider, record.credential)
        spent = watched.spent if gateway is routed else None
        provider_job_id = job.provider_job_id
        snapshot = _call_provider(
            rt,
            record,
            args,
            lambda: gateway.get(provider_job_id, job.params, spent),
            failure=f"polling {record.provider} job {provider_job_id} failed",
            submitting=False,
            transact=watched.transact,
        )
        if snapshot is None:
            return
        metrics.POLLS.labels(record.provider, snapshot.raw_status).inc()

        def mutate(state: ExportRecord, writes: Writes) -> tr.PollOutcome:
            ctx = tr.PollContext(
                now=rt.clock(),
                policy=rt.policy,
                rng=rt.rng,
                split=gateway.split,
                safe_name=lambda name, fallback: safe_filename(name, fallback=fallback),
            )
            return tr.apply_snapshot(state, args.job_key, args.token, snapshot, ctx, writes)

        try:
            outcome = watched.transact(mutate)
        except StaleTask:
            metrics.STALE_TASKS.labels("poll").inc()
            return
    if outcome.poll_token is not None:
        rt.dispatcher.poll(JobTaskArgs.of(record, args.job_key, outcome.poll_token), outcome.poll_delay)
    for child_key, child_token in outcome.submit_jobs:
        rt.dispatcher.submit(JobTaskArgs.of(record, child_key, child_token), 0)
    for file_record in outcome.files:
        rt.dispatcher.download(FileTaskArgs(export_id=args.export_id, file_key=file_record.key, token=0), 0)
    if outcome.failed:
        on_terminal(rt, rt.store.get(args.export_id))
    elif outcome.check_completion:
        finish_if_complete(rt, args.export_id)
