"""Chaos: SIGKILL worker processes at random moments while exports run; nothing may be lost or doubled.

The short variant always runs; ``--chaos-long`` runs the issue's full size (50+ exports, 10+ kills).
It runs once per sink that keeps its own exactly-once promise: JSONL files (temp + rename) and a
PostgreSQL table (one transaction per file attempt): no ``(_export_id, _file_key, _line)`` twice.
Kills alternate between a whole worker (parent and pool, as when a host dies) and a single pool
child (``task_reject_on_worker_lost`` requeues its task at once).
"""

from __future__ import annotations

import random
import time
from pathlib import Path

import httpx
import psutil
import pytest

from tests.integration.conftest import DATABASES, REQUIRE_REAL_REDIS, count_lines, day_after, unique_hour
from tests.pg import query, scratch_schema
from worker.api import ExportView
from worker.dev.localstack import Broker, LocalStack
from worker.dev.simulator import SamsaraBehaviour, SimulatorConfig
from worker.models import ExportStatus, FileStatus

pytestmark = pytest.mark.integration

SIZES = {
    "short": {"exports": 16, "kills": 6, "files": 3, "rows": 20_000, "timeout": 240},
    "long": {"exports": 60, "kills": 14, "files": 4, "rows": 40_000, "timeout": 900},
}


def kill_one_pool_child(process) -> bool:
    children = psutil.Process(process.pid).children()
    if not children:
        return False
    try:
        random.choice(children).kill()
    except psutil.NoSuchProcess:  # the child exited by itself (recycled) between listing and killing
        return False
    return True


def lines_in_table(schema: str, export_id: str, file_key: str) -> tuple[int, int, list[int]]:
    """Rows of one file in the table, distinct lines among them, and the first and last line."""
    ((rows, distinct, first, last),) = query(
        f'SELECT count(*), count(DISTINCT _line), min(_line), max(_line) FROM "{schema}".samsara_ifta_detail '
        "WHERE _export_id = %s AND _file_key = %s",
        export_id,
        file_key,
    )
    return rows, distinct, [first, last]


def wait_supervised(stack: LocalStack, export_ids: list[str], timeout: float) -> tuple[list[ExportView], int]:
    """Every export's end, restarting workers that exit meanwhile (as README's restart policy would), and how many.

    A worker whose pool child is killed while Celery is still starting it exits ("Could not start
    worker processes"); without a restart the exports it held would wait for a worker that never comes.
    """
    assert stack.client is not None
    deadline = time.monotonic() + timeout
    views: dict[str, ExportView] = {}
    restarted = 0
    while len(views) < len(export_ids):
        if time.monotonic() > deadline:
            print(stack.logs())
            raise TimeoutError(f"{len(export_ids) - len(views)} exports not ended after {timeout}s")
        restarted += stack.supervise()
        for export_id in export_ids:
            if export_id not in views:
                view = stack.client.get(export_id)
                if view.record.status.terminal:
                    views[export_id] = view
        time.sleep(0.5)
    return [views[export_id] for export_id in export_ids], restarted


# The broker's guarantees (acks late, requeue on worker loss) do not depend on the sink, nor the
# sink's on the broker: RabbitMQ runs with the JSONL sink only, which keeps CI's time down.
@pytest.mark.parametrize(("broker", "sink"), [("redis", "jsonl"), ("redis", "postgres"), ("rabbitmq", "jsonl")])
def test_sigkilled_workers_lose_and_duplicate_nothing(request: pytest.FixtureRequest, broker: Broker, sink: str) -> None:
    with scratch_schema() as schema:
        run_chaos(request, broker, sink, schema)


def run_chaos(request: pytest.FixtureRequest, broker: Broker, sink: str, schema: str) -> None:
    size = SIZES["long" if request.config.getoption("--chaos-long") else "short"]
    config = SimulatorConfig(
        samsara_default=SamsaraBehaviour(
            requested_seconds=0.5, processing_seconds=3, files=size["files"], rows_per_file=size["rows"]
        )
    )
    rng = random.Random(20261125)
    overrides = {"databases": DATABASES}
    sink_options = {"database": "test", "schema": schema} if sink == "postgres" else None
    local = LocalStack(
        simulator_config=config, require_real_redis=REQUIRE_REAL_REDIS, settings_overrides=overrides, broker=broker
    )
    with local as stack:
        assert stack.client is not None and stack.simulator is not None
        for _ in range(2):
            stack.start_worker(concurrency=2)
        stack.start_beat()
        export_ids: list[str] = []
        pending = list(range(size["exports"]))
        per_wave = -(-size["exports"] // size["kills"])
        kills = whole = 0
        started = time.monotonic()
        while kills < size["kills"]:
            for number in pending[:per_wave]:
                hour = unique_hour(number)
                params = {"startHour": hour, "endHour": day_after(hour), "vehicleIds": [1 + number % 5]}
                key = f"chaos-{stack.run_id}-{number}"
                export_ids.append(
                    stack.client.submit("samsara", params, idempotency_key=key, sink=sink, sink_options=sink_options)
                )
            pending = pending[per_wave:]
            time.sleep(rng.uniform(0.2, 1.5))
            victim = rng.randrange(len(stack.workers))
            if kills % 2 == 0:
                stack.replace_worker(victim)
                whole += 1
            elif not kill_one_pool_child(stack.workers[victim]):
                continue
            kills += 1

        views, restarted = wait_supervised(stack, export_ids, timeout=size["timeout"])
        elapsed = time.monotonic() - started

        stats = httpx.get(f"{stack.simulator.url}/_sim/stats").json()
        record_counts = {f["name"]: f["recordCount"] for job in stats["jobs"].values() for f in job.get("files", [])}
        lost = duplicated = 0
        for view in views:
            assert view.record.status is ExportStatus.COMPLETED, (view.record.id, view.record.error)
            assert len(view.files) == view.record.files_total == size["files"], view.record.id
            not_done = [file.key for file in view.files if file.status is not FileStatus.DONE]
            assert not not_done, f"export {view.record.id} COMPLETED with files not DONE: {not_done}"
            assert view.record.rows == sum(file.rows for file in view.files), view.record.id
            for file in view.files:
                expected = record_counts[file.name]
                if sink == "postgres":
                    written, distinct, span = lines_in_table(schema, view.record.id, file.key)
                    assert distinct == written and span == [2, expected + 1], (file.name, written, distinct, span)
                else:
                    written = count_lines(file.path)
                lost += max(0, expected - written)
                duplicated += max(0, written - expected)
                assert file.rows == written == expected, file.name
        ambiguous = sum(job.ambiguous_creates for view in views for job in view.record.jobs.values())
        creates = stats["creates"]["samsara"]
        leftovers = list(Path(stack.settings.output_dir).rglob("*.tmp"))
        print(
            f"\nCHAOS broker={broker} sink={sink} exports={len(views)} files={sum(len(v.files) for v in views)} "
            f"rows={sum(v.record.rows for v in views)} kills={kills} (whole workers {whole}, pool children {kills - whole}) "
            f"lost_rows={lost} duplicated_rows={duplicated} provider_creates={creates} ambiguous_creates={ambiguous} "
            f"temp_files_left={len(leftovers)} workers_restarted={restarted} elapsed={elapsed:.1f}s"
        )
        assert lost == duplicated == 0
        assert leftovers == [], f"temp files of killed attempts left after their exports ended: {leftovers}"
        assert len(views) <= creates <= len(views) + ambiguous
