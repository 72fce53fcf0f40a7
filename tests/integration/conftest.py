"""Integration fixtures: a real Celery worker process, Redis and the provider simulator over loopback.

Redis is the real one at 127.0.0.1:6379. Locally, when it is not running, the embedded fake stands
in; in CI (``CI=true``) a missing Redis is an error, never a silent fallback or a skip. The broker
is Redis unless a module parametrizes ``broker`` (``ON_BOTH_BROKERS``): then its tests run once on
Redis and once on the RabbitMQ at 127.0.0.1:5672, which must be running (no fallback, no skip).
"""

from __future__ import annotations

import csv
import gzip
import io
import json
import os
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from typing import Any

import httpx
import pytest

from tests.pg import TEST_DATABASE_URL, scratch_schema, unique_schema
from worker.api import ExportClient
from worker.dev.localstack import Broker, LocalStack
from worker.dev.simulator import SimulatorConfig
from worker.parsing.schema import ColumnType, RowSchema

REQUIRE_REAL_REDIS = os.environ.get("CI", "").lower() in ("1", "true", "yes") or bool(os.environ.get("REQUIRE_REAL_REDIS"))
BROKERS: list[Broker] = ["redis", "rabbitmq"]
ON_BOTH_BROKERS = pytest.mark.parametrize("broker", BROKERS, indirect=True, scope="session")
"""Mark a module with this to run its tests against the session stack of each broker."""


class Sim:
    """Test-side handle on the simulator's control endpoints."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.http = httpx.Client(base_url=url, timeout=10)

    def config(self) -> SimulatorConfig:
        return SimulatorConfig.model_validate(self.http.get("/_sim/config").raise_for_status().json())

    def update(self, **changes: Any) -> None:
        """Merge changes into the live config (behaviour maps are merged key by key)."""
        current = self.config().model_dump()
        for key, value in changes.items():
            if isinstance(value, dict) and isinstance(current.get(key), dict) and key.endswith("behaviours"):
                current[key].update(value)
            else:
                current[key] = value
        self.http.post("/_sim/config", json=SimulatorConfig.model_validate(current).model_dump(mode="json")).raise_for_status()

    def fault(self, **fault: Any) -> None:
        self.http.post("/_sim/faults", json=fault).raise_for_status()

    def stats(self) -> dict[str, Any]:
        return self.http.get("/_sim/stats").raise_for_status().json()


PG_SCHEMA = unique_schema()
"""The schema this test run's postgres exports load into; dropped at the end of the session."""
DATABASE_PASSWORD = "aew-db-secret-pw"
"""Trust auth ignores it; it is in the URL so the secrets scan can look for it everywhere."""
DATABASES = {"test": {"url": TEST_DATABASE_URL.replace("postgres@", f"postgres:{DATABASE_PASSWORD}@", 1)}}


def daily(name: str, hour: int, vehicle: int, **sink: Any) -> dict[str, Any]:
    """A daily Samsara schedule entry for the previous day (``sink``/``sink_options`` as submit takes them)."""
    return {
        "name": name,
        "provider": "samsara",
        "cron": {"minute": "0", "hour": str(hour)},
        "params": {"vehicleIds": [vehicle]},
        "period_params": {"startHour": "{start:%Y-%m-%dT%H:00:00Z}", "endHour": "{end:%Y-%m-%dT%H:00:00Z}"},
        **sink,
    }


SCHEDULES = {
    "schedules": [
        {**daily("sim-daily", 2, 1), "params": {"vehicleIds": [1, 2]}},
        daily(
            "sim-daily-postgres",
            3,
            3,
            sink="postgres",
            sink_options={"database": "test", "schema": PG_SCHEMA, "table": "scheduled_ifta"},
        ),
        daily("sim-daily-parquet", 4, 4, sink="parquet"),
    ]
}


@pytest.fixture(scope="session")
def broker(request: pytest.FixtureRequest) -> Broker:
    return getattr(request, "param", "redis")


@pytest.fixture(scope="session")
def stack(broker: Broker, tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalStack]:
    schedule_file = tmp_path_factory.mktemp("schedules") / "schedules.json"
    schedule_file.write_text(json.dumps(SCHEDULES))
    overrides = {"schedule_file": schedule_file, "databases": DATABASES}
    local = LocalStack(require_real_redis=REQUIRE_REAL_REDIS, settings_overrides=overrides, broker=broker)
    with scratch_schema(PG_SCHEMA), local:
        local.start_worker(concurrency=4)
        local.wait_ready()
        yield local


@pytest.fixture(scope="session")
def client(stack: LocalStack) -> ExportClient:
    assert stack.client is not None
    return stack.client


@pytest.fixture(scope="session")
def sim(stack: LocalStack) -> Sim:
    assert stack.simulator is not None
    return Sim(stack.simulator.url)


def wait_status(client: ExportClient, export_id: str, wanted: set[str], timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while client.get(export_id).record.status.value not in wanted:
        if time.monotonic() > deadline:
            raise TimeoutError(f"export {export_id} never reached {wanted}")
        time.sleep(0.1)


def wait_done(client: ExportClient, export_id: str, stack: LocalStack, timeout: float = 90):
    try:
        return client.wait(export_id, timeout=timeout, interval=0.2)
    except TimeoutError:
        print(stack.logs())
        raise


def provider_rows(url: str, schema: RowSchema) -> list[dict[str, Any]]:
    """The provider's file as typed rows (datetimes as instants), straight from the simulator."""
    converters: dict[ColumnType, Callable[[str], Any]] = {
        ColumnType.INT: int,
        ColumnType.FLOAT: float,
        ColumnType.DATETIME: lambda text: datetime.fromisoformat(text).astimezone(UTC),
    }
    body = httpx.get(url, timeout=30).raise_for_status().content
    if body[:2] == b"\x1f\x8b":  # Samsara serves gzip files
        body = gzip.decompress(body)
    rows = []
    for row in csv.DictReader(io.StringIO(body.decode("utf-8"))):
        rows.append({name: converters.get(schema.types.get(name, ColumnType.STR), str)(value) for name, value in row.items()})
    return rows


def count_lines(path: str) -> int:
    with open(path, "rb") as handle:
        return sum(1 for _ in handle)


def unique_hour(offset: int) -> str:
    """A distinct startHour per test, so each test picks its own simulator behaviour."""
    base = 1_700_000_000 // 3600 * 3600 + offset * 86_400
    return time.strftime("%Y-%m-%dT%H:00:00Z", time.gmtime(base))


def day_after(hour: str) -> str:
    start = time.strptime(hour, "%Y-%m-%dT%H:00:00Z")
    return time.strftime("%Y-%m-%dT%H:00:00Z", time.gmtime(time.mktime(start) - time.timezone + 86_400))
