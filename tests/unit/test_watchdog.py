"""The watchdog: which dead chains it revives, with what task and countdown, exactly once; what it reports.

Every scenario runs the real engine on fakeredis with a scripted Samsara. A lost task is one taken
off the dispatcher and never run (its worker died); a worker that died between an EXEC and what
follows it is a transition applied through the store by hand, as in ``test_announce``.
"""

from __future__ import annotations

import logging
import random
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import fakeredis
import httpx
import pytest
from prometheus_client import REGISTRY

from tests.conftest import FakeClock, make_settings
from tests.engine_driver import Driver
from tests.interleaving import RoundTrips, hooked_client
from tests.scripted_samsara import PARAMS, FakeSamsara, job, script_happy_path, script_split, submit
from worker.api import ExportClient
from worker.dev.testing import RecordingDispatcher
from worker.engine import transitions as tr
from worker.engine.context import Runtime
from worker.engine.jobs import run_poll, run_submit
from worker.engine.watchdog import run_watchdog
from worker.models import (
    Callback,
    ExportRecord,
    ExportStatus,
    FileOutput,
    FileRecord,
    FileTaskArgs,
    JobRecord,
    JobStatus,
    JobTaskArgs,
    Writes,
)
from worker.store import ExportStore


@dataclass
class HookedSamsara(FakeSamsara):
    """The scripted Samsara, able to run something (the watchdog) while a worker waits on one request."""

    hooks: dict[tuple[str, str], Callable[[], object]] = field(default_factory=dict)

    def handler(self, request: httpx.Request) -> httpx.Response:
        hook = self.hooks.pop((request.method, request.url.path), None)
        if hook is not None:
            hook()
        return super().handler(request)


@pytest.fixture
def provider() -> HookedSamsara:
    return HookedSamsara()


def revived(kind: str) -> float:
    return REGISTRY.get_sample_value("aew_chains_revived_total", {"kind": kind}) or 0.0


def watchdog_warnings(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name == "worker.watchdog" and r.levelno == logging.WARNING]


def split_with_lost_submits(rt: Runtime, driver: Driver) -> tuple[str, list[tuple[str, JobTaskArgs, float]]]:
    """An export split in two whose two child submits were lost; returns it and the lost tasks."""
    export_id = submit(rt)
    driver.step()  # submit 0
    driver.step()  # poll 0: too big, split into 0.0 and 0.1
    lost = driver.dispatcher.take()
    assert [(kind, args.job_key) for kind, args, _ in lost] == [("submit", "0.0"), ("submit", "0.1")]
    return export_id, lost


def split_with_lost_polls(rt: Runtime, driver: Driver) -> tuple[str, list[tuple[str, JobTaskArgs, float]]]:
    """An export split in two whose children were created at Samsara and whose two polls were lost."""
    export_id, submits = split_with_lost_submits(rt, driver)
    for _kind, args, _countdown in submits:
        run_submit(rt, args)
    lost = driver.dispatcher.take()
    assert [(kind, args.job_key) for kind, args, _ in lost] == [("poll", "0.0"), ("poll", "0.1")]
    return export_id, lost


def stale_moment(rt: Runtime, export_id: str) -> float:
    """The first instant at which every chain of the export counts as silent."""
    record = rt.store.get(export_id)
    due = max(job.next_action_at for job in record.jobs.values() if job.next_action_at is not None)
    return due + rt.settings.stale_after_seconds


# -- jobs -----------------------------------------------------------------------------------------


