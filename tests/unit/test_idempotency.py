"""An idempotency key stands for one request: the same request gets the same export, a different one is refused.

As Stripe does: reusing a key with other parameters is a caller's mistake that would hand back the wrong
data, so it raises ``InvalidRequest`` naming the key and what differs. Beat's per-period keys keep
working: every firing in a period renders the same request.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path

import pytest

from tests.conftest import make_settings
from worker import remote
from worker.api import ExportClient
from worker.dev.testing import RecordingDispatcher
from worker.engine.context import Runtime
from worker.errors import InvalidRequest
from worker.store import ExportStore

PARAMS = {"startHour": "2026-11-23T00:00:00Z", "endHour": "2026-11-24T00:00:00Z", "vehicleIds": [1, 2]}


@pytest.fixture
def client(tmp_path: Path, store: ExportStore, dispatcher: RecordingDispatcher) -> ExportClient:
    schedules = tmp_path / "schedules.json"
    daily = {
        "name": "daily",
        "provider": "samsara",
        "cron": {"minute": "0", "hour": "2"},
        "params": {"vehicleIds": [7]},
        "period_params": {"startHour": "{start:%Y-%m-%dT%H:00:00Z}", "endHour": "{end:%Y-%m-%dT%H:00:00Z}"},
    }
    schedules.write_text(json.dumps({"schedules": [daily]}))
    return ExportClient(Runtime(settings=make_settings(tmp_path, schedule_file=schedules), store=store, dispatcher=dispatcher))


def test_the_same_request_under_a_used_key_returns_its_export(client: ExportClient, dispatcher: RecordingDispatcher) -> None:
    first = client.submit("samsara", PARAMS, idempotency_key="fleet-a-23")
    equivalent = {**PARAMS, "vehicleIds": "1,2"}  # another spelling of the same validated request
    assert client.submit("samsara", equivalent, idempotency_key="fleet-a-23") == first
    assert [kind for kind, _, _ in dispatcher.take()] == ["submit"]


@pytest.mark.parametrize(
    ("changes", "named"),
    [
        ({"params": {**PARAMS, "endHour": "2026-11-25T00:00:00Z"}}, "params.endHour"),
        ({"params": {**PARAMS, "vehicleIds": [1, 2, 3], "vehicleTagIds": "9"}}, "params.vehicleIds, params.vehicleTagIds"),
        ({"sink": "parquet"}, "sink"),
        ({"sink": "postgres", "sink_options": {"table": "other"}}, "sink, sink_options"),
        ({"credential": "fleet-b"}, "credential"),
        ({"callback": {"task": "app.done"}}, "callback"),
    ],
)
def test_a_different_request_under_a_used_key_is_refused_naming_the_key_and_what_differs(
    client: ExportClient, dispatcher: RecordingDispatcher, changes: dict, named: str
) -> None:
    first = client.submit("samsara", PARAMS, idempotency_key="fleet-a-23")
    dispatcher.take()
    request = {"params": PARAMS} | changes
    with pytest.raises(InvalidRequest) as refused:
        client.submit("samsara", request.pop("params"), idempotency_key="fleet-a-23", **request)
    message = str(refused.value)
    assert f"idempotency key 'fleet-a-23' was already used for export {first}" in message
    assert f"({named} differ)" in message and "use a new key" in message
    assert dispatcher.take() == [] and client.rt.store.list_ids(10) == [first]


def test_a_different_deadline_is_the_same_request(client: ExportClient) -> None:
    """Only what the caller asks to be exported counts; how long to wait for it is not part of it."""
    first = client.submit("samsara", PARAMS, idempotency_key="k", deadline_seconds=60)
    assert client.submit("samsara", PARAMS, idempotency_key="k", deadline_seconds=120) == first


def test_by_task_name_a_reused_key_with_other_params_fails_the_task(client: ExportClient) -> None:
    kwargs = {"provider": "samsara", "params": PARAMS, "idempotency_key": "fleet-a-23"}
    first = remote.submit_export(client, kwargs, task_id="t-1")
    assert remote.submit_export(client, kwargs, task_id="t-2") == first
    other = {**kwargs, "params": {**PARAMS, "startHour": "2026-11-22T00:00:00Z"}}
    with pytest.raises(InvalidRequest, match=r"idempotency key 'fleet-a-23' .*\(params.startHour differ\)"):
        remote.submit_export(client, other, task_id="t-3")


def test_every_run_of_a_schedule_in_one_period_is_one_export(client: ExportClient, dispatcher: RecordingDispatcher) -> None:
    at_two = client.run_schedule("daily", now=datetime(2026, 11, 25, 2, 0, tzinfo=UTC))
    rerun = client.run_schedule("daily", now=datetime(2026, 11, 25, 23, 59, tzinfo=UTC))
    next_day = client.run_schedule("daily", now=datetime(2026, 11, 26, 2, 0, tzinfo=UTC))
    assert at_two == rerun != next_day
    assert [kind for kind, _, _ in dispatcher.take()] == ["submit", "submit"]
