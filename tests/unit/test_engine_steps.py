"""Engine steps on fakeredis with a scripted provider behind httpx.MockTransport (no Celery, no network).

A :class:`Driver` runs the tasks the engine dispatches, in order, ignoring countdowns, so each test
reads as the story of one export.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import httpx
import pytest
from prometheus_client import REGISTRY

from tests.conftest import FakeClock
from tests.engine_driver import Driver
from tests.scripted_samsara import FakeSamsara, csv_rows, job, remote_file, script_happy_path, script_split, submit
from worker.api import ExportClient
from worker.dev.testing import RecordingDispatcher
from worker.engine import commands
from worker.engine.context import Runtime
from worker.engine.download_step import run_download
from worker.engine.jobs import run_poll, run_submit
from worker.engine.watchdog import run_watchdog
from worker.models import ExportStatus, FileStatus, JobStatus, JobTaskArgs


def test_export_runs_submit_poll_fanout_and_completes(rt: Runtime, driver: Driver, provider: FakeSamsara) -> None:
    script_happy_path(provider)
    export_id = submit(rt, callback={"task": "app.done"})
    driver.run()
    view = ExportClient(rt).get(export_id)
    assert view.record.status is ExportStatus.COMPLETED and view.record.rows == 5
    assert driver.executed == ["submit", "poll", "poll", "download", "download"]
    assert [f.rows for f in view.files] == [3, 2]
    lines = Path(view.files[0].path).read_text().splitlines()
    assert json.loads(lines[0])["vehicleId"] == 1 and len(lines) == 3
    assert driver.dispatcher.callbacks[0][1] == "COMPLETED"
    assert provider.count("POST", "/ifta-detail/csv") == 1
    auth = [r.headers.get("Authorization") for r in provider.requests if r.url.host == "files.example"]
    assert auth == [None, None], "signed storage URLs must never receive the provider token"


def test_duplicate_poll_delivery_exits_without_a_second_chain(rt: Runtime, driver: Driver, provider: FakeSamsara) -> None:
    script_happy_path(provider)
    submit(rt)
    driver.step()
    kind, poll_args, _ = driver.dispatcher.sent[0]
    assert kind == "poll"
    polled = {"provider": "samsara", "provider_status": "Processing"}
    polled_before = REGISTRY.get_sample_value("aew_polls_total", polled) or 0.0
    driver.step()
    assert REGISTRY.get_sample_value("aew_polls_total", polled) == polled_before + 1
    stale_before = REGISTRY.get_sample_value("aew_stale_tasks_total", {"step": "poll"}) or 0.0
    budget = rt.store.key("rate", "samsara", "default", "poll")
    spent = rt.store.redis.get(budget)
    assert (poll_args.provider, poll_args.credential, spent is not None) == ("samsara", "default", True)
    run_poll(rt, poll_args)
    assert rt.store.redis.get(budget) == spent, "a stale poll spent from the provider's poll budget"
    polls = [kind for kind, _, _ in driver.dispatcher.sent if kind == "poll"]
    assert len(polls) == 1
    assert provider.count("GET", "/ifta-detail/csv/j1") == 1
    assert REGISTRY.get_sample_value("aew_stale_tasks_total", {"step": "poll"}) == stale_before + 1
    submit_stale = REGISTRY.get_sample_value("aew_stale_tasks_total", {"step": "submit"}) or 0.0
    run_submit(rt, JobTaskArgs(export_id=poll_args.export_id, job_key="0", token=0))  # a redelivered first submit
    assert REGISTRY.get_sample_value("aew_stale_tasks_total", {"step": "submit"}) == submit_stale + 1
    assert provider.count("POST", "/ifta-detail/csv") == 1


def test_duplicate_download_delivery_writes_once(rt: Runtime, driver: Driver, provider: FakeSamsara) -> None:
    script_happy_path(provider)
    export_id = submit(rt)
    for _ in range(3):
        driver.step()
    downloads = [args for kind, args, _ in driver.dispatcher.sent if kind == "download"]
    driver.run()
    for args in downloads:
        run_download(rt, args, owner="late-duplicate")
    assert provider.count("GET", "/j1/0") == 1
    assert ExportClient(rt).get(export_id).record.rows == 5


def test_rate_limited_poll_waits_at_least_retry_after(rt: Runtime, driver: Driver, provider: FakeSamsara) -> None:
    provider.on("POST", "/ifta-detail/csv", httpx.Response(201, json=job("j1", "Requested")))
    provider.on("GET", "/ifta-detail/csv/j1", httpx.Response(429, headers={"Retry-After": "42"}))
    submit(rt)
    driver.step()
    driver.step()
    kind, _args, countdown = driver.dispatcher.sent[-1]
    assert kind == "poll" and countdown >= 42


def test_server_errors_retry_then_fail_with_the_last_error(rt: Runtime, driver: Driver, provider: FakeSamsara) -> None:
    rt.settings.max_transient_retries = 3
    provider.on("POST", "/ifta-detail/csv", httpx.Response(201, json=job("j1", "Requested")))
    provider.on("GET", "/ifta-detail/csv/j1", httpx.Response(503))
    export_id = submit(rt)
    driver.run()
    record = rt.store.get(export_id)
    assert record.status is ExportStatus.FAILED
    assert "failed 4 times" in (record.error or "") and "HTTP 503" in (record.error or "")


def test_bad_credential_fails_fast_naming_it(rt: Runtime, driver: Driver, provider: FakeSamsara) -> None:
    provider.on("POST", "/ifta-detail/csv", httpx.Response(401, json={"message": "invalid token"}))
    export_id = submit(rt)
    driver.run()
    record = rt.store.get(export_id)
    assert record.status is ExportStatus.FAILED and "credential 'default'" in (record.error or "")
    assert driver.executed == ["submit"]


def test_missing_credential_on_the_worker_is_a_clear_error(rt: Runtime, driver: Driver) -> None:
    export_id = submit(rt, credential="fleet-b")
    driver.run()
    error = rt.store.get(export_id).error or ""
    assert "credential 'fleet-b' is not configured" in error and "EXPORT_WORKER_CREDENTIALS__FLEET-B" in error


def test_job_gone_at_the_provider_fails_with_its_id(rt: Runtime, driver: Driver, provider: FakeSamsara) -> None:
    provider.on("POST", "/ifta-detail/csv", httpx.Response(201, json=job("j1", "Requested")))
    export_id = submit(rt)
    driver.run()
    assert "job 'j1' was not found" in (rt.store.get(export_id).error or "")


def test_expired_url_is_refreshed_by_polling_again(rt: Runtime, driver: Driver, provider: FakeSamsara) -> None:
    stale = [remote_file("part-0.csv", "https://files.example/old/0", 2)]
    fresh = [remote_file("part-0.csv", "https://files.example/new/0", 2)]
    provider.on("POST", "/ifta-detail/csv", httpx.Response(201, json=job("j1", "Requested")))
    provider.on(
        "GET",
        "/ifta-detail/csv/j1",
        httpx.Response(200, json=job("j1", "Completed", stale)),
        httpx.Response(200, json=job("j1", "Completed", fresh)),
    )
    provider.on(
        "GET",
        "/old/0",
        httpx.Response(403, text="<Error><Code>AccessDenied</Code><Message>Request has expired</Message></Error>"),
    )
    provider.on("GET", "/new/0", httpx.Response(200, text=csv_rows(2)))
    export_id = submit(rt)
    driver.run()
    view = ExportClient(rt).get(export_id)
    assert view.record.status is ExportStatus.COMPLETED and view.files[0].url_refreshes == 1


def test_too_many_vehicles_splits_and_completes_from_child_jobs(rt: Runtime, driver: Driver, provider: FakeSamsara) -> None:
    script_split(provider)
    export_id = submit(rt)
    driver.run()
    record = rt.store.get(export_id)
    assert record.status is ExportStatus.COMPLETED and record.rows == 4
    assert record.jobs["0"].status is JobStatus.SPLIT
    assert {k: j.params["vehicleIds"] for k, j in record.jobs.items() if j.parent} == {"0.0": [1, 2], "0.1": [3, 4]}
    bodies = [json.loads(r.content) for r in provider.requests if r.method == "POST"]
    assert [b.get("vehicleIds") for b in bodies] == ["1,2,3,4", "1,2", "3,4"]


def test_deadline_fails_the_export_with_a_reason(rt: Runtime, driver: Driver, provider: FakeSamsara, clock: FakeClock) -> None:
    provider.on("POST", "/ifta-detail/csv", httpx.Response(201, json=job("j1", "Requested")))
    provider.on("GET", "/ifta-detail/csv/j1", httpx.Response(200, json=job("j1", "Processing")))
    export_id = submit(rt, deadline_seconds=60)
    driver.step()
    driver.step()
    clock.now += 61
    driver.run()
    record = rt.store.get(export_id)
    assert record.status is ExportStatus.FAILED and "deadline exceeded" in (record.error or "")


def test_a_job_the_provider_failed_ends_the_export_and_reports_it_once(
    rt: Runtime, driver: Driver, provider: FakeSamsara, clock: FakeClock
) -> None:
    provider.on("POST", "/ifta-detail/csv", httpx.Response(201, json=job("j1", "Requested")))
    provider.on("GET", "/ifta-detail/csv/j1", httpx.Response(200, json=job("j1", "Failed", details="vehicle 3 has no data")))
    export_id = submit(rt, callback={"task": "app.done"})
    driver.run()
    record = rt.store.get(export_id)
    assert record.status is ExportStatus.FAILED and "vehicle 3 has no data" in (record.error or "")
    assert [status for _, status in driver.dispatcher.callbacks] == ["FAILED"]
    assert rt.store.unannounced_ids(ended_before=clock.now + 1) == []


def test_a_job_that_completes_without_files_completes_the_export(rt: Runtime, driver: Driver, provider: FakeSamsara) -> None:
    provider.on("POST", "/ifta-detail/csv", httpx.Response(201, json=job("j1", "Requested")))
    provider.on("GET", "/ifta-detail/csv/j1", httpx.Response(200, json=job("j1", "Completed", files=[])))
    export_id = submit(rt, callback={"task": "app.done"})
    driver.run()
    record = rt.store.get(export_id)
    assert (record.status, record.rows, record.files_total) == (ExportStatus.COMPLETED, 0, 0)
    assert [status for _, status in driver.dispatcher.callbacks] == ["COMPLETED"]


def test_polls_wait_by_countdown_and_downloads_go_at_once(
    rt: Runtime, dispatcher: RecordingDispatcher, provider: FakeSamsara
) -> None:
    """No worker sleeps: each step hands the next one a countdown (the backoff), and files are fetched at once."""
    script_happy_path(provider)
    submit(rt)
    run_submit(rt, dispatcher.take_one("submit"))
    [(kind, first_poll, countdown)] = dispatcher.take()
    assert kind == "poll" and 0.8 <= countdown <= 1.2  # poll_initial_seconds=1, jitter 0.2
    run_poll(rt, first_poll)
    [(kind, second_poll, countdown)] = dispatcher.take()
    assert kind == "poll" and 1.6 <= countdown <= 2.4  # the backoff's second step
    run_poll(rt, second_poll)
    assert [(kind, countdown) for kind, _args, countdown in dispatcher.take()] == [("download", 0), ("download", 0)]


def test_a_new_export_sends_its_submit_at_once(rt: Runtime, dispatcher: RecordingDispatcher) -> None:
    export_id = submit(rt)
    [(kind, args, countdown)] = dispatcher.sent
    assert (kind, args.export_id, args.job_key, countdown) == ("submit", export_id, "0", 0)


def test_retry_after_a_deadline_failure_gets_a_whole_new_deadline(
    rt: Runtime, driver: Driver, provider: FakeSamsara, clock: FakeClock
) -> None:
    files = [remote_file("r.csv", "https://files.example/r", 2)]
    provider.on("POST", "/ifta-detail/csv", httpx.Response(201, json=job("j1", "Requested")))
    provider.on("GET", "/ifta-detail/csv/j1", httpx.Response(200, json=job("j1", "Completed", files)))
    provider.on("GET", "/r", httpx.Response(503, text="storage busy"), httpx.Response(200, text=csv_rows(2)))
    export_id = submit(rt, deadline_seconds=60)
    driver.step()
    driver.step()
    driver.step()  # the download meets the 503 and is rescheduled
    clock.now += 61
    driver.run()
    failed = rt.store.get(export_id)
    assert failed.status is ExportStatus.FAILED and "deadline exceeded" in (failed.error or "")
    assert failed.finished_at == clock.now
    clock.now += 1000
    ExportClient(rt).retry(export_id)
    assert rt.store.get(export_id).deadline_at == clock.now + 60
    driver.run()
    record = rt.store.get(export_id)
    assert record.status is ExportStatus.COMPLETED and record.rows == 2 and record.error is None


def test_cancel_stops_the_poll_chain(rt: Runtime, driver: Driver, provider: FakeSamsara) -> None:
    provider.on("POST", "/ifta-detail/csv", httpx.Response(201, json=job("j1", "Requested")))
    provider.on("GET", "/ifta-detail/csv/j1", httpx.Response(200, json=job("j1", "Processing")))
    export_id = submit(rt)
    driver.step()
    ExportClient(rt).cancel(export_id)
    driver.run()
    assert rt.store.get(export_id).status is ExportStatus.CANCELLED
    assert provider.count("GET", "/ifta-detail/csv/j1") == 0


def test_watchdog_revives_a_dead_poll_chain_exactly_once(
    rt: Runtime, driver: Driver, provider: FakeSamsara, clock: FakeClock
) -> None:
    script_happy_path(provider)
    export_id = submit(rt)
    driver.step()
    lost = driver.dispatcher.take()
    assert [kind for kind, _, _ in lost] == ["poll"]
    clock.now += rt.settings.stale_after_seconds + 60
    first = run_watchdog(rt)
    second = run_watchdog(rt)
    assert (first.jobs_revived, second.jobs_revived) == (1, 0)
    run_poll(rt, lost[0][1])
    driver.run()
    assert rt.store.get(export_id).status is ExportStatus.COMPLETED


def test_watchdog_revives_a_lost_download(rt: Runtime, driver: Driver, provider: FakeSamsara, clock: FakeClock) -> None:
    script_happy_path(provider)
    export_id = submit(rt)
    for _ in range(3):
        driver.step()
    lost = [item for item in driver.dispatcher.take() if item[0] == "download"]
    assert len(lost) == 2
    clock.now += rt.settings.stale_after_seconds + 1
    assert run_watchdog(rt).files_revived == 2
    driver.run()
    assert rt.store.get(export_id).status is ExportStatus.COMPLETED


def test_record_count_mismatch_is_a_warning(rt: Runtime, driver: Driver, provider: FakeSamsara) -> None:
    script_happy_path(provider)
    provider.answers[("GET", "/j1/1")] = [httpx.Response(200, text=csv_rows(1))]
    export_id = submit(rt)
    driver.run()
    record = rt.store.get(export_id)
    assert record.status is ExportStatus.COMPLETED
    assert record.warnings == ["file part-1.csv: provider recordCount is 2 but 1 rows were parsed"]


def test_file_with_unusable_header_fails_alone_and_retry_reopens_it(rt: Runtime, driver: Driver, provider: FakeSamsara) -> None:
    script_happy_path(provider)
    provider.answers[("GET", "/j1/1")] = [httpx.Response(200, text="foo,foo\n1,2\n"), httpx.Response(200, text=csv_rows(2))]
    export_id = submit(rt)
    driver.run()
    view = ExportClient(rt).get(export_id)
    assert view.record.status is ExportStatus.FAILED and "1 of 2 files failed" in (view.record.error or "")
    assert [f.status for f in view.files] == [FileStatus.DONE, FileStatus.FAILED]
    assert Path(view.files[0].path).exists()
    assert export_id not in rt.store.active_ids()
    ExportClient(rt).retry(export_id)
    assert export_id in rt.store.active_ids(), "a reopened export is watched again"
    [(kind, args, countdown)] = driver.dispatcher.sent
    assert (kind, args.file_key, countdown) == ("download", view.files[1].key, 0), "only the failed file, at once"
    driver.run()
    assert rt.store.get(export_id).status is ExportStatus.COMPLETED
    assert export_id not in rt.store.active_ids()
    assert provider.count("GET", "/j1/0") == 1, "the file already written is not downloaded again"


def test_events_follow_every_state_change(rt: Runtime, driver: Driver, provider: FakeSamsara) -> None:
    script_happy_path(provider)
    export_id = submit(rt)
    driver.run()
    _, events = ExportClient(rt).read_events(export_id, since="0", block_ms=None)
    kinds = [(e["type"], e.get("status")) for e in events]
    assert kinds[0] == ("created", "PENDING") and kinds[-1] == ("status", "COMPLETED")
    assert ("status", "RUNNING") in kinds and ("status", "DOWNLOADING") in kinds
    assert sum(kind == "file_done" for kind, _ in kinds) == 2


def test_malformed_provider_payload_retries_then_fails_naming_the_field(
    rt: Runtime, driver: Driver, provider: FakeSamsara
) -> None:
    rt.settings.max_transient_retries = 2
    provider.on("POST", "/ifta-detail/csv", httpx.Response(201, json=job("j1", "Requested")))
    broken = job("j1", "Processing")
    del broken["data"]["requestedAtTime"]
    provider.on("GET", "/ifta-detail/csv/j1", httpx.Response(200, json=broken))
    export_id = submit(rt)
    driver.run()
    error = rt.store.get(export_id).error or ""
    assert "field 'data.requestedAtTime'" in error and "failed 3 times" in error


def test_hostile_file_names_stay_inside_the_export_folder(
    rt: Runtime, driver: Driver, provider: FakeSamsara, tmp_path: Path
) -> None:
    files = [
        remote_file("../../../etc/passwd", "https://files.example/x", 1),
        remote_file("CON.csv", "https://files.example/y", 1),
    ]
    provider.on("POST", "/ifta-detail/csv", httpx.Response(201, json=job("j1", "Requested")))
    provider.on("GET", "/ifta-detail/csv/j1", httpx.Response(200, json=job("j1", "Completed", files)))
    provider.on("GET", "/x", httpx.Response(200, text=csv_rows(1)))
    provider.on("GET", "/y", httpx.Response(200, text=csv_rows(1)))
    export_id = submit(rt)
    driver.run()
    root = (rt.settings.output_dir / export_id).resolve()
    paths = [Path(f.path).resolve() for f in ExportClient(rt).get(export_id).files]
    assert all(path.parent == root for path in paths), paths
    assert not any(path.name.upper().startswith("CON.") for path in paths)


def test_file_over_the_size_cap_fails_with_the_setting_to_raise(rt: Runtime, driver: Driver, provider: FakeSamsara) -> None:
    rt.settings.max_download_bytes = 100
    script_happy_path(provider, rows=(3,))
    export_id = submit(rt)
    driver.run()
    view = ExportClient(rt).get(export_id)
    assert view.files[0].status is FileStatus.FAILED
    assert "EXPORT_WORKER_MAX_DOWNLOAD_BYTES" in (view.files[0].error or "")


def test_bad_rows_are_quarantined_with_line_numbers_and_counted(rt: Runtime, driver: Driver, provider: FakeSamsara) -> None:
    body = (
        csv_rows(3) + "2,Truck 2,CA,not-a-date,2026-11-23T02:00:00Z,1.0,1.0\n" + "3,short row\n" + csv_rows(2).split("\n", 1)[1]
    )
    files = [remote_file("mixed.csv", "https://files.example/m", 7)]
    provider.on("POST", "/ifta-detail/csv", httpx.Response(201, json=job("j1", "Requested")))
    provider.on("GET", "/ifta-detail/csv/j1", httpx.Response(200, json=job("j1", "Completed", files)))
    provider.on("GET", "/m", httpx.Response(200, text=body))
    export_id = submit(rt)
    driver.run()
    view = ExportClient(rt).get(export_id)
    assert view.record.status is ExportStatus.COMPLETED and view.record.warnings == []
    assert (view.record.rows, view.record.quarantined) == (5, 2)
    quarantine = [json.loads(line) for line in Path(view.files[0].quarantine_path).read_text().splitlines()]
    assert [(q["file"], q["line"]) for q in quarantine] == [("mixed.csv", 5), ("mixed.csv", 6)]
    assert "startTime" in quarantine[0]["reason"]


def test_redis_stream_sink_writes_each_file_once_even_when_retried(rt: Runtime, driver: Driver, provider: FakeSamsara) -> None:
    script_happy_path(provider)
    provider.answers[("GET", "/j1/1")] = [httpx.Response(200, text="foo,foo\n1,2\n"), httpx.Response(200, text=csv_rows(2))]
    export_id = submit(rt, sink="redis_stream")
    driver.run()
    assert rt.store.get(export_id).status is ExportStatus.FAILED
    ExportClient(rt).retry(export_id)
    driver.run()
    view = ExportClient(rt).get(export_id)
    assert view.record.status is ExportStatus.COMPLETED and view.record.rows == 5
    redis = rt.store.redis
    streams = [redis.xrange(rt.store.records_key(export_id, f.key)) for f in view.files]
    assert [len(entries) for entries in streams] == [3, 2]
    assert json.loads(streams[0][0][1][b"row"])["vehicleId"] == 1
    assert view.files[0].path == f"redis://{rt.store.records_key(export_id, view.files[0].key)}"
    assert list(redis.scan_iter(match="unit:staging:*")) == [], "no uncommitted attempt is left behind"


def test_redis_stream_sink_refuses_files_over_its_row_cap(rt: Runtime, driver: Driver, provider: FakeSamsara) -> None:
    rt.settings.redis_sink_max_rows = 2
    script_happy_path(provider, rows=(3,))
    export_id = submit(rt, sink="redis_stream")
    driver.run()
    view = ExportClient(rt).get(export_id)
    assert view.files[0].status is FileStatus.FAILED and "sink='jsonl'" in (view.files[0].error or "")
    assert rt.store.redis.exists(rt.store.records_key(export_id, view.files[0].key)) == 0


def test_unknown_sink_is_refused_at_submit(rt: Runtime) -> None:
    from worker.errors import InvalidRequest

    with pytest.raises(InvalidRequest, match="unknown sink 's3'; choose one of jsonl, redis_stream, postgres, parquet"):
        submit(rt, sink="s3")


def test_a_sink_that_cannot_write_retries_then_fails_the_file_saying_what_to_fix(
    rt: Runtime, driver: Driver, provider: FakeSamsara
) -> None:
    script_happy_path(provider, rows=(3,))
    export_id = submit(rt)
    driver.step()  # the submit step finds the output folder usable; it is lost before the download
    Path(rt.settings.output_dir).rmdir()
    Path(rt.settings.output_dir).write_text("a file where the output directory should be")
    driver.run()
    view = ExportClient(rt).get(export_id)
    assert view.record.status is ExportStatus.FAILED
    assert view.files[0].attempts == rt.settings.max_transient_retries
    assert "to the jsonl sink failed" in (view.files[0].error or "")
    assert "free disk space or fix permissions" in (view.files[0].error or "")


def retries(step: str, reason: str) -> float:
    labels = {"provider": "samsara", "step": step, "reason": reason}
    return REGISTRY.get_sample_value("aew_retries_total", labels) or 0.0


def step_is_counted_and_logged(driver: Driver, caplog: pytest.LogCaptureFixture, step: str, reason: str) -> None:
    """Run the next task, which must be rescheduled: counted once in aew_retries_total, and logged."""
    before = retries(step, reason)
    with caplog.at_level(logging.WARNING, logger="worker.engine"):
        driver.step()
    assert retries(step, reason) == before + 1
    assert f"{step} of job 0 rescheduled in" in caplog.text


def test_rate_limited_poll_is_counted_and_logged_as_a_poll_retry(
    rt: Runtime, driver: Driver, provider: FakeSamsara, caplog: pytest.LogCaptureFixture
) -> None:
    provider.on("POST", "/ifta-detail/csv", httpx.Response(201, json=job("j1", "Requested")))
    provider.on("GET", "/ifta-detail/csv/j1", httpx.Response(429, headers={"Retry-After": "42"}))
    export_id = submit(rt)
    driver.step()
    step_is_counted_and_logged(driver, caplog, "poll", "rate_limited")
    polled = rt.store.get(export_id).jobs["0"]
    assert (polled.status, polled.transient_errors) == (JobStatus.POLLING, 0), "a rate limit is not an error"
    assert [kind for kind, _, _ in driver.dispatcher.sent] == ["poll"]


def test_refused_submit_is_counted_and_logged_as_a_submit_retry(
    rt: Runtime, driver: Driver, provider: FakeSamsara, caplog: pytest.LogCaptureFixture
) -> None:
    provider.on("POST", "/ifta-detail/csv", httpx.Response(503), httpx.Response(201, json=job("j1", "Requested")))
    export_id = submit(rt)
    step_is_counted_and_logged(driver, caplog, "submit", "transient")
    refused = rt.store.get(export_id).jobs["0"]
    assert (refused.status, refused.transient_errors) == (JobStatus.PENDING, 1) and "503" in (refused.message or "")
    assert [kind for kind, _, _ in driver.dispatcher.sent] == ["submit"]


def test_each_provider_and_credential_gets_its_own_gateway_and_keeps_it(rt: Runtime) -> None:
    """A shared gateway would send one provider's requests with another's rules or another account's key."""
    samsara, impact, fleet = rt.gateway("samsara", "default"), rt.gateway("impact", "default"), rt.gateway("samsara", "fleet")
    assert [(g.provider.name, g.credential_name) for g in (samsara, impact, fleet)] == [
        ("samsara", "default"),
        ("impact", "default"),
        ("samsara", "fleet"),
    ]
    assert rt.gateway("samsara", "default") is samsara, "a gateway is kept, so its HTTP client's connections are reused"


