"""One injected fault per test, on the real worker: duplicates, expired URLs, 429/5xx, split, deadline, cancel."""

from __future__ import annotations

import math
import time

import psutil
import pytest
from celery.result import AsyncResult

from tests.integration.conftest import Sim, count_lines, day_after, unique_hour, wait_done, wait_status
from worker.api import ExportClient
from worker.dev.localstack import LocalStack
from worker.dev.simulator import SamsaraBehaviour
from worker.dispatch import DOWNLOAD_TASK, POLL_TASK
from worker.models import ExportStatus, FileTaskArgs, JobStatus, JobTaskArgs
from worker.providers import get_provider
from worker.providers.base import Operation

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


def deliver(client: ExportClient, task: str, args: JobTaskArgs | FileTaskArgs) -> AsyncResult:
    """Deliver a task message as a broker would on a duplicate; its result says when it has run."""
    dispatcher = client.rt.dispatcher
    return dispatcher.app.send_task(task, kwargs=args.model_dump(), queue=dispatcher.queue, ignore_result=False)


def test_duplicate_poll_and_download_deliveries_do_nothing_twice(client: ExportClient, sim: Sim, stack: LocalStack) -> None:
    hour = unique_hour(20)
    behave(sim, hour, processing_seconds=4, files=2, rows_per_file=50)
    export_id = client.submit("samsara", params(hour, [1]))
    wait_status(client, export_id, {"RUNNING"})
    job = client.get(export_id).record.jobs["0"]
    duplicates = [deliver(client, POLL_TASK, JobTaskArgs(export_id=export_id, job_key="0", token=job.token)) for _ in range(3)]
    view = wait_done(client, export_id, stack)
    assert view.record.status is ExportStatus.COMPLETED
    for duplicate in duplicates:
        duplicate.get(timeout=60)
    provider_job = view.record.jobs["0"].provider_job_id
    # Each duplicate holding the current token may poll once; only one of them can carry the chain on.
    assert view.record.jobs["0"].polls <= sim.stats()["jobs"][provider_job]["polls"] <= view.record.jobs["0"].polls + 3
    downloads_before = sim.stats()["jobs"][provider_job]["downloads"]
    duplicates = [
        deliver(client, DOWNLOAD_TASK, FileTaskArgs(export_id=export_id, file_key=file.key, token=file.token))
        for file in view.files
    ]
    for duplicate in duplicates:
        duplicate.get(timeout=60)
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


def job_polls(client: ExportClient, sim: Sim, export_id: str) -> int:
    """Polls the simulator saw for this export's job, whatever other tests' exports are doing."""
    provider_job = client.get(export_id).record.jobs["0"].provider_job_id
    return sim.stats()["jobs"][provider_job]["polls"]


def test_cancel_stops_polling(client: ExportClient, sim: Sim, stack: LocalStack) -> None:
    hour = unique_hour(26)
    behave(sim, hour, processing_seconds=600)
    export_id = client.submit("samsara", params(hour, [1]))
    wait_status(client, export_id, {"RUNNING"})
    client.cancel(export_id)
    at_cancel = job_polls(client, sim, export_id)
    assert stack.settings is not None
    # Every scheduled poll fires within the longest countdown: a count that stays put that long
    # has stopped; a chain that goes on polling never settles and the deadline fails the test.
    quiet = stack.settings.poll_max_seconds * (1 + stack.settings.poll_jitter) + 1
    deadline = time.monotonic() + 30
    polls, since = at_cancel, time.monotonic()
    while time.monotonic() - since < quiet:
        assert time.monotonic() < deadline, f"still polling after cancel: {polls - at_cancel} polls"
        time.sleep(0.2)
        if (now := job_polls(client, sim, export_id)) != polls:
            polls, since = now, time.monotonic()
    assert polls <= at_cancel + 1, "only a poll already in flight at the cancel may land after it"
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


def pool_processes(stack: LocalStack) -> int:
    """Worker processes that can each have one request in flight (prefork pool children)."""
    return sum(len(psutil.Process(worker.pid).children()) for worker in stack.workers)


def test_poll_rate_stays_within_samsaras_limit_across_workers(client: ExportClient, sim: Sim, stack: LocalStack) -> None:
    """30 exports polling every 0.5-3 s would send >10 polls/s; the shared limiter holds it to 5/s."""
    hour = unique_hour(29)
    behave(sim, hour, requested_seconds=8, processing_seconds=8, files=0)
    ids = [client.submit("samsara", params(hour, [1 + i % 5])) for i in range(30)]
    wait_status(client, ids[-1], {"RUNNING"})
    time.sleep(2)
    opened = time.monotonic()
    first = sim.stats()["polls"]["samsara"]
    time.sleep(8.0)
    polls = sim.stats()["polls"]["samsara"] - first
    window = time.monotonic() - opened
    # GCRA (ExportStore.spend) admits at most floor((window + tau) / T) + 1 requests in a
    # window, T = per_seconds / requests and tau = per_seconds - T; every samsara poll of the session
    # shares the bucket of credential 'default'. A poll admitted before the window may still reach the
    # simulator inside it: at most one per worker process.
    limit = get_provider("samsara").rate_limits[Operation.POLL]
    interval = limit.per_seconds / limit.requests
    tolerance = limit.per_seconds - interval
    ceiling = math.floor((window + tolerance) / interval + 1e-9) + 1 + pool_processes(stack)
    assert 2 * 8.0 <= polls <= ceiling, f"{polls} polls in {window:.1f}s (ceiling {ceiling})"
    for export_id in ids:
        assert wait_done(client, export_id, stack, timeout=120).record.status is ExportStatus.COMPLETED
