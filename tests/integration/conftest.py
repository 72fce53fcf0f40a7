"""Integration fixtures: a real Celery worker process, Redis and the provider simulator over loopback.

Redis is the real one at 127.0.0.1:6379. Locally, when it is not running, the embedded fake stands
in; in CI (``CI=true``) a missing Redis is an error, never a silent fallback or a skip. The broker
is Redis unless a module parametrizes ``broker`` (``ON_BOTH_BROKERS``): then its tests run once on
Redis and once on the RabbitMQ at 127.0.0.1:5672, which must be running (no fallback, no skip).
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from worker.api import ExportClient
from worker.dev.localstack import Broker, LocalStack
from worker.dev.simulator import SimulatorConfig

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


SCHEDULES = {
    "schedules": [
        {
            "name": "sim-daily",
            "provider": "samsara",
            "cron": {"minute": "0", "hour": "2"},
            "params": {"vehicleIds": [1, 2]},
            "period_params": {"startHour": "{start:%Y-%m-%dT%H:00:00Z}", "endHour": "{end:%Y-%m-%dT%H:00:00Z}"},
        }
    ]
}


@pytest.fixture(scope="session")
def broker(request: pytest.FixtureRequest) -> Broker:
    return getattr(request, "param", "redis")


@pytest.fixture(scope="session")
def stack(broker: Broker, tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalStack]:
    schedule_file = tmp_path_factory.mktemp("schedules") / "schedules.json"
    schedule_file.write_text(json.dumps(SCHEDULES))
    overrides = {"schedule_file": schedule_file}
    with LocalStack(require_real_redis=REQUIRE_REAL_REDIS, settings_overrides=overrides, broker=broker) as local:
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