def test_lost_submits_are_sent_again_at_once_with_the_next_token_counted_and_logged(
    rt: Runtime, driver: Driver, provider: FakeSamsara, clock: FakeClock, caplog: pytest.LogCaptureFixture
) -> None:
    """A job not yet created at the provider gets a submit task, not a poll; the old submit goes stale."""
    script_split(provider)
    export_id, lost = split_with_lost_submits(rt, driver)
    clock.now = stale_moment(rt, export_id) + 1
    jobs_before, files_before = revived("job"), revived("file")
    with caplog.at_level(logging.WARNING, logger="worker.watchdog"):
        report = run_watchdog(rt)
    assert (report.scanned, report.jobs_revived, report.files_revived, report.completed) == (1, 2, 0, 0)
    assert driver.dispatcher.take() == [
        ("submit", JobTaskArgs(export_id=export_id, job_key="0.0", token=2, provider="samsara", credential="default"), 0),
        ("submit", JobTaskArgs(export_id=export_id, job_key="0.1", token=2, provider="samsara", credential="default"), 0),
    ]
    assert (revived("job"), revived("file")) == (jobs_before + 2, files_before)
    assert watchdog_warnings(caplog) == [
        f"revived PENDING chain of export {export_id} job 0.0",
        f"revived PENDING chain of export {export_id} job 0.1",
    ]
    for _kind, args, _countdown in lost:  # the dead workers' tasks, delivered after all
        run_submit(rt, args)
    assert driver.dispatcher.sent == []
    assert provider.count("POST", "/ifta-detail/csv") == 1, "a stale submit must not create a provider job"


def test_revived_submits_create_each_child_job_once_and_the_export_completes(
    rt: Runtime, driver: Driver, provider: FakeSamsara, clock: FakeClock
) -> None:
    script_split(provider)
    export_id, _lost = split_with_lost_submits(rt, driver)
    clock.now = stale_moment(rt, export_id) + 1
    run_watchdog(rt)
    driver.run()
    record = rt.store.get(export_id)
    assert (record.status, record.rows) == (ExportStatus.COMPLETED, 4)
    assert provider.count("POST", "/ifta-detail/csv") == 3


def test_lost_polls_are_sent_again_at_once_with_the_next_token(
    rt: Runtime, driver: Driver, provider: FakeSamsara, clock: FakeClock, caplog: pytest.LogCaptureFixture
) -> None:
    script_split(provider)
    export_id, lost = split_with_lost_polls(rt, driver)
    clock.now = stale_moment(rt, export_id) + 1
    with caplog.at_level(logging.WARNING, logger="worker.watchdog"):
        report = run_watchdog(rt)
    assert report.jobs_revived == 2
    tokens = {key: rt.store.get(export_id).jobs[key].token for key in ("0.0", "0.1")}
    assert driver.dispatcher.take() == [
        (
            "poll",
            JobTaskArgs(export_id=export_id, job_key="0.0", token=tokens["0.0"], provider="samsara", credential="default"),
            0,
        ),
        (
            "poll",
            JobTaskArgs(export_id=export_id, job_key="0.1", token=tokens["0.1"], provider="samsara", credential="default"),
            0,
        ),
    ]
    assert [args.token + 1 for _kind, args, _countdown in lost] == [tokens["0.0"], tokens["0.1"]]
    assert watchdog_warnings(caplog) == [
        f"revived POLLING chain of export {export_id} job 0.0",
        f"revived POLLING chain of export {export_id} job 0.1",
    ]


def test_a_chain_is_revived_from_the_moment_it_is_stale_after_seconds_overdue(
    rt: Runtime, driver: Driver, provider: FakeSamsara, clock: FakeClock
) -> None:
    """stale_after_seconds is the operator's threshold: a second short of it is not yet silent, at it is."""
    script_happy_path(provider)
    export_id = submit(rt)
    driver.step()
    [(kind, _lost, _countdown)] = driver.dispatcher.take()
    assert kind == "poll"
    due = rt.store.get(export_id).jobs["0"].next_action_at
    assert due is not None
    clock.now = due + rt.settings.stale_after_seconds - 1
    assert run_watchdog(rt).jobs_revived == 0
    assert driver.dispatcher.sent == []
    clock.now = due + rt.settings.stale_after_seconds
    assert run_watchdog(rt).jobs_revived == 1
    assert [kind for kind, _args, _countdown in driver.dispatcher.take()] == ["poll"]


