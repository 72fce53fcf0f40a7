"""A Redis that may evict is refused: a real worker exits at start naming maxmemory-policy, the value and
noeviction, and so does the CLI; on noeviction it runs, and the override turns the refusal into a warning.

Each test runs its own ``redis-server`` on a free loopback port with the policy it needs (the shared
Redis is never reconfigured), and stops it by pid at the end, also when the test fails.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from tests.integration.conftest import REQUIRE_REAL_REDIS, day_after, unique_hour, wait_done
from worker.dev.embedded import free_port, redis_reachable
from worker.dev.localstack import LocalStack, settings_to_env
from worker.models import ExportStatus
from worker.settings import Settings

pytestmark = pytest.mark.integration

REDIS_SERVER = shutil.which("redis-server")
CLI = str(Path(sys.executable).parent / "export-worker")


@contextmanager
def own_redis(*options: str) -> Iterator[str]:
    if REDIS_SERVER is None:
        if REQUIRE_REAL_REDIS:
            pytest.fail("redis-server binary is needed for the eviction guard tests in CI")
        pytest.skip("redis-server binary not installed")
    port = free_port()
    process = subprocess.Popen(
        [REDIS_SERVER, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no", *options],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    url = f"redis://127.0.0.1:{port}/0"
    try:
        deadline = time.monotonic() + 10
        while not redis_reachable(url):
            assert process.poll() is None and time.monotonic() < deadline, "redis-server did not start"
            time.sleep(0.05)
        yield url
    finally:
        process.terminate()
        process.wait(10)


def environment(url: str, **settings: object) -> dict[str, str]:
    chosen = Settings(_env_file=None, redis_url=url, key_prefix="aew-guard", queue="exports-guard", **settings)
    inherited = {name: value for name, value in os.environ.items() if not name.startswith("EXPORT_WORKER_")}
    return {**inherited, "PYTHONUNBUFFERED": "1", "COLUMNS": "400", **settings_to_env(chosen)}


def test_a_worker_on_an_evicting_redis_exits_naming_the_policy_and_noeviction() -> None:
    with own_redis("--maxmemory-policy", "allkeys-lru") as url:
        worker = subprocess.run(
            [sys.executable, "-m", "celery", "-A", "worker.app", "worker", "-P", "solo", "-Q", "exports-guard",
             "--without-gossip", "--without-mingle", "--without-heartbeat", "-l", "INFO"],
            env=environment(url),
            capture_output=True,
            text=True,
            timeout=120,
        )  # fmt: skip
    assert worker.returncode != 0
    [refusal] = [line for line in (worker.stdout + worker.stderr).splitlines() if "refusing to start" in line]
    assert "maxmemory-policy 'allkeys-lru'" in refusal and "noeviction" in refusal
    assert "EXPORT_WORKER_ALLOW_EVICTING_STORE=true" in refusal
    assert "Traceback" not in worker.stderr


@pytest.mark.parametrize(
    ("options", "policy"),
    [
        (("--maxmemory-policy", "allkeys-lru"), "allkeys-lru"),
        (("--maxmemory-policy", "volatile-lru", "--rename-command", "CONFIG", ""), "volatile-lru"),
    ],
    ids=["config", "info-where-config-is-disabled"],
)
def test_the_cli_refuses_an_evicting_redis_in_one_line(options: tuple[str, ...], policy: str) -> None:
    with own_redis(*options) as url:
        listing = subprocess.run([CLI, "list"], env=environment(url), capture_output=True, text=True, timeout=60)
    assert listing.returncode == 2
    [line] = listing.stderr.strip().splitlines()
    assert f"maxmemory-policy '{policy}'" in line and "noeviction" in line and url.removeprefix("redis://") in line


def test_a_worker_on_noeviction_runs_exports(tmp_path: Path) -> None:
    hour = unique_hour(401)
    with own_redis("--maxmemory-policy", "noeviction") as url, LocalStack(redis_url=url, require_real_redis=True) as stack:
        assert stack.client is not None
        worker = stack.start_worker(concurrency=1)
        stack.wait_ready()
        export_id = stack.client.submit("samsara", {"startHour": hour, "endHour": day_after(hour), "vehicleIds": [1]})
        assert wait_done(stack.client, export_id, stack).record.status is ExportStatus.COMPLETED
        assert worker.poll() is None, "the worker keeps running"


def test_the_override_lets_a_worker_run_on_an_evicting_redis_with_a_warning() -> None:
    with (
        own_redis("--maxmemory-policy", "allkeys-lfu") as url,
        LocalStack(redis_url=url, require_real_redis=True, settings_overrides={"allow_evicting_store": True}) as stack,
    ):
        worker = stack.start_worker(concurrency=1)
        stack.wait_ready()
        time.sleep(1)
        assert worker.poll() is None, "the worker keeps running"
        logs = stack.logs()
    assert "maxmemory-policy 'allkeys-lfu'" in logs and "EXPORT_WORKER_ALLOW_EVICTING_STORE=true" in logs
    assert "refusing" not in logs
