"""``export-worker demo``: one Samsara IFTA export, end to end, on this machine.

Redis is the configured one when reachable, else an embedded fake; the provider is the simulator;
the worker is a real Celery worker process. It prints where the parsed rows are.
"""

from __future__ import annotations

import time
from pathlib import Path

from rich.console import Console
from rich.table import Table

from worker.cli import _watch
from worker.dev.localstack import LocalStack
from worker.dev.simulator import SamsaraBehaviour, SimulatorConfig

DEMO_START_HOUR = "2026-11-23T00:00:00Z"
DEMO_END_HOUR = "2026-11-24T00:00:00Z"


def run_demo(console: Console, *, vehicles: int, files: int, rows: int) -> int:
    config = SimulatorConfig(
        samsara_fleet=list(range(1, vehicles + 1)),
        samsara_default=SamsaraBehaviour(requested_seconds=1, processing_seconds=3, files=files, rows_per_file=rows),
    )
    output = Path("exports").resolve()
    with LocalStack(simulator_config=config, output_dir=output) as stack:
        assert stack.client is not None and stack.simulator is not None
        where = "Redis at " + stack.requested_redis_url if stack.using_real_redis else "an embedded Redis (no Redis reachable)"
        console.print(f"[bold]demo[/]: using {where}; provider simulator at {stack.simulator.url}")
        stack.start_worker(concurrency=2)
        stack.start_beat()
        export_id = stack.client.submit(
            "samsara",
            {"startHour": DEMO_START_HOUR, "endHour": DEMO_END_HOUR, "vehicleIds": list(range(1, vehicles + 1))},
            idempotency_key=f"demo-{stack.run_id}",
        )
        console.print(f"submitted export [bold]{export_id}[/]; following it (Ctrl-C to stop)")
        view = _watch(stack.client, export_id)
        table = Table("file", "rows", "quarantined", "recordCount", "written to")
        for file in view.files:
            table.add_row(file.name, str(file.rows), str(file.quarantined), str(file.record_count), file.path or "-")
        console.print(table)
        if view.record.status.value != "COMPLETED":
            console.print(f"[red]export ended {view.record.status.value}: {view.record.error}[/]")
            console.print(stack.logs())
            return 1
        console.print(
            f"[green]COMPLETED[/]: {view.record.rows} rows written, {view.record.quarantined} quarantined, "
            f"in {(view.record.finished_at or time.time()) - view.record.created_at:.1f}s; JSONL files under {output / export_id}"
        )
        return 0