def test_a_poll_whose_watched_connection_was_lost_meanwhile_decides_again(
    rt: Runtime, driver: Driver, provider: FakeSamsara
) -> None:
    """The poll's read WATCHes on one connection and its EXEC goes on the same one after the provider
    call. Should that connection be lost meanwhile (a failover, a restart), redis-py would connect again
    and run the EXEC unwatched, over a cancel made in between: the step must read again instead."""
    script_happy_path(provider)
    export_id = submit(rt)
    driver.step()
    kind, poll_args, _ = driver.dispatcher.sent.pop(0)
    assert kind == "poll" and poll_args.provider == "samsara"

    def cancel_and_drop_connections(request: httpx.Request) -> httpx.Response:
        if request.url.path == "/ifta-detail/csv/j1":
            commands.cancel(rt, export_id)
            rt.store.redis.connection_pool.disconnect()
        return provider.handler(request)

    rt.transport = httpx.MockTransport(cancel_and_drop_connections)
    rt._gateways.clear()
    run_poll(rt, poll_args)
    record = rt.store.get(export_id)
    assert record.status is ExportStatus.CANCELLED, f"the poll's change overwrote the cancel: {record.status.value}"
    assert [kind for kind, _, _ in driver.dispatcher.sent if kind == "poll"] == []
