"""Bad data from the provider never loses good rows; secrets (tokens, database passwords) never leave the worker's settings."""

from __future__ import annotations

import json

import pytest

from tests.integration.conftest import DATABASE_PASSWORD, PG_SCHEMA, Sim, count_lines, day_after, unique_hour, wait_done
from worker.api import ExportClient
from worker.dev.localstack import LocalStack
from worker.dev.simulator import SamsaraBehaviour
from worker.models import ExportStatus

pytestmark = pytest.mark.integration


def test_malformed_rows_are_quarantined_and_good_rows_all_written(client: ExportClient, sim: Sim, stack: LocalStack) -> None:
    hour = unique_hour(60)
    sim.update(samsara_behaviours={hour: SamsaraBehaviour(files=1, rows_per_file=100, bad_rows_every=10).model_dump()})
    view = wait_done(client, client.submit("samsara", {"startHour": hour, "endHour": day_after(hour), "vehicleIds": [1]}), stack)
    assert view.record.status is ExportStatus.COMPLETED, view.record.error
    file = view.files[0]
    assert (file.rows, file.quarantined, file.record_count) == (90, 10, 100)
    assert count_lines(file.path) == 90
    bad = [json.loads(line) for line in open(file.quarantine_path)]
    assert [row["line"] for row in bad] == [11 + 10 * i for i in range(10)]
    assert all(row["file"] == file.name and row["reason"] for row in bad)
    assert view.record.quarantined == 10 and view.record.warnings == []


def test_truncated_download_is_retried_and_never_half_written(client: ExportClient, sim: Sim, stack: LocalStack) -> None:
    hour = unique_hour(61)
    sim.update(samsara_behaviours={hour: SamsaraBehaviour(files=1, rows_per_file=5000).model_dump()})
    sim.fault(path_contains="/_files/samsara/", truncate=2)
    view = wait_done(client, client.submit("samsara", {"startHour": hour, "endHour": day_after(hour), "vehicleIds": [2]}), stack)
    assert view.record.status is ExportStatus.COMPLETED, view.record.error
    assert view.files[0].attempts == 2 and view.files[0].rows == 5000 == count_lines(view.files[0].path)
    job_id = view.record.jobs["0"].provider_job_id
    assert sim.stats()["jobs"][job_id]["downloads"] == 3


def test_no_token_in_redis_task_messages_results_or_logs(client: ExportClient, sim: Sim, stack: LocalStack) -> None:
    hour = unique_hour(62)
    export_id = client.submit("samsara", {"startHour": hour, "endHour": day_after(hour), "vehicleIds": [3]})
    loaded_id = client.submit(
        "samsara",
        {"startHour": hour, "endHour": day_after(hour), "vehicleIds": [4]},
        sink="postgres",
        sink_options={"database": "test", "schema": PG_SCHEMA, "table": "secrets_scan"},
    )
    wait_done(client, export_id, stack)
    assert wait_done(client, loaded_id, stack).record.rows > 0
    config = sim.config()
    secrets = [config.samsara_token.encode(), config.impact_auth_token.encode(), DATABASE_PASSWORD.encode()]
    redis = client.rt.store.redis
    scanned = 0
    for pattern in (f"{stack.settings.key_prefix}:*", f"{stack.settings.queue}*", "unacked*", "celery-task-meta-*"):
        for key in redis.scan_iter(match=pattern, count=1000):
            kind = redis.type(key)
            if kind == b"string":
                values = [redis.get(key)]
            elif kind == b"hash":
                values = list(redis.hgetall(key).values())
            elif kind == b"list":
                values = redis.lrange(key, 0, -1)
            elif kind in (b"set",):
                values = list(redis.smembers(key))
            elif kind == b"zset":
                values = [member for member, _ in redis.zrange(key, 0, -1, withscores=True)]
            elif kind == b"stream":
                values = [
                    json.dumps({k.decode(): v.decode() for k, v in fields.items()}).encode() for _, fields in redis.xrange(key)
                ]
            else:
                values = []
            scanned += 1
            for value in [key, *values]:
                assert value is None or not any(secret in value for secret in secrets), key
    assert scanned > 5
    logs = stack.logs().encode()
    assert logs and not any(secret in logs for secret in secrets)
    for view in (client.get(export_id), client.get(loaded_id)):
        assert not any(secret in view.model_dump_json().encode() for secret in secrets)