def test_a_job_without_a_due_time_is_judged_from_the_export_creation(
    rt: Runtime, dispatcher: RecordingDispatcher, clock: FakeClock
) -> None:
    """A job record may carry no next_action_at (the field's default): the watchdog neither crashes nor forgets it."""
    record = ExportRecord(
        id="legacy",
        provider="samsara",
        params=dict(PARAMS),
        credential="default",
        jobs={"0": JobRecord(key="0", params=dict(PARAMS), token=1)},
        created_at=clock.now,
        updated_at=clock.now,
        deadline_at=clock.now + 10**6,
    )
    rt.store.create(record)
    clock.advance(rt.settings.stale_after_seconds - 1)
    assert run_watchdog(rt).jobs_revived == 0
    clock.advance(2)
    assert run_watchdog(rt).jobs_revived == 1
    assert dispatcher.take() == [("submit", JobTaskArgs.of(record, "0", 2), 0)]


def test_a_chain_that_wakes_up_during_the_pass_leaves_the_others_revived(tmp_path: Path) -> None:
    """Job 0.0's lost poll is delivered late, at every point of the watchdog's pass: 0.0 keeps one chain, and
    0.1, silent all along, is revived in that same pass whatever 0.0's revive ran into."""
    settings = make_settings(tmp_path, download_hosts={"samsara": ["files.example"]})

    def pass_with_late_poll(at: int | None) -> tuple[Runtime, RecordingDispatcher, str, list[JobTaskArgs], RoundTrips]:
        server = fakeredis.FakeServer()
        provider, dispatcher, clock = FakeSamsara(), RecordingDispatcher(), FakeClock(1_800_000_000.0)
        script_split(provider)

        def runtime(trips: RoundTrips | None = None) -> Runtime:
            client = hooked_client(server, trips) if trips else fakeredis.FakeRedis(server=server)
            return Runtime(
                settings=settings,
                store=ExportStore(client, prefix="unit"),
                dispatcher=dispatcher,
                clock=clock,
                rng=random.Random(3),
                transport=httpx.MockTransport(provider.handler),
            )

        rt = runtime()
        export_id, lost = split_with_lost_polls(rt, Driver(rt, dispatcher))
        provider.answers[("GET", "/ifta-detail/csv/a")] = [httpx.Response(200, json=job("a", "Processing"))]
        clock.now = stale_moment(rt, export_id) + 1
        trips = RoundTrips(at, lambda: run_poll(rt, lost[0][1]))
        run_watchdog(runtime(trips))
        return rt, dispatcher, export_id, [args for _kind, args, _countdown in lost], trips

    total = pass_with_late_poll(None)[-1].count
    assert total > 3
    for at in range(total):
        rt, dispatcher, export_id, lost, _trips = pass_with_late_poll(at)
        jobs = rt.store.get(export_id).jobs
        live = sorted((args.job_key, args.token) for kind, args, _ in dispatcher.sent if kind == "poll")
        assert live == [("0.0", jobs["0.0"].token), ("0.1", jobs["0.1"].token)], f"late poll at round trip {at}"
        assert jobs["0.1"].token == lost[1].token + 1, f"0.1 not revived when the late poll came at round trip {at}"


# -- files ----------------------------------------------------------------------------------------


def fanned_out_with_lost_downloads(
    rt: Runtime, driver: Driver, callback: dict[str, str] | None = None
) -> tuple[str, list[tuple[str, FileTaskArgs, float]]]:
    export_id = submit(rt, callback=callback)
    for _ in range(3):  # submit, poll (Processing), poll (Completed: two files)
        driver.step()
    lost = driver.dispatcher.take()
    assert [(kind, args.file_key) for kind, args, _ in lost] == [("download", "0-0000"), ("download", "0-0001")]
    return export_id, lost


