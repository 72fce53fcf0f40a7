"""A Redis with AOF restarted mid-export loses nothing: the export still completes, rows exactly once.

Runs its own ``redis-server`` (appendonly, fsync always) on a free loopback port so the shared
Redis is never restarted. Without persistence a restart loses every record; see README.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.integration.conftest import REQUIRE_REAL_REDIS, count_lines, day_after, unique_hour
from worker.dev.embedded import free_port, redis_reachable
from worker.dev.localstack import LocalStack
from worker.dev.simulator import SamsaraBehaviour, SimulatorConfig
from worker.models import ExportStatus

pytestmark = pytest.mark.integration

REDIS_SERVER = shutil.which("redis-server")


class AofRedis:
    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.port = free_port()
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        assert REDIS_SERVER is not None
        self.process = subprocess.Popen(
            [
                REDIS_SERVER,
                "--port",
                str(self.port),
                "--bind",
                "127.0.0.1",
                "--dir",
                str(self.directory),
                "--appendonly",
                "yes",
                "--appendfsync",
                "always",
                "--save",
                "",
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + 10
        while not redis_reachable(self.url):
            if time.monotonic() > deadline:
                raise RuntimeError("redis-server did not start")
            time.sleep(0.05)

    def crash(self) -> None:
        assert self.process is not None
        os.kill(self.process.pid, signal.SIGKILL)
        self.process.wait(10)


@pytest.fixture
def aof_redis(tmp_path: Path) -> Iterator[AofRedis]:
    if REDIS_SERVER is None:
        if REQUIRE_REAL_REDIS:
            pytest.fail("redis-server binary is needed for the restart test in CI")
        pytest.skip("redis-server binary not installed")
    server = AofRedis(tmp_path)
    server.start()
    yield server
    if server.process and server.process.poll() is None:
        server.process.terminate()
        server.process.wait(10)


def test_redis_crash_and_restart_with_aof_loses_nothing(aof_redis: AofRedis) -> None:
    config = SimulatorConfig(samsara_default=SamsaraBehaviour(processing_seconds=6, files=3, rows_per_file=2000))
    with LocalStack(simulator_config=config, redis_url=aof_redis.url, require_real_redis=True) as stack:
        assert stack.client is not None
        stack.start_worker(concurrency=2)
        stack.start_beat()
        ids = []
        for number in range(4):
            hour = unique_hour(80 + number)
            ids.append(stack.client.submit("samsara", {"startHour": hour, "endHour": day_after(hour), "vehicleIds": [1]}))
        time.sleep(2.5)
        aof_redis.crash()
        time.sleep(1)
        aof_redis.start()
        # Celery's worker may exit on a lost broker connection (kombu's reconnect path, cf.
        # celery/celery#10205); production runs it under a restart policy, which this loop plays.
        deadline = time.monotonic() + 120
        restarts = 0
        while time.monotonic() < deadline and not all(stack.client.get(i).record.status.terminal for i in ids):
            restarts += stack.supervise()
            time.sleep(0.5)
        print(f"\nworker restarts after the Redis crash: {restarts}")
        views = [stack.client.wait(export_id, timeout=5) for export_id in ids]
        for view in views:
            assert view.record.status is ExportStatus.COMPLETED, view.record.error
            assert [count_lines(f.path) for f in view.files] == [2000, 2000, 2000]
