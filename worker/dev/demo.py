"""``export-worker demo``: one Samsara IFTA export, end to end, on this machine.

Redis is the configured one when reachable, else an embedded fake; the provider is the simulator;
the worker is a real Celery worker process. It prints where the parsed rows are. The simulator
(and the embedded Redis) live in this process, so ``--keep`` keeps the process, and with it the
stack, up until Ctrl-C, and prints the environment that points the CLI or another worker at it.
"""

from __future__ import annotations

import shlex
import signal
import time
from pathlib import Path
from types import FrameType

from rich.console import Console
from rich.table import Table

from worker.dev.localstack import LocalStack
from worker.dev.simulator import SamsaraBehaviour, SimulatorConfig
from worker.watch_view import follow

DEMO_START_HOUR = "2026-11-23T00:00:00Z"
DEMO_END_HOUR = "2026-11-24T00:00:00Z"


def run_demo(console: Console, *, vehicles: int, files: int, rows: int, keep: bool = False) -> int:
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
        view = follow(console, stack.client, export_id)
        console.print()
        table = Table("file", "rows", "quarantined", "recordCount", title="files")
        for file in view.files:
            table.add_row(file.name, str(file.rows), str(file.quarantined), str(file.record_count))
        console.print(table)
        console.print(f"written to {output / export_id}", soft_wrap=True)
        if view.record.status.value != "COMPLETED":
            console.print(f"[red]export ended {view.record.status.value}: {view.record.error}[/]")
            console.print(stack.logs())
            return 1
        console.print(
            f"[green]COMPLETED[/]: {view.record.rows} rows written, {view.record.quarantined} quarantined, "
            f"in {(view.record.finished_at or time.time()) - view.record.created_at:.1f}s"
        )
        if not keep:
            console.print("The demo stack stops now; `export-worker demo --keep` leaves it up to try the CLI on it.")
            return 0
        _keep_up(console, stack, export_id)
        return 0


def _keep_up(console: Console, stack: LocalStack, export_id: str) -> None:
    """Block until Ctrl-C with the stack up, after printing how to reach it from another shell."""
    assert stack.settings is not None
    lines = "\n".join(f"export {name}={shlex.quote(value)}" for name, value in stack.settings_env().items())
    console.print("\n[bold]The stack stays up until Ctrl-C.[/] In another shell, point the CLI or a worker at it:")
    console.print(lines, soft_wrap=True, highlight=False, markup=False)
    console.print(
        f"export-worker status {export_id}\nexport-worker list\ncelery -A worker.app worker -Q {stack.settings.queue} -l INFO\n"
        "export-worker dashboard --allow-actions   # then open http://127.0.0.1:8808/",
        soft_wrap=True,
        highlight=False,
        markup=False,
    )
    previous = signal.signal(signal.SIGTERM, _interrupt)
    try:
        while all(process.poll() is None for process in stack.workers):
            time.sleep(1)
        console.print("[red]the demo worker exited; stopping the stack[/]")
    except KeyboardInterrupt:
        console.print("stopping the demo stack")
    finally:
        signal.signal(signal.SIGTERM, previous)


def _interrupt(_signum: int, _frame: FrameType | None) -> None:
    """SIGTERM stops a kept stack as Ctrl-C does, so its worker and beat processes go with it."""
    raise KeyboardInterrupt
