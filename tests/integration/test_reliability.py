"""One injected fault per test, on the real worker: duplicates, expired URLs, 429/5xx, split, deadline, cancel."""

from __future__ import annotations

import time

import pytest

from tests.integration.conftest import Sim, count_lines, day_after, unique_hour, wait_done, wait_status
from worker.api import ExportClient
from worker.dev.localstack import LocalStack
from worker.dev.simulator import SamsaraBehaviour
from worker.models import ExportStatus, FileTaskArgs, JobStatus, JobTaskArgs

pytestmark = pytest.mark.integration


def params(hour: str, vehicles: list[int]) -> dict:
    return {"startHour": hour, "endHour": day_after(hour), "vehicleIds": vehicles}


def behave(sim: Sim, hour: str, **behaviour) -> None:
    sim.update(samsara_behaviours={hour: SamsaraBehaviour(**behaviour).model_dump()})


def assert_rows_match_provider(view, sim: Sim) -> None:
    stats = sim.stats()["jobs"]
    expected = {f["name"]: f["recordCount"] for job in stats.values() for f in job.get("files", [])}
    for file in view.files:
        assert file.rows == expected[file.name] == count_lines(file.path), file.name


def test_duplicate_poll_and_download_deliveries_do_nothing_twice(client: ExportClient, sim: Sim, stack: LocalStack) -> None:
    hour = unique_hour(20)
    behave(sim, hour, processing_seconds=4, files=2, rows_per_file=50)
    export_id = client.submit("samsara", params(hour, [1]))
    wait_status(client, export_id, {"RUNNING"})
    job = client.get(export_id).record.jobs["0"]
    for _ in range(3):
        client.rt.dispatcher.poll(JobTaskArgs(export_id=export_id, job_key="0", token=job.token), 0)
    view = wait_done(client, export_id, stack)
    assert view.record.status is ExportStatus.COMPLETED
    provider_job = view.record.jobs["0"].provider_job_id
    assert sim.stats()["polls"]["samsara"] >= view.record.jobs["0"].polls
    downloads_before = sim.stats()["jobs"][provider_job]["downloads"]
    for file in view.files:
        client.rt.dispatcher.download(FileTaskArgs(export_id=export_id, file_key=file.key, token=file.token), 0)
    time.sleep(2)
    assert sim.stats()["jobs"][provider_job]["downloads"] == downloads_before == 2
    assert_rows_match_provider(client.get(export_id), sim)


def test_expired_download_url_is_refreshed_without_redownloading_done_files(
    client: ExportClient, sim: Sim, stack: LocalStack
) -> None:
    hour = unique_hour(21)
    behave(sim, hour, processing_seconds=1, files=1, rows_per_file=30)
    sim.fault(path_contains="/_files/samsara/", statuses=[403])
    export_id = client.submit("samsara", params(hour, [2]))
    view = wait_done(client, export_id, stack)
    assert view.record.status is ExportStatus.COMPLETED, view.record.error
    assert view.files[0].url_refreshes == 1 and view.files[0].rows == 30


def test_429_storm_honours_retry_after_and_completes(client: ExportClient, sim: Sim, stack: LocalStack) -> None:
    hour = unique_hour(22)
    behave(sim, hour, processing_seconds=1, files=1, rows_per_file=10)
    sim.fault(path_contains="/ifta-detail/csv/", method="GET", statuses=[429] * 4, retry_after="1")
    started = time.monotonic()
    export_id = client.submit("samsara", params(hour, [3]))
    view = wait_done(client, export_id, stack)
    assert view.record.status is ExportStatus.COMPLETED, view.record.error
    assert time.monotonic() - started >= 4, "four 429s with Retry-After: 1 cannot finish sooner"
    assert sim.stats()["responses_by_status"].get("429", 0) >= 4


def test_5xx_bursts_are_retried_without_a_second_provider_job(client: ExportClient, sim: Sim, stack: LocalStack) -> None:
    hour = unique_hour(23)
    behave(sim, hour, processing_seconds=1, files=1, rows_per_file=10)
    creates = sim.stats()["creates"]["samsara"]
    sim.fault(path_contains="/ifta-detail/csv", method="POST", statuses=[503, 502])
    sim.fault(path_contains="/ifta-detail/csv/", method="GET", statuses=[500, 503, 504])
    export_id = client.submit("samsara", params(hour, [4]))
    view = wait_done(client, export_id, stack)
    assert view.record.status is ExportStatus.COMPLETED, view.record.error
    assert sim.stats()["creates"]["samsara"] == creates + 1