def test_lost_downloads_are_sent_again_at_once_with_the_next_token_counted_and_logged(
    rt: Runtime, driver: Driver, provider: FakeSamsara, clock: FakeClock, caplog: pytest.LogCaptureFixture
) -> None:
    script_happy_path(provider)
    export_id, lost = fanned_out_with_lost_downloads(rt, driver)
    clock.advance(rt.settings.stale_after_seconds + 1)
    jobs_before, files_before = revived("job"), revived("file")
    with caplog.at_level(logging.WARNING, logger="worker.watchdog"):
        report = run_watchdog(rt)
    assert (report.scanned, report.jobs_revived, report.files_revived, report.expired, report.completed) == (1, 0, 2, 0, 0)
    revived_tasks = driver.dispatcher.take()
    assert revived_tasks == [
        ("download", FileTaskArgs(export_id=export_id, file_key="0-0000", token=1), 0),
        ("download", FileTaskArgs(export_id=export_id, file_key="0-0001", token=1), 0),
    ]
    assert (revived("job"), revived("file")) == (jobs_before, files_before + 2)
    assert watchdog_warnings(caplog) == [
        f"revived download of export {export_id} file 0-0000",
        f"revived download of export {export_id} file 0-0001",
    ]
    driver.dispatcher.sent.extend([*lost, *revived_tasks])  # the dead workers' tasks are delivered after all
    driver.run()
    record = rt.store.get(export_id)
    assert (record.status, record.rows) == (ExportStatus.COMPLETED, 5)
    assert (provider.count("GET", "/j1/0"), provider.count("GET", "/j1/1")) == (1, 1), "each file downloaded once"


def test_a_download_is_revived_from_the_moment_it_is_stale_after_seconds_old(
    rt: Runtime, driver: Driver, provider: FakeSamsara, clock: FakeClock
) -> None:
    script_happy_path(provider)
    export_id, _lost = fanned_out_with_lost_downloads(rt, driver)
    dispatched = {file.dispatched_at for file in rt.store.files(export_id)}
    assert dispatched == {clock.now}
    clock.advance(rt.settings.stale_after_seconds - 1)
    report = run_watchdog(rt)
    assert (report.files_revived, driver.dispatcher.sent) == (0, []), "a download still within its time is left alone"
    clock.advance(1)
    assert run_watchdog(rt).files_revived == 2


def test_a_file_a_live_worker_is_streaming_is_not_revived_but_the_lost_one_next_to_it_is(
    rt: Runtime, driver: Driver, provider: HookedSamsara, clock: FakeClock
) -> None:
    """The download lease is what tells a slow live download from a dead one: no second writer for 0-0000,
    and its lease does not keep the watchdog from reviving 0-0001, whose task was lost."""
    script_happy_path(provider)
    export_id = submit(rt)
    for _ in range(3):
        driver.step()
    [streaming, (_kind, lost, _countdown)] = driver.dispatcher.take()
    assert (streaming[1].file_key, lost.file_key) == ("0-0000", "0-0001")
    reports = []

    def watchdog_mid_stream() -> None:
        clock.advance(rt.settings.stale_after_seconds + 1)
        reports.append(run_watchdog(rt))

    provider.hooks[("GET", "/j1/0")] = watchdog_mid_stream
    driver.dispatcher.sent.append(streaming)
    driver.step()
    assert [report.files_revived for report in reports] == [1]
    assert driver.dispatcher.sent == [("download", FileTaskArgs(export_id=export_id, file_key="0-0001", token=1), 0)]
    driver.run()
    record = rt.store.get(export_id)
    assert (record.status, record.rows) == (ExportStatus.COMPLETED, 5)
    assert (provider.count("GET", "/j1/0"), provider.count("GET", "/j1/1")) == (1, 1)


# -- ends the watchdog reports --------------------------------------------------------------------


def die_after_ending(rt: Runtime, export_id: str, end: Callable[[ExportRecord, Writes], object]) -> None:
    """The EXEC that ends the export commits; its worker dies before reporting the end."""
    rt.store.transact(export_id, end)


