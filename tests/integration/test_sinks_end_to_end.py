"""PostgreSQL and Parquet sinks end to end on a real worker: the API, the CLI and a beat schedule.

Every check compares what landed with the provider's own file, fetched from the simulator.
"""

from __future__ import annotations

import subprocess
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from tests.integration.conftest import PG_SCHEMA, Sim, day_after, provider_rows, unique_hour, wait_done
from tests.pg import query, table_rows
from worker.api import ExportClient
from worker.dev.localstack import LocalStack
from worker.dev.simulator import SamsaraBehaviour
from worker.models import ExportStatus
from worker.providers.samsara import SamsaraIftaDetail
from worker.schedules import RUN_SCHEDULE_TASK

pytestmark = pytest.mark.integration

SCHEMA = SamsaraIftaDetail.row_schema


def params(sim: Sim, offset: int, vehicle: int, files: int = 2, rows: int = 300) -> dict:
    hour = unique_hour(offset)
    sim.update(samsara_behaviours={hour: SamsaraBehaviour(files=files, rows_per_file=rows).model_dump()})
    return {"startHour": hour, "endHour": day_after(hour), "vehicleIds": [vehicle]}


def assert_table_holds_the_export(client: ExportClient, export_id: str, table: str) -> None:
    view = client.get(export_id)
    assert view.record.status is ExportStatus.COMPLETED, view.record.error
    for file in view.files:
        assert file.path == f"postgres://test/{PG_SCHEMA}.{table}"
        expected = provider_rows(file.url, SCHEMA)
        landed = table_rows(PG_SCHEMA, table, ", ".join(expected[0]), _export_id=export_id, _file_key=file.key)
        assert landed == expected and file.rows == len(expected) == file.record_count


def test_submit_to_postgres_loads_every_row_once(client: ExportClient, sim: Sim, stack: LocalStack) -> None:
    export_id = client.submit(
        "samsara", params(sim, 61, 1), sink="postgres", sink_options={"database": "test", "schema": PG_SCHEMA}
    )
    view = wait_done(client, export_id, stack)
    assert view.record.sink_options.table == "samsara_ifta_detail"
    assert_table_holds_the_export(client, export_id, "samsara_ifta_detail")
    (count,) = query(f'SELECT count(*) FROM "{PG_SCHEMA}".samsara_ifta_detail WHERE _export_id = %s', export_id)
    assert count == (600,)


def test_submit_to_parquet_writes_one_file_per_provider_file(client: ExportClient, sim: Sim, stack: LocalStack) -> None:
    export_id = client.submit("samsara", params(sim, 62, 2, files=3), sink="parquet")
    view = wait_done(client, export_id, stack)
    assert view.record.status is ExportStatus.COMPLETED, view.record.error
    assert len(view.files) == 3
    for file in view.files:
        assert file.path is not None and file.path.endswith(".parquet") and f"/{export_id}/" in file.path
        assert pq.read_table(file.path).to_pylist() == provider_rows(file.url, SCHEMA)


def test_cli_submit_with_sink_postgres(client: ExportClient, sim: Sim, stack: LocalStack) -> None:
    wanted = params(sim, 63, 3)
    command = [
        str(Path(sys.executable).with_name("export-worker")), "submit", "samsara",
        "-p", f"startHour={wanted['startHour']}", "-p", f"endHour={wanted['endHour']}", "-p", "vehicleIds=[3]",
        "--sink", "postgres", "-o", "database=test", "-o", f"schema={PG_SCHEMA}", "-o", "table=cli_ifta",
    ]  # fmt: skip
    done = subprocess.run(command, env=stack.env(), capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    export_id = done.stdout.strip().splitlines()[-1]
    wait_done(client, export_id, stack)
    assert_table_holds_the_export(client, export_id, "cli_ifta")


def run_schedule(client: ExportClient, stack: LocalStack, name: str):
    client.rt.dispatcher.app.send_task(RUN_SCHEDULE_TASK, kwargs={"name": name}, queue=stack.settings.queue)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        scheduled = [record for record in client.recent(200) if record.schedule == name]
        if scheduled:
            return wait_done(client, scheduled[0].id, stack)
        time.sleep(0.2)
    raise TimeoutError(f"schedule {name} created no export")


def test_beat_schedules_load_into_postgres_and_parquet(client: ExportClient, sim: Sim, stack: LocalStack) -> None:
    yesterday = (datetime.now(UTC) - timedelta(days=1)).strftime("%Y-%m-%dT00:00:00Z")
    sim.update(samsara_behaviours={yesterday: SamsaraBehaviour(files=2, rows_per_file=120).model_dump()})
    loaded = run_schedule(client, stack, "sim-daily-postgres")
    assert loaded.record.sink == "postgres" and loaded.record.rows == 240
    assert_table_holds_the_export(client, loaded.record.id, "scheduled_ifta")
    written = run_schedule(client, stack, "sim-daily-parquet")
    assert written.record.status is ExportStatus.COMPLETED, written.record.error
    for file in written.files:
        assert pq.read_table(file.path).to_pylist() == provider_rows(file.url, SCHEMA)