def test_too_many_vehicles_is_split_automatically(client: ExportClient, sim: Sim, stack: LocalStack) -> None:
    hour = unique_hour(24)
    behave(sim, hour, processing_seconds=1, files=1, rows_per_file=20, max_vehicles=2)
    creates = sim.stats()["creates"]["samsara"]
    export_id = client.submit("samsara", params(hour, [1, 2, 3, 4, 5]))
    view = wait_done(client, export_id, stack)
    assert view.record.status is ExportStatus.COMPLETED, view.record.error
    leaves = [job for job in view.record.jobs.values() if job.status is JobStatus.SUCCEEDED]
    assert sorted(v for job in leaves for v in job.params["vehicleIds"]) == [1, 2, 3, 4, 5]
    assert all(len(job.params["vehicleIds"]) <= 2 for job in leaves)
    assert view.record.jobs["0"].status is JobStatus.SPLIT
    assert sim.stats()["creates"]["samsara"] == creates + 1 + 2 + 2
    assert view.record.rows == 20 * len(leaves)
    assert_rows_match_provider(view, sim)


def test_deadline_fails_a_job_that_never_finishes(client: ExportClient, sim: Sim, stack: LocalStack) -> None:
    hour = unique_hour(25)
    behave(sim, hour, processing_seconds=600)
    export_id = client.submit("samsara", params(hour, [1]), deadline_seconds=3)
    view = wait_done(client, export_id, stack, timeout=30)
    assert view.record.status is ExportStatus.FAILED and "deadline exceeded" in (view.record.error or "")


def test_cancel_stops_polling(client: ExportClient, sim: Sim, stack: LocalStack) -> None:
    hour = unique_hour(26)
    behave(sim, hour, processing_seconds=600)
    export_id = client.submit("samsara", params(hour, [1]))
    wait_status(client, export_id, {"RUNNING"})
    client.cancel(export_id)
    time.sleep(1)
    polls = sim.stats()["polls"]["samsara"]
    time.sleep(4)
    assert sim.stats()["polls"]["samsara"] == polls
    assert client.get(export_id).record.status is ExportStatus.CANCELLED


def test_job_missing_at_provider_fails_with_its_id(client: ExportClient, sim: Sim, stack: LocalStack) -> None:
    hour = unique_hour(27)
    behave(sim, hour, processing_seconds=5)
    sim.fault(path_contains="/ifta-detail/csv/", method="GET", statuses=[404])
    export_id = client.submit("samsara", params(hour, [1]))
    view = wait_done(client, export_id, stack)
    job_id = view.record.jobs["0"].provider_job_id
    assert view.record.status is ExportStatus.FAILED and f"job {job_id!r} was not found" in (view.record.error or "")


def test_rejected_credential_fails_fast_naming_it(client: ExportClient, sim: Sim, stack: LocalStack) -> None:
    hour = unique_hour(28)
    sim.fault(path_contains="/ifta-detail/csv", method="POST", statuses=[401])
    export_id = client.submit("samsara", params(hour, [1]))
    view = wait_done(client, export_id, stack, timeout=20)
    assert view.record.status is ExportStatus.FAILED and "credential 'default'" in (view.record.error or "")


def test_poll_rate_stays_within_samsaras_limit_across_workers(client: ExportClient, sim: Sim, stack: LocalStack) -> None:
    """30 exports polling every 0.5-3 s would send >10 polls/s; the shared limiter holds it to 5/s."""
    hour = unique_hour(29)
    behave(sim, hour, requested_seconds=8, processing_seconds=8, files=0)
    ids = [client.submit("samsara", params(hour, [1 + i % 5])) for i in range(30)]
    wait_status(client, ids[-1], {"RUNNING"})
    time.sleep(2)
    window = 8.0
    first = sim.stats()["polls"]["samsara"]
    time.sleep(window)
    polls = sim.stats()["polls"]["samsara"] - first
    # GCRA admits 5/s plus a burst of 5; one more for a poll in flight at the window's edge.
    ceiling = 5 * window + 5 + 1
    assert 2 * window <= polls <= ceiling, f"{polls / window:.1f} polls/s over {window:.0f}s"
    for export_id in ids:
        assert wait_done(client, export_id, stack, timeout=120).record.status is ExportStatus.COMPLETED
