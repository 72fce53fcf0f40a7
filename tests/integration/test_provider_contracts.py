"""The exports of issue 10 end to end on the real Redis and a real worker, against the spec-faithful
simulator: every row written, nothing quarantined.

Samsara: plain, external ids, 1500 vehicles over 48 h (planned into two jobs), 62 days (three
month-long jobs), all with gzipped ``output-NNN.csv.gz`` files and the snake_case header.
impact.com: a report export downloaded with ``Mode=Stream``, and a refresh of it by ``retry``.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

import pytest

from tests.integration.conftest import Sim, count_lines, unique_hour, wait_done
from worker.api import ExportClient, ExportView
from worker.dev.localstack import SIM_IMPACT_CREDENTIAL, LocalStack
from worker.dev.simulator import ImpactBehaviour, SamsaraBehaviour
from worker.dev.simulator.samsara import COLUMNS, external_vehicle_id
from worker.models import ExportStatus, FileStatus, JobStatus
from worker.providers.samsara import add_month

pytestmark = pytest.mark.integration

FAST = {"requested_seconds": 0.2, "processing_seconds": 0.5}
VIN = "samsara.vin:1HGBH41JXMN109186"


def hours_after(hour: str, hours: int) -> str:
    start = datetime.strptime(hour, "%Y-%m-%dT%H:00:00Z").replace(tzinfo=UTC)
    return (start + timedelta(hours=hours)).strftime("%Y-%m-%dT%H:00:00Z")


def behave(sim: Sim, hours: list[str], **behaviour) -> None:
    spec = SamsaraBehaviour(**{**FAST, **behaviour}).model_dump()
    sim.update(samsara_behaviours={hour: spec for hour in hours})


def assert_every_row_written(view: ExportView) -> None:
    assert view.record.status is ExportStatus.COMPLETED, view.record.error
    assert view.record.quarantined == 0 and all(f.status is FileStatus.DONE for f in view.files)
    for file in view.files:
        assert file.path is not None and count_lines(file.path) == file.rows == file.record_count
    assert view.record.rows == sum(f.record_count or 0 for f in view.files)


def test_samsara_plain_export_of_gzipped_files(client: ExportClient, sim: Sim, stack: LocalStack) -> None:
    hour = unique_hour(101)
    behave(sim, [hour], files=3, rows_per_file=400)
    export_id = client.submit("samsara", {"startHour": hour, "endHour": hours_after(hour, 24), "vehicleIds": [1, 2, 3]})
    view = wait_done(client, export_id, stack)
    assert_every_row_written(view)
    assert view.record.rows == 1200 and view.record.warnings == []
    assert [f.name for f in view.files] == ["output-001.csv.gz", "output-002.csv.gz", "output-003.csv.gz"]
    assert all(f.path and f.path.endswith(".csv.jsonl") for f in view.files)  # the .gz is dropped
    assert all(0 < f.bytes_downloaded < f.bytes for f in view.files)  # compressed on the wire, parsed inflated
    row = json.loads(open(view.files[0].path).readline())
    assert list(row) == list(COLUMNS) and row["device_id"] in (1, 2, 3) and isinstance(row["end_lng"], float)


def test_samsara_external_ids_and_the_72_hour_warning(client: ExportClient, sim: Sim, stack: LocalStack) -> None:
    recent = (datetime.now(UTC) - timedelta(hours=30)).strftime("%Y-%m-%dT%H:00:00Z")
    behave(sim, [recent], files=1, rows_per_file=50)
    params = {"startHour": recent, "endHour": hours_after(recent, 24), "vehicleIds": f"1234,{VIN}"}
    view = wait_done(client, client.submit("samsara", params), stack)
    assert_every_row_written(view)
    assert view.record.params["vehicleIds"] == [1234, VIN]
    job_id = view.record.jobs["0"].provider_job_id
    assert sim.stats()["jobs"][job_id]["vehicleIds"] == [1234, external_vehicle_id(VIN)]
    assert any("data may still change" in warning for warning in view.record.warnings)


def test_samsara_1500_vehicles_over_48_hours_become_two_jobs(client: ExportClient, sim: Sim, stack: LocalStack) -> None:
    hour = unique_hour(102)
    behave(sim, [hour], files=2, rows_per_file=300)
    creates = sim.stats()["creates"]["samsara"]
    params = {"startHour": hour, "endHour": hours_after(hour, 48), "vehicleIds": list(range(1, 1501))}
    view = wait_done(client, client.submit("samsara", params), stack)
    assert_every_row_written(view)
    jobs = view.record.jobs
    assert jobs["0"].status is JobStatus.SPLIT and sorted(jobs) == ["0", "0.0", "0.1"]
    batches = [jobs[key].params["vehicleIds"] for key in ("0.0", "0.1")]
    assert [len(batch) for batch in batches] == [750, 750] and sorted(batches[0] + batches[1]) == list(range(1, 1501))
    assert sim.stats()["creates"]["samsara"] == creates + 2
    assert view.record.rows == 2 * 2 * 300 and len({f.safe_name for f in view.files}) == 4


def test_samsara_62_days_become_three_month_long_jobs(client: ExportClient, sim: Sim, stack: LocalStack) -> None:
    start = datetime.strptime(unique_hour(103), "%Y-%m-%dT%H:00:00Z").replace(tzinfo=UTC)
    end = start + timedelta(days=62)
    tiles = [start, add_month(start), add_month(add_month(start))]
    behave(sim, [t.strftime("%Y-%m-%dT%H:00:00Z") for t in tiles], files=1, rows_per_file=120)
    params = {"startHour": start.isoformat(), "endHour": end.isoformat(), "vehicleIds": [7]}
    view = wait_done(client, client.submit("samsara", params), stack)
    assert_every_row_written(view)
    children = [view.record.jobs[key] for key in ("0.0", "0.1", "0.2")]
    spans = [(job.params["startHour"], job.params["endHour"]) for job in children]
    assert spans[0][0] == params["startHour"].replace("+00:00", "Z") and spans[-1][1] == params["endHour"].replace("+00:00", "Z")
    assert all(a[1] == b[0] for a, b in zip(spans, spans[1:], strict=False))
    assert view.record.rows == 3 * 120


def test_impact_report_export_streams_and_retry_refreshes_it(client: ExportClient, sim: Sim, stack: LocalStack) -> None:
    report = f"contract-report-{stack.run_id}"
    sim.update(impact_behaviours={report: ImpactBehaviour(queued_seconds=0.2, running_seconds=0.5, rows=80).model_dump()})
    params = {"report_id": report, "report_params": {"START_DATE": "2026-11-01", "END_DATE": "2026-11-01", "SUBAID": "10306"}}
    export_id = client.submit("impact", params, credential=SIM_IMPACT_CREDENTIAL)
    view = wait_done(client, export_id, stack)
    assert view.record.status is ExportStatus.COMPLETED, view.record.error
    assert view.record.rows == 80 == count_lines(view.files[0].path) and view.record.quarantined == 0
    assert view.files[0].url.endswith("/Download?Mode=Stream")
    job_id = view.record.jobs["0"].provider_job_id
    assert sim.stats()["jobs"][job_id]["downloads"] == 1
    refreshed = client.retry(export_id)  # a COMPLETED report export is replayed, which refreshes it
    assert refreshed.status is ExportStatus.RUNNING
    again = wait_done(client, export_id, stack)
    assert again.record.status is ExportStatus.COMPLETED and again.record.rows == 80
    stats = sim.stats()["jobs"][job_id]
    assert stats["replays"] == 1 and stats["downloads"] == 2
