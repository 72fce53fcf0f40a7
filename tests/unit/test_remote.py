"""The public tasks other applications call by name: same validation as the API, stable names, results kept."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.conftest import make_settings
from worker import remote
from worker.api import ExportClient
from worker.dev.testing import RecordingDispatcher
from worker.engine.context import Runtime
from worker.errors import InvalidRequest
from worker.store import ExportStore

PARAMS = {"startHour": "2026-11-23T00:00:00Z", "endHour": "2026-11-24T00:00:00Z", "vehicleIds": [1]}


@pytest.fixture
def client(tmp_path: Path, store: ExportStore, dispatcher: RecordingDispatcher) -> ExportClient:
    return ExportClient(Runtime(settings=make_settings(tmp_path), store=store, dispatcher=dispatcher))


def test_submit_returns_the_export_id_and_one_key_is_one_export(client: ExportClient, dispatcher: RecordingDispatcher) -> None:
    kwargs = {"provider": "samsara", "params": PARAMS, "idempotency_key": "fleet-a-1", "sink": "redis_stream"}
    first = remote.submit_export(client, kwargs, task_id="t-1")
    assert remote.submit_export(client, kwargs, task_id="t-2") == first
    record = client.get(first).record
    assert (record.idempotency_key, record.sink, record.credential) == ("fleet-a-1", "redis_stream", "default")
    assert [kind for kind, _, _ in dispatcher.take()] == ["submit"]


def test_a_redelivered_message_without_a_key_is_still_one_export(client: ExportClient) -> None:
    kwargs = {"provider": "samsara", "params": PARAMS}
    first = remote.submit_export(client, kwargs, task_id="5f0c-redelivered")
    assert remote.submit_export(client, kwargs, task_id="5f0c-redelivered") == first
    assert remote.submit_export(client, kwargs, task_id="another-message") != first


def test_sink_options_and_deadline_reach_the_export_as_the_api_takes_them(client: ExportClient) -> None:
    kwargs = {
        "provider": "samsara",
        "params": PARAMS,
        "sink": "postgres",
        "sink_options": {"database": "warehouse", "schema": "raw", "table": "ifta"},
        "deadline_seconds": 600,
    }
    record = client.get(remote.submit_export(client, kwargs, task_id="t-pg")).record
    assert (record.sink_options.database, record.sink_options.schema_name, record.sink_options.table) == (
        "warehouse",
        "raw",
        "ifta",
    )
    assert record.deadline_at - record.created_at == pytest.approx(600)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"provider": "nope", "params": {}}, "unknown provider"),
        ({"provider": "samsara", "params": {**PARAMS, "endHour": "2026-11-22T00:00:00Z"}}, "must be before endHour"),
        ({"provider": "samsara", "params": PARAMS, "sink": "s3"}, "unknown sink"),
        ({"provider": "samsara", "params": PARAMS, "callback": {"args": []}}, "invalid callback"),
        ({"provider": "samsara", "params": PARAMS, "deadline": 5}, "deadline: Extra inputs are not permitted"),
        ({"provider": "samsara"}, "params: Field required"),
        ({"provider": "samsara", "params": "startHour=x"}, "params: Input should be a valid dictionary"),
        ({"provider": "samsara", "params": PARAMS, "sink": "postgres", "sink_options": {"table": "Bad Name"}}, "table"),
    ],
)
def test_bad_requests_fail_with_the_api_message_and_store_nothing(client: ExportClient, kwargs: dict, message: str) -> None:
    with pytest.raises(InvalidRequest, match=message):
        remote.submit_export(client, kwargs, task_id="t-bad")
    assert client.rt.store.list_ids(100) == []


def test_public_tasks_are_registered_under_their_stable_names_and_keep_results() -> None:
    import worker.tasks  # noqa: F401 - registers the tasks
    from worker.app import app

    for name in ("worker.submit_export", "worker.get_export"):
        assert app.tasks[name].ignore_result is False, name
    assert app.conf.task_ignore_result is True, "internal steps keep results out of the backend"