def test_every_unreported_end_is_reported_once_in_one_pass_and_logged(
    rt: Runtime, dispatcher: RecordingDispatcher, clock: FakeClock, caplog: pytest.LogCaptureFixture
) -> None:
    first = submit(rt, callback={"task": "app.first"})
    second = submit(rt, callback={"task": "app.second"})
    dispatcher.take()
    die_after_ending(rt, first, lambda r, w: tr.cancel(r, w, clock.now))
    clock.advance(1)
    die_after_ending(rt, second, lambda r, w: tr.cancel(r, w, clock.now))
    clock.advance(rt.settings.stale_after_seconds + 1)
    with caplog.at_level(logging.WARNING, logger="worker.watchdog"):
        report = run_watchdog(rt)
    assert report.announced == 2
    assert [(callback.task, status) for callback, status in dispatcher.callbacks] == [
        ("app.first", "CANCELLED"),
        ("app.second", "CANCELLED"),
    ]
    assert watchdog_warnings(caplog) == [
        f"reported the end of export {first}, which its worker did not live to report",
        f"reported the end of export {second}, which its worker did not live to report",
    ]
    assert run_watchdog(rt).announced == 0 and len(dispatcher.callbacks) == 2


def test_an_unreported_end_whose_record_is_gone_is_dropped_and_the_next_one_still_reported(
    rt: Runtime, dispatcher: RecordingDispatcher, clock: FakeClock
) -> None:
    """A record removed from Redis (by hand, or evicted) can't be reported; it must not block the others."""
    gone = submit(rt, callback={"task": "app.gone"})
    kept = submit(rt, callback={"task": "app.kept"})
    dispatcher.take()
    die_after_ending(rt, gone, lambda r, w: tr.cancel(r, w, clock.now))
    clock.advance(1)
    die_after_ending(rt, kept, lambda r, w: tr.cancel(r, w, clock.now))
    rt.store.redis.delete(rt.store.key("export", gone))
    clock.advance(rt.settings.stale_after_seconds + 1)
    assert run_watchdog(rt).announced == 1
    assert [(callback.task, status) for callback, status in dispatcher.callbacks] == [("app.kept", "CANCELLED")]
    assert rt.store.unannounced_ids(ended_before=clock.now) == []


def test_an_end_undone_by_a_retry_before_it_was_reported_is_not_reported_and_the_next_one_is(
    rt: Runtime, driver: Driver, provider: FakeSamsara, clock: FakeClock
) -> None:
    """The user retried a failed export whose worker died before the callback: the export is running again,
    so "FAILED" must not be sent now; its callback goes out once, when it really ends."""
    script_happy_path(provider)
    retried, _lost = fanned_out_with_lost_downloads(rt, driver, callback={"task": "app.retried"})
    die_after_ending(rt, retried, lambda r, w: tr.fail(r, w, "deadline exceeded", clock.now))
    clock.advance(1)
    cancelled = submit(rt, callback={"task": "app.cancelled"})
    driver.dispatcher.take()
    die_after_ending(rt, cancelled, lambda r, w: tr.cancel(r, w, clock.now))
    clock.advance(rt.settings.stale_after_seconds + 1)
    ExportClient(rt).retry(retried)
    assert rt.store.get(retried).status is ExportStatus.DOWNLOADING
    report = run_watchdog(rt)
    assert (report.announced, report.files_revived) == (1, 0)
    assert [(callback.task, status) for callback, status in driver.dispatcher.callbacks] == [("app.cancelled", "CANCELLED")]
    assert rt.store.unannounced_ids(ended_before=clock.now) == []
    driver.run()
    assert rt.store.get(retried).status is ExportStatus.COMPLETED
    assert [(callback.task, status) for callback, status in driver.dispatcher.callbacks] == [
        ("app.cancelled", "CANCELLED"),
        ("app.retried", "COMPLETED"),
    ]


# -- one pass over many exports: what the watchdog task returns ------------------------------------


