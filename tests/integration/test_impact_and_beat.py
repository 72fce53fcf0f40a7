"""impact.com through the same engine, both providers at once, and beat's once-per-period guarantee."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from tests.integration.conftest import ON_BOTH_BROKERS, Sim, count_lines, day_after, unique_hour, wait_done
from worker.api import ExportClient
from worker.dev.localstack import SIM_IMPACT_CREDENTIAL, LocalStack
from worker.dev.simulator import ImpactBehaviour, SamsaraBehaviour
from worker.models import ExportStatus
from worker.schedules import RUN_SCHEDULE_TASK

pytestmark = [pytest.mark.integration, ON_BOTH_BROKERS]


def impact(sim: Sim, report: str, **behaviour) -> dict:
    sim.update(impact_behaviours={report: ImpactBehaviour(**behaviour).model_dump()})
    return {"report_id": report, "report_params": DAY}


DAY = {"START_DATE": "2026-11-01", "END_DATE": "2026-11-01"}


def run(client: ExportClient, stack: LocalStack, params: dict, timeout: float = 60):
    export_id = client.submit("impact", params, credential=SIM_IMPACT_CREDENTIAL)
    return wait_done(client, export_id, stack, timeout=timeout)


def all_events(client: ExportClient, export_id: str) -> list[dict]:
    """Every event of one export: the shared stream is read to its end, 100 entries at a time."""
    since, events = "0", []
    while True:
        last, batch = client.read_events(export_id, since=since, block_ms=None)
        events += batch
        if last == since:
            return events
        since = last


def test_error_twice_then_completed_is_polled_through(client: ExportClient, sim: Sim, stack: LocalStack) -> None:
    report = f"errors-twice-{stack.run_id}"
    # Phases longer than the slowest poll (3.6 s here), so every phase is observed.
    view = run(client, stack, impact(sim, report, error_phases=2, error_retry_seconds=4, running_seconds=5, rows=40))
    assert view.record.status is ExportStatus.COMPLETED, view.record.error
    assert view.files[0].rows == 40 == count_lines(view.files[0].path)
    events = all_events(client, view.record.id)
    seen = [e.get("provider_status") for e in events if e["type"] == "job_status"]
    assert seen.count("ERROR") == 2 and seen[-1] == "COMPLETED"
    assert view.record.jobs["0"].percent_complete == 100


def test_five_errors_end_failed_with_the_status_message(client: ExportClient, sim: Sim, stack: LocalStack) -> None:
    report = f"errors-five-{stack.run_id}"
    view = run(client, stack, impact(sim, report, error_phases=5, error_retry_seconds=1, replayable=True), timeout=90)
    assert view.record.status is ExportStatus.FAILED
    assert view.record.error and "failed" in view.record.error
    retried = client.retry(view.record.id)
    assert retried.status is ExportStatus.RUNNING
    again = wait_done(client, view.record.id, stack)
    assert again.record.status is ExportStatus.COMPLETED, again.record.error


def test_cancelled_job_fails_and_cannot_be_replayed_when_not_replayable(
    client: ExportClient, sim: Sim, stack: LocalStack
) -> None:
    from worker.errors import ReplayNotAllowed

    report = f"cancel-{stack.run_id}"
    view = run(client, stack, impact(sim, report, cancel=True, replayable=False))
    assert view.record.status is ExportStatus.FAILED and "cancelled" in (view.record.error or "")
    with pytest.raises(ReplayNotAllowed, match="not Replayable"):
        client.retry(view.record.id)


def test_tracking_an_existing_job_creates_nothing(client: ExportClient, sim: Sim, stack: LocalStack) -> None:
    report = f"existing-{stack.run_id}"
    impact(sim, report, rows=12)
    existing = sim.http.post("/_sim/impact/jobs", json={"report_id": report}).raise_for_status().json()
    creates = sim.stats()["creates"]["impact"]
    view = run(client, stack, {"job_id": existing["Id"]})
    assert view.record.status is ExportStatus.COMPLETED and view.record.rows == 12
    assert sim.stats()["creates"]["impact"] == creates


def test_samsara_and_impact_exports_run_side_by_side(client: ExportClient, sim: Sim, stack: LocalStack) -> None:
    hour = unique_hour(40)
    sim.update(samsara_behaviours={hour: SamsaraBehaviour(processing_seconds=2, files=2, rows_per_file=30).model_dump()})
    report = f"side-by-side-{stack.run_id}"
    impact(sim, report, running_seconds=2, rows=25)
    samsara_id = client.submit("samsara", {"startHour": hour, "endHour": day_after(hour), "vehicleIds": [1]})
    impact_id = client.submit("impact", {"report_id": report, "report_params": DAY}, credential=SIM_IMPACT_CREDENTIAL)
    first, second = wait_done(client, samsara_id, stack), wait_done(client, impact_id, stack)
    assert (first.record.status, second.record.status) == (ExportStatus.COMPLETED, ExportStatus.COMPLETED)
    assert (first.record.rows, second.record.rows) == (60, 25)


def test_beat_firing_twice_in_one_period_creates_one_provider_job(client: ExportClient, sim: Sim, stack: LocalStack) -> None:
    creates = sim.stats()["creates"]["samsara"]
    firings = [
        client.rt.dispatcher.app.send_task(
            RUN_SCHEDULE_TASK, kwargs={"name": "sim-daily"}, queue=stack.settings.queue, ignore_result=False
        )
        for _ in range(2)
    ]
    yesterday = (datetime.now(UTC) - timedelta(days=1)).strftime("%Y%m%d")
    export_ids = {firing.get(timeout=60) for firing in firings}
    assert len(export_ids) == 1, "two beat firings in one period must share one export"
    scheduled = [r for r in client.recent(200) if r.schedule == "sim-daily"]
    assert [r.id for r in scheduled] == list(export_ids)
    view = wait_done(client, scheduled[0].id, stack)
    assert view.record.status is ExportStatus.COMPLETED
    assert view.record.idempotency_key == f"schedule:sim-daily:{yesterday}T000000Z"
    assert sim.stats()["creates"]["samsara"] == creates + 1
