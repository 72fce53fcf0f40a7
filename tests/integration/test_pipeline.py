"""End to end on a real worker process: submit, countdown polls, fan-out downloads, JSONL output."""

from __future__ import annotations

import json
import time

import pytest

from tests.integration.conftest import ON_BOTH_BROKERS, Sim, count_lines, day_after, unique_hour, wait_done
from worker.api import ExportClient
from worker.dev.localstack import LocalStack
from worker.dev.simulator import SamsaraBehaviour
from worker.dev.simulator.samsara import COLUMNS as SAMSARA_COLUMNS
from worker.errors import InvalidRequest
from worker.models import ExportStatus, FileStatus

pytestmark = [pytest.mark.integration, ON_BOTH_BROKERS]


def samsara_params(hour: str, vehicles: list[int] | None = None) -> dict:
    params: dict = {"startHour": hour, "endHour": day_after(hour)}
    if vehicles is not None:
        params["vehicleIds"] = vehicles
    return params


def test_export_with_several_files_writes_every_row_once(client: ExportClient, sim: Sim, stack: LocalStack) -> None:
    hour = unique_hour(1)
    sim.update(samsara_behaviours={hour: SamsaraBehaviour(files=4, rows_per_file=250, processing_seconds=1).model_dump()})
    export_id = client.submit("samsara", samsara_params(hour, [1, 2, 3]))
    view = wait_done(client, export_id, stack)
    assert view.record.status is ExportStatus.COMPLETED, view.record.error
    assert len(view.files) == 4 and all(f.status is FileStatus.DONE for f in view.files)
    for file in view.files:
        assert file.record_count == 250 and file.rows == 250
        assert file.path is not None and count_lines(file.path) == 250
    assert view.record.rows == 1000 and view.record.warnings == []
    first = json.loads(open(view.files[0].path).readline())
    assert isinstance(first["device_id"], int) and first["device_id"] in (1, 2, 3)
    assert isinstance(first["distance_meters"], float) and isinstance(first["start_ms"], int)
    assert set(first) == set(SAMSARA_COLUMNS)  # the header is the schema: every column kept


def test_failed_job_fails_the_export_with_the_provider_reason(client: ExportClient, sim: Sim, stack: LocalStack) -> None:
    hour = unique_hour(2)
    sim.update(
        samsara_behaviours={hour: SamsaraBehaviour(outcome="Failed", failure_details="Data warehouse unavailable").model_dump()}
    )
    export_id = client.submit("samsara", samsara_params(hour, [1]))
    view = wait_done(client, export_id, stack)
    assert view.record.status is ExportStatus.FAILED
    assert "Data warehouse unavailable" in (view.record.error or "")
    assert view.files == []


def test_long_processing_job_is_polled_by_countdown_until_done(client: ExportClient, sim: Sim, stack: LocalStack) -> None:
    hour = unique_hour(3)
    sim.update(samsara_behaviours={hour: SamsaraBehaviour(requested_seconds=1, processing_seconds=6, files=1).model_dump()})
    export_id = client.submit("samsara", samsara_params(hour, [4]))
    view = wait_done(client, export_id, stack)
    assert view.record.status is ExportStatus.COMPLETED, view.record.error
    assert view.record.jobs["0"].polls >= 3
    job_id = view.record.jobs["0"].provider_job_id
    assert sim.stats()["jobs"][job_id]["status"] == "Completed"


def test_same_idempotency_key_creates_one_provider_job(client: ExportClient, sim: Sim, stack: LocalStack) -> None:
    hour = unique_hour(4)
    before = sim.stats()["creates"]["samsara"]
    first = client.submit("samsara", samsara_params(hour, [1]), idempotency_key=f"idem-{stack.run_id}")
    second = client.submit("samsara", samsara_params(hour, [1]), idempotency_key=f"idem-{stack.run_id}")
    assert first == second
    wait_done(client, first, stack)
    assert sim.stats()["creates"]["samsara"] == before + 1


def test_completion_callback_reaches_the_callers_queue(client: ExportClient, sim: Sim, stack: LocalStack) -> None:
    hour = unique_hour(5)
    queue = f"caller-{stack.run_id}"
    export_id = client.submit(
        "samsara",
        samsara_params(hour, [2]),
        callback={"task": "caller.on_export_done", "args": ["batch-7"], "queue": queue},
    )
    wait_done(client, export_id, stack)
    # The callback is sent after the EXEC that completes the export (save, then dispatch): wait for it.
    deadline = time.monotonic() + 10
    while (message := stack.take_message(queue)) is None and time.monotonic() < deadline:
        time.sleep(0.1)
    assert message is not None, "no callback message on the caller's queue"
    assert message.headers["task"] == "caller.on_export_done"
    args, kwargs, _embed = message.payload
    assert args == ["batch-7"] and kwargs == {"export_id": export_id, "status": "COMPLETED"}


def test_bad_parameters_are_refused_before_reaching_redis(client: ExportClient, stack: LocalStack) -> None:
    before = len(client.rt.store.list_ids(10_000))
    with pytest.raises(InvalidRequest, match="startHour .* must be before endHour"):
        client.submit("samsara", {"startHour": "2026-11-24T00:00:00Z", "endHour": "2026-11-23T00:00:00Z"})
    with pytest.raises(InvalidRequest, match="unknown provider"):
        client.submit("nope", {})
    assert len(client.rt.store.list_ids(10_000)) == before


def test_small_export_to_the_redis_stream_sink(client: ExportClient, sim: Sim, stack: LocalStack) -> None:
    hour = unique_hour(6)
    sim.update(samsara_behaviours={hour: SamsaraBehaviour(files=2, rows_per_file=40).model_dump()})
    export_id = client.submit("samsara", samsara_params(hour, [5]), sink="redis_stream")
    view = wait_done(client, export_id, stack)
    assert view.record.status is ExportStatus.COMPLETED, view.record.error
    redis = client.rt.store.redis
    for file in view.files:
        entries = redis.xrange(client.rt.store.records_key(export_id, file.key))
        assert len(entries) == 40 == file.record_count
        assert json.loads(entries[0][1][b"row"])["device_id"] == 5