def stored_export(rt: Runtime, export_id: str, *, deadline_in: float) -> None:
    """An export whose first submit was lost (its job due now), ids chosen so the scan order is known."""
    now = rt.clock()
    record = ExportRecord(
        id=export_id,
        provider="samsara",
        params=dict(PARAMS),
        credential="default",
        callback=Callback(task=f"app.{export_id}"),
        jobs={"0": JobRecord(key="0", params=dict(PARAMS), token=1, next_action_at=now)},
        created_at=now,
        updated_at=now,
        deadline_at=now + deadline_in,
    )
    rt.store.create(record)


def test_an_active_export_gone_from_redis_is_skipped_and_the_others_are_looked_after(
    rt: Runtime, dispatcher: RecordingDispatcher, clock: FakeClock
) -> None:
    for export_id in ("a-gone", "b", "c"):
        stored_export(rt, export_id, deadline_in=10**6)
    rt.store.redis.delete(rt.store.key("export", "a-gone"))
    clock.advance(rt.settings.stale_after_seconds + 1)
    report = run_watchdog(rt)
    assert (report.scanned, report.jobs_revived) == (2, 2)
    assert [(kind, args.export_id) for kind, args, _ in dispatcher.take()] == [("submit", "b"), ("submit", "c")]


def test_exports_past_their_deadline_are_failed_counted_and_the_pass_goes_on(
    rt: Runtime, dispatcher: RecordingDispatcher, clock: FakeClock
) -> None:
    stored_export(rt, "a", deadline_in=10)
    stored_export(rt, "b", deadline_in=10)
    stored_export(rt, "c", deadline_in=10**6)
    clock.advance(rt.settings.stale_after_seconds + 11)
    report = run_watchdog(rt)
    assert (report.scanned, report.expired, report.jobs_revived) == (3, 2, 1)
    for export_id in ("a", "b"):
        record = rt.store.get(export_id)
        assert record.status is ExportStatus.FAILED and (record.error or "").startswith("deadline exceeded")
    assert [(callback.task, status) for callback, status in dispatcher.callbacks] == [("app.a", "FAILED"), ("app.b", "FAILED")]
    assert [(kind, args.export_id) for kind, args, _ in dispatcher.take()] == [("submit", "c")]


def test_exports_whose_last_download_ended_without_the_completion_check_are_completed_and_counted(
    rt: Runtime, dispatcher: RecordingDispatcher, clock: FakeClock
) -> None:
    """The worker that finished the last file died before checking completion: the watchdog completes it."""
    for export_id in ("a", "b"):
        stored_export(rt, export_id, deadline_in=10**6)
        file = FileRecord(key="0-0000", job_key="0", name="a.csv", safe_name="0-0000-a.csv", url="https://files.example/a")
        file.dispatched_at = clock.now

        def succeed(record: ExportRecord, writes: Writes, file: FileRecord = file) -> None:
            record.jobs["0"].status = JobStatus.SUCCEEDED
            record.jobs["0"].next_action_at = None
            record.files_total = 1
            record.status = ExportStatus.DOWNLOADING
            writes.put_file(file)

        rt.store.transact(export_id, succeed)
        output = FileOutput(rows=3, quarantined=0, bytes=30, path=f"/out/{export_id}/0-0000-a.csv.jsonl")
        rt.store.transact_file(
            export_id, "0-0000", lambda r, f, w, output=output: tr.finish_file(r, f, 0, output, None, clock.now, w)
        )
    report = run_watchdog(rt)
    assert (report.scanned, report.completed, report.jobs_revived, report.files_revived) == (2, 2, 0, 0)
    assert [rt.store.get(export_id).status for export_id in ("a", "b")] == [ExportStatus.COMPLETED] * 2
    assert [(callback.task, status) for callback, status in dispatcher.callbacks] == [
        ("app.a", "COMPLETED"),
        ("app.b", "COMPLETED"),
    ]
